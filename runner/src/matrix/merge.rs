//! Combining shard results (`crashrig report merge DIR...`) and resuming a matrix run.
//!
//! Every run of a matrix carries its [`CellInfo`]: the cell id, its position in the
//! unsharded expansion and a digest of the matrix's cell list. Merging therefore needs no
//! matrix file: runs are put back in expansion order and their summaries recomputed from the
//! iteration records, which gives exactly what one unsharded run writes.

use std::collections::BTreeMap;

use thiserror::Error;

use super::model::Cell;
use crate::report::{summarize, CellInfo, MatrixId, Results, RunRecord, SCHEMA_VERSION};

#[derive(Debug, Error)]
pub enum MergeError {
    #[error("merge results: no shard given")]
    Empty,
    #[error("merge {shard}: results schema {found}, this crashrig reads {SCHEMA_VERSION}")]
    Schema { shard: String, found: u32 },
    #[error(
        "merge {shard}: run of `{scenario}` on `{kernel}` is not a matrix cell (no `cell` field)"
    )]
    NotACell {
        shard: String,
        scenario: String,
        kernel: String,
    },
    /// `found` and `expected` name a matrix and its digest: "`seed` (0123abcd...)".
    #[error(
        "merge {shard}: it is from matrix {found}, {first} is from {expected}; shards must \
         come from the same matrix file"
    )]
    DifferentMatrix {
        shard: String,
        found: String,
        first: String,
        expected: String,
    },
    /// Two runs that must have run the same scenario, or kernel, did not.
    #[error(
        "merge {second}: {what}; the shards must run the same matrix file, scenario files, \
         --param values and kernels (rerun the shards that differ)"
    )]
    Differs {
        first: String,
        second: String,
        what: String,
    },
    /// Every shard given ran no cell: nothing was merged, which is no result.
    #[error(
        "merge {shards}: no shard holds a run of a cell{matrix}; every shard given is empty \
         (a partition past the end of the matrix), so the shards that ran cells are missing"
    )]
    NoCells { shards: String, matrix: String },
    #[error("merge {second}: cell `{id}` is also in {first}")]
    Duplicate {
        id: String,
        first: String,
        second: String,
    },
}

/// Merges shard results into the result set an unsharded run gives: every run in expansion
/// order, summaries recomputed. Shards are named "shard 1", "shard 2", ... in errors.
/// Header fields: the earliest `started`, the latest `finished` (unset when any shard is
/// unfinished), the first shard's version and host.
pub fn merge_results(shards: Vec<Results>) -> Result<Results, MergeError> {
    merge_checked(
        shards
            .into_iter()
            .enumerate()
            .map(|(i, r)| (format!("shard {}", i + 1), r))
            .collect(),
    )
    .map(|m| m.results)
}

/// Merged results and what the merge could not check or found worth saying.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub results: Results,
    /// Lines for summary.md (each a sentence).
    pub notes: Vec<String>,
}

/// [`merge_results`] with shards named as errors should say (their directories).
pub fn merge_named(shards: Vec<(String, Results)>) -> Result<Results, MergeError> {
    merge_checked(shards).map(|m| m.results)
}

/// The first run seen of a scenario (with its cell's parameters) or of a kernel label.
struct Seen {
    shard: String,
    cell: String,
    value: String,
}

