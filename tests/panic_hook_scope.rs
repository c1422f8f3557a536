//! The panic hook rate-limits supervised actors' panics only: every other
//! panic of the process reaches the hook that was there before, unchanged.
//!
//! One test in this file on purpose: the hook is process-wide.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};
use std::time::Duration;

use arbor::{testing::*, *};

#[tokio::test(start_paused = true)]
async fn only_supervised_actors_panics_are_rate_limited_and_others_reach_the_previous_hook() {
    if std::env::var("ARBOR_PANIC_HOOK").is_ok() {
        eprintln!("skipped: ARBOR_PANIC_HOOK is set, the hook is not installed");
        return;
    }
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    std::panic::set_hook(Box::new(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    assert!(arbor::panics::install());

    // A panic outside any supervised actor: the previous hook sees it, and
    // arbor does not count it.
    let before = arbor::panics::stats();
    assert!(
        std::thread::spawn(|| panic!("the application's own"))
            .join()
            .is_err()
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert_eq!(arbor::panics::stats(), before);

    // Panics of a supervised child: all counted, a few passed on.
    let j = Journal::new();
    let spec = SupervisorSpec::new("storm")
        .intensity(1_000, Duration::from_secs(1))
        .child(probe("p", &j));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let mut ev = sup.events();
    for n in 0..50 {
        exit_child(&sup, "p", ProbeExit::Panic(format!("storm {n}"))).await;
        ev.wait_for(restarted("p")).await.unwrap();
    }
    let after = arbor::panics::stats();
    assert_eq!(after.total - before.total, 50);
    assert_eq!(
        seen.load(Ordering::SeqCst) - 1,
        after.reported - before.reported
    );
    assert_eq!(
        after.reported + after.suppressed,
        after.total,
        "every supervised panic is either reported or counted as suppressed"
    );
    assert!(after.suppressed > before.suppressed);
    sup.shutdown().await;
}
