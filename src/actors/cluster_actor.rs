//! The node's cluster member (`node:cluster`): the one remotable actor of a
//! node.
//!
//! It starts ractor_cluster's `NodeServer` as its own linked child (so
//! every peer session lives under `node:cluster` in the tree) and accepts
//! peers on the cluster port itself ([`crate::cluster::listen`]), joins the
//! `pg` group [`GROUP`](crate::cluster::GROUP) through which peers find
//! it, keeps each `--join` address (and each member it learns of) dialed,
//! pings every peer's cluster actor once per heartbeat interval, and
//! places cluster services: after each tick, when the placement of this
//! node's share changed, it sends it to the deployment actor under a new
//! epoch. Peer state changes
//! ([`Membership`]) become `node_up` / `node_suspect` / `node_down` events,
//! and the node's [`ClusterView`] is published on a watch channel that the
//! API reads without calling the actor.
//!
//! Messages from peers arrive as bytes ([`ClusterMsg::Remote`],
//! [`ClusterMsg::RemoteCall`]) and are decoded here
//! ([`Envelope::decode`]); a bad frame is logged and dropped.
//!
//! On failure, hook by hook:
//! - `pre_start`: fails when the cluster port cannot be bound (taken, an
//!   address not on this machine) or the node server cannot start; the root supervisor then
//!   restarts `node:cluster` within its intensity, and the agent reports
//!   the root giving up. The agent checks the port before it starts the
//!   node, so that the usual mistake is a clear start-up error instead.
//! - `handle`: never returns an error; a peer's bad message, a failed dial,
//!   an unanswered ping are logged and counted.
//! - `handle_supervisor_evt`: the node server (or its listener) dying is a
//!   failure of this actor: it fails too, and is restarted with a new
//!   server.
//! - `post_stop`: stops the accept loop and kills the node server and its
//!   sessions (its listener's accept loop does not take a stop message
//!   while it waits), which closes every peer connection; peers see this
//!   node go silent. Replicas it placed keep running: the deployment
//!   actor owns them; a restarted cluster actor places again.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
    message::{BoxedDowncastErr, SerializedMessage},
};
use ractor_cluster::{
    NodeEventSubscription, NodeServer, NodeServerMessage, node::NodeServerSessionInformation,
};
use tokio::sync::watch;

use crate::{
    actors::deployment_actor::{Deployed, DeploymentMsg},
    cluster::{
        ClusterConfig, ClusterView, GROUP, HeartbeatView, MAX_FRAME, MemberView, SCOPE, SeedView,
        dial,
        envelope::{Body, Envelope},
        membership::{Membership, PeerState, Transition},
        placement::{self, Candidate, Plan},
    },
    events::{Event, EventBus},
    part::Part,
};

mod place;
mod seeds;
mod trees;
mod view;

/// Messages of the cluster actor. `Remote` and `RemoteCall` are what peers
/// send (as bytes, see [`Envelope`]); the others are local.
pub enum ClusterMsg {
    /// A one-way message from a peer.
    Remote(Vec<u8>),
    /// A call from a peer (a heartbeat), answered with an envelope.
    RemoteCall(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// Time to ping every peer and judge silences.
    Tick,
    /// A ping's outcome.
    Answered {
        /// The ractor_cluster node id of the session it went through.
        node_id: u64,
        /// When it was sent.
        sent: Instant,
        /// The answer's bytes, or why there was none.
        result: Result<Vec<u8>, String>,
    },
    /// Dial the `--join` address at this index (if no session covers it).
    Dial(usize),
    /// A dial's outcome: the peer address of the connection opened.
    Dialed(usize, Result<String, String>),
    /// A session event from the node server.
    Session(SessionEvent, Box<NodeServerSessionInformation>),
    /// The applied spec changed (its cluster-placed services may have).
    SpecChanged,
    /// The deployment actor did not apply the placement of this epoch.
    PlaceFailed(u64),
    /// Every member's supervision tree, this node first.
    Trees(RpcReplyPort<Vec<crate::cluster::NodeTree>>),
    /// An operator forgets a member that is down for good (it no longer
    /// counts for the majority).
    Forget(
        String,
        RpcReplyPort<Result<(), crate::cluster::ForgetError>>,
    ),
    /// Fault injection for tests: panic in the handler.
    #[doc(hidden)]
    InjectPanic,
    /// The node stops gracefully: tell the peers (answered once they
    /// acknowledged, or after a second), stop answering heartbeats.
    Leave(RpcReplyPort<()>),
}

/// What happened to a peer session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    /// A connection opened (not yet authenticated).
    Opened,
    /// It authenticated (the cookie matched).
    Authenticated,
    /// It closed.
    Closed,
}

