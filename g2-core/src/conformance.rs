//! The overlay conformance suite (feature `conformance`): one set of checks
//! every [`Overlay`] passes, whatever its notion of responsibility.
//!
//! A [`Harness`] drives a small network of real overlay state machines with a
//! tiny in-memory message pump on a virtual clock (sans-IO: no tokio, no
//! sockets, no wall clock). [`check_overlay`] runs the whole suite:
//!
//! 1. nodes join one after another through random members, then more join at
//!    nearly the same moment, some leave gracefully, and some fail silently at
//!    once;
//! 2. after each phase the network must converge (within a virtual-time
//!    bound) to the state [`Harness::check`] verifies: every live node has
//!    joined; every key has exactly one root among live nodes, the one the
//!    overlay's own [`RootRule`] names; a route from every live node ends at
//!    that root (a next hop that is gone is reported with
//!    [`Overlay::peer_unreachable`] and routing goes on, as the runtime does);
//!    and `replica_set(key, k)` at the root is the `k` next live nodes by the
//!    rule, root first;
//! 3. hostile bytes are refused without a panic.
//!
//! Overlay crates run it from their tests with a dev-dependency on `g2-core`
//! with the `conformance` feature:
//!
//! ```ignore
//! use g2_core::conformance::{check_factory, Params, RootRule};
//! check_factory(ChordConfig::default(), RootRule::Successor, &Params::default())
//!     .unwrap_or_else(|e| panic!("{e}"));
//! ```

use crate::rng::splitmix64 as splitmix;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::time::{Duration, Instant};

use crate::id::{Key, NodeAddr, NodeId, Peer};
use crate::overlay::{Overlay, OverlayFactory, Route};

/// Which live node is the root of a key, by the overlay's own rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootRule {
    /// The numerically closest node, either way round the ring (Pastry).
    Closest,
    /// The first node clockwise at or after the key (Chord).
    Successor,
}

impl RootRule {
    /// The order in which `ids` become root of `key`: the root first, then the
    /// node that would be root if it were gone, and so on.
    pub fn order(self, key: Key, ids: impl IntoIterator<Item = NodeId>) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = ids.into_iter().collect();
        match self {
            Self::Closest => ids.sort_by(|a, b| key.cmp_closeness(a.key(), b.key())),
            Self::Successor => ids.sort_by_key(|id| key.cw_distance(id.key())),
        }
        ids.dedup();
        ids
    }
}

/// The suite's sizes and bounds.
#[derive(Clone, Debug)]
pub struct Params {
    /// Seed of every random choice (ids, bootstraps, victims, latencies).
    pub seed: u64,
    /// Nodes joining one after another at first.
    pub nodes: usize,
    /// Nodes then joining at nearly the same moment.
    pub concurrent_joins: usize,
    /// Nodes then leaving gracefully.
    pub leaves: usize,
    /// Nodes then failing silently at once.
    pub failures: usize,
    /// `k` of the `replica_set(key, k)` check.
    pub replicas: usize,
    /// Random keys checked per check (node ids and their neighbours are checked too).
    pub keys: usize,
    /// Virtual time between two sequential joins.
    pub join_gap: Duration,
    /// Largest one-way message delay (delays are 1 ms up to this).
    pub max_latency: Duration,
    /// Virtual time between two convergence checks.
    pub check_every: Duration,
    /// Virtual time a phase may take to converge.
    pub settle_limit: Duration,
    /// Whether a message to a node that is gone is reported to its sender with
    /// [`Overlay::peer_unreachable`] (a transport that notices) or silently
    /// dropped (one that does not: the overlay's own timeouts must notice).
    pub report_unreachable: bool,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            seed: 1,
            nodes: 24,
            concurrent_joins: 8,
            leaves: 5,
            failures: 6,
            replicas: 4,
            keys: 48,
            join_gap: Duration::from_millis(300),
            max_latency: Duration::from_millis(40),
            check_every: Duration::from_secs(1),
            settle_limit: Duration::from_secs(900),
            report_unreachable: true,
        }
    }
}

