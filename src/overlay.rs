//! Where the overlay actor's network work is done: the [`OverlayBackend`]
//! trait and its implementations.
//!
//! The overlay actor decides everything (which segment, which subnet, which
//! address, which names, when to tear down); a backend only carries out one
//! plan at a time and reports failure as text. That keeps the decisions
//! testable on a recording fake and the OS code small:
//!
//! - [`LinuxBridge`]: a Linux bridge per segment, a veth pair per
//!   attachment with one end moved into the container's network namespace,
//!   via netlink (`rtnetlink`). Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN).
//! - [`Disabled`]: no networking; the node runs without root.
//! - [`RecordingOverlay`]: a fake that journals every call, with injected
//!   failures, for tests.

mod linux_bridge;
pub mod netns;
mod networked;
mod recording;

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use crate::actors::overlay_actor::allocator::Ipv4Net;
pub use linux_bridge::LinuxBridge;
pub use networked::Networked;
pub use recording::{FaultOp, RecordingOverlay};

use crate::runtime::ContainerId;

/// A segment as the backend builds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentPlan {
    /// The segment's name (a job or service name, or `network.segment`).
    pub name: String,
    /// Its isolation network (`default`, a name, or `isolated`).
    pub isolation: String,
    /// The bridge's interface name (`<prefix>b<n>`).
    pub bridge: String,
    /// Its subnet: absent until a holder asks for networking (and with a
    /// backend without networking); a segment without one has no bridge.
    pub subnet: Option<Ipv4Net>,
    /// The bridge's own address, the attachments' default route: absent
    /// on an isolated segment (it reaches only itself, not even the node).
    pub gateway: Option<Ipv4Addr>,
}

/// One container's connection to a segment as the backend builds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachPlan {
    /// The container.
    pub container: ContainerId,
    /// The segment's name.
    pub segment: String,
    /// The segment's bridge.
    pub bridge: String,
    /// The container's network namespace; `None`: the container asked for no
    /// network (the attachment is bookkeeping only).
    pub netns: Option<PathBuf>,
    /// The host end of the veth pair (`<prefix>v<n>`); the other end is
    /// `eth0` inside the namespace.
    pub veth: String,
    /// The container's address and the subnet's prefix length.
    pub address: Option<(Ipv4Addr, u8)>,
    /// The default route inside the namespace.
    pub gateway: Option<Ipv4Addr>,
}

/// What a start-up sweep must leave alone.
#[derive(Debug, Clone, Default)]
pub struct Keep {
    /// Interface names in use.
    pub links: Vec<String>,
    /// Namespace files in use.
    pub netns: Vec<PathBuf>,
}

/// Where the network work is done. Methods get a plan and return an error
/// as text naming what failed; the overlay actor adds what it was doing.
#[async_trait]
pub trait OverlayBackend: Send + Sync + 'static {
    /// A short name for logs.
    fn name(&self) -> &'static str;
    /// Whether containers get namespaces and addresses.
    fn networked(&self) -> bool;
    /// Creates the segment (bridge, gateway address); succeeds when it exists.
    async fn setup_segment(&self, segment: &SegmentPlan) -> Result<(), String>;
    /// Removes the segment; succeeds when it is gone already.
    async fn teardown_segment(&self, segment: &SegmentPlan) -> Result<(), String>;
    /// Creates an empty network namespace at `path` (loopback only).
    async fn prepare_netns(&self, path: &Path) -> Result<(), String>;
    /// Removes the namespace at `path`; succeeds when it is gone already.
    async fn remove_netns(&self, path: &Path) -> Result<(), String>;
    /// Connects the container to the segment.
    async fn attach(&self, plan: &AttachPlan) -> Result<(), String>;
    /// Disconnects it; succeeds when it is gone already.
    async fn detach(&self, plan: &AttachPlan) -> Result<(), String>;
    /// Removes links named `<prefix>b*`/`<prefix>v*` and namespace files
    /// `<netns_dir>/<prefix>-*` that `keep` does not list; returns what it
    /// removed.
    async fn sweep(
        &self,
        prefix: &str,
        netns_dir: &Path,
        keep: &Keep,
    ) -> Result<Vec<String>, String>;
}

/// No networking: every call succeeds, containers get no namespace and no
/// address. The node runs without root.
#[derive(Debug, Clone, Copy, Default)]
pub struct Disabled;

#[async_trait]
impl OverlayBackend for Disabled {
    fn name(&self) -> &'static str {
        "disabled"
    }
    fn networked(&self) -> bool {
        false
    }
    async fn setup_segment(&self, _: &SegmentPlan) -> Result<(), String> {
        Ok(())
    }
    async fn teardown_segment(&self, _: &SegmentPlan) -> Result<(), String> {
        Ok(())
    }
    async fn prepare_netns(&self, path: &Path) -> Result<(), String> {
        Err(format!(
            "failed to create network namespace {}: networking is disabled",
            path.display()
        ))
    }
    async fn remove_netns(&self, _: &Path) -> Result<(), String> {
        Ok(())
    }
    async fn attach(&self, _: &AttachPlan) -> Result<(), String> {
        Ok(())
    }
    async fn detach(&self, _: &AttachPlan) -> Result<(), String> {
        Ok(())
    }
    async fn sweep(&self, _: &str, _: &Path, _: &Keep) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
}

/// Which backend a node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// Linux bridges when running as root, else disabled (with a note).
    #[default]
    Auto,
    /// Linux bridges; starting fails without root.
    Bridge,
    /// No networking.
    None,
}

impl std::str::FromStr for NetworkMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "bridge" => Ok(Self::Bridge),
            "none" => Ok(Self::None),
            other => Err(format!(
                "failed to parse network mode {other:?}: expected auto, bridge or none"
            )),
        }
    }
}

/// Whether this process may create bridges and namespaces (effective uid 0).
pub fn can_use_bridges() -> bool {
    nix::unistd::geteuid().is_root()
}
