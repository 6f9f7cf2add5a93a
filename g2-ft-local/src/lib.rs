//! Fault-tolerance scenario 2 of the G2:P2P paper (§4.2): per-object checkpoints
//! and a message log on the volunteer's disk, replayed after a restart.
//!
//! **Not implemented yet.** This crate is a placeholder for issue 6; it exports
//! nothing. Runs that ask for `local` are refused by the runtime with a clear error.
