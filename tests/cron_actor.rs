//! The cron actor under tokio's paused clock: fires, missed runs, starting
//! deadlines, suspend/resume, jitter, bad input, supervision.
//!
//! Time only moves when every task waits (auto-advance) or when a test
//! calls `tokio::time::advance`; nothing waits for real time.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use arbor::{
    Clock, CronActor, CronError, CronFire, CronMsg, CronRef, FireRecorder, ScheduleSpec,
    SupervisorRef, SupervisorSpec, TokioClock, jitter_offset,
};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use tokio::sync::mpsc;

fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 10, h, m, s).unwrap()
}

async fn start(anchor: DateTime<Utc>) -> (CronRef, Arc<FireRecorder>, Arc<TokioClock>) {
    let recorder = Arc::new(FireRecorder::new());
    let clock = Arc::new(TokioClock::starting_at(anchor));
    let (cron, _) = CronRef::start(recorder.clone(), clock.clone())
        .await
        .unwrap();
    (cron, recorder, clock)
}

fn scheduled(fires: &[CronFire]) -> Vec<DateTime<Utc>> {
    fires.iter().map(|f| f.scheduled_for).collect()
}

#[tokio::test(start_paused = true)]
async fn every_five_minutes_fires_on_time() {
    let (cron, recorder, _) = start(at(12, 0, 30)).await;
    let next = cron
        .upsert(ScheduleSpec::new("report", "*/5 * * * *"))
        .await
        .unwrap();
    assert_eq!(next, Some(at(12, 5, 0)));
    let fires = recorder.next_n(3).await;
    assert_eq!(
        scheduled(&fires),
        [at(12, 5, 0), at(12, 10, 0), at(12, 15, 0)]
    );
    for f in &fires {
        assert_eq!(f.job, "report");
        assert_eq!(f.fired_at, f.scheduled_for);
        assert_eq!(f.skipped, 0);
    }
    let info = cron.get("report").await.unwrap().unwrap();
    assert_eq!(info.last_run, Some(at(12, 15, 0)));
    assert_eq!(info.next_run, Some(at(12, 20, 0)));
}

#[tokio::test(start_paused = true)]
async fn a_new_schedule_without_last_run_starts_from_now() {
    let (cron, recorder, _) = start(at(12, 0, 30)).await;
    cron.upsert(ScheduleSpec::new("tick", "* * * * *"))
        .await
        .unwrap();
    // 12:00 has passed: no catch-up, the first run is 12:01.
    let first = recorder.next().await.unwrap();
    assert_eq!((first.scheduled_for, first.skipped), (at(12, 1, 0), 0));
}

#[tokio::test(start_paused = true)]
async fn six_and_seven_field_schedules_fire_on_their_seconds_and_year() {
    let (cron, recorder, _) = start(at(12, 0, 0)).await;
    cron.upsert(ScheduleSpec::new("secs", "*/20 * * * * *"))
        .await
        .unwrap();
    let fires = recorder.next_n(3).await;
    assert_eq!(
        scheduled(&fires),
        [at(12, 0, 20), at(12, 0, 40), at(12, 1, 0)]
    );
    cron.remove("secs").await.unwrap();
    let next = cron
        .upsert(ScheduleSpec::new("once", "15 30 12 10 1 * 2026"))
        .await
        .unwrap();
    assert_eq!(next, Some(at(12, 30, 15)));
    let fire = recorder.next().await.unwrap();
    assert_eq!(fire.scheduled_for, at(12, 30, 15));
    let info = cron.get("once").await.unwrap().unwrap();
    assert_eq!(
        info.next_run, None,
        "a 2026-only schedule never fires again"
    );
}

#[tokio::test(start_paused = true)]
async fn only_the_latest_missed_run_starts_after_downtime() {
    let (cron, recorder, _) = start(at(12, 0, 30)).await;
    // The node was down since the 09:00 run.
    let next = cron
        .upsert(ScheduleSpec::new("sync", "*/5 * * * *").last_run(at(9, 0, 0)))
        .await
        .unwrap();
    assert_eq!(next, Some(at(12, 5, 0)));
    // Started before the upsert returned: 12:00, with 09:05..11:55 skipped.
    let fires = recorder.take().await;
    assert_eq!(fires.len(), 1, "{fires:?}");
    assert_eq!(fires[0].scheduled_for, at(12, 0, 0));
    assert_eq!(fires[0].fired_at, at(12, 0, 30));
    assert_eq!(fires[0].skipped, 35);
    let info = cron.get("sync").await.unwrap().unwrap();
    assert_eq!(
        (info.last_run, info.skipped_total),
        (Some(at(12, 0, 0)), 35)
    );
    // Then on schedule again.
    let f = recorder.next().await.unwrap();
    assert_eq!((f.scheduled_for, f.skipped), (at(12, 5, 0), 0));
}

