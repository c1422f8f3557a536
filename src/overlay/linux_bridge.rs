//! The real backend: a Linux bridge per segment, a veth pair per attachment,
//! through netlink (`rtnetlink`).
//!
//! Attach: create the veth pair on the host, move the peer into the
//! container's namespace, enslave the host end to the segment's bridge and
//! bring it up; then, on a thread inside the namespace: loopback up, the
//! peer renamed `eth0`, its address, link up, and the default route via
//! the bridge's address (none on an isolated segment). On any failure the
//! host end is deleted (which deletes the pair): nothing half-made stays.
//!
//! Isolation: every segment has its own bridge, and IPv4 forwarding is
//! switched off *on the bridge* (`net.ipv4.conf.<bridge>.forwarding=0`).
//! Linux decides forwarding by the input interface, so a packet entering
//! from a segment is delivered to the node's own addresses (the node API on
//! the gateway) or dropped, never routed to another segment or out of the
//! node, whatever the host's global `ip_forward` says at the time the
//! bridge is made. An isolated segment's bridge has no address at all: its
//! containers reach each other and nothing else. IPv6 is disabled on
//! arbor's links (no router solicitations or DAD leave them).

use std::{net::IpAddr, os::fd::AsRawFd, path::Path};

use async_trait::async_trait;
use futures::TryStreamExt;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::{AttachPlan, Keep, OverlayBackend, SegmentPlan, netns};

/// Linux bridges and veth pairs. Needs root.
#[derive(Clone)]
pub struct LinuxBridge {
    handle: Handle,
}

impl std::fmt::Debug for LinuxBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinuxBridge")
    }
}

const EEXIST: i32 = libc::EEXIST;
const ENODEV: i32 = libc::ENODEV;

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

fn failed(what: impl std::fmt::Display) -> impl FnOnce(rtnetlink::Error) -> String {
    move |e| match e {
        rtnetlink::Error::NetlinkError(m) => format!("failed to {what}: {}", m.to_io()),
        other => format!("failed to {what}: {other}"),
    }
}

impl LinuxBridge {
    /// Opens a netlink connection in the node's namespace (must run inside
    /// a tokio runtime; the connection is a task of it).
    pub fn new() -> Result<Self, String> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| format!("failed to open a netlink socket: {e}"))?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    async fn index(handle: &Handle, name: &str) -> Result<Option<u32>, String> {
        let mut links = handle.link().get().match_name(name.to_owned()).execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(Some(link.header.index)),
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(failed(format!("look up link {name}"))(e)),
        }
    }

    async fn delete(handle: &Handle, name: &str) -> Result<bool, String> {
        let Some(index) = Self::index(handle, name).await? else {
            return Ok(false);
        };
        match handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(false),
            Err(e) => Err(failed(format!("delete link {name}"))(e)),
        }
    }
}

/// Writes a per-interface sysctl of the calling thread's namespace.
fn sysctl(path: String, value: &str) -> Result<(), String> {
    std::fs::write(&path, value).map_err(|e| format!("failed to write {value} to {path}: {e}"))
}

