//! `crashrig bench boot`: start-up and per-iteration overhead, each next to its baseline
//! measured in the same run.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crashrig_guest::{Op, Plan, PlanStep, PROTOCOL_VERSION};

use super::boot::{boot, BootSpec};
use crate::cache::Cache;
use crate::cli::{resolve_kernel, BenchBootArgs, CliError};
use crate::guest::RunKey;
use crate::host;
use crate::image;
use crate::vm::{create_disk, Accel, Disk};

const LOOP_ITERATIONS: u32 = 20;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// A one-file initramfs whose init powers the machine off at once.
fn bare_initramfs(dir: &std::path::Path) -> Result<std::path::PathBuf, CliError> {
    let err = |e: std::io::Error| CliError::Other(format!("cannot build the bare initramfs: {e}"));
    let root = dir.join("bare");
    std::fs::create_dir_all(root.join("bin")).map_err(err)?;
    let busybox = host::require("busybox").map_err(|e| CliError::Other(e.to_string()))?;
    std::fs::copy(busybox, root.join("bin/busybox")).map_err(err)?;
    std::fs::write(root.join("init"), "#!/bin/busybox sh\n/bin/busybox poweroff -f\n").map_err(err)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("init"), std::fs::Permissions::from_mode(0o755)).map_err(err)?;
    let out = dir.join("bare.cpio");
    let file = std::fs::File::create(&out).map_err(err)?;
    image::cpio::archive_dir(&root, file).map_err(err)?;
    Ok(out)
}

async fn bare_boot(kernel: &std::path::Path, initrd: &std::path::Path, accel: Accel) -> Result<f64, CliError> {
    let qemu = host::require("qemu-system-x86_64").map_err(|e| CliError::Other(e.to_string()))?;
    let (accel_args, cpu) = match accel {
        Accel::Kvm => ("kvm", "host"),
        Accel::Tcg => ("tcg", "max"),
    };
    let start = Instant::now();
    let status = tokio::process::Command::new(qemu)
        .args(["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-accel", accel_args, "-cpu", cpu])
        .args(["-machine", "pc", "-m", "2048", "-smp", "2", "-serial", "null", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 random.trust_cpu=on"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(Duration::from_secs(120), status).await {
        Ok(Ok(s)) if s.success() => Ok(start.elapsed().as_secs_f64()),
        Ok(Ok(s)) => Err(CliError::Other(format!("bare boot: QEMU exited with {s}"))),
        Ok(Err(e)) => Err(CliError::Other(format!("bare boot: cannot run QEMU: {e}"))),
        Err(_) => Err(CliError::Other("bare boot did not power off within 120 s".into())),
    }
}

pub async fn boot_bench(args: BenchBootArgs) -> Result<i32, CliError> {
    let cache = Cache::from_env();
    let (accel, reason) = crate::vm::choose_accel(args.accel).await?;
    let kernel = resolve_kernel(&args.kernel, &cache).await?;
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
    let bare = bare_initramfs(tmp.path())?;
    println!("kernel {} ({}), accelerator {accel} ({reason}), {} repetitions", args.kernel, kernel.version, args.repeat);

    let mut bare_times = Vec::new();
    let mut ready_times = Vec::new();
    let mut shell_loop = Vec::new();
    let mut helper_loop = Vec::new();
    for _ in 0..args.repeat {
        bare_times.push(bare_boot(&kernel.image, &bare, accel).await?);
        let disk = tmp.path().join("scratch.img");
        create_disk(&disk, 1 << 30)?;
        let key = RunKey::generate().map_err(|e| CliError::Other(e.to_string()))?;
        let mut booted = boot(BootSpec {
            kernel: &kernel.image,
            initrd: &initrd,
            image: &image,
            key: &key,
            memory_mib: 2048,
            cpus: 2,
            disks: vec![Disk { serial: "scratch".into(), path: disk, read_only: false }],
            modules: image::boot_modules(&["xfs"], false),
            extra_cmdline: vec![],
            accel,
            console_log: tmp.path().join("console.log"),
            qmp_socket: tmp.path().join("qmp.sock"),
            ready_timeout: Duration::from_secs(240),
        })
        .await
        .map_err(crate::run::RunError::from)?;
        ready_times.push(booted.ready_after.as_secs_f64());

        // Per-iteration overhead: the same mount/umount loop as a guest shell script and as
        // crashrig iterations (one helper plan per iteration, with its dmesg read).
        let env = "PATH=/tools/bin:/bin:/sbin LD_LIBRARY_PATH=/tools/lib";
        let dev = "$(for d in /sys/block/vd*; do [ \"$(cat $d/serial)\" = scratch ] && echo /dev/${d##*/}; done)";
        let prep = format!("{env} sh -c 'mkfs.xfs -q -f {dev} && mkdir -p /mnt'");
        booted.guest.exec(prep, vec![], Duration::from_secs(120), |_| {}).await.map_err(crate::run::RunError::from)?;
        let script = format!(
            "{env} sh -c 'D={dev}; for i in $(seq {LOOP_ITERATIONS}); do mount -t xfs $D /mnt && umount /mnt || exit 1; done'"
        );
        let t = Instant::now();
        booted.guest.exec(script, vec![], Duration::from_secs(300), |_| {}).await.map_err(crate::run::RunError::from)?;
        shell_loop.push(t.elapsed().as_secs_f64() * 1000.0 / f64::from(LOOP_ITERATIONS));
        let t = Instant::now();
        for _ in 0..LOOP_ITERATIONS {
            let plan = Plan {
                version: PROTOCOL_VERSION,
                label: "bench".into(),
                steps: vec![
                    PlanStep { index: 0, op: Op::Mount { device: "scratch".into(), target: "/mnt".into(), fstype: "xfs".into(), options: vec![], retry: None } },
                    PlanStep { index: 1, op: Op::Umount { target: "/mnt".into(), force: false, detach: false, retry: None } },
                    PlanStep { index: 2, op: Op::Dmesg },
                ],
            };
            let stdin = serde_json::to_vec(&plan).unwrap_or_default();
            booted
                .guest
                .exec(format!("{env} crashrig-guest exec"), stdin, Duration::from_secs(60), |_| {})
                .await
                .map_err(crate::run::RunError::from)?;
        }
        helper_loop.push(t.elapsed().as_secs_f64() * 1000.0 / f64::from(LOOP_ITERATIONS));
        booted.vm.stop().await;
    }
    let bare = median(bare_times);
    let ready = median(ready_times);
    println!("bare boot (init powers off at once):        {bare:.2} s");
    println!("crashrig start to first SSH command:        {ready:.2} s  ({:.2}x bare; goal <= 1.6x)", ready / bare);
    let (sh, cr) = (median(shell_loop), median(helper_loop));
    println!("mount+umount loop as a guest shell script:  {sh:.1} ms/iteration");
    println!("same as crashrig iterations (plan + dmesg): {cr:.1} ms/iteration  (+{:.1} ms overhead)", cr - sh);
    Ok(crate::exit::OK)
}
