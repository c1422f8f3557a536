//! A schedule as the user writes it ([`ScheduleSpec`]) and as the cron actor
//! reports it ([`ScheduleInfo`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{CronError, CronSchedule};

/// The longest `jitter` or `starting_deadline` accepted.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// One schedule: run `job` whenever `schedule` says.
///
/// ```
/// let spec: arbor::ScheduleSpec = serde_json::from_value(serde_json::json!({
///     "job": "backup",
///     "schedule": "30 2 * * *",
///     "time_zone": "Europe/Berlin",
///     "starting_deadline": "10m",
///     "jitter": "30s",
/// }))
/// .unwrap();
/// assert_eq!(spec.starting_deadline, Some(std::time::Duration::from_secs(600)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// The job to trigger; one schedule per job.
    pub job: String,
    /// The cron expression (5, 6 or 7 fields, or a macro such as `@daily`).
    pub schedule: String,
    /// IANA time zone the expression is read in (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// A run started later than this after its time is skipped; `None`
    /// starts missed runs however late (only the most recent one).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub starting_deadline: Option<Duration>,
    /// While true, nothing fires.
    #[serde(default)]
    pub suspend: bool,
    /// Spread runs: each job fires a fixed offset in `[0, jitter)` after
    /// the scheduled time, the same offset every time (see
    /// [`jitter_offset`](super::jitter_offset)).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub jitter: Option<Duration>,
    /// The last scheduled time that ran before the node stopped (from the
    /// executor's durable history); missed runs after it are caught up by
    /// the missed-run rule. `None`: the schedule starts from now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<DateTime<Utc>>,
}

impl ScheduleSpec {
    /// A schedule for `job`, in UTC, with no deadline, jitter or history.
    pub fn new(job: impl Into<String>, schedule: impl Into<String>) -> Self {
        Self {
            job: job.into(),
            schedule: schedule.into(),
            time_zone: None,
            starting_deadline: None,
            suspend: false,
            jitter: None,
            last_run: None,
        }
    }

    /// Reads the expression in `zone`.
    pub fn time_zone(mut self, zone: impl Into<String>) -> Self {
        self.time_zone = Some(zone.into());
        self
    }

    /// Skips runs that would start later than `deadline`.
    pub fn starting_deadline(mut self, deadline: Duration) -> Self {
        self.starting_deadline = Some(deadline);
        self
    }

    /// Spreads runs by a per-job offset in `[0, jitter)`.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = Some(jitter);
        self
    }

    /// Starts suspended.
    pub fn suspended(mut self) -> Self {
        self.suspend = true;
        self
    }

    /// The last scheduled time that ran.
    pub fn last_run(mut self, at: DateTime<Utc>) -> Self {
        self.last_run = Some(at);
        self
    }

    /// Checks every field and parses the expression.
    pub fn validate(&self) -> Result<CronSchedule, CronError> {
        let spec_error = |field, reason: String| CronError::Spec {
            job: self.job.clone(),
            field,
            reason,
        };
        if self.job.trim().is_empty() {
            return Err(spec_error("job", "must not be empty".into()));
        }
        if self.starting_deadline == Some(Duration::ZERO) {
            return Err(spec_error(
                "starting_deadline",
                "must be greater than zero (leave it out to start missed runs however late)".into(),
            ));
        }
        for (field, d) in [
            ("starting_deadline", self.starting_deadline),
            ("jitter", self.jitter),
        ] {
            if let Some(d) = d.filter(|d| *d > MAX_DURATION) {
                return Err(spec_error(
                    field,
                    format!(
                        "{} is longer than the maximum of 366 days",
                        humantime::format_duration(d)
                    ),
                ));
            }
        }
        CronSchedule::parse(&self.schedule, self.time_zone.as_deref())
    }
}

/// What the cron actor knows of one schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleInfo {
    /// The job.
    pub job: String,
    /// The expression as written.
    pub schedule: String,
    /// The IANA zone it is read in (`UTC` by default).
    pub time_zone: String,
    /// The next scheduled time (it fires `jitter_offset` later); `None`
    /// while suspended or when it never fires again.
    pub next_run: Option<DateTime<Utc>>,
    /// The last scheduled time that ran.
    pub last_run: Option<DateTime<Utc>>,
    /// Whether it is suspended.
    pub suspended: bool,
    /// Runs skipped since the schedule was added (missed, or past the
    /// starting deadline).
    pub skipped_total: u64,
    /// This job's fixed delay after each scheduled time.
    #[serde(with = "humantime_serde")]
    pub jitter_offset: Duration,
}
