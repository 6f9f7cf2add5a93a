//! The caller side: remote activation and calls ([`Node::create_raw`],
//! [`Node::call_raw`]), their retries within the deadline, the requests this
//! node waits on and the location cache that sends the next call straight to
//! an object's host; and the replies that end requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{debug, trace, warn};

use crate::fault::{OutgoingCall, OutgoingDecision};
use crate::id::{CallId, NodeId, ObjectId, Peer};
use crate::runtime::context;
use crate::runtime::error::CallError;
use crate::runtime::node::{Node, NodeInner};
use crate::sync::lock;
use crate::wire::{Body, ByteVec, RemoteError, Reply, Request, RequestKind};

/// Entries kept in the location cache before it is cleared.
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

/// A request this node originated and still waits on.
struct Pending {
    reply: oneshot::Sender<Reply>,
    /// The request and the host it went straight to (location cache): if that
    /// host is declared failed, the request is routed again, and the object's new
    /// root answers (its state died with the host, so nothing runs twice).
    direct: Option<(Request, NodeId)>,
}

/// The caller side's state: requests waiting for replies, the location cache,
/// and the call ids of calls made from outside any object.
pub(super) struct Calls {
    pending: Mutex<HashMap<u64, Pending>>,
    next_request: AtomicU64,
    /// Where objects were last found.
    locations: Mutex<HashMap<ObjectId, Peer>>,
    /// The caller id of calls made from outside any object (a client).
    client_id: ObjectId,
    client_seq: AtomicU64,
}

impl Calls {
    pub(super) fn new() -> Calls {
        Calls {
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            locations: Mutex::new(HashMap::new()),
            client_id: ObjectId::random(),
            client_seq: AtomicU64::new(0),
        }
    }

    /// Remembers that `id` lives at `host`.
    pub(super) fn learned_host(&self, id: ObjectId, host: Peer) {
        let mut loc = lock(&self.locations);
        if loc.len() >= LOCATION_CACHE_LIMIT {
            loc.clear();
        }
        loc.insert(id, host);
    }

    fn cached_host(&self, id: &ObjectId) -> Option<Peer> {
        lock(&self.locations).get(id).cloned()
    }

    fn forget_host(&self, id: &ObjectId) {
        lock(&self.locations).remove(id);
    }

    /// Forgets every location at `peer` (it failed or is unreachable).
    pub(super) fn forget_peer(&self, peer: NodeId) {
        lock(&self.locations).retain(|_, p| p.id != peer);
    }

    /// The requests that went straight to `host`, now to be routed again.
    pub(super) fn orphans_of(&self, host: NodeId) -> Vec<Request> {
        lock(&self.pending)
            .values_mut()
            .filter(|p| p.direct.as_ref().is_some_and(|(_, h)| *h == host))
            .filter_map(|p| p.direct.take().map(|(req, _)| req))
            .collect()
    }

    /// Fails every waiting request (the node stopped).
    pub(super) fn clear(&self) {
        lock(&self.pending).clear();
    }
}

impl Node {
    /// Remote activation by type name with an encoded init value.
    pub async fn create_raw(
        &self,
        id: ObjectId,
        type_name: &str,
        init: Vec<u8>,
    ) -> Result<(), CallError> {
        self.create_raw_under(id, type_name, init, &self.inner.run_policy)
            .await
    }

