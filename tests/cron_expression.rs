//! Crontab semantics of `CronSchedule`: fields, names, macros, the 6- and
//! 7-field forms, Vixie's day-of-month/day-of-week rule, and errors.

use arbor::{CronError, CronSchedule};
use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc, Weekday};

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

fn parse(expr: &str) -> CronSchedule {
    CronSchedule::parse(expr, None).unwrap_or_else(|e| panic!("{expr}: {e}"))
}

fn first(expr: &str, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    parse(expr).upcoming(after).take(n).collect()
}

fn error(expr: &str) -> String {
    CronSchedule::parse(expr, None)
        .expect_err(&format!("{expr:?} should be rejected"))
        .to_string()
}

#[test]
fn every_five_minutes_fires_on_multiples_of_five() {
    let times = first("*/5 * * * *", utc(2026, 1, 10, 11, 58, 12), 4);
    assert_eq!(
        times,
        [
            utc(2026, 1, 10, 12, 0, 0),
            utc(2026, 1, 10, 12, 5, 0),
            utc(2026, 1, 10, 12, 10, 0),
            utc(2026, 1, 10, 12, 15, 0),
        ]
    );
}

#[test]
fn next_after_is_strictly_after() {
    let s = parse("*/5 * * * *");
    let t = utc(2026, 1, 10, 12, 5, 0);
    assert_eq!(s.next_after(t), Some(utc(2026, 1, 10, 12, 10, 0)));
    let just_before = t - chrono::TimeDelta::milliseconds(1);
    assert_eq!(s.next_after(just_before), Some(t));
    let just_after = t + chrono::TimeDelta::milliseconds(1);
    assert_eq!(s.next_after(just_after), Some(utc(2026, 1, 10, 12, 10, 0)));
}

#[test]
fn sunday_is_zero_or_seven() {
    let after = utc(2026, 1, 1, 0, 0, 0);
    let zero = first("0 0 * * 0", after, 5);
    assert!(zero.iter().all(|t| t.weekday() == Weekday::Sun), "{zero:?}");
    assert_eq!(zero[0], utc(2026, 1, 4, 0, 0, 0));
    assert_eq!(first("0 0 * * 7", after, 5), zero);
    assert_eq!(first("0 0 * * sun", after, 5), zero);
    assert_eq!(first("0 0 * * SUN", after, 5), zero);
}

#[test]
fn a_range_ending_on_sunday_includes_it() {
    let after = utc(2026, 1, 5, 0, 0, 0); // a Monday
    let days: Vec<Weekday> = first("0 0 * * fri-sun", after, 3)
        .iter()
        .map(|t| t.weekday())
        .collect();
    assert_eq!(days, [Weekday::Fri, Weekday::Sat, Weekday::Sun]);
    assert_eq!(
        first("0 0 * * 5-7", after, 3),
        first("0 0 * * fri-sun", after, 3)
    );
}

#[test]
fn month_and_day_names_work_in_any_case() {
    let after = utc(2026, 1, 1, 0, 0, 0);
    assert_eq!(
        first("0 9 * Mar-may MON-wed", after, 10),
        first("0 9 * 3-5 1-3", after, 10)
    );
    assert_eq!(first("0 9 * mar * ", after, 1)[0], utc(2026, 3, 1, 9, 0, 0));
}

#[test]
fn lists_ranges_and_steps_combine() {
    let after = utc(2026, 1, 10, 0, 0, 0);
    let times = first("0,30 8-10/2,17 * * *", after, 6);
    let hm: Vec<(u32, u32)> = times.iter().map(|t| (t.hour(), t.minute())).collect();
    assert_eq!(hm, [(8, 0), (8, 30), (10, 0), (10, 30), (17, 0), (17, 30)]);
}

#[test]
fn midnight_on_sundays_matches_weekly() {
    let after = utc(2026, 1, 1, 0, 0, 0);
    assert_eq!(first("0 0 * * 0", after, 4), first("@weekly", after, 4));
}

