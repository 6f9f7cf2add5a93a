//! The catalog: the objects hosted here, the forwarding addresses of those that
//! moved on, and the objects this node should host but lost; plus activation,
//! the one path by which an object starts running here (created, migrated in).
//!
//! [`Catalog`] is plain data behind one lock (`NodeInner::catalog`): a slot and
//! the forwarding address that replaces it change in one step, so a request
//! handled meanwhile finds one or the other.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info_span, warn};

use crate::fault::{FaultPolicy, IncomingCall};
use crate::id::{NodeId, ObjectId, Peer};
use crate::runtime::actor::{self, InboxMsg, Invocation};
use crate::runtime::node::NodeInner;
use crate::runtime::now;
use crate::runtime::object::{Hosted, TypeEntry};
use crate::sync::lock;
use crate::wire::RemoteError;

/// Forwarding addresses kept before the oldest are forgotten wholesale.
pub(super) const FORWARDING_LIMIT: usize = 100_000;

/// A policy object with the per-object lock that orders logging and queueing.
pub(super) type Arrival = (Arc<dyn FaultPolicy>, Arc<tokio::sync::Mutex<()>>);

/// One object hosted here.
pub(super) struct ObjectSlot {
    pub(super) inbox: mpsc::UnboundedSender<InboxMsg>,
    pub(super) type_name: &'static str,
    pub(super) policy: String,
    /// The policy object, with the lock that keeps "log the arrival, then queue
    /// the call" atomic, so that calls run in the order they were logged.
    pub(super) arrival: Option<Arrival>,
    /// Frozen for a transfer out: calls queue, nothing runs.
    pub(super) migrating: bool,
    /// A passive record ([`Object::PASSIVE`](crate::Object::PASSIVE)): not load.
    pub(super) passive: bool,
    /// Hosted here by load balancing though this node is not the object's root
    /// (whose placement record points here): left where it is when objects go
    /// to their roots.
    pub(super) placed: bool,
    /// When it arrived here by migration (not set for an object created or
    /// recovered here).
    pub(super) arrived: Option<Instant>,
    /// Tells this hosting apart from a later one of the same object here (an
    /// object can come back while its transfer out is still being confirmed).
    pub(super) epoch: u64,
    pub(super) task: JoinHandle<()>,
}

/// What a frozen object's slot says at the start of its transfer.
pub(super) struct FreezeMark {
    pub(super) inbox: mpsc::UnboundedSender<InboxMsg>,
    pub(super) type_name: &'static str,
    pub(super) policy: String,
    pub(super) epoch: u64,
}

/// Why an object cannot be frozen for a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FreezeRefused {
    NotHosted,
    AlreadyMigrating,
}

/// Hosted objects, forwarding addresses and lost objects.
#[derive(Default)]
pub(super) struct Catalog {
    slots: HashMap<ObjectId, ObjectSlot>,
    /// Objects migrated away, and where to: requests that still reach this node
    /// for them are passed on (until the overlay routes there by itself).
    forwarding: HashMap<ObjectId, Peer>,
    /// Objects this node should host but could not recover (corrupt records).
    lost: HashSet<ObjectId>,
    next_epoch: u64,
}

impl Catalog {
    pub(super) fn is_hosted(&self, id: &ObjectId) -> bool {
        self.slots.contains_key(id)
    }

    /// Hosted here and running (not frozen for a transfer).
    pub(super) fn is_running(&self, id: &ObjectId) -> bool {
        self.slots.get(id).is_some_and(|s| !s.migrating)
    }

    pub(super) fn slot(&self, id: &ObjectId) -> Option<&ObjectSlot> {
        self.slots.get(id)
    }

