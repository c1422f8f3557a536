//! Cron benchmarks, each figure printed beside a baseline measured in the
//! same run:
//!
//! ```text
//! cargo bench --bench cron
//! ```
//!
//! One JSON line per figure:
//! `{"figure", "value", "unit", "baseline", "baseline_value", "ratio"}`.
//!
//! Each side runs in its own process (this binary re-runs itself with
//! `--phase NAME`) on a two-worker tokio runtime, on the real clock; the
//! skew phases run in three interleaved rounds and each figure is the
//! median. About 50 seconds in all.
//!
//! - fire skew: 10,000 daily schedules, each due once within a 3-second
//!   window (a 6-field expression naming one second of the day, plus a 1 s
//!   jitter that spreads them over the milliseconds), fired by one cron
//!   actor. Skew = the time
//!   `fire` is called minus (scheduled time + the job's jitter offset).
//!   Baseline: 10,000 tasks each doing `tokio::time::sleep_until` for the
//!   same instants.
//! - idle CPU: user+sys CPU time (getrusage) of the process over 10 idle
//!   seconds with 10,000 schedules of which none is due (the nearest is an
//!   hour away). Baseline: an idle tokio runtime.
//! - upsert cost per schedule, beside parsing the same expression and
//!   computing its next time outside the actor.

