//! OCI runtime benchmarks, each figure beside a baseline measured in the
//! same run:
//!
//! ```text
//! cargo bench --bench oci
//! ```
//!
//! Needs root, runc and /bin/busybox (`apt-get install runc
//! busybox-static`); without them it prints why and no figure. The test
//! image is built from the host's static busybox by arbor's own image code
//! (no download) and imported into a temp state dir.
//!
//! One JSON line per figure:
//! `{"figure", "value", "unit", "baseline", "baseline_value", "ratio"}`
//! (`ratio` = value / baseline_value: higher is better for rates, worse for
//! times). Each side runs in its own process (this binary re-runs itself
//! with `--phase NAME`), three interleaved rounds, median of each.
//!
//! - **Latency**: one container running `true`, through `OciRuntime`:
//!   `create` (bundle: overlay mount + config.json, `runc create`) +
//!   `start` (`runc start`) + `wait` (the exit through the init's pidfd) +
//!   `remove` (`runc delete`, unmount, bundle deleted); median of 30.
//!   Baseline: `runc run` (create, start, wait, delete in one runc process)
//!   of the same config.json, on a bundle prepared once whose root is the
//!   image's unpacked tree (read-only, so no overlay to mount); median of 30.
//!   Unit: ms.
//! - **Job throughput**: 200 jobs of `true` in a container (image
//!   `busybox:bench`), 8 in flight, through an executor with a state dir
//!   (durable records and log files per run). Baseline: 200 bare `runc run`
//!   of the baseline bundle, 8 in flight. Unit: jobs/s.

#[path = "common/phases.rs"]
mod common;

use std::{
    path::Path,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use arbor::{
    ContainerSpec, Executor, ExecutorConfig, JobSpec, JobState, JobTrigger, Runtime,
    runtime::OciRuntime,
    testing::{import_busybox, oci_unavailable},
};
use common::{figure, measure, quantile};
use serde_json::{Value, json};

const ROUNDS: usize = 3;
const LATENCY_RUNS: usize = 30;
const JOBS: usize = 200;
const IN_FLIGHT: usize = 8;
const IMAGE: &str = "busybox:bench";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--phase") {
        let phase = args.get(i + 1).map(String::as_str).unwrap_or("");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let out = rt.block_on(run_phase(phase));
        println!("{out}");
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if let Some(why) = oci_unavailable() {
        eprintln!("oci bench {why}");
        return;
    }
    let m = measure(
        &[
            ("latency-arbor", &[]),
            ("latency-runc", &[]),
            ("jobs-arbor", &[]),
            ("jobs-runc", &[]),
        ],
        ROUNDS,
    );
    figure(
        "container_create_start_exit_remove_true",
        &m["latency-arbor"]["median_ms"],
        "ms",
        "runc_run_same_config",
        &m["latency-runc"]["median_ms"],
    );
    figure(
        "container_jobs_200_true_8_in_flight",
        &m["jobs-arbor"]["jobs_per_s"],
        "jobs/s",
        "runc_run_200_true_8_in_flight",
        &m["jobs-runc"]["jobs_per_s"],
    );
}

