//! Finding peers: the `--join` addresses and the members learned from
//! answers, each kept dialed (a jittered back-off after a failure), and the
//! node server's session events that say which are connected.

use super::*;

impl ClusterState {
    /// Adds the address of every member seen, or named by a peer, that no
    /// seed covers (and that this node is the one to dial).
    pub(super) fn learn(&mut self) {
        let members = self
            .membership
            .peers()
            .iter()
            .map(|(n, p)| (n.clone(), p.addr.clone()))
            .chain(self.heard_of.iter().map(|(n, a)| (n.clone(), a.clone())))
            .collect::<Vec<_>>();
        for (name, addr) in members {
            // Of two nodes that learned of each other, the one with the
            // smaller name dials: both dialing at once would make
            // ractor_cluster close one of the two sessions.
            if name.as_str() < self.config.node_name.as_str() {
                continue;
            }
            let known = self
                .seeds
                .iter()
                .any(|s| s.node.as_deref() == Some(name.as_str()) || s.addr == addr);
            if !known && !addr.is_empty() {
                self.seeds.push(Seed {
                    addr: addr.clone(),
                    session: None,
                    pending: None,
                    dialing: false,
                    node: Some(name),
                    failures: 0,
                    last_error: None,
                    scheduled: false,
                    learned: true,
                });
            }
        }
    }

    /// Whether a session with the node at seed `i` is open, whoever dialed.
    pub(super) fn covered(&self, i: usize) -> bool {
        let s = &self.seeds[i];
        s.session.is_some()
            || self.sessions.values().any(|x| {
                x.node.is_some()
                    && (x.node == s.node || x.connection_string.as_deref() == Some(&s.addr))
            })
    }

    pub(super) fn dial(&mut self, myself: &ActorRef<ClusterMsg>, i: usize) {
        let Some(seed) = self.seeds.get_mut(i) else {
            return;
        };
        seed.scheduled = false;
        if seed.dialing {
            return;
        }
        if self.covered(i) {
            return;
        }
        let seed = &mut self.seeds[i];
        seed.dialing = true;
        let addr = seed.addr.clone();
        let (server, me) = (self.server.clone(), myself.clone());
        let user_timeout = self.config.timing.suspect_after + self.config.timing.down_grace;
        let tls = self.config.tls.as_ref().map(|t| t.client.clone());
        tokio::spawn(async move {
            let result = async {
                let target = tokio::net::lookup_host(&addr)
                    .await
                    .map_err(|e| format!("failed to resolve {addr}: {e}"))?
                    .next()
                    .ok_or_else(|| format!("failed to resolve {addr}: no address"))?;
                let stream = dial::connect(target, user_timeout)
                    .await
                    .map_err(|e| format!("failed to connect to {addr}: {e}"))?;
                let peer_addr = stream.peer_addr().map_err(|e| e.to_string())?;
                let local_addr = stream.local_addr().map_err(|e| e.to_string())?;
                let stream = match tls {
                    None => ractor_cluster::NetworkStream::Raw {
                        peer_addr,
                        local_addr,
                        stream,
                    },
                    Some(client) => {
                        let name = crate::cluster::tls::server_name(&addr)?;
                        let handshake =
                            tokio_rustls::TlsConnector::from(client).connect(name, stream);
                        let stream = tokio::time::timeout(
                            crate::cluster::listen::HANDSHAKE_TIMEOUT,
                            handshake,
                        )
                        .await
                        .map_err(|_| {
                            format!(
                                "no TLS handshake with {addr} within {:?}",
                                crate::cluster::listen::HANDSHAKE_TIMEOUT
                            )
                        })?
                        .map_err(|e| format!("TLS with {addr} failed: {e}"))?;
                        ractor_cluster::NetworkStream::TlsClient {
                            peer_addr,
                            local_addr,
                            stream,
                        }
                    }
                };
                server
                    .cast(NodeServerMessage::ConnectionOpened {
                        stream: Box::new(stream),
                        is_server: false,
                    })
                    .map_err(|e| format!("the node server is gone: {e}"))?;
                Ok(peer_addr.to_string())
            }
            .await;
            let _ = me.cast(ClusterMsg::Dialed(i, result));
        });
    }

