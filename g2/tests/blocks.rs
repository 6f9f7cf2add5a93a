//! Content-addressed blocks asked of one node (`Node::fetch_block`), on an
//! in-process network: served from the node's block source, checked against
//! their hash on both sides, and refused clearly where the node keeps none.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use g2::testing::{Routing, TestNet};
use g2::{BlockSource, CallError, RemoteError};

/// Blocks by hash; `lie` hands out other bytes than asked for.
struct Blocks {
    kept: HashMap<[u8; 32], Vec<u8>>,
    lie: bool,
}

#[async_trait::async_trait]
impl BlockSource for Blocks {
    async fn block(&self, key: &[u8; 32]) -> Option<Vec<u8>> {
        let b = self.kept.get(key)?.clone();
        Some(if self.lie {
            b.into_iter().rev().collect()
        } else {
            b
        })
    }
}

fn blocks(lie: bool, bytes: &[Vec<u8>]) -> Arc<Blocks> {
    Arc::new(Blocks {
        kept: bytes
            .iter()
            .map(|b| (*blake3::hash(b).as_bytes(), b.clone()))
            .collect(),
        lie,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_is_fetched_from_the_node_asked_and_refused_where_it_is_not_kept() {
    let net = TestNet::new(
        Routing::Pastry,
        "blocks.test",
        3,
        Duration::from_secs(10),
        |b| b,
    )
    .await;
    let nodes = net.live();
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let one: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let key = *blake3::hash(&one).as_bytes();
    b.serve_blocks(blocks(false, std::slice::from_ref(&one)));
    c.serve_blocks(blocks(true, &[one.clone(), vec![1, 2, 3]]));

    // from the node that keeps it, and from itself
    assert_eq!(a.fetch_block(b.peer(), key, None).await.unwrap(), one);
    assert_eq!(b.fetch_block(b.peer(), key, None).await.unwrap(), one);

    // a node with no source, one without that block, one whose source hands
    // out other bytes: each says it keeps no such block
    let hex = blake3::Hash::from(key).to_hex().to_string();
    for (from, name) in [(a, "a"), (c, "c")] {
        match b.fetch_block(from.peer(), key, None).await {
            Err(CallError::Remote(RemoteError::NoBlock { key: k, node })) => {
                assert_eq!(k, hex, "{name}");
                assert_eq!(node, from.id(), "{name}");
            }
            other => panic!("from {name}: {other:?}"),
        }
    }
    let missing = [7u8; 32];
    assert!(matches!(
        a.fetch_block(b.peer(), missing, None).await,
        Err(CallError::Remote(RemoteError::NoBlock { .. }))
    ));

    // a block request is not routed: asked of a node that is gone, it fails
    // (within the timeout) instead of reaching another node that keeps it
    let gone = b.peer().clone();
    net.crash(gone.id);
    let err = a
        .fetch_block(&gone, key, Some(Duration::from_secs(2)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CallError::Unreachable { .. } | CallError::Timeout { .. }
        ),
        "{err:?}"
    );
}
