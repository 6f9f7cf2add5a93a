//! The leaf set: the L/2 numerically closest nodes on each side of this node.

use std::time::Instant;

use g2_core::overlay::KeyRange;
use g2_core::{Key, NodeId};

use crate::entry::Entry;

/// A leaf and when we last heard from it (for failure detection).
#[derive(Clone, Debug)]
pub(crate) struct Leaf {
    pub(crate) entry: Entry,
    pub(crate) last_heard: Instant,
}

/// The leaf set of `local`: `cw` holds the closest nodes clockwise (increasing
/// ids), `ccw` those counter-clockwise, nearest first. In a network of at most L
/// nodes one node may sit on both sides.
#[derive(Clone, Debug)]
pub(crate) struct LeafSet {
    local: Key,
    half: usize,
    pub(crate) cw: Vec<Leaf>,
    pub(crate) ccw: Vec<Leaf>,
}

impl LeafSet {
    pub(crate) fn new(local: Key, size: usize) -> Self {
        Self {
            local,
            half: (size / 2).max(1),
            cw: Vec::new(),
            ccw: Vec::new(),
        }
    }

    /// L/2: the most leaves on each side.
    pub(crate) fn half(&self) -> usize {
        self.half
    }

    /// Offers a node; returns whether the set changed (not counting rtt updates).
    pub(crate) fn insert(&mut self, entry: &Entry, now: Instant) -> bool {
        if entry.id.key() == self.local {
            return false;
        }
        let local = self.local;
        let a = Self::insert_side(&mut self.cw, self.half, entry, now, |k| {
            local.cw_distance(k)
        });
        let b = Self::insert_side(&mut self.ccw, self.half, entry, now, |k| {
            local.ccw_distance(k)
        });
        a || b
    }

    fn insert_side(
        side: &mut Vec<Leaf>,
        half: usize,
        entry: &Entry,
        now: Instant,
        dist: impl Fn(Key) -> u128,
    ) -> bool {
        if let Some(l) = side.iter_mut().find(|l| l.entry.id == entry.id) {
            if entry.rtt != crate::entry::UNKNOWN_RTT {
                l.entry.rtt = entry.rtt;
            }
            return false;
        }
        let d = dist(entry.key());
        let pos = side.partition_point(|l| dist(l.entry.key()) < d);
        if pos >= half {
            return false;
        }
        side.insert(
            pos,
            Leaf {
                entry: entry.clone(),
                last_heard: now,
            },
        );
        side.truncate(half);
        true
    }

    pub(crate) fn remove(&mut self, id: NodeId) -> bool {
        let before = self.cw.len() + self.ccw.len();
        self.cw.retain(|l| l.entry.id != id);
        self.ccw.retain(|l| l.entry.id != id);
        before != self.cw.len() + self.ccw.len()
    }

    pub(crate) fn contains(&self, id: NodeId) -> bool {
        self.iter().any(|l| l.entry.id == id)
    }

    /// Every leaf once (a node on both sides is listed once).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Leaf> {
        let cw = &self.cw;
        cw.iter().chain(
            self.ccw
                .iter()
                .filter(move |l| !cw.iter().any(|c| c.entry.id == l.entry.id)),
        )
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Leaf> {
        self.cw.iter_mut().chain(self.ccw.iter_mut())
    }

    pub(crate) fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether `key` lies within the range the leaf set spans. A set that is not
    /// full on some side, or whose sides overlap, knows the whole ring.
    pub(crate) fn covers(&self, key: Key) -> bool {
        let (Some(cw_far), Some(ccw_far)) = (self.cw.last(), self.ccw.last()) else {
            return true;
        };
        if self.cw.len() < self.half || self.ccw.len() < self.half {
            return true;
        }
        let cw_span = self.local.cw_distance(cw_far.entry.key());
        let ccw_span = self.local.ccw_distance(ccw_far.entry.key());
        let Some(span) = cw_span.checked_add(ccw_span) else {
            return true;
        };
        ccw_far.entry.key().cw_distance(key) <= span
    }

    /// The keys this node is root of, given its immediate neighbours.
    pub(crate) fn owned_range(&self) -> KeyRange {
        match (self.ccw.first(), self.cw.first()) {
            (Some(pred), Some(succ)) => {
                owned_between(pred.entry.key(), self.local, succ.entry.key())
            }
            _ => KeyRange {
                start: self.local,
                end: self.local,
            },
        }
    }
}

fn half_up(d: u128) -> u128 {
    d / 2 + (d & 1)
}

/// Keys of which `local` is root when its neighbours are `pred` (counter-clockwise)
/// and `succ` (clockwise): ties go to the node met first clockwise from the key.
pub(crate) fn owned_between(pred: Key, local: Key, succ: Key) -> KeyRange {
    let start = Key(pred.0.wrapping_add(half_up(pred.cw_distance(local))));
    let end = Key(local.0.wrapping_add(half_up(local.cw_distance(succ))));
    KeyRange { start, end }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn owned_range_matches_closest(p: u128, l: u128, s: u128, k: u128) {
            let (p, l, s, key) = (Key(p), Key(l), Key(s), Key(k));
            prop_assume!(p != l && s != l);
            // pred and succ must really be the neighbours: pred ccw-closest, succ cw-closest
            prop_assume!(l.cw_distance(s) <= l.cw_distance(p) || p == s);
            let r = owned_between(p, l, s);
            let root = key.closest([p, l, s]).unwrap();
            prop_assert_eq!(r.contains(key), root == l, "range {:?}", r);
        }
    }
}
