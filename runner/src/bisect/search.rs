//! The Bayesian bisection engine: a posterior over the culprit, the next test chosen for the
//! most expected information per unit of cost, a stop at the target confidence or budget, and
//! fresh verification re-runs of both ends of the culprit.
//!
//! Internally candidates are always numbered so that 0 is good and `last` is bad (a regression);
//! a fix search is the same search over the reversed range (`internal = last - external`), so
//! there is one code path and the mapping lives only at the API boundary.

use super::error::BisectError;
use super::model::{
    Action, BatchOutcome, Config, Direction, EvidenceRow, Report, Status, Suspect, Verdict,
    Verification, VerifyCheck,
};
use super::posterior::{self, Posterior, Tally};
use super::verify;

/// Information gains below this (nats) are rounding noise, not a reason to run anything.
const MIN_GAIN: f64 = 1e-12;

/// Evaluates a candidate: build it (through the cache), boot it, run the scenario `iterations`
/// times and count the iterations that showed the target.
pub trait Oracle {
    /// Run up to `iterations` iterations; when `stop_at_first_failure`, stop after the first
    /// iteration that shows the target and report the iterations actually run.
    fn test(
        &mut self,
        candidate: usize,
        iterations: u32,
        stop_at_first_failure: bool,
    ) -> BatchOutcome;
}

#[derive(Clone, Debug, Default)]
struct Cell {
    search: Tally,
    verify: Tally,
    unknown: Option<String>,
    /// Internal index of the candidate with a byte-identical kernel.
    alias_of: Option<usize>,
    /// Built (or its build was attempted) or known identical to another: no build cost left.
    built: bool,
}

#[derive(Clone, Debug)]
struct Check {
    candidate: usize,
    expected: Verdict,
    /// Runs of this round only, so a verdict always rests on fresh runs.
    tally: Tally,
    verdict: Option<Verdict>,
}

#[derive(Clone, Debug)]
struct VerifyState {
    p_used: f64,
    needed: u64,
    checks: Vec<Check>,
}

#[derive(Clone, Debug)]
enum Phase {
    Search,
    Verify {
        status: Status,
        state: VerifyState,
    },
    Done {
        status: Status,
        verification: Option<VerifyState>,
    },
}

enum Decision {
    Test(usize, u32),
    Stop(Status, Option<Vec<usize>>),
}

/// Progress of a running bisection, for a terminal display.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    pub iterations: u64,
    pub builds: u64,
    /// The most probable culprit now.
    pub leader: Option<Suspect>,
    /// The shortest range of culprit positions holding the target confidence.
    pub range: (usize, usize),
}

/// A flake-aware bisection over candidates `0..=last`, driven step by step: call
/// [`Bisector::next_action`], run what it asks, [`Bisector::record`] the outcome; or hand an
/// [`Oracle`] to [`Bisector::run`].
#[derive(Clone, Debug)]
pub struct Bisector {
    last: usize,
    config: Config,
    cells: Vec<Cell>,
    /// `excluded[c]`: culprit position `c` is impossible (identical kernels around it).
    excluded: Vec<bool>,
    phase: Phase,
    iterations: u64,
    builds: u64,
    verify_iterations: u64,
    verify_builds: u64,
    /// Verifications that did not hold and sent the search back to work.
    failed_rounds: u32,
    /// The last verification that did not hold, for the report if no later one runs.
    last_verification: Option<VerifyState>,
    pending: Option<(usize, u32)>,
}

impl Bisector {
    /// A bisection over candidates `0..=last` (`last >= 1`): 0 is the known-good end and
    /// `last` the known-bad end for a regression, the other way round for a fix.
    pub fn new(last: usize, config: Config) -> Result<Self, BisectError> {
        if last == 0 {
            return Err(BisectError::EmptyRange);
        }
        config.validate()?;
        Ok(Bisector {
            last,
            config,
            cells: vec![Cell::default(); last + 1],
            excluded: vec![false; last + 1],
            phase: Phase::Search,
            iterations: 0,
            builds: 0,
            verify_iterations: 0,
            verify_builds: 0,
            failed_rounds: 0,
            last_verification: None,
            pending: None,
        })
    }

    /// The last candidate index.
    pub fn last(&self) -> usize {
        self.last
    }

