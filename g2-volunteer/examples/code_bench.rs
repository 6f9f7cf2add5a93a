//! Code download and worker benchmarks, with real processes on 127.0.0.1:
//!
//! * cold start: a volunteer that has never seen the bundle is asked to host
//!   a type it lacks; time from the create to the first answer (fetch,
//!   verify, cache, start a confined worker), and the same after the
//!   volunteer restarted with the bundle in its cache;
//! * round trip: the same echo object linked into the volunteer and hosted in
//!   a worker on that volunteer, called alternately from a client process.
//!
//! ```text
//! cargo run --release -p g2-volunteer --no-default-features --example code_bench -- --json
//! ```
//!
//! This binary is all three parts: the benchmark (the client, which publishes
//! itself), the volunteer (`code_bench volunteer ...`, with the linked type),
//! and, fetched by that volunteer, the worker.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use clap::Parser;
use g2::prelude::*;
use serde::{Deserialize, Serialize};

#[g2::remote]
pub trait Echo {
    async fn echo(&mut self, bytes: serde_bytes::ByteBuf) -> serde_bytes::ByteBuf;
}

#[derive(Serialize, Deserialize)]
struct Linked {
    calls: u64,
}

impl Object for Linked {
    const TYPE_NAME: &'static str = "bench.Linked";
    type Init = ();
    type Ref = EchoRef;
    fn activate(_: ()) -> Self {
        Linked { calls: 0 }
    }
}

impl Echo for Linked {
    async fn echo(&mut self, bytes: serde_bytes::ByteBuf) -> serde_bytes::ByteBuf {
        self.calls += 1;
        bytes
    }
}

#[derive(Serialize, Deserialize)]
struct InWorker {
    calls: u64,
}

impl Object for InWorker {
    const TYPE_NAME: &'static str = "bench.Worker";
    type Init = ();
    type Ref = EchoRef;
    fn activate(_: ()) -> Self {
        InWorker { calls: 0 }
    }
}

impl Echo for InWorker {
    async fn echo(&mut self, bytes: serde_bytes::ByteBuf) -> serde_bytes::ByteBuf {
        self.calls += 1;
        bytes
    }
}

#[derive(Parser)]
struct Args {
    /// Round trips to each object.
    #[arg(long, default_value_t = 5000)]
    calls: usize,
    /// Payload bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<(), String> {
    g2_volunteer::code::sandbox::launch_if_asked();
    g2::worker::serve_if_worker(|w| w.register::<InWorker>());
    if std::env::args().nth(1).as_deref() == Some("volunteer") {
        return g2_volunteer::serve_volunteer_subcommand(|b| b.register::<Linked>());
    }
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(bench(args))
}

struct Host {
    child: Child,
    addr: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_host(network: &str, dir: &Path, key: &str, listen: &str) -> Result<Host, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["volunteer", "--network", network, "--listen", listen])
        .arg("--data-dir")
        .arg(dir)
        .args(["--trusted-publisher", key])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("stdout")?)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    Ok(Host { child, addr })
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn first_answer(client: &Node) -> Result<f64, String> {
    let t = Instant::now();
    let w = client
        .create::<InWorker>(())
        .await
        .map_err(|e| format!("create: {e}"))?;
    w.echo(serde_bytes::ByteBuf::from(vec![1u8]))
        .await
        .map_err(|e| format!("first call: {e}"))?;
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

async fn bench(args: Args) -> Result<(), String> {
    let dir: PathBuf = std::env::temp_dir().join(format!("code-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let key_file = dir.join("publisher.key");
    let key = g2_volunteer::code::PublisherKey::load_or_create(&key_file)
        .map_err(|e| e.to_string())?
        .public_hex();
    let network = "code-bench.g2";
    let host = start_host(network, &dir.join("host"), &key, "127.0.0.1:0")?;
    let addr: std::net::SocketAddr = host.addr.parse().map_err(|e| format!("{e}"))?;
    let client = g2_volunteer::join_as_client(network, addr, g2_volunteer::Routing::Pastry)
        .await
        .map_err(|e| e.to_string())?;
    let t = Instant::now();
    let (_, published) =
        g2_volunteer::code::publish_self(&client, &key_file, &[InWorker::TYPE_NAME]).await?;
    let publish_ms = t.elapsed().as_secs_f64() * 1000.0;
    // cold: never seen the bundle
    let cold_ms = first_answer(&client).await?;
    // round trips, alternating, same host
    let linked = client
        .create::<Linked>(())
        .await
        .map_err(|e| format!("create linked: {e}"))?;
    let worker = client
        .create::<InWorker>(())
        .await
        .map_err(|e| format!("create in worker: {e}"))?;
    let payload = serde_bytes::ByteBuf::from(vec![7u8; args.payload]);
    for _ in 0..200 {
        linked
            .echo(payload.clone())
            .await
            .map_err(|e| e.to_string())?;
        worker
            .echo(payload.clone())
            .await
            .map_err(|e| e.to_string())?;
    }
    let (mut lt, mut wt) = (Vec::new(), Vec::new());
    for _ in 0..args.calls {
        let t = Instant::now();
        linked
            .echo(payload.clone())
            .await
            .map_err(|e| e.to_string())?;
        lt.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        worker
            .echo(payload.clone())
            .await
            .map_err(|e| e.to_string())?;
        wt.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (l50, l99) = (percentile(&mut lt, 0.5), percentile(&mut lt, 0.99));
    let (w50, w99) = (percentile(&mut wt, 0.5), percentile(&mut wt, 0.99));
    let _ = client.leave().await;
    // cached: the same volunteer restarted (same data dir, so same bundle cache)
    let host_addr = host.addr.clone();
    drop(host);
    let host = start_host(network, &dir.join("host"), &key, &host_addr)?;
    let addr: std::net::SocketAddr = host.addr.parse().map_err(|e| format!("{e}"))?;
    let client = g2_volunteer::join_as_client(network, addr, g2_volunteer::Routing::Pastry)
        .await
        .map_err(|e| e.to_string())?;
    g2_volunteer::code::publish_self(&client, &key_file, &[InWorker::TYPE_NAME]).await?;
    let cached_ms = first_answer(&client).await?;
    let _ = client.leave().await;
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
    let size_mib = published.size as f64 / 1048576.0;
    println!("bundle {size_mib:.1} MiB, published in {publish_ms:.0} ms");
    println!("cold start (fetch, verify, cache, confined worker) to first answer: {cold_ms:.0} ms");
    println!("cached start (confined worker) to first answer: {cached_ms:.0} ms");
    println!(
        "round trip, {} calls of {} B: linked p50 {l50:.0} us p99 {l99:.0} us; in a worker p50 {w50:.0} us p99 {w99:.0} us; ratio p50 {:.2}",
        args.calls,
        args.payload,
        w50 / l50
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "bundle_bytes": published.size,
                "publish_ms": publish_ms,
                "cold_start_ms": cold_ms,
                "cached_start_ms": cached_ms,
                "calls": args.calls,
                "payload": args.payload,
                "linked_p50_us": l50, "linked_p99_us": l99,
                "worker_p50_us": w50, "worker_p99_us": w99,
                "ratio_p50": w50 / l50,
            })
        );
    }
    Ok(())
}
