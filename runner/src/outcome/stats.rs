//! Rates of flaky outcomes: confidence intervals, two-kernel comparisons, busy-window summaries.
//!
//! Races show up as rates, not pass/fail bits, so every reported rate carries an interval and every
//! comparison between two kernels a p-value. Inputs of size zero are normal here (a cell that did not
//! run, a step that never got EBUSY) and must give defined answers, never NaN or a panic.

/// z for a two-sided 95% interval, as the reports print it ("95% Wilson interval").
pub const Z_95: f64 = 1.96;

/// Wilson score interval for `successes` out of `n` trials at normal quantile `z` (1.96 for 95%).
///
/// Unlike the normal approximation it stays inside [0, 1] and is sensible for 0/n and n/n, which is
/// exactly where flaky-bug counts live. `n == 0` gives the uninformative (0, 1); `successes > n` is
/// clamped to `n`; a negative or non-finite `z` gives (0, 1).
pub fn wilson_interval(successes: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 || !z.is_finite() || z < 0.0 {
        return (0.0, 1.0);
    }
    let k = successes.min(n);
    let (s, n) = (k as f64, n as f64);
    let p = s / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    // At 0/n and n/n one bound is exactly 0 or 1; rounding must not move it.
    let lo = if k == 0 {
        0.0
    } else {
        (center - half).max(0.0)
    };
    let hi = if k as f64 == n {
        1.0
    } else {
        (center + half).min(1.0)
    };
    (lo, hi)
}

/// [`wilson_interval`] at 95% ([`Z_95`]).
pub fn wilson_95(successes: u64, n: u64) -> (f64, f64) {
    wilson_interval(successes, n, Z_95)
}

/// Two-sided Fisher exact test on the 2x2 table `[[a, b], [c, d]]` (for example kernel A: a failed,
/// b passed; kernel B: c failed, d passed).
///
/// The p-value sums the hypergeometric probabilities of every table with the same margins that is
/// no more likely than the observed one (R's and SciPy's definition). Computed in log space, so large
/// counts neither overflow nor lose precision. Tables with an empty row or column return 1.0.
pub fn fisher_exact_two_sided(a: u64, b: u64, c: u64, d: u64) -> f64 {
    let row1 = a + b;
    let row2 = c + d;
    let col1 = a + c;
    let n = row1 + row2;
    if row1 == 0 || row2 == 0 || col1 == 0 || col1 == n {
        return 1.0;
    }
    // log P(X = x) where X counts failures in row 1 given all margins.
    let log_p =
        |x: u64| -> f64 { ln_choose(row1, x) + ln_choose(row2, col1 - x) - ln_choose(n, col1) };
    let lo = col1.saturating_sub(row2);
    let hi = row1.min(col1);
    let observed = log_p(a);
    // Relative tolerance as in R's fisher.test, so tables equal to the observed one up to rounding
    // count as "as extreme".
    let threshold = observed + 1e-7_f64.ln_1p();
    let mut total = 0.0;
    for x in lo..=hi {
        let lp = log_p(x);
        if lp <= threshold {
            total += lp.exp();
        }
    }
    total.clamp(0.0, 1.0)
}

/// One-sided Fisher exact test for "row 1 has a higher first-column proportion than row 2": the
/// probability, with the table's margins fixed, of a top-left count of `a` or more. A baseline
/// check asks this (did the failure rate go up?). Empty tables return 1.0.
pub fn fisher_exact_greater(a: u64, b: u64, c: u64, d: u64) -> f64 {
    let row1 = a + b;
    let row2 = c + d;
    let col1 = a + c;
    let n = row1 + row2;
    if n == 0 {
        return 1.0;
    }
    let hi = row1.min(col1);
    let p: f64 = (a..=hi)
        .map(|x| (ln_choose(row1, x) + ln_choose(row2, col1 - x) - ln_choose(n, col1)).exp())
        .sum();
    p.clamp(0.0, 1.0)
}

