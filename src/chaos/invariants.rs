//! The invariants a node keeps under any sequence of faults (DESIGN.md,
//! "Invariants that tests hold"), each a function from what a run
//! observed to the violations found, so that users can call them on their
//! own runs too.
//!
//! Every check reads only the [`Observation`]: events with their virtual
//! times, the journal of runtime, overlay and token calls (the recording
//! fakes write `runtime remove ID`, `overlay attach ID SEG`, `overlay detach
//! ID SEG`, `token revoke ID`), the execution records, the tree after the
//! quiet period and what was left after shutdown. A violation carries the
//! events that led to it.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use crate::{
    Event, ExecutionRecord, TreeNode,
    actors::supervisor_actor::ChildState,
    journal::{Entry, OverlayOp, RuntimeOp},
    runtime::fault::InjectedFault,
    spec::{OnLimit, RestartType, SupervisorFlags},
};

use super::describe;

/// Everything a chaos run observed.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// Virtual time from the start of the run to the end of the shutdown.
    pub elapsed: Duration,
    /// Every event, with its virtual time since the start of the run.
    pub events: Vec<(Duration, Event)>,
    /// Every runtime, overlay and token call, in order.
    pub journal: Vec<Entry>,
    /// The execution records retained at the end.
    pub executions: Vec<ExecutionRecord>,
    /// The tree at the end of the quiet period (`None`: it could not be read).
    pub tree_after_quiet: Option<TreeNode>,
    /// When the tree was read (virtual time since the start of the run).
    pub tree_at: Duration,
    /// Supervisor flags by supervisor name (the root and each service).
    pub flags: BTreeMap<String, SupervisorFlags>,
    /// The root supervisor's name.
    pub root: String,
    /// Containers still known to the runtime after shutdown.
    pub containers_left: Vec<String>,
    /// Overlay segments still held or attached after shutdown.
    pub segments_left: Vec<String>,
    /// Processes (or zombies) still there after shutdown.
    pub processes_left: Vec<String>,
    /// Every fault injected.
    pub injected: Vec<InjectedFault>,
    /// On-demand job triggers sent.
    pub triggers: u64,
    /// Service replicas the harness made exit.
    pub kills: u64,
    /// When the agent was restarted (virtual time since the start).
    pub agent_restarts: Vec<Duration>,
    /// Containers a restarted agent adopted from the one before it.
    pub adopted: u64,
    /// Containers an agent left that the next one did not adopt (stopped).
    pub released: u64,
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant (`execution_ends_once`, `cleanup_runs_once`, ...).
    pub invariant: &'static str,
    /// What is wrong.
    pub detail: String,
    /// The events that led to it (virtual time and JSON), oldest first.
    pub events: Vec<String>,
}

impl Violation {
    fn new(invariant: &'static str, detail: impl Into<String>, events: Vec<String>) -> Self {
        Self {
            invariant,
            detail: detail.into(),
            events,
        }
    }
}

/// Runs every check.
pub fn check_all(obs: &Observation) -> Vec<Violation> {
    let mut v = Vec::new();
    v.extend(executions_end_once(obs));
    v.extend(cleanup_runs_once(obs));
    v.extend(nothing_left(obs));
    v.extend(restarts_within_intensity(obs));
    v.extend(backoff_follows_policy(obs));
    v.extend(permanent_children_run(obs));
    v.extend(temporary_children_never_restart(obs));
    v.extend(events_match_tree(obs));
    v.extend(restart_counts_never_go_back(obs));
    v
}

