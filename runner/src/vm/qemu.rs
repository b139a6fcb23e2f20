//! The QEMU process: command line, console capture, accelerator probe, polite and abrupt stops.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;

use super::qmp::{Qmp, QmpError};
use crate::host::{self, MissingTool};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// `--accel` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelChoice {
    /// KVM when the kernel boots under it within 15 s, else TCG.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    MissingTool(#[from] MissingTool),
    #[error("cannot start QEMU")]
    Spawn(#[source] std::io::Error),
    #[error("cannot create {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU exited at start ({status}): {stderr}")]
    EarlyExit { status: String, stderr: String },
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error("use KVM, which was asked for")]
    KvmUnusable(#[source] Box<VmError>),
    #[error("open /dev/kvm")]
    KvmDevice(#[source] std::io::Error),
    #[error("boot a bare {accel} guest: QEMU exited with {status}: {stderr}")]
    BareExit {
        accel: Accel,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("boot a bare {accel} guest and power it off within {within:?} (nested KVM?)")]
    BareTimeout { accel: Accel, within: Duration },
    #[error("wait for QEMU")]
    Wait(#[source] std::io::Error),
}

#[derive(Debug, Clone)]
pub struct Disk {
    /// virtio-blk serial; the guest finds the disk by it. Also the QEMU device id suffix.
    pub serial: String,
    pub path: PathBuf,
    pub read_only: bool,
    pub format: DiskFormat,
}

/// How a disk file is laid out. Scratch disks are raw; restored guests get qcow2 overlays
/// over a frozen base (see `vm::snapshot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    /// QEMU's name for the format (block driver, `qemu-img -f`).
    pub fn name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub memory_mib: u64,
    pub cpus: u32,
    pub disks: Vec<Disk>,
    pub ssh_port: u16,
    pub accel: Accel,
    pub console_log: PathBuf,
    pub qmp_socket: PathBuf,
    /// Where crashrig listens for QEMU's end of the agent channel (a virtio-serial port the
    /// guest's `crashrig-guest agent` serves; `crashrig_guest::channel`). QEMU connects to
    /// it as it starts, so the port is open on the host side from the guest's first instant,
    /// saved and restored alike. `None`: no port (a VM never saved nor restored).
    pub agent_socket: Option<PathBuf>,
    /// Start paused, waiting for a saved state (`-incoming defer`; `vm::snapshot::load`).
    pub incoming: bool,
    /// Where the guest's RAM lives (see `vm::ram`).
    pub ram: super::ram::RamBackend,
}

/// Test hook, not a user option: with `CRASHRIG_TEST_QMP_DIR=DIR` every QEMU also serves a
/// second QMP monitor at `DIR/qmp-<n>.sock` (n counts up per QEMU of this crashrig), through
/// which the fault-injection tests freeze the guest's vCPUs (`stop`) behind crashrig's back.
fn test_monitor() -> Vec<String> {
    static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let Some(dir) = std::env::var_os("CRASHRIG_TEST_QMP_DIR") else {
        return Vec::new();
    };
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let path = Path::new(&dir).join(format!("qmp-{n}.sock"));
    vec![
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", path.display()),
    ]
}

/// The QEMU command line for `cfg` (pure: tested without QEMU).
pub fn qemu_args(cfg: &VmConfig) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    match cfg.accel {
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
        // -cpu max gives the guest RDRAND, so with random.trust_cpu=on it does not wait for
        // entropy before sshd can start.
        Accel::Tcg => push(&["-accel", "tcg", "-cpu", "max"]),
    }
    let mem = cfg.memory_mib.to_string();
    let smp = cfg.cpus.to_string();
    let ram = cfg.ram.object(cfg.memory_mib);
    push(&["-object", &ram, "-machine", "pc,memory-backend=ram"]);
    push(&["-m", &mem, "-smp", &smp]);
    push(&[
        "-chardev",
        "stdio,id=con,signal=off",
        "-serial",
        "chardev:con",
    ]);
    let qmp = format!("unix:{},server=on,wait=off", cfg.qmp_socket.display());
    push(&["-qmp", &qmp]);
    let kernel = cfg.kernel.display().to_string();
    let initrd = cfg.initrd.display().to_string();
    push(&[
        "-kernel",
        &kernel,
        "-initrd",
        &initrd,
        "-append",
        &cfg.cmdline,
    ]);
    // restrict=on: the guest (a kernel under test and whatever a scenario starts) reaches
    // nothing, not the host's loopback through 10.0.2.2 nor any other network; the SSH
    // forward into the guest still works.
    let netdev = format!(
        "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{}-:22",
        cfg.ssh_port
    );
    push(&["-netdev", &netdev, "-device", "virtio-net-pci,netdev=net0"]);
    for disk in &cfg.disks {
        // JSON syntax: no comma escaping of file names.
        let blockdev = json!({
            "driver": disk.format.name(),
            "node-name": format!("disk-{}", disk.serial),
            "read-only": disk.read_only,
            "file": { "driver": "file", "filename": disk.path, "read-only": disk.read_only },
        });
        push(&["-blockdev", &blockdev.to_string()]);
        push(&["-device", &device_spec(&disk.serial)]);
    }
    // After the disks: a disk plugged in later takes the next free slot, in both the saved
    // and the restored machine.
    if let Some(socket) = &cfg.agent_socket {
        let agent = format!(
            "socket,id=agent,path={}",
            socket.display().to_string().replace(',', ",,")
        );
        let port = format!(
            "virtserialport,bus=agent-bus.0,chardev=agent,id={AGENT_PORT_ID},name={}",
            crashrig_guest::channel::PORT_NAME
        );
        push(&["-device", "virtio-serial-pci,id=agent-bus,max_ports=2"]);
        push(&["-chardev", &agent, "-device", &port]);
    }
    if cfg.incoming {
        push(&["-incoming", "defer"]);
    }
    a
}

