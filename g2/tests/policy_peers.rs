//! What a fault-tolerance policy may ask of the network (`PolicyPeers`), on
//! an in-process network: the replica set of a key, a request to the same
//! policy on a peer answered by its `on_message` (not routed: a peer that is
//! gone fails the request), a refusal carried back with the reason, and the
//! overlay's news (a neighbour failed).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use g2::testing::{Routing, TestNet};
use g2::{CallError, CallId, FaultPolicy, NodeId, ObjectId, Peer, PolicyPeers, RemoteError};
use g2_core::fault::{
    Admission, IncomingCall, OutgoingCall, OutgoingDecision, PolicyError, Recovery,
};

/// A policy that keeps nothing, answers "echo" requests with who asked and
/// what, refuses everything else, and notes the peers it heard failed.
#[derive(Clone, Default)]
struct Echo {
    peers: Arc<OnceLock<Arc<dyn PolicyPeers>>>,
    failed: Arc<Mutex<Vec<NodeId>>>,
}

#[async_trait]
impl FaultPolicy for Echo {
    fn name(&self) -> String {
        "echo-test".into()
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
    fn attach(&self, peers: Arc<dyn PolicyPeers>) {
        let _ = self.peers.set(peers);
    }
    async fn on_message(&self, from: &Peer, body: &[u8]) -> Result<Vec<u8>, PolicyError> {
        match body.strip_prefix(b"echo ") {
            Some(rest) => {
                Ok(format!("{} said {}", from.id, String::from_utf8_lossy(rest)).into_bytes())
            }
            None => Err(PolicyError::Refused("only echo is understood".into())),
        }
    }
    async fn on_peer_failed(&self, peer: NodeId) {
        self.failed.lock().unwrap().push(peer);
    }
}

/// A clone of each node's policy (its state is shared), filled as nodes are
/// built.
static POLICIES: Mutex<Vec<Echo>> = Mutex::new(Vec::new());

fn policy_of(id: NodeId) -> Echo {
    POLICIES
        .lock()
        .unwrap()
        .iter()
        .find(|p| p.peers.get().is_some_and(|x| x.me().id == id))
        .cloned()
        .expect("a policy attached to that node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_reaches_the_same_policy_on_its_peers() {
    let net = TestNet::new(
        Routing::Pastry,
        "policy.test",
        4,
        Duration::from_secs(10),
        |b| {
            let p = Echo::default();
            POLICIES.lock().unwrap().push(p.clone());
            b.serve_policy(p)
        },
    )
    .await;
    let nodes = net.live();
    let (a, b) = (&nodes[0], &nodes[1]);
    let pa = policy_of(a.id());
    let peers = pa.peers.get().unwrap().clone();
    assert_eq!(peers.me().id, a.id());

    // the replica set of a key: the nodes nearest it, the root first
    let key = ObjectId::random().key();
    let set = peers.replica_set(key, 3);
    assert_eq!(set.len(), 3);
    assert_eq!(set[0].id, net.root(key));

    // a request to the policy on b, answered there; and to itself
    let answer = peers
        .request(b.peer(), b"echo hello".to_vec(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(answer).unwrap(),
        format!("{} said hello", a.id())
    );
    let own = peers
        .request(a.peer(), b"echo me".to_vec(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(own).unwrap(),
        format!("{} said me", a.id())
    );

    // a refusal comes back with the reason
    match peers
        .request(b.peer(), b"what".to_vec(), Duration::from_secs(5))
        .await
    {
        Err(CallError::Remote(RemoteError::PolicyRefused {
            policy,
            node,
            reason,
        })) => {
            assert_eq!(policy, "echo-test");
            assert_eq!(node, b.id());
            assert!(reason.contains("only echo"), "{reason}");
        }
        other => panic!("{other:?}"),
    }

    // a peer that is gone fails the request (it is not routed elsewhere),
    // and the policies of its neighbours hear it failed
    let gone = nodes[2].peer().clone();
    net.crash(gone.id);
    let err = peers
        .request(&gone, b"echo anyone".to_vec(), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CallError::Unreachable { .. } | CallError::Timeout { .. }
        ),
        "{err:?}"
    );
    let start = std::time::Instant::now();
    while !pa.failed.lock().unwrap().contains(&gone.id)
        && !policy_of(nodes[3].id())
            .failed
            .lock()
            .unwrap()
            .contains(&gone.id)
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no policy heard that {} failed",
            gone.id
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
