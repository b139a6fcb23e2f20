//! Writes a directory tree as a `newc` cpio archive (the initramfs format), deterministically:
//! sorted entries, owner root, mtime 0, so equal inputs give byte-identical archives.

use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use cpio::newc::{trailer, Builder, ModeFileType};

/// Archives everything below `root` (paths in the archive are relative to it).
pub fn archive_dir<W: Write>(root: &Path, out: W) -> io::Result<W> {
    let mut entries = Vec::new();
    collect(root, root, &mut entries)?;
    entries.sort();
    let mut out = out;
    for (ino, rel) in entries.iter().enumerate() {
        let path = root.join(rel);
        let meta = std::fs::symlink_metadata(&path)?;
        let builder = Builder::new(rel)
            .ino(ino as u32 + 1)
            .uid(0)
            .gid(0)
            .mtime(0)
            .nlink(if meta.is_dir() { 2 } else { 1 });
        let perm = meta.permissions().mode() & 0o7777;
        out = if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)?;
            let data = target.as_os_str().as_encoded_bytes();
            let mut w = builder
                .mode(perm)
                .set_mode_file_type(ModeFileType::Symlink)
                .write(out, data.len() as u32);
            w.write_all(data)?;
            w.finish()?
        } else if meta.is_dir() {
            builder
                .mode(perm)
                .set_mode_file_type(ModeFileType::Directory)
                .write(out, 0)
                .finish()?
        } else {
            let size = u32::try_from(meta.size()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is over 4 GiB", path.display()),
                )
            })?;
            let mut w = builder
                .mode(perm)
                .set_mode_file_type(ModeFileType::Regular)
                .write(out, size);
            io::copy(&mut std::fs::File::open(&path)?, &mut w)?;
            w.finish()?
        };
    }
    trailer(out)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .expect("below root")
            .to_string_lossy()
            .into_owned();
        out.push(rel);
        if entry.file_type()?.is_dir() {
            collect(root, &path, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_files_dirs_and_links_readably_and_deterministically() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("/bin/busybox", dir.path().join("init")).unwrap();
        let a = archive_dir(dir.path(), Vec::new()).unwrap();
        let b = archive_dir(dir.path(), Vec::new()).unwrap();
        assert_eq!(a, b);

        let mut names = Vec::new();
        let mut rest: &[u8] = &a;
        loop {
            let mut reader = cpio::NewcReader::new(rest).unwrap();
            if reader.entry().is_trailer() {
                break;
            }
            let name = reader.entry().name().to_string();
            let mode = reader.entry().mode();
            let mut content = String::new();
            io::Read::read_to_string(&mut reader, &mut content).unwrap();
            names.push((name, mode & 0o170000, content));
            rest = reader.finish().unwrap();
        }
        assert_eq!(
            names,
            vec![
                ("etc".to_string(), 0o040000, String::new()),
                (
                    "etc/passwd".to_string(),
                    0o100000,
                    "root:x:0:0::/root:/bin/sh\n".to_string()
                ),
                ("init".to_string(), 0o120000, "/bin/busybox".to_string()),
            ]
        );
    }
}
