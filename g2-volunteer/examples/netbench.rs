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

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use clap::Parser;
use g2::prelude::*;
use g2::quic::{NodeKey, QuicConfig, QuicTransport};
use g2::{NodeAddr, NodeId};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// the benchmark object

#[g2::remote]
pub trait Bench {
    /// Returns its argument.
    async fn echo(&mut self, data: ByteBuf) -> ByteBuf;
    /// The size of the object's state.
    async fn ballast_len(&mut self) -> u64;
}

#[derive(Serialize, Deserialize)]
struct BenchObject {
    #[serde(with = "serde_bytes")]
    ballast: Vec<u8>,
}

impl Object for BenchObject {
    const TYPE_NAME: &'static str = "netbench.Object";
    type Init = u64;
    type Ref = BenchRef;
    fn activate(bytes: u64) -> Self {
        BenchObject {
            ballast: (0..bytes).map(|i| (i % 251) as u8).collect(),
        }
    }
}

impl Bench for BenchObject {
    async fn echo(&mut self, data: ByteBuf) -> ByteBuf {
        data
    }
    async fn ballast_len(&mut self) -> u64 {
        self.ballast.len() as u64
    }
}

// ---------------------------------------------------------------------------
// command line

#[derive(Parser, Debug)]
#[command(
    about = "G2 over QUIC between two processes vs bare quinn; migration; TSP speed-up",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    opts: Opts,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// (internal) the server process.
    Serve(ServeArgs),
    /// (internal) the client process.
    Client(ClientArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Placement {
    /// Server and client pinned to CPU 0.
    Same,
    /// Server on CPU 0, client on CPU 1.
    Split,
    /// Both of the above.
    Both,
    /// Neither: only the TSP speed-up.
    None,
}

#[derive(clap::Args, Debug, Clone)]
struct Opts {
    /// Where the two processes run.
    #[arg(long, value_enum, default_value = "both")]
    placement: Placement,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    params: Params,
    /// Do not pin processes (when `taskset` is missing).
    #[arg(long)]
    no_taskset: bool,
    /// Skip the TSP speed-up measurement.
    #[arg(long)]
    skip_tsp: bool,
    /// The `tsp-islands` binary (default: built with cargo next to this one).
    #[arg(long)]
    tsp_bin: Option<PathBuf>,
    /// Arguments of the TSP runs (`tsp-islands run --connect ... <these>`).
    #[arg(
        long,
        default_value = "--instance ch150 --islands 16 --epochs 200 --generations 20"
    )]
    tsp_args: String,
    /// Rounds of the three TSP runs (one volunteer, two pinned, two floating);
    /// speed-ups are taken from the medians (this VM's CPU speed drifts by
    /// 10-20% from minute to minute).
    #[arg(long, default_value_t = 3)]
    tsp_rounds: usize,
}

#[derive(clap::Args, Debug, Clone)]
struct Params {
    /// Payload bytes of each round trip.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Sequential round trips measured for each of G2 and bare quinn.
    #[arg(long, default_value_t = 20_000)]
    round_trips: usize,
    /// Round trips of each kind before measuring.
    #[arg(long, default_value_t = 2_000)]
    warmup: usize,
    /// Calls in flight for the throughput measurement.
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// Seconds of each throughput measurement.
    #[arg(long, default_value_t = 3.0)]
    throughput_secs: f64,
    /// State of the migrated object, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    state_bytes: u64,
}

#[derive(clap::Args, Debug, Clone)]
struct ServeArgs {
    #[arg(long)]
    network: String,
}

#[derive(clap::Args, Debug, Clone)]
struct ClientArgs {
    #[arg(long)]
    network: String,
    /// The server volunteer's address and id (hex).
    #[arg(long)]
    g2_addr: SocketAddr,
    #[arg(long)]
    g2_id: String,
    /// The bare quinn echo endpoint's address and id (hex).
    #[arg(long)]
    bare_addr: SocketAddr,
    #[arg(long)]
    bare_id: String,
    /// The tonic gRPC echo server's address.
    #[arg(long)]
    grpc_addr: SocketAddr,
    #[command(flatten)]
    params: Params,
}

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

