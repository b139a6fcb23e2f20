//! `crashrig check`, the `git bisect run` helper: exit codes, and the sequential test that
//! calls a kernel bad when its rate is significantly above a reference rate.

use super::error::BisectError;
use super::model::BatchOutcome;

/// The target did not show: `git bisect good`.
pub const EXIT_GOOD: i32 = 0;
/// The target showed at least once: `git bisect bad`.
pub const EXIT_BAD: i32 = 1;
/// The candidate cannot be tested (build, boot or an unrelated failure): `git bisect skip`.
pub const EXIT_SKIP: i32 = 125;

/// Map one batch to `git bisect run`'s convention: 0 good, 1 bad, 125 cannot test. A batch
/// that ran no iteration tested nothing, so it is a skip, never a "good".
pub fn check_exit_code(outcome: &BatchOutcome) -> i32 {
    match outcome {
        BatchOutcome::Ran { failures, .. } if *failures > 0 => EXIT_BAD,
        BatchOutcome::Ran { iterations, .. } if *iterations > 0 => EXIT_GOOD,
        BatchOutcome::Ran { .. } | BatchOutcome::Unknown { .. } => EXIT_SKIP,
    }
}

/// Wald's sequential probability ratio test of "this kernel fails at the reference rate `p0`"
/// against "it fails at the bad rate `p1`", both errors at `1 - confidence`, within a budget
/// of iterations. The log likelihood ratio moves up at each target sighting and down at each
/// clean iteration; the test stops at the first boundary it crosses: above, bad; below, good;
/// at the budget, it cannot tell. Between two sightings the ratio only falls, so running "until
/// the next sighting or until enough clean iterations to call it good" decides exactly when
/// a one-at-a-time test would.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateTest {
    /// The rate of a good kernel (the reference's).
    pub reference: f64,
    /// The rate the test is built to recognise as bad.
    pub bad_rate: f64,
    pub confidence: f64,
    /// Most iterations run on the kernel.
    pub budget: u32,
}

/// What [`RateTest`] concluded from the iterations so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateVerdict {
    Good,
    Bad,
    /// Neither boundary crossed within the budget.
    CannotTell,
}

impl RateVerdict {
    /// `git bisect run`'s exit code: 0 good, 1 bad, 125 cannot tell.
    pub fn exit_code(self) -> i32 {
        match self {
            RateVerdict::Good => EXIT_GOOD,
            RateVerdict::Bad => EXIT_BAD,
            RateVerdict::CannotTell => EXIT_SKIP,
        }
    }
}

impl RateTest {
    /// The default bad rate for a reference rate `p0`: twice it, at least 0.25 above it, at
    /// most halfway to 1 (0 -> 0.25, 0.125 -> 0.375, 0.5 -> 0.75).
    pub fn default_bad_rate(p0: f64) -> f64 {
        (p0 + p0.max(0.25)).min((1.0 + p0) / 2.0)
    }

    /// A test against reference rate `reference` (0 <= r <= 0.9); `bad_rate` above it (default
    /// [`RateTest::default_bad_rate`]); `budget` 1 to 1,000,000 iterations.
    pub fn new(
        reference: f64,
        bad_rate: Option<f64>,
        confidence: f64,
        budget: u32,
    ) -> Result<RateTest, BisectError> {
        let bad = |name, value: f64, expected| BisectError::BadConfig {
            name,
            value: value.to_string(),
            expected,
        };
        if !(0.0..=0.9).contains(&reference) {
            return Err(bad(
                "reference-rate",
                reference,
                "expected a rate from 0 to 0.9",
            ));
        }
        let bad_rate = bad_rate.unwrap_or_else(|| RateTest::default_bad_rate(reference));
        if !(bad_rate > reference && bad_rate <= 1.0) {
            return Err(bad(
                "bad-rate",
                bad_rate,
                "expected a rate above the reference rate, at most 1",
            ));
        }
        if !(0.5..1.0).contains(&confidence) {
            return Err(bad("confidence", confidence, "expected 0.5 <= x < 1"));
        }
        if budget == 0 || budget > 1_000_000 {
            return Err(bad(
                "iterations",
                f64::from(budget),
                "expected 1 to 1000000",
            ));
        }
        Ok(RateTest {
            reference,
            bad_rate,
            confidence,
            budget,
        })
    }

    /// The log likelihood ratio (bad against reference) of one sighting and of one clean
    /// iteration. A sighting is decisive when the reference rate is 0; a clean iteration when
    /// the bad rate is 1.
    fn steps(&self) -> (f64, f64) {
        let (p0, p1) = (self.reference, self.bad_rate);
        let up = if p0 == 0.0 {
            f64::INFINITY
        } else {
            (p1 / p0).ln()
        };
        let down = if p1 >= 1.0 {
            f64::NEG_INFINITY
        } else {
            ((1.0 - p1) / (1.0 - p0)).ln()
        };
        (up, down)
    }

    fn bounds(&self) -> (f64, f64) {
        let alpha = 1.0 - self.confidence;
        (((1.0 - alpha) / alpha).ln(), (alpha / (1.0 - alpha)).ln())
    }

    fn llr(&self, iterations: u32, failures: u32) -> f64 {
        let (up, down) = self.steps();
        let f = if failures == 0 {
            0.0
        } else {
            f64::from(failures) * up
        };
        let c = iterations - failures;
        f + if c == 0 { 0.0 } else { f64::from(c) * down }
    }

