//! The driver: moves the overlay state machine (its timers, its messages out,
//! its events), sends frames, and takes every frame that arrives to the part
//! of the runtime it is for.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tracing::{Instrument, debug, info_span, warn};

use crate::id::{NodeId, Peer};
use crate::overlay::{OverlayEvent, Transmit};
use crate::runtime::node::NodeInner;
use crate::runtime::now;
use crate::sync::lock;
use crate::transport::{Incoming, Transport, TransportError};
use crate::wire::{Body, Frame};

/// How often a node checks that it is still the root of every object it hosts.
const ROOT_CHECK: Duration = Duration::from_secs(1);
/// Handling one frame or sending one overlay message for longer than this is
/// logged: everything behind it waited.
const SLOW_HANDLING: Duration = Duration::from_millis(500);
/// How long a destination's control sender waits for more before it retires.
const CONTROL_SENDER_IDLE: Duration = Duration::from_secs(5);

/// Small control frames (overlay messages, load reports, placement records) on
/// their way out: a queue per destination, each drained in order by a task of
/// its own.
pub(super) type ControlQueues = HashMap<NodeId, mpsc::UnboundedSender<(Peer, Body)>>;

impl NodeInner {
    /// Encodes and sends one frame to `to`.
    pub(super) async fn send_frame(&self, to: &Peer, body: Body) -> Result<(), TransportError> {
        let bytes = Frame::new(body)
            .encode()
            .map_err(|e| TransportError::Other(e.to_string()))?;
        self.transport.send(to, bytes).await
    }

    /// A send to `id` failed: the overlay routes around it, and calls stop
    /// going straight there.
    pub(super) fn peer_unreachable(&self, id: NodeId) {
        lock(&self.overlay).peer_unreachable(now(), id);
        self.calls.forget_peer(id);
        self.overlay_wake.notify_one();
    }

    /// Queues an overlay message for its destination's sender task.
    fn send_overlay(self: &Arc<Self>, t: Transmit) {
        self.send_control(t.to, Body::Overlay(t.payload));
    }

