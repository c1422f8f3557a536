//! The client commands: `status`, `logs`, `kill`, `cancel`, `list`,
//! `tree`, `services`, `jobs` (and `jobs trigger`), `events`. Each asks
//! the agent's API and prints its JSON (`--json`) or a readable form.

use std::{process::ExitCode, time::Duration};

use arbor::{
    Event, ExecutionId, ExecutionRecord, JobTrigger, LogSnapshotQuery, ServiceInfo, SnapshotStream,
    api::{JobInfo, TriggerResponse},
};
use clap::{Args, Subcommand, ValueEnum};
use http_body_util::BodyExt;
use serde::Serialize;

use super::{
    client::{AgentUrl, encode},
    common::{
        Conn, Fail, Outcome, argv, cut, duration, exit_short, parse_duration, parse_id,
        parse_signal, print_json, run_time, signal_name, state_short, table, time,
    },
    follow::{Follower, Target, stream_name},
};

/// Which log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Stream {
    /// What the command wrote to stdout.
    Stdout,
    /// What the command wrote to stderr.
    Stderr,
    /// Both, line by line, each with its time and stream.
    Full,
}

impl From<Stream> for SnapshotStream {
    fn from(s: Stream) -> Self {
        match s {
            Stream::Stdout => Self::Stdout,
            Stream::Stderr => Self::Stderr,
            Stream::Full => Self::Full,
        }
    }
}

#[derive(Args)]
pub struct Status {
    /// The execution id.
    #[arg(value_name = "ID", value_parser = parse_id)]
    id: ExecutionId,
    /// Print the execution record as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// `arbor status ID`.
pub async fn status(url: &AgentUrl, a: Status) -> Outcome {
    let c = a.conn.client(url)?;
    let path = format!("/v1/executions/{}", a.id);
    if a.json {
        print_json(&c.get_value(&path).await?);
    } else {
        let r: ExecutionRecord = c.get(&path).await?;
        print!("{}", describe_record(&r));
    }
    Ok(ExitCode::SUCCESS)
}

/// An execution record as aligned `key  value` lines.
pub fn describe_record(r: &ExecutionRecord) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("execution", r.meta.id.to_string()),
        (
            "job",
            format!("{} (attempt {})", r.meta.job, r.meta.attempt),
        ),
        ("state", r.status.state.to_string()),
    ];
    if let Some(code) = r.status.state.exit_code() {
        rows.push(("exit code", code.to_string()));
    }
    if let Some(sig) = r.status.signal {
        rows.push(("signal", signal_name(sig)));
    }
    if r.status.paused && r.status.state.is_active() {
        rows.push((
            "paused",
            "yes (SIGSTOP; arbor kill ID --signal CONT)".into(),
        ));
    }
    rows.push(("trigger", r.meta.trigger.to_string()));
    if let Some(retry) = r.meta.retry_of {
        rows.push(("retry of", retry.to_string()));
    }
    if let Some(image) = &r.meta.image {
        rows.push(("image", image.clone()));
    }
    if !r.meta.command.is_empty() {
        rows.push(("command", argv(&r.meta.command)));
    }
    if let Some(cwd) = &r.meta.cwd {
        rows.push(("cwd", cwd.display().to_string()));
    }
    if !r.meta.env.is_empty() {
        let env: Vec<String> = r.meta.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        rows.push(("env", env.join(" ")));
    }
    if let Some(pid) = r.status.pid {
        rows.push(("pid", pid.to_string()));
    }
    rows.push(("created", time(r.meta.created_at)));
    if let Some(t) = r.status.started_at {
        rows.push(("started", time(t)));
    }
    if let Some(t) = r.status.finished_at {
        rows.push(("finished", time(t)));
    }
    if let Some(d) = run_time(r) {
        rows.push(("run time", duration(d)));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:width$}  {v}\n"))
        .collect()
}

#[derive(Args)]
pub struct Logs {
    /// An execution id; or a service (every replica, each line prefixed by
    /// its replica) or one replica (`web`, `web-0`), read from the log
    /// files the agent keeps under <state-dir>/services/.
    #[arg(value_name = "ID|SERVICE|REPLICA")]
    id: String,
    /// Keep printing new output until the execution ends.
    #[arg(long, short)]
    follow: bool,
    /// Which log.
    #[arg(long, value_enum, default_value_t = Stream::Full)]
    stream: Stream,
    /// Only the last N lines (with --follow: then the new ones).
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
    /// Print the API's JSON (with --follow: one JSON line per piece of new
    /// output).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// One piece of followed output, as `arbor logs --follow --json` prints it.
#[derive(Serialize)]
struct FollowLine<'a> {
    execution_id: ExecutionId,
    stream: &'a str,
    text: &'a str,
    observed_bytes: u64,
    skipped_bytes: u64,
}

