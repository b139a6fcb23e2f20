//! mount(2), umount2(2), FS_IOC_SHUTDOWN and sync, reporting exactly what the kernel returned.

use std::path::Path;

use crashrig_guest::{errno_name, Retry, StepReport};

use crate::util::{self, monotonic_ms};

/// `_IOR('X', 125, __u32)`: XFS_IOC_GOINGDOWN, shared by ext4, f2fs and btrfs.
pub const FS_IOC_SHUTDOWN: libc::c_ulong =
    (2 << 30) | (4 << 16) | ((b'X' as libc::c_ulong) << 8) | 125;

/// mount(8)-style option words split into MS_* flags and the filesystem's data string.
#[derive(Debug, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: libc::c_ulong,
    pub data: String,
}

/// Flag words as mount(8) spells them: (word, flags set, flags cleared).
const FLAG_WORDS: &[(&str, libc::c_ulong, libc::c_ulong)] = &[
    ("ro", libc::MS_RDONLY, 0),
    ("rw", 0, libc::MS_RDONLY),
    ("noatime", libc::MS_NOATIME, 0),
    ("atime", 0, libc::MS_NOATIME),
    ("relatime", libc::MS_RELATIME, 0),
    ("norelatime", 0, libc::MS_RELATIME),
    ("strictatime", libc::MS_STRICTATIME, 0),
    ("nodiratime", libc::MS_NODIRATIME, 0),
    ("diratime", 0, libc::MS_NODIRATIME),
    ("nosuid", libc::MS_NOSUID, 0),
    ("suid", 0, libc::MS_NOSUID),
    ("nodev", libc::MS_NODEV, 0),
    ("dev", 0, libc::MS_NODEV),
    ("noexec", libc::MS_NOEXEC, 0),
    ("exec", 0, libc::MS_NOEXEC),
    ("sync", libc::MS_SYNCHRONOUS, 0),
    ("async", 0, libc::MS_SYNCHRONOUS),
    ("dirsync", libc::MS_DIRSYNC, 0),
    ("lazytime", libc::MS_LAZYTIME, 0),
    ("nolazytime", 0, libc::MS_LAZYTIME),
    ("defaults", 0, 0),
];

pub fn parse_options(words: &[String]) -> MountOptions {
    let mut flags: libc::c_ulong = 0;
    let mut data: Vec<&str> = Vec::new();
    // A scenario may write "noatime,logbsize=256k" as one word, as mount -o does.
    for word in words.iter().flat_map(|w| w.split(',')) {
        let word = word.trim();
        if word.is_empty() {
            continue;
        }
        match FLAG_WORDS.iter().find(|(name, _, _)| *name == word) {
            Some((_, set, clear)) => flags = (flags & !clear) | set,
            None => data.push(word),
        }
    }
    MountOptions {
        flags,
        data: data.join(","),
    }
}

/// Result of one syscall attempt loop.
struct Attempts {
    first: Option<i32>,
    last: Option<i32>,
    attempts: u32,
    busy_window_ms: Option<f64>,
    gave_up: bool,
}

/// Call `attempt` once, or, with `retry`, again every `interval_ms` while it fails with EBUSY,
/// until it succeeds or `max_ms` have passed since the first attempt.
fn with_retry(retry: Option<Retry>, mut attempt: impl FnMut() -> Option<i32>) -> Attempts {
    let t0 = monotonic_ms();
    let first = attempt();
    let mut out = Attempts {
        first,
        last: first,
        attempts: 1,
        busy_window_ms: None,
        gave_up: false,
    };
    let Some(retry) = retry else { return out };
    if first != Some(libc::EBUSY) {
        return out;
    }
    loop {
        if monotonic_ms() - t0 >= retry.max_ms as f64 {
            out.gave_up = true;
            out.busy_window_ms = Some(retry.max_ms as f64);
            return out;
        }
        util::sleep_ms(retry.interval_ms);
        // The window ends when the attempt that no longer sees EBUSY starts: the time that
        // attempt itself takes (log replay, say) is not busy time.
        let started = monotonic_ms();
        let result = attempt();
        out.attempts += 1;
        out.last = result;
        if result != Some(libc::EBUSY) {
            out.busy_window_ms = Some(started - t0);
            return out;
        }
    }
}

