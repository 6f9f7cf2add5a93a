//! Migration (paper §3.4): freeze an object (stop admitting calls, let the
//! running one finish), take its snapshot, transfer it, wait for the new host's
//! acknowledgement, then hand the calls that queued meanwhile to the new host
//! and stop; or, on a definite failure, thaw it here. There is never a moment
//! with two live copies. The receiving side installs each transfer once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{Instrument, debug, info_span, warn};

use crate::fault::{FaultPolicy, IncomingCall};
use crate::id::{NodeId, ObjectId, Peer};
use crate::runtime::actor::{InboxMsg, Invocation, Snapshot, Verdict};
use crate::runtime::catalog::{FreezeRefused, Origin};
use crate::runtime::error::CallError;
use crate::runtime::node::NodeInner;
use crate::runtime::random_u64;
use crate::runtime::routing::call_request;
use crate::sync::lock;
use crate::wire::{Body, RemoteError, Request, RequestKind};

/// How many installed transfers a node remembers (for retries of them).
const TRANSFERS_REMEMBERED: usize = 4096;

/// Why an object did not migrate (it carries on where it was, or gave way to
/// a newer copy of itself that came back).
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum MigrateError {
    #[error("not hosted here")]
    NotHosted,
    #[error("already migrating")]
    AlreadyMigrating,
    #[error("the object's actor has stopped")]
    ActorStopped,
    #[error("could not serialise the state: {0}")]
    Snapshot(String),
    #[error("the fault policy could not export its records: {0}")]
    Export(String),
    #[error("the fault policy could not mark the departure: {0}")]
    MarkDeparture(String),
    #[error("transfer timed out")]
    TimedOut,
    /// The new host could not be reached: another may take the object.
    #[error("unreachable: {0}")]
    Unreachable(CallError),
    /// The new host answered and refused.
    #[error("{0}")]
    Refused(CallError),
}

impl From<FreezeRefused> for MigrateError {
    fn from(r: FreezeRefused) -> Self {
        match r {
            FreezeRefused::NotHosted => MigrateError::NotHosted,
            FreezeRefused::AlreadyMigrating => MigrateError::AlreadyMigrating,
        }
    }
}

/// An object arriving by migration.
pub(super) struct Transfer<'a> {
    pub(super) type_name: &'a str,
    pub(super) state: &'a [u8],
    pub(super) policy_name: &'a str,
    pub(super) next_call_seq: u64,
    pub(super) carried: &'a [u8],
    pub(super) placed: bool,
}

/// An object stopped for a transfer (see [`NodeInner::freeze`]).
pub(super) struct Frozen {
    type_name: &'static str,
    policy_name: String,
    epoch: u64,
    snap_rx: oneshot::Receiver<Snapshot>,
    verdict_tx: oneshot::Sender<Verdict>,
}

/// Where a transfer received here stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TransferState {
    /// Its first copy is being installed.
    Installing,
    /// Installed: a retry is acknowledged, never installed again (the object
    /// may have moved on since).
    Installed,
}

/// The transfers received lately, the oldest forgotten beyond a bound.
pub(super) struct RecentTransfers {
    seen: HashMap<(ObjectId, u64), TransferState>,
    order: VecDeque<(ObjectId, u64)>,
    bound: usize,
}

impl Default for RecentTransfers {
    fn default() -> Self {
        Self::new(TRANSFERS_REMEMBERED)
    }
}

impl RecentTransfers {
    fn new(bound: usize) -> Self {
        Self {
            seen: HashMap::new(),
            order: VecDeque::new(),
            bound,
        }
    }

    fn get(&self, k: &(ObjectId, u64)) -> Option<TransferState> {
        self.seen.get(k).copied()
    }

    fn set(&mut self, k: (ObjectId, u64), v: TransferState) {
        if self.seen.insert(k, v).is_none() {
            self.order.push_back(k);
            while self.order.len() > self.bound {
                if let Some(old) = self.order.pop_front() {
                    self.seen.remove(&old);
                }
            }
        }
    }

    fn forget(&mut self, k: &(ObjectId, u64)) {
        if self.seen.remove(k).is_some() {
            self.order.retain(|o| o != k);
        }
    }
}

/// How a transfer that did not complete ends for the frozen copy.
enum Ending {
    /// Before the departure was marked with the policy.
    Unmarked,
    /// After: the mark is cleared.
    Marked,
}

