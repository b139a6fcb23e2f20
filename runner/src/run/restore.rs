//! Restoring saved guests instead of booting them (`--restore`).
//!
//! Two kinds of snapshot, both saved once per machine and restored many times:
//! - *booted*: the guest just ready, before it has touched a scratch disk, so it caches
//!   nothing of their contents. A power cut, panic, reboot or hang then restores it on the
//!   disks exactly as the crash left them, and log recovery runs on the real crashed state, as
//!   after a boot.
//! - *set up*: the guest after the scenario's `setup`, with its disks frozen at the same
//!   instant. Every iteration then starts from a restore of it on fresh qcow2 overlays over
//!   those disks: iterations are independent trials from identical starts.
//!
//! Each restore gets fresh randomness and the host's clock with its first plan
//! (`boot::Booted::refresh_owed`).
//!
//! Booted guests are kept in the cache (`snapshots/<key>/`, with the cache's completion
//! marker, checked before use), keyed by everything the saved state depends on: kernel,
//! guest image and initramfs, VM shape (memory, CPUs, disks and their sizes, command line,
//! accelerator) and the QEMU binary. A later run of the same kernel and shape restores one
//! instead of its first boot, so a bisection's or matrix's batches on one kernel boot at most
//! once. The entries together stay under [`CACHE_CAP`]; the least recently used go first.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::boot::Booted;
use crate::cache::{Cache, CacheError, Contents, MARKER};
use crate::guest::RunKey;
use crate::scenario::{Scenario, Step};
use crate::vm::ram::{self, GuestRam};
use crate::vm::snapshot::{self, OverlayTemplate, Saved, SnapshotError};
use crate::vm::{Disk, DiskFormat};

/// The cache directory of saved guests.
const SNAPSHOTS: &str = "snapshots";
/// The saved device state in a cache entry.
const STATE: &str = "guest.state";
/// The guest's RAM image in a cache entry (sparse: as long as the guest's memory, taking room
/// for the pages the guest wrote).
const RAM: &str = "guest.ram";
/// The private key the saved guest trusts (it came on the kernel command line of its boot).
const KEY: &str = "run-key";
/// The console of the boot that saved the guest.
const CONSOLE: &str = "boot-console.log";
/// Present when the saved guest serves the agent channel (see [`Saved::agent`]).
const AGENT: &str = "agent-channel";
/// Saved guests in the cache take at most this much on disk (a 2 GiB guest just booted saves
/// to a RAM image taking about 180 MB); past it the least recently used entries are removed.
pub const CACHE_CAP: u64 = 4 << 30;

/// How long saving a guest may take (a paused 2 GiB guest takes about a second).
const SAVE_WITHIN: Duration = Duration::from_secs(120);

/// `--restore`: when a saved guest replaces a boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestoreMode {
    /// Wherever it is faster: boots after a power cut, panic, reboot or hang restore the
    /// booted guest, and iterations of scenarios with such steps (which need a new guest
    /// anyway) start from a restore of the set-up guest.
    Auto,
    /// Boots after the first restore the booted guest, and every iteration starts from a
    /// restore of the set-up guest (unless the scenario says `iterations-share-state`).
    Always,
    /// Boot every time; iterations run one after another on the same guest.
    #[default]
    Never,
}

impl std::fmt::Display for RestoreMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RestoreMode::Auto => "auto",
            RestoreMode::Always => "always",
            RestoreMode::Never => "never",
        })
    }
}

impl RestoreMode {
    /// Whether boots after the first restore the booted guest.
    pub fn restores_boots(self) -> bool {
        self != RestoreMode::Never
    }

    /// Whether every iteration of `s` starts from a restore of the set-up guest.
    pub fn restores_iterations(self, s: &Scenario) -> bool {
        match self {
            RestoreMode::Never => false,
            _ if s.iterations_share_state => false,
            RestoreMode::Always => true,
            RestoreMode::Auto => s.steps.iter().any(ends_the_guest),
        }
    }
}

/// Steps after which the iteration goes on in a new guest.
fn ends_the_guest(step: &Step) -> bool {
    matches!(step, Step::PowerCut(_) | Step::Panic(_) | Step::Reboot(_))
}

