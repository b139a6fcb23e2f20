//! `crashrig bisect` and `crashrig check`: the async driver around the pure, flake-aware
//! search in `crate::bisect`. Each step builds a candidate through the build cache, reuses
//! the verdict of a byte-identical kernel, runs a batch of iterations, and appends the
//! outcome to a journal before the next step, so an interrupted bisection resumes without
//! redoing finished work.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::session::{build_progress, forward_build_progress, Session, SessionError, VmOptions};
use crate::bisect::{
    self, Action, BatchOutcome, BisectError, Bisector, Config, Direction, Header, ImageIndex,
    Journal, RateTest, RateVerdict, Seen, Step,
};
use crate::cache::Cache;
use crate::image::GuestImage;
use crate::kernel::{self, BuildOptions, KernelError, KernelSpec, PatchFile, ResolvedKernel};
use crate::report::events::{BisectStep, Event, EventSink};
use crate::report::store::{write_json, StoreError};
use crate::report::writer::ResultsWriter;
use crate::report::{HostInfo, IterationRecord, RunRecord, Verdict};
use crate::run::{run_batch, LoadedScenario, Machine, QemuMachine, Rig, RunOptions};

/// What `crashrig bisect` searches, as plain values (see the CLI for each option's meaning).
#[derive(Debug, Clone)]
pub struct BisectOptions {
    /// The scenario whose outcome changed.
    pub scenario: PathBuf,
    /// Range form: the good end, `PATH@REF` of a kernel git tree.
    pub good: Option<String>,
    /// Range form: the bad end, `PATH@REF` (same tree).
    pub bad: Option<String>,
    /// Patch form: the series to bisect (mbox, quilt series, directory or one patch), applied
    /// on the `--kernel` base; the base alone is good, base plus the whole series bad.
    pub patches: Vec<PathBuf>,
    /// Patch form: patches applied on the base under every candidate, the good end included.
    pub base_patches: Vec<PathBuf>,
    /// Kernel config fragments for every build (besides `base` and the scenario's).
    pub kconfig: Vec<String>,
    /// Find the fix instead: the old end is bad, the new end good.
    pub fix: bool,
    /// The outcome to look for, `STEP-ID:ERRNO` (e.g. `umount:EBUSY`), or `STEP-ID` for any
    /// violated expectation of that step. Default: the first violation the bad end shows.
    pub target: Option<String>,
    /// Most iterations in one batch. Default: 32.
    pub iterations: Option<u32>,
    /// Stop when one candidate holds this posterior probability (the CLI default: 0.95).
    pub confidence: f64,
    /// Budget of search iterations. Default: 1000.
    pub max_iterations: Option<u64>,
    /// A guess of the good side's rate, used as a prior worth 20 iterations (the rate is still
    /// learnt from the runs); `None`: a weak prior.
    pub false_positive_rate: Option<f64>,
    /// Continue the bisection journaled in --out.
    pub resume: bool,
    /// `--amplify N`: search the scenario's parameters on the bad end first (budget N
    /// iterations), then bisect with the winning setting.
    pub amplify: Option<u64>,
    pub vm: VmOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum BisectRunError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Amplify(#[from] Box<crate::run::amplify_run::AmplifyRunError>),
    #[error(transparent)]
    GitRun(crate::process::ProcessError),
    #[error("run `git {args}` in {repo}: {stderr}")]
    Git {
        args: String,
        repo: PathBuf,
        stderr: String,
    },
    #[error("use `{spec}` as an end of the range: it is not PATH@REF of a git tree")]
    NotPathRef { spec: String },
    #[error("bisect across two trees: --good and --bad must name the same git tree")]
    TwoTrees,
    #[error("find commits between {old} ({old_flag}, the older end) and {new} ({new_flag}): there are none; {old} must be an ancestor of {new} on its first-parent line ({hint})")]
    NoCommits {
        old: String,
        old_flag: &'static str,
        new: String,
        new_flag: &'static str,
        hint: &'static str,
    },
    #[error("{flag} {spec}: no commit `{rev}` in {}: {stderr}", repo.display())]
    BadRef {
        flag: &'static str,
        spec: String,
        rev: String,
        repo: PathBuf,
        stderr: String,
    },
    #[error(
        "choose what to bisect: give either --good and --bad (a git range) or --kernel and --patches (a series)"
    )]
    NoRange,
    #[error("choose the base of the series: the patch form needs exactly one --kernel")]
    PatchBase,
    #[error("bisect patches on `{spec}`: patches need a kernel crashrig builds (debian-source:X or a git tree)")]
    PatchBaseNotBuilt { spec: String },
    #[error("read the patch series")]
    Series(#[source] KernelError),
    #[error("bisect the series: it has no patches")]
    EmptySeries,
    #[error("start the journal (use --resume to continue it, or another --out)")]
    JournalCreate(#[source] BisectError),
    #[error(transparent)]
    Bisect(#[from] BisectError),
    #[error("build the bad end ({candidate})")]
    BadEnd {
        candidate: String,
        #[source]
        source: KernelError,
    },
    #[error("build candidate {candidate}; the host, not the candidate, is at fault, so the bisection stops")]
    Host {
        candidate: String,
        #[source]
        source: KernelError,
    },
    #[error("find the target: the bad end ({candidate}) showed no step violation in {iterations} iterations{why}; give --target or more --iterations")]
    NoTarget {
        candidate: String,
        iterations: usize,
        why: String,
    },
    #[error("resume with --target {given}: this bisection counted its evidence for {recorded} ({path}); drop --target or start another --out")]
    OtherTarget {
        given: String,
        recorded: String,
        path: PathBuf,
    },
    #[error("resume: {path} is damaged; give the bisection's --target (it is not learned again, so the journaled evidence is not mixed with another outcome's)")]
    TornTarget {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "resume: {path} is missing although the journal has steps; give the bisection's --target"
    )]
    NoTargetFile { path: PathBuf },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    BadTarget(String),
}

impl BisectRunError {
    /// A bisection that could not be carried out is a configuration or infrastructure error.
    pub fn exit_code(&self) -> i32 {
        crate::exit::CONFIG_OR_INFRA
    }
}

/// What the bisection looks for in an iteration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub step: String,
    /// `None`: any violation of the step's expectation.
    pub errno: Option<String>,
}

impl Target {
    pub fn parse(s: &str) -> Target {
        match s.split_once(':') {
            Some((step, errno)) => Target {
                step: step.into(),
                errno: Some(errno.into()),
            },
            None => Target {
                step: s.into(),
                errno: None,
            },
        }
    }

    /// [`Target::parse`], checked against the scenario: the step must be one of its step ids
    /// (an `id`, or `<kind>#<n>` in results), the errno a name the guest reports (`EBUSY`, or
    /// `E<number>` for one without a name). A target no iteration could show would spend a
    /// whole bisection for nothing.
    pub fn parse_checked(s: &str, scenario: &crate::scenario::Scenario) -> Result<Target, String> {
        let t = Target::parse(s);
        let ids = crate::run::plan::step_ids(scenario);
        if !ids.contains(&t.step) {
            return Err(format!(
                "--target {s}: scenario `{}` has no step `{}`; its step ids are {}",
                scenario.name,
                t.step,
                ids.join(", ")
            ));
        }
        if let Some(e) = &t.errno {
            let numbered = e
                .strip_prefix('E')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if crashrig_guest::errno_value(e).is_none() && !numbered {
                return Err(format!(
                    "--target {s}: `{e}` is no errno name (as results spell them: EBUSY, EINVAL, \
                     ENOSPC, ...; `{}` alone for any violation of the step)",
                    t.step
                ));
            }
        }
        Ok(t)
    }

    /// A `--target` option, checked ([`Target::parse_checked`]).
    pub fn from_option(
        s: Option<&str>,
        scenario: &crate::scenario::Scenario,
    ) -> Result<Option<Target>, String> {
        s.map(|t| Target::parse_checked(t, scenario)).transpose()
    }

    pub fn text(&self) -> String {
        match &self.errno {
            Some(e) => format!("{}:{e}", self.step),
            None => self.step.clone(),
        }
    }

    /// Whether an iteration shows the target.
    /// Whether a judged iteration shows the target. An iteration whose verdict is `error`
    /// was not judged (a step could not test what it meant, say a workload that had already
    /// failed before its kill, or the infrastructure failed): its umount may well have
    /// returned EBUSY, but that is no sighting for a rate, as it is none for `run`'s.
    pub fn seen_in(&self, it: &IterationRecord) -> bool {
        it.verdict != Verdict::Error
            && it.steps.iter().any(|s| {
                s.id == self.step
                    && !s.ok
                    && self
                        .errno
                        .as_ref()
                        .is_none_or(|e| s.errno.as_deref() == Some(e.as_str()))
            })
    }

    /// The first violation of an iteration, as a target.
    pub fn from_iteration(it: &IterationRecord) -> Option<Target> {
        it.steps.iter().find(|s| !s.ok).map(|s| Target {
            step: s.id.clone(),
            errno: s.errno.clone(),
        })
    }
}

fn target_seen(it: &IterationRecord, target: &str) -> bool {
    Target::parse(target).seen_in(it)
}

fn any_failure(it: &IterationRecord, _: &str) -> bool {
    it.verdict.is_failure()
}

/// How a batch reads for the search: target sightings are failures, clean iterations passes,
/// iterations that failed for another reason (an unrelated WARNING, a hang without the
/// target) are left out and named. No usable iteration makes the candidate unknown.
pub fn batch_outcome(run: &RunRecord, target: &Target) -> (BatchOutcome, Vec<String>) {
    let mut failures = 0;
    let mut clean = 0;
    let mut unrelated = Vec::new();
    for it in &run.iterations {
        if target.seen_in(it) {
            failures += 1;
        } else if it.verdict == Verdict::Pass {
            clean += 1;
        } else {
            unrelated.push(format!(
                "iteration {}: {}",
                it.iteration,
                it.reasons.first().cloned().unwrap_or_default()
            ));
        }
    }
    if failures + clean == 0 {
        let reason = run
            .error
            .clone()
            .or_else(|| unrelated.first().cloned())
            .unwrap_or_else(|| "no iteration ran".into());
        return (BatchOutcome::Unknown { reason }, unrelated);
    }
    (
        BatchOutcome::Ran {
            iterations: failures + clean,
            failures,
        },
        unrelated,
    )
}

/// The candidates of a bisection: what to build for each index.
enum Candidates {
    Commits {
        repo: PathBuf,
        commits: Vec<String>,
        subjects: Vec<String>,
    },
    Patches {
        base: KernelSpec,
        /// Applied under every candidate, the good end included.
        under: Vec<PatchFile>,
        patches: Vec<PatchFile>,
    },
}

impl Candidates {
    fn last(&self) -> usize {
        match self {
            Candidates::Commits { commits, .. } => commits.len() - 1,
            Candidates::Patches { patches, .. } => patches.len(),
        }
    }

    fn describe(&self, k: usize) -> String {
        match self {
            Candidates::Commits {
                commits, subjects, ..
            } => format!(
                "{} {}",
                &commits[k][..12.min(commits[k].len())],
                subjects[k]
            ),
            Candidates::Patches { patches, .. } if k == 0 => {
                format!("base without patches ({} in the series)", patches.len())
            }
            Candidates::Patches { patches, .. } => {
                let p = &patches[k - 1];
                format!(
                    "patch {k}/{}: {} ({})",
                    patches.len(),
                    p.subject,
                    p.path.display()
                )
            }
        }
    }

