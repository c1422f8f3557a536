//! Operator calls: start, terminate, restart and delete children, and the
//! views of them (which, count, snapshot).

use ractor::{ActorRef, RpcReplyPort};

use super::{
    ChildCounts, ChildExit, ChildInfo, ChildKind, ChildSpec, ChildState, SupervisorError,
    SupervisorMsg, SupervisorState, TreeNode,
};
use crate::spec::RestartType;

impl SupervisorState {
    pub(super) async fn start_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        spec: ChildSpec,
    ) -> Result<(), SupervisorError> {
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
        let id = spec.id.to_string();
        let seq = self.insert(spec);
        if let Err(reason) = self.start(myself, seq).await {
            self.remove(seq);
            return Err(SupervisorError::StartFailed { id, reason });
        }
        Ok(())
    }

    pub(super) fn find(&self, id: &str) -> Result<u64, SupervisorError> {
        self.by_id
            .get(id)
            .copied()
            .ok_or_else(|| SupervisorError::NotFound(id.to_owned()))
    }

    pub(super) async fn terminate_child(&mut self, id: &str) -> Result<(), SupervisorError> {
        let seq = self.find(id)?;
        let slot = self.slot(seq);
        slot.retry = None;
        let waiting = matches!(
            slot.state,
            ChildState::Restarting | ChildState::CrashLoopBackOff
        );
        let temporary = slot.spec.restart == RestartType::Temporary;
        let was_running = self.stop_child(seq, "terminated by operator").await;
        if temporary {
            if let Some(slot) = self.remove(seq)
                && let Some(r) = slot.retained
            {
                r.release().await;
            }
        } else if was_running || waiting {
            self.slot(seq).state = ChildState::Stopped;
        }
        Ok(())
    }

    pub(super) async fn restart_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: &str,
    ) -> Result<(), SupervisorError> {
        let seq = self.find(id)?;
        self.stop_child(seq, "restarted by operator").await;
        let slot = self.slot(seq);
        slot.retry = None;
        slot.backoff_step = 0;
        if let Some(r) = slot.retained.take() {
            r.release().await;
        }
        self.start(myself, seq).await.map_err(|reason| {
            let slot = self.slot(seq);
            slot.state = ChildState::Stopped;
            slot.last_exit = Some(ChildExit::StartFailed {
                reason: reason.clone(),
            });
            SupervisorError::StartFailed {
                id: id.to_owned(),
                reason,
            }
        })
    }

    pub(super) async fn delete_child(&mut self, id: &str) -> Result<(), SupervisorError> {
        let seq = self.find(id)?;
        if self.children[seq].actor.is_some() {
            return Err(SupervisorError::Running(id.to_owned()));
        }
        if let Some(slot) = self.remove(seq)
            && let Some(r) = slot.retained
        {
            r.release().await;
        }
        Ok(())
    }

    pub(super) fn which_children(&self) -> Vec<ChildInfo> {
        self.children
            .iter()
            .map(|s| ChildInfo {
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
        for s in self.children.iter() {
            if s.actor.is_some() {
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
    /// theirs from a separate task, so this one keeps serving meanwhile.
    pub(super) fn snapshot(&self, reply: RpcReplyPort<TreeNode>) {
        let mut node = TreeNode {
            name: self.name.to_string(),
            kind: ChildKind::Supervisor,
            state: ChildState::Running,
            strategy: Some(self.flags.strategy),
            restart: None,
            restarts: 0,
            last_exit: None,
            children: Vec::new(),
        };
        let mut nested = Vec::new();
        for (i, s) in self.children.iter().enumerate() {
            node.children.push(TreeNode {
                name: s.spec.id.to_string(),
                kind: s.spec.kind,
                state: s.state,
                strategy: None,
                restart: Some(s.spec.restart),
                restarts: s.restart_count,
                last_exit: s.last_exit.clone(),
                children: Vec::new(),
            });
            if s.spec.kind == ChildKind::Supervisor
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
            for (i, cell) in nested {
                let child: ActorRef<SupervisorMsg> = cell.into();
                if let Ok(ractor::rpc::CallResult::Success(sub)) = child
                    .call(
                        SupervisorMsg::Snapshot,
                        Some(std::time::Duration::from_secs(5)),
                    )
                    .await
                {
                    let entry = &mut node.children[i];
                    entry.strategy = sub.strategy;
                    entry.children = sub.children;
                }
            }
            let _ = reply.send(node);
        });
    }
}
