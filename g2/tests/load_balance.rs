//! Load balancing within the leaf set (paper §3.5) on an in-process network:
//! objects whose GUIDs all fall to one root end up spread over its neighbours,
//! a node that does not host places its objects on volunteers, and an object
//! placed away from its root answers every caller, moves on when its host
//! leaves, and is reported lost when its host crashes under `none`.

use std::collections::HashMap;
use std::time::Duration;

#[macro_use]
mod common;

use common::{Routing, TestNet};
use g2::NodeId;
use g2::prelude::*;
use serde::{Deserialize, Serialize};

#[g2::remote]
pub trait Tally {
    async fn add(&mut self, n: u64) -> u64;
    async fn total(&mut self) -> u64;
}

#[derive(Serialize, Deserialize)]
struct Count {
    total: u64,
}

impl Object for Count {
    const TYPE_NAME: &'static str = "test.BalancedCount";
    type Init = u64;
    type Ref = TallyRef;
    fn activate(total: u64) -> Self {
        Count { total }
    }
}

impl Tally for Count {
    async fn add(&mut self, n: u64) -> u64 {
        self.total += n;
        self.total
    }
    async fn total(&mut self) -> u64 {
        self.total
    }
}

const NET: &str = "balance.test";

async fn network(routing: Routing, n: usize) -> TestNet {
    TestNet::new(routing, NET, n, Duration::from_secs(5), |b| {
        b.register::<Count>()
    })
    .await
}

/// A fresh GUID whose root (among the live nodes) is `root`.
fn id_rooted_at(net: &TestNet, root: NodeId) -> ObjectId {
    loop {
        let id = ObjectId::random();
        if net.root(id.key()) == root {
            return id;
        }
    }
}

/// How many live copies of each object there are, and how many of them each
/// live node runs (frozen copies on their way out not counted).
fn census(
    net: &TestNet,
    objects: &[ObjectId],
) -> (HashMap<ObjectId, usize>, HashMap<NodeId, usize>) {
    let mut copies = HashMap::new();
    let mut per_node = HashMap::new();
    for n in net.live() {
        let frozen = n.moving_out();
        let running = n
            .hosted_objects()
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| objects.contains(id) && !frozen.contains(id));
        let mut count = 0;
        for id in running {
            *copies.entry(id).or_insert(0) += 1;
            count += 1;
        }
        per_node.insert(n.id(), count);
    }
    (copies, per_node)
}

