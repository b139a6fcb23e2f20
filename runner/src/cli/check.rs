//! `crashrig check`: one verdict for `git bisect run` (0 good, 1 bad, 125 cannot test or
//! cannot tell).

use std::path::PathBuf;

use clap::Args;

use super::common::CommonVmArgs;
use crate::run::bisect_run::{check as run_check, CheckOptions, Reference};

/// `--kernel` of check: one kernel, by default the git tree in the current directory, which
/// is what `git bisect run crashrig check ...` has checked out (the other commands default to
/// debian:6.1, which would test the same kernel at every commit).
const KERNEL_HELP: &str = "Kernel to check (once): a git tree PATH or PATH@REF (built), \
    debian:6.1, debian:6.12, debian-source:6.1, debian-source:6.12, or a bzImage path \
    (optionally `,modules=DIR`). Default: `.`, the git tree in the current directory at its \
    HEAD (the commit `git bisect run` checked out).";

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("reference-source").args(["reference_rate", "reference"]))]
#[command(mut_arg("kernels", |a| a.help(KERNEL_HELP)))]
pub struct CheckArgs {
    #[arg(value_name = "SCENARIO.yaml")]
    pub scenario: PathBuf,
    /// Kernel config fragments (built kernels).
    #[arg(long, value_name = "FRAGMENT")]
    pub kconfig: Vec<String>,
    /// Patches on top of the kernel (built kernels).
    #[arg(long, value_name = "PATCHES")]
    pub patches: Vec<PathBuf>,
    /// Most iterations on the kernel (default: the scenario's; with a reference: 60).
    #[arg(long, short = 'n', value_parser = super::common::iterations_parser())]
    pub iterations: Option<u32>,
    /// What counts, `STEP-ID:ERRNO` (e.g. `umount:EBUSY`) or `STEP-ID`. Default: any failed
    /// iteration.
    #[arg(long, value_name = "STEP:ERRNO")]
    pub target: Option<String>,
    /// The rate of a good kernel (0 to 0.9): "bad" then means a rate significantly above it
    /// (a sequential test, stopped as soon as the kernel is clearly good or clearly bad).
    #[arg(long, value_name = "RATE", value_parser = parse_reference_rate,
          conflicts_with = "reference")]
    pub reference_rate: Option<f64>,
    /// Measure the reference rate on this kernel (once: the result is cached by kernel image,
    /// scenario, parameters, target and --reference-iterations).
    #[arg(long, value_name = "SPEC")]
    pub reference: Option<String>,
    /// Iterations of the reference measurement.
    #[arg(long, default_value_t = 40, value_parser = super::common::iterations_parser())]
    pub reference_iterations: u32,
    /// The rate the test should recognise as bad. Default: twice the reference rate, at least
    /// 0.25 above it, at most halfway to 1.
    #[arg(long, value_name = "RATE", value_parser = parse_rate, requires = "reference-source")]
    pub bad_rate: Option<f64>,
    /// Each verdict is wrong at most 1 - confidence of the time (with a reference).
    #[arg(long, default_value_t = 0.95, value_parser = parse_confidence)]
    pub confidence: f64,
    #[command(flatten)]
    pub vm: CommonVmArgs,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| format!("`{s}`: expected a rate from 0 to 1"))
}

fn parse_reference_rate(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|r| (0.0..=0.9).contains(r))
        .ok_or_else(|| format!("`{s}`: expected a rate from 0 to 0.9"))
}

fn parse_confidence(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|c| (0.5..1.0).contains(c))
        .ok_or_else(|| format!("`{s}`: expected 0.5 <= confidence < 1"))
}

/// Every failure is "cannot test" (125): git bisect run stops on exit codes above 127.
pub async fn check(args: CheckArgs) -> i32 {
    let reference = match (args.reference_rate, args.reference) {
        (Some(r), _) => Some(Reference::Rate(r)),
        (None, Some(spec)) => Some(Reference::Kernel {
            spec,
            iterations: args.reference_iterations,
        }),
        (None, None) => None,
    };
    let report = run_check(CheckOptions {
        scenario: args.scenario,
        kconfig: args.kconfig,
        patches: args.patches,
        iterations: args.iterations,
        target: args.target,
        reference,
        bad_rate: args.bad_rate,
        confidence: args.confidence,
        vm: args.vm.options(),
    })
    .await;
    errln!("crashrig: {}", report.text());
    report.exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        check: CheckArgs,
    }

    fn parse(args: &[&str]) -> Result<CheckArgs, String> {
        let mut argv = vec!["crashrig", "s.yaml"];
        argv.extend(args);
        Cli::try_parse_from(argv)
            .map(|c| c.check)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn help_states_the_kernel_check_builds_without_kernel() {
        use clap::CommandFactory;
        let help = Cli::command().render_help().to_string();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            help.contains("Default: `.`, the git tree in the current directory at its HEAD"),
            "{help}"
        );
        assert!(!help.contains("Default: debian:6.1"), "{help}");
    }

    #[test]
    fn reference_flags_parse_and_are_bounded() {
        let a = parse(&["--reference-rate", "0.125", "--bad-rate", "0.5"]).unwrap();
        assert_eq!((a.reference_rate, a.bad_rate), (Some(0.125), Some(0.5)));
        assert_eq!((a.reference_iterations, a.confidence), (40, 0.95));
        let a = parse(&["--reference", "debian:6.1", "--target", "umount:EBUSY"]).unwrap();
        assert_eq!(a.reference.as_deref(), Some("debian:6.1"));
        for (args, want) in [
            (
                &["--reference-rate", "0.95"][..],
                "expected a rate from 0 to 0.9",
            ),
            (
                &["--reference-rate", "0.1", "--reference", "x"],
                "cannot be used with",
            ),
            (
                &["--bad-rate", "0.5"],
                "--reference-rate <RATE>|--reference <SPEC>",
            ),
            (
                &["--reference-rate", "0.1", "--confidence", "1"],
                "0.5 <= confidence < 1",
            ),
            (
                &["--reference", "x", "--reference-iterations", "0"],
                "0 is not in",
            ),
        ] {
            let err = parse(args).err().unwrap_or_default();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}
