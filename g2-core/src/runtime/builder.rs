//! The typed builder of a [`Node`]. Network name, overlay and transport are
//! required, and a builder missing one has no `build` method: the mistake is a
//! compile error, not a runtime one. Store and fault tolerance have defaults
//! ([`MemStore`], policy `none`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::fault::{FaultPolicy, POLICY_NONE};
use crate::id::NodeAddr;
use crate::overlay::OverlayFactory;
use crate::runtime::error::BuildError;
use crate::runtime::node::{Config, Node};
use crate::runtime::object::{Object, TypeEntry, TypeProvider, Types};
use crate::store::{MemStore, Store};
use crate::transport::Transport;

/// Builder state: no network name given yet.
pub struct NoNetwork;
/// Builder state: the network name is set.
pub struct WithNetwork(String);
/// Builder state: no overlay given yet.
pub struct NoOverlay;
/// Builder state: the overlay is set.
pub struct WithOverlay(Box<dyn OverlayFactory>);
/// Builder state: no transport given yet.
pub struct NoTransport;
/// Builder state: the transport is set.
pub struct WithTransport(Arc<dyn Transport>);

/// Builds a [`Node`]: `Node::builder().network(..).overlay(..).transport(..)`, then
/// optional steps, then `.build().await`.
pub struct NodeBuilder<N = NoNetwork, O = NoOverlay, T = NoTransport> {
    network: N,
    overlay: O,
    transport: T,
    opts: Options,
}

/// The optional steps, shared by every builder state.
struct Options {
    store: Option<Arc<dyn Store>>,
    run_policy: Option<Arc<dyn FaultPolicy>>,
    policies: HashMap<String, Arc<dyn FaultPolicy>>,
    types: Vec<TypeEntry>,
    type_provider: Option<Arc<dyn TypeProvider>>,
    call_timeout: Duration,
    join_timeout: Duration,
    bootstrap: Option<NodeAddr>,
    host_objects: bool,
    load_balancing: bool,
}

/// Default deadline of a call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time allowed for joining the overlay.
pub const DEFAULT_JOIN_TIMEOUT: Duration = Duration::from_secs(30);

impl NodeBuilder {
    pub(crate) fn new() -> Self {
        NodeBuilder {
            network: NoNetwork,
            overlay: NoOverlay,
            transport: NoTransport,
            opts: Options {
                store: None,
                run_policy: None,
                policies: HashMap::new(),
                types: Vec::new(),
                type_provider: None,
                call_timeout: DEFAULT_CALL_TIMEOUT,
                join_timeout: DEFAULT_JOIN_TIMEOUT,
                bootstrap: None,
                host_objects: true,
                load_balancing: true,
            },
        }
    }
}

impl<N, O, T> NodeBuilder<N, O, T> {
    /// Uses `store` instead of the default [`MemStore`].
    pub fn store(self, store: impl Store) -> Self {
        self.shared_store(Arc::new(store))
    }

    /// Uses an already shared store.
    pub fn shared_store(mut self, store: Arc<dyn Store>) -> Self {
        self.opts.store = Some(store);
        self
    }

    /// The fault-tolerance policy of this run: every object this node creates
    /// carries it, and this node can host objects that carry it. Default: `none`.
    pub fn fault_tolerance(mut self, policy: impl FaultPolicy) -> Self {
        let p: Arc<dyn FaultPolicy> = Arc::new(policy);
        self.opts.policies.insert(p.name(), p.clone());
        self.opts.run_policy = Some(p);
        self
    }

    /// Another policy this node can host objects under (volunteers link all).
    pub fn serve_policy(mut self, policy: impl FaultPolicy) -> Self {
        let p: Arc<dyn FaultPolicy> = Arc::new(policy);
        self.opts.policies.insert(p.name(), p);
        self
    }

    /// Lets this node host objects of type `X`.
    pub fn register<X: Object>(mut self) -> Self {
        self.opts.types.push(TypeEntry::of::<X>());
        self
    }

    /// Where this node finds code for object types it was not built with
    /// (a volunteer's bundle cache and worker processes); without one, an
    /// object of an unregistered type is refused with `UnknownType`.
    pub fn type_provider(mut self, provider: Arc<dyn TypeProvider>) -> Self {
        self.opts.type_provider = Some(provider);
        self
    }