    /// The configuration this bisection runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn to_internal(&self, candidate: usize) -> usize {
        match self.config.direction {
            Direction::Regression => candidate,
            Direction::Fix => self.last - candidate,
        }
    }

    /// Candidate numbering is an involution, so the same map goes both ways.
    fn to_external(&self, candidate: usize) -> usize {
        self.to_internal(candidate)
    }

    /// Culprit position `c` (first bad) maps to the first good external candidate for a fix.
    fn position_to_external(&self, c: usize) -> usize {
        match self.config.direction {
            Direction::Regression => c,
            Direction::Fix => self.last + 1 - c,
        }
    }

    fn check_candidate(&self, candidate: usize) -> Result<usize, BisectError> {
        if candidate > self.last {
            return Err(BisectError::CandidateOutOfRange {
                candidate,
                last: self.last,
            });
        }
        Ok(self.to_internal(candidate))
    }

    /// Record the outcome of a batch on `candidate` (external numbering). Outcomes of
    /// candidates the bisector did not ask for are evidence too.
    pub fn record(&mut self, candidate: usize, outcome: BatchOutcome) -> Result<(), BisectError> {
        let i = self.check_candidate(candidate)?;
        if let BatchOutcome::Ran {
            iterations,
            failures,
        } = outcome
        {
            if failures > iterations {
                return Err(BisectError::FailuresExceedIterations {
                    candidate,
                    iterations,
                    failures,
                });
            }
        }
        self.settle();
        let config = &self.config;
        let cell = &mut self.cells[i];
        match &mut self.phase {
            Phase::Done { .. } => return Err(BisectError::AlreadyDone { candidate }),
            Phase::Verify { state, .. } if state.checks.iter().any(|c| c.candidate == i) => {
                if !cell.built {
                    cell.built = true;
                    self.verify_builds += 1;
                }
                let check = state
                    .checks
                    .iter_mut()
                    .find(|c| c.candidate == i)
                    .expect("matched by the guard above");
                match outcome {
                    BatchOutcome::Ran {
                        iterations,
                        failures,
                    } => {
                        cell.verify.iterations += u64::from(iterations);
                        cell.verify.failures += u64::from(failures);
                        check.tally.iterations += u64::from(iterations);
                        check.tally.failures += u64::from(failures);
                        self.verify_iterations += u64::from(iterations);
                        if check.verdict.is_none() {
                            check.verdict = verify::verdict(
                                check.tally,
                                state.p_used,
                                config.false_positive_rate,
                                config.confidence,
                                config.max_verify_iterations,
                            );
                        }
                    }
                    BatchOutcome::Unknown { reason } => {
                        cell.unknown.get_or_insert(reason);
                        check.verdict.get_or_insert(Verdict::Inconclusive);
                    }
                }
            }
            _ => {
                if !cell.built {
                    cell.built = true;
                    if matches!(self.phase, Phase::Search) {
                        self.builds += 1;
                    } else {
                        self.verify_builds += 1;
                    }
                }
                match outcome {
                    BatchOutcome::Ran {
                        iterations,
                        failures,
                    } => {
                        cell.search.iterations += u64::from(iterations);
                        cell.search.failures += u64::from(failures);
                        if matches!(self.phase, Phase::Search) {
                            self.iterations += u64::from(iterations);
                        } else {
                            self.verify_iterations += u64::from(iterations);
                        }
                    }
                    BatchOutcome::Unknown { reason } => {
                        cell.unknown.get_or_insert(reason);
                    }
                }
            }
        }
        self.pending = None;
        Ok(())
    }

    /// Record that `candidate`'s kernel is byte-identical to `same_as`'s: both behave alike, so
    /// no commit between them can be the culprit, and `candidate` costs no build.
    pub fn record_alias(&mut self, candidate: usize, same_as: usize) -> Result<(), BisectError> {
        let i = self.check_candidate(candidate)?;
        let j = self.check_candidate(same_as)?;
        let bad = |why| BisectError::BadAlias {
            candidate,
            same_as,
            why,
        };
        if i == j {
            return Err(bad("a candidate cannot alias itself"));
        }
        let (lo, hi) = (i.min(j), i.max(j));
        if lo == 0 && hi == self.last {
            return Err(bad("the good and the bad end cannot be the same kernel"));
        }
        for c in lo + 1..=hi {
            self.excluded[c] = true;
        }
        let cell = &mut self.cells[i];
        cell.alias_of = Some(j);
        cell.built = true;
        self.pending = None;
        Ok(())
    }

    /// What to do next.
    pub fn next_action(&mut self) -> Action {
        self.settle();
        match &self.phase {
            Phase::Search => {
                let (m, b) = self
                    .pending
                    .expect("settle leaves a pending test in the search");
                Action::Test {
                    candidate: self.to_external(m),
                    iterations: b,
                    stop_at_first_failure: self.config.false_positive_rate == 0.0,
                }
            }
            Phase::Verify { state, .. } => {
                let check = state
                    .checks
                    .iter()
                    .find(|c| c.verdict.is_none())
                    .expect("settle leaves an open check in verification");
                let t = check.tally;
                let cap = self.config.max_verify_iterations;
                let batch = state
                    .needed
                    .saturating_sub(t.iterations)
                    .max(1)
                    .min(cap.saturating_sub(t.iterations).max(1))
                    .min(u64::from(u32::MAX));
                Action::Test {
                    candidate: self.to_external(check.candidate),
                    iterations: batch as u32,
                    stop_at_first_failure: self.config.false_positive_rate == 0.0,
                }
            }
            Phase::Done { .. } => Action::Done(Box::new(self.report())),
        }
    }

    /// Drive the whole bisection with `oracle`.
    pub fn run(&mut self, oracle: &mut dyn Oracle) -> Result<Report, BisectError> {
        loop {
            match self.next_action() {
                Action::Test {
                    candidate,
                    iterations,
                    stop_at_first_failure,
                } => {
                    let outcome = oracle.test(candidate, iterations, stop_at_first_failure);
                    self.record(candidate, outcome)?;
                }
                Action::Done(report) => return Ok(*report),
            }
        }
    }

    /// The posterior uses every run, verification runs included: they are fresh evidence, and
    /// a verification that fails must be able to move the search.
    fn internal_posterior(&self) -> Posterior {
        let tallies: Vec<Tally> = self
            .cells
            .iter()
            .map(|c| Tally {
                iterations: c.search.iterations + c.verify.iterations,
                failures: c.search.failures + c.verify.failures,
            })
            .collect();
        posterior::posterior(
            &tallies,
            &self.excluded,
            &self.config.repro_prior,
            self.config.false_positive_rate,
        )
    }

    /// Posterior probability of each candidate being the culprit, indexed by candidate (index 0
    /// is 0); all zeros when the evidence contradicts the model.
    pub fn posterior(&self) -> Vec<f64> {
        let probs = self
            .internal_posterior()
            .probs
            .unwrap_or_else(|| vec![0.0; self.last + 1]);
        let mut out = vec![0.0; self.last + 1];
        for (c, q) in probs.into_iter().enumerate().skip(1) {
            out[self.position_to_external(c)] = q;
        }
        out
    }

    /// A candidate bounds a group of culprit positions when it can tell them apart.
    fn splits(&self, m: usize) -> bool {
        m == self.last || self.cells[m].unknown.is_none() || self.cells[m].search.iterations > 0
    }

    /// The group of culprit positions no further test can tell apart with the most mass.
    fn leading_group(&self, probs: &[f64]) -> (Vec<usize>, f64) {
        let mut best: (Vec<usize>, f64) = (Vec::new(), -1.0);
        let mut start = 1;
        for m in 1..=self.last {
            if self.splits(m) {
                let mass: f64 = probs[start..=m].iter().sum();
                if mass > best.1 {
                    best = ((start..=m).collect(), mass);
                }
                start = m + 1;
            }
        }
        best
    }

    fn p_estimate(&self, post: &Posterior, probs: &[f64]) -> f64 {
        (1..=self.last)
            .map(|c| {
                probs[c]
                    * self
                        .config
                        .repro_prior
                        .mean(post.fail_suffix[c], post.clean_suffix[c])
            })
            .sum()
    }

    fn settle(&mut self) {
        loop {
            match &self.phase {
                Phase::Done { .. } => return,
                Phase::Verify { status, state } => {
                    if state.checks.iter().any(|c| c.verdict.is_none()) {
                        return;
                    }
                    let holds = state.checks.iter().all(|c| c.verdict == Some(c.expected));
                    let rounds_left = self.failed_rounds + 1 < self.config.max_verify_rounds;
                    let budget_left = self.iterations < self.config.max_iterations;
                    if holds || !rounds_left || !budget_left {
                        self.phase = Phase::Done {
                            status: *status,
                            verification: Some(state.clone()),
                        };
                    } else {
                        // The fresh runs contradict the result and are in the posterior now:
                        // search on from there.
                        self.failed_rounds += 1;
                        self.last_verification = Some(state.clone());
                        self.phase = Phase::Search;
                        self.pending = None;
                    }
                }
                Phase::Search => {
                    if self.pending.is_some() {
                        return;
                    }
                    match self.decide() {
                        Decision::Test(m, b) => {
                            self.pending = Some((m, b));
                            return;
                        }
                        Decision::Stop(status, group) => self.stop_search(status, group),
                    }
                }
            }
        }
    }

    fn stop_search(&mut self, status: Status, group: Option<Vec<usize>>) {
        let group = match group {
            Some(g) if self.config.verify && !g.is_empty() => g,
            _ => {
                self.phase = Phase::Done {
                    status,
                    verification: None,
                };
                return;
            }
        };
        let post = self.internal_posterior();
        let p_used = post
            .probs
            .as_ref()
            .map_or(1.0, |probs| self.p_estimate(&post, probs));
        let bad_end = Check {
            candidate: group[group.len() - 1],
            expected: Verdict::Bad,
            tally: Tally::default(),
            verdict: None,
        };
        let good_end = Check {
            candidate: group[0] - 1,
            expected: Verdict::Good,
            tally: Tally::default(),
            verdict: None,
        };
        // The culprit first, then its parent, in the caller's terms.
        let checks = match self.config.direction {
            Direction::Regression => vec![bad_end, good_end],
            Direction::Fix => vec![good_end, bad_end],
        };
        self.phase = Phase::Verify {
            status,
            state: VerifyState {
                p_used,
                needed: verify::clean_runs_needed(self.config.confidence, p_used),
                checks,
            },
        };
    }

    fn decide(&self) -> Decision {
        let post = self.internal_posterior();
        let Some(probs) = &post.probs else {
            return Decision::Stop(Status::Contradiction, None);
        };
        let (group, mass) = self.leading_group(probs);
        if mass >= self.config.confidence {
            let status = if group.len() == 1 {
                Status::Found
            } else {
                Status::Ambiguous
            };
            return Decision::Stop(status, Some(group));
        }
        let remaining = self.config.max_iterations.saturating_sub(self.iterations);
        if remaining == 0 {
            return Decision::Stop(Status::BudgetExhausted, None);
        }
        let max_batch = u64::from(self.config.max_batch).min(remaining) as u32;
        let can_build = !matches!(self.config.max_builds, Some(mb) if self.builds >= mb);
        let fp = self.config.false_positive_rate;
        let prior = &self.config.repro_prior;
        // With no false positives a batch stops at its first failure, so its cost is the
        // expected number of iterations it runs; otherwise the whole batch runs.
        let streaks: Vec<Option<Vec<f64>>> = if fp == 0.0 {
            (0..=self.last)
                .map(|c| {
                    (probs[c] > 0.0).then(|| {
                        posterior::clean_streaks(
                            prior,
                            max_batch,
                            post.fail_suffix[c],
                            post.clean_suffix[c],
                        )
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut best: Option<(f64, usize, u32)> = None;
        let mut blocked_by_budget = false;
        for b in 1..=max_batch {
            let (gains, iterations) = if fp == 0.0 {
                posterior::gain_until_failure(probs, &streaks, b)
            } else {
                (
                    posterior::info_gain(&post, probs, b, prior, fp),
                    vec![f64::from(b); self.last + 1],
                )
            };
            for (m, &gain) in gains.iter().enumerate().skip(1) {
                let cell = &self.cells[m];
                if cell.unknown.is_some() || gain <= MIN_GAIN {
                    continue;
                }
                if !cell.built && !can_build {
                    blocked_by_budget = true;
                    continue;
                }
                let build = if cell.built {
                    0.0
                } else {
                    self.config.build_cost
                };
                let score = gain / (iterations[m] * self.config.iteration_cost + build);
                // Near-ties go to the smaller batch, then the older candidate.
                match best {
                    Some((s, _, _)) if score <= s * (1.0 + 1e-9) => {}
                    _ => best = Some((score, m, b)),
                }
            }
        }
        match best {
            Some((_, m, b)) => Decision::Test(m, b),
            None if blocked_by_budget => Decision::Stop(Status::BudgetExhausted, None),
            None => Decision::Stop(Status::NoProgress, None),
        }
    }

    /// Where the search stands, for a progress display.
    pub fn progress(&self) -> Progress {
        let probs = self.posterior();
        let leader = probs
            .iter()
            .enumerate()
            .skip(1)
            .max_by(|a, b| a.1.total_cmp(b.1))
            .filter(|(_, &q)| q > 0.0)
            .map(|(candidate, &probability)| Suspect {
                candidate,
                probability,
            });
        Progress {
            iterations: self.iterations,
            builds: self.builds,
            leader,
            range: shortest_range(&probs, self.config.confidence),
        }
    }

    /// The result so far; final once [`Bisector::next_action`] returned [`Action::Done`].
    pub fn report(&self) -> Report {
        let post = self.internal_posterior();
        let (status, verification) = match &self.phase {
            Phase::Search | Phase::Verify { .. } => {
                (Status::InProgress, self.last_verification.as_ref())
            }
            Phase::Done {
                status,
                verification,
            } => (*status, verification.as_ref()),
        };
        let (group, confidence, p_estimate) = match &post.probs {
            Some(probs) => {
                let (group, mass) = self.leading_group(probs);
                (group, mass, self.p_estimate(&post, probs))
            }
            None => (Vec::new(), 0.0, 0.0),
        };
        let posterior = self.posterior();
        let mut suspects: Vec<Suspect> = group
            .iter()
            .map(|&c| {
                let candidate = self.position_to_external(c);
                Suspect {
                    candidate,
                    probability: posterior[candidate],
                }
            })
            .collect();
        suspects.sort_by_key(|s| s.candidate);
        let culprit = match (status, suspects.as_slice()) {
            (Status::Found, [one]) => Some(one.candidate),
            _ => None,
        };
        let evidence = (0..=self.last)
            .map(|candidate| {
                let cell = &self.cells[self.to_internal(candidate)];
                EvidenceRow {
                    candidate,
                    iterations: cell.search.iterations,
                    failures: cell.search.failures,
                    unknown: cell.unknown.clone(),
                    alias_of: cell.alias_of.map(|a| self.to_external(a)),
                    verify_iterations: cell.verify.iterations,
                    verify_failures: cell.verify.failures,
                }
            })
            .collect();
        let verified = verification.map(|v| {
            let checks: Vec<VerifyCheck> = v
                .checks
                .iter()
                .map(|c| {
                    let t = c.tally;
                    VerifyCheck {
                        candidate: self.to_external(c.candidate),
                        expected: c.expected,
                        verdict: c.verdict.unwrap_or(Verdict::Inconclusive),
                        iterations: t.iterations,
                        failures: t.failures,
                    }
                })
                .collect();
            Verification {
                p_used: v.p_used,
                clean_runs_needed: v.needed,
                holds: checks.iter().all(|c| c.verdict == c.expected),
                checks,
            }
        });
        Report {
            status,
            direction: self.config.direction,
            culprit,
            suspects,
            confidence,
            posterior,
            evidence,
            builds: self.builds,
            iterations: self.iterations,
            verify_builds: self.verify_builds,
            verify_iterations: self.verify_iterations,
            p_estimate,
            verified,
        }
    }
}

/// The shortest range `[lo, hi]` of positions `>= 1` whose mass reaches `confidence` (the whole
/// range when none does).
fn shortest_range(probs: &[f64], confidence: f64) -> (usize, usize) {
    let last = probs.len() - 1;
    let mut best = (1, last);
    let mut lo = 1;
    let mut mass = 0.0;
    for hi in 1..=last {
        mass += probs[hi];
        while lo < hi && mass - probs[lo] >= confidence {
            mass -= probs[lo];
            lo += 1;
        }
        if mass >= confidence && hi - lo < best.1 - best.0 {
            best = (lo, hi);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bisect::model::ReproPrior;
    use crate::bisect::sim::SimulatedHistory;
    use proptest::prelude::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn ran(iterations: u32, failures: u32) -> BatchOutcome {
        BatchOutcome::Ran {
            iterations,
            failures,
        }
    }

    fn deterministic() -> Config {
        Config {
            repro_prior: ReproPrior::Known { p: 1.0 },
            ..Config::default()
        }
    }

    /// Answers like a deterministic bug: bad candidates fail every iteration.
    struct Deterministic {
        bad: Box<dyn Fn(usize) -> bool>,
        log: Vec<(usize, u32)>,
    }

    impl Oracle for Deterministic {
        fn test(&mut self, candidate: usize, iterations: u32, stop: bool) -> BatchOutcome {
            self.log.push((candidate, iterations));
            if (self.bad)(candidate) {
                ran(
                    if stop { 1 } else { iterations },
                    if stop { 1 } else { iterations },
                )
            } else {
                ran(iterations, 0)
            }
        }
    }

    fn assert_close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() < 1e-9, "index {i}: got {g}, want {w}");
        }
    }

    #[test]
    fn posterior_after_clean_runs_below_and_a_failure_at_the_end() {
        // N = 3, uniform prior on p, fp = 0. Candidate 1: 2 clean; candidate 3: 1 failure.
        // c=1: all bad, 1 failure 2 clean: B(2,3) = 1/12. c=2, c=3: candidate 1 good, bad
        // ones saw 1 failure 0 clean: B(2,1) = 1/2. Normalized: 1/13, 6/13, 6/13.
        let mut b = Bisector::new(3, Config::default()).unwrap();
        b.record(1, ran(2, 0)).unwrap();
        b.record(3, ran(1, 1)).unwrap();
        assert_close(&b.posterior(), &[0.0, 1.0 / 13.0, 6.0 / 13.0, 6.0 / 13.0]);
    }

    #[test]
    fn posterior_with_false_positives() {
        // N = 3, fp = 0.1. Candidate 1: 2 runs 1 failure; 2: 3 clean; 3: 2 failures.
        // c=1: all bad, F=3, S=4: B(4,5) = 3!4!/8! = 1/280.
        // c=2: 1 good (0.1 * 0.9); bad F=2, S=3: B(3,4) = 2!3!/6! = 1/60.
        // c=3: 1, 2 good (0.1 * 0.9 * 0.9^3); bad F=2, S=0: B(3,1) = 1/3.
        let config = Config {
            false_positive_rate: 0.1,
            ..Config::default()
        };
        let mut b = Bisector::new(3, config).unwrap();
        b.record(1, ran(2, 1)).unwrap();
        b.record(2, ran(3, 0)).unwrap();
        b.record(3, ran(2, 2)).unwrap();
        let w = [
            1.0 / 280.0,
            0.1 * 0.9 / 60.0,
            0.1 * 0.9 * 0.9f64.powi(3) / 3.0,
        ];
        let sum: f64 = w.iter().sum();
        assert_close(&b.posterior(), &[0.0, w[0] / sum, w[1] / sum, w[2] / sum]);
        // Posterior mean of p: Σ_c π_c (1+F_c)/(2+F_c+S_c).
        let means = [4.0 / 9.0, 3.0 / 7.0, 3.0 / 4.0];
        let want: f64 = (0..3).map(|i| w[i] / sum * means[i]).sum();
        assert!((b.report().p_estimate - want).abs() < 1e-9);
    }

    #[test]
    fn posterior_with_a_known_p() {
        // p = 0.5: candidate 1 clean twice. c=1: 0.25; c=2: 1. Normalized 0.2, 0.8.
        let config = Config {
            repro_prior: ReproPrior::Known { p: 0.5 },
            ..Config::default()
        };
        let mut b = Bisector::new(2, config).unwrap();
        b.record(1, ran(2, 0)).unwrap();
        assert_close(&b.posterior(), &[0.0, 0.2, 0.8]);
    }

    #[test]
    fn deterministic_bug_is_plain_bisection() {
        let mut oracle = Deterministic {
            bad: Box::new(|c| c >= 5),
            log: Vec::new(),
        };
        let mut b = Bisector::new(8, deterministic()).unwrap();
        let report = b.run(&mut oracle).unwrap();
        // Search 4 (good), 6 (bad), 5 (bad); then verify 5 bad and 4 good.
        assert_eq!(oracle.log, vec![(4, 1), (6, 1), (5, 1), (5, 1), (4, 1)]);
        assert_eq!(report.status, Status::Found);
        assert_eq!(report.culprit, Some(5));
        assert_eq!(report.confidence, 1.0);
        assert_eq!((report.builds, report.iterations), (3, 3));
        let v = report.verified.unwrap();
        assert!(v.holds);
        assert_eq!(
            v.checks
                .iter()
                .map(|c| (c.candidate, c.verdict))
                .collect::<Vec<_>>(),
            vec![(5, Verdict::Bad), (4, Verdict::Good)]
        );
    }

    #[test]
    fn deterministic_bug_needs_at_most_log2_n_plus_one_builds_without_knowing_p() {
        // The engine is not told p = 1; every culprit of 64 commits.
        let limit = 7;
        for culprit in 1..=64 {
            let mut oracle = Deterministic {
                bad: Box::new(move |c| c >= culprit),
                log: Vec::new(),
            };
            let mut b = Bisector::new(64, Config::default()).unwrap();
            let report = b.run(&mut oracle).unwrap();
            assert_eq!(report.culprit, Some(culprit));
            assert!(report.builds <= limit, "culprit {culprit}: {report:?}");
            let mut known = Bisector::new(64, deterministic()).unwrap();
            let report = known.run(&mut oracle).unwrap();
            assert_eq!(report.culprit, Some(culprit));
            assert!(report.builds <= 6, "known p, culprit {culprit}");
        }
    }

    #[test]
    fn skipped_commit_next_to_the_culprit_gives_an_honest_pair() {
        let mut b = Bisector::new(8, deterministic()).unwrap();
        loop {
            match b.next_action() {
                Action::Test { candidate: 4, .. } => b
                    .record(
                        4,
                        BatchOutcome::Unknown {
                            reason: "build failed".into(),
                        },
                    )
                    .unwrap(),
                Action::Test { candidate, .. } => b
                    .record(
                        candidate,
                        if candidate >= 5 { ran(1, 1) } else { ran(1, 0) },
                    )
                    .unwrap(),
                Action::Done(report) => {
                    assert_eq!(report.status, Status::Ambiguous);
                    assert_eq!(report.culprit, None);
                    assert_eq!(
                        report.suspects,
                        vec![
                            Suspect {
                                candidate: 4,
                                probability: 0.5
                            },
                            Suspect {
                                candidate: 5,
                                probability: 0.5
                            }
                        ]
                    );
                    assert_eq!(report.confidence, 1.0);
                    assert_eq!(report.evidence[4].unknown.as_deref(), Some("build failed"));
                    assert_eq!(report.evidence[4].iterations, 0);
                    let v = report.verified.unwrap();
                    assert_eq!(
                        v.checks
                            .iter()
                            .map(|c| (c.candidate, c.verdict))
                            .collect::<Vec<_>>(),
                        vec![(5, Verdict::Bad), (3, Verdict::Good)]
                    );
                    return;
                }
            }
        }
    }

    #[test]
    fn fix_mode_finds_the_first_good_candidate() {
        let config = Config {
            direction: Direction::Fix,
            ..deterministic()
        };
        let mut oracle = Deterministic {
            bad: Box::new(|c| c < 3),
            log: Vec::new(),
        };
        let mut b = Bisector::new(8, config).unwrap();
        let report = b.run(&mut oracle).unwrap();
        assert_eq!(report.culprit, Some(3));
        assert_eq!(report.direction, Direction::Fix);
        assert_eq!(report.posterior[3], 1.0);
        assert_eq!(report.posterior.iter().sum::<f64>(), 1.0);
        let v = report.verified.unwrap();
        assert!(v.holds);
        assert_eq!(
            v.checks
                .iter()
                .map(|c| (c.candidate, c.expected, c.verdict))
                .collect::<Vec<_>>(),
            vec![
                (3, Verdict::Good, Verdict::Good),
                (2, Verdict::Bad, Verdict::Bad)
            ]
        );
        // Evidence is reported in the caller's numbering: the first test splits at 4.
        assert_eq!(oracle.log[0], (4, 1));
        assert_eq!(report.evidence[4].iterations, 1);
        assert_eq!(report.evidence[4].failures, 0);
    }

    #[test]
    fn flaky_fix_mode_mirrors_regression_mode() {
        // The same flaky history bisected forwards and mirrored backwards takes the same steps.
        let run = |direction: Direction| {
            let mut rng = SmallRng::seed_from_u64(7);
            let config = Config {
                direction,
                ..Config::default()
            };
            let mut b = Bisector::new(20, config).unwrap();
            let mut steps = Vec::new();
            loop {
                match b.next_action() {
                    Action::Test {
                        candidate,
                        iterations,
                        stop_at_first_failure,
                    } => {
                        let forward = match direction {
                            Direction::Regression => candidate,
                            Direction::Fix => 20 - candidate,
                        };
                        let mut h = SimulatedHistory {
                            culprit: 13,
                            p: 0.4,
                            fp: 0.0,
                            rng: &mut rng,
                        };
                        let o = h.test(forward, iterations, stop_at_first_failure);
                        steps.push((forward, o.clone()));
                        b.record(candidate, o).unwrap();
                    }
                    Action::Done(report) => return (steps, report),
                }
            }
        };
        let (forward, fr) = run(Direction::Regression);
        let (backward, br) = run(Direction::Fix);
        // The search steps match; verification then checks the culprit first, which is the
        // other end of the step in the two directions.
        let search_steps = |steps: &[(usize, BatchOutcome)]| {
            let mut total = 0;
            steps
                .iter()
                .take_while(|(_, o)| {
                    if let BatchOutcome::Ran { iterations, .. } = o {
                        total += u64::from(*iterations);
                    }
                    total <= fr.iterations
                })
                .cloned()
                .collect::<Vec<_>>()
        };
        assert!(!search_steps(&forward).is_empty());
        assert_eq!(search_steps(&forward), search_steps(&backward));
        assert_eq!(fr.iterations, br.iterations);
        assert_eq!(fr.culprit, Some(13));
        // First bad 13 forwards is first good 8 = 21 - 13 backwards.
        assert_eq!(br.culprit, Some(8));
    }

    #[test]
    fn identical_kernels_share_evidence_and_cost_no_build() {
        let mut b = Bisector::new(4, deterministic()).unwrap();
        b.record_alias(3, 2).unwrap();
        assert_close(&b.posterior(), &[0.0, 1.0 / 3.0, 1.0 / 3.0, 0.0, 1.0 / 3.0]);

        let mut b = Bisector::new(8, deterministic()).unwrap();
        let mut aliased = false;
        let report = loop {
            match b.next_action() {
                Action::Test { candidate: 6, .. } if !aliased => {
                    aliased = true;
                    b.record_alias(6, 5).unwrap();
                }
                Action::Test { candidate, .. } => b
                    .record(
                        candidate,
                        if candidate >= 5 { ran(1, 1) } else { ran(1, 0) },
                    )
                    .unwrap(),
                Action::Done(report) => break report,
            }
        };
        assert!(aliased);
        assert_eq!(report.culprit, Some(5));
        assert_eq!(report.evidence[6].alias_of, Some(5));
        // 4 was built; 6 ran on 5's kernel; 5 itself was built only to verify.
        assert_eq!(report.builds, 1);
        assert_eq!(report.evidence[6].iterations, 1);
        assert_eq!(report.verify_builds, 1);
    }

    #[test]
    fn failure_on_the_good_end_contradicts_the_model() {
        let mut b = Bisector::new(8, Config::default()).unwrap();
        b.record(0, ran(3, 1)).unwrap();
        match b.next_action() {
            Action::Done(r) => {
                assert_eq!(r.status, Status::Contradiction);
                assert_eq!(r.culprit, None);
                assert!(r.posterior.iter().all(|&q| q == 0.0));
            }
            other => panic!("expected done, got {other:?}"),
        }
        assert!(matches!(
            b.record(3, ran(1, 0)),
            Err(BisectError::AlreadyDone { candidate: 3 })
        ));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(matches!(
            Bisector::new(0, Config::default()),
            Err(BisectError::EmptyRange)
        ));
        let bad = Config {
            confidence: 1.0,
            ..Config::default()
        };
        assert_eq!(
            Bisector::new(4, bad).unwrap_err().to_string(),
            "accept bisection setting `confidence` = 1: expected 0 < x < 1"
        );
        let mut b = Bisector::new(4, Config::default()).unwrap();
        assert_eq!(
            b.record(5, ran(1, 0)).unwrap_err().to_string(),
            "record candidate 5: the range ends at 4"
        );
        assert_eq!(
            b.record(2, ran(1, 2)).unwrap_err().to_string(),
            "record candidate 2: 2 failures in 1 iterations"
        );
        assert!(b.record_alias(2, 2).is_err());
        assert!(b.record_alias(0, 4).is_err());
        assert!(b.record_alias(9, 1).is_err());
    }

    #[test]
    fn report_round_trips_through_json() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut h = SimulatedHistory {
            culprit: 9,
            p: 0.5,
            fp: 0.0,
            rng: &mut rng,
        };
        let report = Bisector::new(16, Config::default())
            .unwrap()
            .run(&mut h)
            .unwrap();
        let json = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        // Floats may lose their last bit in text; everything else comes back as it was.
        assert_eq!(back.culprit, Some(9));
        assert_eq!(
            (back.status, back.builds, back.iterations),
            (report.status, report.builds, report.iterations)
        );
        assert_eq!(back.evidence, report.evidence);
        assert_eq!(
            back.verified.map(|v| v.checks),
            report.verified.map(|v| v.checks)
        );
        assert!((back.confidence - report.confidence).abs() < 1e-12);
        assert!(json.contains("\"p-estimate\""), "{json}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn posterior_sums_to_one(
            runs in proptest::collection::vec((0u32..12, 0u32..12), 2..24),
            fp in prop_oneof![Just(0.0), 0.01f64..0.3],
            alpha in 0.3f64..4.0,
            beta in 0.3f64..4.0,
        ) {
            let last = runs.len() - 1;
            let config = Config {
                false_positive_rate: fp,
                repro_prior: ReproPrior::Beta { alpha, beta },
                ..Config::default()
            };
            let mut b = Bisector::new(last, config).unwrap();
            for (i, &(n, f)) in runs.iter().enumerate().skip(1) {
                b.record(i, ran(n, f.min(n))).unwrap();
            }
            let post = b.posterior();
            let sum: f64 = post.iter().sum();
            prop_assert!((sum - 1.0).abs() < 1e-9, "sum {sum}");
            prop_assert!(post.iter().all(|q| q.is_finite() && *q >= 0.0));
            prop_assert_eq!(post[0], 0.0);
        }

        #[test]
        fn evidence_never_revives_a_ruled_out_culprit(
            steps in proptest::collection::vec((1usize..16, 1u32..6, 0u32..3), 1..30),
        ) {
            let config = Config { verify: false, confidence: 0.999_999, ..Config::default() };
            let mut b = Bisector::new(15, config).unwrap();
            let mut ruled_out = [false; 16];
            for (candidate, n, f) in steps {
                if b.record(candidate, ran(n, f.min(n))).is_err() {
                    break; // done: nothing more to record
                }
                let post = b.posterior();
                for c in 1..=15 {
                    if ruled_out[c] {
                        prop_assert_eq!(post[c], 0.0, "candidate {} revived", c);
                    }
                    ruled_out[c] |= post[c] == 0.0;
                }
            }
        }

        #[test]
        fn search_terminates_within_budget(
            last in 1usize..40,
            culprit_seed in 0usize..1000,
            p in 0.02f64..1.0,
            max_iterations in 1u64..150,
            max_builds in 1u64..8,
            seed in 0u64..1000,
        ) {
            let culprit = 1 + culprit_seed % last;
            let config = Config {
                max_iterations,
                max_builds: Some(max_builds),
                ..Config::default()
            };
            let mut b = Bisector::new(last, config.clone()).unwrap();
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut h = SimulatedHistory { culprit, p, fp: 0.0, rng: &mut rng };
            let mut steps = 0;
            let report = loop {
                steps += 1;
                prop_assert!(steps < 10_000, "no end in sight");
                match b.next_action() {
                    Action::Test { candidate, iterations, stop_at_first_failure } => {
                        prop_assert!(iterations >= 1);
                        let o = h.test(candidate, iterations, stop_at_first_failure);
                        b.record(candidate, o).unwrap();
                    }
                    Action::Done(report) => break report,
                }
            };
            prop_assert!(report.iterations <= max_iterations);
            prop_assert!(report.builds <= max_builds);
            let verify_cap = 2 * config.max_verify_iterations * u64::from(config.max_verify_rounds);
            prop_assert!(report.verify_iterations <= verify_cap);
            if report.status == Status::Found {
                prop_assert!(report.confidence >= 0.95);
            }
        }
    }
}
