//! Rate comparisons between two kernels: the ends before the search, the culprit against its
//! parent after it, and how many iterations a difference would need.

use super::model::{Comparison, MeasuredRate, RatePrior};
use super::posterior::{binomial_pmf, order_bayes_factor, prob_greater, RateGrid, Tally};
use crate::outcome::stats::fisher_exact_greater;

/// Compare the kernel expected to fail more (`bad`) with the one expected to fail less
/// (`good`): the claim "the bad kernel's rate is above the good one's" holds when its
/// posterior probability reaches `confidence`. The two rates are independent with one and the
/// same weak prior (uniform with an atom at 0), so the claim rests on the runs alone: the bad
/// kernel must fail, and the good one must fail less. The Bayes factor against "one and the
/// same rate" rides along (see [`confirmed`]). Candidates are in the caller's numbering.
pub(crate) fn compare(
    (good_candidate, good): (usize, Tally),
    (bad_candidate, bad): (usize, Tally),
    confidence: f64,
) -> Comparison {
    let prior = RateGrid::of(&RatePrior::Weak, true);
    let probability = prob_greater(bad, &prior, good, &prior);
    let bayes_factor = order_bayes_factor(good, bad, &prior, &equal_rates_prior());
    Comparison {
        good_candidate,
        good: MeasuredRate::new(good.failures, good.iterations),
        bad_candidate,
        bad: MeasuredRate::new(bad.failures, bad.iterations),
        probability,
        bayes_factor,
        fisher_p: fisher_exact_greater(bad.failures, bad.clean(), good.failures, good.clean()),
        holds: good.iterations > 0 && bad.iterations > 0 && probability >= confidence,
    }
}

/// Whether a comparison shows a difference by a test that stays valid however often it was
/// looked at: its Bayes factor against equal rates reaches `1 / (1 - confidence)`.
///
/// The posterior probability that decides [`Comparison::holds`] answers "which rate is
/// higher", cheaply; but two kernels that fail alike make it wander: the search started in
/// 38-42% of ranges where nothing changed (`crashrig bench bisect --no-change R`, R 0.1-0.5).
/// The search may start on it; a range named without a verification (the budget ran out)
/// says whether this holds.
pub(crate) fn confirmed(c: &Comparison, confidence: f64) -> bool {
    c.good.iterations > 0 && c.bad.iterations > 0 && c.bayes_factor >= evidence_needed(confidence)
}

/// The prior of the common rate when two kernels fail alike: uniform. Only a rate above 0
/// can be mistaken for a difference (two kernels that never fail never differ), so the
/// weak prior's atom at 0 would only dilute the guarantee (it holds averaged over the null's
/// prior, and no false "they differ" comes from the atom).
fn equal_rates_prior() -> RateGrid {
    RateGrid::uniform()
}

/// The Bayes factor a claim needs at `confidence`: `1 / (1 - confidence)`.
pub(crate) fn evidence_needed(confidence: f64) -> f64 {
    1.0 / (1.0 - confidence).max(f64::MIN_POSITIVE)
}

/// Whether the runs show the rates the wrong way round (the good kernel failing more) on
/// strong evidence: a Bayes factor of ten times what a claim needs.
pub(crate) fn wrong_way_round(good: Tally, bad: Tally, confidence: f64) -> bool {
    let prior = RateGrid::of(&RatePrior::Weak, true);
    order_bayes_factor(bad, good, &prior, &equal_rates_prior())
        >= 10.0 * evidence_needed(confidence)
}

/// `P(X >= k)` for `X ~ Binomial(n, q)`.
pub(crate) fn upper_tail(n: u64, k: u64, q: f64) -> f64 {
    let pmf = binomial_pmf(n.min(u64::from(u32::MAX)) as u32, q);
    pmf.iter().skip(k as usize).sum::<f64>().min(1.0)
}

/// `P(X <= k)` for `X ~ Binomial(n, q)`.
pub(crate) fn lower_tail(n: u64, k: u64, q: f64) -> f64 {
    let pmf = binomial_pmf(n.min(u64::from(u32::MAX)) as u32, q);
    pmf.iter().take(k as usize + 1).sum::<f64>().min(1.0)
}

/// The verification's verdict on the culprit (fresh runs `bad`) and its parent (every run
/// `good`), given the model's rates: the culprit fails significantly more often than the good
/// side's rate allows (`good_high`, the top of its 95% interval: the search chose the culprit
/// for its failures, so a lucky one must not pass), and the parent significantly less often
/// than the bad side's rate (`bad_rate`, its mean), each at `confidence`. `Some(false)` when
/// the evidence points the other way: the culprit's fresh runs are as clean as a bad kernel
/// would hardly be (`needed` clean runs), or the parent fails significantly more often than
/// the good side's rate allows. `None` while undecided.
pub(crate) fn verdict(
    good: Tally,
    bad: Tally,
    good_high: f64,
    bad_rate: f64,
    needed: u64,
    confidence: f64,
) -> Option<bool> {
    let alpha = 1.0 - confidence;
    let significant_above =
        |t: Tally| t.failures > 0 && upper_tail(t.iterations, t.failures, good_high) <= alpha;
    let bad_holds = significant_above(bad);
    let good_holds =
        good.iterations > 0 && lower_tail(good.iterations, good.failures, bad_rate) <= alpha;
    if bad_holds && good_holds {
        return Some(true);
    }
    if (bad.failures == 0 && bad.iterations >= needed) || significant_above(good) {
        return Some(false);
    }
    None
}

