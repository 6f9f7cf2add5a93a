//! [`PastryNode`]: one node's Pastry state machine.

use std::cmp::Ordering;
use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use g2_core::overlay::{KeyRange, Overlay, OverlayError, OverlayEvent, Route, Transmit};
use g2_core::{Key, NodeAddr, NodeId, Peer};

use crate::config::PastryConfig;
use crate::entry::{Entry, RttMicros, UNKNOWN_RTT, rtt_micros};
use crate::leaf_set::{LeafSet, owned_between};
use crate::message::{Msg, WirePeer};
use crate::routing_table::{Offer, RoutingTable};

/// How many hops a join may travel before it is dropped (a loop guard).
const MAX_JOIN_HOPS: u8 = 64;
/// How many recently failed nodes are remembered (not re-learned from stale gossip).
const MAX_DEAD: usize = 256;
/// How many recent RTT samples are kept for nodes not (yet) in the tables, so
/// that a candidate met again in another row is not probed again.
const RECENT_RTT: usize = 64;
/// Least time between two unasked pushes of the leaf set: a burst of arrivals
/// costs one push per leaf per interval, a stable network none.
const LEAF_SET_PUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Rows fetched from newly found closer nodes after joining, and per maintenance
/// round: a bound on the local search of proximity neighbour selection.
const JOIN_CHASES: u8 = 32;
const MAINTENANCE_CHASES: u8 = 4;

#[derive(Debug)]
enum Phase {
    Idle,
    Joining(Joining),
    Joined,
    Left,
}

#[derive(Debug)]
struct Joining {
    bootstrap: Peer,
    deadline: Instant,
    /// Hop count of the root's reply, once it came.
    root_hop: Option<u8>,
    /// Bit `i` set: the reply of the `i`-th node on the route came.
    got: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    /// After joining: fetch rows and probe their entries to find closer nodes.
    Proximity,
    /// Refill a routing-table slot whose node failed.
    Repair,
    /// Periodic check of one entry per row.
    Maintenance,
}

/// How a node came to be offered, which decides how much it is trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Learn {
    /// It sent us a message, or a node answering our join listed it: use it.
    Direct,
    /// Second-hand (gossip, someone's row): it may be dead, so the routing
    /// table takes it only into an empty slot and only after it answers a probe.
    Gossip,
    /// A candidate for proximity: probe it and keep it if it is closer.
    Proximity,
}

#[derive(Debug)]
struct Pending {
    peer: NodeId,
    deadline: Instant,
    purpose: Purpose,
}

#[derive(Debug)]
struct Probe {
    nonce: u64,
    peer: NodeId,
    sent: Instant,
}

/// One Pastry node (Rowstron & Druschel, Middleware 2001) as a sans-IO state
/// machine implementing [`Overlay`].
///
/// State: a leaf set of the L/2 numerically closest nodes on each side, a sparse
/// routing table (row `r`, column `d` holds a node sharing `r` digits with this
/// node whose next digit is `d`, the one with the lowest round-trip time among
/// those seen), and a neighbourhood set of the M closest nodes by round-trip time.
///
/// * Inputs: [`Overlay::join`], [`Overlay::leave`], [`Overlay::handle_message`],
///   [`Overlay::handle_timeout`], [`Overlay::peer_unreachable`], [`Overlay::rtt_sample`].
/// * Outputs, drained in this order after each input: [`Overlay::poll_transmit`],
///   [`Overlay::poll_timeout`], [`Overlay::poll_event`].
///
/// Protocol: the join message is routed to the new id's root; each node on the
/// route sends the joiner its rows, the first its neighbourhood set, the root its
/// leaf set; the joiner then announces itself, with its leaf set, to every node it
/// knows, and asks every node of each row for that row, probing the candidates to
/// keep the closest (proximity neighbour selection).
///
/// Leaf-set consistency: a node that receives a leaf set (an announcement, a push
/// or a heartbeat) lacking live nodes it knows to belong there sends them back at
/// once; a node whose leaf set gains a member pushes its leaf set to the leaves
/// that may not know of it yet (at most once per 50 ms). Concurrent joiners
/// through one bootstrap thus find their exact leaf sets within a few round
/// trips, while a stable network sends nothing beyond its heartbeats.
///
/// Leaves exchange heartbeats carrying their leaf sets; a leaf silent for
/// `failure_timeout` is declared failed, and the leaf set is repaired from the
/// farthest leaves. A routing-table entry found dead (while routing, or by the
/// periodic row check) is replaced by asking another node of the same row; the
/// periodic check also probes the row it fetches and keeps closer nodes.
#[derive(Debug)]
pub struct PastryNode {
    cfg: PastryConfig,
    local: Peer,
    key: Key,
    phase: Phase,
    leaf: LeafSet,
    table: RoutingTable,
    /// Closest nodes by round-trip time, nearest first (all with a known rtt).
    neighbourhood: Vec<Entry>,
    owned: Option<KeyRange>,
    next_tick: Option<Instant>,
    next_maintenance: Option<Instant>,
    maintenance_round: usize,
    /// Rows still to fetch from nodes that proved closer than a slot's holder.
    chase_budget: u8,
    /// Leaves to send the leaf set to at `push_at`: they may not know of a node
    /// that has just entered it.
    push_to: Vec<NodeId>,
    push_at: Option<Instant>,
    last_push: Option<Instant>,
    pending: Vec<Pending>,
    probes: Vec<Probe>,
    dead: Vec<(NodeId, Instant)>,
    /// Recent RTT samples, a ring of at most [`RECENT_RTT`] (empty until used:
    /// a simulator holds 10^6 directly initialised nodes).
    recent_rtt: Vec<(NodeId, RttMicros)>,
    recent_next: usize,
    nonce: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<OverlayEvent>,
}

