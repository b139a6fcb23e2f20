//! The search: which setting to run next, and for how many iterations, until the budget is
//! spent or one setting is clearly the best.
//!
//! The design, and why:
//! - Each setting tried keeps a Beta(1 + hits, 1 + misses) posterior of its rate (per kernel
//!   with `--against`). The next setting is chosen by top-two Thompson sampling (Russo 2016),
//!   the Thompson variant built to *identify* the best arm rather than to minimise regret: draw
//!   a rate for every candidate and run the best draw, or half the time the best of a redraw
//!   in which another candidate wins (its challenger). Promising settings get the iterations,
//!   hopeless ones stop costing any after a batch or two, without a tuning constant.
//! - Small spaces (at most `full_limit` settings) are searched whole. Real spaces are products
//!   (6 knobs of 2-4 values are hundreds of settings, more than a budget of 300 iterations
//!   can visit), and a knob's effect on a race rate is mostly its own (more in flight, more
//!   files, more CPUs), so the candidates are the default and every setting one knob away
//!   from it; as a leader emerges, its own one-knob neighbours join, and so does the setting
//!   that takes for every knob the value that did best with the others at the leader's (the
//!   one-factor-at-a-time combination). Interactions are still caught: every combination is
//!   measured before it can win.
//! - The first batch is the default's: a winner means something only against it, and a
//!   budget spent on other settings first would leave the comparison out.
//! - It stops when the budget is spent, or when the leader holds `confidence` of the posterior
//!   probability of being the best candidate and its neighbourhood has been tried.
//! - The winner is the leader: the best posterior mean among settings run at least twice (a
//!   single lucky batch does not win).
//!
//! With `--against` the objective is the difference between the two kernels' rates (what a
//! bisection needs: information per iteration grows with the gap), in either direction, and
//! each step runs the setting on both kernels.

use std::collections::HashMap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution};
use serde::Serialize;

use super::error::AmplifyError;
use super::space::{Arm, Space};
use crate::outcome::stats::{fisher_exact_two_sided, wilson_95};

/// What the search maximises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Goal {
    /// The target's rate on one kernel.
    Rate,
    /// The difference between the target's rates on two kernels (either direction).
    Difference,
}

impl Goal {
    /// How many kernels each step runs.
    pub fn sides(self) -> usize {
        match self {
            Goal::Rate => 1,
            Goal::Difference => 2,
        }
    }
}

/// Search parameters. Defaults are what `crashrig amplify` uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Most iterations in all, on every kernel together. Default: 300.
    pub budget: u64,
    /// Iterations of one step, per kernel. Default: 5.
    pub batch: u32,
    /// Stop early when the leader is the best with this posterior probability. Default: 0.95.
    pub confidence: f64,
    /// Spaces of at most this many settings are searched whole. Default: 24.
    pub full_limit: u64,
    pub goal: Goal,
    /// Seed of the sampling (the same seed and outcomes give the same choices).
    pub seed: u64,
    /// Monte Carlo draws for the probability of being the best. Default: 2000.
    pub draws: u32,
    /// Stop once the leader's 95% Wilson lower bound reaches this rate (and the default has
    /// run): past it a bisection gains little, and telling near-certain settings apart costs
    /// the most. Rate goal only. Default: 1 (never; `crashrig amplify` uses 0.8).
    pub enough: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            budget: 300,
            batch: 5,
            confidence: 0.95,
            full_limit: 24,
            goal: Goal::Rate,
            seed: 1,
            draws: 2000,
            enough: 1.0,
        }
    }
}

impl Config {
    fn validate(&self) -> Result<(), AmplifyError> {
        let bad = |what: &'static str, why: String| Err(AmplifyError::Config(what, why));
        if !(1..=1_000_000).contains(&self.budget) {
            return bad("budget", format!("{} is not in 1..=1000000", self.budget));
        }
        if !(1..=1000).contains(&self.batch) {
            return bad("batch", format!("{} is not in 1..=1000", self.batch));
        }
        if !(self.confidence > 0.5 && self.confidence < 1.0) {
            return bad(
                "confidence",
                format!("{} is not between 0.5 and 1", self.confidence),
            );
        }
        if !(self.enough > 0.0 && self.enough <= 1.0) {
            return bad("enough", format!("{} is not in (0, 1]", self.enough));
        }
        if !(100..=1_000_000).contains(&self.draws) {
            return bad("draws", format!("{} is not in 100..=1000000", self.draws));
        }
        Ok(())
    }
}

/// Iterations run and target sightings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub trials: u64,
    pub hits: u64,
}

impl Counts {
    pub fn rate(&self) -> f64 {
        if self.trials == 0 {
            0.0
        } else {
            self.hits as f64 / self.trials as f64
        }
    }

    /// Posterior mean under the uniform prior.
    fn mean(&self) -> f64 {
        (self.hits as f64 + 1.0) / (self.trials as f64 + 2.0)
    }

