//! `crashrig run`: scenarios on kernels.

use std::path::PathBuf;

use clap::Args;

use super::common::{BuildOpts, CommonVmArgs};
use super::CliError;
use crate::exit;
use crate::kernel::KernelSpec;
use crate::report::writer::ResultsWriter;
use crate::report::{Changed, Event};
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
    // A resume continues runs of the same scenarios on the same kernels: checked for every
    // run before any runs, so a mismatch found late does not follow work already done.
    if let Some(results) = &existing {
        let runs = specs
            .iter()
            .zip(&kernels)
            .flat_map(|(spec, kernel)| scenarios.iter().map(move |l| (spec, kernel, l)));
        for (index, ((spec, kernel, loaded), prev)) in runs.zip(&results.runs).enumerate() {
            let now = Ran {
                scenario: &loaded.scenario.name,
                spec,
                scenario_sha256: &crate::run::engine::scenario_sha256(&loaded.scenario),
                image_sha256: &kernel.image_sha256,
            };
            if let Some(e) = resume_mismatch(&session.out, index, prev, &now) {
                return Err(e);
            }
        }
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

/// What a run about to continue would run: scenario and kernel, and their contents.
struct Ran<'a> {
    scenario: &'a str,
    spec: &'a str,
    /// Of the scenario after its parameters (`ScenarioInfo::sha256`).
    scenario_sha256: &'a str,
    image_sha256: &'a str,
}

/// Why the run `prev` (number `index`, from 0) cannot be continued by `now`: another scenario
/// or kernel, or the same names with other contents (an edited scenario, another `--param`,
/// a kernel spec that now resolves to another image). Kept iterations of one and new ones of
/// the other would be counted as one run's.
fn resume_mismatch(
    out: &std::path::Path,
    index: usize,
    prev: &crate::report::RunRecord,
    now: &Ran,
) -> Option<CliError> {
    let mismatch = |found: String, given: String| {
        Some(CliError::ResumeMismatch {
            out: out.to_path_buf(),
            run: index + 1,
            found,
            given,
        })
    };
    if prev.scenario.name != now.scenario || prev.kernel.spec != now.spec {
        return mismatch(
            format!("{} on {}", prev.scenario.name, prev.kernel.spec),
            format!("{} on {}", now.scenario, now.spec),
        );
    }
    match prev.changed_since(now.scenario_sha256, now.image_sha256)? {
        Changed::Scenario { was } => mismatch(
            format!(
                "{} with the scenario (after parameters) of sha256 {was}",
                prev.scenario.name
            ),
            format!(
                "{} as it is now, of sha256 {} (an edited file or another --param)",
                now.scenario, now.scenario_sha256
            ),
        ),
        Changed::Image { was } => mismatch(
            format!(
                "on {} with the kernel image of sha256 {was}",
                prev.kernel.spec
            ),
            format!(
                "on {} with the kernel image it resolves to now, of sha256 {}",
                now.spec, now.image_sha256
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::report::results::tests::resumable_run as prev;

    fn now<'a>(scenario_sha256: &'a str, image_sha256: &'a str) -> Ran<'a> {
        Ran {
            scenario: "control-psync",
            spec: "debian:6.1",
            scenario_sha256,
            image_sha256,
        }
    }

    #[test]
    fn a_resume_of_an_edited_scenario_or_another_kernel_image_is_refused() {
        let out = std::path::Path::new("out");
        assert!(resume_mismatch(out, 0, &prev(), &now("aaaa", "k1")).is_none());
        // The file edited (or another --param) between the kill and the resume: iteration 1
        // ran the old steps, 2.. would run the new ones, all counted as one rate.
        let e = resume_mismatch(out, 0, &prev(), &now("bbbb", "k1")).unwrap();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(msg.starts_with("resume out: its run 1 is control-psync with the scenario"));
        assert!(msg.contains("aaaa") && msg.contains("bbbb"), "{msg}");
        let e = resume_mismatch(out, 1, &prev(), &now("aaaa", "k2")).unwrap();
        assert!(e
            .to_string()
            .contains("its run 2 is on debian:6.1 with the kernel image of sha256 k1"));
        // Another scenario altogether, as before.
        let other = Ran {
            scenario: "seed-kill-umount",
            ..now("aaaa", "k1")
        };
        assert!(resume_mismatch(out, 0, &prev(), &other).is_some());
        // Results of an older crashrig carry no scenario digest: not refused for lacking one.
        let mut old = prev();
        old.scenario.sha256 = None;
        assert!(resume_mismatch(out, 0, &old, &now("bbbb", "k1")).is_none());
    }
}
