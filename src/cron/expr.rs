//! The crontab grammar, checked field by field before `croner` sees it.
//!
//! `croner` accepts more than crontab (`L`, `W`, `#`, `?`, a `+` AND mode)
//! and reports errors without naming the field. This front end accepts
//! exactly the crontab grammar, names the field and value in every error,
//! and hands `croner` a canonical seven-field text of plain numbers
//! (seconds first, year last), so month and day names never reach its
//! text substitution.
//!
//! Grammar of a field: `*`, or a comma-separated list of items; an item is
//! `N`, `A-B`, `*/S` or `A-B/S`. Months and days of the week also take
//! three-letter English names (`jan`, `mon`; any case). Day of week is 0-7,
//! where both 0 and 7 are Sunday (`fri-sun` is Friday to Sunday).
//!
//! Day of month and day of week: as in Vixie cron, when both are restricted
//! a day matches if EITHER matches; when either field starts with `*` the
//! two are AND-ed (so `*` in one of them leaves the other in charge). Vixie
//! decides this on the first character, so a stepped star such as `*/2`
//! counts as unrestricted; this front end does the same.

/// What `croner` is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Canonical {
    /// Seven fields of plain numbers: second minute hour dom month dow year.
    pub(crate) text: String,
    /// Whether day of month and day of week are AND-ed (Vixie: either field
    /// starts with `*`) rather than OR-ed.
    pub(crate) dom_and_dow: bool,
    /// Whether a year field limits the years (so the schedule ends).
    pub(crate) year_restricted: bool,
}

/// One field of an expression: its name in errors and its bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    label: &'static str,
    pub(crate) min: u32,
    pub(crate) max: u32,
    /// Three-letter names, the first standing for `min`.
    names: &'static [&'static str],
}

const SECOND: Field = Field {
    label: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: Field = Field {
    label: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    label: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: Field = Field {
    label: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    label: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DAY_OF_WEEK: Field = Field {
    label: "day of week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};
/// Years a seven-field expression may name (Quartz's range).
pub(crate) const YEAR: Field = Field {
    label: "year",
    min: 1970,
    max: 2099,
    names: &[],
};

/// The longest expression accepted, in bytes.
pub(crate) const MAX_LEN: usize = 1024;

const FIELD_COUNT_HELP: &str = "expected 5 fields (minute hour day-of-month month day-of-week), \
     6 (seconds first) or 7 (seconds first, year last)";

/// Checks `expr` and returns the canonical form `croner` parses, or what is
/// wrong with it (the caller quotes the expression).
pub(crate) fn canonical(expr: &str) -> Result<Canonical, String> {
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return Err("the expression is empty".into());
    }
    if trimmed.len() > MAX_LEN {
        return Err(format!(
            "the expression is {} bytes long; at most {MAX_LEN} are accepted",
            trimmed.len()
        ));
    }
    let expanded;
    let text = if trimmed.starts_with('@') {
        expanded = expand_macro(trimmed)?;
        expanded
    } else {
        trimmed
    };
    let parts: Vec<&str> = text.split_whitespace().collect();
    let (fields, with_seconds, with_year): (&[Field], bool, bool) = match parts.len() {
        5 => (
            &[MINUTE, HOUR, DAY_OF_MONTH, MONTH, DAY_OF_WEEK],
            false,
            false,
        ),
        6 => (
            &[SECOND, MINUTE, HOUR, DAY_OF_MONTH, MONTH, DAY_OF_WEEK],
            true,
            false,
        ),
        7 => (
            &[SECOND, MINUTE, HOUR, DAY_OF_MONTH, MONTH, DAY_OF_WEEK, YEAR],
            true,
            true,
        ),
        n => return Err(format!("{FIELD_COUNT_HELP}, got {n}")),
    };
    let mut out: Vec<String> = Vec::with_capacity(7);
    if !with_seconds {
        out.push("0".into());
    }
    for (part, field) in parts.iter().zip(fields) {
        out.push(canonical_field(part, *field)?);
    }
    if !with_year {
        out.push("*".into());
    }
    let first = usize::from(with_seconds);
    let (dom, dow) = (parts[first + 2], parts[first + 4]);
    let dom_and_dow = dom.starts_with('*') || dow.starts_with('*');
    let year_restricted = out.last().is_some_and(|y| y != "*");
    Ok(Canonical {
        text: out.join(" "),
        dom_and_dow,
        year_restricted,
    })
}

/// The five-field expression a macro stands for.
fn expand_macro(text: &str) -> Result<&'static str, String> {
    if text.split_whitespace().nth(1).is_some() {
        return Err("a macro such as @daily stands alone, with no fields after it".into());
    }
    Ok(match text.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        "@reboot" => return Err("@reboot is not supported: it names no time".into()),
        _ => {
            return Err(format!(
                "unknown macro {text:?} (expected @yearly, @annually, @monthly, @weekly, \
                 @daily, @midnight or @hourly)"
            ));
        }
    })
}

/// One field in canonical form.
fn canonical_field(text: &str, field: Field) -> Result<String, String> {
    let label = field.label;
    if text == "*" {
        return Ok("*".into());
    }
    let mut items = Vec::new();
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("{label} field {text:?} has an empty list item"));
        }
        items.push(canonical_item(item, field)?);
    }
    Ok(items.join(","))
}

