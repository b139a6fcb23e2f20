//! `crashrig bench`: benchmarks that print figures against a baseline measured in the same
//! run.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::common::AccelArg;
use super::CliError;
use crate::amplify::SimParams as AmplifySimParams;
use crate::bisect::SimParams;
use crate::matrix::sim::SimParams as BaselineSim;
use crate::run::bench::{boot_bench, BootBenchOptions};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Bare boot (busybox init that powers off at once) vs crashrig's start to first SSH
    /// command vs a restore of a saved guest to its first command over the agent channel, and
    /// the same restore with its first command over a new SSH connection (each with where its
    /// time went: QEMU's start, the state load, the SSH connection, the first command), the
    /// save (device state, and the RAM image as a sparse file as for the cache), and
    /// per-iteration overhead vs the same loop as a shell script in the guest.
    Boot(BenchBootArgs),
    /// A crash scenario (default: tests/crash/power-cut-xfs.yaml) run by this crashrig with
    /// `--restore never` (boots; iterations reuse the guest) and then `--restore auto`
    /// (restored guests), same seed, each once with 1 iteration to fill the cache, then with
    /// 1 iteration and with `-n` (at least 2): wall time per iteration in steady state (the
    /// difference of the last two over the extra iterations) of each, side by side, and
    /// where an iteration's time went.
    Restore(BenchRestoreArgs),
    /// Bisection on simulated histories whose good side may fail too (the engine is not told
    /// the rates): accuracy, calibration, iterations, builds, boots and cost of crashrig beside
    /// git bisect (one run per step), ktest.pl (BISECT_TRIES), syzbot's rule and git-bayesect
    /// 1.2's rule, and beside the same engine told both rates, on the same histories; with the
    /// fewest iterations any search needs on average. No VM.
    Bisect(BenchBisectArgs),
    /// The baseline check on simulated matrices: how often a matrix where nothing changed
    /// shows a regression, and how often one cell's real rise is found, by crashrig's rule
    /// (Holm over the cells whose counts could be significant: Tarone-Holm) beside plain Holm
    /// and each cell tested alone, on the same counts. No VM.
    Baseline(BenchBaselineArgs),
    /// The same matrix run sequentially (-j 1) and in parallel (-j N), --rounds times each in
    /// mirrored pairs: every wall time with the host's load at its start, the means and the
    /// speed-up.
    Matrix(BenchMatrixArgs),
    /// The amplification search against simulated spaces with known rates, next to uniform
    /// allocation at the same budgets: how often each finds a setting within the tolerance
    /// of the best, iterations spent, regret. No VM.
    AmplifySim(BenchAmplifySimArgs),
    /// The amplification search on a real kernel (default: the seed scenario on debian:6.1),
    /// then fresh iterations of the default and of the winner: both rates with intervals,
    /// Fisher p, and the expected bisection cost at each rate (bisection simulator).
    Amplify(Box<BenchAmplifyArgs>),
}

#[derive(Args, Debug)]
pub struct BenchBootArgs {
    #[arg(long = "kernel", value_name = "SPEC", default_value = "debian:6.1")]
    pub kernel: String,
    /// Repetitions of each measurement (the median is printed).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelArg,
}

