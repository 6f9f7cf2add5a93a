//! Objects whose code runs in worker processes (here: worker loops on
//! in-memory sockets, the same protocol a worker process speaks on its Unix
//! socket). The nodes were not built with the type; they find it through a
//! `TypeProvider`. Objects call each other from inside their workers, migrate
//! between nodes as volunteers join and leave, and no call is lost or repeated.

use std::sync::Arc;
use std::time::Duration;

#[macro_use]
mod common;

mod stations;

use common::{Routing, TestNet};
use g2::prelude::*;
use serde::{Deserialize, Serialize};
use stations::{InMemoryWorker, Link, LinkRef, Station};

async fn network(routing: Routing, n: usize) -> TestNet {
    TestNet::new(routing, "workers.test", n, Duration::from_secs(20), |b| {
        // no node links Station: every one runs it in a worker
        b.type_provider(Arc::new(InMemoryWorker::default()))
            .load_balancing(false)
    })
    .await
}

on_both_overlays!(worker_objects_call_each_other_and_migrate_without_losing_a_call);

async fn worker_objects_call_each_other_and_migrate_without_losing_a_call(routing: Routing) {
    // given 3 nodes and a ring of 12 stations created from the first
    let mut net = network(routing, 3).await;
    let client = net.live()[0].clone();
    let mut ring = Vec::new();
    for i in 0..12u32 {
        ring.push(
            client
                .create::<Station>(i)
                .await
                .expect("created in a worker"),
        );
    }
    for (i, s) in ring.iter().enumerate() {
        s.set_next(ring[(i + 1) % ring.len()].clone())
            .await
            .unwrap();
    }
    let hosted: usize = net.live().iter().map(|n| n.hosted_objects().len()).sum();
    assert_eq!(hosted, 12);
    // when a token goes round the ring once, object to object (an object runs
    // one call at a time: a token that came back to a station still waiting
    // for its own pass would wait for ever)
    assert_eq!(ring[0].pass(11).await.unwrap(), 12);
    // and volunteers join (objects migrate to them, state out of one worker
    // into another), the token goes round again, and one leaves
    net.add_node().await;
    net.add_node().await;
    net.settle().await;
    assert_eq!(ring[5].pass(11).await.unwrap(), 12);
    // (the node, other than the client, that hosts the most stations: its
    // leave moves at least one, whatever the joins moved)
    let leaving = net
        .live()
        .into_iter()
        .filter(|n| n.id() != client.id())
        .max_by_key(|n| n.hosted_objects().len())
        .expect("another node");
    assert!(
        !leaving.hosted_objects().is_empty(),
        "every station on the client's node"
    );
    leaving.leave().await.expect("graceful leave");
    net.settle().await;
    assert_eq!(ring[3].pass(11).await.unwrap(), 12);
    // then every station counted each visit exactly once
    for (i, s) in ring.iter().enumerate() {
        assert_eq!(s.visits().await.unwrap(), 3, "station {i}");
    }
    let hosted: usize = net.live().iter().map(|n| n.hosted_objects().len()).sum();
    assert_eq!(hosted, 12);
    let moved: u64 = net
        .live()
        .iter()
        .map(|n| n.status().stats.migrations_in)
        .sum();
    assert!(
        moved > 0,
        "no station migrated: the test proved nothing about migration"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_no_provider_knows_is_refused_with_the_reason() {
    #[derive(Serialize, Deserialize)]
    struct Other;
    impl Object for Other {
        const TYPE_NAME: &'static str = "test.Other";
        type Init = ();
        type Ref = LinkRef;
        fn activate(_: ()) -> Self {
            Other
        }
    }
    impl Link for Other {
        async fn pass(&mut self, _: u32) -> u32 {
            0
        }
        async fn set_next(&mut self, _: LinkRef) {}
        async fn visits(&mut self) -> u64 {
            0
        }
    }
    let net = network(Routing::Pastry, 2).await;
    let Err(err) = net.live()[0].create::<Other>(()).await else {
        panic!("an object of a type no provider knows was created");
    };
    let text = err.to_string();
    assert!(
        text.contains("test.Other") && text.contains("no worker serves"),
        "{text}"
    );
}
