//! The numbers: the posterior over the culprit with both rates unknown, predictive
//! distributions of a batch, expected information gain, and two-rate comparisons.
//!
//! Both rates live on a grid: candidates before the culprit fail at rate `q0`, the culprit and
//! after at `q1 > q0`; each has a prior on its own grid, and the likelihood of a culprit
//! position integrates both out under the order constraint. Everything is in natural
//! logarithms and normalized in log space, so long runs of clean iterations do not underflow.

use super::model::RatePrior;

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

    pub fn add(self, other: Tally) -> Tally {
        Tally {
            iterations: self.iterations + other.iterations,
            failures: self.failures + other.failures,
        }
    }
}

/// `x ln y` with `0 ln 0 = 0`, so that zero counts never turn a zero probability into NaN.
pub(crate) fn xlny(x: f64, y: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else {
        x * y.ln()
    }
}

/// Interior points of the weak prior's grid: `(k + 0.5) / GRID` for `k` in `0..GRID`.
const GRID: usize = 48;
/// Prior mass of "the good side never shows the target" (rate exactly 0) in the weak prior.
const ZERO_ATOM: f64 = 0.3;
/// Prior mass of "the bad side always shows it" (rate exactly 1) in the weak prior: a
/// deterministic bug costs about what it did under a uniform shape (64 commits: 25 iterations
/// on average, 24 before).
const ONE_ATOM: f64 = 0.1;
/// The weak prior's bad side is `Beta(1, BAD_BETA)`-shaped (mean 1/4) besides its atom: the
/// races a bisection chases mostly show in a minority of iterations. With a uniform shape
/// (mean 1/2) a few lucky failures made the bad rate look high, a bad candidate's clean runs
/// then looked like proof that it was good, and the search named a culprit too late in the
/// range more often than its confidence allowed. `crashrig bench bisect` (200 runs per case,
/// accuracy then cost, uniform -> this): (0.3, 0) 98.0% -> 100%, 168 -> 171; (0.3, 0.05)
/// 96.5% -> 96.0%, 349 -> 341; (0.4, 0.1) 95.0% -> 96.0%, 302 -> 297; (0.1, 0) 98.0% -> 99.5%,
/// 341 -> 345; (0.5, 0.2) 97.0% -> 97.5%, 352 -> 343.
const BAD_BETA: f64 = 3.0;

/// A discrete distribution over rates: points in increasing order with log weights.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RateGrid {
    pub q: Vec<f64>,
    pub ln_w: Vec<f64>,
    ln_q: Vec<f64>,
    ln_1q: Vec<f64>,
}

impl RateGrid {
    fn new(points: Vec<(f64, f64)>) -> RateGrid {
        let mut points: Vec<(f64, f64)> = points.into_iter().filter(|p| p.1 > 0.0).collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total: f64 = points.iter().map(|p| p.1).sum();
        RateGrid {
            ln_q: points.iter().map(|p| p.0.ln()).collect(),
            ln_1q: points.iter().map(|p| (1.0 - p.0).ln()).collect(),
            ln_w: points.iter().map(|p| (p.1 / total).ln()).collect(),
            q: points.into_iter().map(|p| p.0).collect(),
        }
    }

    /// The grid of a prior; `good` selects the side (the weak prior puts an atom at 0 on the
    /// good side, at 1 on the bad side).
    pub fn of(prior: &RatePrior, good: bool) -> RateGrid {
        let interior = |f: &dyn Fn(f64) -> f64| -> Vec<(f64, f64)> {
            (0..GRID)
                .map(|k| {
                    let q = (k as f64 + 0.5) / GRID as f64;
                    (q, f(q))
                })
                .collect()
        };
        match *prior {
            RatePrior::Weak => {
                let (atom_q, atom, beta) = if good {
                    (0.0, ZERO_ATOM, 1.0)
                } else {
                    (1.0, ONE_ATOM, BAD_BETA)
                };
                let shape = interior(&|q| (1.0 - q).powf(beta - 1.0));
                let total: f64 = shape.iter().map(|p| p.1).sum();
                let mut points: Vec<(f64, f64)> = shape
                    .into_iter()
                    .map(|(q, w)| (q, w / total * (1.0 - atom)))
                    .collect();
                points.push((atom_q, atom));
                RateGrid::new(points)
            }
            RatePrior::Known { rate } => RateGrid::new(vec![(rate, 1.0)]),
            RatePrior::Beta { alpha, beta } => {
                let points =
                    interior(&|q| ((alpha - 1.0) * q.ln() + (beta - 1.0) * (1.0 - q).ln()).exp());
                RateGrid::new(points)
            }
        }
    }

