//! `GET /metrics`: Prometheus text format.
//!
//! Counters come from the node's events: a task started with the router
//! subscribes to them and owns every count (no shared table, no lock);
//! a scrape asks it for its figures over a channel. Gauges (executions by
//! state, active executions, running replicas) are read from the node at
//! scrape time.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `arbor_service_restarts_total` | counter | `service` |
//! | `arbor_crash_loops_total` | counter | `service` |
//! | `arbor_containers_isolated_total` | counter | `service` |
//! | `arbor_supervisor_escalations_total` | counter | `supervisor` |
//! | `arbor_executions_started_total` | counter | `job` |
//! | `arbor_executions_finished_total` | counter | `job`, `state` |
//! | `arbor_execution_duration_seconds` | histogram | (none) |
//! | `arbor_executions` | gauge | `state` (retained executions) |
//! | `arbor_executions_active` | gauge | |
//! | `arbor_service_replicas_running` | gauge | `service` |
//! | `arbor_service_replicas_ready` | gauge | `service` |
//! | `arbor_service_status` | gauge | `service`, `status` (always 1) |
//! | `arbor_node_part_up` | gauge | `part` (1 while it runs) |
//! | `arbor_node_part_restarts` | gauge | `part` |
//! | `arbor_shutting_down` | gauge | |
//! | `arbor_events_dropped_total` | counter | (events lost by stalled subscribers) |
//! | `arbor_cluster_peer_state` | gauge | `node`, `state` (always 1; in a cluster) |
//! | `arbor_cluster_peer_rtt_seconds` | gauge | `node` (last heartbeat round trip) |
//! | `arbor_cluster_heartbeats_answered_total` | counter | `node` |
//! | `arbor_cluster_heartbeats_missed_total` | counter | `node` |
//!
//! Counters start at zero when the router is built.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write,
    time::Instant,
};

use axum::{extract::State, http::header, response::IntoResponse};
use tokio::sync::{mpsc, oneshot};

use super::{AppState, error::ApiError};
use crate::events::{Event, EventStream};

/// Upper bounds of the duration histogram, in seconds.
const BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Executions whose start was seen and whose end was not, at most.
const MAX_IN_FLIGHT: usize = 100_000;

/// Asks the counting task for its figures.
#[derive(Clone)]
pub(crate) struct MetricsHandle {
    tx: mpsc::Sender<oneshot::Sender<String>>,
}

impl MetricsHandle {
    /// Starts the task counting `events`. It ends when every handle is gone.
    pub(crate) fn start(mut events: EventStream) -> Self {
        let (tx, mut rx) = mpsc::channel::<oneshot::Sender<String>>(16);
        tokio::spawn(async move {
            let mut counters = Counters::default();
            let mut bus_open = true;
            loop {
                tokio::select! {
                    e = events.recv(), if bus_open => match e {
                        Some(e) => counters.apply(&e),
                        None => bus_open = false,
                    },
                    q = rx.recv() => match q {
                        Some(reply) => {
                            let _ = reply.send(counters.render());
                        }
                        None => break,
                    },
                }
            }
        });
        Self { tx }
    }

    async fn counters(&self) -> Option<String> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).await.ok()?;
        rx.await.ok()
    }
}

#[derive(Default)]
struct Counters {
    restarts: BTreeMap<String, u64>,
    crash_loops: BTreeMap<String, u64>,
    isolated: BTreeMap<String, u64>,
    escalations: BTreeMap<String, u64>,
    started: BTreeMap<String, u64>,
    finished: BTreeMap<(String, String), u64>,
    in_flight: HashMap<String, Instant>,
    /// Observations at or below each bucket's bound (not cumulative here).
    buckets: Vec<u64>,
    duration_sum: f64,
    duration_count: u64,
}