/// The parameters of [`SimParams`]; its defaults are the benchmark.
#[derive(Args, Debug, Clone)]
pub struct BenchBisectArgs {
    /// Commits after the known-good one, N: candidates 0..=N, 0 good, N bad
    #[arg(long, default_value_t = SimParams::default().commits,
          value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub commits: u16,
    /// A case, `P_BAD:P_GOOD` (the rate after and before the change); repeatable.
    /// Default: 0.3:0, 0.3:0.05, 0.4:0.1, 0.1:0, 0.5:0.2
    #[arg(long = "case", value_name = "P_BAD:P_GOOD", value_parser = crate::bisect::parse_case)]
    pub cases: Vec<(f64, f64)>,
    /// Simulated bisections per case and method
    #[arg(long, default_value_t = SimParams::default().runs,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub runs: u32,
    /// Seed of the random histories
    #[arg(long, default_value_t = SimParams::default().seed)]
    pub seed: u64,
    /// Target confidence of crashrig
    #[arg(long, default_value_t = SimParams::default().confidence, value_parser = parse_confidence)]
    pub confidence: f64,
    /// Cost of a build in iterations, in the cost column and crashrig's cost model
    #[arg(long, default_value_t = SimParams::default().build_cost, value_parser = parse_cost)]
    pub build_cost: f64,
    /// Cost of a boot in iterations, in crashrig's cost model (the cost column leaves boots
    /// out; the boots column counts them)
    #[arg(long, default_value_t = SimParams::default().boot_cost, value_parser = parse_cost)]
    pub boot_cost: f64,
    /// Iteration budget of each crashrig bisection (ends and search), and of each git-bayesect one
    #[arg(long, default_value_t = SimParams::default().max_iterations,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_iterations: u64,
    /// Tell crashrig both true rates instead of letting it learn them
    #[arg(long)]
    pub tell_rates: bool,
    /// Largest batch crashrig asks for
    #[arg(long, default_value_t = SimParams::default().max_batch,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_batch: u32,
    /// ktest.pl's BISECT_TRIES: runs per commit, bad at the first failure
    #[arg(long, default_value_t = SimParams::default().ktest_tries,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub ktest_tries: u32,
    /// Only crashrig: no peers, no told-rates reference
    #[arg(long)]
    pub no_peers: bool,
    /// Also ranges where nothing changed, every candidate failing at RATE (0 < RATE < 1);
    /// repeatable: how often crashrig starts a search, confirms the ends, names a culprit or a
    /// range. Without --case, only these run
    #[arg(long, value_name = "RATE", value_parser = crate::bisect::parse_no_change)]
    pub no_change: Vec<f64>,
}

impl BenchBisectArgs {
    pub fn params(&self) -> SimParams {
        SimParams {
            commits: self.commits,
            cases: self.cases.clone(),
            runs: self.runs,
            seed: self.seed,
            confidence: self.confidence,
            build_cost: self.build_cost,
            boot_cost: self.boot_cost,
            max_iterations: self.max_iterations,
            tell_rates: self.tell_rates,
            max_batch: self.max_batch,
            ktest_tries: self.ktest_tries,
            no_peers: self.no_peers,
            no_change: self.no_change.clone(),
        }
    }
}

/// The parameters of [`crate::matrix::sim::SimParams`].
#[derive(Args, Debug, Clone)]
pub struct BenchBaselineArgs {
    /// Matrix sizes (cells), a row each; repeatable. Default: 1, 5, 10, 20, 40
    #[arg(long = "cells", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub cells: Vec<u32>,
    /// Every cell's failure rate, in the baseline and now
    #[arg(long, default_value_t = BaselineSim::default().rate, value_parser = parse_rate)]
    pub rate: f64,
    /// The one rising cell's rate now
    #[arg(long, default_value_t = BaselineSim::default().rise_to, value_parser = parse_rate)]
    pub rise_to: f64,
    /// Iterations per cell, in the baseline and now
    #[arg(long, default_value_t = BaselineSim::default().iterations,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub iterations: u32,
    /// Simulated matrices per figure
    #[arg(long, default_value_t = BaselineSim::default().runs,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub runs: u32,
    /// Seed of the simulated counts
    #[arg(long, default_value_t = BaselineSim::default().seed)]
    pub seed: u64,
}

/// The parameters of [`crate::amplify::SimParams`].
#[derive(Args, Debug, Clone)]
pub struct BenchAmplifySimArgs {
    /// Values per knob of the simulated spaces, comma-separated (the seed scenario's shape
    /// is 4,3,3,3,2,4: 864 settings)
    #[arg(long, value_delimiter = ',', default_value = "3,4,2")]
    pub shape: Vec<usize>,
    /// Simulated spaces per budget
    #[arg(long, default_value_t = AmplifySimParams::default().runs, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub runs: u32,
    /// Budgets to compare (iterations), comma-separated
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "150,300,600,1200,2400,4800",
        value_parser = clap::value_parser!(u64).range(1..=10_000_000)
    )]
    pub budgets: Vec<u64>,
    /// A setting within this of the best rate counts as found
    #[arg(long, default_value_t = AmplifySimParams::default().tolerance, value_parser = parse_tolerance)]
    pub tolerance: f64,
    /// Iterations per search step
    #[arg(long, default_value_t = AmplifySimParams::default().batch, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch: u32,
    /// Seed of the simulated spaces
    #[arg(long, default_value_t = AmplifySimParams::default().seed)]
    pub seed: u64,
}

