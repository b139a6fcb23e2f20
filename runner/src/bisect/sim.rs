//! `crashrig bench bisect`: the search engine against simulated histories, to measure accuracy,
//! calibration and cost without a kernel in sight.

use std::io::Write;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::error::BisectError;
use super::model::{BatchOutcome, Config, ReproPrior, Status};
use super::search::{Bisector, Oracle};

/// Parameters of a simulation run. Defaults (see [`Default`]) are the benchmark.
#[derive(Clone, Debug, PartialEq)]
pub struct SimParams {
    /// Commits after the known-good one, N: candidates 0..=N, 0 good, N bad
    pub commits: usize,
    /// Probability that one iteration on a bad candidate shows the bug
    pub p: f64,
    /// Probability that one iteration on a good candidate shows it anyway
    pub fp: f64,
    /// Simulated bisections
    pub runs: u32,
    /// Seed of the random histories
    pub seed: u64,
    /// Target confidence
    pub confidence: f64,
    /// Cost of a build, in iterations
    pub build_cost: f64,
    /// Search iteration budget of each bisection
    pub max_iterations: u64,
    /// Tell the engine the false-positive rate it simulates (otherwise it assumes 0)
    pub tell_fp: bool,
    /// Tell the engine `p` instead of letting it estimate `p` from the runs.
    pub known_p: bool,
    /// Largest batch the engine asks for
    pub max_batch: u32,
    /// Skip the verification re-runs after each search.
    pub no_verify: bool,
    /// First parameter of the engine's Beta prior on p (1 and 1: uniform)
    pub prior_alpha: f64,
    /// Second parameter of the engine's Beta prior on p
    pub prior_beta: f64,
}

impl Default for SimParams {
    fn default() -> Self {
        SimParams {
            commits: 64,
            p: 0.3,
            fp: 0.0,
            runs: 200,
            seed: 1,
            confidence: 0.95,
            build_cost: 10.0,
            max_iterations: 1000,
            tell_fp: false,
            known_p: false,
            max_batch: 32,
            no_verify: false,
            prior_alpha: 1.0,
            prior_beta: 1.0,
        }
    }
}

impl SimParams {
    /// The engine configuration the simulated bisections run with.
    pub fn config(&self) -> Config {
        Config {
            confidence: self.confidence,
            false_positive_rate: if self.tell_fp { self.fp } else { 0.0 },
            repro_prior: if self.known_p {
                ReproPrior::Known { p: self.p }
            } else {
                ReproPrior::Beta {
                    alpha: self.prior_alpha,
                    beta: self.prior_beta,
                }
            },
            build_cost: self.build_cost,
            max_iterations: self.max_iterations,
            verify: !self.no_verify,
            max_batch: self.max_batch,
            ..Config::default()
        }
    }
}

/// A history with a known culprit: iterations on bad candidates fail at rate `p`, on good ones
/// at rate `fp`.
pub struct SimulatedHistory<'r, R: Rng> {
    pub culprit: usize,
    pub p: f64,
    pub fp: f64,
    pub rng: &'r mut R,
}

impl<R: Rng> Oracle for SimulatedHistory<'_, R> {
    fn test(&mut self, candidate: usize, iterations: u32, stop: bool) -> BatchOutcome {
        let rate = if candidate >= self.culprit {
            self.p
        } else {
            self.fp
        };
        let (mut ran, mut failures) = (0, 0);
        while ran < iterations && !(stop && failures > 0) {
            ran += 1;
            failures += u32::from(self.rng.gen::<f64>() < rate);
        }
        BatchOutcome::Ran {
            iterations: ran,
            failures,
        }
    }
}

/// Observed accuracy of the runs whose reported confidence fell in `[lo, hi)`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CalibrationBucket {
    pub lo: f64,
    pub hi: f64,
    pub runs: u32,
    pub correct: u32,
    pub mean_confidence: f64,
}

