//! `crashrig bench bisect`: the engine against simulated histories, beside the rules people use
//! today (implemented here), on the same histories: accuracy, calibration, iterations, builds,
//! cost. No kernel in sight.

use std::io::Write;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::bayesect::Bayesect;
use super::error::BisectError;
use super::model::{BatchOutcome, Config, RatePrior, Status};
use super::search::{Bisector, Oracle};

/// The cases: (rate after the change, rate before it).
pub const DEFAULT_CASES: [(f64, f64); 5] =
    [(0.3, 0.0), (0.3, 0.05), (0.4, 0.1), (0.1, 0.0), (0.5, 0.2)];

/// Parameters of `crashrig bench bisect`. Defaults (see [`Default`]) are the benchmark.
#[derive(Clone, Debug, PartialEq)]
pub struct SimParams {
    /// Commits after the known-good one, N: candidates 0..=N, 0 good, N bad (1 to 4096)
    pub commits: u16,
    /// Cases to run, `P_BAD:P_GOOD` (the rate after and before the change), repeatable.
    /// Default: 0.3:0, 0.3:0.05, 0.4:0.1, 0.1:0, 0.5:0.2
    pub cases: Vec<(f64, f64)>,
    /// Simulated bisections per case and method
    pub runs: u32,
    /// Seed of the random histories
    pub seed: u64,
    /// Target confidence of crashrig
    pub confidence: f64,
    /// Cost of a build, in iterations, in the cost column and crashrig's cost model
    pub build_cost: f64,
    /// Cost of a boot, in iterations, in crashrig's cost model (the cost column does not
    /// count boots; the boots column does)
    pub boot_cost: f64,
    /// Iteration budget of each crashrig bisection (ends and search), and of each git-bayesect one
    pub max_iterations: u64,
    /// Tell crashrig both true rates instead of letting it learn them
    pub tell_rates: bool,
    /// Largest batch crashrig asks for
    pub max_batch: u32,
    /// ktest.pl's BISECT_TRIES: runs per commit, bad at the first failure
    pub ktest_tries: u32,
    /// Only crashrig: no peers, no told-rates reference
    pub no_peers: bool,
    /// Rates of ranges where nothing changed (every candidate fails at the rate). Without
    /// cases, only these run.
    pub no_change: Vec<f64>,
}

/// A `--no-change` rate: strictly between 0 and 1 (at 0 or 1 both ends always agree).
pub fn parse_no_change(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| *v > 0.0 && *v < 1.0)
        .ok_or_else(|| format!("`{s}`: expected a rate between 0 and 1, both excluded"))
}

