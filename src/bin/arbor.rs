//! The `arbor` command line.
//!
//! `arbor supervise -- CMD [ARGS...]` runs a command as a supervised service
//! in the foreground, with arbor's restart policies, and prints what the
//! supervisor does. `arbor run -- CMD` runs a command once as a job with
//! durable records and logs. The node agent (`arbor agent`) and its API come next.

use std::{process::ExitCode, sync::Arc, time::Duration};

use arbor::{
    BackoffPolicy, ChildSpec, ContainerSpec, Event, Executor, ExecutorConfig, JobSpec, JobState,
    JobTrigger, LogSnapshotQuery, OnLimit, PanicAction, ProcessRuntime, RestartType, Runtime,
    Shutdown, SnapshotStream, SupervisorRef, SupervisorSpec,
};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "arbor", version, about = "Supervision trees for node agents")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command as a supervised service in the foreground.
    ///
    /// The service restarts by its policy; SIGINT or SIGTERM stops it
    /// (SIGTERM to the process group, SIGKILL after --grace). Exits 0 after
    /// a requested stop, 1 if the supervisor gave up (restart limit
    /// exceeded with --on-limit escalate), 2 on bad arguments.
    Supervise(Supervise),
    /// Run a command once as a job, with durable records and logs.
    ///
    /// Prints the execution id and where its records are, waits for it, then
    /// prints its final state and the tail of its output. SIGINT or SIGTERM
    /// cancels it (SIGTERM to its process group, SIGKILL after
    /// --stop-timeout). Exits with the command's exit code, 1 if it failed
    /// otherwise, 130 if cancelled, 2 on bad arguments.
    Run(Run),
    /// Run the node agent: services, jobs and schedules from a spec file,
    /// and the HTTP API.
    Agent(agent::Agent),
    /// Check a spec file: every error with its path, or a summary.
    Validate(agent::Validate),
}