/// A non-blocking listener at `path` (a stale socket of an earlier QEMU removed first).
fn agent_listener(path: &Path) -> Result<std::os::unix::net::UnixListener, VmError> {
    let io = |source| VmError::Io {
        path: path.to_path_buf(),
        source,
    };
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    Ok(listener)
}

fn device_spec(serial: &str) -> String {
    format!("virtio-blk-pci,id=dev-{serial},drive=disk-{serial},serial={serial}")
}

/// What the console watcher saw.
#[derive(Debug, Default)]
pub struct ConsoleState {
    pub tail: VecDeque<String>,
    partial: String,
    /// Set when a line announcing a kernel panic went by.
    pub panicked: bool,
    /// Set when init announced that sshd runs (`crashrig: sshd started`).
    pub sshd_started: bool,
    /// What init announced about the agent channel: `crashrig: agent started` (true) or
    /// `crashrig: no agent channel` (false); nothing yet (None).
    pub agent: Option<bool>,
    /// Lines seen since QEMU started.
    pub lines: u64,
    /// Why the guest's init gave up (`crashrig: boot-init failed: ...`): the guest will never
    /// answer, so the boot ends at once instead of at its timeout.
    pub init_failed: Option<String>,
}

const TAIL_LINES: usize = 400;

impl ConsoleState {
    fn push(&mut self, bytes: &[u8]) {
        self.partial.push_str(&String::from_utf8_lossy(bytes));
        while let Some(pos) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=pos).collect();
            let line = line.trim_end_matches(['\n', '\r']).to_string();
            if line.contains("Kernel panic - not syncing") {
                self.panicked = true;
            }
            if line.contains("crashrig: sshd started") {
                self.sshd_started = true;
            }
            if let Some((_, why)) = line.split_once("crashrig: boot-init failed: ") {
                self.init_failed
                    .get_or_insert_with(|| why.trim().to_string());
            }
            if line.contains("crashrig: agent started") {
                self.agent = Some(true);
            } else if line.contains("crashrig: no agent channel") {
                self.agent = Some(false);
            }
            self.lines += 1;
            if self.tail.len() == TAIL_LINES {
                self.tail.pop_front();
            }
            self.tail.push_back(line);
        }
    }
}