/// The variant name of arbor's envelopes in ractor_cluster's frames.
const VARIANT: &str = "arbor";

impl ractor::Message for ClusterMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            Self::Remote(args) => Ok(SerializedMessage::Cast {
                variant: VARIANT.into(),
                args,
                metadata: None,
            }),
            Self::RemoteCall(args, reply) => Ok(SerializedMessage::Call {
                variant: VARIANT.into(),
                args,
                reply,
                metadata: None,
            }),
            _ => Err(BoxedDowncastErr),
        }
    }

    // Keeps the bytes as they came: decoding happens in `handle`, where
    // a bad frame is an error, not a panic.
    fn deserialize(bytes: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        match bytes {
            SerializedMessage::Cast { args, .. } => Ok(Self::Remote(args)),
            SerializedMessage::Call { args, reply, .. } => Ok(Self::RemoteCall(args, reply)),
            SerializedMessage::CallReply(..) => Err(BoxedDowncastErr),
        }
    }
}

/// What the cluster actor starts with.
pub struct ClusterArgs {
    /// How to join.
    pub config: ClusterConfig,
    /// Where `node_*` events go.
    pub events: EventBus,
    /// Where the view is published.
    pub view: Arc<watch::Sender<Option<ClusterView>>>,
    /// Where placements are applied.
    pub deployment: Part<DeploymentMsg>,
    /// The applied spec (which services the cluster places).
    pub deployed: watch::Receiver<Arc<Deployed>>,
    /// The node's root supervisor (its tree is what peers ask for).
    pub root: crate::actors::supervisor_actor::SupervisorRef,
    /// The handle the node reaches this actor through.
    pub me: Part<ClusterMsg>,
}

/// One `--join` address.
struct Seed {
    addr: String,
    /// The session our last dial opened, until it closes.
    session: Option<ActorId>,
    /// The peer address of our last dial's connection, until its session
    /// is known.
    pending: Option<String>,
    dialing: bool,
    /// The node found there.
    node: Option<String>,
    failures: u32,
    last_error: Option<String>,
    /// Whether a `Dial` is scheduled.
    scheduled: bool,
    /// A member's address learned from its answers (not a `--join`): kept
    /// dialed too, so that sessions come back after a cut whoever
    /// dialed them first.
    learned: bool,
}

/// A peer session as the node server reported it.
struct Session {
    node_id: u64,
    peer_addr: String,
    is_server: bool,
    /// `name` of `name@host`, once authenticated.
    node: Option<String>,
    /// The peer's advertised `host:port`, once authenticated.
    connection_string: Option<String>,
}

/// The cluster actor's state.
pub struct ClusterState {
    config: ClusterConfig,
    events: EventBus,
    view: Arc<watch::Sender<Option<ClusterView>>>,
    server: ActorRef<NodeServerMessage>,
    membership: Membership,
    seeds: Vec<Seed>,
    sessions: HashMap<ActorId, Session>,
    seq: u64,
    random: u64,
    ticker: Task,
    watcher: Task,
    acceptor: Task,
    /// Members named in peers' answers (name -> address).
    heard_of: std::collections::BTreeMap<String, String>,
    deployment: Part<DeploymentMsg>,
    deployed: watch::Receiver<Arc<Deployed>>,
    root: crate::actors::supervisor_actor::SupervisorRef,
    /// Peers' labels, from their answers.
    labels: HashMap<String, std::collections::BTreeMap<String, String>>,
    /// The last placement sent to the deployment actor.
    plan: Option<Plan>,
    /// When this actor started (placement waits to hear the cluster).
    started: Instant,
    /// Whether a peer has answered since the start.
    heard: bool,
    /// This node is leaving: it answers no heartbeat and places nothing.
    leaving: bool,
    /// Peers that said they left, and when: a heartbeat answer they sent
    /// before leaving and that arrives late does not bring them back.
    left: HashMap<String, Instant>,
    /// When this node last got its majority back (or first placed).
    unfenced_at: Option<Instant>,
    /// When a peer last changed state: placement waits for the view to
    /// hold still for one interval, so that nodes joining one after the
    /// other do not start replicas that the next answer moves.
    last_change: Instant,
}

/// The cluster actor.
pub struct ClusterActor;

