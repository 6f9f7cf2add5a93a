//! The generic G2 volunteer host (paper §3): a node that joins a network through a
//! bootstrap peer, hosts whatever objects land on it, and on SIGTERM or Ctrl-C
//! leaves gracefully — every object migrates to its next root — before it exits.
//!
//! The binary `g2` is this library with no application types linked in (code
//! download, paper §3.3, is still to come); an application builds its own host
//! with its types registered, as `tsp-islands volunteer` does:
//!
//! ```no_run
//! # async fn demo() -> Result<(), g2_volunteer::VolunteerError> {
//! use g2_volunteer::{Volunteer, VolunteerArgs, VolunteerConfig};
//! let cfg = VolunteerConfig::resolve(&VolunteerArgs {
//!     network: Some("plas.qut.edu".into()),
//!     listen: Some("127.0.0.1:7400".parse().unwrap()),
//!     ..Default::default()
//! })?;
//! let v = Volunteer::start(&cfg, |b| b /* .register::<MyType>() */).await?;
//! v.run_until_shutdown().await?; // SIGTERM / Ctrl-C: graceful leave
//! # Ok(()) }
//! ```

pub mod code;
pub mod idle;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use g2::quic::{NodeKey, QuicConfig, QuicTransport};
use g2::{Node, NodeAddr, NodeBuilder, NodeStatus, WithNetwork, WithOverlay, WithTransport};
use serde::Deserialize;
use tracing::{info, warn};

/// The routing overlay of a volunteer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    /// Pastry (Rowstron & Druschel, 2001).
    Pastry,
    /// Chord (Stoica et al., 2001).
    Chord,
}

/// Volunteer settings as flags; `--config FILE` gives the same keys in TOML and
/// flags override the file.
#[derive(Clone, Debug, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VolunteerArgs {
    /// The network to join (`plas.qut.edu`).
    #[arg(long)]
    pub network: Option<String>,
    /// The UDP address to listen on (`127.0.0.1:7400`).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// A node of the network to join through; none founds a new network.
    #[arg(long)]
    pub bootstrap: Option<SocketAddr>,
    /// Where the node keeps its key (and, with local fault tolerance, its store).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The routing overlay.
    #[arg(long, value_enum)]
    pub routing: Option<Routing>,
    /// Overlay heartbeat period among neighbours, in milliseconds (default: a
    /// third of the failure timeout).
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// A neighbour silent this long is declared failed, in milliseconds
    /// (default 30000); its objects are then recovered or reported lost.
    #[arg(long)]
    pub failure_timeout_ms: Option<u64>,
    /// Under local fault tolerance, checkpoint each object after this many calls
    /// (default 100).
    #[arg(long)]
    pub checkpoint_every: Option<u32>,
    /// ... or at its first call this many milliseconds after its last
    /// checkpoint (default 10000).
    #[arg(long)]
    pub checkpoint_every_ms: Option<u64>,
    /// A publisher whose code this volunteer runs: its Ed25519 public key
    /// (64 hex digits, as `g2 keygen` prints it). Repeat for several; in
    /// `g2.toml`, `trusted-publishers = ["..."]`.
    #[arg(long = "trusted-publisher", value_name = "KEY")]
    #[serde(default)]
    pub trusted_publishers: Vec<String>,
    /// Runs code from any publisher (local experiments only: off by default).
    #[arg(long)]
    #[serde(default)]
    pub trust_any_publisher: bool,
    /// Keeps at most this many MiB of downloaded application code in the data
    /// dir (default 1024).
    #[arg(long)]
    pub code_cache_mb: Option<u64>,
    /// A code server tried before the network for code this volunteer lacks:
    /// `http://host:port/path` or `file:///dir`, laid out as `g2 publish --out`
    /// writes it (its manifests and binaries are verified as the network's
    /// are). Repeat for several, tried in order; in `g2.toml`,
    /// `code-servers = ["..."]`.
    #[arg(long = "code-server", value_name = "URL")]
    #[serde(default)]
    pub code_servers: Vec<String>,
    /// When to compute: `always` (default) or `idle`, by the criteria below
    /// (the volunteer then runs at nice 19 and steps aside while the owner
    /// works).
    #[arg(long, value_enum)]
    pub run_when: Option<idle::RunWhen>,
    /// Under `idle`: the owner counts as away after this many minutes without
    /// keyboard, mouse or terminal input (default 3).
    #[arg(long)]
    pub user_idle_min: Option<f64>,
    /// Under `idle`: other programs using more than this percent of the
    /// machine's CPU make it busy (default 25).
    #[arg(long)]
    pub other_cpu_above: Option<f64>,
    /// Under `idle`: with the owner back, keep running while other programs use
    /// little CPU (default true) ...
    #[arg(long)]
    pub linger_longer: Option<bool>,
    /// ... at most this percent (default 50).
    #[arg(long)]
    pub linger_cpu_above: Option<f64>,
    /// Under `idle`: suspended this many seconds, pass every object on to
    /// neighbours (default 60).
    #[arg(long)]
    pub suspend_grace_s: Option<u64>,
    /// Under `idle`: compute only in these daily windows, `HH:MM-HH:MM` in UTC
    /// or with an offset (`18:00-08:00+01:00`). Repeat for several.
    #[arg(long = "schedule", value_name = "WINDOW")]
    #[serde(default)]
    pub schedule: Vec<String>,
    /// Reads the machine's signals from this JSON file instead of the machine
    /// (tests and demonstrations: `{"other_cpu_pct": 90, "user_idle": 600}`).
    #[arg(long, hide = true)]
    pub idle_signals_file: Option<PathBuf>,
    /// A TOML file with the same keys (`network = "..."`, `listen = "..."`, ...).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

