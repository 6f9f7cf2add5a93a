//! The [`FaultPolicy`] strategy: an interceptor around invocation (think tower
//! `Layer`, or `retry::Policy`). The runtime asks it at fixed points and acts on the
//! answer; a policy never reaches into the runtime.
//!
//! Hook points, in the order the runtime calls them for one object:
//!
//! 1. [`FaultPolicy::on_activate`] when the object is created or migrates in
//!    (first checkpoint);
//! 2. for each incoming call, [`FaultPolicy::on_arrival`] as it reaches the node,
//!    before it is queued and before a one-way caller is told it was accepted (log
//!    it, answer a duplicate from the kept results, or drop a duplicate one-way
//!    call); then, when its turn comes, [`FaultPolicy::before_call`] (run it, or
//!    answer a duplicate that queued behind its original), and after a call that
//!    ran, [`FaultPolicy::after_call`] with the result, which says whether to
//!    [`FaultPolicy::checkpoint`] now;
//! 3. for each call the object makes, [`FaultPolicy::before_outgoing`] (send it, or
//!    during replay answer it from the log) and [`FaultPolicy::after_outgoing`];
//! 4. when a node starts, [`FaultPolicy::held_objects`] and
//!    [`FaultPolicy::recover`] for each (checkpoint + calls to replay); replayed
//!    calls then go through `before_call`/`after_call` like any other;
//! 5. [`FaultPolicy::on_departed`] when the object migrates away.
//!
//! A policy that keeps records on other nodes (replicated fault tolerance)
//! gets, at node start, a [`PolicyPeers`] handle ([`FaultPolicy::attach`]):
//! this node's replica sets, and requests to the same policy on a peer, which
//! it answers in [`FaultPolicy::on_message`]. It hears of neighbours that fail
//! ([`FaultPolicy::on_peer_failed`]) and of changes to the ring around it
//! ([`FaultPolicy::on_neighbours_changed`]). Policies that keep everything
//! local ignore all four.
//!
//! The policy is chosen by the client per run and travels with each object: a
//! node looks it up by [`FaultPolicy::name`]. The name `none` (scenario 1,
//! graceful migration only) needs no policy object: the runtime skips every hook.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::id::{CallId, Key, NodeId, ObjectId, Peer};
use crate::wire::RemoteError;

/// What a policy may ask of its node's network (see the module docs).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait PolicyPeers: Send + Sync + 'static {
    /// This node.
    fn me(&self) -> Peer;
    /// The `n` nodes nearest `key` on the ring as this node sees it (the
    /// replica set: Pastry's leaf set, Chord's successors), nearest first.
    fn replica_set(&self, key: Key, n: usize) -> Vec<Peer>;
    /// Sends `body` to the same policy on `to` (straight to it, not routed)
    /// and waits at most `timeout` for its [`FaultPolicy::on_message`] answer.
    async fn request(
        &self,
        to: &Peer,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, crate::CallError>;
}

/// The name of scenario 1, which every node serves.
pub const POLICY_NONE: &str = "none";

/// A call as the policy sees it before and after it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingCall {
    /// The call's id.
    pub call_id: CallId,
    /// The method.
    pub method: String,
    /// The CBOR-encoded arguments.
    pub args: Vec<u8>,
    /// Whether the caller waits for the result.
    pub oneway: bool,
}

/// A call an object is about to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingCall {
    /// The call's id.
    pub call_id: CallId,
    /// The target object.
    pub target: ObjectId,
    /// The method.
    pub method: String,
    /// The CBOR-encoded arguments.
    pub args: Vec<u8>,
    /// Whether the caller waits for the result.
    pub oneway: bool,
}

/// What to do with an incoming call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Run it.
    Run,
    /// It already ran: answer with this stored result, do not run it again.
    Answer(Result<Vec<u8>, RemoteError>),
    /// A duplicate of a one-way call already accepted: acknowledge it, do not
    /// queue it again.
    Drop,
}

/// What to do with an outgoing call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutgoingDecision {
    /// Send it.
    Send,
    /// Do not send it: its result is known (replay answers it from the log).
    Answer(Result<Vec<u8>, RemoteError>),
}

/// An object rebuilt by a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The registered type name.
    pub type_name: String,
    /// The checkpointed state.
    pub state: Vec<u8>,
    /// The object's outgoing-call counter at the checkpoint.
    pub next_call_seq: u64,
    /// Incoming calls after the checkpoint, in their original order.
    pub replay: Vec<IncomingCall>,
}

/// Why a policy could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The store failed.
    #[error("fault-tolerance store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// A checkpoint or log record failed its checksum.
    #[error("corrupt fault-tolerance record for {object}: {reason}")]
    Corrupt {
        /// The object.
        object: ObjectId,
        /// What is wrong.
        reason: String,
    },
    /// This node cannot serve the policy (say, no disk).
    #[error("policy cannot be served here: {0}")]
    Refused(String),
}

