//! The volunteer's code provider: asked for a type it was not built with, it
//! finds the type's manifest on the network, checks the publisher against
//! the owner's trust list and the target, fetches and verifies the binary
//! (or takes it from the cache), and runs it as a worker process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use g2::sync::lock;
use g2::worker::{WORKER_ENV, WorkerConn, WorkerType};
use g2::{DynamicType, Node, TypeProvider};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::bundle::{Manifest, TARGET};
use super::cache::{BundleCache, CachedBundle};
use super::records::{fetch_binary, list_manifests};
use super::sandbox::{self, SandboxConfig};

/// What a volunteer's owner decides about code from the network.
#[derive(Clone, Debug, Default)]
pub struct CodeSettings {
    /// Ed25519 public keys (hex) whose bundles this volunteer runs.
    pub trusted_publishers: Vec<String>,
    /// Runs bundles of any publisher (local experiments only).
    pub trust_any_publisher: bool,
    /// Where fetched binaries are kept.
    pub cache_dir: PathBuf,
    /// At most this many bytes of them.
    pub cache_max_bytes: u64,
    /// Where each worker gets its scratch dir.
    pub scratch_dir: PathBuf,
    /// How workers are confined.
    pub sandbox: SandboxConfig,
}

/// A worker process running one bundle.
struct Running {
    conn: WorkerConn,
    scratch: PathBuf,
    manifest: Manifest,
    child: Mutex<Option<tokio::process::Child>>,
}

/// A worker as `g2 status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Its process id.
    pub pid: u32,
    /// The bundle's blake3.
    pub bundle: String,
    /// The publisher.
    pub publisher: String,
    /// The types it serves.
    pub types: Vec<String>,
    /// Objects hosted in it.
    pub objects: usize,
    /// Its resident memory in KiB, where readable.
    pub rss_kib: Option<u64>,
    /// Why it ended, if it did.
    pub failed: Option<String>,
    /// The confinement layers its launcher put in force.
    #[serde(default)]
    pub sandbox: Vec<String>,
}

/// The code part of `g2 status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeStatus {
    /// Binaries in the cache.
    pub bundles: Vec<CachedBundle>,
    /// Workers started.
    pub workers: Vec<WorkerStatus>,
    /// Binaries fetched from the network since start.
    pub fetches: u64,
    /// The confinement layers in force for workers, and those skipped.
    pub sandbox: Vec<String>,
}

/// Ended workers `g2 status` still lists.
const ENDED_KEPT: usize = 8;

/// The volunteer's [`TypeProvider`]: code from the network, run in workers.
pub struct NetworkCode {
    settings: CodeSettings,
    cache: BundleCache,
    node: OnceLock<Node>,
    /// One resolution at a time per type: concurrent requests share a fetch.
    per_type: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Workers by bundle hash.
    running: Mutex<HashMap<String, Arc<Running>>>,
    /// Workers that ended and were replaced, the newest last (for status).
    ended: Mutex<std::collections::VecDeque<Arc<Running>>>,
    fetches: AtomicU64,
}

impl NetworkCode {
    /// A provider with these settings; [`NetworkCode::attach`] it to the node
    /// once built.
    pub fn new(settings: CodeSettings) -> Arc<Self> {
        let cache = BundleCache::new(settings.cache_dir.clone(), settings.cache_max_bytes);
        Arc::new(Self {
            settings,
            cache,
            node: OnceLock::new(),
            per_type: Mutex::default(),
            running: Mutex::default(),
            ended: Mutex::default(),
            fetches: AtomicU64::new(0),
        })
    }

    /// The node whose network holds the code.
    pub fn attach(&self, node: Node) {
        let _ = self.node.set(node);
    }

