//! `crashrig matrix`: the async loop that runs matrix cells (in parallel up to `-j`), around
//! the pure planning in `crate::matrix`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};

use super::matrix_report::{finish_matrix, load_baseline, Baselines, ReportError};
use super::session::{BuildRequest, Session, SessionError, VmOptions};
use crate::kernel::ResolvedKernel;
use crate::matrix::{self, MatrixError, Partition};
use crate::report::events::{Event, EventSink, Forward, Reporter};
use crate::report::store::StoreError;
use crate::report::writer::ResultsWriter;
use crate::report::{Changed, MatrixId};
use crate::run::{run_scenario, LoadedScenario, RunOptions};
use crate::scenario::Setting;

/// What `crashrig matrix` runs, as plain values.
#[derive(Debug, Clone)]
pub struct MatrixOptions {
    /// The matrix file.
    pub matrix: PathBuf,
    /// Run only this shard.
    pub partition: Option<Partition>,
    /// VMs at once. Default: [`matrix::default_jobs`].
    pub jobs: Option<usize>,
    /// Iterations per cell (beats the matrix's and the scenarios').
    pub iterations: Option<u32>,
    /// Skip cells that already finished in the results directory.
    pub resume: bool,
    /// Known results to check against (default: the matrix's `baseline`).
    pub baseline: Option<PathBuf>,
    /// Write a baseline of this run's results here.
    pub write_baseline: Option<PathBuf>,
    /// Filled once the matrix's results directory is ready, for the reports of an
    /// interrupted matrix ([`AfterInterrupt::write_reports`]).
    pub after_interrupt: AfterInterrupt,
}

/// What the reports of a matrix interrupted by SIGINT or SIGTERM need: its results directory,
/// the baseline it checks against and its identity. Set by [`matrix`] as cells start; the
/// command reads it after the interrupt dropped the matrix (and every QEMU with it).
#[derive(Debug, Clone, Default)]
pub struct AfterInterrupt(Arc<std::sync::Mutex<Option<Interrupted>>>);

/// The results directory, the baseline checked (never one to write) and the identity of an
/// interrupted matrix.
type Interrupted = (PathBuf, Baselines, Option<MatrixId>);

