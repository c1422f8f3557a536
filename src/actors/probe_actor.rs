//! One health probe of one replica: a timer loop that runs the check
//! (`exec`, `http` or `tcp`), counts passes and failures in a row, and tells
//! its container actor when the probe's verdict changes.
//!
//! The probe actor is a linked child of its container actor, so it never
//! outlives the replica and never holds its supervisor: a slow check (up to
//! `timeout`) only delays this actor's next check. The verdict starts as
//! passing for liveness (a replica is alive until proven otherwise) and as
//! unknown for readiness and startup; a report is sent only on a change.
//!
//! On failure, hook by hook:
//! - `pre_start`: cannot fail; `post_start` schedules the first check after
//!   `initial_delay`.
//! - `handle`: a check that errs (refused, timed out, a runtime error) is a
//!   failed check, never a failure of the actor. A panic fails the actor;
//!   its container actor logs it, and the replica runs on unprobed.
//! - `post_stop`: nothing to release (an `exec` check in flight is killed
//!   when its future is dropped).

use std::{net::IpAddr, sync::Arc, time::Duration};

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::net::TcpStream;

use crate::{
    runtime::{ContainerId, Runtime},
    spec::{ProbeCheck, ProbeKind, ProbeSpec},
};

/// A message to a probe actor.
pub enum ProbeMsg {
    /// Run one check now (sent by the actor's own timer).
    Check,
}

// Local only: never sent to another node (the `cluster` feature of
// ractor asks every message type to say so).
impl ractor::Message for ProbeMsg {}

/// What a probe reports to its owner when its verdict changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// Which probe.
    pub kind: ProbeKind,
    /// The new verdict.
    pub passed: bool,
    /// The last check's output or error.
    pub output: String,
}

/// What a probe actor is spawned with.
pub struct ProbeArgs {
    /// Which probe.
    pub kind: ProbeKind,
    /// What it checks and how often.
    pub spec: ProbeSpec,
    /// The runtime that runs the container (for `exec`).
    pub runtime: Arc<dyn Runtime>,
    /// The container.
    pub container: ContainerId,
    /// Where `http` and `tcp` connect when the probe names no host.
    pub default_host: IpAddr,
    /// Where verdicts go.
    pub report: Box<dyn Fn(ProbeReport) + Send + Sync>,
}

/// The probe actor.
pub struct ProbeActor;

/// The probe actor's state.
pub struct ProbeState {
    args: ProbeArgs,
    counter: ProbeCounter,
}

impl Actor for ProbeActor {
    type Msg = ProbeMsg;
    type State = ProbeState;
    type Arguments = ProbeArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ProbeMsg>,
        args: ProbeArgs,
    ) -> Result<ProbeState, ActorProcessingErr> {
        Ok(ProbeState {
            counter: ProbeCounter::new(args.kind),
            args,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<ProbeMsg>,
        state: &mut ProbeState,
    ) -> Result<(), ActorProcessingErr> {
        schedule(&myself, state.args.spec.initial_delay);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ProbeMsg>,
        ProbeMsg::Check: ProbeMsg,
        state: &mut ProbeState,
    ) -> Result<(), ActorProcessingErr> {
        let result = run_check(&state.args).await;
        state.record(result);
        schedule(&myself, state.args.spec.period);
        Ok(())
    }
}

impl ProbeState {
    /// Counts one check and reports a change of verdict.
    fn record(&mut self, result: Result<String, String>) {
        if let Some(passed) = self.counter.record(result.is_ok(), &self.args.spec) {
            let output = match result {
                Ok(o) | Err(o) => o,
            };
            (self.args.report)(ProbeReport {
                kind: self.args.kind,
                passed,
                output,
            });
        }
    }
}

/// A probe's verdict from its checks, Kubernetes' way: `failure_threshold`
/// failures in a row make it fail, `success_threshold` passes in a row make
/// it pass. Pure: no actor, no clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeCounter {
    passes: u32,
    failures: u32,
    verdict: Option<bool>,
}

impl ProbeCounter {
    /// A counter for a `kind` probe: liveness starts passing (alive until
    /// proven otherwise), readiness and startup with no verdict.
    pub fn new(kind: ProbeKind) -> Self {
        Self {
            passes: 0,
            failures: 0,
            verdict: (kind == ProbeKind::Liveness).then_some(true),
        }
    }

