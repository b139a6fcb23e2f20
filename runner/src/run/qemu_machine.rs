//! The machine of real runs: QEMU for the VM, SSH to the guest helper.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crashrig_guest::{Op, Plan};

use super::boot::{boot, restore, BootSpec, Booted};
use super::machine::{BootInfo, Machine, MachineError, PlanRun};
use super::restore::{self, RestoreMode, SetUp};
use super::stuck::{self, Stuck};
use super::verdict::Abort;
use crate::cache::Cache;
use crate::guest::{self, Ending, Guest, GuestError, GuestHandle, RunKey, HELPER_COMMAND};
use crate::image::{self, GuestImage};
use crate::kernel::ResolvedKernel;
use crate::scenario::Scenario;
use crate::vm::{Accel, Disk, Health, ScratchDisks};

/// Attempts at a plan whose command never reached the guest (channel not opened).
const SEND_ATTEMPTS: u32 = 3;

/// How long a guest that failed a transport gets to answer a fresh connection before it
/// counts as not answering. Bounded by the plan's own deadline.
const PROBE_WITHIN: Duration = Duration::from_secs(60);

/// The `reboot` step in the guest: what busybox init does for `reboot` (sync, SIGTERM to every
/// process, SIGKILL to what is left, sync, reboot) without its two fixed one-second pauses:
/// the processes get up to a second to exit on SIGTERM, and the reboot goes on as soon as
/// they have (kernel threads and zombies have an empty `cmdline`). It cost every reboot step
/// 2 s of waiting. The shell doing it is in a session of its own: `kill -1` spares only the
/// caller, and the SSH session it came from is among what it kills.
const CLEAN_REBOOT: &str = "setsid sh -c 'sync; kill -TERM -1; i=0; while [ $i -lt 20 ]; \
    do left=; for p in /proc/[0-9]*; do n=${p#/proc/}; [ $n = 1 ] || [ $n = $$ ] && continue; \
    x=; read -r x < $p/cmdline 2>/dev/null; [ -n \"$x\" ] && left=$n && break; done; \
    [ -z \"$left\" ] && break; sleep 0.05; i=$((i+1)); done; \
    kill -KILL -1; sync; reboot -f' </dev/null >/dev/null 2>&1 &";

/// How long QEMU's monitor gets to answer `query-status` when a plan failed: silence means
/// QEMU itself is not running, not the guest.
const QMP_WITHIN: Duration = Duration::from_secs(10);

/// How long a guest whose plan missed its deadline gets to answer a new connection and say
/// what the plan is stuck on (default: 20 s): a guest that hung whole does not answer, and
/// its hang is judged that much later.
const STUCK_WITHIN: Duration = Duration::from_secs(20);

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
    /// Where the disks are kept (`--keep`), until the first start reports it.
    kept: Option<PathBuf>,
    booted: Option<Booted>,
    /// The guest just booted, saved once or found in the cache (`--restore`), restored
    /// instead of later boots.
    booted_state: Option<SavedBooted>,
    /// The cache was asked for a booted guest (once per machine).
    looked_up: bool,
    /// The set-up guest, saved under the key of the setup it ran.
    set_up: Option<(String, SetUp)>,
    /// The setup key the cache was last asked for (once per key).
    looked_up_set_up: Option<String>,
}

/// A saved booted guest, the key it trusts, and its cache entry when an earlier run saved it.
struct SavedBooted {
    state: restore::PinnedGuest,
    key: RunKey,
    entry: Option<PathBuf>,
}

