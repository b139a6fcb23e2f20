//! The one way crashrig runs host programs (QEMU, make, git, apt-get, dpkg-deb, depmod, tar,
//! mkfs, ...):
//!
//! - each child leads a process group of its own, so stopping it stops what it started;
//! - stdout and stderr are always drained (a full pipe would block the child);
//! - every run has a deadline; a child that overstays it, or whose run is cancelled, is
//!   stopped politely (SIGTERM to the group), then with SIGKILL after a grace period, and the
//!   wait after SIGKILL is bounded too;
//! - nothing outlives crashrig: every group gets a watchdog, a forked copy of the child that
//!   blocks reading a pipe whose only writer is crashrig. However crashrig ends (SIGKILL, OOM,
//!   a panic), the kernel closes that pipe and the watchdog kills the whole group, children of
//!   children (make's compilers) included. PR_SET_PDEATHSIG on the group leader alone would
//!   not reach those, and fires when the spawning *thread* ends, not the process.
//! - before crashrig exits (after Ctrl-C/SIGTERM too), [`terminate_all`] stops every group
//!   still running and waits until each is gone, every thread of it: a QEMU killed when its
//!   owner was dropped takes a second or two to tear down its threads and memory, and
//!   would otherwise finish that re-parented to init after crashrig had exited.
//!
//! Synchronous runs ([`Tool`]) are for blocking code (builds, package tools); QEMU is driven
//! by tokio and gets the same process group and watchdog from [`tokio_command`], and is
//! started with [`spawn`], which registers it for [`terminate_all`].

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Grace between SIGTERM and SIGKILL (default: 5 s): make deletes the half-written target
/// it is building on SIGTERM, so a truncated .o never poisons the next incremental build.
pub const GRACE: Duration = Duration::from_secs(5);

/// The longest wait for a group leader to be reaped after SIGKILL. A process stuck in the
/// kernel (D state) can outlast SIGKILL; crashrig does not wait for it forever.
pub const REAP_LIMIT: Duration = Duration::from_secs(10);

/// Output kept per stream; beyond it only the end is kept.
const KEEP_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("start `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("finish `{command}` within {limit:?}: it was stopped")]
    Timeout { command: String, limit: Duration },
    #[error("finish `{command}`: it was cancelled")]
    Cancelled { command: String },
    #[error("wait for `{command}`")]
    Wait {
        command: String,
        #[source]
        source: std::io::Error,
    },
}

/// A program that did not run, or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Failed {
    #[error(transparent)]
    Process(ProcessError),
    #[error("run `{command}` ({status}): {stderr}")]
    Status {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
}

impl Failed {
    /// The command and what it said, for the callers' own error variants.
    pub fn parts(&self) -> (String, String) {
        match self {
            Failed::Process(e) => (
                match e {
                    ProcessError::Spawn { command, .. }
                    | ProcessError::Timeout { command, .. }
                    | ProcessError::Cancelled { command }
                    | ProcessError::Wait { command, .. } => command.clone(),
                },
                crate::report::error_chain(e),
            ),
            Failed::Status {
                command,
                status,
                stderr,
            } => (command.clone(), format!("{status}: {stderr}")),
        }
    }
}

/// The command line of `cmd`, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// The pipe the watchdogs read: crashrig holds the only write end (close-on-exec, so no
/// program it runs inherits it).
struct Lifeline {
    read: OwnedFd,
    write: OwnedFd,
}

fn lifeline() -> Option<&'static Lifeline> {
    static LIFELINE: OnceLock<Option<Lifeline>> = OnceLock::new();
    LIFELINE
        .get_or_init(|| {
            let mut fds = [0; 2];
            // SAFETY: pipe2 fills two descriptors we then own.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
                return None;
            }
            use std::os::fd::FromRawFd;
            // SAFETY: fresh descriptors from pipe2, owned by nobody else.
            Some(unsafe {
                Lifeline {
                    read: OwnedFd::from_raw_fd(fds[0]),
                    write: OwnedFd::from_raw_fd(fds[1]),
                }
            })
        })
        .as_ref()
}

