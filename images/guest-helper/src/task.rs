//! Workloads: background `spawn`, foreground `run`, and `kill` of every task a workload made.
//!
//! A spawned workload lives in the cgroup `ROOT/crashrig/NAME` (it moves itself there before
//! exec, so nothing it forks can escape); `kill` signals the cgroup and waits until it is
//! empty. fio without `--thread` forks job processes that outlive a kill of the parent: only
//! an empty cgroup proves that the workload, and every file reference it held, is gone.
//! Without cgroup2 the workload is its own session and process group, which is the fallback.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crashrig_guest::{Detail, StepReport};

use crate::cgroup;
use crate::util::{self, monotonic_ms};
use crate::Env;

/// Captured stdout and stderr keep their last 64 KiB.
pub const OUTPUT_MAX: usize = 64 * 1024;

/// Signal names as kill(1) takes them ("KILL", "SIGKILL", "kill", "9").
pub fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let sig = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ABRT" => libc::SIGABRT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        _ => return None,
    };
    Some(sig)
}

/// Workload names become file and cgroup names.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(format!("invalid workload name {name:?}"));
    }
    Ok(())
}

fn cgroup_root(env: &Env) -> Option<&Path> {
    cgroup::is_cgroup2(&env.cgroup_root).then_some(env.cgroup_root.as_path())
}

struct SpawnFiles {
    log: PathBuf,
    status: PathBuf,
    pid: PathBuf,
    /// Made by the first kill after a spawn: a workload found gone later was ended by it,
    /// not on its own.
    killed: PathBuf,
}

fn spawn_files(env: &Env, name: &str) -> SpawnFiles {
    let dir = env.run_dir.join("spawn");
    SpawnFiles {
        log: dir.join(format!("{name}.log")),
        status: dir.join(format!("{name}.status")),
        pid: dir.join(format!("{name}.pid")),
        killed: dir.join(format!("{name}.killed")),
    }
}

/// A `run` or `spawn` command as the guest's shell gets it: programs in `PATH` win over
/// busybox applets of the same name (see [`crate::shell`]).
/// The prelude is made once per helper process (its `PATH` does not change), not per step.
pub fn shell_command(command: &str) -> String {
    static PRELUDE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let prelude = PRELUDE
        .get_or_init(|| crate::shell::prelude_for(&std::env::var("PATH").unwrap_or_default()));
    format!("{prelude}{command}")
}

fn find_sh() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join("sh"))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("/bin/sh"))
}

/// Format `tag` + decimal `value` + '\n' without allocating (used between fork and exec).
fn encode(tag: u8, value: i64, buf: &mut [u8; 24]) -> usize {
    let mut digits = [0u8; 20];
    let mut n = value.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf[0] = tag;
    let mut i = 1;
    if value < 0 {
        buf[i] = b'-';
        i += 1;
    }
    for d in digits[..len].iter().rev() {
        buf[i] = *d;
        i += 1;
    }
    buf[i] = b'\n';
    i + 1
}

/// Write one tagged number to `fd`, ignoring errors (the reader treats silence as trouble).
unsafe fn tell(fd: i32, tag: u8, value: i64) {
    let mut buf = [0u8; 24];
    let n = encode(tag, value, &mut buf);
    libc::write(fd, buf.as_ptr() as *const libc::c_void, n);
}

unsafe fn close_from(first: u32) {
    if libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) != 0 {
        for fd in first as i32..4096 {
            libc::close(fd);
        }
    }
}

unsafe fn default_signals() {
    for sig in 1..32 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
}

/// Everything the forked children need, prepared before fork so they only make syscalls.
struct SpawnArgs {
    sh: CString,
    command: CString,
    log: CString,
    status: CString,
    procs: Option<CString>,
}

/// Pipe messages from the children: the workload's pid, or a failure and its errno.
const TAG_PID: u8 = b'P';
const TAG_FORK: u8 = b'F';
const TAG_CGROUP: u8 = b'C';
const TAG_LOG: u8 = b'L';
const TAG_EXEC: u8 = b'X';

