//! The results model: what `results.json` holds (schema documented in docs/results.md).
//! Summaries are computed from iteration records by pure functions, so a merged or resumed
//! result set summarizes exactly as a single run would.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::outcome::{stats, Finding};

/// Bumped when a field changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub schema: u32,
    pub crashrig_version: String,
    pub started: String,
    pub finished: Option<String>,
    pub host: HostInfo,
    pub runs: Vec<RunRecord>,
    /// The matrix these results are (a shard of), for `crashrig matrix` results: set even
    /// when a shard ran no cell, so an empty shard still says which matrix it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix: Option<MatrixId>,
}

/// Which matrix: its name, the digest of its cell ids and how many cells it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatrixId {
    pub name: String,
    pub digest: String,
    pub cells: u32,
}

impl MatrixId {
    pub fn of(cell: &CellInfo) -> MatrixId {
        MatrixId {
            name: cell.matrix.clone(),
            digest: cell.digest.clone(),
            cells: cell.total,
        }
    }
}

impl std::fmt::Display for MatrixId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` ({})", self.name, self.digest)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HostInfo {
    pub qemu: Option<String>,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// Why that accelerator (e.g. "KVM unusable: a KVM guest did not run within 2s").
    pub accel_reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioInfo {
    pub name: String,
    pub path: String,
    #[serde(default)]
    pub description: String,
    /// SHA-256 (hex) of the scenario as it ran (after parameters), as in the run's
    /// `scenario.yaml`: shards of a matrix that ran different contents do not merge. Absent
    /// in results of older crashrig versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// As given with `--kernel`.
    pub spec: String,
    /// The exact version: Debian package and version, or commit (+ patches).
    pub version: String,
    pub release: Option<String>,
    pub image_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_key: Option<String>,
    /// `--kconfig` fragments of a built kernel (besides `base` and the scenario's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kconfig: Vec<String>,
    /// `--patches` of a built kernel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootRecord {
    /// Milliseconds from QEMU start to the guest being ready for plans: its first command
    /// answering over SSH after a boot, the state loaded and the agent channel connected
    /// after a restore over it.
    pub ready_after_ms: u64,
    /// Console log file, relative to the results directory.
    pub console_log: String,
    /// Why this boot happened: "start", "power-cut", "panic", "reboot", "iteration" (a
    /// restore of the set-up guest), "after a failed iteration", ...
    pub reason: String,
    /// The QEMU command line (program and arguments), for reproducing the boot by hand.
    #[serde(default)]
    pub qemu_command: Vec<String>,
    /// Kernel messages of the boot itself (before setup), relative to the results directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dmesg_file: Option<String>,
    /// Set when the guest was restored from a snapshot instead of booted: `booted` (the guest
    /// just ready, on the disks as they were) or `set-up` (the guest after setup, on fresh
    /// overlays of the disks as setup left them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<String>,
    /// The restored snapshot was saved by an earlier run and found in the cache.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_cache: bool,
    /// Where `ready_after_ms` went, stage by stage, in order (see [`BootPhase`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<BootPhase>,
    /// How plans reached the guest: `ssh`, or `agent` (a restored guest's virtio-serial
    /// channel, `guest::agent`). Results from before the field read as `ssh`.
    #[serde(default = "ssh")]
    pub transport: String,
}

fn ssh() -> String {
    "ssh".into()
}

/// One stage of bringing a guest up and how long it took. A boot has `qemu-start`,
/// `sshd-started` (init announced sshd), `ssh-connect`, `init-finished`; a restore has
/// `qemu-start`, `ram-copy` (only when the RAM image was copied for a guest that may be saved
/// again), `state-load` (the saved state read and the guest running again) and
/// `ssh-connect`: its refresh travels with its first plan. `bench boot` adds `first-command`
/// to a restore (that plan, carrying only the refresh, up to its result).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootPhase {
    pub name: String,
    pub ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every expectation held.
    Pass,
    /// An expectation was violated (a step's errno, exit status, fsck, lost data, a finding).
    Fail,
    /// The guest stopped answering; it was killed at the iteration timeout.
    Hang,
    /// The kernel panicked when no step asked for it.
    Panic,
    /// crashrig or QEMU failed (not a kernel verdict).
    Error,
}

impl Verdict {
    /// Whether this verdict shows a kernel problem (counted as a failure in rates).
    pub fn is_failure(self) -> bool {
        matches!(self, Verdict::Fail | Verdict::Hang | Verdict::Panic)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's `id`, or `<kind>#<index>`.
    pub id: String,
    pub kind: String,
    /// `setup`, `steps` or `cleanup`.
    pub phase: String,
    /// Errno of the first attempt (`None`: success). For `run`/`fsck`: see exit_status.
    pub errno: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_errno: Option<String>,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_window_ms: Option<f64>,
    #[serde(default)]
    pub busy_gave_up: bool,
    pub duration_ms: f64,
    /// When the step started, in milliseconds since the guest booted (the guest's
    /// CLOCK_MONOTONIC); none for a step the host ran (`unplug`, `power-cut`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    /// Whether the step's expectation held.
    pub ok: bool,
    /// The step could not test what it meant, and that is not the kernel's answer: a
    /// `write-data` that ran out of space, a workload that had exited with an error before
    /// its `kill`, a `shutdown` on a filesystem without the ioctl. `ok` is false, `note` says
    /// why, and the iteration's verdict is `error` (not counted in the failure rate).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub error: bool,
    /// Why not, or what happened (helper errors, lost files, kill wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<crashrig_guest::Detail>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterationRecord {
    /// 1-based.
    pub iteration: u32,
    pub verdict: Verdict,
    /// Human-readable reasons for a non-pass verdict.
    pub reasons: Vec<String>,
    pub steps: Vec<StepRecord>,
    pub findings: Vec<Finding>,
    pub duration_ms: f64,
    /// Seed of this iteration's random choices (sleeps).
    pub seed: u64,
    /// dmesg of this iteration, relative to the results directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dmesg_file: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub console_tail: Vec<String>,
    /// The host's 1-minute load average when the iteration ended (`/proc/loadavg`): a busy
    /// host slows a TCG guest, and rates that depend on timing with it. Absent in results of
    /// older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_load: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub scenario: ScenarioInfo,
    pub kernel: KernelInfo,
    pub accel: String,
    pub seed: u64,
    pub started: String,
    pub finished: Option<String>,
    /// Directory of this run's artifacts, relative to the results directory. It holds a copy
    /// of the scenario (`scenario.yaml`) so `crashrig repro` needs nothing else.
    pub dir: String,
    /// Content key of the guest image the run used.
    #[serde(default)]
    pub guest_image: String,
    pub boots: Vec<BootRecord>,
    /// Setup step results (of the first boot).
    pub setup: Vec<StepRecord>,
    /// The kernel's messages while setup ran, judged on their own: absent when setup did not
    /// run in this run (its set-up guest came from the cache) and in older results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_dmesg: Option<SetupDmesg>,
    /// An infrastructure error that ended the run early.
    pub error: Option<String>,
    pub summary: Summary,
    pub iterations: Vec<IterationRecord>,
    /// Which matrix cell this run is (`crashrig matrix` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<CellInfo>,
    /// `--restore` of the run: `auto`, `always` or `never`.
    #[serde(default = "restore_never")]
    pub restore: String,
    /// Every iteration started from a restore of the same set-up guest, on fresh disks:
    /// independent trials from identical starts. Otherwise iterations ran one after another
    /// on one guest.
    #[serde(default)]
    pub independent_iterations: bool,
    /// The scenario's parameters as this run set them (name -> value): declared defaults,
    /// `--param` values and a matrix cell's values. Empty without parameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub setting: BTreeMap<String, String>,
    /// Iterations the run was to make (`-n`, the matrix's or the scenario's `iterations`);
    /// a run that never finished holds fewer. Absent in results of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations_planned: Option<u32>,
    /// CPUs of the host the run ran on, against which `IterationRecord::host_load` reads as
    /// busy or not. Absent in results of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_cpus: Option<u32>,
}

