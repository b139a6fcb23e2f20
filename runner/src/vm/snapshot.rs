//! Saving a running guest and starting a fresh QEMU from it.
//!
//! [`save`] pauses the guest and writes its RAM and device state to a file with QMP `migrate`
//! to `fd:` (the open file travels over the QMP socket, so no host shell sees a path). A new
//! QEMU started with the same command line plus `-incoming defer` ([`super::VmConfig::incoming`])
//! reads it back with [`load`] and continues the guest where it stopped: same kernel, same
//! processes, same page cache, in a fraction of a boot.
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

/// How often migration progress is polled.
const POLL: Duration = Duration::from_millis(5);

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

/// Pauses the guest and writes its state to `path` (created or truncated), waiting up to
/// `within`. The guest stays paused, with QEMU's images handed over: [`resume`] continues it,
/// or the caller stops QEMU. Disks are flushed by the pause, so a disk file copied or frozen
/// now matches the state. Returns the size of the state file.
pub async fn save(vm: &mut Vm, path: &Path, within: Duration) -> Result<u64, SnapshotError> {
    let file = std::fs::File::create(path).map_err(io_err(path))?;
    let qmp = vm.qmp()?;
    qmp.execute("stop", None).await?;
    // The default bandwidth cap (32 MiB/s) is for live migration over a network; the guest is
    // paused and the target is a local file.
    qmp.execute(
        "migrate-set-parameters",
        Some(json!({ "max-bandwidth": 1u64 << 40 })),
    )
    .await?;
    qmp.send_fd(FD_NAME, file.as_fd()).await?;
    qmp.execute("migrate", Some(json!({ "uri": format!("fd:{FD_NAME}") })))
        .await?;
    let deadline = Instant::now() + within;
    loop {
        let info = vm.qmp()?.execute("query-migrate", None).await?;
        match info["status"].as_str().unwrap_or("none") {
            "completed" => break,
            status @ ("failed" | "cancelled") => {
                return Err(SnapshotError::Migration {
                    what: "saving the guest",
                    status: status.into(),
                    error: info["error-desc"].as_str().unwrap_or_default().into(),
                })
            }
            _ if Instant::now() > deadline => {
                let _ = vm.qmp()?.execute("migrate_cancel", None).await;
                return Err(SnapshotError::Timeout {
                    what: "saving the guest",
                    within,
                });
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
    file.sync_all().map_err(io_err(path))?;
    Ok(file.metadata().map_err(io_err(path))?.len())
}

/// Continues a guest paused by [`save`] (QEMU takes its images back first).
pub async fn resume(vm: &mut Vm) -> Result<(), SnapshotError> {
    vm.qmp()?.execute("cont", None).await?;
    Ok(())
}

/// Loads the state in `path` into a QEMU started with `incoming` set, and continues the guest.
/// QEMU exits when the state does not fit its machine (another kernel, memory size or device
/// set); that is reported with QEMU's own words.
pub async fn load(vm: &mut Vm, path: &Path, within: Duration) -> Result<(), SnapshotError> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let qmp = vm.qmp()?;
    qmp.send_fd(FD_NAME, file.as_fd()).await?;
    qmp.execute(
        "migrate-incoming",
        Some(json!({ "uri": format!("fd:{FD_NAME}") })),
    )
    .await?;
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = vm.exited() {
            // Give the stderr reader a moment to collect QEMU's last words.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Err(SnapshotError::Migration {
                what: "loading the guest",
                status: format!("ended with QEMU ({status})"),
                error: vm.stderr(),
            });
        }
        let info = match vm.qmp()?.execute("query-migrate", None).await {
            Ok(info) => info,
            // QEMU quits on a bad stream; the exit check above says why.
            Err(QmpError::Closed | QmpError::Io(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        match info["status"].as_str().unwrap_or("none") {
            "completed" => break,
            status @ ("failed" | "cancelled") => {
                return Err(SnapshotError::Migration {
                    what: "loading the guest",
                    status: status.into(),
                    error: vm.stderr(),
                })
            }
            _ if Instant::now() > deadline => {
                return Err(SnapshotError::Timeout {
                    what: "loading the guest",
                    within,
                })
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
    // Until QEMU's bottom half has run, `cont` only arms autostart; either way the guest runs
    // once this returns with the status "running".
    vm.qmp()?.execute("cont", None).await?;
    loop {
        let status = vm.status().await?;
        if status == "running" {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(SnapshotError::Migration {
                what: "loading the guest",
                status: format!("left the guest {status}"),
                error: String::new(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `qemu-img` with `args`, bounded.
async fn qemu_img(args: &[&std::ffi::OsStr], creates: &Path) -> Result<(), SnapshotError> {
    let program = host::require("qemu-img").map_err(VmError::from)?;
    let child = crate::process::tokio_command(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
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
