//! Pastry's wire messages, encoded with CBOR (ciborium) and decoded defensively:
//! anything a peer sends is hostile until checked.

use g2_core::NodeId;
use g2_core::overlay::{OverlayError, check_peer_list};
use serde::{Deserialize, Serialize};

use crate::entry::Entry;

pub(crate) use g2_core::overlay::{MAX_ADDR_LEN as MAX_ADDR, MAX_PEERS_PER_MESSAGE as MAX_PEERS};

/// A node as carried on the wire: id and address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WirePeer(pub(crate) u128, pub(crate) String);

impl WirePeer {
    pub(crate) fn of(e: &Entry) -> Self {
        Self(e.id.as_u128(), e.addr.as_str().to_owned())
    }

    pub(crate) fn id(&self) -> NodeId {
        NodeId::from_u128(self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Msg {
    /// Routed towards the joiner's id; every node on the way answers with a `JoinReply`.
    Join {
        joiner: WirePeer,
        hop: u8,
    },
    /// A node on the join route contributes its rows (and, first hop, its
    /// neighbourhood set; last hop, its leaf set).
    JoinReply {
        hop: u8,
        root: bool,
        rows: Vec<WirePeer>,
        leaf_set: Vec<WirePeer>,
        neighbourhood: Vec<WirePeer>,
    },
    /// A newly joined node tells the nodes in its state that it exists, and
    /// shows its leaf set so that they can send the nodes it is missing.
    Announce {
        leaf_set: Vec<WirePeer>,
    },
    /// The sender's leaf set, pushed unasked: to its leaves when the set gained a
    /// node (`correction: false`), or to a node whose leaf set lacks nodes the
    /// sender knows (`correction: true`, which may list those nodes beyond the
    /// sender's own leaf set and is never answered by another correction).
    LeafSetPush {
        leaf_set: Vec<WirePeer>,
        correction: bool,
    },
    /// Leaf-set keep-alive, carrying the sender's leaf set; `reply` asks for one back.
    Heartbeat {
        leaf_set: Vec<WirePeer>,
        reply: bool,
    },
    /// Asks for one row of the routing table (repair and maintenance).
    RowRequest {
        row: u8,
    },
    RowReply {
        row: u8,
        entries: Vec<WirePeer>,
    },
    /// Asks for the leaf set (leaf-set repair).
    LeafSetRequest,
    LeafSetReply {
        leaf_set: Vec<WirePeer>,
    },
    /// Round-trip time measurement.
    Probe {
        nonce: u64,
    },
    ProbeReply {
        nonce: u64,
    },
    /// The sender leaves gracefully; here is its leaf set to repair with.
    Leave {
        leaf_set: Vec<WirePeer>,
    },
}

impl Msg {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        if let Err(e) = ciborium::into_writer(self, &mut out) {
            // Writing to a Vec cannot fail; keep the node alive regardless.
            tracing::error!(error = %e, "encoding a Pastry message failed");
        }
        out
    }

    /// Decodes and validates a message from `from`.
    pub(crate) fn decode(from: NodeId, bytes: &[u8], digits: usize) -> Result<Self, OverlayError> {
        let msg: Msg = ciborium::from_reader(bytes).map_err(|e| OverlayError::Malformed {
            from,
            reason: e.to_string(),
        })?;
        let check = |peers: &[WirePeer], what: &str| {
            check_peer_list(from, what, peers.iter().map(|p| p.1.as_str()))
        };
        match &msg {
            Msg::Join { joiner, .. } => check(std::slice::from_ref(joiner), "join")?,
            Msg::JoinReply {
                rows,
                leaf_set,
                neighbourhood,
                ..
            } => {
                check(rows, "join reply rows")?;
                check(leaf_set, "join reply leaf set")?;
                check(neighbourhood, "join reply neighbourhood set")?;
            }
            Msg::Heartbeat { leaf_set, .. }
            | Msg::Announce { leaf_set }
            | Msg::LeafSetPush { leaf_set, .. }
            | Msg::LeafSetReply { leaf_set }
            | Msg::Leave { leaf_set } => check(leaf_set, "leaf set")?,
            Msg::RowRequest { row } | Msg::RowReply { row, .. } if usize::from(*row) >= digits => {
                return Err(OverlayError::Protocol {
                    from,
                    reason: format!("row {row} beyond the {digits} rows of the table"),
                });
            }
            Msg::RowReply { entries, .. } => check(entries, "row")?,
            Msg::RowRequest { .. }
            | Msg::LeafSetRequest
            | Msg::Probe { .. }
            | Msg::ProbeReply { .. } => {}
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
        let m = Msg::Heartbeat {
            leaf_set: vec![WirePeer(u128::MAX, "mem:7".into())],
            reply: true,
        };
        assert_eq!(
            Msg::decode(NodeId::from_u128(1), &m.encode(), 32).unwrap(),
            m
        );
    }

    #[test]
    fn rows_beyond_the_table_are_refused() {
        let m = Msg::RowRequest { row: 40 };
        assert!(matches!(
            Msg::decode(NodeId::from_u128(1), &m.encode(), 32),
            Err(OverlayError::Protocol { .. })
        ));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Msg::decode(NodeId::from_u128(1), &bytes, 32);
        }
    }
}
