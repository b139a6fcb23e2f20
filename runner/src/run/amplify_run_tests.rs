//! The amplify driver on scripted fake machines: which batches boot, which only set up again,
//! what counts as an outcome, and the budget. No QEMU; each test well under a second.

use std::sync::{Arc, Mutex};

use crashrig_guest::{Op, Plan, StepReport};

use super::*;
use crate::cache::Cache;
use crate::report::events::{Reporter, Stamped};
use crate::report::Verdict;
use crate::run::fake::{fake_kernel, FakeMachine, Reply};
use crate::vm::Accel;

/// `busy` decides whether umount fails with EBUSY (on the fake); `cpus` is the VM's shape.
const SCENARIO: &str = "\
name: knobs
parameters:
  busy: { default: 0, values: [0, 1] }
  cpus: { default: 2, values: CPUS }
devices:
  - { name: scratch, size: 1G }
filesystem: { type: xfs, device: scratch }
iterations: 10
setup:
  - mkfs: {}
steps:
  - mount: {}
  - run: { command: 'echo busy=${busy}' }
  - umount: { id: umount, expect: ok }
";

/// Keeps the runs as they finish.
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<Vec<RunRecord>>>);

impl Reporter for Runs {
    fn report(&mut self, e: &Stamped) {
        if let Event::RunFinished { run, .. } = &e.event {
            self.0.lock().unwrap().push((**run).clone());
        }
    }
}

/// Whether the plan is an iteration of a setting with `busy=1`, and where its umount is.
fn busy_umount(plan: &Plan) -> Option<usize> {
    let busy = plan
        .steps
        .iter()
        .any(|s| matches!(&s.op, Op::Run { command, .. } if command.contains("busy=1")));
    let umount = plan
        .steps
        .iter()
        .position(|s| matches!(s.op, Op::Umount { .. }));
    umount.filter(|_| busy && plan.label.starts_with("iteration"))
}

fn ebusy() -> StepReport {
    StepReport {
        attempts: 1,
        errno: Some("EBUSY".into()),
        ..StepReport::default()
    }
}

/// A machine on which umount fails with EBUSY exactly under `busy=1`.
fn busy_machine() -> FakeMachine {
    FakeMachine::with_plans(|plan, _| match busy_umount(plan) {
        Some(step) => Reply::Step {
            step,
            report: ebusy(),
        },
        None => Reply::Ok,
    })
}

struct Made {
    /// Per machine made: the CPUs of the scenario it was made for, and its call log.
    machines: Vec<(u32, Arc<Mutex<Vec<String>>>)>,
}

struct Driver {
    dir: tempfile::TempDir,
    opts: AmplifyOptions,
    runs: Runs,
}

impl Driver {
    fn new(cpus: &str, budget: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("knobs.yaml");
        std::fs::write(&path, SCENARIO.replace("CPUS", cpus)).unwrap();
        let opts = AmplifyOptions {
            scenario: path,
            against: None,
            target: Some("umount:EBUSY".into()),
            budget,
            batch: 10,
            confidence: 0.95,
            seed: Some(3),
            vm: VmOptions::default(),
            build: BuildRequest::default(),
        };
        Driver {
            dir,
            opts,
            runs: Runs::default(),
        }
    }

    /// The search, then what `crashrig amplify` prints and writes after it.
    async fn amplify(&self, machine: impl FnMut() -> FakeMachine + Send) -> AmplifyOutcome {
        let (report, _) = self.search(machine).await;
        let out = self.dir.path().join("out");
        let base = load_setting(&self.opts.scenario, &Setting::new()).unwrap();
        let space = space_of(&base.scenario, &Setting::new()).unwrap();
        finish(
            &self.opts,
            &out,
            "knobs",
            report.unwrap(),
            Some(Target::parse("umount:EBUSY")),
            &space,
        )
        .unwrap()
    }

