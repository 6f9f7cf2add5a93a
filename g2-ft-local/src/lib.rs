//! Fault-tolerance scenario 2 of the G2:P2P paper (§4.2): each object is
//! checkpointed on its volunteer's disk and every call it receives is logged
//! before it runs; after a crash the volunteer restarts with the same data dir
//! (same key, same node id), loads each checkpoint and replays the logged calls
//! in their original order. Calls the object makes are logged with their
//! results, so a replay answers them from the log instead of sending them again.
//!
//! What is kept, per object, in the node's [`Store`] (RocksDB on a volunteer):
//!
//! - a checkpoint (state, type, outgoing-call counter) when the object is
//!   created or migrates in, then every `checkpoint_every_calls` calls or
//!   `checkpoint_every` of time, whichever comes first;
//! - the log of incoming calls since the checkpoint, written when a call
//!   *arrives* (before a one-way caller is told it was accepted), so the log order
//!   is the order the calls run in;
//! - the log of outgoing calls since the checkpoint, with their results;
//! - the results of the last `results_kept` calls, so that a call its caller
//!   sends again (its reply was lost in the crash) is answered, not run twice.
//!
//! Every record carries a blake3 checksum: a damaged checkpoint or log record
//! makes [`FaultPolicy::recover`] fail with [`PolicyError::Corrupt`], and the
//! runtime then reports the object lost rather than rebuild it wrong.
//!
//! [`Durability`] says what a write survives before the call goes on: `process`
//! (the default: the record is in RocksDB's write-ahead log, which survives the
//! process being killed) or `machine` (the log is fsynced, group-committed
//! across concurrent writers: survives power loss).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use g2_core::sync::lock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use g2_core::fault::{
    Admission, FaultPolicy, IncomingCall, OutgoingCall, OutgoingDecision, PolicyError, Recovery,
};
use g2_core::store::{Space, Store, WriteBatch};
use g2_core::{CallId, ObjectId, Peer, RemoteError};
use serde::{Deserialize, Serialize};

/// The policy name of `local` with [`Durability::Process`].
pub const POLICY_LOCAL: &str = "local";
/// The policy name of `local` with [`Durability::Machine`].
pub const POLICY_LOCAL_MACHINE: &str = "local-machine";

/// What a logged record survives once written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// Written to the store's log without fsync: survives the process being
    /// killed, not a machine crash.
    #[default]
    Process,
    /// Fsynced (group commit): survives a machine crash or power loss.
    Machine,
}

impl Durability {
    /// The policy name that carries this durability.
    pub fn policy_name(self) -> &'static str {
        match self {
            Durability::Process => POLICY_LOCAL,
            Durability::Machine => POLICY_LOCAL_MACHINE,
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "process" => Ok(Durability::Process),
            "machine" => Ok(Durability::Machine),
            other => Err(format!(
                "unknown durability {other:?} (expected process or machine)"
            )),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::Process => "process",
            Durability::Machine => "machine",
        })
    }
}

/// How often to checkpoint and how much to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalConfig {
    /// Checkpoint after this many calls since the last checkpoint (at least 1).
    pub checkpoint_every_calls: u32,
    /// Checkpoint at the first call this long after the last checkpoint.
    pub checkpoint_every: Duration,
    /// What a write survives.
    pub durability: Durability,
    /// Results kept per object for answering calls sent again.
    pub results_kept: usize,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            checkpoint_every_calls: 100,
            checkpoint_every: Duration::from_secs(10),
            durability: Durability::Process,
            results_kept: 1024,
        }
    }
}

/// Scenario 2: checkpoints and message logs in the node's store.
pub struct LocalPolicy {
    store: Arc<dyn Store>,
    cfg: LocalConfig,
    objects: Mutex<HashMap<ObjectId, Arc<Mutex<ObjState>>>>,
}

