//! Cluster figures, from the real agent binary (three agents on loopback),
//! each beside a baseline measured in the same run:
//!
//! ```text
//! cargo bench --bench cluster
//! ```
//!
//! One JSON line per figure:
//! `{"figure", "value", "unit", "baseline", "baseline_value", "ratio"}`.
//!
//! - **Heartbeat CPU at idle**: three agents in a cluster (default timing:
//!   a heartbeat per peer every second), each running one idle service;
//!   the agents' CPU time (every thread's `/proc/PID/task/TID/schedstat`)
//!   over 10 s, per agent. Baseline: the same three agents without a cluster. Unit:
//!   ms of CPU per second.
//! - **Placement of 1,000 cluster services**: three agents deploy a spec of
//!   1,000 services with `placement: {scope: cluster, replicas: 1}`; the
//!   time from starting the agents until the 1,000 replicas run (each
//!   agent its share, decided by the placement). Baseline: three agents
//!   without a cluster, each deploying its third of the services as
//!   node-local ones. Unit: ms.
//! - **Placement computation**: `placement::plan` of those 1,000 services
//!   over 50 members, beside hashing the 50,000 (service, node) pairs
//!   alone. Unit: µs.
//!
//! Failover after a network cut needs root and network namespaces; it is
//! measured by `tests/cluster_placement.rs`, which prints it.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

#[path = "common/phases.rs"]
#[allow(dead_code)]
mod common;

use arbor::{
    cluster::placement::{Candidate, plan},
    spec::{Placement, PlacementScope, Spread},
};
use common::{figure, quantile};
use serde_json::{Value, json};

const SERVICES: usize = 1000;
const ROUNDS: usize = 3;
const IDLE: Duration = Duration::from_secs(10);

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("arbor-cluster-bench-")
        .tempdir()
        .expect("temp dir");
    let cookie = dir.path().join("cookie");
    std::fs::write(&cookie, "bench cookie\n").unwrap();
    std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o600)).unwrap();

    let (mut idle_cluster, mut idle_alone) = (Vec::new(), Vec::new());
    let (mut place_cluster, mut place_alone) = (Vec::new(), Vec::new());
    let (mut compute, mut hashing) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let base = dir.path().join(format!("r{round}"));
        std::fs::create_dir_all(&base).unwrap();
        idle_alone.push(idle_cpu(&base.join("idle-alone"), None));
        idle_cluster.push(idle_cpu(&base.join("idle-cluster"), Some(&cookie)));
        place_alone.push(place(&base.join("place-alone"), None));
        place_cluster.push(place(&base.join("place-cluster"), Some(&cookie)));
        let (c, h) = compute_placement();
        compute.push(c);
        hashing.push(h);
        eprintln!(
            "round {round}: idle cpu {:.2} / {:.2} ms/s, place {:.0} / {:.0} ms, plan {:.0} / {:.0} us",
            idle_cluster[round],
            idle_alone[round],
            place_cluster[round],
            place_alone[round],
            compute[round],
            hashing[round]
        );
    }
    let med = |v: &mut Vec<f64>| json!(quantile(v, 0.5));
    figure(
        "heartbeat_cpu_idle_3_nodes_per_agent",
        &med(&mut idle_cluster),
        "ms/s",
        "idle_cpu_3_agents_without_cluster_per_agent",
        &med(&mut idle_alone),
    );
    figure(
        "placement_1000_cluster_services_3_nodes_until_running",
        &med(&mut place_cluster),
        "ms",
        "1000_node_local_services_split_over_3_agents_until_running",
        &med(&mut place_alone),
    );
    figure(
        "placement_plan_1000_services_50_members",
        &med(&mut compute),
        "us",
        "sha256_of_50000_service_node_pairs",
        &med(&mut hashing),
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Agent {
    child: Child,
    socket: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// Three agents on `specs[i]`, in a cluster when `cookie` is given.
fn three(dir: &Path, specs: [&Path; 3], cookie: Option<&Path>) -> Vec<Agent> {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    (0..3)
        .map(|i| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_arbor"));
            cmd.args(["agent", "--no-live-restore", "--spec"])
                .arg(specs[i])
                .arg("--state-dir")
                .arg(dir.join(format!("n{i}")));
            if let Some(cookie) = cookie {
                cmd.args(["--cluster-listen", &format!("127.0.0.1:{}", ports[i])])
                    .arg("--cluster-cookie-file")
                    .arg(cookie)
                    .args(["--node-name", &format!("n{i}")]);
                // As a real cluster is configured: each names the others.
                let others: Vec<String> = (0..3)
                    .filter(|j| *j != i)
                    .map(|j| format!("127.0.0.1:{}", ports[j]))
                    .collect();
                cmd.args(["--join", &others.join(",")]);
            }
            let mut child = cmd
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("agent");
            let mut out = BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            let socket = line
                .trim()
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                .to_string();
            std::thread::spawn(move || for _ in out.lines() {});
            Agent { child, socket }
        })
        .collect()
}

fn cli(agent: &Agent, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_arbor"))
        .args(["--agent", &agent.socket])
        .args(args)
        .output()
        .expect("arbor");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn running(agent: &Agent) -> u64 {
    cli(agent, &["services", "--json"])
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["running"].as_u64()).sum())
        .unwrap_or(0)
}