/// What a conforming network must not show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A live node has not completed its join.
    NotJoined {
        /// The node.
        node: NodeId,
    },
    /// Not exactly the rule's root claims a key.
    Roots {
        /// The key.
        key: Key,
        /// The root by the rule.
        expected: NodeId,
        /// The live nodes whose `is_root` is true.
        claimed: Vec<NodeId>,
    },
    /// A route ended somewhere other than the root, or did not end.
    Route {
        /// The key.
        key: Key,
        /// Where the route started.
        from: NodeId,
        /// The root by the rule.
        expected: NodeId,
        /// Where it ended (`None`: it did not end within the hop bound).
        ended: Option<NodeId>,
        /// Hops taken.
        hops: usize,
    },
    /// `replica_set` at the root is not the rule's next live nodes.
    Replicas {
        /// The key.
        key: Key,
        /// The rule's `k` next live nodes.
        expected: Vec<NodeId>,
        /// What the root answered.
        got: Vec<NodeId>,
    },
    /// An overlay refused a message another node of the same overlay sent.
    Refused {
        /// The receiver.
        node: NodeId,
        /// The overlay's reason.
        reason: String,
    },
    /// An overlay keeps asking for a timeout at a time it has already been given.
    TimerStuck {
        /// The node.
        node: NodeId,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotJoined { node } => write!(f, "live node {node} has not joined"),
            Self::Roots {
                key,
                expected,
                claimed,
            } => write!(
                f,
                "key {key}: root should be {expected}, but {claimed:?} claim it"
            ),
            Self::Route {
                key,
                from,
                expected,
                ended,
                hops,
            } => match ended {
                Some(e) => write!(
                    f,
                    "key {key}: route from {from} ended at {e} after {hops} hops, not at the root {expected}"
                ),
                None => write!(
                    f,
                    "key {key}: route from {from} did not end within {hops} hops (root {expected})"
                ),
            },
            Self::Replicas { key, expected, got } => write!(
                f,
                "key {key}: replica_set at the root is {got:?}, expected {expected:?}"
            ),
            Self::Refused { node, reason } => {
                write!(f, "{node} refused a conforming peer's message: {reason}")
            }
            Self::TimerStuck { node } => {
                write!(f, "{node} keeps asking for a timeout that has passed")
            }
        }
    }
}

/// The suite failed: in which phase, with which seed, and why.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The overlay under test.
    pub overlay: String,
    /// The phase that did not converge.
    pub phase: &'static str,
    /// The seed to replay it with.
    pub seed: u64,
    /// Virtual time at the failure.
    pub at: Duration,
    /// The last violation seen.
    pub violation: Violation,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} fails conformance in phase {:?} (seed {}, virtual time {:?}): {}",
            self.overlay, self.phase, self.seed, self.at, self.violation
        )
    }
}

impl std::error::Error for Failure {}

/// How long each phase took to converge, in virtual time.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// `(phase, virtual time to converge)`.
    pub phases: Vec<(&'static str, Duration)>,
    /// Overlay messages delivered.
    pub messages: u64,
}

/// A message in flight: (delivery time, sequence, from, to, payload).
type InFlight = Reverse<(Duration, u64, usize, usize, Vec<u8>)>;

type Maker<'a> = Box<dyn FnMut(Peer) -> Box<dyn Overlay> + 'a>;

struct Slot {
    peer: Peer,
    overlay: Option<Box<dyn Overlay>>,
    /// The last deadline given to `handle_timeout`, and how often in a row.
    last_timeout: Option<(Instant, u32)>,
}

/// A small network of overlay nodes on a virtual clock, driven by an in-memory
/// message pump. Nodes are addressed `conf:<index>`.
pub struct Harness<'a> {
    make: Maker<'a>,
    rule: RootRule,
    base: Instant,
    now: Duration,
    rng: u64,
    max_latency: Duration,
    report_unreachable: bool,
    nodes: Vec<Slot>,
    queue: BinaryHeap<InFlight>,
    seq: u64,
    /// Overlay messages delivered.
    pub messages: u64,
    violation: Option<Violation>,
}

/// After this many `handle_timeout` calls at one deadline, the timer is stuck.
const STUCK: u32 = 10_000;

impl<'a> Harness<'a> {
    /// An empty network whose nodes `make` builds, judged by `rule`.
    pub fn new(
        make: impl FnMut(Peer) -> Box<dyn Overlay> + 'a,
        rule: RootRule,
        params: &Params,
    ) -> Self {
        Self {
            make: Box::new(make),
            rule,
            base: Instant::now(),
            now: Duration::ZERO,
            rng: params.seed,
            max_latency: params.max_latency.max(Duration::from_millis(1)),
            report_unreachable: params.report_unreachable,
            nodes: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            messages: 0,
            violation: None,
        }
    }