    fn identity(&self, k: usize) -> String {
        match self {
            Candidates::Commits { commits, .. } => commits[k].clone(),
            Candidates::Patches { patches, .. } if k == 0 => "base".into(),
            Candidates::Patches { patches, .. } => format!("{}", patches[k - 1].path.display()),
        }
    }

    async fn build(
        &self,
        k: usize,
        opts: &BuildOptions,
        cache: &Cache,
        sink: &mut EventSink,
    ) -> Result<ResolvedKernel, KernelError> {
        let (progress, rx) = build_progress();
        let label = self.describe(k);
        let fut = async {
            match self {
                Candidates::Commits { repo, commits, .. } => {
                    let spec = KernelSpec::Git {
                        path: repo.clone(),
                        rev: Some(commits[k].clone()),
                    };
                    kernel::resolve(&spec, opts, cache, &progress).await
                }
                Candidates::Patches {
                    base,
                    under,
                    patches,
                } => {
                    let list = under.iter().chain(&patches[..k]).cloned().collect();
                    kernel::resolve_patches(base, opts, list, cache, &progress).await
                }
            }
        };
        forward_build_progress(&label, sink, fut, rx).await
    }
}

fn git(repo: &Path, args: &[&str]) -> Result<String, BisectRunError> {
    // rev-list and log over a kernel tree's history: seconds, minutes on a cold cache.
    const GIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(10 * 60);
    let mut cmd = std::process::Command::new("git");
    cmd.arg("-C").arg(repo).args(args);
    let out = crate::process::Tool::new(&mut cmd, GIT_LIMIT)
        .output()
        .map_err(BisectRunError::GitRun)?;
    if !out.status.success() {
        return Err(BisectRunError::Git {
            args: args.join(" "),
            repo: repo.to_path_buf(),
            stderr: out.stderr_text().trim().to_string(),
        });
    }
    Ok(out.stdout_text())
}

fn split_path_ref(s: &str) -> Result<(PathBuf, String), BisectRunError> {
    match KernelSpec::parse(s).map_err(SessionError::from)? {
        KernelSpec::Git {
            path,
            rev: Some(rev),
        } => Ok((path, rev)),
        _ => Err(BisectRunError::NotPathRef { spec: s.into() }),
    }
}

fn candidates(args: &BisectOptions) -> Result<(Candidates, String), BisectRunError> {
    if let (Some(good), Some(bad)) = (&args.good, &args.bad) {
        let (repo, good_ref) = split_path_ref(good)?;
        let (repo_b, bad_ref) = split_path_ref(bad)?;
        if std::fs::canonicalize(&repo).ok() != std::fs::canonicalize(&repo_b).ok() {
            return Err(BisectRunError::TwoTrees);
        }
        // The older end comes first: the good one for a regression, the bad one for a fix.
        let ((old_flag, old_spec, old), (new_flag, new_spec, new)) = if args.fix {
            (("--bad", bad, bad_ref), ("--good", good, good_ref))
        } else {
            (("--good", good, good_ref), ("--bad", bad, bad_ref))
        };
        let verify = |flag: &'static str, spec: &str, rev: &str| {
            git(
                &repo,
                &["rev-parse", "--verify", &format!("{rev}^{{commit}}")],
            )
            .map_err(|e| match e {
                BisectRunError::Git { stderr, .. } => BisectRunError::BadRef {
                    flag,
                    spec: spec.to_string(),
                    rev: rev.to_string(),
                    repo: repo.clone(),
                    stderr,
                },
                other => other,
            })
        };
        let base = verify(old_flag, old_spec, &old)?.trim().to_string();
        verify(new_flag, new_spec, &new)?;
        // First-parent order keeps the history linear: with merges, the culprit found is the
        // merge that brought the change in.
        let list = git(
            &repo,
            &[
                "rev-list",
                "--reverse",
                "--first-parent",
                &format!("{old}..{new}"),
            ],
        )?;
        let mut commits = vec![base];
        commits.extend(list.lines().map(str::to_owned));
        if commits.len() < 2 {
            return Err(BisectRunError::NoCommits {
                old: old.clone(),
                old_flag,
                new: new.clone(),
                new_flag,
                hint: if args.fix {
                    "with --fix the bad end is the older one"
                } else {
                    "are --good and --bad swapped? To find a fix, add --fix"
                },
            });
        }
        let subjects = commits
            .iter()
            .map(|c| git(&repo, &["log", "-1", "--format=%s", c]).map(|s| s.trim().to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let range = format!("{}@{old}..{new}", repo.display());
        return Ok((
            Candidates::Commits {
                repo,
                commits,
                subjects,
            },
            range,
        ));
    }
    if args.patches.is_empty() {
        return Err(BisectRunError::NoRange);
    }
    let base_spec = match args.vm.kernels.as_slice() {
        [one] => KernelSpec::parse(one).map_err(SessionError::from)?,
        _ => return Err(BisectRunError::PatchBase),
    };
    if !base_spec.is_built() {
        return Err(BisectRunError::PatchBaseNotBuilt {
            spec: base_spec.to_string(),
        });
    }
    let patches = kernel::patches::expand(&args.patches).map_err(BisectRunError::Series)?;
    if patches.is_empty() {
        return Err(BisectRunError::EmptySeries);
    }
    let under = kernel::patches::expand(&args.base_patches).map_err(BisectRunError::Series)?;
    let paths = |list: &[PathBuf]| {
        list.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" + ")
    };
    let range = if under.is_empty() {
        format!("{base_spec} + {}", paths(&args.patches))
    } else {
        format!(
            "{base_spec} + {} under {}",
            paths(&args.base_patches),
            paths(&args.patches)
        )
    };
    Ok((
        Candidates::Patches {
            base: base_spec,
            under,
            patches,
        },
        range,
    ))
}

/// The `wall-seconds` of an earlier bisect.json; 0 when there is none or it says none.
fn earlier_wall_seconds(path: &Path) -> u64 {
    #[derive(serde::Deserialize)]
    struct Recorded {
        #[serde(rename = "wall-seconds")]
        wall_seconds: u64,
    }
    crate::report::store::read_json::<Recorded>(path).map_or(0, |r| r.wall_seconds)
}

/// The bisection's end result, written as bisect.json.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct BisectResult<'a> {
    scenario: String,
    range: String,
    target: Option<&'a Target>,
    candidates: Vec<String>,
    report: &'a bisect::Report,
    journal: Vec<bisect::Entry>,
    /// What `--amplify` chose, and why.
    amplification: Option<&'a str>,
    /// Wall time, seconds: this invocation's, plus what the bisect.json it resumed from said
    /// (an invocation killed before the end wrote none, so its time is not counted).
    wall_seconds: u64,
    /// The prices of a build and a boot the search last used, from this invocation's
    /// measurements (absent before an iteration was timed: the defaults stood).
    prices: Option<bisect::Prices>,
}

