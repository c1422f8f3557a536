//! A panic hook that keeps a restart storm cheap.
//!
//! A supervised actor that panics is a failed child like any other: ractor
//! catches the panic and arbor restarts the child. But before unwinding
//! starts, Rust calls the panic hook, and the default hook with
//! `RUST_BACKTRACE=1` captures and prints a backtrace: about 360 µs per panic
//! on these machines, which a crash loop of thousands of children would pay
//! each time.
//!
//! [`install`] wraps the current hook with a token bucket: the first
//! [`BURST`] panics, and then one per [`REFILL`], go to the previous hook in
//! full (message, location, backtrace); the others are only counted, which
//! costs a few atomic operations. The next full report says how many were
//! left out, and [`stats`] reports the totals. The panic message itself is
//! never lost for supervised children: ractor turns it into the child's exit
//! reason, which arbor records and publishes.
//!
//! Supervisors install it when they start. Set `ARBOR_PANIC_HOOK=default` to
//! keep the standard hook untouched (every panic reported in full).

use std::{
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Panics reported in full before rate limiting starts.
pub const BURST: u32 = 5;
/// One more full report is allowed per this interval.
pub const REFILL: Duration = Duration::from_secs(1);

static INSTALLED: OnceLock<bool> = OnceLock::new();
static TOTAL: AtomicU64 = AtomicU64::new(0);
static REPORTED: AtomicU64 = AtomicU64::new(0);
static UNREPORTED: AtomicU64 = AtomicU64::new(0);
static BUCKET: Mutex<Option<(f64, Instant)>> = Mutex::new(None);

/// Panic counts since the hook was installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PanicStats {
    /// Every panic seen by the hook.
    pub total: u64,
    /// Panics passed to the previous hook (printed in full).
    pub reported: u64,
    /// Panics only counted.
    pub suppressed: u64,
}

/// Installs the rate-limited hook once per process (later calls do nothing).
/// Returns false when `ARBOR_PANIC_HOOK=default` asked to keep the standard hook.
pub fn install() -> bool {
    *INSTALLED.get_or_init(|| {
        if std::env::var("ARBOR_PANIC_HOOK").is_ok_and(|v| v == "default") {
            return false;
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            TOTAL.fetch_add(1, Ordering::Relaxed);
            if take_token() {
                let left_out = UNREPORTED.swap(0, Ordering::Relaxed);
                if left_out > 0 {
                    eprintln!(
                        "arbor: {left_out} panic report(s) suppressed by rate limiting \
                         (ARBOR_PANIC_HOOK=default reports every panic)"
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
