//! The overlay actor's memory: the state file it writes on every change,
//! and the start-up pass that removes what a crashed node left.

use super::{
    Attachment, OverlayState, Segment, SegmentKey,
    allocator::AddressPool,
    persist::{self, Persisted},
};
use crate::{
    overlay::{AttachPlan, Keep, SegmentPlan},
    runtime::ContainerId,
};
use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

/// What outlives one overlay actor of a node: whether one ran before (a
/// restart of the actor, not a node boot) and its last state, published
/// after every request. A restarted actor adopts that state as it is:
/// live attachments are not torn down (their containers still run).
#[derive(Clone, Default)]
pub struct OverlayMemory {
    started: Arc<AtomicBool>,
    last: Arc<tokio::sync::watch::Sender<Option<Arc<Remembered>>>>,
}

impl OverlayMemory {
    /// True from the second call on: the actor was restarted.
    pub(super) fn restarted(&self) -> bool {
        self.started.swap(true, Ordering::SeqCst)
    }
}

/// The overlay actor's state in a form a successor can adopt.
pub(super) struct Remembered {
    next_id: u64,
    segments: Vec<(SegmentKey, SegmentPlan, usize, bool)>,
    attachments: Vec<(SegmentKey, AttachPlan, Vec<String>, bool)>,
    prepared: Vec<PathBuf>,
}

impl OverlayState {
    pub(super) fn persisted(&self) -> Persisted {
        Persisted {
            next_id: self.next_id,
            segments: self.segments.values().map(|s| s.plan.clone()).collect(),
            attachments: self.attachments.values().map(|a| a.plan.clone()).collect(),
            prepared: self.prepared.iter().cloned().collect(),
        }
    }

    /// Publishes the state for a successor (see [`OverlayMemory`]).
    pub(super) fn remember(&self) {
        let Some(memory) = &self.memory else {
            return;
        };
        memory.last.send_replace(Some(Arc::new(Remembered {
            next_id: self.next_id,
            segments: self
                .segments
                .iter()
                .map(|(k, s)| (k.clone(), s.plan.clone(), s.holders, s.tearing_down))
                .collect(),
            attachments: self
                .attachments
                .values()
                .map(|a| {
                    (
                        a.key.clone(),
                        a.plan.clone(),
                        a.dns_search.clone(),
                        a.detaching,
                    )
                })
                .collect(),
            prepared: self.prepared.iter().cloned().collect(),
        })));
    }

    /// Takes over the state the previous actor published: segments with
    /// their holders, attachments, prepared namespaces, all left as they
    /// are; unfinished detaches and teardowns are retried.
    pub(super) async fn adopt(&mut self) {
        let Some(last) = self.memory.as_ref().and_then(|m| m.last.borrow().clone()) else {
            return;
        };
        self.next_id = last.next_id;
        for (key, plan, holders, tearing_down) in &last.segments {
            let mut addresses = None;
            if let Some(subnet) = plan.subnet {
                if let Err(e) = self.subnets.reserve(subnet) {
                    tracing::warn!(segment = %key, error = %e, "an adopted segment's subnet does not fit the pool");
                } else {
                    addresses = Some(AddressPool::new(&key.to_string(), subnet));
                }
            }
            self.segments.insert(
                key.clone(),
                Segment {
                    plan: plan.clone(),
                    holders: *holders,
                    addresses,
                    tearing_down: *tearing_down,
                    retries: 0,
                    set_up: true,
                },
            );
        }
        for (key, plan, dns_search, detaching) in &last.attachments {
            if let (Some((addr, _)), Some(seg)) = (plan.address, self.segments.get_mut(key))
                && let Some(pool) = seg.addresses.as_mut()
            {
                let _ = pool.reserve(addr);
            }
            self.attachments.insert(
                plan.container.clone(),
                Attachment {
                    key: key.clone(),
                    plan: plan.clone(),
                    dns_search: dns_search.clone(),
                    detaching: *detaching,
                    retries: 0,
                },
            );
        }
        self.prepared = last.prepared.iter().cloned().collect();
        tracing::info!(
            segments = self.segments.len(),
            attachments = self.attachments.len(),
            "overlay actor restarted: adopted the live segments and attachments"
        );
        let detaching: Vec<ContainerId> = self
            .attachments
            .iter()
            .filter(|(_, a)| a.detaching)
            .map(|(c, _)| c.clone())
            .collect();
        for c in detaching {
            let _ = self.detach(&c).await;
        }
        let tearing: Vec<SegmentKey> = self
            .segments
            .iter()
            .filter(|(_, s)| s.tearing_down)
            .map(|(k, _)| k.clone())
            .collect();
        for key in tearing {
            self.teardown_if_done(&key).await;
        }
        self.save();
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
