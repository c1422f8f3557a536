//! Output capture: the three log files, the live tail and its snapshots,
//! snapshots of finished logs read from disk.

use std::{collections::BTreeMap, fs, io::Write, sync::Arc, time::Duration};

use arbor::runtime::LogStream::{Stderr, Stdout};
use arbor::store::{
    ExecutionFiles, ExecutionOutput, LogSnapshotQuery, SnapshotStream, Store, read_snapshot,
};
use arbor::testing::within;
use arbor::{ExecutionId, ExecutionMeta, ExecutionStatus, JobTrigger, Output, OutputSink};
use chrono::{DateTime, Utc};

fn execution() -> (tempfile::TempDir, Store, ExecutionFiles) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let meta = ExecutionMeta {
        id: ExecutionId::new(),
        job: "job".into(),
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
    (tmp, store, files)
}

/// `full.log` split into (time, label, text) per line.
fn full_lines(files: &ExecutionFiles) -> Vec<(DateTime<Utc>, String, String)> {
    let text = String::from_utf8_lossy(&fs::read(files.full_log_path()).unwrap()).into_owned();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "full.log ends with a newline"
    );
    text.lines()
        .map(|l| {
            let (time, rest) = l.split_once(' ').expect("a time");
            let (label, line) = rest.split_once(' ').unwrap_or((rest, ""));
            let time = DateTime::parse_from_rfc3339(time)
                .unwrap_or_else(|e| panic!("{time:?} is RFC 3339: {e}"))
                .with_timezone(&Utc);
            (time, label.to_owned(), line.to_owned())
        })
        .collect()
}

fn labelled(files: &ExecutionFiles) -> Vec<(String, String)> {
    full_lines(files)
        .into_iter()
        .map(|(_, label, line)| (label, line))
        .collect()
}

fn pair(label: &str, line: &str) -> (String, String) {
    (label.to_owned(), line.to_owned())
}

#[test]
fn output_with_a_trailing_newline_lands_in_all_three_logs() {
    let (_tmp, _store, files) = execution();
    let out = files.output(1 << 20).unwrap();
    out.write(Stdout, b"one\ntwo\n");
    out.write(Stderr, b"oops\n");
    out.close(Stdout);
    out.close(Stderr);
    out.finish().unwrap();
    assert_eq!(fs::read(files.stdout_path()).unwrap(), b"one\ntwo\n");
    assert_eq!(fs::read(files.stderr_path()).unwrap(), b"oops\n");
    assert_eq!(
        labelled(&files),
        [
            pair("[STDOUT]", "one"),
            pair("[STDOUT]", "two"),
            pair("[STDERR]", "oops")
        ]
    );
}

#[test]
fn a_partial_last_line_is_held_until_its_stream_closes_then_flushed_with_a_newline() {
    let (_tmp, _store, files) = execution();
    let out = files.output(1 << 20).unwrap();
    out.write(Stdout, b"first\nsecond wi");
    out.write(Stderr, b"no newline at all");
    // Raw logs have the bytes at once; full.log only the complete line.
    assert_eq!(fs::read(files.stdout_path()).unwrap(), b"first\nsecond wi");
    assert_eq!(labelled(&files), [pair("[STDOUT]", "first")]);
    out.write(Stdout, b"thout newline");
    out.close(Stdout);
    assert_eq!(
        labelled(&files),
        [
            pair("[STDOUT]", "first"),
            pair("[STDOUT]", "second without newline")
        ]
    );
    // finish flushes a stream that never closed.
    out.finish().unwrap();
    assert_eq!(
        fs::read(files.stdout_path()).unwrap(),
        b"first\nsecond without newline",
        "the raw log keeps the bytes exactly"
    );
    assert_eq!(fs::read(files.stderr_path()).unwrap(), b"no newline at all");
    assert_eq!(
        labelled(&files).last().unwrap(),
        &pair("[STDERR]", "no newline at all")
    );
}

#[test]
fn interleaved_stdout_and_stderr_chunks_give_labelled_lines_with_rfc3339_times_in_order() {
    let (_tmp, _store, files) = execution();
    let out = files.output(1 << 20).unwrap();
    let before = Utc::now();
    out.write(Stdout, b"o1\no2");
    out.write(Stderr, b"e1\n");
    out.write(Stdout, b"-end\no3\n");
    out.write(Stderr, b"e2\ne3\n");
    out.write_line(Stdout, "o4");
    out.close(Stdout);
    out.close(Stderr);
    out.finish().unwrap();
    let after = Utc::now();
    let lines = full_lines(&files);
    let got: Vec<(String, String)> = lines
        .iter()
        .map(|(_, l, t)| (l.clone(), t.clone()))
        .collect();
    assert_eq!(
        got,
        [
            pair("[STDOUT]", "o1"),
            pair("[STDERR]", "e1"),
            pair("[STDOUT]", "o2-end"),
            pair("[STDOUT]", "o3"),
            pair("[STDERR]", "e2"),
            pair("[STDERR]", "e3"),
            pair("[STDOUT]", "o4"),
        ]
    );
    let times: Vec<DateTime<Utc>> = lines.iter().map(|(t, _, _)| *t).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "times never go back"
    );
    assert!(times[0] >= before.trunc_subsecs(6) && *times.last().unwrap() <= after);
    // Lines completed by one chunk share its time.
    assert_eq!(times[4], times[5]);
}

