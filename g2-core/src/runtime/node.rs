//! The node runtime: hosts objects, routes requests hop by hop through the
//! overlay, and answers calls.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::sync::lock;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info_span, trace, warn};

use crate::fault::{Admission, FaultPolicy, IncomingCall, OutgoingCall, OutgoingDecision};
use crate::id::{NodeId, ObjectId, Peer};
use crate::overlay::{Overlay, OverlayEvent, Route, Transmit};
use crate::runtime::context::{self, CURRENT, CallContext};
use crate::runtime::error::CallError;
use crate::runtime::object::{Hosted, Object, ObjectHandle, RemoteRef, TypeEntry};
use crate::store::Store;
use crate::transport::{Incoming, Transport};
use crate::uri::ObjectUri;
use crate::wire::{
    Body, ByteVec, Frame, MAX_HOPS, RemoteError, Reply, Request, RequestKind, from_cbor, to_cbor,
};

/// How many times a request is re-routed after its next hop proved unreachable.
const MAX_SEND_ATTEMPTS: usize = 4;
/// How many nodes of an object's replica set keep its placement record.
const PLACEMENT_REPLICAS: usize = 4;
/// How often a node checks that it is still the root of every object it hosts.
const PLACEMENT_CHECK: Duration = Duration::from_secs(1);
/// How long a leaving node keeps forwarding requests after leaving the overlay.
const LEAVE_GRACE: Duration = Duration::from_millis(200);
/// Entries kept in the sender-side location cache before it is cleared.
const LOCATION_CACHE_LIMIT: usize = 100_000;
/// Under a fault-tolerance policy, a call without a reply after this long is
/// sent again with the same call id (the receiver answers a duplicate from its
/// kept results); the wait doubles up to [`RESEND_MAX`].
const RESEND_AFTER: Duration = Duration::from_secs(1);
const RESEND_MAX: Duration = Duration::from_secs(8);
/// Under a fault-tolerance policy objects are never dropped, so "no such object"
/// within this long of the first attempt (at most the call's deadline) is taken
/// for views of the ring that still disagree (a volunteer restarting with its
/// old id) and asked again.
const NOT_FOUND_GRACE: Duration = Duration::from_secs(15);
/// Handling one frame or sending one overlay message for longer than this is
/// logged: everything behind it waited.
const SLOW_HANDLING: Duration = Duration::from_millis(500);
/// An object with calls queued lets other tasks run after this many calls in a
/// row: its replies, written to the transport as each call ends, go out while it
/// works through the rest (without this they left in one burst at the end, and
/// with client and volunteer on different CPUs each side waited for the other's
/// whole burst).
const YIELD_EVERY: usize = 16;
/// How often a node tells its leaf set its load and balances against theirs.
const LOAD_EVERY: Duration = Duration::from_millis(500);
/// A neighbour's load report older than this is not acted on.
const LOAD_STALE: Duration = Duration::from_secs(3);
/// How long a node waits for the loads it asked for before moving objects.
const LOAD_ASK_WAIT: Duration = Duration::from_millis(250);
/// How many of its nearest nodes a node balances its load with (its leaf set).
const LEAF_SET: usize = 8;
/// A running object is passed to a neighbour that runs at least this many
/// fewer (a new one goes to any neighbour that runs fewer).
const IMBALANCE: u32 = 2;
/// An object stays at least this long where it arrived before load balancing
/// moves it on.
const MIN_STAY: Duration = Duration::from_secs(1);
/// A node that does not host places a new object on the neighbour nearest its
/// GUID unless that one runs this many more than the least loaded.
const NON_HOSTING_SLACK: u32 = 16;
/// How long a node that does not host waits at start for a neighbour that does.
const HOSTING_NEIGHBOUR_WAIT: Duration = Duration::from_secs(2);

/// Counters a node keeps about its work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeStats {
    /// Calls and activations this node originated (client calls and object calls).
    pub calls_sent: u64,
    /// Calls run by objects hosted here.
    pub calls_served: u64,
    /// Requests this node passed on to another node.
    pub requests_forwarded: u64,
    /// Requests sent straight to the host named by the location cache.
    pub cache_hits: u64,
    /// Objects hosted here now.
    pub objects_hosted: u64,
    /// Objects migrated away from this node.
    pub migrations_out: u64,
    /// Objects migrated to this node.
    pub migrations_in: u64,
}

#[derive(Default)]
struct Counters {
    calls_sent: AtomicU64,
    calls_served: AtomicU64,
    requests_forwarded: AtomicU64,
    cache_hits: AtomicU64,
    migrations_out: AtomicU64,
    migrations_in: AtomicU64,
}

struct Invocation {
    /// Who waits for the reply (none for a call replayed after a restart).
    origin: Option<(Peer, u64)>,
    call: IncomingCall,
}

/// What an object's actor receives, in arrival order.
enum InboxMsg {
    Call(Invocation),
    /// Stop after the calls before this one, hand over a snapshot, then wait for
    /// the verdict: forward what queued meanwhile to the new host, or carry on.
    Migrate {
        snapshot: oneshot::Sender<Snapshot>,
        verdict: oneshot::Receiver<Verdict>,
    },
}

struct Snapshot {
    state: Result<Vec<u8>, String>,
    next_call_seq: u64,
}

/// An object stopped for a transfer (see `NodeInner::freeze`).
struct Frozen {
    type_name: &'static str,
    policy_name: String,
    epoch: u64,
    snap_rx: oneshot::Receiver<Snapshot>,
    verdict_tx: oneshot::Sender<Verdict>,
}

enum Verdict {
    /// The new host acknowledged: forward the queued calls there, say so, stop.
    Moved(Peer, oneshot::Sender<()>),
    /// The transfer failed definitely: carry on here.
    Stay,
}

/// A policy object with the per-object lock that orders logging and queueing.
type Arrival = (Arc<dyn FaultPolicy>, Arc<tokio::sync::Mutex<()>>);

struct ObjectSlot {
    inbox: mpsc::UnboundedSender<InboxMsg>,
    type_name: &'static str,
    policy: String,
    /// The policy object, with the lock that keeps "log the arrival, then queue
    /// the call" atomic, so that calls run in the order they were logged.
    arrival: Option<Arrival>,
    migrating: bool,
    /// Hosted here by load balancing though this node is not the object's root
    /// (whose placement record points here): left where it is by `rebalance`.
    placed: bool,
    /// When it arrived here by migration (not set for an object created or
    /// recovered here).
    arrived: Option<Instant>,
    /// Tells this hosting apart from a later one of the same object here (an
    /// object can come back while its transfer out is still being confirmed).
    epoch: u64,
    task: JoinHandle<()>,
}

/// What `g2 status` shows of a node.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    /// The node's id.
    pub id: NodeId,
    /// Its transport address.
    pub addr: String,
    /// Its network.
    pub network: String,
    /// The overlay in use.
    pub overlay: String,
    /// Its nearest neighbours on the ring (leaf set / successors), itself excluded.
    pub neighbours: Vec<Peer>,
    /// The objects it hosts, with their types.
    pub objects: Vec<(ObjectId, String)>,
    /// Work counters.
    pub stats: NodeStats,
    /// Seconds since the node started.
    pub uptime_s: f64,
}

/// A request this node originated and still waits on.
struct Pending {
    reply: oneshot::Sender<Reply>,
    /// The request and the host it went straight to (location cache): if that
    /// host is declared failed, the request is routed again, and the object's new
    /// root answers (its state died with the host, so nothing runs twice).
    direct: Option<(Request, NodeId)>,
}

/// What a root's placement records say of an object it does not host.
enum Placement {
    /// Its host failed.
    Lost,
    /// Its host is down, and the object's policy keeps it for the host's return.
    Unavailable(NodeId),
    /// It lives there.
    At(Peer),
}

/// Why a graceful leave could not migrate everything.
#[derive(Debug, thiserror::Error)]
#[error("{} object(s) could not be migrated before leaving: {}", failed.len(), failed.iter().map(|(id, e)| format!("{id}: {e}")).collect::<Vec<_>>().join("; "))]
pub struct LeaveError {
    /// The objects that stayed, with the reason.
    pub failed: Vec<(ObjectId, String)>,
}

pub(crate) struct Config {
    pub(crate) network: String,
    pub(crate) overlay: Box<dyn Overlay>,
    pub(crate) overlay_name: &'static str,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) run_policy: String,
    pub(crate) policies: HashMap<String, Arc<dyn FaultPolicy>>,
    pub(crate) types: HashMap<&'static str, TypeEntry>,
    pub(crate) call_timeout: Duration,
    pub(crate) host_objects: bool,
    pub(crate) load_balancing: bool,
}

/// What a neighbour last said of its load.
struct PeerLoad {
    objects: u32,
    hosting: bool,
    at: Instant,
    /// Sent objects by load balancing since this report.
    awaiting: bool,
    /// The peer's start number (see [`crate::wire::LoadReport::boot`]).
    boot: u64,
}

pub(crate) struct NodeInner {
    me: Peer,
    network: String,
    client_id: ObjectId,
    client_seq: AtomicU64,
    overlay: Mutex<Box<dyn Overlay>>,
    overlay_name: &'static str,
    overlay_wake: Arc<Notify>,
    joined: Arc<Notify>,
    left: Arc<Notify>,
    transport: Arc<dyn Transport>,
    store: Arc<dyn Store>,
    run_policy: String,
    policies: HashMap<String, Arc<dyn FaultPolicy>>,
    types: HashMap<&'static str, TypeEntry>,
    objects: Mutex<HashMap<ObjectId, ObjectSlot>>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_request: AtomicU64,
    locations: Mutex<HashMap<ObjectId, Peer>>,
    call_timeout: Duration,
    counters: Counters,
    /// Objects migrated away, and where to: requests that still reach this node
    /// for them are passed on (until the overlay routes there by itself).
    moved: Mutex<HashMap<ObjectId, Peer>>,
    /// Transfers installed here lately: a retry of one is acknowledged, never
    /// installed again (the object may have moved on since).
    transfers_in: Mutex<RecentSet<(ObjectId, u64)>>,
    next_epoch: AtomicU64,
    leaving: AtomicBool,
    /// Placement records of objects whose replica set includes this node.
    placements: Mutex<HashMap<ObjectId, crate::wire::Placement>>,
    /// Peers the overlay declared failed (their objects are lost under `none`).
    failed: Mutex<std::collections::HashSet<NodeId>>,
    /// Objects this node should host but could not recover (corrupt records).
    lost: Mutex<std::collections::HashSet<ObjectId>>,
    /// Turns true once the node has joined: objects recovered at start run
    /// their replay only then.
    ready: watch::Sender<bool>,
    stopped: AtomicBool,
    started: Instant,
    receiver: Mutex<Option<JoinHandle<()>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Overlay messages on their way out, a queue per destination, each drained
    /// in order by a task of its own (see `send_overlay`).
    overlay_out: Mutex<HashMap<NodeId, mpsc::UnboundedSender<(Peer, Body)>>>,
    /// Whether this node runs objects (see `NodeBuilder::host_objects`).
    host_objects: bool,
    load_balancing: bool,
    /// The neighbours' load, as last reported, plus the objects this node has
    /// sent them since.
    loads: Mutex<HashMap<NodeId, PeerLoad>>,
    /// Signalled when a neighbour that hosts reports its load.
    hosting_neighbour: Notify,
    /// Waiting for a neighbour's next load report (asked for before moving
    /// objects by figures that may be stale).
    load_waiters: Mutex<HashMap<NodeId, Vec<oneshot::Sender<()>>>>,
    /// Drawn at start, told with each load report: neighbours learn that this
    /// node restarted even when it came back before they noticed it was gone.
    boot: u64,
}

/// A running G2 node: a handle that is cheap to clone. Build one with
/// [`Node::builder`].
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

impl Node {
    /// Starts building a node; see [`crate::NodeBuilder`].
    pub fn builder() -> crate::runtime::builder::NodeBuilder {
        crate::runtime::builder::NodeBuilder::new()
    }