/// A child's restart count never goes back (across agent restarts too:
/// the count is kept on disk), except when its supervisor escalated and
/// was started afresh.
pub fn restart_counts_never_go_back(obs: &Observation) -> Vec<Violation> {
    let mut last: BTreeMap<(&str, &str), (u32, Duration)> = BTreeMap::new();
    let mut out = Vec::new();
    for (at, e) in &obs.events {
        if let Event::SupervisorEscalated { supervisor, .. } = e {
            last.retain(|(s, _), _| *s != supervisor.as_str());
            continue;
        }
        let Some((supervisor, child, count)) = restart_count_of(e) else {
            continue;
        };
        // A restart counts one more; a back-off or a failed start reports
        // the count as it is.
        let grew = matches!(e, Event::ChildRestarted { .. });
        if let Some(&(before, then)) = last.get(&(supervisor, child))
            && (count < before || (grew && count <= before))
        {
            let restarted = obs.agent_restarts.iter().any(|r| *r >= then && *r <= *at);
            out.push(Violation::new(
                "restart_counts_never_go_back",
                format!(
                    "{supervisor}/{child}: restart count {count} at {:.3}s after {before} at {:.3}s{}",
                    at.as_secs_f64(),
                    then.as_secs_f64(),
                    if restarted {
                        " (the agent was restarted between)"
                    } else {
                        ""
                    }
                ),
                child_events(obs, supervisor, child, *at),
            ));
        }
        // Since when the child has had this count.
        let since = match last.get(&(supervisor, child)) {
            Some(&(before, then)) if before == count => then,
            _ => *at,
        };
        last.insert((supervisor, child), (count, since));
    }
    out
}

/// Every accepted execution reaches exactly one terminal state: one
/// `execution_finished` per `execution_started`, none without, and every
/// retained record is terminal.
pub fn executions_end_once(obs: &Observation) -> Vec<Violation> {
    let mut started: BTreeMap<&str, usize> = BTreeMap::new();
    let mut finished: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, e) in &obs.events {
        match e {
            Event::ExecutionStarted { id, .. } => *started.entry(id).or_default() += 1,
            Event::ExecutionFinished { id, .. } => *finished.entry(id).or_default() += 1,
            _ => {}
        }
    }
    let mut out = Vec::new();
    let ids: BTreeSet<&str> = started.keys().chain(finished.keys()).copied().collect();
    for id in ids {
        let (s, f) = (
            started.get(id).copied().unwrap_or(0),
            finished.get(id).copied().unwrap_or(0),
        );
        if s != 1 || f != 1 {
            out.push(Violation::new(
                "execution_ends_once",
                format!(
                    "execution {id}: started {s} time(s), reached a terminal state {f} time(s)"
                ),
                execution_events(obs, id),
            ));
        }
    }
    for r in &obs.executions {
        if !r.status.state.is_terminal() {
            out.push(Violation::new(
                "execution_ends_once",
                format!(
                    "execution {} is {} after shutdown",
                    r.meta.id,
                    r.status.state.name()
                ),
                execution_events(obs, &r.meta.id.to_string()),
            ));
        }
    }
    out
}

/// Cleanup runs exactly once per container: each overlay attachment is
/// detached once, each prepared network namespace deleted once, each token revoked at most once (and exactly once for an
/// attached job container), each container removed at most once.
pub fn cleanup_runs_once(obs: &Observation) -> Vec<Violation> {
    let mut attached: BTreeMap<&str, i64> = BTreeMap::new();
    let mut revoked: BTreeMap<&str, usize> = BTreeMap::new();
    let mut removed: BTreeMap<&str, usize> = BTreeMap::new();
    let mut namespaces: BTreeMap<&str, i64> = BTreeMap::new();
    let mut out = Vec::new();
    for entry in &obs.journal {
        match entry {
            Entry::Overlay { op, subject, .. } => match op {
                OverlayOp::Attach => *attached.entry(subject.as_str()).or_default() += 1,
                OverlayOp::Detach => *attached.entry(subject.as_str()).or_default() -= 1,
                OverlayOp::NetnsAdd => *namespaces.entry(subject.as_str()).or_default() += 1,
                OverlayOp::NetnsDel => *namespaces.entry(subject.as_str()).or_default() -= 1,
                _ => {}
            },
            Entry::TokenRevoked(c) => *revoked.entry(c.as_str()).or_default() += 1,
            Entry::Runtime {
                op: RuntimeOp::Remove,
                subject,
                ..
            } => *removed.entry(subject.as_str()).or_default() += 1,
            _ => {}
        }
    }
    for (c, n) in &attached {
        if *n != 0 {
            out.push(Violation::new(
                "cleanup_runs_once",
                format!(
                    "container {c}: {} overlay attachment(s) without a matching detach",
                    n
                ),
                journal_of(obs, c),
            ));
        }
        let r = revoked.get(c).copied().unwrap_or(0);
        if r != 1 {
            out.push(Violation::new(
                "cleanup_runs_once",
                format!("job container {c}: token revoked {r} time(s), expected once"),
                journal_of(obs, c),
            ));
        }
    }
    for (c, r) in &revoked {
        if *r > 1 {
            out.push(Violation::new(
                "cleanup_runs_once",
                format!("container {c}: token revoked {r} times"),
                journal_of(obs, c),
            ));
        }
    }
    for (n, k) in &namespaces {
        if *k != 0 {
            out.push(Violation::new(
                "cleanup_runs_once",
                format!("network namespace {n}: created and deleted {k:+} time(s) apart"),
                journal_of(obs, n),
            ));
        }
    }
    for (c, r) in &removed {
        if *r > 1 {
            out.push(Violation::new(
                "cleanup_runs_once",
                format!("container {c}: removed {r} times"),
                journal_of(obs, c),
            ));
        }
    }
    out
}