/// The workload process: own session, own cgroup, no inherited descriptors, then exec.
unsafe fn workload(a: &SpawnArgs, w: i32) -> ! {
    libc::setsid();
    default_signals();
    if let Some(procs) = &a.procs {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 || libc::write(fd, b"0".as_ptr() as *const libc::c_void, 1) != 1 {
            tell(w, TAG_CGROUP, util::last_errno() as i64);
            libc::_exit(127);
        }
        libc::close(fd);
    }
    let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
    let log = libc::open(
        a.log.as_ptr(),
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND,
        0o644,
    );
    if null < 0 || log < 0 {
        tell(w, TAG_LOG, util::last_errno() as i64);
        libc::_exit(127);
    }
    libc::dup2(null, 0);
    libc::dup2(log, 1);
    libc::dup2(log, 2);
    // Keep the report pipe as fd 3, closed by exec; close everything else (the SSH channel).
    libc::dup2(w, 3);
    libc::fcntl(3, libc::F_SETFD, libc::FD_CLOEXEC);
    close_from(4);
    let argv = [
        c"sh".as_ptr(),
        c"-c".as_ptr(),
        a.command.as_ptr(),
        std::ptr::null(),
    ];
    libc::execv(a.sh.as_ptr(), argv.as_ptr());
    tell(3, TAG_EXEC, util::last_errno() as i64);
    libc::_exit(127)
}

/// The supervisor: reparented to init, it waits for the workload and records its status.
unsafe fn supervisor(a: &SpawnArgs, r: i32, w: i32) -> ! {
    libc::setsid();
    libc::chdir(c"/".as_ptr());
    let pid = libc::fork();
    if pid == 0 {
        libc::close(r);
        workload(a, w);
    }
    if pid < 0 {
        tell(w, TAG_FORK, util::last_errno() as i64);
        libc::_exit(1);
    }
    tell(w, TAG_PID, pid as i64);
    let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
    libc::dup2(null, 0);
    libc::dup2(null, 1);
    libc::dup2(null, 2);
    close_from(3);
    let mut status = 0;
    while libc::waitpid(pid, &mut status, 0) < 0 && util::last_errno() == libc::EINTR {}
    let fd = libc::open(
        a.status.as_ptr(),
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        0o644,
    );
    if fd >= 0 {
        let mut buf = [0u8; 24];
        let n = encode(b'=', util::shell_status_raw(status) as i64, &mut buf);
        // Skip the tag: the file holds just the number.
        libc::write(fd, buf[1..].as_ptr() as *const libc::c_void, n - 1);
        libc::close(fd);
    }
    libc::_exit(0)
}

/// Parse what the children told the helper through the pipe.
fn decode(msg: &str) -> Result<i32, String> {
    let mut pid = None;
    for line in msg.lines() {
        let (tag, num) = line.split_at(1.min(line.len()));
        let num: i64 = num.parse().unwrap_or(0);
        let errno = crashrig_guest::errno_name(num as i32);
        match tag.as_bytes().first() {
            Some(&TAG_PID) => pid = Some(num as i32),
            Some(&TAG_FORK) => return Err(format!("fork: {errno}")),
            Some(&TAG_CGROUP) => return Err(format!("join the workload cgroup: {errno}")),
            Some(&TAG_LOG) => return Err(format!("open the workload log: {errno}")),
            Some(&TAG_EXEC) => return Err(format!("exec sh: {errno}")),
            _ => {}
        }
    }
    pid.ok_or_else(|| "the supervisor died before starting the workload".to_string())
}

