//! Cluster placement (real binary, root): three agents, each in a network
//! namespace of its own on a bridge this test creates, run a cluster
//! service of 3 replicas, one per node. Cutting one node's link moves its
//! replica to the others after the grace (the cut node fences itself and
//! stops its own); restoring the link brings back one per node, and at no
//! time does a replica run twice for as long as a grace. Replicas are
//! counted as processes on the machine, not as what the agents report.

mod cli_support;

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use cli_support::{end_gracefully, output, write_file};
use serde_json::Value;

/// Root and `ip` are needed; without them the test says so and returns.
fn can_run(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let ip = Command::new("ip").arg("-V").output().is_ok();
    if !(root && ip) {
        eprintln!(
            "{test}: skipped: needs root and iproute2 (run the tests as root, as .ci/run does)"
        );
    }
    root && ip
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bridge and three namespaces with a veth each; all removed on drop.
struct Net {
    tag: String,
    subnet: u8,
}

impl Net {
    fn new(nodes: usize) -> Self {
        let n = std::process::id() % 10_000;
        let net = Self {
            tag: format!("acl{n}"),
            subnet: 100 + (n % 100) as u8,
        };
        let br = net.bridge();
        ip(&["link", "add", &br, "type", "bridge"]);
        ip(&["link", "set", &br, "up"]);
        for i in 1..=nodes {
            let (ns, host, peer) = (net.ns(i), net.host_side(i), format!("{}p{i}", net.tag));
            ip(&["netns", "add", &ns]);
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer]);
            ip(&["link", "set", &peer, "netns", &ns]);
            ip(&["link", "set", &host, "master", &br, "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", net.addr(i)),
                "dev",
                &peer,
            ]);
            ip(&["-n", &ns, "link", "set", &peer, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    fn host_side(&self, i: usize) -> String {
        format!("{}h{i}", self.tag)
    }

    fn addr(&self, i: usize) -> String {
        format!("10.232.{}.{i}", self.subnet)
    }

    fn link(&self, i: usize, up: bool) {
        ip(&[
            "link",
            "set",
            &self.host_side(i),
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 1..=3 {
            let _ = Command::new("ip")
                .args(["link", "del", &self.host_side(i)])
                .output();
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(i)])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .output();
    }
}

/// An agent in a namespace, reached through its Unix socket.
struct NsAgent {
    child: Child,
    socket: String,
}

impl NsAgent {
    fn start(net: &Net, i: usize, dir: &Path, spec: &Path, cookie: &Path) -> Self {
        let listen = format!("{}:7100", net.addr(i));
        let join = format!("{}:7100", net.addr(1));
        let name = format!("n{i}");
        let state = dir.join(&name);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &net.ns(i)])
            .arg(env!("CARGO_BIN_EXE_arbor"))
            .args(["agent", "--spec"])
            .arg(spec)
            .arg("--state-dir")
            .arg(&state)
            .args(["--cluster-listen", &listen, "--cluster-cookie-file"])
            .arg(cookie)
            .args(["--node-name", &name])
            .args([
                "--heartbeat-interval",
                "200ms",
                "--suspect-after",
                "1s",
                "--down-grace",
                "3s",
            ])
            .args(["--shutdown-timeout", "5s"]);
        if i > 1 {
            cmd.args(["--join", &join]);
        }
        let log = std::env::var_os("ARBOR_TEST_AGENT_LOGS")
            .and_then(|d| {
                std::fs::File::create(PathBuf::from(d).join(format!("placement-{name}.log"))).ok()
            })
            .map(Stdio::from)
            .unwrap_or_else(Stdio::null);
        let mut child = cmd.stdout(Stdio::piped()).stderr(log).spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let socket = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
            .to_string();
        std::thread::spawn(move || for _ in out.lines() {});
        Self { child, socket }
    }

    fn cluster(&self) -> Value {
        let mut cmd = cli_support::arbor();
        cmd.args(["--agent", &self.socket, "cluster", "--json"]);
        output(cmd).expect(0).json()
    }
}

impl Drop for NsAgent {
    fn drop(&mut self) {
        end_gracefully(&mut self.child);
    }
}

/// Processes on this machine whose command line is `sleep <tag>`, counted
/// per node by their network namespace (keepers outlive their parents, so
/// the namespace, not the process tree, tells where a replica runs).
fn replicas(tag: &str, net: &Net) -> [usize; 3] {
    let mut counts = [0; 3];
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return counts;
    };
    let want = format!("sleep\0{tag}\0");
    let ns_of = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    let inodes: Vec<Option<u64>> = (1..=3)
        .map(|i| {
            std::fs::metadata(format!("/run/netns/{}", net.ns(i)))
                .ok()
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        })
        .collect();
    for entry in dir.flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmdline != want.as_bytes() {
            continue;
        }
        let Some(link) = ns_of(&pid) else { continue };
        let link = link.to_string_lossy().to_string();
        let ino: Option<u64> = link
            .trim_start_matches("net:[")
            .trim_end_matches(']')
            .parse()
            .ok();
        if let Some(i) = inodes.iter().position(|x| x.is_some() && *x == ino) {
            counts[i] += 1;
        }
    }
    counts
}

