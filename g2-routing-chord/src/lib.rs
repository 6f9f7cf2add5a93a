//! # g2-routing-chord
//!
//! Chord routing (Stoica, Morris, Karger, Kaashoek & Balakrishnan, *Chord: A
//! Scalable Peer-to-peer Lookup Service for Internet Applications*, SIGCOMM 2001)
//! for G2, as a sans-IO state machine implementing [`g2_core::Overlay`]: the
//! second overlay beside Pastry, chosen per run through its factory.
//!
//! Each volunteer keeps its predecessor, a successor list of the `r` next nodes
//! clockwise and a finger table of 128 fingers (finger `i` is the successor of
//! `n + 2^i`; stored run-length encoded, since only about log2 N differ). The
//! root of a key is its *successor*, the first node clockwise at or after it, so
//! a node is the root of `(predecessor, self]`. Lookups follow closest preceding
//! fingers in about ½·log2 N hops. `stabilize`, `fix_fingers` and
//! `check_predecessor` run on timers; [`ChordConfig`] holds the periods and is
//! the [`g2_core::OverlayFactory`] of [`ChordNode`]s.
//!
//! The node does no I/O and never reads the clock: feed it inputs, drain its
//! outputs. Here two nodes form a ring by passing messages by hand:
//!
//! ```
//! use std::time::Instant;
//! use g2_core::overlay::{Overlay, OverlayEvent, Route};
//! use g2_core::{Key, NodeAddr, NodeId, Peer};
//! use g2_routing_chord::{ChordConfig, ChordNode};
//!
//! let peer = |n: u128| Peer::new(NodeId::from_u128(n << 120), NodeAddr::new(format!("mem:{n}")));
//! let mut a = ChordNode::new(ChordConfig::default(), peer(1));
//! let mut b = ChordNode::new(ChordConfig::default(), peer(9));
//! let now = Instant::now();
//! a.join(now, None); // founds the ring
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
//! // Keys in (a, b] now belong to b, the rest to a.
//! let key = Key(8 << 120);
//! assert!(b.is_root(key) && !a.is_root(key));
//! assert!(a.is_root(Key(12 << 120)));
//! assert_eq!(a.route(key), Route::Forward(b.local()));
//! assert!(std::iter::from_fn(|| a.poll_event())
//!     .any(|e| matches!(e, OverlayEvent::KeysMoved { new_root, .. } if new_root == b.local())));
//! # Ok::<(), g2_core::overlay::OverlayError>(())
//! ```

#![warn(missing_docs)]

mod config;
mod finger_table;
mod message;
mod node;
#[cfg(test)]
mod tests;

pub use config::{ChordConfig, ConfigError};
pub use node::ChordNode;