/// After shutdown nothing is left: no container, no process or zombie, no
/// overlay segment or attachment.
pub fn nothing_left(obs: &Observation) -> Vec<Violation> {
    let mut out = Vec::new();
    for (what, left) in [
        ("container", &obs.containers_left),
        ("process", &obs.processes_left),
        ("overlay segment", &obs.segments_left),
    ] {
        for item in left {
            let id = item.split(' ').next().unwrap_or(item);
            out.push(Violation::new(
                "nothing_left",
                format!("{what} left after shutdown: {item}"),
                journal_of(obs, id),
            ));
        }
    }
    out
}

/// A failure of a child, and what its supervisor did about it.
struct Decision {
    at: Duration,
    /// The index of the event that showed the outcome (orders decisions
    /// made at the same instant).
    seq: usize,
    /// The supervisor's incarnation: an escalated supervisor restarted by
    /// its parent starts with a fresh restart history.
    epoch: usize,
    /// Restarted at once (not after a back-off delay).
    immediate: bool,
}

/// For each (supervisor, child): the failures that led to a restart, in
/// order, classified as immediate or backed off.
fn restart_decisions(obs: &Observation) -> BTreeMap<(String, String), Vec<Decision>> {
    let mut out: BTreeMap<(String, String), Vec<Decision>> = BTreeMap::new();
    // The failure waiting for its outcome, per child.
    let mut pending: BTreeMap<(String, String), Duration> = BTreeMap::new();
    let mut epochs: BTreeMap<&str, usize> = BTreeMap::new();
    for (seq, (at, e)) in obs.events.iter().enumerate() {
        let epoch = match e {
            Event::ChildExited { supervisor, .. }
            | Event::ChildStartFailed { supervisor, .. }
            | Event::ChildStopped { supervisor, .. } => epochs.get(supervisor.as_str()),
            Event::ChildRestarted {
                supervisor: service,
                ..
            }
            | Event::CrashLoopBackOff {
                supervisor: service,
                ..
            } => epochs.get(service.as_str()),
            _ => None,
        }
        .copied()
        .unwrap_or(0);
        match e {
            Event::SupervisorEscalated { supervisor, .. } => {
                // A new incarnation: the failures that led here were not
                // restarted by it.
                *epochs.entry(supervisor).or_default() += 1;
                pending.retain(|(s, _), _| s != supervisor);
            }
            Event::ChildExited {
                supervisor, child, ..
            } => {
                pending.insert((supervisor.clone(), child.clone()), *at);
            }
            Event::ChildStartFailed {
                supervisor,
                child,
                restart_count,
                ..
            } => {
                let key = (supervisor.clone(), child.clone());
                // A failed restart attempt is the outcome of the failure
                // before it, and itself a failure (a failed first start,
                // `restart_count` 0, is only a failure).
                if *restart_count > 0
                    && let Some(t) = pending.remove(&key)
                {
                    out.entry(key.clone()).or_default().push(Decision {
                        at: t,
                        seq,
                        epoch,
                        immediate: true,
                    });
                }
                pending.insert(key, *at);
            }
            Event::ChildRestarted {
                child: id,
                supervisor: service,
                ..
            }
            | Event::CrashLoopBackOff {
                child: id,
                supervisor: service,
                ..
            } => {
                let key = (service.clone(), id.clone());
                if let Some(t) = pending.remove(&key) {
                    out.entry(key).or_default().push(Decision {
                        at: t,
                        seq,
                        epoch,
                        immediate: matches!(e, Event::ChildRestarted { .. }),
                    });
                }
            }
            Event::ChildIsolated {
                child: id,
                supervisor: service,
                ..
            }
            | Event::ChildCompleted {
                child: id,
                supervisor: service,
                ..
            } => {
                pending.remove(&(service.clone(), id.clone()));
            }
            Event::ChildStopped {
                supervisor, child, ..
            } => {
                pending.remove(&(supervisor.clone(), child.clone()));
            }
            _ => {}
        }
    }
    out
}

