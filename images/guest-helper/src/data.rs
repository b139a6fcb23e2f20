//! Files of known content: written (and fsync'd) before a crash, verified after it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, and every seed gives a distinct stream.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fill `buf` with the next bytes of the stream (little-endian words).
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let w = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
    }
}

pub fn file_name(index: u32) -> String {
    format!("f{index:04}")
}

/// The stream of file `index`: the seed is mixed with the index so files differ.
fn stream(seed: u64, index: u32) -> SplitMix64 {
    SplitMix64::new(seed ^ (index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d))
}

/// Chunk size for writing and checking; a multiple of 8 so chunks continue the word stream.
const CHUNK: usize = 1 << 20;

fn write_one(path: &Path, size: u64, seed: u64, index: u32, fsync: bool) -> io::Result<()> {
    let mut f = File::create(path)?;
    let mut rng = stream(seed, index);
    let mut buf = vec![0u8; CHUNK.min(size as usize).max(8)];
    let mut left = size;
    while left > 0 {
        let n = (buf.len() as u64).min(left) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    if fsync {
        f.sync_all()?;
    }
    Ok(())
}

pub struct WriteOutcome {
    /// Files whose every write returned.
    pub written: u32,
    /// Files the kernel vouched for: with fsync, files 0..n whose own fsync and the
    /// directory's returned 0; without, the files written (a umount keeps them, a crash need
    /// not). What a later verify-data may hold the kernel to.
    pub acknowledged: u32,
    /// The first failure: file and error. Later files are not attempted.
    pub failure: Option<(String, io::Error)>,
}

pub fn write_files(dir: &Path, files: u32, size: u64, seed: u64, fsync: bool) -> WriteOutcome {
    if let Err(e) = std::fs::create_dir_all(dir) {
        return WriteOutcome {
            written: 0,
            acknowledged: 0,
            failure: Some((dir.display().to_string(), e)),
        };
    }
    // The new directory entries are only durable once the directory itself is synced.
    let sync_dir = || File::open(dir).and_then(|d| d.sync_all());
    for i in 0..files {
        let path = dir.join(file_name(i));
        if let Err(e) = write_one(&path, size, seed, i, fsync) {
            // The files before this one were fsync'd: they are acknowledged once their
            // directory entries are too.
            let acknowledged = if !fsync || (i > 0 && sync_dir().is_ok()) {
                i
            } else {
                0
            };
            return WriteOutcome {
                written: i,
                acknowledged,
                failure: Some((path.display().to_string(), e)),
            };
        }
    }
    if fsync {
        if let Err(e) = sync_dir() {
            return WriteOutcome {
                written: files,
                acknowledged: 0,
                failure: Some((dir.display().to_string(), e)),
            };
        }
    }
    WriteOutcome {
        written: files,
        acknowledged: files,
        failure: None,
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum FileState {
    Intact,
    Missing,
    /// Wrong length or content, or unreadable; the text says which.
    Corrupted(String),
}

fn check_one(path: &Path, size: u64, seed: u64, index: u32) -> FileState {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return FileState::Missing,
        Err(e) => return FileState::Corrupted(format!("open: {}", crate::util::io_error_name(&e))),
    };
    let mut rng = stream(seed, index);
    let mut want = vec![0u8; CHUNK];
    let mut got = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let n = match read_full(&mut f, &mut got) {
            Ok(n) => n,
            Err(e) => {
                return FileState::Corrupted(format!(
                    "read at {offset}: {}",
                    crate::util::io_error_name(&e)
                ))
            }
        };
        let expect = (size - offset.min(size)).min(CHUNK as u64) as usize;
        rng.fill(&mut want[..expect]);
        let cmp = n.min(expect);
        if let Some(pos) = (0..cmp).find(|&i| got[i] != want[i]) {
            return FileState::Corrupted(format!(
                "content differs at byte {}",
                offset + pos as u64
            ));
        }
        if n != expect {
            return FileState::Corrupted(if n < expect {
                format!("short: {} of {size} bytes", offset + n as u64)
            } else {
                format!("longer than {size} bytes")
            });
        }
        offset += n as u64;
        if n < CHUNK {
            return FileState::Intact;
        }
    }
}

/// Read until `buf` is full or end of file.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

pub fn verify_files(dir: &Path, files: u32, size: u64, seed: u64) -> Vec<(PathBuf, FileState)> {
    (0..files)
        .map(|i| {
            let path = dir.join(file_name(i));
            let state = check_one(&path, size, seed, i);
            (path, state)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_and_is_deterministic() {
        // First outputs of the reference implementation for seed 0.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        let (mut a, mut b) = (vec![0u8; 37], vec![0u8; 37]);
        stream(7, 3).fill(&mut a);
        stream(7, 3).fill(&mut b);
        assert_eq!(a, b);
        stream(7, 4).fill(&mut b);
        assert_ne!(a, b, "files of one seed must differ");
    }

    #[test]
    fn round_trip_then_truncation_and_loss_are_caught() {
        let dir = std::env::temp_dir().join(format!("crashrig-data-{}", std::process::id()));
        // Sizes that are not a multiple of the word or the chunk.
        let size = CHUNK as u64 + 13;
        let out = write_files(&dir, 3, size, 42, true);
        assert!(out.failure.is_none());
        assert_eq!((out.written, out.acknowledged), (3, 3));
        let states: Vec<_> = verify_files(&dir, 3, size, 42)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        assert_eq!(
            states,
            vec![FileState::Intact, FileState::Intact, FileState::Intact]
        );

        let f1 = dir.join("f0001");
        File::options()
            .write(true)
            .open(&f1)
            .unwrap()
            .set_len(100)
            .unwrap();
        std::fs::remove_file(dir.join("f0002")).unwrap();
        let states: Vec<_> = verify_files(&dir, 3, size, 42)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        assert_eq!(states[0], FileState::Intact);
        assert_eq!(
            states[1],
            FileState::Corrupted(format!("short: 100 of {size} bytes"))
        );
        assert_eq!(states[2], FileState::Missing);
        // Another seed: every byte stream differs.
        assert!(matches!(
            verify_files(&dir, 1, size, 43)[0].1,
            FileState::Corrupted(_)
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
