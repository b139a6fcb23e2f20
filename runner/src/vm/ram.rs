//! Guest RAM that is saved and restored without streaming it.
//!
//! A guest that may be saved runs on RAM crashrig holds: a memfd ([`GuestRam`]) that QEMU
//! maps shared (`memory-backend-file,share=on` over `/proc/<crashrig>/fd/<n>`). Saving then
//! streams only device state (the migration capability `x-ignore-shared` leaves shared RAM
//! out), and the memfd, no longer written once QEMU has stopped, *is* the RAM image. A restore
//! maps a RAM image privately (`share=off`, MAP_PRIVATE): pages are read on first touch and
//! copied on first write, so the image is never written and any number of QEMUs can restore
//! it at once. Nothing is read up front: loading a guest takes as long as its device state.
//!
//! Like scratch disks, the memfd has no name in any filesystem: it is freed as soon as
//! crashrig and its QEMU are gone, however they end.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde_json::json;

/// The page size images are compared and kept sparse by.
pub const PAGE: usize = 4096;

/// Where a VM's RAM lives (its `-object memory-backend-*`, always with the id `ram`, so that
/// every kind of VM has the same RAM block and states move between them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RamBackend {
    /// Anonymous memory: the VM is never saved (`--restore never`), or its RAM is saved in
    /// the state stream.
    Anonymous,
    /// A file QEMU maps shared ([`GuestRam`]): saving leaves it out of the state stream.
    Shared(PathBuf),
    /// A saved RAM image mapped copy-on-write: the image is never written.
    Private(PathBuf),
}

impl RamBackend {
    /// The `-object` argument (JSON: no comma escaping of paths) for `size_mib` of RAM.
    pub fn object(&self, size_mib: u64) -> String {
        let size = size_mib << 20;
        match self {
            RamBackend::Anonymous => {
                json!({ "qom-type": "memory-backend-ram", "id": "ram", "size": size })
            }
            RamBackend::Shared(path) | RamBackend::Private(path) => json!({
                "qom-type": "memory-backend-file",
                "id": "ram",
                "size": size,
                "mem-path": path,
                "share": matches!(self, RamBackend::Shared(_)),
            }),
        }
        .to_string()
    }

    /// Whether saving leaves the RAM out of the state stream (it is in the shared file).
    pub fn is_shared(&self) -> bool {
        matches!(self, RamBackend::Shared(_))
    }
}

/// A guest's RAM in a memfd that QEMU maps shared. Once the QEMU using it has stopped, it is a
/// RAM image that restores map privately.
#[derive(Debug)]
pub struct GuestRam {
    file: File,
    path: PathBuf,
}

impl GuestRam {
    /// Empty RAM of `size` bytes (a hole: it takes no memory until the guest writes it).
    pub fn new(size: u64) -> io::Result<GuestRam> {
        // SAFETY: a valid NUL-terminated name and flags; the result is checked.
        let fd = unsafe { libc::memfd_create(c"crashrig-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: memfd_create returned a descriptor nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(size)?;
        let path = PathBuf::from(format!("/proc/{}/fd/{fd}", std::process::id()));
        Ok(GuestRam { file, path })
    }

    /// RAM holding a copy of the image `from` (which may be larger than the pages it holds).
    /// The copy runs on a blocking thread: it reads and writes up to the guest's memory size
    /// and must not hold up the async runtime (the other machines of a matrix).
    pub async fn copy_of(from: &Path) -> io::Result<GuestRam> {
        let from = from.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let source = File::open(&from)?;
            let ram = GuestRam::new(source.metadata()?.len())?;
            copy_sparse(&source, &ram.file)?;
            Ok(ram)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// The path QEMU opens it by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the RAM to a new file `to` as a sparse image: pages never written or all zero
    /// are holes. The QEMU using it must be paused or stopped. Returns the bytes written. On a
    /// blocking thread, as [`GuestRam::copy_of`].
    pub async fn save_to(&self, to: &Path) -> io::Result<u64> {
        let ram = self.file.try_clone()?;
        let to = to.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&to)?;
            out.set_len(ram.metadata()?.len())?;
            let written = copy_sparse(&ram, &out)?;
            out.sync_all()?;
            Ok(written)
        })
        .await
        .map_err(io::Error::other)?
    }
}

/// The ranges of `file` that hold data (SEEK_DATA/SEEK_HOLE); holes read as zeros.
pub fn data_ranges(file: &File) -> io::Result<Vec<(u64, u64)>> {
    let len = file.metadata()?.len();
    let fd = file.as_raw_fd();
    let mut ranges = Vec::new();
    let mut at: u64 = 0;
    while at < len {
        // SAFETY: lseek on a descriptor we own; errors are checked.
        let start = unsafe { libc::lseek(fd, at as libc::off_t, libc::SEEK_DATA) };
        if start < 0 {
            let e = io::Error::last_os_error();
            // ENXIO: no data past `at`.
            if e.raw_os_error() == Some(libc::ENXIO) {
                break;
            }
            return Err(e);
        }
        // SAFETY: as above.
        let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
        if end < 0 {
            return Err(io::Error::last_os_error());
        }
        ranges.push((start as u64, end as u64));
        at = end as u64;
    }
    Ok(ranges)
}