impl AfterInterrupt {
    fn set(&self, out: &Path, baselines: &Baselines, identity: Option<MatrixId>) {
        // No baseline is written from an interrupted matrix: its cells are not all there.
        let check_only = Baselines {
            check: baselines.check.clone(),
            write: None,
        };
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((out.to_path_buf(), check_only, identity));
        }
    }

    /// Writes summary.md, junit.xml and junit-cells.xml of what results.json holds (the
    /// cells that finished; the ones cut short marked unfinished), so a CI job stopped by
    /// its timeout still has reports. `None` when the matrix had not started its cells.
    /// Never writes a baseline.
    pub fn write_reports(&self) -> Option<Result<PathBuf, ReportError>> {
        let (out, baselines, identity) = self.0.lock().ok()?.clone()?;
        Some(finish_matrix(&out, &baselines, identity).map(|_| out.join("summary.md")))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MatrixRunError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Load(#[from] MatrixError),
    #[error("--kernel does not apply to a matrix: a matrix names its kernels in the matrix file (`kernels:`); drop --kernel")]
    KernelFlag,
    #[error("set `{name}` with --param: the matrix varies `{name}` itself")]
    ParamVaried { name: String },
    #[error("validate the scenarios of the matrix ({count} problems above)")]
    Scenarios { count: usize },
    /// `--resume` on a directory that holds other results: resuming would drop them.
    #[error(
        "resume {}: {why}; it is not an earlier run of matrix `{matrix}`, and resuming would \
         drop those runs. Nothing was run or changed: give the --out of this matrix's earlier \
         run, or a new --out without --resume",
        out.display()
    )]
    ResumeOther {
        out: PathBuf,
        why: String,
        matrix: String,
    },
    /// `--resume` of a cell a killed run left unfinished, with another scenario (after
    /// parameters) or kernel image than it ran: kept and new iterations would be one count.
    #[error(
        "resume {}: cell {cell} ran {why}; its kept iterations and new ones would be counted \
         as one. Nothing was run or changed: resume with the scenarios and kernels it ran, or \
         give a new --out",
        out.display()
    )]
    ResumeChanged {
        out: PathBuf,
        cell: String,
        why: String,
    },
    #[error(transparent)]
    Results(#[from] StoreError),
    #[error(transparent)]
    Reports(#[from] ReportError),
}

impl MatrixRunError {
    /// Every failure to carry out a matrix is a configuration or infrastructure error.
    pub fn exit_code(&self) -> i32 {
        crate::exit::CONFIG_OR_INFRA
    }
}

pub async fn matrix(args: MatrixOptions, vm: VmOptions) -> Result<i32, MatrixRunError> {
    let m = matrix::load(&args.matrix)?;
    if !vm.kernels.is_empty() {
        return Err(MatrixRunError::KernelFlag);
    }
    // The baselines before anything runs: a wrong path found after the cells costs hours.
    let baselines = baselines(&args, &m)?;
    let mut session = Session::new(vm);
    let all = m.cells();
    let identity = all.first().map(|c| MatrixId::of(&c.info()));
    let mut cells = match &args.partition {
        Some(p) => p.select(&all),
        None => all.clone(),
    };
    session.create_out(args.resume)?;
    let out = session.out.clone();
    let existing = if args.resume {
        session.existing_results()?
    } else {
        None
    };
    if let Some(why) = existing
        .as_ref()
        .and_then(|e| matrix::not_this_matrix(e, &m.name))
    {
        return Err(MatrixRunError::ResumeOther {
            out,
            why,
            matrix: m.name.clone(),
        });
    }
    if cells.is_empty() {
        // A shard past the end of a small matrix (CI with a fixed shard count): nothing to
        // run, but a result set that merges, so the job passes and `report merge` works.
        let sink = session.setup_sink();
        sink.info(empty_shard_note(args.partition.as_ref(), all.len()));
        // A --resume keeps what is there (this shard never wrote runs).
        let path = out.join("results.json");
        if !path.exists() {
            crate::report::store::write_json(&path, &empty_results(identity.clone()))?;
        }
        return finish(&out, &baselines, identity, sink);
    }
    if let Some(existing) = &existing {
        if let Some(note) = matrix::kept_with_other_counts(&cells, existing, args.iterations) {
            session.setup_sink().warn(note);
        }
        cells = matrix::pending_cells(&cells, existing);
    }

    // Validate every scenario (with its parameters) before booting anything.
    let given = session.vm.setting()?;
    if let Some(name) = given.keys().find(|n| m.parameters.contains_key(*n)) {
        return Err(MatrixRunError::ParamVaried { name: name.clone() });
    }
    let mut scenarios = match load_cells(&cells, &given, &mut |path, setting| {
        session.load_scenario_with(path, setting)
    }) {
        Ok(scenarios) => scenarios,
        Err(problems) => {
            let count = problems.len();
            session.setup_sink().emit(Event::Diagnostics {
                text: problems.join("\n"),
            });
            return Err(MatrixRunError::Scenarios { count });
        }
    };

    let mut kernels: HashMap<String, Arc<ResolvedKernel>> = HashMap::new();
    for cell in &cells {
        let k = &cell.kernel;
        if kernels.contains_key(&k.label) {
            continue;
        }
        let scenario_kconfig: Vec<String> = cells
            .iter()
            .filter(|c| c.kernel.label == k.label)
            .flat_map(|c| scenarios[&c.index].scenario.kconfig.clone())
            .collect();
        let build = BuildRequest {
            kconfig: k.kconfig.clone(),
            patches: k.patches.clone(),
        };
        // Results name the kernel by its spec, as every command's do (repro resolves it);
        // the label is the cell's (`cell.kernel`).
        let resolved = session
            .resolve_kernel(&k.spec_text, &build, &scenario_kconfig)
            .await?;
        kernels.insert(k.label.clone(), Arc::new(resolved));
    }
    if let Some(existing) = &existing {
        for cell in &cells {
            let id = cell.id();
            let Some(prev) = matrix::run_for_cell(existing, &id) else {
                continue;
            };
            let sha = crate::run::engine::scenario_sha256(&scenarios[&cell.index].scenario);
            let image = &kernels[&cell.kernel.label].image_sha256;
            if let Some(why) = changed_since(prev, &sha, image) {
                return Err(MatrixRunError::ResumeChanged { out, cell: id, why });
            }
        }
    }
    let Some(first) = cells.first() else {
        let sink = session.setup_sink();
        // The matrix file may have changed: the kept cells take their new positions and
        // digest, and cells no longer in it leave results.json, as when cells run.
        if let Some(existing) = &existing {
            let kept = kept_on_resume(&all, existing, sink);
            crate::report::store::write_json(&out.join("results.json"), &kept)?;
        }
        sink.info("every cell of this matrix (or shard) has finished; nothing to run");
        return finish(&out, &baselines, identity, sink);
    };
    let host = session.host(&kernels[&first.kernel.label].image).await?;
    let accel = host.accel;
    let image = Arc::new(session.image().await?);

    let (cores, mem) = crate::host::resources();
    let per_vm = cells
        .iter()
        .map(|c| scenarios[&c.index].scenario.vm.memory.0)
        .max()
        .unwrap_or(2 << 30);
    let jobs = args
        .jobs
        .unwrap_or_else(|| matrix::default_jobs(cores, mem.unwrap_or(u64::MAX), per_vm))
        .max(1);

    let writer = match existing.clone() {
        Some(existing) => ResultsWriter::with_existing(
            &out,
            kept_on_resume(&all, &existing, session.setup_sink()),
        ),
        None => ResultsWriter::new(&out, host.info.clone()),
    };
    let mut sink = session.results_sink(writer);
    args.after_interrupt.set(&out, &baselines, identity.clone());
    sink.emit(Event::Host(host.info));
    sink.emit(Event::MatrixPlanned {
        cells: cells.len(),
        jobs,
    });
    sink.emit(Event::ResultsDir { path: out.clone() });

    let opts = RunOptions {
        iterations: args.iterations.or(m.iterations),
        restore: session.vm.restore,
        ..RunOptions::new(accel, out.clone(), session.cache.clone())
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let semaphore = Arc::new(Semaphore::new(jobs));
    let mut tasks = tokio::task::JoinSet::new();
    for cell in cells {
        let loaded = scenarios.remove(&cell.index).expect("loaded above");
        let kernel = kernels[&cell.kernel.label].clone();
        let image = image.clone();
        let mut opts = opts.clone();
        opts.cell = Some(cell.info());
        // A cell a killed run left unfinished continues with its finished iterations.
        opts.resume = existing
            .as_ref()
            .and_then(|r| matrix::run_for_cell(r, &cell.id()))
            .cloned();
        // --iterations beats the matrix file, which beats the scenario.
        opts.iterations = args.iterations.or(cell.iterations).or(m.iterations);
        let tx = tx.clone();
        let semaphore = semaphore.clone();
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let mut sink = EventSink::new(vec![Box::new(Forward(tx)) as Box<dyn Reporter>]);
            run_scenario(&loaded, &kernel, &image, &opts, cell.index, &mut sink).await
        });
    }
    drop(tx);
    // Events arrive as cells make progress; the channel closes when every cell is done.
    while let Some(event) = rx.recv().await {
        sink.emit(event);
    }
    while tasks.join_next().await.is_some() {}
    // The writer's last results.json comes before the reports that read it.
    super::session::finish(&mut sink)?;
    finish(&out, &baselines, identity, &mut sink)
}