    /// The verdict after `failures` sightings in `iterations` usable iterations; `None` while
    /// the test goes on.
    pub fn verdict(&self, iterations: u32, failures: u32) -> Option<RateVerdict> {
        let (upper, lower) = self.bounds();
        let llr = self.llr(iterations, failures);
        if llr >= upper {
            Some(RateVerdict::Bad)
        } else if llr <= lower {
            Some(RateVerdict::Good)
        } else if iterations >= self.budget {
            Some(RateVerdict::CannotTell)
        } else {
            None
        }
    }

    /// The next batch, run until its first sighting: the clean iterations that would call the
    /// kernel good from here, within the budget.
    pub fn next_batch(&self, iterations: u32, failures: u32) -> u32 {
        let (_, lower) = self.bounds();
        let (_, down) = self.steps();
        let left = self.budget.saturating_sub(iterations).max(1);
        let need = ((lower - self.llr(iterations, failures)) / down).ceil();
        if need.is_finite() && need >= 1.0 {
            (need.min(f64::from(left))) as u32
        } else {
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_table() {
        let ran = |iterations, failures| BatchOutcome::Ran {
            iterations,
            failures,
        };
        let cases = [
            (ran(10, 0), 0),
            (ran(10, 1), 1),
            (ran(1, 1), 1),
            (ran(0, 0), 125),
            (
                BatchOutcome::Unknown {
                    reason: "build failed".into(),
                },
                125,
            ),
        ];
        for (outcome, code) in cases {
            assert_eq!(check_exit_code(&outcome), code, "{outcome:?}");
        }
    }

    #[test]
    fn default_bad_rates() {
        for (p0, p1) in [(0.0, 0.25), (0.125, 0.375), (0.5, 0.75), (0.9, 0.95)] {
            assert!((RateTest::default_bad_rate(p0) - p1).abs() < 1e-12, "{p0}");
        }
    }

    #[test]
    fn verdict_table() {
        // Reference 0: one sighting is bad; clean runs until 0.75^n <= 1/19: 11.
        let t = RateTest::new(0.0, None, 0.95, 60).unwrap();
        assert_eq!(t.verdict(1, 1), Some(RateVerdict::Bad));
        assert_eq!(t.verdict(10, 0), None);
        assert_eq!(t.verdict(11, 0), Some(RateVerdict::Good));
        assert_eq!(t.next_batch(0, 0), 11);
        // Reference 1/8, bad 3/8: each sighting ln 3 = 1.10 up, each clean run
        // ln(5/7) = -0.336 down, bounds +-ln 19 = 2.94.
        let t = RateTest::new(0.125, None, 0.95, 60).unwrap();
        assert_eq!(t.verdict(3, 3), Some(RateVerdict::Bad));
        assert_eq!(t.verdict(2, 2), None);
        assert_eq!(t.verdict(9, 0), Some(RateVerdict::Good));
        assert_eq!(t.verdict(8, 0), None);
        // 3 sightings and 3 clean: 3.30 - 1.01 = 2.28, on; 4 and 4: 3.04, bad.
        assert_eq!(t.verdict(6, 3), None);
        assert_eq!(t.verdict(8, 4), Some(RateVerdict::Bad));
        // 2 sightings in 18: 2.20 - 5.38 = -3.19: good.
        assert_eq!(t.verdict(18, 2), Some(RateVerdict::Good));
        assert_eq!(t.next_batch(6, 3), 16);
        // The budget: undecided at 60 is "cannot tell".
        let t = RateTest::new(0.125, None, 0.95, 10).unwrap();
        assert_eq!(t.verdict(10, 3), Some(RateVerdict::CannotTell));
        assert_eq!(t.next_batch(6, 3), 4);
        assert_eq!(RateVerdict::CannotTell.exit_code(), 125);
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(RateTest::new(0.95, None, 0.95, 10).is_err());
        assert!(RateTest::new(0.3, Some(0.2), 0.95, 10).is_err());
        assert!(RateTest::new(0.3, None, 1.0, 10).is_err());
        assert!(RateTest::new(0.3, None, 0.95, 0).is_err());
        assert!(RateTest::new(f64::NAN, None, 0.95, 10).is_err());
    }

    /// A simulated oracle: kernels at the reference rate are called good, kernels at the bad
    /// rate bad, each wrong at most about `1 - confidence` of the time; the rate the user cares
    /// about (1/8 -> 1/2) is decided well within the default budget.
    #[test]
    fn simulated_kernels_get_the_right_verdict() {
        use rand::rngs::SmallRng;
        use rand::{Rng, SeedableRng};
        let mut rng = SmallRng::seed_from_u64(7);
        let t = RateTest::new(0.125, None, 0.95, 60).unwrap();
        for (rate, want) in [(0.125, RateVerdict::Good), (0.5, RateVerdict::Bad)] {
            let (mut right, mut spent) = (0, 0);
            for _ in 0..2000 {
                let (mut n, mut f) = (0, 0);
                let verdict = loop {
                    if let Some(v) = t.verdict(n, f) {
                        break v;
                    }
                    // One batch, stopping at its first sighting.
                    for _ in 0..t.next_batch(n, f) {
                        n += 1;
                        if rng.gen::<f64>() < rate {
                            f += 1;
                            break;
                        }
                    }
                };
                right += u32::from(verdict == want);
                spent += n;
            }
            let accuracy = f64::from(right) / 2000.0;
            let mean = f64::from(spent) / 2000.0;
            assert!(accuracy >= 0.95, "rate {rate}: {accuracy}");
            assert!(mean < 30.0, "rate {rate}: {mean} iterations");
        }
    }
}