#[tokio::test(start_paused = true)]
async fn a_missed_run_within_the_starting_deadline_still_starts() {
    let (cron, recorder, _) = start(at(12, 0, 30)).await;
    let spec = ScheduleSpec::new("sync", "*/5 * * * *")
        .last_run(at(9, 0, 0))
        .starting_deadline(Duration::from_secs(60));
    cron.upsert(spec).await.unwrap();
    let fires = recorder.take().await;
    assert_eq!(scheduled(&fires), [at(12, 0, 0)]);
    assert_eq!(fires[0].skipped, 35);
}

#[tokio::test(start_paused = true)]
async fn missed_runs_beyond_the_starting_deadline_are_not_started() {
    let (cron, recorder, _) = start(at(12, 0, 30)).await;
    let spec = ScheduleSpec::new("sync", "*/5 * * * *")
        .last_run(at(9, 0, 0))
        .starting_deadline(Duration::from_secs(10));
    cron.upsert(spec).await.unwrap();
    assert!(recorder.take().await.is_empty(), "12:00 is 30 s late");
    let info = cron.get("sync").await.unwrap().unwrap();
    assert_eq!((info.last_run, info.skipped_total), (Some(at(9, 0, 0)), 36));
    // The next run reports what was skipped.
    let f = recorder.next().await.unwrap();
    assert_eq!((f.scheduled_for, f.skipped), (at(12, 5, 0), 36));
    assert_eq!(cron.stats().await.unwrap().deadline_skips, 1);
}

#[tokio::test(start_paused = true)]
async fn a_clock_jump_is_settled_like_downtime() {
    let (cron, recorder, clock) = start(at(12, 0, 30)).await;
    cron.upsert(ScheduleSpec::new("a", "*/5 * * * *"))
        .await
        .unwrap();
    let strict = ScheduleSpec::new("b", "*/5 * * * *").starting_deadline(Duration::from_secs(60));
    cron.upsert(strict).await.unwrap();
    let first = recorder.next_n(2).await;
    assert_eq!(scheduled(&first), [at(12, 5, 0), at(12, 5, 0)]);
    // Everything stalls for three hours and two minutes, then time jumps.
    tokio::time::advance(Duration::from_secs(3 * 3600 + 120)).await;
    let f = recorder.next().await.unwrap();
    assert_eq!(clock.now(), at(15, 7, 0));
    assert_eq!(f.job, "a");
    assert_eq!((f.scheduled_for, f.skipped), (at(15, 5, 0), 35));
    // "b" had a one-minute deadline: 15:05 was two minutes late.
    let f = recorder.next().await.unwrap();
    assert_eq!(f.job, "a");
    assert_eq!(f.scheduled_for, at(15, 10, 0));
    let f = recorder.next().await.unwrap();
    assert_eq!((f.job.as_str(), f.scheduled_for), ("b", at(15, 10, 0)));
    assert_eq!(f.skipped, 36);
    let stats = cron.stats().await.unwrap();
    assert_eq!(
        stats.ticks, 3,
        "12:05, the late 12:10 tick, 15:10: {stats:?}"
    );
}

/// A wall clock that can be stepped (NTP) while tokio time runs on.
struct SteppedClock {
    tokio: TokioClock,
    step_ms: AtomicI64,
}

impl Clock for SteppedClock {
    fn now(&self) -> DateTime<Utc> {
        self.tokio.now() + TimeDelta::milliseconds(self.step_ms.load(Ordering::SeqCst))
    }
}

