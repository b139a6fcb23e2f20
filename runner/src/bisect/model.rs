//! Inputs and outputs of the bisection core: configuration, batch outcomes, actions, report.

use serde::{Deserialize, Serialize};

use super::error::BisectError;

/// Which way the outcome changed over the range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Candidate 0 is good, the last one bad: find the first bad candidate (default).
    #[default]
    Regression,
    /// Candidate 0 is bad, the last one good: find the first good candidate (the fix).
    Fix,
}

/// Prior belief about one side's rate: the per-iteration probability that a candidate on that
/// side of the change shows the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RatePrior {
    /// On a grid of 48 rates: the good side uniform with an atom at 0 ("it never happened
    /// before", prior mass 0.3), the bad side `Beta(1, 3)`-shaped (races mostly show in a
    /// minority of iterations) with an atom at 1 ("it always happens", 0.1), so a plain
    /// 0 -> p regression and a deterministic bug are as cheap as when told (default).
    #[default]
    Weak,
    /// `Beta(alpha, beta)` on the same grid (an informed guess that the runs still correct).
    Beta { alpha: f64, beta: f64 },
    /// The rate is known exactly (tests, simulations).
    Known { rate: f64 },
}

impl RatePrior {
    /// A guess worth 20 iterations centered on `rate` (what `--false-positive-rate` means).
    pub fn guess(rate: f64) -> RatePrior {
        RatePrior::Beta {
            alpha: 20.0 * rate + 0.5,
            beta: 20.0 * (1.0 - rate) + 0.5,
        }
    }

    fn validate(&self, name: &'static str) -> Result<(), BisectError> {
        let bad = |value: String, expected| BisectError::BadConfig {
            name,
            value,
            expected,
        };
        match *self {
            RatePrior::Weak => Ok(()),
            RatePrior::Beta { alpha, beta } => {
                if alpha > 0.0 && alpha.is_finite() && beta > 0.0 && beta.is_finite() {
                    Ok(())
                } else {
                    Err(bad(
                        format!("beta({alpha}, {beta})"),
                        "expected finite positive parameters",
                    ))
                }
            }
            RatePrior::Known { rate } => {
                if (0.0..=1.0).contains(&rate) {
                    Ok(())
                } else {
                    Err(bad(format!("known rate {rate}"), "expected 0 <= rate <= 1"))
                }
            }
        }
    }
}

/// Settings of one bisection. Every field has a default; see each field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Confidence of every claim: that the ends differ, that one culprit (or one group of
    /// candidates no test can tell apart) holds the posterior, and that the culprit's rate
    /// differs from its parent's (default: 0.95).
    pub confidence: f64,
    /// Prior on the rate of candidates before the change (default: weak, learnt from the runs).
    pub good_rate: RatePrior,
    /// Prior on the rate of candidates after the change (default: weak, learnt from the runs).
    pub bad_rate: RatePrior,
    /// Cost of building a candidate not tested before, in the unit of `iteration_cost`
    /// (default: 10.0).
    pub build_cost: f64,
    /// Cost of booting a candidate's kernel, paid when a batch runs on another kernel than the
    /// previous batch (consecutive batches on one candidate reuse the booted VM) (default: 2.0).
    pub boot_cost: f64,
    /// Cost of one iteration of an already built candidate (default: 1.0).
    pub iteration_cost: f64,
    /// Largest batch the search asks for at once (default: 32).
    pub max_batch: u32,
    /// Budget of iterations for the ends and the search; verification has its own
    /// (default: 1000).
    pub max_iterations: u64,
    /// Budget of builds during the search (default: none, that is every candidate).
    pub max_builds: Option<u64>,
    /// Regression or fix (default: regression).
    pub direction: Direction,
    /// Run the good and the bad end until their rates differ before searching (default: true).
    pub check_ends: bool,
    /// Compare the culprit's rate with its parent's after the search (default: true).
    pub verify: bool,
    /// Most verification iterations spent on each of the two candidates in one round
    /// (default: 100).
    pub max_verify_iterations: u64,
    /// Verification rounds: a verification that fails keeps its runs in the posterior and
    /// sends the search back to work, at most this many rounds in all (default: 3).
    pub max_verify_rounds: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            confidence: 0.95,
            good_rate: RatePrior::Weak,
            bad_rate: RatePrior::Weak,
            build_cost: 10.0,
            boot_cost: 2.0,
            iteration_cost: 1.0,
            max_batch: 32,
            max_iterations: 1000,
            max_builds: None,
            direction: Direction::Regression,
            check_ends: true,
            verify: true,
            max_verify_iterations: 100,
            max_verify_rounds: 3,
        }
    }
}

