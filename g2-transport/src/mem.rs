//! The in-process transport: every node of a [`MemNetwork`] is an endpoint
//! reached through channels, with fault injection in the style of raft-rs's test
//! harness (`drop`, `cut`, `isolate`, `recover`).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use g2_core::Transport;
//! use g2_transport::mem::MemNetwork;
//!
//! let net = MemNetwork::new();
//! let (a, b) = (net.endpoint(), net.endpoint());
//! a.send(&b.local_peer(), b"hello".to_vec()).await.unwrap();
//! let got = b.recv().await.unwrap();
//! assert_eq!((got.from, got.frame), (a.local_peer(), b"hello".to_vec()));
//! net.kill(b.local_peer().id);
//! assert!(a.send(&b.local_peer(), b"x".to_vec()).await.is_err());
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use g2_core::transport::{Incoming, Transport, TransportError};
use g2_core::wire::MAX_FRAME;
use g2_core::{NodeAddr, NodeId, Peer};
use tokio::sync::mpsc;

struct Endpoint {
    id: NodeId,
    inbox: mpsc::UnboundedSender<Incoming>,
    /// Which incarnation of the node holds the address: a restarted node's old
    /// endpoint can no longer send.
    incarnation: u64,
}

#[derive(Default)]
struct State {
    endpoints: HashMap<NodeAddr, Endpoint>,
    killed: HashSet<NodeId>,
    cut: HashSet<(NodeId, NodeId)>,
    partition: HashMap<NodeId, usize>,
    next: u64,
}

impl State {
    fn blocked(&self, a: NodeId, b: NodeId) -> bool {
        if self.cut.contains(&(a, b)) {
            return true;
        }
        match (self.partition.get(&a), self.partition.get(&b)) {
            (Some(x), Some(y)) => x != y,
            (None, None) => false,
            // nodes outside every listed group form one more group
            _ => true,
        }
    }
}

/// Counters of a [`MemNetwork`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemStats {
    /// Frames delivered to an inbox.
    pub delivered: u64,
    /// Frames lost to a cut link or a partition.
    pub dropped: u64,
    /// Peers disconnected for misbehaving.
    pub disconnects: u64,
}

/// An in-process network; cheap to clone (clones share the network).
#[derive(Clone, Default)]
pub struct MemNetwork {
    state: Arc<Mutex<State>>,
    delivered: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    disconnects: Arc<AtomicU64>,
}

