//! crashrig's cache directory: downloaded kernels, guest images, source trees, builds.
//!
//! Everything in it can be rebuilt; entries are written under a temporary name and renamed
//! into place, so an interrupted download or build never leaves a half entry that a later run
//! would trust.

use std::io;
use std::path::{Path, PathBuf};

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
}

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// `$CRASHRIG_CACHE`, else `$XDG_CACHE_HOME/crashrig`, else `~/.cache/crashrig`.
    pub fn from_env() -> Cache {
        let root = std::env::var_os("CRASHRIG_CACHE")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("crashrig"))
            })
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/crashrig")))
            .unwrap_or_else(|| PathBuf::from("/var/tmp/crashrig-cache"));
        Cache { root }
    }

    pub fn at(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A subdirectory, created on demand: `kernels`, `images`, `sources`, `builds`, `tmp`.
    pub fn dir(&self, name: &str) -> Result<PathBuf, CacheError> {
        let path = self.root.join(name);
        std::fs::create_dir_all(&path).map_err(|source| CacheError::Create {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// A fresh temporary directory inside the cache (same filesystem, so `install` is a
    /// rename).
    pub fn tempdir(&self) -> Result<tempfile::TempDir, CacheError> {
        let tmp = self.dir("tmp")?;
        tempfile::Builder::new()
            .prefix("partial-")
            .tempdir_in(&tmp)
            .map_err(|source| CacheError::Create { path: tmp, source })
    }

    /// Moves a finished temporary entry to `dest`. When another process installed the same
    /// entry first, theirs is kept (entries are content-addressed, so both are equal).
    pub fn install(&self, from: &Path, dest: &Path) -> Result<(), CacheError> {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|source| CacheError::Create {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        match std::fs::rename(from, dest) {
            Ok(()) => Ok(()),
            Err(_) if dest.exists() => Ok(()),
            Err(source) => Err(CacheError::Install {
                path: dest.to_path_buf(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_is_atomic_and_keeps_the_first_entry() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::at(root.path());
        let dest = cache.dir("images").unwrap().join("abc");
        for content in ["first", "second"] {
            let tmp = cache.tempdir().unwrap();
            std::fs::write(tmp.path().join("f"), content).unwrap();
            cache.install(&tmp.keep(), &dest).unwrap();
        }
        assert_eq!(std::fs::read_to_string(dest.join("f")).unwrap(), "first");
    }
}