/// What every boot of one machine shares.
struct Prepared {
    initrd: PathBuf,
    /// The key the running guest trusts: a new one for boots, the saved one for restores.
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
    /// whatever the results directory is. Swept by the next run when crashrig is killed.
    runtime: crate::vm::scratch::RuntimeDir,
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

/// The cache key of a booted guest (see `restore::booted_key`): the kernel, the guest image
/// (its helper included), the initramfs, the VM shape, the accelerator and the QEMU binary.
pub fn booted_key(
    s: &Scenario,
    kernel_sha256: &str,
    image_key: &str,
    initrd: &str,
    accel: Accel,
    qemu: &str,
) -> String {
    let fstypes: Vec<&str> = s.filesystem.iter().map(|f| f.fstype.as_str()).collect();
    let uses_dm = s.devices.iter().any(|d| d.dm);
    restore::booted_key(&[
        format!("kernel {kernel_sha256}"),
        format!("image {image_key}"),
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
        format!("accel {accel:?}"),
        format!("qemu {qemu}"),
    ])
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
            kept: None,
            booted: None,
            booted_state: None,
            looked_up: false,
            set_up: None,
            looked_up_set_up: None,
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
            agent_channel: self.restore != RestoreMode::Never,
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
        let qemu = crate::host::require("qemu-system-x86_64")
            .map(|p| restore::binary_identity(&p))
            .unwrap_or_default();
        let initrd = self
            .prepared
            .as_ref()
            .map(|p| p.initrd.display().to_string())
            .unwrap_or_default();
        booted_key(
            &self.scenario,
            &self.kernel.image_sha256,
            &self.image.key,
            &initrd,
            self.accel,
            &qemu,
        )
    }

    /// Prepares the machine unless it is: whether this was the first time.
    fn ensure_prepared(&mut self) -> Result<bool, MachineError> {
        if self.prepared.is_some() {
            return Ok(false);
        }
        let (prepared, kept) = self.prepare()?;
        self.prepared = Some(prepared);
        self.kept = kept;
        Ok(true)
    }

    fn info(&mut self, booted: &Booted, restored: Option<&str>, from_cache: bool) -> BootInfo {
        let mut command = vec!["qemu-system-x86_64".to_string()];
        command.extend(crate::vm::qemu::qemu_args(booted.vm.config()));
        BootInfo {
            ready_after: booted.ready_after,
            command,
            kept_disks: self.kept.take(),
            restored: restored.map(str::to_owned),
            from_cache,
            phases: booted.phases.clone(),
            transport: booted.guest.transport(),
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
        let runtime = crate::vm::scratch::RuntimeDir::create()?;
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
    ) -> (Result<guest::ExecOutput, GuestError>, guest::HelperOutput) {
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

    /// What a plan past its deadline is stuck on ([`stuck`]), read over a new connection
    /// tried for `within`; None when the guest does not answer one. The new connection
    /// replaces the old, out of step after the missed deadline.
    async fn stuck_on(&mut self, within: Duration) -> Option<Stuck> {
        let fresh = self.probe(within).await?;
        let out = fresh
            .exec(stuck::SCRIPT.into(), vec![], within, |_| {})
            .await
            .ok()?;
        if let Some(b) = self.booted.as_mut() {
            b.guest = fresh;
        }
        Some(stuck::judge(&out.stdout))
    }

    /// Why a plan failed: the kernel (panic, hang) or the host side (QEMU, transport).
    async fn judge(&mut self, error: GuestError, started: Instant, deadline: Duration) -> Abort {
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
            // No step of the plan asks for it: the kernel under test ended the machine.
            if b.vm.ended_by_guest() {
                return Abort::Panic(guest_reset_line(&b.vm.console_tail(60)));
            }
            return Abort::Infra(format!("QEMU exited ({status}) during the plan"));
        }
        // A guest can only hang while QEMU runs it: a stopped QEMU, or one whose monitor is
        // silent, is the host's failure. It is put out of its misery, the run boots anew.
        let status = match b.vm.health(QMP_WITHIN).await {
            Health::Answers { status } => status,
            Health::Fault(fault) => {
                b.vm.kill().await;
                return Abort::Infra(format!("{fault} ({why})"));
            }
        };
        // The stream worked but the plan did not end within its deadline: a step is stuck in
        // the kernel, or the whole guest is. Either way the guest must boot again.
        if let GuestError::Timeout { timeout, .. } = error {
            if let Some(stale) = self.stale_translation().await {
                return Abort::Infra(format!("{why}; {stale}"));
            }
            // The engine names the step that was running; the helper's command line is noise.
            let late = format!("the plan's {timeout:.1?} deadline passed");
            let hang = format!("{late}; QEMU answers, guest state `{status}`");
            // A guest that answers a new connection shows what the plan is stuck on (a
            // guest QEMU does not run, paused say, cannot answer).
            if status != "running" {
                return Abort::Hang(hang);
            }
            return match self.stuck_on(STUCK_WITHIN).await {
                Some(Stuck::Stopped(why)) => Abort::Infra(format!("{late}: {why}")),
                Some(Stuck::Hang(what)) if !what.is_empty() => {
                    Abort::Hang(format!("{hang}; {what}"))
                }
                _ => Abort::Hang(hang),
            };
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
                "the transport to the guest failed while the guest was alive: {why}"
            ));
        }
        if b.vm.console_lines() != console_before {
            return Abort::Infra(format!(
                "the guest stopped answering SSH ({why}) but its console kept writing"
            ));
        }
        if let Some(stale) = self.stale_translation().await {
            return Abort::Infra(format!("{why}; {stale}"));
        }
        Abort::Hang(format!(
            "{why}; the guest answered neither a new connection nor on its console within \
             {within:?} (QEMU answers, guest state `{status}`)"
        ))
    }

    /// A restored TCG guest whose console shows a vCPU looping on a stale translation of
    /// patched kernel code ([`crate::outcome::tcg`]): QEMU's failure, not a kernel hang, so
    /// the iteration is an infrastructure error and does not count in the rates. Such a
    /// guest never recovers: it is stopped here.
    async fn stale_translation(&mut self) -> Option<String> {
        let b = self.booted.as_mut()?;
        if self.accel != Accel::Tcg || !b.restored {
            return None;
        }
        let stale = crate::outcome::tcg::stale_translation(&b.vm.console_tail(400).join("\n"))?;
        b.vm.kill().await;
        Some(stale)
    }
}