impl Config {
    /// Check every value's domain; the search relies on these.
    pub fn validate(&self) -> Result<(), BisectError> {
        fn bad(name: &'static str, value: impl ToString, expected: &'static str) -> BisectError {
            BisectError::BadConfig {
                name,
                value: value.to_string(),
                expected,
            }
        }
        if !(self.confidence >= 0.5 && self.confidence < 1.0) {
            return Err(bad("confidence", self.confidence, "expected 0.5 <= x < 1"));
        }
        self.good_rate.validate("good-rate")?;
        self.bad_rate.validate("bad-rate")?;
        if let (RatePrior::Known { rate: g }, RatePrior::Known { rate: b }) =
            (self.good_rate, self.bad_rate)
        {
            if g >= b {
                return Err(bad(
                    "good-rate",
                    g,
                    "expected a known good rate below the known bad rate",
                ));
            }
        }
        for (name, value, zero_ok) in [
            ("build-cost", self.build_cost, true),
            ("boot-cost", self.boot_cost, true),
            ("iteration-cost", self.iteration_cost, false),
        ] {
            let ok = value.is_finite() && (value > 0.0 || (zero_ok && value == 0.0));
            if !ok || value > 1e6 {
                return Err(bad(
                    name,
                    value,
                    if zero_ok {
                        "expected a finite 0 <= x <= 1e6"
                    } else {
                        "expected a finite 0 < x <= 1e6"
                    },
                ));
            }
        }
        if self.max_verify_rounds == 0 || self.max_verify_rounds > 100 {
            return Err(bad(
                "max-verify-rounds",
                self.max_verify_rounds,
                "expected 1 to 100",
            ));
        }
        if self.max_batch == 0 || self.max_batch > 10_000 {
            return Err(bad("max-batch", self.max_batch, "expected 1 to 10000"));
        }
        if self.max_iterations == 0 || self.max_iterations > 1_000_000 {
            return Err(bad(
                "max-iterations",
                self.max_iterations,
                "expected 1 to 1000000",
            ));
        }
        Ok(())
    }
}

/// What one batch of iterations on one candidate showed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum BatchOutcome {
    /// The candidate was built and booted; `failures` of `iterations` showed the target.
    Ran { iterations: u32, failures: u32 },
    /// The candidate cannot be tested (build failure, boot failure, an unrelated crash): it is
    /// skipped, never counted bad.
    Unknown { reason: String },
}

/// What the driver should do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Build (or reuse) `candidate` and run `iterations` iterations, then `record` the outcome
    /// (with the iterations actually run).
    Test {
        candidate: usize,
        iterations: u32,
        /// Stop the batch after the first iteration that shows the target (the engine asks
        /// when a failure would settle the question). Stopping early does not bias the
        /// posterior: the likelihood does not depend on the stopping rule.
        stop_at_first_failure: bool,
    },
    /// The bisection is over.
    Done(Box<Report>),
}

/// Where a bisection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Running the good and the bad end until their rates differ.
    Ends,
    /// Looking for the culprit.
    Search,
    /// Comparing the culprit's rate with its parent's.
    Verify,
    Done,
}

/// How the bisection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The bisection is still running.
    InProgress,
    /// One candidate holds the target confidence (and its rate differs from its parent's).
    Found,
    /// A group of candidates holds it, but skipped candidates leave no test that tells them apart.
    Ambiguous,
    /// The search's leader did not show a rate different from its parent's.
    Unverified,
    /// The iteration or build budget ran out first: see the suspect range.
    BudgetExhausted,
    /// The good and the bad end did not show different rates within the budget.
    NoDifference,
    /// The good end fails more often than the bad end: the change goes the other way.
    WrongDirection,
    /// No test left could change the posterior (everything useful was skipped).
    NoProgress,
    /// The evidence contradicts the model (a known rate was violated).
    Contradiction,
}

impl Status {
    /// The status in words, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Status::InProgress => "in progress",
            Status::Found => "found the culprit",
            Status::Ambiguous => "found a group of candidates no test can tell apart",
            Status::Unverified => "the leading candidate's rate did not differ from its parent's",
            Status::BudgetExhausted => "the budget ran out before one candidate stood out",
            Status::NoDifference => "the good and the bad end did not show different rates",
            Status::WrongDirection => "the good end fails more often than the bad end",
            Status::NoProgress => "no candidate left that could be tested",
            Status::Contradiction => "the evidence contradicts the given rates",
        }
    }
}

