//! A probe's verdict from its checks, as a table: thresholds in a row,
//! liveness passing from the start, readiness undecided until it passes.

use arbor::{
    actors::probe_actor::ProbeCounter,
    spec::{ProbeKind, ProbeSpec},
};

/// Feeds `checks` ('+' pass, '-' fail) and returns the verdicts reported,
/// one char per check ('P' passed, 'F' failed, '.' no change).
fn run(kind: ProbeKind, success: u32, failure: u32, checks: &str) -> String {
    let mut spec = ProbeSpec::exec(["true"]).failure_threshold(failure);
    spec.success_threshold = success;
    let mut counter = ProbeCounter::new(kind);
    checks
        .chars()
        .map(|c| match counter.record(c == '+', &spec) {
            Some(true) => 'P',
            Some(false) => 'F',
            None => '.',
        })
        .collect()
}

#[test]
fn liveness_fails_only_after_failure_threshold_failures_in_a_row() {
    assert_eq!(run(ProbeKind::Liveness, 1, 3, "--+--+---"), "........F");
}

#[test]
fn liveness_starts_passing_so_a_first_pass_reports_nothing() {
    assert_eq!(run(ProbeKind::Liveness, 1, 1, "++-+"), "..FP");
}

#[test]
fn readiness_reports_its_first_pass_and_each_change_after() {
    assert_eq!(run(ProbeKind::Readiness, 1, 2, "+++--+-+"), "P...FP..");
}

#[test]
fn readiness_needs_success_threshold_passes_in_a_row() {
    assert_eq!(run(ProbeKind::Readiness, 3, 1, "++-+++"), "..F..P");
}

#[test]
fn startup_is_undecided_until_it_passes_or_fails_its_threshold() {
    assert_eq!(run(ProbeKind::Startup, 1, 3, "--+"), "..P");
    assert_eq!(run(ProbeKind::Startup, 1, 3, "---"), "..F");
}
