//! A 16-node in-process network: activation, routing, references as arguments,
//! one-way calls, deadlines and errors, as an application sees them — once over
//! Pastry and once over the test-support overlay.

use std::time::Duration;

#[macro_use]
mod common;

use common::{Routing, TestNet};
use g2::RemoteError;
use g2::prelude::*;
use serde::{Deserialize, Serialize};

#[g2::remote]
pub trait Cell {
    async fn get(&mut self) -> u64;
    async fn add(&mut self, n: u64) -> u64;
    /// Adds `n` to `other` (a reference passed as an argument) and to itself.
    async fn add_via(&mut self, other: CellRef, n: u64) -> Result<u64, String>;
    #[oneway]
    async fn bump(&mut self, n: u64);
    /// Asks `other` to call back into this object: a cycle of waiting calls.
    async fn ping(&mut self, other: CellRef) -> Result<u64, String>;
    async fn call_back(&mut self, caller: CellRef) -> Result<u64, String>;
    async fn whoami(&mut self) -> Option<ObjectId>;
    async fn boom(&mut self);
}

#[derive(Serialize, Deserialize)]
struct Counter {
    value: u64,
}

impl Object for Counter {
    const TYPE_NAME: &'static str = "test.Counter";
    type Init = u64;
    type Ref = CellRef;
    fn activate(init: u64) -> Self {
        Counter { value: init }
    }
}

impl Cell for Counter {
    async fn get(&mut self) -> u64 {
        self.value
    }
    async fn add(&mut self, n: u64) -> u64 {
        self.value += n;
        self.value
    }
    async fn add_via(&mut self, other: CellRef, n: u64) -> Result<u64, String> {
        let theirs = other.add(n).await.map_err(|e| e.to_string())?;
        self.value += n;
        Ok(theirs + self.value)
    }
    async fn bump(&mut self, n: u64) {
        self.value += n;
    }
    async fn ping(&mut self, other: CellRef) -> Result<u64, String> {
        let me = g2::current_object().ok_or("no current object")?;
        let me: CellRef = CellRef::from_handle(g2::ObjectHandle::new(
            ObjectUri::new(NET, me).map_err(|e| e.to_string())?,
        ));
        other.call_back(me).await.map_err(|e| e.to_string())?
    }
    async fn call_back(&mut self, caller: CellRef) -> Result<u64, String> {
        caller.get().await.map_err(|e| e.to_string())
    }
    async fn whoami(&mut self) -> Option<ObjectId> {
        g2::current_object()
    }
    async fn boom(&mut self) {
        panic!("boom on purpose");
    }
}

const NET: &str = "test.g2";

async fn network(routing: Routing, n: usize, call_timeout: Duration) -> TestNet {
    TestNet::new(routing, NET, n, call_timeout, |b| {
        // objects stay on their roots: these tests check routing to the root
        b.register::<Counter>().load_balancing(false)
    })
    .await
}

on_both_overlays!(
    two_hundred_objects_live_on_their_roots_and_answer_every_node,
    objects_call_each_other_through_references_passed_as_arguments,
    one_way_calls_run_once_each_in_order,
    a_call_cycle_ends_in_a_deadline_error_not_a_hang,
    unknown_objects_types_and_methods_get_clear_errors,
    a_crashed_volunteers_objects_are_reported_lost_once_the_failure_is_detected,
);

async fn two_hundred_objects_live_on_their_roots_and_answer_every_node(routing: Routing) {
    let net = network(routing, 16, Duration::from_secs(10)).await;
    let nodes = &net.nodes;
    let mut refs = Vec::new();
    for i in 0..200u64 {
        let creator = &nodes[i as usize % nodes.len()];
        let r: CellRef = creator.create::<Counter>(i).await.expect("create");
        refs.push(r);
    }
    // each object lives on the root of its GUID
    for r in &refs {
        let root = net.root(r.id().key());
        let host = nodes
            .iter()
            .find(|n| n.id() == root)
            .expect("root is a node");
        assert!(
            host.hosted_objects()
                .iter()
                .any(|(id, t)| *id == r.id() && *t == "test.Counter")
        );
    }
    let hosted: u64 = nodes.iter().map(|n| n.stats().objects_hosted).sum();
    assert_eq!(hosted, 200);
    // every node reaches every object
    for node in nodes {
        for (i, r) in refs.iter().enumerate() {
            let via = node.reference::<CellRef>(r.id());
            assert_eq!(
                via.get().await.unwrap(),
                i as u64,
                "object {i} from node {}",
                node.id()
            );
        }
    }
    // second round goes through the location cache
    let hits: u64 = nodes.iter().map(|n| n.stats().cache_hits).sum();
    assert!(hits > 0);
}

