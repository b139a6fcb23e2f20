//! `crashrig run`: scenarios on kernels.

use std::path::PathBuf;

use clap::Args;

use super::common::{BuildOpts, CommonVmArgs};
use super::CliError;
use crate::exit;
use crate::kernel::KernelSpec;
use crate::report::writer::ResultsWriter;
use crate::report::Event;
use crate::run::session::{BuildRequest, Session, SessionError};
use crate::run::RunOptions;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Scenario files (YAML).
    #[arg(required = true, value_name = "SCENARIO.yaml")]
    pub scenarios: Vec<PathBuf>,
    #[command(flatten)]
    pub vm: CommonVmArgs,
    /// Iterations per scenario (overrides the scenario's `iterations`).
    #[arg(long, short = 'n', value_parser = super::common::iterations_parser())]
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

pub async fn run(args: RunArgs) -> Result<i32, CliError> {
    let mut session = Session::new(args.vm.options());
    // Validate every scenario before booting anything.
    let mut scenarios = Vec::new();
    let mut problems = Vec::new();
    for path in &args.scenarios {
        match session.load_scenario(path) {
            Ok(s) => scenarios.push(s),
            Err(e) => problems.push(crate::report::error_chain(&e)),
        }
    }
    if !problems.is_empty() {
        errln!("{}", problems.join("\n"));
        return Ok(exit::CONFIG_OR_INFRA);
    }
    let specs = if args.vm.kernels.is_empty() {
        vec!["debian:6.1".to_string()]
    } else {
        args.vm.kernels.clone()
    };
    session.create_out(args.resume)?;
    let existing = if args.resume {
        session.existing_results()?
    } else {
        None
    };
    // Resolve (and build) every kernel before booting anything: a bad spec fails in seconds.
    let scenario_kconfig: Vec<String> = scenarios
        .iter()
        .flat_map(|s| s.scenario.kconfig.clone())
        .collect();
    let build = args.build.request();
    let mut kernels = Vec::new();
    for spec in &specs {
        let built = KernelSpec::parse(spec)
            .map_err(SessionError::from)?
            .is_built();
        // With several kernels, build options apply to those crashrig builds.
        if !built && !build.is_empty() && specs.len() == 1 {
            return Err(SessionError::NotBuilt { spec: spec.clone() }.into());
        }
        let request = if built {
            build.clone()
        } else {
            BuildRequest::default()
        };
        kernels.push(
            session
                .resolve_kernel(spec, &request, &scenario_kconfig)
                .await?,
        );
    }
    let host = session.host(&kernels[0].image).await?;
    let accel = host.accel;
    let writer = match &existing {
        Some(results) => ResultsWriter::resuming(&session.out, results.clone()),
        None => ResultsWriter::new(&session.out, host.info.clone()),
    };
    let mut sink = session.results_sink(writer);
    sink.emit(Event::Host(host.info));
    sink.emit(Event::ResultsDir {
        path: session.out.clone(),
    });
    let image = session.image().await?;
    sink.emit(Event::ImageReady {
        key: image.key.clone(),
    });
    let opts = RunOptions {
        iterations: args.iterations,
        seed: args.seed,
        keep: args.keep,
        restore: session.vm.restore,
        ..RunOptions::new(accel, session.out.clone(), session.cache.clone())
    };
    let mut code = exit::OK;
    let mut index = 0;
    for (spec, kernel) in specs.iter().zip(&kernels) {
        sink.emit(Event::KernelReady {
            spec: spec.clone(),
            version: kernel.version.clone(),
        });
        for loaded in &scenarios {
            let previous = existing.as_ref().and_then(|r| r.runs.get(index));
            if let Some(prev) = previous {
                if prev.scenario.name != loaded.scenario.name || prev.kernel.spec != *spec {
                    return Err(CliError::ResumeMismatch {
                        out: session.out.clone(),
                        run: index + 1,
                        found: format!("{} on {}", prev.scenario.name, prev.kernel.spec),
                        given: format!("{} on {spec}", loaded.scenario.name),
                    });
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
            code = code.max(record.exit_code());
        }
    }
    crate::run::session::finish(&mut sink)?;
    Ok(code)
}