    pub(crate) async fn start(
        cfg: Config,
        bootstrap: Option<Peer>,
        join_timeout: Duration,
    ) -> Result<Node, crate::runtime::error::BuildError> {
        let me = cfg.transport.local_peer();
        let inner = Arc::new(NodeInner {
            me: me.clone(),
            network: cfg.network,
            client_id: ObjectId::random(),
            client_seq: AtomicU64::new(0),
            overlay: Mutex::new(cfg.overlay),
            overlay_name: cfg.overlay_name,
            overlay_wake: Arc::new(Notify::new()),
            joined: Arc::new(Notify::new()),
            left: Arc::new(Notify::new()),
            transport: cfg.transport,
            store: cfg.store,
            run_policy: cfg.run_policy,
            policies: cfg.policies,
            types: cfg.types,
            objects: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            locations: Mutex::new(HashMap::new()),
            call_timeout: cfg.call_timeout,
            counters: Counters::default(),
            moved: Mutex::new(HashMap::new()),
            transfers_in: Mutex::new(RecentSet::new(TRANSFERS_REMEMBERED)),
            next_epoch: AtomicU64::new(1),
            leaving: AtomicBool::new(false),
            placements: Mutex::new(HashMap::new()),
            failed: Mutex::new(std::collections::HashSet::new()),
            lost: Mutex::new(std::collections::HashSet::new()),
            ready: watch::channel(false).0,
            stopped: AtomicBool::new(false),
            started: Instant::now(),
            receiver: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
            overlay_out: Mutex::new(HashMap::new()),
            host_objects: cfg.host_objects,
            load_balancing: cfg.load_balancing,
            loads: Mutex::new(HashMap::new()),
            hosting_neighbour: Notify::new(),
            load_waiters: Mutex::new(HashMap::new()),
            boot: rand_transfer_id(),
        });
        let node = Node { inner };
        // objects kept by a fault-tolerance policy from this node's last run are
        // hosted again before anything arrives; they replay once joined
        node.inner.recover_objects().await;
        let span = info_span!("node", id = %me.id);
        // frames are handled on the transport's reader tasks where it offers that
        // (one task switch less per frame), else by a receive loop
        let weak = Arc::downgrade(&node.inner);
        let handler_span = span.clone();
        let handler: crate::transport::FrameHandler = Arc::new(move |incoming| {
            let node = weak.clone();
            Box::pin(handle_one(node, incoming).instrument(handler_span.clone()))
        });
        if !node.inner.transport.serve(handler) {
            let recv = tokio::spawn(
                receive_loop(Arc::downgrade(&node.inner), node.inner.transport.clone())
                    .instrument(span.clone()),
            );
            *lock(&node.inner.receiver) = Some(recv);
        }
        let drive = tokio::spawn(
            overlay_loop(Arc::downgrade(&node.inner), node.inner.overlay_wake.clone())
                .instrument(span),
        );
        lock(&node.inner.tasks).push(drive);

        let joined_signal = node.inner.joined.clone();
        let joined = joined_signal.notified();
        tokio::pin!(joined);
        joined.as_mut().enable();
        lock(&node.inner.overlay).join(Instant::now(), bootstrap);
        node.inner.overlay_wake.notify_one();
        if !lock(&node.inner.overlay).is_joined() {
            let deadline = tokio::time::sleep(join_timeout);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut joined => {}
                    _ = &mut deadline => {
                        node.shutdown();
                        return Err(crate::runtime::error::BuildError::JoinTimeout(join_timeout));
                    }
                }
                if lock(&node.inner.overlay).is_joined() {
                    break;
                }
                joined.set(joined_signal.notified());
                joined.as_mut().enable();
            }
        }
        tracing::info!(node = %me.id, addr = %me.addr, overlay = node.inner.overlay_name, "node joined network {}", node.inner.network);
        node.inner.ready.send_replace(true);
        if !lock(&node.inner.objects).is_empty() {
            node.inner.publish_placements(None).await;
        }
        // a node that does not host waits (bounded) until it knows a neighbour
        // that does, so that the objects it creates go there from the start
        let signals = node.inner.clone();
        let hosting_known = signals.hosting_neighbour.notified();
        tokio::pin!(hosting_known);
        hosting_known.as_mut().enable();
        let loads = tokio::spawn(
            load_loop(Arc::downgrade(&node.inner)).instrument(info_span!("node", id = %me.id)),
        );
        lock(&node.inner.tasks).push(loads);
        let alone = lock(&node.inner.overlay)
            .replica_set(me.id.key(), 2)
            .iter()
            .all(|p| p.id == me.id);
        if !node.inner.host_objects && !alone && !node.inner.knows_hosting_neighbour() {
            let _ = tokio::time::timeout(HOSTING_NEIGHBOUR_WAIT, hosting_known).await;
        }
        Ok(node)
    }

    /// This node's id and address.
    pub fn peer(&self) -> &Peer {
        &self.inner.me
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.me.id
    }

    /// The network this node belongs to.
    pub fn network(&self) -> &str {
        &self.inner.network
    }

    /// The name of the overlay in use (`pastry`, `chord`, ...).
    pub fn overlay_name(&self) -> &'static str {
        self.inner.overlay_name
    }

    /// The fault-tolerance policy objects created from this node carry.
    pub fn run_policy(&self) -> &str {
        &self.inner.run_policy
    }

    /// The node's store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Work counters.
    pub fn stats(&self) -> NodeStats {
        let c = &self.inner.counters;
        NodeStats {
            calls_sent: c.calls_sent.load(Ordering::Relaxed),
            calls_served: c.calls_served.load(Ordering::Relaxed),
            requests_forwarded: c.requests_forwarded.load(Ordering::Relaxed),
            cache_hits: c.cache_hits.load(Ordering::Relaxed),
            objects_hosted: lock(&self.inner.objects).len() as u64,
            migrations_out: c.migrations_out.load(Ordering::Relaxed),
            migrations_in: c.migrations_in.load(Ordering::Relaxed),
        }
    }

    /// Whether this node is the root of `key` in its overlay's current view.
    pub fn is_root_of(&self, key: crate::Key) -> bool {
        lock(&self.inner.overlay).is_root(key)
    }

    /// A snapshot of the node for `g2 status`.
    pub fn status(&self) -> NodeStatus {
        let me = &self.inner.me;
        let neighbours = lock(&self.inner.overlay)
            .replica_set(me.id.key(), 17)
            .into_iter()
            .filter(|p| p.id != me.id)
            .collect();
        NodeStatus {
            id: me.id,
            addr: me.addr.to_string(),
            network: self.inner.network.clone(),
            overlay: self.inner.overlay_name.to_string(),
            neighbours,
            objects: self
                .hosted_objects()
                .into_iter()
                .map(|(id, t)| (id, t.to_string()))
                .collect(),
            stats: self.stats(),
            uptime_s: self.inner.started.elapsed().as_secs_f64(),
        }
    }

    /// The objects hosted here, with their type names.
    pub fn hosted_objects(&self) -> Vec<(ObjectId, &'static str)> {
        let mut v: Vec<_> = lock(&self.inner.objects)
            .iter()
            .map(|(id, slot)| (*id, slot.type_name))
            .collect();
        v.sort();
        v
    }

    /// The hosted objects frozen for a transfer to another node: they run no
    /// call (calls queue) until the new host confirms, then they are gone.
    pub fn moving_out(&self) -> Vec<ObjectId> {
        let mut v: Vec<_> = lock(&self.inner.objects)
            .iter()
            .filter(|(_, slot)| slot.migrating)
            .map(|(id, _)| *id)
            .collect();
        v.sort();
        v
    }

    /// A proxy for an existing object of this network.
    pub fn reference<R: RemoteRef>(&self, id: ObjectId) -> R {
        let uri = ObjectUri {
            network: self.inner.network.clone(),
            id,
        };
        R::from_handle(ObjectHandle::bound(uri, self.clone()))
    }

    /// Remote activation: picks a fresh GUID, sends a create message to its root,
    /// which builds a `T` from `init`, and returns the typed proxy.
    pub async fn create<T: Object>(&self, init: T::Init) -> Result<T::Ref, CallError> {
        self.create_with_id::<T>(ObjectId::random(), init).await
    }

    /// Remote activation under a GUID chosen by the caller.
    pub async fn create_with_id<T: Object>(
        &self,
        id: ObjectId,
        init: T::Init,
    ) -> Result<T::Ref, CallError> {
        let init = to_cbor(&init).map_err(|reason| CallError::Encode {
            what: format!("init of {}", T::TYPE_NAME),
            reason,
        })?;
        self.create_raw(id, T::TYPE_NAME, init).await?;
        Ok(self.reference(id))
    }

    /// Remote activation by type name with an encoded init value.
    pub async fn create_raw(
        &self,
        id: ObjectId,
        type_name: &str,
        init: Vec<u8>,
    ) -> Result<(), CallError> {
        let kind = RequestKind::Create {
            type_name: type_name.to_string(),
            init,
            policy: self.inner.run_policy.clone(),
        };
        let resend = self.inner.run_policy != crate::fault::POLICY_NONE;
        self.request(id, kind, "create", None, resend)
            .await
            .map(|_| ())
    }

    /// Calls `method` on object `target` with encoded `args`; the building block of
    /// the typed proxies.
    pub async fn call_raw(
        &self,
        target: ObjectId,
        method: &str,
        args: Vec<u8>,
        oneway: bool,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, CallError> {
        let ctx = context::current().filter(|c| Arc::ptr_eq(&c.node.inner, &self.inner));
        let call_id = match &ctx {
            Some(c) => c.next_call_id(),
            None => crate::id::CallId {
                caller: self.inner.client_id,
                seq: self.inner.client_seq.fetch_add(1, Ordering::Relaxed),
            },
        };
        let policy = ctx.as_ref().and_then(|c| c.policy.clone());
        if let (Some(c), Some(p)) = (&ctx, &policy) {
            let out = OutgoingCall {
                call_id,
                target,
                method: method.to_string(),
                args: args.clone(),
                oneway,
            };
            match p.before_outgoing(c.object, &out).await {
                Ok(OutgoingDecision::Send) => {}
                Ok(OutgoingDecision::Answer(r)) => return r.map_err(CallError::from),
                Err(e) => {
                    warn!(caller = %c.object, call = %call_id, "fault policy failed before an outgoing call: {e}")
                }
            }
        }
        let kind = RequestKind::Call {
            method: method.to_string(),
            args,
            call_id,
            oneway,
        };
        // under a fault-tolerance policy the receiver suppresses duplicates, so a
        // call whose reply is overdue may be sent again
        let resend = policy.is_some()
            || (ctx.is_none() && self.inner.run_policy != crate::fault::POLICY_NONE);
        let result = self.request(target, kind, method, timeout, resend).await;
        if let (Some(c), Some(p)) = (&ctx, &policy) {
            let logged = match &result {
                Ok(v) => Ok(v.clone()),
                Err(CallError::Remote(r)) => Err(r.clone()),
                Err(CallError::ObjectNotFound(id)) => Err(RemoteError::ObjectNotFound(*id)),
                Err(CallError::ObjectLost(id)) => Err(RemoteError::ObjectLost(*id)),
                Err(_) => return result, // local failures are not results: not logged
            };
            if let Err(e) = p.after_outgoing(c.object, call_id, &logged).await {
                warn!(caller = %c.object, call = %call_id, "fault policy failed after an outgoing call: {e}");
            }
        }
        result
    }

    /// Sends a request and waits for its result. A request that provably was not
    /// delivered (no route, or dropped in a routing loop while the overlay
    /// repairs itself) is sent again after a short pause, within the deadline:
    /// it never ran, so nothing runs twice. An object whose volunteer is down
    /// but kept by its policy is asked again the same way.
    ///
    /// With `resend` (the receiver suppresses duplicates by call id), a request
    /// whose reply is overdue is also sent again: a volunteer that crashed with
    /// the call in hand replays it, and answers the resent copy from its results.
    async fn request(
        &self,
        target: ObjectId,
        kind: RequestKind,
        what: &str,
        timeout: Option<Duration>,
        resend: bool,
    ) -> Result<Vec<u8>, CallError> {
        let budget = timeout.unwrap_or(self.inner.call_timeout);
        let deadline = tokio::time::Instant::now() + budget;
        let mut pause = Duration::from_millis(25);
        let mut patience = RESEND_AFTER;
        let mut sent_before = false;
        let grace = tokio::time::Instant::now() + NOT_FOUND_GRACE.min(budget);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt = if resend { left.min(patience) } else { left };
            let result = self
                .inner
                .request(target, kind.clone(), what, Some(attempt), None)
                .await;
            let stopped = self.inner.stopped.load(Ordering::Acquire);
            match result {
                Err(CallError::Unreachable { .. } | CallError::Unavailable { .. })
                    if tokio::time::Instant::now() + pause < deadline && !stopped =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(400));
                }
                Err(CallError::ObjectNotFound(_))
                    if resend
                        && matches!(kind, RequestKind::Call { .. })
                        && tokio::time::Instant::now() + pause < grace
                        && !stopped =>
                {
                    debug!(%target, what, "object not found where expected; asking again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(400));
                }
                Err(CallError::Timeout { .. })
                    if resend && tokio::time::Instant::now() < deadline && !stopped =>
                {
                    debug!(%target, what, "no reply within {patience:?}; sending again");
                    patience = (patience * 2).min(RESEND_MAX);
                    sent_before = true;
                }
                Err(CallError::Timeout { target, method, .. }) => {
                    return Err(CallError::Timeout {
                        target,
                        method,
                        after: budget,
                    });
                }
                Err(CallError::Unavailable { object, host, .. }) => {
                    return Err(CallError::Unavailable {
                        object,
                        host,
                        after: budget,
                    });
                }
                // a create resent after a lost reply finds its own object
                Err(CallError::Remote(RemoteError::AlreadyExists(_)))
                    if sent_before && matches!(kind, RequestKind::Create { .. }) =>
                {
                    return Ok(Vec::new());
                }
                other => return other,
            }
        }
    }

    /// Stops the node at once: closes its transport, drops its objects and fails
    /// pending calls with [`CallError::NodeStopped`]. To hand objects on first,
    /// use [`Node::leave`].
    pub fn shutdown(&self) {
        let inner = &self.inner;
        if inner.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        lock(&inner.overlay).leave(Instant::now());
        inner.stop_tasks();
        lock(&inner.pending).clear();
    }

    /// Graceful leave (paper §3.2): migrates every object to the node that becomes
    /// its root without this one, leaves the overlay, then stops. Objects that
    /// could not move are listed in the error (the node stops anyway).
    pub async fn leave(&self) -> Result<(), LeaveError> {
        let inner = &self.inner;
        inner.leaving.store(true, Ordering::Release);
        let ids: Vec<ObjectId> = lock(&inner.objects).keys().copied().collect();
        let moves = ids.into_iter().map(|id| async move {
            // a successor that cannot be reached or is leaving too (the view may
            // still hold one that left just before) gives way to the next one
            let mut tried = Vec::new();
            let r = loop {
                let Some(to) = inner.successor_excluding(id, &tried) else {
                    break Err(if tried.is_empty() {
                        "no other node to take it".to_string()
                    } else {
                        format!("none of the {} next nodes took it", tried.len())
                    });
                };
                if tried.len() >= 4 {
                    break Err(format!("none of the {} next nodes took it", tried.len()));
                }
                tried.push(to.id);
                match inner.migrate(id, to, false).await {
                    Err(e) if e.starts_with(UNREACHABLE) => continue,
                    r => break r,
                }
            };
            (id, r)
        });
        let failed: Vec<(ObjectId, String)> = futures::future::join_all(moves)
            .await
            .into_iter()
            .filter_map(|(id, r)| r.err().map(|e| (id, e)))
            .collect();
        let left = inner.left.clone();
        let notified = left.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        lock(&inner.overlay).leave(Instant::now());
        inner.overlay_wake.notify_one();
        // let the overlay tell its neighbours (bounded: a silent leave is a failure
        // the others detect anyway), then keep passing on requests that were
        // already on their way here for a grace period
        let _ = tokio::time::timeout(Duration::from_secs(2), notified).await;
        tokio::time::sleep(LEAVE_GRACE).await;
        // stop receiving (peers hear goodbye and route around this node), then
        // pass on whatever had already arrived
        inner.transport.close_gracefully().await;
        let receiver = lock(&inner.receiver).take();
        if let Some(r) = receiver {
            let abort = r.abort_handle();
            if tokio::time::timeout(Duration::from_secs(1), r)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        tracing::info!(node = %inner.me.id, failed = failed.len(), "left the network");
        self.shutdown();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(LeaveError { failed })
        }
    }

    /// Whether [`Node::shutdown`] was called.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.me.id)
            .field("network", &self.inner.network)
            .finish()
    }
}

