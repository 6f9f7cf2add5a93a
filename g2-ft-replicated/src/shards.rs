//! Erasure-coded checkpoints: an object's state cut into `n` data shards
//! plus `m` parity shards (systematic Reed–Solomon, `reed-solomon-simd`),
//! each with its blake3, so that any `n` intact shards of one checkpoint
//! give the state back and a damaged shard is known and left out.

use serde::{Deserialize, Serialize};

/// Shard sizes are padded to a multiple of this (the coder's unit).
const ALIGN: usize = 64;

/// How a checkpoint is coded: `data` shards, any `data` of the `data +
/// parity` enough to rebuild it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coding {
    /// Data shards (n).
    pub data: u8,
    /// Parity shards (m): the shard holders that may be lost.
    pub parity: u8,
}

impl Default for Coding {
    /// 4 + 2: a checkpoint costs 1.5× the state, and survives two lost holders.
    fn default() -> Self {
        Coding { data: 4, parity: 2 }
    }
}

impl Coding {
    /// Checks the numbers: at least one of each, at most 64 shards in all
    /// (a replica set is far smaller).
    pub fn new(data: u8, parity: u8) -> Result<Coding, ShardError> {
        if data == 0 || parity == 0 || usize::from(data) + usize::from(parity) > 64 {
            return Err(ShardError::Coding(format!(
                "{data} data + {parity} parity shards: each must be at least 1, and 64 in all at most"
            )));
        }
        Ok(Coding { data, parity })
    }

    /// Shards in all.
    pub fn total(&self) -> usize {
        usize::from(self.data) + usize::from(self.parity)
    }
}

/// One shard of one checkpoint of one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// The object (its GUID as a number).
    pub object: u128,
    /// The checkpoint's number (increasing per object).
    pub checkpoint: u64,
    /// The call watermark the checkpoint covers (calls after it are replayed).
    pub watermark: u64,
    /// The coding.
    pub coding: Coding,
    /// Which shard: `0..data` are data, `data..data + parity` parity.
    pub index: u8,
    /// The state's length before padding.
    pub state_len: u64,
    /// The bytes.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    /// blake3 of everything above.
    pub checksum: [u8; 32],
}

impl Shard {
    fn digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(&self.object.to_be_bytes());
        h.update(&self.checkpoint.to_be_bytes());
        h.update(&self.watermark.to_be_bytes());
        h.update(&[self.coding.data, self.coding.parity, self.index]);
        h.update(&self.state_len.to_be_bytes());
        h.update(&self.bytes);
        *h.finalize().as_bytes()
    }

    /// Whether the shard is what its checksum says (a damaged one counts
    /// as lost).
    pub fn intact(&self) -> bool {
        self.digest() == self.checksum
            && usize::from(self.index) < self.coding.total()
            && self.coding.data > 0
            && self.coding.parity > 0
    }

    /// The shard as bytes (CBOR).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len() + 96);
        ciborium::into_writer(self, &mut out).expect("a shard encodes");
        out
    }

    /// A shard from untrusted bytes; its checksum is checked.
    pub fn from_bytes(bytes: &[u8]) -> Result<Shard, ShardError> {
        let s: Shard =
            ciborium::from_reader(bytes).map_err(|e| ShardError::Malformed(e.to_string()))?;
        if !s.intact() {
            return Err(ShardError::Damaged {
                object: s.object,
                checkpoint: s.checkpoint,
                index: s.index,
            });
        }
        Ok(s)
    }
}

/// Why shards could not be made or used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShardError {
    /// Bad coding parameters.
    #[error("erasure coding: {0}")]
    Coding(String),
    /// Bytes that are not a shard.
    #[error("not a shard: {0}")]
    Malformed(String),
    /// A shard whose checksum does not match.
    #[error("shard {index} of checkpoint {checkpoint} of object {object:032x} is damaged")]
    Damaged {
        /// The object.
        object: u128,
        /// The checkpoint.
        checkpoint: u64,
        /// The shard.
        index: u8,
    },
    /// Fewer intact shards of the checkpoint than the coding needs.
    #[error(
        "checkpoint {checkpoint} of object {object:032x}: {have} intact shards of the {need} needed ({damaged} damaged)"
    )]
    TooFew {
        /// The object.
        object: u128,
        /// The checkpoint.
        checkpoint: u64,
        /// Intact shards found.
        have: usize,
        /// Shards needed (n).
        need: usize,
        /// Shards left out as damaged or inconsistent.
        damaged: usize,
    },
    /// The coder refused (never expected with checked parameters).
    #[error("reed-solomon: {0}")]
    Coder(String),
}

