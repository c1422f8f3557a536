//! The `arbor` command line.
//!
//! - `arbor agent --spec FILE` runs the node agent (services, jobs,
//!   schedules, the HTTP API); `arbor validate FILE` checks a spec.
//! - The client commands talk to an agent's API at `--agent URL`
//!   (`$ARBOR_AGENT`, default the Unix socket `$ARBOR_STATE_DIR/arbor.sock`): `status`, `logs`,
//!   `kill`, `cancel`, `list`, `tree`, `services`, `jobs` (`jobs trigger`),
//!   `events`, `ui` (the web view's address). Each prints readable tables
//!   or, with `--json`, the API's JSON.
//! - `arbor run -- CMD` runs a command once as a job: on the agent when one
//!   answers (the job outlives the command), else in this process, waiting
//!   for its end.
//! - `arbor image import|ls|rm` manages the local image store of a state
//!   dir (OCI layouts, oci-archive and docker-archive tarballs).
//! - `arbor supervise -- CMD` runs a command as a supervised service in the
//!   foreground and prints what the supervisor does.
//!
//! Exit codes: 0 ok, 1 the operation failed (the message says what), 2 a
//! usage error.

use std::{
    process::ExitCode,
    sync::{Arc, LazyLock},
    time::Duration,
};

use arbor::{
    BackoffPolicy, ChildSpec, ContainerSpec, Event, OnLimit, PanicAction, ProcessRuntime,
    RestartType, Runtime, Shutdown, SupervisorRef, SupervisorSpec,
};
use clap::{Parser, Subcommand, ValueEnum};

#[path = "arbor/agent.rs"]
mod agent;
#[path = "arbor/chaos.rs"]
mod chaos;
#[path = "arbor/client.rs"]
mod client;
#[path = "arbor/commands.rs"]
mod commands;
#[path = "arbor/common.rs"]
mod common;
#[path = "arbor/follow.rs"]
mod follow;
#[path = "arbor/image.rs"]
mod image;
#[path = "arbor/listen.rs"]
mod listen;
#[path = "arbor/run.rs"]
mod run;
#[path = "arbor/systemd.rs"]
mod systemd;
#[path = "arbor/ui.rs"]
mod ui;

/// Where the client commands look for the agent by default.
static DEFAULT_AGENT: LazyLock<String> = LazyLock::new(client::default_agent);