impl Actor for ClusterActor {
    type Msg = ClusterMsg;
    type State = ClusterState;
    type Arguments = ClusterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ClusterMsg>,
        args: ClusterArgs,
    ) -> Result<ClusterState, ActorProcessingErr> {
        let config = args.config;
        let listen_error = |reason: String| -> ActorProcessingErr {
            Box::new(crate::cluster::ClusterError::Listen {
                addr: config.listen,
                reason,
            })
        };
        // The cluster port is arbor's (see `cluster::listen`); the node
        // server's own listener gets an ephemeral loopback port. Peers are
        // found by arbor (the --join addresses and the members that
        // answers name), not by ractor_cluster's transitive mode, whose
        // plain connections would bypass TLS.
        let listener = crate::cluster::listen::bind(config.listen)
            .await
            .map_err(|e| listen_error(e.to_string()))?;
        let server = NodeServer::new(
            0,
            config.cookie.clone(),
            config.node_name.clone(),
            config.advertised_host().to_string(),
            None,
            Some(ractor_cluster::node::NodeConnectionMode::Isolated),
        )
        .with_listen_addr(std::net::Ipv4Addr::LOCALHOST.into())
        .with_max_inbound_frame_size(MAX_FRAME);
        let (server, _) = Actor::spawn_linked(None, server, (), myself.get_cell())
            .await
            .map_err(|e| listen_error(e.to_string()))?;
        let user_timeout = config.timing.suspect_after + config.timing.down_grace;
        let acceptor = tokio::spawn(crate::cluster::listen::accept_loop(
            listener,
            config.tls.as_ref().map(|t| t.server.clone()),
            server.clone(),
            user_timeout,
        ));
        server.cast(NodeServerMessage::SubscribeToEvents {
            id: "arbor".into(),
            subscription: Box::new(Forward(myself.clone())),
        })?;
        ractor::pg::join_scoped(SCOPE.into(), GROUP.into(), vec![myself.get_cell()]);
        args.me.set(myself.clone());
        let seeds = config
            .join
            .iter()
            .map(|a| Seed {
                addr: a.clone(),
                session: None,
                pending: None,
                dialing: false,
                node: None,
                failures: 0,
                last_error: None,
                scheduled: false,
                learned: false,
            })
            .collect::<Vec<_>>();
        for i in 0..seeds.len() {
            myself.cast(ClusterMsg::Dial(i))?;
        }
        let mut membership = Membership::new(config.timing);
        let now = Instant::now();
        for (name, addr) in place::remembered(&config) {
            if name != config.node_name {
                membership.remember(&name, &addr, now);
            }
        }
        let mut deployed = args.deployed;
        let watcher = {
            let (me, mut rx) = (myself.clone(), deployed.clone());
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    if me.cast(ClusterMsg::SpecChanged).is_err() {
                        return;
                    }
                }
            })
        };
        deployed.mark_unchanged();
        let interval = config.timing.interval;
        let me = myself.clone();
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if me.cast(ClusterMsg::Tick).is_err() {
                    return;
                }
            }
        });
        tracing::info!(
            node = %config.node_name,
            listen = %config.listen,
            advertise = %config.advertise,
            join = ?config.join,
            "cluster: listening for peers"
        );
        let state = ClusterState {
            membership,
            config,
            events: args.events,
            view: args.view,
            server,
            seeds,
            sessions: HashMap::new(),
            seq: 0,
            random: uuid::Uuid::new_v4().as_u64_pair().0,
            ticker: Task(ticker),
            watcher: Task(watcher),
            acceptor: Task(acceptor),
            heard_of: Default::default(),
            deployment: args.deployment,
            deployed,
            root: args.root,
            labels: HashMap::new(),
            plan: None,
            started: now,
            heard: false,
            last_change: now,
            unfenced_at: None,
            leaving: false,
            left: HashMap::new(),
        };
        state.publish();
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<ClusterMsg>,
        msg: ClusterMsg,
        state: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ClusterMsg::Remote(bytes) => match Envelope::decode(&bytes) {
                Ok(e) => tracing::debug!(from = %e.from, body = ?e.body, "cluster: message"),
                Err(e) => tracing::warn!(error = %e, "cluster: dropped a message from a peer"),
            },
            ClusterMsg::RemoteCall(bytes, reply) => match Envelope::decode(&bytes) {
                Ok(Envelope {
                    body: Body::Ping { .. },
                    ..
                }) if state.leaving => drop(reply),
                Ok(Envelope {
                    from,
                    body: Body::Leaving,
                    ..
                }) => {
                    state.peer_left(&myself, &from);
                    let _ = reply.send(Envelope::new(&state.config.node_name, Body::Bye).encode());
                }
                Ok(Envelope {
                    body: Body::Ping { seq },
                    ..
                }) => {
                    let members = state
                        .membership
                        .peers()
                        .iter()
                        .filter(|(_, p)| p.state != PeerState::Down)
                        .map(|(n, p)| (n.clone(), p.addr.clone()))
                        .collect();
                    let pong = Body::Pong {
                        seq,
                        addr: state.config.advertise.clone(),
                        labels: state.config.labels.clone(),
                        members,
                    };
                    let _ = reply.send(Envelope::new(&state.config.node_name, pong).encode());
                }
                Ok(Envelope {
                    body: Body::TreeRequest,
                    ..
                }) => {
                    let (root, me) = (state.root.clone(), state.config.node_name.clone());
                    tokio::spawn(async move {
                        let body = match root.snapshot().await {
                            Ok(t) => Body::Tree {
                                tree: serde_json::to_value(t).ok(),
                                error: None,
                            },
                            Err(e) => Body::Tree {
                                tree: None,
                                error: Some(e.to_string()),
                            },
                        };
                        let _ = reply.send(Envelope::new(me, body).encode());
                    });
                }
                Ok(e) => {
                    tracing::warn!(from = %e.from, body = ?e.body, "cluster: dropped a call that is not a ping")
                }
                Err(e) => tracing::warn!(error = %e, "cluster: dropped a call from a peer"),
            },
            ClusterMsg::Tick => state.tick(&myself),
            ClusterMsg::Answered {
                node_id,
                sent,
                result,
            } => state.answered(node_id, sent, result),
            ClusterMsg::Dial(i) => state.dial(&myself, i),
            ClusterMsg::Dialed(i, result) => state.dialed(&myself, i, result),
            ClusterMsg::Session(event, info) => state.session(&myself, event, *info),
            ClusterMsg::SpecChanged => state.replan(&myself),
            ClusterMsg::Trees(reply) => state.trees(reply),
            ClusterMsg::Leave(reply) => state.leave(reply),
            ClusterMsg::InjectPanic => panic!("injected fault in the cluster actor"),
            ClusterMsg::Forget(node, reply) => {
                let _ = reply.send(state.forget(&myself, &node));
            }
            ClusterMsg::PlaceFailed(epoch) => {
                if state.plan.as_ref().is_some_and(|p| p.epoch == epoch) {
                    // Sent again at the next tick.
                    state.plan = None;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<ClusterMsg>,
        event: SupervisionEvent,
        state: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason)
                if cell.get_id() == state.server.get_id() =>
            {
                Err(format!("the cluster node server stopped: {reason:?}").into())
            }
            SupervisionEvent::ActorFailed(cell, error)
                if cell.get_id() == state.server.get_id() =>
            {
                Err(format!("the cluster node server failed: {error}").into())
            }
            _ => Ok(()),
        }
    }

    async fn post_stop(
        &self,
        _: ActorRef<ClusterMsg>,
        state: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        state.ticker.0.abort();
        state.watcher.0.abort();
        state.acceptor.0.abort();
        // Gone (its listener closed) before a restarted actor binds.
        let _ = (&mut state.acceptor.0).await;
        kill_tree(state.server.get_cell()).await;
        state.view.send_replace(None);
        Ok(())
    }
}

