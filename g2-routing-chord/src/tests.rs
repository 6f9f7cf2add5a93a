//! Small Chord rings driven deterministically: a virtual clock, a message queue
//! with per-link latency, silent failures and graceful leaves.

use g2_core::rng::splitmix64 as splitmix;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use g2_core::overlay::{Overlay, OverlayEvent, Route};
use g2_core::{Key, NodeAddr, NodeId, Peer};
use proptest::prelude::*;

use crate::{ChordConfig, ChordNode};

fn test_config() -> ChordConfig {
    ChordConfig {
        successor_list_len: 8,
        stabilize_period: Duration::from_millis(500),
        fix_fingers_period: Duration::from_millis(200),
        check_predecessor_period: Duration::from_millis(500),
        request_timeout: Duration::from_millis(500),
    }
}

type Queued = Reverse<(Duration, u64, usize, usize, Vec<u8>)>;

/// Hop counts of the lookups made so far.
#[derive(Default)]
struct Hops {
    total: usize,
    max: usize,
    count: usize,
}

struct Net {
    base: Instant,
    now: Duration,
    cfg: ChordConfig,
    nodes: Vec<ChordNode>,
    alive: Vec<bool>,
    events: Vec<Vec<OverlayEvent>>,
    queue: BinaryHeap<Queued>,
    seq: u64,
    rng: u64,
    hops: Hops,
}

impl Net {
    fn new(seed: u64, cfg: ChordConfig) -> Self {
        Self {
            base: Instant::now(),
            now: Duration::ZERO,
            cfg,
            nodes: Vec::new(),
            alive: Vec::new(),
            events: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            rng: seed,
            hops: Hops::default(),
        }
    }

    fn at(&self) -> Instant {
        self.base + self.now
    }

    fn rand(&mut self) -> u64 {
        splitmix(&mut self.rng)
    }

    fn random_key(&mut self) -> Key {
        Key((u128::from(self.rand()) << 64) | u128::from(self.rand()))
    }

    fn latency(from: usize, to: usize) -> Duration {
        Duration::from_millis(5 + ((from * 7 + to * 13) % 40) as u64)
    }

    fn index(p: &Peer) -> usize {
        p.addr
            .as_str()
            .trim_start_matches("mem:")
            .parse()
            .expect("test addresses are mem:<index>")
    }

    fn fresh_peer(&mut self) -> Peer {
        let i = self.nodes.len();
        let id = self.random_key().0;
        Peer::new(NodeId::from_u128(id), NodeAddr::new(format!("mem:{i}")))
    }

    /// Adds a node joining through `bootstrap` (or founding the ring).
    fn add(&mut self, bootstrap: Option<usize>) -> usize {
        let local = self.fresh_peer();
        let i = self.nodes.len();
        self.nodes.push(ChordNode::new(self.cfg.clone(), local));
        self.alive.push(true);
        self.events.push(Vec::new());
        let b = bootstrap.map(|b| self.nodes[b].local());
        let now = self.at();
        self.nodes[i].join(now, b);
        self.pump(i);
        i
    }

