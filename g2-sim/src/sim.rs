//! [`Simulator`]: a discrete-event simulator with a virtual clock that drives real
//! overlay state machines.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant};

use g2_core::overlay::{OverlayEvent, Route};
use g2_core::{Key, NodeAddr, NodeId, Peer};

use crate::latency::{LatencyModel, Topology};
use crate::overlays::{DirectNetwork, OverlayPlugin, RootRule, SimOverlay, sim_addr, sim_index};
use crate::rng::SimRng;

/// The simulated network's physical properties.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Where nodes are placed.
    pub topology: Topology,
    /// One-way delay across the largest distance.
    pub max_delay: Duration,
    /// Probability that an overlay message is lost.
    pub loss: f64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            topology: Topology::Sphere,
            max_delay: Duration::from_millis(200),
            loss: 0.0,
        }
    }
}

/// Counters over the whole run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Overlay messages sent.
    pub messages: u64,
    /// Messages lost to the loss model.
    pub lost: u64,
    /// Messages sent to nodes that were dead or gone.
    pub to_dead: u64,
    /// Messages the receiving overlay refused (should stay 0).
    pub refused: u64,
    /// `KeysMoved` events.
    pub keys_moved: u64,
    /// `PeerFailed` events.
    pub peer_failed: u64,
}

/// What one lookup did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lookup {
    /// Messages sent on the route, including attempts to reach dead nodes.
    pub hops: u32,
    /// Attempts that met a dead node (the node then repaired its state).
    pub dead_hops: u32,
    /// Most dead next hops one node met in a row on this route (the runtime
    /// gives up on a request after 4 at one node).
    pub max_dead_run: u32,
    /// Whether the route ended at the key's true root.
    pub delivered: bool,
    /// Sum of the one-way delays along the route (ns).
    pub route_ns: u64,
    /// One-way delay from the source straight to the true root (ns).
    pub direct_ns: u64,
}

/// Node life cycle in the simulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Created, not yet told to join.
    Idle,
    /// Joining.
    Joining,
    /// Joined and alive.
    Joined,
    /// Failed silently.
    Failed,
    /// Left gracefully.
    Left,
}

struct SimNode {
    overlay: Option<Box<dyn SimOverlay>>,
    peer: Peer,
    state: NodeState,
    timer: Option<u64>,
}

enum EventKind {
    Deliver {
        from: u32,
        to: u32,
        payload: Vec<u8>,
    },
    Timer {
        node: u32,
    },
    Join {
        node: u32,
    },
}

struct Event {
    at: u64,
    seq: u64,
    kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Upper bound on a lookup's hops between live nodes before it is declared
/// lost (a loop), as the runtime's hop limit.
pub const MAX_LOOKUP_HOPS: u32 = 64;
/// Upper bound on a lookup's attempts to reach dead next hops (each one is
/// reported to the node, which routes around it).
pub const MAX_DEAD_ATTEMPTS: u32 = 256;

/// A simulated network: nodes, a virtual clock and an event queue.
///
/// Every random choice comes from one [`SimRng`] seeded by
/// [`NetworkConfig::seed`], events are ordered by (time, insertion order), and no
/// hash-map iteration order is involved, so a run is a function of its seed.
pub struct Simulator {
    plugin: Box<dyn OverlayPlugin>,
    net: NetworkConfig,
    base: Instant,
    now: u64,
    rng: SimRng,
    latency: LatencyModel,
    nodes: Vec<SimNode>,
    /// Joined live nodes by id (for true roots).
    live: BTreeMap<u128, u32>,
    /// Joined live nodes, for uniform sampling.
    live_list: Vec<u32>,
    live_pos: Vec<usize>,
    queue: BinaryHeap<Reverse<Event>>,
    seq: u64,
    /// Counters.
    pub stats: Stats,
}

impl Simulator {
    /// An empty network simulated with `plugin`'s overlay.
    pub fn new(plugin: Box<dyn OverlayPlugin>, net: NetworkConfig) -> Self {
        Self {
            plugin,
            rng: SimRng::new(net.seed, 1),
            latency: LatencyModel::new(net.topology, net.max_delay),
            net,
            base: Instant::now(),
            now: 0,
            nodes: Vec::new(),
            live: BTreeMap::new(),
            live_list: Vec::new(),
            live_pos: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            stats: Stats::default(),
        }
    }

