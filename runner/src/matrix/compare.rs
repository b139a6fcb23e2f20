//! Comparing failure rates across kernels: for each scenario (and parameter combination),
//! every pair of kernels, as a 2x2 table of failed and passed iterations tested with
//! Fisher's exact test.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::model::cell_id;
use super::significance::{fisher_exact_two_sided, format_p, holm};
use crate::report::{Results, RunRecord};

/// Significance level of comparisons and baseline checks.
pub const ALPHA: f64 = 0.05;

/// What a run is, for grouping: the cell's kernel label, scenario key and parameters, or
/// for a plain `crashrig run` the kernel spec and scenario name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunKey {
    pub kernel: String,
    pub scenario: String,
    pub params: BTreeMap<String, String>,
}

impl RunKey {
    pub fn of(run: &RunRecord) -> RunKey {
        match &run.cell {
            Some(c) => RunKey {
                kernel: c.kernel.clone(),
                scenario: c.scenario.clone(),
                params: c.params.clone(),
            },
            None => RunKey {
                kernel: run.kernel.spec.clone(),
                scenario: run.scenario.name.clone(),
                params: BTreeMap::new(),
            },
        }
    }

    /// The cell id this key names.
    pub fn id(&self) -> String {
        cell_id(&self.kernel, &self.scenario, &self.params)
    }

    /// `scenario` or `scenario (name=value, ...)`.
    pub fn scenario_label(&self) -> String {
        if self.params.is_empty() {
            self.scenario.clone()
        } else {
            let pairs: Vec<String> = self
                .params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!("{} ({})", self.scenario, pairs.join(", "))
        }
    }
}

/// Two kernels on one scenario (and parameter combination).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub scenario: String,
    pub params: BTreeMap<String, String>,
    pub kernel_a: String,
    pub kernel_b: String,
    /// Failed iterations (fail, hang, panic) and judged iterations (all but errors).
    pub failed_a: u32,
    pub judged_a: u32,
    pub failed_b: u32,
    pub judged_b: u32,
    /// The most frequent errno of the failing steps in both runs, or "failure".
    pub what: String,
    /// Fisher's exact test, two-sided.
    pub p_value: f64,
    /// `p_value` after Holm's correction over every comparison of the results: the chance
    /// that any of them comes out significant when no kernel differs stays at `ALPHA`.
    /// Equal to `p_value` when there is one comparison (and in older output).
    #[serde(default)]
    pub p_adjusted: Option<f64>,
    /// `p_adjusted < ALPHA`.
    pub significant: bool,
}

impl Comparison {
    pub fn rate_a(&self) -> f64 {
        ratio(self.failed_a, self.judged_a)
    }
    pub fn rate_b(&self) -> f64 {
        ratio(self.failed_b, self.judged_b)
    }
}

fn ratio(a: u32, b: u32) -> f64 {
    if b == 0 {
        0.0
    } else {
        f64::from(a) / f64::from(b)
    }
}

/// `debian-6.1 vs debian-6.12: EBUSY 45% vs 20%, p = 0.18`.
impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} vs {}: {} {:.0}% vs {:.0}%, {}",
            self.kernel_a,
            self.kernel_b,
            self.what,
            100.0 * self.rate_a(),
            100.0 * self.rate_b(),
            format_p(self.p_value)
        )?;
        // The adjusted p when it reads differently from the raw one.
        let adjusted = self
            .p_adjusted
            .filter(|&a| format_p(a) != format_p(self.p_value));
        match (adjusted, self.significant) {
            (Some(a), true) => write!(f, " (Holm-adjusted {}, significant)", format_p(a)),
            (Some(a), false) => write!(f, " (Holm-adjusted {})", format_p(a)),
            (None, true) => f.write_str(" (significant)"),
            (None, false) => Ok(()),
        }
    }
}