impl PastryNode {
    /// A node that has not joined yet. An invalid `cfg` falls back to the default.
    pub fn new(cfg: PastryConfig, local: Peer) -> Self {
        let cfg = cfg.or_default();
        let key = local.id.key();
        Self {
            leaf: LeafSet::new(key, cfg.leaf_set_size),
            table: RoutingTable::new(key, cfg.b),
            neighbourhood: Vec::new(),
            cfg,
            local,
            key,
            phase: Phase::Idle,
            owned: None,
            next_tick: None,
            next_maintenance: None,
            maintenance_round: 0,
            chase_budget: 0,
            push_to: Vec::new(),
            push_at: None,
            last_push: None,
            pending: Vec::new(),
            probes: Vec::new(),
            dead: Vec::new(),
            recent_rtt: Vec::new(),
            recent_next: 0,
            nonce: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// A node that is already joined, its state built from `peers` exactly as if it
    /// had learned of each of them (with its round-trip time, when given) through
    /// the protocol. Simulators use it to set up 10^5–10^6-node networks without
    /// running every join; `Joined` is the first event.
    pub fn with_known_peers(
        cfg: PastryConfig,
        local: Peer,
        now: Instant,
        peers: impl IntoIterator<Item = (Peer, Option<Duration>)>,
    ) -> Self {
        let mut n = Self::new(cfg, local);
        for (p, rtt) in peers {
            let rtt = rtt.map_or(UNKNOWN_RTT, rtt_micros);
            n.consider(now, p.id, p.addr.as_str(), rtt, Learn::Direct);
        }
        n.become_joined(now);
        n.shrink_to_fit();
        n
    }

    /// Drops spare capacity (a simulator holding 10^6 nodes cares).
    fn shrink_to_fit(&mut self) {
        self.leaf.cw.shrink_to_fit();
        self.leaf.ccw.shrink_to_fit();
        self.table.shrink_to_fit();
        self.neighbourhood.shrink_to_fit();
    }

    /// The configuration in use.
    pub fn config(&self) -> &PastryConfig {
        &self.cfg
    }

    /// Number of routing-table entries.
    pub fn routing_table_len(&self) -> usize {
        self.table.len()
    }

    /// The leaf set, counter-clockwise side then clockwise side, nearest first.
    pub fn leaf_set(&self) -> Vec<Peer> {
        self.leaf.iter().map(|l| l.entry.peer()).collect()
    }

    /// The routing table's entries, by row then column.
    pub fn routing_table(&self) -> Vec<Peer> {
        self.table.iter().map(Entry::peer).collect()
    }

    /// The neighbourhood set, nearest first.
    pub fn neighbourhood(&self) -> Vec<Peer> {
        self.neighbourhood.iter().map(Entry::peer).collect()
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

    fn wire_leaf_set(&self) -> Vec<WirePeer> {
        self.leaf.iter().map(|l| WirePeer::of(&l.entry)).collect()
    }

    fn is_dead(&self, id: NodeId) -> bool {
        self.dead.iter().any(|(d, _)| *d == id)
    }

    fn mark_dead(&mut self, id: NodeId, now: Instant) {
        self.dead.retain(|(d, _)| *d != id);
        if self.dead.len() >= MAX_DEAD {
            self.dead.remove(0);
        }
        // Remember it for two full maintenance sweeps, so that stale rows and
        // leaf sets from nodes that have not noticed yet do not bring it back.
        let sweep = self
            .cfg
            .maintenance_period
            .unwrap_or(self.cfg.failure_timeout)
            * (1u32 << self.cfg.b);
        let memory = (sweep * 2).max(self.cfg.failure_timeout * 4);
        self.dead.push((id, now + memory));
    }

    fn rtt_of(&self, id: NodeId) -> RttMicros {
        self.recent_rtt
            .iter()
            .find(|(p, _)| *p == id)
            .map(|(_, r)| *r)
            .or_else(|| self.known().find(|e| e.id == id).map(|e| e.rtt))
            .unwrap_or(UNKNOWN_RTT)
    }

    /// Every node in the state (a node may appear more than once).
    fn known(&self) -> impl Iterator<Item = &Entry> {
        self.leaf
            .cw
            .iter()
            .chain(self.leaf.ccw.iter())
            .map(|l| &l.entry)
            .chain(self.table.iter())
            .chain(self.neighbourhood.iter())
    }

    /// Offers a live node to the leaf set, routing table and neighbourhood set.
    /// Returns whether the leaf set changed.
    fn consider(
        &mut self,
        now: Instant,
        id: NodeId,
        addr: &str,
        rtt: RttMicros,
        how: Learn,
    ) -> bool {
        if id == self.local.id || self.is_dead(id) {
            return false;
        }
        let e = Entry::new(id, addr, rtt);
        let leaf_changed = self.leaf.insert(&e, now);
        if rtt != UNKNOWN_RTT {
            self.table.offer(&e);
        } else if how == Learn::Direct {
            // Take it, and measure it so that closer candidates can be told apart.
            if matches!(self.table.offer(&e), Offer::Inserted | Offer::NeedsRtt) {
                self.probe(now, &e);
            }
        } else {
            match (self.table.holder(e.key()), how) {
                (Ok(None), _) => self.probe(now, &e),
                (Ok(Some(h)), Learn::Proximity) if h != id => self.probe(now, &e),
                _ => {}
            }
        }
        if rtt != UNKNOWN_RTT {
            self.offer_neighbour(e);
        }
        leaf_changed
    }

    fn consider_wire(&mut self, now: Instant, peers: &[WirePeer], how: Learn) -> bool {
        let mut changed = false;
        for p in peers {
            let id = p.id();
            let rtt = self.rtt_of(id);
            changed |= self.consider(now, id, &p.1, rtt, how);
        }
        changed
    }

    fn offer_neighbour(&mut self, e: Entry) {
        let m = self.cfg.neighbourhood_size;
        if m == 0 {
            return;
        }
        if let Some(i) = self.neighbourhood.iter().position(|n| n.id == e.id) {
            self.neighbourhood.remove(i);
        }
        let pos = self.neighbourhood.partition_point(|n| n.rtt <= e.rtt);
        if pos < m {
            self.neighbourhood.insert(pos, e);
            self.neighbourhood.truncate(m);
        }
    }

    fn probe(&mut self, now: Instant, e: &Entry) {
        if self.probes.len() >= self.cfg.max_probes || self.probes.iter().any(|p| p.peer == e.id) {
            return;
        }
        self.nonce += 1;
        let nonce = self.nonce;
        self.probes.push(Probe {
            nonce,
            peer: e.id,
            sent: now,
        });
        self.send(e.peer(), &Msg::Probe { nonce });
    }

    fn request_row(&mut self, now: Instant, to: &Entry, row: usize, purpose: Purpose) {
        if self.pending.iter().any(|p| p.peer == to.id) {
            return;
        }
        self.pending.push(Pending {
            peer: to.id,
            deadline: now + self.cfg.request_timeout,
            purpose,
        });
        // Rows are < 128 / b <= 128, checked when the table was built.
        let row = u8::try_from(row).unwrap_or(u8::MAX);
        self.send(to.peer(), &Msg::RowRequest { row });
    }

    /// The next hop for `key` among known nodes other than `exclude`; `None` means
    /// this node is the root.
    fn next_hop(&self, key: Key, exclude: Option<NodeId>) -> Option<&Entry> {
        let usable = |e: &Entry| Some(e.id) != exclude;
        if self.leaf.covers(key) {
            let mut best: Option<&Entry> = None;
            for l in self.leaf.cw.iter().chain(self.leaf.ccw.iter()) {
                let cur = best.map_or(self.key, Entry::key);
                if usable(&l.entry) && key.cmp_closeness(l.entry.key(), cur) == Ordering::Less {
                    best = Some(&l.entry);
                }
            }
            return best;
        }
        let row = self.key.shared_prefix_digits(key, self.cfg.b);
        if row >= self.table.digits() {
            return None;
        }
        if let Some(e) = self.table.get(row, key.digit(row, self.cfg.b))
            && usable(e)
        {
            return Some(e);
        }
        // Rare case: any node sharing as long a prefix and numerically closer.
        let mut best: Option<&Entry> = None;
        for e in self.known() {
            let cur = best.map_or(self.key, Entry::key);
            if usable(e)
                && e.key().shared_prefix_digits(key, self.cfg.b) >= row
                && key.cmp_closeness(e.key(), cur) == Ordering::Less
            {
                best = Some(e);
            }
        }
        best
    }

    fn become_joined(&mut self, now: Instant) {
        self.phase = Phase::Joined;
        self.owned = Some(self.leaf.owned_range());
        self.next_tick = Some(now + self.cfg.heartbeat_period);
        self.next_maintenance = self.cfg.maintenance_period.map(|p| now + p);
        self.events.push_back(OverlayEvent::Joined);
    }

    fn finish_join(&mut self, now: Instant) {
        self.become_joined(now);
        tracing::debug!(node = %self.local.id, leaves = self.leaf.len(), entries = self.table.len(), "joined the Pastry overlay");
        let mut ids = BTreeSet::new();
        let targets: Vec<Peer> = self
            .known()
            .filter(|e| ids.insert(e.id))
            .map(Entry::peer)
            .collect();
        let leaf_set = self.wire_leaf_set();
        for p in targets {
            self.send(
                p,
                &Msg::Announce {
                    leaf_set: leaf_set.clone(),
                },
            );
        }
        self.chase_budget = JOIN_CHASES;
        // Proximity (the paper's second stage of the join): every node of row
        // `r`, itself near this node, is asked for its row `r`; the candidates are
        // probed and closer ones replace farther ones.
        for row in self.table.non_empty_rows() {
            let asked: Vec<Entry> = self
                .table
                .row(row)
                .iter()
                .map(|s| s.entry.clone())
                .collect();
            for e in asked {
                self.request_row(now, &e, row, Purpose::Proximity);
            }
        }
    }

    /// Emits `KeysMoved` / `NeighboursChanged` after the leaf set changed.
    fn leaf_set_changed(&mut self) {
        if !self.joined() {
            return;
        }
        let new = self.leaf.owned_range();
        let old = self.owned.replace(new);
        if let Some(old) = old
            && old != new
        {
            self.emit_moves(old, new);
        }
        self.events.push_back(OverlayEvent::NeighboursChanged);
    }

    fn leaf_ids(&self) -> Vec<NodeId> {
        self.leaf.iter().map(|l| l.entry.id).collect()
    }

    /// After a message from `from` was merged: the nodes that entered the leaf set
    /// (it held `before`) are news to some leaves. Each leaf that, as far as this
    /// node can tell, should hold a new node in its own leaf set is sent this
    /// node's leaf set soon (at most once per [`LEAF_SET_PUSH_INTERVAL`]), unless
    /// it is known to have heard of the newcomer already: it is `from`, or listed
    /// in `informed` (the leaf set of a newcomer announcing itself, whose
    /// announcement went to each of them). So concurrent joiners learn of each
    /// other in a few round trips instead of a heartbeat period, while a lone
    /// join, whose announcement reaches every leaf concerned, costs nothing extra.
    fn note_gains(&mut self, now: Instant, from: NodeId, before: &[NodeId], informed: &[NodeId]) {
        if !self.joined() {
            return;
        }
        let gained: Vec<NodeId> = self
            .leaf
            .iter()
            .map(|l| l.entry.id)
            .filter(|id| !before.contains(id))
            .collect();
        if gained.is_empty() {
            return;
        }
        self.leaf_set_changed();
        let half = self.leaf.half();
        // The ring as this node sees it: far counter-clockwise leaf .. this node
        // .. far clockwise leaf. When the sides overlap or are short (a small or
        // still unsettled network), every leaf may care.
        let window: Option<Vec<NodeId>> = {
            let (cw, ccw) = (&self.leaf.cw, &self.leaf.ccw);
            let overlap = cw
                .iter()
                .any(|c| ccw.iter().any(|d| d.entry.id == c.entry.id));
            (!overlap && cw.len() >= half && ccw.len() >= half).then(|| {
                ccw.iter()
                    .rev()
                    .map(|l| l.entry.id)
                    .chain(std::iter::once(self.local.id))
                    .chain(cw.iter().map(|l| l.entry.id))
                    .collect()
            })
        };
        let pos = |id: NodeId| {
            window
                .as_ref()
                .and_then(|w| w.iter().position(|x| *x == id))
        };
        let mut targets = Vec::new();
        for &news in &gained {
            let at = pos(news);
            for l in self.leaf.iter() {
                let z = l.entry.id;
                if z == from || informed.contains(&z) || (z == news && informed.contains(&news)) {
                    continue;
                }
                let concerned = match (at, pos(z)) {
                    (Some(a), Some(b)) => a.abs_diff(b) <= half,
                    _ => true,
                };
                if concerned && !targets.contains(&z) {
                    targets.push(z);
                }
            }
        }
        for z in targets {
            if !self.push_to.contains(&z) {
                self.push_to.push(z);
            }
        }
        if !self.push_to.is_empty() && self.push_at.is_none() {
            let earliest = self.last_push.map_or(now, |t| t + LEAF_SET_PUSH_INTERVAL);
            self.push_at = Some(earliest.max(now));
        }
    }

    /// Sends the leaf set to the leaves waiting for it.
    fn push_leaf_set(&mut self, now: Instant) {
        self.push_at = None;
        self.last_push = Some(now);
        let to: Vec<Peer> = std::mem::take(&mut self.push_to)
            .into_iter()
            .filter_map(|id| self.leaf.iter().find(|l| l.entry.id == id))
            .map(|l| l.entry.peer())
            .collect();
        if to.is_empty() {
            return;
        }
        let leaf_set = self.wire_leaf_set();
        for p in to {
            self.send(
                p,
                &Msg::LeafSetPush {
                    leaf_set: leaf_set.clone(),
                    correction: false,
                },
            );
        }
    }

    /// `to` showed its leaf set (`theirs`); if this node knows live nodes that
    /// belong there but are missing, it sends them with its own leaf set. Known
    /// means the leaf set, and with `everything` the routing table and the
    /// neighbourhood set too (a bootstrap hears of every concurrent joiner but
    /// keeps few of them in its leaf set).
    fn correct(&mut self, to: &Peer, theirs: &[WirePeer], everything: bool) {
        if !self.joined() {
            return;
        }
        let half = self.leaf.half();
        let x = to.id.key();
        let mut listed: Vec<u128> = theirs.iter().map(|p| p.0).collect();
        listed.sort_unstable();
        // Their leaf set's reach on each side: the distance of its half-th node.
        let reach = |dist: &dyn Fn(Key) -> u128| -> u128 {
            let mut d: Vec<u128> = theirs
                .iter()
                .filter(|p| p.0 != x.0)
                .map(|p| dist(p.id().key()))
                .collect();
            if d.len() < half {
                return u128::MAX;
            }
            d.select_nth_unstable(half - 1);
            d[half - 1]
        };
        let cw_reach = reach(&|k| x.cw_distance(k));
        let ccw_reach = reach(&|k| x.ccw_distance(k));
        let leaves = self.leaf.iter().map(|l| &l.entry);
        let rest = everything
            .then(|| self.table.iter().chain(self.neighbourhood.iter()))
            .into_iter()
            .flatten();
        let mut missing: Vec<WirePeer> = Vec::new();
        for e in leaves.chain(rest) {
            let k = e.key();
            if e.id == to.id
                || listed.binary_search(&k.0).is_ok()
                || missing.iter().any(|m| m.0 == k.0)
            {
                continue;
            }
            if x.cw_distance(k) < cw_reach || x.ccw_distance(k) < ccw_reach {
                missing.push(WirePeer::of(e));
            }
        }
        if missing.is_empty() {
            return;
        }
        let mut leaf_set = self.wire_leaf_set();
        for m in missing {
            if !leaf_set.iter().any(|p| p.0 == m.0) {
                leaf_set.push(m);
            }
        }
        leaf_set.truncate(crate::message::MAX_PEERS);
        self.send(
            to.clone(),
            &Msg::LeafSetPush {
                leaf_set,
                correction: true,
            },
        );
    }

    fn emit_moves(&mut self, old: KeyRange, new: KeyRange) {
        if new.start == new.end {
            return; // we own everything now: keys only arrive
        }
        let (Some(pred), Some(succ)) = (self.leaf.ccw.first(), self.leaf.cw.first()) else {
            return;
        };
        let (pred, succ) = (pred.entry.clone(), succ.entry.clone());
        let mut moves: Vec<(KeyRange, Entry)> = Vec::new();
        if old.start == old.end {
            if pred.id == succ.id {
                moves.push((range(new.end, new.start), succ));
            } else {
                let mid = owned_between(self.key, succ.key(), pred.key()).end;
                moves.push((range(new.end, mid), succ));
                moves.push((range(mid, new.start), pred));
            }
        } else {
            if new.end != old.end && self.key.cw_distance(new.end) < self.key.cw_distance(old.end) {
                moves.push((range(new.end, old.end), succ));
            }
            if new.start != old.start
                && new.start.cw_distance(self.key) < old.start.cw_distance(self.key)
            {
                moves.push((range(old.start, new.start), pred));
            }
        }
        let mut moves = moves
            .into_iter()
            .filter(|(r, _)| r.start != r.end)
            .peekable();
        while let Some((r, root)) = moves.next() {
            let mut ranges = vec![r];
            if let Some((r2, _)) = moves.next_if(|(_, n)| n.id == root.id) {
                ranges.push(r2);
            }
            self.events.push_back(OverlayEvent::KeysMoved {
                ranges,
                new_root: root.peer(),
            });
        }
    }

    /// Removes a node from every table; `failed` emits `PeerFailed` and repairs.
    fn forget(&mut self, now: Instant, id: NodeId, failed: bool) {
        let in_leaf = self.leaf.remove(id);
        let slot = self.table.remove(id);
        let before = self.neighbourhood.len();
        self.neighbourhood.retain(|e| e.id != id);
        let in_nb = before != self.neighbourhood.len();
        self.probes.retain(|p| p.peer != id);
        self.pending.retain(|p| p.peer != id);
        if !(in_leaf || slot.is_some() || in_nb) {
            return;
        }
        self.mark_dead(id, now);
        if failed {
            tracing::debug!(node = %self.local.id, peer = %id, "declared a peer failed");
            self.events.push_back(OverlayEvent::PeerFailed(id));
        }
        if let Some((row, _)) = slot {
            self.repair_row(now, row);
        }
        if in_leaf {
            if failed {
                // Leaf-set repair: ask the farthest live leaf on each side.
                let far: Vec<Peer> = [self.leaf.cw.last(), self.leaf.ccw.last()]
                    .into_iter()
                    .flatten()
                    .map(|l| l.entry.peer())
                    .collect();
                let mut last = None;
                for p in far {
                    if last != Some(p.id) {
                        last = Some(p.id);
                        self.send(p, &Msg::LeafSetRequest);
                    }
                }
            }
            self.leaf_set_changed();
        }
    }

    /// Asks a node of row `row` (or `row + 1`, or a leaf) for its row `row`.
    fn repair_row(&mut self, now: Instant, row: usize) {
        let pick = |slots: &[crate::routing_table::Slot]| {
            slots
                .iter()
                .map(|s| &s.entry)
                .min_by_key(|e| e.rtt)
                .cloned()
        };
        let asked = pick(self.table.row(row))
            .or_else(|| pick(self.table.row(row + 1)))
            .or_else(|| {
                self.leaf
                    .iter()
                    .map(|l| &l.entry)
                    .min_by_key(|e| e.rtt)
                    .cloned()
            });
        if let Some(e) = asked {
            self.request_row(now, &e, row, Purpose::Repair);
        }
    }

    fn on_tick(&mut self, now: Instant) {
        if let Phase::Joining(j) = &mut self.phase {
            if now < j.deadline {
                return;
            }
            if j.root_hop.is_some() {
                self.finish_join(now);
            } else {
                j.deadline = now + self.cfg.request_timeout;
                let (to, joiner) = (
                    j.bootstrap.clone(),
                    WirePeer(self.key.0, self.local.addr.0.clone()),
                );
                tracing::debug!(node = %self.local.id, bootstrap = %to, "join timed out; retrying");
                self.send(to, &Msg::Join { joiner, hop: 0 });
            }
            return;
        }
        if !self.joined() {
            return;
        }
        if self.next_tick.is_some_and(|t| t <= now) {
            self.next_tick = Some(now + self.cfg.heartbeat_period);
            let suspect = self.cfg.heartbeat_period * 3 / 2;
            let leaf_set = self.wire_leaf_set();
            let mut failed = Vec::new();
            let mut beats = Vec::new();
            for l in self.leaf.iter() {
                let silent = now.saturating_duration_since(l.last_heard);
                if silent > self.cfg.failure_timeout {
                    failed.push(l.entry.id);
                } else {
                    beats.push((l.entry.peer(), silent > suspect));
                }
            }
            for (to, reply) in beats {
                self.send(
                    to,
                    &Msg::Heartbeat {
                        leaf_set: leaf_set.clone(),
                        reply,
                    },
                );
            }
            for id in failed {
                self.forget(now, id, true);
            }
        }
        let expired: Vec<Pending> = {
            let (gone, keep) = std::mem::take(&mut self.pending)
                .into_iter()
                .partition(|p| p.deadline <= now);
            self.pending = keep;
            gone
        };
        for p in expired {
            if p.purpose != Purpose::Proximity && !self.leaf.contains(p.peer) {
                // A routing-table entry that does not answer is dropped; leaves
                // have their own failure detection.
                self.forget(now, p.peer, true);
            }
        }
        let timeout = self.cfg.request_timeout;
        self.probes
            .retain(|p| now.saturating_duration_since(p.sent) < timeout);
        self.dead.retain(|(_, until)| *until > now);
        if self.push_at.is_some_and(|t| t <= now) {
            self.push_leaf_set(now);
        }
        if let (Some(at), Some(period)) = (self.next_maintenance, self.cfg.maintenance_period)
            && at <= now
        {
            self.next_maintenance = Some(now + period);
            self.maintenance_round += 1;
            self.chase_budget = MAINTENANCE_CHASES;
            for row in self.table.non_empty_rows() {
                let slots = self.table.row(row);
                let e = slots[self.maintenance_round % slots.len()].entry.clone();
                self.request_row(now, &e, row, Purpose::Maintenance);
            }
        }
    }

    fn on_message(&mut self, now: Instant, from: &Peer, msg: Msg) -> Result<(), OverlayError> {
        let rtt = self.rtt_of(from.id);
        let before = self.leaf_ids();
        match msg {
            Msg::Join { joiner, hop } => {
                if !self.joined() || hop >= MAX_JOIN_HOPS || joiner.id() == self.local.id {
                    return Ok(());
                }
                let jid = joiner.id();
                let prefix = self.key.shared_prefix_digits(jid.key(), self.cfg.b);
                let rows = self
                    .table
                    .rows_up_to(prefix)
                    .iter()
                    .map(|s| WirePeer::of(&s.entry))
                    .collect();
                let neighbourhood = if hop == 0 {
                    self.neighbourhood.iter().map(WirePeer::of).collect()
                } else {
                    Vec::new()
                };
                let next = self.next_hop(jid.key(), Some(jid)).map(Entry::peer);
                let leaf_set = if next.is_none() {
                    self.wire_leaf_set()
                } else {
                    Vec::new()
                };
                let to = Peer::new(jid, NodeAddr::new(joiner.1.clone()));
                self.send(
                    to,
                    &Msg::JoinReply {
                        hop,
                        root: next.is_none(),
                        rows,
                        leaf_set,
                        neighbourhood,
                    },
                );
                if let Some(next) = next {
                    self.send(
                        next,
                        &Msg::Join {
                            joiner,
                            hop: hop + 1,
                        },
                    );
                }
            }
            Msg::JoinReply {
                hop,
                root,
                rows,
                leaf_set,
                neighbourhood,
            } => {
                self.consider(now, from.id, from.addr.as_str(), rtt, Learn::Direct);
                self.consider_wire(now, &rows, Learn::Direct);
                self.consider_wire(now, &leaf_set, Learn::Direct);
                self.consider_wire(now, &neighbourhood, Learn::Direct);
                if let Phase::Joining(j) = &mut self.phase {
                    if hop < 64 {
                        j.got |= 1 << hop;
                    }
                    if root {
                        j.root_hop = Some(hop);
                    }
                    let complete = j.root_hop.is_some_and(|h| {
                        let all = if h >= 63 {
                            u64::MAX
                        } else {
                            (1u64 << (h + 1)) - 1
                        };
                        j.got & all == all
                    });
                    if complete {
                        self.finish_join(now);
                    }
                } else {
                    self.note_gains(now, from.id, &before, &[]);
                }
            }
            Msg::Announce { leaf_set } => {
                self.consider(now, from.id, from.addr.as_str(), rtt, Learn::Proximity);
                self.consider_wire(now, &leaf_set, Learn::Gossip);
                // The newcomer announced itself to every node it lists.
                let mut informed: Vec<NodeId> = leaf_set.iter().map(WirePeer::id).collect();
                informed.push(from.id);
                self.note_gains(now, from.id, &before, &informed);
                self.correct(from, &leaf_set, true);
            }
            Msg::LeafSetPush {
                leaf_set,
                correction,
            } => {
                self.consider(now, from.id, from.addr.as_str(), rtt, Learn::Direct);
                self.consider_wire(now, &leaf_set, Learn::Gossip);
                self.note_gains(now, from.id, &before, &[]);
                if !correction {
                    self.correct(from, &leaf_set, true);
                }
            }
            Msg::Heartbeat { leaf_set, reply } => {
                self.consider(now, from.id, from.addr.as_str(), rtt, Learn::Direct);
                self.consider_wire(now, &leaf_set, Learn::Gossip);
                self.note_gains(now, from.id, &before, &[]);
                if self.joined() && (reply || !self.leaf.contains(from.id)) {
                    let leaf_set = self.wire_leaf_set();
                    self.send(
                        from.clone(),
                        &Msg::Heartbeat {
                            leaf_set,
                            reply: false,
                        },
                    );
                } else {
                    self.correct(from, &leaf_set, false);
                }
            }
            Msg::RowRequest { row } => {
                if self.joined() {
                    // Only joined nodes ask for rows: the asker is a live member.
                    self.consider(now, from.id, from.addr.as_str(), rtt, Learn::Direct);
                    self.note_gains(now, from.id, &before, &[]);
                    let entries = self
                        .table
                        .row(usize::from(row))
                        .iter()
                        .map(|s| WirePeer::of(&s.entry))
                        .collect();
                    self.send(from.clone(), &Msg::RowReply { row, entries });
                }
            }
            Msg::RowReply { entries, .. } => {
                let purpose = self
                    .pending
                    .iter()
                    .position(|p| p.peer == from.id)
                    .map(|i| self.pending.swap_remove(i).purpose);
                // Proximity neighbour selection: rows fetched after joining and by
                // the periodic check are probed, and closer nodes replace farther
                // ones; a repair only fills the empty slot.
                let how = match purpose {
                    Some(Purpose::Proximity | Purpose::Maintenance) => Learn::Proximity,
                    Some(Purpose::Repair) | None => Learn::Gossip,
                };
                self.consider(now, from.id, from.addr.as_str(), rtt, Learn::Direct);
                self.consider_wire(now, &entries, how);
                self.note_gains(now, from.id, &before, &[]);
            }
            Msg::LeafSetRequest => {
                if self.joined() {
                    let leaf_set = self.wire_leaf_set();
                    self.send(from.clone(), &Msg::LeafSetReply { leaf_set });
                }
            }
            Msg::LeafSetReply { leaf_set } => {
                let mut changed =
                    self.consider(now, from.id, from.addr.as_str(), rtt, Learn::Direct);
                changed |= self.consider_wire(now, &leaf_set, Learn::Gossip);
                if changed {
                    self.leaf_set_changed();
                }
            }
            Msg::Probe { nonce } => self.send(from.clone(), &Msg::ProbeReply { nonce }),
            Msg::ProbeReply { nonce } => {
                if let Some(i) = self
                    .probes
                    .iter()
                    .position(|p| p.nonce == nonce && p.peer == from.id)
                {
                    let p = self.probes.swap_remove(i);
                    let rtt = rtt_micros(now.saturating_duration_since(p.sent));
                    self.record_rtt(from.id, rtt);
                    let held = self.table.holder(from.id.key()) == Ok(Some(from.id));
                    self.consider(now, from.id, from.addr.as_str(), rtt, Learn::Direct);
                    self.note_gains(now, from.id, &before, &[]);
                    // It took a slot from a farther node: its own row, centred on
                    // it, may hold closer nodes still (a local search).
                    if !held
                        && self.chase_budget > 0
                        && let Some((row, _)) = self.table.slot_of(from.id.key())
                        && let Some(e) = self.table.entry_mut(from.id).map(|e| e.clone())
                    {
                        self.chase_budget -= 1;
                        self.request_row(now, &e, row, Purpose::Proximity);
                    }
                }
            }
            Msg::Leave { leaf_set } => {
                self.forget(now, from.id, false);
                self.mark_dead(from.id, now);
                let leaf_set: Vec<WirePeer> =
                    leaf_set.into_iter().filter(|p| p.id() != from.id).collect();
                if self.consider_wire(now, &leaf_set, Learn::Gossip) {
                    self.leaf_set_changed();
                }
            }
        }
        Ok(())
    }

    fn record_rtt(&mut self, peer: NodeId, rtt: RttMicros) {
        if let Some(r) = self.recent_rtt.iter_mut().find(|(p, _)| *p == peer) {
            r.1 = rtt;
        } else if self.recent_rtt.len() < RECENT_RTT {
            self.recent_rtt.push((peer, rtt));
        } else {
            self.recent_rtt[self.recent_next] = (peer, rtt);
            self.recent_next = (self.recent_next + 1) % RECENT_RTT;
        }
        for l in self.leaf.iter_mut().filter(|l| l.entry.id == peer) {
            l.entry.rtt = rtt;
        }
        if let Some(e) = self.table.entry_mut(peer) {
            e.rtt = rtt;
        }
        if let Some(i) = self.neighbourhood.iter().position(|e| e.id == peer) {
            let mut e = self.neighbourhood.remove(i);
            e.rtt = rtt;
            self.offer_neighbour(e);
        }
    }
}

fn range(start: Key, end: Key) -> KeyRange {
    KeyRange { start, end }
}

impl Overlay for PastryNode {
    fn local(&self) -> Peer {
        self.local.clone()
    }

    fn join(&mut self, now: Instant, bootstrap: Option<Peer>) {
        if !matches!(self.phase, Phase::Idle) {
            return;
        }
        match bootstrap {
            Some(b) if b.id != self.local.id => {
                let joiner = WirePeer(self.key.0, self.local.addr.0.clone());
                self.send(b.clone(), &Msg::Join { joiner, hop: 0 });
                self.phase = Phase::Joining(Joining {
                    bootstrap: b,
                    deadline: now + self.cfg.request_timeout,
                    root_hop: None,
                    got: 0,
                });
            }
            _ => {
                tracing::debug!(node = %self.local.id, "founded a new Pastry overlay");
                self.become_joined(now);
            }
        }
    }

    fn leave(&mut self, now: Instant) {
        let _ = now;
        if self.joined() {
            if let (Some(pred), Some(succ)) = (self.leaf.ccw.first(), self.leaf.cw.first()) {
                let own = self.leaf.owned_range();
                let (pred, succ) = (pred.entry.clone(), succ.entry.clone());
                if pred.id == succ.id {
                    self.events.push_back(OverlayEvent::KeysMoved {
                        ranges: vec![own],
                        new_root: succ.peer(),
                    });
                } else {
                    let mid = owned_between(pred.key(), pred.key(), succ.key()).end;
                    for (r, to) in [(range(own.start, mid), pred), (range(mid, own.end), succ)] {
                        if r.start != r.end {
                            self.events.push_back(OverlayEvent::KeysMoved {
                                ranges: vec![r],
                                new_root: to.peer(),
                            });
                        }
                    }
                }
            }
            let leaf_set = self.wire_leaf_set();
            let leaves: Vec<Peer> = self.leaf.iter().map(|l| l.entry.peer()).collect();
            for p in leaves {
                self.send(
                    p,
                    &Msg::Leave {
                        leaf_set: leaf_set.clone(),
                    },
                );
            }
        }
        self.phase = Phase::Left;
        self.next_tick = None;
        self.next_maintenance = None;
        self.push_at = None;
        self.events.push_back(OverlayEvent::Left);
    }

    fn handle_message(&mut self, now: Instant, from: Peer, msg: &[u8]) -> Result<(), OverlayError> {
        let msg = Msg::decode(from.id, msg, self.table.digits())?;
        if matches!(self.phase, Phase::Idle | Phase::Left) {
            return Ok(());
        }
        if from.addr.as_str().len() > crate::message::MAX_ADDR {
            return Err(OverlayError::Protocol {
                from: from.id,
                reason: "address too long".into(),
            });
        }
        // Any message proves its sender alive.
        for l in self.leaf.iter_mut().filter(|l| l.entry.id == from.id) {
            l.last_heard = now;
        }
        if !matches!(msg, Msg::Leave { .. }) {
            self.dead.retain(|(d, _)| *d != from.id);
        }
        self.on_message(now, &from, msg)
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.on_tick(now);
    }

    fn peer_unreachable(&mut self, now: Instant, peer: NodeId) {
        self.forget(now, peer, true);
    }

    fn rtt_sample(&mut self, peer: NodeId, rtt: Duration) {
        self.record_rtt(peer, rtt_micros(rtt));
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Joining(j) => Some(j.deadline),
            Phase::Joined => [self.next_tick, self.next_maintenance, self.push_at]
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
            Phase::Joined => self
                .next_hop(key, None)
                .map_or(Route::Local, |e| Route::Forward(e.peer())),
            Phase::Joining(j) => Route::Forward(j.bootstrap.clone()),
            Phase::Idle | Phase::Left => Route::Local,
        }
    }

    fn is_root(&self, key: Key) -> bool {
        self.joined() && self.next_hop(key, None).is_none()
    }

    fn replica_set(&self, key: Key, k: usize) -> Vec<Peer> {
        let mut cands: Vec<(Key, Option<&Entry>)> = vec![(self.key, None)];
        cands.extend(self.leaf.iter().map(|l| (l.entry.key(), Some(&l.entry))));
        cands.sort_by(|a, b| key.cmp_closeness(a.0, b.0));
        cands
            .into_iter()
            .take(k)
            .map(|(_, e)| e.map_or_else(|| self.local.clone(), Entry::peer))
            .collect()
    }

    fn is_joined(&self) -> bool {
        self.joined()
    }

    fn routing_entries(&self) -> usize {
        self.routing_table_len()
    }
}