/// `arbor logs SERVICE|REPLICA`: the last lines of a service's log files.
async fn service_logs(url: &AgentUrl, a: Logs) -> Outcome {
    let c = a.conn.client(url)?;
    let name = a.id.as_str();
    let exists = |n: &str| {
        let c = &c;
        let path = format!("/v1/services/{}", encode(n));
        async move { c.get::<serde_json::Value>(&path).await.is_ok() }
    };
    let (service, replica) = if exists(name).await {
        (name.to_owned(), None)
    } else {
        match name.rsplit_once('-') {
            Some((svc, i)) if i.parse::<usize>().is_ok() && exists(svc).await => {
                (svc.to_owned(), Some(name.to_owned()))
            }
            _ => {
                return Err(Fail::usage(format!(
                    "no execution, service or replica named {name:?} (an execution id is a UUID like 67e55044-10b1-426f-9247-bb680e5fe0c8)"
                )));
            }
        }
    };
    let stream = match a.stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
        Stream::Full => "full",
    };
    let mut path = format!(
        "/v1/services/{}/logs?stream={stream}&tail={}",
        encode(&service),
        a.tail.unwrap_or(100)
    );
    if let Some(r) = &replica {
        path.push_str(&format!("&replica={}", encode(r)));
    }
    if a.follow {
        // New lines as they are written, until the service is removed or
        // the agent stops.
        if !a.json {
            path.push_str("&format=text");
        }
        path.push_str("&follow=true");
        let mut body = c.stream(&path).await?;
        use std::io::Write;
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| Fail::failed(format!("the agent's stream broke: {e}")))?;
            if let Some(data) = frame.data_ref() {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(data);
                let _ = out.flush();
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.json {
        print_json(&c.get_value(&path).await?);
    } else {
        path.push_str("&format=text");
        print!("{}", c.get_text(&path).await?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `arbor logs ID`.
pub async fn logs(url: &AgentUrl, a: Logs) -> Outcome {
    let Ok(id) = parse_id(&a.id) else {
        return service_logs(url, a).await;
    };
    let c = a.conn.client(url)?;
    let stream = SnapshotStream::from(a.stream);
    let mut path = format!("/v1/executions/{}/logs?stream={}", id, stream_name(stream));
    if let Some(n) = a.tail {
        path.push_str(&format!("&tail={n}"));
    }
    if !a.follow {
        if a.json {
            print_json(&c.get_value(&path).await?);
        } else {
            let r: arbor::api::LogsResponse = c.get(&path).await?;
            print!("{}", r.snapshot.text);
            if r.snapshot.truncated {
                eprintln!(
                    "arbor: showing the last {} of {} bytes",
                    r.snapshot.included_bytes, r.snapshot.observed_bytes
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }

    let target = Target::Agent(c);
    let first = target
        .logs(
            id,
            LogSnapshotQuery {
                stream,
                tail_lines: a.tail,
                max_bytes: None,
            },
        )
        .await?;
    let show = |text: &str, observed: u64, skipped: u64| {
        if a.json {
            let line = FollowLine {
                execution_id: id,
                stream: stream_name(stream),
                text,
                observed_bytes: observed,
                skipped_bytes: skipped,
            };
            println!("{}", serde_json::to_string(&line).unwrap_or_default());
        } else {
            if skipped > 0 {
                eprintln!("arbor: {skipped} bytes of output skipped (no longer in the live tail)");
            }
            print!("{text}");
            use std::io::Write;
            let _ = std::io::stdout().flush();
        }
    };
    if !first.text.is_empty() || a.json {
        show(&first.text, first.observed_bytes, 0);
    }
    let mut follower = Follower::after(id, stream, &first);
    loop {
        let record = target.wait(id, Duration::from_millis(250)).await?;
        let chunk = follower.poll(&target).await?;
        if !chunk.text.is_empty() || chunk.skipped > 0 {
            show(&chunk.text, chunk.observed, chunk.skipped);
        }
        if record.status.state.is_terminal() {
            if !a.json {
                eprintln!("arbor: execution {} {}", id, record.status.state);
            }
            return Ok(ExitCode::SUCCESS);
        }
    }
}

#[derive(Args)]
pub struct Kill {
    /// The execution id.
    #[arg(value_name = "ID", value_parser = parse_id)]
    id: ExecutionId,
    /// The signal, to the execution's process group: a name (TERM,
    /// SIGUSR1, KILL) or a number. STOP and CONT pause and resume it.
    #[arg(long, short, value_name = "SIG", default_value = "SIGTERM", value_parser = parse_signal)]
    signal: String,
    /// Print the API's answer as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// `arbor kill ID`.
pub async fn kill(url: &AgentUrl, a: Kill) -> Outcome {
    let c = a.conn.client(url)?;
    let body = serde_json::json!({ "signal": a.signal });
    let answer: serde_json::Value = c
        .post(&format!("/v1/executions/{}/signal", a.id), Some(&body))
        .await?;
    if a.json {
        print_json(&answer);
    } else {
        println!("sent {} to execution {}", a.signal, a.id);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct Cancel {
    /// The execution id.
    #[arg(value_name = "ID", value_parser = parse_id)]
    id: ExecutionId,
    /// Time between SIGTERM and SIGKILL (default: the job's stop_timeout).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    grace: Option<Duration>,
    /// Return once the cancel is requested, without waiting for the end.
    #[arg(long)]
    no_wait: bool,
    /// Print the execution record as JSON (at its end, or as it is with
    /// --no-wait).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// `arbor cancel ID`.
pub async fn cancel(url: &AgentUrl, a: Cancel) -> Outcome {
    let c = a.conn.client(url)?;
    let body = serde_json::json!({
        "grace": a.grace.map(|g| humantime::format_duration(g).to_string()),
    });
    let mut record: ExecutionRecord = c
        .post(&format!("/v1/executions/{}/cancel", a.id), Some(&body))
        .await?;
    if !a.no_wait && record.status.state.is_active() {
        let target = Target::Agent(c);
        record = target.wait_end(a.id).await?;
    }
    if a.json {
        print_json(&record);
    } else {
        println!("execution {}: {}", a.id, record.status.state);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct List {
    /// Only the executions of this job.
    #[arg(long, value_name = "NAME")]
    job: Option<String>,
    /// Print the execution records as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// `arbor list`.
pub async fn list(url: &AgentUrl, a: List) -> Outcome {
    let c = a.conn.client(url)?;
    let path = match &a.job {
        Some(job) => format!("/v1/executions?job={}", encode(job)),
        None => "/v1/executions".into(),
    };
    if a.json {
        print_json(&c.get_value(&path).await?);
        return Ok(ExitCode::SUCCESS);
    }
    let records: Vec<ExecutionRecord> = c.get(&path).await?;
    if records.is_empty() {
        match &a.job {
            Some(job) => eprintln!("arbor: no executions of job {job:?}"),
            None => eprintln!("arbor: no executions"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.meta.id.to_string(),
                r.meta.job.clone(),
                state_short(r),
                exit_short(r),
                trigger_short(&r.meta.trigger),
                time(r.meta.created_at),
                run_time(r).map_or_else(|| "-".into(), duration),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "ID", "JOB", "STATE", "EXIT", "TRIGGER", "CREATED", "DURATION"
            ],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

fn trigger_short(t: &JobTrigger) -> String {
    match t {
        JobTrigger::Endpoint { .. } => "api".into(),
        JobTrigger::Cli => "cli".into(),
        JobTrigger::Scheduler { .. } => "schedule".into(),
        JobTrigger::Internal { .. } => "internal".into(),
        _ => "other".into(),
    }
}

#[derive(Args)]
pub struct Tree {
    /// Print the tree as JSON (name, kind, state, restarts, last exit,
    /// children).
    #[arg(long)]
    json: bool,
    /// Every cluster member's tree, each under its name and state (a
    /// member that does not answer within 2 s is listed with why).
    #[arg(long)]
    cluster: bool,
    #[command(flatten)]
    conn: Conn,
}

/// `arbor tree`.
pub async fn tree(url: &AgentUrl, a: Tree) -> Outcome {
    let c = a.conn.client(url)?;
    let path = if a.cluster {
        "/v1/cluster/tree"
    } else {
        "/v1/tree"
    };
    if a.json {
        print_json(&c.get_value(path).await?);
    } else {
        print!("{}", c.get_text(&format!("{path}?format=text")).await?);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct Cluster {
    #[command(subcommand)]
    action: Option<ClusterAction>,
    /// Print the view as JSON (node, addr, heartbeat, members, seeds).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Forget a member that is down for good, so that it no longer counts
    /// for the majority (a running node leaves by itself when stopped with
    /// SIGTERM). Each node keeps its own view: forget it on every node.
    Forget(ForgetMember),
}

#[derive(Args)]
struct ForgetMember {
    /// The member's name.
    #[arg(value_name = "NODE")]
    node: String,
    #[command(flatten)]
    conn: Conn,
}

/// `arbor cluster`.
pub async fn cluster(url: &AgentUrl, a: Cluster) -> Outcome {
    if let Some(ClusterAction::Forget(f)) = a.action {
        let c = f.conn.client(url)?;
        let _: serde_json::Value = c
            .post(
                &format!("/v1/cluster/members/{}/forget", f.node),
                None::<&()>,
            )
            .await?;
        println!("forgot {}", f.node);
        return Ok(ExitCode::SUCCESS);
    }
    let c = a.conn.client(url)?;
    let view = c.get_value("/v1/cluster").await?;
    if a.json {
        print_json(&view);
        return Ok(ExitCode::SUCCESS);
    }
    let Ok(view) = serde_json::from_value::<arbor::cluster::ClusterView>(view.clone()) else {
        print_json(&view);
        return Ok(ExitCode::SUCCESS);
    };
    print!("{}", cluster_table(&view));
    Ok(ExitCode::SUCCESS)
}

/// The members (this node marked `*`), then the `--join` addresses.
fn cluster_table(view: &arbor::cluster::ClusterView) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let hb = &view.heartbeat;
    let _ = writeln!(
        out,
        "node {} at {} (heartbeat every {} ms, suspect after {} ms, down {} ms later)",
        view.node, view.addr, hb.interval_ms, hb.suspect_after_ms, hb.down_grace_ms
    );
    let _ = writeln!(
        out,
        "{:<2}{:<20} {:<22} {:<8} {:>9} {:>10} {:>7}",
        "", "NODE", "ADDR", "STATE", "RTT", "LAST SEEN", "MISSED"
    );
    for m in &view.members {
        let rtt = m
            .rtt_ms
            .map(|r| format!("{r:.2}ms"))
            .unwrap_or_else(|| "-".into());
        let seen = m
            .last_seen_ms_ago
            .map(|s| format!("{:.1}s ago", s as f64 / 1e3))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<2}{:<20} {:<22} {:<8} {:>9} {:>10} {:>7}",
            if m.is_self { "*" } else { "" },
            m.name,
            m.addr,
            m.state,
            rtt,
            seen,
            m.missed_total
        );
    }
    let _ = writeln!(
        out,
        "{} of {} known members live{}",
        view.live,
        view.known,
        if view.fenced {
            ": FENCED (no majority): this node runs no cluster-placed replica"
        } else {
            ""
        }
    );
    for (service, nodes) in &view.placements {
        let spread: Vec<String> = nodes.iter().map(|(n, k)| format!("{n} x{k}")).collect();
        let _ = writeln!(
            out,
            "placement {service}: {}",
            if spread.is_empty() {
                "nowhere".to_string()
            } else {
                spread.join(", ")
            }
        );
    }
    for s in &view.seeds {
        let _ = writeln!(
            out,
            "join {}: {}{}",
            s.addr,
            if s.connected {
                "connected"
            } else {
                "not connected"
            },
            match (&s.node, &s.last_error) {
                (_, Some(e)) if !s.connected => format!(" ({e})"),
                (Some(n), _) => format!(" to {n}"),
                _ => String::new(),
            }
        );
    }
    out
}

#[derive(Args)]
pub struct Services {
    #[command(subcommand)]
    action: Option<ServicesAction>,
    /// Print the services as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Subcommand)]
enum ServicesAction {
    /// Stop a service (each replica with its grace); it stays stopped,
    /// across reloads too, until `arbor services start`.
    Stop(ServiceName),
    /// Start a stopped service (a running one is left as it is).
    Start(ServiceName),
    /// Restart every replica of a service (also brings back a failed one).
    Restart(ServiceName),
    /// Set a service's replicas in place: new ones start, extra ones stop
    /// from the last, the others keep running. The next deploy or reload of
    /// a spec sets them again.
    Scale(Scale),
}

#[derive(Args)]
struct ServiceName {
    /// The service's name.
    #[arg(value_name = "NAME")]
    name: String,
    /// Print the service as JSON once done.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
struct Scale {
    /// The service's name.
    #[arg(value_name = "NAME")]
    name: String,
    /// How many replicas (1 to 10000).
    #[arg(value_name = "REPLICAS")]
    replicas: usize,
    /// Print the service as JSON once done.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// How long a service operation may take: its replicas' stop graces.
const SERVICE_OP_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// `arbor services stop|start|restart|scale`.
async fn service_action(url: &AgentUrl, action: ServicesAction) -> Outcome {
    let (verb, name, json, conn, body) = match action {
        ServicesAction::Stop(s) => ("stop", s.name, s.json, s.conn, None),
        ServicesAction::Start(s) => ("start", s.name, s.json, s.conn, None),
        ServicesAction::Restart(s) => ("restart", s.name, s.json, s.conn, None),
        ServicesAction::Scale(s) => (
            "replicas",
            s.name,
            s.json,
            s.conn,
            Some(
                serde_json::to_vec(&serde_json::json!({"replicas": s.replicas}))
                    .unwrap_or_default(),
            ),
        ),
    };
    let c = conn.client(url)?;
    let path = format!("/v1/services/{}/{verb}", encode(&name));
    let method = if body.is_some() {
        hyper::Method::PUT
    } else {
        hyper::Method::POST
    };
    let info: serde_json::Value = c.send_raw(method, &path, body, SERVICE_OP_TIMEOUT).await?;
    if json {
        print_json(&info);
    } else {
        println!(
            "{}: {} ({}/{} running, {}/{} ready)",
            info["name"].as_str().unwrap_or(&name),
            info["status"].as_str().unwrap_or("?"),
            info["running"],
            info["replicas"],
            info["ready"],
            info["replicas"]
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct Deploy {
    /// The deployment spec (YAML) to apply; relative env_file paths are
    /// resolved against its directory here, before it is sent.
    #[arg(value_name = "FILE")]
    file: std::path::PathBuf,
    /// Print the agent's report (what changed) as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// `arbor deploy FILE`: validates here, then PUT /v1/deployment.
pub async fn deploy(url: &AgentUrl, a: Deploy) -> Outcome {
    let deployment = match super::agent::load(&a.file) {
        Ok(d) => d,
        Err(errors) => {
            for e in errors {
                eprintln!("arbor: {e}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let yaml = deployment
        .to_yaml()
        .map_err(|e| Fail::usage(format!("failed to encode the spec: {e}")))?;
    let c = a.conn.client(url)?;
    let report: arbor::node::DeployReport = c
        .send_raw(
            hyper::Method::PUT,
            "/v1/deployment",
            Some(yaml.into_bytes()),
            SERVICE_OP_TIMEOUT,
        )
        .await?;
    if a.json {
        print_json(&report);
    } else {
        println!("{}", report.summary());
    }
    Ok(ExitCode::SUCCESS)
}

/// `arbor services`.
pub async fn services(url: &AgentUrl, a: Services) -> Outcome {
    if let Some(action) = a.action {
        return service_action(url, action).await;
    }
    let c = a.conn.client(url)?;
    if a.json {
        print_json(&c.get_value("/v1/services").await?);
        return Ok(ExitCode::SUCCESS);
    }
    let services: Vec<ServiceInfo> = c.get("/v1/services").await?;
    if services.is_empty() {
        eprintln!("arbor: no services");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|s| {
            let detail = match (&s.next_restart, &s.reason) {
                (Some(at), _) => {
                    let wait = (*at - chrono::Utc::now()).to_std().unwrap_or_default();
                    format!(
                        "next restart in {}",
                        humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
                    )
                }
                (None, Some(reason)) if s.status != "running" => reason.clone(),
                _ => String::new(),
            };
            vec![
                s.name.clone(),
                s.status.clone(),
                format!("{}/{}", s.running, s.replicas),
                format!("{}/{}", s.ready, s.replicas),
                s.restarts.to_string(),
                detail,
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["NAME", "STATUS", "RUNNING", "READY", "RESTARTS", "DETAIL"],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct Jobs {
    #[command(subcommand)]
    action: Option<JobsAction>,
    /// Print the jobs as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Subcommand)]
enum JobsAction {
    /// Start an execution of a registered job now; prints its id.
    Trigger(Trigger),
}

#[derive(Args)]
struct Trigger {
    /// The job's name.
    #[arg(value_name = "NAME")]
    name: String,
    /// Print the API's answer as JSON ({"execution_id", "job"}).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// `arbor jobs`, `arbor jobs trigger NAME`.
pub async fn jobs(url: &AgentUrl, a: Jobs) -> Outcome {
    if let Some(JobsAction::Trigger(t)) = a.action {
        let c = t.conn.client(url)?;
        let answer: TriggerResponse = c
            .post::<(), _>(&format!("/v1/jobs/{}/trigger", encode(&t.name)), None)
            .await?;
        if t.json {
            print_json(&answer);
        } else {
            println!("{}", answer.execution_id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let c = a.conn.client(url)?;
    if a.json {
        print_json(&c.get_value("/v1/jobs").await?);
        return Ok(ExitCode::SUCCESS);
    }
    let jobs: Vec<JobInfo> = c.get("/v1/jobs").await?;
    if jobs.is_empty() {
        eprintln!("arbor: no jobs");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            let schedule = match (&j.schedule, j.suspended) {
                (Some(s), true) => format!("{s} (suspended)"),
                (Some(s), false) => s.clone(),
                (None, _) => "-".into(),
            };
            let (latest, latest_id) = match &j.latest {
                Some(l) => {
                    let shown = match l.state.exit_code() {
                        Some(c) => format!("{} ({c})", l.state.name()),
                        None => l.state.name().to_owned(),
                    };
                    (shown, l.execution_id.to_string())
                }
                None => ("-".into(), "-".into()),
            };
            let command = match &j.image {
                Some(image) => format!("image {image}"),
                None => argv(&j.command),
            };
            vec![
                j.name.clone(),
                schedule,
                j.next_run.map_or_else(|| "-".into(), time),
                latest,
                latest_id,
                cut(&command, 40),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "NAME",
                "SCHEDULE",
                "NEXT RUN",
                "LATEST",
                "LATEST ID",
                "COMMAND"
            ],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct Events {
    /// Only these kinds, comma-separated (child_restarted,
    /// crash_loop_back_off, execution_started, execution_finished, ...).
    #[arg(long, value_name = "KINDS")]
    kind: Option<String>,
    /// Print each event as one JSON line, as the API sends it.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// `arbor events`: follows the event stream until the agent ends it.
pub async fn events(url: &AgentUrl, a: Events) -> Outcome {
    let c = a.conn.client(url)?;
    let path = match &a.kind {
        Some(k) => format!("/v1/events?kind={}", encode(k)),
        None => "/v1/events".into(),
    };
    let mut body = c.stream(&path).await?;
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Fail::failed(format!("the event stream broke: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend(data.iter().filter(|&&b| b != b'\r'));
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let message: Vec<u8> = buf.drain(..end + 2).collect();
            show_event(&String::from_utf8_lossy(&message), a.json);
        }
    }
    eprintln!("arbor: the agent at {url} ended the event stream");
    Ok(ExitCode::SUCCESS)
}

/// One SSE message: `event:` and `data:` lines; comments are skipped.
fn show_event(message: &str, json: bool) {
    let mut kind = "";
    let mut data = Vec::new();
    for line in message.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            kind = v.trim_start();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    if data.is_empty() {
        return;
    }
    let data = data.join("\n");
    if json {
        println!("{data}");
        return;
    }
    let now = chrono::Local::now().format("%H:%M:%S%.3f");
    match serde_json::from_str::<Event>(&data) {
        Ok(e) => println!("{now}  {:<20}  {}", e.kind(), event_line(&e)),
        Err(_) => println!("{now}  {kind:<20}  {data}"),
    }
}

/// An event in words; a child named with its supervisor.
fn event_line(e: &Event) -> String {
    let child = |supervisor: &str, child: &str| format!("{supervisor}/{child}");
    match e {
        Event::ChildStarted {
            supervisor,
            child: c,
            ..
        } => format!("{}: started", child(supervisor, c)),
        Event::ChildExited {
            supervisor,
            child: c,
            exit,
            ..
        } => format!("{}: exited ({exit})", child(supervisor, c)),
        Event::ChildStopped {
            supervisor,
            child: c,
            reason,
            ..
        } => format!("{}: stopped ({reason})", child(supervisor, c)),
        Event::ChildStartFailed {
            supervisor,
            child: c,
            error,
            ..
        } => format!("{}: failed to start: {error}", child(supervisor, c)),
        other => crate::describe(other).unwrap_or_else(|| other.kind().to_owned()),
    }
}
