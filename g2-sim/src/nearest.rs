//! Exact nearest-node queries for direct initialisation: for every routing-table
//! slot, the node closest by latency among all nodes whose ids start with the
//! slot's prefix.
//!
//! Nodes sorted by id put every id prefix in one contiguous run. For each prefix
//! length whose runs are large, a copy of the sorted array is kept in which each
//! run is rearranged into an implicit k-d tree over the nodes' positions, so that
//! a query costs O(log n) instead of a scan of the run.

/// Runs up to this long are scanned.
const SCAN: usize = 32;

type Point = ([f32; 3], u32);

fn dist2(a: &[f32; 3], b: &[f32; 3]) -> f32 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)
}

/// Prefix runs of the sorted node array arranged as k-d trees, one copy per
/// prefix length that has runs longer than [`SCAN`].
pub(crate) struct PrefixIndex {
    dims: usize,
    /// `levels[d]`: runs of ids sharing `d` digits, each a k-d tree (empty when
    /// no run at that length is longer than [`SCAN`]).
    levels: Vec<Vec<Point>>,
    sorted: Vec<Point>,
}

impl PrefixIndex {
    /// `ids` sorted ascending, `points[i]` the position of the node with `ids[i]`
    /// (and `index[i]` its node index), digits of `bits` bits.
    pub(crate) fn new(
        ids: &[u128],
        points: Vec<[f32; 3]>,
        index: &[u32],
        bits: u32,
        dims: usize,
    ) -> Self {
        let sorted: Vec<Point> = points.into_iter().zip(index.iter().copied()).collect();
        let digits = (128 / bits) as usize;
        let mut levels = vec![Vec::new()];
        for d in 1..=digits {
            let shift = 128 - bits as usize * d;
            let mut level = sorted.clone();
            let mut any = false;
            let mut a = 0;
            while a < ids.len() {
                let prefix = ids[a] >> shift;
                let z = a + ids[a..].partition_point(|&x| x >> shift == prefix);
                if z - a > SCAN {
                    any = true;
                    build(&mut level[a..z], 0, dims);
                }
                a = z;
            }
            if !any {
                break;
            }
            levels.push(level);
        }
        Self {
            dims,
            levels,
            sorted,
        }
    }

    /// The node nearest to `q` among the run `[a, z)` of ids sharing `depth`
    /// digits; `None` for an empty run.
    pub(crate) fn nearest(&self, q: &[f32; 3], depth: usize, a: usize, z: usize) -> Option<u32> {
        if a >= z {
            return None;
        }
        let mut best = (f32::INFINITY, u32::MAX);
        match self.levels.get(depth) {
            Some(level) if z - a > SCAN && !level.is_empty() => {
                search(&level[a..z], 0, self.dims, q, &mut best);
            }
            _ => {
                for (p, i) in &self.sorted[a..z] {
                    let d = dist2(p, q);
                    if d < best.0 {
                        best = (d, *i);
                    }
                }
            }
        }
        Some(best.1)
    }
}

fn build(pts: &mut [Point], depth: usize, dims: usize) {
    if pts.len() <= 1 {
        return;
    }
    let axis = depth % dims;
    let mid = pts.len() / 2;
    pts.select_nth_unstable_by(mid, |a, b| {
        a.0[axis].total_cmp(&b.0[axis]).then(a.1.cmp(&b.1))
    });
    let (lo, rest) = pts.split_at_mut(mid);
    build(lo, depth + 1, dims);
    build(&mut rest[1..], depth + 1, dims);
}

fn search(pts: &[Point], depth: usize, dims: usize, q: &[f32; 3], best: &mut (f32, u32)) {
    if pts.is_empty() {
        return;
    }
    let axis = depth % dims;
    let mid = pts.len() / 2;
    let (p, i) = &pts[mid];
    let d = dist2(p, q);
    if d < best.0 || (d == best.0 && *i < best.1) {
        *best = (d, *i);
    }
    let diff = q[axis] - p[axis];
    let (near, far) = if diff < 0.0 {
        (&pts[..mid], &pts[mid + 1..])
    } else {
        (&pts[mid + 1..], &pts[..mid])
    };
    search(near, depth + 1, dims, q, best);
    if diff * diff <= best.0 {
        search(far, depth + 1, dims, q, best);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SimRng;

    #[test]
    fn finds_the_nearest_of_every_run() {
        let mut rng = SimRng::new(5, 0);
        let n = 3000;
        let mut ids: Vec<u128> = (0..n).map(|_| rng.next_u128()).collect();
        ids.sort_unstable();
        let points: Vec<[f32; 3]> = (0..n)
            .map(|_| [rng.unit() as f32, rng.unit() as f32, rng.unit() as f32])
            .collect();
        let index: Vec<u32> = (0..n as u32).collect();
        let idx = PrefixIndex::new(&ids, points.clone(), &index, 4, 3);
        for _ in 0..200 {
            let q = [rng.unit() as f32, rng.unit() as f32, rng.unit() as f32];
            let depth = 1 + rng.below(2);
            let shift = 128 - 4 * depth;
            let prefix = ids[rng.below(n)] >> shift;
            let a = ids.partition_point(|&x| x >> shift < prefix);
            let z = ids.partition_point(|&x| x >> shift <= prefix);
            let brute = (a..z)
                .min_by(|&x, &y| dist2(&points[x], &q).total_cmp(&dist2(&points[y], &q)))
                .map(|x| x as u32);
            let got = idx.nearest(&q, depth, a, z);
            let d = |o: Option<u32>| o.map(|i| dist2(&points[i as usize], &q));
            assert_eq!(d(got), d(brute));
        }
    }
}
