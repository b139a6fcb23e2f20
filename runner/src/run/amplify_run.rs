//! `crashrig amplify`: the async driver around the pure search in `crate::amplify`. Each step
//! loads the scenario with the setting the search chose, runs a batch of iterations on the
//! kernel (and on `--against`), counts the target, and feeds the counts back. Every batch is
//! a run in results.json; the end is a table of every setting tried, the winner's Fisher p
//! against the default, and the scenario with the winner as its defaults.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::bisect_run::{batch_outcome, Target};
use super::machine::Machine;
use super::qemu_machine::{vm_shape, QemuMachine};
use super::session::{BuildRequest, Session, SessionError, VmOptions};
use crate::amplify::{self, Action, AmplifyError, Counts, Goal, Knob, Report, Searcher, Space};
use crate::bisect::BatchOutcome;
use crate::image::GuestImage;
use crate::kernel::ResolvedKernel;
use crate::report::events::EventSink;
use crate::report::store::{write_json, StoreError};
use crate::report::writer::ResultsWriter;
use crate::report::Event;
use crate::report::RunRecord;
use crate::run::{run_batch, LoadedScenario, Rig, RunOptions};
use crate::scenario::{self, LoadError, Scenario, Setting};

/// Batches in a row without a usable iteration (boot or setup failing) that end the search:
/// the host or the scenario is broken, not the setting unlucky.
const MAX_FAILED_BATCHES: u32 = 3;

/// The search stops once the leader's 95% lower bound reaches this rate: a bisection at 80%
/// costs little more than at 100%, and telling near-certain settings apart costs the most.
const ENOUGH: f64 = 0.8;

/// What `crashrig amplify` was asked, as plain values.
#[derive(Debug, Clone)]
pub struct AmplifyOptions {
    pub scenario: PathBuf,
    /// `--against`: a second kernel; the search maximises the difference of the rates.
    pub against: Option<String>,
    /// `STEP-ID:ERRNO` or `STEP-ID`; default: the first violation seen.
    pub target: Option<String>,
    pub budget: u64,
    pub batch: u32,
    pub confidence: f64,
    pub seed: Option<u64>,
    /// `--kernel` (one; default debian:6.1), `--param` (knobs fixed to a value).
    pub vm: VmOptions,
    pub build: BuildRequest,
}

#[derive(Debug, thiserror::Error)]
pub enum AmplifyRunError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Search(#[from] AmplifyError),
    #[error("load {path} with {setting}")]
    Setting {
        path: PathBuf,
        setting: String,
        #[source]
        source: LoadError,
    },
    #[error(
        "write the amplified scenario to {}: that file exists and is kept; move it away or \
         give another --out (checked before the search, which is not run)",
        path.display()
    )]
    AmplifiedExists { path: PathBuf },
    #[error("amplify on one kernel: give one --kernel (and --against for a second)")]
    Kernels,
    #[error("search {path}: it declares no parameter with more than one value (add `values:` to its `parameters:`)")]
    NothingToSearch { path: PathBuf },
    #[error(
        "run the search: {failed} batches in a row had no usable iteration; the last: {reason}"
    )]
    Batches { failed: u32, reason: String },
    #[error("write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("find a top-level `parameters:` line in the scenario")]
    RewriteNoParameters,
    #[error("find parameter `{0}` on a line of its own")]
    RewriteNotOnALine(String),
    #[error("find the `default:` of parameter `{0}`")]
    RewriteNoDefault(String),
    #[error("load the rewritten scenario")]
    RewriteLoad(#[source] LoadError),
    #[error("keep the winner as the defaults: they read back as {0}")]
    RewriteReadBack(String),
    #[error("{0}")]
    BadTarget(String),
}

impl AmplifyRunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            AmplifyRunError::Session(e) => e.exit_code(),
            AmplifyRunError::Search(e) => e.exit_code(),
            _ => crate::exit::CONFIG_OR_INFRA,
        }
    }
}

/// What the search found, for the CLI's table and for `bisect --amplify`.
#[derive(Debug, Clone, Serialize)]
pub struct AmplifyOutcome {
    pub scenario: String,
    pub kernel: String,
    pub against: Option<String>,
    pub target: Option<Target>,
    pub report: Report,
    /// The winner's full setting (every declared parameter).
    pub winner_setting: Setting,
    /// The scenario with the winner as its defaults.
    pub amplified: Option<PathBuf>,
    /// Why it could not be written (the table and `--param` still say what won).
    pub rewrite_error: Option<String>,
    /// Why none was written although a setting showed the target: the winner is the default,
    /// or it was not shown to beat the default (Fisher p >= 0.05, or the default did not
    /// run). A rewritten default is a claim that the new one is better; without the evidence
    /// the file is left alone.
    pub not_amplified: Option<String>,
    /// Names of the knobs searched, with their values.
    pub knobs: Vec<(String, Vec<String>)>,
}