    /// Posterior variance under the uniform prior.
    fn variance(&self) -> f64 {
        let (a, b) = (
            self.hits as f64 + 1.0,
            (self.trials - self.hits) as f64 + 1.0,
        );
        a * b / ((a + b) * (a + b) * (a + b + 1.0))
    }

    fn draw(&self, rng: &mut SmallRng) -> f64 {
        let b = Beta::new(
            self.hits as f64 + 1.0,
            (self.trials - self.hits) as f64 + 1.0,
        )
        .expect("shape parameters are at least 1");
        b.sample(rng)
    }
}

/// Why the search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stop {
    /// The leader is the best with the configured confidence.
    Confident,
    /// The leader's rate is high enough (its lower bound reached `enough`).
    Enough,
    /// The budget is spent.
    Budget,
}

/// P(Z > z) for a standard normal Z (Abramowitz-Stegun 7.1.26 through erfc; error < 1.5e-7).
fn normal_tail(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc = poly * (-x * x).exp();
    if z >= 0.0 {
        erfc / 2.0
    } else {
        1.0 - erfc / 2.0
    }
}

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Run the setting `arm` (id `id`) for `iterations` on each kernel, then
    /// [`Searcher::record`] each kernel's counts.
    Run {
        id: usize,
        arm: Arm,
        iterations: u32,
    },
    Done(Report),
}

/// One setting tried, as reports show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub id: usize,
    #[serde(skip)]
    pub arm: Arm,
    /// `name=value` of the knobs not at their default.
    pub label: String,
    /// Per kernel (one, or the kernel and `--against`).
    pub counts: Vec<Counts>,
    pub rates: Vec<f64>,
    /// 95% Wilson interval per kernel.
    pub intervals: Vec<(f64, f64)>,
    /// What the search maximises: the rate, or the absolute difference of the rates.
    pub score: f64,
    /// Posterior probability that this is the best of the candidates.
    pub p_best: f64,
}

/// The end (or the state, for progress) of a search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub goal: Goal,
    pub stop: Option<Stop>,
    /// Iterations run, every kernel together.
    pub spent: u64,
    pub budget: u64,
    /// Every setting tried, best score first.
    pub rows: Vec<Row>,
    /// Id of the winner: the leader, when at least two settings ran (one setting measured
    /// alone is compared with nothing, and is no winner).
    pub winner: Option<usize>,
    /// Id of the leader (the best so far), if any setting ran.
    pub leader: Option<usize>,
    /// Settings in the space searched.
    pub space_size: u64,
    /// Settings the search had chosen to compare (the candidates) that never ran, by label,
    /// in the order they became candidates: a budget spent early leaves them unmeasured.
    pub untried: Vec<String>,
    /// Id of the default setting.
    pub default: usize,
    /// Two-sided Fisher p of the winner's rate against the default's on the first kernel
    /// (`None` for the default itself, or when the default did not run).
    pub fisher_vs_default: Option<f64>,
    /// Whether the default ran (on every kernel). The search runs it first, so only a budget
    /// spent before it had an outcome leaves it unmeasured, and the winner uncompared.
    pub default_measured: bool,
}

impl Row {
    /// `hits/trials (rate%, 95% CI lo%-hi%)` per kernel, joined by ` vs `.
    pub fn rates_text(&self) -> String {
        self.counts
            .iter()
            .zip(&self.intervals)
            .map(|(c, (lo, hi))| {
                format!(
                    "{}/{} ({:.0}%, 95% CI {:.0}%-{:.0}%)",
                    c.hits,
                    c.trials,
                    100.0 * c.rate(),
                    100.0 * lo,
                    100.0 * hi
                )
            })
            .collect::<Vec<_>>()
            .join(" vs ")
    }
}

/// Fisher p below which a winner counts as shown to beat the default.
pub const BEATS_DEFAULT_P: f64 = 0.05;

impl Report {
    pub fn row(&self, id: usize) -> Option<&Row> {
        self.rows.iter().find(|r| r.id == id)
    }

    /// A setting's label, `the default` for the default.
    pub fn setting_name(&self, id: usize) -> String {
        match self.row(id) {
            _ if id == self.default => "the default".into(),
            Some(r) => r.label.clone(),
            None => format!("setting {id}"),
        }
    }

    /// Whether the winner showed the target (or a difference) at all.
    pub fn winner_showed(&self) -> bool {
        self.winner
            .and_then(|w| self.row(w))
            .is_some_and(|r| r.score > 0.0)
    }

