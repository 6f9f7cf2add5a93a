//! The reference driver: all islands in one thread, no framework.

use super::Tour;
use super::island_core::{GaParams, IslandCore};
use super::tour::{better, ring_neighbours};
use crate::tsplib::DistMatrix;

/// Runs `islands` islands (at least one) on a ring for `epochs` epochs, all
/// in this thread. At epoch `e > 0`, island `i` receives the emigrants of its
/// [`ring_neighbours`] after epoch `e - 1`, concatenated in that order.
/// Returns the best tour of all islands by [`better`].
pub fn run_sequential(
    m: &DistMatrix,
    params: GaParams,
    islands: u32,
    epochs: u32,
    seed: u64,
) -> (Tour, u64) {
    let k = islands.max(1);
    let mut cores: Vec<IslandCore> = (0..k)
        .map(|i| IslandCore::new(m, params, seed, i))
        .collect();
    for epoch in 0..epochs {
        let outgoing: Vec<Vec<Tour>> = if epoch == 0 {
            vec![Vec::new(); k as usize]
        } else {
            cores.iter().map(IslandCore::emigrants).collect()
        };
        for (i, core) in (0..k).zip(cores.iter_mut()) {
            let migrants: Vec<Tour> = if epoch == 0 {
                Vec::new()
            } else {
                ring_neighbours(i, k)
                    .into_iter()
                    .flat_map(|j| outgoing[j as usize].iter().cloned())
                    .collect()
            };
            core.run_epoch(m, &migrants);
        }
    }
    let mut best: Option<(Tour, u64)> = None;
    for core in &cores {
        let cand = core.best();
        let take = match &best {
            None => true,
            Some((t, l)) => better((&cand.0, cand.1), (t, *l)),
        };
        if take {
            best = Some(cand);
        }
    }
    best.unwrap_or((Vec::new(), u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ga::test_fixtures::{random_matrix, small_params};
    use crate::ga::tour::is_permutation;
    use crate::tsplib::Instance;

    fn berlin52() -> Instance {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/berlin52.tsp");
        crate::tsplib::load(path.as_ref()).expect("berlin52 ships with the example")
    }

    /// Shortest closed tour by trying every order of cities `1..n` after 0.
    fn brute_force(m: &DistMatrix) -> u64 {
        fn go(m: &DistMatrix, tour: &mut Vec<u32>, rest: &mut Vec<u32>, best: &mut u64) {
            if rest.is_empty() {
                *best = (*best).min(m.tour_length(tour));
                return;
            }
            for i in 0..rest.len() {
                let c = rest.remove(i);
                tour.push(c);
                go(m, tour, rest, best);
                tour.pop();
                rest.insert(i, c);
            }
        }
        let mut best = u64::MAX;
        go(m, &mut vec![0], &mut (1..m.n() as u32).collect(), &mut best);
        best
    }

    #[test]
    fn finds_the_optimum_of_small_instances() {
        for seed in 0..4 {
            let m = random_matrix(8, seed);
            let (_, len) = run_sequential(&m, small_params(), 2, 2, seed);
            assert_eq!(len, brute_force(&m), "seed {seed}");
        }
    }

    #[test]
    fn tiny_instances_do_not_panic() {
        for n in 0..8 {
            let m = random_matrix(n, 9);
            let mut core = IslandCore::new(&m, small_params(), 1, 0);
            core.run_epoch(&m, &[(0..n as u32).collect()]);
            let (best, len) = core.best();
            assert!(is_permutation(&best, n));
            assert_eq!(m.tour_length(&best), len);
            let (tour, len) = run_sequential(&m, small_params(), 3, 2, 5);
            assert!(is_permutation(&tour, n));
            assert_eq!(m.tour_length(&tour), len);
        }
    }

    #[test]
    fn berlin52_gets_close_to_optimal_quickly() {
        let inst = berlin52();
        let m = inst.distance_matrix();
        let params = GaParams {
            generations: 10,
            ..GaParams::default()
        };
        let (tour, len) = run_sequential(&m, params, 2, 2, 1);
        assert!(is_permutation(&tour, 52));
        assert_eq!(inst.tour_length(&tour), len);
        assert!(len * 100 <= 7542 * 102, "berlin52 length {len}");
    }
}
