//! Significance for comparisons and baseline checks: Fisher's exact tests (from
//! `outcome::stats`), Holm's correction for many tests at once, and p-value formatting.
//!
//! The table is `[[a, b], [c, d]]`: for the comparisons here, row 1 is one kernel (failed,
//! passed), row 2 the other.

pub use crate::outcome::stats::{fisher_exact_greater, fisher_exact_two_sided};

/// p-values as people read them: `p = 0.03`, `p = 0.0028`, `p < 0.001`, `p = 1`.
pub fn format_p(p: f64) -> String {
    if p < 0.001 {
        "p < 0.001".into()
    } else if p < 0.01 {
        format!("p = {p:.4}")
    } else if p >= 0.995 {
        "p = 1".into()
    } else {
        format!("p = {p:.2}")
    }
}

/// Holm's step-down adjustment of `p` (same order): the i-th smallest is multiplied by the
/// number of p-values not smaller than it, never below an adjusted p before it, at most 1.
/// Rejecting every adjusted p below alpha keeps the chance of any false difference at alpha.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut adjusted = vec![1.0; m];
    let mut floor: f64 = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        floor = floor.max(((m - rank) as f64 * p[i]).min(1.0));
        adjusted[i] = floor;
    }
    adjusted
}

/// The smallest p that [`fisher_exact_greater`] could give for `[[a, b], [c, d]]` with the
/// table's margins: as many first-column counts in row 1 as fit. A cell whose floor is above
/// a threshold can never pass it, whatever happened; Tarone's correction does not count it.
pub fn fisher_greater_floor(a: u64, b: u64, c: u64, d: u64) -> f64 {
    let (row1, col1) = (a + b, a + c);
    let x = row1.min(col1);
    fisher_exact_greater(x, row1 - x, col1 - x, c + d - (col1 - x))
}

