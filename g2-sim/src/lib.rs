//! # g2-sim
//!
//! A deterministic discrete-event simulator for G2's overlays. It drives the
//! *real* sans-IO overlay state machines (through [`g2_core::Overlay`], the trait
//! the node runtime uses) on a virtual clock, over a latency model (random points
//! on a sphere or a plane, as in the Pastry paper), with message loss, scheduled
//! joins, graceful leaves and silent failures. Every random choice comes from one
//! seeded generator, so a run is a function of its seed.
//!
//! The experiments ([`experiments::hops`], [`experiments::fail`],
//! [`experiments::churn`]) reproduce the Pastry and Chord papers' measurements
//! on either overlay (`--overlay pastry|chord`), and [`experiments::compare`]
//! puts overlays side by side; the `g2-sim` binary is a thin CLI over them.
//!
//! ```
//! use g2_sim::experiments::{hops, Build, HopsParams, Setup};
//!
//! let setup = Setup { build: Build::Join, ..Setup::default() };
//! let report = hops(&setup, &HopsParams { nodes: vec![50], lookups: 500 })?;
//! let row = &report.results[0];
//! assert_eq!(row.delivered_pct, 100.0);
//! assert!(row.mean_hops < 3.0);
//! # Ok::<(), g2_sim::SimError>(())
//! ```

#![warn(missing_docs)]

pub mod experiments;
pub mod latency;
mod nearest;
pub mod output;
pub mod overlays;
pub mod rng;
pub mod sim;

pub use sim::{Lookup, NetworkConfig, Simulator};

/// What can stop an experiment.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// `--overlay` names no overlay the simulator knows.
    #[error("unknown overlay {0:?} (known: pastry, chord)")]
    UnknownOverlay(String),
    /// The overlay's parameters are invalid.
    #[error("{0}")]
    Config(String),
    /// Direct initialisation was asked of an overlay that has none.
    #[error("overlay {0} has no direct state initialisation; use --build join")]
    NoDirectInit(String),
    /// A report could not be written.
    #[error("cannot write {0}")]
    Output(String),
}
