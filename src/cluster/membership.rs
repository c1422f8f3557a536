//! Who is in the cluster, as this node sees it: data plus pure decisions.
//!
//! ractor_cluster notices a dead peer only when its TCP connection errors,
//! which for a hung or powered-off peer can take minutes. Arbor decides by
//! heartbeats instead: a peer is `up` while it answered within
//! `suspect_after`, `suspect` after that, and `down` once it stayed silent
//! for a further `down_grace`. An answer makes it `up` again at once. The
//! table here takes the time as an argument and does no I/O, so every
//! transition is tested as a table.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde::Serialize;

/// Heartbeat timing (defaults: every 1 s, suspect after 3 s of silence,
/// down after a further grace of 10 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often each peer is pinged; also each ping's timeout.
    pub interval: Duration,
    /// Silence after which a peer is suspect.
    pub suspect_after: Duration,
    /// Further silence after which a suspect peer is down.
    pub down_grace: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            suspect_after: Duration::from_secs(3),
            down_grace: Duration::from_secs(10),
        }
    }
}

/// A peer's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    /// Answered within `suspect_after`.
    Up,
    /// Silent for `suspect_after` or more.
    Suspect,
    /// Silent for `suspect_after + down_grace` or more.
    Down,
}

impl std::fmt::Display for PeerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Up => "up",
            Self::Suspect => "suspect",
            Self::Down => "down",
        })
    }
}

/// What this node knows of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's cluster address, as it advertises it.
    pub addr: String,
    /// Its state.
    pub state: PeerState,
    /// When it last answered a heartbeat.
    pub last_ok: Instant,
    /// The round trip of its last answer.
    pub rtt: Duration,
    /// Heartbeats unanswered since its last answer.
    pub missed: u64,
    /// Heartbeats unanswered since it was first seen.
    pub missed_total: u64,
    /// Heartbeats answered.
    pub answered: u64,
}

/// A change of a peer's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The peer answered: first seen, or back from suspect or down.
    Up {
        /// Its name.
        node: String,
        /// Its address.
        addr: String,
    },
    /// The peer was silent for `suspect_after`.
    Suspect {
        /// Its name.
        node: String,
        /// How long it has been silent.
        silent_for: Duration,
    },
    /// The peer was silent for `suspect_after + down_grace`.
    Down {
        /// Its name.
        node: String,
        /// How long it has been silent.
        silent_for: Duration,
    },
}

/// The peers this node has seen, by name.
#[derive(Debug, Clone)]
pub struct Membership {
    timing: Timing,
    peers: BTreeMap<String, Peer>,
    last_tick: Option<Instant>,
}

impl Membership {
    /// No peer yet.
    pub fn new(timing: Timing) -> Self {
        Self {
            timing,
            peers: BTreeMap::new(),
            last_tick: None,
        }
    }

    /// The timing this table decides with.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// The peers, by name.
    pub fn peers(&self) -> &BTreeMap<String, Peer> {
        &self.peers
    }

    /// `node` answered a heartbeat at `now` after `rtt`.
    pub fn answered(
        &mut self,
        node: &str,
        addr: &str,
        rtt: Duration,
        now: Instant,
    ) -> Option<Transition> {
        let up = Transition::Up {
            node: node.to_string(),
            addr: addr.to_string(),
        };
        match self.peers.get_mut(node) {
            None => {
                self.peers.insert(
                    node.to_string(),
                    Peer {
                        addr: addr.to_string(),
                        state: PeerState::Up,
                        last_ok: now,
                        rtt,
                        missed: 0,
                        missed_total: 0,
                        answered: 1,
                    },
                );
                Some(up)
            }
            Some(p) => {
                // An answer that arrives late (sent before the last one
                // seen) says nothing newer.
                p.last_ok = p.last_ok.max(now);
                p.rtt = rtt;
                p.missed = 0;
                p.answered += 1;
                p.addr = addr.to_string();
                let was = std::mem::replace(&mut p.state, PeerState::Up);
                (was != PeerState::Up).then_some(up)
            }
        }
    }

    /// A member seen before (by an earlier run of this node) that has not
    /// answered yet: `suspect` from `now`, so `down` after the grace
    /// unless it answers. It counts towards the majority meanwhile.
    pub fn remember(&mut self, node: &str, addr: &str, now: Instant) {
        self.peers.entry(node.to_string()).or_insert(Peer {
            addr: addr.to_string(),
            state: PeerState::Suspect,
            last_ok: now.checked_sub(self.timing.suspect_after).unwrap_or(now),
            rtt: Duration::ZERO,
            missed: 0,
            missed_total: 0,
            answered: 0,
        });
    }

