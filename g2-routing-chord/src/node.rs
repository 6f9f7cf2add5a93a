//! [`ChordNode`]: one node's Chord state machine.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use g2_core::overlay::{KeyRange, Overlay, OverlayError, OverlayEvent, Route, Transmit};
use g2_core::{Key, NodeId, Peer};

use crate::config::ChordConfig;
use crate::finger_table::{FINGERS, FingerTable};
use crate::message::{MAX_ADDR, Msg, WirePeer};

/// How many hops a lookup may travel before it is dropped (a loop guard).
const MAX_HOPS: u8 = 160;
/// How many recently failed or departed nodes are remembered (not re-learned
/// from stale successor lists).
const MAX_DEAD: usize = 256;

#[derive(Debug)]
enum Phase {
    Idle,
    Joining {
        bootstrap: Peer,
        tag: u64,
        deadline: Instant,
    },
    Joined,
    Left,
}

/// A request awaiting its answer from `peer` by `deadline`.
#[derive(Debug)]
struct Awaiting {
    peer: NodeId,
    deadline: Instant,
}

/// A `fix_fingers` lookup in flight.
#[derive(Debug)]
struct FingerLookup {
    tag: u64,
    index: usize,
    deadline: Instant,
}

/// One step of `find_successor` at this node.
enum Step {
    /// The key's successor is known here.
    Answer(Peer),
    /// Ask this closer preceding node.
    Forward(Peer),
}

/// One Chord node (Stoica et al., SIGCOMM 2001) as a sans-IO state machine
/// implementing [`Overlay`].
///
/// State: the predecessor, a successor list of the `r` nodes following this one
/// clockwise, and a finger table (finger `i` is the successor of
/// `n + 2^i`), run-length encoded since only about log2 N of the 128 fingers
/// differ. The root of a key is its successor: the first node clockwise at or
/// after it, so this node is the root of `(predecessor, self]`.
///
/// * Inputs: [`Overlay::join`], [`Overlay::leave`], [`Overlay::handle_message`],
///   [`Overlay::handle_timeout`], [`Overlay::peer_unreachable`], [`Overlay::rtt_sample`].
/// * Outputs, drained in this order after each input: [`Overlay::poll_transmit`],
///   [`Overlay::poll_timeout`], [`Overlay::poll_event`].
///
/// Protocol: a joiner asks its bootstrap for `find_successor(own id)`, which is
/// forwarded recursively along closest preceding nodes; the answer gives its
/// successor and successor list. `stabilize` (every `stabilize_period`) asks the
/// successor for its predecessor and successor list and notifies it at once; a
/// successor that accepts a new predecessor tells the old one of its new
/// successor and tells the newcomer its predecessor, so that a join settles in
/// a few round trips. `fix_fingers` refreshes one distinct finger per period;
/// `check_predecessor` pings the predecessor. A successor that does not answer a
/// stabilize within `request_timeout` is dropped from the successor list and the
/// next one takes over; a silent predecessor is forgotten, but this node keeps
/// the keys it was root of until a new predecessor notifies it.
#[derive(Debug)]
pub struct ChordNode {
    cfg: ChordConfig,
    local: Peer,
    key: Key,
    phase: Phase,
    predecessor: Option<Peer>,
    /// This node is the root of `(owned_from, self]` (the whole ring when equal
    /// to its own key); `None` right after joining, until a predecessor is known.
    owned_from: Option<Key>,
    /// The next nodes clockwise, nearest first, without this node.
    successors: Vec<Peer>,
    fingers: FingerTable,
    next_finger: usize,
    next_stabilize: Option<Instant>,
    next_fix_fingers: Option<Instant>,
    next_check_predecessor: Option<Instant>,
    stabilizing: Option<Awaiting>,
    pinging: Option<Awaiting>,
    finger_lookups: Vec<FingerLookup>,
    dead: Vec<(NodeId, Instant)>,
    next_tag: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<OverlayEvent>,
}

