//! Fault tolerance scenario 2 (`local`) on an in-process network: a volunteer
//! crashes (its volatile state is dropped, its store is kept), restarts with the
//! same id, recovers its objects from their checkpoints and replays their logs.
//! The ledger workload checks that no acknowledged call is lost and none is
//! applied twice.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod common;

use common::{Routing, chord_for_tests, pastry_for_tests};
use g2::local::{LocalConfig, LocalPolicy};
use g2::mem::MemNetwork;
use g2::prelude::*;
use g2::testing::Directory;
use g2::{MemStore, NodeId, Peer};
use g2_core::store::{Space, Store, StoreExt};
use serde::{Deserialize, Serialize};

#[g2::remote]
pub trait Ledger {
    /// Applies `amount`, forwards it to the sink, returns the new total.
    async fn add(&mut self, amount: u64) -> u64;
    async fn totals(&mut self) -> (u64, u64);
}

#[g2::remote]
pub trait Sink {
    async fn record(&mut self, amount: u64);
    async fn seen(&mut self) -> Vec<u64>;
}

#[g2::remote]
pub trait Feeder {
    /// Sends `count` adds of distinct amounts from `first`; returns the amounts
    /// the ledger acknowledged.
    async fn feed(&mut self, ledger: LedgerRef, first: u64, count: u64)
    -> Result<Vec<u64>, String>;
}

#[derive(Serialize, Deserialize)]
struct LedgerObj {
    sink: SinkRef,
    total: u64,
    applied: u64,
}

impl Object for LedgerObj {
    const TYPE_NAME: &'static str = "test.Ledger";
    type Init = SinkRef;
    type Ref = LedgerRef;
    fn activate(sink: SinkRef) -> Self {
        LedgerObj {
            sink,
            total: 0,
            applied: 0,
        }
    }
}

impl Ledger for LedgerObj {
    async fn add(&mut self, amount: u64) -> u64 {
        self.sink
            .record(amount)
            .await
            .expect("the sink takes the amount");
        self.total += amount;
        self.applied += 1;
        self.total
    }
    async fn totals(&mut self) -> (u64, u64) {
        (self.total, self.applied)
    }
}

#[derive(Serialize, Deserialize)]
struct SinkObj {
    seen: Vec<u64>,
}

impl Object for SinkObj {
    const TYPE_NAME: &'static str = "test.Sink";
    type Init = ();
    type Ref = SinkRef;
    fn activate(_: ()) -> Self {
        SinkObj { seen: Vec::new() }
    }
}

impl Sink for SinkObj {
    async fn record(&mut self, amount: u64) {
        self.seen.push(amount);
    }
    async fn seen(&mut self) -> Vec<u64> {
        self.seen.clone()
    }
}

#[derive(Serialize, Deserialize)]
struct FeederObj;

impl Object for FeederObj {
    const TYPE_NAME: &'static str = "test.Feeder";
    type Init = ();
    type Ref = FeederRef;
    fn activate(_: ()) -> Self {
        FeederObj
    }
}

impl Feeder for FeederObj {
    async fn feed(
        &mut self,
        ledger: LedgerRef,
        first: u64,
        count: u64,
    ) -> Result<Vec<u64>, String> {
        let mut acked = Vec::new();
        for a in first..first + count {
            ledger.add(a).await.map_err(|e| e.to_string())?;
            acked.push(a);
        }
        Ok(acked)
    }
}

const NETWORK: &str = "ledger.test";

