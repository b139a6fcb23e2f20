//! Reading and writing results files: `results.json`, baselines, `bisect.json`, `junit.xml`,
//! `summary.md`. Every write goes through [`write_atomic`]: readers (a resumed run, `report
//! merge`, a CI job reading a killed run's directory) see the old file or the new one, never
//! a half-written one.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::results::Results;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// Results that cannot be read or written are a configuration or infrastructure error.
    pub fn exit_code(&self) -> i32 {
        crate::exit::CONFIG_OR_INFRA
    }
}

/// Replaces `path` with `bytes` in one step, durably: see [`super::durable::write_atomic`]
/// (a unique temporary, fsync, rename, fsync of the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    super::durable::write_atomic(path, bytes).map_err(|source| StoreError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Pretty JSON with a final newline, as every JSON file crashrig writes.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), StoreError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| StoreError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    write_atomic(path, (text + "\n").as_bytes())
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, StoreError> {
    let text = std::fs::read_to_string(path).map_err(|source| StoreError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| StoreError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a `results.json`.
pub fn read_results(path: &Path) -> Result<Results, StoreError> {
    read_json(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_the_file_and_leave_no_temporary() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("results.json");
        write_json(&path, &vec![1, 2]).unwrap();
        write_json(&path, &vec![3]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[\n  3\n]\n");
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["results.json"]);
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), [3]);
    }

    #[test]
    fn errors_name_the_file_and_the_stage() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("missing.json");
        let err = read_json::<Vec<u32>>(&missing).unwrap_err();
        assert_eq!(err.to_string(), format!("read {}", missing.display()));
        let bad = tmp.path().join("bad.json");
        std::fs::write(&bad, "{").unwrap();
        let err = read_json::<Vec<u32>>(&bad).unwrap_err();
        assert_eq!(err.to_string(), format!("parse {}", bad.display()));
        let err = write_atomic(&tmp.path().join("no/such/dir/x"), b"x").unwrap_err();
        assert!(matches!(err, StoreError::Write { .. }), "{err}");
    }
}