#[derive(Parser)]
#[command(
    name = "arbor",
    version,
    about = "Supervision trees for node agents",
    after_help = "Exit codes: 0 ok, 1 the operation failed (the message says what), 2 usage error.\n\
                  Client commands talk to the agent at --agent (default: its Unix socket,\n\
                  $ARBOR_STATE_DIR/arbor.sock); start one with `arbor agent --spec FILE`."
)]
struct Cli {
    /// The agent's API, for the client commands and `run`: unix:PATH (its
    /// socket; default <state dir>/arbor.sock) or http://HOST:PORT.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "ARBOR_AGENT",
        hide_env_values = true,
        hide_default_value = true,
        default_value = DEFAULT_AGENT.as_str(),
    )]
    agent: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent: services, jobs and schedules from a spec file,
    /// and the HTTP API.
    Agent(agent::Agent),
    /// Check a spec file: every error with its path, or a summary.
    Validate(agent::Validate),
    /// Run a command once as a job: on the agent, or in this process when
    /// no agent answers.
    ///
    /// When an agent answers at --agent, the run is handed to it (POST
    /// /v1/runs): the job outlives this command, which returns at once, or
    /// with --wait follows it to the end (Ctrl-C then stops the wait, not
    /// the job). When none answers, the job runs in this process with its
    /// records under --state-dir, and this command always waits for the end
    /// (as with --wait; SIGINT or SIGTERM cancel the run).
    ///
    /// Without --json, the output is printed as it comes (waiting) or the
    /// execution and where its logs are (not waiting). With --json, one
    /// object: job_id, job, mode (agent|in_process), agent, state,
    /// state_detail, env_vars (masked), stdout_log_path, stderr_log_path,
    /// snapshot {stdout_tail, stderr_tail, truncated, observed_bytes,
    /// included_bytes}, waited_ms, elapsed_ms, and after a wait exit_code,
    /// signal, finished_at, final_snapshot.
    ///
    /// Exit code: after a wait 0 if the run completed, 1 otherwise (failed,
    /// cancelled, killed); without a wait 0 once the agent accepted it; 1
    /// when the run could not be started; 2 on bad arguments.
    Run(run::Run),
    /// Show one execution: state, exit code, trigger, command, times.
    Status(commands::Status),
    /// Print an execution's output (--follow: until it ends).
    Logs(commands::Logs),
    /// Send a signal to an execution's process group (default SIGTERM).
    Kill(commands::Kill),
    /// Cancel an execution: SIGTERM, SIGKILL after the grace; waits for its
    /// end.
    Cancel(commands::Cancel),
    /// List the executions the agent keeps, oldest first.
    List(commands::List),
    /// Draw the agent's supervision tree, with states and restart counts.
    Tree(commands::Tree),
    /// Show this node's cluster: each member with its state (up, suspect,
    /// down), heartbeat round trip and missed beats, and the --join
    /// addresses.
    Cluster(commands::Cluster),
    /// List the agent's services: state, running and ready replicas,
    /// restarts; or stop, start, restart or scale one.
    Services(commands::Services),
    /// Apply a whole spec to the running agent (as a reload does): every
    /// error listed and nothing changed when it has any; prints what
    /// changed. A later SIGHUP re-reads the agent's own --spec file.
    Deploy(commands::Deploy),
    /// List the agent's jobs (schedule, next run, latest execution), or
    /// trigger one.
    Jobs(commands::Jobs),
    /// Follow the agent's events (supervisor and job events), one line each.
    Events(commands::Events),
    /// Print the address of the agent's web view (the live tree, jobs and
    /// logs in a browser), with the token for the local user.
    ///
    /// The page is served on the agent's TCP listener (start it with
    /// --listen 127.0.0.1:PORT; a browser cannot open the Unix socket). The
    /// token travels in the URL's fragment (#token=...), which the browser
    /// never sends to a server; the page keeps it for the tab's life only.
    Ui(ui::Ui),
    /// Run a spec's deployment under seeded faults on the mock runtime and
    /// the paused clock, then check the invariants and print a report.
    ///
    /// Faults (failed, slow, hung or crashing runtime calls, lost exits) are
    /// drawn from --seed at --faults per call for --duration of virtual
    /// time; on-demand jobs are triggered every --job-every; a quiet period
    /// lets back-offs end; then the node shuts down and every invariant is
    /// checked (one terminal state and one cleanup per execution, nothing
    /// left, restart intensity, back-off delays, permanent children
    /// running, temporary ones never restarted, events matching the tree).
    /// Exit code: 0 when all held, 1 when one broke, 2 on bad input.
    Chaos(chaos::ChaosArgs),
    /// Manage the local image store (import, ls, rm) under --state-dir.
    Image(image::Image),
    /// Tell the service manager about this process (sd_notify): for a
    /// service run with `notify: true` (arbor gives each replica its own
    /// NOTIFY_SOCKET), or a systemd `Type=notify` unit.
    ///
    /// Sends what the flags say, plus any raw STATE=VALUE lines, to
    /// $NOTIFY_SOCKET, as systemd-notify does. Exit code: 0 sent, 1 when
    /// NOTIFY_SOCKET is not set or the send failed, 2 on bad arguments.
    Notify(systemd::Notify),
    /// Run a command as a supervised service in the foreground.
    ///
    /// The service restarts by its policy; SIGINT or SIGTERM stops it
    /// (SIGTERM to the process group, SIGKILL after --grace). Exits 0 after
    /// a requested stop, 1 if the supervisor gave up (restart limit
    /// exceeded with --on-limit escalate), 2 on bad arguments.
    Supervise(Supervise),
}

#[derive(Parser)]
struct Supervise {
    /// Service name (default: the program's file name).
    #[arg(long)]
    name: Option<String>,
    /// How many copies to run (1 to 1000).
    #[arg(long, default_value_t = 1, value_parser = parse_replicas)]
    replicas: usize,
    /// When to restart: permanent (always), transient (after failures), temporary (never).
    #[arg(long, value_enum, default_value_t = Restart::Permanent)]
    restart: Restart,
    /// What a failure leads to: restart, isolate (keep it, never restart), shutdown (stop every replica), fail (leave it down, `failed`).
    #[arg(long, value_enum, default_value_t = OnPanic::Restart)]
    on_panic: OnPanic,
    /// Restarts allowed within --window before --on-limit applies.
    #[arg(long, default_value_t = 5)]
    max_restarts: u32,
    /// Sliding window restarts are counted in (e.g. 30s, 5m).
    #[arg(long, value_parser = crate::common::parse_duration, default_value = "5m")]
    window: Duration,
    /// Past the limit: escalate (give up and exit 1) or backoff (crash-loop back-off).
    #[arg(long, value_enum, default_value_t = Limit::Backoff)]
    on_limit: Limit,
    /// First back-off delay.
    #[arg(long, value_parser = crate::common::parse_duration, default_value = "10s")]
    backoff_initial: Duration,
    /// Longest back-off delay.
    #[arg(long, value_parser = crate::common::parse_duration, default_value = "5m")]
    backoff_max: Duration,
    /// Time between SIGTERM and SIGKILL when stopping.
    #[arg(long, value_parser = crate::common::parse_duration, default_value = "5s")]
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
    Fail,
}

#[derive(Clone, Copy, ValueEnum)]
enum Limit {
    Escalate,
    Backoff,
}

/// `--replicas`: at least one (zero would run nothing, silently), at most
/// the spec's limit.
use arbor::args::replicas as parse_replicas;

