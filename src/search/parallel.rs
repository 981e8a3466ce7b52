//! Which points a stage probes at once when it may probe `q` of them (`--workers`), and
//! what a batch's answers do to a bracket: pure functions on numbers. With `q = 1` each
//! gives the point the one-at-a-time search probes.

/// `q` points strictly inside the bracket (`lo`, `hi`), evenly spaced in log: with `q = 1`
/// the geometric mean (the climb's halving of the bracket).
pub fn geometric_interior(lo: f64, hi: f64, q: usize) -> Vec<f64> {
    if q <= 1 {
        return vec![(lo * hi).sqrt()];
    }
    let step = (hi / lo).ln() / (q + 1) as f64;
    (1..=q).map(|i| lo * (step * i as f64).exp()).collect()
}

/// The climb's next `q` points: `d`, `d·f`, `d·f²`, … up to `max` (the largest point is
/// `max` at most once).
pub fn climb_points(d: f64, factor: f64, max: f64, q: usize) -> Vec<f64> {
    let mut v: Vec<f64> = Vec::new();
    let mut x = d.min(max);
    for _ in 0..q.max(1) {
        if v.last().is_some_and(|&l| l >= x) {
            break;
        }
        v.push(x);
        x = (x * factor).min(max);
    }
    v
}

/// Up to `q` indices strictly inside (`good`, `bad`) of a chain, evenly spaced, ascending
/// and distinct.
pub fn chain_points(good: usize, bad: usize, q: usize) -> Vec<usize> {
    let inside = bad.saturating_sub(good + 1);
    let q = q.min(inside);
    let mut v: Vec<usize> = (1..=q)
        .map(|i| good + ((bad - good) * i).div_ceil(q + 1))
        .map(|x| x.clamp(good + 1, bad - 1))
        .collect();
    v.dedup();
    v
}

/// The bracket after a batch's answers (`(point, feasible)`): `good` is the largest
/// feasible point under every infeasible one, `bad` the smallest infeasible point above
/// `good`. Answers are taken in ascending order; a feasible answer above a failure (noise)
/// moves nothing.
pub fn narrow<T: PartialOrd + Copy>(
    mut good: Option<T>,
    mut bad: Option<T>,
    answers: &[(T, bool)],
) -> (Option<T>, Option<T>) {
    let mut sorted = answers.to_vec();
    sorted.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    for (x, ok) in sorted {
        if ok {
            if bad.is_none_or(|b| x < b) && good.is_none_or(|g| x > g) {
                good = Some(x);
            }
        } else if good.is_none_or(|g| x > g) && bad.is_none_or(|b| x < b) {
            bad = Some(x);
        }
    }
    (good, bad)
}

/// A search along a chain of ever smaller width vectors, `q` probes a round: index 0 is
/// assumed to hold; `good` is the largest index a probe found feasible (each feasible probe
/// measured the very model that would be written, so any of them may be used); `bad` the
/// smallest index above it that missed. A miss is probed again (another seed) up to
/// `retries` times while it bounds the search; the other slots spread over (`good`, `bad`).
#[derive(Debug, Clone)]
pub struct Chain {
    pub good: usize,
    misses: Vec<usize>,
}

impl Chain {
    pub fn new(len: usize) -> Chain {
        Chain {
            good: 0,
            misses: vec![0; len],
        }
    }

    /// The smallest index above `good` that missed (the chain's length when none did).
    pub fn bad(&self) -> usize {
        (self.good + 1..self.misses.len())
            .find(|&i| self.misses[i] > 0)
            .unwrap_or(self.misses.len())
    }

    /// The next round's indices (empty: the search is over).
    pub fn next(&self, q: usize, retries: usize) -> Vec<usize> {
        let bad = self.bad();
        let retry = bad < self.misses.len() && self.misses[bad] <= retries && q > 0;
        let mut v = chain_points(self.good, bad, q - usize::from(retry));
        if retry {
            v.push(bad);
        }
        v
    }

    /// Takes a probe's answer.
    pub fn answer(&mut self, index: usize, feasible: bool) {
        if feasible {
            self.good = self.good.max(index);
        } else {
            self.misses[index] += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_point_is_the_geometric_mean_and_more_split_the_log_bracket() {
        assert_eq!(geometric_interior(1e-3, 4e-3, 1), vec![(4e-6f64).sqrt()]);
        let v = geometric_interior(1.0, 8.0, 2);
        assert!(
            (v[0] - 2.0).abs() < 1e-12 && (v[1] - 4.0).abs() < 1e-12,
            "{v:?}"
        );
    }

    #[test]
    fn the_climb_multiplies_and_stops_at_its_cap() {
        assert_eq!(climb_points(1.0, 2.0, 100.0, 1), vec![1.0]);
        assert_eq!(climb_points(1.0, 2.0, 100.0, 3), vec![1.0, 2.0, 4.0]);
        assert_eq!(climb_points(1.0, 2.0, 3.0, 4), vec![1.0, 2.0, 3.0]);
        assert_eq!(climb_points(5.0, 2.0, 3.0, 4), vec![3.0]);
    }

    #[test]
    fn chain_points_lie_inside_and_are_distinct() {
        assert_eq!(chain_points(0, 10, 1), vec![5]);
        assert_eq!(chain_points(0, 9, 2), vec![3, 6]);
        assert_eq!(chain_points(2, 4, 4), vec![3]);
        assert!(chain_points(3, 4, 2).is_empty());
        let v = chain_points(0, 20, 4);
        assert!(
            v.windows(2).all(|w| w[0] < w[1]) && v[0] > 0 && v[3] < 20,
            "{v:?}"
        );
    }

    #[test]
    fn the_chain_retries_a_miss_and_keeps_the_narrowest_feasible() {
        let mut c = Chain::new(10);
        assert_eq!(c.next(2, 1), vec![4, 7]);
        c.answer(4, true);
        c.answer(7, false);
        // 7 missed once: retried beside a point between 4 and 7
        assert_eq!(c.next(2, 1), vec![6, 7]);
        c.answer(6, false);
        c.answer(7, true);
        // a feasible 7 is the narrowest that held, whatever 6 said
        assert_eq!((c.good, c.bad()), (7, 10));
        assert_eq!(c.next(3, 1), vec![8, 9]);
        c.answer(8, false);
        c.answer(9, false);
        assert_eq!(c.next(1, 1), vec![8]);
        c.answer(8, false);
        // retries spent: 7 and 8 are next to each other, nothing is left to probe
        assert!(c.next(4, 1).is_empty());
    }

    #[test]
    fn a_batch_narrows_the_bracket_to_its_tightest_consistent_pair() {
        // one answer at a time: as the one-at-a-time climb decides
        assert_eq!(narrow(None, None, &[(2.0, true)]), (Some(2.0), None));
        assert_eq!(
            narrow(Some(2.0), None, &[(5.0, false)]),
            (Some(2.0), Some(5.0))
        );
        // a batch: the largest feasible under the smallest failure
        let (g, b) = narrow(Some(1.0), None, &[(4.0, false), (2.0, true), (3.0, true)]);
        assert_eq!((g, b), (Some(3.0), Some(4.0)));
        // noise: a pass above a failure moves nothing
        let (g, b) = narrow(Some(1.0), None, &[(2.0, false), (3.0, true)]);
        assert_eq!((g, b), (Some(1.0), Some(2.0)));
        assert_eq!(narrow::<usize>(Some(0), Some(9), &[]), (Some(0), Some(9)));
    }
}
