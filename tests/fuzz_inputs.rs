//! Fuzzed inputs, on stable Rust: a seeded generator makes structured
//! mutations of valid inputs (cut, repeat, swap lines, splice in hostile
//! tokens such as `18446744073709551615s`, YAML anchors, NULs, huge
//! numbers) and feeds them to the spec parser and validator, the cron
//! parser, the API's request bodies and query strings (through the real
//! router), and the CLI's value parsers. Nothing may panic, no input may
//! take long, and every error must name a field or a value.
//!
//! `ARBOR_FUZZ_CASES` sets the number of inputs per target (default
//! 10,000) and `ARBOR_FUZZ_SEED` the seed (default fixed, so a run is
//! repeatable); the counts are printed.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
    time::{Duration, Instant},
};

use arbor::{ApiConfig, CronSchedule, Deployment, MockRuntime, Node, NodeConfig};
use axum::{body::Body, http::Request};
use tower::ServiceExt;

/// The longest one input may take.
const PER_INPUT: Duration = Duration::from_secs(2);

fn cases() -> usize {
    std::env::var("ARBOR_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// xorshift64*: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn new(salt: u64) -> Self {
        let seed = std::env::var("ARBOR_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0x5eed_a7b0_u64);
        Self((seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Tokens that broke parsers somewhere, or could.
const HOSTILE: &[&str] = &[
    "18446744073709551615s",
    "18446744073709551615",
    "-1",
    "0",
    "1e309",
    "99999999999999999999999",
    "0s",
    "1ns",
    "100 years",
    "",
    " ",
    "\n",
    "\t",
    ":",
    "- ",
    "{",
    "}",
    "[",
    "]",
    "\"",
    "'",
    "\\",
    "\0",
    "&a ",
    "*a",
    "!!binary ",
    "~",
    "null",
    "true",
    "[]",
    "{}",
    "é",
    "\u{202e}",
    "../..",
    "/",
    "%",
    "%00",
    "?",
    "=",
    "&",
    "*/0",
    "60",
    "L",
    "#",
    "SIGKILL",
    "65",
    "TZ",
    "Mars/Olympus",
];

/// One to four structured mutations of `seed`.
fn mutate(rng: &mut Rng, seed: &str) -> String {
    let mut s: Vec<char> = seed.chars().collect();
    for _ in 0..=rng.below(4) {
        let len = s.len();
        match rng.below(7) {
            // Cut a range.
            0 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(16) + 1).min(len);
                s.drain(a..b);
            }
            // Repeat a range.
            1 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(24) + 1).min(len);
                let part: Vec<char> = s[a..b].to_vec();
                let at = rng.below(len + 1);
                for (i, c) in part.into_iter().enumerate() {
                    s.insert(at + i, c);
                }
            }
            // Replace a token-sized range with a hostile token.
            2 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(6)).min(len);
                let token: Vec<char> = rng.pick(HOSTILE).chars().collect();
                s.splice(a..b, token);
            }
            // Swap two lines.
            3 => {
                let text: String = s.iter().collect();
                let mut lines: Vec<&str> = text.lines().collect();
                if lines.len() > 1 {
                    let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
                    lines.swap(a, b);
                }
                s = lines.join("\n").chars().collect();
            }
            // A very long run of one character.
            4 => {
                let at = rng.below(len + 1);
                let c = *rng.pick(&['a', '9', ' ', '-', '[', '{']);
                for _ in 0..rng.below(6000) {
                    s.insert(at, c);
                }
            }
            // Flip one character.
            5 if len > 0 => {
                let at = rng.below(len);
                s[at] = *rng.pick(&['0', 'z', ':', '"', '\n', ' ', '.', '-', '/']);
            }
            // Insert a hostile token anywhere.
            _ => {
                let at = rng.below(len + 1);
                let token: Vec<char> = rng.pick(HOSTILE).chars().collect();
                for (i, c) in token.into_iter().enumerate() {
                    s.insert(at + i, c);
                }
            }
        }
    }
    s.into_iter().collect()
}

/// Runs `check` on `cases()` mutations of the seeds; panics name the input.
fn fuzz(target: &str, salt: u64, seeds: &[&str], mut check: impl FnMut(&str)) {
    let mut rng = Rng::new(salt);
    let n = cases();
    let started = Instant::now();
    for i in 0..n {
        let seed = rng.pick(seeds);
        let input = if i < seeds.len() {
            seeds[i].to_string()
        } else {
            mutate(&mut rng, seed)
        };
        let t = Instant::now();
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&input))) {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{target}: input #{i} {input:?} failed: {what}");
        }
        assert!(
            t.elapsed() < PER_INPUT,
            "{target}: input #{i} took {:?}: {input:?}",
            t.elapsed()
        );
    }
    eprintln!(
        "fuzz {target}: {n} inputs in {:?}, no panic",
        started.elapsed()
    );
}

const SPEC: &str = r#"name: demo
supervisor:
  max_restarts: 5
  restart_window: 30s
services:
  db:
    command: [sleep, "100"]
    env: {A: "1"}
    stop_timeout: 5s
  web:
    command: [sh, -c, "echo hi"]
    replicas: 2
    depends_on: [db]
    backoff: {initial: 100ms, max: 10s, multiplier: 2}
    exit_codes: {75: retry, 0: done}
    on_limit: backoff
jobs:
  backup:
    command: [sh, -c, "true"]
    schedule: "*/5 * * * *"
    time_zone: Europe/Paris
    retention: 7d
    deadline: 1h
    max_log_size: 1MiB
    notify: {command: [echo, done]}
"#;

