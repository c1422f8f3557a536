//! The overlay actor: network segments, container attachments, the
//! addresses they hold, and the reference count that decides when a
//! segment is torn down.
//!
//! A job execution that asks for networking has a network namespace
//! *prepared* here before its container is created (the runtime puts the
//! container in it), acquires its segment (set up on first use), attaches
//! its container after create and before start (so the process never runs
//! without its network), and on cleanup detaches and releases. The segment
//! is torn down when the last holder releases it: the count lives here, in
//! one actor's state, so "is another execution of this job still active?"
//! is a number, not a scan of every execution. No lock is shared: this
//! actor's state is the only truth.
//!
//! Addresses: each segment gets a subnet from the node's pool and hands out
//! its addresses, each held from attach to a *successful* detach, never to
//! two attachments at once ([`allocator`]).
//!
//! The network work itself is done by an [`OverlayBackend`]
//! ([`crate::overlay`]): [`LinuxBridge`](crate::overlay::LinuxBridge),
//! [`Disabled`] or the [`RecordingOverlay`] fake.
//!
//! Failure: a backend error is returned to the caller. An attach that failed
//! holds nothing. A detach or teardown that failed is *not* forgotten: the
//! attachment (and its address) or the segment (and its subnet) is kept and
//! retried with a growing delay until it succeeds, and it stays in the
//! state file, so a restarted node removes it too. The actor itself never
//! fails on a request.
//!
//! Persistence ([`persist`]): with a state file, every change is written;
//! a starting actor removes everything the file lists (a crashed node's
//! leftovers: no execution survives a node restart), then sweeps links and
//! namespaces carrying its name prefix that nothing lists.

pub mod allocator;
mod error;
mod handle;
pub mod persist;
mod recover;

pub use error::OverlayError;
pub use handle::Overlay;
pub use recover::OverlayMemory;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

pub use crate::overlay::{
    AttachPlan, Disabled, FaultOp, Keep, OverlayBackend, RecordingOverlay, SegmentPlan,
};
use crate::runtime::ContainerId;
use allocator::{AddressPool, Ipv4Net, SubnetPool};

/// The isolation network of a segment that says nothing.
pub const DEFAULT_ISOLATION: &str = "default";
/// The isolation that reaches only its own segment.
pub const ISOLATED: &str = "isolated";

/// A segment's identity: its name within an isolation network. Segments of
/// the same name in two isolation networks are two bridges.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SegmentKey {
    /// The isolation network (`default`, a name, or `isolated`).
    pub isolation: String,
    /// The segment's name.
    pub name: String,
}

impl SegmentKey {
    /// `name` in isolation network `isolation`.
    pub fn new(name: impl Into<String>, isolation: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            isolation: isolation.into(),
        }
    }
}

impl From<&str> for SegmentKey {
    fn from(name: &str) -> Self {
        Self::new(name, DEFAULT_ISOLATION)
    }
}

impl From<&String> for SegmentKey {
    fn from(name: &String) -> Self {
        Self::new(name.as_str(), DEFAULT_ISOLATION)
    }
}

impl From<&SegmentKey> for SegmentKey {
    fn from(k: &SegmentKey) -> Self {
        k.clone()
    }
}

impl fmt::Display for SegmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.isolation == DEFAULT_ISOLATION {
            f.write_str(&self.name)
        } else {
            write!(f, "{} (isolation {})", self.name, self.isolation)
        }
    }
}

/// How the overlay actor names, numbers and remembers what it makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayConfig {
    /// Start of every link and namespace name (1-6 of `a-z0-9`, a letter
    /// first; default `arb`): bridges `<prefix>b<n>`, veths `<prefix>v<n>`,
    /// namespaces `<netns_dir>/<prefix>-<n>`. A start-up sweep removes
    /// unlisted ones with this prefix: two nodes on one host need two.
    pub prefix: String,
    /// Where segment subnets come from (default 10.213.0.0/16).
    pub pool: Ipv4Net,
    /// Prefix length of a segment's subnet (default 24).
    pub subnet_prefix: u8,
    /// Where namespace files are bound (default `/run/arbor/netns`).
    pub netns_dir: PathBuf,
    /// Where the state is kept (`None`: nowhere; nothing to recover).
    pub state_file: Option<PathBuf>,
    /// First delay before retrying a failed detach or teardown (doubles up
    /// to a minute).
    pub retry: Duration,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        Self {
            prefix: "arb".into(),
            pool: Ipv4Net::new(Ipv4Addr::new(10, 213, 0, 0), 16).expect("valid"),
            subnet_prefix: 24,
            netns_dir: PathBuf::from("/run/arbor/netns"),
            state_file: None,
            retry: Duration::from_secs(1),
        }
    }
}

