//! git-bayesect's rule (the `git_bayesect` Python package, version 1.2), re-implemented for
//! `crashrig bench bisect` so that the peer the rate-bisection issue measured itself against
//! runs on the same histories, in the same run: both rates unknown with Jeffreys priors
//! (Beta(1/2, 1/2)) integrated out exactly, one run per step on the candidate whose outcome
//! leaves the least expected entropy of the culprit's position, stop when one position holds
//! the target mass.
//!
//! Its numbering is kept: index 0 is the bad end (the newest commit), `last` the good end;
//! "the change is at index `b`" means indices `0..=b` fail at the new rate and the rest at the
//! old one (`b = last` says even the good end has the new rate). A unit test replays choices
//! the package itself made (`runner/tests/fixtures/bayesect/`).

/// Jeffreys prior of both rates, the package's default.
const JEFFREYS: f64 = 0.5;

/// One git-bayesect bisection over indices `0..=last`.
pub(crate) struct Bayesect {
    /// `yes[b]`, `total[b]`: failures and runs at indices `0..=b` (cumulative, as the package
    /// keeps them).
    yes: Vec<u64>,
    total: Vec<u64>,
    /// `ln_rise[a][m] = ln(a) + ln(a + 1) + ... + ln(a + m - 1)` for `a` = 1/2 and 1: the log
    /// Beta function ratios below, without a log-gamma function.
    ln_half: Vec<f64>,
    ln_one: Vec<f64>,
}

/// `ln Γ(a + m) - ln Γ(a)` for every `m` up to `len`.
fn rising(a: f64, len: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(len + 1);
    let mut acc = 0.0;
    out.push(acc);
    for k in 0..len {
        acc += (a + k as f64).ln();
        out.push(acc);
    }
    out
}

impl Bayesect {
    /// A bisection over `0..=last` that will record at most `max_runs` runs.
    pub(crate) fn new(last: usize, max_runs: usize) -> Bayesect {
        Bayesect {
            yes: vec![0; last + 1],
            total: vec![0; last + 1],
            ln_half: rising(JEFFREYS, max_runs),
            ln_one: rising(2.0 * JEFFREYS, max_runs),
        }
    }

    /// Record one run at `index`.
    pub(crate) fn record(&mut self, index: usize, failed: bool) {
        for b in index..self.total.len() {
            self.total[b] += 1;
            self.yes[b] += u64::from(failed);
        }
    }

    /// `ln B(1/2 + yes, 1/2 + no) - ln B(1/2, 1/2)`: the evidence of runs from one unknown rate.
    fn ln_evidence(&self, yes: u64, no: u64) -> f64 {
        self.ln_half[yes as usize] + self.ln_half[no as usize] - self.ln_one[(yes + no) as usize]
    }

    /// Posterior probability of each index being the change (uniform prior).
    pub(crate) fn distribution(&self) -> Vec<f64> {
        let (all_yes, all_total) = (
            self.yes[self.yes.len() - 1],
            self.total[self.total.len() - 1],
        );
        let ln_post: Vec<f64> = (0..self.total.len())
            .map(|b| {
                let (yl, nl) = (self.yes[b], self.total[b] - self.yes[b]);
                let (yr, tr) = (all_yes - yl, all_total - self.total[b]);
                self.ln_evidence(yl, nl) + self.ln_evidence(yr, tr - yr)
            })
            .collect();
        let max = ln_post.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = ln_post.iter().map(|l| (l - max).exp()).collect();
        let sum: f64 = w.iter().sum();
        w.into_iter().map(|x| x / sum).collect()
    }

