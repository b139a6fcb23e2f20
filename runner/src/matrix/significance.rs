//! Fisher's exact test on 2x2 tables of counts.
//!
//! The table is `[[a, b], [c, d]]`: for the comparisons here, row 1 is one kernel (failed,
//! passed), row 2 the other. With both margins fixed, `a` follows a hypergeometric
//! distribution; the p-values sum its probabilities.
//
// The outcome module gets `stats::fisher_exact_two_sided` from another branch; this one can
// then be replaced by a re-export (same signature).

/// Two-sided p: the probability, under independence, of a table at most as likely as the
/// observed one (R's `fisher.test` convention, with the same relative tolerance for ties).
pub fn fisher_exact_two_sided(a: u64, b: u64, c: u64, d: u64) -> f64 {
    let Some(t) = Table::new(a, b, c, d) else {
        return 1.0;
    };
    let observed = t.log_p(a);
    // Tables whose probability equals the observed one up to rounding count as "as extreme".
    let bound = observed + 1e-7_f64.ln_1p();
    let p: f64 = (t.lo..=t.hi)
        .map(|x| t.log_p(x))
        .filter(|&lp| lp <= bound)
        .map(f64::exp)
        .sum();
    p.min(1.0)
}

/// One-sided p for "row 1 has a higher first-column proportion than row 2": the probability
/// of a top-left count of `a` or more.
pub fn fisher_exact_greater(a: u64, b: u64, c: u64, d: u64) -> f64 {
    let Some(t) = Table::new(a, b, c, d) else {
        return 1.0;
    };
    let p: f64 = (a..=t.hi).map(|x| t.log_p(x).exp()).sum();
    p.min(1.0)
}

/// Margins of a 2x2 table and the log-probability of each possible top-left count.
struct Table {
    row1: u64,
    col1: u64,
    n: u64,
    lo: u64,
    hi: u64,
    ln_fact: Vec<f64>,
}

impl Table {
    /// `None` for an empty table (every p is 1 then).
    fn new(a: u64, b: u64, c: u64, d: u64) -> Option<Table> {
        let n = a + b + c + d;
        if n == 0 {
            return None;
        }
        let row1 = a + b;
        let col1 = a + c;
        let mut ln_fact = Vec::with_capacity(n as usize + 1);
        ln_fact.push(0.0);
        for i in 1..=n {
            let prev = ln_fact[i as usize - 1];
            ln_fact.push(prev + (i as f64).ln());
        }
        Some(Table {
            row1,
            col1,
            n,
            lo: (row1 + col1).saturating_sub(n),
            hi: row1.min(col1),
            ln_fact,
        })
    }

    fn ln_choose(&self, n: u64, k: u64) -> f64 {
        self.ln_fact[n as usize] - self.ln_fact[k as usize] - self.ln_fact[(n - k) as usize]
    }

    /// log P(top-left = x) given the margins.
    fn log_p(&self, x: u64) -> f64 {
        self.ln_choose(self.row1, x) + self.ln_choose(self.n - self.row1, self.col1 - x)
            - self.ln_choose(self.n, self.col1)
    }
}

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
