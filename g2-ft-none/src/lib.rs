//! Fault-tolerance scenario 1 of the G2:P2P paper (§4.1): volunteers never crash;
//! they may leave at any time but migrate their objects first. Nothing is
//! checkpointed or logged, so the policy costs nothing; a crash loses the
//! volunteer's objects and their callers get `CallError::ObjectLost`.
//!
//! Migration itself is the runtime's job, so every hook here is a no-op. The
//! runtime also serves the policy name `none` without any policy object at all
//! (skipping the hooks); this type exists so that a run can name the policy
//! explicitly and so that tests can check the hooks are harmless.
//!
//! ```
//! use g2_core::FaultPolicy;
//! assert_eq!(g2_ft_none::NoFaultTolerance.name(), "none");
//! ```

use async_trait::async_trait;
use g2_core::fault::{
    Admission, FaultPolicy, IncomingCall, OutgoingCall, OutgoingDecision, POLICY_NONE, PolicyError,
    Recovery,
};
use g2_core::{CallId, ObjectId, RemoteError};

/// Scenario 1: graceful migration only; every hook does nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoFaultTolerance;

#[async_trait]
impl FaultPolicy for NoFaultTolerance {
    fn name(&self) -> String {
        POLICY_NONE.to_string()
    }
    async fn on_activate(&self, _: ObjectId, _: &str, _: &[u8], _: u64) -> Result<(), PolicyError> {
        Ok(())
    }
    async fn on_arrival(&self, _: ObjectId, _: &IncomingCall) -> Result<Admission, PolicyError> {
        Ok(Admission::Run)
    }
    async fn before_call(&self, _: ObjectId, _: &IncomingCall) -> Result<Admission, PolicyError> {
        Ok(Admission::Run)
    }
    async fn after_call(
        &self,
        _: ObjectId,
        _: &IncomingCall,
        _: &Result<Vec<u8>, RemoteError>,
    ) -> Result<bool, PolicyError> {
        Ok(false)
    }
    async fn checkpoint(&self, _: ObjectId, _: &str, _: &[u8], _: u64) -> Result<(), PolicyError> {
        Ok(())
    }
    async fn before_outgoing(
        &self,
        _: ObjectId,
        _: &OutgoingCall,
    ) -> Result<OutgoingDecision, PolicyError> {
        Ok(OutgoingDecision::Send)
    }
    async fn after_outgoing(
        &self,
        _: ObjectId,
        _: CallId,
        _: &Result<Vec<u8>, RemoteError>,
    ) -> Result<(), PolicyError> {
        Ok(())
    }
    async fn held_objects(&self) -> Result<Vec<ObjectId>, PolicyError> {
        Ok(Vec::new())
    }
    async fn recover(&self, _: ObjectId) -> Result<Option<Recovery>, PolicyError> {
        Ok(None)
    }
    async fn on_departed(&self, _: ObjectId) -> Result<(), PolicyError> {
        Ok(())
    }
}
