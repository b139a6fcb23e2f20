//! Human- and CI-facing summaries of matrix results: a markdown table for a CI job summary
//! (`$GITHUB_STEP_SUMMARY`) and JUnit XML with one test case per cell.

use std::fmt::Write as _;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::baseline::{Judgement, Regression};
use super::compare::{Comparison, RunKey};
use crate::report::{plural, Results, RunRecord, Summary};

/// The title: the matrix name of the first cell or of the header, else "crashrig results".
fn title(results: &Results) -> String {
    results
        .runs
        .iter()
        .find_map(|r| r.cell.as_ref())
        .map(|c| c.matrix.clone())
        .or_else(|| results.matrix.as_ref().map(|m| m.name.clone()))
        .map_or_else(
            || "crashrig results".into(),
            |name| format!("crashrig matrix `{name}`"),
        )
}

/// Markdown: one table row per run (cell), then the comparisons and the regressions.
pub fn markdown(
    results: &Results,
    comparisons: &[Comparison],
    regressions: &[Regression],
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## {}\n", title(results));
    md.push_str(
        "| Kernel | Scenario | Parameters | Iterations | Failures | Failure rate (95% CI) \
         | Errnos | Busy window (median / max) | Findings |\n",
    );
    md.push_str("|---|---|---|--:|--:|---|---|---|--:|\n");
    for run in &results.runs {
        let key = RunKey::of(run);
        let s = &run.summary;
        let params: Vec<String> = key.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut iterations = s.iterations.to_string();
        if run.finished.is_none() {
            match run.iterations_planned {
                Some(n) => {
                    let _ = write!(iterations, " of {n}, unfinished");
                }
                None => iterations.push_str(" (unfinished)"),
            }
        }
        if s.errors > 0 {
            let _ = write!(iterations, " ({})", plural(u64::from(s.errors), "error"));
        }
        let mut failures = s.failed.to_string();
        if run.error.is_some() {
            failures.push_str(" (run error)");
        }
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&key.kernel),
            cell(&key.scenario),
            cell(&params.join(", ")),
            iterations,
            failures,
            rate_with_ci(s),
            cell(&errno_counts(s)),
            cell(&busy_window(s)),
            unexpected_findings(s),
        );
    }
    if !comparisons.is_empty() {
        md.push_str("\n### Across kernels\n\n");
        for c in comparisons {
            let key = RunKey {
                kernel: String::new(),
                scenario: c.scenario.clone(),
                params: c.params.clone(),
            };
            let line = format!("{}: {c}", key.scenario_label());
            if c.significant {
                let _ = writeln!(md, "- **{line}**");
            } else {
                let _ = writeln!(md, "- {line}");
            }
        }
        if comparisons.len() > 1 {
            let _ = writeln!(md, "\n{}", many_comparisons_note(comparisons.len()));
        }
    }
    if !regressions.is_empty() {
        md.push_str("\n### Regressions against the baseline\n\n");
        for r in regressions {
            let _ = writeln!(md, "- {r}");
        }
    }
    for run in results.runs.iter().filter(|r| r.setup_failed()) {
        let reasons = run
            .setup_dmesg
            .as_ref()
            .map(|d| d.reasons.join("; "))
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "\n> **{}**: setup's kernel log failed (counted in no iteration, but the cell \
             fails as `crashrig run` does): {}",
            RunKey::of(run).id(),
            reasons.replace('\n', " ")
        );
    }
    for run in results.runs.iter().filter(|r| r.finished.is_none()) {
        let _ = writeln!(
            md,
            "\n> **{}**: {}",
            RunKey::of(run).id(),
            unfinished_text(run)
        );
    }
    for run in results.runs.iter().filter(|r| r.error.is_some()) {
        md.push_str(&error_block(
            &RunKey::of(run).id(),
            run.error.as_deref().unwrap_or_default(),
        ));
    }
    md
}

/// What many comparisons at once mean: significance is Holm-corrected over all of them.
fn many_comparisons_note(n: usize) -> String {
    format!(
        "{n} comparisons: each p is Holm-adjusted for their number, and a line is significant \
         when its adjusted p is below {ALPHA}, so that the chance of any significant line where no \
         kernel differs stays at {pct:.0}%. A small raw p with a large adjusted one is a lead to \
         rerun with more iterations, not a finding.",
        ALPHA = super::compare::ALPHA,
        pct = 100.0 * super::compare::ALPHA
    )
}

/// Console lines summary.md shows of a run error that carries them (a boot's 40).
const ERROR_CONSOLE_LINES: usize = 5;

/// Longest console line summary.md shows, in characters.
const ERROR_LINE_CHARS: usize = 160;

