//! Saving a running guest and starting a fresh QEMU from it.
//!
//! [`save`] pauses the guest and writes its RAM and device state to a file with QMP `migrate`
//! to `fd:` (the open file travels over the QMP socket, so no host shell sees a path). A new
//! QEMU started with the same command line plus `-incoming defer` ([`super::VmConfig::incoming`])
//! reads it back with [`load`] and continues the guest where it stopped: same kernel, same
//! processes, same page cache, in a fraction of a boot.
//!
//! Guest RAM is not in the state file either when the guest ran on shared RAM: it is saved
//! as a file of its own and mapped by the restore (see [`super::ram`]).
//!
//! Disks are not in the state file. A guest saved with a scratch disk it has written to must be
//! restored on the disk exactly as it was at that instant, and each restore must be free to
//! write without changing what the next one starts from: the saved disk becomes a base that is
//! never written again, and every restore runs on a fresh qcow2 overlay over it
//! ([`OverlayTemplate`]).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use super::qemu::{DiskFormat, Vm, VmError};
use super::qmp::QmpError;
use crate::host;

/// The name the state file's descriptor has inside QEMU.
const FD_NAME: &str = "crashrig-state";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error("cannot use {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: migration {status}{}", if .error.is_empty() { String::new() } else { format!(": {}", .error) })]
    Migration {
        what: &'static str,
        status: String,
        error: String,
    },
    #[error("{what} did not finish within {within:?}")]
    Timeout {
        what: &'static str,
        within: Duration,
    },
    #[error("qemu-img cannot create {path}: {stderr}")]
    QemuImg { path: PathBuf, stderr: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A saved guest: its device state and, when the guest ran on shared RAM
/// ([`super::ram::RamBackend::Shared`]), the RAM image saved apart from it. Without an image
/// the RAM is in the state stream.
#[derive(Debug, Clone, Copy)]
pub struct Saved<'a> {
    pub state: &'a Path,
    pub ram: Option<&'a Path>,
    /// The saved guest serves the agent channel (its init announced it before it was saved):
    /// a restore talks to it there rather than over SSH.
    pub agent: bool,
}

/// The migration capabilities of every save and load (both ends must agree): shared RAM stays
/// out of the stream (it is saved as a file), and progress comes as `MIGRATION` events.
async fn set_capabilities(vm: &mut Vm) -> Result<(), SnapshotError> {
    let caps = ["x-ignore-shared", "events"]
        .map(|c| json!({ "capability": c, "state": true }))
        .to_vec();
    vm.qmp()?
        .execute(
            "migrate-set-capabilities",
            Some(json!({ "capabilities": caps })),
        )
        .await?;
    Ok(())
}

