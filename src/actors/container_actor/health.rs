//! A replica's health, as its container actor keeps it: the probe actors
//! (startup first, then liveness and readiness), the sd_notify socket of a
//! `notify: true` service (`READY=1`, `STATUS=`, `WATCHDOG=1`), and the
//! readiness told to the supervisor.
//!
//! Ready means: the startup probe passed (or there is none), the readiness
//! probe passes (or there is none), and, with `notify`, `READY=1` came.
//! A failing liveness or startup probe, a missed watchdog, or
//! `WATCHDOG=trigger` stops the container with its grace and fails the
//! actor: the supervisor restarts the replica by its policy.

use std::{net::IpAddr, path::PathBuf};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::{net::UnixDatagram, task::AbortHandle};

use super::{ContainerActorState, ContainerMsg, Msg};
use crate::{
    actors::{
        probe_actor::{ProbeActor, ProbeArgs, ProbeReport},
        supervisor_actor::{ChildExit, ExitReport, report_ready},
    },
    events::Event,
    runtime::ContainerSpec,
    spec::ProbeKind,
};

/// What the container actor knows of its replica's health.
#[derive(Default)]
pub(super) struct Health {
    /// The startup probe passed, or there is none.
    started_up: bool,
    /// The readiness probe's verdict (`None`: none yet).
    probe_ready: Option<bool>,
    /// `READY=1` came (with `notify`).
    notified: bool,
    /// What the supervisor was told last.
    told: Option<bool>,
    /// Bumped by each `WATCHDOG=1`: a check of an older one is stale.
    watchdog_gen: u64,
    /// The notify socket, while the replica has one.
    socket: Option<NotifySocket>,
}

/// A replica's own `NOTIFY_SOCKET`: a datagram socket in a private
/// directory, read by a task that hands each message to the actor.
struct NotifySocket {
    path: PathBuf,
    /// The socket file bound (device, inode): removed on drop only if the
    /// path still names it (a later replica of the same name may have
    /// bound the same stable path since).
    file: Option<(u64, u64)>,
    reader: AbortHandle,
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        self.reader.abort();
        let now = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if now.is_some() && now == self.file {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The longest path a Unix socket address holds.
const SOCKET_PATH_MAX: usize = 107;

/// Where replica `name`'s notify socket goes: in `stable` (the node's
/// `<state-dir>/notify`, so the next agent binds the same path and a
/// replica it adopts keeps notifying it) when that fits in a socket
/// address, else in a private directory of this agent with a random name.
fn socket_path(stable: Option<&std::path::Path>, name: &str) -> std::io::Result<PathBuf> {
    use sha2::Digest;
    use std::os::unix::fs::DirBuilderExt;
    if let Some(dir) = stable {
        let hash = sha2::Sha256::digest(name.as_bytes());
        let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let path = dir.join(format!("{hex}.sock"));
        if path.as_os_str().len() <= SOCKET_PATH_MAX {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            // What a killed agent left at this path.
            let _ = std::fs::remove_file(&path);
            return Ok(path);
        }
    }
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    Ok(socket_dir()?.join(format!("{}.sock", &uuid[..16])))
}

/// Where replicas' notify sockets live: a directory of this agent's own,
/// mode 0700 (only its user may notify).
fn socket_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!("arbor-notify-{}", std::process::id()));
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => Ok(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(dir),
        Err(e) => Err(e),
    }
}

