//! crashrig's cache directory: downloaded kernels, guest images, source trees, builds.
//!
//! Everything in it can be rebuilt. An entry is assembled in a private `tmp/partial-*`
//! directory, fsync'd with a completion marker that records every file's size and SHA-256,
//! renamed into place, and the parent directory fsync'd; before use an entry is checked
//! against its marker, and one that does not match (a host crash, a truncated file) is
//! discarded and rebuilt instead of being trusted. The root is private (0700) and owned by
//! the user; locks never follow symlinks.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::report::durable;

/// The completion marker inside every entry.
pub const MARKER: &str = ".crashrig-complete.json";
/// The lock file inside a partial directory or scratch-disk directory, held by its owner.
/// The lock file naming a directory's live owner ([`own`]); sweeps skip locked ones.
pub const OWNER: &str = ".owner";
/// Partial directories without an owner lock (made by an older crashrig, which may still
/// run) are swept only after this long.
const UNOWNED_AGE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot create cache directory {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot move finished entry into {path}")]
    Install {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read cache entry {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("use {path} as the cache: it is owned by uid {owner}, not by this user (uid {me}); set CRASHRIG_CACHE to a directory of your own")]
    NotOwned { path: PathBuf, owner: u32, me: u32 },
    #[error("use {path} as the cache: others may write to it (mode {mode:o}), so its entries cannot be trusted; remove it or set CRASHRIG_CACHE")]
    Writable { path: PathBuf, mode: u32 },
    #[error("lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl CacheError {
    pub fn exit_code(&self) -> i32 {
        crate::exit::CONFIG_OR_INFRA
    }
}

/// What an entry holds: every file hashed (kernels, images, initrds), or nothing hashed
/// because the entry changes in use and its owner checks it another way (a source git
/// repository gets worktrees and objects; git checks its own objects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contents {
    Hashed,
    /// Every file hashed, sparse ones by their non-zero pages (saved guests' RAM images:
    /// gigabytes long, mostly holes). Only entries that ask for it: a marker written this way
    /// is not understood by a crashrig from before it.
    HashedSparse,
    Unhashed,
}

/// The state of a cache entry when looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Complete and matching its marker: use it.
    Ready,
    /// Not there: build it.
    Missing,
    /// It was there but incomplete or damaged (why); it was removed: build it again.
    Discarded(String),
}