/// Waits for the migration to end (its `MIGRATION` event, no polling) until `deadline`.
/// QEMU exiting meanwhile (it quits on a state that does not fit) is reported with its words.
async fn wait_migration(
    vm: &mut Vm,
    what: &'static str,
    deadline: Instant,
    within: Duration,
) -> Result<(), SnapshotError> {
    let ended = |d: &serde_json::Value| {
        matches!(
            d["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        )
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let event = match vm.qmp()?.wait_event("MIGRATION", left, ended).await {
        Ok(event) => event,
        Err(QmpError::Timeout { .. }) => {
            if let Ok(qmp) = vm.qmp() {
                let _ = qmp.execute("migrate_cancel", None).await;
            }
            return Err(SnapshotError::Timeout { what, within });
        }
        Err(e @ (QmpError::Closed | QmpError::Io(_))) => {
            let Some(status) = vm.wait_exit(Duration::from_secs(2)).await else {
                return Err(e.into());
            };
            // Give the stderr reader a moment to collect QEMU's last words.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Err(SnapshotError::Migration {
                what,
                status: format!("ended with QEMU ({status})"),
                error: vm.stderr(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    match event["data"]["status"].as_str() {
        Some("completed") => Ok(()),
        status => {
            let info = vm.qmp()?.execute("query-migrate", None).await?;
            let mut error = info["error-desc"].as_str().unwrap_or_default().to_string();
            if error.is_empty() {
                error = vm.stderr();
            }
            Err(SnapshotError::Migration {
                what,
                status: status.unwrap_or("ended").into(),
                error,
            })
        }
    }
}

/// Pauses the guest and writes its state to `path` (created or truncated), waiting up to
/// `within`. The guest stays paused, with QEMU's images handed over: [`resume`] continues it,
/// or the caller stops QEMU. Disks are flushed by the pause, so a disk file copied or frozen
/// now matches the state. A guest on shared RAM leaves it out: the caller keeps its RAM
/// ([`super::ram::GuestRam`]) as it is now, unchanged while the guest stays paused. Returns
/// the size of the state file.
pub async fn save(vm: &mut Vm, path: &Path, within: Duration) -> Result<u64, SnapshotError> {
    let deadline = Instant::now() + within;
    let file = std::fs::File::create(path).map_err(io_err(path))?;
    vm.qmp()?.execute("stop", None).await?;
    // The default bandwidth cap (32 MiB/s) is for live migration over a network; the guest is
    // paused and the target is a local file.
    vm.qmp()?
        .execute(
            "migrate-set-parameters",
            Some(json!({ "max-bandwidth": 1u64 << 40 })),
        )
        .await?;
    set_capabilities(vm).await?;
    let qmp = vm.qmp()?;
    qmp.send_fd(FD_NAME, file.as_fd()).await?;
    qmp.execute("migrate", Some(json!({ "uri": format!("fd:{FD_NAME}") })))
        .await?;
    wait_migration(vm, "saving the guest", deadline, within).await?;
    file.sync_all().map_err(io_err(path))?;
    Ok(file.metadata().map_err(io_err(path))?.len())
}

/// Continues a guest paused by [`save`] (QEMU takes its images back first).
pub async fn resume(vm: &mut Vm) -> Result<(), SnapshotError> {
    vm.qmp()?.execute("cont", None).await?;
    Ok(())
}

/// Loads the state in `path` into a QEMU started with `incoming` set (and its RAM image, if
/// any, as its RAM backend), and continues the guest. QEMU exits when the state does not fit
/// its machine (another kernel, memory size or device set); that is reported with QEMU's own
/// words.
pub async fn load(vm: &mut Vm, path: &Path, within: Duration) -> Result<(), SnapshotError> {
    const WHAT: &str = "loading the guest";
    let deadline = Instant::now() + within;
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    set_capabilities(vm).await?;
    let qmp = vm.qmp()?;
    qmp.send_fd(FD_NAME, file.as_fd()).await?;
    qmp.execute(
        "migrate-incoming",
        Some(json!({ "uri": format!("fd:{FD_NAME}") })),
    )
    .await?;
    wait_migration(vm, WHAT, deadline, within).await?;
    // The guest was saved paused, so it stays paused after the load; `completed` comes after
    // QEMU decided that, so `cont` now starts it (before that it would only arm autostart).
    vm.qmp()?.execute("cont", None).await?;
    let status = vm.status().await?;
    if status == "running" {
        return Ok(());
    }
    let left = deadline.saturating_duration_since(Instant::now());
    match vm.qmp()?.wait_event("RESUME", left, |_| true).await {
        Ok(_) => Ok(()),
        Err(QmpError::Timeout { .. }) => Err(SnapshotError::Migration {
            what: WHAT,
            status: format!("left the guest {status}"),
            error: String::new(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Runs `qemu-img` with `args`, bounded.
async fn qemu_img(args: &[&std::ffi::OsStr], creates: &Path) -> Result<(), SnapshotError> {
    let program = host::require("qemu-img").map_err(VmError::from)?;
    let child = crate::process::spawn(
        crate::process::tokio_command(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .map_err(VmError::Spawn)?;
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .map_err(|_| SnapshotError::Timeout {
            what: "qemu-img",
            within: Duration::from_secs(60),
        })?
        .map_err(io_err(creates))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(SnapshotError::QemuImg {
            path: creates.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Creates an empty qcow2 disk of `size` bytes (a disk that will become a frozen base).
pub async fn create_qcow2(path: &Path, size: u64) -> Result<(), SnapshotError> {
    let size = size.to_string();
    qemu_img(
        &[
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            path.as_os_str(),
            size.as_ref(),
        ],
        path,
    )
    .await
}

/// Copies the disk at `from` (`format`, a qcow2 with its backing chain flattened) to a
/// standalone qcow2 at `to` holding only what was written: a frozen disk for the cache.
pub async fn convert_to_qcow2(
    from: &Path,
    format: DiskFormat,
    to: &Path,
) -> Result<(), SnapshotError> {
    qemu_img(
        &[
            "convert".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            format.name().as_ref(),
            "-O".as_ref(),
            "qcow2".as_ref(),
            from.as_os_str(),
            to.as_os_str(),
        ],
        to,
    )
    .await
}

/// An empty qcow2 overlay over one base, made once with `qemu-img` and copied for every
/// restore: a copy of a few hundred KiB is cheaper than starting qemu-img each time, and all
/// overlays of a base are byte for byte the same file.
#[derive(Debug, Clone)]
pub struct OverlayTemplate {
    template: PathBuf,
}

impl OverlayTemplate {
    /// Makes the template at `template` over `base` (absolute, so copies work anywhere).
    pub async fn create(
        base: &Path,
        base_format: DiskFormat,
        template: &Path,
    ) -> Result<OverlayTemplate, SnapshotError> {
        let base = std::path::absolute(base).map_err(io_err(base))?;
        qemu_img(
            &[
                "create".as_ref(),
                "-q".as_ref(),
                "-f".as_ref(),
                "qcow2".as_ref(),
                "-b".as_ref(),
                base.as_os_str(),
                "-F".as_ref(),
                base_format.name().as_ref(),
                template.as_os_str(),
            ],
            template,
        )
        .await?;
        Ok(OverlayTemplate {
            template: template.to_path_buf(),
        })
    }

    /// A fresh overlay at `path` (replacing what was there): the base as it was frozen.
    pub fn fresh(&self, path: &Path) -> Result<(), SnapshotError> {
        let _ = std::fs::remove_file(path);
        std::fs::copy(&self.template, path).map_err(|e| {
            // Name the file that is missing, not the copy that could not be made.
            let missing = !self.template.exists();
            io_err(if missing { &self.template } else { path })(e)
        })?;
        Ok(())
    }
}
