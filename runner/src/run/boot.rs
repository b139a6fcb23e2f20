//! Booting a guest and waiting until it answers over SSH.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::guest::{Guest, GuestError, GuestHandle, RunKey};
use crate::image::GuestImage;
use crate::report::BootPhase;
use crate::vm::ram::{GuestRam, RamBackend};
use crate::vm::snapshot::{self, Saved, SnapshotError};
use crate::vm::{Accel, Disk, Vm, VmConfig, VmError};

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(
        "QEMU exited ({status}) before the guest answered on SSH; last console lines:\n{tail}"
    )]
    DiedBeforeReady { status: String, tail: String },
    #[error("the guest's init gave up: {why}; last console lines:\n{tail}")]
    InitFailed { why: String, tail: String },
    #[error("the guest did not answer on SSH within {timeout:?} (last error: {last}); last console lines:\n{tail}")]
    NotReady {
        timeout: Duration,
        last: String,
        tail: String,
    },
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error("cannot restore the saved guest")]
    Restore(#[from] SnapshotError),
}

/// Everything needed to boot one VM.
pub struct BootSpec<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub image: &'a GuestImage,
    pub key: &'a RunKey,
    pub memory_mib: u64,
    pub cpus: u32,
    /// Scenario disks (in order) followed by nothing: the tools disk is added here.
    pub disks: Vec<Disk>,
    pub modules: Vec<String>,
    pub extra_cmdline: Vec<String>,
    pub accel: Accel,
    pub console_log: PathBuf,
    pub qmp_socket: PathBuf,
    pub ready_timeout: Duration,
    /// The VM gets the agent channel's port (`guest::agent`): a restore must have it when the
    /// guest was saved with it, so every VM of a machine that may save or restore has it, and
    /// none of one that never does (the port costs a boot about 0.1 s under TCG: one more
    /// device to probe, virtio_console to load).
    pub agent_channel: bool,
    /// The guest may be saved: it runs on RAM crashrig holds ([`Booted::ram`]), so saving
    /// it streams only device state. A restore then copies the RAM image into it (a guest
    /// that is never saved maps the image copy-on-write instead: nothing is copied).
    pub saveable: bool,
}

pub struct Booted {
    pub vm: Vm,
    pub guest: GuestHandle,
    /// From QEMU start to an authenticated SSH session.
    pub ready_after: Duration,
    /// Where the time went, stage by stage (see [`BootPhase`]).
    pub phases: Vec<BootPhase>,
    /// The guest's RAM when it is saveable ([`BootSpec::saveable`]).
    pub ram: Option<GuestRam>,
    /// A restored guest still owes its refresh (fresh entropy, the host's clock): the first
    /// plan sent to it carries one ([`crate::guest::helper::refresh`]), before its first
    /// step, instead of a command of its own (each command costs a process start in the
    /// guest, and under TCG the first ones after a restore run on untranslated code).
    pub refresh_owed: bool,
    /// Started from a saved state rather than booted.
    pub restored: bool,
    /// The guest serves the agent channel (`guest::agent`): a booted one whose init said so,
    /// a restored one whose saved state did. What a save of this guest records.
    pub agent: bool,
}

/// How long a guest gets to start the spare helper before a save.
const SPARE_WITHIN: Duration = Duration::from_secs(15);

impl Booted {
    /// Before the guest is saved: over its agent channel, the helper command started ahead
    /// as a spare waiting for its plan, saved with the guest, so a restore's first plan
    /// starts no process (under TCG the first fork and exec after a restore took 0.11 s).
    /// A guest without the channel, or one that fails to start it, is saved as it is: its
    /// restores start the helper as usual.
    pub async fn prepare_spare(&mut self) {
        if !self.agent {
            return;
        }
        let command = crate::guest::HELPER_COMMAND.to_string();
        if self.guest.transport() == "agent" {
            let _ = self.guest.prepare(command, SPARE_WITHIN).await;
        } else if let Some(stream) = self.vm.agent_stream() {
            let _ = tokio::task::spawn_blocking(move || {
                crate::guest::agent::Agent::new(stream).prepare(&command, SPARE_WITHIN)
            })
            .await;
        }
    }
}

/// Times consecutive stages: each [`Laps::lap`] records the time since the previous one.
/// One clock for the stages and for the total, so the phases add up to `ready_after`.
struct Laps {
    first: Instant,
    last: Instant,
    phases: Vec<BootPhase>,
}

