//! Baselines: known results per kernel, scenario and parameters, so CI fails on changes
//! rather than on bugs everyone already knows about.
//!
//! A regression is a failure rate significantly higher than the baseline's (Fisher's exact
//! test, one-sided, corrected over every cell with a known rate, at [`ALPHA`]), unless
//! the baseline marks the cell `known_failure`, or an unexpected dmesg finding whose signature
//! the baseline does not list for that cell. The correction is what keeps a large matrix of
//! cells that fail sometimes green while nothing changed: tested one by one at 0.05, forty
//! unchanged cells would turn up a "regression" in most runs ([`rate_verdicts`], `matrix::sim`).
//! A cell the baseline does not mention (or whose entry records no `iterations` and is not a
//! known failure) is judged as having no known failures: any failed iteration is a
//! regression, so a mistyped label cannot turn a failing matrix green. [`judge`] names those
//! cells and the baseline entries that match no cell (a typo, or cells of another shard).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::compare::{RunKey, ALPHA};
use super::significance::{fisher_exact_greater, fisher_greater_floor, format_p, tarone_holm};
use crate::report::{Results, RunRecord};

/// Bumped when a baseline field changes meaning.
pub const BASELINE_SCHEMA: u32 = 1;

/// The baseline file (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Default: 1.
    #[serde(default = "schema")]
    pub schema: u32,
    pub cells: Vec<BaselineCell>,
}

fn schema() -> u32 {
    BASELINE_SCHEMA
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineCell {
    /// Kernel label as in cell ids (for plain runs: the kernel spec).
    pub kernel: String,
    /// Scenario key (the file stem; for plain runs: the scenario name).
    pub scenario: String,
    /// Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// Judged iterations the rate was measured over. Default: 0 (no rate check).
    #[serde(default)]
    pub iterations: u32,
    /// Expected failure rate, 0 to 1. Default: 0.
    #[serde(default)]
    pub failure_rate: f64,
    /// The cell is known to fail: its rate is not checked. Default: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub known_failure: bool,
    /// Known unexpected-finding signatures. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
}

impl BaselineCell {
    fn key(&self) -> RunKey {
        RunKey {
            kernel: self.kernel.clone(),
            scenario: self.scenario.clone(),
            params: self.params.clone(),
        }
    }

    /// Failures the rate stands for over `iterations` (rates written by crashrig are exact).
    pub fn failures(&self) -> u32 {
        let f = (self.failure_rate.clamp(0.0, 1.0) * f64::from(self.iterations)).round();
        (f as u32).min(self.iterations)
    }
}

#[derive(Debug, Error)]
pub enum BaselineError {
    #[error("read baseline {}: schema {found}, this crashrig reads {BASELINE_SCHEMA}", path.display())]
    Schema { path: PathBuf, found: u32 },
    #[error(
        "read baseline {}: entry `{cell}` has failure_rate {rate}; a rate is a fraction \
         from 0 to 1 (0.25 is 25%)",
        path.display()
    )]
    Rate {
        path: PathBuf,
        cell: String,
        rate: f64,
    },
}

impl Baseline {
    /// The baseline read from `path`, when its schema is the one this crashrig reads.
    pub fn checked(self, path: &Path) -> Result<Baseline, BaselineError> {
        if self.schema != BASELINE_SCHEMA {
            return Err(BaselineError::Schema {
                path: path.to_path_buf(),
                found: self.schema,
            });
        }
        if let Some(bad) = self
            .cells
            .iter()
            .find(|c| !(0.0..=1.0).contains(&c.failure_rate))
        {
            return Err(BaselineError::Rate {
                path: path.to_path_buf(),
                cell: bad.key().id(),
                rate: bad.failure_rate,
            });
        }
        Ok(self)
    }
}

/// A baseline recording what `results` measured: every run's judged iterations, failure
/// rate and unexpected finding signatures. Mark cells `known_failure` by hand.
pub fn baseline_from(results: &Results) -> Baseline {
    let cells = results
        .runs
        .iter()
        .map(|run| {
            let key = RunKey::of(run);
            let s = &run.summary;
            // Setup's kernel log counts too: its findings are the cell's (`judge` checks them).
            let mut findings: Vec<String> = s
                .findings
                .iter()
                .filter(|f| !f.expected)
                .map(|f| f.signature.clone())
                .chain(setup_findings(run).into_iter().map(|g| g.signature))
                .collect();
            findings.sort();
            findings.dedup();
            BaselineCell {
                kernel: key.kernel,
                scenario: key.scenario,
                params: key.params,
                iterations: s.iterations - s.errors,
                failure_rate: s.failure_rate,
                known_failure: false,
                findings,
            }
        })
        .collect();
    Baseline {
        schema: BASELINE_SCHEMA,
        cells,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "regression", rename_all = "kebab-case")]
