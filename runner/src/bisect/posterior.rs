//! The numbers: posterior over the culprit, predictive distributions of a batch, expected
//! information gain. Everything is in natural logarithms; probabilities are normalized in log
//! space so long runs of clean iterations do not underflow.

use super::model::ReproPrior;

/// Iterations and failures seen on one candidate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub iterations: u64,
    pub failures: u64,
}

impl Tally {
    pub fn clean(&self) -> u64 {
        self.iterations - self.failures
    }
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, nine terms; relative error about 1e-15).
pub(crate) fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    use std::f64::consts::PI;
    if x < 0.5 {
        // Reflection keeps the series in its accurate range.
        PI.ln() - (PI * x).sin().ln() - ln_gamma(1.0 - x)
    } else {
        let x = x - 1.0;
        let t = x + G + 0.5;
        let mut a = COEF[0];
        for (i, c) in COEF.iter().enumerate().skip(1) {
            a += c / (x + i as f64);
        }
        0.5 * (2.0 * PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
    }
}

/// `ln B(a, b)`.
pub(crate) fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// `x ln y` with `0 ln 0 = 0`, so that zero counts never turn a zero probability into NaN.
pub(crate) fn xlny(x: f64, y: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else {
        x * y.ln()
    }
}

impl ReproPrior {
    /// `ln ∫ p^failures (1-p)^clean dPrior(p)`: the evidence of runs on bad candidates.
    pub(crate) fn ln_marginal(&self, failures: u64, clean: u64) -> f64 {
        let (f, s) = (failures as f64, clean as f64);
        match *self {
            ReproPrior::Beta { alpha, beta } => ln_beta(alpha + f, beta + s) - ln_beta(alpha, beta),
            ReproPrior::Known { p } => xlny(f, p) + xlny(s, 1.0 - p),
        }
    }

    /// Posterior mean of `p` after `failures` and `clean` runs on bad candidates.
    pub(crate) fn mean(&self, failures: u64, clean: u64) -> f64 {
        match *self {
            ReproPrior::Beta { alpha, beta } => {
                (alpha + failures as f64) / (alpha + beta + (failures + clean) as f64)
            }
            ReproPrior::Known { p } => p,
        }
    }

    /// Distribution of the number of failures in a batch of `batch` iterations on a bad
    /// candidate, after `failures` and `clean` runs on bad candidates: beta-binomial for a
    /// Beta prior, binomial for a known `p`. Index = failures in the batch.
    pub(crate) fn predictive(&self, batch: u32, failures: u64, clean: u64) -> Vec<f64> {
        match *self {
            ReproPrior::Beta { alpha, beta } => {
                let a = alpha + failures as f64;
                let b = beta + clean as f64;
                let n = batch as f64;
                // ln P(0) = ln B(a, b+n) - ln B(a, b), as a product; then the pmf ratio
                // P(f+1)/P(f) = (n-f)/(f+1) * (a+f)/(b+n-f-1).
                let mut lp: f64 = (0..batch)
                    .map(|k| ((b + k as f64) / (a + b + k as f64)).ln())
                    .sum();
                let mut out = Vec::with_capacity(batch as usize + 1);
                out.push(lp.exp());
                for f in 0..batch {
                    let f = f as f64;
                    lp += ((n - f) / (f + 1.0)).ln() + ((a + f) / (b + n - f - 1.0)).ln();
                    out.push(lp.exp());
                }
                out
            }
            ReproPrior::Known { p } => binomial_pmf(batch, p),
        }
    }
}

/// Binomial pmf of `batch` trials at rate `p`, index = successes.
pub(crate) fn binomial_pmf(batch: u32, p: f64) -> Vec<f64> {
    let n = batch as f64;
    let mut ln_choose = 0.0;
    let mut out = Vec::with_capacity(batch as usize + 1);
    for f in 0..=batch {
        let fl = f as f64;
        if f > 0 {
            ln_choose += ((n - fl + 1.0) / fl).ln();
        }
        out.push((ln_choose + xlny(fl, p) + xlny(n - fl, 1.0 - p)).exp());
    }
    out
}

/// Posterior over the culprit position, with the sums the predictive distributions need.
#[derive(Clone, Debug)]
pub(crate) struct Posterior {
    /// `probs[c]` for `c` in `0..=last`; `probs[0]` is 0. `None` when the evidence has zero
    /// likelihood under every hypothesis.
    pub probs: Option<Vec<f64>>,
    /// Failures on candidates `>= c` (those bad if `c` is the culprit).
    pub fail_suffix: Vec<u64>,
    /// Clean runs on candidates `>= c`.
    pub clean_suffix: Vec<u64>,
}

