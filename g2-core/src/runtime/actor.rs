//! The per-object actor: one task per hosted object runs its calls one at a
//! time, in arrival order (the paper's piecewise determinism made true by
//! construction), consults the fault policy around each, and hands over a
//! snapshot when the object migrates.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, trace, warn};

use crate::fault::{Admission, FaultPolicy, IncomingCall};
use crate::id::{ObjectId, Peer};
use crate::runtime::context::{CURRENT, CallContext};
use crate::runtime::node::{Node, NodeInner};
use crate::runtime::object::Hosted;
use crate::runtime::routing::call_request;
use crate::sync::lock;
use crate::wire::{RemoteError, Request};

/// An object with calls queued lets other tasks run after this many calls in a
/// row: its replies, written to the transport as each call ends, go out while it
/// works through the rest (without this they left in one burst at the end, and
/// with client and volunteer on different CPUs each side waited for the other's
/// whole burst).
const YIELD_EVERY: usize = 16;

/// A call queued for an object.
pub(super) struct Invocation {
    /// Who waits for the reply (none for a call replayed after a restart).
    pub(super) origin: Option<(Peer, u64)>,
    pub(super) call: IncomingCall,
}

/// What an object's actor receives, in arrival order.
pub(super) enum InboxMsg {
    Call(Invocation),
    /// Stop after the calls before this one, hand over a snapshot, then wait for
    /// the verdict: forward what queued meanwhile to the new host, or carry on.
    Migrate {
        snapshot: oneshot::Sender<Snapshot>,
        verdict: oneshot::Receiver<Verdict>,
    },
}

/// An object's state as its actor handed it over for a transfer.
pub(super) struct Snapshot {
    pub(super) state: Result<Vec<u8>, String>,
    pub(super) next_call_seq: u64,
}

/// How a transfer ended, as the frozen actor hears it.
pub(super) enum Verdict {
    /// The new host acknowledged: forward the queued calls there, say so, stop.
    Moved(Peer, oneshot::Sender<()>),
    /// The transfer failed definitely: carry on here.
    Stay,
}

