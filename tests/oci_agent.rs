//! `arbor agent --runtime oci`: services and jobs of a spec file run as
//! containers from images imported with `arbor image import`; a stop leaves
//! no container behind. The run needs root, runc and /bin/busybox (skipped
//! otherwise, saying how to enable it); the refusal test runs everywhere.

mod cli_support;

use std::fs;

use cli_support::{Agent, arbor, eventually, import_busybox_as_a_user_would, output, runc_list};

#[cfg_attr(
    not(all(arbor_root, arbor_runc)),
    ignore = "needs root, runc and /bin/busybox (apt-get install runc busybox-static; run the tests as root, as .ci/run does)"
)]
#[test]
fn the_agent_runs_a_service_and_a_job_as_containers_and_leaves_none_after_a_stop() {
    if let Some(why) = arbor::testing::oci_unavailable() {
        eprintln!("{why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    // The image comes in through the CLI, as a user would import it.
    import_busybox_as_a_user_would(tmp.path(), &state, "busybox:agent");

    let spec = tmp.path().join("node.yaml");
    fs::write(
        &spec,
        "services:\n  box:\n    image: busybox:agent\n    command: [sh, -c, 'echo up; exec sleep 600']\n    resources: {memory: 64Mi, pids: 32}\n    stop_timeout: 200ms\n  host:\n    command: [sleep, '600']\n    runtime: process\njobs:\n  hello:\n    image: busybox:agent\n    command: [sh, -c, 'echo hello from $(hostname)']\n    hostname: jobbox\n",
    )
    .unwrap();
    let agent = Agent::start(&spec, &state, &["--runtime", "oci"]);
    eventually("the service's container runs", || {
        runc_list(&state).len() == 1
    });
    let id = agent.arbor(["jobs", "trigger", "hello"]).expect(0).stdout;
    let out = agent.arbor(["logs", id.trim(), "--follow"]).expect(0);
    assert!(out.stdout.contains("hello from jobbox"), "{out:#?}");
    let status = agent
        .arbor(["status", id.trim(), "--json"])
        .expect(0)
        .json();
    assert_eq!(status["state"]["status"], "completed", "{status:#}");
    assert_eq!(agent.stop(), 0);
    assert!(
        runc_list(&state).is_empty(),
        "containers left after the stop"
    );
    let bundles: Vec<_> = fs::read_dir(state.join("oci/bundles")).unwrap().collect();
    assert!(bundles.is_empty(), "bundles left: {bundles:?}");
}

#[test]
fn asking_for_the_oci_runtime_without_runc_exits_2_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("node.yaml");
    fs::write(&spec, "services: {}\n").unwrap();
    let mut cmd = arbor();
    cmd.env("PATH", tmp.path())
        .args([
            "agent",
            "--listen",
            "127.0.0.1:0",
            "--runtime",
            "oci",
            "--spec",
        ])
        .arg(&spec)
        .arg("--state-dir")
        .arg(tmp.path().join("state"));
    let out = output(cmd).expect(2);
    assert!(
        out.stderr.contains("runc not found") || out.stderr.contains("needs root"),
        "{out:#?}"
    );
}
