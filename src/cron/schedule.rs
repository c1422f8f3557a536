//! A parsed cron expression in a time zone: when does it fire next?

use std::{fmt, str::FromStr, sync::OnceLock};

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::{
    Cron, CronComponent,
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
    /// The final run, when a year field ends the schedule: past it,
    /// `next_after` answers at once instead of searching to croner's limit
    /// (year 5000).
    last: Option<DateTime<Utc>>,
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
        let parser = CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Required)
            .dom_and_dow(canonical.dom_and_dow)
            .build();
        let croner_error =
            |e: croner::errors::CronError| CronError::expression(expr, e.to_string());
        let cron = parser.parse(&canonical.text).map_err(croner_error)?;
        // A day of month that the chosen months never have (`0 0 30 2 *`),
        // searched for within 1970-2099 so that a refusal stays cheap:
        // every combination of day, month and weekday that ever occurs does
        // within those years (the calendar repeats every 28 years there).
        let mut bounded = cron.clone();
        if let Some(years) = bounded_years().filter(|_| !canonical.year_restricted) {
            bounded.pattern.years = years.clone();
        }
        let epoch = Utc.timestamp_opt(0, 0).single().unwrap_or_default();
        if bounded.find_next_occurrence(&epoch, true).is_err() {
            return Err(CronError::expression(
                expr,
                "it matches no date: the chosen days of month never occur in the chosen \
                 months (and years)",
            ));
        }
        // Every local time of year 2099 is before 2100-01-02 UTC.
        let last = canonical
            .year_restricted
            .then(|| Utc.with_ymd_and_hms(2100, 1, 2, 0, 0, 0).single())
            .flatten()
            .and_then(|end| {
                cron.find_previous_occurrence(&end.with_timezone(&zone), true)
                    .ok()
            })
            .map(|t| t.with_timezone(&Utc));
        Ok(Self {
            expr: expr.to_owned(),
            zone,
            cron,
            last,
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
        if self.last.is_some_and(|last| after >= last) {
            return None;
        }
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

/// A year component holding 1970-2099, parsed once.
fn bounded_years() -> Option<&'static CronComponent> {
    static YEARS: OnceLock<Option<CronComponent>> = OnceLock::new();
    YEARS
        .get_or_init(|| {
            let text = format!("0 0 0 * * * {}-{}", expr::YEAR.min, expr::YEAR.max);
            CronParser::builder()
                .seconds(Seconds::Required)
                .year(Year::Required)
                .build()
                .parse(&text)
                .ok()
                .map(|c| c.pattern.years)
        })
        .as_ref()
}
