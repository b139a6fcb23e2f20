//! The `crashrig` command: its subcommands, the error every command ends with, and `main`.

use std::time::Duration;

use clap::{Parser, Subcommand};

use super::amplify::AmplifyArgs;
use super::bench::BenchCommand;
use super::bisect::BisectArgs;
use super::build::BuildArgs;
use super::check::CheckArgs;
use super::image::ImageArgs;
use super::lint::LintArgs;
use super::matrix::MatrixArgs;
use super::report::ReportCommand;
use super::repro::ReproArgs;
use super::run::RunArgs;
use crate::exit;
use crate::report::error_chain;

#[derive(Parser, Debug)]
#[command(
    name = "crashrig",
    version,
    about = "Boot kernels in QEMU, run crash-and-remount scenarios, count what the kernel returned",
    long_about = "crashrig boots kernels in QEMU with virtio-blk disks, runs YAML crash-and-remount \
scenarios inside the guest (through an in-guest helper, over SSH or, for guests restored from a \
saved state, a virtio-serial agent channel), counts the errno of every mount/umount (EBUSY after a crash \
is the bug it was made for), classifies dmesg, and writes results.json and junit.xml.\n\n\
Exit codes: 0 every expectation held; 1 an expectation was violated (the bug was seen); \
2 configuration or infrastructure error, or a step that could not test what it meant \
(a disk too small for write-data, a workload that failed before its kill) (`crashrig check`: 125, every error, a wrong \
command line too, so that `git bisect run` skips the commit); 130 interrupted."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run scenarios on kernels.
    Run(RunArgs),
    /// Check the host: QEMU, KVM, apt, and the tools the guest image needs.
    Doctor,
    /// Build (or find in the cache) the guest image and print its paths.
    Image(ImageArgs),
    /// Build a kernel (or find it in the build cache); prints the image path and cache key.
    Build(BuildArgs),
    /// Find the commit or patch that changed a scenario's outcome, even when it shows only
    /// sometimes.
    Bisect(BisectArgs),
    /// Search the scenario's declared parameters for the setting under which the bug shows
    /// most often (or, with --against, where two kernels differ most); writes the scenario
    /// with that setting as its defaults.
    Amplify(AmplifyArgs),
    /// For `git bisect run`: exit 0 good, 1 bad, 125 cannot test (every error, a wrong
    /// command line too).
    Check(CheckArgs),
    /// Run a matrix of kernels x scenarios x parameters (see docs/matrix.md).
    Matrix(MatrixArgs),
    /// Check scenario and matrix files as `run` and `matrix` would before booting anything
    /// (every problem at FILE:LINE:COLUMN; a matrix's scenarios with each cell's parameters,
    /// and its baseline), without a kernel, image or VM: exit 0 all valid, 2 not.
    Lint(LintArgs),
    /// Work with results directories.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Re-run one iteration of a finished run: same scenario, kernel, image and seed.
    Repro(ReproArgs),
    /// Benchmarks that print figures against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// Why a command could not be carried out. `main` prints the chain once and exits with