/// A task of the actor's, aborted when the state goes: also when the actor
/// fails (a panic, an error), where `post_stop` does not run. The accept
/// loop holds the cluster port: a restarted actor must be able to bind it.
/// (ractor kills the linked node server and its sessions itself.)
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Kills `cell` and everything under it, children first, and waits.
async fn kill_tree(cell: ActorCell) {
    let mut order = vec![cell];
    let mut i = 0;
    while i < order.len() {
        let children = order[i].get_children();
        order.extend(children);
        i += 1;
    }
    for cell in order.into_iter().rev() {
        let _ = cell.kill_and_wait(Some(Duration::from_secs(2))).await;
    }
}

/// Forwards the node server's session events to the cluster actor.
struct Forward(ActorRef<ClusterMsg>);

impl Forward {
    fn send(&self, event: SessionEvent, ses: NodeServerSessionInformation) {
        let _ = self.0.cast(ClusterMsg::Session(event, Box::new(ses)));
    }
}

impl NodeEventSubscription for Forward {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        self.send(SessionEvent::Opened, ses);
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        self.send(SessionEvent::Closed, ses);
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        self.send(SessionEvent::Authenticated, ses);
    }
}

impl ClusterState {
    fn now_publish(&mut self, transitions: Vec<Transition>) {
        if !transitions.is_empty() {
            self.last_change = Instant::now();
        }
        // Each event is also traced by the bus.
        for t in transitions {
            let event = match t {
                Transition::Up { node, addr } => Event::NodeUp { node, addr },
                Transition::Suspect { node, silent_for } => Event::NodeSuspect {
                    node,
                    silent_ms: silent_for.as_millis() as u64,
                },
                Transition::Down { node, silent_for } => Event::NodeDown {
                    node,
                    silent_ms: silent_for.as_millis() as u64,
                },
            };
            self.events.publish(event);
        }
        self.publish();
    }

