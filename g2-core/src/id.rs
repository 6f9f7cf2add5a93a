//! Identities on the 128-bit ring: [`Key`], [`NodeId`], [`ObjectId`], [`CallId`],
//! and the address of a volunteer, [`NodeAddr`] / [`Peer`].
//!
//! Node and object ids live on one ring of 2^128 points. Ring arithmetic is done on
//! [`Key`]: clockwise distance `a → b` is `b - a mod 2^128`; the absolute distance is
//! the shorter way round. "Numerically closest" (the root of a key in Pastry and in
//! G2:P2P) breaks ties in favour of the node met first going *clockwise* from the key.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A point on the 128-bit identifier ring.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Key(pub u128);

impl Key {
    /// Distance going clockwise (increasing ids, wrapping) from `self` to `to`.
    pub fn cw_distance(self, to: Key) -> u128 {
        to.0.wrapping_sub(self.0)
    }

    /// Distance going counter-clockwise from `self` to `to`.
    pub fn ccw_distance(self, to: Key) -> u128 {
        self.0.wrapping_sub(to.0)
    }

    /// The shorter of the two ways round the ring.
    pub fn distance(self, other: Key) -> u128 {
        self.cw_distance(other).min(self.ccw_distance(other))
    }

    /// Orders `a` and `b` by closeness to `self`: `Less` means `a` is closer.
    /// Ties (one on each side at the same distance) go to the candidate reached
    /// first clockwise from `self`. Equal candidates compare `Equal`.
    pub fn cmp_closeness(self, a: Key, b: Key) -> Ordering {
        self.distance(a)
            .cmp(&self.distance(b))
            .then_with(|| self.cw_distance(a).cmp(&self.cw_distance(b)))
    }

    /// The candidate numerically closest to `self` (see [`Key::cmp_closeness`]).
    pub fn closest<I: IntoIterator<Item = Key>>(self, candidates: I) -> Option<Key> {
        candidates
            .into_iter()
            .min_by(|a, b| self.cmp_closeness(*a, *b))
    }

    /// Whether `self` lies in the clockwise half-open interval `(from, to]`.
    /// `(x, x]` is the whole ring.
    pub fn in_interval_open_closed(self, from: Key, to: Key) -> bool {
        let span = from.cw_distance(to);
        let off = from.cw_distance(self);
        if span == 0 {
            return true;
        }
        off != 0 && off <= span
    }

    /// The `i`-th digit of `bits` bits, most significant first (`bits` divides 128).
    pub fn digit(self, i: usize, bits: u32) -> u32 {
        let shift = 128 - bits as usize * (i + 1);
        ((self.0 >> shift) & ((1u128 << bits) - 1)) as u32
    }

    /// Length of the common prefix of `self` and `other`, in digits of `bits` bits.
    pub fn shared_prefix_digits(self, other: Key, bits: u32) -> usize {
        let x = self.0 ^ other.0;
        if x == 0 {
            return (128 / bits) as usize;
        }
        (x.leading_zeros() / bits) as usize
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:032x})", self.0)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

macro_rules! ring_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh random id (uuid v4).
            pub fn random() -> Self {
                Self(Uuid::new_v4())
            }
            /// The id whose ring position is `v`.
            pub const fn from_u128(v: u128) -> Self {
                Self(Uuid::from_u128(v))
            }
            /// This id's position on the ring as an integer.
            pub const fn as_u128(self) -> u128 {
                self.0.as_u128()
            }
            /// This id's position on the ring.
            pub const fn key(self) -> Key {
                Key(self.0.as_u128())
            }
            /// The id as a uuid.
            pub const fn uuid(self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }

        impl From<$name> for Key {
            fn from(id: $name) -> Key {
                id.key()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

ring_id!(
    /// The id of a volunteer node. With a real transport it is self-certifying: the
    /// first 128 bits of blake3 of the node's public key.
    NodeId
);
ring_id!(
    /// The GUID of a distributed object (random, uuid v4). Its node is the root of
    /// `id.key()` in the overlay.
    ObjectId
);

/// The unique id of one call: the caller's GUID and the caller's call counter.
/// The counter is part of the caller's state, so a replayed caller regenerates the
/// same ids, which is what makes duplicate detection work after recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CallId {
    /// The calling object, or the client id of the node for calls made outside any object.
    pub caller: ObjectId,
    /// The caller's call counter at the time of the call.
    pub seq: u64,
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.caller, self.seq)
    }
}