pub fn spawn(env: &Env, report: &mut StepReport, name: &str, command: &str) {
    report.attempts = 1;
    if let Err(e) = check_name(name) {
        report.error = Some(e);
        return;
    }
    let files = spawn_files(env, name);
    if let Some(dir) = files.log.parent() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            report.error = Some(format!("create {}: {e}", dir.display()));
            return;
        }
    }
    let _ = std::fs::remove_file(&files.status);
    let _ = std::fs::remove_file(&files.killed);
    let cg = match cgroup_root(env) {
        Some(root) => match cgroup::create(root, name) {
            Ok(cg) => {
                if cgroup::populated(&cg).unwrap_or(false) {
                    report.error = Some(format!("workload {name} is still running"));
                    return;
                }
                Some(cg)
            }
            Err(e) => {
                report.error = Some(format!("create cgroup for {name}: {e}"));
                return;
            }
        },
        None => None,
    };
    let args = match (|| -> std::io::Result<SpawnArgs> {
        Ok(SpawnArgs {
            sh: util::path_cstring(&find_sh())?,
            command: util::cstring(&shell_command(command))?,
            log: util::path_cstring(&files.log)?,
            status: util::path_cstring(&files.status)?,
            procs: match &cg {
                Some(cg) => Some(util::path_cstring(&cg.join("cgroup.procs"))?),
                None => None,
            },
        })
    })() {
        Ok(a) => a,
        Err(e) => {
            report.error = Some(format!("prepare spawn: {e}"));
            return;
        }
    };
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        report.error = Some(format!(
            "pipe: {}",
            crashrig_guest::errno_name(util::last_errno())
        ));
        return;
    }
    let (r, w) = (fds[0], fds[1]);
    // Double fork: the intermediate child exits at once, so the supervisor belongs to init
    // and the helper can end while the workload runs on. The helper is single-threaded here.
    // SAFETY: the children only make syscalls on data prepared above, then exec or _exit.
    let a = unsafe { libc::fork() };
    if a == 0 {
        unsafe {
            let b = libc::fork();
            if b == 0 {
                supervisor(&args, r, w);
            }
            if b < 0 {
                tell(w, TAG_FORK, util::last_errno() as i64);
            }
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the write end so EOF means every child is done with it.
    unsafe { libc::close(w) };
    if a < 0 {
        unsafe { libc::close(r) };
        report.error = Some(format!(
            "fork: {}",
            crashrig_guest::errno_name(util::last_errno())
        ));
        return;
    }
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(a, &mut st, 0) };
    // SAFETY: r is our open read end; the File takes ownership and closes it.
    let mut pipe = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(r) };
    let mut msg = String::new();
    let _ = pipe.read_to_string(&mut msg);
    match decode(&msg) {
        Ok(pid) => {
            let mode = if cg.is_some() { "cgroup" } else { "pgrp" };
            if let Err(e) = std::fs::write(&files.pid, format!("{pid} {mode}\n")) {
                report.error = Some(format!("record pid of {name}: {e}"));
            }
            report.stdout = format!("pid {pid}\n");
        }
        Err(e) => {
            report.error = Some(format!("start workload {name}: {e}"));
            if let Some(cg) = &cg {
                let _ = cgroup::remove(cg);
            }
        }
    }
}

/// Live (not zombie) processes whose process group is `pgid`, from /proc.
pub fn pgrp_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| parse_stat_pgrp(&s))
                .is_some_and(|(state, pgrp)| pgrp == pgid && state != 'Z' && state != 'X')
        })
        .collect()
}

/// (state, pgrp) from /proc/PID/stat; the command name may contain spaces and parentheses.
pub fn parse_stat_pgrp(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let _ppid = f.next()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, pgrp))
}

fn read_status(path: &Path, wait_ms: f64) -> Option<i32> {
    // The supervisor writes the status right after the workload's main process is reaped,
    // which can trail the cgroup emptying by a moment.
    let deadline = monotonic_ms() + wait_ms;
    loop {
        if let Some(s) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return Some(s);
        }
        if monotonic_ms() >= deadline {
            return None;
        }
        util::sleep_ms(1);
    }
}