    /// Runs the search; `machine` makes each new machine.
    async fn search(
        &self,
        mut machine: impl FnMut() -> FakeMachine + Send,
    ) -> (Result<Report, AmplifyRunError>, Made) {
        let base = load_setting(&self.opts.scenario, &Setting::new())
            .unwrap()
            .scenario;
        let space = space_of(&base, &Setting::new()).unwrap();
        let made = Arc::new(Mutex::new(Vec::new()));
        let made2 = made.clone();
        let mut rigs = Rigs::new(move |_side: usize, s: &Scenario| {
            let m = machine();
            made2.lock().unwrap().push((s.vm.cpus, m.log.clone()));
            m
        });
        let out = self.dir.path().join("out");
        let run_base = RunOptions::new(Accel::Tcg, out.clone(), Cache::at(out.join("cache")));
        let mut sink = EventSink::new(vec![Box::new(self.runs.clone())]);
        let mut index = 0;
        let result = search_on(
            &self.opts,
            space,
            &[("fake:1".to_string(), fake_kernel())],
            "img",
            &run_base,
            &mut rigs,
            &mut sink,
            &mut index,
        )
        .await
        .map(|(report, _, _)| report);
        rigs.stop().await;
        let machines = made.lock().unwrap().clone();
        (result, Made { machines })
    }

    fn runs(&self) -> Vec<RunRecord> {
        self.runs.0.lock().unwrap().clone()
    }
}

fn count(log: &Arc<Mutex<Vec<String>>>, what: &str) -> usize {
    log.lock().unwrap().iter().filter(|l| *l == what).count()
}

/// How many times consecutive batches changed setting, and changed `cpus`.
fn changes(runs: &[RunRecord]) -> (usize, usize) {
    let settings: Vec<&Setting> = runs.iter().map(|r| &r.setting).collect();
    let setting = settings.windows(2).filter(|w| w[0] != w[1]).count();
    let cpus = settings
        .windows(2)
        .filter(|w| w[0].get("cpus") != w[1].get("cpus"))
        .count();
    (setting, cpus)
}

#[tokio::test]
async fn settings_of_one_vm_shape_share_one_booted_machine() {
    let d = Driver::new("[2]", 60);
    let (report, made) = d.search(busy_machine).await;
    let report = report.unwrap();
    let runs = d.runs();
    assert!(runs.len() >= 2, "{} batches", runs.len());
    let (setting_changes, _) = changes(&runs);
    assert!(setting_changes >= 1, "both settings ran");
    assert_eq!(made.machines.len(), 1, "one machine for one shape");
    let log = &made.machines[0].1;
    assert_eq!(count(log, "boot"), 1, "{:?}", log.lock().unwrap());
    // Setup runs at the boot and again at each change of setting, never otherwise.
    assert_eq!(count(log, "plan setup"), 1 + setting_changes);
    assert_eq!(count(log, "stop"), 1, "stopped once, at the end");
    // busy=1 always hits, busy=0 never: the search finds it.
    let winner = report.row(report.winner.unwrap()).unwrap();
    assert_eq!(winner.label, "busy=1");
    assert_eq!(winner.counts[0].hits, winner.counts[0].trials);
}

#[tokio::test]
async fn a_new_vm_shape_boots_a_new_machine_and_stops_the_old_one() {
    let d = Driver::new("[1, 2]", 80);
    let (report, made) = d.search(busy_machine).await;
    report.unwrap();
    let runs = d.runs();
    let (_, cpus_changes) = changes(&runs);
    assert!(cpus_changes >= 1, "the search moved between shapes");
    assert_eq!(made.machines.len(), 1 + cpus_changes);
    // Each machine was made for the CPUs of the batch that needed it, booted once, and was
    // stopped (at the change of shape, or at the end).
    let mut shapes = runs
        .iter()
        .map(|r| r.setting["cpus"].parse::<u32>().unwrap())
        .collect::<Vec<_>>();
    shapes.dedup();
    let made_cpus: Vec<u32> = made.machines.iter().map(|(c, _)| *c).collect();
    assert_eq!(made_cpus, shapes);
    for (_, log) in &made.machines {
        let log = log.lock().unwrap().clone();
        assert_eq!(log.first().map(String::as_str), Some("boot"), "{log:?}");
        assert_eq!(log.iter().filter(|l| *l == "boot").count(), 1, "{log:?}");
        assert_eq!(log.last().map(String::as_str), Some("stop"), "{log:?}");
    }
}

