//! Parameters and state: the island ([`IslandCore`]) and how it evolves.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Tour;
use super::local_search::Search;
use super::operators::{double_bridge, order_crossover};
use super::rng::Rng;
use super::tour::{is_permutation, normalise};
use crate::tsplib::DistMatrix;

/// Tuning of one island.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GaParams {
    /// Tours kept on the island (μ).
    pub population: usize,
    /// Generations per epoch ([`IslandCore::run_epoch`]).
    pub generations: u32,
    /// Tours an island sends to each neighbour after an epoch.
    pub migrants: usize,
    /// Probability that a child gets a double-bridge mutation.
    pub mutation_rate: f64,
    /// Tournament size for parent selection.
    pub tournament: usize,
    /// Children per generation (λ); survivors are the best μ distinct tours
    /// of parents and children.
    pub offspring: usize,
    /// Length of each city's nearest-neighbour candidate list in local search.
    pub neighbours: usize,
    /// Whether local search also tries Or-opt moves (segments of 1–3 cities).
    pub or_opt: bool,
}

/// Tuned on berlin52, eil51, st70 and ch150: with 8 islands and 10 epochs,
/// [`run_sequential`](super::run_sequential) reaches the best known length
/// for seeds 1–30 in well under a second per instance (release build, one
/// core).
impl Default for GaParams {
    fn default() -> Self {
        GaParams {
            population: 30,
            generations: 20,
            migrants: 2,
            mutation_rate: 0.3,
            tournament: 3,
            offspring: 30,
            neighbours: 10,
            or_opt: true,
        }
    }
}

/// Why an island cannot run with the given matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GaError {
    /// The island's tours are not permutations of the matrix's cities, or
    /// their cached lengths disagree with the matrix (wrong instance, or a
    /// corrupted state).
    StateMismatch(String),
}

impl fmt::Display for GaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GaError::StateMismatch(why) => {
                write!(f, "island state does not fit the instance: {why}")
            }
        }
    }
}

impl std::error::Error for GaError {}

/// A tour with its cached length.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Member {
    tour: Tour,
    len: u64,
}

fn member_order(a: &Member, b: &Member) -> std::cmp::Ordering {
    a.len.cmp(&b.len).then_with(|| a.tour.cmp(&b.tour))
}

/// The state of one island: everything that migrates between machines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IslandCore {
    index: u32,
    params: GaParams,
    rng: Rng,
    /// Distinct normalised tours, best first (by
    /// [`better`](super::better)'s order).
    population: Vec<Member>,
    epochs_done: u32,
    generations_done: u64,
}

impl IslandCore {
    /// A new island with a population of random tours improved by local
    /// search. Its random stream depends on `(seed, index)` only.
    pub fn new(m: &DistMatrix, params: GaParams, seed: u64, index: u32) -> Self {
        let mut rng = Rng::seed_from(seed, u64::from(index));
        let mut search = Search::new(m, &params);
        let n = m.n();
        let mut population = Vec::with_capacity(params.population.max(1));
        for _ in 0..params.population.max(1) {
            let mut tour: Tour = (0..n as u32).collect();
            for i in (1..n).rev() {
                let j = rng.index(i + 1);
                tour.swap(i, j);
            }
            search.queue_all(n);
            search.improve(&mut tour);
            let len = m.tour_length(&tour);
            population.push(Member {
                tour: normalise(&tour),
                len,
            });
        }
        sort_dedup(&mut population);
        IslandCore {
            index,
            params,
            rng,
            population,
            epochs_done: 0,
            generations_done: 0,
        }
    }

