//! The last events a node published, with the time each was seen: what
//! happened before a client began to follow (`GET /v1/events/recent`, the
//! web view). One task owns them; it reads the bus like any subscriber.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::{Event, EventStream};

/// Events kept for [`crate::Node::recent_events`] (`GET /v1/events/recent`).
pub const RECENT: usize = 500;

/// One kept event: when it was seen, and the event's own fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecentEvent {
    /// When the node's event bus delivered it.
    pub at: DateTime<Utc>,
    /// The event (its `event` field names its kind).
    #[serde(flatten)]
    pub event: Event,
}

/// The task keeping the last [`RECENT`] events.
#[derive(Clone)]
pub(crate) struct RecentEvents {
    tx: mpsc::Sender<oneshot::Sender<Vec<RecentEvent>>>,
}

impl RecentEvents {
    /// Starts the task reading `events`; it ends when every handle is gone.
    pub(crate) fn start(mut events: EventStream) -> Self {
        let (tx, mut rx) = mpsc::channel::<oneshot::Sender<Vec<RecentEvent>>>(16);
        tokio::spawn(async move {
            let mut kept: VecDeque<RecentEvent> = VecDeque::with_capacity(RECENT);
            let mut bus_open = true;
            loop {
                tokio::select! {
                    e = events.recv(), if bus_open => match e {
                        Some(event) => {
                            if kept.len() == RECENT {
                                kept.pop_front();
                            }
                            kept.push_back(RecentEvent { at: Utc::now(), event });
                        }
                        None => bus_open = false,
                    },
                    q = rx.recv() => match q {
                        Some(reply) => {
                            let _ = reply.send(kept.iter().cloned().collect());
                        }
                        None => break,
                    },
                }
            }
        });
        Self { tx }
    }

    pub(crate) async fn get(&self) -> Vec<RecentEvent> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(tx).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}
