//! The report files of a matrix, written after its cells ran (`crashrig matrix`) or from
//! shard results (`crashrig report merge`): results.json in expansion order, junit.xml (one
//! case per iteration, as every results directory), junit-cells.xml (one case per cell),
//! summary.md, and a baseline when asked. The pure parts (merging, comparing, checking,
//! rendering) are in `crate::matrix`; this is the file side around them.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::matrix::{
    self, baseline_coverage, baseline_from, compare, judge, junit_cells_known, markdown,
    merge_checked, Baseline, BaselineError, MergeError, Regression,
};
use crate::report::store::{read_json, read_results, write_atomic, write_json, StoreError};
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
    /// Cells no shard covers do not fail the merge (a look at partial results).
    pub allow_missing: bool,
}

#[derive(Debug, Error)]
pub enum ReportError {
    #[error(transparent)]
    Merge(#[from] MergeError),
    #[error(transparent)]
    Baseline(#[from] BaselineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("create {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    ResultsDir(#[from] crate::report::durable::ResultsDirError),
    #[error("write JUnit XML")]
    Junit(#[source] quick_junit::SerializeError),
    /// Merging there would replace a run's own results (a shard's, or any run's).
    #[error(
        "write merged results into {}: it holds the results of a run ({why}); give another --out",
        path.display()
    )]
    OutHoldsRun { path: PathBuf, why: &'static str },
    /// `--write-baseline` names a file crashrig cannot write, or one it must not replace.
    #[error("write a baseline to {}: {why}", path.display())]
    BaselineTarget { path: PathBuf, why: String },
    /// Merging there would replace a file crashrig did not write.
    #[error(
        "write merged results into {}: it holds {file}, and no merged results.json beside it says crashrig wrote it; give another --out",
        path.display()
    )]
    OutHoldsOtherFiles { path: PathBuf, file: &'static str },
}

/// What a merge writes into `--out`.
const MERGE_OUTPUTS: [&str; 4] = ["results.json", "junit.xml", "junit-cells.xml", "summary.md"];

/// A file of [`MERGE_OUTPUTS`] in `out` that a merge would replace although no earlier merge
/// wrote it: `out` has no results.json of matrix cells (what a merge writes) beside it.
fn foreign_output(out: &Path) -> Option<&'static str> {
    let merged_before = read_results(&out.join("results.json"))
        .is_ok_and(|r| !r.runs.is_empty() && r.runs.iter().all(|run| run.cell.is_some()));
    if merged_before {
        return None;
    }
    MERGE_OUTPUTS
        .into_iter()
        .find(|f| out.join(f).symlink_metadata().is_ok())
}

impl ReportError {
    /// Reports that cannot be made are a configuration or infrastructure error.
    pub fn exit_code(&self) -> i32 {
        crate::exit::CONFIG_OR_INFRA
    }
}

/// What a matrix run or merge ended with.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The markdown summary (also written as summary.md): print it.
    pub markdown: String,
    pub regressions: Vec<Regression>,
    /// Matrix positions no run covers (a shard missing from the merge): warn about them.
    pub missing_cells: Vec<u32>,
    /// Ids of the cells no run covers, where a baseline names them (`report merge
    /// --baseline`: its entries no merged run matches); empty without one.
    pub missing_ids: Vec<String>,
    /// See [`matrix::exit_code`].
    pub exit_code: i32,
}

/// Reads a baseline file.
pub fn load_baseline(path: &Path) -> Result<Baseline, ReportError> {
    Ok(read_json::<Baseline>(path)?.checked(path)?)
}

/// The baselines of a matrix run or merge, checked before anything runs (a matrix's cells
/// may take hours): the baseline to check against, read, and the file a new baseline goes
/// to, found writable without replacing a file of the user's.
#[derive(Debug, Clone, Default)]
pub struct Baselines {
    pub check: Option<Baseline>,
    pub write: Option<PathBuf>,
}

impl Baselines {
    /// [`load_baseline`] of `check` and [`check_baseline_target`] of `write`.
    pub fn prepare(check: Option<&Path>, write: Option<&Path>) -> Result<Baselines, ReportError> {
        let check = check.map(load_baseline).transpose()?;
        Baselines::with(check, write)
    }