#[derive(Args, Debug)]
pub struct BenchAmplifyArgs {
    /// Default: tests/seed-kill-umount.yaml of this crashrig.
    #[arg(value_name = "SCENARIO.yaml")]
    pub scenario: Option<PathBuf>,
    /// Fresh iterations of the default and of the winner after the search.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(60..=10_000))]
    pub confirm: u32,
    /// Simulated bisections per rate.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub bisect_runs: u32,
    /// Start the search from this value of a parameter instead of its default, and compare
    /// the winner against that setting (repeatable): measures a scenario whose defaults are
    /// already amplified against the setting it was amplified from.
    #[arg(long, value_name = "NAME=VALUE", value_parser = super::common::parse_param)]
    pub baseline: Vec<(String, String)>,
    #[command(flatten)]
    pub search: super::amplify::SearchArgs,
}

#[derive(Args, Debug)]
pub struct BenchRestoreArgs {
    /// Default: tests/crash/power-cut-xfs.yaml of this crashrig.
    #[arg(value_name = "SCENARIO.yaml")]
    pub scenario: Option<PathBuf>,
    /// Iterations of each run.
    #[arg(long, short = 'n', default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub iterations: u32,
    #[arg(long = "kernel", value_name = "SPEC", default_value = "debian:6.1")]
    pub kernel: String,
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelArg,
}

#[derive(Args, Debug)]
pub struct BenchMatrixArgs {
    /// Default: tests/matrix/small.yaml of this crashrig.
    #[arg(value_name = "MATRIX.yaml")]
    pub matrix: Option<PathBuf>,
    /// Iterations per cell.
    #[arg(long, short = 'n', default_value_t = 2, value_parser = super::common::iterations_parser())]
    pub iterations: u32,
    /// Parallel VMs of the second run.
    #[arg(short = 'j', long, default_value_t = 2, value_parser = super::common::jobs_parser())]
    pub jobs: usize,
    /// Runs of each: in the order -j 1, -j N, -j N, -j 1, ... (each pair mirrors the one
    /// before, so a host getting busier or quieter during the bench weighs on both alike);
    /// the mean of each is compared.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelArg,
}

pub async fn bench(command: BenchCommand) -> Result<i32, CliError> {
    match command {
        BenchCommand::Boot(args) => boot(args).await,
        BenchCommand::Bisect(args) => {
            let summary = crate::bisect::simulate(&args.params())?;
            crate::bisect::print_summary(&summary, &mut std::io::stdout())
                .map_err(|source| CliError::Stdout { source })?;
            Ok(crate::exit::OK)
        }
        BenchCommand::Baseline(args) => {
            let p = BaselineSim {
                cells: if args.cells.is_empty() {
                    BaselineSim::default().cells
                } else {
                    args.cells.iter().map(|&n| n as usize).collect()
                },
                rate: args.rate,
                rise_to: args.rise_to,
                iterations: args.iterations,
                runs: args.runs,
                seed: args.seed,
            };
            let rows = crate::matrix::sim::simulate(&p);
            crate::matrix::sim::print_summary(&p, &rows, &mut std::io::stdout())
                .map_err(|source| CliError::Stdout { source })?;
            Ok(crate::exit::OK)
        }
        BenchCommand::Matrix(args) => matrix(args).await,
        BenchCommand::Restore(args) => restore(args).await,
        BenchCommand::AmplifySim(args) => {
            let summary = crate::amplify::simulate(&AmplifySimParams {
                shape: args.shape,
                runs: args.runs,
                budgets: args.budgets,
                tolerance: args.tolerance,
                batch: args.batch,
                seed: args.seed,
            })
            .map_err(crate::run::amplify_run::AmplifyRunError::from)?;
            crate::amplify::print_summary(&summary, &mut std::io::stdout())
                .map_err(|source| CliError::Stdout { source })?;
            Ok(crate::exit::OK)
        }
        BenchCommand::Amplify(args) => {
            let scenario = args.scenario.unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/seed-kill-umount.yaml")
            });
            let mut search = args.search.options(scenario);
            if search.target.is_none() {
                search.target = Some("umount:EBUSY".into());
            }
            let figures = crate::run::amplify_run::bench(crate::run::amplify_run::BenchOptions {
                search,
                confirm: args.confirm,
                bisect_runs: args.bisect_runs,
                baseline: crate::run::session::setting_of(&args.baseline)?,
            })
            .await?;
            out!("{}", crate::run::amplify_run::bench_text(&figures));
            Ok(crate::exit::OK)
        }
    }
}

