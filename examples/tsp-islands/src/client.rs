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
    let mut b = Node::builder()
        .network(args.network.clone())
        .overlay(routing(args)?)
        .transport(transport)
        .bootstrap(g2::NodeAddr::new(bootstrap.to_string()))
        // the client starts the run and calls; the volunteers run the islands
        // (it hosts one only while it knows no volunteer, and passes it on)
        .host_objects(false)
        .register::<TspIsland>();
    // the client chooses the run's policy; the volunteers keep the records
    if let Some(p) = args.policy(std::sync::Arc::new(g2::MemStore::new())) {
        b = b.fault_tolerance(p);
    }
    b.build()
        .await
        .map_err(|e| format!("joining the network at {bootstrap}: {e}"))
}
