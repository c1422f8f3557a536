//! Overlay benchmarks (root only; without root it says so and exits 0):
//!
//! ```text
//! sudo cargo bench --bench overlay
//! ```
//!
//! One JSON line per figure:
//! `{"figure", "value", "unit", "baseline", "baseline_value", "ratio"}`,
//! each a median over 100 sequential cycles, interleaved with its baseline:
//! the same steps as raw `ip` commands (iproute2), which is what a shell
//! script or the seed's helper would run.
//!
//! - `netns_add`: a bound network namespace (`netns::create`) vs `ip netns
//!   add`.
//! - `veth_attach`: veth pair, peer into the namespace, host end on the
//!   bridge and up, then inside: lo up, rename to eth0, address, up, default
//!   route (`LinuxBridge::attach`) vs the seven `ip` commands doing the same.
//! - `detach`: veth deleted and namespace removed vs `ip link del` + `ip
//!   netns del`.
//!
//! Names use the prefix `obn` and addresses 10.231.250.0/24 (a range kept
//! for tests); everything made is deleted.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use arbor::{
    ContainerId,
    overlay::{AttachPlan, Ipv4Net, LinuxBridge, OverlayBackend, SegmentPlan, netns},
};
use serde_json::json;

const ROUNDS: usize = 100;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn median(xs: &mut [Duration]) -> f64 {
    xs.sort();
    xs[xs.len() / 2].as_secs_f64() * 1e6
}

fn figure(name: &str, value: f64, baseline: &str, base: f64) {
    println!(
        "{}",
        json!({
            "figure": name, "value": value.round(), "unit": "us",
            "baseline": baseline, "baseline_value": base.round(),
            "ratio": (value / base * 100.0).round() / 100.0,
        })
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !nix::unistd::geteuid().is_root() || Command::new("ip").arg("-V").output().is_err() {
        eprintln!(
            "overlay bench skipped: needs root and iproute2 (sudo cargo bench --bench overlay)"
        );
        return;
    }
    let dir = PathBuf::from("/run/arbor-bench/netns");
    let backend = LinuxBridge::new().unwrap();
    let subnet: Ipv4Net = "10.231.250.0/24".parse().unwrap();
    let seg = SegmentPlan {
        name: "bench".into(),
        isolation: "default".into(),
        bridge: "obnb0".into(),
        subnet: Some(subnet),
        gateway: Some(Ipv4Addr::new(10, 231, 250, 1)),
    };
    backend.setup_segment(&seg).await.unwrap();
    let (mut ns_arb, mut ns_ip, mut at_arb, mut at_ip, mut de_arb, mut de_ip) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for i in 0..ROUNDS {
        // arbor
        let path = dir.join(format!("obn-{i:x}"));
        let t = Instant::now();
        netns::create(&path).await.unwrap();
        ns_arb.push(t.elapsed());
        let plan = AttachPlan {
            container: ContainerId(format!("c{i}")),
            segment: "bench".into(),
            bridge: "obnb0".into(),
            netns: Some(path.clone()),
            veth: format!("obnv{i:x}"),
            address: Some((Ipv4Addr::new(10, 231, 250, 10), 24)),
            gateway: seg.gateway,
        };
        let t = Instant::now();
        backend.attach(&plan).await.unwrap();
        at_arb.push(t.elapsed());
        let t = Instant::now();
        backend.detach(&plan).await.unwrap();
        backend.remove_netns(&path).await.unwrap();
        de_arb.push(t.elapsed());

        // raw ip
        let name = format!("obnip{i:x}");
        let veth = format!("obnw{i:x}");
        let peer = format!("{veth}p");
        let t = Instant::now();
        ip(&["netns", "add", &name]);
        ns_ip.push(t.elapsed());
        let t = Instant::now();
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &name]);
        ip(&["link", "set", &veth, "master", "obnb0", "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ip(&["-n", &name, "link", "set", &peer, "name", "eth0"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            "10.231.250.11/24",
            "dev",
            "eth0",
        ]);
        ip(&["-n", &name, "link", "set", "eth0", "up"]);
        ip(&[
            "-n",
            &name,
            "route",
            "add",
            "default",
            "via",
            "10.231.250.1",
        ]);
        at_ip.push(t.elapsed());
        let t = Instant::now();
        ip(&["link", "del", &veth]);
        ip(&["netns", "del", &name]);
        de_ip.push(t.elapsed());
    }
    backend.teardown_segment(&seg).await.unwrap();
    figure(
        "netns_add",
        median(&mut ns_arb),
        "ip netns add",
        median(&mut ns_ip),
    );
    figure(
        "veth_attach",
        median(&mut at_arb),
        "ip link add/set x3, ip -n x4",
        median(&mut at_ip),
    );
    figure(
        "detach",
        median(&mut de_arb),
        "ip link del + ip netns del",
        median(&mut de_ip),
    );
}
