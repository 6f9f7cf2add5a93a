//! Random numbers: xoshiro256**, seeded through splitmix64.

use serde::{Deserialize, Serialize};

/// xoshiro256** pseudo-random generator, seeded through splitmix64.
///
/// The algorithm and the seeding are fixed forever: the same `(seed, stream)`
/// gives the same sequence on every machine and in every version, and the
/// state serialises as four `u64`s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator for one `stream` (e.g. an island index) of a run `seed`.
    /// For a fixed seed, distinct streams start from distinct states.
    pub fn seed_from(seed: u64, stream: u64) -> Rng {
        let mut sm = seed;
        let key = splitmix64(&mut sm);
        // Odd multiplier and xor are bijections, so streams never coincide.
        let mut sm = key ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut s = [0u64; 4];
        for word in &mut s {
            *word = splitmix64(&mut sm);
        }
        if s == [0; 4] {
            // The one state xoshiro cannot leave; unreachable in practice.
            s[0] = 1;
        }
        Rng { s }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform integer in `0..n` without modulo bias (Lemire's method).
    /// Returns 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }

    /// A uniform `f64` in `[0, 1)` with 53 random bits.
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    pub(super) fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_sequence_is_pinned() {
        // The generator is part of the reproducibility contract: these
        // values must never change.
        let mut r = Rng::seed_from(1, 0);
        let first: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        let mut again = Rng::seed_from(1, 0);
        assert_eq!(first, (0..3).map(|_| again.next_u64()).collect::<Vec<_>>());
        assert_eq!(first, PINNED_RNG);
        assert_ne!(Rng::seed_from(1, 1), Rng::seed_from(1, 0));
        assert_ne!(Rng::seed_from(2, 0), Rng::seed_from(1, 0));
    }

    const PINNED_RNG: [u64; 3] = [
        17154914556750032435,
        15481925071032317162,
        3049712571244418729,
    ];

    #[test]
    fn generators_match_reference_vectors() {
        // xoshiro256** from state {1, 2, 3, 4} (Vigna's reference code).
        let mut r = Rng { s: [1, 2, 3, 4] };
        let out: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(out, [11520, 0, 1509978240, 1215971899390074240]);
        // splitmix64 from 1234567.
        let mut sm = 1234567u64;
        let out: Vec<u64> = (0..3).map(|_| splitmix64(&mut sm)).collect();
        assert_eq!(
            out,
            [
                6457827717110365317,
                3203168211198807973,
                9817491932198370423
            ]
        );
    }

    #[test]
    fn rng_below_and_unit_are_in_range() {
        let mut r = Rng::seed_from(7, 3);
        let mut counts = [0u32; 6];
        for _ in 0..6000 {
            counts[r.below(6) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(r.below(0), 0);
        assert_eq!(r.below(1), 0);
        for _ in 0..1000 {
            let x = r.below(u64::MAX);
            assert!(x < u64::MAX);
            let u = r.unit_f64();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