impl Lookup {
    pub fn is_ready(&self) -> bool {
        *self == Lookup::Ready
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Marker {
    /// Relative path -> size and SHA-256 (empty for [`Contents::Unhashed`]).
    files: BTreeMap<String, FileSum>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct FileSum {
    size: u64,
    /// SHA-256 of the contents; for a sparse file (a saved guest's RAM image, gigabytes long
    /// and mostly holes) [`PAGES`] and the SHA-256 of its non-zero pages, so that checking it
    /// reads only the pages it holds.
    sha256: String,
}

/// The prefix of a sparse file's sum (see [`FileSum::sha256`]).
const PAGES: &str = "pages-";

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// A directory in `cache/tmp` where an entry is assembled; removed on drop. Its owner lock
/// tells a later run's sweep whether the process that made it is still alive.
pub struct Partial {
    dir: tempfile::TempDir,
    _owner: File,
}

impl Partial {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// An exclusive `flock` on a file, released on drop (and by the kernel when the holder dies,
/// so a killed run leaves no stale lock).
pub struct Lock(#[allow(dead_code)] File);

impl Cache {
    /// `$CRASHRIG_CACHE`, else `$XDG_CACHE_HOME/crashrig`, else `~/.cache/crashrig`, else
    /// `/var/tmp/crashrig-cache-<uid>` (private like the others: created 0700, refused when
    /// another user owns it).
    pub fn from_env() -> Cache {
        let root = std::env::var_os("CRASHRIG_CACHE")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("crashrig"))
            })
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/crashrig")))
            .unwrap_or_else(|| {
                // SAFETY: geteuid has no preconditions.
                PathBuf::from(format!("/var/tmp/crashrig-cache-{}", unsafe {
                    libc::geteuid()
                }))
            });
        Cache { root }
    }

    pub fn at(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the root (0700) and checks that it is this user's and private.
    fn check_root(&self) -> Result<(), CacheError> {
        let create = |source| CacheError::Create {
            path: self.root.clone(),
            source,
        };
        if let Some(parent) = self.root.parent() {
            std::fs::create_dir_all(parent).map_err(create)?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&self.root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(create(e)),
        }
        let meta = std::fs::metadata(&self.root).map_err(create)?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(CacheError::NotOwned {
                path: self.root.clone(),
                owner: meta.uid(),
                me,
            });
        }
        let mode = meta.mode() & 0o7777;
        // World-writable: anyone may have planted entries. Group-writable is what a umask
        // of 002 gave an older crashrig (a private user group): made private below.
        if mode & 0o002 != 0 {
            return Err(CacheError::Writable {
                path: self.root.clone(),
                mode,
            });
        }
        if mode & 0o077 != 0 {
            // Made by an older crashrig with the umask's mode: make it private.
            std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
                .map_err(create)?;
        }
        Ok(())
    }

    /// A subdirectory, created on demand: `kernels`, `images`, `sources`, `builds`, `tmp`.
    pub fn dir(&self, name: &str) -> Result<PathBuf, CacheError> {
        self.check_root()?;
        let path = self.root.join(name);
        std::fs::create_dir_all(&path).map_err(|source| CacheError::Create {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// A fresh temporary directory inside the cache (same filesystem, so `install` is a
    /// rename), locked by this process until dropped.
    pub fn tempdir(&self) -> Result<Partial, CacheError> {
        let tmp = self.dir("tmp")?;
        let dir = tempfile::Builder::new()
            .prefix("partial-")
            .tempdir_in(&tmp)
            .map_err(|source| CacheError::Create {
                path: tmp.clone(),
                source,
            })?;
        let owner = own(dir.path())?;
        Ok(Partial { dir, _owner: owner })
    }

    /// Moves a finished temporary entry to `dest` with its completion marker, durably. When
    /// another process installed the same entry first, theirs is kept (entries are
    /// content-addressed, so both are equal).
    pub fn install(&self, from: &Path, dest: &Path, contents: Contents) -> Result<(), CacheError> {
        let install = |source| CacheError::Install {
            path: dest.to_path_buf(),
            source,
        };
        let marker = Marker {
            files: match contents {
                Contents::Hashed => sums(from, false).map_err(install)?,
                Contents::HashedSparse => sums(from, true).map_err(install)?,
                Contents::Unhashed => BTreeMap::new(),
            },
        };
        let text = serde_json::to_vec_pretty(&marker).map_err(|e| install(io::Error::other(e)))?;
        durable::write_atomic(&from.join(MARKER), &text).map_err(install)?;
        durable::sync_tree(from).map_err(install)?;
        let parent = dest.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|source| CacheError::Create {
            path: parent.to_path_buf(),
            source,
        })?;
        match std::fs::rename(from, dest) {
            Ok(()) => durable::sync_dir(parent).map_err(install),
            Err(_) if dest.exists() => Ok(()),
            Err(source) => Err(install(source)),
        }
    }

    /// Checks the entry at `dest` against its marker; a damaged one is removed. An entry
    /// from before markers existed is adopted when its `required` files are there and not
    /// empty (a host crash left those empty), else removed.
    pub fn lookup(
        &self,
        dest: &Path,
        required: &[&str],
        contents: Contents,
    ) -> Result<Lookup, CacheError> {
        if !dest.exists() {
            return Ok(Lookup::Missing);
        }
        let problem = match std::fs::read(dest.join(MARKER)) {
            Ok(text) => match serde_json::from_slice::<Marker>(&text) {
                Ok(marker) => check(dest, &marker, required),
                Err(e) => Some(format!("its completion marker is damaged ({e})")),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match required
                    .iter()
                    .find(|f| std::fs::metadata(dest.join(f)).map_or(true, |m| m.len() == 0))
                {
                    Some(f) => Some(format!(
                        "it has no completion marker and {f} is missing or empty"
                    )),
                    None => {
                        // Adopt: what is there now is what later runs check against.
                        let from = dest.to_path_buf();
                        let marker = Marker {
                            files: match contents {
                                Contents::Hashed | Contents::HashedSparse => {
                                    let sparse = contents == Contents::HashedSparse;
                                    sums(&from, sparse).map_err(|source| CacheError::Read {
                                        path: from.clone(),
                                        source,
                                    })?
                                }
                                Contents::Unhashed => BTreeMap::new(),
                            },
                        };
                        let text = serde_json::to_vec_pretty(&marker).unwrap_or_default();
                        durable::write_atomic(&dest.join(MARKER), &text).map_err(|source| {
                            CacheError::Install {
                                path: dest.to_path_buf(),
                                source,
                            }
                        })?;
                        None
                    }
                }
            }
            Err(source) => {
                return Err(CacheError::Read {
                    path: dest.to_path_buf(),
                    source,
                })
            }
        };
        match problem {
            None => Ok(Lookup::Ready),
            Some(why) => {
                self.discard(dest)?;
                Ok(Lookup::Discarded(format!(
                    "cache entry {} discarded: {why}",
                    dest.display()
                )))
            }
        }
    }

    /// Moves an entry out of the way (a rename, so no reader sees it half deleted) and
    /// deletes it.
    pub fn discard(&self, dest: &Path) -> Result<(), CacheError> {
        let tmp = self.dir("tmp")?;
        let aside = tmp.join(format!(
            "discarded-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        match std::fs::rename(dest, &aside) {
            Ok(()) => {
                let _ = std::fs::remove_dir_all(&aside);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CacheError::Install {
                path: dest.to_path_buf(),
                source,
            }),
        }
    }

    /// Removes what killed runs left in the cache: partial entries whose owner is gone
    /// (unowned ones after a day), discarded entries. Returns one line per removal.
    pub fn sweep(&self) -> Result<Vec<String>, CacheError> {
        let tmp = self.dir("tmp")?;
        let mut swept = Vec::new();
        let entries = std::fs::read_dir(&tmp).map_err(|source| CacheError::Read {
            path: tmp.clone(),
            source,
        })?;
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let stale = if name.starts_with("partial-") {
                abandoned(&path)
            } else {
                name.starts_with("discarded-")
            };
            if stale && std::fs::remove_dir_all(&path).is_ok() {
                swept.push(format!(
                    "removed {} (left by a crashrig that was killed)",
                    path.display()
                ));
            }
        }
        Ok(swept)
    }
}

/// Creates and locks the owner file of a directory this process just made. The file is locked
/// before it takes its name: a sweep (another crashrig's, or another thread's) that finds
/// `.owner` finds it locked for as long as its owner lives, never in the moment between its
/// creation and its lock, when the sweep would take the lock and remove the directory.
pub fn own(dir: &Path) -> Result<File, CacheError> {
    let path = dir.join(OWNER);
    let err = |source| CacheError::Lock {
        path: path.clone(),
        source,
    };
    let unnamed = dir.join(format!("{OWNER}.{}", std::process::id()));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&unnamed)
        .map_err(err)?;
    if let Err(e) =
        flock(&file, libc::LOCK_EX | libc::LOCK_NB).and_then(|()| std::fs::rename(&unnamed, &path))
    {
        let _ = std::fs::remove_file(&unnamed);
        return Err(err(e));
    }
    Ok(file)
}

/// Whether the directory's owner is gone: its owner lock can be taken, or it has none and
/// nothing in it changed for a day.
pub fn abandoned(dir: &Path) -> bool {
    let owner = dir.join(OWNER);
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&owner)
    {
        Ok(f) => flock(&f, libc::LOCK_EX | libc::LOCK_NB).is_ok(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => newest_change(dir)
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > UNOWNED_AGE),
        Err(_) => false,
    }
}

fn newest_change(dir: &Path) -> Option<SystemTime> {
    let mut newest = std::fs::symlink_metadata(dir).ok()?.modified().ok()?;
    for entry in std::fs::read_dir(dir).ok()?.filter_map(Result::ok) {
        if let Ok(t) = entry.metadata().and_then(|m| m.modified()) {
            newest = newest.max(t);
        }
    }
    Some(newest)
}

/// An exclusive `flock` on `path`, created 0600 if absent; a symlink at `path` is refused
/// (O_NOFOLLOW), so a planted link cannot make crashrig create or truncate another file.
pub fn lock(path: &Path) -> Result<Lock, CacheError> {
    lock_or_wait(path, || {})
}

/// [`lock`], calling `waiting` first when another process holds the lock (so a caller can say
/// that it is queued rather than look stuck).
pub fn lock_or_wait(path: &Path, waiting: impl FnOnce()) -> Result<Lock, CacheError> {
    let err = |source| CacheError::Lock {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(err)?;
    if !file.metadata().map_err(err)?.is_file() {
        return Err(err(io::Error::other("not a regular file")));
    }
    if flock(&file, libc::LOCK_EX | libc::LOCK_NB).is_err() {
        waiting();
        flock(&file, libc::LOCK_EX).map_err(err)?;
    }
    Ok(Lock(file))
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock(2) on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Size and SHA-256 of every regular file below `root` (the marker and owner excluded).
/// The sums of every file under `root`; `sparse`: sparse files by their pages.
fn sums(root: &Path, sparse: bool) -> io::Result<BTreeMap<String, FileSum>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .map_err(io::Error::other)?
                    .to_string_lossy()
                    .into_owned();
                if rel == MARKER || rel == OWNER {
                    continue;
                }
                out.insert(rel, sum(&path, sparse)?);
            }
        }
    }
    Ok(out)
}

