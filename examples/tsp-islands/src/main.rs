//! `tsp-islands`: the G2:P2P paper's sample application (§5), an island genetic
//! algorithm for the travelling salesman problem on TSPLIB instances.
//!
//! Islands are G2 objects spread over the volunteers of a network; each evolves
//! its own population and trades its best tours with its ring neighbours by
//! calling them directly. With a fixed seed the best tour is the same whatever the
//! number of nodes, and the same as `--sequential` (plain Rust, no framework).

mod ga;
mod island;
mod tsplib;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use g2::mem::MemNetwork;
use g2::prelude::*;
use g2::testing::Directory;
use indicatif::{ProgressBar, ProgressStyle};

use crate::ga::{GaParams, Tour, better, run_sequential, tour_blake3};
use crate::island::{IslandInit, IslandRef, TspIsland};
use crate::tsplib::Instance;

/// TSPLIB instances shipped inside the example.
const EMBEDDED: &[(&str, &str)] = &[
    ("berlin52", include_str!("../data/berlin52.tsp")),
    ("eil51", include_str!("../data/eil51.tsp")),
    ("st70", include_str!("../data/st70.tsp")),
    ("ch150", include_str!("../data/ch150.tsp")),
];

/// Island GA for the TSP on a G2 network (in-process by default).
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: Args,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Run the GA (the default): in-process, or as a client of a real network
    /// with `--connect`.
    Run(Args),
    /// Volunteer this machine to a network, able to host islands.
    Volunteer(g2_volunteer::VolunteerArgs),
}

#[derive(clap::Args, Clone, Debug)]
struct Args {
    /// A TSPLIB EUC_2D file, or the name of a shipped instance (berlin52, eil51, st70, ch150).
    #[arg(long, default_value = "berlin52")]
    instance: String,
    /// Volunteer nodes of the in-process network.
    #[arg(long, default_value_t = 8)]
    nodes: usize,
    /// Islands (distributed objects) in the ring.
    #[arg(long, default_value_t = 8)]
    islands: u32,
    /// Epochs; migrants move between ring neighbours after each.
    #[arg(long, default_value_t = 10)]
    epochs: u32,
    /// Generations per epoch.
    #[arg(long, default_value_t = 20)]
    generations: u32,
    /// Seed of every island's random generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
    /// Draw the best tour as SVG to this file.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Run the same GA as plain sequential Rust, without the framework.
    #[arg(long)]
    sequential: bool,
    /// Benchmark: alternate `--sequential` and the in-process network (`--nodes`,
    /// default 1 for this) `--repeat` times and print the median wall times and
    /// their ratio (the framework's overhead).
    #[arg(long, conflicts_with_all = ["sequential", "svg"])]
    overhead: bool,
    /// Benchmark: alternate `--ft none` and `--ft local` (with `--checkpoint-every`
    /// and `--durability`) on the in-process network `--repeat` times and print
    /// the median wall times and their ratio (the cost of local fault tolerance).
    #[arg(long, conflicts_with_all = ["sequential", "svg", "overhead", "connect"])]
    ft_overhead: bool,
    /// Repetitions of each side for `--overhead` and `--ft-overhead`.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Run as a client of a real network, joining through the volunteer at ADDR
    /// (QUIC, Pastry) instead of an in-process network.
    #[arg(long, conflicts_with_all = ["sequential", "overhead"])]
    connect: Option<std::net::SocketAddr>,
    /// The routing overlay: pastry or chord; in-process also `test` (the
    /// test-support full-membership overlay).
    #[arg(long, default_value = "pastry")]
    routing: String,
    /// The overlay's failure-detection timeout, in milliseconds (heartbeats or
    /// stabilisation go at a third of it).
    #[arg(long, default_value_t = 30_000)]
    failure_timeout_ms: u64,
    /// The network name used with `--connect`.
    #[arg(long, default_value = "tsp.g2")]
    network: String,
    /// Fault tolerance of this run's objects: none (graceful migration only) or
    /// local (checkpoints and message logs on each volunteer's disk, replayed
    /// after a restart).
    #[arg(long, default_value = "none")]
    ft: String,
    /// With `--ft local`: what each logged record survives, process (a killed
    /// volunteer process; no fsync) or machine (a machine crash; fsync).
    #[arg(long, default_value = "process")]
    durability: g2::local::Durability,
    /// With `--ft local` in process: checkpoint each island every this many calls
    /// (volunteers of a real network set their own with `--checkpoint-every`).
    #[arg(long, default_value_t = 100)]
    checkpoint_every: u32,
}

