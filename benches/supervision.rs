//! Supervision benchmarks, each figure printed beside a baseline measured in
//! the same run:
//!
//! ```text
//! cargo bench --bench supervision
//! ```
//!
//! One JSON line per figure:
//! `{"figure", "value", "unit", "baseline", "baseline_value", "ratio"}`.
//!
//! Each side of a comparison runs in its own process (this binary re-runs
//! itself with `--phase NAME`), so memory figures do not see each other's
//! freed pages and panic hooks do not leak from one side to the other. All
//! phases run in five interleaved rounds and each figure is the median.
//! Process figures are given for both placements: process groups (no root)
//! and cgroups (root only; skipped otherwise).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use arbor::{
    ChildSpec, ContainerSpec, Event, ProcessRuntime, Runtime, SupervisorRef, SupervisorSpec,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const ACTORS: usize = 100_000;
const FAILOVERS: usize = 5_000;
const PROCESS_CRASHES: usize = 200;
/// Interleaved rounds per phase; each figure is their median.
const ROUNDS: usize = 5;

#[path = "common/phases.rs"]
mod phases;

use phases::{figure, measure, quantile};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--phase") {
        let phase = args.get(i + 1).map(String::as_str).unwrap_or("");
        let rt = if std::env::var("BENCH_CURRENT_THREAD").is_ok() {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
        }
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
    let bt = [("RUST_BACKTRACE", "1")];
    let groups = [("BENCH_CGROUPS", "0")];
    let cgroups = [("BENCH_CGROUPS", "1")];
    let m = measure(
        &[
            ("spawn-raw", &[]),
            ("spawn-raw-handler", &[]),
            ("spawn-arbor-init", &[]),
            ("spawn-arbor-batch", &[]),
            ("spawn-arbor", &[]),
            ("spawn-arbor-call", &[]),
            ("failover-arbor", &bt),
            ("failover-arbor-persisted", &bt),
            ("failover-raw", &bt),
            ("failover-raw-arbor-hook", &bt),
            ("panic-hook", &bt),
            ("process", &groups),
            ("process-cgroups", &cgroups),
        ],
        ROUNDS,
    );
    let (raw, raw_handler, init, batch, nowait, call) = (
        &m["spawn-raw"],
        &m["spawn-raw-handler"],
        &m["spawn-arbor-init"],
        &m["spawn-arbor-batch"],
        &m["spawn-arbor"],
        &m["spawn-arbor-call"],
    );
    let us = "us_per_actor";
    figure(
        "spawn_supervised_actor",
        &init[us],
        "us",
        "ractor_spawn_linked",
        &raw[us],
    );
    figure(
        "spawn_supervised_actor_start_children",
        &batch[us],
        "us",
        "ractor_spawn_linked",
        &raw[us],
    );
    figure(
        "spawn_supervised_actor_start_children",
        &batch[us],
        "us",
        "ractor_spawn_linked_inside_a_handler",
        &raw_handler[us],
    );
    figure(
        "spawn_supervised_actor_start_child_nowait",
        &nowait[us],
        "us",
        "ractor_spawn_linked",
        &raw[us],
    );
    figure(
        "spawn_supervised_actor_start_child",
        &call[us],
        "us",
        "ractor_spawn_linked",
        &raw[us],
    );
    figure(
        "rss_per_supervised_actor",
        &init["rss_per_actor"],
        "bytes",
        "ractor_actor",
        &raw["rss_per_actor"],
    );

    let (fail_arbor, fail_raw, fail_raw_hooked) = (
        &m["failover-arbor"],
        &m["failover-raw"],
        &m["failover-raw-arbor-hook"],
    );
    for q in ["p50", "p99"] {
        figure(
            &format!("child_failure_to_replacement_running_{q}"),
            &fail_arbor[q],
            "us",
            "ractor_actor_failed_then_spawn_linked_default_hook",
            &fail_raw[q],
        );
        figure(
            &format!("child_failure_to_replacement_running_{q}"),
            &fail_arbor[q],
            "us",
            "ractor_actor_failed_then_spawn_linked_arbor_hook",
            &fail_raw_hooked[q],
        );
    }
    for q in ["p50", "p99"] {
        figure(
            &format!("child_failure_to_replacement_running_with_persisted_state_{q}"),
            &m["failover-arbor-persisted"][q],
            "us",
            "arbor_failover_without_persisted_state",
            &fail_arbor[q],
        );
    }
    let hook = &m["panic-hook"];
    figure(
        "panic_cost_arbor_hook",
        &hook["arbor_us"],
        "us",
        "panic_cost_default_hook",
        &hook["default_us"],
    );

    for (mode, procs) in [
        ("process_groups", &m["process"]),
        ("cgroups", &m["process-cgroups"]),
    ] {
        if mode == "cgroups" && procs["cgroups"].as_bool() != Some(true) {
            eprintln!(
                "cgroup figures skipped: not root or no cgroup v2 (run as root to measure them)"
            );
            continue;
        }
        figure(
            &format!("process_crash_detected_p50_{mode}"),
            &procs["detect_p50"],
            "us",
            "tokio_child_wait_after_kill_p50",
            &procs["raw_detect_p50"],
        );
        for q in ["p50", "p99"] {
            figure(
                &format!("process_crash_to_replacement_running_{q}_{mode}"),
                &procs[format!("replace_{q}").as_str()],
                "us",
                &format!("tokio_wait_then_spawn_same_command_{q}"),
                &procs[format!("raw_replace_{q}").as_str()],
            );
        }
    }
}

