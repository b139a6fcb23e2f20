//! Scratch disks: sparse files the guest's filesystems live on, made so that a killed
//! crashrig leaves none behind.
//!
//! Each run's disks live in a `crashrig-disks-*` directory of the temporary directory, which
//! holds an owner lock for as long as the run lives. Without `--keep` every disk file is
//! unlinked right after it is created and QEMU opens it through `/proc/<crashrig>/fd/<n>`:
//! the space is freed by the kernel as soon as crashrig and its QEMU are gone, however they
//! end. What a killed run leaves is an empty directory whose lock nobody holds; the next run
//! sweeps it and says so.
//!
//! Each machine's QMP and agent sockets live in a short private (0700) `crashrig-rt-*`
//! directory of the runtime base ([`runtime_base`]), with an owner lock too: a killed run's
//! is swept the same way (before, every kill -9 left one for good).

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::qemu::{Disk, VmError};

const PREFIX: &str = "crashrig-disks-";
const RUNTIME_PREFIX: &str = "crashrig-rt-";

/// Where machines' runtime directories go: short, since a socket path must fit 108 bytes.
pub fn runtime_base() -> PathBuf {
    let candidates = [
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
        Some(std::env::temp_dir()),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_absolute() && p.as_os_str().len() <= 64 && p.is_dir())
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// A machine's private runtime directory (0700) for its sockets, removed on drop; its owner
/// lock lets the next run sweep it when crashrig was killed.
pub struct RuntimeDir {
    dir: tempfile::TempDir,
    _owner: File,
}

impl RuntimeDir {
    pub fn create() -> Result<RuntimeDir, VmError> {
        Self::create_in(&runtime_base())
    }

    fn create_in(base: &Path) -> Result<RuntimeDir, VmError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix(RUNTIME_PREFIX)
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(base)
            .map_err(|source| VmError::Io {
                path: base.to_path_buf(),
                source,
            })?;
        let owner = crate::cache::own(dir.path()).map_err(|e| VmError::Io {
            path: dir.path().into(),
            source: std::io::Error::other(crate::report::error_chain(&e)),
        })?;
        Ok(RuntimeDir { dir, _owner: owner })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A run's scratch disks; dropping it closes (and so frees) them and removes the directory,
/// unless they are kept.
pub struct ScratchDisks {
    dir: Option<tempfile::TempDir>,
    kept: Option<PathBuf>,
    /// Open descriptors of the unlinked disk files, which QEMU opens through /proc.
    _files: Vec<File>,
    _owner: Option<File>,
    pub disks: Vec<Disk>,
}

impl ScratchDisks {
    /// Creates one sparse disk of `size` bytes per `(name, size)`. With `keep` the files stay
    /// in a directory that outlives the run ([`ScratchDisks::kept`]).
    pub fn create(devices: &[(String, u64)], keep: bool) -> Result<ScratchDisks, VmError> {
        Self::create_in(&std::env::temp_dir(), devices, keep)
    }

    fn create_in(
        base: &Path,
        devices: &[(String, u64)],
        keep: bool,
    ) -> Result<ScratchDisks, VmError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| VmError::Io { path, source }
        };
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir_in(base)
            .map_err(io(base))?;
        let owner = crate::cache::own(dir.path()).map_err(|e| VmError::Io {
            path: dir.path().into(),
            source: std::io::Error::other(crate::report::error_chain(&e)),
        })?;
        let mut files = Vec::new();
        let mut disks = Vec::new();
        for (name, size) in devices {
            let path = dir.path().join(format!("{name}.img"));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(io(&path))?;
            file.set_len(*size).map_err(io(&path))?;
            let qemu_path = if keep {
                path
            } else {
                std::fs::remove_file(&path).map_err(io(&path))?;
                PathBuf::from(format!(
                    "/proc/{}/fd/{}",
                    std::process::id(),
                    file.as_raw_fd()
                ))
            };
            files.push(file);
            disks.push(Disk {
                serial: name.clone(),
                path: qemu_path,
                read_only: false,
                format: super::qemu::DiskFormat::Raw,
            });
        }
        Ok(if keep {
            // Kept disks are the user's: no owner file, so no sweep ever removes them.
            // The name goes before the lock: a sweep that found `.owner` unlocked would
            // take the kept disks for a killed run's.
            let _ = std::fs::remove_file(dir.path().join(crate::cache::OWNER));
            drop(owner);
            ScratchDisks {
                kept: Some(dir.keep()),
                dir: None,
                _files: Vec::new(),
                _owner: None,
                disks,
            }
        } else {
            ScratchDisks {
                dir: Some(dir),
                kept: None,
                _files: files,
                _owner: Some(owner),
                disks,
            }
        })
    }

    /// The directory of disks kept for the user (`--keep`).
    pub fn kept(&self) -> Option<&Path> {
        self.kept.as_deref()
    }

    /// The directory this run's disks are in.
    pub fn dir(&self) -> &Path {
        match (&self.dir, &self.kept) {
            (Some(d), _) => d.path(),
            (None, Some(k)) => k,
            (None, None) => Path::new(""),
        }
    }
}

