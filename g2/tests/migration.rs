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
        // objects stay on their roots here: these tests follow the root
        b.register::<Count>().load_balancing(false)
    })
    .await
}

on_both_overlays!(objects_move_to_joining_volunteers_without_losing_or_repeating_a_call);

on_both_overlays!(a_graceful_leave_hands_every_object_on_while_calls_continue);

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

/// A transport that can hold back the replies one node sends to another, so
/// that a transfer's acknowledgement is late while the object moves on.
struct LateReplies {
    inner: g2::mem::MemTransport,
    to: g2::NodeId,
    hold: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait::async_trait]
impl g2::Transport for LateReplies {
    fn local_peer(&self) -> g2::Peer {
        self.inner.local_peer()
    }
    async fn send(
        &self,
        to: &g2::Peer,
        frame: Vec<u8>,
    ) -> Result<(), g2_core::transport::TransportError> {
        let held = self.hold.load(std::sync::atomic::Ordering::SeqCst)
            && to.id == self.to
            && matches!(
                g2_core::wire::Frame::decode(&frame).map(|f| f.body),
                Ok(g2_core::wire::Body::Reply(_))
            );
        if held {
            return Ok(());
        }
        self.inner.send(to, frame).await
    }
    async fn recv(
        &self,
    ) -> Result<g2_core::transport::Incoming, g2_core::transport::TransportError> {
        self.inner.recv().await
    }
    async fn identify(
        &self,
        addr: &g2::NodeAddr,
    ) -> Result<g2::Peer, g2_core::transport::TransportError> {
        self.inner.identify(addr).await
    }
    fn disconnect(&self, peer: g2::NodeId, reason: &str) {
        self.inner.disconnect(peer, reason)
    }
    fn close(&self) {
        self.inner.close()
    }
}

/// Node A hands an object to a joining node B, but B's acknowledgement is held
/// back. The object runs calls at B, and B leaves, handing it back to A, all
/// before A hears that its transfer went through. A must take the copy that
/// came back (with every call B ran) and drop its frozen one; before the fix
/// it kept the frozen copy and the calls made at B were lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_that_comes_back_before_its_transfer_is_confirmed_keeps_every_call() {
    use g2::testing::Directory;
    let mem = g2::mem::MemNetwork::new();
    let dir = Directory::new();
    let x = ObjectId::from_u128(0x8000_0000_0000_0000_0000_0000_0000_0000);
    let id = |n: u128| g2::NodeId::from_u128(n << 112);
    async fn node(dir: &Directory, t: impl g2::Transport) -> Node {
        Node::builder()
            .network("migrate.test")
            .overlay(dir.overlay())
            .transport(t)
            .call_timeout(Duration::from_millis(400))
            .load_balancing(false)
            .register::<Count>()
            .build()
            .await
            .expect("node joins")
    }
    let a = node(&dir, mem.endpoint_with_id(id(0x4000))).await;
    let c = node(&dir, mem.endpoint_with_id(id(0xe000))).await;
    let r: TallyRef = c.create_with_id::<Count>(x, ()).await.unwrap();
    for _ in 0..5 {
        r.add(1).await.unwrap();
    }
    assert!(a.hosted_objects().iter().any(|(o, _)| *o == x));

    let hold = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let b = node(
        &dir,
        LateReplies {
            inner: mem.endpoint_with_id(g2::NodeId::from_u128(x.key().0)),
            to: a.id(),
            hold: hold.clone(),
        },
    )
    .await;
    let mut at_b = false;
    for _ in 0..200 {
        if b.hosted_objects().iter().any(|(o, _)| *o == x) {
            at_b = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(at_b, "the joining node took the object over");
    // calls run at B (made at B: other clients' caches still point at A, where
    // they would wait for A's transfer to settle)
    let at_b_ref = b.reference::<TallyRef>(x);
    for _ in 0..5 {
        at_b_ref.add(1).await.unwrap();
    }
    b.leave().await.expect("the object went back");
    hold.store(false, std::sync::atomic::Ordering::SeqCst);

    assert!(b.is_stopped());
    assert_eq!(r.total().await.unwrap(), 10, "no call made at B was lost");
    assert_eq!(a.stats().objects_hosted, 1, "one live copy");
    // A's transfer has settled by now (B is gone): the copy at A goes on
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.add(1).await.unwrap();
    assert_eq!(r.total().await.unwrap(), 11);
}