async fn run_phase(phase: &str) -> Value {
    let dir = tempfile::Builder::new()
        .prefix("arbor-oci-bench-")
        .tempdir()
        .expect("temp dir");
    let state = dir.path().join("state");
    import_busybox(&state, IMAGE, &["sh"]);
    let rt = OciRuntime::builder()
        .state_dir(&state)
        .build()
        .await
        .expect("OCI runtime");
    let out = match phase {
        "latency-arbor" => latency_arbor(&rt).await,
        "latency-runc" => {
            let bundle = baseline_bundle(&rt, dir.path()).await;
            let mut ms = Vec::new();
            for i in 0..LATENCY_RUNS + 1 {
                let t0 = Instant::now();
                runc_run(&rt, &bundle, &format!("bench-run-{i}")).await;
                if i > 0 {
                    ms.push(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
            json!({"median_ms": quantile(&mut ms, 0.5), "p90_ms": quantile(&mut ms, 0.9)})
        }
        "jobs-arbor" => jobs_arbor(&rt, &state).await,
        "jobs-runc" => {
            // One bundle per worker: each its own cgroup, as arbor's are.
            let mut bundles = Vec::new();
            for w in 0..IN_FLIGHT {
                bundles.push(Arc::new(
                    baseline_bundle(&rt, &dir.path().join(format!("worker-{w}"))).await,
                ));
            }
            let next = Arc::new(AtomicUsize::new(0));
            let t0 = Instant::now();
            let tasks: Vec<_> = (0..IN_FLIGHT)
                .map(|w| {
                    let (rt, bundle, next) = (rt.clone(), bundles[w].clone(), next.clone());
                    tokio::spawn(async move {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= JOBS {
                                break;
                            }
                            runc_run(&rt, &bundle, &format!("bench-job-{i}")).await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("runc task");
            }
            json!({"jobs_per_s": JOBS as f64 / t0.elapsed().as_secs_f64()})
        }
        other => panic!("unknown phase {other}"),
    };
    rt.shutdown(std::time::Duration::ZERO).await;
    out
}

fn true_spec() -> ContainerSpec {
    let mut spec = ContainerSpec::command("bench", ["true"]);
    spec.image = Some(IMAGE.into());
    spec
}

async fn latency_arbor(rt: &OciRuntime) -> Value {
    // Total, and each step (create, start, wait, remove), in ms.
    let mut ms: [Vec<f64>; 5] = Default::default();
    for i in 0..LATENCY_RUNS + 1 {
        let t0 = Instant::now();
        let id = rt.create(&true_spec()).await.expect("create");
        let t1 = Instant::now();
        rt.start(&id).await.expect("start");
        let t2 = Instant::now();
        let status = rt.wait(&id).await.expect("wait");
        assert!(status.success(), "true failed: {status}");
        let t3 = Instant::now();
        rt.remove(&id).await.expect("remove");
        let t4 = Instant::now();
        if i > 0 {
            for (k, (a, b)) in [(t0, t4), (t0, t1), (t1, t2), (t2, t3), (t3, t4)]
                .into_iter()
                .enumerate()
            {
                ms[k].push((b - a).as_secs_f64() * 1e3);
            }
        }
    }
    let [total, create, start, wait, remove] = &mut ms;
    json!({
        "median_ms": quantile(total, 0.5),
        "p90_ms": quantile(total, 0.9),
        "create_ms": quantile(create, 0.5),
        "start_ms": quantile(start, 0.5),
        "wait_ms": quantile(wait, 0.5),
        "remove_ms": quantile(remove, 0.5),
    })
}

/// A bundle for `runc run`: arbor's own config.json for `true` (taken from
/// a container it created), its root pointed at the image's unpacked tree,
/// read-only.
async fn baseline_bundle(rt: &OciRuntime, dir: &Path) -> std::path::PathBuf {
    let id = rt.create(&true_spec()).await.expect("create");
    let mut config: Value = serde_json::from_slice(
        &std::fs::read(rt.bundles_dir().join(&id.0).join("config.json")).expect("config.json"),
    )
    .expect("config json");
    rt.remove(&id).await.expect("remove");
    let record = rt.images().get(IMAGE).expect("image");
    config["root"] = json!({"path": rt.images().rootfs(&record), "readonly": true});
    // Its own cgroup, named after the bundle.
    config["linux"]["cgroupsPath"] = json!(format!(
        "/arbor-oci/bench-{}-{}",
        std::process::id(),
        arbor::image::digest_hex(dir.display().to_string().as_bytes())[..12].to_owned()
    ));
    let bundle = dir.join("baseline-bundle");
    std::fs::create_dir_all(&bundle).expect("bundle dir");
    std::fs::write(bundle.join("config.json"), config.to_string()).expect("write config");
    bundle
}

async fn runc_run(rt: &OciRuntime, bundle: &Path, id: &str) {
    let status = tokio::process::Command::new("runc")
        .arg("--root")
        .arg(rt.runc_root())
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .await
        .expect("runc run");
    assert!(status.success(), "runc run failed: {status}");
}

async fn jobs_arbor(rt: &OciRuntime, state: &Path) -> Value {
    let exec =
        Executor::start(ExecutorConfig::new(Arc::new(rt.clone())).state_dir(state.join("jobs")))
            .await
            .expect("executor");
    let mut spec = JobSpec::command("true", ["true"]);
    spec.image = Some(IMAGE.into());
    spec.max_concurrent = Some(IN_FLIGHT);
    exec.register(spec).await.expect("register");
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (exec, next) = (exec.clone(), next.clone());
            tokio::spawn(async move {
                let mut not_completed = 0;
                while next.fetch_add(1, Ordering::Relaxed) < JOBS {
                    let id = exec
                        .trigger("true", JobTrigger::Cli)
                        .await
                        .expect("trigger");
                    match exec.wait(id).await {
                        Ok(r) if matches!(r.status.state, JobState::Completed { .. }) => {}
                        Ok(r) => {
                            eprintln!("run {id} ended {}", r.status.state);
                            not_completed += 1;
                        }
                        Err(e) => {
                            eprintln!("wait {id}: {e}");
                            not_completed += 1;
                        }
                    }
                }
                not_completed
            })
        })
        .collect();
    let mut not_completed = 0;
    for t in tasks {
        not_completed += t.await.expect("job task");
    }
    json!({
        "jobs_per_s": JOBS as f64 / t0.elapsed().as_secs_f64(),
        "not_completed": not_completed,
    })
}