/// `name=value, ...`, or "no parameters".
fn setting_text(setting: &BTreeMap<String, String>) -> String {
    if setting.is_empty() {
        return "no parameters".into();
    }
    setting
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that `run` (of `shard`) ran what the runs seen before of its scenario and kernel
/// ran: the same scenario contents and parameter values, the same kernel behind its label.
/// Shards whose runs record no scenario hash go to `unhashed`.
fn check_consistent(
    shard: &str,
    run: &RunRecord,
    cell: &CellInfo,
    scenarios: &mut BTreeMap<String, Seen>,
    kernels: &mut BTreeMap<String, Seen>,
    unhashed: &mut Vec<String>,
) -> Result<(), MergeError> {
    let differs = |first: &Seen, what: String| MergeError::Differs {
        first: first.shard.clone(),
        second: shard.to_string(),
        what,
    };
    let kernel = format!("{} ({})", run.kernel.spec, run.kernel.version);
    match kernels.get(&cell.kernel) {
        Some(first) if first.value != kernel => {
            return Err(differs(
                first,
                format!(
                    "kernel label `{}` ran {kernel} here (cell `{}`), but {} in {} (cell `{}`)",
                    cell.kernel, cell.id, first.value, first.shard, first.cell
                ),
            ))
        }
        Some(_) => {}
        None => {
            kernels.insert(
                cell.kernel.clone(),
                Seen {
                    shard: shard.to_string(),
                    cell: cell.id.clone(),
                    value: kernel,
                },
            );
        }
    }
    // Cells of one scenario and parameter values differ only in their kernel.
    let group = super::model::cell_id("", &cell.scenario, &cell.params);
    let setting = setting_text(&run.setting);
    let hash = run.scenario.sha256.clone().unwrap_or_default();
    if hash.is_empty() && !unhashed.iter().any(|s| s == shard) {
        unhashed.push(shard.to_string());
    }
    let value = format!("{setting}\n{hash}");
    match scenarios.get(&group) {
        Some(first) if first.value != value => {
            let (first_setting, first_hash) = first.value.split_once('\n').unwrap_or_default();
            let what = if first_setting != setting {
                format!(
                    "scenario `{}` ran with {setting} here (cell `{}`), but with {first_setting} \
                     in {} (cell `{}`)",
                    cell.scenario, cell.id, first.shard, first.cell
                )
            } else if first_hash.is_empty() || hash.is_empty() {
                return Ok(());
            } else {
                format!(
                    "scenario `{}` ran with other contents here (cell `{}`, sha256 {}) than in \
                     {} (cell `{}`, sha256 {}): the scenario file changed between the shard \
                     jobs",
                    cell.scenario,
                    cell.id,
                    short(&hash),
                    first.shard,
                    first.cell,
                    short(first_hash)
                )
            };
            Err(differs(first, what))
        }
        Some(_) => Ok(()),
        None => {
            scenarios.insert(
                group,
                Seen {
                    shard: shard.to_string(),
                    cell: cell.id.clone(),
                    value,
                },
            );
            Ok(())
        }
    }
}

/// Checks that `shard`'s matrix `id` is the one seen first (by name and digest).
fn same_matrix(
    seen: &mut Option<(String, MatrixId)>,
    shard: &str,
    id: MatrixId,
) -> Result<(), MergeError> {
    match seen {
        None => {
            *seen = Some((shard.to_string(), id));
            Ok(())
        }
        Some((first, m)) if m.digest != id.digest || m.name != id.name => {
            Err(MergeError::DifferentMatrix {
                shard: shard.to_string(),
                found: id.to_string(),
                first: first.clone(),
                expected: m.to_string(),
            })
        }
        Some(_) => Ok(()),
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// [`merge_named`], with the notes of what could not be checked.
pub fn merge_checked(shards: Vec<(String, Results)>) -> Result<Merged, MergeError> {
    let mut header: Option<Results> = None;
    // Whether `header` is from a shard that ran a cell.
    let mut header_ran = false;
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    // The shard that first named the matrix (in its header or a cell), and the matrix.
    let mut matrix: Option<(String, MatrixId)> = None;
    let names: Vec<String> = shards.iter().map(|(n, _)| n.clone()).collect();
    // Whether a shard's header named it (results of older versions do not).
    let mut named_in_header = false;
    let mut runs = Vec::new();
    let mut scenarios = BTreeMap::new();
    let mut kernels = BTreeMap::new();
    let mut unhashed = Vec::new();
    // Per scenario (and parameter values): the iterations its runs were to make.
    // The shard each run came from, in `runs`' order.
    let mut origins: Vec<String> = Vec::new();
    for (name, mut shard) in shards {
        if shard.schema != SCHEMA_VERSION {
            return Err(MergeError::Schema {
                shard: name,
                found: shard.schema,
            });
        }
        if let Some(id) = shard.matrix.clone() {
            same_matrix(&mut matrix, &name, id)?;
            named_in_header = true;
        }
        let shard_ran = !shard.runs.is_empty();
        for mut run in std::mem::take(&mut shard.runs) {
            let Some(cell) = &run.cell else {
                return Err(MergeError::NotACell {
                    shard: name,
                    scenario: run.scenario.name,
                    kernel: run.kernel.spec,
                });
            };
            same_matrix(&mut matrix, &name, MatrixId::of(cell))?;
            if let Some(first) = seen.insert(cell.id.clone(), name.clone()) {
                return Err(MergeError::Duplicate {
                    id: cell.id.clone(),
                    first,
                    second: name,
                });
            }
            check_consistent(
                &name,
                &run,
                cell,
                &mut scenarios,
                &mut kernels,
                &mut unhashed,
            )?;
            run.summary = summarize(&run.iterations);
            runs.push(run);
            origins.push(name.clone());
        }
        let first_run = !header_ran && shard_ran;
        header_ran |= shard_ran;
        match &mut header {
            None => header = Some(shard),
            Some(h) => {
                let mut other = shard;
                // An empty shard (a partition past the end of the matrix) booted nothing,
                // so its host says nothing: the first shard that ran a cell gives the header.
                if first_run {
                    std::mem::swap(h, &mut other);
                }
                if other.started < h.started {
                    h.started = other.started;
                }
                h.finished = match (h.finished.take(), other.finished) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
        }
    }
    let mut merged = header.ok_or(MergeError::Empty)?;
    if runs.is_empty() {
        return Err(MergeError::NoCells {
            shards: names.join(", "),
            matrix: matrix.map_or_else(String::new, |(_, m)| {
                format!(
                    " of matrix {m}, which has {}",
                    crate::report::plural(u64::from(m.cells), "cell")
                )
            }),
        });
    }
    if named_in_header {
        merged.matrix = matrix.map(|(_, m)| m);
    }
    let unequal = unequal_plans(
        runs.iter()
            .zip(&origins)
            .map(|(r, o)| (r, Some(o.as_str()))),
        "shards run with different -n?",
    );
    merged.runs = runs;
    sort_runs(&mut merged);
    let mut notes = Vec::new();
    if !unhashed.is_empty() {
        notes.push(format!(
            "{} recorded no scenario hash (results of an older crashrig): whether every shard \
             ran the same scenario contents could not be checked (parameter values and \
             kernels were).",
            unhashed.join(", ")
        ));
    }
    notes.extend(unequal);
    Ok(Merged {
        results: merged,
        notes,
    })
}

/// Notes on cells of one scenario (and parameter values) that were to run different numbers
/// of iterations, each run given with the shard it came from (a merge) or not (a matrix's
/// own results, after a `--resume` with another `-n`); `why` is the likely cause. Their
/// rates are compared as they are, and the reader should know.
pub fn unequal_plans<'a>(
    runs: impl IntoIterator<Item = (&'a RunRecord, Option<&'a str>)>,
    why: &str,
) -> Vec<String> {
    let mut planned: BTreeMap<String, (Vec<String>, std::collections::BTreeSet<u32>)> =
        BTreeMap::new();
    for (run, from) in runs {
        let (Some(cell), Some(n)) = (&run.cell, run.iterations_planned) else {
            continue;
        };
        let group = super::model::cell_id("", &cell.scenario, &cell.params);
        let (named, counts) = planned
            .entry(group.trim_start_matches('/').to_string())
            .or_default();
        named.push(match from {
            Some(shard) => format!("{n} in {shard} (`{}`)", cell.id),
            None => format!("{n} (`{}`)", cell.id),
        });
        counts.insert(n);
    }
    planned
        .into_iter()
        .filter(|(_, (_, counts))| counts.len() > 1)
        .map(|(group, (named, _))| {
            format!(
                "cells of `{group}` were to run different numbers of iterations: {} ({why}); \
                 their rates are compared as they are.",
                named.join(", ")
            )
        })
        .collect()
}

/// Puts matrix runs in expansion order (runs without a cell keep their order, last); the
/// writer calls it after each cell, since parallel cells finish in any order.
pub fn sort_runs(results: &mut Results) {
    results
        .runs
        .sort_by_key(|r| r.cell.as_ref().map_or(u32::MAX, |c| c.index));
}

/// Expansion positions of the matrix that no run covers (a shard that never ran, or cells
/// still pending), from the runs' own cell info.
pub fn missing_cells(results: &Results) -> Vec<u32> {
    let cells: Vec<&CellInfo> = results
        .runs
        .iter()
        .filter_map(|r| r.cell.as_ref())
        .collect();
    let Some(total) = cells.iter().map(|c| c.total).max() else {
        return Vec::new();
    };
    // `total` comes from files: never count further than a matrix can hold.
    let total = total.min(super::model::MAX_CELLS as u32);
    let present: std::collections::BTreeSet<u32> = cells.iter().map(|c| c.index).collect();
    (0..total).filter(|i| !present.contains(i)).collect()
}

/// Why `existing` (the results.json of a `--resume`) is not an earlier run of matrix `name`:
/// it holds a run that is no matrix cell (a `crashrig run`'s), or a run or header of another
/// matrix. Resuming would drop those runs from results.json. None when it is this matrix's
/// (its file may have changed meanwhile: the digest is not compared).
pub fn not_this_matrix(existing: &Results, name: &str) -> Option<String> {
    if let Some(m) = existing.matrix.as_ref().filter(|m| m.name != name) {
        return Some(format!("it holds results of matrix `{}`", m.name));
    }
    existing
        .runs
        .iter()
        .enumerate()
        .find_map(|(i, run)| match &run.cell {
            None => Some(format!(
                "its run {} (`{}` on {}) is not a matrix cell (results of `crashrig run`?)",
                i + 1,
                run.scenario.name,
                run.kernel.spec
            )),
            Some(c) if c.matrix != name => Some(format!(
                "its run {} is cell `{}` of matrix `{}`",
                i + 1,
                c.id,
                c.matrix
            )),
            Some(_) => None,
        })
}

/// The run `results` holds for the cell `id`, finished or not (a killed matrix's).
pub fn run_for_cell<'a>(results: &'a Results, id: &str) -> Option<&'a RunRecord> {
    results
        .runs
        .iter()
        .find(|r| r.cell.as_ref().is_some_and(|c| c.id == id))
}

/// Whether `existing` holds a finished run of this cell.
fn finished(existing: &Results, id: &str) -> bool {
    existing
        .runs
        .iter()
        .any(|r| r.finished.is_some() && r.cell.as_ref().is_some_and(|c| c.id == id))
}

/// The cells still to run when resuming: those without a finished run in `existing`
/// (matched by cell id; a run killed midway has no `finished` and runs again).
pub fn pending_cells(cells: &[Cell], existing: &Results) -> Vec<Cell> {
    cells
        .iter()
        .filter(|c| !finished(existing, &c.id()))
        .cloned()
        .collect()
}

/// What a resume says of the finished runs it keeps for `cells` that made another number of
/// iterations than a cell plans now (`iterations`: `-n`, else the matrix file's; a cell's own
/// count beats neither): they are kept as they are, and the table would otherwise show
/// counts nobody asked for without a word. None when every kept run matches, or nothing is
/// asked (each scenario's own count).
pub fn kept_with_other_counts(
    cells: &[Cell],
    existing: &Results,
    iterations: Option<u32>,
) -> Option<String> {
    let mut odd = Vec::new();
    let mut want = None;
    for cell in cells {
        let Some(n) = iterations.or(cell.iterations) else {
            continue;
        };
        let id = cell.id();
        let Some(run) = existing
            .runs
            .iter()
            .find(|r| r.finished.is_some() && r.cell.as_ref().is_some_and(|c| c.id == id))
        else {
            continue;
        };
        let made = run
            .iterations_planned
            .unwrap_or(run.iterations.len() as u32);
        if made != n {
            odd.push(format!("{id} ({made})"));
            want = Some(n);
        }
    }
    let n = want?;
    Some(format!(
        "kept finished {} planned with another iteration count than the {n} asked now: {}; \
         --resume keeps them as they are (a new --out runs every cell with {n})",
        if odd.len() == 1 { "cell" } else { "cells" },
        odd.join(", ")
    ))
}

/// The finished runs of `existing` that belong to `cells`, with their cell info refreshed
/// from the current expansion (positions change when the matrix file changed); the resumed
/// results start from these.
pub fn finished_runs(cells: &[Cell], existing: &Results) -> Vec<RunRecord> {
    let mut runs = Vec::new();
    for cell in cells {
        let id = cell.id();
        if let Some(run) = existing
            .runs
            .iter()
            .find(|r| r.finished.is_some() && r.cell.as_ref().is_some_and(|c| c.id == id))
        {
            let mut run = run.clone();
            run.cell = Some(cell.info());
            runs.push(run);
        }
    }
    runs
}

/// The results a resume starts from: `existing` with only the finished runs of `cells`, each
/// with its cell info (position, digest, total) of the current expansion; and the ids of the
/// runs left out (cells no longer in the matrix file, or unfinished).
pub fn resumed_results(cells: &[Cell], existing: &Results) -> (Results, Vec<String>) {
    let mut kept = existing.clone();
    kept.runs = finished_runs(cells, existing);
    let left_out = existing
        .runs
        .iter()
        .filter_map(|r| r.cell.as_ref())
        .filter(|c| {
            !kept
                .runs
                .iter()
                .any(|k| k.cell.as_ref().is_some_and(|kc| kc.id == c.id))
        })
        .map(|c| c.id.clone())
        .collect();
    (kept, left_out)
}

#[cfg(test)]
mod tests {
    use super::super::partition::Partition;
    use super::super::testutil::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn merged_shards_equal_the_unsharded_run() {
        let (_, all) = unsharded();
        for count in 1..=4 {
            let shards = (1..=count)
                .map(|index| shard(&all, Partition { index, count }))
                .collect();
            let merged = merge_results(shards).unwrap();
            assert_eq!(merged, all, "{count} shards");
            assert!(missing_cells(&merged).is_empty());
        }
    }

    proptest! {
        #[test]
        fn merge_equals_unsharded_for_any_shard_count(count in 1u32..=8) {
            let (_, all) = unsharded();
            let shards = (1..=count).map(|index| shard(&all, Partition { index, count })).collect();
            prop_assert_eq!(merge_results(shards).unwrap(), all);
        }
    }

    #[test]
    fn empty_shards_merge_and_the_host_comes_from_a_shard_that_ran() {
        // 8 cells in 10 shards: shards 9 and 10 have no cell (`--partition 9/10`).
        let (_, mut all) = unsharded();
        all.host.accel = "kvm".into();
        let count = 10;
        let mut shards: Vec<Results> = (1..=count)
            .map(|index| shard(&all, Partition { index, count }))
            .collect();
        for s in &mut shards[8..] {
            assert!(s.runs.is_empty());
            s.host = Default::default();
        }
        shards.rotate_right(2);
        assert_eq!(merge_results(shards).unwrap(), all);
    }

    /// Empty shards name their matrix: merging only empty shards is no result, and an empty
    /// shard of another matrix is refused like any shard of it.
    #[test]
    fn empty_shards_carry_their_matrix_and_alone_merge_to_an_error() {
        let (cells, all) = unsharded();
        let id = MatrixId::of(&cells[0].info());
        let mut empty = results(Vec::new());
        empty.matrix = Some(id.clone());
        let err = merge_checked(vec![
            ("e1".to_string(), empty.clone()),
            ("e2".to_string(), empty.clone()),
        ])
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            format!(
                "merge e1, e2: no shard holds a run of a cell of matrix `seed` ({}), which has \
                 8 cells; every shard given is empty (a partition past the end of the matrix), \
                 so the shards that ran cells are missing",
                id.digest
            )
        );
        // Older empty shards name no matrix: still no result.
        assert!(matches!(
            merge_results(vec![results(Vec::new())]),
            Err(MergeError::NoCells { .. })
        ));
        // An empty shard of another matrix.
        let other = matrix("name: other\nkernels: [debian:6.1]\nscenarios: [x.yaml]\n").cells();
        let mut foreign = results(Vec::new());
        foreign.matrix = Some(MatrixId::of(&other[0].info()));
        let err = merge_checked(vec![
            (
                "s1".to_string(),
                shard(&all, Partition { index: 1, count: 1 }),
            ),
            ("e".to_string(), foreign),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("merge e: it is from matrix `other` ("),
            "{err}"
        );
        // The empty shard of this matrix merges, and the merged header names the matrix.
        let merged = merge_checked(vec![
            (
                "s1".to_string(),
                shard(&all, Partition { index: 1, count: 1 }),
            ),
            ("e".to_string(), empty),
        ])
        .unwrap();
        assert_eq!(merged.results.matrix, Some(id));
        assert_eq!(merged.results.runs, all.runs);
    }

    #[test]
    fn header_spans_all_shards() {
        let (_, all) = unsharded();
        let mut a = shard(&all, Partition { index: 1, count: 2 });
        let mut b = shard(&all, Partition { index: 2, count: 2 });
        a.started = "2026-11-25T10:05:00Z".into();
        b.started = "2026-11-25T10:01:00Z".into();
        b.finished = Some("2026-11-25T12:00:00Z".into());
        let merged = merge_results(vec![a.clone(), b.clone()]).unwrap();
        assert_eq!(merged.started, "2026-11-25T10:01:00Z");
        assert_eq!(merged.finished.as_deref(), Some("2026-11-25T12:00:00Z"));
        b.finished = None;
        assert_eq!(merge_results(vec![a, b]).unwrap().finished, None);
    }

    #[test]
    fn rejects_duplicates_foreign_runs_and_other_matrices() {
        let (_, all) = unsharded();
        let one = shard(&all, Partition { index: 1, count: 2 });
        let err = merge_results(vec![one.clone(), one.clone()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            // The shard lists its runs in reverse (see `shard`): the first repeat is the last cell.
            "merge shard 2: cell `debian-6.12/control-psync/filesystem=xfs` is also in shard 1"
        );

        let mut plain = one.clone();
        plain.runs[0].cell = None;
        assert!(matches!(
            merge_results(vec![plain]),
            Err(MergeError::NotACell { .. })
        ));

        let other =
            matrix("name: other\nkernels: [debian:6.1]\nscenarios: [seed-kill-umount.yaml]\n");
        let foreign = results(vec![run_for(&other.cells()[0], 2, 0)]);
        let err = merge_results(vec![one.clone(), foreign]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("merge shard 2: it is from matrix `other` ("),
            "{err}"
        );
        assert!(matches!(merge_results(vec![]), Err(MergeError::Empty)));
    }

    /// Shards whose cells ran another scenario content, other parameter values, or another
    /// kernel behind a label would compare the edit, not the kernels: refused, naming both.
    #[test]
    fn shards_that_ran_different_scenarios_or_kernels_are_refused() {
        let m = matrix("name: c\nkernels: [debian:6.1, debian:6.12]\nscenarios: [coin.yaml]\n");
        let c = m.cells();
        let named = |a: RunRecord, b: RunRecord| {
            vec![
                ("s1".to_string(), results(vec![a])),
                ("s2".to_string(), results(vec![b])),
            ]
        };
        // Same scenario, same kernels: merges.
        let ok = merge_checked(named(run_for(&c[0], 4, 4), run_for(&c[1], 4, 0))).unwrap();
        assert_eq!(ok.notes, Vec::<String>::new());

        // The scenario's parameter default changed between the shard jobs.
        let mut a = run_for(&c[0], 4, 4);
        a.setting.insert("pct".into(), "100".into());
        let mut b = run_for(&c[1], 4, 0);
        b.setting.insert("pct".into(), "0".into());
        let err = merge_checked(named(a, b)).unwrap_err().to_string();
        assert_eq!(
            err,
            "merge s2: scenario `coin` ran with pct=0 here (cell `debian-6.12/coin`), but with \
             pct=100 in s1 (cell `debian-6.1/coin`); the shards must run the same matrix file, \
             scenario files, --param values and kernels (rerun the shards that differ)"
        );

        // The scenario file changed otherwise.
        let a = run_for(&c[0], 4, 4);
        let mut b = run_for(&c[1], 4, 0);
        b.scenario.sha256 = Some("0123456789abcdef0123".into());
        let err = merge_checked(named(a, b)).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "merge s2: scenario `coin` ran with other contents here (cell \
                 `debian-6.12/coin`, sha256 0123456789ab) than in s1 (cell `debian-6.1/coin`"
            ),
            "{err}"
        );

        // A label that stands for another kernel in one shard.
        let relabeled = matrix(
            "name: c\nkernels: [debian:6.1, {spec: debian:6.1, label: debian-6.12}]\n\
             scenarios: [coin.yaml, pass.yaml]\n",
        )
        .cells();
        let full = matrix(
            "name: c\nkernels: [debian:6.1, debian:6.12]\nscenarios: [coin.yaml, pass.yaml]\n",
        )
        .cells();
        let err = merge_checked(named(run_for(&full[3], 4, 0), run_for(&relabeled[2], 4, 0)))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "merge s2: kernel label `debian-6.12` ran debian:6.1 (debian:6.1-test) here \
                 (cell `debian-6.12/coin`), but debian:6.12 (debian:6.12-test) in s1"
            ),
            "{err}"
        );

        // Results of an older crashrig record no hash: merged, and said.
        let mut a = run_for(&c[0], 4, 4);
        a.scenario.sha256 = None;
        let old = merge_checked(named(a, run_for(&c[1], 4, 0))).unwrap();
        assert_eq!(
            old.notes,
            [
                "s1 recorded no scenario hash (results of an older crashrig): whether every shard \
              ran the same scenario contents could not be checked (parameter values and \
              kernels were)."
            ]
        );
    }

    #[test]
    fn shards_run_with_different_iteration_counts_are_said() {
        let m = matrix("name: c\nkernels: [debian:6.1, debian:6.12]\nscenarios: [slow.yaml]\n");
        let c = m.cells();
        let mut cut = run_for(&c[0], 15, 9);
        cut.iterations_planned = Some(30);
        cut.finished = None;
        let merged = merge_checked(vec![
            ("s1".to_string(), results(vec![cut])),
            ("s2".to_string(), results(vec![run_for(&c[1], 3, 0)])),
        ])
        .unwrap();
        assert_eq!(
            merged.notes,
            [
                "cells of `slow` were to run different numbers of iterations: 30 in s1 \
              (`debian-6.1/slow`), 3 in s2 (`debian-6.12/slow`) (shards run with different \
              -n?); their rates are compared as they are."
            ]
        );
        // The cell stays unfinished (summary.md and junit-cells.xml mark it).
        assert_eq!(merged.results.runs[0].finished, None);
    }

    #[test]
    fn missing_shard_shows_as_missing_cells() {
        let (_, all) = unsharded();
        let merged = merge_results(vec![shard(&all, Partition { index: 2, count: 3 })]).unwrap();
        let missing = missing_cells(&merged);
        assert_eq!(missing.len(), 8 - 3);
        assert!(missing.iter().all(|i| i % 3 != 1));
    }

    #[test]
    fn resume_skips_finished_cells_only() {
        let (cells, all) = unsharded();
        let mut existing = all.clone();
        existing.runs.truncate(3);
        existing.runs[2].finished = None; // killed midway
        let pending: Vec<usize> = pending_cells(&cells, &existing)
            .iter()
            .map(|c| c.index)
            .collect();
        assert_eq!(pending, (2..8).collect::<Vec<_>>());
        let kept = finished_runs(&cells, &existing);
        assert_eq!(kept, all.runs[..2].to_vec());

        // The kernels were reordered: kept runs get their new positions.
        let grown = matrix(
            "name: seed\niterations: 4\nkernels: [debian:6.12, debian:6.1]\n\
             scenarios: [seed-kill-umount.yaml, control-psync.yaml]\n\
             parameters: { filesystem: [xfs, ext4] }\n",
        )
        .cells();
        let kept = finished_runs(&grown, &existing);
        let positions: Vec<u32> = kept
            .iter()
            .map(|r| r.cell.as_ref().unwrap().index)
            .collect();
        assert_eq!(positions, [4, 5]);
        assert_eq!(pending_cells(&grown, &existing).len(), 6);
    }

    #[test]
    fn resume_refuses_results_of_a_plain_run_or_another_matrix() {
        let (_, all) = unsharded();
        assert_eq!(not_this_matrix(&all, "seed"), None);
        let mut plain = all.clone();
        plain.runs[1].cell = None;
        assert_eq!(
            not_this_matrix(&plain, "seed").as_deref(),
            Some(
                "its run 2 (`seed-kill-umount` on debian:6.1) is not a matrix cell (results of \
                 `crashrig run`?)"
            )
        );
        let other =
            matrix("name: other\nkernels: [debian:6.1]\nscenarios: [seed-kill-umount.yaml]\n");
        let foreign = results(vec![run_for(&other.cells()[0], 2, 2)]);
        assert_eq!(
            not_this_matrix(&foreign, "seed").as_deref(),
            Some("its run 1 is cell `debian-6.1/seed-kill-umount` of matrix `other`")
        );
        let mut empty_other = results(Vec::new());
        empty_other.matrix = Some(MatrixId::of(&other.cells()[0].info()));
        assert_eq!(
            not_this_matrix(&empty_other, "seed").as_deref(),
            Some("it holds results of matrix `other`")
        );
    }

    /// A resume with nothing left to run still takes the new positions and digest, and
    /// leaves out cells no longer in the matrix file (F19).
    #[test]
    fn a_resume_with_nothing_to_run_refreshes_positions_and_drops_removed_cells() {
        let (_, all) = unsharded();
        let reordered = matrix(
            "name: seed\niterations: 4\nkernels: [debian:6.12]\n\
             scenarios: [control-psync.yaml, seed-kill-umount.yaml]\n\
             parameters: { filesystem: [xfs, ext4] }\n",
        )
        .cells();
        assert!(pending_cells(&reordered, &all).is_empty());
        let (kept, left_out) = resumed_results(&reordered, &all);
        assert_eq!(kept.runs.len(), 4);
        for (run, cell) in kept.runs.iter().zip(&reordered) {
            assert_eq!(run.cell.as_ref(), Some(&cell.info()));
        }
        assert_eq!(left_out.len(), 4);
        assert!(left_out.iter().all(|id| id.starts_with("debian-6.1/")));
    }

    #[test]
    fn sorts_runs_into_expansion_order() {
        let (_, all) = unsharded();
        let mut shuffled = all.clone();
        shuffled.runs.rotate_left(3);
        sort_runs(&mut shuffled);
        assert_eq!(shuffled, all);
    }

    /// `--resume -n 10` of a matrix whose cells finished with 6 said nothing: "every cell has
    /// finished", and the table showed 6 iterations a cell.
    #[test]
    fn a_resume_names_kept_cells_planned_with_another_count() {
        let m = matrix("name: c\nkernels: [debian:6.1, debian:6.12]\nscenarios: [coin.yaml]\n");
        let cells = m.cells();
        let existing = results(vec![run_for(&cells[0], 6, 1), run_for(&cells[1], 10, 0)]);
        assert_eq!(
            kept_with_other_counts(&cells, &existing, Some(10)).as_deref(),
            Some(
                "kept finished cell planned with another iteration count than the 10 asked \
                 now: debian-6.1/coin (6); --resume keeps them as they are (a new --out runs \
                 every cell with 10)"
            )
        );
        assert_eq!(kept_with_other_counts(&cells, &existing, None), None);
        let same = results(vec![run_for(&cells[0], 10, 1)]);
        assert_eq!(kept_with_other_counts(&cells, &same, Some(10)), None);
    }
}
