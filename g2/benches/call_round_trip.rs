//! In-process call round trip over the `mem` transport, one hop: a client on node
//! A calls an object hosted on node B.
//!
//! Criterion measures the mean; a second pass records every latency to print p50,
//! p99 and calls per second, one call at a time and with 64 in flight.
//! `cargo bench -p g2 --bench call_round_trip` (add `-- --json` for a JSON line).

use std::time::{Duration, Instant};

use criterion::Criterion;
use g2::mem::MemNetwork;
use g2::prelude::*;
use g2::testing::Directory;
use serde::{Deserialize, Serialize};

#[g2::remote]
pub trait Echo {
    async fn echo(&mut self, n: u64) -> u64;
}

#[derive(Serialize, Deserialize)]
struct Echoer;

impl Object for Echoer {
    const TYPE_NAME: &'static str = "bench.Echo";
    type Init = ();
    type Ref = EchoRef;
    fn activate(_: ()) -> Self {
        Echoer
    }
}

impl Echo for Echoer {
    async fn echo(&mut self, n: u64) -> u64 {
        n
    }
}

/// Two nodes; an object on the second, a proxy bound to the first.
async fn setup() -> (Vec<Node>, EchoRef) {
    let net = MemNetwork::new();
    let dir = Directory::new();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        nodes.push(
            Node::builder()
                .network("bench")
                .overlay(dir.overlay())
                .transport(net.endpoint())
                .register::<Echoer>()
                .build()
                .await
                .expect("node"),
        );
    }
    // find a GUID whose root is node 1, so every call is one hop from node 0
    let id = loop {
        let id = ObjectId::random();
        if dir.root(id.key()).map(|p| p.id) == Some(nodes[1].id()) {
            break id;
        }
    };
    let r: EchoRef = nodes[0]
        .create_with_id::<Echoer>(id, ())
        .await
        .expect("create");
    assert_eq!(nodes[1].hosted_objects().len(), 1);
    (nodes, r)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let (nodes, echo) = rt.block_on(setup());

    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3));
    c.bench_function("mem call round trip (one hop)", |b| {
        b.to_async(&rt)
            .iter(|| async { echo.echo(7).await.expect("call") })
    });

    // latency distribution, one call at a time
    let n = 20_000;
    let (lat, seq_rate) = rt.block_on(async {
        let mut lat = Vec::with_capacity(n);
        let start = Instant::now();
        for i in 0..n as u64 {
            let t = Instant::now();
            echo.echo(i).await.expect("call");
            lat.push(t.elapsed());
        }
        (lat, n as f64 / start.elapsed().as_secs_f64())
    });
    let mut sorted = lat;
    sorted.sort();
    // throughput with 64 calls in flight
    let inflight = 64;
    let per_task = 2_000;
    let par_rate = rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..inflight)
            .map(|_| {
                let e = echo.clone();
                tokio::spawn(async move {
                    for i in 0..per_task {
                        e.echo(i).await.expect("call");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        (inflight * per_task) as f64 / start.elapsed().as_secs_f64()
    });
    let p50 = percentile(&sorted, 0.5);
    let p99 = percentile(&sorted, 0.99);
    println!(
        "mem one-hop round trip: p50 {:.1} us, p99 {:.1} us, {:.0} calls/s sequential, {:.0} calls/s with {inflight} in flight",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        seq_rate,
        par_rate
    );
    if json {
        println!(
            "{}",
            serde_json::json!({
                "benchmark": "mem_call_round_trip",
                "p50_us": p50.as_secs_f64() * 1e6,
                "p99_us": p99.as_secs_f64() * 1e6,
                "calls_per_s_sequential": seq_rate,
                "calls_per_s_64_in_flight": par_rate,
            })
        );
    }
    for n in &nodes {
        n.shutdown();
    }
}