/// Resolved volunteer settings.
#[derive(Clone, Debug, PartialEq)]
pub struct VolunteerConfig {
    /// The network name.
    pub network: String,
    /// The listen address.
    pub listen: SocketAddr,
    /// The bootstrap peer, if any.
    pub bootstrap: Option<SocketAddr>,
    /// The data dir.
    pub data_dir: PathBuf,
    /// The overlay.
    pub routing: Routing,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Failure-detection timeout.
    pub failure_timeout: Duration,
    /// Checkpoint every this many calls (local fault tolerance).
    pub checkpoint_every_calls: u32,
    /// ... or this often.
    pub checkpoint_every: Duration,
    /// Publishers whose code this volunteer runs (public keys, hex).
    pub trusted_publishers: Vec<String>,
    /// Runs code from any publisher.
    pub trust_any_publisher: bool,
    /// Bound of the code cache, in bytes.
    pub code_cache_bytes: u64,
    /// Code servers tried before the network, in order.
    pub code_servers: Vec<code::CodeServer>,
    /// When to compute.
    pub idle: idle::Criteria,
    /// Where the idle signals come from, if not the machine.
    pub idle_signals_file: Option<PathBuf>,
}

/// Why a volunteer could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum VolunteerError {
    /// A setting is missing or invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The QUIC endpoint could not start.
    #[error(transparent)]
    Transport(#[from] g2::quic::QuicError),
    /// The node could not join.
    #[error("joining the network: {0}")]
    Join(#[from] g2::BuildError),
    /// The store in the data dir could not be opened (nothing in it was changed).
    #[cfg(feature = "rocksdb")]
    #[error("opening the store: {0}")]
    Store(#[from] g2_store_rocksdb::OpenError),
    /// Some objects could not migrate on leaving.
    #[error(transparent)]
    Leave(#[from] g2::LeaveError),
}

impl VolunteerConfig {
    /// Merges `--config FILE` (if given) with the flags; flags win.
    pub fn resolve(args: &VolunteerArgs) -> Result<Self, VolunteerError> {
        let file: VolunteerArgs = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    VolunteerError::Config(format!("reading {}: {e}", path.display()))
                })?;
                toml::from_str(&text)
                    .map_err(|e| VolunteerError::Config(format!("{}: {e}", path.display())))?
            }
            None => VolunteerArgs::default(),
        };
        let idle = idle_criteria(args, &file)?;
        let idle_signals_file = args
            .idle_signals_file
            .clone()
            .or(file.idle_signals_file.clone());
        let network = args
            .network
            .clone()
            .or(file.network)
            .ok_or_else(|| VolunteerError::Config("--network is required".into()))?;
        g2::validate_network_name(&network).map_err(|e| VolunteerError::Config(e.to_string()))?;
        let listen = args
            .listen
            .or(file.listen)
            .ok_or_else(|| VolunteerError::Config("--listen is required".into()))?;
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| default_data_dir(&network, listen));
        let failure_timeout_ms = args
            .failure_timeout_ms
            .or(file.failure_timeout_ms)
            .unwrap_or(30_000);
        let heartbeat_ms = args
            .heartbeat_ms
            .or(file.heartbeat_ms)
            .unwrap_or((failure_timeout_ms / 3).max(1));
        let mut trusted_publishers = file.trusted_publishers;
        trusted_publishers.extend(args.trusted_publishers.iter().cloned());
        for k in &trusted_publishers {
            code::bundle::parse_public(k)
                .map_err(|e| VolunteerError::Config(format!("trusted publisher {k:?}: {e}")))?;
        }
        let code_servers = file
            .code_servers
            .iter()
            .chain(&args.code_servers)
            .map(|u| u.parse().map_err(VolunteerError::Config))
            .collect::<Result<Vec<code::CodeServer>, _>>()?;
        Ok(Self {
            idle,
            idle_signals_file,
            code_servers,
            trusted_publishers,
            trust_any_publisher: args.trust_any_publisher || file.trust_any_publisher,
            code_cache_bytes: args.code_cache_mb.or(file.code_cache_mb).unwrap_or(1024) << 20,
            network,
            listen,
            bootstrap: args.bootstrap.or(file.bootstrap),
            data_dir,
            routing: args.routing.or(file.routing).unwrap_or(Routing::Pastry),
            heartbeat: Duration::from_millis(heartbeat_ms),
            failure_timeout: Duration::from_millis(failure_timeout_ms),
            checkpoint_every_calls: args
                .checkpoint_every
                .or(file.checkpoint_every)
                .unwrap_or(100)
                .max(1),
            checkpoint_every: Duration::from_millis(
                args.checkpoint_every_ms
                    .or(file.checkpoint_every_ms)
                    .unwrap_or(10_000),
            ),
        })
    }
}