impl std::fmt::Debug for LocalPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPolicy")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// What the policy remembers of one object between store writes.
#[derive(Default)]
struct ObjState {
    /// The log index of the next arriving call.
    next_arrival: u64,
    /// Calls logged on arrival that have not run yet, with their log index.
    pending: HashMap<CallId, u64>,
    /// The highest log index that ran (the log is truncated up to it at a checkpoint).
    last_done: Option<u64>,
    /// Kept results: call -> result index, and the indices oldest first.
    results: HashMap<CallId, u64>,
    result_order: VecDeque<(u64, CallId)>,
    next_result: u64,
    since_checkpoint: u32,
    last_checkpoint: Option<Instant>,
    /// The lowest incoming-log index that may still be in the store.
    in_floor: u64,
    /// The lowest outgoing-call sequence number that may still be in the store.
    out_floor: u64,
    /// After a restart: the logged outcomes of the outgoing calls the replay will
    /// make again, by sequence number. Read once at recovery, so that an outgoing
    /// call never costs a store read.
    replay_outgoing: HashMap<u64, OutcomeRec>,
}

// ---- records -------------------------------------------------------------

const RECORD_VERSION: u8 = 1;
/// Batches larger than this are written off the async workers.
const OFFLOAD_BYTES: usize = 32 * 1024;
const SUM_LEN: usize = 16;
/// Log truncations spanning more keys than this use one range deletion; shorter
/// ones delete key by key (range tombstones make every later read of the
/// memtable slower).
const POINT_DELETES_MAX: u64 = 4096;

#[derive(Serialize, Deserialize)]
struct CheckpointRec {
    policy: String,
    type_name: String,
    #[serde(with = "serde_bytes")]
    state: Vec<u8>,
    next_call_seq: u64,
    next_arrival: u64,
}

#[derive(Serialize, Deserialize)]
struct ArrivalRec {
    call_id: CallId,
    method: String,
    #[serde(with = "serde_bytes")]
    args: Vec<u8>,
    oneway: bool,
}

/// What travels with a migrating object (`export` / `import`).
#[derive(Serialize, Deserialize)]
struct Carried {
    kept: Vec<OutcomeRec>,
}

#[derive(Serialize, Deserialize)]
struct OutcomeRec {
    call_id: CallId,
    outcome: Result<serde_bytes::ByteBuf, RemoteError>,
}

fn seal<T: Serialize>(rec: &T) -> Result<Vec<u8>, PolicyError> {
    let payload = g2_core::wire::to_cbor(rec).map_err(|e| PolicyError::Refused(e.to_string()))?;
    let mut out = Vec::with_capacity(1 + SUM_LEN + payload.len());
    out.push(RECORD_VERSION);
    out.extend_from_slice(&blake3::hash(&payload).as_bytes()[..SUM_LEN]);
    out.extend_from_slice(&payload);
    Ok(out)
}

fn open<T: serde::de::DeserializeOwned>(
    object: ObjectId,
    what: &str,
    bytes: &[u8],
) -> Result<T, PolicyError> {
    let corrupt = |reason: String| PolicyError::Corrupt {
        object,
        reason: format!("{what}: {reason}"),
    };
    if bytes.len() < 1 + SUM_LEN {
        return Err(corrupt(format!(
            "record of {} bytes is truncated",
            bytes.len()
        )));
    }
    if bytes[0] != RECORD_VERSION {
        return Err(corrupt(format!("unknown record version {}", bytes[0])));
    }
    let (sum, payload) = bytes[1..].split_at(SUM_LEN);
    if blake3::hash(payload).as_bytes()[..SUM_LEN] != *sum {
        return Err(corrupt("checksum mismatch".into()));
    }
    g2_core::wire::from_cbor(payload).map_err(corrupt)
}

// ---- keys ----------------------------------------------------------------

fn obj_key(object: ObjectId) -> [u8; 16] {
    object.as_u128().to_be_bytes()
}

