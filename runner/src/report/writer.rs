//! Writes `results.json` (rewritten atomically and durably after every iteration, so a killed
//! run or a crashed host keeps everything finished) and `junit.xml`.

use std::path::{Path, PathBuf};

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::error_chain;
use super::events::{Event, Reporter, Stamped};
use super::results::{summarize, HostInfo, Results, RunRecord, Verdict, SCHEMA_VERSION};
use super::store::{write_atomic, write_json};

pub struct ResultsWriter {
    dir: PathBuf,
    results: Results,
    /// Event run index -> position in `results.runs` (runs of a parallel matrix start and
    /// finish in any order).
    positions: std::collections::HashMap<usize, usize>,
    /// The first write error, reported once.
    error: Option<String>,
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl ResultsWriter {
    pub fn new(dir: &Path, host: HostInfo) -> Self {
        ResultsWriter {
            dir: dir.to_path_buf(),
            results: Results {
                schema: SCHEMA_VERSION,
                crashrig_version: env!("CARGO_PKG_VERSION").into(),
                started: now_rfc3339(),
                finished: None,
                host,
                runs: Vec::new(),
                matrix: None,
            },
            positions: Default::default(),
            error: None,
        }
    }

    /// Starts from results already in the directory (resume).
    pub fn with_existing(dir: &Path, results: Results) -> Self {
        ResultsWriter {
            dir: dir.to_path_buf(),
            results,
            positions: Default::default(),
            error: None,
        }
    }

    /// Continues `results` in place: run event index `i` is run `i` of the results, so a
    /// resumed run replaces its unfinished record and the order stays.
    pub fn resuming(dir: &Path, results: Results) -> Self {
        let positions = (0..results.runs.len()).map(|i| (i, i)).collect();
        ResultsWriter {
            dir: dir.to_path_buf(),
            results: Results {
                finished: None,
                ..results
            },
            positions,
            error: None,
        }
    }

    fn run_mut(&mut self, index: usize) -> Option<&mut RunRecord> {
        let pos = *self.positions.get(&index)?;
        self.results.runs.get_mut(pos)
    }

    fn write(&mut self) {
        if let Err(e) = write_json(&self.dir.join("results.json"), &self.results) {
            self.failed(e);
        }
    }

    fn write_junit(&mut self) {
        let xml = junit(&self.results);
        if let Err(e) = write_atomic(&self.dir.join("junit.xml"), xml.as_bytes()) {
            self.failed(e);
        }
    }

    /// The first failure is said at once (a full disk should not wait for the end of a long
    /// run to be noticed) and again by the caller, which exits 2; the file on disk keeps the
    /// last complete results.
    fn failed(&mut self, e: super::store::StoreError) {
        if self.error.is_none() {
            let text = format!("{}; it keeps the results written before", error_chain(&e));
            errln!("crashrig: error: {text}");
            self.error = Some(text);
        }
    }
}

impl Reporter for ResultsWriter {
    fn report(&mut self, e: &Stamped) {
        match &e.event {
            Event::RunStarted { index, run, .. } => {
                match self.run_mut(*index) {
                    Some(slot) => *slot = (**run).clone(),
                    None => {
                        self.positions.insert(*index, self.results.runs.len());
                        self.results.runs.push((**run).clone());
                    }
                }
                self.write();
            }
            Event::Host(host) => self.results.host = host.clone(),
            Event::BootFinished { index, boot } => {
                if let Some(run) = self.run_mut(*index) {
                    run.boots.push(boot.clone());
                }
            }
            Event::SetupFinished { index, steps } => {
                if let Some(run) = self.run_mut(*index) {
                    run.setup = steps.clone();
                }
                self.write();
            }
            Event::SetupDmesg { index, dmesg } => {
                if let Some(run) = self.run_mut(*index) {
                    run.setup_dmesg
                        .get_or_insert_with(Default::default)
                        .merge(dmesg);
                }
                self.write();
            }
            Event::IterationFinished { index, record, .. } => {
                if let Some(run) = self.run_mut(*index) {
                    run.iterations.push((**record).clone());
                    run.summary = summarize(&run.iterations);
                }
                self.write();
            }
            Event::RunFinished { index, run } => {
                if let Some(slot) = self.run_mut(*index) {
                    // Boots reach the writer as events only.
                    let boots = std::mem::take(&mut slot.boots);
                    *slot = (**run).clone();
                    if slot.boots.is_empty() {
                        slot.boots = boots;
                    }
                }
                self.write();
                self.write_junit();
            }
            _ => {}
        }
    }

