//! Deterministic jitter: a pure function of the job name and the jitter.

use std::time::Duration;

use arbor::{cron::fnv1a64, jitter_offset};

#[test]
fn the_same_job_always_gets_the_same_offset() {
    let jitter = Duration::from_secs(3600);
    let first = jitter_offset("nightly-backup", jitter);
    for _ in 0..100 {
        assert_eq!(jitter_offset("nightly-backup", jitter), first);
    }
    // Pinned (computed independently): a change of hash would move every
    // job on every node.
    assert_eq!(first, Duration::from_millis(PINNED_BACKUP_MS));
    assert_eq!(
        jitter_offset("report", Duration::from_secs(60)),
        Duration::from_millis(PINNED_REPORT_MS)
    );
    assert_eq!(fnv1a64(b"nightly-backup"), PINNED_FNV);
}

const PINNED_BACKUP_MS: u64 = 1_752_335;
const PINNED_REPORT_MS: u64 = 50_292;
const PINNED_FNV: u64 = 0x1f16_14e0_18ce_3cdf;

#[test]
fn offsets_stay_within_the_jitter() {
    let jitters = [
        Duration::from_millis(1),
        Duration::from_millis(7),
        Duration::from_secs(1),
        Duration::from_secs(3600),
        Duration::from_secs(366 * 86400),
        Duration::MAX,
    ];
    for jitter in jitters {
        for i in 0..2_000 {
            let offset = jitter_offset(&format!("job-{i}"), jitter);
            assert!(offset < jitter, "{offset:?} for {jitter:?}");
        }
    }
}

#[test]
fn offsets_spread_evenly_across_jobs() {
    let jitter = Duration::from_secs(60);
    let mut bins = [0u32; 10];
    for i in 0..10_000 {
        let offset = jitter_offset(&format!("job-{i}"), jitter);
        bins[(offset.as_millis() / 6_000) as usize] += 1;
    }
    for (i, n) in bins.iter().enumerate() {
        assert!((800..=1200).contains(n), "bin {i} has {n}: {bins:?}");
    }
}

#[test]
fn similar_names_get_different_offsets() {
    let jitter = Duration::from_secs(60);
    let a = jitter_offset("job-1", jitter);
    let b = jitter_offset("job-2", jitter);
    assert_ne!(a, b);
}

#[test]
fn no_jitter_means_no_offset() {
    assert_eq!(jitter_offset("a", Duration::ZERO), Duration::ZERO);
    assert_eq!(
        jitter_offset("a", Duration::from_micros(999)),
        Duration::ZERO
    );
}