#[test]
fn first_of_the_month_or_monday_when_both_are_restricted() {
    // Vixie: both day fields restricted, so either one matching is enough.
    let after = utc(2026, 1, 31, 13, 0, 0); // Saturday
    let times = first("0 12 1 * 1", after, 6);
    assert_eq!(
        times,
        [
            utc(2026, 2, 1, 12, 0, 0), // Sunday the 1st
            utc(2026, 2, 2, 12, 0, 0), // Monday
            utc(2026, 2, 9, 12, 0, 0),
            utc(2026, 2, 16, 12, 0, 0),
            utc(2026, 2, 23, 12, 0, 0),
            utc(2026, 3, 1, 12, 0, 0), // Sunday the 1st
        ]
    );
}

#[test]
fn a_star_day_field_leaves_the_other_in_charge() {
    let after = utc(2026, 1, 1, 0, 0, 0);
    let mondays = first("0 12 * * 1", after, 5);
    assert!(mondays.iter().all(|t| t.weekday() == Weekday::Mon));
    let firsts = first("0 12 1 * *", after, 5);
    assert!(firsts.iter().all(|t| t.day() == 1));
}

#[test]
fn a_stepped_star_day_field_counts_as_unrestricted_as_in_vixie() {
    // Vixie sets DOM_STAR from the first character, so `*/2` AND-s:
    // odd days of the month that are also Mondays.
    let times = first("0 12 */2 * 1", utc(2026, 1, 1, 0, 0, 0), 4);
    assert!(
        times
            .iter()
            .all(|t| t.weekday() == Weekday::Mon && t.day() % 2 == 1),
        "{times:?}"
    );
}

#[test]
fn hourly_and_the_other_macros() {
    let after = utc(2026, 1, 10, 12, 30, 0);
    assert_eq!(
        first("@hourly", after, 3),
        [
            utc(2026, 1, 10, 13, 0, 0),
            utc(2026, 1, 10, 14, 0, 0),
            utc(2026, 1, 10, 15, 0, 0)
        ]
    );
    assert_eq!(first("@daily", after, 1), [utc(2026, 1, 11, 0, 0, 0)]);
    assert_eq!(first("@midnight", after, 2), first("@daily", after, 2));
    assert_eq!(first("@monthly", after, 1), [utc(2026, 2, 1, 0, 0, 0)]);
    assert_eq!(first("@yearly", after, 1), [utc(2027, 1, 1, 0, 0, 0)]);
    assert_eq!(first("@annually", after, 2), first("@yearly", after, 2));
    assert_eq!(first("@weekly", after, 1), [utc(2026, 1, 11, 0, 0, 0)]);
    assert_eq!(first("@HOURLY", after, 2), first("@hourly", after, 2));
}

#[test]
fn six_fields_put_seconds_first() {
    let after = utc(2026, 1, 10, 12, 0, 0);
    assert_eq!(
        first("*/15 * * * * *", after, 4),
        [
            utc(2026, 1, 10, 12, 0, 15),
            utc(2026, 1, 10, 12, 0, 30),
            utc(2026, 1, 10, 12, 0, 45),
            utc(2026, 1, 10, 12, 1, 0),
        ]
    );
    assert_eq!(
        first("30 0 9 * * mon", after, 1),
        [utc(2026, 1, 12, 9, 0, 30)]
    );
}

#[test]
fn seven_fields_add_a_year() {
    let after = utc(2026, 1, 10, 0, 0, 0);
    assert_eq!(
        first("0 0 12 1 jan * 2028", after, 5),
        [utc(2028, 1, 1, 12, 0, 0)]
    );
    assert_eq!(
        first("0 0 0 29 2 * 2028-2036/4", after, 5),
        [
            utc(2028, 2, 29, 0, 0, 0),
            utc(2032, 2, 29, 0, 0, 0),
            utc(2036, 2, 29, 0, 0, 0)
        ]
    );
    // A year in the past parses but never fires again.
    assert_eq!(parse("0 0 0 1 1 * 2020").next_after(after), None);
}