#[test]
fn specs_never_panic_and_every_error_names_a_field_or_a_value() {
    let seeds = [
        SPEC,
        "services:\n  a:\n    command: [x]\n",
        "jobs:\n  j:\n    command: [true]\n    schedule: '@hourly'\n",
        "a: &a [1]\nb: [*a, *a, *a]\n",
    ];
    fuzz("spec", 1, &seeds, |text| {
        let errors = match Deployment::from_yaml(text) {
            Ok(d) => match d.validate() {
                Ok(()) => {
                    let _ = d.warnings();
                    let _ = d.summary();
                    return;
                }
                Err(e) => e,
            },
            Err(e) => e,
        };
        for e in errors.iter() {
            assert!(
                !e.field.is_empty() || !e.value.is_empty(),
                "an error that names nothing: {e}"
            );
            assert!(!e.message.is_empty(), "an error without a message");
        }
    });
}

#[test]
fn cron_expressions_never_panic() {
    let seeds = [
        "*/5 * * * *",
        "0 0 1 1 *",
        "@hourly",
        "0 9-17 * * MON-FRI",
        "30 2 L * *",
        "0 0 29 2 *",
    ];
    let zones = [
        None,
        Some("UTC"),
        Some("Europe/Paris"),
        Some("Nowhere/City"),
    ];
    let mut rng = Rng::new(2);
    fuzz("cron", 2, &seeds, |expr| {
        let zone = *rng.pick(&zones);
        if let Err(e) = CronSchedule::parse(expr, zone) {
            assert!(!e.to_string().is_empty());
        }
    });
}

#[test]
fn cli_value_parsers_never_panic_and_say_what_they_expected() {
    use arbor::args;
    let mut rng = Rng::new(3);
    fuzz(
        "cli values",
        3,
        &[
            "10s",
            "1h 30m",
            "500ms",
            "TERM",
            "SIGUSR1",
            "15",
            "K=V",
            "[\"notify-send\", \"done\"]",
            "67e55044-10b1-426f-9247-bb680e5fe0c8",
            "3",
        ],
        |s| {
            let results = [
                args::duration(s).err(),
                args::signal(s).err(),
                args::env_pair(s).err(),
                args::json_argv(s).err(),
                args::execution_id(s).err(),
                args::replicas(s).err(),
            ];
            let _ = rng.next();
            for e in results.into_iter().flatten() {
                assert!(
                    e.contains("expected") || e.contains("must be") || e.contains("not a"),
                    "an unclear error: {e}"
                );
            }
            if let Ok(d) = args::duration(s) {
                assert!(d <= arbor::spec::MAX_DURATION);
            }
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_bodies_and_queries_never_panic_and_errors_are_json_naming_the_problem() {
    let node = Node::start(NodeConfig::new(Arc::new(MockRuntime::new())))
        .await
        .unwrap();
    node.executor()
        .register(arbor::JobSpec::command("t", ["true"]))
        .await
        .unwrap();
    let id = node
        .executor()
        .trigger("t", arbor::JobTrigger::Cli)
        .await
        .unwrap();
    // Ended (a mock container runs until stopped): waits on it answer at once.
    node.executor()
        .cancel(id, Some(Duration::ZERO))
        .await
        .unwrap();
    node.executor().wait(id).await.unwrap();
    let router = arbor::api::router(node.clone(), ApiConfig::default());
    let runtime = tokio::runtime::Handle::current();
    let seeds = [
        r#"POST /v1/runs {"command": ["true"], "timeout": "1s", "kill_after": "2s", "env": {"A": "1"}, "mask": ["A"], "max_log_size": "1 MiB"}"#,
        r#"POST /v1/runs {"command": ["sh", "-c", "exit 3"], "name": "x", "notify": {"command": ["true"]}}"#,
        "POST /v1/executions/ID/signal {\"signal\": \"SIGUSR1\"}",
        "POST /v1/executions/ID/cancel {\"grace\": \"1s\"}",
        "GET /v1/executions?job=t&state=completed&limit=5 ",
        "GET /v1/executions/ID/logs?stream=stdout&tail=10&max_bytes=100 ",
        "GET /v1/executions/ID/wait?timeout=1ms ",
        "GET /v1/services/web ",
        "GET /v1/jobs/t ",
        "POST /v1/jobs/t/trigger ",
    ];
    let seeds: Vec<String> = seeds
        .iter()
        .map(|s| s.replace("ID", &id.to_string()))
        .collect();
    let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    tokio::task::block_in_place(|| {
        fuzz("api", 4, &seeds, |line| {
            let (head, body) = line.split_once(' ').unwrap_or(("GET", line));
            let (path, body) = body.split_once(' ').unwrap_or((body, ""));
            let method = if head == "POST" { "POST" } else { "GET" };
            let Ok(req) = Request::builder()
                .method(method)
                .uri(path)
                .header("content-type", "application/json")
                .body(Body::from(body.to_owned()))
            else {
                return; // not a URI at all: no server would see it
            };
            let router = router.clone();
            let (status, text) = runtime.block_on(async move {
                let res = tokio::time::timeout(PER_INPUT, router.oneshot(req))
                    .await
                    .expect("answered in time")
                    .unwrap();
                let status = res.status().as_u16();
                let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
                    .await
                    .unwrap_or_default();
                (status, String::from_utf8_lossy(&bytes).into_owned())
            });
            *statuses.entry(status).or_default() += 1;
            assert_ne!(status, 500, "{line:?} -> {text}");
            if status >= 400 {
                let v: serde_json::Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{line:?} -> {status} not JSON ({e}): {text}"));
                let message = v["error"]["message"].as_str().unwrap_or_default();
                assert!(!message.is_empty(), "{line:?} -> {text}");
            }
        });
    });
    eprintln!("fuzz api statuses: {statuses:?}");
    node.shutdown(Duration::from_secs(5)).await;
}
