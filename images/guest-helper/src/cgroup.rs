//! cgroup v2 bookkeeping: a workload is everything in its cgroup, however it forked.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::util::{self, monotonic_ms};

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Is a cgroup2 filesystem mounted at `root`?
pub fn is_cgroup2(root: &Path) -> bool {
    let Ok(c) = util::path_cstring(root) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct we own; c is a valid path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == CGROUP2_SUPER_MAGIC
}

/// The pids in `cgroup.procs` (thread-group leaders; signalling them reaches every thread).
pub fn procs(cg: &Path) -> io::Result<Vec<i32>> {
    let text = std::fs::read_to_string(cg.join("cgroup.procs"))?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// `populated` from `cgroup.events`: any live task in this cgroup or below.
pub fn parse_populated(events: &str) -> Option<bool> {
    events.lines().find_map(|l| match l.trim() {
        "populated 1" => Some(true),
        "populated 0" => Some(false),
        _ => None,
    })
}

pub fn populated(cg: &Path) -> io::Result<bool> {
    let text = std::fs::read_to_string(cg.join("cgroup.events"))?;
    parse_populated(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no populated line"))
}

/// Wait until the cgroup has no live task, or `timeout_ms` passes; true when it emptied.
/// The kernel signals every change of cgroup.events with POLLPRI, so this wakes right after
/// the last task exits; the short poll timeout covers a missed wake-up.
pub fn wait_empty(cg: &Path, timeout_ms: f64) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(cg.join("cgroup.events"))?;
    let deadline = monotonic_ms() + timeout_ms;
    let mut buf = [0u8; 256];
    loop {
        let n = f.read_at(&mut buf, 0)?;
        if parse_populated(&String::from_utf8_lossy(&buf[..n])) == Some(false) {
            return Ok(true);
        }
        let left = deadline - monotonic_ms();
        if left <= 0.0 {
            return Ok(false);
        }
        let mut pfd = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, left.clamp(1.0, 10.0) as i32) };
    }
}

/// Kill every task with SIGKILL through `cgroup.kill` (Linux 5.14): atomic against forks.
/// Returns false when the kernel has no cgroup.kill.
pub fn kill_all(cg: &Path) -> io::Result<bool> {
    match util::write_once(&cg.join("cgroup.kill"), b"1") {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Signal every pid listed, again and again until no new pid shows up (a task forking while
/// we signal lands in the cgroup and is caught by the next pass). Returns the pids signalled.
pub fn signal_each(cg: &Path, sig: i32) -> io::Result<Vec<i32>> {
    let mut seen: Vec<i32> = Vec::new();
    loop {
        let fresh: Vec<i32> = procs(cg)?
            .into_iter()
            .filter(|p| !seen.contains(p))
            .collect();
        if fresh.is_empty() {
            return Ok(seen);
        }
        for &pid in &fresh {
            // SAFETY: kill(2) with a pid from the cgroup; ESRCH (already gone) is fine.
            unsafe { libc::kill(pid, sig) };
        }
        seen.extend(fresh);
    }
}

/// Remove an emptied cgroup; the kernel may need a moment to drop exiting tasks.
pub fn remove(cg: &Path) -> io::Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(cg) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 100 => {
                tries += 1;
                util::sleep_ms(1);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Our subtree under the cgroup root: `ROOT/crashrig/NAME`, created on demand.
pub fn create(root: &Path, name: &str) -> io::Result<PathBuf> {
    let cg = root.join("crashrig").join(name);
    if let Err(e) = std::fs::create_dir_all(&cg) {
        // Another helper may have removed the empty parent between our two mkdirs.
        if e.kind() != io::ErrorKind::NotFound {
            return Err(e);
        }
        std::fs::create_dir_all(&cg)?;
    }
    Ok(cg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn populated_is_read_from_events() {
        assert_eq!(parse_populated("populated 1\nfrozen 0\n"), Some(true));
        assert_eq!(parse_populated("populated 0\nfrozen 0\n"), Some(false));
        assert_eq!(parse_populated("frozen 0\n"), None);
    }

    #[test]
    fn a_tmpfs_is_not_cgroup2() {
        assert!(!is_cgroup2(Path::new("/dev")));
        assert!(!is_cgroup2(Path::new("/nonexistent/crashrig")));
    }
}
