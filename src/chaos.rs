//! The chaos harness: run a whole deployment (services, on-demand jobs and
//! cron jobs) under a seeded fault plan, shut it down, and check the
//! invariants DESIGN.md promises.
//!
//! # Why
//!
//! A supervision policy is only as good as its behaviour under failures
//! nobody scripted. [`Chaos`] starts a real [`Node`] (the same supervisors,
//! job actors, executor and cron actor users run) on a [`FaultRuntime`]
//! around the recording [`MockRuntime`], injects faults at random from a
//! seed, triggers jobs, lets everything settle in a quiet period, shuts the
//! node down, and hands what it observed (events with their times, every
//! runtime/overlay/token call, the tree, what is left) to the invariant
//! checks in [`invariants`]. The same seed gives the same run.
//!
//! Run it on tokio's paused clock (`#[tokio::test(start_paused = true)]`, or
//! `arbor chaos`, which builds such a runtime): back-off delays, deadlines
//! and cron schedules then take no wall time, and hours of virtual time run
//! in seconds.
//!
//! # Failure
//!
//! [`Chaos::run`] fails only when the node cannot start or the deployment
//! is refused; everything that goes wrong during the run is a finding in the
//! [`ChaosReport`], never a panic.

mod agent_restart;
pub mod faulty_actor;
pub mod invariants;
mod report;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::time::Instant;

pub use self::{
    invariants::{Observation, Violation},
    report::ChaosReport,
};
use crate::{
    Deployment, Event, FaultRuntime, JobTrigger, MockRuntime, Node, NodeConfig, Overlay,
    RecordingOverlay, RecordingTokens, Runtime, TokioClock,
    journal::Journal,
    runtime::{
        ExitStatus,
        fault::{FaultKind, FaultPlan},
        mock::MockRun,
    },
};

/// Why a chaos run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The node did not start.
    #[error("failed to start the node: {0}")]
    Start(String),
    /// The deployment was refused.
    #[error("failed to deploy the spec: {0}")]
    Deploy(String),
}

/// Puts a layer between the node and the fault runtime (see
/// [`Chaos::wrap_runtime`]).
#[derive(Clone)]
struct Wrap(Arc<WrapFn>);

type WrapFn = dyn Fn(Arc<dyn Runtime>) -> Arc<dyn Runtime> + Send + Sync;

impl std::fmt::Debug for Wrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wrap(..)")
    }
}

/// A chaos run: what to deploy, which faults, for how long.
#[derive(Debug, Clone)]
pub struct Chaos {
    wrap: Option<Wrap>,
    deployment: Deployment,
    seed: u64,
    duration: Duration,
    rate: f64,
    kinds: Vec<FaultKind>,
    job_every: Duration,
    kill_every: Duration,
    restart_every: Duration,
    job_runtime: Duration,
    quiet: Duration,
    shutdown: Duration,
    max_delay: Duration,
}

impl Chaos {
    /// A run of `deployment` with the defaults: seed 0, 10 minutes of
    /// virtual time, a fault on 5% of runtime calls of every kind, an
    /// on-demand job triggered every second, a service replica killed every
    /// 2 s, jobs that run 2 s, a quiet
    /// period long enough for every back-off to end.
    pub fn new(deployment: Deployment) -> Self {
        Self {
            wrap: None,
            deployment,
            seed: 0,
            duration: Duration::from_secs(600),
            rate: 0.05,
            kinds: ALL_KINDS.to_vec(),
            job_every: Duration::from_secs(1),
            kill_every: Duration::from_secs(2),
            restart_every: Duration::ZERO,
            job_runtime: Duration::from_secs(2),
            quiet: Duration::ZERO,
            shutdown: Duration::from_secs(30),
            max_delay: Duration::from_secs(5),
        }
    }

    /// The seed of the fault plan and of the job triggers.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// How long faults are injected (virtual time).
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// The probability (0..=1) that a runtime call gets a fault.
    pub fn rate(mut self, rate: f64) -> Self {
        self.rate = rate;
        self
    }

    /// Only these kinds of fault.
    pub fn kinds(mut self, kinds: impl IntoIterator<Item = FaultKind>) -> Self {
        self.kinds = kinds.into_iter().collect();
        self
    }

    /// Triggers one of the deployment's jobs (chosen from the seed) this
    /// often; `Duration::ZERO`: only cron runs.
    pub fn job_every(mut self, every: Duration) -> Self {
        self.job_every = every;
        self
    }