impl Counters {
    fn apply(&mut self, e: &Event) {
        match e {
            Event::ChildRestarted {
                supervisor: service,
                ..
            } => {
                *self.restarts.entry(service.clone()).or_default() += 1;
            }
            Event::CrashLoopBackOff {
                supervisor: service,
                ..
            } => {
                *self.crash_loops.entry(service.clone()).or_default() += 1;
            }
            Event::ChildIsolated {
                supervisor: service,
                ..
            } => {
                *self.isolated.entry(service.clone()).or_default() += 1;
            }
            Event::SupervisorEscalated { supervisor, .. } => {
                *self.escalations.entry(supervisor.clone()).or_default() += 1;
            }
            Event::ExecutionStarted { id, job, .. } => {
                *self.started.entry(job.clone()).or_default() += 1;
                if self.in_flight.len() < MAX_IN_FLIGHT {
                    self.in_flight.insert(id.clone(), Instant::now());
                }
            }
            Event::ExecutionFinished { id, job, state, .. } => {
                *self
                    .finished
                    .entry((job.clone(), state.clone()))
                    .or_default() += 1;
                if let Some(at) = self.in_flight.remove(id) {
                    self.observe(at.elapsed().as_secs_f64());
                }
            }
            _ => {}
        }
    }

    fn observe(&mut self, secs: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; BUCKETS.len()];
        }
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i] += 1;
        }
        self.duration_sum += secs;
        self.duration_count += 1;
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let by =
            |out: &mut String, name: &str, help: &str, label: &str, m: &BTreeMap<String, u64>| {
                describe(out, name, help, "counter");
                for (k, v) in m {
                    let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {v}", escape(k));
                }
            };
        by(
            &mut out,
            "arbor_service_restarts_total",
            "Replicas restarted by their service's supervisor.",
            "service",
            &self.restarts,
        );
        by(
            &mut out,
            "arbor_crash_loops_total",
            "Times a replica entered crash-loop back-off.",
            "service",
            &self.crash_loops,
        );
        by(
            &mut out,
            "arbor_containers_isolated_total",
            "Failed replicas kept for debugging and not restarted.",
            "service",
            &self.isolated,
        );
        by(
            &mut out,
            "arbor_supervisor_escalations_total",
            "Supervisors that exceeded their restart intensity and failed to their parent.",
            "supervisor",
            &self.escalations,
        );
        by(
            &mut out,
            "arbor_executions_started_total",
            "Job executions accepted.",
            "job",
            &self.started,
        );
        describe(
            &mut out,
            "arbor_executions_finished_total",
            "Job executions that reached a terminal state.",
            "counter",
        );
        for ((job, state), v) in &self.finished {
            let _ = writeln!(
                out,
                "arbor_executions_finished_total{{job=\"{}\",state=\"{}\"}} {v}",
                escape(job),
                escape(state)
            );
        }
        let name = "arbor_execution_duration_seconds";
        describe(
            &mut out,
            name,
            "From acceptance to the terminal state, of executions started while the API ran.",
            "histogram",
        );
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.duration_count);
        let _ = writeln!(out, "{name}_sum {}", self.duration_sum);
        let _ = writeln!(out, "{name}_count {}", self.duration_count);
        out
    }
}

