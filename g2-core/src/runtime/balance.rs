//! Load balancing within the neighbourhood (paper §3.5). The [`Balancer`]
//! keeps what the neighbours last said of their load and decides, as pure
//! functions of its figures and the time passed in, where a new object goes
//! and which running objects to pass on; the `NodeInner` methods here report
//! this node's load, ask for fresh figures and carry the moves out.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::debug;

use crate::Key;
use crate::id::{NodeId, ObjectId, Peer};
use crate::runtime::node::NodeInner;
use crate::runtime::now;
use crate::sync::lock;
use crate::wire::{Body, LoadReport};

/// How often a node tells its neighbours its load and balances against theirs.
const LOAD_EVERY: Duration = Duration::from_millis(500);
/// A neighbour's load report older than this is not acted on.
const LOAD_STALE: Duration = Duration::from_secs(3);
/// How long a node waits for the loads it asked for before moving objects.
const LOAD_ASK_WAIT: Duration = Duration::from_millis(250);
/// How many of its nearest nodes on the ring a node balances its load with
/// (about a Pastry leaf set; for Chord, successors and predecessors).
const BALANCE_NEIGHBOURS: usize = 8;
/// A running object is passed to a neighbour that runs at least this many
/// fewer (a new one goes to any neighbour that runs fewer).
const IMBALANCE: u32 = 2;
/// An object stays at least this long where it arrived before load balancing
/// moves it on.
const MIN_STAY: Duration = Duration::from_secs(1);
/// A node that does not host places a new object on the neighbour nearest its
/// GUID unless that one runs this many more than the least loaded.
const NON_HOSTING_SLACK: u32 = 16;
/// How long a node that does not host waits at start for a neighbour that does.
pub(super) const HOSTING_NEIGHBOUR_WAIT: Duration = Duration::from_secs(2);

/// What a neighbour last said of its load.
#[derive(Debug, Clone)]
struct PeerLoad {
    objects: u32,
    hosting: bool,
    at: Instant,
    /// Sent objects by load balancing since this report.
    awaiting: bool,
    /// The peer's start number (see [`LoadReport::boot`]).
    boot: u64,
}

/// One object to pass on.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Move {
    pub(super) object: ObjectId,
    pub(super) to: Peer,
    /// Whether it goes to a node other than its root (which keeps a record).
    pub(super) placed: bool,
}

/// What to do about a load report just received.
#[derive(Debug, Default, PartialEq)]
pub(super) struct ReportSeen {
    /// Answer with this node's load (a newcomer, a restart, or a question).
    pub(super) answer: bool,
    /// Tell the peer where the objects it may be root of live (a newcomer or
    /// a restart: it keeps no records).
    pub(super) publish_records: bool,
    /// The peer hosts objects.
    pub(super) hosting: bool,
}

/// The neighbours' loads as last reported, plus the objects sent them since;
/// and who waits for a neighbour's next report.
pub(super) struct Balancer {
    /// Whether this node runs objects (see `NodeBuilder::host_objects`).
    hosting: bool,
    /// Whether it takes new objects (see `Node::set_accepting`).
    accepting: bool,
    /// Whether it moves objects by load (see `NodeBuilder::load_balancing`).
    balancing: bool,
    loads: HashMap<NodeId, PeerLoad>,
    waiters: HashMap<NodeId, Vec<oneshot::Sender<()>>>,
}

impl Balancer {
    pub(super) fn new(hosting: bool, balancing: bool) -> Balancer {
        Balancer {
            hosting,
            accepting: true,
            balancing,
            loads: HashMap::new(),
            waiters: HashMap::new(),
        }
    }

    /// Runs objects from now on, or not ([`crate::Node::set_hosting`]).
    pub(super) fn set_hosting(&mut self, yes: bool) {
        self.hosting = yes;
    }

    /// Takes new objects from now on, or not ([`crate::Node::set_accepting`]).
    pub(super) fn set_accepting(&mut self, yes: bool) {
        self.accepting = yes;
    }

    /// Whether this node takes new objects (what its load reports say).
    pub(super) fn takes_new(&self) -> bool {
        self.hosting && self.accepting
    }

    /// Whether this node moves objects by load at all (a node that does not
    /// host always passes its objects on).
    pub(super) fn active(&self) -> bool {
        !self.hosting || self.balancing
    }