const MAX_RETRY: Duration = Duration::from_secs(60);
/// Name numbers wrap here: `<prefix>v<7 hex>p` fits IFNAMSIZ with a
/// 6-character prefix.
const ID_SPACE: u64 = 0x1000_0000;

impl OverlayConfig {
    fn check(&self) -> Result<(), OverlayError> {
        let p = &self.prefix;
        let ok = (1..=6).contains(&p.len())
            && p.starts_with(|c: char| c.is_ascii_lowercase())
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !ok {
            return Err(OverlayError::Config {
                field: "prefix",
                value: p.clone(),
                reason: "must be 1-6 characters of a-z0-9 starting with a letter (link names fit 15 characters)".into(),
            });
        }
        SubnetPool::new(self.pool, self.subnet_prefix).map_err(|e| OverlayError::Config {
            field: "subnet_prefix",
            value: self.subnet_prefix.to_string(),
            reason: e.to_string(),
        })?;
        Ok(())
    }
}

/// What an attach asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    /// The container.
    pub container: ContainerId,
    /// Its segment.
    pub segment: SegmentKey,
    /// The namespace [`Overlay::prepare`] made for it (`None`: bookkeeping
    /// only, the container runs on the node's network).
    pub netns: Option<PathBuf>,
    /// DNS search domains written into its resolv.conf (OCI), for inspect.
    pub dns_search: Vec<String>,
}

/// An attachment as the overlay actor hands it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentInfo {
    /// The container.
    pub container: ContainerId,
    /// Its segment.
    pub segment: SegmentKey,
    /// Its address (none without networking).
    pub address: Option<IpAddr>,
    /// Its namespace.
    pub netns: Option<PathBuf>,
    /// The host end of its veth pair.
    pub veth: Option<String>,
    /// DNS search domains.
    pub dns_search: Vec<String>,
    /// True while a failed detach is being retried.
    pub detaching: bool,
}

/// A segment as the overlay actor sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentInfo {
    /// Its name.
    pub name: String,
    /// Its isolation network.
    pub isolation: String,
    /// How many holders it has.
    pub holders: usize,
    /// Its bridge.
    pub bridge: String,
    /// Its subnet (none without networking).
    pub subnet: Option<String>,
    /// Addresses held on it.
    pub held_addresses: usize,
    /// Containers attached to it, with their addresses.
    pub attachments: Vec<(ContainerId, Option<IpAddr>)>,
    /// True while a failed teardown is being retried.
    pub tearing_down: bool,
}

/// Requests to the overlay actor.
pub enum OverlayMsg {
    /// Sets the segment up if nobody holds it, and counts one more holder;
    /// with `true`, the holder's containers get namespaces on it (a bridge
    /// and a subnet are made if it has none yet).
    Acquire(SegmentKey, bool, RpcReplyPort<Result<(), OverlayError>>),
    /// Counts one holder less; the last one tears the segment down.
    Release(SegmentKey, RpcReplyPort<Result<(), OverlayError>>),
    /// Creates a network namespace for a container about to be created
    /// (`None` when the backend gives no networking).
    Prepare(RpcReplyPort<Result<Option<PathBuf>, OverlayError>>),
    /// Removes a prepared namespace that was never attached.
    Discard(PathBuf, RpcReplyPort<Result<(), OverlayError>>),
    /// Connects a container to an acquired segment.
    Attach(
        AttachRequest,
        RpcReplyPort<Result<AttachmentInfo, OverlayError>>,
    ),
    /// Disconnects a container and removes its namespace (no-op when it is
    /// not attached). On failure it is retried until it succeeds.
    Detach(ContainerId, RpcReplyPort<Result<(), OverlayError>>),
    /// Detaches a container and releases the segment it was attached to
    /// (a service container's removal).
    Leave(ContainerId, RpcReplyPort<Result<(), OverlayError>>),
    /// Every segment with its holders and attachments.
    List(RpcReplyPort<Vec<SegmentInfo>>),
    /// Every attachment (failed detaches included).
    Attachments(RpcReplyPort<Vec<AttachmentInfo>>),
    /// Sent by the actor to itself (opaque: it cannot be built outside).
    Internal(InternalMsg),
}

