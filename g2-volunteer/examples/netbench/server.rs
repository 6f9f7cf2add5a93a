//! The server process: a volunteer hosting the benchmark objects, a bare quinn
//! echo endpoint and the tonic gRPC echo server.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use g2::quic::NodeKey;

use crate::bench_object::BenchObject;
use crate::cli::ServeArgs;
use crate::{grpc, s};

fn bare_transport() -> Arc<quinn::TransportConfig> {
    // as the G2 transport's, but with bidirectional streams for request/response
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(1024u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    Arc::new(t)
}

pub async fn serve(a: ServeArgs) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("netbench-serve-{}", std::process::id()));
    let cfg = g2_volunteer::VolunteerConfig::resolve(&g2_volunteer::VolunteerArgs {
        network: Some(a.network.clone()),
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        data_dir: Some(dir.clone()),
        ..Default::default()
    })
    .map_err(s("config"))?;
    // the benchmark's objects stay on their roots (it measures the call path
    // and the hand-over to a new root, not load balancing)
    let v =
        g2_volunteer::Volunteer::start(&cfg, |b| b.register::<BenchObject>().load_balancing(false))
            .await
            .map_err(s("starting the volunteer"))?;
    let _ = std::fs::remove_dir_all(&dir); // the key is loaded
    let key = NodeKey::generate().map_err(s("key"))?;
    let bare_id = key.id();
    let mut sc = g2::quic::server_config(&a.network, &key, 1024).map_err(s("TLS"))?;
    sc.transport_config(bare_transport());
    let ep = quinn::Endpoint::server(sc, SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(s("bare endpoint"))?;
    let bare_addr = ep.local_addr().map_err(s("bare endpoint"))?;
    tokio::spawn(bare_accept(ep));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(s("gRPC listener"))?;
    let grpc_addr = listener.local_addr().map_err(s("gRPC listener"))?;
    tokio::spawn(async move {
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(grpc::EchoServer)
            .serve_with_incoming(incoming)
            .await
        {
            eprintln!("netbench: gRPC server: {e}");
        }
    });
    println!(
        "READY {} {:032x} {} {:032x} {}",
        v.local_addr(),
        v.node().id().as_u128(),
        bare_addr,
        bare_id.as_u128(),
        grpc_addr
    );
    let _ = std::io::stdout().flush();
    // serve until the orchestrator goes away (see child_runtime)
    std::future::pending::<()>().await;
    Ok(())
}

async fn bare_accept(ep: quinn::Endpoint) {
    while let Some(incoming) = ep.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else {
                return;
            };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(bare_echo(send, recv));
            }
        });
    }
}

async fn bare_echo(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 4];
        if recv.read_exact(&mut len).await.is_err() {
            return;
        }
        let n = u32::from_be_bytes(len) as usize;
        if n > g2_core::wire::MAX_FRAME {
            return;
        }
        buf.resize(n, 0);
        if recv.read_exact(&mut buf).await.is_err() {
            return;
        }
        if send.write_all(&len).await.is_err() || send.write_all(&buf).await.is_err() {
            return;
        }
    }
}