/// The last `lines` lines of a console.
fn console_tail_of(console: &Mutex<ConsoleState>, lines: usize) -> Vec<String> {
    let c = console.lock().expect("console lock");
    c.tail
        .iter()
        .skip(c.tail.len().saturating_sub(lines))
        .cloned()
        .collect()
}

/// The agent port's device id: QEMU names it in `VSERPORT_CHANGE` when the guest opens or
/// closes the port (a port without an id has no such event).
const AGENT_PORT_ID: &str = "agent-port";

pub struct Vm {
    child: Child,
    console: Arc<Mutex<ConsoleState>>,
    stderr: Arc<Mutex<String>>,
    qmp: Option<Qmp>,
    /// crashrig's end of the agent channel, until [`Vm::take_agent`].
    agent: Option<std::os::unix::net::UnixStream>,
    /// A second handle on it, kept after [`Vm::take_agent`] to end the channel from here
    /// ([`Vm::close_agent`]).
    agent_handle: Option<std::os::unix::net::UnixStream>,
    config: VmConfig,
    pub started: Instant,
}

impl Vm {
    /// Starts QEMU. The console goes to `config.console_log` from the first byte, after
    /// what the file already holds (a restored guest's log starts with the boot that saved it).
    pub async fn start(config: VmConfig) -> Result<Vm, VmError> {
        let qemu = host::require("qemu-system-x86_64")?;
        let log = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.console_log)
            .await
            .map_err(|source| VmError::Io {
                path: config.console_log.clone(),
                source,
            })?;
        let listener = match &config.agent_socket {
            Some(path) => Some(agent_listener(path)?),
            None => None,
        };
        let mut child = crate::process::spawn(
            crate::process::tokio_command(qemu)
                .args(qemu_args(&config))
                .args(test_monitor())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .map_err(VmError::Spawn)?;
        let started = Instant::now();
        let console = Arc::new(Mutex::new(ConsoleState::default()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let console2 = console.clone();
        tokio::spawn(async move {
            let mut log = log;
            let mut buf = vec![0u8; 16384];
            while let Ok(n) = out.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let _ = log.write_all(&buf[..n]).await;
                let _ = log.flush().await;
                console2.lock().expect("console lock").push(&buf[..n]);
            }
        });
        let stderr2 = stderr.clone();
        tokio::spawn(async move {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text).await;
            stderr2.lock().expect("stderr lock").push_str(&text);
        });
        let mut vm = Vm {
            child,
            console,
            stderr,
            qmp: None,
            agent: None,
            agent_handle: None,
            config,
            started,
        };
        // QEMU creates the QMP socket before the guest runs; a failure to start (bad disk,
        // port in use) shows up as an early exit.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = vm.exited() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(VmError::EarlyExit {
                    status,
                    stderr: vm.stderr(),
                });
            }
            if vm.config.qmp_socket.exists() {
                match Qmp::connect(&vm.config.qmp_socket, Duration::from_secs(10)).await {
                    Ok(q) => {
                        vm.qmp = Some(q);
                        break;
                    }
                    Err(e) if Instant::now() > deadline => return Err(e.into()),
                    Err(_) => {}
                }
            } else if Instant::now() > deadline {
                return Err(VmError::EarlyExit {
                    status: "no QMP socket after 10s".into(),
                    stderr: vm.stderr(),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let (Some(listener), Some(path)) = (listener, vm.config.agent_socket.clone()) {
            vm.agent = Some(vm.accept_agent(&listener, &path, deadline).await?);
            let _ = std::fs::remove_file(&path);
        }
        Ok(vm)
    }

    /// QEMU's connection to the agent channel's socket: QEMU made its chardevs before its
    /// monitor, so it is waiting by now.
    async fn accept_agent(
        &mut self,
        listener: &std::os::unix::net::UnixListener,
        path: &Path,
        deadline: Instant,
    ) -> Result<std::os::unix::net::UnixStream, VmError> {
        let io = |source| VmError::Io {
            path: path.to_path_buf(),
            source,
        };
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).map_err(io)?;
                    return Ok(stream);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Some(status) = self.exited() {
                        return Err(VmError::EarlyExit {
                            status,
                            stderr: self.stderr(),
                        });
                    }
                    if Instant::now() > deadline {
                        return Err(VmError::EarlyExit {
                            status: "QEMU did not connect the agent channel within 10s".into(),
                            stderr: self.stderr(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(source) => return Err(io(source)),
            }
        }
    }

    /// A second handle on crashrig's end of the agent channel, while nobody has taken it.
    pub fn agent_stream(&self) -> Option<std::os::unix::net::UnixStream> {
        self.agent.as_ref().and_then(|s| s.try_clone().ok())
    }

    /// crashrig's end of the agent channel (once: whoever takes it talks to the guest).
    pub fn take_agent(&mut self) -> Option<std::os::unix::net::UnixStream> {
        let stream = self.agent.take()?;
        self.agent_handle = stream.try_clone().ok();
        Some(stream)
    }

    /// Resolves once the guest has closed the agent's port, which the guest kernel does when
    /// the agent process is gone (killed with the rest by a `kill -9 -1`, say): QEMU keeps
    /// crashrig's socket open, so a command waiting on the agent would otherwise wait for its
    /// deadline. Never resolves for a VM without a monitor. Cancel-safe (a `select!` branch).
    pub async fn agent_port_closed(&mut self) {
        let Some(qmp) = self.qmp.as_mut() else {
            return std::future::pending().await;
        };
        let closed = |d: &serde_json::Value| d["id"] == AGENT_PORT_ID && d["open"] == false;
        loop {
            match qmp
                .wait_event("VSERPORT_CHANGE", Duration::from_secs(3600), closed)
                .await
            {
                Ok(_) => return,
                Err(QmpError::Timeout { .. }) => continue,
                // A monitor that failed says nothing more: the plan's own deadline and
                // QEMU's exit decide.
                Err(_) => return std::future::pending().await,
            }
        }
    }

    /// Ends crashrig's end of the agent channel: a command waiting on it returns at once with
    /// the channel closed.
    pub fn close_agent(&self) {
        for s in [&self.agent, &self.agent_handle].into_iter().flatten() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Reads the console's last lines without holding the VM (for a watcher running beside
    /// another use of it).
    pub fn console_reader(&self) -> impl Fn(usize) -> Vec<String> {
        let console = self.console.clone();
        move |lines| console_tail_of(&console, lines)
    }

    /// Whether the guest's init announced the agent channel on this QEMU's console; waits
    /// up to `within` for the announcement (the console may lag the guest's other news).
    pub async fn agent_started(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let said = self.console.lock().expect("console lock").agent;
            match said {
                Some(started) => return started,
                None if Instant::now() >= deadline => return false,
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// `Some(status)` once QEMU has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// QEMU has exited with status 0 by itself: under `-no-reboot` that is the guest resetting
    /// or powering off the machine (a reboot, a triple fault, sysrq-b, poweroff).
    pub fn ended_by_guest(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(status)) if status.success())
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").trim().to_string()
    }

    pub fn console_tail(&self, lines: usize) -> Vec<String> {
        console_tail_of(&self.console, lines)
    }

    /// Console lines seen so far: whether the guest still writes to its console.
    pub fn console_lines(&self) -> u64 {
        self.console.lock().expect("console lock").lines
    }

    pub fn sshd_started(&self) -> bool {
        self.console.lock().expect("console lock").sshd_started
    }

    pub fn init_failed(&self) -> Option<String> {
        self.console
            .lock()
            .expect("console lock")
            .init_failed
            .clone()
    }

    pub fn panicked(&self) -> bool {
        self.console.lock().expect("console lock").panicked
    }

    /// Cuts the power as a scenario's `power-cut` means it: the vCPUs stop at once (QMP
    /// `stop`), then SIGKILL; no guest flush, no clean shutdown. What the guest wrote and was
    /// told was written is on the disk files, whatever their format: `stop` drains QEMU's
    /// block layer and writes back what it keeps in memory (a qcow2 overlay's new cluster
    /// mappings, which a bare SIGKILL loses until the guest's next flush). Without it a power
    /// cut on a restored guest's qcow2 overlays lost writes that the same cut on raw disks
    /// keeps, and the two `--restore` modes disagreed on fsync'd data (docs/reliability.md).
    /// A QEMU that does not answer within 5 s is killed all the same.
    pub async fn power_cut(&mut self) {
        if self.exited().is_none() {
            if let Some(qmp) = self.qmp.as_mut() {
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), qmp.execute("stop", None)).await;
            }
        }
        self.kill().await;
    }

    /// SIGKILL to QEMU's process group, at once: for a guest that is thrown away.
    pub async fn kill(&mut self) {
        crate::process::kill_group(&mut self.child).await;
    }

    /// Stops QEMU: QMP `quit`, then SIGTERM, then SIGKILL to its process group.
    pub async fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if let Some(qmp) = self.qmp.as_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(2), qmp.execute("quit", None)).await;
        }
        if tokio::time::timeout(Duration::from_secs(3), self.child.wait())
            .await
            .is_ok()
        {
            return;
        }
        crate::process::stop_group(&mut self.child, Duration::from_secs(3)).await;
    }

    /// Waits up to `within` for QEMU to exit by itself (after a guest poweroff or panic).
    pub async fn wait_exit(&mut self, within: Duration) -> Option<String> {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => Some(status.to_string()),
            Ok(Err(e)) => Some(format!("unknown ({e})")),
            Err(_) => None,
        }
    }

    pub(crate) fn qmp(&mut self) -> Result<&mut Qmp, VmError> {
        self.qmp.as_mut().ok_or(VmError::Qmp(QmpError::Closed))
    }

    /// Hot-removes the disk with `serial` (the guest must acknowledge through ACPI).
    pub async fn unplug(&mut self, serial: &str, within: Duration) -> Result<(), VmError> {
        let id = format!("dev-{serial}");
        let qmp = self.qmp()?;
        qmp.execute("device_del", Some(json!({ "id": id }))).await?;
        qmp.wait_event("DEVICE_DELETED", within, |d| d["device"] == id.as_str())
            .await?;
        Ok(())
    }

    /// Adds the disk with `serial` back (same backing node, same serial).
    pub async fn replug(&mut self, serial: &str) -> Result<(), VmError> {
        let qmp = self.qmp()?;
        qmp.execute(
            "device_add",
            Some(json!({
                "driver": "virtio-blk-pci",
                "id": format!("dev-{serial}"),
                "drive": format!("disk-{serial}"),
                "serial": serial,
            })),
        )
        .await?;
        Ok(())
    }

    /// Whether QEMU itself runs its guest: a stopped process, or a monitor that does not
    /// answer `query-status` within `within`, does not ([`Health::Fault`]); one that answers
    /// does, whatever its guest does (frozen, silent). After a fault the monitor connection
    /// is dropped (its state is unknown).
    pub async fn health(&mut self, within: Duration) -> Health {
        if let Some(pid) = self.child.id() {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if let Some(why) = stopped_state(&stat) {
                self.qmp = None;
                return Health::Fault(why.to_string());
            }
        }
        let why = match tokio::time::timeout(within, self.status()).await {
            Ok(Ok(status)) => return Health::Answers { status },
            Ok(Err(e)) => crate::report::error_chain(&e),
            Err(_) => format!("no answer to `query-status` within {within:?}"),
        };
        self.qmp = None;
        Health::Fault(format!("QEMU does not answer its monitor: {why}"))
    }

    /// QMP `query-status`: "running", "paused", "postmigrate", ...
    pub async fn status(&mut self) -> Result<String, VmError> {
        let r = self.qmp()?.execute("query-status", None).await?;
        Ok(r["status"].as_str().unwrap_or("unknown").to_string())
    }
}