    /// The overlay's name.
    pub fn overlay_name(&self) -> &'static str {
        self.plugin.name()
    }

    /// Virtual time elapsed.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.now)
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_nanos(self.now)
    }

    /// The simulator's random number generator.
    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    /// Number of nodes ever created.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Joined live nodes.
    pub fn live(&self) -> &[u32] {
        &self.live_list
    }

    /// A uniformly random joined live node.
    pub fn random_live(&mut self) -> Option<u32> {
        if self.live_list.is_empty() {
            return None;
        }
        Some(self.live_list[self.rng.below(self.live_list.len())])
    }

    /// A node's state.
    pub fn state(&self, node: u32) -> NodeState {
        self.nodes[node as usize].state
    }

    /// A node's overlay (while it is alive).
    pub fn overlay(&self, node: u32) -> Option<&dyn SimOverlay> {
        self.nodes[node as usize].overlay.as_deref()
    }

    /// Creates a node at a random place with a random id (not joined yet).
    pub fn add_node(&mut self) -> u32 {
        let i = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
        let id = NodeId::from_u128(self.rng.next_u128());
        let peer = Peer::new(id, NodeAddr::new(sim_addr(i)));
        self.latency.place(&mut self.rng);
        self.nodes.push(SimNode {
            overlay: Some(self.plugin.build(peer.clone())),
            peer,
            state: NodeState::Idle,
            timer: None,
        });
        self.live_pos.push(usize::MAX);
        i
    }

    /// Fills an empty simulator with `n` nodes whose state the plugin initialises
    /// directly (already joined), if it can; returns `false` otherwise.
    pub fn add_direct(&mut self, n: usize, progress: &dyn Fn(u64)) -> bool {
        if !self.nodes.is_empty() {
            return false;
        }
        for _ in 0..n {
            self.add_node();
        }
        let mut sorted: Vec<(u128, u32)> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, s)| (s.peer.id.as_u128(), i as u32))
            .collect();
        sorted.sort_unstable();
        let peers: Vec<Peer> = self.nodes.iter().map(|s| s.peer.clone()).collect();
        let built = self.plugin.build_direct(&DirectNetwork {
            sorted: &sorted,
            peers: &peers,
            latency: &self.latency,
            now: self.instant(),
            seed: self.net.seed,
            progress,
        });
        drop(peers);
        let Some(built) = built else {
            return false;
        };
        for (i, overlay) in built.into_iter().enumerate() {
            self.nodes[i].overlay = Some(overlay);
            self.nodes[i].state = NodeState::Joining;
            self.pump(i as u32);
        }
        true
    }

    /// Starts `node`'s join now, through `bootstrap` (or founding the overlay).
    pub fn join(&mut self, node: u32, bootstrap: Option<u32>) {
        let now = self.instant();
        let b = bootstrap.map(|b| self.nodes[b as usize].peer.clone());
        let n = &mut self.nodes[node as usize];
        n.state = NodeState::Joining;
        if let Some(o) = n.overlay.as_mut() {
            o.join(now, b);
        }
        self.pump(node);
    }

    /// Schedules `node` to join at virtual time `at` through the live node
    /// nearest to it among a sample (as a real node finds a nearby bootstrap).
    pub fn schedule_join(&mut self, node: u32, at: Duration) {
        let at = at.as_nanos() as u64;
        self.push(at.max(self.now), EventKind::Join { node });
    }

    /// The live node closest to `node` (by latency) among `sample` random ones.
    pub fn nearby_bootstrap(&mut self, node: u32, sample: usize) -> Option<u32> {
        if self.live_list.is_empty() {
            return None;
        }
        let mut best: Option<(f32, u32)> = None;
        for _ in 0..sample.min(self.live_list.len()).max(1) {
            let c = self.live_list[self.rng.below(self.live_list.len())];
            let d = self.latency.closeness_key(node as usize, c as usize);
            if best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, c));
            }
        }
        best.map(|(_, c)| c)
    }

    /// `node` fails silently: it stops and nobody is told.
    pub fn fail(&mut self, node: u32) {
        self.remove_live(node);
        let n = &mut self.nodes[node as usize];
        n.state = NodeState::Failed;
        n.overlay = None;
    }

    /// `node` leaves gracefully (its goodbye messages go out first).
    pub fn leave(&mut self, node: u32) {
        let now = self.instant();
        if let Some(o) = self.nodes[node as usize].overlay.as_mut() {
            o.leave(now);
        }
        self.pump(node);
        self.remove_live(node);
        let n = &mut self.nodes[node as usize];
        n.state = NodeState::Left;
        n.overlay = None;
    }

    fn add_live(&mut self, node: u32) {
        if self.live_pos[node as usize] != usize::MAX {
            return;
        }
        self.live
            .insert(self.nodes[node as usize].peer.id.as_u128(), node);
        self.live_pos[node as usize] = self.live_list.len();
        self.live_list.push(node);
    }

    fn remove_live(&mut self, node: u32) {
        let pos = self.live_pos[node as usize];
        if pos == usize::MAX {
            return;
        }
        self.live
            .remove(&self.nodes[node as usize].peer.id.as_u128());
        self.live_list.swap_remove(pos);
        if let Some(&moved) = self.live_list.get(pos) {
            self.live_pos[moved as usize] = pos;
        }
        self.live_pos[node as usize] = usize::MAX;
    }

    fn push(&mut self, at: u64, kind: EventKind) {
        self.seq += 1;
        self.queue.push(Reverse(Event {
            at,
            seq: self.seq,
            kind,
        }));
    }

    /// Drains a node's outputs into the event queue.
    fn pump(&mut self, node: u32) {
        let i = node as usize;
        let Some(o) = self.nodes[i].overlay.as_mut() else {
            return;
        };
        let mut sends = Vec::new();
        while let Some(t) = o.poll_transmit() {
            sends.push(t);
        }
        let timeout = o.poll_timeout();
        let mut events = Vec::new();
        while let Some(e) = o.poll_event() {
            events.push(e);
        }
        for t in sends {
            self.stats.messages += 1;
            let Some(to) =
                sim_index(t.to.addr.as_str()).filter(|&t| (t as usize) < self.nodes.len())
            else {
                continue;
            };
            if self.rng.chance(self.net.loss) {
                self.stats.lost += 1;
                continue;
            }
            let at = self.now + self.latency.delay_ns(i, to as usize);
            self.push(
                at,
                EventKind::Deliver {
                    from: node,
                    to,
                    payload: t.payload,
                },
            );
        }
        for e in events {
            match e {
                OverlayEvent::Joined => {
                    self.nodes[i].state = NodeState::Joined;
                    self.add_live(node);
                }
                OverlayEvent::KeysMoved { .. } => self.stats.keys_moved += 1,
                OverlayEvent::PeerFailed(_) => self.stats.peer_failed += 1,
                OverlayEvent::NeighboursChanged | OverlayEvent::Left => {}
            }
        }
        if let Some(t) = timeout {
            let at = (t.saturating_duration_since(self.base).as_nanos() as u64).max(self.now);
            if self.nodes[i].timer != Some(at) {
                self.nodes[i].timer = Some(at);
                self.push(at, EventKind::Timer { node });
            }
        }
    }

    /// Runs events up to virtual time `until` (inclusive), then sets the clock there.
    pub fn run_until(&mut self, until: Duration) {
        let until = until.as_nanos() as u64;
        while let Some(Reverse(ev)) = self.queue.peek() {
            if ev.at > until {
                break;
            }
            let Some(Reverse(ev)) = self.queue.pop() else {
                break;
            };
            self.now = ev.at;
            self.handle(ev);
        }
        self.now = self.now.max(until);
    }

    /// Runs for `d` more virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now() + d);
    }

    fn handle(&mut self, ev: Event) {
        let now = self.instant();
        match ev.kind {
            EventKind::Deliver { from, to, payload } => {
                let rtt =
                    Duration::from_nanos(2 * self.latency.delay_ns(from as usize, to as usize));
                let from_peer = self.nodes[from as usize].peer.clone();
                let Some(o) = self.nodes[to as usize].overlay.as_mut() else {
                    self.stats.to_dead += 1;
                    return;
                };
                o.rtt_sample(from_peer.id, rtt);
                if let Err(e) = o.handle_message(now, from_peer, &payload) {
                    self.stats.refused += 1;
                    tracing_free_log(&e.to_string());
                }
                self.pump(to);
            }
            EventKind::Timer { node } => {
                let n = &mut self.nodes[node as usize];
                if n.timer != Some(ev.at) {
                    return;
                }
                n.timer = None;
                if let Some(o) = n.overlay.as_mut() {
                    o.handle_timeout(now);
                }
                self.pump(node);
            }
            EventKind::Join { node } => {
                let b = self.nearby_bootstrap(node, 64);
                self.join(node, b);
            }
        }
    }

    /// The true root of `key` among joined live nodes, by the overlay's own
    /// rule (numerically closest for Pastry, successor for Chord).
    pub fn true_root(&self, key: Key) -> Option<u32> {
        self.plugin.root_rule().root(&self.live, key)
    }

    /// The overlay's rule for roots.
    pub fn root_rule(&self) -> RootRule {
        self.plugin.root_rule()
    }

    /// Joined live nodes by id.
    pub fn live_ids(&self) -> &BTreeMap<u128, u32> {
        &self.live
    }

    /// The plugin driving the nodes.
    pub fn plugin(&self) -> &dyn OverlayPlugin {
        self.plugin.as_ref()
    }

    /// Routes a lookup for `key` from `src` hop by hop, as the node runtime does:
    /// each node's `route` picks the next hop; a dead next hop is reported to the
    /// node with `peer_unreachable` (the transport would fail) and routing goes on.
    pub fn lookup(&mut self, src: u32, key: Key) -> Lookup {
        let root = self.true_root(key);
        let mut at = src as usize;
        let mut out = Lookup {
            hops: 0,
            dead_hops: 0,
            max_dead_run: 0,
            delivered: false,
            route_ns: 0,
            direct_ns: root.map_or(0, |r| self.latency.delay_ns(src as usize, r as usize)),
        };
        if root == Some(src) {
            out.direct_ns = 0;
        }
        let now = self.instant();
        let mut run = 0;
        while out.hops - out.dead_hops < MAX_LOOKUP_HOPS && out.dead_hops < MAX_DEAD_ATTEMPTS {
            let Some(o) = self.nodes[at].overlay.as_ref() else {
                break;
            };
            match o.route(key) {
                Route::Local => {
                    out.delivered = root == Some(at as u32);
                    return out;
                }
                Route::Forward(p) => {
                    out.hops += 1;
                    let next = sim_index(p.addr.as_str()).map(|n| n as usize);
                    match next.filter(|&n| n < self.nodes.len() && self.nodes[n].overlay.is_some())
                    {
                        Some(n) => {
                            out.route_ns += self.latency.delay_ns(at, n);
                            at = n;
                            run = 0;
                        }
                        None => {
                            out.dead_hops += 1;
                            run += 1;
                            out.max_dead_run = out.max_dead_run.max(run);
                            if let Some(o) = self.nodes[at].overlay.as_mut() {
                                o.peer_unreachable(now, p.id);
                            }
                            self.pump(at as u32);
                        }
                    }
                }
            }
        }
        out
    }

    /// Whether exactly the true root claims `key` among live nodes (O(N): for tests).
    pub fn roots_agree(&self, key: Key) -> bool {
        let claim: Vec<u32> = self
            .live_list
            .iter()
            .copied()
            .filter(|&n| {
                self.nodes[n as usize]
                    .overlay
                    .as_ref()
                    .is_some_and(|o| o.is_root(key))
            })
            .collect();
        claim.len() == 1 && Some(claim[0]) == self.true_root(key)
    }
}

/// Refused messages are counted in [`Stats::refused`]; the reason is printed in
/// debug builds only (the simulator has no logging subscriber of its own).
fn tracing_free_log(reason: &str) {
    if cfg!(debug_assertions) {
        eprintln!("g2-sim: an overlay refused a message: {reason}");
    }
}
