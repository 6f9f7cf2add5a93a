//! How an overlay plugs into the simulator.
//!
//! The simulator drives nodes only through [`g2_core::Overlay`] (the trait the
//! node runtime uses), via [`SimOverlay`]. An [`OverlayPlugin`] builds nodes through the overlay's own
//! [`OverlayFactory`] and may also offer a direct state initialisation for very
//! large networks. [`plugin`] knows `pastry` and `chord`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use g2_core::overlay::Overlay;
use g2_core::{Key, Peer};
use g2_routing_chord::{ChordConfig, ChordNode};
use g2_routing_pastry::{PastryConfig, PastryNode};

use crate::SimError;
use crate::latency::{LatencyModel, Topology};
use crate::nearest::PrefixIndex;
use crate::rng::SimRng;

/// An overlay node as the simulator holds it: the real state machine (its
/// routing-state size comes from [`Overlay::routing_entries`]).
pub trait SimOverlay: Overlay {}

impl<T: Overlay> SimOverlay for T {}

/// A network the simulator asks a plugin to initialise directly.
pub struct DirectNetwork<'a> {
    /// `(id, node index)` of every node, sorted by id.
    pub sorted: &'a [(u128, u32)],
    /// Each node's identity, by node index.
    pub peers: &'a [Peer],
    /// Where the nodes are.
    pub latency: &'a LatencyModel,
    /// The virtual time the network starts at.
    pub now: Instant,
    /// Seed for the plugin's own sampling.
    pub seed: u64,
    /// Called with the number of nodes done so far.
    pub progress: &'a dyn Fn(u64),
}

/// Which live node is the root of a key: the overlay's own notion of
/// responsibility.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootRule {
    /// The numerically closest node (Pastry).
    Closest,
    /// The first node clockwise at or after the key (Chord).
    Successor,
}

impl RootRule {
    /// The root of `key` among `nodes` (`id -> node index`).
    pub fn root(self, nodes: &BTreeMap<u128, u32>, key: Key) -> Option<u32> {
        let after = nodes.range(key.0..).next().or_else(|| nodes.iter().next());
        if self == Self::Successor {
            return after.map(|(_, &i)| i);
        }
        let before = nodes
            .range(..key.0)
            .next_back()
            .or_else(|| nodes.iter().next_back());
        match (after, before) {
            (Some((&a, &ia)), Some((&b, &ib))) => {
                Some(if key.cmp_closeness(Key(a), Key(b)) == Ordering::Greater {
                    ib
                } else {
                    ia
                })
            }
            _ => None,
        }
    }
}

/// The overlays' parameters, one config per overlay the simulator knows.
#[derive(Clone, Debug)]
pub struct OverlayConfigs {
    /// Pastry's parameters.
    pub pastry: PastryConfig,
    /// Chord's parameters.
    pub chord: ChordConfig,
}

impl Default for OverlayConfigs {
    /// The papers' set-ups: Pastry's defaults, and Chord stabilising every 30 s
    /// ([`ChordConfig::paper`]).
    fn default() -> Self {
        Self {
            pastry: PastryConfig::default(),
            chord: ChordConfig::paper(),
        }
    }
}

/// One overlay algorithm in the simulator.
pub trait OverlayPlugin {
    /// Its name (`pastry`, `chord`).
    fn name(&self) -> &'static str;
    /// Its notion of a key's root.
    fn root_rule(&self) -> RootRule;
    /// Virtual time a join-built network of `n` nodes is given to settle after
    /// the last join (neighbourhoods and routing state repaired).
    fn settle_time(&self, n: usize) -> Duration;
    /// The mean hops the overlay's paper predicts for `n` nodes: log_(2^b) N for
    /// Pastry, ½·log2 N for Chord.
    fn expected_hops(&self, n: usize) -> f64;
    /// Neighbourhood entries per node (leaf set, successor list and
    /// predecessor), beside [`Overlay::routing_entries`].
    fn neighbourhood_entries(&self) -> usize;
    /// A fresh, not yet joined node.
    fn build(&self, local: Peer) -> Box<dyn SimOverlay>;
    /// Every node of `net`, already joined, by node index; `None` when the
    /// overlay has no direct initialisation.
    fn build_direct(&self, net: &DirectNetwork<'_>) -> Option<Vec<Box<dyn SimOverlay>>>;
}

/// The names [`plugin`] knows.
pub const OVERLAYS: [&str; 2] = ["pastry", "chord"];

/// The plugin called `name`.
pub fn plugin(name: &str, configs: &OverlayConfigs) -> Result<Box<dyn OverlayPlugin>, SimError> {
    match name {
        "pastry" => {
            configs
                .pastry
                .validate()
                .map_err(|e| SimError::Config(e.to_string()))?;
            Ok(Box::new(PastryPlugin {
                config: configs.pastry.clone(),
                samples: usize::MAX,
            }))
        }
        "chord" => {
            configs
                .chord
                .validate()
                .map_err(|e| SimError::Config(e.to_string()))?;
            Ok(Box::new(ChordPlugin {
                config: configs.chord.clone(),
            }))
        }
        other => Err(SimError::UnknownOverlay(other.to_owned())),
    }
}

/// Pastry in the simulator.
#[derive(Clone, Debug)]
pub struct PastryPlugin {
    /// The nodes' configuration.
    pub config: PastryConfig,
    /// Direct initialisation: candidates sampled per routing-table slot, of which
    /// the closest by latency is kept. `usize::MAX` (the default) keeps the
    /// nearest of all candidates, the state that proximity neighbour selection
    /// converges to (the join protocol's probing and periodic row exchanges).
    pub samples: usize,
}

impl OverlayPlugin for PastryPlugin {
    fn name(&self) -> &'static str {
        "pastry"
    }