    /// Forgets `node` (it left): it no longer counts, not even for the
    /// majority. Whether it was known.
    pub fn forget(&mut self, node: &str) -> bool {
        self.peers.remove(node).is_some()
    }

    /// A heartbeat to `node` went unanswered (timed out or failed).
    pub fn missed(&mut self, node: &str) {
        if let Some(p) = self.peers.get_mut(node) {
            p.missed += 1;
            p.missed_total += 1;
        }
    }

    /// The state changes due at `now` (call once per interval).
    ///
    /// If this node itself did not tick for `suspect_after` (it was
    /// stopped, or starved of CPU), it could not hear anyone meanwhile:
    /// the silence of that gap is not held against its peers (their last
    /// answer moves forward by the gap), and the next answers decide.
    pub fn tick(&mut self, now: Instant) -> Vec<Transition> {
        let t = self.timing;
        if let Some(last) = self.last_tick.replace(now) {
            let gap = now.saturating_duration_since(last);
            if gap >= t.suspect_after {
                let lost = gap.saturating_sub(t.interval);
                for p in self.peers.values_mut() {
                    p.last_ok += lost;
                }
            }
        }
        let mut out = Vec::new();
        for (name, p) in &mut self.peers {
            let silent_for = now.saturating_duration_since(p.last_ok);
            let due = if silent_for >= t.suspect_after + t.down_grace {
                PeerState::Down
            } else if silent_for >= t.suspect_after {
                PeerState::Suspect
            } else {
                PeerState::Up
            };
            // Only towards worse: an answer is what makes a peer up again.
            let worse = matches!(
                (p.state, due),
                (PeerState::Up, PeerState::Suspect | PeerState::Down)
                    | (PeerState::Suspect, PeerState::Down)
            );
            if !worse {
                continue;
            }
            // A peer that went straight from up to down (the node itself
            // was paused) still passes through suspect, so that every
            // watcher sees the same sequence.
            if p.state == PeerState::Up {
                out.push(Transition::Suspect {
                    node: name.clone(),
                    silent_for,
                });
            }
            if due == PeerState::Down {
                out.push(Transition::Down {
                    node: name.clone(),
                    silent_for,
                });
            }
            p.state = due;
        }
        out
    }

