//! The node's own parts are supervised children of its root: a panic in
//! any of them (injected through the node's test hook) restarts that part
//! alone, with real processes running: two services and a job execution in
//! flight. The services keep their processes, the API-facing calls answer
//! within their timeouts throughout, the execution ends with exactly one
//! terminal state, and nothing is left after shutdown.

use std::{sync::Arc, time::Duration};

use arbor::{
    Deployment, Event, JobState, JobTrigger, Node, NodeConfig, ProcessRuntime, TreeNode,
    runtime::process::procfs,
    testing::{eventually_async, eventually_some_async},
};

/// Longest any call may take while a part restarts (the handles' own
/// timeouts are 3 s to find a restarted part and 10 s for an answer).
const ANSWER_WITHIN: Duration = Duration::from_secs(12);

fn spec(mark: &str) -> Deployment {
    Deployment::from_yaml(&format!(
        r#"
services:
  db:
    command: [sleep, "1000"]
    env: {{ARBOR_TEST_MARK: "{mark}-svc"}}
  web:
    command: [sleep, "1000"]
    replicas: 2
    depends_on: [db]
    env: {{ARBOR_TEST_MARK: "{mark}-svc"}}
jobs:
  work:
    command: [sh, -c, "sleep 2"]
    env: {{ARBOR_TEST_MARK: "{mark}-job"}}
  tick:
    command: ["true"]
    schedule: "0 0 1 1 *"
"#
    ))
    .unwrap()
}

fn part<'a>(tree: &'a TreeNode, name: &str) -> &'a TreeNode {
    tree.children
        .iter()
        .find(|c| c.name == format!("node:{name}"))
        .unwrap_or_else(|| panic!("no part node:{name} in\n{tree}"))
}

fn sorted(mut v: Vec<i32>) -> Vec<i32> {
    v.sort_unstable();
    v
}

/// Every call a user's request makes answers within `ANSWER_WITHIN`
/// (an answer may be an error such as `restarting`, never a hang).
async fn everything_answers(node: &Node) {
    async fn within(what: &str, fut: impl Future<Output = ()>) {
        tokio::time::timeout(ANSWER_WITHIN, fut)
            .await
            .unwrap_or_else(|_| panic!("{what} did not answer within {ANSWER_WITHIN:?}"));
    }
    tokio::join!(
        within("tree", async {
            let _ = node.tree().await;
        }),
        within("services", async {
            let _ = node.services().await;
        }),
        within("health", async {
            let _ = node.health().await;
        }),
        within("executions", async {
            let _ = node.executor().list_all().await;
        }),
        within("schedules", async {
            let _ = node.executor().schedules().await;
        }),
        within("segments", async {
            let _ = node.overlay().list().await;
        }),
    );
}

async fn a_panic_in(name: &str) {
    a_panic_in_node(name, true).await;
}

