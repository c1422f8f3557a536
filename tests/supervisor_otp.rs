//! Behaviours a suite derived from OTP's `supervisor_SUITE` found wrong,
//! each pinned down: operator calls on a restarting child, the cause of a
//! give-up, group restarts of completed transient children, `active`
//! counts, and actors that die before the supervisor links them. Paused
//! clock.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use arbor::{testing::*, *};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};

async fn info(sup: &SupervisorRef, id: &str) -> ChildInfo {
    sup.which_children()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no child {id}"))
}

fn probe_args(id: &str, j: &Journal) -> ProbeArgs {
    ProbeArgs {
        id: id.to_owned(),
        journal: j.clone(),
        fail_starts: Arc::new(AtomicU32::new(0)),
    }
}

/// A probe whose start, while `refuse` is set, takes a second and fails
/// with "<id> refused to start".
fn refusing(id: &str, j: &Journal, refuse: Arc<AtomicBool>) -> ChildSpec {
    let args = probe_args(id, j);
    let name = id.to_owned();
    ChildSpec::new(id, move |ctx: ChildContext| {
        let (refused, args, name) = (refuse.load(Ordering::SeqCst), args.clone(), name.clone());
        async move {
            if refused {
                tokio::time::sleep(Duration::from_secs(1)).await;
                return Err(format!("{name} refused to start").into());
            }
            let (actor, _) = Actor::spawn_linked(None, Probe, args, ctx.supervisor).await?;
            Ok(actor.get_cell())
        }
    })
}

#[tokio::test(start_paused = true)]
async fn restart_child_and_delete_child_of_a_restarting_child_answer_restarting_and_the_retries_go_on()
 {
    let j = Journal::new();
    let refuse = Arc::new(AtomicBool::new(false));
    let spec = SupervisorSpec::new("app")
        .intensity(1_000, Duration::from_secs(3600))
        .child(refusing("a", &j, refuse.clone()));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let mut ev = sup.events();
    refuse.store(true, Ordering::SeqCst);
    exit_child(&sup, "a", crash("crash")).await;
    ev.wait_for(event_of("child_start_failed", "a"))
        .await
        .unwrap();

    let restart = sup.restart_child("a").await;
    assert!(
        matches!(&restart, Err(SupervisorError::Restarting(id)) if id == "a"),
        "{restart:?}"
    );
    assert!(restart.unwrap_err().to_string().contains("restarting"));
    let delete = sup.delete_child("a").await;
    assert!(
        matches!(&delete, Err(SupervisorError::Restarting(id)) if id == "a"),
        "{delete:?}"
    );
    // The child is still there and its retries go on until one works.
    assert!(matches!(
        info(&sup, "a").await.state,
        ChildState::Restarting | ChildState::Starting
    ));
    refuse.store(false, Ordering::SeqCst);
    ev.wait_for(restarted("a")).await.unwrap();
    let a = info(&sup, "a").await;
    assert_eq!(a.state, ChildState::Running);
    assert!(a.restart_count >= 2, "{}", a.restart_count);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_first_start_past_the_limit_names_the_child_and_its_own_error() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app")
        .intensity(0, Duration::from_secs(60))
        .child(probe("c1", &j))
        .child(refusing("c3", &j, Arc::new(AtomicBool::new(true))));
    let err = SupervisorRef::start(spec).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, SupervisorError::IntensityExceeded { child, cause, .. }
            if child == "c3" && cause.contains("c3 refused to start")),
        "{err:?}"
    );
    assert!(text.contains("last by child c3"), "{text}");
    assert!(text.contains("c3 refused to start"), "{text}");
    // What it started was stopped before it gave up.
    assert_eq!(j.take().await, ["start c1", "stop c1"]);
}

#[tokio::test(start_paused = true)]
async fn a_group_restart_brings_back_a_transient_sibling_that_completed_normally() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app")
        .strategy(Strategy::OneForAll)
        .child(probe("t", &j).restart(RestartType::Transient))
        .child(probe("p", &j));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let mut ev = sup.events();
    exit_child(&sup, "t", ProbeExit::Normal).await;
    ev.wait_for(event_of("child_completed", "t")).await.unwrap();
    assert_eq!(info(&sup, "t").await.state, ChildState::Completed);

    exit_child(&sup, "p", crash("crash")).await;
    ev.wait_for(restarted("p")).await.unwrap();
    assert_eq!(info(&sup, "t").await.state, ChildState::Running);
    assert_eq!(
        j.take().await,
        // t completed (its stop), p crashed (no stop of its own), then the
        // group came back in order, the completed transient child with it.
        ["start t", "start p", "stop t", "start t", "start p"]
    );
    sup.shutdown().await;
}

/// An actor that, when told, unlinks itself from its supervisor and stops:
/// no exit ever reaches the supervisor.
struct Quitter;

impl Actor for Quitter {
    type Msg = ();
    type State = ActorCell;
    type Arguments = ActorCell;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        supervisor: ActorCell,
    ) -> Result<ActorCell, ActorProcessingErr> {
        Ok(supervisor)
    }

    async fn handle(
        &self,
        myself: ActorRef<()>,
        _: (),
        supervisor: &mut ActorCell,
    ) -> Result<(), ActorProcessingErr> {
        myself.get_cell().unlink(supervisor.clone());
        myself.stop(None);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn active_counts_only_children_whose_actor_is_alive() {
    let spec =
        SupervisorSpec::new("app").child(ChildSpec::new("q", |ctx: ChildContext| async move {
            let sup = ctx.supervisor.clone();
            let (actor, _) = Actor::spawn_linked(None, Quitter, sup, ctx.supervisor).await?;
            Ok(actor.get_cell())
        }));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    assert_eq!(sup.count_children().await.unwrap().active, 1);
    let cell = info(&sup, "q").await.actor.expect("running");
    cell.send_message(()).unwrap();
    cell.wait(None).await.unwrap();
    let counts = sup.count_children().await.unwrap();
    assert_eq!((counts.specs, counts.active), (1, 0));
    sup.shutdown().await;
}

/// An actor that stops as soon as it started.
struct Ephemeral;

impl Actor for Ephemeral {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn post_start(&self, myself: ActorRef<()>, _: &mut ()) -> Result<(), ActorProcessingErr> {
        myself.stop(None);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn an_unlinked_actor_that_died_before_its_link_is_a_failed_start() {
    let j = Journal::new();
    let (sup, _) = SupervisorRef::start(SupervisorSpec::dynamic("pool"))
        .await
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let spec = |calls: Arc<AtomicU32>, j: Journal| {
        ChildSpec::new("u", move |ctx: ChildContext| {
            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
            let args = probe_args("u", &j);
            async move {
                if first {
                    // Spawned unlinked, and dead before the closure returns.
                    let (actor, handle) = Actor::spawn(None, Ephemeral, ()).await?;
                    handle.await?;
                    return Ok(actor.get_cell());
                }
                let (actor, _) = Actor::spawn_linked(None, Probe, args, ctx.supervisor).await?;
                Ok(actor.get_cell())
            }
        })
    };
    let err = sup
        .start_child(spec(calls.clone(), j.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SupervisorError::StartFailed { id, reason }
            if id == "u" && reason.contains("before the supervisor could link it")),
        "{err:?}"
    );
    assert_eq!(sup.count_children().await.unwrap().specs, 0);
    sup.start_child(spec(calls, j.clone())).await.unwrap();
    assert_eq!(info(&sup, "u").await.state, ChildState::Running);
    sup.shutdown().await;
}
