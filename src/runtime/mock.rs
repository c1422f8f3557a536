//! An in-memory runtime for tests and examples: it records every call in
//! order with its arguments, and lets a test script how each container's runs
//! end and which steps fail.
//!
//! Scripts are keyed by container name (`ContainerSpec::name`, e.g. `web-0`),
//! because ids are only known once a container is created. Each start of a
//! container named `web-0` takes the next [`MockRun`] queued for `web-0`, or
//! the name's default (run until stopped). Timed exits use `tokio::time`, so
//! under a paused clock they are exact and instantaneous.
//!
//! Pass it explicitly (as `Arc<dyn Runtime>`) where a runtime is expected;
//! nothing picks it by `cfg!(test)`.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::Duration,
};

use async_trait::async_trait;
use tokio::{sync::watch, task::AbortHandle};

use super::{
    Cause, ContainerId, ContainerSpec, ContainerState, ExitStatus, LogBuffer, LogQuery, LogStream,
    Logs, Op, Output, Runtime, RuntimeError, Signal, StopOutcome, check_spec,
};
use crate::{
    journal::{Entry, Journal, RuntimeOp},
    owned::Owned,
};

/// One call the runtime received, with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `pull_image` of the container named `name`.
    Pull { name: String },
    /// `create` of a container named `name`.
    Create { name: String },
    /// `start`.
    Start { id: ContainerId },
    /// `stop` with its grace period.
    Stop { id: ContainerId, grace: Duration },
    /// `remove`.
    Remove { id: ContainerId },
    /// `wait`.
    Wait { id: ContainerId },
    /// `state`.
    State { id: ContainerId },
    /// `pid`.
    Pid { id: ContainerId },
    /// `signal`.
    Signal { id: ContainerId, signal: Signal },
    /// `logs`.
    Logs { id: ContainerId },
    /// `abandon`.
    Abandon { id: ContainerId },
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pull { name } => write!(f, "runtime pull {name}"),
            Self::Create { name } => write!(f, "runtime create {name}"),
            Self::Start { id } => write!(f, "runtime start {id}"),
            Self::Stop { id, .. } => write!(f, "runtime stop {id}"),
            Self::Remove { id } => write!(f, "runtime remove {id}"),
            Self::Wait { id } => write!(f, "runtime wait {id}"),
            Self::State { id } => write!(f, "runtime state {id}"),
            Self::Pid { id } => write!(f, "runtime pid {id}"),
            Self::Signal { id, signal } => write!(f, "runtime signal {id} {signal}"),
            Self::Logs { id } => write!(f, "runtime logs {id}"),
            Self::Abandon { id } => write!(f, "runtime abandon {id}"),
        }
    }
}

impl Call {
    /// The call as a journal entry.
    pub fn entry(&self) -> Entry {
        let (op, subject) = match self {
            Self::Pull { name } => (RuntimeOp::Pull, name.clone()),
            Self::Create { name } => (RuntimeOp::Create, name.clone()),
            Self::Start { id } => (RuntimeOp::Start, id.0.clone()),
            Self::Stop { id, .. } => (RuntimeOp::Stop, id.0.clone()),
            Self::Remove { id } => (RuntimeOp::Remove, id.0.clone()),
            Self::Wait { id } => (RuntimeOp::Wait, id.0.clone()),
            Self::State { id } => (RuntimeOp::State, id.0.clone()),
            Self::Pid { id } => (RuntimeOp::Pid, id.0.clone()),
            Self::Signal { id, signal } => {
                return Entry::Runtime {
                    op: RuntimeOp::Signal,
                    subject: id.0.clone(),
                    arg: Some(signal.to_string()),
                };
            }
            Self::Logs { id } => (RuntimeOp::Logs, id.0.clone()),
            Self::Abandon { id } => (RuntimeOp::Abandon, id.0.clone()),
        };
        Entry::runtime(op, subject)
    }

    /// The lifecycle step (`None` for `abandon`).
    pub fn op(&self) -> Option<Op> {
        Some(match self {
            Self::Pull { .. } => Op::Pull,
            Self::Create { .. } => Op::Create,
            Self::Start { .. } => Op::Start,
            Self::Stop { .. } => Op::Stop,
            Self::Remove { .. } => Op::Remove,
            Self::Wait { .. } => Op::Wait,
            Self::State { .. } => Op::State,
            Self::Pid { .. } => Op::Pid,
            Self::Signal { .. } => Op::Signal,
            Self::Logs { .. } => Op::Logs,
            Self::Abandon { .. } => return None,
        })
    }

