//! Files that survive a host crash: every results file and cache entry is written under a
//! unique temporary name, fsync'd, renamed into place and its directory fsync'd. A reader
//! therefore sees the old file or the new one, never a torn or zero-length one, and two
//! processes writing the same file never share a temporary.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically and durably (temp, fsync, rename, fsync of the
/// directory). On failure (a full disk) the old file is untouched and the temporary removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let (tmp, mut file) = create_temp(dir, &name.to_string_lossy())?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// `.NAME.PID.RANDOM.tmp` next to the target, created exclusively (never a symlink left by
/// someone else, never another writer's temporary).
fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    loop {
        let tmp = dir.join(format!(
            ".{name}.{}.{:08x}.tmp",
            std::process::id(),
            rand::random::<u32>()
        ));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// fsync of a directory, so the names created or renamed in it survive a host crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// fsync of every regular file and directory below `root` (and `root` itself): a cache entry
/// before it is renamed into place.
pub fn sync_tree(root: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(root)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(root)? {
            sync_tree(&entry?.path())?;
        }
        sync_dir(root)
    } else if meta.is_file() {
        File::open(root)?.sync_all()
    } else {
        Ok(())
    }
}

/// Creates a new directory that no other run uses: `base` itself when it does not exist, else `base-2`, `base-3`, ... (mkdir is the atomic claim, so two
/// runs started in the same second get two directories).
pub fn create_unique_dir(base: &Path) -> io::Result<PathBuf> {
    if let Some(parent) = base.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    for n in 1u32.. {
        let candidate = if n == 1 {
            base.to_path_buf()
        } else {
            let mut name = base.as_os_str().to_owned();
            name.push(format!("-{n}"));
            PathBuf::from(name)
        };
        match std::fs::create_dir(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("u32 names run out only after 4 billion directories")
}

#[derive(Debug, thiserror::Error)]
pub enum ResultsDirError {
    #[error("create the results directory {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "use {path} as the results directory: it already holds results of another run; \
         give --resume to continue them, or another --out"
    )]
    InUse { path: PathBuf },
    /// A file of a name the command writes at the top of its results directory, in a
    /// directory that holds no results (the user's own `summary.md`, say).
    #[error(
        "use {path} as the results directory: it holds `{file}`, which crashrig writes there \
         and would replace; move the file away or give another --out"
    )]
    WouldReplace { path: PathBuf, file: &'static str },
    #[error("resume without --out: name the results directory to continue")]
    ResumeWithoutOut,
    /// Another process holds the directory's lock: two runs writing one results.json would
    /// keep only one run's results.
    #[error(
        "use {path} as the results directory: another crashrig is writing to it (it holds the \
         directory's lock); wait for it to finish, or give another --out"
    )]
    Locked { path: PathBuf },
    #[error("lock the results directory {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ResultsDirError {
    pub fn exit_code(&self) -> i32 {
        crate::exit::CONFIG_OR_INFRA
    }
}

/// Files whose presence means a directory holds a run's results.
const RESULTS_MARKS: &[&str] = &["results.json", "runs", "bisect.journal", "junit.xml"];

/// The other files commands write at the top of a results directory (matrix, report,
/// bisect, amplify), replacing what is there: a new run's directory must not hold them
/// (`matrix --out DIR` replaced a user's `DIR/summary.md` without a word).
const REPORT_FILES: &[&str] = &[
    "summary.md",
    "junit-cells.xml",
    "bisect.json",
    "bisect-target.json",
    "amplify.json",
];

/// Results directories this process has locked: the locks are held until the process ends
/// (a lock that dies with its holder, kill -9 included, is the kernel's job: flock(2)), so no
/// caller can drop one while the run still writes.
static HELD: std::sync::Mutex<Vec<((u64, u64), File)>> = std::sync::Mutex::new(Vec::new());

