//! A known node as Pastry stores it: id, address and measured round-trip time,
//! packed small because a simulated network holds 10^6 nodes of ~120 entries each.

use std::fmt;
use std::time::Duration;

use g2_core::{Key, NodeAddr, NodeId, Peer};

/// Longest address kept inline (no heap allocation): enough for `a.b.c.d:port`.
const INLINE: usize = 22;

/// A node address stored without a heap allocation when it is short.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum CompactAddr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl CompactAddr {
    pub(crate) fn new(s: &str) -> Self {
        if s.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Self::Inline {
                len: s.len() as u8,
                bytes,
            }
        } else {
            Self::Heap(s.into())
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            // Always valid: built from a `&str` cut at its own length.
            Self::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..*len as usize]).unwrap_or("")
            }
            Self::Heap(s) => s,
        }
    }
}

impl fmt::Debug for CompactAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Round-trip time in microseconds; `UNKNOWN_RTT` when never measured.
pub(crate) type RttMicros = u32;
pub(crate) const UNKNOWN_RTT: RttMicros = u32::MAX;

pub(crate) fn rtt_micros(d: Duration) -> RttMicros {
    u32::try_from(d.as_micros()).unwrap_or(UNKNOWN_RTT - 1)
}

/// A node in the leaf set, the routing table or the neighbourhood set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) id: NodeId,
    pub(crate) addr: CompactAddr,
    pub(crate) rtt: RttMicros,
}

impl Entry {
    pub(crate) fn new(id: NodeId, addr: &str, rtt: RttMicros) -> Self {
        Self {
            id,
            addr: CompactAddr::new(addr),
            rtt,
        }
    }

    pub(crate) fn key(&self) -> Key {
        self.id.key()
    }

    pub(crate) fn peer(&self) -> Peer {
        Peer::new(self.id, NodeAddr::new(self.addr.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_inline_and_on_the_heap() {
        for s in [
            "",
            "mem:1",
            "255.255.255.255:65535",
            "[2001:db8::1]:4433-and-more",
        ] {
            assert_eq!(CompactAddr::new(s).as_str(), s);
        }
        assert!(std::mem::size_of::<Entry>() <= 48);
    }
}