    /// Takes a report from `from`; wakes those waiting for it.
    pub(super) fn report(&mut self, from: NodeId, report: LoadReport, now: Instant) -> ReportSeen {
        let before = self.loads.insert(
            from,
            PeerLoad {
                objects: report.objects,
                hosting: report.hosting,
                at: now,
                awaiting: false,
                boot: report.boot,
            },
        );
        for w in self.waiters.remove(&from).unwrap_or_default() {
            let _ = w.send(());
        }
        let restarted = before.as_ref().is_some_and(|b| b.boot != report.boot);
        if restarted {
            debug!(peer = %from, "a neighbour restarted");
        }
        let new = before.is_none() || restarted;
        ReportSeen {
            answer: new || report.ask,
            publish_records: new,
            hosting: report.hosting,
        }
    }

    /// Forgets reports that are too old to act on.
    pub(super) fn forget_stale(&mut self, now: Instant) {
        self.loads
            .retain(|_, l| now.saturating_duration_since(l.at) < LOAD_STALE);
    }

    /// Counts one more object at `to` until it next reports.
    pub(super) fn sent_one(&mut self, to: NodeId) {
        if let Some(l) = self.loads.get_mut(&to) {
            l.objects = l.objects.saturating_add(1);
        }
    }

    /// Whether `id` said it does not host objects.
    pub(super) fn known_not_hosting(&self, id: NodeId) -> bool {
        self.loads.get(&id).is_some_and(|l| !l.hosting)
    }

    /// Whether some neighbour said it hosts objects.
    pub(super) fn knows_hosting_neighbour(&self) -> bool {
        self.loads.values().any(|l| l.hosting)
    }

    /// Of `peers`, those known to host.
    pub(super) fn hosting_among(&self, peers: &[Peer]) -> Vec<Peer> {
        peers
            .iter()
            .filter(|p| self.loads.get(&p.id).is_some_and(|l| l.hosting))
            .cloned()
            .collect()
    }

    /// Wakes `tx` at `peer`'s next report.
    pub(super) fn wait_for_report(&mut self, peer: NodeId, tx: oneshot::Sender<()>) {
        self.waiters.entry(peer).or_default().push(tx);
    }

    fn fresh(&self, id: NodeId, now: Instant) -> Option<&PeerLoad> {
        self.loads
            .get(&id)
            .filter(|l| l.hosting && now.saturating_duration_since(l.at) < LOAD_STALE)
    }

    /// The least-loaded neighbour that hosts, by its last fresh report (plus
    /// what this node sent it since), with that load. With `settled`, leaves
    /// out neighbours that were sent objects since their last report.
    fn least_loaded(
        &self,
        neighbours: &[Peer],
        now: Instant,
        settled: bool,
    ) -> Option<(u32, Peer)> {
        neighbours
            .iter()
            .filter_map(|p| {
                let l = self.fresh(p.id, now)?;
                (!(settled && l.awaiting)).then(|| (l.objects, p.clone()))
            })
            .min_by_key(|(n, p)| (*n, p.id))
    }

    /// Where a new object whose root is this node (running `mine`) should live
    /// instead, if anywhere: a neighbour running at least [`IMBALANCE`] fewer
    /// objects (on a node that does not host, any neighbour that does), of
    /// those running about the fewest the nearest to the object's GUID.
    pub(super) fn placement_target(
        &self,
        key: Key,
        mine: u32,
        neighbours: &[Peer],
        now: Instant,
    ) -> Option<Peer> {
        // a node that keeps its objects but takes no new ones places them
        // as one that does not host
        let hosting = self.takes_new();
        if hosting && !self.balancing {
            return None;
        }
        let (least, _) = self.least_loaded(neighbours, now, false)?;
        if hosting && mine < least + IMBALANCE {
            return None;
        }
        // of the neighbours running about the fewest, the nearest to the GUID:
        // objects with nearby GUIDs (which often call each other) stay together.
        // A node that does not host hands its keys to the nearest neighbours
        // that do, split where they meet (load balancing then evens out the
        // counts from the edges, keeping neighbouring GUIDs together).
        let window = if hosting {
            IMBALANCE
        } else {
            NON_HOSTING_SLACK
        };
        neighbours
            .iter()
            .filter(|p| {
                self.fresh(p.id, now).is_some_and(|l| {
                    l.objects < least + window && (!hosting || l.objects + IMBALANCE <= mine)
                })
            })
            .min_by_key(|p| (key.distance(p.id.key()), p.id))
            .cloned()
    }

