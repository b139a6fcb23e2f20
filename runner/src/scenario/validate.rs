//! Checks that need the whole scenario (names declared, references resolved, ranges sane).
//! Pure: problems carry a path into the scenario (`steps[3].kill.name`); the loader turns
//! paths into file positions.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use super::model::{FindingSelector, Scenario, Size, SleepStep, Step, FINDING_KINDS};

pub use crate::yaml::Severity;

/// One step of a path into the scenario, named as in the YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSeg {
    Key(&'static str),
    Index(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    /// Where the problem is; the loader points at the deepest part of it that exists.
    pub path: Vec<PathSeg>,
    pub message: String,
}

/// Parts of the scenario that failed to load and were left out. Checks that would report
/// their absence (an undeclared device, a kill without its spawn) are skipped for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Partial {
    pub name: bool,
    pub devices: bool,
    pub filesystem: bool,
    /// Something of `steps` itself was left out (so it may not really be empty).
    pub steps: bool,
    /// Kinds of the steps that were left out, `?` when it could not be told.
    pub dropped_steps: HashSet<String>,
    /// (section, index) of steps with a field left out -> the fields left out; the step's
    /// own checks of those fields and of the step as a whole (which may complain about
    /// their defaults) are skipped, its other fields are still checked.
    pub damaged_steps: HashMap<(String, usize), HashSet<String>>,
}

/// Filesystem types the default guest image has a `mkfs.<type>` and a checker for.
pub const KNOWN_FSTYPES: &[&str] = &["xfs", "ext4", "btrfs"];

/// Signal names `kill` accepts (without the SIG prefix).
pub const SIGNALS: &[&str] = &[
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

/// The longest name QEMU passes on as a virtio-blk serial (`VIRTIO_BLK_ID_BYTES`).
pub const MAX_DEVICE_NAME: usize = 20;

const MIN_MEMORY: Size = Size(256 << 20);
const MIN_DEVICE_SIZE: Size = Size(1 << 20);
const MAX_CPUS: u32 = 64;
/// Bytes of `vm.cmdline` (its words and their separators): the x86 kernel takes a 2048-byte
/// command line, and crashrig's own words (console, key, modules) need the rest.
const MAX_CMDLINE_WORDS: usize = 1024;
/// Upper bounds on what a user writes, so deadlines cannot overflow and nothing allocates
/// without end: a million iterations, a day per iteration, 1 TiB of guest memory.
pub const MAX_ITERATIONS: u32 = 1_000_000;
const MAX_ITERATION_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
const MAX_MEMORY: Size = Size(1 << 40);
/// A step's retry, wait, timeout or sleep: a day at most, like the iteration timeout.
const MAX_STEP_DURATION: Duration = Duration::from_secs(24 * 3600);
/// A scratch disk is a sparse file on the host; 1 TiB is more than any test needs.
const MAX_DEVICE_SIZE: Size = Size(1 << 40);
/// Longest `run` or `spawn` command: the kernel's 128 KiB per argument (MAX_ARG_STRLEN), less
/// room for the helper's own prelude.
pub const MAX_COMMAND_BYTES: usize = 96 * 1024;

/// write-data/verify-data: at most this many files of at most this size each.
const MAX_DATA_FILES: u32 = 100_000;
const MAX_DATA_FILE_SIZE: Size = Size(1 << 30);

/// What the host offers, for the checks that depend on it (`vm.memory`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostLimits {
    /// Total memory of the host (MemTotal) in bytes; `None`: unknown, not checked.
    pub memory: Option<u64>,
}

impl HostLimits {
    /// This host's, read once.
    pub fn of_host() -> HostLimits {
        static HOST: std::sync::OnceLock<HostLimits> = std::sync::OnceLock::new();
        *HOST.get_or_init(|| HostLimits {
            memory: crate::host::memory_total(),
        })
    }
}

impl fmt::Display for Problem {
    /// `steps[3].kill.name: kill step names ...`, for problems found outside a file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path = String::new();
        for seg in &self.path {
            match seg {
                Key(k) if path.is_empty() => path.push_str(k),
                Key(k) => {
                    path.push('.');
                    path.push_str(k);
                }
                Index(i) => path.push_str(&format!("[{i}]")),
            }
        }
        let label = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        write!(f, "{path}: {label}{}", self.message)
    }
}

/// Every problem in a scenario (for one built or changed in code, such as an
/// `--iterations` override; files get these from the loader, with positions).
pub fn validate(s: &Scenario) -> Vec<Problem> {
    check(s, &Partial::default(), &HostLimits::of_host())
}

pub(crate) fn check(s: &Scenario, partial: &Partial, host: &HostLimits) -> Vec<Problem> {
    let mut v = Checker {
        s,
        partial,
        host,
        problems: Vec::new(),
        mount_guessed: false,
    };
    v.top();
    v.devices();
    v.filesystem();
    v.steps();
    v.dmesg();
    v.problems
}

struct Checker<'a> {
    s: &'a Scenario,
    partial: &'a Partial,
    host: &'a HostLimits,
    problems: Vec<Problem>,
    /// A `run` whose command does not say `mount` came since the section's steps last made
    /// the mount state certain: it is then only likely, and what it finds is a warning, not
    /// an error (a script may mount by hand without saying so).
    mount_guessed: bool,
}

use PathSeg::{Index, Key};

const SECTIONS: [&str; 3] = ["setup", "steps", "cleanup"];

/// Whether the filesystem is mounted at its mountpoint at a point of a section.
#[derive(Debug, Clone, Copy, PartialEq)]
enum MountState {
    Unknown,
    Mounted,
    /// Certainly not mounted, since a step of this kind.
    Unmounted(&'static str),
    /// Not mounted since a crash step of this kind that came while it was mounted: its
    /// log is not replayed.
    Crashed(&'static str),
    /// Mounted, and an xfs shut down by a `shutdown` step: its log stays dirty after umount.
    ShutDown,
}

impl Checker<'_> {
    fn error(&mut self, path: Vec<PathSeg>, message: String) {
        self.problems.push(Problem {
            severity: Severity::Error,
            path,
            message,
        });
    }

    /// A problem the mount state shows: an error when the section's steps make the state
    /// certain, a warning when a `run` since may have changed it by hand.
    fn mount_problem(&mut self, path: Vec<PathSeg>, message: String) {
        if self.mount_guessed {
            self.warning(
                path,
                format!(
                    "{message} (unless a `run` step before it mounts or unmounts by other means \
                     than a `mount` command)"
                ),
            );
        } else {
            self.error(path, message);
        }
    }

    fn warning(&mut self, path: Vec<PathSeg>, message: String) {
        self.problems.push(Problem {
            severity: Severity::Warning,
            path,
            message,
        });
    }

    fn top(&mut self) {
        let s = self.s;
        if s.version != 1 {
            self.error(
                vec![Key("version")],
                format!("unsupported version {}, only version 1 exists", s.version),
            );
        }
        if !self.partial.name {
            if s.name.trim().is_empty() {
                self.error(vec![Key("name")], "`name` must not be empty".into());
            } else if s.name.contains('/') {
                self.error(
                    vec![Key("name")],
                    format!(
                        "`name` `{}` must not contain `/` (it names result files)",
                        s.name
                    ),
                );
            } else if s.name.chars().any(char::is_control) {
                // a newline, NUL or ESC reached the terminal summary and the reports as is
                self.error(
                    vec![Key("name")],
                    format!(
                        "`name` {:?} must not contain control characters (a line break, NUL, \
                         escape): it is printed in summaries and reports",
                        s.name
                    ),
                );
            }
        }
        if s.iterations == 0 {
            self.error(
                vec![Key("iterations")],
                "`iterations` must be at least 1".into(),
            );
        } else if s.iterations > MAX_ITERATIONS {
            self.error(
                vec![Key("iterations")],
                format!("`iterations` is {}, at most {MAX_ITERATIONS}", s.iterations),
            );
        }
        if s.iteration_timeout > MAX_ITERATION_TIMEOUT {
            self.error(
                vec![Key("iteration-timeout")],
                format!(
                    "`iteration-timeout` is {}, at most 24h",
                    humantime::format_duration(s.iteration_timeout)
                ),
            );
        }
        if s.vm.memory > MAX_MEMORY {
            self.error(
                vec![Key("vm"), Key("memory")],
                format!("`vm.memory` is {}, at most {MAX_MEMORY}", s.vm.memory),
            );
        } else if let Some(total) = self.host.memory.filter(|&t| s.vm.memory.0 > t) {
            self.error(
                vec![Key("vm"), Key("memory")],
                format!(
                    "`vm.memory` is {}, but the host has {} of memory in all",
                    s.vm.memory,
                    Size(total).approx()
                ),
            );
        }
        if s.iteration_timeout < Duration::from_secs(1) {
            self.error(
                vec![Key("iteration-timeout")],
                "`iteration-timeout` must be at least 1s".into(),
            );
        }
        if s.vm.memory < MIN_MEMORY {
            self.error(
                vec![Key("vm"), Key("memory")],
                format!(
                    "`vm.memory` is {}, at least {MIN_MEMORY} is needed",
                    s.vm.memory
                ),
            );
        }
        if !(1..=MAX_CPUS).contains(&s.vm.cpus) {
            self.error(
                vec![Key("vm"), Key("cpus")],
                format!("`vm.cpus` is {}, expected 1 to {MAX_CPUS}", s.vm.cpus),
            );
        }
        // One YAML entry is one kernel command-line word: the words are joined with spaces,
        // so a space or a line break inside one would silently make two.
        for (i, w) in s.vm.cmdline.iter().enumerate() {
            if w.is_empty() || w.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.error(
                    vec![Key("vm"), Key("cmdline"), Index(i)],
                    format!(
                        "kernel command-line word {w:?} must be one non-empty word, without \
                         spaces or control characters (write each word as its own entry)"
                    ),
                );
            }
        }
        let words: usize = s.vm.cmdline.iter().map(|w| w.len() + 1).sum();
        if words > MAX_CMDLINE_WORDS {
            self.error(
                vec![Key("vm"), Key("cmdline")],
                format!(
                    "`vm.cmdline` is {words} bytes long, at most {MAX_CMDLINE_WORDS} (the \
                     kernel's command line holds 2048 with crashrig's own words)"
                ),
            );
        }
        for (i, k) in s.kconfig.iter().enumerate() {
            if k.is_empty() || k.contains('/') {
                self.error(
                    vec![Key("kconfig"), Index(i)],
                    format!("kconfig fragment `{k}` must be a file name in kconfigs/"),
                );
            }
        }
    }