// Local only: never sent to another node (the `cluster` feature of
// ractor asks every message type to say so).
impl ractor::Message for OverlayMsg {}

/// A message the overlay actor sends to itself.
pub struct InternalMsg(Internal);

enum Internal {
    /// Retry a failed detach.
    RetryDetach(ContainerId),
    /// Retry a failed teardown.
    RetryTeardown(SegmentKey),
    /// Fault injection: panic in the handler.
    InjectPanic,
}

impl InternalMsg {
    /// Fault injection for tests: the actor panics when it handles this.
    #[doc(hidden)]
    pub fn inject_panic() -> Self {
        Self(Internal::InjectPanic)
    }
}

/// What the overlay actor starts with.
pub struct OverlayArgs {
    /// Where the network work is done.
    pub backend: Box<dyn OverlayBackend>,
    /// Names, pool, state file.
    pub config: OverlayConfig,
    /// For a node part: what a restarted actor adopts (`None`: every
    /// start is a node boot).
    pub memory: Option<OverlayMemory>,
}

struct Segment {
    plan: SegmentPlan,
    holders: usize,
    addresses: Option<AddressPool>,
    /// Released by its last holder but not gone yet (a failed teardown, or
    /// failed detaches still on it).
    tearing_down: bool,
    retries: u32,
    /// The backend made it (a recovered one counts).
    set_up: bool,
}

struct Attachment {
    key: SegmentKey,
    plan: AttachPlan,
    dns_search: Vec<String>,
    /// A detach failed; retried until it succeeds.
    detaching: bool,
    retries: u32,
}

/// The actor's state: the only truth about segments and attachments.
pub struct OverlayState {
    backend: Box<dyn OverlayBackend>,
    config: OverlayConfig,
    myself: ActorRef<OverlayMsg>,
    subnets: SubnetPool,
    segments: BTreeMap<SegmentKey, Segment>,
    attachments: BTreeMap<ContainerId, Attachment>,
    prepared: BTreeSet<PathBuf>,
    next_id: u64,
    memory: Option<OverlayMemory>,
}

/// The overlay actor.
pub struct OverlayActor;

impl Actor for OverlayActor {
    type Msg = OverlayMsg;
    type State = OverlayState;
    type Arguments = OverlayArgs;

    /// Fails only on an unusable configuration; leftovers of a previous
    /// node that cannot be removed are kept and retried.
    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: OverlayArgs,
    ) -> Result<OverlayState, ActorProcessingErr> {
        args.config.check()?;
        let subnets = SubnetPool::new(args.config.pool, args.config.subnet_prefix)?;
        let restarted = args.memory.as_ref().is_some_and(OverlayMemory::restarted);
        let mut state = OverlayState {
            memory: args.memory,
            backend: args.backend,
            config: args.config,
            myself,
            subnets,
            segments: BTreeMap::new(),
            attachments: BTreeMap::new(),
            prepared: BTreeSet::new(),
            next_id: 0,
        };
        if restarted {
            state.adopt().await;
        } else {
            state.recover().await;
        }
        state.remember();
        Ok(state)
    }

    /// Every request is answered, errors included; nothing here fails the actor.
    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: OverlayMsg,
        state: &mut OverlayState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            OverlayMsg::Acquire(key, networked, reply) => {
                let _ = reply.send(state.acquire(key, networked).await);
            }
            OverlayMsg::Release(key, reply) => {
                let _ = reply.send(state.release(&key).await);
            }
            OverlayMsg::Prepare(reply) => {
                let _ = reply.send(state.prepare().await);
            }
            OverlayMsg::Discard(path, reply) => {
                let _ = reply.send(state.discard(&path).await);
            }
            OverlayMsg::Attach(req, reply) => {
                let _ = reply.send(state.attach(req).await);
            }
            OverlayMsg::Detach(container, reply) => {
                let _ = reply.send(state.detach(&container).await);
            }
            OverlayMsg::Leave(container, reply) => {
                let _ = reply.send(state.leave(&container).await);
            }
            OverlayMsg::List(reply) => {
                let _ = reply.send(state.list());
            }
            OverlayMsg::Attachments(reply) => {
                let _ = reply.send(state.attachment_list());
            }
            OverlayMsg::Internal(InternalMsg(Internal::RetryDetach(container))) => {
                let _ = state.detach(&container).await;
            }
            OverlayMsg::Internal(InternalMsg(Internal::InjectPanic)) => {
                panic!("injected fault in the overlay actor")
            }
            OverlayMsg::Internal(InternalMsg(Internal::RetryTeardown(key))) => {
                state.teardown_if_done(&key).await
            }
        }
        state.remember();
        Ok(())
    }

    /// Tears down what is still held (a node stopping with work left).
    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut OverlayState,
    ) -> Result<(), ActorProcessingErr> {
        let attached: Vec<ContainerId> = state.attachments.keys().cloned().collect();
        for c in attached {
            let _ = state.detach(&c).await;
        }
        for path in std::mem::take(&mut state.prepared) {
            let _ = state.backend.remove_netns(&path).await;
        }
        let keys: Vec<SegmentKey> = state.segments.keys().cloned().collect();
        for key in keys {
            if let Some(s) = state.segments.get_mut(&key) {
                s.holders = 0;
                s.tearing_down = true;
            }
            state.teardown_if_done(&key).await;
        }
        state.save();
        Ok(())
    }
}