    fn pump(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].poll_transmit() {
            let to = Self::index(&t.to);
            self.seq += 1;
            self.queue.push(Reverse((
                self.now + Self::latency(i, to),
                self.seq,
                i,
                to,
                t.payload,
            )));
        }
        while let Some(e) = self.nodes[i].poll_event() {
            self.events[i].push(e);
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let msg_at = self.queue.peek().map(|Reverse(q)| q.0);
            let timer = (0..self.nodes.len())
                .filter(|&i| self.alive[i])
                .filter_map(|i| self.nodes[i].poll_timeout().map(|t| (t - self.base, i)))
                .min();
            let next = match (msg_at, timer) {
                (Some(m), Some((t, _))) => m.min(t),
                (m, t) => match m.or(t.map(|x| x.0)) {
                    Some(x) => x,
                    None => break,
                },
            };
            if next > end {
                break;
            }
            self.now = next;
            if msg_at == Some(next) {
                let Reverse((_, _, from, to, payload)) = self.queue.pop().expect("peeked");
                if self.alive[to] && self.alive[from] {
                    let now = self.at();
                    let from_peer = self.nodes[from].local();
                    self.nodes[to]
                        .handle_message(now, from_peer, &payload)
                        .expect("well-formed messages between honest nodes");
                    self.pump(to);
                }
            } else if let Some((_, i)) = timer {
                let now = self.at();
                self.nodes[i].handle_timeout(now);
                self.pump(i);
            }
        }
        self.now = end;
    }

    /// Joins nodes one at a time, each through a random live node.
    fn grow(&mut self, n: usize) {
        if self.nodes.is_empty() {
            self.add(None);
            self.run_for(Duration::from_millis(100));
        }
        while self.live().len() < n {
            let live = self.live();
            let b = live[self.rand() as usize % live.len()];
            self.add(Some(b));
            self.run_for(Duration::from_millis(300));
        }
        self.settle();
    }

    /// Long enough for fix_fingers to go round the distinct fingers.
    fn settle(&mut self) {
        self.run_for(Duration::from_secs(10));
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.alive[i]).collect()
    }

    fn key_of(&self, i: usize) -> Key {
        self.nodes[i].local().id.key()
    }

    /// The live nodes clockwise from `key`, its root (successor) first.
    fn clockwise_from(&self, key: Key) -> Vec<usize> {
        let mut live = self.live();
        live.sort_by_key(|&i| key.cw_distance(self.key_of(i)));
        live
    }

    fn root(&self, key: Key) -> usize {
        self.clockwise_from(key)[0]
    }

    /// Routes like the runtime: hop by hop, reporting dead next hops.
    fn lookup(&mut self, mut at: usize, key: Key) -> (usize, usize) {
        let mut hops = 0;
        for _ in 0..300 {
            match self.nodes[at].route(key) {
                Route::Local => return (at, hops),
                Route::Forward(p) => {
                    let next = Self::index(&p);
                    if self.alive[next] {
                        at = next;
                        hops += 1;
                    } else {
                        let now = self.at();
                        self.nodes[at].peer_unreachable(now, p.id);
                        self.pump(at);
                    }
                }
            }
        }
        panic!("route for {key:?} did not terminate");
    }

    /// Every live node knows its true predecessor and successor; every key has
    /// exactly one root among live nodes; routes from any node end there within
    /// `log2 N + 2` hops.
    fn assert_converged(&mut self, keys: usize) {
        self.check(keys, true);
    }

    /// As `assert_converged`; `log_bound` also bounds the hops (ids are random).
    fn check(&mut self, keys: usize, log_bound: bool) {
        let live = self.live();
        let n = live.len();
        for &i in &live {
            assert!(self.nodes[i].is_joined(), "node {i} not joined");
            let me = self.key_of(i);
            let ring = self.clockwise_from(Key(me.0.wrapping_add(1)));
            if n > 1 {
                assert_eq!(
                    self.nodes[i].successors().first().map(Self::index),
                    Some(ring[0]),
                    "successor of node {i}"
                );
                assert_eq!(
                    self.nodes[i].predecessor().map(Self::index),
                    Some(ring[n - 2]),
                    "predecessor of node {i}"
                );
            }
        }
        let bound = (n as f64).log2().ceil() as usize + 2;
        for _ in 0..keys {
            let key = self.random_key();
            let root = self.root(key);
            let roots: Vec<usize> = live
                .iter()
                .copied()
                .filter(|&i| self.nodes[i].is_root(key))
                .collect();
            assert_eq!(roots, vec![root], "roots of {key:?}");
            let src = live[self.rand() as usize % n];
            let (end, hops) = self.lookup(src, key);
            assert_eq!(end, root, "route of {key:?} from {src}");
            assert!(!log_bound || hops <= bound, "{hops} hops at {n} nodes");
            self.hops.total += hops;
            self.hops.count += 1;
            self.hops.max = self.hops.max.max(hops);
        }
    }

    fn hop_report(&self, what: &str) -> (f64, usize) {
        let mean = self.hops.total as f64 / self.hops.count.max(1) as f64;
        println!(
            "{what}: {} lookups, mean {mean:.2} hops, max {} hops",
            self.hops.count, self.hops.max
        );
        (mean, self.hops.max)
    }
}

