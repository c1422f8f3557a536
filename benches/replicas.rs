//! Scale on one node, from the real agent binary, each figure beside a
//! baseline measured in the same run:
//!
//! ```text
//! cargo bench --bench replicas                      # 10,000 replicas
//! BENCH_REPLICAS=2000 cargo bench --bench replicas  # fewer
//! ```
//!
//! One JSON line per figure:
//! `{"figure", "value", "unit", "baseline", "baseline_value", "ratio"}`.
//!
//! A service of `replicas: N` `sleep` processes (under keepers, the
//! default), the agent on a fresh state dir:
//!
//! - **Start**: from the agent's spawn until N of its `sleep` processes run,
//!   beside a raw loop that spawns N `sleep` processes (`std::process`,
//!   no supervision). Unit: s.
//! - **Memory**: the agent's resident set once all run, per replica (the
//!   same agent with no service subtracted), beside the goal's 32 KiB; and
//!   the agent's whole resident set beside the goal's 16 MiB + 32 KiB per
//!   replica. Unit: KiB.
//! - **Open files** per replica, beside the 3 a running replica needs
//!   (two pipes, its keeper's socket). Unit: fds.
//! - **Idle wakeups**: context switches of all the agent's threads in 5 s
//!   with every replica running, beside those of this bench process's own
//!   threads over the same 5 s (which only sleeps). Unit: per s.
//! - **Stop**: from SIGTERM to the agent until it exited and no `sleep` of
//!   it is left, beside killing and reaping the raw loop's N. Unit: s.
//!
//! The bench raises its open files limit (as root, the hard one too) to
//! about 4 per replica; a hard limit too low for N replicas is reported,
//! and the bench stops.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

#[path = "common/phases.rs"]
#[allow(dead_code)]
mod common;

use common::{figure, pids_where, start_agent, stop_agent};
use serde_json::json;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("BENCH_REPLICAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let hard = raise_nofile((n as u64) * 4 + 1024);
    if hard < (n as u64) * 4 + 1024 {
        eprintln!(
            "the hard open files limit is {hard}; {n} replicas need about {}: raise it (ulimit -Hn) or set BENCH_REPLICAS lower",
            n * 4 + 1024
        );
        std::process::exit(2);
    }
    let dir = tempfile::Builder::new()
        .prefix("arbor-replicas-bench-")
        .tempdir()
        .expect("temp dir");
    // A sleep time no other process on the machine uses: how the bench
    // finds the agent's replicas.
    let mark = format!("{}", 900_000 + std::process::id() % 90_000);

    // Baseline first: a raw spawn loop.
    let t0 = Instant::now();
    let mut raw: Vec<Child> = (0..n)
        .map(|_| {
            Command::new("sleep")
                .arg(&mark)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn sleep")
        })
        .collect();
    let raw_start = t0.elapsed();
    let t0 = Instant::now();
    for c in &mut raw {
        let _ = c.kill();
    }
    for c in &mut raw {
        let _ = c.wait();
    }
    let raw_stop = t0.elapsed();
    drop(raw);

    // The agent with nothing to run: its resident set to subtract.
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "services: {}\n").expect("spec");
    let (agent, _) = start_agent(&empty, &dir.path().join("state-empty"), &[]);
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss = rss_kib(agent.id());
    stop_agent(agent);

    let spec = dir.path().join("spec.yaml");
    std::fs::write(
        &spec,
        format!("services:\n  many:\n    command: [sleep, \"{mark}\"]\n    replicas: {n}\n"),
    )
    .expect("spec");
    let t0 = Instant::now();
    let (agent, _) = start_agent(&spec, &dir.path().join("state"), &[]);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let running = sleeps(&mark).len();
        if running >= n {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("only {running} of {n} replicas ran within 300 s");
            stop_agent(agent);
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let start_time = t0.elapsed();
    // Settled: the last starts' events are handled.
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_kib(agent.id());
    let fds = std::fs::read_dir(format!("/proc/{}/fd", agent.id()))
        .map(|d| d.count())
        .unwrap_or(0);
    let (agent_switches, own_switches, window) = {
        let (a0, o0) = (switches(agent.id()), switches(std::process::id()));
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(5));
        let window = t0.elapsed().as_secs_f64();
        (
            switches(agent.id()).saturating_sub(a0),
            switches(std::process::id()).saturating_sub(o0),
            window,
        )
    };
    let t0 = Instant::now();
    stop_agent(agent);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !sleeps(&mark).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stop_time = t0.elapsed();
    let left = sleeps(&mark);
    for pid in &left {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    let secs = |d: Duration| json!(d.as_secs_f64());
    figure(
        &format!("start_{n}_replicas"),
        &secs(start_time),
        "s",
        &format!("raw_spawn_{n}_sleep"),
        &secs(raw_start),
    );
    figure(
        "agent_memory_per_replica",
        &json!((rss - idle_rss) / n as f64),
        "KiB",
        "goal_per_replica",
        &json!(32.0),
    );
    figure(
        &format!("agent_memory_with_{n}_replicas"),
        &json!(rss),
        "KiB",
        "goal_16_MiB_plus_32_KiB_per_replica",
        &json!(16.0 * 1024.0 + 32.0 * n as f64),
    );
    figure(
        "agent_open_files_per_replica",
        &json!(fds as f64 / n as f64),
        "fds",
        "needed_by_a_running_replica",
        &json!(3.0),
    );
    figure(
        "agent_idle_wakeups",
        &json!(agent_switches as f64 / window),
        "per_s",
        "bench_process_sleeping",
        &json!(own_switches as f64 / window),
    );
    figure(
        &format!("stop_{n}_replicas"),
        &secs(stop_time),
        "s",
        &format!("raw_kill_and_reap_{n}_sleep"),
        &secs(raw_stop),
    );
    if !left.is_empty() {
        eprintln!("{} replicas were left after the agent stopped", left.len());
        std::process::exit(1);
    }
}

/// Raises this process's open files limit to `want` (root may raise the
/// hard limit too), or else the soft limit to the hard one; the limit now.
fn raise_nofile(want: u64) -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if want > hard && setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return want;
    }
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    hard
}

/// The `sleep MARK` processes running now.
fn sleeps(mark: &str) -> Vec<u32> {
    let want = format!("sleep\0{mark}\0");
    pids_where(|_, cmd| cmd == want.as_bytes())
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Context switches of every thread of `pid` so far.
fn switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .map(|t| {
            std::fs::read_to_string(t.path().join("status"))
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    l.starts_with("voluntary_ctxt_switches")
                        || l.starts_with("nonvoluntary_ctxt_switches")
                })
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}
