//! The one error type of the bisection module.

use std::path::PathBuf;

/// Everything that can go wrong in the bisection core and its journal.
///
/// Messages are lowercase fragments that read well after "failed to".
#[derive(Debug, thiserror::Error)]
pub enum BisectError {
    /// A bisection needs at least one candidate after the known-good end.
    #[error("bisect an empty range: the last candidate must be at least 1")]
    EmptyRange,
    /// A configuration value is out of its domain.
    #[error("accept bisection setting `{name}` = {value}: {expected}")]
    BadConfig {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    /// A candidate index outside `0..=last`.
    #[error("record candidate {candidate}: the range ends at {last}")]
    CandidateOutOfRange { candidate: usize, last: usize },
    /// A batch reported more failures than iterations.
    #[error("record candidate {candidate}: {failures} failures in {iterations} iterations")]
    FailuresExceedIterations {
        candidate: usize,
        iterations: u32,
        failures: u32,
    },
    /// `record_alias` with a candidate and itself, or two candidates spanning both ends.
    #[error("alias candidate {candidate} to {same_as}: {why}")]
    BadAlias {
        candidate: usize,
        same_as: usize,
        why: &'static str,
    },
    /// An outcome recorded after the bisection reported its result.
    #[error("record candidate {candidate}: the bisection is already done")]
    AlreadyDone { candidate: usize },
    /// Reading, writing or syncing the journal file.
    #[error("access journal {path}")]
    JournalIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A journal line other than the last one does not parse.
    #[error("parse journal {path} line {line}")]
    JournalParse {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    /// The journal has no header line.
    #[error("resume from journal {path}: it has no header line")]
    JournalNoHeader { path: PathBuf },
    /// The journal was written by another bisection.
    #[error(
        "resume from journal {path}: it belongs to another bisection ({field} is {found}, expected {expected})"
    )]
    JournalMismatch {
        path: PathBuf,
        field: &'static str,
        expected: String,
        found: String,
    },
    /// Serializing a journal line.
    #[error("encode a journal line")]
    JournalEncode(#[source] serde_json::Error),
}