    /// The default deadline of calls made through this node.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.opts.call_timeout = timeout;
        self
    }

    /// How long `build` waits for the overlay join to finish.
    pub fn join_timeout(mut self, timeout: Duration) -> Self {
        self.opts.join_timeout = timeout;
        self
    }

    /// Whether this node runs objects (default: yes). A node that does not (a
    /// client that only starts a run and calls) still joins the overlay, routes
    /// and keeps placement records; objects whose root it is are placed on the
    /// least-loaded neighbours that do host (paper §3.5). It hosts one itself only
    /// while no such neighbour is known, and passes it on once one is.
    pub fn host_objects(mut self, yes: bool) -> Self {
        self.opts.host_objects = yes;
        self
    }

    /// Whether this node balances its load with its leaf set (default: yes):
    /// it places new objects on, and passes running ones to, neighbours that
    /// run fewer (paper §3.5). The root keeps a pointer, so calls still reach
    /// the object, one hop more. Off, every object lives on its root.
    pub fn load_balancing(mut self, yes: bool) -> Self {
        self.opts.load_balancing = yes;
        self
    }

    /// Joins the network through the node at `addr` (without one, the node founds
    /// a new network).
    pub fn bootstrap(mut self, addr: NodeAddr) -> Self {
        self.opts.bootstrap = Some(addr);
        self
    }
}

impl<O, T> NodeBuilder<NoNetwork, O, T> {
    /// The logical network name (`plas.qut.edu`); checked by `build`.
    pub fn network(self, name: impl Into<String>) -> NodeBuilder<WithNetwork, O, T> {
        NodeBuilder {
            network: WithNetwork(name.into()),
            overlay: self.overlay,
            transport: self.transport,
            opts: self.opts,
        }
    }
}

impl<N, T> NodeBuilder<N, NoOverlay, T> {
    /// The routing overlay (`PastryConfig`, `ChordConfig`, ...).
    pub fn overlay(self, overlay: impl OverlayFactory) -> NodeBuilder<N, WithOverlay, T> {
        NodeBuilder {
            network: self.network,
            overlay: WithOverlay(Box::new(overlay)),
            transport: self.transport,
            opts: self.opts,
        }
    }
}

impl<N, O> NodeBuilder<N, O, NoTransport> {
    /// The transport (`mem` in-process, `quic`).
    pub fn transport(self, transport: impl Transport) -> NodeBuilder<N, O, WithTransport> {
        NodeBuilder {
            network: self.network,
            overlay: self.overlay,
            transport: WithTransport(Arc::new(transport)),
            opts: self.opts,
        }
    }
}

impl NodeBuilder<WithNetwork, WithOverlay, WithTransport> {
    /// Starts the node and joins the overlay (through the bootstrap peer, if any).
    pub async fn build(self) -> Result<Node, BuildError> {
        let opts = self.opts;
        let network = self.network.0;
        crate::uri::validate_network_name(&network)?;
        let mut types = HashMap::new();
        for t in opts.types {
            let name = t.name;
            if types.insert(name, t).is_some() {
                return Err(BuildError::DuplicateType(name));
            }
        }
        let transport = self.transport.0;
        let bootstrap = match opts.bootstrap {
            Some(addr) => Some(
                transport
                    .identify(&addr)
                    .await
                    .map_err(|e| bootstrap_error(&addr, e))?,
            ),
            None => None,
        };
        let factory = self.overlay.0;
        let overlay_name = factory.name();
        let overlay = factory.build(transport.local_peer());
        let run_policy = opts
            .run_policy
            .map(|p| p.name())
            .unwrap_or_else(|| POLICY_NONE.to_string());
        let cfg = Config {
            network,
            overlay,
            overlay_name,
            transport,
            store: opts.store.unwrap_or_else(|| Arc::new(MemStore::new())),
            run_policy,
            policies: opts.policies,
            types: Types::new(types, opts.type_provider),
            call_timeout: opts.call_timeout,
            host_objects: opts.host_objects,
            load_balancing: opts.load_balancing,
        };
        Node::start(cfg, bootstrap, opts.join_timeout).await
    }
}

/// Why joining through `addr` failed, in one line that does not repeat it.
fn bootstrap_error(addr: &crate::NodeAddr, e: crate::transport::TransportError) -> BuildError {
    use crate::transport::TransportError;
    match e {
        e @ TransportError::WrongNetwork { .. } => BuildError::WrongNetwork(e.to_string()),
        TransportError::Unreachable(m) => {
            let prefix = format!("{addr}: ");
            BuildError::Bootstrap {
                addr: addr.to_string(),
                reason: m.strip_prefix(&prefix).map(str::to_string).unwrap_or(m),
            }
        }
        other => BuildError::Bootstrap {
            addr: addr.to_string(),
            reason: other.to_string(),
        },
    }
}
