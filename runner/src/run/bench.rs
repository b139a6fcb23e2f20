//! `crashrig bench boot`: start-up and per-iteration overhead, each next to its baseline
//! measured in the same run. The figures go out as an event, which reporters render.

use std::time::{Duration, Instant};

use crashrig_guest::{Op, Plan, PlanStep, PROTOCOL_VERSION};

use super::boot::{boot, restore, BootSpec};
use super::session::{BuildRequest, Session, SessionError, VmOptions};
use crate::guest::{helper, Ending, RunKey, HELPER_COMMAND};
use crate::image;
use crate::report::events::{BootBenchFigures, Event};
use crate::report::BootPhase;
use crate::vm::snapshot::{self, OverlayTemplate, Saved, SnapshotError};
use crate::vm::{create_disk, AccelChoice, Disk, DiskFormat};

const LOOP_ITERATIONS: u32 = 20;

/// What `crashrig bench boot` measures with.
#[derive(Debug, Clone)]
pub struct BootBenchOptions {
    pub kernel: String,
    /// Repetitions of each measurement (the median is reported).
    pub repeat: u32,
    pub accel: AccelChoice,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("run the first command in a restored guest: {0}")]
    FirstCommand(String),
    #[error("create a temporary directory")]
    TempDir(#[source] std::io::Error),
    #[error(transparent)]
    Vm(#[from] crate::vm::VmError),
    #[error(transparent)]
    Guest(#[from] crate::guest::GuestError),
    #[error(transparent)]
    Run(#[from] super::RunError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

impl BenchError {
    /// Every benchmark failure is a configuration or infrastructure error.
    pub fn exit_code(&self) -> i32 {
        crate::exit::CONFIG_OR_INFRA
    }
}

/// The median (of an even count, the mean of the middle two); 0 for none.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The median of each stage over several runs, in the order the stages first appear.
fn median_phases(runs: &[Vec<BootPhase>]) -> Vec<BootPhase> {
    let mut names: Vec<&str> = Vec::new();
    for phase in runs.iter().flatten() {
        if !names.contains(&phase.name.as_str()) {
            names.push(&phase.name);
        }
    }
    names
        .into_iter()
        .map(|name| BootPhase {
            name: name.into(),
            ms: median(
                runs.iter()
                    .flatten()
                    .filter(|p| p.name == name)
                    .map(|p| p.ms)
                    .collect(),
            ),
        })
        .collect()
}

/// Runs the boot benchmark and emits its figures ([`Event::BootBench`]).
pub async fn boot_bench(opts: BootBenchOptions) -> Result<(), BenchError> {
    let mut session = Session::new(VmOptions {
        accel: opts.accel,
        ..VmOptions::default()
    });
    let kernel = session
        .resolve_kernel(&opts.kernel, &BuildRequest::default(), &[])
        .await?;
    let host = session.host(&kernel.image).await?;
    let accel = host.accel;
    let bare = image::bare_initramfs(&session.cache).map_err(SessionError::from)?;
    let image = session.image().await?;
    let initrd = image::initrd_for(&image, &kernel, &session.cache).map_err(SessionError::from)?;
    let tmp = tempfile::tempdir().map_err(BenchError::TempDir)?;

    let mut bare_times = Vec::new();
    let mut ready_times = Vec::new();
    let mut shell_loop = Vec::new();
    let mut helper_loop = Vec::new();
    let mut save_times = Vec::new();
    let mut state_sizes = Vec::new();
    let mut image_times = Vec::new();
    let mut image_sizes = Vec::new();
    let mut restore_times = Vec::new();
    let mut restore_phases = Vec::new();
    let mut ssh_restore_times = Vec::new();
    let mut ssh_restore_phases = Vec::new();
    let mut boot_phases = Vec::new();
    for _ in 0..opts.repeat {
        bare_times.push(
            crate::vm::qemu::bare_boot(&kernel.image, &bare, accel, Duration::from_secs(120))
                .await?,
        );
        let disk = tmp.path().join("scratch.img");
        create_disk(&disk, 1 << 30)?;
        let key = RunKey::generate()?;
        let spec = |disk: &std::path::Path, format, saveable| BootSpec {
            kernel: &kernel.image,
            initrd: &initrd,
            image: &image,
            key: &key,
            memory_mib: 2048,
            cpus: 2,
            disks: vec![Disk {
                serial: "scratch".into(),
                path: disk.to_path_buf(),
                read_only: false,
                format,
            }],
            modules: image::boot_modules(&["xfs"], false),
            extra_cmdline: vec![],
            accel,
            console_log: tmp.path().join("console.log"),
            qmp_socket: tmp.path().join("qmp.sock"),
            ready_timeout: Duration::from_secs(240),
            agent_channel: true,
            saveable,
        };
        let mut booted = boot(spec(&disk, DiskFormat::Raw, true))
            .await
            .map_err(super::RunError::from)?;
        ready_times.push(booted.ready_after.as_secs_f64());
        boot_phases.push(booted.phases.clone());

        // Per-iteration overhead: the same mount/umount loop as a guest shell script and as
        // crashrig iterations (one helper plan per iteration, with its dmesg read).
        let env = "PATH=/tools/bin:/bin:/sbin LD_LIBRARY_PATH=/tools/lib";
        let dev = "$(for d in /sys/block/vd*; do [ \"$(cat $d/serial)\" = scratch ] && echo /dev/${d##*/}; done)";
        let prep = format!("{env} sh -c 'mkfs.xfs -q -f {dev} && mkdir -p /mnt'");
        booted
            .guest
            .exec(prep, vec![], Duration::from_secs(120), |_| {})
            .await
            .map_err(super::RunError::from)?;
        let script = format!(
            "{env} sh -c 'D={dev}; for i in $(seq {LOOP_ITERATIONS}); do mount -t xfs $D /mnt && umount /mnt || exit 1; done'"
        );
        let t = Instant::now();
        booted
            .guest
            .exec(script, vec![], Duration::from_secs(300), |_| {})
            .await
            .map_err(super::RunError::from)?;
        shell_loop.push(t.elapsed().as_secs_f64() * 1000.0 / f64::from(LOOP_ITERATIONS));
        let t = Instant::now();
        for _ in 0..LOOP_ITERATIONS {
            let plan = Plan {
                version: PROTOCOL_VERSION,
                label: "bench".into(),
                refresh: None,
                steps: vec![
                    PlanStep {
                        index: 0,
                        op: Op::Mount {
                            device: "scratch".into(),
                            target: "/mnt".into(),
                            fstype: "xfs".into(),
                            options: vec![],
                            retry: None,
                        },
                    },
                    PlanStep {
                        index: 1,
                        op: Op::Umount {
                            target: "/mnt".into(),
                            force: false,
                            detach: false,
                            retry: None,
                        },
                    },
                    PlanStep {
                        index: 2,
                        op: Op::Dmesg,
                    },
                ],
            };
            let stdin = serde_json::to_vec(&plan).unwrap_or_default();
            booted
                .guest
                .exec(
                    format!("{env} crashrig-guest exec"),
                    stdin,
                    Duration::from_secs(60),
                    |_| {},
                )
                .await
                .map_err(super::RunError::from)?;
        }
        helper_loop.push(t.elapsed().as_secs_f64() * 1000.0 / f64::from(LOOP_ITERATIONS));

        // Restore: save this guest (after its mkfs, like an "after setup" snapshot), write
        // its RAM image as a file (as for the cache), then start a new QEMU from both on a
        // fresh overlay over the frozen scratch disk, up to the first command's result (over
        // the agent channel, and again over a new SSH connection): a plan that carries only
        // the refresh every restored guest owes (its RNG reseeded, its clock set).
        let state = tmp.path().join("state");
        booted.prepare_spare().await;
        let t = Instant::now();
        let size = snapshot::save(&mut booted.vm, &state, Duration::from_secs(120)).await?;
        save_times.push(t.elapsed().as_secs_f64());
        state_sizes.push(size as f64);
        let image = tmp.path().join("guest.ram");
        let _ = std::fs::remove_file(&image);
        let ram = booted.ram.take();
        if let Some(ram) = &ram {
            let t = Instant::now();
            let written = super::restore::save_ram(ram, &image).await?;
            image_times.push(t.elapsed().as_secs_f64());
            image_sizes.push(written as f64);
        }
        booted.vm.stop().await;
        let template_path = tmp.path().join("template.qcow2");
        let template = OverlayTemplate::create(&disk, DiskFormat::Raw, &template_path).await?;
        // The restore as crashrig does it (over the agent channel when the guest has one),
        // then the same restore over SSH: the peer, measured in the same run.
        let transports = if booted.agent {
            vec![true, false]
        } else {
            vec![false]
        };
        for agent in transports {
            let overlay = tmp.path().join("overlay.qcow2");
            let t = Instant::now();
            template.fresh(&overlay)?;
            let saved = Saved {
                state: &state,
                ram: ram.is_some().then_some(image.as_path()),
                agent,
            };
            let mut restored = restore(spec(&overlay, DiskFormat::Qcow2, false), saved)
                .await
                .map_err(super::RunError::from)?;
            let first = Instant::now();
            let mut plan = helper::plan("restored", []);
            plan.refresh = restored.refresh_owed.then(helper::refresh);
            let out = restored
                .guest
                .exec(
                    HELPER_COMMAND.into(),
                    serde_json::to_vec(&plan).unwrap_or_default(),
                    Duration::from_secs(60),
                    |_| {},
                )
                .await
                .map_err(super::RunError::from)?;
            let ending = helper::read_output(out.stdout.lines()).ending;
            if ending != Ending::Finished {
                restored.vm.stop().await;
                return Err(BenchError::FirstCommand(format!("{ending:?}")));
            }
            restored.phases.push(BootPhase {
                name: "first-command".into(),
                ms: first.elapsed().as_secs_f64() * 1000.0,
            });
            let (times, phases) = if agent {
                (&mut restore_times, &mut restore_phases)
            } else {
                (&mut ssh_restore_times, &mut ssh_restore_phases)
            };
            times.push(t.elapsed().as_secs_f64());
            phases.push(restored.phases.clone());
            restored.vm.stop().await;
        }
    }
    let figures = BootBenchFigures {
        kernel: opts.kernel.clone(),
        repeat: opts.repeat,
        kernel_version: kernel.version,
        accel: host.info.accel,
        accel_reason: host.info.accel_reason,
        bare_boot_s: median(bare_times),
        ready_s: median(ready_times),
        restore_s: (!restore_times.is_empty()).then(|| median(restore_times)),
        restore_phases: median_phases(&restore_phases),
        ssh_restore_s: median(ssh_restore_times),
        ssh_restore_phases: median_phases(&ssh_restore_phases),
        boot_phases: median_phases(&boot_phases),
        save_s: median(save_times),
        state_bytes: median(state_sizes),
        ram_image_s: median(image_times),
        ram_image_bytes: median(image_sizes),
        shell_loop_ms: median(shell_loop),
        helper_loop_ms: median(helper_loop),
    };
    session
        .setup_sink()
        .emit(Event::BootBench(Box::new(figures)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
        assert_eq!(median(vec![1.0, 9.0, 2.0, 3.0]), 2.5);
    }

    fn phases(list: &[(&str, f64)]) -> Vec<BootPhase> {
        list.iter()
            .map(|&(name, ms)| BootPhase {
                name: name.into(),
                ms,
            })
            .collect()
    }

    #[test]
    fn each_stage_gets_its_own_median_in_the_order_stages_first_appear() {
        let runs = [
            phases(&[
                ("qemu-start", 100.0),
                ("state-load", 900.0),
                ("ssh-connect", 700.0),
            ]),
            phases(&[
                ("qemu-start", 120.0),
                ("state-load", 300.0),
                ("ssh-connect", 800.0),
            ]),
            phases(&[("qemu-start", 90.0), ("state-load", 400.0), ("extra", 5.0)]),
        ];
        assert_eq!(
            median_phases(&runs),
            phases(&[
                ("qemu-start", 100.0),
                ("state-load", 400.0),
                ("ssh-connect", 750.0),
                ("extra", 5.0)
            ])
        );
        assert!(median_phases(&[]).is_empty());
    }
}