    pub(super) fn retry_later(&mut self, myself: &ActorRef<ClusterMsg>, i: usize) {
        let seed = &mut self.seeds[i];
        if seed.scheduled {
            return;
        }
        seed.scheduled = true;
        self.random = self
            .random
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = dial::backoff(seed.failures, self.random);
        seed.failures = seed.failures.saturating_add(1);
        myself.send_after(delay, move || ClusterMsg::Dial(i));
    }

    pub(super) fn dialed(
        &mut self,
        myself: &ActorRef<ClusterMsg>,
        i: usize,
        result: Result<String, String>,
    ) {
        let seed = &mut self.seeds[i];
        seed.dialing = false;
        match result {
            Ok(peer_addr) => {
                // The session may have been reported before this message.
                let known = self
                    .sessions
                    .iter()
                    .find(|(_, s)| !s.is_server && s.peer_addr == peer_addr)
                    .map(|(id, _)| *id);
                let seed = &mut self.seeds[i];
                match known {
                    Some(id) => seed.session = Some(id),
                    None => seed.pending = Some(peer_addr),
                }
            }
            Err(e) => {
                if seed.last_error.as_deref() != Some(&e) || seed.failures == 0 {
                    tracing::warn!(seed = %seed.addr, error = %e, "cluster: failed to join");
                }
                seed.last_error = Some(e);
                self.retry_later(myself, i);
            }
        }
        self.publish();
    }

    pub(super) fn session(
        &mut self,
        myself: &ActorRef<ClusterMsg>,
        event: SessionEvent,
        info: NodeServerSessionInformation,
    ) {
        let id = info.actor.get_id();
        match event {
            SessionEvent::Opened => {
                if !info.is_server
                    && let Some(seed) = self
                        .seeds
                        .iter_mut()
                        .find(|s| s.pending.as_deref() == Some(&info.peer_addr))
                {
                    seed.pending = None;
                    seed.session = Some(id);
                }
                self.sessions.insert(
                    id,
                    Session {
                        node_id: info.node_id,
                        peer_addr: info.peer_addr,
                        is_server: info.is_server,
                        node: None,
                        connection_string: None,
                    },
                );
            }
            SessionEvent::Authenticated => {
                let name = info.peer_name.as_ref().map(|n| {
                    let node = n.name.split('@').next().unwrap_or(&n.name).to_string();
                    (node, n.connection_string.clone())
                });
                let s = self.sessions.entry(id).or_insert_with(|| Session {
                    node_id: info.node_id,
                    peer_addr: info.peer_addr.clone(),
                    is_server: info.is_server,
                    node: None,
                    connection_string: None,
                });
                if let Some((node, conn)) = name {
                    tracing::info!(node = %node, peer = %info.peer_addr, "cluster: session authenticated");
                    s.node = Some(node.clone());
                    s.connection_string = Some(conn);
                    if let Some(seed) = self.seeds.iter_mut().find(|x| x.session == Some(id)) {
                        seed.node = Some(node);
                        seed.failures = 0;
                        seed.last_error = None;
                    }
                }
            }
            SessionEvent::Closed => {
                let gone = self.sessions.remove(&id);
                let authenticated = gone.as_ref().is_some_and(|s| s.node.is_some());
                for i in 0..self.seeds.len() {
                    if self.seeds[i].session == Some(id) {
                        self.seeds[i].session = None;
                        if !authenticated {
                            // Closed before the handshake ended: a wrong
                            // cookie, a duplicate connection, or not an
                            // arbor node.
                            self.seeds[i].last_error = Some(if self.config.tls.is_some() {
                                "the session closed before it authenticated (wrong cookie, or the peer refused this node's TLS certificate)".into()
                            } else {
                                "the session closed before it authenticated (wrong cookie, or the peer wants TLS)".into()
                            });
                        }
                        self.retry_later(myself, i);
                    }
                }
                if let Some(Session {
                    node: Some(node), ..
                }) = gone
                {
                    tracing::info!(node = %node, "cluster: session closed");
                }
            }
        }
        self.publish();
    }
}
