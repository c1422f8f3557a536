//! A runtime that fails on purpose: [`FaultRuntime`] wraps any [`Runtime`]
//! (the mock, host processes, a future OCI runtime) and injects faults into
//! the calls that pass through it.
//!
//! # Why
//!
//! Supervision policies (restart types, intensity limits, crash-loop
//! back-off, escalation, grace periods) only matter when things go wrong, and
//! things rarely go wrong on cue. This wrapper makes them go wrong on cue, or
//! at random from a seed, so a test can assert the supervisor's documented
//! response to each failure and replay any run exactly.
//!
//! # How
//!
//! Faults are rules: a [`Target`] (a container id, a service, a job, or all)
//! plus what to do. They come from the script API (
//! [`FaultRuntime::fail_next`], [`FaultRuntime::crash_loop`],
//! [`FaultRuntime::hang_on_stop`], [`FaultRuntime::slow`],
//! [`FaultRuntime::exit_after`], [`FaultRuntime::lose_exit`],
//! [`FaultRuntime::delay_exit`], ...) or from a seeded [`FaultPlan`].
//!
//! - *Fail*: the call returns `Cause::Injected` without reaching the inner
//!   runtime (the next N calls, or each call with probability p).
//! - *Slow*: the call first sleeps on `tokio::time`, so a paused-clock test
//!   sees the exact latency and stays instant.
//! - *Exit* / *crash loop*: after a successful start, a timer makes the
//!   wrapper's `wait` resolve with the chosen status after the delay; the
//!   inner container is killed (`signal(SIGKILL)`) through the inner runtime
//!   at that moment, so nothing keeps running behind the fake exit.
//! - *Hang on stop*: the container ignores the graceful signal: the wrapper's
//!   `stop` waits the whole grace (unless the container exits by itself),
//!   then kills through the inner runtime and reports `killed: true`.
//! - *Lose exit* / *delay exit*: `wait` sees the exit but does not report it
//!   until the container is stopped or removed through the wrapper (lost), or
//!   until the delay passed (delayed).
//!
//! The rules, the per-container metadata (name and labels, learnt at
//! `create`) and the record of injected faults live in one task
//! (`crate::owned::Owned`), never in a lock-guarded map: every call asks that task for a
//! decision, one at a time, in call order. The random plan draws from a
//! splitmix64 generator inside that task, so the same seed and the same
//! sequence of calls give the same faults in the same order.
//!
//! Every injected fault is recorded as an [`InjectedFault`] (sequence number,
//! virtual time since the wrapper was made, kind, step, container) and can be
//! read back with [`FaultRuntime::injected`] and [`FaultRuntime::counts`].
//! Exits are recorded when armed (at the start that they end).

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::{sync::watch, task::AbortHandle, time::Instant};

use super::{
    Cause, ContainerId, ContainerSpec, ContainerState, ExitStatus, LogQuery, Logs, Op, Runtime,
    RuntimeError, Signal, StopOutcome,
};
use crate::owned::Owned;

/// Which containers a fault applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every container.
    All,
    /// The container with this id.
    Container(ContainerId),
    /// Containers of this service: `service` label, or a name `<service>-...`.
    Service(String),
    /// Containers of this job (`job` label).
    Job(String),
}

impl Target {
    /// The container with this id.
    pub fn container(id: impl Into<String>) -> Self {
        Self::Container(ContainerId(id.into()))
    }

    /// The containers of a service.
    pub fn service(name: impl Into<String>) -> Self {
        Self::Service(name.into())
    }

    /// The containers of a job.
    pub fn job(name: impl Into<String>) -> Self {
        Self::Job(name.into())
    }

    fn matches(&self, id: Option<&ContainerId>, meta: Option<&Meta>) -> bool {
        match self {
            Self::All => true,
            Self::Container(c) => id == Some(c),
            Self::Service(s) => meta.is_some_and(|m| {
                m.labels.get("service") == Some(s)
                    || m.name
                        .strip_prefix(s.as_str())
                        .is_some_and(|rest| rest.starts_with('-'))
            }),
            Self::Job(j) => meta.is_some_and(|m| m.labels.get("job") == Some(j)),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            Self::Container(id) => write!(f, "container {id}"),
            Self::Service(s) => write!(f, "service {s}"),
            Self::Job(j) => write!(f, "job {j}"),
        }
    }
}

