//! A root volunteer that cannot run a type (no code it trusts for it) does
//! not fail the creation: a neighbour that can hosts the object, with a
//! placement record at the root; calls find it there. The same when such a
//! volunteer joins and becomes the root of objects that run elsewhere: they
//! stay where they run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[macro_use]
mod common;

mod stations;

use common::{Routing, TestNet};
use g2::prelude::*;
use g2::{DynamicType, TypeProvider};
use stations::{InMemoryWorker, LinkRef, Station};

/// A volunteer whose owner trusts no publisher of stations.
struct Refusing;

#[async_trait::async_trait]
impl TypeProvider for Refusing {
    async fn resolve(&self, type_name: &str) -> Result<Arc<dyn DynamicType>, String> {
        Err(format!(
            "publisher abc of {type_name} is not trusted by this volunteer"
        ))
    }
}

/// Nodes built so far: the first refuses stations, the others run them.
static BUILT: AtomicUsize = AtomicUsize::new(0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_that_cannot_run_a_type_places_its_objects_on_a_neighbour_that_can() {
    let net = TestNet::new(
        Routing::Pastry,
        "workers.test",
        3,
        Duration::from_secs(20),
        |b| {
            if BUILT.fetch_add(1, Ordering::SeqCst) == 0 {
                b.type_provider(Arc::new(Refusing))
            } else {
                b.type_provider(Arc::new(InMemoryWorker::default()))
            }
        },
    )
    .await;
    let refusing = net.nodes[0].clone();
    // given objects some of which the refusing node is the root of
    let mut ring = Vec::new();
    let mut rooted_there = 0;
    for i in 0..24u32 {
        // every fourth one rooted there for sure, the others anywhere
        let id = if i % 4 == 0 {
            (0..100_000)
                .map(|_| ObjectId::random())
                .find(|id| net.root(id.key()) == refusing.id())
                .expect("a GUID rooted at the refusing node")
        } else {
            ObjectId::random()
        };
        rooted_there += usize::from(net.root(id.key()) == refusing.id());
        ring.push(
            refusing
                .create_with_id::<Station>(id, i)
                .await
                .expect("created on a neighbour"),
        );
    }
    assert!(
        rooted_there > 0,
        "no object was rooted at the refusing node: the test proved nothing"
    );
    // then none runs there, all run elsewhere, and calls reach them
    assert!(refusing.hosted_objects().is_empty());
    let hosted: usize = net.live().iter().map(|n| n.hosted_objects().len()).sum();
    assert_eq!(hosted, 24);
    for (i, s) in ring.iter().enumerate() {
        s.set_next(ring[(i + 1) % ring.len()].clone())
            .await
            .unwrap();
    }
    assert_eq!(ring[0].pass(23).await.unwrap(), 24);
    for s in &ring {
        assert_eq!(s.visits().await.unwrap(), 1);
    }
}

/// Nodes built so far in the join test: all after the third refuse stations.
static BUILT_FOR_JOIN: AtomicUsize = AtomicUsize::new(0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_stay_on_their_host_when_the_new_root_that_joined_cannot_run_them() {
    let mut net = TestNet::new(
        Routing::Pastry,
        "workers.test",
        3,
        Duration::from_secs(20),
        |b| {
            if BUILT_FOR_JOIN.fetch_add(1, Ordering::SeqCst) >= 3 {
                b.type_provider(Arc::new(Refusing))
            } else {
                b.type_provider(Arc::new(InMemoryWorker::default()))
            }
        },
    )
    .await;
    let creator = net.nodes[0].clone();
    let mut ring = Vec::new();
    let mut ids = Vec::new();
    for i in 0..32u32 {
        let id = ObjectId::random();
        ids.push(id);
        ring.push(creator.create_with_id::<Station>(id, i).await.unwrap());
    }
    for (i, s) in ring.iter().enumerate() {
        s.set_next(ring[(i + 1) % ring.len()].clone())
            .await
            .unwrap();
    }
    // volunteers that cannot run stations join until they are the roots of
    // some (a node's share of the ring varies: one may be root of none)
    let mut refusing: Vec<g2::Node> = Vec::new();
    let rooted_at_refusing = |net: &TestNet, refusing: &[g2::Node]| {
        ids.iter()
            .filter(|id| refusing.iter().any(|r| net.root(id.key()) == r.id()))
            .count()
    };
    while rooted_at_refusing(&net, &refusing) == 0 {
        assert!(
            refusing.len() < 6,
            "no object is rooted at the new nodes: the test proved nothing"
        );
        refusing.push(net.add_node().await);
        net.settle().await;
    }
    // the moves to them are refused: every object stays where it runs, and
    // a call routed through a new root (its own calls are) reaches it there
    let start = std::time::Instant::now();
    loop {
        let mut answered = 0;
        for r in &refusing {
            for id in &ids {
                if r.reference::<LinkRef>(*id).visits().await.is_ok() {
                    answered += 1;
                }
            }
        }
        if answered == ids.len() * refusing.len() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{answered} of {} answered through the new roots",
            ids.len() * refusing.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for r in &refusing {
        assert!(r.hosted_objects().is_empty());
    }
    let hosted: usize = net.live().iter().map(|n| n.hosted_objects().len()).sum();
    assert_eq!(hosted, 32);
    assert_eq!(ring[0].pass(31).await.unwrap(), 32);
    for s in &ring {
        assert_eq!(s.visits().await.unwrap(), 1, "no visit lost or repeated");
    }
}