// ---------------------------------------------------------------------------
// server process

fn bare_transport() -> Arc<quinn::TransportConfig> {
    // as the G2 transport's, but with bidirectional streams for request/response
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(1024u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    Arc::new(t)
}

async fn serve(a: ServeArgs) -> Result<(), String> {
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
        if n > g2::wire::MAX_FRAME {
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

// ---------------------------------------------------------------------------
// the gRPC baseline: tonic, one unary method, the payload passed through as the
// message (no protobuf), so that only the RPC stack is measured

mod grpc {
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::codegen::{BoxFuture, Context, Poll, Service, StdError, http};
    use tonic::{Request, Response, Status};

    /// The method's path.
    pub const ECHO: &str = "/netbench.Echo/Echo";

    /// Messages are the raw payload bytes.
    #[derive(Clone, Copy, Default)]
    pub struct RawCodec;

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawCodec;
        type Decoder = RawCodec;
        fn encoder(&mut self) -> Self::Encoder {
            RawCodec
        }
        fn decoder(&mut self) -> Self::Decoder {
            RawCodec
        }
    }

    impl Encoder for RawCodec {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            bytes::BufMut::put_slice(dst, &item);
            Ok(())
        }
    }

    impl Decoder for RawCodec {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            let mut v = vec![0u8; bytes::Buf::remaining(src)];
            bytes::Buf::copy_to_slice(src, &mut v);
            Ok(Some(v))
        }
    }

    /// The server side, written as tonic's generated code would be.
    #[derive(Clone, Copy)]
    pub struct EchoServer;

    impl tonic::server::NamedService for EchoServer {
        const NAME: &'static str = "netbench.Echo";
    }

    struct Echo;

    impl tonic::server::UnaryService<Vec<u8>> for Echo {
        type Response = Vec<u8>;
        type Future = std::future::Ready<Result<Response<Vec<u8>>, Status>>;
        fn call(&mut self, request: Request<Vec<u8>>) -> Self::Future {
            std::future::ready(Ok(Response::new(request.into_inner())))
        }
    }

    impl<B> Service<http::Request<B>> for EchoServer
    where
        B: tonic::codegen::Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<B>) -> Self::Future {
            Box::pin(async move {
                if req.uri().path() == ECHO {
                    Ok(tonic::server::Grpc::new(RawCodec).unary(Echo, req).await)
                } else {
                    Ok(Status::unimplemented(req.uri().path().to_string()).into_http())
                }
            })
        }
    }

    /// A client of the echo method over one channel (clones share its connection).
    #[derive(Clone)]
    pub struct EchoClient(tonic::client::Grpc<tonic::transport::Channel>);

    impl EchoClient {
        pub async fn connect(addr: std::net::SocketAddr) -> Result<Self, String> {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| format!("gRPC endpoint: {e}"))?
                .tcp_nodelay(true)
                .connect()
                .await
                .map_err(|e| format!("gRPC connect: {e}"))?;
            Ok(Self(tonic::client::Grpc::new(channel)))
        }

        pub async fn echo(&mut self, payload: Vec<u8>) -> Result<Vec<u8>, String> {
            self.0
                .ready()
                .await
                .map_err(|e| format!("gRPC not ready: {e}"))?;
            let path = http::uri::PathAndQuery::from_static(ECHO);
            self.0
                .unary(Request::new(payload), path, RawCodec)
                .await
                .map(Response::into_inner)
                .map_err(|e| format!("gRPC call: {e}"))
        }
    }
}

// ---------------------------------------------------------------------------
// client process

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

async fn client(a: ClientArgs) -> Result<Value, String> {
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

// ---------------------------------------------------------------------------
// orchestrator

/// A child process killed (and reaped) when dropped.
struct Proc {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, stderr: Stdio) -> Result<Self, String> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("starting {name}: {e}"))?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name: name.to_string(),
            child,
            lines: rx,
        })
    }

    /// The next line satisfying `pred` within `limit`; all lines read are kept.
    fn line(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> Result<String, String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if pred(&l) => return Ok(l),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "{}: no expected output within {limit:?}",
                        self.name
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(format!(
                        "{} ended ({status}) without the expected output",
                        self.name
                    ));
                }
            }
        }
    }
}

