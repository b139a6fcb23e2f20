//! The wire protocol between crashrig on the host and `crashrig-guest` inside the VM.
//!
//! The host sends one [`Plan`] as JSON on the helper's standard input; the helper runs its
//! operations in order, inside the guest, and writes one [`StepReport`] per operation as a JSON
//! line on standard output as soon as that operation finishes, then a final [`PlanEnd`] line.
//! Running a whole segment of an iteration inside the guest keeps host round trips out of the
//! timing that matters (the gap between "workload killed" and "umount called" is what decides
//! whether a delayed fput() is still pending), and a host that loses the guest mid-plan still
//! holds every report written so far.
//!
//! Everything here is plain data so both sides (and the host's tests) share one definition.

use serde::{Deserialize, Serialize};

pub mod channel;

/// Bumped whenever a field changes meaning; the helper refuses a plan of another version (with
/// an [`OutputLine::Fatal`] line), so host and guest image always agree.
/// Version 2: the `reseed` op. Version 3: output lines are tagged
/// (`"line": "step" | "end" | "fatal"`); step indices are positions in the plan. Version 4:
/// the `reseed` op became the plan's [`Plan::refresh`], run before any step. Version 5:
/// `write-data` reports [`Detail::Written`], `kill` [`Detail::Killed::exited_before`]; a
/// `mkfs` exit status and lost `verify-data` files are outcomes the host judges, not
/// helper errors.
pub const PROTOCOL_VERSION: u32 = 5;

/// A sequence of operations to run back to back in the guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub version: u32,
    /// Written to /dev/kmsg before each operation so dmesg lines can be tied to steps.
    #[serde(default)]
    pub label: String,
    /// Done before the first step: a restored guest's first plan carries it, so it costs no
    /// command of its own. When it fails the helper writes an [`OutputLine::Fatal`] line and
    /// runs no step: nothing runs on a guest that may replay another restore's random numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<Refresh>,
    pub steps: Vec<PlanStep>,
}

/// After a snapshot restore: mix `entropy` (fresh from the host) into the kernel RNG and
/// reseed it at once, then set CLOCK_REALTIME to `realtime_ns` (the host's time), so guests
/// restored from one snapshot neither draw the same random numbers nor live at the moment it
/// was saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    pub entropy: Vec<u8>,
    pub realtime_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanStep {
    /// Position of the step in the plan (0-based); echoed back in its report.
    pub index: usize,
    pub op: Op,
}

/// A device is named by the virtio-blk serial the host gave it (the scenario's device name), or
/// by an absolute path (`/dev/mapper/...`).
pub type DeviceRef = String;

/// How long to keep retrying an operation that fails with EBUSY, measuring the busy window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Give up after this long (the bound of the measured busy window).
    pub max_ms: u64,
    /// Pause between attempts.
    pub interval_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShutdownFlag {
    /// `FSSHUTDOWN_FLAGS_DEFAULT` (0): flush the block device and the log.
    Default,
    /// `FSSHUTDOWN_FLAGS_LOGFLUSH` (1): flush the log but not the data.
    LogFlush,
    /// `FSSHUTDOWN_FLAGS_NOLOGFLUSH` (2): flush nothing, as a crash would.
    NoLogFlush,
}

impl ShutdownFlag {
    pub fn as_raw(self) -> u32 {
        match self {
            ShutdownFlag::Default => 0,
            ShutdownFlag::LogFlush => 1,
            ShutdownFlag::NoLogFlush => 2,
        }
    }
}

