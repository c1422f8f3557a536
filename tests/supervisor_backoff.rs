//! Crash-loop back-off (`on_limit: backoff`): delays follow the formula,
//! reset after a stable run, and are per child. Paused clock: the delays
//! below are exact virtual durations, not wall-clock timings.

use std::{
    sync::{Arc, atomic::AtomicU32},
    time::Duration,
};

use arbor::{testing::*, *};
use tokio::time::Instant;

fn policy() -> BackoffPolicy {
    BackoffPolicy {
        initial: Duration::from_secs(10),
        multiplier: 2.0,
        max: Duration::from_secs(40),
        jitter: 0.1,
        reset_after: Duration::from_secs(600),
        give_up_after: None,
    }
}

fn backing_off(j: &Journal, ids: &[&str]) -> SupervisorSpec {
    SupervisorSpec::new("svc")
        .on_limit(OnLimit::Backoff)
        .intensity(1, Duration::from_secs(300))
        .backoff(policy())
        .children(ids.iter().map(|id| probe(id, j)))
}

/// Crashes `id` and returns the back-off delay announced (None when the
/// restart was immediate) and the virtual time until it ran again.
async fn crash_and_time(
    sup: &SupervisorRef,
    ev: &mut EventStream,
    id: &str,
) -> (Option<Duration>, Duration) {
    let crashed_at = Instant::now();
    assert!(exit_child(sup, id, crash("crash loop")).await, "{id} runs");
    let mut announced = None;
    let restart = ev
        .wait_for(|e| match e {
            Event::CrashLoopBackOff {
                child: i, delay, ..
            } if i == id => {
                announced = Some(*delay);
                false
            }
            Event::ChildRestarted { child: i, .. } => i == id,
            _ => false,
        })
        .await;
    assert!(restart.is_some());
    (announced, crashed_at.elapsed())
}

#[tokio::test(start_paused = true)]
async fn crash_loop_back_off_delays_follow_the_formula() {
    let j = Journal::new();
    let (sup, _) = SupervisorRef::start(backing_off(&j, &["a"])).await.unwrap();
    let mut ev = sup.events();
    let p = policy();

    let (delay, waited) = crash_and_time(&sup, &mut ev, "a").await;
    assert_eq!(
        (delay, waited),
        (None, Duration::ZERO),
        "within the limit: immediate restart"
    );
    for step in 0..5u32 {
        let (delay, waited) = crash_and_time(&sup, &mut ev, "a").await;
        let expected = p.delay(step, "a");
        assert_eq!(delay, Some(expected), "step {step}");
        assert_eq!(
            waited, expected,
            "restarted exactly after the delay at step {step}"
        );
        let base = p.base_delay(step);
        assert!(
            expected >= base && expected <= base.mul_f64(1.1),
            "jitter within 10%"
        );
    }
    assert_eq!(p.base_delay(4), Duration::from_secs(40), "capped at max");
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn back_off_resets_after_a_stable_run() {
    let j = Journal::new();
    let (sup, _) = SupervisorRef::start(backing_off(&j, &["a"])).await.unwrap();
    let mut ev = sup.events();
    for _ in 0..4 {
        crash_and_time(&sup, &mut ev, "a").await;
    }
    let (delay, _) = crash_and_time(&sup, &mut ev, "a").await;
    assert_eq!(delay, Some(policy().delay(3, "a")));

    tokio::time::advance(policy().reset_after).await;
    let (delay, _) = crash_and_time(&sup, &mut ev, "a").await;
    assert_eq!(delay, None, "the window emptied during the stable run");
    let (delay, _) = crash_and_time(&sup, &mut ev, "a").await;
    assert_eq!(
        delay,
        Some(policy().delay(0, "a")),
        "back to the initial delay"
    );
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn only_the_crashing_child_enters_crash_loop_back_off() {
    let j = Journal::new();
    let (sup, _) = SupervisorRef::start(backing_off(&j, &["a", "b"]))
        .await
        .unwrap();
    let mut ev = sup.events();
    crash_and_time(&sup, &mut ev, "a").await;
    assert!(exit_child(&sup, "a", crash("again")).await);
    ev.wait_for(event_of("crash_loop_back_off", "a"))
        .await
        .unwrap();

    let (delay, waited) = crash_and_time(&sup, &mut ev, "b").await;
    assert_eq!(
        (delay, waited),
        (None, Duration::ZERO),
        "b's own window is empty"
    );
    let states: Vec<_> = sup
        .which_children()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id, c.state))
        .collect();
    assert_eq!(
        states,
        [
            ("a".into(), ChildState::CrashLoopBackOff),
            ("b".into(), ChildState::Running)
        ]
    );
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn terminate_child_cancels_a_pending_back_off_restart() {
    let j = Journal::new();
    let (sup, _) = SupervisorRef::start(backing_off(&j, &["a"])).await.unwrap();
    let mut ev = sup.events();
    crash_and_time(&sup, &mut ev, "a").await;
    exit_child(&sup, "a", crash("again")).await;
    ev.wait_for(event_of("crash_loop_back_off", "a"))
        .await
        .unwrap();
    j.take().await;

    sup.terminate_child("a").await.unwrap();
    tokio::time::sleep(policy().max * 2).await;
    assert!(j.take().await.is_empty(), "no restart after the delay");
    assert_eq!(
        sup.which_children().await.unwrap()[0].state,
        ChildState::Stopped
    );
    sup.restart_child("a").await.unwrap();
    assert_eq!(j.take().await, ["start a"]);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn failed_start_attempts_are_spaced_by_the_back_off_and_the_supervisor_answers_between() {
    let j = Journal::new();
    let fail = Arc::new(AtomicU32::new(0));
    let spec = SupervisorSpec::new("svc")
        .on_limit(OnLimit::Backoff)
        .intensity(0, Duration::from_secs(300))
        .backoff(policy())
        .child(probe_failing("a", &j, fail.clone()));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let mut ev = sup.events();
    fail.store(2, std::sync::atomic::Ordering::SeqCst);
    let t0 = Instant::now();
    exit_child(&sup, "a", crash("crash")).await;

    ev.wait_for(event_of("child_start_failed", "a"))
        .await
        .unwrap();
    let a = sup.which_children().await.unwrap().remove(0);
    assert_eq!(
        a.state,
        ChildState::CrashLoopBackOff,
        "answered between attempts"
    );
    assert!(matches!(a.last_exit, Some(ChildExit::StartFailed { .. })));

    ev.wait_for(restarted("a")).await.unwrap();
    let p = policy();
    let expected = p.delay(0, "a") + p.delay(1, "a") + p.delay(2, "a");
    assert_eq!(
        t0.elapsed(),
        expected,
        "three delayed attempts: the crash, then two failed starts"
    );
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn one_for_all_siblings_stay_down_while_the_failed_child_backs_off() {
    let j = Journal::new();
    let spec = backing_off(&j, &["a", "b"]).strategy(Strategy::OneForAll);
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let mut ev = sup.events();
    crash_and_time(&sup, &mut ev, "a").await;
    j.take().await;
    exit_child(&sup, "a", crash("again")).await;
    ev.wait_for(event_of("crash_loop_back_off", "a"))
        .await
        .unwrap();
    assert_eq!(j.take().await, ["stop b"]);
    let states: Vec<_> = sup
        .which_children()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.state)
        .collect();
    assert_eq!(
        states,
        [ChildState::CrashLoopBackOff, ChildState::Restarting]
    );
    ev.wait_for(restarted("b")).await.unwrap();
    assert_eq!(j.take().await, ["start a", "start b"]);
    sup.shutdown().await;
}