/// The kinds of fault, as recorded and as drawn by a random plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// A step failed with `Cause::Injected`.
    Fail,
    /// A step was delayed.
    Slow,
    /// The container exited with a chosen status after a delay.
    Exit,
    /// The container exited right after a start (a crash-loop rule).
    CrashLoop,
    /// The container ignored the graceful stop and was killed after the grace.
    HangOnStop,
    /// The exit notification was withheld until stop or remove.
    LoseExit,
    /// The exit notification was delayed.
    DelayExit,
}

/// One fault the wrapper injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedFault {
    /// Its position among all injected faults, from 0.
    pub seq: u64,
    /// Virtual (`tokio::time`) time since the wrapper was made.
    pub at: Duration,
    /// What was injected.
    pub kind: FaultKind,
    /// The step it was injected into.
    pub op: Op,
    /// The container id, or its name for `pull` and `create`.
    pub container: String,
    /// Details: the error message, the latency, the exit status.
    pub detail: String,
}

#[derive(Debug, Clone)]
enum Action {
    Fail {
        op: Op,
        message: String,
        probability: f64,
    },
    Slow {
        op: Op,
        latency: Duration,
    },
    Exit {
        delay: Duration,
        status: ExitStatus,
        crash_loop: bool,
    },
    HangOnStop,
    LoseExit,
    DelayExit(Duration),
}

#[derive(Debug, Clone)]
struct Rule {
    target: Target,
    action: Action,
    /// How many more times it fires; `None`: forever.
    remaining: Option<usize>,
}

/// A seeded random fault plan: each call through the wrapper injects, with
/// probability `rate`, one fault drawn from `kinds` among those that apply to
/// the step (fail and slow: any step; exit and crash loop: start; hang on
/// stop: stop; lose and delay exit: wait).
#[derive(Debug, Clone)]
pub struct FaultPlan {
    seed: u64,
    rate: f64,
    kinds: Vec<FaultKind>,
    target: Target,
    max_latency: Duration,
    max_delay: Duration,
}

impl FaultPlan {
    /// Faults at `rate` (0..=1) per call, of `kinds`, on all containers.
    pub fn random(seed: u64, rate: f64, kinds: impl IntoIterator<Item = FaultKind>) -> Self {
        Self {
            seed,
            rate,
            kinds: kinds.into_iter().collect(),
            target: Target::All,
            max_latency: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
        }
    }

    /// Only on `target`.
    pub fn target(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    /// Added latencies are drawn below this (default 1 s).
    pub fn max_latency(mut self, max: Duration) -> Self {
        self.max_latency = max;
        self
    }

    /// Exit and exit-notification delays are drawn below this (default 10 s).
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.max_delay = max;
        self
    }
}

/// splitmix64: tiny, fast, deterministic per seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, max: Duration) -> Duration {
        max.mul_f64(self.unit())
    }
}

struct Meta {
    name: String,
    labels: BTreeMap<String, String>,
    /// The status the wrapper's `wait` reports instead of the inner one.
    exit: Option<ExitStatus>,
    /// Set when the container was stopped or removed through the wrapper.
    released: watch::Sender<bool>,
    timer: Option<AbortHandle>,
}

struct State {
    epoch: Instant,
    rules: Vec<Rule>,
    plan: Option<FaultPlan>,
    rng: Rng,
    meta: BTreeMap<ContainerId, Meta>,
    injected: Vec<InjectedFault>,
}

/// What one call has to do, decided by the state task.
#[derive(Default)]
struct Decision {
    latency: Duration,
    fail: Option<String>,
    exit: Option<(Duration, ExitStatus)>,
    hang: bool,
    lose: bool,
    delay: Option<Duration>,
}

impl State {
    fn record(&mut self, kind: FaultKind, op: Op, container: &str, detail: String) {
        let seq = self.injected.len() as u64;
        self.injected.push(InjectedFault {
            seq,
            at: self.epoch.elapsed(),
            kind,
            op,
            container: container.to_owned(),
            detail,
        });
    }

