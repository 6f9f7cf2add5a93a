//! The worker side: serves the registered types to the parent.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::{FromWorker, PROTOCOL_VERSION, ToWorker, WORKER_ENV, WorkerError, Writer, read_frame};
use crate::id::ObjectId;
use crate::runtime::error::CallError;
use crate::runtime::object::{Hosted, Object, TypeEntry};
use crate::sync::lock;
use crate::uri::ObjectUri;
use crate::wire::{ByteVec, RemoteError};

/// The types a worker serves: `serve_if_worker(|w| w.register::<Island>())`.
#[derive(Default)]
pub struct WorkerBuilder {
    types: Vec<TypeEntry>,
}

impl WorkerBuilder {
    /// Serves objects of type `X`.
    pub fn register<X: Object>(mut self) -> Self {
        self.types.push(TypeEntry::of::<X>());
        self
    }

    /// The names registered so far.
    pub fn type_names(&self) -> Vec<&'static str> {
        self.types.iter().map(|t| t.name).collect()
    }
}

/// When this process was started as a worker (environment variable
/// [`WORKER_ENV`], the socket to its parent as standard input), serves the
/// types `register` adds until the parent closes the socket, then exits the
/// process; otherwise returns at once. Call it first thing in `main`.
pub fn serve_if_worker(register: impl FnOnce(WorkerBuilder) -> WorkerBuilder) {
    let Some(version) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    let code = match run_from_stdin(version, register) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("g2 worker: {e}");
            2
        }
    };
    std::process::exit(code);
}

fn run_from_stdin(
    version: std::ffi::OsString,
    register: impl FnOnce(WorkerBuilder) -> WorkerBuilder,
) -> Result<(), WorkerError> {
    use std::os::fd::AsFd;
    if version.to_str() != Some(&PROTOCOL_VERSION.to_string()) {
        return Err(WorkerError::Protocol(format!(
            "the parent speaks worker protocol {version:?}, this binary {PROTOCOL_VERSION}"
        )));
    }
    let fd = std::io::stdin().as_fd().try_clone_to_owned()?;
    let socket = std::os::unix::net::UnixStream::from(fd);
    socket.set_nonblocking(true)?;
    let builder = register(WorkerBuilder::default());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let socket = tokio::net::UnixStream::from_std(socket)?;
        serve(socket, builder).await
    })
}

/// Serves `builder`'s types over `stream` (the parent's end is a
/// [`WorkerConn`](super::WorkerConn)) until the parent closes it. Errors only
/// when the stream fails or the parent breaks the protocol.
pub async fn serve<S>(stream: S, builder: WorkerBuilder) -> Result<(), WorkerError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let types: HashMap<&'static str, TypeEntry> =
        builder.types.into_iter().map(|t| (t.name, t)).collect();
    let (r, w) = tokio::io::split(stream);
    // one read takes a frame's length and body (and often the next frame)
    let mut r = tokio::io::BufReader::with_capacity(64 * 1024, r);
    let out = Writer::new(w);
    let network = match read_frame::<_, ToWorker>(&mut r).await? {
        Some(ToWorker::Hello { version, network }) if version == PROTOCOL_VERSION => network,
        Some(ToWorker::Hello { version, .. }) => {
            let reason =
                format!("parent speaks protocol {version}, this worker {PROTOCOL_VERSION}");
            out.send(&FromWorker::Refused {
                reason: reason.clone(),
            })
            .await;
            out.shutdown().await;
            return Err(WorkerError::Protocol(reason));
        }
        Some(other) => {
            return Err(WorkerError::Protocol(format!(
                "the first frame must be Hello, not {other:?}"
            )));
        }
        None => return Ok(()),
    };
    let mut names: Vec<String> = types.keys().map(|s| s.to_string()).collect();
    names.sort();
    out.send(&FromWorker::Hello {
        version: PROTOCOL_VERSION,
        types: names,
        pid: std::process::id(),
    })
    .await;
    let link = Arc::new(Link {
        out: out.clone(),
        network,
        pending: Default::default(),
        next: AtomicU64::new(1),
    });
    let mut objects: HashMap<u64, mpsc::UnboundedSender<Cmd>> = HashMap::new();
    let result = loop {
        let msg = match read_frame::<_, ToWorker>(&mut r).await {
            Ok(Some(m)) => m,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        let restore = matches!(msg, ToWorker::Restore { .. });
        match msg {
            ToWorker::Hello { .. } => break Err(WorkerError::Protocol("Hello twice".into())),
            ToWorker::Activate {
                req,
                slot,
                object,
                type_name,
                init: bytes,
            }
            | ToWorker::Restore {
                req,
                slot,
                object,
                type_name,
                state: bytes,
            } => {
                let at = Slot { req, slot, object };
                start_object(&types, &link, &mut objects, at, &type_name, bytes, restore).await
            }
            ToWorker::Call {
                req,
                slot,
                method,
                args,
            } => {
                let cmd = Cmd::Call { req, method, args };
                let sent = objects.get(&slot).is_some_and(|tx| tx.send(cmd).is_ok());
                if !sent {
                    link.send(&FromWorker::Done {
                        req,
                        result: Err(RemoteError::WorkerFailed(format!(
                            "no object in slot {slot}"
                        ))),
                    })
                    .await;
                }
            }
            ToWorker::Snapshot { req, slot } => {
                let sent = objects
                    .get(&slot)
                    .is_some_and(|tx| tx.send(Cmd::Snapshot { req }).is_ok());
                if !sent {
                    link.send(&FromWorker::Done {
                        req,
                        result: Err(RemoteError::WorkerFailed(format!(
                            "no object in slot {slot}"
                        ))),
                    })
                    .await;
                }
            }
            ToWorker::Drop { slot } => {
                objects.remove(&slot);
            }
            ToWorker::CallDone { req, result } => match lock(&link.pending).remove(&req) {
                Some(tx) => {
                    let _ = tx.send(result.map(|b| b.0));
                }
                None => debug!(req, "answer to a call nobody waits for"),
            },
        }
    };
    drop(objects);
    // calls waiting for the parent end with the connection
    lock(&link.pending).clear();
    out.shutdown().await;
    result
}

