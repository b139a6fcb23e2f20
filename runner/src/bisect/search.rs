//! The Bayesian bisection engine. Three phases:
//!
//! 1. **Ends**: run the good and the bad end until the bad end's rate is above the good end's
//!    at the target confidence. If that does not happen within the budget, stop: no culprit is
//!    ever named for a difference that was not shown.
//! 2. **Search**: a posterior over the culprit position with both rates unknown (integrated on
//!    a grid); the next batch is the one with the most expected information per unit of cost
//!    (a build, a boot when the kernel changes, the iterations); stop at the target confidence
//!    or at the budget, which names the suspect range and its mass.
//! 3. **Verify**: run the culprit and its parent until the culprit's rate is above its
//!    parent's at the target confidence (every run of the two kernels counts). A verification
//!    that fails sends the search back to work with the new runs.
//!
//! Internally candidates are always numbered so that 0 is good and `last` is bad (a regression);
//! a fix search is the same search over the reversed range (`internal = last - external`), so
//! there is one code path and the mapping lives only at the API boundary.
//!
//! Every loop makes progress or stops: the engine never asks for a candidate known to be an
//! alias (byte-identical kernel) of another, never asks for a skipped one, and every recorded
//! outcome adds iterations, a skip or an alias.

use super::error::BisectError;
use super::model::RatePrior;
use super::model::{
    Action, BatchOutcome, Comparison, Config, Direction, EstimatedRate, EvidenceRow, MeasuredRate,
    Phase, Report, SideRates, Status, Suspect, SuspectRange, VerificationRuns,
};
use super::posterior::{self, Mode, Posterior, RateGrid, Tally};
use super::verify;

/// Information gains below this (nats) are rounding noise, not a reason to run anything.
const MIN_GAIN: f64 = 1e-9;

/// Batch sizes the search weighs (capped by `max_batch`).
const BATCHES: [u32; 10] = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32];

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
    /// Runs of the ends and the search.
    search: Tally,
    verify: Tally,
    unknown: Option<String>,
    /// Internal index of the candidate with a byte-identical kernel.
    alias_of: Option<usize>,
    /// Built (or its build was attempted) or known identical to another: no build cost left.
    built: bool,
}

impl Cell {
    fn all(&self) -> Tally {
        self.search.add(self.verify)
    }
}

/// The two kernels a verification compares (internal numbering, alias representatives), and
/// the candidates the answer names (the culprit may share its kernel with a later candidate,
/// which is where its runs are counted; the report names the culprit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pair {
    good: usize,
    bad: usize,
    parent: usize,
    culprit: usize,
}

