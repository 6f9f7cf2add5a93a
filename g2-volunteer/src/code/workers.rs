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
use tracing::{debug, info, warn};

use super::bundle::{Manifest, TARGET};
use super::cache::{BundleCache, CachedBundle};
use super::records::{announce_holder, fetch_binary, list_holders, list_manifests};
use super::sandbox::{self, SandboxConfig};
use super::servers::CodeServer;

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
    /// Code servers tried before the network, in order.
    pub code_servers: Vec<CodeServer>,
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
    /// Of them, those read from a code server.
    #[serde(default)]
    pub from_servers: u64,
    /// Of their chunks, those served by other holders (not the records).
    #[serde(default)]
    pub chunks_from_holders: u64,
    /// Chunks of cached binaries this volunteer served to others.
    #[serde(default)]
    pub chunks_served: u64,
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
    from_servers: AtomicU64,
    chunks_from_holders: AtomicU64,
    chunks_served: AtomicU64,
    /// The chunks this volunteer serves: chunk hash to (binary hash, index).
    chunks: Mutex<HashMap<[u8; 32], (String, usize)>>,
    /// Binaries whose holding was announced to the records.
    announced: Mutex<std::collections::HashSet<String>>,
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
            from_servers: AtomicU64::new(0),
            chunks_from_holders: AtomicU64::new(0),
            chunks_served: AtomicU64::new(0),
            chunks: Mutex::default(),
            announced: Mutex::default(),
        })
    }

    /// The node whose network holds the code; it serves the chunks of the
    /// binaries cached here to other volunteers.
    pub fn attach(self: &Arc<Self>, node: Node) {
        node.serve_blocks(self.clone());
        let _ = self.node.set(node);
    }

    /// Serves the chunks of `manifest`'s cached binary from now on, and tells
    /// the manifest records so (once per binary).
    fn serve_chunks_of(&self, node: &Node, manifest: &Manifest) {
        {
            let mut chunks = lock(&self.chunks);
            for (i, h) in manifest.chunks.iter().enumerate() {
                if let Ok(hash) = super::bundle::parse_hash(h) {
                    chunks.insert(hash, (manifest.binary_blake3.clone(), i));
                }
            }
        }
        if lock(&self.announced).insert(manifest.binary_blake3.clone()) {
            let (node, manifest) = (node.clone(), manifest.clone());
            tokio::spawn(async move {
                let took = announce_holder(&node, &manifest).await;
                debug!(bundle = %manifest.binary_blake3, records = took, "serving the bundle's chunks");
            });
        }
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
            from_servers: self.from_servers.load(Ordering::Relaxed),
            chunks_from_holders: self.chunks_from_holders.load(Ordering::Relaxed),
            chunks_served: self.chunks_served.load(Ordering::Relaxed),
            sandbox: sandbox::describe(&self.settings.sandbox),
        }
    }

    /// The process ids of the workers running.
    pub fn worker_pids(&self) -> Vec<u32> {
        lock(&self.running)
            .values()
            .filter(|r| r.conn.failure().is_none())
            .map(|r| r.conn.pid())
            .collect()
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
        let mut found = Vec::new();
        for server in &self.settings.code_servers {
            match server.manifests(type_name).await {
                Ok(list) => found.extend(list),
                Err(e) => warn!(%server, r#type = type_name, "code server: {e}"),
            }
        }
        for (m, s) in list_manifests(node, type_name).await {
            if !found.iter().any(|(_, f)| *f == s) {
                found.push((m, s));
            }
        }
        if found.is_empty() {
            let servers = if self.settings.code_servers.is_empty() {
                ""
            } else {
                " nor on its code servers"
            };
            return Err(format!(
                "no code for it is published on this network{servers} (its client publishes it when it starts a run)"
            ));
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
                let bytes = self.fetch(&node, &manifest).await?;
                self.fetches.fetch_add(1, Ordering::Relaxed);
                self.cache
                    .put(&manifest, &bytes)
                    .map_err(|e| format!("caching its bundle: {e}"))?
            }
        };
        self.serve_chunks_of(&node, &manifest);
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

    /// The binary of `manifest`: from the first code server that has it whole
    /// and unaltered, else from the network (holders first, then the chunk
    /// records).
    async fn fetch(&self, node: &Node, manifest: &Manifest) -> Result<Vec<u8>, String> {
        for server in &self.settings.code_servers {
            match server.binary(manifest).await {
                Ok(bytes) => {
                    info!(%server, bundle = %manifest.binary_blake3, "bundle fetched from a code server");
                    self.from_servers.fetch_add(1, Ordering::Relaxed);
                    return Ok(bytes);
                }
                Err(e) => warn!(%server, "code server: {e}; trying the next source"),
            }
        }
        let holders = list_holders(node, manifest).await;
        info!(bundle = %manifest.binary_blake3, size = manifest.size, publisher = %manifest.publisher, holders = holders.len(), "fetching bundle");
        let fetched = fetch_binary(node, manifest, &holders).await.map_err(|e| {
            format!(
                "fetching its bundle from publisher {}: {e}",
                manifest.publisher
            )
        })?;
        self.chunks_from_holders
            .fetch_add(fetched.from_holders as u64, Ordering::Relaxed);
        info!(bundle = %manifest.binary_blake3, from_holders = fetched.from_holders, from_records = fetched.from_records, "bundle fetched");
        Ok(fetched.bytes)
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
impl g2::BlockSource for NetworkCode {
    async fn block(&self, key: &[u8; 32]) -> Option<Vec<u8>> {
        let (binary, index) = lock(&self.chunks).get(key).cloned()?;
        let path = self.cache.path_of(&binary);
        let read = tokio::task::spawn_blocking(move || read_chunk(&path, index)).await;
        match read {
            Ok(Ok(bytes)) if blake3::hash(&bytes).as_bytes() == key => {
                self.chunks_served.fetch_add(1, Ordering::Relaxed);
                Some(bytes)
            }
            other => {
                if matches!(other, Ok(Ok(_))) {
                    warn!(bundle = %binary, chunk = index, "the cached binary is damaged: its chunks are served no more");
                }
                // evicted from the cache, unreadable or damaged: served no more
                lock(&self.chunks).retain(|_, (b, _)| *b != binary);
                lock(&self.announced).remove(&binary);
                None
            }
        }
    }
}

/// Chunk `index` of the binary at `path`.
fn read_chunk(path: &Path, index: usize) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let chunk = super::bundle::CHUNK_SIZE;
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = (index * chunk) as u64;
    if start >= len {
        return Err(std::io::Error::other("past the end of the binary"));
    }
    let n = (len - start).min(chunk as u64) as usize;
    let mut buf = vec![0u8; n];
    f.seek(SeekFrom::Start(start))?;
    f.read_exact(&mut buf)?;
    Ok(buf)
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