/// One candidate and its posterior probability of being the culprit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Suspect {
    pub candidate: usize,
    pub probability: f64,
}

/// The shortest run of candidates that holds the target confidence, when no single one does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SuspectRange {
    pub first: usize,
    pub last: usize,
    /// Posterior probability that the culprit is in `first..=last`.
    pub mass: f64,
}

/// What is known about one candidate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct EvidenceRow {
    pub candidate: usize,
    /// Iterations run on it before verification (ends and search).
    pub iterations: u64,
    /// Of those, iterations that showed the target.
    pub failures: u64,
    /// Why it was skipped, when it was.
    pub unknown: Option<String>,
    /// The candidate whose kernel is byte-identical to this one's, when one was reported.
    pub alias_of: Option<usize>,
    /// Verification iterations run on it.
    pub verify_iterations: u64,
    /// Verification iterations that showed the target.
    pub verify_failures: u64,
}

/// A rate measured on one kernel: failures of iterations with a 95% Wilson interval. In
/// JSON its `rate` is `null` when no iteration ran (0/0 is no rate of 0%).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "MeasuredRateJson", from = "MeasuredRateJson")]
pub struct MeasuredRate {
    pub iterations: u64,
    pub failures: u64,
    pub rate: f64,
    pub low: f64,
    pub high: f64,
}

/// [`MeasuredRate`] as bisect.json and the journal hold it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct MeasuredRateJson {
    iterations: u64,
    failures: u64,
    rate: Option<f64>,
    low: f64,
    high: f64,
}

impl From<MeasuredRate> for MeasuredRateJson {
    fn from(m: MeasuredRate) -> Self {
        MeasuredRateJson {
            iterations: m.iterations,
            failures: m.failures,
            rate: (m.iterations > 0).then_some(m.rate),
            low: m.low,
            high: m.high,
        }
    }
}

impl From<MeasuredRateJson> for MeasuredRate {
    fn from(j: MeasuredRateJson) -> Self {
        MeasuredRate {
            iterations: j.iterations,
            failures: j.failures,
            rate: j.rate.unwrap_or(0.0),
            low: j.low,
            high: j.high,
        }
    }
}

impl MeasuredRate {
    pub fn new(failures: u64, iterations: u64) -> MeasuredRate {
        let (low, high) = crate::outcome::stats::wilson_95(failures, iterations);
        MeasuredRate {
            iterations,
            failures,
            rate: if iterations == 0 {
                0.0
            } else {
                failures as f64 / iterations as f64
            },
            low,
            high,
        }
    }

    /// `3/20 = 15% [5%, 36%]`
    pub fn text(&self) -> String {
        format!(
            "{}/{} = {:.0}% [{:.0}%, {:.0}%]",
            self.failures,
            self.iterations,
            100.0 * self.rate,
            100.0 * self.low,
            100.0 * self.high
        )
    }
}

/// Two kernels' rates compared: the one expected to fail less (`good`) and the one expected to
/// fail more (`bad`), in the caller's numbering.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Comparison {
    pub good_candidate: usize,
    pub good: MeasuredRate,
    pub bad_candidate: usize,
    pub bad: MeasuredRate,
    /// Posterior probability that the bad kernel's rate is above the good one's (independent
    /// weak priors on the two rates: uniform with room for "never").
    pub probability: f64,
    /// Bayes factor of "the bad kernel's rate is above the good one's" against "one and the
    /// same rate"; `>= 1 / (1 - confidence)` shows a difference by a test that stays valid
    /// however often the runs were judged (a range named when the budget ran out needs it).
    #[serde(default)]
    pub bayes_factor: f64,
    /// One-sided Fisher exact p-value of the same question, for reference.
    pub fisher_p: f64,
    pub holds: bool,
}

/// All the verification runs of the verified pair, in the [`Comparison`]'s numbering.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VerificationRuns {
    /// Verification rounds run (each judges its own fresh runs).
    pub rounds: u32,
    /// The kernel expected to fail more (`Comparison::bad_candidate`).
    pub bad: MeasuredRate,
    /// The kernel expected to fail less (`Comparison::good_candidate`).
    pub good: MeasuredRate,
}

/// A rate estimated by the model: posterior mean and central 95% interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct EstimatedRate {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

impl EstimatedRate {
    /// `12% [6%, 20%]`
    pub fn text(&self) -> String {
        format!(
            "{:.0}% [{:.0}%, {:.0}%]",
            100.0 * self.mean,
            100.0 * self.low,
            100.0 * self.high
        )
    }
}

