//! The machine of real runs: QEMU for the VM, SSH to the guest helper.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crashrig_guest::{Op, Plan};

use super::boot::{boot, restore, BootSpec, Booted};
use super::machine::{BootInfo, Machine, MachineError, PlanRun};
use super::restore::{self, RestoreMode, SetUp};
use super::verdict::Abort;
use crate::cache::Cache;
use crate::guest::{self, Ending, Guest, GuestHandle, RunKey, SshError, HELPER_COMMAND};
use crate::image::{self, GuestImage};
use crate::kernel::ResolvedKernel;
use crate::scenario::Scenario;
use crate::vm::{Accel, Disk, Health, ScratchDisks};

/// Attempts at a plan whose command never reached the guest (channel not opened).
const SEND_ATTEMPTS: u32 = 3;

/// How long a guest that failed a transport gets to answer a fresh connection before it
/// counts as not answering. Bounded by the plan's own deadline.
const PROBE_WITHIN: Duration = Duration::from_secs(60);

/// How long QEMU's monitor gets to answer `query-status` when a plan failed: silence means
/// QEMU itself is not running, not the guest.
const QMP_WITHIN: Duration = Duration::from_secs(10);

/// A QEMU VM for one kernel and scenario, with the scenario's disks. Made before anything is
/// prepared: the first boot makes the initramfs, disks and key.
pub struct QemuMachine<'a> {
    /// Its own copy: a machine may outlive the scenario it was made for, running other
    /// scenarios of the same [`vm_shape`].
    scenario: Scenario,
    kernel: &'a ResolvedKernel,
    image: &'a GuestImage,
    cache: Cache,
    accel: Accel,
    /// Keep the disk images after the machine is gone (`--keep`).
    keep_disks: bool,
    /// When a saved guest replaces a boot.
    restore: RestoreMode,
    prepared: Option<Prepared>,
    booted: Option<Booted>,
    /// The guest just booted, saved once or found in the cache (`--restore`), restored
    /// instead of later boots, and its cache entry.
    booted_state: Option<(restore::PinnedGuest, Option<PathBuf>)>,
    /// The cache was asked for a booted guest (once per machine).
    looked_up: bool,
    /// The set-up guest, saved under the key of the setup it ran.
    set_up: Option<(String, SetUp)>,
}

/// What every boot of one machine shares.
struct Prepared {
    initrd: PathBuf,
    key: RunKey,
    /// The disks of the next boot: the scenario's raw disks, or after a restore of the
    /// set-up guest its overlays.
    disks: Vec<Disk>,
    disk_dir: PathBuf,
    /// Removed with the machine unless the disks are kept.
    /// Saved guest states, in the scratch directory (so a killed run's are swept with its
    /// disks); always removed with the machine. Dropped before the disks.
    snapshots: tempfile::TempDir,
    scratch: ScratchDisks,
    /// Short private directory (0700) for the QMP socket: a socket path must fit 108 bytes,
    /// whatever the results directory is.
    runtime: tempfile::TempDir,
}

/// What a machine's boots take from its scenario: scenarios with the same shape can share one
/// booted machine (their setups differ, their VMs do not).
pub fn vm_shape(s: &Scenario) -> String {
    let devices: Vec<String> = s
        .devices
        .iter()
        .map(|d| format!("{}:{}:{}", d.name, d.size.0, d.dm))
        .collect();
    let fstypes: Vec<&str> = s.filesystem.iter().map(|f| f.fstype.as_str()).collect();
    format!(
        "cpus={} memory={} cmdline={:?} devices={devices:?} fs={fstypes:?}",
        s.vm.cpus, s.vm.memory.0, s.vm.cmdline
    )
}