/// Takes an exclusive lock on the directory `dir` (flock(2) on the directory itself, so
/// nothing is added to it) for the rest of this process, or refuses with
/// [`ResultsDirError::Locked`] when another process holds it. Locking a directory this
/// process already holds succeeds.
pub fn lock_results_dir(dir: &Path) -> Result<(), ResultsDirError> {
    use std::os::unix::fs::MetadataExt;
    let failed = |source| ResultsDirError::Lock {
        path: dir.to_path_buf(),
        source,
    };
    let file = File::open(dir).map_err(failed)?;
    let meta = file.metadata().map_err(failed)?;
    let id = (meta.dev(), meta.ino());
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if held.iter().any(|(h, _)| *h == id) {
        return Ok(());
    }
    match file.try_lock() {
        Ok(()) => {
            held.push((id, file));
            Ok(())
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(ResultsDirError::Locked {
            path: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(failed(e)),
    }
}

/// The results directory of a new command: `--out` when given (created if absent; refused
/// when another crashrig holds it, or when it holds results and `resume` is false), else a
/// fresh unique directory under `default` (never shared with a run started in the same
/// second). Either way the directory stays locked until this process ends.
pub fn claim_results_dir(
    out: Option<&Path>,
    default: &Path,
    resume: bool,
) -> Result<PathBuf, ResultsDirError> {
    let Some(out) = out else {
        if resume {
            return Err(ResultsDirError::ResumeWithoutOut);
        }
        let dir = create_unique_dir(default).map_err(|source| ResultsDirError::Create {
            path: default.to_path_buf(),
            source,
        })?;
        lock_results_dir(&dir)?;
        return Ok(dir);
    };
    // Created (a new directory holds nothing to refuse) and locked before it is looked at,
    // so a second claimant is refused however close behind it starts.
    std::fs::create_dir_all(out).map_err(|source| ResultsDirError::Create {
        path: out.to_path_buf(),
        source,
    })?;
    lock_results_dir(out)?;
    if resume {
        return Ok(out.to_path_buf());
    }
    if RESULTS_MARKS.iter().any(|m| out.join(m).exists()) {
        return Err(ResultsDirError::InUse {
            path: out.to_path_buf(),
        });
    }
    if let Some(file) = REPORT_FILES
        .iter()
        .find(|f| out.join(f).symlink_metadata().is_ok())
    {
        return Err(ResultsDirError::WouldReplace {
            path: out.to_path_buf(),
            file,
        });
    }
    Ok(out.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.json");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("results.json")]);
    }

    #[test]
    fn failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.json");
        write_atomic(&path, b"old").unwrap();
        // A directory where the temporary would be renamed to: rename fails.
        let blocked = dir.path().join("sub");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), b"").unwrap();
        assert!(write_atomic(&blocked, b"new").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_symlink_at_a_temporary_name_is_never_followed() {
        // Writers never pick a name that exists, so a planted link cannot redirect a write.
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        for _ in 0..50 {
            let (tmp, _f) = create_temp(dir.path(), "x").unwrap();
            std::fs::remove_file(&tmp).unwrap();
            std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        }
        write_atomic(&dir.path().join("x"), b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn unique_dirs_for_runs_started_in_the_same_second() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("crashrig-results/2026-11-30T10-00-00");
        let a = create_unique_dir(&base).unwrap();
        let b = create_unique_dir(&base).unwrap();
        let c = create_unique_dir(&base).unwrap();
        assert_eq!(a, base);
        assert_eq!(b, dir.path().join("crashrig-results/2026-11-30T10-00-00-2"));
        assert_eq!(c, dir.path().join("crashrig-results/2026-11-30T10-00-00-3"));
    }

    #[test]
    fn a_new_results_directory_never_holds_a_file_a_report_would_replace() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("summary.md"), b"the user's notes").unwrap();
        let err = claim_results_dir(Some(&out), dir.path(), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "use {} as the results directory: it holds `summary.md`, which crashrig writes \
                 there and would replace; move the file away or give another --out",
                out.display()
            )
        );
        assert_eq!(
            std::fs::read(out.join("summary.md")).unwrap(),
            b"the user's notes"
        );
    }

    #[test]
    fn a_results_directory_is_reused_only_to_resume() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let default = dir.path().join("default");
        assert_eq!(claim_results_dir(Some(&out), &default, false).unwrap(), out);
        // Empty: still free (a test's fresh temporary directory).
        assert_eq!(claim_results_dir(Some(&out), &default, false).unwrap(), out);
        write_atomic(&out.join("results.json"), b"{}").unwrap();
        let err = claim_results_dir(Some(&out), &default, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "use {} as the results directory: it already holds results of another run; \
                 give --resume to continue them, or another --out",
                out.display()
            )
        );
        assert_eq!(err.exit_code(), 2);
        assert_eq!(claim_results_dir(Some(&out), &default, true).unwrap(), out);
        assert!(matches!(
            claim_results_dir(None, &default, true),
            Err(ResultsDirError::ResumeWithoutOut)
        ));
        let a = claim_results_dir(None, &default, false).unwrap();
        let b = claim_results_dir(None, &default, false).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn a_directory_holding_any_file_a_run_writes_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("default");
        for name in [
            "summary.md",
            "junit-cells.xml",
            "bisect.json",
            "bisect-target.json",
            "amplify.json",
        ] {
            let out = dir.path().join(format!("out-{name}"));
            std::fs::create_dir(&out).unwrap();
            std::fs::write(out.join(name), "the user's own").unwrap();
            let err = claim_results_dir(Some(&out), &default, false).unwrap_err();
            assert!(
                matches!(err, ResultsDirError::WouldReplace { file, .. } if file == name),
                "{name}: {err}"
            );
            assert_eq!(
                std::fs::read_to_string(out.join(name)).unwrap(),
                "the user's own"
            );
        }
        // Files a run never writes do not make a directory a results directory.
        let notes = dir.path().join("notes");
        std::fs::create_dir(&notes).unwrap();
        std::fs::write(notes.join("notes.txt"), "x").unwrap();
        assert_eq!(
            claim_results_dir(Some(&notes), &default, false).unwrap(),
            notes
        );
    }

    /// Whether some process holds `dir`'s lock (tried on a descriptor of its own, and
    /// released at once).
    fn locked_elsewhere(dir: &Path) -> bool {
        let f = File::open(dir).unwrap();
        match f.try_lock() {
            Ok(()) => {
                f.unlock().unwrap();
                false
            }
            Err(_) => true,
        }
    }

    #[test]
    fn two_runs_with_one_out_directory_the_second_is_refused_until_the_first_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("same");
        std::fs::create_dir(&out).unwrap();
        // Another crashrig, as the kernel sees it: flock(2) on another open of the directory
        // (a second open conflicts even within one process; runner/tests/bad_input.rs has
        // the two processes and kill -9).
        let holder = File::open(&out).unwrap();
        holder.try_lock().unwrap();
        for resume in [false, true] {
            let err = claim_results_dir(Some(&out), tmp.path(), resume).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "use {} as the results directory: another crashrig is writing to it (it \
                     holds the directory's lock); wait for it to finish, or give another --out",
                    out.display()
                )
            );
            assert_eq!(err.exit_code(), 2);
        }
        // The holder's end (its process exiting) frees the directory: --resume claims it.
        // Unlocked, not just closed: a child another test thread is forking right now holds
        // a copy of this descriptor (until its exec), and with it the lock.
        holder.unlock().unwrap();
        drop(holder);
        assert_eq!(
            claim_results_dir(Some(&out), tmp.path(), true).unwrap(),
            out
        );
        // Held by this process now, for as long as it lives.
        assert!(locked_elsewhere(&out));
        assert_eq!(
            claim_results_dir(Some(&out), tmp.path(), true).unwrap(),
            out
        );
    }
}
