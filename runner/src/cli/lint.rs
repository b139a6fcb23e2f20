//! `crashrig lint`: scenario and matrix files checked without running anything.

use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::run::lint::{lint_file, Kind};

#[derive(Args, Debug)]
pub struct LintArgs {
    /// Scenario or matrix files (a file with `kernels:` or `scenarios:` and no `steps:` is a
    /// matrix).
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
}

/// Prints each file's verdict (`ok`, its warnings, or every problem); exit 0 when every file
/// is valid, 2 when any is not.
pub fn lint(args: LintArgs) -> Result<i32, CliError> {
    let mut bad = 0;
    for path in &args.files {
        let l = lint_file(path);
        let what = match l.kind {
            Kind::Scenario => "scenario",
            Kind::Matrix => "matrix",
        };
        match &l.outcome {
            Ok(summary) => outln!("{}: ok, {summary}", l.path.display()),
            Err(problems) => {
                bad += 1;
                outln!("{}: not a valid {what}:\n{problems}", l.path.display());
            }
        }
        for w in &l.warnings {
            outln!("{w}");
        }
    }
    if bad == 0 {
        return Ok(crate::exit::OK);
    }
    errln!(
        "crashrig: {} of {} {} not valid",
        bad,
        crate::report::plural(args.files.len() as u64, "file"),
        if bad == 1 { "is" } else { "are" }
    );
    Ok(crate::exit::CONFIG_OR_INFRA)
}
