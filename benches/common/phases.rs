//! The harness the benches share: each side of a comparison runs in its own
//! process (the bench binary re-runs itself with `--phase NAME`), phases run
//! in interleaved rounds so drift on a shared machine hits every side alike,
//! and each figure is printed as one JSON line beside its baseline:
//! `{"figure", "value", "unit", "baseline", "baseline_value", "ratio"}`.

use std::{collections::HashMap, process::Command, time::Instant};

use serde_json::{Value, json};

/// Runs every phase (with its extra environment) `rounds` times, each run
/// in its own process, in interleaved rounds, and keeps the median of each
/// numeric field (other fields as the first run gave them).
pub fn measure(phases: &[(&str, &[(&str, &str)])], rounds: usize) -> HashMap<String, Value> {
    let mut runs: HashMap<&str, Vec<Value>> = HashMap::new();
    for _ in 0..rounds {
        for (name, env) in phases {
            let t0 = Instant::now();
            let out = phase_once(name, env);
            eprintln!("phase {name}: {:.1} s: {out}", t0.elapsed().as_secs_f64());
            runs.entry(name).or_default().push(out);
        }
    }
    runs.into_iter()
        .map(|(name, runs)| {
            let mut out = serde_json::Map::new();
            if let Some(first) = runs[0].as_object() {
                for (key, v) in first {
                    let mut xs: Vec<f64> = runs.iter().filter_map(|r| r[key].as_f64()).collect();
                    let value = if v.is_number() && xs.len() == runs.len() {
                        json!(quantile(&mut xs, 0.5))
                    } else {
                        v.clone()
                    };
                    out.insert(key.clone(), value);
                }
            }
            (name.to_owned(), Value::Object(out))
        })
        .collect()
}

/// Runs one phase in a child process and returns the JSON of its last line.
pub fn phase_once(name: &str, env: &[(&str, &str)]) -> Value {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe)
        .args(["--phase", name])
        .envs(env.iter().copied())
        .output()
        .expect("run phase");
    if !out.status.success() {
        panic!(
            "phase {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or("{}");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("phase {name} printed {last:?}: {e}"))
}

/// Prints one figure beside its baseline.
pub fn figure(name: &str, value: &Value, unit: &str, baseline: &str, baseline_value: &Value) {
    let (v, b) = (
        value.as_f64().unwrap_or(f64::NAN),
        baseline_value.as_f64().unwrap_or(f64::NAN),
    );
    let line = json!({
        "figure": name,
        "value": round(v),
        "unit": unit,
        "baseline": baseline,
        "baseline_value": round(b),
        "ratio": round(v / b),
    });
    println!("{line}");
}

/// Three decimals.
pub fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The `q` quantile (nearest rank) of `samples`, which it sorts.
pub fn quantile(samples: &mut [f64], q: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[((samples.len() as f64 - 1.0) * q).round() as usize]
}

/// Starts the agent binary on `spec` and `state` (with `extra` flags);
/// returns it and the time until it listened (its spec deployed). (Only
/// the benches of the real agent use it.)
#[allow(dead_code)]
pub fn start_agent(
    spec: &std::path::Path,
    state: &std::path::Path,
    extra: &[&str],
) -> (std::process::Child, std::time::Duration) {
    use std::io::BufRead;
    let t0 = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_arbor"))
        .arg("agent")
        .arg("--spec")
        .arg(spec)
        .arg("--state-dir")
        .arg(state)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("agent");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("a line");
    assert!(line.starts_with("listening on"), "{line:?}");
    (child, t0.elapsed())
}

/// Stops an agent (SIGTERM) and waits for it.
#[allow(dead_code)]
pub fn stop_agent(mut agent: std::process::Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = agent.wait();
}

/// The processes whose command line (`/proc/PID/cmdline`, NUL-separated)
/// `keep` accepts.
#[allow(dead_code)]
pub fn pids_where(keep: impl Fn(u32, &[u8]) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            keep(*pid, &cmd)
        })
        .collect()
}