/// A saved state held open: what [`Pinned::path`] names stays readable even when another
/// crashrig prunes its cache entry meanwhile.
#[derive(Debug)]
pub struct Pinned {
    _file: File,
    path: PathBuf,
}

impl Pinned {
    fn open(path: &Path) -> std::io::Result<Pinned> {
        use std::os::unix::io::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        let path = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            file.as_raw_fd()
        ));
        Ok(Pinned { _file: file, path })
    }

    /// A path to the file for this process.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A saved guest held open: its device state and its RAM image (none when the RAM is in the
/// state stream).
#[derive(Debug)]
pub struct PinnedGuest {
    state: Pinned,
    ram: Option<Pinned>,
    agent: bool,
}

impl PinnedGuest {
    fn open(state: &Path, ram: Option<&Path>, agent: bool) -> std::io::Result<PinnedGuest> {
        Ok(PinnedGuest {
            state: Pinned::open(state)?,
            ram: ram.map(Pinned::open).transpose()?,
            agent,
        })
    }

    pub fn saved(&self) -> Saved<'_> {
        Saved {
            state: self.state.path(),
            ram: self.ram.as_ref().map(Pinned::path),
            agent: self.agent,
        }
    }
}

/// A booted guest from the cache: its state and the key it trusts.
pub struct CachedBooted {
    pub state: PinnedGuest,
    pub key: RunKey,
    /// The cache entry, discarded when the state does not load.
    pub entry: PathBuf,
}

impl CachedBooted {
    /// Starts `console_log` with the console of the boot that saved the guest, under a line
    /// that says so: a restored guest's console log then reads like a booted one's.
    pub fn write_boot_console(entry: &Path, console_log: &Path) -> std::io::Result<()> {
        let boot = std::fs::read(entry.join(CONSOLE))?;
        let mut text =
            b"crashrig: restored from a saved booted guest; its boot console follows\n".to_vec();
        text.extend_from_slice(&boot);
        text.extend_from_slice(b"\ncrashrig: the restored guest's console follows\n");
        std::fs::write(console_log, text)
    }
}

/// The cache key of a booted guest: every part (kernel, image, initramfs, VM shape, QEMU)
/// as text, in a fixed order.
pub fn booted_key(parts: &[String]) -> String {
    let mut h = Sha256::new();
    // v2: device state apart from a sparse RAM image. v3: the agent port has a device id
    // (QEMU reports its closing).
    h.update(b"crashrig booted guest v3\n");
    for p in parts {
        h.update(p.as_bytes());
        h.update(b"\n");
    }
    hex::encode(&h.finalize()[..16])
}

/// The identity of a host binary for cache keys: path, size and modification time (a QEMU
/// upgrade may not load an older QEMU's state).
pub fn binary_identity(path: &Path) -> String {
    let meta = std::fs::metadata(path).ok();
    let mtime = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    format!("{} {} {mtime}", path.display(), meta.map_or(0, |m| m.len()))
}

/// The booted guest saved under `key`, checked against its completion marker (a damaged entry
/// is removed and `None` returned).
pub fn cached_booted(cache: &Cache, key: &str) -> Result<Option<CachedBooted>, CacheError> {
    let entry = cache.dir(SNAPSHOTS)?.join(key);
    Ok(
        open_entry(cache, &entry, &[STATE, KEY, CONSOLE])?.map(|(state, key)| CachedBooted {
            state,
            key,
            entry,
        }),
    )
}

