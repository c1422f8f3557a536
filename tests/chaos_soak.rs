//! The seeded soak: 1,000 supervised children and a stream of jobs under
//! more than 100,000 injected faults on the paused clock, with every
//! invariant checked. Prints the totals.

use std::time::{Duration, Instant};

use arbor::{
    Deployment,
    runtime::fault::FaultKind,
    testing::chaos::{ALL_KINDS, Chaos},
};

/// Ten services of 100 replicas under three policies, an on-demand job
/// with an init step and a cron job.
fn deployment() -> Deployment {
    let mut yaml = String::from(
        "name: soak\nsupervisor: {max_restarts: 1000000, restart_window: 1s}\nservices:\n",
    );
    for i in 0..10 {
        let policy = match i % 3 {
            0 => {
                "on_limit: backoff\n    max_restarts: 5\n    restart_window: 10s\n    backoff: {initial: 100ms, max: 2s, multiplier: 2, jitter: 0.2, reset_after: 30s}"
            }
            1 => "max_restarts: 1000000\n    restart_window: 1s",
            _ => {
                "restart: transient\n    exit_codes: {0: retry}\n    max_restarts: 1000000\n    restart_window: 1s"
            }
        };
        yaml.push_str(&format!(
            "  svc{i}:\n    command: [\"serve\"]\n    replicas: 100\n    {policy}\n"
        ));
    }
    yaml.push_str(
        "jobs:\n  batch:\n    init:\n      - command: [\"prepare\"]\n    command: [\"batch\"]\n    deadline: 10s\n    max_concurrent: 20\n  tick:\n    command: [\"tick\"]\n    schedule: \"* * * * * *\"\n",
    );
    Deployment::from_yaml(&yaml).expect("valid soak spec")
}

#[tokio::test(start_paused = true)]
async fn a_thousand_children_survive_a_hundred_thousand_faults_with_every_invariant_held() {
    if std::env::var_os("CHAOS_DEBUG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("arbor=debug")
            .with_writer(std::io::stderr)
            .try_init();
    }
    let wall = Instant::now();
    let report = Chaos::new(deployment())
        .seed(2026)
        .rate(
            std::env::var("SOAK_RATE")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0.5),
        )
        .duration(Duration::from_secs(
            std::env::var("SOAK_SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(400),
        ))
        .kill_every(Duration::from_millis(2))
        .job_every(Duration::from_millis(20))
        .job_runtime(Duration::from_millis(500))
        .max_delay(Duration::from_secs(1))
        // Lost exits leave a replica "running" until shutdown; over minutes
        // they would freeze the tree. The short runs in chaos_harness.rs
        // include them.
        .kinds(ALL_KINDS.into_iter().filter(|k| *k != FaultKind::LoseExit))
        .run()
        .await
        .unwrap();
    println!("{report}");
    println!(
        "soak: {} faults, {} children, wall time {:.1}s",
        report.total_faults(),
        1000,
        wall.elapsed().as_secs_f64()
    );
    let tree = report.observation.tree_after_quiet.as_ref().expect("tree");
    let children: usize = tree.children.iter().map(|s| s.children.len()).sum();
    assert!(children >= 1000, "{children} children");
    assert!(report.total_faults() >= 100_000, "{report}");
    assert!(report.passed(), "{report}");
}