fn pinned(cpus: Option<&str>, prog: &Path) -> Command {
    match cpus {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(c).arg(prog);
            cmd
        }
        None => Command::new(prog),
    }
}

/// `(load average, rustc processes)` right now.
fn load() -> (String, usize) {
    let avg = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let rustc = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "rustc")
                })
                .count()
        })
        .unwrap_or(0);
    (avg, rustc)
}

fn load_json() -> Value {
    let (avg, rustc) = load();
    json!({ "loadavg": avg, "rustc": rustc })
}

fn orchestrate(o: &Opts) -> Result<(), String> {
    let pin = if o.no_taskset {
        false
    } else if Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        true
    } else {
        return Err("taskset not found (util-linux); pass --no-taskset to run unpinned".into());
    };
    let cpu = |c: &'static str| pin.then_some(c);
    let placements: &[(&str, &str, &str)] = match o.placement {
        Placement::Same => &[("same", "0", "0")],
        Placement::Split => &[("split", "0", "1")],
        Placement::Both => &[("same", "0", "0"), ("split", "0", "1")],
        Placement::None => &[],
    };
    let exe = std::env::current_exe().map_err(s("current_exe"))?;
    let mut results = serde_json::Map::new();
    for &(name, server_cpu, client_cpu) in placements {
        eprintln!(
            "netbench: placement {name} (server CPU {server_cpu}, client CPU {client_cpu})..."
        );
        let before = load_json();
        let r = network_bench(&exe, name, cpu(server_cpu), cpu(client_cpu), &o.params)?;
        let mut r = r.as_object().cloned().unwrap_or_default();
        r.insert("load_before".into(), before);
        r.insert("load_after".into(), load_json());
        r.insert("server_cpu".into(), json!(server_cpu));
        r.insert("client_cpu".into(), json!(client_cpu));
        print_network(name, &Value::Object(r.clone()));
        results.insert(name.to_string(), Value::Object(r));
    }
    let tsp = if o.skip_tsp {
        Value::Null
    } else {
        let t = tsp_bench(o, pin)?;
        print_tsp(&t);
        t
    };
    if o.json {
        println!(
            "{}",
            json!({ "experiment": "netbench", "pinned": pin, "placements": results, "tsp": tsp })
        );
    }
    Ok(())
}

fn network_bench(
    exe: &Path,
    name: &str,
    server_cpu: Option<&str>,
    client_cpu: Option<&str>,
    p: &Params,
) -> Result<Value, String> {
    let network = format!("netbench-{}-{name}", std::process::id());
    let mut cmd = pinned(server_cpu, exe);
    cmd.args(["serve", "--network", &network]);
    let mut server = Proc::spawn("server", cmd, Stdio::inherit())?;
    let ready = server.line(Duration::from_secs(60), |l| l.starts_with("READY "))?;
    let f: Vec<&str> = ready.split_whitespace().collect();
    if f.len() != 6 {
        return Err(format!("server said {ready:?}"));
    }
    let mut cmd = pinned(client_cpu, exe);
    cmd.args([
        "client",
        "--network",
        &network,
        "--g2-addr",
        f[1],
        "--g2-id",
        f[2],
        "--bare-addr",
        f[3],
        "--bare-id",
        f[4],
        "--grpc-addr",
        f[5],
    ]);
    cmd.args([
        "--payload".to_string(),
        p.payload.to_string(),
        "--round-trips".into(),
        p.round_trips.to_string(),
        "--warmup".into(),
        p.warmup.to_string(),
        "--inflight".into(),
        p.inflight.to_string(),
        "--throughput-secs".into(),
        p.throughput_secs.to_string(),
        "--state-bytes".into(),
        p.state_bytes.to_string(),
    ]);
    let mut client = Proc::spawn("client", cmd, Stdio::inherit())?;
    let line = client.line(Duration::from_secs(600), |l| l.starts_with("RESULT "))?;
    drop(client);
    drop(server);
    serde_json::from_str(&line["RESULT ".len()..]).map_err(s("client result"))
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut x = v;
    for k in path {
        x = &x[*k];
    }
    x.as_f64().unwrap_or(f64::NAN)
}

