//! Actor-level faults: wrap your own ractor actor in [`Faulty`] and it
//! panics, returns an error, or refuses to start on cue, so you can test it
//! under arbor's supervisors, not only containers.
//!
//! # Why
//!
//! The fault runtime breaks containers; most users also supervise their own
//! actors. [`Faulty<A>`] is an actor with `A`'s messages, arguments and
//! state: it forwards every hook to `A`, except that before a message
//! reaches `A::handle` it asks its [`ActorFaults`] whether this message
//! (counted across every incarnation of the actor, from 1) is to fail. A
//! restarted actor keeps counting, so "panic on the 3rd message" happens
//! once, not in every incarnation.
//!
//! Faults come from a script (`panic_at(3)`, `error_at(7)`,
//! `fail_starts(2)`) or from a seed (`random(seed, p)`): message `n` fails
//! when a hash of `(seed, n)` falls below `p`, so the same seed and the
//! same message order give the same faults, whatever the timing. Every
//! injected fault is recorded ([`ActorFaults::injected`]).
//!
//! # Failure
//!
//! - `pre_start`: an injected start failure returns an error (the
//!   supervisor sees a failed start); otherwise `A::pre_start` runs.
//! - `handle`: an injected panic panics (ractor catches it and reports the
//!   actor failed); an injected error returns `Err`; otherwise `A::handle`.
//! - `post_start`, `post_stop`, `handle_supervisor_evt`: `A`'s, unchanged.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::mpsc;

/// What a fault does to the message it hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActorFaultKind {
    /// `handle` panics.
    Panic,
    /// `handle` returns an error.
    Error,
    /// `pre_start` returns an error.
    StartFailure,
}

/// One injected actor fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorFault {
    /// The actor's name (as given to [`ActorFaults::new`]).
    pub actor: String,
    /// What was injected.
    pub kind: ActorFaultKind,
    /// The message number it hit (from 1); the start number for start failures.
    pub at: u64,
}

struct Shared {
    name: String,
    messages: AtomicU64,
    starts: AtomicU64,
    panic_at: Vec<u64>,
    error_at: Vec<u64>,
    fail_starts: u64,
    random: Option<(u64, f64, f64)>,
    record: mpsc::UnboundedSender<ActorFault>,
}

/// The fault plan of one wrapped actor, shared by all its incarnations.
/// Build it, then wrap the actor with [`ActorFaults::wrap`].
#[derive(Clone)]
pub struct ActorFaults {
    shared: Arc<Shared>,
    records: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<ActorFault>>>,
}

impl std::fmt::Debug for ActorFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorFaults")
            .field("actor", &self.shared.name)
            .finish_non_exhaustive()
    }
}

/// Builds an [`ActorFaults`].
#[derive(Debug, Clone, Default)]
pub struct ActorFaultsBuilder {
    name: String,
    panic_at: Vec<u64>,
    error_at: Vec<u64>,
    fail_starts: u64,
    random: Option<(u64, f64, f64)>,
}

impl ActorFaultsBuilder {
    /// Panics on message `n` (from 1, counted across restarts).
    pub fn panic_at(mut self, n: u64) -> Self {
        self.panic_at.push(n);
        self
    }

    /// Returns an error on message `n` (from 1, counted across restarts).
    pub fn error_at(mut self, n: u64) -> Self {
        self.error_at.push(n);
        self
    }

    /// Fails the first `n` starts.
    pub fn fail_starts(mut self, n: u64) -> Self {
        self.fail_starts = n;
        self
    }

    /// Each message fails with probability `p`, decided by a hash of the
    /// seed and the message number; `panic_share` of those failures
    /// panic, the rest return errors.
    pub fn random(mut self, seed: u64, p: f64, panic_share: f64) -> Self {
        self.random = Some((seed, p.clamp(0.0, 1.0), panic_share.clamp(0.0, 1.0)));
        self
    }

