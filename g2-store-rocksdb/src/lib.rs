//! A durable `g2_core::Store` on RocksDB.
//!
//! **Not implemented yet.** This crate is a placeholder for issue 6 (local
//! checkpoints and message logs); it exports nothing and does not link RocksDB.