pub enum Regression {
    /// The failure rate rose significantly over the baseline's.
    RateIncrease {
        cell: String,
        baseline_failed: u32,
        baseline_iterations: u32,
        failed: u32,
        judged: u32,
        /// Fisher's exact test, one-sided (greater).
        p_value: f64,
        /// Significant below `ALPHA / corrected_for`, Tarone-Holm over the `family` cells
        /// with a known rate ([`rate_verdicts`]).
        corrected_for: usize,
        family: usize,
    },
    /// A cell with failed iterations that the baseline gives no known failures for: it has
    /// no entry, or its entry records no `iterations` (and is not `known_failure`).
    Unbaselined {
        cell: String,
        failed: u32,
        judged: u32,
        /// The cell has an entry, without `iterations`.
        entry_without_iterations: bool,
    },
    /// An unexpected finding the baseline does not know for this cell.
    NewFinding {
        cell: String,
        signature: String,
        kind: String,
        title: String,
        count: u32,
        /// Found in setup's kernel log (charged to no iteration), not an iteration's.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        in_setup: bool,
    },
}

impl Regression {
    /// The id of the cell regressed.
    pub fn cell(&self) -> &str {
        match self {
            Regression::RateIncrease { cell, .. }
            | Regression::Unbaselined { cell, .. }
            | Regression::NewFinding { cell, .. } => cell,
        }
    }
}

impl fmt::Display for Regression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Regression::RateIncrease {
                cell,
                baseline_failed,
                baseline_iterations,
                failed,
                judged,
                p_value,
                corrected_for,
                family,
            } => write!(
                f,
                "{cell}: failure rate rose from {baseline_failed}/{baseline_iterations} to \
                 {failed}/{judged}, {}",
                corrected_p(*p_value, *corrected_for, *family)
            ),
            Regression::Unbaselined {
                cell,
                failed,
                judged,
                entry_without_iterations,
            } => write!(
                f,
                "{cell}: {failed} of {judged} iterations failed, and {}, so no failure is known",
                if *entry_without_iterations {
                    "the baseline's entry for it records no `iterations` (and no `known_failure`)"
                } else {
                    "the baseline has no entry for it"
                }
            ),
            Regression::NewFinding {
                cell,
                signature,
                kind,
                count,
                in_setup,
                ..
            } => write!(
                f,
                "{cell}: new {kind} finding `{signature}` ({count} times{})",
                if *in_setup {
                    ", in setup's kernel log"
                } else {
                    ""
                }
            ),
        }
    }
}

/// `p = 0.0069`, and with more than one cell tested `p = 0.0069 (< 0.05/3: Tarone-Holm over
/// 12 cells with a known rate)`.
fn corrected_p(raw: f64, corrected_for: usize, family: usize) -> String {
    if family > 1 {
        format!(
            "{} (< {ALPHA}/{corrected_for}: Tarone-Holm over {family} cells with a known rate)",
            format_p(raw)
        )
    } else {
        format_p(raw)
    }
}

/// What checking results against a baseline found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Judgement {
    /// In run order.
    pub regressions: Vec<Regression>,
    /// Ids of runs the baseline has no entry for (judged as having no known failures).
    pub unchecked: Vec<String>,
    /// Ids of runs whose entry records no `iterations` and no `known_failure` (judged as
    /// having no known failures).
    pub without_iterations: Vec<String>,
    /// Baseline entries (as cell ids) that match no run: a typo in a label or scenario, or a
    /// cell these results do not hold (another shard's).
    pub unmatched: Vec<String>,
    /// Ids of runs with failed iterations that are no regression: failures the baseline
    /// knows (JUnit marks them known, not failed, as the exit code does).
    pub known: Vec<String>,
    /// Cells doing significantly better than the baseline, or a `known_failure` cell with no
    /// failure: the entry is stale and would hide the bug's return. One line each.
    pub improvements: Vec<String>,
    /// Cells whose rate rose with a raw p below [`ALPHA`] that the correction over the
    /// cells with a known rate does not hold significant: no regression, but a lead worth
    /// more iterations. One line each.
    pub unconfirmed_rises: Vec<String>,
}

