//! The client process: a G2 node that joins through the server, a bare quinn
//! client and a tonic client; it measures round trips, calls per second and
//! migration.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use g2::NodeAddr;
use g2::prelude::*;
use g2::quic::{NodeKey, QuicConfig, QuicTransport};
use serde_bytes::ByteBuf;
use serde_json::{Value, json};

use crate::bench_object::{BenchObject, BenchRef};
use crate::cli::ClientArgs;
use crate::{grpc, hex_id, s};

/// A node of the benchmark network; `hosts` is false for the client, which
/// only calls.
async fn g2_node(
    network: &str,
    bootstrap: SocketAddr,
    key: NodeKey,
    hosts: bool,
) -> Result<Node, String> {
    let t = QuicTransport::bind(QuicConfig::new(
        network,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        key,
    ))
    .await
    .map_err(s("binding"))?;
    Node::builder()
        .network(network)
        .overlay(
            g2_volunteer::overlay(
                g2_volunteer::Routing::Pastry,
                Duration::from_secs(10),
                Duration::from_secs(30),
            )
            .map_err(s("pastry"))?,
        )
        .transport(t)
        .bootstrap(NodeAddr::new(bootstrap.to_string()))
        .register::<BenchObject>()
        .host_objects(hosts)
        .load_balancing(false)
        .call_timeout(Duration::from_secs(10))
        .join_timeout(Duration::from_secs(20))
        .build()
        .await
        .map_err(s("joining"))
}

struct BareStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: Vec<u8>,
}

impl BareStream {
    async fn open(conn: &quinn::Connection) -> Result<Self, String> {
        let (send, recv) = conn.open_bi().await.map_err(s("open_bi"))?;
        Ok(Self {
            send,
            recv,
            buf: Vec::new(),
        })
    }

    async fn round_trip(&mut self, payload: &[u8]) -> Result<(), String> {
        let len = (payload.len() as u32).to_be_bytes();
        self.send.write_all(&len).await.map_err(s("bare write"))?;
        self.send
            .write_all(payload)
            .await
            .map_err(s("bare write"))?;
        let mut l = [0u8; 4];
        self.recv.read_exact(&mut l).await.map_err(s("bare read"))?;
        let n = u32::from_be_bytes(l) as usize;
        if n != payload.len() {
            return Err(format!("bare echo: {n} bytes back, sent {}", payload.len()));
        }
        self.buf.resize(n, 0);
        self.recv
            .read_exact(&mut self.buf)
            .await
            .map_err(s("bare read"))?;
        Ok(())
    }
}

fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e6
}

fn stats(mut v: Vec<Duration>) -> Value {
    v.sort();
    let mean = v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len().max(1) as f64;
    json!({
        "n": v.len(),
        "p50_us": percentile_us(&v, 0.50),
        "p90_us": percentile_us(&v, 0.90),
        "p99_us": percentile_us(&v, 0.99),
        "mean_us": mean * 1e6,
    })
}

/// Calls per second: the tasks' call counts over the time since `started`.
async fn per_second(
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<Result<u64, String>>>,
) -> Result<f64, String> {
    let mut total = 0;
    for t in tasks {
        total += t.await.map_err(s("task"))??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

async fn g2_rate(
    objs: &[BenchRef],
    inflight: usize,
    secs: f64,
    payload: &ByteBuf,
) -> Result<f64, String> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..inflight)
        .map(|i| {
            let o = objs[i % objs.len()].clone();
            let p = payload.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    o.echo(p.clone()).await.map_err(s("G2 call"))?;
                    n += 1;
                }
                Ok::<u64, String>(n)
            })
        })
        .collect();
    per_second(started, tasks).await
}

async fn bare_rate(
    conn: &quinn::Connection,
    inflight: usize,
    secs: f64,
    payload: &[u8],
) -> Result<f64, String> {
    let mut streams = Vec::new();
    for _ in 0..inflight {
        let mut st = BareStream::open(conn).await?;
        st.round_trip(payload).await?; // the stream exists at the server
        streams.push(st);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|mut st| {
            let p = payload.to_vec();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    st.round_trip(&p).await?;
                    n += 1;
                }
                let _ = st.send.finish();
                Ok::<u64, String>(n)
            })
        })
        .collect();
    per_second(started, tasks).await
}

async fn grpc_rate(
    client: &grpc::EchoClient,
    inflight: usize,
    secs: f64,
    payload: &[u8],
) -> Result<f64, String> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..inflight)
        .map(|_| {
            let mut c = client.clone();
            let p = payload.to_vec();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    c.echo(p.clone()).await?;
                    n += 1;
                }
                Ok::<u64, String>(n)
            })
        })
        .collect();
    per_second(started, tasks).await
}

