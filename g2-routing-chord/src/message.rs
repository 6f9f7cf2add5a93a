//! Chord's wire messages, encoded with CBOR (ciborium) and decoded defensively:
//! anything a peer sends is hostile until checked.

use g2_core::overlay::{OverlayError, check_peer_list};
use g2_core::{NodeAddr, NodeId, Peer};
use serde::{Deserialize, Serialize};

pub(crate) use g2_core::overlay::MAX_ADDR_LEN as MAX_ADDR;

/// A node as carried on the wire: id and address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WirePeer(pub(crate) u128, pub(crate) String);

impl WirePeer {
    pub(crate) fn of(p: &Peer) -> Self {
        Self(p.id.as_u128(), p.addr.as_str().to_owned())
    }

    pub(crate) fn peer(&self) -> Peer {
        Peer::new(NodeId::from_u128(self.0), NodeAddr::new(self.1.clone()))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Msg {
    /// `find_successor(key)`, forwarded recursively along closest preceding
    /// nodes; the node that knows the answer replies to `origin` directly.
    FindSuccessor {
        key: u128,
        origin: WirePeer,
        tag: u64,
        hops: u8,
    },
    /// The answer to a `FindSuccessor`: the key's successor, and the answering
    /// node's successor list (from which a joiner builds its own).
    FoundSuccessor {
        tag: u64,
        successor: WirePeer,
        successors: Vec<WirePeer>,
        hops: u8,
    },
    /// `stabilize` + `notify`: "what is your predecessor? (I may be it)".
    Stabilize,
    /// The successor's predecessor (after the notify), the predecessor it had
    /// before when the sender replaced it, and its successor list.
    StabilizeReply {
        predecessor: Option<WirePeer>,
        previous: Option<WirePeer>,
        successors: Vec<WirePeer>,
    },
    /// A node joined between the receiver and its successor (sent by the
    /// successor that accepted it as predecessor).
    NewSuccessor {
        successor: WirePeer,
    },
    /// `check_predecessor`.
    Ping,
    Pong,
    /// The sender leaves gracefully: its predecessor and successor list, to
    /// repair with.
    Leave {
        predecessor: Option<WirePeer>,
        successors: Vec<WirePeer>,
    },
}

impl Msg {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        if let Err(e) = ciborium::into_writer(self, &mut out) {
            // Writing to a Vec cannot fail; keep the node alive regardless.
            tracing::error!(error = %e, "encoding a Chord message failed");
        }
        out
    }

    /// Decodes and validates a message from `from`.
    pub(crate) fn decode(from: NodeId, bytes: &[u8]) -> Result<Self, OverlayError> {
        let msg: Msg = ciborium::from_reader(bytes).map_err(|e| OverlayError::Malformed {
            from,
            reason: e.to_string(),
        })?;
        let check = |peers: &[WirePeer], what: &str| {
            check_peer_list(from, what, peers.iter().map(|p| p.1.as_str()))
        };
        match &msg {
            Msg::FindSuccessor { origin, .. } => check(std::slice::from_ref(origin), "lookup")?,
            Msg::FoundSuccessor {
                successor,
                successors,
                ..
            } => {
                check(std::slice::from_ref(successor), "lookup answer")?;
                check(successors, "successor list")?;
            }
            Msg::StabilizeReply {
                predecessor,
                previous,
                successors,
            } => {
                let singles: Vec<WirePeer> = predecessor.iter().chain(previous).cloned().collect();
                check(&singles, "predecessor")?;
                check(successors, "successor list")?;
            }
            Msg::NewSuccessor { successor } => check(std::slice::from_ref(successor), "successor")?,
            Msg::Leave {
                predecessor,
                successors,
            } => {
                check(predecessor.as_slice(), "predecessor")?;
                check(successors, "successor list")?;
            }
            Msg::Stabilize | Msg::Ping | Msg::Pong => {}
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn messages_round_trip() {
        let m = Msg::StabilizeReply {
            predecessor: Some(WirePeer(7, "mem:7".into())),
            previous: None,
            successors: vec![WirePeer(u128::MAX, "mem:9".into())],
        };
        assert_eq!(Msg::decode(NodeId::from_u128(1), &m.encode()).unwrap(), m);
    }

    #[test]
    fn oversized_lists_and_addresses_are_refused() {
        let m = Msg::Leave {
            predecessor: None,
            successors: vec![
                WirePeer(1, "mem:1".into());
                g2_core::overlay::MAX_PEERS_PER_MESSAGE + 1
            ],
        };
        assert!(matches!(
            Msg::decode(NodeId::from_u128(1), &m.encode()),
            Err(OverlayError::Protocol { .. })
        ));
        let m = Msg::NewSuccessor {
            successor: WirePeer(1, "x".repeat(MAX_ADDR + 1)),
        };
        assert!(matches!(
            Msg::decode(NodeId::from_u128(1), &m.encode()),
            Err(OverlayError::Protocol { .. })
        ));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Msg::decode(NodeId::from_u128(1), &bytes);
        }
    }
}
