//! Ranked-list agreement: overlap@k and rank-biased overlap (RBO).
//!
//! RBO is the extrapolated estimator `RBO_ext` of Webber, Moffat and Zobel,
//! "A similarity measure for indefinite rankings" (ACM TOIS 28(4), 2010),
//! equation 32, which handles lists of different lengths. With `S` the
//! shorter list (length `s`), `L` the longer (length `l`) and `X_d` the
//! number of items the two share in their top `d` (for `d > s`, all of `S`
//! against the top `d` of `L`):
//!
//! ```text
//! RBO_ext = (1-p)/p · ( Σ_{d=1..l} X_d/d · p^d  +  Σ_{d=s+1..l} X_s·(d-s)/(s·d) · p^d )
//!         + ( (X_l - X_s)/l + X_s/s ) · p^l
//! ```
//!
//! Both lists are first cut to the comparison depth `k`. An item repeated
//! in one list counts once, at its first rank (a ranking names an item once).

use std::collections::HashSet;
use std::hash::Hash;

/// The persistence parameter: the top 10 ranks carry ~86 % of the weight.
pub const RBO_P: f64 = 0.9;

/// Lists up to this long are scanned instead of hashed: for a typical
/// top 10, a few dozen comparisons cost less than hashing every item.
const SCAN_BELOW: usize = 32;