fn main() -> ExitCode {
    // A container's keeper when `arbor-keeper` is not installed beside us:
    // before anything else starts (no threads, no runtime).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == arbor::keeper::ARG)
    {
        return arbor::keeper::main(std::env::args_os().skip(2));
    }
    let cli = Cli::parse();
    let (default_level, json) = match &cli.command {
        // ractor_cluster logs every session step at info; arbor says
        // what matters (sessions authenticated and closed, node events).
        Command::Agent(a) => (
            "info,ractor_cluster=warn",
            a.log_format() == agent::LogFormat::Json,
        ),
        _ => ("warn", false),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_level.into());
    // Colours only for a terminal, never into a file or a journal.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
    if let Command::Chaos(args) = cli.command {
        return chaos::chaos(args);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("arbor: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let command = match cli.command {
        Command::Supervise(args) => return runtime.block_on(supervise(args)),
        Command::Agent(args) => return runtime.block_on(agent::agent(args)),
        Command::Validate(args) => return agent::validate(args),
        Command::Image(args) => return image::image(args),
        Command::Notify(args) => return systemd::notify(args),
        client_command => client_command,
    };
    // Read here, so that a bad $ARBOR_AGENT only troubles the client commands.
    let url = match cli.agent.parse::<client::AgentUrl>() {
        Ok(url) => url,
        Err(e) => {
            return common::Fail::usage(format!("invalid --agent URL {:?}: {e}", cli.agent))
                .report();
        }
    };
    let url = &url;
    if !matches!(command, Command::Run(_)) {
        // The reading commands end quietly when their reader goes away
        // (`arbor events --json | head -3`), as Unix tools do: the default
        // action of SIGPIPE, instead of a panic on the failed write. (`run`
        // may run a job in this process, so it keeps ignoring SIGPIPE.)
        // SAFETY: no other thread writes to a pipe yet; resetting a signal
        // to its default action has no other effect.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
        };
    }
    let outcome = match command {
        Command::Supervise(_)
        | Command::Agent(_)
        | Command::Validate(_)
        | Command::Chaos(_)
        | Command::Notify(_)
        | Command::Image(_) => {
            unreachable!()
        }
        Command::Run(args) => runtime.block_on(run::run(url, args)),
        Command::Status(args) => runtime.block_on(commands::status(url, args)),
        Command::Logs(args) => runtime.block_on(commands::logs(url, args)),
        Command::Kill(args) => runtime.block_on(commands::kill(url, args)),
        Command::Cancel(args) => runtime.block_on(commands::cancel(url, args)),
        Command::List(args) => runtime.block_on(commands::list(url, args)),
        Command::Tree(args) => runtime.block_on(commands::tree(url, args)),
        Command::Cluster(args) => runtime.block_on(commands::cluster(url, args)),
        Command::Services(args) => runtime.block_on(commands::services(url, args)),
        Command::Deploy(args) => runtime.block_on(commands::deploy(url, args)),
        Command::Jobs(args) => runtime.block_on(commands::jobs(url, args)),
        Command::Events(args) => runtime.block_on(commands::events(url, args)),
        Command::Ui(args) => runtime.block_on(ui::ui(url, args)),
    };
    // Leave tasks (the connections, the signal watchers) behind at once.
    runtime.shutdown_background();
    outcome.unwrap_or_else(common::Fail::report)
}

async fn supervise(args: Supervise) -> ExitCode {
    let _ = arbor::runtime::process::limits::raise_nofile();
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
        OnPanic::Fail => PanicAction::Fail,
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

    // Listening before anything starts: a SIGTERM that arrives as soon as
    // the service runs still stops it cleanly.
    let mut sigterm = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("arbor: failed to listen for SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bus = arbor::EventBus::new();
    let mut events = bus.subscribe();
    let (sup, mut done) = match SupervisorRef::start_with_events(spec, bus).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("arbor: {e}");
            return ExitCode::from(2);
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
        Event::ChildRestarted {
            child,
            restart_count,
            ..
        } => format!("{child}: restarted (#{restart_count})"),
        Event::CrashLoopBackOff { child, delay, .. } => {
            format!(
                "{child}: crash loop, next start in {}",
                humantime::format_duration(*delay)
            )
        }
        Event::ChildIsolated {
            child, retained, ..
        } => match retained {
            Some(kept) => format!("{child}: isolated ({kept} kept)"),
            None => format!("{child}: isolated"),
        },
        Event::ChildFailed { child, reason, .. } => format!("{child}: failed ({reason})"),
        Event::ServiceShutdown {
            supervisor, reason, ..
        } => format!("{supervisor}: shut down ({reason})"),
        Event::ChildCompleted { child, .. } => format!("{child}: completed"),
        Event::SupervisorEscalated { supervisor, reason } => format!("{supervisor}: {reason}"),
        Event::ExecutionStarted { id, job, .. } => format!("{job} {id}: started"),
        Event::ExecutionFinished {
            id, job, detail, ..
        } => format!("{job} {id}: {detail}"),
        Event::OverlayWarning { id, job, message } => format!("{job} {id}: overlay: {message}"),
        _ => return None,
    })
}