impl OverlayState {
    fn next_name(&mut self) -> u64 {
        let id = self.next_id % ID_SPACE;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    fn retry_delay(&self, retries: u32) -> Duration {
        self.config
            .retry
            .saturating_mul(1u32 << retries.min(16))
            .min(MAX_RETRY)
    }

    /// One more holder of `key`. A segment is made (and gets a subnet and
    /// a bridge) only once a holder that `networked` asks for it: holders
    /// on the node's network count, but cost no bridge.
    async fn acquire(&mut self, key: SegmentKey, networked: bool) -> Result<(), OverlayError> {
        let networked = networked && self.backend.networked();
        let fresh = !self.segments.contains_key(&key);
        if fresh {
            let id = self.next_name();
            let plan = SegmentPlan {
                name: key.name.clone(),
                isolation: key.isolation.clone(),
                bridge: format!("{}b{id:x}", self.config.prefix),
                subnet: None,
                gateway: None,
            };
            self.segments.insert(
                key.clone(),
                Segment {
                    plan,
                    holders: 0,
                    addresses: None,
                    tearing_down: false,
                    retries: 0,
                    set_up: false,
                },
            );
        }
        let s = &self.segments[&key];
        let needs_subnet = networked && s.plan.subnet.is_none();
        // A released segment being torn down is taken back: set up again.
        if needs_subnet || !s.set_up || s.holders == 0 {
            let mut plan = s.plan.clone();
            let mut subnet = None;
            if needs_subnet {
                let taken = match self.subnets.take(&key.to_string()) {
                    Ok(t) => t,
                    Err(e) => {
                        if fresh {
                            self.segments.remove(&key);
                        }
                        return Err(e.into());
                    }
                };
                plan.subnet = Some(taken);
                plan.gateway = (key.isolation != ISOLATED)
                    .then(|| AddressPool::new(&key.to_string(), taken).gateway());
                subnet = Some(taken);
            }
            if let Err(message) = self.backend.setup_segment(&plan).await {
                if let Some(t) = subnet {
                    // Whatever part of the bridge was made goes.
                    let _ = self.backend.teardown_segment(&plan).await;
                    self.subnets.release(t);
                }
                if fresh {
                    self.segments.remove(&key);
                }
                return Err(OverlayError::Backend {
                    op: "set up segment",
                    target: key.to_string(),
                    message,
                });
            }
            let seg = self.segments.get_mut(&key).expect("inserted above");
            if let Some(t) = subnet {
                seg.addresses = Some(AddressPool::new(&key.to_string(), t));
            }
            seg.plan = plan;
            seg.set_up = true;
        }
        let seg = self.segments.get_mut(&key).expect("inserted above");
        seg.holders += 1;
        seg.tearing_down = false;
        seg.retries = 0;
        self.save();
        Ok(())
    }

    async fn release(&mut self, key: &SegmentKey) -> Result<(), OverlayError> {
        let Some(s) = self.segments.get_mut(key) else {
            return Ok(());
        };
        if s.holders == 0 {
            return Ok(());
        }
        s.holders -= 1;
        if s.holders > 0 {
            return Ok(());
        }
        s.tearing_down = true;
        s.retries = 0;
        self.teardown_if_done(key).await;
        match self.segments.get(key) {
            Some(s) if s.holders == 0 && s.retries > 0 => Err(OverlayError::Backend {
                op: "tear down segment",
                target: key.to_string(),
                message: "failed; retried in the background".into(),
            }),
            _ => Ok(()),
        }
    }

    /// Tears `key` down if it is released and nothing is attached to it any
    /// more (failed detaches included); on failure schedules a retry.
    async fn teardown_if_done(&mut self, key: &SegmentKey) {
        let Some(s) = self.segments.get(key) else {
            return;
        };
        if s.holders > 0 || !s.tearing_down {
            return;
        }
        if self.attachments.values().any(|a| &a.key == key) {
            // The last failed detach on it calls this again.
            return;
        }
        let plan = s.plan.clone();
        match self.backend.teardown_segment(&plan).await {
            Ok(()) => {
                if let Some(s) = self.segments.remove(key)
                    && let Some(subnet) = s.plan.subnet
                {
                    self.subnets.release(subnet);
                }
                self.save();
            }
            Err(message) => {
                let retries = s.retries;
                tracing::warn!(segment = %key, bridge = %plan.bridge, error = %message, retries, "failed to tear down segment; retrying");
                let delay = self.retry_delay(retries);
                if let Some(s) = self.segments.get_mut(key) {
                    s.retries += 1;
                }
                self.myself.send_after(delay, {
                    let key = key.clone();
                    move || OverlayMsg::Internal(InternalMsg(Internal::RetryTeardown(key)))
                });
                self.save();
            }
        }
    }

    async fn prepare(&mut self) -> Result<Option<PathBuf>, OverlayError> {
        if !self.backend.networked() {
            return Ok(None);
        }
        let id = self.next_name();
        let path = self
            .config
            .netns_dir
            .join(format!("{}-{id:x}", self.config.prefix));
        self.backend
            .prepare_netns(&path)
            .await
            .map_err(|message| OverlayError::Backend {
                op: "prepare network namespace",
                target: path.display().to_string(),
                message,
            })?;
        self.prepared.insert(path.clone());
        self.save();
        Ok(Some(path))
    }

    async fn discard(&mut self, path: &Path) -> Result<(), OverlayError> {
        if !self.prepared.contains(path) {
            return Ok(());
        }
        self.backend
            .remove_netns(path)
            .await
            .map_err(|message| OverlayError::Backend {
                op: "remove network namespace",
                target: path.display().to_string(),
                message,
            })?;
        self.prepared.remove(path);
        self.save();
        Ok(())
    }

    async fn attach(&mut self, req: AttachRequest) -> Result<AttachmentInfo, OverlayError> {
        let AttachRequest {
            container,
            segment: key,
            netns,
            dns_search,
        } = req;
        if let Some(a) = self.attachments.get(&container) {
            return Err(OverlayError::AlreadyAttached {
                container: container.to_string(),
                segment: a.key.to_string(),
            });
        }
        let Some(seg) = self.segments.get_mut(&key).filter(|s| s.holders > 0) else {
            return Err(OverlayError::NoSegment {
                container: container.to_string(),
                segment: key.to_string(),
            });
        };
        if let Some(path) = &netns
            && !self.prepared.contains(path)
        {
            return Err(OverlayError::UnknownNetns {
                container: container.to_string(),
                netns: path.display().to_string(),
            });
        }
        let address = match (&netns, seg.addresses.as_mut()) {
            (Some(_), Some(pool)) => Some((pool.take()?, pool.subnet().prefix())),
            _ => None,
        };
        let plan = AttachPlan {
            container: container.clone(),
            segment: key.name.clone(),
            bridge: seg.plan.bridge.clone(),
            netns: netns.clone(),
            veth: String::new(),
            address,
            gateway: seg.plan.gateway,
        };
        let id = self.next_name();
        let plan = AttachPlan {
            veth: format!("{}v{id:x}", self.config.prefix),
            ..plan
        };
        if let Err(message) = self.backend.attach(&plan).await {
            if let (Some((addr, _)), Some(seg)) = (address, self.segments.get_mut(&key))
                && let Some(pool) = seg.addresses.as_mut()
            {
                pool.release(addr);
            }
            return Err(OverlayError::Backend {
                op: "attach",
                target: container.to_string(),
                message,
            });
        }
        if let Some(path) = &netns {
            self.prepared.remove(path);
        }
        let info = AttachmentInfo {
            container: container.clone(),
            segment: key.clone(),
            address: address.map(|(a, _)| IpAddr::V4(a)),
            netns,
            veth: plan.netns.as_ref().map(|_| plan.veth.clone()),
            dns_search: dns_search.clone(),
            detaching: false,
        };
        self.attachments.insert(
            container,
            Attachment {
                key,
                plan,
                dns_search,
                detaching: false,
                retries: 0,
            },
        );
        self.save();
        Ok(info)
    }

    async fn detach(&mut self, container: &ContainerId) -> Result<(), OverlayError> {
        let Some(a) = self.attachments.get(container) else {
            return Ok(());
        };
        let plan = a.plan.clone();
        let key = a.key.clone();
        let mut result = self.backend.detach(&plan).await;
        if result.is_ok()
            && let Some(path) = &plan.netns
        {
            result = self.backend.remove_netns(path).await;
        }
        match result {
            Ok(()) => {
                self.attachments.remove(container);
                if let (Some((addr, _)), Some(seg)) = (plan.address, self.segments.get_mut(&key))
                    && let Some(pool) = seg.addresses.as_mut()
                {
                    pool.release(addr);
                }
                self.save();
                self.teardown_if_done(&key).await;
                Ok(())
            }
            Err(message) => {
                let a = self
                    .attachments
                    .get_mut(container)
                    .expect("looked up above");
                a.detaching = true;
                let retries = a.retries;
                a.retries += 1;
                tracing::warn!(%container, veth = %plan.veth, error = %message, retries, "failed to detach; retrying");
                let delay = self.retry_delay(retries);
                let c = container.clone();
                self.myself.send_after(delay, move || {
                    OverlayMsg::Internal(InternalMsg(Internal::RetryDetach(c)))
                });
                self.save();
                Err(OverlayError::Backend {
                    op: "detach",
                    target: container.to_string(),
                    message: format!("{message} (retried in the background)"),
                })
            }
        }
    }

    async fn leave(&mut self, container: &ContainerId) -> Result<(), OverlayError> {
        let Some(key) = self
            .attachments
            .get(container)
            .filter(|a| !a.detaching)
            .map(|a| a.key.clone())
        else {
            return Ok(());
        };
        let detached = self.detach(container).await;
        let released = self.release(&key).await;
        detached.and(released)
    }

    fn list(&self) -> Vec<SegmentInfo> {
        self.segments
            .iter()
            .map(|(key, s)| SegmentInfo {
                name: key.name.clone(),
                isolation: key.isolation.clone(),
                holders: s.holders,
                bridge: s.plan.bridge.clone(),
                subnet: s.plan.subnet.map(|n| n.to_string()),
                held_addresses: s.addresses.as_ref().map_or(0, |a| a.held()),
                attachments: self
                    .attachments
                    .iter()
                    .filter(|(_, a)| &a.key == key)
                    .map(|(c, a)| (c.clone(), a.plan.address.map(|(ip, _)| IpAddr::V4(ip))))
                    .collect(),
                tearing_down: s.tearing_down,
            })
            .collect()
    }

    fn attachment_list(&self) -> Vec<AttachmentInfo> {
        self.attachments
            .iter()
            .map(|(c, a)| AttachmentInfo {
                container: c.clone(),
                segment: a.key.clone(),
                address: a.plan.address.map(|(ip, _)| IpAddr::V4(ip)),
                netns: a.plan.netns.clone(),
                veth: a.plan.netns.as_ref().map(|_| a.plan.veth.clone()),
                dns_search: a.dns_search.clone(),
                detaching: a.detaching,
            })
            .collect()
    }
}