    /// Makes one service replica (chosen from the seed) exit this often,
    /// with code 0, code 1 or SIGKILL; `Duration::ZERO`: never.
    pub fn kill_every(mut self, every: Duration) -> Self {
        self.kill_every = every;
        self
    }

    /// Restarts the agent this often (`Duration::ZERO`: never, the
    /// default). The node leaves as `arbor agent` does on SIGUSR2 (running
    /// executions and service replicas stay, as their keepers would keep
    /// them), is killed, and a new node on the same state directory (a
    /// temporary one the run makes) adopts what it left; the run's
    /// invariants then hold across the restarts (see
    /// [`invariants::restart_counts_never_go_back`]).
    pub fn agent_restart_every(mut self, every: Duration) -> Self {
        self.restart_every = every;
        self
    }

    /// How long a job's main container runs on the mock before it exits 0.
    pub fn job_runtime(mut self, runtime: Duration) -> Self {
        self.job_runtime = runtime;
        self
    }

    /// The fault-free period after the faults, before the tree is checked
    /// (default: the longest back-off of the deployment, plus a minute).
    pub fn quiet(mut self, quiet: Duration) -> Self {
        self.quiet = quiet;
        self
    }

    /// The node's shutdown deadline (default 30 s).
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.shutdown = deadline;
        self
    }

    /// Exit and notification delays are drawn below this (default 5 s).
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.max_delay = max;
        self
    }

    /// Runs the node on `wrap(fault runtime)` instead of the fault runtime:
    /// for a layer of your own (a runtime adapter under test), or to prove
    /// that the checks catch a broken one.
    pub fn wrap_runtime(
        mut self,
        wrap: impl Fn(Arc<dyn Runtime>) -> Arc<dyn Runtime> + Send + Sync + 'static,
    ) -> Self {
        self.wrap = Some(Wrap(Arc::new(wrap)));
        self
    }

    /// Runs the deployment under faults on the mock runtime, shuts it down,
    /// and checks every invariant.
    pub async fn run(&self) -> Result<ChaosReport, ChaosError> {
        let observation = self.observe().await?;
        Ok(ChaosReport::new(self.seed, self.rate, observation))
    }

    /// Runs the deployment and returns what was observed, unchecked (for
    /// tests that check only some invariants, or their own).
    pub async fn observe(&self) -> Result<Observation, ChaosError> {
        let begin = Instant::now();
        let journal = Journal::new();
        let mock = MockRuntime::new();
        mock.journal(journal.clone());
        for (name, job) in &self.deployment.jobs {
            let run = MockRun::ExitAfter(self.job_runtime, ExitStatus::Code(0));
            mock.default_run(name, run);
            for n in 1..=job.init.len() {
                mock.default_run(&format!("{name}-init-{n}"), MockRun::exit_code(0));
            }
        }
        let faults = FaultRuntime::new(mock.clone());
        let overlay = Overlay::start(RecordingOverlay::new(journal.clone()))
            .await
            .map_err(|e| ChaosError::Start(e.to_string()))?;
        // Agent restarts need what a real agent keeps on disk (execution
        // records, supervision state) and keepers (the generations).
        let restarts = !self.restart_every.is_zero();
        let state_dir = if restarts {
            Some(StateDir::new(self.seed).map_err(|e| ChaosError::Start(e.to_string()))?)
        } else {
            None
        };
        let kept = agent_restart::Kept::default();
        let setup = NodeSetup {
            faults: faults.clone(),
            overlay: overlay.clone(),
            journal: journal.clone(),
            // A fixed wall clock, so cron runs fall alike in every run.
            clock: TokioClock::starting_at(
                chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default(),
            ),
            state_dir: state_dir.as_ref().map(|d| d.0.clone()),
            kept: restarts.then(|| kept.clone()),
        };
        let (mut node, mut generation) = self.start_node(&setup).await?;

        // Every event, with its virtual time, from before the deploy (one
        // collector per node).
        let mut collectors = vec![collect(&node, begin)];

        let started = node.deploy(&self.deployment).await;
        if let Err(e) = started {
            node.shutdown(self.shutdown).await;
            return Err(ChaosError::Deploy(e.to_string()));
        }
        faults.plan(
            FaultPlan::random(self.seed, self.rate, self.kinds.iter().copied())
                .max_latency(Duration::from_millis(500))
                .max_delay(self.max_delay),
        );

        // The fault period: trigger on-demand jobs, kill service replicas
        // and restart the agent at a steady pace, each choice drawn from
        // the seed.
        let on_demand: Vec<&String> = self
            .deployment
            .jobs
            .iter()
            .filter(|(_, j)| j.schedule.is_none())
            .map(|(n, _)| n)
            .collect();
        let replicas: Vec<String> = self
            .deployment
            .services
            .iter()
            .flat_map(|(name, s)| (0..s.replicas).map(move |i| format!("{name}-{i}")))
            .collect();
        let mut rng = self.seed ^ 0x9e37_79b9_7f4a_7c15;
        let (mut triggers, mut kills) = (0u64, 0u64);
        let mut agent_restarts = Vec::new();
        let start = Instant::now();
        let end = start + self.duration;
        let every = |d: Duration, active: bool| (active && !d.is_zero()).then_some(d);
        let job_every = every(self.job_every, !on_demand.is_empty());
        let kill_every = every(self.kill_every, !replicas.is_empty());
        let restart_every = every(self.restart_every, true);
        let (mut next_job, mut next_kill, mut next_restart) =
            (start, start + self.kill_every, start + self.restart_every);
        loop {
            let next = [
                job_every.map(|_| next_job),
                kill_every.map(|_| next_kill),
                restart_every.map(|_| next_restart),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(end);
            if next >= end {
                break;
            }
            tokio::time::sleep_until(next).await;
            if let Some(d) = job_every
                && next == next_job
            {
                let job = on_demand[(splitmix(&mut rng) % on_demand.len() as u64) as usize];
                let reason = format!("chaos trigger {triggers}");
                // Refusals (forbid, max_concurrent) are part of the run.
                let _ = node
                    .executor()
                    .trigger(job, JobTrigger::Internal { reason })
                    .await;
                triggers += 1;
                next_job += d;
            }
            if let Some(d) = kill_every
                && next == next_kill
            {
                let name = &replicas[(splitmix(&mut rng) % replicas.len() as u64) as usize];
                let status = match splitmix(&mut rng) % 3 {
                    0 => ExitStatus::Code(0),
                    1 => ExitStatus::Code(1),
                    _ => ExitStatus::Signal(9),
                };
                if mock.exit(name, status).await.is_some() {
                    kills += 1;
                }
                next_kill += d;
            }
            if let Some(d) = restart_every
                && next == next_restart
            {
                agent_restarts.push(begin.elapsed());
                // The old node leaves as on SIGUSR2, then dies: its
                // generation is cut first, so its killed actors touch no
                // container.
                node.detach(self.shutdown).await;
                if let Some(g) = &generation {
                    g.sever();
                }
                node.root().actor().kill();
                node.root().wait().await;
                drop(node);
                let (next_node, next_generation) = self.start_node(&setup).await?;
                node = next_node;
                generation = next_generation;
                collectors.push(collect(&node, begin));
                if let Err(e) = node.deploy(&self.deployment).await {
                    node.shutdown(self.shutdown).await;
                    return Err(ChaosError::Deploy(e.to_string()));
                }
                if let Some(g) = &generation {
                    kept.release_unadopted(g).await;
                }
                next_restart += d;
            }
        }
        tokio::time::sleep_until(end).await;

        // The quiet period: no new faults; what is scheduled plays out.
        faults.clear();
        tokio::time::sleep(self.quiet_period()).await;
        let tree = node.tree().await.ok();
        let tree_at = begin.elapsed();
        // Executions still running get one more quiet period; one whose
        // exit notification was lost may never end by itself (the shutdown
        // cancels it).
        let _ = tokio::time::timeout(self.quiet_period(), node.executor().wait_all()).await;

        node.shutdown(self.shutdown).await;
        let executions = node.executor().list_all().await.unwrap_or_default();
        let left = mock.containers().await;
        let segments = overlay.list().await.unwrap_or_default();
        overlay.shutdown().await;
        // Let the bus hand over what is still queued, then close it.
        tokio::task::yield_now().await;
        let bus = node.event_bus().clone();
        drop(node);
        drop(bus);
        drop(generation);
        let mut events = Vec::new();
        for collector in collectors {
            if let Ok(Ok(mut e)) = tokio::time::timeout(Duration::from_secs(5), collector).await {
                events.append(&mut e);
            }
        }
        // Each node's events come after the last one's (it was dead).
        events.sort_by_key(|(at, _)| *at);
        let injected = faults.injected().await;
        drop(state_dir);

        let mut flags = BTreeMap::new();
        flags.insert("chaos".to_owned(), self.deployment.supervisor.clone());
        for (name, service) in &self.deployment.services {
            flags.insert(name.clone(), service.flags());
        }
        Ok(Observation {
            elapsed: begin.elapsed(),
            events,
            journal: journal.take().await,
            executions,
            tree_after_quiet: tree,
            tree_at,
            flags,
            root: "chaos".into(),
            containers_left: left
                .into_iter()
                .map(|c| format!("{} ({}, {:?})", c.id, c.name, c.state))
                .collect(),
            segments_left: segments
                .into_iter()
                .map(|s| {
                    format!(
                        "{} ({} holders, {} attached)",
                        s.name,
                        s.holders,
                        s.attachments.len()
                    )
                })
                .collect(),
            processes_left: Vec::new(),
            injected,
            triggers,
            kills,
            agent_restarts,
            adopted: kept.adopted(),
            released: kept.released(),
        })
    }

    /// Starts a node on the fault runtime (through a new generation when
    /// the agent is restarted, see [`agent_restart`]).
    async fn start_node(
        &self,
        setup: &NodeSetup,
    ) -> Result<(Node, Option<Arc<agent_restart::Generation>>), ChaosError> {
        let faults: Arc<dyn Runtime> = Arc::new(setup.faults.clone());
        let generation = setup
            .kept
            .as_ref()
            .map(|k| Arc::new(k.generation(faults.clone())));
        let mut runtime: Arc<dyn Runtime> = match &generation {
            Some(g) => g.clone(),
            None => faults,
        };
        if let Some(Wrap(wrap)) = &self.wrap {
            runtime = wrap(runtime);
        }
        let mut config = NodeConfig::new(runtime)
            .overlay(setup.overlay.clone())
            .tokens(RecordingTokens::new(setup.journal.clone()))
            .clock(setup.clock)
            .flags(self.deployment.supervisor.clone())
            .name("chaos");
        if let Some(dir) = &setup.state_dir {
            config = config.state_dir(dir);
        }
        let node = Node::start(config)
            .await
            .map_err(|e| ChaosError::Start(e.to_string()))?;
        Ok((node, generation))
    }

    /// The quiet period: as configured, else the longest back-off plus a
    /// minute (so every child waiting in CrashLoopBackOff gets its retry).
    pub fn quiet_period(&self) -> Duration {
        if !self.quiet.is_zero() {
            return self.quiet;
        }
        let longest = self
            .deployment
            .services
            .values()
            .map(|s| {
                s.backoff
                    .max
                    .mul_f64(1.0 + s.backoff.jitter.clamp(0.0, 1.0))
            })
            .max()
            .unwrap_or_default();
        longest + Duration::from_secs(60)
    }
}