    /// The plan.
    pub fn build(self) -> ActorFaults {
        let (tx, rx) = mpsc::unbounded_channel();
        ActorFaults {
            shared: Arc::new(Shared {
                name: self.name,
                messages: AtomicU64::new(0),
                starts: AtomicU64::new(0),
                panic_at: self.panic_at,
                error_at: self.error_at,
                fail_starts: self.fail_starts,
                random: self.random,
                record: tx,
            }),
            records: Arc::new(tokio::sync::Mutex::new(rx)),
        }
    }
}

impl ActorFaults {
    /// A plan for the actor called `name` (used in the records).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(name: impl Into<String>) -> ActorFaultsBuilder {
        ActorFaultsBuilder {
            name: name.into(),
            ..ActorFaultsBuilder::default()
        }
    }

    /// Wraps `actor` so that it fails by this plan.
    pub fn wrap<A: Actor>(&self, actor: A) -> Faulty<A> {
        Faulty {
            inner: actor,
            faults: self.clone(),
        }
    }

    /// Messages seen so far (all incarnations).
    pub fn messages(&self) -> u64 {
        self.shared.messages.load(Ordering::Acquire)
    }

    /// Takes the faults injected since the last call, in order.
    pub async fn injected(&self) -> Vec<ActorFault> {
        let mut rx = self.records.lock().await;
        let mut out = Vec::new();
        while let Ok(f) = rx.try_recv() {
            out.push(f);
        }
        out
    }

    fn record(&self, kind: ActorFaultKind, at: u64) {
        let _ = self.shared.record.send(ActorFault {
            actor: self.shared.name.clone(),
            kind,
            at,
        });
    }

    /// The fault for the next start, if any.
    fn on_start(&self) -> Option<u64> {
        let n = self.shared.starts.fetch_add(1, Ordering::AcqRel) + 1;
        (n <= self.shared.fail_starts).then_some(n)
    }

    /// The fault for the next message, with its number.
    fn on_message(&self) -> (u64, Option<ActorFaultKind>) {
        let s = &self.shared;
        let n = s.messages.fetch_add(1, Ordering::AcqRel) + 1;
        if s.panic_at.contains(&n) {
            return (n, Some(ActorFaultKind::Panic));
        }
        if s.error_at.contains(&n) {
            return (n, Some(ActorFaultKind::Error));
        }
        if let Some((seed, p, panic_share)) = s.random {
            let draw = unit(mix(seed, n));
            if draw < p {
                // Reuse the draw: below p * panic_share panics.
                let kind = if draw < p * panic_share {
                    ActorFaultKind::Panic
                } else {
                    ActorFaultKind::Error
                };
                return (n, Some(kind));
            }
        }
        (n, None)
    }
}

/// `A` with faults injected by an [`ActorFaults`] plan.
pub struct Faulty<A> {
    inner: A,
    faults: ActorFaults,
}

impl<A: Actor> Actor for Faulty<A> {
    type Msg = A::Msg;
    type State = A::State;
    type Arguments = A::Arguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        if let Some(n) = self.faults.on_start() {
            self.faults.record(ActorFaultKind::StartFailure, n);
            return Err(
                format!("injected start failure {n} of {}", self.faults.shared.name).into(),
            );
        }
        self.inner.pre_start(myself, args).await
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        self.inner.post_start(myself, state).await
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        self.inner.post_stop(myself, state).await
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (n, fault) = self.faults.on_message();
        match fault {
            Some(ActorFaultKind::Panic) => {
                self.faults.record(ActorFaultKind::Panic, n);
                panic!(
                    "injected panic at message {n} of {}",
                    self.faults.shared.name
                );
            }
            Some(kind) => {
                self.faults.record(kind, n);
                Err(format!(
                    "injected error at message {n} of {}",
                    self.faults.shared.name
                )
                .into())
            }
            None => self.inner.handle(myself, message, state).await,
        }
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        message: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        self.inner
            .handle_supervisor_evt(myself, message, state)
            .await
    }
}

fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}
