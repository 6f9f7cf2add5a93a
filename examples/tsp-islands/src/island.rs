//! The island object (paper §5): a population evolving on some volunteer, trading
//! its best tours with its ring neighbours by calling them directly.
//!
//! Epochs are driven by data, not by time, so the result is a function of
//! (instance, parameters, seed) alone: island *i* runs epoch *e* > 0 only once it
//! holds the epoch *e*−1 migrants of each ring neighbour, and migrants travel as
//! one-way calls tagged with their epoch and sender, so no island ever waits on
//! another inside a call (which would deadlock two neighbours sending to each
//! other).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use serde::{Deserialize, Serialize};

use crate::ga::{GaParams, IslandCore, Tour, ring_neighbours};
use crate::tsplib::{DistMatrix, Instance};

/// An island's progress, for the client's progress bar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The island's index in the ring.
    pub index: u32,
    /// Epochs completed.
    pub epochs_done: u32,
    /// Length of its best tour.
    pub best_length: u64,
}

/// The remote interface of an island.
#[g2::remote]
pub trait Island {
    /// All islands of the run, in ring order (the paper's `islands.Peers = islands`).
    async fn set_peers(&mut self, peers: Vec<IslandRef>);
    /// Run up to `epochs` epochs, as fast as migrants arrive.
    #[oneway]
    async fn start(&mut self, epochs: u32);
    /// Tours from ring neighbour `from` at the end of its epoch `epoch`.
    #[oneway]
    async fn receive_migrants(&mut self, epoch: u32, from: u32, tours: Vec<Tour>);
    /// Progress so far.
    async fn status(&mut self) -> Status;
    /// The best tour and its length.
    async fn best(&mut self) -> (Tour, u64);
}

/// What `Node::create` sends to build an island.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IslandInit {
    /// The TSP instance.
    pub instance: Instance,
    /// GA parameters.
    pub params: GaParams,
    /// The run's seed.
    pub seed: u64,
    /// This island's index.
    pub index: u32,
    /// Number of islands in the ring.
    pub islands: u32,
}

/// The distance matrix of `instance`, one per process for all the islands
/// that run it (pr2392's is 23 MB: sixteen copies on one volunteer would take
/// 366 MB, and crowd each other out of the CPU's caches). Kept only while some
/// island holds it.
fn shared_matrix(instance: &Instance) -> Arc<DistMatrix> {
    static MATRICES: LazyLock<Mutex<HashMap<blake3::Hash, Weak<DistMatrix>>>> =
        LazyLock::new(Mutex::default);
    let mut h = blake3::Hasher::new();
    for (x, y) in &instance.coords {
        h.update(&x.to_bits().to_le_bytes());
        h.update(&y.to_bits().to_le_bytes());
    }
    let key = h.finalize();
    let mut cache = MATRICES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(m) = cache.get(&key).and_then(Weak::upgrade) {
        return m;
    }
    cache.retain(|_, m| m.strong_count() > 0);
    let m = Arc::new(instance.distance_matrix());
    cache.insert(key, Arc::downgrade(&m));
    m
}

/// The island object; all of it is state that migrates and checkpoints.
#[derive(Serialize, Deserialize)]
pub struct TspIsland {
    instance: Instance,
    #[serde(skip)]
    matrix: Option<Arc<DistMatrix>>,
    core: IslandCore,
    islands: u32,
    peers: Vec<IslandRef>,
    target_epochs: u32,
    /// Migrants received, by epoch then sender index (ordered maps: deterministic).
    inbox: BTreeMap<u32, BTreeMap<u32, Vec<Tour>>>,
}

impl g2::Object for TspIsland {
    const TYPE_NAME: &'static str = "tsp.Island";
    type Init = IslandInit;
    type Ref = IslandRef;

    fn activate(init: IslandInit) -> Self {
        let matrix = shared_matrix(&init.instance);
        let core = IslandCore::new(&matrix, init.params, init.seed, init.index);
        TspIsland {
            instance: init.instance,
            matrix: Some(matrix),
            core,
            islands: init.islands.max(1),
            peers: Vec::new(),
            target_epochs: 0,
            inbox: BTreeMap::new(),
        }
    }
}

impl TspIsland {
    fn index(&self) -> u32 {
        self.core.index()
    }

    /// Runs every epoch whose inputs are all here, sending this island's
    /// emigrants to its ring neighbours after each. Generic over the client trait
    /// so tests can hand it mocked peers.
    pub async fn advance<P: IslandClient>(&mut self, peers: &[P]) {
        let neighbours = ring_neighbours(self.index(), self.islands);
        while self.core.epochs_done() < self.target_epochs {
            let epoch = self.core.epochs_done();
            let migrants: Vec<Tour> = if epoch == 0 {
                Vec::new()
            } else {
                let Some(got) = self.inbox.get(&(epoch - 1)) else {
                    return;
                };
                if !neighbours.iter().all(|n| got.contains_key(n)) {
                    return;
                }
                neighbours
                    .iter()
                    .flat_map(|n| got[n].iter().cloned())
                    .collect()
            };
            if epoch > 0 {
                self.inbox.remove(&(epoch - 1));
            }
            let matrix = self
                .matrix
                .get_or_insert_with(|| shared_matrix(&self.instance));
            // many milliseconds of work: the volunteer keeps serving meanwhile
            let core = &mut self.core;
            g2::compute(|| core.run_epoch(matrix, &migrants));
            if epoch + 1 < self.target_epochs {
                let out = self.core.emigrants();
                let me = self.index();
                // one-way: a neighbour busy with its own epoch must not block
                // us; both neighbours' calls are on their way at once
                let sends = neighbours.iter().filter_map(|n| {
                    let peer = peers.get(*n as usize)?;
                    let out = out.clone();
                    Some(async move { (*n, peer.receive_migrants(epoch, me, out).await) })
                });
                for (n, sent) in futures::future::join_all(sends).await {
                    if let Err(e) = sent {
                        eprintln!("island {me}: migrants to island {n} lost: {e}");
                    }
                }
            }
        }
    }
}

