//! `arbor chaos`: runs a spec file's deployment under a seeded fault plan on
//! the recording mock runtime and tokio's paused clock, then prints the
//! report (faults by kind, restarts, escalations, executions by state, and
//! every invariant violation with the events that led to it).
//!
//! Exit code: 0 when every invariant held, 1 when one broke, 2 on bad
//! arguments or an invalid spec.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use arbor::chaos::{ALL_KINDS, Chaos, kind_name, parse_kind};
use clap::Parser;

#[derive(Parser)]
pub struct ChaosArgs {
    /// The deployment to run (services, jobs, schedules), as for `arbor agent`.
    #[arg(long)]
    spec: PathBuf,
    /// Seed of the fault plan and the job triggers; the same seed gives the
    /// same run.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How long faults are injected, in virtual time (30s, 10m, 2h).
    #[arg(long, default_value = "10m", value_parser = crate::common::parse_duration)]
    duration: Duration,
    /// The probability (0 to 1) that a runtime call gets a fault.
    #[arg(long, default_value_t = 0.05)]
    faults: f64,
    /// Only these fault kinds, comma separated (fail, slow, exit,
    /// crash_loop, hang_on_stop, lose_exit, delay_exit; default all).
    #[arg(long, value_delimiter = ',')]
    kinds: Vec<String>,
    /// Trigger one of the spec's on-demand jobs this often (0s: none).
    #[arg(long, default_value = "1s", value_parser = crate::common::parse_duration)]
    job_every: Duration,
    /// Restart the agent this often (0s: never): the node leaves as on
    /// SIGUSR2 and is killed, and a new one on the same (temporary) state
    /// dir adopts the replicas and executions it left, as from keepers.
    /// Runs with a state dir are not exactly repeatable from the seed.
    #[arg(long, default_value = "0s", value_parser = crate::common::parse_duration)]
    agent_restart_every: Duration,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn chaos(args: ChaosArgs) -> ExitCode {
    if !(0.0..=1.0).contains(&args.faults) {
        eprintln!(
            "arbor chaos: --faults: must be between 0 and 1, got {}",
            args.faults
        );
        return ExitCode::from(2);
    }
    let mut kinds = Vec::new();
    for k in &args.kinds {
        match parse_kind(k.trim()) {
            Some(kind) => kinds.push(kind),
            None => {
                let known: Vec<&str> = ALL_KINDS.iter().map(|k| kind_name(*k)).collect();
                eprintln!(
                    "arbor chaos: --kinds: unknown fault kind {k:?} (known: {})",
                    known.join(", ")
                );
                return ExitCode::from(2);
            }
        }
    }
    let deployment = match crate::agent::load(&args.spec) {
        Ok(d) => d,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitCode::from(2);
        }
    };
    // The paused clock: back-offs, deadlines and schedules take no wall time.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("arbor chaos: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut run = Chaos::new(deployment)
        .seed(args.seed)
        .rate(args.faults)
        .duration(args.duration)
        .job_every(args.job_every)
        .agent_restart_every(args.agent_restart_every);
    if !kinds.is_empty() {
        run = run.kinds(kinds);
    }
    let wall = std::time::Instant::now();
    let report = match runtime.block_on(run.run()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("arbor chaos: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        let violations: Vec<serde_json::Value> = report
            .violations
            .iter()
            .map(|v| serde_json::json!({"invariant": v.invariant, "detail": v.detail, "events": v.events}))
            .collect();
        let out = serde_json::json!({
            "seed": report.seed,
            "fault_rate": report.rate,
            "virtual_ms": report.elapsed.as_millis() as u64,
            "wall_ms": wall.elapsed().as_millis() as u64,
            "faults": report.faults,
            "faults_total": report.total_faults(),
            "restarts": report.restarts,
            "backoffs": report.backoffs,
            "escalations": report.escalations,
            "isolations": report.isolations,
            "executions": report.executions,
            "triggers": report.triggers,
            "agent_restarts": report.observation.agent_restarts.len(),
            "adopted": report.observation.adopted,
            "released": report.observation.released,
            "violations": violations,
        });
        println!("{out}");
    } else {
        println!("{report}");
        println!("wall time: {:.1}s", wall.elapsed().as_secs_f64());
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
