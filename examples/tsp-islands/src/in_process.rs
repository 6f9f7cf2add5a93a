//! The in-process network: `--nodes` volunteers on the in-process transport,
//! each with its own durable store under `--ft local`.

use std::path::PathBuf;

use g2::mem::MemNetwork;
use g2::prelude::*;
use g2::testing::Directory;

use crate::cli::Args;
use crate::island::TspIsland;
use crate::network::routing;

/// Where in-process volunteers keep their stores under `--ft local`; removed
/// when dropped.
pub struct StoreDirs(pub Vec<PathBuf>);

impl Drop for StoreDirs {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

#[cfg(feature = "rocksdb")]
fn durable_store(dir: &std::path::Path) -> Result<std::sync::Arc<dyn g2::Store>, String> {
    Ok(std::sync::Arc::new(
        g2_store_rocksdb::RocksStore::open(dir).map_err(|e| e.to_string())?,
    ))
}

#[cfg(not(feature = "rocksdb"))]
fn durable_store(_dir: &std::path::Path) -> Result<std::sync::Arc<dyn g2::Store>, String> {
    Err(NO_ROCKSDB.into())
}

#[cfg(not(feature = "rocksdb"))]
pub const NO_ROCKSDB: &str = "--ft local needs a durable store, and this tsp-islands was built without RocksDB (--no-default-features, as `make run` does); build it with the default features: cargo run --release -p tsp-islands -- --ft local";

/// The in-process network of `--nodes` volunteers; under `--ft local` each keeps
/// its checkpoints and logs in its own RocksDB store in a temporary directory.
pub async fn in_process_nodes(args: &Args, dirs: &mut StoreDirs) -> Result<Vec<Node>, String> {
    let net = MemNetwork::new();
    let members = Directory::new();
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..args.nodes.max(1) {
        let b = Node::builder().network(args.network.clone());
        let b = if args.routing == "test" {
            b.overlay(members.overlay()).transport(net.endpoint())
        } else {
            let b = b.overlay(routing(args)?).transport(net.endpoint());
            match nodes.first() {
                Some(first) => b.bootstrap(first.peer().addr.clone()),
                None => b,
            }
        };
        let mut b = b.register::<TspIsland>();
        if args.ft == "local" {
            let dir = std::env::temp_dir().join(format!(
                "tsp-islands-{}-{}-{i}",
                std::process::id(),
                g2::ObjectId::random()
            ));
            dirs.0.push(dir.clone());
            let store = durable_store(&dir)?;
            if let Some(p) = args.policy(store.clone()) {
                b = b.shared_store(store).fault_tolerance(p);
            }
        }
        let node = b
            .build()
            .await
            .map_err(|e| format!("starting a node: {e}"))?;
        nodes.push(node);
    }
    Ok(nodes)
}