/// Runs in the child between fork and exec: only async-signal-safe system calls.
fn in_child(read: i32, write: i32) -> std::io::Result<()> {
    // SAFETY: raw system calls on our own process; no allocation, no locks.
    unsafe {
        if libc::setpgid(0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let leader = libc::getpid();
        if read < 0 {
            // No lifeline: at least the leader dies with crashrig.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            return Ok(());
        }
        // fork(2) itself, not glibc's fork(): its atfork handlers take locks another thread
        // of crashrig may have held when this child was forked.
        let pid = libc::syscall(libc::SYS_fork);
        if pid == 0 {
            watchdog(leader, read, write);
        }
        if pid < 0 {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        }
    }
    Ok(())
}

/// The watchdog: ends with the group leader; kills the group when crashrig is gone.
unsafe fn watchdog(leader: i32, read: i32, write: i32) -> ! {
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    if libc::getppid() != leader {
        libc::_exit(0);
    }
    libc::close(write);
    // Keep nothing but the lifeline (moved to fd 0) open: the child's stdout and stderr pipes
    // must reach end-of-file when the child's own processes are done.
    if libc::dup2(read, 0) < 0 {
        libc::_exit(0);
    }
    if libc::syscall(libc::SYS_close_range, 1u32, u32::MAX, 0u32) != 0 {
        for fd in 1..4096 {
            libc::close(fd);
        }
    }
    let mut byte = 0u8;
    loop {
        let n = libc::read(0, (&mut byte as *mut u8).cast(), 1);
        if n == 0 || (n < 0 && *libc::__errno_location() != libc::EINTR) {
            break;
        }
    }
    libc::kill(-leader, libc::SIGKILL);
    libc::_exit(0);
}

/// Makes `cmd` lead a process group of its own with a watchdog.
pub fn contain(cmd: &mut Command) -> &mut Command {
    let (read, write) = lifeline().map_or((-1, -1), |l| (l.read.as_raw_fd(), l.write.as_raw_fd()));
    // SAFETY: the closure only makes async-signal-safe system calls.
    unsafe { cmd.pre_exec(move || in_child(read, write)) }
}

/// A tokio command for `program` that leads a process group with a watchdog, has stdin on
/// /dev/null and is killed when dropped.
pub fn tokio_command(program: impl AsRef<OsStr>) -> tokio::process::Command {
    let mut std_cmd = Command::new(program);
    contain(&mut std_cmd);
    let mut cmd = tokio::process::Command::from(std_cmd);
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

/// A tokio child's group leader, held by a pidfd: unlike its pid, a pidfd never names
/// another process, however long after the leader was reaped it is used.
struct Spawned {
    pid: i32,
    pidfd: OwnedFd,
}

impl Spawned {
    /// Whether the leader has exited, every thread of it (the pidfd is readable then).
    fn exited(&self, within: Duration) -> bool {
        let mut poll = libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = within.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: poll(2) on one descriptor we own.
        let n = unsafe { libc::poll(&mut poll, 1, ms) };
        n != 0
    }

    /// SIGTERM or SIGKILL to its group while the leader has not exited (so its pid, the
    /// group's id, still names it), or `anyway`: members that outlived a leader which exited
    /// on SIGTERM keep the group's id alive, and go with SIGKILL, as [`Tool`]'s do.
    fn signal(&self, signal: i32, anyway: bool) {
        if anyway || !self.exited(Duration::ZERO) {
            signal_group(self.pid, signal);
        }
    }

    /// Reaps the leader if nobody did yet (tokio, its owner, may have).
    fn reap(&self) {
        // SAFETY: waitid(2) on a pidfd we own, into a zeroed siginfo.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PIDFD,
                self.pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            );
        }
    }
}

/// Groups started by [`spawn`], until [`spawn`] finds them exited.
fn spawned() -> &'static Mutex<Vec<Spawned>> {
    static SPAWNED: OnceLock<Mutex<Vec<Spawned>>> = OnceLock::new();
    SPAWNED.get_or_init(Default::default)
}

