//! device-mapper tables swapped under a mounted filesystem (generic/475 style), via dmsetup.

use std::path::{Path, PathBuf};

use crashrig_guest::{DmTable, StepReport};

use crate::task::{self, Captured};
use crate::Env;

/// dmsetup should never take long; a stuck one is reported, not waited for forever.
const DMSETUP_TIMEOUT_MS: u64 = 60_000;

/// The table line for `kind` over `dev` of `sectors` 512-byte sectors.
pub fn table(kind: DmTable, dev: &str, sectors: u64) -> String {
    match kind {
        DmTable::Linear => format!("0 {sectors} linear {dev} 0"),
        DmTable::Error => format!("0 {sectors} error"),
        // up 0 s, down 180 s: every write in the next three minutes is dropped / failed.
        DmTable::FlakeyDrop => format!("0 {sectors} flakey {dev} 0 0 180 1 drop_writes"),
        DmTable::FlakeyError => format!("0 {sectors} flakey {dev} 0 0 180 1 error_writes"),
    }
}

/// Size in sectors of a block device, from /sys/class/block/NAME/size.
pub fn sectors(dev: &Path) -> Result<u64, String> {
    let real = std::fs::canonicalize(dev).map_err(|e| format!("resolve {}: {e}", dev.display()))?;
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("no device name in {}", real.display()))?;
    let size = std::fs::read_to_string(Path::new("/sys/class/block").join(&name).join("size"))
        .map_err(|e| format!("read size of {name}: {e}"))?;
    size.trim()
        .parse()
        .map_err(|_| format!("bad size {size:?} for {name}"))
}

fn record_path(env: &Env, name: &str) -> PathBuf {
    env.run_dir.join("dm").join(name)
}

/// Run dmsetup; on failure fill the report and return false.
fn dmsetup(env: &Env, report: &mut StepReport, args: &[&str]) -> bool {
    let c: Captured = task::run_captured(env, "dmsetup", args, DMSETUP_TIMEOUT_MS);
    let ok = c.status == Some(0) && c.error.is_none();
    report.stdout.push_str(&c.stdout);
    report.stderr.push_str(&c.stderr);
    report.exit_status = c.status;
    if !ok {
        report.error = Some(
            c.error
                .unwrap_or_else(|| format!("dmsetup {} failed", args.first().unwrap_or(&""))),
        );
    }
    ok
}

/// Load a module the kernel may not have yet (no udev or kmod static nodes to trigger it);
/// best effort: when it is built in or missing, dmsetup reports the real problem.
fn modprobe(env: &Env, module: &str) {
    let _ = task::run_captured(env, "modprobe", &[module], 10_000);
}

/// Without udev nobody makes /dev/mapper/NAME; make it from sysfs when dmsetup did not.
fn ensure_mapper_node(name: &str) {
    let node = Path::new("/dev/mapper").join(name);
    if node.exists() {
        return;
    }
    let Ok(dir) = std::fs::read_dir("/sys/block") else {
        return;
    };
    for e in dir.flatten() {
        let sys = e.path();
        let matches = std::fs::read_to_string(sys.join("dm/name"))
            .map(|n| n.trim() == name)
            .unwrap_or(false);
        if !matches {
            continue;
        }
        let Some((maj, min)) = std::fs::read_to_string(sys.join("dev"))
            .ok()
            .and_then(|d| crate::device::parse_dev(&d))
        else {
            return;
        };
        let _ = std::fs::create_dir_all("/dev/mapper");
        if let Ok(c) = crate::util::path_cstring(&node) {
            // SAFETY: valid path; a failure leaves the node missing, which mount reports.
            unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o600, libc::makedev(maj, min)) };
        }
        return;
    }
}

pub fn create(env: &Env, report: &mut StepReport, name: &str, dev: &Path) {
    report.attempts = 1;
    if let Err(e) = task::check_name(name) {
        report.error = Some(e);
        return;
    }
    let sectors = match sectors(dev) {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(e);
            return;
        }
    };
    // dmsetup makes /dev/mapper/control itself, so only /proc/misc tells whether the
    // driver is there (built in or loaded).
    let misc = std::fs::read_to_string("/proc/misc").unwrap_or_default();
    if !misc.lines().any(|l| l.ends_with(" device-mapper")) {
        modprobe(env, "dm-mod");
    }
    let dev_s = dev.display().to_string();
    let t = table(DmTable::Linear, &dev_s, sectors);
    // --noudevsync: there is no udev in the guest to complete the cookie handshake.
    if !dmsetup(
        env,
        report,
        &["create", name, "--noudevsync", "--table", &t],
    ) {
        return;
    }
    ensure_mapper_node(name);
    let rec = record_path(env, name);
    let saved = rec
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&rec, format!("{dev_s} {sectors}\n")));
    if let Err(e) = saved {
        report.error = Some(format!("record {}: {e}", rec.display()));
    }
}

pub fn swap(env: &Env, report: &mut StepReport, name: &str, kind: DmTable) {
    report.attempts = 1;
    if let Err(e) = task::check_name(name) {
        report.error = Some(e);
        return;
    }
    let Some((dev, sectors)) = std::fs::read_to_string(record_path(env, name))
        .ok()
        .and_then(|s| {
            let mut w = s.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.parse::<u64>().ok()?))
        })
    else {
        report.error = Some(format!("no device-mapper device {name} made by dm-create"));
        return;
    };
    let t = table(kind, &dev, sectors);
    let flakey = matches!(kind, DmTable::FlakeyDrop | DmTable::FlakeyError);
    if flakey && !Path::new("/sys/module/dm_flakey").exists() {
        modprobe(env, "dm-flakey");
    }
    // --nolockfs: do not freeze the filesystem first; the swap must look like the disk
    // changing under it, not like a clean snapshot point.
    if !dmsetup(
        env,
        report,
        &["suspend", "--nolockfs", "--noudevsync", name],
    ) {
        return;
    }
    dmsetup(env, report, &["load", name, "--table", &t]);
    // Resume even when the load failed: a suspended device would hang every I/O after it.
    let load_error = report.error.take();
    let resumed = dmsetup(env, report, &["resume", "--noudevsync", name]);
    if let Some(e) = load_error {
        report.error = Some(if resumed {
            e
        } else {
            format!("{e}; resume failed too")
        });
    }
}

pub fn remove(env: &Env, report: &mut StepReport, name: &str) {
    report.attempts = 1;
    if let Err(e) = task::check_name(name) {
        report.error = Some(e);
        return;
    }
    if dmsetup(env, report, &["remove", "--noudevsync", name]) {
        let _ = std::fs::remove_file(record_path(env, name));
        let _ = std::fs::remove_file(Path::new("/dev/mapper").join(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_follow_dmsetup_syntax() {
        let table_of = |k| table(k, "/dev/vdb", 2097152);
        assert_eq!(table_of(DmTable::Linear), "0 2097152 linear /dev/vdb 0");
        assert_eq!(table_of(DmTable::Error), "0 2097152 error");
        assert_eq!(
            table_of(DmTable::FlakeyDrop),
            "0 2097152 flakey /dev/vdb 0 0 180 1 drop_writes"
        );
        assert_eq!(
            table_of(DmTable::FlakeyError),
            "0 2097152 flakey /dev/vdb 0 0 180 1 error_writes"
        );
    }
}
