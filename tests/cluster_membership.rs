//! Cluster membership (real binary): agents join over ractor_cluster with a
//! cookie, see each other through heartbeats, detect a hung peer by its
//! silence (not by TCP), refuse a wrong cookie, and shrug off garbage on
//! the cluster port. Every agent here runs on loopback with short
//! heartbeat timings.

mod cli_support;

use std::{
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Instant,
};

use cli_support::{Agent, eventually, write_file};
use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::Value;

const SPEC: &str = "name: member\nservices:\n  idle:\n    command: [\"sleep\", \"3000\"]\n";

/// Heartbeat every 100 ms, suspect after 2 s (twenty beats: a loaded
/// machine does not make a peer suspect), down 1.5 s later.
const TIMING: [&str; 6] = [
    "--heartbeat-interval",
    "100ms",
    "--suspect-after",
    "2s",
    "--down-grace",
    "1500ms",
];

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn cookie(dir: &Path, name: &str, secret: &str) -> PathBuf {
    let path = write_file(dir, name, &format!("{secret}\n"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

struct Member {
    agent: Agent,
    name: String,
    port: u16,
}

fn member(dir: &Path, name: &str, cookie: &Path, join: Option<u16>) -> Member {
    member_with(dir, name, cookie, join, SPEC, &[])
}

fn member_with(
    dir: &Path,
    name: &str,
    cookie: &Path,
    join: Option<u16>,
    spec: &str,
    more: &[&str],
) -> Member {
    member_env(dir, name, cookie, join, spec, more, &[])
}

fn member_env(
    dir: &Path,
    name: &str,
    cookie: &Path,
    join: Option<u16>,
    spec: &str,
    more: &[&str],
    env: &[(&str, &str)],
) -> Member {
    let spec = write_file(dir, &format!("{name}.yaml"), spec);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let cookie = cookie.to_str().unwrap();
    let mut args = vec![
        "--cluster-listen",
        &listen,
        "--cluster-cookie-file",
        cookie,
        "--node-name",
        name,
    ];
    let join = join.map(|p| format!("127.0.0.1:{p}"));
    if let Some(j) = &join {
        args.extend(["--join", j]);
    }
    // A flag in `more` replaces the same one of TIMING.
    for pair in TIMING.chunks(2) {
        if !more.contains(&pair[0]) {
            args.extend(pair);
        }
    }
    args.extend(more);
    let agent = Agent::start_with_env(&spec, &dir.join(name), &args, env);
    Member {
        agent,
        name: name.into(),
        port,
    }
}

impl Member {
    fn view(&self) -> Value {
        let (status, body) = self.agent.http("GET", "/v1/cluster", "");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The state of `node` in this member's view (`None`: never seen).
    fn state_of(&self, node: &str) -> Option<String> {
        self.view()["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == node)
            .map(|m| m["state"].as_str().unwrap().to_string())
    }

    /// The `node_*` events about `node` so far, oldest first.
    fn node_events(&self, node: &str) -> Vec<Value> {
        let (status, body) = self.agent.http(
            "GET",
            "/v1/events/recent?kind=node_up,node_suspect,node_down&limit=500",
            "",
        );
        assert_eq!(status, 200, "{body}");
        let list: Vec<Value> = serde_json::from_str(&body).unwrap();
        list.into_iter().filter(|e| e["node"] == node).collect()
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.agent.child.id() as i32)
    }
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect()
}

fn all_up(members: &[&Member]) {
    for m in members {
        for other in members {
            if m.name != other.name {
                eventually(&format!("{} sees {} up", m.name, other.name), || {
                    m.state_of(&other.name).as_deref() == Some("up")
                });
            }
        }
    }
}

/// SIGCONT on drop, so that a failed assertion does not leave a stopped
/// agent behind (a stopped process ignores the SIGTERM of `Agent`'s drop).
struct Continue(Pid);

impl Drop for Continue {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, Signal::SIGCONT);
    }
}

#[test]
fn three_agents_joined_through_one_see_each_other_up_and_the_cli_lists_them() {
    let dir = tempfile::tempdir().unwrap();
    let c = cookie(dir.path(), "cookie", "a shared secret");
    let a = member(dir.path(), "alpha", &c, None);
    let b = member(dir.path(), "beta", &c, Some(a.port));
    let g = member(dir.path(), "gamma", &c, Some(a.port));
    // beta and gamma only name alpha: they meet through it.
    all_up(&[&a, &b, &g]);

    let view = b.view();
    assert_eq!(view["node"], "beta");
    assert_eq!(view["addr"], format!("127.0.0.1:{}", b.port));
    assert_eq!(view["heartbeat"]["interval_ms"], 100);
    assert_eq!(view["seeds"][0]["node"], "alpha");
    assert_eq!(view["seeds"][0]["connected"], true);
    let members = view["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{view}");
    assert_eq!(members[0]["self"], true);
    for m in &members[1..] {
        assert!(m["rtt_ms"].as_f64().unwrap() >= 0.0, "{m}");
        assert!(m["answered"].as_u64().unwrap() >= 1, "{m}");
    }
    let ups = b.node_events("gamma");
    assert_eq!(kinds(&ups), ["node_up"], "{ups:?}");

    let out = a.agent.arbor(["cluster"]).expect(0);
    for name in ["alpha", "beta", "gamma"] {
        assert!(out.stdout.contains(name), "{}", out.stdout);
    }
    assert!(
        out.stdout.lines().any(|l| l.starts_with("* alpha")),
        "{}",
        out.stdout
    );
    let json = a.agent.arbor(["cluster", "--json"]).expect(0).json();
    assert_eq!(json["members"].as_array().unwrap().len(), 3);

    let (status, metrics) = a.agent.http("GET", "/metrics", "");
    assert_eq!(status, 200);
    for line in [
        "arbor_cluster_peer_state{node=\"beta\",state=\"up\"} 1",
        "arbor_cluster_peer_state{node=\"gamma\",state=\"up\"} 1",
        "arbor_cluster_peer_rtt_seconds{node=\"beta\"} ",
        "arbor_cluster_heartbeats_answered_total{node=\"gamma\"} ",
        "arbor_node_part_up{part=\"cluster\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    // The tree shows the cluster part.
    let tree = a.agent.arbor(["tree"]).expect(0).stdout;
    assert!(tree.contains("node:cluster"), "{tree}");

    // Every member's tree, from any member.
    let all = g.agent.arbor(["tree", "--cluster"]).expect(0).stdout;
    assert!(all.starts_with("cluster (3 members)"), "{all}");
    for header in ["gamma (up, this node)", "alpha (up)", "beta (up)"] {
        assert!(all.lines().any(|l| l == header), "{header} not in\n{all}");
    }
    assert_eq!(all.matches("node:cluster").count(), 3, "{all}");
    assert_eq!(
        all.matches("idle-0 [container] running").count(),
        3,
        "{all}"
    );
    let json = g
        .agent
        .arbor(["tree", "--cluster", "--json"])
        .expect(0)
        .json();
    let nodes = json["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert!(
        nodes.iter().all(|n| n["tree"]["name"] == "member"),
        "{json}"
    );
}

#[test]
fn a_hung_agent_is_suspect_then_down_by_its_silence_and_up_again_when_it_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let c = cookie(dir.path(), "cookie", "a shared secret");
    let a = member(dir.path(), "alpha", &c, None);
    let b = member(dir.path(), "beta", &c, Some(a.port));
    let g = member(dir.path(), "gamma", &c, Some(a.port));
    all_up(&[&a, &b, &g]);

    // SIGSTOP: its TCP sessions stay open (the kernel still acknowledges
    // data), only the heartbeats go unanswered.
    let stopped = Instant::now();
    nix::sys::signal::kill(g.pid(), Signal::SIGSTOP).unwrap();
    let _resume = Continue(g.pid());
    for m in [&a, &b] {
        eventually(&format!("{} sees gamma down", m.name), || {
            m.state_of("gamma").as_deref() == Some("down")
        });
    }
    let detected = stopped.elapsed();
    let events = a.node_events("gamma");
    assert_eq!(
        kinds(&events),
        ["node_up", "node_suspect", "node_down"],
        "{events:?}"
    );
    let suspect_ms = events[1]["silent_ms"].as_u64().unwrap();
    let down_ms = events[2]["silent_ms"].as_u64().unwrap();
    assert!((2000..3000).contains(&suspect_ms), "{events:?}");
    assert!(down_ms >= 3500, "{events:?}");
    eprintln!(
        "a SIGSTOPped agent was reported down {detected:?} after the stop (suspect 2s + grace 1.5s)"
    );
    // The others still see each other.
    assert_eq!(a.state_of("beta").as_deref(), Some("up"));
    // Its sessions stayed open: the detection was not TCP's.
    assert_eq!(member_of(&a, "gamma")["connected"], true);
    assert_eq!(member_of(&b, "gamma")["connected"], true);

    // An operator may forget a member that is down (on alpha only: each
    // node keeps its own view); one that answers cannot be.
    let out = a.agent.arbor(["cluster", "forget", "beta"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("it is up"), "{}", out.stderr);
    let out = a.agent.arbor(["cluster", "forget", "nobody"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("no such member"), "{}", out.stderr);
    a.agent.arbor(["cluster", "forget", "gamma"]).expect(0);
    assert_eq!(a.view()["known"], 2);
    assert_eq!(a.state_of("gamma"), None);
    assert_eq!(b.view()["known"], 3);

    // The cluster tree lists it with why it has no tree.
    let all = b.agent.arbor(["tree", "--cluster"]).expect(0).stdout;
    assert!(
        all.lines()
            .any(|l| l.starts_with("gamma (down): no answer within")),
        "{all}"
    );

    nix::sys::signal::kill(g.pid(), Signal::SIGCONT).unwrap();
    for m in [&a, &b] {
        eventually(&format!("{} sees gamma up again", m.name), || {
            m.state_of("gamma").as_deref() == Some("up")
        });
    }
    assert_eq!(
        kinds(&a.node_events("gamma")),
        ["node_up", "node_suspect", "node_down", "node_up"]
    );
    // gamma did not hold its own pause against the others.
    eventually("gamma sees alpha and beta up", || {
        g.state_of("alpha").as_deref() == Some("up") && g.state_of("beta").as_deref() == Some("up")
    });
    assert!(
        !kinds(&g.node_events("alpha")).contains(&"node_down"),
        "{:?}",
        g.node_events("alpha")
    );
}

/// `node` in `m`'s view.
fn member_of(m: &Member, node: &str) -> Value {
    m.view()["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == node)
        .cloned()
        .unwrap_or_else(|| panic!("{} does not know {node}", m.name))
}

#[test]
fn an_agent_with_another_cookie_is_refused_and_keeps_retrying() {
    let dir = tempfile::tempdir().unwrap();
    let good = cookie(dir.path(), "cookie", "a shared secret");
    let bad = cookie(dir.path(), "other", "not the secret");
    let a = member(dir.path(), "alpha", &good, None);
    let b = member(dir.path(), "beta", &good, Some(a.port));
    all_up(&[&a, &b]);
    let m = member(dir.path(), "mallory", &bad, Some(a.port));
    eventually("mallory's join failed twice", || {
        let seed = &m.view()["seeds"][0];
        seed["failures"].as_u64().unwrap_or(0) >= 2 && seed["connected"] == false
    });
    let seed = &m.view()["seeds"][0];
    assert!(
        seed["last_error"].as_str().unwrap().contains("cookie"),
        "{seed}"
    );
    assert_eq!(m.view()["members"].as_array().unwrap().len(), 1);
    assert_eq!(a.state_of("mallory"), None);
    assert_eq!(a.view()["members"].as_array().unwrap().len(), 2);
    assert_eq!(a.state_of("beta").as_deref(), Some("up"));
}

#[test]
fn garbage_on_the_cluster_port_does_not_disturb_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let c = cookie(dir.path(), "cookie", "a shared secret");
    let a = member(dir.path(), "alpha", &c, None);
    let b = member(dir.path(), "beta", &c, Some(a.port));
    all_up(&[&a, &b]);
    let answered = |m: &Member, node: &str| -> u64 {
        m.view()["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == node)
            .map(|x| x["answered"].as_u64().unwrap())
            .unwrap_or(0)
    };

    let frames: Vec<Vec<u8>> = vec![
        // A length prefix far past the frame limit.
        u64::MAX.to_be_bytes().to_vec(),
        // A small frame that is not protobuf.
        [
            8u64.to_be_bytes().to_vec(),
            b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8".to_vec(),
        ]
        .concat(),
        // Plain text.
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        // Pseudo-random bytes.
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect(),
    ];
    for frame in &frames {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", a.port)).unwrap();
        let _ = s.write_all(frame);
        let _ = s.flush();
        drop(s);
    }
    // And one connection that opens and says nothing.
    let silent = std::net::TcpStream::connect(("127.0.0.1", a.port)).unwrap();

    let before = answered(&a, "beta");
    eventually("alpha still hears beta", || {
        answered(&a, "beta") >= before + 5
    });
    assert_eq!(a.state_of("beta").as_deref(), Some("up"));
    assert_eq!(b.state_of("alpha").as_deref(), Some("up"));
    assert!(
        a.node_events("beta")
            .iter()
            .all(|e| e["event"] == "node_up")
    );
    assert_eq!(a.view()["members"].as_array().unwrap().len(), 2);
    let (status, _) = a.agent.http("GET", "/v1/health", "");
    assert_eq!(status, 200);
    // A newcomer still joins.
    let g = member(dir.path(), "gamma", &c, Some(a.port));
    all_up(&[&a, &b, &g]);
    drop(silent);
}

#[test]
fn bad_cluster_flags_are_refused_with_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(dir.path(), "spec.yaml", SPEC);
    let open = write_file(dir.path(), "open", "secret\n");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let good = cookie(dir.path(), "cookie", "secret");
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--cluster-listen",
                &listen,
                "--cluster-cookie-file",
                open.to_str().unwrap(),
            ],
            "mode 0644",
        ),
        (
            vec![
                "--cluster-listen",
                "127.0.0.1:0",
                "--cluster-cookie-file",
                good.to_str().unwrap(),
            ],
            "fixed port",
        ),
        (
            vec![
                "--cluster-listen",
                &listen,
                "--cluster-cookie-file",
                good.to_str().unwrap(),
                "--node-name",
                "no spaces",
            ],
            "--node-name: \"no spaces\"",
        ),
        (
            vec![
                "--cluster-listen",
                &listen,
                "--cluster-cookie-file",
                good.to_str().unwrap(),
                "--join",
                "nohost",
            ],
            "--join: \"nohost\"",
        ),
        (vec!["--cluster-listen", &listen], "--cluster-cookie-file"),
        (
            vec![
                "--cluster-listen",
                &listen,
                "--cluster-cookie-file",
                good.to_str().unwrap(),
                "--cluster-tls-cert",
                "/nonexistent/cert.pem",
                "--cluster-tls-key",
                "/nonexistent/key.pem",
                "--cluster-ca",
                "/nonexistent/ca.pem",
            ],
            "--cluster-tls-cert /nonexistent/cert.pem: failed to read it",
        ),
        (
            vec![
                "--cluster-listen",
                &listen,
                "--cluster-cookie-file",
                good.to_str().unwrap(),
                "--cluster-tls-cert",
                "/nonexistent/cert.pem",
            ],
            "--cluster-tls-key",
        ),
    ];
    for (flags, expected) in cases {
        let out = cli_support::arbor_out(
            ["agent", "--spec", spec.to_str().unwrap(), "--state-dir"]
                .into_iter()
                .chain([dir.path().join("state").to_str().unwrap()])
                .chain(flags.iter().copied()),
        );
        assert_eq!(out.code, 2, "{flags:?}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{flags:?}: {}", out.stderr);
    }
    // A port in use is a start-up error naming it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = cli_support::arbor_out([
        "agent",
        "--spec",
        spec.to_str().unwrap(),
        "--state-dir",
        dir.path().join("state").to_str().unwrap(),
        "--cluster-listen",
        &addr,
        "--cluster-cookie-file",
        good.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("failed to listen for cluster peers on {addr}")),
        "{}",
        out.stderr
    );
}