/// Holm's step-down with Tarone's count of tests, for discrete tests such as Fisher's: at
/// each step the family is not every test left but the smallest K for which at most K of the
/// tests left could reach `alpha / K` at all (their `floor`, [`fisher_greater_floor`]). A
/// cell that failed in none of 40 iterations, before and now, cannot show a rise, so it does
/// not dilute the one that can. Returns, per test, the K it was rejected at (`p < alpha / K`),
/// or `None`.
///
/// Valid for the family-wise error like Holm's: each step is Tarone's level-alpha test of
/// what is left (Tarone 1990), whose K never grows for a subset, so it is a shortcut of the
/// closed test.
pub fn tarone_holm(p: &[f64], floor: &[f64], alpha: f64) -> Vec<Option<usize>> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut rejected = vec![None; p.len()];
    // Floors of the tests not yet rejected, ascending.
    let mut left: Vec<f64> = floor.to_vec();
    left.sort_by(f64::total_cmp);
    for i in order {
        let k = (1..=left.len())
            .find(|&k| left.partition_point(|&f| f < alpha / k as f64) <= k)
            .unwrap_or(1);
        if p[i] >= alpha / k as f64 {
            break;
        }
        rejected[i] = Some(k);
        let at = left.partition_point(|&f| f < floor[i]);
        left.remove(at);
    }
    rejected
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64) -> bool {
        // References are quoted to 4 significant digits.
        (got - want).abs() <= 5e-4 * want
    }

    // Reference values: R's fisher.test for the first two tables, the rest summed exactly
    // over rationals (Python `fractions` and `math.comb`), independently of this code.
    #[test]
    fn two_sided_matches_known_tables() {
        for (t, want) in [
            ([3, 1, 1, 3], 0.4857),     // Fisher's tea tasting
            ([1, 9, 11, 3], 0.002759),  // Wikipedia's example
            ([9, 11, 4, 16], 0.175996), // 45% vs 20% of 20
            ([6, 9, 3, 12], 0.426987),  // 6/15 vs 3/15 (the seed's 6.1 and 6.12 counts)
            ([0, 20, 0, 20], 1.0),
            ([10, 0, 0, 10], 1.0825e-5),
        ] {
            let p = fisher_exact_two_sided(t[0], t[1], t[2], t[3]);
            assert!(close(p, want), "{t:?}: {p} vs {want}");
        }
        assert_eq!(fisher_exact_two_sided(0, 0, 0, 0), 1.0);
    }

    #[test]
    fn one_sided_matches_known_tables() {
        for (t, want) in [
            ([3, 1, 1, 3], 0.2429),
            ([1, 9, 11, 3], 0.9999663),
            ([11, 3, 1, 9], 0.00137973),
            ([9, 11, 4, 16], 0.087998),
        ] {
            let p = fisher_exact_greater(t[0], t[1], t[2], t[3]);
            assert!(close(p, want), "{t:?}: {p} vs {want}");
        }
    }

    #[test]
    fn formats_p_values() {
        assert_eq!(format_p(0.0312), "p = 0.03");
        assert_eq!(format_p(0.002759), "p = 0.0028");
        assert_eq!(format_p(0.0001), "p < 0.001");
        assert_eq!(format_p(0.999), "p = 1");
        assert_eq!(format_p(0.4857), "p = 0.49");
    }

    #[test]
    fn holm_multiplies_each_p_by_the_p_values_left_and_never_lets_one_fall_below_an_earlier() {
        let a = holm(&[0.01, 0.04, 0.03, 0.5]);
        // Sorted: 0.01 x 4, 0.03 x 3, 0.04 x 2 (0.08, raised to 0.09), 0.5 x 1.
        let want = [0.04, 0.09, 0.09, 0.5];
        for (got, want) in a.iter().zip(want) {
            assert!((got - want).abs() < 1e-12, "{a:?}");
        }
        assert_eq!(holm(&[0.6, 0.7]), [1.0, 1.0]);
        assert_eq!(holm(&[0.02]), [0.02]);
        assert!(holm(&[]).is_empty());
    }

    #[test]
    fn the_floor_is_the_p_of_every_failure_in_row_one() {
        // Nothing failed anywhere: nothing can be significant.
        assert_eq!(fisher_greater_floor(0, 20, 0, 20), 1.0);
        // Two failures in all: at best both in row 1, C(20,2)/C(40,2) = 190/780.
        let f = fisher_greater_floor(1, 19, 1, 19);
        assert!((f - 190.0 / 780.0).abs() < 1e-12, "{f}");
        // More failures than row 1 holds: row 1 all failed.
        let f = fisher_greater_floor(3, 2, 4, 1);
        assert!((f - fisher_exact_greater(5, 0, 2, 3)).abs() < 1e-12, "{f}");
        for t in [
            [3, 17, 2, 18],
            [0, 20, 5, 15],
            [12, 8, 2, 18],
            [0, 3, 0, 40],
        ] {
            let (floor, p) = (
                fisher_greater_floor(t[0], t[1], t[2], t[3]),
                fisher_exact_greater(t[0], t[1], t[2], t[3]),
            );
            assert!(floor <= p, "{t:?}: floor {floor} above p {p}");
        }
    }

    /// Tests that cannot reach the threshold do not count: the second p passes here, where
    /// plain Holm (0.02 x 3) would stop at it.
    #[test]
    fn tarone_holm_counts_only_tests_that_could_pass() {
        let p = [0.001, 0.02, 0.3, 0.5];
        let floor = [0.0001, 0.001, 0.6, 0.6];
        // Step 1: two floors under 0.05, none of them under 0.05/2 fails to fit: K = 2.
        // Step 2: one floor left under 0.05: K = 1. Step 3: 0.3 >= 0.05, stop.
        assert_eq!(
            tarone_holm(&p, &floor, 0.05),
            [Some(2), Some(1), None, None]
        );
        let holm_says: Vec<bool> = holm(&p).iter().map(|&a| a < 0.05).collect();
        assert_eq!(holm_says, [true, false, false, false]);
        // Every floor low: the same as Holm.
        let floor = [0.0; 4];
        assert_eq!(tarone_holm(&p, &floor, 0.05), [Some(4), None, None, None]);
        assert_eq!(tarone_holm(&[0.04], &[0.0], 0.05), [Some(1)]);
        assert_eq!(tarone_holm(&[0.05], &[0.0], 0.05), [None]);
        assert!(tarone_holm(&[], &[], 0.05).is_empty());
    }
}
