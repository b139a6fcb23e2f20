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

/// Prior belief about `p`, the per-iteration probability that a bad candidate shows the target.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ReproPrior {
    /// `p ~ Beta(alpha, beta)`, integrated exactly (default: `Beta(1, 1)`, uniform on (0,1)).
    Beta { alpha: f64, beta: f64 },
    /// `p` is known; `Known { p: 1.0 }` turns the search into plain bisection.
    Known { p: f64 },
}

impl Default for ReproPrior {
    fn default() -> Self {
        ReproPrior::Beta {
            alpha: 1.0,
            beta: 1.0,
        }
    }
}

/// Settings of one bisection. Every field has a default; see each field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Stop when one culprit (or one group of candidates no test can tell apart) holds this
    /// posterior probability; also the confidence of each verification verdict (default: 0.95).
    pub confidence: f64,
    /// Probability that one iteration on a good candidate shows the target anyway
    /// (default: 0.0, so a single failure proves a candidate bad).
    pub false_positive_rate: f64,
    /// Prior on the reproduction probability of bad candidates (default: uniform).
    pub repro_prior: ReproPrior,
    /// Cost of building a candidate not tested before, in the unit of `iteration_cost`
    /// (default: 10.0).
    pub build_cost: f64,
    /// Cost of one iteration of an already built candidate (default: 1.0).
    pub iteration_cost: f64,
    /// Largest batch the search asks for at once (default: 32).
    pub max_batch: u32,
    /// Budget of search iterations; verification has its own (default: 1000).
    pub max_iterations: u64,
    /// Budget of builds during the search (default: none, that is every candidate).
    pub max_builds: Option<u64>,
    /// Regression or fix (default: regression).
    pub direction: Direction,
    /// Re-run the culprit and its parent after the search until each verdict holds
    /// (default: true).
    pub verify: bool,
    /// Most verification iterations spent on each of the two candidates (default: 100).
    pub max_verify_iterations: u64,
    /// Verification rounds: a verification that fails puts its runs into the posterior and
    /// sends the search back to work, at most this many rounds in all (default: 3).
    pub max_verify_rounds: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            confidence: 0.95,
            false_positive_rate: 0.0,
            repro_prior: ReproPrior::default(),
            build_cost: 10.0,
            iteration_cost: 1.0,
            max_batch: 32,
            max_iterations: 1000,
            max_builds: None,
            direction: Direction::Regression,
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
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(bad("confidence", self.confidence, "expected 0 < x < 1"));
        }
        if !(self.false_positive_rate >= 0.0 && self.false_positive_rate < 1.0) {
            return Err(bad(
                "false-positive-rate",
                self.false_positive_rate,
                "expected 0 <= x < 1",
            ));
        }
        match self.repro_prior {
            ReproPrior::Beta { alpha, beta } => {
                if !(alpha > 0.0 && alpha.is_finite() && beta > 0.0 && beta.is_finite()) {
                    return Err(bad(
                        "repro-prior",
                        format!("beta({alpha}, {beta})"),
                        "expected finite positive parameters",
                    ));
                }
            }
            ReproPrior::Known { p } => {
                if !(p > self.false_positive_rate && p <= 1.0) {
                    return Err(bad(
                        "repro-prior",
                        format!("known p = {p}"),
                        "expected false-positive-rate < p <= 1",
                    ));
                }
            }
        }
        if !(self.build_cost >= 0.0 && self.build_cost.is_finite()) {
            return Err(bad(
                "build-cost",
                self.build_cost,
                "expected a finite x >= 0",
            ));
        }
        if !(self.iteration_cost > 0.0 && self.iteration_cost.is_finite()) {
            return Err(bad(
                "iteration-cost",
                self.iteration_cost,
                "expected a finite x > 0",
            ));
        }
        if self.max_verify_rounds == 0 {
            return Err(bad("max-verify-rounds", 0, "expected at least 1"));
        }
        if self.max_batch == 0 {
            return Err(bad("max-batch", self.max_batch, "expected at least 1"));
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
        /// Stop the batch after the first iteration that shows the target: with no false
        /// positives that one failure settles the candidate. Stopping early does not bias
        /// the posterior (the likelihood does not depend on the stopping rule).
        stop_at_first_failure: bool,
    },
    /// The bisection is over.
    Done(Box<Report>),
}

/// How the search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The bisection is still running.
    InProgress,
    /// One candidate holds the target confidence.
    Found,
    /// A group of candidates holds it, but skipped candidates leave no test that tells them apart.
    Ambiguous,
    /// The iteration or build budget ran out first.
    BudgetExhausted,
    /// No test left could change the posterior (everything useful was skipped).
    NoProgress,
    /// The evidence contradicts the model: the known-good end showed the target with a zero
    /// false-positive rate, or a known reproduction probability was violated.
    Contradiction,
}

/// One member of the leading group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Suspect {
    pub candidate: usize,
    pub probability: f64,
}

/// What is known about one candidate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct EvidenceRow {
    pub candidate: usize,
    /// Search iterations run on it.
    pub iterations: u64,
    /// Search iterations that showed the target.
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

/// What a verification found about one candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Bad,
    Good,
    /// The budget ran out, the candidate could not be tested, or both verdicts hold.
    Inconclusive,
}

/// One re-run check of the verification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VerifyCheck {
    pub candidate: usize,
    /// The verdict the search result predicts.
    pub expected: Verdict,
    pub verdict: Verdict,
    pub iterations: u64,
    pub failures: u64,
}

/// Fresh re-runs of both ends of the culprit after the search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Verification {
    /// The reproduction probability used for "good" verdicts, frozen when verification began.
    pub p_used: f64,
    /// Clean runs that make a "good" verdict at the target confidence: `ln(1-c)/ln(1-p)`.
    pub clean_runs_needed: u64,
    /// The culprit (expected bad for a regression) then its parent.
    pub checks: Vec<VerifyCheck>,
    /// Every check gave the expected verdict.
    pub holds: bool,
}

/// The result of a bisection, in the caller's candidate numbering.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Report {
    pub status: Status,
    pub direction: Direction,
    /// The first bad candidate (first good one for a fix), when a single candidate holds.
    pub culprit: Option<usize>,
    /// The leading group: one candidate, or the ones no test can tell apart.
    pub suspects: Vec<Suspect>,
    /// Posterior probability of the leading group.
    pub confidence: f64,
    /// Posterior over the culprit, indexed by candidate; index 0 is always 0.
    pub posterior: Vec<f64>,
    /// One row per candidate, 0 to last.
    pub evidence: Vec<EvidenceRow>,
    /// Candidates built (tested at least once, not an alias) in the search.
    pub builds: u64,
    /// Search iterations.
    pub iterations: u64,
    /// Candidates built only for verification.
    pub verify_builds: u64,
    /// Verification iterations.
    pub verify_iterations: u64,
    /// Posterior mean of the reproduction probability given the leading culprit.
    pub p_estimate: f64,
    /// The verification, when it ran.
    pub verified: Option<Verification>,
}
