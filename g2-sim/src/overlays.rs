//! How an overlay plugs into the simulator.
//!
//! The simulator drives nodes only through [`g2_core::Overlay`] (the trait the
//! node runtime uses), via [`SimOverlay`]. An [`OverlayPlugin`] builds nodes through the overlay's own
//! [`OverlayFactory`] and may also offer a direct state initialisation for very
//! large networks. Adding Chord means one more plugin in [`plugin`].

use std::time::{Duration, Instant};

use g2_core::Peer;
use g2_core::overlay::Overlay;
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

/// One overlay algorithm in the simulator.
pub trait OverlayPlugin {
    /// Its name (`pastry`).
    fn name(&self) -> &'static str;
    /// A fresh, not yet joined node.
    fn build(&self, local: Peer) -> Box<dyn SimOverlay>;
    /// Every node of `net`, already joined, by node index; `None` when the
    /// overlay has no direct initialisation.
    fn build_direct(&self, net: &DirectNetwork<'_>) -> Option<Vec<Box<dyn SimOverlay>>>;
}

/// The plugin called `name`.
pub fn plugin(name: &str, pastry: PastryConfig) -> Result<Box<dyn OverlayPlugin>, SimError> {
    match name {
        "pastry" => {
            pastry
                .validate()
                .map_err(|e| SimError::Config(e.to_string()))?;
            Ok(Box::new(PastryPlugin {
                config: pastry,
                samples: usize::MAX,
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

/// The address of simulated node `i`.
pub fn sim_addr(i: u32) -> String {
    format!("sim:{i}")
}

/// The node index in a simulated address.
pub fn sim_index(addr: &str) -> Option<u32> {
    addr.strip_prefix("sim:")?.parse().ok()
}
