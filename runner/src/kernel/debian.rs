//! `debian:6.1` / `debian:6.12`: Debian's prebuilt cloud kernels, fetched with
//! `apt-get download` and unpacked (image, System.map and modules) into the cache.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::spec::ResolvedKernel;
use crate::cache::{Cache, CacheError, Contents};
use crate::host::{self, MissingTool};

#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error(transparent)]
    MissingTool(#[from] MissingTool),
    #[error(
        "no linux-image package of series {series} is known to apt; run `apt-get update` (the machine's apt lists may be empty)"
    )]
    NoPackage { series: String },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("package {package} has no {what}")]
    BadPackage { package: String, what: &'static str },
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// The `linux-image-*-cloud-amd64` package names of `series`, from a list of package names.
fn series_pattern(series: &str) -> regex::Regex {
    let escaped = regex::escape(series);
    // 6.1: linux-image-6.1.0-28-cloud-amd64; 6.12: linux-image-6.12.38+deb12-cloud-amd64
    regex::Regex::new(&format!(
        r"^linux-image-{escaped}\.\d+(?:-\d+)?(?:\+deb\d+)?-cloud-amd64$"
    ))
    .expect("static pattern")
}

/// Picks the newest package of `series` by comparing the numbers in the names (the ABI or
/// patch level), which for these packages orders them as Debian versions do.
pub fn newest_package<'a>(
    series: &str,
    names: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let pattern = series_pattern(series);
    names
        .into_iter()
        .filter(|n| pattern.is_match(n))
        .max_by_key(|n| numbers(n))
        .map(str::to_owned)
}

fn numbers(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// apt-cache queries are local; a download of a kernel package is tens of MB.
const QUERY_LIMIT: Duration = Duration::from_secs(120);
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(30 * 60);
/// dpkg-deb and depmod on one kernel package.
const UNPACK_LIMIT: Duration = Duration::from_secs(10 * 60);

fn run(cmd: &mut Command, limit: Duration) -> Result<String, DebianError> {
    crate::process::Tool::new(cmd, limit).stdout().map_err(|e| {
        let (command, stderr) = e.parts();
        DebianError::Command { command, stderr }
    })
}

/// The package's candidate version (`apt-cache show`).
fn package_version(package: &str) -> Result<String, DebianError> {
    let out = run(
        Command::new("apt-cache").args(["show", "--no-all-versions", package]),
        QUERY_LIMIT,
    )?;
    out.lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .map(|v| v.trim().to_string())
        .ok_or(DebianError::BadPackage {
            package: package.into(),
            what: "Version field",
        })
}

/// Resolves `debian:<series>` to an unpacked kernel in the cache, downloading it once.
pub fn resolve(series: &str, cache: &Cache) -> Result<ResolvedKernel, DebianError> {
    host::require("apt-get")?;
    host::require("dpkg-deb")?;
    let names = run(
        Command::new("apt-cache").args(["pkgnames", "linux-image-"]),
        QUERY_LIMIT,
    )?;
    let package = newest_package(series, names.lines()).ok_or(DebianError::NoPackage {
        series: series.into(),
    })?;
    let version = package_version(&package)?;
    let dest = cache
        .dir("kernels")?
        .join(format!("{package}_{}", version.replace([':', '/'], "_")));
    if !cache
        .lookup(&dest, &["vmlinuz", "release"], Contents::Hashed)?
        .is_ready()
    {
        fetch(&package, cache, &dest)?;
    }
    load(&format!("debian:{series}"), &package, &version, &dest)
}

/// The `.deb` that `apt-get download` left in `dir`.
pub fn find_deb(dir: &Path) -> io::Result<Option<PathBuf>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb")))
}

fn fetch(package: &str, cache: &Cache, dest: &Path) -> Result<(), DebianError> {
    let tmp = cache.tempdir()?;
    run(
        Command::new("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root", package])
            .current_dir(tmp.path()),
        DOWNLOAD_LIMIT,
    )?;
    let deb = find_deb(tmp.path())
        .map_err(|source| DebianError::Io {
            path: tmp.path().into(),
            source,
        })?
        .ok_or(DebianError::BadPackage {
            package: package.into(),
            what: ".deb after apt-get download",
        })?;
    let root = tmp.path().join("root");
    run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
        UNPACK_LIMIT,
    )?;
    let boot = root.join("boot");
    let entries = std::fs::read_dir(&boot).map_err(|source| DebianError::Io {
        path: boot.clone(),
        source,
    })?;
    let vmlinuz = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or(DebianError::BadPackage {
            package: package.into(),
            what: "boot/vmlinuz-*",
        })?;
    let release =
        vmlinuz.file_name().unwrap_or_default().to_string_lossy()["vmlinuz-".len()..].to_string();
    // The package has no modules.dep (the postinst runs depmod); the image builder needs it.
    host::require("depmod")?;
    run(
        Command::new("depmod").arg("-b").arg(&root).arg(&release),
        UNPACK_LIMIT,
    )?;
    let entry = tmp.path().join("entry");
    let mv = |from: PathBuf, to: &str| {
        std::fs::rename(&from, entry.join(to))
            .map_err(|source| DebianError::Io { path: from, source })
    };
    std::fs::create_dir_all(&entry).map_err(|source| DebianError::Io {
        path: entry.clone(),
        source,
    })?;
    mv(vmlinuz, "vmlinuz")?;
    mv(boot.join(format!("System.map-{release}")), "System.map")?;
    mv(root.join("lib/modules").join(&release), "modules")?;
    mv(boot.join(format!("config-{release}")), "config")?;
    std::fs::write(entry.join("release"), &release).map_err(|source| DebianError::Io {
        path: entry.clone(),
        source,
    })?;
    cache.install(&entry, dest, Contents::Hashed)?;
    Ok(())
}

fn load(
    spec: &str,
    package: &str,
    version: &str,
    dir: &Path,
) -> Result<ResolvedKernel, DebianError> {
    let read = |p: PathBuf| std::fs::read(&p).map_err(|source| DebianError::Io { path: p, source });
    let release = String::from_utf8_lossy(&read(dir.join("release"))?)
        .trim()
        .to_string();
    let image = dir.join("vmlinuz");
    let image_sha256 = hex::encode(Sha256::digest(read(image.clone())?));
    Ok(ResolvedKernel {
        spec: spec.into(),
        release: Some(release),
        version: format!("{package} {version}"),
        image,
        modules_dir: Some(dir.join("modules")),
        system_map: Some(dir.join("System.map")),
        vmlinux: None,
        build_key: None,
        image_sha256,
        kconfig: Vec::new(),
        patches: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &[
        "linux-image-6.1.0-9-cloud-amd64",
        "linux-image-6.1.0-28-cloud-amd64",
        "linux-image-6.1.0-28-cloud-amd64-dbg",
        "linux-image-6.1.0-28-amd64",
        "linux-image-6.12.9+deb12-cloud-amd64",
        "linux-image-6.12.38+deb12-cloud-amd64",
        "linux-image-6.12-cloud-amd64",
        "linux-image-6.12.100+deb12-cloud-amd64",
        "linux-image-cloud-amd64",
    ];

    #[test]
    fn picks_the_newest_of_each_series_numerically() {
        assert_eq!(
            newest_package("6.1", NAMES.iter().copied()).as_deref(),
            Some("linux-image-6.1.0-28-cloud-amd64")
        );
        assert_eq!(
            newest_package("6.12", NAMES.iter().copied()).as_deref(),
            Some("linux-image-6.12.100+deb12-cloud-amd64")
        );
        assert_eq!(newest_package("6.6", NAMES.iter().copied()), None);
    }
}