/// Clean runs that call a candidate good at confidence `confidence` when a bad one shows the
/// target with probability `p` per run: the smallest `n` with `(1-p)^n <= 1-confidence`
/// (p = 0.3, c = 0.95: 9 runs).
pub fn clean_runs_needed(confidence: f64, p: f64) -> u64 {
    if p >= 1.0 {
        return 1;
    }
    if p <= 0.0 {
        return u64::MAX;
    }
    let mut n = ((1.0 - confidence).ln() / (1.0 - p).ln()).ceil().max(1.0) as u64;
    // Rounding can put an exact boundary one run off; check the definition.
    while n > 1 && (1.0 - p).powi((n - 1) as i32) <= 1.0 - confidence {
        n -= 1;
    }
    while (1.0 - p).powi(n as i32) > 1.0 - confidence {
        n += 1;
    }
    n
}

/// Iterations per kernel that separate rates `p1` and `p2` with a two-sided test at alpha 0.05
/// and power 0.8: `(z_0.975 + z_0.8)^2 (p1 (1-p1) + p2 (1-p2)) / (p2-p1)^2` (10% against 40%:
/// 29). `None` when the rates are equal (no number of iterations separates them).
pub fn iterations_to_separate(p1: f64, p2: f64) -> Option<u64> {
    const Z: f64 = 1.959_964 + 0.841_621;
    let d = (p2 - p1).abs();
    if d < 1e-9 {
        return None;
    }
    let var = p1 * (1.0 - p1) + p2 * (1.0 - p2);
    Some((Z * Z * var / (d * d)).ceil().max(1.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(iterations: u64, failures: u64) -> Tally {
        Tally {
            iterations,
            failures,
        }
    }

    #[test]
    fn verdict_table() {
        // Good side at most 3%, bad side 20%: one fresh failure of the culprit (P = 0.03)
        // and 14 clean runs of the parent (0.8^14 = 0.044).
        assert_eq!(verdict(t(14, 0), t(1, 1), 0.03, 0.2, 9, 0.95), Some(true));
        assert_eq!(verdict(t(13, 0), t(1, 1), 0.03, 0.2, 9, 0.95), None);
        // Good side up to 9%: one failure is not enough, two in four are.
        assert_eq!(verdict(t(30, 1), t(1, 1), 0.09, 0.2, 9, 0.95), None);
        assert_eq!(verdict(t(30, 1), t(4, 2), 0.09, 0.2, 9, 0.95), Some(true));
        // Nine fresh clean runs of a supposed culprit at a bad rate of 30%: not the culprit.
        assert_eq!(verdict(t(30, 0), t(9, 0), 0.03, 0.2, 9, 0.95), Some(false));
        assert_eq!(verdict(t(30, 0), t(8, 0), 0.03, 0.2, 9, 0.95), None);
        // A parent that fails like a bad kernel: not the culprit's parent.
        assert_eq!(verdict(t(10, 3), t(2, 1), 0.03, 0.3, 9, 0.95), Some(false));
    }

    #[test]
    fn clean_runs_match_the_reference_table() {
        // REFERENCE.md: p = 0.3, c = 0.95: 9 runs; p = 0.1: 29 runs.
        assert_eq!(clean_runs_needed(0.95, 0.3), 9);
        assert_eq!(clean_runs_needed(0.95, 0.1), 29);
        assert_eq!(clean_runs_needed(0.95, 1.0), 1);
        assert_eq!(clean_runs_needed(0.99, 0.5), 7);
    }

    #[test]
    fn iterations_to_separate_matches_the_reference() {
        // REFERENCE.md: 10% vs 40% needs about 30 per side.
        assert_eq!(iterations_to_separate(0.1, 0.4), Some(29));
        assert_eq!(iterations_to_separate(0.4, 0.1), Some(29));
        // 12.5% against 50%: 21.
        assert_eq!(iterations_to_separate(0.125, 0.5), Some(21));
        assert_eq!(iterations_to_separate(0.2, 0.2), None);
    }

    #[test]
    fn comparison_table() {
        let compare = |a, good, b, bad, c| compare((a, good), (b, bad), c);
        // (good, bad, holds at 0.95)
        let cases = [
            (t(9, 0), t(1, 1), true),
            (t(10, 1), t(10, 5), true),
            (t(10, 2), t(10, 3), false),
            // A clean bad kernel proves nothing, however clean the good one.
            (t(30, 0), t(2, 0), false),
            (t(0, 0), t(10, 10), false),
            (t(10, 5), t(10, 1), false),
        ];
        for (good, bad, holds) in cases {
            let c = compare(3, good, 4, bad, 0.95);
            assert_eq!(c.holds, holds, "{good:?} {bad:?}: {c:?}");
            assert!((0.0..=1.0).contains(&c.fisher_p));
        }
        let c = compare(3, t(20, 2), 4, t(20, 10), 0.95);
        assert_eq!((c.good.failures, c.bad.failures), (2, 10));
        assert_eq!(c.good.text(), "2/20 = 10% [3%, 30%]");
        assert!(c.fisher_p < 0.05, "{c:?}");
    }
}