/// [`CliError::exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Session(#[from] crate::run::session::SessionError),
    #[error(transparent)]
    Bisect(#[from] crate::run::bisect_run::BisectRunError),
    #[error(transparent)]
    Matrix(#[from] crate::run::matrix_run::MatrixRunError),
    #[error(transparent)]
    Amplify(#[from] crate::run::amplify_run::AmplifyRunError),
    #[error(transparent)]
    Bench(#[from] crate::run::bench::BenchError),
    #[error(transparent)]
    Simulation(#[from] crate::bisect::BisectError),
    #[error(transparent)]
    Report(#[from] crate::run::matrix_report::ReportError),
    #[error(transparent)]
    Results(#[from] crate::report::store::StoreError),
    #[error("use `{spec}`: build takes a kernel crashrig builds (a git tree PATH, PATH@REF, or debian-source:X)")]
    NotBuilt { spec: String },
    #[error("find run {run}: the results have {runs} runs")]
    NoSuchRun { run: usize, runs: usize },
    #[error("find a run: the results have none")]
    NoRuns,
    #[error(
        "replay run {run}: {dir} is not there; {results} is a merged results directory \
         (`report merge` leaves the runs' files in the shard directories): run `crashrig repro \
         SHARD --iteration {iteration}` on the shard that ran cell {cell} (cell {index} of \
         {total}, counted from 0: with `--partition M/N` it is shard {index} mod N + 1)"
    )]
    MergedRun {
        run: usize,
        cell: String,
        dir: String,
        results: String,
        iteration: u32,
        index: u32,
        total: u32,
    },
    #[error(
        "replay with --param: the scenario file {path} no longer gives the scenario run {run} \
         recorded ({recorded}); it changed since the run. --param reloads that file, so \
         restore it as it was, or replay without --param (the recorded copy)"
    )]
    ScenarioChanged {
        path: String,
        run: usize,
        recorded: String,
    },
    #[error(
        "replay with --param: the scenario file `{path}` of run {run} is found neither from \
         the current directory nor next to {results}; run repro from the directory the run \
         was started in"
    )]
    ScenarioNotFound {
        path: String,
        run: usize,
        results: String,
    },
    #[error("find iteration {iteration} of run {run}: it recorded {recorded}")]
    NoSuchIteration {
        iteration: u32,
        run: usize,
        recorded: String,
    },
    #[error(
        "benchmark crashrig matrix -j {jobs}: it failed ({status}); run it by hand to see why"
    )]
    BenchMatrix { jobs: usize, status: String },
    #[error("benchmark crashrig run --restore {restore}: it failed ({status}); run it by hand to see why")]
    BenchRestore {
        restore: &'static str,
        status: String,
    },
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("resume {out}: its run {run} is {found}, not {given}; resume with the same scenarios and kernels")]
    ResumeMismatch {
        out: std::path::PathBuf,
        run: usize,
        found: String,
        given: String,
    },
    #[error("write to standard output")]
    Stdout {
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Session(e) => e.exit_code(),
            CliError::Bisect(e) => e.exit_code(),
            CliError::Matrix(e) => e.exit_code(),
            CliError::Amplify(e) => e.exit_code(),
            CliError::Bench(e) => e.exit_code(),
            CliError::Report(e) => e.exit_code(),
            CliError::Results(e) => e.exit_code(),
            _ => exit::CONFIG_OR_INFRA,
        }
    }
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return command_line_error(&e, std::env::args_os().nth(1).as_deref()),
    };
    let is_check = matches!(cli.command, Command::Check(_));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            errln!("crashrig: error: cannot start the async runtime: {e}");
            return if is_check {
                crate::bisect::EXIT_SKIP
            } else {
                exit::CONFIG_OR_INFRA
            };
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => with_signals(super::run::run(args)).await,
            Command::Doctor => Ok(crate::doctor::run().await),
            Command::Image(args) => super::image::image(args).await,
            Command::Build(args) => with_signals(super::build::build(args)).await,
            Command::Bisect(args) => with_signals(super::bisect::bisect(args)).await,
            Command::Amplify(args) => with_signals(super::amplify::amplify(args)).await,
            Command::Check(args) => {
                with_signals(async { Ok(super::check::check(args).await) }).await
            }
            Command::Matrix(args) => {
                let after = crate::run::matrix_run::AfterInterrupt::default();
                let code = with_signals(super::matrix::matrix(args, after.clone())).await;
                if matches!(code, Ok(exit::INTERRUPTED)) {
                    // The matrix and its QEMUs are gone; results.json holds what finished.
                    match after.write_reports() {
                        Some(Ok(summary)) => errln!(
                            "crashrig: reports of the cells that finished (the others marked \
                             unfinished; no baseline written): {}",
                            summary.display()
                        ),
                        Some(Err(e)) => errln!(
                            "crashrig: the reports of the interrupted matrix: {}",
                            crate::report::error_chain(&e)
                        ),
                        None => {}
                    }
                }
                code
            }
            Command::Report(command) => super::report::report(command),
            Command::Lint(args) => super::lint::lint(args),
            Command::Repro(args) => with_signals(super::repro::repro(args)).await,
            Command::Bench(command) => with_signals(super::bench::bench(command)).await,
        }
    });
    // After an interrupt, host tools run by blocking tasks (apt-get, dpkg-deb, git am, make,
    // image builds) are stopped and reaped here rather than abandoned.
    crate::process::terminate_all(crate::process::GRACE);
    // Blocking SSH calls may still sit in the pool after an interrupt; do not wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            errln!("crashrig: error: {}", error_chain(&e));
            if is_check {
                crate::bisect::EXIT_SKIP
            } else {
                e.exit_code()
            }
        }
    }
}

/// Prints clap's message for a command line it refused and returns the exit code: 0 for
/// `--help`/`--version`, 2 for a usage error, except for `crashrig check`, whose every error
/// is 125 ("cannot test"): `git bisect run` reads 1 to 127 but 125 as "bad", so a typo in
/// the check command would otherwise mark every commit bad and name a culprit.
fn command_line_error(e: &clap::Error, subcommand: Option<&std::ffi::OsStr>) -> i32 {
    // Printing to a closed stderr has nowhere to report its failure.
    let _ = e.print();
    if !e.use_stderr() {
        return exit::OK;
    }
    if subcommand.is_some_and(|s| s == "check") {
        errln!(
            "crashrig: check: cannot test: the command line is wrong (exit 125, so that \
             `git bisect run` skips the commit instead of calling it bad)"
        );
        return crate::bisect::EXIT_SKIP;
    }
    e.exit_code()
}

/// Runs `fut` until it finishes or SIGINT/SIGTERM arrives. Dropping the future kills every
/// QEMU it started (kill_on_drop) and removes its disk files (TempDir); finished results were
/// already written.
async fn with_signals(
    fut: impl std::future::Future<Output = Result<i32, CliError>>,
) -> Result<i32, CliError> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| CliError::Io {
            what: "install a SIGTERM handler",
            source,
        })?;
    tokio::select! {
        r = fut => r,
        _ = tokio::signal::ctrl_c() => {
            errln!("crashrig: interrupted; finished results are kept");
            Ok(exit::INTERRUPTED)
        }
        _ = term.recv() => {
            errln!("crashrig: terminated; finished results are kept");
            Ok(exit::INTERRUPTED)
        }
    }
}