impl Laps {
    fn new() -> Laps {
        let now = Instant::now();
        Laps {
            first: now,
            last: now,
            phases: Vec::new(),
        }
    }

    fn lap(&mut self, name: &str) {
        self.lap_at(name, Instant::now());
    }

    fn lap_at(&mut self, name: &str, now: Instant) {
        self.phases.push(BootPhase {
            name: name.into(),
            ms: (now - self.last).as_secs_f64() * 1000.0,
        });
        self.last = now;
    }

    /// `ready_after` and its phases: from the start of the boot (before its RAM is prepared
    /// and QEMU starts) to the last lap.
    fn finish(self) -> (Duration, Vec<BootPhase>) {
        (self.last - self.first, self.phases)
    }
}

/// The kernel command line for a crashrig guest.
pub fn cmdline(key_b64: &str, modules: &[String], extra: &[String]) -> String {
    let mut words = vec![
        "console=ttyS0".to_string(),
        // Reboot at once on panic; with QEMU's -no-reboot that ends the VM, which we see.
        "panic=-1".to_string(),
        "random.trust_cpu=on".to_string(),
        "tsc=reliable".to_string(),
        "no_timer_check".to_string(),
        "printk.devkmsg=on".to_string(),
        format!("crashrig_key={key_b64}"),
    ];
    if !modules.is_empty() {
        words.push(format!("crashrig_modules={}", modules.join(",")));
    }
    words.extend(extra.iter().cloned());
    words.join(" ")
}

const WAIT_READY: &str = "i=0; while [ ! -e /run/crashrig/ready ]; do i=$((i+1)); [ $i -gt 1200 ] && exit 1; sleep 0.05; done";

/// Boots the kernel and waits until the guest's init has finished.
pub async fn boot(spec: BootSpec<'_>) -> Result<Booted, BootError> {
    start(spec, None).await
}

/// Starts a new QEMU from the guest `saved` (by `vm::snapshot::save`, from a guest booted
/// with the same spec and key, on disks of the same sizes) instead of booting.
/// Returns with an authenticated SSH session and [`Booted::refresh_owed`] set: the first
/// plan must carry the refresh (its RNG reseeded, its clock set) before anything else runs.
pub async fn restore(spec: BootSpec<'_>, saved: Saved<'_>) -> Result<Booted, BootError> {
    start(spec, Some(saved)).await
}

/// Where the guest's RAM lives: a saveable guest's in a memfd of ours (a restore copies the
/// image into it), any other restore's maps the image copy-on-write. A state with its RAM in
/// the stream needs RAM QEMU does not share (shared RAM is not migrated).
async fn ram_for(
    saveable: bool,
    memory_mib: u64,
    saved: Option<Saved<'_>>,
) -> Result<(RamBackend, Option<GuestRam>), VmError> {
    let io = |path: PathBuf| move |source| VmError::Io { path, source };
    let image = saved.map(|s| s.ram);
    Ok(match (saveable, image) {
        (true, None) => {
            let ram = GuestRam::new(memory_mib << 20).map_err(io("memfd".into()))?;
            (RamBackend::Shared(ram.path().to_path_buf()), Some(ram))
        }
        (true, Some(Some(image))) => {
            let ram = GuestRam::copy_of(image)
                .await
                .map_err(io(image.to_path_buf()))?;
            (RamBackend::Shared(ram.path().to_path_buf()), Some(ram))
        }
        (false, Some(Some(image))) => (RamBackend::Private(image.to_path_buf()), None),
        (_, Some(None)) | (false, None) => (RamBackend::Anonymous, None),
    })
}

