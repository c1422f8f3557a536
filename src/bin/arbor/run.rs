//! `arbor run -- CMD ARGS...`: a command run once as a supervised job.
//!
//! When an agent answers at `--agent`, the run is `POST /v1/runs`: the
//! job belongs to the agent and outlives this command, which returns at
//! once (or, with `--wait`, follows it to its end). When nothing listens
//! there, the job runs in this process, under an executor with the state
//! dir `--state-dir` (else `$ARBOR_STATE_DIR`, else
//! `~/.local/state/arbor`): this command then always waits for the end (as
//! with `--wait`), and SIGINT/SIGTERM cancel the run.
//!
//! `--json` prints one object: `job_id`, `job`, `mode` (`agent` or
//! `in_process`), `agent`, `state`, `state_detail`, `env_vars` (masked),
//! `stdout_log_path`, `stderr_log_path`, `snapshot` (`stdout_tail`,
//! `stderr_tail`, `truncated`, `observed_bytes`, `included_bytes`, taken
//! after `--snapshot-after`), `waited_ms`, `elapsed_ms`, and after a wait
//! `exit_code`, `signal`, `finished_at`, `final_snapshot`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use arbor::{
    ExecutionId, ExecutionRecord, Executor, ExecutorConfig, JobState, JobTrigger, LogSnapshotQuery,
    NotifySpec, ProcessRuntime, SnapshotStream,
    api::{RunRequest, RunResponse},
    store::{STDERR_FILE, STDOUT_FILE},
};
use chrono::{DateTime, Utc};
use clap::Args;
use serde::Serialize;

use super::{
    client::{AgentUrl, ClientError},
    common::{Conn, Fail, Outcome, parse_duration, print_json},
    follow::{Follower, Target},
};

/// `--notify-command`: argv as a JSON array.
#[derive(Debug, Clone)]
pub struct JsonArgv(Vec<String>);

fn parse_argv(s: &str) -> Result<JsonArgv, String> {
    arbor::args::json_argv(s).map(JsonArgv)
}

use arbor::args::env_pair as parse_env;

#[derive(Args)]
pub struct Run {
    /// Follow the run to its end; the output then also has exit_code,
    /// signal, finished_at and final_snapshot, and the exit code is 0 only
    /// if the run completed. Without --wait, an agent keeps the job and
    /// this command returns at once (exit code 0 once accepted). In-process
    /// (no agent) the command always waits.
    #[arg(long)]
    pub wait: bool,
    /// The run's deadline: after this long it is stopped (SIGTERM to its
    /// process group, SIGKILL after --kill-after) and fails.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, alias = "deadline")]
    pub timeout: Option<Duration>,
    /// Grace between SIGTERM and SIGKILL at the deadline or on cancel
    /// [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, alias = "stop-timeout")]
    pub kill_after: Option<Duration>,
    /// Working directory of the command [default: the current directory].
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// A variable for the command (repeatable; wins over --env-file).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// A file of KEY=VALUE lines (repeatable; a later file wins).
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Start the command with only --env and --env-file, not the agent's
    /// environment (in-process: this command's).
    #[arg(long)]
    pub no_inherit_env: bool,
    /// A variable whose value is shown as *** in records (meta.json), the
    /// API, and everything this command prints, tails included
    /// (repeatable). The command gets the real value; its log files keep
    /// what it wrote.
    #[arg(long, value_name = "KEY")]
    pub mask: Vec<String>,
    /// Lines of each stream in a snapshot (without --wait and --json: the
    /// lines printed).
    #[arg(long, value_name = "N", default_value_t = 20, alias = "tail")]
    pub tail_lines: usize,
    /// Bytes of each stream in a snapshot, at most.
    #[arg(long, value_name = "N", default_value_t = 65536)]
    pub max_bytes: usize,
    /// Take the snapshot after this long (or at the end, if sooner)
    /// [default: at once].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub snapshot_after: Option<Duration>,
    /// A command run at the end with the completion event as JSON on its
    /// stdin, as a JSON array: '["sh", "-c", "cat >> done.log"]'.
    #[arg(long, value_name = "JSON-ARGV", value_parser = parse_argv)]
    pub notify_command: Option<JsonArgv>,
    /// A file the completion event is appended to, as one JSON line.
    #[arg(long, value_name = "PATH")]
    pub notify_file: Option<PathBuf>,
    /// The job's name [default: the program's file name].
    #[arg(long)]
    pub name: Option<String>,
    /// Records and logs of an in-process run [default: $ARBOR_STATE_DIR,
    /// else ~/.local/state/arbor]. An agent uses its own.
    #[arg(
        long,
        value_name = "DIR",
        env = "ARBOR_STATE_DIR",
        hide_env_values = true
    )]
    pub state_dir: Option<PathBuf>,
    /// Print the result as one JSON object instead of following the output.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: Conn,
    /// The command and its arguments (argv; never run through a shell).
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The tails of both streams at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub stdout_tail: String,
    pub stderr_tail: String,
    /// True when either tail leaves output out.
    pub truncated: bool,
    /// Bytes both streams received so far.
    pub observed_bytes: u64,
    /// Bytes of both streams the tails were made from.
    pub included_bytes: u64,
}

