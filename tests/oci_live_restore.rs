//! Live restore of OCI containers (real binary, `--runtime oci`): each
//! container's init runs under a keeper, so it outlives an agent that is
//! killed or leaves on SIGUSR2, and the next agent on the same state dir
//! adopts it: same pid, still in runc's state, output still captured, an
//! exit while no agent ran reported with its status (an OOM kill as such).
//! Needs root, runc and
//! /bin/busybox (skipped otherwise, saying how to enable it).

mod cli_support;

use std::{fs, path::Path};

use cli_support::{
    Agent, alive, eventually, import_busybox_as_a_user_would, marked_after, markers, replica_dir,
    runc_list, wait_marked, write_file,
};
use nix::{sys::signal::Signal, unistd::Pid};

/// The numbers of `line N` in `box-0`'s stdout.log, in order.
fn numbers(state: &Path) -> Vec<u64> {
    fs::read_to_string(replica_dir(state, "box", "box-0").join("stdout.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("line ")?.parse().ok())
        .collect()
}

fn execution_file(state: &Path, id: &str, file: &str) -> String {
    fs::read_to_string(state.join("executions").join(id).join(file)).unwrap_or_default()
}

fn job_status(agent: &Agent, id: &str) -> serde_json::Value {
    agent.arbor(["status", id, "--json"]).expect(0).json()
}

fn files_in(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

// `box` prints numbered lines; `quitter` (sh as the container's init)
// exits 7 on SIGTERM; `ticker` prints a line every 100 ms for 3 s.
const SPEC: &str = r#"
services:
  box:
    image: busybox:kept
    command: ["sh", "-c", "i=0; while :; do i=$((i+1)); echo line $i; sleep 0.05; done"]
    replicas: 2
    stop_timeout: 200ms
  quitter:
    image: busybox:kept
    command: ["sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.1; done"]
    stop_timeout: 200ms
jobs:
  ticker:
    image: busybox:kept
    command: ["sh", "-c", "i=0; while [ $i -lt 30 ]; do i=$((i+1)); echo tick $i; sleep 0.1; done"]
"#;

#[cfg_attr(
    not(all(arbor_root, arbor_runc)),
    ignore = "needs root, runc and /bin/busybox (apt-get install runc busybox-static; run the tests as root, as .ci/run does)"
)]
#[test]
fn containers_outlive_a_killed_agent_and_the_next_agent_adopts_them() {
    if let Some(why) = arbor::testing::oci_unavailable() {
        eprintln!("{why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    import_busybox_as_a_user_would(dir.path(), &state, "busybox:kept");
    let spec = write_file(dir.path(), "spec.yaml", SPEC);

    let mut agent = Agent::start(&spec, &state, &["--runtime", "oci"]);
    eventually("three containers running", || {
        agent.service("box")["running"] == 2 && agent.service("quitter")["running"] == 1
    });
    let pids: Vec<i32> = ["box-0", "box-1"]
        .iter()
        .map(|r| wait_marked(&state, "box", r).1)
        .collect();
    let (_, quitter) = wait_marked(&state, "quitter", "quitter-0");
    let containers = runc_list(&state);
    assert_eq!(containers.len(), 3, "{containers:?}");
    eventually("some output", || numbers(&state).len() > 5);
    // A job runs across the kill.
    let job = agent
        .arbor(["jobs", "trigger", "ticker"])
        .expect(0)
        .stdout
        .trim()
        .to_owned();
    eventually("a few ticks", || {
        execution_file(&state, &job, "stdout.log").lines().count() >= 3
    });

    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    for pid in &pids {
        assert!(alive(*pid), "container init {pid} died with the agent");
    }
    // `quitter` ends while no agent runs.
    nix::sys::signal::kill(Pid::from_raw(quitter), Signal::SIGTERM).unwrap();
    eventually("quitter to exit while no agent runs", || !alive(quitter));
    let at_kill = numbers(&state).len();
    let before: Vec<usize> = ["box-0", "box-1"]
        .iter()
        .map(|r| markers(&state, "box", r))
        .collect();

    let agent = Agent::start(&spec, &state, &["--runtime", "oci"]);
    for ((replica, pid), before) in ["box-0", "box-1"].iter().zip(&pids).zip(before) {
        assert_eq!(
            marked_after(&state, "box", replica, before),
            Some(("re-adopted".to_owned(), *pid)),
            "{replica} was not adopted"
        );
    }
    let boxes = agent.service("box");
    assert_eq!(boxes["running"], 2, "{boxes}");
    assert_eq!(boxes["restarts"], 0, "nothing restarted: {boxes}");
    // The exit is reported with its status, and the replica restarted.
    eventually("quitter restarted", || {
        agent.service("quitter")["restarts"] == 1 && agent.service("quitter")["running"] == 1
    });
    let full =
        fs::read_to_string(replica_dir(&state, "quitter", "quitter-0").join("full.log")).unwrap();
    assert!(full.contains("exited: exit code 7"), "{full}");
    // runc still knows the adopted ones; the ended one was deleted.
    let now: Vec<String> = runc_list(&state)
        .into_iter()
        .filter(|c| !c.starts_with("ticker"))
        .collect();
    assert_eq!(now.len(), 3, "{now:?}");
    let kept: Vec<&String> = containers.iter().filter(|c| now.contains(c)).collect();
    assert_eq!(
        kept.len(),
        2,
        "the two adopted containers: {now:?} {containers:?}"
    );

    // Output is captured again, every line exactly once.
    eventually("more output after the adoption", || {
        numbers(&state).len() > at_kill + 20
    });
    let seen = numbers(&state);
    let expected: Vec<u64> = (1..=seen.len() as u64).collect();
    assert_eq!(seen, expected, "lines lost or repeated across the kill");

    // The job ends once, completed, with every line once.
    eventually("the job to complete", || {
        job_status(&agent, &job)["state"]["status"] != "running"
    });
    let record = job_status(&agent, &job);
    assert_eq!(record["state"]["status"], "completed", "{record}");
    assert_eq!(record["state"]["exit_code"], 0, "{record}");
    let ticks: Vec<String> = execution_file(&state, &job, "stdout.log")
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = (1..=30).map(|i| format!("tick {i}")).collect();
    assert_eq!(
        ticks, expected,
        "job lines lost or repeated across the kill"
    );

    // Signals and stops still reach the adopted containers: a graceful
    // stop leaves nothing.
    assert_eq!(agent.stop(), 0);
    for pid in &pids {
        eventually("the adopted container to stop", || !alive(*pid));
    }
    assert_eq!(runc_list(&state), Vec::<String>::new());
    assert_eq!(files_in(&state.join("oci/bundles")), Vec::<String>::new());
    assert_eq!(files_in(&state.join("oci/keepers")), Vec::<String>::new());
}

#[cfg_attr(
    not(all(arbor_root, arbor_runc)),
    ignore = "needs root, runc and /bin/busybox (apt-get install runc busybox-static; run the tests as root, as .ci/run does)"
)]
#[test]
fn sigusr2_leaves_containers_running_and_a_changed_one_is_replaced() {
    if let Some(why) = arbor::testing::oci_unavailable() {
        eprintln!("{why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    import_busybox_as_a_user_would(dir.path(), &state, "busybox:kept");
    let spec = write_file(
        dir.path(),
        "spec.yaml",
        "services:\n  a:\n    image: busybox:kept\n    command: [sleep, '600']\n    stop_timeout: 300ms\n  b:\n    image: busybox:kept\n    command: [sleep, '600']\n    stop_timeout: 300ms\n",
    );
    let mut agent = Agent::start(&spec, &state, &["--runtime", "oci"]);
    eventually("two containers", || runc_list(&state).len() == 2);
    let (_, a) = wait_marked(&state, "a", "a-0");
    let (_, b) = wait_marked(&state, "b", "b-0");
    nix::sys::signal::kill(Pid::from_raw(agent.child.id() as i32), Signal::SIGUSR2).unwrap();
    let status = agent.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(alive(a) && alive(b), "a container stopped with the agent");

    // `b` changed: its old container stops before the new one starts
    // (`sleep` as PID 1 ignores SIGTERM: killed after its stop_timeout).
    write_file(
        dir.path(),
        "spec.yaml",
        "services:\n  a:\n    image: busybox:kept\n    command: [sleep, '600']\n    stop_timeout: 300ms\n  b:\n    image: busybox:kept\n    command: [sleep, '601']\n    stop_timeout: 300ms\n",
    );
    let before = (markers(&state, "a", "a-0"), markers(&state, "b", "b-0"));
    let agent = Agent::start(&spec, &state, &["--runtime", "oci"]);
    assert_eq!(
        marked_after(&state, "a", "a-0", before.0),
        Some(("re-adopted".to_owned(), a))
    );
    eventually("the changed container replaced", || {
        !alive(b) && agent.service("b")["running"] == 1
    });
    let (how, new_b) = marked_after(&state, "b", "b-0", before.1).unwrap();
    assert_eq!(how, "started");
    assert_ne!(new_b, b);
    eventually("two containers in runc", || runc_list(&state).len() == 2);
    assert_eq!(agent.stop(), 0);
    assert!(!alive(a) && !alive(new_b));
    assert_eq!(runc_list(&state), Vec::<String>::new());
    assert_eq!(files_in(&state.join("oci/keepers")), Vec::<String>::new());
}

#[cfg_attr(
    not(all(arbor_root, arbor_runc)),
    ignore = "needs root, runc and /bin/busybox (apt-get install runc busybox-static; run the tests as root, as .ci/run does)"
)]
#[test]
fn an_oom_kill_of_an_adopted_container_is_reported_as_out_of_memory() {
    if let Some(why) = arbor::testing::oci_unavailable() {
        eprintln!("{why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    import_busybox_as_a_user_would(dir.path(), &state, "busybox:kept");
    // Each hog (sh as the container's init) allocates 64 MiB under a
    // 32 MiB limit on SIGUSR1.
    let hog = |name: &str| {
        format!(
            "  {name}:\n    image: busybox:kept\n    command: [sh, -c, 'hog() {{ a=$(head -c 67108864 /dev/zero | tr \\\\0 x); }}; trap hog USR1; while :; do sleep 0.1; done']\n    resources: {{memory: 32Mi}}\n    stop_timeout: 200ms\n"
        )
    };
    let spec = write_file(
        dir.path(),
        "spec.yaml",
        &format!("services:\n{}{}", hog("away"), hog("adopted")),
    );
    let mut agent = Agent::start(&spec, &state, &["--runtime", "oci"]);
    let (_, away) = wait_marked(&state, "away", "away-0");
    let (_, adopted) = wait_marked(&state, "adopted", "adopted-0");
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    // `away` is OOM-killed while no agent runs.
    nix::sys::signal::kill(Pid::from_raw(away), Signal::SIGUSR1).unwrap();
    eventually("away to be killed while no agent runs", || !alive(away));

    let before = markers(&state, "adopted", "adopted-0");
    let agent = Agent::start(&spec, &state, &["--runtime", "oci"]);
    assert_eq!(
        marked_after(&state, "adopted", "adopted-0", before),
        Some(("re-adopted".to_owned(), adopted))
    );
    // `adopted` is OOM-killed under the new agent.
    nix::sys::signal::kill(Pid::from_raw(adopted), Signal::SIGUSR1).unwrap();
    for service in ["away", "adopted"] {
        eventually("the OOM kill reported", || {
            agent.service(service)["tree"]["children"][0]["last_exit"]["oom_killed"] == true
        });
    }
    assert_eq!(agent.stop(), 0);
    assert_eq!(runc_list(&state), Vec::<String>::new());
}