/// A run error for summary.md: its first line quoted; the lines after it (the console tail
/// of a guest that never booted: 40 lines, `*`, `#` and `|` in them) as the last few,
/// fenced, so markdown shows them as they were and does not run them into the quote.
fn error_block(id: &str, error: &str) -> String {
    let (head, rest) = error.split_once('\n').unwrap_or((error, ""));
    let mut out = format!("\n> **{id}**: {head}\n");
    let lines: Vec<&str> = rest.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return out;
    }
    let shown: Vec<String> = lines[lines.len().saturating_sub(ERROR_CONSOLE_LINES)..]
        .iter()
        .map(|l| {
            if l.chars().count() > ERROR_LINE_CHARS {
                l.chars()
                    .take(ERROR_LINE_CHARS - 3)
                    .chain("...".chars())
                    .collect()
            } else {
                l.to_string()
            }
        })
        .collect();
    // A fence longer than any run of backticks in the lines.
    let ticks = shown
        .iter()
        .flat_map(|l| l.split(|c| c != '`').map(str::len))
        .max()
        .unwrap_or(0);
    let fence = "`".repeat(3.max(ticks + 1));
    let _ = write!(out, "\n{fence}text\n{}\n{fence}\n", shown.join("\n"));
    if shown.len() < lines.len() {
        let _ = writeln!(
            out,
            "\n(the last {} of {} lines; results.json has the whole error)",
            shown.len(),
            lines.len()
        );
    }
    out
}

