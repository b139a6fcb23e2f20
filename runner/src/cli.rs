//! Command-line interface.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::cache::Cache;
use crate::exit;
use crate::kernel::{KernelSpec, ResolvedKernel};
use crate::report::durable::claim_results_dir;
use crate::report::events::{EventSink, Reporter};
use crate::report::terminal::Terminal;
use crate::report::writer::ResultsWriter;
use crate::report::{error_chain, HostInfo};
use crate::run::{LoadedScenario, RunOptions};
use crate::vm::AccelChoice;

#[derive(Parser, Debug)]
#[command(
    name = "crashrig",
    version,
    about = "Boot kernels in QEMU, run crash-and-remount scenarios, count what the kernel returned",
    long_about = "crashrig boots kernels in QEMU with virtio-blk disks, runs YAML crash-and-remount \
scenarios inside the guest over SSH, counts the errno of every mount/umount (EBUSY after a crash \
is the bug it was made for), classifies dmesg, and writes results.json and junit.xml.\n\n\
Exit codes: 0 every expectation held; 1 an expectation was violated (the bug was seen); \
2 configuration or infrastructure error; 130 interrupted."
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
    Bisect(crate::run::bisect_run::BisectArgs),
    /// For `git bisect run`: exit 0 good, 1 bad, 125 cannot test.
    Check(crate::run::bisect_run::CheckArgs),
    /// Run a matrix of kernels x scenarios x parameters (see docs/matrix.md).
    Matrix {
        #[command(flatten)]
        args: crate::matrix::MatrixArgs,
        #[command(flatten)]
        vm: CommonVmArgs,
    },
    /// Work with results directories.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Re-run one iteration of a finished run: same scenario, kernel, image and seed.
    Repro(ReproArgs),
    /// Benchmarks that print figures against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
pub enum ReportCommand {
    /// Merge the results of matrix shards (`--partition M/N`) into the result set one
    /// unsharded run gives; writes results.json, junit.xml and summary.md.
    Merge(crate::matrix::ReportMergeArgs),
}

#[derive(Args, Debug)]
pub struct ReproArgs {
    /// A results directory (with results.json).
    #[arg(value_name = "RESULTS_DIR")]
    pub results: PathBuf,
    /// The iteration to replay (1-based).
    #[arg(long)]
    pub iteration: u32,
    /// Which run of the results (1-based, in results.json order). Default: the first run in
    /// which that iteration did not pass, else the first run.
    #[arg(long)]
    pub run: Option<usize>,
    /// Boot this kernel instead of the recorded spec (for example a fixed build).
    #[arg(long = "kernel", value_name = "SPEC")]
    pub kernel: Option<String>,
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelChoice,
    /// Default: a new RESULTS_DIR/repro-<run>-<iteration>[-N].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct CommonVmArgs {
    /// Kernel to boot (repeatable): debian:6.1, debian:6.12 (Debian's prebuilt cloud
    /// kernels), debian-source:6.1, debian-source:6.12, a git tree PATH or PATH@REF (built),
    /// or a bzImage path (optionally `,modules=DIR`). Default: debian:6.1.
    #[arg(long = "kernel", value_name = "SPEC")]
    pub kernels: Vec<String>,
    /// Accelerator: auto uses KVM when the kernel under test boots under KVM within 15 s,
    /// else TCG (results say which, and why).
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelChoice,
    /// Directory for results.json, junit.xml, console logs and dmesg; one that already
    /// holds results is refused unless --resume is given. Default: a new
    /// ./crashrig-results/<date-time>[-N].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Guest image recipe. Default: images/default.yaml of this crashrig.
    #[arg(long, value_name = "FILE")]
    pub recipe: Option<PathBuf>,
    /// Print every iteration and more detail.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Scenario files (YAML).
    #[arg(required = true, value_name = "SCENARIO.yaml")]
    pub scenarios: Vec<PathBuf>,
    #[command(flatten)]
    pub vm: CommonVmArgs,
    /// Iterations per scenario (overrides the scenario's `iterations`).
    #[arg(long, short = 'n', value_parser = clap::value_parser!(u32).range(1..))]
    pub iterations: Option<u32>,
    /// Seed for random sleeps (default: the scenario's, else random; always recorded).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep the scratch disk images after the run (their directory is printed).
    #[arg(long)]
    pub keep: bool,
    /// Continue the run a killed crashrig left in --out: finished runs and iterations are
    /// kept, the missing iterations run with the recorded seed.
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub build: BuildOpts,
}