pub async fn bisect(args: BisectOptions) -> Result<i32, BisectRunError> {
    let started = std::time::Instant::now();
    let mut session = Session::new(args.vm.clone());
    let mut loaded = session.load_scenario(&args.scenario)?;
    // Before anything is built: a target no iteration could show.
    let given_target = Target::from_option(args.target.as_deref(), &loaded.scenario)
        .map_err(BisectRunError::BadTarget)?;
    let (cands, range) = candidates(&args)?;
    let last = cands.last();
    let mut config = Config {
        confidence: args.confidence,
        good_rate: args
            .false_positive_rate
            .map(bisect::RatePrior::guess)
            .unwrap_or_default(),
        ..Config::default()
    };
    if let Some(n) = args.iterations {
        config.max_batch = n.max(1);
    }
    if let Some(n) = args.max_iterations {
        config.max_iterations = n;
    }
    config.direction = if args.fix {
        Direction::Fix
    } else {
        Direction::Regression
    };
    // A setting the search cannot use is refused before the results directory holds a
    // journal of it (which would make the same --out refuse the corrected command).
    config.validate()?;
    session.create_out(args.resume)?;
    let out = session.out.clone();
    let cache = session.cache.clone();
    let header = Header::new(&loaded.scenario.name, &range, last, config.clone());
    let journal_path = out.join("bisect.journal");
    let target_path = out.join("bisect-target.json");
    let mut target: Option<Target> = given_target;
    // A resume of a finished bisection (or one that goes on) keeps the time already spent.
    let earlier_wall = if args.resume {
        earlier_wall_seconds(&out.join("bisect.json"))
    } else {
        0
    };
    let (mut journal, mut bisector, mut images, unrecorded) = if args.resume {
        let (journal, replay) = Journal::resume(&journal_path, &header)?;
        if let Some(w) = &replay.warning {
            session.setup_sink().warn(w.clone());
        }
        let recorded = match std::fs::read(&target_path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(StoreError::Read {
                    path: target_path,
                    source,
                }
                .into())
            }
        };
        target = resumed_target(
            &target_path,
            recorded.as_deref(),
            target,
            !replay.entries.is_empty(),
        )?;
        let b = Bisector::from_journal(&replay)?;
        let (images, unrecorded) = ImageIndex::from_replay(&replay);
        (journal, b, images, unrecorded)
    } else {
        let j = Journal::create(&journal_path, &header).map_err(BisectRunError::JournalCreate)?;
        (
            j,
            Bisector::new(last, config.clone())?,
            ImageIndex::default(),
            Vec::new(),
        )
    };
    if let Some(t) = &target {
        // The evidence a resume replays was gathered for this target: record it first.
        write_json(&target_path, t)?;
    }

    let opts = BuildOptions {
        kconfig: args.kconfig.clone(),
        patches: Vec::new(),
        scenario_kconfig: loaded.scenario.kconfig.clone(),
    };
    let image = session.image().await?;
    let mut accel = None;
    // A resumed bisection appends its runs to the results it has (run directories are new).
    let existing = if args.resume {
        session.existing_results()?
    } else {
        None
    };
    let mut run_index = existing.as_ref().map_or(0, |r| r.runs.len());
    let writer = match existing {
        Some(results) => ResultsWriter::with_existing(&out, results),
        None => ResultsWriter::new(&out, HostInfo::default()),
    };
    let mut sink = session.results_sink(writer);
    sink.emit(Event::BisectStarted {
        scenario: loaded.scenario.name.clone(),
        range: range.clone(),
        candidates: last + 1,
        journal: journal_path.clone(),
    });
    // A journal written before images were recorded: learn the tested candidates' images again
    // (from the build cache normally) so a kernel identical to one of them is still caught.
    for k in unrecorded {
        let Ok(kernel) = cands.build(k, &opts, &cache, &mut sink).await else {
            continue;
        };
        let built = (k, kernel.image_sha256.as_str());
        match record_image(
            built,
            &mut images,
            &mut bisector,
            &mut journal,
            &cands,
            &mut sink,
        ) {
            // A candidate that already ran cannot become an alias: its runs stand.
            Ok(_) | Err(BisectRunError::Bisect(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let mut amplification = None;
    if let (Some(budget), false) = (args.amplify, args.resume) {
        let end = if args.fix { 0 } else { last };
        let kernel = cands
            .build(end, &opts, &cache, &mut sink)
            .await
            .map_err(|source| BisectRunError::BadEnd {
                candidate: cands.describe(end),
                source,
            })?;
        let host = session.host(&kernel.image).await?;
        accel = Some(host.accel);
        sink.emit(Event::Host(host.info));
        let (winner, why) = amplify_end(
            &args,
            budget,
            target.as_ref(),
            (cands.describe(end), kernel),
            &image,
            host.accel,
            &out,
            &cache,
            &mut sink,
            &mut run_index,
        )
        .await
        .map_err(Box::new)?;
        sink.info(why.clone());
        loaded = winner;
        amplification = Some(why);
    }

    // Learn the target from the bad end first when it was not given: the first violation it
    // shows (the bad end of a regression is the newest candidate, of a fix the oldest).
    let bad_end = if args.fix { 0 } else { last };
    let mut search_said = false;
    // What builds, boots and iterations take here prices them for the search.
    let mut meter = bisect::CostMeter::default();
    let mut timed_builds = std::collections::BTreeSet::new();
    let mut prices: Option<bisect::Prices> = None;
    loop {
        let action = if target.is_none() {
            Action::Test {
                candidate: bad_end,
                iterations: config.max_batch.max(20),
                stop_at_first_failure: true,
            }
        } else {
            bisector.next_action()
        };
        let (k, iterations, stop_early) = match action {
            Action::Done(report) => {
                let candidates: Vec<String> = (0..=last).map(|k| cands.describe(k)).collect();
                let replay = Journal::replay(&journal_path)?;
                let result = BisectResult {
                    scenario: loaded.scenario.name.clone(),
                    range: range.clone(),
                    target: target.as_ref(),
                    candidates: candidates.clone(),
                    report: &report,
                    journal: replay.entries,
                    amplification: amplification.as_deref(),
                    wall_seconds: earlier_wall + started.elapsed().as_secs(),
                    prices,
                };
                let path = out.join("bisect.json");
                write_json(&path, &result)?;
                super::session::finish(&mut sink)?;
                let mut text = report_text(&report, &candidates, target.as_ref());
                text.push_str(&format!(
                    "wall time: {}\n",
                    humantime::format_duration(std::time::Duration::from_secs(result.wall_seconds))
                ));
                if let Some(p) = &prices {
                    text.push_str(&format!("search prices (measured): {p}\n"));
                }
                if let Some(a) = &amplification {
                    text.push_str(a);
                    text.push('\n');
                }
                sink.emit(Event::Report { text });
                return Ok(match report.status {
                    bisect::Status::Found => crate::exit::OK,
                    // No difference was shown: nothing to bisect, as with a bad argument.
                    bisect::Status::NoDifference | bisect::Status::WrongDirection => {
                        crate::exit::CONFIG_OR_INFRA
                    }
                    _ => crate::exit::EXPECTATION_FAILED,
                });
            }
            Action::Test {
                candidate,
                iterations,
                stop_at_first_failure,
            } => (candidate, iterations, stop_at_first_failure),
        };
        announce_search(&bisector, &mut search_said, &mut sink);
        sink.emit(step_event(&bisector, &cands, k, (iterations, stop_early)));
        let build_started = std::time::Instant::now();
        let built = cands.build(k, &opts, &cache, &mut sink).await;
        if timed_builds.insert(k) {
            meter.build(build_started.elapsed().as_secs_f64());
        }
        let kernel = match built {
            Ok(k) => k,
            Err(source) if target.is_none() => {
                return Err(BisectRunError::BadEnd {
                    candidate: cands.describe(k),
                    source,
                })
            }
            // A patch that does not apply or an option the tree lacks says nothing about the
            // target: skip the candidate. A broken host (disk full, missing tool) would make
            // every later candidate unknown too: stop.
            Err(source) if !source.is_input_error() => {
                return Err(BisectRunError::Host {
                    candidate: cands.describe(k),
                    source,
                })
            }
            Err(why) => {
                let chain = crate::report::error_chain(&why);
                report_build_failure(&mut sink, &cands.describe(k), &chain);
                let outcome = BatchOutcome::Unknown {
                    reason: format!("build failed: {chain}"),
                };
                record(&mut bisector, &mut journal, &cands, k, outcome)?;
                continue;
            }
        };
        let built = (k, kernel.image_sha256.as_str());
        let seen = record_image(
            built,
            &mut images,
            &mut bisector,
            &mut journal,
            &cands,
            &mut sink,
        )?;
        if let Seen::SameAs(_) = seen {
            continue;
        }
        let accel = match accel {
            Some(a) => a,
            None => {
                let host = session.host(&kernel.image).await?;
                let a = host.accel;
                sink.emit(Event::Host(host.info));
                accel = Some(a);
                a
            }
        };
        let restore = session.vm.restore;
        let batch_opts = |target: Option<&Target>, iterations: u32, stop_early: bool| RunOptions {
            iterations: Some(iterations),
            restore,
            stop_when: match (target, stop_early) {
                (None, _) => Some(any_failure as StopWhen),
                (Some(_), true) => Some(target_seen as StopWhen),
                (Some(_), false) => None,
            },
            stop_arg: target.map(Target::text).unwrap_or_default(),
            ..RunOptions::new(accel, out.clone(), cache.clone())
        };
        let first = batch_opts(target.as_ref(), iterations, stop_early);
        // Consecutive batches on this candidate run on one booted machine.
        let on = OnKernel {
            loaded: &loaded,
            kernel: &kernel,
            image_key: &image.key,
        };
        run_index = consecutive_batches(
            &mut Rig::new(qemu_machine(&on, &image, &first)),
            &on,
            first,
            run_index,
            &mut sink,
            |run, sink| {
                if target.is_none() {
                    let first = run.iterations.iter().find(|i| i.verdict.is_failure());
                    match first.and_then(Target::from_iteration) {
                        Some(t) => {
                            sink.emit(Event::BisectTarget { target: t.text() });
                            write_json(&target_path, &t)?;
                            target = Some(t);
                        }
                        None => {
                            return Err(BisectRunError::NoTarget {
                                candidate: cands.describe(k),
                                iterations: run.iterations.len(),
                                why: run
                                    .error
                                    .as_ref()
                                    .map(|e| format!(" ({e})"))
                                    .unwrap_or_default(),
                            })
                        }
                    }
                }
                let t = target.as_ref().expect("set above");
                for b in &run.boots {
                    meter.boot(b.ready_after_ms as f64 / 1000.0);
                }
                for i in &run.iterations {
                    meter.iteration(i.duration_ms / 1000.0);
                }
                if let Some(p) = meter.prices((config.build_cost, config.boot_cost)) {
                    bisector.set_prices(p.build_cost, p.boot_cost)?;
                    prices = Some(p);
                }
                let (outcome, unrelated) = batch_outcome(&run, t);
                for u in unrelated {
                    sink.emit(Event::BisectUncounted {
                        candidate: k,
                        why: u,
                    });
                }
                record(&mut bisector, &mut journal, &cands, k, outcome)?;
                match bisector.next_action() {
                    Action::Test {
                        candidate,
                        iterations,
                        stop_at_first_failure,
                    } if candidate == k => {
                        let batch = (iterations, stop_at_first_failure);
                        announce_search(&bisector, &mut search_said, sink);
                        sink.emit(step_event(&bisector, &cands, k, batch));
                        Ok(Some(batch_opts(
                            target.as_ref(),
                            iterations,
                            stop_at_first_failure,
                        )))
                    }
                    _ => Ok(None),
                }
            },
        )
        .await?;
    }
}

type StopWhen = fn(&IterationRecord, &str) -> bool;

/// Say at once that a candidate did not build, with its first compiler error (the whole make
/// tail is in the journal and the final report).
fn report_build_failure(sink: &mut EventSink, candidate: &str, chain: &str) {
    sink.warn(format!(
        "{candidate} does not build ({}): unknown, skipped",
        build_failure_reason(chain)
    ));
}

/// The first error line of a build failure ([`crate::kernel::build::error_lines`]), its path
/// shortened to the tree's; else the failure's first line.
fn build_failure_reason(chain: &str) -> String {
    let errors = crate::kernel::build::error_lines(chain);
    let mut lines = errors.lines().map(str::trim);
    let Some(line) = lines.next() else {
        return chain.lines().next().unwrap_or_default().trim().to_string();
    };
    // Build worktrees live in the cache: `.../worktrees/<hash>/fs/namespace.c` -> `fs/namespace.c`.
    let short = |line: &str| match line.find("/worktrees/") {
        Some(at) => {
            let rest = &line[at + "/worktrees/".len()..];
            rest.find('/')
                .map_or(line, |slash| &rest[slash + 1..])
                .to_string()
        }
        None => line.to_string(),
    };
    // An error in a macro's header (`include/linux/printk.h`) says little: the source line
    // that used the macro is the one the candidate changed.
    let header = line.split(':').next().is_some_and(|f| f.ends_with(".h"));
    let used = lines
        .take_while(|l| l.contains(": note: in expansion of macro"))
        .find(|l| l.split(':').next().is_some_and(|f| f.ends_with(".c")));
    match used.filter(|_| header) {
        Some(used) => format!("{} ({})", short(line), short(used)),
        None => short(line),
    }
}

/// Says once, when the search begins, what the ends showed, and whether the test that holds
/// however often the ends were looked at confirms it (the search may begin without it; the
/// final report says so again if the answer rests on it).
fn announce_search(bisector: &Bisector, said: &mut bool, sink: &mut EventSink) {
    if *said {
        return;
    }
    let Some((e, confirmed)) = bisector.ends_shown() else {
        return;
    };
    *said = true;
    let needed = bisect::evidence_needed(bisector.config().confidence);
    sink.info(format!(
        "the ends differ: good {} ({}), bad {} ({}); P(bad rate above good) = {:.3}; Bayes factor against equal rates = {} ({}); searching",
        e.good_candidate,
        e.good.text(),
        e.bad_candidate,
        e.bad.text(),
        e.probability,
        bayes_factor_text(e.bayes_factor),
        if confirmed {
            "confirmed".to_string()
        } else {
            format!(
                "{} would confirm it however often the ends were looked at: not yet confirmed",
                bayes_factor_text(needed)
            )
        }
    ));
}

fn step_event(
    bisector: &Bisector,
    cands: &Candidates,
    k: usize,
    (iterations, until_target): (u32, bool),
) -> Event {
    let p = bisector.progress();
    Event::BisectStep(Box::new(BisectStep {
        candidate: cands.describe(k),
        iterations,
        until_target,
        fix: bisector.config().direction == Direction::Fix,
        builds: p.builds,
        iterations_so_far: p.iterations,
        range: p.range,
        leader: p.leader.map(|l| (l.candidate, l.probability)),
    }))
}

/// The scenario and kernel a machine runs.
pub struct OnKernel<'a> {
    pub loaded: &'a LoadedScenario,
    pub kernel: &'a ResolvedKernel,
    pub image_key: &'a str,
}

/// The QEMU machine for `on` with `opts`' disk keeping and restore mode.
fn qemu_machine<'a>(
    on: &OnKernel<'a>,
    image: &'a GuestImage,
    opts: &RunOptions,
) -> QemuMachine<'a> {
    QemuMachine::new(
        &on.loaded.scenario,
        on.kernel,
        image,
        opts.cache.clone(),
        opts.accel,
        opts.keep,
    )
    .with_restore(opts.restore)
}