/// Starts `cmd` (a [`tokio_command`]) and registers its group, so that [`terminate_all`]
/// stops it and waits for it even when its owner was dropped without waiting (a run
/// interrupted by Ctrl-C: `kill_on_drop` sends SIGKILL and nobody waits). Refused once
/// crashrig is shutting down.
pub fn spawn(cmd: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    let mut spawned = spawned().lock().unwrap_or_else(|e| e.into_inner());
    if SHUTTING_DOWN.load(Ordering::SeqCst) {
        return Err(std::io::Error::other("crashrig is shutting down"));
    }
    spawned.retain(|s| !s.exited(Duration::ZERO));
    let child = cmd.spawn()?;
    if let Some(pid) = child.id() {
        let pid = pid as i32;
        // SAFETY: pidfd_open(2) of our own unreaped child; the descriptor is ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd >= 0 {
            use std::os::fd::FromRawFd;
            // SAFETY: a fresh descriptor from pidfd_open, owned by nobody else.
            let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            spawned.push(Spawned { pid, pidfd });
        }
    }
    Ok(child)
}

/// SIGKILL to the group of `child` (a [`tokio_command`]), then a wait bounded by
/// [`REAP_LIMIT`]. Returns whether it was reaped.
pub async fn kill_group(child: &mut tokio::process::Child) -> bool {
    if let Some(pid) = child.id() {
        signal_group(pid as i32, libc::SIGKILL);
    }
    let _ = child.start_kill();
    tokio::time::timeout(REAP_LIMIT, child.wait()).await.is_ok()
}

/// SIGTERM to the group of `child`, `grace` to exit, then [`kill_group`]. A member that
/// outlived a leader which exited on SIGTERM gets SIGKILL too, as [`Tool`]'s do.
pub async fn stop_group(child: &mut tokio::process::Child, grace: Duration) -> bool {
    let pid = child.id();
    if let Some(pid) = pid {
        signal_group(pid as i32, libc::SIGTERM);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_ok() {
        if let Some(pid) = pid {
            signal_group(pid as i32, libc::SIGKILL);
        }
        return true;
    }
    kill_group(child).await
}

/// Groups started by [`Tool`] and not yet reaped.
fn live() -> &'static Mutex<BTreeSet<i32>> {
    static LIVE: OnceLock<Mutex<BTreeSet<i32>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
}

/// Set by [`terminate_all`]: every running [`Tool`] stops its child.
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

fn signal_group(pgid: i32, signal: i32) {
    if pgid > 0 {
        // SAFETY: kill(2) of a process group crashrig created.
        unsafe { libc::kill(-pgid, signal) };
    }
}

/// Stops every group [`Tool`] runs and every group [`spawn`] started (SIGTERM, then SIGKILL
/// after `grace`), waits, bounded, until their owners reaped the former and the latter have
/// exited, and reaps those. Starts no program afterwards. Called once, as crashrig exits:
/// nothing is abandoned, blocking or not.
pub fn terminate_all(grace: Duration) {
    // Taking the lock orders this after any spawn in progress; later ones are refused.
    let tokio_children = {
        let mut spawned = spawned().lock().unwrap_or_else(|e| e.into_inner());
        SHUTTING_DOWN.store(true, Ordering::SeqCst);
        std::mem::take(&mut *spawned)
    };
    // Groups whose leader still ran: those that SIGTERM ends get SIGKILL all the same, for
    // what of them ignored SIGTERM (the leader's exit killed its watchdog).
    let running: Vec<bool> = tokio_children
        .iter()
        .map(|s| !s.exited(Duration::ZERO))
        .collect();
    let groups = |()| live().lock().map(|l| l.clone()).unwrap_or_default();
    let signal_all = |signal: i32| {
        for pgid in groups(()) {
            signal_group(pgid, signal);
        }
        for (s, &running) in tokio_children.iter().zip(&running) {
            s.signal(signal, running && signal == libc::SIGKILL);
        }
    };
    let wait_gone = |limit: Duration| {
        let end = Instant::now() + limit;
        while Instant::now() < end
            && !(groups(()).is_empty() && tokio_children.iter().all(|s| s.exited(Duration::ZERO)))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    signal_all(libc::SIGTERM);
    wait_gone(grace);
    signal_all(libc::SIGKILL);
    wait_gone(REAP_LIMIT);
    for s in &tokio_children {
        s.reap();
    }
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What a finished program left.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A host program to run to its end, with a deadline.
pub struct Tool<'c> {
    cmd: &'c mut Command,
    limit: Duration,
    grace: Duration,
    cancel: Option<Arc<AtomicBool>>,
    stdin: Option<Vec<u8>>,
}

/// Kills the group and reaps the leader if the run ends any way but normally (a panic in the
/// line callback, say).
struct Reaper {
    child: Option<std::process::Child>,
    pgid: i32,
}

impl Reaper {
    /// SIGTERM, `grace`, SIGKILL, bounded wait.
    fn stop(&mut self, grace: Duration) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        signal_group(self.pgid, libc::SIGTERM);
        if !wait_until(child, Instant::now() + grace) {
            signal_group(self.pgid, libc::SIGKILL);
            wait_until(child, Instant::now() + REAP_LIMIT);
        }
        // Whatever of the group survived its leader goes too.
        signal_group(self.pgid, libc::SIGKILL);
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            signal_group(self.pgid, libc::SIGKILL);
            wait_until(child, Instant::now() + REAP_LIMIT);
        }
        if let Ok(mut l) = live().lock() {
            l.remove(&self.pgid);
        }
    }
}

