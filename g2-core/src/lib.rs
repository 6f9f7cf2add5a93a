//! # g2-core
//!
//! The core of G2, a framework for fully decentralised cycle stealing after the
//! G2:P2P paper: volunteers form a structured P2P overlay, and applications are
//! distributed objects addressed by 128-bit GUIDs, each hosted by the volunteer
//! whose id is closest to its GUID.
//!
//! This crate holds:
//! * identities and ring arithmetic ([`Key`], [`NodeId`], [`ObjectId`], [`CallId`]),
//!   and object URIs ([`ObjectUri`], `g2p2p://<network>/<uuid>`);
//! * the versioned wire format ([`wire`]);
//! * the four strategy traits — [`Overlay`] (sans-IO routing), [`Transport`],
//!   [`Store`] and [`FaultPolicy`] — with mockall mocks behind the `mock` feature;
//! * the node runtime ([`Node`]): remote activation, hop-by-hop routing with a
//!   location cache, one call at a time per object, one-way calls, deadlines and
//!   typed [`CallError`]s; and its typed builder ([`NodeBuilder`]).
//!
//! Applications normally use the `g2` facade crate and `#[g2::remote]`.
//!
//! ```
//! use g2_core::{Key, ObjectId, ObjectUri};
//!
//! let uri: ObjectUri = "g2p2p://plas.qut.edu/fccf281d-47bd-45c7-8f2b-a48d462d171b".parse()?;
//! assert_eq!(uri.network, "plas.qut.edu");
//! // the root of an object is the node numerically closest to its GUID
//! let nodes = [Key(10), Key(200), Key(u128::MAX)];
//! assert_eq!(ObjectId::from_u128(3).key().closest(nodes), Some(Key(u128::MAX)));
//! # Ok::<(), g2_core::UriError>(())
//! ```

#![warn(missing_docs)]

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod fault;
mod id;
pub mod overlay;
pub mod rng;
mod runtime;
pub mod store;
#[doc(hidden)]
pub mod sync;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod transport;
mod uri;
pub mod wire;
pub mod worker;

pub use fault::{FaultPolicy, PolicyPeers};
pub use id::{CallId, Key, NodeAddr, NodeId, ObjectId, Peer};
pub use overlay::{Overlay, OverlayFactory};
pub use runtime::blocks::BlockSource;
pub use runtime::builder::{
    DEFAULT_CALL_TIMEOUT, DEFAULT_JOIN_TIMEOUT, NoNetwork, NoOverlay, NoTransport, NodeBuilder,
    WithNetwork, WithOverlay, WithTransport,
};
pub use runtime::context::{compute, current_object};
pub use runtime::error::{BuildError, CallError};
pub use runtime::node::{LeaveError, Node, NodeStats, NodeStatus};
pub use runtime::object::{
    Dispatch, DispatchFuture, DynamicType, Hosted, Object, ObjectHandle, RemoteRef, SnapshotFuture,
    TypeProvider,
};
#[doc(hidden)]
pub use runtime::object::{decode_args, encode_result};
pub use store::{MemStore, Store};
pub use transport::Transport;
pub use uri::{ObjectUri, SCHEME, UriError, validate_network_name};
pub use wire::RemoteError;

/// Re-exports used by code that `#[g2::remote]` generates. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use async_trait::async_trait;
    pub use serde;
}