/// Runs batches of one kernel and scenario on one machine while `next` asks for another (it
/// gets each batch's record and returns the next batch's options, or `None`): a batch after a
/// clean one starts on the running machine, without booting or setting up again. The machine
/// is stopped before returning, on every path. Returns the next run index.
pub async fn consecutive_batches<M: Machine, E>(
    rig: &mut Rig<M>,
    on: &OnKernel<'_>,
    mut opts: RunOptions,
    mut index: usize,
    sink: &mut EventSink,
    mut next: impl FnMut(RunRecord, &mut EventSink) -> Result<Option<RunOptions>, E>,
) -> Result<usize, E> {
    let result = loop {
        let run = run_batch(rig, on.loaded, on.kernel, on.image_key, &opts, index, sink).await;
        index += 1;
        match next(run, sink) {
            Ok(Some(o)) => opts = o,
            Ok(None) => break Ok(index),
            Err(e) => break Err(e),
        }
    };
    rig.stop().await;
    result
}

/// The target of a resumed bisection. The journal's evidence was counted for the target in
/// bisect-target.json: a `--target` that differs is refused, and when the file is unreadable
/// after steps were journaled the target is never learned again (a new one would mix
/// evidence of two outcomes).
fn resumed_target(
    path: &Path,
    recorded: Option<&[u8]>,
    given: Option<Target>,
    has_steps: bool,
) -> Result<Option<Target>, BisectRunError> {
    let parsed = recorded.map(serde_json::from_slice::<Target>);
    match (parsed, given) {
        (Some(Ok(r)), Some(g)) if r != g => Err(BisectRunError::OtherTarget {
            given: g.text(),
            recorded: r.text(),
            path: path.to_path_buf(),
        }),
        (Some(Ok(r)), _) => Ok(Some(r)),
        (_, Some(g)) => Ok(Some(g)),
        (Some(Err(source)), None) if has_steps => Err(BisectRunError::TornTarget {
            path: path.to_path_buf(),
            source,
        }),
        (None, None) if has_steps => Err(BisectRunError::NoTargetFile {
            path: path.to_path_buf(),
        }),
        _ => Ok(None),
    }
}

/// `--amplify`: the search on the bad end; returns the scenario with the winning setting and
/// a sentence saying what was chosen and why.
#[allow(clippy::too_many_arguments)]
async fn amplify_end(
    args: &BisectOptions,
    budget: u64,
    target: Option<&Target>,
    end: (String, crate::kernel::ResolvedKernel),
    image: &crate::image::GuestImage,
    accel: crate::vm::Accel,
    out: &Path,
    cache: &crate::cache::Cache,
    sink: &mut crate::report::events::EventSink,
    run_index: &mut usize,
) -> Result<(LoadedScenario, String), crate::run::amplify_run::AmplifyRunError> {
    use crate::run::amplify_run::{load_setting, search, space_of, AmplifyOptions, Prepared};
    let base = load_setting(&args.scenario, &args.vm.setting()?)?;
    let space = space_of(&base.scenario, &args.vm.setting()?)?;
    let opts = AmplifyOptions {
        scenario: args.scenario.clone(),
        against: None,
        target: target.map(Target::text),
        budget,
        batch: 10,
        confidence: 0.95,
        seed: None,
        vm: args.vm.clone(),
        build: Default::default(),
    };
    let label = end.0.clone();
    let prepared = Prepared {
        kernels: vec![end],
        image: image.clone(),
        accel,
    };
    let (report, found, space) =
        search(&opts, space, &prepared, out, cache, sink, run_index).await?;
    // Only a winner shown to beat the default replaces it (as `crashrig amplify` rewrites a
    // scenario only then): a leader on a few lucky runs would bisect with a setting no better.
    let proven = report.proven_winner();
    let winner = proven.as_ref().ok().and_then(|&w| report.row(w));
    let leader = report.leader.and_then(|w| report.row(w));
    let default = report.row(report.default);
    let setting = winner.map_or_else(
        || space.setting(&space.default_arm()),
        |w| space.setting(&w.arm),
    );
    let rate = |r: Option<&crate::amplify::Row>| {
        r.map_or("not run".to_string(), |r| {
            format!(
                "{}/{} ({:.0}%, 95% CI {:.0}%-{:.0}%)",
                r.counts[0].hits,
                r.counts[0].trials,
                100.0 * r.rates[0],
                100.0 * r.intervals[0].0,
                100.0 * r.intervals[0].1
            )
        })
    };
    let why = format!(
        "amplify: bisecting with {} (target {} on the bad end {label}: {} against the default's {}{}; {} iterations of search over {} settings)",
        match (winner, &proven) {
            (Some(w), _) => w.label.clone(),
            (None, Err(why)) => format!("the default: {why}"),
            (None, Ok(_)) => "the default".to_string(),
        },
        found.as_ref().map(Target::text).unwrap_or_else(|| "none seen".into()),
        match (winner, leader) {
            (None, Some(l)) if l.id != report.default => format!("the leader {} {}", l.label, rate(Some(l))),
            (w, _) => rate(w),
        },
        rate(default),
        report
            .fisher_vs_default
            .map(|p| format!(", Fisher p {}", crate::outcome::stats::p_text(p)))
            .unwrap_or_default(),
        report.spent,
        space.size(),
    );
    Ok((load_setting(&args.scenario, &setting)?, why))
}

/// Records what building candidate `k` gave (its image's sha256): a new image goes to the
/// journal; an image identical to an earlier candidate's makes `k` that candidate's alias, in
/// the bisector, the journal and on the terminal. `Err(BisectRunError::Bisect)` when the
/// bisector refuses the alias (`k` already ran), and nothing is recorded then.
fn record_image(
    (k, sha256): (usize, &str),
    images: &mut ImageIndex,
    bisector: &mut Bisector,
    journal: &mut Journal,
    cands: &Candidates,
    sink: &mut EventSink,
) -> Result<Seen, BisectRunError> {
    let seen = images.built(k, sha256);
    match seen {
        Seen::New => {
            journal.append(
                k,
                &cands.identity(k),
                Step::Built {
                    image_sha256: sha256.to_string(),
                },
            )?;
        }
        Seen::SameAs(same) => {
            bisector.record_alias(k, same)?;
            sink.emit(Event::BisectAlias {
                candidate: k,
                same_as: same,
            });
            journal.append(k, &cands.identity(k), Step::Alias { same_as: same })?;
        }
        Seen::Known => {}
    }
    Ok(seen)
}

fn record(
    bisector: &mut Bisector,
    journal: &mut Journal,
    cands: &Candidates,
    k: usize,
    outcome: BatchOutcome,
) -> Result<(), BisectRunError> {
    let step = match &outcome {
        BatchOutcome::Ran {
            iterations,
            failures,
        } => Step::Ran {
            iterations: *iterations,
            failures: *failures,
        },
        BatchOutcome::Unknown { reason } => Step::Unknown {
            reason: reason.clone(),
        },
    };
    bisector.record(k, outcome)?;
    journal.append(k, &cands.identity(k), step)?;
    Ok(())
}

/// `3.1`, `210`, `>1e6`: a Bayes factor for people.
fn bayes_factor_text(bf: f64) -> String {
    if bf >= 1e6 {
        ">1e6".into()
    } else if bf >= 100.0 {
        format!("{bf:.0}")
    } else {
        format!("{bf:.1}")
    }
}

/// One kernel's verification runs: none when its runs from the search were enough (the
/// verdict above counts them), rather than a "0/0 = 0% [0%, 100%]" that reads as a rate.
fn verification_runs_text(runs: &bisect::MeasuredRate) -> String {
    if runs.iterations == 0 {
        "none (its runs from the search were enough)".to_string()
    } else {
        runs.text()
    }
}