async fn boot(args: BenchBootArgs) -> Result<i32, CliError> {
    boot_bench(BootBenchOptions {
        kernel: args.kernel,
        repeat: args.repeat,
        accel: args.accel.into(),
    })
    .await?;
    Ok(crate::exit::OK)
}

/// Runs this crashrig's own `run` command without and with restores, so both runs are what
/// users run. Each mode runs one iteration to fill the cache, then one iteration and `-n`
/// from the same cache: the difference of the last two wall times over the extra iterations
/// is what an iteration costs in steady state, teardown and disk overlays between iterations
/// included, with the fixed costs (the first boot or restore, setup) of neither run in it.
async fn restore(args: BenchRestoreArgs) -> Result<i32, CliError> {
    let scenario = args.scenario.unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/crash/power-cut-xfs.yaml")
    });
    let (exe, tmp) = self_and_scratch()?;
    let n = args.iterations.max(2);
    outln!(
        "{} on {}, {n} iterations per run after a 1-iteration run (both after one that fills \
         the cache), same seed:",
        scenario.display(),
        args.kernel,
    );
    let mut per_iteration = Vec::new();
    // Runs in which an iteration did not pass: their results stay for a look.
    let mut not_passed = Vec::new();
    for restore in ["never", "auto"] {
        let mut walls = Vec::new();
        let mut last = None;
        // The first run only fills the cache (the booted and the set-up guest): without it
        // the 1-iteration run would pay for setup and saves that the n-iteration run after it
        // finds in the cache, and the difference would come out far too small.
        for (runs, iterations) in [("cache", 1), ("warm-up", 1), ("measured", n)] {
            let out = tmp.path().join(format!("{restore}-{runs}"));
            let start = std::time::Instant::now();
            let mut cmd = crate::process::tokio_command(&exe);
            cmd.arg("run")
                .arg(&scenario)
                .args(["-n", &iterations.to_string(), "--seed", "1"])
                .args(["--kernel", &args.kernel, "--accel", accel_name(args.accel)])
                .args(["--restore", restore, "--out"])
                .arg(&out);
            let status = quiet_status(cmd, "run crashrig run").await?;
            walls.push(start.elapsed().as_secs_f64());
            let results = crate::report::store::read_results(&out.join("results.json")).ok();
            let Some(run) = results.and_then(|r| r.runs.into_iter().next()) else {
                return Err(CliError::BenchRestore {
                    restore,
                    status: status.to_string(),
                });
            };
            if run.summary.passed < run.summary.iterations {
                not_passed.push(out.clone());
            }
            last = Some(run);
        }
        let run = last.expect("the measured run");
        let steady = (walls[2] - walls[1]) / f64::from(n - 1);
        // An iteration's own time (its reboots included) and the restore it started from.
        let ms: f64 = run.iterations.iter().map(|i| i.duration_ms).sum::<f64>()
            + run
                .boots
                .iter()
                .filter(|b| b.reason == "iteration")
                .map(|b| b.ready_after_ms as f64)
                .sum::<f64>();
        let count = run.iterations.len().max(1) as f64;
        let restores = run.boots.iter().filter(|b| b.restored.is_some()).count();
        outln!(
            "  --restore {restore:<6} {steady:.2} s per iteration (wall, steady state: {n} iterations {:.1} s - 1 iteration {:.1} s); its own time {:.2} s; {} boots, {restores} restores; {} passed of {}",
            walls[2],
            walls[1],
            ms / count / 1000.0,
            run.boots.len() - restores,
            run.summary.passed,
            run.iterations.len()
        );
        outln!("{}", iteration_breakdown(&run));
        per_iteration.push((steady, ms / count));
    }
    let ((never_wall, never_own), (auto_wall, auto_own)) = (per_iteration[0], per_iteration[1]);
    outln!(
        "  speed-up per iteration: {:.2}x by each iteration's own time, {:.2}x by steady-state \
         wall time (goal >= 3x; the second moves with host load between the runs)",
        never_own / auto_own,
        never_wall / auto_wall
    );
    if !not_passed.is_empty() {
        let kept = tmp.keep();
        outln!(
            "  not every iteration passed (the figures include it); results kept in {}: {}",
            kept.display(),
            not_passed
                .iter()
                .filter_map(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(crate::exit::OK)
}

/// Where an iteration's time went, averaged over the run: the restore it started from, each
/// step (a power cut's includes the start of the guest after it, shown apart), and what is
/// outside the steps (the plans' round trips, reading dmesg).
fn iteration_breakdown(run: &crate::report::RunRecord) -> String {
    let n = run.iterations.len().max(1) as f64;
    // `+ 0.0`: an empty sum is -0.0, printed "-0.00".
    let secs = |ms: f64| format!("{:.2}", ms / n / 1000.0 + 0.0);
    let ready = |reason: &str| -> f64 {
        run.boots
            .iter()
            .filter(|b| b.reason == reason)
            .map(|b| b.ready_after_ms as f64)
            .sum()
    };
    let mut steps: Vec<(String, f64)> = Vec::new();
    for st in run.iterations.iter().flat_map(|i| &i.steps) {
        match steps.iter_mut().find(|(id, _)| *id == st.id) {
            Some((_, ms)) => *ms += st.duration_ms,
            None => steps.push((st.id.clone(), st.duration_ms)),
        }
    }
    let in_steps: f64 = steps.iter().map(|(_, ms)| ms).sum();
    let total: f64 = run.iterations.iter().map(|i| i.duration_ms).sum();
    let mut parts = vec![format!("start (restore) {}", secs(ready("iteration")))];
    parts.extend(steps.iter().map(|(id, ms)| format!("{id} {}", secs(*ms))));
    parts.push(format!("outside steps {}", secs(total - in_steps)));
    format!(
        "      s per iteration: {}; of the crash steps, guest start after the crash {}",
        parts.join(", "),
        secs(ready("power-cut") + ready("panic") + ready("reboot"))
    )
}

/// This crashrig's executable, and a temporary directory for the results of the runs a
/// benchmark makes with it.
fn self_and_scratch() -> Result<(PathBuf, tempfile::TempDir), CliError> {
    let exe = std::env::current_exe().map_err(|source| CliError::Io {
        what: "find crashrig itself",
        source,
    })?;
    let tmp = tempfile::tempdir().map_err(|source| CliError::Io {
        what: "create a temporary directory",
        source,
    })?;
    Ok((exe, tmp))
}

/// Runs a child crashrig of a benchmark with its output discarded (the benchmark reads its
/// results.json); it dies with the benchmark.
async fn quiet_status(
    mut cmd: tokio::process::Command,
    what: &'static str,
) -> Result<std::process::ExitStatus, CliError> {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    crate::process::spawn(&mut cmd)
        .map_err(|source| CliError::Io { what, source })?
        .wait()
        .await
        .map_err(|source| CliError::Io { what, source })
}

fn accel_name(a: AccelArg) -> &'static str {
    match a {
        AccelArg::Auto => "auto",
        AccelArg::Kvm => "kvm",
        AccelArg::Tcg => "tcg",
    }
}

/// Runs this crashrig's own `matrix` command twice, so both runs are exactly what users run.
async fn matrix(args: BenchMatrixArgs) -> Result<i32, CliError> {
    let matrix = args.matrix.unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/matrix/small.yaml")
    });
    let (exe, tmp) = self_and_scratch()?;
    let accel = accel_name(args.accel);
    let mut times: Vec<(usize, f64, Option<f64>)> = Vec::new();
    for (n, jobs) in abba_order(1, args.jobs, args.rounds)
        .into_iter()
        .enumerate()
    {
        let out = tmp.path().join(format!("{n}-j{jobs}"));
        let load = crate::host::load_average();
        let start = std::time::Instant::now();
        let mut cmd = crate::process::tokio_command(&exe);
        cmd.arg("matrix")
            .arg(&matrix)
            .args([
                "-n",
                &args.iterations.to_string(),
                "-j",
                &jobs.to_string(),
                "--accel",
                accel,
                "--out",
            ])
            .arg(&out);
        let status = quiet_status(cmd, "run crashrig matrix").await?;
        if !status.success() {
            return Err(CliError::BenchMatrix {
                jobs,
                status: status.to_string(),
            });
        }
        times.push((jobs, start.elapsed().as_secs_f64(), load));
    }
    outln!(
        "matrix {} with {} iterations per cell, {}:",
        matrix.display(),
        args.iterations,
        crate::report::plural(u64::from(args.rounds), "round")
    );
    outln!("{}", matrix_bench_text(&times, args.jobs));
    Ok(crate::exit::OK)
}