    /// The names of the peers in `state`.
    pub fn in_state(&self, state: PeerState) -> impl Iterator<Item = &str> {
        self.peers
            .iter()
            .filter(move |(_, p)| p.state == state)
            .map(|(n, _)| n.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn table() -> (Membership, Instant) {
        (Membership::new(Timing::default()), Instant::now())
    }

    fn kinds(ts: &[Transition]) -> Vec<String> {
        ts.iter()
            .map(|t| match t {
                Transition::Up { node, .. } => format!("up {node}"),
                Transition::Suspect { node, .. } => format!("suspect {node}"),
                Transition::Down { node, .. } => format!("down {node}"),
            })
            .collect()
    }

    #[test]
    fn a_first_answer_makes_a_peer_up() {
        let (mut m, t0) = table();
        let t = m.answered("b", "10.0.0.2:7100", Duration::from_millis(1), t0);
        assert_eq!(kinds(&[t.unwrap()]), ["up b"]);
        assert_eq!(m.peers()["b"].state, PeerState::Up);
        assert!(
            m.answered("b", "10.0.0.2:7100", Duration::ZERO, t0)
                .is_none()
        );
    }

    /// Ticks every 100 ms from `from` to `to` (inclusive); what happened.
    fn ticks(m: &mut Membership, t0: Instant, from: Duration, to: Duration) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = from;
        while at <= to {
            out.extend(kinds(&m.tick(t0 + at)));
            at += Duration::from_millis(100);
        }
        out
    }

    #[test]
    fn a_peer_silent_for_suspect_after_is_suspect_then_down_after_the_grace() {
        let (mut m, t0) = table();
        m.answered("b", "x", Duration::ZERO, t0);
        assert!(ticks(&mut m, t0, secs(0), Duration::from_millis(2900)).is_empty());
        assert_eq!(ticks(&mut m, t0, secs(3), secs(3)), ["suspect b"]);
        assert!(
            ticks(
                &mut m,
                t0,
                Duration::from_millis(3100),
                Duration::from_millis(12900)
            )
            .is_empty()
        );
        assert_eq!(m.peers()["b"].state, PeerState::Suspect);
        assert_eq!(ticks(&mut m, t0, secs(13), secs(13)), ["down b"]);
        assert!(ticks(&mut m, t0, Duration::from_millis(13100), secs(60)).is_empty());
        assert_eq!(m.peers()["b"].state, PeerState::Down);
    }

    #[test]
    fn an_answer_brings_a_suspect_or_down_peer_back_up() {
        let (mut m, t0) = table();
        m.answered("b", "x", Duration::ZERO, t0);
        assert_eq!(ticks(&mut m, t0, secs(0), secs(4)), ["suspect b"]);
        let t = m.answered("b", "x", Duration::ZERO, t0 + secs(4));
        assert_eq!(kinds(&[t.unwrap()]), ["up b"]);
        assert_eq!(
            ticks(&mut m, t0, Duration::from_millis(4100), secs(30)),
            ["suspect b", "down b"]
        );
        let t = m.answered("b", "y", Duration::ZERO, t0 + secs(31));
        assert_eq!(kinds(&[t.unwrap()]), ["up b"]);
        assert_eq!(m.peers()["b"].addr, "y");
    }

    #[test]
    fn silence_while_this_node_itself_did_not_tick_is_not_held_against_peers() {
        let (mut m, t0) = table();
        m.answered("b", "x", Duration::ZERO, t0);
        assert!(m.tick(t0 + secs(1)).is_empty());
        // This node was stopped for 14 s: no tick, no answer heard. The
        // gap counts as one interval of silence.
        assert!(m.tick(t0 + secs(15)).is_empty());
        assert_eq!(m.peers()["b"].state, PeerState::Up);
        // Still silent afterwards: 1 s before, 1 for the gap, 1 after.
        assert_eq!(kinds(&m.tick(t0 + secs(16))), ["suspect b"]);
    }

    #[test]
    fn ticks_below_suspect_after_apart_count_their_silence() {
        let (mut m, t0) = table();
        m.answered("b", "x", Duration::ZERO, t0);
        let mut all = Vec::new();
        for s in (0..=14).step_by(2) {
            all.extend(kinds(&m.tick(t0 + secs(s))));
        }
        assert_eq!(all, ["suspect b", "down b"]);
    }

    #[test]
    fn a_late_answer_does_not_move_the_last_answer_back() {
        let (mut m, t0) = table();
        m.answered("b", "x", Duration::ZERO, t0 + secs(5));
        m.answered("b", "x", Duration::ZERO, t0 + secs(4));
        assert_eq!(m.peers()["b"].last_ok, t0 + secs(5));
    }

    #[test]
    fn a_remembered_member_is_suspect_until_it_answers_and_down_after_the_grace() {
        let (mut m, t0) = table();
        m.remember("b", "x", t0);
        m.remember("c", "y", t0);
        assert_eq!(m.peers()["b"].state, PeerState::Suspect);
        let t = m.answered("b", "x", Duration::ZERO, t0 + secs(1));
        assert_eq!(kinds(&[t.unwrap()]), ["up b"]);
        // b answered once and went silent: suspect 3 s later; c never
        // answered: down once the grace ran out.
        assert_eq!(
            ticks(&mut m, t0, secs(1), secs(10)),
            ["suspect b", "down c"]
        );
        // Remembering again changes nothing.
        m.remember("b", "z", t0 + secs(10));
        assert_eq!(m.peers()["b"].addr, "x");
    }

    #[test]
    fn missed_heartbeats_are_counted_until_the_next_answer() {
        let (mut m, t0) = table();
        m.missed("nobody");
        m.answered("b", "x", Duration::ZERO, t0);
        m.missed("b");
        m.missed("b");
        assert_eq!((m.peers()["b"].missed, m.peers()["b"].missed_total), (2, 2));
        m.answered("b", "x", Duration::ZERO, t0 + secs(1));
        assert_eq!((m.peers()["b"].missed, m.peers()["b"].missed_total), (0, 2));
        assert_eq!(m.peers()["b"].answered, 2);
    }

    #[test]
    fn peers_are_judged_each_on_their_own_silence() {
        let (mut m, t0) = table();
        m.answered("b", "x", Duration::ZERO, t0);
        m.answered("c", "y", Duration::ZERO, t0 + secs(2));
        assert_eq!(kinds(&m.tick(t0 + secs(3))), ["suspect b"]);
        assert_eq!(kinds(&m.tick(t0 + secs(5))), ["suspect c"]);
        assert_eq!(
            m.in_state(PeerState::Suspect).collect::<Vec<_>>(),
            ["b", "c"]
        );
    }
}