/// Options of kernels crashrig builds (git trees, debian-source:X).
#[derive(Args, Debug, Clone, Default)]
pub struct BuildOpts {
    /// Kernel config fragment (repeatable): a name in kconfigs/ (base, fs-xfs, fs-ext4,
    /// fs-btrfs, debug, kasan) or a file. `base` and the scenarios' `kconfig:` are always
    /// merged first.
    #[arg(long = "kconfig", value_name = "FRAGMENT")]
    pub kconfig: Vec<String>,
    /// Patches on top of the source (repeatable, applied in order): an mbox (`git am`,
    /// `b4 am`), a quilt `series` file, a directory of `*.patch`, or one patch.
    #[arg(long = "patches", value_name = "PATH")]
    pub patches: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// A kernel spec crashrig builds: PATH or PATH@REF of a git tree, or debian-source:6.1 /
    /// debian-source:6.12.
    #[arg(value_name = "SPEC")]
    pub spec: String,
    #[command(flatten)]
    pub build: BuildOpts,
    /// Also merge the `kconfig:` fragments these scenarios declare.
    #[arg(long = "scenario", value_name = "SCENARIO.yaml")]
    pub scenarios: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ImageArgs {
    #[arg(long, value_name = "FILE")]
    pub recipe: Option<PathBuf>,
    /// Also build the per-kernel initrd for this kernel spec.
    #[arg(long = "kernel", value_name = "SPEC")]
    pub kernel: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Bare boot (busybox init that powers off at once) vs crashrig's start to first SSH
    /// command, and per-iteration overhead vs the same loop as a shell script in the guest.
    Boot(BenchBootArgs),
    /// Bisection accuracy on simulated histories: share of runs naming the true culprit,
    /// calibration of the reported confidence, mean iterations and builds, and the
    /// information-theoretic bound on iterations beside them. No VM.
    Bisect(crate::bisect::SimParams),
    /// The same matrix run sequentially (-j 1) and in parallel (-j N), wall times side by side.
    Matrix(BenchMatrixArgs),
}

#[derive(Args, Debug)]
pub struct BenchMatrixArgs {
    /// Default: tests/matrix/small.yaml of this crashrig.
    #[arg(value_name = "MATRIX.yaml")]
    pub matrix: Option<PathBuf>,
    /// Iterations per cell.
    #[arg(long, short = 'n', default_value_t = 2)]
    pub iterations: u32,
    /// Parallel VMs of the second run.
    #[arg(short = 'j', long, default_value_t = 2)]
    pub jobs: usize,
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelChoice,
}

#[derive(Args, Debug)]
pub struct BenchBootArgs {
    #[arg(long = "kernel", value_name = "SPEC", default_value = "debian:6.1")]
    pub kernel: String,
    /// Repetitions of each measurement (the median is printed).
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelChoice,
}

/// Errors that end a command with exit 2.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Spec(#[from] crate::kernel::spec::SpecError),
    #[error(transparent)]
    Debian(#[from] crate::kernel::debian::DebianError),
    #[error(transparent)]
    Kernel(crate::kernel::KernelError),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Vm(#[from] crate::vm::VmError),
    #[error(transparent)]
    Run(#[from] crate::run::RunError),
    #[error("{0}")]
    Scenario(String),
    #[error(transparent)]
    ResultsDir(#[from] crate::report::durable::ResultsDirError),
    #[error("cannot create the results directory {path}")]
    Out {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crashrig: error: cannot start the async runtime: {e}");
            return exit::CONFIG_OR_INFRA;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => with_signals(cmd_run(args)).await,
            Command::Doctor => Ok(crate::doctor::run().await),
            Command::Image(args) => cmd_image(args).await,
            Command::Bench(BenchCommand::Boot(args)) => {
                with_signals(crate::run::bench::boot_bench(args)).await
            }
            Command::Bench(BenchCommand::Bisect(params)) => {
                match crate::bisect::simulate(&params) {
                    Ok(summary) => {
                        let _ = crate::bisect::print_summary(&summary, &mut std::io::stdout());
                        Ok(exit::OK)
                    }
                    Err(e) => Err(CliError::Other(error_chain(&e))),
                }
            }
            Command::Bench(BenchCommand::Matrix(args)) => with_signals(bench_matrix(args)).await,
            Command::Matrix { args, vm } => {
                with_signals(crate::run::matrix_run::matrix(args, vm)).await
            }
            Command::Report(ReportCommand::Merge(args)) => match crate::matrix::report_merge(&args)
            {
                Ok(outcome) => {
                    println!("{}", outcome.markdown);
                    if !outcome.missing_cells.is_empty() {
                        eprintln!(
                            "crashrig: warning: {} cells of the matrix are in no shard",
                            outcome.missing_cells.len()
                        );
                    }
                    Ok(outcome.exit_code)
                }
                Err(e) => Err(CliError::Other(error_chain(&e))),
            },
            Command::Repro(args) => with_signals(cmd_repro(args)).await,
            Command::Build(args) => with_signals(cmd_build(args)).await,
            Command::Bisect(args) => with_signals(crate::run::bisect_run::bisect(args)).await,
            Command::Check(args) => match with_signals(crate::run::bisect_run::check(args)).await {
                // git bisect run stops on exit codes above 127; keep errors at "cannot test".
                Ok(code) if code == exit::INTERRUPTED => Ok(code),
                Ok(code) => Ok(code),
                Err(e) => {
                    eprintln!("crashrig: cannot test: {}", error_chain(&e));
                    Ok(crate::bisect::EXIT_SKIP)
                }
            },
        }
    });
    // Blocking SSH calls may still sit in the pool after an interrupt; do not wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("crashrig: error: {}", error_chain(&e));
            exit::CONFIG_OR_INFRA
        }
    }
}

