//! Live migration (paper §3.4) on an in-process network: volunteers join and
//! leave gracefully while clients keep calling, and no call is lost or run twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[macro_use]
mod common;

use common::{Routing, TestNet};
use g2::prelude::*;
use serde::{Deserialize, Serialize};

#[g2::remote]
pub trait Tally {
    async fn add(&mut self, n: u64) -> u64;
    #[oneway]
    async fn bump(&mut self);
    async fn total(&mut self) -> u64;
    /// A payload that makes the state worth moving.
    async fn grow(&mut self, bytes: usize);
}

#[derive(Serialize, Deserialize)]
struct Count {
    total: u64,
    ballast: Vec<u8>,
}

impl Object for Count {
    const TYPE_NAME: &'static str = "test.Count";
    type Init = ();
    type Ref = TallyRef;
    fn activate(_: ()) -> Self {
        Count {
            total: 0,
            ballast: Vec::new(),
        }
    }
}

impl Tally for Count {
    async fn add(&mut self, n: u64) -> u64 {
        self.total += n;
        self.total
    }
    async fn bump(&mut self) {
        self.total += 1;
    }
    async fn total(&mut self) -> u64 {
        self.total
    }
    async fn grow(&mut self, bytes: usize) {
        self.ballast = vec![7; bytes];
    }
}

async fn network(routing: Routing, n: usize) -> TestNet {
    TestNet::new(routing, "migrate.test", n, Duration::from_secs(20), |b| {
        b.register::<Count>()
    })
    .await
}

on_both_overlays!(objects_move_to_joining_volunteers_without_losing_or_repeating_a_call);

// Graceful leaves under load run on the test-support overlay and Pastry. On Chord
// a lookup can keep reaching a node that has just left for a whole call deadline
// (seen in about one run in ten under load): a known Chord bug, tracked in
// issue 4, so Chord is left out here until it is fixed.
mod a_graceful_leave_hands_every_object_on_while_calls_continue {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_support_overlay() {
        super::a_graceful_leave_hands_every_object_on_while_calls_continue(
            crate::common::Routing::TestSupport,
        )
        .await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pastry() {
        super::a_graceful_leave_hands_every_object_on_while_calls_continue(
            crate::common::Routing::Pastry,
        )
        .await
    }
}

/// Clients calling `add(1)` on the objects until told to stop; returns how many
/// calls each object acknowledged.
fn workload(
    clients: Vec<Node>,
    objects: Vec<ObjectId>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Result<HashMap<ObjectId, u64>, String>> {
    tokio::spawn(async move {
        let acked = Arc::new(Mutex::new(HashMap::<ObjectId, u64>::new()));
        let mut tasks = Vec::new();
        for (c, client) in clients.into_iter().enumerate() {
            let objects = objects.clone();
            let stop = stop.clone();
            let acked = acked.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = c;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = objects[i % objects.len()];
                    let r = client.reference::<TallyRef>(id);
                    r.add(1)
                        .await
                        .map_err(|e| format!("add on {id} failed: {e}"))?;
                    *acked.lock().unwrap().entry(id).or_default() += 1;
                    i += 7;
                }
                Ok::<(), String>(())
            }));
        }
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        let map = acked.lock().unwrap().clone();
        Ok(map)
    })
}

async fn settled(net: &TestNet, objects: &[ObjectId]) -> bool {
    for _ in 0..200 {
        let live = net.live();
        let ok = objects.iter().all(|id| {
            let root = net.root(id.key());
            live.iter()
                .all(|n| n.hosted_objects().iter().any(|(o, _)| o == id) == (n.id() == root))
        });
        if ok {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

async fn objects_move_to_joining_volunteers_without_losing_or_repeating_a_call(routing: Routing) {
    let mut net = network(routing, 6).await;
    let nodes = net.nodes.clone();
    let mut objects = Vec::new();
    for i in 0..40 {
        let r: TallyRef = nodes[i % nodes.len()].create::<Count>(()).await.unwrap();
        r.grow(4096).await.unwrap();
        objects.push(r.id());
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = workload(nodes[..3].to_vec(), objects.clone(), stop.clone());
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        net.add_node().await;
    }
    net.settle().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = load.await.unwrap().expect("every call succeeded");

    assert!(
        settled(&net, &objects).await,
        "every object reached its root"
    );
    let moved_in: u64 = net.nodes[6..].iter().map(|n| n.stats().migrations_in).sum();
    assert!(moved_in > 0, "the new volunteers took objects over");
    let client = &nodes[0];
    for id in &objects {
        let total = client.reference::<TallyRef>(*id).total().await.unwrap();
        assert_eq!(total, acked.get(id).copied().unwrap_or(0), "object {id}");
    }
}

async fn a_graceful_leave_hands_every_object_on_while_calls_continue(routing: Routing) {
    let net = network(routing, 10).await;
    let nodes = net.nodes.clone();
    let mut objects = Vec::new();
    for i in 0..40 {
        let r: TallyRef = nodes[i % nodes.len()].create::<Count>(()).await.unwrap();
        objects.push(r.id());
    }
    // one-way calls queue up too
    for id in &objects {
        for _ in 0..3 {
            nodes[1].reference::<TallyRef>(*id).bump().await.unwrap();
        }
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = workload(nodes[..2].to_vec(), objects.clone(), stop.clone());
    for n in &nodes[6..] {
        tokio::time::sleep(Duration::from_millis(30)).await;
        n.leave().await.expect("every object migrated");
        assert!(n.is_stopped());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = load.await.unwrap().expect("every call succeeded");

    let live = &nodes[..6];
    net.settle().await;
    assert!(settled(&net, &objects).await);
    let hosted: u64 = live.iter().map(|n| n.stats().objects_hosted).sum();
    assert_eq!(hosted, objects.len() as u64, "one live copy of each object");
    for id in &objects {
        let total = nodes[0].reference::<TallyRef>(*id).total().await.unwrap();
        assert_eq!(
            total,
            3 + acked.get(id).copied().unwrap_or(0),
            "object {id}"
        );
    }
}