#[async_trait]
impl OverlayBackend for LinuxBridge {
    fn name(&self) -> &'static str {
        "bridge"
    }

    fn networked(&self) -> bool {
        true
    }

    async fn setup_segment(&self, s: &SegmentPlan) -> Result<(), String> {
        if s.subnet.is_none() {
            // Nobody on it asked for networking: no bridge.
            return Ok(());
        }
        let h = &self.handle;
        match h
            .link()
            .add(LinkBridge::new(&s.bridge).build())
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(EEXIST) => {}
            Err(e) => return Err(failed(format!("create bridge {}", s.bridge))(e)),
        }
        let index = Self::index(h, &s.bridge)
            .await?
            .ok_or_else(|| format!("failed to find bridge {} after creating it", s.bridge))?;
        let _ = sysctl(
            format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", s.bridge),
            "1",
        );
        sysctl(
            format!("/proc/sys/net/ipv4/conf/{}/forwarding", s.bridge),
            "0",
        )?;
        if let (Some(gw), Some(subnet)) = (s.gateway, s.subnet) {
            match h
                .address()
                .add(index, IpAddr::V4(gw), subnet.prefix())
                .execute()
                .await
            {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(EEXIST) => {}
                Err(e) => {
                    return Err(failed(format!(
                        "add {gw}/{} to bridge {}",
                        subnet.prefix(),
                        s.bridge
                    ))(e));
                }
            }
        }
        h.link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(failed(format!("bring bridge {} up", s.bridge)))
    }

    async fn teardown_segment(&self, s: &SegmentPlan) -> Result<(), String> {
        if s.subnet.is_none() {
            return Ok(());
        }
        Self::delete(&self.handle, &s.bridge).await.map(|_| ())
    }

    async fn prepare_netns(&self, path: &Path) -> Result<(), String> {
        netns::create(path).await.map_err(|e| e.to_string())
    }

    async fn remove_netns(&self, path: &Path) -> Result<(), String> {
        netns::remove(path).await.map_err(|e| e.to_string())
    }

    async fn attach(&self, p: &AttachPlan) -> Result<(), String> {
        let Some(path) = &p.netns else {
            return Ok(());
        };
        let h = &self.handle;
        let peer = format!("{}p", p.veth);
        h.link()
            .add(LinkVeth::new(&p.veth, &peer).build())
            .execute()
            .await
            .map_err(failed(format!("create veth pair {}/{peer}", p.veth)))?;
        let made = async {
            let ns = netns::open(path).map_err(|e| e.to_string())?;
            let peer_index = Self::index(h, &peer)
                .await?
                .ok_or_else(|| format!("failed to find veth {peer} after creating it"))?;
            h.link()
                .set(
                    LinkUnspec::new_with_index(peer_index)
                        .setns_by_fd(ns.as_raw_fd())
                        .build(),
                )
                .execute()
                .await
                .map_err(failed(format!("move veth {peer} into {}", path.display())))?;
            let bridge = Self::index(h, &p.bridge)
                .await?
                .ok_or_else(|| format!("failed to attach: bridge {} does not exist", p.bridge))?;
            let host = Self::index(h, &p.veth)
                .await?
                .ok_or_else(|| format!("failed to find veth {} after creating it", p.veth))?;
            let _ = sysctl(
                format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", p.veth),
                "1",
            );
            h.link()
                .set(
                    LinkUnspec::new_with_index(host)
                        .controller(bridge)
                        .up()
                        .build(),
                )
                .execute()
                .await
                .map_err(failed(format!(
                    "add veth {} to bridge {} and bring it up",
                    p.veth, p.bridge
                )))?;
            let (address, gateway) = (p.address, p.gateway);
            netns::run_in(path, move || inside(peer, address, gateway)).await
        }
        .await;
        if let Err(e) = made {
            let _ = Self::delete(h, &p.veth).await;
            return Err(e);
        }
        Ok(())
    }

    async fn detach(&self, p: &AttachPlan) -> Result<(), String> {
        if p.netns.is_none() {
            return Ok(());
        }
        Self::delete(&self.handle, &p.veth).await.map(|_| ())
    }

    async fn sweep(
        &self,
        prefix: &str,
        netns_dir: &Path,
        keep: &Keep,
    ) -> Result<Vec<String>, String> {
        let mut removed = Vec::new();
        let mut stale = Vec::new();
        let mut links = self.handle.link().get().execute();
        while let Some(link) = links.try_next().await.map_err(failed("list links"))? {
            let name = link.attributes.iter().find_map(|a| match a {
                rtnetlink::packet_route::link::LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            });
            if let Some(name) = name
                && is_ours(prefix, &name)
                && !keep.links.contains(&name)
            {
                stale.push(name);
            }
        }
        // Veths before bridges: a bridge goes with its ports detached.
        stale.sort_by_key(|n| n.as_bytes().get(prefix.len()) == Some(&b'b'));
        let mut errors = Vec::new();
        for name in stale {
            match Self::delete(&self.handle, &name).await {
                Ok(true) => removed.push(format!("link {name}")),
                Ok(false) => {}
                Err(e) => errors.push(e),
            }
        }
        if let Ok(dir) = std::fs::read_dir(netns_dir) {
            for entry in dir.flatten() {
                let path = entry.path();
                let ours = entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(&format!("{prefix}-")));
                if ours && !keep.netns.contains(&path) {
                    match netns::remove(&path).await {
                        Ok(()) => removed.push(format!("netns {}", path.display())),
                        Err(e) => errors.push(e.to_string()),
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(removed)
        } else {
            Err(errors.join("; "))
        }
    }
}

/// Whether `name` is a bridge or veth of `prefix` (`<prefix>b<hex>`,
/// `<prefix>v<hex>`, `<prefix>v<hex>p`).
fn is_ours(prefix: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix) else {
        return false;
    };
    let mut chars = rest.chars();
    match chars.next() {
        Some('b') | Some('v') => {}
        _ => return false,
    }
    let tail = chars.as_str();
    let tail = tail.strip_suffix('p').unwrap_or(tail);
    !tail.is_empty() && tail.chars().all(|c| c.is_ascii_hexdigit())
}

/// Inside the namespace: loopback up, `peer` renamed `eth0` with its
/// address and up, default route via the gateway.
async fn inside(
    peer: String,
    address: Option<(std::net::Ipv4Addr, u8)>,
    gateway: Option<std::net::Ipv4Addr>,
) -> Result<(), String> {
    let (conn, h, _) = rtnetlink::new_connection()
        .map_err(|e| format!("failed to open a netlink socket in the namespace: {e}"))?;
    tokio::spawn(conn);
    let lo = LinuxBridge::index(&h, "lo")
        .await?
        .ok_or("failed to find lo in the namespace")?;
    h.link()
        .set(LinkUnspec::new_with_index(lo).up().build())
        .execute()
        .await
        .map_err(failed("bring lo up in the namespace"))?;
    let index = LinuxBridge::index(&h, &peer)
        .await?
        .ok_or_else(|| format!("failed to find {peer} in the namespace"))?;
    let _ = sysctl(format!("/proc/sys/net/ipv6/conf/{peer}/disable_ipv6"), "1");
    h.link()
        .set(LinkUnspec::new_with_index(index).name("eth0").build())
        .execute()
        .await
        .map_err(failed(format!("rename {peer} to eth0 in the namespace")))?;
    if let Some((addr, prefix)) = address {
        h.address()
            .add(index, IpAddr::V4(addr), prefix)
            .execute()
            .await
            .map_err(failed(format!("add {addr}/{prefix} to eth0")))?;
    }
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(failed("bring eth0 up in the namespace"))?;
    if let Some(gw) = gateway {
        let route = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .gateway(gw)
            .output_interface(index)
            .build();
        h.route()
            .add(route)
            .execute()
            .await
            .map_err(failed(format!("add the default route via {gw}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_ours;

    #[test]
    fn only_names_of_the_prefix_with_a_kind_and_a_number_are_ours() {
        assert!(is_ours("arb", "arbb1f"));
        assert!(is_ours("arb", "arbv2a"));
        assert!(is_ours("arb", "arbv2ap"));
        assert!(!is_ours("arb", "arbx1"));
        assert!(!is_ours("arb", "arbb"));
        assert!(!is_ours("arb", "eth0"));
        assert!(!is_ours("arb", "arbbridge"));
    }
}