fn print_network(name: &str, r: &Value) {
    println!();
    println!(
        "== placement {name}: server CPU {}, client CPU {} (load before {}, rustc {}; after {}, rustc {})",
        r["server_cpu"].as_str().unwrap_or("-"),
        r["client_cpu"].as_str().unwrap_or("-"),
        r["load_before"]["loadavg"].as_str().unwrap_or(""),
        r["load_before"]["rustc"],
        r["load_after"]["loadavg"].as_str().unwrap_or(""),
        r["load_after"]["rustc"],
    );
    let rt = &r["rtt"];
    println!(
        "round trip, {} B payload, {} sequential each  p50 us    p99 us   mean us",
        rt["payload"], rt["g2"]["n"]
    );
    for (label, k) in [
        ("  G2 call (1 hop, cached)", "g2"),
        ("  bare quinn echo", "bare_quinn"),
        ("  gRPC echo (tonic, HTTP/2)", "grpc_tonic"),
        ("  (G2 call, in-process mem transport)", "g2_in_process_mem"),
    ] {
        println!(
            "{label:<45} {:>8.1} {:>9.1} {:>9.1}",
            f(rt, &[k, "p50_us"]),
            f(rt, &[k, "p99_us"]),
            f(rt, &[k, "mean_us"])
        );
    }
    println!(
        "{:<45} {:>8.2} {:>9.2}   (target <= 1.3)",
        "  G2 / bare",
        f(rt, &["ratio_p50"]),
        f(rt, &["ratio_p99"])
    );
    let t = &r["throughput"];
    println!(
        "calls/s with {} in flight, {} s each",
        t["inflight"], t["seconds"]
    );
    println!(
        "  G2, {} tasks on one object            {:>10.0}",
        t["inflight"],
        f(t, &["g2_one_object_cps"])
    );
    println!(
        "  G2, {} tasks on {} objects             {:>10.0}",
        t["inflight"],
        t["inflight"],
        f(t, &["g2_spread_objects_cps"])
    );
    println!(
        "  bare quinn, {} streams on 1 connection {:>10.0}",
        t["inflight"],
        f(t, &["bare_quinn_streams_cps"])
    );
    println!(
        "  gRPC (tonic), {} tasks on 1 channel   {:>10.0}",
        t["inflight"],
        f(t, &["grpc_tonic_cps"])
    );
    println!(
        "  G2 one object / gRPC                    {:>10.2}   (target >= 2)",
        f(t, &["g2_one_object_vs_grpc"])
    );
    let m = &r["migration"];
    println!(
        "migration of a {} B object (server -> joining node B -> back on B's leave)",
        m["state_bytes"]
    );
    println!(
        "  B's join (build() returned)                {:>8.1} ms",
        f(m, &["join_ms"])
    );
    println!(
        "  join start -> object hosted by B           {:>8.1} ms",
        f(m, &["join_to_hosted_ms"])
    );
    println!(
        "  join start -> first call served by B       {:>8.1} ms",
        f(m, &["join_to_first_call_ms"])
    );
    println!(
        "  B.leave(): object handed off               {:>8.1} ms",
        f(m, &["leave_handoff_ms"])
    );
    println!(
        "  B.leave(): returned                        {:>8.1} ms",
        f(m, &["leave_total_ms"])
    );
}

// ---------------------------------------------------------------------------
// TSP on 1 vs 2 volunteer processes

fn tsp_binary(o: &Opts) -> Result<PathBuf, String> {
    if let Some(b) = &o.tsp_bin {
        return Ok(b.clone());
    }
    let exe = std::env::current_exe().map_err(s("current_exe"))?;
    // <target>/<profile>/examples/netbench
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target dir")?;
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&ws)
        .args(["build", "-q", "-p", "tsp-islands"]);
    if !cfg!(feature = "rocksdb") {
        // built as this example was: without RocksDB (the benchmark needs none)
        cmd.arg("--no-default-features");
    }
    if release {
        cmd.arg("--release");
    }
    eprintln!(
        "netbench: building tsp-islands ({})...",
        if release { "release" } else { "debug" }
    );
    let ok = cmd.status().is_ok_and(|s| s.success());
    let bin = profile_dir.join("tsp-islands");
    if !bin.exists() {
        return Err(format!(
            "{} not found{}; build it or pass --tsp-bin",
            bin.display(),
            if ok { "" } else { " (cargo build failed)" }
        ));
    }
    Ok(bin)
}

