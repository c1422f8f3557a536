//! The supervisor's first start and last stop, the two moments it may
//! await its children directly: before its address is known to anyone
//! (`pre_start`), and once it serves nothing more (`post_stop`).

use futures::{StreamExt, future::join_all};

/// A concurrent supervisor's slow first starts in flight at most at once.
const CONCURRENT_STARTS: usize = 256;

/// A first start that takes longer goes on in the background.
const SLOW_START: std::time::Duration = std::time::Duration::from_millis(1);
use ractor::{ActorProcessingErr, ActorRef};

use super::{
    SupervisorMsg, SupervisorState,
    ops::{Outcome, prepare, run_start},
    slots::Key,
    terminate::terminate,
    work::{Action, AfterStop, StartMode},
};
use crate::spec::Strategy;

impl SupervisorState {
    /// Starts the children of the spec: in order, each after the one before
    /// it started, or all at once when the supervisor is concurrent. Under
    /// `one_for_all` and `rest_for_one` a child that fails to start holds
    /// back the ones after it (they depend on it; its retry starts them).
    /// Fails only when the supervisor gives up (`escalate` past the limit),
    /// after stopping what it started.
    pub(super) async fn start_initial(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let cell = myself.get_cell();
        // A child restored in a back-off starts when its retry comes; one
        // restored failed stays down.
        let keys: Vec<Key> = self
            .children
            .keys()
            .filter(|&k| !self.held_back(k))
            .collect();
        let start = |state: &Self, key: Key| {
            let ctx = state.context(&cell, key).expect("a child of the spec");
            let slot = state.slot(key).expect("a child of the spec");
            run_start(prepare(&slot.spec, ctx), cell.clone())
        };
        if self.concurrent {
            // Each start is awaited here for a moment: one that ends within
            // SLOW_START (a plain actor) is taken in at once, as a
            // sequential start would, which keeps a hundred thousand
            // instant starts cheap; a slower one (a pull, a runc create)
            // goes on in the background, at most CONCURRENT_STARTS at a
            // time, while the next ones start.
            let mut slow = futures::stream::FuturesUnordered::new();
            for &key in &keys {
                if slow.len() >= CONCURRENT_STARTS
                    && let Some((k, result)) = slow.next().await
                {
                    self.initial_result(myself, k, result).await?;
                }
                let mut started = Box::pin(start(self, key));
                match tokio::time::timeout(SLOW_START, &mut started).await {
                    Ok(result) => {
                        self.initial_result(myself, key, result).await?;
                    }
                    Err(_) => slow.push(async move { (key, started.await) }),
                }
            }
            while let Some((key, result)) = slow.next().await {
                self.initial_result(myself, key, result).await?;
            }
        } else {
            let independent =
                matches!(self.flags.strategy, Strategy::OneForOne | Strategy::Dynamic);
            for key in keys {
                let result = start(self, key).await;
                let started = self.initial_result(myself, key, result).await?;
                if !started && !independent {
                    break;
                }
            }
        }
        // Exits seen meanwhile were queued as work: begin it.
        self.pump(myself);
        Ok(())
    }

    /// Applies the result of a first start; a failure is counted, and may
    /// make the supervisor give up.
    async fn initial_result(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        key: Key,
        result: Result<super::ops::Started, String>,
    ) -> Result<bool, ActorProcessingErr> {
        match result {
            Ok(started) => {
                self.adopt(myself, key, started, StartMode::New);
                Ok(true)
            }
            Err(reason) => {
                let stops = self.fail_start(myself, key, reason);
                if let Some(error) = self.escalating.take() {
                    self.stop_everything("escalate").await;
                    return Err(Box::new(error));
                }
                for (k, then) in stops {
                    self.stop_now(k, "restart", then).await;
                }
                Ok(false)
            }
        }
    }

    /// Stops one child and waits (only where nothing else is served).
    async fn stop_now(&mut self, key: Key, reason: &'static str, then: AfterStop) {
        let Some(slot) = self.slot_mut(key) else {
            return;
        };
        let cell = slot.actor.take();
        let (policy, margin) = (slot.spec.shutdown, slot.spec.kill_margin);
        if let Some(cell) = &cell {
            self.by_actor.remove(&cell.get_id());
            terminate(cell, policy, margin, reason).await;
        }
        self.after_stop(key, reason, then, cell.is_some());
    }

    /// Before the supervisor exits (stopped, or giving up): lets the starts
    /// and stops in flight end, answers every call still waiting, stops
    /// every child (reverse start order; all at once when concurrent), and
    /// removes what isolated children kept.
    pub(super) async fn stop_everything(&mut self, reason: &'static str) {
        while !self.completions.inflight.is_empty() {
            let Some((f, outcome)) = self.completions.next().await else {
                break;
            };
            match (f.action, outcome) {
                (Action::Start { key, mode }, Outcome::Started(Ok(s))) => {
                    if self.slot(key).is_some() {
                        self.running(key, s.cell, mode);
                    } else {
                        s.cell.kill();
                    }
                }
                (Action::Stop { key, reason, then }, _) => self.after_stop(key, reason, then, true),
                _ => {}
            }
        }
        let name = self.name.clone();
        for work in self.works.drain() {
            work.answer(&name, true);
        }
        let mut stopping = Vec::new();
        let order: Vec<Key> = self.children.keys().rev().collect();
        for key in order {
            let Some(slot) = self.slot_mut(key) else {
                continue;
            };
            slot.retry = None;
            if let Some(cell) = slot.actor.take() {
                let (policy, margin) = (slot.spec.shutdown, slot.spec.kill_margin);
                let (id, kind) = (slot.spec.id.clone(), slot.spec.kind);
                self.by_actor.remove(&cell.get_id());
                stopping.push((cell, policy, margin, id, kind));
            }
        }
        if self.concurrent {
            join_all(
                stopping
                    .iter()
                    .map(|(cell, policy, margin, ..)| terminate(cell, *policy, *margin, reason)),
            )
            .await;
        } else {
            for (cell, policy, margin, ..) in &stopping {
                terminate(cell, *policy, *margin, reason).await;
            }
        }
        for (.., id, kind) in stopping {
            self.publish_stopped(&id, kind, reason);
        }
        let retained: Vec<_> = self
            .children
            .values_mut()
            .filter_map(|s| s.retained.take())
            .collect();
        join_all(retained.into_iter().map(|r| r.release())).await;
    }
}
