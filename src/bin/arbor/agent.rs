//! `arbor agent` and `arbor validate`: the node agent as a thin shell over
//! [`Node`], and the spec checker.
//!
//! The agent loads and validates the spec, starts the node (services in
//! dependency order, jobs and schedules registered), and serves the HTTP
//! API. SIGTERM or SIGINT stops it: the API refuses new work, running
//! executions get the shutdown deadline to finish, services stop once what
//! depends on them has stopped (independent ones together), each replica
//! with its grace, and the agent exits 0. A second SIGTERM/SIGINT forces
//! (any time after the first, but one delivered within 100 ms of it, as
//! `timeout` does to a process and its group, is the same stop): every
//! process is killed at once and the agent exits 128 + that signal (143,
//! 130). SIGHUP reloads the spec and
//! applies the difference; an invalid or empty spec is logged and the
//! running deployment is kept. If the root supervisor ever gives up, the
//! agent says why and exits 70.
//!
//! Live restore: each service replica (process or OCI container) runs
//! under a small keeper process (`arbor-keeper`), so it survives the agent
//! being killed; SIGUSR2 makes
//! the agent exit 0 leaving its services running (for an upgrade: running
//! job executions get the shutdown timeout, then are cancelled). The next
//! agent on the same state dir adopts every replica whose spec is
//! unchanged (same pids, output captured again, restart state continued)
//! and stops the rest. `--no-live-restore` turns it off.
//!
//! Fault injection for tests: with `ARBOR_TEST_PANIC=<part>` in its
//! environment (`executor`, `overlay`, `cron`, `jobs`, `deployment`,
//! `cluster`, or the root `supervisor`), each SIGUSR2 makes that part of the node panic instead;
//! `supervisor-stall` makes the root supervisor unresponsive for 30 s.
//!
//! Under systemd (`Type=notify`, see `packaging/arbor.service`) the agent
//! sends `READY=1` once the spec is deployed, `WATCHDOG=1` while its root
//! supervisor answers, and `STOPPING=1` when it stops (`systemd.rs`).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use super::listen::{self, ListenError};
use arbor::{
    Deployment, Node, NodeConfig, ProcessRuntime,
    api::ApiConfig,
    runtime::{OciRuntime, RuntimeKind, RuntimeRouter, process::Keepers},
};
use clap::{Parser, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
pub struct Agent {
    /// The deployment spec (YAML).
    #[arg(long)]
    spec: PathBuf,
    /// Directory for execution records and logs (default: $ARBOR_STATE_DIR,
    /// else $HOME/.local/state/arbor).
    #[arg(long, env = "ARBOR_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// The API's Unix socket (default <state-dir>/arbor.sock; mode 0600:
    /// only this user may connect). Printed on stdout as `listening on
    /// unix:PATH`.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Let this group use the socket too (mode 0660).
    #[arg(long, value_name = "NAME")]
    socket_group: Option<String>,
    /// Also serve the API on TCP at ADDR (opt-in; port 0 picks a free port,
    /// printed as `listening on ADDR`). Every request on it but GET
    /// /v1/health and /metrics needs the bearer token.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// File holding the bearer token (at least 16 bytes) for --listen;
    /// without it the agent generates <state-dir>/api.token (0600).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Serve --listen over TLS with this PEM certificate chain (with
    /// --tls-key). Needed for a non-loopback --listen, unless
    /// --insecure-http.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Allow a non-loopback --listen without TLS (requests and the token
    /// travel in clear text). A warning is printed at every start.
    #[arg(long)]
    insecure_http: bool,
    /// How long running executions get to finish on shutdown before they
    /// are cancelled.
    #[arg(long, default_value = "30s", value_parser = crate::common::parse_duration)]
    shutdown_timeout: Duration,
    /// Service processes and containers end with the agent. Default: each
    /// replica (process or OCI container) runs under a small keeper
    /// process, so it keeps running when the agent is killed or leaves on
    /// SIGUSR2, and the next agent on this state dir adopts it.
    #[arg(long)]
    no_live_restore: bool,
    /// With live restore, how long a replica runs on without an agent
    /// before its keeper stops it (SIGTERM, then SIGKILL 10 s later); the
    /// next agent then reports that exit and restarts it. Default: never.
    #[arg(long, value_parser = crate::common::parse_duration)]
    orphan_timeout: Option<Duration>,
    /// The default runtime of services and jobs: process (host commands) or
    /// oci (containers through runc, from the images of <state-dir>/images;
    /// needs root and runc). A service's or job's `runtime:` overrides it;
    /// with the process default, specs that name an image still run on the
    /// OCI runtime when it is available.
    #[arg(long, value_enum, default_value_t = RuntimeArg::Process)]
    runtime: RuntimeArg,
    /// Log format on stderr (`RUST_LOG` sets the level; default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Job networking: `bridge` (Linux bridges and network namespaces; needs
    /// root), `none`, or `auto` (bridge when root, else none).
    #[arg(long, default_value = "auto")]
    network: arbor::overlay::NetworkMode,
    /// Where segment subnets (/24 each) come from.
    #[arg(long, default_value = "10.213.0.0/16")]
    network_pool: arbor::overlay::Ipv4Net,
    /// Join a cluster: accept peer agents on ADDR (a fixed port). Needs
    /// --cluster-cookie-file. Printed as `cluster listening on ADDR as
    /// NAME`.
    #[arg(
        long,
        value_name = "ADDR",
        requires = "cluster_cookie_file",
        help_heading = "Cluster"
    )]
    cluster_listen: Option<SocketAddr>,
    /// Peer agents to dial (HOST:PORT, comma-separated or repeated); each
    /// is dialed again, with a jittered back-off, whenever its connection
    /// is lost. Peers of peers are connected to as well.
    #[arg(
        long,
        value_name = "HOST:PORT",
        value_delimiter = ',',
        requires = "cluster_listen",
        help_heading = "Cluster"
    )]
    join: Vec<String>,
    /// The cluster's shared secret: the first line of FILE, which only its
    /// owner may read (mode 0600 or 0400). A peer with another cookie is
    /// refused.
    #[arg(
        long,
        value_name = "FILE",
        requires = "cluster_listen",
        help_heading = "Cluster"
    )]
    cluster_cookie_file: Option<PathBuf>,
    /// This node's name in the cluster (default: the host name); unique in
    /// the cluster. Letters, digits, '.', '_', '-'.
    #[arg(
        long,
        value_name = "NAME",
        requires = "cluster_listen",
        help_heading = "Cluster"
    )]
    node_name: Option<String>,
    /// A label of this node, KEY=VALUE (repeatable), matched by services'
    /// `placement.constraints`.
    #[arg(
        long,
        value_name = "KEY=VALUE",
        requires = "cluster_listen",
        help_heading = "Cluster"
    )]
    node_label: Vec<String>,
    /// Talk to peers over mutual TLS: this node's PEM certificate chain
    /// (with --cluster-tls-key and --cluster-ca). The certificate names the
    /// address peers dial (an IP SAN or a DNS name). Every node of the
    /// cluster needs TLS once one has it.
    #[arg(long, value_name = "FILE", requires_all = ["cluster_listen", "cluster_tls_key", "cluster_ca"], help_heading = "Cluster")]
    cluster_tls_cert: Option<PathBuf>,
    /// The PEM private key of --cluster-tls-cert.
    #[arg(
        long,
        value_name = "FILE",
        requires = "cluster_tls_cert",
        help_heading = "Cluster"
    )]
    cluster_tls_key: Option<PathBuf>,
    /// The PEM certificate(s) of the CA that signs every node's
    /// certificate: peers must present one it signed.
    #[arg(
        long,
        value_name = "FILE",
        requires = "cluster_tls_cert",
        help_heading = "Cluster"
    )]
    cluster_ca: Option<PathBuf>,
    /// The HOST:PORT peers dial to reach this node (default: the
    /// --cluster-listen address; needed when that is 0.0.0.0).
    #[arg(
        long,
        value_name = "HOST:PORT",
        requires = "cluster_listen",
        help_heading = "Cluster"
    )]
    cluster_advertise: Option<String>,
    /// How often each peer is pinged (each ping's timeout too).
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = crate::common::parse_duration, help_heading = "Cluster")]
    heartbeat_interval: Duration,
    /// A peer silent this long is `suspect`.
    #[arg(long, default_value = "3s", value_name = "DURATION", value_parser = crate::common::parse_duration, help_heading = "Cluster")]
    suspect_after: Duration,
    /// A suspect peer silent this much longer is `down`.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = crate::common::parse_duration, help_heading = "Cluster")]
    down_grace: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeArg {
    Process,
    Oci,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Agent {
    pub fn log_format(&self) -> LogFormat {
        self.log_format
    }
}

#[derive(Parser)]
pub struct Validate {
    /// The deployment spec (YAML).
    file: PathBuf,
    /// The agent's state dir, whose image store is checked for the images
    /// the spec names (default: $ARBOR_STATE_DIR, else
    /// ~/.local/state/arbor).
    #[arg(long, env = "ARBOR_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

/// `arbor validate FILE`: every error with its path (exit 1), or a summary.
pub fn validate(args: Validate) -> ExitCode {
    match load(&args.file) {
        Ok(d) => {
            println!("{}: valid", args.file.display());
            println!("{}", d.summary());
            for w in d.warnings() {
                eprintln!("warning: {}: {w}", args.file.display());
            }
            let state_dir = args.state_dir.clone().or_else(default_state_dir);
            for w in image_warnings(&d, state_dir.as_deref()) {
                eprintln!("warning: {}: {w}", args.file.display());
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The images the spec names that the state dir's image store lacks (the
/// store is only read: nothing is created).
fn image_warnings(d: &Deployment, state_dir: Option<&Path>) -> Vec<String> {
    let wanted = d
        .services
        .iter()
        .filter_map(|(n, s)| Some((format!("services.{n}.image"), s.image.clone()?)))
        .chain(
            d.jobs
                .iter()
                .filter_map(|(n, j)| Some((format!("jobs.{n}.image"), j.image.clone()?))),
        );
    let Some(dir) = state_dir.map(|d| d.join("images")) else {
        return Vec::new();
    };
    let store = dir
        .join("images")
        .is_dir()
        .then(|| arbor::image::ImageStore::open(&dir).ok())
        .flatten();
    wanted
        .filter_map(|(field, image)| {
            let missing = match &store {
                Some(s) => matches!(s.get(&image), Err(arbor::image::ImageError::NotFound(_))),
                None => true,
            };
            missing.then(|| {
                format!(
                    "{field}: {image:?} is not in the image store {} (import it: arbor image import DIR --name {image})",
                    dir.display()
                )
            })
        })
        .collect()
}

/// Loads and validates a spec; each error is one line naming the file.
pub fn load(path: &Path) -> Result<Deployment, Vec<String>> {
    let d = Deployment::load(path).map_err(|errs| {
        errs.iter()
            .map(|e| format!("{}: {e}", path.display()))
            .collect::<Vec<_>>()
    })?;
    d.validate().map_err(|errs| {
        errs.iter()
            .map(|e| format!("{}: {e}", path.display()))
            .collect::<Vec<_>>()
    })?;
    Ok(d)
}

/// The cluster settings of `arbor agent`, checked.
fn cluster_config(
    args: &Agent,
    listen: SocketAddr,
) -> Result<arbor::cluster::ClusterConfig, arbor::cluster::ClusterError> {
    // clap requires the cookie file with --cluster-listen.
    let cookie_file = args.cluster_cookie_file.as_deref().unwrap_or(Path::new(""));
    let cookie = arbor::cluster::read_cookie(cookie_file)?;
    let name = match &args.node_name {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .map(|h| h.split('.').next().unwrap_or(&h).to_string())
            .unwrap_or_else(|| "node".into()),
    };
    let mut c = arbor::cluster::ClusterConfig::new(listen, &name, cookie, args.join.clone())?
        .labels(args.node_label.iter().map(String::as_str))?;
    if let (Some(cert), Some(key), Some(ca)) = (
        &args.cluster_tls_cert,
        &args.cluster_tls_key,
        &args.cluster_ca,
    ) {
        c.tls = Some(arbor::cluster::tls::ClusterTls::load(cert, key, ca)?);
    }
    if let Some(a) = &args.cluster_advertise {
        c = c.advertise(a)?;
    } else if listen.ip().is_unspecified() {
        return Err(arbor::cluster::ClusterError::Invalid {
            field: "--cluster-listen",
            value: listen.to_string(),
            reason: "listens on every address: say which one peers dial with --cluster-advertise HOST:PORT".into(),
        });
    }
    c.timing(arbor::cluster::Timing {
        interval: args.heartbeat_interval,
        suspect_after: args.suspect_after,
        down_grace: args.down_grace,
    })
}

pub fn default_state_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/arbor"))
}

/// `arbor agent`.
pub async fn agent(args: Agent) -> ExitCode {
    // Handlers first: a SIGTERM during start-up must stop the node in
    // order, not kill the agent and orphan what it started.
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        eprintln!("arbor: failed to install signal handlers");
        return ExitCode::FAILURE;
    };
    // Room for many replicas (about four descriptors each).
    match arbor::runtime::process::limits::raise_nofile() {
        Ok(r) if r.to > r.from => tracing::info!(
            from = r.from,
            to = r.to,
            "raised the open files limit: room for about {} replicas",
            r.to / 4
        ),
        Ok(r) => tracing::info!(
            limit = r.to,
            "open files limit: room for about {} replicas",
            r.to / 4
        ),
        Err(e) => tracing::warn!(error = %e, "failed to raise the open files limit"),
    }
    let fault = std::env::var("ARBOR_TEST_PANIC").ok();
    let mut usr2 = signal(SignalKind::user_defined2()).ok();
    let deployment = match load(&args.spec) {
        Ok(d) => d,
        Err(errors) => {
            for e in errors {
                eprintln!("arbor: {e}");
            }
            return ExitCode::from(2);
        }
    };
    for w in deployment.warnings() {
        eprintln!("arbor: warning: {}: {w}", args.spec.display());
    }
    let Some(state_dir) = args.state_dir.clone().or_else(default_state_dir) else {
        eprintln!("arbor: no --state-dir given and HOME is not set");
        return ExitCode::from(2);
    };
    let (socket_path, unix, tcp) = match listen(&args, &state_dir).await {
        Ok(l) => l,
        Err(ListenError::Usage(m)) => {
            eprintln!("arbor: {m}");
            return ExitCode::from(2);
        }
        Err(ListenError::Failed(m)) => {
            eprintln!("arbor: {m}");
            return ExitCode::FAILURE;
        }
    };
    let mut process = ProcessRuntime::builder();
    if let Some(k) = keepers(&args, state_dir.join("keepers")) {
        process = process.keepers(k);
    }
    let process = match process.build() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("arbor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut oci = OciRuntime::builder().state_dir(&state_dir);
    if let Some(k) = keepers(&args, state_dir.join("oci").join("keepers")) {
        oci = oci.keepers(k);
    }
    let oci = match oci.build().await {
        Ok(oci) => Ok(oci),
        Err(e) if args.runtime == RuntimeArg::Oci => {
            eprintln!("arbor: --runtime oci: {e}");
            eprintln!("arbor: {}", arbor::runtime::oci::crun_status());
            return ExitCode::from(2);
        }
        Err(e) => Err(e.to_string()),
    };
    if args.runtime == RuntimeArg::Oci {
        tracing::info!("{}", arbor::runtime::oci::crun_status());
    }
    let default = match args.runtime {
        RuntimeArg::Process => RuntimeKind::Process,
        RuntimeArg::Oci => RuntimeKind::Oci,
    };
    let router = RuntimeRouter::new(
        default,
        Some(Arc::new(process.clone())),
        oci.clone().map(|o| Arc::new(o) as Arc<dyn arbor::Runtime>),
    );
    let oci = oci.ok();
    let mut config = NodeConfig::new(Arc::new(router))
        .state_dir(&state_dir)
        .network(args.network);
    if let Some(listen) = args.cluster_listen {
        match cluster_config(&args, listen) {
            Ok(c) => config = config.cluster(c),
            Err(e) => {
                eprintln!("arbor: {e}");
                return ExitCode::from(2);
            }
        }
        // The usual mistake (a port in use) is a start-up error, not a
        // part of the tree failing over and over.
        if let Err(e) = std::net::TcpListener::bind(listen) {
            eprintln!("arbor: failed to listen for cluster peers on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    }
    config.overlay_config.pool = args.network_pool;
    let config = config
        .flags(deployment.supervisor.clone())
        .name(deployment.name.clone());
    let node = match Node::start(config).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("arbor: failed to start the node: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = node.deploy(&deployment).await {
        eprintln!("arbor: failed to deploy {}: {e}", args.spec.display());
        node.shutdown(args.shutdown_timeout).await;
        process.shutdown(Duration::ZERO).await;
        if let Some(oci) = &oci {
            oci.shutdown(Duration::ZERO).await;
        }
        return ExitCode::FAILURE;
    }
    // What a previous agent left and no replica adopted is stopped.
    {
        let (process, oci) = (process.clone(), oci.clone());
        tokio::spawn(async move {
            let mut n = process.release_unadopted().await;
            if let Some(oci) = &oci {
                n += oci.release_unadopted().await;
            }
            if n > 0 {
                tracing::info!(
                    stopped = n,
                    "stopped what the previous agent left running that no replica claims"
                );
            }
        });
    }
    let addr = tcp.as_ref().and_then(|(l, _, _)| l.local_addr().ok());
    // Where `arbor ui` finds the TCP listener (the page needs it: a
    // browser cannot open the Unix socket).
    let url_file = state_dir.join(listen::URL_FILE);
    match tcp.as_ref().zip(addr) {
        Some(((_, _, tls), addr)) => {
            if let Err(e) = listen::write_url(&url_file, addr, tls.is_some()) {
                tracing::warn!(file = %url_file.display(), error = %e, "failed to write the API's URL");
            }
        }
        None => {
            let _ = std::fs::remove_file(&url_file);
        }
    }
    // Written, not printed: a reader that took its line and went away
    // must not bring the agent down.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if let Some(addr) = addr {
            let _ = writeln!(out, "listening on {addr}");
        }
        let _ = writeln!(out, "listening on unix:{}", socket_path.display());
        if let Some(view) = node.cluster() {
            let _ = writeln!(out, "cluster listening on {} as {}", view.addr, view.node);
        }
        let _ = out.flush();
    }
    tracing::info!(tcp = ?addr, socket = %socket_path.display(), spec = %args.spec.display(), state_dir = %state_dir.display(), "{}", deployment.summary());
    super::systemd::ready(&deployment.summary());
    let watchdog = super::systemd::watchdog(&node);

    let api_config = ApiConfig::default().state_dir(&state_dir);
    let (stop_api, api_stopped) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut servers = vec![tokio::spawn(arbor::api::serve_unix(
        node.clone(),
        unix,
        api_config.clone(),
        stopped(api_stopped.clone()),
    ))];
    match tcp {
        Some((listener, token, Some(tls))) => {
            servers.push(tokio::spawn(arbor::api::serve_tls(
                node.clone(),
                listener,
                tls,
                api_config.token(token),
                stopped(api_stopped),
            )));
        }
        Some((listener, token, None)) => {
            servers.push(tokio::spawn(arbor::api::serve(
                node.clone(),
                listener,
                api_config.token(token),
                stopped(api_stopped),
            )));
        }
        None => {}
    }
    let stop_servers = || async {
        let _ = stop_api.send(true);
        for server in servers {
            let _ = server.await;
        }
        let _ = std::fs::remove_file(&socket_path);
        let _ = std::fs::remove_file(&url_file);
    };

    // The root never gives up because of a service (each one fails alone);
    // if it ever does, the node is no use any more: say why and exit
    // non-zero at once, so systemd or an operator restarts it.
    let root = node.root().clone();
    let gave_up = gave_up_reason(&node);
    let root_ended = root.wait();
    tokio::pin!(root_ended);
    loop {
        tokio::select! {
            _ = next_signal(&mut usr2) => {
                if let Some(part) = fault.as_deref() {
                    let hit = node.inject_panic(part);
                    tracing::warn!(part, hit, "ARBOR_TEST_PANIC: injected a panic");
                    continue;
                }
                tracing::info!("SIGUSR2: leaving services running for the next agent");
                super::systemd::stopping();
                node.detach(args.shutdown_timeout).await;
                stop_servers().await;
                if let Some(oci) = &oci {
                    oci.leave().await;
                }
                tracing::info!("left: services keep running");
                // Exit now: dropping the runtimes would stop the services.
                std::process::exit(0);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&node, &args.spec).await,
            _ = &mut root_ended => {
                let reason = gave_up.borrow().clone()
                    .unwrap_or_else(|| "its root supervisor stopped".to_owned());
                tracing::error!(%reason, "the node's root supervisor gave up: exiting");
                eprintln!("arbor: the node's root supervisor gave up: {reason}");
                stop_servers().await;
                process.shutdown(Duration::ZERO).await;
                if let Some(oci) = &oci {
                    oci.shutdown(Duration::ZERO).await;
                }
                return ExitCode::from(70);
            }
        }
    }

    tracing::info!("stopping: new work is refused");
    super::systemd::stopping();
    if let Some(w) = &watchdog {
        w.abort();
    }
    let stopping = {
        let node = node.clone();
        let deadline = args.shutdown_timeout;
        tokio::spawn(async move { node.shutdown(deadline).await })
    };
    // A second signal forces, unless it is the same stop delivered twice
    // (`timeout` signals the process and then its group, at once): within
    // 100 ms of the first it is ignored.
    let first = tokio::time::Instant::now();
    tokio::pin!(stopping);
    loop {
        // The exit status of a forced stop is 128 + the signal, as a
        // process killed by it would have.
        let signal = tokio::select! {
            _ = &mut stopping => break,
            _ = term.recv() => libc_signal::SIGTERM,
            _ = int.recv() => libc_signal::SIGINT,
        };
        if first.elapsed() >= DUPLICATE_WINDOW {
            return force(&process, oci.as_ref(), signal).await;
        }
    }
    stop_servers().await;
    process.shutdown(Duration::ZERO).await;
    if let Some(oci) = &oci {
        oci.shutdown(Duration::ZERO).await;
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// The keepers of live restore with their files in `dir`, unless
/// `--no-live-restore` or the keeper program or a short enough path is
/// missing (then said in the log).
fn keepers(args: &Agent, dir: std::path::PathBuf) -> Option<Keepers> {
    if args.no_live_restore {
        return None;
    }
    match Keepers::beside_current_exe(dir) {
        Ok(k) if !k.fits() => {
            tracing::warn!(
                dir = %k.dir().display(),
                "live restore is off: the state dir's path is too long for the keepers' Unix sockets"
            );
            None
        }
        Ok(k) => Some(match args.orphan_timeout {
            Some(t) => k.orphan_timeout(t),
            None => k,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "live restore is off: the keeper program was not found");
            None
        }
    }
}

/// The TCP listener, its token, and its TLS configuration (`None`: clear).
type Tcp = (
    tokio::net::TcpListener,
    String,
    Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
);

/// The agent's listeners: its Unix socket (path and listener) and, with
/// `--listen`, the TCP listener with its token.
async fn listen(
    args: &Agent,
    state_dir: &Path,
) -> Result<(PathBuf, tokio::net::UnixListener, Option<Tcp>), ListenError> {
    listen::state_dir(state_dir)?;
    let tcp = match args.listen {
        Some(addr) => {
            let tls = match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) => {
                    Some(arbor::api::tls::server_config(cert, key).map_err(ListenError::Usage)?)
                }
                _ => None,
            };
            listen::check_listen(addr, tls.is_some() || args.insecure_http, tls.is_none())?;
            let token = listen::token(args.token_file.as_deref(), state_dir)?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| ListenError::Failed(format!("failed to listen on {addr}: {e}")))?;
            Some((listener, token, tls))
        }
        None => {
            if let Some(file) = &args.token_file {
                // Checked all the same: a bad file is a mistake to report.
                listen::token(Some(file), state_dir)?;
                eprintln!(
                    "arbor: warning: --token-file is for --listen; the Unix socket needs no token"
                );
            }
            None
        }
    };
    let path = args
        .socket
        .clone()
        .unwrap_or_else(|| listen::default_socket(state_dir));
    let unix = listen::socket(&path, args.socket_group.as_deref())?;
    Ok((path, unix, tcp))
}

/// A second stop signal sooner than this after the first is the same stop.
const DUPLICATE_WINDOW: Duration = Duration::from_millis(100);

/// Signal numbers for the forced exit status.
mod libc_signal {
    pub const SIGINT: u8 = 2;
    pub const SIGTERM: u8 = 15;
}

/// A second signal: kill everything now; exit 128 + that signal.
async fn force(process: &ProcessRuntime, oci: Option<&OciRuntime>, signal: u8) -> ExitCode {
    tracing::warn!("second signal: killing every process now");
    let mut killed = process.shutdown(Duration::ZERO).await;
    if let Some(oci) = oci {
        killed += oci.shutdown(Duration::ZERO).await;
    }
    eprintln!("arbor: forced stop ({killed} containers killed)");
    ExitCode::from(128 + signal)
}

/// The last escalation of the node's root supervisor, kept as it happens.
fn gave_up_reason(node: &Node) -> tokio::sync::watch::Receiver<Option<String>> {
    let (tx, rx) = tokio::sync::watch::channel(None);
    let root = node.root().name().to_owned();
    let mut events = node.events();
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if let arbor::Event::SupervisorEscalated { supervisor, reason } = e
                && supervisor == root
            {
                let _ = tx.send(Some(reason));
            }
        }
    });
    rx
}

/// SIGHUP: load the spec again and apply what changed.
async fn reload(node: &Node, spec: &Path) {
    match load(spec) {
        Ok(d) => match node.deploy(&d).await {
            Ok(report) => {
                for w in d.warnings() {
                    tracing::warn!("{}: {w}", spec.display());
                }
                tracing::info!("reloaded {}: {}", spec.display(), report.summary())
            }
            Err(e) => tracing::error!(error = %e, "failed to apply the reloaded spec"),
        },
        Err(errors) => {
            for e in errors {
                tracing::error!("reload refused: {e}");
            }
        }
    }
}

/// The next delivery of an optional signal (never, without a handler).
async fn next_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}