/// Signals workload `name`'s tasks and waits up to `wait_ms` for them to exit. A name this
/// guest never spawned is an error, unless `may_have_ended` (a crash step restarted the guest
/// since the spawn): the workload ended with it, and there is nothing left to signal.
pub fn kill(
    env: &Env,
    report: &mut StepReport,
    name: &str,
    signal: &str,
    wait_ms: u64,
    may_have_ended: bool,
) {
    report.attempts = 1;
    if let Err(e) = check_name(name) {
        report.error = Some(e);
        return;
    }
    let Some(sig) = parse_signal(signal) else {
        report.error = Some(format!("unknown signal {signal:?}"));
        return;
    };
    let files = spawn_files(env, name);
    let Ok(record) = std::fs::read_to_string(&files.pid) else {
        if may_have_ended {
            report.detail = Some(Detail::Killed {
                tasks: 0,
                exit_wait_ms: None,
                exit_status: None,
                timed_out: false,
                exited_before: false,
                exited_ms: None,
            });
        } else {
            report.error = Some(format!("no workload named {name}"));
        }
        return;
    };
    let mut words = record.split_whitespace();
    let pid: i32 = words.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let cg = (words.next() == Some("cgroup")).then(|| env.cgroup_root.join("crashrig").join(name));

    let killed_before = files.killed.exists();
    let _ = std::fs::write(&files.killed, "");
    let t0 = monotonic_ms();
    let (tasks, empty) = match &cg {
        // Killed and removed by an earlier kill: nothing left to signal.
        Some(cg) if !cg.exists() => (0, true),
        Some(cg) => match kill_cgroup(cg, sig, wait_ms) {
            Ok(r) => r,
            Err(e) => {
                report.error = Some(format!("signal workload {name}: {e}"));
                return;
            }
        },
        None => kill_pgrp(pid, sig, wait_ms),
    };
    let exit_wait_ms = (wait_ms > 0 && empty).then(|| monotonic_ms() - t0);
    let timed_out = wait_ms > 0 && !empty;
    let exit_status = read_status(&files.status, if empty { 100.0 } else { 0.0 });
    // The workload's own words (fio's errors, say) explain a run that did nothing.
    report.stdout = log_tail(&files.log);
    if let Some(cg) = cg.as_ref().filter(|_| empty) {
        if let Err(e) = cgroup::remove(cg) {
            report.error = Some(format!("remove cgroup {}: {e}", cg.display()));
        }
    }
    if timed_out {
        report.error = Some(format!(
            "workload {name} still had live tasks {wait_ms} ms after the signal"
        ));
    }
    let exited_before = tasks == 0 && empty && !killed_before;
    report.detail = Some(Detail::Killed {
        tasks,
        exit_wait_ms,
        exit_status,
        timed_out,
        exited_before,
        exited_ms: exited_before.then(|| exit_time_ms(&files.status)).flatten(),
    });
}

/// When the workload ended, on the helper's clock ([`monotonic_ms`]): its supervisor wrote
/// the status file right after reaping it, and the file's time (wall clock, to the kernel's
/// coarse tick) is carried over by the two clocks' offset now.
fn exit_time_ms(status: &Path) -> Option<f64> {
    let written = std::fs::metadata(status).ok()?.modified().ok()?;
    let age = std::time::SystemTime::now().duration_since(written).ok()?;
    Some(monotonic_ms() - age.as_secs_f64() * 1000.0)
}

/// The workload log's last lines that `kill` reports (default: 8 KiB).
const LOG_TAIL: usize = 8 * 1024;

fn log_tail(log: &Path) -> String {
    use std::io::{Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(log) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(LOG_TAIL as u64);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        text.insert_str(0, "[...]\n");
    }
    text
}

/// Signal every task of the cgroup; returns (tasks signalled, cgroup empty afterwards).
fn kill_cgroup(cg: &Path, sig: i32, wait_ms: u64) -> std::io::Result<(u32, bool)> {
    let tasks = if sig == libc::SIGKILL {
        let before = cgroup::procs(cg)?.len() as u32;
        if cgroup::kill_all(cg)? {
            before
        } else {
            cgroup::signal_each(cg, sig)?.len() as u32
        }
    } else {
        cgroup::signal_each(cg, sig)?.len() as u32
    };
    let empty = if wait_ms > 0 {
        cgroup::wait_empty(cg, wait_ms as f64)?
    } else {
        !cgroup::populated(cg)?
    };
    Ok((tasks, empty))
}

/// Fallback without cgroup2: the workload's process group (tasks that made a session of
/// their own escape it).
fn kill_pgrp(pgid: i32, sig: i32, wait_ms: u64) -> (u32, bool) {
    if pgid <= 1 {
        return (0, true);
    }
    let tasks = pgrp_members(pgid).len() as u32;
    // SAFETY: signalling a process group we created; ESRCH means it is already gone.
    unsafe { libc::kill(-pgid, sig) };
    let deadline = monotonic_ms() + wait_ms as f64;
    loop {
        if pgrp_members(pgid).is_empty() {
            return (tasks, true);
        }
        if wait_ms == 0 || monotonic_ms() >= deadline {
            return (tasks, false);
        }
        util::sleep_ms(1);
    }
}

/// A foreground program's outcome.
#[derive(Debug, Default)]
pub struct Captured {
    /// Exit code, or 128 + signal; None when it was killed at the timeout or never started.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub error: Option<String>,
}

