//! Content-addressed blocks served by one node, not routed: the bytes whose
//! blake3 a requester names, asked of a node it chose (PAST's caching: a
//! volunteer that fetched code serves its chunks to the next ones). The
//! runtime only carries the request and checks the answer; what a node keeps
//! is up to its [`BlockSource`].

use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use crate::id::{ObjectId, Peer};
use crate::runtime::error::CallError;
use crate::runtime::node::{Node, NodeInner};
use crate::sync::lock;
use crate::wire::{RemoteError, RequestKind};

/// Where a node finds the blocks it serves.
#[async_trait::async_trait]
pub trait BlockSource: Send + Sync {
    /// The bytes whose blake3 is `key`, if kept here. The runtime checks the
    /// hash before sending them, so a source that hands out damaged bytes
    /// (a corrupted cache file) serves nothing rather than garbage.
    async fn block(&self, key: &[u8; 32]) -> Option<Vec<u8>>;
}

/// The GUID a block request names (its target, for logs and replies).
fn block_target(key: &[u8; 32]) -> ObjectId {
    let mut id = [0u8; 16];
    id.copy_from_slice(&key[..16]);
    ObjectId::from_u128(u128::from_be_bytes(id))
}

fn hex(key: &[u8; 32]) -> String {
    blake3::Hash::from(*key).to_hex().to_string()
}

impl Node {
    /// Serves blocks from `source` to nodes that ask this one
    /// ([`Node::fetch_block`]); replaces any source set before.
    pub fn serve_blocks(&self, source: Arc<dyn BlockSource>) {
        *lock(&self.inner.blocks) = Some(source);
    }

    /// The block whose blake3 is `key`, asked of `from` directly (the
    /// request is not routed). Bytes that do not match the hash are an
    /// error, as is a node that keeps no such block
    /// ([`RemoteError::NoBlock`]).
    pub async fn fetch_block(
        &self,
        from: &Peer,
        key: [u8; 32],
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, CallError> {
        let bytes = if from.id == self.inner.me.id {
            self.inner.local_block(&key).await?
        } else {
            self.inner
                .send_and_wait(
                    block_target(&key),
                    RequestKind::Block { key },
                    "block",
                    timeout,
                    Some(from.clone()),
                )
                .await?
        };
        if *blake3::hash(&bytes).as_bytes() != key {
            return Err(CallError::Decode {
                what: format!("block {} from node {}", hex(&key), from.id),
                reason: "the bytes do not match its hash".into(),
            });
        }
        Ok(bytes)
    }
}

impl NodeInner {
    /// Block `key` from this node's source, checked.
    pub(super) async fn local_block(&self, key: &[u8; 32]) -> Result<Vec<u8>, RemoteError> {
        let source = lock(&self.blocks).clone();
        let found = match source {
            Some(s) => s.block(key).await,
            None => None,
        };
        match found {
            Some(b) if *blake3::hash(&b).as_bytes() == *key => Ok(b),
            Some(_) => {
                debug!(block = %hex(key), "the block source holds bytes that do not match: not served");
                Err(self.no_block(key))
            }
            None => Err(self.no_block(key)),
        }
    }

    fn no_block(&self, key: &[u8; 32]) -> RemoteError {
        RemoteError::NoBlock {
            key: hex(key),
            node: self.me.id,
        }
    }

    /// Answers a block request that ended here.
    pub(super) async fn serve_block(self: &Arc<Self>, origin: Peer, id: u64, key: [u8; 32]) {
        let outcome = self.local_block(&key).await;
        self.reply(&origin, id, outcome).await;
    }
}
