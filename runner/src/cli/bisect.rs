//! `crashrig bisect`: the commit or patch that changed a scenario's outcome.

use std::path::PathBuf;

use clap::Args;

use super::common::CommonVmArgs;
use super::CliError;
use crate::run::bisect_run::{bisect as run_bisect, BisectOptions};

#[derive(Args, Debug)]
pub struct BisectArgs {
    /// The scenario whose outcome changed.
    #[arg(value_name = "SCENARIO.yaml")]
    pub scenario: PathBuf,
    /// Range form: the good end, `PATH@REF` of a kernel git tree.
    #[arg(long, value_name = "PATH@REF", requires = "bad")]
    pub good: Option<String>,
    /// Range form: the bad end, `PATH@REF` (same tree).
    #[arg(long, value_name = "PATH@REF", requires = "good")]
    pub bad: Option<String>,
    /// Patch form: the series to bisect (mbox, quilt series, directory or one patch), applied
    /// on the `--kernel` base; the base alone is good, base plus the whole series bad.
    #[arg(long, value_name = "SERIES", conflicts_with_all = ["good", "bad"])]
    pub patches: Vec<PathBuf>,
    /// Patch form: patches applied on the `--kernel` base under every candidate (the good end
    /// included), before the series.
    #[arg(long, value_name = "PATCHES", requires = "patches")]
    pub base_patches: Vec<PathBuf>,
    /// Kernel config fragments for every build (besides `base` and the scenario's).
    #[arg(long, value_name = "FRAGMENT")]
    pub kconfig: Vec<String>,
    /// Find the fix instead: the old end is bad, the new end good.
    #[arg(long)]
    pub fix: bool,
    /// The outcome to look for, `STEP-ID:ERRNO` (e.g. `umount:EBUSY`), or `STEP-ID` for any
    /// violated expectation of that step. Default: the first violation the bad end shows.
    #[arg(long, value_name = "STEP:ERRNO")]
    pub target: Option<String>,
    /// Most iterations in one batch. Default: 32.
    #[arg(long, short = 'n', value_parser = super::common::iterations_parser())]
    pub iterations: Option<u32>,
    /// Stop when one candidate holds this posterior probability (0.5 or more, below 1).
    #[arg(long, default_value_t = 0.95, value_parser = parse_confidence)]
    pub confidence: f64,
    /// Budget of search iterations. Default: 1000.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub max_iterations: Option<u64>,
    /// A guess of how often a kernel before the change shows the target (0 to 1), used as a
    /// prior worth 20 iterations; the rate is still learnt from the runs. Default: none, a
    /// weak prior (both rates are learnt).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub false_positive_rate: Option<f64>,
    /// Continue the bisection journaled in --out.
    #[arg(long)]
    pub resume: bool,
    /// Search the scenario's declared parameters on the bad end (with --fix, the older end)
    /// first, with this budget of iterations (default 300), then bisect with the winning
    /// setting when it was shown to beat the default (Fisher p < 0.05), else with the
    /// default; the report says what was chosen and why.
    #[arg(long, value_name = "BUDGET", num_args = 0..=1, default_missing_value = "300",
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub amplify: Option<u64>,
    #[command(flatten)]
    pub vm: CommonVmArgs,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| format!("`{s}`: expected a rate from 0 to 1"))
}

/// The search's domain for `--confidence` (`Config::validate`): 0.5 <= c < 1.
fn parse_confidence(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|c| (0.5..1.0).contains(c))
        .ok_or_else(|| format!("`{s}`: expected 0.5 <= confidence < 1"))
}

pub async fn bisect(args: BisectArgs) -> Result<i32, CliError> {
    Ok(run_bisect(BisectOptions {
        scenario: args.scenario,
        good: args.good,
        bad: args.bad,
        patches: args.patches,
        base_patches: args.base_patches,
        kconfig: args.kconfig,
        fix: args.fix,
        target: args.target,
        iterations: args.iterations,
        confidence: args.confidence,
        max_iterations: args.max_iterations,
        false_positive_rate: args.false_positive_rate,
        resume: args.resume,
        amplify: args.amplify,
        vm: args.vm.options(),
    })
    .await?)
}
