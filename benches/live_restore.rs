//! Live restore figures, from the real agent binary, each beside a
//! baseline measured in the same run:
//!
//! ```text
//! cargo bench --bench live_restore
//! ```
//!
//! One JSON line per figure:
//! `{"figure", "value", "unit", "baseline", "baseline_value", "ratio"}`.
//!
//! - **Keeper memory**: 200 services (`sleep`), each replica under its
//!   keeper; the mean private memory (`Private_Clean + Private_Dirty` of
//!   `/proc/PID/smaps_rollup`) of a keeper, beside that of the `sleep` it
//!   keeps (a raw process). Unit: KiB.
//! - **Re-adoption**: the agent killed (SIGKILL) with those 200 running;
//!   the time from starting the next agent on the same state dir until it
//!   listens (every replica adopted), beside the time a fresh agent takes
//!   to start the 200 without keepers (`--no-live-restore`). Unit: ms.
//! - **Start through keepers**: a fresh agent starting the 200 with
//!   keepers, beside the same without. Unit: ms.

#[path = "common/phases.rs"]
#[allow(dead_code)]
mod common;

use std::time::Duration;

use common::{figure, pids_where, quantile, start_agent, stop_agent};
use serde_json::json;

const SERVICES: usize = 200;
const ROUNDS: usize = 3;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("arbor-live-bench-")
        .tempdir()
        .expect("temp dir");
    let mut spec = String::from("services:\n");
    for i in 0..SERVICES {
        spec.push_str(&format!("  s{i}:\n    command: [\"sleep\", \"3600\"]\n"));
    }
    let spec_path = dir.path().join("spec.yaml");
    std::fs::write(&spec_path, spec).expect("spec");

    // Rounds interleaved; medians reported.
    let (mut fresh_plain, mut fresh_kept, mut adopted) = (Vec::new(), Vec::new(), Vec::new());
    let (mut kept_kib, mut program_kib) = (0.0, 0.0);
    for round in 0..ROUNDS {
        // Fresh start without keepers: the baseline.
        let plain = dir.path().join(format!("plain-{round}"));
        let (agent, t) = start_agent(&spec_path, &plain, &["--no-live-restore"]);
        fresh_plain.push(t);
        stop_agent(agent);

        // Fresh start with keepers.
        let kept = dir.path().join(format!("kept-{round}"));
        let (mut agent, t) = start_agent(&spec_path, &kept, &[]);
        fresh_kept.push(t);
        let keepers = keeper_pids(agent.id());
        assert_eq!(keepers.len(), SERVICES, "one keeper per replica");
        kept_kib = mean(keepers.iter().map(|p| private_kib(*p)));
        let programs: Vec<u32> = keepers
            .iter()
            .filter_map(|k| children(*k).first().copied())
            .collect();
        program_kib = mean(programs.iter().map(|p| private_kib(*p)));

        // Killed, then adopted.
        agent.kill().expect("kill -9");
        agent.wait().expect("reaped");
        let (agent, t) = start_agent(&spec_path, &kept, &[]);
        adopted.push(t);
        let still = keeper_pids(0)
            .into_iter()
            .filter(|k| keepers.contains(k))
            .count();
        assert_eq!(still, SERVICES, "every keeper survived and was adopted");
        stop_agent(agent);
    }
    let median = |v: &[Duration]| {
        let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        Duration::from_secs_f64(quantile(&mut ms, 0.5) / 1e3)
    };
    let (fresh_plain, fresh_kept, adopted) =
        (median(&fresh_plain), median(&fresh_kept), median(&adopted));

    let ms = |d: Duration| json!((d.as_secs_f64() * 1e3 * 10.0).round() / 10.0);
    figure(
        "keeper_private_memory",
        &json!(kept_kib.round()),
        "KiB",
        "kept_sleep_process_private_memory",
        &json!(program_kib.round()),
    );
    figure(
        "readoption_200_services_after_kill9",
        &ms(adopted),
        "ms",
        "fresh_start_200_services_without_keepers",
        &ms(fresh_plain),
    );
    figure(
        "fresh_start_200_services_with_keepers",
        &ms(fresh_kept),
        "ms",
        "fresh_start_200_services_without_keepers",
        &ms(fresh_plain),
    );
}

/// The keepers running now (children of `parent`, or any when 0).
fn keeper_pids(parent: u32) -> Vec<u32> {
    pids_where(|pid, cmd| {
        let is_keeper = cmd
            .split(|b| *b == 0)
            .next()
            .is_some_and(|argv0| argv0.ends_with(b"arbor-keeper"));
        is_keeper && (parent == 0 || parent_of(pid) == Some(parent))
    })
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Private memory of `pid` in KiB.
fn private_kib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("Private_Clean:") || l.starts_with("Private_Dirty:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum()
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.collect();
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}