impl MemNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // the state is only mutated by short infallible sections
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new endpoint with a random node id, at address `mem:<n>`.
    pub fn endpoint(&self) -> MemTransport {
        self.endpoint_with_id(NodeId::random())
    }

    /// A new endpoint with the given node id.
    pub fn endpoint_with_id(&self, id: NodeId) -> MemTransport {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.lock();
        st.next += 1;
        let addr = NodeAddr::new(format!("mem:{}", st.next));
        st.killed.remove(&id);
        let incarnation = st.next;
        st.endpoints.insert(
            addr.clone(),
            Endpoint {
                id,
                inbox: tx,
                incarnation,
            },
        );
        MemTransport {
            net: self.clone(),
            me: Peer::new(id, addr),
            inbox: tokio::sync::Mutex::new(rx),
            incarnation,
        }
    }

    /// A new endpoint for a node that restarts with its old id and address (its
    /// previous endpoint, if still there, is replaced).
    pub fn endpoint_at(&self, peer: Peer) -> MemTransport {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.lock();
        st.next += 1;
        let incarnation = st.next;
        st.killed.remove(&peer.id);
        st.endpoints.insert(
            peer.addr.clone(),
            Endpoint {
                id: peer.id,
                inbox: tx,
                incarnation,
            },
        );
        MemTransport {
            net: self.clone(),
            me: peer,
            inbox: tokio::sync::Mutex::new(rx),
            incarnation,
        }
    }

    /// Kills a node: its endpoint stops receiving, pending receives end, and
    /// sending to it fails as unreachable.
    pub fn kill(&self, id: NodeId) {
        let mut st = self.lock();
        st.killed.insert(id);
        st.endpoints.retain(|_, e| e.id != id);
    }

    /// Silently drops every message between `a` and `b`, both ways.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        let mut st = self.lock();
        st.cut.insert((a, b));
        st.cut.insert((b, a));
    }

    /// Restores the link between `a` and `b`.
    pub fn restore(&self, a: NodeId, b: NodeId) {
        let mut st = self.lock();
        st.cut.remove(&(a, b));
        st.cut.remove(&(b, a));
    }

    /// Splits the network: messages only flow within a group. Nodes in no group
    /// form one more group of their own.
    pub fn partition(&self, groups: &[Vec<NodeId>]) {
        let mut st = self.lock();
        st.partition.clear();
        for (i, g) in groups.iter().enumerate() {
            for id in g {
                st.partition.insert(*id, i);
            }
        }
    }

    /// Ends a partition and restores every cut link.
    pub fn heal(&self) {
        let mut st = self.lock();
        st.partition.clear();
        st.cut.clear();
    }

    /// Frames delivered and dropped so far.
    pub fn stats(&self) -> MemStats {
        MemStats {
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            disconnects: self.disconnects.load(Ordering::Relaxed),
        }
    }

    fn deliver(
        &self,
        from: &Peer,
        incarnation: u64,
        to: &Peer,
        frame: Vec<u8>,
    ) -> Result<(), TransportError> {
        if frame.len() > MAX_FRAME {
            return Err(TransportError::TooLarge(frame.len()));
        }
        let st = self.lock();
        if st.killed.contains(&from.id)
            || st
                .endpoints
                .get(&from.addr)
                .is_some_and(|e| e.incarnation != incarnation)
        {
            return Err(TransportError::Closed);
        }
        let Some(ep) = st.endpoints.get(&to.addr) else {
            return Err(TransportError::Unreachable(to.addr.to_string()));
        };
        if ep.id != to.id {
            return Err(TransportError::WrongPeer {
                addr: to.addr.to_string(),
                expected: to.id.to_string(),
                actual: ep.id.to_string(),
            });
        }
        if st.blocked(from.id, to.id) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        ep.inbox
            .send(Incoming {
                from: from.clone(),
                frame,
            })
            .map_err(|_| TransportError::Unreachable(to.addr.to_string()))?;
        self.delivered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// One node's endpoint on a [`MemNetwork`].
pub struct MemTransport {
    net: MemNetwork,
    me: Peer,
    inbox: tokio::sync::Mutex<mpsc::UnboundedReceiver<Incoming>>,
    incarnation: u64,
}

impl MemTransport {
    /// The network this endpoint belongs to.
    pub fn network(&self) -> &MemNetwork {
        &self.net
    }
}

#[async_trait]
impl Transport for MemTransport {
    fn local_peer(&self) -> Peer {
        self.me.clone()
    }

    async fn send(&self, to: &Peer, frame: Vec<u8>) -> Result<(), TransportError> {
        self.net.deliver(&self.me, self.incarnation, to, frame)
    }

    async fn recv(&self) -> Result<Incoming, TransportError> {
        self.inbox
            .lock()
            .await
            .recv()
            .await
            .ok_or(TransportError::Closed)
    }

    async fn identify(&self, addr: &NodeAddr) -> Result<Peer, TransportError> {
        let st = self.net.lock();
        match st.endpoints.get(addr) {
            Some(ep) if !st.blocked(self.me.id, ep.id) => Ok(Peer::new(ep.id, addr.clone())),
            _ => Err(TransportError::Unreachable(addr.to_string())),
        }
    }

    fn disconnect(&self, peer: NodeId, reason: &str) {
        // channels have no connection to drop: record the verdict and carry on
        tracing::warn!(node = %self.me.id, %peer, "peer disconnected: {reason}");
        self.net.disconnects.fetch_add(1, Ordering::Relaxed);
    }

    fn close(&self) {
        let mut st = self.net.lock();
        let me = &self.me;
        st.endpoints
            .retain(|a, e| !(a == &me.addr && e.id == me.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cut_links_and_partitions_drop_messages() {
        let net = MemNetwork::new();
        let (a, b, c) = (net.endpoint(), net.endpoint(), net.endpoint());
        let (pa, pb, pc) = (a.local_peer(), b.local_peer(), c.local_peer());
        net.cut(pa.id, pb.id);
        a.send(&pb, vec![1]).await.unwrap();
        a.send(&pc, vec![2]).await.unwrap();
        assert_eq!(c.recv().await.unwrap().frame, vec![2]);
        assert_eq!(
            net.stats(),
            MemStats {
                delivered: 1,
                dropped: 1,
                disconnects: 0
            }
        );
        net.restore(pa.id, pb.id);
        net.partition(&[vec![pa.id], vec![pb.id, pc.id]]);
        a.send(&pc, vec![3]).await.unwrap();
        b.send(&pc, vec![4]).await.unwrap();
        assert_eq!(c.recv().await.unwrap().frame, vec![4]);
        assert!(a.identify(&pc.addr).await.is_err());
        net.heal();
        assert_eq!(a.identify(&pc.addr).await.unwrap(), pc);
    }

    #[tokio::test]
    async fn killed_nodes_are_unreachable_and_stop_receiving() {
        let net = MemNetwork::new();
        let (a, b) = (net.endpoint(), net.endpoint());
        net.kill(b.local_peer().id);
        assert!(matches!(
            a.send(&b.local_peer(), vec![1]).await,
            Err(TransportError::Unreachable(_))
        ));
        assert!(matches!(b.recv().await, Err(TransportError::Closed)));
        assert!(matches!(
            b.send(&a.local_peer(), vec![1]).await,
            Err(TransportError::Closed)
        ));
    }

    #[tokio::test]
    async fn a_claimed_id_must_match_the_endpoint() {
        let net = MemNetwork::new();
        let (a, b) = (net.endpoint(), net.endpoint());
        let liar = Peer::new(NodeId::random(), b.local_peer().addr);
        assert!(matches!(
            a.send(&liar, vec![1]).await,
            Err(TransportError::WrongPeer { .. })
        ));
        assert!(matches!(
            a.send(&b.local_peer(), vec![0; MAX_FRAME + 1]).await,
            Err(TransportError::TooLarge(_))
        ));
    }
}
