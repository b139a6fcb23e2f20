//! The bisection journal: append-only JSON lines, one header line then one line per recorded
//! step, each synced to disk before the step counts, so Ctrl-C or a kill loses nothing that
//! finished and `--resume` rebuilds the [`Bisector`] by replaying the steps.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::error::BisectError;
use super::model::{BatchOutcome, Config};
use super::search::Bisector;

/// The value of [`Header::format`].
pub const JOURNAL_FORMAT: &str = "crashrig-bisect-journal/2";

/// First line: what bisection this journal belongs to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Header {
    /// Always [`JOURNAL_FORMAT`].
    pub format: String,
    /// Scenario name.
    pub scenario: String,
    /// The range in the caller's words (for example `linux@v6.1..linux@v6.2` or
    /// `debian-source:6.1 + series.mbox`).
    pub range: String,
    /// The last candidate index.
    pub last: usize,
    pub config: Config,
}

impl Header {
    pub fn new(scenario: &str, range: &str, last: usize, config: Config) -> Self {
        Header {
            format: JOURNAL_FORMAT.to_string(),
            scenario: scenario.to_string(),
            range: range.to_string(),
            last,
            config,
        }
    }
}

/// What one step recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    Ran {
        iterations: u32,
        failures: u32,
    },
    Unknown {
        reason: String,
    },
    /// The candidate's kernel is byte-identical to `same_as`'s.
    Alias {
        same_as: usize,
    },
    /// The candidate's kernel image was built and had this sha-256 (recorded once, before the
    /// candidate's first run), so a resume still knows which kernels are byte-identical.
    Built {
        image_sha256: String,
    },
}

impl From<BatchOutcome> for Step {
    fn from(o: BatchOutcome) -> Self {
        match o {
            BatchOutcome::Ran {
                iterations,
                failures,
            } => Step::Ran {
                iterations,
                failures,
            },
            BatchOutcome::Unknown { reason } => Step::Unknown { reason },
        }
    }
}

/// One recorded step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Entry {
    /// 0, 1, 2, ... in the order the steps were recorded.
    pub seq: u64,
    /// RFC 3339 UTC time of the append.
    pub timestamp: String,
    pub candidate: usize,
    /// The candidate's identity, for example its commit hash or patch subject.
    pub identity: String,
    pub step: Step,
}

/// A journal read back.
#[derive(Clone, Debug, PartialEq)]
pub struct Replay {
    pub header: Header,
    pub entries: Vec<Entry>,
    /// Set when the last line was cut short (the process was killed mid-write) and ignored;
    /// say it to the user.
    pub warning: Option<String>,
    /// Bytes of the file that hold complete lines.
    valid_len: u64,
    /// The last complete line has no newline yet.
    needs_newline: bool,
}

/// An open journal that steps are appended to.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    next_seq: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BisectError + '_ {
    move |source| BisectError::JournalIo {
        path: path.to_path_buf(),
        source,
    }
}