/// Writes a volunteer key into `dir/node.key`, as `NodeKey::load_or_create` reads it.
fn write_key(dir: &Path, kp: &rcgen::KeyPair) -> Result<NodeId, String> {
    std::fs::create_dir_all(dir).map_err(s("data dir"))?;
    std::fs::write(dir.join("node.key"), kp.serialize_pem()).map_err(s("writing a key"))?;
    Ok(g2::quic::node_id_of_public_key(&kp.public_key_der()))
}

/// Two volunteer keys whose ids are about half the ring apart, so that each
/// volunteer is the root of a comparable share of the GUID space.
fn volunteer_keys(dir: &Path) -> Result<[PathBuf; 2], String> {
    let new_key = || rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(s("key"));
    let d1 = dir.join("v1");
    let d2 = dir.join("v2");
    let id1 = write_key(&d1, &new_key()?)?;
    for _ in 0..10_000 {
        let kp = new_key()?;
        let id = g2::quic::node_id_of_public_key(&kp.public_key_der());
        // top three bits of (id - id1) = 100: between 1/2 and 5/8 of the ring on
        let gap = id.as_u128().wrapping_sub(id1.as_u128());
        if gap >> 125 == 0b100 {
            write_key(&d2, &kp)?;
            return Ok([d1, d2]);
        }
    }
    Err("no second key half the ring away".into())
}

fn free_udp_port() -> Result<u16, String> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").map_err(s("finding a port"))?;
    Ok(sock.local_addr().map_err(s("finding a port"))?.port())
}

/// One TSP run: volunteers with (cpu, data dir), the client on `client_cpus`.
fn tsp_case(
    bin: &Path,
    label: &str,
    volunteers: &[(Option<&str>, &Path)],
    client_cpus: Option<&str>,
    args: &[String],
    log_dir: &Path,
) -> Result<Value, String> {
    let network = format!("netbench-tsp-{}-{label}", std::process::id());
    let mut procs = Vec::new();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for (i, (cpu, dir)) in volunteers.iter().enumerate() {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()?));
        let mut cmd = pinned(*cpu, bin);
        cmd.arg("volunteer")
            .args(["--network", &network, "--listen", &addr.to_string()])
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", "warn");
        if let Some(first) = addrs.first() {
            cmd.args(["--bootstrap", &first.to_string()]);
        }
        let log = std::fs::File::create(log_dir.join(format!("{label}-v{}.log", i + 1)))
            .map_err(s("log file"))?;
        let mut p = Proc::spawn(&format!("volunteer {}", i + 1), cmd, Stdio::from(log))?;
        p.line(Duration::from_secs(60), |l| l.contains("listening on"))?;
        procs.push(p);
        addrs.push(addr);
    }
    let before = load_json();
    // where the islands are: sample the volunteers' status during the run
    let stop = Arc::new(AtomicBool::new(false));
    let samples: Arc<Mutex<Vec<Vec<usize>>>> = Arc::default();
    let poller = {
        let (stop, samples, addrs) = (stop.clone(), samples.clone(), addrs.clone());
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            std::thread::sleep(Duration::from_secs(2));
            for _ in 0..3 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let counts: Vec<usize> = addrs
                    .iter()
                    .map(|a| {
                        rt.block_on(async {
                            tokio::time::timeout(Duration::from_secs(5), g2_volunteer::status(*a))
                                .await
                                .ok()
                                .and_then(Result::ok)
                                .map_or(usize::MAX, |st| st.objects.len())
                        })
                    })
                    .collect();
                if let Ok(mut s) = samples.lock() {
                    s.push(counts);
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        })
    };
    let mut cmd = pinned(client_cpus, bin);
    cmd.arg("run")
        .args([
            "--connect",
            &addrs[0].to_string(),
            "--network",
            &network,
            "--json",
        ])
        .args(args)
        .env("RUST_LOG", "warn");
    let log = std::fs::File::create(log_dir.join(format!("{label}-client.log")))
        .map_err(s("log file"))?;
    let mut client = Proc::spawn("tsp client", cmd, Stdio::from(log))?;
    let line = client.line(Duration::from_secs(900), |l| l.starts_with('{'));
    stop.store(true, Ordering::Relaxed);
    let after = load_json();
    let _ = poller.join();
    drop(client);
    drop(procs);
    let line = line.map_err(|e| format!("{e} (logs in {})", log_dir.display()))?;
    let out: Value = serde_json::from_str(&line).map_err(s("tsp-islands --json"))?;
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    Ok(json!({
        "label": label,
        "volunteers": volunteers.len(),
        "volunteer_cpus": volunteers.iter().map(|(c, _)| c.unwrap_or("any")).collect::<Vec<_>>(),
        "client_cpus": client_cpus.unwrap_or("any"),
        "elapsed_ms": out["elapsed_ms"],
        "tour_blake3": out["tour_blake3"],
        "best_length": out["best_length"],
        "islands_on_volunteers_samples": samples,
        "load_before": before,
        "load_after": after,
    }))
}