impl Island for TspIsland {
    async fn set_peers(&mut self, peers: Vec<IslandRef>) {
        self.peers = peers;
    }

    async fn start(&mut self, epochs: u32) {
        self.target_epochs = self.target_epochs.max(epochs);
        let peers = self.peers.clone();
        self.advance(&peers).await;
    }

    async fn receive_migrants(&mut self, epoch: u32, from: u32, tours: Vec<Tour>) {
        // only ring neighbours' migrants for epochs still ahead count
        if !ring_neighbours(self.index(), self.islands).contains(&from)
            || epoch < self.core.epochs_done().saturating_sub(1)
        {
            return;
        }
        self.inbox.entry(epoch).or_default().insert(from, tours);
        let peers = self.peers.clone();
        self.advance(&peers).await;
    }

    async fn status(&mut self) -> Status {
        Status {
            index: self.index(),
            epochs_done: self.core.epochs_done(),
            best_length: self.core.best().1,
        }
    }

    async fn best(&mut self) -> (Tour, u64) {
        self.core.best()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ga::GaParams;
    use g2::Object;
    use mockall::predicate::eq;

    fn island(index: u32, islands: u32) -> TspIsland {
        let instance =
            crate::tsplib::parse(include_str!("../data/eil51.tsp")).expect("eil51 parses");
        let params = GaParams {
            generations: 2,
            ..GaParams::default()
        };
        TspIsland::activate(IslandInit {
            instance,
            params,
            seed: 7,
            index,
            islands,
        })
    }

    #[tokio::test]
    async fn an_island_sends_its_migrants_to_its_ring_neighbours_and_waits_for_theirs() {
        // given island 0 of a ring of 3, whose neighbours are mocks
        let mut isl = island(0, 3);
        isl.target_epochs = 3;
        let mut me = MockIslandClient::new();
        me.expect_receive_migrants().never();
        let mut right = MockIslandClient::new();
        let mut left = MockIslandClient::new();
        for peer in [&mut right, &mut left] {
            peer.expect_receive_migrants()
                .with(
                    eq(0),
                    eq(0),
                    mockall::predicate::function(|t: &Vec<Tour>| !t.is_empty()),
                )
                .times(1)
                .returning(|_, _, _| Ok(()));
        }
        let peers = vec![me, right, left];

        // when it starts, it runs epoch 0 and sends its best tours to both neighbours
        isl.advance(&peers).await;
        assert_eq!(isl.core.epochs_done(), 1);

        // and it does not run epoch 1 on one neighbour's migrants alone
        let tours = isl.core.emigrants();
        isl.inbox.entry(0).or_default().insert(1, tours.clone());
        isl.advance(&peers).await;
        assert_eq!(isl.core.epochs_done(), 1);
        drop(peers);

        // then, with both neighbours' epoch-0 migrants, it runs epoch 1 and sends again
        let mut me = MockIslandClient::new();
        me.expect_receive_migrants().never();
        let mut right = MockIslandClient::new();
        let mut left = MockIslandClient::new();
        for peer in [&mut right, &mut left] {
            peer.expect_receive_migrants()
                .withf(|epoch, from, _| *epoch == 1 && *from == 0)
                .times(1)
                .returning(|_, _, _| Ok(()));
        }
        isl.inbox.entry(0).or_default().insert(2, tours);
        isl.advance(&[me, right, left]).await;
        assert_eq!(isl.core.epochs_done(), 2);
        assert!(isl.inbox.is_empty());
    }

    #[tokio::test]
    async fn a_lost_migrant_call_is_reported_and_the_island_carries_on() {
        let mut isl = island(1, 2);
        isl.target_epochs = 2;
        let me = MockIslandClient::new();
        let mut other = MockIslandClient::new();
        other
            .expect_receive_migrants()
            .times(1)
            .returning(|_, _, _| Err(g2::CallError::ObjectNotFound(g2::ObjectId::from_u128(9))));
        isl.advance(&[other, me]).await;
        assert_eq!(isl.core.epochs_done(), 1);
    }

    #[test]
    fn islands_of_one_instance_share_one_matrix_and_others_get_their_own() {
        let (a, b) = (island(0, 2), island(1, 2));
        let (ma, mb) = (a.matrix.as_ref().unwrap(), b.matrix.as_ref().unwrap());
        assert!(Arc::ptr_eq(ma, mb));
        let mut other = a.instance.clone();
        other.coords[0].0 += 1.0;
        let mc = shared_matrix(&other);
        assert!(!Arc::ptr_eq(ma, &mc));
        assert_eq!(*mc, other.distance_matrix());
    }

    #[test]
    fn island_state_round_trips_through_cbor() {
        let isl = island(2, 4);
        let bytes = g2_core::wire::to_cbor(&isl).unwrap();
        let back: TspIsland = g2_core::wire::from_cbor(&bytes).unwrap();
        assert_eq!(back.core, isl.core);
        assert!(back.matrix.is_none(), "the matrix is rebuilt, not shipped");
    }
}
