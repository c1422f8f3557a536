//! A supervisor's children's restart state kept on disk (see
//! [`crate::store::supervision`]): reported when a child starts, begins a
//! back-off, is left failed or ends for good, and taken back before the
//! first start, so that restart counts, the intensity window, a crash
//! loop's back-off, a failure and a completion continue across agent
//! restarts.

use std::{collections::BTreeMap, collections::VecDeque, time::Duration};

use chrono::{DateTime, Utc};
use ractor::ActorRef;
use tokio::time::Instant;

use super::{Msg, SupervisorMsg, SupervisorState, child::ChildState, decision::prune, slots::Key};
use crate::{
    events::Event,
    spec::OnLimit,
    store::supervision::{ChildRecord, SupervisionStore},
};

/// Where a supervisor keeps its children's state: the store, and the scope
/// (the service's name) its records are kept under.
#[derive(Clone, Debug)]
pub struct Persist {
    pub(crate) store: SupervisionStore,
    pub(crate) scope: String,
}

/// Restart times kept per record: the newest ones. The decision only asks
/// whether `max_restarts` fit in the window, so this is exact up to 100
/// and errs towards leniency above; it keeps a restart storm's record (and
/// the cost of each report) small.
const MAX_KEPT_RESTARTS: usize = 100;

/// The record id of the supervisor's own restart window (under
/// `on_limit: escalate` restarts are counted for all children together).
const SUPERVISOR: &str = "";

fn to_wall(t: Instant, now: Instant, wall: DateTime<Utc>) -> DateTime<Utc> {
    let ago = chrono::Duration::from_std(now.saturating_duration_since(t)).unwrap_or_default();
    wall - ago
}

fn to_instant(t: DateTime<Utc>, now: Instant, wall: DateTime<Utc>) -> Instant {
    let ago = (wall - t).to_std().unwrap_or(Duration::ZERO);
    now.checked_sub(ago).unwrap_or(now)
}

/// The newest [`MAX_KEPT_RESTARTS`] of `restarts`, on the wall clock.
fn newest(restarts: &VecDeque<Instant>, now: Instant, wall: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let skip = restarts.len().saturating_sub(MAX_KEPT_RESTARTS);
    restarts
        .iter()
        .skip(skip)
        .map(|&t| to_wall(t, now, wall))
        .collect()
}

impl SupervisorState {
    /// Reports child `key`'s state to the store, if this supervisor keeps
    /// one. `backoff_delay` is the whole delay of a back-off just begun.
    pub(super) fn persist(&self, key: Key, backoff_delay: Option<Duration>) {
        let Some(p) = &self.persist else {
            return;
        };
        let Some(slot) = self.slot(key) else {
            return;
        };
        let (now, wall) = (Instant::now(), Utc::now());
        let backing_off = slot.state == ChildState::CrashLoopBackOff && slot.retry.is_some();
        let record = ChildRecord {
            restart_count: slot.restart_count,
            restarts: newest(&slot.restarts, now, wall),
            backoff_step: slot.backoff_step,
            next_restart: slot.next_restart.filter(|_| backing_off),
            backoff_delay: backoff_delay.filter(|_| backing_off),
            started_at: slot.started_at.map(|t| to_wall(t, now, wall)),
            last_exit: slot.last_exit.clone(),
            failed: slot.state == ChildState::Failed,
            done: slot.state == ChildState::Completed,
            status: slot.status.clone(),
        };
        p.store.update(&p.scope, &slot.spec.id, record);
        if self.flags.on_limit == OnLimit::Escalate {
            let all = ChildRecord {
                restarts: newest(&self.restarts, now, wall),
                ..ChildRecord::default()
            };
            p.store.update(&p.scope, SUPERVISOR, all);
        }
    }

    /// Takes back what an earlier agent kept of these children: restart
    /// counts, the restarts still in the window, back-off steps, last
    /// exits. A child whose back-off was pending waits for what remains of
    /// it (at most its whole delay, or `backoff.max` when that is not
    /// known) instead of starting now. Called before the first start.
    pub(super) async fn restore(&mut self, myself: &ActorRef<SupervisorMsg>) {
        let Some(p) = self.persist.clone() else {
            return;
        };
        let records: BTreeMap<String, ChildRecord> = p.store.take(&p.scope).await;
        let (now, wall) = (Instant::now(), Utc::now());
        let window = self.flags.restart_window;
        let max_delay = self.flags.backoff.max;
        for (id, record) in records {
            if id == SUPERVISOR {
                let mut times: Vec<Instant> = record
                    .restarts
                    .iter()
                    .map(|&t| to_instant(t, now, wall))
                    .collect();
                times.sort();
                self.restarts = VecDeque::from(times);
                prune(&mut self.restarts, window, now);
                continue;
            }
            let Some(&key) = self.by_id.get(id.as_str()) else {
                continue;
            };
            let token = self.next_token();
            let Some(slot) = self.slot_mut(key) else {
                continue;
            };
            slot.restart_count = record.restart_count;
            slot.backoff_step = record.backoff_step;
            slot.last_exit = record.last_exit;
            let mut times: Vec<Instant> = record
                .restarts
                .iter()
                .map(|&t| to_instant(t, now, wall))
                .collect();
            times.sort();
            slot.restarts = VecDeque::from(times);
            prune(&mut slot.restarts, window, now);
            if record.failed {
                // Left down by an earlier agent: down it stays, until an
                // operator restarts the service.
                slot.state = ChildState::Failed;
                slot.status = record.status;
                tracing::info!(child = %slot.spec.id, "an earlier agent left this child failed; it stays down");
                continue;
            }
            if record.done {
                // It ended for good under an earlier agent that did not
                // stop (killed, or left its services running): it is not
                // run again.
                slot.state = ChildState::Completed;
                tracing::info!(child = %slot.spec.id, "this child ended for good under an earlier agent; it is not started again");
                continue;
            }
            let Some(next) = record.next_restart else {
                continue;
            };
            let bound = record.backoff_delay.unwrap_or(max_delay);
            let remaining = (next - wall).to_std().unwrap_or(Duration::ZERO).min(bound);
            if remaining.is_zero() {
                continue;
            }
            slot.state = ChildState::CrashLoopBackOff;
            slot.retry = Some(token);
            slot.next_restart = chrono::Duration::from_std(remaining)
                .ok()
                .and_then(|d| wall.checked_add_signed(d));
            let (id, kind, restart_count) =
                (slot.spec.id.to_string(), slot.spec.kind, slot.restart_count);
            tracing::info!(supervisor = %self.name, child = %id, step = record.backoff_step, remaining = ?remaining, "resuming a crash-loop back-off an earlier agent began");
            self.publish(Event::CrashLoopBackOff {
                supervisor: self.name.to_string(),
                child: id,
                child_kind: kind,
                restart_count,
                delay: remaining,
                resumed: true,
            });
            myself.send_after(remaining, move || SupervisorMsg(Msg::Retry { key, token }));
            self.persist(key, Some(bound));
        }
        let keys: Vec<Key> = self.children.keys().collect();
        for key in keys {
            if self.slot(key).is_some_and(|s| s.retry.is_none()) {
                self.persist(key, None);
            }
        }
    }

    /// Whether the first start skips child `key`: restored in a back-off
    /// (its retry starts it), left failed, or done.
    pub(super) fn held_back(&self, key: Key) -> bool {
        self.slot(key).is_some_and(|s| {
            s.retry.is_some() || matches!(s.state, ChildState::Failed | ChildState::Completed)
        })
    }
}
