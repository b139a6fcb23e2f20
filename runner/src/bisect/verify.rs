//! Verdicts of the verification re-runs: sequential tests with two boundaries.

use super::model::Verdict;
use super::posterior::{binomial_pmf, Tally};

/// Clean runs that call a candidate good at confidence `confidence` when a bad one shows the
/// target with probability `p` per run: the smallest `n` with `(1-p)^n <= 1-confidence`,
/// that is `n >= ln(1-confidence)/ln(1-p)` (p = 0.3, c = 0.95: 9 runs).
pub fn clean_runs_needed(confidence: f64, p: f64) -> u64 {
    if p >= 1.0 {
        return 1;
    }
    if p <= 0.0 {
        return u64::MAX;
    }
    let n = ((1.0 - confidence).ln() / (1.0 - p).ln()).ceil();
    // Rounding can put an exact boundary one run too high or low; check the definition.
    let mut n = n.max(1.0) as u64;
    while n > 1 && (1.0 - p).powi((n - 1) as i32) <= 1.0 - confidence {
        n -= 1;
    }
    while (1.0 - p).powi(n as i32) > 1.0 - confidence {
        n += 1;
    }
    n
}

/// `P(X >= k)` for `X ~ Binomial(n, q)`.
fn upper_tail(n: u64, k: u64, q: f64) -> f64 {
    let pmf = binomial_pmf(n as u32, q);
    pmf.iter().skip(k as usize).sum::<f64>().min(1.0)
}

/// `P(X <= k)` for `X ~ Binomial(n, q)`.
fn lower_tail(n: u64, k: u64, q: f64) -> f64 {
    let pmf = binomial_pmf(n as u32, q);
    pmf.iter().take(k as usize + 1).sum::<f64>().min(1.0)
}

/// "Bad" holds when so many failures would be this unlikely from a good candidate (rate `fp`):
/// with `fp = 0`, one failure.
pub fn bad_holds(t: Tally, fp: f64, confidence: f64) -> bool {
    if t.failures == 0 {
        return false;
    }
    fp == 0.0 || upper_tail(t.iterations, t.failures, fp) <= 1.0 - confidence
}

/// "Good" holds when so few failures would be this unlikely from a bad candidate (rate `p`):
/// with no failures, `clean_runs_needed(confidence, p)` runs.
pub fn good_holds(t: Tally, p: f64, confidence: f64) -> bool {
    t.iterations > 0 && lower_tail(t.iterations, t.failures, p) <= 1.0 - confidence
}

/// The verdict after `t`, or `None` while neither holds and `cap` iterations were not reached.
pub fn verdict(t: Tally, p: f64, fp: f64, confidence: f64, cap: u64) -> Option<Verdict> {
    match (bad_holds(t, fp, confidence), good_holds(t, p, confidence)) {
        (true, false) => Some(Verdict::Bad),
        (false, true) => Some(Verdict::Good),
        (true, true) => Some(Verdict::Inconclusive),
        (false, false) if t.iterations >= cap => Some(Verdict::Inconclusive),
        (false, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_runs_match_the_reference_table() {
        // REFERENCE.md: p = 0.3, c = 0.95: 9 runs; p = 0.1: 29 runs.
        assert_eq!(clean_runs_needed(0.95, 0.3), 9);
        assert_eq!(clean_runs_needed(0.95, 0.1), 29);
        assert_eq!(clean_runs_needed(0.95, 1.0), 1);
        assert_eq!(clean_runs_needed(0.99, 0.5), 7);
    }

    fn t(iterations: u64, failures: u64) -> Tally {
        Tally {
            iterations,
            failures,
        }
    }

    #[test]
    fn verdict_table() {
        let cases: &[(Tally, f64, Option<Verdict>)] = &[
            (t(1, 1), 0.0, Some(Verdict::Bad)),
            (t(8, 0), 0.0, None),
            (t(9, 0), 0.0, Some(Verdict::Good)),
            (t(100, 0), 0.0, Some(Verdict::Good)),
            // fp = 0.04: P(X >= 1 | 1 run) = 0.04 <= 0.05, so one failure is enough.
            (t(1, 1), 0.04, Some(Verdict::Bad)),
            // P(X >= 1 | 5, 0.05) = 0.226: not bad yet, and not good either.
            (t(5, 1), 0.05, None),
            // P(X >= 3 | 5, 0.05) = 0.00116: bad.
            (t(5, 3), 0.05, Some(Verdict::Bad)),
            (t(120, 0), 0.0, Some(Verdict::Good)),
        ];
        for (tally, fp, want) in cases {
            assert_eq!(
                verdict(*tally, 0.3, *fp, 0.95, 100),
                *want,
                "{tally:?} fp {fp}"
            );
        }
        // Neither holds and the cap is reached.
        assert_eq!(
            verdict(t(4, 1), 0.3, 0.2, 0.95, 4),
            Some(Verdict::Inconclusive)
        );
    }
}