impl Args {
    /// The run's policy over `store`, if it has one.
    fn policy(&self, store: std::sync::Arc<dyn g2::Store>) -> Option<g2::local::LocalPolicy> {
        (self.ft == "local").then(|| {
            g2::local::LocalPolicy::new(
                store,
                g2::local::LocalConfig {
                    checkpoint_every_calls: self.checkpoint_every,
                    durability: self.durability,
                    ..g2::local::LocalConfig::default()
                },
            )
        })
    }
}

/// Where in-process volunteers keep their stores under `--ft local`; removed
/// when dropped.
struct StoreDirs(Vec<PathBuf>);

impl Drop for StoreDirs {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

struct Outcome {
    tour: Tour,
    length: u64,
    calls: u64,
    elapsed: Duration,
    /// Nodes of the network the run used (0: sequential).
    nodes: usize,
}

fn load_instance(spec: &str) -> Result<Instance, String> {
    let path = Path::new(spec);
    if path.exists() {
        return tsplib::load(path).map_err(|e| format!("{}: {e}", path.display()));
    }
    let name = spec.trim_end_matches(".tsp");
    match EMBEDDED.iter().find(|(n, _)| *n == name) {
        Some((n, text)) => tsplib::parse(text).map_err(|e| format!("{n}.tsp: {e}")),
        None => Err(format!(
            "no file {spec:?} and no shipped instance of that name (shipped: {})",
            EMBEDDED
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn progress(epochs: u32, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(u64::from(epochs));
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] epoch {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("evolving");
    bar
}

/// The overlay `--routing` names (pastry or chord), with `--failure-timeout-ms`.
fn routing(args: &Args) -> Result<Box<dyn g2::OverlayFactory>, String> {
    let which = match args.routing.as_str() {
        "pastry" => g2_volunteer::Routing::Pastry,
        "chord" => g2_volunteer::Routing::Chord,
        other => {
            return Err(format!(
                "--routing {other}: expected pastry or chord (or test in-process)"
            ));
        }
    };
    g2_volunteer::overlay(
        which,
        Duration::from_millis((args.failure_timeout_ms / 3).max(1)),
        Duration::from_millis(args.failure_timeout_ms),
    )
    .map_err(|e| e.to_string())
}

#[cfg(feature = "rocksdb")]
fn durable_store(dir: &std::path::Path) -> Result<std::sync::Arc<dyn g2::Store>, String> {
    Ok(std::sync::Arc::new(
        g2_store_rocksdb::RocksStore::open(dir).map_err(|e| e.to_string())?,
    ))
}

#[cfg(not(feature = "rocksdb"))]
fn durable_store(_dir: &std::path::Path) -> Result<std::sync::Arc<dyn g2::Store>, String> {
    Err(NO_ROCKSDB.into())
}

#[cfg(not(feature = "rocksdb"))]
const NO_ROCKSDB: &str = "--ft local needs a durable store, and this tsp-islands was built without RocksDB (--no-default-features, as `make run` does); build it with the default features: cargo run --release -p tsp-islands -- --ft local";

/// The in-process network of `--nodes` volunteers; under `--ft local` each keeps
/// its checkpoints and logs in its own RocksDB store in a temporary directory.
async fn in_process_nodes(args: &Args, dirs: &mut StoreDirs) -> Result<Vec<Node>, String> {
    let net = MemNetwork::new();
    let members = Directory::new();
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..args.nodes.max(1) {
        let b = Node::builder().network(args.network.clone());
        let b = if args.routing == "test" {
            b.overlay(members.overlay()).transport(net.endpoint())
        } else {
            let b = b.overlay(routing(args)?).transport(net.endpoint());
            match nodes.first() {
                Some(first) => b.bootstrap(first.peer().addr.clone()),
                None => b,
            }
        };
        let mut b = b.register::<TspIsland>();
        if args.ft == "local" {
            let dir = std::env::temp_dir().join(format!(
                "tsp-islands-{}-{}-{i}",
                std::process::id(),
                g2::ObjectId::random()
            ));
            dirs.0.push(dir.clone());
            let store = durable_store(&dir)?;
            if let Some(p) = args.policy(store.clone()) {
                b = b.shared_store(store).fault_tolerance(p);
            }
        }
        let node = b
            .build()
            .await
            .map_err(|e| format!("starting a node: {e}"))?;
        nodes.push(node);
    }
    Ok(nodes)
}

/// A node of a real network (QUIC, Pastry), joined through `bootstrap`.
async fn client_node(args: &Args, bootstrap: std::net::SocketAddr) -> Result<Node, String> {
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

/// An island's progress. `status` only reads, so a call that timed out (say,
/// lost with a volunteer that was leaving), found the island's volunteer down
/// (under `--ft local`, until it restarts) or reached a node whose view of the
/// ring is still settling (no such object) is simply asked again, a few times.
async fn status_of(island: &IslandRef) -> Result<island::Status, g2::CallError> {
    let quick = island.with_timeout(Duration::from_secs(5));
    let mut last = None;
    for _ in 0..4 {
        match quick.status().await {
            Err(
                e @ (g2::CallError::Timeout { .. }
                | g2::CallError::Unavailable { .. }
                | g2::CallError::ObjectNotFound(_)),
            ) => last = Some(e),
            other => return other,
        }
    }
    Err(last.unwrap_or(g2::CallError::NodeStopped))
}

/// How long to wait before asking the islands again, with `done` of `epochs`
/// done `elapsed` after the start: a quarter of the time left at the pace so
/// far, between 2 ms and 500 ms.
fn next_look(elapsed: Duration, done: u32, epochs: u32) -> Duration {
    let left = if done == 0 {
        elapsed * 2 // nothing to go by yet: back off
    } else {
        elapsed.mul_f64(f64::from(epochs.saturating_sub(done)) / f64::from(done))
    };
    (left / 4).clamp(Duration::from_millis(2), Duration::from_millis(500))
}

async fn run_network(
    args: &Args,
    instance: &Instance,
    params: GaParams,
    bar: &ProgressBar,
) -> Result<Outcome, String> {
    let mut dirs = StoreDirs(Vec::new());
    let nodes = match args.connect {
        Some(addr) => vec![client_node(args, addr).await?],
        None => in_process_nodes(args, &mut dirs).await?,
    };
    let client = &nodes[0];
    let started = Instant::now();
    let mut islands: Vec<IslandRef> = Vec::new();
    // Ring neighbours exchange migrants every epoch: their GUIDs are spaced
    // evenly round the ring from a random start, in island order, so that
    // neighbouring islands have neighbouring roots and mostly share a volunteer.
    // (Where an island runs never changes the result.)
    let base = g2::ObjectId::random().as_u128();
    let step = u128::MAX / u128::from(args.islands.max(1));
    for index in 0..args.islands {
        let init = IslandInit {
            instance: instance.clone(),
            params,
            seed: args.seed,
            index,
            islands: args.islands,
        };
        let id = g2::ObjectId::from_u128(base.wrapping_add(step * u128::from(index)));
        let isl = client
            .create_with_id::<TspIsland>(id, init)
            .await
            .map_err(|e| format!("creating island {index}: {e}"))?;
        islands.push(isl);
    }
    for isl in &islands {
        isl.set_peers(islands.clone())
            .await
            .map_err(|e| format!("set_peers on {isl}: {e}"))?;
    }
    for isl in &islands {
        isl.start(args.epochs)
            .await
            .map_err(|e| format!("start on {isl}: {e}"))?;
    }
    // watch progress; the result does not depend on when we look. Each look
    // is a call to every island, served between its epochs on the volunteers'
    // CPUs, so look about four times in the time the run still needs at its
    // pace so far, at most every 2 ms and at least every 500 ms.
    let watching = Instant::now();
    loop {
        let statuses = futures::future::try_join_all(islands.iter().map(status_of))
            .await
            .map_err(|e| format!("status: {e}"))?;
        let done = statuses.iter().map(|s| s.epochs_done).min().unwrap_or(0);
        let best = statuses.iter().map(|s| s.best_length).min().unwrap_or(0);
        bar.set_position(u64::from(done));
        bar.set_message(format!("best {best}"));
        if done >= args.epochs {
            break;
        }
        tokio::time::sleep(next_look(watching.elapsed(), done, args.epochs)).await;
    }
    let mut best: Option<(Tour, u64)> = None;
    for isl in &islands {
        let (tour, len) = isl.best().await.map_err(|e| format!("best: {e}"))?;
        if best
            .as_ref()
            .is_none_or(|(bt, bl)| better((&tour, len), (bt, *bl)))
        {
            best = Some((tour, len));
        }
    }
    let elapsed = started.elapsed();
    let calls = nodes.iter().map(|n| n.stats().calls_sent).sum();
    // with --connect: this node and the volunteers it knows of
    let network_size = match args.connect {
        Some(_) => nodes[0].status().neighbours.len() + 1,
        None => nodes.len(),
    };
    if args.connect.is_some() {
        // hand on whatever this node still hosts before going
        for n in &nodes {
            if let Err(e) = n.leave().await {
                eprintln!("tsp-islands: leaving: {e}");
            }
        }
    } else {
        for n in &nodes {
            n.shutdown();
        }
    }
    let (tour, length) = best.ok_or("no islands")?;
    Ok(Outcome {
        tour,
        length,
        calls,
        elapsed,
        nodes: network_size,
    })
}

fn draw_svg(path: &Path, instance: &Instance, tour: &[u32], length: u64) -> Result<(), String> {
    use plotters::prelude::*;
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &instance.coords {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let pad = ((x1 - x0).max(y1 - y0) * 0.05).max(1.0);
    let root = SVGBackend::new(path, (800, 800)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{} — tour length {length}", instance.name),
            ("sans-serif", 20),
        )
        .margin(20)
        .build_cartesian_2d((x0 - pad)..(x1 + pad), (y0 - pad)..(y1 + pad))
        .map_err(|e| err(&e))?;
    let mut pts: Vec<(f64, f64)> = tour.iter().map(|&c| instance.coords[c as usize]).collect();
    if let Some(first) = pts.first().copied() {
        pts.push(first);
    }
    chart
        .draw_series(LineSeries::new(pts.iter().copied(), &BLUE))
        .map_err(|e| err(&e))?;
    chart
        .draw_series(pts.iter().map(|&p| Circle::new(p, 3, RED.filled())))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Volunteer(v)) => volunteer(&v),
        Some(Command::Run(args)) => run(&args),
        None => run(&cli.args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tsp-islands: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_once(
    args: &Args,
    sequential: bool,
    instance: &Instance,
    params: GaParams,
    bar: &ProgressBar,
) -> Result<Outcome, String> {
    if sequential {
        let started = Instant::now();
        let m = instance.distance_matrix();
        let (tour, length) = run_sequential(&m, params, args.islands, args.epochs, args.seed);
        return Ok(Outcome {
            tour,
            length,
            calls: 0,
            elapsed: started.elapsed(),
            nodes: 0,
        });
    }
    // a node stands for a machine: no more worker threads than nodes or cores
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.nodes.clamp(1, cores))
        .enable_all()
        .build()
        .map_err(|e| format!("starting tokio: {e}"))?;
    runtime.block_on(run_network(args, instance, params, bar))
}

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `a` and `b` (each `(args, sequential)`) one after the other `--repeat`
/// times, so both see the same machine conditions; fails with `differ` if they
/// find different tours; the median wall times of each, in ms.
fn alternate(
    a: (&Args, bool),
    b: (&Args, bool),
    instance: &Instance,
    params: GaParams,
    differ: &str,
) -> Result<(f64, f64), String> {
    let hidden = ProgressBar::hidden();
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..a.0.repeat.max(1) {
        let ra = run_once(a.0, a.1, instance, params, &hidden)?;
        let rb = run_once(b.0, b.1, instance, params, &hidden)?;
        if tour_blake3(&ra.tour) != tour_blake3(&rb.tour) {
            return Err(differ.into());
        }
        ta.push(ra.elapsed.as_secs_f64() * 1000.0);
        tb.push(rb.elapsed.as_secs_f64() * 1000.0);
    }
    Ok((median_ms(ta), median_ms(tb)))
}

/// A benchmark's `--json` line: the run's shape and `figures`.
fn experiment_json(
    name: &str,
    args: &Args,
    instance: &Instance,
    figures: serde_json::Value,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "experiment": name,
        "instance": instance.name,
        "nodes": args.nodes.max(1),
        "islands": args.islands,
        "epochs": args.epochs,
        "generations": args.generations,
        "repeat": args.repeat.max(1),
    });
    if let (Some(all), serde_json::Value::Object(more)) = (v.as_object_mut(), figures) {
        all.extend(more);
    }
    v
}

/// `--overhead`: the framework against plain sequential Rust, same parameters,
/// alternating so both see the same machine conditions.
fn overhead(args: &Args, instance: &Instance, params: GaParams) -> Result<(), String> {
    let (s, n) = alternate(
        (args, true),
        (args, false),
        instance,
        params,
        "the network run and the sequential run found different tours",
    )?;
    println!(
        "{}: {} islands x {} epochs x {} generations, {} repeats: sequential {s:.1} ms, {} in-process node(s) {n:.1} ms, ratio {:.3}",
        instance.name,
        args.islands,
        args.epochs,
        args.generations,
        args.repeat.max(1),
        args.nodes.max(1),
        n / s
    );
    if args.json {
        println!(
            "{}",
            experiment_json(
                "overhead",
                args,
                instance,
                serde_json::json!({
                    "sequential_ms": s,
                    "network_ms": n,
                    "ratio": n / s,
                }),
            )
        );
    }
    Ok(())
}

/// `--ft-overhead`: the same in-process run under `none` and under `local`,
/// alternating so both see the same machine conditions.
fn ft_overhead(args: &Args, instance: &Instance, params: GaParams) -> Result<(), String> {
    #[cfg(not(feature = "rocksdb"))]
    {
        let _ = (args, instance, params);
        Err(NO_ROCKSDB.into())
    }
    #[cfg(feature = "rocksdb")]
    {
        let none = Args {
            ft: "none".into(),
            ..args.clone()
        };
        let local = Args {
            ft: "local".into(),
            ..args.clone()
        };
        let (n, l) = alternate(
            (&none, false),
            (&local, false),
            instance,
            params,
            "the run under local found a different tour than under none",
        )?;
        println!(
            "{}: {} islands x {} epochs x {} generations on {} in-process node(s), {} repeats: none {n:.1} ms, local (checkpoint every {} calls, durability {}) {l:.1} ms, ratio {:.3}",
            instance.name,
            args.islands,
            args.epochs,
            args.generations,
            args.nodes.max(1),
            args.repeat.max(1),
            args.checkpoint_every,
            args.durability,
            l / n
        );
        if args.json {
            println!(
                "{}",
                experiment_json(
                    "ft_overhead",
                    args,
                    instance,
                    serde_json::json!({
                        "checkpoint_every": args.checkpoint_every,
                        "durability": args.durability.to_string(),
                        "none_ms": n,
                        "local_ms": l,
                        "ratio": l / n,
                    }),
                )
            );
        }
        Ok(())
    }
}

/// `tsp-islands volunteer`: a volunteer host with the island type linked in.
fn volunteer(args: &g2_volunteer::VolunteerArgs) -> Result<(), String> {
    g2_volunteer::init_logging();
    let cfg = g2_volunteer::VolunteerConfig::resolve(args).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting tokio: {e}"))?;
    runtime.block_on(async {
        let v = g2_volunteer::Volunteer::start(&cfg, |b| b.register::<TspIsland>())
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "volunteer {} listening on {}",
            v.node().id(),
            v.local_addr()
        );
        v.run_until_shutdown().await.map_err(|e| e.to_string())
    })
}

fn run(args: &Args) -> Result<(), String> {
    if args.connect.is_some() && std::env::var_os("RUST_LOG").is_some() {
        // a client of a real network logs like a volunteer when asked to
        g2_volunteer::init_logging();
    }
    match args.ft.as_str() {
        "none" => {}
        #[cfg(not(feature = "rocksdb"))]
        "local" if args.connect.is_none() => return Err(NO_ROCKSDB.into()),
        "local" => {}
        "replicated" => {
            return Err(
                "--ft replicated: not available yet (erasure-coded checkpoints on neighbours are still to come); use none or local".into(),
            );
        }
        other => {
            return Err(format!(
                "--ft {other}: unknown policy (expected none, local or replicated)"
            ));
        }
    }
    let instance = load_instance(&args.instance)?;
    if args.islands == 0 {
        return Err("--islands must be at least 1".into());
    }
    let params = GaParams {
        generations: args.generations,
        ..GaParams::default()
    };
    if args.overhead {
        return overhead(args, &instance, params);
    }
    if args.ft_overhead {
        return ft_overhead(args, &instance, params);
    }
    let bar = progress(args.epochs, args.json);
    let outcome = run_once(args, args.sequential, &instance, params, &bar)?;
    bar.finish_and_clear();
    let measured = instance.tour_length(&outcome.tour);
    if measured != outcome.length {
        return Err(format!(
            "internal error: the best tour measures {measured}, not the reported {}",
            outcome.length
        ));
    }
    let hash = tour_blake3(&outcome.tour);
    let gap = instance
        .best_known
        .map(|b| (outcome.length as f64 - b as f64) / b as f64 * 100.0);
    let nodes = outcome.nodes;
    let mode = match (args.sequential, args.connect) {
        (true, _) => "sequential (no framework)".to_string(),
        (false, Some(addr)) => format!("client of the network at {addr} ({nodes} nodes known)"),
        (false, None) => format!("{nodes} in-process nodes ({} routing)", args.routing),
    };
    println!(
        "{}: {} cities, {} islands x {} epochs x {} generations, seed {}, {mode}",
        instance.name,
        instance.len(),
        args.islands,
        args.epochs,
        args.generations,
        args.seed
    );
    match (instance.best_known, gap) {
        (Some(b), Some(g)) => println!(
            "best length {} (best known {b}, gap {g:.2}%)",
            outcome.length
        ),
        _ => println!("best length {}", outcome.length),
    }
    println!(
        "time {:.3} s, {} remote calls, tour blake3 {hash}",
        outcome.elapsed.as_secs_f64(),
        outcome.calls
    );
    if let Some(path) = &args.svg {
        draw_svg(path, &instance, &outcome.tour, outcome.length)?;
        println!("tour drawn to {}", path.display());
    }
    if args.json {
        let json = serde_json::json!({
            "instance": instance.name,
            "nodes": nodes,
            "islands": args.islands,
            "seed": args.seed,
            "best_length": outcome.length,
            "best_known": instance.best_known,
            "gap_pct": gap,
            "tour_blake3": hash,
            "elapsed_ms": outcome.elapsed.as_secs_f64() * 1000.0,
            "calls": outcome.calls,
        });
        println!("{json}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::next_look;
    use std::time::Duration;

    #[test]
    fn the_client_looks_rarely_mid_run_and_often_near_the_end() {
        let ms = Duration::from_millis;
        // a run that will take another 30 s: twice a second
        assert_eq!(next_look(Duration::from_secs(10), 50, 200), ms(500));
        // 40 ms left: every 10 ms
        assert_eq!(next_look(ms(7960), 199, 200), ms(10));
        // nothing done yet: back off from 2 ms
        assert_eq!(next_look(ms(0), 0, 200), ms(2));
        assert_eq!(next_look(ms(40), 0, 200), ms(20));
    }
}
