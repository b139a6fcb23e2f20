//! `crashrig-guest agent PORT`: runs the host's commands that come over the agent channel
//! (see `crashrig_guest::channel`), one at a time, as dropbear runs an SSH `exec` request:
//! `/bin/sh -c COMMAND` in a session of its own, in /root, with HOME set, standard input from
//! the request and both outputs sent back as they come.
//!
//! init starts it once the port exists; it lives as long as the guest and is saved with it,
//! waiting in read(2) on the port, so a restored guest answers on the channel at once.
//!
//! Before the host saves a guest it asks for a *spare* ([`PREPARE`]): the helper command
//! started ahead, past its fork, exec and start-up, waiting for its plan on standard input.
//! It is saved with the guest, so a restored guest's first plan runs without starting a
//! process: under TCG the first fork and exec after a restore run on kernel code QEMU has
//! not translated yet and took 0.11 s of a 0.13 s first command.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use crashrig_guest::channel::{self, EXEC, EXIT, FAILED, PREPARE, STDERR, STDOUT};

use crate::util;

/// How long the agent waits before reading again when the host side of the port is closed
/// (read(2) on a virtio port then returns 0 at once).
const IDLE_MS: u64 = 100;

/// Serves the port at `path` until the guest goes down.
pub fn run(path: &Path) -> i32 {
    let port = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "crashrig-guest agent: open {}: {}",
                path.display(),
                util::io_error_name(&e)
            );
            return 1;
        }
    };
    let mut reader = match port.try_clone() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("crashrig-guest agent: {}", util::io_error_name(&e));
            return 1;
        }
    };
    let writer = Arc::new(Mutex::new(port));
    let mut agent = Agent::default();
    loop {
        match channel::read_frame(&mut reader) {
            Ok(Some((EXEC, payload))) => agent.serve(&payload, &writer),
            Ok(Some((PREPARE, payload))) => agent.prepare(&payload, &writer),
            Ok(Some(_)) => {}
            // The host end is closed (or went away mid-frame): the next host starts afresh.
            Ok(None) | Err(_) => util::sleep_ms(IDLE_MS),
        }
    }
}

/// A command started ahead of its request ([`PREPARE`]), waiting for its standard input.
struct Spare {
    command: String,
    child: Child,
}

/// The agent's state between requests: at most one spare.
#[derive(Default)]
pub struct Agent {
    spare: Option<Spare>,
}

/// How long a spare may take to be waiting for its input.
const SPARE_WITHIN_MS: f64 = 10_000.0;

impl Agent {
    /// Runs one [`EXEC`] request and writes its output and end to `out`: on the spare when
    /// it was started for this command and still waits, else on a new process.
    pub fn serve<W: Write + Send + 'static>(&mut self, payload: &[u8], out: &Arc<Mutex<W>>) {
        let (command, stdin) = match channel::parse_exec(payload) {
            Ok(parsed) => parsed,
            Err(reason) => return send(out, FAILED, reason.as_bytes()),
        };
        let spare = match self.spare.take_if(|s| s.command == command) {
            Some(s) if waiting_for_input(s.child.id()) => Some(s),
            Some(mut gone) => {
                let _ = gone.child.kill();
                let _ = gone.child.wait();
                None
            }
            None => None,
        };
        let child = match spare {
            Some(s) => s.child,
            None => match spawn(&command) {
                Ok(c) => c,
                Err(reason) => return send(out, FAILED, reason.as_bytes()),
            },
        };
        finish(child, stdin.to_vec(), out);
    }

    /// Starts the command of a [`PREPARE`] request as the spare (replacing any other) and
    /// answers once it waits for its input ([`EXIT`] 0), or with [`FAILED`] when it does not.
    pub fn prepare<W: Write + Send + 'static>(&mut self, payload: &[u8], out: &Arc<Mutex<W>>) {
        if let Some(mut old) = self.spare.take() {
            let _ = old.child.kill();
            let _ = old.child.wait();
        }
        let Ok(command) = String::from_utf8(payload.to_vec()) else {
            return send(out, FAILED, b"command is not UTF-8");
        };
        let mut child = match spawn(&command) {
            Ok(c) => c,
            Err(reason) => return send(out, FAILED, reason.as_bytes()),
        };
        let deadline = util::monotonic_ms() + SPARE_WITHIN_MS;
        loop {
            if waiting_for_input(child.id()) {
                self.spare = Some(Spare { command, child });
                return send(out, EXIT, &0i32.to_le_bytes());
            }
            if !matches!(child.try_wait(), Ok(None)) || util::monotonic_ms() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return send(out, FAILED, b"the spare did not wait for its input");
            }
            util::sleep_ms(2);
        }
    }
}

