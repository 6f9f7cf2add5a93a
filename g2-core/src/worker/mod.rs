//! Worker processes: object code that runs outside the volunteer's process.
//!
//! A volunteer that was not built with an application's types runs the
//! application's own binary as a *worker* (paper §3.3, code downloaded on
//! demand): a child process that serves the types it registers to its parent
//! over a small versioned protocol on its standard input, which the parent
//! makes one end of a Unix socket pair. The parent's node hosts, migrates,
//! checkpoints and balances those objects like linked-in ones; the worker only
//! runs their methods. A call that an object in the worker makes to another
//! object goes back to the parent, whose node sends it (a worker has no network
//! of its own).
//!
//! An application opts in with one line at the top of its `main`:
//!
//! ```no_run
//! # use g2_core as g2;
//! # struct Island;
//! fn main() {
//!     g2::worker::serve_if_worker(|w| w /* .register::<Island>() */);
//!     // ... the application's normal main
//! }
//! ```
//!
//! Started with the environment variable [`WORKER_ENV`] set to
//! [`PROTOCOL_VERSION`] and the socket as its standard input, the binary serves
//! until its parent closes the socket, then exits; started any other way the
//! call returns at once.
//!
//! # The protocol
//!
//! Frames are a 4-byte big-endian length, then that many bytes of CBOR: a
//! [`ToWorker`] from the parent or a [`FromWorker`] from the worker, at most
//! [`MAX_WORKER_FRAME`] bytes. The parent opens with [`ToWorker::Hello`]; the
//! worker answers [`FromWorker::Hello`] with the types it serves. Every request
//! carries a number that its answer ([`FromWorker::Done`], [`ToWorker::CallDone`])
//! repeats. Objects are named by a *slot* the parent picks (an object that
//! leaves and comes back gets a new one). A frame that does not decode ends the
//! connection with an error on both sides: nothing after it can be trusted.

mod child;
mod parent;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::id::ObjectId;
use crate::runtime::error::CallError;
use crate::uri::ObjectUri;
use crate::wire::{ByteVec, RemoteError};

pub use child::{WorkerBuilder, serve, serve_if_worker};
pub(crate) use child::{call_through_parent, outlet_network, outlet_object};
pub use parent::{WorkerConn, WorkerHosted, WorkerType};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The environment variable that starts an application binary in worker mode;
/// its value is the protocol version the parent speaks.
pub const WORKER_ENV: &str = "G2_WORKER";

/// The largest frame either side accepts: an object's state travels in one.
pub const MAX_WORKER_FRAME: usize = 256 * 1024 * 1024;

/// A message from the volunteer to its worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToWorker {
    /// The first frame: the parent's protocol version and network.
    Hello {
        /// [`PROTOCOL_VERSION`] of the parent.
        version: u32,
        /// The network the parent's node is on (proxies check it).
        network: String,
    },
    /// A new object from its init value.
    Activate {
        /// Request number.
        req: u64,
        /// The slot the object will have.
        slot: u64,
        /// Its GUID.
        object: ObjectId,
        /// Its type.
        type_name: String,
        /// The CBOR init value.
        init: ByteVec,
    },
    /// An object from a saved state (migration, recovery).
    Restore {
        /// Request number.
        req: u64,
        /// The slot the object will have.
        slot: u64,
        /// Its GUID.
        object: ObjectId,
        /// Its type.
        type_name: String,
        /// The CBOR state.
        state: ByteVec,
    },
    /// Run one method.
    Call {
        /// Request number.
        req: u64,
        /// The object.
        slot: u64,
        /// The method.
        method: String,
        /// CBOR arguments.
        args: ByteVec,
    },
    /// Send the object's state.
    Snapshot {
        /// Request number.
        req: u64,
        /// The object.
        slot: u64,
    },
    /// Forget the object (it left, or its host dropped it).
    Drop {
        /// The object.
        slot: u64,
    },
    /// The result of a call an object in the worker made ([`FromWorker::Call`]).
    CallDone {
        /// The worker's request number.
        req: u64,
        /// The CBOR result, or why there is none.
        result: Result<ByteVec, CallError>,
    },
}