    /// The winner to use instead of the default: `Ok(id)` when it showed the target and was
    /// shown to beat the default (Fisher p < [`BEATS_DEFAULT_P`]); else why not. A setting
    /// that replaces the default is a claim that it is better; without the evidence the
    /// default stays.
    pub fn proven_winner(&self) -> Result<usize, String> {
        match (self.winner, self.fisher_vs_default) {
            (None, _) if self.rows.len() == 1 => Err(format!(
                "only {} ran: no other setting was tried",
                self.setting_name(self.rows[0].id)
            )),
            _ if !self.winner_showed() => Err(match self.goal {
                Goal::Difference => "no setting showed a difference between the kernels".into(),
                _ => "no setting showed the target".into(),
            }),
            (Some(w), _) if w == self.default => Err("the winner is the default".into()),
            (Some(_), Some(p)) if p >= BEATS_DEFAULT_P => Err(format!(
                "the winner was not shown to beat the default (Fisher p = {p:.3})"
            )),
            (Some(w), Some(_)) => Ok(w),
            _ => Err("the default did not run, so the winner is not compared with it".into()),
        }
    }
}

struct ArmState {
    arm: Arm,
    sides: Vec<Counts>,
}

/// The search state machine: [`Searcher::next_action`], run it, [`Searcher::record`], repeat.
pub struct Searcher {
    space: Space,
    config: Config,
    arms: Vec<ArmState>,
    ids: HashMap<Arm, usize>,
    candidates: Vec<usize>,
    /// Arms whose neighbourhood joined the candidates.
    expanded: Vec<usize>,
    /// Structured (local) search: the space is larger than `full_limit`.
    local: bool,
    spent: u64,
    /// The default has been handed out to run at least once.
    default_asked: bool,
    rng: SmallRng,
}

impl Searcher {
    pub fn new(space: Space, config: Config) -> Result<Searcher, AmplifyError> {
        config.validate()?;
        let rng = SmallRng::seed_from_u64(config.seed);
        let mut s = Searcher {
            local: space.size() > config.full_limit,
            space,
            config,
            arms: Vec::new(),
            ids: HashMap::new(),
            candidates: Vec::new(),
            expanded: Vec::new(),
            spent: 0,
            default_asked: false,
            rng,
        };
        let default = s.space.default_arm();
        s.candidate(default.clone());
        match s.space.all(s.config.full_limit) {
            Some(all) => all.into_iter().for_each(|a| {
                s.candidate(a);
            }),
            None => s.expand(0),
        }
        Ok(s)
    }

