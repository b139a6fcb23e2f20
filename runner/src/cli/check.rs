//! `crashrig check`: one verdict for `git bisect run` (0 good, 1 bad, 125 cannot test).

use std::path::PathBuf;

use clap::Args;

use super::common::CommonVmArgs;
use crate::bisect::{check_exit_code, BatchOutcome};
use crate::run::bisect_run::{check as run_check, CheckOptions};

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[arg(value_name = "SCENARIO.yaml")]
    pub scenario: PathBuf,
    /// Kernel config fragments (built kernels).
    #[arg(long, value_name = "FRAGMENT")]
    pub kconfig: Vec<String>,
    /// Patches on top of the kernel (built kernels).
    #[arg(long, value_name = "PATCHES")]
    pub patches: Vec<PathBuf>,
    /// Iterations (default: the scenario's).
    #[arg(long, short = 'n', value_parser = super::common::iterations_parser())]
    pub iterations: Option<u32>,
    #[command(flatten)]
    pub vm: CommonVmArgs,
}

/// Every failure is "cannot test" (125): git bisect run stops on exit codes above 127.
pub async fn check(args: CheckArgs) -> i32 {
    let outcome = run_check(CheckOptions {
        scenario: args.scenario,
        kconfig: args.kconfig,
        patches: args.patches,
        iterations: args.iterations,
        vm: args.vm.options(),
    })
    .await;
    if let BatchOutcome::Unknown { reason } = &outcome {
        eprintln!("crashrig: cannot test: {reason}");
    }
    check_exit_code(&outcome)
}
