//! # g2-routing-pastry
//!
//! Pastry routing (Rowstron & Druschel, *Pastry: Scalable, decentralized object
//! location and routing for large-scale peer-to-peer systems*, Middleware 2001) for
//! G2, as a sans-IO state machine implementing [`g2_core::Overlay`].
//!
//! Each volunteer keeps a leaf set (the L/2 numerically closest nodes on each
//! side), a routing table of 128/b rows × 2^b columns (stored sparsely: only
//! occupied slots cost memory) and a neighbourhood set of the M closest nodes by
//! round-trip time. A key is routed to its *root*, the numerically closest live
//! node (ties go clockwise), in about log_{2^b} N hops. [`PastryConfig`] holds the
//! parameters and is the [`g2_core::OverlayFactory`] of [`PastryNode`]s.
//!
//! The node does no I/O and never reads the clock: feed it inputs, drain its
//! outputs. Here two nodes form an overlay by passing messages by hand:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use g2_core::overlay::{Overlay, OverlayEvent, Route};
//! use g2_core::{Key, NodeAddr, NodeId, Peer};
//! use g2_routing_pastry::{PastryConfig, PastryNode};
//!
//! let peer = |n: u128| Peer::new(NodeId::from_u128(n << 120), NodeAddr::new(format!("mem:{n}")));
//! let mut a = PastryNode::new(PastryConfig::default(), peer(1));
//! let mut b = PastryNode::new(PastryConfig::default(), peer(9));
//! let now = Instant::now();
//! a.join(now, None); // founds the overlay
//! b.join(now, Some(a.local()));
//!
//! // Deliver messages until both are quiet.
//! loop {
//!     let mut moved = false;
//!     while let Some(t) = a.poll_transmit() {
//!         b.handle_message(now, a.local(), &t.payload)?;
//!         moved = true;
//!     }
//!     while let Some(t) = b.poll_transmit() {
//!         a.handle_message(now, b.local(), &t.payload)?;
//!         moved = true;
//!     }
//!     if !moved { break; }
//! }
//! assert!(b.is_joined());
//! // Keys near 9 << 120 now belong to b: `a` hands them over.
//! let key = Key(8 << 120);
//! assert!(b.is_root(key) && !a.is_root(key));
//! assert_eq!(a.route(key), Route::Forward(b.local()));
//! assert!(std::iter::from_fn(|| a.poll_event())
//!     .any(|e| matches!(e, OverlayEvent::KeysMoved { new_root, .. } if new_root == b.local())));
//! # Ok::<(), g2_core::overlay::OverlayError>(())
//! ```

#![warn(missing_docs)]

mod config;
mod entry;
mod leaf_set;
mod message;
mod node;
mod routing_table;
#[cfg(test)]
mod tests;

pub use config::{ConfigError, PastryConfig};
pub use node::PastryNode;
