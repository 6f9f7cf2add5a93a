//! Typed errors of calls and of building a node.

use std::time::Duration;

use crate::id::ObjectId;
use crate::wire::RemoteError;

/// Why a call has no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum CallError {
    /// No reply before the deadline. A cycle of waiting calls (A waits on B waits
    /// on A) ends here, since each object runs one call at a time.
    #[error(
        "call {method} on {target} timed out after {after:?} (the object may be busy, unreachable, or waiting in a call cycle)"
    )]
    Timeout {
        /// The target object.
        target: ObjectId,
        /// The method.
        method: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// The root of the GUID hosts no such object.
    #[error("no object {0} on this network")]
    ObjectNotFound(ObjectId),
    /// The object's volunteer failed and the run's policy cannot recover it.
    #[error("object {0} was lost with its volunteer")]
    ObjectLost(ObjectId),
    /// The object's volunteer is down and its policy keeps the object for its
    /// return; the call was retried until its deadline.
    #[error(
        "object {object} is unavailable: its volunteer {host} is down and did not return within {after:?}"
    )]
    Unavailable {
        /// The object.
        object: ObjectId,
        /// The volunteer that hosts it.
        host: crate::id::NodeId,
        /// How long the call kept retrying.
        after: Duration,
    },
    /// No route to the object's node.
    #[error("object {target} is unreachable: {reason}")]
    Unreachable {
        /// The target object.
        target: ObjectId,
        /// Why.
        reason: String,
    },
    /// The arguments could not be encoded.
    #[error("could not encode {what}: {reason}")]
    Encode {
        /// What.
        what: String,
        /// Why.
        reason: String,
    },
    /// The result could not be decoded.
    #[error("could not decode {what}: {reason}")]
    Decode {
        /// What.
        what: String,
        /// Why.
        reason: String,
    },
    /// The object's node refused the call (unknown type or method, a panic in the
    /// method, ...).
    #[error(transparent)]
    Remote(RemoteError),
    /// The proxy is bound to no node and is not used inside a hosted object.
    #[error(
        "no G2 node to call through: bind the reference to a node or call from inside an object"
    )]
    NoRuntime,
    /// The proxy's network differs from the node's.
    #[error("{object} is not on this node's network {node_network:?}")]
    WrongNetwork {
        /// The object's URI.
        object: String,
        /// The node's network.
        node_network: String,
    },
    /// The node shut down while the call was pending.
    #[error("the node stopped")]
    NodeStopped,
}

impl From<RemoteError> for CallError {
    fn from(e: RemoteError) -> Self {
        match e {
            RemoteError::ObjectNotFound(id) => CallError::ObjectNotFound(id),
            RemoteError::ObjectLost(id) => CallError::ObjectLost(id),
            RemoteError::Unavailable { object, host } => CallError::Unavailable {
                object,
                host,
                after: Duration::ZERO,
            },
            RemoteError::NoRoute { target, reason } => CallError::Unreachable { target, reason },
            e @ RemoteError::TooManyHops { target, .. } => CallError::Unreachable {
                target,
                reason: e.to_string(),
            },
            other => CallError::Remote(other),
        }
    }
}

/// Why a node could not be built or joined.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The network name is not valid.
    #[error(transparent)]
    Network(#[from] crate::uri::UriError),
    /// Two registered types share a name.
    #[error("two types are registered as {0:?}")]
    DuplicateType(&'static str),
    /// The bootstrap peer belongs to another network (the message says which
    /// network it is on, where it said).
    #[error("{0}")]
    WrongNetwork(String),
    /// The bootstrap peer could not be reached.
    #[error("cannot join through bootstrap peer {addr}: {reason}")]
    Bootstrap {
        /// Its address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The overlay did not finish joining in time.
    #[error("joining the overlay did not finish within {0:?}")]
    JoinTimeout(Duration),
}