/// Every cell's scenario loaded with the cell's parameters over `given` (`load`: the
/// session's, or `crashrig lint`'s), or every problem: each once, with the settings that
/// show it. A scenario that does not fit one parameter's value fails the same way whatever
/// the others are (29 filesystem types times 100 cpus x memory settings printed 2900 blocks
/// for 29 mistakes), and on every kernel.
pub(crate) fn load_cells<E: std::error::Error + 'static>(
    cells: &[matrix::Cell],
    given: &Setting,
    load: &mut dyn FnMut(&Path, &Setting) -> Result<LoadedScenario, E>,
) -> Result<HashMap<usize, LoadedScenario>, Vec<String>> {
    let mut scenarios: HashMap<usize, LoadedScenario> = HashMap::new();
    let mut problems: Vec<(String, Vec<String>)> = Vec::new();
    for cell in cells {
        let mut setting = given.clone();
        setting.extend(cell.params.clone());
        match load(&cell.scenario.path, &setting) {
            Ok(loaded) => {
                scenarios.insert(
                    cell.index,
                    LoadedScenario {
                        scenario: matrix::cell_scenario(loaded.scenario, cell),
                        path: loaded.path,
                    },
                );
            }
            Err(e) => {
                let values: Vec<String> = cell
                    .params
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let text = crate::report::error_chain(&e);
                let values = values.join(",");
                match problems.iter_mut().find(|(t, _)| *t == text) {
                    Some((_, settings)) => {
                        if !settings.contains(&values) {
                            settings.push(values);
                        }
                    }
                    None => problems.push((text, vec![values])),
                }
            }
        }
    }
    if problems.is_empty() {
        return Ok(scenarios);
    }
    Err(problems
        .iter()
        .map(|(text, settings)| match settings.as_slice() {
            [one] if one.is_empty() => text.clone(),
            [one] => format!("cells with {one}: {text}"),
            [first, rest @ ..] => format!(
                "cells with {first} (and {} other settings): {text}",
                rest.len()
            ),
            [] => text.clone(),
        })
        .collect())
}