/// One cell with a known rate: the baseline's failures of its iterations, and this run's
/// failures of its judged iterations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateCounts {
    pub baseline_failed: u32,
    pub baseline_iterations: u32,
    pub failed: u32,
    pub judged: u32,
}

/// What the rate tests of one cell say: one-sided Fisher p-values for a rise and for a fall,
/// and, when significant over every cell given to [`rate_verdicts`] (each direction its own
/// family, Tarone-Holm), the number of tests corrected for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateVerdict {
    pub rise: f64,
    pub rise_corrected_for: Option<usize>,
    pub fall: f64,
    pub fall_corrected_for: Option<usize>,
}

impl RateVerdict {
    /// A regression: the rise is significant after the correction.
    pub fn regressed(&self) -> bool {
        self.rise_corrected_for.is_some()
    }
    /// A lead, not a regression: significant alone, not after the correction.
    pub fn unconfirmed_rise(&self) -> bool {
        self.rise < ALPHA && !self.regressed()
    }
    pub fn improved(&self) -> bool {
        self.fall_corrected_for.is_some()
    }
}

/// The rate tests of `cells` (same order), corrected for their number so that the chance of
/// any regression among cells whose rate did not change stays under [`ALPHA`] however many
/// cells a matrix has (and likewise for improvements). The correction is Holm's, counting
/// only the cells whose counts could be significant at all (Tarone's; a cell that failed
/// in none of its iterations before and now cannot show a rise). With Fisher's discrete
/// tests that matters: a rise from 10% to 60% in one of 40 cells at 10% (20 iterations each)
/// was found in 55% of simulated matrices by plain Holm, in 80% by this rule.
pub fn rate_verdicts(cells: &[RateCounts]) -> Vec<RateVerdict> {
    let table = |c: &RateCounts, up: bool| {
        let now = [u64::from(c.failed), u64::from(c.judged - c.failed)];
        let before = [
            u64::from(c.baseline_failed),
            u64::from(c.baseline_iterations - c.baseline_failed),
        ];
        let (a, b) = if up { (now, before) } else { (before, now) };
        [a[0], a[1], b[0], b[1]]
    };
    let direction = |up: bool| {
        let tables: Vec<[u64; 4]> = cells.iter().map(|c| table(c, up)).collect();
        let p: Vec<f64> = tables
            .iter()
            .map(|t| fisher_exact_greater(t[0], t[1], t[2], t[3]))
            .collect();
        let floor: Vec<f64> = tables
            .iter()
            .map(|t| fisher_greater_floor(t[0], t[1], t[2], t[3]))
            .collect();
        let corrected = tarone_holm(&p, &floor, ALPHA);
        (p, corrected)
    };
    let (rise, rise_k) = direction(true);
    let (fall, fall_k) = direction(false);
    (0..cells.len())
        .map(|i| RateVerdict {
            rise: rise[i],
            rise_corrected_for: rise_k[i],
            fall: fall[i],
            fall_corrected_for: fall_k[i],
        })
        .collect()
}

/// The regressions of `results` against `baseline`, in run order (see [`judge`]).
pub fn check(results: &Results, baseline: &Baseline) -> Vec<Regression> {
    judge(results, baseline).regressions
}

