//! Operator calls: start, terminate, restart and delete children (queued
//! as work on the children's lanes), and the views of them (which, count,
//! snapshot), answered at once whatever is under way.

use std::time::Duration;

use futures::future::join_all;
use ractor::RpcReplyPort;

use super::{
    ChildCounts, ChildInfo, ChildKind, ChildReply, ChildSpec, ChildState, Msg, SupervisorError,
    SupervisorMsg, SupervisorState, TreeNode,
    slots::Key,
    work::{Reply, Subject},
};
use crate::spec::Strategy;

/// How long a snapshot waits for a nested supervisor's own snapshot.
const NESTED_SNAPSHOT_PATIENCE: Duration = Duration::from_secs(2);

impl SupervisorState {
    /// Checks a new child; the error a `start_child` of it answers.
    fn admit(&self, spec: &ChildSpec) -> Result<(), SupervisorError> {
        if self.by_id.contains_key(&spec.id) {
            return Err(SupervisorError::AlreadyPresent(spec.id.to_string()));
        }
        if let Some(max) = self.max_children
            && self.children.len() >= max
        {
            return Err(SupervisorError::MaxChildren(max));
        }
        let errors = spec.validate();
        if !errors.is_empty() {
            return Err(SupervisorError::InvalidSpec {
                name: self.name.to_string(),
                errors: crate::spec::SpecErrors(errors),
            });
        }
        Ok(())
    }

    /// The lanes a start of new children holds: their own, or every child
    /// under `one_for_all` and `rest_for_one` (a new child joins the end of
    /// every group, so it waits for a group restart under way).
    fn start_lanes(&self, new: &[Key]) -> Vec<Key> {
        match self.flags.strategy {
            Strategy::OneForAll | Strategy::RestForOne => self.children.keys().collect(),
            Strategy::OneForOne | Strategy::Dynamic => new.to_vec(),
        }
    }

    pub(super) fn start_child(&mut self, spec: ChildSpec, reply: Option<ChildReply>) {
        if let Err(e) = self.admit(&spec) {
            match reply {
                Some(reply) => {
                    let _ = reply.send(Err(e));
                }
                None => tracing::warn!(supervisor = %self.name, error = %e, "start_child failed"),
            }
            return;
        }
        let key = self.insert(spec, ChildState::Starting);
        let lanes = self.start_lanes(&[key]);
        let reply = match reply {
            Some(r) => Reply::One(r),
            None => Reply::Log,
        };
        self.works
            .enqueue_with(lanes, Subject::Start { keys: vec![key] }, reply);
    }

    pub(super) fn start_children(
        &mut self,
        specs: Vec<ChildSpec>,
        reply: RpcReplyPort<Vec<Result<(), SupervisorError>>>,
    ) {
        let mut refused = Vec::new();
        let mut keys = Vec::new();
        for (i, spec) in specs.into_iter().enumerate() {
            match self.admit(&spec) {
                Ok(()) => keys.push((i, self.insert(spec, ChildState::Starting))),
                Err(e) => refused.push((i, e)),
            }
        }
        let keys: Vec<Key> = keys.into_iter().map(|(_, k)| k).collect();
        let lanes = self.start_lanes(&keys);
        let work = self
            .works
            .enqueue_with(lanes, Subject::Start { keys }, Reply::Many(reply));
        self.works.refuse(work, refused);
    }

    fn find(&self, id: &str) -> Result<Key, SupervisorError> {
        self.by_id
            .get(id)
            .copied()
            .ok_or_else(|| SupervisorError::NotFound(id.to_owned()))
    }

