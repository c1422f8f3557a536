//! Job executor benchmarks, each figure printed beside a baseline measured
//! in the same run:
//!
//! ```text
//! cargo bench --bench jobs
//! ```
//!
//! One JSON line per figure:
//! `{"figure", "value", "unit", "baseline", "baseline_value", "ratio"}`
//! (`ratio` = value / baseline_value: higher is better for rates, worse for
//! times).
//!
//! Each side runs in its own process (this binary re-runs itself with
//! `--phase NAME`) on a two-worker tokio runtime. The throughput phases run
//! in three interleaved rounds and each figure is the median; the 1 GiB
//! capture and the 100k-record phases run once. State dirs are temp dirs
//! under `/tmp` (`BENCH_TMPDIR` overrides it) unless said otherwise,
//! deleted at the end of each phase. Each phase's raw output (with more
//! detail than the figures) goes to stderr. About two minutes in all on a
//! 2-core machine.
//!
//! - **Throughput**: 2,000 runs of `/bin/true` with 64 in flight (64 tokio
//!   tasks each looping `trigger` + `wait` on one job with
//!   `max_concurrent: 64`), through an executor with a state dir: every run
//!   gets its durable records (`meta.json`, `state.json` rewritten at each
//!   transition, `completion_event.json`, each synced) and its three log
//!   files, and the job's history
//!   limit (the default: 3 successful runs kept) prunes the records of
//!   older runs as newer ones finish, deleting their directories: that is
//!   part of the real cost and is measured. Given for both placements,
//!   process groups and cgroups (root only; skipped otherwise), and, to
//!   show where the time goes, with process groups and the state dir on a
//!   tmpfs (`/dev/shm`: the syncs cost nothing) and with no state dir at
//!   all (records in memory, no log files). Baseline:
//!   `tokio::process::Command::new("/bin/true")` spawn + wait, 64 in flight.
//!   Unit: jobs/s.
//! - **Log capture**: one job writing 1 GiB of 80-byte lines to stdout
//!   (`yes <79 chars> | head -c 1073741824`) through an executor with a
//!   state dir (`stdout.log`, plus the timestamped `full.log`, plus the
//!   live tail), timed from `trigger` to the terminal state; the size of
//!   `stdout.log` is checked. Baselines: the same pipeline spawned with its
//!   stdout piped into a `std::fs::File` from a blocking thread, copied with
//!   `std::io::copy` (which splices pipe to file in the kernel on Linux) and
//!   with a plain 64 KiB read/write loop. Unit: MB/s of stdout.
//! - **Service log capture**: the same pipeline as the one replica of a
//!   service (`ServiceSpec::supervisor_spec_in` with a state dir: its
//!   `stdout.log` and timestamped `full.log` under `services/`), timed from
//!   the supervisor's start to the replica's exit (its container removed,
//!   the pipes read to their end); `stdout.log` is checked. Baseline: the
//!   64 KiB read/write loop. Unit: MB/s of stdout.
//! - **Status lookup**: 100,000 finished records (100 jobs x 1,000) written
//!   with the public store API (`Store::create`, 16 threads) into a state
//!   dir on `/dev/shm` (see [`records_base`]: on this machine's disk the
//!   syncs make writing them take 20-40 s and deleting them 30 s), reloaded
//!   by `Executor::start`; then 10,000 sequential `get(id)` (random ids) and
//!   10,000 `latest(job)` (random jobs), three times, median of the mean.
//!   Baseline: a ractor call round trip to a plain actor holding the same
//!   records in a `HashMap`. The reload at start is a figure too, beside
//!   reading the same 200,000 small files (`meta.json`, `state.json`) raw,
//!   and reading and parsing them with serde_json, on one thread (the page
//!   cache is warm for all: the files were just written); the store's
//!   `load_all` alone is given too, to tell its share from the executor's.

use std::{
    collections::HashMap,
    fs::File,
    io::{Read, Write},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use arbor::{
    ExecutionId, ExecutionMeta, ExecutionRecord, ExecutionStatus, Executor, ExecutorConfig,
    JobSpec, JobState, JobTrigger, ProcessRuntime, store::Store,
};
use chrono::{TimeDelta, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::{Value, json};

const JOBS: usize = 2_000;
const IN_FLIGHT: usize = 64;
const ROUNDS: usize = 3;
const CAPTURE_BYTES: u64 = 1 << 30;
const RECORDS: usize = 100_000;
const RECORD_JOBS: usize = 100;
const LOOKUPS: usize = 10_000;
const LOOKUP_REPEATS: usize = 3;

#[path = "common/phases.rs"]
mod phases;

use phases::{figure, measure, quantile};

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
        return; // `cargo bench -- --list` compatibility: nothing to list
    }
    compare();
}

