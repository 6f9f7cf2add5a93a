//! Test support: a full-membership overlay in which every node knows every other
//! node through a shared [`Directory`].
//!
//! It exists to test the runtime without a real overlay. It is **not** G2's
//! routing: it needs global knowledge, which a real P2P network never has. Use
//! `g2-routing-pastry` or `g2-routing-chord` for anything else.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::id::{Key, NodeId, Peer};
use crate::overlay::{Overlay, OverlayError, OverlayEvent, OverlayFactory, Route, Transmit};

/// The shared membership list of a test network.
#[derive(Clone, Default, Debug)]
pub struct Directory {
    members: Arc<Mutex<BTreeMap<NodeId, Peer>>>,
    failed: Arc<Mutex<std::collections::BTreeSet<NodeId>>>,
    version: Arc<std::sync::atomic::AtomicU64>,
}

/// How often a [`FullMembershipOverlay`] looks for membership changes.
pub const POLL_PERIOD: Duration = Duration::from_millis(20);

impl Directory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// An overlay factory whose nodes share this directory.
    pub fn overlay(&self) -> FullMembership {
        FullMembership {
            directory: self.clone(),
        }
    }

    /// Declares a node failed: it leaves the membership and every node reports it
    /// as failed (as a real overlay's failure detector would, but at once).
    pub fn fail(&self, id: NodeId) {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
        self.remove(id);
    }

    /// Removes a node from the membership (a graceful leave).
    pub fn remove(&self, id: NodeId) {
        self.lock().remove(&id);
        self.bump();
    }

    fn bump(&self) {
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The live members.
    pub fn members(&self) -> Vec<Peer> {
        self.lock().values().cloned().collect()
    }

    /// The root of `key` among the live members.
    pub fn root(&self, key: Key) -> Option<Peer> {
        let m = self.lock();
        let id = key.closest(m.keys().map(|id| id.key()))?;
        m.get(&NodeId::from_u128(id.0)).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, Peer>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The factory of [`FullMembershipOverlay`] (see the module docs).
#[derive(Clone, Debug)]
pub struct FullMembership {
    directory: Directory,
}

impl OverlayFactory for FullMembership {
    fn build(self: Box<Self>, local: Peer) -> Box<dyn Overlay> {
        Box::new(FullMembershipOverlay {
            local,
            directory: self.directory,
            joined: false,
            events: VecDeque::new(),
            seen: 0,
            reported: Default::default(),
            next_poll: None,
        })
    }
    fn name(&self) -> &'static str {
        "full-membership (test support)"
    }
}

/// A node's view of the shared directory: it routes every key straight to its
/// root in one hop.
#[derive(Debug)]
pub struct FullMembershipOverlay {
    local: Peer,
    directory: Directory,
    joined: bool,
    events: VecDeque<OverlayEvent>,
    seen: u64,
    reported: std::collections::BTreeSet<NodeId>,
    next_poll: Option<Instant>,
}

impl Overlay for FullMembershipOverlay {
    fn local(&self) -> Peer {
        self.local.clone()
    }
    fn join(&mut self, now: Instant, _bootstrap: Option<Peer>) {
        // a node that restarts with its old id is no longer failed
        self.directory
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.local.id);
        self.directory
            .lock()
            .insert(self.local.id, self.local.clone());
        self.directory.bump();
        self.seen = self.directory.version();
        self.joined = true;
        self.next_poll = Some(now + POLL_PERIOD);
        self.events.push_back(OverlayEvent::Joined);
    }
    fn leave(&mut self, _now: Instant) {
        self.directory.remove(self.local.id);
        self.joined = false;
        self.next_poll = None;
        self.events.push_back(OverlayEvent::Left);
    }
    fn handle_message(
        &mut self,
        _now: Instant,
        from: Peer,
        _msg: &[u8],
    ) -> Result<(), OverlayError> {
        Err(OverlayError::Protocol {
            from: from.id,
            reason: "the full-membership overlay exchanges no messages".into(),
        })
    }
    fn handle_timeout(&mut self, now: Instant) {
        if !self.joined {
            return;
        }
        let v = self.directory.version();
        if v != self.seen {
            self.seen = v;
            let failed: Vec<NodeId> = self
                .directory
                .failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .copied()
                .collect();
            // a failed node that came back may fail again
            self.reported.retain(|id| failed.contains(id));
            for gone in failed {
                if gone != self.local.id && self.reported.insert(gone) {
                    self.events.push_back(OverlayEvent::PeerFailed(gone));
                }
            }
            self.events.push_back(OverlayEvent::NeighboursChanged);
        }
        self.next_poll = Some(now + POLL_PERIOD);
    }
    fn peer_unreachable(&mut self, _now: Instant, _peer: NodeId) {}
    fn rtt_sample(&mut self, _peer: NodeId, _rtt: Duration) {}
    fn poll_transmit(&mut self) -> Option<Transmit> {
        None
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.next_poll
    }
    fn poll_event(&mut self) -> Option<OverlayEvent> {
        self.events.pop_front()
    }
    fn route(&self, key: Key) -> Route {
        match self.directory.root(key) {
            Some(p) if p.id != self.local.id => Route::Forward(p),
            _ => Route::Local,
        }
    }
    fn is_root(&self, key: Key) -> bool {
        self.route(key) == Route::Local
    }
    fn replica_set(&self, key: Key, k: usize) -> Vec<Peer> {
        let mut all = self.directory.members();
        all.sort_by(|a, b| key.cmp_closeness(a.id.key(), b.id.key()));
        all.into_iter().take(k).collect()
    }
    fn is_joined(&self) -> bool {
        self.joined
    }
}
