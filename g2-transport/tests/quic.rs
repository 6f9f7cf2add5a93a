//! The QUIC transport over real UDP on 127.0.0.1: verified ids, network
//! isolation, and hostile peers.

use std::net::SocketAddr;
use std::time::Duration;

use g2_core::transport::{Transport, TransportError};
use g2_core::wire::MAX_FRAME;
use g2_core::{NodeAddr, NodeId, Peer};
use g2_transport::quic::{NodeKey, QuicConfig, QuicTransport, client_config};

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn endpoint(network: &str) -> QuicTransport {
    QuicTransport::bind(QuicConfig::new(
        network,
        loopback(),
        NodeKey::generate().unwrap(),
    ))
    .await
    .expect("bind")
}

async fn recv(t: &QuicTransport) -> g2_core::transport::Incoming {
    tokio::time::timeout(Duration::from_secs(10), t.recv())
        .await
        .expect("a frame arrives")
        .expect("open")
}

#[tokio::test]
async fn frames_arrive_from_a_verified_peer_over_one_reused_connection() {
    let (a, b) = (endpoint("net").await, endpoint("net").await);
    let pb = b.local_peer();
    for i in 0..50u8 {
        a.send(&pb, vec![i; 1 + i as usize * 100]).await.unwrap();
    }
    for i in 0..50u8 {
        let got = recv(&b).await;
        assert_eq!(
            got.from.id,
            a.local_peer().id,
            "the sender's id is its key's"
        );
        assert_eq!(got.from.addr, a.local_peer().addr);
        assert_eq!(got.frame, vec![i; 1 + i as usize * 100], "in order");
    }
    // and back over the same connection pair
    b.send(&a.local_peer(), b"pong".to_vec()).await.unwrap();
    assert_eq!(recv(&a).await.frame, b"pong");
    assert_eq!(a.connected_peers(), vec![pb.id]);
    // a large frame (1 MiB) goes through
    a.send(&pb, vec![7; 1 << 20]).await.unwrap();
    assert_eq!(recv(&b).await.frame.len(), 1 << 20);
}

#[tokio::test]
async fn the_id_is_the_hash_of_the_key_and_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("g2-quic-key-{}", std::process::id()));
    let k1 = NodeKey::load_or_create(&dir).unwrap();
    let k2 = NodeKey::load_or_create(&dir).unwrap();
    assert_eq!(k1.id(), k2.id());
    assert_ne!(k1.id(), NodeKey::generate().unwrap().id());
    std::fs::write(dir.join("node.key"), "not a key").unwrap();
    let err = NodeKey::load_or_create(&dir).unwrap_err().to_string();
    assert!(err.contains("node.key") && err.contains("PEM"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_peer_whose_key_does_not_match_the_claimed_id_is_refused() {
    let (a, b) = (endpoint("net").await, endpoint("net").await);
    let impostor = Peer::new(NodeId::random(), b.local_peer().addr);
    let err = a.send(&impostor, b"hi".to_vec()).await.unwrap_err();
    assert!(matches!(err, TransportError::WrongPeer { .. }), "{err:?}");
    assert!(err.to_string().contains("not the claimed"), "{err}");
    // the real id works
    a.send(&b.local_peer(), b"hi".to_vec()).await.unwrap();
    assert_eq!(recv(&b).await.frame, b"hi");
}

#[tokio::test]
async fn nodes_of_two_networks_cannot_talk() {
    let (a, b) = (endpoint("alpha").await, endpoint("beta").await);
    let err = a.identify(&b.local_peer().addr).await.unwrap_err();
    match &err {
        TransportError::WrongNetwork { ours, theirs, .. } => {
            assert_eq!(ours, "alpha");
            assert_eq!(theirs.as_deref(), Some("beta"), "it asked b which network");
        }
        other => panic!("{other:?}"),
    }
    assert!(a.send(&b.local_peer(), b"x".to_vec()).await.is_err());
    let c = endpoint("alpha").await;
    assert_eq!(
        a.identify(&c.local_peer().addr).await.unwrap(),
        c.local_peer()
    );
}

#[tokio::test]
async fn an_oversize_frame_disconnects_its_sender_and_others_are_still_served() {
    let server = endpoint("net").await;
    let honest = endpoint("net").await;
    // a hostile client with a valid identity writes a length prefix over the limit
    let key = NodeKey::generate().unwrap();
    let hostile_id = key.id();
    let mut ep = quinn::Endpoint::client(loopback()).unwrap();
    ep.set_default_client_config(client_config("net", &key).unwrap());
    let server_addr: SocketAddr = server.local_peer().addr.as_str().parse().unwrap();
    let conn = ep
        .connect(server_addr, "unknown.id.g2")
        .unwrap()
        .await
        .unwrap();
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(&((MAX_FRAME as u32) + 1).to_be_bytes())
        .await
        .unwrap();
    s.write_all(&[0; 64]).await.unwrap();
    // the server closes the connection with a reason
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("the hostile connection is closed");
    assert!(format!("{closed}").contains("oversize"), "{closed}");
    let d = server.disconnections();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].peer, hostile_id);
    assert!(d[0].reason.contains("oversize frame"));
    // and keeps serving everyone else
    honest
        .send(&server.local_peer(), b"still here".to_vec())
        .await
        .unwrap();
    assert_eq!(recv(&server).await.frame, b"still here");
}