    /// The container id, or the name for `pull` and `create`.
    pub fn target(&self) -> &str {
        match self {
            Self::Pull { name } | Self::Create { name } => name,
            Self::Start { id }
            | Self::Stop { id, .. }
            | Self::Remove { id }
            | Self::Wait { id }
            | Self::State { id }
            | Self::Pid { id }
            | Self::Signal { id, .. }
            | Self::Logs { id }
            | Self::Abandon { id } => &id.0,
        }
    }
}

/// How one run of a container ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockRun {
    /// It runs until stopped or signalled.
    UntilStopped,
    /// It exits by itself with `status` this long after it started.
    ExitAfter(Duration, ExitStatus),
}

impl MockRun {
    /// Exits with `code` after `delay`.
    pub fn exit_code_after(delay: Duration, code: i32) -> Self {
        Self::ExitAfter(delay, ExitStatus::Code(code))
    }

    /// Exits with `code` as soon as it started.
    pub fn exit_code(code: i32) -> Self {
        Self::ExitAfter(Duration::ZERO, ExitStatus::Code(code))
    }
}

/// A container as the mock sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockContainer {
    /// Its id.
    pub id: ContainerId,
    /// Its spec's name.
    pub name: String,
    /// Its state.
    pub state: ContainerState,
}

#[derive(Default)]
struct Behavior {
    runs: VecDeque<MockRun>,
    default_run: Option<MockRun>,
    failures: HashMap<Op, VecDeque<String>>,
    ignore_sigterm: bool,
}

struct Container {
    name: String,
    state: watch::Sender<ContainerState>,
    timer: Option<AbortHandle>,
    logs: LogBuffer,
    output: Option<Output>,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    containers: BTreeMap<ContainerId, Container>,
    behaviors: HashMap<String, Behavior>,
    next: u64,
    journal: Option<Journal>,
}

impl State {
    fn record(&mut self, call: Call) {
        if let Some(j) = &self.journal {
            j.write(call.entry());
        }
        self.calls.push(call);
    }

    fn behavior(&mut self, name: &str) -> &mut Behavior {
        self.behaviors.entry(name.to_owned()).or_default()
    }

    /// Consumes one scripted failure of `op` for the container named `name`.
    fn injected(&mut self, name: &str, op: Op) -> Option<String> {
        let queue = self.behaviors.get_mut(name)?.failures.get_mut(&op)?;
        queue.pop_front()
    }

    fn name_of(&self, id: &ContainerId) -> Option<String> {
        self.containers.get(id).map(|c| c.name.clone())
    }

    /// Records `call`, then checks the container exists and no failure is scripted.
    fn begin(
        &mut self,
        call: Call,
        op: Op,
        id: &ContainerId,
    ) -> Result<&mut Container, RuntimeError> {
        self.record(call);
        let Some(name) = self.name_of(id) else {
            return Err(RuntimeError::new(op, id, Cause::NotFound));
        };
        if let Some(msg) = self.injected(&name, op) {
            return Err(RuntimeError::new(op, id, Cause::Injected(msg)));
        }
        Ok(self.containers.get_mut(id).expect("checked above"))
    }

    fn exit(&mut self, id: &ContainerId, status: ExitStatus) {
        if let Some(c) = self.containers.get_mut(id)
            && matches!(*c.state.borrow(), ContainerState::Running { .. })
        {
            if let Some(t) = c.timer.take() {
                t.abort();
            }
            c.state.send_replace(ContainerState::Exited { status });
            if let Some(out) = &c.output {
                out.0.close(LogStream::Stdout);
                out.0.close(LogStream::Stderr);
            }
        }
    }
}

/// What `stop` has to do after the first look at the container.
enum StopPlan {
    Done(ExitStatus),
    Wait(watch::Receiver<ContainerState>),
}

/// The recording, scriptable fake runtime. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct MockRuntime {
    state: Owned<State>,
}