fn send<W: Write>(out: &Arc<Mutex<W>>, kind: u8, data: &[u8]) {
    if let Ok(mut w) = out.lock() {
        // A host that has gone away is no reason to stop: the command's end still comes,
        // and the next host gets the next request.
        let _ = channel::write_frame(&mut *w, kind, data);
    }
}

/// Whether process `pid` sleeps in read(2) on its standard input (x86-64 syscall 0, fd 0):
/// the shell has exec'd the command and the command waits for its request's input.
fn waiting_for_input(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/syscall")).is_ok_and(|s| s.starts_with("0 0x0 "))
}

/// `/bin/sh -c command` as dropbear runs an exec request: a session of its own, in /root
/// with HOME set, every standard stream a pipe. The error is the reason for a [`FAILED`].
fn spawn(command: &str) -> Result<Child, String> {
    let home = Path::new("/root");
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .env("HOME", home)
        .current_dir(if home.is_dir() { home } else { Path::new("/") })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setsid is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| format!("cannot start /bin/sh: {}", util::io_error_name(&e)))
}

/// Feeds `stdin` to the started command, sends both outputs to `out` as they come, then its
/// status once it has exited and both outputs are closed.
fn finish<W: Write + Send + 'static>(mut child: Child, stdin: Vec<u8>, out: &Arc<Mutex<W>>) {
    let mut input = child.stdin.take().expect("piped");
    let feeder = std::thread::spawn(move || {
        // A command that does not read its input closes the pipe: that is no error.
        let _ = input.write_all(&stdin);
    });
    let pump = |mut from: Box<dyn Read + Send>, kind: u8| {
        let out = out.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 16384];
            loop {
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => send(&out, kind, &buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        })
    };
    let stdout = pump(Box::new(child.stdout.take().expect("piped")), STDOUT);
    let stderr = pump(Box::new(child.stderr.take().expect("piped")), STDERR);
    let status = child
        .wait()
        .map(|s| s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)))
        .unwrap_or(255);
    let _ = stdout.join();
    let _ = stderr.join();
    let _ = feeder.join();
    send(out, EXIT, &status.to_le_bytes());
}

/// The device node of the virtio port named `name`, from sysfs (`/sys/class/virtio-ports`),
/// when the kernel has made it.
pub fn find_port(sysfs: &Path, name: &str) -> Option<std::path::PathBuf> {
    let entries = std::fs::read_dir(sysfs).ok()?;
    for entry in entries.flatten() {
        let found = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if found.trim() == name {
            return Some(Path::new("/dev").join(entry.file_name()));
        }
    }
    None
}