fn describe(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics, in Prometheus text format 0.0.4.
pub(crate) async fn render(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let mut out = state
        .metrics
        .counters()
        .await
        .ok_or_else(|| ApiError::internal("the metrics task is not running"))?;
    let exec = state.node.executor();
    // A part that is restarting leaves its figures out for this scrape;
    // the rest is still served.
    let records = exec.list_all().await.unwrap_or_default();
    let mut by_state: BTreeMap<&'static str, u64> = [
        "pending",
        "initializing",
        "running",
        "completed",
        "failed",
        "cancelled",
    ]
    .into_iter()
    .map(|s| (s, 0))
    .collect();
    for r in &records {
        *by_state.entry(r.status.state.name()).or_default() += 1;
    }
    describe(
        &mut out,
        "arbor_executions",
        "Retained executions by state.",
        "gauge",
    );
    for (s, n) in &by_state {
        let _ = writeln!(out, "arbor_executions{{state=\"{s}\"}} {n}");
    }
    describe(
        &mut out,
        "arbor_executions_active",
        "Executions pending, initializing or running.",
        "gauge",
    );
    if let Ok(active) = exec.active_count().await {
        let _ = writeln!(out, "arbor_executions_active {active}");
    }
    describe(
        &mut out,
        "arbor_service_replicas_running",
        "Replicas whose container runs, by service.",
        "gauge",
    );
    let services = state.node.services().await?;
    for s in &services {
        let _ = writeln!(
            out,
            "arbor_service_replicas_running{{service=\"{}\"}} {}",
            escape(&s.name),
            s.running
        );
    }
    describe(
        &mut out,
        "arbor_service_replicas_ready",
        "Replicas that run and pass their readiness probe (if any), by service.",
        "gauge",
    );
    for s in &services {
        let _ = writeln!(
            out,
            "arbor_service_replicas_ready{{service=\"{}\"}} {}",
            escape(&s.name),
            s.ready
        );
    }
    describe(
        &mut out,
        "arbor_service_status",
        "1 for each service's current status (running, degraded, starting, crash_loop_back_off, failed, stopped, ...).",
        "gauge",
    );
    for s in &services {
        let _ = writeln!(
            out,
            "arbor_service_status{{service=\"{}\",status=\"{}\"}} 1",
            escape(&s.name),
            escape(&s.status)
        );
    }
    describe(
        &mut out,
        "arbor_node_part_up",
        "1 while a part of the node runs (0 while it is restarted), by part.",
        "gauge",
    );
    let health = state.node.health().await;
    for (part, up) in &health.parts {
        let _ = writeln!(
            out,
            "arbor_node_part_up{{part=\"{part}\"}} {}",
            u8::from(*up)
        );
    }
    describe(
        &mut out,
        "arbor_node_part_restarts",
        "Restarts of each of the node's own parts by the root.",
        "gauge",
    );
    if let Ok(tree) = state.node.tree().await {
        for part in tree
            .children
            .iter()
            .filter(|c| c.name.starts_with(crate::node::PART_PREFIX))
        {
            let _ = writeln!(
                out,
                "arbor_node_part_restarts{{part=\"{}\"}} {}",
                escape(part.name.trim_start_matches(crate::node::PART_PREFIX)),
                part.restarts
            );
        }
    }
    describe(
        &mut out,
        "arbor_shutting_down",
        "1 once the node began to shut down.",
        "gauge",
    );
    let _ = writeln!(
        out,
        "arbor_shutting_down {}",
        u8::from(state.node.is_shutting_down())
    );
    describe(
        &mut out,
        "arbor_events_dropped_total",
        "Events dropped for subscribers (event streams, this counter's own) that did not keep up.",
        "counter",
    );
    let _ = writeln!(
        out,
        "arbor_events_dropped_total {}",
        state.node.event_bus().dropped()
    );
    if let Some(view) = state.node.cluster() {
        cluster_metrics(&mut out, &view);
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    ))
}

/// Per-peer figures of this node's cluster view.
fn cluster_metrics(out: &mut String, view: &crate::cluster::ClusterView) {
    let peers = || view.members.iter().filter(|m| !m.is_self);
    describe(
        out,
        "arbor_cluster_peer_state",
        "1 for each cluster peer's state as this node sees it (up, suspect, down).",
        "gauge",
    );
    for m in peers() {
        let _ = writeln!(
            out,
            "arbor_cluster_peer_state{{node=\"{}\",state=\"{}\"}} 1",
            escape(&m.name),
            m.state
        );
    }
    describe(
        out,
        "arbor_cluster_peer_rtt_seconds",
        "Round trip of the last heartbeat a cluster peer answered.",
        "gauge",
    );
    for m in peers() {
        if let Some(rtt) = m.rtt_ms {
            let _ = writeln!(
                out,
                "arbor_cluster_peer_rtt_seconds{{node=\"{}\"}} {}",
                escape(&m.name),
                rtt / 1e3
            );
        }
    }
    for (name, help, value) in [
        (
            "arbor_cluster_heartbeats_answered_total",
            "Heartbeats a cluster peer answered.",
            (|m: &crate::cluster::MemberView| m.answered) as fn(&crate::cluster::MemberView) -> u64,
        ),
        (
            "arbor_cluster_heartbeats_missed_total",
            "Heartbeats a cluster peer left unanswered (timed out or failed).",
            |m| m.missed_total,
        ),
    ] {
        describe(out, name, help, "counter");
        for m in peers() {
            let _ = writeln!(out, "{name}{{node=\"{}\"}} {}", escape(&m.name), value(m));
        }
    }
}