use std::{
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use arbor::{CronFire, CronRef, CronSchedule, ScheduleSpec, SystemClock, jitter_offset};
use chrono::{DateTime, TimeDelta, Timelike, Utc};
use serde_json::{Value, json};

const SCHEDULES: usize = 10_000;
const WINDOW_SECONDS: usize = 3;
const LEAD: Duration = Duration::from_secs(2);
const ROUNDS: usize = 3;
const JITTER: Duration = Duration::from_secs(1);
const IDLE: Duration = Duration::from_secs(10);

#[path = "common/phases.rs"]
mod phases;

use phases::{figure, measure};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--phase") {
        let phase = args.get(i + 1).map(String::as_str).unwrap_or("");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let out = rt.block_on(run_phase(phase));
        println!("{out}");
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench -- --list` compatibility: nothing to list
    }
    compare();
}

fn compare() {
    let m = measure(&[("skew-cron", &[]), ("skew-raw", &[])], ROUNDS);
    let idle = measure(&[("idle-cron", &[]), ("idle-raw", &[])], 1);
    let (cron, raw) = (&m["skew-cron"], &m["skew-raw"]);
    for q in ["p50", "p99", "max"] {
        figure(
            &format!("cron_fire_skew_{q}_10k_schedules"),
            &cron[q],
            "us",
            &format!("tokio_sleep_until_skew_{q}_10k_tasks"),
            &raw[q],
        );
    }
    figure(
        "cron_idle_cpu_10s_10k_schedules",
        &idle["idle-cron"]["cpu_ms"],
        "ms",
        "idle_tokio_runtime_cpu_10s",
        &idle["idle-raw"]["cpu_ms"],
    );
    figure(
        "cron_upsert_per_schedule",
        &cron["upsert_us"],
        "us",
        "cron_schedule_parse_and_next_after",
        &cron["parse_us"],
    );
}

async fn run_phase(name: &str) -> Value {
    match name {
        "skew-cron" => skew_cron().await,
        "skew-raw" => skew_raw().await,
        "idle-cron" => idle(true).await,
        "idle-raw" => idle(false).await,
        other => panic!("unknown phase {other}"),
    }
}

/// The job names and the second each is due in: `T0 + i % WINDOW` seconds.
fn plan() -> (DateTime<Utc>, Vec<(String, DateTime<Utc>)>) {
    let now = Utc::now();
    let t0 = (now + TimeDelta::from_std(LEAD).unwrap())
        .with_nanosecond(0)
        .unwrap();
    let jobs = (0..SCHEDULES)
        .map(|i| {
            let second = t0 + TimeDelta::seconds((i % WINDOW_SECONDS) as i64);
            (format!("job-{i:05}"), second)
        })
        .collect();
    (t0, jobs)
}

/// A 6-field expression firing daily at `t`'s second of the day (UTC).
fn daily_at(t: DateTime<Utc>) -> String {
    format!("{} {} {} * * *", t.second(), t.minute(), t.hour())
}

fn micros(d: TimeDelta) -> f64 {
    d.num_nanoseconds().unwrap_or(i64::MAX) as f64 / 1_000.0
}

fn quantiles(mut xs: Vec<f64>) -> Value {
    xs.sort_by(f64::total_cmp);
    let q = |p: f64| xs[((xs.len() - 1) as f64 * p).round() as usize];
    json!({"p50": q(0.5), "p99": q(0.99), "max": q(1.0), "n": xs.len()})
}

async fn skew_cron() -> Value {
    let (_, jobs) = plan();
    let (tx, rx) = mpsc::channel::<f64>();
    let target = Arc::new(move |fire: CronFire| {
        let now = Utc::now();
        let offset = TimeDelta::from_std(jitter_offset(&fire.job, JITTER)).unwrap();
        let _ = tx.send(micros(now - (fire.scheduled_for + offset)));
    });
    let (cron, _) = CronRef::start(target, Arc::new(SystemClock)).await.unwrap();

    // Baseline cost: parse and compute the next time, outside the actor.
    let t = Instant::now();
    for (_, second) in &jobs {
        let s = CronSchedule::parse(&daily_at(*second), None).unwrap();
        std::hint::black_box(s.next_after(Utc::now()));
    }
    let parse_us = t.elapsed().as_secs_f64() * 1e6 / SCHEDULES as f64;

    let t = Instant::now();
    for (job, second) in &jobs {
        let spec = ScheduleSpec::new(job.as_str(), daily_at(*second)).jitter(JITTER);
        cron.upsert(spec).await.unwrap();
    }
    let upsert_us = t.elapsed().as_secs_f64() * 1e6 / SCHEDULES as f64;

    let skews = tokio::task::spawn_blocking(move || {
        (0..SCHEDULES)
            .map(|_| rx.recv_timeout(Duration::from_secs(30)).expect("a fire"))
            .collect::<Vec<f64>>()
    })
    .await
    .unwrap();
    let mut out = quantiles(skews);
    out["upsert_us"] = json!(upsert_us);
    out["parse_us"] = json!(parse_us);
    cron.stop();
    out
}

async fn skew_raw() -> Value {
    let (_, jobs) = plan();
    let (tx, rx) = mpsc::channel::<f64>();
    for (job, second) in jobs {
        let due = second + TimeDelta::from_std(jitter_offset(&job, JITTER)).unwrap();
        let tx = tx.clone();
        tokio::spawn(async move {
            let wait = (due - Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep_until(tokio::time::Instant::now() + wait).await;
            let _ = tx.send(micros(Utc::now() - due));
        });
    }
    let skews = tokio::task::spawn_blocking(move || {
        (0..SCHEDULES)
            .map(|_| rx.recv_timeout(Duration::from_secs(30)).expect("a wake-up"))
            .collect::<Vec<f64>>()
    })
    .await
    .unwrap();
    quantiles(skews)
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU used over [`IDLE`] seconds, with or without 10,000 idle schedules.
async fn idle(with_cron: bool) -> Value {
    let mut cron = None;
    if with_cron {
        let (c, _) = CronRef::start(Arc::new(|_: CronFire| {}), Arc::new(SystemClock))
            .await
            .unwrap();
        // Daily schedules, the nearest an hour from now.
        let first = Utc::now() + TimeDelta::hours(1);
        for i in 0..SCHEDULES {
            let t = first + TimeDelta::minutes((i % 600) as i64);
            let spec = ScheduleSpec::new(
                format!("job-{i:05}"),
                format!("{} {} * * *", t.minute(), t.hour()),
            );
            c.upsert(spec).await.unwrap();
        }
        let stats = c.stats().await.unwrap();
        assert!(stats.timer_pending && stats.queued == SCHEDULES);
        cron = Some(c);
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // let setup settle
    let before = cpu_time();
    tokio::time::sleep(IDLE).await;
    let used = cpu_time() - before;
    let mut out = json!({"cpu_ms": used.as_secs_f64() * 1e3});
    if let Some(c) = cron {
        let stats = c.stats().await.unwrap();
        out["ticks"] = json!(stats.ticks);
        out["fires"] = json!(stats.fires);
    }
    out
}