fn default_data_dir(network: &str, listen: SocketAddr) -> PathBuf {
    let base = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    base.join(".g2")
        .join(network)
        .join(listen.to_string().replace([':', '[', ']'], "_"))
}

/// The overlay of `routing` with these failure-detection timings (checked):
/// Pastry's leaf-set heartbeats, or Chord's stabilisation, every `heartbeat`; a
/// neighbour silent for about `failure_timeout` is declared failed.
pub fn overlay(
    routing: Routing,
    heartbeat: Duration,
    failure_timeout: Duration,
) -> Result<Box<dyn g2::OverlayFactory>, VolunteerError> {
    match routing {
        Routing::Pastry => {
            let cfg = g2::pastry::PastryConfig {
                heartbeat_period: heartbeat,
                failure_timeout,
                request_timeout: failure_timeout.min(Duration::from_secs(5)),
                ..g2::pastry::PastryConfig::default()
            };
            cfg.validate()
                .map_err(|e| VolunteerError::Config(format!("pastry: {e}")))?;
            Ok(Box::new(cfg))
        }
        Routing::Chord => {
            let cfg = g2::chord::ChordConfig {
                stabilize_period: heartbeat,
                fix_fingers_period: heartbeat,
                check_predecessor_period: heartbeat,
                request_timeout: failure_timeout.saturating_sub(heartbeat).max(heartbeat),
                ..g2::chord::ChordConfig::default()
            };
            cfg.validate()
                .map_err(|e| VolunteerError::Config(format!("chord: {e}")))?;
            Ok(Box::new(cfg))
        }
    }
}

