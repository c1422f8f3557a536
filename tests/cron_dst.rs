//! Time zones across real 2026 daylight-saving changes.
//!
//! Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC);
//! 2026-10-25 03:00 CEST -> 02:00 CET (01:00 UTC).
//! America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC);
//! 2026-11-01 02:00 EDT -> 01:00 EST (06:00 UTC).

use std::sync::Arc;

use arbor::{Clock, CronRef, CronSchedule, FireRecorder, ScheduleSpec, TokioClock};
use chrono::{DateTime, TimeZone, Utc};

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

fn times(expr: &str, zone: &str, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    CronSchedule::parse(expr, Some(zone))
        .unwrap()
        .upcoming(after)
        .take(n)
        .collect()
}

#[test]
fn a_job_in_the_skipped_hour_runs_once_right_after_the_jump() {
    // 02:30 does not exist in Berlin on 2026-03-29: run at 03:00 CEST.
    let got = times("30 2 * * *", "Europe/Berlin", utc(2026, 3, 27, 12, 0), 4);
    assert_eq!(
        got,
        [
            utc(2026, 3, 28, 1, 30), // 02:30 CET
            utc(2026, 3, 29, 1, 0),  // 03:00 CEST, right after the jump
            utc(2026, 3, 30, 0, 30), // 02:30 CEST
            utc(2026, 3, 31, 0, 30),
        ]
    );
}

#[test]
fn a_job_in_the_repeated_hour_runs_once() {
    // 02:30 happens twice in Berlin on 2026-10-25: run in the first pass only.
    let got = times("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 12, 0), 2);
    assert_eq!(
        got,
        [
            utc(2026, 10, 25, 0, 30), // 02:30 CEST
            utc(2026, 10, 26, 1, 30), // 02:30 CET the next day
        ]
    );
    // Asked from inside the second pass, it does not run again that day.
    let s = CronSchedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
    assert_eq!(
        s.next_after(utc(2026, 10, 25, 1, 10)),
        Some(utc(2026, 10, 26, 1, 30))
    );
}

#[test]
fn interval_jobs_run_in_both_passes_of_the_repeated_hour() {
    let got = times(
        "*/30 * * * *",
        "Europe/Berlin",
        utc(2026, 10, 24, 23, 45),
        6,
    );
    assert_eq!(
        got,
        [
            utc(2026, 10, 25, 0, 0),  // 02:00 CEST
            utc(2026, 10, 25, 0, 30), // 02:30 CEST
            utc(2026, 10, 25, 1, 0),  // 02:00 CET
            utc(2026, 10, 25, 1, 30), // 02:30 CET
            utc(2026, 10, 25, 2, 0),  // 03:00 CET
            utc(2026, 10, 25, 2, 30),
        ]
    );
}

#[test]
fn hourly_jobs_have_no_run_in_the_skipped_hour() {
    let day: Vec<_> = times("0 * * * *", "Europe/Berlin", utc(2026, 3, 28, 22, 30), 30)
        .into_iter()
        .filter(|t| *t < utc(2026, 3, 29, 22, 0))
        .collect();
    // Midnight to midnight local is 23 hours that day.
    assert_eq!(day.len(), 23);
    assert_eq!(
        &day[..3],
        [
            utc(2026, 3, 28, 23, 0), // 00:00 CET
            utc(2026, 3, 29, 0, 0),  // 01:00 CET
            utc(2026, 3, 29, 1, 0),  // 03:00 CEST
        ]
    );
}

#[test]
fn new_york_follows_the_same_rules() {
    // 02:30 is skipped on 2026-03-08: run at 03:00 EDT.
    assert_eq!(
        times("30 2 * * *", "America/New_York", utc(2026, 3, 7, 0, 0), 3),
        [
            utc(2026, 3, 7, 7, 30), // 02:30 EST
            utc(2026, 3, 8, 7, 0),  // 03:00 EDT, right after the jump
            utc(2026, 3, 9, 6, 30), // 02:30 EDT
        ]
    );
    // 01:30 repeats on 2026-11-01: run once, at 01:30 EDT.
    assert_eq!(
        times(
            "30 1 * * *",
            "America/New_York",
            utc(2026, 10, 31, 12, 0),
            2
        ),
        [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]
    );
}

#[test]
fn a_daily_job_keeps_its_local_time_across_the_change() {
    let got = times("0 9 * * *", "Europe/Berlin", utc(2026, 3, 28, 0, 0), 2);
    assert_eq!(got, [utc(2026, 3, 28, 8, 0), utc(2026, 3, 29, 7, 0)]);
}

#[tokio::test(start_paused = true)]
async fn the_actor_fires_across_a_dst_change() {
    let recorder = Arc::new(FireRecorder::new());
    let clock = Arc::new(TokioClock::starting_at(utc(2026, 3, 28, 12, 0)));
    let (cron, _) = CronRef::start(recorder.clone(), clock.clone())
        .await
        .unwrap();
    cron.upsert(ScheduleSpec::new("nightly", "30 2 * * *").time_zone("Europe/Berlin"))
        .await
        .unwrap();
    cron.upsert(ScheduleSpec::new("hourly", "0 * * * *").time_zone("Europe/Berlin"))
        .await
        .unwrap();
    // Three days of hourly and nightly runs.
    let end = utc(2026, 3, 31, 12, 0);
    let mut nightly = Vec::new();
    let mut hourly = 0;
    while clock.now() < end {
        let fire = recorder.next().await.unwrap();
        assert_eq!(fire.fired_at, fire.scheduled_for);
        assert_eq!(fire.skipped, 0);
        match fire.job.as_str() {
            "nightly" => nightly.push(fire.scheduled_for),
            _ => hourly += 1,
        }
        if fire.scheduled_for >= end {
            break;
        }
    }
    assert_eq!(
        nightly,
        [
            utc(2026, 3, 29, 1, 0), // 03:00 CEST, right after the jump
            utc(2026, 3, 30, 0, 30),
            utc(2026, 3, 31, 0, 30),
        ]
    );
    // Every UTC hour is a whole local hour (CET or CEST): 13:00 on the 28th
    // to 12:00 on the 31st.
    assert_eq!(hourly, 72);
    cron.stop();
}