/// What ended the wait for a plan first.
enum Woke {
    Sent((Result<guest::ExecOutput, GuestError>, guest::HelperOutput)),
    Stale(String),
    AgentGone,
}

/// How often a restored TCG guest's console is read for a stale translation while a plan runs.
const STALE_WATCH_EVERY: Duration = Duration::from_secs(5);

/// Resolves, with its description, once `console()` (read every `every`) shows a vCPU on a
/// stale translation ([`crate::outcome::tcg`]); pending forever otherwise.
async fn stale_translation_seen(console: impl Fn() -> String, every: Duration) -> String {
    loop {
        tokio::time::sleep(every).await;
        if let Some(why) = crate::outcome::tcg::stale_translation(&console()) {
            return why;
        }
    }
}

/// Why the helper ended before its plan did: its exit status as a shell reports it (128 +
/// a signal), what it said on stderr, or that it said nothing.
fn unfinished_helper(status: i32, stderr: &str, unreadable: Option<&str>) -> String {
    let how = match status {
        137 => "was killed by SIGKILL (status 137): something in the guest killed it, a step's \
                `kill -9 $PPID` or `pkill`, or the kernel's OOM killer"
            .to_string(),
        129..=192 => format!(
            "was killed by signal {} (status {status})",
            signal_name(status - 128)
        ),
        _ => format!("exited with status {status}"),
    };
    let said = match stderr.trim() {
        "" => "; it wrote nothing on stderr".to_string(),
        text => format!("; stderr: {text}"),
    };
    let unreadable = unreadable
        .map(|l| format!(" (unreadable output: {l})"))
        .unwrap_or_default();
    format!("guest helper ended without finishing its plan: it {how}{said}{unreadable}")
}

/// `SIGTERM`, or the number when it has no common name.
fn signal_name(n: i32) -> String {
    let name = match n {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return n.to_string(),
    };
    name.to_string()
}

pub fn panic_line(tail: &[String]) -> String {
    tail.iter()
        .find(|l| l.contains("Kernel panic - not syncing"))
        .map(|l| l.split("] ").nth(1).unwrap_or(l).trim().to_string())
        .unwrap_or_else(|| "kernel panic".into())
}

/// Why a guest that reset or powered off by itself ended: its last console line.
pub fn guest_reset_line(tail: &[String]) -> String {
    let last = tail
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| !l.is_empty())
        .map(|l| l.split_once("] ").map_or(l, |(_, text)| text).trim());
    match last {
        Some(line) => format!("the guest reset or powered off the machine, no step asked for it (its console's last line: {line})"),
        None => "the guest reset or powered off the machine, no step asked for it".into(),
    }
}

