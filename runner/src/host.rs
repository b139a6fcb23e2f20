//! Host tools crashrig runs, and the Debian package that provides each.

use std::path::PathBuf;

/// Programs not found in PATH, with the Debian packages that provide them (each once).
#[derive(Debug, thiserror::Error)]
pub struct MissingTool {
    pub tools: Vec<String>,
    pub packages: Vec<String>,
}

impl std::fmt::Display for MissingTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tools: Vec<String> = self.tools.iter().map(|t| format!("`{t}`")).collect();
        let (tools, it) = match tools.as_slice() {
            [one] => (one.clone(), "it"),
            [rest @ .., last] => (format!("{} and {last}", rest.join(", ")), "them"),
            [] => (String::new(), "it"),
        };
        write!(
            f,
            "{tools} not found in PATH; install {it} with `apt-get install {}`",
            self.packages.join(" ")
        )
    }
}

/// (tool, Debian package) for every program crashrig may run on the host.
pub const TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("qemu-img", "qemu-utils"),
    ("apt-cache", "apt"),
    ("apt-get", "apt"),
    ("dpkg-deb", "dpkg"),
    ("git", "git"),
    ("make", "make"),
    ("gcc", "gcc"),
    ("ld", "binutils"),
    ("bc", "bc"),
    ("flex", "flex"),
    ("bison", "bison"),
    ("busybox", "busybox-static"),
    ("dropbear", "dropbear-bin"),
    ("dropbearkey", "dropbear-bin"),
    ("fio", "fio"),
    ("mkfs.xfs", "xfsprogs"),
    ("xfs_io", "xfsprogs"),
    ("xfs_repair", "xfsprogs"),
    ("mkfs.ext4", "e2fsprogs"),
    ("e2fsck", "e2fsprogs"),
    ("mkfs.btrfs", "btrfs-progs"),
    ("btrfs", "btrfs-progs"),
    ("dmsetup", "dmsetup"),
    ("ccache", "ccache"),
    ("xz", "xz-utils"),
    ("depmod", "kmod"),
    ("pahole", "dwarves"),
    ("ldd", "libc-bin"),
    ("tar", "tar"),
    ("sh", "dash"),
    (
        "cargo",
        "rustup (https://rustup.rs; Debian 12's cargo package is too old)",
    ),
];

/// The Debian package providing `tool`, for messages.
pub fn package_for(tool: &str) -> &'static str {
    TOOLS
        .iter()
        .find(|(t, _)| *t == tool)
        .map(|(_, p)| *p)
        .unwrap_or("(unknown package)")
}

/// Full path of `tool` in PATH (plus /sbin and /usr/sbin, where Debian puts mkfs and dmsetup
/// but a non-root PATH may not look).
pub fn find(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| is_executable(p))
}

/// Like [`find`], with an error that names the package to install.
pub fn require(tool: &str) -> Result<PathBuf, MissingTool> {
    require_all(&[tool]).map(|mut found| found.remove(0))
}

/// Every one of `tools` ([`find`]), or one error naming all that are missing and their
/// packages: a missing flex and bison are one `apt-get install`, not two failed runs.
pub fn require_all(tools: &[&str]) -> Result<Vec<PathBuf>, MissingTool> {
    require_all_with(tools, find)
}

/// [`require_all`] with the lookup as a parameter (a seam for tests).
pub fn require_all_with(
    tools: &[&str],
    find: impl Fn(&str) -> Option<PathBuf>,
) -> Result<Vec<PathBuf>, MissingTool> {
    let mut found = Vec::new();
    let mut missing = MissingTool {
        tools: Vec::new(),
        packages: Vec::new(),
    };
    for tool in tools {
        match find(tool) {
            Some(path) => found.push(path),
            None => {
                missing.tools.push(tool.to_string());
                let package = package_for(tool).to_string();
                if !missing.packages.contains(&package) {
                    missing.packages.push(package);
                }
            }
        }
    }
    if missing.tools.is_empty() {
        Ok(found)
    } else {
        Err(missing)
    }
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The host's 1-minute load average (`/proc/loadavg`), `None` when it cannot be read.
pub fn load_average() -> Option<f64> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

/// `0.52 0.58 0.59 1/312 4242` -> 0.52.
fn parse_loadavg(text: &str) -> Option<f64> {
    let load: f64 = text.split_whitespace().next()?.parse().ok()?;
    (load.is_finite() && load >= 0.0).then_some(load)
}

/// The host's CPUs (as `make -j` and the default `-j` count them).
pub fn cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

/// Host cores and available memory (`MemAvailable` of /proc/meminfo), for
/// `matrix::default_jobs`. Memory is `None` when /proc/meminfo cannot be read.
pub fn resources() -> (usize, Option<u64>) {
    let cores = cpus() as usize;
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| mem_available(&t));
    (cores, mem)
}

/// The host's total memory (`MemTotal` of /proc/meminfo) in bytes, the most a guest can
/// be given; `None` when /proc/meminfo cannot be read.
pub fn memory_total() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo_field(&meminfo, "MemTotal:")
}

/// `MemAvailable:  123456 kB` -> bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    meminfo_field(meminfo, "MemAvailable:")
}

fn meminfo_field(meminfo: &str, name: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with(name))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_the_package() {
        let err = require_all_with(&["dmsetup"], |_| None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`dmsetup` not found in PATH; install it with `apt-get install dmsetup`"
        );
        let err = require_all_with(&["make", "flex", "mkfs.xfs", "xfs_io", "bison"], |t| {
            (t == "make").then(|| PathBuf::from("/usr/bin/make"))
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`flex`, `mkfs.xfs`, `xfs_io` and `bison` not found in PATH; install them with \
             `apt-get install flex xfsprogs bison`"
        );
        assert!(require("crashrig-no-such-tool-xyz").is_err());
        assert!(find("sh").is_some());
    }

    /// Every program the source names for the host has a package in the table, so a missing
    /// one is reported as `apt-get install <package>`, never as "(unknown package)".
    #[test]
    fn every_host_program_the_source_runs_names_its_package() {
        let called = regex::Regex::new(
            r#"(?:\brequire|host::find|Command::new)\("([A-Za-z][A-Za-z0-9_.+-]*)""#,
        )
        .unwrap();
        let mut seen = std::collections::BTreeSet::new();
        let mut dirs = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for c in called.captures_iter(&text) {
                        seen.insert((c[1].to_string(), path.display().to_string()));
                    }
                }
            }
        }
        assert!(seen.iter().any(|(tool, _)| tool == "qemu-img"), "{seen:?}");
        let unmapped: Vec<_> = seen
            .iter()
            .filter(|(tool, _)| !tool.contains("no-such"))
            .filter(|(tool, _)| package_for(tool) == "(unknown package)")
            .collect();
        assert!(unmapped.is_empty(), "add these to TOOLS: {unmapped:?}");
    }

    #[test]
    fn reads_mem_available() {
        let meminfo =
            "MemTotal:       24596028 kB\nMemFree:         1000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(mem_available(meminfo), Some(20_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 5 kB\n"), None);
        assert_eq!(meminfo_field(meminfo, "MemTotal:"), Some(24_596_028 * 1024));
    }

    #[test]
    fn reads_the_one_minute_load_average() {
        assert_eq!(parse_loadavg("0.52 0.58 0.59 1/312 4242\n"), Some(0.52));
        assert_eq!(parse_loadavg("17.00 3 1 2/9 1"), Some(17.0));
        assert_eq!(parse_loadavg(""), None);
        assert_eq!(parse_loadavg("nan 1 1"), None);
        assert_eq!(parse_loadavg("-1 1 1"), None);
    }
}