/// Running replicas of `service` on `m` (0 when it runs none here).
fn running(m: &Member, service: &str) -> u64 {
    m.agent
        .services()
        .into_iter()
        .find(|s| s["name"] == service)
        .map(|s| s["running"].as_u64().unwrap())
        .unwrap_or(0)
}

const PLACED: &str = r#"
name: placed
services:
  web:
    command: ["sleep", "3001"]
    placement: {scope: cluster, replicas: 3, spread: node}
  db:
    command: ["sleep", "3002"]
    placement: {scope: cluster, replicas: 2, constraints: {disk: ssd}}
"#;

#[test]
fn cluster_services_are_spread_over_the_members_and_follow_a_new_spec() {
    let dir = tempfile::tempdir().unwrap();
    let c = cookie(dir.path(), "cookie", "a shared secret");
    let ssd = ["--node-label", "disk=ssd"];
    let a = member_with(dir.path(), "alpha", &c, None, PLACED, &ssd);
    let b = member_with(dir.path(), "beta", &c, Some(a.port), PLACED, &[]);
    let g = member_with(dir.path(), "gamma", &c, Some(a.port), PLACED, &ssd);
    all_up(&[&a, &b, &g]);
    let nodes = [&a, &b, &g];
    eventually("web runs once per node", || {
        nodes.iter().all(|m| running(m, "web") == 1)
    });
    // db needs an ssd: alpha and gamma, one each; never beta.
    eventually("db runs on the two ssd nodes", || {
        running(&a, "db") == 1 && running(&g, "db") == 1
    });
    assert_eq!(running(&b, "db"), 0);
    // Every node computes the same placement (once its view settled).
    eventually("every node's placement of db is alpha and gamma", || {
        nodes
            .iter()
            .all(|m| m.view()["placements"]["db"] == serde_json::json!({"alpha": 1, "gamma": 1}))
    });
    let view = b.view();
    assert_eq!(view["fenced"], false);
    assert_eq!(a.view()["placements"], view["placements"]);
    assert_eq!(g.view()["placements"], view["placements"]);
    let labels = &a.view()["labels"];
    assert_eq!(labels["disk"], "ssd");

    // A new spec with 5 replicas, applied on every node: 2, 2 and 1.
    let five = write_file(
        dir.path(),
        "five.yaml",
        &PLACED.replace("replicas: 3", "replicas: 5"),
    );
    for m in nodes {
        m.agent.arbor(["deploy", five.to_str().unwrap()]).expect(0);
    }
    eventually("5 web replicas in the cluster", || {
        let mut counts: Vec<u64> = nodes.iter().map(|m| running(m, "web")).collect();
        counts.sort();
        counts == [1, 2, 2]
    });
    let events = b.agent.http(
        "GET",
        "/v1/events/recent?kind=placement_changed&limit=500",
        "",
    );
    assert!(events.1.contains("\"epoch\""), "{events:?}");
    // An operator cannot scale a cluster-placed service by hand.
    let out = b.agent.arbor(["services", "scale", "web", "4"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("placed by the cluster"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_agent_without_a_cluster_runs_every_replica_of_a_cluster_service_itself() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(dir.path(), "spec.yaml", PLACED);
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    eventually("3 web and 2 db replicas here", || {
        let s = agent.services();
        let n = |name: &str| {
            s.iter()
                .find(|x| x["name"] == name)
                .map(|x| x["running"].as_u64().unwrap())
        };
        n("web") == Some(3) && n("db") == Some(2)
    });
    let (status, body) = agent.http("GET", "/v1/cluster", "");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not in a cluster"), "{body}");
    let out = agent.arbor(["tree", "--cluster"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("not in a cluster"), "{}", out.stderr);
}

#[test]
fn bad_placements_are_refused_with_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "services:\n  web:\n    command: [sleep, '1']\n    placement: {scope: cluster, replicas: 0}\n",
            "services.web.placement.replicas",
        ),
        (
            "services:\n  web:\n    command: [sleep, '1']\n    replicas: 2\n    placement: {scope: cluster, replicas: 3}\n",
            "services.web.replicas",
        ),
        (
            "services:\n  web:\n    command: [sleep, '1']\n    placement: {scope: galaxy}\n",
            "galaxy",
        ),
        (
            "services:\n  web:\n    command: [sleep, '1']\n    placement: {scope: cluster, spread: rack}\n",
            "rack",
        ),
        (
            "services:\n  db:\n    command: [sleep, '1']\n    placement: {scope: cluster, replicas: 2}\n  web:\n    command: [sleep, '1']\n    depends_on: [db]\n",
            "services.web.depends_on[0]",
        ),
    ];
    for (i, (spec, field)) in cases.iter().enumerate() {
        let path = write_file(dir.path(), &format!("bad{i}.yaml"), spec);
        let out = cli_support::arbor_out(["validate", path.to_str().unwrap()]);
        assert_eq!(out.code, 1, "{spec}: {out:?}");
        assert!(out.stderr.contains(field), "{spec}: {}", out.stderr);
    }
}

/// A CA (its PEM) and, for each name, a certificate for 127.0.0.1 it
/// signed, with its key: `(ca.pem, [(cert.pem, key.pem)])` under `dir`.
fn cluster_pki(dir: &Path, tag: &str, names: &[&str]) -> (PathBuf, Vec<(PathBuf, PathBuf)>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = write_file(dir, &format!("{tag}-ca.pem"), &ca_cert.pem());
    let issuer = Issuer::new(ca_params, ca_key);
    let certs = names
        .iter()
        .map(|n| {
            let key = KeyPair::generate().unwrap();
            let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            let c = write_file(dir, &format!("{tag}-{n}.pem"), &cert.pem());
            let k = write_file(dir, &format!("{tag}-{n}.key"), &key.serialize_pem());
            (c, k)
        })
        .collect();
    (ca, certs)
}

fn tls_args(ca: &Path, cert: &(PathBuf, PathBuf)) -> Vec<String> {
    vec![
        "--cluster-tls-cert".into(),
        cert.0.display().to_string(),
        "--cluster-tls-key".into(),
        cert.1.display().to_string(),
        "--cluster-ca".into(),
        ca.display().to_string(),
    ]
}

#[test]
fn agents_with_tls_join_and_a_peer_without_the_cluster_ca_or_without_tls_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = cookie(dir.path(), "cookie", "a shared secret");
    let (ca, certs) = cluster_pki(dir.path(), "good", &["alpha", "beta", "gamma"]);
    let (_, rogue) = cluster_pki(dir.path(), "rogue", &["mallory"]);
    let args = |i: usize| tls_args(&ca, &certs[i]);
    let a_args = args(0);
    let a = member_with(
        dir.path(),
        "alpha",
        &c,
        None,
        SPEC,
        &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let b_args = args(1);
    let b = member_with(
        dir.path(),
        "beta",
        &c,
        Some(a.port),
        SPEC,
        &b_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let g_args = args(2);
    let g = member_with(
        dir.path(),
        "gamma",
        &c,
        Some(a.port),
        SPEC,
        &g_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    // beta and gamma find each other through alpha's answers, over TLS.
    all_up(&[&a, &b, &g]);

    // The right cookie, a certificate from another CA (trusting ours).
    let m_args = tls_args(&ca, &rogue[0]);
    let m = member_with(
        dir.path(),
        "mallory",
        &c,
        Some(a.port),
        SPEC,
        &m_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    // The right cookie, no TLS at all.
    let p = member(dir.path(), "plain", &c, Some(a.port));
    for x in [&m, &p] {
        eventually(&format!("{} failed to join twice", x.name), || {
            let seed = &x.view()["seeds"][0];
            seed["failures"].as_u64().unwrap_or(0) >= 2 && seed["connected"] == false
        });
        assert_eq!(x.view()["members"].as_array().unwrap().len(), 1);
    }
    let err = m.view()["seeds"][0]["last_error"].clone();
    assert!(
        err.as_str().unwrap_or("").contains("TLS certificate"),
        "{err}"
    );
    let err = p.view()["seeds"][0]["last_error"].clone();
    assert!(err.as_str().unwrap_or("").contains("wants TLS"), "{err}");
    for name in ["mallory", "plain"] {
        assert_eq!(a.state_of(name), None);
    }
    assert_eq!(a.view()["live"], 3);
}

#[test]
fn a_member_stopped_gracefully_leaves_and_its_replicas_move_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = cookie(dir.path(), "cookie", "a shared secret");
    // A long grace: only the leave message can move replicas in time.
    let slow = ["--down-grace", "60s"];
    let a = member_with(dir.path(), "alpha", &c, None, PLACED, &slow);
    let b = member_with(dir.path(), "beta", &c, Some(a.port), PLACED, &slow);
    let g = member_with(dir.path(), "gamma", &c, Some(a.port), PLACED, &slow);
    all_up(&[&a, &b, &g]);
    eventually("web runs once per node", || {
        [&a, &b, &g].iter().all(|m| running(m, "web") == 1)
    });

    let Member { agent, .. } = g;
    assert_eq!(agent.stop(), 0);
    eventually("alpha and beta run the 3 web replicas", || {
        running(&a, "web") + running(&b, "web") == 3
    });
    for m in [&a, &b] {
        let left = m
            .agent
            .http("GET", "/v1/events/recent?kind=node_left", "")
            .1;
        assert!(left.contains("\"gamma\""), "{left}");
        let view = m.view();
        assert_eq!(view["known"], 2, "{view}");
        assert!(m.state_of("gamma").is_none(), "{view}");
    }

    // The last but one leaves: alone, alpha still has its majority (of 1).
    let Member { agent, .. } = b;
    assert_eq!(agent.stop(), 0);
    eventually("alpha runs the 3 web replicas alone", || {
        running(&a, "web") == 3
    });
    let view = a.view();
    assert_eq!(
        (view["known"].clone(), view["fenced"].clone()),
        (1.into(), false.into()),
        "{view}"
    );
}

/// The pids `replica` of `service` was started with on `m`, oldest first
/// (`[ARBOR] started NAME (pid N)` in its log).
fn starts(m: &Member, service: &str, replica: &str) -> Vec<i64> {
    let (status, body) = m.agent.http(
        "GET",
        &format!("/v1/services/{service}/logs?replica={replica}&tail=1000"),
        "",
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let marker = format!("[ARBOR] started {replica} (pid ");
    v["lines"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|l| l["text"].as_str()?.split_once(&marker))
        .filter_map(|(_, rest)| rest.trim_end_matches(')').parse().ok())
        .collect()
}

#[test]
fn an_agent_replaced_with_sigusr2_adopts_its_share_of_a_cluster_service() {
    let dir = tempfile::tempdir().unwrap();
    let c = cookie(dir.path(), "cookie", "a shared secret");
    let a = member_with(dir.path(), "alpha", &c, None, PLACED, &[]);
    let b = member_with(dir.path(), "beta", &c, Some(a.port), PLACED, &[]);
    let g = member_with(dir.path(), "gamma", &c, Some(a.port), PLACED, &[]);
    all_up(&[&a, &b, &g]);
    eventually("web runs once per node", || {
        [&a, &b, &g].iter().all(|m| running(m, "web") == 1)
    });
    eventually("beta's web-0 logged its start", || {
        starts(&b, "web", "web-0").len() == 1
    });
    let before = starts(&b, "web", "web-0");

    // SIGUSR2: beta's agent leaves its replicas running; the next one,
    // on the same state dir and port, adopts them.
    let Member {
        mut agent, port, ..
    } = b;
    nix::sys::signal::kill(Pid::from_raw(agent.child.id() as i32), Signal::SIGUSR2).unwrap();
    eventually("beta's agent left", || {
        matches!(agent.child.try_wait(), Ok(Some(_)))
    });
    drop(agent);
    let spec = dir.path().join("beta.yaml");
    let listen = format!("127.0.0.1:{port}");
    let join = format!("127.0.0.1:{}", a.port);
    let mut args = vec![
        "--cluster-listen",
        &listen,
        "--cluster-cookie-file",
        c.to_str().unwrap(),
        "--node-name",
        "beta",
        "--join",
        &join,
    ];
    args.extend(TIMING);
    let b = Member {
        agent: Agent::start(&spec, &dir.path().join("beta"), &args),
        name: "beta".into(),
        port,
    };
    all_up(&[&a, &b, &g]);
    eventually("beta runs its web replica again", || {
        running(&b, "web") == 1
    });
    // Adopted, not started again: the same single start.
    assert_eq!(starts(&b, "web", "web-0"), before);
    let total: u64 = [&a, &b, &g].iter().map(|m| running(m, "web")).sum();
    assert_eq!(total, 3);
}

#[test]
fn a_cluster_part_that_fails_is_restarted_on_its_port_and_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let c = cookie(dir.path(), "cookie", "a shared secret");
    let a = member_env(
        dir.path(),
        "alpha",
        &c,
        None,
        SPEC,
        &[],
        &[("ARBOR_TEST_PANIC", "cluster")],
    );
    let b = member(dir.path(), "beta", &c, Some(a.port));
    all_up(&[&a, &b]);
    // 0 while the part is not in the tree (between its failure and its
    // restart).
    let restarts = |m: &Member| -> u64 {
        let tree: Value = serde_json::from_str(&m.agent.http("GET", "/v1/tree", "").1).unwrap();
        tree["children"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == "node:cluster")
            .and_then(|c| c["restarts"].as_u64())
            .unwrap_or(0)
    };
    for round in 1..=2 {
        // A SIGUSR2 that comes before the restarted part is up hits
        // nothing (the tree may count the restart a moment before): send
        // it again, at most every 500 ms, until the part has restarted.
        let mut sent: Option<std::time::Instant> = None;
        eventually("node:cluster restarted", || {
            if restarts(&a) >= round {
                return true;
            }
            if sent.is_none_or(|t| t.elapsed() > std::time::Duration::from_millis(500)) {
                nix::sys::signal::kill(a.pid(), Signal::SIGUSR2).unwrap();
                sent = Some(std::time::Instant::now());
            }
            false
        });
        // The new actor bound the same port and is a member again.
        eventually("alpha sees beta up again", || {
            a.state_of("beta").as_deref() == Some("up")
        });
    }
    assert_eq!(b.state_of("alpha").as_deref(), Some("up"));
    // A newcomer joins through alpha's port.
    let g = member(dir.path(), "gamma", &c, Some(a.port));
    all_up(&[&a, &b, &g]);
    let (status, body) = a.agent.http("GET", "/v1/health", "");
    assert_eq!(status, 200, "{body}");
}