impl ContainerActorState {
    /// Before the container is created: with `notify`, binds the replica's
    /// socket and puts it in the spec's environment.
    pub(super) fn prepare_notify(
        &mut self,
        myself: &ActorRef<ContainerMsg>,
        spec: &mut ContainerSpec,
    ) -> Result<(), String> {
        self.health = Health {
            started_up: self.probes.startup.is_none(),
            ..Health::default()
        };
        if !self.probes.notify {
            return Ok(());
        }
        let fail = |e: std::io::Error| format!("failed to create the notify socket: {e}");
        let path = socket_path(self.probes.notify_dir.as_deref(), &self.name).map_err(fail)?;
        let socket = UnixDatagram::bind(&path).map_err(fail)?;
        let file = {
            use std::os::unix::fs::MetadataExt;
            std::fs::symlink_metadata(&path)
                .ok()
                .map(|m| (m.dev(), m.ino()))
        };
        let me = myself.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf).await {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if me.cast(ContainerMsg(Msg::Notify(text))).is_err() {
                    break;
                }
            }
        });
        spec.env
            .insert("NOTIFY_SOCKET".into(), path.display().to_string());
        if let Some(w) = self.probes.watchdog {
            spec.env
                .insert("WATCHDOG_USEC".into(), w.as_micros().to_string());
        }
        self.health.socket = Some(NotifySocket {
            path,
            file,
            reader: reader.abort_handle(),
        });
        Ok(())
    }

    /// Once the container runs: its first probes, its watchdog, and
    /// readiness when nothing gates it.
    pub(super) async fn started(&mut self, myself: &ActorRef<ContainerMsg>) {
        let first = if self.probes.startup.is_some() {
            &[ProbeKind::Startup][..]
        } else {
            &[ProbeKind::Liveness, ProbeKind::Readiness][..]
        };
        self.spawn_probes(myself, first).await;
        self.arm_watchdog(myself);
        if self.probes.notify && self.health.notified {
            // Adopted: ready once nothing else gates it.
            self.update_ready(myself, None);
        }
    }

    /// Starts the probe actors of `kinds` that the replica has.
    async fn spawn_probes(&mut self, myself: &ActorRef<ContainerMsg>, kinds: &[ProbeKind]) {
        let Some(c) = &self.container else {
            return;
        };
        let specs: Vec<_> = kinds
            .iter()
            .filter_map(|kind| {
                let spec = match kind {
                    ProbeKind::Liveness => &self.probes.liveness,
                    ProbeKind::Readiness => &self.probes.readiness,
                    ProbeKind::Startup => &self.probes.startup,
                };
                spec.clone().map(|s| (*kind, s))
            })
            .collect();
        if specs.is_empty() {
            return;
        }
        let default_host = match self.runtime.address(&c.id).await {
            Ok(Some(ip)) => ip,
            _ => IpAddr::from([127, 0, 0, 1]),
        };
        let id = c.id.clone();
        for (kind, spec) in specs {
            let me = myself.clone();
            let args = ProbeArgs {
                kind,
                spec,
                runtime: self.runtime.clone(),
                container: id.clone(),
                default_host,
                report: Box::new(move |r| {
                    let _ = me.cast(ContainerMsg(Msg::Probe(r)));
                }),
            };
            match ProbeActor::spawn_linked(None, ProbeActor, args, myself.get_cell()).await {
                Ok((probe, _)) => self.probing.push((kind, probe)),
                Err(e) => {
                    tracing::warn!(container = %self.name, probe = %kind, error = %e, "failed to start a probe")
                }
            }
        }
    }

    /// A probe's verdict changed.
    pub(super) async fn probed(
        &mut self,
        myself: &ActorRef<ContainerMsg>,
        report: ProbeReport,
    ) -> Result<(), ActorProcessingErr> {
        match (report.kind, report.passed) {
            (ProbeKind::Startup, true) => {
                self.probing.retain(|(k, p)| {
                    if *k == ProbeKind::Startup {
                        p.stop(None);
                    }
                    *k != ProbeKind::Startup
                });
                self.health.started_up = true;
                self.spawn_probes(myself, &[ProbeKind::Liveness, ProbeKind::Readiness])
                    .await;
                self.update_ready(myself, None);
                Ok(())
            }
            (ProbeKind::Readiness, ready) => {
                self.health.probe_ready = Some(ready);
                let reason = (!ready).then_some(report.output);
                self.update_ready(myself, reason);
                Ok(())
            }
            (ProbeKind::Liveness, true) => Ok(()),
            (kind, _) => {
                self.unhealthy(
                    &kind.to_string(),
                    &format!("{kind} probe failed"),
                    report.output,
                )
                .await
            }
        }
    }

    /// A datagram on the replica's notify socket.
    pub(super) async fn notified(
        &mut self,
        myself: &ActorRef<ContainerMsg>,
        text: &str,
    ) -> Result<(), ActorProcessingErr> {
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match (key, value) {
                ("READY", "1") => {
                    self.health.notified = true;
                    self.update_ready(myself, None);
                }
                ("STATUS", status) => {
                    if let Some(h) = &self.health_sink {
                        h.set_status(Some(status.chars().take(200).collect()));
                    }
                }
                ("WATCHDOG", "1") => {
                    self.health.watchdog_gen += 1;
                    self.arm_watchdog(myself);
                }
                ("WATCHDOG", "trigger") => {
                    return self
                        .unhealthy("watchdog", "watchdog", "WATCHDOG=trigger".into())
                        .await;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The watchdog period `generation` was armed for ended.
    pub(super) async fn watchdog_due(&mut self, generation: u64) -> Result<(), ActorProcessingErr> {
        if generation != self.health.watchdog_gen
            || self.container.as_ref().is_none_or(|c| c.exit.is_some())
        {
            return Ok(());
        }
        let period = self.probes.watchdog.unwrap_or_default();
        self.unhealthy(
            "watchdog",
            "watchdog",
            format!("no WATCHDOG=1 within {}", crate::spec::fmt_duration(period)),
        )
        .await
    }

    fn arm_watchdog(&self, myself: &ActorRef<ContainerMsg>) {
        if let (Some(period), true) = (self.probes.watchdog, self.probes.notify) {
            let generation = self.health.watchdog_gen;
            myself.send_after(period, move || ContainerMsg(Msg::WatchdogDue(generation)));
        }
    }

    /// Tells the supervisor when readiness changed (`reason`: why not).
    fn update_ready(&mut self, myself: &ActorRef<ContainerMsg>, reason: Option<String>) {
        let h = &self.health;
        let ready = h.started_up
            && (self.probes.readiness.is_none() || h.probe_ready == Some(true))
            && (!self.probes.notify || h.notified);
        if h.told == Some(ready) && reason.is_none() {
            return;
        }
        self.health.told = Some(ready);
        if let Some(sink) = &self.health_sink {
            report_ready(&sink.supervisor, myself.get_id(), ready, reason);
        }
    }

    /// The replica is not healthy: event `probe_failed`, stop the container
    /// with its grace, and fail with `what: output`.
    async fn unhealthy(
        &mut self,
        probe: &str,
        what: &str,
        output: String,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(h) = &self.health_sink {
            h.events.publish(Event::ProbeFailed {
                supervisor: h.service.to_string(),
                child: h.child.to_string(),
                probe: probe.to_owned(),
                output: output.clone(),
            });
        }
        for (_, p) in self.probing.drain(..) {
            p.stop(None);
        }
        self.mark(&format!("{what}: {output}; stopping it"));
        self.health.socket = None;
        if let Some(waiter) = self.container.as_mut().and_then(|c| c.waiter.take()) {
            waiter.abort();
        }
        let status = self.stop().await;
        if let Some(c) = &mut self.container {
            c.exit = status;
        }
        self.remove().await;
        Err(Box::new(ExitReport {
            exit: ChildExit::Failed {
                reason: format!("{what}: {output}"),
            },
            retained: None,
        }))
    }

    /// Drops the notify socket (the replica ended).
    pub(super) fn close_notify(&mut self) {
        self.health.socket = None;
    }

    /// The replica was adopted from a previous agent: it sent `READY=1`
    /// to that agent, if ever, and does not send it again, so a `notify`
    /// replica counts as notified (systemd keeps this state across a
    /// re-exec too).
    pub(super) fn adopted(&mut self) {
        self.health.notified = true;
    }
}
