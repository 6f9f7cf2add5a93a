//! The [`Transport`] strategy: frames between nodes, with verified peer ids.

use std::sync::Arc;

use async_trait::async_trait;

use crate::id::{NodeAddr, NodeId, Peer};

/// A frame received from a peer whose id the transport has verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// The sender.
    pub from: Peer,
    /// The frame's bytes (at most `wire::MAX_FRAME`).
    pub frame: Vec<u8>,
}

/// Why a transport operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No node answers at that address (or it was killed): the address, and
    /// what went wrong.
    #[error("cannot reach peer {0}")]
    Unreachable(String),
    /// The node at that address belongs to another network.
    #[error("{}", wrong_network(addr, ours, theirs.as_deref()))]
    WrongNetwork {
        /// The address.
        addr: String,
        /// The network this node joins.
        ours: String,
        /// The peer's network, where it said.
        theirs: Option<String>,
    },
    /// The peer's verified id is not the one expected.
    #[error("peer at {addr} is {actual}, not {expected}")]
    WrongPeer {
        /// The address.
        addr: String,
        /// The id that was expected.
        expected: String,
        /// The id it proved.
        actual: String,
    },
    /// The frame exceeds the size limit.
    #[error("frame of {0} bytes is too large")]
    TooLarge(usize),
    /// This endpoint is closed.
    #[error("transport closed")]
    Closed,
    /// Anything else, with the reason.
    #[error("transport error: {0}")]
    Other(String),
}

fn wrong_network(addr: &str, ours: &str, theirs: Option<&str>) -> String {
    let mut m = format!("{addr} belongs to another network (this node joins {ours:?})");
    if let Some(t) = theirs {
        m.push_str(&format!(": it is on {t:?}: pass --network {t}"));
    }
    m
}

/// Handles one frame on a transport's own reader task (see [`Transport::serve`]).
pub type FrameHandler =
    Arc<dyn Fn(Incoming) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// Sends and receives frames (`mem` in-process, `quic` over UDP).
///
/// A transport verifies who it talks to: `Incoming::from` and the peer reached by
/// `send` are proven ids, never claims. Malformed input from a peer closes that
/// connection with a logged reason and never panics the node.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// This node's verified identity and address.
    fn local_peer(&self) -> Peer;
    /// Sends one frame to `to`.
    async fn send(&self, to: &Peer, frame: Vec<u8>) -> Result<(), TransportError>;
    /// The next frame from any peer; `Err(Closed)` when the endpoint shuts down.
    async fn recv(&self) -> Result<Incoming, TransportError>;
    /// Contacts `addr` and learns the verified id of the node there (to bootstrap).
    async fn identify(&self, addr: &NodeAddr) -> Result<Peer, TransportError>;
    /// Drops the connection to `peer` because it misbehaved (sent a malformed
    /// frame, say); the transport logs `reason`. Later frames from a new connection
    /// are accepted again.
    fn disconnect(&self, peer: NodeId, reason: &str);
    /// Stops receiving; pending `recv` calls return `Closed`.
    fn close(&self);
    /// Closes after a goodbye (a graceful leave): peers are told to stop sending
    /// here, so that their later sends fail and the runtime routes around this
    /// node; frames they had sent before are still delivered and handled, and
    /// this node's own last frames reach their peers; then as [`close`](Transport::close).
    /// Bounded in time. The default closes at once.
    async fn close_gracefully(&self) {
        self.close();
    }
    /// Asks the transport to hand every later frame to `handler` on its own
    /// reader tasks instead of queueing it for [`recv`](Transport::recv), which
    /// saves a task switch per frame. Frames from one peer are handled one after
    /// another in the order they were sent (the next waits until the handler's
    /// future finished); frames from different peers concurrently. Returns false,
    /// the default, when the transport only offers `recv`.
    fn serve(&self, handler: FrameHandler) -> bool {
        let _ = handler;
        false
    }
}