/// What [`Vm::health`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// QEMU answers its monitor; `status` is the guest's run state ("running", "paused").
    Answers { status: String },
    /// QEMU itself is not running the guest: why.
    Fault(String),
}

/// Why QEMU itself cannot be running a guest, read from `/proc/PID/stat` (`stat`): it is
/// stopped (SIGSTOP, job control) or held by a tracer. `None` for a runnable or sleeping one.
pub fn stopped_state(stat: &str) -> Option<&'static str> {
    // pid (comm) state ...: comm may hold spaces and parentheses.
    let state = stat.get(stat.rfind(')')? + 2..)?.chars().next()?;
    match state {
        'T' => Some("QEMU is stopped (SIGSTOP or job control)"),
        't' => Some("QEMU is held by a tracer"),
        _ => None,
    }
}

/// A free TCP port on 127.0.0.1 for the SSH forward. QEMU binds it a moment later; the
/// caller retries with another port when QEMU reports it taken.
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Decides the accelerator. `auto` uses KVM only when /dev/kvm opens and the kernel about to
/// be tested boots under KVM to a busybox init that powers off, within 15 s. Nested KVM can
/// accept every ioctl, even run firmware, and then hang in the kernel, so nothing less than a
/// real boot proves it works; a broken KVM costs those 15 s once per invocation.
pub async fn choose_accel(
    choice: AccelChoice,
    kernel: &Path,
    bare_initrd: &Path,
) -> Result<(Accel, String), VmError> {
    match choice {
        AccelChoice::Tcg => Ok((Accel::Tcg, "requested".into())),
        AccelChoice::Kvm => match probe_kvm(kernel, bare_initrd).await {
            Ok(t) => Ok((Accel::Kvm, format!("requested; a probe boot took {t:.1} s"))),
            Err(e) => Err(VmError::KvmUnusable(Box::new(e))),
        },
        AccelChoice::Auto => match probe_kvm(kernel, bare_initrd).await {
            Ok(t) => Ok((Accel::Kvm, format!("a probe boot under KVM took {t:.1} s"))),
            Err(e) => Ok((
                Accel::Tcg,
                format!("KVM unusable: {}", crate::report::error_chain(&e)),
            )),
        },
    }
}