/// What the kernel said while setup ran (every setup of the run: a run sets up again after a
/// hang or panic when its iterations share a guest), judged as an iteration's kernel log is
/// (`dmesg.fail-on`, `dmesg.ignore`) and charged to no iteration, with or without restores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetupDmesg {
    /// `pass`, or `fail` when a finding fails under the scenario's `dmesg.fail-on`.
    pub verdict: Verdict,
    /// Why it failed: `dmesg <kind>: <title>`, one per failing finding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    /// The kernel log of each setup, relative to the results directory.
    pub dmesg_files: Vec<String>,
}

impl SetupDmesg {
    /// Adds the judgment of one more setup's kernel log.
    pub fn merge(&mut self, other: &SetupDmesg) {
        if other.failed() {
            self.verdict = Verdict::Fail;
        }
        self.reasons.extend(other.reasons.iter().cloned());
        self.findings.extend(other.findings.iter().cloned());
        self.dmesg_files.extend(other.dmesg_files.iter().cloned());
    }

    pub fn failed(&self) -> bool {
        self.verdict.is_failure()
    }
}

impl Default for SetupDmesg {
    fn default() -> Self {
        SetupDmesg {
            verdict: Verdict::Pass,
            reasons: Vec::new(),
            findings: Vec::new(),
            dmesg_files: Vec::new(),
        }
    }
}