/// `rounds` runs each of `a` and `b`, every pair mirroring the one before: a, b, b, a, a, b...
fn abba_order<T: Copy>(a: T, b: T, rounds: u32) -> Vec<T> {
    (0..rounds)
        .flat_map(|r| if r % 2 == 0 { [a, b] } else { [b, a] })
        .collect()
}

/// Each run in the order it ran (with the host's load when it started), then the mean of
/// each `-j` and the speed-up of `-j jobs` over `-j 1`.
fn matrix_bench_text(times: &[(usize, f64, Option<f64>)], jobs: usize) -> String {
    let mut out = String::new();
    for (j, t, load) in times {
        let load = load.map_or("unknown".to_string(), |l| format!("{l:.1}"));
        out.push_str(&format!(
            "  -j {j}: {t:.1} s (host load at its start {load})\n"
        ));
    }
    let mean = |j: usize| {
        let ts: Vec<f64> = times.iter().filter(|r| r.0 == j).map(|r| r.1).collect();
        ts.iter().sum::<f64>() / ts.len().max(1) as f64
    };
    let (one, many) = (mean(1), mean(jobs));
    out.push_str(&format!(
        "  mean: -j 1 {one:.1} s, -j {jobs} {many:.1} s; speed-up {:.2}x",
        one / many
    ));
    out
}