/// Removes the scratch-disk directories of runs that are gone (their owner lock is free;
/// directories with no lock, from an older crashrig, after a day; kept ones never, as they
/// have no lock file but their disks). Returns one line per removal.
pub fn sweep() -> Vec<String> {
    let mut swept = sweep_in(&std::env::temp_dir());
    swept.extend(sweep_runtime_in(&runtime_base()));
    swept
}

fn sweep_in(tmp: &Path) -> Vec<String> {
    sweep_prefix(tmp, PREFIX, "scratch disks")
}

/// Runtime directories (sockets only) of runs that are gone; only ones with an owner lock.
fn sweep_runtime_in(base: &Path) -> Vec<String> {
    sweep_prefix(base, RUNTIME_PREFIX, "runtime directory")
}

fn sweep_prefix(tmp: &Path, prefix: &str, what: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return Vec::new();
    };
    let mut swept = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let ours = entry.file_name().to_string_lossy().starts_with(prefix)
            && entry.file_type().is_ok_and(|t| t.is_dir());
        if !ours || !path.join(crate::cache::OWNER).exists() || !crate::cache::abandoned(&path) {
            continue;
        }
        if std::fs::remove_dir_all(&path).is_ok() {
            swept.push(format!(
                "removed {what} {} (left by a crashrig that was killed)",
                path.display()
            ));
        }
    }
    swept
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn disks_are_unlinked_but_usable_through_proc_and_gone_on_drop() {
        // A base of its own: a sweep of the shared temporary directory races every other
        // test (and crashrig) creating or keeping disks there.
        let base = tempfile::tempdir().unwrap();
        let scratch =
            ScratchDisks::create_in(base.path(), &[("scratch".into(), 1 << 20)], false).unwrap();
        let dir = scratch.dir().to_path_buf();
        let disk = &scratch.disks[0];
        assert!(disk.path.starts_with("/proc/"), "{}", disk.path.display());
        // What QEMU does: open the path and use it.
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&disk.path)
            .unwrap();
        assert_eq!(f.metadata().unwrap().len(), 1 << 20);
        f.write_all(b"data").unwrap();
        f.rewind().unwrap();
        let mut back = [0u8; 4];
        f.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"data");
        // Nothing but the owner lock is in the directory.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![".owner".to_string()]);
        // A live run's directory is never swept (the base holds nothing else to sweep).
        assert_eq!(sweep_in(base.path()), Vec::<String>::new());
        assert!(dir.join(".owner").is_file());
        drop(scratch);
        assert!(!dir.exists());
    }

    #[test]
    fn kept_disks_stay_and_are_never_swept() {
        let base = tempfile::tempdir().unwrap();
        let scratch = ScratchDisks::create_in(base.path(), &[("a".into(), 4096)], true).unwrap();
        let dir = scratch.kept().unwrap().to_path_buf();
        assert_eq!(dir.parent(), Some(base.path()));
        drop(scratch);
        assert!(dir.join("a.img").is_file());
        assert_eq!(sweep_in(base.path()), Vec::<String>::new());
        assert!(dir.join("a.img").is_file());
    }

    #[test]
    fn sweep_removes_what_a_killed_run_left() {
        let tmp = tempfile::tempdir().unwrap();
        let dead = tmp.path().join("crashrig-disks-dead");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(".owner"), "").unwrap();
        let other = tmp.path().join("unrelated");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join(".owner"), "").unwrap();
        assert_eq!(
            sweep_in(tmp.path()),
            vec![format!(
                "removed scratch disks {} (left by a crashrig that was killed)",
                dead.display()
            )]
        );
        assert!(!dead.exists() && other.exists());
    }

    #[test]
    fn a_runtime_directory_is_private_and_a_killed_runs_is_swept() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let live = RuntimeDir::create_in(base.path()).unwrap();
        let mode = std::fs::metadata(live.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
        // A kill -9 leaves the directory with a socket in it and nobody holding its lock.
        let dead = base.path().join("crashrig-rt-dead");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(".owner"), "").unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(dead.join("qmp.sock")).unwrap();
        // A scratch-disk directory is not a runtime directory, and has its own sweep.
        let disks = base.path().join("crashrig-disks-dead");
        std::fs::create_dir(&disks).unwrap();
        std::fs::write(disks.join(".owner"), "").unwrap();
        assert_eq!(
            sweep_runtime_in(base.path()),
            vec![format!(
                "removed runtime directory {} (left by a crashrig that was killed)",
                dead.display()
            )]
        );
        assert!(!dead.exists() && live.path().exists() && disks.exists());
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists());
    }
}
