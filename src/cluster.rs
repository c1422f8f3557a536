//! Several nodes, one cluster: agents join over `ractor_cluster`.
//!
//! Each node runs ractor's own distributed engine (`ractor_cluster`'s
//! `NodeServer`: Erlang-style cookie authentication, one TCP session per
//! pair of nodes, `ractor::pg` groups shared between them). Exactly one
//! actor per node is remotable: the cluster actor
//! ([`crate::actors::cluster_actor`], the node's part `node:cluster`), a
//! member of the `pg` group [`GROUP`]. Everything else stays local.
//!
//! What arbor adds around ractor_cluster, and why:
//! - **Heartbeats with deadlines** ([`membership`]). ractor_cluster notices a
//!   dead peer only when TCP errors; a hung node (SIGSTOP, a full disk, a
//!   stuck kernel) keeps its sockets open forever. Each node calls every
//!   peer's cluster actor once per interval with a timeout; a peer silent
//!   for `suspect_after` is `suspect`, and after a further `down_grace` it
//!   is `down`. Events `node_up`, `node_suspect`, `node_down`.
//! - **Reconnect** ([`dial`]). ractor_cluster does not redial a lost peer.
//!   Each `--join` address is dialed again after a jittered back-off
//!   whenever no session to that peer is open, on sockets with TCP
//!   keepalive and `TCP_USER_TIMEOUT`.
//! - **Finding peers of peers.** Each heartbeat answer names the members
//!   the answering node sees; a node dials the ones it has no session with
//!   (of two nodes, the one with the smaller name), so that nodes joined
//!   through different peers meet. ractor_cluster's own transitive mode is
//!   off: its plain connections would bypass TLS.
//! - **Its own cluster port** ([`listen`]), in front of the node server:
//!   handshakes in tasks with a deadline (ractor_cluster's listener
//!   handshakes inline, so one silent client would hold every peer back),
//!   keepalive on accepted sockets too, and mutual TLS ([`tls`]).
//! - **Versioned envelopes decoded fallibly** ([`envelope`]): a bad frame
//!   from a peer is logged and dropped, never a panic.
//! - **Placement** of cluster services ([`placement`]): rendezvous hashing
//!   over the live members, a majority to place anything (self-fencing),
//!   epochs on every placement applied.
//!
//! The membership is each node's own view: there is no leader and no
//! consensus. Two nodes may briefly disagree about a third.

pub mod dial;
pub mod envelope;
pub mod listen;
pub mod membership;
pub mod placement;
pub mod tls;

use std::{net::SocketAddr, path::Path, time::Duration};

use serde::{Deserialize, Serialize};

pub use membership::{Membership, PeerState, Timing, Transition};

/// The `ractor::pg` scope of arbor's cluster actors.
pub const SCOPE: &str = "arbor";

/// The `ractor::pg` group every node's cluster actor joins.
pub const GROUP: &str = "arbor.nodes";

/// The largest frame a node accepts from a peer before disconnecting it.
pub const MAX_FRAME: u64 = 4 << 20;

/// How a node joins a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Where this node accepts peers.
    pub listen: SocketAddr,
    /// The `host:port` peers dial to reach this node (default: `listen`).
    pub advertise: String,
    /// Peers to dial (`host:port`), kept dialed.
    pub join: Vec<String>,
    /// The shared secret of the cluster.
    pub cookie: String,
    /// This node's name, unique in the cluster.
    pub node_name: String,
    /// Heartbeat timing.
    pub timing: Timing,
    /// This node's labels, matched by services' `placement.constraints`.
    pub labels: std::collections::BTreeMap<String, String>,
    /// TLS between nodes (`None`: plain TCP; the cookie still
    /// authenticates).
    pub tls: Option<tls::ClusterTls>,
    /// Where the members ever seen are kept (`<state-dir>/cluster.json`
    /// for a node with a state dir), so that a restarted node knows how
    /// many make a majority before it hears from them.
    pub state_file: Option<std::path::PathBuf>,
}

