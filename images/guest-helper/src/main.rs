//! `crashrig-guest`: runs a crashrig plan inside the guest and reports what the kernel said.
//!
//! - `crashrig-guest exec`: read one [`Plan`] (JSON) from stdin, run its steps in order, write
//!   one [`StepReport`] JSON line per step as soon as it finishes, then a [`PlanEnd`] line.
//!   A malformed plan, or a [`Plan::refresh`] that fails, gives one [`OutputLine::Fatal`]
//!   line and exit status 2.
//! - `crashrig-guest version`: print the protocol version.
//! - `crashrig-guest boot-init`: the guest's start-up, busybox init's `sysinit` action (see
//!   [`bootinit`]).
//! - `crashrig-guest agent PORT`: serve the host's commands on the virtio-serial port `PORT`
//!   (see [`agent`] and `crashrig_guest::channel`); init starts it.
//!
//! The plan is read as one JSON value, so the host may keep stdin open after writing it.
//!
//! Built as a static binary for the guest image (rustup has no musl target here, so glibc is
//! linked statically; nothing here calls NSS functions, so the link is clean):
//! `RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p crashrig-guest
//! --target x86_64-unknown-linux-gnu`.
//!
//! Environment, for running the helper on a host in tests (the guest uses the defaults):
//! `CRASHRIG_RUN_DIR` (state: spawn logs and statuses, dm tables, kmsg position; default
//! /run/crashrig), `CRASHRIG_CGROUP_ROOT` (cgroup2 mount; default /sys/fs/cgroup; when it is
//! not cgroup2, workloads fall back to process groups), `CRASHRIG_KMSG` (default /dev/kmsg).

mod agent;
mod bootinit;
mod cgroup;
mod data;
mod device;
mod dm;
mod kmsg;
mod mounts;
mod reseed;
mod shell;
mod task;
mod util;

use std::io::Write;
use std::path::{Path, PathBuf};

use crashrig_guest::{
    Detail, Op, OutputLine, Plan, PlanEnd, PlanStep, Refresh, StepReport, PROTOCOL_VERSION,
};

use util::monotonic_ms;

/// Exit status for a plan the helper could not read.
const EXIT_BAD_PLAN: i32 = 2;

/// mkfs and fsck get this long before they are killed (default: 10 minutes).
const TOOL_TIMEOUT_MS: u64 = 600_000;

/// Where the helper keeps its state and finds the kernel interfaces.
pub struct Env {
    pub run_dir: PathBuf,
    pub cgroup_root: PathBuf,
    pub kmsg: PathBuf,
    /// The RNG a [`Refresh`] reseeds (tests point it at something that is not one).
    pub random_dev: PathBuf,
}

impl Env {
    fn from_env() -> Env {
        let var = |name: &str, default: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(default))
        };
        Env {
            run_dir: var("CRASHRIG_RUN_DIR", "/run/crashrig"),
            cgroup_root: var("CRASHRIG_CGROUP_ROOT", "/sys/fs/cgroup"),
            kmsg: var("CRASHRIG_KMSG", "/dev/kmsg"),
            random_dev: var("CRASHRIG_RANDOM_DEV", "/dev/urandom"),
        }
    }
}

/// Directories every tool the plans call lives in; an SSH session's PATH may lack the sbin ones.
const TOOL_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

fn complete_path() {
    let current = std::env::var("PATH").unwrap_or_default();
    let mut dirs: Vec<&str> = current.split(':').filter(|d| !d.is_empty()).collect();
    for d in TOOL_DIRS {
        if !dirs.contains(d) {
            dirs.push(d);
        }
    }
    // Single-threaded at this point, so changing the environment is safe.
    std::env::set_var("PATH", dirs.join(":"));
}