#[test]
fn two_and_three_nodes_converge() {
    let mut net = Net::new(1, test_config());
    net.grow(2);
    net.assert_converged(200);
    net.grow(3);
    net.assert_converged(200);
}

#[test]
fn twenty_nodes_converge() {
    let mut net = Net::new(2, test_config());
    net.grow(20);
    net.assert_converged(500);
    for i in net.live() {
        assert_eq!(net.nodes[i].successors().len(), 8, "a full successor list");
        assert!(net.nodes[i].routing_entries() >= 2, "fingers at node {i}");
    }
}

#[test]
fn two_hundred_nodes_route_in_log_n_hops_and_replicas_follow_the_root() {
    let mut net = Net::new(3, test_config());
    net.grow(200);
    net.assert_converged(2000);
    let (mean, max) = net.hop_report("200 nodes joined one by one");
    // The paper: about ½·log2 N on average.
    assert!(mean <= 0.5 * 200f64.log2() + 1.0, "mean {mean} hops");
    assert!(max <= 10);
    let fingers: usize = net
        .live()
        .iter()
        .map(|&i| net.nodes[i].routing_entries())
        .sum();
    println!(
        "200 nodes: {:.1} distinct fingers per node",
        fingers as f64 / 200.0
    );
    for _ in 0..50 {
        let key = net.random_key();
        let root = net.root(key);
        let expect: Vec<Peer> = net.clockwise_from(key)[..4]
            .iter()
            .map(|&i| net.nodes[i].local())
            .collect();
        // The root and its predecessor both know the replica set.
        assert_eq!(net.nodes[root].replica_set(key, 4), expect);
        let pred = net.clockwise_from(key)[199];
        assert_eq!(net.nodes[pred].replica_set(key, 4), expect);
    }
}

/// `n - 1` nodes join through one bootstrap within ten milliseconds; eight
/// seconds (16 stabilisation rounds) later the ring is exact.
fn concurrent_joins_converge(n: usize, seed: u64) {
    let mut net = Net::new(seed, test_config());
    net.add(None);
    net.run_for(Duration::from_millis(100));
    for _ in 1..n {
        net.add(Some(0));
        net.run_for(Duration::from_micros(50));
    }
    net.run_for(Duration::from_secs(8));
    net.assert_converged(500);
    net.hop_report(&format!("{n} concurrent joins"));
}

#[test]
fn twenty_concurrent_joins_converge() {
    concurrent_joins_converge(20, 21);
}

#[test]
fn two_hundred_concurrent_joins_converge() {
    concurrent_joins_converge(200, 22);
}

#[test]
fn a_joining_node_takes_its_keys_from_its_successor() {
    let mut net = Net::new(7, test_config());
    net.grow(20);
    for e in &mut net.events {
        e.clear();
    }
    let b = net.live()[3];
    let new = net.add(Some(b));
    let new_peer = net.nodes[new].local();
    let key = new_peer.id.key();
    let succ = net.clockwise_from(Key(key.0.wrapping_add(1)))[0];
    let pred_key = net.key_of(net.clockwise_from(key)[20]);
    net.run_for(Duration::from_secs(2));
    assert!(net.nodes[new].is_joined());
    assert!(matches!(
        net.events[new].first(),
        Some(OverlayEvent::Joined)
    ));
    let moves: Vec<_> = net
        .events
        .iter()
        .enumerate()
        .flat_map(|(i, evs)| evs.iter().map(move |e| (i, e)))
        .filter_map(|(i, e)| match e {
            OverlayEvent::KeysMoved { ranges, new_root } => Some((i, ranges.clone(), new_root)),
            _ => None,
        })
        .collect();
    assert_eq!(moves.len(), 1, "one hand-over: {moves:?}");
    let (from, ranges, to) = &moves[0];
    assert_eq!((*from, *to), (succ, &new_peer));
    // (predecessor, new] moved, as a half-open [pred + 1, new + 1).
    assert_eq!(ranges[0].start, Key(pred_key.0.wrapping_add(1)));
    assert_eq!(ranges[0].end, Key(key.0.wrapping_add(1)));
    assert!(ranges[0].contains(key));
    assert!(!ranges[0].contains(pred_key));
    assert!(net.nodes[new].is_root(key) && !net.nodes[succ].is_root(key));
    net.settle();
    net.assert_converged(300);
}