fn restore_never() -> String {
    "never".into()
}

/// How busy the host was while a run's iterations ran, when it was busier than its CPUs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BusyHost {
    /// The host's CPUs (`RunRecord::host_cpus`).
    pub cpus: u32,
    /// The highest 1-minute load average an iteration ended with.
    pub max_load: f64,
    /// Iterations that ended with the load above `cpus`.
    pub busy: u32,
    /// Iterations with a recorded load.
    pub recorded: u32,
}

/// Whether a host of `cpus` CPUs with this 1-minute load average is busy: more threads ready
/// to run than CPUs to run them.
pub fn host_busy(load: f64, cpus: u32) -> bool {
    load > f64::from(cpus)
}

impl BusyHost {
    /// `host load above its 2 CPUs when 7 of 10 iterations ended (up to 5.2)`
    pub fn text(&self) -> String {
        format!(
            "host load above its {} when {} of {} iterations ended (up to {:.1}; crashrig's own \
             guests count)",
            crate::report::plural(u64::from(self.cpus), "CPU"),
            self.busy,
            self.recorded,
            self.max_load
        )
    }
}

impl RunRecord {
    /// The host's load while the iterations ran, when some iteration ended with the load
    /// above the host's CPUs (more threads ready to run than CPUs to run them: a TCG guest
    /// then runs slower, and a race's window with it); `None` for a quiet host and for
    /// results that recorded no load.
    pub fn busy_host(&self) -> Option<BusyHost> {
        let cpus = self.host_cpus.filter(|&c| c > 0)?;
        let loads: Vec<f64> = self.iterations.iter().filter_map(|i| i.host_load).collect();
        let busy = loads.iter().filter(|&&l| host_busy(l, cpus)).count() as u32;
        (busy > 0).then(|| BusyHost {
            cpus,
            max_load: loads.iter().copied().fold(0.0, f64::max),
            busy,
            recorded: loads.len() as u32,
        })
    }

    /// Whether setup's kernel log failed (charged to no iteration, but the run fails on it).
    pub fn setup_failed(&self) -> bool {
        self.setup_dmesg.as_ref().is_some_and(SetupDmesg::failed)
    }

    /// Whether the kernel failed the run: an iteration, or setup's kernel log.
    pub fn failed(&self) -> bool {
        self.summary.failed > 0 || self.setup_failed()
    }

    /// 1 when any iteration or setup's kernel log failed; 2 when the run could not be carried
    /// out; else 0.
    pub fn exit_code(&self) -> i32 {
        if self.failed() {
            crate::exit::EXPECTATION_FAILED
        } else if self.error.is_some() || self.summary.errors > 0 || self.iterations.is_empty() {
            crate::exit::CONFIG_OR_INFRA
        } else {
            crate::exit::OK
        }
    }

    /// What differs between this run, left by a killed command, and the run of the scenario
    /// of digest `scenario_sha256` (after parameters) on the kernel image `image_sha256` that
    /// would continue it: kept iterations of one and new ones of the other would count as one
    /// rate. A record of an older crashrig, without a digest, is not refused for lacking it.
    pub fn changed_since(&self, scenario_sha256: &str, image_sha256: &str) -> Option<Changed<'_>> {
        if let Some(was) = self
            .scenario
            .sha256
            .as_deref()
            .filter(|h| *h != scenario_sha256)
        {
            return Some(Changed::Scenario { was });
        }
        let was = self.kernel.image_sha256.as_str();
        (!was.is_empty() && was != image_sha256).then_some(Changed::Image { was })
    }
}