/// One incarnation's handle on a volunteer's disk: after a crash the old
/// incarnation's tasks (aborted, but possibly mid-poll) can no longer write, as
/// a killed process cannot.
struct Disk {
    inner: Arc<MemStore>,
    alive: Arc<AtomicBool>,
    /// Armed: the process dies right after its first checkpoint write succeeds
    /// (its disk and then this hook, which takes it off the network).
    die_after_checkpoint: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Armed: the process dies as it drops the checkpoint of that object (the
    /// object left), before that delete reaches its disk.
    die_on_departure: Hook,
}

type Hook = Arc<std::sync::Mutex<Option<(ObjectId, Box<dyn FnOnce() + Send>)>>>;

impl Store for Disk {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, g2_core::store::StoreError> {
        self.inner.get(space, key)
    }
    fn write(&self, batch: g2_core::store::WriteBatch) -> Result<(), g2_core::store::StoreError> {
        if !self.alive.load(Ordering::Acquire) {
            return Err(g2_core::store::StoreError::Backend(
                "the process is dead".into(),
            ));
        }
        let departed = |object: ObjectId| {
            batch.ops.iter().any(|op| {
                matches!(
                    op,
                    g2_core::store::BatchOp::Delete {
                        space: Space::Checkpoints,
                        key,
                    } if key[..] == object.as_u128().to_be_bytes()
                )
            })
        };
        let hook = {
            let mut armed = self
                .die_on_departure
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match armed.take() {
                Some((object, die)) if departed(object) => Some(die),
                other => {
                    *armed = other;
                    None
                }
            }
        };
        if let Some(die) = hook {
            self.alive.store(false, Ordering::Release);
            die();
            return Err(g2_core::store::StoreError::Backend(
                "the process is dead".into(),
            ));
        }
        let checkpoint = batch.ops.iter().any(|op| {
            matches!(
                op,
                g2_core::store::BatchOp::Put {
                    space: Space::Checkpoints,
                    ..
                }
            )
        });
        self.inner.write(batch)?;
        if checkpoint {
            let hook = self
                .die_after_checkpoint
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(die) = hook {
                self.alive.store(false, Ordering::Release);
                die();
            }
        }
        Ok(())
    }
    fn scan_prefix(
        &self,
        space: Space,
        prefix: &[u8],
    ) -> Result<g2_core::store::Pairs, g2_core::store::StoreError> {
        self.inner.scan_prefix(space, prefix)
    }
}

struct FtNet {
    mem: MemNetwork,
    dir: Directory,
    routing: Routing,
    cfg: LocalConfig,
    /// Every node ever started, with its store (kept across a crash) and
    /// whether that incarnation may still write to it.
    nodes: Vec<(Node, Arc<MemStore>, Arc<AtomicBool>)>,
    /// Each incarnation's departure hook (see `Disk::die_on_departure`).
    departure_hooks: Vec<(NodeId, Hook)>,
}

impl FtNet {
    async fn new(routing: Routing, n: usize, cfg: LocalConfig) -> FtNet {
        common::logs();
        let mut net = FtNet {
            mem: MemNetwork::new(),
            dir: Directory::new(),
            routing,
            cfg,
            nodes: Vec::new(),
            departure_hooks: Vec::new(),
        };
        for _ in 0..n {
            let t = net.mem.endpoint();
            net.start(t, Arc::new(MemStore::new())).await;
        }
        net.settle().await;
        net
    }