#[tokio::test(start_paused = true)]
async fn a_wall_clock_stepped_back_or_forward_never_fires_a_run_twice() {
    let recorder = Arc::new(FireRecorder::new());
    let clock = Arc::new(SteppedClock {
        tokio: TokioClock::starting_at(at(12, 0, 30)),
        step_ms: AtomicI64::new(0),
    });
    let (cron, _) = CronRef::start(recorder.clone(), clock.clone())
        .await
        .unwrap();
    cron.upsert(ScheduleSpec::new("a", "*/5 * * * *"))
        .await
        .unwrap();
    assert_eq!(recorder.next().await.unwrap().scheduled_for, at(12, 5, 0));
    // Back ten minutes: the timer set for 12:10 wakes at 12:00 wall time,
    // finds nothing due and waits again; 12:00 and 12:05 do not run again.
    clock.step_ms.store(-600_000, Ordering::SeqCst);
    let f = recorder.next().await.unwrap();
    assert_eq!(
        (f.scheduled_for, f.fired_at, f.skipped),
        (at(12, 10, 0), at(12, 10, 0), 0)
    );
    assert_eq!(
        cron.stats().await.unwrap().ticks,
        3,
        "12:05, the early wake-up, 12:10"
    );
    // Forward an hour: the timer set for 12:15 wakes at 13:15 wall time.
    clock.step_ms.store(-600_000 + 3_600_000, Ordering::SeqCst);
    let f = recorder.next().await.unwrap();
    assert_eq!(
        (f.scheduled_for, f.fired_at, f.skipped),
        (at(13, 15, 0), at(13, 15, 0), 12)
    );
}

#[tokio::test(start_paused = true)]
async fn suspend_stops_fires_and_resume_does_not_replay() {
    let (cron, recorder, _) = start(at(12, 0, 30)).await;
    cron.upsert(ScheduleSpec::new("a", "* * * * *"))
        .await
        .unwrap();
    let strict = ScheduleSpec::new("b", "* * * * *").starting_deadline(Duration::from_secs(10));
    cron.upsert(strict).await.unwrap();
    assert_eq!(recorder.next_n(2).await.len(), 2); // 12:01
    cron.suspend("a").await.unwrap();
    cron.suspend("b").await.unwrap();
    cron.suspend("b").await.unwrap(); // idempotent
    let info = cron.get("a").await.unwrap().unwrap();
    assert!(info.suspended);
    assert_eq!(info.next_run, None);
    let stats = cron.stats().await.unwrap();
    assert_eq!((stats.queued, stats.timer_pending), (0, false));

    tokio::time::sleep(Duration::from_secs(630)).await; // to 12:11:30
    assert!(
        recorder.take().await.is_empty(),
        "nothing fires while suspended"
    );

    // No deadline: only the most recent missed run (12:11) starts.
    let next = cron.resume("a").await.unwrap();
    assert_eq!(next, Some(at(12, 12, 0)));
    let fires = recorder.take().await;
    assert_eq!(scheduled(&fires), [at(12, 11, 0)]);
    assert_eq!(fires[0].skipped, 9, "12:02 to 12:10");
    // A 10 s deadline: 12:11 is 30 s late, so nothing starts now.
    cron.resume("b").await.unwrap();
    assert!(recorder.take().await.is_empty());
    let next = recorder.next_n(2).await;
    let b = next.iter().find(|f| f.job == "b").unwrap();
    assert_eq!((b.scheduled_for, b.skipped), (at(12, 12, 0), 10));
}

#[tokio::test(start_paused = true)]
async fn a_schedule_can_start_suspended() {
    let (cron, recorder, _) = start(at(12, 0, 30)).await;
    let next = cron
        .upsert(ScheduleSpec::new("a", "* * * * *").suspended())
        .await
        .unwrap();
    assert_eq!(next, None);
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert!(recorder.take().await.is_empty());
    assert!(!cron.stats().await.unwrap().timer_pending);
}