/// What the task of one object in the worker receives.
enum Cmd {
    Call {
        req: u64,
        method: String,
        args: ByteVec,
    },
    Snapshot {
        req: u64,
    },
}

/// Where the answer to an object's outgoing call goes.
type CallAnswer = oneshot::Sender<Result<Vec<u8>, CallError>>;

/// The worker's way back to its parent, shared by its objects.
struct Link {
    out: Writer,
    network: String,
    pending: std::sync::Mutex<HashMap<u64, CallAnswer>>,
    next: AtomicU64,
}

impl Link {
    async fn send(&self, msg: &FromWorker) {
        self.out.send(msg).await;
    }
}

/// While an object in this worker runs a method: how its proxies call out.
#[derive(Clone)]
struct Outlet {
    link: Arc<Link>,
    slot: u64,
    object: ObjectId,
}

tokio::task_local! {
    static OUTLET: Outlet;
}

/// The network of the parent, when called from an object running in a worker.
pub(crate) fn outlet_network() -> Option<String> {
    OUTLET.try_with(|o| o.link.network.clone()).ok()
}

/// The object whose method runs on this task, in a worker.
pub(crate) fn outlet_object() -> Option<ObjectId> {
    OUTLET.try_with(|o| o.object).ok()
}

/// Sends a call from an object in this worker through the parent's node.
pub(crate) async fn call_through_parent(
    target: &ObjectUri,
    method: &str,
    args: Vec<u8>,
    oneway: bool,
    timeout: Option<Duration>,
) -> Result<Vec<u8>, CallError> {
    let outlet = OUTLET
        .try_with(|o| o.clone())
        .map_err(|_| CallError::NoRuntime)?;
    let req = outlet.link.next.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = oneshot::channel();
    lock(&outlet.link.pending).insert(req, tx);
    outlet
        .link
        .send(&FromWorker::Call {
            req,
            slot: outlet.slot,
            target: target.clone(),
            method: method.to_string(),
            args: ByteVec(args),
            oneway,
            timeout_ms: timeout.map(|t| t.as_millis().min(u64::MAX as u128) as u64),
        })
        .await;
    rx.await.unwrap_or(Err(CallError::NodeStopped))
}

/// Which request starts which object in which slot.
struct Slot {
    req: u64,
    slot: u64,
    object: ObjectId,
}

async fn start_object(
    types: &HashMap<&'static str, TypeEntry>,
    link: &Arc<Link>,
    objects: &mut HashMap<u64, mpsc::UnboundedSender<Cmd>>,
    at: Slot,
    type_name: &str,
    bytes: ByteVec,
    restore: bool,
) {
    let Slot { req, slot, object } = at;
    let Some(entry) = types.get(type_name).cloned() else {
        link.send(&FromWorker::Done {
            req,
            result: Err(RemoteError::CodeUnavailable {
                type_name: type_name.to_string(),
                node: crate::id::NodeId::from_u128(0),
                reason: "the worker does not serve this type".into(),
            }),
        })
        .await;
        return;
    };
    let (tx, rx) = mpsc::unbounded_channel();
    objects.insert(slot, tx);
    let link = link.clone();
    tokio::spawn(async move {
        let built = if restore {
            entry.restore(object, &bytes.0).await
        } else {
            entry.activate(object, &bytes.0).await
        };
        let obj = match built {
            Ok(obj) => {
                link.send(&FromWorker::Done {
                    req,
                    result: Ok(ByteVec::default()),
                })
                .await;
                obj
            }
            Err(reason) => {
                let what = if restore { "state" } else { "init" };
                link.send(&FromWorker::Done {
                    req,
                    result: Err(RemoteError::Decode {
                        what: format!("{what} of {}", entry.name),
                        reason,
                    }),
                })
                .await;
                return;
            }
        };
        run_object(link, slot, object, obj, rx).await;
    });
}

async fn run_object(
    link: Arc<Link>,
    slot: u64,
    object: ObjectId,
    mut obj: Box<dyn Hosted>,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
) {
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Cmd::Call { req, method, args } => {
                let outlet = Outlet {
                    link: link.clone(),
                    slot,
                    object,
                };
                let run = AssertUnwindSafe(obj.invoke(&method, &args.0)).catch_unwind();
                let result = match OUTLET.scope(outlet, run).await {
                    Ok(r) => r,
                    Err(panic) => {
                        let msg = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "non-string panic payload".into());
                        warn!(%object, %method, "object method panicked: {msg}");
                        Err(RemoteError::Panicked(msg))
                    }
                };
                link.send(&FromWorker::Done {
                    req,
                    result: result.map(ByteVec),
                })
                .await;
            }
            Cmd::Snapshot { req } => {
                let result =
                    obj.snapshot()
                        .await
                        .map(ByteVec)
                        .map_err(|reason| RemoteError::Decode {
                            what: format!("state of {object}"),
                            reason,
                        });
                link.send(&FromWorker::Done { req, result }).await;
            }
        }
    }
}