    /// Virtual time elapsed.
    pub fn now(&self) -> Duration {
        self.now
    }

    fn instant(&self) -> Instant {
        self.base + self.now
    }

    /// A random number from the harness's seeded generator.
    pub fn rand(&mut self) -> u64 {
        splitmix(&mut self.rng)
    }

    /// A random key.
    pub fn random_key(&mut self) -> Key {
        Key((u128::from(self.rand()) << 64) | u128::from(self.rand()))
    }

    /// Indices of the live (not failed, not departed) nodes.
    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].overlay.is_some())
            .collect()
    }

    /// Node `i`'s overlay while it is alive.
    pub fn overlay(&self, i: usize) -> Option<&dyn Overlay> {
        self.nodes[i].overlay.as_deref()
    }

    /// Node `i`'s identity.
    pub fn peer(&self, i: usize) -> &Peer {
        &self.nodes[i].peer
    }

    fn index(&self, p: &Peer) -> Option<usize> {
        let i: usize = p.addr.as_str().strip_prefix("conf:")?.parse().ok()?;
        (i < self.nodes.len() && self.nodes[i].peer.id == p.id).then_some(i)
    }

    /// Adds a node and joins it through `bootstrap` (or founds the overlay).
    pub fn add(&mut self, bootstrap: Option<usize>) -> usize {
        let i = self.nodes.len();
        let mut id = self.random_key().0;
        while self.nodes.iter().any(|s| s.peer.id.as_u128() == id) {
            id = self.random_key().0;
        }
        let peer = Peer::new(NodeId::from_u128(id), NodeAddr::new(format!("conf:{i}")));
        let overlay = (self.make)(peer.clone());
        self.nodes.push(Slot {
            peer,
            overlay: Some(overlay),
            last_timeout: None,
        });
        let b = bootstrap.map(|b| self.nodes[b].peer.clone());
        let now = self.instant();
        if let Some(o) = self.nodes[i].overlay.as_mut() {
            o.join(now, b);
        }
        self.pump(i);
        i
    }

    /// A random live node that has joined.
    pub fn random_joined(&mut self) -> Option<usize> {
        let joined: Vec<usize> = self
            .live()
            .into_iter()
            .filter(|&i| {
                self.nodes[i]
                    .overlay
                    .as_ref()
                    .is_some_and(|o| o.is_joined())
            })
            .collect();
        if joined.is_empty() {
            return None;
        }
        let k = (self.rand() % joined.len() as u64) as usize;
        Some(joined[k])
    }

    /// Node `i` leaves gracefully: its goodbyes go out, then it is gone.
    pub fn leave(&mut self, i: usize) {
        let now = self.instant();
        if let Some(o) = self.nodes[i].overlay.as_mut() {
            o.leave(now);
        }
        self.pump(i);
        self.nodes[i].overlay = None;
    }

    /// Node `i` fails silently: it stops and nobody is told.
    pub fn fail(&mut self, i: usize) {
        self.nodes[i].overlay = None;
    }

    /// Drains node `i`'s outputs: messages into the queue (or, to a node that
    /// is gone, dropped and possibly reported), events discarded.
    fn pump(&mut self, i: usize) {
        loop {
            let Some(o) = self.nodes[i].overlay.as_mut() else {
                return;
            };
            let Some(t) = o.poll_transmit() else { break };
            match self.index(&t.to) {
                Some(to) if self.nodes[to].overlay.is_some() => {
                    let span = self.max_latency.as_micros().max(1000) as u64 - 999;
                    let delay = Duration::from_micros(1000 + self.rand() % span);
                    self.seq += 1;
                    self.queue
                        .push(Reverse((self.now + delay, self.seq, i, to, t.payload)));
                }
                _ => {
                    if self.report_unreachable {
                        let now = self.instant();
                        if let Some(o) = self.nodes[i].overlay.as_mut() {
                            o.peer_unreachable(now, t.to.id);
                        }
                    }
                }
            }
        }
        if let Some(o) = self.nodes[i].overlay.as_mut() {
            while o.poll_event().is_some() {}
        }
    }

    /// Runs messages and timers for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let msg = self.queue.peek().map(|Reverse(q)| q.0);
            let timer = (0..self.nodes.len())
                .filter_map(|i| {
                    let t = self.nodes[i].overlay.as_ref()?.poll_timeout()?;
                    Some((t.saturating_duration_since(self.base), i))
                })
                .min();
            let next = match (msg, timer) {
                (Some(m), Some((t, _))) => m.min(t),
                (Some(m), None) => m,
                (None, Some((t, _))) => t,
                (None, None) => break,
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            let now = self.instant();
            if msg == Some(next) {
                let Some(Reverse((_, _, from, to, payload))) = self.queue.pop() else {
                    break;
                };
                let from_peer = self.nodes[from].peer.clone();
                let Some(o) = self.nodes[to].overlay.as_mut() else {
                    continue;
                };
                self.messages += 1;
                if let Err(e) = o.handle_message(now, from_peer, &payload) {
                    let node = self.nodes[to].peer.id;
                    self.violation.get_or_insert(Violation::Refused {
                        node,
                        reason: e.to_string(),
                    });
                }
                self.pump(to);
            } else if let Some((t, i)) = timer {
                let at = self.base + t;
                let slot = &mut self.nodes[i];
                let count = match slot.last_timeout {
                    Some((prev, c)) if prev == at => c + 1,
                    _ => 1,
                };
                slot.last_timeout = Some((at, count));
                if count > STUCK {
                    let node = slot.peer.id;
                    self.violation.get_or_insert(Violation::TimerStuck { node });
                    slot.overlay = None;
                    continue;
                }
                if let Some(o) = slot.overlay.as_mut() {
                    o.handle_timeout(now);
                }
                self.pump(i);
            }
        }
        self.now = self.now.max(end);
    }

    /// The root of `key` among live nodes by the rule.
    pub fn root(&self, key: Key) -> Option<NodeId> {
        let live = self.live().into_iter().map(|i| self.nodes[i].peer.id);
        self.rule.order(key, live).first().copied()
    }

    /// Keys worth checking: `random` random ones, plus every live node's id and
    /// the keys just either side of it (where responsibility changes hands).
    pub fn sample_keys(&mut self, random: usize) -> Vec<Key> {
        let mut keys: Vec<Key> = (0..random).map(|_| self.random_key()).collect();
        for i in self.live() {
            let k = self.nodes[i].peer.id.as_u128();
            keys.extend([Key(k), Key(k.wrapping_add(1)), Key(k.wrapping_sub(1))]);
        }
        keys
    }

    /// Checks the converged state for `keys` (see the module docs); the first
    /// violation found. Routes that meet a node that is gone report it with
    /// `peer_unreachable` and go on, as the runtime does, so a check may repair.
    pub fn check(&mut self, keys: &[Key], replicas: usize) -> Result<(), Violation> {
        if let Some(v) = self.violation.take() {
            return Err(v);
        }
        let live = self.live();
        for &i in &live {
            if !self.nodes[i]
                .overlay
                .as_ref()
                .is_some_and(|o| o.is_joined())
            {
                return Err(Violation::NotJoined {
                    node: self.nodes[i].peer.id,
                });
            }
        }
        let ids: BTreeMap<NodeId, usize> =
            live.iter().map(|&i| (self.nodes[i].peer.id, i)).collect();
        for &key in keys {
            let order = self.rule.order(key, ids.keys().copied());
            let Some(&expected) = order.first() else {
                return Ok(());
            };
            let claimed: Vec<NodeId> = live
                .iter()
                .filter(|&&i| {
                    self.nodes[i]
                        .overlay
                        .as_ref()
                        .is_some_and(|o| o.is_root(key))
                })
                .map(|&i| self.nodes[i].peer.id)
                .collect();
            if claimed != [expected] {
                return Err(Violation::Roots {
                    key,
                    expected,
                    claimed,
                });
            }
            for &from in &live {
                self.check_route(key, from, expected, live.len())?;
            }
            let root = ids[&expected];
            let want: Vec<NodeId> = order.iter().take(replicas).copied().collect();
            let got: Vec<NodeId> = self.nodes[root]
                .overlay
                .as_ref()
                .map(|o| o.replica_set(key, replicas))
                .unwrap_or_default()
                .into_iter()
                .map(|p| p.id)
                .collect();
            if got != want {
                return Err(Violation::Replicas {
                    key,
                    expected: want,
                    got,
                });
            }
        }
        Ok(())
    }

    fn check_route(
        &mut self,
        key: Key,
        from: usize,
        expected: NodeId,
        live: usize,
    ) -> Result<(), Violation> {
        let limit = live + self.nodes.len() + 8;
        let mut at = from;
        let mut hops = 0;
        let from_id = self.nodes[from].peer.id;
        let fail = |ended: Option<NodeId>, hops| Violation::Route {
            key,
            from: from_id,
            expected,
            ended,
            hops,
        };
        while hops <= limit {
            let Some(o) = self.nodes[at].overlay.as_ref() else {
                return Err(fail(None, hops));
            };
            let next = match o.route(key) {
                Route::Local => None,
                Route::Forward(p) if p.id == self.nodes[at].peer.id => None,
                Route::Forward(p) => Some(p),
            };
            let Some(p) = next else {
                let here = self.nodes[at].peer.id;
                return if here == expected {
                    Ok(())
                } else {
                    Err(fail(Some(here), hops))
                };
            };
            hops += 1;
            match self.index(&p).filter(|&n| self.nodes[n].overlay.is_some()) {
                Some(n) => at = n,
                None => {
                    let now = self.instant();
                    if let Some(o) = self.nodes[at].overlay.as_mut() {
                        o.peer_unreachable(now, p.id);
                    }
                    self.pump(at);
                }
            }
        }
        Err(fail(None, hops))
    }

    /// Runs until [`Harness::check`] passes twice `check_every` apart (a new
    /// sample of random keys each time), or `limit` of virtual time has passed.
    /// Returns the virtual time it took, or the last violation.
    pub fn settle(
        &mut self,
        params: &Params,
        limit: Duration,
    ) -> Result<Duration, (Duration, Violation)> {
        let start = self.now;
        let mut passed = 0;
        let mut last;
        loop {
            self.run_for(params.check_every);
            let keys = self.sample_keys(params.keys);
            match self.check(&keys, params.replicas) {
                Ok(()) => {
                    passed += 1;
                    if passed >= 2 {
                        return Ok(self.now - start);
                    }
                    continue;
                }
                Err(v) => {
                    passed = 0;
                    last = v;
                }
            }
            if self.now - start >= limit {
                return Err((self.now, last));
            }
        }
    }

    /// Feeds every live node hostile bytes (garbage, truncations and bit flips
    /// of nothing in particular): it must refuse or ignore them, never panic.
    pub fn hostile_input(&mut self) {
        let now = self.instant();
        for i in self.live() {
            let from = Peer::new(
                NodeId::from_u128(self.random_key().0),
                NodeAddr::new("conf:hostile"),
            );
            for len in [0usize, 1, 2, 7, 33, 200] {
                let bytes: Vec<u8> = (0..len).map(|_| self.rand() as u8).collect();
                if let Some(o) = self.nodes[i].overlay.as_mut() {
                    let _ = o.handle_message(now, from.clone(), &bytes);
                }
            }
            self.pump(i);
        }
    }
}