fn main() {
    complete_path();
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("exec") => std::process::exit(exec()),
        Some("version") => println!("{PROTOCOL_VERSION}"),
        Some("boot-init") => std::process::exit(bootinit::run()),
        Some("agent") => match std::env::args_os().nth(2) {
            Some(port) => std::process::exit(agent::run(Path::new(&port))),
            None => {
                eprintln!("usage: crashrig-guest agent PORT");
                std::process::exit(EXIT_BAD_PLAN);
            }
        },
        _ => {
            eprintln!("usage: crashrig-guest exec | version | boot-init | agent PORT");
            std::process::exit(EXIT_BAD_PLAN);
        }
    }
}

fn fatal(message: String) -> i32 {
    let _ = emit(
        &mut std::io::stdout().lock(),
        &OutputLine::Fatal { message },
    );
    EXIT_BAD_PLAN
}

fn exec() -> i32 {
    let stdin = std::io::stdin().lock();
    let plan = match serde_json::Deserializer::from_reader(stdin)
        .into_iter::<Plan>()
        .next()
    {
        Some(Ok(plan)) => plan,
        Some(Err(e)) => return fatal(format!("malformed plan: {e}")),
        None => return fatal("no plan on standard input".into()),
    };
    if plan.version != PROTOCOL_VERSION {
        return fatal(format!(
            "plan is protocol version {}, this helper speaks {PROTOCOL_VERSION}",
            plan.version
        ));
    }
    let env = Env::from_env();
    if let Some(refresh) = &plan.refresh {
        if let Err(message) = refresh_guest(&env.random_dev, refresh) {
            return fatal(message);
        }
    }
    let mut out = std::io::stdout().lock();
    for step in &plan.steps {
        kmsg::mark(&env.kmsg, &marker(&plan.label, step));
        let report = run_step(&env, step);
        // A host that went away cannot read the report; the plan still runs to its end.
        let _ = emit(&mut out, &OutputLine::Step(Box::new(report)));
    }
    let _ = emit(
        &mut out,
        &OutputLine::End(PlanEnd {
            done: true,
            steps_run: plan.steps.len(),
        }),
    );
    0
}

/// A restored guest's refresh: the RNG first, so a failure leaves the clock untouched.
fn refresh_guest(random_dev: &Path, refresh: &Refresh) -> Result<(), String> {
    reseed::reseed(random_dev, &refresh.entropy)
        .map_err(|e| format!("reseed the RNG: {}", util::io_error_name(&e)))?;
    reseed::set_clock(refresh.realtime_ns)
        .map_err(|e| format!("set the clock: {}", util::io_error_name(&e)))
}

fn emit(out: &mut impl Write, value: &OutputLine) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")?;
    out.flush()
}

pub fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Mkfs { .. } => "mkfs",
        Op::Mount { .. } => "mount",
        Op::Umount { .. } => "umount",
        Op::Shutdown { .. } => "shutdown",
        Op::Spawn { .. } => "spawn",
        Op::Kill { .. } => "kill",
        Op::Run { .. } => "run",
        Op::Sleep { .. } => "sleep",
        Op::Sync { .. } => "sync",
        Op::DmCreate { .. } => "dm-create",
        Op::DmSwap { .. } => "dm-swap",
        Op::DmRemove { .. } => "dm-remove",
        Op::Fsck { .. } => "fsck",
        Op::WriteData { .. } => "write-data",
        Op::VerifyData { .. } => "verify-data",
        Op::Dmesg => "dmesg",
        Op::Panic => "panic",
        Op::WaitDevice { .. } => "wait-device",
    }
}

fn marker(label: &str, step: &PlanStep) -> String {
    let label = if label.is_empty() {
        String::new()
    } else {
        format!("{label} ")
    };
    format!(
        "crashrig: {label}step {} {}\n",
        step.index,
        op_name(&step.op)
    )
}

fn run_step(env: &Env, step: &PlanStep) -> StepReport {
    let started = monotonic_ms();
    let mut r = StepReport {
        index: step.index,
        attempts: 1,
        started_ms: started,
        ..StepReport::default()
    };
    run_op(env, &step.op, &mut r);
    r.duration_ms = monotonic_ms() - started;
    r
}

