//! The agent channel's host end: commands to `crashrig-guest agent` over the guest's
//! virtio-serial port (wire format: `crashrig_guest::channel`). QEMU connects the port to a
//! Unix socket of crashrig's as it starts ([`crate::vm::Vm::take_agent`]); no network, no key
//! exchange, so a restored guest answers its first command without the SSH handshake that
//! took most of a restore under TCG.
//!
//! Blocking, like the SSH transport: calls run on tokio's blocking pool.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crashrig_guest::channel::{self, FrameBuf, EXEC, EXIT, FAILED, PREPARE, STDERR, STDOUT};

use super::ssh::{ExecOutput, GuestError};

/// Longest wait to hand a request to QEMU (the socket buffer is full only when the guest does
/// not read).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads wake up this often so the deadline is checked.
const POLL: Duration = Duration::from_millis(500);

/// crashrig's end of one guest's agent channel.
pub struct Agent {
    stream: UnixStream,
    /// A command was left running (its deadline passed) or its stream broke: what comes next
    /// on the channel may be its output, so no other command is sent.
    out_of_step: bool,
}

impl Agent {
    pub fn new(stream: UnixStream) -> Agent {
        Agent {
            stream,
            out_of_step: false,
        }
    }

    /// Has the guest start `command` now, as a spare its next request for `command` runs on
    /// (see `crashrig-guest agent`): asked for before a guest is saved, so that its restores
    /// start no process for their first plan.
    pub fn prepare(&mut self, command: &str, timeout: Duration) -> Result<(), GuestError> {
        self.request(PREPARE, command.as_bytes(), command, timeout, |_| {})
            .map(drop)
    }

    /// Runs `command` with `stdin`, calling `on_line` for every stdout line as it arrives.
    pub fn exec_streaming(
        &mut self,
        command: &str,
        stdin: &[u8],
        timeout: Duration,
        on_line: impl FnMut(&str),
    ) -> Result<ExecOutput, GuestError> {
        let payload = channel::exec_payload(command, stdin);
        self.request(EXEC, &payload, command, timeout, on_line)
    }

