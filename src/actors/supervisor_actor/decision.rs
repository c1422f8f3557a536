//! The supervisor's restart decisions as pure functions: no actors, no I/O,
//! no clock (the caller passes `now`). The actor gathers the facts, calls
//! [`decide`], and carries out the [`Decision`]; tests check every cell of
//! the table without spawning anything.
//!
//! Rules (DESIGN.md, "Supervisor semantics"):
//! - the exit is first classified ([`classify`]): exit-code rules win, else a
//!   clean stop or exit code 0 is normal and everything else abnormal;
//! - an abnormal exit of a child whose panic action is `isolate` or
//!   `shutdown` leads to that action, whatever its restart type (a failed
//!   start is not a panic: it is always a restart attempt);
//! - `permanent` children restart after any exit, `transient` after abnormal
//!   exits and `retry` codes, `temporary` never (they are dropped); a `done`
//!   code completes any child;
//! - a restart is counted in the window; when the restarts inside the window
//!   (this one included) go above `max_restarts`, `escalate` gives up and
//!   `backoff` delays the restart by the child's back-off step, or gives up
//!   once the step reaches `backoff.give_up_after`.

use std::{collections::VecDeque, time::Duration};

use tokio::time::Instant;

use super::child::ChildExit;
use crate::spec::{
    ExitAction, ExitRules, OnLimit, PanicAction, RestartType, Strategy, SupervisorFlags,
};

/// How an exit is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitClass {
    /// A clean exit.
    Normal,
    /// A failure.
    Abnormal,
    /// Restart without applying the panic action.
    Retry,
    /// Finished: never restart.
    Done,
}

/// Classifies `exit` with the child's exit-code rules.
pub fn classify(exit: &ChildExit, rules: &ExitRules) -> ExitClass {
    let code = match exit {
        ChildExit::Exited { status, .. } => status.code(),
        _ => None,
    };
    match code.and_then(|c| rules.action_for(c)) {
        Some(ExitAction::Normal) => ExitClass::Normal,
        Some(ExitAction::Failure) => ExitClass::Abnormal,
        Some(ExitAction::Retry) => ExitClass::Retry,
        Some(ExitAction::Done) => ExitClass::Done,
        None if exit.is_abnormal() => ExitClass::Abnormal,
        None => ExitClass::Normal,
    }
}

/// The policies of the child that exited.
#[derive(Debug, Clone, Copy)]
pub struct ChildPolicy<'a> {
    /// Its id (keys the back-off jitter).
    pub id: &'a str,
    /// Its restart type.
    pub restart: RestartType,
    /// What an abnormal exit leads to.
    pub on_panic: PanicAction,
    /// Its exit-code rules.
    pub exit_rules: &'a ExitRules,
}

/// What the supervisor remembers that matters for the decision.
#[derive(Debug, Clone, Copy)]
pub struct History<'a> {
    /// Restart times counted against the limit: all children's under
    /// `escalate`, this child's own under `backoff`.
    pub restarts: &'a VecDeque<Instant>,
    /// The child's current back-off step.
    pub backoff_step: u32,
    /// When the child last started, if it ever did.
    pub started_at: Option<Instant>,
}

/// What to do about an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Restart now (with the strategy's scope); counts as one restart.
    Restart,
    /// Restart after `delay` (crash-loop back-off); counts as one restart.
    /// The child's back-off step becomes `next_step`.
    Backoff {
        /// How long to wait.
        delay: Duration,
        /// The child's step afterwards.
        next_step: u32,
    },
    /// Keep the child stopped; it finished.
    Complete,
    /// Remove the child (temporary children).
    Drop,
    /// Keep the failed child for debugging; never restart it.
    Isolate,
    /// Stop every child of the supervisor.
    ShutdownService,
    /// Leave the child down in state `failed` (panic action `fail`).
    Fail,
    /// Give up: stop every child and fail to the parent.
    Escalate,
    /// Stop restarting the child: it crash-looped `crash_loops` times
    /// (`backoff.give_up_after`); it stays down in state `failed`.
    GiveUp {
        /// Back-off rounds it went through.
        crash_loops: u32,
    },
}

/// Decides what to do after `child` ended with `exit` at `now`.
pub fn decide(
    flags: &SupervisorFlags,
    child: &ChildPolicy<'_>,
    exit: &ChildExit,
    history: &History<'_>,
    now: Instant,
) -> Decision {
    let class = classify(exit, child.exit_rules);
    let start_failed = matches!(exit, ChildExit::StartFailed { .. });
    if class == ExitClass::Abnormal && !start_failed {
        match child.on_panic {
            PanicAction::Isolate => return Decision::Isolate,
            PanicAction::Shutdown => return Decision::ShutdownService,
            PanicAction::Fail => return Decision::Fail,
            PanicAction::Restart => {}
        }
    }
    let restart = match (child.restart, class) {
        (RestartType::Temporary, _) | (_, ExitClass::Done) => false,
        (RestartType::Permanent, _) => true,
        (RestartType::Transient, ExitClass::Normal) => false,
        (RestartType::Transient, ExitClass::Abnormal | ExitClass::Retry) => true,
    };
    if !restart {
        return if child.restart == RestartType::Temporary {
            Decision::Drop
        } else {
            Decision::Complete
        };
    }
    if restarts_in_window(history.restarts, flags.restart_window, now) < flags.max_restarts as usize
    {
        return Decision::Restart;
    }
    match flags.on_limit {
        OnLimit::Escalate => Decision::Escalate,
        OnLimit::Backoff => {
            let step = effective_step(flags, history, now);
            if flags.backoff.give_up_after.is_some_and(|n| step >= n) {
                return Decision::GiveUp { crash_loops: step };
            }
            Decision::Backoff {
                delay: flags.backoff.delay(step, child.id),
                next_step: step.saturating_add(1),
            }
        }
    }
}

/// The child's back-off step at `now`: back to 0 once it ran `reset_after`
/// without crashing.
pub fn effective_step(flags: &SupervisorFlags, history: &History<'_>, now: Instant) -> u32 {
    match history.started_at {
        Some(started) if now.saturating_duration_since(started) >= flags.backoff.reset_after => 0,
        _ => history.backoff_step,
    }
}

/// Restarts at most `window` before `now` (inclusive, as OTP counts them).
pub fn restarts_in_window(restarts: &VecDeque<Instant>, window: Duration, now: Instant) -> usize {
    restarts
        .iter()
        .filter(|&&t| now.saturating_duration_since(t) <= window)
        .count()
}

/// Drops restart times that can no longer count (older than `window`).
pub fn prune(restarts: &mut VecDeque<Instant>, window: Duration, now: Instant) {
    while restarts
        .front()
        .is_some_and(|&t| now.saturating_duration_since(t) > window)
    {
        restarts.pop_front();
    }
}

/// The children restarted with `failed`, in start order: itself
/// (`one_for_one`, `dynamic`), everyone (`one_for_all`), or itself and every
/// child started after it (`rest_for_one`). `order` is the start order; it
/// is only walked when the strategy needs it.
pub fn restart_scope<K: PartialEq + Copy>(
    strategy: Strategy,
    order: impl IntoIterator<Item = K>,
    failed: K,
) -> Vec<K> {
    match strategy {
        Strategy::OneForOne | Strategy::Dynamic => vec![failed],
        Strategy::OneForAll => order.into_iter().collect(),
        Strategy::RestForOne => {
            let rest: Vec<K> = order.into_iter().skip_while(|k| *k != failed).collect();
            if rest.is_empty() { vec![failed] } else { rest }
        }
    }
}