/// Runs object `id`'s calls from `inbox` until the object leaves or the node
/// stops; with a `gate`, only once the node has joined.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
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
    // calls to run before the inbox's: a replay after the object's worker failed
    let mut front: VecDeque<Invocation> = VecDeque::new();
    let mut recoveries_in_a_row = 0u32;
    loop {
        let msg = match front.pop_front() {
            Some(inv) => InboxMsg::Call(inv),
            None => match inbox.recv().await {
                Some(msg) => msg,
                None => break,
            },
        };
        let Some(mut inner) = node.upgrade() else {
            return;
        };
        let inv = match msg {
            InboxMsg::Call(inv) => inv,
            InboxMsg::Migrate { snapshot, verdict } => {
                let _ = snapshot.send(Snapshot {
                    state: obj.snapshot().await,
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
        // the volunteer's owner needs the machine: the call waits
        if *inner.paused.borrow() {
            let mut paused = inner.paused.subscribe();
            drop(inner);
            let _ = paused.wait_for(|p| !*p).await;
            let Some(again) = node.upgrade() else { return };
            inner = again;
        }
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
        if let (true, Err(RemoteError::WorkerFailed(why))) = (ran, &outcome) {
            // the worker process running the object's code died with it
            if let Some(p) = &policy
                && recoveries_in_a_row < MAX_RECOVERIES
            {
                match recover_in_new_worker(&inner, id, type_name, p).await {
                    Ok((fresh, next_seq, replay)) => {
                        warn!(object = %id, replayed = replay.len(), "its worker failed ({why}); recovered from its checkpoint in a new one");
                        recoveries_in_a_row += 1;
                        obj = fresh;
                        seq.store(next_seq, Ordering::Relaxed);
                        // the logged calls since the checkpoint (this one among
                        // them) run again in their order; this one's caller
                        // then gets the kept result
                        let mut again: VecDeque<Invocation> = replay
                            .into_iter()
                            .map(|call| Invocation { origin: None, call })
                            .collect();
                        again.push_back(inv);
                        again.append(&mut front);
                        front = again;
                        continue;
                    }
                    Err(e) => {
                        warn!(object = %id, "its worker failed ({why}) and it could not be recovered: {e}")
                    }
                }
            }
            warn!(object = %id, "object lost: its worker process failed ({why})");
            if let Some((origin, request_id)) = inv.origin.as_ref() {
                inner.reply(origin, *request_id, outcome).await;
            }
            lose_object(&inner, id, &mut inbox, front).await;
            return;
        }
        if ran {
            recoveries_in_a_row = 0;
        }
        if let Some(p) = policy.as_ref().filter(|_| ran) {
            match p.after_call(id, call, &outcome).await {
                Ok(true) => match obj.snapshot().await {
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

/// Recoveries of an object in a row (its worker failing again each time)
/// before it is given up as lost.
const MAX_RECOVERIES: u32 = 3;

/// The object again, in a new worker, from its policy's checkpoint: its
/// state, its outgoing-call counter and the calls to replay.
async fn recover_in_new_worker(
    inner: &Arc<NodeInner>,
    id: ObjectId,
    type_name: &str,
    policy: &Arc<dyn FaultPolicy>,
) -> Result<(Box<dyn Hosted>, u64, Vec<IncomingCall>), String> {
    let rec = policy
        .recover(id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("its policy keeps no checkpoint of it")?;
    let entry = inner
        .types
        .get(type_name, inner.me.id)
        .await
        .map_err(|e| e.to_string())?;
    let obj = entry.restore(id, &rec.state).await?;
    Ok((obj, rec.next_call_seq, rec.replay))
}

/// Forgets an object that died here; its queued calls, and later ones, get
/// `ObjectLost`.
async fn lose_object(
    inner: &Arc<NodeInner>,
    id: ObjectId,
    inbox: &mut mpsc::UnboundedReceiver<InboxMsg>,
    front: VecDeque<Invocation>,
) {
    let epoch = lock(&inner.catalog).slot(&id).map(|s| s.epoch);
    if let Some(epoch) = epoch {
        lock(&inner.catalog).lose(id, epoch);
    }
    inbox.close();
    let mut queued: Vec<Invocation> = front.into_iter().collect();
    while let Some(msg) = inbox.recv().await {
        if let InboxMsg::Call(inv) = msg {
            queued.push(inv);
        }
    }
    for inv in queued {
        if let Some((origin, request_id)) = inv.origin.as_ref() {
            inner
                .reply(origin, *request_id, Err(RemoteError::ObjectLost(id)))
                .await;
        }
    }
}

impl NodeInner {
    /// Queues an arriving call for its object (after the object's policy logged
    /// it, as one step); a call whose object moved on meanwhile follows it.
    pub(super) async fn queue_call(
        self: &Arc<Self>,
        request_id: u64,
        origin: Peer,
        target: ObjectId,
        hops: u8,
        call: IncomingCall,
    ) {
        let oneway = call.oneway;
        let arrival = lock(&self.catalog)
            .slot(&target)
            .and_then(|slot| Some((slot.arrival.clone()?, slot.epoch)));
        // set when the object moved on while its policy looked at the call
        let mut moved_meanwhile = false;
        // under a policy: log the arrival, then queue, as one step
        let _turn = match &arrival {
            Some(((policy, order), epoch)) => {
                let turn = order.clone().lock_owned().await;
                match policy.on_arrival(target, &call).await {
                    Ok(Admission::Run) => Some(turn),
                    Ok(Admission::Answer(outcome)) => {
                        let outcome = if oneway { Ok(Vec::new()) } else { outcome };
                        self.reply(&origin, request_id, outcome).await;
                        return;
                    }
                    Ok(Admission::Drop) => {
                        if oneway {
                            self.reply(&origin, request_id, Ok(Vec::new())).await;
                        }
                        return;
                    }
                    Err(e) if !lock(&self.catalog).holds(&target, *epoch) => {
                        // its records here went with its departure: the new
                        // host's policy looks at the call instead
                        debug!(object = %target, call = %call.call_id, "object moved on while its policy looked at an arriving call ({e}); following it");
                        moved_meanwhile = true;
                        None
                    }
                    Err(e) => {
                        warn!(object = %target, call = %call.call_id, "fault policy could not log an arriving call: {e}");
                        let err = RemoteError::PolicyRefused {
                            policy: policy.name(),
                            node: self.me.id,
                            reason: e.to_string(),
                        };
                        self.reply(&origin, request_id, Err(err)).await;
                        return;
                    }
                }
            }
            None => None,
        };
        let inv = Invocation {
            origin: Some((origin.clone(), request_id)),
            call,
        };
        // the call back if it could not be queued
        let sent: Result<(), Option<IncomingCall>> = match lock(&self.catalog).slot(&target) {
            _ if moved_meanwhile => Err(Some(inv.call)),
            Some(slot) => slot.inbox.send(InboxMsg::Call(inv)).map_err(|e| match e.0 {
                InboxMsg::Call(inv) => Some(inv.call),
                InboxMsg::Migrate { .. } => None,
            }),
            None => Err(Some(inv.call)),
        };
        trace!(request = request_id, origin = %origin.id, %target, queued = sent.is_ok(), "call arrived");
        match sent {
            Ok(()) if oneway => {
                // one-way: acknowledge acceptance now; the call runs in turn
                self.reply(&origin, request_id, Ok(Vec::new())).await;
            }
            Ok(()) => {}
            Err(Some(call))
                if lock(&self.catalog).has_forwarding(&target)
                    || (moved_meanwhile && lock(&self.catalog).is_hosted(&target)) =>
            {
                // it moved on while this request was on its way in: follow it
                let req = Request {
                    id: request_id,
                    origin,
                    target,
                    hops,
                    via_record: false,
                    past_forwarding: false,
                    kind: call_request(call),
                };
                Box::pin(self.dispatch(req)).await;
            }
            Err(_) => {
                let err = if lock(&self.catalog).is_lost(&target) {
                    RemoteError::ObjectLost(target)
                } else {
                    RemoteError::ObjectNotFound(target)
                };
                self.reply(&origin, request_id, Err(err)).await;
            }
        }
    }
}
