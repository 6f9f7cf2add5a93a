//! The node: the handle applications hold ([`Node`]), the state every part of
//! the runtime shares ([`NodeInner`]), start, graceful leave, shutdown and
//! status.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{Instrument, info_span};

use crate::fault::FaultPolicy;
use crate::id::{NodeId, ObjectId, Peer};
use crate::overlay::Overlay;
use crate::runtime::balance::{self, Balancer, HOSTING_NEIGHBOUR_WAIT};
use crate::runtime::calls::Calls;
use crate::runtime::catalog::Catalog;
use crate::runtime::driver::{self, ControlQueues};
use crate::runtime::error::CallError;
use crate::runtime::migration::{MigrateError, RecentTransfers, Transitions};
use crate::runtime::object::{Object, ObjectHandle, RemoteRef, Types};
use crate::runtime::placement::Placements;
use crate::runtime::{now, random_u64};
use crate::store::Store;
use crate::sync::lock;
use crate::transport::Transport;
use crate::uri::ObjectUri;
use crate::wire::to_cbor;

/// How long a leaving node keeps forwarding requests after leaving the overlay.
const LEAVE_GRACE: Duration = Duration::from_millis(200);

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
pub(super) struct Counters {
    pub(super) calls_sent: AtomicU64,
    pub(super) calls_served: AtomicU64,
    pub(super) requests_forwarded: AtomicU64,
    pub(super) cache_hits: AtomicU64,
    pub(super) migrations_out: AtomicU64,
    pub(super) migrations_in: AtomicU64,
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
    pub(crate) types: Types,
    pub(crate) call_timeout: Duration,
    pub(crate) host_objects: bool,
    pub(crate) load_balancing: bool,
}

/// The state of a running node, shared by the parts of the runtime; see the
/// `runtime` module docs for which part owns which field, and the lock order.
pub(crate) struct NodeInner {
    // --- fixed at start
    pub(super) me: Peer,
    pub(super) network: String,
    pub(super) overlay_name: &'static str,
    pub(super) transport: Arc<dyn Transport>,
    pub(super) store: Arc<dyn Store>,
    pub(super) run_policy: String,
    pub(super) policies: HashMap<String, Arc<dyn FaultPolicy>>,
    pub(super) types: Types,
    pub(super) call_timeout: Duration,
    /// Whether this node runs objects now (see `NodeBuilder::host_objects`
    /// and [`Node::set_hosting`]).
    pub(super) host_objects: AtomicBool,
    /// While true, hosted objects start no call (see [`Node::pause_calls`]).
    pub(super) paused: watch::Sender<bool>,
    /// Drawn at start, told with each load report: neighbours learn that this
    /// node restarted even when it came back before they noticed it was gone.
    pub(super) boot: u64,
    pub(super) started: Instant,
    pub(super) counters: Counters,
    /// Where blocks asked of this node come from (blocks.rs).
    pub(super) blocks: Mutex<Option<Arc<dyn crate::runtime::blocks::BlockSource>>>,

    // --- lifecycle (node.rs)
    pub(super) leaving: AtomicBool,
    pub(super) stopped: AtomicBool,
    /// Turns true once the node has joined: objects recovered at start run
    /// their replay only then.
    pub(super) ready: watch::Sender<bool>,
    pub(super) joined: Arc<Notify>,
    pub(super) left: Arc<Notify>,
    /// The receive loop, for a transport that does not hand frames over itself.
    receiver: Mutex<Option<JoinHandle<()>>>,
    /// Every task the node starts (overlay loop, load loop, migrations, control
    /// senders): shutdown stops them all.
    tasks: Mutex<JoinSet<()>>,

    // --- the overlay, driven by driver.rs, asked by every part
    pub(super) overlay: Mutex<Box<dyn Overlay>>,
    pub(super) overlay_wake: Arc<Notify>,
    /// Control frames on their way out (driver.rs).
    pub(super) control_out: Mutex<ControlQueues>,

    // --- one owner each
    /// Pending requests, location cache (calls.rs).
    pub(super) calls: Calls,
    /// Hosted objects, forwarding addresses, lost objects (catalog.rs).
    pub(super) catalog: Mutex<Catalog>,
    /// Transfers received lately (migration.rs).
    pub(super) transfers_in: Mutex<RecentTransfers>,
    /// One lock per object in transition (migration.rs).
    pub(super) transitions: Mutex<Transitions>,
    /// Placement records and failed peers (placement.rs).
    pub(super) placements: Mutex<Placements>,
    /// The neighbours' loads (balance.rs).
    pub(super) balancer: Mutex<Balancer>,
    /// Signalled when a neighbour that hosts reports its load.
    pub(super) hosting_neighbour: Notify,
}

