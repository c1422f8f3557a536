//! A state dir that fills up while a job writes: the record, the logs API
//! and the history after an agent restart all tell the truth (the job
//! completed; its logs kept so many bytes of so many). Real binary, the
//! state dir on a 64 KiB tmpfs (needs root to mount it).

mod cli_support;

use std::path::{Path, PathBuf};

use cli_support::{Agent, eventually, write_file};
use serde_json::Value;

/// A tmpfs mounted at a path, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0700").as_str()),
        )
        .expect("mount a tmpfs");
        Self(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

const SPEC: &str = r#"
jobs:
  big:
    command: ["sh", "-c", "head -c 1200000 /dev/zero | tr '\\0' x | fold -w 79; echo end"]
"#;

fn status(agent: &Agent, id: &str) -> Value {
    agent.arbor(["status", id, "--json"]).expect(0).json()
}

#[cfg_attr(
    not(arbor_root),
    ignore = "needs root: it mounts a small tmpfs (run the tests as root, as .ci/run does)"
)]
#[test]
fn a_job_that_fills_the_state_dir_is_recorded_as_it_ended_and_its_logs_say_what_they_kept() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting the small tmpfs needs root (run the tests as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(dir.path(), "spec.yaml", SPEC);
    let state = dir.path().join("state");
    let _fs = Tmpfs::mount(&state, "64k");

    let mut agent = Agent::start(&spec, &state, &[]);
    let id = agent
        .arbor(["jobs", "trigger", "big"])
        .expect(0)
        .stdout
        .trim()
        .to_owned();
    eventually("the job to end", || {
        status(&agent, &id)["state"]["status"] != "running"
            && status(&agent, &id)["finished_at"].is_string()
    });
    let record = status(&agent, &id);
    assert_eq!(record["state"]["status"], "completed", "{record}");
    assert_eq!(record["state"]["exit_code"], 0, "{record}");
    let incomplete = record["logs_incomplete"].as_str().unwrap_or_default();
    assert!(
        incomplete.contains("stdout.log: kept ") && incomplete.contains("the state dir is full"),
        "{record}"
    );
    // What the record says is what is on disk.
    let on_disk: Value = serde_json::from_str(
        &std::fs::read_to_string(state.join(format!("executions/{id}/state.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(on_disk["state"]["status"], "completed", "{on_disk}");

    // The logs API: what was kept, marked truncated, saying why.
    let (code, body) = agent.http(
        "GET",
        &format!("/v1/executions/{id}/logs?stream=stdout&tail=1"),
        "",
    );
    assert_eq!(code, 200, "{body}");
    let logs: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(logs["truncated"], true, "{logs}");
    assert!(logs["text"].as_str().unwrap().starts_with("xxx"), "{logs}");
    assert_eq!(logs["incomplete"], record["logs_incomplete"], "{logs}");
    let kept = std::fs::metadata(state.join(format!("executions/{id}/stdout.log")))
        .unwrap()
        .len();
    assert!(
        incomplete.contains(&format!("stdout.log: kept {kept} of ")),
        "{incomplete} vs {kept} bytes on disk"
    );

    // After a kill -9 and a new agent: still completed, not "node
    // restarted".
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    let agent = Agent::start(&spec, &state, &[]);
    let again = status(&agent, &id);
    assert_eq!(again["state"]["status"], "completed", "{again}");
    assert_eq!(again["logs_incomplete"], record["logs_incomplete"]);
    assert_eq!(agent.stop(), 0);
}
