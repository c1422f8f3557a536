//! The cron module's error: every message quotes what the user wrote.

/// What went wrong with a cron expression, a schedule or a call to the cron
/// actor. Each message quotes the expression (and the zone, for zone errors)
/// and names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CronError {
    /// The expression does not parse, or names values out of range.
    #[error("invalid cron expression {expr:?}: {reason}")]
    Expression {
        /// The expression as written.
        expr: String,
        /// What is wrong with it, e.g. `minute 61 is out of range 0-59`.
        reason: String,
    },
    /// The time zone is not an IANA time zone name.
    #[error("invalid time zone {zone:?} for cron expression {expr:?}: {reason}")]
    TimeZone {
        /// The expression it was given with.
        expr: String,
        /// The zone as written.
        zone: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A field of a schedule spec other than the expression is invalid.
    #[error("invalid cron schedule {job:?}: {field} {reason}")]
    Spec {
        /// The job the spec is for.
        job: String,
        /// The field, e.g. `jitter`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// No schedule has this job name.
    #[error("failed to find cron job {0:?}: no such schedule")]
    NotFound(String),
    /// The cron actor could not be spawned.
    #[error("failed to start the cron actor: {0}")]
    Spawn(String),
    /// The cron actor is not running (it stopped or failed).
    #[error("failed to reach the cron actor: it is not running")]
    Unavailable,
}

/// The longest expression quoted in full in an error.
const QUOTE_MAX: usize = 200;

impl CronError {
    pub(crate) fn expression(expr: &str, reason: impl Into<String>) -> Self {
        Self::Expression {
            expr: quotable(expr),
            reason: reason.into(),
        }
    }
}

/// `text`, cut to its first [`QUOTE_MAX`] bytes (on a character boundary)
/// with `...` appended when longer.
pub(crate) fn quotable(text: &str) -> String {
    if text.len() <= QUOTE_MAX {
        return text.to_owned();
    }
    let mut end = QUOTE_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}
