//! Where the cron actor reads the wall clock.
//!
//! Timers always run on tokio time; the clock only tells the wall time, so
//! that schedules (which are wall-clock rules) can be turned into tokio
//! deadlines. [`TokioClock`] derives the wall time from tokio time, so
//! tests under `#[tokio::test(start_paused = true)]` move both together
//! with `tokio::time::advance` or auto-advance.

use chrono::{DateTime, TimeDelta, Utc};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// The current wall time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock (`Utc::now()`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A wall clock anchored at a given time that advances with
/// `tokio::time::Instant`: paused-clock tests drive it with tokio's
/// `advance` and auto-advance.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    anchor: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `anchor` now (at the current tokio instant).
    pub fn starting_at(anchor: DateTime<Utc>) -> Self {
        Self {
            anchor,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = TimeDelta::from_std(self.start.elapsed()).unwrap_or(TimeDelta::MAX);
        self.anchor
            .checked_add_signed(elapsed)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}