/// Posterior over the culprit `c` in `1..=last`, uniform prior except positions ruled out by
/// `excluded` (identical kernels on both sides of the step), given per-candidate tallies.
///
/// Likelihood of culprit `c`: candidates `< c` are good and fail at rate `fp`; candidates
/// `>= c` are bad and share one unknown `p`, integrated over the prior.
pub(crate) fn posterior(
    tallies: &[Tally],
    excluded: &[bool],
    prior: &ReproPrior,
    fp: f64,
) -> Posterior {
    let len = tallies.len();
    let mut fail_suffix = vec![0u64; len + 1];
    let mut clean_suffix = vec![0u64; len + 1];
    for i in (0..len).rev() {
        fail_suffix[i] = fail_suffix[i + 1] + tallies[i].failures;
        clean_suffix[i] = clean_suffix[i + 1] + tallies[i].clean();
    }
    fail_suffix.truncate(len);
    clean_suffix.truncate(len);

    let mut log = vec![f64::NEG_INFINITY; len];
    // Log-likelihood of candidates 0..c all being good.
    let mut good_prefix = 0.0;
    for c in 1..len {
        let t = tallies[c - 1];
        good_prefix += xlny(t.failures as f64, fp) + xlny(t.clean() as f64, 1.0 - fp);
        if !excluded[c] {
            log[c] = good_prefix + prior.ln_marginal(fail_suffix[c], clean_suffix[c]);
        }
    }
    Posterior {
        probs: normalize(&log),
        fail_suffix,
        clean_suffix,
    }
}

/// Normalize log weights into probabilities; `None` when every weight is zero.
pub(crate) fn normalize(log: &[f64]) -> Option<Vec<f64>> {
    let max = log.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return None;
    }
    let w: Vec<f64> = log.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = w.iter().sum();
    Some(w.into_iter().map(|x| x / sum).collect())
}

/// Shannon entropy in nats.
pub(crate) fn entropy(probs: &[f64]) -> f64 {
    -probs.iter().map(|&q| xlny(q, q)).sum::<f64>()
}

/// Expected reduction of the entropy of the culprit position (nats) from one batch of `batch`
/// iterations on each candidate `m` (index = `m`; a candidate is bad iff `c <= m`), counting
/// failures.
pub(crate) fn info_gain(
    post: &Posterior,
    probs: &[f64],
    batch: u32,
    prior: &ReproPrior,
    fp: f64,
) -> Vec<f64> {
    let preds: Vec<Option<Vec<f64>>> = (0..probs.len())
        .map(|c| {
            (probs[c] > 0.0)
                .then(|| prior.predictive(batch, post.fail_suffix[c], post.clean_suffix[c]))
        })
        .collect();
    info_gain_from(probs, &preds, &binomial_pmf(batch, fp))
}

/// For a batch that stops at its first failure (with no false positives a failure settles the
/// candidate, so the rest of the batch would only teach `p`): the expected information gain of
/// the outcome "failed / all `batch` clean" on each candidate `m`, and the expected number of
/// iterations run. `streaks[c][k]` is `P(k clean runs in a row | culprit c, c bad)`.
pub(crate) fn gain_until_failure(
    probs: &[f64],
    streaks: &[Option<Vec<f64>>],
    batch: u32,
) -> (Vec<f64>, Vec<f64>) {
    let b = batch as usize;
    let preds: Vec<Option<Vec<f64>>> = streaks
        .iter()
        .map(|s| s.as_ref().map(|s| vec![s[b], 1.0 - s[b]]))
        .collect();
    let gains = info_gain_from(probs, &preds, &[1.0, 0.0]);
    // Iterations run on a bad candidate: one per clean prefix, Σ_{k<b} P(k clean in a row).
    let mut below = 0.0;
    let mut mass = 0.0;
    let mut iterations = Vec::with_capacity(probs.len());
    for (c, s) in streaks.iter().enumerate() {
        if let Some(s) = s {
            below += probs[c] * s[..b].iter().sum::<f64>();
            mass += probs[c];
        }
        iterations.push(below + (1.0 - mass).max(0.0) * batch as f64);
    }
    (gains, iterations)
}

/// `P(k clean runs in a row)` on a bad candidate for `k` in `0..=max`, after `failures` and
/// `clean` runs on bad candidates.
pub(crate) fn clean_streaks(prior: &ReproPrior, max: u32, failures: u64, clean: u64) -> Vec<f64> {
    let mut out = Vec::with_capacity(max as usize + 1);
    let mut q = 1.0;
    out.push(q);
    for k in 0..max {
        q *= match *prior {
            ReproPrior::Beta { alpha, beta } => {
                let (a, b) = (alpha + failures as f64, beta + clean as f64);
                (b + k as f64) / (a + b + k as f64)
            }
            ReproPrior::Known { p } => 1.0 - p,
        };
        out.push(q);
    }
    out
}

