//! A deterministic discrete-event simulator that drives the real G2 overlay state
//! machines at 10^5–10^6 nodes.
//!
//! **Not implemented yet.** This crate is a placeholder for issue 3; it exports
//! nothing and builds no binary.
