//! Scenario format v1: the typed model. Loading (with `file:line:column` errors) is in
//! `load.rs`, checks that need the whole scenario in `validate.rs`.
//!
//! A scenario is YAML:
//!
//! ```yaml
//! name: umount-ebusy-after-kill
//! devices: [{ name: scratch, size: 4G }]
//! filesystem: { type: xfs, device: scratch }
//! iterations: 20
//! setup:
//!   - mkfs: {}
//! steps:
//!   - mount: {}
//!   - spawn: { name: load, command: "fio ..." }
//!   - sleep: { min: 1s, max: 3s }
//!   - kill: { name: load, signal: KILL }
//!   - umount: { id: umount, retry: 10s }
//! ```
//!
//! Every step is a one-key map; the key names its kind (a step without fields may be written
//! bare: `- power-cut`). Durations are humantime strings ("500ms", "2s"), sizes are byte
//! counts with an optional K/M/G/T suffix (powers of 1024). The reference for users is
//! docs/scenario-format.md.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crashrig_guest::{DmTable, ShutdownFlag};

pub use super::params::{Parameter, Setting};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Scenario {
    /// Format version; only 1 exists. Default: 1.
    #[serde(default = "default_version")]
    pub version: u32,
    /// Required; names the scenario in results.
    pub name: String,
    /// What the scenario reproduces and why. Default: empty.
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub vm: VmSpec,
    /// Kernel config fragments (names in `kconfigs/`) a built kernel needs for this scenario.
    #[serde(default)]
    pub kconfig: Vec<String>,
    /// virtio-blk disks, in order. Default: none.
    #[serde(default)]
    pub devices: Vec<Device>,
    /// The filesystem steps use unless they name a device or mountpoint. Default: none.
    pub filesystem: Option<Filesystem>,
    /// Iterations of `steps`. Default: 20.
    #[serde(default = "default_iterations")]
    pub iterations: u32,
    /// Time one iteration may take before the guest counts as hung. Default: 5m.
    #[serde(default = "default_iteration_timeout", with = "humantime_serde_compat")]
    pub iteration_timeout: Duration,
    /// Seed for random sleeps; default: drawn per run and recorded in the results.
    pub seed: Option<u64>,
    /// Run once per run, after the first boot, before the first iteration. Default: none.
    #[serde(default)]
    pub setup: Vec<Step>,
    /// Run every iteration. Required, at least one.
    pub steps: Vec<Step>,
    /// Run after every iteration, whatever happened, to bring the guest back to a known state.
    #[serde(default)]
    pub cleanup: Vec<Step>,
    /// An iteration depends on what earlier ones left (files, filesystem state), so
    /// iterations must not start from a restored snapshot of the set-up guest; they run one
    /// after another on the same guest. Default: false.
    #[serde(default)]
    pub iterations_share_state: bool,
    /// Which dmesg findings fail an iteration. Default: all of them.
    #[serde(default)]
    pub dmesg: DmesgExpect,
    /// Declared parameters (`parameters:`), in file order. Read by the loader, not by serde,
    /// and not serialized: a serialized scenario has its values substituted.
    #[serde(skip)]
    pub parameters: Vec<Parameter>,
    /// The parameter values this scenario was loaded with (defaults unless overridden).
    #[serde(skip)]
    pub setting: Setting,
}

impl Scenario {
    /// The device the filesystem lives on: its `device`, else the first device (`None`
    /// without a filesystem, or when the device is not declared, which validation rejects).
    pub fn filesystem_device(&self) -> Option<&Device> {
        let fs = self.filesystem.as_ref()?;
        match &fs.device {
            Some(name) => self.devices.iter().find(|d| &d.name == name),
            None => self.devices.first(),
        }
    }
}

fn default_version() -> u32 {
    1
}
fn default_iterations() -> u32 {
    20
}
fn default_iteration_timeout() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VmSpec {
    /// Guest memory. Default: 2G.
    #[serde(default = "default_memory")]
    pub memory: Size,
    /// Virtual CPUs. Default: 2.
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    /// Extra kernel command-line words. Default: none.
    #[serde(default)]
    pub cmdline: Vec<String>,
}

impl Default for VmSpec {
    fn default() -> Self {
        VmSpec {
            memory: default_memory(),
            cpus: default_cpus(),
            cmdline: Vec::new(),
        }
    }
}

