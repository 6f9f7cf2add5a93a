//! Routing a request hop by hop: [`next_step`] decides, from what this node
//! knows ([`RouteView`]), where a request goes next; [`NodeInner::dispatch`] is
//! the thin async shell that acts on the decision and retries around next hops
//! that prove unreachable. [`NodeInner::deliver_local`] hands a request that
//! ends here to the part of the runtime that serves it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::{debug, trace, warn};

use crate::fault::IncomingCall;
use crate::id::{NodeId, ObjectId, Peer};
use crate::overlay::Route;
use crate::runtime::catalog::Origin;
use crate::runtime::migration::Transfer;
use crate::runtime::node::NodeInner;
use crate::runtime::placement::Placement;
use crate::sync::lock;
use crate::wire::{Body, MAX_HOPS, RemoteError, Request, RequestKind};

/// How many times a request is re-routed after its next hop proved unreachable.
const MAX_SEND_ATTEMPTS: usize = 4;

/// What routing needs to know at one node. Each question is asked only when
/// the answer matters (the common case, a call for an object hosted here,
/// asks one).
pub(super) trait RouteView {
    /// Whether the object is hosted here.
    fn hosted(&self, id: ObjectId) -> bool;
    /// The overlay's next step towards the root of `id`.
    fn overlay_route(&self, id: ObjectId) -> Route;
    /// At the root: what the placement records say of a call's target that is
    /// hosted elsewhere.
    fn record(&self, req: &Request) -> Option<Placement>;
    /// Where the object went when it migrated away from here.
    fn forwarding(&self, id: ObjectId) -> Option<Peer>;
}

/// Where a request goes next.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Step {
    /// It went round too long: answer [`RemoteError::TooManyHops`].
    TooManyHops,
    /// It ends here.
    Deliver,
    /// Answer or pass it on as the root's placement record says.
    FollowRecord(Placement),
    /// A root sent it here by a stale record: answer "not found".
    StaleRecord,
    /// Pass it on to `next`; `forwarding` when by a forwarding address left
    /// here by a migration rather than by the overlay.
    Forward { next: Peer, forwarding: bool },
}

/// The routing decision for `req` at node `me`.
pub(super) fn next_step(me: NodeId, req: &Request, view: &impl RouteView) -> Step {
    if req.hops > MAX_HOPS {
        return Step::TooManyHops;
    }
    // An object hosted here is served here, whoever the root is; a migration
    // is addressed to this very node.
    if matches!(
        req.kind,
        RequestKind::Migrate { .. } | RequestKind::Block { .. } | RequestKind::Policy { .. }
    ) || view.hosted(req.target)
    {
        return Step::Deliver;
    }
    if req.via_record && matches!(req.kind, RequestKind::Create { .. }) {
        // a root placed the new object here (load balancing)
        return Step::Deliver;
    }
    let overlay_route = view.overlay_route(req.target);
    // At the root, the placement record names the current host: it is newer
    // than any forwarding address left here by an earlier move (forwarding
    // addresses chained over several moves would send a call round in circles
    // once one of those hosts is gone).
    if matches!(overlay_route, Route::Local)
        && !req.via_record
        && let Some(record) = view.record(req)
    {
        return Step::FollowRecord(record);
    }
    let forwarding = if req.past_forwarding {
        None
    } else {
        view.forwarding(req.target)
    };
    match (forwarding, overlay_route) {
        (Some(next), _) => Step::Forward {
            next,
            forwarding: true,
        },
        (None, _) if req.via_record => Step::StaleRecord,
        (None, Route::Local) => Step::Deliver,
        (None, Route::Forward(next)) if next.id == me => Step::Deliver,
        (None, Route::Forward(next)) => Step::Forward {
            next,
            forwarding: false,
        },
    }
}

/// The live node as a [`RouteView`].
struct Live<'a>(&'a NodeInner);

impl RouteView for Live<'_> {
    fn hosted(&self, id: ObjectId) -> bool {
        lock(&self.0.catalog).is_hosted(&id)
    }
    fn overlay_route(&self, id: ObjectId) -> Route {
        lock(&self.0.overlay).route(id.key())
    }
    fn record(&self, req: &Request) -> Option<Placement> {
        self.0.placement_of(req)
    }
    fn forwarding(&self, id: ObjectId) -> Option<Peer> {
        lock(&self.0.catalog).forwarding(&id)
    }
}