fn report_text(r: &bisect::Report, candidates: &[String], target: Option<&Target>) -> String {
    let name = |k: usize| candidates.get(k).cloned().unwrap_or_else(|| k.to_string());
    let fix = r.direction == bisect::Direction::Fix;
    // What is looked for: the commit that raised the rate, or (--fix) the one that lowered it.
    let noun = if fix { "fix" } else { "culprit" };
    let mut s = String::new();
    s.push_str(&format!(
        "bisect: {}; target {}\n",
        match r.status {
            bisect::Status::Found if fix => "found the fix",
            status => status.describe(),
        },
        target
            .map(Target::text)
            .unwrap_or_else(|| "not found".into()),
    ));
    let no_search = matches!(
        r.status,
        bisect::Status::NoDifference | bisect::Status::WrongDirection
    );
    if let Some(e) = &r.ends {
        // When the search ran, these are the runs that showed the difference; the evidence
        // table below counts the ends' later runs too.
        s.push_str(&format!(
            "ends{}: good {} ({}), bad {} ({}); P(bad rate above good) = {:.3}, Bayes factor against equal rates = {}, one-sided Fisher p {}\n",
            if no_search { "" } else { " before the search" },
            e.good_candidate,
            e.good.text(),
            e.bad_candidate,
            e.bad.text(),
            e.probability,
            bayes_factor_text(e.bayes_factor),
            crate::outcome::stats::p_text(e.fisher_p)
        ));
    }
    if r.status == bisect::Status::WrongDirection {
        s.push_str(if fix {
            "no fix: the newer (good) end fails more often than the older (bad) one; if the rate went up, look for the culprit without --fix\n"
        } else {
            "no culprit: the older (good) end fails more often than the newer (bad) one; if the rate went down, look for the fix with --fix (then --bad is the older end)\n"
        });
    } else if no_search {
        s.push_str(&format!(
            "no {noun}: the ends did not show the difference at the confidence asked"
        ));
        match r.iterations_needed {
            Some(n) => s.push_str(&format!(
                "; at the observed rates about {n} iterations per end would separate them (--max-iterations)\n"
            )),
            None => match &r.ends {
                Some(e) if e.bad.rate < e.good.rate => s.push_str(&format!(
                    "; the bad end ({}) does not fail more often than the good end ({})\n",
                    e.bad.text(),
                    e.good.text()
                )),
                _ => s.push_str("; they show the same rate\n"),
            },
        }
    }
    match r.culprit {
        Some(c) => {
            s.push_str(&format!(
                "{noun}: {} (posterior {:.3})\n",
                name(c),
                r.confidence
            ));
            // The search may start on the ends' posterior alone; say when the named change
            // rests on the verification rather than on the ends' own difference.
            if !r.ends_confirmed && r.ends.is_some() {
                s.push_str(&format!(
                    "  the ends' runs alone did not confirm a difference by a test that holds \
                     however often it was looked at (a Bayes factor against equal rates of {} \
                     needed); the {noun} rests on the search and its verification\n",
                    bayes_factor_text(r.evidence_needed)
                ));
            }
        }
        None => {
            if let Some(range) = &r.range {
                s.push_str(&format!(
                    "no single {noun} at the target confidence; the {noun} is in candidates {}-{} with probability {:.3}\n",
                    range.first, range.last, range.mass
                ));
                if !r.ends_confirmed {
                    s.push_str(&format!(
                        "  if the rate changed at all: the ends' runs do not confirm a difference by a test that holds however often it was looked at (a Bayes factor against equal rates of {} needed)\n",
                        bayes_factor_text(r.evidence_needed)
                    ));
                }
            }
        }
    }
    if !r.top.is_empty() && !no_search {
        s.push_str("top suspects:\n");
        for sp in &r.top {
            s.push_str(&format!(
                "  {:.3}  {}\n",
                sp.probability,
                name(sp.candidate)
            ));
        }
    }
    if let (Some(rates), true) = (&r.rates, r.iterations > 0) {
        let fix = r.direction == bisect::Direction::Fix;
        let (before, after) = if fix {
            (
                (&rates.bad, &rates.bad_runs),
                (&rates.good, &rates.good_runs),
            )
        } else {
            (
                (&rates.good, &rates.good_runs),
                (&rates.bad, &rates.bad_runs),
            )
        };
        let rests_on = match (before.1, after.1) {
            (Some(b), Some(a)) => format!(
                "; each interval at least the Wilson interval of its side's pooled runs, before {}/{}, after {}/{}",
                b.failures, b.iterations, a.failures, a.iterations
            ),
            _ => String::new(),
        };
        s.push_str(&format!(
            "rates around candidate {}: before {} after {} (posterior mean, 95% interval{rests_on})\n",
            rates.culprit,
            before.0.text(),
            after.0.text(),
        ));
    }
    if let Some(v) = &r.verified {
        // A candidate whose kernel is byte-identical to another's ran on that one's: say so,
        // or its "fresh runs" seem to come from nowhere (its evidence row shows none).
        let kernel = |label: &str, c: usize, runs: &str, rate: &bisect::MeasuredRate| {
            let on = r
                .evidence
                .iter()
                .find(|row| row.candidate == c)
                .and_then(|row| row.alias_of)
                .map_or(String::new(), |a| {
                    format!(" (on candidate {a}'s identical kernel)")
                });
            format!("{label} {c} {runs}{on} {}", rate.text())
        };
        // The fresh runs are the higher-rate kernel's: the culprit's, or with --fix the
        // parent's (the fix is the lower-rate one).
        let fresh = kernel(
            if fix { "parent" } else { "culprit" },
            v.bad_candidate,
            "fresh runs",
            &v.bad,
        );
        let every = kernel(
            if fix { "fix" } else { "parent" },
            v.good_candidate,
            "every run",
            &v.good,
        );
        let (named, parent) = if fix { (every, fresh) } else { (fresh, every) };
        s.push_str(&format!(
            "verification {}: {named}, {parent}; P({}) = {:.3}, one-sided Fisher p {}\n",
            if v.holds { "holds" } else { "did not hold" },
            if fix {
                "parent's rate above the fix's"
            } else {
                "culprit rate above parent"
            },
            v.probability,
            crate::outcome::stats::p_text(v.fisher_p)
        ));
        if let Some(all) = r.verification_runs.as_ref().filter(|a| {
            a.rounds > 1
                || a.bad.iterations != v.bad.iterations
                || a.good.iterations != v.good.iterations
        }) {
            // The verdict judges the last round's fresh runs only: show what every round ran.
            s.push_str(&format!(
                "  every verification run ({}, {} in all): {} {} {}, {} {} {}{}\n",
                crate::report::plural(u64::from(all.rounds), "round"),
                crate::report::plural(r.verify_iterations, "iteration"),
                if fix { "parent" } else { "culprit" },
                v.bad_candidate,
                verification_runs_text(&all.bad),
                if fix { "fix" } else { "parent" },
                v.good_candidate,
                verification_runs_text(&all.good),
                if all.rounds > 1 {
                    "; each round judges its own fresh runs, the earlier rounds' are in the posterior"
                } else {
                    ""
                },
            ));
        }
    }
    s.push_str(&format!(
        "spent: {} ({} on the ends, {} searching, {} verifying), {}, {}\n",
        crate::report::plural(r.total_iterations(), "iteration"),
        r.end_iterations,
        r.iterations,
        r.verify_iterations,
        crate::report::plural(r.total_builds(), "build"),
        crate::report::plural(r.boots, "boot")
    ));
    s.push_str("evidence (candidate: target seen / iterations, then verification):\n");
    for row in r.evidence.iter().filter(|row| {
        row.iterations + row.verify_iterations > 0
            || row.unknown.is_some()
            || row.alias_of.is_some()
    }) {
        let extra = match (&row.unknown, &row.alias_of) {
            (Some(u), _) => format!("  skipped: {u}"),
            (_, Some(a)) => format!("  same kernel as {a}"),
            _ => String::new(),
        };
        let verify = if row.verify_iterations > 0 {
            format!(" + {}/{}", row.verify_failures, row.verify_iterations)
        } else {
            String::new()
        };
        s.push_str(&format!(
            "  {:>3}: {:>3}/{:<3}{:<9} {}{}\n",
            row.candidate,
            row.failures,
            row.iterations,
            verify,
            name(row.candidate),
            extra
        ));
    }
    s
}

/// What `crashrig check` tests, as plain values.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub scenario: PathBuf,
    /// Kernel config fragments (built kernels).
    pub kconfig: Vec<String>,
    /// Patches on top of the kernel (built kernels).
    pub patches: Vec<PathBuf>,
    /// Most iterations (default: the scenario's; with a reference, 60).
    pub iterations: Option<u32>,
    /// What counts, `STEP:ERRNO` or `STEP`; default: any failed iteration.
    pub target: Option<String>,
    /// The rate of a good kernel: "bad" means significantly above it.
    pub reference: Option<Reference>,
    /// The rate the sequential test is built to recognise as bad (default: twice the
    /// reference rate, at least 0.25 above it, at most halfway to 1).
    pub bad_rate: Option<f64>,
    /// Error rate of each verdict: `1 - confidence` (default 0.95).
    pub confidence: f64,
    pub vm: VmOptions,
}

/// Where the reference rate of `crashrig check` comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Reference {
    /// `--reference-rate R`.
    Rate(f64),
    /// `--reference SPEC`: measured once with this many iterations and cached.
    Kernel { spec: String, iterations: u32 },
}

/// The reference measured on a kernel (cached under `check-reference/` in the crashrig cache,
/// keyed by kernel image, scenario file, setting, target and iterations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MeasuredReference {
    pub kernel: String,
    pub image_sha256: String,
    pub iterations: u32,
    pub failures: u32,
}

impl MeasuredReference {
    /// The rate the test compares with: `(f + 1) / (n + 2)`, which is never exactly 0 after
    /// a finite clean measurement (a candidate is not called bad on one sighting because the
    /// reference happened to show none in its runs).
    pub fn rate(&self) -> f64 {
        (f64::from(self.failures) + 1.0) / (f64::from(self.iterations) + 2.0)
    }
}

/// What `crashrig check` found.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    pub outcome: BatchOutcome,
    /// With a reference: the sequential test, its verdict, and the measured reference.
    pub rate: Option<(RateTest, RateVerdict)>,
    pub measured: Option<(MeasuredReference, bool)>,
}

impl CheckReport {
    fn unknown(reason: String) -> CheckReport {
        CheckReport {
            outcome: BatchOutcome::Unknown { reason },
            rate: None,
            measured: None,
        }
    }

    /// `git bisect run`'s exit code: 0 good, 1 bad, 125 cannot test or cannot tell.
    pub fn exit_code(&self) -> i32 {
        match (&self.outcome, &self.rate) {
            (BatchOutcome::Ran { .. }, Some((_, verdict))) => verdict.exit_code(),
            _ => bisect::check_exit_code(&self.outcome),
        }
    }

    /// One line for people.
    pub fn text(&self) -> String {
        let mut s = match &self.outcome {
            BatchOutcome::Ran {
                iterations,
                failures,
            } => format!(
                "check: {}",
                bisect::MeasuredRate::new(u64::from(*failures), u64::from(*iterations)).text()
            ),
            BatchOutcome::Unknown { reason } => format!("check: cannot test: {reason}"),
        };
        if let Some((m, cached)) = &self.measured {
            s.push_str(&format!(
                "; reference {} {} ({})",
                m.kernel,
                bisect::MeasuredRate::new(u64::from(m.failures), u64::from(m.iterations)).text(),
                if *cached { "cached" } else { "measured now" }
            ));
        }
        // Without a reference the verdict is whether the target was seen at all.
        if let (BatchOutcome::Ran { iterations, .. }, None) = (&self.outcome, &self.rate) {
            match bisect::check_exit_code(&self.outcome) {
                bisect::EXIT_BAD => s.push_str("; bad: the target was seen"),
                bisect::EXIT_GOOD => s.push_str(&format!(
                    "; good: the target was not seen in {iterations} iterations"
                )),
                _ => s.push_str("; cannot test: no iteration ran"),
            }
        }
        if let (BatchOutcome::Ran { .. }, Some((t, v))) = (&self.outcome, &self.rate) {
            s.push_str(&format!(
                "; {} (sequential test of {:.1}% against {:.1}%, each error at most {:.0}%)",
                match v {
                    RateVerdict::Good => "good",
                    RateVerdict::Bad => "bad",
                    RateVerdict::CannotTell => "cannot tell within the budget",
                },
                100.0 * t.reference,
                100.0 * t.bad_rate,
                100.0 * (1.0 - t.confidence)
            ));
        }
        s
    }
}

/// `crashrig check`, for `git bisect run`: good, bad, or unknown (cannot test: build or boot
/// failure, only unrelated failures, or bad input). Without a reference, "bad" means the
/// target was seen; with one, that the rate is significantly above the reference rate.
pub async fn check(args: CheckOptions) -> CheckReport {
    // The rate test's options are checked before anything is built, booted or measured.
    if let Err(e) = check_rate_options(&args) {
        return CheckReport::unknown(crate::report::error_chain(&e));
    }
    let mut session = Session::new(args.vm.clone());
    let loaded = match session.load_scenario(&args.scenario) {
        Ok(l) => l,
        Err(e) => return CheckReport::unknown(crate::report::error_chain(&e)),
    };
    let spec_text = match args.vm.kernels.as_slice() {
        [one] => one.clone(),
        [] => ".".to_string(),
        _ => return CheckReport::unknown("check takes one --kernel".into()),
    };
    match check_inner(&args, &loaded, &spec_text, &mut session).await {
        Ok(r) => r,
        Err(e) => CheckReport::unknown(crate::report::error_chain(&e)),
    }
}

/// The sequential test's options, as far as they are known before measuring: with
/// `--reference-rate` all of them; with `--reference SPEC` the bad rate must at least be above
/// 0, the lowest rate a measurement can give.
fn check_rate_options(args: &CheckOptions) -> Result<(), CheckError> {
    let reference = match &args.reference {
        None => return Ok(()),
        Some(Reference::Rate(r)) => *r,
        Some(Reference::Kernel { .. }) => 0.0,
    };
    RateTest::new(
        reference,
        args.bad_rate,
        args.confidence,
        args.iterations.unwrap_or(DEFAULT_CHECK_BUDGET),
    )
    .map(drop)
    .map_err(CheckError::RateTest)
}