use chrono::SubsecRound;

#[test]
fn concurrent_writers_of_both_streams_never_mix_lines() {
    let (_tmp, _store, files) = execution();
    let out = files.output(1 << 16).unwrap();
    let sink = Output::new(out.clone());
    let threads: Vec<_> = [(Stdout, "out"), (Stderr, "err")]
        .into_iter()
        .map(|(stream, name)| {
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut text = String::new();
                for i in 0..5000 {
                    text.push_str(&format!("{name} {i:05}\n"));
                }
                // Chunks that cut lines anywhere.
                for chunk in text.as_bytes().chunks(37) {
                    sink.0.write(stream, chunk);
                }
                sink.0.close(stream);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(out.closed());
    out.finish().unwrap();
    let lines = labelled(&files);
    assert_eq!(lines.len(), 10_000);
    for (label, name) in [("[STDOUT]", "out"), ("[STDERR]", "err")] {
        let of: Vec<&String> = lines
            .iter()
            .filter(|(l, _)| l == label)
            .map(|(_, t)| t)
            .collect();
        let expected: Vec<String> = (0..5000).map(|i| format!("{name} {i:05}")).collect();
        assert_eq!(
            of,
            expected.iter().collect::<Vec<_>>(),
            "{label} lines whole and in order"
        );
    }
}

#[test]
fn non_utf8_bytes_are_kept_raw_on_disk_and_shown_lossy_in_snapshots() {
    let (_tmp, _store, files) = execution();
    let out = files.output(1 << 20).unwrap();
    let bytes = b"caf\xc3\xa9 \xff\xfe bin\x00ary\n";
    out.write(Stdout, bytes);
    out.close(Stdout);
    out.close(Stderr);
    out.finish().unwrap();
    assert_eq!(fs::read(files.stdout_path()).unwrap(), bytes);
    let full = fs::read(files.full_log_path()).unwrap();
    assert!(full.ends_with(b" [STDOUT] caf\xc3\xa9 \xff\xfe bin\x00ary\n"));
    let expected = "café \u{FFFD}\u{FFFD} bin\0ary\n";
    let live = out.snapshot(LogSnapshotQuery::all(SnapshotStream::Stdout));
    assert_eq!(live.text, expected);
    assert_eq!(
        (live.observed_bytes, live.included_bytes),
        (bytes.len() as u64, bytes.len() as u64)
    );
    let disk = read_snapshot(files.dir(), LogSnapshotQuery::all(SnapshotStream::Stdout)).unwrap();
    assert_eq!(disk, live);
}

#[test]
fn live_tail_is_bounded_by_max_log_size_with_truncation_figures() {
    let (_tmp, _store, files) = execution();
    let out = files.output(1024).unwrap();
    // 200 lines of 20 bytes: 4000 bytes, the tail keeps 1024.
    for i in 0..200 {
        out.write(Stdout, format!("line {i:03} ..........\n").as_bytes());
    }
    let s = out.snapshot(LogSnapshotQuery::all(SnapshotStream::Stdout));
    assert_eq!(s.observed_bytes, 4000);
    // 1024 bytes kept, 4 of them the end of a cut line: 51 whole lines.
    assert_eq!((s.included_bytes, s.lines, s.truncated), (1020, 51, true));
    assert!(s.text.starts_with("line 149 "), "{:?}", &s.text[..20]);
    assert!(s.text.ends_with("line 199 ..........\n"));

    let s = out.snapshot(LogSnapshotQuery::tail(SnapshotStream::Stdout, 3));
    assert_eq!(
        s.text,
        "line 197 ..........\nline 198 ..........\nline 199 ..........\n"
    );
    assert_eq!(
        (s.lines, s.included_bytes, s.observed_bytes, s.truncated),
        (3, 60, 4000, true)
    );

    let s = out.snapshot(LogSnapshotQuery {
        stream: SnapshotStream::Stdout,
        tail_lines: None,
        max_bytes: Some(50),
    });
    assert_eq!(s.text, "line 198 ..........\nline 199 ..........\n");
    assert_eq!(s.included_bytes, 40);

    // The combined tail has the same bound, in whole full.log lines.
    let s = out.snapshot(LogSnapshotQuery::all(SnapshotStream::Full));
    assert!(s.included_bytes <= 1024 && s.truncated);
    assert_eq!(
        s.observed_bytes,
        fs::metadata(files.full_log_path()).unwrap().len()
    );
    assert!(s.text.lines().all(|l| l.contains(" [STDOUT] line ")));
    assert!(s.text.ends_with(" [STDOUT] line 199 ..........\n"));

    // Nothing of stderr.
    let s = out.snapshot(LogSnapshotQuery::all(SnapshotStream::Stderr));
    assert_eq!(
        (s.text.as_str(), s.observed_bytes, s.truncated, s.lines),
        ("", 0, false, 0)
    );

    // The file has everything.
    assert_eq!(fs::metadata(files.stdout_path()).unwrap().len(), 4000);
}

#[test]
fn a_tail_of_a_huge_log_on_disk_is_read_without_loading_the_file() {
    let (_tmp, _store, files) = execution();
    // 64 GiB of (sparse) zeros, then some lines: reading it all would
    // neither fit in memory nor end in time.
    let huge: u64 = 64 << 30;
    {
        let f = fs::File::create(files.stdout_path()).unwrap();
        f.set_len(huge).unwrap();
    }
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(files.stdout_path())
        .unwrap();
    let mut tail = String::from("\n");
    for i in 0..1000 {
        tail.push_str(&format!("line {i}\n"));
    }
    f.write_all(tail.as_bytes()).unwrap();
    let size = huge + tail.len() as u64;

    let s = read_snapshot(
        files.dir(),
        LogSnapshotQuery::tail(SnapshotStream::Stdout, 3),
    )
    .unwrap();
    assert_eq!(s.text, "line 997\nline 998\nline 999\n");
    assert_eq!(
        (s.lines, s.observed_bytes, s.included_bytes, s.truncated),
        (3, size, 27, true)
    );

    // No limits: the default byte cap applies, from a line start.
    let s = read_snapshot(files.dir(), LogSnapshotQuery::all(SnapshotStream::Stdout)).unwrap();
    assert!(s.included_bytes <= arbor::store::DEFAULT_DISK_SNAPSHOT_BYTES as u64);
    assert!(s.truncated && s.observed_bytes == size);
    assert!(s.text.ends_with("line 999\n"));

    // The byte cap wins over the line count, and cuts at a line start.
    let s = read_snapshot(
        files.dir(),
        LogSnapshotQuery {
            stream: SnapshotStream::Stdout,
            tail_lines: Some(2),
            max_bytes: Some(12),
        },
    )
    .unwrap();
    assert_eq!(s.text, "line 999\n");
}

#[test]
fn snapshots_from_disk_match_the_live_tail_when_nothing_was_dropped() {
    let (_tmp, store, files) = execution();
    let out = files.output(1 << 20).unwrap();
    for i in 0..100 {
        out.write_line(if i % 3 == 0 { Stderr } else { Stdout }, &format!("l{i}"));
    }
    out.write(Stdout, b"partial");
    out.close(Stdout);
    out.close(Stderr);
    out.finish().unwrap();
    for stream in [
        SnapshotStream::Stdout,
        SnapshotStream::Stderr,
        SnapshotStream::Full,
    ] {
        for query in [
            LogSnapshotQuery::all(stream),
            LogSnapshotQuery::tail(stream, 7),
            LogSnapshotQuery {
                stream,
                tail_lines: Some(50),
                max_bytes: Some(100),
            },
        ] {
            let live = out.snapshot(query);
            let disk = store.read_snapshot(files.id(), query).unwrap();
            assert_eq!(live, disk, "{query:?}");
        }
    }
    let s = out.snapshot(LogSnapshotQuery::tail(SnapshotStream::Stdout, 1));
    assert_eq!((s.text.as_str(), s.lines), ("partial", 1));
    // A log that has no file yet reads as empty.
    fs::remove_file(files.stderr_path()).unwrap();
    let s = read_snapshot(files.dir(), LogSnapshotQuery::all(SnapshotStream::Stderr)).unwrap();
    assert_eq!(s, Default::default());
}

#[tokio::test]
async fn wait_closed_resolves_once_both_streams_closed() {
    let out = ExecutionOutput::in_memory(1024);
    let waiter = tokio::spawn({
        let out = out.clone();
        async move { out.wait_closed().await }
    });
    out.close(Stdout);
    out.close(Stdout);
    assert!(!out.closed());
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    out.close(Stderr);
    within("wait_closed", waiter).await.unwrap();
    assert!(out.closed());
    // At once when already closed.
    within("wait_closed again", out.wait_closed()).await;
    // And it can be bounded while the streams stay open.
    let open = ExecutionOutput::in_memory(1024);
    assert!(
        tokio::time::timeout(Duration::from_millis(10), open.wait_closed())
            .await
            .is_err()
    );
}

#[test]
fn a_write_error_is_recorded_and_reported_by_finish_without_panicking() {
    let (_tmp, _store, files) = execution();
    // Writes to /dev/full fail with ENOSPC.
    std::os::unix::fs::symlink("/dev/full", files.stdout_path()).unwrap();
    let out = files.output(1024).unwrap();
    out.write(Stdout, b"lost on disk\n");
    out.write(Stderr, b"kept\n");
    out.close(Stdout);
    out.close(Stderr);
    let message = out.error().expect("the error is recorded");
    assert!(message.starts_with(&format!(
        "failed to write {}",
        files.stdout_path().display()
    )));
    let err = out.finish().unwrap_err();
    assert_eq!(err.to_string(), message);
    // Everything else goes on.
    assert_eq!(fs::read(files.stderr_path()).unwrap(), b"kept\n");
    assert_eq!(labelled(&files).len(), 2);
    let s = out.snapshot(LogSnapshotQuery::all(SnapshotStream::Stdout));
    assert_eq!(s.text, "lost on disk\n");
}

#[test]
fn an_output_is_an_output_sink_for_a_container_spec() {
    let out = ExecutionOutput::in_memory(1024);
    let spec = arbor::ContainerSpec::command("c", ["true"]).output(Output::new(out.clone()));
    let sink: Arc<dyn OutputSink> = spec.output.unwrap().0;
    sink.write(Stdout, b"via the trait\n");
    sink.close(Stdout);
    sink.close(Stderr);
    assert!(out.closed());
    assert_eq!(
        out.snapshot(LogSnapshotQuery::all(SnapshotStream::Stdout))
            .text,
        "via the trait\n"
    );
    assert_eq!(out.observed_bytes(SnapshotStream::Stdout), 14);
}

#[tokio::test]
async fn a_real_process_output_lands_in_the_logs_through_the_process_runtime() {
    use arbor::{ContainerSpec, ExitStatus, ProcessRuntime, Runtime};
    let (_tmp, _store, files) = execution();
    let out = files.output(1 << 20).unwrap();
    let rt = ProcessRuntime::builder()
        .cgroups(false)
        .build()
        .expect("process runtime");
    let spec = ContainerSpec::shell(
        "writer",
        r#"printf 'a\nb\n'; printf 'err\n' >&2; printf '\377raw'; printf 'tail' >&2"#,
    )
    .output(Output::new(out.clone()));
    let id = rt.create(&spec).await.unwrap();
    rt.start(&id).await.unwrap();
    assert_eq!(rt.wait(&id).await.unwrap(), ExitStatus::Code(0));
    within("both streams close", out.wait_closed()).await;
    out.finish().unwrap();
    rt.remove(&id).await.unwrap();
    assert_eq!(fs::read(files.stdout_path()).unwrap(), b"a\nb\n\xffraw");
    assert_eq!(fs::read(files.stderr_path()).unwrap(), b"err\ntail");
    let mut lines = labelled(&files);
    // Streams are read concurrently: only each stream's order is fixed.
    let stdout: Vec<_> = lines
        .iter()
        .filter(|(l, _)| l == "[STDOUT]")
        .cloned()
        .collect();
    assert_eq!(
        stdout,
        [
            pair("[STDOUT]", "a"),
            pair("[STDOUT]", "b"),
            pair("[STDOUT]", "\u{FFFD}raw")
        ]
    );
    lines.retain(|(l, _)| l == "[STDERR]");
    assert_eq!(lines, [pair("[STDERR]", "err"), pair("[STDERR]", "tail")]);
}

#[test]
fn a_stream_without_newlines_is_split_into_bounded_full_log_lines_and_nothing_is_lost() {
    let (_tmp, _store, files) = execution();
    let out = files.output(1 << 20).unwrap();
    let data: Vec<u8> = (0..200 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    for chunk in data.chunks(1000) {
        out.write(Stdout, chunk);
    }
    out.close(Stdout);
    out.finish().unwrap();
    assert_eq!(fs::read(files.stdout_path()).unwrap(), data);
    let lines = labelled(&files);
    assert!(lines.len() >= 3, "held back at most 64 KiB at a time");
    assert!(
        lines
            .iter()
            .all(|(l, t)| l == "[STDOUT]" && t.len() <= 65 * 1024)
    );
    let joined: String = lines.into_iter().map(|(_, t)| t).collect();
    assert_eq!(joined.as_bytes(), data);
}