async fn objects_call_each_other_through_references_passed_as_arguments(routing: Routing) {
    let net = network(routing, 16, Duration::from_secs(10)).await;
    let nodes = &net.nodes;
    let a: CellRef = nodes[0].create::<Counter>(100).await.unwrap();
    let b: CellRef = nodes[5].create::<Counter>(1).await.unwrap();
    // a adds 10 to b, then to itself: 11 + 110
    assert_eq!(a.add_via(b.clone(), 10).await.unwrap(), Ok(121));
    assert_eq!(b.get().await.unwrap(), 11);
    // references print as URIs and survive a round trip through the wire format
    assert_eq!(a.to_string(), format!("g2p2p://{NET}/{}", a.id()));
    let bytes = g2_core::wire::to_cbor(&a).unwrap();
    let back: CellRef = g2_core::wire::from_cbor(&bytes).unwrap();
    assert_eq!(back, a);
    // an object knows who it is while it runs
    assert_eq!(a.whoami().await.unwrap(), Some(a.id()));
}

async fn one_way_calls_run_once_each_in_order(routing: Routing) {
    let net = network(routing, 16, Duration::from_secs(10)).await;
    let nodes = &net.nodes;
    let c: CellRef = nodes[3].create::<Counter>(0).await.unwrap();
    let from = nodes[11].reference::<CellRef>(c.id());
    for i in 1..=100 {
        from.bump(i).await.unwrap();
    }
    // a two-way call from the same caller queues behind the one-way ones
    assert_eq!(from.get().await.unwrap(), 5050);
}

async fn a_call_cycle_ends_in_a_deadline_error_not_a_hang(routing: Routing) {
    let net = network(routing, 16, Duration::from_millis(800)).await;
    let nodes = &net.nodes;
    let a: CellRef = nodes[1].create::<Counter>(7).await.unwrap();
    let b: CellRef = nodes[2].create::<Counter>(0).await.unwrap();
    let err = a
        .with_timeout(Duration::from_millis(300))
        .ping(b.clone())
        .await
        .unwrap_err();
    match &err {
        CallError::Timeout {
            target,
            method,
            after,
        } => {
            assert_eq!(target, &a.id());
            assert_eq!(method, "ping");
            assert_eq!(after, &Duration::from_millis(300));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(err.to_string().contains("cycle"), "{err}");
    // once the inner calls hit their own deadline, both objects serve again
    assert_eq!(
        a.with_timeout(Duration::from_secs(5)).get().await.unwrap(),
        7
    );
    assert_eq!(b.get().await.unwrap(), 0);
}

async fn unknown_objects_types_and_methods_get_clear_errors(routing: Routing) {
    let net = network(routing, 16, Duration::from_secs(5)).await;
    let nodes = &net.nodes;
    let ghost = ObjectId::random();
    let r = nodes[4].reference::<CellRef>(ghost);
    assert_eq!(r.get().await.unwrap_err(), CallError::ObjectNotFound(ghost));

    let err = nodes[0]
        .create_raw(ObjectId::random(), "no.such.Type", vec![0xf6])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Remote(RemoteError::UnknownType { type_name, .. }) if type_name == "no.such.Type"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("unknown object type \"no.such.Type\"")
    );

    let c: CellRef = nodes[0].create::<Counter>(0).await.unwrap();
    let err = nodes[9]
        .call_raw(c.id(), "fly", vec![0xf6], false, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("has no method \"fly\""), "{err}");

    // arguments of the wrong shape are a decode error, and the object survives
    let err = nodes[9]
        .call_raw(
            c.id(),
            "add",
            g2_core::wire::to_cbor(&("text",)).unwrap(),
            false,
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::Remote(RemoteError::Decode { .. })),
        "{err:?}"
    );

    // a panicking method is reported, and the object keeps serving
    let err = c.boom().await.unwrap_err();
    assert!(err.to_string().contains("boom on purpose"), "{err}");
    assert_eq!(c.add(1).await.unwrap(), 1);

    // a reference bound to no node, used outside any object, says so
    let loose = CellRef::from_handle(g2::ObjectHandle::new(c.uri().clone()));
    assert_eq!(loose.get().await.unwrap_err(), CallError::NoRuntime);
}

async fn a_crashed_volunteers_objects_are_reported_lost_once_the_failure_is_detected(
    routing: Routing,
) {
    let net = network(routing, 8, Duration::from_secs(5)).await;
    let nodes = &net.nodes;
    let c: CellRef = nodes[0].create::<Counter>(3).await.unwrap();
    let host = net.root(c.id().key());
    let client = nodes.iter().find(|n| n.id() != host).unwrap();
    let via = client.reference::<CellRef>(c.id());
    assert_eq!(via.get().await.unwrap(), 3);
    // the volunteer crashes; until the overlay notices, its objects are
    // unreachable; once it is declared failed, the new root answers: lost
    net.crash(host);
    let mut last: Option<CallError> = None;
    for _ in 0..200 {
        match via.with_timeout(Duration::from_secs(2)).get().await {
            Err(CallError::ObjectLost(id)) => {
                assert_eq!(id, c.id());
                last = None;
                break;
            }
            Err(CallError::Unreachable { target, .. }) if target == c.id() => {
                last = Some(CallError::Unreachable {
                    target,
                    reason: String::new(),
                });
            }
            other => panic!("a crashed object is unreachable, then lost; got {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(last.is_none(), "expected ObjectLost, last answer {last:?}");
    // objects that live elsewhere are untouched
    let d: CellRef = client.create::<Counter>(9).await.unwrap();
    assert_eq!(d.get().await.unwrap(), 9);
}