    /// Consumes the rules and draws the plan for one call of `op`.
    fn decide(
        &mut self,
        op: Op,
        id: Option<&ContainerId>,
        spec: Option<(&str, &BTreeMap<String, String>)>,
    ) -> Decision {
        let pending;
        let meta = match (id.and_then(|id| self.meta.get(id)), spec) {
            (Some(m), _) => Some(m),
            (None, Some((name, labels))) => {
                pending = Meta {
                    name: name.to_owned(),
                    labels: labels.clone(),
                    exit: None,
                    released: watch::Sender::new(false),
                    timer: None,
                };
                Some(&pending)
            }
            (None, None) => None,
        };
        let who = id
            .map(|i| i.0.clone())
            .or_else(|| meta.map(|m| m.name.clone()))
            .unwrap_or_default();
        let mut d = Decision::default();
        let mut fired = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.remaining == Some(0) || !rule.target.matches(id, meta) {
                continue;
            }
            let applies = match &rule.action {
                Action::Fail {
                    op: o, probability, ..
                } => *o == op && (*probability >= 1.0 || self.rng.unit() < *probability),
                Action::Slow { op: o, .. } => *o == op,
                Action::Exit { .. } => op == Op::Start,
                Action::HangOnStop => op == Op::Stop || op == Op::Signal,
                Action::LoseExit | Action::DelayExit(_) => op == Op::Wait,
            };
            if applies {
                fired.push(i);
            }
        }
        let mut records = Vec::new();
        for i in fired {
            let rule = &mut self.rules[i];
            if let Some(n) = &mut rule.remaining {
                *n -= 1;
            }
            match &rule.action {
                Action::Fail { message, .. } => {
                    if d.fail.is_none() {
                        d.fail = Some(message.clone());
                        records.push((FaultKind::Fail, message.clone()));
                    }
                }
                Action::Slow { latency, .. } => {
                    d.latency += *latency;
                    records.push((FaultKind::Slow, format!("{latency:?}")));
                }
                Action::Exit {
                    delay,
                    status,
                    crash_loop,
                } => {
                    if d.exit.is_none() {
                        d.exit = Some((*delay, *status));
                        let kind = if *crash_loop {
                            FaultKind::CrashLoop
                        } else {
                            FaultKind::Exit
                        };
                        records.push((kind, format!("{status} after {delay:?}")));
                    }
                }
                Action::HangOnStop => {
                    d.hang = true;
                    if op == Op::Stop {
                        records.push((FaultKind::HangOnStop, "ignored the graceful signal".into()));
                    }
                }
                Action::LoseExit => {
                    d.lose = true;
                    records.push((FaultKind::LoseExit, "exit withheld until stop".into()));
                }
                Action::DelayExit(delay) => {
                    d.delay = Some(*delay);
                    records.push((FaultKind::DelayExit, format!("{delay:?}")));
                }
            }
        }
        self.rules.retain(|r| r.remaining != Some(0));
        if let Some(plan) = &self.plan
            && plan.target.matches(id, meta)
            && self.rng.unit() < plan.rate
        {
            let kinds: Vec<FaultKind> = plan
                .kinds
                .iter()
                .copied()
                .filter(|k| match k {
                    FaultKind::Fail | FaultKind::Slow => true,
                    FaultKind::Exit | FaultKind::CrashLoop => op == Op::Start,
                    FaultKind::HangOnStop => op == Op::Stop,
                    FaultKind::LoseExit | FaultKind::DelayExit => op == Op::Wait,
                })
                .collect();
            if !kinds.is_empty() {
                let kind = kinds[(self.rng.next_u64() % kinds.len() as u64) as usize];
                let (max_latency, max_delay) = (plan.max_latency, plan.max_delay);
                match kind {
                    FaultKind::Fail if d.fail.is_none() => {
                        let msg = "random fault".to_owned();
                        d.fail = Some(msg.clone());
                        records.push((kind, msg));
                    }
                    FaultKind::Slow => {
                        let latency = self.rng.below(max_latency);
                        d.latency += latency;
                        records.push((kind, format!("{latency:?}")));
                    }
                    FaultKind::Exit | FaultKind::CrashLoop if d.exit.is_none() => {
                        let delay = if kind == FaultKind::Exit {
                            self.rng.below(max_delay)
                        } else {
                            Duration::ZERO
                        };
                        let status = ExitStatus::Code(1 + (self.rng.next_u64() % 125) as i32);
                        d.exit = Some((delay, status));
                        records.push((kind, format!("{status} after {delay:?}")));
                    }
                    FaultKind::HangOnStop => {
                        d.hang = true;
                        records.push((kind, "ignored the graceful signal".into()));
                    }
                    FaultKind::LoseExit => {
                        d.lose = true;
                        records.push((kind, "exit withheld until stop".into()));
                    }
                    FaultKind::DelayExit => {
                        let delay = self.rng.below(max_delay);
                        d.delay = Some(delay);
                        records.push((kind, format!("{delay:?}")));
                    }
                    _ => {}
                }
            }
        }
        if d.fail.is_some() {
            // A failed step does nothing else: no run to end, no exit to hide.
            records.retain(|(k, _)| matches!(k, FaultKind::Fail | FaultKind::Slow));
            d.exit = None;
            d.hang = false;
            d.lose = false;
            d.delay = None;
        }
        for (kind, detail) in records {
            self.record(kind, op, &who, detail);
        }
        d
    }
}

