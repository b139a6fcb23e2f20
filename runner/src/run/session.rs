//! What every VM command shares before its first boot: the cache, the results directory, the
//! guest image, kernels resolved (and built) with their build options, the accelerator and host
//! facts, and the event sinks that carry set-up progress and results. `run`, `repro`,
//! `matrix`, `bisect`, `check` and `bench boot` all start from a [`Session`].

use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use crate::cache::Cache;
use crate::image::{GuestImage, ImageError};
use crate::kernel::spec::SpecError;
use crate::kernel::{BuildOptions, BuildProgress, KernelError, KernelSpec, ResolvedKernel};
use crate::report::events::{Event, EventSink, Reporter};
use crate::report::terminal::Terminal;
use crate::report::writer::ResultsWriter;
use crate::report::HostInfo;
use crate::run::LoadedScenario;
use crate::scenario::{LoadError, Setting};
use crate::vm::{Accel, AccelChoice, VmError};

/// The options every VM command takes (`--kernel`, `--accel`, `--out`, `--recipe`,
/// `--verbose`), as plain values.
#[derive(Debug, Clone, Default)]
pub struct VmOptions {
    /// Kernel specs, in the order given.
    pub kernels: Vec<String>,
    pub accel: AccelChoice,
    /// Default: [`default_out`].
    pub out: Option<PathBuf>,
    /// Default: images/default.yaml of this crashrig.
    pub recipe: Option<PathBuf>,
    pub verbose: bool,
    /// When a saved guest replaces a boot (`--restore`).
    pub restore: super::restore::RestoreMode,
    /// Scenario parameter values (`--param NAME=VALUE`), in the order given.
    pub params: Vec<(String, String)>,
}

impl VmOptions {
    /// The `--param` values as a setting; a name given twice is an error.
    pub fn setting(&self) -> Result<Setting, SessionError> {
        setting_of(&self.params)
    }
}

/// Collects `NAME=VALUE` pairs into a setting; a name given twice is an error.
pub fn setting_of(params: &[(String, String)]) -> Result<Setting, SessionError> {
    let mut setting = Setting::new();
    for (name, value) in params {
        if let Some(first) = setting.insert(name.clone(), value.clone()) {
            return Err(SessionError::ParamTwice {
                name: name.clone(),
                first,
                second: value.clone(),
            });
        }
    }
    Ok(setting)
}

/// Build options the user adds to kernels crashrig builds (`--kconfig`, `--patches`).
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    pub kconfig: Vec<String>,
    pub patches: Vec<PathBuf>,
}

impl BuildRequest {
    pub fn is_empty(&self) -> bool {
        self.kconfig.is_empty() && self.patches.is_empty()
    }
}