fn ln_choose(n: u64, k: u64) -> f64 {
    ln_factorial(n) - ln_factorial(k) - ln_factorial(n - k)
}

/// ln(k!): exact sum for small k, Stirling's series beyond (error below 1e-12 there).
fn ln_factorial(k: u64) -> f64 {
    if k < 256 {
        return (2..=k).map(|i| (i as f64).ln()).sum();
    }
    let x = k as f64;
    let x2 = x * x;
    x * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI * x).ln() + 1.0 / (12.0 * x)
        - 1.0 / (360.0 * x * x2)
        + 1.0 / (1260.0 * x * x2 * x2)
}

/// A p-value after the word `p`: `= 0.052`, or `< 0.001` for one that rounds to zero at three
/// decimals (`p = 0.000` read as impossible).
pub fn p_text(p: f64) -> String {
    if p < 0.001 {
        "< 0.001".into()
    } else {
        format!("= {p:.3}")
    }
}

/// Median of the finite values in `values` (NaN and infinities are ignored); `None` when there are
/// none. An even count gives the mean of the two middle values.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Largest finite value in `values`; `None` when there is none.
pub fn max(values: &[f64]) -> Option<f64> {
    values
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .max_by(f64::total_cmp)
}

#[cfg(test)]
mod tests {

    /// Fisher p of a 30/30 winner against a 2/10 default printed as `p = 0.000`.
    #[test]
    fn a_p_value_that_rounds_to_zero_reads_as_below_a_thousandth() {
        assert_eq!(p_text(fisher_exact_two_sided(30, 0, 2, 8)), "< 0.001");
        assert_eq!(p_text(0.0012), "= 0.001");
        assert_eq!(p_text(0.522), "= 0.522");
        assert_eq!(p_text(1.0), "= 1.000");
    }

    use super::*;

    fn close(got: f64, want: f64, tol: f64) -> bool {
        (got - want).abs() <= tol
    }

    #[test]
    fn wilson_matches_published_values() {
        // (successes, n, lo, hi): textbook 95% Wilson intervals (Newcombe 1998, table I; and the
        // closed form z^2 / (n + z^2) for the upper bound of 0/n).
        let table = [
            (0, 10, 0.0, 0.2775),
            (5, 10, 0.2366, 0.7634),
            (10, 10, 0.7225, 1.0),
            (81, 263, 0.2553, 0.3662),
            (15, 148, 0.0624, 0.1605),
            (6, 15, 0.1982, 0.6425),
        ];
        for (k, n, lo, hi) in table {
            let (l, h) = wilson_95(k, n);
            assert!(close(l, lo, 5e-4), "{k}/{n}: lo {l} want {lo}");
            assert!(close(h, hi, 5e-4), "{k}/{n}: hi {h} want {hi}");
        }
    }

    #[test]
    fn wilson_degenerate_inputs_stay_defined() {
        assert_eq!(wilson_95(0, 0), (0.0, 1.0));
        assert_eq!(wilson_95(3, 0), (0.0, 1.0));
        assert_eq!(wilson_interval(1, 2, f64::NAN), (0.0, 1.0));
        assert_eq!(wilson_interval(1, 2, -1.0), (0.0, 1.0));
        // More successes than trials is clamped, not a panic or a bound above 1.
        let (l, h) = wilson_95(7, 5);
        assert_eq!(h, 1.0);
        assert!(l > 0.5 && l < 1.0);
        // z = 0 collapses the interval onto the point estimate.
        let (l, h) = wilson_interval(3, 12, 0.0);
        assert!(close(l, 0.25, 1e-12) && close(h, 0.25, 1e-12));
    }

    #[test]
    fn wilson_interval_narrows_with_more_runs() {
        let (l1, h1) = wilson_95(3, 10);
        let (l2, h2) = wilson_95(300, 1000);
        assert!(h2 - l2 < h1 - l1);
        assert!(l2 < 0.3 && 0.3 < h2);
    }