/// The rates on both sides of the leading culprit, learnt from every run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SideRates {
    /// The leading culprit the estimates are conditioned on.
    pub culprit: usize,
    /// Rate of the candidates on the good side (before a regression, after a fix).
    pub good: EstimatedRate,
    /// Rate of the candidates on the bad side.
    pub bad: EstimatedRate,
    /// Every run on the good side, pooled. The intervals above are at least as wide as its
    /// Wilson interval: the model's prior has a point mass at "never fails", which after a few
    /// clean runs would pull a side's interval below rates the runs cannot rule out.
    #[serde(default)]
    pub good_runs: Option<MeasuredRate>,
    /// Every run on the bad side, pooled (see `good_runs`).
    #[serde(default)]
    pub bad_runs: Option<MeasuredRate>,
}

/// The result of a bisection, in the caller's candidate numbering.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Report {
    pub status: Status,
    pub direction: Direction,
    /// The first bad candidate (first good one for a fix), named only when one candidate holds
    /// the target confidence and its rate differs from its parent's.
    pub culprit: Option<usize>,
    /// The leading group: one candidate, or the ones no test can tell apart.
    pub suspects: Vec<Suspect>,
    /// Posterior probability of the leading group.
    pub confidence: f64,
    /// The most probable culprits, most probable first (at most five).
    pub top: Vec<Suspect>,
    /// The shortest run of candidates holding the target confidence, when the search did not
    /// name one candidate.
    pub range: Option<SuspectRange>,
    /// Posterior over the culprit, indexed by candidate; the good end's entry is always 0.
    pub posterior: Vec<f64>,
    /// One row per candidate, 0 to last.
    pub evidence: Vec<EvidenceRow>,
    /// The good end against the bad end, when they were run.
    pub ends: Option<Comparison>,
    /// Whether the ends' runs (all of them, to the end of the bisection) show their difference
    /// by a test valid however often it was looked at: a Bayes factor against equal rates of
    /// at least `evidence_needed`. The search may start without it; a range named because the
    /// budget ran out says so.
    #[serde(default)]
    pub ends_confirmed: bool,
    /// The Bayes factor a claim needs at the target confidence: `1 / (1 - confidence)`.
    #[serde(default)]
    pub evidence_needed: f64,
    /// Iterations per end that would show the observed difference (Fisher, alpha 0.05, power
    /// 0.8), when the ends did not differ within the budget.
    pub iterations_needed: Option<u64>,
    /// The estimated rates on both sides of the leading culprit.
    pub rates: Option<SideRates>,
    /// The culprit against its parent, when verification ran.
    pub verified: Option<Comparison>,
    /// Every verification run of the verified pair's two kernels, over all rounds (the
    /// verdict judges only the last round's fresh runs; the earlier ones are in the
    /// posterior).
    #[serde(default)]
    pub verification_runs: Option<VerificationRuns>,
    /// Candidates built (tested at least once, not an alias) for the ends and the search.
    pub builds: u64,
    /// Kernel boots: batches on another kernel than the batch before.
    pub boots: u64,
    /// Iterations on the ends before the search.
    pub end_iterations: u64,
    /// Search iterations.
    pub iterations: u64,
    /// Candidates built only for verification.
    pub verify_builds: u64,
    /// Verification iterations.
    pub verify_iterations: u64,
}

impl Report {
    /// Every iteration run: ends, search and verification.
    pub fn total_iterations(&self) -> u64 {
        self.end_iterations + self.iterations + self.verify_iterations
    }

    /// Every build: search and verification.
    pub fn total_builds(&self) -> u64 {
        self.builds + self.verify_builds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_of_no_iterations_is_null_in_json_and_reads_back() {
        let none = MeasuredRate::new(0, 0);
        let json = serde_json::to_value(&none).unwrap();
        assert!(json["rate"].is_null(), "{json}");
        assert_eq!(serde_json::from_value::<MeasuredRate>(json).unwrap(), none);
        let some = MeasuredRate::new(3, 12);
        let json = serde_json::to_value(&some).unwrap();
        assert_eq!(json["rate"], 0.25);
        assert_eq!(json["iterations"], 12);
        assert_eq!(serde_json::from_value::<MeasuredRate>(json).unwrap(), some);
        // Written by an older crashrig: 0, not null.
        let old = serde_json::json!({"iterations": 0, "failures": 0, "rate": 0.0, "low": 0.0, "high": 1.0});
        assert_eq!(
            serde_json::from_value::<MeasuredRate>(old)
                .unwrap()
                .iterations,
            0
        );
    }
}
