//! The Linux bridge backend for real, as root: job executions on one segment
//! reach each other over TCP, other isolation networks cannot, 1,000
//! overlapping attach/detach cycles leave nothing behind, a segment lives
//! exactly as long as its executions, and a restarted node removes what a
//! crashed one left.
//!
//! Each test has its own name prefix and its own /24 of 10.231.0.0/16 (a
//! range reserved for these tests), creates every namespace it uses, and
//! only sends traffic between those namespaces: one connection per
//! execution, each bounded by `timeout`. A guard deletes the test's links
//! and namespaces even when it fails.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use arbor::{
    Executor, ExecutorConfig, JobSpec, JobState, JobTrigger, ProcessRuntime,
    actors::overlay_actor::{
        AttachRequest, ISOLATED, Overlay, OverlayConfig, SegmentKey, allocator::Ipv4Net,
    },
    overlay::{LinuxBridge, netns},
    spec::NetworkSpec,
    testing::{eventually_async, eventually_some_async, within},
};

const NETNS_DIR: &str = "/run/arbor-test/netns";

/// Root and `ip` are needed; without them a test says so and passes.
fn can_run(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let ip = Command::new("ip").arg("-V").output().is_ok();
    let bash = Path::new("/bin/bash").exists();
    if !(root && ip && bash) {
        eprintln!(
            "{test}: skipped: needs root, iproute2 and bash (run the tests as root: sudo -E cargo test --test overlay_bridge)"
        );
    }
    root && ip && bash
}

/// One test's corner of the host: its prefix, pool and state file. Dropping
/// it deletes every link and namespace with its prefix.
struct Net {
    prefix: &'static str,
    pool: Ipv4Net,
    state: tempfile::TempDir,
}

impl Net {
    fn new(prefix: &'static str, third_octet: u8) -> Self {
        let net = Self {
            prefix,
            pool: Ipv4Net::new(Ipv4Addr::new(10, 231, third_octet, 0), 24).unwrap(),
            state: tempfile::tempdir().unwrap(),
        };
        net.clean();
        net
    }

    fn config(&self) -> OverlayConfig {
        OverlayConfig {
            prefix: self.prefix.into(),
            pool: self.pool,
            subnet_prefix: 27,
            netns_dir: NETNS_DIR.into(),
            state_file: Some(self.state_file()),
            retry: Duration::from_millis(50),
        }
    }

    fn state_file(&self) -> PathBuf {
        self.state.path().join("overlay.json")
    }

    async fn overlay(&self) -> Overlay {
        Overlay::start_with(LinuxBridge::new().unwrap(), self.config())
            .await
            .unwrap()
    }

    /// Links of this test (`ip -o link show`).
    fn links(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-o", "link", "show"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .filter(|n| n.starts_with(self.prefix))
            .collect()
    }

    /// Namespace files of this test.
    fn namespaces(&self) -> Vec<PathBuf> {
        std::fs::read_dir(NETNS_DIR)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with(&format!("{}-", self.prefix)))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn clean(&self) {
        for link in self.links() {
            let _ = Command::new("ip").args(["link", "del", &link]).output();
        }
        for ns in self.namespaces() {
            let _ = netns::remove_now(&ns);
        }
    }

    fn assert_nothing_left(&self) {
        assert_eq!(self.links(), Vec::<String>::new(), "links left");
        assert_eq!(self.namespaces(), Vec::<PathBuf>::new(), "namespaces left");
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.clean();
    }
}

fn networked(spec: &mut JobSpec, segment: &str, isolation: &str) {
    spec.network = Some(NetworkSpec {
        segment: Some(segment.into()),
        isolation: isolation.into(),
        required: true,
        dns_search: Vec::new(),
    });
}

async fn executor(overlay: &Overlay) -> Executor {
    let runtime = ProcessRuntime::builder().build().unwrap();
    Executor::start(ExecutorConfig::new(Arc::new(runtime)).overlay(overlay.clone()))
        .await
        .unwrap()
}