/// One list item in canonical form: `N`, `A-B`, `*/S` or `A-B/S`.
fn canonical_item(item: &str, field: Field) -> Result<String, String> {
    let label = field.label;
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, Some(parse_step(step, item, field)?)),
        None => (item, None),
    };
    let (start, end) = if range == "*" {
        if step.is_none() {
            return Err(format!(
                "{label} field has \"*\" inside a list ({item:?}); use \"*\" alone"
            ));
        }
        (field.min, field.max)
    } else if let Some((a, b)) = range.split_once('-') {
        if a.is_empty() || b.is_empty() {
            return Err(format!(
                "{label} {item:?} is not a valid range: write START-END (no negative numbers)"
            ));
        }
        let start = value(a, field, false)?;
        let end = value(b, field, true)?;
        if start > end {
            return Err(format!(
                "{label} range {range} is backwards: write the smaller value first"
            ));
        }
        (start, end)
    } else {
        let v = value(range, field, false)?;
        if let Some(s) = step {
            return Err(format!(
                "{label} {item:?} needs a range before the step: write {v}-{}/{s} or */{s}",
                field.max
            ));
        }
        (v, v)
    };
    Ok(match step {
        // croner's `*/S` starts at its own minimum, which for years is 1.
        Some(s) if range == "*" && field.label != YEAR.label => format!("*/{s}"),
        Some(s) => format!("{start}-{end}/{s}"),
        None if start == end => start.to_string(),
        None => format!("{start}-{end}"),
    })
}

/// A step: 1 up to the field's span.
fn parse_step(step: &str, item: &str, field: Field) -> Result<u32, String> {
    let label = field.label;
    let span = field.max - field.min + 1;
    if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{label} step {step:?} in {item:?} is not a number"));
    }
    match step.parse::<u32>() {
        Ok(0) => Err(format!("{label} step 0 in {item:?} must be at least 1")),
        Ok(s) if s <= span => Ok(s),
        _ => Err(format!(
            "{label} step {step} in {item:?} is out of range 1-{span}"
        )),
    }
}

/// A number or a name, checked against the field's bounds.
fn value(token: &str, field: Field, range_end: bool) -> Result<u32, String> {
    let label = field.label;
    let (min, max) = (field.min, field.max);
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
        return match token.parse::<u32>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(format!("{label} {token} is out of range {min}-{max}")),
        };
    }
    if let Some(i) = field
        .names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(token))
    {
        let v = field.min + i as u32;
        // `fri-sun`: Sunday closing a range is 7.
        return Ok(if range_end && field.label == DAY_OF_WEEK.label && v == 0 {
            7
        } else {
            v
        });
    }
    Err(match field.names.first() {
        Some(first) => format!(
            "{label} {token:?} is not a number ({min}-{max}) or a name ({first}-{})",
            field.names[field.names.len() - 1]
        ),
        None => format!("{label} {token:?} is not a number ({min}-{max})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(expr: &str) -> String {
        canonical(expr).unwrap().text
    }

    #[test]
    fn five_fields_get_a_zero_second_and_any_year() {
        assert_eq!(text("*/5 * * * *"), "0 */5 * * * * *");
    }

    #[test]
    fn names_become_numbers_field_by_field() {
        assert_eq!(text("0 0 * jan-mar mon,fri"), "0 0 0 * 1-3 1,5 *");
        assert_eq!(text("0 0 * * FRI-SUN"), "0 0 0 * * 5-7 *");
    }

    #[test]
    fn macros_expand() {
        assert_eq!(text("@hourly"), "0 0 * * * * *");
        assert_eq!(text("@midnight"), text("@daily"));
        assert_eq!(text("@annually"), text("@yearly"));
    }

    #[test]
    fn year_steps_start_at_the_first_year() {
        assert_eq!(text("0 0 0 1 1 * */10"), "0 0 0 1 1 * 1970-2099/10");
    }

    #[test]
    fn dom_and_dow_mode_follows_vixie() {
        assert!(!canonical("0 0 1 * 1").unwrap().dom_and_dow);
        assert!(canonical("0 0 */2 * 1").unwrap().dom_and_dow);
        assert!(canonical("0 0 1 * *").unwrap().dom_and_dow);
    }
}