/// A [`Runtime`] that injects faults into the calls it passes to `R`.
/// Cheap to clone; clones share the rules and the record.
pub struct FaultRuntime<R: Runtime> {
    inner: Arc<R>,
    state: Owned<State>,
}

impl<R: Runtime> Clone for FaultRuntime<R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            state: self.state.clone(),
        }
    }
}

impl<R: Runtime> FaultRuntime<R> {
    /// Wraps `inner` with no faults. Must be called inside a tokio runtime.
    pub fn new(inner: R) -> Self {
        Self::from_arc(Arc::new(inner))
    }

    /// Wraps a shared runtime.
    pub fn from_arc(inner: Arc<R>) -> Self {
        Self {
            inner,
            state: Owned::spawn(State {
                epoch: Instant::now(),
                rules: Vec::new(),
                plan: None,
                rng: Rng(0),
                meta: BTreeMap::new(),
                injected: Vec::new(),
            }),
        }
    }

    /// The wrapped runtime.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    fn rule(&self, target: Target, action: Action, remaining: Option<usize>) {
        self.state.cast(move |s| {
            s.rules.push(Rule {
                target,
                action,
                remaining,
            })
        });
    }

    /// Seeds the generator used by probabilistic rules (default seed 0).
    pub fn seed(&self, seed: u64) {
        self.state.cast(move |s| s.rng = Rng(seed));
    }

    /// Adds a seeded random plan (replacing any earlier one); also reseeds.
    pub fn plan(&self, plan: FaultPlan) {
        self.state.cast(move |s| {
            s.rng = Rng(plan.seed);
            s.plan = Some(plan);
        });
    }

    /// Makes the next `times` calls of `op` on `target` fail with `message`.
    pub fn fail_next(&self, target: Target, op: Op, times: usize, message: &str) {
        let message = message.to_owned();
        self.rule(
            target,
            Action::Fail {
                op,
                message,
                probability: 1.0,
            },
            Some(times),
        );
    }

    /// Makes each call of `op` on `target` fail with probability `p`.
    pub fn fail_with_probability(&self, target: Target, op: Op, p: f64, message: &str) {
        let message = message.to_owned();
        self.rule(
            target,
            Action::Fail {
                op,
                message,
                probability: p,
            },
            None,
        );
    }

    /// Adds `latency` (on `tokio::time`) to every call of `op` on `target`.
    pub fn slow(&self, target: Target, op: Op, latency: Duration) {
        self.rule(target, Action::Slow { op, latency }, None);
    }

    /// The next start of `target` exits with `status` `delay` after it started.
    pub fn exit_after(&self, target: Target, delay: Duration, status: ExitStatus) {
        self.rule(
            target,
            Action::Exit {
                delay,
                status,
                crash_loop: false,
            },
            Some(1),
        );
    }

    /// Every start of `target` exits with code 1 right away.
    pub fn crash_loop(&self, target: Target) {
        self.rule(
            target,
            Action::Exit {
                delay: Duration::ZERO,
                status: ExitStatus::Code(1),
                crash_loop: true,
            },
            None,
        );
    }

    /// `target` ignores the graceful signal: stops take the whole grace, then kill.
    pub fn hang_on_stop(&self, target: Target) {
        self.rule(target, Action::HangOnStop, None);
    }

    /// The next wait on `target` does not report the exit until the
    /// container is stopped or removed.
    pub fn lose_exit(&self, target: Target) {
        self.rule(target, Action::LoseExit, Some(1));
    }

    /// The next wait on `target` reports the exit `delay` late.
    pub fn delay_exit(&self, target: Target, delay: Duration) {
        self.rule(target, Action::DelayExit(delay), Some(1));
    }

    /// Removes every scripted rule and the random plan.
    pub fn clear(&self) {
        self.state.cast(|s| {
            s.rules.clear();
            s.plan = None;
        });
    }

    /// Every injected fault so far, in order.
    pub async fn injected(&self) -> Vec<InjectedFault> {
        self.state
            .call(|s| s.injected.clone())
            .await
            .unwrap_or_default()
    }

    /// How many faults of each kind were injected.
    pub async fn counts(&self) -> BTreeMap<FaultKind, usize> {
        let mut counts = BTreeMap::new();
        for f in self.injected().await {
            *counts.entry(f.kind).or_default() += 1;
        }
        counts
    }

    async fn decide(&self, op: Op, id: &ContainerId) -> Result<Decision, RuntimeError> {
        let key = id.clone();
        let d = self
            .state
            .call(move |s| s.decide(op, Some(&key), None))
            .await
            .ok_or_else(|| RuntimeError::new(op, id, Cause::Closed))?;
        self.apply(op, id, d).await
    }

    async fn apply(
        &self,
        op: Op,
        target: impl fmt::Display,
        d: Decision,
    ) -> Result<Decision, RuntimeError> {
        if !d.latency.is_zero() {
            tokio::time::sleep(d.latency).await;
        }
        match d.fail {
            Some(msg) => Err(RuntimeError::new(op, target, Cause::Injected(msg))),
            None => Ok(d),
        }
    }

    fn release(&self, id: &ContainerId) {
        let key = id.clone();
        self.state.cast(move |s| {
            if let Some(m) = s.meta.get_mut(&key) {
                m.released.send_replace(true);
                if let Some(t) = m.timer.take() {
                    t.abort();
                }
            }
        });
    }
}

