//! The routing table, stored sparsely.
//!
//! A dense Pastry table has 128/b rows of 2^b slots, but only about
//! log_{2^b} N rows can hold anything in a network of N nodes, and the last of
//! those are mostly empty. The table is therefore a vector of occupied slots
//! sorted by `(row, column)`: lookups are a binary search over ~75 entries at
//! 10^6 nodes, and an empty slot costs nothing.

use g2_core::{Key, NodeId};

use crate::entry::{Entry, UNKNOWN_RTT};

#[derive(Clone, Debug)]
pub(crate) struct Slot {
    /// `row << 8 | column`.
    pos: u16,
    pub(crate) entry: Entry,
}

impl Slot {
    pub(crate) fn row(&self) -> usize {
        usize::from(self.pos >> 8)
    }
}

/// What happened to a candidate offered to the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    /// It took an empty slot or replaced a farther node.
    Inserted,
    /// It was already there (its rtt may have been refreshed).
    Known,
    /// Its slot holds another node and the candidate's rtt is unknown.
    NeedsRtt,
    /// Its slot holds a node at least as close.
    Rejected,
    /// It is this node.
    Local,
}

#[derive(Clone, Debug)]
pub(crate) struct RoutingTable {
    local: Key,
    bits: u32,
    slots: Vec<Slot>,
}

impl RoutingTable {
    pub(crate) fn new(local: Key, bits: u32) -> Self {
        Self {
            local,
            bits,
            slots: Vec::new(),
        }
    }

    pub(crate) fn digits(&self) -> usize {
        (128 / self.bits) as usize
    }

    /// The slot a node belongs in: (shared prefix length, its next digit).
    pub(crate) fn slot_of(&self, key: Key) -> Option<(usize, u32)> {
        let row = self.local.shared_prefix_digits(key, self.bits);
        (row < self.digits()).then(|| (row, key.digit(row, self.bits)))
    }

    fn pos(row: usize, col: u32) -> u16 {
        ((row as u16) << 8) | col as u16
    }

    fn find(&self, row: usize, col: u32) -> Result<usize, usize> {
        let p = Self::pos(row, col);
        self.slots.binary_search_by_key(&p, |s| s.pos)
    }

    pub(crate) fn get(&self, row: usize, col: u32) -> Option<&Entry> {
        self.find(row, col).ok().map(|i| &self.slots[i].entry)
    }

    /// The node in the slot `key` belongs in; `Err(())` when `key` is this node.
    pub(crate) fn holder(&self, key: Key) -> Result<Option<NodeId>, ()> {
        let (row, col) = self.slot_of(key).ok_or(())?;
        Ok(self.get(row, col).map(|e| e.id))
    }

    /// Offers a node: it takes its slot when the slot is empty or the candidate's
    /// round-trip time is lower (proximity neighbour selection).
    pub(crate) fn offer(&mut self, cand: &Entry) -> Offer {
        let Some((row, col)) = self.slot_of(cand.key()) else {
            return Offer::Local;
        };
        match self.find(row, col) {
            Err(i) => {
                self.slots.insert(
                    i,
                    Slot {
                        pos: Self::pos(row, col),
                        entry: cand.clone(),
                    },
                );
                Offer::Inserted
            }
            Ok(i) => {
                let occ = &mut self.slots[i].entry;
                if occ.id == cand.id {
                    if cand.rtt != UNKNOWN_RTT {
                        occ.rtt = cand.rtt;
                    }
                    Offer::Known
                } else if cand.rtt == UNKNOWN_RTT {
                    Offer::NeedsRtt
                } else if cand.rtt < occ.rtt {
                    *occ = cand.clone();
                    Offer::Inserted
                } else {
                    Offer::Rejected
                }
            }
        }
    }

    /// Removes `id`; returns the slot it held.
    pub(crate) fn remove(&mut self, id: NodeId) -> Option<(usize, u32)> {
        let (row, col) = self.slot_of(id.key())?;
        let i = self.find(row, col).ok()?;
        if self.slots[i].entry.id != id {
            return None;
        }
        self.slots.remove(i);
        Some((row, col))
    }

    pub(crate) fn entry_mut(&mut self, id: NodeId) -> Option<&mut Entry> {
        let (row, col) = self.slot_of(id.key())?;
        let i = self.find(row, col).ok()?;
        let e = &mut self.slots[i].entry;
        (e.id == id).then_some(e)
    }

    /// The entries of one row.
    pub(crate) fn row(&self, row: usize) -> &[Slot] {
        let lo = self.slots.partition_point(|s| s.row() < row);
        let hi = self.slots.partition_point(|s| s.row() <= row);
        &self.slots[lo..hi]
    }

    /// Rows `0..=max_row` (all entries up to that row).
    pub(crate) fn rows_up_to(&self, max_row: usize) -> &[Slot] {
        let hi = self.slots.partition_point(|s| s.row() <= max_row);
        &self.slots[..hi]
    }

    /// The rows that hold at least one entry.
    pub(crate) fn non_empty_rows(&self) -> Vec<usize> {
        let mut rows: Vec<usize> = self.slots.iter().map(Slot::row).collect();
        rows.dedup();
        rows
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().map(|s| &s.entry)
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn shrink_to_fit(&mut self) {
        self.slots.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(v: u128, rtt: u32) -> Entry {
        Entry::new(NodeId::from_u128(v), "mem:0", rtt)
    }

    #[test]
    fn closer_candidates_replace_farther_ones() {
        let mut t = RoutingTable::new(Key(0x1000 << 112), 4);
        assert_eq!(t.offer(&e(0x2000 << 112, 50)), Offer::Inserted);
        assert_eq!(t.offer(&e(0x2100 << 112, UNKNOWN_RTT)), Offer::NeedsRtt);
        assert_eq!(t.offer(&e(0x2200 << 112, 80)), Offer::Rejected);
        assert_eq!(t.offer(&e(0x2300 << 112, 10)), Offer::Inserted);
        assert_eq!(
            t.get(0, 2).map(|x| x.id),
            Some(NodeId::from_u128(0x2300 << 112))
        );
        assert_eq!(t.offer(&e(0x1100 << 112, 5)), Offer::Inserted);
        assert_eq!(t.row(1).len(), 1);
        assert_eq!(t.non_empty_rows(), vec![0, 1]);
        assert_eq!(t.remove(NodeId::from_u128(0x2300 << 112)), Some((0, 2)));
        assert_eq!(t.len(), 1);
    }
}