/// Why a cluster could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The cookie file could not be read.
    #[error("failed to read the cluster cookie file {path}: {source}")]
    CookieRead {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The cookie file is unusable.
    #[error("cluster cookie file {path}: {reason}")]
    Cookie {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A bad value in the configuration.
    #[error("{field}: {value:?}: {reason}")]
    Invalid {
        /// The option.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS files are unusable.
    #[error("{reason}")]
    Tls {
        /// Which file and why.
        reason: String,
    },
    /// The node server could not start (often: the port is taken).
    #[error("failed to listen for cluster peers on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

impl ClusterConfig {
    /// A configuration with default timing, checked: a node name of
    /// letters, digits, `.`, `_` and `-` (at most 64), a fixed port, and
    /// `host:port` join addresses.
    pub fn new(
        listen: SocketAddr,
        node_name: &str,
        cookie: String,
        join: Vec<String>,
    ) -> Result<Self, ClusterError> {
        check_node_name(node_name)?;
        if listen.port() == 0 {
            return Err(ClusterError::Invalid {
                field: "--cluster-listen",
                value: listen.to_string(),
                reason: "needs a fixed port: peers dial it".into(),
            });
        }
        for j in &join {
            check_host_port("--join", j)?;
        }
        if cookie.is_empty() {
            return Err(ClusterError::Invalid {
                field: "cookie",
                value: String::new(),
                reason: "is empty".into(),
            });
        }
        Ok(Self {
            listen,
            advertise: listen.to_string(),
            join,
            cookie,
            node_name: node_name.to_string(),
            timing: Timing::default(),
            labels: Default::default(),
            tls: None,
            state_file: None,
        })
    }

    /// Advertises `addr` (`host:port`) to peers instead of the listen
    /// address (needed when listening on `0.0.0.0`).
    pub fn advertise(mut self, addr: &str) -> Result<Self, ClusterError> {
        check_host_port("--cluster-advertise", addr)?;
        self.advertise = addr.to_string();
        Ok(self)
    }

    /// Heartbeat timing; the interval must be at least 10 ms, and the
    /// suspect time at least one interval.
    pub fn timing(mut self, timing: Timing) -> Result<Self, ClusterError> {
        if timing.interval < Duration::from_millis(10) {
            return Err(ClusterError::Invalid {
                field: "--heartbeat-interval",
                value: format!("{:?}", timing.interval),
                reason: "must be at least 10ms".into(),
            });
        }
        if timing.suspect_after < timing.interval {
            return Err(ClusterError::Invalid {
                field: "--suspect-after",
                value: format!("{:?}", timing.suspect_after),
                reason: format!(
                    "must be at least the heartbeat interval ({:?})",
                    timing.interval
                ),
            });
        }
        self.timing = timing;
        Ok(self)
    }

    /// Labels `KEY=VALUE` of this node.
    pub fn labels<'a>(
        mut self,
        labels: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, ClusterError> {
        for l in labels {
            match l.split_once('=') {
                Some((k, v)) if !k.is_empty() && !v.is_empty() => {
                    self.labels.insert(k.to_string(), v.to_string());
                }
                _ => {
                    return Err(ClusterError::Invalid {
                        field: "--node-label",
                        value: l.to_string(),
                        reason: "expected KEY=VALUE".into(),
                    });
                }
            }
        }
        Ok(self)
    }

    /// The host part of the advertised address.
    pub fn advertised_host(&self) -> &str {
        self.advertise
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&self.advertise)
    }
}

/// Why a member could not be forgotten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgetError {
    /// This node never saw it.
    #[error("failed to forget {0:?}: no such member")]
    Unknown(String),
    /// It is not down.
    #[error(
        "failed to forget {node:?}: it is {state}; only a member that is down can be forgotten (a running node leaves by itself when stopped with SIGTERM)"
    )]
    NotDown {
        /// The member.
        node: String,
        /// Its state.
        state: String,
    },
}

/// What a node keeps in `<state-dir>/cluster.json`: the members it saw
/// (a majority is counted over them after a restart) and its last share of
/// the cluster-placed services (run, and adopted, at once by the next
/// agent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Remembered {
    /// Members ever seen, name -> address (this node left out).
    #[serde(default)]
    pub members: std::collections::BTreeMap<String, String>,
    /// The epoch of `placed`.
    #[serde(default)]
    pub epoch: u64,
    /// Replicas this node ran of each cluster-placed service.
    #[serde(default)]
    pub placed: std::collections::BTreeMap<String, usize>,
}