/// Set-up failures of a VM command: all configuration or infrastructure errors.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Scenario(#[from] LoadError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("build kernel `{spec}`")]
    Kernel {
        spec: String,
        #[source]
        source: KernelError,
    },
    #[error(
        "--kconfig and --patches do not apply to `{spec}`: they apply only to kernels crashrig builds (a git tree or debian-source:X)"
    )]
    NotBuilt { spec: String },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("create the results directory {path}")]
    Out {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    ResultsDir(#[from] crate::report::durable::ResultsDirError),
    #[error("resume from {path}: it was not written by this crashrig or was damaged outside it; move it away to start afresh")]
    Resume {
        path: PathBuf,
        #[source]
        source: crate::report::store::StoreError,
    },
    /// Results that could not be written (a full disk); the files keep what was written
    /// before.
    #[error("{0}")]
    Results(String),
    #[error("finish a background task")]
    Task(#[source] tokio::task::JoinError),
    #[error("set parameter `{name}`: --param gives it twice (`{first}` and `{second}`)")]
    ParamTwice {
        name: String,
        first: String,
        second: String,
    },
}

impl SessionError {
    /// Every set-up failure is a configuration or infrastructure error.
    pub fn exit_code(&self) -> i32 {
        crate::exit::CONFIG_OR_INFRA
    }

    /// Whether the user's input is at fault (a patch that does not apply, an impossible
    /// option, a bad spec) rather than the host (disk full, missing tool).
    pub fn is_input_error(&self) -> bool {
        match self {
            SessionError::Kernel { source, .. } => source.is_input_error(),
            SessionError::Scenario(_)
            | SessionError::Spec(_)
            | SessionError::NotBuilt { .. }
            | SessionError::ParamTwice { .. } => true,
            _ => false,
        }
    }
}

/// The accelerator chosen for a session and the host facts results record.
#[derive(Debug, Clone)]
pub struct HostChoice {
    pub accel: Accel,
    pub info: HostInfo,
}

/// Shared set-up of one VM command.
pub struct Session {
    pub cache: Cache,
    /// The results directory (claimed by [`Session::create_out`]).
    pub out: PathBuf,
    /// Where a new results directory goes without --out: [`default_out`] unless the
    /// command has its own (repro, check).
    pub default_out: PathBuf,
    pub vm: VmOptions,
    /// Set-up progress (scenario warnings, kernel builds) before results are recorded.
    setup: EventSink,
    /// Directories [`Session::create_out`] made (the results directory, then parents it had
    /// to make), deepest first: those still empty when the session ends are removed, so a
    /// command that fails before anything ran (a bad `--kernel`, no image) leaves nothing.
    created: Vec<PathBuf>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // remove_dir removes empty directories only: results, logs or anything else written
        // keep the directory (and so its parents).
        for dir in &self.created {
            if std::fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }
}

impl Session {
    /// A session on the shared cache; nothing is created yet.
    pub fn new(vm: VmOptions) -> Session {
        let out = vm.out.clone().unwrap_or_else(default_out);
        Session {
            default_out: default_out(),
            cache: Cache::from_env(),
            setup: EventSink::new(vec![
                Box::new(Terminal::new(vm.verbose)) as Box<dyn Reporter>
            ]),
            out,
            vm,
            created: Vec::new(),
        }
    }

    /// The sink for set-up progress (a terminal reporter).
    pub fn setup_sink(&mut self) -> &mut EventSink {
        &mut self.setup
    }

    /// Claims the results directory: --out (refused when it holds results, unless
    /// `resume`), else a new unique directory. Then sweeps what killed runs left.
    pub fn create_out(&mut self, resume: bool) -> Result<(), SessionError> {
        let asked = self
            .vm
            .out
            .clone()
            .unwrap_or_else(|| self.default_out.clone());
        let missing: Vec<PathBuf> = asked
            .ancestors()
            .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
            .map(Path::to_path_buf)
            .collect();
        self.out = crate::report::durable::claim_results_dir(
            self.vm.out.as_deref(),
            &self.default_out,
            resume,
        )?;
        // A default directory taken already gets a `-N` name, new by construction.
        self.created = (self.out != asked)
            .then(|| self.out.clone())
            .into_iter()
            .chain(missing)
            .collect();
        self.sweep();
        Ok(())
    }

    /// Removes what killed runs left (partial cache entries, scratch-disk directories of runs
    /// that are gone) and says so. Locks need no sweep: they are flocks, which die with their
    /// holder.
    pub fn sweep(&mut self) {
        let mut lines = crate::vm::scratch::sweep();
        match self.cache.sweep() {
            Ok(more) => lines.extend(more),
            Err(e) => self.setup.warn(format!(
                "cannot sweep the cache: {}",
                crate::report::error_chain(&e)
            )),
        }
        for line in lines {
            self.setup.info(line);
        }
    }

    /// The results a `--resume` continues: None when the directory has none yet (said, so a
    /// resume that starts afresh is never silent); an empty or torn results.json is an error,
    /// never a reason to run everything again over it.
    pub fn existing_results(&mut self) -> Result<Option<crate::report::Results>, SessionError> {
        let path = self.out.join("results.json");
        if !path.exists() {
            self.setup.info(format!(
                "{} has no results.json: nothing to resume, starting afresh",
                self.out.display()
            ));
            return Ok(None);
        }
        crate::report::store::read_results(&path)
            .map(Some)
            .map_err(|source| SessionError::Resume { path, source })
    }

    /// Loads and validates a scenario with the `--param` values; its warnings go to the
    /// set-up sink.
    pub fn load_scenario(&mut self, path: &Path) -> Result<LoadedScenario, SessionError> {
        let setting = self.vm.setting()?;
        self.load_scenario_with(path, &setting)
    }

    /// Loads and validates a scenario with these parameter values (a matrix cell's and
    /// `--param`'s); its warnings go to the set-up sink.
    pub fn load_scenario_with(
        &mut self,
        path: &Path,
        setting: &Setting,
    ) -> Result<LoadedScenario, SessionError> {
        let loaded = load_scenario(path, setting)?;
        if !loaded.1.is_empty() {
            self.setup.emit(Event::Diagnostics { text: loaded.1 });
        }
        if let Some(note) = deadline_note(&loaded.0.scenario) {
            self.setup.info(format!("{}: {note}", path.display()));
        }
        Ok(loaded.0)
    }

    /// Resolves a kernel spec with its build options (and the fragments the scenarios
    /// declare): Debian packages are fetched, images hashed, sources built or found in the
    /// build cache. Build progress goes to the set-up sink.
    pub async fn resolve_kernel(
        &mut self,
        spec: &str,
        build: &BuildRequest,
        scenario_kconfig: &[String],
    ) -> Result<ResolvedKernel, SessionError> {
        let parsed = KernelSpec::parse(spec)?;
        if !parsed.is_built() && !build.is_empty() {
            return Err(SessionError::NotBuilt { spec: spec.into() });
        }
        let mut fragments: Vec<String> = Vec::new();
        for k in scenario_kconfig {
            if !fragments.contains(k) {
                fragments.push(k.clone());
            }
        }
        let opts = BuildOptions {
            kconfig: build.kconfig.clone(),
            patches: build.patches.clone(),
            scenario_kconfig: fragments,
        };
        let (progress, rx) = build_progress();
        let fut = crate::kernel::resolve(&parsed, &opts, &self.cache, &progress);
        let kernel = forward_build_progress(spec, &mut self.setup, fut, rx)
            .await
            .map_err(|source| SessionError::Kernel {
                spec: spec.into(),
                source,
            })?;
        Ok(named(kernel, spec, build))
    }

    /// The build a run recorded (`build_key`), when the build cache still holds it: what
    /// `crashrig repro` boots instead of building the patches again.
    pub fn recorded_build(
        &self,
        spec: &str,
        build: &BuildRequest,
        build_key: &str,
    ) -> Option<ResolvedKernel> {
        let kernel = crate::kernel::build::recorded(&self.cache, build_key, spec)?;
        Some(named(kernel, spec, build))
    }

    /// The guest image of `--recipe` (default: images/default.yaml), built or from the cache.
    pub async fn image(&self) -> Result<GuestImage, SessionError> {
        let recipe = self
            .vm
            .recipe
            .clone()
            .unwrap_or_else(crate::image::default_recipe);
        let cache = self.cache.clone();
        tokio::task::spawn_blocking(move || {
            let helper = crate::image::guest_helper()?;
            crate::image::prepare(&recipe, &helper, &cache)
        })
        .await
        .map_err(SessionError::Task)?
        .map_err(SessionError::from)
    }

    /// Chooses the accelerator by `--accel` with `kernel` (auto probes KVM with it) and
    /// gathers the host facts results record.
    pub async fn host(&self, kernel: &Path) -> Result<HostChoice, SessionError> {
        let bare = crate::image::bare_initramfs(&self.cache)?;
        let (accel, reason) = crate::vm::choose_accel(self.vm.accel, kernel, &bare).await?;
        Ok(HostChoice {
            accel,
            info: HostInfo {
                qemu: crate::vm::qemu::qemu_version().await,
                accel: accel.to_string(),
                accel_reason: reason,
            },
        })
    }

    /// Ends set-up and returns the sink of the runs: the terminal and `writer`
    /// (results.json, junit.xml in the results directory).
    pub fn results_sink(&mut self, writer: ResultsWriter) -> EventSink {
        self.setup.finish();
        EventSink::new(vec![
            Box::new(Terminal::new(self.vm.verbose)),
            Box::new(writer),
        ])
    }
}

/// Finishes a results sink; results that could not be written end the command with exit 2.
pub fn finish(sink: &mut EventSink) -> Result<(), SessionError> {
    match sink.finish() {
        Some(failure) => Err(SessionError::Results(failure)),
        None => Ok(()),
    }
}

/// A build progress callback for `kernel::resolve` and the receiving end for
/// [`forward_build_progress`].
pub fn build_progress() -> (
    impl Fn(BuildProgress) + Send + Sync,
    mpsc::UnboundedReceiver<BuildProgress>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let progress = move |p: BuildProgress| {
        let _ = tx.send(p);
    };
    (progress, rx)
}

/// Drives a kernel resolution to its end, turning its progress into build events on `sink`.
pub async fn forward_build_progress<T>(
    label: &str,
    sink: &mut EventSink,
    fut: impl std::future::Future<Output = T>,
    mut rx: mpsc::UnboundedReceiver<BuildProgress>,
) -> T {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            r = &mut fut => return r,
            Some(p) = rx.recv() => sink.emit(Event::Build {
                spec: label.to_string(),
                stage: p.stage.to_string(),
                detail: p.line.unwrap_or_default(),
                elapsed: p.elapsed,
            }),
        }
    }
}