impl NodeInner {
    /// Delivers a request here or passes it on towards the root of its target.
    pub(super) async fn dispatch(self: &Arc<Self>, mut req: Request) {
        for _ in 0..MAX_SEND_ATTEMPTS {
            match next_step(self.me.id, &req, &Live(self)) {
                Step::TooManyHops => {
                    let err = RemoteError::TooManyHops {
                        target: req.target,
                        hops: req.hops,
                    };
                    self.reply(&req.origin, req.id, Err(err)).await;
                    return;
                }
                Step::Deliver => {
                    self.deliver_local(req).await;
                    return;
                }
                Step::FollowRecord(record) => {
                    self.follow_record(req, record).await;
                    return;
                }
                Step::StaleRecord => {
                    let err = RemoteError::ObjectNotFound(req.target);
                    self.reply(&req.origin, req.id, Err(err)).await;
                    return;
                }
                Step::Forward { next, forwarding } => {
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
                                lock(&self.catalog).drop_forwarding_to(&req.target, next.id);
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

    pub(super) async fn fail_request(self: &Arc<Self>, req: Request, reason: String) {
        let target = req.target;
        warn!(%target, "dropping request: {reason}");
        self.reply(
            &req.origin,
            req.id,
            Err(RemoteError::NoRoute { target, reason }),
        )
        .await;
    }

    /// Serves a request that ends here: a creation (placed on a neighbour by
    /// load balancing, or activated here), an object migrating in, or a call.
    pub(super) fn deliver_local(
        self: &Arc<Self>,
        req: Request,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(self.deliver_local_or_spawn(req))
    }

    async fn deliver_local_or_spawn(self: &Arc<Self>, req: Request) {
        // Code for a type this node was not built with may have to be fetched
        // over the network first: that runs on its own task, so that the frames
        // behind this request (the fetch's own replies among them) are not held
        // up. The reply still goes out only once the object is installed.
        if let RequestKind::Create { type_name, .. } | RequestKind::Migrate { type_name, .. } =
            &req.kind
            && !self.types.is_linked(type_name)
        {
            let me = self.clone();
            self.spawn(async move { me.deliver_local_now(req).await });
            return;
        }
        // (a block is read from its source, maybe from disk; a policy
        // message may take the policy's time)
        if matches!(
            req.kind,
            RequestKind::Block { .. } | RequestKind::Policy { .. }
        ) {
            let me = self.clone();
            self.spawn(async move { me.deliver_local_now(req).await });
            return;
        }
        self.deliver_local_now(req).await
    }

    async fn deliver_local_now(self: &Arc<Self>, req: Request) {
        match req.kind {
            RequestKind::Create { .. } if self.leaving.load(Ordering::Acquire) => {
                self.pass_creation_on(req).await;
            }
            RequestKind::Create { .. } if !req.via_record => {
                // the root may place a new object on a less-loaded neighbour
                self.place_new_object(req).await;
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
                    .activate(
                        req.target,
                        &type_name,
                        &policy,
                        Origin::Created { init: &init },
                        placed,
                    )
                    .await;
                let outcome = match outcome {
                    // the root has no code for the type: a neighbour that can
                    // run it hosts the object, with a placement record here
                    Err(refused @ RemoteError::CodeUnavailable { .. }) if !placed => {
                        self.place_where_code_runs(req.target, type_name, init, policy, refused)
                            .await
                    }
                    other => other.map(|()| Vec::new()),
                };
                self.reply(&req.origin, req.id, outcome).await;
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
                let call = IncomingCall {
                    call_id,
                    method,
                    args,
                    oneway,
                };
                self.queue_call(req.id, req.origin, req.target, req.hops, call)
                    .await;
            }
            RequestKind::Block { key } => self.serve_block(req.origin, req.id, key).await,
            RequestKind::Policy { policy, body } => {
                self.serve_policy_message(req.origin, req.id, policy, body)
                    .await
            }
        }
    }

    /// A leaving node passes a creation on to the node after it.
    async fn pass_creation_on(self: &Arc<Self>, mut req: Request) {
        if let Some(to) = self.successor(req.target) {
            req.hops += 1;
            req.via_record = false;
            if self
                .send_frame(&to, Body::Request(req.clone()))
                .await
                .is_ok()
            {
                return;
            }
        }
        self.fail_request(req, "this node is leaving".into()).await;
    }
}

/// The request that asks for `call` again (passed on to the object's host).
pub(super) fn call_request(call: IncomingCall) -> RequestKind {
    RequestKind::Call {
        method: call.method,
        args: call.args,
        call_id: call.call_id,
        oneway: call.oneway,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::id::CallId;

    fn peer(n: u128) -> Peer {
        Peer::new(
            NodeId::from_u128(n),
            crate::NodeAddr::new(format!("mock:{n}")),
        )
    }

    /// A view of one node, with a count of the questions asked.
    struct View {
        hosted: bool,
        route: Route,
        record: Option<Placement>,
        forwarding: Option<Peer>,
        asked: Cell<u32>,
    }

    impl View {
        fn new(route: Route) -> View {
            View {
                hosted: false,
                route,
                record: None,
                forwarding: None,
                asked: Cell::new(0),
            }
        }
        fn ask(&self) {
            self.asked.set(self.asked.get() + 1);
        }
    }

    impl RouteView for View {
        fn hosted(&self, _: ObjectId) -> bool {
            self.ask();
            self.hosted
        }
        fn overlay_route(&self, _: ObjectId) -> Route {
            self.ask();
            self.route.clone()
        }
        fn record(&self, _: &Request) -> Option<Placement> {
            self.ask();
            self.record.clone()
        }
        fn forwarding(&self, _: ObjectId) -> Option<Peer> {
            self.ask();
            self.forwarding.clone()
        }
    }

    fn call() -> Request {
        Request {
            id: 1,
            origin: peer(9),
            target: ObjectId::from_u128(5),
            hops: 0,
            via_record: false,
            past_forwarding: false,
            kind: RequestKind::Call {
                method: "m".into(),
                args: Vec::new(),
                call_id: CallId {
                    caller: ObjectId::from_u128(1),
                    seq: 0,
                },
                oneway: false,
            },
        }
    }

    const ME: NodeId = NodeId::from_u128(1);

    #[test]
    fn a_call_for_an_object_hosted_here_is_delivered_after_one_question() {
        let mut v = View::new(Route::Forward(peer(2)));
        v.hosted = true;
        assert_eq!(next_step(ME, &call(), &v), Step::Deliver);
        assert_eq!(v.asked.get(), 1);
    }

    #[test]
    fn a_call_goes_where_the_overlay_says_unless_the_object_moved_from_here() {
        let v = View::new(Route::Forward(peer(2)));
        assert_eq!(
            next_step(ME, &call(), &v),
            Step::Forward {
                next: peer(2),
                forwarding: false
            }
        );
        let mut v = View::new(Route::Forward(peer(2)));
        v.forwarding = Some(peer(3));
        assert_eq!(
            next_step(ME, &call(), &v),
            Step::Forward {
                next: peer(3),
                forwarding: true
            }
        );
        // once a forwarding address led nowhere, they are all ignored
        let mut req = call();
        req.past_forwarding = true;
        assert_eq!(
            next_step(ME, &req, &v),
            Step::Forward {
                next: peer(2),
                forwarding: false
            }
        );
    }

    #[test]
    fn at_the_root_the_placement_record_wins_over_a_forwarding_address() {
        let mut v = View::new(Route::Local);
        v.record = Some(Placement::At(peer(4)));
        v.forwarding = Some(peer(3));
        assert_eq!(
            next_step(ME, &call(), &v),
            Step::FollowRecord(Placement::At(peer(4)))
        );
        // a request that came by a record is not sent round by records again
        let mut req = call();
        req.via_record = true;
        assert_eq!(
            next_step(ME, &req, &v),
            Step::Forward {
                next: peer(3),
                forwarding: true
            }
        );
        v.forwarding = None;
        assert_eq!(next_step(ME, &req, &v), Step::StaleRecord);
    }

    #[test]
    fn the_root_without_records_delivers_and_so_does_a_route_to_itself() {
        assert_eq!(
            next_step(ME, &call(), &View::new(Route::Local)),
            Step::Deliver
        );
        let v = View::new(Route::Forward(peer(1)));
        assert_eq!(next_step(ME, &call(), &v), Step::Deliver);
    }

    #[test]
    fn creations_placed_here_and_migrations_end_here_and_loops_end() {
        let mut req = call();
        req.kind = RequestKind::Create {
            type_name: "t".into(),
            init: Vec::new(),
            policy: "none".into(),
        };
        req.via_record = true;
        let v = View::new(Route::Forward(peer(2)));
        assert_eq!(next_step(ME, &req, &v), Step::Deliver);
        req.kind = RequestKind::Migrate {
            type_name: "t".into(),
            state: Vec::new(),
            policy: "none".into(),
            next_call_seq: 0,
            transfer: 1,
            carried: Vec::new(),
            placed: false,
        };
        req.via_record = false;
        assert_eq!(next_step(ME, &req, &v), Step::Deliver);
        let mut req = call();
        req.hops = MAX_HOPS + 1;
        assert_eq!(next_step(ME, &req, &v), Step::TooManyHops);
    }
}
