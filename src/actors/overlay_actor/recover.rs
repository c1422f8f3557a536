//! The overlay actor's memory: the state file it writes on every change,
//! and the start-up pass that removes what a crashed node left.

use super::{
    Attachment, OverlayState, Segment, SegmentKey,
    allocator::AddressPool,
    persist::{self, Persisted},
};
use crate::{overlay::Keep, runtime::ContainerId};

impl OverlayState {
    pub(super) fn persisted(&self) -> Persisted {
        Persisted {
            next_id: self.next_id,
            segments: self.segments.values().map(|s| s.plan.clone()).collect(),
            attachments: self.attachments.values().map(|a| a.plan.clone()).collect(),
            prepared: self.prepared.iter().cloned().collect(),
        }
    }

    pub(super) fn save(&self) {
        if let Some(path) = &self.config.state_file
            && let Err(e) = persist::save(path, &self.persisted())
        {
            tracing::warn!(error = %e, "failed to write the overlay state");
        }
    }

    /// Removes what a previous node left (the state file's entries, then
    /// unlisted links and namespaces with the prefix). What cannot be
    /// removed stays in the state, its subnet and address reserved, and is
    /// retried.
    pub(super) async fn recover(&mut self) {
        let old = match &self.config.state_file {
            Some(path) => match persist::load(path) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "failed to read the overlay state; sweeping by prefix only");
                    Persisted::default()
                }
            },
            None => Persisted::default(),
        };
        self.next_id = old.next_id;
        for plan in old.segments {
            let key = SegmentKey::new(&plan.name, &plan.isolation);
            let mut addresses = None;
            if let Some(subnet) = plan.subnet {
                if let Err(e) = self.subnets.reserve(subnet) {
                    tracing::warn!(segment = %key, error = %e, "a recovered segment's subnet does not fit the pool");
                } else {
                    addresses = Some(AddressPool::new(&key.to_string(), subnet));
                }
            }
            self.segments.insert(
                key,
                Segment {
                    plan,
                    holders: 0,
                    addresses,
                    tearing_down: true,
                    retries: 0,
                    set_up: true,
                },
            );
        }
        for plan in old.attachments {
            let key = self
                .segments
                .iter()
                .find(|(_, s)| s.plan.bridge == plan.bridge)
                .map(|(k, _)| k.clone())
                .unwrap_or_else(|| SegmentKey::from(plan.segment.as_str()));
            if let (Some((addr, _)), Some(seg)) = (plan.address, self.segments.get_mut(&key))
                && let Some(pool) = seg.addresses.as_mut()
            {
                let _ = pool.reserve(addr);
            }
            self.attachments.insert(
                plan.container.clone(),
                Attachment {
                    key,
                    plan,
                    dns_search: Vec::new(),
                    detaching: true,
                    retries: 0,
                },
            );
        }
        let stale: Vec<ContainerId> = self.attachments.keys().cloned().collect();
        for c in stale {
            if let Err(e) = self.detach(&c).await {
                tracing::warn!(error = %e, "failed to remove a previous node's attachment");
            }
        }
        for path in old.prepared {
            if let Err(e) = self.backend.remove_netns(&path).await {
                tracing::warn!(netns = %path.display(), error = %e, "failed to remove a previous node's namespace");
            }
        }
        let keys: Vec<SegmentKey> = self.segments.keys().cloned().collect();
        for key in keys {
            self.teardown_if_done(&key).await;
        }
        let keep = Keep {
            links: self
                .segments
                .values()
                .map(|s| s.plan.bridge.clone())
                .chain(self.attachments.values().map(|a| a.plan.veth.clone()))
                .collect(),
            netns: self
                .attachments
                .values()
                .filter_map(|a| a.plan.netns.clone())
                .collect(),
        };
        match self
            .backend
            .sweep(&self.config.prefix, &self.config.netns_dir, &keep)
            .await
        {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(?removed, "removed overlay leftovers of a previous node")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "failed to sweep overlay leftovers"),
        }
        self.save();
    }
}