/// Nanoseconds on a CPU of each thread of `pid`, by thread id (each
/// thread's `schedstat`: `stat`'s ticks are 10 ms coarse).
fn cpu_ns(pid: u32) -> std::collections::HashMap<String, f64> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Default::default();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let ns = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            let ns = ns.split_whitespace().next()?.parse::<f64>().ok()?;
            Some((t.file_name().to_string_lossy().to_string(), ns))
        })
        .collect()
}

/// CPU ms of `pid` between two [`cpu_ns`] readings: what each thread alive
/// at the end used since the start (or since it was born). A thread that
/// ended in between takes its time with it (the blocking pool's idle
/// threads, which used next to nothing).
fn cpu_ms_between(
    before: &std::collections::HashMap<String, f64>,
    after: &std::collections::HashMap<String, f64>,
) -> f64 {
    after
        .iter()
        .map(|(tid, ns)| ns - before.get(tid).copied().unwrap_or(0.0))
        .sum::<f64>()
        / 1e6
}

/// Mean CPU ms per second of each of three idle agents over [`IDLE`].
fn idle_cpu(dir: &Path, cookie: Option<&Path>) -> f64 {
    std::fs::create_dir_all(dir).unwrap();
    let spec = dir.join("spec.yaml");
    std::fs::write(
        &spec,
        "services:\n  idle:\n    command: [\"sleep\", \"3600\"]\n",
    )
    .unwrap();
    let agents = three(dir, [&spec, &spec, &spec], cookie);
    if cookie.is_some() {
        wait("the cluster to form", || {
            cli(&agents[0], &["cluster", "--json"])["live"] == 3
        });
    }
    // Let start-up settle.
    std::thread::sleep(Duration::from_secs(2));
    let before: Vec<_> = agents.iter().map(|a| cpu_ns(a.child.id())).collect();
    let t0 = Instant::now();
    std::thread::sleep(IDLE);
    let after: Vec<_> = agents.iter().map(|a| cpu_ns(a.child.id())).collect();
    let secs = t0.elapsed().as_secs_f64();
    let total: f64 = after
        .iter()
        .zip(&before)
        .map(|(a, b)| cpu_ms_between(b, a))
        .sum();
    total / 3.0 / secs
}

/// Milliseconds from starting three agents until the 1,000 replicas run.
fn place(dir: &Path, cookie: Option<&Path>) -> f64 {
    std::fs::create_dir_all(dir).unwrap();
    let specs: Vec<PathBuf> = if cookie.is_some() {
        let mut spec = String::from("services:\n");
        for i in 0..SERVICES {
            spec.push_str(&format!(
                "  s{i}:\n    command: [\"sleep\", \"3600\"]\n    placement: {{scope: cluster, replicas: 1}}\n"
            ));
        }
        let path = dir.join("spec.yaml");
        std::fs::write(&path, spec).unwrap();
        vec![path.clone(), path.clone(), path]
    } else {
        (0..3)
            .map(|n| {
                let mut spec = String::from("services:\n");
                for i in (n..SERVICES).step_by(3) {
                    spec.push_str(&format!("  s{i}:\n    command: [\"sleep\", \"3600\"]\n"));
                }
                let path = dir.join(format!("spec{n}.yaml"));
                std::fs::write(&path, spec).unwrap();
                path
            })
            .collect()
    };
    let t0 = Instant::now();
    let agents = three(dir, [&specs[0], &specs[1], &specs[2]], cookie);
    wait("1,000 replicas running", || {
        agents.iter().map(running).sum::<u64>() == SERVICES as u64
    });
    let took = t0.elapsed();
    drop(agents);
    took.as_secs_f64() * 1e3
}

/// Microseconds to plan 1,000 services over 50 members, and to hash the
/// 50,000 pairs alone.
fn compute_placement() -> (f64, f64) {
    use sha2::Digest;
    let none = BTreeMap::new();
    let names: Vec<String> = (0..50).map(|i| format!("node-{i}")).collect();
    let members: Vec<Candidate> = names
        .iter()
        .map(|n| Candidate {
            name: n,
            labels: &none,
        })
        .collect();
    let placement = Placement {
        scope: PlacementScope::Cluster,
        replicas: 1,
        spread: Spread::Node,
        constraints: BTreeMap::new(),
    };
    let services: Vec<String> = (0..SERVICES).map(|i| format!("s{i}")).collect();
    let t0 = Instant::now();
    let p = plan(
        &members,
        members.len(),
        members.len(),
        services.iter().map(|s| (s.as_str(), &placement)),
        1,
    );
    let planned = t0.elapsed();
    assert_eq!(p.services.len(), SERVICES);
    let t0 = Instant::now();
    let mut x = 0u8;
    for s in &services {
        for n in &names {
            let mut h = sha2::Sha256::new();
            h.update(s.as_bytes());
            h.update([0]);
            h.update(n.as_bytes());
            x ^= h.finalize()[0];
        }
    }
    let hashed = t0.elapsed();
    std::hint::black_box(x);
    (planned.as_secs_f64() * 1e6, hashed.as_secs_f64() * 1e6)
}

fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