impl Remembered {
    /// The file's content; `None` when it is missing or unreadable (said
    /// in the log).
    pub fn read(path: &Path) -> Option<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cluster: failed to read what this node remembers");
                return None;
            }
        };
        match serde_json::from_str(&text) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cluster: failed to read what this node remembers");
                None
            }
        }
    }

    /// Writes it (whole: a temp file renamed over it).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self).unwrap_or_default())?;
        std::fs::rename(&tmp, path)
    }
}

/// Reads a cookie file: its first line, which must not be empty, from a
/// file only its owner may read (as Erlang requires of `.erlang.cookie`).
pub fn read_cookie(path: &Path) -> Result<String, ClusterError> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| ClusterError::CookieRead {
        path: shown.clone(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ClusterError::Cookie {
            path: shown,
            reason: format!("mode {mode:04o} lets others read it; chmod 600 it"),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| ClusterError::CookieRead {
        path: shown.clone(),
        source,
    })?;
    let cookie = text.lines().next().unwrap_or("").trim().to_string();
    if cookie.is_empty() {
        return Err(ClusterError::Cookie {
            path: shown,
            reason: "is empty (its first line is the cookie)".into(),
        });
    }
    Ok(cookie)
}

fn check_node_name(name: &str) -> Result<(), ClusterError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ClusterError::Invalid {
            field: "--node-name",
            value: name.to_string(),
            reason: "must be 1 to 64 letters, digits, '.', '_' or '-'".into(),
        })
    }
}

fn check_host_port(field: &'static str, addr: &str) -> Result<(), ClusterError> {
    let bad = |reason: &str| ClusterError::Invalid {
        field,
        value: addr.to_string(),
        reason: reason.to_string(),
    };
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| bad("expected HOST:PORT"))?;
    if host.is_empty() {
        return Err(bad("expected HOST:PORT (the host is empty)"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad("expected HOST:PORT with a port from 1 to 65535")),
        Ok(_) => Ok(()),
    }
}

/// This node's view of the cluster (`GET /v1/cluster`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// This node's name.
    pub node: String,
    /// The address it advertises.
    pub addr: String,
    /// Its labels.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Members not `down` (this node included).
    pub live: usize,
    /// Members ever seen (this node included): a majority of these is
    /// needed to place replicas.
    pub known: usize,
    /// Whether this node lacks that majority (it runs no cluster-placed
    /// replica).
    pub fenced: bool,
    /// The epoch of the last placement (none before the first).
    pub epoch: Option<u64>,
    /// Replicas per node of each cluster-placed service, as this node
    /// computed them.
    pub placements: std::collections::BTreeMap<String, std::collections::BTreeMap<String, usize>>,
    /// Heartbeat timing, in milliseconds.
    pub heartbeat: HeartbeatView,
    /// Every node seen, this one first.
    pub members: Vec<MemberView>,
    /// The `--join` addresses and their connection state.
    pub seeds: Vec<SeedView>,
}

/// Heartbeat timing, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatView {
    /// Interval (and each ping's timeout).
    pub interval_ms: u64,
    /// Silence before `suspect`.
    pub suspect_after_ms: u64,
    /// Further silence before `down`.
    pub down_grace_ms: u64,
}

/// One node as this node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    /// Its name.
    pub name: String,
    /// Its address.
    pub addr: String,
    /// `up`, `suspect` or `down` (this node is always `up`).
    pub state: String,
    /// Whether it is this node.
    #[serde(rename = "self")]
    pub is_self: bool,
    /// Whether an authenticated session with it is open (a hung node's
    /// stays open: its state says what the heartbeats found).
    pub connected: bool,
    /// The round trip of its last heartbeat answer.
    pub rtt_ms: Option<f64>,
    /// How long ago it last answered.
    pub last_seen_ms_ago: Option<u64>,
    /// Heartbeats unanswered since its last answer.
    pub missed: u64,
    /// Heartbeats unanswered in all.
    pub missed_total: u64,
    /// Heartbeats answered.
    pub answered: u64,
}