    /// Pings every peer's cluster actor, judges silences, and checks that
    /// every `--join` address is dialed.
    fn tick(&mut self, myself: &ActorRef<ClusterMsg>) {
        self.seq += 1;
        let ping = Envelope::new(&self.config.node_name, Body::Ping { seq: self.seq }).encode();
        let timeout = self.membership.timing().interval;
        for cell in ractor::pg::get_scoped_members(&SCOPE.to_string(), &GROUP.to_string()) {
            let ActorId::Remote { node_id, .. } = cell.get_id() else {
                continue;
            };
            let peer: ActorRef<ClusterMsg> = cell.into();
            let (ping, me) = (ping.clone(), myself.clone());
            tokio::spawn(async move {
                let sent = Instant::now();
                let result = match peer
                    .call(|reply| ClusterMsg::RemoteCall(ping, reply), Some(timeout))
                    .await
                {
                    Ok(ractor::rpc::CallResult::Success(bytes)) => Ok(bytes),
                    Ok(ractor::rpc::CallResult::Timeout) => Err("timed out".to_string()),
                    Ok(ractor::rpc::CallResult::SenderError) => Err("no answer".to_string()),
                    Err(e) => Err(e.to_string()),
                };
                let _ = me.cast(ClusterMsg::Answered {
                    node_id,
                    sent,
                    result,
                });
            });
        }
        let transitions = self.membership.tick(Instant::now());
        self.now_publish(transitions);
        self.learn();
        for i in 0..self.seeds.len() {
            let s = &self.seeds[i];
            if !s.dialing && !s.scheduled && !self.covered(i) {
                self.dial(myself, i);
            }
        }
        self.replan(myself);
    }

    fn answered(&mut self, node_id: u64, sent: Instant, result: Result<Vec<u8>, String>) {
        let by_session = self
            .sessions
            .values()
            .find(|s| s.node_id == node_id)
            .and_then(|s| s.node.clone());
        let decoded = result.and_then(|b| Envelope::decode(&b).map_err(|e| e.to_string()));
        match decoded {
            Ok(Envelope {
                from,
                body:
                    Body::Pong {
                        addr,
                        labels,
                        members,
                        ..
                    },
                ..
            }) => {
                for (name, addr) in members {
                    if name != self.config.node_name {
                        self.heard_of.insert(name, addr);
                    }
                }
                if from == self.config.node_name {
                    tracing::warn!(node = %from, "cluster: another node has this node's name; ignored");
                    return;
                }
                let interval = self.config.timing.interval;
                self.left.retain(|_, at| at.elapsed() < interval * 2);
                if self.left.contains_key(&from) {
                    return;
                }
                self.heard = true;
                // A --join address this node answers at is this node's,
                // whichever session answered (the one dialed from it may
                // have lost to the peer's own dial).
                for seed in &mut self.seeds {
                    if seed.node.is_none() && seed.addr == addr {
                        seed.node = Some(from.clone());
                        seed.failures = 0;
                        seed.last_error = None;
                    }
                }
                let now = Instant::now();
                let first = !self.membership.peers().contains_key(&from);
                self.labels.insert(from.clone(), labels);
                let t = self.membership.answered(&from, &addr, now - sent, now);
                if first {
                    self.remember();
                }
                self.now_publish(t.into_iter().collect());
            }
            Ok(e) => {
                tracing::warn!(from = %e.from, body = ?e.body, "cluster: a ping was answered with something else")
            }
            Err(e) => {
                if let Some(node) = by_session {
                    tracing::debug!(node = %node, error = %e, "cluster: heartbeat unanswered");
                    self.membership.missed(&node);
                }
            }
        }
    }
}