/// What the simulated bisections did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimSummary {
    pub commits: usize,
    pub p: f64,
    pub fp: f64,
    pub confidence: f64,
    pub build_cost: f64,
    pub runs: u32,
    /// Runs that named the true culprit.
    pub correct: u32,
    pub accuracy: f64,
    /// Runs that ended with a culprit at the target confidence.
    pub found: u32,
    pub mean_iterations: f64,
    pub max_iterations: u64,
    pub mean_builds: f64,
    pub max_builds: u64,
    /// `ceil(log2 N) + 1`, the build limit for deterministic bugs.
    pub build_limit: u64,
    /// Bits one iteration gives at the best split (the channel capacity).
    pub bits_per_iteration: f64,
    /// `log2 N / bits_per_iteration`.
    pub iteration_bound: f64,
    pub mean_verify_iterations: f64,
    /// Runs whose verification held.
    pub verified: u32,
    pub calibration: Vec<CalibrationBucket>,
}

fn binary_entropy(q: f64) -> f64 {
    if q <= 0.0 || q >= 1.0 {
        0.0
    } else {
        -(q * q.log2() + (1.0 - q) * (1.0 - q).log2())
    }
}

/// Bits about the culprit that one iteration can give, at best: the capacity of the binary
/// channel "is the culprit at or before the tested candidate?" → "did the iteration fail?",
/// `C = max_q h(q p + (1-q) fp) - q h(p) - (1-q) h(fp)`, where `q` is the posterior mass at or
/// before the tested candidate and `h` the binary entropy (for `fp = 0` this is the Z-channel).
/// Whatever the policy, one iteration's outcome carries at most `C` bits about the culprit, and
/// naming one of N equally likely culprits takes `log2 N` bits, so no search needs fewer than
/// `log2 N / C` iterations on average (with `p` known; not knowing `p` only costs more). The
/// bound ignores the confidence target (Fano would shave `(1-confidence) log2 N` bits off).
pub fn iteration_bound(commits: usize, p: f64, fp: f64) -> (f64, f64) {
    // The mutual information is concave in q: a fine grid then golden-section is plenty.
    let info = |q: f64| {
        binary_entropy(q * p + (1.0 - q) * fp)
            - q * binary_entropy(p)
            - (1.0 - q) * binary_entropy(fp)
    };
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    for _ in 0..200 {
        let a = lo + (hi - lo) * 0.381_966;
        let b = hi - (hi - lo) * 0.381_966;
        if info(a) < info(b) {
            lo = a;
        } else {
            hi = b;
        }
    }
    let capacity = info((lo + hi) / 2.0);
    (capacity, (commits as f64).log2() / capacity)
}

const BUCKETS: [(f64, f64); 6] = [
    (0.0, 0.5),
    (0.5, 0.8),
    (0.8, 0.9),
    (0.9, 0.95),
    (0.95, 0.99),
    (0.99, 1.000_001),
];

