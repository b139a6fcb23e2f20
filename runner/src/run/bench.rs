//! `crashrig bench boot`: start-up and per-iteration overhead, each next to its baseline
//! measured in the same run.

use std::time::{Duration, Instant};

use crashrig_guest::{Op, Plan, PlanStep, PROTOCOL_VERSION};

use super::boot::{boot, restore, BootSpec};
use crate::cache::Cache;
use crate::cli::{resolve_kernel, BenchBootArgs, CliError};
use crate::guest::RunKey;
use crate::image;
use crate::vm::snapshot::{self, OverlayTemplate};
use crate::vm::{create_disk, Disk, DiskFormat};

const LOOP_ITERATIONS: u32 = 20;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub async fn boot_bench(args: BenchBootArgs) -> Result<i32, CliError> {
    let cache = Cache::from_env();
    let kernel = resolve_kernel(&args.kernel, &cache).await?;
    let bare = image::bare_initramfs(&cache)?;
    let (accel, reason) = crate::vm::choose_accel(args.accel, &kernel.image, &bare).await?;
    let image = {
        let cache = cache.clone();
        tokio::task::spawn_blocking(move || {
            let helper = image::guest_helper()?;
            image::prepare(&image::default_recipe(), &helper, &cache)
        })
        .await
        .map_err(|e| CliError::Other(e.to_string()))??
    };
    let initrd = image::initrd_for(&image, &kernel, &cache)?;
    let tmp = tempfile::tempdir().map_err(|e| CliError::Other(e.to_string()))?;
    println!(
        "kernel {} ({}), accelerator {accel} ({reason}), {} repetitions",
        args.kernel, kernel.version, args.repeat
    );

    let mut bare_times = Vec::new();
    let mut ready_times = Vec::new();
    let mut shell_loop = Vec::new();
    let mut helper_loop = Vec::new();
    let mut save_times = Vec::new();
    let mut state_sizes = Vec::new();
    let mut restore_times = Vec::new();
    for _ in 0..args.repeat {
        bare_times.push(
            crate::vm::qemu::bare_boot(&kernel.image, &bare, accel, Duration::from_secs(120))
                .await
                .map_err(|e| CliError::Other(format!("bare boot: {e}")))?,
        );
        let disk = tmp.path().join("scratch.img");
        create_disk(&disk, 1 << 30)?;
        let key = RunKey::generate().map_err(|e| CliError::Other(e.to_string()))?;
        let spec = |disk: &std::path::Path, format| BootSpec {
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
        };
        let mut booted = boot(spec(&disk, DiskFormat::Raw))
            .await
            .map_err(crate::run::RunError::from)?;
        ready_times.push(booted.ready_after.as_secs_f64());

        // Per-iteration overhead: the same mount/umount loop as a guest shell script and as
        // crashrig iterations (one helper plan per iteration, with its dmesg read).
        let env = "PATH=/tools/bin:/bin:/sbin LD_LIBRARY_PATH=/tools/lib";
        let dev = "$(for d in /sys/block/vd*; do [ \"$(cat $d/serial)\" = scratch ] && echo /dev/${d##*/}; done)";
        let prep = format!("{env} sh -c 'mkfs.xfs -q -f {dev} && mkdir -p /mnt'");
        booted
            .guest
            .exec(prep, vec![], Duration::from_secs(120), |_| {})
            .await
            .map_err(crate::run::RunError::from)?;
        let script = format!(
            "{env} sh -c 'D={dev}; for i in $(seq {LOOP_ITERATIONS}); do mount -t xfs $D /mnt && umount /mnt || exit 1; done'"
        );
        let t = Instant::now();
        booted
            .guest
            .exec(script, vec![], Duration::from_secs(300), |_| {})
            .await
            .map_err(crate::run::RunError::from)?;
        shell_loop.push(t.elapsed().as_secs_f64() * 1000.0 / f64::from(LOOP_ITERATIONS));
        let t = Instant::now();
        for _ in 0..LOOP_ITERATIONS {
            let plan = Plan {
                version: PROTOCOL_VERSION,
                label: "bench".into(),
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
                .map_err(crate::run::RunError::from)?;
        }
        helper_loop.push(t.elapsed().as_secs_f64() * 1000.0 / f64::from(LOOP_ITERATIONS));

        // Restore: save this guest (after its mkfs, like an "after setup" snapshot), then
        // start a new QEMU from it on a fresh overlay over the frozen scratch disk, up to the
        // first command (the RNG reseed) over a new SSH connection.
        let state = tmp.path().join("state");
        let t = Instant::now();
        let size = snapshot::save(&mut booted.vm, &state, Duration::from_secs(120))
            .await
            .map_err(crate::run::RunError::from)?;
        save_times.push(t.elapsed().as_secs_f64());
        state_sizes.push(size as f64);
        booted.vm.stop().await;
        let template =
            OverlayTemplate::create(&disk, DiskFormat::Raw, &tmp.path().join("template.qcow2"))
                .await
                .map_err(crate::run::RunError::from)?;
        let overlay = tmp.path().join("overlay.qcow2");
        let t = Instant::now();
        template
            .fresh(&overlay)
            .map_err(crate::run::RunError::from)?;
        let mut restored = restore(spec(&overlay, DiskFormat::Qcow2), &state)
            .await
            .map_err(crate::run::RunError::from)?;
        restore_times.push(t.elapsed().as_secs_f64());
        restored.vm.stop().await;
    }
    let bare = median(bare_times);
    let ready = median(ready_times);
    println!("bare boot (init powers off at once):        {bare:.2} s");
    println!(
        "crashrig start to first SSH command:        {ready:.2} s  ({:.2}x bare; goal <= 1.6x)",
        ready / bare
    );
    let restored = median(restore_times);
    println!(
        "restore to first SSH command:               {restored:.2} s  ({:.2}x crashrig's boot; goals <= 0.5 s, <= 0.2x)",
        restored / ready
    );
    println!(
        "saving the guest (paused, to a file):       {:.2} s, {:.0} MB",
        median(save_times),
        median(state_sizes) / 1e6
    );
    let (sh, cr) = (median(shell_loop), median(helper_loop));
    println!("mount+umount loop as a guest shell script:  {sh:.1} ms/iteration");
    println!(
        "same as crashrig iterations (plan + dmesg): {cr:.1} ms/iteration  (+{:.1} ms overhead)",
        cr - sh
    );
    Ok(crate::exit::OK)
}
