//! Test support: a full-membership overlay for runtime tests (not a product
//! overlay), and [`TestNet`], a network of nodes in one process over any
//! overlay (the test-support one, Pastry or Chord) with crashes and restarts,
//! for application tests that want the real runtime without sockets.
//!
//! ```no_run
//! # async fn demo() {
//! use g2::testing::{Routing, TestNet};
//! let net = TestNet::new(Routing::Pastry, "demo.test", 5, std::time::Duration::from_secs(5), |b| b).await;
//! assert_eq!(net.live().len(), 5);
//! # }
//! ```

use std::time::Duration;

pub use g2_core::testing::*;

use crate::mem::MemNetwork;
use crate::pastry::PastryConfig;
use crate::{Key, Node, NodeBuilder, NodeId, Peer, WithNetwork, WithOverlay, WithTransport};

/// Which overlay a test network routes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// The test-support full-membership overlay.
    TestSupport,
    /// Pastry, with fast heartbeats so failures are detected within a second.
    Pastry,
    /// Chord, with fast stabilisation.
    Chord,
}

/// A builder with network, overlay and transport set: what `register` gets.
pub type Ready = NodeBuilder<WithNetwork, WithOverlay, WithTransport>;

/// Nodes of one network in this process, over the `mem` transport.
pub struct TestNet {
    /// The in-process network (fault injection: kill, partition).
    pub mem: MemNetwork,
    /// The test-support overlay's membership (used with [`Routing::TestSupport`]).
    pub dir: Directory,
    /// The overlay every node runs.
    pub routing: Routing,
    /// Every node started, crashed ones too.
    pub nodes: Vec<Node>,
    network: &'static str,
    call_timeout: Duration,
    register: fn(Ready) -> Ready,
}

/// Chord with fast stabilisation (failures noticed within a second).
pub fn chord_for_tests() -> crate::chord::ChordConfig {
    crate::chord::ChordConfig {
        stabilize_period: Duration::from_millis(100),
        fix_fingers_period: Duration::from_millis(100),
        check_predecessor_period: Duration::from_millis(100),
        request_timeout: Duration::from_millis(400),
        ..crate::chord::ChordConfig::default()
    }
}

/// Pastry with fast heartbeats (failures detected within a second).
pub fn pastry_for_tests() -> PastryConfig {
    PastryConfig {
        heartbeat_period: Duration::from_millis(100),
        failure_timeout: Duration::from_millis(600),
        request_timeout: Duration::from_millis(500),
        ..PastryConfig::default()
    }
}

/// Logs to the test's output when `G2_TEST_LOGS` holds a filter
/// (`g2_core=debug`); once per process.
pub fn logs() {
    if let Ok(filter) = std::env::var("G2_TEST_LOGS") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

impl TestNet {
    /// `n` nodes of `network`, joined and settled; `register` registers the
    /// object types on each.
    pub async fn new(
        routing: Routing,
        network: &'static str,
        n: usize,
        call_timeout: Duration,
        register: fn(Ready) -> Ready,
    ) -> TestNet {
        logs();
        let mut net = TestNet {
            mem: MemNetwork::new(),
            dir: Directory::new(),
            routing,
            nodes: Vec::new(),
            network,
            call_timeout,
            register,
        };
        for _ in 0..n {
            net.add_node().await;
        }
        net.settle().await;
        net
    }

    /// Starts one more node and joins it (through the first node, for Pastry).
    pub async fn add_node(&mut self) -> Node {
        let t = self.mem.endpoint();
        self.start(t).await
    }

    /// Starts a crashed node again: same id and address, nothing kept, and
    /// (unless the overlay is told, as the test-support one is) before its
    /// neighbours have noticed it was gone.
    pub async fn restart(&mut self, peer: Peer) -> Node {
        let t = self.mem.endpoint_at(peer);
        self.start(t).await
    }

    async fn start(&mut self, transport: crate::mem::MemTransport) -> Node {
        let b = Node::builder().network(self.network);
        let b = match self.routing {
            Routing::TestSupport => b.overlay(self.dir.overlay()).transport(transport),
            Routing::Pastry | Routing::Chord => {
                let b = if self.routing == Routing::Pastry {
                    b.overlay(pastry_for_tests())
                } else {
                    b.overlay(chord_for_tests())
                };
                let b = b.transport(transport);
                match self.nodes.iter().find(|n| !n.is_stopped()) {
                    Some(first) => b.bootstrap(first.peer().addr.clone()),
                    None => b,
                }
            }
        };
        let node = (self.register)(b.call_timeout(self.call_timeout))
            .build()
            .await
            .expect("node builds and joins");
        self.nodes.push(node.clone());
        node
    }

    /// The nodes not stopped.
    pub fn live(&self) -> Vec<Node> {
        self.nodes
            .iter()
            .filter(|n| !n.is_stopped())
            .cloned()
            .collect()
    }

    /// The true root of `key` among the live nodes, by the overlay's own rule:
    /// numerically closest (Pastry, test support) or successor (Chord).
    pub fn root(&self, key: Key) -> NodeId {
        let live = self.live();
        let ids = live.iter().map(|n| n.id().key());
        let k = match self.routing {
            Routing::Chord => ids
                .min_by_key(|id| key.cw_distance(*id))
                .expect("a live node"),
            _ => key.closest(ids).expect("a live node"),
        };
        NodeId::from_u128(k.0)
    }

    /// Waits (bounded) until every live node agrees on the root of sample keys.
    pub async fn settle(&self) {
        for _ in 0..200 {
            let live = self.live();
            let ok = (0..64u128).all(|i| {
                let key = Key(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
                let root = self.root(key);
                live.iter()
                    .all(|n| n.status().neighbours.len() + 1 >= live.len().min(17))
                    && live.iter().filter(|n| n.is_root_of(key)).count() == 1
                    && live.iter().any(|n| n.id() == root && n.is_root_of(key))
            });
            if ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the {:?} overlay did not settle", self.routing);
    }

    /// Crashes a node: its endpoint dies with its volatile state. With the
    /// test-support overlay everyone is told at once; Pastry detects it.
    pub fn crash(&self, id: NodeId) {
        self.mem.kill(id);
        if let Some(n) = self.nodes.iter().find(|n| n.id() == id) {
            n.shutdown();
        }
        if self.routing == Routing::TestSupport {
            self.dir.fail(id);
        }
    }
}
