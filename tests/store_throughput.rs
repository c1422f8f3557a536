//! Capture throughput: 1 GiB of ~80-byte lines in 64 KiB chunks through
//! `ExecutionOutput::write` (stdout.log, full.log and the live tails)
//! against a plain `std::fs::File` copy of the same chunks.
//!
//! A measurement, not a check: run it on purpose, in release, with
//! `cargo test --release --test store_throughput -- --ignored --nocapture`
//! (`ARBOR_THROUGHPUT_MIB` sets the volume, default 1024).

use std::{collections::BTreeMap, fs::File, io::Write, time::Instant};

use arbor::runtime::LogStream;
use arbor::store::{LogSnapshotQuery, SnapshotStream, Store};
use arbor::{ExecutionId, ExecutionMeta, ExecutionStatus, JobTrigger};
use chrono::Utc;

const CHUNK: usize = 64 * 1024;

/// Log-like lines of 60 to 100 bytes (80 on average), a few MiB of them.
fn pattern() -> Vec<u8> {
    let mut text = Vec::new();
    let mut i = 0u64;
    while text.len() < 4 << 20 {
        let width = 60 + (i * 7919 % 41) as usize;
        let mut line =
            format!("level=info req={i:010} msg=\"handled request\" path=/api/v1/items ");
        line.truncate(width - 1);
        while line.len() < width - 1 {
            line.push('x');
        }
        line.push('\n');
        text.extend_from_slice(line.as_bytes());
        i += 1;
    }
    text
}

/// Chunks of `CHUNK` bytes cycling through `pattern`, `total` bytes in all.
fn chunks(pattern: &[u8], total: usize) -> impl Iterator<Item = &[u8]> {
    let n = pattern.len() / CHUNK;
    (0..total / CHUNK).map(move |i| &pattern[(i % n) * CHUNK..(i % n + 1) * CHUNK])
}

fn rate(bytes: usize, secs: f64) -> String {
    format!("{:.0} MB/s", bytes as f64 / secs / 1e6)
}

#[test]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
fn capture_throughput_against_a_plain_file_copy() {
    let mib: usize = std::env::var("ARBOR_THROUGHPUT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let total = mib << 20;
    let pattern = pattern();
    let lines_per_byte = memchr::memchr_iter(b'\n', &pattern).count() as f64 / pattern.len() as f64;
    let lines = (total as f64 * lines_per_byte) as u64;
    let tmp = tempfile::tempdir().unwrap();

    // Plain copy.
    let raw_path = tmp.path().join("raw.log");
    let t = Instant::now();
    let mut raw = File::create(&raw_path).unwrap();
    for c in chunks(&pattern, total) {
        raw.write_all(c).unwrap();
    }
    drop(raw);
    let raw_secs = t.elapsed().as_secs_f64();
    std::fs::remove_file(&raw_path).unwrap();

    // Through the store.
    let store = Store::open(tmp.path().join("state")).unwrap();
    let meta = ExecutionMeta {
        id: ExecutionId::new(),
        job: "bench".into(),
        attempt: 1,
        retry_of: None,
        command: vec![],
        image: None,
        trigger: JobTrigger::Cli,
        env: BTreeMap::new(),
        cwd: None,
        created_at: Utc::now(),
    };
    let files = store
        .create(&meta, &ExecutionStatus::pending(Utc::now()))
        .unwrap();
    let out = files.output(1 << 20).unwrap();
    let t = Instant::now();
    for c in chunks(&pattern, total) {
        out.write(LogStream::Stdout, c);
    }
    out.close(LogStream::Stdout);
    out.close(LogStream::Stderr);
    out.finish().unwrap();
    let store_secs = t.elapsed().as_secs_f64();
    let full_bytes = std::fs::metadata(files.full_log_path()).unwrap().len();
    assert_eq!(
        std::fs::metadata(files.stdout_path()).unwrap().len(),
        total as u64
    );
    let tail = out.snapshot(LogSnapshotQuery::tail(SnapshotStream::Full, 1));
    assert_eq!(tail.lines, 1);

    println!(
        "{mib} MiB in 64 KiB chunks, ~{lines} lines of ~80 bytes:\n  \
         std::fs::File copy:      {raw_secs:.2} s, {}\n  \
         ExecutionOutput::write:  {store_secs:.2} s, {} of output ({} written: stdout.log + {} MiB full.log), {:.1} M lines/s",
        rate(total, raw_secs),
        rate(total, store_secs),
        rate(total + full_bytes as usize, store_secs),
        full_bytes >> 20,
        lines as f64 / store_secs / 1e6,
    );
}