    /// The index whose run leaves the least expected entropy (ties to the middle).
    pub(crate) fn select(&self) -> usize {
        let post = self.distribution();
        let n = post.len();
        let (all_yes, all_total) = (self.yes[n - 1], self.total[n - 1]);
        let prior_sum = 2.0 * JEFFREYS;
        // Posterior mean of each rate if the change is at `b`.
        let p_new: Vec<f64> = (0..n)
            .map(|b| (JEFFREYS + self.yes[b] as f64) / (prior_sum + self.total[b] as f64))
            .collect();
        let p_old: Vec<f64> = (0..n)
            .map(|b| {
                let (yr, tr) = (all_yes - self.yes[b], all_total - self.total[b]);
                (JEFFREYS + yr as f64) / (prior_sum + tr as f64)
            })
            .collect();
        let wlog = |w: f64| if w > 0.0 { w * w.log2() } else { 0.0 };
        // For a run at `s`: change positions `b >= s` make it fail at their new rate, `b < s`
        // at their old one. `outcome(w_new, w_old)[s]` sums the weights over both.
        let outcome = |w_new: &dyn Fn(usize) -> f64, w_old: &dyn Fn(usize) -> f64| -> Vec<f64> {
            let mut from_new = vec![0.0; n + 1];
            for b in (0..n).rev() {
                from_new[b] = from_new[b + 1] + w_new(b);
            }
            let mut below_old = 0.0;
            (0..n)
                .map(|s| {
                    let v = below_old + from_new[s];
                    below_old += w_old(s);
                    v
                })
                .collect()
        };
        let mut expected = vec![0.0; n];
        for failed in [true, false] {
            let rate = |p: f64| if failed { p } else { 1.0 - p };
            let mass = outcome(&|b| post[b] * rate(p_new[b]), &|b| post[b] * rate(p_old[b]));
            let mass_log = outcome(&|b| wlog(post[b] * rate(p_new[b])), &|b| {
                wlog(post[b] * rate(p_old[b]))
            });
            for s in 0..n {
                if mass[s] > 0.0 {
                    let h = mass[s].log2() - mass_log[s] / mass[s];
                    expected[s] += h * mass[s];
                }
            }
        }
        // numpy's isclose(rtol = 1e-12, atol = 1e-15) against the minimum, then the index
        // closest to n / 2, the lower one on a tie.
        let min = expected.iter().copied().fold(f64::INFINITY, f64::min);
        let mid = n / 2;
        (0..n)
            .filter(|&s| (expected[s] - min).abs() <= 1e-15 + 1e-12 * min.abs())
            .min_by_key(|&s| s.abs_diff(mid))
            .expect("some index holds the minimum")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays the package's own runs (`runner/tests/fixtures/bayesect/trace.txt`, made by
    /// `make-trace.py` there): every choice and the final answer must be the package's.
    #[test]
    fn choices_match_the_python_package_step_by_step() {
        let trace = include_str!("../../tests/fixtures/bayesect/trace.txt");
        let mut histories = 0;
        let mut current: Option<(Bayesect, usize)> = None;
        for line in trace.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["history", last, ..] => {
                    current = Some((Bayesect::new(last.parse().unwrap(), 400), 0));
                }
                ["named", index, mass] => {
                    let (b, steps) = current.take().expect("a history is open");
                    let post = b.distribution();
                    let (best, top) = post
                        .iter()
                        .enumerate()
                        .max_by(|x, y| x.1.total_cmp(y.1))
                        .unwrap();
                    assert_eq!(best, index.parse::<usize>().unwrap(), "history {histories}");
                    let mass: f64 = mass.parse().unwrap();
                    assert!((top - mass).abs() < 1e-9, "{top} against {mass}");
                    assert!(steps > 0);
                    histories += 1;
                }
                [index, failed] => {
                    let (b, steps) = current.as_mut().expect("a history is open");
                    let index: usize = index.parse().unwrap();
                    assert_eq!(
                        b.select(),
                        index,
                        "history {histories}, run {steps}: the package chose {index}"
                    );
                    b.record(index, *failed == "1");
                    *steps += 1;
                }
                _ => panic!("unexpected trace line `{line}`"),
            }
        }
        assert_eq!(histories, 6);
    }

    #[test]
    fn a_deterministic_change_is_found_by_halving() {
        // Index 10 of 0..=16 is the change: indices 0..=10 always fail, the rest never.
        let mut b = Bayesect::new(16, 100);
        for _ in 0..100 {
            let s = b.select();
            b.record(s, s <= 10);
            let post = b.distribution();
            if post.iter().copied().fold(0.0, f64::max) >= 0.95 {
                let best = (0..post.len())
                    .max_by(|&x, &y| post[x].total_cmp(&post[y]))
                    .unwrap();
                assert_eq!(best, 10);
                return;
            }
        }
        panic!("no answer in 100 runs");
    }
}