/// Runs the whole suite on nodes `make` builds, judged by `rule`.
pub fn check_overlay(
    name: &str,
    make: impl FnMut(Peer) -> Box<dyn Overlay>,
    rule: RootRule,
    params: &Params,
) -> Result<Report, Box<Failure>> {
    let mut h = Harness::new(make, rule, params);
    let mut report = Report::default();
    let failure = |phase, (at, violation)| {
        Box::new(Failure {
            overlay: name.to_owned(),
            phase,
            seed: params.seed,
            at,
            violation,
        })
    };
    // Sequential joins.
    let first = h.add(None);
    h.run_for(params.join_gap);
    let _ = first;
    for _ in 1..params.nodes.max(1) {
        let b = h.random_joined();
        h.add(b);
        h.run_for(params.join_gap);
    }
    let t = h
        .settle(params, params.settle_limit)
        .map_err(|e| failure("sequential joins", e))?;
    report.phases.push(("sequential joins", t));
    // Concurrent joins.
    for _ in 0..params.concurrent_joins {
        let b = h.random_joined();
        h.add(b);
        h.run_for(Duration::from_millis(1));
    }
    let t = h
        .settle(params, params.settle_limit)
        .map_err(|e| failure("concurrent joins", e))?;
    report.phases.push(("concurrent joins", t));
    // Graceful leaves.
    for _ in 0..params.leaves {
        if h.live().len() <= 2 {
            break;
        }
        if let Some(v) = h.random_joined() {
            h.leave(v);
        }
        h.run_for(Duration::from_millis(5));
    }
    let t = h
        .settle(params, params.settle_limit)
        .map_err(|e| failure("graceful leaves", e))?;
    report.phases.push(("graceful leaves", t));
    // Silent failures, all at once.
    for _ in 0..params.failures {
        if h.live().len() <= 2 {
            break;
        }
        if let Some(v) = h.random_joined() {
            h.fail(v);
        }
    }
    let t = h
        .settle(params, params.settle_limit)
        .map_err(|e| failure("silent failures", e))?;
    report.phases.push(("silent failures", t));
    // Hostile input changes nothing.
    h.hostile_input();
    let t = h
        .settle(params, params.settle_limit)
        .map_err(|e| failure("hostile input", e))?;
    report.phases.push(("hostile input", t));
    report.messages = h.messages;
    Ok(report)
}