/// Run `params.runs` simulated bisections with a seeded generator.
pub fn simulate(params: &SimParams) -> Result<SimSummary, BisectError> {
    let config = params.config();
    config.validate()?;
    let mut rng = SmallRng::seed_from_u64(params.seed);
    let mut correct = 0;
    let mut found = 0;
    let mut verified = 0;
    let (mut iterations, mut max_iterations, mut builds, mut max_builds, mut verify_iterations) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut buckets: Vec<CalibrationBucket> = BUCKETS
        .iter()
        .map(|&(lo, hi)| CalibrationBucket {
            lo,
            hi,
            runs: 0,
            correct: 0,
            mean_confidence: 0.0,
        })
        .collect();
    for _ in 0..params.runs {
        let culprit = rng.gen_range(1..=params.commits);
        let mut bisector = Bisector::new(params.commits, config.clone())?;
        let mut history = SimulatedHistory {
            culprit,
            p: params.p,
            fp: params.fp,
            rng: &mut rng,
        };
        let report = bisector.run(&mut history)?;
        let named = report.culprit == Some(culprit);
        correct += u32::from(named);
        found += u32::from(report.status == Status::Found);
        verified += u32::from(report.verified.as_ref().is_some_and(|v| v.holds));
        iterations += report.iterations;
        max_iterations = max_iterations.max(report.iterations);
        builds += report.builds;
        max_builds = max_builds.max(report.builds);
        verify_iterations += report.verify_iterations;
        // Calibration of the leader's probability, whether or not the search stopped on it.
        let leader = report
            .suspects
            .iter()
            .max_by(|a, b| a.probability.total_cmp(&b.probability));
        if let Some(leader) = leader {
            if let Some(b) = buckets
                .iter_mut()
                .find(|b| leader.probability >= b.lo && leader.probability < b.hi)
            {
                b.runs += 1;
                b.correct += u32::from(leader.candidate == culprit);
                b.mean_confidence += leader.probability;
            }
        }
    }
    for b in &mut buckets {
        if b.runs > 0 {
            b.mean_confidence /= f64::from(b.runs);
        }
    }
    let runs = params.runs.max(1);
    let mean = |total: u64| total as f64 / f64::from(runs);
    let (bits_per_iteration, iteration_bound) =
        iteration_bound(params.commits, params.p, params.fp);
    Ok(SimSummary {
        commits: params.commits,
        p: params.p,
        fp: params.fp,
        confidence: params.confidence,
        build_cost: params.build_cost,
        runs: params.runs,
        correct,
        accuracy: f64::from(correct) / f64::from(runs),
        found,
        mean_iterations: mean(iterations),
        max_iterations,
        mean_builds: mean(builds),
        max_builds,
        build_limit: (params.commits as f64).log2().ceil() as u64 + 1,
        bits_per_iteration,
        iteration_bound,
        mean_verify_iterations: mean(verify_iterations),
        verified,
        calibration: buckets,
    })
}

/// Print a simulation summary for people.
pub fn print_summary(s: &SimSummary, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{} simulated bisections: N = {}, p = {}, false positives = {}, confidence {}, build cost {} iterations",
        s.runs, s.commits, s.p, s.fp, s.confidence, s.build_cost
    )?;
    writeln!(
        out,
        "accuracy:   {:.1}% named the true culprit ({} of {}; {} stopped at the target confidence)",
        100.0 * s.accuracy,
        s.correct,
        s.runs,
        s.found
    )?;
    writeln!(
        out,
        "iterations: mean {:.1}, max {}; bound log2(N)/C = {:.1} (C = {:.3} bits per iteration); ratio {:.2}",
        s.mean_iterations,
        s.max_iterations,
        s.iteration_bound,
        s.bits_per_iteration,
        s.mean_iterations / s.iteration_bound
    )?;
    writeln!(
        out,
        "builds:     mean {:.1}, max {}; ceil(log2 N)+1 = {}",
        s.mean_builds, s.max_builds, s.build_limit
    )?;
    writeln!(
        out,
        "verify:     mean {:.1} extra iterations, held in {} of {} runs",
        s.mean_verify_iterations, s.verified, s.runs
    )?;
    writeln!(
        out,
        "calibration (reported confidence of the leader vs observed accuracy):"
    )?;
    for b in s.calibration.iter().filter(|b| b.runs > 0) {
        writeln!(
            out,
            "  [{:.2}, {:.2}): {:4} runs, mean confidence {:.3}, accuracy {:.3}",
            b.lo,
            b.hi.min(1.0),
            b.runs,
            b.mean_confidence,
            f64::from(b.correct) / f64::from(b.runs)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_for_the_target_case() {
        // p = 0.3, fp = 0: the Z-channel capacity is about 0.177 bits (best split q ≈ 0.385),
        // so 6 bits take at least about 34 iterations.
        let (c, bound) = iteration_bound(64, 0.3, 0.0);
        assert!((c - 0.17699).abs() < 1e-4, "capacity {c}");
        assert!((bound - 6.0 / c).abs() < 1e-9);
        // A deterministic bug: one bit per iteration, the plain bisection bound.
        let (c, bound) = iteration_bound(64, 1.0, 0.0);
        assert!((c - 1.0).abs() < 1e-9);
        assert!((bound - 6.0).abs() < 1e-6);
    }
}
