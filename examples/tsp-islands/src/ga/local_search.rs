//! Local search: 2-opt + Or-opt with candidate lists and don't-look bits.

use std::collections::VecDeque;

use super::island_core::GaParams;
use crate::tsplib::DistMatrix;

/// Scratch space for local search; rebuilt from the matrix each epoch and
/// never part of the island state.
pub(super) struct Search<'m> {
    m: &'m DistMatrix,
    n: usize,
    /// `k` nearest cities of each city, nearest first (ties by index).
    neigh: Vec<u32>,
    k: usize,
    or_opt: bool,
    pos: Vec<usize>,
    queue: VecDeque<u32>,
    queued: Vec<bool>,
    buf: Vec<u32>,
    adj: Vec<[u32; 4]>,
}

impl<'m> Search<'m> {
    pub(super) fn new(m: &'m DistMatrix, params: &GaParams) -> Self {
        let n = m.n();
        let k = params.neighbours.min(n.saturating_sub(1));
        let mut neigh = Vec::with_capacity(n * k);
        let mut others: Vec<(u32, u32)> = Vec::with_capacity(n);
        for i in 0..n as u32 {
            others.clear();
            let row = m.row(i);
            others.extend(
                (0..n as u32)
                    .filter(|&j| j != i)
                    .map(|j| (row[j as usize], j)),
            );
            if k < others.len() {
                others.select_nth_unstable(k);
                others.truncate(k);
            }
            others.sort_unstable();
            neigh.extend(others.iter().map(|&(_, j)| j));
        }
        Search {
            m,
            n,
            neigh,
            k,
            or_opt: params.or_opt,
            pos: vec![0; n],
            queue: VecDeque::with_capacity(n),
            queued: vec![false; n],
            buf: Vec::with_capacity(n),
            adj: vec![[0; 4]; n],
        }
    }

    #[inline]
    fn d(&self, a: u32, b: u32) -> i64 {
        i64::from(self.m.d(a, b))
    }

    fn push(&mut self, c: u32) {
        if !self.queued[c as usize] {
            self.queued[c as usize] = true;
            self.queue.push_back(c);
        }
    }

    pub(super) fn queue_all(&mut self, n: usize) {
        for c in 0..n as u32 {
            self.push(c);
        }
    }

    /// Queues the endpoints of the child's edges found in neither parent:
    /// the parents are local optima, so improvements start at new edges.
    pub(super) fn queue_new_edges(&mut self, child: &[u32], p1: &[u32], p2: &[u32]) {
        let n = child.len();
        if n < 2 {
            return;
        }
        for (i, (&a, &b)) in p1.iter().zip(p2).enumerate() {
            let a_next = p1[(i + 1) % n];
            let b_next = p2[(i + 1) % n];
            self.adj[a as usize][0] = a_next;
            self.adj[a_next as usize][1] = a;
            self.adj[b as usize][2] = b_next;
            self.adj[b_next as usize][3] = b;
        }
        for i in 0..n {
            let u = child[i];
            let v = child[(i + 1) % n];
            if !self.adj[u as usize].contains(&v) {
                self.push(u);
                self.push(v);
            }
        }
    }

    /// Improves `tour` from the queued cities until no queued city has an
    /// improving move; leaves the queue empty.
    pub(super) fn improve(&mut self, tour: &mut [u32]) {
        let n = tour.len();
        if n < 4 {
            // Every tour of fewer than four cities is optimal.
            while let Some(c) = self.queue.pop_front() {
                self.queued[c as usize] = false;
            }
            return;
        }
        debug_assert_eq!(n, self.n);
        for (i, &c) in tour.iter().enumerate() {
            self.pos[c as usize] = i;
        }
        #[cfg(test)]
        let mut expected = self.m.tour_length(tour);
        while let Some(a) = self.queue.pop_front() {
            self.queued[a as usize] = false;
            loop {
                let gain = match self.two_opt(tour, a) {
                    Some(g) => g,
                    None if self.or_opt => match self.or_move(tour, a) {
                        Some(g) => g,
                        None => break,
                    },
                    None => break,
                };
                #[cfg(test)]
                {
                    // Every applied move must shorten the tour by exactly its gain.
                    assert!(gain > 0);
                    expected -= gain as u64;
                    assert_eq!(self.m.tour_length(tour), expected);
                }
                #[cfg(not(test))]
                let _ = gain;
            }
        }
    }