/// What `arbor run --json` prints.
#[derive(Debug, Serialize)]
pub struct RunOutput {
    pub job_id: ExecutionId,
    pub job: String,
    /// `agent` or `in_process`.
    pub mode: &'static str,
    /// The agent that runs it (`null` in-process).
    pub agent: Option<String>,
    /// `pending`, `running`, ..., `completed`, `failed`, `cancelled`.
    pub state: String,
    /// The state in words (`failed: deadline exceeded: ran longer than 1s`).
    pub state_detail: String,
    pub env_vars: BTreeMap<String, String>,
    pub stdout_log_path: Option<PathBuf>,
    pub stderr_log_path: Option<PathBuf>,
    pub snapshot: Snapshot,
    /// How long this command waited (for the snapshot, for the end).
    pub waited_ms: u64,
    /// From acceptance to the end, or to now while it runs.
    pub elapsed_ms: u64,
    #[serde(flatten)]
    pub end: Option<End>,
}

/// The end of a run (after a wait).
#[derive(Debug, Serialize)]
pub struct End {
    pub exit_code: Option<i32>,
    /// The signal that ended the command (9: SIGKILL).
    pub signal: Option<i32>,
    pub finished_at: Option<DateTime<Utc>>,
    pub final_snapshot: Snapshot,
}

impl Run {
    /// The request: every path absolute (the agent runs elsewhere), the
    /// cwd this directory unless given; checked here as the agent would.
    fn request(&self) -> Result<RunRequest, Fail> {
        let abs = |p: &Path| {
            std::path::absolute(p)
                .map_err(|e| Fail::usage(format!("{}: cannot resolve the path: {e}", p.display())))
        };
        let cwd = match &self.cwd {
            Some(d) => abs(d)?,
            None => std::env::current_dir()
                .map_err(|e| Fail::failed(format!("cannot read the current directory: {e}")))?,
        };
        let req = RunRequest {
            command: self.command.clone(),
            name: self.name.clone(),
            env: self.env.iter().cloned().collect(),
            env_file: self
                .env_file
                .iter()
                .map(|p| abs(p))
                .collect::<Result<_, _>>()?,
            inherit_env: self.no_inherit_env.then_some(false),
            mask: self.mask.clone(),
            cwd: Some(cwd),
            timeout: self.timeout,
            kill_after: self.kill_after,
            max_log_size: None,
            notify: (self.notify_command.is_some() || self.notify_file.is_some()).then(|| {
                NotifySpec {
                    command: self.notify_command.as_ref().map(|a| a.0.clone()),
                    file: self.notify_file.as_ref().and_then(|p| abs(p).ok()),
                }
            }),
        };
        if let Err(e) = req.to_spec() {
            let parts: Vec<String> = if e.detail.fields.is_empty() {
                vec![e.detail.message.clone()]
            } else {
                e.detail
                    .fields
                    .iter()
                    .map(|f| format!("{}: {} (got {})", flag(&f.field), f.message, f.value))
                    .collect()
            };
            return Err(Fail::usage(format!("invalid run: {}", parts.join("; "))));
        }
        Ok(req)
    }

