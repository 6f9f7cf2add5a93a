//! Deterministic island genetic algorithm (memetic) for the symmetric TSP.
//!
//! Each island ([`IslandCore`]) holds a small population of tours, every one
//! of them a local optimum of 2-opt + Or-opt. An epoch first lets migrants in
//! (replacing the worst tours), then runs a number of generations of
//! tournament selection, order crossover (OX), double-bridge mutation and
//! local search, with (μ + λ) survivor selection that keeps tours distinct.
//!
//! Everything is a pure function of the distance matrix, the parameters, the
//! seed, the island index and the migrants handed in: the random number
//! generator ([`Rng`](rng::Rng), xoshiro256**) lives in the island state, no hash map
//! order or clock is consulted, and ties are broken by a fixed total order
//! ([`better`]). So a serialised island resumed anywhere evolves exactly as
//! the original would have.
//!
//! Tours are permutations of `0..n` stored in [normalised](tour::normalise) form:
//! starting at city 0, in the direction whose second city is smaller.
//!
//! [`run_sequential`] is the reference driver: `K` islands on a ring, each
//! receiving its ring neighbours' emigrants of the previous epoch.

mod island_core;
mod local_search;
mod operators;
mod rng;
mod sequential;
#[cfg(test)]
mod test_fixtures;
mod tour;

pub use island_core::{GaParams, IslandCore};
pub use sequential::run_sequential;
pub use tour::{better, ring_neighbours, tour_blake3};

/// A tour: the cities `0..n` in visiting order (closed, so rotations and the
/// reversal describe the same tour).
pub type Tour = Vec<u32>;
