//! Cron for the node agent: schedules -> triggers.
//!
//! [`CronSchedule`] parses an expression and answers "when next?";
//! the [cron actor](crate::actors::cron_actor) owns every schedule of a
//! node and calls a [`CronTarget`] with a [`CronFire`] for each run, driven
//! by a single tokio timer. [`CronRef`] is its typed handle.
//!
//! # Expressions
//!
//! - 5 fields, standard crontab: `minute hour day-of-month month day-of-week`.
//!   Each field is `*` or a list of `N`, `A-B`, `*/S`, `A-B/S`. Months and
//!   days of the week also take names (`jan`, `mon`, any case). Day of week
//!   0 and 7 are both Sunday.
//! - Day of month and day of week, as in Vixie cron: when both are
//!   restricted, a day matches if EITHER matches (`0 12 1 * 1` runs on the
//!   1st and on every Monday); when either starts with `*` they are AND-ed,
//!   which leaves the other in charge. Like Vixie, a stepped star (`*/2`)
//!   counts as `*` here.
//! - Macros: `@yearly` = `@annually`, `@monthly`, `@weekly`, `@daily` =
//!   `@midnight`, `@hourly`. (`@reboot` names no time and is refused.)
//! - 6 fields: a leading seconds field. 7 fields: leading seconds and a
//!   trailing year (1970-2099).
//! - Not accepted: Quartz/croner extensions (`L`, `W`, `#`, `?`) and
//!   `N/S` without a range (write `N-59/S`).
//!
//! Evaluation is done by the `croner` crate on `chrono` and `chrono-tz`
//! types; this module only checks the grammar (to name the field and value
//! in errors) and hands croner a canonical form.
//!
//! # Time zones and daylight saving time
//!
//! An expression is read on the wall clock of its IANA zone (UTC by
//! default). When the clock changes, the rules are croner's, which follow
//! Vixie cron:
//!
//! - **Spring forward (skipped hour).** A *fixed-time* job (a single value
//!   in each of second, minute and hour, e.g. `30 2 * * *`) whose time does
//!   not exist that day runs once, at the first instant after the jump
//!   (03:00 in Europe/Berlin on 2026-03-29). Interval and wildcard jobs
//!   (`*/15 * * * *`, `0 * * * *`, `0 1-3 * * *`) simply have no runs at
//!   wall times that do not exist.
//! - **Fall back (repeated hour).** A fixed-time job runs once, in the first
//!   pass (02:30 CEST, not again at 02:30 CET). Interval and wildcard jobs
//!   run in both passes, at every real instant whose wall time matches, so
//!   `*/30 * * * *` keeps firing every 30 real minutes.
//!
//! # Errors
//!
//! [`CronError`]: every message quotes the expression (and the zone for a
//! zone error) and names what is wrong, e.g.
//! `invalid cron expression "61 * * * *": minute 61 is out of range 0-59`.
//! Parsing never panics.

mod clock;
mod error;
mod expr;
mod handle;
mod jitter;
mod schedule;
mod spec;
pub(crate) mod table;
mod target;

pub use clock::{Clock, SystemClock, TokioClock};
pub use error::CronError;
pub use handle::CronRef;
pub use jitter::{fnv1a64, jitter_offset};
pub use schedule::CronSchedule;
pub use spec::{MAX_DURATION, ScheduleInfo, ScheduleSpec};
pub use target::{CronFire, CronTarget, FireRecorder};