/// Copies the non-zero pages of `from` to the same offsets of `to` (already as long, and
/// empty). Returns the bytes written.
fn copy_sparse(from: &File, to: &File) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut written = 0;
    for_each_page(from, &mut buf, |offset, page| {
        to.write_all_at(page, offset)?;
        written += page.len() as u64;
        Ok(())
    })?;
    Ok(written)
}

/// Calls `f` with the offset and contents of every page of `file` that is not all zero, in
/// order, reading only the ranges that hold data. Consecutive non-zero pages come as one run.
pub fn for_each_page(
    file: &File,
    buf: &mut [u8],
    mut f: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    for (start, end) in data_ranges(file)? {
        let mut at = start;
        while at < end {
            let want = buf.len().min((end - at) as usize);
            let n = file.read_at(&mut buf[..want], at)?;
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            let mut run: Option<usize> = None;
            for (i, page) in chunk.chunks(PAGE).enumerate() {
                let zero = page.iter().all(|&b| b == 0);
                match (zero, run) {
                    (false, None) => run = Some(i * PAGE),
                    (true, Some(from)) => {
                        f(at + from as u64, &chunk[from..i * PAGE])?;
                        run = None;
                    }
                    _ => {}
                }
            }
            if let Some(from) = run {
                f(at + from as u64, &chunk[from..])?;
            }
            at += n as u64;
        }
    }
    Ok(())
}

/// The bytes a file takes on disk (sparse files take less than their length).
pub fn allocated(meta: &std::fs::Metadata) -> u64 {
    meta.blocks() * 512
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_name_one_ram_block_and_share_only_live_ram() {
        let v = |b: &RamBackend| -> serde_json::Value {
            serde_json::from_str(&b.object(2048)).unwrap()
        };
        let anon = v(&RamBackend::Anonymous);
        assert_eq!(anon["qom-type"], "memory-backend-ram");
        assert_eq!(anon["size"], 2048u64 << 20);
        let shared = v(&RamBackend::Shared("/proc/1/fd/7".into()));
        assert_eq!(shared["qom-type"], "memory-backend-file");
        assert_eq!(shared["share"], true);
        assert_eq!(shared["mem-path"], "/proc/1/fd/7");
        let private = v(&RamBackend::Private("/c/a,b/guest.ram".into()));
        assert_eq!(
            private["share"], false,
            "a saved image is mapped copy-on-write"
        );
        assert_eq!(
            private["mem-path"], "/c/a,b/guest.ram",
            "commas need no escaping"
        );
        for b in [anon, shared, private] {
            assert_eq!(b["id"], "ram");
        }
        assert!(RamBackend::Shared("x".into()).is_shared());
        assert!(!RamBackend::Private("x".into()).is_shared());
    }

    #[tokio::test]
    async fn a_saved_image_keeps_the_pages_and_only_takes_room_for_non_zero_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let ram = GuestRam::new(64 << 20).unwrap();
        let live = File::options()
            .read(true)
            .write(true)
            .open(ram.path())
            .unwrap();
        live.write_all_at(&[1u8; PAGE], 0).unwrap();
        // A page the guest wrote zeros to: no room in the image.
        live.write_all_at(&[0u8; PAGE], 5 * PAGE as u64).unwrap();
        live.write_all_at(b"end", (64 << 20) - 3).unwrap();
        let image = tmp.path().join("guest.ram");
        assert_eq!(ram.save_to(&image).await.unwrap(), 2 * PAGE as u64);
        let meta = std::fs::metadata(&image).unwrap();
        assert_eq!(meta.len(), 64 << 20);
        assert!(
            allocated(&meta) <= 64 * 1024,
            "sparse: {}",
            allocated(&meta)
        );
        let back = GuestRam::copy_of(&image).await.unwrap();
        let f = File::open(back.path()).unwrap();
        let mut page = vec![0u8; PAGE];
        f.read_exact_at(&mut page, 0).unwrap();
        assert_eq!(page, vec![1u8; PAGE]);
        let mut tail = [0u8; 3];
        f.read_exact_at(&mut tail, (64 << 20) - 3).unwrap();
        assert_eq!(&tail, b"end");
        f.read_exact_at(&mut page, PAGE as u64).unwrap();
        assert_eq!(page, vec![0u8; PAGE]);
        // An existing file is never overwritten.
        assert!(ram.save_to(&image).await.is_err());
    }

    #[tokio::test]
    async fn the_off_thread_copies_give_the_same_image() {
        let tmp = tempfile::tempdir().unwrap();
        let ram = GuestRam::new(8 << 20).unwrap();
        File::options()
            .write(true)
            .open(ram.path())
            .unwrap()
            .write_all_at(&[7u8; PAGE], 3 * PAGE as u64)
            .unwrap();
        let image = tmp.path().join("guest.ram");
        assert_eq!(ram.save_to(&image).await.unwrap(), PAGE as u64);
        assert!(ram.save_to(&image).await.is_err(), "never overwritten");
        let back = GuestRam::copy_of(&image).await.unwrap();
        let mut page = vec![0u8; PAGE];
        File::open(back.path())
            .unwrap()
            .read_exact_at(&mut page, 3 * PAGE as u64)
            .unwrap();
        assert_eq!(page, vec![7u8; PAGE]);
        assert!(GuestRam::copy_of(&tmp.path().join("missing"))
            .await
            .is_err());
    }
}