#[test]
fn graceful_leaves_hand_keys_to_the_successor() {
    let mut net = Net::new(6, test_config());
    net.grow(40);
    let ring = net.clockwise_from(Key(0));
    // Two alone, and two neighbours leaving at the same time.
    let leavers = [ring[3], ring[17], ring[18], ring[30]];
    for &l in &leavers {
        let key = net.key_of(l);
        let succ = net.clockwise_from(Key(key.0.wrapping_add(1)))[0];
        let pred_key = net.key_of(net.clockwise_from(key)[net.live().len() - 1]);
        net.events[l].clear();
        let now = net.at();
        net.nodes[l].leave(now);
        net.pump(l);
        let evs = std::mem::take(&mut net.events[l]);
        assert!(matches!(evs.last(), Some(OverlayEvent::Left)));
        let moved: Vec<_> = evs
            .iter()
            .filter_map(|e| match e {
                OverlayEvent::KeysMoved { ranges, new_root } => Some((ranges, new_root)),
                _ => None,
            })
            .collect();
        assert_eq!(moved.len(), 1, "{evs:?}");
        assert!(moved[0].0[0].contains(key) && !moved[0].0[0].contains(pred_key));
        if l != ring[17] {
            assert_eq!(*moved[0].1, net.nodes[succ].local());
        }
        assert_eq!(net.nodes[l].poll_timeout(), None);
        // Stopped, but its leave messages are on their way.
        net.alive[l] = false;
    }
    for &l in &leavers {
        net.alive[l] = true;
    }
    net.run_for(Duration::from_millis(100));
    for &l in &leavers {
        net.alive[l] = false;
    }
    let gone: Vec<NodeId> = leavers.iter().map(|&l| net.nodes[l].local().id).collect();
    let lone = [gone[0], gone[3]];
    // Nobody reports a lone graceful leave as a failure.
    assert!(
        !net.events
            .iter()
            .flatten()
            .any(|e| matches!(e, OverlayEvent::PeerFailed(id) if lone.contains(id)))
    );
    net.settle();
    for i in net.live() {
        assert!(
            net.nodes[i]
                .successors()
                .iter()
                .all(|p| !gone.contains(&p.id)),
            "node {i} still lists a leaver"
        );
    }
    net.assert_converged(500);
}