/// What summary.md says about what a baseline covers (empty when it covers every cell and
/// every entry matched): cells without an entry or without a known rate (judged as having
/// no known failures), and entries that match no cell (a typo, or another shard's cells).
/// Also the improvements (a stale entry would hide a bug's return), the rises that are leads
/// but not regressions, and the known failures.
pub fn baseline_coverage(j: &Judgement) -> String {
    let list = |ids: &[String]| {
        ids.iter()
            .map(|id| format!("`{id}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut md = String::new();
    if !j.unchecked.is_empty() {
        let _ = writeln!(
            md,
            "- **Not in the baseline** ({}), judged as having no known failures (a failed \
             iteration is a regression): {}",
            plural(j.unchecked.len() as u64, "cell"),
            list(&j.unchecked)
        );
    }
    if !j.without_iterations.is_empty() {
        let _ = writeln!(
            md,
            "- **Baseline entries without `iterations`** (no known failure rate; add \
             `iterations` or `known_failure: true`), judged as having no known failures: {}",
            list(&j.without_iterations)
        );
    }
    if !j.unmatched.is_empty() {
        let _ = writeln!(
            md,
            "- **Baseline entries that match no cell here** ({}): {}. Entries name a cell by \
             its kernel label and scenario key as in the table above (a typo?), unless these \
             are cells of another shard",
            if j.unmatched.len() == 1 {
                "1 entry".to_string()
            } else {
                format!("{} entries", j.unmatched.len())
            },
            list(&j.unmatched)
        );
    }
    let mut out = String::new();
    if !j.improvements.is_empty() {
        out.push_str("\n### Improvements against the baseline\n\n");
        for line in &j.improvements {
            let _ = writeln!(out, "- {line}");
        }
    }
    if !j.unconfirmed_rises.is_empty() {
        out.push_str(
            "\n### Rises against the baseline, not significant across its cells\n\n\
             No regression: with many cells some rise by chance alone, so each p is \
             corrected for the cells with a known rate (Tarone-Holm).\n\n",
        );
        for line in &j.unconfirmed_rises {
            let _ = writeln!(out, "- {line}");
        }
    }
    if !j.known.is_empty() {
        let _ = writeln!(
            out,
            "\nKnown failures (in the baseline, not regressions; `<skipped type=\"known \
             failure\">` in junit-cells.xml): {}",
            list(&j.known)
        );
    }
    if !md.is_empty() {
        let _ = write!(out, "\n### Baseline coverage\n\n{md}");
    }
    out
}

/// What a run that never finished (its shard interrupted or killed) is said to be.
fn unfinished_text(run: &RunRecord) -> String {
    let planned = run
        .iterations_planned
        .map_or_else(String::new, |n| format!(" of {n}"));
    format!(
        "the run never finished (interrupted or killed): {}{planned} ran, so this cell is \
         incomplete; `crashrig matrix --resume` on its results directory runs the rest",
        plural(run.iterations.len() as u64, "iteration")
    )
}

/// A table cell: `|` escaped, newlines as spaces, "–" when empty.
fn cell(text: &str) -> String {
    if text.is_empty() {
        return "–".into();
    }
    text.replace('|', "\\|").replace('\n', " ")
}

fn percent(x: f64) -> String {
    format!("{:.0}%", 100.0 * x)
}

/// `45% (26–66%)`, or `–` when no iteration was judged.
pub fn rate_with_ci(s: &Summary) -> String {
    if s.iterations == s.errors {
        return "–".into();
    }
    format!(
        "{} ({}–{})",
        percent(s.failure_rate),
        percent(s.failure_ci95[0]).trim_end_matches('%'),
        percent(s.failure_ci95[1])
    )
}

/// `EBUSY 9, EIO 1`, most frequent first.
pub fn errno_counts(s: &Summary) -> String {
    let mut counts: Vec<(&String, &u32)> = s.errno_counts.iter().collect();
    counts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    counts
        .iter()
        .map(|(e, n)| format!("{e} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ms(x: f64) -> String {
    if x >= 1000.0 {
        format!("{:.1} s", x / 1000.0)
    } else {
        format!("{x:.0} ms")
    }
}

/// Busy window of the step that had the most: `umount: 120 ms / 2.5 s (1 gave up)`.
pub fn busy_window(s: &Summary) -> String {
    let Some((id, b)) = s
        .steps
        .iter()
        .filter_map(|(id, st)| st.busy_window_ms.as_ref().map(|b| (id, b)))
        .filter(|(_, b)| b.count > 0)
        .max_by(|x, y| x.1.count.cmp(&y.1.count).then(y.0.cmp(x.0)))
    else {
        return String::new();
    };
    let mut text = format!("{id}: {} / {}", ms(b.median), ms(b.max));
    if b.gave_up > 0 {
        let _ = write!(text, " ({} gave up)", b.gave_up);
    }
    text
}

/// Occurrences of unexpected findings.
fn unexpected_findings(s: &Summary) -> u32 {
    s.findings
        .iter()
        .filter(|f| !f.expected)
        .map(|f| f.count)
        .sum()
}

/// One line on what a cell showed, e.g. `9 of 20 iterations failed (45%, 95% CI 26-66%);
/// errnos: EBUSY 9; findings: warning xfs_evict x2`.
pub fn outcome_summary(run: &RunRecord) -> String {
    let s = &run.summary;
    let judged = s.iterations - s.errors;
    let mut text = if judged == 0 {
        "no iteration judged".to_string()
    } else {
        format!(
            "{} of {} iterations failed ({}, 95% CI {}-{})",
            s.failed,
            judged,
            percent(s.failure_rate),
            percent(s.failure_ci95[0]).trim_end_matches('%'),
            percent(s.failure_ci95[1])
        )
    };
    if s.hangs > 0 || s.panics > 0 {
        let _ = write!(
            text,
            ", {}, {}",
            plural(u64::from(s.hangs), "hang"),
            plural(u64::from(s.panics), "panic")
        );
    }
    if s.errors > 0 {
        let _ = write!(text, ", {} not judged (errors)", s.errors);
    }
    let errnos = errno_counts(s);
    if !errnos.is_empty() {
        let _ = write!(text, "; errnos: {errnos}");
    }
    let findings: Vec<String> = s
        .findings
        .iter()
        .filter(|f| !f.expected)
        .map(|f| format!("{} {} x{}", f.kind, f.signature, f.count))
        .collect();
    if !findings.is_empty() {
        let _ = write!(text, "; findings: {}", findings.join(", "));
    }
    if let Some(d) = run.setup_dmesg.as_ref().filter(|d| d.failed()) {
        let _ = write!(
            text,
            "; setup's kernel log failed: {}",
            d.reasons.join("; ")
        );
    }
    if let Some(e) = &run.error {
        let _ = write!(text, "; run error: {e}");
    }
    text
}

/// Failing iterations listed in a JUnit failure; results.json has them all.
const MAX_REASONS: usize = 20;

/// JUnit XML of junit-cells.xml: one test suite per scenario, one test case per cell (named by its id). A
/// cell with failed iterations is a failure whose message is [`outcome_summary`] and whose
/// description lists the failing iterations' reasons; a run that ended with an
/// infrastructure error, or judged no iteration, is an error.
pub fn junit_cells(results: &Results) -> Result<String, quick_junit::SerializeError> {
    junit_cells_known(results, &[], &[])
}

/// [`junit_cells`] with a baseline's judgement: a cell in `known` (failed iterations that are
/// no regression, see [`Judgement::known`]) is `<skipped type="known failure">`, as pytest
/// writes an expected failure (xfail): JUnit consumers (GitLab, Jenkins) show it as skipped,
/// not failed, which agrees with the exit code; its message says it ran and failed as known.
/// A cell with a regression in `regressions` is a failure even when no iteration failed (a
/// new finding under `dmesg.fail-on: none`), as is one whose setup kernel log failed: the
/// exit code fails on both.
pub fn junit_cells_known(
    results: &Results,
    known: &[String],
    regressions: &[Regression],
) -> Result<String, quick_junit::SerializeError> {
    let mut report = Report::new(title(results));
    let mut suites: Vec<TestSuite> = Vec::new();
    for run in &results.runs {
        let key = RunKey::of(run);
        let s = &run.summary;
        let status = if run.finished.is_none() {
            let mut st = TestCaseStatus::non_success(NonSuccessKind::Error);
            st.set_message(format!(
                "{}: {}",
                unfinished_text(run),
                outcome_summary(run)
            ));
            st.set_type("incomplete");
            st
        } else if run.error.is_some() || (s.iterations > 0 && s.iterations == s.errors) {
            let mut st = TestCaseStatus::non_success(NonSuccessKind::Error);
            st.set_message(outcome_summary(run));
            if let Some(e) = &run.error {
                st.set_type("infrastructure");
                st.set_description(e.as_str());
            }
            st
        } else if run.failed() || regressions.iter().any(|r| r.cell() == key.id()) {
            let mut st = if known.contains(&key.id()) {
                let mut st = TestCaseStatus::skipped();
                st.set_message(format!(
                    "known failure (the baseline's, not a regression): {}",
                    outcome_summary(run)
                ));
                st.set_type("known failure");
                st
            } else {
                let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                let mine: Vec<String> = regressions
                    .iter()
                    .filter(|r| r.cell() == key.id())
                    .map(|r| r.to_string())
                    .collect();
                if mine.is_empty() {
                    st.set_message(outcome_summary(run));
                    st.set_type("expectation violated");
                } else {
                    st.set_message(format!(
                        "regression against the baseline: {}; {}",
                        mine.join("; "),
                        outcome_summary(run)
                    ));
                    st.set_type("regression");
                }
                st
            };
            let failing: Vec<_> = run
                .iterations
                .iter()
                .filter(|it| it.verdict.is_failure())
                .collect();
            let mut reasons: Vec<String> = run
                .setup_dmesg
                .iter()
                .filter(|d| d.failed())
                .map(|d| format!("setup: {}", d.reasons.join("; ")))
                .collect();
            reasons.extend(
                failing
                    .iter()
                    .take(MAX_REASONS)
                    .map(|it| format!("iteration {}: {}", it.iteration, it.reasons.join("; "))),
            );
            if failing.len() > MAX_REASONS {
                reasons.push(format!("and {} more", failing.len() - MAX_REASONS));
            }
            st.set_description(reasons.join("\n"));
            st
        } else {
            TestCaseStatus::success()
        };
        let mut case = TestCase::new(key.id(), status);
        case.set_classname(format!("{}.{}", key.scenario, key.kernel));
        let ms: f64 = run.iterations.iter().map(|it| it.duration_ms).sum();
        case.set_time(Duration::try_from_secs_f64(ms / 1000.0).unwrap_or_default());
        case.add_property(("kernel", run.kernel.spec.as_str()));
        case.add_property(("kernel-version", run.kernel.version.as_str()));
        case.add_property(("iterations", s.iterations.to_string().as_str()));
        case.add_property(("failed", s.failed.to_string().as_str()));
        if matches!(case.status, TestCaseStatus::Success { .. }) {
            case.set_system_out(outcome_summary(run));
        }
        match suites.iter_mut().find(|t| t.name.as_str() == key.scenario) {
            Some(suite) => {
                suite.add_test_case(case);
            }
            None => {
                let mut suite = TestSuite::new(key.scenario.clone());
                suite.add_test_case(case);
                suites.push(suite);
            }
        }
    }
    report.add_test_suites(suites);
    report.to_string()
}

/// Exit code of a matrix run or merge: with a baseline, 1 when there is a regression (known
/// bugs pass); without one, 1 when any cell had a failed iteration; else 0. Runs that ended
/// with an infrastructure error, or never finished (an interrupted shard), give 2 when
/// nothing else failed.
pub fn exit_code(results: &Results, baseline_used: bool, regressions: &[Regression]) -> i32 {
    // A setup kernel log that failed fails the cell as it fails `crashrig run`.
    let failed = if baseline_used {
        !regressions.is_empty()
    } else {
        results.runs.iter().any(RunRecord::failed)
    };
    if failed {
        crate::exit::EXPECTATION_FAILED
    } else if results
        .runs
        .iter()
        .any(|r| r.error.is_some() || r.finished.is_none())
    {
        crate::exit::CONFIG_OR_INFRA
    } else {
        crate::exit::OK
    }
}

#[cfg(test)]
mod tests {
    use super::super::baseline::{baseline_from, check};
    use super::super::compare::compare;
    use super::super::testutil::*;
    use super::*;
    use crate::report::{summarize, Verdict};

    fn sample() -> Results {
        let m = matrix(
            "name: seed\nkernels: [debian:6.1, debian:6.12]\n\
             scenarios: [seed-kill-umount.yaml, control-psync.yaml]\n",
        );
        let c = m.cells();
        let mut flaky = run_for(&c[0], 20, 9);
        flaky.iterations[0].findings.push(finding("xfs_evict"));
        flaky.iterations[19].verdict = Verdict::Error;
        flaky.summary = summarize(&flaky.iterations);
        let mut broken = run_for(&c[3], 0, 0);
        broken.error = Some("QEMU exited before the guest answered on SSH".into());
        results(vec![
            flaky,
            run_for(&c[1], 20, 0),
            run_for(&c[2], 20, 4),
            broken,
        ])
    }

    /// A cell whose guest never booted put its error's 40 console lines into summary.md as
    /// text: markdown ran them into the quote and read `*` and `#` in them.
    #[test]
    fn a_never_booted_cells_console_lines_are_its_last_few_fenced() {
        let mut tail: Vec<String> = (1..=40).map(|i| format!("[    {i}.0] line {i}")).collect();
        tail[38] = "# not a heading * not a list".into();
        tail[37] = "x".repeat(200);
        tail[39] = "```x``` y".into();
        let error = format!(
            "QEMU exited (exit status: 1) before the guest answered on SSH; last console \
             lines:\n{}",
            tail.join("\n")
        );
        let block = error_block("debian-6.1/seed", &error);
        let long = format!("{}...", "x".repeat(157));
        assert_eq!(
            block,
            format!(
                "\n> **debian-6.1/seed**: QEMU exited (exit status: 1) before the guest \
                 answered on SSH; last console lines:\n\
                 \n````text\n[    36.0] line 36\n[    37.0] line 37\n{long}\n\
                 # not a heading * not a list\n```x``` y\n````\n\
                 \n(the last 5 of 40 lines; results.json has the whole error)\n"
            )
        );
        assert_eq!(
            error_block("k/s", "the guest hung"),
            "\n> **k/s**: the guest hung\n"
        );
    }

    /// The whole summary.md as users see it (rows, comparisons, regressions, run errors);
    /// times of day and paths are redacted so the snapshot only moves with the format.
    #[test]
    fn markdown_snapshot() {
        let r = sample();
        let mut b = baseline_from(&r);
        b.cells[2].failure_rate = 0.0;
        b.cells[2].iterations = 40;
        let md = markdown(&r, &compare(&r), &check(&r, &b));
        insta::with_settings!({filters => vec![
            (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[time]"),
            (r"(/[\w.-]+)+/", "[path]/"),
        ]}, {
            insta::assert_snapshot!(md);
        });
    }

    #[test]
    fn markdown_has_one_row_per_cell_and_the_comparisons() {
        let r = sample();
        let mut b = baseline_from(&r);
        // debian-6.12 on the seed was clean over 40 iterations; 4 of 20 now is a rise.
        b.cells[2].failure_rate = 0.0;
        b.cells[2].iterations = 40;
        let md = markdown(&r, &compare(&r), &check(&r, &b));
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(rows.len(), 1 + 4, "{md}");
        assert_eq!(
            rows[1],
            "| debian-6.1 | seed-kill-umount | – | 20 (1 error) | 9 | 47% (27–68%) | EBUSY 9 \
             | umount: 200 ms / 360 ms | 1 |"
        );
        assert_eq!(
            rows[2],
            "| debian-6.1 | control-psync | – | 20 | 0 | 0% (0–16%) | – | – | 0 |"
        );
        assert_eq!(
            rows[4],
            "| debian-6.12 | control-psync | – | 0 | 0 (run error) | – | – | – | 0 |"
        );
        assert!(md.starts_with("## crashrig matrix `seed`\n"), "{md}");
        assert!(
            md.contains(
                "\n### Across kernels\n\n- seed-kill-umount: debian-6.1 vs debian-6.12: \
                 EBUSY 47% vs 20%, p = 0.10\n"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "\n### Regressions against the baseline\n\n- debian-6.12/seed-kill-umount: \
                 failure rate rose from 0/40 to 4/20, p = 0.0099 (< 0.05/2: Tarone-Holm over 3 \
                 cells with a known rate)\n"
            ),
            "{md}"
        );
        assert!(md.contains(
            "> **debian-6.12/control-psync**: QEMU exited before the guest answered on SSH"
        ));
    }

    #[test]
    fn junit_has_one_case_per_cell_with_failures_carrying_the_outcome() {
        let r = sample();
        let xml = junit_cells(&r).unwrap();
        let parsed = Report::deserialize_from_str(&xml).unwrap();
        assert_eq!(parsed.name.as_str(), "crashrig matrix `seed`");
        let names: Vec<(&str, Vec<&str>)> = parsed
            .test_suites
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.test_cases.iter().map(|c| c.name.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                (
                    "seed-kill-umount",
                    vec![
                        "debian-6.1/seed-kill-umount",
                        "debian-6.12/seed-kill-umount"
                    ]
                ),
                (
                    "control-psync",
                    vec!["debian-6.1/control-psync", "debian-6.12/control-psync"]
                ),
            ]
        );
        let cases: Vec<&TestCase> = parsed
            .test_suites
            .iter()
            .flat_map(|s| &s.test_cases)
            .collect();
        match &cases[0].status {
            TestCaseStatus::NonSuccess {
                kind: NonSuccessKind::Failure,
                message,
                description,
                ..
            } => {
                assert_eq!(
                    message.as_ref().map(|m| m.as_str()),
                    Some(
                        "9 of 19 iterations failed (47%, 95% CI 27-68%), 1 not judged (errors); \
                         errnos: EBUSY 9; findings: warning xfs_evict x1"
                    )
                );
                assert!(description.as_ref().is_some_and(|d| d
                    .as_str()
                    .starts_with("iteration 1: umount returned EBUSY\n")));
            }
            other => panic!("cell 1: {other:?}"),
        }
        assert!(matches!(
            cases[1].status,
            TestCaseStatus::NonSuccess {
                kind: NonSuccessKind::Failure,
                ..
            }
        ));
        assert!(matches!(cases[2].status, TestCaseStatus::Success { .. }));
        match &cases[3].status {
            TestCaseStatus::NonSuccess {
                kind: NonSuccessKind::Error,
                message,
                ..
            } => {
                assert_eq!(
                message.as_ref().map(|m| m.as_str()),
                Some("no iteration judged; run error: QEMU exited before the guest answered on SSH")
            )
            }
            other => panic!("cell 4: {other:?}"),
        }
        assert_eq!(parsed.tests, 4);
        assert_eq!(parsed.failures, 2);
        assert_eq!(parsed.errors, 1);
        assert!(xml.starts_with("<?xml"), "{xml}");
    }

    /// A cell of an interrupted shard (no `finished`) is incomplete, not an ordinary result:
    /// marked in summary.md and junit-cells.xml, and an error in the exit code.
    #[test]
    fn an_unfinished_cell_is_marked_incomplete() {
        let m = matrix("name: u\nkernels: [debian:6.1, debian:6.12]\nscenarios: [slow.yaml]\n");
        let c = m.cells();
        let mut cut = run_for(&c[0], 15, 0);
        cut.iterations_planned = Some(30);
        cut.finished = None;
        let r = results(vec![cut, run_for(&c[1], 3, 0)]);
        let md = markdown(&r, &compare(&r), &[]);
        assert!(
            md.contains("| debian-6.1 | slow | – | 15 of 30, unfinished | 0 |"),
            "{md}"
        );
        assert!(
            md.contains(
                "> **debian-6.1/slow**: the run never finished (interrupted or killed): 15 \
                 iterations of 30 ran, so this cell is incomplete"
            ),
            "{md}"
        );
        let parsed = Report::deserialize_from_str(&junit_cells(&r).unwrap()).unwrap();
        assert_eq!(parsed.errors, 1);
        assert_eq!(exit_code(&r, false, &[]), 2);
    }

    /// With a baseline, a known failure is not a JUnit failure (the exit code is 0), and an
    /// improvement is said.
    #[test]
    fn known_failures_are_skipped_in_junit_and_improvements_said() {
        use super::super::baseline::judge;
        let m = matrix("name: k\nkernels: [debian:6.1, debian:6.12]\nscenarios: [coin.yaml]\n");
        let c = m.cells();
        let before = results(vec![run_for(&c[0], 4, 4), run_for(&c[1], 20, 20)]);
        let mut b = baseline_from(&before);
        b.cells[0].known_failure = true;
        // 6.1 still fails as known; 6.12 no longer fails.
        let now = results(vec![run_for(&c[0], 4, 4), run_for(&c[1], 20, 0)]);
        let j = judge(&now, &b);
        assert_eq!(j.regressions, []);
        assert_eq!(exit_code(&now, true, &j.regressions), 0);
        assert_eq!(j.known, ["debian-6.1/coin"]);
        let parsed = Report::deserialize_from_str(
            &junit_cells_known(&now, &j.known, &j.regressions).unwrap(),
        )
        .unwrap();
        assert_eq!(parsed.failures, 0);
        match &parsed.test_suites[0].test_cases[0].status {
            TestCaseStatus::Skipped { message, ty, .. } => {
                assert_eq!(ty.as_ref().map(|t| t.as_str()), Some("known failure"));
                assert!(message
                    .as_ref()
                    .is_some_and(|m| m.as_str().starts_with("known failure (the baseline's")));
            }
            other => panic!("{other:?}"),
        }
        let md = baseline_coverage(&j);
        assert!(
            md.contains(
                "### Improvements against the baseline\n\n- debian-6.12/coin: failure rate fell \
                 from 20/20 to 0/20"
            ),
            "{md}"
        );
        // A known failure that no longer fails is pointed out.
        let fixed = results(vec![run_for(&c[0], 4, 0), run_for(&c[1], 20, 20)]);
        let j = judge(&fixed, &b);
        assert!(
            j.improvements[0].starts_with("debian-6.1/coin: marked known_failure, but none"),
            "{:?}",
            j.improvements
        );
    }

    /// A rise that is significant only alone is shown as a lead under its own heading, not
    /// among the regressions.
    #[test]
    fn unconfirmed_rises_are_listed_as_leads() {
        let j = Judgement {
            unconfirmed_rises: vec!["debian-6.1/seed: failure rate rose from 6/20 to 13/20".into()],
            ..Judgement::default()
        };
        let md = baseline_coverage(&j);
        assert!(
            md.starts_with("\n### Rises against the baseline, not significant across its cells\n"),
            "{md}"
        );
        assert!(
            md.ends_with("\n- debian-6.1/seed: failure rate rose from 6/20 to 13/20\n"),
            "{md}"
        );
        assert_eq!(baseline_coverage(&Judgement::default()), "");
    }

    #[test]
    fn long_failure_lists_are_cut_and_hangs_counted() {
        let m = matrix("name: long\nkernels: [debian:6.1]\nscenarios: [seed.yaml]\n");
        let mut run = run_for(&m.cells()[0], 30, 25);
        run.iterations[29].verdict = Verdict::Hang;
        run.summary = summarize(&run.iterations);
        assert_eq!(
            outcome_summary(&run),
            "26 of 30 iterations failed (87%, 95% CI 70-95%), 1 hang, 0 panics; errnos: EBUSY 25"
        );
        let xml = junit_cells(&results(vec![run])).unwrap();
        let parsed = Report::deserialize_from_str(&xml).unwrap();
        match &parsed.test_suites[0].test_cases[0].status {
            TestCaseStatus::NonSuccess { description, .. } => {
                let d = description.as_ref().map(|d| d.as_str()).unwrap_or_default();
                assert_eq!(d.lines().count(), MAX_REASONS + 1);
                assert_eq!(d.lines().last(), Some("and 6 more"));
            }
            other => panic!("{other:?}"),
        }
    }

    /// A WARNING while setup ran fails `crashrig run` (exit 1), but failed no iteration: the
    /// matrix exited 0 with a green junit-cells.xml and no word in summary.md.
    #[test]
    fn a_failed_setup_kernel_log_fails_the_cell() {
        use super::super::baseline::judge;
        use crate::report::SetupDmesg;
        let m = matrix("name: s\nkernels: [debian:6.1, debian:6.12]\nscenarios: [coin.yaml]\n");
        let c = m.cells();
        let mut warned = run_for(&c[1], 2, 0);
        let mut f = finding("xfs_inode_inactive");
        f.expected = false;
        warned.setup_dmesg = Some(SetupDmesg {
            verdict: Verdict::Fail,
            reasons: vec!["dmesg warning: WARNING at xfs_inode_inactive".into()],
            findings: vec![f],
            dmesg_files: vec![],
        });
        let r = results(vec![run_for(&c[0], 2, 0), warned]);
        assert_eq!(r.runs[1].exit_code(), 1, "as `crashrig run` says");
        assert_eq!(exit_code(&r, false, &[]), 1);
        let md = markdown(&r, &compare(&r), &[]);
        assert!(
            md.contains("> **debian-6.12/coin**: setup's kernel log failed"),
            "{md}"
        );
        let parsed = Report::deserialize_from_str(&junit_cells(&r).unwrap()).unwrap();
        assert_eq!(parsed.failures, 1);
        // A baseline that knows the finding: no regression, and JUnit agrees (skipped).
        let b = baseline_from(&r);
        assert_eq!(b.cells[1].findings, ["xfs_inode_inactive"]);
        let j = judge(&r, &b);
        assert_eq!(j.regressions, []);
        assert_eq!(exit_code(&r, true, &j.regressions), 0);
        assert_eq!(j.known, ["debian-6.12/coin"]);
        let xml = junit_cells_known(&r, &j.known, &j.regressions).unwrap();
        assert_eq!(Report::deserialize_from_str(&xml).unwrap().failures, 0);
        let xml = crate::report::writer::junit_with(&r, |run| {
            j.known
                .contains(&super::super::compare::RunKey::of(run).id())
        });
        assert!(!xml.contains("<failure"), "{xml}");
        // One that does not: a new finding, in setup.
        let mut b = b;
        b.cells[1].findings.clear();
        let j = judge(&r, &b);
        assert_eq!(
            j.regressions
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>(),
            [
                "debian-6.12/coin: new warning finding `xfs_inode_inactive` (1 times, in setup's \
              kernel log)"
            ]
        );
    }

    /// A new finding under `dmesg.fail-on: none` fails no iteration but is a regression (exit
    /// 1): junit-cells.xml showed the cell as passed.
    #[test]
    fn a_regression_without_failed_iterations_is_a_junit_failure() {
        use super::super::baseline::judge;
        let m = matrix("name: w\nkernels: [debian:6.1]\nscenarios: [warn.yaml]\n");
        let c = m.cells();
        let mut run = run_for(&c[0], 3, 0);
        run.iterations[1]
            .findings
            .push(finding("xfs_inode_inactive"));
        run.summary = summarize(&run.iterations);
        let before = results(vec![run_for(&c[0], 3, 0)]);
        let now = results(vec![run]);
        let j = judge(&now, &baseline_from(&before));
        assert_eq!(exit_code(&now, true, &j.regressions), 1);
        let parsed = Report::deserialize_from_str(
            &junit_cells_known(&now, &j.known, &j.regressions).unwrap(),
        )
        .unwrap();
        assert_eq!(parsed.failures, 1);
        match &parsed.test_suites[0].test_cases[0].status {
            TestCaseStatus::NonSuccess { message, ty, .. } => {
                assert_eq!(ty.as_ref().map(|t| t.as_str()), Some("regression"));
                let m = message.as_ref().map(|m| m.as_str()).unwrap_or_default();
                assert!(
                    m.contains("new warning finding `xfs_inode_inactive`"),
                    "{m}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// junit.xml named a cell's suite `scenario @ spec`: the cells of a `filesystem` parameter
    /// (or two labels of one spec) were suites of one name with cases of one classname, so a
    /// failing `iteration 3` could not be told apart from the others'.
    #[test]
    fn junit_xml_names_each_cells_suite_by_its_id() {
        let m = matrix(
            "name: f\nkernels: [debian:6.12]\nscenarios: [seed.yaml]\n\
             parameters: { filesystem: [xfs, ext4] }\n",
        );
        let r = results(m.cells().iter().map(|c| run_for(c, 2, 1)).collect());
        let parsed = Report::deserialize_from_str(&crate::report::writer::junit(&r)).unwrap();
        let names: Vec<&str> = parsed.test_suites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "debian-6.12/seed/filesystem=xfs",
                "debian-6.12/seed/filesystem=ext4"
            ]
        );
        let class = parsed.test_suites[1].test_cases[0].classname.as_ref();
        assert_eq!(
            class.map(|c| c.as_str()),
            Some("debian-6.12/seed/filesystem=ext4")
        );
    }

    /// 12 comparisons, each at p < 0.05, with no word on their number: a real 3-kernel matrix
    /// showed `debian-6.1 vs again` (one kernel under two labels) in bold as significant.
    #[test]
    fn many_comparisons_say_that_significance_is_corrected_for_their_number() {
        let m = matrix(
            "name: c\nkernels: [debian:6.1, debian:6.12, { spec: debian:6.1, label: again }]\n\
             scenarios: [seed.yaml, control.yaml]\n",
        );
        let r = results(m.cells().iter().map(|c| run_for(c, 10, 2)).collect());
        let md = markdown(&r, &compare(&r), &[]);
        assert!(
            md.contains(
                "6 comparisons: each p is Holm-adjusted for their number, and a line is \
                 significant when its adjusted p is below 0.05, so that the chance of any \
                 significant line where no kernel differs stays at 5%."
            ),
            "{md}"
        );
        // One comparison: nothing to say.
        let m = matrix("name: c\nkernels: [debian:6.1, debian:6.12]\nscenarios: [seed.yaml]\n");
        let r = results(m.cells().iter().map(|c| run_for(c, 10, 2)).collect());
        assert!(!markdown(&r, &compare(&r), &[]).contains("comparisons"));
    }
}
