//! `crashrig repro`: one iteration of a finished run again, with its scenario, kernel, image
//! and seed.

use std::path::{Path, PathBuf};

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
    /// again from its recorded path with the recorded setting and these values, keeping the
    /// run's iteration count; refused when the file no longer gives the recorded copy.
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
    // The scenario as it ran, its parameters already substituted.
    let recorded = args.results.join(&run.dir).join("scenario.yaml");
    if !recorded.exists() {
        if let Some(cell) = &run.cell {
            if !args.results.join(&run.dir).exists() {
                return Err(CliError::MergedRun {
                    run: index + 1,
                    cell: cell.id.clone(),
                    dir: args.results.join(&run.dir).display().to_string(),
                    results: args.results.display().to_string(),
                    iteration: args.iteration,
                    index: cell.index,
                    total: cell.total,
                });
            }
        }
    }
    let mut copy = crate::scenario::load_recorded(&recorded)
        .map_err(crate::run::session::SessionError::from)?;
    copy.scenario.setting = run.setting.clone();
    let loaded = if args.params.is_empty() {
        LoadedScenario {
            scenario: copy.scenario,
            path: recorded,
        }
    } else {
        // --param reloads the scenario file; it must still be the file that ran (with the
        // recorded setting it gives the recorded copy), and the run's iteration count (a
        // matrix's or -n's, kept in the copy) stays.
        let path = scenario_file(&args.results, &run.scenario.path).ok_or_else(|| {
            CliError::ScenarioNotFound {
                path: run.scenario.path.clone(),
                run: index + 1,
                results: args.results.display().to_string(),
            }
        })?;
        let (mut as_ran, _) = crate::run::session::load_scenario(&path, &run.setting)?;
        as_ran.scenario.iterations = copy.scenario.iterations;
        if !same_scenario(&as_ran.scenario, &recorded) {
            return Err(CliError::ScenarioChanged {
                path: path.display().to_string(),
                run: index + 1,
                recorded: recorded.display().to_string(),
            });
        }
        let mut setting = run.setting.clone();
        setting.extend(crate::run::session::setting_of(&args.params)?);
        let mut loaded = session.load_scenario_with(&path, &setting)?;
        loaded.scenario.iterations = copy.scenario.iterations;
        loaded
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
    // The build the run used, when the build cache still holds it: patch files may have
    // moved or changed since.
    let recorded_build = match (&args.kernel, &run.kernel.build_key) {
        (None, Some(key)) => session
            .recorded_build(&spec, &build, key)
            .filter(|k| k.image_sha256 == run.kernel.image_sha256),
        _ => None,
    };
    let kernel = match recorded_build {
        Some(k) => {
            session.setup_sink().info(format!(
                "kernel: the recorded build of `{spec}` ({}, build {}) from the build cache",
                k.version,
                k.build_key.as_deref().unwrap_or_default()
            ));
            k
        }
        None => {
            session
                .resolve_kernel(&spec, &build, &loaded.scenario.kconfig)
                .await?
        }
    };
    if args.kernel.is_none() && kernel.image_sha256 != run.kernel.image_sha256 {
        let why = if run.kernel.patches.is_empty() {
            String::new()
        } else {
            format!(
                "; the recorded build is no longer in the build cache and building the \
                 recorded patches ({}) gives another kernel: a patch changed since the run",
                run.kernel.patches.join(", ")
            )
        };
        session.setup_sink().warn(format!(
            "`{spec}` now resolves to {} (image {}), not the recorded {} (image {}){why}",
            kernel.version,
            &kernel.image_sha256[..12.min(kernel.image_sha256.len())],
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
    if let Some(caveat) = inherited_state(run, args.iteration) {
        sink.warn(caveat);
    }
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

/// What the replay of `iteration` cannot give back: the guest state earlier iterations left
/// it, when the run's iterations did not each start from the same restored guest. A replay
/// starts from a fresh guest, so a failure that depended on that state may not reproduce.
fn inherited_state(run: &crate::report::RunRecord, iteration: u32) -> Option<String> {
    if run.independent_iterations {
        return None;
    }
    // After a hang, a panic or an infrastructure error the run booted a fresh guest.
    let mut before: Vec<u32> = Vec::new();
    for it in run.iterations.iter().filter(|i| i.iteration < iteration) {
        if matches!(it.verdict, Verdict::Hang | Verdict::Panic | Verdict::Error) {
            before.clear();
        } else {
            before.push(it.iteration);
        }
    }
    let (first, last) = (*before.first()?, *before.last()?);
    let earlier = if before.len() == 1 {
        format!("iteration {first}")
    } else {
        format!("iterations {first}-{last}")
    };
    let params: String = run
        .setting
        .iter()
        .map(|(k, v)| format!(" --param {k}={v}"))
        .collect();
    Some(format!(
        "iteration {iteration} ran on a guest {earlier} of the same run had used before it \
         (its iterations were not independent: independent_iterations is false); this replay \
         starts from a fresh guest, so a failure that depended on what {earlier} left may \
         not reproduce. To replay iterations 1-{iteration} in order: `crashrig run {} \
         --kernel {} -n {iteration} --seed {}{params}`",
        run.scenario.path, run.kernel.spec, run.seed
    ))
}

/// The scenario file a run recorded: absolute since crashrig records it so; an older relative
/// one from the current directory, else from the directory holding the results directory
/// (where `--out` put it when the run started).
fn scenario_file(results: &Path, recorded: &str) -> Option<PathBuf> {
    let path = Path::new(recorded);
    if path.is_absolute() || path.is_file() {
        return path.is_file().then(|| path.to_path_buf());
    }
    let beside = std::path::absolute(results).ok()?.parent()?.join(path);
    beside.is_file().then_some(beside)
}

/// Whether `scenario` is what the run recorded in `copy` (written by the engine as this
/// serialization).
fn same_scenario(scenario: &crate::scenario::Scenario, copy: &Path) -> bool {
    let text = serde_json::to_string_pretty(scenario).unwrap_or_default() + "\n";
    std::fs::read_to_string(copy).is_ok_and(|c| c == text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::results::tests::iteration;

    fn run_of(verdicts: &[Verdict], independent: bool) -> crate::report::RunRecord {
        let iterations: Vec<_> = verdicts
            .iter()
            .enumerate()
            .map(|(i, v)| iteration(i as u32 + 1, *v, vec![]))
            .collect();
        crate::report::RunRecord {
            seed: 5,
            restore: "auto".into(),
            independent_iterations: independent,
            iterations_planned: Some(iterations.len() as u32),
            ..crate::report::results::tests::run_record(
                "s",
                "s.yaml",
                ("debian:6.1", "6.1"),
                iterations,
            )
        }
    }

    #[test]
    fn a_replay_of_an_iteration_that_inherited_a_guest_says_so() {
        let run = run_of(&[Verdict::Pass, Verdict::Fail, Verdict::Pass], false);
        assert_eq!(
            inherited_state(&run, 1),
            None,
            "the first iteration had a fresh guest"
        );
        assert_eq!(
            inherited_state(&run, 2).unwrap(),
            "iteration 2 ran on a guest iteration 1 of the same run had used before it (its \
             iterations were not independent: independent_iterations is false); this replay \
             starts from a fresh guest, so a failure that depended on what iteration 1 left \
             may not reproduce. To replay iterations 1-2 in order: `crashrig run s.yaml \
             --kernel debian:6.1 -n 2 --seed 5`"
        );
        assert!(inherited_state(&run, 3)
            .unwrap()
            .contains("a guest iterations 1-2 of the same run had used"));
    }

    #[test]
    fn independent_iterations_and_fresh_boots_leave_nothing_to_say() {
        let run = run_of(&[Verdict::Pass, Verdict::Fail], true);
        assert_eq!(inherited_state(&run, 2), None);
        // A hang made the run boot a fresh guest for the next iteration.
        let run = run_of(&[Verdict::Pass, Verdict::Hang, Verdict::Fail], false);
        assert_eq!(inherited_state(&run, 3), None);
    }
}