impl NodeInner {
    /// Closes the transport and stops every task of the node and its objects.
    fn stop_tasks(&self) {
        self.transport.close();
        if let Some(r) = lock(&self.receiver).take() {
            r.abort();
        }
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        for (_, slot) in lock(&self.objects).drain() {
            slot.task.abort();
        }
    }

    /// Sends a request and waits for its reply: straight to `via` when given,
    /// else to the cached host, else routed through the overlay.
    async fn request(
        self: &Arc<Self>,
        target: ObjectId,
        kind: RequestKind,
        what: &str,
        timeout: Option<Duration>,
        via: Option<Peer>,
    ) -> Result<Vec<u8>, CallError> {
        let inner = self;
        if inner.stopped.load(Ordering::Acquire) {
            return Err(CallError::NodeStopped);
        }
        inner.counters.calls_sent.fetch_add(1, Ordering::Relaxed);
        let id = inner.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&inner.pending).insert(
            id,
            Pending {
                reply: tx,
                direct: None,
            },
        );
        let req = Request {
            id,
            origin: inner.me.clone(),
            target,
            hops: 0,
            via_record: false,
            past_forwarding: false,
            kind,
        };
        trace!(request = id, %target, what, via = ?via.as_ref().map(|p| p.id), "sending a request");
        if let Some(to) = via {
            if let Err(e) = inner.send_frame(&to, Body::Request(req)).await {
                lock(&inner.pending).remove(&id);
                return Err(CallError::Unreachable {
                    target,
                    reason: format!("{to}: {e}"),
                });
            }
        } else {
            inner.send_request(req).await;
        }
        let after = timeout.unwrap_or(inner.call_timeout);
        let reply = match tokio::time::timeout(after, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => return Err(CallError::NodeStopped),
            Err(_) => {
                lock(&inner.pending).remove(&id);
                debug!(request = id, %target, what, "no reply within {after:?}");
                return Err(CallError::Timeout {
                    target,
                    method: what.to_string(),
                    after,
                });
            }
        };
        if reply.host.id != inner.me.id {
            let mut loc = lock(&inner.locations);
            if loc.len() >= LOCATION_CACHE_LIMIT {
                loc.clear();
            }
            loc.insert(target, reply.host.clone());
        }
        match reply.outcome {
            Ok(bytes) => Ok(bytes.0),
            Err(e) => {
                if matches!(e, RemoteError::ObjectNotFound(_)) {
                    lock(&inner.locations).remove(&target);
                }
                Err(e.into())
            }
        }
    }

    /// Sends a request to its object's cached host, or routes it.
    async fn send_request(self: &Arc<Self>, req: Request) {
        let target = req.target;
        let cached = lock(&self.locations).get(&target).cloned();
        match cached {
            Some(host) if host.id != self.me.id => {
                self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                trace!(request = req.id, %target, host = %host.id, "to the cached host");
                if req.origin.id == self.me.id
                    && let Some(p) = lock(&self.pending).get_mut(&req.id)
                {
                    p.direct = Some((req.clone(), host.id));
                }
                if let Err(e) = self.send_frame(&host, Body::Request(req.clone())).await {
                    debug!(%target, host = %host, "cached host unreachable ({e}); routing instead");
                    lock(&self.locations).remove(&target);
                    self.peer_unreachable(host.id);
                    self.dispatch(req).await;
                }
            }
            _ => self.dispatch(req).await,
        }
    }

    /// The node after this one for `id`, leaving out `skip`.
    fn successor_excluding(&self, id: ObjectId, skip: &[NodeId]) -> Option<Peer> {
        lock(&self.overlay)
            .replica_set(id.key(), 2 + skip.len())
            .into_iter()
            .find(|p| p.id != self.me.id && !skip.contains(&p.id))
    }

    /// The node that becomes the root of `id` when this one is gone.
    fn successor(&self, id: ObjectId) -> Option<Peer> {
        self.successor_excluding(id, &[])
    }

    fn peer_unreachable(&self, id: NodeId) {
        lock(&self.overlay).peer_unreachable(Instant::now(), id);
        lock(&self.locations).retain(|_, p| p.id != id);
        self.overlay_wake.notify_one();
    }

    async fn send_frame(
        &self,
        to: &Peer,
        body: Body,
    ) -> Result<(), crate::transport::TransportError> {
        let bytes = Frame::new(body)
            .encode()
            .map_err(|e| crate::transport::TransportError::Other(e.to_string()))?;
        self.transport.send(to, bytes).await
    }

    /// Delivers a request here or passes it on towards the root of its target.
    async fn dispatch(self: &Arc<Self>, mut req: Request) {
        if req.hops > MAX_HOPS {
            let err = RemoteError::TooManyHops {
                target: req.target,
                hops: req.hops,
            };
            self.reply(&req.origin, req.id, Err(err)).await;
            return;
        }
        for _ in 0..MAX_SEND_ATTEMPTS {
            // An object hosted here is served here, whoever the root is; a migration
            // is addressed to this very node.
            if matches!(req.kind, RequestKind::Migrate { .. })
                || lock(&self.objects).contains_key(&req.target)
            {
                self.deliver_local(req).await;
                return;
            }
            if req.via_record && matches!(req.kind, RequestKind::Create { .. }) {
                // a root placed the new object here (load balancing)
                self.deliver_local(req).await;
                return;
            }
            let overlay_route = lock(&self.overlay).route(req.target.key());
            // At the root, the placement record names the current host: it is
            // newer than any forwarding address left here by an earlier move
            // (forwarding addresses chained over several moves would send a
            // call round in circles once one of those hosts is gone).
            let record = match overlay_route {
                Route::Local if !req.via_record => self.placement_of(&req),
                _ => None,
            };
            if let Some(record) = record {
                self.follow_record(req, record).await;
                return;
            }
            let moved = if req.past_forwarding {
                None
            } else {
                lock(&self.moved).get(&req.target).cloned()
            };
            if req.via_record && moved.is_none() {
                // a root sent this here on the strength of a stale record
                let target = req.target;
                self.reply(
                    &req.origin,
                    req.id,
                    Err(RemoteError::ObjectNotFound(target)),
                )
                .await;
                return;
            }
            let forwarding = moved.is_some();
            let route = match moved {
                Some(host) => Route::Forward(host),
                None => overlay_route,
            };
            match route {
                Route::Local => {
                    self.deliver_local(req).await;
                    return;
                }
                Route::Forward(next) if next.id == self.me.id => {
                    self.deliver_local(req).await;
                    return;
                }
                Route::Forward(next) => {
                    req.hops += 1;
                    trace!(target = %req.target, next = %next, hops = req.hops, "forwarding request");
                    match self.send_frame(&next, Body::Request(req.clone())).await {
                        Ok(()) => {
                            if req.origin.id != self.me.id {
                                self.counters
                                    .requests_forwarded
                                    .fetch_add(1, Ordering::Relaxed);
                            }
                            return;
                        }
                        Err(e) => {
                            debug!(next = %next, "next hop unreachable ({e}); re-routing");
                            req.hops -= 1;
                            if forwarding {
                                // the object moved on from there, or was lost
                                // with it: the root's records know which. Every
                                // node on the way ignores its forwarding
                                // addresses from now on: older ones could send
                                // the request back where it came from.
                                let mut moved = lock(&self.moved);
                                if moved.get(&req.target).is_some_and(|p| p.id == next.id) {
                                    moved.remove(&req.target);
                                }
                                req.past_forwarding = true;
                                req.via_record = false;
                            }
                            self.peer_unreachable(next.id);
                        }
                    }
                }
            }
        }
        let reason = format!("no reachable next hop after {MAX_SEND_ATTEMPTS} attempts");
        self.fail_request(req, reason).await;
    }

    /// Answers or passes on a call at the root of an object hosted elsewhere,
    /// as its placement record says.
    async fn follow_record(self: &Arc<Self>, req: Request, record: Placement) {
        match record {
            Placement::Lost => {
                let err = RemoteError::ObjectLost(req.target);
                self.reply(&req.origin, req.id, Err(err)).await;
            }
            Placement::Unavailable(host) => {
                let err = RemoteError::Unavailable {
                    object: req.target,
                    host,
                };
                self.reply(&req.origin, req.id, Err(err)).await;
            }
            Placement::At(host) => self.forward_to_recorded_host(req, host).await,
        }
    }

    async fn fail_request(self: &Arc<Self>, req: Request, reason: String) {
        let target = req.target;
        warn!(%target, "dropping request: {reason}");
        self.reply(
            &req.origin,
            req.id,
            Err(RemoteError::NoRoute { target, reason }),
        )
        .await;
    }

    async fn deliver_local(self: &Arc<Self>, req: Request) {
        match req.kind {
            RequestKind::Create { .. } if self.leaving.load(Ordering::Acquire) => {
                if let Some(to) = self.successor(req.target) {
                    let mut req = req;
                    req.hops += 1;
                    req.via_record = false;
                    if self
                        .send_frame(&to, Body::Request(req.clone()))
                        .await
                        .is_ok()
                    {
                        return;
                    }
                    self.fail_request(req, "this node is leaving".into()).await;
                } else {
                    self.fail_request(req, "this node is leaving".into()).await;
                }
            }
            RequestKind::Create { .. } if !req.via_record => {
                // the root may place a new object on a less-loaded neighbour
                // (paper §3.5); its placement record points there at once, so
                // that calls routed here find it
                // (by fresh figures: the neighbours' own loads may have grown
                // since they last reported)
                let to = match self.placement_target(req.target.key()) {
                    Some(_) => {
                        self.refresh_loads(&self.leaf_set()).await;
                        self.placement_target(req.target.key())
                    }
                    None => None,
                };
                let Some(to) = to else {
                    let mut req = req;
                    req.via_record = true; // hosted here, decided
                    return Box::pin(self.deliver_local(req)).await;
                };
                // counted there until it next reports
                if let Some(l) = lock(&self.loads).get_mut(&to.id) {
                    l.objects = l.objects.saturating_add(1);
                }
                let RequestKind::Create { policy, .. } = &req.kind else {
                    unreachable!()
                };
                let record = crate::wire::Placement {
                    object: req.target,
                    host: to.clone(),
                    policy: policy.clone(),
                };
                lock(&self.placements).insert(req.target, record);
                let mut fwd = req.clone();
                fwd.via_record = true;
                fwd.hops += 1;
                debug!(object = %req.target, to = %to, "placing a new object on a less-loaded neighbour");
                if let Err(e) = self.send_frame(&to, Body::Request(fwd)).await {
                    debug!(to = %to, "could not place a new object there ({e}); hosting it here");
                    lock(&self.placements).remove(&req.target);
                    self.peer_unreachable(to.id);
                    let mut req = req;
                    req.via_record = true;
                    Box::pin(self.deliver_local(req)).await;
                }
            }
            RequestKind::Create {
                type_name,
                init,
                policy,
            } => {
                // here either the root (no better place, or `via_record` set by
                // the decision above) or a neighbour the root placed it on
                let placed = req.via_record && !lock(&self.overlay).is_root(req.target.key());
                let outcome = self
                    .activate(req.target, &type_name, &init, &policy, placed)
                    .await;
                self.reply(&req.origin, req.id, outcome.map(|()| Vec::new()))
                    .await;
            }
            RequestKind::Migrate {
                type_name,
                state,
                policy,
                next_call_seq,
                transfer,
                carried,
                placed,
            } => {
                let outcome = self
                    .install(
                        req.target,
                        Transfer {
                            type_name: &type_name,
                            state: &state,
                            policy_name: &policy,
                            next_call_seq,
                            carried: &carried,
                            placed,
                        },
                        transfer,
                        req.origin.id,
                    )
                    .await;
                // no answer while the first copy of this transfer is still being
                // installed: the sender asks again and then hears how it went
                if let Some(outcome) = outcome {
                    self.reply(&req.origin, req.id, outcome.map(|()| Vec::new()))
                        .await;
                }
            }
            RequestKind::Call {
                method,
                args,
                call_id,
                oneway,
            } => {
                let target = req.target;
                let call = IncomingCall {
                    call_id,
                    method,
                    args,
                    oneway,
                };
                let arrival = lock(&self.objects)
                    .get(&target)
                    .and_then(|slot| slot.arrival.clone());
                // under a policy: log the arrival, then queue, as one step
                let _turn = match &arrival {
                    Some((policy, order)) => {
                        let turn = order.clone().lock_owned().await;
                        match policy.on_arrival(target, &call).await {
                            Ok(Admission::Run) => Some(turn),
                            Ok(Admission::Answer(outcome)) => {
                                let outcome = if oneway { Ok(Vec::new()) } else { outcome };
                                self.reply(&req.origin, req.id, outcome).await;
                                return;
                            }
                            Ok(Admission::Drop) => {
                                if oneway {
                                    self.reply(&req.origin, req.id, Ok(Vec::new())).await;
                                }
                                return;
                            }
                            Err(e) => {
                                warn!(object = %target, call = %call_id, "fault policy could not log an arriving call: {e}");
                                let err = RemoteError::PolicyRefused {
                                    policy: policy.name(),
                                    node: self.me.id,
                                    reason: e.to_string(),
                                };
                                self.reply(&req.origin, req.id, Err(err)).await;
                                return;
                            }
                        }
                    }
                    None => None,
                };
                let inv = Invocation {
                    origin: Some((req.origin.clone(), req.id)),
                    call,
                };
                // the call back if it could not be queued
                let sent: Result<(), Option<IncomingCall>> = {
                    let objects = lock(&self.objects);
                    match objects.get(&target) {
                        Some(slot) => slot.inbox.send(InboxMsg::Call(inv)).map_err(|e| match e.0 {
                            InboxMsg::Call(inv) => Some(inv.call),
                            InboxMsg::Migrate { .. } => None,
                        }),
                        None => Err(Some(inv.call)),
                    }
                };
                trace!(request = req.id, origin = %req.origin.id, %target, queued = sent.is_ok(), "call arrived");
                match sent {
                    Ok(()) if oneway => {
                        // one-way: acknowledge acceptance now; the call runs in turn
                        self.reply(&req.origin, req.id, Ok(Vec::new())).await;
                    }
                    Ok(()) => {}
                    Err(Some(call)) if lock(&self.moved).contains_key(&target) => {
                        // it moved on while this request was on its way in: follow it
                        let req = Request {
                            id: req.id,
                            origin: req.origin,
                            target,
                            hops: req.hops,
                            via_record: false,
                            past_forwarding: false,
                            kind: call_request(call),
                        };
                        Box::pin(self.dispatch(req)).await;
                    }
                    Err(_) => {
                        let err = if lock(&self.lost).contains(&target) {
                            RemoteError::ObjectLost(target)
                        } else {
                            RemoteError::ObjectNotFound(target)
                        };
                        self.reply(&req.origin, req.id, Err(err)).await;
                    }
                }
            }
        }
    }

    async fn activate(
        self: &Arc<Self>,
        id: ObjectId,
        type_name: &str,
        init: &[u8],
        policy_name: &str,
        placed: bool,
    ) -> Result<(), RemoteError> {
        let entry = *self
            .types
            .get(type_name)
            .ok_or_else(|| RemoteError::UnknownType {
                type_name: type_name.to_string(),
                node: self.me.id,
            })?;
        let policy = self.policy(policy_name)?;
        if lock(&self.objects).contains_key(&id) {
            return Err(RemoteError::AlreadyExists(id));
        }
        let obj = (entry.activate)(init).map_err(|reason| RemoteError::Decode {
            what: format!("init of {type_name}"),
            reason,
        })?;
        if let Some(p) = &policy {
            let state = obj.snapshot().map_err(|reason| RemoteError::Decode {
                what: format!("state of {type_name}"),
                reason,
            })?;
            p.on_activate(id, type_name, &state, 0).await.map_err(|e| {
                RemoteError::PolicyRefused {
                    policy: policy_name.to_string(),
                    node: self.me.id,
                    reason: e.to_string(),
                }
            })?;
        }
        self.host(
            id,
            entry,
            obj,
            policy,
            policy_name,
            0,
            Vec::new(),
            false,
            placed,
        );
        debug!(object = %id, r#type = type_name, "activated object");
        self.publish_placements(Some(id)).await;
        Ok(())
    }

    /// Installs an object migrated here (paper §3.4), once per transfer: `None`
    /// while another copy of the same transfer is being installed.
    async fn install(
        self: &Arc<Self>,
        id: ObjectId,
        t: Transfer<'_>,
        transfer: u64,
        from: NodeId,
    ) -> Option<Result<(), RemoteError>> {
        let key = (id, transfer);
        match lock(&self.transfers_in).get(&key) {
            Some(true) => {
                // a retry of a transfer installed here; the object may have moved
                // on since, and this copy of its state is stale
                debug!(object = %id, transfer, "transfer already installed");
                return Some(Ok(()));
            }
            Some(false) => return None,
            None => {}
        }
        lock(&self.transfers_in).insert(key, false);
        let outcome = self.install_once(id, t, from).await;
        let mut seen = lock(&self.transfers_in);
        match &outcome {
            Ok(()) => seen.insert(key, true),
            Err(_) => seen.remove(&key),
        }
        Some(outcome)
    }

    async fn install_once(
        self: &Arc<Self>,
        id: ObjectId,
        t: Transfer<'_>,
        from: NodeId,
    ) -> Result<(), RemoteError> {
        let Transfer {
            type_name,
            state,
            policy_name,
            next_call_seq,
            carried,
            placed,
        } = t;
        if self.leaving.load(Ordering::Acquire) || self.stopped.load(Ordering::Acquire) {
            return Err(RemoteError::NoRoute {
                target: id,
                reason: format!("node {} is leaving", self.me.id),
            });
        }
        let entry = *self
            .types
            .get(type_name)
            .ok_or_else(|| RemoteError::UnknownType {
                type_name: type_name.to_string(),
                node: self.me.id,
            })?;
        let policy = self.policy(policy_name)?;
        if lock(&self.objects)
            .get(&id)
            .is_some_and(|slot| !slot.migrating)
        {
            // two live copies would mean a bug elsewhere: keep the one running
            warn!(object = %id, from = %from, "object sent here again while hosted here; kept the live copy");
            return Ok(());
        }
        // Hosted here and migrating out: the transfer got through, the object ran
        // at the new host and has come back before this node heard the answer.
        // The state arriving is the newer one; the frozen copy here gives way
        // (see `migrate`).
        let obj = (entry.restore)(state).map_err(|reason| RemoteError::Decode {
            what: format!("migrated state of {type_name}"),
            reason,
        })?;
        if let Some(p) = &policy {
            let refused = |e: crate::fault::PolicyError| RemoteError::PolicyRefused {
                policy: policy_name.to_string(),
                node: self.me.id,
                reason: e.to_string(),
            };
            p.on_activate(id, type_name, state, next_call_seq)
                .await
                .map_err(refused)?;
            if let Err(e) = p.import(id, carried).await {
                warn!(object = %id, from = %from, "refused a transfer: {e}");
                if let Err(e) = p.on_departed(id).await {
                    warn!(object = %id, "fault policy failed to drop a refused transfer: {e}");
                }
                return Err(refused(e));
            }
        }
        lock(&self.moved).remove(&id);
        // a record kept here names the host it came from: it is here now
        if let Some(record) = lock(&self.placements).get_mut(&id) {
            record.host = self.me.clone();
        }
        self.host(
            id,
            entry,
            obj,
            policy,
            policy_name,
            next_call_seq,
            Vec::new(),
            false,
            placed,
        );
        if let Some(slot) = lock(&self.objects).get_mut(&id) {
            slot.arrived = Some(Instant::now());
        }
        self.counters.migrations_in.fetch_add(1, Ordering::Relaxed);
        debug!(object = %id, r#type = type_name, "object migrated in");
        self.publish_placements(Some(id)).await;
        // if this node is not (or no longer) the object's root, pass it on; never
        // straight back to the sender, which may still be leaving
        self.rebalance_except(Some(from));
        Ok(())
    }

    /// At the root of a call's target that is not hosted here: what the
    /// placement records say of it (nothing: not found here).
    fn placement_of(&self, req: &Request) -> Option<Placement> {
        if !matches!(req.kind, RequestKind::Call { .. }) {
            return None;
        }
        let record = lock(&self.placements).get(&req.target).cloned()?;
        if record.host.id == self.me.id {
            return None;
        }
        if lock(&self.failed).contains(&record.host.id) {
            if record.policy == crate::fault::POLICY_NONE {
                return Some(Placement::Lost);
            }
            return Some(Placement::Unavailable(record.host.id));
        }
        Some(Placement::At(record.host))
    }

    /// Passes a call on to the host its placement record names (views of the
    /// ring can briefly disagree); an unreachable host means the object is lost,
    /// or under a policy that keeps objects, unavailable until the host returns.
    async fn forward_to_recorded_host(self: &Arc<Self>, mut req: Request, host: Peer) {
        req.via_record = true;
        req.hops += 1;
        if let Err(e) = self.send_frame(&host, Body::Request(req.clone())).await {
            let target = req.target;
            let kept = lock(&self.placements)
                .get(&target)
                .is_some_and(|r| r.policy != crate::fault::POLICY_NONE);
            lock(&self.failed).insert(host.id);
            self.peer_unreachable(host.id);
            let err = if kept {
                debug!(object = %target, host = %host, "recorded host unreachable ({e}): object unavailable");
                RemoteError::Unavailable {
                    object: target,
                    host: host.id,
                }
            } else {
                debug!(object = %target, host = %host, "recorded host unreachable ({e}): object lost");
                RemoteError::ObjectLost(target)
            };
            self.reply(&req.origin, req.id, Err(err)).await;
        }
    }

    /// Tells the replica set of each hosted object (or of `only`) where it lives.
    async fn publish_placements(self: &Arc<Self>, only: Option<ObjectId>) {
        for (record, replicas) in self.own_records(only, false) {
            for r in replicas {
                if let Err(e) = self.send_frame(&r, Body::Placement(record.clone())).await {
                    trace!(to = %r, "placement record not delivered: {e}");
                }
            }
        }
    }

    /// Tells `peer` where the objects hosted here whose replica set includes it
    /// live: a peer that (re)started keeps no records, and as root it would
    /// answer "not found" for objects that live on its neighbours.
    fn publish_placements_to(self: &Arc<Self>, peer: &Peer) {
        for (record, replicas) in self.own_records(None, true) {
            if replicas.iter().any(|r| r.id == peer.id) {
                self.send_control(peer.clone(), Body::Placement(record));
            }
        }
    }

    /// The placement record of each object hosted here (or of `only`), with
    /// the other members of its replica set; `running` leaves out copies frozen
    /// on their way out.
    fn own_records(
        &self,
        only: Option<ObjectId>,
        running: bool,
    ) -> Vec<(crate::wire::Placement, Vec<Peer>)> {
        let hosted: Vec<(ObjectId, String)> = {
            let objects = lock(&self.objects);
            let wanted = |s: &ObjectSlot| !(running && s.migrating);
            match only {
                Some(id) => objects
                    .get(&id)
                    .filter(|s| wanted(s))
                    .map(|s| (id, s.policy.clone()))
                    .into_iter()
                    .collect(),
                None => objects
                    .iter()
                    .filter(|(_, s)| wanted(s))
                    .map(|(id, s)| (*id, s.policy.clone()))
                    .collect(),
            }
        };
        hosted
            .into_iter()
            .map(|(object, policy)| {
                let replicas = lock(&self.overlay)
                    .replica_set(object.key(), PLACEMENT_REPLICAS)
                    .into_iter()
                    .filter(|r| r.id != self.me.id)
                    .collect();
                let record = crate::wire::Placement {
                    object,
                    host: self.me.clone(),
                    policy,
                };
                (record, replicas)
            })
            .collect()
    }

    /// Migrates every object this node hosts but is not the root of towards its
    /// root (after a join nearby, or after a migration overshot).
    fn rebalance(self: &Arc<Self>) {
        self.rebalance_except(None);
    }

    fn rebalance_except(self: &Arc<Self>, except: Option<NodeId>) {
        if self.stopped.load(Ordering::Acquire) || self.leaving.load(Ordering::Acquire) {
            return;
        }
        let candidates: Vec<ObjectId> = lock(&self.objects)
            .iter()
            .filter(|(_, slot)| !slot.migrating && !slot.placed)
            .map(|(id, _)| *id)
            .collect();
        let moves: Vec<(ObjectId, Peer)> = {
            let overlay = lock(&self.overlay);
            candidates
                .into_iter()
                .filter_map(|id| match overlay.route(id.key()) {
                    Route::Forward(p) if p.id != self.me.id && Some(p.id) != except => {
                        Some((id, p))
                    }
                    _ => None,
                })
                .collect()
        };
        // a root that does not host would only pass the object on: it stays
        // here, placed, and the root's record points here
        let (stay, moves): (Vec<_>, Vec<_>) = {
            let loads = lock(&self.loads);
            moves
                .into_iter()
                .partition(|(_, to)| loads.get(&to.id).is_some_and(|l| !l.hosting))
        };
        if !stay.is_empty() {
            {
                let mut objects = lock(&self.objects);
                for (id, _) in &stay {
                    if let Some(slot) = objects.get_mut(id) {
                        slot.placed = true;
                    }
                }
            }
            let me = self.clone();
            tokio::spawn(async move {
                for (id, _) in stay {
                    me.publish_placements(Some(id)).await;
                }
            });
        }
        for (id, to) in moves {
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.migrate(id, to.clone(), false).await {
                    debug!(object = %id, to = %to, "migration postponed: {e}");
                }
            });
        }
    }

    /// Moves object `id` to node `to`: stop admitting calls, let the running one
    /// finish, serialise, transfer, wait for the acknowledgement, then hand the
    /// calls that queued meanwhile to the new host. On a definite failure the
    /// object carries on here; there is never a moment with two live copies.
    async fn migrate(self: &Arc<Self>, id: ObjectId, to: Peer, placed: bool) -> Result<(), String> {
        let frozen = self.freeze(id)?;
        self.send_frozen(id, frozen, to, placed, None).await
    }

    /// Stops admitting calls to the object (they queue) and asks its actor
    /// for a snapshot, taken once the calls ahead of it have run.
    fn freeze(self: &Arc<Self>, id: ObjectId) -> Result<Frozen, String> {
        let (inbox, type_name, policy_name, epoch) = {
            let mut objects = lock(&self.objects);
            let slot = objects.get_mut(&id).ok_or("not hosted here")?;
            if slot.migrating {
                return Err("already migrating".into());
            }
            slot.migrating = true;
            (
                slot.inbox.clone(),
                slot.type_name,
                slot.policy.clone(),
                slot.epoch,
            )
        };
        let (snap_tx, snap_rx) = oneshot::channel();
        let (verdict_tx, verdict_rx) = oneshot::channel();
        if inbox
            .send(InboxMsg::Migrate {
                snapshot: snap_tx,
                verdict: verdict_rx,
            })
            .is_err()
        {
            self.thaw(id, epoch);
            return Err("the object's actor has stopped".into());
        }
        Ok(Frozen {
            type_name,
            policy_name,
            epoch,
            snap_rx,
            verdict_tx,
        })
    }

    /// Admits calls to the object again, if the copy frozen at `epoch` is still
    /// the one hosted here.
    fn thaw(&self, id: ObjectId, epoch: u64) {
        if let Some(slot) = lock(&self.objects).get_mut(&id)
            && slot.epoch == epoch
        {
            slot.migrating = false;
        }
    }

    /// Sends a frozen object to `to` (as transfer `resume`, when a restart
    /// resumes one) and, once it is installed there, drops it here.
    async fn send_frozen(
        self: &Arc<Self>,
        id: ObjectId,
        frozen: Frozen,
        to: Peer,
        placed: bool,
        resume: Option<u64>,
    ) -> Result<(), String> {
        let Frozen {
            type_name,
            policy_name,
            epoch,
            snap_rx,
            verdict_tx,
        } = frozen;
        let unmark = |me: &Arc<Self>| me.thaw(id, epoch);
        // Whether a newer copy of the object came back and is hosted here now
        // (see `install`): then the frozen copy's queued calls go to it.
        let superseded = |me: &Arc<Self>| {
            lock(&me.objects)
                .get(&id)
                .is_some_and(|slot| slot.epoch != epoch)
        };
        let Ok(snap) = snap_rx.await else {
            unmark(self);
            return Err("the object's actor stopped before its snapshot".into());
        };
        let state = match snap.state {
            Ok(s) => s,
            Err(e) => {
                let _ = verdict_tx.send(Verdict::Stay);
                unmark(self);
                return Err(format!("could not serialise the state: {e}"));
            }
        };
        let departed_policy = self.policy(&policy_name).ok().flatten();
        let carried = match &departed_policy {
            Some(p) => match p.export(id).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = verdict_tx.send(Verdict::Stay);
                    unmark(self);
                    return Err(format!(
                        "the fault policy could not export its records: {e}"
                    ));
                }
            },
            None => Vec::new(),
        };
        let policy_name_sent = policy_name.clone();
        let transfer = resume.unwrap_or_else(rand_transfer_id);
        // marked durably before anything leaves: a restart from here on sends
        // this same transfer again rather than run a copy the new host may run
        if let Some(p) = &departed_policy
            && let Err(e) = p.on_departing(id, to.clone(), transfer).await
        {
            let _ = verdict_tx.send(Verdict::Stay);
            unmark(self);
            return Err(format!(
                "the fault policy could not mark the departure: {e}"
            ));
        }
        let kind = RequestKind::Migrate {
            type_name: type_name.to_string(),
            state,
            policy: policy_name,
            next_call_seq: snap.next_call_seq,
            transfer,
            carried,
            placed,
        };
        // A timeout is ambiguous (the new host may have installed the object), so
        // the transfer is retried, never abandoned for a second live copy; only a
        // definite refusal or an unreachable host lets the object stay. Under a
        // policy that keeps objects across restarts an unreachable host may have
        // installed the object durably before it went down, so the transfer is
        // retried (the object stays frozen, its calls queued) until the host
        // answers, unless this node stops or leaves.
        let durable = departed_policy.is_some();
        let mut last = String::new();
        let mut attempt = 0u32;
        loop {
            let persist = durable
                && !self.stopped.load(Ordering::Acquire)
                && !self.leaving.load(Ordering::Acquire);
            if attempt >= 5 && !persist {
                break;
            }
            if attempt > 0 && superseded(self) {
                self.stayed(id, &departed_policy).await;
                self.give_way(id, verdict_tx).await;
                return Err(last);
            }
            let timeout =
                Some(self.call_timeout.min(Duration::from_secs(5)) * (attempt.min(4) + 1));
            attempt += 1;
            match self
                .request(id, kind.clone(), "migrate", timeout, Some(to.clone()))
                .await
            {
                Ok(_) => {
                    // The forwarding address is in place before the slot goes, as
                    // one step: a request handled meanwhile (frames from other
                    // peers are handled concurrently) finds one or the other.
                    let still_ours = {
                        let mut objects = lock(&self.objects);
                        let ours = objects.get(&id).is_some_and(|slot| slot.epoch == epoch);
                        if ours {
                            let mut moved = lock(&self.moved);
                            if moved.len() >= LOCATION_CACHE_LIMIT {
                                moved.clear();
                            }
                            moved.insert(id, to.clone());
                            drop(moved);
                            objects.remove(&id);
                        }
                        ours
                    };
                    if !still_ours {
                        debug!(object = %id, to = %to, "object came back while its transfer was confirmed");
                        self.stayed(id, &departed_policy).await;
                        self.give_way(id, verdict_tx).await;
                        return Ok(());
                    }
                    lock(&self.locations).insert(id, to.clone());
                    let root = lock(&self.overlay).is_root(id.key());
                    {
                        let mut placements = lock(&self.placements);
                        if root || placements.contains_key(&id) {
                            // calls routed here go to the new host (its own record
                            // may arrive after them); a record kept here from
                            // before the object came would name an older host,
                            // which may be gone by the time this node is root
                            placements.insert(
                                id,
                                crate::wire::Placement {
                                    object: id,
                                    host: to.clone(),
                                    policy: policy_name_sent.clone(),
                                },
                            );
                        }
                    }
                    let (drained_tx, drained_rx) = oneshot::channel();
                    let _ = verdict_tx.send(Verdict::Moved(to.clone(), drained_tx));
                    // the calls that queued meanwhile are on their way before we return
                    let _ = drained_rx.await;
                    self.counters.migrations_out.fetch_add(1, Ordering::Relaxed);
                    if let Some(p) = departed_policy
                        && let Err(e) = p.on_departed(id).await
                    {
                        warn!(object = %id, "fault policy failed on departure: {e}");
                    }
                    debug!(object = %id, to = %to, "object migrated out");
                    return Ok(());
                }
                Err(CallError::Timeout { .. }) => {
                    last = "transfer timed out".into();
                    continue;
                }
                Err(e @ CallError::Unreachable { .. }) if persist => {
                    // (a newer copy coming back meanwhile is checked above)
                    debug!(object = %id, to = %to, "new host unreachable during a transfer ({e}); asking again");
                    last = format!("{UNREACHABLE}{e}");
                    tokio::time::sleep(Duration::from_millis(250) * attempt.min(8)).await;
                    continue;
                }
                Err(e) => {
                    let e = if matches!(e, CallError::Unreachable { .. }) {
                        format!("{UNREACHABLE}{e}")
                    } else {
                        e.to_string()
                    };
                    self.stayed(id, &departed_policy).await;
                    if superseded(self) {
                        self.give_way(id, verdict_tx).await;
                    } else {
                        let _ = verdict_tx.send(Verdict::Stay);
                        unmark(self);
                    }
                    return Err(e);
                }
            }
        }
        self.stayed(id, &departed_policy).await;
        if superseded(self) {
            self.give_way(id, verdict_tx).await;
            return Err(last);
        }
        let _ = verdict_tx.send(Verdict::Stay);
        unmark(self);
        warn!(object = %id, to = %to, "migration abandoned after repeated timeouts: {last}");
        Err(last)
    }

    /// A marked departure did not happen: the copy here runs on.
    async fn stayed(&self, id: ObjectId, policy: &Option<Arc<dyn FaultPolicy>>) {
        if let Some(p) = policy
            && let Err(e) = p.on_stayed(id).await
        {
            warn!(object = %id, "fault policy could not clear a departure mark: {e}");
        }
    }

    /// A frozen copy whose object came back newer: its queued calls go to the
    /// copy hosted here now, and it stops. Its records under the object's policy
    /// are the new copy's now, so they stay.
    async fn give_way(self: &Arc<Self>, id: ObjectId, verdict: oneshot::Sender<Verdict>) {
        let (drained_tx, drained_rx) = oneshot::channel();
        let _ = verdict.send(Verdict::Moved(self.me.clone(), drained_tx));
        let _ = drained_rx.await;
        debug!(object = %id, "frozen copy gave way to the copy that came back");
    }

    fn policy(&self, name: &str) -> Result<Option<Arc<dyn FaultPolicy>>, RemoteError> {
        match self.policies.get(name) {
            Some(p) => Ok(Some(p.clone())),
            None if name == crate::fault::POLICY_NONE => Ok(None),
            None => Err(RemoteError::PolicyRefused {
                policy: name.to_string(),
                node: self.me.id,
                reason: "this node does not link that policy".into(),
            }),
        }
    }

    /// Hosts an object: spawns its actor, with `replay` queued ahead of anything
    /// else; with `gated`, the actor starts only once the node has joined.
    #[allow(clippy::too_many_arguments)]
    fn host(
        self: &Arc<Self>,
        id: ObjectId,
        entry: TypeEntry,
        obj: Box<dyn Hosted>,
        policy: Option<Arc<dyn FaultPolicy>>,
        policy_name: &str,
        next_call_seq: u64,
        replay: Vec<IncomingCall>,
        gated: bool,
        placed: bool,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        for call in replay {
            let _ = tx.send(InboxMsg::Call(Invocation { origin: None, call }));
        }
        let gate = gated.then(|| self.ready.subscribe());
        let span = info_span!("object", node = %self.me.id, object = %id, r#type = entry.name);
        let task = tokio::spawn(
            run_object(
                Arc::downgrade(self),
                id,
                entry.name,
                obj,
                rx,
                policy.clone(),
                Arc::new(AtomicU64::new(next_call_seq)),
                gate,
            )
            .instrument(span),
        );
        lock(&self.objects).insert(
            id,
            ObjectSlot {
                inbox: tx,
                type_name: entry.name,
                policy: policy_name.to_string(),
                arrival: policy.map(|p| (p, Arc::new(tokio::sync::Mutex::new(())))),
                migrating: false,
                placed,
                arrived: None,
                epoch: self.next_epoch.fetch_add(1, Ordering::Relaxed),
                task,
            },
        );
    }

    /// Hosts again every object a fault-tolerance policy kept on this node's
    /// store (a restart after a crash): checkpoint, then the logged calls to
    /// replay. An object whose records fail their checks is reported lost.
    async fn recover_objects(self: &Arc<Self>) {
        let mut names: Vec<&String> = self.policies.keys().collect();
        names.sort();
        for name in names {
            let policy = self.policies[name].clone();
            let held = match policy.held_objects().await {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(policy = %name, "cannot list the objects to recover: {e}");
                    continue;
                }
            };
            for id in held {
                if lock(&self.objects).contains_key(&id) {
                    continue;
                }
                let rec = match policy.recover(id).await {
                    Ok(Some(rec)) => rec,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::error!(object = %id, policy = %name, "object lost: {e}");
                        lock(&self.lost).insert(id);
                        continue;
                    }
                };
                let Some(entry) = self.types.get(rec.type_name.as_str()).copied() else {
                    tracing::error!(object = %id, r#type = %rec.type_name, "object lost: its type is not registered on this node");
                    lock(&self.lost).insert(id);
                    continue;
                };
                let obj = match (entry.restore)(&rec.state) {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::error!(object = %id, r#type = %rec.type_name, "object lost: its checkpoint does not decode: {e}");
                        lock(&self.lost).insert(id);
                        continue;
                    }
                };
                let replayed = rec.replay.len();
                let departing = match policy.departing(id).await {
                    Ok(d) => d,
                    Err(e) => {
                        warn!(object = %id, "could not read whether it was leaving when this node stopped: {e}; it runs here");
                        None
                    }
                };
                let (replay, held) = match departing {
                    Some(_) => (Vec::new(), rec.replay),
                    None => (rec.replay, Vec::new()),
                };
                self.host(
                    id,
                    entry,
                    obj,
                    Some(policy.clone()),
                    name,
                    rec.next_call_seq,
                    replay,
                    true,
                    false,
                );
                tracing::info!(object = %id, r#type = %rec.type_name, replay = replayed, "recovered object from its checkpoint");
                if let Some((to, transfer)) = departing {
                    self.resume_departure(id, to, transfer, held);
                }
            }
        }
    }

    /// A recovered object was on its way to `to` when this node stopped: the
    /// new host may run it already. It stays frozen at its checkpoint and the
    /// same transfer is sent again once the node has joined: a host that
    /// installed it acknowledges without installing it twice, one that never
    /// got it installs the checkpoint. Either way the calls logged since the
    /// checkpoint (`held`) follow it there, in order: the new host runs those
    /// it has not run (the policy leaves their results out of the transfer)
    /// and answers the others from the results it kept. Should the transfer
    /// fail for good, they run here instead.
    fn resume_departure(
        self: &Arc<Self>,
        id: ObjectId,
        to: Peer,
        transfer: u64,
        held: Vec<IncomingCall>,
    ) {
        let frozen = match self.freeze(id) {
            Ok(f) => f,
            Err(e) => {
                warn!(object = %id, "could not resume its transfer: {e}");
                return;
            }
        };
        if let Some(slot) = lock(&self.objects).get(&id) {
            for call in held {
                // (no caller waits on these: a reply to request 0 is dropped)
                let inv = Invocation {
                    origin: Some((self.me.clone(), 0)),
                    call,
                };
                let _ = slot.inbox.send(InboxMsg::Call(inv));
            }
        }
        tracing::info!(object = %id, to = %to, "resuming a transfer cut short by the stop");
        let me = self.clone();
        let mut ready = self.ready.subscribe();
        tokio::spawn(
            async move {
                if ready.wait_for(|r| *r).await.is_err() {
                    return;
                }
                if let Err(e) = me.send_frozen(id, frozen, to.clone(), false, Some(transfer)).await {
                    warn!(object = %id, to = %to, "resumed transfer failed: {e}; the object runs here");
                }
            }
            .instrument(info_span!("node", id = %self.me.id)),
        );
    }

    /// Hands a call that queued during a migration to the object's new host; the
    /// reply goes from there straight to the caller.
    async fn forward_queued(self: &Arc<Self>, target: ObjectId, inv: Invocation, to: &Peer) {
        let Some((origin, request_id)) = inv.origin else {
            // a replayed call has already run here before the crash; it is in
            // the checkpoint the new host received
            return;
        };
        let req = Request {
            id: request_id,
            origin,
            target,
            hops: 1,
            via_record: false,
            past_forwarding: false,
            kind: call_request(inv.call),
        };
        if to.id == self.me.id {
            // the object is hosted here again
            Box::pin(self.dispatch(req)).await;
            return;
        }
        if let Err(e) = self.send_frame(to, Body::Request(req.clone())).await {
            debug!(object = %target, to = %to, "new host unreachable for a queued call ({e}); routing it");
            self.dispatch(req).await;
        }
    }

    async fn reply(&self, origin: &Peer, id: u64, outcome: Result<Vec<u8>, RemoteError>) {
        let reply = Reply {
            id,
            host: self.me.clone(),
            outcome: outcome.map(ByteVec),
        };
        if origin.id == self.me.id {
            self.complete(reply);
            return;
        }
        if let Err(e) = self.send_frame(origin, Body::Reply(reply)).await {
            debug!(origin = %origin, "could not send reply: {e}");
        }
    }

    fn complete(&self, reply: Reply) {
        if let Some(p) = lock(&self.pending).remove(&reply.id) {
            let _ = p.reply.send(reply);
        } else {
            trace!(request = reply.id, "late or unknown reply dropped");
        }
    }

    async fn handle_incoming(self: &Arc<Self>, incoming: Incoming) {
        let frame = match Frame::decode(&incoming.frame) {
            Ok(f) => f,
            Err(e) => {
                let reason = format!("malformed frame: {e}");
                warn!(from = %incoming.from, "{reason}; disconnecting the peer");
                self.transport.disconnect(incoming.from.id, &reason);
                return;
            }
        };
        {
            // a peer declared failed that speaks again has come back (a restart
            // with the same key): its objects are no longer unavailable
            let mut failed = lock(&self.failed);
            if !failed.is_empty() && failed.remove(&incoming.from.id) {
                debug!(peer = %incoming.from, "a failed peer is back");
            }
        }
        match frame.body {
            Body::Overlay(bytes) => {
                let res = lock(&self.overlay).handle_message(
                    Instant::now(),
                    incoming.from.clone(),
                    &bytes,
                );
                if let Err(e) = res {
                    warn!(from = %incoming.from, "overlay message refused: {e}");
                }
                self.overlay_wake.notify_one();
            }
            Body::Request(req) => self.dispatch(req).await,
            Body::Reply(reply) => self.complete(reply),
            Body::Placement(p) => {
                if p.host.id != incoming.from.id {
                    let reason = format!(
                        "placement record for {} names host {} but came from {}",
                        p.object, p.host.id, incoming.from.id
                    );
                    warn!("{reason}; ignoring it");
                    return;
                }
                let mut placements = lock(&self.placements);
                if placements.len() >= LOCATION_CACHE_LIMIT {
                    placements.clear();
                }
                placements.insert(p.object, p);
            }
            Body::Load(report) => {
                let before = lock(&self.loads).insert(
                    incoming.from.id,
                    PeerLoad {
                        objects: report.objects,
                        hosting: report.hosting,
                        at: Instant::now(),
                        awaiting: false,
                        boot: report.boot,
                    },
                );
                if report.hosting {
                    self.hosting_neighbour.notify_waiters();
                }
                for w in lock(&self.load_waiters)
                    .remove(&incoming.from.id)
                    .unwrap_or_default()
                {
                    let _ = w.send(());
                }
                let restarted = before.as_ref().is_some_and(|b| b.boot != report.boot);
                if before.is_none() || restarted || report.ask {
                    if restarted {
                        debug!(peer = %incoming.from, "a neighbour restarted");
                    }
                    // a newcomer hears this node's load at once (and so does a
                    // neighbour about to move objects here or away)
                    self.send_control(incoming.from.clone(), Body::Load(self.load_report()));
                }
                if before.is_none() || restarted {
                    // and learns where the objects it is (or may become) root of live
                    self.publish_placements_to(&incoming.from);
                }
            }
        }
    }

    /// The objects running here (frozen copies on their way out not counted).
    fn running(&self) -> u32 {
        let n = lock(&self.objects)
            .values()
            .filter(|s| !s.migrating)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn load_report(&self) -> crate::wire::LoadReport {
        crate::wire::LoadReport {
            objects: self.running(),
            hosting: self.host_objects,
            boot: self.boot,
            ask: false,
        }
    }

    /// Asks these neighbours (those known to host) for their load now, and
    /// waits for their answers, at most [`LOAD_ASK_WAIT`]: figures from the
    /// last periodic reports may be half a second old, and two nodes moving
    /// objects by each other's stale figures would swap them for nothing.
    async fn refresh_loads(self: &Arc<Self>, peers: &[Peer]) {
        let hosting: Vec<Peer> = {
            let loads = lock(&self.loads);
            peers
                .iter()
                .filter(|p| loads.get(&p.id).is_some_and(|l| l.hosting))
                .cloned()
                .collect()
        };
        if hosting.is_empty() {
            return;
        }
        let ask = crate::wire::LoadReport {
            ask: true,
            ..self.load_report()
        };
        let mut answers = Vec::new();
        for p in hosting {
            let (tx, rx) = oneshot::channel();
            lock(&self.load_waiters).entry(p.id).or_default().push(tx);
            self.send_control(p, Body::Load(ask));
            answers.push(rx);
        }
        let _ = tokio::time::timeout(LOAD_ASK_WAIT, futures::future::join_all(answers)).await;
    }

    fn knows_hosting_neighbour(&self) -> bool {
        lock(&self.loads).values().any(|l| l.hosting)
    }

    /// This node's leaf set: the nodes it balances its load with.
    fn leaf_set(&self) -> Vec<Peer> {
        lock(&self.overlay)
            .replica_set(self.me.id.key(), LEAF_SET + 1)
            .into_iter()
            .filter(|p| p.id != self.me.id)
            .collect()
    }

    /// Tells the leaf set this node's load; forgets stale reports.
    fn report_load(self: &Arc<Self>) {
        let report = self.load_report();
        let now = Instant::now();
        lock(&self.loads).retain(|_, l| now.duration_since(l.at) < LOAD_STALE);
        for p in self.leaf_set() {
            self.send_control(p, Body::Load(report));
        }
    }

    /// The least-loaded leaf-set member that hosts, by its last fresh report
    /// (plus what this node sent it since), with that load.
    /// With `settled`, leaves out neighbours that were sent objects since
    /// their last report.
    fn least_loaded(
        &self,
        leaf: &[Peer],
        loads: &HashMap<NodeId, PeerLoad>,
        settled: bool,
    ) -> Option<(u32, Peer)> {
        let now = Instant::now();
        leaf.iter()
            .filter_map(|p| {
                let l = loads.get(&p.id)?;
                let usable =
                    l.hosting && now.duration_since(l.at) < LOAD_STALE && !(settled && l.awaiting);
                usable.then(|| (l.objects, p.clone()))
            })
            .min_by_key(|(n, p)| (*n, p.id))
    }

    /// Where a new object whose root is this node should live instead, if
    /// anywhere: a neighbour running at least [`IMBALANCE`] fewer objects (on a
    /// node that does not host, any neighbour that does), of those running about
    /// the fewest the nearest to the object's GUID.
    fn placement_target(&self, key: crate::Key) -> Option<Peer> {
        if self.host_objects && !self.load_balancing {
            return None;
        }
        let mine = self.running();
        let leaf = self.leaf_set();
        let loads = lock(&self.loads);
        let (least, _) = self.least_loaded(&leaf, &loads, false)?;
        if self.host_objects && mine < least + IMBALANCE {
            return None;
        }
        // of the neighbours running about the fewest, the nearest to the GUID:
        // objects with nearby GUIDs (which often call each other) stay together.
        // A node that does not host hands its keys to the nearest neighbours
        // that do, split where they meet (load balancing then evens out the
        // counts from the edges, keeping neighbouring GUIDs together).
        let now = Instant::now();
        let window = if self.host_objects {
            IMBALANCE
        } else {
            NON_HOSTING_SLACK
        };
        let to = leaf
            .iter()
            .filter(|p| {
                loads.get(&p.id).is_some_and(|l| {
                    l.hosting
                        && now.duration_since(l.at) < LOAD_STALE
                        && l.objects < least + window
                        && (!self.host_objects || l.objects + IMBALANCE <= mine)
                })
            })
            .min_by_key(|p| (key.distance(p.id.key()), p.id))?
            .clone();
        Some(to)
    }

    /// The objects load balancing may move now (with whether each was placed
    /// here), and how many run here; `None` when it moves nothing.
    fn movable(&self) -> Option<(Vec<(ObjectId, bool)>, u32)> {
        if (self.host_objects && !self.load_balancing)
            || self.stopped.load(Ordering::Acquire)
            || self.leaving.load(Ordering::Acquire)
        {
            return None;
        }
        // an object that has just arrived stays a while (the loads that sent
        // it here may have been stale); on a node that does not host, none stays
        let objects = lock(&self.objects);
        let running = objects.values().filter(|s| !s.migrating).count();
        let movable: Vec<(ObjectId, bool)> = objects
            .iter()
            .filter(|(_, s)| {
                !s.migrating
                    && (!self.host_objects || s.arrived.is_none_or(|t| t.elapsed() >= MIN_STAY))
            })
            .map(|(id, s)| (*id, s.placed))
            .collect();
        (!movable.is_empty()).then(|| (movable, u32::try_from(running).unwrap_or(u32::MAX)))
    }

    /// Whether [`Self::balance`] would pass objects on by the figures at hand.
    fn balance_needed(&self) -> bool {
        let Some((_, mine)) = self.movable() else {
            return false;
        };
        let leaf = self.leaf_set();
        let loads = lock(&self.loads);
        self.least_loaded(&leaf, &loads, true)
            .is_some_and(|(theirs, _)| !self.host_objects || mine >= theirs + IMBALANCE)
    }

    /// Passes running objects to leaf-set members that run at least
    /// [`IMBALANCE`] fewer (all of them, on a node that does not host).
    fn balance(self: &Arc<Self>) {
        let Some((mut hosted, mut mine)) = self.movable() else {
            return;
        };
        hosted.sort();
        let leaf = self.leaf_set();
        let mut moves = Vec::new();
        {
            let overlay = lock(&self.overlay);
            let mut loads = lock(&self.loads);
            // one batch per neighbour until it reports again
            while let Some((theirs, to)) = self.least_loaded(&leaf, &loads, true) {
                if self.host_objects && mine < theirs + IMBALANCE {
                    break;
                }
                let batch = if self.host_objects {
                    (mine - theirs) / 2
                } else {
                    1
                };
                // the root in this node's view (not the next hop towards it)
                let root_of = |id: &ObjectId| {
                    overlay
                        .replica_set(id.key(), 1)
                        .first()
                        .map(|p| p.id)
                        .filter(|r| *r != self.me.id)
                };
                // first an object going back to its root, then one this node is
                // the root of, then any (an object placed here may move on
                // within the neighbourhood; its new host tells the replica set)
                let rank = |(id, placed): &(ObjectId, bool)| match root_of(id) {
                    Some(root) if *placed && root == to.id => 0,
                    None => 1,
                    Some(root) if root == self.me.id => 1,
                    Some(_) => 2,
                };
                let mut sent = 0;
                while sent < batch {
                    // (of those, the nearest to the neighbour on the ring: objects
                    // with nearby GUIDs, which often call each other, stay together)
                    let near = |id: &ObjectId| id.key().distance(to.id.key());
                    let Some(i) =
                        (0..hosted.len()).min_by_key(|i| (rank(&hosted[*i]), near(&hosted[*i].0)))
                    else {
                        break;
                    };
                    let (id, _) = hosted.remove(i);
                    let placed = root_of(&id) != Some(to.id);
                    moves.push((id, to.clone(), placed));
                    sent += 1;
                }
                mine -= sent;
                if let Some(l) = loads.get_mut(&to.id) {
                    l.objects = l.objects.saturating_add(sent);
                    l.awaiting = self.host_objects;
                }
                if sent < batch || hosted.is_empty() {
                    break;
                }
            }
        }
        for (id, to, placed) in moves {
            debug!(object = %id, to = %to, "passing an object to a less-loaded neighbour");
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.migrate(id, to.clone(), placed).await {
                    debug!(object = %id, to = %to, "load-balancing move not made: {e}");
                }
            });
        }
    }

    /// Queues an overlay message for its destination's sender task (started
    /// when there is none): a destination that takes long (a dial to an address
    /// nobody answers waits out the handshake timeout) holds up only its own
    /// messages, never the overlay loop and the heartbeats to everyone else.
    /// Each destination's messages go out in the order queued.
    fn send_overlay(self: &Arc<Self>, t: Transmit) {
        self.send_control(t.to, Body::Overlay(t.payload));
    }

    /// Queues a small control frame (overlay message, load report) for its
    /// destination's sender task (see `send_overlay`).
    fn send_control(self: &Arc<Self>, to_peer: Peer, body: Body) {
        let t = (to_peer, body);
        let mut out = lock(&self.overlay_out);
        let to = t.0.id;
        let t = match out.get(&to) {
            Some(tx) => match tx.send(t) {
                Ok(()) => return,
                Err(e) => e.0,
            },
            None => t,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(t);
        out.insert(to, tx);
        drop(out);
        tokio::spawn(
            overlay_sender(Arc::downgrade(self), to, rx)
                .instrument(info_span!("node", id = %self.me.id)),
        );
    }

    async fn handle_event(self: &Arc<Self>, event: OverlayEvent) {
        match event {
            OverlayEvent::Joined => {
                self.joined.notify_waiters();
                self.rebalance();
            }
            OverlayEvent::PeerFailed(id) => {
                debug!(peer = %id, "neighbour failed");
                lock(&self.locations).retain(|_, p| p.id != id);
                lock(&self.failed).insert(id);
                // make sure no route points at it any more (Pastry repairs its
                // routing table lazily; a dead peer's connection may still
                // swallow frames without an error)
                lock(&self.overlay).peer_unreachable(Instant::now(), id);
                let orphans: Vec<Request> = lock(&self.pending)
                    .values_mut()
                    .filter(|p| p.direct.as_ref().is_some_and(|(_, host)| *host == id))
                    .filter_map(|p| p.direct.take().map(|(req, _)| req))
                    .collect();
                for req in orphans {
                    debug!(target = %req.target, "host failed with a call pending; routing it again");
                    self.dispatch(req).await;
                }
                self.rebalance();
            }
            OverlayEvent::KeysMoved { ranges, new_root } => {
                debug!(new_root = %new_root, ranges = ranges.len(), "keys moved to a new root");
                self.rebalance();
            }
            OverlayEvent::NeighboursChanged => {
                self.rebalance();
                self.publish_placements(None).await;
            }
            OverlayEvent::Left => self.left.notify_waiters(),
        }
    }
}