fn default_memory() -> Size {
    Size(2 << 30)
}
fn default_cpus() -> u32 {
    2
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Device {
    /// Name used by steps and as the virtio serial (`/sys/block/vdX/serial`), so at most
    /// 20 characters of `[A-Za-z0-9_-]`.
    pub name: String,
    /// Disk size (a sparse file on the host), at least 1M.
    pub size: Size,
    /// Stack the device under device-mapper (a linear table named after the device) at setup
    /// so `dm-error` / `dm-flakey` steps can swap its table. Default: false.
    #[serde(default)]
    pub dm: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Filesystem {
    /// xfs, ext4 or btrfs (any type with a `mkfs.<type>` in the image works).
    #[serde(rename = "type")]
    pub fstype: String,
    /// Default: the first device.
    pub device: Option<String>,
    /// Default: /mnt.
    #[serde(default = "default_mountpoint")]
    pub mountpoint: String,
    /// Arguments to `mkfs.<type>` before the device. Default: none.
    #[serde(default)]
    pub mkfs_options: Vec<String>,
    /// Mount options (joined with `,`). Default: none.
    #[serde(default)]
    pub mount_options: Vec<String>,
}

fn default_mountpoint() -> String {
    "/mnt".into()
}

/// One step. Steps that talk to the filesystem default to the scenario's `filesystem`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum Step {
    Mkfs(MkfsStep),
    Mount(MountStep),
    Umount(UmountStep),
    Spawn(SpawnStep),
    Kill(KillStep),
    Run(RunStep),
    Sleep(SleepStep),
    Shutdown(ShutdownStep),
    Sync(SyncStep),
    DmError(DmStep),
    DmFlakey(DmFlakeyStep),
    DmRestore(DmStep),
    Fsck(FsckStep),
    WriteData(DataStep),
    VerifyData(DataStep),
    PowerCut(HostStep),
    Panic(HostStep),
    Reboot(HostStep),
    Unplug(PlugStep),
    Replug(PlugStep),
}

impl Step {
    /// The YAML key of this step kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Mkfs(_) => "mkfs",
            Step::Mount(_) => "mount",
            Step::Umount(_) => "umount",
            Step::Spawn(_) => "spawn",
            Step::Kill(_) => "kill",
            Step::Run(_) => "run",
            Step::Sleep(_) => "sleep",
            Step::Shutdown(_) => "shutdown",
            Step::Sync(_) => "sync",
            Step::DmError(_) => "dm-error",
            Step::DmFlakey(_) => "dm-flakey",
            Step::DmRestore(_) => "dm-restore",
            Step::Fsck(_) => "fsck",
            Step::WriteData(_) => "write-data",
            Step::VerifyData(_) => "verify-data",
            Step::PowerCut(_) => "power-cut",
            Step::Panic(_) => "panic",
            Step::Reboot(_) => "reboot",
            Step::Unplug(_) => "unplug",
            Step::Replug(_) => "replug",
        }
    }

    /// The step's `id` if it has one; results and expectations name steps by it.
    pub fn id(&self) -> Option<&str> {
        match self {
            Step::Mkfs(s) => s.id.as_deref(),
            Step::Mount(s) => s.id.as_deref(),
            Step::Umount(s) => s.id.as_deref(),
            Step::Spawn(s) => s.id.as_deref(),
            Step::Kill(s) => s.id.as_deref(),
            Step::Run(s) => s.id.as_deref(),
            Step::Sleep(s) => s.id.as_deref(),
            Step::Shutdown(s) => s.id.as_deref(),
            Step::Sync(s) => s.id.as_deref(),
            Step::DmError(s) | Step::DmRestore(s) => s.id.as_deref(),
            Step::DmFlakey(s) => s.id.as_deref(),
            Step::Fsck(s) => s.id.as_deref(),
            Step::WriteData(s) | Step::VerifyData(s) => s.id.as_deref(),
            Step::PowerCut(s) | Step::Panic(s) | Step::Reboot(s) => s.id.as_deref(),
            Step::Unplug(s) | Step::Replug(s) => s.id.as_deref(),
        }
    }
}

/// What outcomes of a step are acceptable. In YAML: `expect: ok`, `expect: any`, `expect: EBUSY`
/// or a non-empty list `expect: [ok, EBUSY]`. Default: ok.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    One(Outcome),
    Many(Vec<Outcome>),
}

impl Default for Expect {
    fn default() -> Self {
        Expect::One(Outcome::Ok)
    }
}

impl Serialize for Expect {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Expect::One(o) => o.serialize(s),
            Expect::Many(list) => list.serialize(s),
        }
    }
}

