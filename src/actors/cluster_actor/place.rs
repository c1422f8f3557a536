//! Placing cluster services: the majority, when this node knows enough to
//! place, the placement sent to the deployment actor under a new epoch,
//! what is kept in `<state-dir>/cluster.json`, and leaving.

use super::*;

impl ClusterState {
    /// Members counted for the majority: (live, known), this node included.
    pub(super) fn quorum(&self) -> (usize, usize) {
        let live = 1 + self
            .membership
            .peers()
            .values()
            .filter(|p| p.state != PeerState::Down)
            .count();
        (live, 1 + self.membership.peers().len())
    }

    /// Whether this node knows enough to place: it has heard a peer, or
    /// has no peer to hear from, or waited as long as a peer takes to be
    /// found down.
    pub(super) fn settled(&self) -> bool {
        let t = self.config.timing;
        self.heard
            || (self.config.join.is_empty() && self.membership.peers().is_empty())
            || self.started.elapsed() >= t.suspect_after + t.down_grace
    }

    /// Computes the placement from the current view and, when this node's
    /// share or the fence changed, sends it to the deployment actor under
    /// a new epoch.
    pub(super) fn replan(&mut self, myself: &ActorRef<ClusterMsg>) {
        self.replan_if(myself, false)
    }

    /// [`Self::replan`]; `urgent` skips the wait for the view to hold
    /// still (a peer said it leaves: nothing more is coming).
    pub(super) fn replan_if(&mut self, myself: &ActorRef<ClusterMsg>, urgent: bool) {
        if self.leaving
            || !self.settled()
            || (!urgent && self.last_change.elapsed() < self.config.timing.interval)
        {
            // The next tick tries again.
            return;
        }
        let spec = self.deployed.borrow_and_update().spec.clone();
        let services: Vec<(&str, &crate::spec::Placement)> = spec
            .services
            .iter()
            .filter_map(|(n, s)| {
                Some((n.as_str(), s.placement.as_ref().filter(|p| p.is_cluster())?))
            })
            .collect();
        let none = std::collections::BTreeMap::new();
        let t = self.config.timing;
        // Back from a fence (or placing for the first time): place over
        // every known member for a while (see `placement`).
        let holding = self.plan.as_ref().is_none_or(|p| p.fenced)
            || self
                .unfenced_at
                .is_some_and(|at| at.elapsed() < t.suspect_after + t.down_grace);
        let mut candidates = vec![Candidate {
            name: &self.config.node_name,
            labels: &self.config.labels,
        }];
        for (name, p) in self.membership.peers() {
            if p.state != PeerState::Down || holding {
                candidates.push(Candidate {
                    name,
                    labels: self.labels.get(name).unwrap_or(&none),
                });
            }
        }
        let (live, known) = self.quorum();
        let mut plan = placement::plan(&candidates, live, known, services, 0);
        if !plan.fenced && self.plan.as_ref().is_none_or(|p| p.fenced) {
            self.unfenced_at = Some(Instant::now());
        }
        let me = &self.config.node_name;
        if let Some(last) = &self.plan
            && last.fenced == plan.fenced
            && last.services == plan.services
        {
            return;
        }
        let share = plan.share(me);
        let unchanged_here = match &self.plan {
            Some(last) => last.fenced == plan.fenced && last.share(me) == share,
            None => !plan.fenced && share.is_empty(),
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let applied = self.deployed.borrow().epoch;
        plan.epoch = now_ms
            .max(applied + 1)
            .max(self.plan.as_ref().map_or(0, |p| p.epoch + 1));
        let epoch = plan.epoch;
        if !unchanged_here {
            self.save(Some((epoch, share.clone())));
            self.events.publish(Event::PlacementChanged {
                epoch,
                fenced: plan.fenced,
                replicas: share.clone(),
            });
            let (deployment, me) = (self.deployment.clone(), myself.clone());
            tokio::spawn(async move {
                let result = deployment
                    .call(
                        |reply| DeploymentMsg::Place(epoch, share, reply),
                        // Stops wait for the replicas' graces.
                        Some(Duration::from_secs(15 * 60)),
                    )
                    .await;
                match result {
                    Ok(Ok(report)) => tracing::debug!(epoch, ?report, "cluster: placement applied"),
                    Ok(Err(e)) => {
                        tracing::warn!(epoch, error = %e, "cluster: failed to apply the placement");
                        let _ = me.cast(ClusterMsg::PlaceFailed(epoch));
                    }
                    Err(e) => {
                        tracing::warn!(epoch, error = %e, "cluster: failed to apply the placement");
                        let _ = me.cast(ClusterMsg::PlaceFailed(epoch));
                    }
                }
            });
        }
        self.plan = Some(plan);
        self.publish();
    }

    /// Writes the members ever seen to the state file.
    pub(super) fn remember(&self) {
        self.save(None);
    }

    /// Writes the state file: the members ever seen, and this node's share
    /// (`share`, or the one in the file).
    pub(super) fn save(&self, share: Option<(u64, std::collections::BTreeMap<String, usize>)>) {
        let Some(path) = &self.config.state_file else {
            return;
        };
        let mut r = crate::cluster::Remembered::read(path).unwrap_or_default();
        r.members = self
            .membership
            .peers()
            .iter()
            .map(|(n, p)| (n.clone(), p.addr.clone()))
            .collect();
        if let Some((epoch, placed)) = share {
            r.epoch = epoch;
            r.placed = placed;
        }
        if let Err(e) = r.write(path) {
            tracing::warn!(file = %path.display(), error = %e, "cluster: failed to remember the members");
        }
    }

    /// `node` said it leaves: forget it and place its replicas now.
    pub(super) fn peer_left(&mut self, myself: &ActorRef<ClusterMsg>, node: &str) {
        self.left.insert(node.to_string(), Instant::now());
        self.membership.forget(node);
        self.labels.remove(node);
        self.heard_of.remove(node);
        self.seeds
            .retain(|s| !(s.learned && s.node.as_deref() == Some(node)));
        self.remember();
        self.events.publish(Event::NodeLeft {
            node: node.to_string(),
        });
        self.replan_if(myself, true);
        self.publish();
    }

    /// Forgets `node`, which must be `down`: a member that answers is
    /// stopped gracefully instead (it leaves by itself).
    pub(super) fn forget(
        &mut self,
        myself: &ActorRef<ClusterMsg>,
        node: &str,
    ) -> Result<(), crate::cluster::ForgetError> {
        use crate::cluster::ForgetError;
        let Some(p) = self.membership.peers().get(node) else {
            return Err(ForgetError::Unknown(node.to_string()));
        };
        if p.state != PeerState::Down {
            return Err(ForgetError::NotDown {
                node: node.to_string(),
                state: p.state.to_string(),
            });
        }
        tracing::info!(node, "cluster: forgetting a member that is down");
        self.peer_left(myself, node);
        Ok(())
    }

    /// Tells every peer this node leaves; replies once they answered, or
    /// after a second.
    pub(super) fn leave(&mut self, reply: RpcReplyPort<()>) {
        self.leaving = true;
        let bye = Envelope::new(&self.config.node_name, Body::Leaving).encode();
        let peers: Vec<ActorRef<ClusterMsg>> =
            ractor::pg::get_scoped_members(&SCOPE.to_string(), &GROUP.to_string())
                .into_iter()
                .filter(|c| !c.get_id().is_local())
                .map(ActorRef::from)
                .collect();
        tracing::info!(peers = peers.len(), "cluster: leaving");
        tokio::spawn(async move {
            let asks = peers.into_iter().map(|p| {
                let bye = bye.clone();
                async move {
                    let _ = p
                        .call(
                            |r| ClusterMsg::RemoteCall(bye, r),
                            Some(Duration::from_secs(1)),
                        )
                        .await;
                }
            });
            futures::future::join_all(asks).await;
            let _ = reply.send(());
        });
    }
}

/// The members an earlier run of this node saw (name -> address); none
/// when the file is missing or unreadable (said in the log).
pub(super) fn remembered(config: &ClusterConfig) -> std::collections::BTreeMap<String, String> {
    config
        .state_file
        .as_deref()
        .and_then(crate::cluster::Remembered::read)
        .map(|r| r.members)
        .unwrap_or_default()
}