    pub(super) fn slot_mut(&mut self, id: &ObjectId) -> Option<&mut ObjectSlot> {
        self.slots.get_mut(id)
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub(super) fn ids(&self) -> Vec<ObjectId> {
        self.slots.keys().copied().collect()
    }

    pub(super) fn slots(&self) -> impl Iterator<Item = (&ObjectId, &ObjectSlot)> {
        self.slots.iter()
    }

    /// Objects running here (frozen copies on their way out not counted).
    pub(super) fn running(&self) -> u32 {
        let n = self
            .slots
            .values()
            .filter(|s| !s.migrating && !s.passive)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Puts `slot` in place of any earlier hosting of `id`, with a new epoch;
    /// what it replaced, if anything.
    pub(super) fn insert(&mut self, id: ObjectId, mut slot: ObjectSlot) -> Option<ObjectSlot> {
        self.next_epoch += 1;
        slot.epoch = self.next_epoch;
        self.forwarding.remove(&id);
        self.slots.insert(id, slot)
    }

    /// Marks the object frozen for a transfer.
    pub(super) fn freeze(&mut self, id: &ObjectId) -> Result<FreezeMark, FreezeRefused> {
        let slot = self.slots.get_mut(id).ok_or(FreezeRefused::NotHosted)?;
        if slot.migrating {
            return Err(FreezeRefused::AlreadyMigrating);
        }
        slot.migrating = true;
        Ok(FreezeMark {
            inbox: slot.inbox.clone(),
            type_name: slot.type_name,
            policy: slot.policy.clone(),
            epoch: slot.epoch,
        })
    }

    /// Admits calls again, if the copy frozen at `epoch` is still the one here.
    pub(super) fn thaw(&mut self, id: &ObjectId, epoch: u64) {
        if let Some(slot) = self.slots.get_mut(id)
            && slot.epoch == epoch
        {
            slot.migrating = false;
        }
    }

    /// Whether a newer hosting of `id` than the one at `epoch` is here now.
    pub(super) fn superseded(&self, id: &ObjectId, epoch: u64) -> bool {
        self.slots.get(id).is_some_and(|s| s.epoch != epoch)
    }

    /// Whether the copy at `epoch` is the one hosted here.
    pub(super) fn holds(&self, id: &ObjectId, epoch: u64) -> bool {
        self.slots.get(id).is_some_and(|s| s.epoch == epoch)
    }

    /// The transfer of the copy at `epoch` succeeded: its slot gives way to a
    /// forwarding address to `to`, as one step. False when that copy is no
    /// longer the one here (a newer one came back meanwhile).
    pub(super) fn moved_out(&mut self, id: ObjectId, epoch: u64, to: Peer) -> bool {
        if !self.holds(&id, epoch) {
            return false;
        }
        if self.forwarding.len() >= FORWARDING_LIMIT {
            self.forwarding.clear();
        }
        self.forwarding.insert(id, to);
        self.slots.remove(&id);
        true
    }

    pub(super) fn forwarding(&self, id: &ObjectId) -> Option<Peer> {
        self.forwarding.get(id).cloned()
    }

    pub(super) fn has_forwarding(&self, id: &ObjectId) -> bool {
        self.forwarding.contains_key(id)
    }

    /// Forgets the forwarding address of `id` if it points at `host`.
    pub(super) fn drop_forwarding_to(&mut self, id: &ObjectId, host: NodeId) {
        if self.forwarding.get(id).is_some_and(|p| p.id == host) {
            self.forwarding.remove(id);
        }
    }

    /// The object died here (its worker process failed and its policy keeps
    /// no copy): forgotten, and reported lost to callers from now on, if
    /// hosting `epoch` is still the current one.
    pub(super) fn lose(&mut self, id: ObjectId, epoch: u64) -> bool {
        if !self.holds(&id, epoch) {
            return false;
        }
        self.slots.remove(&id);
        self.lost.insert(id);
        true
    }

    pub(super) fn mark_lost(&mut self, id: ObjectId) {
        self.lost.insert(id);
    }

    pub(super) fn is_lost(&self, id: &ObjectId) -> bool {
        self.lost.contains(id)
    }

    /// The objects load balancing may move at `now` (with whether each was
    /// placed here), and how many run here. An object that has just arrived
    /// stays [`min_stay`](Self::movable) (the loads that sent it here may have
    /// been stale); on a node that does not host (`hosting` false) none stays.
    pub(super) fn movable(
        &self,
        hosting: bool,
        min_stay: Duration,
        now: Instant,
    ) -> (Vec<(ObjectId, bool)>, u32) {
        let movable = self
            .slots
            .iter()
            .filter(|(_, s)| {
                !s.migrating
                    && !s.passive
                    && (!hosting
                        || s.arrived
                            .is_none_or(|t| now.saturating_duration_since(t) >= min_stay))
            })
            .map(|(id, s)| (*id, s.placed))
            .collect();
        (movable, self.running())
    }

    /// Stops every object's actor and forgets them.
    pub(super) fn abort_all(&mut self) {
        for (_, slot) in self.slots.drain() {
            slot.task.abort();
        }
    }
}

/// How an object comes to run here.
pub(super) enum Origin<'a> {
    /// Remote activation: a new object from its init value.
    Created { init: &'a [u8] },
    /// Migrated in from `from` (paper §3.4), with the policy's records.
    Migrated {
        state: &'a [u8],
        next_call_seq: u64,
        carried: &'a [u8],
        from: NodeId,
    },
}

impl NodeInner {
    /// The fault-tolerance policy called `name` (`None` for `none`).
    pub(super) fn policy(&self, name: &str) -> Result<Option<Arc<dyn FaultPolicy>>, RemoteError> {
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

    /// Starts an object running here: created from its init value or migrated
    /// in with its state. The type must be registered and the policy linked;
    /// the policy records the activation (and takes the records that travelled
    /// with a migration) before the object runs.
    pub(super) async fn activate(
        self: &Arc<Self>,
        id: ObjectId,
        type_name: &str,
        policy_name: &str,
        origin: Origin<'_>,
        placed: bool,
    ) -> Result<(), RemoteError> {
        let entry = self.types.get(type_name, self.me.id).await?;
        let policy = self.policy(policy_name)?;
        let migrated_from = match origin {
            Origin::Created { .. } => None,
            Origin::Migrated { from, .. } => Some(from),
        };
        match origin {
            Origin::Created { .. } if lock(&self.catalog).is_hosted(&id) => {
                return Err(RemoteError::AlreadyExists(id));
            }
            Origin::Migrated { from, .. } if lock(&self.catalog).is_running(&id) => {
                // two live copies would mean a bug elsewhere: keep the one running
                warn!(object = %id, from = %from, "object sent here again while hosted here; kept the live copy");
                return Ok(());
            }
            // Hosted here and migrating out: the transfer got through, the
            // object ran at the new host and has come back before this node
            // heard the answer. The state arriving is the newer one; the frozen
            // copy here gives way (see `send_frozen`).
            _ => {}
        }
        let decode = |what: &str, reason| RemoteError::Decode {
            what: format!("{what} of {type_name}"),
            reason,
        };
        let (mut obj, next_call_seq) = match origin {
            Origin::Created { init } => {
                let obj = entry
                    .activate(id, init)
                    .await
                    .map_err(|r| decode("init", r))?;
                (obj, 0)
            }
            Origin::Migrated {
                state,
                next_call_seq,
                ..
            } => {
                let obj = entry
                    .restore(id, state)
                    .await
                    .map_err(|r| decode("migrated state", r))?;
                (obj, next_call_seq)
            }
        };
        if let Some(p) = &policy {
            let refused = |e: crate::fault::PolicyError| RemoteError::PolicyRefused {
                policy: policy_name.to_string(),
                node: self.me.id,
                reason: e.to_string(),
            };
            match origin {
                Origin::Created { .. } => {
                    let state = obj.snapshot().await.map_err(|r| decode("state", r))?;
                    p.on_activate(id, type_name, &state, 0)
                        .await
                        .map_err(refused)?;
                }
                Origin::Migrated {
                    state,
                    next_call_seq,
                    carried,
                    from,
                } => {
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
            }
        }
        if migrated_from.is_some() {
            // a record kept here names the host it came from: it is here now
            lock(&self.placements).now_here(id, &self.me);
        }
        let arrived = migrated_from.map(|_| now());
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
            arrived,
        );
        match migrated_from {
            None => debug!(object = %id, r#type = type_name, "activated object"),
            Some(_) => {
                self.counters.migrations_in.fetch_add(1, Ordering::Relaxed);
                debug!(object = %id, r#type = type_name, "object migrated in");
            }
        }
        self.publish_placements(Some(id)).await;
        if let Some(from) = migrated_from {
            // if this node is not (or no longer) the object's root, pass it on;
            // never straight back to the sender, which may still be leaving
            self.move_to_roots(Some(from));
        }
        Ok(())
    }

    /// Hosts an object: spawns its actor, with `replay` queued ahead of anything
    /// else; with `gated`, the actor starts only once the node has joined.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn host(
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
        arrived: Option<Instant>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        for call in replay {
            let _ = tx.send(InboxMsg::Call(Invocation { origin: None, call }));
        }
        let gate = gated.then(|| self.ready.subscribe());
        let span = info_span!("object", node = %self.me.id, object = %id, r#type = entry.name);
        let task = tokio::spawn(
            actor::run(
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
        let slot = ObjectSlot {
            inbox: tx,
            type_name: entry.name,
            policy: policy_name.to_string(),
            arrival: policy.map(|p| (p, Arc::new(tokio::sync::Mutex::new(())))),
            migrating: false,
            passive: entry.passive,
            placed,
            arrived,
            epoch: 0, // set by the catalog
            task,
        };
        lock(&self.catalog).insert(id, slot);
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

    fn slot(placed: bool, arrived: Option<Instant>) -> ObjectSlot {
        let (inbox, _) = mpsc::unbounded_channel();
        ObjectSlot {
            inbox,
            type_name: "test.T",
            policy: "none".into(),
            arrival: None,
            migrating: false,
            passive: false,
            placed,
            arrived,
            epoch: 0,
            task: tokio::spawn(async {}),
        }
    }

    #[tokio::test]
    async fn a_confirmed_transfer_replaces_the_slot_with_a_forwarding_address() {
        let mut c = Catalog::default();
        let id = ObjectId::from_u128(7);
        c.insert(id, slot(false, None));
        let mark = c.freeze(&id).expect("hosted");
        assert_eq!(c.freeze(&id).err(), Some(FreezeRefused::AlreadyMigrating));
        assert_eq!(c.running(), 0, "a frozen copy is not counted as running");
        assert!(c.moved_out(id, mark.epoch, peer(2)));
        assert!(!c.is_hosted(&id));
        assert_eq!(c.forwarding(&id).map(|p| p.id), Some(NodeId::from_u128(2)));
        // hosting it again clears the forwarding address
        c.insert(id, slot(false, None));
        assert!(c.forwarding(&id).is_none());
    }

    #[tokio::test]
    async fn a_copy_that_came_back_supersedes_the_frozen_one() {
        let mut c = Catalog::default();
        let id = ObjectId::from_u128(7);
        c.insert(id, slot(false, None));
        let old = c.freeze(&id).expect("hosted").epoch;
        c.insert(id, slot(false, None)); // migrated back in meanwhile
        assert!(c.superseded(&id, old));
        c.thaw(&id, old); // the old copy's thaw leaves the new one alone
        assert!(!c.moved_out(id, old, peer(2)), "the new copy stays");
        assert!(c.is_running(&id));
        assert_eq!(
            c.freeze(&ObjectId::from_u128(8)).err(),
            Some(FreezeRefused::NotHosted)
        );
    }

    #[tokio::test]
    async fn objects_that_just_arrived_stay_a_while_on_a_hosting_node() {
        let mut c = Catalog::default();
        let t0 = Instant::now();
        let stay = Duration::from_secs(1);
        c.insert(ObjectId::from_u128(1), slot(false, None));
        c.insert(ObjectId::from_u128(2), slot(true, Some(t0)));
        let (movable, running) = c.movable(true, stay, t0 + Duration::from_millis(10));
        assert_eq!(running, 2);
        assert_eq!(movable, vec![(ObjectId::from_u128(1), false)]);
        let (mut movable, _) = c.movable(true, stay, t0 + stay);
        movable.sort();
        assert_eq!(movable.len(), 2);
        // a node that does not host keeps none
        let (movable, _) = c.movable(false, stay, t0);
        assert_eq!(movable.len(), 2);
    }

    #[tokio::test]
    async fn passive_records_are_neither_load_nor_moved_by_balancing() {
        let mut c = Catalog::default();
        let t0 = Instant::now();
        c.insert(ObjectId::from_u128(1), slot(false, None));
        let mut record = slot(false, None);
        record.passive = true;
        c.insert(ObjectId::from_u128(2), record);
        assert_eq!(c.running(), 1);
        let (movable, running) = c.movable(true, Duration::ZERO, t0);
        assert_eq!(running, 1);
        assert_eq!(movable, vec![(ObjectId::from_u128(1), false)]);
        assert_eq!(c.len(), 2, "both hosted");
    }
}