impl Default for MockRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl MockRuntime {
    /// An empty mock. Must be called inside a tokio runtime.
    pub fn new() -> Self {
        Self {
            state: Owned::spawn(State::default()),
        }
    }

    /// Queues how the next starts of `name` end, in order.
    pub fn runs(&self, name: &str, runs: impl IntoIterator<Item = MockRun>) {
        let (name, runs): (String, Vec<_>) = (name.to_owned(), runs.into_iter().collect());
        self.state
            .cast(move |s| s.behavior(&name).runs.extend(runs));
    }

    /// How starts of `name` end once the queue is empty (default: run until stopped).
    pub fn default_run(&self, name: &str, run: MockRun) {
        let name = name.to_owned();
        self.state
            .cast(move |s| s.behavior(&name).default_run = Some(run));
    }

    /// Makes the next `times` calls of `op` on the container named `name` fail.
    pub fn fail_next(&self, name: &str, op: Op, times: usize, message: &str) {
        let (name, message) = (name.to_owned(), message.to_owned());
        self.state.cast(move |s| {
            s.behavior(&name)
                .failures
                .entry(op)
                .or_default()
                .extend(std::iter::repeat_n(message, times));
        });
    }

    /// Makes containers named `name` ignore SIGTERM: only the kill after the
    /// grace period stops them.
    pub fn ignore_sigterm(&self, name: &str) {
        let name = name.to_owned();
        self.state
            .cast(move |s| s.behavior(&name).ignore_sigterm = true);
    }

    /// Makes the running container named `name` exit now with `status`.
    /// Returns its id, or `None` if no container of that name runs.
    pub async fn exit(&self, name: &str, status: ExitStatus) -> Option<ContainerId> {
        let name = name.to_owned();
        self.state
            .call(move |s| {
                let id = s
                    .containers
                    .iter()
                    .find(|(_, c)| {
                        c.name == name
                            && matches!(*c.state.borrow(), ContainerState::Running { .. })
                    })
                    .map(|(id, _)| id.clone())?;
                s.exit(&id, status);
                Some(id)
            })
            .await
            .flatten()
    }

    /// Appends a line to the output of the running container named `name`.
    pub fn emit_log(&self, name: &str, stream: LogStream, line: &str) {
        let (name, line) = (name.to_owned(), line.to_owned());
        self.state.cast(move |s| {
            if let Some(c) = s.containers.values().rev().find(|c| c.name == name) {
                match &c.output {
                    Some(out) => out.0.write(stream, format!("{line}\n").as_bytes()),
                    None => c.logs.push(stream, line),
                }
            }
        });
    }

    /// Also writes every call to `journal` (as `runtime remove ID`, ...), so
    /// a test can order them against other fakes writing to it.
    pub fn journal(&self, journal: Journal) {
        self.state.cast(move |s| s.journal = Some(journal));
    }

    /// Every call so far, in order.
    pub async fn calls(&self) -> Vec<Call> {
        self.state
            .call(|s| s.calls.clone())
            .await
            .unwrap_or_default()
    }

    /// Every container the mock holds (created, running or exited, not removed).
    pub async fn containers(&self) -> Vec<MockContainer> {
        self.state
            .call(|s| {
                s.containers
                    .iter()
                    .map(|(id, c)| MockContainer {
                        id: id.clone(),
                        name: c.name.clone(),
                        state: *c.state.borrow(),
                    })
                    .collect()
            })
            .await
            .unwrap_or_default()
    }

    /// The names of the running containers, in id order.
    pub async fn running(&self) -> Vec<String> {
        self.containers()
            .await
            .into_iter()
            .filter(|c| matches!(c.state, ContainerState::Running { .. }))
            .map(|c| c.name)
            .collect()
    }

    async fn ask<R: Send + 'static>(
        &self,
        op: Op,
        id: &ContainerId,
        f: impl FnOnce(&mut State) -> Result<R, RuntimeError> + Send + 'static,
    ) -> Result<R, RuntimeError> {
        self.state
            .call(f)
            .await
            .unwrap_or_else(|| Err(RuntimeError::new(op, id, Cause::Closed)))
    }
}

fn invalid(
    op: Op,
    id: &ContainerId,
    state: ContainerState,
    expected: &'static str,
) -> RuntimeError {
    RuntimeError::new(
        op,
        id,
        Cause::InvalidState {
            state: state.to_string(),
            expected,
        },
    )
}