#[async_trait]
impl<R: Runtime> Runtime for FaultRuntime<R> {
    fn name(&self) -> &'static str {
        "fault"
    }

    async fn pull_image(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let (name, labels) = (spec.name.clone(), spec.labels.clone());
        let d = self
            .state
            .call(move |s| s.decide(Op::Pull, None, Some((&name, &labels))))
            .await
            .unwrap_or_default();
        self.apply(Op::Pull, &spec.name, d).await?;
        self.inner.pull_image(spec).await
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId, RuntimeError> {
        let (name, labels) = (spec.name.clone(), spec.labels.clone());
        let d = self
            .state
            .call(move |s| s.decide(Op::Create, None, Some((&name, &labels))))
            .await
            .unwrap_or_default();
        self.apply(Op::Create, &spec.name, d).await?;
        let id = self.inner.create(spec).await?;
        let (key, name, labels) = (id.clone(), spec.name.clone(), spec.labels.clone());
        self.state.cast(move |s| {
            s.meta.insert(
                key,
                Meta {
                    name,
                    labels,
                    exit: None,
                    released: watch::Sender::new(false),
                    timer: None,
                },
            );
        });
        Ok(id)
    }

    async fn start(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        let d = self.decide(Op::Start, id).await?;
        self.inner.start(id).await?;
        if let Some((delay, status)) = d.exit {
            let (inner, state, key) = (self.inner.clone(), self.state.clone(), id.clone());
            let timer = tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if !matches!(inner.state(&key).await, Ok(ContainerState::Running { .. })) {
                    return;
                }
                let k = key.clone();
                state
                    .call(move |s| {
                        if let Some(m) = s.meta.get_mut(&k) {
                            m.exit = Some(status);
                        }
                    })
                    .await;
                let _ = inner.signal(&key, Signal::SIGKILL).await;
            });
            let (key, handle) = (id.clone(), timer.abort_handle());
            self.state.cast(move |s| match s.meta.get_mut(&key) {
                Some(m) => m.timer = Some(handle),
                None => handle.abort(),
            });
        }
        Ok(())
    }

    async fn stop(&self, id: &ContainerId, grace: Duration) -> Result<StopOutcome, RuntimeError> {
        let d = self.decide(Op::Stop, id).await?;
        let outcome = if d.hang
            && matches!(
                self.inner.state(id).await,
                Ok(ContainerState::Running { .. })
            ) {
            let exited = async {
                if grace == Duration::MAX {
                    std::future::pending::<()>().await;
                } else {
                    tokio::time::sleep(grace).await;
                }
            };
            tokio::select! {
                status = self.inner.wait(id) => StopOutcome { status: status?, killed: false },
                () = exited => {
                    let _ = self.inner.signal(id, Signal::SIGKILL).await;
                    let inner = self.inner.stop(id, Duration::ZERO).await?;
                    StopOutcome { status: inner.status, killed: true }
                }
            }
        } else {
            self.inner.stop(id, grace).await?
        };
        self.release(id);
        Ok(outcome)
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.decide(Op::Remove, id).await?;
        self.inner.remove(id).await?;
        self.release(id);
        let key = id.clone();
        self.state.cast(move |s| {
            s.meta.remove(&key);
        });
        Ok(())
    }

    async fn wait(&self, id: &ContainerId) -> Result<ExitStatus, RuntimeError> {
        let d = self.decide(Op::Wait, id).await?;
        let key = id.clone();
        let released = self
            .state
            .call(move |s| s.meta.get(&key).map(|m| m.released.subscribe()))
            .await
            .flatten();
        let inner_status = self.inner.wait(id).await;
        let key = id.clone();
        let injected = self
            .state
            .call(move |s| s.meta.get(&key).and_then(|m| m.exit))
            .await
            .flatten();
        let status = match (injected, inner_status) {
            (Some(status), _) => status,
            (None, result) => result?,
        };
        if d.lose
            && let Some(mut rx) = released
        {
            // Withheld until the container is stopped or removed (or gone).
            let _ = rx.wait_for(|r| *r).await;
        }
        if let Some(delay) = d.delay {
            tokio::time::sleep(delay).await;
        }
        Ok(status)
    }

    async fn state(&self, id: &ContainerId) -> Result<ContainerState, RuntimeError> {
        self.decide(Op::State, id).await?;
        let state = self.inner.state(id).await?;
        let key = id.clone();
        let injected = self
            .state
            .call(move |s| s.meta.get(&key).and_then(|m| m.exit))
            .await
            .flatten();
        Ok(match (state, injected) {
            (ContainerState::Exited { .. }, Some(status)) => ContainerState::Exited { status },
            (state, _) => state,
        })
    }

    async fn pid(&self, id: &ContainerId) -> Result<Option<u32>, RuntimeError> {
        self.decide(Op::Pid, id).await?;
        self.inner.pid(id).await
    }

    async fn signal(&self, id: &ContainerId, signal: Signal) -> Result<(), RuntimeError> {
        let d = self.decide(Op::Signal, id).await?;
        if d.hang && signal == Signal::SIGTERM {
            // Ignored, as a process that traps SIGTERM would.
            return Ok(());
        }
        self.inner.signal(id, signal).await
    }

    async fn logs(&self, id: &ContainerId, query: LogQuery) -> Result<Logs, RuntimeError> {
        self.decide(Op::Logs, id).await?;
        self.inner.logs(id, query).await
    }

    async fn oom_killed(&self, id: &ContainerId) -> Result<bool, RuntimeError> {
        self.inner.oom_killed(id).await
    }

    async fn is_kept(&self, id: &ContainerId) -> bool {
        self.inner.is_kept(id).await
    }

    async fn exec(
        &self,
        id: &ContainerId,
        argv: &[String],
        timeout: Duration,
    ) -> Result<super::ExecOutput, RuntimeError> {
        self.inner.exec(id, argv, timeout).await
    }

    async fn address(&self, id: &ContainerId) -> Result<Option<std::net::IpAddr>, RuntimeError> {
        self.inner.address(id).await
    }

    fn abandon(&self, id: &ContainerId) {
        self.release(id);
        let key = id.clone();
        self.state.cast(move |s| {
            s.meta.remove(&key);
        });
        self.inner.abandon(id);
    }
}
