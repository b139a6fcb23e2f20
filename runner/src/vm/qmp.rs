//! A small QMP client: JSON commands over QEMU's monitor socket.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to the QMP socket {path}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP connection failed")]
    Io(#[from] std::io::Error),
    #[error("QEMU did not answer `{command}` within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    #[error("QEMU closed the QMP connection")]
    Closed,
    #[error("QMP `{command}` failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("QEMU sent invalid QMP JSON: {0}")]
    Protocol(String),
}

pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    /// The message being read: kept here, not in the read's future, so a read cancelled
    /// mid-line (a `select!` watching for an event) loses nothing.
    line: Vec<u8>,
    writer: OwnedWriteHalf,
    /// Asynchronous events seen while waiting for command replies (DEVICE_DELETED, ...).
    pub events: Vec<Value>,
    timeout: Duration,
}

impl Qmp {
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        Qmp::handshake(stream, timeout).await
    }

    /// Reads the greeting and negotiates capabilities on a connected monitor.
    async fn handshake(stream: UnixStream, timeout: Duration) -> Result<Qmp, QmpError> {
        let (r, w) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(r),
            line: Vec::new(),
            writer: w,
            events: Vec::new(),
            timeout,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        qmp.read_message("greeting", deadline, timeout).await?;
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Reads one message, waiting at most until `deadline` (`within` names that bound in the
    /// error).
    async fn read_message(
        &mut self,
        command: &str,
        deadline: tokio::time::Instant,
        within: Duration,
    ) -> Result<Value, QmpError> {
        // read_until appends what it read before a cancellation to `self.line`.
        let n = tokio::time::timeout_at(deadline, self.reader.read_until(b'\n', &mut self.line))
            .await
            .map_err(|_| QmpError::Timeout {
                command: command.into(),
                timeout: within,
            })??;
        if n == 0 {
            return Err(QmpError::Closed);
        }
        let line = std::mem::take(&mut self.line);
        serde_json::from_slice(&line).map_err(|e| {
            QmpError::Protocol(format!(
                "{e}: {}",
                String::from_utf8_lossy(&line).trim_end()
            ))
        })
    }

    /// Runs a command and returns its `return` value; events that arrive meanwhile are kept.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": command });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let mut text = msg.to_string();
        text.push('\n');
        // One deadline for the whole command: writing it, then reading past any events.
        let deadline = tokio::time::Instant::now() + self.timeout;
        tokio::time::timeout_at(deadline, self.writer.write_all(text.as_bytes()))
            .await
            .map_err(|_| QmpError::Timeout {
                command: command.into(),
                timeout: self.timeout,
            })??;
        self.read_reply(command, deadline).await
    }

    /// Hands QEMU an open file under `name` (QMP `getfd`, the descriptor travelling as
    /// SCM_RIGHTS), for commands that take `fd:NAME` (`migrate`, `migrate-incoming`). No host
    /// shell ever sees a path this way.
    pub async fn send_fd(&mut self, name: &str, fd: BorrowedFd<'_>) -> Result<(), QmpError> {
        let mut text = json!({ "execute": "getfd", "arguments": { "fdname": name } }).to_string();
        text.push('\n');
        let stream: &UnixStream = self.writer.as_ref();
        loop {
            stream.writable().await?;
            match stream.try_io(tokio::io::Interest::WRITABLE, || {
                send_with_fd(stream.as_raw_fd(), text.as_bytes(), fd.as_raw_fd())
            }) {
                Ok(n) if n == text.len() => break,
                Ok(n) => {
                    return Err(QmpError::Protocol(format!(
                        "getfd: only {n} of {} bytes sent",
                        text.len()
                    )))
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        self.read_reply("getfd", deadline).await.map(|_| ())
    }

    /// Reads until the reply to `command`, keeping events, until `deadline`: the command's,
    /// for all of it, so a stream of events does not postpone it.
    async fn read_reply(
        &mut self,
        command: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Value, QmpError> {
        loop {
            let reply = self.read_message(command, deadline, self.timeout).await?;
            if reply.get("event").is_some() {
                self.events.push(reply);
                continue;
            }
            if let Some(err) = reply.get("error") {
                return Err(QmpError::Command {
                    command: command.into(),
                    class: err["class"].as_str().unwrap_or("?").into(),
                    desc: err["desc"].as_str().unwrap_or("?").into(),
                });
            }
            return Ok(reply.get("return").cloned().unwrap_or(Value::Null));
        }
    }

    /// Waits (bounded) for an event with the given name whose data matches `pred`.
    pub async fn wait_event(
        &mut self,
        name: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value, QmpError> {
        if let Some(pos) = self
            .events
            .iter()
            .position(|e| e["event"] == name && pred(&e["data"]))
        {
            return Ok(self.events.remove(pos));
        }
        let deadline = tokio::time::Instant::now() + within;
        let what = format!("event {name}");
        loop {
            let msg = self.read_message(&what, deadline, within).await?;
            if msg["event"] == name && pred(&msg["data"]) {
                return Ok(msg);
            }
            self.events.push(msg);
        }
    }
}

/// One sendmsg(2) of `bytes` with `fd` attached as SCM_RIGHTS.
fn send_with_fd(socket: i32, bytes: &[u8], fd: i32) -> std::io::Result<usize> {
    let fd_len = std::mem::size_of::<libc::c_int>() as u32;
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_len) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call, and
    // the control buffer is CMSG_SPACE bytes, room for exactly one descriptor.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_len) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::c_int, fd);
        let n = libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL);
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::fd::{FromRawFd, OwnedFd};

    /// A fake QEMU on the other end of a socket pair: greets, accepts capabilities, then
    /// answers nothing and streams an event every 20 ms.
    async fn chatty_peer(peer: UnixStream) {
        let (r, mut w) = peer.into_split();
        let mut lines = BufReader::new(r).lines();
        let greeting = r#"{"QMP": {"version": {}, "capabilities": []}}"#;
        w.write_all(format!("{greeting}\n").as_bytes())
            .await
            .unwrap();
        lines.next_line().await.unwrap(); // qmp_capabilities
        w.write_all(b"{\"return\": {}}\n").await.unwrap();
        let event = r#"{"event": "RTC_CHANGE", "data": {"offset": 0}, "timestamp": {}}"#;
        loop {
            if w.write_all(format!("{event}\n").as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_stream_of_events_does_not_postpone_a_command_deadline() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let peer = tokio::spawn(chatty_peer(theirs));
        let timeout = Duration::from_millis(300);
        let mut qmp = Qmp::handshake(ours, timeout).await.unwrap();
        let started = std::time::Instant::now();
        let result =
            tokio::time::timeout(Duration::from_secs(10), qmp.execute("query-status", None))
                .await
                .expect("execute returned at its own deadline, not after the guard's 10 s");
        match result {
            Err(QmpError::Timeout {
                command,
                timeout: t,
            }) => {
                assert_eq!(command, "query-status");
                assert_eq!(t, timeout);
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(started.elapsed() >= timeout);
        assert!(!qmp.events.is_empty(), "the events were read and kept");
        peer.abort();
    }

    #[tokio::test]
    async fn a_wait_for_an_event_cancelled_mid_message_loses_nothing() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (r, mut w) = theirs.into_split();
        let peer = tokio::spawn(async move {
            let mut lines = BufReader::new(r).lines();
            w.write_all(b"{\"QMP\": {}}\n").await.unwrap();
            lines.next_line().await.unwrap();
            w.write_all(b"{\"return\": {}}\n").await.unwrap();
            w
        });
        let mut qmp = Qmp::handshake(ours, Duration::from_secs(5)).await.unwrap();
        let mut w = peer.await.unwrap();
        let event = br#"{"event": "VSERPORT_CHANGE", "data": {"id": "agent-port", "open": false}}"#;
        let (head, tail) = event.split_at(30);
        w.write_all(head).await.unwrap();
        // A watcher cancelled while the message is half read (a select! another branch won).
        let closed = |d: &Value| d["open"] == false;
        let cut = tokio::time::timeout(
            Duration::from_millis(200),
            qmp.wait_event("VSERPORT_CHANGE", Duration::from_secs(5), closed),
        )
        .await;
        assert!(cut.is_err(), "the event was not complete yet: {cut:?}");
        w.write_all(tail).await.unwrap();
        w.write_all(b"\n").await.unwrap();
        let got = qmp
            .wait_event("VSERPORT_CHANGE", Duration::from_secs(5), closed)
            .await
            .unwrap();
        assert_eq!(got["data"]["id"], "agent-port");
    }

    #[test]
    fn a_descriptor_sent_with_a_message_arrives_open_on_the_other_side() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"state").unwrap();
        file.rewind().unwrap();
        let n = send_with_fd(a.as_raw_fd(), b"hello\n", file.as_raw_fd()).unwrap();
        assert_eq!(n, 6);
        drop(file);

        let mut buf = [0u8; 16];
        let mut control = vec![0u8; 64];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: test-only recvmsg into local buffers.
        let received = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = control.len() as _;
            let n = libc::recvmsg(b.as_raw_fd(), &mut msg, 0);
            assert_eq!(n, 6);
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            assert!(!cmsg.is_null());
            assert_eq!((*cmsg).cmsg_type, libc::SCM_RIGHTS);
            OwnedFd::from_raw_fd(std::ptr::read_unaligned(
                libc::CMSG_DATA(cmsg) as *const libc::c_int
            ))
        };
        assert_eq!(&buf[..6], b"hello\n");
        let mut text = String::new();
        std::fs::File::from(received)
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "state");
    }
}