    /// Remote activation under fault-tolerance policy `policy` rather than the
    /// run's (records a framework keeps, such as code, that need no
    /// checkpoints of their own).
    pub async fn create_raw_under(
        &self,
        id: ObjectId,
        type_name: &str,
        init: Vec<u8>,
        policy: &str,
    ) -> Result<(), CallError> {
        let kind = RequestKind::Create {
            type_name: type_name.to_string(),
            init,
            policy: policy.to_string(),
        };
        let resend = policy != crate::fault::POLICY_NONE;
        self.call_with_retries(id, kind, "create", None, resend)
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
        let calls = &self.inner.calls;
        let ctx = context::current().filter(|c| Arc::ptr_eq(&c.node.inner, &self.inner));
        let call_id = match &ctx {
            Some(c) => c.next_call_id(),
            None => CallId {
                caller: calls.client_id,
                seq: calls.client_seq.fetch_add(1, Ordering::Relaxed),
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
        let result = self
            .call_with_retries(target, kind, method, timeout, resend)
            .await;
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
    async fn call_with_retries(
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
                .send_and_wait(target, kind.clone(), what, Some(attempt), None)
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
}

impl NodeInner {
    /// Sends a request once and waits for its reply: straight to `via` when
    /// given, else to the cached host, else routed through the overlay.
    pub(super) async fn send_and_wait(
        self: &Arc<Self>,
        target: ObjectId,
        kind: RequestKind,
        what: &str,
        timeout: Option<Duration>,
        via: Option<Peer>,
    ) -> Result<Vec<u8>, CallError> {
        self.send_and_wait_as(target, kind, what, timeout, via, false)
            .await
    }

    /// As [`Self::send_and_wait`]; with `via_record`, the request says the
    /// root placed it on `via` (which then serves it instead of routing it).
    pub(super) async fn send_and_wait_as(
        self: &Arc<Self>,
        target: ObjectId,
        kind: RequestKind,
        what: &str,
        timeout: Option<Duration>,
        via: Option<Peer>,
        via_record: bool,
    ) -> Result<Vec<u8>, CallError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(CallError::NodeStopped);
        }
        self.counters.calls_sent.fetch_add(1, Ordering::Relaxed);
        let id = self.calls.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.calls.pending).insert(
            id,
            Pending {
                reply: tx,
                direct: None,
            },
        );
        let req = Request {
            id,
            origin: self.me.clone(),
            target,
            hops: 0,
            via_record,
            past_forwarding: false,
            kind,
        };
        trace!(request = id, %target, what, via = ?via.as_ref().map(|p| p.id), "sending a request");
        if let Some(to) = via {
            if let Err(e) = self.send_frame(&to, Body::Request(req)).await {
                lock(&self.calls.pending).remove(&id);
                return Err(CallError::Unreachable {
                    target,
                    reason: format!("{to}: {e}"),
                });
            }
        } else {
            self.send_cached_or_routed(req).await;
        }
        let after = timeout.unwrap_or(self.call_timeout);
        let reply = match tokio::time::timeout(after, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => return Err(CallError::NodeStopped),
            Err(_) => {
                lock(&self.calls.pending).remove(&id);
                debug!(request = id, %target, what, "no reply within {after:?}");
                return Err(CallError::Timeout {
                    target,
                    method: what.to_string(),
                    after,
                });
            }
        };
        if reply.host.id != self.me.id {
            self.calls.learned_host(target, reply.host.clone());
        }
        match reply.outcome {
            Ok(bytes) => Ok(bytes.0),
            Err(e) => {
                if matches!(e, RemoteError::ObjectNotFound(_)) {
                    self.calls.forget_host(&target);
                }
                Err(e.into())
            }
        }
    }

    /// Sends a request to its object's cached host, or routes it.
    async fn send_cached_or_routed(self: &Arc<Self>, req: Request) {
        let target = req.target;
        match self.calls.cached_host(&target) {
            Some(host) if host.id != self.me.id => {
                self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
                trace!(request = req.id, %target, host = %host.id, "to the cached host");
                if req.origin.id == self.me.id
                    && let Some(p) = lock(&self.calls.pending).get_mut(&req.id)
                {
                    p.direct = Some((req.clone(), host.id));
                }
                if let Err(e) = self.send_frame(&host, Body::Request(req.clone())).await {
                    debug!(%target, host = %host, "cached host unreachable ({e}); routing instead");
                    self.calls.forget_host(&target);
                    self.peer_unreachable(host.id);
                    self.dispatch(req).await;
                }
            }
            _ => self.dispatch(req).await,
        }
    }

    /// Answers request `id` of `origin` (here or over the network).
    pub(super) async fn reply(
        &self,
        origin: &Peer,
        id: u64,
        outcome: Result<Vec<u8>, RemoteError>,
    ) {
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

    /// A reply arrived: the request it answers ends.
    pub(super) fn complete(&self, reply: Reply) {
        if let Some(p) = lock(&self.calls.pending).remove(&reply.id) {
            let _ = p.reply.send(reply);
        } else {
            trace!(request = reply.id, "late or unknown reply dropped");
        }
    }
}