/// The baseline to check against (`--baseline`, else the matrix's `baseline`), read, and the
/// `--write-baseline` target, checked. A problem with the matrix's own baseline is reported
/// at its `file:line:column`.
fn baselines(args: &MatrixOptions, m: &matrix::Matrix) -> Result<Baselines, MatrixRunError> {
    let check = baseline_to_check(args.baseline.as_deref(), m)?;
    Ok(Baselines::with(check, args.write_baseline.as_deref())?)
}

/// The baseline to check against: `given` (`--baseline`), else the matrix's own, a problem
/// with which is reported at its `file:line:column` in the matrix file.
pub(crate) fn baseline_to_check(
    given: Option<&Path>,
    m: &matrix::Matrix,
) -> Result<Option<matrix::Baseline>, MatrixRunError> {
    Ok(match (given, &m.baseline) {
        (Some(path), _) => Some(load_baseline(path)?),
        (None, Some(path)) => Some(load_baseline(path).map_err(|e| {
            let message = format!("baseline: {}", crate::report::error_chain(&e));
            match &m.baseline_at {
                Some(place) => MatrixRunError::Load(place.error(message)),
                None => MatrixRunError::Reports(e),
            }
        })?),
        (None, None) => None,
    })
}

/// Why `prev`, the run a killed matrix left for a cell, cannot be continued by a run of the
/// scenario of digest `scenario_sha256` (after parameters) on the kernel image `image_sha256`.
fn changed_since(
    prev: &crate::report::RunRecord,
    scenario_sha256: &str,
    image_sha256: &str,
) -> Option<String> {
    Some(match prev.changed_since(scenario_sha256, image_sha256)? {
        Changed::Scenario { was } => format!(
            "the scenario (after parameters) of sha256 {was}, not the one of sha256 \
             {scenario_sha256} it is now (an edited file or another --param)"
        ),
        Changed::Image { was } => format!(
            "the kernel image of sha256 {was}, not the one of sha256 {image_sha256} {} resolves \
             to now",
            prev.kernel.spec
        ),
    })
}

/// The results a resume starts from (see [`matrix::resumed_results`]), saying on `sink`
/// which runs are left out (cells no longer in the matrix file): whether cells remain to run
/// or not, a run dropped from results.json is named (it was dropped silently when cells ran).
fn kept_on_resume(
    all: &[matrix::Cell],
    existing: &crate::report::Results,
    sink: &mut EventSink,
) -> crate::report::Results {
    let (kept, left_out) = matrix::resumed_results(all, existing);
    if !left_out.is_empty() {
        sink.info(format!(
            "left out of results.json, no longer in the matrix file: {} (their run \
             directories stay)",
            left_out.join(", ")
        ));
    }
    kept
}