fn indexed(object: ObjectId, tag: u8, index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.extend_from_slice(&obj_key(object));
    k.push(tag);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

fn tagged(object: ObjectId, tag: u8) -> Vec<u8> {
    let mut k = obj_key(object).to_vec();
    k.push(tag);
    k
}

const INCOMING: u8 = b'i';
const OUTGOING: u8 = b'o';
const RESULT: u8 = b'r';
/// The transfer an object was on its way out with (one per object).
const DEPARTING: u8 = b'd';

/// Where an object was being sent when the mark was written.
#[derive(Serialize, Deserialize)]
struct DepartingRec {
    to: Peer,
    transfer: u64,
}

/// Deletes the log records of `object` under `tag` with indices from `*floor`
/// (the lowest that may still be stored) up to `to`, and raises the floor.
fn truncate(b: &mut WriteBatch, object: ObjectId, tag: u8, floor: &mut u64, to: u64) {
    let from = *floor;
    if to <= from {
        return;
    }
    *floor = to;
    if to - from > POINT_DELETES_MAX {
        b.delete_range(
            Space::Log,
            indexed(object, tag, from),
            indexed(object, tag, to),
        );
    } else {
        for index in from..to {
            b.delete(Space::Log, indexed(object, tag, index));
        }
    }
}

fn key_index(key: &[u8]) -> Option<u64> {
    key.get(17..25)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

impl LocalPolicy {
    /// The policy over `store` (a node's store: `RocksStore` on a volunteer).
    pub fn new(store: Arc<dyn Store>, cfg: LocalConfig) -> Self {
        Self {
            store,
            cfg: LocalConfig {
                checkpoint_every_calls: cfg.checkpoint_every_calls.max(1),
                ..cfg
            },
            objects: Mutex::new(HashMap::new()),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &LocalConfig {
        &self.cfg
    }

    fn batch(&self) -> WriteBatch {
        match self.cfg.durability {
            Durability::Process => WriteBatch::new(),
            Durability::Machine => WriteBatch::synced(),
        }
    }

    /// Writes a batch. A synced or large one (a checkpoint) is written on a
    /// blocking thread so that it never holds up the node's async workers; a
    /// small unsynced one costs microseconds and is written in place.
    async fn write(&self, b: WriteBatch) -> Result<(), PolicyError> {
        let size: usize = b
            .ops
            .iter()
            .map(|op| match op {
                g2_core::store::BatchOp::Put { key, value, .. } => key.len() + value.len(),
                _ => 32,
            })
            .sum();
        if (b.sync || size > OFFLOAD_BYTES) && tokio::runtime::Handle::try_current().is_ok() {
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || store.write(b))
                .await
                .map_err(|e| PolicyError::Refused(format!("store write task failed: {e}")))??;
        } else {
            self.store.write(b)?;
        }
        Ok(())
    }

    fn state(&self, object: ObjectId) -> Arc<Mutex<ObjState>> {
        lock(&self.objects).entry(object).or_default().clone()
    }

    fn stored_result(
        &self,
        object: ObjectId,
        index: u64,
    ) -> Result<Result<Vec<u8>, RemoteError>, PolicyError> {
        let bytes = self
            .store
            .get(Space::Results, &indexed(object, RESULT, index))?
            .ok_or_else(|| PolicyError::Corrupt {
                object,
                reason: format!("result {index} is missing"),
            })?;
        let rec: OutcomeRec = open(object, "kept result", &bytes)?;
        Ok(rec.outcome.map(|b| b.into_vec()))
    }

    /// Every record of `object` under `tag` in `space`, with its index, checked.
    fn records<T: serde::de::DeserializeOwned>(
        &self,
        object: ObjectId,
        space: Space,
        tag: u8,
        what: &str,
    ) -> Result<Vec<(u64, T)>, PolicyError> {
        self.store
            .scan_prefix(space, &tagged(object, tag))?
            .into_iter()
            .map(|(key, value)| {
                let index = key_index(&key).ok_or_else(|| PolicyError::Corrupt {
                    object,
                    reason: format!("malformed key of a {what}"),
                })?;
                Ok((index, open(object, &format!("{what} {index}"), &value)?))
            })
            .collect()
    }

    fn delete_all(&self, object: ObjectId, b: &mut WriteBatch) {
        b.delete(Space::Checkpoints, obj_key(object).to_vec());
        b.delete_prefix(Space::Log, obj_key(object).to_vec());
        b.delete_prefix(Space::Results, obj_key(object).to_vec());
    }
}

#[async_trait]
impl FaultPolicy for LocalPolicy {
    fn name(&self) -> String {
        self.cfg.durability.policy_name().to_string()
    }

    async fn on_activate(
        &self,
        object: ObjectId,
        type_name: &str,
        state: &[u8],
        next_call_seq: u64,
    ) -> Result<(), PolicyError> {
        let rec = CheckpointRec {
            policy: self.name(),
            type_name: type_name.to_string(),
            state: state.to_vec(),
            next_call_seq,
            next_arrival: 0,
        };
        let mut b = self.batch();
        // records of an earlier stay here are void
        self.delete_all(object, &mut b);
        b.put(Space::Checkpoints, obj_key(object).to_vec(), seal(&rec)?);
        self.write(b).await?;
        let st = self.state(object);
        let mut st = lock(&st);
        *st = ObjState {
            last_checkpoint: Some(Instant::now()),
            out_floor: next_call_seq,
            ..ObjState::default()
        };
        Ok(())
    }

    async fn on_arrival(
        &self,
        object: ObjectId,
        call: &IncomingCall,
    ) -> Result<Admission, PolicyError> {
        let state = self.state(object);
        let index = {
            let mut st = lock(&state);
            if let Some(&index) = st.results.get(&call.call_id) {
                drop(st);
                return Ok(Admission::Answer(self.stored_result(object, index)?));
            }
            if st.pending.contains_key(&call.call_id) {
                // a copy of a call already queued: a one-way call is simply accepted
                // again; a waiting caller is answered when the original has run
                return Ok(if call.oneway {
                    Admission::Drop
                } else {
                    Admission::Run
                });
            }
            let index = st.next_arrival;
            st.next_arrival += 1;
            st.pending.insert(call.call_id, index);
            index
        };
        let rec = ArrivalRec {
            call_id: call.call_id,
            method: call.method.clone(),
            args: call.args.clone(),
            oneway: call.oneway,
        };
        let mut b = self.batch();
        b.put(Space::Log, indexed(object, INCOMING, index), seal(&rec)?);
        if let Err(e) = self.write(b).await {
            lock(&state).pending.remove(&call.call_id);
            return Err(e);
        }
        Ok(Admission::Run)
    }

    async fn before_call(
        &self,
        object: ObjectId,
        call: &IncomingCall,
    ) -> Result<Admission, PolicyError> {
        let st = self.state(object);
        let st = lock(&st);
        if st.pending.contains_key(&call.call_id) {
            // the logged original (or, after a restart, its replay: it runs again
            // even if it ran before the crash, since the checkpoint lacks it)
            return Ok(Admission::Run);
        }
        match st.results.get(&call.call_id) {
            // a copy that queued behind its original
            Some(&index) => Ok(Admission::Answer(self.stored_result(object, index)?)),
            None => Ok(Admission::Run),
        }
    }

    async fn after_call(
        &self,
        object: ObjectId,
        call: &IncomingCall,
        result: &Result<Vec<u8>, RemoteError>,
    ) -> Result<bool, PolicyError> {
        let state = self.state(object);
        // a replayed call whose result was kept before the crash keeps it
        let fresh = {
            let mut st = lock(&state);
            (!st.results.contains_key(&call.call_id)).then(|| {
                st.next_result += 1;
                st.next_result - 1
            })
        };
        if let Some(index) = fresh {
            let rec = OutcomeRec {
                call_id: call.call_id,
                outcome: result.clone().map(serde_bytes::ByteBuf::from),
            };
            let mut b = self.batch();
            b.put(Space::Results, indexed(object, RESULT, index), seal(&rec)?);
            self.write(b).await?;
        }
        let mut st = lock(&state);
        if let Some(index) = fresh {
            st.results.insert(call.call_id, index);
            st.result_order.push_back((index, call.call_id));
        }
        if let Some(done) = st.pending.remove(&call.call_id) {
            st.last_done = Some(st.last_done.map_or(done, |d| d.max(done)));
        }
        st.since_checkpoint += 1;
        let due = st.since_checkpoint >= self.cfg.checkpoint_every_calls
            || st
                .last_checkpoint
                .is_none_or(|t| t.elapsed() >= self.cfg.checkpoint_every);
        Ok(due)
    }

    async fn checkpoint(
        &self,
        object: ObjectId,
        type_name: &str,
        state: &[u8],
        next_call_seq: u64,
    ) -> Result<(), PolicyError> {
        let shared = self.state(object);
        let (b, dropped) = {
            let mut st = lock(&shared);
            let rec = CheckpointRec {
                policy: self.name(),
                type_name: type_name.to_string(),
                state: state.to_vec(),
                next_call_seq,
                next_arrival: st.next_arrival,
            };
            let mut b = self.batch();
            b.put(Space::Checkpoints, obj_key(object).to_vec(), seal(&rec)?);
            // the calls that ran are in the state now; the ones still queued stay logged
            if let Some(done) = st.last_done {
                truncate(&mut b, object, INCOMING, &mut st.in_floor, done + 1);
            }
            truncate(&mut b, object, OUTGOING, &mut st.out_floor, next_call_seq);
            let mut dropped = Vec::new();
            while st.result_order.len() > self.cfg.results_kept {
                if let Some((index, call)) = st.result_order.pop_front() {
                    dropped.push(call);
                    b.delete(Space::Results, indexed(object, RESULT, index));
                }
            }
            (b, dropped)
        };
        self.write(b).await?;
        let mut st = lock(&shared);
        for call in dropped {
            st.results.remove(&call);
        }
        st.since_checkpoint = 0;
        st.last_checkpoint = Some(Instant::now());
        Ok(())
    }

    async fn before_outgoing(
        &self,
        caller: ObjectId,
        call: &OutgoingCall,
    ) -> Result<OutgoingDecision, PolicyError> {
        let logged = lock(&self.state(caller))
            .replay_outgoing
            .remove(&call.call_id.seq);
        match logged {
            Some(rec) => {
                if rec.call_id != call.call_id {
                    return Err(PolicyError::Corrupt {
                        object: caller,
                        reason: format!(
                            "outgoing-call record {} belongs to call {}",
                            call.call_id, rec.call_id
                        ),
                    });
                }
                Ok(OutgoingDecision::Answer(rec.outcome.map(|b| b.into_vec())))
            }
            None => Ok(OutgoingDecision::Send),
        }
    }

    async fn after_outgoing(
        &self,
        caller: ObjectId,
        call_id: CallId,
        result: &Result<Vec<u8>, RemoteError>,
    ) -> Result<(), PolicyError> {
        let rec = OutcomeRec {
            call_id,
            outcome: result.clone().map(serde_bytes::ByteBuf::from),
        };
        let mut b = self.batch();
        b.put(
            Space::Log,
            indexed(caller, OUTGOING, call_id.seq),
            seal(&rec)?,
        );
        self.write(b).await
    }

    async fn held_objects(&self) -> Result<Vec<ObjectId>, PolicyError> {
        let mut out = Vec::new();
        for (key, value) in self.store.scan_prefix(Space::Checkpoints, b"")? {
            let Ok(raw) = <[u8; 16]>::try_from(key.as_slice()) else {
                tracing::warn!(
                    "ignoring a checkpoint key of {} bytes (not an object id)",
                    key.len()
                );
                continue;
            };
            let object = ObjectId::from_u128(u128::from_be_bytes(raw));
            match open::<CheckpointRec>(object, "checkpoint", &value) {
                Ok(rec) if rec.policy != self.name() => {} // another policy's object
                // a damaged checkpoint is reported by recover()
                _ => out.push(object),
            }
        }
        Ok(out)
    }

    async fn recover(&self, object: ObjectId) -> Result<Option<Recovery>, PolicyError> {
        let Some(bytes) = self.store.get(Space::Checkpoints, &obj_key(object))? else {
            return Ok(None);
        };
        let ckpt: CheckpointRec = open(object, "checkpoint", &bytes)?;
        let mut st = ObjState {
            next_arrival: ckpt.next_arrival,
            last_checkpoint: Some(Instant::now()),
            in_floor: ckpt.next_arrival,
            out_floor: ckpt.next_call_seq,
            ..ObjState::default()
        };
        let mut replay = Vec::new();
        for (index, rec) in
            self.records::<ArrivalRec>(object, Space::Log, INCOMING, "logged call")?
        {
            st.pending.insert(rec.call_id, index);
            st.next_arrival = st.next_arrival.max(index + 1);
            st.in_floor = st.in_floor.min(index);
            replay.push(IncomingCall {
                call_id: rec.call_id,
                method: rec.method,
                args: rec.args,
                oneway: rec.oneway,
            });
        }
        // checked now, so that a damaged one makes the object lost, not a replay wrong
        for (seq, rec) in
            self.records::<OutcomeRec>(object, Space::Log, OUTGOING, "outgoing-call record")?
        {
            st.out_floor = st.out_floor.min(seq);
            st.replay_outgoing.insert(seq, rec);
        }
        for (index, rec) in
            self.records::<OutcomeRec>(object, Space::Results, RESULT, "kept result")?
        {
            st.results.insert(rec.call_id, index);
            st.result_order.push_back((index, rec.call_id));
            st.next_result = st.next_result.max(index + 1);
        }
        *lock(&self.state(object)) = st;
        Ok(Some(Recovery {
            type_name: ckpt.type_name,
            state: ckpt.state,
            next_call_seq: ckpt.next_call_seq,
            replay,
        }))
    }

    async fn on_departed(&self, object: ObjectId) -> Result<(), PolicyError> {
        let mut b = self.batch();
        self.delete_all(object, &mut b);
        self.write(b).await?;
        lock(&self.objects).remove(&object);
        Ok(())
    }

    /// Marks the departure durably (always synced: a restart must not run a
    /// copy of an object that a new host may already run).
    async fn on_departing(
        &self,
        object: ObjectId,
        to: Peer,
        transfer: u64,
    ) -> Result<(), PolicyError> {
        let mut b = WriteBatch::synced();
        b.put(
            Space::Log,
            tagged(object, DEPARTING),
            seal(&DepartingRec { to, transfer })?,
        );
        self.write(b).await
    }

    async fn on_stayed(&self, object: ObjectId) -> Result<(), PolicyError> {
        let mut b = self.batch();
        b.delete(Space::Log, tagged(object, DEPARTING));
        self.write(b).await
    }

    async fn departing(&self, object: ObjectId) -> Result<Option<(Peer, u64)>, PolicyError> {
        let Some(bytes) = self.store.get(Space::Log, &tagged(object, DEPARTING))? else {
            return Ok(None);
        };
        let rec: DepartingRec = open(object, "departure mark", &bytes)?;
        Ok(Some((rec.to, rec.transfer)))
    }

    /// The kept results (at most `results_kept`, newest last), sealed: a call
    /// sent again after the object moved is answered from them at the new host.
    async fn export(&self, object: ObjectId) -> Result<Vec<u8>, PolicyError> {
        // A call still pending here travels itself (queued behind the transfer,
        // or a logged call a restart holds): its result stays behind, so that
        // the new host runs it rather than answer it from a result the state it
        // receives does not include.
        let order: Vec<(u64, CallId)> = {
            let st = self.state(object);
            let st = lock(&st);
            let skip = st.result_order.len().saturating_sub(self.cfg.results_kept);
            st.result_order
                .iter()
                .skip(skip)
                .filter(|(_, call_id)| !st.pending.contains_key(call_id))
                .copied()
                .collect()
        };
        let mut kept = Vec::with_capacity(order.len());
        for (index, call_id) in order {
            let outcome = self.stored_result(object, index)?;
            kept.push(OutcomeRec {
                call_id,
                outcome: outcome.map(serde_bytes::ByteBuf::from),
            });
        }
        seal(&Carried { kept })
    }

    async fn import(&self, object: ObjectId, carried: &[u8]) -> Result<(), PolicyError> {
        if carried.is_empty() {
            return Ok(());
        }
        let Carried { kept } = open(object, "carried results", carried)?;
        let shared = self.state(object);
        let mut b = self.batch();
        let mut added = Vec::with_capacity(kept.len());
        {
            let mut st = lock(&shared);
            for rec in kept {
                if st.results.contains_key(&rec.call_id) {
                    continue;
                }
                let index = st.next_result;
                st.next_result += 1;
                b.put(Space::Results, indexed(object, RESULT, index), seal(&rec)?);
                added.push((index, rec.call_id));
            }
        }
        self.write(b).await?;
        let mut st = lock(&shared);
        for (index, call_id) in added {
            st.results.insert(call_id, index);
            st.result_order.push_back((index, call_id));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
