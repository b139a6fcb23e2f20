//! Child processes of a build: each in its own process group, output drained line by line,
//! killed (the whole group) when the build is cancelled.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use super::KernelError;

/// How many trailing output lines a failed command's error carries.
const TAIL_LINES: usize = 20;

/// Runs a build's commands; `cancel` set from another thread kills the running one.
#[derive(Debug, Clone, Default)]
pub struct Exec {
    pub cancel: Arc<AtomicBool>,
}

/// Kills the child's process group when dropped before the child was reaped.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: kill(2) with a negative pid signals the process group we created.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

fn reader(
    stream: impl Read + Send + 'static,
    tx: mpsc::Sender<String>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    })
}

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

impl Exec {
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Runs `cmd`, passing every output line (stdout and stderr interleaved) to `on_line`.
    /// A non-zero exit is [`KernelError::Command`] with the last output lines.
    pub fn run(&self, cmd: &mut Command, on_line: &mut dyn FnMut(&str)) -> Result<(), KernelError> {
        use std::os::unix::process::CommandExt;
        let command = describe(cmd);
        if self.cancelled() {
            return Err(KernelError::Cancelled);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|source| KernelError::Spawn {
                command: command.clone(),
                source,
            })?;
        let mut guard = GroupGuard(Some(child.id() as i32));
        let (tx, rx) = mpsc::channel();
        let readers = [
            reader(child.stdout.take().expect("piped"), tx.clone()),
            reader(child.stderr.take().expect("piped"), tx),
        ];
        let mut tail: std::collections::VecDeque<String> = Default::default();
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    on_line(&line);
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if self.cancelled() {
                // SIGTERM first: make deletes the half-written target it is building (a
                // truncated .o with a fresh mtime would poison the next incremental build)
                // SAFETY: kill(2) on the process group we created.
                unsafe {
                    libc::kill(-(child.id() as i32), libc::SIGTERM);
                }
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while std::time::Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                drop(guard);
                let _ = child.wait();
                return Err(KernelError::Cancelled);
            }
        }
        for r in readers {
            let _ = r.join();
        }
        let status = child.wait().map_err(|source| KernelError::Spawn {
            command: command.clone(),
            source,
        })?;
        guard.0 = None;
        if status.success() {
            Ok(())
        } else {
            Err(KernelError::Command {
                command,
                output: Vec::from(tail).join("\n"),
            })
        }
    }

    /// Runs `cmd` and returns its stdout (trimmed); stderr goes into the error.
    pub fn output(&self, cmd: &mut Command) -> Result<String, KernelError> {
        let command = describe(cmd);
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|source| KernelError::Spawn {
                command: command.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(KernelError::Command {
                command,
                output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_streamed_and_failures_carry_the_tail() {
        let exec = Exec::default();
        let mut seen = Vec::new();
        let err = exec
            .run(
                Command::new("sh").args(["-c", "echo one; echo two >&2; exit 3"]),
                &mut |l| seen.push(l.to_string()),
            )
            .unwrap_err();
        seen.sort();
        assert_eq!(seen, ["one", "two"]);
        match err {
            KernelError::Command { command, output } => {
                assert_eq!(command, "sh -c echo one; echo two >&2; exit 3");
                assert!(output.contains("one") && output.contains("two"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn cancel_kills_the_process_group() {
        let exec = Exec::default();
        let flag = exec.cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            flag.store(true, Ordering::Relaxed);
        });
        let start = std::time::Instant::now();
        let err = exec
            .run(
                Command::new("sh").args(["-c", "sleep 30 & sleep 30"]),
                &mut |_| {},
            )
            .unwrap_err();
        assert!(matches!(err, KernelError::Cancelled));
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
