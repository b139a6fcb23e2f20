//! `crashrig matrix`: kernels x scenarios x parameters (see docs/matrix.md).

use std::path::PathBuf;

use clap::Args;

use super::common::CommonVmArgs;
use super::CliError;
use crate::matrix::{parse_partition, Partition};
use crate::run::matrix_run::{matrix as run_matrix, AfterInterrupt, MatrixOptions};

#[derive(Args, Debug, Clone)]
// A matrix names its kernels in the matrix file: --kernel (of the common options) is refused,
// so --help does not offer it.
#[command(mut_arg("kernels", |a| a.hide(true)))]
pub struct MatrixArgs {
    /// The matrix file (YAML): kernels x scenarios x parameters.
    #[arg(value_name = "MATRIX.yaml")]
    pub matrix: PathBuf,
    /// Run only shard M of N: cell i (in expansion order) belongs to shard i % N + 1.
    #[arg(long, value_name = "M/N", value_parser = parse_partition)]
    pub partition: Option<Partition>,
    /// VMs at once. Default: at most one per core, and as many as memory holds (guest
    /// memory + 512 MiB each).
    #[arg(short = 'j', long, value_name = "N", value_parser = super::common::jobs_parser())]
    pub jobs: Option<usize>,
    /// Iterations per cell (overrides the matrix's and the scenarios' `iterations`).
    #[arg(long, short = 'n', value_parser = super::common::iterations_parser())]
    pub iterations: Option<u32>,
    /// Skip cells that already finished in --out (a killed run loses no finished cell).
    #[arg(long)]
    pub resume: bool,
    /// Known results to check against (default: the matrix's `baseline`); with a baseline,
    /// only regressions fail the run.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Write a baseline of this run's results to FILE.
    #[arg(long, value_name = "FILE")]
    pub write_baseline: Option<PathBuf>,
    #[command(flatten)]
    pub vm: CommonVmArgs,
}

pub async fn matrix(args: MatrixArgs, after_interrupt: AfterInterrupt) -> Result<i32, CliError> {
    let vm = args.vm.options();
    Ok(run_matrix(
        MatrixOptions {
            matrix: args.matrix,
            partition: args.partition,
            jobs: args.jobs,
            iterations: args.iterations,
            resume: args.resume,
            baseline: args.baseline,
            write_baseline: args.write_baseline,
            after_interrupt,
        },
        vm,
    )
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        matrix: MatrixArgs,
    }

    #[test]
    fn parses_partition_flag() {
        let cli =
            Cli::try_parse_from(["crashrig", "m.yaml", "--partition", "2/3", "-j", "2"]).unwrap();
        assert_eq!(cli.matrix.partition, Some(Partition { index: 2, count: 3 }));
        assert_eq!(cli.matrix.jobs, Some(2));
        let err = Cli::try_parse_from(["crashrig", "m.yaml", "--partition", "4/3"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("use partition `4/3`: M must be between 1 and N (3)"),
            "{err}"
        );
    }

    #[test]
    fn jobs_and_iterations_are_bounded() {
        let err = |args: &[&str]| {
            let mut argv = vec!["crashrig", "m.yaml"];
            argv.extend(args);
            Cli::try_parse_from(argv)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        for (args, want) in [
            (&["-j", "0"][..], "0 is not in 1..=256"),
            (&["-j", "100000"], "100000 is not in 1..=256"),
            (&["-j", "99999999999999999999999"], "number too large"),
            (&["-n", "0"], "0 is not in 1..=1000000"),
            (&["-n", "1000001"], "1000001 is not in 1..=1000000"),
            (&["-n", "4294967296"], "4294967296 is not in 1..=1000000"),
        ] {
            let got = err(args);
            assert!(got.contains(want), "{args:?}: {got}");
        }
        assert!(err(&["-j", "256", "-n", "1000000"]).is_empty());
    }
}
