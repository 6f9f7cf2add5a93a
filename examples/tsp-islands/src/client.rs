//! A client of a real network (`--connect`): a node that starts the run and
//! calls, while the volunteers run the islands.

use g2::prelude::*;

use crate::cli::Args;
use crate::island::TspIsland;
use crate::network::routing;

/// A node of a real network (QUIC, Pastry), joined through `bootstrap`.
pub async fn client_node(args: &Args, bootstrap: std::net::SocketAddr) -> Result<Node, String> {
    use g2::quic::{NodeKey, QuicConfig, QuicTransport};
    let key = NodeKey::generate().map_err(|e| e.to_string())?;
    let listen = if bootstrap.is_ipv4() {
        std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0))
    } else {
        std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0))
    };
    let transport = QuicTransport::bind(QuicConfig::new(args.network.clone(), listen, key))
        .await
        .map_err(|e| e.to_string())?;
    let b = Node::builder()
        .network(args.network.clone())
        .overlay(routing(args)?)
        .transport(transport)
        .bootstrap(g2::NodeAddr::new(bootstrap.to_string()))
        // the client starts the run and calls; the volunteers run the islands
        // (it hosts one only while it knows no volunteer, and passes it on)
        .host_objects(false)
        .register::<TspIsland>();
    let mut b = g2_volunteer::code::register_records(b);
    // the client chooses the run's policy; the volunteers keep the records
    if let Some(p) = args.policy(std::sync::Arc::new(g2::MemStore::new())) {
        b = b.fault_tolerance(p);
    }
    let node = b.build().await.map_err(|e| match e {
        // (these name the address and say what to do)
        g2::BuildError::WrongNetwork(_) | g2::BuildError::Bootstrap { .. } => e.to_string(),
        e => format!("joining the network at {bootstrap}: {e}"),
    })?;
    if !args.no_publish {
        publish(&node, args).await?;
    }
    Ok(node)
}

/// Publishes this binary as the islands' code, so that plain volunteers that
/// trust its publisher can run them.
async fn publish(node: &Node, args: &Args) -> Result<(), String> {
    use g2::Object;
    let key = args
        .publisher_key
        .clone()
        .unwrap_or_else(g2_volunteer::default_publisher_key);
    let (k, p) = g2_volunteer::code::publish_self(node, &key, &[TspIsland::TYPE_NAME])
        .await
        .map_err(|e| format!("publishing the islands' code: {e}"))?;
    tracing::info!(
        bundle = %p.binary_blake3,
        size = p.size,
        already = p.already,
        "published this binary as the code of {}",
        TspIsland::TYPE_NAME
    );
    eprintln!(
        "code published by {} (volunteers run it with --trusted-publisher {})",
        k.public_hex(),
        k.public_hex()
    );
    Ok(())
}