impl Journal {
    /// Start a new journal at `path`; an existing file is an error (resume it instead).
    pub fn create(path: &Path, header: &Header) -> Result<Journal, BisectError> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io_err(path))?;
        let mut line = serde_json::to_string(header).map_err(BisectError::JournalEncode)?;
        line.push('\n');
        file.write_all(line.as_bytes()).map_err(io_err(path))?;
        file.sync_all().map_err(io_err(path))?;
        // The new directory entry must survive a crash too.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(dir))?;
        }
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            next_seq: 0,
        })
    }

    /// Read a journal. A last line cut short is dropped with a warning; any other bad line is
    /// an error.
    pub fn replay(path: &Path) -> Result<Replay, BisectError> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let mut header: Option<Header> = None;
        let mut entries = Vec::new();
        let mut warning = None;
        let mut valid_len = 0u64;
        let mut needs_newline = false;
        let mut offset = 0usize;
        // Bytes, not text: a torn write can end inside a multi-byte character.
        let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
        for (index, raw) in lines.iter().enumerate() {
            let is_last = index + 1 == lines.len();
            let complete = raw.ends_with(b"\n");
            offset += raw.len();
            if raw.iter().all(u8::is_ascii_whitespace) {
                valid_len = offset as u64;
                continue;
            }
            let parsed = if header.is_none() {
                serde_json::from_slice::<Header>(raw).map(|h| header = Some(h))
            } else {
                serde_json::from_slice::<Entry>(raw).map(|e| entries.push(e))
            };
            match parsed {
                Ok(()) => {
                    valid_len = offset as u64;
                    needs_newline = !complete;
                }
                Err(_) if is_last && !complete => {
                    warning = Some(format!(
                        "ignored the last line of {} ({} bytes cut short, probably killed mid-write)",
                        path.display(),
                        raw.len()
                    ));
                }
                Err(source) => {
                    return Err(BisectError::JournalParse {
                        path: path.to_path_buf(),
                        line: index + 1,
                        source,
                    })
                }
            }
        }
        let header = header.ok_or_else(|| BisectError::JournalNoHeader {
            path: path.to_path_buf(),
        })?;
        Ok(Replay {
            header,
            entries,
            warning,
            valid_len,
            needs_newline,
        })
    }

    /// Reopen a journal to continue the bisection `expected` describes: checks that the journal
    /// belongs to it, cuts off a torn last line, and returns the steps so far.
    pub fn resume(path: &Path, expected: &Header) -> Result<(Journal, Replay), BisectError> {
        let replay = Journal::replay(path)?;
        check_header(path, expected, &replay.header)?;
        let mut file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        file.set_len(replay.valid_len).map_err(io_err(path))?;
        // Append mode only after the cut, so every write lands at the new end.
        drop(file);
        file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io_err(path))?;
        if replay.needs_newline {
            file.write_all(b"\n").map_err(io_err(path))?;
        }
        file.sync_all().map_err(io_err(path))?;
        let next_seq = replay.entries.last().map_or(0, |e| e.seq + 1);
        Ok((
            Journal {
                path: path.to_path_buf(),
                file,
                next_seq,
            },
            replay,
        ))
    }

    /// Append one step and sync it to disk.
    pub fn append(
        &mut self,
        candidate: usize,
        identity: &str,
        step: Step,
    ) -> Result<Entry, BisectError> {
        let entry = Entry {
            seq: self.next_seq,
            timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            candidate,
            identity: identity.to_string(),
            step,
        };
        let mut line = serde_json::to_string(&entry).map_err(BisectError::JournalEncode)?;
        line.push('\n');
        // One write per line keeps a kill from interleaving two half lines.
        self.file
            .write_all(line.as_bytes())
            .map_err(io_err(&self.path))?;
        self.file.sync_data().map_err(io_err(&self.path))?;
        self.next_seq += 1;
        Ok(entry)
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn check_header(path: &Path, expected: &Header, found: &Header) -> Result<(), BisectError> {
    let mismatch = |field: &'static str, e: String, f: String| BisectError::JournalMismatch {
        path: path.to_path_buf(),
        field,
        expected: e,
        found: f,
    };
    if found.format != expected.format {
        return Err(mismatch(
            "format",
            expected.format.clone(),
            found.format.clone(),
        ));
    }
    if found.scenario != expected.scenario {
        return Err(mismatch(
            "scenario",
            expected.scenario.clone(),
            found.scenario.clone(),
        ));
    }
    if found.range != expected.range {
        return Err(mismatch(
            "range",
            expected.range.clone(),
            found.range.clone(),
        ));
    }
    if found.last != expected.last {
        return Err(mismatch(
            "last candidate",
            expected.last.to_string(),
            found.last.to_string(),
        ));
    }
    if found.config != expected.config {
        let show = |c: &Config| serde_json::to_string(c).unwrap_or_else(|e| e.to_string());
        return Err(mismatch(
            "config",
            show(&expected.config),
            show(&found.config),
        ));
    }
    Ok(())
}

