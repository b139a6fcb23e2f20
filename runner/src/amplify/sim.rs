//! `crashrig bench amplify-sim`: the search against simulated spaces whose rates are known,
//! next to uniform allocation (every setting the same number of iterations, the best observed
//! rate wins) at the same budgets, to measure how often each finds a setting within `tolerance`
//! of the best, what it spends, and its regret (best rate minus the chosen setting's).

use std::io::Write;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde::Serialize;

use super::error::AmplifyError;
use super::search::{Config, Counts, Searcher};
use super::space::{Arm, Knob, Space};

/// Parameters of the simulation benchmark.
#[derive(Clone, Debug, PartialEq)]
pub struct SimParams {
    /// Values per knob of the simulated spaces. Default: 3, 4, 2 (24 settings, searched
    /// whole); the seed scenario's shape is 4, 3, 3, 3, 2, 4 (864, searched locally).
    pub shape: Vec<usize>,
    /// Simulated searches per budget
    pub runs: u32,
    /// Budgets to compare (iterations).
    pub budgets: Vec<u64>,
    /// A setting within this of the best rate counts as found
    pub tolerance: f64,
    /// Iterations per search step
    pub batch: u32,
    /// Seed of the simulated spaces
    pub seed: u64,
}

impl Default for SimParams {
    fn default() -> Self {
        SimParams {
            shape: vec![3, 4, 2],
            runs: 200,
            budgets: vec![150, 300, 600, 1200, 2400, 4800],
            tolerance: 0.05,
            batch: 5,
            seed: 1,
        }
    }
}

/// A simulated space: every setting's true rate. Rates follow a logistic model with a main
/// effect per knob value (a random walk along the values, as ordinal knobs behave), an
/// interaction term per setting, and a default rate between 3% and 15%, as races show before
/// amplification.
pub struct World {
    pub space: Space,
    rates: Vec<f64>,
}

impl World {
    pub fn generate(shape: &[usize], rng: &mut SmallRng) -> World {
        let knobs: Vec<Knob> = shape
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let values: Vec<String> = (0..n.max(1)).map(|v| v.to_string()).collect();
                let default = values[rng.gen_range(0..values.len())].clone();
                Knob::from_owned(format!("k{i}"), default, values).expect("valid by construction")
            })
            .collect();
        let space = Space::new(knobs).expect("at least one knob");
        let step = Normal::new(0.0, 0.7).expect("valid sd");
        let noise = Normal::new(0.0, 0.3).expect("valid sd");
        let effects: Vec<Vec<f64>> = space
            .knobs()
            .iter()
            .map(|k| {
                let mut walk = vec![0.0];
                for _ in 1..k.values.len() {
                    let last = *walk.last().expect("non-empty");
                    walk.push(last + step.sample(rng));
                }
                let at_default = walk[k.default];
                walk.iter().map(|e| e - at_default).collect()
            })
            .collect();
        let p0: f64 = rng.gen_range(0.03..0.15);
        let b0 = (p0 / (1.0 - p0)).ln();
        let all = space.all(u64::MAX).expect("simulated spaces are small");
        let default = space.default_arm();
        let rates = all
            .iter()
            .map(|arm| {
                let e: f64 = arm.iter().enumerate().map(|(k, &v)| effects[k][v]).sum();
                let eps = if *arm == default {
                    0.0
                } else {
                    noise.sample(rng)
                };
                1.0 / (1.0 + (-(b0 + e + eps)).exp())
            })
            .collect();
        World { space, rates }
    }

    fn index(&self, arm: &[usize]) -> usize {
        self.space
            .knobs()
            .iter()
            .zip(arm)
            .fold(0, |i, (k, &v)| i * k.values.len() + v)
    }

    pub fn rate(&self, arm: &[usize]) -> f64 {
        self.rates[self.index(arm)]
    }

    pub fn best(&self) -> f64 {
        self.rates.iter().copied().fold(0.0, f64::max)
    }

    fn sample(&self, arm: &[usize], n: u32, rng: &mut SmallRng) -> Counts {
        let p = self.rate(arm);
        let hits = (0..n).filter(|_| rng.gen::<f64>() < p).count() as u64;
        Counts {
            trials: u64::from(n),
            hits,
        }
    }
}