/// Checks every run of `results` against `baseline`. A run without an entry is judged
/// against an entry of no known failures, as is one whose entry has no `iterations` (and is
/// not `known_failure`): any failed iteration or unexpected finding is a regression.
pub fn judge(results: &Results, baseline: &Baseline) -> Judgement {
    let mut out = Judgement::default();
    let none = BaselineCell {
        kernel: String::new(),
        scenario: String::new(),
        params: BTreeMap::new(),
        iterations: 0,
        failure_rate: 0.0,
        known_failure: false,
        findings: Vec::new(),
    };
    // The cells with a known rate are tested together (see `rate_verdicts`).
    let entries: Vec<Option<&BaselineCell>> = results
        .runs
        .iter()
        .map(|run| {
            let key = RunKey::of(run);
            baseline.cells.iter().find(|b| b.key() == key)
        })
        .collect();
    let counts: Vec<Option<RateCounts>> = results
        .runs
        .iter()
        .zip(&entries)
        .map(|(run, entry)| {
            let base = entry.unwrap_or(&none);
            let s = &run.summary;
            let judged = s.iterations - s.errors;
            (!base.known_failure && judged > 0 && base.iterations > 0).then(|| RateCounts {
                baseline_failed: base.failures(),
                baseline_iterations: base.iterations,
                failed: s.failed,
                judged,
            })
        })
        .collect();
    let tested: Vec<RateCounts> = counts.iter().flatten().copied().collect();
    let family = tested.len();
    let mut verdicts = rate_verdicts(&tested).into_iter();
    let rated: Vec<Option<(RateCounts, RateVerdict)>> = counts
        .into_iter()
        .map(|c| c.and_then(|c| verdicts.next().map(|v| (c, v))))
        .collect();
    for ((run, entry), rated) in results.runs.iter().zip(entries).zip(rated) {
        let key = RunKey::of(run);
        let base = entry.unwrap_or(&none);
        let no_rate = !base.known_failure && base.iterations == 0;
        if entry.is_none() {
            out.unchecked.push(key.id());
        } else if no_rate {
            out.without_iterations.push(key.id());
        }
        let s = &run.summary;
        let judged = s.iterations - s.errors;
        if no_rate && s.failed > 0 {
            out.regressions.push(Regression::Unbaselined {
                cell: key.id(),
                failed: s.failed,
                judged,
                entry_without_iterations: entry.is_some(),
            });
        }
        if judged > 0 && base.known_failure && s.failed == 0 {
            out.improvements.push(format!(
                "{}: marked known_failure, but none of {judged} iterations failed; if the bug is \
                 fixed, drop known_failure so its return is a regression",
                key.id()
            ));
        }
        if let Some((c, v)) = rated {
            let change = format!(
                "{}/{} to {}/{}",
                c.baseline_failed, c.baseline_iterations, c.failed, c.judged
            );
            if v.regressed() {
                out.regressions.push(Regression::RateIncrease {
                    cell: key.id(),
                    baseline_failed: c.baseline_failed,
                    baseline_iterations: c.baseline_iterations,
                    failed: c.failed,
                    judged: c.judged,
                    p_value: v.rise,
                    corrected_for: v.rise_corrected_for.unwrap_or(1),
                    family,
                });
            } else if v.unconfirmed_rise() {
                out.unconfirmed_rises.push(format!(
                    "{}: failure rate rose from {change}, {} alone, but not significant \
                     corrected for the {family} cells with a known rate (Tarone-Holm), so no \
                     regression; more iterations of this cell would tell",
                    key.id(),
                    format_p(v.rise)
                ));
            }
            if v.improved() {
                out.improvements.push(format!(
                    "{}: failure rate fell from {change}, {}; update the baseline \
                     (--write-baseline) so a return to the old rate is a regression",
                    key.id(),
                    corrected_p(v.fall, v.fall_corrected_for.unwrap_or(1), family)
                ));
            }
        }
        for f in s.findings.iter().filter(|f| !f.expected) {
            if !base.findings.contains(&f.signature) {
                out.regressions.push(Regression::NewFinding {
                    cell: key.id(),
                    signature: f.signature.clone(),
                    kind: f.kind.clone(),
                    title: f.title.clone(),
                    count: f.count,
                    in_setup: false,
                });
            }
        }
        // Setup's kernel log is judged as an iteration's (`crashrig run` fails on it): a
        // finding there the baseline does not list is as new as one in an iteration.
        for g in setup_findings(run) {
            if !base.findings.contains(&g.signature) {
                out.regressions.push(Regression::NewFinding {
                    cell: key.id(),
                    kind: g.kind.to_string(),
                    title: g.first.title,
                    count: g.count as u32,
                    signature: g.signature,
                    in_setup: true,
                });
            }
        }
        let id = key.id();
        let regressed = out.regressions.iter().any(|r| r.cell() == id);
        if run.failed() && !regressed {
            out.known.push(id);
        }
    }
    let keys: Vec<RunKey> = results.runs.iter().map(RunKey::of).collect();
    out.unmatched = baseline
        .cells
        .iter()
        .map(BaselineCell::key)
        .filter(|k| !keys.contains(k))
        .map(|k| k.id())
        .collect();
    out
}

