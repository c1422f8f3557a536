//! Nested trees of user actors and the tree snapshot.

use std::time::Duration;

use arbor::{testing::*, *};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

/// A user-defined actor unrelated to arbor's test probes.
struct Counter;

enum CounterMsg {
    Add(u64),
    Get(RpcReplyPort<u64>),
}

// Local only: never sent to another node (the `cluster` feature of
// ractor asks every message type to say so).
impl ractor::Message for CounterMsg {}

impl Actor for Counter {
    type Msg = CounterMsg;
    type State = u64;
    type Arguments = u64;

    async fn pre_start(
        &self,
        _: ActorRef<CounterMsg>,
        start: u64,
    ) -> Result<u64, ActorProcessingErr> {
        Ok(start)
    }

    async fn handle(
        &self,
        _: ActorRef<CounterMsg>,
        msg: CounterMsg,
        n: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CounterMsg::Add(k) => *n = n.checked_add(k).ok_or("counter overflow")?,
            CounterMsg::Get(reply) => {
                let _ = reply.send(*n);
            }
        }
        Ok(())
    }
}

fn tree(j: &Journal) -> SupervisorSpec {
    SupervisorSpec::new("app")
        .child(ChildSpec::actor("counter", || Counter, || 40))
        .child(ChildSpec::supervisor(
            "db",
            SupervisorSpec::new("db")
                .strategy(Strategy::RestForOne)
                .child(probe("conn", j))
                .child(probe("cache", j)),
        ))
        .child(ChildSpec::supervisor(
            "pool",
            SupervisorSpec::dynamic("pool"),
        ))
}

#[tokio::test(start_paused = true)]
async fn a_users_own_actors_run_and_restart_under_arbor() {
    let j = Journal::new();
    let (sup, _) = SupervisorRef::start(tree(&j)).await.unwrap();
    let mut ev = sup.events();
    let counter = sup.child::<CounterMsg>("counter").await.unwrap().unwrap();
    counter.cast(CounterMsg::Add(2)).unwrap();
    assert_eq!(ractor::call!(counter, CounterMsg::Get).unwrap(), 42);

    counter.cast(CounterMsg::Add(u64::MAX)).unwrap();
    ev.wait_for(restarted("counter")).await.unwrap();
    let counter = sup.child::<CounterMsg>("counter").await.unwrap().unwrap();
    assert_eq!(
        ractor::call!(counter, CounterMsg::Get).unwrap(),
        40,
        "restarted from its arguments"
    );
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_snapshot_shows_the_whole_nested_tree() {
    let j = Journal::new();
    let (sup, _) = SupervisorRef::start(tree(&j)).await.unwrap();
    let mut ev = sup.events();
    let pool = sup.child_supervisor("pool").await.unwrap().unwrap();
    pool.start_child(probe("job-1", &j)).await.unwrap();
    let db = sup.child_supervisor("db").await.unwrap().unwrap();
    exit_child(&db, "cache", crash("cache corrupted")).await;
    ev.wait_for(restarted("cache")).await.unwrap();

    let snap = sup.snapshot().await.unwrap();
    assert_eq!(snap.name, "app");
    assert_eq!(snap.strategy, Some(Strategy::OneForOne));
    assert_eq!(snap.len(), 7, "app, counter, db, conn, cache, pool, job-1");
    let db_node = snap.find("db").unwrap();
    assert_eq!(
        (db_node.kind, db_node.strategy),
        (ChildKind::Supervisor, Some(Strategy::RestForOne))
    );
    let cache = snap.find("db/cache").unwrap();
    assert_eq!((cache.state, cache.restarts), (ChildState::Running, 1));
    assert_eq!(
        cache.last_exit,
        Some(ChildExit::Failed {
            reason: "cache corrupted".into()
        })
    );
    assert_eq!(snap.find("db/conn").unwrap().restarts, 0);
    assert_eq!(snap.find("pool/job-1").unwrap().kind, ChildKind::Worker);

    let drawn = snap.to_string();
    assert!(
        drawn.contains("└── pool [supervisor dynamic] running"),
        "{drawn}"
    );
    assert!(
        drawn.contains(
            "│   └── cache [worker] running, 1 restart (last exit: failed: cache corrupted)"
        ),
        "{drawn}"
    );
    let json = serde_json::to_value(&snap).unwrap();
    assert_eq!(json["children"][1]["children"][1]["restarts"], 1);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_stopped_nested_supervisor_shows_its_children_none_running() {
    let j = Journal::new();
    let (sup, _) = SupervisorRef::start(tree(&j)).await.unwrap();
    let running = sup.snapshot().await.unwrap().find("db").unwrap().clone();
    sup.terminate_child("db").await.unwrap();
    let snap = sup.snapshot().await.unwrap();
    let db = snap.find("db").unwrap();
    assert_eq!(db.state, ChildState::Stopped);
    let names = |n: &TreeNode| {
        n.children
            .iter()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(db), names(&running), "its spec's children");
    assert!(db.children.iter().all(|c| c.state == ChildState::Stopped));
    tokio::time::sleep(Duration::from_secs(1)).await;
    sup.shutdown().await;
}