/// A short directory for sockets: `$XDG_RUNTIME_DIR` or the temporary directory when short
/// enough, else /tmp.
pub fn runtime_base() -> PathBuf {
    let candidates = [
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
        Some(std::env::temp_dir()),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_absolute() && p.as_os_str().len() <= 64 && p.is_dir())
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

impl<'a> QemuMachine<'a> {
    pub fn new(
        scenario: &Scenario,
        kernel: &'a ResolvedKernel,
        image: &'a GuestImage,
        cache: Cache,
        accel: Accel,
        keep_disks: bool,
    ) -> Self {
        QemuMachine {
            scenario: scenario.clone(),
            kernel,
            image,
            cache,
            accel,
            keep_disks,
            restore: RestoreMode::Never,
            prepared: None,
            booted: None,
            booted_state: None,
            looked_up: false,
            set_up: None,
        }
    }

    /// Restores saved guests instead of booting, as `mode` allows.
    pub fn with_restore(mut self, mode: RestoreMode) -> Self {
        self.restore = mode;
        self
    }

    /// What booting or restoring this machine takes. `saveable`: the guest may be saved (see
    /// [`BootSpec::saveable`]).
    fn spec<'s>(
        &'s self,
        prepared: &'s Prepared,
        console_log: &Path,
        saveable: bool,
    ) -> BootSpec<'s> {
        let s = &self.scenario;
        let fstypes: Vec<&str> = s.filesystem.iter().map(|f| f.fstype.as_str()).collect();
        let uses_dm = s.devices.iter().any(|d| d.dm);
        BootSpec {
            kernel: &self.kernel.image,
            initrd: &prepared.initrd,
            image: self.image,
            key: &prepared.key,
            memory_mib: s.vm.memory.0 >> 20,
            cpus: s.vm.cpus,
            disks: prepared.disks.clone(),
            modules: image::boot_modules(&fstypes, uses_dm),
            extra_cmdline: s.vm.cmdline.clone(),
            accel: self.accel,
            console_log: console_log.to_path_buf(),
            qmp_socket: prepared.runtime.path().join("qmp.sock"),
            ready_timeout: Duration::from_secs(if self.accel == Accel::Kvm { 60 } else { 240 }),
            saveable,
        }
    }

    /// Whether the guest about to start may be saved: a booted guest is saved once
    /// (`--restore` other than `never`), a set-up guest after its setup when iterations
    /// restore it and none is saved yet. Guests that are never saved restore copy-on-write
    /// without copying the RAM image.
    fn saveable(&self) -> bool {
        let saves_booted = self.restore.restores_boots() && self.booted_state.is_none();
        let saves_set_up =
            self.restore.restores_iterations(&self.scenario) && self.set_up.is_none();
        saves_booted || saves_set_up
    }

    /// The cache key of this machine's booted guest: everything its saved state depends on.
    fn booted_key(&self) -> String {
        let s = &self.scenario;
        let fstypes: Vec<&str> = s.filesystem.iter().map(|f| f.fstype.as_str()).collect();
        let uses_dm = s.devices.iter().any(|d| d.dm);
        let qemu = crate::host::require("qemu-system-x86_64")
            .map(|p| restore::binary_identity(&p))
            .unwrap_or_default();
        let initrd = self
            .prepared
            .as_ref()
            .map(|p| p.initrd.display().to_string())
            .unwrap_or_default();
        restore::booted_key(&[
            format!("kernel {}", self.kernel.image_sha256),
            format!("image {}", self.image.key),
            format!("initrd {initrd}"),
            format!("memory {} cpus {}", s.vm.memory.0 >> 20, s.vm.cpus),
            format!(
                "disks {:?}",
                s.devices
                    .iter()
                    .map(|d| (&d.name, d.size.0))
                    .collect::<Vec<_>>()
            ),
            format!("modules {:?}", image::boot_modules(&fstypes, uses_dm)),
            format!("cmdline {:?}", s.vm.cmdline),
            format!("accel {:?}", self.accel),
            format!("qemu {qemu}"),
        ])
    }

    fn info(booted: &Booted, kept_disks: Option<PathBuf>, restored: Option<&str>) -> BootInfo {
        let mut command = vec!["qemu-system-x86_64".to_string()];
        command.extend(crate::vm::qemu::qemu_args(booted.vm.config()));
        BootInfo {
            ready_after: booted.ready_after,
            command,
            kept_disks,
            restored: restored.map(str::to_owned),
            phases: booted.phases.clone(),
        }
    }

    fn prepare(&self) -> Result<(Prepared, Option<PathBuf>), MachineError> {
        let initrd = image::initrd_for(self.image, self.kernel, &self.cache)?;
        let io = |path: PathBuf| move |source| MachineError::Io { path, source };
        let devices: Vec<(String, u64)> = self
            .scenario
            .devices
            .iter()
            .map(|d| (d.name.clone(), d.size.0))
            .collect();
        // Freed on every path, including cancellation by Ctrl-C and a kill -9 of crashrig (the
        // disk files are unlinked; see vm::scratch). With --keep they stay.
        let scratch = ScratchDisks::create(&devices, self.keep_disks)?;
        let disks = scratch.disks.clone();
        let snapshots = tempfile::Builder::new()
            .prefix("snapshots-")
            .tempdir_in(scratch.dir())
            .map_err(io(scratch.dir().to_path_buf()))?;
        let base = runtime_base();
        let runtime = tempfile::Builder::new()
            .prefix("crashrig-")
            .tempdir_in(&base)
            .map_err(io(base))?;
        let kept = scratch.kept().map(Path::to_path_buf);
        let prepared = Prepared {
            initrd,
            key: RunKey::generate()?,
            disks,
            disk_dir: scratch.dir().to_path_buf(),
            snapshots,
            scratch,
            runtime,
        };
        Ok((prepared, kept))
    }

    /// Runs a plan once; the error is the transport's.
    async fn send(
        guest: &GuestHandle,
        stdin: Vec<u8>,
        deadline: Duration,
    ) -> (Result<guest::ExecOutput, SshError>, guest::HelperOutput) {
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let result = guest
            .exec(HELPER_COMMAND.into(), stdin, deadline, move |line| {
                sink.lock().expect("lines lock").push(line.to_string())
            })
            .await;
        let lines = lines.lock().expect("lines lock");
        let output = guest::helper::read_output(lines.iter().map(String::as_str));
        (result, output)
    }

    /// A fresh connection that runs `true`, tried until `within` has passed: the guest
    /// answers when this returns one.
    async fn probe(&self, within: Duration) -> Option<GuestHandle> {
        let b = self.booted.as_ref()?;
        let prepared = self.prepared.as_ref()?;
        let port = b.vm.config().ssh_port;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let key = prepared.key.clone();
            let host_key = self.image.host_key.clone();
            let attempt = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(20));
            let connected =
                tokio::task::spawn_blocking(move || Guest::connect(port, &key, &host_key, attempt))
                    .await;
            if let Ok(Ok(g)) = connected {
                let g = GuestHandle::new(g);
                if let Ok(out) = g.exec("true".into(), vec![], attempt, |_| {}).await {
                    if out.status == 0 {
                        return Some(g);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        None
    }

    /// Why a plan failed: the kernel (panic, hang) or the host side (QEMU, transport).
    async fn judge(&mut self, error: SshError, started: Instant, deadline: Duration) -> Abort {
        let why = crate::report::error_chain(&error);
        let Some(b) = self.booted.as_mut() else {
            return Abort::Infra("no VM".into());
        };
        // QEMU exits on panic (panic=-1, -no-reboot): give it a moment to get there.
        let exited = b.vm.wait_exit(Duration::from_secs(2)).await;
        if b.vm.panicked() {
            return Abort::Panic(panic_line(&b.vm.console_tail(60)));
        }
        if let Some(status) = exited {
            return Abort::Infra(format!("QEMU exited ({status}) during the plan"));
        }
        // A guest can only hang while QEMU runs it: a stopped QEMU, or one whose monitor is
        // silent, is the host's failure. It is put out of its misery, the run boots anew.
        let status = match b.vm.health(QMP_WITHIN).await {
            Health::Answers { status } => status,
            Health::Fault(fault) => {
                b.vm.power_cut().await;
                return Abort::Infra(format!("{fault} ({why})"));
            }
        };
        // The stream worked but the plan did not end within its deadline: a step is stuck in
        // the kernel, or the whole guest is. Either way the guest must boot again.
        if matches!(error, SshError::Timeout { .. }) {
            return Abort::Hang(format!("{why}; QEMU answers, guest state `{status}`"));
        }
        // The transport failed: only a guest that answers neither a new connection nor on its
        // console has hung.
        let console_before = b.vm.console_lines();
        let left = deadline.saturating_sub(started.elapsed());
        let within = PROBE_WITHIN.min(left.max(Duration::from_secs(10)));
        let answered = self.probe(within).await;
        let Some(b) = self.booted.as_mut() else {
            return Abort::Infra("no VM".into());
        };
        if let Some(fresh) = answered {
            b.guest = fresh;
            return Abort::Infra(format!(
                "the SSH transport failed while the guest was alive: {why}"
            ));
        }
        if b.vm.console_lines() != console_before {
            return Abort::Infra(format!(
                "the guest stopped answering SSH ({why}) but its console kept writing"
            ));
        }
        Abort::Hang(format!(
            "{why}; the guest answered neither a new connection nor on its console within \
             {within:?} (QEMU answers, guest state `{status}`)"
        ))
    }
}

pub fn panic_line(tail: &[String]) -> String {
    tail.iter()
        .find(|l| l.contains("Kernel panic - not syncing"))
        .map(|l| l.split("] ").nth(1).unwrap_or(l).trim().to_string())
        .unwrap_or_else(|| "kernel panic".into())
}

impl Machine for QemuMachine<'_> {
    async fn boot(&mut self, console_log: &Path) -> Result<BootInfo, MachineError> {
        self.stop().await;
        let mut kept_disks = None;
        let first = self.prepared.is_none();
        if first {
            let (prepared, kept) = self.prepare()?;
            self.prepared = Some(prepared);
            kept_disks = kept;
        }
        let booted_key = self.booted_key();
        if self.restore.restores_boots() && !self.looked_up {
            self.looked_up = true;
            // Another run of this kernel and VM shape saved it: no boot at all.
            if let Ok(Some(cached)) = restore::cached_booted(&self.cache, &booted_key) {
                if let Some(p) = self.prepared.as_mut() {
                    p.key = cached.key;
                }
                self.booted_state = Some((cached.state, Some(cached.entry)));
            }
        }
        let prepared = self.prepared.as_ref().expect("prepared above");
        // A crash step or a hang: the booted guest, on the disks as they are now.
        if let Some((state, entry)) = &self.booted_state {
            if let (Some(entry), true) = (entry, first) {
                let _ = restore::CachedBooted::write_boot_console(entry, console_log);
            }
            let spec = self.spec(prepared, console_log, self.saveable());
            match restore(spec, state.saved()).await {
                Ok(booted) => {
                    let info = Self::info(&booted, kept_disks, Some("booted"));
                    self.booted = Some(booted);
                    return Ok(info);
                }
                // A state that does not load is not used again; this boot is a real one.
                Err(_) => {
                    if let Some(entry) = entry {
                        let _ = self.cache.discard(entry);
                    }
                    self.booted_state = None;
                }
            }
        }
        let saveable = self.saveable();
        let mut booted = boot(self.spec(prepared, console_log, saveable)).await?;
        if self.restore.restores_boots() && self.booted_state.is_none() {
            // Before anything opened a scratch disk, so the guest caches none of its
            // contents. Without a saved state, later boots stay boots.
            match restore::save_booted(
                &mut booted.vm,
                booted.ram.as_ref(),
                &self.cache,
                &booted_key,
                &prepared.key,
                console_log,
            )
            .await
            {
                Ok(state) => self.booted_state = Some((state, None)),
                Err(_) => {
                    if booted.vm.status().await.ok().as_deref() != Some("running") {
                        booted.vm.stop().await;
                        booted = boot(self.spec(prepared, console_log, saveable)).await?;
                    }
                }
            }
        }
        let info = Self::info(&booted, kept_disks, None);
        self.booted = Some(booted);
        Ok(info)
    }

    async fn run_plan(&mut self, plan: &Plan, deadline: Duration) -> PlanRun {
        let started = Instant::now();
        let stdin = serde_json::to_vec(plan).unwrap_or_default();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(b) = self.booted.as_ref() else {
                return PlanRun {
                    reports: vec![],
                    abort: Some(Abort::Infra("no VM".into())),
                };
            };
            let left = deadline.saturating_sub(started.elapsed());
            let (result, output) = Self::send(&b.guest, stdin.clone(), left).await;
            let abort = match result {
                Ok(out) => match output.ending {
                    Ending::Finished => None,
                    Ending::Fatal(message) => {
                        Some(Abort::Infra(format!("guest helper: {message}")))
                    }
                    Ending::Unfinished { unreadable } => Some(Abort::Infra(format!(
                        "guest helper ended without finishing its plan (status {}): {}{}",
                        out.status,
                        out.stderr.trim(),
                        unreadable
                            .first()
                            .map(|l| format!(" (unreadable output: {l})"))
                            .unwrap_or_default()
                    ))),
                },
                // The command never reached the guest: send it again on a new connection.
                Err(e) if e.before_command() && attempt < SEND_ATTEMPTS => {
                    let left = deadline.saturating_sub(started.elapsed());
                    if let Some(fresh) = self.probe(PROBE_WITHIN.min(left)).await {
                        if let Some(b) = self.booted.as_mut() {
                            b.guest = fresh;
                            continue;
                        }
                    }
                    Some(self.judge(e, started, deadline).await)
                }
                Err(e) => Some(self.judge(e, started, deadline).await),
            };
            return PlanRun {
                reports: output.reports,
                abort,
            };
        }
    }

    fn console_tail(&self, lines: usize) -> Vec<String> {
        self.booted
            .as_ref()
            .map(|b| b.vm.console_tail(lines))
            .unwrap_or_default()
    }

    fn is_running(&mut self) -> bool {
        self.booted
            .as_mut()
            .is_some_and(|b| b.vm.exited().is_none())
    }

    async fn power_cut(&mut self) {
        if let Some(b) = self.booted.as_mut() {
            b.vm.power_cut().await;
        }
    }

    async fn panic(&mut self) {
        let Some(b) = self.booted.as_mut() else {
            return;
        };
        let guest = b.guest.clone();
        let stdin =
            serde_json::to_vec(&guest::helper::plan("panic", [Op::Panic])).unwrap_or_default();
        // The connection dies with the kernel; the result does not matter.
        tokio::spawn(async move {
            guest
                .exec(
                    HELPER_COMMAND.into(),
                    stdin,
                    Duration::from_secs(30),
                    |_| {},
                )
                .await
        });
        if b.vm.wait_exit(Duration::from_secs(60)).await.is_none() {
            b.vm.power_cut().await;
        }
    }

    async fn reboot(&mut self) {
        let Some(b) = self.booted.as_mut() else {
            return;
        };
        let guest = b.guest.clone();
        tokio::spawn(async move {
            guest
                .exec(
                    "sync; reboot".into(),
                    vec![],
                    Duration::from_secs(30),
                    |_| {},
                )
                .await
        });
        if b.vm.wait_exit(Duration::from_secs(120)).await.is_none() {
            b.vm.power_cut().await;
        }
    }

    async fn unplug(&mut self, serial: &str, within: Duration) -> Result<(), MachineError> {
        let b = self.booted.as_mut().ok_or(MachineError::NotRunning)?;
        Ok(b.vm.unplug(serial, within).await?)
    }

    async fn replug(&mut self, serial: &str) -> Result<(), MachineError> {
        let b = self.booted.as_mut().ok_or(MachineError::NotRunning)?;
        Ok(b.vm.replug(serial).await?)
    }

    async fn stop(&mut self) {
        if let Some(mut b) = self.booted.take() {
            b.vm.stop().await;
        }
    }

    async fn save_set_up(&mut self, key: &str) -> Result<(), MachineError> {
        let prepared = self.prepared.as_ref().ok_or(MachineError::NotRunning)?;
        let b = self.booted.as_mut().ok_or(MachineError::NotRunning)?;
        let ram = b.ram.take();
        let saved = SetUp::freeze(&mut b.vm, ram, &prepared.disks, prepared.snapshots.path()).await;
        self.stop().await;
        self.set_up = Some((key.to_string(), saved?));
        Ok(())
    }

    fn has_set_up(&self, key: &str) -> bool {
        self.set_up.as_ref().is_some_and(|(k, _)| k == key)
    }

    async fn restore_set_up(&mut self, console_log: &Path) -> Result<BootInfo, MachineError> {
        let restored = self.restore_set_up_once(console_log).await;
        if restored.is_err() {
            self.forget_set_up();
        }
        restored
    }
}