    /// The uniform prior's grid, `Beta(1, 1)`.
    pub fn uniform() -> RateGrid {
        RateGrid::of(
            &RatePrior::Beta {
                alpha: 1.0,
                beta: 1.0,
            },
            true,
        )
    }

    /// `ln w_i + F ln q_i + S ln(1-q_i)` for every point.
    pub(crate) fn log_post(&self, t: Tally) -> Vec<f64> {
        let (f, s) = (t.failures as f64, t.clean() as f64);
        (0..self.q.len())
            .map(|i| {
                let lf = if f == 0.0 { 0.0 } else { f * self.ln_q[i] };
                let ls = if s == 0.0 { 0.0 } else { s * self.ln_1q[i] };
                self.ln_w[i] + lf + ls
            })
            .collect()
    }
}

/// The two rates given one split of the evidence: the marginal likelihood and the posterior
/// of each rate (weights over its grid).
#[derive(Clone, Debug)]
pub(crate) struct Split {
    pub ln_evidence: f64,
    pub good: Vec<f64>,
    pub bad: Vec<f64>,
}

/// Evidence for "runs `good` come from rate `q0`, runs `bad` from rate `q1`, `q0 < q1`".
pub(crate) fn split(g0: &RateGrid, g1: &RateGrid, good: Tally, bad: Tally) -> Split {
    let a = g0.log_post(good);
    let b = g1.log_post(bad);
    let (amax, bmax) = (
        a.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        b.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let ea: Vec<f64> = a.iter().map(|v| (v - amax).exp()).collect();
    let eb: Vec<f64> = b.iter().map(|v| (v - bmax).exp()).collect();
    // below[j] = Σ_{i: q0_i < q1_j} ea_i; above[i] = Σ_{j: q1_j > q0_i} eb_j.
    let mut below = vec![0.0; eb.len()];
    let (mut i, mut acc) = (0, 0.0);
    for (j, q1) in g1.q.iter().enumerate() {
        while i < g0.q.len() && g0.q[i] < *q1 {
            acc += ea[i];
            i += 1;
        }
        below[j] = acc;
    }
    let mut above = vec![0.0; ea.len()];
    let (mut j, mut acc) = (g1.q.len(), 0.0);
    for i in (0..g0.q.len()).rev() {
        while j > 0 && g1.q[j - 1] > g0.q[i] {
            j -= 1;
            acc += eb[j];
        }
        above[i] = acc;
    }
    let total: f64 = eb.iter().zip(&below).map(|(x, y)| x * y).sum();
    if !(total > 0.0 && amax.is_finite() && bmax.is_finite()) {
        return Split {
            ln_evidence: f64::NEG_INFINITY,
            good: vec![0.0; ea.len()],
            bad: vec![0.0; eb.len()],
        };
    }
    Split {
        ln_evidence: amax + bmax + total.ln(),
        good: ea.iter().zip(&above).map(|(x, y)| x * y / total).collect(),
        bad: eb.iter().zip(&below).map(|(x, y)| x * y / total).collect(),
    }
}

/// Posterior over the culprit position, with the rate posteriors of each position.
#[derive(Clone, Debug)]
pub(crate) struct Posterior {
    /// `probs[c]` for `c` in `0..=last`; `probs[0]` is 0. `None` when the evidence has zero
    /// likelihood under every hypothesis.
    pub probs: Option<Vec<f64>>,
    /// `split_of[c]`: index into `splits` of position `c` (positions between two tested
    /// candidates share one split).
    pub split_of: Vec<usize>,
    pub splits: Vec<Split>,
}

#[cfg(test)]
impl Posterior {
    /// Posterior mean of the good and the bad rate given culprit `c`.
    pub fn rate_means(&self, c: usize, g0: &RateGrid, g1: &RateGrid) -> (f64, f64) {
        let s = &self.splits[self.split_of[c]];
        let mean = |w: &[f64], g: &RateGrid| w.iter().zip(&g.q).map(|(w, q)| w * q).sum();
        (mean(&s.good, g0), mean(&s.bad, g1))
    }
}

/// Posterior over the culprit `c` in `1..=last`, uniform prior except positions ruled out by
/// `excluded` (identical kernels on both sides of the step), given per-candidate tallies.
pub(crate) fn posterior(
    tallies: &[Tally],
    excluded: &[bool],
    g0: &RateGrid,
    g1: &RateGrid,
) -> Posterior {
    let len = tallies.len();
    let total = tallies.iter().fold(Tally::default(), |a, t| a.add(*t));
    let mut log = vec![f64::NEG_INFINITY; len];
    let mut split_of = vec![0usize; len];
    let mut splits: Vec<Split> = Vec::new();
    let mut prefix = Tally::default();
    for c in 1..len {
        let t = tallies[c - 1];
        prefix = prefix.add(t);
        // Prefix and suffix change together, exactly when candidate c-1 has runs.
        if splits.is_empty() || t.iterations > 0 {
            let suffix = Tally {
                iterations: total.iterations - prefix.iterations,
                failures: total.failures - prefix.failures,
            };
            splits.push(split(g0, g1, prefix, suffix));
        }
        split_of[c] = splits.len() - 1;
        if !excluded[c] {
            log[c] = splits[split_of[c]].ln_evidence;
        }
    }
    Posterior {
        probs: normalize(&log),
        split_of,
        splits,
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

/// How a batch is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// All iterations; the outcome is the number of failures.
    Full,
    /// Stop at the first failure; the outcome is "failed" or "all clean".
    UntilFailure,
}

/// Outcome distribution of one batch under a rate posterior `w` over `grid`, and the
/// expected iterations it runs.
fn predictive(w: &[f64], grid: &RateGrid, batch: u32, mode: Mode) -> (Vec<f64>, f64) {
    match mode {
        Mode::Full => {
            let mut out = vec![0.0; batch as usize + 1];
            for (wi, q) in w.iter().zip(&grid.q) {
                if *wi < 1e-14 {
                    continue;
                }
                for (o, p) in out.iter_mut().zip(binomial_pmf(batch, *q)) {
                    *o += wi * p;
                }
            }
            (out, f64::from(batch))
        }
        Mode::UntilFailure => {
            let (mut clean_all, mut iterations) = (0.0, 0.0);
            for (wi, q) in w.iter().zip(&grid.q) {
                if *wi < 1e-14 {
                    continue;
                }
                let r = 1.0 - q;
                // Σ_{k<b} r^k iterations run: one per clean prefix.
                let run = if r >= 1.0 {
                    f64::from(batch)
                } else {
                    (1.0 - r.powi(batch as i32)) / (1.0 - r)
                };
                clean_all += wi * r.powi(batch as i32);
                iterations += wi * run;
            }
            (vec![clean_all, (1.0 - clean_all).max(0.0)], iterations)
        }
    }
}

/// For each candidate `m` (index `m`; candidate `m` is bad iff `c <= m`): the expected
/// reduction of the culprit's entropy (nats) from one batch on it, and the expected number of
/// iterations the batch runs.
///
/// With `P(c, f) = π_c g_c(f)`, the expected posterior entropy is
/// `Σ_f [P(f) ln P(f) - Σ_c P(c,f) ln P(c,f)]`; prefix sums over `c` of the bad-side terms and
/// suffix sums of the good-side terms give every `m` at once.
pub(crate) fn info_gain(
    post: &Posterior,
    probs: &[f64],
    g0: &RateGrid,
    g1: &RateGrid,
    batch: u32,
    mode: Mode,
) -> (Vec<f64>, Vec<f64>) {
    let len = probs.len();
    // Per split: (outcome distribution, expected iterations) on the good and the bad side.
    type Side = (Vec<f64>, f64);
    let preds: Vec<(Side, Side)> = post
        .splits
        .iter()
        .map(|s| {
            (
                predictive(&s.good, g0, batch, mode),
                predictive(&s.bad, g1, batch, mode),
            )
        })
        .collect();
    let outcomes = preds.first().map_or(0, |p| p.0 .0.len());
    let h0 = entropy(probs);
    let mut expected_h = vec![0.0; len];
    for f in 0..outcomes {
        // Suffix sums over c > m of the good-side terms.
        let mut good_u = vec![0.0; len + 1];
        let mut good_v = vec![0.0; len + 1];
        for c in (1..len).rev() {
            let joint = probs[c] * preds[post.split_of[c]].0 .0[f];
            good_u[c] = good_u[c + 1] + joint;
            good_v[c] = good_v[c + 1] + xlny(joint, joint);
        }
        let (mut u, mut v) = (0.0, 0.0);
        for m in 0..len {
            if m >= 1 {
                let joint = probs[m] * preds[post.split_of[m]].1 .0[f];
                u += joint;
                v += xlny(joint, joint);
            }
            let (gu, gv) = if m + 1 < len {
                (good_u[m + 1], good_v[m + 1])
            } else {
                (0.0, 0.0)
            };
            let p_f = u + gu;
            expected_h[m] += xlny(p_f, p_f) - v - gv;
        }
    }
    let gains = expected_h.into_iter().map(|h| (h0 - h).max(0.0)).collect();
    // Expected iterations: bad-side runs for c <= m, good-side runs for c > m.
    let mut iterations = vec![0.0; len];
    let mut bad_part = 0.0;
    let mut good_rest: f64 = (1..len)
        .map(|c| probs[c] * preds[post.split_of[c]].0 .1)
        .sum();
    for (m, it) in iterations.iter_mut().enumerate() {
        if m >= 1 {
            let s = &preds[post.split_of[m]];
            bad_part += probs[m] * s.1 .1;
            good_rest -= probs[m] * s.0 .1;
        }
        *it = (bad_part + good_rest.max(0.0)).max(1.0);
    }
    (gains, iterations)
}

/// Posterior probability that the rate behind `high` (prior `gh`) exceeds the rate behind
/// `low` (prior `gl`), the two rates independent: no model of the range enters, only the
/// priors of the two sides.
pub(crate) fn prob_greater(high: Tally, gh: &RateGrid, low: Tally, gl: &RateGrid) -> f64 {
    let (Some(h), Some(l)) = (normalize(&gh.log_post(high)), normalize(&gl.log_post(low))) else {
        return 0.5;
    };
    // Σ_j h_j (Σ_{i: ql_i < qh_j} l_i + 1/2 Σ_{i: ql_i = qh_j} l_i)
    let mut p = 0.0;
    for (hj, qh) in h.iter().zip(&gh.q) {
        let mut below = 0.0;
        for (li, ql) in l.iter().zip(&gl.q) {
            if ql < qh {
                below += li;
            } else if ql == qh {
                below += 0.5 * li;
            }
        }
        p += hj * below;
    }
    p.clamp(0.0, 1.0)
}

/// Bayes factor of "the rate behind `high` is above the rate behind `low`" (both with the
/// prior `grid`) against "one and the same rate" (with the prior `null`).
///
/// Unlike [`prob_greater`], this stays a test however often it is looked at: under the null
/// (the common rate drawn from `null`) the factor is a martingale, so the chance that it ever
/// reaches `k` is at most `1/k` (Ville). `prob_greater` of two equal rates wanders past any
/// level if one keeps looking (see `crashrig bench bisect --no-change`).
pub(crate) fn order_bayes_factor(low: Tally, high: Tally, grid: &RateGrid, null: &RateGrid) -> f64 {
    let (l, h) = (grid.log_post(low), grid.log_post(high));
    let null = null.log_post(low.add(high));
    let lse = |v: &[f64]| {
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !max.is_finite() {
            return f64::NEG_INFINITY;
        }
        max + v.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
    };
    // The ordered alternative: pairs (i, j) with q_i < q_j, renormalized by their prior mass.
    let mut joint = Vec::new();
    let mut prior = Vec::new();
    for (i, qi) in grid.q.iter().enumerate() {
        for (j, qj) in grid.q.iter().enumerate() {
            if qi < qj {
                joint.push(l[i] + h[j]);
                prior.push(grid.ln_w[i] + grid.ln_w[j]);
            }
        }
    }
    let ln_bf = lse(&joint) - lse(&prior) - lse(&null);
    if ln_bf.is_nan() {
        return 0.0;
    }
    ln_bf.exp().min(f64::MAX)
}

/// Mean and central 95% interval of a rate posterior `w` over `grid`.
pub(crate) fn summarize(w: &[f64], grid: &RateGrid) -> (f64, f64, f64) {
    let mean = w.iter().zip(&grid.q).map(|(w, q)| w * q).sum();
    (mean, quantile(w, grid, 0.025), quantile(w, grid, 0.975))
}

/// The smallest grid rate at which the posterior `w` reaches `target` mass.
pub(crate) fn quantile(w: &[f64], grid: &RateGrid, target: f64) -> f64 {
    let total: f64 = w.iter().sum();
    let mut acc = 0.0;
    for (wi, q) in w.iter().zip(&grid.q) {
        acc += wi;
        if acc >= target * total {
            return *q;
        }
    }
    grid.q.last().copied().unwrap_or(0.0)
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
    fn split_matches_a_hand_computed_two_point_case() {
        // Good rate 0 or 0.5 (equal weight), bad rate 0.5 or 1: with the order constraint the
        // pairs are (0, .5), (0, 1), (.5, 1). Good side 1 clean run, bad side 1 failure:
        // (0,.5): 1 * .5 = .5; (0,1): 1 * 1 = 1; (.5,1): .5 * 1 = .5; prior 1/4 each.
        let g0 = RateGrid::new(vec![(0.0, 1.0), (0.5, 1.0)]);
        let g1 = RateGrid::new(vec![(0.5, 1.0), (1.0, 1.0)]);
        let s = split(&g0, &g1, t(1, 0), t(1, 1));
        assert!((s.ln_evidence - (2.0f64 / 4.0).ln()).abs() < 1e-12);
        // P(q0 = 0) = 1.5/2, P(q1 = 1) = 1.5/2.
        assert!((s.good[0] - 0.75).abs() < 1e-12 && (s.bad[1] - 0.75).abs() < 1e-12);
    }

    #[test]
    fn posterior_sums_to_one_and_follows_the_evidence() {
        let g0 = RateGrid::of(&RatePrior::Weak, true);
        let g1 = RateGrid::of(&RatePrior::Weak, false);
        // Candidates 0..=4: 0 and 1 clean, 3 and 4 fail often.
        let tallies = [t(10, 1), t(10, 1), t(0, 0), t(10, 6), t(10, 5)];
        let post = posterior(&tallies, &[false; 5], &g0, &g1);
        let probs = post.probs.clone().unwrap();
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(probs[0], 0.0);
        assert!(probs[2] + probs[3] > 0.9, "{probs:?}");
        let (q0, q1) = post.rate_means(3, &g0, &g1);
        assert!(q0 < 0.2 && q1 > 0.4, "{q0} {q1}");
    }

    #[test]
    fn the_weak_prior_expects_a_low_bad_rate_and_allows_the_extremes() {
        let mean =
            |g: &RateGrid| -> f64 { g.ln_w.iter().zip(&g.q).map(|(l, q)| l.exp() * q).sum() };
        let (g0, g1) = (
            RateGrid::of(&RatePrior::Weak, true),
            RateGrid::of(&RatePrior::Weak, false),
        );
        // Good side: 0.3 at 0, the rest uniform (mean 0.7 / 2).
        assert!((g0.ln_w[0].exp() - ZERO_ATOM).abs() < 1e-12 && g0.q[0] == 0.0);
        assert!((mean(&g0) - 0.35).abs() < 1e-9, "{}", mean(&g0));
        // Bad side: 0.1 at 1, the rest Beta(1, 3)-shaped (mean about 1/4).
        let last = g1.q.len() - 1;
        assert!(g1.q[last] == 1.0 && (g1.ln_w[last].exp() - ONE_ATOM).abs() < 1e-12);
        let interior = mean(&g1) - ONE_ATOM;
        assert!(
            (interior / (1.0 - ONE_ATOM) - 0.25).abs() < 0.01,
            "{interior}"
        );
        // Weights fall with the rate.
        assert!(g1.ln_w.windows(2).take(last - 1).all(|w| w[0] > w[1]));
    }

    #[test]
    fn predictive_is_a_distribution() {
        let g = RateGrid::of(&RatePrior::Weak, false);
        let w: Vec<f64> = g.ln_w.iter().map(|l| l.exp()).collect();
        for b in [1, 4, 17] {
            let (p, it) = predictive(&w, &g, b, Mode::Full);
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            assert_eq!(it, f64::from(b));
            let (p, it) = predictive(&w, &g, b, Mode::UntilFailure);
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            assert!(it >= 1.0 - 1e-9 && it <= f64::from(b) + 1e-9, "{it}");
        }
    }

    #[test]
    fn info_gain_of_a_deterministic_split_is_the_split_entropy() {
        // Known rates 0 and 1: testing m tells c <= m exactly.
        let g0 = RateGrid::of(&RatePrior::Known { rate: 0.0 }, true);
        let g1 = RateGrid::of(&RatePrior::Known { rate: 1.0 }, false);
        let tallies = vec![Tally::default(); 5];
        let post = posterior(&tallies, &[false; 5], &g0, &g1);
        let probs = post.probs.clone().unwrap();
        let (gains, _) = info_gain(&post, &probs, &g0, &g1, 1, Mode::Full);
        for (m, gain) in gains.iter().enumerate().skip(1) {
            let q = m as f64 / 4.0;
            let h = -(xlny(q, q) + xlny(1.0 - q, 1.0 - q));
            assert!((gain - h).abs() < 1e-12, "m = {m}: {gain} vs {h}");
        }
    }

    #[test]
    fn order_bayes_factor_matches_a_hand_computed_case_and_points_the_right_way() {
        let weak = RateGrid::of(&RatePrior::Weak, true);
        let uniform = RateGrid::uniform();
        // 0/7 against 3/9 on the weak grid, against one uniform rate: 6.714 (the same sums
        // over the 49 points done by hand in Python).
        let bf = order_bayes_factor(t(7, 0), t(9, 3), &weak, &uniform);
        assert!((bf - 6.714).abs() < 1e-3, "{bf}");
        // More runs alike grow it; the other way round, or the same counts, shrink it.
        assert!(order_bayes_factor(t(30, 0), t(30, 10), &weak, &uniform) > 1e3);
        assert!(order_bayes_factor(t(9, 3), t(7, 0), &weak, &uniform) < 0.2);
        assert!(order_bayes_factor(t(40, 12), t(40, 12), &weak, &uniform) < 1.0);
        // No runs: no evidence either way.
        let none = order_bayes_factor(t(0, 0), t(0, 0), &weak, &uniform);
        assert!((none - 1.0).abs() < 1e-9, "{none}");
    }

    #[test]
    fn prob_greater_table() {
        let beta = RateGrid::uniform();
        // Symmetric evidence under one prior: one half.
        assert!((prob_greater(t(5, 2), &beta, t(5, 2), &beta) - 0.5).abs() < 1e-9);
        // Uniform priors, 1/1 against 0/9: 1 - E[q^2] for q ~ Beta(1, 10) = 0.985 (on the
        // grid, to about 1e-3).
        let p = prob_greater(t(1, 1), &beta, t(9, 0), &beta);
        assert!((p - 0.9848).abs() < 2e-3, "{p}");
        // 2/10 against 1/10: far from sure.
        let p = prob_greater(t(10, 2), &beta, t(10, 1), &beta);
        assert!(p > 0.6 && p < 0.85, "{p}");
        // The weak priors favour a lower good side; clean runs there count more.
        let (g0, g1) = (
            RateGrid::of(&RatePrior::Weak, true),
            RateGrid::of(&RatePrior::Weak, false),
        );
        let p = prob_greater(t(5, 2), &g1, t(5, 0), &g0);
        assert!(p > 0.95, "{p}");
        assert!(prob_greater(t(9, 0), &g1, t(1, 1), &g0) < 0.05);
    }
}