    fn finish(&mut self) {
        self.results.finished = Some(now_rfc3339());
        self.write();
        self.write_junit();
    }

    fn failure(&self) -> Option<String> {
        self.error.clone()
    }
}

/// JUnit XML: one suite per run (scenario on kernel), one case per iteration.
pub fn junit(results: &Results) -> String {
    junit_with(results, |_| false)
}

/// [`junit`] where the failed iterations of runs `known` says a baseline knows (failures
/// that are no regression) are `<skipped type="known failure">`, as pytest writes an expected
/// failure: JUnit consumers show them as skipped, not failed, in agreement with the exit code.
pub fn junit_with(results: &Results, known: impl Fn(&RunRecord) -> bool) -> String {
    let mut report = Report::new("crashrig");
    for run in &results.runs {
        // A matrix cell is named by its id: cells of one scenario and kernel spec that differ
        // in parameters (or kernel label) would otherwise be suites and cases of one name.
        let (suite_name, classname) = match &run.cell {
            Some(c) => (c.id.clone(), c.id.clone()),
            None => (
                format!("{} @ {}", run.scenario.name, run.kernel.spec),
                format!("{}.{}", run.scenario.name, run.kernel.spec),
            ),
        };
        let mut suite = TestSuite::new(suite_name);
        suite.add_property(quick_junit::Property::new(
            "kernel.version",
            run.kernel.version.as_str(),
        ));
        suite.add_property(quick_junit::Property::new("accel", run.accel.as_str()));
        suite.add_property(quick_junit::Property::new("seed", run.seed.to_string()));
        if let Some(err) = &run.error {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
            status.set_message(err.as_str());
            suite.add_test_case(TestCase::new("setup", status));
        }
        // Setup's kernel log is no iteration's: a failing one is a case of its own.
        if let Some(d) = run.setup_dmesg.as_ref().filter(|d| d.failed()) {
            let mut status = if known(run) {
                let mut status = TestCaseStatus::skipped();
                status.set_message(format!(
                    "known failure (the baseline's, not a regression): {}",
                    d.reasons.first().cloned().unwrap_or_default()
                ));
                status.set_type("known failure");
                status
            } else {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status.set_message(d.reasons.first().cloned().unwrap_or_default());
                status.set_type("fail");
                status
            };
            status.set_description(d.reasons.join("\n"));
            let mut case = TestCase::new("setup kernel log", status);
            case.set_classname(classname.as_str());
            suite.add_test_case(case);
        }
        for it in &run.iterations {
            let status = match it.verdict {
                Verdict::Pass => TestCaseStatus::success(),
                v if v.is_failure() && known(run) => {
                    let mut status = TestCaseStatus::skipped();
                    status.set_message(format!(
                        "known failure (the baseline's, not a regression): {}",
                        it.reasons.first().cloned().unwrap_or_default()
                    ));
                    status.set_type("known failure");
                    status.set_description(it.reasons.join("\n"));
                    status
                }
                v => {
                    let kind = if v == Verdict::Error {
                        NonSuccessKind::Error
                    } else {
                        NonSuccessKind::Failure
                    };
                    let mut status = TestCaseStatus::non_success(kind);
                    status.set_message(it.reasons.first().cloned().unwrap_or_default());
                    status.set_type(format!("{v:?}").to_lowercase());
                    status.set_description(it.reasons.join("\n"));
                    status
                }
            };
            let mut case = TestCase::new(format!("iteration {}", it.iteration), status);
            case.set_classname(classname.as_str());
            // try_: a time no run records (negative, huge) must not panic the report.
            case.set_time(
                std::time::Duration::try_from_secs_f64(it.duration_ms / 1000.0).unwrap_or_default(),
            );
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    report.to_string().unwrap_or_default()
}
