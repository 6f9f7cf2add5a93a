//! Tours: the canonical form, the fingerprint, the order on results, the
//! islands' ring.

use super::Tour;

/// The canonical form of a closed tour: rotated to start at its lowest city,
/// then read in the direction whose second city is the smaller one. Tours
/// that are rotations or reversals of each other normalise to the same vector.
pub fn normalise(tour: &[u32]) -> Tour {
    let n = tour.len();
    let Some(start) = tour
        .iter()
        .enumerate()
        .min_by_key(|&(i, &c)| (c, i))
        .map(|(i, _)| i)
    else {
        return Vec::new();
    };
    let forward = tour[(start + 1) % n];
    let backward = tour[(start + n - 1) % n];
    if forward <= backward {
        (0..n).map(|k| tour[(start + k) % n]).collect()
    } else {
        (0..n).map(|k| tour[(start + n - k) % n]).collect()
    }
}

/// Hex BLAKE3 of the normalised tour, each city encoded as a little-endian
/// `u32`: a fingerprint that is the same for every rotation and reversal.
pub fn tour_blake3(tour: &[u32]) -> String {
    let mut hasher = blake3::Hasher::new();
    for c in normalise(tour) {
        hasher.update(&c.to_le_bytes());
    }
    hasher.finalize().to_hex().to_string()
}

/// The total order on `(tour, length)` results: the shorter tour is better;
/// at equal length the lexicographically smaller normalised tour is. Returns
/// whether `a` is strictly better than `b` (false for the same tour).
pub fn better(a: (&[u32], u64), b: (&[u32], u64)) -> bool {
    match a.1.cmp(&b.1) {
        std::cmp::Ordering::Less => true,
        std::cmp::Ordering::Greater => false,
        std::cmp::Ordering::Equal => normalise(a.0) < normalise(b.0),
    }
}

/// The ring neighbours of island `index` among `islands`: left (`i - 1`)
/// then right (`i + 1`) modulo `islands`, without duplicates or `index`
/// itself. One island has none; two islands have each other.
pub fn ring_neighbours(index: u32, islands: u32) -> Vec<u32> {
    if islands <= 1 {
        return Vec::new();
    }
    let i = u64::from(index % islands);
    let k = u64::from(islands);
    // Computed in u64 so that `islands` near u32::MAX cannot overflow.
    let left = ((i + k - 1) % k) as u32;
    let right = ((i + 1) % k) as u32;
    if left == right {
        vec![left]
    } else {
        vec![left, right]
    }
}

/// Whether `tour` is a permutation of `0..n`.
pub fn is_permutation(tour: &[u32], n: usize) -> bool {
    if tour.len() != n {
        return false;
    }
    let mut seen = vec![false; n];
    for &c in tour {
        match seen.get_mut(c as usize) {
            Some(s) if !*s => *s = true,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_and_blake3_ignore_rotation_and_reversal() {
        let tour: Vec<u32> = vec![3, 1, 4, 0, 5, 2, 6];
        let canon = normalise(&tour);
        assert_eq!(canon[0], 0);
        assert!(canon[1] < canon[canon.len() - 1]);
        assert_eq!(canon, vec![0, 4, 1, 3, 6, 2, 5]);
        let hash = tour_blake3(&tour);
        assert_eq!(hash.len(), 64);
        for r in 0..tour.len() {
            let mut rotated = tour.clone();
            rotated.rotate_left(r);
            assert_eq!(normalise(&rotated), canon);
            assert_eq!(tour_blake3(&rotated), hash);
            rotated.reverse();
            assert_eq!(normalise(&rotated), canon);
            assert_eq!(tour_blake3(&rotated), hash);
        }
        assert_ne!(tour_blake3(&[0, 1, 2, 3, 4]), tour_blake3(&[0, 2, 1, 3, 4]));
        assert_eq!(normalise(&[]), Vec::<u32>::new());
        assert_eq!(normalise(&[5]), vec![5]);
        assert_eq!(normalise(&[1, 0]), vec![0, 1]);
    }

    #[test]
    fn better_is_a_total_order() {
        let a = [0u32, 1, 2, 3];
        let b = [0u32, 2, 1, 3];
        assert!(better((&a, 10), (&b, 11)));
        assert!(!better((&b, 11), (&a, 10)));
        // Equal lengths: the smaller normalised tour wins, whatever rotation.
        assert!(better((&[2, 3, 0, 1], 10), (&b, 10)));
        assert!(!better((&b, 10), (&[2, 3, 0, 1], 10)));
        // The same tour is not better than itself.
        assert!(!better((&a, 10), (&[3, 2, 1, 0], 10)));
    }

    #[test]
    fn ring_neighbours_cases() {
        assert_eq!(ring_neighbours(0, 1), Vec::<u32>::new());
        assert_eq!(ring_neighbours(0, 0), Vec::<u32>::new());
        assert_eq!(ring_neighbours(0, 2), vec![1]);
        assert_eq!(ring_neighbours(1, 2), vec![0]);
        assert_eq!(ring_neighbours(0, 3), vec![2, 1]);
        assert_eq!(ring_neighbours(1, 3), vec![0, 2]);
        assert_eq!(ring_neighbours(2, 3), vec![1, 0]);
        assert_eq!(ring_neighbours(0, 8), vec![7, 1]);
        assert_eq!(ring_neighbours(5, 8), vec![4, 6]);
        assert_eq!(ring_neighbours(7, 8), vec![6, 0]);
        assert_eq!(
            ring_neighbours(u32::MAX - 1, u32::MAX),
            vec![u32::MAX - 2, 0]
        );
    }
}
