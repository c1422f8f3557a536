//! Run: cargo run --example embedded
//!
//! An application embedding a [`Node`] in-process, with no daemon: it starts
//! a service and a job from code, follows the node's events, triggers the
//! job, waits for it, reads its logs and the tree, then shuts everything
//! down. Records and logs go to a temporary state dir.

use std::{sync::Arc, time::Duration};

use arbor::{
    ContainerSpec, JobSpec, JobTrigger, LogSnapshotQuery, Node, NodeConfig, ProcessRuntime,
    SnapshotStream, SupervisorSpec,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let state = std::env::temp_dir().join(format!("arbor-embedded-{}", std::process::id()));
    let runtime = Arc::new(ProcessRuntime::builder().build()?);
    let node = Node::start(NodeConfig::new(runtime.clone()).state_dir(&state)).await?;

    // Print every event as it happens.
    let mut events = node.events();
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            println!("event: {}", serde_json::to_string(&e).unwrap_or_default());
        }
    });

    // A service from code: two replicas of a long-running command.
    node.start_service(
        "ticker",
        SupervisorSpec::service(
            "ticker",
            runtime.clone(),
            ContainerSpec::shell("ticker", "while :; do sleep 1; done"),
            2,
        ),
    )
    .await?;

    // A job from code, triggered once.
    let mut report = JobSpec::shell("report", "echo building report; sleep 1; echo done");
    report.deadline = Some(Duration::from_secs(30));
    node.executor().register(report).await?;
    let id = node.executor().trigger("report", JobTrigger::Cli).await?;
    let record = node.executor().wait(id).await?;
    println!("report {id}: {}", record.status.state);
    let logs = node
        .executor()
        .logs(id, LogSnapshotQuery::all(SnapshotStream::Stdout))
        .await?;
    print!("report output:\n{}", logs.text);

    println!("\n{}", node.tree().await?);
    node.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&state);
    println!("stopped");
    Ok(())
}