#[derive(Clone, Debug)]
enum State {
    Ends,
    Search,
    Verify {
        status: Status,
        pair: Pair,
        /// Iterations of this round on the good and the bad kernel.
        spent: [u64; 2],
        /// The model's bad-side rates when the round began: the bottom of the bad side's
        /// interval, and the fresh clean runs that clear the culprit at that rate (the good
        /// side's bound is judged at every step: [`Bisector::good_high`]).
        rates: VerifyRates,
    },
    Done {
        status: Status,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct VerifyRates {
    bad_rate: f64,
    needed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pending {
    candidate: usize,
    iterations: u32,
    stop: bool,
}

enum Decision {
    Test(Pending),
    Stop(Status, Option<Vec<usize>>),
}

/// Progress of a running bisection, for a terminal display.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    pub phase: Phase,
    /// Every iteration so far (ends, search, verification).
    pub iterations: u64,
    pub builds: u64,
    pub boots: u64,
    /// The most probable culprit now.
    pub leader: Option<Suspect>,
    /// The shortest range of candidates holding the target confidence.
    pub range: (usize, usize),
}

/// A rate-change bisection over candidates `0..=last`, driven step by step: call
/// [`Bisector::next_action`], run what it asks, [`Bisector::record`] the outcome (or
/// [`Bisector::record_alias`] when the kernel is identical to one already tested); or hand an
/// [`Oracle`] to [`Bisector::run`].
#[derive(Clone, Debug)]
pub struct Bisector {
    last: usize,
    config: Config,
    g0: RateGrid,
    g1: RateGrid,
    cells: Vec<Cell>,
    /// `excluded[c]`: culprit position `c` is impossible (identical kernels around it).
    excluded: Vec<bool>,
    state: State,
    end_iterations: u64,
    iterations: u64,
    verify_iterations: u64,
    builds: u64,
    verify_builds: u64,
    boots: u64,
    /// The kernel (alias representative) the last batch ran on: the next batch on it reuses
    /// the booted machine.
    booted: Option<usize>,
    /// Verifications that did not hold and sent the search back to work.
    failed_rounds: u32,
    /// Verification rounds started.
    verify_rounds: u32,
    /// The pair of the last verification, for the report.
    verified_pair: Option<Pair>,
    verify_rates: Option<VerifyRates>,
    /// The culprit's verification runs before the current round: each round judges its own
    /// fresh runs (the earlier rounds' are in the posterior, which chose the pair again).
    round_base: Tally,
    /// The ends' comparison when it showed the difference (later runs of the ends change the
    /// figures, not the fact that the search began on a shown difference).
    ends_shown: Option<Comparison>,
    pending: Option<Pending>,
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
            g0: RateGrid::of(&config.good_rate, true),
            g1: RateGrid::of(&config.bad_rate, false),
            state: if config.check_ends {
                State::Ends
            } else {
                State::Search
            },
            config,
            cells: vec![Cell::default(); last + 1],
            excluded: vec![false; last + 1],
            end_iterations: 0,
            iterations: 0,
            verify_iterations: 0,
            builds: 0,
            verify_builds: 0,
            boots: 0,
            booted: None,
            failed_rounds: 0,
            verify_rounds: 0,
            verified_pair: None,
            verify_rates: None,
            round_base: Tally::default(),
            ends_shown: None,
            pending: None,
        })
    }

    /// The ends' comparison that let the search begin (`None` before, or when the ends were
    /// not checked), and whether it is confirmed by the test that holds however often it was
    /// looked at ([`verify::confirmed`]).
    pub fn ends_shown(&self) -> Option<(Comparison, bool)> {
        let c = self.ends_shown.clone()?;
        let confirmed = verify::confirmed(&c, self.config.confidence);
        Some((c, confirmed))
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

    /// The candidate whose kernel stands for `i`'s (itself unless it is an alias).
    fn rep(&self, mut i: usize) -> usize {
        // Alias chains cannot cycle (record_alias refuses), so this ends within `last` steps.
        for _ in 0..=self.last {
            match self.cells[i].alias_of {
                Some(j) => i = j,
                None => break,
            }
        }
        i
    }

    /// Every run of the kernel `i` stands for (its own and its aliases').
    fn kernel_tally(&self, i: usize) -> Tally {
        self.sum_over_kernel(i, Cell::all)
    }

    /// `runs` of every candidate whose kernel is `i`'s, summed.
    fn sum_over_kernel(&self, i: usize, runs: impl Fn(&Cell) -> Tally) -> Tally {
        let r = self.rep(i);
        (0..=self.last)
            .filter(|&j| self.rep(j) == r)
            .fold(Tally::default(), |t, j| t.add(runs(&self.cells[j])))
    }

    /// Record the outcome of a batch on `candidate` (external numbering). Outcomes of
    /// candidates the bisector did not ask for are evidence too. A batch that ran no
    /// iteration counts as a skip: it tested nothing.
    pub fn record(&mut self, candidate: usize, outcome: BatchOutcome) -> Result<(), BisectError> {
        let i = self.check_candidate(candidate)?;
        let outcome = match outcome {
            BatchOutcome::Ran {
                iterations,
                failures,
            } if failures > iterations => {
                return Err(BisectError::FailuresExceedIterations {
                    candidate,
                    iterations,
                    failures,
                })
            }
            BatchOutcome::Ran { iterations: 0, .. } => BatchOutcome::Unknown {
                reason: "no iteration ran".into(),
            },
            other => other,
        };
        self.settle();
        if let State::Done { .. } = self.state {
            return Err(BisectError::AlreadyDone { candidate });
        }
        let r = self.rep(i);
        let verify_slot = match &self.state {
            State::Verify { pair, .. } if r == pair.good => Some(0),
            State::Verify { pair, .. } if r == pair.bad => Some(1),
            _ => None,
        };
        let ends = matches!(self.state, State::Ends);
        self.charge_build(i, verify_slot.is_some());
        match outcome {
            BatchOutcome::Ran {
                iterations,
                failures,
            } => {
                let (n, f) = (u64::from(iterations), u64::from(failures));
                if self.booted != Some(r) {
                    self.boots += 1;
                    self.booted = Some(r);
                }
                let cell = &mut self.cells[i];
                if let Some(slot) = verify_slot {
                    cell.verify.iterations += n;
                    cell.verify.failures += f;
                    self.verify_iterations += n;
                    if let State::Verify { spent, .. } = &mut self.state {
                        spent[slot] += n;
                    }
                } else {
                    cell.search.iterations += n;
                    cell.search.failures += f;
                    if ends {
                        self.end_iterations += n;
                    } else {
                        self.iterations += n;
                    }
                }
            }
            BatchOutcome::Unknown { reason } => {
                self.cells[i].unknown.get_or_insert(reason);
                if self.booted == Some(r) {
                    self.booted = None;
                }
            }
        }
        self.pending = None;
        Ok(())
    }

    /// Record that `candidate`'s kernel is byte-identical to `same_as`'s: both behave alike, so
    /// no commit between them can be the culprit, and the engine never asks for `candidate`
    /// again (it asks for `same_as`). Its build (that is how the driver found out) counts.
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
        if self.rep(j) == i {
            return Err(bad("the other candidate already stands for this one"));
        }
        let (lo, hi) = (i.min(j), i.max(j));
        if lo == 0 && hi == self.last {
            return Err(bad("the good and the bad end cannot be the same kernel"));
        }
        if let State::Done { .. } = self.state {
            return Err(BisectError::AlreadyDone { candidate });
        }
        for c in lo + 1..=hi {
            self.excluded[c] = true;
        }
        self.charge_build(i, matches!(self.state, State::Verify { .. }));
        self.cells[i].alias_of = Some(j);
        if self.booted == Some(i) {
            self.booted = Some(self.rep(j));
        }
        // A verification of a pair that just became one kernel, or that names an alias, is
        // decided again from the search.
        if let State::Verify { pair, .. } = &self.state {
            if self.rep(pair.good) != pair.good || self.rep(pair.bad) != pair.bad {
                self.state = State::Search;
            }
        }
        self.pending = None;
        Ok(())
    }

    /// Counts candidate `i`'s build, once: in the verification's count when `verifying`.
    fn charge_build(&mut self, i: usize, verifying: bool) {
        if !self.cells[i].built {
            self.cells[i].built = true;
            if verifying {
                self.verify_builds += 1;
            } else {
                self.builds += 1;
            }
        }
    }

    /// Prices a build and a boot anew, in iterations (the driver measures them as it goes:
    /// [`super::CostMeter`]). They steer which batch comes next, never what the runs mean;
    /// a batch already asked for stands.
    pub fn set_prices(&mut self, build_cost: f64, boot_cost: f64) -> Result<(), BisectError> {
        let config = Config {
            build_cost,
            boot_cost,
            ..self.config.clone()
        };
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// What to do next.
    pub fn next_action(&mut self) -> Action {
        self.settle();
        match (&self.state, self.pending) {
            (State::Done { .. }, _) => Action::Done(Box::new(self.report())),
            (_, Some(p)) => Action::Test {
                candidate: self.to_external(p.candidate),
                iterations: p.iterations,
                stop_at_first_failure: p.stop,
            },
            (_, None) => unreachable!("settle leaves a pending test or a finished bisection"),
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

    /// The posterior uses every run: ends, search and verification.
    fn internal_posterior(&self) -> Posterior {
        let tallies: Vec<Tally> = self.cells.iter().map(Cell::all).collect();
        posterior::posterior(&tallies, &self.excluded, &self.g0, &self.g1)
    }

    /// Posterior probability of each candidate being the culprit, indexed by candidate (the
    /// good end's entry is 0); all zeros when the evidence contradicts the model.
    pub fn posterior(&self) -> Vec<f64> {
        self.external_posterior(&self.internal_posterior())
    }

    fn external_posterior(&self, post: &Posterior) -> Vec<f64> {
        let mut out = vec![0.0; self.last + 1];
        if let Some(probs) = &post.probs {
            for (c, q) in probs.iter().enumerate().skip(1) {
                out[self.position_to_external(c)] = *q;
            }
        }
        out
    }

    /// A candidate bounds a group of culprit positions when it can tell them apart.
    fn splits(&self, m: usize) -> bool {
        m == self.last || self.cells[m].unknown.is_none() || self.cells[m].all().iterations > 0
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

    fn budget_left(&self) -> u64 {
        self.config
            .max_iterations
            .saturating_sub(self.end_iterations + self.iterations)
    }

    fn boot_cost(&self, i: usize) -> f64 {
        if self.booted == Some(self.rep(i)) {
            0.0
        } else {
            self.config.boot_cost
        }
    }

    fn settle(&mut self) {
        // Each pass either leaves a pending test, finishes, or moves to a later phase; a
        // failed verification moves back to the search at most `max_verify_rounds` times.
        loop {
            if self.pending.is_some() {
                return;
            }
            let decision = match &self.state {
                State::Done { .. } => return,
                State::Ends => match self.decide_ends() {
                    Some(d) => d,
                    None => {
                        self.ends_shown = Some(self.ends());
                        self.state = State::Search;
                        continue;
                    }
                },
                State::Search => self.decide(),
                State::Verify {
                    status,
                    pair,
                    spent,
                    rates,
                } => {
                    let (status, pair, spent, rates) = (*status, *pair, *spent, *rates);
                    match self.decide_verify(pair, spent, rates) {
                        Some(d) => d,
                        // The verification's runs are in the posterior too: the search's
                        // answer must still hold the target confidence.
                        None => match self.decide() {
                            Decision::Stop(s, Some(group))
                                if s == status
                                    && self.rep(group[group.len() - 1]) == pair.bad
                                    && self.rep(group[0] - 1) == pair.good =>
                            {
                                self.state = State::Done { status };
                                continue;
                            }
                            _ => Decision::Stop(Status::Unverified, None),
                        },
                    }
                }
            };
            match decision {
                Decision::Test(p) => {
                    self.pending = Some(p);
                    return;
                }
                Decision::Stop(status, group) => self.stop(status, group),
            }
        }
    }

    fn stop(&mut self, status: Status, group: Option<Vec<usize>>) {
        if let State::Verify { status: found, .. } = self.state {
            // The verification did not hold: search on with its runs, or give up.
            let _ = found;
            self.failed_rounds += 1;
            let rounds_left = self.failed_rounds < self.config.max_verify_rounds;
            self.state = if rounds_left && self.budget_left() > 0 {
                State::Search
            } else {
                State::Done {
                    status: Status::Unverified,
                }
            };
            return;
        }
        let group = match group {
            Some(g) if self.config.verify && !g.is_empty() => g,
            _ => {
                self.state = State::Done { status };
                return;
            }
        };
        let (parent, culprit) = (group[0] - 1, group[group.len() - 1]);
        let pair = Pair {
            good: self.rep(parent),
            bad: self.rep(culprit),
            parent,
            culprit,
        };
        if pair.good == pair.bad {
            self.state = State::Done {
                status: Status::Unverified,
            };
            return;
        }
        // The rates each side should show, from every run given the search's answer: the top
        // of the good side's interval (see [`Bisector::good_high`], judged again at every step
        // of the round), and a low bad rate (its first quintile: with few runs on the bad side
        // the mean can be far too high, and a parent would pass as good on too few clean runs).
        let post = self.internal_posterior();
        let split = &post.splits[post.split_of[group[group.len() - 1]]];
        let bad_rate = posterior::quantile(&split.bad, &self.g1, 0.2);
        self.verified_pair = Some(pair);
        self.verify_rounds += 1;
        self.round_base = self.verify_tally(pair.bad);
        self.verify_rates = Some(VerifyRates {
            bad_rate,
            needed: verify::clean_runs_needed(self.config.confidence, bad_rate),
        });
        self.state = State::Verify {
            status,
            pair,
            spent: [0, 0],
            rates: self.verify_rates.expect("just set"),
        };
    }

    /// The top of the good side's 95% interval given the pair: the culprit must fail
    /// significantly more often than this. From every run of the good side so far, so the
    /// parent's verification runs count: frozen at the round's start, a round that began on
    /// a good side of five clean runs (the range's other candidates all built the good end's
    /// kernel, so the search ran nothing) asked a culprit failing 59% of the time to beat
    /// 46%, and took 95 iterations where 15 did.
    ///
    /// With the weak prior, also the top of the interval from the good side's own runs under
    /// a uniform prior: the atom at 0 puts the model's at 0 whenever the good side happened
    /// to stay clean, and a good candidate's one lucky fresh failure would then pass for a
    /// culprit's (a rate the user gave is taken as given).
    fn good_high(&self, post: &Posterior, pair: Pair) -> f64 {
        let split = &post.splits[post.split_of[pair.culprit]];
        let model = posterior::quantile(&split.good, &self.g0, 0.975);
        match self.config.good_rate {
            RatePrior::Weak => {
                let good_runs =
                    (0..=pair.parent).fold(Tally::default(), |t, j| t.add(self.cells[j].all()));
                let uniform = RateGrid::uniform();
                let runs = posterior::normalize(&uniform.log_post(good_runs))
                    .map_or(0.0, |w| posterior::quantile(&w, &uniform, 0.975));
                model.max(runs)
            }
            RatePrior::Beta { .. } | RatePrior::Known { .. } => model,
        }
    }

    /// The next batch on one of two kernels whose rates are being compared: the side whose
    /// rate is the less certain per run, in batches that grow with the runs so far (and make
    /// a boot worth it), within `caps`.
    fn compare_step(&self, sides: [(usize, Tally); 2], caps: [u64; 2]) -> Option<Pending> {
        let mut best: Option<(f64, Pending)> = None;
        for (k, &(i, t)) in sides.iter().enumerate() {
            if caps[k] == 0 {
                continue;
            }
            let (a, b) = (t.failures as f64 + 0.5, t.clean() as f64 + 0.5);
            let var = a * b / ((a + b) * (a + b) * (a + b + 1.0));
            let boot = self.boot_cost(i);
            let grow = (t.iterations / 4).max((boot / self.config.iteration_cost).ceil() as u64);
            let batch = grow
                .max(1)
                .min(u64::from(self.config.max_batch))
                .min(caps[k]) as u32;
            let n = f64::from(batch);
            let score = var / (t.iterations as f64 + 1.0) * n / (n + boot);
            // The bad end goes first: it shows the target the driver learns.
            let score = if t.iterations == 0 && k == 1 {
                f64::INFINITY
            } else {
                score
            };
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((
                    score,
                    Pending {
                        candidate: self.rep(i),
                        iterations: batch,
                        stop: false,
                    },
                ));
            }
        }
        best.map(|(_, p)| p)
    }

    /// The comparison of two kernels' rates (internal numbering).
    fn compare(&self, (good, tg): (usize, Tally), (bad, tb): (usize, Tally)) -> Comparison {
        verify::compare(
            (self.to_external(good), tg),
            (self.to_external(bad), tb),
            self.config.confidence,
        )
    }

    /// The ends' comparison: every run of the two kernels.
    fn ends(&self) -> Comparison {
        let (good, bad) = (self.rep(0), self.rep(self.last));
        self.compare(
            (good, self.kernel_tally(good)),
            (bad, self.kernel_tally(bad)),
        )
    }

    /// Every verification run of kernel `i` (its own and its aliases').
    fn verify_tally(&self, i: usize) -> Tally {
        self.sum_over_kernel(i, |c| c.verify)
    }

    /// The culprit's fresh runs of the current (or last) verification round, whose pair
    /// `pair` is.
    fn fresh_runs(&self, pair: Pair) -> Tally {
        let all = self.verify_tally(pair.bad);
        Tally {
            iterations: all.iterations.saturating_sub(self.round_base.iterations),
            failures: all.failures.saturating_sub(self.round_base.failures),
        }
    }

    /// The verification's comparison: every run of the parent against fresh runs of the
    /// culprit (the search chose it for its failures, so those would prove nothing).
    fn verification(&self, pair: Pair) -> Comparison {
        self.verification_at(pair, self.good_high(&self.internal_posterior(), pair))
    }

    /// [`Bisector::verification`] with the good side's bound already known.
    fn verification_at(&self, pair: Pair, good_high: f64) -> Comparison {
        let fresh = self.fresh_runs(pair);
        let parent = self.kernel_tally(pair.good);
        let mut c = self.compare((pair.parent, parent), (pair.culprit, fresh));
        c.holds = match self.verify_rates {
            Some(r) => {
                verify::verdict(
                    parent,
                    fresh,
                    good_high,
                    r.bad_rate,
                    u64::MAX,
                    self.config.confidence,
                ) == Some(true)
            }
            None => false,
        };
        c
    }

    /// The verification failed: the culprit's fresh runs are as clean as a bad kernel would
    /// hardly be.
    fn verification_refuted(&self, pair: Pair, rates: VerifyRates, good_high: f64) -> bool {
        let fresh = self.fresh_runs(pair);
        verify::verdict(
            self.kernel_tally(pair.good),
            fresh,
            good_high,
            rates.bad_rate,
            rates.needed,
            self.config.confidence,
        ) == Some(false)
    }

    /// `None` when the ends differ and the search may begin.
    fn decide_ends(&self) -> Option<Decision> {
        let (good, bad) = (self.rep(0), self.rep(self.last));
        if self.cells[good].unknown.is_some() || self.cells[bad].unknown.is_some() {
            return Some(Decision::Stop(Status::NoProgress, None));
        }
        let (tg, tb) = (self.kernel_tally(good), self.kernel_tally(bad));
        if tg.iterations > 0 && tb.iterations > 0 {
            let c = self.ends();
            if c.holds {
                return None;
            }
            // The other way round only on strong evidence (a tenth of the error allowed).
            if verify::wrong_way_round(tg, tb, self.config.confidence) {
                return Some(Decision::Stop(Status::WrongDirection, None));
            }
        }
        let left = self.budget_left();
        if left == 0 {
            return Some(Decision::Stop(Status::NoDifference, None));
        }
        self.compare_step([(good, tg), (bad, tb)], [left, left])
            .map(Decision::Test)
            .or(Some(Decision::Stop(Status::NoDifference, None)))
    }

    /// `None` when the verification holds.
    fn decide_verify(&self, pair: Pair, spent: [u64; 2], rates: VerifyRates) -> Option<Decision> {
        let fail = Some(Decision::Stop(Status::Unverified, None));
        if self.cells[pair.good].unknown.is_some() || self.cells[pair.bad].unknown.is_some() {
            return fail;
        }
        // One posterior for both judgments of this step.
        let good_high = self.good_high(&self.internal_posterior(), pair);
        let c = self.verification_at(pair, good_high);
        if c.holds {
            return None;
        }
        if c.good.iterations > 0
            && c.bad.iterations > 0
            && c.probability <= 1.0 - self.config.confidence
        {
            return fail;
        }
        if self.verification_refuted(pair, rates, good_high) {
            return fail;
        }
        let cap = self.config.max_verify_iterations;
        let caps = [cap.saturating_sub(spent[0]), cap.saturating_sub(spent[1])];
        let sides = [
            (pair.good, self.kernel_tally(pair.good)),
            (
                pair.bad,
                Tally {
                    iterations: c.bad.iterations,
                    failures: c.bad.failures,
                },
            ),
        ];
        match self.compare_step(sides, caps) {
            Some(p) => Some(Decision::Test(p)),
            None => fail,
        }
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
        let remaining = self.budget_left();
        if remaining == 0 {
            return Decision::Stop(Status::BudgetExhausted, None);
        }
        let max_batch = u64::from(self.config.max_batch).min(remaining) as u32;
        let can_build = !matches!(self.config.max_builds, Some(mb) if self.builds >= mb);
        let mut best: Option<(f64, Pending)> = None;
        let mut blocked_by_budget = false;
        let sizes = BATCHES
            .iter()
            .copied()
            .filter(|&b| b <= max_batch)
            .chain((max_batch > 32).then_some(max_batch));
        for b in sizes {
            for mode in [Mode::UntilFailure, Mode::Full] {
                if b == 1 && mode == Mode::Full {
                    continue; // the same batch as until-failure
                }
                let (gains, iterations) =
                    posterior::info_gain(&post, probs, &self.g0, &self.g1, b, mode);
                for (m, &gain) in gains.iter().enumerate() {
                    let cell = &self.cells[m];
                    if cell.unknown.is_some() || cell.alias_of.is_some() || gain <= MIN_GAIN {
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
                    let cost =
                        iterations[m] * self.config.iteration_cost + build + self.boot_cost(m);
                    let score = gain / cost;
                    // Near-ties go to the smaller batch, then the older candidate.
                    if best.as_ref().is_none_or(|(s, _)| score > *s * (1.0 + 1e-9)) {
                        best = Some((
                            score,
                            Pending {
                                candidate: m,
                                iterations: b,
                                stop: mode == Mode::UntilFailure,
                            },
                        ));
                    }
                }
            }
        }
        match best {
            Some((_, p)) => Decision::Test(p),
            None if blocked_by_budget => Decision::Stop(Status::BudgetExhausted, None),
            None => Decision::Stop(Status::NoProgress, None),
        }
    }

    fn phase(&self) -> Phase {
        match self.state {
            State::Ends => Phase::Ends,
            State::Search => Phase::Search,
            State::Verify { .. } => Phase::Verify,
            State::Done { .. } => Phase::Done,
        }
    }

    /// Where the bisection stands, for a progress display.
    pub fn progress(&self) -> Progress {
        let probs = self.posterior();
        let internal: Vec<f64> = (0..=self.last)
            .map(|c| {
                if c == 0 {
                    0.0
                } else {
                    probs[self.position_to_external(c)]
                }
            })
            .collect();
        let (lo, hi) = shortest_range(&internal, self.config.confidence);
        let (a, b) = (self.position_to_external(lo), self.position_to_external(hi));
        let (mut first, mut last) = (a.min(b), a.max(b));
        // The leader is named inside the range: among equally likely candidates (at the start
        // all are) one in the range, the oldest; a leader outside it widens the range.
        let inside = |c: usize| (first..=last).contains(&c);
        let leader = probs
            .iter()
            .enumerate()
            .filter(|&(c, &q)| c >= 1 && q > 0.0)
            .max_by(|x, y| {
                x.1.total_cmp(y.1)
                    .then(inside(x.0).cmp(&inside(y.0)))
                    .then(y.0.cmp(&x.0))
            })
            .map(|(candidate, &probability)| Suspect {
                candidate,
                probability,
            });
        if let Some(l) = &leader {
            first = first.min(l.candidate);
            last = last.max(l.candidate);
        }
        Progress {
            phase: self.phase(),
            iterations: self.end_iterations + self.iterations + self.verify_iterations,
            builds: self.builds + self.verify_builds,
            boots: self.boots,
            leader,
            range: (first, last),
        }
    }

    /// The result so far; final once [`Bisector::next_action`] returned [`Action::Done`].
    pub fn report(&self) -> Report {
        let post = self.internal_posterior();
        let status = match self.state {
            State::Done { status } => status,
            _ => Status::InProgress,
        };
        let posterior = self.external_posterior(&post);
        let (group, confidence) = match &post.probs {
            Some(probs) => self.leading_group(probs),
            None => (Vec::new(), 0.0),
        };
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
        let mut top: Vec<Suspect> = posterior
            .iter()
            .enumerate()
            .filter(|(_, &q)| q > 0.0)
            .map(|(candidate, &probability)| Suspect {
                candidate,
                probability,
            })
            .collect();
        top.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        top.truncate(5);
        // No range where no difference was shown: it would claim one.
        let no_difference = matches!(status, Status::NoDifference | Status::WrongDirection);
        let range = match (&post.probs, culprit) {
            (Some(probs), None) if status != Status::InProgress && !no_difference => {
                let (lo, hi) = shortest_range(probs, self.config.confidence);
                let (a, b) = (self.position_to_external(lo), self.position_to_external(hi));
                Some(SuspectRange {
                    first: a.min(b),
                    last: a.max(b),
                    mass: probs[lo..=hi].iter().sum(),
                })
            }
            _ => None,
        };
        let (good, bad) = (self.rep(0), self.rep(self.last));
        let ends = self.ends_shown.clone().or_else(|| {
            (self.kernel_tally(good).iterations + self.kernel_tally(bad).iterations > 0)
                .then(|| self.ends())
        });
        let iterations_needed = match (status, &ends) {
            // More runs can only separate the ends the way asked when the bad end fails more.
            (Status::NoDifference, Some(e)) if e.bad.rate > e.good.rate => {
                verify::iterations_to_separate(e.good.rate, e.bad.rate)
            }
            _ => None,
        };
        let rates = match &post.probs {
            Some(probs) => {
                let (c, _) = probs
                    .iter()
                    .enumerate()
                    .skip(1)
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .unwrap_or((1, &0.0));
                let s = &post.splits[post.split_of[c]];
                let pooled = |cells: &[Cell]| {
                    let t = cells
                        .iter()
                        .fold(Tally::default(), |t, cell| t.add(cell.all()));
                    MeasuredRate::new(t.failures, t.iterations)
                };
                let (good_runs, bad_runs) = (pooled(&self.cells[..c]), pooled(&self.cells[c..]));
                // The interval a user reads is never narrower than what the side's own runs
                // allow: the prior's atom at 0 would otherwise put a side that stayed clean
                // for a dozen runs at "at most 11%" when 23% is still likely. The search keeps
                // the model's posterior; only the report widens.
                let est = |w: &[f64], g: &RateGrid, runs: &MeasuredRate| {
                    let (mean, low, high) = posterior::summarize(w, g);
                    let (low, high) = if runs.iterations > 0 {
                        (low.min(runs.low), high.max(runs.high))
                    } else {
                        (low, high)
                    };
                    EstimatedRate { mean, low, high }
                };
                Some(SideRates {
                    culprit: self.position_to_external(c),
                    good: est(&s.good, &self.g0, &good_runs),
                    bad: est(&s.bad, &self.g1, &bad_runs),
                    good_runs: Some(good_runs),
                    bad_runs: Some(bad_runs),
                })
            }
            None => None,
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
        Report {
            status,
            direction: self.config.direction,
            culprit,
            suspects,
            confidence,
            top,
            range,
            posterior,
            evidence,
            ends_confirmed: verify::confirmed(&self.ends(), self.config.confidence),
            evidence_needed: verify::evidence_needed(self.config.confidence),
            ends,
            iterations_needed,
            rates,
            verified: self.verified_pair.map(|p| self.verification(p)),
            verification_runs: self.verified_pair.map(|p| {
                let (bad, good) = (self.verify_tally(p.bad), self.verify_tally(p.good));
                VerificationRuns {
                    rounds: self.verify_rounds,
                    bad: MeasuredRate::new(bad.failures, bad.iterations),
                    good: MeasuredRate::new(good.failures, good.iterations),
                }
            }),
            builds: self.builds,
            boots: self.boots,
            end_iterations: self.end_iterations,
            iterations: self.iterations,
            verify_builds: self.verify_builds,
            verify_iterations: self.verify_iterations,
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
    use crate::bisect::model::RatePrior;
    use crate::bisect::sim::SimulatedHistory;
    use proptest::prelude::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn ran(iterations: u32, failures: u32) -> BatchOutcome {
        BatchOutcome::Ran {
            iterations,
            failures,
        }
    }

    /// Rates 0 and 1 known: plain bisection.
    fn deterministic() -> Config {
        Config {
            good_rate: RatePrior::Known { rate: 0.0 },
            bad_rate: RatePrior::Known { rate: 1.0 },
            boot_cost: 0.0,
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
                let n = if stop { 1 } else { iterations };
                ran(n, n)
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

    fn drive(b: &mut Bisector, h: &mut dyn Oracle) -> Report {
        b.run(h).unwrap()
    }

    #[test]
    fn posterior_with_known_rates() {
        // Good rate 0, bad rate 0.5: candidate 1 clean twice. c=1: 0.25; c=2: 1 -> 0.2, 0.8.
        let config = Config {
            good_rate: RatePrior::Known { rate: 0.0 },
            bad_rate: RatePrior::Known { rate: 0.5 },
            ..Config::default()
        };
        let mut b = Bisector::new(2, config).unwrap();
        b.record(1, ran(2, 0)).unwrap();
        assert_close(&b.posterior(), &[0.0, 0.2, 0.8]);
        // Good rate 0.1, bad 0.5; candidate 1: 1 failure in 2. c=1: .5*.5 = .25;
        // c=2: .1*.9 = .09 -> .25/.34, .09/.34.
        let config = Config {
            good_rate: RatePrior::Known { rate: 0.1 },
            bad_rate: RatePrior::Known { rate: 0.5 },
            ..Config::default()
        };
        let mut b = Bisector::new(2, config).unwrap();
        b.record(1, ran(2, 1)).unwrap();
        assert_close(&b.posterior(), &[0.0, 0.25 / 0.34, 0.09 / 0.34]);
    }

    #[test]
    fn deterministic_bug_is_plain_bisection() {
        let mut oracle = Deterministic {
            bad: Box::new(|c| c >= 5),
            log: Vec::new(),
        };
        let config = Config {
            check_ends: false,
            ..deterministic()
        };
        let mut b = Bisector::new(8, config).unwrap();
        let report = drive(&mut b, &mut oracle);
        // Search 4 (good), 6 (bad), 5 (bad): one iteration each; then one fresh run of 5.
        assert_eq!(oracle.log, vec![(4, 1), (6, 1), (5, 1), (5, 1)]);
        assert_eq!(report.status, Status::Found);
        assert_eq!(report.culprit, Some(5));
        assert_eq!(report.confidence, 1.0);
        assert_eq!((report.builds, report.iterations), (3, 3));
        let v = report.verified.unwrap();
        // With both rates known, one clean run of 4 and one fresh failure of 5 prove it.
        assert!(v.holds, "{v:?}");
        assert_eq!((v.good.iterations, v.bad.iterations), (1, 1));
        assert_eq!((v.good_candidate, v.bad_candidate), (4, 5));
    }

    #[test]
    fn deterministic_bug_needs_few_builds_without_knowing_the_rates() {
        // The engine is told nothing about the rates; every culprit of 64 commits. Plain
        // bisection needs 6 builds; the ends add 2.
        let mut total = 0;
        for culprit in 1..=64 {
            let mut oracle = Deterministic {
                bad: Box::new(move |c| c >= culprit),
                log: Vec::new(),
            };
            let mut b = Bisector::new(64, Config::default()).unwrap();
            let report = drive(&mut b, &mut oracle);
            assert_eq!(report.culprit, Some(culprit), "{report:?}");
            assert!(
                report.builds <= 2 + 7,
                "culprit {culprit}: {} builds",
                report.builds
            );
            // The last candidate is the dearest: every clean run of the one before it counts
            // against a low bad rate, which the prior expects.
            assert!(
                report.total_iterations() <= 45,
                "culprit {culprit}: {report:?}"
            );
            total += report.total_iterations();
        }
        assert!(
            total <= 26 * 64,
            "{} iterations on average",
            total as f64 / 64.0
        );
    }

    #[test]
    fn a_dear_build_buys_iterations_on_built_candidates_instead() {
        // The same 40 histories (0.3 against 0.05, 32 commits), a build priced at 1 iteration,
        // then at 300.
        let builds = |build_cost: f64| -> u64 {
            let mut rng = SmallRng::seed_from_u64(7);
            (0..40)
                .map(|k| {
                    let mut h = SimulatedHistory {
                        culprit: 1 + k % 32,
                        p: 0.3,
                        fp: 0.05,
                        rng: &mut rng,
                    };
                    let mut b = Bisector::new(32, Config::default()).unwrap();
                    b.set_prices(build_cost, 2.0).unwrap();
                    let r = b.run(&mut h).unwrap();
                    r.total_builds()
                })
                .sum()
        };
        let (cheap, dear) = (builds(1.0), builds(300.0));
        assert!(dear < cheap, "{dear} builds priced at 300, {cheap} at 1");
        // A price the engine cannot use is refused, and the old one stays.
        let mut b = Bisector::new(4, Config::default()).unwrap();
        assert!(b.set_prices(f64::NAN, 2.0).is_err());
        assert!(b.set_prices(10.0, -1.0).is_err());
        assert_eq!(b.config().build_cost, Config::default().build_cost);
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
                Action::Test {
                    candidate,
                    iterations,
                    ..
                } => b
                    .record(
                        candidate,
                        if candidate >= 5 {
                            ran(1, 1)
                        } else {
                            ran(iterations, 0)
                        },
                    )
                    .unwrap(),
                Action::Done(report) => {
                    assert_eq!(report.status, Status::Ambiguous);
                    assert_eq!(report.culprit, None);
                    let s: Vec<usize> = report.suspects.iter().map(|s| s.candidate).collect();
                    assert_eq!(s, vec![4, 5]);
                    assert_eq!(report.confidence, 1.0);
                    assert_eq!(report.evidence[4].unknown.as_deref(), Some("build failed"));
                    let range = report.range.unwrap();
                    assert_eq!((range.first, range.last), (4, 5));
                    let v = report.verified.unwrap();
                    assert_eq!((v.good_candidate, v.bad_candidate), (3, 5));
                    return;
                }
            }
        }
    }

    #[test]
    fn each_verification_round_judges_its_own_fresh_runs() {
        // Rates known (0 and 0.3): any failure proves a candidate bad, so the search names 5
        // whatever its fresh runs show. Its first nine or more fresh runs are clean, which
        // refutes it at 95% (0.7^9 < 0.05); the search names 5 again, and the next round must
        // judge its own fresh runs, not fail at once on the first round's clean ones.
        let config = Config {
            good_rate: RatePrior::Known { rate: 0.0 },
            bad_rate: RatePrior::Known { rate: 0.3 },
            boot_cost: 0.0,
            ..Config::default()
        };
        let mut b = Bisector::new(8, config).unwrap();
        let mut clean_left: u32 = 9;
        let report = loop {
            let Action::Test {
                candidate,
                iterations,
                stop_at_first_failure,
            } = b.next_action()
            else {
                break b.report();
            };
            let verifying = b.progress().phase == Phase::Verify;
            let outcome = if candidate < 5 {
                ran(iterations, 0)
            } else if verifying && candidate == 5 && clean_left > 0 {
                clean_left = clean_left.saturating_sub(iterations);
                ran(iterations, 0)
            } else if stop_at_first_failure {
                ran(1, 1)
            } else {
                ran(iterations, iterations.div_ceil(2))
            };
            b.record(candidate, outcome).unwrap();
        };
        assert_eq!(
            clean_left, 0,
            "the first round ran nine clean runs: {report:?}"
        );
        assert_eq!(report.status, Status::Found, "{report:?}");
        assert_eq!(report.culprit, Some(5));
        let v = report.verified.unwrap();
        assert!(v.holds, "{v:?}");
        // The report shows the last round's fresh runs; the evidence keeps every one.
        assert!(v.bad.failures > 0, "{v:?}");
        assert!(
            report.evidence[5].verify_iterations >= v.bad.iterations + 9,
            "{v:?} {:?}",
            report.evidence[5]
        );
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
        let report = drive(&mut b, &mut oracle);
        assert_eq!(report.culprit, Some(3));
        assert_eq!(report.direction, Direction::Fix);
        assert_eq!(report.posterior[3], 1.0);
        let v = report.verified.unwrap();
        assert!(v.holds);
        // The fix (3) is the good kernel, its parent (2) the bad one.
        assert_eq!((v.good_candidate, v.bad_candidate), (3, 2));
        let ends = report.ends.unwrap();
        assert_eq!((ends.good_candidate, ends.bad_candidate), (8, 0));
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
                            p: 0.5,
                            fp: 0.1,
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
        assert_eq!(forward, backward);
        assert_eq!(fr.total_iterations(), br.total_iterations());
        assert_eq!(fr.culprit, Some(13));
        // First bad 13 forwards is first good 8 = 21 - 13 backwards.
        assert_eq!(br.culprit, Some(8));
    }

    #[test]
    fn identical_kernels_share_evidence_and_are_never_run_again() {
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
                Action::Test { candidate: 6, .. } => panic!("asked for an alias again"),
                Action::Test {
                    candidate,
                    iterations,
                    ..
                } => b
                    .record(
                        candidate,
                        if candidate >= 5 {
                            ran(1, 1)
                        } else {
                            ran(iterations, 0)
                        },
                    )
                    .unwrap(),
                Action::Done(report) => break report,
            }
        };
        assert!(aliased);
        assert_eq!(report.culprit, Some(5));
        assert_eq!(report.evidence[6].alias_of, Some(5));
        assert_eq!(report.evidence[6].iterations, 0);
        // The alias was built (that is how it was found): its build counts.
        let tested = report
            .evidence
            .iter()
            .filter(|e| e.iterations + e.verify_iterations > 0)
            .count() as u64;
        assert_eq!(report.total_builds(), tested + 1, "{report:?}");
    }

    /// The held-out shape that took 95 verification iterations: every candidate between the
    /// ends builds the good end's kernel, so the search runs nothing and the verification
    /// begins on the ends' few clean runs of the good side. The culprit fails every other
    /// iteration; the parent never does. The good side's bound must follow the parent's
    /// runs during the round (frozen at its start, from five clean runs, it stayed near
    /// 46%, and a culprit at 50% hardly ever beat it).
    #[test]
    fn a_verification_that_starts_on_few_good_runs_learns_from_the_parents_runs() {
        struct Alternating([u32; 5]);
        impl Oracle for Alternating {
            fn test(&mut self, c: usize, n: u32, stop: bool) -> BatchOutcome {
                let (mut ran, mut failures) = (0, 0);
                for _ in 0..n {
                    ran += 1;
                    self.0[c] += 1;
                    if c == 4 && self.0[c].is_multiple_of(2) {
                        failures += 1;
                        if stop {
                            break;
                        }
                    }
                }
                BatchOutcome::Ran {
                    iterations: ran,
                    failures,
                }
            }
        }
        let mut b = Bisector::new(4, Config::default()).unwrap();
        let mut oracle = Alternating([0; 5]);
        let report = loop {
            match b.next_action() {
                Action::Test { candidate, .. } if (1..=3).contains(&candidate) => {
                    b.record_alias(candidate, 0).unwrap()
                }
                Action::Test {
                    candidate,
                    iterations,
                    stop_at_first_failure,
                } => {
                    let o = oracle.test(candidate, iterations, stop_at_first_failure);
                    b.record(candidate, o).unwrap()
                }
                Action::Done(report) => break report,
            }
        };
        assert_eq!(report.status, Status::Found, "{report:?}");
        assert_eq!(report.culprit, Some(4));
        assert_eq!(report.iterations, 0, "the aliases leave nothing to search");
        assert!(
            report.verify_iterations <= 40,
            "{} verification iterations",
            report.verify_iterations
        );
    }

    #[test]
    fn a_culprit_that_shares_its_kernel_with_a_later_candidate_is_the_one_named_and_verified() {
        // 5 is the culprit; 5 and 6 build one kernel. Whichever of the two the search asks for
        // second is recorded as the alias of the first.
        let mut b = Bisector::new(8, deterministic()).unwrap();
        let mut run: Vec<usize> = Vec::new();
        let report = loop {
            match b.next_action() {
                Action::Test { candidate, .. }
                    if (candidate == 5 || candidate == 6) && run.contains(&(11 - candidate)) =>
                {
                    b.record_alias(candidate, 11 - candidate).unwrap()
                }
                Action::Test {
                    candidate,
                    iterations,
                    ..
                } => {
                    run.push(candidate);
                    let outcome = if candidate >= 5 {
                        ran(1, 1)
                    } else {
                        ran(iterations, 0)
                    };
                    b.record(candidate, outcome).unwrap()
                }
                Action::Done(report) => break report,
            }
        };
        assert_eq!(report.culprit, Some(5), "{report:?}");
        let v = report.verified.expect("verified");
        assert!(v.holds);
        assert_eq!((v.good_candidate, v.bad_candidate), (4, 5));
    }

    #[test]
    fn ends_that_do_not_differ_stop_without_a_culprit() {
        // The same rate everywhere: the ends never separate within the budget.
        let mut rng = SmallRng::seed_from_u64(11);
        let config = Config {
            max_iterations: 60,
            ..Config::default()
        };
        let mut h = SimulatedHistory {
            culprit: 5,
            p: 0.2,
            fp: 0.2,
            rng: &mut rng,
        };
        let report = Bisector::new(10, config).unwrap().run(&mut h).unwrap();
        assert_eq!(report.status, Status::NoDifference, "{report:?}");
        assert_eq!(report.culprit, None);
        assert_eq!(report.iterations, 0, "the search never started");
        let ends = report.ends.clone().unwrap();
        assert!(!ends.holds);
        assert_eq!(ends.good.iterations + ends.bad.iterations, 60);
        if ends.good.rate != ends.bad.rate {
            assert!(report.iterations_needed.unwrap() > 30, "{report:?}");
        }
    }

    #[test]
    fn ends_the_wrong_way_round_say_so() {
        let mut oracle = Deterministic {
            bad: Box::new(|c| c == 0),
            log: Vec::new(),
        };
        let report = Bisector::new(10, Config::default())
            .unwrap()
            .run(&mut oracle)
            .unwrap();
        assert_eq!(report.status, Status::WrongDirection);
        assert_eq!(report.culprit, None);
    }

    #[test]
    fn budget_ends_with_a_suspect_range_not_one_commit() {
        let mut rng = SmallRng::seed_from_u64(5);
        let config = Config {
            max_iterations: 40,
            ..Config::default()
        };
        let mut h = SimulatedHistory {
            culprit: 20,
            p: 0.5,
            fp: 0.05,
            rng: &mut rng,
        };
        let report = Bisector::new(40, config).unwrap().run(&mut h).unwrap();
        assert_eq!(
            report.status,
            Status::BudgetExhausted,
            "{:?}",
            report.status
        );
        assert_eq!(report.culprit, None);
        let range = report.range.unwrap();
        assert!(range.first < range.last, "{range:?}");
        assert!(range.mass >= 0.95 || (range.first, range.last) == (1, 40));
        assert!(report.end_iterations + report.iterations <= 40);
    }

    #[test]
    fn equal_rates_seldom_name_a_change_and_never_confirm_the_ends() {
        // The same rate everywhere. The posterior that starts the search passes on lucky ends
        // (about 40% of such ranges); what a user is told must not claim more than the runs
        // show: a culprit (verified) seldom, and a range only beside the ends' Bayes factor,
        // which such ends seldom confirm.
        let config = Config {
            max_iterations: 300,
            ..Config::default()
        };
        let (mut searched, mut claims, mut confirmed) = (0, 0, 0);
        for seed in 0..200 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut h = SimulatedHistory {
                culprit: 32,
                p: 0.3,
                fp: 0.3,
                rng: &mut rng,
            };
            let r = Bisector::new(64, config.clone())
                .unwrap()
                .run(&mut h)
                .unwrap();
            let ends_now = {
                let e = r.ends.as_ref().expect("the ends ran");
                let (g, b) = (&r.evidence[0], &r.evidence[64]);
                let t = |x: &EvidenceRow| Tally {
                    iterations: x.iterations + x.verify_iterations,
                    failures: x.failures + x.verify_failures,
                };
                verify::compare((e.good_candidate, t(g)), (e.bad_candidate, t(b)), 0.95)
            };
            match r.status {
                Status::NoDifference | Status::WrongDirection => {
                    assert!(
                        r.range.is_none(),
                        "a range without a difference: {:?}",
                        r.range
                    );
                }
                Status::BudgetExhausted => {
                    searched += 1;
                    assert_eq!(r.ends_confirmed, verify::confirmed(&ends_now, 0.95));
                    confirmed += usize::from(r.ends_confirmed);
                }
                Status::Found | Status::Ambiguous => claims += 1,
                _ => searched += 1,
            }
        }
        assert!(searched >= 40, "the search hardly ran: {searched}");
        assert!(
            claims <= 6,
            "{claims} of 200 equal-rate ranges named a culprit"
        );
        assert!(
            confirmed <= 10,
            "{confirmed} of {searched} searches had confirmed ends"
        );
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
            "accept bisection setting `confidence` = 1: expected 0.5 <= x < 1"
        );
        let bad = Config {
            good_rate: RatePrior::Known { rate: 1.5 },
            ..Config::default()
        };
        assert_eq!(
            Bisector::new(4, bad).unwrap_err().to_string(),
            "accept bisection setting `good-rate` = known rate 1.5: expected 0 <= rate <= 1"
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
        b.record_alias(2, 1).unwrap();
        assert!(b.record_alias(1, 2).is_err(), "a cycle of aliases");
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
        assert_eq!(back.culprit, Some(9));
        assert_eq!(
            (back.status, back.builds, back.iterations, back.boots),
            (
                report.status,
                report.builds,
                report.iterations,
                report.boots
            )
        );
        assert_eq!(back.evidence, report.evidence);
        assert!((back.confidence - report.confidence).abs() < 1e-12);
        assert!(json.contains("\"end-iterations\""), "{json}");
    }

    /// A history whose candidates fall into runs of byte-identical kernels; the driver reports
    /// an alias whenever it is asked for a kernel it already tested, as the real one does.
    fn drive_with_aliases(
        b: &mut Bisector,
        image: &[usize],
        h: &mut dyn Oracle,
    ) -> Result<Report, TestCaseError> {
        let mut tested: std::collections::HashMap<usize, usize> = Default::default();
        let mut aliased = vec![false; image.len()];
        let mut asked = vec![0u32; image.len()];
        for _ in 0..5_000 {
            match b.next_action() {
                Action::Test {
                    candidate,
                    iterations,
                    stop_at_first_failure,
                } => {
                    prop_assert!(iterations >= 1);
                    prop_assert!(!aliased[candidate], "asked for alias {} again", candidate);
                    asked[candidate] += 1;
                    match tested.get(&image[candidate]) {
                        Some(&same) if same != candidate => {
                            b.record_alias(candidate, same).unwrap();
                            aliased[candidate] = true;
                        }
                        _ => {
                            tested.insert(image[candidate], candidate);
                            let o = h.test(candidate, iterations, stop_at_first_failure);
                            b.record(candidate, o).unwrap();
                        }
                    }
                }
                Action::Done(report) => return Ok(*report),
            }
        }
        Err(TestCaseError::fail("no end after 5000 actions"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn posterior_sums_to_one(
            runs in proptest::collection::vec((0u32..12, 0u32..12), 2..24),
        ) {
            let last = runs.len() - 1;
            let mut b = Bisector::new(last, Config::default()).unwrap();
            for (i, &(n, f)) in runs.iter().enumerate() {
                if n > 0 {
                    b.record(i, ran(n, f.min(n))).unwrap();
                }
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
            // With a good rate known to be 0, a failure rules out every later position.
            let config = Config {
                verify: false,
                check_ends: false,
                confidence: 0.999_999,
                good_rate: RatePrior::Known { rate: 0.0 },
                ..Config::default()
            };
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
            p in 0.05f64..1.0,
            fp_share in 0.0f64..0.5,
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
            let mut h = SimulatedHistory { culprit, p, fp: p * fp_share, rng: &mut rng };
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
            prop_assert!(report.end_iterations + report.iterations <= max_iterations);
            prop_assert!(report.builds <= max_builds + 2);
            let verify_cap = 2 * config.max_verify_iterations * u64::from(config.max_verify_rounds);
            prop_assert!(report.verify_iterations <= verify_cap);
            if report.culprit.is_some() {
                prop_assert!(report.confidence >= 0.95);
                prop_assert!(report.ends.as_ref().is_some_and(|e| e.holds));
                prop_assert!(report.verified.as_ref().is_some_and(|v| v.holds));
            }
        }

        /// The livelock of issue 9: a candidate whose kernel is byte-identical to one already
        /// tested must never be asked for twice, and every bisection ends.
        #[test]
        fn aliases_are_never_asked_twice_and_every_bisection_ends(
            groups in proptest::collection::vec(1usize..4, 2..14),
            culprit_seed in 0usize..1000,
            p in 0.1f64..1.0,
            fp_share in 0.0f64..0.6,
            fix in any::<bool>(),
            seed in 0u64..1000,
        ) {
            // Consecutive candidates of one group build the same image.
            let image: Vec<usize> = groups
                .iter()
                .enumerate()
                .flat_map(|(g, &n)| std::iter::repeat_n(g, n))
                .collect();
            let last = image.len() - 1;
            // The culprit starts a group (inside one, no kernel changes).
            let starts: Vec<usize> = (1..=last).filter(|&i| image[i] != image[i - 1]).collect();
            let culprit = starts[culprit_seed % starts.len()];
            let config = Config {
                direction: if fix { Direction::Fix } else { Direction::Regression },
                max_iterations: 400,
                ..Config::default()
            };
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut sim = SimulatedHistory { culprit, p, fp: p * fp_share, rng: &mut rng };
            // In fix mode the history runs backwards: candidate k is forward candidate last-k.
            struct Mirror<'a, O: Oracle>(&'a mut O, usize, bool);
            impl<O: Oracle> Oracle for Mirror<'_, O> {
                fn test(&mut self, c: usize, n: u32, stop: bool) -> BatchOutcome {
                    let c = if self.2 { self.1 - c } else { c };
                    self.0.test(c, n, stop)
                }
            }
            let image_ext: Vec<usize> = (0..=last)
                .map(|k| if fix { image[last - k] } else { image[k] })
                .collect();
            let mut b = Bisector::new(last, config).unwrap();
            let report = drive_with_aliases(&mut b, &image_ext, &mut Mirror(&mut sim, last, fix))?;
            prop_assert!(report.status != Status::InProgress);
            if let Some(c) = report.culprit {
                let c_fwd = if fix { last + 1 - c } else { c };
                prop_assert!(image[c_fwd] != image[c_fwd - 1], "named a culprit inside an alias run");
            }
        }
    }

    #[test]
    fn random_identical_image_runs_in_the_seed_livelock_shape() {
        // The real livelock: candidate 1 builds the same image as 2, and verification wanted 1.
        let image = [0, 1, 1, 2, 3, 4, 5, 6, 7];
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..20 {
            let seed = rng.gen();
            let mut r = SmallRng::seed_from_u64(seed);
            let mut sim = SimulatedHistory {
                culprit: 4,
                p: 0.5,
                fp: 0.125,
                rng: &mut r,
            };
            let mut b = Bisector::new(8, Config::default()).unwrap();
            let report = drive_with_aliases(&mut b, &image, &mut sim).unwrap();
            assert_ne!(report.status, Status::InProgress);
        }
    }
}