/// Every fault kind the random plan can draw.
pub const ALL_KINDS: [FaultKind; 7] = [
    FaultKind::Fail,
    FaultKind::Slow,
    FaultKind::Exit,
    FaultKind::CrashLoop,
    FaultKind::HangOnStop,
    FaultKind::LoseExit,
    FaultKind::DelayExit,
];

/// Parses a fault kind as the CLI writes it (`fail`, `slow`, `exit`,
/// `crash_loop`, `hang_on_stop`, `lose_exit`, `delay_exit`).
pub fn parse_kind(s: &str) -> Option<FaultKind> {
    ALL_KINDS.into_iter().find(|k| kind_name(*k) == s)
}

/// The name of a fault kind in reports and on the CLI.
pub fn kind_name(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::Fail => "fail",
        FaultKind::Slow => "slow",
        FaultKind::Exit => "exit",
        FaultKind::CrashLoop => "crash_loop",
        FaultKind::HangOnStop => "hang_on_stop",
        FaultKind::LoseExit => "lose_exit",
        FaultKind::DelayExit => "delay_exit",
    }
}

/// What every node of a run is started with.
struct NodeSetup {
    faults: FaultRuntime<MockRuntime>,
    overlay: Overlay,
    journal: Journal,
    clock: TokioClock,
    state_dir: Option<std::path::PathBuf>,
    kept: Option<agent_restart::Kept>,
}

/// A temporary state directory, removed when dropped.
struct StateDir(std::path::PathBuf);

impl StateDir {
    fn new(seed: u64) -> std::io::Result<Self> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "arbor-chaos-{}-{seed}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Collects `node`'s events with their virtual time since `begin`.
fn collect(node: &Node, begin: Instant) -> tokio::task::JoinHandle<Vec<(Duration, Event)>> {
    let mut stream = node.events();
    tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = stream.recv().await {
            events.push((begin.elapsed(), e));
        }
        events
    })
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A short description of an event for violation reports.
pub(crate) fn describe(at: Duration, e: &Event) -> String {
    let json = serde_json::to_string(e).unwrap_or_else(|_| e.kind().to_owned());
    format!("{:>10.3}s {json}", at.as_secs_f64())
}