    /// The island's index (its random stream).
    #[allow(
        dead_code,
        reason = "accessor for callers' summaries; a binary may not need it"
    )]
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The island's parameters.
    #[allow(
        dead_code,
        reason = "accessor for callers' summaries; a binary may not need it"
    )]
    pub fn params(&self) -> &GaParams {
        &self.params
    }

    /// Epochs run so far.
    pub fn epochs_done(&self) -> u32 {
        self.epochs_done
    }

    /// Generations run so far, over all epochs.
    #[allow(
        dead_code,
        reason = "accessor for callers' summaries; a binary may not need it"
    )]
    pub fn generations_done(&self) -> u64 {
        self.generations_done
    }

    /// The current population size (at most `params.population`; smaller
    /// only when there are fewer distinct tours than that).
    #[allow(
        dead_code,
        reason = "accessor for callers' summaries; a binary may not need it"
    )]
    pub fn population_len(&self) -> usize {
        self.population.len()
    }

    /// The best tour and its length. An island always has a tour unless its
    /// state was corrupted, in which case this is `(vec![], u64::MAX)`.
    pub fn best(&self) -> (Tour, u64) {
        match self.population.first() {
            Some(b) => (b.tour.clone(), b.len),
            None => (Vec::new(), u64::MAX),
        }
    }

    /// The best `params.migrants` distinct tours, best first.
    pub fn emigrants(&self) -> Vec<Tour> {
        self.population
            .iter()
            .take(self.params.migrants)
            .map(|mb| mb.tour.clone())
            .collect()
    }

    /// Checks that the state fits the matrix: a non-empty population of
    /// permutations of `0..m.n()` with correct cached lengths.
    pub fn check(&self, m: &DistMatrix) -> Result<(), GaError> {
        if self.population.is_empty() {
            return Err(GaError::StateMismatch("empty population".into()));
        }
        for (i, mb) in self.population.iter().enumerate() {
            if !is_permutation(&mb.tour, m.n()) {
                return Err(GaError::StateMismatch(format!(
                    "tour {i} is not a permutation of {} cities",
                    m.n()
                )));
            }
            if m.tour_length(&mb.tour) != mb.len {
                return Err(GaError::StateMismatch(format!(
                    "tour {i} has a wrong cached length"
                )));
            }
        }
        Ok(())
    }

    /// Runs one epoch: first the `migrants` (in the caller's deterministic
    /// order) replace the worst tours, then `params.generations` generations
    /// evolve the population.
    ///
    /// Migrants that are not permutations of the instance's cities, or that
    /// duplicate a tour already present, are ignored; at most
    /// `population - 1` migrants enter, so the island keeps its own best.
    ///
    /// # Panics
    /// If the island does not fit `m` (see [`check`](Self::check)); use
    /// [`try_run_epoch`](Self::try_run_epoch) for untrusted state.
    pub fn run_epoch(&mut self, m: &DistMatrix, migrants: &[Tour]) {
        if let Err(e) = self.try_run_epoch(m, migrants) {
            panic!("run_epoch: {e}");
        }
    }

    /// [`run_epoch`](Self::run_epoch) that reports a state that does not fit
    /// the matrix instead of panicking. The state is unchanged on error.
    pub fn try_run_epoch(&mut self, m: &DistMatrix, migrants: &[Tour]) -> Result<(), GaError> {
        self.check(m)?;
        // A state from elsewhere may be valid yet not canonical: restore the
        // invariants (normalised, best first, distinct) before evolving.
        for mb in &mut self.population {
            mb.tour = normalise(&mb.tour);
        }
        sort_dedup(&mut self.population);
        self.receive(m, migrants);
        let mut search = Search::new(m, &self.params);
        for _ in 0..self.params.generations {
            self.generation(m, &mut search);
        }
        self.epochs_done = self.epochs_done.wrapping_add(1);
        Ok(())
    }

    fn receive(&mut self, m: &DistMatrix, migrants: &[Tour]) {
        let mut accepted: Vec<Member> = Vec::new();
        for tour in migrants {
            if !is_permutation(tour, m.n()) {
                continue;
            }
            let tour = normalise(tour);
            let dup = self.population.iter().any(|mb| mb.tour == tour)
                || accepted.iter().any(|mb| mb.tour == tour);
            if !dup {
                let len = m.tour_length(&tour);
                accepted.push(Member { tour, len });
            }
        }
        let mu = self.params.population.max(1);
        let room = if mu == 1 { 1 } else { mu - 1 };
        accepted.truncate(room);
        self.population.truncate(mu - accepted.len());
        self.population.extend(accepted);
        sort_dedup(&mut self.population);
    }

    fn generation(&mut self, m: &DistMatrix, search: &mut Search) {
        let n = m.n();
        let mu = self.params.population.max(1);
        let lambda = self.params.offspring;
        let mut children = Vec::with_capacity(lambda);
        let mut child: Tour = Vec::with_capacity(n);
        for _ in 0..lambda {
            let a = self.select();
            let mut b = self.select();
            for _ in 0..3 {
                if b != a || self.population.len() < 2 {
                    break;
                }
                b = self.select();
            }
            let p1 = &self.population[a].tour;
            let p2 = &self.population[b].tour;
            order_crossover(p1, p2, &mut child, &mut self.rng);
            if self.rng.unit_f64() < self.params.mutation_rate {
                double_bridge(&mut child, &mut self.rng);
            }
            search.queue_new_edges(&child, p1, p2);
            search.improve(&mut child);
            let len = m.tour_length(&child);
            children.push(Member {
                tour: normalise(&child),
                len,
            });
        }
        self.population.extend(children);
        sort_dedup(&mut self.population);
        self.population.truncate(mu);
        self.generations_done = self.generations_done.wrapping_add(1);
    }

    /// Tournament selection: the best of `tournament` uniform picks (the
    /// population is sorted, so the smallest index wins).
    fn select(&mut self) -> usize {
        let size = self.population.len();
        (0..self.params.tournament.max(1))
            .map(|_| self.rng.index(size))
            .min()
            .unwrap_or(0)
    }
}