#[test]
fn silent_failures_converge_again() {
    let mut net = Net::new(4, test_config());
    net.grow(100);
    // Ten at once, among them three neighbours in a row.
    let ring = net.clockwise_from(Key(0));
    let mut victims: Vec<usize> = (0..7).map(|k| ring[k * 13 + 5]).collect();
    victims.extend(&ring[50..53]);
    for &v in &victims {
        net.alive[v] = false;
    }
    // Before any repair, a lookup still reaches the root of a key whose root
    // survived (dead next hops are reported by the transport, as the runtime
    // does). Keys whose root died wait for stabilisation, as in the paper.
    let mut reached = 0;
    for _ in 0..200 {
        let key = net.random_key();
        let old_root = (0..net.nodes.len())
            .min_by_key(|&i| key.cw_distance(net.key_of(i)))
            .expect("nodes");
        if net.alive[old_root] {
            let src = net.live()[net.rand() as usize % 90];
            assert_eq!(net.lookup(src, key).0, old_root);
            reached += 1;
        }
    }
    assert!(reached > 150);
    net.run_for(Duration::from_secs(10));
    let dead: Vec<NodeId> = victims.iter().map(|&v| net.nodes[v].local().id).collect();
    for i in net.live() {
        assert!(
            net.nodes[i]
                .successors()
                .iter()
                .all(|p| !dead.contains(&p.id)),
            "node {i} still lists a failed successor"
        );
        assert_eq!(net.nodes[i].successors().len(), 8);
    }
    let failed: Vec<NodeId> = net
        .events
        .iter()
        .flatten()
        .filter_map(|e| match e {
            OverlayEvent::PeerFailed(id) => Some(*id),
            _ => None,
        })
        .collect();
    assert!(
        dead.iter().all(|d| failed.contains(d)),
        "every failure noticed"
    );
    net.assert_converged(500);
}

#[test]
fn unreachable_peers_are_dropped_at_once() {
    let mut net = Net::new(5, test_config());
    net.grow(20);
    let i = net.live()[0];
    let succ = net.nodes[i].successors()[0].clone();
    let second = net.nodes[i].successors()[1].clone();
    let now = net.at();
    net.nodes[i].peer_unreachable(now, succ.id);
    assert_eq!(net.nodes[i].successors()[0], second);
    assert!(net.nodes[i].fingers().iter().all(|p| p.id != succ.id));
    net.pump(i);
    assert!(net.events[i].contains(&OverlayEvent::PeerFailed(succ.id)));
}

#[test]
fn a_prebuilt_ring_routes_at_once() {
    let cfg = test_config();
    let mut rng = 9u64;
    let peers: Vec<Peer> = (0..500)
        .map(|i| {
            let id = (u128::from(splitmix(&mut rng)) << 64) | u128::from(splitmix(&mut rng));
            Peer::new(NodeId::from_u128(id), NodeAddr::new(format!("mem:{i}")))
        })
        .collect();
    let mut net = Net::new(10, cfg.clone());
    let now = net.at();
    for p in &peers {
        net.nodes.push(ChordNode::with_known_peers(
            cfg.clone(),
            p.clone(),
            now,
            peers.iter().cloned(),
        ));
        net.alive.push(true);
        net.events.push(Vec::new());
    }
    net.assert_converged(2000);
    let (mean, _) = net.hop_report("500 nodes, exact fingers");
    assert!(mean <= 0.5 * 500f64.log2() + 1.0);
    // And it stays so under its own maintenance.
    net.run_for(Duration::from_secs(3));
    net.assert_converged(200);
}

#[test]
fn a_node_is_not_root_before_it_knows_its_predecessor() {
    let now = Instant::now();
    let peer = |n: u128| {
        Peer::new(
            NodeId::from_u128(n << 100),
            NodeAddr::new(format!("mem:{n}")),
        )
    };
    let mut a = ChordNode::new(test_config(), peer(1));
    assert!(!a.is_root(Key(5)));
    a.join(now, None);
    assert!(a.is_root(Key(5)) && a.is_root(Key(u128::MAX)));
    assert_eq!(a.replica_set(Key(5), 3), vec![peer(1)]);
    let mut b = ChordNode::new(test_config(), peer(2));
    b.join(now, Some(a.local()));
    assert!(!b.is_joined() && !b.is_root(Key(2 << 100)));
    assert_eq!(b.route(Key(7)), Route::Forward(a.local()));
    let t = a.poll_transmit();
    assert!(t.is_none(), "a founder sends nothing");
    let ask = b.poll_transmit().expect("the join lookup");
    a.handle_message(now, b.local(), &ask.payload).unwrap();
    let answer = a.poll_transmit().expect("the answer");
    b.handle_message(now, a.local(), &answer.payload).unwrap();
    assert!(b.is_joined());
    // Joined, but the predecessor is not known yet: only its own id is its own.
    assert!(b.is_root(b.local().id.key()));
    assert!(!b.is_root(Key((2 << 100) - 1)));
}