/// Runs every phase in a child process and prints the figures.
fn compare() {
    let groups = [("BENCH_CGROUPS", "0")];
    let cgroups = [("BENCH_CGROUPS", "1")];
    let tmpfs = [("BENCH_CGROUPS", "0"), ("BENCH_TMPDIR", "/dev/shm")];
    let memory = [("BENCH_CGROUPS", "0"), ("BENCH_NO_STATE", "1")];
    let mut phases: Vec<(&str, &[(&str, &str)])> = vec![
        ("throughput-arbor", &groups),
        ("throughput-raw", &[]),
        ("throughput-arbor-cgroups", &cgroups),
        ("throughput-arbor-memory", &memory),
    ];
    if std::path::Path::new("/dev/shm").is_dir() {
        phases.push(("throughput-arbor-tmpfs", &tmpfs));
    }
    let m = measure(&phases, ROUNDS);
    let raw = &m["throughput-raw"];
    let none = Value::Null;
    for (mode, arbor) in [
        ("process_groups", &m["throughput-arbor"]),
        ("cgroups", &m["throughput-arbor-cgroups"]),
        // Where the time goes: the same runs with the state dir on a tmpfs
        // (fsync costs nothing), and with no state dir at all.
        (
            "process_groups_state_dir_on_tmpfs",
            m.get("throughput-arbor-tmpfs").unwrap_or(&none),
        ),
        ("process_groups_no_state_dir", &m["throughput-arbor-memory"]),
    ] {
        if arbor.is_null() {
            continue;
        }
        if mode == "cgroups" && arbor["cgroups"].as_bool() != Some(true) {
            eprintln!(
                "cgroup figures skipped: not root or no cgroup v2 (run as root to measure them)"
            );
            continue;
        }
        if arbor["not_completed"].as_f64() != Some(0.0) {
            error_figure(
                &format!("job_throughput_runs_not_completed_{mode}"),
                &arbor["not_completed"],
                "runs",
            );
        }
        figure(
            &format!("job_throughput_2000_true_64_in_flight_{mode}"),
            &arbor["jobs_per_s"],
            "jobs/s",
            "tokio_process_spawn_wait_64_in_flight",
            &raw["jobs_per_s"],
        );
    }

    let m = measure(
        &[
            ("capture-arbor", &[]),
            ("capture-service", &[]),
            ("capture-raw-copy", &[]),
            ("capture-raw-read-write", &[]),
        ],
        1,
    );
    let service = &m["capture-service"];
    if service["stdout_bytes"].as_f64() != Some(CAPTURE_BYTES as f64) {
        error_figure(
            "service_log_capture_1gib_stdout_log_size_wrong",
            &service["stdout_bytes"],
            "bytes",
        );
        eprintln!("service capture phase: {service}");
    }
    figure(
        "service_log_capture_1gib_80b_lines_start_to_exit",
        &service["mb_per_s"],
        "MB/s",
        "pipe_to_file_read_write_64k",
        &m["capture-raw-read-write"]["mb_per_s"],
    );
    let arbor = &m["capture-arbor"];
    if arbor["stdout_bytes"].as_f64() != Some(CAPTURE_BYTES as f64) || arbor["state"] != "completed"
    {
        error_figure(
            "log_capture_1gib_stdout_log_size_wrong",
            &arbor["stdout_bytes"],
            "bytes",
        );
        eprintln!("capture phase: {arbor}");
    }
    figure(
        "log_capture_1gib_80b_lines_trigger_to_terminal",
        &arbor["mb_per_s"],
        "MB/s",
        "pipe_to_file_std_io_copy",
        &m["capture-raw-copy"]["mb_per_s"],
    );
    figure(
        "log_capture_1gib_80b_lines_trigger_to_terminal",
        &arbor["mb_per_s"],
        "MB/s",
        "pipe_to_file_read_write_64k",
        &m["capture-raw-read-write"]["mb_per_s"],
    );

    let m = measure(&[("status-arbor", &[]), ("status-raw", &[])], 1);
    let (arbor, raw) = (&m["status-arbor"], &m["status-raw"]);
    if arbor["loaded"].as_f64() != Some(RECORDS as f64) {
        error_figure(
            "executor_reload_records_missing",
            &arbor["loaded"],
            "records",
        );
    }
    figure(
        "executor_get_100k_records",
        &arbor["get_us"],
        "us",
        "ractor_call_hashmap_get_100k",
        &raw["get_us"],
    );
    figure(
        "executor_latest_100k_records",
        &arbor["latest_us"],
        "us",
        "ractor_call_hashmap_latest_100k",
        &raw["latest_us"],
    );
    figure(
        "executor_start_reload_100k_records",
        &arbor["reload_ms"],
        "ms",
        "read_200k_small_files_raw",
        &arbor["raw_read_ms"],
    );
    figure(
        "executor_start_reload_100k_records",
        &arbor["reload_ms"],
        "ms",
        "read_and_parse_200k_json_files",
        &arbor["raw_parse_ms"],
    );
    // Where the reload goes: the store's `load_all` alone.
    figure(
        "store_load_all_100k_records",
        &arbor["store_load_all_ms"],
        "ms",
        "read_and_parse_200k_json_files",
        &arbor["raw_parse_ms"],
    );
}