    /// A baseline already read, and the target checked.
    pub fn with(check: Option<Baseline>, write: Option<&Path>) -> Result<Baselines, ReportError> {
        if let Some(path) = write {
            check_baseline_target(path)?;
        }
        Ok(Baselines {
            check,
            write: write.map(Path::to_path_buf),
        })
    }
}

/// Refuses a `--write-baseline` target whose directory is missing, that is a directory, or
/// that holds a file other than a baseline (one that reads as a baseline is replaced, as a
/// merge replaces its own results: a user keeping notes there would lose them otherwise).
pub fn check_baseline_target(path: &Path) -> Result<(), ReportError> {
    let refuse = |why: String| {
        Err(ReportError::BaselineTarget {
            path: path.to_path_buf(),
            why,
        })
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return refuse(format!("the directory {} does not exist", dir.display()));
    }
    match path.symlink_metadata() {
        Err(_) => Ok(()),
        Ok(meta) if meta.is_dir() => refuse("it is a directory".into()),
        Ok(_) if read_json::<Baseline>(path).is_ok() => Ok(()),
        Ok(_) => refuse(
            "it holds a file that is not a crashrig baseline, which would be replaced; move \
             it away or name another file"
                .into(),
        ),
    }
}

/// Reads `DIR/results.json` of each directory and merges them (see
/// [`matrix::merge_results`]).
pub fn merge_dirs(dirs: &[PathBuf]) -> Result<matrix::Merged, ReportError> {
    let mut shards = Vec::new();
    for dir in dirs {
        let path = dir.join("results.json");
        shards.push((dir.display().to_string(), read_results(&path)?));
    }
    Ok(merge_checked(shards)?)
}

/// After a matrix ran into `dir`: orders its results.json as the matrix expands, then
/// writes the reports (see [`write_all`]).
pub fn finish_matrix(
    dir: &Path,
    baselines: &Baselines,
    identity: Option<crate::report::MatrixId>,
) -> Result<Outcome, ReportError> {
    let mut results = read_results(&dir.join("results.json"))?;
    if identity.is_some() {
        results.matrix = identity;
    }
    matrix::sort_runs(&mut results);
    let note: String = matrix::unequal_plans(
        results.runs.iter().map(|r| (r, None)),
        "a --resume with another -n?",
    )
    .iter()
    .map(|line| format!("\n**Note**: {line}\n"))
    .collect();
    write_all(
        dir,
        &results,
        baselines,
        Some(&note).filter(|n| !n.is_empty()).map(String::as_str),
    )
}

