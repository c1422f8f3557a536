//! Shutdown: reverse start order, and each child's policy (`brutal_kill`,
//! `timeout`, `infinity`). Paused clock: durations are virtual.

use std::time::Duration;

use arbor::{testing::*, *};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::time::Instant;

/// An actor whose `post_stop` takes `linger` (an application flushing state).
struct Slow;

struct SlowArgs {
    id: String,
    journal: Journal,
    linger: Duration,
}

impl Actor for Slow {
    type Msg = ();
    type State = SlowArgs;
    type Arguments = SlowArgs;

    async fn pre_start(
        &self,
        _: ActorRef<()>,
        args: SlowArgs,
    ) -> Result<SlowArgs, ActorProcessingErr> {
        args.journal.write(format!("start {}", args.id));
        Ok(args)
    }

    async fn post_stop(&self, _: ActorRef<()>, s: &mut SlowArgs) -> Result<(), ActorProcessingErr> {
        tokio::time::sleep(s.linger).await;
        s.journal.write(format!("stop {}", s.id));
        Ok(())
    }
}

fn slow(id: &str, j: &Journal, linger: Duration) -> ChildSpec {
    let (id_owned, j) = (id.to_owned(), j.clone());
    ChildSpec::actor(
        id,
        || Slow,
        move || SlowArgs {
            id: id_owned.clone(),
            journal: j.clone(),
            linger,
        },
    )
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_children_in_reverse_start_order() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app").children(["a", "b", "c", "d"].map(|id| probe(id, &j)));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    assert_eq!(j.take().await, ["start a", "start b", "start c", "start d"]);
    sup.shutdown().await;
    assert_eq!(j.take().await, ["stop d", "stop c", "stop b", "stop a"]);
}

#[tokio::test(start_paused = true)]
async fn a_child_that_does_not_stop_in_time_is_killed_after_its_timeout() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app").child(probe("a", &j)).child(
        slow("stubborn", &j, Duration::from_secs(3600))
            .shutdown(Shutdown::Timeout(Duration::from_secs(2))),
    );
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    j.take().await;
    let t0 = Instant::now();
    sup.shutdown().await;
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(2),
        "killed when its 2 s were up"
    );
    assert_eq!(
        j.take().await,
        ["stop a"],
        "the killed child never finished its post_stop"
    );
}

#[tokio::test(start_paused = true)]
async fn a_child_that_stops_within_its_timeout_finishes_its_cleanup() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app").child(
        slow("polite", &j, Duration::from_secs(1))
            .shutdown(Shutdown::Timeout(Duration::from_secs(5))),
    );
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let t0 = Instant::now();
    sup.shutdown().await;
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
    assert_eq!(j.take().await, ["start polite", "stop polite"]);
}

#[tokio::test(start_paused = true)]
async fn brutal_kill_does_not_wait_for_cleanup() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app")
        .child(slow("k", &j, Duration::from_secs(60)).shutdown(Shutdown::BrutalKill));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let t0 = Instant::now();
    sup.shutdown().await;
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(j.take().await, ["start k"]);
}

#[tokio::test(start_paused = true)]
async fn infinity_waits_for_a_child_supervisor_to_stop_its_own_children_first() {
    let j = Journal::new();
    let inner = SupervisorSpec::new("inner").child(probe("x", &j)).child(
        slow("y", &j, Duration::from_secs(30)).shutdown(Shutdown::Timeout(Duration::from_secs(60))),
    );
    let spec = SupervisorSpec::new("root")
        .child(probe("first", &j))
        .child(ChildSpec::supervisor("inner", inner))
        .child(probe("last", &j));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    assert_eq!(
        j.take().await,
        ["start first", "start x", "start y", "start last"]
    );
    let t0 = Instant::now();
    sup.shutdown().await;
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(30),
        "the whole subtree was waited for"
    );
    assert_eq!(
        j.take().await,
        ["stop last", "stop y", "stop x", "stop first"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_dynamic_supervisor_stops_its_children_concurrently() {
    let j = Journal::new();
    let (sup, _) = SupervisorRef::start(SupervisorSpec::dynamic("pool"))
        .await
        .unwrap();
    for i in 0..10 {
        sup.start_child(slow(&format!("w{i}"), &j, Duration::from_secs(4)))
            .await
            .unwrap();
    }
    let t0 = Instant::now();
    sup.shutdown().await;
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(4),
        "all ten at once, not one after the other"
    );
    let stops = j
        .take()
        .await
        .into_iter()
        .filter(|e| e.to_string().starts_with("stop"))
        .count();
    assert_eq!(stops, 10);
}

#[tokio::test(start_paused = true)]
async fn a_child_that_already_exited_never_makes_shutdown_wait() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app")
        .child(probe("done", &j).restart(RestartType::Transient))
        .child(slow("s", &j, Duration::ZERO).shutdown(Shutdown::Infinity));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let mut ev = sup.events();
    exit_child(&sup, "done", ProbeExit::Normal).await;
    ev.wait_for(event_of("child_completed", "done"))
        .await
        .unwrap();
    let t0 = Instant::now();
    sup.shutdown().await;
    assert_eq!(t0.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn children_exiting_while_the_supervisor_stops_are_not_restarted() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app").child(probe("a", &j)).child(
        slow("s", &j, Duration::from_secs(5)).shutdown(Shutdown::Timeout(Duration::from_secs(10))),
    );
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    j.take().await;
    let a = sup.child::<ProbeMsg>("a").await.unwrap().unwrap();
    let stopping = tokio::spawn({
        let sup = sup.clone();
        async move { sup.shutdown().await }
    });
    // While `s` lingers in its post_stop, `a` crashes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.cast(ProbeMsg::Exit(crash("during shutdown"))).unwrap();
    stopping.await.unwrap();
    assert_eq!(
        j.take().await,
        ["stop s"],
        "a crashed (no post_stop) and was not restarted"
    );
}