/// A figure that reports a failed check (its value is what was found).
fn error_figure(name: &str, value: &Value, unit: &str) {
    let line = json!({
        "figure": format!("error_{name}"),
        "value": value,
        "unit": unit,
        "baseline": Value::Null,
        "baseline_value": Value::Null,
        "ratio": Value::Null,
    });
    println!("{line}");
}

async fn run_phase(name: &str) -> Value {
    match name {
        "throughput-arbor"
        | "throughput-arbor-cgroups"
        | "throughput-arbor-memory"
        | "throughput-arbor-tmpfs" => throughput_arbor().await,
        "throughput-raw" => throughput_raw().await,
        "capture-arbor" => capture_arbor().await,
        "capture-service" => capture_service().await,
        "capture-raw-copy" => capture_raw(true).await,
        "capture-raw-read-write" => capture_raw(false).await,
        "status-arbor" => status_arbor().await,
        "status-raw" => status_raw().await,
        other => panic!("unknown phase {other}"),
    }
}

/// A temp dir under `/tmp` (`BENCH_TMPDIR` overrides it).
fn temp_dir() -> tempfile::TempDir {
    temp_dir_in(&std::env::var("BENCH_TMPDIR").unwrap_or_else(|_| "/tmp".into()))
}

fn temp_dir_in(base: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("arbor-bench-jobs-")
        .tempdir_in(base)
        .unwrap_or_else(|e| panic!("temp dir under {base}: {e}"))
}

/// Where the 100k records are written: a tmpfs (`/dev/shm`) when there is
/// one, since on a disk each record costs a few fsyncs to write and the
/// whole lot tens of seconds to write and to delete (`BENCH_RECORDS_DIR`
/// overrides it, e.g. `/tmp`). The reload reads from the page cache either
/// way (the files were just written).
fn records_base() -> String {
    std::env::var("BENCH_RECORDS_DIR").unwrap_or_else(|_| {
        let shm = std::path::Path::new("/dev/shm");
        if shm.is_dir() { "/dev/shm" } else { "/tmp" }.to_owned()
    })
}

fn runtime() -> ProcessRuntime {
    let cgroups = std::env::var("BENCH_CGROUPS").map_or(true, |v| v == "1");
    ProcessRuntime::builder()
        .cgroups(cgroups)
        .build()
        .expect("process runtime")
}

// ---------------------------------------------------------------- throughput