/// Runs `fut` until it finishes or SIGINT/SIGTERM arrives. Dropping the future kills every
/// QEMU it started (kill_on_drop) and removes its disk files (TempDir); finished results were
/// already written.
async fn with_signals(
    fut: impl std::future::Future<Output = Result<i32, CliError>>,
) -> Result<i32, CliError> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::Other(format!("cannot install a SIGTERM handler: {e}")))?;
    tokio::select! {
        r = fut => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("crashrig: interrupted; finished results are kept");
            Ok(exit::INTERRUPTED)
        }
        _ = term.recv() => {
            eprintln!("crashrig: terminated; finished results are kept");
            Ok(exit::INTERRUPTED)
        }
    }
}

/// Loads and validates a scenario; warnings go to stderr.
pub fn load_scenario(path: &std::path::Path) -> Result<LoadedScenario, CliError> {
    let loaded = crate::scenario::load_file_with_warnings(path)
        .map_err(|e| CliError::Scenario(error_chain(&e)))?;
    if !loaded.warnings.is_empty() {
        eprintln!("{}", loaded.warnings);
    }
    Ok(LoadedScenario {
        scenario: loaded.scenario,
        path: path.to_path_buf(),
    })
}

/// Resolves a kernel spec with its build options (kconfig fragments, patches, and the
/// fragments the scenarios declare): Debian packages are fetched, images hashed, sources
/// built or found in the build cache. Build progress goes to `sink`.
pub async fn resolve_kernel_with(
    spec: &str,
    kconfig: &[String],
    patches: &[PathBuf],
    scenario_kconfig: &[String],
    cache: &Cache,
    sink: &mut EventSink,
) -> Result<ResolvedKernel, CliError> {
    let parsed = KernelSpec::parse(spec)?;
    if !parsed.is_built() && (!kconfig.is_empty() || !patches.is_empty()) {
        return Err(CliError::Other(format!(
            "--kconfig and --patches apply to kernels crashrig builds (a git tree or debian-source:X), not to `{spec}`"
        )));
    }
    let mut fragments: Vec<String> = Vec::new();
    for k in scenario_kconfig {
        if !fragments.contains(k) {
            fragments.push(k.clone());
        }
    }
    let opts = crate::kernel::BuildOptions {
        kconfig: kconfig.to_vec(),
        patches: patches.to_vec(),
        scenario_kconfig: fragments,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let progress = move |p: crate::kernel::BuildProgress| {
        let _ = tx.send(p);
    };
    let fut = crate::kernel::resolve(&parsed, &opts, cache, &progress);
    tokio::pin!(fut);
    let label = spec.to_string();
    let mut last_stage = None;
    loop {
        tokio::select! {
            r = &mut fut => {
                let mut kernel = r.map_err(CliError::Kernel)?;
                // Results name the kernel as the user did, and what was added to it.
                kernel.spec = spec.to_string();
                kernel.kconfig = kconfig.to_vec();
                kernel.patches = patches.to_vec();
                return Ok(kernel);
            }
            Some(p) = rx.recv() => {
                if last_stage != Some(p.stage) {
                    sink.info(format!("build {label}: {} ({:.0} s)", p.stage, p.elapsed.as_secs_f64()));
                    last_stage = Some(p.stage);
                }
                sink.emit(crate::report::Event::Build { spec: label.clone(), stage: p.stage.to_string(), detail: p.line.clone().unwrap_or_default() });
            }
        }
    }
}

/// Removes what killed runs left (partial cache entries, scratch-disk directories of runs
/// that are gone) and says so. Locks need no sweep: they are flocks, which die with their
/// holder.
pub fn sweep_leftovers(cache: &Cache, sink: &mut EventSink) {
    let mut lines = crate::vm::scratch::sweep();
    match cache.sweep() {
        Ok(more) => lines.extend(more),
        Err(e) => sink.warn(format!("cannot sweep the cache: {}", error_chain(&e))),
    }
    for line in lines {
        sink.info(line);
    }
}

/// Resolves a kernel spec that needs no build options.
pub async fn resolve_kernel(spec: &str, cache: &Cache) -> Result<ResolvedKernel, CliError> {
    let mut sink = EventSink::new(vec![Box::new(Terminal::new(false)) as Box<dyn Reporter>]);
    resolve_kernel_with(spec, &[], &[], &[], cache, &mut sink).await
}

pub fn default_out() -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "");
    PathBuf::from("crashrig-results").join(stamp.trim_end_matches('Z'))
}