fn fill(report: &mut StepReport, a: Attempts) {
    report.errno = a.first.map(errno_name);
    report.final_errno = a.last.map(errno_name);
    report.attempts = a.attempts;
    report.busy_window_ms = a.busy_window_ms;
    report.busy_gave_up = a.gave_up;
}

pub fn mount(
    report: &mut StepReport,
    source: &str,
    target: &str,
    fstype: &str,
    options: &[String],
    retry: Option<Retry>,
) {
    let opts = parse_options(options);
    if let Err(e) = std::fs::create_dir_all(target) {
        report.error = Some(format!("create mount point {target}: {e}"));
        return;
    }
    let (c_source, c_target, c_fstype, c_data) = match (
        util::cstring(source),
        util::cstring(target),
        util::cstring(fstype),
        util::cstring(&opts.data),
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
        _ => {
            report.error = Some("NUL byte in mount arguments".into());
            return;
        }
    };
    let data_ptr = if opts.data.is_empty() {
        std::ptr::null()
    } else {
        c_data.as_ptr() as *const libc::c_void
    };
    let a = with_retry(retry, || {
        // SAFETY: all pointers are valid NUL-terminated strings (or null data) for the call.
        let rc = unsafe {
            libc::mount(
                c_source.as_ptr(),
                c_target.as_ptr(),
                c_fstype.as_ptr(),
                opts.flags,
                data_ptr,
            )
        };
        (rc != 0).then(util::last_errno)
    });
    fill(report, a);
}

pub fn umount(
    report: &mut StepReport,
    target: &str,
    force: bool,
    detach: bool,
    retry: Option<Retry>,
) {
    let Ok(c_target) = util::cstring(target) else {
        report.error = Some("NUL byte in target".into());
        return;
    };
    let mut flags = 0;
    if force {
        flags |= libc::MNT_FORCE;
    }
    if detach {
        flags |= libc::MNT_DETACH;
    }
    let a = with_retry(retry, || {
        // SAFETY: c_target is a valid NUL-terminated string.
        let rc = unsafe { libc::umount2(c_target.as_ptr(), flags) };
        (rc != 0).then(util::last_errno)
    });
    fill(report, a);
}

fn open_dir(report: &mut StepReport, target: &str) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(Path::new(target))
    {
        Ok(f) => Some(f),
        Err(e) => {
            report.error = Some(format!("open {target}: {}", util::io_error_name(&e)));
            None
        }
    }
}

pub fn shutdown(report: &mut StepReport, target: &str, flag: u32) {
    use std::os::fd::AsRawFd;
    let Some(dir) = open_dir(report, target) else {
        return;
    };
    let mut flag = flag;
    // SAFETY: FS_IOC_SHUTDOWN reads one __u32 through the pointer, which outlives the call.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_SHUTDOWN as _, &mut flag as *mut u32) };
    report.attempts = 1;
    if rc != 0 {
        let errno = util::last_errno();
        report.errno = Some(errno_name(errno));
        if errno == libc::ENOTTY {
            // The filesystem has no shutdown ioctl on this kernel: say which and where, the
            // host's note names them.
            let fstype = std::fs::read_to_string("/proc/self/mounts")
                .ok()
                .and_then(|m| mounted_type(&m, target))
                .unwrap_or_else(|| "the filesystem".into());
            report.stderr = format!(
                "{fstype} on Linux {} has no FS_IOC_SHUTDOWN\n",
                kernel_release()
            );
        }
    }
}

/// The type of the filesystem mounted last on `target`, from /proc/self/mounts text.
pub fn mounted_type(mounts: &str, target: &str) -> Option<String> {
    let target = target.trim_end_matches('/');
    let target = if target.is_empty() { "/" } else { target };
    mounts.lines().rev().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, mnt, fstype) = (f.next()?, f.next()?, f.next()?);
        (mnt == target).then(|| fstype.to_string())
    })
}

/// uname -r.
fn kernel_release() -> String {
    // SAFETY: uname fills the zeroed struct it is given.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return "an unknown release".into();
    }
    // SAFETY: the kernel NUL-terminates release.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

