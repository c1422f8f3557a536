//! The "agent restarted" fault: what keepers do for a real agent, on the
//! mock runtime.
//!
//! Each node the harness starts talks to the runtime through its own
//! [`Generation`]. Containers created with `live_restore` are recorded in
//! the shared [`Kept`] table, as a keeper would keep them. When the harness
//! restarts the agent, the old node leaves (as `arbor agent` does on
//! SIGUSR2: executions that cannot be kept end first, the supervision
//! state is written), its generation is severed (a dead process can call
//! nothing: every call fails and `abandon` does nothing, so its killed
//! actors' drop guards touch no container) and its actors are killed. The
//! next node, on the same state directory, adopts what the old one left
//! through its own generation ([`Runtime::adopt`]), exactly as it would
//! from keepers, and what it does not claim is stopped and removed after
//! its first deploy ([`Kept::release_unadopted`]).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;

use crate::runtime::{
    Cause, ContainerId, ContainerSpec, ContainerState, ExecOutput, ExitStatus, LogQuery, Logs, Op,
    Runtime, RuntimeError, Signal, StopOutcome,
};

/// A kept container.
struct Entry {
    id: ContainerId,
    spec: serde_json::Value,
    /// The generation that owns it now.
    owner: u64,
}

/// The containers kept across agent restarts: the stand-in for what the
/// keepers and the kernel hold, which outlives every node. It is not any
/// actor's state (the generations of dead and live nodes all reach it, as
/// processes reach the kernel), so it is one table behind a lock held for
/// a lookup at a time, never across an await.
#[derive(Clone, Default)]
pub(super) struct Kept {
    table: Arc<Mutex<Table>>,
    next: Arc<AtomicU64>,
    adopted: Arc<AtomicU64>,
    released: Arc<AtomicU64>,
}

#[derive(Default)]
struct Table {
    /// Started kept containers by adoption key (name, and for a job's
    /// container its execution).
    entries: HashMap<String, Entry>,
    /// Created with `live_restore`, not started yet: kept once started (a
    /// keeper exists only from the start).
    created: HashMap<ContainerId, (String, serde_json::Value)>,
}

fn key(spec: &ContainerSpec) -> String {
    match spec.labels.get("execution") {
        Some(execution) => format!("{}@{execution}", spec.name),
        None => spec.name.clone(),
    }
}

impl Kept {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Containers adopted by a later generation so far.
    pub(super) fn adopted(&self) -> u64 {
        self.adopted.load(Ordering::Relaxed)
    }

    /// Containers stopped because no later generation claimed them.
    pub(super) fn released(&self) -> u64 {
        self.released.load(Ordering::Relaxed)
    }

