//! A restart storm of panicking children does not pay for a backtrace per
//! panic: the hook reports a few in full and counts the rest.
//!
//! One test in this file on purpose: the hook is process-wide.

use std::time::Duration;

use arbor::{testing::*, *};

#[tokio::test(start_paused = true)]
async fn a_panic_storm_is_reported_a_few_times_and_counted() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("storm")
        .intensity(100_000, Duration::from_secs(1))
        .child(probe("p", &j));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    assert!(arbor::panics::install() || std::env::var("ARBOR_PANIC_HOOK").is_ok());
    let before = arbor::panics::stats();
    let mut ev = sup.events();
    let started = std::time::Instant::now();
    for n in 0..1_000 {
        exit_child(&sup, "p", ProbeExit::Panic(format!("storm {n}"))).await;
        ev.wait_for(restarted("p")).await.unwrap();
    }
    let elapsed = started.elapsed();
    let after = arbor::panics::stats();
    assert_eq!(after.total - before.total, 1_000);
    let budget = u64::from(arbor::panics::BURST) + elapsed.as_secs() + 1;
    assert!(
        after.reported - before.reported <= budget,
        "reported {} in {elapsed:?}, budget {budget}",
        after.reported - before.reported
    );
    assert_eq!(sup.which_children().await.unwrap()[0].restart_count, 1_000);
    sup.shutdown().await;
}