/// `crashrig report merge DIR... --out DIR`: merges the shards and writes every report into
/// `--out`.
pub fn report_merge(args: &MergeRequest) -> Result<Outcome, ReportError> {
    let baselines = Baselines::prepare(args.baseline.as_deref(), args.write_baseline.as_deref())?;
    let matrix::Merged {
        results: merged,
        notes,
    } = merge_dirs(&args.dirs)?;
    // A merged directory may be merged into again; a run's directory never is.
    let out = args.out.canonicalize().ok();
    let why = if out.is_some() && args.dirs.iter().any(|d| d.canonicalize().ok() == out) {
        Some("it is one of the shards")
    } else if args.out.join("runs").exists() || args.out.join("bisect.journal").exists() {
        Some("it has a runs/ directory")
    } else {
        None
    };
    if let Some(why) = why {
        return Err(ReportError::OutHoldsRun {
            path: args.out.clone(),
            why,
        });
    }
    // Locked before it is looked at, as every results directory: a run or merge writing
    // there now makes this one refuse, not interleave its files.
    std::fs::create_dir_all(&args.out).map_err(|source| ReportError::CreateDir {
        path: args.out.clone(),
        source,
    })?;
    crate::report::durable::lock_results_dir(&args.out)?;
    if let Some(file) = foreign_output(&args.out) {
        return Err(ReportError::OutHoldsOtherFiles {
            path: args.out.clone(),
            file,
        });
    }
    // A lost shard must not pass for a whole matrix: said in summary.md (what a CI job
    // shows), and an infrastructure error unless something failed or it was allowed.
    let missing = matrix::missing_cells(&merged);
    // A merge knows a cell no shard ran by its position only; a baseline names the cells it
    // has entries for, and those no merged run matches are the missing ones (or typos).
    let missing_ids: Vec<String> = match &baselines.check {
        Some(b) if !missing.is_empty() => matrix::judge(&merged, b).unmatched,
        _ => Vec::new(),
    };
    let note = (!missing.is_empty()).then(|| {
        let positions = missing
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let which = if missing_ids.is_empty() {
            format!("positions {positions}, counting from 0")
        } else {
            format!(
                "the baseline's {}; positions {positions}, counting from 0",
                missing_ids
                    .iter()
                    .map(|id| format!("`{id}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        format!(
            "\n**No shard covers {} of the matrix** ({which}): {}.\n",
            crate::report::plural(missing.len() as u64, "cell"),
            if args.allow_missing {
                "merged without them (--allow-missing)"
            } else {
                "a shard is missing; the merge fails unless --allow-missing"
            }
        )
    });
    // A baseline of a partial merge would leave the missing cells out of every later check:
    // written only when partial results were asked for, and then said.
    let mut baselines = baselines;
    let mut note = note;
    for line in &notes {
        note.get_or_insert_with(String::new)
            .push_str(&format!("\n**Merge**: {line}\n"));
    }
    if !missing.is_empty() {
        if let Some(path) = &baselines.write {
            let text = if args.allow_missing {
                format!(
                    "\n**The baseline written to {} covers only the {} merged**, not the \
                     missing ones: cells it does not mention are judged as having no known \
                     failures.\n",
                    path.display(),
                    crate::report::plural(merged.runs.len() as u64, "cell")
                )
            } else {
                format!(
                    "\n**No baseline written to {}**: it would leave out the missing cells \
                     (--allow-missing writes one of the merged cells only).\n",
                    path.display()
                )
            };
            note.get_or_insert_with(String::new).push_str(&text);
            if !args.allow_missing {
                baselines.write = None;
            }
        }
    }
    let mut outcome = write_all(&args.out, &merged, &baselines, note.as_deref())?;
    outcome.missing_ids = missing_ids;
    if !missing.is_empty() && !args.allow_missing && outcome.exit_code == crate::exit::OK {
        outcome.exit_code = crate::exit::CONFIG_OR_INFRA;
    }
    Ok(outcome)
}

/// Writes results.json, junit.xml, junit-cells.xml, summary.md (ending with `note`) into
/// `dir` and the baseline of `results` where `baselines` says; checks against its baseline.
fn write_all(
    dir: &Path,
    results: &Results,
    baselines: &Baselines,
    note: Option<&str>,
) -> Result<Outcome, ReportError> {
    let baseline = baselines.check.as_ref();
    write_json(&dir.join("results.json"), results)?;
    if let Some(path) = &baselines.write {
        // Again: a file may have appeared there while the cells ran.
        check_baseline_target(path)?;
        write_json(path, &baseline_from(results))?;
    }
    let judgement = baseline.map(|b| judge(results, b)).unwrap_or_default();
    let regressions = judgement.regressions.clone();
    let mut md = markdown(results, &compare(results), &regressions);
    md.push_str(&baseline_coverage(&judgement));
    md.push_str(note.unwrap_or_default());
    write_atomic(
        &dir.join("junit.xml"),
        crate::report::writer::junit_with(results, |run| {
            judgement.known.contains(&matrix::RunKey::of(run).id())
        })
        .as_bytes(),
    )?;
    let cells =
        junit_cells_known(results, &judgement.known, &regressions).map_err(ReportError::Junit)?;
    write_atomic(&dir.join("junit-cells.xml"), cells.as_bytes())?;
    write_atomic(&dir.join("summary.md"), md.as_bytes())?;
    Ok(Outcome {
        exit_code: matrix::exit_code(results, baseline.is_some(), &regressions),
        markdown: md,
        regressions,
        missing_cells: matrix::missing_cells(results),
        missing_ids: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::testutil::*;
    use crate::matrix::Partition;

    /// A --resume with another -n left cells of one scenario planned with 20 and with 5
    /// iterations: `report merge` said so, the matrix's own summary did not.
    #[test]
    fn a_matrixs_own_summary_names_cells_planned_with_other_iteration_counts() {
        let m = seed_matrix();
        let cells = m.cells();
        let mut runs: Vec<_> = cells.iter().map(|c| run_for(c, 5, 1)).collect();
        let tmp = tempfile::tempdir().unwrap();
        write_json(&tmp.path().join("results.json"), &results(runs.clone())).unwrap();
        let md = finish_matrix(tmp.path(), &Baselines::default(), None)
            .unwrap()
            .markdown;
        assert!(!md.contains("different numbers of iterations"), "{md}");
        runs[0].iterations_planned = Some(20);
        let id = runs[0].cell.as_ref().unwrap().id.clone();
        write_json(&tmp.path().join("results.json"), &results(runs)).unwrap();
        let md = finish_matrix(tmp.path(), &Baselines::default(), None)
            .unwrap()
            .markdown;
        assert!(
            md.contains(&format!(
                "were to run different numbers of iterations: 20 (`{id}`), 5 (`"
            )),
            "{md}"
        );
        assert!(md.contains("(a --resume with another -n?)"), "{md}");
    }

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
            allow_missing: false,
        };
        let outcome = report_merge(&args).unwrap();
        assert_eq!(read_results(&out.join("results.json")).unwrap(), all);
        let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
        assert_eq!(md, outcome.markdown);
        assert_eq!(md.lines().filter(|l| l.starts_with("| debian-")).count(), 8);
        // junit.xml: one case per iteration, as in every results directory; junit-cells.xml:
        // one case per cell.
        let xml = std::fs::read_to_string(out.join("junit.xml")).unwrap();
        assert_eq!(xml.matches("<testcase ").count(), 8 * 4);
        let xml = std::fs::read_to_string(out.join("junit-cells.xml")).unwrap();
        assert_eq!(xml.matches("<testcase ").count(), 8);
        // Odd cells failed once and there is no baseline: the bug was seen.
        assert_eq!(outcome.exit_code, 1);
        assert!(outcome.missing_cells.is_empty());

        // Against the baseline of the same results: nothing changed, exit 0.
        let again = report_merge(&MergeRequest {
            baseline: Some(base_path.clone()),
            write_baseline: None,
            ..args
        })
        .unwrap();
        assert_eq!(again.regressions, []);
        assert_eq!(again.exit_code, 0);
        // ...and the JUnit files agree: the known failures are skipped, not failed.
        for file in ["junit.xml", "junit-cells.xml"] {
            let xml = std::fs::read_to_string(out.join(file)).unwrap();
            assert!(!xml.contains("<failure"), "{file}: {xml}");
            assert!(xml.contains("type=\"known failure\""), "{file}: {xml}");
        }

        // One shard only: merged, with the other shard's cells reported missing.
        let partial = report_merge(&MergeRequest {
            dirs: dirs[..1].to_vec(),
            out: tmp.path().join("partial"),
            baseline: None,
            write_baseline: None,
            allow_missing: false,
        })
        .unwrap();
        assert_eq!(partial.missing_cells, [1, 3, 5, 7]);
        // A lost shard fails the merge (no cell of shard 1 failed: 2, not 0), and says so in
        // summary.md; --allow-missing merges what is there.
        assert_eq!(partial.exit_code, 2);
        let md = std::fs::read_to_string(tmp.path().join("partial/summary.md")).unwrap();
        assert!(
            md.contains(
                "**No shard covers 4 cells of the matrix** (positions 1, 3, 5, 7, counting \
                 from 0)"
            ),
            "{md}"
        );
        // With a baseline that has them, the missing cells are named by id (they were named
        // by position only).
        let named = report_merge(&MergeRequest {
            dirs: dirs[..1].to_vec(),
            out: tmp.path().join("partial-named"),
            baseline: Some(base_path.clone()),
            write_baseline: None,
            allow_missing: false,
        })
        .unwrap();
        let ids: Vec<String> = all
            .runs
            .iter()
            .map(|r| r.cell.as_ref().unwrap())
            .filter(|c| c.index % 2 == 1)
            .map(|c| c.id.clone())
            .collect();
        assert_eq!(named.missing_ids, ids);
        let quoted: Vec<String> = ids.iter().map(|id| format!("`{id}`")).collect();
        assert!(
            named.markdown.contains(&format!(
                "**No shard covers 4 cells of the matrix** (the baseline's {}; positions 1, 3, \
                 5, 7, counting from 0)",
                quoted.join(", ")
            )),
            "{}",
            named.markdown
        );
        let allowed = report_merge(&MergeRequest {
            dirs: dirs[..1].to_vec(),
            out: tmp.path().join("partial-allowed"),
            baseline: None,
            write_baseline: None,
            allow_missing: true,
        })
        .unwrap();
        assert_eq!(allowed.exit_code, 0);
        assert!(allowed
            .markdown
            .contains("merged without them (--allow-missing)"));

        // Never into a shard (its results.json would be replaced by the merge).
        let before = std::fs::read(dirs[0].join("results.json")).unwrap();
        let err = report_merge(&MergeRequest {
            dirs: dirs.clone(),
            out: dirs[0].clone(),
            baseline: None,
            write_baseline: None,
            allow_missing: false,
        })
        .unwrap_err();
        assert!(
            err.to_string().ends_with(
                "it holds the results of a run (it is one of the shards); give another --out"
            ),
            "{err}"
        );
        assert_eq!(std::fs::read(dirs[0].join("results.json")).unwrap(), before);

        // Never over a file of the user's: a summary.md without a merged results.json beside
        // it stays as it was. A directory a merge wrote (above) is merged into again.
        let mine = tmp.path().join("mine");
        std::fs::create_dir(&mine).unwrap();
        std::fs::write(mine.join("summary.md"), "my notes").unwrap();
        let err = report_merge(&MergeRequest {
            dirs: dirs.clone(),
            out: mine.clone(),
            baseline: None,
            write_baseline: None,
            allow_missing: false,
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("it holds summary.md, and no merged results.json"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(mine.join("summary.md")).unwrap(),
            "my notes"
        );
        assert!(!mine.join("results.json").exists());
    }

    /// Writes `all`'s runs into one directory per shard (cell i in shard i % count + 1).
    fn shard_dirs(root: &Path, all: &Results, count: u32) -> Vec<PathBuf> {
        (1..=count)
            .map(|index| {
                let dir = root.join(format!("shard-{index}"));
                std::fs::create_dir(&dir).unwrap();
                let mut shard = all.clone();
                shard
                    .runs
                    .retain(|r| r.cell.as_ref().unwrap().index % count + 1 == index);
                write_json(&dir.join("results.json"), &shard).unwrap();
                dir
            })
            .collect()
    }

    #[test]
    fn a_mistyped_baseline_fails_failing_cells_and_is_named_in_the_summary() {
        let cells =
            matrix("name: b\nkernels: [debian:6.1, debian:6.12]\nscenarios: [coin.yaml]\n").cells();
        let all = results(vec![run_for(&cells[0], 4, 4), run_for(&cells[1], 4, 4)]);
        let tmp = tempfile::tempdir().unwrap();
        let dirs = shard_dirs(tmp.path(), &all, 2);
        let base = tmp.path().join("typo.json");
        std::fs::write(
            &base,
            r#"{"cells": [{"kernel": "debian:6.1", "scenario": "coin", "known_failure": true},
                          {"kernel": "debian-6.12", "scenario": "coin.yaml", "known_failure": true}]}"#,
        )
        .unwrap();
        let outcome = report_merge(&MergeRequest {
            dirs: dirs.clone(),
            out: tmp.path().join("merged"),
            baseline: Some(base),
            write_baseline: None,
            allow_missing: false,
        })
        .unwrap();
        assert_eq!(outcome.exit_code, 1);
        assert_eq!(outcome.regressions.len(), 2);
        let md = &outcome.markdown;
        assert!(
            md.contains("- **Not in the baseline** (2 cells), judged as having no known failures"),
            "{md}"
        );
        assert!(
            md.contains(
                "- **Baseline entries that match no cell here** (2 entries): `debian:6.1/coin`, \
                 `debian-6.12/coin.yaml`."
            ),
            "{md}"
        );
        // An empty baseline: the same.
        let empty = tmp.path().join("empty.json");
        std::fs::write(&empty, r#"{"cells": []}"#).unwrap();
        let outcome = report_merge(&MergeRequest {
            dirs: dirs.clone(),
            out: tmp.path().join("merged-empty"),
            baseline: Some(empty),
            write_baseline: None,
            allow_missing: false,
        })
        .unwrap();
        assert_eq!(outcome.exit_code, 1);

        // A shard missing: no partial baseline unless --allow-missing, and then said.
        let partial = tmp.path().join("partial.json");
        let outcome = report_merge(&MergeRequest {
            dirs: dirs[..1].to_vec(),
            out: tmp.path().join("one"),
            baseline: None,
            write_baseline: Some(partial.clone()),
            allow_missing: false,
        })
        .unwrap();
        assert_ne!(outcome.exit_code, 0);
        assert!(!partial.exists());
        assert!(
            outcome.markdown.contains("**No baseline written to "),
            "{}",
            outcome.markdown
        );
        let outcome = report_merge(&MergeRequest {
            dirs: dirs[..1].to_vec(),
            out: tmp.path().join("one-allowed"),
            baseline: None,
            write_baseline: Some(partial.clone()),
            allow_missing: true,
        })
        .unwrap();
        assert!(partial.exists());
        assert!(
            outcome.markdown.contains("covers only the 1 cell merged"),
            "{}",
            outcome.markdown
        );
    }

    #[test]
    fn infrastructure_errors_exit_2_unless_something_failed() {
        let cells = seed_matrix().cells();
        let mut broken = run_for(&cells[1], 0, 0);
        broken.error = Some("QEMU exited".into());
        let r = results(vec![run_for(&cells[0], 4, 0), broken]);
        assert_eq!(matrix::exit_code(&r, false, &[]), 2);
        let r = results(vec![run_for(&cells[0], 4, 0)]);
        assert_eq!(matrix::exit_code(&r, false, &[]), 0);
    }

    #[test]
    fn merges_results_directories() {
        let (_, all) = unsharded();
        let tmp = tempfile::tempdir().unwrap();
        let mut dirs = Vec::new();
        for index in 1..=2 {
            let dir = tmp.path().join(format!("shard-{index}"));
            std::fs::create_dir(&dir).unwrap();
            let text =
                serde_json::to_string_pretty(&shard(&all, Partition { index, count: 2 })).unwrap();
            std::fs::write(dir.join("results.json"), text).unwrap();
            dirs.push(dir);
        }
        assert_eq!(merge_dirs(&dirs).unwrap().results, all);
        dirs.push(tmp.path().join("absent"));
        let err = merge_dirs(&dirs).unwrap_err();
        assert!(err.to_string().starts_with("read "), "{err}");
        assert!(err.to_string().ends_with("absent/results.json"), "{err}");
    }

    #[test]
    fn loads_files_and_rejects_unknown_fields() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("b.json");
        std::fs::write(
            &path,
            r#"{"cells": [{"kernel": "debian-6.1", "scenario": "seed", "known_failure": true}]}"#,
        )
        .unwrap();
        let b = load_baseline(&path).unwrap();
        assert!(b.cells[0].known_failure);
        assert_eq!(b.schema, 1);
        std::fs::write(
            &path,
            r#"{"cells": [{"kernel": "k", "scenario": "s", "rate": 1}]}"#,
        )
        .unwrap();
        let err = load_baseline(&path).unwrap_err();
        assert!(
            matches!(err, ReportError::Store(StoreError::Parse { .. })),
            "{err}"
        );
        std::fs::write(&path, r#"{"schema": 2, "cells": []}"#).unwrap();
        assert!(matches!(
            load_baseline(&path),
            Err(ReportError::Baseline(BaselineError::Schema {
                found: 2,
                ..
            }))
        ));
    }
}
