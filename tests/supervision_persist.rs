//! Restart state survives the agent: a crash-looping service's back-off
//! step, its pending delay and its restart count continue in the next
//! agent on the same state dir (real binary, kill -9 of the agent).

mod cli_support;

use std::time::Duration;

use cli_support::{Agent, Lines, eventually, write_file};
use serde_json::Value;

// Delays 250ms, 750ms, 2.25s, 6.75s, 20.25s: no jitter, so each step's
// delay is exact.
const SPEC: &str = r#"
services:
  crashy:
    command: ["sh", "-c", "exit 1"]
    max_restarts: 1
    restart_window: 5m
    on_limit: backoff
    backoff: {initial: 250ms, max: 5m, multiplier: 3, jitter: 0, reset_after: 5m}
"#;

fn next_restart(s: &Value) -> chrono::DateTime<chrono::Utc> {
    s["next_restart"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no next_restart in {s}"))
}

#[test]
fn a_crash_loop_continues_at_its_step_after_the_agent_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(dir.path(), "spec.yaml", SPEC);
    let state = dir.path().join("state");

    let mut agent = Agent::start(&spec, &state, &[]);
    // The fourth back-off (step 3, 6.75 s) is pending after 4 restarts.
    eventually("the step-3 back-off", || {
        let s = agent.service("crashy");
        s["status"] == "crash_loop_back_off" && s["restarts"] == 4
    });
    let before = agent.service("crashy");
    let due = next_restart(&before);
    let remaining = due - chrono::Utc::now();
    assert!(
        remaining > chrono::Duration::seconds(4),
        "the 6.75 s back-off: {before}"
    );
    // Give the writer its batch, then kill the agent without a word.
    std::thread::sleep(Duration::from_millis(200));
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();

    let agent = Agent::start(&spec, &state, &[]);
    let events = Lines::spawn({
        let mut cmd = cli_support::arbor();
        cmd.args(["--agent", &agent.socket, "events", "--json"]);
        cmd
    });
    // The same back-off goes on: same count, same end, not a fresh start.
    let after = agent.service("crashy");
    assert_eq!(after["status"], "crash_loop_back_off", "{after}");
    assert_eq!(after["restarts"], 4, "the count continues: {after}");
    let resumed = next_restart(&after);
    let drift = (resumed - due).num_milliseconds().abs();
    assert!(drift < 1000, "due {due}, resumed {resumed}");

    // When it ends, the child restarts, crashes, and the next back-off
    // uses the next step: 20.25 s, restart 5.
    let seen = events.until("the step-4 back-off", |l| {
        l.contains("\"crash_loop_back_off\"") && l.contains("\"restart_count\":5")
    });
    let last: Value = serde_json::from_str(seen.last().unwrap()).unwrap();
    assert_eq!(last["delay"], "20s 250ms", "{last}");
    let tree = agent.arbor(["tree", "--json"]).expect(0).json();
    let replica = tree
        .get("children")
        .and_then(|c| c.as_array())
        .and_then(|c| c.iter().find(|s| s["name"] == "crashy"))
        .and_then(|s| s["children"].get(0))
        .cloned()
        .expect("crashy-0 in the tree");
    assert_eq!(replica["restarts"], 5, "{replica}");
    assert_eq!(agent.stop(), 0);

    // A graceful stop keeps it too; a service removed from the spec loses
    // it.
    let file = std::fs::read_to_string(state.join("supervision.json")).unwrap();
    assert!(file.contains("\"crashy-0\""), "{file}");
    let other = write_file(
        dir.path(),
        "other.yaml",
        "services:\n  web:\n    command: [\"sleep\", \"3006\"]\n",
    );
    let agent = Agent::start(&other, &state, &[]);
    eventually("the removed service's state to go", || {
        std::fs::read_to_string(state.join("supervision.json"))
            .is_ok_and(|f| !f.contains("crashy") && f.contains("web-0"))
    });
    assert_eq!(agent.stop(), 0);
}

#[test]
fn a_back_off_that_ends_past_its_delay_is_clamped_to_the_delay() {
    // As if the wall clock had jumped back an hour since it was written.
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(dir.path(), "spec.yaml", SPEC);
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let far = chrono::Utc::now() + chrono::Duration::hours(1);
    std::fs::write(
        state.join("supervision.json"),
        serde_json::json!({
            "version": 1,
            "scopes": {"crashy": {"crashy-0": {
                "restart_count": 7,
                "restarts": [],
                "backoff_step": 3,
                "next_restart": far,
                "backoff_delay": "2s",
            }}}
        })
        .to_string(),
    )
    .unwrap();
    let agent = Agent::start(&spec, &state, &[]);
    let s = agent.service("crashy");
    assert_eq!(s["status"], "crash_loop_back_off", "{s}");
    assert_eq!(s["restarts"], 7, "{s}");
    let wait = next_restart(&s) - chrono::Utc::now();
    assert!(wait <= chrono::Duration::seconds(2), "{s}");
    assert_eq!(agent.stop(), 0);
}

#[test]
fn an_unreadable_state_file_is_set_aside_and_the_agent_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(dir.path(), "spec.yaml", SPEC);
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("supervision.json"), "{not json").unwrap();
    let agent = Agent::start(&spec, &state, &[]);
    eventually("crashy to run and crash", || {
        agent.service("crashy")["restarts"].as_u64() >= Some(1)
    });
    assert!(state.join("supervision.json.corrupt").exists());
    assert_eq!(agent.stop(), 0);
}

#[test]
fn a_replica_that_gave_up_stays_down_under_the_next_agent_until_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(
        dir.path(),
        "spec.yaml",
        r#"
services:
  crashy:
    command: ["sh", "-c", "exit 1"]
    max_restarts: 1
    restart_window: 5m
    on_limit: backoff
    backoff: {initial: 100ms, jitter: 0, give_up_after: 1}
"#,
    );
    let state = dir.path().join("state");
    let starts = || {
        std::fs::read_to_string(state.join("services/crashy/crashy-0/full.log"))
            .unwrap_or_default()
            .matches("[ARBOR] started")
            .count()
    };
    let mut agent = Agent::start(&spec, &state, &[]);
    eventually("it to give up", || {
        agent.service("crashy")["status"] == "failed"
    });
    let before = agent.service("crashy");
    let started = starts();
    std::thread::sleep(Duration::from_millis(200));
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();

    let agent = Agent::start(&spec, &state, &[]);
    let after = agent.service("crashy");
    assert_eq!(after["status"], "failed", "{after}");
    assert_eq!(after["restarts"], before["restarts"], "{after}");
    // The spec is deployed (and each replica started or not) before the
    // agent says it listens.
    assert_eq!(starts(), started, "the new agent started it again");

    // An operator restart brings it back.
    agent.arbor(["services", "restart", "crashy"]).expect(0);
    eventually("a new start", || starts() > started);
    assert_eq!(agent.stop(), 0);
}
