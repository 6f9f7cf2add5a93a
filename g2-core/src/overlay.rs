//! The [`Overlay`] strategy: a sans-IO routing state machine (Pastry, Chord, ...).
//!
//! In the style of quinn-proto and raft-rs, an overlay does no I/O and never
//! reads the clock. The runtime (or the simulator) feeds it:
//!
//! * inputs: [`Overlay::join`], [`Overlay::leave`], [`Overlay::handle_message`],
//!   [`Overlay::handle_timeout`], [`Overlay::peer_unreachable`], [`Overlay::rtt_sample`];
//!
//! and after each input drains its outputs in this order:
//!
//! * [`Overlay::poll_transmit`] (messages to send), [`Overlay::poll_timeout`]
//!   (when to call `handle_timeout` next), [`Overlay::poll_event`] (what changed).
//!
//! Queries: [`Overlay::route`], [`Overlay::is_root`], [`Overlay::replica_set`].
//! "Root" is the overlay's own notion of responsibility: the numerically closest
//! node in Pastry, the successor of the key in Chord. The runtime never needs to
//! know which overlay it holds.

use std::time::{Duration, Instant};

use crate::id::{Key, NodeId, Peer};

/// Where a message for a key goes next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// This node is the key's root: deliver here.
    Local,
    /// Send it on to this peer.
    Forward(Peer),
}

/// A message the overlay wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The destination.
    pub to: Peer,
    /// The overlay's own encoding of the message.
    pub payload: Vec<u8>,
}

/// A clockwise half-open key range `[start, end)`; `start == end` is the whole ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyRange {
    /// First key in the range.
    pub start: Key,
    /// First key after the range.
    pub end: Key,
}

impl KeyRange {
    /// Whether `key` lies in the range.
    pub fn contains(&self, key: Key) -> bool {
        self.start == self.end || self.start.cw_distance(key) < self.start.cw_distance(self.end)
    }
}

/// Something that changed in the overlay, for the runtime to act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OverlayEvent {
    /// The node has joined the overlay and routes normally.
    Joined,
    /// Keys in `ranges` now have `new_root` as their root instead of this node
    /// (a node joined nearby): objects in these ranges migrate to it.
    KeysMoved {
        /// The ranges that moved away from this node.
        ranges: Vec<KeyRange>,
        /// Their new root.
        new_root: Peer,
    },
    /// The neighbourhood (leaf set / successor list) changed.
    NeighboursChanged,
    /// A neighbour was declared failed (silent beyond the detection timeout).
    PeerFailed(NodeId),
    /// A graceful leave has finished; the node may stop.
    Left,
}

/// Why an overlay message was refused.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// The message did not decode.
    #[error("malformed overlay message from {from}: {reason}")]
    Malformed {
        /// The sender.
        from: NodeId,
        /// The decoder's complaint.
        reason: String,
    },
    /// The message contradicts the protocol.
    #[error("protocol violation by {from}: {reason}")]
    Protocol {
        /// The sender.
        from: NodeId,
        /// What was wrong.
        reason: String,
    },
}

/// A sans-IO structured overlay (see the module docs for the calling convention).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait Overlay: Send + 'static {
    /// This node.
    fn local(&self) -> Peer;
    /// Starts joining through `bootstrap`, or founds a new overlay when `None`.
    fn join(&mut self, now: Instant, bootstrap: Option<Peer>);
    /// Starts a graceful leave.
    fn leave(&mut self, now: Instant);
    /// A message from a peer (whose id the transport has verified).
    fn handle_message(&mut self, now: Instant, from: Peer, msg: &[u8]) -> Result<(), OverlayError>;
    /// Time has reached the deadline given by `poll_timeout`.
    fn handle_timeout(&mut self, now: Instant);
    /// The transport could not reach `peer`.
    fn peer_unreachable(&mut self, now: Instant, peer: NodeId);
    /// A round-trip time measured to `peer` (proximity-aware overlays use it).
    fn rtt_sample(&mut self, peer: NodeId, rtt: Duration);
    /// The next message to send, if any.
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// When `handle_timeout` should next be called.
    fn poll_timeout(&self) -> Option<Instant>;
    /// The next event, if any.
    fn poll_event(&mut self) -> Option<OverlayEvent>;
    /// The next hop for `key`.
    fn route(&self, key: Key) -> Route;
    /// Whether this node is the root of `key`.
    fn is_root(&self, key: Key) -> bool;
    /// The replica set of `key` as far as this node knows: up to `k` live nodes,
    /// root first, then the nodes that would become root in turn if the ones
    /// before them failed (the `k` numerically closest in Pastry, from the leaf
    /// set; the key's successor and the next ones in Chord). It includes this node
    /// when this node is among them.
    fn replica_set(&self, key: Key, k: usize) -> Vec<Peer>;
    /// Whether the join has completed.
    fn is_joined(&self) -> bool;
    /// Entries in the routing state beyond the neighbourhood (Pastry's routing
    /// table, Chord's fingers), for reports and simulators.
    fn routing_entries(&self) -> usize {
        0
    }
}

/// Builds an [`Overlay`] for a node once its identity is known. Each overlay's
/// config is its own factory (`PastryConfig`, `ChordConfig`).
pub trait OverlayFactory: Send + 'static {
    /// The overlay of node `local`.
    fn build(self: Box<Self>, local: Peer) -> Box<dyn Overlay>;
    /// A short name for logs and reports (`pastry`, `chord`).
    fn name(&self) -> &'static str;
}

/// Most peers an overlay message may list (a hostile-input limit every overlay
/// applies when decoding).
pub const MAX_PEERS_PER_MESSAGE: usize = 1024;
/// Longest transport address an overlay message may carry, in bytes.
pub const MAX_ADDR_LEN: usize = 255;

/// Checks a peer list taken from a message of `from` against
/// [`MAX_PEERS_PER_MESSAGE`] and [`MAX_ADDR_LEN`]; `what` names the list in the
/// error.
pub fn check_peer_list<'a>(
    from: NodeId,
    what: &str,
    addrs: impl ExactSizeIterator<Item = &'a str>,
) -> Result<(), OverlayError> {
    let protocol = |reason: String| OverlayError::Protocol { from, reason };
    let n = addrs.len();
    if n > MAX_PEERS_PER_MESSAGE {
        return Err(protocol(format!(
            "{what} lists {n} peers (max {MAX_PEERS_PER_MESSAGE})"
        )));
    }
    let mut addrs = addrs;
    if let Some(a) = addrs.find(|a| a.len() > MAX_ADDR_LEN) {
        return Err(protocol(format!(
            "{what} has a {}-byte address (max {MAX_ADDR_LEN})",
            a.len()
        )));
    }
    Ok(())
}

/// A factory chosen at run time (`--routing pastry|chord`) is a factory too.
impl OverlayFactory for Box<dyn OverlayFactory> {
    fn build(self: Box<Self>, local: Peer) -> Box<dyn Overlay> {
        (*self).build(local)
    }
    fn name(&self) -> &'static str {
        (**self).name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ranges_wrap() {
        let r = KeyRange {
            start: Key(u128::MAX - 2),
            end: Key(2),
        };
        assert!(r.contains(Key(u128::MAX)));
        assert!(r.contains(Key(0)));
        assert!(r.contains(Key(1)));
        assert!(!r.contains(Key(2)));
        assert!(!r.contains(Key(100)));
        let all = KeyRange {
            start: Key(5),
            end: Key(5),
        };
        assert!(all.contains(Key(0)));
    }
}