/// A running G2 node: a handle that is cheap to clone. Build one with
/// [`Node::builder`].
#[derive(Clone)]
pub struct Node {
    pub(super) inner: Arc<NodeInner>,
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
            overlay_name: cfg.overlay_name,
            transport: cfg.transport,
            store: cfg.store,
            run_policy: cfg.run_policy,
            policies: cfg.policies,
            types: cfg.types,
            call_timeout: cfg.call_timeout,
            host_objects: AtomicBool::new(cfg.host_objects),
            paused: watch::channel(false).0,
            boot: random_u64(),
            started: now(),
            counters: Counters::default(),
            blocks: Mutex::new(None),
            leaving: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            ready: watch::channel(false).0,
            joined: Arc::new(Notify::new()),
            left: Arc::new(Notify::new()),
            receiver: Mutex::new(None),
            tasks: Mutex::new(JoinSet::new()),
            overlay: Mutex::new(cfg.overlay),
            overlay_wake: Arc::new(Notify::new()),
            control_out: Mutex::new(HashMap::new()),
            calls: Calls::new(),
            catalog: Mutex::new(Catalog::default()),
            transfers_in: Mutex::new(RecentTransfers::default()),
            transitions: Mutex::new(Transitions::default()),
            placements: Mutex::new(Placements::default()),
            balancer: Mutex::new(Balancer::new(cfg.host_objects, cfg.load_balancing)),
            hosting_neighbour: Notify::new(),
        });
        let node = Node { inner };
        node.inner.attach_policies();
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
            Box::pin(driver::handle_one(node, incoming).instrument(handler_span.clone()))
        });
        if !node.inner.transport.serve(handler) {
            let recv = tokio::spawn(
                driver::receive_loop(Arc::downgrade(&node.inner), node.inner.transport.clone())
                    .instrument(span.clone()),
            );
            *lock(&node.inner.receiver) = Some(recv);
        }
        node.inner.spawn(
            driver::overlay_loop(Arc::downgrade(&node.inner), node.inner.overlay_wake.clone())
                .instrument(span),
        );

        let joined_signal = node.inner.joined.clone();
        let joined = joined_signal.notified();
        tokio::pin!(joined);
        joined.as_mut().enable();
        lock(&node.inner.overlay).join(now(), bootstrap);
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
        if !lock(&node.inner.catalog).is_empty() {
            node.inner.publish_placements(None).await;
        }
        // a node that does not host waits (bounded) until it knows a neighbour
        // that does, so that the objects it creates go there from the start
        let signals = node.inner.clone();
        let hosting_known = signals.hosting_neighbour.notified();
        tokio::pin!(hosting_known);
        hosting_known.as_mut().enable();
        node.inner.spawn(
            balance::load_loop(Arc::downgrade(&node.inner))
                .instrument(info_span!("node", id = %me.id)),
        );
        let alone = lock(&node.inner.overlay)
            .replica_set(me.id.key(), 2)
            .iter()
            .all(|p| p.id == me.id);
        let knows = lock(&node.inner.balancer).knows_hosting_neighbour();
        if !node.inner.hosting() && !alone && !knows {
            let _ = tokio::time::timeout(HOSTING_NEIGHBOUR_WAIT, hosting_known).await;
        }
        Ok(node)
    }

    /// Whether this node runs objects now.
    pub fn hosting(&self) -> bool {
        self.inner.hosting()
    }

    /// Starts or stops running objects, as a volunteer does when its owner's
    /// machine turns busy or idle. A node that stops passes every object it
    /// runs on to its neighbours (the way load balancing moves them, without
    /// losing or repeating a call), tells them it hosts nothing, and places
    /// new objects it is root of on them, keeping the placement records; one
    /// that starts again takes objects as any neighbour does.
    pub fn set_hosting(&self, yes: bool) {
        let was = self.inner.host_objects.swap(yes, Ordering::AcqRel);
        lock(&self.inner.balancer).set_hosting(yes);
        if was != yes {
            tracing::info!(node = %self.inner.me.id, hosting = yes, "hosting changed");
        }
    }

    /// Whether this node takes new objects while it keeps those it runs: one
    /// that does not tells its neighbours it hosts nothing (they place no
    /// object on it and move none to it) and places the new objects it is
    /// root of on them.
    pub fn set_accepting(&self, yes: bool) {
        lock(&self.inner.balancer).set_accepting(yes);
    }

    /// How many objects run here (code records and other passive objects
    /// not counted).
    pub fn running_objects(&self) -> usize {
        lock(&self.inner.catalog).running() as usize
    }

    /// While `paused`, the objects hosted here start no new call: calls queue
    /// (the one running finishes), and run once resumed. Migrations still go
    /// ahead between calls; leaving resumes.
    pub fn pause_calls(&self, paused: bool) {
        self.inner.paused.send_replace(paused);
    }

    /// Whether calls are paused ([`Node::pause_calls`]).
    pub fn calls_paused(&self) -> bool {
        *self.inner.paused.borrow()
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
            objects_hosted: lock(&self.inner.catalog).len() as u64,
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
            uptime_s: now()
                .saturating_duration_since(self.inner.started)
                .as_secs_f64(),
        }
    }

    /// The objects hosted here, with their type names.
    pub fn hosted_objects(&self) -> Vec<(ObjectId, &'static str)> {
        let mut v: Vec<_> = lock(&self.inner.catalog)
            .slots()
            .map(|(id, slot)| (*id, slot.type_name))
            .collect();
        v.sort();
        v
    }

    /// The hosted objects frozen for a transfer to another node: they run no
    /// call (calls queue) until the new host confirms, then they are gone.
    /// (For tests: feature `test-support`.)
    #[cfg(any(test, feature = "test-support"))]
    pub fn moving_out(&self) -> Vec<ObjectId> {
        let mut v: Vec<_> = lock(&self.inner.catalog)
            .slots()
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

    /// Stops the node at once: closes its transport, drops its objects and fails
    /// pending calls with [`CallError::NodeStopped`]. To hand objects on first,
    /// use [`Node::leave`].
    pub fn shutdown(&self) {
        let inner = &self.inner;
        if inner.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        lock(&inner.overlay).leave(now());
        inner.stop_tasks();
        inner.calls.clear();
    }

    /// Graceful leave (paper §3.2): migrates every object to the node that becomes
    /// its root without this one, leaves the overlay, then stops. Objects that
    /// could not move are listed in the error (the node stops anyway).
    pub async fn leave(&self) -> Result<(), LeaveError> {
        let inner = &self.inner;
        inner.leaving.store(true, Ordering::Release);
        // (a paused object could not be handed over)
        inner.paused.send_replace(false);
        let ids = lock(&inner.catalog).ids();
        let moves = ids
            .into_iter()
            .map(|id| async move { (id, inner.hand_over(id).await) });
        let failed: Vec<(ObjectId, String)> = futures::future::join_all(moves)
            .await
            .into_iter()
            .filter_map(|(id, r)| r.err().map(|e| (id, e)))
            .collect();
        let left = inner.left.clone();
        let notified = left.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        lock(&inner.overlay).leave(now());
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
    /// Runs `task` as one of the node's own: stopped with the node.
    pub(super) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.tasks);
        // forget the ones that ended
        while tasks.try_join_next().is_some() {}
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        tasks.spawn(task);
    }

    /// Closes the transport and stops every task of the node and its objects.
    fn stop_tasks(&self) {
        self.transport.close();
        if let Some(r) = lock(&self.receiver).take() {
            r.abort();
        }
        lock(&self.tasks).abort_all();
        lock(&self.catalog).abort_all();
    }

    /// The node after this one for `id`, leaving out `skip`.
    fn successor_excluding(&self, id: ObjectId, skip: &[NodeId]) -> Option<Peer> {
        lock(&self.overlay)
            .replica_set(id.key(), 2 + skip.len())
            .into_iter()
            .find(|p| p.id != self.me.id && !skip.contains(&p.id))
    }

    /// The node that becomes the root of `id` when this one is gone.
    pub(super) fn successor(&self, id: ObjectId) -> Option<Peer> {
        self.successor_excluding(id, &[])
    }

    /// On a graceful leave: migrates `id` to the node that becomes its root. A
    /// successor that cannot be reached or is leaving too (the view may still
    /// hold one that left just before) gives way to the next one.
    async fn hand_over(self: &Arc<Self>, id: ObjectId) -> Result<(), String> {
        let mut tried = Vec::new();
        loop {
            let Some(to) = self.successor_excluding(id, &tried) else {
                return Err(if tried.is_empty() {
                    "no other node to take it".to_string()
                } else {
                    format!("none of the {} next nodes took it", tried.len())
                });
            };
            if tried.len() >= 4 {
                return Err(format!("none of the {} next nodes took it", tried.len()));
            }
            tried.push(to.id);
            match self.migrate(id, to, false).await {
                Err(MigrateError::Unreachable(_)) => continue,
                r => return r.map_err(|e| e.to_string()),
            }
        }
    }
}