pub fn sync(report: &mut StepReport, target: Option<&str>) {
    use std::os::fd::AsRawFd;
    report.attempts = 1;
    match target {
        None => {
            // SAFETY: sync(2) takes no arguments and cannot fail.
            unsafe { libc::sync() };
        }
        Some(target) => {
            let Some(dir) = open_dir(report, target) else {
                return;
            };
            // SAFETY: the fd is open for the duration of the call.
            if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
                report.errno = Some(errno_name(util::last_errno()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn the_type_mounted_last_on_a_target_names_a_filesystem_without_shutdown() {
        let mounts =
            "/dev/vda /mnt xfs rw 0 0\nproc /proc proc rw 0 0\n/dev/vdb /mnt btrfs rw 0 0\n";
        assert_eq!(mounted_type(mounts, "/mnt/"), Some("btrfs".into()));
        assert_eq!(mounted_type(mounts, "/proc"), Some("proc".into()));
        assert_eq!(mounted_type(mounts, "/srv"), None);
    }

    #[test]
    fn shutdown_ioctl_number_matches_the_kernel_header() {
        // XFS_IOC_GOINGDOWN as printed by strace on x86_64.
        assert_eq!(FS_IOC_SHUTDOWN, 0x8004_587d);
    }

    #[test]
    fn option_words_split_into_flags_and_data() {
        let table: &[(&[&str], libc::c_ulong, &str)] = &[
            (&[], 0, ""),
            (&["ro"], libc::MS_RDONLY, ""),
            (&["ro", "rw"], 0, ""),
            (
                &["noatime", "nodiratime"],
                libc::MS_NOATIME | libc::MS_NODIRATIME,
                "",
            ),
            (
                &["noatime,logbsize=256k", "nosuid"],
                libc::MS_NOATIME | libc::MS_NOSUID,
                "logbsize=256k",
            ),
            (
                &["sync", "dirsync", "lazytime"],
                libc::MS_SYNCHRONOUS | libc::MS_DIRSYNC | libc::MS_LAZYTIME,
                "",
            ),
            (
                &["nodev", "noexec", "relatime"],
                libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RELATIME,
                "",
            ),
            (
                &["defaults", "discard", "errors=remount-ro"],
                0,
                "discard,errors=remount-ro",
            ),
            (&["size=1m", "mode=0700"], 0, "size=1m,mode=0700"),
        ];
        for (input, flags, data) in table {
            let got = parse_options(&words(input));
            assert_eq!(
                got,
                MountOptions {
                    flags: *flags,
                    data: data.to_string()
                },
                "{input:?}"
            );
        }
    }

    #[test]
    fn retry_stops_on_the_first_non_ebusy_result() {
        let mut results = vec![None, Some(libc::EBUSY), Some(libc::EBUSY)];
        let a = with_retry(
            Some(Retry {
                max_ms: 5000,
                interval_ms: 1,
            }),
            || results.pop().unwrap(),
        );
        assert_eq!(
            (a.first, a.last, a.attempts, a.gave_up),
            (Some(libc::EBUSY), None, 3, false)
        );
        let w = a.busy_window_ms.unwrap();
        assert!((2.0..1000.0).contains(&w), "{w}");
    }

    #[test]
    fn retry_gives_up_at_the_bound() {
        let a = with_retry(
            Some(Retry {
                max_ms: 30,
                interval_ms: 5,
            }),
            || Some(libc::EBUSY),
        );
        assert!(a.gave_up);
        assert_eq!(a.busy_window_ms, Some(30.0));
        assert!(a.attempts >= 3, "{}", a.attempts);
        assert_eq!(a.last, Some(libc::EBUSY));
    }

    #[test]
    fn only_ebusy_is_retried() {
        let mut calls = 0;
        let a = with_retry(
            Some(Retry {
                max_ms: 5000,
                interval_ms: 1,
            }),
            || {
                calls += 1;
                Some(libc::EINVAL)
            },
        );
        assert_eq!((calls, a.attempts, a.busy_window_ms), (1, 1, None));
        let mut calls = 0;
        let a = with_retry(None, || {
            calls += 1;
            Some(libc::EBUSY)
        });
        assert_eq!(
            (calls, a.first, a.busy_window_ms),
            (1, Some(libc::EBUSY), None)
        );
    }
}