/// `bench bisect --confidence`: 0.5 <= c < 1.
fn parse_confidence(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|c| (0.5..1.0).contains(c))
        .ok_or_else(|| format!("`{s}`: expected 0.5 <= confidence < 1"))
}

/// `--build-cost`, `--boot-cost`: iterations, 0 to 1e6.
fn parse_cost(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|c| (0.0..=1e6).contains(c))
        .ok_or_else(|| format!("`{s}`: expected a cost in iterations from 0 to 1000000"))
}

/// `bench baseline --rate`, `--rise-to`: a failure rate, 0 to 1.
fn parse_rate(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| format!("`{s}`: expected a failure rate from 0 to 1 (0.25 is 25%)"))
}

/// `bench amplify-sim --tolerance`: a difference of rates, 0 to 1.
fn parse_tolerance(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|t| (0.0..=1.0).contains(t))
        .ok_or_else(|| format!("`{s}`: expected a tolerance from 0 to 1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pair_of_runs_mirrors_the_one_before() {
        assert_eq!(abba_order(1, 2, 1), [1, 2]);
        assert_eq!(abba_order(1, 2, 2), [1, 2, 2, 1]);
        assert_eq!(abba_order(1, 4, 3), [1, 4, 4, 1, 1, 4]);
    }

    #[test]
    fn the_matrix_bench_compares_the_means_and_shows_each_run() {
        let times = [
            (1, 30.0, Some(0.5)),
            (2, 20.0, Some(1.25)),
            (2, 16.0, None),
            (1, 34.0, Some(2.0)),
        ];
        assert_eq!(
            matrix_bench_text(&times, 2),
            "  -j 1: 30.0 s (host load at its start 0.5)\n\
             \x20 -j 2: 20.0 s (host load at its start 1.2)\n\
             \x20 -j 2: 16.0 s (host load at its start unknown)\n\
             \x20 -j 1: 34.0 s (host load at its start 2.0)\n\
             \x20 mean: -j 1 32.0 s, -j 2 18.0 s; speed-up 1.78x"
        );
    }
}
