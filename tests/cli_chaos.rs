//! `arbor chaos`: a spec file under seeded faults from the shell.

use std::process::Command;

fn arbor(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_arbor"))
        .args(args)
        .output()
        .expect("arbor runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn chaos_on_the_example_spec_prints_a_report_with_every_invariant_held() {
    let (code, out, err) = arbor(&[
        "chaos",
        "--spec",
        "examples/node.yaml",
        "--seed",
        "7",
        "--duration",
        "5m",
        "--faults",
        "0.1",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("chaos run: seed 7, fault rate 0.1"), "{out}");
    assert!(out.contains("faults injected: "), "{out}");
    assert!(out.contains("invariants: all held"), "{out}");
}

#[test]
fn chaos_json_gives_the_totals_as_one_object() {
    let (code, out, err) = arbor(&[
        "chaos",
        "--spec",
        "examples/node.yaml",
        "--duration",
        "2m",
        "--faults",
        "0.2",
        "--kinds",
        "fail,slow",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["seed"], 0);
    assert!(v["faults_total"].as_u64().unwrap() > 0, "{v}");
    let kinds: Vec<&String> = v["faults"].as_object().unwrap().keys().collect();
    assert!(
        kinds
            .iter()
            .all(|k| ["fail", "slow", "kill"].contains(&k.as_str())),
        "{kinds:?}"
    );
    assert_eq!(v["violations"].as_array().unwrap().len(), 0, "{v}");
}

#[test]
fn chaos_refuses_bad_arguments_naming_them() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--faults", "1.5"],
            "--faults: must be between 0 and 1, got 1.5",
        ),
        (
            &["--kinds", "fail,explode"],
            "unknown fault kind \"explode\"",
        ),
        (&["--duration", "soon"], "soon"),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["chaos", "--spec", "examples/node.yaml"];
        args.extend_from_slice(extra);
        let (code, out, err) = arbor(&args);
        assert_eq!(code, 2, "{args:?}: {out}\n{err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let (code, _, err) = arbor(&["chaos", "--spec", "/nonexistent/spec.yaml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/spec.yaml"), "{err}");
}

#[test]
fn chaos_with_agent_restarts_reports_what_each_new_agent_adopted() {
    let (code, out, err) = arbor(&[
        "chaos",
        "--spec",
        "examples/node.yaml",
        "--duration",
        "5m",
        "--agent-restart-every",
        "37s",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(report["agent_restarts"], 8, "{report}");
    assert!(report["adopted"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["violations"], serde_json::json!([]), "{report}");
}