#[async_trait]
impl Runtime for MockRuntime {
    fn name(&self) -> &'static str {
        "mock"
    }

    async fn pull_image(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let name = spec.name.clone();
        let id = ContainerId(name.clone());
        self.ask(Op::Pull, &id, move |s| {
            s.record(Call::Pull { name: name.clone() });
            match s.injected(&name, Op::Pull) {
                Some(msg) => Err(RuntimeError::new(Op::Pull, &name, Cause::Injected(msg))),
                None => Ok(()),
            }
        })
        .await
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId, RuntimeError> {
        let spec = spec.clone();
        let placeholder = ContainerId(spec.name.clone());
        self.ask(Op::Create, &placeholder, move |s| {
            s.record(Call::Create {
                name: spec.name.clone(),
            });
            check_spec(&spec)?;
            if let Some(msg) = s.injected(&spec.name, Op::Create) {
                return Err(RuntimeError::new(
                    Op::Create,
                    &spec.name,
                    Cause::Injected(msg),
                ));
            }
            s.next += 1;
            let id = ContainerId(format!("{}#{}", spec.name, s.next));
            s.containers.insert(
                id.clone(),
                Container {
                    name: spec.name,
                    state: watch::Sender::new(ContainerState::Created),
                    timer: None,
                    logs: LogBuffer::default(),
                    output: spec.output,
                },
            );
            Ok(id)
        })
        .await
    }

    async fn start(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        let key = id.clone();
        let run = self
            .ask(Op::Start, id, move |s| {
                let pid = 10_000 + s.next as u32;
                let c = s.begin(Call::Start { id: key.clone() }, Op::Start, &key)?;
                let current = *c.state.borrow();
                if current != ContainerState::Created {
                    return Err(invalid(
                        Op::Start,
                        &key,
                        current,
                        "only a created container can be started",
                    ));
                }
                c.state.send_replace(ContainerState::Running { pid });
                let name = c.name.clone();
                let b = s.behavior(&name);
                Ok(b.runs
                    .pop_front()
                    .or(b.default_run)
                    .unwrap_or(MockRun::UntilStopped))
            })
            .await?;
        if let MockRun::ExitAfter(delay, status) = run {
            let state = self.state.clone();
            let key = id.clone();
            let timer = tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                state.cast(move |s| s.exit(&key, status));
            });
            let key = id.clone();
            let handle = timer.abort_handle();
            self.state.cast(move |s| {
                if let Some(c) = s.containers.get_mut(&key)
                    && matches!(*c.state.borrow(), ContainerState::Running { .. })
                {
                    c.timer = Some(handle);
                }
            });
        }
        Ok(())
    }

    async fn stop(&self, id: &ContainerId, grace: Duration) -> Result<StopOutcome, RuntimeError> {
        let key = id.clone();
        let plan = self
            .ask(Op::Stop, id, move |s| {
                let c = s.begin(
                    Call::Stop {
                        id: key.clone(),
                        grace,
                    },
                    Op::Stop,
                    &key,
                )?;
                let rx = c.state.subscribe();
                let name = c.name.clone();
                match *c.state.borrow() {
                    ContainerState::Created => {
                        return Err(invalid(
                            Op::Stop,
                            &key,
                            ContainerState::Created,
                            "it was never started",
                        ));
                    }
                    ContainerState::Exited { status } => return Ok(StopPlan::Done(status)),
                    ContainerState::Running { .. } => {}
                }
                if s.behavior(&name).ignore_sigterm {
                    Ok(StopPlan::Wait(rx))
                } else {
                    let status = ExitStatus::Signal(Signal::SIGTERM as i32);
                    s.exit(&key, status);
                    Ok(StopPlan::Done(status))
                }
            })
            .await?;
        let mut rx = match plan {
            StopPlan::Done(status) => {
                return Ok(StopOutcome {
                    status,
                    killed: false,
                });
            }
            StopPlan::Wait(rx) => rx,
        };
        let exited = |s: &ContainerState| matches!(s, ContainerState::Exited { .. });
        if tokio::time::timeout(grace, rx.wait_for(exited))
            .await
            .is_err()
        {
            let key = id.clone();
            self.state
                .call(move |s| s.exit(&key, ExitStatus::Signal(Signal::SIGKILL as i32)))
                .await;
            let status = match *rx.borrow() {
                ContainerState::Exited { status } => status,
                _ => ExitStatus::Signal(Signal::SIGKILL as i32),
            };
            return Ok(StopOutcome {
                status,
                killed: true,
            });
        }
        match *rx.borrow() {
            ContainerState::Exited { status } => Ok(StopOutcome {
                status,
                killed: false,
            }),
            _ => Err(RuntimeError::new(Op::Stop, id, Cause::Closed)),
        }
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        let key = id.clone();
        self.ask(Op::Remove, id, move |s| {
            let c = s.begin(Call::Remove { id: key.clone() }, Op::Remove, &key)?;
            let current = *c.state.borrow();
            if let ContainerState::Running { .. } = current {
                return Err(invalid(Op::Remove, &key, current, "stop it first"));
            }
            s.containers.remove(&key);
            Ok(())
        })
        .await
    }

    async fn wait(&self, id: &ContainerId) -> Result<ExitStatus, RuntimeError> {
        let key = id.clone();
        let mut rx = self
            .ask(Op::Wait, id, move |s| {
                let c = s.begin(Call::Wait { id: key.clone() }, Op::Wait, &key)?;
                Ok(c.state.subscribe())
            })
            .await?;
        match rx
            .wait_for(|s| matches!(s, ContainerState::Exited { .. }))
            .await
            .map(|s| *s)
        {
            Ok(ContainerState::Exited { status }) => Ok(status),
            // The container was removed (or abandoned) while we waited.
            _ => Err(RuntimeError::new(Op::Wait, id, Cause::NotFound)),
        }
    }

    async fn state(&self, id: &ContainerId) -> Result<ContainerState, RuntimeError> {
        let key = id.clone();
        self.ask(Op::State, id, move |s| {
            let c = s.begin(Call::State { id: key.clone() }, Op::State, &key)?;
            Ok(*c.state.borrow())
        })
        .await
    }

    async fn pid(&self, id: &ContainerId) -> Result<Option<u32>, RuntimeError> {
        let key = id.clone();
        self.ask(Op::Pid, id, move |s| {
            let c = s.begin(Call::Pid { id: key.clone() }, Op::Pid, &key)?;
            Ok(match *c.state.borrow() {
                ContainerState::Running { pid } => Some(pid),
                _ => None,
            })
        })
        .await
    }

    async fn signal(&self, id: &ContainerId, signal: Signal) -> Result<(), RuntimeError> {
        let key = id.clone();
        self.ask(Op::Signal, id, move |s| {
            let c = s.begin(
                Call::Signal {
                    id: key.clone(),
                    signal,
                },
                Op::Signal,
                &key,
            )?;
            let current = *c.state.borrow();
            if !matches!(current, ContainerState::Running { .. }) {
                return Err(invalid(
                    Op::Signal,
                    &key,
                    current,
                    "only a running container can be signalled",
                ));
            }
            let name = c.name.clone();
            let ignored = signal == Signal::SIGTERM && s.behavior(&name).ignore_sigterm;
            let fatal = matches!(
                signal,
                Signal::SIGTERM
                    | Signal::SIGKILL
                    | Signal::SIGINT
                    | Signal::SIGQUIT
                    | Signal::SIGHUP
            );
            if fatal && !ignored {
                s.exit(&key, ExitStatus::Signal(signal as i32));
            }
            Ok(())
        })
        .await
    }

    async fn logs(&self, id: &ContainerId, query: LogQuery) -> Result<Logs, RuntimeError> {
        let key = id.clone();
        self.ask(Op::Logs, id, move |s| {
            let c = s.begin(Call::Logs { id: key.clone() }, Op::Logs, &key)?;
            Ok(c.logs.query(query))
        })
        .await
    }

    fn abandon(&self, id: &ContainerId) {
        let key = id.clone();
        self.state.cast(move |s| {
            s.record(Call::Abandon { id: key.clone() });
            s.exit(&key, ExitStatus::Signal(Signal::SIGKILL as i32));
            s.containers.remove(&key);
        });
    }
}
