//! `crashrig amplify`: the scenario setting under which the target shows most often.

use std::path::PathBuf;

use clap::Args;

use super::common::{BuildOpts, CommonVmArgs};
use super::CliError;
use crate::run::amplify_run::{amplify as run_amplify, report_text, AmplifyOptions};

#[derive(Args, Debug)]
pub struct AmplifyArgs {
    /// The scenario; its `parameters:` with `values:` are the space searched.
    #[arg(value_name = "SCENARIO.yaml")]
    pub scenario: PathBuf,
    #[command(flatten)]
    pub search: SearchArgs,
}

/// The search's options (shared with `bench amplify`).
#[derive(Args, Debug)]
pub struct SearchArgs {
    /// A second kernel: search for the setting where the two kernels' rates differ most
    /// (what a bisection between them needs).
    #[arg(long, value_name = "SPEC")]
    pub against: Option<String>,
    /// Most iterations of the search, every kernel together.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub budget: u64,
    /// Iterations per step (settings of the same VM shape share one booted VM per kernel).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch: u32,
    /// The outcome to amplify, `STEP-ID:ERRNO` (e.g. `umount:EBUSY`) or `STEP-ID`. Default:
    /// the first violated expectation seen.
    #[arg(long, value_name = "STEP:ERRNO")]
    pub target: Option<String>,
    /// Stop early when the leader is the best with this posterior probability.
    #[arg(long, default_value_t = 0.95, value_parser = parse_confidence)]
    pub confidence: f64,
    /// Seed of the search's sampling (default: random; recorded in amplify.json).
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub vm: CommonVmArgs,
    #[command(flatten)]
    pub build: BuildOpts,
}

fn parse_confidence(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(c) if c > 0.5 && c < 1.0 => Ok(c),
        _ => Err(format!("`{s}` is not a probability between 0.5 and 1")),
    }
}

impl SearchArgs {
    pub fn options(&self, scenario: PathBuf) -> AmplifyOptions {
        AmplifyOptions {
            scenario,
            against: self.against.clone(),
            target: self.target.clone(),
            budget: self.budget,
            batch: self.batch,
            confidence: self.confidence,
            seed: self.seed,
            vm: self.vm.options(),
            build: self.build.request(),
        }
    }
}

pub async fn amplify(args: AmplifyArgs) -> Result<i32, CliError> {
    let outcome = run_amplify(args.search.options(args.scenario)).await?;
    out!("{}", report_text(&outcome));
    Ok(crate::exit::OK)
}