    pub fn space(&self) -> &Space {
        &self.space
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn candidate(&mut self, arm: Arm) -> usize {
        if let Some(&id) = self.ids.get(&arm) {
            if !self.candidates.contains(&id) {
                self.candidates.push(id);
            }
            return id;
        }
        let id = self.arms.len();
        self.ids.insert(arm.clone(), id);
        self.arms.push(ArmState {
            arm,
            sides: vec![Counts::default(); self.config.goal.sides()],
        });
        self.candidates.push(id);
        id
    }

    /// Adds the one-knob neighbours of arm `id` to the candidates.
    fn expand(&mut self, id: usize) {
        if self.expanded.contains(&id) {
            return;
        }
        self.expanded.push(id);
        for n in self.space.neighbours(&self.arms[id].arm) {
            self.candidate(n);
        }
    }

    /// The setting that takes, for every knob, the value that scored best among the settings
    /// equal to the leader in every other knob.
    fn combination(&self, leader: usize) -> Arm {
        let base = &self.arms[leader].arm;
        let mut out = base.clone();
        for (k, slot) in out.iter_mut().enumerate() {
            let mut best = (self.score_mean(leader), base[k]);
            for v in 0..self.space.knobs()[k].values.len() {
                let mut a = base.clone();
                a[k] = v;
                if let Some(&id) = self.ids.get(&a) {
                    if self.tried(id) && self.score_mean(id) > best.0 {
                        best = (self.score_mean(id), v);
                    }
                }
            }
            *slot = best.1;
        }
        out
    }

    fn tried(&self, id: usize) -> bool {
        self.arms[id].sides.iter().all(|c| c.trials > 0)
    }

    fn trials(&self, id: usize) -> u64 {
        self.arms[id]
            .sides
            .iter()
            .map(|c| c.trials)
            .min()
            .unwrap_or(0)
    }

    fn score_mean(&self, id: usize) -> f64 {
        let s = &self.arms[id].sides;
        match self.config.goal {
            Goal::Rate => s[0].mean(),
            Goal::Difference => (s[0].mean() - s[1].mean()).abs(),
        }
    }

    fn score_draw(&mut self, id: usize) -> f64 {
        let sides = self.arms[id].sides.clone();
        match self.config.goal {
            Goal::Rate => sides[0].draw(&mut self.rng),
            Goal::Difference => (sides[0].draw(&mut self.rng) - sides[1].draw(&mut self.rng)).abs(),
        }
    }

    /// The leader: best posterior mean among settings run at least two batches, else among
    /// those run at all.
    fn leader(&self) -> Option<usize> {
        let settled = 2 * u64::from(self.config.batch);
        let pick = |min: u64| {
            self.candidates
                .iter()
                .copied()
                .filter(|&id| self.trials(id) >= min)
                .max_by(|&a, &b| {
                    self.score_mean(a)
                        .total_cmp(&self.score_mean(b))
                        .then(b.cmp(&a))
                })
        };
        pick(settled).or_else(|| pick(1))
    }

    /// Probability of being the best of the candidates tried so far, per candidate (same
    /// order; 0 for the untried), by Monte Carlo. An untried setting's flat prior would
    /// otherwise take a share of the probability that no measurement supports.
    fn p_best(&mut self) -> Vec<f64> {
        let n = self.candidates.len();
        let tried: Vec<usize> = (0..n).filter(|&i| self.tried(self.candidates[i])).collect();
        let mut wins = vec![0u32; n];
        if tried.is_empty() {
            return vec![0.0; n];
        }
        for _ in 0..self.config.draws {
            let mut best = (f64::NEG_INFINITY, 0);
            for &i in &tried {
                let d = self.score_draw(self.candidates[i]);
                if d > best.0 {
                    best = (d, i);
                }
            }
            wins[best.1] += 1;
        }
        wins.iter()
            .map(|&w| f64::from(w) / f64::from(self.config.draws))
            .collect()
    }

    /// Whether the leader is the best candidate with the configured confidence. Every
    /// candidate must have run; then, by the union bound, the chance that another candidate is
    /// better is at most the sum over the others of P(score_j > score_leader), each from the
    /// normal approximation of the two posteriors (cheap enough to ask at every step, and
    /// conservative where it matters: a sum of small tails).
    fn confident(&self) -> bool {
        if !self.candidates.iter().all(|&id| self.tried(id)) {
            return false;
        }
        let Some(leader) = self.leader() else {
            return false;
        };
        if self.trials(leader) < 2 * u64::from(self.config.batch) {
            return false;
        }
        let (ml, vl) = self.score_moments(leader);
        let mut doubt = 0.0;
        for &id in &self.candidates {
            if id != leader {
                let (m, v) = self.score_moments(id);
                doubt += normal_tail((ml - m) / (vl + v).sqrt());
                if doubt > 1.0 - self.config.confidence {
                    return false;
                }
            }
        }
        true
    }

    /// Whether the leader's rate is known to be at least `enough` (95% Wilson lower bound),
    /// with the default run so that the table can compare them.
    fn enough(&self) -> bool {
        self.leader_enough() && self.default_ran()
    }

    fn leader_enough(&self) -> bool {
        if self.config.goal != Goal::Rate || self.config.enough >= 1.0 {
            return false;
        }
        self.leader().is_some_and(|id| {
            let c = self.arms[id].sides[0];
            wilson_95(c.hits, c.trials).0 >= self.config.enough
        })
    }

    fn default_ran(&self) -> bool {
        self.arms[0].sides[0].trials >= u64::from(self.config.batch)
    }

    /// Posterior mean and variance of the score.
    fn score_moments(&self, id: usize) -> (f64, f64) {
        let s = &self.arms[id].sides;
        match self.config.goal {
            Goal::Rate => (s[0].mean(), s[0].variance()),
            Goal::Difference => (
                (s[0].mean() - s[1].mean()).abs(),
                s[0].variance() + s[1].variance(),
            ),
        }
    }

    /// Top-two Thompson sampling over the candidates.
    fn choose(&mut self) -> usize {
        let draw_best = |s: &mut Searcher| {
            let ids = s.candidates.clone();
            let mut best = (f64::NEG_INFINITY, ids[0]);
            for id in ids {
                let d = s.score_draw(id);
                if d > best.0 {
                    best = (d, id);
                }
            }
            best.1
        };
        let first = draw_best(self);
        if self.rng.gen_bool(0.5) {
            return first;
        }
        for _ in 0..20 {
            let other = draw_best(self);
            if other != first {
                return other;
            }
        }
        first
    }

    pub fn next_action(&mut self) -> Action {
        let sides = self.config.goal.sides() as u64;
        let left = self.config.budget.saturating_sub(self.spent) / sides;
        if left == 0 {
            return Action::Done(self.report(Some(Stop::Budget)));
        }
        if self.local {
            if let Some(leader) = self.leader() {
                if self.trials(leader) >= 2 * u64::from(self.config.batch) {
                    self.expand(leader);
                    let combo = self.combination(leader);
                    self.candidate(combo);
                }
            }
        }
        if self.confident() {
            return Action::Done(self.report(Some(Stop::Confident)));
        }
        if self.enough() {
            return Action::Done(self.report(Some(Stop::Enough)));
        }
        // The default runs first: every winner is compared with it, and the comparison is what
        // tells a kernel developer whether the amplified scenario is worth switching to. Later,
        // a leader high enough to stop on needs a full batch of the default for the same reason.
        // (Once: a default whose batch gave no outcome is left to the sampling like the rest.)
        let id = if (!self.default_asked && !self.tried(0)) || self.leader_enough() {
            0
        } else {
            self.choose()
        };
        self.default_asked |= id == 0;
        Action::Run {
            id,
            arm: self.arms[id].arm.clone(),
            iterations: left.min(u64::from(self.config.batch)) as u32,
        }
    }

    /// Records what setting `id` did on kernel `side` (0: the kernel, 1: `--against`).
    pub fn record(&mut self, id: usize, side: usize, counts: Counts) -> Result<(), AmplifyError> {
        let arm = self.arms.get_mut(id).ok_or(AmplifyError::UnknownArm(id))?;
        let c = arm
            .sides
            .get_mut(side)
            .ok_or(AmplifyError::UnknownArm(id))?;
        let hits = counts.hits.min(counts.trials);
        c.trials += counts.trials;
        c.hits += hits;
        self.spent += counts.trials;
        Ok(())
    }

    /// Spends `iterations` of the budget without an observation: iterations that ran but
    /// gave no outcome (an infrastructure error, a hang of the harness) still cost time, and
    /// a setting that never runs must not keep the search going forever.
    pub fn charge(&mut self, iterations: u64) {
        self.spent += iterations;
    }

    /// The state so far: every setting tried, best first.
    pub fn report(&mut self, stop: Option<Stop>) -> Report {
        let p = self.p_best();
        let mut rows: Vec<Row> = (0..self.arms.len())
            .filter(|&id| self.arms[id].sides.iter().any(|c| c.trials > 0))
            .map(|id| {
                let a = &self.arms[id];
                Row {
                    id,
                    arm: a.arm.clone(),
                    label: self.space.describe(&a.arm),
                    counts: a.sides.clone(),
                    rates: a.sides.iter().map(Counts::rate).collect(),
                    intervals: a
                        .sides
                        .iter()
                        .map(|c| wilson_95(c.hits, c.trials))
                        .collect(),
                    score: match self.config.goal {
                        Goal::Rate => a.sides[0].rate(),
                        Goal::Difference => (a.sides[0].rate() - a.sides[1].rate()).abs(),
                    },
                    p_best: self
                        .candidates
                        .iter()
                        .position(|&c| c == id)
                        .map_or(0.0, |i| p[i]),
                }
            })
            .collect();
        rows.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        let leader = self.leader();
        // A small budget can end the search on the default's first batch: the one setting
        // that ran leads, but beats nothing.
        let winner = leader.filter(|_| rows.len() >= 2);
        let untried = self
            .candidates
            .iter()
            .filter(|&&id| self.arms[id].sides.iter().all(|c| c.trials == 0))
            .map(|&id| self.space.describe(&self.arms[id].arm))
            .collect();
        let default = 0;
        let fisher_vs_default = winner.filter(|&w| w != default).and_then(|w| {
            let (a, b) = (self.arms[w].sides[0], self.arms[default].sides[0]);
            (a.trials > 0 && b.trials > 0).then(|| {
                fisher_exact_two_sided(a.hits, a.trials - a.hits, b.hits, b.trials - b.hits)
            })
        });
        Report {
            goal: self.config.goal,
            stop,
            spent: self.spent,
            budget: self.config.budget,
            rows,
            winner,
            leader,
            space_size: self.space.size(),
            untried,
            default,
            fisher_vs_default,
            default_measured: self.tried(default),
        }
    }

    /// Runs the whole search against an oracle that returns, for a setting, a kernel side
    /// and a number of iterations, the counts observed.
    pub fn run_with(
        mut self,
        mut oracle: impl FnMut(&Arm, usize, u32) -> Counts,
    ) -> Result<Report, AmplifyError> {
        loop {
            match self.next_action() {
                Action::Done(r) => return Ok(r),
                Action::Run {
                    id,
                    arm,
                    iterations,
                } => {
                    for side in 0..self.config.goal.sides() {
                        let c = oracle(&arm, side, iterations);
                        self.record(id, side, c)?;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {

    /// A winner replaces the default (in `amplify`'s rewritten scenario and in `bisect
    /// --amplify`) only when it showed the target and beat the default at p < 0.05.
    #[test]
    fn only_a_winner_shown_to_beat_the_default_replaces_it() {
        let row = |id: usize, hits: u64, score: f64| Row {
            id,
            arm: vec![id],
            label: format!("k={id}"),
            counts: vec![Counts { trials: 20, hits }],
            rates: vec![hits as f64 / 20.0],
            intervals: vec![(0.0, 1.0)],
            score,
            p_best: 0.5,
        };
        let report = |winner: Option<usize>, p: Option<f64>, score: f64| Report {
            goal: Goal::Rate,
            stop: None,
            spent: 40,
            budget: 100,
            rows: vec![row(1, 12, score), row(0, 2, 0.1)],
            winner,
            leader: winner,
            space_size: 2,
            untried: vec![],
            default: 0,
            fisher_vs_default: p,
            default_measured: p.is_some(),
        };
        assert_eq!(report(Some(1), Some(0.001), 0.6).proven_winner(), Ok(1));
        assert_eq!(
            report(Some(1), Some(0.2), 0.6).proven_winner(),
            Err("the winner was not shown to beat the default (Fisher p = 0.200)".into())
        );
        assert_eq!(
            report(Some(1), Some(BEATS_DEFAULT_P), 0.6).proven_winner(),
            Err("the winner was not shown to beat the default (Fisher p = 0.050)".into())
        );
        assert_eq!(
            report(Some(1), None, 0.6).proven_winner(),
            Err("the default did not run, so the winner is not compared with it".into())
        );
        assert_eq!(
            report(Some(0), None, 0.6).proven_winner(),
            Err("the winner is the default".into())
        );
        let nothing = report(Some(1), Some(0.001), 0.0);
        assert!(!nothing.winner_showed());
        assert_eq!(
            nothing.proven_winner(),
            Err("no setting showed the target".into())
        );
        assert_eq!(
            report(None, None, 0.6).proven_winner(),
            Err("no setting showed the target".into())
        );
    }
    use super::*;
    use crate::amplify::space::Knob;
    use proptest::prelude::{any, prop, prop_assert, prop_assert_eq, proptest, ProptestConfig};
    use rand::Rng;

    fn space(shape: &[usize]) -> Space {
        Space::new(
            shape
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let values: Vec<String> = (0..n).map(|v| v.to_string()).collect();
                    Knob::from_owned(format!("k{i}"), "0".into(), values).unwrap()
                })
                .collect(),
        )
        .unwrap()
    }

    /// A deterministic oracle: `rate(arm)` of `n` iterations, rounded down, as hits.
    fn exact(rate: impl Fn(&Arm) -> f64) -> impl FnMut(&Arm, usize, u32) -> Counts {
        let mut carry: HashMap<Arm, f64> = HashMap::new();
        move |arm, _, n| {
            let c = carry.entry(arm.clone()).or_default();
            *c += rate(arm) * f64::from(n);
            let hits = c.floor();
            *c -= hits;
            Counts {
                trials: u64::from(n),
                hits: hits as u64,
            }
        }
    }

    #[test]
    fn normal_tail_matches_tables() {
        for (z, p) in [
            (0.0, 0.5),
            (1.0, 0.158_655),
            (1.96, 0.024_998),
            (-1.645, 0.950_015),
        ] {
            assert!(
                (normal_tail(z) - p).abs() < 1e-5,
                "z {z}: {}",
                normal_tail(z)
            );
        }
    }

    #[test]
    fn small_spaces_are_searched_whole_and_large_ones_from_the_default() {
        let s = Searcher::new(space(&[2, 3]), Config::default()).unwrap();
        assert!(!s.local);
        assert_eq!(s.candidates.len(), 6);
        assert_eq!(s.arms[0].arm, vec![0, 0], "the default is id 0");
        let s = Searcher::new(space(&[2, 2, 4, 3, 3, 3]), Config::default()).unwrap();
        assert!(s.local);
        // The default and its 1 + 1 + 3 + 2 + 2 + 2 one-knob neighbours.
        assert_eq!(s.candidates.len(), 12);
    }

    #[test]
    fn a_clear_winner_stops_the_search_early() {
        // Setting k0=1 shows the target every time, every other setting never.
        let s = Searcher::new(space(&[2, 2]), Config::default()).unwrap();
        let report = s
            .run_with(exact(|a| if a == &vec![1, 0] { 1.0 } else { 0.0 }))
            .unwrap();
        assert_eq!(report.stop, Some(Stop::Confident));
        let w = report.row(report.winner.unwrap()).unwrap();
        assert_eq!(w.label, "k0=1");
        assert!(report.spent < 100, "spent {}", report.spent);
        assert!(report.fisher_vs_default.unwrap() < 0.01);
    }

    #[test]
    fn the_default_runs_first_so_that_every_winner_is_compared_with_it() {
        // amp-known.yaml of probe 12: with a budget of two batches the default never ran, and
        // the winner was printed as "(the default)".
        for seed in 0..20 {
            let config = Config {
                budget: 20,
                seed,
                ..Config::default()
            };
            let mut s = Searcher::new(space(&[4, 2]), config.clone()).unwrap();
            let Action::Run { id, .. } = s.next_action() else {
                panic!("seed {seed}: the search should run");
            };
            assert_eq!(id, 0, "seed {seed}: the first batch is the default's");
            let report = Searcher::new(space(&[4, 2]), config)
                .unwrap()
                .run_with(exact(|a| if a[0] == 2 { 0.9 } else { 0.1 }))
                .unwrap();
            assert!(report.default_measured, "seed {seed}");
            if report.winner != Some(report.default) {
                assert!(report.fisher_vs_default.is_some(), "seed {seed}");
            }
        }
    }

    /// A budget of one batch: the default ran alone, and leads, but is compared with
    /// nothing: no winner, and the candidates it spent nothing on are named.
    #[test]
    fn a_budget_spent_on_the_default_alone_leaves_no_winner_and_names_the_untried() {
        let config = Config {
            budget: 5,
            ..Config::default()
        };
        let report = Searcher::new(space(&[3, 2]), config)
            .unwrap()
            .run_with(exact(|_| 1.0))
            .unwrap();
        assert_eq!(report.stop, Some(Stop::Budget));
        assert_eq!(report.rows.len(), 1);
        assert_eq!(report.leader, Some(0));
        assert_eq!(report.winner, None);
        assert_eq!(report.space_size, 6);
        assert_eq!(report.untried.len(), 5, "{:?}", report.untried);
        assert!(!report.untried.contains(&"default".to_string()));
        assert_eq!(report.fisher_vs_default, None);
    }

    #[test]
    fn p_best_is_shared_among_the_settings_tried_only() {
        // Six candidates, two of them run: the four untried ones hold no probability.
        let mut s = Searcher::new(space(&[2, 3]), Config::default()).unwrap();
        s.record(
            0,
            0,
            Counts {
                trials: 10,
                hits: 1,
            },
        )
        .unwrap();
        s.record(
            1,
            0,
            Counts {
                trials: 10,
                hits: 6,
            },
        )
        .unwrap();
        let report = s.report(None);
        assert_eq!(report.rows.len(), 2);
        let total: f64 = report.rows.iter().map(|r| r.p_best).sum();
        assert!((total - 1.0).abs() < 1e-9, "p-best sums to {total}");
        assert!(report.row(1).unwrap().p_best > 0.9);
        // Nothing tried: nothing is anyone's.
        let mut s = Searcher::new(space(&[2, 3]), Config::default()).unwrap();
        assert!(s.p_best().iter().all(|&p| p == 0.0));
    }

    #[test]
    fn charged_iterations_spend_the_budget_without_being_trials() {
        let mut s = Searcher::new(
            space(&[2]),
            Config {
                budget: 20,
                batch: 10,
                ..Config::default()
            },
        )
        .unwrap();
        s.record(0, 0, Counts { trials: 4, hits: 0 }).unwrap();
        s.charge(6);
        let Action::Run { iterations, .. } = s.next_action() else {
            panic!("budget left")
        };
        assert_eq!(iterations, 10);
        s.charge(10);
        let Action::Done(report) = s.next_action() else {
            panic!("budget spent")
        };
        assert_eq!(report.spent, 20);
        assert_eq!(report.row(0).unwrap().counts[0].trials, 4);
    }

    #[test]
    fn a_leader_sure_to_be_high_enough_stops_the_search_once_the_default_ran() {
        // Four settings always show the target: telling them apart would take the whole
        // budget; any of them will do.
        let config = Config {
            budget: 300,
            batch: 10,
            enough: 0.8,
            ..Config::default()
        };
        let s = Searcher::new(space(&[5, 2]), config.clone()).unwrap();
        let report = s
            .run_with(exact(|a| if a[0] >= 1 && a[1] == 0 { 1.0 } else { 0.05 }))
            .unwrap();
        assert_eq!(report.stop, Some(Stop::Enough));
        assert!(report.spent < 300, "spent {}", report.spent);
        let w = report.row(report.winner.unwrap()).unwrap();
        assert!(wilson_95(w.counts[0].hits, w.counts[0].trials).0 >= 0.8);
        assert!(report.row(report.default).unwrap().counts[0].trials >= 10);
        // Off (the default), the same space spends more.
        let s = Searcher::new(
            space(&[5, 2]),
            Config {
                enough: 1.0,
                ..config
            },
        )
        .unwrap();
        let off = s
            .run_with(exact(|a| if a[0] >= 1 && a[1] == 0 { 1.0 } else { 0.05 }))
            .unwrap();
        assert_ne!(off.stop, Some(Stop::Enough));
        assert!(off.spent > report.spent);
    }

    #[test]
    fn the_budget_is_never_exceeded() {
        let config = Config {
            budget: 37,
            batch: 5,
            ..Config::default()
        };
        let s = Searcher::new(space(&[3, 3]), config).unwrap();
        let report = s.run_with(exact(|_| 0.2)).unwrap();
        assert_eq!(report.stop, Some(Stop::Budget));
        assert_eq!(report.spent, 37);
        let total: u64 = report.rows.iter().map(|r| r.counts[0].trials).sum();
        assert_eq!(total, 37);
    }

    #[test]
    fn local_search_climbs_to_a_combination_far_from_the_default() {
        // The rate grows with every knob's value: the best setting is the far corner, three
        // knobs away from the default, never among the first candidates.
        let shape = [3, 3, 3, 3];
        let config = Config {
            budget: 600,
            ..Config::default()
        };
        let s = Searcher::new(space(&shape), config).unwrap();
        let rate = |a: &Arm| 0.05 + 0.9 * a.iter().sum::<usize>() as f64 / 8.0;
        let report = s.run_with(exact(rate)).unwrap();
        let w = report.row(report.winner.unwrap()).unwrap();
        assert!(
            rate(&w.arm) >= 0.9,
            "winner {} at {}",
            w.label,
            rate(&w.arm)
        );
    }

    #[test]
    fn against_mode_maximises_the_difference_between_kernels() {
        // Kernel 0 shows the target at 0.5 everywhere; kernel 1 at 0.5 except with k0=1,
        // where it never does: the gap is there only.
        let config = Config {
            goal: Goal::Difference,
            budget: 400,
            ..Config::default()
        };
        let s = Searcher::new(space(&[2, 2]), config).unwrap();
        let mut carry = [0.0f64; 2];
        let report = s
            .run_with(|arm, side, n| {
                let p = if side == 1 && arm[0] == 1 { 0.0 } else { 0.5 };
                carry[side] += p * f64::from(n);
                let hits = carry[side].floor();
                carry[side] -= hits;
                Counts {
                    trials: u64::from(n),
                    hits: hits as u64,
                }
            })
            .unwrap();
        let w = report.row(report.winner.unwrap()).unwrap();
        assert_eq!(w.arm[0], 1, "winner {}", w.label);
        assert_eq!(w.counts.len(), 2);
        assert_eq!(w.counts[0].trials, w.counts[1].trials);
    }

    #[test]
    fn unknown_settings_and_bad_configs_are_errors() {
        let mut s = Searcher::new(space(&[2]), Config::default()).unwrap();
        assert_eq!(
            s.record(9, 0, Counts::default()),
            Err(AmplifyError::UnknownArm(9))
        );
        assert_eq!(
            s.record(0, 1, Counts::default()),
            Err(AmplifyError::UnknownArm(0)),
            "a one-kernel search has no side 1"
        );
        for bad in [
            Config {
                budget: 0,
                ..Config::default()
            },
            Config {
                batch: 0,
                ..Config::default()
            },
            Config {
                confidence: 1.0,
                ..Config::default()
            },
        ] {
            assert!(matches!(
                Searcher::new(space(&[2]), bad),
                Err(AmplifyError::Config(..))
            ));
        }
    }

    #[test]
    fn the_same_seed_and_outcomes_give_the_same_search() {
        let run = || {
            Searcher::new(space(&[2, 2, 3, 3, 3]), Config::default())
                .unwrap()
                .run_with(exact(|a| 0.1 + 0.1 * a[2] as f64))
                .unwrap()
        };
        assert_eq!(run(), run());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn any_search_stays_in_its_space_and_budget(
            shape in prop::collection::vec(1usize..5, 1..5),
            budget in 1u64..400,
            batch in 1u32..12,
            rates in prop::collection::vec(0.0f64..1.0, 1024),
            seed in any::<u64>(),
        ) {
            let sp = space(&shape);
            let config = Config { budget, batch, seed, draws: 200, ..Config::default() };
            let mut s = Searcher::new(sp.clone(), config).unwrap();
            let mut rng = SmallRng::seed_from_u64(seed);
            let report = loop {
                match s.next_action() {
                    Action::Done(r) => break r,
                    Action::Run { id, arm, iterations } => {
                        prop_assert!(iterations >= 1 && iterations <= batch);
                        prop_assert_eq!(arm.len(), shape.len());
                        prop_assert!(arm.iter().zip(&shape).all(|(&v, &n)| v < n));
                        let p = rates[arm.iter().fold(0, |i, &v| i * 5 + v) % rates.len()];
                        let hits = (0..iterations).filter(|_| rng.gen::<f64>() < p).count() as u64;
                        s.record(id, 0, Counts { trials: u64::from(iterations), hits }).unwrap();
                    }
                }
            };
            prop_assert!(report.spent <= budget);
            let total: u64 = report.rows.iter().map(|r| r.counts[0].trials).sum();
            prop_assert_eq!(total, report.spent);
            if let Some(w) = report.winner {
                prop_assert!(report.row(w).is_some(), "the winner ran");
            }
            for r in &report.rows {
                prop_assert!(r.intervals[0].0 <= r.rates[0] && r.rates[0] <= r.intervals[0].1);
                prop_assert!((0.0..=1.0).contains(&r.p_best));
            }
        }
    }
}
