//! Significance for comparisons: Fisher's exact tests (from `outcome::stats`) and p-value
//! formatting.
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
}