/// Every pair of kernels for each scenario and parameter combination, in the order the runs
/// appear (expansion order for a matrix). Pairs where a side judged no iteration are left out.
pub fn compare(results: &Results) -> Vec<Comparison> {
    // Group by scenario + params, keeping first-appearance order of groups and kernels.
    type Group<'a> = ((String, BTreeMap<String, String>), Vec<&'a RunRecord>);
    let mut groups: Vec<Group> = Vec::new();
    for run in &results.runs {
        let key = RunKey::of(run);
        let group = (key.scenario, key.params);
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, runs)) => runs.push(run),
            None => groups.push((group, vec![run])),
        }
    }
    let mut out = Vec::new();
    for ((scenario, params), runs) in groups {
        for (i, a) in runs.iter().enumerate() {
            for b in &runs[i + 1..] {
                let (sa, sb) = (&a.summary, &b.summary);
                let (ja, jb) = (sa.iterations - sa.errors, sb.iterations - sb.errors);
                if ja == 0 || jb == 0 {
                    continue;
                }
                let p = fisher_exact_two_sided(
                    u64::from(sa.failed),
                    u64::from(ja - sa.failed),
                    u64::from(sb.failed),
                    u64::from(jb - sb.failed),
                );
                out.push(Comparison {
                    scenario: scenario.clone(),
                    params: params.clone(),
                    kernel_a: RunKey::of(a).kernel,
                    kernel_b: RunKey::of(b).kernel,
                    failed_a: sa.failed,
                    judged_a: ja,
                    failed_b: sb.failed,
                    judged_b: jb,
                    what: comparison_word(a, b),
                    p_value: p,
                    p_adjusted: None,
                    significant: false,
                });
            }
        }
    }
    let raw: Vec<f64> = out.iter().map(|c| c.p_value).collect();
    for (c, adjusted) in out.iter_mut().zip(holm(&raw)) {
        c.p_adjusted = Some(adjusted);
        c.significant = adjusted < ALPHA;
    }
    out
}

/// The word before a comparison's rates: the errno when every failing iteration of both
/// kernels (or of the one that failed) failed the same way, its first failing step returning
/// that errno, else `failure`. The rates are of any failure: an errno only the most frequent
/// (one EBUSY among hangs) named failures that were not it.
fn comparison_word(a: &RunRecord, b: &RunRecord) -> String {
    let (ea, eb) = (uniform_failure(a), uniform_failure(b));
    match (a.summary.failed > 0, b.summary.failed > 0) {
        (true, true) if ea == eb => ea,
        (true, false) => ea,
        (false, true) => eb,
        _ => None,
    }
    .map_or_else(|| "failure".into(), |(_, errno)| errno.to_string())
}

/// The step and errno every failing iteration of `run` failed with (its first failing step,
/// with an errno), or None when some failed otherwise (a hang, a panic, a finding, another
/// step or errno) or none failed.
fn uniform_failure(run: &RunRecord) -> Option<(&str, &str)> {
    let mut kinds = run
        .iterations
        .iter()
        .filter(|it| it.verdict.is_failure())
        .map(|it| {
            it.steps
                .iter()
                .find(|s| !s.ok)
                .and_then(|s| Some((s.id.as_str(), s.errno.as_deref()?)))
        });
    let first = kinds.next()??;
    kinds.all(|k| k == Some(first)).then_some(first)
}