    /// Whether [`Self::plan`] would pass objects on by the figures at hand.
    pub(super) fn needed(&self, mine: u32, neighbours: &[Peer], now: Instant) -> bool {
        self.least_loaded(neighbours, now, true)
            .is_some_and(|(theirs, _)| !self.hosting || mine >= theirs + IMBALANCE)
    }

    /// The objects to pass on: to neighbours that run at least [`IMBALANCE`]
    /// fewer, one batch per neighbour until it reports again (all of them, on
    /// a node that does not host). `movable` lists the objects that may move,
    /// with whether each was placed here; `root_of` names an object's root in
    /// this node's view when it is another node. The objects sent are counted
    /// at their new hosts until those report.
    pub(super) fn plan(
        &mut self,
        mut movable: Vec<(ObjectId, bool)>,
        mut mine: u32,
        neighbours: &[Peer],
        root_of: impl Fn(&ObjectId) -> Option<NodeId>,
        now: Instant,
    ) -> Vec<Move> {
        movable.sort();
        let mut moves = Vec::new();
        while let Some((theirs, to)) = self.least_loaded(neighbours, now, true) {
            if self.hosting && mine < theirs + IMBALANCE {
                break;
            }
            let batch = if self.hosting { (mine - theirs) / 2 } else { 1 };
            // first an object going back to its root, then one this node is
            // the root of, then any (an object placed here may move on within
            // the neighbourhood; its new host tells the replica set)
            let rank = |(id, placed): &(ObjectId, bool)| match root_of(id) {
                Some(root) if *placed && root == to.id => 0,
                None => 1,
                Some(_) => 2,
            };
            // (of those, the nearest to the neighbour on the ring: objects with
            // nearby GUIDs, which often call each other, stay together)
            let near = |id: &ObjectId| id.key().distance(to.id.key());
            let mut sent = 0;
            while sent < batch {
                let Some(i) =
                    (0..movable.len()).min_by_key(|i| (rank(&movable[*i]), near(&movable[*i].0)))
                else {
                    break;
                };
                let (object, _) = movable.remove(i);
                let placed = root_of(&object) != Some(to.id);
                moves.push(Move {
                    object,
                    to: to.clone(),
                    placed,
                });
                sent += 1;
            }
            mine -= sent;
            if let Some(l) = self.loads.get_mut(&to.id) {
                l.objects = l.objects.saturating_add(sent);
                l.awaiting = self.hosting;
            }
            if sent < batch || movable.is_empty() {
                break;
            }
        }
        moves
    }
}

impl NodeInner {
    /// Whether this node runs objects now.
    pub(super) fn hosting(&self) -> bool {
        self.host_objects.load(Ordering::Acquire)
    }

    /// The nodes this one balances its load with: its nearest on the ring.
    pub(super) fn neighbours(&self) -> Vec<Peer> {
        lock(&self.overlay)
            .replica_set(self.me.id.key(), BALANCE_NEIGHBOURS + 1)
            .into_iter()
            .filter(|p| p.id != self.me.id)
            .collect()
    }

    pub(super) fn load_report(&self) -> LoadReport {
        // (one lock at a time)
        let objects = lock(&self.catalog).running();
        let hosting = lock(&self.balancer).takes_new();
        LoadReport {
            objects,
            hosting,
            boot: self.boot,
            ask: false,
        }
    }

    /// Tells the neighbours this node's load; forgets stale reports.
    fn report_load(self: &Arc<Self>) {
        let report = self.load_report();
        lock(&self.balancer).forget_stale(now());
        for p in self.neighbours() {
            self.send_control(p, Body::Load(report));
        }
    }

    /// A neighbour reported its load.
    pub(super) fn load_reported(self: &Arc<Self>, from: &Peer, report: LoadReport) {
        let seen = lock(&self.balancer).report(from.id, report, now());
        if seen.hosting {
            self.hosting_neighbour.notify_waiters();
        }
        if seen.answer {
            // a newcomer hears this node's load at once (and so does a
            // neighbour about to move objects here or away)
            self.send_control(from.clone(), Body::Load(self.load_report()));
        }
        if seen.publish_records {
            // and learns where the objects it is (or may become) root of live
            self.publish_placements_to(from);
        }
    }