    /// Queues an operator call on child `id`'s lane.
    fn operate(
        &mut self,
        id: &str,
        reply: ChildReply,
        subject: impl FnOnce(Key, std::sync::Arc<str>) -> Subject,
    ) {
        match self.find(id) {
            Ok(key) => {
                self.works
                    .enqueue_with(vec![key], subject(key, id.into()), Reply::One(reply));
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    pub(super) fn terminate_child(&mut self, id: &str, reply: ChildReply) {
        self.operate(id, reply, |key, id| Subject::Terminate { key, id });
    }

    pub(super) fn restart_child(&mut self, id: &str, reply: ChildReply) {
        self.operate(id, reply, |key, id| Subject::Restart { key, id });
    }

    pub(super) fn delete_child(&mut self, id: &str, reply: ChildReply) {
        self.operate(id, reply, |key, id| Subject::Delete { key, id });
    }

    /// Gives child `spec.id` this spec for its next starts (an operator
    /// resizing a nested service keeps its restarts on the new size).
    pub(super) fn replace_child_spec(&mut self, spec: ChildSpec) -> Result<(), SupervisorError> {
        let key = *self
            .by_id
            .get(&spec.id)
            .ok_or_else(|| SupervisorError::NotFound(spec.id.to_string()))?;
        let slot = self
            .slot_mut(key)
            .ok_or_else(|| SupervisorError::NotFound(spec.id.to_string()))?;
        slot.spec = spec;
        Ok(())
    }

    pub(super) fn which_children(&self) -> Vec<ChildInfo> {
        self.children
            .iter()
            .map(|(_, s)| ChildInfo {
                id: s.spec.id.to_string(),
                kind: s.spec.kind,
                state: s.state,
                restart: s.spec.restart,
                restart_count: s.restart_count,
                last_exit: s.last_exit.clone(),
                actor: s.actor.clone(),
            })
            .collect()
    }

    pub(super) fn count_children(&self) -> ChildCounts {
        let mut counts = ChildCounts {
            specs: self.children.len(),
            ..ChildCounts::default()
        };
        for (_, s) in self.children.iter() {
            // As OTP: an actor that is alive (one that unlinked itself and
            // died is not, though no exit ever reached the supervisor).
            if s.actor
                .as_ref()
                .is_some_and(|c| c.get_status() < ractor::ActorStatus::Stopping)
            {
                counts.active += 1;
            }
            if s.spec.kind == ChildKind::Supervisor {
                counts.supervisors += 1;
            } else {
                counts.workers += 1;
            }
        }
        counts
    }

    /// Replies with this supervisor's node; nested supervisors are asked for
    /// theirs from a separate task (all at once, each with a deadline), so
    /// this one keeps serving meanwhile.
    pub(super) fn snapshot(&self, reply: RpcReplyPort<TreeNode>) {
        let mut node = TreeNode {
            name: self.name.to_string(),
            kind: ChildKind::Supervisor,
            state: ChildState::Running,
            strategy: Some(self.flags.strategy),
            restart: None,
            restarts: 0,
            last_exit: None,
            next_restart: None,
            ready: None,
            status: None,
            children: Vec::new(),
        };
        let mut nested = Vec::new();
        for (i, (_, s)) in self.children.iter().enumerate() {
            node.children.push(TreeNode {
                name: s.spec.id.to_string(),
                kind: s.spec.kind,
                state: s.state,
                strategy: None,
                restart: Some(s.spec.restart),
                restarts: s.restart_count,
                last_exit: s.last_exit.clone(),
                next_restart: s
                    .next_restart
                    .filter(|_| s.state == ChildState::CrashLoopBackOff),
                ready: (s.spec.kind == ChildKind::Container)
                    .then_some(s.state == ChildState::Running && s.ready),
                status: s.status.clone(),
                children: s
                    .spec
                    .nested
                    .as_deref()
                    .filter(|_| s.state != ChildState::Running)
                    .map(|n| down_children(n, s.state))
                    .unwrap_or_default(),
            });
            if s.spec.kind == ChildKind::Supervisor
                && s.state == ChildState::Running
                && let Some(cell) = &s.actor
            {
                nested.push((i, cell.clone()));
            }
        }
        if nested.is_empty() {
            let _ = reply.send(node);
            return;
        }
        tokio::spawn(async move {
            let asks = nested.into_iter().map(|(i, cell)| async move {
                let child: ractor::ActorRef<SupervisorMsg> = cell.into();
                let sub = child
                    .call(
                        |r| SupervisorMsg(Msg::Snapshot(r)),
                        Some(NESTED_SNAPSHOT_PATIENCE),
                    )
                    .await;
                (i, sub)
            });
            for (i, sub) in join_all(asks).await {
                if let Ok(ractor::rpc::CallResult::Success(sub)) = sub {
                    let entry = &mut node.children[i];
                    entry.strategy = sub.strategy;
                    entry.children = sub.children;
                }
            }
            let _ = reply.send(node);
        });
    }
}

/// The children of a nested supervisor that does not run, from its spec:
/// none of them runs (shown so that a failed or stopped service still
/// shows its replicas): `stopped` under a stopped supervisor, `shutdown`
/// under one that failed or shut down.
fn down_children(spec: &super::SupervisorSpec, parent: ChildState) -> Vec<TreeNode> {
    let state = match parent {
        ChildState::Stopped | ChildState::Stopping => ChildState::Stopped,
        // A start that waits (for the services it depends on).
        ChildState::Starting => ChildState::Starting,
        _ => ChildState::Shutdown,
    };
    spec.children
        .iter()
        .map(|c| TreeNode {
            name: c.id.to_string(),
            kind: c.kind,
            state,
            strategy: c.nested.as_ref().map(|n| n.flags.strategy),
            restart: Some(c.restart),
            restarts: 0,
            last_exit: None,
            next_restart: None,
            ready: (c.kind == ChildKind::Container).then_some(false),
            status: None,
            children: c
                .nested
                .as_deref()
                .map(|n| down_children(n, parent))
                .unwrap_or_default(),
        })
        .collect()
}