/// Resolve a device or put the reason in the report.
fn resolve(r: &mut StepReport, device: &str) -> Option<PathBuf> {
    match device::resolve(&device::real(), device) {
        Ok(p) => Some(p),
        Err(e) => {
            r.error = Some(e);
            None
        }
    }
}

fn run_op(env: &Env, op: &Op, r: &mut StepReport) {
    match op {
        Op::Mkfs {
            device,
            fstype,
            options,
        } => {
            let Some(dev) = resolve(r, device) else {
                return;
            };
            let dev = dev.display().to_string();
            let mut args: Vec<&str> = options.iter().map(String::as_str).collect();
            args.push(&dev);
            // The exit status is the outcome, which the step's `expect` judges on the host.
            task::run_captured(env, &format!("mkfs.{fstype}"), &args, TOOL_TIMEOUT_MS)
                .into_report(r);
        }
        Op::Mount {
            device,
            target,
            fstype,
            options,
            retry,
        } => {
            let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
            let source = if device::is_nodev_fs(&filesystems, fstype) {
                device.clone()
            } else {
                let Some(dev) = resolve(r, device) else {
                    return;
                };
                dev.display().to_string()
            };
            mounts::mount(r, &source, target, fstype, options, *retry);
        }
        Op::Umount {
            target,
            force,
            detach,
            retry,
        } => mounts::umount(r, target, *force, *detach, *retry),
        Op::Shutdown { target, flag } => mounts::shutdown(r, target, flag.as_raw()),
        Op::Spawn { name, command } => task::spawn(env, r, name, command),
        Op::Kill {
            name,
            signal,
            wait_ms,
            may_have_ended,
        } => task::kill(env, r, name, signal, *wait_ms, *may_have_ended),
        Op::Run {
            command,
            timeout_ms,
        } => {
            let line = task::shell_command(command);
            task::run_captured(env, "sh", &["-c", &line], *timeout_ms).into_report(r)
        }
        Op::Sleep { ms } => util::sleep_ms(*ms),
        Op::Sync { target } => mounts::sync(r, target.as_deref()),
        Op::DmCreate { name, device } => {
            let Some(dev) = resolve(r, device) else {
                return;
            };
            dm::create(env, r, name, &dev);
        }
        Op::DmSwap { name, table } => dm::swap(env, r, name, *table),
        Op::DmRemove { name } => dm::remove(env, r, name),
        Op::Fsck {
            device,
            fstype,
            options,
        } => fsck(env, r, device, fstype, options),
        Op::WriteData {
            dir,
            files,
            size,
            seed,
            fsync,
        } => {
            let out = data::write_files(Path::new(dir), *files, *size, *seed, *fsync);
            r.stdout = format!("wrote {} of {files} files of {size} bytes\n", out.written);
            r.detail = Some(Detail::Written {
                written: out.written,
                acknowledged: out.acknowledged,
            });
            if let Some((file, e)) = out.failure {
                // An errno here is the kernel's answer (EIO after a shutdown, say).
                r.errno = util::io_errno(&e).map(crashrig_guest::errno_name);
                if r.errno.is_none() {
                    r.error = Some(format!("write {file}: {e}"));
                } else {
                    r.stderr = format!("{file}: {}\n", util::io_error_name(&e));
                }
            }
        }
        Op::VerifyData {
            dir,
            files,
            size,
            seed,
        } => verify(r, Path::new(dir), *files, *size, *seed),
        Op::Dmesg => match kmsg::read_new(&env.kmsg, &env.run_dir.join("kmsg.seq")) {
            Ok(records) => r.detail = Some(Detail::Dmesg { records }),
            Err(e) => {
                r.error = Some(format!(
                    "read {}: {}",
                    env.kmsg.display(),
                    util::io_error_name(&e)
                ))
            }
        },
        Op::Panic => panic_kernel(r),
        Op::WaitDevice {
            device,
            present,
            timeout_ms,
        } => {
            let deadline = monotonic_ms() + *timeout_ms as f64;
            while device::present(&device::real(), device) != *present {
                if monotonic_ms() >= deadline {
                    let what = if *present { "appear" } else { "disappear" };
                    r.error = Some(format!(
                        "device {device} did not {what} within {timeout_ms} ms"
                    ));
                    return;
                }
                util::sleep_ms(10);
            }
        }
    }
}

