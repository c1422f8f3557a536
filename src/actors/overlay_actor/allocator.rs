//! Address bookkeeping: subnets carved from the node's pool (one per
//! segment) and addresses within a segment's subnet (one per attachment).
//!
//! Both are plain sets owned by the overlay actor. An address (or subnet) is
//! held from `take` until `release`; a held one is never handed out again.
//! Released ones are reused, but the next `take` starts after the last one
//! handed out (round robin), so a just-released address rests as long as
//! possible before it comes back (stale ARP entries on peers age out).

use std::{collections::BTreeSet, fmt, net::Ipv4Addr, str::FromStr};

use serde::{Deserialize, Serialize};

/// An IPv4 network: an address and a prefix length (`10.231.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

/// A subnet or address that could not be parsed, allocated or taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// Not `A.B.C.D/N`.
    #[error("failed to parse network {value:?}: {reason}")]
    Parse {
        /// The text.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The pool cannot hold subnets of this size.
    #[error("failed to carve /{prefix} subnets from {pool}: {reason}")]
    Carve {
        /// The pool.
        pool: Ipv4Net,
        /// The subnet prefix asked for.
        prefix: u8,
        /// Why.
        reason: &'static str,
    },
    /// Every subnet of the pool is held.
    #[error(
        "failed to allocate a subnet for segment {segment}: all {count} /{prefix} subnets of {pool} are held"
    )]
    PoolExhausted {
        /// The segment asking.
        segment: String,
        /// The pool.
        pool: Ipv4Net,
        /// Subnet prefix.
        prefix: u8,
        /// How many subnets the pool has.
        count: u32,
    },
    /// Every address of a segment's subnet is held.
    #[error(
        "failed to allocate an address on segment {segment}: all {count} addresses of {subnet} are held"
    )]
    SubnetExhausted {
        /// The segment.
        segment: String,
        /// Its subnet.
        subnet: Ipv4Net,
        /// How many addresses it hands out.
        count: u32,
    },
    /// A specific address or subnet was asked for but is held or outside.
    #[error("failed to reserve {value} on {within}: {reason}")]
    Reserve {
        /// What was asked for.
        value: String,
        /// The subnet or pool.
        within: String,
        /// Why not.
        reason: &'static str,
    },
}

impl Ipv4Net {
    /// `addr/prefix`, with the host bits cleared.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, AllocError> {
        if prefix > 32 {
            return Err(AllocError::Parse {
                value: format!("{addr}/{prefix}"),
                reason: "prefix length must be at most 32",
            });
        }
        Ok(Self {
            addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        })
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// How many addresses it spans (network and broadcast included).
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The `n`th address (0 = the network address), if inside.
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        (n < self.size()).then(|| Ipv4Addr::from(u32::from(self.addr) + n as u32))
    }

    /// Whether `addr` is inside.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == u32::from(self.addr)
    }

    /// Whether the two overlap.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = AllocError;
    fn from_str(s: &str) -> Result<Self, AllocError> {
        let bad = |reason| AllocError::Parse {
            value: s.to_owned(),
            reason,
        };
        let (a, p) = s.split_once('/').ok_or_else(|| bad("expected A.B.C.D/N"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| bad("prefix length is not a number"))?;
        let net = Self::new(addr, prefix)?;
        if net.addr != addr {
            return Err(bad("host bits are set (give the network address)"));
        }
        Ok(net)
    }
}

impl TryFrom<String> for Ipv4Net {
    type Error = AllocError;
    fn try_from(s: String) -> Result<Self, AllocError> {
        s.parse()
    }
}

impl From<Ipv4Net> for String {
    fn from(n: Ipv4Net) -> String {
        n.to_string()
    }
}

/// Round-robin over `0..count`, skipping held slots.
#[derive(Debug, Clone, Default)]
struct Slots {
    count: u32,
    held: BTreeSet<u32>,
    next: u32,
}

impl Slots {
    fn new(count: u32) -> Self {
        Self {
            count,
            held: BTreeSet::new(),
            next: 0,
        }
    }

    fn take(&mut self) -> Option<u32> {
        if self.held.len() as u64 >= u64::from(self.count) {
            return None;
        }
        let found = (self.next..self.count)
            .chain(0..self.next)
            .find(|n| !self.held.contains(n))?;
        self.held.insert(found);
        self.next = (found + 1) % self.count.max(1);
        Some(found)
    }

    fn reserve(&mut self, n: u32) -> bool {
        n < self.count && self.held.insert(n)
    }

    fn release(&mut self, n: u32) -> bool {
        self.held.remove(&n)
    }
}

/// Subnets of one prefix length carved from a pool.
#[derive(Debug, Clone)]
pub struct SubnetPool {
    pool: Ipv4Net,
    prefix: u8,
    slots: Slots,
}