/// What an empty shard says: which shard, and how few cells the matrix has.
fn empty_shard_note(partition: Option<&Partition>, cells: usize) -> String {
    let shard = partition.map_or_else(
        || "this matrix".to_string(),
        |p| format!("shard {}/{} of this matrix", p.index, p.count),
    );
    format!(
        "{shard} has no cells (the matrix has {}); nothing to run",
        crate::report::plural(cells as u64, "cell")
    )
}

/// The results of a shard that ran no cell: no runs, no host (nothing was booted), but the
/// matrix it belongs to, so a merge of only empty shards, or of another matrix's, is caught.
fn empty_results(matrix: Option<MatrixId>) -> crate::report::Results {
    let now = crate::report::writer::now_rfc3339();
    crate::report::Results {
        schema: crate::report::SCHEMA_VERSION,
        crashrig_version: env!("CARGO_PKG_VERSION").into(),
        started: now.clone(),
        finished: Some(now),
        host: crate::report::HostInfo::default(),
        runs: Vec::new(),
        matrix,
    }
}

/// Orders the runs as the matrix expands, writes the reports and the baseline, and decides
/// the exit code. The markdown summary goes to `sink` as the command's report.
fn finish(
    out: &Path,
    baselines: &Baselines,
    identity: Option<MatrixId>,
    sink: &mut EventSink,
) -> Result<i32, MatrixRunError> {
    let outcome = finish_matrix(out, baselines, identity)?;
    sink.emit(Event::Report {
        text: outcome.markdown,
    });
    if !outcome.missing_cells.is_empty() {
        sink.emit(Event::MissingCells {
            count: outcome.missing_cells.len(),
        });
    }
    Ok(outcome.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_resumed_with_an_edited_scenario_or_another_kernel_image_is_refused() {
        let mut prev = crate::report::results::tests::resumable_run();
        assert_eq!(changed_since(&prev, "aaaa", "k1"), None);
        let why = changed_since(&prev, "bbbb", "k1").unwrap();
        assert!(
            why.contains("sha256 aaaa, not the one of sha256 bbbb"),
            "{why}"
        );
        let why = changed_since(&prev, "aaaa", "k2").unwrap();
        assert!(why.contains("kernel image of sha256 k1"), "{why}");
        let e = MatrixRunError::ResumeChanged {
            out: "out".into(),
            cell: "debian-6.1/control-psync".into(),
            why,
        };
        assert_eq!(e.exit_code(), 2);
        // Results of an older crashrig carry no scenario digest: not refused for lacking one.
        prev.scenario.sha256 = None;
        assert_eq!(changed_since(&prev, "bbbb", "k1"), None);
    }

    /// A resume of a changed matrix file left runs of dropped cells out of results.json, but
    /// named them only when no cell was left to run: with cells to run they vanished silently.
    #[test]
    fn a_resume_names_the_runs_it_leaves_out() {
        use crate::matrix::testutil::{matrix, results, run_for};
        use crate::report::events::{Reporter, Stamped};
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Messages(Arc<Mutex<Vec<String>>>);
        impl Reporter for Messages {
            fn report(&mut self, e: &Stamped) {
                if let Event::Message { text, .. } = &e.event {
                    self.0.lock().unwrap().push(text.clone());
                }
            }
        }
        let before =
            matrix("name: c\nkernels: [debian:6.1, debian:6.12]\nscenarios: [coin.yaml]\n");
        let existing = results(before.cells().iter().map(|c| run_for(c, 3, 1)).collect());
        let now = matrix(
            "name: c\nkernels: [{ spec: debian:6.1, label: again }, debian:6.12]\n\
             scenarios: [coin.yaml]\n",
        );
        let messages = Messages::default();
        let mut sink = EventSink::new(vec![Box::new(messages.clone()) as Box<dyn Reporter>]);
        let kept = kept_on_resume(&now.cells(), &existing, &mut sink);
        assert_eq!(kept.runs.len(), 1);
        assert_eq!(
            *messages.0.lock().unwrap(),
            ["left out of results.json, no longer in the matrix file: debian-6.1/coin (their run \
              directories stay)"]
        );
    }
}