/// A restart happens at once only while the restarts inside the window
/// before it are fewer than `max_restarts`: counted per supervisor under
/// `on_limit: escalate`, per child under `backoff`.
pub fn restarts_within_intensity(obs: &Observation) -> Vec<Violation> {
    let decisions = restart_decisions(obs);
    // Groups whose restarts count together: a supervisor, or one child.
    // (supervisor, incarnation, child under backoff) -> (event index, time,
    // immediate, child).
    type Group<'a> = (&'a str, usize, Option<&'a str>);
    type Restart<'a> = (usize, Duration, bool, &'a str);
    let mut groups: BTreeMap<Group, Vec<Restart>> = BTreeMap::new();
    for ((sup, child), list) in &decisions {
        let Some(flags) = obs.flags.get(sup) else {
            continue;
        };
        for d in list {
            let key = match flags.on_limit {
                OnLimit::Escalate => (sup.as_str(), d.epoch, None),
                OnLimit::Backoff => (sup.as_str(), d.epoch, Some(child.as_str())),
            };
            groups
                .entry(key)
                .or_default()
                .push((d.seq, d.at, d.immediate, child.as_str()));
        }
    }
    let mut out = Vec::new();
    for ((sup, _, _), mut list) in groups {
        let flags = &obs.flags[sup];
        let (window, max) = (flags.restart_window, flags.max_restarts as usize);
        // In the order the supervisor made them.
        list.sort();
        // Two pointers: `first` is the oldest restart inside the window.
        let mut first = 0;
        for i in 0..list.len() {
            let (_, at, immediate, child) = list[i];
            while at.saturating_sub(list[first].1) >= window {
                first += 1;
            }
            let before = i - first;
            if immediate && before >= max {
                out.push(Violation::new(
                    "restarts_within_intensity",
                    format!(
                        "{sup}/{child} restarted at once at {:.3}s with {before} restart(s) in the {} window before it (max_restarts {max}, on_limit {:?})",
                        at.as_secs_f64(),
                        humantime::format_duration(window),
                        flags.on_limit
                    ),
                    child_events(obs, sup, child, at),
                ));
            }
        }
    }
    out
}

/// The restart attempts of each (supervisor, child), as event indices.
fn restart_attempts(obs: &Observation) -> BTreeMap<(&str, &str), Vec<usize>> {
    let mut out: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (i, (_, e)) in obs.events.iter().enumerate() {
        match e {
            Event::ChildRestarted {
                child: id,
                supervisor: service,
                ..
            } => out.entry((service, id)).or_default().push(i),
            Event::ChildStartFailed {
                supervisor,
                child,
                restart_count,
                ..
            } if *restart_count > 0 => out.entry((supervisor, child)).or_default().push(i),
            _ => {}
        }
    }
    out
}

