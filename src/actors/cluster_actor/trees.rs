//! Every member's supervision tree (`arbor tree --cluster`).

use super::*;

impl ClusterState {
    /// Gathers every member's tree (peers answer within 2 s, or are
    /// listed with why not) and replies, off the actor.
    pub(super) fn trees(&self, reply: RpcReplyPort<Vec<crate::cluster::NodeTree>>) {
        use crate::cluster::NodeTree;
        const PATIENCE: Duration = Duration::from_secs(2);
        let cells: HashMap<u64, ActorCell> =
            ractor::pg::get_scoped_members(&SCOPE.to_string(), &GROUP.to_string())
                .into_iter()
                .filter_map(|c| match c.get_id() {
                    ActorId::Remote { node_id, .. } => Some((node_id, c)),
                    ActorId::Local(_) => None,
                })
                .collect();
        // Each known member, with the cell of its open session if any.
        let peers: Vec<(String, String, Option<ActorCell>)> = self
            .membership
            .peers()
            .iter()
            .map(|(name, p)| {
                let cell = self
                    .sessions
                    .values()
                    .find(|s| s.node.as_deref() == Some(name.as_str()))
                    .and_then(|s| cells.get(&s.node_id).cloned());
                (name.clone(), p.state.to_string(), cell)
            })
            .collect();
        let (root, me) = (self.root.clone(), self.config.node_name.clone());
        let request = Envelope::new(&me, Body::TreeRequest).encode();
        tokio::spawn(async move {
            let own = match tokio::time::timeout(PATIENCE, root.snapshot()).await {
                Ok(Ok(t)) => (Some(t), None),
                Ok(Err(e)) => (None, Some(e.to_string())),
                Err(_) => (None, Some(format!("no answer within {PATIENCE:?}"))),
            };
            let mut out = vec![NodeTree {
                node: me,
                state: PeerState::Up.to_string(),
                is_self: true,
                tree: own.0,
                error: own.1,
            }];
            let asks = peers.into_iter().map(|(node, state, cell)| {
                let request = request.clone();
                async move {
                    let Some(cell) = cell else {
                        return NodeTree {
                            node,
                            state,
                            is_self: false,
                            tree: None,
                            error: Some("no session with it".into()),
                        };
                    };
                    let peer: ActorRef<ClusterMsg> = cell.into();
                    let answer = peer
                        .call(|r| ClusterMsg::RemoteCall(request, r), Some(PATIENCE))
                        .await;
                    let (tree, error) = match answer {
                        Ok(ractor::rpc::CallResult::Success(bytes)) => {
                            match Envelope::decode(&bytes) {
                                Ok(Envelope {
                                    body: Body::Tree { tree, error },
                                    ..
                                }) => match tree.map(serde_json::from_value::<crate::TreeNode>) {
                                    Some(Ok(t)) => (Some(t), None),
                                    Some(Err(e)) => {
                                        (None, Some(format!("an unreadable tree: {e}")))
                                    }
                                    None => (None, error),
                                },
                                Ok(_) => (None, Some("an unexpected answer".into())),
                                Err(e) => (None, Some(e.to_string())),
                            }
                        }
                        Ok(ractor::rpc::CallResult::Timeout) => {
                            (None, Some(format!("no answer within {PATIENCE:?}")))
                        }
                        Ok(ractor::rpc::CallResult::SenderError) => {
                            (None, Some("no answer".into()))
                        }
                        Err(e) => (None, Some(e.to_string())),
                    };
                    NodeTree {
                        node,
                        state,
                        is_self: false,
                        tree,
                        error,
                    }
                }
            });
            out.extend(futures::future::join_all(asks).await);
            let _ = reply.send(out);
        });
    }
}