impl Captured {
    pub fn into_report(self, report: &mut StepReport) {
        report.attempts = 1;
        report.exit_status = self.status;
        report.stdout = self.stdout;
        report.stderr = self.stderr;
        if self.error.is_some() {
            report.error = self.error;
        }
    }
}

static RUN_COUNTER: AtomicU32 = AtomicU32::new(0);

/// How the tasks of a foreground run are found again to kill them all.
enum Group {
    Cgroup(PathBuf),
    Pgrp(i32),
}

impl Group {
    /// SIGKILL everything left and wait (bounded) until it is gone.
    fn kill_all(&self) {
        match self {
            Group::Cgroup(cg) => {
                if cgroup::populated(cg).unwrap_or(false) {
                    if !cgroup::kill_all(cg).unwrap_or(false) {
                        let _ = cgroup::signal_each(cg, libc::SIGKILL);
                    }
                    let _ = cgroup::wait_empty(cg, 5000.0);
                }
            }
            Group::Pgrp(pgid) => {
                let _ = kill_pgrp(*pgid, libc::SIGKILL, 5000);
            }
        }
    }
}

/// Run `program args...` with stdin from /dev/null, stdout and stderr captured (last 64 KiB
/// each), in a transient cgroup (else a process group of its own). When the program exits,
/// whatever it left running in the background is killed, so nothing keeps the pipes (or the
/// filesystem) open; at `timeout_ms` the whole group is killed.
pub fn run_captured(env: &Env, program: &str, args: &[&str], timeout_ms: u64) -> Captured {
    let n = RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
    let cg = cgroup_root(env)
        .and_then(|root| cgroup::create(root, &format!("run.{}.{n}", std::process::id())).ok());
    let procs = cg
        .as_ref()
        .and_then(|cg| util::path_cstring(&cg.join("cgroup.procs")).ok());
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir("/");
    // SAFETY: the hook only makes syscalls on a CString prepared before fork.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(p) = &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0".as_ptr() as *const libc::c_void, 1);
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if n != 1 {
                    return Err(err);
                }
            }
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            if let Some(cg) = &cg {
                let _ = cgroup::remove(cg);
            }
            return Captured {
                error: Some(format!("start {program}: {}", util::io_error_name(&e))),
                ..Captured::default()
            };
        }
    };
    let group = match &cg {
        Some(cg) => Group::Cgroup(cg.clone()),
        None => Group::Pgrp(child.id() as i32),
    };
    let mut out = Stream::new(child.stdout.take().map(IntoRawFd::into_raw_fd));
    let mut err = Stream::new(child.stderr.take().map(IntoRawFd::into_raw_fd));
    // A pidfd turns the child's exit into a poll event (Linux 5.3); without it, poll in slices.
    // SAFETY: pidfd_open on our own child; the fd is closed below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as i32, 0) } as i32;
    let deadline = monotonic_ms() + timeout_ms as f64;
    let mut status = None;
    let mut timed_out = false;
    let mut unkillable = false;
    let mut drain_deadline = f64::INFINITY;
    loop {
        if status.is_none() && !timed_out {
            if let Ok(Some(st)) = child.try_wait() {
                status = util::shell_status(st);
                group.kill_all();
                drain_deadline = monotonic_ms() + 2000.0;
            } else if monotonic_ms() >= deadline {
                timed_out = true;
                group.kill_all();
                let _ = child.kill();
                // Bounded: a task blocked in the kernel (D state: a sync on a suspended
                // device) does not die of SIGKILL, and an unbounded wait held the whole
                // plan, the crash step after it included, until the iteration was a hang.
                let until = monotonic_ms() + 1000.0;
                while !matches!(child.try_wait(), Ok(Some(_))) {
                    if monotonic_ms() >= until {
                        unkillable = true;
                        break;
                    }
                    util::sleep_ms(5);
                }
                drain_deadline = monotonic_ms() + 2000.0;
            }
        }
        let finished = status.is_some() || timed_out;
        if finished && (out.closed() && err.closed() || monotonic_ms() >= drain_deadline) {
            break;
        }
        let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(3);
        for fd in [out.fd, err.fd] {
            if fd >= 0 {
                pfds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
        }
        if !finished && pidfd >= 0 {
            pfds.push(libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let limit = if finished { drain_deadline } else { deadline };
        let mut wait = (limit - monotonic_ms()).max(0.0);
        if !finished && pidfd < 0 {
            wait = wait.min(5.0);
        }
        // SAFETY: pfds is a valid array of pollfd for the call.
        unsafe {
            libc::poll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                wait.ceil() as i32,
            )
        };
        for p in &pfds {
            if p.revents == 0 {
                continue;
            }
            if p.fd == out.fd {
                out.read_some();
            } else if p.fd == err.fd {
                err.read_some();
            }
        }
    }
    if pidfd >= 0 {
        // SAFETY: closing the pidfd we opened.
        unsafe { libc::close(pidfd) };
    }
    if let Some(cg) = &cg {
        let _ = cgroup::remove(cg);
    }
    Captured {
        status,
        stdout: out.finish(),
        stderr: err.finish(),
        error: timed_out.then(|| {
            if unkillable {
                format!(
                    "timed out after {timeout_ms} ms, and still there after SIGKILL (blocked in \
                     the kernel, D state): left running"
                )
            } else {
                format!("timed out after {timeout_ms} ms")
            }
        }),
    }
}

/// One captured pipe: raw fd (closed at EOF) and the tail of what came through it.
struct Stream {
    fd: i32,
    buf: Vec<u8>,
}

impl Stream {
    fn new(fd: Option<i32>) -> Self {
        Stream {
            fd: fd.unwrap_or(-1),
            buf: Vec::new(),
        }
    }

    fn closed(&self) -> bool {
        self.fd < 0
    }

    fn read_some(&mut self) {
        let mut chunk = [0u8; 16 * 1024];
        // SAFETY: reading into a stack buffer from our open pipe fd.
        let n = unsafe {
            libc::read(
                self.fd,
                chunk.as_mut_ptr() as *mut libc::c_void,
                chunk.len(),
            )
        };
        if n > 0 {
            self.buf.extend_from_slice(&chunk[..n as usize]);
            if self.buf.len() > 2 * OUTPUT_MAX {
                let cut = self.buf.len() - OUTPUT_MAX;
                self.buf.drain(..cut);
            }
        } else if n == 0 || util::last_errno() != libc::EINTR {
            self.close();
        }
    }

    fn close(&mut self) {
        if self.fd >= 0 {
            // SAFETY: closing the fd we own.
            unsafe { libc::close(self.fd) };
            self.fd = -1;
        }
    }

    fn finish(mut self) -> String {
        self.close();
        util::tail_string(&self.buf, OUTPUT_MAX)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_parse_like_kill() {
        let table = [
            ("KILL", Some(libc::SIGKILL)),
            ("SIGKILL", Some(libc::SIGKILL)),
            ("kill", Some(libc::SIGKILL)),
            ("9", Some(9)),
            ("TERM", Some(libc::SIGTERM)),
            ("sigint", Some(libc::SIGINT)),
            ("USR1", Some(libc::SIGUSR1)),
            ("STOP", Some(libc::SIGSTOP)),
            ("0", None),
            ("65", None),
            ("BOGUS", None),
            ("", None),
        ];
        for (input, want) in table {
            assert_eq!(parse_signal(input), want, "{input:?}");
        }
    }

    #[test]
    fn workload_names_must_be_plain_file_names() {
        assert!(check_name("fio").is_ok());
        assert!(check_name("fio-2.load").is_ok());
        for bad in ["", ".", "..", "a/b", "/abs"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pipe_messages_round_trip() {
        let mut buf = [0u8; 24];
        let n = encode(TAG_PID, 4242, &mut buf);
        assert_eq!(&buf[..n], b"P4242\n");
        let n = encode(b'=', -1, &mut buf);
        assert_eq!(&buf[..n], b"=-1\n");
        assert_eq!(decode("P4242\n"), Ok(4242));
        assert_eq!(decode("P4242\nX2\n"), Err("exec sh: ENOENT".to_string()));
        assert_eq!(
            decode("C13\n"),
            Err("join the workload cgroup: EACCES".to_string())
        );
        assert!(decode("").is_err());
    }

    #[test]
    fn stat_lines_give_state_and_group() {
        assert_eq!(
            parse_stat_pgrp("123 (sleep) S 1 120 120 0 -1"),
            Some(('S', 120))
        );
        assert_eq!(parse_stat_pgrp("7 (a) b (c)) Z 1 7 7"), Some(('Z', 7)));
        assert_eq!(parse_stat_pgrp("garbage"), None);
    }
}