/// Polls until `child` exited (true) or `end` passed.
fn wait_until(child: &mut std::process::Child, end: Instant) -> bool {
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() >= end => return false,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn drain(
    mut stream: impl Read + Send + 'static,
    which: Stream,
    tx: mpsc::Sender<(Stream, Vec<u8>)>,
) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16384];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send((which, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
}

/// Passes what the drain threads send on to `out` and `err` until both pipes reached their end
/// (true) or `end` passed (false).
fn drain_until(
    rx: &mpsc::Receiver<(Stream, Vec<u8>)>,
    end: Instant,
    out: &mut Collected,
    err: &mut Collected,
    on_line: &mut dyn FnMut(Stream, &str),
) -> bool {
    loop {
        match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok((Stream::Stdout, chunk)) => out.push(&chunk, Stream::Stdout, on_line),
            Ok((Stream::Stderr, chunk)) => err.push(&chunk, Stream::Stderr, on_line),
            Err(mpsc::RecvTimeoutError::Disconnected) => return true,
            Err(mpsc::RecvTimeoutError::Timeout) => return false,
        }
    }
}

/// Collected output of one stream and its partial last line.
#[derive(Default)]
struct Collected {
    bytes: Vec<u8>,
    line: Vec<u8>,
}

impl Collected {
    fn push(&mut self, chunk: &[u8], which: Stream, on_line: &mut dyn FnMut(Stream, &str)) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > KEEP_BYTES {
            let cut = self.bytes.len() - KEEP_BYTES / 2;
            self.bytes.drain(..cut);
        }
        for &b in chunk {
            if b == b'\n' {
                on_line(which, String::from_utf8_lossy(&self.line).trim_end());
                self.line.clear();
            } else {
                self.line.push(b);
            }
        }
    }

    fn finish(&mut self, which: Stream, on_line: &mut dyn FnMut(Stream, &str)) {
        if !self.line.is_empty() {
            on_line(which, String::from_utf8_lossy(&self.line).trim_end());
            self.line.clear();
        }
    }
}

impl<'c> Tool<'c> {
    /// `cmd` with a deadline of `limit`.
    pub fn new(cmd: &'c mut Command, limit: Duration) -> Tool<'c> {
        Tool {
            cmd,
            limit,
            grace: GRACE,
            cancel: None,
            stdin: None,
        }
    }

    /// Stops the program when `flag` becomes true.
    pub fn cancel(mut self, flag: Arc<AtomicBool>) -> Tool<'c> {
        self.cancel = Some(flag);
        self
    }