async fn wait_running(ex: &Executor, id: arbor::ExecutionId) {
    eventually_async("the execution runs", || async {
        matches!(
            ex.get(id).await.unwrap().map(|r| r.status.state),
            Some(JobState::Running)
        )
    })
    .await;
}

/// A TCP client job: connects to `addr:port` once, sends a line, gives up
/// after 5 s.
fn client(name: &str, addr: IpAddr, port: u16) -> JobSpec {
    JobSpec::command(
        name,
        [
            "timeout".to_owned(),
            "5".to_owned(),
            "bash".to_owned(),
            "-c".to_owned(),
            format!("exec 3<>/dev/tcp/{addr}/{port} && echo hello >&3"),
        ],
    )
}

#[cfg_attr(
    not(all(arbor_root, arbor_net)),
    ignore = "needs root, iproute2 and bash (run the tests as root, as .ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_executions_on_one_segment_talk_over_tcp_and_other_isolation_networks_cannot() {
    if !can_run("tcp") {
        return;
    }
    let net = Net::new("otcp", 1);
    let overlay = net.overlay().await;
    let ex = executor(&overlay).await;

    // The listener's execution: a namespace on segment `web`.
    let mut server = JobSpec::command("server", ["sleep", "60"]);
    networked(&mut server, "web", "default");
    let server_id = ex.run(server, JobTrigger::Cli).await.unwrap();
    wait_running(&ex, server_id).await;
    let attached = overlay.attachments().await.unwrap();
    assert_eq!(attached.len(), 1, "{attached:?}");
    let (server_ns, server_addr) = (
        attached[0].netns.clone().expect("a namespace"),
        attached[0].address.expect("an address"),
    );
    assert!(net.pool.contains(match server_addr {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => panic!("an IPv4 address"),
    }));
    // Its process runs in that namespace.
    let pid = ex
        .get(server_id)
        .await
        .unwrap()
        .unwrap()
        .status
        .pid
        .unwrap();
    assert_eq!(
        std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ino()
            })
            .unwrap(),
        {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&server_ns).unwrap().ino()
        },
        "the job's process is in the prepared namespace"
    );

    // A listener bound inside the server's namespace.
    let port = 7070;
    let listener = netns::run_in(&server_ns, move || async move {
        std::net::TcpListener::bind(("0.0.0.0", port)).map_err(|e| e.to_string())
    })
    .await
    .unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let accepted = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut conn, from) = listener.accept().await.unwrap();
        let mut line = String::new();
        conn.read_to_string(&mut line).await.unwrap();
        (from.ip(), line, listener)
    });

    // A sibling on the same segment reaches it.
    let mut friend = client("friend", server_addr, port);
    networked(&mut friend, "web", "default");
    let friend_id = ex.run(friend, JobTrigger::Cli).await.unwrap();
    let record = ex.wait(friend_id).await.unwrap();
    assert!(
        matches!(
            record.status.state,
            JobState::Completed { exit_code: 0, .. }
        ),
        "{:?}",
        record.status.state
    );
    let (from, line, listener) = within("the listener gets the line", accepted)
        .await
        .unwrap();
    assert_eq!(line, "hello\n");
    assert_ne!(from, server_addr);

    // The same segment name in another isolation network, and an isolated
    // segment: neither reaches it.
    for (job, isolation) in [("stranger", "other"), ("loner", ISOLATED)] {
        let mut spec = client(job, server_addr, port);
        networked(&mut spec, "web", isolation);
        let id = ex.run(spec, JobTrigger::Cli).await.unwrap();
        let record = ex.wait(id).await.unwrap();
        assert!(
            matches!(record.status.state, JobState::Failed { .. }),
            "{job} ({isolation}) must not connect: {:?}",
            record.status.state
        );
    }
    // Nothing else connected.
    assert!(
        futures::FutureExt::now_or_never(listener.accept()).is_none(),
        "a connection from another isolation network"
    );

    // Every segment's bridge forwards nothing.
    ex.cancel(server_id, Some(Duration::ZERO)).await.unwrap();
    ex.wait(server_id).await.unwrap();
    eventually_async("every segment is gone", || async {
        overlay.list().await.unwrap().is_empty()
    })
    .await;
    net.assert_nothing_left();
    overlay.shutdown().await;
}