/// Every back-off delay is the policy's `initial * multiplier^step`, capped
/// at `max`, plus at most `jitter` of it, and the child is not restarted
/// before the delay ends.
pub fn backoff_follows_policy(obs: &Observation) -> Vec<Violation> {
    let attempts = restart_attempts(obs);
    let mut out = Vec::new();
    for (i, (at, e)) in obs.events.iter().enumerate() {
        let Event::CrashLoopBackOff {
            child: id,
            supervisor: service,
            delay,
            resumed,
            ..
        } = e
        else {
            continue;
        };
        let Some(flags) = obs.flags.get(service) else {
            continue;
        };
        let p = &flags.backoff;
        // A resumed back-off waits what remained of an earlier one.
        let fits = *resumed
            || (0..64).any(|step| {
                let base = p.base_delay(step);
                let top = base.mul_f64(1.0 + p.jitter.clamp(0.0, 1.0)) + Duration::from_millis(1);
                *delay + Duration::from_millis(1) >= base && *delay <= top
            });
        if !fits {
            out.push(Violation::new(
                "backoff_follows_policy",
                format!(
                    "{service}/{id}: back-off delay {} is not initial {} x {}^step (max {}) plus jitter {}",
                    humantime::format_duration(*delay),
                    humantime::format_duration(p.initial),
                    p.multiplier,
                    humantime::format_duration(p.max),
                    p.jitter
                ),
                child_events(obs, service, id, *at),
            ));
        }
        // The next restart attempt of this child, if any.
        let next = attempts
            .get(&(service.as_str(), id.as_str()))
            .and_then(|list| {
                let k = list.partition_point(|&j| j <= i);
                list.get(k).map(|&j| obs.events[j].0)
            });
        if let Some(t) = next
            && t < *at + *delay
        {
            out.push(Violation::new(
                "backoff_follows_policy",
                format!(
                    "{service}/{id}: restarted at {:.3}s, before its back-off of {} from {:.3}s ended",
                    t.as_secs_f64(),
                    humantime::format_duration(*delay),
                    at.as_secs_f64()
                ),
                child_events(obs, service, id, t),
            ));
        }
    }
    out
}

/// At the end of the quiet period every permanent child runs, unless it
/// waits in CrashLoopBackOff, was isolated or completed by policy, its
/// supervisor escalated, or it gave up at the top of the escalation ladder
/// (`backoff.give_up_after`) after at least that many crash loops.
pub fn permanent_children_run(obs: &Observation) -> Vec<Violation> {
    let Some(tree) = &obs.tree_after_quiet else {
        let root_escalated = obs.events.iter().any(|(_, e)| {
            matches!(e, Event::SupervisorEscalated { supervisor, .. } if *supervisor == obs.root)
        });
        return if root_escalated {
            Vec::new()
        } else {
            vec![Violation::new(
                "permanent_children_run",
                "the tree could not be read after the quiet period, and the root did not escalate",
                Vec::new(),
            )]
        };
    };
    let mut out = Vec::new();
    walk(tree, &mut |parent, child| {
        if child.restart != Some(RestartType::Permanent) {
            return;
        }
        let fine = matches!(
            child.state,
            ChildState::Running
                | ChildState::CrashLoopBackOff
                | ChildState::Isolated
                | ChildState::Completed
                | ChildState::Stopped
        );
        if child.state == ChildState::Failed
            && let Some(n) = gave_up_after(obs, &parent.name, &child.name)
        {
            // The top of the escalation ladder: fine once it went through
            // as many crash loops as it says.
            let loops = obs
                .events
                .iter()
                .filter(|(_, e)| matches!(e, Event::CrashLoopBackOff { supervisor, child: c, .. } if *supervisor == parent.name && *c == child.name))
                .count();
            if loops < n as usize {
                out.push(Violation::new(
                    "permanent_children_run",
                    format!(
                        "{}/{} gave up after {n} crash loops but backed off only {loops} times",
                        parent.name, child.name
                    ),
                    child_events(obs, &parent.name, &child.name, obs.elapsed),
                ));
            }
            return;
        }
        if !fine {
            out.push(Violation::new(
                "permanent_children_run",
                format!(
                    "{}/{} is {} at the end of the quiet period",
                    parent.name, child.name, child.state
                ),
                child_events(obs, &parent.name, &child.name, obs.elapsed),
            ));
        }
    });
    out
}