/// Results name the kernel as the user did, and what was added to it: patch files by
/// absolute path, so that `crashrig repro` finds them from any directory.
fn named(mut kernel: ResolvedKernel, spec: &str, build: &BuildRequest) -> ResolvedKernel {
    kernel.spec = spec.to_string();
    kernel.kconfig = build.kconfig.clone();
    kernel.patches = build
        .patches
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    kernel
}

/// Loads and validates a scenario with parameter values; returns it with its warnings
/// (empty when none).
pub fn load_scenario(
    path: &Path,
    setting: &Setting,
) -> Result<(LoadedScenario, String), SessionError> {
    let loaded = crate::scenario::load_with(path, setting)?;
    Ok((
        LoadedScenario {
            scenario: loaded.scenario,
            path: path.to_path_buf(),
        },
        if loaded.warnings.is_empty() {
            String::new()
        } else {
            loaded.warnings.to_string()
        },
    ))
}

/// What a hang in an iteration waits for when a step's own bound is longer than the
/// scenario's `iteration-timeout` (see `plan::plan_timeout`): said, since the timeout the
/// user wrote is not the one that applies there.
fn deadline_note(s: &crate::scenario::Scenario) -> Option<String> {
    let (step, deadline) = crate::run::plan::stretched_deadline(s)?;
    Some(format!(
        "a hang is judged after {} s, not at the iteration-timeout of {} s, in the plan of \
         step `{step}`, whose own bound (timeout, wait, retry window or sleep) is longer (plus \
         {} s to report it)",
        deadline.as_secs_f64(),
        s.iteration_timeout.as_secs_f64(),
        crate::run::plan::STEP_GRACE.as_secs()
    ))
}

/// ./crashrig-results/<date-time> (made unique by [`Session::create_out`]).
pub fn default_out() -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "");
    PathBuf::from("crashrig-results").join(stamp.trim_end_matches('Z'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// results.json used to keep `--patches` as typed (relative to the cwd of the run), so
    /// `crashrig repro` from another directory could not find them.
    #[test]
    fn results_name_patches_by_absolute_path() {
        let kernel = ResolvedKernel {
            spec: String::new(),
            release: None,
            version: "abc+1 patches".into(),
            image: PathBuf::from("/cache/bzImage"),
            modules_dir: None,
            system_map: None,
            vmlinux: None,
            build_key: None,
            image_sha256: String::new(),
            kconfig: Vec::new(),
            patches: Vec::new(),
        };
        let build = BuildRequest {
            kconfig: vec!["debug".into()],
            patches: vec![PathBuf::from("fix.patch"), PathBuf::from("/abs/series")],
        };
        let k = named(kernel, "debian-source:6.1", &build);
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(k.spec, "debian-source:6.1");
        assert_eq!(k.kconfig, ["debug"]);
        assert_eq!(
            k.patches,
            [cwd.join("fix.patch"), PathBuf::from("/abs/series")]
        );
    }
}