/// Polls `cond` every 50 ms for at most `within`; how long it took.
fn wait(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

#[cfg_attr(
    not(all(arbor_root, arbor_net)),
    ignore = "needs root and iproute2 (run the tests as root, as .ci/run does)"
)]
#[test]
fn a_cluster_service_moves_off_a_cut_node_and_comes_back_without_running_twice() {
    if !can_run("placement") {
        return;
    }
    let net = Net::new(3);
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("4{}.5", std::process::id() % 1000);
    let spec = write_file(
        dir.path(),
        "spec.yaml",
        &format!(
            "name: placed\nservices:\n  web:\n    command: [\"sleep\", \"{tag}\"]\n    stop_timeout: 1s\n    placement: {{scope: cluster, replicas: 3, spread: node}}\n"
        ),
    );
    let cookie = write_file(dir.path(), "cookie", "placement test cookie\n");
    std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o600)).unwrap();
    let agents: Vec<NsAgent> = (1..=3)
        .map(|i| NsAgent::start(&net, i, dir.path(), &spec, &cookie))
        .collect();
    const GRACE: Duration = Duration::from_secs(3);
    const SUSPECT: Duration = Duration::from_secs(1);

    wait("one replica per node", Duration::from_secs(30), || {
        replicas(&tag, &net) == [1, 1, 1]
    });
    let view = agents[0].cluster();
    assert_eq!(view["live"], 3, "{view}");
    assert_eq!(
        view["placements"]["web"].as_object().unwrap().len(),
        3,
        "{view}"
    );

    // Cut node 3's link: TCP stays up on both sides until the heartbeats
    // (and TCP_USER_TIMEOUT) say otherwise.
    net.link(3, false);
    let failover = wait(
        "node 3's replica runs on node 1 or 2, and node 3 stopped its own",
        SUSPECT + GRACE + Duration::from_secs(5),
        || {
            let r = replicas(&tag, &net);
            r[0] + r[1] == 3 && r[2] == 0
        },
    );
    eprintln!("failover after a cut: {failover:?} (suspect {SUSPECT:?} + grace {GRACE:?})");
    let view = agents[2].cluster();
    assert_eq!(view["fenced"], true, "{view}");
    let view = agents[0].cluster();
    assert_eq!(view["fenced"], false, "{view}");
    assert_eq!(view["live"], 2, "{view}");

    // Back: one per node again, and never 4 for as long as a grace.
    net.link(3, true);
    let restored = Instant::now();
    let mut over_since: Option<Instant> = None;
    let mut longest_over = Duration::ZERO;
    let mut max_total = 0;
    wait(
        "one replica per node again",
        GRACE + SUSPECT + Duration::from_secs(10),
        || {
            let r = replicas(&tag, &net);
            let total: usize = r.iter().sum();
            max_total = max_total.max(total);
            if total > 3 {
                let since = *over_since.get_or_insert_with(Instant::now);
                longest_over = longest_over.max(since.elapsed());
            } else {
                over_since = None;
            }
            r == [1, 1, 1]
        },
    );
    let converged = restored.elapsed();
    eprintln!(
        "converged {converged:?} after the link came back; at most {max_total} replicas at once, more than 3 for {longest_over:?}"
    );
    // One per node again within a grace, plus a suspect window of slack
    // (sessions the cut closed are dialed again first).
    assert!(
        converged < GRACE + SUSPECT,
        "converged only after {converged:?}"
    );
    assert!(
        longest_over < GRACE,
        "a replica ran twice for {longest_over:?}"
    );
    // And it stays so.
    for _ in 0..20 {
        assert_eq!(replicas(&tag, &net), [1, 1, 1]);
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(agents);
    assert_eq!(
        replicas(&tag, &net),
        [0, 0, 0],
        "replicas left after the agents stopped"
    );
}
