//! `--kernel SPEC` parsing and the resolved kernel every runner consumes.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the user asked for with `--kernel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum KernelSpec {
    /// `debian:6.1`, `debian:6.12`: the newest `linux-image-*-cloud-amd64` of that series.
    Debian { series: String },
    /// `debian-source:6.1`: the `linux-source-X` package as a cached git repository, built.
    DebianSource { series: String },
    /// `PATH` or `PATH@REF`: a local git tree at a commit-ish, built in a worktree of ours.
    Git { path: PathBuf, rev: Option<String> },
    /// A bzImage/vmlinuz file, optionally `,modules=DIR` (a `lib/modules/<release>` tree).
    Image {
        path: PathBuf,
        modules: Option<PathBuf>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("unknown Debian kernel series `{0}` (known: 6.1, 6.12)")]
    UnknownSeries(String),
    #[error("`{0}` is neither a known spec (debian:6.1, debian:6.12, debian-source:6.1, debian-source:6.12), a kernel image file nor a git tree")]
    NotFound(String),
    #[error("empty kernel spec")]
    Empty,
}

pub const DEBIAN_SERIES: &[&str] = &["6.1", "6.12"];

impl KernelSpec {
    /// Parses a spec; `exists` tells files from directories (a seam for tests).
    pub fn parse_with(s: &str, kind_of: impl Fn(&Path) -> PathKind) -> Result<Self, SpecError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(SpecError::Empty);
        }
        if let Some(series) = s.strip_prefix("debian:") {
            check_series(series)?;
            return Ok(KernelSpec::Debian {
                series: series.into(),
            });
        }
        if let Some(series) = s.strip_prefix("debian-source:") {
            check_series(series)?;
            return Ok(KernelSpec::DebianSource {
                series: series.into(),
            });
        }
        let (path_part, modules) = match s.split_once(",modules=") {
            Some((p, m)) => (p, Some(PathBuf::from(m))),
            None => (s, None),
        };
        match kind_of(Path::new(path_part)) {
            PathKind::File => {
                return Ok(KernelSpec::Image {
                    path: path_part.into(),
                    modules,
                })
            }
            PathKind::Dir => {
                return Ok(KernelSpec::Git {
                    path: path_part.into(),
                    rev: None,
                })
            }
            PathKind::Missing => {}
        }
        // PATH@REF: split at the last '@' whose left side is a directory.
        if let Some((path, rev)) = s.rsplit_once('@') {
            if !rev.is_empty() && kind_of(Path::new(path)) == PathKind::Dir {
                return Ok(KernelSpec::Git {
                    path: path.into(),
                    rev: Some(rev.into()),
                });
            }
        }
        Err(SpecError::NotFound(s.into()))
    }

    pub fn parse(s: &str) -> Result<Self, SpecError> {
        Self::parse_with(s, PathKind::of)
    }

    /// Specs that need a kernel build (and so accept `--kconfig` / `--patches`).
    pub fn is_built(&self) -> bool {
        matches!(
            self,
            KernelSpec::DebianSource { .. } | KernelSpec::Git { .. }
        )
    }
}

fn check_series(series: &str) -> Result<(), SpecError> {
    if DEBIAN_SERIES.contains(&series) {
        Ok(())
    } else {
        Err(SpecError::UnknownSeries(series.into()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    File,
    Dir,
    Missing,
}

impl PathKind {
    /// What `path` is on this machine (following symlinks).
    pub fn of(path: &Path) -> PathKind {
        if path.is_file() {
            PathKind::File
        } else if path.is_dir() {
            PathKind::Dir
        } else {
            PathKind::Missing
        }
    }
}

impl fmt::Display for KernelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelSpec::Debian { series } => write!(f, "debian:{series}"),
            KernelSpec::DebianSource { series } => write!(f, "debian-source:{series}"),
            KernelSpec::Git { path, rev: None } => write!(f, "{}", path.display()),
            KernelSpec::Git { path, rev: Some(r) } => write!(f, "{}@{r}", path.display()),
            KernelSpec::Image {
                path,
                modules: None,
            } => write!(f, "{}", path.display()),
            KernelSpec::Image {
                path,
                modules: Some(m),
            } => {
                write!(f, "{},modules={}", path.display(), m.display())
            }
        }
    }
}

/// A kernel ready to boot: what `run`, `bisect` and `matrix` consume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedKernel {
    /// The spec as the user wrote it (plus kconfig/patches for built kernels).
    pub spec: String,
    /// `uname -r` of the kernel, when known (Debian packages, built trees).
    pub release: Option<String>,
    /// Exact version: the Debian package version, or the commit a build used.
    pub version: String,
    /// bzImage / vmlinuz.
    pub image: PathBuf,
    /// `lib/modules/<release>` directory with modules.dep, when the kernel has modules.
    pub modules_dir: Option<PathBuf>,
    /// For symbolizing traces: System.map (Debian packages) or vmlinux (builds).
    pub system_map: Option<PathBuf>,
    pub vmlinux: Option<PathBuf>,
    /// Build cache key for built kernels.
    pub build_key: Option<String>,
    /// sha256 of the kernel image: identical images give identical verdicts (bisect reuses).
    pub image_sha256: String,
    /// `--kconfig` fragments a built kernel was built with (besides `base` and the scenario's).
    #[serde(default)]
    pub kconfig: Vec<String>,
    /// `--patches` a built kernel was built with.
    #[serde(default)]
    pub patches: Vec<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(p: &Path) -> PathKind {
        match p.to_str().unwrap() {
            "/boot/vmlinuz" => PathKind::File,
            "/src/linux" | "/src/li@nux" => PathKind::Dir,
            _ => PathKind::Missing,
        }
    }

    #[test]
    fn parses_every_form() {
        let p = |s| KernelSpec::parse_with(s, kinds);
        assert_eq!(
            p("debian:6.1"),
            Ok(KernelSpec::Debian {
                series: "6.1".into()
            })
        );
        assert_eq!(
            p("debian-source:6.12"),
            Ok(KernelSpec::DebianSource {
                series: "6.12".into()
            })
        );
        assert_eq!(
            p("debian:5.10"),
            Err(SpecError::UnknownSeries("5.10".into()))
        );
        assert_eq!(
            p("/boot/vmlinuz"),
            Ok(KernelSpec::Image {
                path: "/boot/vmlinuz".into(),
                modules: None
            })
        );
        assert_eq!(
            p("/boot/vmlinuz,modules=/lib/modules/6.1.0-9"),
            Ok(KernelSpec::Image {
                path: "/boot/vmlinuz".into(),
                modules: Some("/lib/modules/6.1.0-9".into())
            })
        );
        assert_eq!(
            p("/src/linux"),
            Ok(KernelSpec::Git {
                path: "/src/linux".into(),
                rev: None
            })
        );
        assert_eq!(
            p("/src/linux@v6.1~3"),
            Ok(KernelSpec::Git {
                path: "/src/linux".into(),
                rev: Some("v6.1~3".into())
            })
        );
        assert_eq!(
            p("/src/li@nux"),
            Ok(KernelSpec::Git {
                path: "/src/li@nux".into(),
                rev: None
            })
        );
        assert_eq!(p("/nope"), Err(SpecError::NotFound("/nope".into())));
        assert_eq!(p(" "), Err(SpecError::Empty));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "debian:6.1",
            "debian-source:6.1",
            "/src/linux@abc",
            "/boot/vmlinuz,modules=/m",
        ] {
            assert_eq!(
                KernelSpec::parse_with(s, kinds)
                    .map(|k| k.to_string())
                    .unwrap_or_else(|_| s.into()),
                s
            );
        }
    }
}