#[cfg_attr(
    not(all(arbor_root, arbor_net)),
    ignore = "needs root, iproute2 and bash (run the tests as root, as .ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_forward_nothing_and_isolated_ones_have_no_address() {
    if !can_run("forwarding") {
        return;
    }
    let net = Net::new("ofwd", 2);
    let overlay = net.overlay().await;
    overlay
        .acquire(SegmentKey::new("a", "default"))
        .await
        .unwrap();
    overlay
        .acquire(SegmentKey::new("a", ISOLATED))
        .await
        .unwrap();
    let segments = overlay.list().await.unwrap();
    assert_eq!(segments.len(), 2);
    for s in &segments {
        let forwarding =
            std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{}/forwarding", s.bridge))
                .unwrap();
        assert_eq!(forwarding.trim(), "0", "{}", s.bridge);
        let addr = Command::new("ip")
            .args(["-o", "-4", "addr", "show", "dev", &s.bridge])
            .output()
            .unwrap();
        let has_address = !addr.stdout.is_empty();
        assert_eq!(has_address, s.isolation != ISOLATED, "{s:?}");
    }
    for s in segments {
        overlay
            .release(SegmentKey::new(s.name, s.isolation))
            .await
            .unwrap();
    }
    net.assert_nothing_left();
    overlay.shutdown().await;
}

#[cfg_attr(
    not(all(arbor_root, arbor_net)),
    ignore = "needs root, iproute2 and bash (run the tests as root, as .ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_overlapping_attach_detach_cycles_leave_nothing_and_never_share_an_address() {
    if !can_run("cycles") {
        return;
    }
    let net = Net::new("ocyc", 3);
    let overlay = net.overlay().await;
    let held: Arc<Mutex<BTreeSet<IpAddr>>> = Arc::default();
    let timings: Arc<Mutex<Vec<(Duration, Duration, Duration)>>> = Arc::default();
    const WORKERS: usize = 8;
    const CYCLES: usize = 1000;
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let (overlay, held, timings) = (overlay.clone(), held.clone(), timings.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..CYCLES / WORKERS {
                // Two segments, so setup and teardown happen along the way.
                let key = SegmentKey::new(format!("s{}", (w + i) % 2), "default");
                let container = arbor::ContainerId(format!("w{w}-{i}"));
                let t0 = Instant::now();
                let ns = overlay.prepare().await.unwrap().expect("a namespace");
                let t1 = Instant::now();
                overlay.acquire(&key).await.unwrap();
                let info = overlay
                    .attach_with(AttachRequest {
                        container: container.clone(),
                        segment: key.clone(),
                        netns: Some(ns),
                        dns_search: Vec::new(),
                    })
                    .await
                    .unwrap();
                let t2 = Instant::now();
                let addr = info.address.expect("an address");
                assert!(
                    held.lock().unwrap().insert(addr),
                    "{addr} handed out while held"
                );
                tokio::task::yield_now().await;
                // Out of the set before the detach: the actor holds it
                // until the detach succeeds, so nobody else can get it.
                held.lock().unwrap().remove(&addr);
                let t3 = Instant::now();
                overlay.detach(&container).await.unwrap();
                let t4 = Instant::now();
                overlay.release(&key).await.unwrap();
                timings.lock().unwrap().push((t1 - t0, t2 - t1, t4 - t3));
            }
        }));
    }
    // Bounded, generously: a slow CI machine is not a failure here.
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(300), t)
            .await
            .expect("the workers finish within 5 minutes")
            .unwrap();
    }
    assert!(overlay.list().await.unwrap().is_empty());
    assert!(overlay.attachments().await.unwrap().is_empty());
    net.assert_nothing_left();
    let mut t = timings.lock().unwrap().clone();
    assert_eq!(t.len(), CYCLES);
    let median = |f: fn(&(Duration, Duration, Duration)) -> Duration, t: &mut Vec<_>| {
        t.sort_by_key(f);
        f(&t[t.len() / 2]).as_micros()
    };
    eprintln!(
        "{{\"bench\":\"overlay_cycles\",\"cycles\":{CYCLES},\"workers\":{WORKERS},\"netns_add_median_us\":{},\"acquire_attach_median_us\":{},\"detach_median_us\":{}}}",
        median(|x| x.0, &mut t),
        median(|x| x.1, &mut t),
        median(|x| x.2, &mut t)
    );
    overlay.shutdown().await;
}