impl Bisector {
    /// Rebuild a bisection from a journal's steps, as if they were recorded live.
    pub fn from_journal(replay: &Replay) -> Result<Bisector, BisectError> {
        let mut b = Bisector::new(replay.header.last, replay.header.config.clone())?;
        for e in &replay.entries {
            match &e.step {
                Step::Ran {
                    iterations,
                    failures,
                } => b.record(
                    e.candidate,
                    BatchOutcome::Ran {
                        iterations: *iterations,
                        failures: *failures,
                    },
                )?,
                Step::Unknown { reason } => b.record(
                    e.candidate,
                    BatchOutcome::Unknown {
                        reason: reason.clone(),
                    },
                )?,
                Step::Alias { same_as } => b.record_alias(e.candidate, *same_as)?,
                Step::Built { .. } => {}
            }
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bisect::model::Action;
    use crate::bisect::sim::SimulatedHistory;
    use crate::bisect::Oracle;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn header(config: &Config) -> Header {
        Header::new("umount-ebusy", "linux@v6.1..linux@v6.2", 20, config.clone())
    }

    /// Run a live bisection for `steps` steps, journaling each; return the live bisector.
    fn journaled_run(path: &Path, steps: usize) -> Bisector {
        let config = Config::default();
        let mut journal = Journal::create(path, &header(&config)).unwrap();
        let mut b = Bisector::new(20, config).unwrap();
        let mut rng = SmallRng::seed_from_u64(11);
        for _ in 0..steps {
            let Action::Test {
                candidate,
                iterations,
                stop_at_first_failure,
            } = b.next_action()
            else {
                break;
            };
            let mut h = SimulatedHistory {
                culprit: 14,
                p: 0.5,
                fp: 0.0,
                rng: &mut rng,
            };
            let outcome = h.test(candidate, iterations, stop_at_first_failure);
            b.record(candidate, outcome.clone()).unwrap();
            journal
                .append(candidate, &format!("commit-{candidate}"), outcome.into())
                .unwrap();
        }
        b
    }

    #[test]
    fn replay_rebuilds_the_same_bisection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let mut live = journaled_run(&path, 6);
        let replay = Journal::replay(&path).unwrap();
        assert_eq!(replay.warning, None);
        assert_eq!(replay.entries.len(), 6);
        assert_eq!(
            replay.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (0..6).collect::<Vec<_>>()
        );
        // The bad end goes first.
        assert_eq!(replay.entries[0].identity, "commit-20");
        let mut resumed = Bisector::from_journal(&replay).unwrap();
        assert_eq!(resumed.posterior(), live.posterior());
        assert_eq!(resumed.next_action(), live.next_action());
        assert_eq!(resumed.report(), live.report());
    }

    #[test]
    fn torn_last_line_is_dropped_with_a_warning_and_resume_appends_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        journaled_run(&path, 4);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"seq":4,"timestamp":"2026-11-25T1"#)
            .unwrap();
        drop(f);

        let replay = Journal::replay(&path).unwrap();
        assert_eq!(replay.entries.len(), 4);
        let warning = replay.warning.unwrap();
        assert!(warning.contains("cut short"), "{warning}");

        let (mut journal, replay) = Journal::resume(&path, &header(&Config::default())).unwrap();
        assert_eq!(replay.entries.len(), 4);
        let entry = journal
            .append(
                3,
                "commit-3",
                Step::Ran {
                    iterations: 2,
                    failures: 0,
                },
            )
            .unwrap();
        assert_eq!(entry.seq, 4);
        let again = Journal::replay(&path).unwrap();
        assert_eq!(again.warning, None);
        assert_eq!(again.entries.len(), 5);
        assert_eq!(again.entries[4], entry);
    }

    #[test]
    fn a_complete_last_line_without_newline_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        journaled_run(&path, 3);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.trim_end()).unwrap();
        let (mut journal, replay) = Journal::resume(&path, &header(&Config::default())).unwrap();
        assert_eq!((replay.entries.len(), replay.warning), (3, None));
        journal
            .append(2, "commit-2", Step::Alias { same_as: 1 })
            .unwrap();
        assert_eq!(Journal::replay(&path).unwrap().entries.len(), 4);
    }

    #[test]
    fn journal_of_another_bisection_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        journaled_run(&path, 1);
        let mut other = header(&Config::default());
        other.scenario = "mount-after-kill".into();
        let err = Journal::resume(&path, &other).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "resume from journal {}: it belongs to another bisection (scenario is umount-ebusy, expected mount-after-kill)",
                path.display()
            )
        );
        let changed = Config {
            confidence: 0.99,
            ..Config::default()
        };
        let err = Journal::resume(&path, &header(&changed)).unwrap_err();
        assert!(matches!(
            err,
            BisectError::JournalMismatch {
                field: "config",
                ..
            }
        ));
        // A new journal never overwrites an old one.
        assert!(Journal::create(&path, &header(&Config::default())).is_err());
    }

    #[test]
    fn corrupt_line_in_the_middle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        journaled_run(&path, 3);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines[2] = "{not json";
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let err = Journal::replay(&path).unwrap_err();
        assert!(
            matches!(err, BisectError::JournalParse { line: 3, .. }),
            "{err:?}"
        );
        std::fs::write(&path, "").unwrap();
        assert!(matches!(
            Journal::replay(&path),
            Err(BisectError::JournalNoHeader { .. })
        ));
    }
}