#[test]
fn hostile_messages_are_errors() {
    let mut net = Net::new(8, test_config());
    net.grow(3);
    let from = net.nodes[1].local();
    let now = net.at();
    assert!(
        net.nodes[0]
            .handle_message(now, from.clone(), b"\xff\x00junk")
            .is_err()
    );
    let huge = crate::message::Msg::StabilizeReply {
        predecessor: None,
        previous: None,
        successors: vec![crate::message::WirePeer(1, "mem:1".into()); 2000],
    };
    assert!(
        net.nodes[0]
            .handle_message(now, from, &huge.encode())
            .is_err()
    );
    net.run_for(Duration::from_secs(2));
    net.assert_converged(50);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn random_bytes_are_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let now = Instant::now();
        let peer = |n: u128| Peer::new(NodeId::from_u128(n), NodeAddr::new(format!("mem:{n}")));
        let mut node = ChordNode::new(test_config(), peer(1));
        node.join(now, None);
        if crate::message::Msg::decode(peer(2).id, &bytes).is_err() {
            prop_assert!(node.handle_message(now, peer(2), &bytes).is_err());
        } else {
            let _ = node.handle_message(now, peer(2), &bytes);
        }
        node.handle_timeout(now + Duration::from_secs(100));
        while node.poll_transmit().is_some() {}
    }
}

#[test]
fn a_third_of_the_ring_failing_at_once_converges() {
    let mut net = Net::new(11, test_config());
    net.grow(150);
    for v in net.live() {
        if net.rand() % 3 < 1 {
            net.alive[v] = false;
        }
    }
    net.run_for(Duration::from_secs(15));
    net.assert_converged(500);
    net.hop_report(&format!("{} nodes after a third failed", net.live().len()));
}

#[test]
fn churn_converges_once_it_stops() {
    let mut net = Net::new(12, test_config());
    net.grow(40);
    // Ninety seconds of a join, a failure or a leave every half second (joins
    // and departures alternate).
    for step in 0..180 {
        let live = net.live();
        let pick = live[net.rand() as usize % live.len()];
        match if step % 2 == 0 { 0 } else { 1 + net.rand() % 2 } {
            0 => {
                net.add(Some(pick));
            }
            1 => net.alive[pick] = false,
            _ => {
                let now = net.at();
                net.nodes[pick].leave(now);
                net.pump(pick);
            }
        }
        net.run_for(Duration::from_millis(500));
        for i in net.live() {
            if !net.nodes[i].is_joined() && net.nodes[i].poll_timeout().is_none() {
                // It has left.
                net.alive[i] = false;
            }
        }
    }
    net.settle();
    net.assert_converged(500);
    net.hop_report(&format!("{} nodes after churn", net.live().len()));
}

#[test]
fn the_papers_thirty_second_stabilisation_converges_too() {
    let mut net = Net::new(13, ChordConfig::paper());
    net.grow(30);
    net.run_for(Duration::from_secs(600));
    net.assert_converged(300);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever the ids (clustered, sparse, a single node), a ring built from
    /// its members has exactly one root per key and every route ends there.
    #[test]
    fn any_ring_has_one_root_per_key(
        ids in proptest::collection::btree_set(any::<u128>(), 1..40),
        seed: u64,
        r in 1usize..6,
    ) {
        let cfg = ChordConfig { successor_list_len: r, ..test_config() };
        let peers: Vec<Peer> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Peer::new(NodeId::from_u128(*id), NodeAddr::new(format!("mem:{i}"))))
            .collect();
        let mut net = Net::new(seed, cfg.clone());
        let now = net.at();
        for p in &peers {
            net.nodes.push(ChordNode::with_known_peers(cfg.clone(), p.clone(), now, peers.iter().cloned()));
            net.alive.push(true);
            net.events.push(Vec::new());
        }
        net.check(30, false);
        for (i, n) in net.nodes.iter().enumerate() {
            prop_assert!(n.successors().len() <= r, "node {}", i);
        }
    }
}

