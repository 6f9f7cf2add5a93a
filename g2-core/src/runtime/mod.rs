//! The node runtime: object hosting, calls, routing, migration, placement,
//! load balancing, recovery, and the typed builder.
//!
//! One file per concern, each owning its state; [`node::NodeInner`] holds one
//! field per owner and the parts meet only through each other's methods:
//!
//! | file | concern | state it owns (field of `NodeInner`) |
//! |---|---|---|
//! | `node.rs` | the [`Node`](node::Node) handle, start, graceful leave, shutdown, status | lifecycle flags, `tasks` (a `JoinSet`: shutdown stops every task), counters |
//! | `calls.rs` | caller side: create/call, retries within the deadline, replies | `calls`: pending requests, location cache, client call ids |
//! | `routing.rs` | the next step of a request (`next_step`, pure) and its async shell | none (asks the others through `RouteView`) |
//! | `catalog.rs` | hosted objects, forwarding addresses, lost objects; activation | `catalog` |
//! | `actor.rs` | the per-object actor; queueing an arriving call | each actor's own inbox and object |
//! | `migration.rs` | freeze, transfer, install once, thaw; `MigrateError` | `transfers_in`, `transitions` |
//! | `placement.rs` | placement records, failed peers, moves to roots | `placements` |
//! | `balance.rs` | the [`Balancer`](balance::Balancer) (pure decisions) and load reports | `balancer`, `hosting_neighbour` |
//! | `blocks.rs` | content-addressed blocks asked of one node (not routed) | `blocks`: the node's block source |
//! | `policy_peers.rs` | what fault-tolerance policies ask of the network: replica sets, messages to the same policy on a peer, overlay news | none |
//! | `recovery.rs` | hosting again what a policy kept, at start | none |
//! | `driver.rs` | overlay loop, control frames out, frames in | `overlay` (driven here, asked by all), `control_out` |
//!
//! Locks are `std::sync::Mutex`es taken through [`crate::sync::lock`] for short
//! critical sections, never held across an `.await`, and never two at once, with
//! one exception: the idle control sender holds `control_out` while it checks its
//! queue. The per-object transition locks (`migration::Transitions`) are async
//! locks held across the awaits of an install or of a departure's last steps;
//! no other lock is held while one is awaited. Decisions read the clock only through [`now`] (tokio's clock, so that
//! tests on a paused clock move the overlays' timers too), and the pure decision
//! functions (`routing::next_step`, the `Balancer`, `Catalog`, `Placements`)
//! take the time as an argument.

pub(crate) mod actor;
pub(crate) mod balance;
pub(crate) mod blocks;
pub(crate) mod builder;
pub(crate) mod calls;
pub(crate) mod catalog;
pub(crate) mod context;
pub(crate) mod driver;
pub(crate) mod error;
pub(crate) mod migration;
pub(crate) mod node;
pub(crate) mod object;
pub(crate) mod placement;
pub(crate) mod policy_peers;
pub(crate) mod recovery;
pub(crate) mod routing;
#[cfg(test)]
mod tests;

/// The runtime's clock: tokio's, as a std `Instant` (what the overlays take).
/// The same as `Instant::now()` unless a test paused tokio's clock.
pub(crate) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// 64 random bits (transfer ids, start numbers).
pub(crate) fn random_u64() -> u64 {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    u64::from_le_bytes(bytes[..8].try_into().expect("a uuid has 16 bytes"))
}