/// [`check_overlay`] with nodes built by an [`OverlayFactory`] (an overlay's config).
pub fn check_factory<F: OverlayFactory + Clone>(
    factory: F,
    rule: RootRule,
    params: &Params,
) -> Result<Report, Box<Failure>> {
    let name = factory.name();
    check_overlay(name, |p| Box::new(factory.clone()).build(p), rule, params)
}

#[cfg(test)]
mod tests {
    //! The suite must be able to fail: an oracle overlay with perfect shared
    //! knowledge passes it, and each deliberately broken variant fails it.

    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::overlay::{OverlayError, OverlayEvent, Transmit};

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Flaw {
        None,
        /// Replica sets leave the root out.
        ReplicasWithoutRoot,
        /// Never learns of silent failures.
        IgnoresFailures,
        /// Routes one step too far (to the root's successor).
        Overshoots,
    }

    /// Knows the live membership exactly (shared); applies `rule`.
    struct Oracle {
        me: Peer,
        rule: RootRule,
        flaw: Flaw,
        members: Arc<Mutex<BTreeSet<(NodeId, String)>>>,
        joined: bool,
        left: bool,
        events: Vec<OverlayEvent>,
    }

    impl Drop for Oracle {
        fn drop(&mut self) {
            if self.flaw != Flaw::IgnoresFailures
                && let Ok(mut m) = self.members.lock()
            {
                m.remove(&(self.me.id, self.me.addr.0.clone()));
            }
        }
    }