    /// Binaries fetched from the network since start.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// What `g2 status` shows.
    pub fn status(&self) -> CodeStatus {
        let mut running: Vec<Arc<Running>> = lock(&self.ended).iter().cloned().collect();
        running.extend(lock(&self.running).values().cloned());
        CodeStatus {
            bundles: self.cache.entries(),
            workers: running
                .iter()
                .map(|r| WorkerStatus {
                    pid: r.conn.pid(),
                    bundle: r.manifest.binary_blake3.clone(),
                    publisher: r.manifest.publisher.clone(),
                    types: r.conn.types().to_vec(),
                    objects: r.conn.objects(),
                    rss_kib: rss_kib(r.conn.pid()),
                    failed: r.conn.failure(),
                    sandbox: super::sandbox::layers_in(&r.scratch),
                })
                .collect(),
            fetches: self.fetches(),
            sandbox: sandbox::describe(&self.settings.sandbox),
        }
    }

    /// Stops every worker (the volunteer is leaving).
    pub fn stop_workers(&self) {
        let running: Vec<Arc<Running>> = lock(&self.running).drain().map(|(_, r)| r).collect();
        for r in running {
            r.conn.close("the volunteer stopped");
            if let Some(mut child) = lock(&r.child).take() {
                let _ = child.start_kill();
            }
        }
    }

    fn trusted(&self, publisher: &str) -> bool {
        self.settings.trust_any_publisher
            || self
                .settings
                .trusted_publishers
                .iter()
                .any(|k| k.eq_ignore_ascii_case(publisher))
    }

    /// The manifest this volunteer would run for `type_name`, or why none.
    async fn choose(&self, node: &Node, type_name: &str) -> Result<Manifest, String> {
        let found = list_manifests(node, type_name).await;
        if found.is_empty() {
            return Err(
                "no code for it is published on this network (its client publishes it when it starts a run)"
                    .to_string(),
            );
        }
        let (trusted, untrusted): (Vec<_>, Vec<_>) = found
            .into_iter()
            .map(|(m, _)| m)
            .partition(|m| self.trusted(&m.publisher));
        if trusted.is_empty() {
            let mut keys: Vec<String> = untrusted.iter().map(|m| m.publisher.clone()).collect();
            keys.dedup();
            return Err(format!(
                "publisher {} is not trusted by this volunteer (its owner lists trusted keys in trusted-publishers)",
                keys.join(", ")
            ));
        }
        let (ours, other): (Vec<_>, Vec<_>) = trusted.into_iter().partition(|m| m.target == TARGET);
        let Some(best) = ours.into_iter().max_by_key(|m| m.published_ms) else {
            let m = &other[0];
            return Err(format!(
                "the bundle of publisher {} is built for {}, this volunteer runs {TARGET}",
                m.publisher, m.target
            ));
        };
        Ok(best)
    }