/// The unexpected findings of `run`'s setup kernel log, grouped by signature (the first
/// seen, with how often it was found).
fn setup_findings(run: &RunRecord) -> Vec<crate::outcome::FindingGroup> {
    crate::outcome::group(
        run.setup_dmesg
            .iter()
            .flat_map(|d| d.findings.iter())
            .filter(|f| !f.expected),
    )
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::report::{summarize, RunRecord};

    fn cells() -> Vec<crate::matrix::Cell> {
        matrix("name: b\nkernels: [debian:6.1, debian:6.12]\nscenarios: [seed.yaml]\n").cells()
    }

    fn with_findings(mut run: RunRecord, signatures: &[&str]) -> RunRecord {
        for (i, sig) in signatures.iter().enumerate() {
            run.iterations[i].findings.push(finding(sig));
        }
        run.summary = summarize(&run.iterations);
        run
    }

    #[test]
    fn baseline_records_rates_and_finding_signatures() {
        let c = cells();
        let r = results(vec![
            with_findings(
                run_for(&c[0], 20, 6),
                &["xfs_inode_evict", "xfs_inode_evict"],
            ),
            run_for(&c[1], 20, 3),
        ]);
        let b = baseline_from(&r);
        assert_eq!(b.cells.len(), 2);
        assert_eq!(b.cells[0].kernel, "debian-6.1");
        assert_eq!(b.cells[0].scenario, "seed");
        assert_eq!(b.cells[0].iterations, 20);
        assert_eq!(b.cells[0].failures(), 6);
        assert_eq!(b.cells[0].findings, ["xfs_inode_evict"]);
        assert_eq!(b.cells[1].failures(), 3);
        // The run it came from has no regression against it.
        assert_eq!(check(&r, &b), []);
        // JSON round trip, and the file format is what the docs show.
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<Baseline>(&json).unwrap(), b);
        assert!(
            json.contains(
                r#""kernel":"debian-6.12","scenario":"seed","iterations":20,"failure_rate":0.15}"#
            ),
            "{json}"
        );
    }

    #[test]
    fn rate_checks_against_tables() {
        let c = cells();
        // (baseline failed/of, now failed/of, regression?): one-sided Fisher p at 0.05.
        for (base, now, want) in [
            ((0, 20), (3, 20), false), // p = 0.115
            ((0, 20), (5, 20), true),  // p = 0.024
            ((2, 20), (10, 20), true), // p = 0.0069
            ((3, 20), (6, 20), false), // p = 0.23
            ((6, 20), (2, 20), false), // fewer failures are never a regression
        ] {
            let b = Baseline {
                schema: 1,
                cells: vec![BaselineCell {
                    kernel: "debian-6.1".into(),
                    scenario: "seed".into(),
                    params: BTreeMap::new(),
                    iterations: base.1,
                    failure_rate: f64::from(base.0) / f64::from(base.1),
                    known_failure: false,
                    findings: Vec::new(),
                }],
            };
            let r = results(vec![run_for(&c[0], now.1, now.0)]);
            let regs = check(&r, &b);
            assert_eq!(!regs.is_empty(), want, "{base:?} -> {now:?}: {regs:?}");
            // Known failures are never rate regressions.
            let mut known = b.clone();
            known.cells[0].known_failure = true;
            assert_eq!(check(&r, &known), []);
        }
        let b = Baseline {
            schema: 1,
            cells: vec![BaselineCell {
                kernel: "debian-6.1".into(),
                scenario: "seed".into(),
                params: BTreeMap::new(),
                iterations: 20,
                failure_rate: 0.1,
                known_failure: false,
                findings: Vec::new(),
            }],
        };
        let r = results(vec![run_for(&c[0], 20, 10), run_for(&c[1], 20, 20)]);
        let j = judge(&r, &b);
        assert_eq!(j.regressions.len(), 2);
        assert_eq!(
            j.regressions[0].to_string(),
            "debian-6.1/seed: failure rate rose from 2/20 to 10/20, p = 0.0069"
        );
        // The cell the baseline does not mention is judged as having no known failures.
        assert_eq!(j.unchecked, ["debian-6.12/seed"]);
        assert_eq!(
            j.regressions[1].to_string(),
            "debian-6.12/seed: 20 of 20 iterations failed, and the baseline has no entry for \
             it, so no failure is known"
        );
    }

    /// A rise that is significant alone but not among the matrix's cells is named as a lead,
    /// not failed as a regression; a rise that holds after the correction is a regression
    /// that says what it was corrected for.
    #[test]
    fn a_rise_significant_only_alone_is_a_lead_not_a_regression() {
        let m = matrix(
            "name: b\nkernels: [debian:6.1, debian:6.12]\n\
             scenarios: [a.yaml, b.yaml, c.yaml, d.yaml]\n",
        );
        let c = m.cells();
        assert_eq!(c.len(), 8);
        // Every cell's baseline: 6 of 20, and so now, but cell 1 rose to 13 of 20 (p = 0.028
        // alone, not below 0.05/8) and cell 2 to 18 of 20 (p < 0.001).
        let mut runs: Vec<RunRecord> = c.iter().map(|c| run_for(c, 20, 6)).collect();
        runs[1] = run_for(&c[1], 20, 13);
        runs[2] = run_for(&c[2], 20, 18);
        let r = results(runs);
        let mut b = baseline_from(&r);
        for cell in &mut b.cells {
            cell.failure_rate = 0.3;
        }
        let j = judge(&r, &b);
        let ids: Vec<&str> = j.regressions.iter().map(Regression::cell).collect();
        assert_eq!(ids, [c[2].id()], "{:?}", j.regressions);
        assert_eq!(
            j.regressions[0].to_string(),
            format!(
                "{}: failure rate rose from 6/20 to 18/20, p < 0.001 (< 0.05/8: Tarone-Holm over \
                 8 cells with a known rate)",
                c[2].id()
            )
        );
        assert_eq!(
            j.unconfirmed_rises,
            [format!(
                "{}: failure rate rose from 6/20 to 13/20, p = 0.03 alone, but not significant \
                 corrected for the 8 cells with a known rate (Tarone-Holm), so no regression; \
                 more iterations of this cell would tell",
                c[1].id()
            )]
        );
        // The same rise in a matrix of that cell alone is a regression.
        let alone = results(vec![run_for(&c[1], 20, 13)]);
        assert_eq!(check(&alone, &b).len(), 1);
        // Cells that never failed cannot show a rise and do not dilute one that can: with
        // the other six clean before and now, cell 1's rise is a regression again.
        let mut runs: Vec<RunRecord> = c.iter().map(|c| run_for(c, 20, 0)).collect();
        runs[1] = run_for(&c[1], 20, 13);
        let r = results(runs);
        let mut b = baseline_from(&r);
        b.cells[1].failure_rate = 0.3;
        let j = judge(&r, &b);
        assert_eq!(
            j.regressions
                .iter()
                .map(Regression::cell)
                .collect::<Vec<_>>(),
            [c[1].id()]
        );
        assert!(j.unconfirmed_rises.is_empty());
    }

    /// A baseline that matches no cell (a mistyped label or scenario key, an entry without
    /// `iterations`, no entries at all) must not let failing cells pass: each is judged as
    /// having no known failures, named, and the entries matching nothing are named too.
    #[test]
    fn a_baseline_matching_no_cell_does_not_pass_failing_cells() {
        let c = cells();
        let r = results(vec![run_for(&c[0], 4, 4), run_for(&c[1], 4, 0)]);
        let entry = |kernel: &str, scenario: &str, iterations: u32| BaselineCell {
            kernel: kernel.into(),
            scenario: scenario.into(),
            params: BTreeMap::new(),
            iterations,
            failure_rate: 0.0,
            known_failure: false,
            findings: Vec::new(),
        };
        // Typos: the kernel spec instead of its label, the file name instead of its stem.
        let typo = Baseline {
            schema: 1,
            cells: vec![
                entry("debian:6.1", "seed", 20),
                entry("debian-6.12", "seed.yaml", 20),
            ],
        };
        let j = judge(&r, &typo);
        assert_eq!(j.unchecked, ["debian-6.1/seed", "debian-6.12/seed"]);
        assert_eq!(j.unmatched, ["debian:6.1/seed", "debian-6.12/seed.yaml"]);
        assert_eq!(
            j.regressions
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                "debian-6.1/seed: 4 of 4 iterations failed, and the baseline has no entry for \
              it, so no failure is known"
            ]
        );
        // No entries at all.
        let empty = Baseline {
            schema: 1,
            cells: Vec::new(),
        };
        let j = judge(&r, &empty);
        assert_eq!(j.regressions.len(), 1);
        assert_eq!(j.unchecked.len(), 2);
        // An entry without `iterations` gives no known failure rate.
        let noiter = Baseline {
            schema: 1,
            cells: vec![
                entry("debian-6.1", "seed", 0),
                entry("debian-6.12", "seed", 0),
            ],
        };
        let j = judge(&r, &noiter);
        assert_eq!(
            j.without_iterations,
            ["debian-6.1/seed", "debian-6.12/seed"]
        );
        assert!(j.unchecked.is_empty() && j.unmatched.is_empty());
        assert_eq!(
            j.regressions[0].to_string(),
            "debian-6.1/seed: 4 of 4 iterations failed, and the baseline's entry for it \
             records no `iterations` (and no `known_failure`), so no failure is known"
        );
        // known_failure without iterations still exempts the rate.
        let mut known = noiter.clone();
        known.cells[0].known_failure = true;
        assert_eq!(check(&r, &known), []);
    }

    /// The baseline example in docs/matrix.md reads, and its finding signature is the one
    /// crashrig writes for that WARNING: a baseline written as the docs show matches.
    #[test]
    fn the_documented_baseline_matches_what_crashrig_records() {
        let docs = include_str!("../../../docs/matrix.md");
        let start = docs.find("## Baselines").unwrap();
        let block = &docs[start..];
        let json = block
            .split("```json\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .unwrap();
        let b: Baseline = serde_json::from_str(json).unwrap();
        let ctx = crate::outcome::ClassifyContext {
            expected_fs_errors: false,
            expected_panic: false,
            ignore: Vec::new(),
        };
        let found = crate::outcome::classify_console(
            "[   12.5] WARNING: CPU: 0 PID: 1 at fs/xfs/xfs_inode.c:100 \
             xfs_inode_inactive+0x10/0x20\n",
            &ctx,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        let cells = seed_matrix().cells();
        let cell = cells
            .iter()
            .find(|c| c.id() == "debian-6.12/seed-kill-umount/filesystem=xfs")
            .unwrap();
        let mut run = run_for(cell, 20, 3);
        run.iterations[0].findings.push(found[0].clone());
        run.summary = summarize(&run.iterations);
        let j = judge(&results(vec![run]), &b);
        assert_eq!(j.regressions, [], "{:?}", found[0].signature);
    }

    #[test]
    fn rates_outside_0_to_1_are_refused() {
        for rate in [-3.0, 7.5, f64::NAN] {
            let b = Baseline {
                schema: 1,
                cells: vec![BaselineCell {
                    kernel: "debian-6.1".into(),
                    scenario: "seed".into(),
                    params: BTreeMap::new(),
                    iterations: 20,
                    failure_rate: rate,
                    known_failure: false,
                    findings: Vec::new(),
                }],
            };
            let err = b.checked(Path::new("b.json")).unwrap_err().to_string();
            assert!(
                err.starts_with("read baseline b.json: entry `debian-6.1/seed` has failure_rate"),
                "{err}"
            );
        }
    }

    #[test]
    fn new_finding_signatures_are_regressions_known_ones_are_not() {
        let c = cells();
        let before = results(vec![with_findings(run_for(&c[0], 4, 4), &["xfs_evict"])]);
        let mut b = baseline_from(&before);
        b.cells[0].known_failure = true;
        let same = results(vec![with_findings(
            run_for(&c[0], 4, 4),
            &["xfs_evict", "xfs_evict"],
        )]);
        assert_eq!(check(&same, &b), []);
        let new = results(vec![with_findings(
            run_for(&c[0], 4, 4),
            &["xfs_evict", "iomap_write", "iomap_write"],
        )]);
        let regs = check(&new, &b);
        assert_eq!(regs.len(), 1);
        assert_eq!(
            regs[0].to_string(),
            "debian-6.1/seed: new warning finding `iomap_write` (2 times)"
        );
    }
}
