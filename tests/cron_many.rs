//! A thousand schedules driven by one timer over a simulated day.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use arbor::{Clock, CronRef, FireRecorder, ScheduleSpec, TokioClock, jitter_offset};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};

const SCHEDULES: usize = 1_000;

/// Schedule `i`: every 15 minutes for one in four, else once a day at a
/// minute of its own; one in eight of the daily ones has a 5-minute jitter.
fn spec(i: usize) -> ScheduleSpec {
    let job = format!("job-{i:04}");
    if i.is_multiple_of(4) {
        ScheduleSpec::new(job, "*/15 * * * *")
    } else {
        let spec = ScheduleSpec::new(job, format!("{} {} * * *", i % 60, (i / 60) % 24));
        if i % 8 == 1 {
            spec.jitter(Duration::from_secs(300))
        } else {
            spec
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_thousand_schedules_fire_correctly_over_a_simulated_day_with_one_timer() {
    let start = Utc.with_ymd_and_hms(2026, 1, 10, 0, 0, 30).unwrap();
    let end = start + TimeDelta::days(1);
    let recorder = Arc::new(FireRecorder::new());
    let clock = Arc::new(TokioClock::starting_at(start));
    let (cron, _) = CronRef::start(recorder.clone(), clock.clone())
        .await
        .unwrap();
    let specs: Vec<ScheduleSpec> = (0..SCHEDULES).map(spec).collect();
    for s in &specs {
        cron.upsert(s.clone()).await.unwrap();
    }

    // What each job must do in (start, end]: computed by hand, not by the
    // parser under test.
    let mut expected: BTreeMap<String, Vec<DateTime<Utc>>> = BTreeMap::new();
    for (i, s) in specs.iter().enumerate() {
        let times = if i.is_multiple_of(4) {
            (1..=96)
                .map(|k| {
                    Utc.with_ymd_and_hms(2026, 1, 10, 0, 0, 0).unwrap() + TimeDelta::minutes(15 * k)
                })
                .collect()
        } else {
            let (m, h) = ((i % 60) as u32, ((i / 60) % 24) as u32);
            let today = Utc.with_ymd_and_hms(2026, 1, 10, h, m, 0).unwrap();
            vec![if today > start {
                today
            } else {
                today + TimeDelta::days(1)
            }]
        };
        expected.insert(s.job.clone(), times);
    }
    let total: usize = expected.values().map(Vec::len).sum();
    assert_eq!(total, 250 * 96 + 750);

    // Bounded in virtual time: if fires stopped, auto-advance would reach
    // the timeout at once instead of hanging.
    let fires = tokio::time::timeout(Duration::from_secs(25 * 3600), recorder.next_n(total))
        .await
        .expect("every run fired within the day");
    assert!(clock.now() <= end + TimeDelta::minutes(5));

    let mut got: BTreeMap<String, Vec<DateTime<Utc>>> = BTreeMap::new();
    for f in &fires {
        let jitter = specs
            .iter()
            .find(|s| s.job == f.job)
            .and_then(|s| s.jitter)
            .unwrap_or_default();
        let offset = TimeDelta::from_std(jitter_offset(&f.job, jitter)).unwrap();
        assert_eq!(f.fired_at, f.scheduled_for + offset, "{f:?}");
        assert_eq!(f.skipped, 0, "{f:?}");
        got.entry(f.job.clone()).or_default().push(f.scheduled_for);
    }
    assert_eq!(got, expected);
    assert!(
        fires.windows(2).all(|w| w[0].fired_at <= w[1].fired_at),
        "fires come in time order"
    );

    // One timer: one tick per distinct fire instant, none wasted.
    let instants: BTreeSet<DateTime<Utc>> = fires.iter().map(|f| f.fired_at).collect();
    let stats = cron.stats().await.unwrap();
    assert_eq!(stats.schedules, SCHEDULES);
    assert_eq!(stats.queued, SCHEDULES);
    assert_eq!(stats.fires, total as u64);
    assert_eq!(stats.ticks, instants.len() as u64, "{stats:?}");
    assert_eq!(stats.stale_ticks, 0, "{stats:?}");
    assert!(stats.timer_pending);
    assert!(
        recorder.take().await.is_empty(),
        "nothing more before the next day"
    );
}