#[cfg_attr(
    not(all(arbor_root, arbor_net)),
    ignore = "needs root, iproute2 and bash (run the tests as root, as .ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_outlives_finished_cron_runs_while_a_sibling_runs_and_goes_with_the_last() {
    if !can_run("siblings") {
        return;
    }
    let net = Net::new("osib", 4);
    let overlay = net.overlay().await;
    let ex = executor(&overlay).await;
    let mut spec = JobSpec::command("tick", ["sleep", "60"]);
    spec.schedule = Some("* * * * * *".into());
    spec.network = Some(NetworkSpec {
        required: true,
        ..NetworkSpec::default()
    });
    spec.network.as_mut().unwrap().isolation = "default".into();
    ex.register(spec).await.unwrap();
    // Let the schedule start three overlapping runs, then stop it.
    let runs = eventually_some_async("three cron runs are running", || async {
        let list = ex.list("tick").await.unwrap();
        let running: Vec<_> = list
            .iter()
            .filter(|r| matches!(r.status.state, JobState::Running))
            .map(|r| r.meta.id)
            .collect();
        (running.len() >= 3).then_some(running)
    })
    .await;
    ex.unregister("tick").await.unwrap();
    let active: Vec<_> = eventually_some_async("no run is starting", || async {
        let list = ex.list("tick").await.unwrap();
        let starting = list
            .iter()
            .any(|r| matches!(r.status.state, JobState::Pending | JobState::Initializing));
        (!starting).then(|| {
            list.iter()
                .filter(|r| matches!(r.status.state, JobState::Running))
                .map(|r| r.meta.id)
                .collect::<Vec<_>>()
        })
    })
    .await;
    assert!(active.len() >= runs.len());
    let bridge = {
        let segments = overlay.list().await.unwrap();
        assert_eq!(segments.len(), 1, "{segments:?}");
        assert_eq!(segments[0].holders, active.len());
        segments[0].bridge.clone()
    };
    for (n, id) in active.iter().enumerate() {
        ex.cancel(*id, Some(Duration::ZERO)).await.unwrap();
        ex.wait(*id).await.unwrap();
        let left = active.len() - n - 1;
        let segments = overlay.list().await.unwrap();
        if left > 0 {
            assert_eq!(segments[0].holders, left);
            assert!(
                net.links().contains(&bridge),
                "{bridge} is up while {left} run"
            );
        } else {
            assert!(segments.is_empty(), "{segments:?}");
            assert!(
                !net.links().contains(&bridge),
                "{bridge} went with the last run"
            );
        }
    }
    net.assert_nothing_left();
    overlay.shutdown().await;
}