/// Why `crashrig check` could not test a kernel: every one of these is exit 125 for
/// `git bisect run` ("cannot test"), with this message as the reason.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("read the kernel `{spec}`")]
    Spec {
        spec: String,
        #[source]
        source: crate::kernel::spec::SpecError,
    },
    #[error("build {spec}")]
    Build {
        spec: String,
        #[source]
        source: KernelError,
    },
    #[error("read {}", path.display())]
    ReadScenario {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("open the reference cache")]
    Cache(#[source] crate::cache::CacheError),
    #[error("keep the reference measurement")]
    Store(#[source] crate::report::store::StoreError),
    #[error("measure the reference {spec}: {reason}")]
    Reference { spec: String, reason: String },
    #[error("set up the rate test")]
    RateTest(#[source] BisectError),
    #[error("{0}")]
    BadTarget(String),
}

async fn check_inner(
    args: &CheckOptions,
    loaded: &LoadedScenario,
    spec_text: &str,
    session: &mut Session,
) -> Result<CheckReport, CheckError> {
    let cache = &session.cache.clone();
    let target = Target::from_option(args.target.as_deref(), &loaded.scenario)
        .map_err(CheckError::BadTarget)?;
    let kernel = check_kernel(spec_text, args, loaded, session).await?;
    let image = session.image().await?;
    let accel = session.host(&kernel.image).await?.accel;
    // `git bisect run` calls check once per commit: each call gets a directory of its own
    // (DIR/check, DIR/check-2, ... with --out DIR).
    if let Some(dir) = session.vm.out.take() {
        session.default_out = dir.join("check");
    }
    session.create_out(false)?;
    let out = session.out.clone();
    let restore = session.vm.restore;
    let batch = |iterations: Option<u32>, stop: bool| RunOptions {
        iterations,
        restore,
        stop_when: match (&target, stop) {
            (_, false) => None,
            (None, true) => Some(any_failure as StopWhen),
            (Some(_), true) => Some(target_seen as StopWhen),
        },
        stop_arg: target.as_ref().map(Target::text).unwrap_or_default(),
        ..RunOptions::new(accel, out.clone(), cache.clone())
    };
    let count = |run: &RunRecord| counted(run, target.as_ref());
    let mut measured = None;
    let reference = match &args.reference {
        None => None,
        Some(Reference::Rate(r)) => Some(*r),
        Some(Reference::Kernel { spec, iterations }) => {
            let r = reference_rate(
                spec,
                *iterations,
                args,
                loaded,
                target.as_ref(),
                (&image, cache),
                session,
                batch(Some(*iterations), false),
            )
            .await?;
            let rate = r.0.rate();
            measured = Some(r);
            Some(rate)
        }
    };
    let on = OnKernel {
        loaded,
        kernel: &kernel,
        image_key: &image.key,
    };
    let first = measured.as_ref().map_or(0, |_| 1);
    let Some(p0) = reference else {
        // "Bad" means seen: one batch, stopped at the first sighting.
        let mut outcome = None;
        let opts = batch(args.iterations, true);
        consecutive_batches(
            &mut Rig::new(qemu_machine(&on, &image, &opts)),
            &on,
            opts,
            0,
            session.setup_sink(),
            |run, _| {
                outcome = Some(count(&run));
                Ok::<_, CheckError>(None)
            },
        )
        .await?;
        return Ok(CheckReport {
            outcome: outcome.expect("one batch ran"),
            rate: None,
            measured,
        });
    };
    let test = RateTest::new(
        p0,
        args.bad_rate,
        args.confidence,
        args.iterations.unwrap_or(DEFAULT_CHECK_BUDGET),
    )
    .map_err(CheckError::RateTest)?;
    // The sequential test: batches that stop at the first sighting, on one booted machine.
    let (mut n, mut f) = (0u32, 0u32);
    let mut unknown = None;
    let mut verdict = None;
    let opts = batch(Some(test.next_batch(0, 0)), true);
    consecutive_batches(
        &mut Rig::new(qemu_machine(&on, &image, &opts)),
        &on,
        opts,
        first,
        session.setup_sink(),
        |run, _| {
            match count(&run) {
                BatchOutcome::Ran {
                    iterations,
                    failures,
                } => {
                    n += iterations;
                    f += failures;
                }
                BatchOutcome::Unknown { reason } => {
                    unknown = Some(reason);
                    return Ok::<_, CheckError>(None);
                }
            }
            verdict = test.verdict(n, f);
            Ok(verdict
                .is_none()
                .then(|| batch(Some(test.next_batch(n, f)), true)))
        },
    )
    .await?;
    let outcome = match (n, unknown) {
        (0, Some(reason)) => BatchOutcome::Unknown { reason },
        _ => BatchOutcome::Ran {
            iterations: n,
            failures: f,
        },
    };
    // A batch that could not be judged ends the test: what ran so far decides, or it
    // cannot tell.
    let verdict = verdict.unwrap_or(RateVerdict::CannotTell);
    Ok(CheckReport {
        outcome,
        rate: Some((test, verdict)),
        measured,
    })
}

/// Iterations `crashrig check` may spend on a kernel against a reference (default of `-n`).
pub const DEFAULT_CHECK_BUDGET: u32 = 60;

/// How one batch of `check` counts: target sightings (any failure without a target) against
/// clean iterations; iterations failing otherwise are left out.
fn counted(run: &RunRecord, target: Option<&Target>) -> BatchOutcome {
    match target {
        Some(t) => batch_outcome(run, t).0,
        None => {
            let failed = run
                .iterations
                .iter()
                .filter(|i| i.verdict.is_failure())
                .count() as u32;
            let clean = run
                .iterations
                .iter()
                .filter(|i| i.verdict == Verdict::Pass)
                .count() as u32;
            if failed + clean == 0 {
                BatchOutcome::Unknown {
                    reason: run
                        .error
                        .clone()
                        .unwrap_or_else(|| "no iteration could be judged".into()),
                }
            } else {
                BatchOutcome::Ran {
                    iterations: failed + clean,
                    failures: failed,
                }
            }
        }
    }
}

/// The kernel a check tests (or its reference), built through the cache; a build's stages
/// are reported like any other command's, so a long build is not a silent one.
async fn check_kernel(
    spec_text: &str,
    args: &CheckOptions,
    loaded: &LoadedScenario,
    session: &mut Session,
) -> Result<ResolvedKernel, CheckError> {
    let spec = KernelSpec::parse(spec_text).map_err(|source| CheckError::Spec {
        spec: spec_text.to_string(),
        source,
    })?;
    let opts = BuildOptions {
        kconfig: args.kconfig.clone(),
        patches: args.patches.clone(),
        scenario_kconfig: loaded.scenario.kconfig.clone(),
    };
    let cache = session.cache.clone();
    let (progress, rx) = build_progress();
    let fut = kernel::resolve(&spec, &opts, &cache, &progress);
    forward_build_progress(spec_text, session.setup_sink(), fut, rx)
        .await
        .map_err(|source| CheckError::Build {
            spec: spec_text.to_string(),
            source,
        })
}

/// The reference kernel's rate: from the cache when this kernel image, scenario file, setting,
/// target and number of iterations were measured before, else measured now (one batch, no
/// early stop) and cached. `bool`: it came from the cache.
#[allow(clippy::too_many_arguments)]
async fn reference_rate(
    spec: &str,
    iterations: u32,
    args: &CheckOptions,
    loaded: &LoadedScenario,
    target: Option<&Target>,
    (image, cache): (&GuestImage, &Cache),
    session: &mut Session,
    opts: RunOptions,
) -> Result<(MeasuredReference, bool), CheckError> {
    let kernel = check_kernel(spec, args, loaded, session).await?;
    let scenario_bytes =
        std::fs::read(&loaded.path).map_err(|source| CheckError::ReadScenario {
            path: loaded.path.clone(),
            source,
        })?;
    let key = reference_key(
        &kernel.image_sha256,
        &scenario_bytes,
        &loaded.scenario.setting,
        target,
        iterations,
    );
    let dir = cache.dir("check-reference").map_err(CheckError::Cache)?;
    let path = dir.join(format!("{key}.json"));
    if let Some(m) = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<MeasuredReference>(&b).ok())
    {
        return Ok((m, true));
    }
    let on = OnKernel {
        loaded,
        kernel: &kernel,
        image_key: &image.key,
    };
    let mut outcome = None;
    consecutive_batches(
        &mut Rig::new(qemu_machine(&on, image, &opts)),
        &on,
        opts,
        0,
        session.setup_sink(),
        |run, _| {
            outcome = Some(counted(&run, target));
            Ok::<_, CheckError>(None)
        },
    )
    .await?;
    let (n, f) = match outcome.expect("one batch ran") {
        BatchOutcome::Ran {
            iterations,
            failures,
        } => (iterations, failures),
        BatchOutcome::Unknown { reason } => {
            return Err(CheckError::Reference {
                spec: spec.to_string(),
                reason,
            })
        }
    };
    let m = MeasuredReference {
        kernel: spec.to_string(),
        image_sha256: kernel.image_sha256.clone(),
        iterations: n,
        failures: f,
    };
    let bytes = serde_json::to_vec_pretty(&m).expect("plain data serializes");
    crate::report::store::write_atomic(&path, &bytes).map_err(CheckError::Store)?;
    Ok((m, false))
}

/// The cache key of a reference measurement.
fn reference_key(
    image_sha256: &str,
    scenario: &[u8],
    setting: &crate::scenario::Setting,
    target: Option<&Target>,
    iterations: u32,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [
        image_sha256.as_bytes(),
        &Sha256::digest(scenario)[..],
        serde_json::to_string(setting)
            .unwrap_or_default()
            .as_bytes(),
        target.map(Target::text).unwrap_or_default().as_bytes(),
        iterations.to_string().as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README says check's line gives the verdict; without a reference it had none.
    #[test]
    fn check_line_without_a_reference_says_the_verdict() {
        let line = |iterations, failures| {
            CheckReport {
                outcome: BatchOutcome::Ran {
                    iterations,
                    failures,
                },
                rate: None,
                measured: None,
            }
            .text()
        };
        assert!(
            line(3, 0).ends_with("; good: the target was not seen in 3 iterations"),
            "{}",
            line(3, 0)
        );
        assert!(
            line(2, 1).ends_with("; bad: the target was seen"),
            "{}",
            line(2, 1)
        );
    }

    fn t(s: &str) -> Target {
        Target::parse(s)
    }

    fn range_options(good: &str, bad: &str, fix: bool) -> BisectOptions {
        BisectOptions {
            scenario: PathBuf::from("s.yaml"),
            good: Some(good.into()),
            bad: Some(bad.into()),
            patches: vec![],
            base_patches: vec![],
            kconfig: vec![],
            fix,
            target: None,
            iterations: None,
            confidence: 0.95,
            max_iterations: None,
            false_positive_rate: None,
            resume: false,
            amplify: None,
            vm: VmOptions::default(),
        }
    }

    /// A deterministic history in external numbering: `failing(k)` says whether candidate
    /// `k` shows the target (every iteration, or none).
    struct Always<F: Fn(usize) -> bool>(F);

    impl<F: Fn(usize) -> bool> bisect::Oracle for Always<F> {
        fn test(&mut self, candidate: usize, iterations: u32, stop: bool) -> BatchOutcome {
            let fails = (self.0)(candidate);
            let ran = if stop && fails { 1 } else { iterations };
            BatchOutcome::Ran {
                iterations: ran,
                failures: if fails { ran } else { 0 },
            }
        }
    }

    fn report_of(last: usize, direction: Direction, failing: impl Fn(usize) -> bool) -> String {
        let config = Config {
            direction,
            ..Config::default()
        };
        let report = Bisector::new(last, config)
            .unwrap()
            .run(&mut Always(failing))
            .unwrap();
        let names: Vec<String> = (0..=last).map(|k| format!("c{k}")).collect();
        report_text(&report, &names, Some(&t("umount:EBUSY")))
    }

    #[test]
    fn a_kernel_without_verification_runs_is_said_to_have_none_not_a_rate() {
        assert_eq!(
            verification_runs_text(&bisect::MeasuredRate::new(0, 0)),
            "none (its runs from the search were enough)"
        );
        let runs = bisect::MeasuredRate::new(6, 7);
        assert_eq!(verification_runs_text(&runs), runs.text());
    }

    /// probe15c: "culprit 6 fresh runs 3/3" beside an evidence row "6: 0/0 same kernel as 7",
    /// and a culprit named after ends that never confirmed a difference, said nowhere but in
    /// bisect.json.
    #[test]
    fn the_report_says_which_kernel_a_culprit_ran_on_and_that_the_ends_were_unconfirmed() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let mut h = bisect::SimulatedHistory {
            culprit: 2,
            p: 0.9,
            fp: 0.0,
            rng: &mut rng,
        };
        let mut report = Bisector::new(3, Config::default())
            .unwrap()
            .run(&mut h)
            .unwrap();
        let culprit = report.culprit.expect("a culprit at 0 -> 90%");
        let v = report.verified.clone().expect("verified");
        let names: Vec<String> = (0..=3).map(|k| format!("c{k}")).collect();
        let text = report_text(&report, &names, Some(&t("umount:EBUSY")));
        assert!(!text.contains("identical kernel"), "{text}");
        let row = report
            .evidence
            .iter_mut()
            .find(|row| row.candidate == v.bad_candidate)
            .unwrap();
        row.alias_of = Some(3);
        report.ends_confirmed = false;
        let text = report_text(&report, &names, Some(&t("umount:EBUSY")));
        assert!(
            text.contains(&format!(
                "culprit {} fresh runs (on candidate 3's identical kernel) ",
                v.bad_candidate
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "culprit: c{culprit} (posterior {:.3})\n  the ends' runs alone did not confirm",
                report.confidence
            )),
            "{text}"
        );
        report.ends_confirmed = true;
        let text = report_text(&report, &names, Some(&t("umount:EBUSY")));
        assert!(!text.contains("the ends' runs alone"), "{text}");
    }

    #[test]
    fn the_verification_line_counts_every_rounds_runs_not_only_the_last() {
        use rand::SeedableRng;
        // A short range at 1/8 -> 1/2, where verification may take several rounds.
        let mut several = 0;
        for seed in 0..40 {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
            let mut h = bisect::SimulatedHistory {
                culprit: 2,
                p: 0.5,
                fp: 0.125,
                rng: &mut rng,
            };
            let report = Bisector::new(2, Config::default())
                .unwrap()
                .run(&mut h)
                .unwrap();
            let (Some(v), Some(all)) = (&report.verified, &report.verification_runs) else {
                continue;
            };
            // Every verification iteration of the two kernels is in the totals.
            let verify_of = |k: usize| -> u64 {
                report
                    .evidence
                    .iter()
                    .filter(|row| row.candidate == k || row.alias_of == Some(k))
                    .map(|row| row.verify_iterations)
                    .sum()
            };
            assert_eq!(all.bad.iterations, verify_of(v.bad_candidate));
            assert_eq!(all.good.iterations, verify_of(v.good_candidate));
            // An earlier round may have verified another pair.
            assert!(all.bad.iterations + all.good.iterations <= report.verify_iterations);
            let names: Vec<String> = (0..=2).map(|k| format!("c{k}")).collect();
            let text = report_text(&report, &names, Some(&t("umount:EBUSY")));
            if all.rounds > 1 {
                several += 1;
                let line = format!(
                    "  every verification run ({} rounds, {} iterations in all): culprit {} {}, parent {} {}; each round judges its own fresh runs, the earlier rounds' are in the posterior\n",
                    all.rounds,
                    report.verify_iterations,
                    v.bad_candidate,
                    verification_runs_text(&all.bad),
                    v.good_candidate,
                    verification_runs_text(&all.good)
                );
                assert!(text.contains(&line), "{text}");
            }
        }
        assert!(several > 0, "no seed took more than one round");
    }

    #[test]
    fn rate_intervals_are_never_narrower_than_the_sides_own_runs_allow() {
        use rand::SeedableRng;
        // The --fix run of probe12: the side after the fix stayed clean for 13 runs (true rate
        // 1/8) and was reported "1% [0%, 11%]"; Wilson for 0/13 reaches 23%.
        for (direction, seed) in [Direction::Fix, Direction::Regression]
            .into_iter()
            .flat_map(|d| (0..20).map(move |s| (d, s)))
        {
            let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
            let culprit = if direction == Direction::Fix { 4 } else { 5 };
            let (p, fp) = if direction == Direction::Fix {
                (0.125, 0.5)
            } else {
                (0.5, 0.125)
            };
            let mut h = bisect::SimulatedHistory {
                culprit,
                p,
                fp,
                rng: &mut rng,
            };
            let config = Config {
                direction,
                ..Config::default()
            };
            let report = Bisector::new(8, config).unwrap().run(&mut h).unwrap();
            let Some(rates) = &report.rates else { continue };
            for (est, runs) in [
                (&rates.good, &rates.good_runs),
                (&rates.bad, &rates.bad_runs),
            ] {
                let runs = runs.as_ref().unwrap();
                if runs.iterations > 0 {
                    assert!(
                        est.low <= runs.low && est.high >= runs.high,
                        "{est:?} {runs:?}"
                    );
                }
            }
        }
        // A side that never failed in 6 runs: its interval reaches Wilson's top (39%), and the line says what
        // the intervals rest on.
        let text = report_of(8, Direction::Regression, |k| k >= 5);
        let line = text
            .lines()
            .find(|l| l.starts_with("rates around candidate 5: before 3% [0%, 39%] after "))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            line.contains(
                "; each interval at least the Wilson interval of its side's pooled runs, before 0/"
            ),
            "{line}"
        );
    }

    #[test]
    fn the_progress_leader_lies_inside_the_range_it_names() {
        use rand::SeedableRng;
        for direction in [Direction::Regression, Direction::Fix] {
            let config = Config {
                direction,
                ..Config::default()
            };
            // At the start every candidate is as likely: probe12 read "range 1-30, leader 31".
            let b = Bisector::new(31, config.clone()).unwrap();
            let p = b.progress();
            let l = p.leader.unwrap().candidate;
            assert!(p.range.0 <= l && l <= p.range.1, "{:?} {l}", p.range);
            let mut b = Bisector::new(31, config).unwrap();
            let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
            let mut h = bisect::SimulatedHistory {
                culprit: 15,
                p: 0.5,
                fp: 0.125,
                rng: &mut rng,
            };
            while let Action::Test {
                candidate,
                iterations,
                stop_at_first_failure,
            } = b.next_action()
            {
                use bisect::Oracle;
                let outcome = h.test(candidate, iterations, stop_at_first_failure);
                b.record(candidate, outcome).unwrap();
                let p = b.progress();
                if let Some(l) = p.leader {
                    assert!(p.range.0 <= l.candidate && l.candidate <= p.range.1);
                }
            }
        }
    }

    #[test]
    fn a_bad_end_failing_less_gets_no_advice_to_run_more() {
        // probe12's no-change range: bad 57/497 below good 60/503.
        let mut b = Bisector::new(
            4,
            Config {
                max_iterations: 1000,
                ..Config::default()
            },
        )
        .unwrap();
        let report = b
            .run(&mut Ratio {
                good: (60, 503),
                bad: (57, 497),
                last: 4,
                done: [0, 0],
            })
            .unwrap();
        assert_eq!(report.status, bisect::Status::NoDifference);
        assert_eq!(report.iterations_needed, None);
        let names: Vec<String> = (0..=4).map(|k| format!("c{k}")).collect();
        let text = report_text(&report, &names, Some(&t("umount:EBUSY")));
        assert!(!text.contains("would separate them"), "{text}");
        assert!(
            text.contains("; the bad end (")
                && text.contains(") does not fail more often than the good end ("),
            "{text}"
        );
    }

    /// The ends fail at fixed proportions, cycled deterministically.
    struct Ratio {
        good: (u64, u64),
        bad: (u64, u64),
        last: usize,
        done: [u64; 2],
    }

    impl bisect::Oracle for Ratio {
        fn test(&mut self, candidate: usize, iterations: u32, stop: bool) -> BatchOutcome {
            let (slot, (f, n)) = if candidate == self.last {
                (1, self.bad)
            } else {
                (0, self.good)
            };
            let (mut ran, mut failures) = (0, 0);
            while ran < iterations && !(stop && failures > 0) {
                let i = self.done[slot];
                self.done[slot] += 1;
                ran += 1;
                // Failure i when the running count of failures steps up: f of every n.
                if (i + 1) * f / n > i * f / n {
                    failures += 1;
                }
            }
            BatchOutcome::Ran {
                iterations: ran,
                failures,
            }
        }
    }

    #[test]
    fn a_fix_search_reports_the_fix_and_its_parent_the_right_way_round() {
        // Candidates 0-4 (the older ones) fail, 5 on do not: candidate 5 is the fix.
        let text = report_of(8, Direction::Fix, |k| k < 5);
        assert!(text.starts_with("bisect: found the fix; "), "{text}");
        assert!(text.contains("\nfix: c5 (posterior "), "{text}");
        assert!(
            text.contains("verification holds: fix 5 every run 0/"),
            "{text}"
        );
        assert!(text.contains(", parent 4 fresh runs "), "{text}");
        assert!(
            text.contains("P(parent's rate above the fix's) = "),
            "{text}"
        );
        assert!(!text.contains("culprit"), "{text}");
        // The same history the other way round is a regression at 5.
        let text = report_of(8, Direction::Regression, |k| k >= 5);
        assert!(text.contains("\nculprit: c5 (posterior "), "{text}");
        assert!(
            text.contains("verification holds: culprit 5 fresh runs "),
            "{text}"
        );
        assert!(text.contains(", parent 4 every run 0/"), "{text}");
    }

    #[test]
    fn ends_the_wrong_way_round_name_nothing_and_say_which_search_fits() {
        let text = report_of(8, Direction::Regression, |k| k < 5);
        assert!(
            text.starts_with("bisect: the good end fails more often than the bad end;"),
            "{text}"
        );
        assert!(
            text.contains("no culprit: the older (good) end fails more often than the newer (bad) one; if the rate went down, look for the fix with --fix"),
            "{text}"
        );
        assert!(!text.contains("same rate"), "{text}");
        assert!(!text.contains("top suspects"), "{text}");
        let text = report_of(8, Direction::Fix, |k| k >= 5);
        assert!(
            text.contains("no fix: the newer (good) end fails more often than the older (bad) one; if the rate went up, look for the culprit without --fix"),
            "{text}"
        );
        assert!(!text.contains("top suspects"), "{text}");
    }

    #[test]
    fn a_range_runs_from_its_older_end_and_bad_ends_are_named() {
        let d = tempfile::tempdir().unwrap();
        let repo = d.path().join("linux");
        std::fs::create_dir(&repo).unwrap();
        crate::kernel::source::test_sh(&repo, "git init -q && for i in 0 1 2; do echo $i > f && git add f && git commit -qm c$i && git tag v$i; done");
        let at = |rev: &str| format!("{}@{rev}", repo.display());
        let commits = |c: Candidates| match c {
            Candidates::Commits { subjects, .. } => subjects,
            Candidates::Patches { .. } => panic!("a range"),
        };
        // A regression: the good end is the older one.
        let (c, _) = candidates(&range_options(&at("v0"), &at("v2"), false)).unwrap();
        assert_eq!(commits(c), ["c0", "c1", "c2"]);
        // A fix: the bad end is the older one, and the range still runs oldest first.
        let (c, _) = candidates(&range_options(&at("v2"), &at("v0"), true)).unwrap();
        assert_eq!(commits(c), ["c0", "c1", "c2"]);
        // Swapped ends say so, and what to do.
        let err = candidates(&range_options(&at("v2"), &at("v0"), false))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("there are none") && err.contains("add --fix"),
            "{err}"
        );
        // A ref that is not there names its flag.
        let err = candidates(&range_options(&at("v0"), &at("nosuchref"), false))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("--bad ") && err.contains("no commit `nosuchref`"),
            "{err}"
        );
    }

    #[test]
    fn a_target_must_name_a_step_of_the_scenario_and_an_errno() {
        let yaml = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/bisect/one-writer-umount.yaml"),
        )
        .unwrap();
        let s = crate::scenario::load_str(&yaml, "one-writer-umount.yaml").unwrap();
        // An id, a generated id, a step alone, an errno without a name.
        for ok in [
            "umount:EBUSY",
            "mount#1",
            "umount",
            "umount:E135",
            "kill#4:ESRCH",
            "setup-mkfs#1",
        ] {
            let got = Target::parse_checked(ok, &s);
            assert_eq!(got, Ok(t(ok)), "{ok}");
        }
        let err = Target::parse_checked("nosuchstep:EBUSY", &s).unwrap_err();
        assert!(err.contains("no step `nosuchstep`"), "{err}");
        assert!(
            err.contains("setup-mkfs#1, mount#1, spawn#2"),
            "the ids are listed: {err}"
        );
        let err = Target::parse_checked("umount:EBUZY", &s).unwrap_err();
        assert!(err.contains("`EBUZY` is no errno name"), "{err}");
        for bad in ["", ":EBUSY", "umount:", "umount:E", "umount:ebusy"] {
            assert!(Target::parse_checked(bad, &s).is_err(), "{bad:?}");
        }
    }

    #[derive(Clone, Default)]
    struct Collect(std::sync::Arc<std::sync::Mutex<Vec<Event>>>);

    impl crate::report::events::Reporter for Collect {
        fn report(&mut self, event: &crate::report::events::Stamped) {
            self.0.lock().unwrap().push(event.event.clone());
        }
    }

    /// probe15c: a scenario whose workload never started (exit 127 before its kill) made
    /// every iteration an error, yet its umount returned EBUSY in 8 of 32: none of them may
    /// count for the search, `check` or amplify.
    #[test]
    fn an_iteration_that_was_not_judged_is_no_sighting_of_the_target() {
        use crate::report::results::tests::{iteration, run_record, step};
        let ebusy = || {
            vec![
                step("kill", "kill", None, true, None),
                step("exe-umount", "umount", Some("EBUSY"), false, None),
            ]
        };
        let clean = || vec![step("exe-umount", "umount", None, true, None)];
        let mut error = iteration(2, Verdict::Error, ebusy());
        error.reasons = vec!["kill (kill): workload `w` had already exited".into()];
        let run = run_record(
            "t",
            "t.yaml",
            ("debian:6.1", "6.1"),
            vec![
                iteration(1, Verdict::Fail, ebusy()),
                error,
                iteration(3, Verdict::Pass, clean()),
            ],
        );
        let target = t("exe-umount:EBUSY");
        let (outcome, unrelated) = batch_outcome(&run, &target);
        assert_eq!(
            outcome,
            BatchOutcome::Ran {
                iterations: 2,
                failures: 1
            }
        );
        assert_eq!(
            unrelated,
            ["iteration 2: kill (kill): workload `w` had already exited"]
        );
        // Nothing judged: the candidate is unknown, not a 100% rate.
        let mut only = run.clone();
        only.iterations.retain(|i| i.verdict == Verdict::Error);
        assert!(matches!(
            batch_outcome(&only, &target).0,
            BatchOutcome::Unknown { .. }
        ));
    }

    /// probe15c: a missing `;` after a `pr_info` in init/main.c was reported as an error in
    /// include/linux/printk.h; the line that used the macro was only in the full log.
    #[test]
    fn an_error_in_a_macros_header_names_the_line_that_used_the_macro() {
        let w = "/root/.cache/crashrig/worktrees/1bbbe3dbe1607ae1";
        let chain = format!(
            "compile the kernel (full log: /c/builds/failed/ae53.log):\n\
             {w}/include/linux/printk.h:427:10: error: expected ';' before 'if'\n\
             {w}/include/linux/printk.h:455:33: note: in expansion of macro 'printk_index_wrap'\n\
             {w}/init/main.c:1396:2: note: in expansion of macro 'pr_info'\n\
             make[3]: *** [{w}/scripts/Makefile.build:250: init/main.o] Error 1\n"
        );
        assert_eq!(
            build_failure_reason(&chain),
            "include/linux/printk.h:427:10: error: expected ';' before 'if' \
             (init/main.c:1396:2: note: in expansion of macro 'pr_info')"
        );
        // An error in a source file is itself the line.
        let chain = format!("{w}/fs/namespace.c:16:3: error: x\n{w}/init/main.c:1:2: note: in expansion of macro 'y'\n");
        assert_eq!(
            build_failure_reason(&chain),
            "fs/namespace.c:16:3: error: x"
        );
    }

    #[test]
    fn a_candidate_that_does_not_build_is_said_at_once_with_its_first_error() {
        let events = Collect::default();
        let mut sink = EventSink::new(vec![Box::new(events.clone())]);
        let chain = "compile the kernel (full log: /c/builds/failed/ae53.log):\n\
            /root/.cache/crashrig/worktrees/1bbbe3dbe1607ae1/fs/namespace.c:1637:39: error: expected ';' before '}' token\n\
            make[3]: *** [/root/.cache/crashrig/worktrees/1bbbe3dbe1607ae1/scripts/Makefile.build:255: fs/namespace.o] Error 1\n\
            make: *** [Makefile:250: __sub-make] Error 2";
        report_build_failure(&mut sink, "patch 22/31: fs: helper (0022.patch)", chain);
        report_build_failure(
            &mut sink,
            "0123456789ab mm: thing",
            "apply patch 0003.patch: does not apply",
        );
        let texts: Vec<String> = events
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|e| match e {
                Event::Message { text, .. } => text.clone(),
                _ => panic!("expected a message"),
            })
            .collect();
        assert_eq!(
            texts,
            [
                "patch 22/31: fs: helper (0022.patch) does not build (fs/namespace.c:1637:39: error: expected ';' before '}' token): unknown, skipped",
                "0123456789ab mm: thing does not build (apply patch 0003.patch: does not apply): unknown, skipped",
            ]
        );
    }

    /// The search's start is said once, with the ends' figures and whether the test that
    /// holds however often they were looked at confirms them (the terminal said nothing).
    #[test]
    fn the_search_start_says_what_the_ends_showed_and_if_it_is_confirmed() {
        // (good runs, bad runs) recorded on the ends before the search starts.
        for (good, bad, confirmed) in [((4, 0), (4, 2), false), ((30, 0), (30, 15), true)] {
            let events = Collect::default();
            let mut sink = EventSink::new(vec![Box::new(events.clone())]);
            let mut b = Bisector::new(8, Config::default()).unwrap();
            let mut said = false;
            announce_search(&b, &mut said, &mut sink);
            assert!(!said, "nothing to say before the ends ran");
            for (k, (iterations, failures)) in [(0, good), (8, bad)] {
                b.record(
                    k,
                    BatchOutcome::Ran {
                        iterations,
                        failures,
                    },
                )
                .unwrap();
            }
            assert!(matches!(b.next_action(), Action::Test { .. }));
            assert_eq!(b.progress().phase, bisect::Phase::Search);
            announce_search(&b, &mut said, &mut sink);
            announce_search(&b, &mut said, &mut sink);
            let texts: Vec<String> = events
                .0
                .lock()
                .unwrap()
                .iter()
                .filter_map(|e| match e {
                    Event::Message { text, .. } => Some(text.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(texts.len(), 1, "said once: {texts:?}");
            let text = &texts[0];
            assert!(text.starts_with("the ends differ: good 0 ("), "{text}");
            assert!(text.contains(&format!("{}/{}", bad.1, bad.0)), "{text}");
            assert_eq!(text.contains("not yet confirmed"), !confirmed, "{text}");
            assert_eq!(text.contains("(confirmed)"), confirmed, "{text}");
            assert!(text.ends_with("; searching"), "{text}");
        }
    }

    #[test]
    fn a_resume_adds_its_wall_time_to_the_one_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bisect.json");
        assert_eq!(earlier_wall_seconds(&path), 0, "no bisect.json yet");
        std::fs::write(&path, br#"{"scenario": "s", "wall-seconds": 106}"#).unwrap();
        assert_eq!(earlier_wall_seconds(&path), 106);
        std::fs::write(&path, b"{\"wall-seconds\": ").unwrap();
        assert_eq!(earlier_wall_seconds(&path), 0, "cut short");
        std::fs::write(&path, br#"{"wall-seconds": -3}"#).unwrap();
        assert_eq!(earlier_wall_seconds(&path), 0);
    }

    #[test]
    fn resume_keeps_the_journaled_target_and_never_learns_another() {
        let path = Path::new("out/bisect-target.json");
        let recorded = serde_json::to_vec(&t("umount:EBUSY")).unwrap();
        // The recorded target is used; the same --target is fine.
        for given in [None, Some(t("umount:EBUSY"))] {
            let got = resumed_target(path, Some(&recorded), given, true).unwrap();
            assert_eq!(got, Some(t("umount:EBUSY")));
        }
        // Another --target would mix evidence of two outcomes.
        let err = resumed_target(path, Some(&recorded), Some(t("mount:EIO")), true)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "resume with --target mount:EIO: this bisection counted its evidence for umount:EBUSY (out/bisect-target.json); drop --target or start another --out"
        );
        // Torn or missing after steps: an error, not a new target learned from the bad end.
        let err = resumed_target(path, Some(b""), None, true).unwrap_err();
        assert_eq!(
            crate::report::error_chain(&err),
            "resume: out/bisect-target.json is damaged; give the bisection's --target (it is not learned again, so the journaled evidence is not mixed with another outcome's): EOF while parsing a value at line 1 column 0"
        );
        assert!(resumed_target(path, None, None, true).is_err());
        // Torn but the user names it: theirs.
        assert_eq!(
            resumed_target(path, Some(b"{\"st"), Some(t("umount")), true).unwrap(),
            Some(t("umount"))
        );
        // No steps yet: the target may still be learned.
        assert_eq!(resumed_target(path, None, None, false).unwrap(), None);
    }
}
