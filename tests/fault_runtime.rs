//! The fault-injecting runtime over the recording mock, and the supervisor's
//! documented response to each fault. Paused clock: every delay below is an
//! exact virtual duration.

use std::{sync::Arc, time::Duration};

use arbor::{
    runtime::{
        Op, Runtime, Signal,
        fault::{FaultKind, FaultPlan, InjectedFault, Target},
        mock::{Call, MockRun},
    },
    testing::*,
    *,
};
use tokio::time::Instant;

fn web(faults: &FaultRuntime<MockRuntime>) -> SupervisorSpec {
    SupervisorSpec::service(
        "web",
        Arc::new(faults.clone()),
        ContainerSpec::shell("web", "serve"),
        1,
    )
}

fn spec(name: &str) -> ContainerSpec {
    ContainerSpec::shell(name, "serve").label("service", "web")
}

#[tokio::test(start_paused = true)]
async fn start_fails_twice_then_succeeds_and_the_child_runs_with_the_restarts_counted() {
    let mock = MockRuntime::new();
    let faults = FaultRuntime::new(mock.clone());
    faults.fail_next(Target::service("web"), Op::Start, 2, "no space left");
    let (sup, _) = SupervisorRef::start(web(&faults)).await.unwrap();
    let mut ev = sup.events();
    ev.wait_for(restarted("web-0")).await.unwrap();
    let child = &sup.which_children().await.unwrap()[0];
    assert_eq!(child.state, ChildState::Running);
    assert_eq!(mock.running().await, ["web-0"]);
    let injected = faults.injected().await;
    assert_eq!(injected.len(), 2);
    assert!(
        injected
            .iter()
            .all(|f| f.kind == FaultKind::Fail && f.op == Op::Start)
    );
    // The initial start failed, the first restart failed, the second worked:
    // two restarts.
    assert_eq!(child.restart_count, 2, "{child:?}");
    sup.shutdown().await;
    assert!(mock.containers().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_container_that_hangs_on_stop_is_killed_after_the_grace() {
    let mock = MockRuntime::new();
    let faults = FaultRuntime::new(mock.clone());
    faults.hang_on_stop(Target::service("web"));
    let spec = web(&faults).map_children(|c| c.shutdown(Shutdown::Timeout(Duration::from_secs(7))));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let t0 = Instant::now();
    sup.shutdown().await;
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(7),
        "the stop took the grace"
    );
    let calls = mock.calls().await;
    assert!(
        calls.iter().any(|c| matches!(
            c,
            Call::Signal {
                signal: Signal::SIGKILL,
                ..
            }
        )),
        "the inner runtime got a kill: {calls:?}"
    );
    assert!(mock.containers().await.is_empty());
    assert_eq!(faults.counts().await[&FaultKind::HangOnStop], 1);
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_backs_off_with_on_limit_backoff() {
    let mock = MockRuntime::new();
    let faults = FaultRuntime::new(mock.clone());
    faults.crash_loop(Target::service("web"));
    let spec = web(&faults)
        .on_limit(OnLimit::Backoff)
        .intensity(1, Duration::from_secs(300));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let mut ev = sup.events();
    ev.wait_for(event_of("crash_loop_back_off", "web-0"))
        .await
        .unwrap();
    assert!(faults.counts().await[&FaultKind::CrashLoop] >= 2);
    sup.shutdown().await;
    assert!(mock.containers().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_escalates_with_on_limit_escalate() {
    let mock = MockRuntime::new();
    let faults = FaultRuntime::new(mock.clone());
    faults.crash_loop(Target::service("web"));
    let spec = web(&faults)
        .on_limit(OnLimit::Escalate)
        .intensity(2, Duration::from_secs(60));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let mut ev = sup.events();
    ev.wait_for(event_of("supervisor_escalated", "web"))
        .await
        .unwrap();
    sup.wait().await;
    assert_eq!(faults.counts().await[&FaultKind::CrashLoop], 3);
    assert!(mock.running().await.is_empty());
}

/// Drives a fixed sequence of calls through a fresh wrapper under `plan`.
async fn drive(plan: FaultPlan) -> (Vec<InjectedFault>, Vec<String>) {
    let faults = FaultRuntime::new(MockRuntime::new());
    faults.plan(plan);
    let mut outcomes = Vec::new();
    for i in 0..40 {
        let spec = spec(&format!("web-{i}"));
        outcomes.push(format!("{:?}", faults.pull_image(&spec).await.is_ok()));
        let Ok(id) = faults.create(&spec).await else {
            outcomes.push("create failed".into());
            continue;
        };
        outcomes.push(format!("{:?}", faults.start(&id).await.is_ok()));
        outcomes.push(format!("{:?}", faults.state(&id).await.ok()));
        outcomes.push(format!(
            "{:?}",
            faults.stop(&id, Duration::from_secs(1)).await.ok()
        ));
        let waited = tokio::time::timeout(Duration::from_secs(60), faults.wait(&id)).await;
        outcomes.push(format!("{:?}", waited.map(|r| r.ok())));
        outcomes.push(format!("{:?}", faults.remove(&id).await.is_ok()));
    }
    (faults.injected().await, outcomes)
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_recorded_faults_twice() {
    let kinds = [
        FaultKind::Fail,
        FaultKind::Slow,
        FaultKind::Exit,
        FaultKind::CrashLoop,
        FaultKind::HangOnStop,
        FaultKind::LoseExit,
        FaultKind::DelayExit,
    ];
    let a = drive(FaultPlan::random(42, 0.3, kinds)).await;
    let b = drive(FaultPlan::random(42, 0.3, kinds)).await;
    assert!(a.0.len() > 10, "{} faults", a.0.len());
    assert_eq!(a, b);
    let seqs: Vec<u64> = a.0.iter().map(|f| f.seq).collect();
    assert_eq!(seqs, (0..a.0.len() as u64).collect::<Vec<_>>());
    let c = drive(FaultPlan::random(43, 0.3, kinds)).await;
    assert_ne!(a.0, c.0, "another seed, other faults");
}

#[tokio::test(start_paused = true)]
async fn slow_operations_are_delayed_by_the_configured_latency() {
    let mock = MockRuntime::new();
    let faults = FaultRuntime::new(mock.clone());
    faults.slow(Target::service("web"), Op::Create, Duration::from_secs(3));
    let t0 = Instant::now();
    faults.pull_image(&spec("web-0")).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::ZERO, "only create is slow");
    let id = faults.create(&spec("web-0")).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(3));
    faults
        .create(&spec("db-0").label("service", "db"))
        .await
        .unwrap();
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(3),
        "other services are not"
    );
    let f = &faults.injected().await[0];
    assert_eq!(
        (f.kind, f.op, f.container.as_str()),
        (FaultKind::Slow, Op::Create, "web-0")
    );
    assert_eq!(f.at, Duration::ZERO, "recorded when the call came in");
    faults.start(&id).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_lost_exit_notification_leaves_wait_pending_until_stop() {
    let mock = MockRuntime::new();
    mock.runs(
        "web-0",
        [MockRun::exit_code_after(Duration::from_secs(1), 3)],
    );
    let faults = FaultRuntime::new(mock.clone());
    faults.lose_exit(Target::service("web"));
    let id = faults.create(&spec("web-0")).await.unwrap();
    faults.start(&id).await.unwrap();
    let waiter = tokio::spawn({
        let (faults, id) = (faults.clone(), id.clone());
        async move { faults.wait(&id).await }
    });
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(mock.running().await.is_empty(), "the container did exit");
    assert!(!waiter.is_finished(), "but nobody was told");
    faults.stop(&id, Duration::from_secs(5)).await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap(), ExitStatus::Code(3));
    faults.remove(&id).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_exit_after_a_delay_reports_the_status_and_kills_the_inner_container() {
    let mock = MockRuntime::new();
    let faults = FaultRuntime::new(mock.clone());
    faults.exit_after(
        Target::job("backup"),
        Duration::from_secs(2),
        ExitStatus::Signal(Signal::SIGSEGV as i32),
    );
    let id = faults
        .create(&ContainerSpec::shell("backup-1", "run").label("job", "backup"))
        .await
        .unwrap();
    faults.start(&id).await.unwrap();
    let t0 = Instant::now();
    let status = faults.wait(&id).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(2));
    assert_eq!(status, ExitStatus::Signal(Signal::SIGSEGV as i32));
    assert!(
        mock.running().await.is_empty(),
        "nothing leaks behind the fake exit"
    );
    faults.remove(&id).await.unwrap();
    assert!(mock.containers().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_climbs_the_ladder_back_off_then_gives_up_and_runs_the_hook_once() {
    let mock = MockRuntime::new();
    let faults = FaultRuntime::new(mock.clone());
    faults.crash_loop(Target::service("web"));
    let (hooked, mut hooks) = tokio::sync::mpsc::unbounded_channel();
    let spec = web(&faults)
        .on_limit(OnLimit::Backoff)
        .intensity(1, Duration::from_secs(300))
        .backoff(BackoffPolicy {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(60),
            jitter: 0.0,
            reset_after: Duration::from_secs(600),
            give_up_after: Some(2),
        })
        .on_fail(move |g| {
            let _ = hooked.send(g.clone());
        });
    let started = Instant::now();
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let mut ev = sup.events();
    let mut delays = Vec::new();
    let reason = loop {
        match ev.recv().await.unwrap() {
            Event::CrashLoopBackOff { delay, .. } => delays.push(delay),
            Event::ChildFailed { child, reason, .. } if child == "web-0" => break reason,
            _ => {}
        }
    };
    // Two rounds of back-off (1 s, then 2 s), then it gives up.
    assert_eq!(delays, [Duration::from_secs(1), Duration::from_secs(2)]);
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(
        reason.starts_with(
            "gave up after 2 crash loops (backoff.give_up_after); last exit: exit code 1"
        ),
        "{reason}"
    );
    let child = &sup.which_children().await.unwrap()[0];
    assert_eq!(child.state, ChildState::Failed);
    let hook = hooks.recv().await.unwrap();
    assert_eq!(
        (hook.supervisor.as_str(), hook.child.as_str()),
        ("web", "web-0")
    );
    assert_eq!(hook.reason, reason);
    // Every restart was a fresh container; none is left, and nothing more
    // happens: the hook ran once.
    let created = mock
        .calls()
        .await
        .into_iter()
        .filter(|c| matches!(c, Call::Create { .. }))
        .count();
    assert!(created >= 4, "{created} containers created");
    assert!(mock.running().await.is_empty());
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(hooks.try_recv().is_err(), "the hook ran twice");
    assert_eq!(
        sup.which_children().await.unwrap()[0].state,
        ChildState::Failed
    );
    sup.shutdown().await;
}