    /// Sends one request and reads its answer up to the end frame.
    fn request(
        &mut self,
        kind: u8,
        payload: &[u8],
        command: &str,
        timeout: Duration,
        mut on_line: impl FnMut(&str),
    ) -> Result<ExecOutput, GuestError> {
        if self.out_of_step {
            return Err(GuestError::AgentOutOfStep);
        }
        // Until the end frame arrives, a failure leaves the channel in an unknown state.
        self.out_of_step = true;
        let deadline = Instant::now() + timeout;
        let io_err = |source| GuestError::Agent {
            command: command.into(),
            source,
        };
        let request = channel::frame(kind, payload);
        self.stream
            .set_write_timeout(Some(SEND_TIMEOUT.min(timeout).max(Duration::from_secs(1))))
            .map_err(io_err)?;
        self.stream.write_all(&request).map_err(io_err)?;
        self.stream.set_read_timeout(Some(POLL)).map_err(io_err)?;
        let mut frames = FrameBuf::default();
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut line_start = 0;
        let mut buf = vec![0u8; 65536];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    return Err(GuestError::AgentClosed {
                        command: command.into(),
                    })
                }
                Ok(n) => frames.push(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(io_err(e)),
            }
            while let Some((kind, payload)) = frames.next_frame().map_err(io_err)? {
                match kind {
                    STDOUT => {
                        stdout.extend_from_slice(&payload);
                        while let Some(pos) = stdout[line_start..].iter().position(|&b| b == b'\n')
                        {
                            on_line(&String::from_utf8_lossy(
                                &stdout[line_start..line_start + pos],
                            ));
                            line_start += pos + 1;
                        }
                    }
                    STDERR => stderr.extend_from_slice(&payload),
                    EXIT => {
                        let status = payload
                            .get(..4)
                            .map_or(255, |b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                        self.out_of_step = frames.pending() != 0;
                        return Ok(ExecOutput {
                            status,
                            stdout: String::from_utf8_lossy(&stdout).into_owned(),
                            stderr: String::from_utf8_lossy(&stderr).into_owned(),
                        });
                    }
                    FAILED => {
                        self.out_of_step = frames.pending() != 0;
                        return Err(GuestError::AgentRefused {
                            command: command.into(),
                            reason: String::from_utf8_lossy(&payload).into_owned(),
                        });
                    }
                    // Unknown kinds are from a newer helper: skipped.
                    _ => {}
                }
            }
            if Instant::now() > deadline {
                return Err(GuestError::Timeout {
                    command: command.into(),
                    timeout,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest's agent that answers each request with `reply(command, stdin)`'s frames.
    fn fake_guest(
        reply: impl Fn(&str, &[u8]) -> Vec<Vec<u8>> + Send + 'static,
    ) -> (Agent, std::thread::JoinHandle<()>) {
        let (host, mut guest) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            while let Ok(Some((kind, payload))) = channel::read_frame(&mut guest) {
                assert_eq!(kind, EXEC);
                let (command, stdin) = channel::parse_exec(&payload).unwrap();
                for piece in reply(&command, stdin) {
                    if guest.write_all(&piece).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        (Agent::new(host), t)
    }

    #[test]
    fn output_split_across_frames_and_reads_comes_back_as_lines_with_the_status() {
        let (mut agent, _t) = fake_guest(|command, stdin| {
            if command == "true" {
                return vec![channel::frame(EXIT, &0i32.to_le_bytes())];
            }
            assert_eq!(command, "crashrig-guest exec");
            let mut all = channel::frame(STDOUT, b"{\"a\":1}\n{\"b\"");
            all.extend(channel::frame(STDERR, b"warning\n"));
            all.extend(channel::frame(STDOUT, &[b":2}\n", stdin].concat()));
            all.extend(channel::frame(EXIT, &7i32.to_le_bytes()));
            // Delivered in pieces that cut frames anywhere.
            all.chunks(3).map(<[u8]>::to_vec).collect()
        });
        let mut lines = Vec::new();
        let out = agent
            .exec_streaming(
                "crashrig-guest exec",
                b"tail",
                Duration::from_secs(10),
                |l| lines.push(l.to_string()),
            )
            .unwrap();
        assert_eq!(lines, vec!["{\"a\":1}", "{\"b\":2}"]);
        assert_eq!(out.status, 7);
        assert_eq!(out.stdout, "{\"a\":1}\n{\"b\":2}\ntail");
        assert_eq!(out.stderr, "warning\n");
        // The channel is in step: the next command runs.
        assert_eq!(
            agent
                .exec_streaming("true", b"", Duration::from_secs(10), |_| {})
                .unwrap()
                .status,
            0
        );
    }

    #[test]
    fn a_prepare_request_carries_the_command_alone_and_a_refusal_is_an_error() {
        let (host, mut guest) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let (kind, payload) = channel::read_frame(&mut guest).unwrap().unwrap();
            assert_eq!(
                (kind, payload.as_slice()),
                (PREPARE, &b"crashrig-guest exec"[..])
            );
            channel::write_frame(&mut guest, EXIT, &0i32.to_le_bytes()).unwrap();
            let (kind, _) = channel::read_frame(&mut guest).unwrap().unwrap();
            assert_eq!(kind, PREPARE);
            channel::write_frame(&mut guest, FAILED, b"the spare did not wait").unwrap();
        });
        let mut agent = Agent::new(host);
        agent
            .prepare("crashrig-guest exec", Duration::from_secs(5))
            .unwrap();
        let err = agent.prepare("exit 0", Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("the spare did not wait"), "{err}");
        t.join().unwrap();
    }

    #[test]
    fn a_command_past_its_deadline_times_out_and_the_channel_takes_no_other() {
        // The command's first output is already on the channel when it is sent: a fake guest
        // thread that a loaded host runs only after the deadline would leave no line to see.
        let (host, mut guest) = UnixStream::pair().unwrap();
        guest
            .write_all(&channel::frame(STDOUT, b"started\n"))
            .unwrap();
        let mut agent = Agent::new(host);
        let mut lines = Vec::new();
        let err = agent
            .exec_streaming("sleep 100", b"", Duration::from_millis(300), |l| {
                lines.push(l.to_string())
            })
            .unwrap_err();
        assert!(matches!(err, GuestError::Timeout { .. }), "{err}");
        assert_eq!(lines, vec!["started"]);
        let err = agent
            .exec_streaming("true", b"", Duration::from_secs(1), |_| {})
            .unwrap_err();
        assert!(matches!(err, GuestError::AgentOutOfStep));
        assert!(err.before_command());
        // The request reached the guest's end (it was open all along).
        let (kind, _) = channel::read_frame(&mut guest).unwrap().unwrap();
        assert_eq!(kind, EXEC);
    }

    #[test]
    fn a_closed_channel_and_a_refused_command_are_told_apart() {
        // The fake guest goes away at the next request: its end is closed at once. (A panic
        // closed it only after the panic message, a backtrace with RUST_BACKTRACE=1, which a
        // loaded host took longer than the command's 5 s to print.)
        let (host, mut guest) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let (_, payload) = channel::read_frame(&mut guest).unwrap().unwrap();
            assert_eq!(channel::parse_exec(&payload).unwrap().0, "bad");
            channel::write_frame(&mut guest, FAILED, b"cannot start /bin/sh: ENOENT").unwrap();
            let (_, payload) = channel::read_frame(&mut guest).unwrap().unwrap();
            channel::parse_exec(&payload).unwrap().0.to_string()
        });
        let mut agent = Agent::new(host);
        let err = agent
            .exec_streaming("bad", b"", Duration::from_secs(5), |_| {})
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("could not run `bad`: cannot start /bin/sh"),
            "{err}"
        );
        let err = agent
            .exec_streaming("anything", b"", Duration::from_secs(5), |_| {})
            .unwrap_err();
        assert!(matches!(err, GuestError::AgentClosed { .. }), "{err}");
        assert_eq!(t.join().unwrap(), "anything");
    }
}