/// One operation the helper performs. Each reports exactly what the kernel returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Op {
    /// Run `mkfs.<fstype> [options] <device>`.
    Mkfs {
        device: DeviceRef,
        fstype: String,
        options: Vec<String>,
    },
    /// mount(2). `options` are mount(8)-style words: flag words (ro, noatime, ...) become
    /// MS_* flags, the rest is passed as the filesystem's data string.
    Mount {
        device: DeviceRef,
        target: String,
        fstype: String,
        options: Vec<String>,
        retry: Option<Retry>,
    },
    /// umount2(2) with MNT_FORCE / MNT_DETACH as asked.
    Umount {
        target: String,
        force: bool,
        detach: bool,
        retry: Option<Retry>,
    },
    /// ioctl(FS_IOC_SHUTDOWN) on the mounted filesystem.
    Shutdown {
        target: String,
        flag: ShutdownFlag,
    },
    /// Start `sh -c command` in the background in a cgroup of its own named `name`, so that
    /// `Kill` can stop every process and thread it made.
    Spawn {
        name: String,
        command: String,
    },
    /// Send `signal` to every task of the spawned workload, then (if `wait_ms` > 0) wait until
    /// the cgroup is empty: only then has the workload really exited.
    Kill {
        name: String,
        signal: String,
        wait_ms: u64,
        /// A crash step (power cut, panic, reboot) came between the workload's spawn and
        /// this kill: the guest started again since, and a workload it does not know ended
        /// with it (nothing to signal, not an error).
        #[serde(default)]
        may_have_ended: bool,
    },
    /// Run `sh -c command` in the foreground; killed (whole cgroup) after `timeout_ms`.
    Run {
        command: String,
        timeout_ms: u64,
    },
    Sleep {
        ms: u64,
    },
    /// sync(2), or syncfs(2) on `target` when given.
    Sync {
        target: Option<String>,
    },
    /// Create a device-mapper device `name` over `device` with a linear table.
    DmCreate {
        name: String,
        device: DeviceRef,
    },
    /// Replace the table of `name`: `error` fails all I/O, `flakey-drop` drops writes,
    /// `flakey-error` fails writes, `linear` restores the pass-through.
    DmSwap {
        name: String,
        table: DmTable,
    },
    /// Remove the device-mapper device `name`.
    DmRemove {
        name: String,
    },
    /// Run the filesystem's read-only checker on the (unmounted) device.
    Fsck {
        device: DeviceRef,
        fstype: String,
        /// Extra checker arguments, before the device.
        #[serde(default)]
        options: Vec<String>,
    },
    /// Write `files` files of `size` bytes of seeded pseudo-random content below `dir`,
    /// fsync'ing each (and the directory) when `fsync` is set.
    WriteData {
        dir: String,
        files: u32,
        size: u64,
        seed: u64,
        fsync: bool,
    },
    /// Check files written by `WriteData` with the same parameters.
    VerifyData {
        dir: String,
        files: u32,
        size: u64,
        seed: u64,
    },
    /// Kernel log records written since the previous `Dmesg` in this boot.
    Dmesg,
    /// Trigger a kernel panic through sysrq `c`. Never returns when it works.
    Panic,
    /// Wait until a block device named `device` is present (after a hot-plug) or absent.
    WaitDevice {
        device: DeviceRef,
        present: bool,
        timeout_ms: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DmTable {
    Linear,
    Error,
    FlakeyDrop,
    FlakeyError,
}

/// What one operation did.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StepReport {
    pub index: usize,
    /// Errno name of the first attempt (`None`: it succeeded). This is what a test that calls
    /// the operation once would have seen.
    pub errno: Option<String>,
    /// Errno name of the last attempt when the operation was retried.
    pub final_errno: Option<String>,
    /// Attempts made (1 without retry).
    pub attempts: u32,
    /// Milliseconds from the first attempt until one succeeded, when the first failed with
    /// EBUSY; the bound when it never succeeded (`busy_gave_up`).
    pub busy_window_ms: Option<f64>,
    #[serde(default)]
    pub busy_gave_up: bool,
    /// Wall time of the operation in milliseconds (CLOCK_MONOTONIC in the guest).
    pub duration_ms: f64,
    /// Start of the operation, milliseconds since the guest booted (CLOCK_MONOTONIC).
    pub started_ms: f64,
    /// Exit status for operations that run a program (`Mkfs`, `Run`, `Fsck`); signal
    /// deaths are 128 + signal as a shell reports them.
    pub exit_status: Option<i32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stdout: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr: String,
    /// A failure of the helper itself (bad device name, no such workload), not a kernel errno.
    pub error: Option<String>,
    /// Operation-specific data: tasks killed, records read, files lost, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Detail>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Detail {
    Killed {
        /// Tasks (processes) signalled.
        tasks: u32,
        /// Milliseconds from the signal until the workload's cgroup was empty.
        exit_wait_ms: Option<f64>,
        /// The workload's own exit status, when it was already known.
        exit_status: Option<i32>,
        timed_out: bool,
        /// The workload had ended on its own before this kill (no kill since its spawn had
        /// signalled it): the status is its own, and nothing was left to kill.
        #[serde(default)]
        exited_before: bool,
        /// When it had ended on its own: the time of its end, in milliseconds since the
        /// guest booted (CLOCK_MONOTONIC, as [`StepReport::started_ms`]; from its status
        /// file's time, to a few milliseconds). The host tells a workload an I/O fault ended
        /// from one that had already failed before the fault.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exited_ms: Option<f64>,
    },
    /// `write-data`: files written, and the ones the kernel vouched for (see
    /// `acknowledged`), which is what a later `verify-data` checks.
    Written {
        /// Files whose every write returned.
        written: u32,
        /// With fsync: files 0..n whose own fsync and their directory's returned 0. Without:
        /// the files written.
        acknowledged: u32,
    },
    Dmesg {
        records: Vec<KmsgRecord>,
    },
    Data {
        checked: u32,
        missing: Vec<String>,
        corrupted: Vec<String>,
    },
    Fsck {
        clean: bool,
    },
}