impl SubnetPool {
    /// `/prefix` subnets of `pool`; each needs room for a gateway and at
    /// least two attachments (prefix at most 29).
    pub fn new(pool: Ipv4Net, prefix: u8) -> Result<Self, AllocError> {
        let carve = |reason| AllocError::Carve {
            pool,
            prefix,
            reason,
        };
        if prefix < pool.prefix() {
            return Err(carve("subnets must be smaller than the pool"));
        }
        if prefix > 29 {
            return Err(carve(
                "subnets must be /29 or larger (a gateway and two attachments)",
            ));
        }
        let bits = u32::from(prefix - pool.prefix());
        if bits > 16 {
            return Err(carve("at most 65536 subnets per pool"));
        }
        Ok(Self {
            pool,
            prefix,
            slots: Slots::new(1 << bits),
        })
    }

    /// The pool.
    pub fn pool(&self) -> Ipv4Net {
        self.pool
    }

    fn subnet(&self, n: u32) -> Ipv4Net {
        let step = 1u32 << (32 - u32::from(self.prefix));
        Ipv4Net {
            addr: Ipv4Addr::from(u32::from(self.pool.network()) + n * step),
            prefix: self.prefix,
        }
    }

    fn index(&self, subnet: Ipv4Net) -> Option<u32> {
        (subnet.prefix == self.prefix && self.pool.contains(subnet.addr)).then(|| {
            (u32::from(subnet.addr) - u32::from(self.pool.network()))
                >> (32 - u32::from(self.prefix))
        })
    }

    /// A free subnet for `segment`.
    pub fn take(&mut self, segment: &str) -> Result<Ipv4Net, AllocError> {
        match self.slots.take() {
            Some(n) => Ok(self.subnet(n)),
            None => Err(AllocError::PoolExhausted {
                segment: segment.to_owned(),
                pool: self.pool,
                prefix: self.prefix,
                count: self.slots.count,
            }),
        }
    }

    /// Marks `subnet` held (state found at start-up).
    pub fn reserve(&mut self, subnet: Ipv4Net) -> Result<(), AllocError> {
        let err = |reason| AllocError::Reserve {
            value: subnet.to_string(),
            within: self.pool.to_string(),
            reason,
        };
        let n = self
            .index(subnet)
            .ok_or_else(|| err("not a subnet of the pool"))?;
        if self.slots.reserve(n) {
            Ok(())
        } else {
            Err(err("already held"))
        }
    }

    /// Gives `subnet` back; false when it was not held.
    pub fn release(&mut self, subnet: Ipv4Net) -> bool {
        self.index(subnet).is_some_and(|n| self.slots.release(n))
    }

    /// How many subnets are held.
    pub fn held(&self) -> usize {
        self.slots.held.len()
    }
}

/// The addresses of one segment's subnet: `.1` is the gateway (the bridge's
/// own address), the rest up to the broadcast address go to attachments.
#[derive(Debug, Clone)]
pub struct AddressPool {
    segment: String,
    subnet: Ipv4Net,
    slots: Slots,
}

impl AddressPool {
    /// The attachment addresses of `subnet` (at most /29).
    pub fn new(segment: &str, subnet: Ipv4Net) -> Self {
        // Network, gateway and broadcast are never handed out.
        let count = subnet.size().saturating_sub(3).min(u64::from(u32::MAX)) as u32;
        Self {
            segment: segment.to_owned(),
            subnet,
            slots: Slots::new(count),
        }
    }

    /// The subnet.
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// The gateway address (`.1`).
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.nth(1).unwrap_or(self.subnet.network())
    }

    /// A free address.
    pub fn take(&mut self) -> Result<Ipv4Addr, AllocError> {
        match self.slots.take() {
            Some(n) => Ok(Ipv4Addr::from(u32::from(self.subnet.network()) + 2 + n)),
            None => Err(AllocError::SubnetExhausted {
                segment: self.segment.clone(),
                subnet: self.subnet,
                count: self.slots.count,
            }),
        }
    }

    fn index(&self, addr: Ipv4Addr) -> Option<u32> {
        let n = u32::from(addr).checked_sub(u32::from(self.subnet.network()) + 2)?;
        (self.subnet.contains(addr) && n < self.slots.count).then_some(n)
    }

    /// Marks `addr` held (state found at start-up).
    pub fn reserve(&mut self, addr: Ipv4Addr) -> Result<(), AllocError> {
        let err = |reason| AllocError::Reserve {
            value: addr.to_string(),
            within: format!("segment {} ({})", self.segment, self.subnet),
            reason,
        };
        let n = self
            .index(addr)
            .ok_or_else(|| err("not an attachment address of the subnet"))?;
        if self.slots.reserve(n) {
            Ok(())
        } else {
            Err(err("already held"))
        }
    }

    /// Gives `addr` back; false when it was not held.
    pub fn release(&mut self, addr: Ipv4Addr) -> bool {
        self.index(addr).is_some_and(|n| self.slots.release(n))
    }

    /// How many addresses are held.
    pub fn held(&self) -> usize {
        self.slots.held.len()
    }
}