#[tokio::test(start_paused = true)]
async fn remove_stops_fires() {
    let (cron, recorder, _) = start(at(12, 0, 30)).await;
    cron.upsert(ScheduleSpec::new("a", "* * * * *"))
        .await
        .unwrap();
    cron.upsert(ScheduleSpec::new("b", "*/2 * * * *"))
        .await
        .unwrap();
    assert!(cron.remove("a").await.unwrap());
    assert!(!cron.remove("a").await.unwrap());
    let fires = recorder.next_n(2).await;
    assert!(fires.iter().all(|f| f.job == "b"), "{fires:?}");
    assert_eq!(scheduled(&fires), [at(12, 2, 0), at(12, 4, 0)]);
    assert!(cron.get("a").await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn list_is_sorted_by_job() {
    let (cron, _, _) = start(at(12, 0, 30)).await;
    for (job, expr) in [("c", "@hourly"), ("a", "@daily"), ("b", "0 9 * * 1-5")] {
        cron.upsert(ScheduleSpec::new(job, expr).time_zone("Europe/Berlin"))
            .await
            .unwrap();
    }
    let list = cron.list().await.unwrap();
    let jobs: Vec<&str> = list.iter().map(|i| i.job.as_str()).collect();
    assert_eq!(jobs, ["a", "b", "c"]);
    let a = &list[0];
    assert_eq!(a.schedule, "@daily");
    assert_eq!(a.time_zone, "Europe/Berlin");
    assert_eq!(a.next_run, Some(at(23, 0, 0)), "midnight in Berlin");
    assert_eq!((a.last_run, a.suspended, a.skipped_total), (None, false, 0));
    assert_eq!(cron.get("b").await.unwrap().as_ref(), Some(&list[1]));
}

#[tokio::test(start_paused = true)]
async fn a_bad_expression_is_an_error_and_the_actor_keeps_running() {
    let (cron, recorder, _) = start(at(12, 0, 30)).await;
    cron.upsert(ScheduleSpec::new("good", "*/5 * * * *"))
        .await
        .unwrap();

    let err = cron
        .upsert(ScheduleSpec::new("good", "61 * * * *"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid cron expression \"61 * * * *\": minute 61 is out of range 0-59"
    );
    let err = cron
        .upsert(ScheduleSpec::new("x", "0 9 * * *").time_zone("Nowhere/Atlantis"))
        .await
        .unwrap_err();
    assert!(matches!(&err, CronError::TimeZone { zone, .. } if zone == "Nowhere/Atlantis"));
    assert!(err.to_string().contains("\"Nowhere/Atlantis\""));
    let err = cron
        .upsert(ScheduleSpec::new("x", "* * * * *").starting_deadline(Duration::ZERO))
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "invalid cron schedule \"x\": starting_deadline must be greater than zero"
        ),
        "{err}"
    );
    let err = cron
        .upsert(ScheduleSpec::new("x", "* * * * *").jitter(Duration::from_secs(400 * 86400)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("jitter"), "{err}");
    let err = cron
        .upsert(ScheduleSpec::new(" ", "* * * * *"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("job must not be empty"), "{err}");
    assert_eq!(
        cron.suspend("nope").await.unwrap_err().to_string(),
        "failed to find cron job \"nope\": no such schedule"
    );
    assert!(matches!(
        cron.resume("nope").await,
        Err(CronError::NotFound(_))
    ));

    // Nothing changed: "good" still has its schedule and fires.
    let list = cron.list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].schedule, "*/5 * * * *");
    let f = recorder.next().await.unwrap();
    assert_eq!((f.job.as_str(), f.scheduled_for), ("good", at(12, 5, 0)));
}

#[tokio::test(start_paused = true)]
async fn jitter_delays_each_job_by_its_own_fixed_offset() {
    let (cron, recorder, _) = start(at(12, 0, 30)).await;
    let jitter = Duration::from_secs(30);
    for job in ["alpha", "beta", "gamma"] {
        cron.upsert(ScheduleSpec::new(job, "* * * * *").jitter(jitter))
            .await
            .unwrap();
    }
    let fires = recorder.next_n(9).await;
    for f in &fires {
        let offset = jitter_offset(&f.job, jitter);
        assert!(offset < jitter);
        assert_eq!(
            f.fired_at - f.scheduled_for,
            TimeDelta::from_std(offset).unwrap(),
            "{f:?}"
        );
        let info = cron.get(&f.job).await.unwrap().unwrap();
        assert_eq!(info.jitter_offset, offset);
    }
    // Fires come in due order: scheduled time plus offset.
    let due: Vec<_> = fires
        .iter()
        .map(|f| f.scheduled_for + TimeDelta::from_std(jitter_offset(&f.job, jitter)).unwrap())
        .collect();
    assert!(due.windows(2).all(|w| w[0] <= w[1]), "{due:?}");
    // Three runs of each job, 12:01 to 12:03.
    for job in ["alpha", "beta", "gamma"] {
        let mine: Vec<_> = fires.iter().filter(|f| f.job == job).collect();
        assert_eq!(mine.len(), 3, "{job}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_whose_time_passed_but_whose_jitter_has_not_still_fires() {
    let jitter = Duration::from_secs(50);
    // A job name whose offset exceeds 30 s.
    let job = (0..)
        .map(|i| format!("job-{i}"))
        .find(|j| jitter_offset(j, jitter) > Duration::from_secs(30))
        .unwrap();
    let (cron, recorder, _) = start(at(12, 0, 30)).await;
    let next = cron
        .upsert(ScheduleSpec::new(job.as_str(), "* * * * *").jitter(jitter))
        .await
        .unwrap();
    assert_eq!(next, Some(at(12, 0, 0)), "due at 12:00 plus its offset");
    assert_eq!(recorder.next().await.unwrap().scheduled_for, at(12, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_target_does_not_stop_the_actor() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let target = Arc::new(move |fire: CronFire| {
        if fire.job == "bad" {
            panic!("target failed for {}", fire.job);
        }
        let _ = tx.send(fire);
    });
    let clock = Arc::new(TokioClock::starting_at(at(12, 0, 30)));
    let (cron, _) = CronRef::start(target, clock).await.unwrap();
    cron.upsert(ScheduleSpec::new("bad", "* * * * *"))
        .await
        .unwrap();
    cron.upsert(ScheduleSpec::new("good", "* * * * *"))
        .await
        .unwrap();
    for minute in 1..=3 {
        let f = rx.recv().await.unwrap();
        assert_eq!(
            (f.job.as_str(), f.scheduled_for),
            ("good", at(12, minute, 0))
        );
    }
    let stats = cron.stats().await.unwrap();
    assert_eq!(stats.fires, 6);
    assert_eq!(
        cron.get("bad").await.unwrap().unwrap().last_run,
        Some(at(12, 3, 0))
    );
}

#[tokio::test(start_paused = true)]
async fn upserting_again_keeps_history_and_never_fires_a_run_twice() {
    let (cron, recorder, _) = start(at(12, 0, 30)).await;
    cron.upsert(ScheduleSpec::new("a", "*/5 * * * *"))
        .await
        .unwrap();
    assert_eq!(recorder.next().await.unwrap().scheduled_for, at(12, 5, 0));
    // Same instant, new expression, and an older last_run from history.
    let next = cron
        .upsert(ScheduleSpec::new("a", "*/10 * * * *").last_run(at(11, 0, 0)))
        .await
        .unwrap();
    assert_eq!(next, Some(at(12, 10, 0)));
    assert!(recorder.take().await.is_empty(), "12:05 already ran");
    let info = cron.get("a").await.unwrap().unwrap();
    assert_eq!(
        (info.schedule.as_str(), info.last_run),
        ("*/10 * * * *", Some(at(12, 5, 0)))
    );
    assert_eq!(recorder.next().await.unwrap().scheduled_for, at(12, 10, 0));
}

#[tokio::test(start_paused = true)]
async fn each_earlier_schedule_re_arms_the_single_timer() {
    let (cron, recorder, _) = start(at(12, 0, 30)).await;
    cron.upsert(ScheduleSpec::new("late", "0 13 * * *"))
        .await
        .unwrap();
    // Each new earlier schedule re-arms the single timer.
    cron.upsert(ScheduleSpec::new("sooner", "30 12 * * *"))
        .await
        .unwrap();
    cron.upsert(ScheduleSpec::new("soonest", "10 12 * * *"))
        .await
        .unwrap();
    let stats = cron.stats().await.unwrap();
    assert_eq!((stats.timers_armed, stats.timer_pending), (3, true));
    let fires = recorder.next_n(3).await;
    let jobs: Vec<&str> = fires.iter().map(|f| f.job.as_str()).collect();
    assert_eq!(jobs, ["soonest", "sooner", "late"]);
    let stats = cron.stats().await.unwrap();
    assert_eq!(stats.ticks, 3);
    assert_eq!(stats.fires, 3);
}

#[tokio::test(start_paused = true)]
async fn a_supervisor_runs_the_cron_actor() {
    let recorder = Arc::new(FireRecorder::new());
    let clock = Arc::new(TokioClock::starting_at(at(12, 0, 30)));
    let spec =
        SupervisorSpec::new("root").child(CronActor::child_spec("cron", recorder.clone(), clock));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let actor = sup.child::<CronMsg>("cron").await.unwrap().unwrap();
    let cron = CronRef::from(actor);
    cron.upsert(ScheduleSpec::new("a", "@hourly"))
        .await
        .unwrap();
    assert_eq!(recorder.next().await.unwrap().scheduled_for, at(13, 0, 0));
    sup.shutdown().await;
    assert!(matches!(cron.list().await, Err(CronError::Unavailable)));
}