/// A transport address of a node: `mem:<n>` for the in-process transport,
/// `host:port` for QUIC.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeAddr(pub String);

impl NodeAddr {
    /// Wraps an address string.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The address as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node as the overlay and transport know it: its id and where to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Peer {
    /// The node's id.
    pub id: NodeId,
    /// Where to reach it.
    pub addr: NodeAddr,
}

impl Peer {
    /// A peer with this id and address.
    pub fn new(id: NodeId, addr: NodeAddr) -> Self {
        Self { id, addr }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn distances_wrap_round_the_ring() {
        let a = Key(u128::MAX - 1);
        let b = Key(3);
        assert_eq!(a.cw_distance(b), 5);
        assert_eq!(b.cw_distance(a), u128::MAX - 4);
        assert_eq!(a.distance(b), 5);
    }

    #[test]
    fn ties_go_clockwise() {
        let key = Key(100);
        assert_eq!(key.closest([Key(90), Key(110)]), Some(Key(110)));
        assert_eq!(key.closest([Key(110), Key(90)]), Some(Key(110)));
        assert_eq!(key.closest([Key(95), Key(110)]), Some(Key(95)));
    }

    #[test]
    fn digits_and_prefixes() {
        let k = Key(0x1234_u128 << 112);
        assert_eq!(k.digit(0, 4), 1);
        assert_eq!(k.digit(3, 4), 4);
        assert_eq!(k.shared_prefix_digits(Key(0x1235_u128 << 112), 4), 3);
        assert_eq!(k.shared_prefix_digits(k, 4), 32);
    }

    proptest! {
        #[test]
        fn cw_distances_sum_to_a_full_turn(a: u128, b: u128) {
            let (a, b) = (Key(a), Key(b));
            prop_assert_eq!(a.cw_distance(b).wrapping_add(b.cw_distance(a)), 0);
            prop_assert_eq!(a.distance(b), b.distance(a));
            prop_assert!(a.distance(b) <= 1u128 << 127);
        }

        #[test]
        fn triangle_inequality(a: u128, b: u128, c: u128) {
            let (a, b, c) = (Key(a), Key(b), Key(c));
            let ab = a.distance(b);
            let bc = b.distance(c);
            prop_assert!(a.distance(c) <= ab.saturating_add(bc));
        }

        #[test]
        fn closest_is_a_total_order(key: u128, ids in proptest::collection::vec(any::<u128>(), 1..20)) {
            let key = Key(key);
            let best = key.closest(ids.iter().copied().map(Key)).unwrap();
            for id in &ids {
                prop_assert_ne!(key.cmp_closeness(Key(*id), best), Ordering::Less);
            }
            // order of candidates does not matter
            let mut rev = ids.clone();
            rev.reverse();
            prop_assert_eq!(key.closest(rev.into_iter().map(Key)), Some(best));
        }

        #[test]
        fn interval_membership_matches_distance(x: u128, from: u128, to: u128) {
            let (x, from, to) = (Key(x), Key(from), Key(to));
            let inside = x.in_interval_open_closed(from, to);
            if from != to && x != from {
                prop_assert_eq!(inside, from.cw_distance(x) <= from.cw_distance(to));
            }
            prop_assert!(to.in_interval_open_closed(from, to));
        }

        #[test]
        fn ids_round_trip_through_u128(v: u128) {
            prop_assert_eq!(NodeId::from_u128(v).as_u128(), v);
            prop_assert_eq!(ObjectId::from_u128(v).key(), Key(v));
        }
    }
}
