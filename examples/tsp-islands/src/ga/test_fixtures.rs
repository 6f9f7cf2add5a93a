//! Instances and parameters shared by the tests of the GA's modules.

use super::island_core::GaParams;
use super::rng::Rng;
use crate::tsplib::DistMatrix;

pub(super) fn random_matrix(n: usize, seed: u64) -> DistMatrix {
    let mut rng = Rng::seed_from(seed, 0xC0FFEE);
    let coords: Vec<(f64, f64)> = (0..n)
        .map(|_| (rng.unit_f64() * 1000.0, rng.unit_f64() * 1000.0))
        .collect();
    DistMatrix::from_coords(&coords)
}

pub(super) fn small_params() -> GaParams {
    GaParams {
        population: 8,
        generations: 3,
        migrants: 2,
        offspring: 8,
        ..GaParams::default()
    }
}