#[tokio::test]
async fn a_disconnected_peer_can_come_back_on_a_new_connection() {
    let (a, b) = (endpoint("net").await, endpoint("net").await);
    a.send(&b.local_peer(), b"1".to_vec()).await.unwrap();
    let got = recv(&b).await;
    b.disconnect(got.from.id, "malformed frame: test");
    assert_eq!(b.disconnections()[0].reason, "malformed frame: test");
    // a notices the closed connection and redials
    let mut delivered = false;
    for _ in 0..50 {
        if a.send(&b.local_peer(), b"2".to_vec()).await.is_ok()
            && let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(200), b.recv()).await
        {
            assert_eq!(m.frame, b"2");
            delivered = true;
            break;
        }
    }
    assert!(delivered, "a reconnects after being dropped");
}

#[tokio::test]
async fn close_ends_receiving_and_unknown_addresses_fail_cleanly() {
    let a = endpoint("net").await;
    let err = a
        .identify(&NodeAddr::new("not-an-address"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a socket address"), "{err}");
    a.close();
    assert!(matches!(a.recv().await, Err(TransportError::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_handler_sees_each_peers_frames_in_order_and_a_slow_peer_holds_up_no_one_else() {
    use std::sync::{Arc, Mutex};
    use tokio::sync::mpsc;

    let (a, b, c) = (
        endpoint("net").await,
        endpoint("net").await,
        endpoint("net").await,
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    // a frame "stall" holds its handler until "release" comes from the other peer
    let release = Arc::new(tokio::sync::Notify::new());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler: g2_core::transport::FrameHandler = {
        let release = release.clone();
        let seen = seen.clone();
        Arc::new(move |incoming: g2_core::transport::Incoming| {
            let (tx, release, seen) = (tx.clone(), release.clone(), seen.clone());
            Box::pin(async move {
                if incoming.frame == b"release" {
                    release.notify_one();
                }
                if incoming.frame == b"stall" {
                    release.notified().await;
                }
                seen.lock()
                    .unwrap()
                    .push((incoming.from.id, incoming.frame.clone()));
                let _ = tx.send(incoming);
            })
        })
    };
    assert!(b.serve(handler), "QUIC hands frames to a handler");
    let pb = b.local_peer();
    a.send(&pb, b"stall".to_vec()).await.unwrap();
    for i in 0..20u8 {
        a.send(&pb, vec![i]).await.unwrap();
    }
    // c's frames get through while a's first frame is still being handled
    for i in 0..5u8 {
        c.send(&pb, vec![100 + i]).await.unwrap();
    }
    for i in 0..5u8 {
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("c's frames are handled while a's handler waits")
            .unwrap();
        assert_eq!((got.from.id, got.frame), (c.local_peer().id, vec![100 + i]));
    }
    c.send(&pb, b"release".to_vec()).await.unwrap();
    let mut from_a = Vec::new();
    while from_a.len() < 21 {
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a's frames follow once its first is done")
            .unwrap();
        if got.from.id == a.local_peer().id {
            from_a.push(got.frame);
        }
    }
    let mut expected = vec![b"stall".to_vec()];
    expected.extend((0..20u8).map(|i| vec![i]));
    assert_eq!(
        from_a, expected,
        "one peer's frames are handled in the order sent"
    );
    // nothing went to the receive queue
    assert!(
        tokio::time::timeout(Duration::from_millis(100), b.recv())
            .await
            .is_err()
    );
    assert_eq!(seen.lock().unwrap().len(), 27);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_close_hands_over_everything_sent_before_the_goodbye_and_refuses_the_rest() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let (a, b, l) = (
        endpoint("net").await,
        endpoint("net").await,
        endpoint("net").await,
    );
    // the leaving node handles its first frames slowly, so that frames queue up
    // unread when it starts to close
    let handled = Arc::new(AtomicUsize::new(0));
    let handler: g2_core::transport::FrameHandler = {
        let handled = handled.clone();
        Arc::new(move |_incoming| {
            let handled = handled.clone();
            Box::pin(async move {
                if handled.load(Ordering::SeqCst) < 50 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                handled.fetch_add(1, Ordering::SeqCst);
            })
        })
    };
    assert!(l.serve(handler));
    let pl = l.local_peer();
    // l also has frames of its own on their way out when it closes
    l.send(&b.local_peer(), b"last words".to_vec())
        .await
        .unwrap();
    let mut sent = 0;
    for i in 0..100u32 {
        a.send(&pl, i.to_be_bytes().to_vec()).await.unwrap();
        sent += 1;
    }
    let closing = {
        let l = l.clone();
        tokio::spawn(async move { l.close_gracefully().await })
    };
    // a keeps sending until it hears the goodbye: then its sends fail
    let mut refused = None;
    for i in 100..100_000u32 {
        match a.send(&pl, i.to_be_bytes().to_vec()).await {
            Ok(()) => sent += 1,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    let refused = refused.expect("sends to a leaving node fail once it said goodbye");
    assert!(
        matches!(refused, TransportError::Unreachable(_)),
        "{refused:?}"
    );
    tokio::time::timeout(Duration::from_secs(10), closing)
        .await
        .expect("the close is bounded")
        .unwrap();
    assert_eq!(
        handled.load(Ordering::SeqCst),
        sent,
        "every frame sent before the goodbye was handled"
    );
    assert_eq!(recv(&b).await.frame, b"last words");
    // and a later send stays refused
    assert!(a.send(&pl, b"x".to_vec()).await.is_err());
}