/// A fault-tolerance policy (see the module docs for when each hook runs).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait FaultPolicy: Send + Sync + 'static {
    /// The policy's name, carried by every object that uses it.
    fn name(&self) -> String;
    /// A new object (or one that migrated in) with its initial state and its
    /// outgoing-call counter.
    async fn on_activate(
        &self,
        object: ObjectId,
        type_name: &str,
        state: &[u8],
        next_call_seq: u64,
    ) -> Result<(), PolicyError>;
    /// A call reached the object's node; calls to one object arrive here in the
    /// order they will run. An error refuses the call (the caller may retry).
    async fn on_arrival(
        &self,
        object: ObjectId,
        call: &IncomingCall,
    ) -> Result<Admission, PolicyError>;
    /// Before an incoming call runs (its turn has come).
    async fn before_call(
        &self,
        object: ObjectId,
        call: &IncomingCall,
    ) -> Result<Admission, PolicyError>;
    /// After an incoming call ran; `true` asks the runtime to checkpoint now.
    async fn after_call(
        &self,
        object: ObjectId,
        call: &IncomingCall,
        result: &Result<Vec<u8>, RemoteError>,
    ) -> Result<bool, PolicyError>;
    /// Stores a checkpoint of `state`, with the object's outgoing-call counter.
    async fn checkpoint(
        &self,
        object: ObjectId,
        type_name: &str,
        state: &[u8],
        next_call_seq: u64,
    ) -> Result<(), PolicyError>;
    /// Before the object makes a call.
    async fn before_outgoing(
        &self,
        caller: ObjectId,
        call: &OutgoingCall,
    ) -> Result<OutgoingDecision, PolicyError>;
    /// After a call the object made has its result.
    async fn after_outgoing(
        &self,
        caller: ObjectId,
        call_id: CallId,
        result: &Result<Vec<u8>, RemoteError>,
    ) -> Result<(), PolicyError>;
    /// The objects this policy kept records of on this node (after a restart:
    /// the ones to recover).
    async fn held_objects(&self) -> Result<Vec<ObjectId>, PolicyError>;
    /// Rebuilds `object` from what the policy kept, if it kept anything.
    async fn recover(&self, object: ObjectId) -> Result<Option<Recovery>, PolicyError>;
    /// The object left this node (migrated away); its records here may go
    /// (the mark of [`Self::on_departing`] with them).
    async fn on_departed(&self, object: ObjectId) -> Result<(), PolicyError>;
    /// The object, frozen, is about to be sent to `to` as transfer `transfer`.
    /// A policy that keeps objects across restarts marks that durably: a node
    /// that restarts before the departure is confirmed (the new host may have
    /// installed the object already) sends the same transfer again instead of
    /// running a second copy ([`Self::departing`]). An error keeps the object
    /// here.
    async fn on_departing(
        &self,
        object: ObjectId,
        to: crate::id::Peer,
        transfer: u64,
    ) -> Result<(), PolicyError> {
        let _ = (object, to, transfer);
        Ok(())
    }
    /// The transfer marked by [`Self::on_departing`] did not happen: the object
    /// stays and runs here.
    async fn on_stayed(&self, object: ObjectId) -> Result<(), PolicyError> {
        let _ = object;
        Ok(())
    }
    /// For a recovered object: the transfer it was on its way out with when
    /// this node stopped, if any ([`Self::on_departing`]).
    async fn departing(
        &self,
        object: ObjectId,
    ) -> Result<Option<(crate::id::Peer, u64)>, PolicyError> {
        let _ = object;
        Ok(None)
    }
    /// What of the object's records must travel with it when it migrates (the
    /// results kept to answer duplicates, say: a call sent again after the
    /// object moved must not run twice). Called once the object is frozen for
    /// the transfer; the new host's policy gets it through [`Self::import`].
    async fn export(&self, object: ObjectId) -> Result<Vec<u8>, PolicyError> {
        let _ = object;
        Ok(Vec::new())
    }
    /// Takes in what [`Self::export`] gave at the previous host; called right
    /// after [`Self::on_activate`] for a migrated object. An error refuses the
    /// transfer (the object stays where it was).
    async fn import(&self, object: ObjectId, carried: &[u8]) -> Result<(), PolicyError> {
        let _ = (object, carried);
        Ok(())
    }
    /// At node start: how to reach the same policy on other nodes.
    fn attach(&self, peers: Arc<dyn PolicyPeers>) {
        let _ = peers;
    }
    /// A request from the same policy on `from` ([`PolicyPeers::request`]);
    /// the answer, or why none (the requester gets
    /// [`RemoteError::PolicyRefused`] with it).
    async fn on_message(&self, from: &Peer, body: &[u8]) -> Result<Vec<u8>, PolicyError> {
        let _ = (from, body);
        Err(PolicyError::Refused(format!(
            "policy {} takes no messages from peers",
            self.name()
        )))
    }
    /// The overlay declared neighbour `peer` failed.
    async fn on_peer_failed(&self, peer: NodeId) {
        let _ = peer;
    }
    /// The ring around this node changed (a join, a leave, a repair): replica
    /// sets may have too.
    async fn on_neighbours_changed(&self) {}
}