/// Waits (bounded) until every object runs on exactly one node and the nodes
/// `hosts` run between them no more than `spread` apart; returns whether they
/// did, with the last count on each of `hosts`.
async fn balanced(
    net: &TestNet,
    objects: &[ObjectId],
    hosts: &[NodeId],
    spread: usize,
) -> (bool, Vec<usize>) {
    let mut last = Vec::new();
    for _ in 0..300 {
        let (copies, per_node) = census(net, objects);
        let loads: Vec<usize> = hosts
            .iter()
            .map(|h| per_node.get(h).copied().unwrap_or(0))
            .collect();
        let one_each = objects.iter().all(|id| copies.get(id) == Some(&1));
        let (lo, hi) = (
            loads.iter().min().copied().unwrap_or(0),
            loads.iter().max().copied().unwrap_or(0),
        );
        last = loads;
        if one_each && hi - lo <= spread {
            return (true, last);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (false, last)
}

/// Creates `n` counters whose GUIDs are all rooted at `root`, the i-th by
/// `creator(i)` with the running total `start * i`.
async fn create_rooted_at(
    net: &TestNet,
    root: NodeId,
    n: u64,
    start: u64,
    creator: impl Fn(u64) -> Node,
) -> Vec<(ObjectId, u64)> {
    let mut objects = Vec::new();
    for i in 0..n {
        let id = id_rooted_at(net, root);
        creator(i)
            .create_with_id::<Count>(id, start * i)
            .await
            .expect("create");
        objects.push((id, start * i));
    }
    objects
}

/// Every node calls `add(1)` on every object; each answers with its running
/// total, so the totals prove that no call was lost or applied twice.
async fn every_node_adds_once(net: &TestNet, objects: &[(ObjectId, u64)]) {
    let live = net.live();
    for (k, node) in live.iter().enumerate() {
        for (id, start) in objects {
            let r = node.reference::<TallyRef>(*id);
            let got = r
                .add(1)
                .await
                .unwrap_or_else(|e| panic!("add on {id} from node {k}: {e}"));
            assert_eq!(got, start + k as u64 + 1, "running total of {id}");
        }
    }
}

on_both_overlays!(
    running_objects_move_to_volunteers_that_join_with_their_state,
    objects_crowded_on_one_root_spread_over_its_leaf_set,
    a_node_that_does_not_host_places_its_objects_on_the_volunteers,
    a_placed_object_moves_on_when_its_host_leaves_and_is_lost_when_its_host_crashes,
    a_root_that_restarts_at_once_still_finds_the_objects_placed_on_its_neighbours,
    two_roots_given_as_many_objects_at_once_keep_them_rather_than_swap_them,
);

async fn running_objects_move_to_volunteers_that_join_with_their_state(routing: Routing) {
    let mut net = network(routing, 1).await;
    let first = net.nodes[0].clone();
    // GUIDs just below the first node's id: it stays their root (numerically
    // closest, and their successor) whoever joins, so only load balancing
    // moves them
    let mut objects = Vec::new();
    for i in 0..18u64 {
        let id = ObjectId::from_u128(first.id().as_u128().wrapping_sub(u128::from(i) + 1));
        let r = first.create_with_id::<Count>(id, 0).await.expect("create");
        assert_eq!(r.add(i).await.expect("add"), i);
        objects.push((id, i));
    }
    assert_eq!(first.hosted_objects().len(), 18);
    for _ in 0..2 {
        net.add_node().await;
    }
    net.settle().await;
    let ids: Vec<ObjectId> = objects.iter().map(|(id, _)| *id).collect();
    assert!(ids.iter().all(|id| net.root(id.key()) == first.id()));
    let hosts: Vec<NodeId> = net.nodes.iter().map(|n| n.id()).collect();
    let (ok, loads) = balanced(&net, &ids, &hosts, 2).await;
    assert!(ok, "18 running objects spread over 3 nodes: {loads:?}");
    assert!(first.stats().migrations_out >= 10);
    every_node_adds_once(&net, &objects).await;
}

async fn objects_crowded_on_one_root_spread_over_its_leaf_set(routing: Routing) {
    let net = network(routing, 5).await;
    let root = net.nodes[2].id();
    let objects = create_rooted_at(&net, root, 20, 100, |i| {
        net.nodes[i as usize % net.nodes.len()].clone()
    })
    .await;
    let ids: Vec<ObjectId> = objects.iter().map(|(id, _)| *id).collect();
    let hosts: Vec<NodeId> = net.nodes.iter().map(|n| n.id()).collect();
    let (ok, loads) = balanced(&net, &ids, &hosts, 2).await;
    assert!(
        ok,
        "20 objects rooted at one node of 5 spread out (objects per node: {loads:?})"
    );
    let away = net
        .live()
        .iter()
        .filter(|n| n.id() != root)
        .map(|n| n.hosted_objects().len())
        .sum::<usize>();
    assert!(away >= 12, "{away} of 20 live away from their root");
    // calls still reach each object through its root (one hop more), or
    // straight from a location cache
    every_node_adds_once(&net, &objects).await;
}

async fn a_node_that_does_not_host_places_its_objects_on_the_volunteers(routing: Routing) {
    let mut net = network(routing, 3).await;
    let volunteers: Vec<NodeId> = net.nodes.iter().map(|n| n.id()).collect();
    let client = {
        let b = Node::builder().network(NET);
        let b = match routing {
            Routing::TestSupport => b.overlay(net.dir.overlay()).transport(net.mem.endpoint()),
            Routing::Pastry => b
                .overlay(common::pastry_for_tests())
                .transport(net.mem.endpoint())
                .bootstrap(net.nodes[0].peer().addr.clone()),
            Routing::Chord => b
                .overlay(common::chord_for_tests())
                .transport(net.mem.endpoint())
                .bootstrap(net.nodes[0].peer().addr.clone()),
        };
        b.host_objects(false)
            .register::<Count>()
            .build()
            .await
            .expect("the client joins")
    };
    net.nodes.push(client.clone());
    net.settle().await;
    // half of the objects have the client for their root
    let mut objects = Vec::new();
    for i in 0..12u64 {
        let id = if i % 2 == 0 {
            id_rooted_at(&net, client.id())
        } else {
            ObjectId::random()
        };
        client
            .create_with_id::<Count>(id, 10 * i)
            .await
            .expect("create");
        objects.push((id, 10 * i));
    }
    let ids: Vec<ObjectId> = objects.iter().map(|(id, _)| *id).collect();
    let (ok, loads) = balanced(&net, &ids, &volunteers, 2).await;
    assert!(ok, "12 objects spread over 3 volunteers: {loads:?}");
    // (one that reached it before it was known not to host is passed on)
    for _ in 0..100 {
        if client.hosted_objects().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        client.hosted_objects().is_empty(),
        "the client hosts nothing: {:?}",
        client.hosted_objects()
    );
    every_node_adds_once(&net, &objects).await;
    assert!(client.hosted_objects().is_empty());
}

async fn a_placed_object_moves_on_when_its_host_leaves_and_is_lost_when_its_host_crashes(
    routing: Routing,
) {
    let net = network(routing, 5).await;
    let root = net.nodes[0].id();
    let objects = create_rooted_at(&net, root, 16, 1000, |_| net.nodes[1].clone()).await;
    let ids: Vec<ObjectId> = objects.iter().map(|(id, _)| *id).collect();
    let hosts: Vec<NodeId> = net.nodes.iter().map(|n| n.id()).collect();
    let (ok, loads) = balanced(&net, &ids, &hosts, 2).await;
    assert!(ok, "objects spread out: {loads:?}");
    let placed_on = |n: &Node| -> Vec<ObjectId> {
        n.hosted_objects()
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| ids.contains(id))
            .collect()
    };

    // a node hosting placed objects leaves: they move on with their state
    let leaver = net
        .live()
        .into_iter()
        .find(|n| n.id() != root && n.id() != net.nodes[1].id() && !placed_on(n).is_empty())
        .expect("a node other than the root hosts some");
    let moved = placed_on(&leaver);
    leaver.leave().await.expect("graceful leave");
    net.settle().await;
    for (id, start) in objects.iter().filter(|(id, _)| moved.contains(id)) {
        let got = net.nodes[1]
            .reference::<TallyRef>(*id)
            .total()
            .await
            .unwrap_or_else(|e| panic!("total of {id} after its host left: {e}"));
        assert_eq!(got, *start, "{id} kept its state");
    }
    let (ok, loads) = balanced(&net, &ids, &[], 0).await;
    assert!(ok, "one live copy of each after the leave: {loads:?}");

    // a node hosting placed objects crashes: under `none` callers get
    // ObjectLost, from the root's placement record, not a hang
    let victim = net
        .live()
        .into_iter()
        .find(|n| n.id() != root && n.id() != net.nodes[1].id() && !placed_on(n).is_empty())
        .expect("another node other than the root hosts some");
    let lost = placed_on(&victim);
    net.crash(victim.id());
    let caller = net.nodes[1].clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for id in &lost {
        let mut outcome = None;
        while tokio::time::Instant::now() < deadline {
            match caller.reference::<TallyRef>(*id).total().await {
                Err(CallError::ObjectLost(o)) => {
                    outcome = Some(o);
                    break;
                }
                other => {
                    eprintln!("{id} after its host crashed: {other:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
            }
        }
        assert_eq!(
            outcome,
            Some(*id),
            "{id} reported lost after its host crashed"
        );
    }
    // the others still answer
    for (id, _) in objects.iter().filter(|(id, _)| !lost.contains(id)) {
        caller
            .reference::<TallyRef>(*id)
            .total()
            .await
            .unwrap_or_else(|e| panic!("{id} on a live node: {e}"));
    }
}

async fn a_root_that_restarts_at_once_still_finds_the_objects_placed_on_its_neighbours(
    routing: Routing,
) {
    let mut net = network(routing, 5).await;
    let root = net.nodes[0].clone();
    let creator = net.nodes[1].clone();
    let objects = create_rooted_at(&net, root.id(), 16, 1000, |_| creator.clone()).await;
    let ids: Vec<ObjectId> = objects.iter().map(|(id, _)| *id).collect();
    let hosts: Vec<NodeId> = net.nodes.iter().map(|n| n.id()).collect();
    let (ok, loads) = balanced(&net, &ids, &hosts, 2).await;
    assert!(ok, "objects spread out: {loads:?}");
    // where each object placed away from the root lives
    let placed: Vec<(ObjectId, u64, NodeId)> = objects
        .iter()
        .filter_map(|(id, start)| {
            net.live()
                .into_iter()
                .find(|n| n.id() != root.id() && n.hosted_objects().iter().any(|(h, _)| h == id))
                .map(|n| (*id, *start, n.id()))
        })
        .collect();
    assert!(placed.len() >= 8, "{} of 16 placed away", placed.len());

    // the root crashes and comes straight back, with nothing in memory: it
    // no longer knows where the objects it is root of live
    net.crash(root.id());
    let back = net.restart(root.peer().clone()).await;
    assert_eq!(back.id(), root.id());

    // a node that never called them (no location cache: its calls go
    // through the root) still reaches each one, with its state
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for (id, start, host) in &placed {
        let caller = net
            .live()
            .into_iter()
            .find(|n| n.id() != root.id() && n.id() != creator.id() && n.id() != *host)
            .expect("a third node");
        loop {
            match caller.reference::<TallyRef>(*id).total().await {
                Ok(total) => {
                    assert_eq!(total, *start, "{id} kept its state");
                    break;
                }
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "{id}, placed on a neighbour of the restarted root: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Two volunteers are each given eight objects, in a burst shorter than the
/// interval of their load reports: by the figures each last heard, the other
/// runs fewer. Neither moves anything, because each asks the other's load
/// first; the counts were even all along. (By the stale figures alone each
/// passed the other objects, and they moved back.)
async fn two_roots_given_as_many_objects_at_once_keep_them_rather_than_swap_them(routing: Routing) {
    let net = network(routing, 2).await;
    let (a, b) = (net.nodes[0].id(), net.nodes[1].id());
    // wait for each to have heard the other's (empty) load
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut objects = Vec::new();
    for i in 0..8u64 {
        for root in [a, b] {
            let id = id_rooted_at(&net, root);
            net.nodes[0]
                .create_with_id::<Count>(id, i)
                .await
                .expect("create");
            objects.push((id, i));
        }
    }
    let ids: Vec<ObjectId> = objects.iter().map(|(id, _)| *id).collect();
    // three rounds of load reports, and the minimum stay of anything moved
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let (ok, loads) = balanced(&net, &ids, &[a, b], 0).await;
    assert!(ok, "sixteen objects on two volunteers, 8 each: {loads:?}");
    let moved: u64 = net.nodes.iter().map(|n| n.stats().migrations_out).sum();
    assert_eq!(
        moved, 0,
        "objects moved between two volunteers as loaded as each other"
    );
    every_node_adds_once(&net, &objects).await;
}

/// Waits (bounded) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(30), "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A volunteer whose owner needs the machine stops hosting: it passes every
/// object on without losing or repeating a call, places new ones elsewhere,
/// and takes objects again when it hosts again. Paused calls wait, then run.
async fn a_node_that_stops_hosting_gives_its_objects_back_and_takes_them_again(routing: Routing) {
    let net = network(routing, 4).await;
    let nodes = net.live();
    let owner = nodes[1].clone();
    // objects rooted at the node that will step aside, and others
    let mut counts = Vec::new();
    for i in 0..12 {
        let id = if i % 2 == 0 {
            id_rooted_at(&net, owner.id())
        } else {
            ObjectId::random()
        };
        let c = nodes[0].create_with_id::<Count>(id, 0).await.unwrap();
        c.add(1).await.unwrap();
        counts.push(c);
    }
    until("the node hosts some", || !owner.hosted_objects().is_empty()).await;

    // paused: a call to an object there waits, then runs once resumed
    owner.pause_calls(true);
    let there = owner.hosted_objects()[0].0;
    let waiting = nodes[0]
        .reference::<TallyRef>(there)
        .with_timeout(Duration::from_secs(20));
    let call = tokio::spawn(async move { waiting.add(10).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!call.is_finished(), "a call ran while paused");
    owner.pause_calls(false);
    assert_eq!(call.await.unwrap().unwrap(), 11);

    // keeps its objects but takes no new ones: those rooted at it go elsewhere
    owner.set_accepting(false);
    for _ in 0..3 {
        let id = id_rooted_at(&net, owner.id());
        let c = nodes[2].create_with_id::<Count>(id, 7).await.unwrap();
        assert_eq!(c.add(1).await.unwrap(), 8);
        assert!(!owner.hosted_objects().iter().any(|(o, _)| *o == id));
    }
    assert!(owner.running_objects() > 0, "it kept its objects");
    owner.set_accepting(true);

    // stops hosting: everything moves off it, calls answer all along
    owner.set_hosting(false);
    assert!(!owner.hosting());
    until("the node hosts nothing", || {
        owner.hosted_objects().is_empty()
    })
    .await;
    for c in &counts {
        let total = c.total().await.unwrap();
        assert!(
            total == 1 || total == 11,
            "no call lost or repeated: {total}"
        );
    }
    // new objects rooted at it live elsewhere
    for _ in 0..3 {
        let id = id_rooted_at(&net, owner.id());
        let c = nodes[2].create_with_id::<Count>(id, 5).await.unwrap();
        assert_eq!(c.add(1).await.unwrap(), 6);
    }
    assert!(owner.hosted_objects().is_empty());

    // hosts again: load balancing brings objects back to it
    owner.set_hosting(true);
    until("the node hosts again", || {
        !owner.hosted_objects().is_empty()
    })
    .await;
    for c in &counts {
        let before = c.total().await.unwrap();
        assert_eq!(c.add(1).await.unwrap(), before + 1);
    }
}

on_both_overlays!(a_node_that_stops_hosting_gives_its_objects_back_and_takes_them_again);