/// Boots `kernel` with a busybox init that powers off at once; returns the wall time in
/// seconds.
pub async fn bare_boot(
    kernel: &Path,
    initrd: &Path,
    accel: Accel,
    within: Duration,
) -> Result<f64, VmError> {
    let qemu = host::require("qemu-system-x86_64")?;
    let (accel_name, cpu) = match accel {
        Accel::Kvm => ("kvm", "host"),
        Accel::Tcg => ("tcg", "max"),
    };
    let start = Instant::now();
    let mut child = crate::process::spawn(
        crate::process::tokio_command(qemu)
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
                "-accel",
                accel_name,
                "-cpu",
                cpu,
            ])
            .args([
                "-machine", "pc", "-m", "2048", "-smp", "2", "-serial", "null", "-kernel",
            ])
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", "console=ttyS0 panic=-1 random.trust_cpu=on"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .map_err(VmError::Spawn)?;
    match tokio::time::timeout(within, child.wait()).await {
        Ok(Ok(s)) if s.success() => Ok(start.elapsed().as_secs_f64()),
        Ok(Ok(status)) => {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut stderr).await;
            }
            let stderr = stderr.trim().lines().next().unwrap_or("").to_string();
            Err(VmError::BareExit {
                accel,
                status,
                stderr,
            })
        }
        Ok(Err(e)) => Err(VmError::Wait(e)),
        Err(_) => {
            crate::process::kill_group(&mut child).await;
            Err(VmError::BareTimeout { accel, within })
        }
    }
}