#[test]
fn the_schedule_remembers_its_expression_and_zone() {
    let s = CronSchedule::parse("0 9 * * *", Some("Europe/Berlin")).unwrap();
    assert_eq!(s.expression(), "0 9 * * *");
    assert_eq!(s.time_zone(), "Europe/Berlin");
    assert_eq!(parse("0 9 * * *").time_zone(), "UTC");
    assert_eq!(
        s.next_after(utc(2026, 1, 10, 0, 0, 0)),
        Some(utc(2026, 1, 10, 8, 0, 0))
    );
}

#[test]
fn errors_quote_the_expression_and_name_the_problem() {
    let cases = [
        (
            "61 * * * *",
            "invalid cron expression \"61 * * * *\": minute 61 is out of range 0-59",
        ),
        ("* 24 * * *", "hour 24 is out of range 0-23"),
        ("* * 0 * *", "day of month 0 is out of range 1-31"),
        ("* * * 13 *", "month 13 is out of range 1-12"),
        ("* * * * 8", "day of week 8 is out of range 0-7"),
        ("60 * * * * *", "second 60 is out of range 0-59"),
        ("0 0 0 1 1 * 1969", "year 1969 is out of range 1970-2099"),
        ("*/0 * * * *", "minute step 0 in \"*/0\" must be at least 1"),
        ("5-1 * * * *", "minute range 5-1 is backwards"),
        ("* * * * * * * *", "expected 5 fields"),
        ("* * * *", "got 4"),
        ("", "the expression is empty"),
        (
            "* * * foo *",
            "month \"foo\" is not a number (1-12) or a name (jan-dec)",
        ),
        ("* * * * funday", "day of week \"funday\" is not a number"),
        ("@fortnightly", "unknown macro \"@fortnightly\""),
        ("@reboot", "@reboot is not supported"),
        (
            "5/15 * * * *",
            "needs a range before the step: write 5-59/15",
        ),
        ("1,,2 * * * *", "has an empty list item"),
        ("0 0 L * *", "day of month \"L\" is not a number"),
        ("0 0 30 2 *", "it matches no date"),
    ];
    for (expr, wanted) in cases {
        let message = error(expr);
        assert!(
            message.contains(wanted),
            "{expr:?}: {message:?} does not contain {wanted:?}"
        );
        assert!(
            message.starts_with(&format!("invalid cron expression {expr:?}: ")),
            "{message:?} does not quote {expr:?}"
        );
    }
}

#[test]
fn an_invalid_time_zone_is_named_in_the_error() {
    let err = CronSchedule::parse("0 9 * * *", Some("Mars/Olympus_Mons")).unwrap_err();
    assert!(matches!(&err, CronError::TimeZone { zone, .. } if zone == "Mars/Olympus_Mons"));
    assert_eq!(
        err.to_string(),
        "invalid time zone \"Mars/Olympus_Mons\" for cron expression \"0 9 * * *\": not an \
         IANA time zone name (such as UTC, Europe/Berlin or America/New_York)"
    );
    assert!(CronSchedule::parse("0 9 * * *", Some("")).is_err());
}

