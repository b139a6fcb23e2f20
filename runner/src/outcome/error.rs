use std::path::PathBuf;

/// Errors of the outcome module. Messages read well after "failed to".
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read symbol map {}", path.display())]
    ReadSymbolMap {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Debian's kernel packages ship a one-line placeholder System.map; the real one is in the
    /// `-dbg` package, and a running guest's /proc/kallsyms (read as root) is always real.
    #[error(
        "find any text symbols in {} (a placeholder System.map? use the kernel's -dbg package or the guest's /proc/kallsyms)",
        path.display()
    )]
    NoTextSymbols { path: PathBuf },
    #[error("compile dmesg ignore pattern `{pattern}`")]
    IgnorePattern {
        pattern: String,
        #[source]
        source: regex::Error,
    },
    #[error(
        "recognize finding kind `{0}` (expected one of: warning, bug, oops, panic, kasan, lockdep, hung-task, rcu-stall, soft-lockup, fs-corruption, fs-error)"
    )]
    UnknownKind(String),
}