impl QemuMachine<'_> {
    /// After a restore of the set-up guest failed (its files removed, a full disk, a state
    /// that does not load), the caller boots and sets up again: on the scenario's own disks,
    /// writable again, not on overlays that may be gone or half made.
    fn forget_set_up(&mut self) {
        self.set_up = None;
        if let Some(p) = self.prepared.as_mut() {
            p.disks = p.scratch.disks.clone();
            for disk in &p.disks {
                let writable = std::os::unix::fs::PermissionsExt::from_mode(0o600);
                let _ = std::fs::set_permissions(&disk.path, writable);
            }
        }
    }

    async fn restore_set_up_once(&mut self, console_log: &Path) -> Result<BootInfo, MachineError> {
        self.stop().await;
        let (_, set_up) = self.set_up.as_ref().ok_or(MachineError::NoSetUp)?;
        let prepared = self.prepared.as_mut().ok_or(MachineError::NoSetUp)?;
        prepared.disks = set_up.fresh_disks(&prepared.disk_dir)?;
        let prepared = self.prepared.as_ref().expect("checked above");
        let spec = self.spec(prepared, console_log, false);
        let booted = restore(spec, set_up.saved()).await?;
        let info = Self::info(&booted, None, Some("set-up"));
        self.booted = Some(booted);
        Ok(info)
    }
}
