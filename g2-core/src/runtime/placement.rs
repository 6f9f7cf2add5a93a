//! Placement records (paper §3.5) and root moves: where the objects that this
//! node is (or may become) root of live when a neighbour hosts them, which
//! peers were declared failed, and the moves that bring objects to their roots
//! after the ring changed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::{debug, trace};

use crate::id::{NodeId, ObjectId, Peer};
use crate::overlay::Route;
use crate::runtime::migration::MigrateError;
use crate::runtime::node::NodeInner;
use crate::sync::lock;
use crate::wire::{self, Body, RemoteError, Request, RequestKind};

/// How many nodes of an object's replica set keep its placement record.
const PLACEMENT_REPLICAS: usize = 4;
/// Records kept before they are forgotten wholesale.
const RECORDS_LIMIT: usize = 100_000;

/// What a root's placement records say of an object it does not host.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Placement {
    /// Its host failed.
    Lost,
    /// Its host is down, and the object's policy keeps it for the host's return.
    Unavailable(NodeId),
    /// It lives there.
    At(Peer),
}

/// The placement records of objects whose replica set includes this node,
/// and the peers the overlay declared failed (their objects are lost under
/// `none`, unavailable under a policy that keeps them).
#[derive(Default)]
pub(super) struct Placements {
    records: HashMap<ObjectId, wire::Placement>,
    failed: HashSet<NodeId>,
}

impl Placements {
    /// Keeps `record` (the newest word on where its object lives).
    pub(super) fn insert(&mut self, record: wire::Placement) {
        if self.records.len() >= RECORDS_LIMIT {
            self.records.clear();
        }
        self.records.insert(record.object, record);
    }

    pub(super) fn remove(&mut self, id: &ObjectId) {
        self.records.remove(id);
    }

    /// The object arrived here: a record kept here now names this node.
    pub(super) fn now_here(&mut self, id: ObjectId, me: &Peer) {
        if let Some(record) = self.records.get_mut(&id) {
            record.host = me.clone();
        }
    }

    /// The object moved from here to `to`. The root (or a node that kept a
    /// record) points calls there at once: the new host's own record may arrive
    /// after them, and a record from before the object came would name an older
    /// host, which may be gone by the time this node is root.
    pub(super) fn moved_to(&mut self, id: ObjectId, to: &Peer, policy: &str, root: bool) {
        if root || self.records.contains_key(&id) {
            self.insert(wire::Placement {
                object: id,
                host: to.clone(),
                policy: policy.to_string(),
            });
        }
    }

    /// Whether the record of `id` says its policy keeps it across a crash.
    pub(super) fn kept_by_policy(&self, id: &ObjectId) -> bool {
        self.records
            .get(id)
            .is_some_and(|r| r.policy != crate::fault::POLICY_NONE)
    }

    pub(super) fn peer_failed(&mut self, id: NodeId) {
        self.failed.insert(id);
    }

    /// A peer declared failed spoke again (a restart with the same key): its
    /// objects are no longer unavailable. True if it had been declared failed.
    pub(super) fn peer_back(&mut self, id: NodeId) -> bool {
        !self.failed.is_empty() && self.failed.remove(&id)
    }

    /// What the records say of `target` at its root `me`, where it is not
    /// hosted (nothing: not found here).
    pub(super) fn decide(&self, target: &ObjectId, me: NodeId) -> Option<Placement> {
        let record = self.records.get(target)?;
        if record.host.id == me {
            return None;
        }
        if self.failed.contains(&record.host.id) {
            if record.policy == crate::fault::POLICY_NONE {
                return Some(Placement::Lost);
            }
            return Some(Placement::Unavailable(record.host.id));
        }
        Some(Placement::At(record.host.clone()))
    }
}

impl NodeInner {
    /// At the root of a call's target that is not hosted here: what the
    /// placement records say of it (nothing: not found here).
    pub(super) fn placement_of(&self, req: &Request) -> Option<Placement> {
        if !matches!(req.kind, RequestKind::Call { .. }) {
            return None;
        }
        lock(&self.placements).decide(&req.target, self.me.id)
    }

