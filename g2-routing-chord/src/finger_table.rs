//! The finger table, stored compactly.
//!
//! Finger `i` of node `n` is the successor of `n + 2^i`: a non-decreasing step
//! function of `i` (going clockwise from `n`). Of the 128 fingers only about
//! log2 N are distinct, so the table is run-length encoded: a sorted vector of
//! `(first index, peer)`, each run lasting until the next one starts. Fingers
//! below the first run are unknown.

use g2_core::{Key, NodeId, Peer};

/// Number of fingers on the 128-bit ring.
pub(crate) const FINGERS: usize = 128;

#[derive(Clone, Debug, Default)]
pub(crate) struct FingerTable {
    runs: Vec<(u8, Peer)>,
}

impl FingerTable {
    /// The key finger `i` of the node at `base` points at the successor of.
    pub(crate) fn start(base: Key, i: usize) -> Key {
        Key(base.0.wrapping_add(1u128 << i))
    }

    /// The first finger index whose start lies beyond clockwise distance `d`
    /// (fingers below it are the successor of anything within `d`).
    pub(crate) fn first_beyond(d: u128) -> usize {
        FINGERS - d.leading_zeros() as usize
    }

    /// Finger `i`, if known.
    pub(crate) fn get(&self, i: usize) -> Option<&Peer> {
        let at = self.runs.partition_point(|(s, _)| usize::from(*s) <= i);
        at.checked_sub(1).map(|k| &self.runs[k].1)
    }

    /// Sets fingers `lo..hi` to `peer` (empty when `lo >= hi`).
    pub(crate) fn set_range(&mut self, lo: usize, hi: usize, peer: &Peer) {
        let hi = hi.min(FINGERS);
        if lo >= hi {
            return;
        }
        let after = if hi < FINGERS {
            self.get(hi).cloned()
        } else {
            None
        };
        self.runs
            .retain(|(s, _)| !(lo..hi).contains(&usize::from(*s)));
        let at = self.runs.partition_point(|(s, _)| usize::from(*s) < lo);
        // Indices are < FINGERS = 128, so they fit in a u8.
        self.runs.insert(at, (lo as u8, peer.clone()));
        if let Some(after) = after
            && !self.runs.iter().any(|(s, _)| usize::from(*s) == hi)
        {
            self.runs.insert(at + 1, (hi as u8, after));
        }
        self.merge();
    }

    /// Forgets fingers `i..` (they would point at this node itself).
    pub(crate) fn truncate_from(&mut self, i: usize) {
        self.runs.retain(|(s, _)| usize::from(*s) < i);
    }

    /// Removes every finger pointing at `id`: the run before takes its
    /// indices (a closer node, so routing stays correct until repaired).
    pub(crate) fn remove(&mut self, id: NodeId) -> bool {
        let before = self.runs.len();
        self.runs.retain(|(_, p)| p.id != id);
        self.merge();
        self.runs.len() != before
    }

    fn merge(&mut self) {
        self.runs.dedup_by(|b, a| a.1.id == b.1.id);
    }

    /// The distinct peers, in finger order.
    pub(crate) fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.runs.iter().map(|(_, p)| p)
    }

    /// Number of distinct peers among the fingers.
    pub(crate) fn distinct(&self) -> usize {
        let mut ids: Vec<NodeId> = self.runs.iter().map(|(_, p)| p.id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    pub(crate) fn shrink_to_fit(&mut self) {
        self.runs.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use g2_core::NodeAddr;

    fn peer(n: u128) -> Peer {
        Peer::new(NodeId::from_u128(n), NodeAddr::new(format!("mem:{n}")))
    }

    #[test]
    fn runs_split_and_merge() {
        let mut t = FingerTable::default();
        t.set_range(0, 128, &peer(1));
        assert_eq!(t.distinct(), 1);
        t.set_range(10, 20, &peer(2));
        assert_eq!(t.get(9).unwrap().id, peer(1).id);
        assert_eq!(t.get(10).unwrap().id, peer(2).id);
        assert_eq!(t.get(19).unwrap().id, peer(2).id);
        assert_eq!(t.get(20).unwrap().id, peer(1).id);
        assert_eq!(t.distinct(), 2);
        t.set_range(10, 20, &peer(1));
        assert_eq!(t.peers().count(), 1);
        t.set_range(100, 128, &peer(3));
        t.remove(peer(3).id);
        assert_eq!(t.get(127).unwrap().id, peer(1).id);
        t.truncate_from(50);
        assert_eq!(t.get(127).unwrap().id, peer(1).id);
        t.set_range(60, 128, &peer(4));
        t.truncate_from(60);
        assert_eq!(t.distinct(), 1);
    }

    #[test]
    fn first_beyond_matches_the_starts() {
        assert_eq!(FingerTable::first_beyond(1), 1);
        assert_eq!(FingerTable::first_beyond(3), 2);
        assert_eq!(FingerTable::first_beyond(4), 3);
        assert_eq!(FingerTable::first_beyond(u128::MAX), 128);
        let base = Key(u128::MAX - 5);
        for d in [1u128, 2, 7, 1 << 70, (1 << 70) + 3] {
            let first = FingerTable::first_beyond(d);
            for i in 0..FINGERS {
                let within = base.cw_distance(FingerTable::start(base, i)) <= d;
                assert_eq!(within, i < first, "d = {d}, i = {i}");
            }
        }
    }
}