/// One /dev/kmsg record, continuation lines joined with '\n'.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmsgRecord {
    pub seq: u64,
    /// Microseconds since boot.
    pub ts_us: u64,
    /// Syslog level 0 (emerg) to 7 (debug).
    pub level: u8,
    pub text: String,
}

/// Last line of the helper's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanEnd {
    pub done: bool,
    pub steps_run: usize,
}

/// One line of helper output, tagged by `"line"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "line", rename_all = "kebab-case")]
pub enum OutputLine {
    /// One operation finished.
    Step(Box<StepReport>),
    /// Every operation ran; the last line of a plan.
    End(PlanEnd),
    /// The helper could not run the plan at all (malformed, another protocol version).
    Fatal { message: String },
}

/// The errno name for a raw value, as the kernel headers spell it.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::ENOTBLK => "ENOTBLK",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::EPIPE => "EPIPE",
        libc::ERANGE => "ERANGE",
        libc::EDEADLK => "EDEADLK",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ESTALE => "ESTALE",
        libc::EUCLEAN => "EUCLEAN",
        libc::EDQUOT => "EDQUOT",
        libc::ECANCELED => "ECANCELED",
        libc::ENOMEDIUM => "ENOMEDIUM",
        libc::EBADMSG => "EBADMSG",
        _ => return format!("E{errno}"),
    };
    name.to_string()
}

/// Inverse of [`errno_name`] for the names it knows; scenario validation uses it.
pub fn errno_value(name: &str) -> Option<i32> {
    (1..=133).find(|&e| errno_name(e) == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names_round_trip() {
        assert_eq!(errno_name(libc::EBUSY), "EBUSY");
        assert_eq!(errno_value("EBUSY"), Some(libc::EBUSY));
        assert_eq!(errno_value("EUCLEAN"), Some(libc::EUCLEAN));
        assert_eq!(errno_value("EBOGUS"), None);
        assert_eq!(errno_name(4000), "E4000");
    }

    #[test]
    fn plan_json_is_tagged_by_op() {
        let mut plan = Plan {
            version: PROTOCOL_VERSION,
            label: "it 1".into(),
            refresh: None,
            steps: vec![PlanStep {
                index: 3,
                op: Op::Umount {
                    target: "/mnt".into(),
                    force: false,
                    detach: false,
                    retry: Some(Retry {
                        max_ms: 10_000,
                        interval_ms: 10,
                    }),
                },
            }],
        };
        let json = serde_json::to_string(&plan).unwrap();
        assert!(json.contains(r#""op":"umount""#), "{json}");
        assert!(!json.contains("refresh"), "no refresh, no key: {json}");
        assert_eq!(serde_json::from_str::<Plan>(&json).unwrap(), plan);
        plan.refresh = Some(Refresh {
            entropy: vec![1, 2],
            realtime_ns: 3,
        });
        let json = serde_json::to_string(&plan).unwrap();
        assert!(
            json.contains(r#""refresh":{"entropy":[1,2],"realtime_ns":3}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Plan>(&json).unwrap(), plan);
    }

    #[test]
    fn output_lines_are_tagged_and_round_trip() {
        let step = OutputLine::Step(Box::new(StepReport {
            index: 2,
            errno: Some("EBUSY".into()),
            attempts: 1,
            detail: Some(Detail::Fsck { clean: true }),
            ..StepReport::default()
        }));
        let end = OutputLine::End(PlanEnd {
            done: true,
            steps_run: 4,
        });
        let fatal = OutputLine::Fatal {
            message: "no plan".into(),
        };
        for line in [step, end, fatal] {
            let json = serde_json::to_string(&line).unwrap();
            assert_eq!(
                serde_json::from_str::<OutputLine>(&json).unwrap(),
                line,
                "{json}"
            );
        }
        let json = serde_json::to_string(&OutputLine::End(PlanEnd {
            done: true,
            steps_run: 1,
        }))
        .unwrap();
        assert_eq!(json, r#"{"line":"end","done":true,"steps_run":1}"#);
    }

    #[test]
    fn untagged_lines_of_protocol_1_are_rejected() {
        assert!(serde_json::from_str::<OutputLine>(r#"{"done":true,"steps_run":4}"#).is_err());
        assert!(serde_json::from_str::<OutputLine>(r#"{"fatal":"bad"}"#).is_err());
    }
}