#[test]
fn the_last_node_standing_is_root_of_everything() {
    // Graceful: one of two leaves.
    let mut net = Net::new(14, test_config());
    net.grow(2);
    let now = net.at();
    net.nodes[1].leave(now);
    net.pump(1);
    net.run_for(Duration::from_millis(200));
    net.alive[1] = false;
    assert!(net.nodes[0].successors().is_empty());
    assert!(net.nodes[0].predecessor().is_none());
    net.assert_converged(100);
    // Silent: one of two fails.
    let mut net = Net::new(15, test_config());
    net.grow(2);
    net.alive[0] = false;
    net.run_for(Duration::from_secs(3));
    assert!(net.nodes[1].successors().is_empty());
    net.assert_converged(100);
    let failed = net.nodes[0].local().id;
    assert!(net.events[1].contains(&OverlayEvent::PeerFailed(failed)));
    // And the ring grows again from the survivor.
    net.grow(5);
    net.assert_converged(200);
}

/// Whether live node `i` still names `gone` anywhere in its routing state.
fn names(net: &Net, i: usize, gone: NodeId) -> bool {
    let n = &net.nodes[i];
    n.predecessor().is_some_and(|p| p.id == gone)
        || n.successors().iter().any(|p| p.id == gone)
        || n.fingers().iter().any(|p| p.id == gone)
}

/// A graceful leave (issue 4): right after the leave notice, a request that
/// still reaches the leaver (during the runtime's grace period) is passed on to
/// the right root rather than claimed there; the leaver is then dropped from
/// every finger table, successor list and predecessor, without any lookup
/// reporting it unreachable, and never learnt again from stale state
/// (stabilisation, fix_fingers, other nodes' lists).
#[test]
fn a_departed_node_is_forgotten_everywhere_and_never_learnt_again() {
    for seed in [31, 32, 33] {
        let mut net = Net::new(seed, test_config());
        net.grow(40);
        net.assert_converged(100);
        let live = net.live();
        let x = live[net.rand() as usize % live.len()];
        let gone = net.nodes[x].local().id;
        let knew = live
            .iter()
            .filter(|&&i| i != x && names(&net, i, gone))
            .count();
        assert!(knew > 3, "seed {seed}: the leaver is widely known ({knew})");
        let now = net.at();
        net.nodes[x].leave(now);
        net.pump(x);
        // Its goodbyes arrive; it still receives (the runtime's grace period).
        net.run_for(Duration::from_millis(60));
        let others: Vec<usize> = live.iter().copied().filter(|&i| i != x).collect();
        let root_without_x = |net: &Net, key: Key| {
            *others
                .iter()
                .min_by_key(|&&i| key.cw_distance(net.key_of(i)))
                .expect("nodes")
        };
        for _ in 0..300 {
            let key = net.random_key();
            let want = root_without_x(&net, key);
            let mut at = others[net.rand() as usize % others.len()];
            let mut hops = 0;
            loop {
                match net.nodes[at].route(key) {
                    Route::Local => break,
                    Route::Forward(p) => at = Net::index(&p),
                }
                hops += 1;
                assert!(hops < 64, "seed {seed}: route of {key:?} loops");
            }
            assert_eq!(at, want, "seed {seed}: route of {key:?} ended elsewhere");
        }
        // Now it is gone for good; nobody reports it, timeouts must do.
        net.alive[x] = false;
        let mut last_seen = Duration::ZERO;
        let start = net.now;
        while net.now - start < Duration::from_secs(90) {
            net.run_for(Duration::from_millis(250));
            if others.iter().any(|&i| names(&net, i, gone)) {
                last_seen = net.now - start;
            }
        }
        // Stale successor lists drain within r stabilisation rounds (10 × 0.5 s
        // here, also how long the leaver is remembered as gone): named later,
        // it was learnt again.
        assert!(
            last_seen < Duration::from_secs(5),
            "seed {seed}: a live node still named the leaver {last_seen:?} after it left"
        );
        net.assert_converged(200);
    }
}

