//! Variation operators: order crossover and the double-bridge move.

use super::Tour;
use super::rng::Rng;

/// Order crossover (OX): copies a random slice of `p1` into `child` at the
/// same positions, then fills the rest, starting after the slice, with the
/// missing cities in `p2`'s order from the same point.
pub(super) fn order_crossover(p1: &[u32], p2: &[u32], child: &mut Tour, rng: &mut Rng) {
    let n = p1.len();
    child.clear();
    child.extend_from_slice(p1);
    if n < 3 {
        return;
    }
    let mut i = rng.index(n);
    let mut j = rng.index(n);
    if i > j {
        std::mem::swap(&mut i, &mut j);
    }
    let mut used = vec![false; n];
    for &c in &p1[i..=j] {
        used[c as usize] = true;
    }
    let mut write = (j + 1) % n;
    for k in 0..n {
        let c = p2[(j + 1 + k) % n];
        if !used[c as usize] {
            child[write] = c;
            write = (write + 1) % n;
        }
    }
}

/// Double-bridge move: cuts the tour into A B C D and reconnects it as
/// A C B D, a perturbation 2-opt and Or-opt cannot simply undo.
pub(super) fn double_bridge(tour: &mut Tour, rng: &mut Rng) {
    let n = tour.len();
    if n < 8 {
        if n >= 2 {
            let i = rng.index(n);
            let j = rng.index(n);
            tour.swap(i, j);
        }
        return;
    }
    let mut cuts = [0usize; 3];
    loop {
        for c in &mut cuts {
            *c = 1 + rng.index(n - 1);
        }
        cuts.sort_unstable();
        if cuts[0] < cuts[1] && cuts[1] < cuts[2] {
            break;
        }
    }
    let [x, y, z] = cuts;
    let mut out = Vec::with_capacity(n);
    out.extend_from_slice(&tour[..x]);
    out.extend_from_slice(&tour[y..z]);
    out.extend_from_slice(&tour[x..y]);
    out.extend_from_slice(&tour[z..]);
    *tour = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ga::tour::is_permutation;

    #[test]
    fn operators_keep_permutations() {
        let mut rng = Rng::seed_from(3, 3);
        for n in [0usize, 1, 2, 3, 5, 8, 13] {
            let p1: Tour = (0..n as u32).collect();
            let mut p2 = p1.clone();
            p2.reverse();
            p2.rotate_left(n / 3);
            let mut child = Vec::new();
            for _ in 0..20 {
                order_crossover(&p1, &p2, &mut child, &mut rng);
                assert!(is_permutation(&child, n));
                double_bridge(&mut child, &mut rng);
                assert!(is_permutation(&child, n));
            }
        }
    }
}
