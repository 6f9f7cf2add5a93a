//! Fault-tolerance scenario 3 of the G2:P2P paper (§4.3): erasure-coded
//! checkpoints on neighbours, sender-based logging and rebuild after a volunteer
//! never returns.
//!
//! **Not implemented yet.** This crate is a placeholder; it exports nothing.
