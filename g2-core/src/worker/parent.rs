//! The volunteer side: a connection to one worker process, and the objects
//! hosted in it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::{
    FromWorker, PROTOCOL_VERSION, ToWorker, WorkerError, Writer, encode_frame, read_frame,
};
use crate::id::ObjectId;
use crate::runtime::context;
use crate::runtime::error::CallError;
use crate::runtime::object::{DispatchFuture, Hosted, SnapshotFuture};
use crate::sync::lock;
use crate::uri::ObjectUri;
use crate::wire::{ByteVec, RemoteError};

/// A call an object in the worker makes, waiting for the parent's node.
struct OutCall {
    req: u64,
    target: ObjectUri,
    method: String,
    args: Vec<u8>,
    oneway: bool,
    timeout: Option<Duration>,
}

type Answer = oneshot::Sender<Result<ByteVec, RemoteError>>;

struct ConnInner {
    label: String,
    pid: u32,
    types: Vec<String>,
    out: Writer,
    pending: Mutex<HashMap<u64, Answer>>,
    /// Per object running a method: where its outgoing calls go.
    calling: Mutex<HashMap<u64, mpsc::UnboundedSender<OutCall>>>,
    next: AtomicU64,
    objects: AtomicUsize,
    /// Why the connection ended, once it has.
    failed: Mutex<Option<String>>,
}

/// The volunteer's connection to one worker process. Cloning shares it.
#[derive(Clone)]
pub struct WorkerConn {
    inner: Arc<ConnInner>,
}

impl std::fmt::Debug for WorkerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "worker {} (pid {})", self.inner.label, self.inner.pid)
    }
}