    /// Writes `bytes` to the program's stdin (else stdin is /dev/null).
    pub fn stdin(mut self, bytes: Vec<u8>) -> Tool<'c> {
        self.stdin = Some(bytes);
        self
    }

    /// Time between SIGTERM and SIGKILL when the program is stopped.
    pub fn grace(mut self, grace: Duration) -> Tool<'c> {
        self.grace = grace;
        self
    }

    /// Runs the program to its end and returns its output (any exit status).
    pub fn output(self) -> Result<Output, ProcessError> {
        self.run(&mut |_, _| {})
    }

    /// Runs the program; its stdout when it exits with 0, else [`Failed`] with its stderr.
    pub fn stdout(self) -> Result<String, Failed> {
        let command = describe(self.cmd);
        let out = self.output().map_err(Failed::Process)?;
        if out.status.success() {
            Ok(out.stdout_text())
        } else {
            Err(Failed::Status {
                command,
                status: out.status,
                stderr: out.stderr_text().trim().to_string(),
            })
        }
    }

    /// Runs the program to its end, passing every output line to `on_line` as it arrives.
    pub fn run(mut self, on_line: &mut dyn FnMut(Stream, &str)) -> Result<Output, ProcessError> {
        let command = describe(self.cmd);
        let cancelled = |c: &Option<Arc<AtomicBool>>| {
            SHUTTING_DOWN.load(Ordering::SeqCst)
                || c.as_ref().is_some_and(|f| f.load(Ordering::SeqCst))
        };
        if cancelled(&self.cancel) {
            return Err(ProcessError::Cancelled { command });
        }
        contain(self.cmd)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = {
            // Registered before the child exists, so terminate_all cannot miss it.
            let mut l = live().lock().unwrap_or_else(|e| e.into_inner());
            let child = self.cmd.spawn().map_err(|source| ProcessError::Spawn {
                command: command.clone(),
                source,
            })?;
            l.insert(child.id() as i32);
            child
        };
        let pgid = child.id() as i32;
        let (tx, rx) = mpsc::channel();
        drain(
            child.stdout.take().expect("piped"),
            Stream::Stdout,
            tx.clone(),
        );
        drain(child.stderr.take().expect("piped"), Stream::Stderr, tx);
        if let (Some(bytes), Some(mut pipe)) = (self.stdin.take(), child.stdin.take()) {
            // A program that stops reading must not block us: write from a thread of its own.
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = pipe.write_all(&bytes);
            });
        }
        let mut reaper = Reaper {
            child: Some(child),
            pgid,
        };
        let deadline = Instant::now() + self.limit;
        let (mut out, mut err) = (Collected::default(), Collected::default());
        let mut stopped = None;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok((Stream::Stdout, chunk)) => out.push(&chunk, Stream::Stdout, on_line),
                Ok((Stream::Stderr, chunk)) => err.push(&chunk, Stream::Stderr, on_line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if cancelled(&self.cancel) {
                stopped = Some(ProcessError::Cancelled {
                    command: command.clone(),
                });
            } else if Instant::now() >= deadline {
                stopped = Some(ProcessError::Timeout {
                    command: command.clone(),
                    limit: self.limit,
                });
            }
            if stopped.is_some() {
                break;
            }
            // The leader exited. Something it started may still hold the pipes: after a
            // moment that something, which belongs to the group, goes with it. Either way the
            // pipes are read to their end: what the leader wrote is in them even when the
            // drain threads have not run yet (a loaded host), and must not be cut off.
            if let Some(c) = reaper.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    let soon = Instant::now() + Duration::from_millis(200);
                    if !drain_until(&rx, soon, &mut out, &mut err, on_line) {
                        signal_group(pgid, libc::SIGKILL);
                        // Bounded: a process outside the group may hold the pipes too.
                        let end = Instant::now() + REAP_LIMIT;
                        drain_until(&rx, end, &mut out, &mut err, on_line);
                    }
                    break;
                }
            }
        }
        // A program that died of [`terminate_all`]'s signal before the loop saw the flag was
        // stopped all the same: its status is not its own failure (make's would read as a
        // compile error).
        if stopped.is_none() && cancelled(&self.cancel) {
            stopped = Some(ProcessError::Cancelled {
                command: command.clone(),
            });
        }
        if let Some(e) = stopped {
            reaper.stop(self.grace);
            return Err(e);
        }
        out.finish(Stream::Stdout, on_line);
        err.finish(Stream::Stderr, on_line);
        let mut child = reaper.child.take().expect("not reaped yet");
        let status = child.wait();
        // Leftovers of the group (a daemon the program started) do not outlive the run.
        signal_group(pgid, libc::SIGKILL);
        drop(reaper);
        let status = status.map_err(|source| ProcessError::Wait { command, source })?;
        Ok(Output {
            status,
            stdout: out.bytes,
            stderr: err.bytes,
        })
    }
}