async fn start(spec: BootSpec<'_>, saved: Option<Saved<'_>>) -> Result<Booted, BootError> {
    let state = saved.map(|s| s.state);
    let mut laps = Laps::new();
    let (ram_backend, ram) = ram_for(spec.saveable, spec.memory_mib, saved).await?;
    if spec.saveable && saved.is_some_and(|s| s.ram.is_some()) {
        laps.lap("ram-copy");
    }
    let mut disks = spec.disks;
    disks.push(Disk {
        serial: crate::image::TOOLS_SERIAL.into(),
        path: spec.image.tools_disk.clone(),
        read_only: true,
        format: crate::vm::DiskFormat::Raw,
    });
    let mut attempt = 0;
    let mut vm = loop {
        attempt += 1;
        let port = crate::vm::free_port().map_err(|source| VmError::Io {
            path: "127.0.0.1:0".into(),
            source,
        })?;
        let config = VmConfig {
            kernel: spec.kernel.to_path_buf(),
            initrd: spec.initrd.to_path_buf(),
            cmdline: cmdline(spec.key.public_b64(), &spec.modules, &spec.extra_cmdline),
            memory_mib: spec.memory_mib,
            cpus: spec.cpus,
            disks: disks.clone(),
            ssh_port: port,
            accel: spec.accel,
            console_log: spec.console_log.clone(),
            qmp_socket: spec.qmp_socket.clone(),
            agent_socket: spec
                .agent_channel
                .then(|| spec.qmp_socket.with_extension("agent")),
            incoming: state.is_some(),
            ram: ram_backend.clone(),
        };
        let _ = std::fs::remove_file(&spec.qmp_socket);
        match Vm::start(config).await {
            Ok(vm) => break vm,
            // Another process took the port between our probe and QEMU's bind.
            Err(VmError::EarlyExit { stderr, .. }) if stderr.contains("hostfwd") && attempt < 5 => {
                continue
            }
            Err(e) => return Err(e.into()),
        }
    };
    laps.lap("qemu-start");
    let deadline = Instant::now() + spec.ready_timeout;
    if let Some(state) = state {
        if let Err(e) = snapshot::load(&mut vm, state, spec.ready_timeout).await {
            vm.stop().await;
            return Err(e.into());
        }
        laps.lap("state-load");
        // A guest saved with its agent running answers there at once: no SSH handshake
        // (150-200 ms of a 250 ms restore under TCG). Its first plan shows it alive.
        if let (true, Some(stream)) = (saved.is_some_and(|s| s.agent), vm.take_agent()) {
            let (ready_after, phases) = laps.finish();
            return Ok(Booted {
                ready_after,
                vm,
                guest: GuestHandle::agent(crate::guest::agent::Agent::new(stream)),
                phases,
                ram,
                refresh_owed: true,
                restored: true,
                agent: true,
            });
        }
    }
    let port = vm.config().ssh_port;
    let mut last = String::from("none yet");
    let mut announced = false;
    loop {
        if let Some(status) = vm.exited() {
            return Err(BootError::DiedBeforeReady {
                status,
                tail: vm.console_tail(40).join("\n"),
            });
        }
        if let Some(why) = vm.init_failed() {
            let tail = vm.console_tail(40).join("\n");
            vm.stop().await;
            return Err(BootError::InitFailed { why, tail });
        }
        if Instant::now() > deadline {
            let tail = vm.console_tail(40).join("\n");
            vm.stop().await;
            return Err(BootError::NotReady {
                timeout: spec.ready_timeout,
                last,
                tail,
            });
        }
        // Before init announces sshd, a connection would only reach slirp, which holds it
        // until the guest answers: each early attempt would cost a whole timeout. Images
        // whose init does not announce sshd get attempts after 20 s.
        if state.is_none() && !vm.sshd_started() && vm.started.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        if state.is_none() && !announced && vm.sshd_started() {
            // The guest's boot up to its sshd, apart from the SSH connection that follows.
            laps.lap("sshd-started");
            announced = true;
        }
        let key = spec.key.clone();
        let host_key = spec.image.host_key.clone();
        // A refused or reset connection returns at once; the pause below keeps us from spinning.
        let result = tokio::task::spawn_blocking(move || {
            Guest::connect(port, &key, &host_key, Duration::from_secs(2))
        })
        .await
        .map_err(|e| GuestError::Join(e.to_string()))?;
        match result {
            Ok(guest) => {
                laps.lap("ssh-connect");
                let guest = GuestHandle::new(guest);
                let remaining = deadline.saturating_duration_since(Instant::now());
                if state.is_some() {
                    let (ready_after, phases) = laps.finish();
                    return Ok(Booted {
                        vm,
                        guest,
                        ready_after,
                        phases,
                        ram,
                        refresh_owed: true,
                        restored: true,
                        agent: false,
                    });
                }
                // init starts sshd before it loads the remaining modules and mounts /tools;
                // it marks the end with /run/crashrig/ready.
                let out = guest
                    .exec(WAIT_READY.into(), Vec::new(), remaining, |_| {})
                    .await?;
                if out.status != 0 {
                    let tail = vm.console_tail(40).join("\n");
                    vm.stop().await;
                    return Err(BootError::NotReady {
                        timeout: spec.ready_timeout,
                        last: "init did not finish".into(),
                        tail,
                    });
                }
                laps.lap("init-finished");
                let (ready_after, phases) = laps.finish();
                // init announced the agent (or its absence) before it marked itself ready;
                // an image without the announcement is taken to have no agent.
                let agent = spec.agent_channel && vm.agent_started(Duration::from_secs(1)).await;
                return Ok(Booted {
                    vm,
                    guest,
                    ready_after,
                    phases,
                    ram,
                    refresh_owed: false,
                    restored: false,
                    agent,
                });
            }
            Err(e @ (GuestError::HostKey { .. } | GuestError::Auth(_))) => {
                vm.stop().await;
                return Err(e.into());
            }
            Err(e) => last = crate::report::error_chain(&e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_guests_that_may_be_saved_get_ram_of_their_own() {
        let tmp = tempfile::tempdir().unwrap();
        let (state, image) = (tmp.path().join("s"), tmp.path().join("guest.ram"));
        let file = std::fs::File::create(&image).unwrap();
        file.set_len(8 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, b"saved", 4096).unwrap();
        let with_image = Saved {
            state: &state,
            ram: Some(&image),
            agent: true,
        };
        let in_stream = Saved {
            state: &state,
            ram: None,
            agent: false,
        };
        // A boot that may be saved: fresh RAM of ours, shared with QEMU.
        let (backend, ram) = ram_for(true, 8, None).await.unwrap();
        let ram = ram.expect("held");
        assert_eq!(backend, RamBackend::Shared(ram.path().to_path_buf()));
        // A restore that is never saved again: the image, copy-on-write, nothing copied.
        let (backend, ram) = ram_for(false, 8, Some(with_image)).await.unwrap();
        assert_eq!(
            (backend, ram.is_none()),
            (RamBackend::Private(image.clone()), true)
        );
        // A restore that may be saved again: a copy of the image, shared.
        let (backend, ram) = ram_for(true, 8, Some(with_image)).await.unwrap();
        let ram = ram.expect("held");
        assert_eq!(backend, RamBackend::Shared(ram.path().to_path_buf()));
        let mut got = [0u8; 5];
        let copy = std::fs::File::open(ram.path()).unwrap();
        std::os::unix::fs::FileExt::read_exact_at(&copy, &mut got, 4096).unwrap();
        assert_eq!(&got, b"saved");
        // RAM in the stream loads only into RAM QEMU does not share; so does a plain boot.
        for (saveable, saved) in [
            (true, Some(in_stream)),
            (false, Some(in_stream)),
            (false, None),
        ] {
            let (backend, ram) = ram_for(saveable, 8, saved).await.unwrap();
            assert_eq!((backend, ram.is_none()), (RamBackend::Anonymous, true));
        }
    }

    /// Probe 12: every boot record's phases added up to more than its ready_after_ms (the
    /// total was measured from QEMU's spawn, the phases from before the RAM was prepared).
    #[test]
    fn boot_phases_add_up_to_ready_after() {
        let mut laps = Laps::new();
        let t0 = laps.first;
        laps.lap_at("ram-copy", t0 + Duration::from_micros(7_300));
        laps.lap_at("qemu-start", t0 + Duration::from_micros(111_600));
        laps.lap_at("state-load", t0 + Duration::from_micros(155_500));
        let (ready_after, phases) = laps.finish();
        assert_eq!(ready_after, Duration::from_micros(155_500));
        let sum: f64 = phases.iter().map(|p| p.ms).sum();
        assert!(
            (sum - ready_after.as_secs_f64() * 1000.0).abs() < 1e-6,
            "{sum} vs {ready_after:?}"
        );
        assert_eq!(
            phases.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["ram-copy", "qemu-start", "state-load"]
        );
    }

    #[test]
    fn cmdline_carries_key_and_modules() {
        let c = cmdline(
            "AAAA",
            &["virtio_blk".into(), "xfs".into()],
            &["quiet".into()],
        );
        assert_eq!(
            c,
            "console=ttyS0 panic=-1 random.trust_cpu=on tsc=reliable no_timer_check printk.devkmsg=on crashrig_key=AAAA crashrig_modules=virtio_blk,xfs quiet"
        );
    }
}