    /// Values of masked keys this command knows (from --env, and from the
    /// env files it can read), longest first.
    fn secrets(&self) -> Vec<String> {
        let mut env: BTreeMap<String, String> =
            arbor::store::read_env_files(&self.env_file).unwrap_or_default();
        env.extend(self.env.iter().cloned());
        let mut secrets: Vec<String> = self
            .mask
            .iter()
            .filter_map(|k| env.get(k).cloned())
            .filter(|v| !v.is_empty())
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        secrets
    }
}

/// The flag a field of the job spec comes from.
fn flag(field: &str) -> String {
    if let Some(rest) = field.strip_prefix("command") {
        return format!("CMD{rest}");
    }
    if let Some(key) = field.strip_prefix("env.") {
        return format!("--env {key}");
    }
    match field {
        "timeout" | "deadline" => "--timeout".into(),
        "stop_timeout" => "--kill-after".into(),
        f if f.starts_with("notify.command") => "--notify-command".into(),
        f if f.starts_with("notify.file") => "--notify-file".into(),
        f if f.starts_with("env_file") => "--env-file".into(),
        f => format!("--{}", f.replace('_', "-")),
    }
}

/// `text` with every secret as `***`.
fn redact(text: String, secrets: &[String]) -> String {
    if secrets.iter().any(|s| text.contains(s.as_str())) {
        secrets
            .iter()
            .fold(text, |t, s| t.replace(s.as_str(), arbor::store::MASK))
    } else {
        text
    }
}

/// `arbor run`.
pub async fn run(url: &AgentUrl, a: Run) -> Outcome {
    let req = a.request()?;
    let client = a.conn.client(url)?;
    match client.post::<_, RunResponse>("/v1/runs", Some(&req)).await {
        Ok(accepted) => {
            let run = Started {
                id: accepted.execution_id,
                job: accepted.job,
                mode: "agent",
                agent: Some(url.to_string()),
                env_vars: accepted.env_vars,
                stdout_log_path: accepted.stdout_log_path,
                stderr_log_path: accepted.stderr_log_path,
            };
            let id = run.id;
            if a.wait {
                // The job is the agent's: stopping this command stops the wait.
                let shown = url.to_string();
                tokio::spawn(async move {
                    stop_requested().await;
                    eprintln!(
                        "arbor: interrupted; execution {id} keeps running on the agent at {shown} (stop it with arbor cancel {id})"
                    );
                    std::process::exit(1);
                });
            }
            follow(&Target::Agent(client), run, &a, a.wait).await
        }
        Err(ClientError::Unreachable { reason, .. }) => in_process(url, &a, req, &reason).await,
        Err(e) => Err(e.into()),
    }
}

/// A run as accepted.
struct Started {
    id: ExecutionId,
    job: String,
    mode: &'static str,
    agent: Option<String>,
    env_vars: BTreeMap<String, String>,
    stdout_log_path: Option<PathBuf>,
    stderr_log_path: Option<PathBuf>,
}