/// Reports this node's load to its leaf set and balances, every [`LOAD_EVERY`].
async fn load_loop(node: Weak<NodeInner>) {
    loop {
        {
            let Some(inner) = node.upgrade() else { return };
            if inner.stopped.load(Ordering::Acquire) {
                return;
            }
            if !inner.leaving.load(Ordering::Acquire) {
                inner.report_load();
                if inner.host_objects && inner.balance_needed() {
                    // not by figures up to half a second old
                    inner.refresh_loads(&inner.leaf_set()).await;
                }
                inner.balance();
            }
        }
        tokio::time::sleep(LOAD_EVERY).await;
    }
}

async fn receive_loop(node: Weak<NodeInner>, transport: Arc<dyn Transport>) {
    loop {
        let incoming = match transport.recv().await {
            Ok(i) => i,
            Err(crate::transport::TransportError::Closed) => return,
            Err(e) => {
                warn!("receive failed: {e}");
                continue;
            }
        };
        if node.strong_count() == 0 {
            return;
        }
        handle_one(node.clone(), incoming).await;
    }
}

/// The request that asks for `call` again (passed on to the object's host).
fn call_request(call: IncomingCall) -> RequestKind {
    RequestKind::Call {
        method: call.method,
        args: call.args,
        call_id: call.call_id,
        oneway: call.oneway,
    }
}