#[cfg_attr(
    not(all(arbor_root, arbor_net)),
    ignore = "needs root, iproute2 and bash (run the tests as root, as .ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_removes_links_and_namespaces_a_crashed_one_left() {
    if !can_run("recovery") {
        return;
    }
    let net = Net::new("orec", 5);
    // A node that "crashes": its actor is killed without cleaning up.
    let crashed = net.overlay().await;
    let key = SegmentKey::from("left");
    crashed.acquire(&key).await.unwrap();
    for i in 0..2 {
        let ns = crashed.prepare().await.unwrap().unwrap();
        crashed
            .attach_with(AttachRequest {
                container: arbor::ContainerId(format!("c{i}")),
                segment: key.clone(),
                netns: Some(ns),
                dns_search: Vec::new(),
            })
            .await
            .unwrap();
    }
    let prepared = crashed.prepare().await.unwrap().unwrap();
    crashed.actor().unwrap().kill();
    crashed.actor().unwrap().get_cell().wait(None).await.ok();
    assert!(!net.links().is_empty());
    assert!(prepared.exists());
    // A stray link with the prefix that no state lists.
    let stray = format!("{}bfffffff", net.prefix);
    let made = Command::new("ip")
        .args(["link", "add", &stray, "type", "bridge"])
        .status()
        .unwrap();
    assert!(made.success());

    let restarted = net.overlay().await;
    net.assert_nothing_left();
    assert!(restarted.list().await.unwrap().is_empty());
    // Its names do not collide with the old ones and it works.
    restarted.acquire(&key).await.unwrap();
    let ns = restarted.prepare().await.unwrap().unwrap();
    restarted
        .attach_with(AttachRequest {
            container: arbor::ContainerId("new".into()),
            segment: key.clone(),
            netns: Some(ns),
            dns_search: Vec::new(),
        })
        .await
        .unwrap();
    restarted
        .detach(&arbor::ContainerId("new".into()))
        .await
        .unwrap();
    restarted.release(&key).await.unwrap();
    net.assert_nothing_left();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(net.state_file()).unwrap()).unwrap();
    assert_eq!(state["attachments"], serde_json::json!([]));
    assert_eq!(state["segments"], serde_json::json!([]));
    restarted.shutdown().await;
}

#[cfg_attr(
    not(all(arbor_root, arbor_net)),
    ignore = "needs root, iproute2 and bash (run the tests as root, as .ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networked_service_replicas_run_in_their_namespaces_and_leave_nothing_when_stopped() {
    use std::os::unix::fs::MetadataExt;
    if !can_run("services") {
        return;
    }
    let net = Net::new("osvc", 6);
    let overlay = net.overlay().await;
    let runtime = ProcessRuntime::builder().build().unwrap();
    let node =
        arbor::Node::start(arbor::NodeConfig::new(Arc::new(runtime)).overlay(overlay.clone()))
            .await
            .unwrap();
    let mark = uuid::Uuid::new_v4().to_string();
    let d = arbor::Deployment::from_yaml(&format!(
        "services:\n  web:\n    command: [sleep, \"60\"]\n    replicas: 2\n    env: {{ARBOR_TEST_MARK: \"{mark}\"}}\n    network: {{required: true}}\n"
    ))
    .unwrap();
    node.deploy(&d).await.unwrap();
    let attached = eventually_some_async("both replicas are attached", || async {
        let a = overlay.attachments().await.unwrap();
        (a.len() == 2).then_some(a)
    })
    .await;
    let namespaces: BTreeSet<u64> = attached
        .iter()
        .map(|a| std::fs::metadata(a.netns.as_ref().unwrap()).unwrap().ino())
        .collect();
    assert_eq!(namespaces.len(), 2);
    let pids = eventually_some_async("both replicas run", || async {
        let pids = arbor::runtime::process::procfs::with_env("ARBOR_TEST_MARK", &mark);
        (pids.len() == 2).then_some(pids)
    })
    .await;
    let theirs: BTreeSet<u64> = pids
        .iter()
        .map(|p| {
            std::fs::metadata(format!("/proc/{p}/ns/net"))
                .unwrap()
                .ino()
        })
        .collect();
    assert_eq!(
        theirs, namespaces,
        "each replica runs in its own prepared namespace"
    );
    node.stop_service("web").await.unwrap();
    eventually_async("the segment is gone", || async {
        overlay.list().await.unwrap().is_empty()
    })
    .await;
    net.assert_nothing_left();
    node.shutdown(Duration::from_secs(5)).await;
}