impl NodeInner {
    /// Moves object `id` to node `to` (see the module docs).
    pub(super) async fn migrate(
        self: &Arc<Self>,
        id: ObjectId,
        to: Peer,
        placed: bool,
    ) -> Result<(), MigrateError> {
        let frozen = self.freeze(id)?;
        self.send_frozen(id, frozen, to, placed, None).await
    }

    /// Stops admitting calls to the object (they queue) and asks its actor
    /// for a snapshot, taken once the calls ahead of it have run.
    pub(super) fn freeze(self: &Arc<Self>, id: ObjectId) -> Result<Frozen, MigrateError> {
        let mark = lock(&self.catalog).freeze(&id)?;
        let (snap_tx, snap_rx) = oneshot::channel();
        let (verdict_tx, verdict_rx) = oneshot::channel();
        if mark
            .inbox
            .send(InboxMsg::Migrate {
                snapshot: snap_tx,
                verdict: verdict_rx,
            })
            .is_err()
        {
            lock(&self.catalog).thaw(&id, mark.epoch);
            return Err(MigrateError::ActorStopped);
        }
        Ok(Frozen {
            type_name: mark.type_name,
            policy_name: mark.policy,
            epoch: mark.epoch,
            snap_rx,
            verdict_tx,
        })
    }

    /// A transfer that did not complete: the frozen copy carries on here, or,
    /// if it is no longer the one hosted here (a newer copy of the object came
    /// back meanwhile), hands its queued
    /// calls to that one and stops (its records under the object's policy are
    /// the new copy's now, so they stay).
    async fn stay(
        self: &Arc<Self>,
        id: ObjectId,
        epoch: u64,
        verdict: oneshot::Sender<Verdict>,
        policy: &Option<Arc<dyn FaultPolicy>>,
        ending: Ending,
    ) {
        if let (Ending::Marked, Some(p)) = (ending, policy)
            && let Err(e) = p.on_stayed(id).await
        {
            warn!(object = %id, "fault policy could not clear a departure mark: {e}");
        }
        if !lock(&self.catalog).holds(&id, epoch) {
            let (drained_tx, drained_rx) = oneshot::channel();
            let _ = verdict.send(Verdict::Moved(self.me.clone(), drained_tx));
            let _ = drained_rx.await;
            debug!(object = %id, "frozen copy gave way to the copy that came back");
        } else {
            let _ = verdict.send(Verdict::Stay);
            lock(&self.catalog).thaw(&id, epoch);
        }
    }