pub async fn prepare_image(
    recipe: Option<PathBuf>,
    cache: &Cache,
) -> Result<crate::image::GuestImage, CliError> {
    let recipe = recipe.unwrap_or_else(crate::image::default_recipe);
    let cache = cache.clone();
    tokio::task::spawn_blocking(move || {
        let helper = crate::image::guest_helper()?;
        crate::image::prepare(&recipe, &helper, &cache)
    })
    .await
    .map_err(|e| CliError::Other(e.to_string()))?
    .map_err(CliError::from)
}

async fn cmd_run(args: RunArgs) -> Result<i32, CliError> {
    // Validate every scenario before booting anything.
    let mut scenarios = Vec::new();
    let mut problems = Vec::new();
    for path in &args.scenarios {
        match load_scenario(path) {
            Ok(s) => scenarios.push(s),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !problems.is_empty() {
        eprintln!("{}", problems.join("\n"));
        return Ok(exit::CONFIG_OR_INFRA);
    }
    let cache = Cache::from_env();
    let specs = if args.vm.kernels.is_empty() {
        vec!["debian:6.1".to_string()]
    } else {
        args.vm.kernels.clone()
    };
    let out = claim_results_dir(args.vm.out.as_deref(), &default_out(), args.resume)?;
    let existing = if args.resume {
        read_for_resume(&out)?
    } else {
        None
    };
    // Resolve (and build) every kernel before booting anything: a bad spec fails in seconds.
    let scenario_kconfig: Vec<String> = scenarios
        .iter()
        .flat_map(|s| s.scenario.kconfig.clone())
        .collect();
    let mut build_sink = EventSink::new(vec![
        Box::new(Terminal::new(args.vm.verbose)) as Box<dyn Reporter>
    ]);
    sweep_leftovers(&cache, &mut build_sink);
    let mut kernels = Vec::new();
    for spec in &specs {
        let built = KernelSpec::parse(spec)?.is_built();
        let (kconfig, patches) = if built {
            (&args.build.kconfig[..], &args.build.patches[..])
        } else {
            (&[][..], &[][..])
        };
        if !built
            && (!args.build.kconfig.is_empty() || !args.build.patches.is_empty())
            && specs.len() == 1
        {
            return Err(CliError::Other(format!(
                "--kconfig and --patches apply to kernels crashrig builds (a git tree or debian-source:X), not to `{spec}`"
            )));
        }
        kernels.push(
            resolve_kernel_with(
                spec,
                kconfig,
                patches,
                &scenario_kconfig,
                &cache,
                &mut build_sink,
            )
            .await?,
        );
    }
    let bare = crate::image::bare_initramfs(&cache)?;
    let (accel, reason) = crate::vm::choose_accel(args.vm.accel, &kernels[0].image, &bare).await?;
    let host = HostInfo {
        qemu: crate::vm::qemu::qemu_version().await,
        accel: accel.to_string(),
        accel_reason: reason.clone(),
    };
    let writer = match &existing {
        Some(results) => ResultsWriter::resuming(&out, results.clone()),
        None => ResultsWriter::new(&out, host),
    };
    let reporters: Vec<Box<dyn Reporter>> =
        vec![Box::new(Terminal::new(args.vm.verbose)), Box::new(writer)];
    let mut sink = EventSink::new(reporters);
    sink.info(format!("accelerator: {accel} ({reason})"));
    sink.info(format!("results: {}", out.display()));
    let image = prepare_image(args.vm.recipe.clone(), &cache).await?;
    sink.emit(crate::report::Event::ImageReady {
        key: image.key.clone(),
    });
    let opts = RunOptions {
        iterations: args.iterations,
        seed: args.seed,
        keep: args.keep,
        ..RunOptions::new(accel, out.clone(), cache.clone())
    };
    let mut code = exit::OK;
    let mut index = 0;
    for (spec, kernel) in specs.iter().zip(&kernels) {
        sink.emit(crate::report::Event::KernelReady {
            spec: spec.clone(),
            version: kernel.version.clone(),
        });
        for loaded in &scenarios {
            let previous = existing.as_ref().and_then(|r| r.runs.get(index));
            if let Some(prev) = previous {
                if prev.scenario.name != loaded.scenario.name || prev.kernel.spec != *spec {
                    return Err(CliError::Other(format!(
                        "resume {}: its run {} is {} on {}, not {} on {spec}; resume with the same scenarios and kernels",
                        out.display(),
                        index + 1,
                        prev.scenario.name,
                        prev.kernel.spec,
                        loaded.scenario.name
                    )));
                }
            }
            let record = match previous {
                Some(prev) if prev.finished.is_some() => {
                    sink.info(format!("run {}: finished before, kept as it is", index + 1));
                    prev.clone()
                }
                _ => {
                    let opts = RunOptions {
                        resume: previous.cloned(),
                        ..opts.clone()
                    };
                    crate::run::run_scenario(loaded, kernel, &image, &opts, index, &mut sink).await
                }
            };
            index += 1;
            code = code.max(run_exit_code(&record));
        }
    }
    finish_sink(&mut sink, code)
}

/// Finishes the reporters; results that could not be written end the command with exit 2.
pub fn finish_sink(sink: &mut EventSink, code: i32) -> Result<i32, CliError> {
    match sink.finish() {
        Some(failure) => Err(CliError::Other(failure)),
        None => Ok(code),
    }
}

/// The results a `--resume` continues: None when the directory has none yet (said, so a
/// resume that starts afresh is never silent); an empty or torn results.json is an error,
/// never a reason to run everything again over it.
pub fn read_for_resume(out: &Path) -> Result<Option<crate::report::Results>, CliError> {
    let path = out.join("results.json");
    if !path.exists() {
        eprintln!(
            "crashrig: note: {} has no results.json; nothing to resume, starting afresh",
            out.display()
        );
        return Ok(None);
    }
    crate::matrix::read_results(&path)
        .map(Some)
        .map_err(|e| {
            CliError::Other(format!(
                "{}; it was not written by this crashrig or was damaged outside it; move it away to start afresh",
                error_chain(&e)
            ))
        })
}

/// 1 when any iteration failed; 2 when the run could not be carried out; else 0.
pub fn run_exit_code(run: &crate::report::RunRecord) -> i32 {
    if run.summary.failed > 0 {
        exit::EXPECTATION_FAILED
    } else if run.error.is_some() || run.summary.errors > 0 || run.iterations.is_empty() {
        exit::CONFIG_OR_INFRA
    } else {
        exit::OK
    }
}

async fn cmd_image(args: ImageArgs) -> Result<i32, CliError> {
    let cache = Cache::from_env();
    let image = prepare_image(args.recipe, &cache).await?;
    println!("key:        {}", image.key);
    println!("initramfs:  {}", image.initramfs.display());
    println!("tools disk: {}", image.tools_disk.display());
    println!("host key:   {}", image.host_key);
    if let Some(spec) = args.kernel {
        let kernel = resolve_kernel(&spec, &cache).await?;
        let initrd = crate::image::initrd_for(&image, &kernel, &cache)?;
        println!(
            "kernel:     {} ({})",
            kernel.image.display(),
            kernel.version
        );
        println!("initrd:     {}", initrd.display());
    }
    Ok(exit::OK)
}

async fn cmd_repro(args: ReproArgs) -> Result<i32, CliError> {
    let results_path = args.results.join("results.json");
    let results =
        crate::matrix::read_results(&results_path).map_err(|e| CliError::Other(error_chain(&e)))?;
    let index = match args.run {
        Some(k) if k >= 1 && k <= results.runs.len() => k - 1,
        Some(k) => {
            return Err(CliError::Other(format!(
                "--run {k}: the results have {} runs",
                results.runs.len()
            )))
        }
        None => results
            .runs
            .iter()
            .position(|r| {
                r.iterations.iter().any(|i| {
                    i.iteration == args.iteration && i.verdict != crate::report::Verdict::Pass
                })
            })
            .unwrap_or(0),
    };
    let run = results
        .runs
        .get(index)
        .ok_or_else(|| CliError::Other("the results have no runs".into()))?;
    let recorded = args.results.join(&run.dir).join("scenario.yaml");
    let loaded = load_scenario(&recorded)?;
    let cache = Cache::from_env();
    let spec = args
        .kernel
        .clone()
        .unwrap_or_else(|| run.kernel.spec.clone());
    let mut kernel = resolve_kernel(&spec, &cache).await?;
    if args.kernel.is_none() && kernel.image_sha256 != run.kernel.image_sha256 {
        eprintln!(
            "crashrig: warning: `{spec}` now resolves to {} (image {}), not the recorded {} (image {})",
            kernel.version, &kernel.image_sha256[..12], run.kernel.version, &run.kernel.image_sha256[..12.min(run.kernel.image_sha256.len())]
        );
    }
    kernel.spec = spec;
    let image = prepare_image(None, &cache).await?;
    if !run.guest_image.is_empty() && image.key != run.guest_image {
        eprintln!(
            "crashrig: warning: the guest image is now {}, the run used {}",
            image.key, run.guest_image
        );
    }
    let out = claim_results_dir(
        args.out.as_deref(),
        &args
            .results
            .join(format!("repro-{}-{}", index + 1, args.iteration)),
        false,
    )?;
    let bare = crate::image::bare_initramfs(&cache)?;
    let (accel, reason) = crate::vm::choose_accel(args.accel, &kernel.image, &bare).await?;
    let host = HostInfo {
        qemu: crate::vm::qemu::qemu_version().await,
        accel: accel.to_string(),
        accel_reason: reason.clone(),
    };
    let reporters: Vec<Box<dyn Reporter>> = vec![
        Box::new(Terminal::new(true)),
        Box::new(ResultsWriter::new(&out, host)),
    ];
    let mut sink = EventSink::new(reporters);
    sink.info(format!(
        "replaying iteration {} of run {} ({} on {}), seed {}; accelerator {accel} ({reason}); results: {}",
        args.iteration,
        index + 1,
        run.scenario.name,
        run.kernel.spec,
        run.seed,
        out.display()
    ));
    let opts = RunOptions {
        seed: Some(run.seed),
        only_iteration: Some(args.iteration),
        cell: run.cell.clone(),
        ..RunOptions::new(accel, out, cache)
    };
    let record = crate::run::run_scenario(&loaded, &kernel, &image, &opts, 0, &mut sink).await;
    finish_sink(&mut sink, run_exit_code(&record))
}

async fn cmd_build(args: BuildArgs) -> Result<i32, CliError> {
    let cache = Cache::from_env();
    let mut scenario_kconfig = Vec::new();
    for path in &args.scenarios {
        scenario_kconfig.extend(load_scenario(path)?.scenario.kconfig);
    }
    if !KernelSpec::parse(&args.spec)?.is_built() {
        return Err(CliError::Other(format!(
            "`{}` is not built by crashrig; build takes a git tree (PATH, PATH@REF) or debian-source:X",
            args.spec
        )));
    }
    let mut sink = EventSink::new(vec![Box::new(Terminal::new(true)) as Box<dyn Reporter>]);
    sweep_leftovers(&cache, &mut sink);
    let t = std::time::Instant::now();
    let kernel = resolve_kernel_with(
        &args.spec,
        &args.build.kconfig,
        &args.build.patches,
        &scenario_kconfig,
        &cache,
        &mut sink,
    )
    .await?;
    println!("image:     {}", kernel.image.display());
    println!("version:   {}", kernel.version);
    if let Some(r) = &kernel.release {
        println!("release:   {r}");
    }
    println!("cache key: {}", kernel.build_key.as_deref().unwrap_or("-"));
    if let Some(v) = &kernel.vmlinux {
        println!("vmlinux:   {}", v.display());
    }
    println!("took:      {:.1} s", t.elapsed().as_secs_f64());
    Ok(exit::OK)
}

/// Runs this crashrig's own `matrix` command twice, so both runs are exactly what users run.
async fn bench_matrix(args: BenchMatrixArgs) -> Result<i32, CliError> {
    let matrix = args.matrix.unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/matrix/small.yaml")
    });
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Other(format!("cannot find crashrig itself: {e}")))?;
    let tmp = tempfile::tempdir().map_err(|e| CliError::Other(e.to_string()))?;
    let accel = match args.accel {
        AccelChoice::Auto => "auto",
        AccelChoice::Kvm => "kvm",
        AccelChoice::Tcg => "tcg",
    };
    let mut times = Vec::new();
    for jobs in [1, args.jobs] {
        let out = tmp.path().join(format!("j{jobs}"));
        let start = std::time::Instant::now();
        let status = tokio::process::Command::new(&exe)
            .arg("matrix")
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
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|e| CliError::Other(format!("cannot run crashrig matrix: {e}")))?;
        if !status.success() {
            return Err(CliError::Other(format!(
                "crashrig matrix -j {jobs} failed ({status}); run it by hand to see why"
            )));
        }
        times.push((jobs, start.elapsed().as_secs_f64()));
    }
    println!(
        "matrix {} with {} iterations per cell:",
        matrix.display(),
        args.iterations
    );
    for (jobs, t) in &times {
        println!("  -j {jobs}: {t:.1} s");
    }
    println!("  speed-up: {:.2}x", times[0].1 / times[1].1);
    Ok(exit::OK)
}
