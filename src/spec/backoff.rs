//! Capped exponential back-off with deterministic jitter.
//!
//! `delay(n) = min(max, initial * multiplier^n)`, plus a jitter of up to
//! `jitter * delay` that depends only on the child and the step, so the same
//! child at the same step always waits the same time (tests and replays see
//! the same schedule) while different children spread out.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::SpecError;

/// How long a crash-looping child waits before its next restart.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffPolicy {
    /// Delay of the first back-off step (default 10 s).
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// Growth factor per step (default 2).
    pub multiplier: f64,
    /// Cap on the delay before jitter (default 300 s).
    #[serde(with = "humantime_serde")]
    pub max: Duration,
    /// Fraction of the delay added as deterministic jitter, 0..=1 (default 0.1).
    pub jitter: f64,
    /// A child that ran this long without crashing starts again at step 0
    /// (default 600 s).
    #[serde(with = "humantime_serde")]
    pub reset_after: Duration,
    /// Give up after this many back-off rounds in a row (crash loops): the
    /// child then ends `failed` and is not restarted until an operator
    /// restarts it (default: never give up, as kubelet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub give_up_after: Option<u32>,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(10),
            multiplier: 2.0,
            max: Duration::from_secs(300),
            jitter: 0.1,
            reset_after: Duration::from_secs(600),
            give_up_after: None,
        }
    }
}

impl BackoffPolicy {
    /// The delay before jitter at `step` (0-based): `min(max, initial * multiplier^step)`.
    pub fn base_delay(&self, step: u32) -> Duration {
        let initial = self.initial.as_secs_f64();
        let factor = self.multiplier.powi(step.min(i32::MAX as u32) as i32);
        let secs = (initial * factor).min(self.max.as_secs_f64());
        if secs.is_finite() && secs >= 0.0 {
            Duration::try_from_secs_f64(secs).unwrap_or(self.max)
        } else {
            self.max
        }
    }

    /// The full delay at `step` for the child named `key`: the base delay plus
    /// `jitter * base * u` where `u` in `[0, 1)` is a hash of `(key, step)`,
    /// rounded down to whole milliseconds (the resolution of tokio's timers,
    /// so the announced delay is the one actually waited).
    pub fn delay(&self, step: u32, key: &str) -> Duration {
        let base = self.base_delay(step);
        let jitter = if self.jitter > 0.0 {
            base.mul_f64(self.jitter.min(1.0) * unit_hash(key, step))
        } else {
            Duration::ZERO
        };
        let total = base.saturating_add(jitter);
        Duration::from_millis(u64::try_from(total.as_millis()).unwrap_or(u64::MAX))
    }

    /// Checks the fields; errors are named relative to this policy (`max`, ...).
    pub fn validate(&self) -> Vec<SpecError> {
        let mut errors = Vec::new();
        if self.initial.is_zero() {
            errors.push(SpecError::new("initial", fmt(self.initial), "must be > 0"));
        }
        if self.max < self.initial {
            errors.push(SpecError::new(
                "max",
                fmt(self.max),
                format!("must be >= initial ({})", fmt(self.initial)),
            ));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            errors.push(SpecError::new(
                "multiplier",
                self.multiplier,
                "must be >= 1",
            ));
        }
        if !(self.jitter.is_finite() && (0.0..=1.0).contains(&self.jitter)) {
            errors.push(SpecError::new(
                "jitter",
                self.jitter,
                "must be between 0 and 1",
            ));
        }
        errors
    }
}

/// A duration the way users write it (`10s`, `5m`).
pub(crate) fn fmt(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A value in `[0, 1)` that depends only on `key` and `step` (FNV-1a, then splitmix64).
fn unit_hash(key: &str, step: u32) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain(step.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_delay_doubles_and_caps() {
        let p = BackoffPolicy::default();
        let secs: Vec<u64> = (0..7).map(|n| p.base_delay(n).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(p.base_delay(u32::MAX), p.max);
    }

    #[test]
    fn jitter_is_deterministic_and_bounded() {
        let p = BackoffPolicy::default();
        for step in 0..10 {
            let a = p.delay(step, "web-0");
            assert_eq!(a, p.delay(step, "web-0"));
            let base = p.base_delay(step);
            assert!(
                a >= base && a <= base + base.mul_f64(0.1),
                "{a:?} vs {base:?}"
            );
        }
        let spread: std::collections::BTreeSet<_> =
            (0..20).map(|i| p.delay(0, &format!("web-{i}"))).collect();
        assert!(
            spread.len() > 10,
            "jitter should spread children: {spread:?}"
        );
    }
}