/// Starts the agent on `port` in a session of its own, its output on the console; init
/// (busybox) reaps it if it ever exits.
pub fn start(port: &Path) -> io::Result<()> {
    let console = File::options().write(true).open("/dev/console");
    let mut cmd = Command::new("/bin/crashrig-guest");
    cmd.arg("agent").arg(port).stdin(Stdio::null());
    match console.and_then(|c| Ok((c.try_clone()?, c))) {
        Ok((a, b)) => cmd.stdout(a).stderr(b),
        Err(_) => cmd.stdout(Stdio::null()).stderr(Stdio::null()),
    };
    // SAFETY: as in `serve`.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn().map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_request(command: &str, stdin: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        Agent::default().serve(&channel::exec_payload(command, stdin), &out);
        let bytes = out.lock().unwrap().clone();
        let mut frames = Vec::new();
        let mut r = &bytes[..];
        while let Some(f) = channel::read_frame(&mut r).unwrap() {
            frames.push(f);
        }
        frames
    }

    fn joined(frames: &[(u8, Vec<u8>)], kind: u8) -> String {
        frames
            .iter()
            .filter(|f| f.0 == kind)
            .map(|f| String::from_utf8_lossy(&f.1).into_owned())
            .collect()
    }

    #[test]
    fn a_command_gets_its_stdin_and_sends_both_outputs_then_its_status_last() {
        let frames = run_request("cat; echo oops >&2; exit 3", b"plan text\n");
        assert_eq!(joined(&frames, STDOUT), "plan text\n");
        assert_eq!(joined(&frames, STDERR), "oops\n");
        let last = frames.last().unwrap();
        assert_eq!(last, &(EXIT, 3i32.to_le_bytes().to_vec()));
        assert_eq!(frames.iter().filter(|f| f.0 == EXIT).count(), 1);
    }

    #[test]
    fn a_command_runs_in_a_session_of_its_own_and_a_signal_is_128_plus_it() {
        // ps -o sid is not everywhere: compare the session id with the shell's own pid.
        let frames = run_request(
            "[ \"$(cut -d' ' -f6 /proc/$$/stat)\" = $$ ] && echo leader",
            b"",
        );
        assert_eq!(joined(&frames, STDOUT), "leader\n");
        let frames = run_request("kill -KILL $$", b"");
        assert_eq!(
            frames.last().unwrap(),
            &(EXIT, 137i32.to_le_bytes().to_vec())
        );
    }

    #[test]
    fn a_command_that_ignores_its_input_still_ends() {
        let big = vec![b'x'; 1 << 20];
        let frames = run_request("true", &big);
        assert_eq!(frames.last().unwrap(), &(EXIT, 0i32.to_le_bytes().to_vec()));
    }

    #[test]
    fn a_malformed_request_is_answered_with_a_failure() {
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        Agent::default().serve(&[1, 2], &out);
        let bytes = out.lock().unwrap().clone();
        let (kind, reason) = channel::read_frame(&mut &bytes[..]).unwrap().unwrap();
        assert_eq!(kind, FAILED);
        assert!(String::from_utf8_lossy(&reason).contains("header"));
    }

    fn frames_of(out: &Arc<Mutex<Vec<u8>>>) -> Vec<(u8, Vec<u8>)> {
        let bytes = std::mem::take(&mut *out.lock().unwrap());
        let mut r = &bytes[..];
        let mut frames = Vec::new();
        while let Some(f) = channel::read_frame(&mut r).unwrap() {
            frames.push(f);
        }
        frames
    }

    #[test]
    fn a_spare_waits_for_its_input_and_runs_the_next_request_for_its_command_only() {
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let mut agent = Agent::default();
        // `exec` so the shell's pid is the command's, as busybox sh does for a last command.
        let command = "exec sh -c 'read plan; echo \"$plan from $$\"'";
        agent.prepare(command.as_bytes(), &out);
        assert_eq!(frames_of(&out), vec![(EXIT, 0i32.to_le_bytes().to_vec())]);
        let spare = agent.spare.as_ref().unwrap().child.id();
        assert!(waiting_for_input(spare));
        // Another command does not take it.
        agent.serve(&channel::exec_payload("echo other", b""), &out);
        assert_eq!(joined(&frames_of(&out), STDOUT), "other\n");
        assert!(agent.spare.is_some());
        // Its own command does: the output names the spare's pid.
        agent.serve(&channel::exec_payload(command, b"plan-1\n"), &out);
        assert_eq!(
            joined(&frames_of(&out), STDOUT),
            format!("plan-1 from {spare}\n")
        );
        assert!(agent.spare.is_none());
        // The next one starts a process of its own.
        agent.serve(&channel::exec_payload(command, b"plan-2\n"), &out);
        let text = joined(&frames_of(&out), STDOUT);
        assert!(text.starts_with("plan-2 from ") && text != format!("plan-2 from {spare}\n"));
    }

    #[test]
    fn a_spare_that_never_waits_for_input_is_refused() {
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let mut agent = Agent::default();
        agent.prepare(b"exit 0", &out);
        let frames = frames_of(&out);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].0, FAILED);
        assert!(agent.spare.is_none());
    }

    #[test]
    fn the_port_is_found_by_its_name_in_sysfs() {
        let sys = tempfile::tempdir().unwrap();
        for (dir, name) in [("vport0p0", "other"), ("vport0p1", channel::PORT_NAME)] {
            std::fs::create_dir(sys.path().join(dir)).unwrap();
            std::fs::write(sys.path().join(dir).join("name"), format!("{name}\n")).unwrap();
        }
        assert_eq!(
            find_port(sys.path(), channel::PORT_NAME),
            Some(Path::new("/dev/vport0p1").to_path_buf())
        );
        assert_eq!(find_port(sys.path(), "missing"), None);
        assert_eq!(find_port(&sys.path().join("none"), "x"), None);
    }
}
