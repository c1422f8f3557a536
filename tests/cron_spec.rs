//! `ScheduleSpec` and `ScheduleInfo` as they travel (serde).

use std::time::Duration;

use arbor::{ScheduleInfo, ScheduleSpec};
use chrono::{TimeZone, Utc};
use serde_json::json;

#[test]
fn a_spec_reads_with_humantime_durations() {
    let spec: ScheduleSpec = serde_json::from_value(json!({
        "job": "backup",
        "schedule": "30 2 * * *",
        "time_zone": "Europe/Berlin",
        "starting_deadline": "10m",
        "suspend": true,
        "jitter": "1m 30s",
        "last_run": "2026-01-10T01:30:00Z",
    }))
    .unwrap();
    assert_eq!(
        spec,
        ScheduleSpec::new("backup", "30 2 * * *")
            .time_zone("Europe/Berlin")
            .starting_deadline(Duration::from_secs(600))
            .suspended()
            .jitter(Duration::from_secs(90))
            .last_run(Utc.with_ymd_and_hms(2026, 1, 10, 1, 30, 0).unwrap())
    );
    assert!(spec.validate().is_ok());
}

#[test]
fn only_job_and_schedule_are_required() {
    let spec: ScheduleSpec =
        serde_json::from_value(json!({"job": "a", "schedule": "@daily"})).unwrap();
    assert_eq!(spec, ScheduleSpec::new("a", "@daily"));
    let err = serde_json::from_value::<ScheduleSpec>(json!({"job": "a"})).unwrap_err();
    assert!(
        err.to_string().contains("missing field `schedule`"),
        "{err}"
    );
}

#[test]
fn unknown_fields_are_rejected() {
    let err = serde_json::from_value::<ScheduleSpec>(json!({
        "job": "a",
        "schedule": "@daily",
        "deadline": "5m",
    }))
    .unwrap_err();
    assert!(
        err.to_string().contains("unknown field `deadline`"),
        "{err}"
    );
}

#[test]
fn a_bad_duration_names_the_problem() {
    let err = serde_json::from_value::<ScheduleSpec>(json!({
        "job": "a",
        "schedule": "@daily",
        "jitter": "soon",
    }))
    .unwrap_err();
    assert!(
        err.to_string().contains("soon") || err.to_string().contains("unit"),
        "{err}"
    );
}

#[test]
fn a_spec_round_trips_through_json() {
    let spec = ScheduleSpec::new("a", "*/5 * * * *")
        .starting_deadline(Duration::from_secs(30))
        .jitter(Duration::from_millis(1500));
    let text = serde_json::to_string(&spec).unwrap();
    assert!(text.contains("\"starting_deadline\":\"30s\""), "{text}");
    assert!(
        !text.contains("time_zone"),
        "unset options are left out: {text}"
    );
    assert_eq!(serde_json::from_str::<ScheduleSpec>(&text).unwrap(), spec);
}

#[test]
fn schedule_info_serialises_for_the_api() {
    let info = ScheduleInfo {
        job: "a".into(),
        schedule: "@hourly".into(),
        time_zone: "UTC".into(),
        next_run: Some(Utc.with_ymd_and_hms(2026, 1, 10, 13, 0, 0).unwrap()),
        last_run: None,
        suspended: false,
        skipped_total: 3,
        jitter_offset: Duration::from_millis(2500),
    };
    let value = serde_json::to_value(&info).unwrap();
    assert_eq!(value["next_run"], "2026-01-10T13:00:00Z");
    assert_eq!(value["jitter_offset"], "2s 500ms");
    assert_eq!(serde_json::from_value::<ScheduleInfo>(value).unwrap(), info);
}
