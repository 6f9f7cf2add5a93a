//! A destination that never takes an overlay message (a dial to an address
//! nobody answers waits out a 10 s handshake) holds up only its own messages:
//! the node keeps heartbeating everyone else, who keep it as a neighbour.

use std::sync::{Arc, Mutex};
use std::time::Duration;

#[macro_use]
mod common;

use async_trait::async_trait;
use g2::mem::{MemNetwork, MemTransport};
use g2::{Node, NodeAddr, NodeId, Peer, Transport};
use g2_core::transport::{Incoming, TransportError};

/// The in-process transport, except that sends to `stalled` never complete.
struct Stalling {
    inner: MemTransport,
    stalled: Arc<Mutex<Option<NodeId>>>,
}

#[async_trait]
impl Transport for Stalling {
    fn local_peer(&self) -> Peer {
        self.inner.local_peer()
    }
    async fn send(&self, to: &Peer, frame: Vec<u8>) -> Result<(), TransportError> {
        let stalled = *self.stalled.lock().unwrap();
        if stalled == Some(to.id) {
            std::future::pending::<()>().await;
        }
        self.inner.send(to, frame).await
    }
    async fn recv(&self) -> Result<Incoming, TransportError> {
        self.inner.recv().await
    }
    async fn identify(&self, addr: &NodeAddr) -> Result<Peer, TransportError> {
        self.inner.identify(addr).await
    }
    fn disconnect(&self, peer: NodeId, reason: &str) {
        self.inner.disconnect(peer, reason)
    }
    fn close(&self) {
        self.inner.close()
    }
}

async fn node(t: impl Transport, bootstrap: Option<&Node>) -> Node {
    let mut b = Node::builder()
        .network("overlay-sends")
        .overlay(common::pastry_for_tests())
        .transport(t);
    if let Some(n) = bootstrap {
        b = b.bootstrap(n.peer().addr.clone());
    }
    b.build().await.expect("joins")
}

fn neighbour_ids(n: &Node) -> Vec<NodeId> {
    n.status().neighbours.iter().map(|p| p.id).collect()
}

#[tokio::test(start_paused = true)]
async fn a_destination_that_never_takes_a_message_holds_up_no_other() {
    let net = MemNetwork::new();
    let stalled = Arc::new(Mutex::new(None));
    let a = node(
        Stalling {
            inner: net.endpoint(),
            stalled: stalled.clone(),
        },
        None,
    )
    .await;
    let b = node(net.endpoint(), Some(&a)).await;
    let c = node(net.endpoint(), Some(&a)).await;
    // everyone knows everyone
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(neighbour_ids(&c).contains(&a.id()) && neighbour_ids(&a).len() == 2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the three never met"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // from now on nothing a sends to b ever leaves
    *stalled.lock().unwrap() = Some(b.id());
    // many failure timeouts (600 ms) later, c still hears a's heartbeats
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        neighbour_ids(&c).contains(&a.id()),
        "c declared a failed: a's messages to c waited behind those to b"
    );
    for n in [&a, &b, &c] {
        n.shutdown();
    }
}