/// The typed builder an application adds its types to.
pub type ReadyBuilder = NodeBuilder<WithNetwork, WithOverlay, WithTransport>;

/// Opens the store in `<data dir>/store` (RocksDB) and serves the `local`
/// policies over it.
#[cfg(feature = "rocksdb")]
fn with_durable_store(
    builder: ReadyBuilder,
    cfg: &VolunteerConfig,
) -> Result<ReadyBuilder, VolunteerError> {
    let store: std::sync::Arc<dyn g2::Store> = std::sync::Arc::new(
        g2_store_rocksdb::RocksStore::open(cfg.data_dir.join("store"))?,
    );
    let local = |durability| {
        g2::local::LocalPolicy::new(
            store.clone(),
            g2::local::LocalConfig {
                checkpoint_every_calls: cfg.checkpoint_every_calls,
                checkpoint_every: cfg.checkpoint_every,
                durability,
                ..g2::local::LocalConfig::default()
            },
        )
    };
    Ok(builder
        .shared_store(store.clone())
        .serve_policy(local(g2::local::Durability::Process))
        .serve_policy(local(g2::local::Durability::Machine)))
}

/// Built without RocksDB: no durable store, so objects under `none` only; a run
/// that asks for `local` is refused by this volunteer with a clear error.
#[cfg(not(feature = "rocksdb"))]
fn with_durable_store(
    builder: ReadyBuilder,
    _cfg: &VolunteerConfig,
) -> Result<ReadyBuilder, VolunteerError> {
    tracing::warn!(
        "built without the rocksdb feature: serving objects under fault-tolerance policy none only"
    );
    Ok(builder)
}

/// A running volunteer.
pub struct Volunteer {
    node: Node,
    transport: QuicTransport,
    code: Arc<code::NetworkCode>,
    idle: Arc<idle::Idle>,
}

/// What `g2 status` shows of a volunteer: its node, and the code it runs.
#[derive(Clone, Debug, serde::Serialize, Deserialize)]
pub struct VolunteerStatus {
    /// The node.
    #[serde(flatten)]
    pub node: NodeStatus,
    /// Bundles cached and workers running.
    #[serde(default)]
    pub code: code::CodeStatus,
    /// When it computes, and what it does now.
    #[serde(default)]
    pub idle: Option<idle::IdleStatus>,
}

impl Volunteer {
    /// Starts the QUIC endpoint with the key in the data dir (created on first
    /// use), opens the store in `<data dir>/store` (RocksDB) and recovers the
    /// objects kept there by local fault tolerance, joins the network, and
    /// answers `g2 status` queries. `register` adds the application's types to
    /// the node builder. The volunteer serves objects under `none`, `local` and
    /// `local-machine`, whichever their run chose.
    pub async fn start(
        cfg: &VolunteerConfig,
        register: impl FnOnce(ReadyBuilder) -> ReadyBuilder,
    ) -> Result<Self, VolunteerError> {
        claim_data_dir(&cfg.data_dir, &cfg.network)?;
        let key = NodeKey::load_or_create(&cfg.data_dir)?;
        let transport =
            QuicTransport::bind(QuicConfig::new(cfg.network.clone(), cfg.listen, key)).await?;
        let overlay = overlay(cfg.routing, cfg.heartbeat, cfg.failure_timeout)?;
        let builder = Node::builder()
            .network(cfg.network.clone())
            .overlay(overlay)
            .transport(transport.clone())
            .join_timeout(Duration::from_secs(30));
        let code = code::NetworkCode::new(code::CodeSettings {
            trusted_publishers: cfg.trusted_publishers.clone(),
            trust_any_publisher: cfg.trust_any_publisher,
            cache_dir: cfg.data_dir.join("bundles"),
            cache_max_bytes: cfg.code_cache_bytes,
            scratch_dir: cfg.data_dir.join("scratch"),
            sandbox: code::sandbox::SandboxConfig::default(),
            code_servers: cfg.code_servers.clone(),
        });
        let builder = code::register_records(builder).type_provider(code.clone());
        let mut builder = with_durable_store(builder, cfg)?;
        if let Some(b) = cfg.bootstrap {
            builder = builder.bootstrap(NodeAddr::new(b.to_string()));
        }
        let node = register(builder).build().await?;
        code.attach(node.clone());
        let idle = start_idle(&node, cfg, &code);
        let for_status = node.clone();
        let code_status = code.clone();
        let idle_status = idle.clone();
        transport.set_status_provider(move || {
            serde_json::to_vec(&VolunteerStatus {
                node: for_status.status(),
                code: code_status.status(),
                idle: Some(idle_status.status()),
            })
            .unwrap_or_default()
        });
        info!(id = %node.id(), addr = %transport.local_addr(), network = %cfg.network, "volunteer running");
        tokio::spawn(watch_for_stalls(node.clone()));
        Ok(Self {
            node,
            transport,
            code,
            idle,
        })
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// When it computes, and what it does now.
    pub fn idle(&self) -> idle::IdleStatus {
        self.idle.status()
    }

    /// The code it fetched and the workers it runs.
    pub fn code(&self) -> &Arc<code::NetworkCode> {
        &self.code
    }

    /// The UDP address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.transport.local_addr()
    }