/// Uniform allocation: the budget spread evenly over every setting (a random subset when the
/// budget is smaller than the space), the best observed rate wins. Returns the winner.
pub fn uniform(world: &World, budget: u64, rng: &mut SmallRng) -> Arm {
    let mut all = world
        .space
        .all(u64::MAX)
        .expect("simulated spaces are small");
    all.shuffle(rng);
    let n = all.len() as u64;
    let mut best = (f64::NEG_INFINITY, all[0].clone());
    for (i, arm) in all.iter().enumerate() {
        let share = budget / n + u64::from((i as u64) < budget % n);
        if share == 0 {
            break;
        }
        let c = world.sample(arm, share as u32, rng);
        if c.rate() > best.0 {
            best = (c.rate(), arm.clone());
        }
    }
    best.1
}

/// One method's results at one budget.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MethodResult {
    pub budget: u64,
    /// Fraction of runs whose choice was within the tolerance of the best rate.
    pub found: f64,
    pub mean_iterations: f64,
    /// Mean of best rate minus chosen rate.
    pub mean_regret: f64,
}

/// Both methods at every budget.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimSummary {
    pub settings: u64,
    pub runs: u32,
    pub tolerance: f64,
    pub uniform: Vec<MethodResult>,
    pub search: Vec<MethodResult>,
    /// Smallest budget at which uniform allocation found the best in >= 90% of runs.
    pub uniform_budget_90: Option<u64>,
    /// The search's found rate at half that budget.
    pub search_found_at_half: Option<f64>,
    pub search_iterations_at_half: Option<f64>,
}

/// Runs the benchmark: for each budget, `runs` simulated spaces (the same ones for both
/// methods), uniform allocation at the budget and the search at the budget.
pub fn simulate(params: &SimParams) -> Result<SimSummary, AmplifyError> {
    if params.shape.is_empty() || params.shape.iter().any(|&n| n == 0 || n > 16) {
        return Err(AmplifyError::Config(
            "simulation",
            "every knob of --shape needs 1 to 16 values".into(),
        ));
    }
    let settings: u64 = params.shape.iter().map(|&n| n as u64).product();
    if settings > 100_000 {
        return Err(AmplifyError::Config(
            "simulation",
            format!("--shape has {settings} settings; at most 100000"),
        ));
    }
    if params.runs == 0 || params.runs > 100_000 {
        return Err(AmplifyError::Config(
            "simulation",
            "--runs must be 1 to 100000".into(),
        ));
    }
    let run_at = |budget: u64, half: bool| -> Result<(MethodResult, MethodResult), AmplifyError> {
        let mut found = [0u32; 2];
        let mut iters = [0u64; 2];
        let mut regret = [0f64; 2];
        for run in 0..params.runs {
            let mut wrng =
                SmallRng::seed_from_u64(params.seed.wrapping_mul(1_000_003) + u64::from(run));
            let world = World::generate(&params.shape, &mut wrng);
            let best = world.best();
            let mut rng = SmallRng::seed_from_u64(params.seed ^ (u64::from(run) << 20) ^ budget);
            let u = uniform(&world, budget, &mut rng);
            let search_budget = if half { budget / 2 } else { budget };
            let config = Config {
                budget: search_budget.max(1),
                batch: params.batch,
                seed: rng.gen(),
                draws: 500,
                ..Config::default()
            };
            let searcher = Searcher::new(world.space.clone(), config)?;
            let report = searcher.run_with(|arm, _, n| world.sample(arm, n, &mut rng))?;
            let chosen = report
                .winner
                .and_then(|w| report.row(w))
                .map(|r| r.arm.clone())
                .unwrap_or_else(|| world.space.default_arm());
            for (m, (arm, spent)) in [(u, budget), (chosen, report.spent)]
                .into_iter()
                .enumerate()
            {
                let r = world.rate(&arm);
                found[m] += u32::from(r >= best - params.tolerance);
                iters[m] += spent;
                regret[m] += best - r;
            }
        }
        let n = f64::from(params.runs);
        let result = |m: usize, b: u64| MethodResult {
            budget: b,
            found: f64::from(found[m]) / n,
            mean_iterations: iters[m] as f64 / n,
            mean_regret: regret[m] / n,
        };
        Ok((
            result(0, budget),
            result(1, if half { budget / 2 } else { budget }),
        ))
    };
    let mut uniform = Vec::new();
    let mut search = Vec::new();
    for &b in &params.budgets {
        let (u, s) = run_at(b, false)?;
        uniform.push(u);
        search.push(s);
    }
    let uniform_budget_90 = uniform.iter().find(|r| r.found >= 0.9).map(|r| r.budget);
    let (search_found_at_half, search_iterations_at_half) = match uniform_budget_90 {
        // Half that budget is usually a row of the table already: its figures, not a second
        // sample of the same budget (which printed two figures for one budget).
        Some(b) => match search.iter().find(|r| r.budget == b / 2) {
            Some(r) => (Some(r.found), Some(r.mean_iterations)),
            None => {
                let (_, s) = run_at(b, true)?;
                (Some(s.found), Some(s.mean_iterations))
            }
        },
        None => (None, None),
    };
    Ok(SimSummary {
        settings,
        runs: params.runs,
        tolerance: params.tolerance,
        uniform,
        search,
        uniform_budget_90,
        search_found_at_half,
        search_iterations_at_half,
    })
}