/// No agent: the run in this process, waited for.
async fn in_process(url: &AgentUrl, a: &Run, req: RunRequest, reason: &str) -> Outcome {
    let Some(state_dir) = a.state_dir.clone().or_else(super::agent::default_state_dir) else {
        return Err(Fail::usage("no --state-dir given and HOME is not set"));
    };
    let state_dir = std::path::absolute(&state_dir).unwrap_or(state_dir);
    eprintln!(
        "arbor: no agent at {url} ({reason}): running in-process with records under {}; waiting for the end (stopping this command cancels the run)",
        state_dir.display()
    );
    let spec = req.to_spec().map_err(|e| Fail::usage(e.detail.message))?;
    let process = ProcessRuntime::builder()
        .build()
        .map_err(|e| Fail::failed(e.to_string()))?;
    let executor =
        Executor::start(ExecutorConfig::new(Arc::new(process.clone())).state_dir(&state_dir))
            .await
            .map_err(|e| Fail::failed(format!("failed to start the executor: {e}")))?;
    let job = spec.name.clone();
    let outcome = match executor.run(spec, JobTrigger::Cli).await {
        Err(e) => Err(Fail::failed(e.to_string())),
        Ok(id) => {
            let canceller = {
                let executor = executor.clone();
                tokio::spawn(async move {
                    stop_requested().await;
                    eprintln!("arbor: interrupted; cancelling execution {id}");
                    let _ = executor.cancel(id, None).await;
                })
            };
            let dir = state_dir.join("executions").join(id.to_string());
            let env_vars = executor
                .get(id)
                .await
                .ok()
                .flatten()
                .map(|r| r.meta.env)
                .unwrap_or_default();
            let run = Started {
                id,
                job,
                mode: "in_process",
                agent: None,
                env_vars,
                stdout_log_path: Some(dir.join(STDOUT_FILE)),
                stderr_log_path: Some(dir.join(STDERR_FILE)),
            };
            let target = Target::Local(executor.clone());
            let outcome = follow(&target, run, a, true).await;
            canceller.abort();
            outcome
        }
    };
    executor.shutdown(Duration::from_secs(5)).await;
    process.shutdown(Duration::from_secs(5)).await;
    outcome
}

/// Reports a started run: JSON, or the output as it comes (waiting), or
/// where it is (not waiting).
async fn follow(target: &Target, run: Started, a: &Run, wait: bool) -> Outcome {
    let secrets = a.secrets();
    let id = run.id;
    if !a.json && wait {
        match &run.agent {
            Some(agent) => eprintln!(
                "arbor: execution {id} ({}) on the agent at {agent}",
                run.job
            ),
            None => eprintln!("arbor: execution {id} ({})", run.job),
        }
        let record = stream(target, id, &secrets).await?;
        eprintln!("arbor: execution {id} {}", record.status.state);
        return Ok(code(&record));
    }

    let started = Instant::now();
    if let Some(d) = a.snapshot_after {
        wait_for(target, id, d).await?;
    }
    let snapshot = snapshot(target, id, a, &secrets).await?;
    let (record, end) = if wait {
        let record = target.wait_end(id).await?;
        let final_snapshot = self::snapshot(target, id, a, &secrets).await?;
        let end = End {
            exit_code: record.status.state.exit_code(),
            signal: record.status.signal,
            finished_at: record.status.finished_at,
            final_snapshot,
        };
        (record, Some(end))
    } else {
        (target.get(id).await?, None)
    };
    let waited = started.elapsed();
    let elapsed = (record.status.finished_at.unwrap_or_else(Utc::now) - record.meta.created_at)
        .to_std()
        .unwrap_or_default();
    let out = RunOutput {
        job_id: id,
        job: run.job,
        mode: run.mode,
        agent: run.agent,
        state: record.status.state.name().to_owned(),
        state_detail: redact(record.status.state.to_string(), &secrets),
        env_vars: run.env_vars,
        stdout_log_path: run.stdout_log_path,
        stderr_log_path: run.stderr_log_path,
        snapshot,
        waited_ms: millis(waited),
        elapsed_ms: millis(elapsed),
        end,
    };
    if a.json {
        print_json(&out);
    } else {
        print!("{}", describe(&out));
        eprintln!(
            "arbor: the job keeps running on the agent: arbor logs {id} --follow, arbor status {id}, arbor cancel {id}"
        );
    }
    Ok(if wait {
        code(&record)
    } else {
        ExitCode::SUCCESS
    })
}