    #[inline]
    fn succ(&self, tour: &[u32], c: u32) -> u32 {
        let p = self.pos[c as usize] + 1;
        tour[if p == self.n { 0 } else { p }]
    }

    #[inline]
    fn pred(&self, tour: &[u32], c: u32) -> u32 {
        let p = self.pos[c as usize];
        tour[if p == 0 { self.n - 1 } else { p - 1 }]
    }

    /// First improving 2-opt move that adds an edge from `a` to one of its
    /// candidates; applies it and returns its gain.
    fn two_opt(&mut self, tour: &mut [u32], a: u32) -> Option<i64> {
        let a_succ = self.succ(tour, a);
        let a_pred = self.pred(tour, a);
        let d_succ = self.d(a, a_succ);
        let d_pred = self.d(a_pred, a);
        let base = a as usize * self.k;
        for idx in base..base + self.k {
            let c = self.neigh[idx];
            let d_ac = self.d(a, c);
            if d_ac >= d_succ && d_ac >= d_pred {
                break;
            }
            if d_ac < d_succ {
                let c_succ = self.succ(tour, c);
                if c != a_succ && c_succ != a {
                    let gain = d_succ + self.d(c, c_succ) - d_ac - self.d(a_succ, c_succ);
                    if gain > 0 {
                        // a a' .. c c'  ->  a c .. a' c'
                        let from = self.pos[a_succ as usize];
                        let to = self.pos[c as usize];
                        self.reverse(tour, from, to);
                        for x in [a, a_succ, c, c_succ] {
                            self.push(x);
                        }
                        return Some(gain);
                    }
                }
            }
            if d_ac < d_pred {
                let c_pred = self.pred(tour, c);
                if c != a_pred && c_pred != a {
                    let gain = d_pred + self.d(c_pred, c) - d_ac - self.d(a_pred, c_pred);
                    if gain > 0 {
                        // 'c c .. 'a a  ->  'c 'a .. c a
                        let from = self.pos[c as usize];
                        let to = self.pos[a_pred as usize];
                        self.reverse(tour, from, to);
                        for x in [a, a_pred, c, c_pred] {
                            self.push(x);
                        }
                        return Some(gain);
                    }
                }
            }
        }
        None
    }

    /// Reverses the cyclic stretch of positions `from..=to` (or, if shorter,
    /// the rest of the tour, which gives the same cycle).
    fn reverse(&mut self, tour: &mut [u32], from: usize, to: usize) {
        let n = self.n;
        let len = (to + n - from) % n + 1;
        let (mut i, mut j, len) = if 2 * len > n {
            ((to + 1) % n, (from + n - 1) % n, n - len)
        } else {
            (from, to, len)
        };
        for _ in 0..len / 2 {
            tour.swap(i, j);
            self.pos[tour[i] as usize] = i;
            self.pos[tour[j] as usize] = j;
            i = if i + 1 == n { 0 } else { i + 1 };
            j = if j == 0 { n - 1 } else { j - 1 };
        }
    }