    fn devices(&mut self) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, d) in self.s.devices.iter().enumerate() {
            let path = vec![Key("devices"), Index(i), Key("name")];
            if d.name.is_empty() {
                self.error(path, "device name must not be empty".into());
            } else if d.name.starts_with("crashrig-") {
                // crashrig-tools is the image's tools disk; crashrig-<name> the dm devices.
                self.error(path, format!("device name `{}` is reserved: names starting with `crashrig-` are crashrig's own", d.name));
            } else if d.name.chars().count() > MAX_DEVICE_NAME {
                self.error(
                    path,
                    format!(
                        "device name `{}` is {} characters long, at most {MAX_DEVICE_NAME} fit in a virtio serial",
                        d.name,
                        d.name.chars().count()
                    ),
                );
            } else if let Some(c) = d
                .name
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
            {
                self.error(
                    path,
                    format!(
                        "device name `{}` contains {c:?}; use only letters, digits, `_` and `-`",
                        d.name
                    ),
                );
            } else if let Some(first) = seen.insert(&d.name, i) {
                self.error(
                    path,
                    format!(
                        "duplicate device name `{}` (already `devices[{first}]`)",
                        d.name
                    ),
                );
            }
            if d.size < MIN_DEVICE_SIZE {
                self.error(
                    vec![Key("devices"), Index(i), Key("size")],
                    format!(
                        "device size {} is too small, at least {MIN_DEVICE_SIZE}",
                        d.size
                    ),
                );
            } else if d.size > MAX_DEVICE_SIZE {
                self.error(
                    vec![Key("devices"), Index(i), Key("size")],
                    format!(
                        "device size {} is too large, at most {MAX_DEVICE_SIZE}",
                        d.size
                    ),
                );
            }
        }
    }

    fn declared(&self, name: &str) -> bool {
        self.s.devices.iter().any(|d| d.name == name)
    }

    fn unknown_device(&mut self, path: Vec<PathSeg>, name: &str) {
        if self.partial.devices {
            return;
        }
        let mut names: Vec<String> = Vec::new();
        for d in &self.s.devices {
            let quoted = format!("`{}`", d.name);
            if !names.contains(&quoted) {
                names.push(quoted);
            }
        }
        let declared = if names.is_empty() {
            "no devices are declared".to_string()
        } else {
            format!("declared: {}", names.join(", "))
        };
        self.error(path, format!("unknown device `{name}` ({declared})"));
    }

    fn fstype(&mut self, path: Vec<PathSeg>, t: &str) {
        if KNOWN_FSTYPES.contains(&t) {
            return;
        }
        if t.is_empty()
            || !t
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
        {
            self.error(
                path,
                format!("invalid filesystem type `{t}`, expected xfs, ext4, btrfs or another mkfs.<type> name"),
            );
        } else {
            self.warning(
                path,
                format!(
                    "filesystem type `{t}` is not in the default guest image (it has xfs, ext4 and btrfs); add mkfs.{t} through the image recipe"
                ),
            );
        }
    }

    /// A mountpoint: absolute, and normal (no `.` or `..` component: `/mnt/../..` mounted
    /// the scratch filesystem over the guest's `/`); `/` itself only where `may_be_root` (a
    /// `sync` may syncfs(2) the root, nothing may mount over it).
    fn mountpoint(&mut self, path: Vec<PathSeg>, p: &str, may_be_root: bool) {
        if !p.starts_with('/') {
            self.error(
                path,
                format!("`mountpoint` must be an absolute path, got `{p}`"),
            );
        } else if p.split('/').any(|c| c == "." || c == "..") {
            self.error(
                path,
                format!("`mountpoint` must not have `.` or `..` components, got `{p}`"),
            );
        } else if !may_be_root && p.split('/').all(str::is_empty) {
            self.error(
                path,
                format!("`mountpoint` must not be the guest's root, got `{p}`"),
            );
        }
    }

    fn filesystem(&mut self) {
        let Some(fs) = &self.s.filesystem else {
            return;
        };
        self.fstype(vec![Key("filesystem"), Key("type")], &fs.fstype);
        self.mountpoint(
            vec![Key("filesystem"), Key("mountpoint")],
            &fs.mountpoint,
            false,
        );
        if self.partial.devices {
            return;
        }
        match &fs.device {
            Some(d) if !self.declared(d) => {
                let d = d.clone();
                self.unknown_device(vec![Key("filesystem"), Key("device")], &d);
            }
            None if self.s.devices.is_empty() => self.error(
                vec![Key("filesystem")],
                "`filesystem` needs a device, but no `devices` are declared".into(),
            ),
            _ => {}
        }
    }

    fn steps(&mut self) {
        let s = self.s;
        if s.steps.is_empty() && !self.partial.steps {
            self.error(
                vec![Key("steps")],
                "`steps` is empty; a scenario needs at least one step".into(),
            );
        }
        let mut ids: HashMap<&str, (&'static str, &'static str)> = HashMap::new();
        let mut spawned: HashSet<&str> = HashSet::new();
        let mut running: HashMap<&str, &'static str> = HashMap::new();
        // Per directory: what the last write-data step before this one wrote there.
        let mut written: HashMap<&str, (u32, crate::scenario::model::Size)> = HashMap::new();
        // Directories whose last write-data had `fsync: false`, with the crash step (power
        // cut, panic) since then, if any: nothing promised that data would survive it.
        let mut unsynced: HashMap<&str, Option<&'static str>> = HashMap::new();
        // Devices unplugged and not replugged yet (a step without `device` acts on the
        // filesystem's).
        let mut unplugged: HashSet<String> = HashSet::new();
        // Whether dm-flakey drops the filesystem device's writes here, and the directories
        // whose last write-data came while it did: acknowledged, then thrown away by the
        // scenario's own fault.
        let mut dropping = false;
        let mut dropped_data: HashSet<&str> = HashSet::new();
        let fs_device = s
            .filesystem_device()
            .map(|d| d.name.clone())
            .unwrap_or_default();
        let fs_mountpoint = s.filesystem.as_ref().map(|f| f.mountpoint.clone());
        for (section, steps) in SECTIONS.into_iter().zip([&s.setup, &s.steps, &s.cleanup]) {
            // Whether the filesystem is mounted at its mountpoint here, where the steps of
            // this section alone make that certain (each section starts unknown).
            let mut mounted = MountState::Unknown;
            self.mount_guessed = false;
            for (i, step) in steps.iter().enumerate() {
                let kind = step.kind();
                let at = |field: Option<&'static str>| {
                    let mut p = vec![Key(section), Index(i), Key(kind)];
                    p.extend(field.map(Key));
                    p
                };
                if let Some(id) = step.id() {
                    if id.is_empty() {
                        self.error(at(Some("id")), "step `id` must not be empty".into());
                    } else if id.contains('#') {
                        self.error(
                            at(Some("id")),
                            format!("step id `{id}` must not contain `#` (default ids use it)"),
                        );
                    } else if let Some((k, sec)) = ids.insert(id, (kind, section)) {
                        self.error(
                            at(Some("id")),
                            format!(
                                "duplicate step id `{id}` (already used by a {k} step in `{sec}`)"
                            ),
                        );
                    }
                }
                let before = self.problems.len();
                self.step(step, &at);
                let partial = self.partial;
                if let Some(left_out) = partial.damaged_steps.get(&(section.to_string(), i)) {
                    let whole = at(None);
                    let mut k = before;
                    while k < self.problems.len() {
                        let path = &self.problems[k].path;
                        let about_left_out = *path == whole
                            || matches!(path.get(whole.len()), Some(Key(f)) if left_out.contains(*f));
                        if about_left_out {
                            self.problems.remove(k);
                        } else {
                            k += 1;
                        }
                    }
                }
                if self.partial.dropped_steps.is_empty() {
                    if let Some(mp) = &fs_mountpoint {
                        self.mount_state(step, mp, &fs_device, &mut mounted, &at);
                    }
                }
                let dropped = |kind: &str| {
                    self.partial.dropped_steps.contains(kind)
                        || self.partial.dropped_steps.contains("?")
                };
                // A crash step ends every workload (the guest starts again): one may be
                // spawned anew after it without a kill.
                if matches!(step, Step::PowerCut(_) | Step::Panic(_)) {
                    for crash in unsynced.values_mut() {
                        crash.get_or_insert(kind);
                    }
                }
                match step {
                    Step::DmFlakey(f) if f.device.as_deref().is_none_or(|d| d == fs_device) => {
                        dropping = f.mode == crate::scenario::model::FlakeyMode::DropWrites;
                    }
                    Step::DmError(d) | Step::DmRestore(d)
                        if d.device.as_deref().is_none_or(|x| x == fs_device) =>
                    {
                        dropping = false;
                    }
                    Step::PowerCut(_) | Step::Panic(_) | Step::Reboot(_) => dropping = false,
                    Step::WriteData(d) if dropping => {
                        dropped_data.insert(&d.dir);
                    }
                    Step::WriteData(d) => {
                        dropped_data.remove(d.dir.as_str());
                    }
                    Step::VerifyData(d) if dropped_data.contains(d.dir.as_str()) => {
                        self.warning(
                            at(None),
                            format!(
                                "verify-data checks `{}`, which a write-data wrote while \
                                 dm-flakey dropped the device's writes: the scenario's own fault \
                                 acknowledged and threw them away, yet every lost file fails \
                                 this step as the kernel's data loss; verify data written before \
                                 the dm-flakey step, unless this is a control that expects the \
                                 loss",
                                d.dir
                            ),
                        );
                    }
                    _ => {}
                }
                if matches!(step, Step::PowerCut(_) | Step::Panic(_) | Step::Reboot(_)) {
                    running.clear();
                    // A new boot starts with every disk in place.
                    unplugged.clear();
                }
                match step {
                    Step::PowerCut(_)
                    | Step::Panic(_)
                    | Step::Reboot(_)
                    | Step::Unplug(_)
                    | Step::Replug(_)
                        if section == "setup" =>
                    {
                        self.error(
                            at(None),
                            format!(
                                "{kind} steps cannot be in `setup`: setup runs in one guest \
                                 session (its end is what iterations start from); put the \
                                 {kind} in `steps`"
                            ),
                        );
                    }
                    Step::Spawn(sp) => {
                        if let Some(first) = running.insert(&sp.name, section) {
                            self.error(
                                at(Some("name")),
                                format!(
                                    "spawn `{}` is already running (started in `{first}`); kill it before starting it again",
                                    sp.name
                                ),
                            );
                        }
                        spawned.insert(&sp.name);
                    }
                    Step::Kill(k) => {
                        running.remove(k.name.as_str());
                        if !spawned.contains(k.name.as_str()) && !dropped("spawn") {
                            self.error(
                                at(Some("name")),
                                format!(
                                    "kill step names `{}`, but no spawn step before it starts `{}`",
                                    k.name, k.name
                                ),
                            );
                        }
                    }
                    Step::WriteData(d) => {
                        written.insert(&d.dir, (d.files, d.size));
                        if d.fsync {
                            unsynced.remove(d.dir.as_str());
                        } else {
                            unsynced.insert(&d.dir, None);
                        }
                    }
                    // Without a device of its own and with no filesystem device known (none
                    // declared, or the `filesystem` map left out: said elsewhere), there is
                    // no device to follow.
                    Step::Unplug(p) if p.device.is_none() && fs_device.is_empty() => {}
                    Step::Replug(p) if p.device.is_none() && fs_device.is_empty() => {}
                    Step::Unplug(p) => {
                        let name = p.device.clone().unwrap_or_else(|| fs_device.clone());
                        if !unplugged.insert(name.clone()) {
                            self.error(
                                at(Some("device")),
                                format!("unplug of `{name}`, which an earlier unplug step already took out; replug it first"),
                            );
                        }
                    }
                    Step::Replug(p) => {
                        let name = p.device.clone().unwrap_or_else(|| fs_device.clone());
                        if !unplugged.remove(&name) && !dropped("unplug") {
                            self.error(
                                at(Some("device")),
                                format!("replug of `{name}`, but no unplug step before it takes `{name}` out"),
                            );
                        }
                    }
                    Step::VerifyData(d) => {
                        if let Some(Some(crash)) = unsynced.get(d.dir.as_str()) {
                            // A loss of data nobody promised to keep would be judged the
                            // kernel's: right for a control that expects it, wrong otherwise.
                            self.warning(
                                at(None),
                                format!(
                                    "verify-data checks `{}`, which a write-data wrote with \
                                     `fsync: false` before the {crash} step: nothing promised \
                                     that data would survive it, yet every lost file fails this \
                                     step as the kernel's data loss; use `fsync: true`, unless \
                                     this is a control that expects the loss",
                                    d.dir
                                ),
                            );
                        }
                        match written.get(d.dir.as_str()) {
                        None if !dropped("write-data") => self.error(
                            at(Some("dir")),
                            format!(
                                "verify-data step checks `{}`, but no write-data step before it writes there",
                                d.dir
                            ),
                        ),
                        // A verification of other files or sizes than were written would
                        // report every file as lost: a kernel verdict for a scenario typo.
                        Some(&(files, size)) if (files, size) != (d.files, d.size) => self.error(
                            at(Some(if files != d.files { "files" } else { "size" })),
                            format!(
                                "verify-data step checks {} files of {} in `{}`, but the write-data \
                                 step before it writes {files} files of {size} there; give both \
                                 steps the same `files` and `size`",
                                d.files, d.size, d.dir
                            ),
                        ),
                        _ => {}
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// A `write-data` or `verify-data` where nothing can be mounted at the filesystem's
    /// mountpoint, or an `fsck` of its device while it is certainly mounted: the step would
    /// test nothing (files written to the guest's root in RAM), or judge the kernel for a
    /// missing step (every file "lost", a checker refusing or misreading a mounted device).
    /// Only what the section's own steps make certain counts: a `run` or `spawn` whose
    /// command says `mount` (it may mount or unmount by hand), an unplug or a replug, or a mount or umount whose outcome may vary
    /// makes the state unknown again.
    fn mount_state(
        &mut self,
        step: &Step,
        fs_mountpoint: &str,
        fs_device: &str,
        state: &mut MountState,
        at: &dyn Fn(Option<&'static str>) -> Vec<PathSeg>,
    ) {
        let ours = |mp: &Option<String>| mp.as_deref().is_none_or(|m| m == fs_mountpoint);
        let only_ok = |e: &crate::scenario::model::Expect| {
            e.allows(None) && !e.takes_any() && !e.allows(Some("EBUSY"))
        };
        match step {
            Step::Mount(m) if ours(&m.mountpoint) => {
                *state = if only_ok(&m.expect) && m.device.as_deref().is_none_or(|d| d == fs_device)
                {
                    MountState::Mounted
                } else {
                    MountState::Unknown
                };
                self.mount_guessed = false;
            }
            Step::Umount(u) if ours(&u.mountpoint) => {
                *state = if only_ok(&u.expect) && *state == MountState::ShutDown {
                    MountState::Crashed("shutdown")
                } else if only_ok(&u.expect) {
                    MountState::Unmounted("umount")
                } else {
                    MountState::Unknown
                };
                self.mount_guessed = self.mount_guessed && matches!(*state, MountState::Crashed(_));
            }
            Step::PowerCut(_) | Step::Panic(_) | Step::Reboot(_) => {
                *state = match *state {
                    MountState::Mounted | MountState::ShutDown => MountState::Crashed(step.kind()),
                    MountState::Unmounted(by) => MountState::Unmounted(by),
                    MountState::Crashed(by) => MountState::Crashed(by),
                    MountState::Unknown => MountState::Unmounted(step.kind()),
                };
                // The guest starts again with nothing mounted, whatever ran before.
                if matches!(*state, MountState::Unmounted(_)) {
                    self.mount_guessed = false;
                }
            }
            // A command that may mount or unmount by hand (`mount`, `umount`, `/bin/mount`);
            // a workload that does not leaves the state as it was.
            Step::Run(crate::scenario::model::RunStep { command, .. })
            | Step::Spawn(crate::scenario::model::SpawnStep { command, .. })
                if command.contains("mount") =>
            {
                *state = MountState::Unknown;
            }
            // A foreground command may be a script that mounts by hand without saying so; a
            // spawned workload (fio, stress-ng) runs beside the steps and is taken not to.
            Step::Run(_) => self.mount_guessed = true,
            Step::Unplug(_) | Step::Replug(_) => *state = MountState::Unknown,
            Step::WriteData(_) | Step::VerifyData(_) => {
                if let MountState::Unmounted(why) | MountState::Crashed(why) = *state {
                    let dir = match step {
                        Step::WriteData(d) => &d.dir,
                        Step::VerifyData(d) => &d.dir,
                        _ => unreachable!(),
                    };
                    let cause = if why == "umount" {
                        "the umount step before it unmounted it".to_string()
                    } else {
                        format!(
                            "the {why} step before it started the guest again, with nothing mounted"
                        )
                    };
                    let effect = if matches!(step, Step::WriteData(_)) {
                        "its files would go to the guest's root filesystem in RAM and test nothing"
                    } else {
                        "every file would be reported lost, the kernel's data loss for a missing step"
                    };
                    self.mount_problem(
                        at(None),
                        format!(
                            "{} uses `{fs_mountpoint}/{dir}`, but nothing is mounted at \
                             `{fs_mountpoint}` here: {cause}; {effect}; add a `mount` step \
                             before this one",
                            step.kind()
                        ),
                    );
                }
            }
            // An xfs shut down keeps a dirty log through its umount (`xfs_repair -n` then
            // reports it as problems, whatever the flags).
            Step::Shutdown(sh) if ours(&sh.mountpoint) => {
                let xfs = self
                    .s
                    .filesystem
                    .as_ref()
                    .is_some_and(|fs| fs.fstype == "xfs");
                if xfs && *state == MountState::Mounted {
                    *state = MountState::ShutDown;
                }
            }
            Step::Fsck(f)
                if f.device.as_deref().is_none_or(|d| d == fs_device)
                    && matches!(*state, MountState::Mounted | MountState::ShutDown) =>
            {
                self.mount_problem(
                    at(None),
                    format!(
                        "fsck checks `{fs_device}` while it is mounted at \
                             `{fs_mountpoint}` (by the mount step before it): a checker's \
                             verdict on a mounted filesystem means nothing (xfs_repair refuses \
                             one, which would fail the step as the kernel's problem); add an \
                             `umount` step before this one"
                    ),
                );
            }
            // A journaling filesystem the crash left with its log unreplayed: `xfs_repair
            // -n` reports the log as problems (a failure blamed on the kernel), `e2fsck -fn`
            // skips the journal and checks the state before it (a pass that tests nothing).
            Step::Fsck(f) if f.device.as_deref().is_none_or(|d| d == fs_device) => {
                let journaled = self
                    .s
                    .filesystem
                    .as_ref()
                    .is_some_and(|fs| matches!(fs.fstype.as_str(), "xfs" | "ext3" | "ext4"));
                if let MountState::Crashed(crash) = *state {
                    if journaled {
                        self.mount_problem(
                            at(None),
                            format!(
                                "fsck checks `{fs_device}` after the {crash} step with no \
                                 mount since, so its log is not replayed: `xfs_repair -n` \
                                 reports an unreplayed log as problems (a failure blamed on \
                                 the kernel) and `e2fsck -fn` skips the journal and checks the \
                                 state before it; add a `mount` (which replays the log) and an \
                                 `umount` step before this one"
                            ),
                        );
                    }
                }
            }
            _ => {}
        }
    }

    /// Checks of one step on its own.
    fn step(&mut self, step: &Step, at: &dyn Fn(Option<&'static str>) -> Vec<PathSeg>) {
        let kind = step.kind();
        let has_fs = self.s.filesystem.is_some() || self.partial.filesystem;
        let need_fs = |this: &mut Self, missing: bool, hint: &str| {
            if missing && !has_fs {
                this.error(
                    at(None),
                    format!("{kind} step needs a `filesystem`, and none is declared{hint}"),
                );
            }
        };
        let device = |this: &mut Self, d: &Option<String>| {
            if let Some(d) = d {
                if !this.declared(d) {
                    this.unknown_device(at(Some("device")), d);
                }
            }
        };
        match step {
            Step::Mkfs(m) => {
                need_fs(
                    self,
                    m.device.is_none() || m.fstype.is_none(),
                    " (or give the step its own `device` and `type`)",
                );
                device(self, &m.device);
                if let Some(t) = &m.fstype {
                    self.fstype(at(Some("type")), t);
                }
            }
            Step::Mount(m) => {
                need_fs(self, true, "");
                self.duration(at(Some("retry")), "retry", m.retry);
                device(self, &m.device);
                if let Some(p) = &m.mountpoint {
                    self.mountpoint(at(Some("mountpoint")), p, false);
                }
            }
            Step::Umount(u) => {
                self.duration(at(Some("retry")), "retry", u.retry);
                need_fs(
                    self,
                    u.mountpoint.is_none(),
                    " (or give the step its own `mountpoint`)",
                );
                if let Some(p) = &u.mountpoint {
                    self.mountpoint(at(Some("mountpoint")), p, false);
                }
            }
            Step::Shutdown(sh) => {
                need_fs(
                    self,
                    sh.mountpoint.is_none(),
                    " (or give the step its own `mountpoint`)",
                );
                if let Some(p) = &sh.mountpoint {
                    self.mountpoint(at(Some("mountpoint")), p, false);
                }
            }
            Step::Sync(sy) => {
                if let Some(p) = &sy.mountpoint {
                    self.mountpoint(at(Some("mountpoint")), p, true);
                }
            }
            Step::Fsck(f) => {
                need_fs(self, true, "");
                device(self, &f.device);
            }
            Step::WriteData(d) | Step::VerifyData(d) => {
                need_fs(self, true, "");
                if d.files == 0 {
                    self.error(at(Some("files")), "`files` must be at least 1".into());
                } else if d.files > MAX_DATA_FILES {
                    self.error(
                        at(Some("files")),
                        format!("`files` is {}, at most {MAX_DATA_FILES}", d.files),
                    );
                }
                if d.size > MAX_DATA_FILE_SIZE {
                    self.error(
                        at(Some("size")),
                        format!(
                            "`size` is {}, at most {MAX_DATA_FILE_SIZE} per file",
                            d.size
                        ),
                    );
                }
                if d.dir.is_empty() || d.dir.starts_with('/') || d.dir.split('/').any(|c| c == "..")
                {
                    self.error(
                        at(Some("dir")),
                        format!(
                            "`dir` must be a relative path below the mountpoint, got `{}`",
                            d.dir
                        ),
                    );
                }
            }
            Step::DmError(dm) | Step::DmRestore(dm) => {
                need_fs(
                    self,
                    dm.device.is_none(),
                    " (or give the step its own `device`)",
                );
                device(self, &dm.device);
                self.dm_capable(dm.device.as_deref(), at);
            }
            Step::DmFlakey(dm) => {
                need_fs(
                    self,
                    dm.device.is_none(),
                    " (or give the step its own `device`)",
                );
                device(self, &dm.device);
                self.dm_capable(dm.device.as_deref(), at);
            }
            Step::Unplug(p) | Step::Replug(p) => {
                need_fs(
                    self,
                    p.device.is_none(),
                    " (or give the step its own `device`)",
                );
                device(self, &p.device);
            }
            Step::Spawn(sp) => {
                if sp.name.is_empty() {
                    self.error(at(Some("name")), "spawn `name` must not be empty".into());
                }
                if sp.command.trim().is_empty() {
                    self.error(
                        at(Some("command")),
                        "spawn `command` must not be empty".into(),
                    );
                }
                self.command_length(at(Some("command")), "spawn", &sp.command);
            }
            Step::Kill(k) => {
                self.duration(at(Some("wait")), "wait", Some(k.wait));
                if let Some(bare) = k.signal.strip_prefix("SIG") {
                    self.error(
                        at(Some("signal")),
                        format!(
                            "write signal `{}` without the SIG prefix: `{bare}`",
                            k.signal
                        ),
                    );
                } else if !SIGNALS.contains(&k.signal.as_str()) {
                    self.error(
                        at(Some("signal")),
                        format!(
                            "unknown signal `{}`, expected a name such as KILL, TERM, INT, HUP, QUIT, USR1, USR2, STOP or CONT",
                            k.signal
                        ),
                    );
                }
            }
            Step::Run(r) => {
                if r.command.trim().is_empty() {
                    self.error(
                        at(Some("command")),
                        "run `command` must not be empty".into(),
                    );
                }
                self.command_length(at(Some("command")), "run", &r.command);
                if r.timeout.is_zero() {
                    self.error(at(Some("timeout")), "`timeout` must be more than 0s".into());
                }
                self.duration(at(Some("timeout")), "timeout", Some(r.timeout));
                if !(0..=255).contains(&r.exit) {
                    self.error(
                        at(Some("exit")),
                        format!("`exit` is {}, an exit status is 0 to 255", r.exit),
                    );
                }
            }
            Step::Sleep(sl) => self.sleep(sl, at),
            Step::PowerCut(_) | Step::Panic(_) | Step::Reboot(_) => {}
        }
    }

    /// The guest runs a command as one argument of `sh -c`, and the kernel takes at most 128
    /// KiB per argument: a longer one failed with E2BIG in the guest, and was counted as the
    /// kernel's failure.
    fn command_length(&mut self, path: Vec<PathSeg>, kind: &str, command: &str) {
        if command.len() > MAX_COMMAND_BYTES {
            self.error(
                path,
                format!(
                    "{kind} `command` is {} bytes (after its parameters are substituted); at most \
                     {MAX_COMMAND_BYTES} fit in one argument of the guest's shell: put a long \
                     script in the guest image (a recipe's `files:`) and run that",
                    command.len()
                ),
            );
        }
    }

    fn dm_capable(
        &mut self,
        explicit: Option<&str>,
        at: &dyn Fn(Option<&'static str>) -> Vec<PathSeg>,
    ) {
        if self.partial.devices {
            return;
        }
        let dev = match explicit {
            Some(name) => self.s.devices.iter().find(|d| d.name == name),
            None => self.s.filesystem_device(),
        };
        // An undeclared device is reported as such.
        let Some(dev) = dev else {
            return;
        };
        let name = &dev.name;
        if !dev.dm {
            let path = at(explicit.map(|_| "device"));
            let kind = path
                .get(2)
                .and_then(|p| match p {
                    Key(k) => Some(*k),
                    Index(_) => None,
                })
                .unwrap_or("dm");
            self.error(
                path,
                format!("{kind} step needs device `{name}` to be declared with `dm: true`"),
            );
        }
    }

    /// A step's duration: at most [`MAX_STEP_DURATION`], so deadlines cannot overflow.
    fn duration(&mut self, path: Vec<PathSeg>, field: &str, d: Option<Duration>) {
        if let Some(d) = d.filter(|d| *d > MAX_STEP_DURATION) {
            self.error(
                path,
                format!(
                    "`{field}` is {}, at most 24h",
                    humantime::format_duration(d)
                ),
            );
        }
    }

    fn sleep(&mut self, sl: &SleepStep, at: &dyn Fn(Option<&'static str>) -> Vec<PathSeg>) {
        self.duration(at(Some("time")), "time", sl.time);
        self.duration(at(Some("min")), "min", sl.min);
        self.duration(at(Some("max")), "max", sl.max);
        match (sl.time, sl.min, sl.max) {
            (Some(_), None, None) => {}
            (None, Some(min), Some(max)) => {
                if min > max {
                    self.error(
                        at(Some("min")),
                        format!(
                            "`min` ({}) is more than `max` ({})",
                            humantime::format_duration(min),
                            humantime::format_duration(max)
                        ),
                    );
                }
            }
            (Some(_), _, _) => self.error(
                at(None),
                "sleep step has both `time` and `min`/`max`; give one or the other".into(),
            ),
            (None, Some(_), None) => {
                self.error(at(None), "sleep step has `min` but no `max`".into())
            }
            (None, None, Some(_)) => {
                self.error(at(None), "sleep step has `max` but no `min`".into())
            }
            (None, None, None) => self.error(
                at(None),
                "sleep step needs a duration (`sleep: 2s`), `time`, or `min` and `max`".into(),
            ),
        }
    }

    fn dmesg(&mut self) {
        if let FindingSelector::Kinds(kinds) = &self.s.dmesg.fail_on {
            for (i, k) in kinds.iter().enumerate() {
                if !FINDING_KINDS.contains(&k.as_str()) {
                    let list: Vec<String> =
                        FINDING_KINDS.iter().map(|k| format!("`{k}`")).collect();
                    self.error(
                        vec![Key("dmesg"), Key("fail-on"), Index(i)],
                        format!(
                            "unknown finding kind `{k}`, expected `all`, `none` or one of {}",
                            list.join(", ")
                        ),
                    );
                }
            }
        }
        for (i, re) in self.s.dmesg.ignore.iter().enumerate() {
            if let Err(e) = regex::Regex::new(re) {
                self.error(
                    vec![Key("dmesg"), Key("ignore"), Index(i)],
                    format!("invalid regular expression `{re}`: {}", regex_reason(&e)),
                );
            }
        }
    }
}

/// The one-line reason from a regex error (its Display spans several lines).
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or(text.lines().last().unwrap_or("invalid"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The problems `validate` finds in `yaml`, deserialized without the loader's checks.
    fn problems(yaml: &str) -> Vec<String> {
        use serde::Deserialize;
        let tree = crate::yaml::parse(yaml).unwrap();
        let none = HashSet::new();
        let de = crate::yaml::De::new(&tree, &none, tree.root.unwrap());
        let s =
            Scenario::deserialize(de).unwrap_or_else(|e| panic!("{}\n{yaml}", e.message(&tree)));
        validate(&s).iter().map(ToString::to_string).collect()
    }

    /// Probe 12: a replug with no unplug before it passed, then failed in the guest as QEMU's
    /// "Duplicate device ID" (an infrastructure error); a command over 128 KiB failed with
    /// E2BIG and counted as the kernel's failure.
    #[test]
    fn replugs_need_an_unplug_and_commands_fit_one_argument() {
        let head = "name: t\ndevices: [{name: a, size: 1G}, {name: b, size: 1G}]\n\
                    filesystem: {type: xfs, device: b}\nsteps:\n";
        assert_eq!(
            problems(&format!(
                "{head}- {{replug: {{}}}}\n- {{unplug: {{}}}}\n- {{unplug: {{device: b}}}}\n\
                 - {{replug: {{device: a}}}}\n- {{replug: {{device: b}}}}\n"
            )),
            [
                "steps[0].replug.device: replug of `b`, but no unplug step before it takes `b` out",
                "steps[2].unplug.device: unplug of `b`, which an earlier unplug step already took out; replug it first",
                "steps[3].replug.device: replug of `a`, but no unplug step before it takes `a` out",
            ]
        );
        // Across sections, and a reboot brings every disk back.
        assert_eq!(
            problems(&format!(
                "{head}- {{unplug: {{}}}}\n- {{reboot: {{}}}}\n- {{unplug: {{}}}}\n\
                 cleanup:\n- {{replug: {{device: b}}}}\n"
            )),
            Vec::<String>::new()
        );
        let long = "x".repeat(MAX_COMMAND_BYTES + 1);
        assert_eq!(
            problems(&format!(
                "name: t\nsteps:\n- {{run: {{command: {long}}}}}\n- {{spawn: {{name: s, command: {}}}}}\n",
                &long[1..]
            )),
            [format!(
                "steps[0].run.command: run `command` is {} bytes (after its parameters are \
                 substituted); at most {MAX_COMMAND_BYTES} fit in one argument of the guest's \
                 shell: put a long script in the guest image (a recipe's `files:`) and run that",
                MAX_COMMAND_BYTES + 1
            )]
        );
    }

    const DEVICES: &str =
        "devices: [{name: scratch, size: 2G, dm: true}, {name: plain, size: 1G}]\n";

    #[test]
    fn each_rule_reports_its_problem() {
        let table: &[(&str, &[&str])] = &[
            // Top level.
            (
                "name: t\nversion: 2\niterations: 0\niteration-timeout: 0s\nsteps: [{sync: {}}]\n",
                &[
                    "version: unsupported version 2, only version 1 exists",
                    "iterations: `iterations` must be at least 1",
                    "iteration-timeout: `iteration-timeout` must be at least 1s",
                ],
            ),
            ("name: ''\nsteps: []\n", &[
                "name: `name` must not be empty",
                "steps: `steps` is empty; a scenario needs at least one step",
            ]),
            ("name: a/b\nsteps: [{sync: {}}]\n", &[
                "name: `name` `a/b` must not contain `/` (it names result files)",
            ]),
            ("name: t\nvm: {cmdline: [loglevel=7, \"a b\", \"\", \"x\\ny\"]}\nsteps: [{sync: {}}]\n", &[
                "vm.cmdline[1]: kernel command-line word \"a b\" must be one non-empty word, \
                 without spaces or control characters (write each word as its own entry)",
                "vm.cmdline[2]: kernel command-line word \"\" must be one non-empty word, \
                 without spaces or control characters (write each word as its own entry)",
                "vm.cmdline[3]: kernel command-line word \"x\\ny\" must be one non-empty word, \
                 without spaces or control characters (write each word as its own entry)",
            ]),
            ("name: \"a\\nb\\e[31m\"\nsteps: [{sync: {}}]\n", &[
                "name: `name` \"a\\nb\\u{1b}[31m\" must not contain control characters (a line \
                 break, NUL, escape): it is printed in summaries and reports",
            ]),
            ("name: t\nvm: {memory: 255M, cpus: 65}\nkconfig: ['', a/b, fs-xfs]\nsteps: [{sync: {}}]\n", &[
                "vm.memory: `vm.memory` is 255M, at least 256M is needed",
                "vm.cpus: `vm.cpus` is 65, expected 1 to 64",
                "kconfig[0]: kconfig fragment `` must be a file name in kconfigs/",
                "kconfig[1]: kconfig fragment `a/b` must be a file name in kconfigs/",
            ]),
            ("name: t\nvm: {memory: 256M, cpus: 64}\nsteps: [{sync: {}}]\n", &[]),
            ("name: t\ndevices: [{name: crashrig-tools, size: 1G}]\nsteps: [{sync: {}}]\n", &[
                "devices[0].name: device name `crashrig-tools` is reserved: names starting with `crashrig-` are crashrig's own",
            ]),
            // Devices and the filesystem.
            (
                "name: t\ndevices: [{name: a, size: 1G}, {name: a, size: 1G}, {name: 'b c', size: 1G}, \
                 {name: abcdefghijklmnopqrstu, size: 1G}, {name: '', size: 512K}, {name: abcdefghijklmnopqrst, size: 1M}]\n\
                 steps: [{sync: {}}]\n",
                &[
                    "devices[1].name: duplicate device name `a` (already `devices[0]`)",
                    "devices[2].name: device name `b c` contains ' '; use only letters, digits, `_` and `-`",
                    "devices[3].name: device name `abcdefghijklmnopqrstu` is 21 characters long, at most 20 fit in a virtio serial",
                    "devices[4].name: device name must not be empty",
                    "devices[4].size: device size 512K is too small, at least 1M",
                ],
            ),
            ("name: t\nfilesystem: {type: xfs}\nsteps: [{sync: {}}]\n", &[
                "filesystem: `filesystem` needs a device, but no `devices` are declared",
            ]),
            (
                "name: t\ndevices: [{name: d, size: 1G}]\nfilesystem: {type: 'XFS!', device: e, mountpoint: mnt}\nsteps: [{sync: {}}]\n",
                &[
                    "filesystem.type: invalid filesystem type `XFS!`, expected xfs, ext4, btrfs or another mkfs.<type> name",
                    "filesystem.mountpoint: `mountpoint` must be an absolute path, got `mnt`",
                    "filesystem.device: unknown device `e` (declared: `d`)",
                ],
            ),
            (
                "name: t\ndevices: [{name: d, size: 1G}]\nfilesystem: {type: f2fs}\nsteps: [{sync: {}}]\n",
                &["filesystem.type: warning: filesystem type `f2fs` is not in the default guest image (it has xfs, ext4 and btrfs); add mkfs.f2fs through the image recipe"],
            ),
            // Steps that need a filesystem, and the ones that can do without.
            (
                "name: t\nsteps:\n- {mkfs: {}}\n- {mount: {}}\n- {umount: {}}\n- {shutdown: {}}\n- {fsck: {}}\n\
                 - {write-data: {}}\n- {verify-data: {}}\n- {dm-error: {}}\n- {dm-flakey: {}}\n- {dm-restore: {}}\n\
                 - {unplug: {}}\n- {replug: {}}\n",
                &[
                    "steps[0].mkfs: mkfs step needs a `filesystem`, and none is declared (or give the step its own `device` and `type`)",
                    "steps[1].mount: mount step needs a `filesystem`, and none is declared",
                    "steps[2].umount: umount step needs a `filesystem`, and none is declared (or give the step its own `mountpoint`)",
                    "steps[3].shutdown: shutdown step needs a `filesystem`, and none is declared (or give the step its own `mountpoint`)",
                    "steps[4].fsck: fsck step needs a `filesystem`, and none is declared",
                    "steps[5].write-data: write-data step needs a `filesystem`, and none is declared",
                    "steps[6].verify-data: verify-data step needs a `filesystem`, and none is declared",
                    "steps[7].dm-error: dm-error step needs a `filesystem`, and none is declared (or give the step its own `device`)",
                    "steps[8].dm-flakey: dm-flakey step needs a `filesystem`, and none is declared (or give the step its own `device`)",
                    "steps[9].dm-restore: dm-restore step needs a `filesystem`, and none is declared (or give the step its own `device`)",
                    "steps[10].unplug: unplug step needs a `filesystem`, and none is declared (or give the step its own `device`)",
                    "steps[11].replug: replug step needs a `filesystem`, and none is declared (or give the step its own `device`)",
                ],
            ),
            (
                &format!("name: t\n{DEVICES}steps:\n- {{mkfs: {{device: plain, type: ext4}}}}\n- {{umount: {{mountpoint: /mnt}}}}\n\
                 - {{shutdown: {{mountpoint: /mnt}}}}\n- {{dm-error: {{device: scratch}}}}\n- {{unplug: {{device: plain}}}}\n\
                 - {{replug: {{device: plain}}}}\n- {{sync: {{}}}}\n- {{power-cut: {{}}}}\n- {{panic: {{}}}}\n- {{reboot: {{}}}}\n"),
                &[],
            ),
            // Device-mapper steps need a dm device.
            (
                &format!("name: t\n{DEVICES}filesystem: {{type: xfs, device: plain}}\nsteps:\n- {{dm-error: {{}}}}\n\
                 - {{dm-flakey: {{device: plain}}}}\n- {{dm-restore: {{device: scratch}}}}\n- {{dm-error: {{device: nope}}}}\n"),
                &[
                    "steps[0].dm-error: dm-error step needs device `plain` to be declared with `dm: true`",
                    "steps[1].dm-flakey.device: dm-flakey step needs device `plain` to be declared with `dm: true`",
                    "steps[3].dm-error.device: unknown device `nope` (declared: `scratch`, `plain`)",
                ],
            ),
            // Crash steps end the guest: not in setup, whose end iterations start from.
            (
                &format!("name: t\n{DEVICES}filesystem: {{type: xfs, device: plain}}\nsetup:\n- {{mkfs: {{}}}}\n\
                 - {{power-cut: {{}}}}\n- {{reboot: {{}}}}\n- {{unplug: {{}}}}\nsteps:\n- {{power-cut: {{}}}}\n\
                 cleanup:\n- {{panic: {{}}}}\n"),
                &[
                    "setup[1].power-cut: power-cut steps cannot be in `setup`: setup runs in one guest session (its end is what iterations start from); put the power-cut in `steps`",
                    "setup[2].reboot: reboot steps cannot be in `setup`: setup runs in one guest session (its end is what iterations start from); put the reboot in `steps`",
                    "setup[3].unplug: unplug steps cannot be in `setup`: setup runs in one guest session (its end is what iterations start from); put the unplug in `steps`",
                ],
            ),
            // A crash step ends every workload: spawning one again after it needs no kill.
            (
                "name: t\nsteps:\n- {spawn: {name: bg, command: x}}\n- {power-cut: {}}\n\
                 - {spawn: {name: bg, command: x}}\n- {spawn: {name: bg, command: y}}\n\
                 cleanup: [{kill: {name: bg}}]\n",
                &["steps[3].spawn.name: spawn `bg` is already running (started in `steps`); kill it before starting it again"],
            ),
            // spawn / kill across sections.
            (
                "name: t\nsetup: [{spawn: {name: bg, command: x}}]\n\
                 steps:\n- {kill: {name: bg}}\n- {spawn: {name: bg, command: x}}\n- {spawn: {name: bg, command: y}}\n\
                 - {kill: {name: fg, signal: SIGTERM}}\n- {spawn: {name: '', command: ' '}}\n\
                 cleanup: [{kill: {name: bg, signal: USR3}}]\n",
                &[
                    "steps[2].spawn.name: spawn `bg` is already running (started in `steps`); kill it before starting it again",
                    "steps[3].kill.signal: write signal `SIGTERM` without the SIG prefix: `TERM`",
                    "steps[3].kill.name: kill step names `fg`, but no spawn step before it starts `fg`",
                    "steps[4].spawn.name: spawn `name` must not be empty",
                    "steps[4].spawn.command: spawn `command` must not be empty",
                    "cleanup[0].kill.signal: unknown signal `USR3`, expected a name such as KILL, TERM, INT, HUP, QUIT, USR1, USR2, STOP or CONT",
                ],
            ),
            // Step ids.
            (
                "name: t\nsetup: [{sync: {id: a}}]\nsteps: [{sync: {id: a}}, {sync: {id: ''}}, {sync: {id: 'x#1'}}, {sync: {id: b}}]\n\
                 cleanup: [{sync: {id: b}}]\n",
                &[
                    "steps[0].sync.id: duplicate step id `a` (already used by a sync step in `setup`)",
                    "steps[1].sync.id: step `id` must not be empty",
                    "steps[2].sync.id: step id `x#1` must not contain `#` (default ids use it)",
                    "cleanup[0].sync.id: duplicate step id `b` (already used by a sync step in `steps`)",
                ],
            ),
            // Sleep.
            (
                "name: t\nsteps:\n- {sleep: {time: 1s}}\n- {sleep: {min: 1s, max: 1s}}\n- {sleep: {min: 2s, max: 1s}}\n\
                 - {sleep: {time: 1s, min: 1s}}\n- {sleep: {min: 1s}}\n- {sleep: {max: 1s}}\n- {sleep: {}}\n",
                &[
                    "steps[2].sleep.min: `min` (2s) is more than `max` (1s)",
                    "steps[3].sleep: sleep step has both `time` and `min`/`max`; give one or the other",
                    "steps[4].sleep: sleep step has `min` but no `max`",
                    "steps[5].sleep: sleep step has `max` but no `min`",
                    "steps[6].sleep: sleep step needs a duration (`sleep: 2s`), `time`, or `min` and `max`",
                ],
            ),
            // run, data and mountpoints.
            (
                "name: t\ndevices: [{name: d, size: 1G}]\nfilesystem: {type: xfs}\nsteps:\n\
                 - {run: {command: '', timeout: 0s}}\n- {write-data: {dir: /abs, files: 0}}\n- {write-data: {dir: a/../b}}\n\
                 - {verify-data: {dir: other}}\n- {mount: {mountpoint: rel}}\n- {sync: {mountpoint: rel}}\n\
                 - {mount: {mountpoint: /mnt/../..}}\n- {umount: {mountpoint: /}}\n- {shutdown: {mountpoint: /a/./b}}\n\
                 - {sync: {mountpoint: /}}\n- {umount: {mountpoint: //}}\n",
                &[
                    "steps[0].run.command: run `command` must not be empty",
                    "steps[0].run.timeout: `timeout` must be more than 0s",
                    "steps[1].write-data.files: `files` must be at least 1",
                    "steps[1].write-data.dir: `dir` must be a relative path below the mountpoint, got `/abs`",
                    "steps[2].write-data.dir: `dir` must be a relative path below the mountpoint, got `a/../b`",
                    "steps[3].verify-data.dir: verify-data step checks `other`, but no write-data step before it writes there",
                    "steps[4].mount.mountpoint: `mountpoint` must be an absolute path, got `rel`",
                    "steps[5].sync.mountpoint: `mountpoint` must be an absolute path, got `rel`",
                    "steps[6].mount.mountpoint: `mountpoint` must not have `.` or `..` components, got `/mnt/../..`",
                    "steps[7].umount.mountpoint: `mountpoint` must not be the guest's root, got `/`",
                    "steps[8].shutdown.mountpoint: `mountpoint` must not have `.` or `..` components, got `/a/./b`",
                    "steps[10].umount.mountpoint: `mountpoint` must not be the guest's root, got `//`",
                ],
            ),
            // verify-data checks what the last write-data to its directory wrote.
            (
                "name: t\ndevices: [{name: d, size: 1G}]\nfilesystem: {type: xfs}\nsteps:\n\
                 - {write-data: {dir: a, files: 4, size: 64K}}\n- {verify-data: {dir: a, files: 4, size: 32K}}\n\
                 - {verify-data: {dir: a, files: 5, size: 64K}}\n- {verify-data: {dir: a, files: 4, size: 64K}}\n\
                 - {write-data: {dir: a, files: 2, size: 4K}}\n- {verify-data: {dir: a, files: 2, size: 4K}}\n\
                 - {verify-data: {dir: a}}\n",
                &[
                    "steps[1].verify-data.size: verify-data step checks 4 files of 32K in `a`, but the write-data step before it writes 4 files of 64K there; give both steps the same `files` and `size`",
                    "steps[2].verify-data.files: verify-data step checks 5 files of 64K in `a`, but the write-data step before it writes 4 files of 64K there; give both steps the same `files` and `size`",
                    "steps[6].verify-data.files: verify-data step checks 16 files of 64K in `a`, but the write-data step before it writes 2 files of 4K there; give both steps the same `files` and `size`",
                ],
            ),
            // verify-data of files written without fsync, after a power cut or panic.
            (
                "name: t\ndevices: [{name: d, size: 1G}]\nfilesystem: {type: xfs}\nsteps:\n\
                 - {write-data: {fsync: false}}\n- {verify-data: {}}\n- power-cut\n- mount\n- {verify-data: {}}\n\
                 - {write-data: {}}\n- panic\n- mount\n- {verify-data: {}}\n\
                 - {write-data: {dir: b, fsync: false}}\n- reboot\n- mount\n- {verify-data: {dir: b}}\n",
                &[
                    "steps[4].verify-data: warning: verify-data checks `crashrig-data`, which a write-data wrote with `fsync: false` before the power-cut step: nothing promised that data would survive it, yet every lost file fails this step as the kernel's data loss; use `fsync: true`, unless this is a control that expects the loss",
                ],
            ),
            // Data steps where nothing is mounted, an fsck of a mounted filesystem: the step
            // would test nothing, or blame the kernel for a missing step.
            (
                "name: t\ndevices: [{name: d, size: 1G}]\nfilesystem: {type: xfs}\nsteps:\n\
                 - mount\n- write-data\n- fsck\n- panic\n- {verify-data: {}}\n- mount\n- {verify-data: {}}\n\
                 - umount\n- write-data\n- {umount: {expect: any}}\n- fsck\n- {mount: {expect: [ok, EBUSY]}}\n\
                 - fsck\n- {run: {command: 'mount /dev/vda /mnt'}}\n- {verify-data: {}}\n- power-cut\n\
                 - {run: {command: 'mount /dev/vda /mnt'}}\n- {verify-data: {}}\n- mount\n\
                 - {mount: {mountpoint: /other}}\n- {umount: {mountpoint: /other}}\n- fsck\n\
                 - umount\n- power-cut\n- fsck\n- mount\n- {spawn: {name: w, command: fio}}\n- power-cut\n- fsck\n- mount\n- umount\n- fsck\n\
                 - mount\n- shutdown\n- umount\n- fsck\n- mount\n- umount\n- fsck\n",
                &[
                    "steps[2].fsck: fsck checks `d` while it is mounted at `/mnt` (by the mount step before it): a checker's verdict on a mounted filesystem means nothing (xfs_repair refuses one, which would fail the step as the kernel's problem); add an `umount` step before this one",
                    "steps[4].verify-data: verify-data uses `/mnt/crashrig-data`, but nothing is mounted at `/mnt` here: the panic step before it started the guest again, with nothing mounted; every file would be reported lost, the kernel's data loss for a missing step; add a `mount` step before this one",
                    "steps[8].write-data: write-data uses `/mnt/crashrig-data`, but nothing is mounted at `/mnt` here: the umount step before it unmounted it; its files would go to the guest's root filesystem in RAM and test nothing; add a `mount` step before this one",
                    "steps[21].fsck: fsck checks `d` while it is mounted at `/mnt` (by the mount step before it): a checker's verdict on a mounted filesystem means nothing (xfs_repair refuses one, which would fail the step as the kernel's problem); add an `umount` step before this one",
                    "steps[28].fsck: fsck checks `d` after the power-cut step with no mount since, so its log is not replayed: `xfs_repair -n` reports an unreplayed log as problems (a failure blamed on the kernel) and `e2fsck -fn` skips the journal and checks the state before it; add a `mount` (which replays the log) and an `umount` step before this one",
                    "steps[35].fsck: fsck checks `d` after the shutdown step with no mount since, so its log is not replayed: `xfs_repair -n` reports an unreplayed log as problems (a failure blamed on the kernel) and `e2fsck -fn` skips the journal and checks the state before it; add a `mount` (which replays the log) and an `umount` step before this one",
                ],
            ),
            // verify-data of what was written while dm-flakey dropped writes.
            (
                "name: t\ndevices: [{name: d, size: 1G, dm: true}]\nfilesystem: {type: xfs}\nsteps:\n\
                 - mount\n- {write-data: {dir: a}}\n- dm-flakey\n- {write-data: {dir: b}}\n\
                 - {umount: {expect: any}}\n- dm-restore\n- mount\n- {verify-data: {dir: a}}\n\
                 - {verify-data: {dir: b}}\n- {dm-flakey: {mode: error-writes}}\n- {write-data: {dir: c}}\n\
                 - dm-restore\n- {verify-data: {dir: c}}\n",
                &[
                    "steps[8].verify-data: warning: verify-data checks `b`, which a write-data wrote while dm-flakey dropped the device's writes: the scenario's own fault acknowledged and threw them away, yet every lost file fails this step as the kernel's data loss; verify data written before the dm-flakey step, unless this is a control that expects the loss",
                ],
            ),
            // btrfs needs no log replay before its checker.
            (
                "name: t\ndevices: [{name: d, size: 1G}]\nfilesystem: {type: btrfs}\nsteps:\n\
                 - mount\n- power-cut\n- fsck\n",
                &[],
            ),
            // Bounds on numbers: a day per step duration, 1T per device, exit statuses.
            (
                "name: t\ndevices: [{name: d, size: 2T}]\nfilesystem: {type: xfs}\nsteps:\n\
                 - {umount: {retry: 25h}}\n- {mount: {retry: 1000years}}\n\
                 - {spawn: {name: l, command: x}}\n- {kill: {name: l, wait: 2d}}\n\
                 - {run: {command: x, timeout: 86401s, exit: 256}}\n- {run: {command: x, exit: -1}}\n\
                 - {sleep: 30h}\n- {sleep: {min: 1s, max: 48h}}\n\
                 - {write-data: {files: 4294967295, size: 2G}}\n\
                 - {umount: {retry: 24h}}\n- {sleep: {min: 1s, max: 24h}}\n",
                &[
                    "devices[0].size: device size 2T is too large, at most 1T",
                    "steps[0].umount.retry: `retry` is 1day 1h, at most 24h",
                    "steps[1].mount.retry: `retry` is 1000years, at most 24h",
                    "steps[3].kill.wait: `wait` is 2days, at most 24h",
                    "steps[4].run.timeout: `timeout` is 1day 1s, at most 24h",
                    "steps[4].run.exit: `exit` is 256, an exit status is 0 to 255",
                    "steps[5].run.exit: `exit` is -1, an exit status is 0 to 255",
                    "steps[6].sleep.time: `time` is 1day 6h, at most 24h",
                    "steps[7].sleep.max: `max` is 2days, at most 24h",
                    "steps[8].write-data.files: `files` is 4294967295, at most 100000",
                    "steps[8].write-data.size: `size` is 2G, at most 1G per file",
                ],
            ),
            // dmesg.
            (
                "name: t\nsteps: [{sync: {}}]\ndmesg: {fail-on: [warning, kasan, nope], ignore: ['a(', 'ok.*']}\n",
                &[
                    "dmesg.fail-on[2]: unknown finding kind `nope`, expected `all`, `none` or one of `warning`, `bug`, `oops`, `panic`, `kasan`, `lockdep`, `hung-task`, `rcu-stall`, `soft-lockup`, `fs-corruption`, `fs-error`",
                    "dmesg.ignore[0]: invalid regular expression `a(`: unclosed group",
                ],
            ),
            ("name: t\nsteps: [{sync: {}}]\ndmesg: {fail-on: none}\n", &[]),
            // A `run` of a script may remount by hand: what the mount state shows after it is
            // only a warning.
            (
                "name: t\ndevices: [{name: d, size: 1G}]\nfilesystem: {type: xfs}\nsteps:\n\
                 - mount\n- {run: {command: ./prepare.sh}}\n- power-cut\n- fsck\n\
                 - mount\n- umount\n- {run: {command: ./prepare.sh}}\n- write-data\n",
                &[
                    "steps[3].fsck: warning: fsck checks `d` after the power-cut step with no mount since, so its log is not replayed: `xfs_repair -n` reports an unreplayed log as problems (a failure blamed on the kernel) and `e2fsck -fn` skips the journal and checks the state before it; add a `mount` (which replays the log) and an `umount` step before this one (unless a `run` step before it mounts or unmounts by other means than a `mount` command)",
                    "steps[7].write-data: warning: write-data uses `/mnt/crashrig-data`, but nothing is mounted at `/mnt` here: the umount step before it unmounted it; its files would go to the guest's root filesystem in RAM and test nothing; add a `mount` step before this one (unless a `run` step before it mounts or unmounts by other means than a `mount` command)",
                ],
            ),
        ];
        for (yaml, want) in table {
            assert_eq!(problems(yaml), *want, "\n{yaml}");
        }
    }

    #[test]
    fn guest_memory_is_checked_against_the_host() {
        use serde::Deserialize;
        let check_with = |yaml: &str, memory: Option<u64>| -> Vec<String> {
            let tree = crate::yaml::parse(yaml).unwrap();
            let none = HashSet::new();
            let de = crate::yaml::De::new(&tree, &none, tree.root.unwrap());
            let s = Scenario::deserialize(de).unwrap();
            check(&s, &Partial::default(), &HostLimits { memory })
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        let yaml = "name: t\nvm: {memory: 8G}\nsteps: [sync]\n";
        assert_eq!(
            check_with(yaml, Some(6 << 30 | 400 << 20)),
            ["vm.memory: `vm.memory` is 8G, but the host has 6.4G of memory in all"]
        );
        assert!(check_with(yaml, Some(8 << 30)).is_empty());
        assert!(check_with(yaml, None).is_empty());
        // Over the absolute bound, that is the one message.
        assert_eq!(
            check_with("name: t\nvm: {memory: 2T}\nsteps: [sync]\n", Some(1 << 30)),
            ["vm.memory: `vm.memory` is 2T, at most 1T"]
        );
    }

    #[test]
    fn finding_kinds_are_the_documented_ones() {
        let doc = include_str!("../../../docs/scenario-format.md");
        for kind in FINDING_KINDS {
            assert!(doc.contains(&format!("`{kind}`")), "{kind} is documented");
        }
        assert_eq!(FINDING_KINDS.len(), 11);
    }
}