#[tokio::test]
async fn infrastructure_errors_are_not_outcomes_but_cost_budget() {
    let budget = 60;
    let d = Driver::new("[2]", budget);
    // Every third iteration of busy=1 loses its VM: an infrastructure error, neither a hit
    // nor a clean iteration.
    let seen = Arc::new(Mutex::new(0u32));
    let (report, _) = d
        .search(|| {
            let seen = seen.clone();
            FakeMachine::with_plans(move |plan, _| match busy_umount(plan) {
                Some(step) => {
                    let mut n = seen.lock().unwrap();
                    *n += 1;
                    if n.is_multiple_of(3) {
                        Reply::Die { step: 0 }
                    } else {
                        Reply::Step {
                            step,
                            report: ebusy(),
                        }
                    }
                }
                None => Reply::Ok,
            })
        })
        .await;
    let report = report.unwrap();
    let runs = d.runs();
    let busy_runs: Vec<&RunRecord> = runs.iter().filter(|r| r.setting["busy"] == "1").collect();
    let verdicts = |v: Verdict| {
        busy_runs
            .iter()
            .flat_map(|r| &r.iterations)
            .filter(|i| i.verdict == v)
            .count() as u64
    };
    let (fails, passes, errors) = (
        verdicts(Verdict::Fail),
        verdicts(Verdict::Pass),
        verdicts(Verdict::Error),
    );
    assert!(errors > 0, "the script lost the VM");
    let row = report
        .rows
        .iter()
        .find(|r| r.label == "busy=1")
        .expect("busy=1 ran");
    assert_eq!(row.counts[0].hits, fails);
    assert_eq!(row.counts[0].trials, fails + passes, "errors are no trials");
    assert_eq!(passes, 0, "a lost VM is not a clean iteration");
    // The budget bounds every iteration run, errors included.
    let ran: u64 = runs.iter().map(|r| r.iterations.len() as u64).sum();
    assert_eq!(report.spent, ran);
    assert!(ran <= budget, "{ran} iterations for a budget of {budget}");
}

#[tokio::test]
async fn a_setting_that_never_boots_ends_the_search_with_an_error() {
    let d = Driver::new("[2]", 300);
    let (result, made) = d
        .search(|| {
            let mut m = FakeMachine::healthy();
            m.failing_boots = (1..=10).collect();
            m
        })
        .await;
    match result {
        Err(AmplifyRunError::Batches { failed, reason }) => {
            assert_eq!(failed, MAX_FAILED_BATCHES);
            assert!(reason.contains("QEMU"), "{reason}");
        }
        other => panic!("expected a batches error, got {other:?}"),
    }
    let boots: usize = made.machines.iter().map(|(_, l)| count(l, "boot")).sum();
    assert_eq!(
        boots as u32, MAX_FAILED_BATCHES,
        "one boot attempt per batch"
    );
}

/// A winner whose lead over the default is within chance says so: here busy=1 shows the
/// target in every iteration and the default in nine of ten, too close for these budgets.
#[tokio::test]
async fn a_winner_not_shown_to_beat_the_default_says_so() {
    let d = Driver::new("[2]", 60);
    let machine = || {
        let mut default_iterations = 0u32;
        FakeMachine::with_plans(move |plan, _| {
            let umount = plan
                .steps
                .iter()
                .position(|s| matches!(s.op, Op::Umount { .. }));
            let iteration = plan.label.starts_with("iteration");
            match (umount, busy_umount(plan)) {
                (_, Some(step)) => Reply::Step {
                    step,
                    report: ebusy(),
                },
                (Some(step), None) if iteration => {
                    default_iterations += 1;
                    if default_iterations.is_multiple_of(10) {
                        Reply::Ok
                    } else {
                        Reply::Step {
                            step,
                            report: ebusy(),
                        }
                    }
                }
                _ => Reply::Ok,
            }
        })
    };
    let outcome = d.amplify(machine).await;
    let text = report_text(&outcome);
    let w = outcome.report.winner.expect("a winner");
    assert_ne!(w, outcome.report.default, "{text}");
    let p = outcome.report.fisher_vs_default.expect("compared");
    assert!(p >= 0.05, "{text}");
    assert!(
        text.contains(&format!(
            "winner: busy=1; Fisher p against the default = {p:.3} (not shown to beat the default"
        )),
        "{text}"
    );
    // The scenario is not rewritten to a default that is not shown to be better.
    assert_eq!(outcome.amplified, None, "{text}");
    assert!(
        text.contains(&format!(
            "no amplified scenario written: the winner was not shown to beat the default (Fisher p = {p:.3}); the scenario's defaults stay as they are (try the winner with --param busy=1 --param cpus=2)\n"
        )),
        "{text}"
    );
    assert!(outcome.not_amplified.is_some());
}