    #[test]
    fn fisher_matches_known_tables() {
        // (a, b, c, d, p): Fisher's tea-tasting table and others, p computed independently with exact
        // rational arithmetic over all tables with the same margins (matches R's fisher.test).
        let table = [
            (3, 1, 1, 3, 0.485_714_3),
            (1, 9, 11, 3, 0.002_759_456),
            (0, 5, 5, 0, 0.007_936_508),
            (5, 5, 5, 5, 1.0),
            (6, 9, 3, 12, 0.426_986_5),
            (10, 0, 0, 10, 1.082_509e-5),
        ];
        for (a, b, c, d, p) in table {
            let got = fisher_exact_two_sided(a, b, c, d);
            assert!(
                close(got, p, p * 1e-4 + 1e-12),
                "[[{a},{b}],[{c},{d}]]: p = {got}, want {p}"
            );
        }
    }

    #[test]
    fn fisher_is_symmetric_and_defined_on_degenerate_tables() {
        let p = fisher_exact_two_sided(6, 9, 3, 12);
        assert!(close(fisher_exact_two_sided(3, 12, 6, 9), p, 1e-12));
        assert!(close(fisher_exact_two_sided(6, 3, 9, 12), p, 1e-12));
        for (a, b, c, d) in [
            (0, 0, 0, 0),
            (3, 0, 0, 0),
            (0, 4, 0, 7),
            (2, 3, 0, 0),
            (5, 0, 7, 0),
        ] {
            assert_eq!(
                fisher_exact_two_sided(a, b, c, d),
                1.0,
                "[[{a},{b}],[{c},{d}]]"
            );
        }
    }

    #[test]
    fn fisher_handles_large_counts() {
        // 45% vs 20% over 2000 runs each is overwhelmingly significant; over 20 runs it is not.
        let big = fisher_exact_two_sided(900, 1100, 400, 1600);
        assert!((0.0..1e-30).contains(&big), "{big}");
        let small = fisher_exact_two_sided(9, 11, 4, 16);
        assert!(small > 0.05 && small < 0.5, "{small}");
    }

    #[test]
    fn ln_factorial_is_continuous_at_the_stirling_switch() {
        let exact: f64 = (2..=300u64).map(|i| (i as f64).ln()).sum();
        assert!(close(ln_factorial(300), exact, 1e-9));
        assert!(close(
            ln_factorial(256) - ln_factorial(255),
            (256f64).ln(),
            1e-9
        ));
    }

    proptest::proptest! {
        #[test]
        fn wilson_brackets_the_rate(k in 0u64..5000, extra in 0u64..5000, z in 0.0f64..5.0) {
            let n = k + extra;
            let (lo, hi) = wilson_interval(k, n, z);
            proptest::prop_assert!((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi));
            if n > 0 {
                let p = k as f64 / n as f64;
                proptest::prop_assert!(lo <= p + 1e-12 && p <= hi + 1e-12, "{} {} {}", lo, p, hi);
            }
        }

        #[test]
        fn fisher_is_a_probability(a in 0u64..60, b in 0u64..60, c in 0u64..60, d in 0u64..60) {
            let p = fisher_exact_two_sided(a, b, c, d);
            proptest::prop_assert!(p.is_finite() && (0.0..=1.0).contains(&p));
            // Swapping the two kernels (rows) does not change the answer.
            proptest::prop_assert!((fisher_exact_two_sided(c, d, a, b) - p).abs() < 1e-9);
        }
    }

    #[test]
    fn median_and_max() {
        assert_eq!(median(&[]), None);
        assert_eq!(max(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 2.0, 4.0]), Some(3.0));
        assert_eq!(median(&[f64::NAN]), None);
        assert_eq!(max(&[0.5, 7.25, -1.0]), Some(7.25));
        assert_eq!(max(&[f64::NAN, 1.0, f64::INFINITY]), Some(1.0));
    }
}