/// One member's supervision tree (`GET /v1/cluster/tree`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeTree {
    /// The member.
    pub node: String,
    /// Its state as this node sees it (`up`, `suspect`, `down`).
    pub state: String,
    /// Whether it is this node.
    #[serde(rename = "self")]
    pub is_self: bool,
    /// Its tree, when it answered.
    pub tree: Option<crate::TreeNode>,
    /// Why there is no tree (not reachable, timed out).
    pub error: Option<String>,
}

/// Every member's tree as text: a line per member, then its tree drawn
/// as `GET /v1/tree?format=text` draws it, indented.
pub fn draw_trees(trees: &[NodeTree]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "cluster ({} members)", trees.len());
    for t in trees {
        let me = if t.is_self { ", this node" } else { "" };
        match (&t.tree, &t.error) {
            (Some(tree), _) => {
                let _ = writeln!(out, "{} ({}{me})", t.node, t.state);
                for line in tree.to_string().lines() {
                    let _ = writeln!(out, "    {line}");
                }
            }
            (None, e) => {
                let why = e.as_deref().unwrap_or("no tree");
                let _ = writeln!(out, "{} ({}{me}): {why}", t.node, t.state);
            }
        }
    }
    out
}

/// One `--join` address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedView {
    /// The address as given.
    pub addr: String,
    /// The node found there, once a session authenticated.
    pub node: Option<String>,
    /// Whether a session with that node is open.
    pub connected: bool,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// The last failure.
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:7100".parse().unwrap()
    }

    #[test]
    fn a_bad_node_name_is_refused_with_its_value() {
        for name in ["", "a b", "a@b", &"x".repeat(65)] {
            let e = ClusterConfig::new(addr(), name, "c".into(), vec![]).unwrap_err();
            assert!(e.to_string().starts_with("--node-name: "), "{e}");
        }
        assert!(ClusterConfig::new(addr(), "node-1.a_b", "c".into(), vec![]).is_ok());
    }

    #[test]
    fn port_zero_and_bad_join_addresses_are_refused() {
        let e = ClusterConfig::new("127.0.0.1:0".parse().unwrap(), "a", "c".into(), vec![])
            .unwrap_err();
        assert!(e.to_string().contains("fixed port"), "{e}");
        for j in ["host", ":7100", "host:0", "host:99999", "host:x"] {
            let e = ClusterConfig::new(addr(), "a", "c".into(), vec![j.into()]).unwrap_err();
            assert!(e.to_string().starts_with(&format!("--join: {j:?}")), "{e}");
        }
        let c = ClusterConfig::new(addr(), "a", "c".into(), vec!["[::1]:7100".into()]).unwrap();
        assert_eq!(c.advertised_host(), "127.0.0.1");
    }

    #[test]
    fn a_cookie_file_others_can_read_or_an_empty_one_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cookie");
        std::fs::write(&path, "s3cret\nignored\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_cookie(&path).unwrap_err();
        assert!(e.to_string().contains("mode 0644"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_cookie(&path).unwrap(), "s3cret");
        std::fs::write(&path, "\n").unwrap();
        assert!(
            read_cookie(&path)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        let e = read_cookie(&dir.path().join("none")).unwrap_err();
        assert!(e.to_string().starts_with("failed to read"), "{e}");
    }

    #[test]
    fn timing_below_its_floor_is_refused() {
        let c = ClusterConfig::new(addr(), "a", "c".into(), vec![]).unwrap();
        let t = Timing {
            interval: Duration::from_millis(1),
            ..Timing::default()
        };
        assert!(c.clone().timing(t).is_err());
        let t = Timing {
            interval: Duration::from_secs(2),
            suspect_after: Duration::from_secs(1),
            down_grace: Duration::from_secs(1),
        };
        assert!(
            c.timing(t)
                .unwrap_err()
                .to_string()
                .contains("--suspect-after")
        );
    }
}
