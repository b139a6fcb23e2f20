//! Child processes of a build, through the process layer: each in its own process group, output
//! drained line by line, a deadline, killed (the whole group) when the build is cancelled.

use std::collections::VecDeque;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::KernelError;
use crate::process::{ProcessError, Tool};

/// How many trailing output lines a failed command's error carries.
const TAIL_LINES: usize = 20;

/// Deadline of one build command (make of a whole kernel under a loaded host, a clone, a
/// source unpack).
const RUN_LIMIT: Duration = Duration::from_secs(6 * 60 * 60);

/// Deadline of a query (`git rev-parse`, `apt-cache show`, `gcc --version`).
const OUTPUT_LIMIT: Duration = Duration::from_secs(10 * 60);

/// Runs a build's commands; `cancel` set from another thread kills the running one.
#[derive(Debug, Clone, Default)]
pub struct Exec {
    pub cancel: Arc<AtomicBool>,
}

use crate::process::describe;

pub(super) fn process_error(e: ProcessError) -> KernelError {
    match e {
        ProcessError::Spawn { command, source } => KernelError::Spawn { command, source },
        ProcessError::Cancelled { .. } => KernelError::Cancelled,
        e @ (ProcessError::Timeout { .. } | ProcessError::Wait { .. }) => KernelError::Command {
            command: match &e {
                ProcessError::Timeout { command, .. } | ProcessError::Wait { command, .. } => {
                    command.clone()
                }
                _ => String::new(),
            },
            output: crate::report::error_chain(&e),
        },
    }
}

impl Exec {
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Runs `cmd`, passing every output line (stdout and stderr interleaved) to `on_line`.
    /// A non-zero exit is [`KernelError::Command`] with the last output lines. Cancelling
    /// sends SIGTERM first: make deletes the half-written target it is building (a truncated
    /// .o with a fresh mtime would poison the next incremental build).
    pub fn run(&self, cmd: &mut Command, on_line: &mut dyn FnMut(&str)) -> Result<(), KernelError> {
        let command = describe(cmd);
        let mut tail: VecDeque<String> = VecDeque::new();
        let out = Tool::new(cmd, RUN_LIMIT)
            .cancel(self.cancel.clone())
            .run(&mut |_, line| {
                on_line(line);
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line.to_string());
            })
            .map_err(process_error)?;
        if out.status.success() {
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
        let out = Tool::new(cmd, OUTPUT_LIMIT)
            .cancel(self.cancel.clone())
            .output()
            .map_err(process_error)?;
        if !out.status.success() {
            return Err(KernelError::Command {
                command,
                output: out.stderr_text().trim().to_string(),
            });
        }
        Ok(out.stdout_text().trim().to_string())
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
        use crate::process::test_pids::{wait_gone, wait_pids};
        let exec = Exec::default();
        let flag = exec.cancel.clone();
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        // The shell and its background child: both must die, not only the one waited for.
        let script = format!(
            "sleep 30 & echo $! >> {0}; echo $$ >> {0}; wait",
            pids.display()
        );
        let watcher = std::thread::spawn({
            let pids = pids.clone();
            move || {
                let found = wait_pids(&pids, 2, Duration::from_secs(60));
                flag.store(true, Ordering::Relaxed);
                found
            }
        });
        let err = exec
            .run(Command::new("sh").args(["-c", &script]), &mut |_| {})
            .unwrap_err();
        assert!(matches!(err, KernelError::Cancelled), "{err:?}");
        let found = watcher.join().unwrap();
        assert_eq!(found.len(), 2, "the shell wrote its pids: {found:?}");
        assert_eq!(
            wait_gone(&found, Duration::from_secs(10)),
            Vec::<i32>::new()
        );
    }
}
