//! Restoring saved guests instead of booting them (`--restore`).
//!
//! Two kinds of snapshot, both saved once per machine and restored many times:
//! - *booted*: the guest just ready, before it has touched a scratch disk, so it caches
//!   nothing of their contents. A power cut, panic, reboot or hang then restores it on the
//!   disks exactly as the crash left them, and log recovery runs on the real crashed state, as
//!   after a boot.
//! - *set up*: the guest after the scenario's `setup`, with its disks frozen at the same
//!   instant. Every iteration then starts from a restore of it on fresh qcow2 overlays over
//!   those disks: iterations are independent trials from identical starts.
//!
//! Each restore gets fresh randomness and the host's clock (`boot::restore`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::scenario::{Scenario, Step};
use crate::vm::snapshot::{self, OverlayTemplate, SnapshotError};
use crate::vm::{Disk, DiskFormat, Vm};

/// How long saving a guest may take (a paused 2 GiB guest takes about a second).
const SAVE_WITHIN: Duration = Duration::from_secs(120);

/// `--restore`: when a saved guest replaces a boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestoreMode {
    /// Wherever it is faster: boots after a power cut, panic, reboot or hang restore the
    /// booted guest, and iterations of scenarios with such steps (which need a new guest
    /// anyway) start from a restore of the set-up guest.
    Auto,
    /// Boots after the first restore the booted guest, and every iteration starts from a
    /// restore of the set-up guest (unless the scenario says `iterations-share-state`).
    Always,
    /// Boot every time; iterations run one after another on the same guest.
    #[default]
    Never,
}

impl std::fmt::Display for RestoreMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RestoreMode::Auto => "auto",
            RestoreMode::Always => "always",
            RestoreMode::Never => "never",
        })
    }
}

impl RestoreMode {
    /// Whether boots after the first restore the booted guest.
    pub fn restores_boots(self) -> bool {
        self != RestoreMode::Never
    }

    /// Whether every iteration of `s` starts from a restore of the set-up guest.
    pub fn restores_iterations(self, s: &Scenario) -> bool {
        match self {
            RestoreMode::Never => false,
            _ if s.iterations_share_state => false,
            RestoreMode::Always => true,
            RestoreMode::Auto => s.steps.iter().any(ends_the_guest),
        }
    }
}

/// Steps after which the iteration goes on in a new guest.
fn ends_the_guest(step: &Step) -> bool {
    matches!(step, Step::PowerCut(_) | Step::Panic(_) | Step::Reboot(_))
}

/// Saves the booted guest to `dir/booted.state` and lets it run on. Call it before anything
/// has opened a scratch disk.
pub async fn save_booted(vm: &mut Vm, dir: &Path) -> Result<PathBuf, SnapshotError> {
    let state = dir.join("booted.state");
    snapshot::save(vm, &state, SAVE_WITHIN).await?;
    snapshot::resume(vm).await?;
    Ok(state)
}

/// The set-up guest: its state and the frozen disks every restore starts from.
#[derive(Debug, Clone)]
pub struct SetUp {
    state: PathBuf,
    /// Per disk (in order): its serial and the template of its overlays.
    templates: Vec<(String, OverlayTemplate)>,
}

impl SetUp {
    /// Saves the set-up guest, stops it, and freezes its disks: they become read-only bases
    /// that nothing writes again. Files go to `dir`.
    pub async fn freeze(vm: &mut Vm, disks: &[Disk], dir: &Path) -> Result<SetUp, SnapshotError> {
        let state = dir.join("set-up.state");
        snapshot::save(vm, &state, SAVE_WITHIN).await?;
        vm.stop().await;
        let mut templates = Vec::new();
        for disk in disks {
            let read_only = std::os::unix::fs::PermissionsExt::from_mode(0o444);
            std::fs::set_permissions(&disk.path, read_only).map_err(|source| {
                SnapshotError::Io {
                    path: disk.path.clone(),
                    source,
                }
            })?;
            let template = dir.join(format!("{}.template.qcow2", disk.serial));
            let template = OverlayTemplate::create(&disk.path, disk.format, &template).await?;
            templates.push((disk.serial.clone(), template));
        }
        Ok(SetUp { state, templates })
    }

    pub fn state(&self) -> &Path {
        &self.state
    }

    /// Fresh overlays in `dir` (replacing the previous restore's): the disks as frozen.
    pub fn fresh_disks(&self, dir: &Path) -> Result<Vec<Disk>, SnapshotError> {
        self.templates
            .iter()
            .map(|(serial, template)| {
                let path = dir.join(format!("{serial}.qcow2"));
                template.fresh(&path)?;
                Ok(Disk {
                    serial: serial.clone(),
                    path,
                    read_only: false,
                    format: DiskFormat::Qcow2,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::load_str;

    fn scenario(extra: &str, steps: &str) -> Scenario {
        load_str(
            &format!(
                "name: t\ndevices: [{{ name: d, size: 1G }}]\nfilesystem: {{ type: xfs }}\n{extra}steps: {steps}\n"
            ),
            "t.yaml",
        )
        .unwrap()
    }

    #[test]
    fn never_keeps_todays_behaviour() {
        let s = scenario("", "[mount, power-cut, mount]");
        assert!(!RestoreMode::Never.restores_boots());
        assert!(!RestoreMode::Never.restores_iterations(&s));
    }

    #[test]
    fn auto_restores_iterations_only_where_a_new_guest_is_needed_anyway() {
        let crash = scenario("", "[mount, power-cut, mount]");
        let plain = scenario("", "[mount, umount]");
        assert!(RestoreMode::Auto.restores_boots());
        assert!(RestoreMode::Auto.restores_iterations(&crash));
        assert!(
            !RestoreMode::Auto.restores_iterations(&plain),
            "reusing the guest is faster when nothing ends it"
        );
        assert!(RestoreMode::Always.restores_iterations(&plain));
    }

    #[test]
    fn iterations_that_share_state_never_restore_the_set_up_guest() {
        let s = scenario(
            "iterations-share-state: true\n",
            "[mount, power-cut, mount]",
        );
        assert!(!RestoreMode::Always.restores_iterations(&s));
        assert!(!RestoreMode::Auto.restores_iterations(&s));
        assert!(
            RestoreMode::Always.restores_boots(),
            "a power cut still restores the booted guest on the disks as they are"
        );
    }
}
