//! Field checks shared by every spec that carries a command and an
//! environment (containers, jobs, services), so they all refuse the same
//! values with the same words.

use std::{collections::BTreeMap, time::Duration};

use super::error::SpecError;

/// argv at `field`: a non-empty program, no NUL bytes anywhere. (Whether an
/// empty argv is allowed is the caller's rule.)
pub(crate) fn argv(errors: &mut Vec<SpecError>, field: &str, argv: &[String]) {
    if argv.first().is_some_and(|p| p.is_empty()) {
        errors.push(SpecError::new(
            format!("{field}[0]"),
            "\"\"",
            "program must not be empty",
        ));
    }
    for (i, arg) in argv.iter().enumerate() {
        if arg.contains('\0') {
            errors.push(SpecError::new(
                format!("{field}[{i}]"),
                format!("{arg:?}"),
                "must not contain NUL bytes",
            ));
        }
    }
}

/// Environment variables at `env.KEY`: names non-empty without `=` or NUL,
/// values without NUL.
pub(crate) fn env(errors: &mut Vec<SpecError>, env: &BTreeMap<String, String>) {
    for (key, value) in env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            errors.push(SpecError::new(
                format!("env.{key}"),
                format!("{key:?}"),
                "variable names must be non-empty without '=' or NUL",
            ));
        }
        if value.contains('\0') {
            errors.push(SpecError::new(
                format!("env.{key}"),
                format!("{value:?}"),
                "must not contain NUL bytes",
            ));
        }
    }
}

/// The longest duration a spec accepts anywhere (ten years): far past any
/// real grace, deadline or delay, and far from the end of the clock, so
/// `now + d` never overflows.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A duration at `field` no longer than [`MAX_DURATION`].
pub(crate) fn duration(errors: &mut Vec<SpecError>, field: &str, d: Duration) {
    if d > MAX_DURATION {
        errors.push(SpecError::new(
            field,
            super::fmt_duration(d),
            "must be at most 10 years",
        ));
    }
}