/// `total` runs of job `true`, `in_flight` at once: each task triggers a run
/// and waits for it, again and again. Returns the runs that did not complete.
async fn run_arbor(exec: &Executor, total: usize, in_flight: usize) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let (exec, next) = (exec.clone(), next.clone());
            tokio::spawn(async move {
                let mut not_completed = 0;
                while next.fetch_add(1, Ordering::Relaxed) < total {
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
        not_completed += t.await.expect("trigger task");
    }
    not_completed
}

async fn throughput_arbor() -> Value {
    let rt = runtime();
    let cgroups = rt.uses_cgroups();
    let dir = temp_dir();
    let state = dir.path().join("state");
    let mut config = ExecutorConfig::new(Arc::new(rt)).state_dir(&state);
    if std::env::var("BENCH_NO_STATE").is_ok() {
        config.state_dir = None;
    }
    let exec = Executor::start(config).await.expect("executor");
    let mut spec = JobSpec::command("true", ["/bin/true"]);
    spec.max_concurrent = Some(IN_FLIGHT);
    exec.register(spec).await.expect("register");

    run_arbor(&exec, IN_FLIGHT, IN_FLIGHT).await; // warm-up
    let t0 = Instant::now();
    let not_completed = run_arbor(&exec, JOBS, IN_FLIGHT).await;
    let secs = t0.elapsed().as_secs_f64();
    exec.wait_all().await.expect("wait_all");
    let retained = exec.list("true").await.expect("list").len();
    exec.shutdown(Duration::from_secs(10)).await;
    json!({
        "jobs_per_s": JOBS as f64 / secs,
        "not_completed": not_completed,
        "retained": retained,
        "cgroups": cgroups,
    })
}

async fn raw_true(total: usize, in_flight: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let next = next.clone();
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let status = tokio::process::Command::new("/bin/true")
                        .spawn()
                        .expect("spawn /bin/true")
                        .wait()
                        .await
                        .expect("wait /bin/true");
                    assert!(status.success());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("spawn task");
    }
}

async fn throughput_raw() -> Value {
    raw_true(IN_FLIGHT, IN_FLIGHT).await; // warm-up
    let t0 = Instant::now();
    raw_true(JOBS, IN_FLIGHT).await;
    let secs = t0.elapsed().as_secs_f64();
    json!({"jobs_per_s": JOBS as f64 / secs})
}

// --------------------------------------------------------------- log capture

/// 80-byte lines (79 characters and a newline), `CAPTURE_BYTES` in all.
fn capture_script() -> String {
    format!("yes '{}' | head -c {CAPTURE_BYTES}", "a".repeat(79))
}

fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

async fn capture_arbor() -> Value {
    let dir = temp_dir();
    let state = dir.path().join("state");
    let exec = Executor::start(ExecutorConfig::new(Arc::new(runtime())).state_dir(&state))
        .await
        .expect("executor");
    exec.register(JobSpec::shell("capture", capture_script()))
        .await
        .expect("register");
    let t0 = Instant::now();
    let id = exec
        .trigger("capture", JobTrigger::Cli)
        .await
        .expect("trigger");
    let record = exec.wait(id).await.expect("wait");
    let secs = t0.elapsed().as_secs_f64();
    exec.shutdown(Duration::from_secs(10)).await;
    let files = Store::open(&state)
        .and_then(|s| s.files(id))
        .expect("files");
    let size = |p: std::path::PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
    let stdout_bytes = size(files.stdout_path());
    json!({
        "mb_per_s": mb_per_s(stdout_bytes, secs),
        "secs": secs,
        "stdout_bytes": stdout_bytes,
        "full_log_bytes": size(files.full_log_path()),
        "state": record.status.state.name(),
    })
}

