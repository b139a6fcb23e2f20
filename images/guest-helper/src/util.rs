//! Small system helpers shared by the operations: clocks, errno, files.

use std::ffi::CString;
use std::io;
use std::path::Path;
use std::time::Duration;

/// CLOCK_MONOTONIC in milliseconds: the guest's time since boot (suspend aside), so reports
/// of different steps and the kernel's own timestamps share one axis.
pub fn monotonic_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1_000_000.0
}

/// The current thread's errno, as left by the last failed libc call.
pub fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The errno of an I/O error, when it came from the kernel.
pub fn io_errno(err: &io::Error) -> Option<i32> {
    err.raw_os_error()
}

/// "EBUSY"-style name of an I/O error, or its text when it did not come from a syscall.
pub fn io_error_name(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(e) => crashrig_guest::errno_name(e),
        None => err.to_string(),
    }
}

pub fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in string"))
}

pub fn path_cstring(p: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path"))
}

pub fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Write a whole small file in one write(2), as sysfs, procfs and cgroupfs expect.
pub fn write_once(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(data)
}

/// Keep only the last `max` bytes of `buf` (the end of a failing tool's output is what
/// explains it), cutting at a character boundary.
pub fn tail_string(buf: &[u8], max: usize) -> String {
    let start = buf.len().saturating_sub(max);
    let mut s = String::from_utf8_lossy(&buf[start..]).into_owned();
    if start > 0 {
        s.insert_str(0, "[...]\n");
    }
    s
}

/// Exit status as a shell reports it: the code, or 128 + the signal.
pub fn shell_status(status: std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s))
}

/// The same from a raw wait(2) status.
pub fn shell_status_raw(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_and_marks_the_cut() {
        assert_eq!(tail_string(b"abcdef", 10), "abcdef");
        assert_eq!(tail_string(b"abcdef", 3), "[...]\ndef");
    }

    #[test]
    fn raw_status_follows_the_shell_convention() {
        // Encodings from wait(2): exit code in bits 8..16, signal in the low 7 bits.
        assert_eq!(shell_status_raw(3 << 8), 3);
        assert_eq!(shell_status_raw(libc::SIGKILL), 137);
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_ms();
        sleep_ms(2);
        let b = monotonic_ms();
        assert!(b - a >= 2.0, "{a} -> {b}");
    }
}