impl ChordNode {
    /// A node that has not joined yet. An invalid `cfg` falls back to the default.
    pub fn new(cfg: ChordConfig, local: Peer) -> Self {
        let cfg = cfg.or_default();
        let key = local.id.key();
        Self {
            cfg,
            local,
            key,
            phase: Phase::Idle,
            predecessor: None,
            owned_from: None,
            successors: Vec::new(),
            fingers: FingerTable::default(),
            next_finger: 0,
            next_stabilize: None,
            next_fix_fingers: None,
            next_check_predecessor: None,
            stabilizing: None,
            pinging: None,
            finger_lookups: Vec::new(),
            dead: Vec::new(),
            next_tag: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// A node that is already joined, its predecessor, successor list and
    /// fingers computed from `peers` (the other members) as stabilisation would
    /// leave them. Simulators use it to set up large networks without running
    /// every join; `Joined` is the first event.
    pub fn with_known_peers(
        cfg: ChordConfig,
        local: Peer,
        now: Instant,
        peers: impl IntoIterator<Item = Peer>,
    ) -> Self {
        let mut n = Self::new(cfg, local);
        let me = n.key;
        let mut peers: Vec<Peer> = peers.into_iter().filter(|p| p.id != n.local.id).collect();
        peers.sort_by_key(|p| me.cw_distance(p.id.key()));
        peers.dedup_by(|a, b| a.id == b.id);
        n.successors = peers
            .iter()
            .take(n.cfg.successor_list_len)
            .cloned()
            .collect();
        n.predecessor = peers.last().cloned();
        n.owned_from = Some(n.predecessor.as_ref().map_or(me, |p| p.id.key()));
        let mut i = 0;
        while i < FINGERS {
            let start = me.cw_distance(FingerTable::start(me, i));
            let at = peers.partition_point(|p| me.cw_distance(p.id.key()) < start);
            let Some(p) = peers.get(at) else { break };
            let hi = FingerTable::first_beyond(me.cw_distance(p.id.key()));
            n.fingers.set_range(i, hi, p);
            i = hi.max(i + 1);
        }
        n.fingers.shrink_to_fit();
        n.successors.shrink_to_fit();
        n.become_joined(now);
        n
    }

    /// The configuration in use.
    pub fn config(&self) -> &ChordConfig {
        &self.cfg
    }

    /// The predecessor, if known.
    pub fn predecessor(&self) -> Option<&Peer> {
        self.predecessor.as_ref()
    }

    /// The successor list, nearest first.
    pub fn successors(&self) -> &[Peer] {
        &self.successors
    }

    /// The distinct fingers, in finger order (nearest first).
    pub fn fingers(&self) -> Vec<Peer> {
        let mut out: Vec<Peer> = Vec::new();
        for p in self.fingers.peers() {
            if !out.iter().any(|q| q.id == p.id) {
                out.push(p.clone());
            }
        }
        out
    }

    /// Finger `i` (the successor of `self + 2^i` as last looked up), if known.
    pub fn finger(&self, i: usize) -> Option<&Peer> {
        self.fingers.get(i)
    }

    fn joined(&self) -> bool {
        matches!(self.phase, Phase::Joined)
    }

    fn send(&mut self, to: Peer, msg: &Msg) {
        self.transmits.push_back(Transmit {
            to,
            payload: msg.encode(),
        });
    }

    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    fn wire_successors(&self) -> Vec<WirePeer> {
        self.successors.iter().map(WirePeer::of).collect()
    }

    fn is_dead(&self, id: NodeId) -> bool {
        self.dead.iter().any(|(d, _)| *d == id)
    }

    fn mark_dead(&mut self, id: NodeId, now: Instant) {
        self.dead.retain(|(d, _)| *d != id);
        if self.dead.len() >= MAX_DEAD {
            self.dead.remove(0);
        }
        // A dead entry leaves the successor lists one node back per
        // stabilisation round: remember it for as long as r rounds take.
        let rounds = u32::try_from(self.cfg.successor_list_len + 2).unwrap_or(u32::MAX);
        let memory = self.cfg.stabilize_period.saturating_mul(rounds) + self.cfg.request_timeout;
        self.dead.push((id, now + memory));
    }

    /// Whether `x` lies strictly between this node and `to`, clockwise.
    fn strictly_between(&self, x: Key, to: Key) -> bool {
        x != self.key && x != to && x.in_interval_open_closed(self.key, to)
    }

    /// Replaces the successor list with `cands` (sorted clockwise, without this
    /// node, failed nodes and duplicates, at most r). Stabilises at once with a
    /// new first successor.
    fn set_successors(&mut self, now: Instant, mut cands: Vec<Peer>) {
        let me = self.key;
        cands.retain(|p| p.id != self.local.id && !self.is_dead(p.id));
        cands.sort_by_key(|p| me.cw_distance(p.id.key()));
        cands.dedup_by(|a, b| a.id == b.id);
        cands.truncate(self.cfg.successor_list_len);
        let old_first = self.successors.first().map(|p| p.id);
        let changed = cands.len() != self.successors.len()
            || cands
                .iter()
                .zip(&self.successors)
                .any(|(a, b)| a.id != b.id);
        self.successors = cands;
        if self.successors.is_empty() {
            self.alone_or_predecessor_as_successor();
        }
        if changed {
            self.events.push_back(OverlayEvent::NeighboursChanged);
        }
        if self.successors.first().map(|p| p.id) != old_first {
            self.stabilize(now);
        }
    }

    /// With no successor left: the predecessor becomes the successor, or this
    /// node is alone and the root of the whole ring.
    fn alone_or_predecessor_as_successor(&mut self) {
        match self.predecessor.clone() {
            Some(p) => self.successors.push(p),
            None => {
                if self.owned_from != Some(self.key) {
                    tracing::debug!(node = %self.local.id, "no successor left: alone on the ring");
                }
                self.owned_from = Some(self.key);
            }
        }
    }

    /// A new predecessor: keys in `(old start, new]` move to it when it is
    /// inside the range this node was root of.
    fn set_predecessor(&mut self, p: Peer) {
        let pk = p.id.key();
        if let Some(from) = self.owned_from
            && pk != self.key
            && pk.in_interval_open_closed(from, self.key)
        {
            let range = KeyRange {
                start: Key(from.0.wrapping_add(1)),
                end: Key(pk.0.wrapping_add(1)),
            };
            tracing::debug!(node = %self.local.id, new_root = %p.id, "keys move to a new predecessor");
            self.events.push_back(OverlayEvent::KeysMoved {
                ranges: vec![range],
                new_root: p.clone(),
            });
        }
        self.owned_from = Some(pk);
        if self.predecessor.as_ref().map(|q| q.id) != Some(p.id) {
            self.pinging = None;
            self.predecessor = Some(p);
            self.events.push_back(OverlayEvent::NeighboursChanged);
        }
    }

    /// Sends a stabilize (get predecessor + notify) to the successor unless
    /// one is already awaiting its answer.
    fn stabilize(&mut self, now: Instant) {
        if !self.joined() {
            return;
        }
        let Some(s) = self.successors.first().cloned() else {
            return;
        };
        if self.stabilizing.as_ref().is_some_and(|a| a.peer == s.id) {
            return;
        }
        self.stabilizing = Some(Awaiting {
            peer: s.id,
            deadline: now + self.cfg.request_timeout,
        });
        self.send(s, &Msg::Stabilize);
    }

    /// Refreshes the next distinct finger.
    fn fix_fingers(&mut self, now: Instant) {
        let Some(succ) = self.successors.first().cloned() else {
            return;
        };
        // Fingers whose start is within (self, successor] are the successor.
        let first = FingerTable::first_beyond(self.key.cw_distance(succ.id.key()));
        self.fingers.set_range(0, first, &succ);
        if self.next_finger < first || self.next_finger >= FINGERS {
            self.next_finger = first;
        }
        if self.next_finger >= FINGERS {
            return;
        }
        let index = self.next_finger;
        self.next_finger += 1;
        let start = FingerTable::start(self.key, index);
        match self.lookup_step(start) {
            Step::Answer(p) => self.finger_found(index, &p),
            Step::Forward(next) => {
                let tag = self.tag();
                self.finger_lookups.push(FingerLookup {
                    tag,
                    index,
                    deadline: now + self.cfg.request_timeout,
                });
                let origin = WirePeer::of(&self.local);
                self.send(
                    next,
                    &Msg::FindSuccessor {
                        key: start.0,
                        origin,
                        tag,
                        hops: 0,
                    },
                );
            }
        }
    }

    fn finger_found(&mut self, index: usize, p: &Peer) {
        if p.id == self.local.id {
            // No node from the finger's start up to this node.
            self.fingers.truncate_from(index);
            self.next_finger = FINGERS;
            return;
        }
        if self.is_dead(p.id) {
            return;
        }
        let hi = FingerTable::first_beyond(self.key.cw_distance(p.id.key()));
        self.fingers.set_range(index, hi.max(index + 1), p);
        if hi > self.next_finger {
            self.next_finger = hi;
        }
    }

    /// The known node closest before `key` going clockwise from this node.
    fn closest_preceding(&self, key: Key) -> Option<&Peer> {
        let limit = self.key.cw_distance(key);
        self.fingers
            .peers()
            .chain(self.successors.iter())
            .filter(|p| {
                let d = self.key.cw_distance(p.id.key());
                d != 0 && d < limit
            })
            .max_by_key(|p| self.key.cw_distance(p.id.key()))
    }

    /// One step of `find_successor(key)` at this (joined) node.
    fn lookup_step(&self, key: Key) -> Step {
        let Some(succ) = self.successors.first() else {
            return Step::Answer(self.local.clone());
        };
        if self.is_root(key) {
            return Step::Answer(self.local.clone());
        }
        if key.in_interval_open_closed(self.key, succ.id.key()) {
            return Step::Answer(succ.clone());
        }
        Step::Forward(self.closest_preceding(key).unwrap_or(succ).clone())
    }

    fn become_joined(&mut self, now: Instant) {
        self.phase = Phase::Joined;
        self.next_stabilize = Some(now + self.cfg.stabilize_period);
        self.next_fix_fingers = Some(now + self.cfg.fix_fingers_period);
        self.next_check_predecessor = Some(now + self.cfg.check_predecessor_period);
        self.events.push_back(OverlayEvent::Joined);
    }

    /// Removes a node from the successor list, the fingers and the predecessor;
    /// `failed` emits `PeerFailed` when it was a neighbour.
    fn forget(&mut self, now: Instant, id: NodeId, failed: bool) {
        self.mark_dead(id, now);
        self.fingers.remove(id);
        if self.stabilizing.as_ref().is_some_and(|a| a.peer == id) {
            self.stabilizing = None;
        }
        let mut neighbour = false;
        if self.predecessor.as_ref().is_some_and(|p| p.id == id) {
            // Keep `owned_from`: the keys stay here until a new predecessor
            // notifies this node.
            self.predecessor = None;
            self.pinging = None;
            neighbour = true;
        }
        if self.successors.iter().any(|p| p.id == id) {
            neighbour = true;
            let rest = self.successors.clone();
            self.set_successors(now, rest);
        } else if neighbour {
            self.events.push_back(OverlayEvent::NeighboursChanged);
        }
        if neighbour && failed {
            tracing::debug!(node = %self.local.id, peer = %id, "neighbour failed");
            self.events.push_back(OverlayEvent::PeerFailed(id));
        }
    }

    fn on_tick(&mut self, now: Instant) {
        if let Phase::Joining {
            bootstrap,
            tag,
            deadline,
        } = &mut self.phase
        {
            if now >= *deadline {
                *deadline = now + self.cfg.request_timeout;
                let to = bootstrap.clone();
                let tag = *tag;
                tracing::debug!(node = %self.local.id, bootstrap = %to.id, "join lookup timed out; asking again");
                let origin = WirePeer::of(&self.local);
                self.send(
                    to,
                    &Msg::FindSuccessor {
                        key: self.key.0,
                        origin,
                        tag,
                        hops: 0,
                    },
                );
            }
            return;
        }
        if !self.joined() {
            return;
        }
        self.dead.retain(|(_, until)| *until > now);
        self.finger_lookups.retain(|l| l.deadline > now);
        if let Some(a) = self.stabilizing.take_if(|a| a.deadline <= now) {
            tracing::debug!(node = %self.local.id, peer = %a.peer, "successor did not answer stabilize");
            self.forget(now, a.peer, true);
        }
        if let Some(a) = self.pinging.take_if(|a| a.deadline <= now) {
            tracing::debug!(node = %self.local.id, peer = %a.peer, "predecessor did not answer");
            self.forget(now, a.peer, true);
        }
        if self.next_stabilize.is_some_and(|t| t <= now) {
            self.next_stabilize = Some(now + self.cfg.stabilize_period);
            self.stabilize(now);
        }
        if self.next_check_predecessor.is_some_and(|t| t <= now) {
            self.next_check_predecessor = Some(now + self.cfg.check_predecessor_period);
            if self.pinging.is_none()
                && let Some(p) = self.predecessor.clone()
            {
                self.pinging = Some(Awaiting {
                    peer: p.id,
                    deadline: now + self.cfg.request_timeout,
                });
                self.send(p, &Msg::Ping);
            }
        }
        if self.next_fix_fingers.is_some_and(|t| t <= now) {
            self.next_fix_fingers = Some(now + self.cfg.fix_fingers_period);
            self.fix_fingers(now);
        }
    }

    fn on_message(&mut self, now: Instant, from: &Peer, msg: Msg) {
        match msg {
            Msg::FindSuccessor {
                key,
                origin,
                tag,
                hops,
            } => {
                if !self.joined() || hops >= MAX_HOPS {
                    return;
                }
                match self.lookup_step(Key(key)) {
                    Step::Answer(successor) => {
                        let reply = Msg::FoundSuccessor {
                            tag,
                            successor: WirePeer::of(&successor),
                            successors: self.wire_successors(),
                            hops,
                        };
                        self.send(origin.peer(), &reply);
                    }
                    Step::Forward(next) => {
                        let fwd = Msg::FindSuccessor {
                            key,
                            origin,
                            tag,
                            hops: hops + 1,
                        };
                        self.send(next, &fwd);
                    }
                }
            }
            Msg::FoundSuccessor {
                tag,
                successor,
                successors,
                hops,
            } => {
                let successor = successor.peer();
                match &self.phase {
                    Phase::Joining { tag: t, .. } if *t == tag => {
                        if successor.id == self.local.id {
                            // Our id is taken by a live node, or the answer is stale.
                            tracing::warn!(node = %self.local.id, "join lookup answered with our own id");
                            return;
                        }
                        let mut list = vec![successor];
                        list.extend(successors.iter().map(WirePeer::peer));
                        self.become_joined(now);
                        tracing::debug!(node = %self.local.id, successor = %list[0].id, hops, "joined the Chord ring");
                        self.set_successors(now, list);
                    }
                    Phase::Joined => {
                        if let Some(i) = self.finger_lookups.iter().position(|l| l.tag == tag) {
                            let l = self.finger_lookups.swap_remove(i);
                            self.finger_found(l.index, &successor);
                        }
                    }
                    _ => {}
                }
            }
            Msg::Stabilize => {
                if !self.joined() {
                    return;
                }
                let accept = match &self.predecessor {
                    None => true,
                    Some(p) => {
                        p.id != from.id
                            && from.id.key() != self.key
                            && from.id.key().in_interval_open_closed(p.id.key(), self.key)
                    }
                };
                let mut previous = None;
                if accept {
                    previous = self.predecessor.clone();
                    self.set_predecessor(from.clone());
                    if let Some(old) = &previous {
                        let hint = Msg::NewSuccessor {
                            successor: WirePeer::of(from),
                        };
                        self.send(old.clone(), &hint);
                    }
                }
                if self.successors.is_empty() {
                    // This node was alone: the notifier is its successor too.
                    let mut list = self.successors.clone();
                    list.push(from.clone());
                    self.set_successors(now, list);
                }
                let reply = Msg::StabilizeReply {
                    predecessor: self.predecessor.as_ref().map(WirePeer::of),
                    previous: previous.as_ref().map(WirePeer::of),
                    successors: self.wire_successors(),
                };
                self.send(from.clone(), &reply);
            }
            Msg::StabilizeReply {
                predecessor,
                previous,
                successors,
            } => {
                if self.stabilizing.as_ref().is_some_and(|a| a.peer == from.id) {
                    self.stabilizing = None;
                }
                if !self.joined() || self.successors.first().map(|p| p.id) != Some(from.id) {
                    return;
                }
                let mut list = vec![from.clone()];
                list.extend(successors.iter().map(WirePeer::peer));
                if let Some(p) = predecessor.map(|w| w.peer())
                    && self.strictly_between(p.id.key(), from.id.key())
                    && !self.is_dead(p.id)
                {
                    list.push(p);
                }
                self.set_successors(now, list);
                if let Some(q) = previous.map(|w| w.peer())
                    && q.id != self.local.id
                    && !self.is_dead(q.id)
                {
                    let take = match &self.predecessor {
                        None => true,
                        Some(p) => {
                            p.id != q.id && q.id.key().in_interval_open_closed(p.id.key(), self.key)
                        }
                    };
                    if take {
                        self.set_predecessor(q);
                    }
                }
            }
            Msg::NewSuccessor { successor } => {
                let s = successor.peer();
                if self.joined()
                    && !self.is_dead(s.id)
                    && self
                        .successors
                        .first()
                        .is_some_and(|first| self.strictly_between(s.id.key(), first.id.key()))
                {
                    let mut list = self.successors.clone();
                    list.push(s);
                    self.set_successors(now, list);
                }
            }
            Msg::Ping => self.send(from.clone(), &Msg::Pong),
            Msg::Pong => {
                if self.pinging.as_ref().is_some_and(|a| a.peer == from.id) {
                    self.pinging = None;
                }
            }
            Msg::Leave {
                predecessor,
                successors,
            } => {
                if !self.joined() {
                    return;
                }
                let was_predecessor = self.predecessor.as_ref().is_some_and(|p| p.id == from.id);
                let was_successor = self.successors.iter().any(|p| p.id == from.id);
                self.forget(now, from.id, false);
                if was_predecessor
                    && self.predecessor.is_none()
                    && let Some(p) = predecessor.map(|w| w.peer())
                    && p.id != self.local.id
                    && !self.is_dead(p.id)
                {
                    self.set_predecessor(p);
                }
                if was_successor {
                    let mut list = self.successors.clone();
                    list.extend(successors.iter().map(WirePeer::peer));
                    self.set_successors(now, list);
                }
            }
        }
    }
}

impl Overlay for ChordNode {
    fn local(&self) -> Peer {
        self.local.clone()
    }

    fn join(&mut self, now: Instant, bootstrap: Option<Peer>) {
        if !matches!(self.phase, Phase::Idle) {
            return;
        }
        match bootstrap {
            Some(b) if b.id != self.local.id => {
                let tag = self.tag();
                let origin = WirePeer::of(&self.local);
                self.send(
                    b.clone(),
                    &Msg::FindSuccessor {
                        key: self.key.0,
                        origin,
                        tag,
                        hops: 0,
                    },
                );
                self.phase = Phase::Joining {
                    bootstrap: b,
                    tag,
                    deadline: now + self.cfg.request_timeout,
                };
            }
            _ => {
                tracing::debug!(node = %self.local.id, "founded a new Chord ring");
                self.owned_from = Some(self.key);
                self.become_joined(now);
            }
        }
    }

    fn leave(&mut self, now: Instant) {
        let _ = now;
        if self.joined() {
            if let (Some(from), Some(succ)) = (self.owned_from, self.successors.first()) {
                self.events.push_back(OverlayEvent::KeysMoved {
                    ranges: vec![KeyRange {
                        start: Key(from.0.wrapping_add(1)),
                        end: Key(self.key.0.wrapping_add(1)),
                    }],
                    new_root: succ.clone(),
                });
            }
            let msg = Msg::Leave {
                predecessor: self.predecessor.as_ref().map(WirePeer::of),
                successors: self.wire_successors(),
            };
            let mut to: Vec<Peer> = self.successors.iter().take(1).cloned().collect();
            if let Some(p) = &self.predecessor
                && !to.iter().any(|q| q.id == p.id)
            {
                to.push(p.clone());
            }
            for p in to {
                self.send(p, &msg);
            }
            tracing::debug!(node = %self.local.id, "leaving the Chord ring");
        }
        self.phase = Phase::Left;
        self.next_stabilize = None;
        self.next_fix_fingers = None;
        self.next_check_predecessor = None;
        self.stabilizing = None;
        self.pinging = None;
        self.events.push_back(OverlayEvent::Left);
    }

    fn handle_message(&mut self, now: Instant, from: Peer, msg: &[u8]) -> Result<(), OverlayError> {
        let msg = Msg::decode(from.id, msg)?;
        if from.addr.as_str().len() > MAX_ADDR {
            return Err(OverlayError::Protocol {
                from: from.id,
                reason: "address too long".into(),
            });
        }
        if matches!(self.phase, Phase::Idle | Phase::Left) || from.id == self.local.id {
            return Ok(());
        }
        if !matches!(msg, Msg::Leave { .. }) {
            // It speaks, so it is alive.
            self.dead.retain(|(d, _)| *d != from.id);
        }
        self.on_message(now, &from, msg);
        Ok(())
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.on_tick(now);
    }

    fn peer_unreachable(&mut self, now: Instant, peer: NodeId) {
        if peer != self.local.id && self.joined() {
            self.forget(now, peer, true);
        }
    }

    fn rtt_sample(&mut self, _peer: NodeId, _rtt: Duration) {
        // Plain Chord picks fingers by id alone.
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Joining { deadline, .. } => Some(*deadline),
            Phase::Joined => [
                self.next_stabilize,
                self.next_fix_fingers,
                self.next_check_predecessor,
                self.stabilizing.as_ref().map(|a| a.deadline),
                self.pinging.as_ref().map(|a| a.deadline),
            ]
            .into_iter()
            .flatten()
            .min(),
            Phase::Idle | Phase::Left => None,
        }
    }

    fn poll_event(&mut self) -> Option<OverlayEvent> {
        self.events.pop_front()
    }

    fn route(&self, key: Key) -> Route {
        match &self.phase {
            Phase::Joined => {
                if self.is_root(key) {
                    return Route::Local;
                }
                let Some(succ) = self.successors.first() else {
                    return Route::Local;
                };
                if key.in_interval_open_closed(self.key, succ.id.key()) {
                    return Route::Forward(succ.clone());
                }
                Route::Forward(self.closest_preceding(key).unwrap_or(succ).clone())
            }
            Phase::Joining { bootstrap, .. } => Route::Forward(bootstrap.clone()),
            // Gone: what still reaches this node (the runtime passes requests
            // on for a grace period) goes on towards the root, never claimed
            // here. Its own keys went to its successor.
            Phase::Left => {
                let Some(succ) = self.successors.first() else {
                    return Route::Local;
                };
                let own = self.owned_from.is_some_and(|from| {
                    from == self.key || key.in_interval_open_closed(from, self.key)
                });
                if own || key.in_interval_open_closed(self.key, succ.id.key()) {
                    return Route::Forward(succ.clone());
                }
                Route::Forward(self.closest_preceding(key).unwrap_or(succ).clone())
            }
            Phase::Idle => Route::Local,
        }
    }

    fn is_root(&self, key: Key) -> bool {
        if !self.joined() {
            return false;
        }
        match self.owned_from {
            Some(from) => key.in_interval_open_closed(from, self.key),
            // Just joined, predecessor unknown: only the own id is surely ours.
            None => key == self.key,
        }
    }

    fn replica_set(&self, key: Key, k: usize) -> Vec<Peer> {
        if !self.joined() {
            return Vec::new();
        }
        let mut cands: Vec<&Peer> = std::iter::once(&self.local)
            .chain(self.predecessor.iter())
            .chain(self.successors.iter())
            .collect();
        cands.sort_by_key(|p| key.cw_distance(p.id.key()));
        cands.dedup_by(|a, b| a.id == b.id);
        cands.into_iter().take(k).cloned().collect()
    }

    fn is_joined(&self) -> bool {
        self.joined()
    }

    fn routing_entries(&self) -> usize {
        self.fingers.distinct()
    }
}
