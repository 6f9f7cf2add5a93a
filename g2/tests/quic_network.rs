//! Nodes over real QUIC on 127.0.0.1: objects are created and called across
//! processes' worth of sockets, and a peer sending garbage is cut off while the
//! node keeps serving everyone else.

use std::time::Duration;

use g2::Transport;
use g2::prelude::*;
use g2::quic::{NodeKey, QuicConfig, QuicTransport};
use g2::testing::Directory;
use serde::{Deserialize, Serialize};

#[g2::remote]
pub trait Adder {
    async fn add(&mut self, n: u64) -> u64;
    async fn add_to(&mut self, other: AdderRef, n: u64) -> Result<u64, String>;
}

#[derive(Serialize, Deserialize)]
struct Sum(u64);

impl Object for Sum {
    const TYPE_NAME: &'static str = "test.Sum";
    type Init = u64;
    type Ref = AdderRef;
    fn activate(v: u64) -> Self {
        Sum(v)
    }
}

impl Adder for Sum {
    async fn add(&mut self, n: u64) -> u64 {
        self.0 += n;
        self.0
    }
    async fn add_to(&mut self, other: AdderRef, n: u64) -> Result<u64, String> {
        other.add(n).await.map_err(|e| e.to_string())
    }
}

async fn quic(network: &str) -> QuicTransport {
    let cfg = QuicConfig::new(
        network,
        "127.0.0.1:0".parse().unwrap(),
        NodeKey::generate().unwrap(),
    );
    QuicTransport::bind(cfg).await.expect("bind")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_on_quic_nodes_call_each_other_and_garbage_gets_a_peer_cut_off() {
    let dir = Directory::new();
    let mut nodes = Vec::new();
    let mut transports = Vec::new();
    for _ in 0..4 {
        let t = quic("quic.test").await;
        transports.push(t.clone());
        let node = Node::builder()
            .network("quic.test")
            .overlay(dir.overlay())
            .transport(t)
            .register::<Sum>()
            .call_timeout(Duration::from_secs(10))
            .build()
            .await
            .unwrap();
        nodes.push(node);
    }
    let mut refs: Vec<AdderRef> = Vec::new();
    for i in 0..12u64 {
        refs.push(
            nodes[(i % 4) as usize]
                .create::<Sum>(i * 100)
                .await
                .unwrap(),
        );
    }
    for (i, r) in refs.iter().enumerate() {
        let via = nodes[(i + 1) % 4].reference::<AdderRef>(r.id());
        assert_eq!(via.add(1).await.unwrap(), i as u64 * 100 + 1);
    }
    // object to object, across nodes
    assert_eq!(refs[0].add_to(refs[11].clone(), 5).await.unwrap(), Ok(1106));

    // a peer with a valid key sends garbage to node 0
    let hostile = quic("quic.test").await;
    hostile
        .send(nodes[0].peer(), vec![0xde, 0xad, 0xbe, 0xef, 0x00])
        .await
        .unwrap();
    let mut cut = Vec::new();
    for _ in 0..100 {
        cut = transports[0].disconnections();
        if !cut.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cut.len(), 1, "the hostile peer is disconnected");
    assert_eq!(cut[0].peer, hostile.local_peer().id);
    assert!(
        cut[0].reason.contains("malformed frame"),
        "{}",
        cut[0].reason
    );
    // node 0 still serves everyone else
    for r in &refs {
        let via = nodes[0].reference::<AdderRef>(r.id());
        via.add(0).await.unwrap();
    }
    for n in &nodes {
        n.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cannot_join_through_a_node_of_another_network() {
    let dir = Directory::new();
    let t = quic("alpha").await;
    let addr = t.local_peer().addr;
    let _alpha = Node::builder()
        .network("alpha")
        .overlay(dir.overlay())
        .transport(t)
        .build()
        .await
        .unwrap();
    let err = Node::builder()
        .network("beta")
        .overlay(Directory::new().overlay())
        .transport(quic("beta").await)
        .bootstrap(addr.clone())
        .build()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{addr} belongs to another network (this node joins \"beta\"): it is on \"alpha\": pass --network alpha"
        )
    );
}