/// The knobs of a loaded scenario: every declared parameter with its values; `fixed`
/// (`--param`) pins a parameter to one value.
pub fn space_of(scenario: &scenario::Scenario, fixed: &Setting) -> Result<Space, AmplifyError> {
    let knobs = scenario
        .parameters
        .iter()
        .map(|p| match fixed.get(&p.name) {
            Some(v) => Knob::from_owned(p.name.clone(), v.clone(), vec![v.clone()]),
            None => Knob::from_owned(p.name.clone(), p.default.clone(), p.values.clone()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Space::new(knobs)
}

/// Loads the scenario at `path` with `setting`.
pub fn load_setting(path: &Path, setting: &Setting) -> Result<LoadedScenario, AmplifyRunError> {
    let loaded = scenario::load_with(path, setting).map_err(|source| AmplifyRunError::Setting {
        path: path.to_path_buf(),
        setting: describe_setting(setting),
        source,
    })?;
    Ok(LoadedScenario {
        scenario: loaded.scenario,
        path: path.to_path_buf(),
    })
}

fn describe_setting(s: &Setting) -> String {
    s.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The kernels and image of a search, resolved once.
pub struct Prepared {
    pub kernels: Vec<(String, ResolvedKernel)>,
    pub image: GuestImage,
    pub accel: crate::vm::Accel,
}

/// One machine per kernel, kept booted across batches whose scenarios share a VM shape
/// ([`vm_shape`]: CPUs, memory, disks, filesystem modules): a batch of another setting of the
/// same shape only sets up again; a new shape stops the old machine and boots a new one.
pub struct Rigs<M, F> {
    make: F,
    rigs: Vec<Option<(String, Rig<M>)>>,
}

impl<M: Machine, F: FnMut(usize, &Scenario) -> M> Rigs<M, F> {
    /// `make(side, scenario)` makes the machine for kernel `side` (0, or 1 for `--against`).
    pub fn new(make: F) -> Self {
        Rigs {
            make,
            rigs: Vec::new(),
        }
    }

    /// Runs a batch of `loaded` on kernel `side`'s machine.
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        &mut self,
        side: usize,
        loaded: &LoadedScenario,
        kernel: &ResolvedKernel,
        image_key: &str,
        opts: &RunOptions,
        index: usize,
        sink: &mut EventSink,
    ) -> RunRecord {
        if self.rigs.len() <= side {
            self.rigs.resize_with(side + 1, || None);
        }
        let shape = vm_shape(&loaded.scenario);
        if self.rigs[side].as_ref().is_some_and(|(s, _)| *s != shape) {
            if let Some((_, mut old)) = self.rigs[side].take() {
                old.stop().await;
            }
        }
        let (_, rig) = match &mut self.rigs[side] {
            Some(r) => r,
            empty => empty.insert((shape, Rig::new((self.make)(side, &loaded.scenario)))),
        };
        run_batch(rig, loaded, kernel, image_key, opts, index, sink).await
    }

    /// Stops every machine.
    pub async fn stop(&mut self) {
        for (_, rig) in self.rigs.iter_mut().flatten() {
            rig.stop().await;
        }
        self.rigs.clear();
    }
}

/// The search loop on prepared kernels, on QEMU machines; `sink` gets every batch as a run
/// and progress lines. Used by `crashrig amplify` and `bisect --amplify`.
pub async fn search(
    opts: &AmplifyOptions,
    space: Space,
    prepared: &Prepared,
    out: &Path,
    cache: &crate::cache::Cache,
    sink: &mut EventSink,
    run_index: &mut usize,
) -> Result<(Report, Option<Target>, Space), AmplifyRunError> {
    let mut rigs = Rigs::new(|side: usize, s: &Scenario| {
        QemuMachine::new(
            s,
            &prepared.kernels[side].1,
            &prepared.image,
            cache.clone(),
            prepared.accel,
            false,
        )
        .with_restore(opts.vm.restore)
    });
    let base = RunOptions {
        restore: opts.vm.restore,
        ..RunOptions::new(prepared.accel, out.to_path_buf(), cache.clone())
    };
    let result = search_on(
        opts,
        space,
        &prepared.kernels,
        &prepared.image.key,
        &base,
        &mut rigs,
        sink,
        run_index,
    )
    .await;
    rigs.stop().await;
    result
}

/// The search loop on `rigs`: `base` gives the results directory and accelerator of every
/// batch. The machines stay up for the caller's further batches.
#[allow(clippy::too_many_arguments)]
pub async fn search_on<M: Machine, F: FnMut(usize, &Scenario) -> M>(
    opts: &AmplifyOptions,
    space: Space,
    kernels: &[(String, ResolvedKernel)],
    image_key: &str,
    base: &RunOptions,
    rigs: &mut Rigs<M, F>,
    sink: &mut EventSink,
    run_index: &mut usize,
) -> Result<(Report, Option<Target>, Space), AmplifyRunError> {
    let goal = if kernels.len() == 2 {
        Goal::Difference
    } else {
        Goal::Rate
    };
    let config = amplify::Config {
        budget: opts.budget,
        batch: opts.batch,
        confidence: opts.confidence,
        goal,
        seed: opts.seed.unwrap_or_else(rand::random),
        enough: ENOUGH,
        ..amplify::Config::default()
    };
    let mut searcher = Searcher::new(space.clone(), config)?;
    let mut target = opts.target.as_deref().map(Target::parse);
    sink.emit(Event::AmplifyStarted {
        settings: space.size(),
        knobs: space
            .knobs()
            .iter()
            .filter(|k| k.values.len() > 1)
            .map(|k| (k.name.to_string(), k.values.clone()))
            .collect(),
        budget: opts.budget,
        batch: opts.batch,
        target: target.as_ref().map(Target::text),
    });
    let mut failed_in_a_row = 0;
    loop {
        let (id, arm, iterations) = match searcher.next_action() {
            Action::Done(report) => return Ok((report, target, space)),
            Action::Run {
                id,
                arm,
                iterations,
            } => (id, arm, iterations),
        };
        let setting = space.setting(&arm);
        let loaded = load_setting(&opts.scenario, &setting)?;
        for (side, (_, kernel)) in kernels.iter().enumerate() {
            let run_opts = RunOptions {
                iterations: Some(iterations),
                seed: None,
                ..base.clone()
            };
            let run = rigs
                .run(
                    side, &loaded, kernel, image_key, &run_opts, *run_index, sink,
                )
                .await;
            *run_index += 1;
            if target.is_none() {
                if let Some(t) = run
                    .iterations
                    .iter()
                    .filter(|i| i.verdict.is_failure())
                    .find_map(Target::from_iteration)
                {
                    sink.emit(Event::AmplifyTarget { target: t.text() });
                    target = Some(t);
                }
            }
            let counts = match &target {
                Some(t) => match batch_counts(batch_outcome(&run, t).0) {
                    Ok(counts) => counts,
                    Err(reason) => {
                        sink.emit(Event::AmplifyUnusable {
                            setting: space.describe(&arm),
                            why: reason.clone(),
                        });
                        failed_in_a_row += 1;
                        if failed_in_a_row >= MAX_FAILED_BATCHES {
                            return Err(AmplifyRunError::Batches {
                                failed: failed_in_a_row,
                                reason,
                            });
                        }
                        Counts::default()
                    }
                },
                // No violation seen yet: every clean iteration is a trial without a hit.
                None => Counts {
                    trials: run
                        .iterations
                        .iter()
                        .filter(|i| i.verdict == crate::report::Verdict::Pass)
                        .count() as u64,
                    hits: 0,
                },
            };
            if counts.trials > 0 {
                failed_in_a_row = 0;
            }
            searcher.record(id, side, counts)?;
            // Iterations without an outcome (infrastructure errors, unrelated failures) are
            // not trials of the setting, but they cost budget; a batch that ran nothing costs
            // one, so a setting that never runs cannot keep the search going.
            let ran = (run.iterations.len() as u64).max(1);
            searcher.charge(ran.saturating_sub(counts.trials));
        }
        sink.emit(Event::AmplifyProgress(Box::new(searcher.report(None))));
    }
}

/// The final table: every setting tried, best first.
pub fn report_text(o: &AmplifyOutcome) -> String {
    let r = &o.report;
    let mut s = format!(
        "amplify {} on {}{}: target {}; {} of {} iterations; {}\n",
        o.scenario,
        o.kernel,
        o.against
            .as_ref()
            .map(|a| format!(" against {a}"))
            .unwrap_or_default(),
        o.target
            .as_ref()
            .map(Target::text)
            .unwrap_or_else(|| "none seen".into()),
        r.spent,
        r.budget,
        match r.stop {
            Some(amplify::Stop::Confident) => "stopped: the leader is clearly best",
            Some(amplify::Stop::Enough) =>
                "stopped: the leader shows the target often enough (95% lower bound >= 80%)",
            _ => "stopped: budget spent",
        }
    );
    s.push_str(&format!(
        "  {:<40} {:>5}  {}\n",
        "setting",
        "p-best",
        if r.goal == Goal::Difference {
            "kernel vs against: hits/iterations (rate, 95% Wilson CI)"
        } else {
            "hits/iterations (rate, 95% Wilson CI)"
        }
    ));
    for row in &r.rows {
        let mark = match (Some(row.id) == r.winner, row.id == r.default) {
            (true, true) => " (winner, default)",
            (true, false) => " (winner)",
            (false, true) => " (default)",
            _ => "",
        };
        s.push_str(&format!(
            "  {:<40} {:>5.2}  {}{}\n",
            row.label,
            row.p_best,
            row.rates_text(),
            mark
        ));
    }
    let tried = r.rows.len() as u64;
    if tried > 0 && (tried < r.space_size || !r.untried.is_empty()) {
        s.push_str(&format!("settings tried: {tried} of {}", r.space_size));
        if !r.untried.is_empty() {
            const SHOWN: usize = 8;
            let mut names: Vec<&str> = r.untried.iter().take(SHOWN).map(String::as_str).collect();
            let more = r.untried.len().saturating_sub(SHOWN);
            let more = format!("{more} more");
            if r.untried.len() > SHOWN {
                names.push(&more);
            }
            s.push_str(&format!(
                "; never tried, though the search meant to compare them: {}",
                names.join(", ")
            ));
        }
        s.push('\n');
    }
    match (r.winner.and_then(|w| r.row(w)), r.fisher_vs_default) {
        (None, _) if tried == 1 => {
            let only = &r.rows[0];
            s.push_str(&format!(
                "no winner: only {} ran ({}), so nothing was compared with it; a larger --budget \
                 tries the other settings\n",
                r.setting_name(only.id),
                only.rates_text()
            ))
        }
        (Some(w), _) if w.score <= 0.0 => s.push_str(if r.goal == Goal::Difference {
            "no setting showed a difference between the kernels: nothing to amplify\n"
        } else {
            "no setting showed the target: nothing to amplify (more iterations, other values, or another --target)\n"
        }),
        (Some(w), Some(p)) => s.push_str(&format!(
            "winner: {}; Fisher p against the default {}{}\n",
            w.label,
            crate::outcome::stats::p_text(p),
            if p < crate::amplify::BEATS_DEFAULT_P {
                ""
            } else {
                " (not shown to beat the default: it leads on these runs only; a larger --budget may tell them apart)"
            }
        )),
        (Some(w), None) if w.id == r.default => {
            s.push_str(&format!("winner: {} (the default)\n", w.label))
        }
        (Some(w), None) => s.push_str(&format!(
            "winner: {}; the default did not run, so the winner is not compared with it\n",
            w.label
        )),
        _ => s.push_str("winner: none (no setting ran)\n"),
    }
    if let Some(p) = &o.amplified {
        s.push_str(&format!("amplified scenario: {}\n", p.display()));
    }
    if let Some(why) = &o.not_amplified {
        s.push_str(&format!("no amplified scenario written: {why}"));
        if r.winner != Some(r.default) {
            s.push_str(&format!(
                "; the scenario's defaults stay as they are (try the winner with {})",
                params_text(&o.winner_setting)
            ));
        }
        s.push('\n');
    }
    if let Some(why) = &o.rewrite_error {
        s.push_str(&format!(
            "could not write the amplified scenario ({why}); run it with {}\n",
            params_text(&o.winner_setting)
        ));
    }
    s
}

fn params_text(setting: &Setting) -> String {
    setting
        .iter()
        .map(|(k, v)| format!("--param {k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `crashrig amplify`.
pub async fn amplify(opts: AmplifyOptions) -> Result<AmplifyOutcome, AmplifyRunError> {
    let mut session = Session::new(opts.vm.clone());
    let fixed = opts.vm.setting()?;
    let base = session.load_scenario(&opts.scenario)?;
    Target::from_option(opts.target.as_deref(), &base.scenario)
        .map_err(AmplifyRunError::BadTarget)?;
    let space = space_of(&base.scenario, &fixed)?;
    if space.knobs().iter().all(|k| k.values.len() < 2) {
        return Err(AmplifyRunError::NothingToSearch {
            path: opts.scenario.clone(),
        });
    }
    let kernel_spec = match opts.vm.kernels.as_slice() {
        [] => "debian:6.1".to_string(),
        [one] => one.clone(),
        _ => return Err(AmplifyRunError::Kernels),
    };
    // The amplified scenario is never written over a file: refuse one in --out now, not
    // after the whole search (a default results directory is new).
    if let Some(out) = &opts.vm.out {
        let path = out.join(amplified_name(&opts.scenario));
        if path.exists() || path.is_symlink() {
            return Err(AmplifyRunError::AmplifiedExists { path });
        }
    }
    session.create_out(false)?;
    let mut specs = vec![kernel_spec.clone()];
    specs.extend(opts.against.clone());
    let mut kernels = Vec::new();
    for spec in &specs {
        let k = session
            .resolve_kernel(spec, &opts.build, &base.scenario.kconfig)
            .await?;
        kernels.push((spec.clone(), k));
    }
    let host = session.host(&kernels[0].1.image).await?;
    let accel = host.accel;
    let mut sink = session.results_sink(ResultsWriter::new(&session.out, host.info.clone()));
    sink.emit(Event::Host(host.info));
    sink.emit(Event::ResultsDir {
        path: session.out.clone(),
    });
    let image = session.image().await?;
    sink.emit(Event::ImageReady {
        key: image.key.clone(),
    });
    for (spec, k) in &kernels {
        sink.emit(Event::KernelReady {
            spec: spec.clone(),
            version: k.version.clone(),
        });
    }
    let prepared = Prepared {
        kernels,
        image,
        accel,
    };
    let mut index = 0;
    let (report, target, space) = search(
        &opts,
        space,
        &prepared,
        &session.out,
        &session.cache,
        &mut sink,
        &mut index,
    )
    .await?;
    sink.finish();
    finish(
        &opts,
        &session.out,
        &base.scenario.name,
        report,
        target,
        &space,
    )
}

/// Writes amplify.json and the amplified scenario; returns the outcome.
pub fn finish(
    opts: &AmplifyOptions,
    out: &Path,
    name: &str,
    report: Report,
    target: Option<Target>,
    space: &Space,
) -> Result<AmplifyOutcome, AmplifyRunError> {
    let winner_setting = report
        .winner
        .and_then(|w| report.row(w))
        .map(|r| space.setting(&r.arm))
        .unwrap_or_else(|| space.setting(&space.default_arm()));
    let text =
        std::fs::read_to_string(&opts.scenario).map_err(|source| AmplifyRunError::Write {
            path: opts.scenario.clone(),
            source,
        })?;
    let amplified_path = out.join(amplified_name(&opts.scenario));
    // Only the knobs where the winner differs from the file's defaults are rewritten (the
    // search may have started elsewhere: `bench amplify --baseline`); the rest of the file
    // stays as written.
    let file_defaults: Setting =
        scenario::load_str_with(&text, &opts.scenario.display().to_string(), &Setting::new())
            .map(|l| {
                l.scenario
                    .parameters
                    .iter()
                    .map(|p| (p.name.clone(), p.default.clone()))
                    .collect()
            })
            .unwrap_or_else(|_| space.setting(&space.default_arm()));
    let changed: Setting = winner_setting
        .iter()
        .filter(|(k, v)| file_defaults.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let rewritten = with_defaults(&text, &changed).and_then(|t| {
        // The file must load, and its defaults must be the winner.
        let loaded =
            scenario::load_str_with(&t, &amplified_path.display().to_string(), &Setting::new())
                .map_err(AmplifyRunError::RewriteLoad)?;
        let defaults: Setting = loaded
            .scenario
            .parameters
            .iter()
            .map(|p| (p.name.clone(), p.default.clone()))
            .collect();
        let expected: Setting = defaults
            .keys()
            .map(|k| {
                let v = winner_setting.get(k).or(defaults.get(k)).cloned();
                (k.clone(), v.unwrap_or_default())
            })
            .collect();
        if defaults == expected {
            Ok(t)
        } else {
            Err(AmplifyRunError::RewriteReadBack(describe_setting(
                &defaults,
            )))
        }
    });
    // A winner that never showed the target (or no difference) is no amplification: say so
    // rather than hand out a scenario that changes nothing that matters.
    let showed = report.winner_showed();
    let not_amplified = report.proven_winner().err().filter(|_| showed);
    let (amplified, rewrite_error) = match rewritten {
        _ if !showed || not_amplified.is_some() => (None, None),
        Ok(t) => {
            write_new(&amplified_path, &t)?;
            (Some(amplified_path), None)
        }
        Err(e) => (None, Some(crate::report::error_chain(&e))),
    };
    let outcome = AmplifyOutcome {
        scenario: name.to_string(),
        kernel: opts
            .vm
            .kernels
            .first()
            .cloned()
            .unwrap_or_else(|| "debian:6.1".into()),
        against: opts.against.clone(),
        target,
        report,
        winner_setting,
        amplified,
        rewrite_error,
        not_amplified,
        knobs: space
            .knobs()
            .iter()
            .map(|k| (k.name.clone(), k.values.clone()))
            .collect(),
    };
    let json = out.join("amplify.json");
    write_json(&json, &outcome)?;
    Ok(outcome)
}

/// `<scenario stem>.amplified.yaml`: the file amplify writes in its results directory.
fn amplified_name(scenario: &Path) -> String {
    let stem = scenario
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario".into());
    format!("{stem}.amplified.yaml")
}

fn write_new(path: &Path, text: &str) -> Result<(), AmplifyRunError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| AmplifyRunError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|source| AmplifyRunError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// The scenario text with each parameter's `default:` set to `setting`'s value, everything
/// else (comments, layout) as written. Handles the flow form
/// `name: { default: V, values: [...] }` and the block form (`name:` then an indented
/// `default: V`).
pub fn with_defaults(text: &str, setting: &Setting) -> Result<String, AmplifyRunError> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let start = lines
        .iter()
        .position(|l| l.trim_end() == "parameters:")
        .ok_or(AmplifyRunError::RewriteNoParameters)?;
    let end = lines[start + 1..]
        .iter()
        .position(|l| !l.is_empty() && !l.starts_with(' ') && !l.starts_with('#'))
        .map_or(lines.len(), |i| start + 1 + i);
    for (name, value) in setting {
        let key = format!("{name}:");
        let at = (start + 1..end)
            .find(|&i| lines[i].trim_start().starts_with(&key))
            .ok_or_else(|| AmplifyRunError::RewriteNotOnALine(name.clone()))?;
        let quoted = yaml_scalar(value);
        let line = &lines[at];
        if let Some(pos) = line.find("default:") {
            let rest = &line[pos + "default:".len()..];
            let len = scalar_len(rest);
            let new = format!(
                "{} {quoted}{}",
                &line[..pos + "default:".len()],
                &rest[len..]
            );
            lines[at] = new;
            continue;
        }
        let after_key = line.trim_start()[key.len()..].trim();
        if !after_key.is_empty() && !after_key.starts_with('#') {
            // `name: V`, short for `name: { default: V }`.
            let pos = line.find(&key).expect("found above") + key.len();
            let len = scalar_len(&line[pos..]);
            lines[at] = format!("{} {quoted}{}", &line[..pos], &line[pos + len..]);
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let inner = (at + 1..end)
            .take_while(|&i| {
                lines[i].trim().is_empty() || lines[i].len() - lines[i].trim_start().len() > indent
            })
            .find(|&i| lines[i].trim_start().starts_with("default:"))
            .ok_or_else(|| AmplifyRunError::RewriteNoDefault(name.clone()))?;
        let l = &lines[inner];
        let pos = l.find("default:").expect("found above");
        lines[inner] = format!("{} {quoted}", &l[..pos + "default:".len()]);
    }
    let mut out = lines.join("\n");
    if text.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// Length of the flow scalar at the start of `rest` (after `default:`), up to `,` or `}` or
/// the end, quotes respected.
fn scalar_len(rest: &str) -> usize {
    let trimmed = rest.trim_start();
    let lead = rest.len() - trimmed.len();
    let mut chars = trimmed.char_indices();
    match trimmed.chars().next() {
        Some(q @ ('"' | '\'')) => {
            chars.next();
            for (i, c) in chars {
                if c == q {
                    return lead + i + 1;
                }
            }
            rest.len()
        }
        _ => {
            let n = trimmed.find([',', '}', '#']).unwrap_or(trimmed.len());
            lead + trimmed[..n].trim_end().len()
        }
    }
}

/// A value as a YAML scalar: plain when it reads back as the same string, else quoted.
fn yaml_scalar(v: &str) -> String {
    let plain = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-/+".contains(c))
        && !v.is_empty();
    if plain {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', "''"))
    }
}

/// A batch's target counts, or why it had no usable iteration.
fn batch_counts(outcome: BatchOutcome) -> Result<Counts, String> {
    match outcome {
        BatchOutcome::Ran {
            iterations,
            failures,
        } => Ok(Counts {
            trials: u64::from(iterations),
            hits: u64::from(failures),
        }),
        BatchOutcome::Unknown { reason } => Err(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(pairs: &[(&str, &str)]) -> Setting {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_rewritten_in_flow_and_block_forms() {
        let text = "name: x\nparameters:\n  jobs: { default: 12, values: [4, 12, 32] }  # threads\n  engine:\n    values: [io_uring, libaio]\n    default: io_uring\nsteps:\n  - run: { command: \"fio --numjobs=${jobs}\" }\n";
        let out = with_defaults(text, &setting(&[("jobs", "32"), ("engine", "libaio")])).unwrap();
        assert_eq!(
            out,
            "name: x\nparameters:\n  jobs: { default: 32, values: [4, 12, 32] }  # threads\n  engine:\n    values: [io_uring, libaio]\n    default: libaio\nsteps:\n  - run: { command: \"fio --numjobs=${jobs}\" }\n"
        );
    }

    #[test]
    fn odd_values_are_quoted_and_missing_declarations_named() {
        let text = "parameters:\n  opts: { default: '--a', values: ['--a', '--b x'] }\n";
        assert_eq!(
            with_defaults(text, &setting(&[("opts", "--b x")])).unwrap(),
            "parameters:\n  opts: { default: '--b x', values: ['--a', '--b x'] }\n"
        );
        assert!(with_defaults(text, &setting(&[("other", "1")]))
            .unwrap_err()
            .to_string()
            .contains("`other`"));
        assert!(with_defaults("steps: []\n", &setting(&[("a", "1")])).is_err());
        assert_eq!(
            with_defaults(
                "parameters:\n  memory: 2G # small\n",
                &setting(&[("memory", "512M")])
            )
            .unwrap(),
            "parameters:\n  memory: 512M # small\n"
        );
    }
}

/// `crashrig bench amplify`: what was asked.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub search: AmplifyOptions,
    /// Fresh iterations of the default and of the winner after the search (at least 60 for
    /// the default).
    pub confirm: u32,
    /// Simulated bisections per rate for the expected bisection cost.
    pub bisect_runs: u32,
    /// The setting the search starts from and the winner is compared against (`--baseline`;
    /// knobs not named keep the scenario's defaults).
    pub baseline: Setting,
}

/// One setting measured after the search, on fresh iterations.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub label: String,
    pub counts: Counts,
    pub interval: (f64, f64),
    /// Mean iterations of a simulated bisection (64 commits) at this rate; `None` at rate 0.
    pub bisect_iterations: Option<f64>,
}

/// The benchmark's figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchFigures {
    pub outcome: AmplifyOutcome,
    pub default: Measured,
    pub winner: Measured,
    /// Two-sided Fisher p, winner against default, on the fresh iterations.
    pub fisher_p: f64,
    /// `--baseline`: where "default" was moved from the scenario's defaults.
    pub baseline: Setting,
}

/// Searches (as `crashrig amplify`), then measures the default and the winner again on
/// `confirm` fresh iterations each: the search's own counts of the winner are biased upward
/// by the selection, fresh ones are not.
pub async fn bench(opts: BenchOptions) -> Result<BenchFigures, AmplifyRunError> {
    let mut session = Session::new(opts.search.vm.clone());
    let base = session.load_scenario(&opts.search.scenario)?;
    let space = space_of(&base.scenario, &opts.search.vm.setting()?)?.rebased(&opts.baseline)?;
    let spec = opts
        .search
        .vm
        .kernels
        .first()
        .cloned()
        .unwrap_or_else(|| "debian:6.1".into());
    session.create_out(false)?;
    let kernel = session
        .resolve_kernel(&spec, &opts.search.build, &base.scenario.kconfig)
        .await?;
    let host = session.host(&kernel.image).await?;
    let accel = host.accel;
    let mut sink = session.results_sink(ResultsWriter::new(&session.out, host.info));
    let image = session.image().await?;
    let prepared = Prepared {
        kernels: vec![(spec.clone(), kernel)],
        image,
        accel,
    };
    let mut index = 0;
    let mut rigs = Rigs::new(|_: usize, s: &Scenario| {
        QemuMachine::new(
            s,
            &prepared.kernels[0].1,
            &prepared.image,
            session.cache.clone(),
            accel,
            false,
        )
        .with_restore(session.vm.restore)
    });
    let run_base = RunOptions {
        restore: session.vm.restore,
        ..RunOptions::new(accel, session.out.clone(), session.cache.clone())
    };
    let searched = search_on(
        &opts.search,
        space,
        &prepared.kernels,
        &prepared.image.key,
        &run_base,
        &mut rigs,
        &mut sink,
        &mut index,
    )
    .await;
    let confirmed = match searched {
        Ok((report, target, space)) => {
            let target = target.unwrap_or_else(|| Target::parse("umount:EBUSY"));
            let winner_arm = report
                .winner
                .and_then(|w| report.row(w))
                .map(|r| r.arm.clone())
                .unwrap_or_else(|| space.default_arm());
            let arms = [space.default_arm(), winner_arm];
            confirm(
                &opts,
                &space,
                &arms,
                &target,
                &prepared.kernels[0].1,
                &prepared.image.key,
                &run_base,
                &mut rigs,
                &mut sink,
                &mut index,
            )
            .await
            .map(|counts| (report, target, space, arms, counts))
        }
        Err(e) => Err(e),
    };
    rigs.stop().await;
    let (report, target, space, arms, counts) = confirmed?;
    let mut measured = Vec::new();
    for (arm, counts) in arms.iter().zip(counts) {
        let label = space.describe(arm);
        let bisect_iterations = (counts.hits > 0)
            .then(|| {
                crate::bisect::simulate(&crate::bisect::SimParams {
                    cases: vec![(counts.rate(), 0.0)],
                    runs: opts.bisect_runs,
                    no_peers: true,
                    ..crate::bisect::SimParams::default()
                })
                .ok()
                .and_then(|s| Some(s.cases.first()?.methods.first()?.mean_iterations))
            })
            .flatten();
        measured.push(Measured {
            label,
            interval: crate::outcome::stats::wilson_95(counts.hits, counts.trials),
            counts,
            bisect_iterations,
        });
    }
    sink.finish();
    let winner = measured.pop().expect("two measured");
    let default = measured.pop().expect("two measured");
    let (w, d) = (winner.counts, default.counts);
    let fisher_p = crate::outcome::stats::fisher_exact_two_sided(
        w.hits,
        w.trials - w.hits,
        d.hits,
        d.trials - d.hits,
    );
    let outcome = finish(
        &opts.search,
        &session.out,
        &base.scenario.name,
        report,
        Some(target),
        &space,
    )?;
    let figures = BenchFigures {
        outcome,
        default,
        winner,
        fisher_p,
        baseline: opts.baseline.clone(),
    };
    let json = session.out.join("bench-amplify.json");
    write_json(&json, &figures)?;
    Ok(figures)
}

/// Fresh iterations of each of `arms` (the default, the winner), `opts.confirm` each, in
/// alternating batches so that both see the same host load.
#[allow(clippy::too_many_arguments)]
async fn confirm<M: Machine, F: FnMut(usize, &Scenario) -> M>(
    opts: &BenchOptions,
    space: &Space,
    arms: &[amplify::Arm],
    target: &Target,
    kernel: &ResolvedKernel,
    image_key: &str,
    base: &RunOptions,
    rigs: &mut Rigs<M, F>,
    sink: &mut EventSink,
    index: &mut usize,
) -> Result<Vec<Counts>, AmplifyRunError> {
    let loaded = arms
        .iter()
        .map(|arm| load_setting(&opts.search.scenario, &space.setting(arm)))
        .collect::<Result<Vec<_>, _>>()?;
    sink.emit(Event::AmplifyConfirm {
        settings: arms.iter().map(|a| space.describe(a)).collect(),
        iterations: opts.confirm,
        batch: opts.search.batch,
    });
    let mut counts = vec![Counts::default(); arms.len()];
    let mut attempts = vec![0u32; arms.len()];
    let mut failed_in_a_row = 0;
    while attempts.iter().any(|&a| a < opts.confirm) {
        for (i, loaded) in loaded.iter().enumerate() {
            let left = opts.confirm.saturating_sub(attempts[i]);
            if left == 0 {
                continue;
            }
            let n = left.min(opts.search.batch.max(1));
            let run_opts = RunOptions {
                iterations: Some(n),
                ..base.clone()
            };
            let run = rigs
                .run(0, loaded, kernel, image_key, &run_opts, *index, sink)
                .await;
            *index += 1;
            attempts[i] += n;
            match batch_counts(batch_outcome(&run, target).0) {
                Ok(c) => {
                    failed_in_a_row = 0;
                    counts[i].trials += c.trials;
                    counts[i].hits += c.hits;
                }
                Err(reason) => {
                    failed_in_a_row += 1;
                    if failed_in_a_row >= MAX_FAILED_BATCHES {
                        return Err(AmplifyRunError::Batches {
                            failed: failed_in_a_row,
                            reason,
                        });
                    }
                }
            }
        }
    }
    Ok(counts)
}

/// The benchmark's printout.
pub fn bench_text(f: &BenchFigures) -> String {
    let line = |name: &str, m: &Measured| {
        format!(
            "{name:<8} {:<36} {:>3}/{:<3} = {:>5.1}%  (95% CI {:.1}%-{:.1}%)  bisection (64 commits, simulated): {}\n",
            m.label,
            m.counts.hits,
            m.counts.trials,
            100.0 * m.counts.rate(),
            100.0 * m.interval.0,
            100.0 * m.interval.1,
            m.bisect_iterations
                .map(|i| format!("{i:.0} iterations"))
                .unwrap_or_else(|| "impossible (rate 0)".into())
        )
    };
    let mut s = report_text(&f.outcome);
    s.push_str("fresh iterations after the search:\n");
    if !f.baseline.is_empty() {
        s.push_str(&format!(
            "(\"default\" is the baseline {}, the scenario's defaults elsewhere)\n",
            describe_setting(&f.baseline)
        ));
    }
    s.push_str(&line("default", &f.default));
    s.push_str(&line("winner", &f.winner));
    let ratio = if f.default.counts.rate() > 0.0 {
        format!("{:.1}x", f.winner.counts.rate() / f.default.counts.rate())
    } else if f.winner.counts.hits > 0 {
        "infinite (the default showed none)".into()
    } else {
        "none (neither showed the target)".into()
    };
    s.push_str(&format!(
        "winner / default: {ratio} (goal >= 5x); Fisher p {} (goal < 0.01); search spent {} iterations (goal <= 300)\n",
        crate::outcome::stats::p_text(f.fisher_p),
        f.outcome.report.spent
    ));
    s
}

#[cfg(test)]
#[path = "amplify_run_tests.rs"]
mod driver_tests;
