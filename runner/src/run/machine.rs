//! The machine seam: what the run loop needs from a VM. [`super::qemu_machine::QemuMachine`]
//! is QEMU plus SSH; tests drive the loop with a scripted fake.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crashrig_guest::{Plan, StepReport};

use super::boot::BootError;
use super::verdict::Abort;
use crate::guest::GuestError;
use crate::image::ImageError;
use crate::vm::VmError;

#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error("create {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reach the machine: it is not running")]
    NotRunning,
    #[error(transparent)]
    Snapshot(#[from] crate::vm::snapshot::SnapshotError),
    #[error("restore the set-up guest: none was saved")]
    NoSetUp,
}

/// What a boot reports.
#[derive(Debug, Clone, Default)]
pub struct BootInfo {
    /// From start to the guest being ready for plans.
    pub ready_after: Duration,
    /// The command that started the machine, for results.
    pub command: Vec<String>,
    /// Where the scenario's disk images are kept (`--keep`), on the first boot.
    pub kept_disks: Option<PathBuf>,
    /// Restored from a snapshot instead of booted: `booted` or `set-up`
    /// (see `run::restore`).
    pub restored: Option<String>,
    /// The restored snapshot was saved by an earlier run (found in the cache).
    pub from_cache: bool,
    /// Where `ready_after` went, stage by stage.
    pub phases: Vec<crate::report::BootPhase>,
    /// How plans reach the guest: `ssh`, or `agent` (the virtio-serial channel).
    pub transport: &'static str,
}

/// What a helper plan produced.
#[derive(Debug, Clone, Default)]
pub struct PlanRun {
    /// Reports as the helper wrote them; `index` is the step's position in the plan.
    pub reports: Vec<StepReport>,
    /// The plan did not finish: why. A transport failure while the guest is alive is
    /// [`Abort::Infra`]; only a guest that stopped answering (or a step stuck past the
    /// plan's deadline) is [`Abort::Hang`].
    pub abort: Option<Abort>,
}

/// A machine the run loop boots and drives. One machine keeps its disks across boots, so a
/// scenario's power cut, panic and reboot steps boot it again on the same disks, and a caller
/// may keep it booted across several runs of the same kernel and scenario.
pub trait Machine: Send {
    /// Boots the machine (stopping whatever ran before); its console goes to `console_log`.
    /// Ready means the guest runs plans.
    fn boot(
        &mut self,
        console_log: &Path,
    ) -> impl Future<Output = Result<BootInfo, MachineError>> + Send;

    /// Runs one helper plan, bounded by `deadline`.
    fn run_plan(&mut self, plan: &Plan, deadline: Duration)
        -> impl Future<Output = PlanRun> + Send;

    /// The last `lines` console lines of the current (or last) boot.
    fn console_tail(&self, lines: usize) -> Vec<String>;

    /// Whether the machine is booted and has not ended.
    fn is_running(&mut self) -> bool;

    /// The 1-minute load average of the host the machine runs on, recorded with each
    /// iteration: a busy host slows a TCG guest, and timing-dependent rates with it.
    fn host_load(&mut self) -> Option<f64> {
        crate::host::load_average()
    }

    /// Cuts the power: no flush, no clean shutdown.
    fn power_cut(&mut self) -> impl Future<Output = ()> + Send;

    /// Makes the kernel panic and waits (bounded) until the machine has ended.
    fn panic(&mut self) -> impl Future<Output = ()> + Send;

    /// Reboots the guest from inside and waits (bounded) until the machine has ended.
    fn reboot(&mut self) -> impl Future<Output = ()> + Send;

    /// Hot-removes the disk `serial`, waiting up to `within` for the guest to let it go.
    fn unplug(
        &mut self,
        serial: &str,
        within: Duration,
    ) -> impl Future<Output = Result<(), MachineError>> + Send;

    /// Adds the disk `serial` back.
    fn replug(&mut self, serial: &str) -> impl Future<Output = Result<(), MachineError>> + Send;

    /// Stops the machine (politely, then not); nothing it started keeps running.
    fn stop(&mut self) -> impl Future<Output = ()> + Send;

    /// Saves the running machine, just set up, under `key` (what setup ran) as the start of
    /// every later [`Machine::restore_set_up`], and stops it.
    fn save_set_up(&mut self, key: &str) -> impl Future<Output = Result<(), MachineError>> + Send;

    /// Whether a set-up machine is saved under `key`: by this machine, or by an earlier run
    /// of the same kernel and VM (the cache), in which case it is made ready to restore.
    fn find_set_up(&mut self, key: &str) -> impl Future<Output = bool> + Send;

    /// Starts the saved set-up machine on fresh copies of its disks as they were saved
    /// (stopping whatever ran before); its console goes to `console_log`.
    fn restore_set_up(
        &mut self,
        console_log: &Path,
    ) -> impl Future<Output = Result<BootInfo, MachineError>> + Send;
}