impl WorkerConn {
    /// Says hello over `stream` (the worker's socket), learns the types the
    /// worker serves, and starts reading its frames. `label` names the worker
    /// in errors and logs (its bundle).
    pub async fn connect<S>(stream: S, network: &str, label: String) -> Result<Self, WorkerError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(stream);
        // one read takes a frame's length and body (and often the next frame)
        let mut r = tokio::io::BufReader::with_capacity(64 * 1024, r);
        let out = Writer::new(w);
        let hello = encode_frame(&ToWorker::Hello {
            version: PROTOCOL_VERSION,
            network: network.to_string(),
        })?;
        // (a worker that exits at once shows as the socket closing, below)
        let _ = out.write(&hello).await;
        let first = match read_frame::<_, FromWorker>(&mut r).await {
            // it exited before reading our hello
            Err(WorkerError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                Ok(None)
            }
            other => other,
        };
        let (pid, types) = match first? {
            Some(FromWorker::Hello {
                version: PROTOCOL_VERSION,
                types,
                pid,
            }) => (pid, types),
            Some(FromWorker::Hello { version, .. }) => {
                return Err(WorkerError::Protocol(format!(
                    "the worker speaks protocol {version}, this volunteer {PROTOCOL_VERSION}"
                )));
            }
            Some(FromWorker::Refused { reason }) => return Err(WorkerError::Protocol(reason)),
            Some(other) => {
                return Err(WorkerError::Protocol(format!(
                    "the first frame must be Hello, not {}",
                    kind(&other)
                )));
            }
            None => {
                return Err(WorkerError::Protocol(
                    "the worker closed its socket before saying hello (is it a G2 application that calls serve_if_worker?)".into(),
                ));
            }
        };
        let inner = Arc::new(ConnInner {
            label,
            pid,
            types,
            out,
            pending: Mutex::default(),
            calling: Mutex::default(),
            next: AtomicU64::new(1),
            objects: AtomicUsize::new(0),
            failed: Mutex::default(),
        });
        let reader = inner.clone();
        tokio::spawn(async move {
            let why = loop {
                match read_frame::<_, FromWorker>(&mut r).await {
                    Ok(Some(msg)) => {
                        if let Err(e) = reader.handle(msg).await {
                            break e;
                        }
                    }
                    Ok(None) => break "it closed its socket (exited or was killed)".to_string(),
                    Err(e) => break e.to_string(),
                }
            };
            reader.fail(why);
        });
        Ok(Self { inner })
    }

    /// The type names the worker serves.
    pub fn types(&self) -> &[String] {
        &self.inner.types
    }

    /// The worker's process id, as it said.
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// How many objects it hosts.
    pub fn objects(&self) -> usize {
        self.inner.objects.load(Ordering::Relaxed)
    }

    /// Why the connection ended, if it has.
    pub fn failure(&self) -> Option<String> {
        lock(&self.inner.failed).clone()
    }

    /// Ends the connection from this side (the worker exits when it sees the
    /// socket close): calls in flight fail with `reason`.
    pub fn close(&self, reason: &str) {
        self.inner.fail(reason.to_string());
    }

    /// A new object of `type_name` from its CBOR init value, hosted in the worker.
    pub async fn activate(
        &self,
        object: ObjectId,
        type_name: &str,
        init: &[u8],
    ) -> Result<Box<dyn Hosted>, String> {
        self.start(object, type_name, init, false).await
    }

    /// Object `object` again from its CBOR state, hosted in the worker.
    pub async fn restore(
        &self,
        object: ObjectId,
        type_name: &str,
        state: &[u8],
    ) -> Result<Box<dyn Hosted>, String> {
        self.start(object, type_name, state, true).await
    }

    async fn start(
        &self,
        object: ObjectId,
        type_name: &str,
        bytes: &[u8],
        restore: bool,
    ) -> Result<Box<dyn Hosted>, String> {
        let slot = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let answer = self.inner.request(|req| {
            let type_name = type_name.to_string();
            let bytes = ByteVec(bytes.to_vec());
            if restore {
                ToWorker::Restore {
                    req,
                    slot,
                    object,
                    type_name,
                    state: bytes,
                }
            } else {
                ToWorker::Activate {
                    req,
                    slot,
                    object,
                    type_name,
                    init: bytes,
                }
            }
        });
        match answer.await {
            Ok(_) => {
                self.inner.objects.fetch_add(1, Ordering::Relaxed);
                Ok(Box::new(WorkerHosted {
                    conn: self.clone(),
                    slot,
                    object,
                }))
            }
            Err(RemoteError::Decode { reason, .. }) => Err(reason),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl ConnInner {
    /// Sends the request `make(req)` makes; its answer.
    async fn request<F: FnOnce(u64) -> ToWorker>(&self, make: F) -> Result<ByteVec, RemoteError> {
        let req = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let failed = lock(&self.failed).clone();
        let sent = match failed {
            Some(why) => Err(why),
            None => {
                lock(&self.pending).insert(req, tx);
                match encode_frame(&make(req)) {
                    Ok(f) => self
                        .out
                        .write(&f)
                        .await
                        .map_err(|e| format!("its socket is closed ({e})")),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        if let Err(why) = sent {
            lock(&self.pending).remove(&req);
            warn!(worker = %self.label, "request to worker failed: {why}");
            return Err(RemoteError::WorkerFailed(format!(
                "worker {} (pid {}): {why}",
                self.label, self.pid
            )));
        }
        rx.await.unwrap_or_else(|_| {
            Err(RemoteError::WorkerFailed(format!(
                "worker {} (pid {}) ended before answering",
                self.label, self.pid
            )))
        })
    }

    /// One frame from the worker; an error ends the connection.
    async fn handle(&self, msg: FromWorker) -> Result<(), String> {
        match msg {
            FromWorker::Done { req, result } => match lock(&self.pending).remove(&req) {
                Some(tx) => {
                    let _ = tx.send(result);
                    Ok(())
                }
                None => Err(format!("it answered request {req}, which nobody sent")),
            },
            FromWorker::Call {
                req,
                slot,
                target,
                method,
                args,
                oneway,
                timeout_ms,
            } => {
                let call = OutCall {
                    req,
                    target,
                    method,
                    args: args.0,
                    oneway,
                    timeout: timeout_ms.map(Duration::from_millis),
                };
                let to = lock(&self.calling).get(&slot).cloned();
                match to.map(|tx| tx.send(call)) {
                    Some(Ok(())) => {}
                    _ => {
                        debug!(worker = %self.label, slot, "a call from an object not running a method");
                        self.out
                            .send(&ToWorker::CallDone {
                                req,
                                result: Err(CallError::NoRuntime),
                            })
                            .await;
                    }
                }
                Ok(())
            }
            FromWorker::Hello { .. } | FromWorker::Refused { .. } => {
                Err("it said hello twice".into())
            }
        }
    }

    /// Ends the connection: every call in flight fails with `why`.
    fn fail(&self, why: String) {
        let mut failed = lock(&self.failed);
        if failed.is_none() {
            warn!(worker = %self.label, pid = self.pid, "worker connection ended: {why}");
            *failed = Some(why.clone());
        }
        drop(failed);
        let pending: Vec<Answer> = lock(&self.pending).drain().map(|(_, tx)| tx).collect();
        for tx in pending {
            let _ = tx.send(Err(RemoteError::WorkerFailed(format!(
                "worker {} (pid {}): {why}",
                self.label, self.pid
            ))));
        }
        lock(&self.calling).clear();
        // the worker reads the end of its socket and exits
        let out = self.out.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { out.shutdown().await });
        }
    }
}

/// An object hosted in a worker process: the node's actor runs its calls one
/// at a time as for a linked-in object; the worker runs the method.
pub struct WorkerHosted {
    conn: WorkerConn,
    slot: u64,
    object: ObjectId,
}

impl Hosted for WorkerHosted {
    fn invoke<'a>(&'a mut self, method: &'a str, args: &'a [u8]) -> DispatchFuture<'a> {
        Box::pin(async move {
            let inner = &self.conn.inner;
            let (tx, mut calls) = mpsc::unbounded_channel();
            lock(&inner.calling).insert(self.slot, tx);
            let done = inner.request(|req| ToWorker::Call {
                req,
                slot: self.slot,
                method: method.to_string(),
                args: ByteVec(args.to_vec()),
            });
            tokio::pin!(done);
            // the node whose actor runs this call sends the object's own calls,
            // with the object's call ids and policy
            let node = context::current_node();
            let mut outgoing = FuturesUnordered::new();
            let result = loop {
                tokio::select! {
                    r = &mut done => break r,
                    Some(call) = calls.recv() => {
                        let node = node.clone();
                        outgoing.push(async move {
                            let result = match node {
                                Some(n) if n.network() == call.target.network => n
                                    .call_raw(call.target.id, &call.method, call.args, call.oneway, call.timeout)
                                    .await,
                                Some(n) => Err(CallError::WrongNetwork {
                                    object: call.target.to_string(),
                                    node_network: n.network().to_string(),
                                }),
                                None => Err(CallError::NoRuntime),
                            };
                            (call.req, result)
                        });
                    }
                    Some((req, result)) = outgoing.next(), if !outgoing.is_empty() => {
                        inner.out.send(&ToWorker::CallDone { req, result: result.map(ByteVec) }).await;
                    }
                }
            };
            lock(&inner.calling).remove(&self.slot);
            result.map(|b| b.0)
        })
    }

    fn snapshot(&mut self) -> SnapshotFuture<'_> {
        let answer = self.conn.inner.request(|req| ToWorker::Snapshot {
            req,
            slot: self.slot,
        });
        Box::pin(async move { answer.await.map(|b| b.0).map_err(|e| e.to_string()) })
    }
}