pub async fn probe_kvm(kernel: &Path, bare_initrd: &Path) -> Result<f64, VmError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(VmError::KvmDevice)?;
    bare_boot(kernel, bare_initrd, Accel::Kvm, Duration::from_secs(15)).await
}

/// QEMU's version line, for results.
pub async fn qemu_version() -> Option<String> {
    let qemu = host::find("qemu-system-x86_64")?;
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        crate::process::spawn(
            crate::process::tokio_command(qemu)
                .arg("--version")
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        )
        .ok()?
        .wait_with_output(),
    )
    .await
    .ok()?
    .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_owned)
}

/// Creates a sparse disk file.
pub fn create_disk(path: &Path, size: u64) -> Result<(), VmError> {
    let f = std::fs::File::create(path).map_err(|source| VmError::Io {
        path: path.into(),
        source,
    })?;
    f.set_len(size).map_err(|source| VmError::Io {
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::ram::RamBackend;

    fn config() -> VmConfig {
        VmConfig {
            kernel: "/k/vmlinuz".into(),
            initrd: "/k/initrd".into(),
            cmdline: "console=ttyS0".into(),
            memory_mib: 2048,
            cpus: 2,
            disks: vec![Disk {
                serial: "scratch".into(),
                path: "/tmp/a,b.img".into(),
                read_only: false,
                format: DiskFormat::Raw,
            }],
            ssh_port: 2222,
            accel: Accel::Tcg,
            console_log: "/tmp/console.log".into(),
            qmp_socket: "/tmp/qmp.sock".into(),
            agent_socket: Some("/tmp/run,1/agent.sock".into()),
            incoming: false,
            ram: RamBackend::Anonymous,
        }
    }

    #[test]
    fn command_line_binds_ssh_to_loopback_and_names_disks_by_serial() {
        let args = qemu_args(&config());
        let joined = args.join(" ");
        assert!(
            joined.contains("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22"),
            "{joined}"
        );
        assert!(joined.contains("-accel tcg -cpu max"), "{joined}");
        assert!(joined.contains("virtio-blk-pci,id=dev-scratch,drive=disk-scratch,serial=scratch"));
        let blockdev = &args[args.iter().position(|a| a == "-blockdev").unwrap() + 1];
        let v: serde_json::Value = serde_json::from_str(blockdev).unwrap();
        assert_eq!(
            v["file"]["filename"], "/tmp/a,b.img",
            "commas in paths need no escaping in JSON"
        );
        assert!(joined.contains("-no-reboot"));
        assert_eq!(v["driver"], "raw");
        assert!(!joined.contains("-incoming"));
    }

    #[test]
    fn the_agent_port_comes_after_the_disks_and_connects_to_crashrigs_socket() {
        let args = qemu_args(&config());
        let at = |needle: &str| args.iter().position(|a| a.contains(needle)).unwrap();
        assert!(at("virtio-serial-pci") > at("virtio-blk-pci"));
        // Client mode (no server=on): QEMU connects to crashrig's listener as it starts.
        assert_eq!(
            args[at("socket,id=agent")],
            "socket,id=agent,path=/tmp/run,,1/agent.sock"
        );
        assert_eq!(
            args[at("virtserialport")],
            format!(
                "virtserialport,bus=agent-bus.0,chardev=agent,id=agent-port,name={}",
                crashrig_guest::channel::PORT_NAME
            )
        );
        // A VM that is never saved nor restored has no port.
        let none = qemu_args(&VmConfig {
            agent_socket: None,
            ..config()
        });
        assert!(!none.iter().any(|a| a.contains("agent")), "{none:?}");
    }

    #[test]
    fn a_restored_guest_has_the_same_devices_and_waits_for_its_state() {
        let mut booted = config();
        booted.ram = RamBackend::Shared("/proc/1/fd/9".into());
        let mut restored = config();
        restored.incoming = true;
        restored.ram = RamBackend::Private("/cache/guest.ram".into());
        restored.disks[0].format = DiskFormat::Qcow2;
        restored.disks[0].path = "/tmp/overlay.qcow2".into();
        let (a, b) = (qemu_args(&booted), qemu_args(&restored));
        assert_eq!(b[b.len() - 2..], ["-incoming", "defer"]);
        // Migration needs the same device set in the same order; only backends differ.
        let devices = |args: &[String]| -> Vec<String> {
            args.windows(2)
                .filter(|w| w[0] == "-device")
                .map(|w| w[1].clone())
                .collect()
        };
        assert_eq!(devices(&a), devices(&b));
        // The same RAM block (`ram`), shared while it runs, mapped privately when restored.
        let ram = |args: &[String]| -> serde_json::Value {
            let at = args.iter().position(|x| x == "-object").unwrap();
            assert_eq!(args[at + 2..at + 4], ["-machine", "pc,memory-backend=ram"]);
            serde_json::from_str(&args[at + 1]).unwrap()
        };
        assert_eq!(
            (ram(&a)["id"].clone(), ram(&a)["share"].clone()),
            ("ram".into(), true.into())
        );
        assert_eq!(
            (ram(&b)["id"].clone(), ram(&b)["share"].clone()),
            ("ram".into(), false.into())
        );
        let blockdev = &b[b.iter().position(|x| x == "-blockdev").unwrap() + 1];
        let v: serde_json::Value = serde_json::from_str(blockdev).unwrap();
        assert_eq!(v["driver"], "qcow2");
        assert_eq!(v["node-name"], "disk-scratch");
    }

    #[test]
    fn a_stopped_or_traced_qemu_is_told_from_a_running_one() {
        let stat = |state: &str| format!("4242 (qemu-system-x86) {state} 1 4242 4242 0 -1");
        assert!(stopped_state(&stat("T")).unwrap().contains("stopped"));
        assert!(stopped_state(&stat("t")).unwrap().contains("tracer"));
        for running in ["R", "S", "D"] {
            assert_eq!(stopped_state(&stat(running)), None, "{running}");
        }
        // The command name may hold parentheses and spaces.
        assert!(stopped_state("7 (a) T (b)) T 1 7").is_some());
        assert!(stopped_state("7 (a) T (b)) S 1 7").is_none());
        assert_eq!(stopped_state(""), None);
    }

    #[test]
    fn console_watcher_splits_lines_and_spots_panics() {
        let mut c = ConsoleState::default();
        c.push(b"[    1.0] hello\r\n[    2.0] Kernel pan");
        assert!(!c.panicked);
        c.push(b"ic - not syncing: sysrq triggered crash\n");
        assert!(c.panicked);
        assert_eq!(c.tail.len(), 2);
        assert_eq!(c.tail[0], "[    1.0] hello");
    }

    #[test]
    fn console_watcher_spots_a_failed_init() {
        let mut c = ConsoleState::default();
        c.push(
            b"[    4.6] crashrig: sshd not yet
",
        );
        assert_eq!(c.init_failed, None);
        c.push(
            b"[    4.6] crashrig: boot-init failed: bring eth0 up: ENODEV
",
        );
        c.push(b"crashrig: boot-init failed: a later line\n");
        assert_eq!(c.init_failed.as_deref(), Some("bring eth0 up: ENODEV"));
    }
}