    /// The verdict so far (`None`: not decided yet).
    pub fn verdict(&self) -> Option<bool> {
        self.verdict
    }

    /// Counts one check; the new verdict when it changed.
    pub fn record(&mut self, passed: bool, spec: &ProbeSpec) -> Option<bool> {
        let now = if passed {
            self.passes = self.passes.saturating_add(1);
            self.failures = 0;
            if self.passes < spec.success_threshold {
                return None;
            }
            true
        } else {
            self.failures = self.failures.saturating_add(1);
            self.passes = 0;
            if self.failures < spec.failure_threshold {
                return None;
            }
            false
        };
        if self.verdict == Some(now) {
            return None;
        }
        self.verdict = Some(now);
        Some(now)
    }
}

fn schedule(myself: &ActorRef<ProbeMsg>, after: Duration) {
    if after.is_zero() {
        let _ = myself.cast(ProbeMsg::Check);
    } else {
        myself.send_after(after, || ProbeMsg::Check);
    }
}

/// One check: `Ok` with what it printed (or the status it got), `Err`
/// with why it failed.
async fn run_check(args: &ProbeArgs) -> Result<String, String> {
    let spec = &args.spec;
    let Some(check) = spec.check() else {
        return Err("the probe names no check".into());
    };
    match check {
        ProbeCheck::Exec(argv) => {
            let out = args
                .runtime
                .exec(&args.container, argv, spec.timeout)
                .await
                .map_err(|e| match e.cause {
                    crate::runtime::Cause::TimedOut(_) => {
                        format!("{:?} {}", argv.join(" "), e.cause)
                    }
                    _ => e.to_string(),
                })?;
            if out.status.success() {
                Ok(out.output)
            } else if out.output.is_empty() {
                Err(format!("{}", out.status))
            } else {
                Err(format!("{}: {}", out.status, out.output))
            }
        }
        ProbeCheck::Tcp(tcp) => {
            let host = tcp.host.as_deref();
            let addr = address(host, args.default_host, tcp.port).await?;
            match tokio::time::timeout(spec.timeout, TcpStream::connect(addr)).await {
                Ok(Ok(_)) => Ok(format!("connected to {addr}")),
                Ok(Err(e)) => Err(format!("failed to connect to {addr}: {e}")),
                Err(_) => Err(format!(
                    "failed to connect to {addr}: timed out after {}",
                    crate::spec::fmt_duration(spec.timeout)
                )),
            }
        }
        ProbeCheck::Http(http) => {
            let addr = address(http.host.as_deref(), args.default_host, http.port).await?;
            let host = http.host.clone().unwrap_or_else(|| addr.ip().to_string());
            let url = format!("http://{host}:{}{}", http.port, http.path);
            match tokio::time::timeout(spec.timeout, get(addr, &host, &http.path)).await {
                Ok(Ok(status)) if (200..400).contains(&status) => {
                    Ok(format!("GET {url}: HTTP {status}"))
                }
                Ok(Ok(status)) => Err(format!("GET {url}: HTTP {status}")),
                Ok(Err(e)) => Err(format!("GET {url}: {e}")),
                Err(_) => Err(format!(
                    "GET {url}: timed out after {}",
                    crate::spec::fmt_duration(spec.timeout)
                )),
            }
        }
    }
}

/// Where to connect: the probe's host (an address, or a name resolved
/// now), else the replica's default.
async fn address(
    host: Option<&str>,
    default: IpAddr,
    port: u16,
) -> Result<std::net::SocketAddr, String> {
    match host {
        None => Ok((default, port).into()),
        Some(h) => match h.parse::<IpAddr>() {
            Ok(ip) => Ok((ip, port).into()),
            Err(_) => tokio::net::lookup_host((h, port))
                .await
                .map_err(|e| format!("failed to resolve {h:?}: {e}"))?
                .next()
                .ok_or_else(|| format!("failed to resolve {h:?}: no address")),
        },
    }
}

/// `GET path` on `addr` (HTTP/1.1, `Host: host`): the status code.
async fn get(addr: std::net::SocketAddr, host: &str, path: &str) -> Result<u16, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("failed to connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "arbor-probe")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let result = sender.send_request(request).await;
    conn.abort();
    Ok(result.map_err(|e| e.to_string())?.status().as_u16())
}
