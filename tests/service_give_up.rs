//! The real agent: a crash-looping service with `backoff.give_up_after`
//! backs off, then gives up: its replica ends `failed` (the others and the
//! node run on), `arbor services` says why, and its `on_failure` hook runs
//! once with the event as JSON on stdin.

mod cli_support;

use cli_support::{Agent, eventually, write_file};

#[test]
fn a_service_that_keeps_crashing_gives_up_and_runs_its_on_failure_hook_once() {
    let dir = tempfile::tempdir().unwrap();
    let hook_out = dir.path().join("hook.jsonl");
    let spec = write_file(
        dir.path(),
        "node.yaml",
        &format!(
            r#"
services:
  steady:
    command: [sleep, "300"]
  crashy:
    command: [sh, -c, "exit 3"]
    max_restarts: 1
    backoff: {{ initial: 20ms, max: 50ms, give_up_after: 2 }}
    on_failure: [sh, -c, 'cat >> "{}"; echo >> "{}"']
"#,
            hook_out.display(),
            hook_out.display()
        ),
    );
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    eventually("crashy failed", || {
        agent.service("crashy")["status"] == "failed"
    });
    let crashy = agent.service("crashy");
    let reason = crashy["reason"].as_str().unwrap();
    assert!(
        reason.contains("crashy-0: gave up after 2 crash loops (last exit: exit code 3)"),
        "{crashy}"
    );
    let tree = agent.arbor(["tree"]).expect(0).stdout;
    assert!(
        tree.contains("crashy-0 [container] failed")
            && tree.contains("(gave up after 2 crash loops)"),
        "{tree}"
    );
    eventually("the hook ran", || {
        std::fs::read_to_string(&hook_out).is_ok_and(|s| s.ends_with('\n'))
    });
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&hook_out)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let event = &lines[0];
    assert_eq!(event["event"], "service_failed");
    assert_eq!(event["service"], "crashy");
    assert_eq!(event["replica"], "crashy-0");
    assert_eq!(event["exit_code"], 3);
    // The rest of the node runs on.
    assert_eq!(agent.service("steady")["status"], "running");
    assert_eq!(agent.stop(), 0);
}