pub fn parse_case(s: &str) -> Result<(f64, f64), String> {
    let (bad, good) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}`: expected P_BAD:P_GOOD, e.g. 0.3:0.05"))?;
    let num = |x: &str| {
        x.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| (0.0..=1.0).contains(v))
            .ok_or_else(|| format!("`{x}` in `{s}`: expected a rate from 0 to 1"))
    };
    let (bad, good) = (num(bad)?, num(good)?);
    if good >= bad {
        return Err(format!(
            "`{s}`: the rate after the change must be above the rate before"
        ));
    }
    Ok((bad, good))
}

impl Default for SimParams {
    fn default() -> Self {
        SimParams {
            commits: 64,
            cases: Vec::new(),
            runs: 200,
            seed: 1,
            confidence: 0.95,
            build_cost: 10.0,
            boot_cost: 2.0,
            max_iterations: 1000,
            tell_rates: false,
            max_batch: 32,
            ktest_tries: 10,
            no_peers: false,
            no_change: Vec::new(),
        }
    }
}

impl SimParams {
    /// The engine configuration for one case; `told` gives it both true rates.
    pub fn config(&self, p: f64, fp: f64, told: bool) -> Config {
        let (good_rate, bad_rate) = if told {
            (RatePrior::Known { rate: fp }, RatePrior::Known { rate: p })
        } else {
            (RatePrior::Weak, RatePrior::Weak)
        };
        Config {
            confidence: self.confidence,
            good_rate,
            bad_rate,
            build_cost: self.build_cost,
            boot_cost: self.boot_cost,
            max_iterations: self.max_iterations,
            max_batch: self.max_batch,
            ..Config::default()
        }
    }

    fn cases(&self) -> Vec<(f64, f64)> {
        if self.cases.is_empty() && self.no_change.is_empty() {
            DEFAULT_CASES.to_vec()
        } else {
            self.cases.clone()
        }
    }
}

/// A history with a known culprit: iterations on candidates from the culprit on fail at rate
/// `p`, before it at rate `fp`.
pub struct SimulatedHistory<'r, R: Rng> {
    pub culprit: usize,
    pub p: f64,
    pub fp: f64,
    pub rng: &'r mut R,
}

impl<R: Rng> SimulatedHistory<'_, R> {
    fn run_one(&mut self, candidate: usize) -> bool {
        let rate = if candidate >= self.culprit {
            self.p
        } else {
            self.fp
        };
        self.rng.gen::<f64>() < rate
    }
}

impl<R: Rng> Oracle for SimulatedHistory<'_, R> {
    fn test(&mut self, candidate: usize, iterations: u32, stop: bool) -> BatchOutcome {
        let (mut ran, mut failures) = (0, 0);
        while ran < iterations && !(stop && failures > 0) {
            ran += 1;
            failures += u32::from(self.run_one(candidate));
        }
        BatchOutcome::Ran {
            iterations: ran,
            failures,
        }
    }
}

/// A bisection method measured by the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    Crashrig,
    /// The engine told both true rates: what the search costs when nothing is left to learn
    /// about the rates (a reference, not a method anyone can run).
    CrashrigTold,
    /// `git bisect` with one run per step: bad iff that run failed.
    GitBisect,
    /// ktest.pl with `BISECT_TRIES=k`: up to k runs, bad at the first failure.
    Ktest,
    /// syzbot: 10 runs per commit, 20 once a result was flaky; bad at >= max(2, n/6) failures.
    Syzbot,
    /// git-bayesect 1.2: both rates unknown (Jeffreys priors), one run per step where the
    /// expected entropy is least, stop when one position holds the target mass (or after
    /// `--max-iterations` runs); each run boots, each new commit builds.
    Bayesect,
}

impl Method {
    pub fn name(self, ktest_tries: u32) -> String {
        match self {
            Method::Crashrig => "crashrig".into(),
            Method::CrashrigTold => "crashrig, told the rates".into(),
            Method::GitBisect => "git bisect, 1 run".into(),
            Method::Ktest => format!("ktest BISECT_TRIES={ktest_tries}"),
            Method::Syzbot => "syzbot 10/20 runs".into(),
            Method::Bayesect => "git-bayesect 1.2".into(),
        }
    }
}

/// What one method did on one case.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MethodSummary {
    pub method: Method,
    pub name: String,
    pub runs: u32,
    /// Runs that named the true culprit.
    pub correct: u32,
    pub accuracy: f64,
    /// Runs that named a culprit at all (crashrig names one only at the target confidence).
    pub named: u32,
    /// Of the runs that named a culprit, the share that named the true one (for crashrig: the
    /// calibration of "reported >= confidence"); `None` when no run named one.
    pub named_right: Option<f64>,
    /// Every iteration, verification included.
    pub mean_iterations: f64,
    pub mean_builds: f64,
    pub mean_boots: f64,
    /// `mean_iterations + build_cost * mean_builds`.
    pub mean_cost: f64,
    /// crashrig only: mean iterations of the ends, the search and the verification.
    pub phases: Option<[f64; 3]>,
}

/// One case of the benchmark.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CaseSummary {
    pub p_bad: f64,
    pub p_good: f64,
    /// Bits about the culprit one iteration can give at best ([`iteration_bound`]).
    pub capacity_bits: f64,
    /// Fewest iterations any search needs on average, knowing both rates, between the ends
    /// and the verification: `log2 N / capacity_bits`.
    pub search_bound: f64,
    pub methods: Vec<MethodSummary>,
}

/// The whole benchmark.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SimSummary {
    pub commits: u16,
    pub runs: u32,
    pub confidence: f64,
    pub build_cost: f64,
    pub boot_cost: f64,
    pub ktest_tries: u32,
    /// crashrig was told both true rates (`--tell-rates`).
    pub told_rates: bool,
    pub cases: Vec<CaseSummary>,
    pub no_change: Vec<NoChangeSummary>,
}

/// What crashrig says of ranges where nothing changed (every candidate fails at `rate`),
/// Anything named is wrong.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct NoChangeSummary {
    pub rate: f64,
    pub runs: u32,
    /// The ends' posterior passed and the search started.
    pub searched: u32,
    /// The ends' runs confirmed a difference (Bayes factor against equal rates).
    pub confirmed: u32,
    /// A culprit was named (each one verified).
    pub culprits: u32,
    /// A suspect range was named (the budget ran out) ...
    pub ranges: u32,
    /// ... of which with the ends confirmed (the others say they are not).
    pub ranges_confirmed: u32,
    /// "The good end fails more often".
    pub wrong_direction: u32,
    pub mean_iterations: f64,
}

/// What a peer rule concluded: the candidate it names and what it spent.
struct PeerRun {
    named: usize,
    iterations: u64,
    builds: u64,
}

/// Plain bisection with a per-commit verdict rule (the peers): good end 0, bad end `last`.
fn peer_bisect(last: usize, mut is_bad: impl FnMut(usize, &mut u64) -> bool) -> PeerRun {
    let (mut good, mut bad) = (0, last);
    let mut iterations = 0;
    let mut builds = 0;
    while bad - good > 1 {
        let mid = (good + bad) / 2;
        builds += 1;
        if is_bad(mid, &mut iterations) {
            bad = mid;
        } else {
            good = mid;
        }
    }
    PeerRun {
        named: bad,
        iterations,
        builds,
    }
}

fn run_peer<R: Rng>(
    method: Method,
    h: &mut SimulatedHistory<'_, R>,
    last: usize,
    k: u32,
    (confidence, max_runs): (f64, u64),
) -> PeerRun {
    match method {
        Method::GitBisect => peer_bisect(last, |m, it| {
            *it += 1;
            h.run_one(m)
        }),
        Method::Ktest => peer_bisect(last, |m, it| {
            for _ in 0..k {
                *it += 1;
                if h.run_one(m) {
                    return true;
                }
            }
            false
        }),
        Method::Syzbot => {
            let mut n = 10u32;
            peer_bisect(last, |m, it| {
                let failures = (0..n).filter(|_| h.run_one(m)).count() as u32;
                *it += u64::from(n);
                if failures > 0 && failures < n {
                    n = 20; // flaky: more runs from now on
                }
                failures >= (n / 6).max(2)
            })
        }
        Method::Bayesect => {
            let mut b = Bayesect::new(last, max_runs as usize);
            let mut tested = vec![false; last + 1];
            let mut iterations = 0;
            let named = loop {
                let post = b.distribution();
                let top = (0..post.len())
                    .max_by(|&x, &y| post[x].total_cmp(&post[y]))
                    .expect("at least two positions");
                if post[top] >= confidence || iterations >= max_runs {
                    break last - top;
                }
                let index = b.select();
                tested[last - index] = true;
                iterations += 1;
                b.record(index, h.run_one(last - index));
            };
            PeerRun {
                named,
                iterations,
                builds: tested.iter().filter(|&&t| t).count() as u64,
            }
        }
        Method::Crashrig | Method::CrashrigTold => unreachable!("crashrig runs the engine"),
    }
}

#[derive(Default)]
struct Acc {
    correct: u32,
    named: u32,
    named_right: u32,
    iterations: u64,
    builds: u64,
    boots: u64,
    /// Ends, search, verification (crashrig only).
    phases: [u64; 3],
}

/// Run the benchmark: every case, every method, the same seeded histories for each method.
pub fn simulate(params: &SimParams) -> Result<SimSummary, BisectError> {
    let last = usize::from(params.commits);
    let mut methods = vec![Method::Crashrig];
    if !params.no_peers && !params.tell_rates {
        methods.push(Method::CrashrigTold);
    }
    if !params.no_peers {
        methods.extend([
            Method::GitBisect,
            Method::Ktest,
            Method::Syzbot,
            Method::Bayesect,
        ]);
    }
    let mut cases = Vec::new();
    for (case_index, (p, fp)) in params.cases().into_iter().enumerate() {
        let config = params.config(p, fp, params.tell_rates);
        config.validate()?;
        let told = params.config(p, fp, true);
        let mut out = Vec::new();
        for &method in &methods {
            // Every method sees the same culprits and the same random stream per run.
            let mut acc = Acc::default();
            let engine = match method {
                Method::Crashrig => Some(&config),
                Method::CrashrigTold => Some(&told),
                _ => None,
            };
            for run in 0..params.runs {
                let seed = params
                    .seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add((case_index as u64) << 32)
                    .wrapping_add(u64::from(run));
                let mut rng = SmallRng::seed_from_u64(seed);
                let culprit = rng.gen_range(1..=last);
                let mut h = SimulatedHistory {
                    culprit,
                    p,
                    fp,
                    rng: &mut rng,
                };
                let (named, iterations, builds, boots) = if let Some(config) = engine {
                    let report = Bisector::new(last, config.clone())?.run(&mut h)?;
                    acc.phases[0] += report.end_iterations;
                    acc.phases[1] += report.iterations;
                    acc.phases[2] += report.verify_iterations;
                    (
                        report.culprit,
                        report.total_iterations(),
                        report.total_builds(),
                        report.boots,
                    )
                } else {
                    let limits = (params.confidence, params.max_iterations);
                    let r = run_peer(method, &mut h, last, params.ktest_tries, limits);
                    // git-bayesect boots for every run; the others once per step.
                    let boots = match method {
                        Method::Bayesect => r.iterations,
                        _ => r.builds,
                    };
                    (Some(r.named), r.iterations, r.builds, boots)
                };
                acc.correct += u32::from(named == Some(culprit));
                acc.named += u32::from(named.is_some());
                acc.named_right += u32::from(named == Some(culprit));
                acc.iterations += iterations;
                acc.builds += builds;
                acc.boots += boots;
            }
            let n = f64::from(params.runs);
            let mean_iterations = acc.iterations as f64 / n;
            let mean_builds = acc.builds as f64 / n;
            out.push(MethodSummary {
                method,
                name: method.name(params.ktest_tries),
                runs: params.runs,
                correct: acc.correct,
                accuracy: f64::from(acc.correct) / n,
                named: acc.named,
                named_right: (acc.named > 0)
                    .then(|| f64::from(acc.named_right) / f64::from(acc.named)),
                mean_iterations,
                mean_builds,
                mean_boots: acc.boots as f64 / n,
                mean_cost: mean_iterations + params.build_cost * mean_builds,
                phases: engine.is_some().then(|| acc.phases.map(|x| x as f64 / n)),
            });
        }
        let (capacity_bits, search_bound) = iteration_bound(last, p, fp);
        cases.push(CaseSummary {
            p_bad: p,
            p_good: fp,
            capacity_bits,
            search_bound,
            methods: out,
        });
    }
    let mut no_change = Vec::new();
    for (index, &rate) in params.no_change.iter().enumerate() {
        let config = params.config(rate, rate, false);
        config.validate()?;
        let mut acc = NoChangeSummary {
            rate,
            runs: params.runs,
            searched: 0,
            confirmed: 0,
            culprits: 0,
            ranges: 0,
            ranges_confirmed: 0,
            wrong_direction: 0,
            mean_iterations: 0.0,
        };
        let mut iterations = 0;
        for run in 0..params.runs {
            let seed = params
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add(((1000 + index) as u64) << 32)
                .wrapping_add(u64::from(run));
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut history = SimulatedHistory {
                culprit: last,
                p: rate,
                fp: rate,
                rng: &mut rng,
            };
            let r = Bisector::new(last, config.clone())?.run(&mut history)?;
            iterations += r.total_iterations();
            let started = !matches!(r.status, Status::NoDifference | Status::WrongDirection);
            acc.searched += u32::from(started);
            acc.confirmed += u32::from(r.ends_confirmed);
            acc.culprits += u32::from(r.culprit.is_some());
            acc.ranges += u32::from(r.range.is_some());
            acc.ranges_confirmed += u32::from(r.range.is_some() && r.ends_confirmed);
            acc.wrong_direction += u32::from(r.status == Status::WrongDirection);
        }
        acc.mean_iterations = iterations as f64 / f64::from(params.runs);
        no_change.push(acc);
    }
    Ok(SimSummary {
        commits: params.commits,
        runs: params.runs,
        confidence: params.confidence,
        build_cost: params.build_cost,
        boot_cost: params.boot_cost,
        ktest_tries: params.ktest_tries,
        told_rates: params.tell_rates,
        cases,
        no_change,
    })
}

/// Print the benchmark as a table for people.
pub fn print_summary(s: &SimSummary, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "bisection benchmark: N = {} commits, {} runs per case and method, crashrig at confidence {} ({}), build cost {} and boot cost {} iterations",
        s.commits,
        s.runs,
        s.confidence,
        if s.told_rates {
            "told both true rates"
        } else {
            "not told the rates"
        },
        s.build_cost,
        s.boot_cost
    )?;
    writeln!(
        out,
        "accuracy: named the true culprit; named right: of the runs that named one, the share right (crashrig names one only at >= {}); cost = iterations + {} x builds; under crashrig's iterations: ends + search + verification",
        s.confidence, s.build_cost
    )?;
    for case in &s.cases {
        writeln!(out)?;
        writeln!(out, "case p_bad {} p_good {}:", case.p_bad, case.p_good)?;
        writeln!(
            out,
            "  {:<24} {:>9} {:>11} {:>11} {:>8} {:>7} {:>8}",
            "method", "accuracy", "named right", "iterations", "builds", "boots", "cost"
        )?;
        for m in &case.methods {
            writeln!(
                out,
                "  {:<24} {:>8.1}% {:>11} {:>11.1} {:>8.1} {:>7.1} {:>8.1}",
                m.name,
                100.0 * m.accuracy,
                m.named_right
                    .map(|r| format!("{:.1}%", 100.0 * r))
                    .unwrap_or_else(|| "-".into()),
                m.mean_iterations,
                m.mean_builds,
                m.mean_boots,
                m.mean_cost
            )?;
            if let Some([ends, search, verify]) = m.phases {
                writeln!(
                    out,
                    "  {:<24} {:>9} {:>11} {:>11}",
                    "",
                    "",
                    "",
                    format!("{ends:.0}+{search:.0}+{verify:.0}")
                )?;
            }
        }
        writeln!(
            out,
            "  bound: a search that names the culprit reliably needs at least {:.0} iterations on average here, even told both rates (at best {:.3} bits per iteration, {:.1} bits to learn)",
            case.search_bound,
            case.capacity_bits,
            f64::from(s.commits).log2()
        )?;
    }
    for n in &s.no_change {
        let pct = |k: u32| 100.0 * f64::from(k) / f64::from(n.runs);
        writeln!(out)?;
        writeln!(
            out,
            "no change, every candidate fails at {}: anything named is wrong",
            n.rate
        )?;
        writeln!(
            out,
            "  crashrig: search started {:.1}%, ends confirmed {:.1}%, culprit named {:.1}%, range named {:.1}% ({:.1}% with the ends confirmed, the rest saying they are not), wrong direction {:.1}%; {:.1} iterations",
            pct(n.searched),
            pct(n.confirmed),
            pct(n.culprits),
            pct(n.ranges),
            pct(n.ranges_confirmed),
            pct(n.wrong_direction),
            n.mean_iterations
        )?;
        writeln!(
            out,
            "  git bisect, ktest and syzbot's rules name a commit in every run: a per-commit verdict cannot say that nothing changed"
        )?;
    }
    Ok(())
}

/// Bits about the culprit that one iteration can give, at best: the capacity of the binary
/// channel "is the culprit at or before the tested candidate?" -> "did the iteration fail?",
/// `C = max_q h(q p + (1-q) fp) - q h(p) - (1-q) h(fp)`. No search needs fewer than
/// `log2 N / C` iterations on average, even knowing both rates.
pub fn iteration_bound(commits: usize, p: f64, fp: f64) -> (f64, f64) {
    fn binary_entropy(q: f64) -> f64 {
        if q <= 0.0 || q >= 1.0 {
            0.0
        } else {
            -(q * q.log2() + (1.0 - q) * (1.0 - q).log2())
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_for_the_target_case() {
        // p = 0.3, fp = 0: the Z-channel capacity is about 0.177 bits.
        let (c, bound) = iteration_bound(64, 0.3, 0.0);
        assert!((c - 0.17699).abs() < 1e-4, "capacity {c}");
        assert!((bound - 6.0 / c).abs() < 1e-9);
    }

    #[test]
    fn peers_follow_their_rules() {
        // A deterministic bug: every peer names the culprit in log2 N steps.
        let mut rng = SmallRng::seed_from_u64(1);
        for method in [Method::GitBisect, Method::Ktest, Method::Syzbot] {
            let mut h = SimulatedHistory {
                culprit: 37,
                p: 1.0,
                fp: 0.0,
                rng: &mut rng,
            };
            let r = run_peer(method, &mut h, 64, 5, (0.95, 1000));
            assert_eq!(r.named, 37, "{method:?}");
            assert_eq!(r.builds, 6);
        }
        // git bisect runs once per step; syzbot 10 per commit while nothing is flaky.
        let mut h = SimulatedHistory {
            culprit: 37,
            p: 1.0,
            fp: 0.0,
            rng: &mut rng,
        };
        assert_eq!(
            run_peer(Method::GitBisect, &mut h, 64, 5, (0.95, 1000)).iterations,
            6
        );
        assert_eq!(
            run_peer(Method::Syzbot, &mut h, 64, 5, (0.95, 1000)).iterations,
            60
        );
        // ktest: 5 tries on good commits, 1 on bad ones.
        let r = run_peer(Method::Ktest, &mut h, 64, 5, (0.95, 1000));
        assert!(r.iterations > 6 && r.iterations < 30);
        // git-bayesect: one run per step until one position holds 0.95, at most the budget.
        let r = run_peer(Method::Bayesect, &mut h, 64, 5, (0.95, 1000));
        assert_eq!(r.named, 37);
        assert!(
            r.iterations >= 6 && r.builds <= r.iterations,
            "{}",
            r.iterations
        );
        let r = run_peer(Method::Bayesect, &mut h, 64, 5, (0.95, 3));
        assert_eq!(r.iterations, 3, "the budget stops it");
    }

    #[test]
    fn case_parsing() {
        assert_eq!(parse_case("0.3:0.05"), Ok((0.3, 0.05)));
        assert!(parse_case("0.3").is_err());
        assert!(parse_case("0.1:0.3").is_err());
        assert!(parse_case("2:0").is_err());
    }

    #[test]
    fn small_benchmark_runs_every_method_on_every_case() {
        let params = SimParams {
            commits: 16,
            runs: 4,
            cases: vec![(0.5, 0.0), (0.6, 0.1)],
            ..SimParams::default()
        };
        let s = simulate(&params).unwrap();
        assert_eq!(s.cases.len(), 2);
        for case in &s.cases {
            assert_eq!(case.methods.len(), 6);
            // log2 16 = 4 bits at under a bit per iteration: more than 4 iterations.
            assert!(case.search_bound > 4.0, "{case:?}");
            assert!(
                case.capacity_bits > 0.0 && case.capacity_bits <= 1.0,
                "{case:?}"
            );
            for m in &case.methods {
                assert!(m.mean_iterations > 0.0 && m.mean_builds > 0.0, "{m:?}");
            }
        }
        let mut text = Vec::new();
        print_summary(&s, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("ktest BISECT_TRIES=10"), "{text}");
        assert!(text.contains("git-bayesect 1.2"), "{text}");
        assert!(text.contains("crashrig, told the rates"), "{text}");
        assert!(
            text.contains("bound: a search that names the culprit reliably needs at least"),
            "{text}"
        );
        assert!(!text.contains("Some("), "{text}");
    }

    #[test]
    fn ranges_without_a_change_are_counted_alone_and_rates_are_bounded() {
        assert_eq!(parse_no_change("0.3"), Ok(0.3));
        for bad in ["0", "1", "-0.1", "x"] {
            assert!(parse_no_change(bad).is_err(), "{bad}");
        }
        let params = SimParams {
            commits: 16,
            runs: 20,
            max_iterations: 200,
            no_change: vec![0.3],
            ..SimParams::default()
        };
        let s = simulate(&params).unwrap();
        assert!(s.cases.is_empty(), "--no-change alone runs no case");
        let [n] = s.no_change.as_slice() else {
            panic!("one rate, one summary")
        };
        assert_eq!((n.rate, n.runs), (0.3, 20));
        assert!(n.searched >= n.ranges + n.culprits, "{n:?}");
        assert!(n.ranges_confirmed <= n.ranges.min(n.confirmed), "{n:?}");
        assert!(n.searched > 0, "some lucky ends start a search: {n:?}");
        assert!(
            n.mean_iterations > 0.0 && n.mean_iterations <= 200.0,
            "{n:?}"
        );
        let mut out = Vec::new();
        print_summary(&s, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("no change, every candidate fails at 0.3"),
            "{text}"
        );
    }
}
