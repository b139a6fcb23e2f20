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
    /// The file parses but states what no run produces; `problems` lists each.
    #[error("read {}: the file is damaged or was edited: {}", path.display(), problems.join("; "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
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

/// The text of a JSON file crashrig reads (results, baselines, bisect and amplify state):
/// a regular file only. A baseline path that named `/dev/zero` was read until the OOM
/// killer ended crashrig, and one that named a FIFO (or `--write-baseline /dev/stdout`,
/// checked for an old baseline) waited for a writer for good.
fn read_text(path: &Path) -> Result<String, StoreError> {
    let read = |source| StoreError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = crate::kernel::read_input(path, u64::MAX).map_err(read)?;
    String::from_utf8(bytes)
        .map_err(|e| read(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, StoreError> {
    let text = read_text(path)?;
    serde_json::from_str(&text).map_err(|source| StoreError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a `results.json` and checks that its numbers are ones crashrig writes (see
/// [`Results::problems`]) and that no run directory it names leads out of the results
/// directory through a symbolic link (crashrig never makes one there; repro reads a run's
/// scenario from it and `--resume` writes into it).
pub fn read_results(path: &Path) -> Result<Results, StoreError> {
    let text = read_text(path)?;
    let results = parse_results(&text, path)?;
    let root = path.parent().unwrap_or(Path::new("."));
    let problems: Vec<String> = results
        .runs
        .iter()
        .enumerate()
        .filter_map(|(i, run)| {
            let link = symlink_on_the_way(root, Path::new(&run.dir))?;
            Some(format!(
                "runs[{i}].dir {:?} passes through the symbolic link {}, expected a directory \
                 crashrig made inside the results directory",
                run.dir,
                link.display()
            ))
        })
        .collect();
    if problems.is_empty() {
        Ok(results)
    } else {
        Err(StoreError::Invalid {
            path: path.to_path_buf(),
            problems,
        })
    }
}

/// The first existing symbolic link on the way from `root` to `root/rel` (`rel` is relative
/// and plain: [`Results::problems`] checked it), if any.
fn symlink_on_the_way(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut at = root.to_path_buf();
    for part in rel.components() {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => return Some(at),
            Ok(_) => {}
            // Nothing further exists: nothing further can lead elsewhere.
            Err(_) => return None,
        }
    }
    None
}

/// [`read_results`] of text read from `path`.
pub fn parse_results(text: &str, path: &Path) -> Result<Results, StoreError> {
    let results: Results = serde_json::from_str(text).map_err(|source| StoreError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let mut problems = results.problems();
    if problems.is_empty() {
        return Ok(results);
    }
    // One damaged field is usually repeated; the first few say enough.
    let more = problems.len().saturating_sub(5);
    problems.truncate(5);
    if more > 0 {
        problems.push(format!("and {more} more"));
    }
    Err(StoreError::Invalid {
        path: path.to_path_buf(),
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--baseline /dev/zero` was read until the OOM killer ended crashrig (22 GB); a FIFO
    /// blocked it for good.
    #[test]
    fn only_a_regular_file_is_read_as_json() {
        let err = read_json::<Vec<u32>>(Path::new("/dev/zero")).unwrap_err();
        let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert_eq!(
            text,
            "read /dev/zero: it is a character device, not a regular file"
        );
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("results.json");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_results(&fifo).unwrap_err();
        assert!(matches!(err, StoreError::Read { .. }), "{err}");
    }

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

    fn damaged(edit: impl FnOnce(&mut Results)) -> String {
        let (_, mut all) = crate::matrix::testutil::unsharded();
        edit(&mut all);
        let text = serde_json::to_string(&all).unwrap();
        match parse_results(&text, Path::new("shard/results.json")) {
            Ok(_) => panic!("damaged results were accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_run_directory_that_is_a_symlink_out_of_the_results_is_refused() {
        let (_, all) = crate::matrix::testutil::unsharded();
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("results");
        std::fs::create_dir(&out).unwrap();
        let path = out.join("results.json");
        write_json(&path, &all).unwrap();
        // Run directories that do not exist, or exist as directories, are fine.
        assert_eq!(read_results(&path).unwrap(), all);
        let victim = tmp.path().join("elsewhere");
        std::fs::create_dir(&victim).unwrap();
        let dir = out.join(&all.runs[1].dir);
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&victim, &dir).unwrap();
        let err = read_results(&path).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "runs[1].dir {:?} passes through the symbolic link",
                all.runs[1].dir
            )),
            "{err}"
        );
        assert!(err.contains(&dir.display().to_string()), "{err}");
    }

    #[test]
    fn results_with_numbers_no_run_writes_are_refused() {
        let head = "read shard/results.json: the file is damaged or was edited: ";
        assert_eq!(
            damaged(|r| r.runs[1].iterations[2].duration_ms = 1e300),
            format!("{head}runs[1].iterations[2].duration_ms is 1e300, expected 0 to 1000000000 milliseconds")
        );
        assert_eq!(
            damaged(|r| r.runs[0].iterations[0].duration_ms = -1.0),
            format!("{head}runs[0].iterations[0].duration_ms is -1, expected 0 to 1000000000 milliseconds")
        );
        assert_eq!(
            damaged(|r| r.runs[3].cell.as_mut().unwrap().total = u32::MAX),
            format!("{head}runs[3].cell.total is 4294967295, a matrix has 1 to 10000 cells")
        );
        assert_eq!(
            damaged(|r| r.runs[3].cell.as_mut().unwrap().index = 8),
            format!("{head}runs[3].cell.index is 8, outside its matrix of 8 cells")
        );
        assert_eq!(
            damaged(|r| r.runs[0].summary.passed = 9),
            format!("{head}runs[0].summary: passed 9 + failed 0 + errors 0 is more than its 4 iterations")
        );
        assert_eq!(
            damaged(|r| r.runs[1].summary.hangs = 5),
            format!("{head}runs[1].summary: hangs 5 + panics 0 is more than failed 1")
        );
        // repro would read the scenario of a run from its dir: never outside the results.
        for dir in ["/etc", "../../../../tmp/x", "runs/../../x", "", "./runs/01"] {
            assert_eq!(
                damaged(|r| r.runs[2].dir = dir.into()),
                format!(
                    "{head}runs[2].dir is {dir:?}, expected a relative path inside the results \
                     directory (no `..`, not absolute)"
                )
            );
        }
        let many = damaged(|r| {
            for run in &mut r.runs {
                run.summary.failure_rate = 2.0;
                run.summary.passed = u32::MAX;
            }
        });
        assert!(many.ends_with("; and 11 more"), "{many}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Arbitrary bytes and random edits of a real results.json never panic the reader,
        /// and what it accepts merges and renders (JUnit, markdown) without panicking.
        #[test]
        fn results_reader_survives_damage(
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            edits in proptest::collection::vec(
                (proptest::num::usize::ANY, proptest::sample::select(vec![
                    "", "0", "-1", "1e308", "4294967295", "18446744073709551615", "null", "[]",
                    "{}", "\"x\"", "true", ",", "1.5", "99999999999999999999999",
                ])),
                1..4,
            ),
        ) {
            let path = Path::new("r.json");
            let _ = parse_results(&String::from_utf8_lossy(&noise), path);
            let (_, all) = crate::matrix::testutil::unsharded();
            let mut text = serde_json::to_string(&all).unwrap();
            for (at, piece) in edits {
                // Replace one number or literal of the file with another.
                let starts: Vec<usize> = text
                    .char_indices()
                    .filter(|(i, c)| {
                        (c.is_ascii_digit() || *c == 't' || *c == 'f' || *c == 'n')
                            && text[..*i].ends_with(':')
                    })
                    .map(|(i, _)| i)
                    .collect();
                if starts.is_empty() {
                    break;
                }
                let start = starts[at % starts.len()];
                let end = text[start..]
                    .find([',', '}', ']'])
                    .map_or(text.len(), |n| start + n);
                text.replace_range(start..end, piece);
            }
            if let Ok(results) = parse_results(&text, path) {
                let _ = crate::report::writer::junit(&results);
                let _ = crate::matrix::junit_cells(&results);
                let _ = crate::matrix::missing_cells(&results);
                if let Ok(merged) = crate::matrix::merge_results(vec![results.clone()]) {
                    let _ = crate::matrix::markdown(
                        &merged,
                        &crate::matrix::compare(&merged),
                        &[],
                    );
                }
            }
        }
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
