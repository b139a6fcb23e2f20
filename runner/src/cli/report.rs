//! `crashrig report`: work with results directories.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::CliError;
use crate::run::matrix_report::{report_merge, MergeRequest};

#[derive(Subcommand, Debug)]
pub enum ReportCommand {
    /// Merge the results of matrix shards (`--partition M/N`) into the result set one
    /// unsharded run gives; writes results.json, junit.xml, junit-cells.xml and summary.md.
    Merge(ReportMergeArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ReportMergeArgs {
    /// Results directories of the shards (each with a results.json).
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Where to write the merged results.json, junit.xml, junit-cells.xml and summary.md: a
    /// new or empty directory, or one an earlier merge wrote.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Known results to check against; with a baseline, only regressions fail.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Write a baseline of the merged results to FILE.
    #[arg(long, value_name = "FILE")]
    pub write_baseline: Option<PathBuf>,
    /// Merge what is there: cells no shard covers (a shard missing) do not fail the merge.
    /// Without it they make it exit 2 unless a cell failed, and no --write-baseline is
    /// written (it would leave them out); summary.md names them either way.
    #[arg(long)]
    pub allow_missing: bool,
}

pub fn report(command: ReportCommand) -> Result<i32, CliError> {
    match command {
        ReportCommand::Merge(args) => {
            let outcome = report_merge(&MergeRequest {
                dirs: args.dirs,
                out: args.out,
                baseline: args.baseline,
                write_baseline: args.write_baseline,
                allow_missing: args.allow_missing,
            })?;
            outln!("{}", outcome.markdown);
            if !outcome.missing_cells.is_empty() {
                errln!(
                    "crashrig: {}: no shard covers {} of the matrix{}{}",
                    if args.allow_missing {
                        "warning"
                    } else {
                        "error"
                    },
                    crate::report::plural(outcome.missing_cells.len() as u64, "cell"),
                    if outcome.missing_ids.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", outcome.missing_ids.join(", "))
                    },
                    if args.allow_missing {
                        ""
                    } else {
                        " (a shard is missing; --allow-missing merges without them)"
                    }
                );
            }
            Ok(outcome.exit_code)
        }
    }
}
