//! Transports for G2 nodes, implementing `g2_core::Transport`.
//!
//! * [`mem`]: an in-process network for many nodes in one process, with fault
//!   injection (drop the messages between two nodes, partition, kill a node).
//!   Tests, the simulator-free examples and benchmarks run on it.
//! * [`quic`]: QUIC over UDP (quinn + rustls) with self-certifying node ids and
//!   the network name checked at the handshake.

pub mod mem;
#[cfg(feature = "quic")]
pub mod quic;
