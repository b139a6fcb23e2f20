//! `crashrig repro`: one iteration of a finished run again, with its scenario, kernel, image
//! and seed.

use std::path::PathBuf;

use clap::Args;

use super::common::AccelArg;
use super::CliError;
use crate::report::writer::ResultsWriter;
use crate::report::Verdict;
use crate::run::session::{BuildRequest, Session, VmOptions};
use crate::run::{LoadedScenario, RunOptions};

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
    pub accel: AccelArg,
    /// Default: RESULTS_DIR/repro-<run>-<iteration>.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Change a parameter of the recorded setting (repeatable): the scenario is then loaded
    /// again from its recorded path with the recorded setting and these values.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = super::common::parse_param)]
    pub params: Vec<(String, String)>,
}

pub async fn repro(args: ReproArgs) -> Result<i32, CliError> {
    let results = crate::report::store::read_results(&args.results.join("results.json"))?;
    let index = match args.run {
        Some(k) if k >= 1 && k <= results.runs.len() => k - 1,
        Some(k) => {
            return Err(CliError::NoSuchRun {
                run: k,
                runs: results.runs.len(),
            })
        }
        None => results
            .runs
            .iter()
            .position(|r| {
                r.iterations
                    .iter()
                    .any(|i| i.iteration == args.iteration && i.verdict != Verdict::Pass)
            })
            .unwrap_or(0),
    };
    let run = results.runs.get(index).ok_or(CliError::NoRuns)?;
    // Only an iteration the run recorded can be replayed (its number fixes its seed).
    if !run.iterations.iter().any(|i| i.iteration == args.iteration) {
        let numbers: Vec<u32> = run.iterations.iter().map(|i| i.iteration).collect();
        return Err(CliError::NoSuchIteration {
            iteration: args.iteration,
            run: index + 1,
            recorded: match (numbers.iter().min(), numbers.iter().max()) {
                (Some(lo), Some(hi)) if numbers.len() as u32 == hi - lo + 1 => {
                    format!("iterations {lo} to {hi}")
                }
                (Some(_), Some(_)) => format!(
                    "iterations {}",
                    numbers
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => "no iteration".into(),
            },
        });
    }
    let mut session = Session::new(VmOptions {
        accel: args.accel.into(),
        out: args.out.clone(),
        verbose: true,
        ..VmOptions::default()
    });
    session.default_out = args
        .results
        .join(format!("repro-{}-{}", index + 1, args.iteration));
    let loaded = if args.params.is_empty() {
        // The scenario as it ran, its parameters already substituted.
        let recorded = args.results.join(&run.dir).join("scenario.yaml");
        let mut loaded = crate::scenario::load_recorded(&recorded)
            .map_err(crate::run::session::SessionError::from)?;
        loaded.scenario.setting = run.setting.clone();
        LoadedScenario {
            scenario: loaded.scenario,
            path: recorded,
        }
    } else {
        let mut setting = run.setting.clone();
        setting.extend(crate::run::session::setting_of(&args.params)?);
        session.load_scenario_with(std::path::Path::new(&run.scenario.path), &setting)?
    };
    let spec = args
        .kernel
        .clone()
        .unwrap_or_else(|| run.kernel.spec.clone());
    // A built kernel is built as it was: the same fragments and patches (the scenario's
    // own fragments come with the recorded scenario).
    let build = if args.kernel.is_none() {
        BuildRequest {
            kconfig: run.kernel.kconfig.clone(),
            patches: run.kernel.patches.iter().map(PathBuf::from).collect(),
        }
    } else {
        BuildRequest::default()
    };
    let kernel = session
        .resolve_kernel(&spec, &build, &loaded.scenario.kconfig)
        .await?;
    if args.kernel.is_none() && kernel.image_sha256 != run.kernel.image_sha256 {
        session.setup_sink().warn(format!(
            "`{spec}` now resolves to {} (image {}), not the recorded {} (image {})",
            kernel.version,
            &kernel.image_sha256[..12],
            run.kernel.version,
            &run.kernel.image_sha256[..12.min(run.kernel.image_sha256.len())]
        ));
    }
    let image = session.image().await?;
    if !run.guest_image.is_empty() && image.key != run.guest_image {
        session.setup_sink().warn(format!(
            "the guest image is now {}, the run used {}",
            image.key, run.guest_image
        ));
    }
    session.create_out(false)?;
    let host = session.host(&kernel.image).await?;
    let (accel, reason) = (host.accel, host.info.accel_reason.clone());
    let mut sink = session.results_sink(ResultsWriter::new(&session.out, host.info));
    sink.info(format!(
        "replaying iteration {} of run {} ({} on {}), seed {}; accelerator {accel} ({reason}); results: {}",
        args.iteration,
        index + 1,
        run.scenario.name,
        run.kernel.spec,
        run.seed,
        session.out.display()
    ));
    let opts = RunOptions {
        seed: Some(run.seed),
        only_iteration: Some(args.iteration),
        cell: run.cell.clone(),
        ..RunOptions::new(accel, session.out.clone(), session.cache.clone())
    };
    let record = crate::run::run_scenario(&loaded, &kernel, &image, &opts, 0, &mut sink).await;
    crate::run::session::finish(&mut sink)?;
    Ok(record.exit_code())
}
