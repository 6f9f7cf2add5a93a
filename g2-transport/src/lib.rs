//! Transports for G2 nodes, implementing `g2_core::Transport`.
//!
//! * [`mem`]: an in-process network for many nodes in one process, with fault
//!   injection (drop the messages between two nodes, partition, kill a node).
//!   Tests, the simulator-free examples and benchmarks run on it.
//! * `quic` (quinn + rustls, self-certifying node ids) arrives with issue 5.

pub mod mem;
