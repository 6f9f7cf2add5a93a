//! Fault-tolerance scenario 3 of the G2:P2P paper (§4.3): erasure-coded
//! checkpoints on neighbours, sender-based logging and rebuild after a volunteer
//! never returns.
//!
//! **In progress.** What exists are its building blocks, with their tests:
//! the checkpoint coding ([`shards`]: an object's state cut into data and
//! parity shards, each checksummed, any `n` intact shards of a checkpoint
//! enough to rebuild it) and the bookkeeping of sender-based logging
//! ([`log`]: the caller's log and its trimming, the callee's table that
//! answers a call sent again instead of running it twice, and replay in the
//! order the callee first ran the calls). The policy itself (placing shards
//! on the replica set, the messages between nodes, rebuild) is not written
//! yet, and `--ft replicated` is still refused.

pub mod log;
pub mod shards;

pub use log::{Admit, DedupTable, Gap, LoggedCall, SenderLog, replay_order};

pub use shards::{Coding, Shard, ShardError, decode, encode};