// Hand-written rather than `untagged`, so that a wrong value says what is accepted instead
// of "data did not match any variant".
impl<'de> Deserialize<'de> for Expect {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Expect;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`ok`, `any`, an errno name such as `EBUSY`, or a list of these")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Expect, E> {
                Outcome::parse(v).map(Expect::One).map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Expect, A::Error> {
                let mut list = Vec::new();
                while let Some(o) = seq.next_element::<Outcome>()? {
                    list.push(o);
                }
                if list.is_empty() {
                    return Err(serde::de::Error::invalid_length(0, &"at least one outcome"));
                }
                Ok(Expect::Many(list))
            }
        }
        d.deserialize_any(V)
    }
}

impl Expect {
    /// Whether `any` is among the outcomes: every result passes (mkfs, whose result is an
    /// exit status, not an errno).
    pub fn takes_any(&self) -> bool {
        match self {
            Expect::One(o) => *o == Outcome::Any,
            Expect::Many(list) => list.contains(&Outcome::Any),
        }
    }

    /// Whether a step that failed with `errno` (`None`: it succeeded) met the expectation.
    pub fn allows(&self, errno: Option<&str>) -> bool {
        let check = |o: &Outcome| match (o, errno) {
            (Outcome::Any, _) => true,
            (Outcome::Ok, None) => true,
            (Outcome::Errno(want), Some(got)) => want == got,
            _ => false,
        };
        match self {
            Expect::One(o) => check(o),
            Expect::Many(list) => list.iter().any(check),
        }
    }
}

/// `ok`, `any`, or an errno name such as `EBUSY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Any,
    Errno(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Any => f.write_str("any"),
            Outcome::Errno(e) => f.write_str(e),
        }
    }
}

impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Outcome {
    /// Parses `ok`, `any` or an errno name; the error says what was wrong.
    pub fn parse(s: &str) -> Result<Outcome, String> {
        match s {
            "ok" => Ok(Outcome::Ok),
            "any" => Ok(Outcome::Any),
            e if crashrig_guest::errno_value(e).is_some() => Ok(Outcome::Errno(s.to_string())),
            e if crashrig_guest::errno_value(&e.to_ascii_uppercase()).is_some() => Err(format!(
                "unknown outcome `{s}`, expected `{}` (errno names are upper case)",
                e.to_ascii_uppercase()
            )),
            _ => Err(format!(
                "unknown outcome `{s}`, expected `ok`, `any` or an errno name such as `EBUSY`"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Outcome::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MkfsStep {
    /// Name of the step in results; default: `<kind>#<index>`.
    pub id: Option<String>,
    /// Default: the scenario filesystem's device.
    pub device: Option<String>,
    /// Default: the scenario filesystem's type.
    #[serde(rename = "type")]
    pub fstype: Option<String>,
    /// Default: the scenario filesystem's mkfs-options.
    pub options: Option<Vec<String>>,
    /// Allowed outcomes (of the first attempt). Default: ok.
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MountStep {
    /// Name of the step in results; default: `<kind>#<index>`.
    pub id: Option<String>,
    /// Default: the scenario filesystem's device.
    pub device: Option<String>,
    /// Default: the scenario filesystem's mountpoint.
    pub mountpoint: Option<String>,
    /// Default: the scenario filesystem's mount-options.
    pub options: Option<Vec<String>>,
    /// Retry while mount fails with EBUSY, for at most this long, and record the busy window.
    #[serde(default, with = "opt_duration")]
    pub retry: Option<Duration>,
    /// Allowed outcomes (of the first attempt). Default: ok.
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct UmountStep {
    /// Name of the step in results; default: `<kind>#<index>`.
    pub id: Option<String>,
    /// Default: the scenario filesystem's mountpoint.
    pub mountpoint: Option<String>,
    /// `MNT_FORCE`. Default: false.
    #[serde(default)]
    pub force: bool,
    /// `MNT_DETACH`. Default: false.
    #[serde(default)]
    pub detach: bool,
    /// Retry while umount fails with EBUSY, for at most this long, and record the busy
    /// window. The expectation applies to the first attempt.
    #[serde(default, with = "opt_duration")]
    pub retry: Option<Duration>,
    /// Allowed outcomes (of the first attempt). Default: ok.
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SpawnStep {
    /// Name of the step in results; default: `<kind>#<index>`.
    pub id: Option<String>,
    /// Name `kill` refers to.
    pub name: String,
    /// Guest shell command (`sh -c`), run in a cgroup of its own.
    pub command: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KillStep {
    /// Name of the step in results; default: `<kind>#<index>`.
    pub id: Option<String>,
    pub name: String,
    /// Signal name without SIG. Default: KILL.
    #[serde(default = "default_signal")]
    pub signal: String,
    /// Wait until every task of the workload has exited, at most this long. Default: 60s.
    #[serde(default = "default_kill_wait", with = "humantime_serde_compat")]
    pub wait: Duration,
}

fn default_signal() -> String {
    "KILL".into()
}
fn default_kill_wait() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RunStep {
    /// Name of the step in results; default: `<kind>#<index>`.
    pub id: Option<String>,
    /// Guest shell command (`sh -c`).
    pub command: String,
    /// Default: 60s.
    #[serde(default = "default_run_timeout", with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Expected exit status. Default: 0.
    #[serde(default)]
    pub exit: i32,
}

fn default_run_timeout() -> Duration {
    Duration::from_secs(60)
}

/// `sleep: 2s`, `sleep: { time: 2s }` or `sleep: { min: 1s, max: 3s }` (uniform, drawn from
/// the run's recorded seed). Validation requires exactly `time`, or both `min` <= `max`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", remote = "SleepStep")]
pub struct SleepStep {
    /// Name of the step in results; default: `<kind>#<index>`.
    pub id: Option<String>,
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub time: Option<Duration>,
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub min: Option<Duration>,
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub max: Option<Duration>,
}

impl Serialize for SleepStep {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SleepStep::serialize(self, s)
    }
}

// A plain duration is the common case (`sleep: 2s`); a map takes the derived path so
// unknown fields are still reported by name.
impl<'de> Deserialize<'de> for SleepStep {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SleepStep;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 2s, or a map with `time` or `min` and `max`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SleepStep, E> {
                Ok(SleepStep {
                    time: Some(humantime_serde_compat::parse(v).map_err(E::custom)?),
                    ..SleepStep::default()
                })
            }
            // A bare `- sleep`: validation explains what is missing.
            fn visit_unit<E: serde::de::Error>(self) -> Result<SleepStep, E> {
                Ok(SleepStep::default())
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<SleepStep, A::Error> {
                SleepStep::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ShutdownStep {
    /// Name of the step in results; default: `<kind>#<index>`.
    pub id: Option<String>,
    /// Default: the scenario filesystem's mountpoint.
    pub mountpoint: Option<String>,
    /// default, log-flush or no-log-flush. Default: default.
    #[serde(default = "default_shutdown_flag")]
    pub flags: ShutdownFlag,
    /// Allowed outcomes (of the first attempt). Default: ok.
    #[serde(default)]
    pub expect: Expect,
}

fn default_shutdown_flag() -> ShutdownFlag {
    ShutdownFlag::Default
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SyncStep {
    /// Name of the step in results; default: `<kind>#<index>`.
    pub id: Option<String>,
    /// syncfs(2) on this mountpoint; default: sync(2).
    pub mountpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DmStep {
    /// Name of the step in results; default: `<kind>#<index>`.
    pub id: Option<String>,
    /// A device declared with `dm: true`. Default: the filesystem's device.
    pub device: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DmFlakeyStep {
    /// Name of the step in results; default: `<kind>#<index>`.
    pub id: Option<String>,
    /// A device declared with `dm: true`. Default: the filesystem's device.
    pub device: Option<String>,
    /// drop-writes (acknowledged but lost) or error-writes. Default: drop-writes.
    #[serde(default)]
    pub mode: FlakeyMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlakeyMode {
    #[default]
    DropWrites,
    ErrorWrites,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FsckStep {
    /// Name of the step in results; default: `<kind>#<index>`.
    pub id: Option<String>,
    /// Default: the filesystem's device.
    pub device: Option<String>,
    /// Arguments for the checker, after its read-only flag and before the device (xfs with an
    /// external log needs `[-l, /dev/vdb]`). Default: none.
    #[serde(default)]
    pub options: Vec<String>,
    /// Expect a clean check. Default: true (a dirty result fails the iteration).
    #[serde(default = "yes")]
    pub must_be_clean: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DataStep {
    /// Name of the step in results; default: `<kind>#<index>`.
    pub id: Option<String>,
    /// Directory below the mountpoint. Default: crashrig-data.
    #[serde(default = "default_data_dir")]
    pub dir: String,
    /// Default: 16.
    #[serde(default = "default_files")]
    pub files: u32,
    /// Default: 64K.
    #[serde(default = "default_file_size")]
    pub size: Size,
    /// fsync each file and the directory (write-data only). Default: true.
    #[serde(default = "yes")]
    pub fsync: bool,
}

fn default_data_dir() -> String {
    "crashrig-data".into()
}
fn default_files() -> u32 {
    16
}
fn default_file_size() -> Size {
    Size(64 << 10)
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HostStep {
    /// Name of the step in results; default: `<kind>#<index>`.
    pub id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PlugStep {
    /// Name of the step in results; default: `<kind>#<index>`.
    pub id: Option<String>,
    /// Default: the filesystem's device.
    pub device: Option<String>,
}

/// Which dmesg findings fail an iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DmesgExpect {
    /// Finding kinds that fail an iteration: a list, `all` or `none`. Default: all.
    #[serde(default)]
    pub fail_on: FindingSelector,
    /// Regular expressions; a dmesg line matching one is never a finding.
    #[serde(default)]
    pub ignore: Vec<String>,
}

impl Default for DmesgExpect {
    fn default() -> Self {
        DmesgExpect {
            fail_on: FindingSelector::All,
            ignore: Vec::new(),
        }
    }
}

/// The dmesg finding kinds crashrig classifies, as named in `dmesg.fail-on`.
pub const FINDING_KINDS: &[&str] = &[
    "warning",
    "bug",
    "oops",
    "panic",
    "kasan",
    "lockdep",
    "hung-task",
    "rcu-stall",
    "soft-lockup",
    "fs-corruption",
    "fs-error",
];

/// In YAML: `all`, `none`, one kind (`warning`) or a list of kinds from [`FINDING_KINDS`].
/// Kinds are checked by validation, not here, so every bad one is reported.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FindingSelector {
    #[default]
    All,
    None,
    Kinds(Vec<String>),
}

impl FindingSelector {
    /// Whether a finding of `kind` fails the iteration.
    pub fn selects(&self, kind: &str) -> bool {
        match self {
            FindingSelector::All => true,
            FindingSelector::None => false,
            FindingSelector::Kinds(kinds) => kinds.iter().any(|k| k == kind),
        }
    }
}

impl Serialize for FindingSelector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FindingSelector::All => s.serialize_str("all"),
            FindingSelector::None => s.serialize_str("none"),
            FindingSelector::Kinds(kinds) => kinds.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for FindingSelector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = FindingSelector;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`all`, `none`, a finding kind or a list of finding kinds")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FindingSelector, E> {
                Ok(match v {
                    "all" => FindingSelector::All,
                    "none" => FindingSelector::None,
                    kind => FindingSelector::Kinds(vec![kind.to_string()]),
                })
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<FindingSelector, A::Error> {
                let mut kinds = Vec::new();
                while let Some(k) = seq.next_element::<String>()? {
                    kinds.push(k);
                }
                Ok(FindingSelector::Kinds(kinds))
            }
        }
        d.deserialize_any(V)
    }
}

/// A byte count; YAML accepts `4096`, `64K`, `4G` (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    pub fn parse(s: &str) -> Option<Size> {
        let s = s.trim();
        let (num, mult) = match s.char_indices().last()? {
            (i, 'K' | 'k') => (&s[..i], 1u64 << 10),
            (i, 'M' | 'm') => (&s[..i], 1 << 20),
            (i, 'G' | 'g') => (&s[..i], 1 << 30),
            (i, 'T' | 't') => (&s[..i], 1 << 40),
            _ => (s, 1),
        };
        num.trim().parse::<u64>().ok()?.checked_mul(mult).map(Size)
    }
}

impl Size {
    /// A rounded size for messages about the host: `23.4G`, `512M`.
    pub fn approx(self) -> String {
        for (suffix, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
            if self.0 >= 1 << shift {
                let v = self.0 as f64 / (1u64 << shift) as f64;
                let text = format!("{v:.1}");
                return format!("{}{suffix}", text.trim_end_matches(".0"));
            }
        }
        self.0.to_string()
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (suffix, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
            if self.0 >= 1 << shift && self.0.is_multiple_of(1 << shift) {
                return write!(f, "{}{}", self.0 >> shift, suffix);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 4096, 64K or 4G")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Size, E> {
                Size::parse(v).ok_or_else(|| {
                    E::custom(format!(
                        "invalid size `{v}`, expected a size such as 4096, 64K or 4G"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Durations as humantime strings ("500ms", "2s", "1m 30s").
pub mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }

    /// Parses a humantime duration; the error names the text and shows valid examples.
    pub fn parse(s: &str) -> Result<Duration, String> {
        humantime::parse_duration(s).map_err(|_| {
            format!("invalid duration `{s}`, expected a number with a unit such as 500ms, 2s or 1m")
        })
    }
}

pub mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::humantime_serde_compat::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// `null` (or `~`) reads as absent, so a serialized `None` loads back.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => super::humantime_serde_compat::parse(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}