    async fn resolve_type(&self, type_name: &str) -> Result<Arc<Running>, String> {
        let node = self
            .node
            .get()
            .cloned()
            .ok_or("the volunteer is still starting")?;
        let turn = lock(&self.per_type)
            .entry(type_name.to_string())
            .or_default()
            .clone();
        let _turn = turn.lock().await;
        // a worker already serving it, alive
        let live = lock(&self.running)
            .values()
            .find(|r| r.conn.failure().is_none() && r.conn.types().iter().any(|t| t == type_name))
            .cloned();
        if let Some(r) = live {
            return Ok(r);
        }
        let manifest = self.choose(&node, type_name).await?;
        let path = match self.cache.get(&manifest) {
            Some(p) => p,
            None => {
                info!(r#type = type_name, bundle = %manifest.binary_blake3, size = manifest.size, publisher = %manifest.publisher, "fetching bundle");
                let bytes = fetch_binary(&node, &manifest).await.map_err(|e| {
                    format!(
                        "fetching its bundle from publisher {}: {e}",
                        manifest.publisher
                    )
                })?;
                self.fetches.fetch_add(1, Ordering::Relaxed);
                self.cache
                    .put(&manifest, &bytes)
                    .map_err(|e| format!("caching its bundle: {e}"))?
            }
        };
        let running = self.start_worker(&node, &manifest, &path).await?;
        if !running.conn.types().iter().any(|t| t == type_name) {
            return Err(format!(
                "the bundle of publisher {} says it serves {type_name}, but its worker serves only {:?}",
                manifest.publisher,
                running.conn.types()
            ));
        }
        Ok(running)
    }

    async fn start_worker(
        &self,
        node: &Node,
        manifest: &Manifest,
        binary: &Path,
    ) -> Result<Arc<Running>, String> {
        if let Some(r) = lock(&self.running).get(&manifest.binary_blake3)
            && r.conn.failure().is_none()
        {
            return Ok(r.clone());
        }
        let scratch = self
            .settings
            .scratch_dir
            .join(&manifest.binary_blake3[..16]);
        let (conn, child) = spawn_worker(
            node.network(),
            binary,
            &scratch,
            &self.settings.sandbox,
            &manifest.binary_blake3[..12],
        )
        .await
        .map_err(|e| {
            format!(
                "starting the worker of publisher {}: {e}",
                manifest.publisher
            )
        })?;
        info!(pid = conn.pid(), bundle = %manifest.binary_blake3, types = ?conn.types(), "worker started");
        let running = Arc::new(Running {
            conn,
            scratch,
            manifest: manifest.clone(),
            child: Mutex::new(Some(child)),
        });
        let replaced = lock(&self.running).insert(manifest.binary_blake3.clone(), running.clone());
        if let Some(old) = replaced {
            let mut ended = lock(&self.ended);
            ended.push_back(old);
            while ended.len() > ENDED_KEPT {
                ended.pop_front();
            }
        }
        Ok(running)
    }
}

#[async_trait::async_trait]
impl TypeProvider for NetworkCode {
    async fn resolve(&self, type_name: &str) -> Result<Arc<dyn DynamicType>, String> {
        match self.resolve_type(type_name).await {
            Ok(r) => Ok(Arc::new(WorkerType::new(r.conn.clone(), type_name))),
            Err(e) => {
                warn!(r#type = type_name, "cannot host: {e}");
                Err(e)
            }
        }
    }
}

/// Starts `binary` as a worker: its standard input one end of a Unix socket
/// pair, its standard output sent to our standard error, its working
/// directory `scratch`, confined as `sandbox` says; then says hello.
pub async fn spawn_worker(
    network: &str,
    binary: &Path,
    scratch: &Path,
    sandbox: &SandboxConfig,
    label: &str,
) -> Result<(WorkerConn, tokio::process::Child), String> {
    use std::os::fd::AsFd;
    std::fs::create_dir_all(scratch)
        .map_err(|e| format!("scratch dir {}: {e}", scratch.display()))?;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(|e| e.to_string())?;
    let stdout = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| e.to_string())?;
    let mut cmd = sandbox::command(sandbox, binary, scratch)?;
    cmd.env_clear()
        .env(WORKER_ENV, g2::worker::PROTOCOL_VERSION.to_string())
        .current_dir(scratch)
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            theirs,
        )))
        .stdout(std::process::Stdio::from(stdout))
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    for var in ["RUST_LOG", "RUST_BACKTRACE"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    // (the command holds the worker's end of the socket: close ours of it, so
    // that a worker that exits shows as the socket closing)
    drop(cmd);
    ours.set_nonblocking(true).map_err(|e| e.to_string())?;
    let stream = tokio::net::UnixStream::from_std(ours).map_err(|e| e.to_string())?;
    let hello = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        WorkerConn::connect(stream, network, label.to_string()),
    )
    .await;
    match hello {
        Ok(Ok(conn)) => Ok((conn, child)),
        Ok(Err(e)) => {
            let _ = child.start_kill();
            let status = child
                .wait()
                .await
                .map(|s| s.to_string())
                .unwrap_or_default();
            Err(format!("{e} ({status})"))
        }
        Err(_) => {
            let _ = child.start_kill();
            Err("it did not say hello within 30 s".into())
        }
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