    /// A new generation over `inner` (one per node).
    pub(super) fn generation(&self, inner: Arc<dyn Runtime>) -> Generation {
        Generation {
            inner,
            kept: self.clone(),
            id: self.next.fetch_add(1, Ordering::Relaxed),
            alive: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Stops and removes what earlier generations left that `current` did
    /// not adopt; returns how many.
    pub(super) async fn release_unadopted(&self, current: &Generation) -> usize {
        let left: Vec<ContainerId> = {
            let mut table = self.lock();
            let entries = &mut table.entries;
            let keys: Vec<String> = entries
                .iter()
                .filter(|(_, e)| e.owner != current.id)
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter()
                .filter_map(|k| entries.remove(k))
                .map(|e| e.id)
                .collect()
        };
        for id in &left {
            release(&current.inner, id).await;
        }
        self.released
            .fetch_add(left.len() as u64, Ordering::Relaxed);
        left.len()
    }
}

/// Stops and removes a container nobody adopts.
async fn release(rt: &Arc<dyn Runtime>, id: &ContainerId) {
    let _ = rt.stop(id, Duration::from_secs(10)).await;
    if rt.remove(id).await.is_err() {
        rt.abandon(id);
    }
}

/// One node's way to the runtime; see the module docs.
pub(super) struct Generation {
    inner: Arc<dyn Runtime>,
    kept: Kept,
    id: u64,
    alive: Arc<AtomicBool>,
}

impl Generation {
    /// The node behind it is dead: nothing it calls reaches the runtime.
    pub(super) fn sever(&self) {
        self.alive.store(false, Ordering::Release);
    }

    fn check(&self, op: Op, subject: impl std::fmt::Display) -> Result<(), RuntimeError> {
        if self.alive.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(RuntimeError::new(op, subject, Cause::Closed))
        }
    }

    fn forget(&self, id: &ContainerId) {
        let mut table = self.kept.lock();
        table.entries.retain(|_, e| e.id != *id);
        table.created.remove(id);
    }
}

#[async_trait]
impl Runtime for Generation {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn pull_image(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        self.check(Op::Pull, &spec.name)?;
        self.inner.pull_image(spec).await
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId, RuntimeError> {
        self.check(Op::Create, &spec.name)?;
        let id = self.inner.create(spec).await?;
        if spec.live_restore {
            let spec_json = serde_json::to_value(spec).unwrap_or_default();
            self.kept
                .lock()
                .created
                .insert(id.clone(), (key(spec), spec_json));
        }
        Ok(id)
    }

    async fn start(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.check(Op::Start, id)?;
        self.inner.start(id).await?;
        let mut table = self.kept.lock();
        if let Some((key, spec)) = table.created.remove(id) {
            let entry = Entry {
                id: id.clone(),
                spec,
                owner: self.id,
            };
            table.entries.insert(key, entry);
        }
        Ok(())
    }

    async fn stop(&self, id: &ContainerId, grace: Duration) -> Result<StopOutcome, RuntimeError> {
        self.check(Op::Stop, id)?;
        self.inner.stop(id, grace).await
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.check(Op::Remove, id)?;
        self.inner.remove(id).await?;
        self.forget(id);
        Ok(())
    }

    async fn wait(&self, id: &ContainerId) -> Result<ExitStatus, RuntimeError> {
        self.check(Op::Wait, id)?;
        self.inner.wait(id).await
    }

    async fn state(&self, id: &ContainerId) -> Result<ContainerState, RuntimeError> {
        self.check(Op::State, id)?;
        self.inner.state(id).await
    }

    async fn pid(&self, id: &ContainerId) -> Result<Option<u32>, RuntimeError> {
        self.check(Op::Pid, id)?;
        self.inner.pid(id).await
    }

    async fn signal(&self, id: &ContainerId, signal: Signal) -> Result<(), RuntimeError> {
        self.check(Op::Signal, id)?;
        self.inner.signal(id, signal).await
    }

    async fn logs(&self, id: &ContainerId, query: LogQuery) -> Result<Logs, RuntimeError> {
        self.check(Op::Logs, id)?;
        self.inner.logs(id, query).await
    }

    async fn oom_killed(&self, id: &ContainerId) -> Result<bool, RuntimeError> {
        self.check(Op::State, id)?;
        self.inner.oom_killed(id).await
    }

    async fn exec(
        &self,
        id: &ContainerId,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        self.check(Op::Exec, id)?;
        self.inner.exec(id, argv, timeout).await
    }

    async fn address(&self, id: &ContainerId) -> Result<Option<std::net::IpAddr>, RuntimeError> {
        self.check(Op::State, id)?;
        self.inner.address(id).await
    }

    async fn adopt(&self, spec: &ContainerSpec) -> Result<Option<ContainerId>, RuntimeError> {
        self.check(Op::Create, &spec.name)?;
        if !spec.live_restore {
            return Ok(None);
        }
        let wanted = serde_json::to_value(spec).unwrap_or_default();
        let job = spec.labels.contains_key("execution");
        let found = {
            let mut table = self.kept.lock();
            let entries = &mut table.entries;
            match entries.get_mut(&key(spec)) {
                Some(e) if e.owner != self.id && (job || e.spec == wanted) => {
                    e.owner = self.id;
                    self.kept.adopted.fetch_add(1, Ordering::Relaxed);
                    Ok(Some(e.id.clone()))
                }
                Some(e) if e.owner != self.id => {
                    let id = e.id.clone();
                    entries.remove(&key(spec));
                    Err(id)
                }
                _ => Ok(None),
            }
        };
        match found {
            Ok(adopted) => Ok(adopted),
            Err(changed) => {
                // Its spec changed: the old one goes before the new starts.
                release(&self.inner, &changed).await;
                Ok(None)
            }
        }
    }

    async fn is_kept(&self, id: &ContainerId) -> bool {
        self.kept.lock().entries.values().any(|e| e.id == *id)
    }

    fn abandon(&self, id: &ContainerId) {
        if self.alive.load(Ordering::Acquire) {
            self.forget(id);
            self.inner.abandon(id);
        }
    }
}