/// 0 when the run completed, 1 otherwise.
fn code(record: &ExecutionRecord) -> ExitCode {
    if matches!(record.status.state, JobState::Completed { .. }) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Waits `d`, or less if the run ends.
async fn wait_for(target: &Target, id: ExecutionId, d: Duration) -> Result<(), Fail> {
    let until = Instant::now() + d;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        if target.wait(id, left).await?.status.state.is_terminal() {
            return Ok(());
        }
    }
}

/// The tails of both streams now.
async fn snapshot(
    target: &Target,
    id: ExecutionId,
    a: &Run,
    secrets: &[String],
) -> Result<Snapshot, Fail> {
    let query = |stream| LogSnapshotQuery {
        stream,
        tail_lines: Some(a.tail_lines),
        max_bytes: Some(a.max_bytes),
    };
    let out = target.logs(id, query(SnapshotStream::Stdout)).await?;
    let err = target.logs(id, query(SnapshotStream::Stderr)).await?;
    Ok(Snapshot {
        truncated: out.truncated || err.truncated,
        observed_bytes: out.observed_bytes + err.observed_bytes,
        included_bytes: out.included_bytes + err.included_bytes,
        stdout_tail: redact(out.text, secrets),
        stderr_tail: redact(err.text, secrets),
    })
}

/// Prints the run's output as it comes (its stdout on stdout, its stderr
/// on stderr) until it ends; its final record.
async fn stream(
    target: &Target,
    id: ExecutionId,
    secrets: &[String],
) -> Result<ExecutionRecord, Fail> {
    use std::io::Write;
    let mut out = Follower::new(id, SnapshotStream::Stdout);
    let mut err = Follower::new(id, SnapshotStream::Stderr);
    loop {
        // Read after the state: once it is terminal, the logs are whole.
        let record = target.wait(id, Duration::from_millis(250)).await?;
        for (follower, is_err) in [(&mut out, false), (&mut err, true)] {
            let chunk = follower.poll(target).await?;
            if chunk.skipped > 0 {
                eprintln!(
                    "arbor: {} bytes of {} skipped (no longer in the live tail)",
                    chunk.skipped,
                    if is_err { "stderr" } else { "stdout" }
                );
            }
            if chunk.text.is_empty() {
                continue;
            }
            let text = redact(chunk.text, secrets);
            if is_err {
                eprint!("{text}");
            } else {
                print!("{text}");
                let _ = std::io::stdout().flush();
            }
        }
        if record.status.state.is_terminal() {
            return Ok(record);
        }
    }
}

/// A run as people read it.
fn describe(o: &RunOutput) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("execution", o.job_id.to_string()),
        ("job", o.job.clone()),
        ("state", o.state_detail.clone()),
    ];
    if let Some(agent) = &o.agent {
        rows.push(("agent", agent.clone()));
    }
    if !o.env_vars.is_empty() {
        let env: Vec<String> = o.env_vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        rows.push(("env", env.join(" ")));
    }
    if let Some(p) = &o.stdout_log_path {
        rows.push(("stdout", p.display().to_string()));
    }
    if let Some(p) = &o.stderr_log_path {
        rows.push(("stderr", p.display().to_string()));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut s: String = rows
        .iter()
        .map(|(k, v)| format!("{k:width$}  {v}\n"))
        .collect();
    for (name, tail) in [
        ("stdout", &o.snapshot.stdout_tail),
        ("stderr", &o.snapshot.stderr_tail),
    ] {
        if !tail.is_empty() {
            s.push_str(&format!("--- {name} (last lines) ---\n{tail}"));
            if !tail.ends_with('\n') {
                s.push('\n');
            }
        }
    }
    s
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_requested() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}