    /// Starts, prints `volunteer ID listening on ADDR` on stdout (what scripts
    /// and tests wait for), serves until SIGTERM or Ctrl-C and leaves.
    pub async fn serve(
        cfg: &VolunteerConfig,
        register: impl FnOnce(ReadyBuilder) -> ReadyBuilder,
    ) -> Result<(), VolunteerError> {
        let v = Self::start(cfg, register).await?;
        println!(
            "volunteer {} listening on {}",
            v.node().id(),
            v.local_addr()
        );
        v.run_until_shutdown().await
    }

    /// Serves until SIGTERM or Ctrl-C, then leaves gracefully.
    pub async fn run_until_shutdown(self) -> Result<(), VolunteerError> {
        shutdown_signal().await;
        info!(id = %self.node.id(), "shutting down: migrating objects away");
        let left = self.node.leave().await;
        self.code.stop_workers();
        left?;
        Ok(())
    }
}

/// Warns when this volunteer's async runtime falls far behind its timers: while
/// it does, heartbeats go unanswered and its neighbours may declare it failed.
async fn watch_for_stalls(node: Node) {
    const TICK: Duration = Duration::from_millis(250);
    const STALL: Duration = Duration::from_secs(1);
    let mut last = tokio::time::Instant::now();
    while !node.is_stopped() {
        tokio::time::sleep(TICK).await;
        let now = tokio::time::Instant::now();
        let late = now.duration_since(last).saturating_sub(TICK);
        if late > STALL {
            warn!(id = %node.id(), "the async runtime stalled for {late:?}: timers and network frames waited");
        }
        last = now;
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Asks the volunteer at `addr` for its status.
pub async fn status(addr: SocketAddr) -> Result<VolunteerStatus, VolunteerError> {
    let bytes = g2::quic::query_status(addr).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| VolunteerError::Config(format!("status of {addr} did not decode: {e}")))
}

/// Installs the `RUST_LOG`-driven log subscriber (to stderr).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Prints a status as the `g2 status` command does.
pub fn print_status(v: &VolunteerStatus, json: bool) {
    if json {
        println!("{}", serde_json::to_string(v).unwrap_or_default());
        return;
    }
    let s = &v.node;
    println!("node      {}", s.id);
    println!("address   {}", s.addr);
    println!("network   {} ({})", s.network, s.overlay);
    println!("uptime    {:.1} s", s.uptime_s);
    println!(
        "calls     {} served, {} sent, {} forwarded",
        s.stats.calls_served, s.stats.calls_sent, s.stats.requests_forwarded
    );
    println!(
        "migration {} in, {} out",
        s.stats.migrations_in, s.stats.migrations_out
    );
    if let Some(i) = &v.idle {
        println!("idle      {}", i.line());
    }
    println!("neighbours ({}):", s.neighbours.len());
    for p in &s.neighbours {
        println!("  {p}");
    }
    println!("objects ({}):", s.objects.len());
    for (id, t) in &s.objects {
        println!("  {id}  {t}");
    }
    let c = &v.code;
    println!(
        "bundles cached ({}), fetched {} since start:",
        c.bundles.len(),
        c.fetches
    );
    for b in &c.bundles {
        println!("  {}  {:.1} MiB", b.blake3, b.size as f64 / 1048576.0);
    }
    println!("workers ({}):", c.workers.len());
    for w in &c.workers {
        let rss = w
            .rss_kib
            .map_or("?".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        let state = w
            .failed
            .as_deref()
            .map_or("running".to_string(), |f| format!("ended: {f}"));
        println!(
            "  pid {}  {} objects  {}  types {}  bundle {}  {}",
            w.pid,
            w.objects,
            rss,
            w.types.join(", "),
            &w.bundle[..16.min(w.bundle.len())],
            state
        );
        for layer in &w.sandbox {
            println!("    {layer}");
        }
    }
    println!("worker confinement: {}", c.sandbox.join("; "));
}

/// Where a publisher's key is kept unless told otherwise: `~/.g2/publisher.key`.
pub fn default_publisher_key() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".g2")
        .join("publisher.key")
}