/// Handles one frame (on the receive loop, or on a transport's reader task).
async fn handle_one(node: Weak<NodeInner>, incoming: Incoming) {
    let Some(inner) = node.upgrade() else { return };
    if inner.stopped.load(Ordering::Acquire) {
        return;
    }
    let from = incoming.from.id;
    let started = Instant::now();
    inner.handle_incoming(incoming).await;
    let took = started.elapsed();
    if took > SLOW_HANDLING {
        warn!(%from, "handling a frame took {took:?}; frames behind it waited");
    }
}

async fn overlay_loop(node: Weak<NodeInner>, wake_signal: Arc<Notify>) {
    let mut next_check = tokio::time::Instant::now() + PLACEMENT_CHECK;
    loop {
        let Some(inner) = node.upgrade() else { return };
        if tokio::time::Instant::now() >= next_check {
            // a safety net: views can settle without an event saying so
            inner.rebalance();
            next_check = tokio::time::Instant::now() + PLACEMENT_CHECK;
        }
        let (transmits, events, deadline) = {
            let mut ov = lock(&inner.overlay);
            let mut transmits = Vec::new();
            while let Some(t) = ov.poll_transmit() {
                transmits.push(t);
            }
            let deadline = ov.poll_timeout();
            let mut events = Vec::new();
            while let Some(e) = ov.poll_event() {
                events.push(e);
            }
            (transmits, events, deadline)
        };
        for t in transmits {
            inner.send_overlay(t);
        }
        let had_events = !events.is_empty();
        for e in events {
            inner.handle_event(e).await;
        }
        if had_events {
            continue;
        }
        drop(inner);
        let wake = wake_signal.notified();
        let at = deadline
            .map(tokio::time::Instant::from_std)
            .map_or(next_check, |d| d.min(next_check));
        let fired = tokio::select! {
            _ = tokio::time::sleep_until(at) => deadline.is_some_and(|d| tokio::time::Instant::from_std(d) <= tokio::time::Instant::now()),
            _ = wake => false,
        };
        if fired {
            let Some(inner) = node.upgrade() else { return };
            lock(&inner.overlay).handle_timeout(Instant::now());
        }
    }
}