/// What [`RunRecord::changed_since`] found: the digest the run was recorded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed<'a> {
    Scenario { was: &'a str },
    Image { was: &'a str },
}

/// A run's place in a matrix: enough to merge shards and resume without the matrix file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellInfo {
    /// Stable id, e.g. `debian-6.1/seed-kill-umount/filesystem=xfs`.
    pub id: String,
    /// The matrix's `name`.
    pub matrix: String,
    /// Digest of the matrix's expanded cell ids: shards of different matrices do not merge.
    pub digest: String,
    /// 0-based position in the unsharded expansion order.
    pub index: u32,
    /// Cells in the whole matrix.
    pub total: u32,
    /// Kernel label (`label`, or the spec made path-safe).
    pub kernel: String,
    /// Scenario key: the scenario file's stem.
    pub scenario: String,
    /// Parameter name -> value for this cell; empty without `parameters`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Summary {
    pub iterations: u32,
    pub passed: u32,
    /// Iterations with a failure verdict (fail, hang or panic).
    pub failed: u32,
    pub hangs: u32,
    pub panics: u32,
    pub errors: u32,
    /// failed / (iterations - errors).
    pub failure_rate: f64,
    /// 95% Wilson interval of the failure rate.
    pub failure_ci95: [f64; 2],
    /// Errno name -> how many step executions returned it on their first attempt, over all
    /// steps of every iteration (successes are not counted).
    pub errno_counts: BTreeMap<String, u32>,
    /// Per step id.
    pub steps: BTreeMap<String, StepSummary>,
    pub findings: Vec<FindingSummary>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StepSummary {
    pub kind: String,
    pub runs: u32,
    /// Runs whose expectation did not hold (the kernel's answer; errors not included).
    pub violations: u32,
    /// Runs that could not test what they meant (`StepRecord::error`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub errors: u32,
    /// Other runs in iterations that were not judged (verdict `error`: another step could
    /// not test what it meant, or the infrastructure failed): their outcome is in
    /// `errno_counts`, not in `violations`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unjudged: u32,
    /// `violations` over the judged runs (`runs - errors - unjudged`).
    pub violation_rate: f64,
    pub violation_ci95: [f64; 2],
    /// Errno name (or "ok") -> count, first attempts.
    pub errno_counts: BTreeMap<String, u32>,
    /// Over runs that had a busy window.
    pub busy_window_ms: Option<BusyStats>,
}

impl StepSummary {
    /// Runs whose outcome counts: not a step error, not in an iteration that was not judged.
    pub fn judged(&self) -> u32 {
        self.runs.saturating_sub(self.errors + self.unjudged)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BusyStats {
    pub count: u32,
    pub median: f64,
    pub max: f64,
    /// Runs that were still busy at the retry bound.
    pub gave_up: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingSummary {
    pub signature: String,
    pub kind: String,
    pub count: u32,
    pub expected: bool,
    /// Iterations it appeared in.
    pub iterations: Vec<u32>,
    pub title: String,
}

/// The longest duration a record may state: about 11 days, far beyond the 24 h bound of an
/// iteration, far below where `Duration` arithmetic overflows.
const MAX_RECORDED_MS: f64 = 1e9;

impl Results {
    /// What makes these results unusable, as `field: problem` lines (empty: none): numbers a
    /// crashrig never writes (negative or huge durations, counts that do not add up, a cell
    /// outside its matrix). Files are read from disk and may have been edited or damaged;
    /// everything downstream (merge, summaries, JUnit times) may then trust the numbers.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut ms = |field: String, v: f64| {
            if !(0.0..=MAX_RECORDED_MS).contains(&v) {
                let shown = if v.abs() >= 1e15 {
                    format!("{v:e}")
                } else {
                    v.to_string()
                };
                out.push(format!(
                    "{field} is {shown}, expected 0 to {MAX_RECORDED_MS} milliseconds"
                ));
            }
        };
        for (r, run) in self.runs.iter().enumerate() {
            for (i, it) in run.iterations.iter().enumerate() {
                ms(
                    format!("runs[{r}].iterations[{i}].duration_ms"),
                    it.duration_ms,
                );
                for (s, step) in it.steps.iter().enumerate() {
                    let at = format!("runs[{r}].iterations[{i}].steps[{s}]");
                    ms(format!("{at}.duration_ms"), step.duration_ms);
                    if let Some(w) = step.busy_window_ms {
                        ms(format!("{at}.busy_window_ms"), w);
                    }
                }
            }
            for (s, step) in run.setup.iter().enumerate() {
                ms(
                    format!("runs[{r}].setup[{s}].duration_ms"),
                    step.duration_ms,
                );
            }
            for (b, boot) in run.boots.iter().enumerate() {
                for (p, phase) in boot.phases.iter().enumerate() {
                    ms(format!("runs[{r}].boots[{b}].phases[{p}].ms"), phase.ms);
                }
            }
        }
        for (r, run) in self.runs.iter().enumerate() {
            let at = format!("runs[{r}]");
            // repro reads the run's scenario from it, resume and merge keep it: never a
            // place outside the results directory.
            if !is_inside_path(&run.dir) {
                out.push(format!(
                    "{at}.dir is {:?}, expected a relative path inside the results directory \
                     (no `..`, not absolute)",
                    run.dir
                ));
            }
            let s = &run.summary;
            let n = u64::from(s.iterations);
            let judged = u64::from(s.passed) + u64::from(s.failed) + u64::from(s.errors);
            if judged > n {
                out.push(format!(
                    "{at}.summary: passed {} + failed {} + errors {} is more than its {} iterations",
                    s.passed, s.failed, s.errors, s.iterations
                ));
            }
            if u64::from(s.hangs) + u64::from(s.panics) > u64::from(s.failed) {
                out.push(format!(
                    "{at}.summary: hangs {} + panics {} is more than failed {}",
                    s.hangs, s.panics, s.failed
                ));
            }
            if !(0.0..=1.0).contains(&s.failure_rate) {
                out.push(format!(
                    "{at}.summary.failure_rate is {}, expected 0 to 1",
                    s.failure_rate
                ));
            }
            for (id, step) in &s.steps {
                if step.violations > step.judged() || !(0.0..=1.0).contains(&step.violation_rate) {
                    out.push(format!(
                        "{at}.summary.steps.{id}: {} violations in {} runs (rate {})",
                        step.violations, step.runs, step.violation_rate
                    ));
                }
            }
            if let Some(cell) = &run.cell {
                let most = crate::matrix::MAX_CELLS as u32;
                if cell.total == 0 || cell.total > most {
                    out.push(format!(
                        "{at}.cell.total is {}, a matrix has 1 to {most} cells",
                        cell.total
                    ));
                } else if cell.index >= cell.total {
                    out.push(format!(
                        "{at}.cell.index is {}, outside its matrix of {} cells",
                        cell.index, cell.total
                    ));
                }
            }
        }
        out
    }
}

/// Whether `path` names something inside the directory it is relative to: not empty, not
/// absolute, only plain names (no `..`, `.` or root), as crashrig writes run directories.
fn is_inside_path(path: &str) -> bool {
    use std::path::Component;
    !path.is_empty()
        && !path.contains('\0')
        && std::path::Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Summarizes iteration records.
fn is_zero(n: &u32) -> bool {
    *n == 0
}

pub fn summarize(iterations: &[IterationRecord]) -> Summary {
    let mut s = Summary {
        iterations: iterations.len() as u32,
        ..Summary::default()
    };
    let mut busy: BTreeMap<String, (Vec<f64>, u32)> = BTreeMap::new();
    let mut findings: BTreeMap<(String, bool), FindingSummary> = BTreeMap::new();
    for it in iterations {
        match it.verdict {
            Verdict::Pass => s.passed += 1,
            Verdict::Fail => s.failed += 1,
            Verdict::Hang => {
                s.failed += 1;
                s.hangs += 1
            }
            Verdict::Panic => {
                s.failed += 1;
                s.panics += 1
            }
            Verdict::Error => s.errors += 1,
        }
        // Cleanup steps run in every iteration too and can fail it: they get their own rows
        // (ids are unique across sections), but the run's errno totals stay the steps'.
        for step in it
            .steps
            .iter()
            .filter(|st| st.phase == "steps" || st.phase == "cleanup")
        {
            if let Some(e) = step.errno.as_ref().filter(|_| step.phase == "steps") {
                *s.errno_counts.entry(e.clone()).or_default() += 1;
            }
            let entry = s
                .steps
                .entry(step.id.clone())
                .or_insert_with(|| StepSummary {
                    kind: step.kind.clone(),
                    ..StepSummary::default()
                });
            entry.runs += 1;
            if step.error {
                entry.errors += 1;
            } else if it.verdict == Verdict::Error {
                entry.unjudged += 1;
            } else if !step.ok {
                entry.violations += 1;
            }
            let name = step.errno.clone().unwrap_or_else(|| "ok".into());
            *entry.errno_counts.entry(name).or_default() += 1;
            if let Some(w) = step.busy_window_ms {
                let b = busy.entry(step.id.clone()).or_default();
                b.0.push(w);
                b.1 += u32::from(step.busy_gave_up);
            }
        }
        for f in &it.findings {
            let key = (f.signature.clone(), f.expected);
            let e = findings.entry(key).or_insert_with(|| FindingSummary {
                signature: f.signature.clone(),
                kind: f.kind.to_string(),
                count: 0,
                expected: f.expected,
                iterations: Vec::new(),
                title: f.title.clone(),
            });
            e.count += 1;
            if e.iterations.last() != Some(&it.iteration) {
                e.iterations.push(it.iteration);
            }
        }
    }
    for (id, step) in s.steps.iter_mut() {
        let judged = step.judged();
        step.violation_rate = ratio(step.violations, judged);
        let (lo, hi) = stats::wilson_interval(step.violations as u64, judged as u64, 1.96);
        step.violation_ci95 = [lo, hi];
        if let Some((windows, gave_up)) = busy.get(id) {
            step.busy_window_ms = Some(BusyStats {
                count: windows.len() as u32,
                median: stats::median(windows).unwrap_or(0.0),
                max: windows.iter().cloned().fold(0.0, f64::max),
                gave_up: *gave_up,
            });
        }
    }
    let judged = s.iterations - s.errors;
    s.failure_rate = ratio(s.failed, judged);
    let (lo, hi) = stats::wilson_interval(s.failed as u64, judged as u64, 1.96);
    s.failure_ci95 = [lo, hi];
    let mut list: Vec<FindingSummary> = findings.into_values().collect();
    list.sort_by(|a, b| {
        a.expected
            .cmp(&b.expected)
            .then(b.count.cmp(&a.count))
            .then(a.signature.cmp(&b.signature))
    });
    s.findings = list;
    s
}

fn ratio(a: u32, b: u32) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn step(
        id: &str,
        kind: &str,
        errno: Option<&str>,
        ok: bool,
        busy: Option<f64>,
    ) -> StepRecord {
        StepRecord {
            id: id.into(),
            kind: kind.into(),
            phase: "steps".into(),
            errno: errno.map(Into::into),
            final_errno: None,
            attempts: 1,
            busy_window_ms: busy,
            busy_gave_up: false,
            duration_ms: 1.0,
            started_ms: None,
            exit_status: None,
            ok,
            error: false,
            note: None,
            detail: None,
            output: String::new(),
        }
    }

    pub fn iteration(n: u32, verdict: Verdict, steps: Vec<StepRecord>) -> IterationRecord {
        IterationRecord {
            iteration: n,
            verdict,
            reasons: vec![],
            steps,
            findings: vec![],
            duration_ms: 10.0,
            seed: u64::from(n),
            dmesg_file: None,
            console_tail: vec![],
            host_load: None,
        }
    }

    /// A finished-iterations-free run of control-psync on debian:6.1, recorded with scenario
    /// digest `aaaa` and kernel image digest `k1`: what a killed run left, for resume tests.
    pub fn resumable_run() -> RunRecord {
        let mut run = run_record(
            "control-psync",
            "control-psync.yaml",
            ("debian:6.1", "6.1"),
            vec![],
        );
        run.scenario.sha256 = Some("aaaa".into());
        run.kernel.image_sha256 = "k1".into();
        run
    }

    /// A run record of scenario `name` at `path` on TCG, kernel `(spec, version)`, with these
    /// iterations and nothing else recorded; tests change what they need with `..`.
    pub fn run_record(
        name: &str,
        path: &str,
        kernel: (&str, &str),
        iterations: Vec<IterationRecord>,
    ) -> RunRecord {
        RunRecord {
            scenario: ScenarioInfo {
                name: name.into(),
                path: path.into(),
                description: String::new(),
                sha256: None,
            },
            kernel: KernelInfo {
                spec: kernel.0.into(),
                version: kernel.1.into(),
                release: None,
                image_sha256: String::new(),
                build_key: None,
                kconfig: vec![],
                patches: vec![],
            },
            accel: "tcg".into(),
            seed: 1,
            started: String::new(),
            finished: None,
            dir: String::new(),
            cell: None,
            restore: "never".into(),
            independent_iterations: false,
            setup_dmesg: None,
            guest_image: String::new(),
            boots: vec![],
            setup: vec![],
            error: None,
            setting: Default::default(),
            iterations_planned: None,
            host_cpus: None,
            summary: summarize(&iterations),
            iterations,
        }
    }

    /// Four iterations of the seed scenario: two EBUSY (busy 3 and 9 ms), one hang, one pass.
    pub fn seed_iterations() -> Vec<IterationRecord> {
        vec![
            iteration(
                1,
                Verdict::Fail,
                vec![step("umount", "umount", Some("EBUSY"), false, Some(3.0))],
            ),
            iteration(
                2,
                Verdict::Pass,
                vec![step("umount", "umount", None, true, None)],
            ),
            iteration(
                3,
                Verdict::Fail,
                vec![step("umount", "umount", Some("EBUSY"), false, Some(9.0))],
            ),
            iteration(4, Verdict::Hang, vec![]),
        ]
    }

    #[test]
    fn summary_counts_verdicts_errnos_and_busy_windows() {
        let s = summarize(&seed_iterations());
        assert_eq!(
            (
                s.iterations,
                s.passed,
                s.failed,
                s.hangs,
                s.panics,
                s.errors
            ),
            (4, 1, 3, 1, 0, 0)
        );
        assert_eq!(s.failure_rate, 0.75);
        assert_eq!(s.errno_counts, BTreeMap::from([("EBUSY".to_string(), 2)]));
        let umount = &s.steps["umount"];
        assert_eq!((umount.runs, umount.violations), (3, 2));
        assert_eq!(
            umount.errno_counts,
            BTreeMap::from([("EBUSY".to_string(), 2), ("ok".to_string(), 1)])
        );
        let busy = umount.busy_window_ms.as_ref().unwrap();
        assert_eq!(
            (busy.count, busy.median, busy.max, busy.gave_up),
            (2, 6.0, 9.0, 0)
        );
        let (lo, hi) = crate::outcome::wilson_interval(3, 4, 1.96);
        assert_eq!(s.failure_ci95, [lo, hi]);
    }

    #[test]
    fn infrastructure_errors_do_not_count_in_the_rate() {
        let its = vec![
            iteration(1, Verdict::Error, vec![]),
            iteration(2, Verdict::Fail, vec![]),
        ];
        let s = summarize(&its);
        assert_eq!((s.failed, s.errors, s.failure_rate), (1, 1, 1.0));
        assert_eq!(summarize(&[]).failure_ci95, [0.0, 1.0]);
    }

    #[test]
    fn a_run_says_the_host_was_busy_only_when_the_load_passed_its_cpus() {
        let loaded = |loads: &[Option<f64>]| {
            let its = loads
                .iter()
                .enumerate()
                .map(|(i, l)| IterationRecord {
                    host_load: *l,
                    ..iteration(i as u32 + 1, Verdict::Pass, vec![])
                })
                .collect();
            RunRecord {
                host_cpus: Some(2),
                ..run_record("s", "s.yaml", ("debian:6.1", "6.1"), its)
            }
        };
        assert_eq!(loaded(&[Some(0.4), Some(2.0), None]).busy_host(), None);
        let busy = loaded(&[Some(0.4), Some(5.25), None, Some(2.5)])
            .busy_host()
            .unwrap();
        assert_eq!(
            busy,
            BusyHost {
                cpus: 2,
                max_load: 5.25,
                busy: 2,
                recorded: 3
            }
        );
        assert_eq!(
            busy.text(),
            "host load above its 2 CPUs when 2 of 3 iterations ended (up to 5.2; crashrig's \
             own guests count)"
        );
        // Results of an older crashrig recorded neither.
        let old = RunRecord {
            host_cpus: None,
            ..loaded(&[Some(9.0)])
        };
        assert_eq!(old.busy_host(), None);
    }
}