    /// First improving Or-opt move of a segment of 1–3 cities with `a` at one
    /// end, reinserted (either way round) next to one of `a`'s candidates;
    /// applies it and returns its gain.
    fn or_move(&mut self, tour: &mut [u32], a: u32) -> Option<i64> {
        let n = self.n;
        let pa = self.pos[a as usize];
        for seg_len in 1..=3usize {
            if n < seg_len + 3 {
                break;
            }
            for forward in [true, false] {
                if seg_len == 1 && !forward {
                    break;
                }
                // Segment in tour order: first ..= last.
                let (first_pos, e) = if forward {
                    (pa, tour[(pa + seg_len - 1) % n])
                } else {
                    (
                        (pa + n - (seg_len - 1)) % n,
                        tour[(pa + n - (seg_len - 1)) % n],
                    )
                };
                let (first, last) = if forward { (a, e) } else { (e, a) };
                let p = self.pred(tour, first);
                let nx = self.succ(tour, last);
                let removal = self.d(p, first) + self.d(last, nx) - self.d(p, nx);
                if removal <= 0 {
                    continue;
                }
                let in_seg = |pos: usize| (pos + n - first_pos) % n < seg_len;
                let base = a as usize * self.k;
                for idx in base..base + self.k {
                    let c = self.neigh[idx];
                    let d_ac = self.d(a, c);
                    if d_ac >= removal {
                        break;
                    }
                    if in_seg(self.pos[c as usize]) {
                        continue;
                    }
                    // c a .. e c'
                    let c_succ = self.succ(tour, c);
                    if !in_seg(self.pos[c_succ as usize]) {
                        let add = d_ac + self.d(e, c_succ) - self.d(c, c_succ);
                        if removal > add {
                            self.move_segment(tour, first_pos, seg_len, c, c_succ, a);
                            for x in [p, nx, a, e, c, c_succ] {
                                self.push(x);
                            }
                            return Some(removal - add);
                        }
                    }
                    // 'c e .. a c
                    let c_pred = self.pred(tour, c);
                    if !in_seg(self.pos[c_pred as usize]) {
                        let add = d_ac + self.d(e, c_pred) - self.d(c_pred, c);
                        if removal > add {
                            self.move_segment(tour, first_pos, seg_len, c_pred, c, e);
                            for x in [p, nx, a, e, c, c_pred] {
                                self.push(x);
                            }
                            return Some(removal - add);
                        }
                    }
                }
            }
        }
        None
    }

    /// Moves the segment at `first_pos..first_pos + seg_len` between the
    /// adjacent cities `u` and `v` (`v` follows `u`), with the segment end
    /// `next_to_u` placed next to `u`.
    fn move_segment(
        &mut self,
        tour: &mut [u32],
        first_pos: usize,
        seg_len: usize,
        u: u32,
        v: u32,
        next_to_u: u32,
    ) {
        let n = self.n;
        self.buf.clear();
        let seg = (0..seg_len).map(|k| tour[(first_pos + k) % n]);
        if tour[first_pos] == next_to_u {
            self.buf.extend(seg);
        } else {
            let mut s: Vec<u32> = seg.collect();
            s.reverse();
            self.buf.extend(s);
        }
        let mut p = self.pos[v as usize];
        while self.buf.len() < n {
            if (p + n - first_pos) % n >= seg_len {
                self.buf.push(tour[p]);
            }
            p = if p + 1 == n { 0 } else { p + 1 };
        }
        debug_assert_eq!(self.buf.last(), Some(&u));
        tour.copy_from_slice(&self.buf);
        for (i, &c) in tour.iter().enumerate() {
            self.pos[c as usize] = i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ga::Tour;
    use crate::ga::rng::Rng;
    use crate::ga::test_fixtures::random_matrix;
    use crate::ga::tour::is_permutation;

    #[test]
    fn local_search_keeps_permutation_and_improves() {
        for (n, seed) in [4usize, 5, 6, 7, 9, 12, 40]
            .into_iter()
            .flat_map(|n| (0..8).map(move |s| (n, s)))
        {
            let m = random_matrix(n, seed);
            let params = GaParams::default();
            let mut search = Search::new(&m, &params);
            let mut rng = Rng::seed_from(seed, 1);
            let mut tour: Tour = (0..n as u32).collect();
            for i in (1..n).rev() {
                tour.swap(i, rng.index(i + 1));
            }
            let before = m.tour_length(&tour);
            search.queue_all(n);
            // Gains are checked move by move inside `improve` in tests.
            search.improve(&mut tour);
            assert!(is_permutation(&tour, n));
            assert!(m.tour_length(&tour) <= before);
            if n == 40 {
                assert!(m.tour_length(&tour) < before);
            }
            assert!(search.queue.is_empty());
        }
    }
}