/// The same pipeline as one replica of a service with a state dir: its
/// output goes to `stdout.log` and `full.log` under
/// `<state>/services/capture/capture-0/` (rotation off: one file of 2 GiB
/// at most), timed from the start of the service to the replica's exit.
async fn capture_service() -> Value {
    let dir = temp_dir();
    let state = dir.path().join("state");
    let mut service = arbor::ServiceSpec::shell(capture_script());
    service.restart = arbor::RestartType::Transient;
    service.logs.max_size = bytesize::ByteSize::gib(4);
    let spec = service
        .supervisor_spec_in("capture", Arc::new(runtime()), Some(&state))
        .expect("spec");
    let bus = arbor::EventBus::new();
    let mut events = bus.subscribe();
    let t0 = Instant::now();
    let (sup, _) = arbor::SupervisorRef::start_with_events(spec, bus)
        .await
        .expect("start");
    while let Some(e) = events.recv().await {
        if matches!(
            e,
            arbor::Event::ChildCompleted { .. } | arbor::Event::ChildExited { .. }
        ) {
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    sup.shutdown().await;
    let replica = state.join("services/capture/capture-0");
    let size = |p: std::path::PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
    let stdout_bytes = size(replica.join("stdout.log"));
    json!({
        "mb_per_s": mb_per_s(stdout_bytes, secs),
        "secs": secs,
        "stdout_bytes": stdout_bytes,
        "full_log_bytes": size(replica.join("full.log")),
    })
}

/// The same pipeline, its stdout piped to a file from a blocking thread.
async fn capture_raw(std_copy: bool) -> Value {
    let dir = temp_dir();
    let path = dir.path().join("stdout.log");
    let t0 = Instant::now();
    let bytes = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("sh")
            .args(["-c", &capture_script()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the pipeline");
        let mut pipe = child.stdout.take().expect("stdout pipe");
        let mut file = File::create(&path).expect("create stdout.log");
        let bytes = if std_copy {
            std::io::copy(&mut pipe, &mut file).expect("copy")
        } else {
            let mut buf = vec![0u8; 64 * 1024];
            let mut n = 0u64;
            loop {
                match pipe.read(&mut buf).expect("read") {
                    0 => break,
                    k => {
                        file.write_all(&buf[..k]).expect("write");
                        n += k as u64;
                    }
                }
            }
            n
        };
        assert!(child.wait().expect("wait").success());
        bytes
    })
    .await
    .expect("copy thread");
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(bytes, CAPTURE_BYTES);
    json!({"mb_per_s": mb_per_s(bytes, secs), "secs": secs})
}

// ------------------------------------------------------------- status lookup

/// `RECORDS` finished records spread over `RECORD_JOBS` jobs, oldest first.
fn records() -> Vec<ExecutionRecord> {
    let now = Utc::now();
    (0..RECORDS)
        .map(|i| {
            let created = now - TimeDelta::milliseconds((RECORDS - i) as i64);
            let finished = created + TimeDelta::microseconds(500);
            let meta = ExecutionMeta {
                id: ExecutionId::new(),
                job: job_name(i % RECORD_JOBS),
                attempt: 1,
                retry_of: None,
                command: vec!["/bin/true".into()],
                image: None,
                trigger: JobTrigger::Cli,
                env: Default::default(),
                cwd: None,
                created_at: created,
            };
            let status = ExecutionStatus {
                state: JobState::Completed {
                    exit_code: 0,
                    duration: Duration::from_micros(400),
                },
                pid: None,
                pid_start_ticks: None,
                signal: None,
                paused: false,
                started_at: Some(created),
                finished_at: Some(finished),
                updated_at: finished,
                logs_incomplete: None,
            };
            ExecutionRecord { meta, status }
        })
        .collect()
}

fn job_name(i: usize) -> String {
    format!("job-{i:03}")
}

/// xorshift64: reproducible random indexes without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Mean µs per call of `LOOKUPS` sequential calls; median of `LOOKUP_REPEATS`.
async fn per_call_us<F, Fut>(mut call: F) -> f64
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..LOOKUPS / 10 {
        assert!(call(rng.below(RECORDS)).await, "lookup found nothing"); // warm-up
    }
    let mut means = Vec::new();
    for _ in 0..LOOKUP_REPEATS {
        let t0 = Instant::now();
        for _ in 0..LOOKUPS {
            assert!(call(rng.below(RECORDS)).await, "lookup found nothing");
        }
        means.push(t0.elapsed().as_secs_f64() * 1e6 / LOOKUPS as f64);
    }
    quantile(&mut means, 0.5)
}

async fn status_arbor() -> Value {
    let dir = temp_dir_in(&records_base());
    let state = dir.path().join("state");
    let store = Store::open(&state).expect("store");
    let records = records();

    // Written with the public store API, from several threads (each record
    // is a few synced writes: bound by fsync latency, not CPU).
    let t0 = Instant::now();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(r) = records.get(i) else { break };
                    store.create(&r.meta, &r.status).expect("create a record");
                }
            });
        }
    });
    let populate_s = t0.elapsed().as_secs_f64();

    // Baselines: the same files read raw, then read and parsed.
    let exec_dir = store.executions_dir().to_owned();
    let read_all = |parse: bool| {
        let t0 = Instant::now();
        let mut bytes = 0;
        for entry in std::fs::read_dir(&exec_dir).expect("read_dir") {
            let dir = entry.expect("entry").path();
            let meta = std::fs::read(dir.join("meta.json")).expect("meta.json");
            let status = std::fs::read(dir.join("state.json")).expect("state.json");
            bytes += meta.len() + status.len();
            if parse {
                let meta: ExecutionMeta = serde_json::from_slice(&meta).expect("meta");
                let status: ExecutionStatus = serde_json::from_slice(&status).expect("status");
                std::hint::black_box((meta, status));
            }
        }
        std::hint::black_box(bytes);
        t0.elapsed().as_secs_f64() * 1e3
    };
    let raw_read_ms = read_all(false);
    let raw_parse_ms = read_all(true);
    // The store's own reading, without the executor's table.
    let t0 = Instant::now();
    let n = store.load_all().expect("load_all").records.len();
    let load_all_ms = t0.elapsed().as_secs_f64() * 1e3;
    assert_eq!(n, RECORDS);

    let t0 = Instant::now();
    let exec = Executor::start(ExecutorConfig::new(Arc::new(runtime())).state_dir(&state))
        .await
        .expect("executor");
    let reload_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t0 = Instant::now();
    let loaded = exec.list_all().await.expect("list_all").len();
    let list_all_ms = t0.elapsed().as_secs_f64() * 1e3;

    let ids: Vec<ExecutionId> = records.iter().map(|r| r.meta.id).collect();
    let get_us = per_call_us(|i| {
        let (exec, id) = (&exec, ids[i]);
        async move { exec.get(id).await.expect("get").is_some() }
    })
    .await;
    let jobs: Vec<String> = (0..RECORD_JOBS).map(job_name).collect();
    let latest_us = per_call_us(|i| {
        let (exec, job) = (&exec, &jobs[i % RECORD_JOBS]);
        async move { exec.latest(job).await.expect("latest").is_some() }
    })
    .await;
    let t0 = Instant::now();
    exec.shutdown(Duration::from_secs(10)).await;
    let shutdown_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t0 = Instant::now();
    drop(dir);
    let cleanup_s = t0.elapsed().as_secs_f64();
    json!({
        "shutdown_ms": shutdown_ms,
        "cleanup_s": cleanup_s,
        "populate_s": populate_s,
        "raw_read_ms": raw_read_ms,
        "raw_parse_ms": raw_parse_ms,
        "store_load_all_ms": load_all_ms,
        "reload_ms": reload_ms,
        "loaded": loaded,
        "list_all_ms": list_all_ms,
        "get_us": get_us,
        "latest_us": latest_us,
    })
}