/// Prints the benchmark's table.
pub fn print_summary(s: &SimSummary, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "amplification search vs uniform allocation: {} settings, {} simulated spaces per budget, found = within {:.2} of the best rate",
        s.settings, s.runs, s.tolerance
    )?;
    writeln!(
        out,
        "{:>8}  {:>14} {:>10}  {:>14} {:>12} {:>10}",
        "budget", "uniform found", "regret", "search found", "iterations", "regret"
    )?;
    for (u, r) in s.uniform.iter().zip(&s.search) {
        writeln!(
            out,
            "{:>8}  {:>13.1}% {:>10.3}  {:>13.1}% {:>12.1} {:>10.3}",
            u.budget,
            100.0 * u.found,
            u.mean_regret,
            100.0 * r.found,
            r.mean_iterations,
            r.mean_regret
        )?;
    }
    match (s.uniform_budget_90, s.search_found_at_half) {
        (Some(b), Some(f)) => writeln!(
            out,
            "uniform allocation needs {b} iterations to find it in >= 90% of runs; the search with {} ({:.1} spent on average) finds it in {:.1}% (goal: >= 90%)",
            b / 2,
            s.search_iterations_at_half.unwrap_or(0.0),
            100.0 * f
        ),
        _ => writeln!(
            out,
            "uniform allocation found it in fewer than 90% of runs at every budget given: try larger --budgets"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worlds_have_a_low_default_and_known_rates() {
        let mut rng = SmallRng::seed_from_u64(7);
        for _ in 0..20 {
            let w = World::generate(&[2, 3, 4], &mut rng);
            let d = w.rate(&w.space.default_arm());
            assert!((0.03..0.15).contains(&d), "default rate {d}");
            assert!(w.best() >= d);
            assert_eq!(w.rates.len(), 24);
        }
    }

    #[test]
    fn uniform_spends_the_budget_and_picks_a_setting() {
        let mut rng = SmallRng::seed_from_u64(3);
        let w = World::generate(&[2, 2], &mut rng);
        let arm = uniform(&w, 4000, &mut rng);
        // 1000 iterations per setting: the observed best is the true best or within noise.
        assert!(w.rate(&arm) >= w.best() - 0.05);
    }

    #[test]
    fn bad_simulation_parameters_are_errors() {
        let p = SimParams {
            shape: vec![],
            ..SimParams::default()
        };
        assert!(simulate(&p).is_err());
        let p = SimParams {
            shape: vec![16, 16, 16, 16, 16],
            ..SimParams::default()
        };
        assert!(simulate(&p).is_err());
    }

    /// `bench amplify-sim` printed two figures for one budget (96.0% in the table, 91.5% in
    /// the verdict line): the verdict at half the uniform budget sampled that budget again.
    #[test]
    fn the_verdict_at_half_the_budget_is_the_tables_row() {
        let p = SimParams {
            shape: vec![2, 3, 3],
            runs: 30,
            budgets: vec![20, 40, 80, 160, 320, 640, 1280, 2560],
            ..SimParams::default()
        };
        let s = simulate(&p).unwrap();
        let b = s
            .uniform_budget_90
            .expect("uniform finds the best within 2560");
        assert!(b > 20, "{b}");
        let row = s.search.iter().find(|r| r.budget == b / 2).unwrap();
        assert_eq!(s.search_found_at_half, Some(row.found));
        assert_eq!(s.search_iterations_at_half, Some(row.mean_iterations));
    }

    #[test]
    fn search_is_not_worse_than_uniform_on_a_small_simulation() {
        let p = SimParams {
            shape: vec![2, 3, 3],
            runs: 40,
            budgets: vec![300, 1200],
            ..SimParams::default()
        };
        let s = simulate(&p).unwrap();
        assert_eq!(s.settings, 18);
        assert_eq!(s.uniform.len(), 2);
        for (u, r) in s.uniform.iter().zip(&s.search) {
            assert!(r.mean_iterations <= u.budget as f64);
            assert!(
                r.found >= u.found - 0.05,
                "budget {}: search {} vs uniform {}",
                u.budget,
                r.found,
                u.found
            );
        }
    }
}