/// A node that joins `network` through `bootstrap` to start runs, call and
/// publish code, hosting nothing itself (a client). It links the code
/// record types.
pub async fn join_as_client(
    network: &str,
    bootstrap: SocketAddr,
    routing: Routing,
) -> Result<Node, VolunteerError> {
    let key = NodeKey::generate()?;
    let listen = if bootstrap.is_ipv4() {
        SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0))
    } else {
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0))
    };
    let transport = QuicTransport::bind(QuicConfig::new(network.to_string(), listen, key)).await?;
    let failure = Duration::from_secs(30);
    let b = Node::builder()
        .network(network.to_string())
        .overlay(overlay(routing, failure / 3, failure)?)
        .transport(transport)
        .bootstrap(NodeAddr::new(bootstrap.to_string()))
        .host_objects(false);
    Ok(code::register_records(b).build().await?)
}

/// Whether `path` looks like a volunteer data dir (holds a node key).
pub fn is_data_dir(path: &Path) -> bool {
    path.join("node.key").exists()
}

/// The file in a data dir that names the network its node belongs to.
const NETWORK_FILE: &str = "network";

/// Checks that `dir` is not the data dir of a node of another network (its
/// key and the objects its store keeps belong there), and marks it as this
/// network's on first use.
pub fn claim_data_dir(dir: &std::path::Path, network: &str) -> Result<(), VolunteerError> {
    let marker = dir.join(NETWORK_FILE);
    match std::fs::read_to_string(&marker) {
        Ok(found) if found.trim() == network => Ok(()),
        Ok(found) => Err(VolunteerError::Config(format!(
            "data dir {} belongs to a volunteer of network {:?} (this one joins {network:?}): pass --network {}, or another --data-dir",
            dir.display(),
            found.trim(),
            found.trim()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)
                .map_err(|e| VolunteerError::Config(format!("data dir {}: {e}", dir.display())))?;
            std::fs::write(&marker, format!("{network}\n"))
                .map_err(|e| VolunteerError::Config(format!("data dir {}: {e}", dir.display())))
        }
        Err(e) => Err(VolunteerError::Config(format!(
            "data dir {}: {}: {e}",
            dir.display(),
            marker.display()
        ))),
    }
}

/// The idle criteria from the flags and the file (flags win), checked.
fn idle_criteria(
    args: &VolunteerArgs,
    file: &VolunteerArgs,
) -> Result<idle::Criteria, VolunteerError> {
    let d = idle::Criteria::default();
    let bad = |key: &str, why: String| VolunteerError::Config(format!("{key}: {why}"));
    let percent = |key: &str, v: Option<f64>, default: f64| -> Result<f64, VolunteerError> {
        match v {
            None => Ok(default),
            Some(p) if (0.0..=100.0).contains(&p) => Ok(p),
            Some(p) => Err(bad(key, format!("{p} is not a percentage (0 to 100)"))),
        }
    };
    let user_idle_min = match args.user_idle_min.or(file.user_idle_min) {
        None => d.user_idle.as_secs_f64() / 60.0,
        Some(m) if m.is_finite() && m >= 0.0 => m,
        Some(m) => {
            return Err(bad(
                "user-idle-min",
                format!("{m} is not a number of minutes (0 or more)"),
            ));
        }
    };
    let linger = args.linger_longer.or(file.linger_longer).unwrap_or(true);
    let linger_cpu = percent(
        "linger-cpu-above",
        args.linger_cpu_above.or(file.linger_cpu_above),
        d.linger_cpu_above.unwrap_or(50.0),
    )?;
    let mut schedule = Vec::new();
    for w in file.schedule.iter().chain(&args.schedule) {
        schedule.push(idle::parse_window(w).map_err(|e| bad("schedule", e))?);
    }
    Ok(idle::Criteria {
        run_when: args.run_when.or(file.run_when).unwrap_or(d.run_when),
        user_idle: Duration::from_secs_f64(user_idle_min * 60.0),
        other_cpu_above: percent(
            "other-cpu-above",
            args.other_cpu_above.or(file.other_cpu_above),
            d.other_cpu_above,
        )?,
        linger_cpu_above: linger.then_some(linger_cpu),
        suspend_grace: args
            .suspend_grace_s
            .or(file.suspend_grace_s)
            .map_or(d.suspend_grace, Duration::from_secs),
        schedule,
    })
}

/// Starts the idle driver (under `run-when = "idle"`, at nice 19).
fn start_idle(
    node: &Node,
    cfg: &VolunteerConfig,
    code: &Arc<code::NetworkCode>,
) -> Arc<idle::Idle> {
    if cfg.idle.run_when == idle::RunWhen::Idle {
        match renice_process(19) {
            Ok(n) => info!(threads = n, "run-when = idle: running at nice 19"),
            Err(e) => tracing::warn!("could not lower this process's priority to nice 19: {e}"),
        }
    }
    let signals: Box<dyn idle::Signals> = match &cfg.idle_signals_file {
        Some(p) => Box::new(idle::FileSignals::new(p.clone())),
        None => Box::new(idle::MachineSignals::default()),
    };
    let code = code.clone();
    let ours = Arc::new(move || {
        let mut pids = vec![std::process::id()];
        pids.extend(code.worker_pids());
        pids
    });
    idle::start(node.clone(), cfg.idle.clone(), signals, ours)
}

/// Sets every thread of this process to `nice` (on Linux a priority belongs to
/// a thread, and a thread starts with its creator's: threads started later
/// inherit it). How many threads it set.
fn renice_process(nice: i32) -> std::io::Result<usize> {
    let mut n = 0;
    for e in std::fs::read_dir("/proc/self/task")?.flatten() {
        let tid = e.file_name().to_string_lossy().parse::<i32>().ok();
        if let Some(pid) = tid.and_then(rustix::process::Pid::from_raw) {
            rustix::process::setpriority_process(Some(pid), nice)?;
            n += 1;
        }
    }
    Ok(n)
}

/// `PROGRAM volunteer FLAGS...` for a program that hosts types of its own (a
/// benchmark, an app-specific host): parses the volunteer flags after its
/// first argument, then serves as [`Volunteer::serve`] on a runtime of its
/// own until SIGTERM or Ctrl-C.
pub fn serve_volunteer_subcommand(
    register: impl FnOnce(ReadyBuilder) -> ReadyBuilder,
) -> Result<(), String> {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: VolunteerArgs,
    }
    init_logging();
    let cli = <Cli as clap::Parser>::parse_from(
        std::env::args_os()
            .take(1)
            .chain(std::env::args_os().skip(2)),
    );
    let cfg = VolunteerConfig::resolve(&cli.args).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(Volunteer::serve(&cfg, register))
        .map_err(|e| e.to_string())
}
