//! `netbench`: G2 over real QUIC between processes on loopback, against a bare
//! quinn baseline and a gRPC baseline (tonic over plain HTTP/2) measured in the
//! same run (issue 5, "Benchmarks").
//!
//! ```sh
//! cargo run --release -p g2-volunteer --example netbench -- [--placement same|split|both] [--json]
//! ```
//!
//! The program re-executes itself: `netbench serve` is the server process (a
//! volunteer built with this library, hosting the benchmark objects, plus a bare
//! quinn echo endpoint and a tonic gRPC echo server) and `netbench client` the
//! client process (a G2 node that joins through the server, plus a bare quinn
//! client and a tonic client). Each runs under
//! `taskset -c CPU`: `same` pins both to CPU 0, `split` the server to CPU 0 and
//! the client to CPU 1. The TSP part runs `tsp-islands volunteer` processes and a
//! `tsp-islands run --connect` client (see `tsp` below for the CPU budget).
//!
//! Measured, per placement:
//! 1. sequential round trips (G2 call on an object hosted by the server, one hop,
//!    location cached; bare quinn: one long-lived bidirectional stream, 4-byte
//!    big-endian length + payload, echoed back; gRPC: a unary `Echo` call on one
//!    HTTP/2 connection, the payload as the message with a pass-through codec, no
//!    protobuf), interleaved in blocks of 1000 so all see the same machine
//!    conditions; p50 and p99;
//! 2. calls per second with `--inflight` calls outstanding: G2 = that many tasks
//!    each calling in a loop (on one object, and spread over as many objects); bare
//!    quinn = that many bidirectional streams on one connection, one task each,
//!    each doing request/response in a loop; gRPC = that many tasks calling in a
//!    loop through clones of one channel (one HTTP/2 connection);
//! 3. migration of an object with `--state-bytes` of state: created on the server
//!    under a GUID equal to the id of a key generated for a node B (keys are drawn
//!    until that id is closer to the server than to the client, so the object
//!    starts on the server); B then joins (in the client process) and, being the
//!    GUID's root, receives the object. Timed from the start of B's join to B
//!    hosting it; then B leaves gracefully and the hand-off back is timed too.
//!
//! Every child process is killed when the orchestrator exits (guards; the
//! children also exit when their stdin closes) and every wait is bounded.

mod bench_object;
mod cli;
mod client;
mod grpc;
mod orchestrator;
mod server;
mod tsp;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use g2::NodeId;

use crate::cli::{Cli, Cmd};
use crate::client::client;
use crate::orchestrator::orchestrate;
use crate::server::serve;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Cmd::Serve(a)) => child_runtime().and_then(|rt| {
            rt.block_on(async { tokio::spawn(serve(a)).await.map_err(s("server task"))? })
        }),
        Some(Cmd::Client(a)) => child_runtime().and_then(|rt| {
            // on a worker thread, as application code runs: the future given to
            // block_on runs on the main thread, and every wake-up would then cross
            // threads
            let v =
                rt.block_on(async { tokio::spawn(client(a)).await.map_err(s("client task"))? })?;
            println!("RESULT {v}");
            Ok(())
        }),
        None => orchestrate(&cli.opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netbench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A child's runtime: as many workers as CPUs it may run on (1 when pinned).
fn child_runtime() -> Result<tokio::runtime::Runtime, String> {
    // a child exits when the orchestrator goes (its stdin closes) and in any case
    // after an hour
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(3600));
        std::process::exit(3);
    });
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cpus)
        .enable_all()
        .build()
        .map_err(|e| format!("starting tokio: {e}"))
}

fn s<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}

fn hex_id(h: &str) -> Result<NodeId, String> {
    u128::from_str_radix(h, 16)
        .map(NodeId::from_u128)
        .map_err(|e| format!("bad id {h}: {e}"))
}