async fn run_phase(name: &str) -> Value {
    match name {
        "spawn-raw" => spawn_raw().await,
        "spawn-raw-handler" => spawn_raw_handler().await,
        "spawn-arbor-init" => spawn_arbor_init().await,
        "spawn-arbor-batch" => spawn_arbor_batch().await,
        "spawn-arbor" => spawn_arbor(false).await,
        "spawn-arbor-call" => spawn_arbor(true).await,
        "failover-arbor" => {
            // The hook a node installs (supervisors never install it).
            arbor::panics::install();
            failover_arbor().await
        }
        "failover-arbor-persisted" => {
            arbor::panics::install();
            let dir = std::env::temp_dir().join(format!("arbor-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let store = arbor::store::supervision::SupervisionStore::open(&dir);
            let out = failover_arbor_with(Some(store.clone())).await;
            store.flush().await.unwrap();
            let _ = std::fs::remove_dir_all(&dir);
            out
        }
        "failover-raw" => failover_raw().await,
        "failover-raw-arbor-hook" => {
            // The same hook, treating the bare actor as arbor treats its
            // children (the hook rate-limits supervised actors only).
            arbor::panics::install();
            WRAP.store(true, std::sync::atomic::Ordering::SeqCst);
            failover_raw().await
        }
        "panic-hook" => panic_hook().await,
        "process" | "process-cgroups" => process().await,
        other => panic!("unknown phase {other}"),
    }
}

fn rss_bytes() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0
}

/// The smallest useful actor: no state, ignores its messages.
struct Noop;

impl Actor for Noop {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// A ractor supervisor that ignores its children's events.
struct PlainSupervisor;

impl Actor for PlainSupervisor {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<()>,
        _: SupervisionEvent,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

async fn spawn_raw() -> Value {
    let (sup, _) = PlainSupervisor::spawn(None, PlainSupervisor, ())
        .await
        .unwrap();
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    let mut children = Vec::with_capacity(ACTORS);
    for _ in 0..ACTORS {
        let (child, _) = Noop::spawn_linked(None, Noop, (), sup.get_cell())
            .await
            .unwrap();
        children.push(child);
    }
    let elapsed = t0.elapsed();
    let rss = rss_bytes() - rss0;
    json!({"us_per_actor": micros(elapsed) / ACTORS as f64, "rss_per_actor": rss / ACTORS as f64})
}

/// A plain ractor actor that spawns a linked `Noop` for each `Spawn`.
struct Spawner;

enum SpawnerMsg {
    Spawn,
    Done(ractor::RpcReplyPort<()>),
}

impl ractor::Message for SpawnerMsg {}

impl Actor for Spawner {
    type Msg = SpawnerMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SpawnerMsg::Spawn => {
                Noop::spawn_linked(None, Noop, (), myself.get_cell()).await?;
            }
            SpawnerMsg::Done(done) => {
                let _ = done.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<Self::Msg>,
        _: SupervisionEvent,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

async fn spawn_raw_handler() -> Value {
    let (spawner, _) = Spawner::spawn(None, Spawner, ()).await.unwrap();
    let t0 = Instant::now();
    for _ in 0..ACTORS {
        spawner.cast(SpawnerMsg::Spawn).unwrap();
    }
    ractor::call!(spawner, SpawnerMsg::Done).unwrap();
    json!({"us_per_actor": micros(t0.elapsed()) / ACTORS as f64})
}

fn noop_children() -> Vec<ChildSpec> {
    (0..ACTORS)
        .map(|i| ChildSpec::actor(format!("w{i}"), || Noop, || ()))
        .collect()
}

/// A dynamic supervisor started with its 100k children in its spec.
async fn spawn_arbor_init() -> Value {
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    let spec = SupervisorSpec::dynamic("pool").children(noop_children());
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let elapsed = t0.elapsed();
    let rss = rss_bytes() - rss0;
    assert_eq!(sup.count_children().await.unwrap().active, ACTORS);
    json!({"us_per_actor": micros(elapsed) / ACTORS as f64, "rss_per_actor": rss / ACTORS as f64})
}

/// 100k children added with one `start_children` call.
async fn spawn_arbor_batch() -> Value {
    let (sup, _) = SupervisorRef::start(SupervisorSpec::dynamic("pool"))
        .await
        .unwrap();
    let t0 = Instant::now();
    let results = sup.start_children(noop_children()).await.unwrap();
    let elapsed = t0.elapsed();
    assert!(results.iter().all(Result::is_ok));
    json!({"us_per_actor": micros(elapsed) / ACTORS as f64})
}

/// 100k `start_child` calls, awaited one by one or cast without waiting.
async fn spawn_arbor(one_call_each: bool) -> Value {
    let (sup, _) = SupervisorRef::start(SupervisorSpec::dynamic("pool"))
        .await
        .unwrap();
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    for i in 0..ACTORS {
        let child = ChildSpec::actor(format!("w{i}"), || Noop, || ());
        if one_call_each {
            sup.start_child(child).await.unwrap();
        } else {
            sup.start_child_nowait(child).unwrap();
        }
    }
    // Casts return before the starts end (they run in tasks): wait for all.
    let mut counts = sup.count_children().await.unwrap();
    while counts.active < ACTORS {
        tokio::time::sleep(Duration::from_millis(1)).await;
        counts = sup.count_children().await.unwrap();
    }
    let elapsed = t0.elapsed();
    let rss = rss_bytes() - rss0;
    assert_eq!(counts.active, ACTORS);
    json!({"us_per_actor": micros(elapsed) / ACTORS as f64, "rss_per_actor": rss / ACTORS as f64})
}

/// Panics on any message; reports itself running from `post_start`.
struct Bomb;

impl Actor for Bomb {
    type Msg = ();
    type State = ();
    type Arguments = mpsc::UnboundedSender<ActorRef<()>>;

    async fn pre_start(
        &self,
        _: ActorRef<()>,
        _: Self::Arguments,
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn post_start(&self, myself: ActorRef<()>, _: &mut ()) -> Result<(), ActorProcessingErr> {
        let _ = RUNNING.get().expect("channel set").send(myself);
        Ok(())
    }

    async fn handle(&self, _: ActorRef<()>, _: (), _: &mut ()) -> Result<(), ActorProcessingErr> {
        panic!("bomb went off");
    }
}

static RUNNING: std::sync::OnceLock<mpsc::UnboundedSender<ActorRef<()>>> =
    std::sync::OnceLock::new();

fn running_channel() -> mpsc::UnboundedReceiver<ActorRef<()>> {
    let (tx, rx) = mpsc::unbounded_channel();
    RUNNING.set(tx).expect("set once per process");
    rx
}

async fn measure_failovers(mut rx: mpsc::UnboundedReceiver<ActorRef<()>>) -> Value {
    let mut current = rx.recv().await.expect("first bomb");
    let mut samples = Vec::with_capacity(FAILOVERS);
    for i in 0..FAILOVERS + 500 {
        let t0 = Instant::now();
        current.cast(()).unwrap();
        current = rx.recv().await.expect("replacement");
        if i >= 500 {
            samples.push(micros(t0.elapsed()));
        }
    }
    json!({"p50": quantile(&mut samples, 0.5), "p99": quantile(&mut samples, 0.99)})
}

async fn failover_arbor() -> Value {
    failover_arbor_with(None).await
}

/// Failovers of one child, its restart state kept in `store` when given
/// (a write per batch of restarts, not per restart).
async fn failover_arbor_with(store: Option<arbor::store::supervision::SupervisionStore>) -> Value {
    let rx = running_channel();
    let tx = RUNNING.get().unwrap().clone();
    let mut spec = SupervisorSpec::new("bench")
        .intensity(u32::MAX, Duration::from_secs(1))
        .child(ChildSpec::actor("bomb", || Bomb, move || tx.clone()));
    if let Some(store) = store {
        spec = spec.persist(store, "bench");
    }
    let (_sup, _) = SupervisorRef::start(spec).await.unwrap();
    measure_failovers(rx).await
}

/// Whether the bare baseline wraps its `Bomb` as arbor wraps children.
static WRAP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Spawns a `Bomb` linked to `supervisor`: bare, or wrapped as arbor wraps
/// its children (so arbor's panic hook treats both alike).
async fn spawn_bomb(supervisor: ractor::ActorCell) -> Result<(), ActorProcessingErr> {
    let tx = RUNNING.get().unwrap().clone();
    if WRAP.load(std::sync::atomic::Ordering::SeqCst) {
        Actor::spawn_linked(None, arbor::panics::Supervised(Bomb), tx, supervisor).await?;
    } else {
        Bomb::spawn_linked(None, Bomb, tx, supervisor).await?;
    }
    Ok(())
}

/// A ractor supervisor that respawns a `Bomb` when one fails.
struct Respawner;

impl Actor for Respawner {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        spawn_bomb(myself.get_cell()).await?;
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        e: SupervisionEvent,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(..) = e {
            spawn_bomb(myself.get_cell()).await?;
        }
        Ok(())
    }
}

async fn failover_raw() -> Value {
    let rx = running_channel();
    let (_sup, _) = Respawner::spawn(None, Respawner, ()).await.unwrap();
    measure_failovers(rx).await
}

/// The cost of one caught panic under the default hook, then under arbor's.
async fn panic_hook() -> Value {
    let cost = |n: usize| {
        let t0 = Instant::now();
        for _ in 0..n {
            let _ = std::panic::catch_unwind(|| panic!("measured"));
        }
        micros(t0.elapsed()) / n as f64
    };
    // The default hook prints every panic with its backtrace to stderr.
    let default_us = cost(200);
    arbor::panics::install();
    cost(100); // past the burst of full reports
    let arbor_us = cost(10_000);
    json!({"default_us": default_us, "arbor_us": arbor_us})
}

async fn process() -> Value {
    let cgroups = std::env::var("BENCH_CGROUPS").is_ok_and(|v| v == "1");
    let rt = ProcessRuntime::builder().cgroups(cgroups).build().unwrap();
    let cgroups = rt.uses_cgroups();
    let spec = ContainerSpec::command("sleeper", ["sleep", "1000"]);

    // Detection: the runtime's wait returns after SIGKILL, vs tokio's child.wait().
    let mut detect = Vec::new();
    let mut raw_detect = Vec::new();
    for _ in 0..PROCESS_CRASHES {
        let id = rt.create(&spec).await.unwrap();
        rt.start(&id).await.unwrap();
        let pid = rt.pid(&id).await.unwrap().unwrap();
        let waiter = {
            let (rt, id) = (rt.clone(), id.clone());
            tokio::spawn(async move {
                rt.wait(&id).await.unwrap();
                Instant::now()
            })
        };
        tokio::task::yield_now().await;
        let t0 = Instant::now();
        kill(pid);
        detect.push(micros(waiter.await.unwrap() - t0));
        rt.remove(&id).await.unwrap();

        let mut child = tokio::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let t0 = Instant::now();
        kill(pid);
        child.wait().await.unwrap();
        raw_detect.push(micros(t0.elapsed()));
    }

    // Replacement: a supervised process killed until its replacement runs,
    // vs tokio: wait for the killed child, then spawn the same command.
    let runtime: Arc<dyn Runtime> = Arc::new(rt.clone());
    let sup_spec = SupervisorSpec::new("bench")
        .intensity(u32::MAX, Duration::from_secs(1))
        .child(ChildSpec::container(
            "sleeper",
            runtime.clone(),
            spec.clone(),
        ));
    let (sup, _) = SupervisorRef::start(sup_spec).await.unwrap();
    let mut events = sup.events();
    let mut replace = Vec::new();
    for _ in 0..PROCESS_CRASHES {
        let pid = current_pid(&sup, &rt).await;
        let t0 = Instant::now();
        kill(pid);
        events
            .wait_for(|e| matches!(e, Event::ChildRestarted { .. }))
            .await
            .unwrap();
        replace.push(micros(t0.elapsed()));
    }
    sup.shutdown().await;

    let mut raw_replace = Vec::new();
    let mut child = tokio::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    for _ in 0..PROCESS_CRASHES {
        let t0 = Instant::now();
        kill(child.id().unwrap());
        child.wait().await.unwrap();
        child = tokio::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        raw_replace.push(micros(t0.elapsed()));
    }
    kill(child.id().unwrap());
    child.wait().await.unwrap();

    json!({
        "cgroups": cgroups,
        "detect_p50": quantile(&mut detect, 0.5),
        "raw_detect_p50": quantile(&mut raw_detect, 0.5),
        "replace_p50": quantile(&mut replace, 0.5),
        "replace_p99": quantile(&mut replace, 0.99),
        "raw_replace_p50": quantile(&mut raw_replace, 0.5),
        "raw_replace_p99": quantile(&mut raw_replace, 0.99),
    })
}

async fn current_pid(sup: &SupervisorRef, rt: &ProcessRuntime) -> u32 {
    loop {
        if let Some(actor) = sup.child::<arbor::ContainerMsg>("sleeper").await.unwrap() {
            let (id, _) = ractor::call!(actor, arbor::ContainerMsg::info).unwrap();
            if let Ok(Some(pid)) = rt.pid(&id).await {
                return pid;
            }
        }
        tokio::task::yield_now().await;
    }
}

fn kill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