impl Drop for WorkerHosted {
    fn drop(&mut self) {
        self.conn.inner.objects.fetch_sub(1, Ordering::Relaxed);
        if lock(&self.conn.inner.failed).is_none() {
            self.conn
                .inner
                .out
                .send_later(&ToWorker::Drop { slot: self.slot });
        }
        debug!(object = %self.object, worker = %self.conn.inner.label, "object dropped from its worker");
    }
}

/// One type a worker serves, as a node's [`TypeProvider`](crate::TypeProvider)
/// hands it out: objects of it are activated and restored in the worker.
pub struct WorkerType {
    conn: WorkerConn,
    name: String,
}

impl WorkerType {
    /// Type `name` of the worker behind `conn`.
    pub fn new(conn: WorkerConn, name: impl Into<String>) -> Self {
        Self {
            conn,
            name: name.into(),
        }
    }
}

#[async_trait::async_trait]
impl crate::DynamicType for WorkerType {
    async fn activate(&self, id: ObjectId, init: &[u8]) -> Result<Box<dyn Hosted>, String> {
        self.conn.activate(id, &self.name, init).await
    }
    async fn restore(&self, id: ObjectId, state: &[u8]) -> Result<Box<dyn Hosted>, String> {
        self.conn.restore(id, &self.name, state).await
    }
}

fn kind(msg: &FromWorker) -> &'static str {
    match msg {
        FromWorker::Hello { .. } => "Hello",
        FromWorker::Refused { .. } => "Refused",
        FromWorker::Done { .. } => "Done",
        FromWorker::Call { .. } => "Call",
    }
}