/// Probe 12's amp-known: a winner with no Fisher p was printed as "(the default)" although the
/// default never ran. A default without an outcome (here: every iteration of it an
/// infrastructure error) leaves the winner uncompared, and the text says so.
#[test]
fn a_winner_never_compared_with_the_default_is_not_called_the_default() {
    let row = |id: usize, label: &str, hits: u64| crate::amplify::Row {
        id,
        arm: vec![id],
        label: label.into(),
        counts: vec![Counts { trials: 10, hits }],
        rates: vec![hits as f64 / 10.0],
        intervals: vec![(0.0, 1.0)],
        score: hits as f64 / 10.0,
        p_best: 0.5,
    };
    let outcome = AmplifyOutcome {
        scenario: "amp-known".into(),
        kernel: "debian:6.1".into(),
        against: None,
        target: None,
        report: Report {
            goal: Goal::Rate,
            stop: Some(crate::amplify::Stop::Budget),
            spent: 20,
            budget: 20,
            rows: vec![row(2, "k=2", 5), row(4, "k=4", 0)],
            winner: Some(2),
            leader: Some(2),
            space_size: 5,
            untried: vec![],
            default: 0,
            fisher_vs_default: None,
            default_measured: false,
        },
        winner_setting: [("k".to_string(), "2".to_string())].into_iter().collect(),
        amplified: None,
        rewrite_error: None,
        not_amplified: Some(
            "the default did not run, so the winner is not compared with it".into(),
        ),
        knobs: vec![],
    };
    let text = report_text(&outcome);
    assert!(!text.contains("(the default)"), "{text}");
    assert!(
        text.contains(
            "winner: k=2; the default did not run, so the winner is not compared with it\n"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn the_winner_is_written_out_as_a_scenario_that_loads_with_it_as_defaults() {
    let d = Driver::new("[2]", 60);
    let outcome = d.amplify(busy_machine).await;
    let text = report_text(&outcome);
    assert!(
        text.contains("winner: busy=1; Fisher p against the default < 0.001\n"),
        "{text}"
    );
    let path = outcome.amplified.expect("written");
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(
        written.contains("busy: { default: 1, values: [0, 1] }"),
        "{written}"
    );
    let again = load_setting(&path, &Setting::new()).unwrap();
    assert_eq!(again.scenario.setting["busy"], "1");
}

#[tokio::test]
async fn a_search_where_nothing_shows_writes_no_scenario_and_says_so() {
    let d = Driver::new("[2]", 40);
    let outcome = d.amplify(FakeMachine::healthy).await;
    assert_eq!(outcome.amplified, None);
    let text = report_text(&outcome);
    assert!(
        text.contains("no setting showed the target: nothing to amplify"),
        "{text}"
    );
    assert!(!text.contains("winner:"), "{text}");
}

/// A budget of one batch ran the default only, and the report said "winner: default (the
/// default)": a setting compared with nothing is no winner, and the settings never tried are
/// named.
#[tokio::test]
async fn a_budget_that_ran_only_the_default_names_no_winner_and_the_settings_never_tried() {
    let d = Driver::new("[2]", 10);
    let machine = || {
        FakeMachine::with_plans(|plan, _| {
            let umount = plan
                .steps
                .iter()
                .position(|s| matches!(s.op, Op::Umount { .. }));
            match umount {
                Some(step) if plan.label.starts_with("iteration") => Reply::Step {
                    step,
                    report: ebusy(),
                },
                _ => Reply::Ok,
            }
        })
    };
    let outcome = d.amplify(machine).await;
    let text = report_text(&outcome);
    let r = &outcome.report;
    assert_eq!(r.rows.len(), 1, "{text}");
    assert_eq!(r.winner, None, "{text}");
    assert_eq!(r.leader, Some(r.default), "{text}");
    assert_eq!(r.untried, ["busy=1"], "{text}");
    assert!(!text.contains("\nwinner"), "{text}");
    assert!(
        text.contains(
            "settings tried: 1 of 2; never tried, though the search meant to compare them: busy=1\n\
             no winner: only the default ran (10/10 (100%, 95% CI 72%-100%)), so nothing was \
             compared with it; a larger --budget tries the other settings\n"
        ),
        "{text}"
    );
    assert_eq!(outcome.amplified, None, "{text}");
    assert_eq!(
        r.proven_winner(),
        Err("only the default ran: no other setting was tried".into())
    );
}