/// Sorts best first and drops repeated tours.
fn sort_dedup(pop: &mut Vec<Member>) {
    pop.sort_by(member_order);
    pop.dedup_by(|a, b| a.tour == b.tour);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ga::run_sequential;
    use crate::ga::test_fixtures::{random_matrix, small_params};
    use crate::ga::tour::better;

    #[test]
    fn run_epoch_always_yields_valid_permutations() {
        for seed in 0..4 {
            let n = 12 + 5 * seed as usize;
            let m = random_matrix(n, seed);
            let mut core = IslandCore::new(&m, small_params(), seed, seed as u32);
            // Include garbage migrants: wrong length, repeated city, out of range.
            let mut migrants: Vec<Tour> = vec![vec![0, 1], vec![0; n], (1..=n as u32).collect()];
            migrants.push((0..n as u32).rev().collect());
            for _ in 0..3 {
                core.run_epoch(&m, &migrants);
                assert!(core.check(&m).is_ok());
                assert!(core.population_len() <= small_params().population);
                let (best, len) = core.best();
                assert!(is_permutation(&best, n));
                assert_eq!(m.tour_length(&best), len);
                migrants = core.emigrants();
            }
            assert_eq!(core.epochs_done(), 3);
            assert_eq!(core.generations_done(), 9);
        }
    }

    #[test]
    fn emigrants_are_distinct_and_best_first() {
        let m = random_matrix(30, 4);
        let params = GaParams {
            migrants: 5,
            ..small_params()
        };
        let mut core = IslandCore::new(&m, params, 2, 1);
        core.run_epoch(&m, &[]);
        let out = core.emigrants();
        assert_eq!(out.len(), 5);
        let lens: Vec<u64> = out.iter().map(|t| m.tour_length(t)).collect();
        for i in 1..out.len() {
            assert!(better((&out[i - 1], lens[i - 1]), (&out[i], lens[i])));
            for j in 0..i {
                assert_ne!(normalise(&out[i]), normalise(&out[j]));
            }
        }
        assert_eq!((out[0].clone(), lens[0]), core.best());
    }

    #[test]
    fn migrants_replace_the_worst() {
        let m = random_matrix(60, 6);
        let params = GaParams {
            generations: 0,
            ..small_params()
        };
        let mut core = IslandCore::new(&m, params, 1, 0);
        assert_eq!(core.population_len(), params.population);
        let own_best = core.best();
        // A deliberately bad tour still gets in, replacing the worst tour.
        let bad: Tour = (0..60).collect();
        assert!(!core.population.iter().any(|mb| mb.tour == normalise(&bad)));
        core.run_epoch(&m, &[bad.clone(), bad.clone()]);
        assert_eq!(core.population_len(), params.population);
        assert_eq!(
            core.population
                .iter()
                .filter(|mb| mb.tour == normalise(&bad))
                .count(),
            1
        );
        assert_eq!(core.best(), own_best);
    }

    #[test]
    fn same_inputs_give_the_same_island_and_result() {
        let m = random_matrix(30, 1);
        let run = || {
            let mut core = IslandCore::new(&m, small_params(), 11, 2);
            core.run_epoch(&m, &[]);
            core.run_epoch(&m, &[(0..30).collect()]);
            core
        };
        assert_eq!(run(), run());
        let a = run_sequential(&m, small_params(), 3, 3, 42);
        let b = run_sequential(&m, small_params(), 3, 3, 42);
        assert_eq!(a, b);
        assert_eq!(m.tour_length(&a.0), a.1);
        // Islands with another index follow another random stream.
        let other = IslandCore::new(&m, small_params(), 11, 3);
        assert_ne!(other.rng, IslandCore::new(&m, small_params(), 11, 2).rng);
    }

    #[test]
    fn serde_round_trip_resumes_identically() {
        let m = random_matrix(20, 2);
        let mut core = IslandCore::new(&m, small_params(), 5, 1);
        core.run_epoch(&m, &[]);
        let mut bytes = Vec::new();
        ciborium::into_writer(&core, &mut bytes).expect("serialising to a Vec cannot fail");
        let mut copy: IslandCore =
            ciborium::from_reader(bytes.as_slice()).expect("what was just written reads back");
        assert_eq!(copy, core);
        let migrants = vec![(0..20).rev().collect::<Tour>()];
        core.run_epoch(&m, &migrants);
        copy.run_epoch(&m, &migrants);
        assert_eq!(copy, core);
    }

    #[test]
    fn mismatched_matrix_is_an_error() {
        let m = random_matrix(20, 2);
        let mut core = IslandCore::new(&m, small_params(), 5, 1);
        let before = core.clone();
        let other = random_matrix(21, 2);
        assert!(matches!(
            core.try_run_epoch(&other, &[]),
            Err(GaError::StateMismatch(_))
        ));
        let same_size = random_matrix(20, 3);
        let err = core.try_run_epoch(&same_size, &[]);
        assert!(err.is_err());
        assert!(
            err.err()
                .is_some_and(|e| e.to_string().contains("cached length"))
        );
        assert_eq!(core, before);
    }
}
