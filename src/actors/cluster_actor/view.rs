//! This node's view of the cluster, published for the API.

use super::*;

impl ClusterState {
    /// Publishes this node's view.
    pub(super) fn publish(&self) {
        let now = Instant::now();
        let t = self.membership.timing();
        let mut members = vec![MemberView {
            name: self.config.node_name.clone(),
            addr: self.config.advertise.clone(),
            state: PeerState::Up.to_string(),
            is_self: true,
            connected: true,
            rtt_ms: None,
            last_seen_ms_ago: None,
            missed: 0,
            missed_total: 0,
            answered: 0,
        }];
        members.extend(self.membership.peers().iter().map(|(name, p)| {
            MemberView {
                name: name.clone(),
                addr: p.addr.clone(),
                state: p.state.to_string(),
                is_self: false,
                connected: self
                    .sessions
                    .values()
                    .any(|s| s.node.as_deref() == Some(name.as_str())),
                rtt_ms: Some(p.rtt.as_secs_f64() * 1e3),
                last_seen_ms_ago: Some(now.saturating_duration_since(p.last_ok).as_millis() as u64),
                missed: p.missed,
                missed_total: p.missed_total,
                answered: p.answered,
            }
        }));
        let seeds = (0..self.seeds.len())
            .filter(|i| !self.seeds[*i].learned)
            .map(|i| {
                let s = &self.seeds[i];
                SeedView {
                    addr: s.addr.clone(),
                    node: s.node.clone(),
                    connected: self.covered(i),
                    failures: s.failures,
                    last_error: s.last_error.clone(),
                }
            })
            .collect();
        let (live, known) = self.quorum();
        self.view.send_replace(Some(ClusterView {
            node: self.config.node_name.clone(),
            addr: self.config.advertise.clone(),
            labels: self.config.labels.clone(),
            live,
            known,
            fenced: self.plan.as_ref().is_some_and(|p| p.fenced),
            epoch: self.plan.as_ref().map(|p| p.epoch),
            placements: self
                .plan
                .as_ref()
                .map(|p| p.services.clone())
                .unwrap_or_default(),
            heartbeat: HeartbeatView {
                interval_ms: t.interval.as_millis() as u64,
                suspect_after_ms: t.suspect_after.as_millis() as u64,
                down_grace_ms: t.down_grace.as_millis() as u64,
            },
            members,
            seeds,
        }));
    }
}