/// TSP wall time with one volunteer process against two. The client joins the
/// Pastry ring and hosts the islands whose GUIDs fall in its share, so it is
/// counted as compute: with one volunteer, the volunteer and the client share
/// CPU 0 (a one-CPU budget); with two, the second volunteer gets CPU 1 (a
/// two-CPU budget) and the client is either kept on CPU 0 with the first
/// volunteer (`pinned`) or allowed on both CPUs (`floating`).
fn tsp_bench(o: &Opts, pin: bool) -> Result<Value, String> {
    let bin = tsp_binary(o)?;
    let dir = std::env::temp_dir().join(format!("netbench-tsp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(s("temp dir"))?;
    let [d1, d2] = volunteer_keys(&dir)?;
    let args: Vec<String> = o.tsp_args.split_whitespace().map(String::from).collect();
    let cpu = |c: &'static str| pin.then_some(c);
    let rounds = o.tsp_rounds.max(1);
    let mut runs: Vec<[Value; 3]> = Vec::new();
    let mut ceilings: Vec<(f64, f64)> = Vec::new();
    for round in 1..=rounds {
        eprintln!("netbench: TSP round {round}/{rounds}, 1 volunteer...");
        let one = tsp_case(&bin, "one", &[(cpu("0"), &d1)], cpu("0"), &args, &dir)?;
        eprintln!(
            "netbench: TSP round {round}/{rounds}, 2 volunteers, client pinned with volunteer 1..."
        );
        let two_pinned = tsp_case(
            &bin,
            "two-pinned",
            &[(cpu("0"), &d1), (cpu("1"), &d2)],
            cpu("0"),
            &args,
            &dir,
        )?;
        eprintln!("netbench: TSP round {round}/{rounds}, 2 volunteers, client on both CPUs...");
        let two_float = tsp_case(
            &bin,
            "two-floating",
            &[(cpu("0"), &d1), (cpu("1"), &d2)],
            cpu("0,1"),
            &args,
            &dir,
        )?;
        runs.push([one, two_pinned, two_float]);
        if pin {
            eprintln!(
                "netbench: TSP round {round}/{rounds}, the same GA without G2 on one CPU and split over two..."
            );
            ceilings.push(hardware_ceiling(&bin, &args)?);
        }
    }
    let median = |k: usize| {
        let mut v: Vec<f64> = runs.iter().map(|r| f(&r[k], &["elapsed_ms"])).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (m1, mp, mf) = (median(0), median(1), median(2));
    let tour = &runs[0][0]["tour_blake3"];
    let same_tour = runs.iter().flatten().all(|c| &c["tour_blake3"] == tour);
    let [one, two_pinned, two_float] = runs[0].clone();
    let ceiling_median = {
        let mut v: Vec<f64> = ceilings.iter().map(|(a, b)| a / b).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let r = json!({
        "args": o.tsp_args,
        "one": one,
        "two_pinned": two_pinned,
        "two_floating": two_float,
        "rounds_ms": runs
            .iter()
            .map(|r| r.iter().map(|c| f(c, &["elapsed_ms"])).collect::<Vec<_>>())
            .collect::<Vec<_>>(),
        "median_ms": { "one": m1, "two_pinned": mp, "two_floating": mf },
        "hardware_ceiling": ceilings
            .iter()
            .map(|(one, two)| json!({ "one_cpu_ms": one, "two_cpus_ms": two, "speedup": one / two }))
            .collect::<Vec<_>>(),
        "hardware_ceiling_median": ceiling_median,
        "speedup_pinned": m1 / mp,
        "speedup_floating": m1 / mf,
        "same_tour": same_tour,
    });
    let _ = std::fs::remove_dir_all(&dir);
    Ok(r)
}

/// What this machine allows at best, measured in the same round: the same GA
/// without G2 (`--sequential`, one thread), all islands on CPU 0, against half
/// of them on CPU 0 and half on CPU 1 at the same time (two processes, no
/// communication). Returns the two wall times in ms.
fn hardware_ceiling(bin: &Path, args: &[String]) -> Result<(f64, f64), String> {
    let islands: u32 = args
        .iter()
        .position(|a| a == "--islands")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let with_islands = |n: u32| -> Vec<String> {
        let mut v = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "--islands" {
                it.next();
            } else {
                v.push(a.clone());
            }
        }
        v.extend(["--islands".into(), n.to_string(), "--sequential".into()]);
        v
    };
    let run = |cpu: &str, n: u32| -> Result<std::process::Child, String> {
        pinned(Some(cpu), bin)
            .args(with_islands(n))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(s("sequential GA"))
    };
    let wait = |mut c: std::process::Child| -> Result<(), String> {
        match c.wait().map_err(s("sequential GA"))? {
            st if st.success() => Ok(()),
            st => Err(format!("sequential GA: {st}")),
        }
    };
    let t = Instant::now();
    wait(run("0", islands)?)?;
    let one = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let a = run("0", islands / 2)?;
    let b = run("1", islands - islands / 2)?;
    wait(a)?;
    wait(b)?;
    let two = t.elapsed().as_secs_f64() * 1e3;
    Ok((one, two))
}

fn print_tsp(t: &Value) {
    println!();
    println!(
        "== TSP ({}), wall time of `tsp-islands run --connect`",
        t["args"].as_str().unwrap_or("")
    );
    for k in ["one", "two_pinned", "two_floating"] {
        let c = &t[k];
        println!(
            "  {:<13} volunteers on CPUs {:<8} client on CPU {:<4} {:>9.0} ms  islands on volunteers {} (load {})",
            k,
            c["volunteer_cpus"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join("+"))
                .unwrap_or_default(),
            c["client_cpus"].as_str().unwrap_or(""),
            f(c, &["elapsed_ms"]),
            c["islands_on_volunteers_samples"],
            c["load_before"]["loadavg"].as_str().unwrap_or(""),
        );
    }
    println!(
        "  (first round above) wall ms per round [one, two pinned, two floating]: {}; medians {} / {} / {}",
        t["rounds_ms"],
        f(t, &["median_ms", "one"]),
        f(t, &["median_ms", "two_pinned"]),
        f(t, &["median_ms", "two_floating"])
    );
    if let Some(c) = t["hardware_ceiling"].as_array().filter(|c| !c.is_empty()) {
        println!(
            "  without G2 (--sequential, all islands on CPU 0 vs half on each CPU at once), per round: {}; median speed-up {:.2}",
            c.iter()
                .map(|r| format!(
                    "{:.0} / {:.0} ms = {:.2}",
                    f(r, &["one_cpu_ms"]),
                    f(r, &["two_cpus_ms"]),
                    f(r, &["speedup"])
                ))
                .collect::<Vec<_>>()
                .join(", "),
            f(t, &["hardware_ceiling_median"])
        );
    }
    println!(
        "  speed-up 2 vs 1 (medians): {:.2} (client pinned with volunteer 1), {:.2} (client floating)   (target >= 1.7); same tour in every run: {}",
        f(t, &["speedup_pinned"]),
        f(t, &["speedup_floating"]),
        t["same_tour"]
    );
}