/// The saved guest in cache entry `entry` (holding at least `required`), checked against its
/// completion marker, held open, with the key it trusts; marked recently used. A damaged
/// entry, or one whose key is no key, is removed and `None` returned.
fn open_entry(
    cache: &Cache,
    entry: &Path,
    required: &[&str],
) -> Result<Option<(PinnedGuest, RunKey)>, CacheError> {
    if !cache
        .lookup(entry, required, Contents::HashedSparse)?
        .is_ready()
    {
        return Ok(None);
    }
    let read = |source| CacheError::Read {
        path: entry.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(entry.join(KEY)).map_err(read)?;
    let Ok(key) = RunKey::from_openssh(&text) else {
        // Matches its marker yet is no key: made by something else; not trusted.
        cache.discard(entry)?;
        return Ok(None);
    };
    let ram = Some(entry.join(RAM)).filter(|p| p.exists());
    let agent = entry.join(AGENT).exists();
    let state = PinnedGuest::open(&entry.join(STATE), ram.as_deref(), agent).map_err(read)?;
    // Recently used: the last to be pruned.
    let _ = File::open(entry.join(MARKER)).and_then(|f| f.set_modified(SystemTime::now()));
    Ok(Some((state, key)))
}

/// Saves the booted guest `booted` (which trusts `run_key`; with its spare helper, see
/// [`Booted::prepare_spare`]) and lets it run on; the state and RAM image go to the cache
/// under `key` for later runs and machines. Call it before anything has opened a scratch
/// disk. When the cache cannot take it, the state still serves this machine.
pub async fn save_booted(
    booted: &mut Booted,
    cache: &Cache,
    key: &str,
    run_key: &RunKey,
    console_log: &Path,
) -> Result<PinnedGuest, SnapshotError> {
    let cache_err = |e: CacheError| SnapshotError::Io {
        path: cache.root().to_path_buf(),
        source: std::io::Error::other(crate::report::error_chain(&e)),
    };
    booted.prepare_spare().await;
    let (vm, ram, agent) = (&mut booted.vm, booted.ram.as_ref(), booted.agent);
    let partial = cache.tempdir().map_err(cache_err)?;
    let from = partial.path().join("entry");
    std::fs::create_dir(&from).map_err(|source| SnapshotError::Io {
        path: from.clone(),
        source,
    })?;
    let state = from.join(STATE);
    snapshot::save(vm, &state, SAVE_WITHIN).await?;
    // The guest is paused: its RAM is as the state left it until it resumes.
    let image = from.join(RAM);
    let copied = match ram {
        Some(ram) => save_ram(ram, &image).await.map(|_| Some(image.as_path())),
        None => Ok(None),
    };
    snapshot::resume(vm).await?;
    let image = copied?;
    mark_agent(&from, agent)?;
    let pinned = PinnedGuest::open(&state, image, agent).map_err(|source| SnapshotError::Io {
        path: state.clone(),
        source,
    })?;
    if std::fs::copy(console_log, from.join(CONSOLE)).is_ok() {
        install(cache, &from, key, run_key);
    }
    Ok(pinned)
}

/// Records in the saved guest's directory that it serves the agent channel.
fn mark_agent(dir: &Path, agent: bool) -> Result<(), SnapshotError> {
    if !agent {
        return Ok(());
    }
    let path = dir.join(AGENT);
    std::fs::write(&path, b"").map_err(|source| SnapshotError::Io { path, source })
}

/// Writes the RAM image of a paused or stopped guest to `to` (a new file), off the runtime;
/// returns the bytes written.
pub async fn save_ram(ram: &GuestRam, to: &Path) -> Result<u64, SnapshotError> {
    ram.save_to(to).await.map_err(|source| SnapshotError::Io {
        path: to.to_path_buf(),
        source,
    })
}

/// Moves `from` (holding a saved guest) into the cache under `key` with the key the guest
/// trusts, then prunes the others past [`CACHE_CAP`]. Whether it is in the cache now.
fn install(cache: &Cache, from: &Path, key: &str, run_key: &RunKey) -> bool {
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(from.join(KEY))
        .and_then(|mut f| std::io::Write::write_all(&mut f, run_key.private_openssh().as_bytes()));
    let Ok(dir) = cache.dir(SNAPSHOTS) else {
        return false;
    };
    let installed = written.is_ok()
        && cache
            .install(from, &dir.join(key), Contents::HashedSparse)
            .is_ok();
    if installed {
        prune(cache, CACHE_CAP, key);
    }
    installed
}

/// Removes the least recently used saved guests until all of them take at most `cap`
/// bytes on disk (RAM images are sparse: what they take, not their length); `keep` (just
/// saved) stays. Returns what was removed.
pub fn prune(cache: &Cache, cap: u64, keep: &str) -> Vec<PathBuf> {
    let Ok(dir) = cache.dir(SNAPSHOTS) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found: Vec<(SystemTime, u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| {
            let path = e.path();
            let used = std::fs::metadata(path.join(MARKER))
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            (used, on_disk(&path), path)
        })
        .collect();
    let mut total: u64 = found.iter().map(|(_, size, _)| size).sum();
    found.sort();
    let mut removed = Vec::new();
    for (_, size, path) in found {
        if total <= cap {
            break;
        }
        if path.file_name().is_some_and(|n| n == keep) {
            continue;
        }
        if cache.discard(&path).is_ok() {
            total = total.saturating_sub(size);
            removed.push(path);
        }
    }
    removed
}

/// What a saved guest's files take on disk (a sparse RAM image counts its pages, not its
/// length).
fn on_disk(entry: &Path) -> u64 {
    std::fs::read_dir(entry)
        .map(|files| {
            files
                .filter_map(Result::ok)
                .filter_map(|f| f.metadata().ok())
                .map(|m| ram::allocated(&m))
                .sum()
        })
        .unwrap_or(0)
}

/// The cache key of a set-up guest: the booted guest it started from (`booted`, see
/// [`booted_key`]) and what its setup ran (`setup`: the prelude, the setup's operations after
/// parameter substitution, the devices; `run::plan::setup_key`).
pub fn set_up_key(booted: &str, setup: &str) -> String {
    let mut h = Sha256::new();
    // v2: device state apart from a sparse RAM image.
    h.update(b"crashrig set-up guest v2\n");
    h.update(booted.as_bytes());
    h.update(b"\n");
    h.update(setup.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// A frozen disk of a set-up entry, by the disk's serial.
fn base_name(serial: &str) -> String {
    format!("disk-{serial}.qcow2")
}

/// The set-up guest: its state and RAM image, the key it trusts, and the frozen disks every
/// restore starts from.
pub struct SetUp {
    /// The device state and the RAM image in the cache entry (or the machine's directory).
    state: PinnedGuest,
    /// The memfd the guest ran on when this machine set it up: written by nothing once its
    /// QEMU stopped, so restores map it copy-on-write rather than the file.
    ram: Option<GuestRam>,
    key: RunKey,
    /// Per disk (in order): its serial and the template of its overlays.
    templates: Vec<(String, OverlayTemplate)>,
    /// The frozen disks, held open (the templates name them through /proc).
    _bases: Vec<Pinned>,
    /// Its cache entry when it came from an earlier run (discarded when it does not load).
    pub from_cache: Option<PathBuf>,
}

impl SetUp {
    /// Saves the set-up guest `booted` (which trusts `run_key`; its RAM, when saveable, is
    /// taken; with its spare helper, see [`Booted::prepare_spare`]), stops it, and freezes
    /// its disks as qcow2 bases that nothing writes again.
    /// State, RAM image and bases go to the cache under `key` (see [`set_up_key`]) for later
    /// runs; when the cache cannot take them they still serve this machine. Overlay templates
    /// go to `dir`.
    pub async fn freeze(
        booted: &mut Booted,
        disks: &[Disk],
        dir: &Path,
        cache: &Cache,
        key: &str,
        run_key: &RunKey,
    ) -> Result<SetUp, SnapshotError> {
        booted.prepare_spare().await;
        let (vm, ram, agent) = (&mut booted.vm, booted.ram.take(), booted.agent);
        let partial = cache.tempdir().ok();
        let work = match &partial {
            Some(p) => p.path().join("entry"),
            None => {
                // A second save on this machine (the first did not load) replaces the first.
                let _ = std::fs::remove_dir_all(dir.join("set-up"));
                dir.join("set-up")
            }
        };
        std::fs::create_dir(&work).map_err(|source| SnapshotError::Io {
            path: work.clone(),
            source,
        })?;
        let state = work.join(STATE);
        snapshot::save(vm, &state, SAVE_WITHIN).await?;
        vm.stop().await;
        let pin = |path: &Path| {
            Pinned::open(path).map_err(|source| SnapshotError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        let mut bases = Vec::new();
        for disk in disks {
            let base = work.join(base_name(&disk.serial));
            snapshot::convert_to_qcow2(&disk.path, disk.format, &base).await?;
            let read_only = std::os::unix::fs::PermissionsExt::from_mode(0o444);
            std::fs::set_permissions(&base, read_only).map_err(|source| SnapshotError::Io {
                path: base.clone(),
                source,
            })?;
            bases.push((disk.serial.clone(), pin(&base)?));
        }
        // The guest is stopped: its RAM is as the state left it. The image goes to the cache
        // for later runs; this run's restores map the memfd.
        let image = work.join(RAM);
        let image = match &ram {
            Some(ram) => {
                save_ram(ram, &image).await?;
                Some(image.as_path())
            }
            None => None,
        };
        mark_agent(&work, agent)?;
        let state =
            PinnedGuest::open(&state, image, agent).map_err(|source| SnapshotError::Io {
                path: state.clone(),
                source,
            })?;
        if partial.is_some() {
            install(cache, &work, key, run_key);
        }
        Self::with_templates(state, ram, run_key.clone(), bases, dir, None).await
    }

    /// The set-up guest an earlier run saved under `key` with disks `serials`, checked
    /// against its completion marker (a damaged entry is removed and `None` returned).
    /// Overlay templates go to `dir`.
    pub async fn cached(
        cache: &Cache,
        key: &str,
        serials: &[String],
        dir: &Path,
    ) -> Result<Option<SetUp>, SnapshotError> {
        let cache_err = |e: CacheError| SnapshotError::Io {
            path: cache.root().to_path_buf(),
            source: std::io::Error::other(crate::report::error_chain(&e)),
        };
        let entry = cache.dir(SNAPSHOTS).map_err(cache_err)?.join(key);
        let bases: Vec<String> = serials.iter().map(|s| base_name(s)).collect();
        let mut required = vec![STATE, KEY];
        required.extend(bases.iter().map(String::as_str));
        let Some((state, run_key)) = open_entry(cache, &entry, &required).map_err(cache_err)?
        else {
            return Ok(None);
        };
        let mut pinned = Vec::new();
        for (serial, base) in serials.iter().zip(&bases) {
            let path = entry.join(base);
            let pin = Pinned::open(&path).map_err(|source| SnapshotError::Io { path, source })?;
            pinned.push((serial.clone(), pin));
        }
        Self::with_templates(state, None, run_key, pinned, dir, Some(entry))
            .await
            .map(Some)
    }

    async fn with_templates(
        state: PinnedGuest,
        ram: Option<GuestRam>,
        key: RunKey,
        bases: Vec<(String, Pinned)>,
        dir: &Path,
        from_cache: Option<PathBuf>,
    ) -> Result<SetUp, SnapshotError> {
        let mut templates = Vec::new();
        let mut pins = Vec::new();
        for (serial, base) in bases {
            let template = dir.join(format!("{serial}.template.qcow2"));
            let template =
                OverlayTemplate::create(base.path(), DiskFormat::Qcow2, &template).await?;
            templates.push((serial, template));
            pins.push(base);
        }
        Ok(SetUp {
            state,
            ram,
            key,
            templates,
            _bases: pins,
            from_cache,
        })
    }

    pub fn saved(&self) -> Saved<'_> {
        let saved = self.state.saved();
        Saved {
            state: saved.state,
            ram: self.ram.as_ref().map(GuestRam::path).or(saved.ram),
            agent: saved.agent,
        }
    }

    /// The key the saved guest trusts.
    pub fn key(&self) -> &RunKey {
        &self.key
    }

    /// Fresh overlays in `dir` (replacing the previous restore's): the disks as frozen.
    pub fn fresh_disks(&self, dir: &Path) -> Result<Vec<Disk>, SnapshotError> {
        self.templates
            .iter()
            .map(|(serial, template)| {
                let path = dir.join(format!("{serial}.qcow2"));
                template.fresh(&path)?;
                Ok(Disk {
                    serial: serial.clone(),
                    path,
                    read_only: false,
                    format: DiskFormat::Qcow2,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::load_str;

    fn scenario(extra: &str, steps: &str) -> Scenario {
        load_str(
            &format!(
                "name: t\ndevices: [{{ name: d, size: 1G }}]\nfilesystem: {{ type: xfs }}\n{extra}steps: {steps}\n"
            ),
            "t.yaml",
        )
        .unwrap()
    }

    /// A cache entry as `save_booted` leaves it, with `bytes` of state and a RAM image of
    /// 1 GiB holding `bytes` of pages.
    fn cached(cache: &Cache, key: &str, bytes: usize) -> RunKey {
        use std::os::unix::fs::FileExt;
        let partial = cache.tempdir().unwrap();
        let from = partial.path().join("entry");
        std::fs::create_dir(&from).unwrap();
        std::fs::write(from.join(STATE), vec![7u8; bytes]).unwrap();
        let image = File::create(from.join(RAM)).unwrap();
        image.set_len(1 << 30).unwrap();
        image.write_all_at(&vec![9u8; bytes], 1 << 20).unwrap();
        std::fs::write(from.join(CONSOLE), b"Linux version 6.1").unwrap();
        let run_key = RunKey::generate().unwrap();
        assert!(install(cache, &from, key, &run_key));
        run_key
    }

    #[test]
    fn a_cached_booted_guest_comes_back_with_its_key_and_a_damaged_one_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path().join("cache"));
        assert!(cached_booted(&cache, "k1").unwrap().is_none());
        let run_key = cached(&cache, "k1", 1000);
        let found = cached_booted(&cache, "k1").unwrap().expect("cached");
        assert_eq!(found.key.public_b64(), run_key.public_b64());
        let saved = found.state.saved();
        assert_eq!(std::fs::read(saved.state).unwrap(), vec![7u8; 1000]);
        let image = std::fs::read(saved.ram.expect("a RAM image")).unwrap();
        assert_eq!(image.len(), 1 << 30);
        assert_eq!(image[1 << 20..(1 << 20) + 1000], [9u8; 1000]);
        let console = tmp.path().join("console-01.log");
        CachedBooted::write_boot_console(&found.entry, &console).unwrap();
        let text = std::fs::read_to_string(&console).unwrap();
        assert!(text.starts_with("crashrig: restored") && text.contains("Linux version 6.1\n"));
        // A host crash truncated the state: not trusted, removed.
        std::fs::write(found.entry.join(STATE), b"").unwrap();
        assert!(cached_booted(&cache, "k1").unwrap().is_none());
        assert!(!found.entry.exists());
        // What was pinned before stays readable for the machine using it.
        assert_eq!(std::fs::read(found.state.saved().state).unwrap().len(), 0);
    }

    /// A set-up entry as `SetUp::freeze` leaves it: state, key and a real qcow2 base.
    async fn cached_set_up(cache: &Cache, key: &str) -> RunKey {
        let partial = cache.tempdir().unwrap();
        let from = partial.path().join("entry");
        std::fs::create_dir(&from).unwrap();
        std::fs::write(from.join(STATE), vec![9u8; 4096]).unwrap();
        let image = File::create(from.join(RAM)).unwrap();
        image.set_len(1 << 30).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&image, &[5u8; 4096], 1 << 20).unwrap();
        snapshot::create_qcow2(&from.join(base_name("scratch")), 1 << 20)
            .await
            .unwrap();
        let run_key = RunKey::generate().unwrap();
        assert!(install(cache, &from, key, &run_key));
        run_key
    }

    #[tokio::test]
    async fn a_cached_set_up_guest_comes_back_with_its_key_and_disks_and_a_damaged_one_is_dropped()
    {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path().join("cache"));
        let dir = tmp.path().join("machine");
        std::fs::create_dir(&dir).unwrap();
        let serials = ["scratch".to_string()];
        assert!(SetUp::cached(&cache, "s1", &serials, &dir)
            .await
            .unwrap()
            .is_none());
        let run_key = cached_set_up(&cache, "s1").await;
        let found = SetUp::cached(&cache, "s1", &serials, &dir)
            .await
            .unwrap()
            .expect("cached");
        assert_eq!(found.key().public_b64(), run_key.public_b64());
        let saved = found.saved();
        assert_eq!(std::fs::read(saved.state).unwrap(), vec![9u8; 4096]);
        let image = std::fs::read(saved.ram.expect("a RAM image")).unwrap();
        assert_eq!(image[1 << 20..(1 << 20) + 4096], [5u8; 4096]);
        let entry = found.from_cache.clone().expect("from the cache");
        let disks = found.fresh_disks(&dir).unwrap();
        assert_eq!(disks.len(), 1);
        assert_eq!(disks[0].format, DiskFormat::Qcow2);
        // The overlay names its base through this process's descriptor, so a prune by
        // another crashrig cannot take it away.
        let overlay = std::fs::read(&disks[0].path).unwrap();
        let pinned = format!("/proc/{}/fd/", std::process::id());
        assert!(
            overlay
                .windows(pinned.len())
                .any(|w| w == pinned.as_bytes()),
            "the overlay's backing file is pinned"
        );
        // Asked for other disks than it holds: not used, and dropped as damaged.
        let other = ["data".to_string()];
        assert!(SetUp::cached(&cache, "s1", &other, &dir)
            .await
            .unwrap()
            .is_none());
        assert!(!entry.exists());
        // A host crash truncated the state: not trusted, removed.
        cached_set_up(&cache, "s2").await;
        let entry2 = entry.with_file_name("s2");
        std::fs::write(entry2.join(STATE), b"").unwrap();
        assert!(SetUp::cached(&cache, "s2", &serials, &dir)
            .await
            .unwrap()
            .is_none());
        assert!(!entry2.exists());
    }

    #[test]
    fn pruning_removes_the_least_recently_used_past_the_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path().join("cache"));
        let old = SystemTime::now() - Duration::from_secs(3600);
        for (key, age) in [("a", 3), ("b", 1), ("c", 2)] {
            cached(&cache, key, 100_000);
            let marker = cache.dir(SNAPSHOTS).unwrap().join(key).join(MARKER);
            File::options()
                .write(true)
                .open(marker)
                .unwrap()
                .set_modified(old - Duration::from_secs(age))
                .unwrap();
        }
        // Room for b and c, as this filesystem stores them: the oldest (a) goes; c would be
        // next but a is enough.
        let size = |key: &str| on_disk(&cache.dir(SNAPSHOTS).unwrap().join(key));
        assert!(size("a") > 0 && size("b") > 0 && size("c") > 0);
        let removed = prune(&cache, size("b") + size("c"), "b");
        let names: Vec<_> = removed
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a"]);
        // Room for none: everything but the one kept goes.
        let removed = prune(&cache, 0, "b");
        assert_eq!(removed.len(), 1);
        assert!(cached_booted(&cache, "b").unwrap().is_some());
        assert!(cached_booted(&cache, "c").unwrap().is_none());
    }

    #[test]
    fn never_keeps_todays_behaviour() {
        let s = scenario("", "[mount, power-cut, mount]");
        assert!(!RestoreMode::Never.restores_boots());
        assert!(!RestoreMode::Never.restores_iterations(&s));
    }

    #[test]
    fn auto_restores_iterations_only_where_a_new_guest_is_needed_anyway() {
        let crash = scenario("", "[mount, power-cut, mount]");
        let plain = scenario("", "[mount, umount]");
        assert!(RestoreMode::Auto.restores_boots());
        assert!(RestoreMode::Auto.restores_iterations(&crash));
        assert!(
            !RestoreMode::Auto.restores_iterations(&plain),
            "reusing the guest is faster when nothing ends it"
        );
        assert!(RestoreMode::Always.restores_iterations(&plain));
    }

    #[test]
    fn iterations_that_share_state_never_restore_the_set_up_guest() {
        let s = scenario(
            "iterations-share-state: true\n",
            "[mount, power-cut, mount]",
        );
        assert!(!RestoreMode::Always.restores_iterations(&s));
        assert!(!RestoreMode::Auto.restores_iterations(&s));
        assert!(
            RestoreMode::Always.restores_boots(),
            "a power cut still restores the booted guest on the disks as they are"
        );
    }
}