    impl Oracle {
        fn members(&self) -> Vec<Peer> {
            self.members
                .lock()
                .map(|m| {
                    m.iter()
                        .map(|(id, a)| Peer::new(*id, NodeAddr::new(a.clone())))
                        .collect()
                })
                .unwrap_or_default()
        }
        fn ordered(&self, key: Key) -> Vec<Peer> {
            let members = self.members();
            let order = self.rule.order(key, members.iter().map(|p| p.id));
            order
                .into_iter()
                .filter_map(|id| members.iter().find(|p| p.id == id).cloned())
                .collect()
        }
    }

    impl Overlay for Oracle {
        fn local(&self) -> Peer {
            self.me.clone()
        }
        fn join(&mut self, _now: Instant, _bootstrap: Option<Peer>) {
            if let Ok(mut m) = self.members.lock() {
                m.insert((self.me.id, self.me.addr.0.clone()));
            }
            self.joined = true;
            self.events.push(OverlayEvent::Joined);
        }
        fn leave(&mut self, _now: Instant) {
            if let Ok(mut m) = self.members.lock() {
                m.remove(&(self.me.id, self.me.addr.0.clone()));
            }
            self.left = true;
        }
        fn handle_message(
            &mut self,
            _now: Instant,
            from: Peer,
            msg: &[u8],
        ) -> Result<(), OverlayError> {
            if msg.is_empty() {
                return Ok(());
            }
            Err(OverlayError::Malformed {
                from: from.id,
                reason: "the oracle takes no messages".into(),
            })
        }
        fn handle_timeout(&mut self, _now: Instant) {}
        fn peer_unreachable(&mut self, _now: Instant, _peer: NodeId) {}
        fn rtt_sample(&mut self, _peer: NodeId, _rtt: Duration) {}
        fn poll_transmit(&mut self) -> Option<Transmit> {
            None
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn poll_event(&mut self) -> Option<OverlayEvent> {
            self.events.pop()
        }
        fn route(&self, key: Key) -> Route {
            let order = self.ordered(key);
            let pick = if self.flaw == Flaw::Overshoots {
                order.get(1).or(order.first())
            } else {
                order.first()
            };
            match pick {
                Some(p) if p.id != self.me.id => Route::Forward(p.clone()),
                _ => Route::Local,
            }
        }
        fn is_root(&self, key: Key) -> bool {
            self.joined
                && !self.left
                && self
                    .ordered(key)
                    .first()
                    .is_some_and(|p| p.id == self.me.id)
        }
        fn replica_set(&self, key: Key, k: usize) -> Vec<Peer> {
            let skip = usize::from(self.flaw == Flaw::ReplicasWithoutRoot);
            self.ordered(key).into_iter().skip(skip).take(k).collect()
        }
        fn is_joined(&self) -> bool {
            self.joined && !self.left
        }
    }