/// The crash loops a child gave up after (`backoff.give_up_after`), from
/// its `child_failed` event.
fn gave_up_after(obs: &Observation, supervisor: &str, child: &str) -> Option<u32> {
    obs.events.iter().find_map(|(_, e)| match e {
        Event::ChildFailed {
            supervisor: s,
            child: c,
            reason,
            ..
        } if s == supervisor && c == child => reason
            .strip_prefix("gave up after ")?
            .split(' ')
            .next()?
            .parse()
            .ok(),
        _ => None,
    })
}

/// Temporary children are never restarted.
pub fn temporary_children_never_restart(obs: &Observation) -> Vec<Violation> {
    let mut temporary = BTreeSet::new();
    if let Some(tree) = &obs.tree_after_quiet {
        walk(tree, &mut |parent, child| {
            if child.restart == Some(RestartType::Temporary) {
                temporary.insert((parent.name.clone(), child.name.clone()));
            }
        });
    }
    let mut out = Vec::new();
    for (at, e) in &obs.events {
        let key = match e {
            Event::ChildRestarted {
                child: id,
                supervisor: service,
                ..
            } => (service.clone(), id.clone()),
            Event::ChildStartFailed {
                supervisor,
                child,
                restart_count,
                ..
            } if *restart_count > 0 => (supervisor.clone(), child.clone()),
            _ => continue,
        };
        if temporary.contains(&key) {
            out.push(Violation::new(
                "temporary_children_never_restart",
                format!("temporary child {}/{} was restarted", key.0, key.1),
                child_events(obs, &key.0, &key.1, *at),
            ));
        }
    }
    out
}

/// The event stream agrees with the tree: each child's restart count is the
/// number of restart attempts reported for it (restarted, or failed to
/// start on a restart) since its supervisor last started.
pub fn events_match_tree(obs: &Observation) -> Vec<Violation> {
    let Some(tree) = &obs.tree_after_quiet else {
        return Vec::new();
    };
    // Restart attempts per (supervisor, child); a supervisor's (re)start
    // starts its children's counts over, except its first start by a new
    // agent, which continues the counts the last one kept.
    let mut counted: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    // The last restart count each child reported.
    let mut reported: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut restarts = obs.agent_restarts.iter().peekable();
    let mut continued: BTreeSet<&str> = BTreeSet::new();
    for (at, e) in obs.events.iter().filter(|(t, _)| *t <= obs.tree_at) {
        if restarts.next_if(|r| **r <= *at).is_some() {
            while restarts.next_if(|r| **r <= *at).is_some() {}
            continued.clear();
            for (sup, _) in counted.keys() {
                continued.insert(sup);
            }
        }
        match e {
            Event::ChildStarted { child, .. } if continued.remove(child.as_str()) => {}
            Event::ChildStarted { child, .. } => {
                let sup = child.as_str();
                let stale: Vec<(&str, &str)> = counted
                    .range((sup, "")..)
                    .take_while(|((s, _), _)| *s == sup)
                    .map(|(k, _)| *k)
                    .collect();
                for k in stale {
                    counted.remove(&k);
                    reported.remove(&k);
                }
            }
            Event::ChildRestarted {
                child: id,
                supervisor: service,
                ..
            } => *counted.entry((service, id)).or_default() += 1,
            // A failed start is a restart attempt when it counted one
            // (a first start that fails does not, nor does a new agent's
            // first start of a child whose count it took back).
            Event::ChildStartFailed {
                supervisor,
                child,
                restart_count,
                ..
            } if *restart_count as usize
                > reported.get(&(supervisor, child)).copied().unwrap_or(0) =>
            {
                *counted.entry((supervisor, child)).or_default() += 1
            }
            _ => {}
        }
        if let Some((supervisor, child, count)) = restart_count_of(e)
            && !matches!(e, Event::CrashLoopBackOff { .. })
        {
            reported.insert((supervisor, child), count as usize);
        }
    }
    let mut out = Vec::new();
    walk(tree, &mut |parent, child| {
        let n = counted
            .get(&(parent.name.as_str(), child.name.as_str()))
            .copied()
            .unwrap_or(0);
        if n != child.restarts as usize {
            out.push(Violation::new(
                "events_match_tree",
                format!(
                    "{}/{}: the tree counts {} restart(s), the events report {n}",
                    parent.name, child.name, child.restarts
                ),
                child_events(obs, &parent.name, &child.name, obs.elapsed),
            ));
        }
    });
    out
}

