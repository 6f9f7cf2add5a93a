//! Benchmarks of local fault tolerance (scenario 2) on an in-process network
//! whose volunteers keep RocksDB stores in temporary directories:
//!
//! - ledger calls per second (clients calling `add`, each forwarded to a sink)
//!   under `none`, `local --durability process` and `local --durability machine`;
//! - recovery time after a restart with `--objects` objects (crash the volunteer,
//!   restart it on the same store, time until every object answered a call).
//!
//! ```sh
//! cargo run --release -p g2-volunteer --example ft_bench -- --calls 2000 --objects 100 --json
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use g2::local::{Durability, LocalConfig, LocalPolicy};
use g2::mem::{MemNetwork, MemTransport};
use g2::prelude::*;
use g2::testing::Directory;
use g2::{NodeId, Store};
use g2_store_rocksdb::RocksStore;
use serde::{Deserialize, Serialize};

#[g2::remote]
pub trait Ledger {
    async fn add(&mut self, amount: u64) -> u64;
}

#[g2::remote]
pub trait Sink {
    async fn record(&mut self, amount: u64);
}

#[derive(Serialize, Deserialize)]
struct LedgerObj {
    sink: Option<SinkRef>,
    total: u64,
}

impl Object for LedgerObj {
    const TYPE_NAME: &'static str = "bench.Ledger";
    type Init = Option<SinkRef>;
    type Ref = LedgerRef;
    fn activate(sink: Option<SinkRef>) -> Self {
        LedgerObj { sink, total: 0 }
    }
}

impl Ledger for LedgerObj {
    async fn add(&mut self, amount: u64) -> u64 {
        if let Some(s) = &self.sink {
            s.record(amount).await.expect("sink");
        }
        self.total += amount;
        self.total
    }
}

#[derive(Serialize, Deserialize)]
struct SinkObj {
    total: u64,
}

impl Object for SinkObj {
    const TYPE_NAME: &'static str = "bench.Sink";
    type Init = ();
    type Ref = SinkRef;
    fn activate(_: ()) -> Self {
        SinkObj { total: 0 }
    }
}

impl Sink for SinkObj {
    async fn record(&mut self, amount: u64) {
        self.total += amount;
    }
}

struct Opts {
    calls: u64,
    clients: u64,
    objects: usize,
    checkpoint_every: u32,
    json: bool,
}