fn sum(path: &Path, sparse: bool) -> io::Result<FileSum> {
    let mut file = File::open(path)?;
    let meta = file.metadata()?;
    if sparse && crate::vm::ram::allocated(&meta) < meta.len() {
        return Ok(FileSum {
            size: meta.len(),
            sha256: format!("{PAGES}{}", pages_sum(&file)?),
        });
    }
    let mut hasher = Sha256::new();
    let size = io::copy(&mut file, &mut hasher)?;
    Ok(FileSum {
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// SHA-256 over every non-zero page of `file` with its index: what the file holds, whatever
/// its layout of holes, reading only the ranges that hold data.
fn pages_sum(file: &File) -> io::Result<String> {
    use crate::vm::ram::PAGE;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    crate::vm::ram::for_each_page(file, &mut buf, |offset, run| {
        for (i, page) in run.chunks(PAGE).enumerate() {
            let index = offset / PAGE as u64 + i as u64;
            hasher.update(index.to_le_bytes());
            hasher.update(page);
        }
        Ok(())
    })?;
    Ok(hex::encode(hasher.finalize()))
}

/// What is wrong with an entry, checked against its marker.
fn check(dest: &Path, marker: &Marker, required: &[&str]) -> Option<String> {
    if let Some(f) = required
        .iter()
        .find(|f| !marker.files.is_empty() && !marker.files.contains_key(**f))
    {
        return Some(format!("its marker does not list {f}"));
    }
    for (rel, want) in &marker.files {
        let path = dest.join(rel);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => return Some(format!("{rel}: {e}")),
        };
        if meta.len() != want.size {
            return Some(format!(
                "{rel} has {} bytes, its marker says {}",
                meta.len(),
                want.size
            ));
        }
    }
    for (rel, want) in &marker.files {
        let got = match want.sha256.strip_prefix(PAGES) {
            // Sparse when installed: sparse it stays (a copy that filled its holes is the
            // same image).
            Some(_) => File::open(dest.join(rel))
                .and_then(|f| pages_sum(&f))
                .map(|s| FileSum {
                    size: want.size,
                    sha256: format!("{PAGES}{s}"),
                }),
            None => sum(&dest.join(rel), false),
        };
        match got {
            Ok(got) if got.sha256 == want.sha256 => {}
            Ok(_) => return Some(format!("{rel} does not match its SHA-256")),
            Err(e) => return Some(format!("{rel}: {e}")),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(cache: &Cache, files: &[(&str, &str)]) -> Partial {
        let tmp = cache.tempdir().unwrap();
        for (name, content) in files {
            let p = tmp.path().join("entry").join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        tmp
    }

    #[test]
    fn install_is_atomic_and_keeps_the_first_entry() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::at(root.path().join("c"));
        let dest = cache.dir("images").unwrap().join("abc");
        for content in ["first", "second"] {
            let tmp = entry(&cache, &[("f", content)]);
            cache
                .install(&tmp.path().join("entry"), &dest, Contents::Hashed)
                .unwrap();
        }
        assert_eq!(std::fs::read_to_string(dest.join("f")).unwrap(), "first");
        assert_eq!(
            cache.lookup(&dest, &["f"], Contents::Hashed).unwrap(),
            Lookup::Ready
        );
        let mode = std::fs::metadata(cache.root()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700, "the cache is private");
    }

    #[test]
    fn a_truncated_or_changed_entry_is_discarded_not_trusted() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::at(root.path().join("c"));
        let dest = cache.dir("kernels").unwrap().join("k");
        let install = || {
            let tmp = entry(&cache, &[("bzImage", "kernel"), ("modules/a.ko", "mod")]);
            cache
                .install(&tmp.path().join("entry"), &dest, Contents::Hashed)
                .unwrap();
        };
        install();
        // A host crash before the data reached the disk: zero bytes.
        std::fs::write(dest.join("bzImage"), "").unwrap();
        assert_eq!(
            cache.lookup(&dest, &["bzImage"], Contents::Hashed).unwrap(),
            Lookup::Discarded(format!(
                "cache entry {} discarded: bzImage has 0 bytes, its marker says 6",
                dest.display()
            ))
        );
        assert!(!dest.exists());
        assert_eq!(
            cache.lookup(&dest, &["bzImage"], Contents::Hashed).unwrap(),
            Lookup::Missing
        );
        install();
        std::fs::write(dest.join("modules/a.ko"), "MOD").unwrap();
        let got = cache.lookup(&dest, &["bzImage"], Contents::Hashed).unwrap();
        assert_eq!(
            got,
            Lookup::Discarded(format!(
                "cache entry {} discarded: modules/a.ko does not match its SHA-256",
                dest.display()
            ))
        );
    }

    /// Installs an entry holding `name` (beside a small file): a sparse file of `len` bytes
    /// with `data` at 12 MiB, as `contents`. Returns the cache's directory, the cache, the
    /// entry and the sum its marker records for `name`.
    fn sparse_entry(
        contents: Contents,
        name: &str,
        len: u64,
        data: &[u8],
    ) -> (tempfile::TempDir, Cache, PathBuf, String) {
        use std::os::unix::fs::FileExt;
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::at(root.path().join("c"));
        let dest = cache.dir("entries").unwrap().join("e");
        let tmp = entry(&cache, &[("small", "k")]);
        let f = File::create(tmp.path().join("entry").join(name)).unwrap();
        f.set_len(len).unwrap();
        f.write_all_at(data, 12 << 20).unwrap();
        cache
            .install(&tmp.path().join("entry"), &dest, contents)
            .unwrap();
        let marker: Marker =
            serde_json::from_slice(&std::fs::read(dest.join(MARKER)).unwrap()).unwrap();
        assert!(!marker.files["small"].sha256.starts_with(PAGES));
        let sum = marker.files[name].sha256.clone();
        (root, cache, dest, sum)
    }

    /// Regression: sparse files of entries that did not ask for page sums (a guest image's
    /// tools.ext4) must keep their plain SHA-256, which every crashrig before page sums
    /// checks; a page sum there made older binaries discard and rebuild the image.
    #[test]
    fn a_sparse_file_of_a_plain_entry_keeps_its_plain_sum() {
        let (_root, cache, dest, sum) =
            sparse_entry(Contents::Hashed, "tools.ext4", 64 << 20, b"ext4");
        let mut plain = Sha256::new();
        io::copy(&mut io::Read::take(io::repeat(0), 12 << 20), &mut plain).unwrap();
        plain.update(b"ext4");
        io::copy(
            &mut io::Read::take(io::repeat(0), (52 << 20) - 4),
            &mut plain,
        )
        .unwrap();
        assert_eq!(sum, hex::encode(plain.finalize()));
        assert_eq!(
            cache
                .lookup(&dest, &["tools.ext4"], Contents::Hashed)
                .unwrap(),
            Lookup::Ready
        );
    }

    #[test]
    fn a_sparse_image_is_checked_by_its_pages_and_a_changed_page_is_caught() {
        use std::os::unix::fs::FileExt;
        let (_root, cache, dest, sum) =
            sparse_entry(Contents::HashedSparse, "guest.ram", 1 << 30, b"page");
        assert!(sum.starts_with(PAGES));
        assert_eq!(
            cache
                .lookup(&dest, &["guest.ram"], Contents::Hashed)
                .unwrap(),
            Lookup::Ready
        );
        // The same bytes in another page: same length, same allocation, another image.
        let f = File::options()
            .write(true)
            .open(dest.join("guest.ram"))
            .unwrap();
        f.write_all_at(b"\0\0\0\0", 12 << 20).unwrap();
        f.write_all_at(b"page", 13 << 20).unwrap();
        assert_eq!(
            cache
                .lookup(&dest, &["guest.ram"], Contents::Hashed)
                .unwrap(),
            Lookup::Discarded(format!(
                "cache entry {} discarded: guest.ram does not match its SHA-256",
                dest.display()
            ))
        );
    }

    #[test]
    fn entries_from_before_markers_are_adopted_only_when_whole() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::at(root.path().join("c"));
        let dir = cache.dir("images").unwrap();
        let good = dir.join("good");
        std::fs::create_dir_all(&good).unwrap();
        std::fs::write(good.join("initramfs.cpio"), "cpio").unwrap();
        assert!(cache
            .lookup(&good, &["initramfs.cpio"], Contents::Hashed)
            .unwrap()
            .is_ready());
        assert!(good.join(MARKER).is_file(), "adopted with a marker");
        let torn = dir.join("torn");
        std::fs::create_dir_all(&torn).unwrap();
        std::fs::write(torn.join("initramfs.cpio"), "").unwrap();
        assert!(matches!(
            cache
                .lookup(&torn, &["initramfs.cpio"], Contents::Hashed)
                .unwrap(),
            Lookup::Discarded(_)
        ));
        assert!(!torn.exists());
    }

    /// A build queued behind another crashrig's looked stuck in its "source" stage.
    #[test]
    fn a_contended_lock_says_it_waits_then_takes_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tree.lock");
        let mut waited = false;
        let free = lock_or_wait(&path, || waited = true).unwrap();
        assert!(!waited, "nobody held it");
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let other = std::thread::spawn(move || {
            let _held = lock_or_wait(&p, || tx.send("waiting").unwrap()).unwrap();
        });
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(10)),
            Ok("waiting")
        );
        assert!(!other.is_finished(), "it waits while the lock is held");
        drop(free);
        other.join().unwrap();
    }

    #[test]
    fn locks_refuse_symlinks_and_never_truncate() {
        let root = tempfile::tempdir().unwrap();
        let victim = root.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let link = root.path().join("x.lock");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = lock(&link).err().unwrap();
        assert!(
            err.to_string().starts_with("lock ") && err.to_string().ends_with("x.lock"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let real = root.path().join("y.lock");
        drop(lock(&real).unwrap());
        let _again = lock(&real).unwrap();
    }

    #[test]
    fn sweep_removes_partials_of_dead_owners_only() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::at(root.path().join("c"));
        let alive = cache.tempdir().unwrap();
        // A killed run's partial: its owner file is there but nobody holds the lock.
        let dead = cache.dir("tmp").unwrap().join("partial-dead");
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::write(dead.join(OWNER), "").unwrap();
        // An older crashrig's partial (no owner file), fresh: it may still be in use.
        let old = cache.dir("tmp").unwrap().join("partial-old");
        std::fs::create_dir_all(&old).unwrap();
        let swept = cache.sweep().unwrap();
        assert_eq!(
            swept,
            vec![format!(
                "removed {} (left by a crashrig that was killed)",
                dead.display()
            )]
        );
        assert!(alive.path().exists() && old.exists() && !dead.exists());
    }

    #[test]
    fn a_cache_others_can_write_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = Cache::at(&dir).dir("kernels").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "use {} as the cache: others may write to it (mode 777), so its entries cannot be trusted; remove it or set CRASHRIG_CACHE",
                dir.display()
            )
        );
    }
}