    /// Asks these neighbours (those known to host) for their load now, and
    /// waits for their answers, at most [`LOAD_ASK_WAIT`]: figures from the
    /// last periodic reports may be half a second old, and two nodes moving
    /// objects by each other's stale figures would swap them for nothing.
    pub(super) async fn refresh_loads(self: &Arc<Self>, peers: &[Peer]) {
        let hosting = lock(&self.balancer).hosting_among(peers);
        if hosting.is_empty() {
            return;
        }
        let ask = LoadReport {
            ask: true,
            ..self.load_report()
        };
        let mut answers = Vec::new();
        for p in hosting {
            let (tx, rx) = oneshot::channel();
            lock(&self.balancer).wait_for_report(p.id, tx);
            self.send_control(p, Body::Load(ask));
            answers.push(rx);
        }
        let _ = tokio::time::timeout(LOAD_ASK_WAIT, futures::future::join_all(answers)).await;
    }

    /// Where a new object rooted here should live instead, if anywhere.
    pub(super) fn placement_target(&self, key: Key) -> Option<Peer> {
        let mine = lock(&self.catalog).running();
        let neighbours = self.neighbours();
        lock(&self.balancer).placement_target(key, mine, &neighbours, now())
    }

    /// The objects load balancing may move now (with whether each was placed
    /// here), and how many run here; `None` when it moves nothing.
    fn movable(&self) -> Option<(Vec<(ObjectId, bool)>, u32)> {
        if !lock(&self.balancer).active()
            || self.stopped.load(Ordering::Acquire)
            || self.leaving.load(Ordering::Acquire)
        {
            return None;
        }
        let (movable, running) = lock(&self.catalog).movable(self.hosting(), MIN_STAY, now());
        (!movable.is_empty()).then_some((movable, running))
    }

    /// Whether [`Self::balance`] would pass objects on by the figures at hand.
    fn balance_needed(&self) -> bool {
        let Some((_, mine)) = self.movable() else {
            return false;
        };
        let neighbours = self.neighbours();
        lock(&self.balancer).needed(mine, &neighbours, now())
    }

    /// Passes running objects to neighbours that run at least [`IMBALANCE`]
    /// fewer (all of them, on a node that does not host).
    fn balance(self: &Arc<Self>) {
        let Some((movable, mine)) = self.movable() else {
            return;
        };
        let neighbours = self.neighbours();
        // the root in this node's view (not the next hop towards it)
        let roots: HashMap<ObjectId, Option<NodeId>> = {
            let overlay = lock(&self.overlay);
            movable
                .iter()
                .map(|(id, _)| {
                    let root = overlay.replica_set(id.key(), 1).first().map(|p| p.id);
                    (*id, root.filter(|r| *r != self.me.id))
                })
                .collect()
        };
        let moves = lock(&self.balancer).plan(
            movable,
            mine,
            &neighbours,
            |id| roots.get(id).copied().flatten(),
            now(),
        );
        for Move { object, to, placed } in moves {
            debug!(object = %object, to = %to, "passing an object to a less-loaded neighbour");
            let me = self.clone();
            self.spawn(async move {
                if let Err(e) = me.migrate(object, to.clone(), placed).await {
                    debug!(object = %object, to = %to, "load-balancing move not made: {e}");
                }
            });
        }
    }
}