async fn a_panic_in_node(name: &str, durable: bool) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = ProcessRuntime::builder().build().unwrap();
    let mut config = NodeConfig::new(Arc::new(runtime));
    if durable {
        config = config.state_dir(dir.path());
    }
    let node = Node::start(config).await.unwrap();
    let mark = uuid::Uuid::new_v4().to_string();
    let (svc, job) = (format!("{mark}-svc"), format!("{mark}-job"));
    node.deploy(&spec(&mark)).await.unwrap();
    eventually_async("three replicas run", || async {
        procfs::with_env("ARBOR_TEST_MARK", &svc).len() == 3
    })
    .await;
    let services_before = sorted(procfs::with_env("ARBOR_TEST_MARK", &svc));
    let id = node
        .executor()
        .trigger("work", JobTrigger::Cli)
        .await
        .unwrap();
    eventually_async("the execution runs", || async {
        node.executor()
            .get(id)
            .await
            .ok()
            .flatten()
            .is_some_and(|r| r.status.state == JobState::Running)
    })
    .await;
    let mut events = node.events();

    assert!(node.inject_panic(name), "the hook reached {name}");
    everything_answers(&node).await;
    let tree = eventually_some_async("the part is restarted and the node healthy", || async {
        let tree = node.tree().await.ok()?;
        let p = part(&tree, name);
        (p.restarts == 1 && p.state == arbor::ChildState::Running && node.health().await.ok)
            .then_some(tree)
    })
    .await;
    for other in ["overlay", "executor", "jobs", "cron", "deployment"] {
        if other != name {
            assert_eq!(part(&tree, other).restarts, 0, "{other} untouched\n{tree}");
        }
    }
    everything_answers(&node).await;

    // The services never noticed.
    assert_eq!(
        sorted(procfs::with_env("ARBOR_TEST_MARK", &svc)),
        services_before
    );
    for s in node.services().await.unwrap() {
        assert_eq!((s.status.as_str(), s.restarts), ("running", 0), "{s:?}");
    }

    // The execution in flight ends once: completed, or cancelled when its
    // own supervisor (the job supervisor) went down and stopped it.
    let record = tokio::time::timeout(ANSWER_WITHIN, node.executor().wait(id))
        .await
        .expect("the execution ends")
        .unwrap();
    match name {
        "jobs" => assert_eq!(record.status.state, JobState::Cancelled, "{record:?}"),
        _ => assert!(
            matches!(record.status.state, JobState::Completed { .. }),
            "{record:?}"
        ),
    }
    assert!(procfs::with_env("ARBOR_TEST_MARK", &job).is_empty());
    let mut finished = 0;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
        if matches!(&e, Event::ExecutionFinished { id: i, .. } if *i == id.to_string()) {
            finished += 1;
        }
    }
    assert!(finished <= 1, "{finished} execution_finished events");
    let listed: Vec<_> = node
        .executor()
        .list("work")
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.meta.id == id)
        .collect();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].status.state.is_terminal());

    // The restarted part does its work: a new run completes, the schedule
    // is still there, a reload applies, the overlay answers.
    let again = node
        .executor()
        .trigger("work", JobTrigger::Cli)
        .await
        .unwrap();
    let record = node.executor().wait(again).await.unwrap();
    assert!(matches!(record.status.state, JobState::Completed { .. }));
    let schedules = node.executor().schedules().await.unwrap();
    assert!(schedules.iter().any(|s| s.job == "tick"), "{schedules:?}");
    let mut changed = spec(&mark);
    changed.services.get_mut("web").unwrap().replicas = 3;
    let report = node.deploy(&changed).await.unwrap();
    assert_eq!(report.services_scaled, ["web"]);
    assert!(node.overlay().list().await.is_ok());

    node.shutdown(Duration::from_secs(5)).await;
    assert!(procfs::with_env("ARBOR_TEST_MARK", &svc).is_empty());
    assert!(procfs::with_env("ARBOR_TEST_MARK", &job).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_executor_restarts_it_and_it_finds_the_running_execution() {
    a_panic_in("executor").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_without_a_state_dir_hears_its_running_executions_from_their_job_actors() {
    a_panic_in_node("executor", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_overlay_actor_restarts_it_alone() {
    a_panic_in("overlay").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_cron_actor_restarts_it_with_its_schedules() {
    a_panic_in("cron").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_deployment_actor_restarts_it_with_the_applied_spec() {
    a_panic_in("deployment").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_job_supervisor_cancels_its_executions_once_and_restarts_it() {
    a_panic_in("jobs").await;
}

/// The scheduled times of a job's executions, in order.
async fn scheduled(node: &Node, job: &str) -> Vec<chrono::DateTime<chrono::Utc>> {
    node.executor()
        .list(job)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| match r.meta.trigger {
            JobTrigger::Scheduler { scheduled_for } => scheduled_for,
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_restarted_cron_actor_fires_each_scheduled_time_once() {
    use chrono::TimeZone;
    let anchor = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 30).unwrap();
    let runtime = arbor::MockRuntime::new();
    let node = Node::start(
        NodeConfig::new(Arc::new(runtime)).clock(arbor::TokioClock::starting_at(anchor)),
    )
    .await
    .unwrap();
    let spec = Deployment::from_yaml(
        r#"
jobs:
  tick:
    command: ["true"]
    schedule: "* * * * *"
"#,
    )
    .unwrap();
    node.deploy(&spec).await.unwrap();
    eventually_async("12:01 fires", || async {
        scheduled(&node, "tick").await.len() == 1
    })
    .await;
    // The cron actor fails right after a fire and is restarted empty; the
    // executor puts the schedule back from its own records.
    assert!(node.inject_panic("cron"));
    eventually_async("the cron actor is back with its schedule", || async {
        node.executor()
            .schedules()
            .await
            .is_ok_and(|s| s.iter().any(|s| s.job == "tick"))
    })
    .await;
    eventually_async("12:02 and 12:03 fire", || async {
        scheduled(&node, "tick").await.len() >= 3
    })
    .await;
    let times = scheduled(&node, "tick").await;
    let mut unique = times.clone();
    unique.dedup();
    assert_eq!(times, unique, "a scheduled time fired twice: {times:?}");
    assert_eq!(
        times[..3],
        [1, 2, 3].map(|m| chrono::Utc.with_ymd_and_hms(2026, 1, 1, 12, m, 0).unwrap())
    );
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_waiting_out_its_back_off_runs_on_the_restarted_executor() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = ProcessRuntime::builder().build().unwrap();
    let node = Node::start(NodeConfig::new(Arc::new(runtime)).state_dir(dir.path()))
        .await
        .unwrap();
    let spec = Deployment::from_yaml(
        r#"
jobs:
  flaky:
    command: [sh, -c, "exit 1"]
    backoff_limit: 1
    retry_backoff: {initial: 1s, max: 1s}
"#,
    )
    .unwrap();
    node.deploy(&spec).await.unwrap();
    let first = node
        .executor()
        .trigger("flaky", JobTrigger::Cli)
        .await
        .unwrap();
    let failed = node.executor().wait(first).await.unwrap();
    assert!(matches!(failed.status.state, JobState::Failed { .. }));
    // The retry waits out its second of back-off; the executor fails now.
    assert!(node.inject_panic("executor"));
    let retry = eventually_some_async("the retry ran on the restarted executor", || async {
        node.executor()
            .list("flaky")
            .await
            .ok()?
            .into_iter()
            .find(|r| r.meta.attempt == 2 && r.status.state.is_terminal())
    })
    .await;
    assert_eq!(retry.meta.retry_of, Some(first));
    let tree = node.tree().await.unwrap();
    assert_eq!(part(&tree, "executor").restarts, 1);
    node.shutdown(Duration::from_secs(5)).await;
}