/// Cuts checkpoint `checkpoint` of `object` (its `state`, covering calls up
/// to `watermark`) into `coding.total()` shards.
pub fn encode(
    object: u128,
    checkpoint: u64,
    watermark: u64,
    state: &[u8],
    coding: Coding,
) -> Result<Vec<Shard>, ShardError> {
    let n = usize::from(coding.data);
    let per = state.len().div_ceil(n).max(1).div_ceil(ALIGN) * ALIGN;
    let mut data: Vec<Vec<u8>> = state.chunks(per).map(<[u8]>::to_vec).collect();
    data.resize(n, Vec::new());
    for d in &mut data {
        d.resize(per, 0);
    }
    let parity = reed_solomon_simd::encode(n, usize::from(coding.parity), &data)
        .map_err(|e| ShardError::Coder(e.to_string()))?;
    let shards = data
        .into_iter()
        .chain(parity)
        .enumerate()
        .map(|(i, bytes)| {
            let mut s = Shard {
                object,
                checkpoint,
                watermark,
                coding,
                index: i as u8,
                state_len: state.len() as u64,
                bytes,
                checksum: [0; 32],
            };
            s.checksum = s.digest();
            s
        })
        .collect();
    Ok(shards)
}

/// The state of the checkpoint the first intact shard of `shards` belongs
/// to, from any `n` intact shards of it; damaged shards and shards that
/// disagree with it (another coding, length or watermark) are left out.
pub fn decode(shards: &[Shard]) -> Result<Vec<u8>, ShardError> {
    let Some(first) = shards.iter().find(|s| s.intact()) else {
        let (object, checkpoint) = shards.first().map_or((0, 0), |s| (s.object, s.checkpoint));
        return Err(ShardError::TooFew {
            object,
            checkpoint,
            have: 0,
            need: shards.first().map_or(1, |s| usize::from(s.coding.data)),
            damaged: shards.len(),
        });
    };
    let same = |s: &&Shard| {
        s.intact()
            && s.object == first.object
            && s.checkpoint == first.checkpoint
            && s.watermark == first.watermark
            && s.coding == first.coding
            && s.state_len == first.state_len
            && s.bytes.len() == first.bytes.len()
    };
    let mut usable: Vec<&Shard> = shards.iter().filter(same).collect();
    usable.sort_by_key(|s| s.index);
    usable.dedup_by_key(|s| s.index);
    let n = usize::from(first.coding.data);
    let m = usize::from(first.coding.parity);
    let damaged = shards.len() - usable.len();
    if usable.len() < n {
        return Err(ShardError::TooFew {
            object: first.object,
            checkpoint: first.checkpoint,
            have: usable.len(),
            need: n,
            damaged,
        });
    }
    let mut data: Vec<Option<Vec<u8>>> = vec![None; n];
    for s in usable.iter().filter(|s| usize::from(s.index) < n) {
        data[usize::from(s.index)] = Some(s.bytes.clone());
    }
    if data.iter().any(Option::is_none) {
        let originals = usable
            .iter()
            .filter(|s| usize::from(s.index) < n)
            .map(|s| (usize::from(s.index), &s.bytes));
        let recovery = usable
            .iter()
            .filter(|s| usize::from(s.index) >= n)
            .map(|s| (usize::from(s.index) - n, &s.bytes));
        let restored = reed_solomon_simd::decode(n, m, originals, recovery)
            .map_err(|e| ShardError::Coder(e.to_string()))?;
        for (i, bytes) in restored {
            if i < n {
                data[i] = Some(bytes);
            }
        }
    }
    let mut state: Vec<u8> = data.into_iter().flatten().flatten().collect();
    let len = usize::try_from(first.state_len).unwrap_or(usize::MAX);
    if state.len() < len {
        return Err(ShardError::Coder(
            "restored fewer bytes than the state had".into(),
        ));
    }
    state.truncate(len);
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state(len: usize, salt: u8) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8 ^ salt).collect()
    }

    #[test]
    fn any_n_shards_give_the_state_back() {
        let s = state(10_000, 7);
        let shards = encode(42, 3, 17, &s, Coding::default()).unwrap();
        assert_eq!(shards.len(), 6);
        // every choice of 4 of 6
        for skip_a in 0..6 {
            for skip_b in skip_a + 1..6 {
                let some: Vec<Shard> = shards
                    .iter()
                    .filter(|x| x.index != skip_a && x.index != skip_b)
                    .cloned()
                    .collect();
                assert_eq!(decode(&some).unwrap(), s, "without {skip_a} and {skip_b}");
            }
        }
        // the data shards alone hold the state in order (systematic code)
        let data: Vec<u8> = shards[..4].iter().flat_map(|x| x.bytes.clone()).collect();
        assert_eq!(&data[..s.len()], &s[..]);
    }

    #[test]
    fn a_damaged_shard_is_known_and_left_out() {
        let s = state(5_000, 1);
        let mut shards = encode(1, 9, 100, &s, Coding::default()).unwrap();
        shards[0].bytes[3] ^= 1;
        assert!(!shards[0].intact());
        assert_eq!(decode(&shards).unwrap(), s, "five intact shards are enough");
        // three damaged: too few, saying so
        shards[1].bytes[0] ^= 1;
        shards[4].watermark += 1;
        let e = decode(&shards).unwrap_err();
        assert_eq!(
            e,
            ShardError::TooFew {
                object: 1,
                checkpoint: 9,
                have: 3,
                need: 4,
                damaged: 3
            }
        );
        assert!(
            e.to_string().contains("3 intact shards of the 4 needed"),
            "{e}"
        );
        // through bytes: a damaged one is refused on arrival
        let bytes = shards[1].to_bytes();
        assert!(matches!(
            Shard::from_bytes(&bytes),
            Err(ShardError::Damaged { index: 1, .. })
        ));
        assert_eq!(Shard::from_bytes(&shards[2].to_bytes()).unwrap(), shards[2]);
        assert!(matches!(
            Shard::from_bytes(b"garbage"),
            Err(ShardError::Malformed(_))
        ));
    }

    #[test]
    fn shards_of_another_checkpoint_are_not_mixed_in() {
        let (a, b) = (state(3_000, 1), state(3_000, 2));
        let old = encode(5, 1, 10, &a, Coding::default()).unwrap();
        let new = encode(5, 2, 20, &b, Coding::default()).unwrap();
        // 3 of the new and 3 of the old: the new one (first) cannot be made
        let mixed: Vec<Shard> = new[..3].iter().chain(&old[3..]).cloned().collect();
        assert!(matches!(
            decode(&mixed),
            Err(ShardError::TooFew {
                checkpoint: 2,
                have: 3,
                ..
            })
        ));
    }

    #[test]
    fn bad_codings_are_refused_and_tiny_states_work() {
        assert!(Coding::new(0, 2).is_err());
        assert!(Coding::new(4, 0).is_err());
        assert!(Coding::new(40, 30).is_err());
        let c = Coding::new(3, 1).unwrap();
        for len in [0, 1, 63, 64, 65, 191, 192, 193] {
            let s = state(len, 3);
            let shards = encode(9, 1, 1, &s, c).unwrap();
            assert_eq!(decode(&shards[1..]).unwrap(), s, "length {len}");
        }
    }

    proptest! {
        #[test]
        fn encoding_round_trips_with_any_parity_shards_lost(
            len in 0usize..5000,
            salt: u8,
            data in 1u8..6,
            parity in 1u8..4,
            lost in proptest::collection::vec(0usize..9, 0..3),
        ) {
            let s = state(len, salt);
            let coding = Coding::new(data, parity).unwrap();
            let shards = encode(7, 1, 1, &s, coding).unwrap();
            let mut lost: Vec<usize> = lost.into_iter().map(|i| i % coding.total()).collect();
            lost.sort();
            lost.dedup();
            lost.truncate(usize::from(parity));
            let kept: Vec<Shard> = shards
                .into_iter()
                .filter(|x| !lost.contains(&usize::from(x.index)))
                .collect();
            prop_assert_eq!(decode(&kept).unwrap(), s);
        }

        #[test]
        fn random_bytes_are_never_a_shard_and_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Shard::from_bytes(&bytes);
        }
    }
}