/// The errno that failing steps of failing iterations returned most often (ties: the name
/// first in alphabetical order).
pub fn failure_errno(runs: &[&RunRecord]) -> Option<String> {
    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    for run in runs {
        for it in run.iterations.iter().filter(|it| it.verdict.is_failure()) {
            for step in it.steps.iter().filter(|s| !s.ok) {
                if let Some(e) = &step.errno {
                    *counts.entry(e).or_default() += 1;
                }
            }
        }
    }
    let best = counts.values().copied().max()?;
    counts
        .into_iter()
        .find(|(_, n)| *n == best)
        .map(|(e, _)| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::report::{summarize, Verdict};

    /// One kernel failed with EBUSY, the other in another way: the rates are not EBUSY
    /// rates, so the line says `failure` (F23).
    #[test]
    fn kernels_failing_differently_are_compared_as_failures() {
        let m = matrix("name: c\nkernels: [debian:6.1, debian:6.12]\nscenarios: [mixed.yaml]\n");
        let c = m.cells();
        let other = run_with(
            &c[1],
            (1..=3)
                .map(|i| iteration(i, Verdict::Fail, None, None))
                .collect(),
        );
        let r = results(vec![run_for(&c[0], 3, 3), other]);
        let cmp = compare(&r);
        assert_eq!(cmp[0].what, "failure", "{cmp:?}");
        // Both with EBUSY, or only one failing: the errno.
        let r = results(vec![run_for(&c[0], 3, 3), run_for(&c[1], 3, 1)]);
        assert_eq!(compare(&r)[0].what, "EBUSY");
        let r = results(vec![run_for(&c[0], 3, 3), run_for(&c[1], 3, 0)]);
        assert_eq!(compare(&r)[0].what, "EBUSY");
    }

    fn two_kernels(failed_a: u32, failed_b: u32, n: u32) -> Results {
        let m = matrix(
            "name: c\nkernels: [debian:6.1, debian:6.12]\nscenarios: [seed.yaml, control.yaml]\n",
        );
        let cells = m.cells();
        results(vec![
            run_for(&cells[0], n, failed_a),
            run_for(&cells[1], n, 0),
            run_for(&cells[2], n, failed_b),
            run_for(&cells[3], n, 0),
        ])
    }

    #[test]
    fn compares_each_scenario_across_kernels() {
        let cmp = compare(&two_kernels(9, 4, 20));
        assert_eq!(cmp.len(), 2);
        assert_eq!(
            cmp[0].to_string(),
            "debian-6.1 vs debian-6.12: EBUSY 45% vs 20%, p = 0.18 (Holm-adjusted p = 0.35)"
        );
        assert!(!cmp[0].significant);
        assert_eq!(cmp[0].scenario, "seed");
        // The control never failed: nothing to name, p = 1.
        assert_eq!(
            cmp[1].to_string(),
            "debian-6.1 vs debian-6.12: failure 0% vs 0%, p = 1"
        );

        let cmp = compare(&two_kernels(15, 3, 20));
        assert!(cmp[0].significant, "{}", cmp[0]);
        assert_eq!(
            cmp[0].to_string(),
            "debian-6.1 vs debian-6.12: EBUSY 75% vs 15%, p < 0.001 (significant)"
        );
    }

    #[test]
    fn three_kernels_give_three_pairs_and_errors_are_not_judged() {
        let m = matrix(
            "name: c\nkernels: [debian:6.1, debian:6.12, { spec: debian:6.1, label: again }]\n\
             scenarios: [seed.yaml]\n",
        );
        let cells = m.cells();
        let mut with_errors = run_for(&cells[2], 10, 2);
        with_errors.iterations[9].verdict = Verdict::Error;
        with_errors.summary = summarize(&with_errors.iterations);
        let mut all_errors = run_for(&cells[1], 2, 0);
        for it in &mut all_errors.iterations {
            it.verdict = Verdict::Error;
        }
        all_errors.summary = summarize(&all_errors.iterations);
        let r = results(vec![run_for(&cells[0], 10, 5), all_errors, with_errors]);
        let cmp = compare(&r);
        // debian-6.12 judged nothing: only the pair without it remains.
        assert_eq!(cmp.len(), 1);
        assert_eq!(
            (cmp[0].kernel_a.as_str(), cmp[0].kernel_b.as_str()),
            ("debian-6.1", "again")
        );
        assert_eq!((cmp[0].failed_b, cmp[0].judged_b), (2, 9));
    }

    #[test]
    fn plain_runs_group_by_scenario_name_and_spec() {
        let m = matrix("name: c\nkernels: [debian:6.1, debian:6.12]\nscenarios: [seed.yaml]\n");
        let cells = m.cells();
        let mut a = run_for(&cells[0], 10, 6);
        let mut b = run_for(&cells[1], 10, 3);
        a.cell = None;
        b.cell = None;
        let cmp = compare(&results(vec![a, b]));
        assert_eq!(
            cmp[0].to_string(),
            "debian:6.1 vs debian:6.12: EBUSY 60% vs 30%, p = 0.37"
        );
    }

    #[test]
    fn names_the_most_frequent_errno_of_failing_steps() {
        let m = matrix("name: c\nkernels: [debian:6.1]\nscenarios: [seed.yaml]\n");
        let cell = &m.cells()[0];
        let run = run_with(
            cell,
            vec![
                iteration(1, Verdict::Fail, Some("EBUSY"), None),
                iteration(2, Verdict::Fail, Some("EIO"), None),
                iteration(3, Verdict::Fail, Some("EIO"), None),
                iteration(4, Verdict::Pass, None, None),
            ],
        );
        assert_eq!(failure_errno(&[&run]).as_deref(), Some("EIO"));
        let hang = run_with(cell, vec![iteration(1, Verdict::Hang, None, None)]);
        assert_eq!(failure_errno(&[&hang]), None);
    }

    /// One EBUSY among hangs: the line said `EBUSY 100% vs 100%` although five of six
    /// failures on 6.12 were hangs.
    #[test]
    fn an_errno_names_the_rates_only_when_every_failure_is_it() {
        let m = matrix("name: c\nkernels: [debian:6.1, debian:6.12]\nscenarios: [seed.yaml]\n");
        let c = m.cells();
        let mut hangs = vec![iteration(1, Verdict::Fail, Some("EBUSY"), None)];
        hangs.extend((2..=6).map(|i| iteration(i, Verdict::Hang, None, None)));
        let r = results(vec![run_for(&c[0], 6, 6), run_with(&c[1], hangs.clone())]);
        assert_eq!(compare(&r)[0].what, "failure");
        // Only the kernel with hangs failed: no errno either.
        let r = results(vec![run_for(&c[0], 6, 0), run_with(&c[1], hangs)]);
        assert_eq!(compare(&r)[0].what, "failure");
        // The same errno from another step is another failure.
        let mut other = run_for(&c[1], 6, 6);
        for it in &mut other.iterations {
            it.steps[0].id = "remount".into();
        }
        let r = results(vec![run_for(&c[0], 6, 6), other]);
        assert_eq!(compare(&r)[0].what, "failure");
        let r = results(vec![run_for(&c[0], 6, 6), run_for(&c[1], 6, 2)]);
        assert_eq!(compare(&r)[0].what, "EBUSY");
    }

    /// A matrix with many comparisons put a raw p < 0.05 in bold (the same kernel under two
    /// labels, in a real run); significance is now family-wise.
    #[test]
    fn a_small_p_among_several_comparisons_is_significant_only_after_holms_correction() {
        // Seed 9/20 vs 2/20 (two-sided p 0.031), the control 0/20 vs 0/20 (p 1): two tests.
        let cmp = compare(&two_kernels(9, 2, 20));
        assert!(cmp[0].p_value < ALPHA, "{}", cmp[0]);
        assert!(!cmp[0].significant, "{}", cmp[0]);
        assert_eq!(cmp[0].p_adjusted, Some(2.0 * cmp[0].p_value));
        assert_eq!(
            cmp[0].to_string(),
            "debian-6.1 vs debian-6.12: EBUSY 45% vs 10%, p = 0.03 (Holm-adjusted p = 0.06)"
        );
        // A large difference stays significant after the correction.
        let cmp = compare(&two_kernels(15, 3, 20));
        assert!(cmp[0].significant, "{}", cmp[0]);
        assert_eq!(
            cmp[0].to_string(),
            "debian-6.1 vs debian-6.12: EBUSY 75% vs 15%, p < 0.001 (significant)"
        );
    }
}
