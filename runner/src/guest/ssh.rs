//! SSH transport to the guest's dropbear, through the `ssh2` crate (libssh2). ssh2 blocks, so
//! every call runs on tokio's blocking pool with `Session::set_timeout` as its bound.
//! [`GuestHandle`] carries commands over SSH or over the agent channel ([`super::agent`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ssh_key::{Algorithm, LineEnding, PrivateKey};

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("cannot make an SSH key pair")]
    KeyGen(#[source] ssh_key::Error),
    #[error("cannot connect to 127.0.0.1:{port}")]
    Connect {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("SSH handshake with the guest failed")]
    Handshake(#[source] ssh2::Error),
    #[error("the guest's SSH host key is not the image's ({got}); refusing to talk to it")]
    HostKey { got: String },
    #[error("SSH public-key authentication as root failed")]
    Auth(#[source] ssh2::Error),
    #[error("open an SSH channel for `{command}`")]
    Channel {
        command: String,
        #[source]
        source: ssh2::Error,
    },
    #[error("cannot run `{command}` in the guest")]
    Exec {
        command: String,
        #[source]
        source: ssh2::Error,
    },
    #[error("`{command}` in the guest did not finish within {timeout:.1?}")]
    Timeout { command: String, timeout: Duration },
    #[error("SSH I/O with the guest failed during `{command}`")]
    Io {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the SSH worker thread failed: {0}")]
    Join(String),
    #[error("the agent channel to the guest failed during `{command}`")]
    Agent {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent channel closed during `{command}`: QEMU or the guest's agent is gone")]
    AgentClosed { command: String },
    #[error("the guest's agent could not run `{command}`: {reason}")]
    AgentRefused { command: String, reason: String },
    #[error("the agent channel is out of step after an earlier command timed out")]
    AgentOutOfStep,
}

impl GuestError {
    /// Whether the failure came before the command was sent: running it again is safe.
    pub fn before_command(&self) -> bool {
        matches!(
            self,
            GuestError::Connect { .. } | GuestError::Channel { .. } | GuestError::AgentOutOfStep
        )
    }
}

/// Longest wait for one SSH protocol exchange (channel open, exec request, EOF) before the
/// output loop. A loaded host can take seconds; the plan's own deadline still bounds the whole.
const STAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// A key pair made for one run; the public half goes to the guest on the kernel command line.
#[derive(Clone)]
pub struct RunKey {
    private_pem: String,
    public_b64: String,
}

impl RunKey {
    pub fn generate() -> Result<RunKey, GuestError> {
        let key = PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519)
            .map_err(GuestError::KeyGen)?;
        let private_pem = key.to_openssh(LineEnding::LF).map_err(GuestError::KeyGen)?;
        RunKey::from_openssh(&private_pem)
    }

    /// The base64 public key blob (for `crashrig_key=` on the guest command line).
    pub fn public_b64(&self) -> &str {
        &self.public_b64
    }

    /// The private key in OpenSSH format: what a saved guest that trusts this key is stored
    /// with (`run::restore`).
    pub fn private_openssh(&self) -> &str {
        &self.private_pem
    }

    /// The key pair from its private half in OpenSSH format.
    pub fn from_openssh(private_pem: &str) -> Result<RunKey, GuestError> {
        let key = PrivateKey::from_openssh(private_pem).map_err(GuestError::KeyGen)?;
        let public = key.public_key().to_openssh().map_err(GuestError::KeyGen)?;
        let public_b64 = public
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        Ok(RunKey {
            private_pem: private_pem.to_string(),
            public_b64,
        })
    }
}

/// The output of one command.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A connected, authenticated session.
pub struct Guest {
    session: ssh2::Session,
}

impl Guest {
    /// One connection attempt with `timeout` for each stage.
    pub fn connect(
        port: u16,
        key: &RunKey,
        host_key: &str,
        timeout: Duration,
    ) -> Result<Guest, GuestError> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let tcp = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|source| GuestError::Connect { port, source })?;
        tcp.set_nodelay(true).ok();
        let mut session = ssh2::Session::new().map_err(GuestError::Handshake)?;
        session.set_tcp_stream(tcp);
        session.set_timeout(timeout.as_millis() as u32);
        session.handshake().map_err(GuestError::Handshake)?;
        let expected = host_key.split_whitespace().nth(1).unwrap_or_default();
        let got = session
            .host_key()
            .map(|(bytes, _)| base64::engine::general_purpose::STANDARD.encode(bytes))
            .unwrap_or_default();
        if got != expected {
            return Err(GuestError::HostKey { got });
        }
        session
            .userauth_pubkey_memory("root", None, &key.private_pem, None)
            .map_err(GuestError::Auth)?;
        Ok(Guest { session })
    }

    /// Runs `command` with `stdin`, calling `on_line` for every stdout line as it arrives.
    pub fn exec_streaming(
        &self,
        command: &str,
        stdin: &[u8],
        timeout: Duration,
        mut on_line: impl FnMut(&str),
    ) -> Result<ExecOutput, GuestError> {
        let deadline = Instant::now() + timeout;
        let exec_err = |source| GuestError::Exec {
            command: command.into(),
            source,
        };
        let io_err = |source| GuestError::Io {
            command: command.into(),
            source,
        };
        // Opening the channel and sending the command get a generous bound of their own: a
        // short one made a slow guest on a loaded host look like a dead one.
        let stage = STAGE_TIMEOUT.min(timeout).max(Duration::from_secs(1));
        self.session.set_timeout(stage.as_millis() as u32);
        let mut channel = self
            .session
            .channel_session()
            .map_err(|source| GuestError::Channel {
                command: command.into(),
                source,
            })?;
        channel.exec(command).map_err(exec_err)?;
        if !stdin.is_empty() {
            channel.write_all(stdin).map_err(io_err)?;
        }
        channel.send_eof().map_err(exec_err)?;
        // Reads wake up at least every 500 ms so the deadline is checked.
        self.session.set_timeout(500);
        let mut stdout = Vec::new();
        let mut line_start = 0;
        let mut buf = [0u8; 8192];
        loop {
            match channel.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    stdout.extend_from_slice(&buf[..n]);
                    while let Some(pos) = stdout[line_start..].iter().position(|&b| b == b'\n') {
                        let line = String::from_utf8_lossy(&stdout[line_start..line_start + pos])
                            .into_owned();
                        on_line(&line);
                        line_start += pos + 1;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut || is_timeout(&e) => {}
                Err(e) => return Err(io_err(e)),
            }
            if Instant::now() > deadline {
                return Err(GuestError::Timeout {
                    command: command.into(),
                    timeout,
                });
            }
        }
        self.session.set_timeout(stage.as_millis() as u32);
        let mut stderr = String::new();
        let _ = channel.stderr().read_to_string(&mut stderr);
        let _ = channel.wait_close();
        let status = channel.exit_status().map_err(exec_err)?;
        Ok(ExecOutput {
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr,
        })
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    // libssh2 reports its own timeout as LIBSSH2_ERROR_TIMEOUT wrapped in an io::Error.
    e.to_string().contains("Timed out")
        || e.to_string().contains("timed out")
        || e.kind() == std::io::ErrorKind::WouldBlock
}

/// How commands reach one guest.
enum Transport {
    Ssh(Guest),
    Agent(super::agent::Agent),
}

/// A shareable handle the async shell moves into blocking tasks: commands over an SSH
/// session, or over the agent channel (a restored guest's: no handshake).
#[derive(Clone)]
pub struct GuestHandle(Arc<std::sync::Mutex<Transport>>);

impl GuestHandle {
    pub fn new(g: Guest) -> Self {
        GuestHandle(Arc::new(std::sync::Mutex::new(Transport::Ssh(g))))
    }

    /// Commands over the agent channel.
    pub fn agent(a: super::agent::Agent) -> Self {
        GuestHandle(Arc::new(std::sync::Mutex::new(Transport::Agent(a))))
    }

    /// Over the agent channel, has the guest start `command` ahead as a spare for its next
    /// request of it ([`super::agent::Agent::prepare`]); over SSH there is nothing to do.
    pub async fn prepare(&self, command: String, timeout: Duration) -> Result<(), GuestError> {
        let g = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let mut guest = g.lock().map_err(|e| GuestError::Join(e.to_string()))?;
            match &mut *guest {
                Transport::Ssh(_) => Ok(()),
                Transport::Agent(agent) => agent.prepare(&command, timeout),
            }
        })
        .await
        .map_err(|e| GuestError::Join(e.to_string()))?
    }

    /// "ssh" or "agent": which way commands go (for reports).
    pub fn transport(&self) -> &'static str {
        match self.0.lock().as_deref() {
            Ok(Transport::Agent(_)) => "agent",
            _ => "ssh",
        }
    }

    /// Runs a command on the blocking pool; `on_line` gets each stdout line.
    pub async fn exec(
        &self,
        command: String,
        stdin: Vec<u8>,
        timeout: Duration,
        on_line: impl FnMut(&str) + Send + 'static,
    ) -> Result<ExecOutput, GuestError> {
        let g = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let mut guest = g.lock().map_err(|e| GuestError::Join(e.to_string()))?;
            match &mut *guest {
                Transport::Ssh(ssh) => ssh.exec_streaming(&command, &stdin, timeout, on_line),
                Transport::Agent(agent) => agent.exec_streaming(&command, &stdin, timeout, on_line),
            }
        })
        .await
        .map_err(|e| GuestError::Join(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_keys_are_fresh_ed25519_pairs() {
        let a = RunKey::generate().unwrap();
        let b = RunKey::generate().unwrap();
        assert_ne!(a.public_b64(), b.public_b64());
        assert!(
            a.public_b64().starts_with("AAAAC3NzaC1lZDI1NTE5"),
            "{}",
            a.public_b64()
        );
        assert!(a
            .private_pem
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    }

    #[test]
    fn a_stored_private_key_gives_back_the_same_pair() {
        let a = RunKey::generate().unwrap();
        let b = RunKey::from_openssh(a.private_openssh()).unwrap();
        assert_eq!(a.public_b64(), b.public_b64());
        assert!(RunKey::from_openssh("not a key").is_err());
    }
}