impl Machine for QemuMachine<'_> {
    async fn boot(&mut self, console_log: &Path) -> Result<BootInfo, MachineError> {
        self.stop().await;
        let first = self.ensure_prepared()?;
        let booted_key = self.booted_key();
        if self.restore.restores_boots() && !self.looked_up {
            self.looked_up = true;
            // Another run of this kernel and VM shape saved it: no boot at all.
            if let Ok(Some(cached)) = restore::cached_booted(&self.cache, &booted_key) {
                self.booted_state = Some(SavedBooted {
                    state: cached.state,
                    key: cached.key,
                    entry: Some(cached.entry),
                });
            }
        }
        // A crash step or a hang: the booted guest, on the disks as they are now.
        if let Some(saved) = &self.booted_state {
            if let (Some(entry), true) = (&saved.entry, first) {
                let _ = restore::CachedBooted::write_boot_console(entry, console_log);
            }
            let from_cache = saved.entry.is_some();
            let saveable = self.saveable();
            let prepared = self.prepared.as_mut().expect("prepared above");
            prepared.key = saved.key.clone();
            let prepared = self.prepared.as_ref().expect("prepared above");
            let spec = self.spec(prepared, console_log, saveable);
            match restore(spec, saved.state.saved()).await {
                Ok(booted) => {
                    let info = self.info(&booted, Some("booted"), from_cache);
                    self.booted = Some(booted);
                    return Ok(info);
                }
                // A state that does not load is not used again; this boot is a real one.
                Err(_) => {
                    if let Some(entry) = &saved.entry {
                        let _ = self.cache.discard(entry);
                    }
                    self.booted_state = None;
                }
            }
        }
        let prepared = self.prepared.as_ref().expect("prepared above");
        let saveable = self.saveable();
        let mut booted = boot(self.spec(prepared, console_log, saveable)).await?;
        if self.restore.restores_boots() && self.booted_state.is_none() {
            // Before anything opened a scratch disk, so the guest caches none of its
            // contents. Without a saved state, later boots stay boots.
            match restore::save_booted(
                &mut booted,
                &self.cache,
                &booted_key,
                &prepared.key,
                console_log,
            )
            .await
            {
                Ok(state) => {
                    self.booted_state = Some(SavedBooted {
                        state,
                        key: prepared.key.clone(),
                        entry: None,
                    })
                }
                Err(_) => {
                    if booted.vm.status().await.ok().as_deref() != Some("running") {
                        booted.vm.stop().await;
                        booted = boot(self.spec(prepared, console_log, saveable)).await?;
                    }
                }
            }
        }
        let info = self.info(&booted, None, false);
        self.booted = Some(booted);
        Ok(info)
    }

    async fn run_plan(&mut self, plan: &Plan, deadline: Duration) -> PlanRun {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let accel = self.accel;
            let Some(b) = self.booted.as_mut() else {
                return PlanRun {
                    reports: vec![],
                    abort: Some(Abort::Infra("no VM".into())),
                };
            };
            let left = deadline.saturating_sub(started.elapsed());
            // A restored guest's first plan refreshes it before its first step.
            let stdin = if b.refresh_owed {
                let mut owed = plan.clone();
                owed.refresh = Some(guest::helper::refresh());
                serde_json::to_vec(&owed)
            } else {
                serde_json::to_vec(plan)
            }
            .unwrap_or_default();
            // Watched while the plan runs, so that a guest that cannot answer is not waited
            // for until the plan's deadline (up to the scenario's whole iteration-timeout):
            // a restored TCG guest's console, for a vCPU caught on a stale translation (it
            // never recovers); and the agent's port, which the guest closes when the agent
            // process is gone (its channel would just fall silent).
            let sent = {
                let watch_stale = b.restored && accel == Accel::Tcg;
                let watch_agent = b.guest.transport() == "agent";
                let console = b.vm.console_reader();
                let send = Self::send(&b.guest, stdin, left);
                tokio::pin!(send);
                let woke = tokio::select! {
                    sent = &mut send => Woke::Sent(sent),
                    why = async {
                        if !watch_stale {
                            std::future::pending::<()>().await;
                        }
                        stale_translation_seen(|| console(400).join("\n"), STALE_WATCH_EVERY).await
                    } => Woke::Stale(why),
                    () = async {
                        if !watch_agent {
                            std::future::pending::<()>().await;
                        }
                        b.vm.agent_port_closed().await
                    } => Woke::AgentGone,
                };
                match woke {
                    Woke::Sent(sent) => Ok(sent),
                    Woke::Stale(why) => Err(why),
                    // The command's wait ends at once, with the channel closed: judged below as
                    // any transport that broke.
                    Woke::AgentGone => {
                        b.vm.close_agent();
                        Ok(send.await)
                    }
                }
            };
            let (result, output) = match sent {
                Ok(sent) => sent,
                Err(why) => {
                    if let Some(b) = self.booted.as_mut() {
                        b.vm.kill().await;
                    }
                    return PlanRun {
                        reports: vec![],
                        abort: Some(Abort::Infra(format!("stopped during the plan: {why}"))),
                    };
                }
            };
            if output.ending == Ending::Finished {
                if let Some(b) = self.booted.as_mut() {
                    b.refresh_owed = false;
                }
            }
            let abort = match result {
                Ok(out) => match output.ending {
                    Ending::Finished => None,
                    Ending::Fatal(message) => {
                        Some(Abort::Infra(format!("guest helper: {message}")))
                    }
                    Ending::Unfinished { unreadable } => Some(Abort::Infra(unfinished_helper(
                        out.status,
                        &out.stderr,
                        unreadable.first().map(String::as_str),
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
                .exec(CLEAN_REBOOT.into(), vec![], Duration::from_secs(30), |_| {})
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
        let cache_key = restore::set_up_key(&self.booted_key(), key);
        let prepared = self.prepared.as_ref().ok_or(MachineError::NotRunning)?;
        let b = self.booted.as_mut().ok_or(MachineError::NotRunning)?;
        let saved = SetUp::freeze(
            b,
            &prepared.disks,
            prepared.snapshots.path(),
            &self.cache,
            &cache_key,
            &prepared.key,
        )
        .await;
        self.stop().await;
        self.set_up = Some((key.to_string(), saved?));
        Ok(())
    }

    async fn find_set_up(&mut self, key: &str) -> bool {
        if self.set_up.as_ref().is_some_and(|(k, _)| k == key) {
            return true;
        }
        if !self.restore.restores_boots() || self.looked_up_set_up.as_deref() == Some(key) {
            return false;
        }
        self.looked_up_set_up = Some(key.to_string());
        if self.ensure_prepared().is_err() {
            return false;
        }
        let cache_key = restore::set_up_key(&self.booted_key(), key);
        let serials: Vec<String> = self
            .scenario
            .devices
            .iter()
            .map(|d| d.name.clone())
            .collect();
        let Some(prepared) = self.prepared.as_ref() else {
            return false;
        };
        match SetUp::cached(&self.cache, &cache_key, &serials, prepared.snapshots.path()).await {
            Ok(Some(set_up)) => {
                self.set_up = Some((key.to_string(), set_up));
                true
            }
            _ => false,
        }
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
    /// After a restore of the set-up guest failed (its overlay templates removed, a full
    /// disk, a state that does not load), the caller boots and sets up again: on the
    /// scenario's own disks, not on overlays that may be gone or half made.
    fn forget_set_up(&mut self) {
        self.set_up = None;
        if let Some(p) = self.prepared.as_mut() {
            p.disks = p.scratch.disks.clone();
        }
    }

    async fn restore_set_up_once(&mut self, console_log: &Path) -> Result<BootInfo, MachineError> {
        // The guest running now (the last iteration's) is never needed again: its power is
        // cut rather than asking QEMU to quit, and it is reaped in the background. Nothing
        // waits for it: the next guest gets new overlay files (its own have no other user),
        // a new socket, port and console, and maps the same RAM image copy-on-write.
        if let Some(mut b) = self.booted.take() {
            tokio::spawn(async move { b.vm.kill().await });
        }
        let (_, set_up) = self.set_up.as_ref().ok_or(MachineError::NoSetUp)?;
        let prepared = self.prepared.as_mut().ok_or(MachineError::NoSetUp)?;
        prepared.disks = set_up.fresh_disks(&prepared.disk_dir)?;
        prepared.key = set_up.key().clone();
        let prepared = self.prepared.as_ref().expect("checked above");
        let from_cache = set_up.from_cache.is_some();
        let spec = self.spec(prepared, console_log, false);
        match restore(spec, set_up.saved()).await {
            Ok(booted) => {
                let info = self.info(&booted, Some("set-up"), from_cache);
                self.booted = Some(booted);
                Ok(info)
            }
            // A state that does not load is not used again (and `restore_set_up` forgets it).
            Err(e) => {
                if let Some(entry) = &set_up.from_cache {
                    let _ = self.cache.discard(entry);
                }
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::plan;
    use crate::scenario::{load_str, load_str_with, Setting};

    #[test]
    fn a_helper_that_ended_early_says_how_even_when_stderr_is_empty() {
        assert_eq!(
            unfinished_helper(137, "", None),
            "guest helper ended without finishing its plan: it was killed by SIGKILL (status \
             137): something in the guest killed it, a step's `kill -9 $PPID` or `pkill`, or \
             the kernel's OOM killer; it wrote nothing on stderr"
        );
        assert_eq!(
            unfinished_helper(143, "  \n", Some("garbage")),
            "guest helper ended without finishing its plan: it was killed by signal SIGTERM \
             (status 143); it wrote nothing on stderr (unreadable output: garbage)"
        );
        assert_eq!(
            unfinished_helper(1, "error: bad plan\n", None),
            "guest helper ended without finishing its plan: it exited with status 1; stderr: \
             error: bad plan"
        );
    }

    const BASE: &str = "\
name: t
vm: { memory: 1G, cpus: 2 }
parameters:
  files: { default: 4, values: [4, 8] }
devices: [{ name: scratch, size: 1G }]
filesystem: { type: xfs, mkfs-options: [-f], mount-options: [noatime] }
setup:
  - mkfs: {}
  - mount: {}
  - run: { command: 'touch /mnt/ready' }
  - write-data: { files: \"${files}\", size: 64K }
steps:
  - power-cut: {}
  - mount: {}
";

    #[test]
    fn a_guest_reset_names_the_consoles_last_line() {
        let tail: Vec<String> = [
            "[    4.1] crashrig: iteration 1 step 1 run",
            "[    4.2] sysrq: Resetting",
            "",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            guest_reset_line(&tail),
            "the guest reset or powered off the machine, no step asked for it (its console's \
             last line: sysrq: Resetting)"
        );
        assert_eq!(
            guest_reset_line(&[]),
            "the guest reset or powered off the machine, no step asked for it"
        );
    }

    #[tokio::test]
    async fn a_stale_translation_on_the_console_ends_the_watch_and_a_clean_console_never_does() {
        let fixture = |name: &str| {
            std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures/dmesg")
                    .join(name),
            )
            .unwrap()
        };
        let hung = fixture("tcg-stale-int3-nop5.log");
        // The console grows: clean at first, the lockup reports from the third read on.
        let reads = std::sync::atomic::AtomicU32::new(0);
        let console = || {
            if reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                String::from("[    3.1] crashrig: iteration 1 step 1\n")
            } else {
                hung.clone()
            }
        };
        let why = stale_translation_seen(console, Duration::from_millis(5)).await;
        assert!(why.contains("lockup"), "{why}");
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 3);
        // A kernel's own lockup (syzbot's report, a real spin loop) is not QEMU's.
        let own = fixture("rcu-stall-soft-lockup-syzbot.log");
        let watch = stale_translation_seen(|| own.clone(), Duration::from_millis(5));
        assert!(
            tokio::time::timeout(Duration::from_millis(100), watch)
                .await
                .is_err(),
            "a kernel lockup ended the watch"
        );
    }

    /// The cache key of the set-up guest of `text` (with `setting`) on the given host-side
    /// inputs, as `QemuMachine::save_set_up` makes it.
    fn key_with(text: &str, setting: &Setting, seed: u64, host: [&str; 4], accel: Accel) -> String {
        let s = load_str_with(text, "t.yaml", setting).unwrap().scenario;
        let [kernel, image, initrd, qemu] = host;
        let booted = booted_key(&s, kernel, image, initrd, accel, qemu);
        let setup = plan::setup_key(&s, seed, plan::iteration_seed(seed, u32::MAX));
        restore::set_up_key(&booted, &setup)
    }

    const HOST: [&str; 4] = ["kernel-sha", "image-key", "/cache/initrd", "qemu 1 2"];

    fn key(text: &str) -> String {
        key_with(text, &Setting::new(), 7, HOST, Accel::Tcg)
    }

    fn edit(from: &str, to: &str) -> String {
        assert!(BASE.contains(from), "{from}");
        BASE.replace(from, to)
    }

    #[test]
    fn every_edit_that_changes_the_set_up_guest_changes_its_cache_key() {
        let base = key(BASE);
        let edits = [
            ("setup command", edit("touch /mnt/ready", "touch /mnt/go")),
            (
                "setup step added",
                edit(
                    "  - mount: {}\n  - run",
                    "  - mount: {}\n  - sync: {}\n  - run",
                ),
            ),
            (
                "mkfs options",
                edit("mkfs-options: [-f]", "mkfs-options: [-f, -m, crc=0]"),
            ),
            (
                "mount options",
                edit("mount-options: [noatime]", "mount-options: [sync]"),
            ),
            (
                "filesystem type",
                edit(
                    "type: xfs, mkfs-options: [-f]",
                    "type: ext4, mkfs-options: [-F]",
                ),
            ),
            ("device size", edit("size: 1G }]", "size: 2G }]")),
            ("device name", edit("name: scratch", "name: disk")),
            (
                "device-mapper",
                edit("size: 1G }]", "size: 1G, dm: true }]"),
            ),
            ("parameter default", edit("default: 4,", "default: 8,")),
            ("memory", edit("memory: 1G", "memory: 2G")),
            ("cpus", edit("cpus: 2", "cpus: 1")),
            (
                "kernel command line",
                edit("cpus: 2 }", "cpus: 2, cmdline: [quiet] }"),
            ),
        ];
        let mut seen = std::collections::HashMap::from([(base.clone(), "base")]);
        for (what, text) in &edits {
            load_str(text, "t.yaml").unwrap_or_else(|e| panic!("{what}: {e}"));
            let k = key(text);
            if let Some(earlier) = seen.insert(k, what) {
                panic!("{what} gives the same key as {earlier}");
            }
        }
        // What the scenario does not write.
        let host_edits = [
            (
                "kernel",
                ["other-kernel", HOST[1], HOST[2], HOST[3]],
                Accel::Tcg,
            ),
            (
                "guest image and helper",
                [HOST[0], "other-image", HOST[2], HOST[3]],
                Accel::Tcg,
            ),
            (
                "initramfs",
                [HOST[0], HOST[1], "/cache/other", HOST[3]],
                Accel::Tcg,
            ),
            (
                "QEMU binary",
                [HOST[0], HOST[1], HOST[2], "qemu 1 3"],
                Accel::Tcg,
            ),
            ("accelerator", HOST, Accel::Kvm),
        ];
        for (what, host, accel) in host_edits {
            let k = key_with(BASE, &Setting::new(), 7, host, accel);
            if let Some(earlier) = seen.insert(k, what) {
                panic!("{what} gives the same key as {earlier}");
            }
        }
        let setting = Setting::from([("files".to_string(), "8".to_string())]);
        let k = key_with(BASE, &setting, 7, HOST, Accel::Tcg);
        assert_ne!(k, base, "--param files=8");
        assert_eq!(
            k,
            key(&edit("default: 4,", "default: 8,")),
            "the same setting as a default"
        );
        // Setup writes seeded data: another seed, other data.
        let k = key_with(BASE, &Setting::new(), 8, HOST, Accel::Tcg);
        assert!(seen.insert(k, "seed").is_none(), "another seed");
    }

    #[test]
    fn edits_that_leave_the_set_up_guest_alone_keep_its_cache_key() {
        let base = key(BASE);
        for (what, text) in [
            (
                "steps",
                edit("  - power-cut: {}\n", "  - power-cut: {}\n  - sync: {}\n"),
            ),
            ("name", edit("name: t", "name: other")),
            ("iterations", edit("name: t\n", "name: t\niterations: 9\n")),
        ] {
            assert_eq!(key(&text), base, "{what}");
        }
        let no_data = edit(
            "  - write-data: { files: \"${files}\", size: 64K }\n",
            "  - run: { command: 'echo ${files}' }\n",
        );
        assert_eq!(
            key_with(&no_data, &Setting::new(), 7, HOST, Accel::Tcg),
            key_with(&no_data, &Setting::new(), 8, HOST, Accel::Tcg),
            "a setup without seeded steps is the same whatever the seed"
        );
    }
}
