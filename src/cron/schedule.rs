//! A parsed cron expression in a time zone: when does it fire next?

use std::{fmt, str::FromStr};

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::{
    Cron,
    parser::{CronParser, Seconds, Year},
};

use super::{CronError, error::quotable, expr};

/// A cron expression bound to a time zone.
///
/// Times are computed on the zone's wall clock by `croner`, then returned
/// as UTC instants. See the [module docs](super) for the grammar and the
/// DST rules.
#[derive(Clone)]
pub struct CronSchedule {
    expr: String,
    zone: Tz,
    cron: Cron,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CronSchedule")
            .field("expr", &self.expr)
            .field("time_zone", &self.zone.name())
            .finish()
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.expr, self.zone.name())
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr && self.zone == other.zone
    }
}

impl Eq for CronSchedule {}

impl CronSchedule {
    /// Parses a 5-field crontab expression, a macro (`@daily`, ...), or a
    /// 6-field (leading seconds) or 7-field (leading seconds, trailing year)
    /// expression. `time_zone` is an IANA name such as `Europe/Berlin`
    /// (default UTC). Never panics; every error quotes the expression.
    pub fn parse(expr: &str, time_zone: Option<&str>) -> Result<Self, CronError> {
        let canonical = expr::canonical(expr).map_err(|r| CronError::expression(expr, r))?;
        let zone = match time_zone {
            None => Tz::UTC,
            Some(name) => Tz::from_str(name).map_err(|_| CronError::TimeZone {
                expr: quotable(expr),
                zone: quotable(name),
                reason: "not an IANA time zone name (such as UTC, Europe/Berlin or \
                         America/New_York)"
                    .into(),
            })?,
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Required)
            .dom_and_dow(canonical.dom_and_dow)
            .build()
            .parse(&canonical.text)
            .map_err(|e| CronError::expression(expr, e.to_string()))?;
        // A day of month that the chosen months never have (`0 0 30 2 *`).
        let epoch = Utc.timestamp_opt(0, 0).single().unwrap_or_default();
        if cron.find_next_occurrence(&epoch, true).is_err() {
            return Err(CronError::expression(
                expr,
                "it matches no date: the chosen days of month never occur in the chosen \
                 months (and years)",
            ));
        }
        Ok(Self {
            expr: expr.to_owned(),
            zone,
            cron,
        })
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expr
    }

    /// The IANA name of its time zone (`UTC` by default).
    pub fn time_zone(&self) -> &'static str {
        self.zone.name()
    }

    /// The first time it fires strictly after `after`, or `None` if it never
    /// fires again (a year field in the past, or past croner's year 5000).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
            // croner works in whole seconds; keep "strictly after" exact.
            .filter(|t| *t > after)
    }

    /// The last time it fired at or before `at`, if any.
    pub fn last_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = at.with_timezone(&self.zone);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
            .filter(|t| *t <= at)
    }

    /// The times it fires after `after`, in order.
    pub fn upcoming(&self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        std::iter::successors(self.next_after(after), move |t| self.next_after(*t))
    }
}