    fn params() -> Params {
        Params {
            nodes: 12,
            concurrent_joins: 4,
            leaves: 3,
            failures: 3,
            keys: 16,
            settle_limit: Duration::from_secs(5),
            ..Params::default()
        }
    }

    fn run(own: RootRule, judged_by: RootRule, flaw: Flaw) -> Result<Report, Box<Failure>> {
        let members = Arc::new(Mutex::new(BTreeSet::new()));
        check_overlay(
            "oracle",
            |me| {
                Box::new(Oracle {
                    me,
                    rule: own,
                    flaw,
                    members: members.clone(),
                    joined: false,
                    left: false,
                    events: Vec::new(),
                })
            },
            judged_by,
            &params(),
        )
    }

    #[test]
    fn a_correct_overlay_passes_under_either_rule() {
        for rule in [RootRule::Closest, RootRule::Successor] {
            let r = run(rule, rule, Flaw::None).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.phases.len(), 5);
        }
    }

    #[test]
    fn the_wrong_rule_fails() {
        // Roots or replica orders disagree, whichever a key shows first.
        for (own, judged_by) in [
            (RootRule::Successor, RootRule::Closest),
            (RootRule::Closest, RootRule::Successor),
        ] {
            let e = run(own, judged_by, Flaw::None).unwrap_err();
            assert_eq!(e.phase, "sequential joins");
            assert!(
                matches!(
                    e.violation,
                    Violation::Roots { .. } | Violation::Replicas { .. }
                ),
                "{e}"
            );
        }
    }

    #[test]
    fn replica_sets_without_the_root_fail() {
        let e = run(
            RootRule::Successor,
            RootRule::Successor,
            Flaw::ReplicasWithoutRoot,
        )
        .unwrap_err();
        assert!(matches!(e.violation, Violation::Replicas { .. }), "{e}");
    }

    #[test]
    fn overshooting_routes_fail() {
        let e = run(RootRule::Closest, RootRule::Closest, Flaw::Overshoots).unwrap_err();
        assert!(matches!(e.violation, Violation::Route { .. }), "{e}");
    }

    #[test]
    fn an_overlay_that_never_learns_of_failures_fails_after_them() {
        let e = run(RootRule::Closest, RootRule::Closest, Flaw::IgnoresFailures).unwrap_err();
        assert_eq!(e.phase, "silent failures", "{e}");
        assert!(e.to_string().contains("seed 1"), "{e}");
    }

    #[test]
    fn the_rules_order_nodes_their_own_way() {
        let ids = [10u128, 20, 30].map(NodeId::from_u128);
        let key = Key(19);
        assert_eq!(
            RootRule::Closest.order(key, ids),
            [20u128, 10, 30].map(NodeId::from_u128)
        );
        assert_eq!(
            RootRule::Successor.order(key, ids),
            [20u128, 30, 10].map(NodeId::from_u128)
        );
    }
}