    /// Waits (bounded) until the live nodes agree on the roots of sample keys,
    /// so that objects created next stay where they are created.
    async fn settle(&self) {
        let live: Vec<Node> = self
            .nodes
            .iter()
            .map(|(n, _, _)| n.clone())
            .filter(|n| !n.is_stopped())
            .collect();
        for _ in 0..400 {
            let agreed = (0..64u128).all(|i| {
                let key = g2::Key(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
                live.iter().filter(|n| n.is_root_of(key)).count() == 1
            }) && live
                .iter()
                .all(|n| n.status().neighbours.len() + 1 >= live.len());
            if agreed {
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the {:?} overlay did not settle", self.routing);
    }

    async fn start(&mut self, transport: g2::mem::MemTransport, store: Arc<MemStore>) -> Node {
        self.start_with(transport, store, None).await
    }

    /// As `start`; `die` (if any) runs as the node dies right after its first
    /// checkpoint write.
    async fn start_with(
        &mut self,
        transport: g2::mem::MemTransport,
        store: Arc<MemStore>,
        die: Option<Box<dyn FnOnce() + Send>>,
    ) -> Node {
        let b = Node::builder().network(NETWORK);
        let bootstrap = self
            .nodes
            .iter()
            .map(|(n, _, _)| n)
            .find(|n| !n.is_stopped())
            .map(|n| n.peer().addr.clone());
        let b = match self.routing {
            Routing::Pastry | Routing::Chord => {
                let b = if self.routing == Routing::Pastry {
                    b.overlay(pastry_for_tests())
                } else {
                    b.overlay(chord_for_tests())
                };
                let b = b.transport(transport);
                match bootstrap {
                    Some(a) => b.bootstrap(a),
                    None => b,
                }
            }
            _ => b.overlay(self.dir.overlay()).transport(transport),
        };
        let alive = Arc::new(AtomicBool::new(true));
        let hook: Hook = Arc::default();
        let disk: Arc<dyn Store> = Arc::new(Disk {
            inner: store.clone(),
            alive: alive.clone(),
            die_after_checkpoint: std::sync::Mutex::new(die),
            die_on_departure: hook.clone(),
        });
        let node = b
            .shared_store(disk.clone())
            .fault_tolerance(LocalPolicy::new(disk, self.cfg))
            .call_timeout(Duration::from_secs(30))
            // the tests crash the host they chose: objects stay on their roots
            .load_balancing(false)
            .register::<LedgerObj>()
            .register::<SinkObj>()
            .register::<FeederObj>()
            .build()
            .await
            .expect("node builds and joins");
        self.nodes.push((node.clone(), store, alive));
        self.departure_hooks.push((node.id(), hook));
        node
    }

    /// Arms the latest incarnation of `id` to run `die` as it drops the
    /// checkpoint of `object`, which left it.
    fn die_on_departure(&self, id: NodeId, object: ObjectId, die: Box<dyn FnOnce() + Send>) {
        let (_, hook) = self
            .departure_hooks
            .iter()
            .rev()
            .find(|(n, _)| *n == id)
            .expect("a node with that id");
        *hook.lock().unwrap_or_else(|p| p.into_inner()) = Some((object, die));
    }

    fn node(&self, id: NodeId) -> (Node, Arc<MemStore>, Arc<AtomicBool>) {
        self.nodes
            .iter()
            .rev()
            .find(|(n, _, _)| n.id() == id)
            .cloned()
            .expect("a node with that id")
    }

    /// Drops the node's volatile state (tasks, objects, queues, connections);
    /// its store survives.
    fn crash(&self, id: NodeId) -> (Peer, Arc<MemStore>) {
        let (node, store, alive) = self.node(id);
        // the network first: nothing the dying incarnation does after this (such
        // as failing to write to its dead disk) can reach anyone
        self.mem.kill(id);
        alive.store(false, Ordering::Release);
        node.shutdown();
        if self.routing == Routing::TestSupport {
            self.dir.fail(id);
        }
        (node.peer().clone(), store)
    }

    async fn restart(&mut self, peer: Peer, store: Arc<MemStore>) -> Node {
        let t = self.mem.endpoint_at(peer);
        self.start(t, store).await
    }

    /// The live nodes holding a copy of `object` (with `live_only`, a copy
    /// that runs, not one frozen on its way out).
    fn hosts_of(&self, object: ObjectId, live_only: bool) -> Vec<NodeId> {
        self.nodes
            .iter()
            .map(|(n, _, _)| n)
            .filter(|n| !n.is_stopped())
            .filter(|n| n.hosted_objects().iter().any(|(id, _)| *id == object))
            .filter(|n| !live_only || !n.moving_out().contains(&object))
            .map(|n| n.id())
            .collect()
    }

    fn host_of(&self, object: ObjectId) -> Option<Node> {
        self.nodes
            .iter()
            .map(|(n, _, _)| n)
            .filter(|n| !n.is_stopped())
            .find(|n| n.hosted_objects().iter().any(|(id, _)| *id == object))
            .cloned()
    }
}

/// An object id whose root is not `client` (so crashing its host spares the client).
fn id_not_rooted_at(client: &Node) -> ObjectId {
    loop {
        let id = ObjectId::random();
        if !client.is_root_of(id.key()) {
            return id;
        }
    }
}

/// Creates a `T` from `client` under an id whose root is not `client`.
async fn create_away<T: Object>(client: &Node, init: T::Init) -> (ObjectId, T::Ref) {
    let id = id_not_rooted_at(client);
    let r = client
        .create_with_id::<T>(id, init)
        .await
        .unwrap_or_else(|e| panic!("creating a {}: {e}", T::TYPE_NAME));
    (id, r)
}

fn config(every: u32) -> LocalConfig {
    LocalConfig {
        checkpoint_every_calls: every,
        ..LocalConfig::default()
    }
}

const PER_FEEDER: u64 = 150;

/// A ledger (away from the client) that a feeder is sending 120 adds, 20 of
/// them applied already.
struct Fed {
    ledger_id: ObjectId,
    ledger: LedgerRef,
    sink: SinkRef,
    old_host: Node,
    feeding: tokio::task::JoinHandle<Result<Result<Vec<u64>, String>, CallError>>,
}

async fn feed_a_ledger(net: &FtNet) -> Fed {
    let client = net.nodes[0].0.clone();
    let (_, sink) = create_away::<SinkObj>(&client, ()).await;
    let (ledger_id, ledger) = create_away::<LedgerObj>(&client, sink.clone()).await;
    let (_, feeder) = create_away::<FeederObj>(&client, ()).await;
    let old_host = net.host_of(ledger_id).expect("the ledger is hosted");
    let feeding = {
        let (f, l) = (feeder.clone(), ledger.clone());
        tokio::spawn(async move { f.feed(l, 1, 120).await })
    };
    for _ in 0..2000 {
        if ledger.totals().await.unwrap().1 >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Fed {
        ledger_id,
        ledger,
        sink,
        old_host,
        feeding,
    }
}

/// The adds the feeder got acknowledged (it got them all).
async fn all_acknowledged(
    feeding: tokio::task::JoinHandle<Result<Result<Vec<u64>, String>, CallError>>,
) -> Vec<u64> {
    feeding
        .await
        .unwrap()
        .expect("feed call")
        .expect("every add acknowledged")
}

/// Each of the 120 acknowledged adds was applied once, and reached the sink
/// once, in order.
async fn applied_once(ledger: &LedgerRef, sink: &SinkRef, acked: &[u64]) {
    let (total, applied) = ledger.totals().await.unwrap();
    let seen = sink.seen().await.unwrap();
    assert_eq!(applied, 120, "each acknowledged add applied exactly once");
    assert_eq!(total, acked.iter().sum::<u64>());
    assert_eq!(seen, acked, "the sink saw each add once, in order");
}

/// Waits (bounded, 2 s) for `flag`.
async fn wait_for(flag: &AtomicBool) {
    for _ in 0..2000 {
        if flag.load(Ordering::Acquire) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The ledger workload: 3 feeders send 150 adds each while the ledger's volunteer
/// crashes and restarts. Every acknowledged add is applied exactly once, the sink
/// saw each exactly once, and the totals agree.
async fn ledger_survives_crash_and_restart(routing: Routing, every: u32, down_ms: u64) {
    let mut net = FtNet::new(routing, 4, config(every)).await;
    let client = net.nodes[0].0.clone();
    let (_, sink) = create_away::<SinkObj>(&client, ()).await;
    let (ledger_id, ledger) = create_away::<LedgerObj>(&client, sink.clone()).await;
    let mut feeders = Vec::new();
    for _ in 0..3 {
        feeders.push(create_away::<FeederObj>(&client, ()).await.1);
    }
    let ledger_host = net.host_of(ledger_id).expect("the ledger is hosted");
    assert_ne!(ledger_host.id(), client.id());

    let runs: Vec<_> = feeders
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let f = f.clone();
            let l = ledger.clone();
            tokio::spawn(async move { f.feed(l, 1000 * (i as u64 + 1), PER_FEEDER).await })
        })
        .collect();
    // let a quarter of the adds through, then crash the ledger's volunteer mid-run
    let served = ledger_host.stats().calls_served;
    for _ in 0..2000 {
        if ledger_host.stats().calls_served >= served + 3 * PER_FEEDER / 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (peer, store) = net.crash(ledger_host.id());
    assert!(
        !store
            .scan_prefix(Space::Checkpoints, b"")
            .unwrap()
            .is_empty(),
        "the crashed volunteer kept checkpoints"
    );
    tokio::time::sleep(Duration::from_millis(down_ms)).await;
    let back = net.restart(peer, store).await;
    assert!(
        back.hosted_objects().iter().any(|(id, _)| *id == ledger_id),
        "the restarted volunteer hosts the ledger again"
    );

    let mut acked = Vec::new();
    for r in runs {
        let got = r
            .await
            .expect("feeder task")
            .expect("feed call")
            .expect("every add acknowledged");
        acked.extend(got);
    }
    assert_eq!(acked.len() as u64, 3 * PER_FEEDER);
    let (total, applied) = ledger.totals().await.expect("ledger answers");
    let seen = sink.seen().await.expect("sink answers");
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "the sink saw an amount twice");
    assert_eq!(
        unique,
        acked.iter().copied().collect::<BTreeSet<u64>>(),
        "the sink saw exactly the acknowledged amounts"
    );
    assert_eq!(
        applied,
        3 * PER_FEEDER,
        "each acknowledged add applied exactly once"
    );
    assert_eq!(total, acked.iter().sum::<u64>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_survives_a_crash_checkpointing_every_call() {
    ledger_survives_crash_and_restart(Routing::TestSupport, 1, 300).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_survives_a_crash_replaying_a_long_log() {
    ledger_survives_crash_and_restart(Routing::TestSupport, 1000, 300).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_survives_a_crash_on_pastry() {
    ledger_survives_crash_and_restart(Routing::Pastry, 7, 1500).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_survives_a_crash_on_chord() {
    ledger_survives_crash_and_restart(Routing::Chord, 7, 1500).await
}

/// While a volunteer is down its objects are unavailable, not lost: a call made
/// during the outage waits and completes once the volunteer is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_during_an_outage_wait_for_the_restart() {
    let mut net = FtNet::new(Routing::TestSupport, 3, config(5)).await;
    let client = net.nodes[0].0.clone();
    let (sink_id, sink) = create_away::<SinkObj>(&client, ()).await;
    sink.record(1).await.unwrap();
    let host = net.host_of(sink_id).unwrap();
    let (peer, store) = net.crash(host.id());
    // give the others time to declare it failed
    tokio::time::sleep(Duration::from_millis(200)).await;
    let during = {
        let s = sink.clone();
        tokio::spawn(async move { s.record(2).await })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!during.is_finished(), "the call waits for the volunteer");
    net.restart(peer, store).await;
    during
        .await
        .unwrap()
        .expect("the call completes after the restart");
    assert_eq!(sink.seen().await.unwrap(), vec![1, 2]);
}

/// A volunteer dies right after it stored an object moving to it, before the
/// old host heard that it did. The old host keeps its copy frozen and asks again
/// instead of running it (its calls queue), so when the volunteer comes back
/// with the object there is one live copy: no add is lost or applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_host_that_dies_mid_transfer_comes_back_with_the_only_copy() {
    let mut net = FtNet::new(Routing::TestSupport, 3, config(5)).await;
    let Fed {
        ledger_id,
        ledger,
        sink,
        old_host,
        feeding,
    } = feed_a_ledger(&net).await;

    // a volunteer whose id is the ledger's key joins: the ledger moves to it,
    // and it dies as soon as the ledger's checkpoint is on its disk
    let newcomer = NodeId::from_u128(ledger_id.as_u128());
    let died = Arc::new(AtomicBool::new(false));
    let die = {
        let (mem, died) = (net.mem.clone(), died.clone());
        Box::new(move || {
            mem.kill(newcomer);
            died.store(true, Ordering::Release);
        })
    };
    let t = net.mem.endpoint_with_id(newcomer);
    let node = net
        .start_with(t, Arc::new(MemStore::new()), Some(die))
        .await;
    wait_for(&died).await;
    assert!(
        died.load(Ordering::Acquire),
        "the ledger moved to the newcomer"
    );
    let (peer, store) = net.crash(node.id());
    // down past the transfer's first timeout (5 s): the old host's next attempt
    // finds the newcomer unreachable
    tokio::time::sleep(Duration::from_millis(5600)).await;
    let served = old_host.stats().calls_served;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        old_host.stats().calls_served,
        served,
        "the old host runs no call on its frozen copy while the newcomer is down"
    );

    let back = net.restart(peer, store).await;
    let acked = all_acknowledged(feeding).await;
    assert_eq!(acked.len(), 120);
    // Never two live copies (a copy frozen for a transfer runs nothing). The
    // old host's frozen copy goes once its next attempt hears the newcomer has
    // the ledger (bounded wait).
    let hosts = |live_only: bool| net.hosts_of(ledger_id, live_only);
    for _ in 0..1000 {
        let live = hosts(true);
        assert!(
            live.len() <= 1,
            "two live copies of the ledger: {live:?} (newcomer {}, old host {})",
            back.id(),
            old_host.id()
        );
        if hosts(false) == vec![back.id()] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        hosts(false),
        vec![back.id()],
        "one copy left, at the newcomer"
    );
    applied_once(&ledger, &sink, &acked).await;
}

/// The old host dies after the new one acknowledged the transfer but before it
/// dropped its own checkpoint. Restarted, it must not run that stale copy (calls
/// that reached it would be lost when the copies meet): it sends the same
/// transfer again, the new host acknowledges it without installing it twice,
/// and the stale copy goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_host_that_dies_before_dropping_its_copy_does_not_run_it_again() {
    let mut net = FtNet::new(Routing::TestSupport, 3, config(5)).await;
    let Fed {
        ledger_id,
        ledger,
        sink,
        old_host,
        feeding,
    } = feed_a_ledger(&net).await;

    // the old host dies as it drops the ledger's checkpoint: the newcomer (the
    // ledger's new root) already runs the ledger
    let died = Arc::new(AtomicBool::new(false));
    let victim = old_host.id();
    net.die_on_departure(victim, ledger_id, {
        let (mem, died) = (net.mem.clone(), died.clone());
        Box::new(move || {
            mem.kill(victim);
            died.store(true, Ordering::Release);
        })
    });
    let newcomer = net
        .start(
            net.mem
                .endpoint_with_id(NodeId::from_u128(ledger_id.as_u128())),
            Arc::new(MemStore::new()),
        )
        .await;
    wait_for(&died).await;
    assert!(died.load(Ordering::Acquire), "the ledger left the old host");
    let (peer, store) = net.crash(victim);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let back = net.restart(peer, store).await;
    for _ in 0..300 {
        let live = net.hosts_of(ledger_id, true);
        assert_eq!(
            live,
            vec![newcomer.id()],
            "the ledger runs at the newcomer only (restarted old host {})",
            back.id()
        );
        if !back.hosted_objects().iter().any(|(id, _)| *id == ledger_id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !back.hosted_objects().iter().any(|(id, _)| *id == ledger_id),
        "the stale copy went"
    );
    let acked = all_acknowledged(feeding).await;
    applied_once(&ledger, &sink, &acked).await;
}

/// A volunteer that never returns: callers get `Unavailable` at their deadline,
/// never `ObjectNotFound` or `ObjectLost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volunteer_that_stays_down_makes_calls_unavailable_not_lost() {
    let net = FtNet::new(Routing::TestSupport, 3, config(5)).await;
    let client = net.nodes[0].0.clone();
    let (sink_id, sink) = create_away::<SinkObj>(&client, ()).await;
    sink.record(1).await.unwrap();
    let host = net.host_of(sink_id).unwrap();
    net.crash(host.id());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let short = sink.handle().with_timeout(Duration::from_millis(800));
    let err = short.call::<_, ()>("record", &(2u64,)).await.unwrap_err();
    assert!(
        matches!(err, CallError::Unavailable { object, host: h, .. } if object == sink_id && h == host.id()),
        "{err}"
    );
}

/// A damaged checkpoint is reported at restart and the object is lost, never
/// rebuilt wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_checkpoint_makes_the_object_lost() {
    let mut net = FtNet::new(Routing::TestSupport, 3, config(1)).await;
    let client = net.nodes[0].0.clone();
    let (sink_id, sink) = create_away::<SinkObj>(&client, ()).await;
    sink.record(1).await.unwrap();
    let host = net.host_of(sink_id).unwrap();
    let (peer, store) = net.crash(host.id());
    let key = sink_id.as_u128().to_be_bytes();
    let mut ck = store.get(Space::Checkpoints, &key).unwrap().unwrap();
    let mid = ck.len() / 2;
    ck[mid] ^= 0xff;
    store.put(Space::Checkpoints, &key, &ck).unwrap();
    let back = net.restart(peer, store).await;
    assert!(!back.hosted_objects().iter().any(|(id, _)| *id == sink_id));
    let err = sink.record(2).await.unwrap_err();
    assert!(
        matches!(err, CallError::ObjectLost(id) if id == sink_id),
        "{err}"
    );
}