async fn wait_until(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<Duration, String> {
    let t0 = Instant::now();
    while !cond() {
        if t0.elapsed() > limit {
            return Err(format!("{what}: not within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(t0.elapsed())
}

async fn mem_round_trips(
    n: usize,
    warmup: usize,
    payload: &ByteBuf,
) -> Result<Vec<Duration>, String> {
    let net = g2::mem::MemNetwork::new();
    let mut nodes: Vec<Node> = Vec::new();
    for _ in 0..2 {
        let mut b = Node::builder()
            .network("netbench.mem")
            .overlay(g2::pastry::PastryConfig::default())
            .transport(net.endpoint())
            .register::<BenchObject>();
        if let Some(first) = nodes.first() {
            b = b.bootstrap(first.peer().addr.clone());
        }
        nodes.push(b.build().await.map_err(s("in-process node"))?);
    }
    let host = ObjectId::from_u128(nodes[1].id().as_u128());
    let obj: BenchRef = nodes[0]
        .create_with_id::<BenchObject>(host, 0)
        .await
        .map_err(s("create"))?;
    let mut lat = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let t = Instant::now();
        obj.echo(payload.clone()).await.map_err(s("G2 call"))?;
        if i >= warmup {
            lat.push(t.elapsed());
        }
    }
    for n in &nodes {
        n.shutdown();
    }
    Ok(lat)
}

pub async fn client(a: ClientArgs) -> Result<Value, String> {
    let p = &a.params;
    let server_id = hex_id(&a.g2_id)?;
    let bare_id = hex_id(&a.bare_id)?;
    let c = g2_node(
        &a.network,
        a.g2_addr,
        NodeKey::generate().map_err(s("key"))?,
        false,
    )
    .await?;

    // bare quinn: the same TLS set-up as a G2 node's, its own endpoint
    let key = NodeKey::generate().map_err(s("key"))?;
    let mut ep = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(s("bare endpoint"))?;
    ep.set_default_client_config(g2::quic::client_config(&a.network, &key).map_err(s("TLS"))?);
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        ep.connect(a.bare_addr, &format!("{:032x}.id.g2", bare_id.as_u128()))
            .map_err(s("bare connect"))?,
    )
    .await
    .map_err(|_| "bare connect: timed out".to_string())?
    .map_err(s("bare connect"))?;

    // 1. round trips. The object's GUID is the server's id: the server is its root.
    let obj: BenchRef = c
        .create_with_id::<BenchObject>(ObjectId::from_u128(server_id.as_u128()), 0)
        .await
        .map_err(s("create"))?;
    if !c.hosted_objects().is_empty() {
        return Err("the echo object landed on the client".into());
    }
    let payload = ByteBuf::from(vec![0xa5u8; p.payload]);
    let raw = vec![0xa5u8; p.payload];
    let mut bare = BareStream::open(&conn).await?;
    let mut rpc = grpc::EchoClient::connect(a.grpc_addr).await?;
    for _ in 0..p.warmup {
        let r = obj.echo(payload.clone()).await.map_err(s("G2 call"))?;
        if r.len() != p.payload {
            return Err("G2 echo returned the wrong size".into());
        }
        bare.round_trip(&raw).await?;
        if rpc.echo(raw.clone()).await?.len() != p.payload {
            return Err("gRPC echo returned the wrong size".into());
        }
    }
    let stats_before = c.stats();
    let (mut g2_lat, mut bare_lat, mut grpc_lat) = (Vec::new(), Vec::new(), Vec::new());
    while g2_lat.len() < p.round_trips {
        let k = 1000.min(p.round_trips - g2_lat.len());
        for _ in 0..k {
            let t = Instant::now();
            obj.echo(payload.clone()).await.map_err(s("G2 call"))?;
            g2_lat.push(t.elapsed());
        }
        for _ in 0..k {
            let t = Instant::now();
            bare.round_trip(&raw).await?;
            bare_lat.push(t.elapsed());
        }
        for _ in 0..k {
            let t = Instant::now();
            rpc.echo(raw.clone()).await?;
            grpc_lat.push(t.elapsed());
        }
    }
    let stats_after = c.stats();
    let _ = bare.send.finish();
    let g2 = stats(g2_lat);
    let bare_s = stats(bare_lat);
    let grpc_s = stats(grpc_lat);
    let ratio = |k: &str| g2[k].as_f64().unwrap_or(0.0) / bare_s[k].as_f64().unwrap_or(1.0);
    let rtt = json!({
        "payload": p.payload,
        "g2": g2,
        "bare_quinn": bare_s,
        "grpc_tonic": grpc_s,
        "ratio_p50": ratio("p50_us"),
        "ratio_p99": ratio("p99_us"),
        "g2_cache_hits": stats_after.cache_hits - stats_before.cache_hits,
        "g2_forwarded_by_client": stats_after.requests_forwarded - stats_before.requests_forwarded,
    });

    // for the diagnosis: the same call between two nodes of this process on the
    // in-process transport (no QUIC, no sockets): the runtime's own share
    let mem = mem_round_trips(p.round_trips, p.warmup, &payload).await?;
    let rtt = {
        let mut r = rtt;
        r["g2_in_process_mem"] = stats(mem);
        r
    };

    // 2. calls per second with `inflight` outstanding
    let mut many = Vec::new();
    for i in 0..p.inflight as u128 {
        // GUIDs just after the server's id: the server is their root
        let id = ObjectId::from_u128(server_id.as_u128().wrapping_add(i + 1));
        many.push(
            c.create_with_id::<BenchObject>(id, 0)
                .await
                .map_err(s("create"))?,
        );
    }
    for o in &many {
        o.echo(payload.clone()).await.map_err(s("G2 call"))?;
    }
    let one = std::slice::from_ref(&obj);
    let g2_one = g2_rate(one, p.inflight, p.throughput_secs, &payload).await?;
    let bare_rate_v = bare_rate(&conn, p.inflight, p.throughput_secs, &raw).await?;
    let g2_many = g2_rate(&many, p.inflight, p.throughput_secs, &payload).await?;
    let grpc_rate_v = grpc_rate(&rpc, p.inflight, p.throughput_secs, &raw).await?;
    let throughput = json!({
        "inflight": p.inflight,
        "seconds": p.throughput_secs,
        "g2_one_object_cps": g2_one,
        "g2_spread_objects_cps": g2_many,
        "bare_quinn_streams_cps": bare_rate_v,
        "grpc_tonic_cps": grpc_rate_v,
        "g2_one_object_vs_grpc": g2_one / grpc_rate_v,
    });
    conn.close(0u32.into(), b"done");

    // 3. migration on join, then on a graceful leave
    let mut tries = 0;
    let bkey = loop {
        let k = NodeKey::generate().map_err(s("key"))?;
        let g = k.id().key();
        if g.distance(server_id.key()) < g.distance(c.id().key()) {
            break k;
        }
        tries += 1;
        if tries > 10_000 {
            return Err("no key landed next to the server".into());
        }
    };
    let gid = ObjectId::from_u128(bkey.id().as_u128());
    let big: BenchRef = c
        .create_with_id::<BenchObject>(gid, p.state_bytes)
        .await
        .map_err(s("create"))?;
    if big.ballast_len().await.map_err(s("G2 call"))? != p.state_bytes
        || !c.hosted_objects().is_empty()
    {
        return Err("the big object is not where expected".into());
    }
    let t0 = Instant::now();
    let b = g2_node(&a.network, a.g2_addr, bkey, true).await?;
    let joined = t0.elapsed();
    let hosted = |n: &Node| n.hosted_objects().iter().any(|(o, _)| *o == gid);
    wait_until(
        "migration to the joining node",
        Duration::from_secs(30),
        || hosted(&b),
    )
    .await?;
    let served = t0.elapsed();
    let via_b = b.reference::<BenchRef>(gid);
    if via_b.ballast_len().await.map_err(s("G2 call via B"))? != p.state_bytes {
        return Err("the migrated object lost state".into());
    }
    let first_call = t0.elapsed();
    let t1 = Instant::now();
    let leaver = b.clone();
    let leave = tokio::spawn(async move { leaver.leave().await });
    let handed = wait_until("hand-off on leave", Duration::from_secs(30), || !hosted(&b)).await?;
    tokio::time::timeout(Duration::from_secs(30), leave)
        .await
        .map_err(|_| "leave did not finish".to_string())?
        .map_err(s("leave task"))?
        .map_err(s("leave"))?;
    let left = t1.elapsed();
    let back = big.ballast_len().await.map_err(s("G2 call after leave"))?;
    if back != p.state_bytes {
        return Err("the object lost state on the leave".into());
    }
    let migration = json!({
        "state_bytes": p.state_bytes,
        "join_ms": joined.as_secs_f64() * 1e3,
        "join_to_hosted_ms": served.as_secs_f64() * 1e3,
        "join_to_first_call_ms": first_call.as_secs_f64() * 1e3,
        "leave_handoff_ms": handed.as_secs_f64() * 1e3,
        "leave_total_ms": left.as_secs_f64() * 1e3,
    });
    c.shutdown();
    Ok(json!({ "rtt": rtt, "throughput": throughput, "migration": migration }))
}