/// Reports this node's load to its neighbours and balances, every [`LOAD_EVERY`].
pub(super) async fn load_loop(node: Weak<NodeInner>) {
    loop {
        {
            let Some(inner) = node.upgrade() else { return };
            if inner.stopped.load(Ordering::Acquire) {
                return;
            }
            if !inner.leaving.load(Ordering::Acquire) {
                inner.report_load();
                if inner.hosting() && inner.balance_needed() {
                    // not by figures up to half a second old
                    inner.refresh_loads(&inner.neighbours()).await;
                }
                inner.balance();
            }
        }
        tokio::time::sleep(LOAD_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u128) -> Peer {
        Peer::new(
            NodeId::from_u128(n),
            crate::NodeAddr::new(format!("mock:{n}")),
        )
    }

    fn report(objects: u32) -> LoadReport {
        LoadReport {
            objects,
            hosting: true,
            boot: 1,
            ask: false,
        }
    }

    fn objects(ns: &[u128]) -> Vec<(ObjectId, bool)> {
        ns.iter()
            .map(|n| (ObjectId::from_u128(*n), false))
            .collect()
    }

    #[test]
    fn a_new_object_stays_unless_a_neighbour_runs_at_least_two_fewer() {
        let t = Instant::now();
        let mut b = Balancer::new(true, true);
        let near = [peer(100), peer(200)];
        b.report(near[0].id, report(3), t);
        b.report(near[1].id, report(4), t);
        let key = Key(190);
        assert_eq!(
            b.placement_target(key, 4, &near, t),
            None,
            "3 is not 2 fewer than 4"
        );
        assert_eq!(b.placement_target(key, 5, &near, t), Some(peer(100)));
        // of those about as loaded, the nearest to the GUID
        b.report(near[1].id, report(3), t);
        assert_eq!(b.placement_target(key, 5, &near, t), Some(peer(200)));
        // stale figures are not acted on
        assert_eq!(b.placement_target(key, 5, &near, t + LOAD_STALE), None);
        // with balancing off, a hosting node keeps its new objects
        let off = Balancer::new(true, false);
        assert_eq!(off.placement_target(key, 50, &near, t), None);
    }

    #[test]
    fn a_node_that_does_not_host_places_on_the_nearest_unless_far_busier() {
        let t = Instant::now();
        let mut b = Balancer::new(false, true);
        let near = [peer(100), peer(200)];
        b.report(near[0].id, report(0), t);
        b.report(near[1].id, report(10), t);
        assert_eq!(b.placement_target(Key(190), 0, &near, t), Some(peer(200)));
        b.report(near[1].id, report(16), t);
        assert_eq!(b.placement_target(Key(190), 0, &near, t), Some(peer(100)));
    }

    #[test]
    fn the_plan_halves_the_difference_and_waits_for_the_next_report() {
        let t = Instant::now();
        let mut b = Balancer::new(true, true);
        let near = [peer(100)];
        b.report(near[0].id, report(2), t);
        assert!(b.needed(8, &near, t));
        let moves = b.plan(objects(&[1, 2, 3, 4, 5, 6, 7, 8]), 8, &near, |_| None, t);
        assert_eq!(moves.len(), 3, "(8 - 2) / 2");
        assert!(moves.iter().all(|m| m.to == peer(100) && m.placed));
        // the objects nearest the neighbour on the ring go
        let mut sent: Vec<u128> = moves.iter().map(|m| m.object.as_u128()).collect();
        sent.sort();
        assert_eq!(sent, vec![6, 7, 8]);
        // until it reports again, nothing more goes there
        assert!(!b.needed(5, &near, t));
        assert!(b.plan(objects(&[1, 2]), 5, &near, |_| None, t).is_empty());
        b.report(near[0].id, report(5), t);
        assert!(!b.needed(5, &near, t), "balanced");
    }

    #[test]
    fn objects_go_back_to_their_root_first() {
        let t = Instant::now();
        let mut b = Balancer::new(true, true);
        let near = [peer(100)];
        b.report(near[0].id, report(0), t);
        let movable = vec![
            (ObjectId::from_u128(99), false),
            (ObjectId::from_u128(5), true),
        ];
        let root = |id: &ObjectId| (id.as_u128() == 5).then(|| NodeId::from_u128(100));
        let moves = b.plan(movable, 2, &near, root, t);
        assert_eq!(moves.len(), 1);
        assert_eq!(moves[0].object, ObjectId::from_u128(5));
        assert!(!moves[0].placed, "to its root: no record needed");
    }

    #[test]
    fn a_node_that_does_not_host_passes_everything_on() {
        let t = Instant::now();
        let mut b = Balancer::new(false, true);
        let near = [peer(100), peer(200)];
        b.report(near[0].id, report(9), t);
        b.report(near[1].id, report(9), t);
        let moves = b.plan(objects(&[1, 2, 3]), 3, &near, |_| None, t);
        assert_eq!(moves.len(), 3);
    }

    #[test]
    fn a_newcomer_or_a_restart_is_answered_and_told_the_records() {
        let t = Instant::now();
        let mut b = Balancer::new(true, true);
        let p = NodeId::from_u128(7);
        let first = b.report(p, report(1), t);
        assert!(first.answer && first.publish_records && first.hosting);
        assert_eq!(
            b.report(p, report(2), t),
            ReportSeen {
                hosting: true,
                ..ReportSeen::default()
            }
        );
        let asked = b.report(
            p,
            LoadReport {
                ask: true,
                ..report(2)
            },
            t,
        );
        assert!(asked.answer && !asked.publish_records);
        let restarted = b.report(
            p,
            LoadReport {
                boot: 2,
                ..report(0)
            },
            t,
        );
        assert!(restarted.answer && restarted.publish_records);
        let (tx, mut rx) = oneshot::channel();
        b.wait_for_report(p, tx);
        b.report(p, report(0), t);
        assert!(
            rx.try_recv().is_ok(),
            "a waiter is woken by the next report"
        );
    }
}