/// A message from a worker to its volunteer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FromWorker {
    /// The answer to [`ToWorker::Hello`].
    Hello {
        /// [`PROTOCOL_VERSION`] of the worker.
        version: u32,
        /// The type names it serves.
        types: Vec<String>,
        /// Its process id.
        pid: u32,
    },
    /// The worker will not talk to this parent (another protocol version).
    Refused {
        /// Why.
        reason: String,
    },
    /// The answer to a request: the CBOR result (empty for activate and
    /// restore), or why there is none.
    Done {
        /// The parent's request number.
        req: u64,
        /// Result.
        result: Result<ByteVec, RemoteError>,
    },
    /// An object in the worker calls another object, through the parent's node.
    Call {
        /// The worker's request number, repeated by [`ToWorker::CallDone`].
        req: u64,
        /// The calling object.
        slot: u64,
        /// The target.
        target: ObjectUri,
        /// The method.
        method: String,
        /// CBOR arguments.
        args: ByteVec,
        /// One-way (answered once accepted).
        oneway: bool,
        /// The caller's deadline in milliseconds, if it set one.
        timeout_ms: Option<u64>,
    },
}

/// Why a worker connection failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Reading or writing the socket failed.
    #[error("worker socket: {0}")]
    Io(#[from] std::io::Error),
    /// A frame was larger than [`MAX_WORKER_FRAME`].
    #[error("worker frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame did not decode.
    #[error("malformed worker frame: {0}")]
    Malformed(String),
    /// The other side broke the protocol (wrong first frame, another version).
    #[error("worker protocol: {0}")]
    Protocol(String),
}

/// Reads one frame; `None` at a clean end of stream (before a frame starts).
pub(crate) async fn read_frame<R, T>(r: &mut R) -> Result<Option<T>, WorkerError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_WORKER_FRAME {
        return Err(WorkerError::TooLarge {
            len,
            max: MAX_WORKER_FRAME,
        });
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    crate::wire::from_cbor(&buf)
        .map(Some)
        .map_err(WorkerError::Malformed)
}

/// Encodes one frame.
pub(crate) fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, WorkerError> {
    let body = crate::wire::to_cbor(msg).map_err(WorkerError::Malformed)?;
    if body.len() > MAX_WORKER_FRAME {
        return Err(WorkerError::TooLarge {
            len: body.len(),
            max: MAX_WORKER_FRAME,
        });
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// One side's writing half of the socket: whoever sends a frame writes it
/// (no writer task in between, so a reply leaves as soon as it is made).
#[derive(Clone)]
pub(crate) struct Writer {
    half: std::sync::Arc<tokio::sync::Mutex<std::pin::Pin<Box<dyn AsyncWrite + Send>>>>,
}

impl Writer {
    pub(crate) fn new(w: impl AsyncWrite + Send + 'static) -> Self {
        Self {
            half: std::sync::Arc::new(tokio::sync::Mutex::new(Box::pin(w))),
        }
    }

    /// Writes one encoded frame.
    pub(crate) async fn write(&self, frame: &[u8]) -> std::io::Result<()> {
        let mut w = self.half.lock().await;
        w.write_all(frame).await?;
        w.flush().await
    }

    /// Encodes and writes `msg`; a failure is logged (the reader sees the
    /// socket close).
    pub(crate) async fn send<T: Serialize>(&self, msg: &T) {
        match encode_frame(msg) {
            Ok(f) => {
                if let Err(e) = self.write(&f).await {
                    tracing::debug!("worker socket closed while writing: {e}");
                }
            }
            Err(e) => tracing::warn!("could not encode a worker frame: {e}"),
        }
    }

    /// As [`Writer::send`], from code that cannot wait: a task writes it.
    pub(crate) fn send_later<T: Serialize>(&self, msg: &T) {
        let Ok(frame) = encode_frame(msg) else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let w = self.clone();
        rt.spawn(async move {
            let _ = w.write(&frame).await;
        });
    }

    /// Ends the stream (the other side reads its end).
    pub(crate) async fn shutdown(&self) {
        let _ = self.half.lock().await.shutdown().await;
    }
}

#[cfg(test)]
mod tests;