/// The expected entropy reduction for outcome distributions `preds[c]` (when `c <= m`, `None`
/// where `π_c = 0`) and `g0` (when `c > m`).
///
/// With `P(c, f) = π_c g_c(f)`, the expected posterior entropy is
/// `Σ_f [P(f) ln P(f) - Σ_c P(c,f) ln P(c,f)]`; prefix sums over `c` give every `m` at once,
/// `O(len · outcomes)`.
fn info_gain_from(probs: &[f64], preds: &[Option<Vec<f64>>], g0: &[f64]) -> Vec<f64> {
    let len = probs.len();
    let h0 = entropy(probs);
    // Suffix sums over c > m of π_c and π_c ln π_c.
    let mut rest = vec![0.0; len + 1];
    let mut rest_ln = vec![0.0; len + 1];
    for c in (0..len).rev() {
        rest[c] = rest[c + 1] + probs[c];
        rest_ln[c] = rest_ln[c + 1] + xlny(probs[c], probs[c]);
    }
    let mut expected_h = vec![0.0; len];
    for (f, &g0f) in g0.iter().enumerate() {
        let g0_ln = xlny(g0f, g0f);
        let mut u = 0.0; // Σ_{c<=m} π_c g_c(f)
        let mut v = 0.0; // Σ_{c<=m} π_c g_c(f) ln(π_c g_c(f))
        for m in 0..len {
            if let Some(pred) = &preds[m] {
                let joint = probs[m] * pred[f];
                v += xlny(joint, joint);
                u += joint;
            }
            let r = rest[m + 1];
            let p_f = u + g0f * r;
            let q = v + g0f * rest_ln[m + 1] + g0_ln * r;
            expected_h[m] += xlny(p_f, p_f) - q;
        }
    }
    expected_h.into_iter().map(|h| (h0 - h).max(0.0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_matches_factorials_and_half() {
        let mut fact: f64 = 1.0;
        for n in 1..30u32 {
            // Γ(n) = (n-1)!
            assert!((ln_gamma(n as f64) - fact.ln()).abs() < 1e-12, "n = {n}");
            fact *= n as f64;
        }
        let half = std::f64::consts::PI.sqrt().ln();
        assert!((ln_gamma(0.5) - half).abs() < 1e-13);
        // Γ(0.25) = 3.6256099082219083119
        assert!((ln_gamma(0.25) - 3.625_609_908_221_908_f64.ln()).abs() < 1e-13);
    }

    #[test]
    fn predictive_is_a_distribution_with_the_right_mean() {
        let prior = ReproPrior::Beta {
            alpha: 1.0,
            beta: 1.0,
        };
        for (batch, f, s) in [(1, 0, 0), (5, 2, 7), (32, 40, 3), (10, 0, 200)] {
            let pred = prior.predictive(batch, f, s);
            let sum: f64 = pred.iter().sum();
            assert!((sum - 1.0).abs() < 1e-12, "{batch} {f} {s}: {sum}");
            let mean: f64 = pred.iter().enumerate().map(|(k, q)| k as f64 * q).sum();
            assert!((mean - batch as f64 * prior.mean(f, s)).abs() < 1e-9);
        }
        // Beta(1,1) after nothing: one iteration fails with probability 1/2; two iterations
        // give 0, 1, 2 failures with probability 1/3 each.
        assert_eq!(prior.predictive(1, 0, 0), vec![0.5, 0.5]);
        for q in prior.predictive(2, 0, 0) {
            assert!((q - 1.0 / 3.0).abs() < 1e-12);
        }
        let b = binomial_pmf(3, 0.5);
        assert_eq!(b.len(), 4);
        assert!((b[1] - 0.375).abs() < 1e-12);
        assert_eq!(binomial_pmf(2, 0.0), vec![1.0, 0.0, 0.0]);
    }

    #[test]
    fn info_gain_of_a_deterministic_split_is_the_split_entropy() {
        // Known p = 1, fp = 0: testing m tells c <= m exactly.
        let prior = ReproPrior::Known { p: 1.0 };
        let tallies = vec![Tally::default(); 5];
        let post = posterior(&tallies, &[false; 5], &prior, 0.0);
        let probs = post.probs.clone().unwrap();
        let gains = info_gain(&post, &probs, 1, &prior, 0.0);
        for (m, gain) in gains.iter().enumerate().skip(1) {
            let q = m as f64 / 4.0;
            let h = -(xlny(q, q) + xlny(1.0 - q, 1.0 - q));
            assert!((gain - h).abs() < 1e-12, "m = {m}: {gain} vs {h}");
        }
    }
}
