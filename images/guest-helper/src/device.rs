//! Block devices named by virtio-blk serial, without udev.

use std::path::{Path, PathBuf};

use crate::util;

/// Where sysfs and /dev are; tests point these at a fake tree.
pub struct Roots<'a> {
    pub sys_block: &'a Path,
    pub dev: &'a Path,
}

/// The guest's real sysfs and /dev.
pub fn real() -> Roots<'static> {
    Roots {
        sys_block: Path::new("/sys/block"),
        dev: Path::new("/dev"),
    }
}

/// The kernel name (`vdb`) of the virtio-blk disk whose serial is `serial`.
pub fn find_serial(sys_block: &Path, serial: &str) -> Option<String> {
    let entries = std::fs::read_dir(sys_block).ok()?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vd"))
        .collect();
    names.sort();
    names.into_iter().find(|name| {
        std::fs::read_to_string(sys_block.join(name).join("serial"))
            .map(|s| s.trim() == serial)
            .unwrap_or(false)
    })
}

/// Parse sysfs' "major:minor".
pub fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (maj, min) = s.trim().split_once(':')?;
    Some((maj.parse().ok()?, min.parse().ok()?))
}

/// Make `/dev/NAME` when devtmpfs did not (or /dev is a plain directory).
fn ensure_node(roots: &Roots, name: &str) -> Result<PathBuf, String> {
    let node = roots.dev.join(name);
    if node.exists() {
        return Ok(node);
    }
    let dev = std::fs::read_to_string(roots.sys_block.join(name).join("dev"))
        .map_err(|e| format!("read {name}/dev: {e}"))?;
    let (maj, min) =
        parse_dev(&dev).ok_or_else(|| format!("bad device number {dev:?} for {name}"))?;
    let c = util::path_cstring(&node).map_err(|e| e.to_string())?;
    // SAFETY: c is a valid path; makedev/mknod have no memory effects beyond the call.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o600, libc::makedev(maj, min)) };
    if rc != 0 && util::last_errno() != libc::EEXIST {
        return Err(format!(
            "mknod {}: {}",
            node.display(),
            crashrig_guest::errno_name(util::last_errno())
        ));
    }
    Ok(node)
}

/// The path of a device: absolute paths as they are, anything else a virtio-blk serial.
pub fn resolve(roots: &Roots, device: &str) -> Result<PathBuf, String> {
    if device.starts_with('/') {
        return Ok(PathBuf::from(device));
    }
    let name = find_serial(roots.sys_block, device)
        .ok_or_else(|| format!("no virtio-blk disk with serial {device:?}"))?;
    ensure_node(roots, &name)
}

/// Is the device there (serial known to sysfs, or the path exists)?
pub fn present(roots: &Roots, device: &str) -> bool {
    if device.starts_with('/') {
        Path::new(device).exists()
    } else {
        find_serial(roots.sys_block, device).is_some()
    }
}

/// Filesystems that take no block device (tmpfs, proc, ...), from /proc/filesystems: their
/// mount source is a free-form name and must not be looked up as a serial.
pub fn is_nodev_fs(proc_filesystems: &str, fstype: &str) -> bool {
    proc_filesystems.lines().any(|line| {
        let mut parts = line.split_whitespace();
        parts.next() == Some("nodev") && parts.next() == Some(fstype)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_map_to_disks_and_nodes_are_reused() {
        let tmp = std::env::temp_dir().join(format!("crashrig-dev-{}", std::process::id()));
        let sys = tmp.join("sys");
        let dev = tmp.join("dev");
        for (name, serial) in [("vda", "root"), ("vdb", "scratch  \n"), ("sda", "scratch2")] {
            std::fs::create_dir_all(sys.join(name)).unwrap();
            std::fs::write(sys.join(name).join("serial"), serial).unwrap();
        }
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("vdb"), "").unwrap();
        let roots = Roots {
            sys_block: &sys,
            dev: &dev,
        };
        assert_eq!(find_serial(&sys, "scratch").as_deref(), Some("vdb"));
        assert_eq!(
            find_serial(&sys, "scratch2"),
            None,
            "only virtio disks carry our serials"
        );
        assert_eq!(resolve(&roots, "scratch"), Ok(dev.join("vdb")));
        assert_eq!(
            resolve(&roots, "/dev/mapper/x"),
            Ok(PathBuf::from("/dev/mapper/x"))
        );
        assert!(resolve(&roots, "nope").unwrap_err().contains("\"nope\""));
        assert!(present(&roots, "root"));
        assert!(!present(&roots, "nope"));
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn device_numbers_and_nodev_filesystems_parse() {
        assert_eq!(parse_dev("253:16\n"), Some((253, 16)));
        assert_eq!(parse_dev("253"), None);
        let fs = "nodev\tsysfs\nnodev\ttmpfs\n\text4\n\txfs\n";
        assert!(is_nodev_fs(fs, "tmpfs"));
        assert!(!is_nodev_fs(fs, "xfs"));
        assert!(!is_nodev_fs(fs, "btrfs"));
    }
}
