//! The report files `crashrig matrix` and `crashrig report merge` both write, and the exit
//! code they end with. The run loop itself (booting VMs for cells)
//! belongs to the run engine; `report merge` needs no VM and is complete here.

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::baseline::{check, load_baseline, Baseline, BaselineError, Regression};
use super::compare::compare;
use super::merge::{merge_dirs, MergeError};
use super::summary::{junit, markdown};
use crate::report::Results;

/// What `crashrig report merge` merges and where it writes.
#[derive(Debug, Clone)]
pub struct MergeRequest {
    /// Results directories of the shards (each with a results.json).
    pub dirs: Vec<PathBuf>,
    /// Where the merged results.json, junit.xml and summary.md go.
    pub out: PathBuf,
    /// Known results to check against; with a baseline, only regressions fail.
    pub baseline: Option<PathBuf>,
    /// Write a baseline of the merged results to this file.
    pub write_baseline: Option<PathBuf>,
}

#[derive(Debug, Error)]
pub enum CommandError {
    #[error(transparent)]
    Merge(#[from] MergeError),
    #[error(transparent)]
    Baseline(#[from] BaselineError),
    #[error("write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("write JUnit XML")]
    Junit(#[source] quick_junit::SerializeError),
}

/// What a matrix run or merge ended with.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The markdown summary (also written as summary.md): print it.
    pub markdown: String,
    pub regressions: Vec<Regression>,
    /// Matrix positions no run covers (a shard missing from the merge): warn about them.
    pub missing_cells: Vec<u32>,
    /// See [`exit_code`].
    pub exit_code: i32,
}

/// Exit code of a matrix run or merge: with a baseline, 1 when there is a regression (known
/// bugs pass); without one, 1 when any cell had a failed iteration; else 0. Runs that ended
/// with an infrastructure error give 2 when nothing else failed.
pub fn exit_code(results: &Results, baseline_used: bool, regressions: &[Regression]) -> i32 {
    let failed = if baseline_used {
        !regressions.is_empty()
    } else {
        results.runs.iter().any(|r| r.summary.failed > 0)
    };
    if failed {
        crate::exit::EXPECTATION_FAILED
    } else if results.runs.iter().any(|r| r.error.is_some()) {
        crate::exit::CONFIG_OR_INFRA
    } else {
        crate::exit::OK
    }
}

/// Writes junit.xml and summary.md into `dir`, checks against `baseline` and returns the
/// outcome. results.json is the caller's (the run engine writes it as cells finish).
pub fn write_reports(
    dir: &Path,
    results: &Results,
    baseline: Option<&Baseline>,
) -> Result<Outcome, CommandError> {
    let regressions = baseline.map(|b| check(results, b)).unwrap_or_default();
    let md = markdown(results, &compare(results), &regressions);
    let xml = junit(results).map_err(CommandError::Junit)?;
    write(&dir.join("junit.xml"), &xml)?;
    write(&dir.join("summary.md"), &md)?;
    Ok(Outcome {
        exit_code: exit_code(results, baseline.is_some(), &regressions),
        markdown: md,
        regressions,
        missing_cells: super::merge::missing_cells(results),
    })
}

/// `crashrig report merge DIR... --out DIR`: merges the shards and writes results.json,
/// junit.xml, summary.md (and the baseline, when asked) into `--out`.
pub fn report_merge(args: &MergeRequest) -> Result<Outcome, CommandError> {
    let merged = merge_dirs(&args.dirs)?;
    let baseline = args.baseline.as_deref().map(load_baseline).transpose()?;
    std::fs::create_dir_all(&args.out).map_err(|source| CommandError::Write {
        path: args.out.clone(),
        source,
    })?;
    write_json(&args.out.join("results.json"), &merged)?;
    if let Some(path) = &args.write_baseline {
        write_json(path, &super::baseline::baseline_from(&merged))?;
    }
    write_reports(&args.out, &merged, baseline.as_ref())
}

/// Pretty JSON, as results.json and baselines are written.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), CommandError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CommandError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    write(path, &(text + "\n"))
}

fn write(path: &Path, text: &str) -> Result<(), CommandError> {
    std::fs::write(path, text).map_err(|source| CommandError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::super::merge::read_results;
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn report_merge_writes_every_output_and_sets_the_exit_code() {
        let m = seed_matrix();
        let cells = m.cells();
        let all = results(
            cells
                .iter()
                .map(|c| run_for(c, 4, (c.index % 2) as u32))
                .collect(),
        );
        let tmp = tempfile::tempdir().unwrap();
        let mut dirs = Vec::new();
        for index in 1..=2u32 {
            let dir = tmp.path().join(format!("shard-{index}"));
            std::fs::create_dir(&dir).unwrap();
            let mut shard = all.clone();
            shard
                .runs
                .retain(|r| r.cell.as_ref().unwrap().index % 2 + 1 == index);
            write_json(&dir.join("results.json"), &shard).unwrap();
            dirs.push(dir);
        }
        let out = tmp.path().join("merged");
        let base_path = tmp.path().join("baseline.json");
        let args = MergeRequest {
            dirs: dirs.clone(),
            out: out.clone(),
            baseline: None,
            write_baseline: Some(base_path.clone()),
        };
        let outcome = report_merge(&args).unwrap();
        assert_eq!(read_results(&out.join("results.json")).unwrap(), all);
        let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
        assert_eq!(md, outcome.markdown);
        assert_eq!(md.lines().filter(|l| l.starts_with("| debian-")).count(), 8);
        let xml = std::fs::read_to_string(out.join("junit.xml")).unwrap();
        assert_eq!(xml.matches("<testcase ").count(), 8);
        // Odd cells failed once and there is no baseline: the bug was seen.
        assert_eq!(outcome.exit_code, 1);
        assert!(outcome.missing_cells.is_empty());

        // Against the baseline of the same results: nothing changed, exit 0.
        let again = report_merge(&MergeRequest {
            baseline: Some(base_path),
            write_baseline: None,
            ..args
        })
        .unwrap();
        assert_eq!(again.regressions, []);
        assert_eq!(again.exit_code, 0);

        // One shard only: merged, with the other shard's cells reported missing.
        let partial = report_merge(&MergeRequest {
            dirs: dirs[..1].to_vec(),
            out: tmp.path().join("partial"),
            baseline: None,
            write_baseline: None,
        })
        .unwrap();
        assert_eq!(partial.missing_cells, [1, 3, 5, 7]);
    }

    #[test]
    fn infrastructure_errors_exit_2_unless_something_failed() {
        let cells = seed_matrix().cells();
        let mut broken = run_for(&cells[1], 0, 0);
        broken.error = Some("QEMU exited".into());
        let r = results(vec![run_for(&cells[0], 4, 0), broken]);
        assert_eq!(exit_code(&r, false, &[]), 2);
        let r = results(vec![run_for(&cells[0], 4, 0)]);
        assert_eq!(exit_code(&r, false, &[]), 0);
    }
}
