//! Small Pastry networks driven deterministically: a virtual clock, a message
//! queue with per-link latency, silent failures and graceful leaves.

use g2_core::rng::splitmix64 as splitmix;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use g2_core::overlay::{Overlay, OverlayEvent, Route};
use g2_core::{Key, NodeAddr, NodeId, Peer};
use proptest::prelude::*;

use crate::{PastryConfig, PastryNode};

fn test_config() -> PastryConfig {
    PastryConfig {
        heartbeat_period: Duration::from_secs(1),
        failure_timeout: Duration::from_secs(3),
        request_timeout: Duration::from_secs(1),
        maintenance_period: Some(Duration::from_secs(5)),
        ..PastryConfig::default()
    }
}

type Queued = Reverse<(Duration, u64, usize, usize, Vec<u8>)>;

struct Net {
    base: Instant,
    now: Duration,
    cfg: PastryConfig,
    nodes: Vec<PastryNode>,
    alive: Vec<bool>,
    events: Vec<Vec<OverlayEvent>>,
    queue: BinaryHeap<Queued>,
    seq: u64,
    rng: u64,
    /// One-way delay between two nodes.
    delay: fn(usize, usize) -> Duration,
}

impl Net {
    fn new(seed: u64, cfg: PastryConfig) -> Self {
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
            delay: |from, to| Duration::from_millis(5 + ((from * 7 + to * 13) % 40) as u64),
        }
    }

    fn at(&self) -> Instant {
        self.base + self.now
    }

    fn rand(&mut self) -> u64 {
        splitmix(&mut self.rng)
    }

    fn latency(&self, from: usize, to: usize) -> Duration {
        (self.delay)(from, to)
    }

    fn index(p: &Peer) -> usize {
        p.addr
            .as_str()
            .trim_start_matches("mem:")
            .parse()
            .expect("test addresses are mem:<index>")
    }

    /// Adds a node joining through `bootstrap` (or founding the overlay).
    fn add(&mut self, bootstrap: Option<usize>) -> usize {
        let i = self.nodes.len();
        let id = (u128::from(self.rand()) << 64) | u128::from(self.rand());
        let local = Peer::new(NodeId::from_u128(id), NodeAddr::new(format!("mem:{i}")));
        self.nodes.push(PastryNode::new(self.cfg.clone(), local));
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
                self.now + self.latency(i, to),
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
                    let rtt = self.latency(from, to) * 2;
                    self.nodes[to].rtt_sample(from_peer.id, rtt);
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
        self.run_for(Duration::from_secs(5));
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.alive[i]).collect()
    }

    fn fail(&mut self, i: usize) {
        self.alive[i] = false;
    }

    fn root(&self, key: Key) -> usize {
        self.live()
            .into_iter()
            .min_by(|&a, &b| {
                key.cmp_closeness(
                    self.nodes[a].local().id.key(),
                    self.nodes[b].local().id.key(),
                )
            })
            .expect("a live node")
    }

    /// Routes like the runtime: hop by hop, reporting dead next hops.
    fn lookup(&mut self, mut at: usize, key: Key) -> (usize, usize) {
        let mut hops = 0;
        for _ in 0..200 {
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

    /// Every key has exactly one root among live nodes; routes from every live
    /// node end there.
    fn assert_converged(&mut self, keys: usize) {
        self.check(keys, true);
    }

    fn check(&mut self, keys: usize, roots_known: bool) {
        let live = self.live();
        for i in &live {
            assert!(self.nodes[*i].is_joined(), "node {i} not joined");
        }
        for _ in 0..keys {
            let key = Key((u128::from(self.rand()) << 64) | u128::from(self.rand()));
            let root = self.root(key);
            let roots: Vec<usize> = live
                .iter()
                .copied()
                .filter(|&i| self.nodes[i].is_root(key))
                .collect();
            if roots_known {
                assert_eq!(roots, vec![root], "roots of {key:?}");
            }
            let src = live[self.rand() as usize % live.len()];
            let (end, hops) = self.lookup(src, key);
            assert_eq!(end, root, "route of {key:?} from {src}");
            let bound = (live.len() as f64).log(16.0).ceil() as usize + 1;
            assert!(
                !roots_known || hops <= bound.max(1),
                "{hops} hops at {} nodes",
                live.len()
            );
        }
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
        assert_eq!(
            net.nodes[i].leaf_set().len(),
            16,
            "a full leaf set at node {i}"
        );
    }
}

#[test]
fn two_hundred_nodes_converge_and_replicas_come_from_the_leaf_set() {
    let mut net = Net::new(3, test_config());
    net.grow(200);
    net.assert_converged(1000);
    let key = Key(12345);
    let root = net.root(key);
    let replicas = net.nodes[root].replica_set(key, 4);
    let mut expect: Vec<usize> = net.live();
    expect.sort_by(|&a, &b| {
        key.cmp_closeness(net.nodes[a].local().id.key(), net.nodes[b].local().id.key())
    });
    // root first, then the nodes that would take over in turn
    let expect: Vec<Peer> = expect[..4].iter().map(|&i| net.nodes[i].local()).collect();
    assert_eq!(replicas, expect);
}

#[test]
fn leaf_sets_repair_after_silent_failures() {
    let mut net = Net::new(4, test_config());
    net.grow(100);
    let victims: Vec<usize> = (0..10).map(|k| k * 9 + 1).collect();
    for &v in &victims {
        net.fail(v);
    }
    net.run_for(Duration::from_secs(10));
    let dead: Vec<NodeId> = victims.iter().map(|&v| net.nodes[v].local().id).collect();
    for i in net.live() {
        assert!(
            net.nodes[i]
                .leaf_set()
                .iter()
                .all(|p| !dead.contains(&p.id)),
            "node {i} still lists a failed leaf"
        );
        assert_eq!(net.nodes[i].leaf_set().len(), 16);
    }
    let failed_events = net
        .events
        .iter()
        .flatten()
        .filter(|e| matches!(e, OverlayEvent::PeerFailed(id) if dead.contains(id)))
        .count();
    assert!(failed_events >= victims.len());
    net.assert_converged(500);
}

#[test]
fn routing_tables_are_repaired() {
    let mut net = Net::new(5, test_config());
    net.grow(120);
    let victims: Vec<usize> = (0..20).map(|k| k * 6).collect();
    let dead: Vec<NodeId> = victims.iter().map(|&v| net.nodes[v].local().id).collect();
    let before: usize = net
        .live()
        .iter()
        .filter(|i| !victims.contains(i))
        .map(|&i| net.nodes[i].routing_table_len())
        .sum();
    for &v in &victims {
        net.fail(v);
    }
    // Lazy repair: routes that meet a dead entry report it and go on, and still
    // end at the root (nodes do not yet know they are roots of the dead's keys).
    net.check(300, false);
    // Periodic row checks find the rest.
    net.run_for(Duration::from_secs(120));
    let mut after = 0;
    for i in net.live() {
        let table = net.nodes[i].routing_table();
        assert!(
            table.iter().all(|p| !dead.contains(&p.id)),
            "node {i} routes to a failed node: {:?}",
            net.nodes[i]
        );
        after += table.len();
    }
    assert!(
        after * 10 >= before * 8,
        "routing tables refilled: {after} entries vs {before} before"
    );
    net.assert_converged(300);
}

#[test]
fn graceful_leave_hands_keys_over() {
    let mut net = Net::new(6, test_config());
    net.grow(30);
    let leaver = 7;
    let key = net.nodes[leaver].local().id.key();
    let now = net.at();
    net.nodes[leaver].leave(now);
    net.pump(leaver);
    let evs = std::mem::take(&mut net.events[leaver]);
    assert!(matches!(evs.last(), Some(OverlayEvent::Left)));
    let moved: Vec<_> = evs
        .iter()
        .filter_map(|e| match e {
            OverlayEvent::KeysMoved { ranges, new_root } => {
                Some((ranges.clone(), new_root.clone()))
            }
            _ => None,
        })
        .collect();
    assert!(!moved.is_empty());
    net.run_for(Duration::from_millis(200));
    net.alive[leaver] = false;
    // Its own id's keys went to the node now root of them.
    let new_root = net.nodes[net.root(key)].local();
    assert!(
        moved
            .iter()
            .any(|(rs, to)| *to == new_root && rs.iter().any(|r| r.contains(key)))
    );
    for i in net.live() {
        assert!(
            !net.nodes[i]
                .leaf_set()
                .iter()
                .any(|p| p.id == net.nodes[leaver].local().id)
        );
    }
    net.assert_converged(300);
}

#[test]
fn a_joining_neighbour_takes_its_keys() {
    let mut net = Net::new(7, test_config());
    net.grow(20);
    for e in &mut net.events {
        e.clear();
    }
    let b = net.live()[3];
    let new = net.add(Some(b));
    net.run_for(Duration::from_secs(2));
    assert!(net.nodes[new].is_joined());
    let new_peer = net.nodes[new].local();
    let key = new_peer.id.key();
    let moves: Vec<_> = net
        .events
        .iter()
        .flatten()
        .filter_map(|e| match e {
            OverlayEvent::KeysMoved { ranges, new_root } if *new_root == new_peer => {
                Some(ranges.clone())
            }
            _ => None,
        })
        .collect();
    assert!(!moves.is_empty(), "a neighbour hands keys to the new node");
    assert!(moves.iter().flatten().any(|r| r.contains(key)));
    // every key that moved is now the new node's
    for r in moves.iter().flatten() {
        assert!(net.nodes[new].is_root(r.start));
    }
    net.assert_converged(300);
}

impl Net {
    /// The true leaf set of live node `i`: the L/2 closest live nodes on each side.
    fn true_leaf_set(&self, i: usize) -> BTreeSet<u128> {
        let me = self.nodes[i].local().id.key();
        let half = self.cfg.leaf_set_size / 2;
        let others: Vec<Key> = self
            .live()
            .into_iter()
            .filter(|&j| j != i)
            .map(|j| self.nodes[j].local().id.key())
            .collect();
        let mut cw = others.clone();
        cw.sort_by_key(|k| me.cw_distance(*k));
        let mut ccw = others;
        ccw.sort_by_key(|k| me.ccw_distance(*k));
        cw.iter()
            .take(half)
            .chain(ccw.iter().take(half))
            .map(|k| k.0)
            .collect()
    }

    fn leaf_set_of(&self, i: usize) -> BTreeSet<u128> {
        self.nodes[i]
            .leaf_set()
            .iter()
            .map(|p| p.id.as_u128())
            .collect()
    }
}

/// `n - 1` volunteers join through one bootstrap within two milliseconds, over
/// links of 1–5 ms, with the default ten-second heartbeats: a second later every
/// leaf set is exact and every node agrees on the root of every key.
fn concurrent_joins_converge_within_a_second(n: usize, seed: u64) {
    let mut net = Net::new(seed, PastryConfig::default());
    net.delay =
        |from, to| Duration::from_micros(1000 + ((from * 7919 + to * 104_729) % 4000) as u64);
    net.add(None);
    net.run_for(Duration::from_millis(100));
    let spacing = Duration::from_micros(2000) / n as u32;
    for _ in 1..n {
        net.add(Some(0));
        net.run_for(spacing);
    }
    net.run_for(Duration::from_secs(1));
    assert!(
        net.now < PastryConfig::default().heartbeat_period,
        "converged before the first heartbeat"
    );
    for i in net.live() {
        assert!(net.nodes[i].is_joined(), "seed {seed}: node {i} not joined");
        assert_eq!(
            net.leaf_set_of(i),
            net.true_leaf_set(i),
            "seed {seed}, {n} nodes: leaf set of node {i}"
        );
    }
    for _ in 0..500 {
        let key = Key((u128::from(net.rand()) << 64) | u128::from(net.rand()));
        let root = net.root(key);
        let claims: Vec<usize> = net
            .live()
            .into_iter()
            .filter(|&i| net.nodes[i].is_root(key))
            .collect();
        assert_eq!(
            claims,
            vec![root],
            "seed {seed}, {n} nodes: roots of {key:?}"
        );
        let src = net.live()[net.rand() as usize % n];
        assert_eq!(
            net.lookup(src, key).0,
            root,
            "seed {seed}: route from {src}"
        );
    }
}

#[test]
fn five_concurrent_joins_converge_within_a_second() {
    concurrent_joins_converge_within_a_second(5, 21);
}

#[test]
fn twenty_concurrent_joins_converge_within_a_second() {
    concurrent_joins_converge_within_a_second(20, 22);
}

#[test]
fn a_hundred_concurrent_joins_converge_within_a_second() {
    concurrent_joins_converge_within_a_second(100, 23);
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
    let huge = crate::message::Msg::Heartbeat {
        leaf_set: vec![crate::message::WirePeer(1, "mem:1".into()); 2000],
        reply: false,
    };
    assert!(
        net.nodes[0]
            .handle_message(now, from, &huge.encode())
            .is_err()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn random_bytes_never_panic_a_node(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let now = Instant::now();
        let peer = |n: u128| Peer::new(NodeId::from_u128(n), NodeAddr::new(format!("mem:{n}")));
        let mut node = PastryNode::new(test_config(), peer(1));
        node.join(now, None);
        let _ = node.handle_message(now, peer(2), &bytes);
        node.handle_timeout(now + Duration::from_secs(100));
    }
}