/// The read-only checker of each filesystem: never repairs, exit 0 means clean.
pub fn fsck_command(fstype: &str) -> Option<(&'static str, &'static [&'static str])> {
    match fstype {
        "xfs" => Some(("xfs_repair", &["-n"])),
        "ext2" | "ext3" | "ext4" => Some(("e2fsck", &["-fn"])),
        "btrfs" => Some(("btrfs", &["check", "--readonly"])),
        _ => None,
    }
}

fn fsck(env: &Env, r: &mut StepReport, device: &str, fstype: &str, options: &[String]) {
    let Some((program, flags)) = fsck_command(fstype) else {
        r.error = Some(format!("no read-only checker known for {fstype}"));
        return;
    };
    let Some(dev) = resolve(r, device) else {
        return;
    };
    let dev = dev.display().to_string();
    let mut args = flags.to_vec();
    args.extend(options.iter().map(String::as_str));
    args.push(&dev);
    task::run_captured(env, program, &args, TOOL_TIMEOUT_MS).into_report(r);
    if let Some(status) = r.exit_status {
        r.detail = Some(Detail::Fsck { clean: status == 0 });
    }
}

fn verify(r: &mut StepReport, dir: &Path, files: u32, size: u64, seed: u64) {
    let mut missing = Vec::new();
    let mut corrupted = Vec::new();
    for (path, state) in data::verify_files(dir, files, size, seed) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match state {
            data::FileState::Intact => {}
            data::FileState::Missing => missing.push(name),
            data::FileState::Corrupted(why) => {
                r.stdout.push_str(&format!("{name}: {why}\n"));
                corrupted.push(name);
            }
        }
    }
    // Lost files are the kernel's answer, judged on the host against what write-data
    // reported as acknowledged (files it never wrote are not lost).
    r.detail = Some(Detail::Data {
        checked: files,
        missing,
        corrupted,
    });
}

fn panic_kernel(r: &mut StepReport) {
    // The host must hold every earlier report before the guest dies.
    let _ = std::io::stdout().flush();
    if let Err(e) = util::write_once(Path::new("/proc/sys/kernel/sysrq"), b"1") {
        r.error = Some(format!("enable sysrq: {}", util::io_error_name(&e)));
        return;
    }
    match util::write_once(Path::new("/proc/sysrq-trigger"), b"c") {
        Ok(()) => r.error = Some("sysrq c returned without a panic".into()),
        Err(e) => r.error = Some(format!("write sysrq-trigger: {}", util::io_error_name(&e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_name_label_step_and_op() {
        let step = PlanStep {
            index: 4,
            op: Op::Dmesg,
        };
        assert_eq!(marker("it 3", &step), "crashrig: it 3 step 4 dmesg\n");
        assert_eq!(marker("", &step), "crashrig: step 4 dmesg\n");
    }

    #[test]
    fn op_names_match_the_wire_tags() {
        let ops = [
            Op::Dmesg,
            Op::Panic,
            Op::Sleep { ms: 1 },
            Op::DmRemove { name: "x".into() },
            Op::WaitDevice {
                device: "d".into(),
                present: true,
                timeout_ms: 1,
            },
            Op::Sync { target: None },
        ];
        for op in ops {
            let json = serde_json::to_value(&op).unwrap();
            assert_eq!(json["op"], op_name(&op), "{json}");
        }
    }

    #[test]
    fn each_filesystem_has_a_read_only_checker() {
        assert_eq!(fsck_command("xfs"), Some(("xfs_repair", &["-n"][..])));
        assert_eq!(fsck_command("ext4"), Some(("e2fsck", &["-fn"][..])));
        assert_eq!(
            fsck_command("btrfs"),
            Some(("btrfs", &["check", "--readonly"][..]))
        );
        assert_eq!(fsck_command("vfat"), None);
    }
}