/// The supervisor, child and restart count an event reports, if it
/// reports one (a restart, a back-off, a failed start).
fn restart_count_of(e: &Event) -> Option<(&str, &str, u32)> {
    match e {
        Event::ChildRestarted {
            supervisor,
            child,
            restart_count,
            ..
        }
        | Event::CrashLoopBackOff {
            supervisor,
            child,
            restart_count,
            ..
        }
        | Event::ChildStartFailed {
            supervisor,
            child,
            restart_count,
            ..
        } => Some((supervisor.as_str(), child.as_str(), *restart_count)),
        _ => None,
    }
}

/// Calls `f(parent, child)` for every child of every supervisor below `node`.
fn walk<'a>(node: &'a TreeNode, f: &mut impl FnMut(&'a TreeNode, &'a TreeNode)) {
    for child in &node.children {
        f(node, child);
        walk(child, f);
    }
}

/// The last events (up to 12) about `child` of `supervisor` up to `until`.
fn child_events(obs: &Observation, supervisor: &str, child: &str, until: Duration) -> Vec<String> {
    let mut v: Vec<String> = obs
        .events
        .iter()
        .filter(|(t, _)| *t <= until)
        .filter(|(_, e)| match e {
            Event::ChildStarted {
                supervisor: s,
                child: c,
                ..
            }
            | Event::ChildExited {
                supervisor: s,
                child: c,
                ..
            }
            | Event::ChildStopped {
                supervisor: s,
                child: c,
                ..
            }
            | Event::ChildStartFailed {
                supervisor: s,
                child: c,
                ..
            } => s == supervisor && c == child,
            Event::ChildRestarted {
                child: id,
                supervisor: service,
                ..
            }
            | Event::CrashLoopBackOff {
                child: id,
                supervisor: service,
                ..
            }
            | Event::ChildIsolated {
                child: id,
                supervisor: service,
                ..
            }
            | Event::ChildCompleted {
                child: id,
                supervisor: service,
                ..
            } => service == supervisor && id == child,
            Event::SupervisorEscalated { supervisor: s, .. } => s == supervisor,
            _ => false,
        })
        .map(|(t, e)| describe(*t, e))
        .collect();
    let keep = v.len().saturating_sub(12);
    v.drain(..keep);
    v
}

fn execution_events(obs: &Observation, id: &str) -> Vec<String> {
    obs.events
        .iter()
        .filter(|(_, e)| match e {
            Event::ExecutionStarted { id: i, .. } | Event::ExecutionFinished { id: i, .. } => {
                i == id
            }
            _ => false,
        })
        .map(|(t, e)| describe(*t, e))
        .collect()
}

/// The journal lines about container `id` (up to the last 12).
fn journal_of(obs: &Observation, id: &str) -> Vec<String> {
    let mut v: Vec<String> = obs
        .journal
        .iter()
        .filter(|e| e.mentions(id))
        .map(Entry::to_string)
        .collect();
    let keep = v.len().saturating_sub(12);
    v.drain(..keep);
    v
}
