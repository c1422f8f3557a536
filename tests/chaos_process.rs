//! Real-process chaos: 200 supervised processes, SIGKILLed at random for
//! 30 s of real time, then shut down; checked against /proc.

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use arbor::{
    ContainerSpec, ContainerState, Event, ProcessRuntime, SupervisorFlags, SupervisorRef,
    SupervisorSpec,
    runtime::process::procfs,
    testing::{eventually_some_async, within},
};

const REPLICAS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_processes_killed_at_random_for_thirty_seconds_leave_nothing_behind() {
    let mark = uuid::Uuid::new_v4().simple().to_string();
    let rt = Arc::new(ProcessRuntime::new().expect("process runtime"));
    let flags = SupervisorFlags {
        max_restarts: 1_000_000,
        restart_window: Duration::from_secs(1),
        ..Default::default()
    };
    let spec = SupervisorSpec::service(
        "chaos",
        rt.clone(),
        ContainerSpec::command("chaos", ["sleep", "1000"]).env("ARBOR_CHAOS_MARK", &mark),
        REPLICAS,
    )
    .flags(flags);
    let (sup, _) = SupervisorRef::start(spec).await.expect("supervisor starts");
    let mut events = sup.events();
    let running = |rt: Arc<ProcessRuntime>| async move {
        rt.containers()
            .await
            .into_iter()
            .filter_map(|(_, s)| match s {
                ContainerState::Running { pid } => Some(pid as i32),
                _ => None,
            })
            .collect::<Vec<i32>>()
    };
    eventually_some_async("200 processes run", || {
        let rt = rt.clone();
        async move { (running(rt).await.len() == REPLICAS).then_some(()) }
    })
    .await;

    // 30 s of SIGKILLs to random live processes, each pid at most once.
    let mut killed = BTreeSet::new();
    let mut rng = 0x2026_u64;
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        let pids = running(rt.clone()).await;
        if !pids.is_empty() {
            let pid = pids[(next(&mut rng) % pids.len() as u64) as usize];
            let live = procfs::stat(pid).is_some_and(|s| !s.is_zombie());
            if live && !killed.contains(&pid) && procfs::cmdline(pid).contains("sleep") {
                // SAFETY-free: plain kill(2) through nix.
                if nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .is_ok()
                {
                    killed.insert(pid);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let kills = killed.len();

    // Every kill is restarted: all 200 run again and the counts add up.
    let counted = eventually_some_async("every kill restarted", || {
        let (sup, rt) = (sup.clone(), rt.clone());
        async move {
            let children = sup.which_children().await.ok()?;
            let restarts: usize = children.iter().map(|c| c.restart_count as usize).sum();
            (restarts == kills && running(rt).await.len() == REPLICAS).then_some(restarts)
        }
    })
    .await;
    let mut restart_events = 0;
    while let Some(e) = events.try_recv() {
        if matches!(e, Event::ChildRestarted { .. }) {
            restart_events += 1;
        }
    }
    println!(
        "real chaos: {kills} SIGKILLs, {counted} restarts counted, {restart_events} restart events"
    );
    assert!(kills > 100, "only {kills} kills");
    assert_eq!(restart_events, kills);

    within("the shutdown", sup.shutdown()).await;
    let left = procfs::with_env("ARBOR_CHAOS_MARK", &mark);
    assert!(left.is_empty(), "processes left: {left:?}");
    let zombies: Vec<String> = procfs::own_zombies()
        .into_iter()
        .map(|z| format!("{z:?}"))
        .collect();
    assert!(zombies.is_empty(), "zombies left: {zombies:?}");
    assert!(rt.containers().await.is_empty(), "containers left");
}

fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z ^ (z >> 31)
}