/// Helpers for tests that start process groups (here and in the kernel build's runner): the
/// pids a test's shell wrote to a file, and whether they are still alive.
#[cfg(test)]
pub(crate) mod test_pids {
    use std::time::{Duration, Instant};

    pub(crate) fn alive(pid: i32) -> bool {
        // Zombies count as gone: read the state from /proc.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => !stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
            Err(_) => false,
        }
    }

    /// The pids a test's shell wrote to `file`, one per line (none while it does not exist).
    pub(crate) fn pids_in(file: &std::path::Path) -> Vec<i32> {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        text.lines().filter_map(|l| l.trim().parse().ok()).collect()
    }

    /// [`pids_in`] once `file` holds `n` pids, or whatever it holds after `within`.
    pub(crate) fn wait_pids(file: &std::path::Path, n: usize, within: Duration) -> Vec<i32> {
        let end = Instant::now() + within;
        loop {
            let pids = pids_in(file);
            if pids.len() == n || Instant::now() > end {
                return pids;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pids of `pids` still alive after `within` (none once all are gone).
    pub(crate) fn wait_gone(pids: &[i32], within: Duration) -> Vec<i32> {
        let end = Instant::now() + within;
        loop {
            let left: Vec<i32> = pids.iter().copied().filter(|&p| alive(p)).collect();
            if left.is_empty() || Instant::now() > end {
                return left;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_pids::*;
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn output_is_collected_and_lines_are_streamed_from_both_pipes() {
        let mut lines = Vec::new();
        let out = Tool::new(
            &mut sh("echo one; echo two >&2; printf tail"),
            Duration::from_secs(30),
        )
        .run(&mut |s, l| lines.push((s, l.to_string())))
        .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout_text(), "one\ntail");
        assert_eq!(out.stderr_text(), "two\n");
        lines.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            lines,
            [
                (Stream::Stdout, "one".to_string()),
                (Stream::Stdout, "tail".to_string()),
                (Stream::Stderr, "two".to_string())
            ]
        );
    }

    #[test]
    fn stdin_reaches_the_program_and_exit_status_is_kept() {
        let out = Tool::new(&mut sh("cat; exit 3"), Duration::from_secs(30))
            .stdin(b"hello".to_vec())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout_text(), "hello");
    }

    #[test]
    fn a_program_past_its_deadline_is_stopped() {
        let err = Tool::new(&mut sh("sleep 60"), Duration::from_millis(300))
            .grace(Duration::from_millis(200))
            .output()
            .unwrap_err();
        assert!(matches!(err, ProcessError::Timeout { .. }), "{err:?}");
    }

    #[test]
    fn a_stopped_program_takes_its_whole_group_even_a_member_that_ignores_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        // The child and grandchild ignore SIGTERM (the grandchild's pid is written after the
        // trap is set): only the SIGKILL after the grace period ends them. The run is stopped
        // once both pids are written, not at a deadline that a loaded host may pass before
        // the shells have even started.
        let script = format!(
            "sh -c 'trap \"\" TERM; sleep 60 & echo $! >> {p}; wait' & echo $! >> {p}; sleep 60",
            p = pids.display()
        );
        let flag = Arc::new(AtomicBool::new(false));
        let (f, file) = (flag.clone(), pids.clone());
        let watcher = std::thread::spawn(move || {
            let pids = wait_pids(&file, 2, Duration::from_secs(60));
            f.store(true, Ordering::SeqCst);
            pids
        });
        let err = Tool::new(&mut sh(&script), Duration::from_secs(600))
            .grace(Duration::from_millis(200))
            .cancel(flag)
            .output()
            .unwrap_err();
        assert!(matches!(err, ProcessError::Cancelled { .. }), "{err:?}");
        let pids = watcher.join().unwrap();
        assert_eq!(pids.len(), 2, "the group never started");
        assert_eq!(wait_gone(&pids, Duration::from_secs(10)), Vec::<i32>::new());
    }

    #[test]
    fn cancelling_stops_the_program() {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            f.store(true, Ordering::SeqCst);
        });
        let err = Tool::new(&mut sh("sleep 60"), Duration::from_secs(120))
            .cancel(flag)
            .output()
            .unwrap_err();
        assert!(matches!(err, ProcessError::Cancelled { .. }), "{err:?}");
    }

    #[test]
    fn a_program_that_cannot_start_is_a_spawn_error() {
        let err = Tool::new(
            &mut Command::new("/nonexistent/tool"),
            Duration::from_secs(5),
        )
        .output()
        .unwrap_err();
        assert!(matches!(err, ProcessError::Spawn { .. }), "{err:?}");
    }

    #[test]
    fn a_leader_that_exits_takes_what_it_left_running_with_it() {
        // The background sleep holds both pipes open long after the leader is done: the run
        // ends with the leader, and the sleep goes with its group.
        let out = Tool::new(&mut sh("sleep 600 & echo $!"), Duration::from_secs(120))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let pid: i32 = out.stdout_text().trim().parse().unwrap();
        assert_eq!(
            wait_gone(&[pid], Duration::from_secs(10)),
            Vec::<i32>::new()
        );
    }

    #[test]
    fn a_run_cancelled_before_it_starts_starts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let err = Tool::new(
            &mut sh(&format!("touch {}", marker.display())),
            Duration::from_secs(30),
        )
        .cancel(Arc::new(AtomicBool::new(true)))
        .output()
        .unwrap_err();
        assert!(matches!(err, ProcessError::Cancelled { .. }), "{err:?}");
        assert!(!marker.exists());
    }

    #[test]
    fn a_failing_program_is_its_status_and_stderr_and_a_succeeding_one_its_stdout() {
        let err = Tool::new(
            &mut sh("echo out; echo why >&2; exit 4"),
            Duration::from_secs(30),
        )
        .stdout()
        .unwrap_err();
        let (command, said) = err.parts();
        assert_eq!(command, "sh -c echo out; echo why >&2; exit 4");
        assert!(said.ends_with(": why") && said.contains('4'), "{said}");
        let out = Tool::new(&mut sh("echo out; echo noise >&2"), Duration::from_secs(30))
            .stdout()
            .unwrap();
        assert_eq!(out, "out\n");
    }

    /// A tokio group: a leader whose child ignores SIGTERM; the pids it wrote.
    async fn tokio_group(dir: &std::path::Path) -> (tokio::process::Child, Vec<i32>) {
        // A file of this group's own: a second group must never be read from the first's.
        let pids = tempfile::NamedTempFile::new_in(dir)
            .unwrap()
            .into_temp_path()
            .keep()
            .unwrap();
        let script = format!(
            "sh -c 'trap \"\" TERM; sleep 600 & echo $! >> {p}; wait' & echo $! >> {p}; \
             echo $$ >> {p}; sleep 600",
            p = pids.display()
        );
        let child = spawn(
            tokio_command("sh")
                .args(["-c", &script])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap();
        for _ in 0..3000 {
            let pids = pids_in(&pids);
            if pids.len() == 3 {
                return (child, pids);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the group never started");
    }

    #[tokio::test]
    async fn stopping_a_tokio_group_ends_every_member_even_one_that_ignores_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, pids) = tokio_group(dir.path()).await;
        assert!(pids.iter().all(|&p| alive(p)));
        assert!(stop_group(&mut child, Duration::from_millis(200)).await);
        assert!(child.try_wait().unwrap().is_some(), "the leader is reaped");
        assert_eq!(wait_gone(&pids, Duration::from_secs(10)), Vec::<i32>::new());
        let (mut child, pids) = tokio_group(dir.path()).await;
        assert!(
            pids.iter().all(|&p| alive(p)),
            "the second group is a new one"
        );
        assert!(kill_group(&mut child).await);
        assert_eq!(wait_gone(&pids, Duration::from_secs(10)), Vec::<i32>::new());
    }

    /// Set for the copy of the test binary that calls [`terminate_all`] (which ends every
    /// later run of the process it is called in).
    const TERMINATE_ENV: &str = "CRASHRIG_TEST_TERMINATE_DIR";

    #[test]
    #[ignore = "the process of terminate_all_stops_every_group_and_starts_nothing_after, which runs it"]
    fn terminate_all_child() {
        let dir = std::path::PathBuf::from(
            std::env::var(TERMINATE_ENV).expect("run by terminate_all_stops_every_group"),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A QEMU-like group its owner still holds, members ignoring SIGTERM.
        let (child, pids) = rt.block_on(tokio_group(&dir));
        let leader = child.id().unwrap();
        // A build-like tool blocked in its run on another thread.
        let tool_pid = dir.join("tool");
        let script = format!("echo $$ > {}; exec sleep 600", tool_pid.display());
        let tool = std::thread::spawn(move || {
            Tool::new(&mut sh(&script), Duration::from_secs(600))
                .grace(Duration::from_millis(200))
                .output()
        });
        let [tool_pid] = wait_pids(&tool_pid, 1, Duration::from_secs(60))[..] else {
            panic!("the tool never started");
        };
        terminate_all(Duration::from_millis(200));
        // Every member gone (SIGKILL is delivered as the call returns), the leader reaped
        // too (no zombie left for init).
        let mut all = pids.clone();
        all.push(tool_pid);
        assert_eq!(wait_gone(&all, Duration::from_secs(10)), Vec::<i32>::new());
        assert!(
            !std::path::Path::new(&format!("/proc/{leader}")).exists(),
            "the tokio group's leader is reaped"
        );
        let err = tool.join().unwrap().unwrap_err();
        assert!(matches!(err, ProcessError::Cancelled { .. }), "{err:?}");
        // Nothing starts afterwards.
        assert!(spawn(&mut tokio_command("true")).is_err());
        let err = Tool::new(&mut sh("true"), Duration::from_secs(5))
            .output()
            .unwrap_err();
        assert!(matches!(err, ProcessError::Cancelled { .. }), "{err:?}");
        drop(child);
    }

    #[test]
    fn terminate_all_stops_every_group_and_starts_nothing_after() {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "process::tests::terminate_all_child",
                "--ignored",
                "--nocapture",
            ])
            .env(TERMINATE_ENV, dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The child ran the test (a filter that matched nothing would pass too).
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// Set for the copy of the test binary that plays crashrig in the test below.
    const PARENT_ENV: &str = "CRASHRIG_TEST_LIFELINE_PIDS";

    #[test]
    #[ignore = "the parent process of killed_crashrig_leaves_no_group_behind, which runs it"]
    fn lifeline_parent() {
        let pids =
            std::env::var(PARENT_ENV).expect("run by killed_crashrig_leaves_no_group_behind");
        // A make-like tree: the leader's child starts a grandchild in the same group.
        let script = format!(
            "sh -c 'sleep 600 & echo $! >> {pids}; wait' & echo $! >> {pids}; echo $$ >> {pids}; sleep 600"
        );
        let _ = Tool::new(&mut sh(&script), Duration::from_secs(600)).output();
    }

    #[test]
    fn killed_crashrig_leaves_no_group_behind() {
        let dir = tempfile::tempdir().unwrap();
        let pids_file = dir.path().join("pids");
        let mut parent = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "process::tests::lifeline_parent",
                "--ignored",
                "--nocapture",
            ])
            .env(PARENT_ENV, &pids_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(60);
        let pids: Vec<i32> = loop {
            let text = std::fs::read_to_string(&pids_file).unwrap_or_default();
            let pids: Vec<i32> = text.lines().filter_map(|l| l.parse().ok()).collect();
            if pids.len() == 3 {
                break pids;
            }
            assert!(
                Instant::now() < end,
                "the parent never started its tree: {text:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(pids.iter().all(|&p| alive(p)));
        parent.kill().unwrap();
        parent.wait().unwrap();
        assert_eq!(
            wait_gone(&pids, Duration::from_secs(10)),
            Vec::<i32>::new(),
            "the leader, its child and its grandchild die with the process that ran them"
        );
    }
}