    fn root_rule(&self) -> RootRule {
        RootRule::Closest
    }

    fn settle_time(&self, _n: usize) -> Duration {
        self.config.heartbeat_period * 3
    }

    fn expected_hops(&self, n: usize) -> f64 {
        (n.max(1) as f64).log2() / f64::from(self.config.b)
    }

    fn neighbourhood_entries(&self) -> usize {
        self.config.leaf_set_size + self.config.neighbourhood_size
    }

    fn build(&self, local: Peer) -> Box<dyn SimOverlay> {
        Box::new(PastryNode::new(self.config.clone(), local))
    }

    fn build_direct(&self, net: &DirectNetwork<'_>) -> Option<Vec<Box<dyn SimOverlay>>> {
        let n = net.sorted.len();
        let b = self.config.b;
        let half = self.config.leaf_set_size / 2;
        let digits = (128 / b) as usize;
        let ids: Vec<u128> = net.sorted.iter().map(|(id, _)| *id).collect();
        let mut rng = SimRng::new(net.seed, 0xD1EC7);
        let exact = (self.samples >= n).then(|| {
            let index: Vec<u32> = net.sorted.iter().map(|(_, i)| *i).collect();
            let points = index
                .iter()
                .map(|&i| net.latency.position(i as usize))
                .collect();
            let dims = match net.latency.topology() {
                Topology::Sphere => 3,
                Topology::Plane => 2,
            };
            PrefixIndex::new(&ids, points, &index, b, dims)
        });
        let mut out: Vec<Option<Box<dyn SimOverlay>>> =
            (0..net.peers.len()).map(|_| None).collect();
        let rtt = |a: usize, c: usize| Duration::from_nanos(2 * net.latency.delay_ns(a, c));
        for (s, &(id, idx)) in net.sorted.iter().enumerate() {
            let me = idx as usize;
            let mut known: Vec<(usize, Duration)> = Vec::new();
            // Leaf set: the L/2 neighbours on each side in id order.
            for k in 1..=half.min(n - 1) {
                for j in [(s + k) % n, (s + n - k) % n] {
                    let other = net.sorted[j].1 as usize;
                    known.push((other, rtt(me, other)));
                }
            }
            // Routing table: for each slot, the closest of a few candidates.
            let mut lo = 0usize;
            let mut hi = n;
            for row in 0..digits {
                if hi - lo <= 1 {
                    break;
                }
                let shift = 128 - b as usize * (row + 1);
                let prefix_hi = if row == 0 {
                    0
                } else {
                    (id >> (128 - b as usize * row)) << b
                };
                let own_digit = (id >> shift) & ((1u128 << b) - 1);
                let (mut next_lo, mut next_hi) = (lo, hi);
                for col in 0..(1u128 << b) {
                    let start = (prefix_hi | col) << shift;
                    let a = lo + ids[lo..hi].partition_point(|&x| x < start);
                    let end = start | ((1u128 << shift) - 1);
                    let z = lo + ids[lo..hi].partition_point(|&x| x <= end);
                    if col == own_digit {
                        (next_lo, next_hi) = (a, z);
                        continue;
                    }
                    if a == z {
                        continue;
                    }
                    let pick = |j: usize| net.sorted[j].1 as usize;
                    let best = if let Some(exact) = &exact {
                        exact
                            .nearest(&net.latency.position(me), row + 1, a, z)
                            .map(|i| i as usize)
                    } else if z - a <= self.samples {
                        (a..z).map(pick).min_by(|&x, &y| {
                            net.latency
                                .closeness_key(me, x)
                                .total_cmp(&net.latency.closeness_key(me, y))
                        })
                    } else {
                        (0..self.samples)
                            .map(|_| pick(a + rng.below(z - a)))
                            .min_by(|&x, &y| {
                                net.latency
                                    .closeness_key(me, x)
                                    .total_cmp(&net.latency.closeness_key(me, y))
                            })
                    };
                    if let Some(best) = best {
                        known.push((best, rtt(me, best)));
                    }
                }
                lo = next_lo;
                hi = next_hi;
            }
            // Neighbourhood set: the closest of the nodes known so far.
            let peers = known
                .into_iter()
                .map(|(o, r)| (net.peers[o].clone(), Some(r)));
            let node = PastryNode::with_known_peers(
                self.config.clone(),
                net.peers[me].clone(),
                net.now,
                peers,
            );
            out[me] = Some(Box::new(node));
            if s % 1024 == 0 {
                (net.progress)(s as u64);
            }
        }
        out.into_iter().collect()
    }
}