    /// Sends a frozen object to `to` (as transfer `resume`, when a restart
    /// resumes one) and, once it is installed there, drops it here.
    pub(super) async fn send_frozen(
        self: &Arc<Self>,
        id: ObjectId,
        frozen: Frozen,
        to: Peer,
        placed: bool,
        resume: Option<u64>,
    ) -> Result<(), MigrateError> {
        let Frozen {
            type_name,
            policy_name,
            epoch,
            snap_rx,
            verdict_tx,
        } = frozen;
        let Ok(snap) = snap_rx.await else {
            lock(&self.catalog).thaw(&id, epoch);
            return Err(MigrateError::ActorStopped);
        };
        let policy = self.policy(&policy_name).ok().flatten();
        let state = match snap.state {
            Ok(s) => s,
            Err(e) => {
                self.stay(id, epoch, verdict_tx, &policy, Ending::Unmarked)
                    .await;
                return Err(MigrateError::Snapshot(e));
            }
        };
        let carried = match &policy {
            Some(p) => match p.export(id).await {
                Ok(c) => c,
                Err(e) => {
                    self.stay(id, epoch, verdict_tx, &policy, Ending::Unmarked)
                        .await;
                    return Err(MigrateError::Export(e.to_string()));
                }
            },
            None => Vec::new(),
        };
        let transfer = resume.unwrap_or_else(random_u64);
        // marked durably before anything leaves: a restart from here on sends
        // this same transfer again rather than run a copy the new host may run
        if let Some(p) = &policy
            && let Err(e) = p.on_departing(id, to.clone(), transfer).await
        {
            self.stay(id, epoch, verdict_tx, &policy, Ending::Unmarked)
                .await;
            return Err(MigrateError::MarkDeparture(e.to_string()));
        }
        let kind = RequestKind::Migrate {
            type_name: type_name.to_string(),
            state,
            policy: policy_name.clone(),
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
        let durable = policy.is_some();
        let mut last = MigrateError::TimedOut;
        let mut attempt = 0u32;
        let failed = loop {
            let persist = durable
                && !self.stopped.load(Ordering::Acquire)
                && !self.leaving.load(Ordering::Acquire);
            if attempt >= 5 && !persist {
                warn!(object = %id, to = %to, "migration abandoned after repeated timeouts: {last}");
                break last;
            }
            if attempt > 0 && lock(&self.catalog).superseded(&id, epoch) {
                break last;
            }
            let timeout =
                Some(self.call_timeout.min(Duration::from_secs(5)) * (attempt.min(4) + 1));
            attempt += 1;
            match self
                .send_and_wait(id, kind.clone(), "migrate", timeout, Some(to.clone()))
                .await
            {
                Ok(_) => {
                    // (until the policy dropped this stay's records: a copy coming
                    // back meanwhile waits, see `Transitions`)
                    let _transition = self.transition(id).await;
                    // The forwarding address is in place before the slot goes, as
                    // one step: a request handled meanwhile (frames from other
                    // peers are handled concurrently) finds one or the other.
                    if !lock(&self.catalog).moved_out(id, epoch, to.clone()) {
                        debug!(object = %id, to = %to, "object came back while its transfer was confirmed");
                        self.stay(id, epoch, verdict_tx, &policy, Ending::Marked)
                            .await;
                        return Ok(());
                    }
                    self.moved_out(id, &to, &policy_name);
                    let (drained_tx, drained_rx) = oneshot::channel();
                    let _ = verdict_tx.send(Verdict::Moved(to.clone(), drained_tx));
                    // the calls that queued meanwhile are on their way before we return
                    let _ = drained_rx.await;
                    self.counters.migrations_out.fetch_add(1, Ordering::Relaxed);
                    if let Some(p) = policy
                        && let Err(e) = p.on_departed(id).await
                    {
                        warn!(object = %id, "fault policy failed on departure: {e}");
                    }
                    debug!(object = %id, to = %to, "object migrated out");
                    return Ok(());
                }
                Err(CallError::Timeout { .. }) => {
                    last = MigrateError::TimedOut;
                }
                Err(e @ CallError::Unreachable { .. }) if persist => {
                    // (a newer copy coming back meanwhile is checked above)
                    debug!(object = %id, to = %to, "new host unreachable during a transfer ({e}); asking again");
                    last = MigrateError::Unreachable(e);
                    tokio::time::sleep(Duration::from_millis(250) * attempt.min(8)).await;
                }
                Err(e @ CallError::Unreachable { .. }) => break MigrateError::Unreachable(e),
                Err(e) => break MigrateError::Refused(e),
            }
        };
        self.stay(id, epoch, verdict_tx, &policy, Ending::Marked)
            .await;
        Err(failed)
    }

    /// After a confirmed transfer of `id` to `to`: calls from here go there,
    /// and so do calls routed here (see [`Placements::moved_to`]).
    ///
    /// [`Placements::moved_to`]: crate::runtime::placement::Placements::moved_to
    fn moved_out(&self, id: ObjectId, to: &Peer, policy_name: &str) {
        self.calls.learned_host(id, to.clone());
        let root = lock(&self.overlay).is_root(id.key());
        lock(&self.placements).moved_to(id, to, policy_name, root);
    }

    /// Installs an object migrated here (paper §3.4), once per transfer: `None`
    /// while another copy of the same transfer is being installed.
    pub(super) async fn install(
        self: &Arc<Self>,
        id: ObjectId,
        t: Transfer<'_>,
        transfer: u64,
        from: NodeId,
    ) -> Option<Result<(), RemoteError>> {
        let key = (id, transfer);
        {
            let mut seen = lock(&self.transfers_in);
            match seen.get(&key) {
                Some(TransferState::Installed) => {
                    // a retry of a transfer installed here; the object may have
                    // moved on since, and this copy of its state is stale
                    debug!(object = %id, transfer, "transfer already installed");
                    return Some(Ok(()));
                }
                Some(TransferState::Installing) => return None,
                None => seen.set(key, TransferState::Installing),
            }
        }
        // (bounded: a departure's last steps only forward the calls that queued)
        let Ok(_transition) = tokio::time::timeout(self.call_timeout, self.transition(id)).await
        else {
            lock(&self.transfers_in).forget(&key);
            return Some(Err(RemoteError::NoRoute {
                target: id,
                reason: format!("node {} is still moving it out", self.me.id),
            }));
        };
        let outcome =
            if self.leaving.load(Ordering::Acquire) || self.stopped.load(Ordering::Acquire) {
                Err(RemoteError::NoRoute {
                    target: id,
                    reason: format!("node {} is leaving", self.me.id),
                })
            } else {
                let origin = Origin::Migrated {
                    state: t.state,
                    next_call_seq: t.next_call_seq,
                    carried: t.carried,
                    from,
                };
                self.activate(id, t.type_name, t.policy_name, origin, t.placed)
                    .await
            };
        let mut seen = lock(&self.transfers_in);
        match &outcome {
            Ok(()) => seen.set(key, TransferState::Installed),
            Err(_) => seen.forget(&key),
        }
        Some(outcome)
    }

    /// Takes the lock of `id`'s transitions on this node (see [`Transitions`]).
    async fn transition(&self, id: ObjectId) -> tokio::sync::OwnedMutexGuard<()> {
        let handle = lock(&self.transitions).handle(id);
        handle.lock_owned().await
    }

    /// Hands a call that queued during a migration to the object's new host; the
    /// reply goes from there straight to the caller.
    pub(super) async fn forward_queued(
        self: &Arc<Self>,
        target: ObjectId,
        inv: Invocation,
        to: &Peer,
    ) {
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

    /// A recovered object was on its way to `to` when this node stopped: the
    /// new host may run it already. It stays frozen at its checkpoint and the
    /// same transfer is sent again once the node has joined: a host that
    /// installed it acknowledges without installing it twice, one that never
    /// got it installs the checkpoint. Either way the calls logged since the
    /// checkpoint (`held`) follow it there, in order: the new host runs those
    /// it has not run (the policy leaves their results out of the transfer)
    /// and answers the others from the results it kept. Should the transfer
    /// fail for good, they run here instead.
    pub(super) fn resume_departure(
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
        if let Some(slot) = lock(&self.catalog).slot(&id) {
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
        self.spawn(
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
}

/// One async lock per object whose hosting changes on this node, held by an
/// install from its start until the copy runs, and by a confirmed departure
/// from the confirmation until its policy dropped the records of the stay. An
/// object can come back (A → B → C → A) before A heard B's confirmation: were
/// the two to interleave, the departure would drop the records the new stay
/// had just stored (its checkpoint, and the results that answer a call sent
/// again), and such a call would run twice. With the lock, either the new copy
/// is in place first, and the departure sees it and gives way to it, or the
/// departure finishes first, and the install starts from a clean slate.
#[derive(Default)]
pub(super) struct Transitions {
    locks: HashMap<ObjectId, Arc<tokio::sync::Mutex<()>>>,
}

impl Transitions {
    fn handle(&mut self, id: ObjectId) -> Arc<tokio::sync::Mutex<()>> {
        // (locks nobody holds or waits for go)
        self.locks.retain(|_, l| Arc::strong_count(l) > 1);
        self.locks.entry(id).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_transfers_forget_the_oldest_beyond_their_bound() {
        let mut r = RecentTransfers::new(2);
        let k = |n| (ObjectId::from_u128(n), n as u64);
        r.set(k(1), TransferState::Installing);
        r.set(k(1), TransferState::Installed);
        r.set(k(2), TransferState::Installed);
        assert_eq!(r.get(&k(1)), Some(TransferState::Installed));
        r.set(k(3), TransferState::Installing);
        assert_eq!(r.get(&k(1)), None, "the oldest is forgotten");
        assert_eq!(r.get(&k(2)), Some(TransferState::Installed));
        r.forget(&k(3));
        assert_eq!(r.get(&k(3)), None);
        r.set(k(4), TransferState::Installed);
        assert_eq!(
            r.get(&k(2)),
            Some(TransferState::Installed),
            "a forgotten one frees its place"
        );
    }

    #[test]
    fn an_unreachable_host_is_told_apart_from_a_refusal() {
        let unreachable = MigrateError::Unreachable(CallError::Unreachable {
            target: ObjectId::from_u128(1),
            reason: "gone".into(),
        });
        assert!(unreachable.to_string().starts_with("unreachable: "));
        let refused = MigrateError::Refused(CallError::NodeStopped);
        assert!(!matches!(refused, MigrateError::Unreachable(_)));
    }
}
