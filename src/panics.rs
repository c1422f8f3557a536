//! A panic hook that keeps a restart storm of supervised actors cheap, and
//! leaves every other panic alone.
//!
//! A supervised actor that panics is a failed child like any other: ractor
//! catches the panic and arbor restarts the child. But before unwinding
//! starts, Rust calls the panic hook, and the default hook with
//! `RUST_BACKTRACE=1` captures and prints a backtrace: about 360 µs per panic
//! on these machines, which a crash loop of thousands of children would pay
//! each time.
//!
//! [`install`] wraps the current hook. Panics raised while a supervised
//! actor's hook runs (the actors of [`ChildSpec::actor`], which wraps them
//! in [`Supervised`]) go through a token bucket: the first [`BURST`], and
//! then one per [`REFILL`], go to the previous hook in full (message,
//! location, backtrace); the others are only counted, which costs a few
//! atomic operations. The next full report says how many were left out, and
//! [`stats`] reports the totals. The panic message itself is never lost for
//! supervised children: ractor turns it into the child's exit reason, which
//! arbor records and publishes. Every other panic of the process (the
//! application's own threads and tasks, a test's failed assertion) goes to
//! the previous hook unchanged.
//!
//! Nothing installs it silently: the node does ([`crate::Node::start`]),
//! and an application that supervises its own actors can call [`install`].
//! `ARBOR_PANIC_HOOK=default` keeps the standard hook untouched everywhere.
//!
//! [`ChildSpec::actor`]: crate::ChildSpec::actor

use std::{
    cell::Cell,
    future::Future,
    pin::Pin,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

/// Panics reported in full before rate limiting starts.
pub const BURST: u32 = 5;
/// One more full report is allowed per this interval.
pub const REFILL: Duration = Duration::from_secs(1);

static INSTALLED: OnceLock<bool> = OnceLock::new();
static TOTAL: AtomicU64 = AtomicU64::new(0);
static REPORTED: AtomicU64 = AtomicU64::new(0);
static UNREPORTED: AtomicU64 = AtomicU64::new(0);
static BUCKET: Mutex<Option<(f64, Instant)>> = Mutex::new(None);

thread_local! {
    /// True while a supervised actor's hook is being polled on this thread.
    static SUPERVISED: Cell<bool> = const { Cell::new(false) };
}

/// Counts of supervised actors' panics since the hook was installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PanicStats {
    /// Every panic of a supervised actor seen by the hook.
    pub total: u64,
    /// Those passed to the previous hook (printed in full).
    pub reported: u64,
    /// Those only counted.
    pub suppressed: u64,
}

/// Installs the hook once per process (later calls do nothing). Returns
/// false when `ARBOR_PANIC_HOOK=default` asked to keep the standard hook.
pub fn install() -> bool {
    *INSTALLED.get_or_init(|| {
        if std::env::var("ARBOR_PANIC_HOOK").is_ok_and(|v| v == "default") {
            return false;
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !SUPERVISED.with(Cell::get) {
                previous(info);
                return;
            }
            TOTAL.fetch_add(1, Ordering::Relaxed);
            if take_token() {
                let left_out = UNREPORTED.swap(0, Ordering::Relaxed);
                if left_out > 0 {
                    eprintln!(
                        "arbor: {left_out} panic report(s) of supervised actors suppressed by \
                         rate limiting (ARBOR_PANIC_HOOK=default reports every panic)"
                    );
                }
                REPORTED.fetch_add(1, Ordering::Relaxed);
                previous(info);
            } else {
                UNREPORTED.fetch_add(1, Ordering::Relaxed);
            }
        }));
        true
    })
}

/// Counts since [`install`].
pub fn stats() -> PanicStats {
    let total = TOTAL.load(Ordering::Relaxed);
    let reported = REPORTED.load(Ordering::Relaxed);
    PanicStats {
        total,
        reported,
        suppressed: total.saturating_sub(reported),
    }
}

fn take_token() -> bool {
    // A panic racing another one on the bucket is simply not reported in full.
    let Ok(mut bucket) = BUCKET.try_lock() else {
        return false;
    };
    let now = Instant::now();
    let (tokens, last) = bucket.get_or_insert((f64::from(BURST), now));
    let refill = now.duration_since(*last).as_secs_f64() / REFILL.as_secs_f64();
    *tokens = (*tokens + refill).min(f64::from(BURST));
    *last = now;
    if *tokens >= 1.0 {
        *tokens -= 1.0;
        true
    } else {
        false
    }
}

/// Marks every poll of a future as running supervised-actor code.
struct Marked<'a, F>(Pin<&'a mut F>);

impl<F: Future> Future for Marked<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Reset on the way out, unwinding included: the panic of this poll
        // is reported while the flag is set, and nothing after it is.
        let _reset = Reset(SUPERVISED.with(|s| s.replace(true)));
        self.0.as_mut().poll(cx)
    }
}

/// Puts the flag back as it was.
struct Reset(bool);

impl Drop for Reset {
    fn drop(&mut self) {
        SUPERVISED.with(|s| s.set(self.0));
    }
}

/// Runs `fut` marked as supervised-actor code.
async fn marked<F: Future>(fut: F) -> F::Output {
    let fut = std::pin::pin!(fut);
    Marked(fut).await
}

/// An actor whose panics count as a supervised actor's (see the module
/// docs): the same messages, state and arguments as `A`, every hook
/// forwarded. [`ChildSpec::actor`](crate::ChildSpec::actor) wraps the
/// actors it spawns in it.
pub struct Supervised<A>(pub A);

impl<A: Actor> Actor for Supervised<A> {
    type Msg = A::Msg;
    type State = A::State;
    type Arguments = A::Arguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        marked(self.0.pre_start(myself, args)).await
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        marked(self.0.post_start(myself, state)).await
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        marked(self.0.handle(myself, message, state)).await
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        message: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        marked(self.0.handle_supervisor_evt(myself, message, state)).await
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        marked(self.0.post_stop(myself, state)).await
    }
}

/// The message of a caught panic (`(non-string panic)` when it has none).
pub fn message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string panic)".to_owned())
}