fn parse() -> Opts {
    let mut o = Opts {
        calls: 2000,
        clients: 4,
        objects: 100,
        checkpoint_every: 100,
        json: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let val = |i: usize| -> u64 {
            args.get(i + 1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{} needs a number", args[i]))
        };
        match args[i].as_str() {
            "--calls" => o.calls = val(i),
            "--clients" => o.clients = val(i).max(1),
            "--objects" => o.objects = val(i) as usize,
            "--checkpoint-every" => o.checkpoint_every = val(i) as u32,
            "--json" => {
                o.json = true;
                i += 1;
                continue;
            }
            other => panic!("unknown flag {other}"),
        }
        i += 2;
    }
    o
}

struct Net {
    mem: MemNetwork,
    dir: Directory,
    dirs: Vec<tempfile::TempDir>,
}

impl Net {
    fn new() -> Net {
        Net {
            mem: MemNetwork::new(),
            dir: Directory::new(),
            dirs: Vec::new(),
        }
    }

    fn store(&mut self) -> Arc<RocksStore> {
        let d = tempfile::tempdir().expect("temp dir");
        let s = Arc::new(RocksStore::open(d.path()).expect("store"));
        self.dirs.push(d);
        s
    }

    async fn node(
        &self,
        t: MemTransport,
        store: Arc<RocksStore>,
        ft: Option<(Durability, u32)>,
    ) -> Node {
        let mut b = Node::builder()
            .network("bench.ft")
            .overlay(self.dir.overlay())
            .transport(t)
            .register::<LedgerObj>()
            .register::<SinkObj>()
            .call_timeout(Duration::from_secs(60));
        if let Some((durability, every)) = ft {
            let s: Arc<dyn Store> = store.clone();
            b = b.shared_store(s.clone()).fault_tolerance(LocalPolicy::new(
                s,
                LocalConfig {
                    checkpoint_every_calls: every,
                    durability,
                    ..LocalConfig::default()
                },
            ));
        }
        b.build().await.expect("node")
    }
}

/// Calls per second: `clients` client tasks on node A call one ledger on node B,
/// which forwards each amount to a sink on node B.
async fn ledger_rate(o: &Opts, ft: Option<(Durability, u32)>) -> f64 {
    let mut net = Net::new();
    let (sa, sb) = (net.store(), net.store());
    let a = net.node(net.mem.endpoint(), sa, ft).await;
    let b = net.node(net.mem.endpoint(), sb, ft).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let on_b = |n: &Node| loop {
        let id = ObjectId::random();
        if !n.is_root_of(id.key()) {
            return id;
        }
    };
    let sink_id = on_b(&a);
    a.create_with_id::<SinkObj>(sink_id, ()).await.unwrap();
    let sink: SinkRef = a.reference(sink_id);
    let ledger_id = on_b(&a);
    let ledger: LedgerRef = a
        .create_with_id::<LedgerObj>(ledger_id, Some(sink))
        .await
        .unwrap();
    let per = o.calls / o.clients;
    let start = Instant::now();
    let tasks: Vec<_> = (0..o.clients)
        .map(|c| {
            let l = ledger.clone();
            tokio::spawn(async move {
                for i in 0..per {
                    l.add(c * 1_000_000 + i).await.expect("add");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let rate = (per * o.clients) as f64 / start.elapsed().as_secs_f64();
    a.shutdown();
    b.shutdown();
    drop(b);
    rate
}

/// Milliseconds from the restart of a crashed volunteer hosting `objects`
/// ledgers until every one of them answered a call.
async fn recovery_ms(o: &Opts) -> (f64, usize) {
    let mut net = Net::new();
    let (sa, sb) = (net.store(), net.store());
    let ft = Some((Durability::Process, o.checkpoint_every));
    let a = net.node(net.mem.endpoint(), sa, ft).await;
    let b = net.node(net.mem.endpoint(), sb.clone(), ft).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut ledgers: Vec<LedgerRef> = Vec::new();
    while ledgers.len() < o.objects {
        let id = ObjectId::random();
        if b.is_root_of(id.key()) {
            ledgers.push(a.create_with_id::<LedgerObj>(id, None).await.unwrap());
        }
    }
    // some logged calls to replay as well
    for l in &ledgers {
        for i in 0..5 {
            l.add(i).await.unwrap();
        }
    }
    let peer = b.peer().clone();
    let b_id: NodeId = b.id();
    net.mem.kill(b_id);
    b.shutdown();
    drop(b);
    net.dir.fail(b_id);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = Instant::now();
    let b2 = net.node(net.mem.endpoint_at(peer), sb, ft).await;
    let recovered = b2.hosted_objects().len();
    futures::future::join_all(ledgers.iter().map(|l| l.add(0)))
        .await
        .into_iter()
        .for_each(|r| {
            r.expect("a recovered ledger answers");
        });
    let ms = start.elapsed().as_secs_f64() * 1e3;
    a.shutdown();
    b2.shutdown();
    (ms, recovered)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = parse();
    let none = ledger_rate(&o, None).await;
    let process = ledger_rate(&o, Some((Durability::Process, o.checkpoint_every))).await;
    let machine = ledger_rate(&o, Some((Durability::Machine, o.checkpoint_every))).await;
    let (rec_ms, recovered) = recovery_ms(&o).await;
    println!(
        "ledger calls/s ({} calls, {} clients, checkpoint every {} calls): none {none:.0}, local/process {process:.0}, local/machine {machine:.0}",
        o.calls, o.clients, o.checkpoint_every
    );
    println!(
        "recovery of {recovered} objects after a restart: {rec_ms:.1} ms until every one answered"
    );
    if o.json {
        println!(
            "{}",
            serde_json::json!({
                "experiment": "ft_local",
                "calls": o.calls,
                "clients": o.clients,
                "checkpoint_every": o.checkpoint_every,
                "ledger_calls_per_s": {"none": none, "process": process, "machine": machine},
                "recovery_objects": recovered,
                "recovery_ms": rec_ms,
            })
        );
    }
}