#[derive(Parser)]
struct Run {
    /// Job name (default: the program's file name).
    #[arg(long)]
    name: Option<String>,
    /// Directory for records and logs (default: $ARBOR_STATE_DIR, else
    /// $HOME/.local/state/arbor).
    #[arg(long, env = "ARBOR_STATE_DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// Environment variable for the command (KEY=VALUE, repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// File of KEY=VALUE lines (repeatable).
    #[arg(long)]
    env_file: Vec<std::path::PathBuf>,
    /// Key whose value is shown as *** in records (repeatable).
    #[arg(long)]
    mask: Vec<String>,
    /// Working directory.
    #[arg(long)]
    cwd: Option<std::path::PathBuf>,
    /// Stop and fail the run after this long (e.g. 30s, 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    deadline: Option<Duration>,
    /// Grace between SIGTERM and SIGKILL on cancel or deadline.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    stop_timeout: Duration,
    /// Lines of output to print at the end (0: none).
    #[arg(long, default_value_t = 20)]
    tail: usize,
    /// Print the final record as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// The command and its arguments.
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

#[derive(Parser)]
struct Supervise {
    /// Service name (default: the program's file name).
    #[arg(long)]
    name: Option<String>,
    /// How many copies to run.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// When to restart: permanent (always), transient (after failures), temporary (never).
    #[arg(long, value_enum, default_value_t = Restart::Permanent)]
    restart: Restart,
    /// What a failure leads to: restart, isolate (keep it, never restart), shutdown (stop every replica).
    #[arg(long, value_enum, default_value_t = OnPanic::Restart)]
    on_panic: OnPanic,
    /// Restarts allowed within --window before --on-limit applies.
    #[arg(long, default_value_t = 5)]
    max_restarts: u32,
    /// Sliding window restarts are counted in (e.g. 30s, 5m).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    window: Duration,
    /// Past the limit: escalate (give up and exit 1) or backoff (crash-loop back-off).
    #[arg(long, value_enum, default_value_t = Limit::Backoff)]
    on_limit: Limit,
    /// First back-off delay.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    backoff_initial: Duration,
    /// Longest back-off delay.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    backoff_max: Duration,
    /// Time between SIGTERM and SIGKILL when stopping.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    grace: Duration,
    /// Print events as JSON lines.
    #[arg(long)]
    json: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Restart {
    Permanent,
    Transient,
    Temporary,
}

#[derive(Clone, Copy, ValueEnum)]
enum OnPanic {
    Restart,
    Isolate,
    Shutdown,
}

#[derive(Clone, Copy, ValueEnum)]
enum Limit {
    Escalate,
    Backoff,
}

#[path = "arbor/agent.rs"]
mod agent;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (default_level, json) = match &cli.command {
        Command::Agent(a) => ("info", a.log_format() == agent::LogFormat::Json),
        _ => ("warn", false),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_level.into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("arbor: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Supervise(args) => runtime.block_on(supervise(args)),
        Command::Run(args) => runtime.block_on(run(args)),
        Command::Agent(args) => runtime.block_on(agent::agent(args)),
        Command::Validate(args) => agent::validate(args),
    }
}

async fn run(args: Run) -> ExitCode {
    let name = args.name.clone().unwrap_or_else(|| {
        std::path::Path::new(&args.command[0])
            .file_name()
            .map_or("job".into(), |n| n.to_string_lossy().into_owned())
    });
    let mut spec = JobSpec::command(name, args.command.clone());
    for kv in &args.env {
        let Some((k, v)) = kv.split_once('=') else {
            eprintln!("arbor: --env {kv:?}: expected KEY=VALUE");
            return ExitCode::from(2);
        };
        spec.env.insert(k.to_owned(), v.to_owned());
    }
    spec.env_file = args.env_file.clone();
    spec.mask = args.mask.clone();
    spec.cwd = args.cwd.clone();
    spec.deadline = args.deadline;
    spec.stop_timeout = args.stop_timeout;
    if let Err(e) = spec.validate() {
        eprintln!("arbor: invalid job: {e}");
        return ExitCode::from(2);
    }
    let Some(state_dir) = args.state_dir.clone().or_else(|| {
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state/arbor"))
    }) else {
        eprintln!("arbor: no --state-dir given and HOME is not set");
        return ExitCode::from(2);
    };
    let process = match ProcessRuntime::builder().build() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("arbor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let executor =
        match Executor::start(ExecutorConfig::new(Arc::new(process.clone())).state_dir(&state_dir))
            .await
        {
            Ok(e) => e,
            Err(e) => {
                eprintln!("arbor: {e}");
                return ExitCode::FAILURE;
            }
        };
    let id = match executor.run(spec, JobTrigger::Cli).await {
        Ok(id) => id,
        Err(e) => {
            eprintln!("arbor: {e}");
            return ExitCode::from(2);
        }
    };
    if !args.json {
        eprintln!(
            "arbor: execution {id} (records in {})",
            state_dir.join("executions").join(id.to_string()).display()
        );
    }
    let record = tokio::select! {
        r = executor.wait(id) => r,
        _ = stop_requested() => {
            let _ = executor.cancel(id, None).await;
            executor.wait(id).await
        }
    };
    let record = match record {
        Ok(r) => r,
        Err(e) => {
            eprintln!("arbor: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&record).unwrap_or_default()
        );
    } else {
        if args.tail > 0
            && let Ok(out) = executor
                .logs(id, LogSnapshotQuery::tail(SnapshotStream::Full, args.tail))
                .await
        {
            print!("{}", out.text);
        }
        eprintln!("arbor: {}", record.status.state);
    }
    executor.shutdown(Duration::from_secs(5)).await;
    process.shutdown(Duration::from_secs(5)).await;
    match &record.status.state {
        JobState::Completed { .. } => ExitCode::SUCCESS,
        JobState::Cancelled => ExitCode::from(130),
        JobState::Failed {
            exit_code: Some(c), ..
        } => ExitCode::from((*c).clamp(1, 255) as u8),
        JobState::Failed { .. } => ExitCode::FAILURE,
        _ => ExitCode::FAILURE,
    }
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

async fn supervise(args: Supervise) -> ExitCode {
    let name = args.name.clone().unwrap_or_else(|| {
        std::path::Path::new(&args.command[0])
            .file_name()
            .map_or("service".into(), |n| n.to_string_lossy().into_owned())
    });
    let process = match ProcessRuntime::builder().echo_output(!args.json).build() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("arbor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime: Arc<dyn Runtime> = Arc::new(process.clone());
    let restart = match args.restart {
        Restart::Permanent => RestartType::Permanent,
        Restart::Transient => RestartType::Transient,
        Restart::Temporary => RestartType::Temporary,
    };
    let on_panic = match args.on_panic {
        OnPanic::Restart => PanicAction::Restart,
        OnPanic::Isolate => PanicAction::Isolate,
        OnPanic::Shutdown => PanicAction::Shutdown,
    };
    let spec = SupervisorSpec::service(
        name.clone(),
        runtime,
        ContainerSpec::command(name.clone(), args.command.clone()),
        args.replicas,
    )
    .map_children(|c: ChildSpec| {
        c.restart(restart)
            .on_panic(on_panic)
            .shutdown(Shutdown::Timeout(args.grace))
    })
    .intensity(args.max_restarts, args.window)
    .on_limit(match args.on_limit {
        Limit::Escalate => OnLimit::Escalate,
        Limit::Backoff => OnLimit::Backoff,
    })
    .backoff(BackoffPolicy {
        initial: args.backoff_initial,
        max: args.backoff_max,
        ..BackoffPolicy::default()
    });

    let bus = arbor::EventBus::new();
    let mut events = bus.subscribe();
    let (sup, mut done) = match SupervisorRef::start_with_events(spec, bus).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("arbor: {e}");
            return ExitCode::from(2);
        }
    };
    let mut sigterm = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("arbor: failed to listen for SIGTERM: {e}");
            sup.shutdown().await;
            return ExitCode::FAILURE;
        }
    };
    let say = |e: &Event| {
        if args.json {
            println!("{}", serde_json::to_string(e).unwrap_or_default());
        } else if let Some(line) = describe(e) {
            println!("{line}");
        }
    };
    let gave_up = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break false,
            _ = sigterm.recv() => break false,
            _ = &mut done => break true,
            Some(e) = events.recv() => say(&e),
        }
    };
    if !gave_up {
        sup.shutdown().await;
    }
    // The bus delivers asynchronously: print what is still on its way.
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(100), events.recv()).await {
        say(&e);
    }
    process.shutdown(args.grace).await;
    if gave_up {
        eprintln!("arbor: {name} gave up: restart limit exceeded");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn describe(e: &Event) -> Option<String> {
    Some(match e {
        Event::ChildStarted { child, .. } => format!("{child}: started"),
        Event::ChildExited { child, exit, .. } => format!("{child}: exited ({exit})"),
        Event::ChildStopped { child, reason, .. } => format!("{child}: stopped ({reason})"),
        Event::ChildStartFailed { child, error, .. } => {
            format!("{child}: failed to start: {error}")
        }
        Event::ContainerRestarted {
            id, restart_count, ..
        } => format!("{id}: restarted (#{restart_count})"),
        Event::CrashLoopBackOff { id, delay, .. } => {
            format!(
                "{id}: crash loop, next start in {}",
                humantime::format_duration(*delay)
            )
        }
        Event::ContainerIsolated { id, container, .. } => {
            format!(
                "{id}: isolated (container {} kept)",
                container.as_deref().unwrap_or("-")
            )
        }
        Event::ServiceShutdown { service, reason } => format!("{service}: shut down ({reason})"),
        Event::ContainerCompleted { id, .. } => format!("{id}: completed"),
        Event::SupervisorEscalated { supervisor, reason } => format!("{supervisor}: {reason}"),
        Event::ExecutionStarted { id, job, .. } => format!("{job} {id}: started"),
        Event::ExecutionFinished {
            id, job, detail, ..
        } => format!("{job} {id}: {detail}"),
    })
}