/// A set of items seen so far: a scanned vector for short lists, a hash set
/// for long ones.
enum Seen<'t, T> {
    Scan(Vec<&'t T>),
    Hash(HashSet<&'t T>),
}

impl<'t, T: Eq + Hash> Seen<'t, T> {
    fn with_capacity(n: usize) -> Self {
        if n <= SCAN_BELOW {
            Seen::Scan(Vec::with_capacity(n))
        } else {
            Seen::Hash(HashSet::with_capacity(n))
        }
    }

    fn contains(&self, item: &T) -> bool {
        match self {
            Seen::Scan(v) => v.contains(&item),
            Seen::Hash(h) => h.contains(item),
        }
    }

    /// Adds `item`; `false` when it was already there.
    fn insert(&mut self, item: &'t T) -> bool {
        match self {
            Seen::Scan(v) => {
                if v.contains(&item) {
                    return false;
                }
                v.push(item);
                true
            }
            Seen::Hash(h) => h.insert(item),
        }
    }
}

/// The first `k` distinct items of `list`, in rank order.
fn top_k<T: Eq + Hash>(list: &[T], k: usize) -> Vec<&T> {
    let n = k.min(list.len());
    let mut seen = Seen::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    for item in list {
        if out.len() == k {
            break;
        }
        if seen.insert(item) {
            out.push(item);
        }
    }
    out
}

/// overlap@k: |A∩B| over the top `k` of each, divided by the longer of the
/// two truncated lists; 1 when both are empty.
pub fn overlap_at_k<T: Eq + Hash>(a: &[T], b: &[T], k: usize) -> f64 {
    let a = top_k(a, k);
    let b = top_k(b, k);
    let longer = a.len().max(b.len());
    if longer == 0 {
        return 1.0;
    }
    let mut a_set = Seen::with_capacity(a.len());
    for item in &a {
        a_set.insert(*item);
    }
    let shared = b.iter().filter(|item| a_set.contains(item)).count();
    shared as f64 / longer as f64
}

/// `RBO_ext` at depth `k` with persistence `p` (see the module docs).
/// 1 when both lists are empty, 0 when exactly one is.
pub fn rbo_ext<T: Eq + Hash>(a: &[T], b: &[T], p: f64, k: usize) -> f64 {
    let a = top_k(a, k);
    let b = top_k(b, k);
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let (s, l) = (short.len(), long.len());
    if l == 0 {
        return 1.0;
    }
    if s == 0 {
        return 0.0;
    }
    let mut seen_short = Seen::with_capacity(s);
    let mut seen_long = Seen::with_capacity(l);
    let mut overlap = 0usize; // X_d
    let mut x_s = 0usize;
    let mut sum = 0.0;
    let mut p_d = 1.0;
    for d in 1..=l {
        p_d *= p;
        let from_long = long[d - 1];
        if d <= s {
            let from_short = short[d - 1];
            if from_short == from_long {
                overlap += 1;
            } else {
                overlap += usize::from(seen_long.contains(from_short));
                overlap += usize::from(seen_short.contains(from_long));
            }
            seen_short.insert(from_short);
        } else {
            overlap += usize::from(seen_short.contains(from_long));
        }
        seen_long.insert(from_long);
        if d == s {
            x_s = overlap;
        }
        sum += overlap as f64 / d as f64 * p_d;
        if d > s {
            sum += x_s as f64 * (d - s) as f64 / (s * d) as f64 * p_d;
        }
    }
    let x_l = overlap;
    let tail = ((x_l - x_s) as f64 / l as f64 + x_s as f64 / s as f64) * p_d;
    ((1.0 - p) / p * sum + tail).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn identical_lists_agree_fully() {
        let a = ["a", "b", "c", "d", "e"];
        assert!(close(rbo_ext(&a, &a, RBO_P, 10), 1.0));
        assert!(close(rbo_ext(&a, &a, RBO_P, 3), 1.0));
        assert!(close(overlap_at_k(&a, &a, 10), 1.0));
    }

    #[test]
    fn disjoint_lists_share_nothing() {
        let a = ["a", "b", "c"];
        let b = ["x", "y", "z"];
        assert!(close(rbo_ext(&a, &b, RBO_P, 10), 0.0));
        assert!(close(overlap_at_k(&a, &b, 10), 0.0));
    }

    #[test]
    fn empty_lists() {
        let empty: [&str; 0] = [];
        assert!(close(rbo_ext(&empty, &empty, RBO_P, 10), 1.0));
        assert!(close(overlap_at_k(&empty, &empty, 10), 1.0));
        assert!(close(rbo_ext(&empty, &["a"], RBO_P, 10), 0.0));
        assert!(close(overlap_at_k(&["a"], &empty, 10), 0.0));
    }

    /// S = [a b c], T = [a c b], p = 0.9, k = 3 (even lengths, s = l = 3).
    /// X_1 = 1 (a), X_2 = 1 (b vs c), X_3 = 3.
    /// Σ X_d/d·p^d = 1·0.9 + ½·0.81 + 1·0.729 = 2.034; (1-p)/p = 1/9 → 0.226.
    /// Tail: (X_3/3)·p^3 = 0.729. RBO_ext = 0.226 + 0.729 = 0.955.
    #[test]
    fn swapped_pair_hand_worked() {
        let r = rbo_ext(&["a", "b", "c"], &["a", "c", "b"], RBO_P, 3);
        assert!(close(r, 0.955), "{r}");
    }

    /// S = [a b] (s = 2), L = [b a c] (l = 3), p = 0.9.
    /// X_1 = 0, X_2 = 2, X_3 = 2 (all of S against the top 3 of L); X_s = X_l = 2.
    /// Σ_{d=1..3} X_d/d·p^d = 0 + 1·0.81 + ⅔·0.729 = 1.296.
    /// Σ_{d=3..3} X_s·(d-s)/(s·d)·p^d = 2·1/6·0.729 = 0.243.
    /// (1/9)·(1.296 + 0.243) = 0.171. Tail: (0/3 + 2/2)·0.729 = 0.729.
    /// RBO_ext = 0.9.
    #[test]
    fn uneven_lengths_hand_worked() {
        let r = rbo_ext(&["a", "b"], &["b", "a", "c"], RBO_P, 10);
        assert!(close(r, 0.9), "{r}");
        // Symmetric in its arguments.
        let r = rbo_ext(&["b", "a", "c"], &["a", "b"], RBO_P, 10);
        assert!(close(r, 0.9), "{r}");
    }

    /// S = [a b c d], T = [e a b c], p = 0.9, k = 4.
    /// X_1 = 0, X_2 = 1 (a), X_3 = 2 (a b), X_4 = 3 (a b c).
    /// Σ X_d/d·p^d = 0 + ½·0.81 + ⅔·0.729 + ¾·0.6561
    ///             = 0.405 + 0.486 + 0.492075 = 1.383075 → /9 = 0.153675.
    /// Tail: (3/4)·0.6561 = 0.492075. RBO_ext = 0.64575.
    #[test]
    fn one_new_item_on_top_hand_worked() {
        let r = rbo_ext(&["a", "b", "c", "d"], &["e", "a", "b", "c"], RBO_P, 4);
        assert!(close(r, 0.64575), "{r}");
        // overlap@4: {a b c} shared, 3 / 4.
        let o = overlap_at_k(&["a", "b", "c", "d"], &["e", "a", "b", "c"], 4);
        assert!(close(o, 0.75), "{o}");
    }

    #[test]
    fn depth_cuts_both_lists_first() {
        // Top 2: [a b] vs [a b] → identical at depth 2.
        let r = rbo_ext(&["a", "b", "c"], &["a", "b", "z"], RBO_P, 2);
        assert!(close(r, 1.0), "{r}");
        // overlap@2 of [a b x] and [c] → [a b] vs [c]: 0 of 2.
        assert!(close(overlap_at_k(&["a", "b", "x"], &["c"], 2), 0.0));
        // overlap@3 of [a b c] and [a]: 1 shared over the longer (3).
        assert!(close(overlap_at_k(&["a", "b", "c"], &["a"], 3), 1.0 / 3.0));
    }

    #[test]
    fn repeated_items_count_once() {
        // [a a b] is [a b] as a ranking.
        let r = rbo_ext(&["a", "a", "b"], &["a", "b"], RBO_P, 10);
        assert!(close(r, 1.0), "{r}");
    }

    #[test]
    fn stays_within_zero_and_one() {
        let a: Vec<u32> = (0..40).collect();
        let b: Vec<u32> = (0..40).rev().collect();
        for k in 1..45 {
            let r = rbo_ext(&a, &b, RBO_P, k);
            assert!((0.0..=1.0).contains(&r), "k={k}: {r}");
        }
    }
}