/// How long a destination's overlay sender waits for more before it retires.
const OVERLAY_SENDER_IDLE: Duration = Duration::from_secs(5);

/// Sends one destination's overlay messages in order (see `send_overlay`).
async fn overlay_sender(
    node: Weak<NodeInner>,
    to: NodeId,
    mut rx: mpsc::UnboundedReceiver<(Peer, Body)>,
) {
    loop {
        let (peer, body) = match tokio::time::timeout(OVERLAY_SENDER_IDLE, rx.recv()).await {
            Ok(Some(t)) => t,
            Ok(None) => return,
            Err(_) => {
                // idle: retire, unless a message was queued meanwhile (queueing
                // happens under the same lock, so none can slip in after this)
                let Some(inner) = node.upgrade() else { return };
                let mut out = lock(&inner.overlay_out);
                match rx.try_recv() {
                    Ok(t) => t,
                    Err(_) => {
                        out.remove(&to);
                        return;
                    }
                }
            }
        };
        let Some(inner) = node.upgrade() else { return };
        if inner.stopped.load(Ordering::Acquire) {
            return;
        }
        let started = Instant::now();
        let sent = inner.send_frame(&peer, body).await;
        let took = started.elapsed();
        if took > SLOW_HANDLING {
            warn!(to = %peer, "sending an overlay message took {took:?}");
        }
        if let Err(e) = sent {
            debug!(to = %peer, "overlay message not delivered: {e}");
            lock(&inner.overlay).peer_unreachable(Instant::now(), peer.id);
            inner.overlay_wake.notify_one();
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_object(
    node: Weak<NodeInner>,
    id: ObjectId,
    type_name: &'static str,
    mut obj: Box<dyn Hosted>,
    mut inbox: mpsc::UnboundedReceiver<InboxMsg>,
    policy: Option<Arc<dyn FaultPolicy>>,
    seq: Arc<AtomicU64>,
    gate: Option<watch::Receiver<bool>>,
) {
    if let Some(mut gate) = gate
        && gate.wait_for(|ready| *ready).await.is_err()
    {
        return;
    }
    let mut served: usize = 0;
    while let Some(msg) = inbox.recv().await {
        let Some(inner) = node.upgrade() else { return };
        let inv = match msg {
            InboxMsg::Call(inv) => inv,
            InboxMsg::Migrate { snapshot, verdict } => {
                let _ = snapshot.send(Snapshot {
                    state: obj.snapshot(),
                    next_call_seq: seq.load(Ordering::Relaxed),
                });
                drop(inner);
                match verdict.await {
                    Ok(Verdict::Moved(to, drained)) => {
                        // the slot is gone, so nothing new arrives: pass on what queued
                        let Some(inner) = node.upgrade() else { return };
                        inbox.close();
                        while let Some(msg) = inbox.recv().await {
                            match msg {
                                InboxMsg::Call(inv) => inner.forward_queued(id, inv, &to).await,
                                InboxMsg::Migrate { snapshot, .. } => drop(snapshot),
                            }
                        }
                        let _ = drained.send(());
                        return;
                    }
                    Ok(Verdict::Stay) | Err(_) => continue,
                }
            }
        };
        let call = &inv.call;
        let admission = match &policy {
            Some(p) => p.before_call(id, call).await.unwrap_or_else(|e| {
                warn!(call = %call.call_id, "fault policy failed before a call: {e}; running it");
                Admission::Run
            }),
            None => Admission::Run,
        };
        let ran = matches!(admission, Admission::Run);
        let outcome = match admission {
            Admission::Drop => continue,
            Admission::Answer(outcome) => outcome,
            Admission::Run => {
                let ctx = CallContext {
                    node: Node {
                        inner: inner.clone(),
                    },
                    object: id,
                    seq: seq.clone(),
                    policy: policy.clone(),
                };
                inner.counters.calls_served.fetch_add(1, Ordering::Relaxed);
                let run = AssertUnwindSafe(obj.invoke(&call.method, &call.args)).catch_unwind();
                match CURRENT.scope(ctx, run).await {
                    Ok(r) => r,
                    Err(panic) => {
                        let msg = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "non-string panic payload".into());
                        warn!(call = %call.call_id, method = %call.method, "object method panicked: {msg}");
                        Err(RemoteError::Panicked(msg))
                    }
                }
            }
        };
        if let Some(p) = policy.as_ref().filter(|_| ran) {
            match p.after_call(id, call, &outcome).await {
                Ok(true) => match obj.snapshot() {
                    Ok(state) => {
                        if let Err(e) = p
                            .checkpoint(id, type_name, &state, seq.load(Ordering::Relaxed))
                            .await
                        {
                            warn!("checkpoint failed: {e}");
                        }
                    }
                    Err(e) => warn!("could not serialise state for a checkpoint: {e}"),
                },
                Ok(false) => {}
                Err(e) => warn!(call = %call.call_id, "fault policy failed after a call: {e}"),
            }
        }
        if let Some((origin, request_id)) = inv.origin.as_ref().filter(|_| !call.oneway) {
            inner.reply(origin, *request_id, outcome).await;
        } else if let Err(e) = outcome {
            warn!(call = %call.call_id, method = %call.method, "one-way call failed: {e}");
        }
        drop(inner);
        served += 1;
        if served.is_multiple_of(YIELD_EVERY) && !inbox.is_empty() {
            tokio::task::yield_now().await;
        }
    }
}

/// Decodes a result produced by [`to_cbor`]; used by generated dispatchers.
#[doc(hidden)]
pub fn decode_args<A: serde::de::DeserializeOwned>(
    type_name: &str,
    method: &str,
    args: &[u8],
) -> Result<A, RemoteError> {
    from_cbor(args).map_err(|reason| RemoteError::Decode {
        what: format!("arguments of {type_name}.{method}"),
        reason,
    })
}

/// Encodes a method's result; used by generated dispatchers.
#[doc(hidden)]
pub fn encode_result<R: serde::Serialize>(method: &str, r: &R) -> Result<Vec<u8>, RemoteError> {
    to_cbor(r).map_err(|reason| RemoteError::Decode {
        what: format!("result of {method}"),
        reason,
    })
}

/// How `migrate` starts its error when the new host could not be reached.
const UNREACHABLE: &str = "unreachable: ";

/// An object arriving by migration.
struct Transfer<'a> {
    type_name: &'a str,
    state: &'a [u8],
    policy_name: &'a str,
    next_call_seq: u64,
    carried: &'a [u8],
    placed: bool,
}

/// How many installed transfers a node remembers (for retries of them).
const TRANSFERS_REMEMBERED: usize = 4096;

fn rand_transfer_id() -> u64 {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
}

/// A map that forgets its oldest entries beyond a bound.
struct RecentSet<K> {
    map: HashMap<K, bool>,
    order: std::collections::VecDeque<K>,
    bound: usize,
}

impl<K: std::hash::Hash + Eq + Clone> RecentSet<K> {
    fn new(bound: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: std::collections::VecDeque::new(),
            bound,
        }
    }

    fn get(&self, k: &K) -> Option<bool> {
        self.map.get(k).copied()
    }

    fn insert(&mut self, k: K, v: bool) {
        if self.map.insert(k.clone(), v).is_none() {
            self.order.push_back(k);
            while self.order.len() > self.bound {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    fn remove(&mut self, k: &K) {
        if self.map.remove(k).is_some() {
            self.order.retain(|o| o != k);
        }
    }
}
