//! The node facade with real processes: services under the root supervisor,
//! the executor beside it, one tree, a graceful shutdown that leaves nothing.

use std::{sync::Arc, time::Duration};

use arbor::{
    ChildState, ContainerSpec, JobSpec, JobState, JobTrigger, Node, NodeConfig, ProcessRuntime,
    SupervisorSpec,
    runtime::process::procfs,
    testing::{eventually_async, eventually_some_async},
};

async fn node(state: &std::path::Path) -> (Node, ProcessRuntime) {
    let runtime = ProcessRuntime::builder().build().unwrap();
    let node = Node::start(NodeConfig::new(Arc::new(runtime.clone())).state_dir(state))
        .await
        .unwrap();
    (node, runtime)
}

/// A service whose processes carry `ARBOR_TEST_MARK=mark`, so a test finds
/// its own processes while other tests run in the same process.
fn service(node: &Node, name: &str, script: &str, replicas: usize, mark: &str) -> SupervisorSpec {
    SupervisorSpec::service(
        name,
        node.runtime().clone(),
        ContainerSpec::shell(name, script).env("ARBOR_TEST_MARK", mark),
        replicas,
    )
}

fn mine(mark: &str) -> Vec<i32> {
    procfs::with_env("ARBOR_TEST_MARK", mark)
}

#[tokio::test]
async fn services_run_under_the_root_and_jobs_under_the_executor_in_one_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _rt) = node(dir.path()).await;
    let mark = uuid::Uuid::new_v4().to_string();
    node.start_service("web", service(&node, "web", "sleep 1000", 2, &mark))
        .await
        .unwrap();
    let web = eventually_some_async("both replicas run", || async {
        node.service("web")
            .await
            .ok()
            .flatten()
            .filter(|s| s.running == 2)
    })
    .await;
    assert_eq!(web.replicas, 2);
    assert_eq!(web.state, ChildState::Running);

    let mut nap = JobSpec::command("nap", ["sleep", "1000"]);
    nap.env.insert("ARBOR_TEST_MARK".into(), mark.clone());
    node.executor().register(nap).await.unwrap();
    let id = node
        .executor()
        .trigger("nap", JobTrigger::Cli)
        .await
        .unwrap();
    eventually_async("the job runs", || async {
        node.executor().get(id).await.unwrap().unwrap().status.state == JobState::Running
    })
    .await;
    let tree = node.tree().await.unwrap();
    assert!(tree.find("web/web-0").is_some(), "{tree}");
    assert!(tree.find("web/web-1").is_some(), "{tree}");
    assert!(
        tree.children
            .iter()
            .any(|c| c.name == "node:jobs" && c.children.iter().any(|j| j.name == id.to_string())),
        "{tree}"
    );
    assert!(node.health().await.ok);

    node.shutdown(Duration::from_secs(2)).await;
    assert_eq!(
        node.executor()
            .get(id)
            .await
            .ok()
            .flatten()
            .map(|r| r.status.state),
        None,
        "the executor stopped"
    );
    assert!(mine(&mark).is_empty(), "nothing left running");
    assert!(
        node.start_service("late", service(&node, "late", "true", 1, &mark))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn restarting_a_service_restarts_its_replicas_and_stopping_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _rt) = node(dir.path()).await;
    let mark = uuid::Uuid::new_v4().to_string();
    node.start_service("worker", service(&node, "worker", "sleep 1000", 1, &mark))
        .await
        .unwrap();
    eventually_async("the worker runs", || async { !mine(&mark).is_empty() }).await;
    let before = mine(&mark);
    node.restart_service("worker").await.unwrap();
    eventually_async("the worker runs again", || async {
        node.service("worker")
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.running == 1)
    })
    .await;
    eventually_async("a new process replaced the old one", || async {
        let now = mine(&mark);
        !now.is_empty() && now.iter().all(|p| !before.contains(p))
    })
    .await;
    node.stop_service("worker").await.unwrap();
    assert!(node.service("worker").await.unwrap().is_none());
    assert!(mine(&mark).is_empty());
    node.shutdown(Duration::from_secs(1)).await;
}
