//! Code downloaded on demand (paper §3.3): signed bundles stored on the
//! network, fetched by volunteers that lack a type, run in worker processes.
//!
//! * [`bundle`]: manifests, publisher keys and signatures, chunking;
//! * [`records`]: the code records on the network, [`publish`] and fetching;
//! * [`cache`]: the size-bounded bundle cache in the data dir;
//! * [`workers`]: [`NetworkCode`], the volunteer's `TypeProvider`;
//! * [`sandbox`]: how worker processes are confined;
//! * [`servers`]: code servers tried before the network (plain directories).

pub mod bundle;
pub mod cache;
pub mod records;
pub mod sandbox;
pub mod servers;
pub mod workers;

pub use bundle::{Bundle, CodeError, Manifest, PublisherKey, SignedManifest, TARGET};
pub use records::{Published, publish};
pub use servers::CodeServer;
pub use workers::{CodeSettings, CodeStatus, NetworkCode, WorkerStatus};

/// Registers the built-in code record types: every node of a network that
/// uses code download (volunteers and clients) links them.
pub fn register_records<N, O, T>(b: g2::NodeBuilder<N, O, T>) -> g2::NodeBuilder<N, O, T> {
    b.register::<records::Chunk>()
        .register::<records::Manifests>()
}

/// Publishes this process's own executable as the code of `types`, signed
/// with the key at `key_path` (created there on first use), through `node`.
pub async fn publish_self(
    node: &g2::Node,
    key_path: &std::path::Path,
    types: &[&str],
) -> Result<(PublisherKey, Published), String> {
    let key = PublisherKey::load_or_create(key_path).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    let bundle = Bundle::from_file(&exe, types.iter().map(|t| t.to_string()).collect())
        .map_err(|e| e.to_string())?;
    let published = publish(node, &key, &bundle).await?;
    Ok((key, published))
}
