//! What fault-tolerance policies ask of the network ([`PolicyPeers`]): the
//! replica sets, and messages to the same policy on another node, sent to
//! that node (not routed) and answered by its [`FaultPolicy::on_message`];
//! and the overlay's news the policies hear.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tracing::debug;

use crate::fault::{FaultPolicy, PolicyPeers};
use crate::id::{Key, NodeId, ObjectId, Peer};
use crate::runtime::error::CallError;
use crate::runtime::node::NodeInner;
use crate::sync::lock;
use crate::wire::{RemoteError, RequestKind};

/// The runtime's [`PolicyPeers`] for one policy.
struct Peers {
    node: Weak<NodeInner>,
    policy: String,
    me: Peer,
}

#[async_trait]
impl PolicyPeers for Peers {
    fn me(&self) -> Peer {
        self.me.clone()
    }

    fn replica_set(&self, key: Key, n: usize) -> Vec<Peer> {
        match self.node.upgrade() {
            Some(node) => lock(&node.overlay).replica_set(key, n),
            None => Vec::new(),
        }
    }

    async fn request(
        &self,
        to: &Peer,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let node = self.node.upgrade().ok_or(CallError::NodeStopped)?;
        if to.id == node.me.id {
            return node
                .policy_message(&node.me, &self.policy, &body)
                .await
                .map_err(CallError::Remote);
        }
        let kind = RequestKind::Policy {
            policy: self.policy.clone(),
            body,
        };
        node.send_and_wait(
            ObjectId::from_u128(to.id.as_u128()),
            kind,
            "policy message",
            Some(timeout),
            Some(to.clone()),
        )
        .await
    }
}

impl NodeInner {
    /// Gives every policy its [`PolicyPeers`] (at start).
    pub(super) fn attach_policies(self: &Arc<Self>) {
        for (name, p) in &self.policies {
            p.attach(Arc::new(Peers {
                node: Arc::downgrade(self),
                policy: name.clone(),
                me: self.me.clone(),
            }));
        }
    }

    /// Policy `policy`'s answer to `body` from `from`.
    async fn policy_message(
        &self,
        from: &Peer,
        policy: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, RemoteError> {
        let refused = |reason: String| RemoteError::PolicyRefused {
            policy: policy.to_string(),
            node: self.me.id,
            reason,
        };
        let Some(p) = self.policies.get(policy).cloned() else {
            return Err(refused("this node does not serve the policy".into()));
        };
        p.on_message(from, body)
            .await
            .map_err(|e| refused(e.to_string()))
    }

    /// Answers a policy message that ended here.
    pub(super) async fn serve_policy_message(
        self: &Arc<Self>,
        origin: Peer,
        id: u64,
        policy: String,
        body: Vec<u8>,
    ) {
        let outcome = self.policy_message(&origin, &policy, &body).await;
        if let Err(e) = &outcome {
            debug!(from = %origin, %policy, "policy message refused: {e}");
        }
        self.reply(&origin, id, outcome).await;
    }

    /// Tells every policy that `peer` failed.
    pub(super) fn policies_peer_failed(self: &Arc<Self>, peer: NodeId) {
        for p in self.policies.values() {
            let p: Arc<dyn FaultPolicy> = p.clone();
            self.spawn(async move { p.on_peer_failed(peer).await });
        }
    }

    /// Tells every policy that the ring around this node changed.
    pub(super) fn policies_neighbours_changed(self: &Arc<Self>) {
        for p in self.policies.values() {
            let p: Arc<dyn FaultPolicy> = p.clone();
            self.spawn(async move { p.on_neighbours_changed().await });
        }
    }
}