#[test]
fn garbage_is_rejected_without_panicking() {
    let long_field = "1,".repeat(100_000) + "1";
    let many_fields = "* ".repeat(10_000);
    let mut garbage: Vec<String> = [
        "",
        " ",
        "\t\n",
        "*",
        "* *",
        "* * * * * * * *",
        "@",
        "@@daily",
        "@daily *",
        "*/0 * * * *",
        "5-1 * * * *",
        "99999999999999999999 * * * *",
        "4294967296 * * * *",
        "*/4294967296 * * * *",
        "*/99999999999999999999 * * * *",
        "-1 * * * *",
        "1- * * * *",
        "-5 * * * *",
        "1-2-3 * * * *",
        "*/2/3 * * * *",
        "1/ * * * *",
        "/5 * * * *",
        "*/ * * * *",
        "*-5 * * * *",
        "** * * * *",
        ", * * * *",
        "1, * * * *",
        "* * * * * ?",
        "? * * * *",
        "0 0 1W * *",
        "0 0 * * 5#2",
        "0 0 * * 5L",
        "0 0 * * +1",
        "0 0 * JANUARY *",
        "0 0 * * MONDAY",
        "0 0 * * 1-sun-2",
        "0 0 * 0 *",
        "0 0 31 4 *",
        "0 0 30,31 2 *",
        "0 0 0 29 2 * 2027",
        "0 0 0 1 1 * 2100",
        "0 0 0 1 1 * 0",
        "𝟘 * * * *",
        "٣ * * * *",
        "ⅰ * * * *",
        "日 月 火 水 木",
        "*\u{0}* * * *",
        "\u{feff}* * * * *x",
        "1.5 * * * *",
        "+5 * * * *",
        "0x1f * * * *",
        "1e3 * * * *",
        "* * * * * * * * * * * * * * * * * *",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    garbage.push(long_field + " * * * *");
    garbage.push(many_fields);
    garbage.push("9".repeat(10_000) + " * * * *");
    for expr in &garbage {
        let result = std::panic::catch_unwind(|| CronSchedule::parse(expr, None));
        match result {
            Ok(Err(e)) => {
                let message = e.to_string();
                assert!(message.starts_with("invalid cron expression "), "{message}");
            }
            Ok(Ok(_)) => panic!("{:?} was accepted", short(expr)),
            Err(_) => panic!("{:?} panicked", short(expr)),
        }
    }
    // Zones too.
    for zone in [
        "",
        "utc ",
        "Europe/",
        "../../etc/passwd",
        "Ω",
        "Europe/Berlin\0",
    ] {
        assert!(
            CronSchedule::parse("* * * * *", Some(zone)).is_err(),
            "{zone:?}"
        );
    }
}

fn short(text: &str) -> String {
    text.chars().take(60).collect()
}

#[test]
fn a_long_expression_is_refused_and_quoted_in_part() {
    let expr = format!("{} * * * *", "1,".repeat(1000) + "1");
    let message = CronSchedule::parse(&expr, None).unwrap_err().to_string();
    assert!(
        message.contains("bytes long; at most 1024"),
        "{}",
        short(&message)
    );
    assert!(message.len() < 400, "{}", short(&message));
    assert!(message.starts_with("invalid cron expression \"1,1,1,"));
}

#[test]
fn extreme_instants_give_none_instead_of_panicking() {
    for expr in ["* * * * * *", "0 0 1 1 *", "0 12 1 * 1", "0 0 0 1 1 * 2099"] {
        let s = parse(expr);
        for t in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
            let next = std::panic::catch_unwind(|| s.next_after(t));
            assert!(next.is_ok(), "{expr} after {t} panicked");
            let prev = std::panic::catch_unwind(|| s.last_at_or_before(t));
            assert!(prev.is_ok(), "{expr} before {t} panicked");
        }
    }
    assert_eq!(
        parse("* * * * *").next_after(DateTime::<Utc>::MAX_UTC),
        None
    );
}

#[test]
fn a_single_list_value_a_range_and_the_whole_field_agree() {
    let after = utc(2026, 1, 1, 0, 0, 0);
    assert_eq!(
        first("0-59 * * * *", after, 5),
        first("* * * * *", after, 5)
    );
    assert_eq!(first("*/1 * * * *", after, 5), first("* * * * *", after, 5));
    assert_eq!(first("0-0 0 * * *", after, 3), first("0 0 * * *", after, 3));
}

#[test]
fn a_schedule_that_ends_stops_at_its_last_run() {
    let s = CronSchedule::parse("0 0 0 1 1 * 2027-2028", Some("Pacific/Auckland")).unwrap();
    // Midnight of New Year in Auckland (NZDT, UTC+13) is 11:00 UTC the day before.
    let runs: Vec<_> = s.upcoming(utc(2026, 6, 1, 0, 0, 0)).collect();
    assert_eq!(
        runs,
        [utc(2026, 12, 31, 11, 0, 0), utc(2027, 12, 31, 11, 0, 0)]
    );
    assert_eq!(s.next_after(utc(2027, 12, 31, 10, 59, 59)), Some(runs[1]));
    assert_eq!(s.next_after(runs[1]), None);
    assert_eq!(s.next_after(utc(2099, 1, 1, 0, 0, 0)), None);
}