/// A plain ractor actor holding the records in a `HashMap`.
struct Records;

enum RecordsMsg {
    Get(ExecutionId, RpcReplyPort<Option<ExecutionRecord>>),
    Latest(String, RpcReplyPort<Option<ExecutionRecord>>),
}

// Local only: never sent to another node (the `cluster` feature of
// ractor asks every message type to say so).
impl ractor::Message for RecordsMsg {}

struct RecordsState {
    by_id: HashMap<ExecutionId, ExecutionRecord>,
    latest: HashMap<String, ExecutionId>,
}

impl Actor for Records {
    type Msg = RecordsMsg;
    type State = RecordsState;
    type Arguments = Vec<ExecutionRecord>;

    async fn pre_start(
        &self,
        _: ActorRef<RecordsMsg>,
        records: Vec<ExecutionRecord>,
    ) -> Result<RecordsState, ActorProcessingErr> {
        let mut state = RecordsState {
            by_id: HashMap::with_capacity(records.len()),
            latest: HashMap::new(),
        };
        for r in records {
            state.latest.insert(r.meta.job.clone(), r.meta.id);
            state.by_id.insert(r.meta.id, r);
        }
        Ok(state)
    }

    async fn handle(
        &self,
        _: ActorRef<RecordsMsg>,
        msg: RecordsMsg,
        state: &mut RecordsState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RecordsMsg::Get(id, reply) => {
                let _ = reply.send(state.by_id.get(&id).cloned());
            }
            RecordsMsg::Latest(job, reply) => {
                let record = state
                    .latest
                    .get(&job)
                    .and_then(|id| state.by_id.get(id))
                    .cloned();
                let _ = reply.send(record);
            }
        }
        Ok(())
    }
}

async fn status_raw() -> Value {
    let records = records();
    let ids: Vec<ExecutionId> = records.iter().map(|r| r.meta.id).collect();
    let (actor, _) = Records::spawn(None, Records, records)
        .await
        .expect("records actor");
    let get_us = per_call_us(|i| {
        let (actor, id) = (&actor, ids[i]);
        async move {
            ractor::call!(actor, RecordsMsg::Get, id)
                .expect("get")
                .is_some()
        }
    })
    .await;
    let jobs: Vec<String> = (0..RECORD_JOBS).map(job_name).collect();
    let latest_us = per_call_us(|i| {
        let (actor, job) = (&actor, jobs[i % RECORD_JOBS].clone());
        async move {
            ractor::call!(actor, RecordsMsg::Latest, job)
                .expect("latest")
                .is_some()
        }
    })
    .await;
    actor.stop(None);
    json!({"get_us": get_us, "latest_us": latest_us})
}
