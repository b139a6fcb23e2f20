//! A small QMP client: JSON commands over QEMU's monitor socket.

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
        let (r, w) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(r),
            writer: w,
            events: Vec::new(),
            timeout,
        };
        qmp.read_message("greeting").await?;
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    async fn read_message(&mut self, command: &str) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = tokio::time::timeout(self.timeout, self.reader.read_line(&mut line))
            .await
            .map_err(|_| QmpError::Timeout {
                command: command.into(),
                timeout: self.timeout,
            })??;
        if n == 0 {
            return Err(QmpError::Closed);
        }
        serde_json::from_str(&line).map_err(|e| QmpError::Protocol(format!("{e}: {line}")))
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
        self.writer.write_all(text.as_bytes()).await?;
        loop {
            let reply = self.read_message(command).await?;
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
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout_at(deadline, self.reader.read_line(&mut line))
                .await
                .map_err(|_| QmpError::Timeout {
                    command: format!("event {name}"),
                    timeout: within,
                })??;
            if n == 0 {
                return Err(QmpError::Closed);
            }
            let msg: Value = serde_json::from_str(&line)
                .map_err(|e| QmpError::Protocol(format!("{e}: {line}")))?;
            if msg["event"] == name && pred(&msg["data"]) {
                return Ok(msg);
            }
            self.events.push(msg);
        }
    }
}