/// Chord in the simulator.
#[derive(Clone, Debug)]
pub struct ChordPlugin {
    /// The nodes' configuration.
    pub config: ChordConfig,
}

impl OverlayPlugin for ChordPlugin {
    fn name(&self) -> &'static str {
        "chord"
    }

    fn root_rule(&self) -> RootRule {
        RootRule::Successor
    }

    fn settle_time(&self, n: usize) -> Duration {
        // Successor lists settle within a few stabilisation rounds; fix_fingers
        // refreshes one distinct finger (about log2 N of them) per period: give
        // it two full rounds.
        let log2 = usize::BITS - n.max(2).leading_zeros();
        let s = self.config.stabilize_period * 4 + self.config.request_timeout;
        s.max(self.config.fix_fingers_period * (2 * log2 + 4))
    }

    fn expected_hops(&self, n: usize) -> f64 {
        0.5 * (n.max(1) as f64).log2()
    }

    fn neighbourhood_entries(&self) -> usize {
        self.config.successor_list_len + 1
    }

    fn build(&self, local: Peer) -> Box<dyn SimOverlay> {
        Box::new(ChordNode::new(self.config.clone(), local))
    }

    /// Each node gets exactly the state stabilisation and fix_fingers converge
    /// to, computed from the sorted ids: its predecessor, its `r` successors and
    /// the successor of every finger start. They go through
    /// [`ChordNode::with_known_peers`], which derives the node's state from the
    /// peers it is given as a node would from what it has learnt; since the
    /// exact successor of every finger start is among them, the result is exact.
    fn build_direct(&self, net: &DirectNetwork<'_>) -> Option<Vec<Box<dyn SimOverlay>>> {
        let n = net.sorted.len();
        let ids: Vec<u128> = net.sorted.iter().map(|(id, _)| *id).collect();
        let r = self.config.successor_list_len;
        let mut out: Vec<Option<Box<dyn SimOverlay>>> =
            (0..net.peers.len()).map(|_| None).collect();
        let mut known: Vec<usize> = Vec::new();
        for (s, &(id, idx)) in net.sorted.iter().enumerate() {
            known.clear();
            if n > 1 {
                // Predecessor and successor list.
                known.push((s + n - 1) % n);
                known.extend((1..=r.min(n - 1)).map(|k| (s + k) % n));
                // Fingers: the successor of id + 2^i, for every i.
                for i in 0..128 {
                    let start = id.wrapping_add(1u128 << i);
                    let j = ids.partition_point(|&x| x < start) % n;
                    if j != s {
                        known.push(j);
                    }
                }
                known.sort_unstable();
                known.dedup();
            }
            let peers = known
                .iter()
                .map(|&j| net.peers[net.sorted[j].1 as usize].clone());
            let node = ChordNode::with_known_peers(
                self.config.clone(),
                net.peers[idx as usize].clone(),
                net.now,
                peers,
            );
            out[idx as usize] = Some(Box::new(node));
            if s % 1024 == 0 {
                (net.progress)(s as u64);
            }
        }
        out.into_iter().collect()
    }
}

/// The address of simulated node `i`.
pub fn sim_addr(i: u32) -> String {
    format!("sim:{i}")
}

/// The node index in a simulated address.
pub fn sim_index(addr: &str) -> Option<u32> {
    addr.strip_prefix("sim:")?.parse().ok()
}