/// A request on its way, as the runtime routes it: one hop per link latency.
struct Request {
    key: Key,
    at: usize,
    ready: Duration,
    hops: usize,
}

/// Graceful leaves under load (issue 4, the migration suite's scenario): of ten
/// nodes, four leave one after another while requests keep being routed hop by
/// hop, with the same latencies as overlay messages; a leaver still receives
/// for a grace period, then is gone (sending to it fails and is reported).
/// Every request must end at the key's root among the nodes that have not left
/// (or at a leaver's successor, which took its keys) within the runtime's 64
/// hops: no request may loop while the leave notices are on their way.
#[test]
fn requests_under_graceful_leaves_reach_the_root_without_looping() {
    for seed in 41..=48 {
        let cfg = ChordConfig {
            successor_list_len: 16,
            stabilize_period: Duration::from_secs(5),
            fix_fingers_period: Duration::from_secs(5),
            check_predecessor_period: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        };
        let mut net = Net::new(seed, cfg);
        net.grow(10);
        net.assert_converged(100);
        let leavers: Vec<usize> = net.live()[6..].to_vec();
        let mut left: Vec<usize> = Vec::new();
        let mut requests: Vec<Request> = Vec::new();
        let grace = Duration::from_millis(50);
        let mut stop_at: Vec<(usize, Duration)> = Vec::new();
        let mut next_leave = net.now + Duration::from_millis(30);
        let end = net.now + Duration::from_secs(3);
        let mut done = 0;
        while net.now < end {
            // New requests from the first two nodes, a few per millisecond.
            for src in [0usize, 1] {
                let key = net.random_key();
                let ready = net.now;
                requests.push(Request {
                    key,
                    at: src,
                    ready,
                    hops: 0,
                });
            }
            if net.now >= next_leave && left.len() < leavers.len() {
                let x = leavers[left.len()];
                let now = net.at();
                net.nodes[x].leave(now);
                net.pump(x);
                left.push(x);
                stop_at.push((x, net.now + grace));
                next_leave = net.now + grace + Duration::from_millis(30);
            }
            for &(x, t) in &stop_at {
                if net.now >= t {
                    net.alive[x] = false;
                }
            }
            let mut i = 0;
            while i < requests.len() {
                if requests[i].ready > net.now {
                    i += 1;
                    continue;
                }
                let Request { key, at, hops, .. } = requests[i];
                match net.nodes[at].route(key) {
                    Route::Local => {
                        let r = requests.swap_remove(i);
                        let root = *net
                            .live()
                            .iter()
                            .filter(|n| !left.contains(n))
                            .min_by_key(|&&n| key.cw_distance(net.key_of(n)))
                            .expect("nodes");
                        assert!(
                            !left.contains(&at),
                            "seed {seed}: node {at} claimed {key:?} after leaving"
                        );
                        assert_eq!(
                            at, root,
                            "seed {seed}: {key:?} ended at {at} ({} hops)",
                            r.hops
                        );
                        done += 1;
                        continue;
                    }
                    Route::Forward(p) => {
                        let next = Net::index(&p);
                        if net.alive[next] {
                            requests[i].at = next;
                            requests[i].hops = hops + 1;
                            requests[i].ready = net.now + Net::latency(at, next);
                            assert!(
                                hops < 64,
                                "seed {seed}: request for {key:?} loops (at {at}, left {left:?})"
                            );
                        } else {
                            let now = net.at();
                            net.nodes[at].peer_unreachable(now, p.id);
                            net.pump(at);
                        }
                    }
                }
                i += 1;
            }
            net.run_for(Duration::from_millis(1));
        }
        assert!(done > 1000, "seed {seed}: {done} requests done");
        net.run_for(Duration::from_secs(2));
        net.assert_converged(200);
    }
}