    /// Queues a small control frame for its destination's sender task (started
    /// when there is none): a destination that takes long (a dial to an address
    /// nobody answers waits out the handshake timeout) holds up only its own
    /// frames, never the overlay loop and the heartbeats to everyone else.
    /// Each destination's frames go out in the order queued.
    pub(super) fn send_control(self: &Arc<Self>, to_peer: Peer, body: Body) {
        let t = (to_peer, body);
        let mut out = lock(&self.control_out);
        let to = t.0.id;
        let t = match out.get(&to) {
            Some(tx) => match tx.send(t) {
                Ok(()) => return,
                Err(e) => e.0,
            },
            None => t,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(t);
        out.insert(to, tx);
        drop(out);
        self.spawn(
            control_sender(Arc::downgrade(self), to, rx)
                .instrument(info_span!("node", id = %self.me.id)),
        );
    }

    async fn handle_event(self: &Arc<Self>, event: OverlayEvent) {
        match event {
            OverlayEvent::Joined => {
                self.joined.notify_waiters();
                self.move_to_roots(None);
                self.policies_neighbours_changed();
            }
            OverlayEvent::PeerFailed(id) => {
                debug!(peer = %id, "neighbour failed");
                self.calls.forget_peer(id);
                lock(&self.placements).peer_failed(id);
                // make sure no route points at it any more (Pastry repairs its
                // routing table lazily; a dead peer's connection may still
                // swallow frames without an error)
                lock(&self.overlay).peer_unreachable(now(), id);
                for req in self.calls.orphans_of(id) {
                    debug!(target = %req.target, "host failed with a call pending; routing it again");
                    self.dispatch(req).await;
                }
                self.move_to_roots(None);
                self.policies_peer_failed(id);
            }
            OverlayEvent::KeysMoved { ranges, new_root } => {
                debug!(new_root = %new_root, ranges = ranges.len(), "keys moved to a new root");
                self.move_to_roots(None);
                self.policies_neighbours_changed();
            }
            OverlayEvent::NeighboursChanged => {
                self.move_to_roots(None);
                self.publish_placements(None).await;
                self.policies_neighbours_changed();
            }
            OverlayEvent::Left => self.left.notify_waiters(),
        }
    }

    /// Takes one frame to the part of the runtime it is for.
    async fn handle_incoming(self: &Arc<Self>, incoming: Incoming) {
        let frame = match Frame::decode(&incoming.frame) {
            Ok(f) => f,
            Err(e) => {
                let reason = format!("malformed frame: {e}");
                warn!(from = %incoming.from, "{reason}; disconnecting the peer");
                self.transport.disconnect(incoming.from.id, &reason);
                return;
            }
        };
        // a peer declared failed that speaks again has come back (a restart
        // with the same key): its objects are no longer unavailable
        if lock(&self.placements).peer_back(incoming.from.id) {
            debug!(peer = %incoming.from, "a failed peer is back");
        }
        match frame.body {
            Body::Overlay(bytes) => {
                let res = lock(&self.overlay).handle_message(now(), incoming.from.clone(), &bytes);
                if let Err(e) = res {
                    warn!(from = %incoming.from, "overlay message refused: {e}");
                }
                self.overlay_wake.notify_one();
            }
            Body::Request(req) => self.dispatch(req).await,
            Body::Reply(reply) => self.complete(reply),
            Body::Placement(p) => {
                if p.host.id != incoming.from.id {
                    let reason = format!(
                        "placement record for {} names host {} but came from {}",
                        p.object, p.host.id, incoming.from.id
                    );
                    warn!("{reason}; ignoring it");
                    return;
                }
                lock(&self.placements).insert(p);
            }
            Body::Load(report) => self.load_reported(&incoming.from, report),
        }
    }
}

/// Receives frames from a transport that does not hand them over itself.
pub(super) async fn receive_loop(node: Weak<NodeInner>, transport: Arc<dyn Transport>) {
    loop {
        let incoming = match transport.recv().await {
            Ok(i) => i,
            Err(TransportError::Closed) => return,
            Err(e) => {
                warn!("receive failed: {e}");
                continue;
            }
        };
        if node.strong_count() == 0 {
            return;
        }
        handle_one(node.clone(), incoming).await;
    }
}

/// Handles one frame (on the receive loop, or on a transport's reader task).
pub(super) async fn handle_one(node: Weak<NodeInner>, incoming: Incoming) {
    let Some(inner) = node.upgrade() else { return };
    if inner.stopped.load(Ordering::Acquire) {
        return;
    }
    let from = incoming.from.id;
    let started = std::time::Instant::now();
    inner.handle_incoming(incoming).await;
    let took = started.elapsed();
    if took > SLOW_HANDLING {
        warn!(%from, "handling a frame took {took:?}; frames behind it waited");
    }
}

/// Drives the overlay: sends what it has to send, handles its events, fires
/// its timers; and, as a safety net, checks every [`ROOT_CHECK`] that hosted
/// objects are at their roots (views can settle without an event saying so).
pub(super) async fn overlay_loop(node: Weak<NodeInner>, wake_signal: Arc<Notify>) {
    let mut next_check = tokio::time::Instant::now() + ROOT_CHECK;
    loop {
        let Some(inner) = node.upgrade() else { return };
        if tokio::time::Instant::now() >= next_check {
            inner.move_to_roots(None);
            next_check = tokio::time::Instant::now() + ROOT_CHECK;
        }
        let (transmits, events, deadline) = {
            let mut ov = lock(&inner.overlay);
            let mut transmits = Vec::new();
            while let Some(t) = ov.poll_transmit() {
                transmits.push(t);
            }
            let deadline = ov.poll_timeout();
            let mut events = Vec::new();
            while let Some(e) = ov.poll_event() {
                events.push(e);
            }
            (transmits, events, deadline)
        };
        for t in transmits {
            inner.send_overlay(t);
        }
        let had_events = !events.is_empty();
        for e in events {
            inner.handle_event(e).await;
        }
        if had_events {
            continue;
        }
        drop(inner);
        let wake = wake_signal.notified();
        let at = deadline
            .map(tokio::time::Instant::from_std)
            .map_or(next_check, |d| d.min(next_check));
        let fired = tokio::select! {
            _ = tokio::time::sleep_until(at) => deadline.is_some_and(|d| tokio::time::Instant::from_std(d) <= tokio::time::Instant::now()),
            _ = wake => false,
        };
        if fired {
            let Some(inner) = node.upgrade() else { return };
            lock(&inner.overlay).handle_timeout(now());
        }
    }
}

/// Sends one destination's control frames in order (see `send_control`).
async fn control_sender(
    node: Weak<NodeInner>,
    to: NodeId,
    mut rx: mpsc::UnboundedReceiver<(Peer, Body)>,
) {
    loop {
        let (peer, body) = match tokio::time::timeout(CONTROL_SENDER_IDLE, rx.recv()).await {
            Ok(Some(t)) => t,
            Ok(None) => return,
            Err(_) => {
                // idle: retire, unless a frame was queued meanwhile (queueing
                // happens under the same lock, so none can slip in after this)
                let Some(inner) = node.upgrade() else { return };
                let mut out = lock(&inner.control_out);
                match rx.try_recv() {
                    Ok(t) => t,
                    Err(_) => {
                        out.remove(&to);
                        return;
                    }
                }
            }
        };
        let Some(inner) = node.upgrade() else { return };
        if inner.stopped.load(Ordering::Acquire) {
            return;
        }
        let started = std::time::Instant::now();
        let sent = inner.send_frame(&peer, body).await;
        let took = started.elapsed();
        if took > SLOW_HANDLING {
            warn!(to = %peer, "sending an overlay message took {took:?}");
        }
        if let Err(e) = sent {
            debug!(to = %peer, "overlay message not delivered: {e}");
            lock(&inner.overlay).peer_unreachable(now(), peer.id);
            inner.overlay_wake.notify_one();
        }
    }
}