    /// Passes a call on to the host its placement record names (views of the
    /// ring can briefly disagree); an unreachable host means the object is lost,
    /// or under a policy that keeps objects, unavailable until the host returns.
    pub(super) async fn forward_to_recorded_host(self: &Arc<Self>, mut req: Request, host: Peer) {
        req.via_record = true;
        req.hops += 1;
        if let Err(e) = self.send_frame(&host, Body::Request(req.clone())).await {
            let target = req.target;
            let kept = {
                let mut placements = lock(&self.placements);
                placements.peer_failed(host.id);
                placements.kept_by_policy(&target)
            };
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

    /// At the root of a new object: places it on a less-loaded neighbour
    /// (paper §3.5), with a placement record pointing there at once so that
    /// calls routed here find it, or else hosts it here. Decided by fresh
    /// figures: the neighbours' own loads may have grown since they last
    /// reported.
    pub(super) async fn place_new_object(self: &Arc<Self>, mut req: Request) {
        let key = req.target.key();
        let passive = matches!(&req.kind, RequestKind::Create { type_name, .. } if self.types.is_passive(type_name));
        let to = match self.placement_target(key) {
            // a passive record is no load: it lives at its root, unless this
            // node hosts nothing
            Some(_) if passive && self.hosting() => None,
            Some(_) => {
                self.refresh_loads(&self.neighbours()).await;
                self.placement_target(key)
            }
            None => None,
        };
        let Some(to) = to else {
            req.via_record = true; // hosted here, decided
            return Box::pin(self.deliver_local(req)).await;
        };
        // counted there until it next reports
        lock(&self.balancer).sent_one(to.id);
        let RequestKind::Create { policy, .. } = &req.kind else {
            unreachable!("only creations are placed")
        };
        lock(&self.placements).insert(wire::Placement {
            object: req.target,
            host: to.clone(),
            policy: policy.clone(),
        });
        if let RequestKind::Create {
            type_name,
            init,
            policy,
        } = &req.kind
            && !self.types.is_linked(type_name)
        {
            // code this node was not built with: the neighbour may not be able
            // to run it either, so wait for its answer and host the object
            // elsewhere if it cannot (the reply then goes back from here)
            let kind = RequestKind::Create {
                type_name: type_name.clone(),
                init: init.clone(),
                policy: policy.clone(),
            };
            let me = self.clone();
            self.spawn(async move {
                debug!(object = %req.target, to = %to, "placing a new object on a less-loaded neighbour");
                let r = me
                    .send_and_wait_as(req.target, kind, "create", None, Some(to.clone()), true)
                    .await;
                match r {
                    Ok(v) => me.reply(&req.origin, req.id, Ok(v)).await,
                    Err(crate::CallError::Remote(RemoteError::CodeUnavailable { reason, .. })) => {
                        debug!(object = %req.target, to = %to, "the neighbour cannot run the type ({reason}); placing it again");
                        lock(&me.placements).remove(&req.target);
                        let mut req = req;
                        req.via_record = true;
                        me.deliver_local(req).await;
                    }
                    Err(e) => {
                        let e = match e {
                            crate::CallError::Remote(r) => r,
                            other => RemoteError::NoRoute {
                                target: req.target,
                                reason: format!("placing it on {to}: {other}"),
                            },
                        };
                        me.reply(&req.origin, req.id, Err(e)).await;
                    }
                }
            });
            return;
        }
        let mut fwd = req.clone();
        fwd.via_record = true;
        fwd.hops += 1;
        debug!(object = %req.target, to = %to, "placing a new object on a less-loaded neighbour");
        if let Err(e) = self.send_frame(&to, Body::Request(fwd)).await {
            debug!(to = %to, "could not place a new object there ({e}); hosting it here");
            lock(&self.placements).remove(&req.target);
            self.peer_unreachable(to.id);
            req.via_record = true;
            Box::pin(self.deliver_local(req)).await;
        }
    }

    /// A new object this root cannot run (it has no code for the type, or
    /// will not run it): the neighbours that host are asked in turn, nearest
    /// first, and the one that takes it gets a placement record here. When
    /// none can, the creator hears why from each.
    pub(super) async fn place_where_code_runs(
        self: &Arc<Self>,
        target: ObjectId,
        type_name: String,
        init: Vec<u8>,
        policy: String,
        refused: RemoteError,
    ) -> Result<Vec<u8>, RemoteError> {
        // those known to host first, then those not heard from yet; never one
        // that said it hosts nothing
        let neighbours = self.neighbours();
        let candidates: Vec<Peer> = {
            let balancer = lock(&self.balancer);
            let mut c = balancer.hosting_among(&neighbours);
            c.extend(
                neighbours
                    .iter()
                    .filter(|p| !balancer.known_not_hosting(p.id) && !c.contains(p))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
            c
        };
        let mut others = Vec::new();
        for to in candidates {
            lock(&self.placements).insert(wire::Placement {
                object: target,
                host: to.clone(),
                policy: policy.clone(),
            });
            let kind = RequestKind::Create {
                type_name: type_name.clone(),
                init: init.clone(),
                policy: policy.clone(),
            };
            debug!(object = %target, to = %to, r#type = %type_name, "no code here for the type; asking a neighbour to host it");
            match self
                .send_and_wait_as(target, kind, "create", None, Some(to.clone()), true)
                .await
            {
                Ok(v) => return Ok(v),
                Err(e) => {
                    lock(&self.placements).remove(&target);
                    let reason = match e {
                        crate::CallError::Remote(RemoteError::CodeUnavailable {
                            reason, ..
                        }) => reason,
                        crate::CallError::Remote(e @ RemoteError::AlreadyExists(_)) => {
                            return Err(e);
                        }
                        other => other.to_string(),
                    };
                    others.push(format!("{}: {reason}", to.id));
                }
            }
        }
        match (refused, others.is_empty()) {
            (refused, true) => Err(refused),
            (
                RemoteError::CodeUnavailable {
                    type_name,
                    node,
                    reason,
                },
                false,
            ) => Err(RemoteError::CodeUnavailable {
                type_name,
                node,
                reason: format!("{reason}; nor could its neighbours ({})", others.join("; ")),
            }),
            (refused, false) => Err(refused),
        }
    }

    /// Tells the replica set of each hosted object (or of `only`) where it lives.
    pub(super) async fn publish_placements(self: &Arc<Self>, only: Option<ObjectId>) {
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
    pub(super) fn publish_placements_to(self: &Arc<Self>, peer: &Peer) {
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
    ) -> Vec<(wire::Placement, Vec<Peer>)> {
        let hosted: Vec<(ObjectId, String)> = {
            let catalog = lock(&self.catalog);
            let wanted = |s: &crate::runtime::catalog::ObjectSlot| !(running && s.migrating);
            match only {
                Some(id) => catalog
                    .slot(&id)
                    .filter(|s| wanted(s))
                    .map(|s| (id, s.policy.clone()))
                    .into_iter()
                    .collect(),
                None => catalog
                    .slots()
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
                let record = wire::Placement {
                    object,
                    host: self.me.clone(),
                    policy,
                };
                (record, replicas)
            })
            .collect()
    }

    /// Migrates every object this node hosts but is not the root of towards its
    /// root (after a join nearby, or after a migration overshot); never to
    /// `except`. Objects placed here by load balancing stay.
    pub(super) fn move_to_roots(self: &Arc<Self>, except: Option<NodeId>) {
        if self.stopped.load(Ordering::Acquire) || self.leaving.load(Ordering::Acquire) {
            return;
        }
        let candidates: Vec<ObjectId> = lock(&self.catalog)
            .slots()
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
            let balancer = lock(&self.balancer);
            moves
                .into_iter()
                .partition(|(_, to)| balancer.known_not_hosting(to.id))
        };
        if !stay.is_empty() {
            let me = self.clone();
            self.spawn(async move {
                for (id, _) in stay {
                    me.stay_placed(id).await;
                }
            });
        }
        for (id, to) in moves {
            let me = self.clone();
            self.spawn(async move {
                match me.migrate(id, to.clone(), false).await {
                    Ok(()) => {}
                    // the new root cannot run the type (no code it trusts for
                    // it, another platform): the object stays here, placed,
                    // and the root's record points here
                    Err(MigrateError::Refused(crate::CallError::Remote(
                        RemoteError::CodeUnavailable { reason, .. },
                    ))) => {
                        debug!(object = %id, to = %to, "the new root cannot run it ({reason}); staying here");
                        me.stay_placed(id).await;
                    }
                    Err(e) => debug!(object = %id, to = %to, "migration postponed: {e}"),
                }
            });
        }
    }

    /// Keeps `id` here rather than at its root: marked placed (root moves
    /// leave it), and the records of its replica set, the root's among them,
    /// name this node.
    async fn stay_placed(self: &Arc<Self>, id: ObjectId) {
        match lock(&self.catalog).slot_mut(&id) {
            Some(slot) => slot.placed = true,
            None => return,
        }
        self.publish_placements(Some(id)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u128) -> Peer {
        Peer::new(
            NodeId::from_u128(n),
            crate::NodeAddr::new(format!("mock:{n}")),
        )
    }

    fn record(object: u128, host: u128, policy: &str) -> wire::Placement {
        wire::Placement {
            object: ObjectId::from_u128(object),
            host: peer(host),
            policy: policy.into(),
        }
    }

    const ME: NodeId = NodeId::from_u128(1);

    #[test]
    fn a_record_names_the_host_until_it_fails_then_the_policy_decides() {
        let mut p = Placements::default();
        let (a, b) = (ObjectId::from_u128(10), ObjectId::from_u128(11));
        assert_eq!(p.decide(&a, ME), None, "no record: not found here");
        p.insert(record(10, 2, "none"));
        p.insert(record(11, 2, "local"));
        assert_eq!(p.decide(&a, ME), Some(Placement::At(peer(2))));
        p.peer_failed(NodeId::from_u128(2));
        assert_eq!(p.decide(&a, ME), Some(Placement::Lost));
        assert_eq!(
            p.decide(&b, ME),
            Some(Placement::Unavailable(NodeId::from_u128(2)))
        );
        assert!(p.peer_back(NodeId::from_u128(2)));
        assert!(!p.peer_back(NodeId::from_u128(2)));
        assert_eq!(p.decide(&b, ME), Some(Placement::At(peer(2))));
    }

    #[test]
    fn a_record_follows_its_object() {
        let mut p = Placements::default();
        let a = ObjectId::from_u128(10);
        p.insert(record(10, 2, "none"));
        p.now_here(a, &peer(1));
        assert_eq!(p.decide(&a, ME), None, "hosted here: no record to follow");
        p.moved_to(a, &peer(3), "none", false);
        assert_eq!(p.decide(&a, ME), Some(Placement::At(peer(3))));
        // a node that is neither root nor kept a record keeps none
        let b = ObjectId::from_u128(11);
        p.moved_to(b, &peer(3), "none", false);
        assert_eq!(p.decide(&b, ME), None);
        p.moved_to(b, &peer(3), "none", true);
        assert_eq!(p.decide(&b, ME), Some(Placement::At(peer(3))));
    }
}
