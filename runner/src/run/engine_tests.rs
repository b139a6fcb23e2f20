//! The run loop driven by a scripted fake machine: no QEMU, each test well under a second.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crashrig_guest::StepReport;

use super::*;
use crate::report::events::{Reporter, Stamped};
use crate::run::fake::{fake_kernel, FakeMachine, Reply};
use crate::run::restore::RestoreMode;
use crate::scenario::*;

fn scenario(steps: Vec<Step>) -> Scenario {
    Scenario {
        version: 1,
        name: "fake".into(),
        description: String::new(),
        vm: VmSpec::default(),
        kconfig: vec![],
        devices: vec![Device {
            name: "scratch".into(),
            size: Size(1 << 30),
            dm: false,
        }],
        filesystem: Some(Filesystem {
            fstype: "xfs".into(),
            device: None,
            mountpoint: "/mnt".into(),
            mkfs_options: vec![],
            mount_options: vec![],
        }),
        iterations: 3,
        iterations_share_state: false,
        iteration_timeout: Duration::from_secs(300),
        seed: Some(7),
        setup: vec![Step::Mkfs(MkfsStep::default())],
        steps,
        cleanup: vec![],
        dmesg: DmesgExpect::default(),
        parameters: vec![],
        setting: Default::default(),
    }
}

fn mount_umount() -> Vec<Step> {
    vec![
        Step::Mount(MountStep::default()),
        Step::Umount(UmountStep::default()),
    ]
}

/// Keeps every event.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Event>>>);

impl Reporter for Recorder {
    fn report(&mut self, e: &Stamped) {
        self.0.lock().unwrap().push(e.event.clone());
    }
}

impl Recorder {
    fn names(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|e| match e {
                Event::RunStarted { .. } => "run-started".to_string(),
                Event::BootFinished { boot, .. } => format!("boot ({})", boot.reason),
                Event::SetupFinished { .. } => "setup".into(),
                Event::IterationFinished { record, .. } => {
                    format!("iteration {} {:?}", record.iteration, record.verdict)
                }
                Event::RunFinished { .. } => "run-finished".into(),
                Event::Message { text, .. } => format!("message {text}"),
                // a_warning_during_setup_is_setups_finding_with_or_without_restores checks it
                Event::SetupDmesg { .. } => String::new(),
                other => format!("{other:?}"),
            })
            .filter(|name| !name.is_empty())
            .collect()
    }
}

struct Harness {
    out: tempfile::TempDir,
    loaded: LoadedScenario,
    kernel: ResolvedKernel,
    events: Recorder,
    sink: EventSink,
}

impl Harness {
    fn new(s: Scenario) -> Self {
        let events = Recorder::default();
        Harness {
            out: tempfile::tempdir().unwrap(),
            loaded: LoadedScenario {
                scenario: s,
                path: "fake.yaml".into(),
            },
            kernel: fake_kernel(),
            sink: EventSink::new(vec![Box::new(events.clone())]),
            events,
        }
    }

    fn opts(&self) -> RunOptions {
        RunOptions::new(
            Accel::Tcg,
            self.out.path().to_path_buf(),
            Cache::at(self.out.path().join("cache")),
        )
    }

    /// One batch with the default options.
    async fn run_plain(&mut self, rig: &mut Rig<FakeMachine>) -> RunRecord {
        let opts = self.opts();
        self.run(rig, &opts).await
    }

    /// Runs one batch until the machine starts its plan `label`, then drops the batch, as an
    /// interrupt does; `plans` receives the labels the machine's `on_plan` is told.
    async fn run_until_plan(
        &mut self,
        rig: &mut Rig<FakeMachine>,
        opts: &RunOptions,
        plans: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
        label: &str,
    ) {
        let interrupt = async {
            while let Some(started) = plans.recv().await {
                if started == label {
                    return;
                }
            }
        };
        tokio::select! {
            biased;
            _ = interrupt => {}
            _ = self.run(rig, opts) => panic!("the run finished before plan `{label}` started"),
        }
    }

    async fn run(&mut self, rig: &mut Rig<FakeMachine>, opts: &RunOptions) -> RunRecord {
        run_batch(
            rig,
            &self.loaded,
            &self.kernel,
            "img",
            opts,
            0,
            &mut self.sink,
        )
        .await
    }
}

/// A run of `iterations` iterations of mount and umount whose iteration 1 gets `reply` and
/// every other plan a clean one: the harness (its results directory), the rig and the record.
async fn run_with_iteration_1(
    reply: Reply,
    iterations: u32,
) -> (Harness, Rig<FakeMachine>, RunRecord) {
    let mut s = scenario(mount_umount());
    s.iterations = iterations;
    let mut h = Harness::new(s);
    let mut rig = Rig::new(FakeMachine::new(move |label, _| match label {
        "iteration 1" => reply.clone(),
        _ => Reply::Ok,
    }));
    let r = h.run_plain(&mut rig).await;
    (h, rig, r)
}

fn verdicts(r: &RunRecord) -> Vec<Verdict> {
    r.iterations.iter().map(|i| i.verdict).collect()
}

fn log(m: &FakeMachine) -> Vec<String> {
    m.log.lock().unwrap().clone()
}

#[tokio::test]
async fn healthy_run_boots_once_sets_up_once_and_passes_every_iteration() {
    let mut h = Harness::new(scenario(mount_umount()));
    let mut rig = Rig::new(FakeMachine::healthy());
    let r = h.run_plain(&mut rig).await;
    assert_eq!(r.error, None);
    assert_eq!(verdicts(&r), vec![Verdict::Pass; 3]);
    assert_eq!(r.setup.len(), 1);
    assert_eq!(
        log(rig.machine()),
        [
            "boot",
            "plan setup",
            "plan iteration 1",
            "plan iteration 2",
            "plan iteration 3",
        ]
    );
    assert!(rig.is_ready(), "a clean run leaves the machine ready");
    assert_eq!(
        h.events.names(),
        [
            "run-started",
            "boot (start)",
            "setup",
            "iteration 1 Pass",
            "iteration 2 Pass",
            "iteration 3 Pass",
            "run-finished"
        ]
    );
    // Each iteration's dmesg went to its own file.
    let dmesg = std::fs::read_to_string(
        h.out
            .path()
            .join(r.iterations[0].dmesg_file.as_ref().unwrap()),
    )
    .unwrap();
    assert!(dmesg.contains("fake kernel says hello"), "{dmesg}");
}

#[tokio::test]
async fn a_hang_is_power_cut_then_the_machine_boots_and_sets_up_again() {
    let mut h = Harness::new(scenario(mount_umount()));
    let mut rig = Rig::new(FakeMachine::new(|label, _| match label {
        "iteration 2" => Reply::Hang { step: 1 },
        _ => Reply::Ok,
    }));
    let r = h.run_plain(&mut rig).await;
    assert_eq!(r.error, None);
    assert_eq!(verdicts(&r), [Verdict::Pass, Verdict::Hang, Verdict::Pass]);
    let hang = &r.iterations[1];
    // The reason names the step that never finished, and that step's record fails.
    assert!(
        hang.reasons[0].starts_with("hang: umount#2 (umount) did not finish: "),
        "{:?}",
        hang.reasons
    );
    // ... once: the step's own short note would only repeat it.
    assert_eq!(hang.reasons.len(), 1, "{:?}", hang.reasons);
    assert_eq!(hang.steps.len(), 2, "the step before the hang is kept");
    assert!(hang.steps[0].ok);
    assert_eq!(
        (hang.steps[1].id.as_str(), hang.steps[1].ok),
        ("umount#2", false)
    );
    assert_eq!(
        hang.steps[1].note.as_deref(),
        Some("did not finish: the guest hung")
    );
    assert!(
        !hang.console_tail.is_empty(),
        "a hang carries the console tail"
    );
    let l = log(rig.machine());
    let after = &l[l.iter().position(|c| c == "plan iteration 2").unwrap() + 1..];
    assert_eq!(
        after,
        ["power-cut", "boot", "plan setup", "plan iteration 3"]
    );
    assert_eq!(r.summary.hangs, 1);
}

#[tokio::test]
async fn an_unexpected_panic_is_a_panic_verdict_and_the_run_goes_on_after_a_boot() {
    let mut h = Harness::new(scenario(mount_umount()));
    let mut rig = Rig::new(FakeMachine::new(|label, _| match label {
        "iteration 1" => Reply::Panic { step: 0 },
        _ => Reply::Ok,
    }));
    let r = h.run_plain(&mut rig).await;
    assert_eq!(verdicts(&r), [Verdict::Panic, Verdict::Pass, Verdict::Pass]);
    assert_eq!(
        r.iterations[0].reasons[0],
        "panic: during mount#1 (mount): fake oops"
    );
    assert!(!r.iterations[0].steps[0].ok);
    let boots = log(rig.machine()).iter().filter(|c| *c == "boot").count();
    assert_eq!(boots, 2);
    assert!(!log(rig.machine()).contains(&"power-cut".to_string()));
}

#[tokio::test]
async fn qemu_dying_is_an_infrastructure_error_not_a_kernel_verdict() {
    let mut h = Harness::new(scenario(mount_umount()));
    let mut rig = Rig::new(FakeMachine::new(|label, _| match label {
        "iteration 2" => Reply::Die { step: 1 },
        _ => Reply::Ok,
    }));
    let r = h.run_plain(&mut rig).await;
    assert_eq!(verdicts(&r), [Verdict::Pass, Verdict::Error, Verdict::Pass]);
    assert!(
        r.iterations[1].reasons[0]
            .starts_with("infrastructure: during umount#2 (umount): QEMU exited"),
        "{:?}",
        r.iterations[1].reasons
    );
    assert_eq!(
        r.iterations[1].steps.len(),
        1,
        "QEMU's death is no step's failure"
    );
    assert!(
        !Verdict::Error.is_failure(),
        "an error never counts against the kernel"
    );
    assert_eq!(r.summary.failed, 0);
    assert_eq!(r.summary.errors, 1);
}

#[tokio::test]
async fn qemu_failing_to_start_is_a_run_error_with_no_iterations() {
    let mut h = Harness::new(scenario(mount_umount()));
    let mut machine = FakeMachine::healthy();
    machine.failing_boots.push_back(1);
    let mut rig = Rig::new(machine);
    let r = h.run_plain(&mut rig).await;
    assert!(r.iterations.is_empty());
    let e = r.error.expect("an error");
    assert!(
        e.contains("QEMU exited (exit status: 1) before the guest answered"),
        "{e}"
    );
    assert!(!rig.is_ready());
}

#[tokio::test]
async fn a_failing_setup_step_ends_the_run_with_an_error_naming_it() {
    let mut h = Harness::new(scenario(mount_umount()));
    let mut rig = Rig::new(FakeMachine::new(|label, _| match label {
        "setup" => Reply::Step {
            step: 0,
            report: StepReport {
                attempts: 1,
                exit_status: Some(1),
                stderr: "mkfs.xfs: bad superblock".into(),
                ..StepReport::default()
            },
        },
        _ => Reply::Ok,
    }));
    let r = h.run_plain(&mut rig).await;
    assert!(r.iterations.is_empty());
    let e = r.error.expect("an error");
    assert!(
        e.starts_with("setup step setup-mkfs#1 failed: mkfs exited with status 1"),
        "{e}"
    );
    assert!(e.contains("bad superblock"), "{e}");
    assert_eq!(r.setup.len(), 1);
    assert!(!r.setup[0].ok);
    assert!(!rig.is_ready());
}

#[tokio::test]
async fn a_setup_that_fails_after_a_reboot_ends_the_run_keeping_earlier_iterations() {
    let mut h = Harness::new(scenario(mount_umount()));
    let mut rig = Rig::new(FakeMachine::new(|label, n| match (label, n) {
        ("iteration 1", _) => Reply::Hang { step: 0 },
        ("setup", 1) => Reply::Hang { step: 0 },
        _ => Reply::Ok,
    }));
    let r = h.run_plain(&mut rig).await;
    assert_eq!(verdicts(&r), [Verdict::Hang]);
    let e = r.error.expect("an error");
    assert!(e.starts_with("setup step setup failed: hang: "), "{e}");
}

fn failed(it: &IterationRecord, _: &str) -> bool {
    it.verdict.is_failure()
}

#[tokio::test]
async fn early_stop_ends_the_batch_at_the_first_sighting_of_the_target() {
    let mut s = scenario(mount_umount());
    s.iterations = 10;
    let mut h = Harness::new(s);
    let busy = StepReport {
        attempts: 1,
        errno: Some("EBUSY".into()),
        ..StepReport::default()
    };
    let mut rig = Rig::new(FakeMachine::step_at("iteration 3", 1, busy));
    let opts = RunOptions {
        stop_when: Some(failed),
        ..h.opts()
    };
    let r = h.run(&mut rig, &opts).await;
    assert_eq!(verdicts(&r), [Verdict::Pass, Verdict::Pass, Verdict::Fail]);
    assert!(
        r.iterations[2].reasons[0].contains("returned EBUSY"),
        "{:?}",
        r.iterations[2].reasons
    );
    assert!(rig.is_ready(), "a failed step leaves the guest usable");
}

#[tokio::test]
async fn a_kept_rig_runs_the_next_batch_without_booting_or_setting_up_again() {
    let mut h = Harness::new(scenario(mount_umount()));
    let mut rig = Rig::new(FakeMachine::healthy());
    let opts = RunOptions {
        iterations: Some(2),
        ..h.opts()
    };
    let first = h.run(&mut rig, &opts).await;
    let second = h.run(&mut rig, &opts).await;
    assert_eq!(verdicts(&first), [Verdict::Pass; 2]);
    assert_eq!(verdicts(&second), [Verdict::Pass; 2]);
    assert!(
        second.setup.is_empty(),
        "setup ran once, in the first batch"
    );
    let l = log(rig.machine());
    assert_eq!(l.iter().filter(|c| *c == "boot").count(), 1, "{l:?}");
    assert_eq!(l.iter().filter(|c| *c == "plan setup").count(), 1, "{l:?}");
    rig.stop().await;
    assert!(!rig.is_ready());
    assert_eq!(log(rig.machine()).last().unwrap(), "stop");
}

#[tokio::test]
async fn a_batch_after_a_hang_in_the_last_iteration_boots_again() {
    let mut h = Harness::new(scenario(mount_umount()));
    let mut rig = Rig::new(FakeMachine::new(|label, n| match (label, n) {
        ("iteration 2", 0) => Reply::Hang { step: 0 },
        _ => Reply::Ok,
    }));
    let opts = RunOptions {
        iterations: Some(2),
        ..h.opts()
    };
    let first = h.run(&mut rig, &opts).await;
    assert_eq!(verdicts(&first), [Verdict::Pass, Verdict::Hang]);
    assert!(!rig.is_ready());
    let second = h.run(&mut rig, &opts).await;
    assert_eq!(verdicts(&second), [Verdict::Pass; 2]);
    assert_eq!(
        second.setup.len(),
        1,
        "the second batch set the new boot up"
    );
    let boots = log(rig.machine()).iter().filter(|c| *c == "boot").count();
    assert_eq!(boots, 2);
}

#[tokio::test]
async fn an_interrupted_run_keeps_finished_iterations_and_leaves_the_rig_unready() {
    let mut s = scenario(mount_umount());
    s.iterations = 5;
    let mut h = Harness::new(s);
    let mut machine = FakeMachine::healthy();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    machine.on_plan = Some(tx);
    let mut rig = Rig::new(machine);
    let opts = h.opts();
    h.run_until_plan(&mut rig, &opts, &mut rx, "iteration 3")
        .await;
    assert_eq!(
        h.events.names(),
        [
            "run-started",
            "boot (start)",
            "setup",
            "iteration 1 Pass",
            "iteration 2 Pass"
        ]
    );
    assert!(
        !rig.is_ready(),
        "the machine's state is unknown after an interrupt"
    );
    rig.stop().await;
    assert_eq!(log(rig.machine()).last().unwrap(), "stop");
}

/// What a killed crashrig leaves: results.json, rewritten as each iteration finishes, holds
/// the finished iterations, and `--resume` from it runs only the rest into the same record.
#[tokio::test]
async fn an_interrupted_runs_results_file_keeps_its_finished_iterations_for_a_resume() {
    use crate::report::writer::ResultsWriter;
    let mut s = scenario(mount_umount());
    s.iterations = 4;
    let mut h = Harness::new(s);
    let results = h.out.path().join("results.json");
    h.sink = EventSink::new(vec![Box::new(ResultsWriter::new(
        h.out.path(),
        Default::default(),
    ))]);
    let mut machine = FakeMachine::new(|label, _| match label {
        "iteration 2" => Reply::Hang { step: 1 },
        _ => Reply::Ok,
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    machine.on_plan = Some(tx);
    let mut rig = Rig::new(machine);
    let opts = h.opts();
    h.run_until_plan(&mut rig, &opts, &mut rx, "iteration 3")
        .await;
    let kept = crate::report::store::read_results(&results).unwrap();
    assert_eq!(kept.runs.len(), 1);
    let run = &kept.runs[0];
    assert_eq!(run.finished, None);
    assert_eq!(verdicts(run), [Verdict::Pass, Verdict::Hang]);
    assert_eq!((run.summary.passed, run.summary.hangs), (1, 1));
    assert!(!run.setup.is_empty());

    h.sink = EventSink::new(vec![Box::new(ResultsWriter::resuming(
        h.out.path(),
        kept.clone(),
    ))]);
    let opts = RunOptions {
        resume: Some(run.clone()),
        ..h.opts()
    };
    let mut rig = Rig::new(FakeMachine::healthy());
    let r = h.run(&mut rig, &opts).await;
    assert!(h.sink.finish().is_none());
    let done = crate::report::store::read_results(&results).unwrap();
    assert_eq!(
        done.runs.len(),
        1,
        "the resumed run replaces its unfinished record"
    );
    assert_eq!(done.runs[0], r);
    let numbers: Vec<u32> = r.iterations.iter().map(|i| i.iteration).collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
    assert_eq!(
        verdicts(&r),
        [Verdict::Pass, Verdict::Hang, Verdict::Pass, Verdict::Pass]
    );
    assert_eq!((r.summary.passed, r.summary.hangs), (3, 1));
    assert_eq!(
        log(rig.machine()),
        ["boot", "plan setup", "plan iteration 3", "plan iteration 4"]
    );
}

#[tokio::test]
async fn results_that_cannot_be_written_stop_no_iteration_and_are_the_runs_failure_at_the_end() {
    use crate::report::writer::ResultsWriter;
    let mut h = Harness::new(scenario(mount_umount()));
    // results.json cannot replace a directory that holds something.
    let blocked = h.out.path().join("results.json");
    std::fs::create_dir_all(blocked.join("in-the-way")).unwrap();
    h.sink = EventSink::new(vec![
        Box::new(ResultsWriter::new(h.out.path(), Default::default())),
        Box::new(h.events.clone()),
    ]);
    let mut rig = Rig::new(FakeMachine::healthy());
    let r = h.run_plain(&mut rig).await;
    assert_eq!(verdicts(&r), vec![Verdict::Pass; 3]);
    let failure = h
        .sink
        .finish()
        .expect("the failed write is the run's failure");
    assert!(
        failure.contains("results.json") && failure.contains("keeps the results written before"),
        "{failure}"
    );
    assert!(blocked.join("in-the-way").is_dir());
    // junit.xml is another file: it is written all the same.
    let junit = std::fs::read_to_string(h.out.path().join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase").count(), 3, "{junit}");
}

/// `--resume`: the unfinished run's iterations are kept and not run again, its seed is the one
/// used, and a smaller iteration count than it kept drops nothing and says so.
#[tokio::test]
async fn a_resumed_run_keeps_its_iterations_and_seed_and_runs_only_the_missing_ones() {
    let mut s = scenario(mount_umount());
    s.iterations = 4;
    s.seed = None;
    let mut h = Harness::new(s);
    let mut rig = Rig::new(FakeMachine::healthy());
    let first = h.run_plain(&mut rig).await;
    rig.stop().await;
    // Killed after iterations 1 and 3 were recorded (restored iterations finish out of order).
    let mut killed = first.clone();
    killed.finished = None;
    killed
        .iterations
        .retain(|i| i.iteration != 2 && i.iteration != 4);
    killed.seed = 4242;
    let opts = RunOptions {
        resume: Some(killed.clone()),
        ..h.opts()
    };
    let mut rig = Rig::new(FakeMachine::healthy());
    let r = h.run(&mut rig, &opts).await;
    assert_eq!(
        r.seed, 4242,
        "the killed run's seed, so its plan is the same"
    );
    assert_eq!(r.started, killed.started);
    let numbers: Vec<u32> = r.iterations.iter().map(|i| i.iteration).collect();
    assert_eq!(numbers, [1, 3, 2, 4]);
    assert_eq!(r.iterations[..2], killed.iterations[..]);
    assert_eq!(r.summary.iterations, 4);
    let plans: Vec<String> = log(rig.machine())
        .into_iter()
        .filter(|l| l.starts_with("plan iteration"))
        .collect();
    assert_eq!(plans, ["plan iteration 2", "plan iteration 4"]);
    let warned = |names: Vec<String>| {
        names
            .into_iter()
            .filter(|n| n.contains("all are kept and counted"))
            .collect::<Vec<_>>()
    };
    assert_eq!(warned(h.events.names()), Vec::<String>::new());
    rig.stop().await;

    // Resumed with -n 2: only iteration 2 runs, iteration 3 is not dropped, and it is said.
    let opts = RunOptions {
        resume: Some(killed.clone()),
        iterations: Some(2),
        ..h.opts()
    };
    let mut rig = Rig::new(FakeMachine::healthy());
    let r = h.run(&mut rig, &opts).await;
    let numbers: Vec<u32> = r.iterations.iter().map(|i| i.iteration).collect();
    assert_eq!(numbers, [1, 3, 2]);
    assert_eq!(r.summary.iterations, 3);
    assert_eq!(
        warned(h.events.names()),
        ["message run 1: 2 iterations planned, but the run being resumed kept 2 (1 numbered past 2); all are kept and counted"]
    );
    let plans: Vec<String> = log(rig.machine())
        .into_iter()
        .filter(|l| l.starts_with("plan iteration"))
        .collect();
    assert_eq!(plans, ["plan iteration 2"]);
    rig.stop().await;
}

#[tokio::test]
async fn a_power_cut_step_reads_dmesg_cuts_and_boots_on_the_same_machine() {
    let mut steps = mount_umount();
    steps.insert(1, Step::PowerCut(HostStep::default()));
    let mut s = scenario(steps);
    s.iterations = 1;
    let mut h = Harness::new(s);
    let mut rig = Rig::new(FakeMachine::healthy());
    let r = h.run_plain(&mut rig).await;
    assert_eq!(verdicts(&r), [Verdict::Pass]);
    let ids: Vec<&str> = r.iterations[0]
        .steps
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(ids, ["mount#1", "power-cut#2", "umount#3"]);
    assert_eq!(
        log(rig.machine()),
        [
            "boot",
            "plan setup",
            "plan iteration 1",
            "power-cut",
            "boot",
            "plan iteration 1",
        ]
    );
    // The plan before the cut read the kernel log last (no plan of its own), and each boot's
    // messages were read by the first plan after it, into the boot's own file.
    let it = &r.iterations[0];
    let text = std::fs::read_to_string(h.out.path().join(it.dmesg_file.as_ref().unwrap())).unwrap();
    assert_eq!(text.matches("fake kernel says hello").count(), 2, "{text}");
    for boot in &r.boots {
        let file = h.out.path().join(boot.dmesg_file.as_ref().unwrap());
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.contains("fake kernel says hello"),
            "{}: {text}",
            file.display()
        );
    }
}

/// What a boot printed after its kernel log was last read reached only its console: a power
/// cut, a reboot or a panic takes it from there, and leaves out what was read.
#[tokio::test]
async fn a_boots_last_words_before_a_power_cut_reboot_or_panic_are_findings() {
    for (step, reason) in [
        (Step::PowerCut(HostStep::default()), "power-cut"),
        (Step::Reboot(HostStep::default()), "reboot"),
        (Step::Panic(HostStep::default()), "panic"),
    ] {
        let mut steps = mount_umount();
        steps.insert(1, step);
        let mut s = scenario(steps);
        s.iterations = 1;
        let mut h = Harness::new(s);
        let mut machine = FakeMachine::healthy();
        // The fake's kernel log has one record, stamped 1.0 s: the line before it was read
        // with it, the one after it was not.
        machine.boot_console = [
            "[    0.900000] WARNING: CPU: 0 PID: 1 at fs/ext4/probe.c:1 read_probe+0x1/0x2",
            "[    1.000000] fake console",
            "[    1.500000] WARNING: CPU: 0 PID: 1 at fs/ext4/probe.c:2 last_words_probe+0x1/0x2",
        ]
        .map(String::from)
        .to_vec();
        let mut rig = Rig::new(machine);
        let r = h.run_plain(&mut rig).await;
        let it = &r.iterations[0];
        let titles: Vec<&str> = it.findings.iter().map(|f| f.title.as_str()).collect();
        assert!(
            titles.iter().any(|t| t.contains("last_words_probe")),
            "{reason}: {titles:?}"
        );
        assert!(
            !titles.iter().any(|t| t.contains("read_probe")),
            "{reason}: {titles:?}"
        );
        assert_eq!(r.boots.last().unwrap().reason, reason);
        let text =
            std::fs::read_to_string(h.out.path().join(it.dmesg_file.as_ref().unwrap())).unwrap();
        assert!(text.contains("last_words_probe"), "{reason}: {text}");
        // The plan before the host step read the kernel log (the reboot's did not, and lost
        // everything before it), and the plan after it read the new boot's.
        assert_eq!(
            text.matches("fake kernel says hello").count(),
            2,
            "{reason}: {text}"
        );
    }
}

#[tokio::test]
async fn consecutive_batches_on_one_candidate_boot_and_set_up_once() {
    let mut h = Harness::new(scenario(mount_umount()));
    let mut rig = Rig::new(FakeMachine::healthy());
    let log = rig.machine().log.clone();
    let batch = |n| RunOptions {
        iterations: Some(n),
        ..h.opts()
    };
    let (first, later) = (batch(2), batch(1));
    let on = crate::run::bisect_run::OnKernel {
        loaded: &h.loaded,
        kernel: &h.kernel,
        image_key: "img",
    };
    // Three batches, as a bisection asking for one candidate three times in a row.
    let mut sizes = Vec::new();
    let next = crate::run::bisect_run::consecutive_batches(
        &mut rig,
        &on,
        first,
        4,
        &mut h.sink,
        |run, _| {
            sizes.push(run.iterations.len());
            Ok::<_, ()>((sizes.len() < 3).then(|| later.clone()))
        },
    )
    .await
    .unwrap();
    assert_eq!(next, 7, "three run indexes used");
    assert_eq!(sizes, [2, 1, 1]);
    let l = log.lock().unwrap().clone();
    assert_eq!(l.iter().filter(|c| *c == "boot").count(), 1, "{l:?}");
    assert_eq!(l.iter().filter(|c| *c == "plan setup").count(), 1, "{l:?}");
    assert_eq!(
        l.last().unwrap(),
        "stop",
        "the machine is stopped at the end"
    );
    assert!(!rig.is_ready());
}

#[tokio::test]
async fn restored_iterations_each_start_from_the_set_up_machine_saved_once() {
    let mut h = Harness::new(scenario(mount_umount()));
    let mut rig = Rig::new(FakeMachine::healthy());
    let opts = RunOptions {
        restore: RestoreMode::Always,
        ..h.opts()
    };
    let r = h.run(&mut rig, &opts).await;
    assert_eq!(r.error, None);
    assert_eq!(verdicts(&r), vec![Verdict::Pass; 3]);
    assert!(r.independent_iterations);
    assert_eq!(r.restore, "always");
    let mut expected: Vec<String> = ["boot", "plan setup", "save set-up"]
        .map(String::from)
        .to_vec();
    expected.extend(restored_iterations(3));
    assert_eq!(log(rig.machine()), expected);
    let restored: Vec<(String, Option<String>)> = h
        .events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::BootFinished { boot, .. } => Some((boot.reason.clone(), boot.restored.clone())),
            _ => None,
        })
        .collect();
    let set_up = || ("iteration".to_string(), Some("set-up".to_string()));
    assert_eq!(
        restored,
        [("start".to_string(), None), set_up(), set_up(), set_up()]
    );
    // The next batch of the same scenario and setup starts from the saved machine: no boot.
    rig.machine().log.lock().unwrap().clear();
    let r = h.run(&mut rig, &opts).await;
    assert_eq!(verdicts(&r), vec![Verdict::Pass; 3]);
    let log = log(rig.machine());
    assert_eq!(log.first().map(String::as_str), Some("restore set-up"));
    assert!(!log.contains(&"boot".to_string()), "{log:?}");
}

/// The machine calls of iterations `1..=n`, each restored from the set-up machine.
fn restored_iterations(n: u32) -> Vec<String> {
    (1..=n)
        .flat_map(|i| ["restore set-up".to_string(), format!("plan iteration {i}")])
        .collect()
}

/// The key an earlier run saved its set-up machine under, for `seed`.
fn set_up_key(s: &Scenario, seed: u64) -> String {
    plan::setup_key(s, seed, plan::iteration_seed(seed, u32::MAX))
}

/// A fake machine whose cache holds the set-up machine an earlier run saved with seed 7 (its
/// restores numbered in `failing` fail), and options that restore always with `seed`.
fn cached_set_up(h: &Harness, failing: &[u32], seed: u64) -> (Rig<FakeMachine>, RunOptions) {
    let mut machine = FakeMachine::healthy();
    machine.cached_set_up = Some(set_up_key(&h.loaded.scenario, 7));
    machine.failing_restores = failing.iter().copied().collect();
    let opts = RunOptions {
        restore: RestoreMode::Always,
        seed: Some(seed),
        ..h.opts()
    };
    (Rig::new(machine), opts)
}

#[tokio::test]
async fn a_set_up_machine_saved_by_an_earlier_run_starts_every_iteration_without_boot_or_setup() {
    let mut h = Harness::new(scenario(mount_umount()));
    let (mut rig, opts) = cached_set_up(&h, &[], 7);
    let r = h.run(&mut rig, &opts).await;
    assert_eq!(r.error, None);
    assert_eq!(verdicts(&r), vec![Verdict::Pass; 3]);
    assert!(r.independent_iterations);
    assert!(r.setup.is_empty(), "setup did not run: {:?}", r.setup);
    let mut expected = vec!["set-up found in the cache".to_string()];
    expected.extend(restored_iterations(3));
    assert_eq!(log(rig.machine()), expected);
    assert!(r
        .boots
        .iter()
        .all(|b| b.restored.as_deref() == Some("set-up") && b.from_cache));
}

#[tokio::test]
async fn another_seed_whose_setup_differs_does_not_use_the_saved_set_up_machine() {
    let mut s = scenario(mount_umount());
    // Setup writes seeded data: another seed writes other data.
    s.setup.push(Step::WriteData(DataStep {
        id: None,
        dir: "d".into(),
        files: 1,
        size: Size(4096),
        fsync: true,
    }));
    let mut h = Harness::new(s);
    let (mut rig, opts) = cached_set_up(&h, &[], 8);
    let r = h.run(&mut rig, &opts).await;
    assert_eq!(r.error, None);
    let log = log(rig.machine());
    assert!(!log.iter().any(|l| l.contains("cache")), "{log:?}");
    assert_eq!(&log[..3], ["boot", "plan setup", "save set-up"]);
}

#[tokio::test]
async fn a_saved_set_up_machine_that_does_not_start_is_set_up_and_saved_anew_once() {
    let mut h = Harness::new(scenario(mount_umount()));
    let (mut rig, opts) = cached_set_up(&h, &[1], 7);
    let r = h.run(&mut rig, &opts).await;
    assert_eq!(r.error, None);
    assert_eq!(verdicts(&r), vec![Verdict::Pass; 3]);
    assert!(r.independent_iterations, "restores go on after saving anew");
    assert!(!r.setup.is_empty(), "setup ran after the failed restore");
    let log = log(rig.machine());
    assert_eq!(
        &log[..7],
        [
            "set-up found in the cache",
            "restore set-up",
            "boot",
            "plan setup",
            "save set-up",
            "restore set-up",
            "plan iteration 1",
        ]
    );
    assert_eq!(log.iter().filter(|l| *l == "restore set-up").count(), 4);
    // A second failure leaves restores for good: iterations share the guest.
    let mut h = Harness::new(scenario(mount_umount()));
    let (mut rig, opts) = cached_set_up(&h, &[1, 2], 7);
    let r = h.run(&mut rig, &opts).await;
    assert_eq!(r.error, None);
    assert_eq!(verdicts(&r), vec![Verdict::Pass; 3]);
    assert!(!r.independent_iterations);
    let calls = self::log(rig.machine());
    assert_eq!(calls.iter().filter(|l| *l == "restore set-up").count(), 2);
    assert_eq!(
        calls.iter().filter(|l| *l == "boot").count(),
        2,
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_hang_over_restores_needs_no_boot_and_setup_the_next_iteration_restores() {
    let mut h = Harness::new(scenario(mount_umount()));
    let mut rig = Rig::new(FakeMachine::new(|label, _| match label {
        "iteration 2" => Reply::Hang { step: 1 },
        _ => Reply::Ok,
    }));
    let opts = RunOptions {
        restore: RestoreMode::Always,
        ..h.opts()
    };
    let r = h.run(&mut rig, &opts).await;
    assert_eq!(verdicts(&r), [Verdict::Pass, Verdict::Hang, Verdict::Pass]);
    let log = log(rig.machine());
    assert_eq!(log.iter().filter(|l| *l == "boot").count(), 1, "{log:?}");
    assert_eq!(
        log.iter().filter(|l| *l == "plan setup").count(),
        1,
        "{log:?}"
    );
}

#[tokio::test]
async fn scenarios_whose_iterations_share_state_run_them_on_one_machine() {
    let mut s = scenario(mount_umount());
    s.iterations_share_state = true;
    let mut h = Harness::new(s);
    let mut rig = Rig::new(FakeMachine::healthy());
    let opts = RunOptions {
        restore: RestoreMode::Always,
        ..h.opts()
    };
    let r = h.run(&mut rig, &opts).await;
    assert!(!r.independent_iterations);
    let log = log(rig.machine());
    assert!(!log.iter().any(|l| l.contains("set-up")), "{log:?}");
    // The user asked for restores of every iteration: told why they do not happen.
    let events = h.events.names();
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("message --restore always:")
                && e.contains("iterations-share-state")),
        "{events:?}"
    );
}

fn run_step(timeout_s: u64) -> Step {
    Step::Run(RunStep {
        id: None,
        command: "true".into(),
        timeout: Duration::from_secs(timeout_s),
        exit: 0,
    })
}

#[tokio::test]
async fn an_iterations_plans_are_bounded_by_the_iteration_timeout_not_their_summed_steps() {
    // Three 20 s steps in a 40 s iteration: the plan used to get 3 x 20 s + 60 s = 120 s.
    let mut s = scenario(vec![run_step(20), run_step(20), run_step(20)]);
    s.iteration_timeout = Duration::from_secs(40);
    s.iterations = 1;
    // A power cut splits the iteration in two plans; its boot does not count against it.
    s.steps.insert(1, Step::PowerCut(HostStep::default()));
    // A step whose own timeout is longer than the iteration's keeps it.
    s.steps.push(run_step(600));
    let mut h = Harness::new(s);
    let machine = FakeMachine::healthy();
    let deadlines = machine.deadlines.clone();
    let mut rig = Rig::new(machine);
    let r = h.run_plain(&mut rig).await;
    assert_eq!(verdicts(&r), vec![Verdict::Pass]);
    let plans: Vec<Duration> = deadlines
        .lock()
        .unwrap()
        .iter()
        .filter(|(label, _)| label == "iteration 1")
        .map(|(_, d)| *d)
        .collect();
    assert_eq!(plans.len(), 2, "{plans:?}");
    let secs = Duration::from_secs;
    // The fake takes no time: what is left is (almost) all of the 40 s each time.
    assert!(plans[0] <= secs(40) && plans[0] > secs(39), "{plans:?}");
    assert_eq!(plans[1], secs(600) + plan::STEP_GRACE);
    // Setup is outside the iteration: its summed rule.
    // Setup (one mkfs, no bound of its own) is outside any iteration: the iteration timeout
    // or its bounds added up plus a minute, whichever is longer.
    let setup = deadlines
        .lock()
        .unwrap()
        .iter()
        .find(|(label, _)| label == "setup")
        .map(|(_, d)| *d);
    assert_eq!(setup, Some(secs(60)));
}

#[test]
fn run_directory_names_stay_short_and_distinct_for_long_kernel_specs() {
    assert_eq!(sanitize("debian:6.1"), "debian_6.1");
    let spec = |last: &str| {
        let mut s = "debian-source:6.1".to_string();
        for p in ["0001-fs-defer-the-last-fput", "0002-Documentation", last] {
            s.push_str(&format!(
                " --patches tests/bisect/fput-rate/series/{p}.patch"
            ));
        }
        s
    };
    let (a, b) = (sanitize(&spec("0003-a")), sanitize(&spec("0003-b")));
    assert_eq!(a.len(), DIR_PART_MAX, "{a}");
    assert!(
        a.starts_with("debian-source_6.1_--patches_tests_bisect"),
        "{a}"
    );
    assert_ne!(a, b, "specs that differ only at the end get two names");
    assert_eq!(a, sanitize(&spec("0003-a")), "the same spec, the same name");
    // The longest run directory name fits a file name with room to spare.
    let name = format!("99-{}-{}-99", sanitize(&"s".repeat(300)), a);
    assert!(name.len() <= 2 * DIR_PART_MAX + 8, "{name}");
    assert!(name.len() < 255, "{name}");
}

fn plug_steps() -> Vec<Step> {
    vec![
        Step::Unplug(PlugStep::default()),
        Step::Replug(PlugStep::default()),
    ]
}

/// The calls after the first `after` in the log.
fn calls_after(m: &FakeMachine, after: &str) -> Vec<String> {
    let l = log(m);
    let at = l.iter().position(|c| c == after).expect(after);
    l[at + 1..].to_vec()
}

fn boot_reasons(r: &RunRecord) -> Vec<&str> {
    r.boots.iter().map(|b| b.reason.as_str()).collect()
}

#[tokio::test]
async fn unplug_and_replug_steps_drive_the_machine_and_wait_in_the_guest_for_the_disk() {
    let mut s = scenario(plug_steps());
    s.iterations = 1;
    let mut h = Harness::new(s);
    let mut rig = Rig::new(FakeMachine::healthy());
    let r = h.run_plain(&mut rig).await;
    assert_eq!(verdicts(&r), [Verdict::Pass]);
    let ids: Vec<(&str, bool)> = r.iterations[0]
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.ok))
        .collect();
    assert_eq!(ids, [("unplug#1", true), ("replug#2", true)]);
    // No plan ended the iteration: its dmesg is read in a plan of its own.
    assert_eq!(
        calls_after(rig.machine(), "plan setup"),
        [
            "unplug scratch",
            "replug scratch",
            "plan replug",
            "plan dmesg"
        ]
    );

    // A disk that does not come back fails the replug step, with the helper's words.
    let mut h = Harness::new(h.loaded.scenario.clone());
    let gone = StepReport {
        attempts: 1,
        error: Some("device scratch did not appear within 30000 ms".into()),
        ..StepReport::default()
    };
    let mut rig = Rig::new(FakeMachine::step_at("replug", 0, gone));
    let r = h.run_plain(&mut rig).await;
    let it = &r.iterations[0];
    assert_ne!(it.verdict, Verdict::Pass);
    assert!(!it.steps[1].ok);
    assert!(
        it.steps[1]
            .note
            .as_deref()
            .is_some_and(|n| n.contains("did not appear within 30000 ms")),
        "{:?}",
        it.steps[1]
    );
}

/// A kernel that hangs or panics when a disk comes back is the bug such a scenario hunts: the
/// iteration is a hang or a panic, never an infrastructure error (which counts for nothing).
#[tokio::test]
async fn a_guest_that_hangs_or_panics_while_a_replugged_disk_comes_back_is_a_kernel_verdict() {
    for (reply, verdict, note, then) in [
        (
            Reply::Hang { step: 0 },
            Verdict::Hang,
            "did not finish: the guest hung",
            // The hung guest is cut, then booted and set up for the next iteration.
            vec!["power-cut", "boot", "plan setup"],
        ),
        (
            Reply::Panic { step: 0 },
            Verdict::Panic,
            "did not finish: the kernel ended",
            vec!["boot", "plan setup"],
        ),
    ] {
        let mut s = scenario(plug_steps());
        s.iterations = 2;
        let mut h = Harness::new(s);
        let mut rig = Rig::new(FakeMachine::new(move |label, n| match (label, n) {
            ("replug", 0) => reply.clone(),
            _ => Reply::Ok,
        }));
        let r = h.run_plain(&mut rig).await;
        assert_eq!(verdicts(&r), [verdict, Verdict::Pass], "{verdict:?}");
        let it = &r.iterations[0];
        assert_eq!(it.steps[1].id, "replug#2");
        assert!(!it.steps[1].ok);
        assert_eq!(it.steps[1].note.as_deref(), Some(note));
        assert!(
            it.reasons[0].contains("replug#2 (replug)"),
            "{:?}",
            it.reasons
        );
        assert!(!it.console_tail.is_empty(), "{verdict:?}");
        let after = calls_after(rig.machine(), "plan replug");
        assert_eq!(after[..then.len()], then[..], "{verdict:?}: {after:?}");
    }
}

#[tokio::test]
async fn an_unplug_qemu_refuses_is_an_infrastructure_error_and_the_iteration_stops_there() {
    let mut steps = plug_steps();
    steps.push(Step::Mount(MountStep::default()));
    let mut s = scenario(steps);
    s.iterations = 2;
    let mut h = Harness::new(s);
    let mut machine = FakeMachine::healthy();
    machine.failing_unplug = true;
    let mut rig = Rig::new(machine);
    let r = h.run_plain(&mut rig).await;
    assert_eq!(r.error, None);
    assert_eq!(verdicts(&r), [Verdict::Error, Verdict::Error]);
    let it = &r.iterations[0];
    assert_eq!(it.steps.len(), 1, "the steps after it never ran");
    assert!(!it.steps[0].ok);
    assert!(
        it.reasons[0].starts_with("infrastructure: ") && it.reasons[0].contains("device_del"),
        "{:?}",
        it.reasons
    );
    // The guest lives: its dmesg is read from it; its state is unknown, so it boots again.
    assert_eq!(
        calls_after(rig.machine(), "plan setup"),
        [
            "unplug scratch",
            "plan dmesg",
            "boot",
            "plan setup",
            "unplug scratch",
            "plan dmesg"
        ]
    );
}

#[tokio::test]
async fn a_hang_before_a_power_cut_step_skips_the_cut_and_its_boot_and_is_judged_a_hang() {
    let mut steps = mount_umount();
    steps.insert(1, Step::PowerCut(HostStep::default()));
    let mut s = scenario(steps);
    s.iterations = 1;
    let mut h = Harness::new(s);
    let mut rig = Rig::new(FakeMachine::new(|label, _| match label {
        "iteration 1" => Reply::Hang { step: 0 },
        _ => Reply::Ok,
    }));
    let r = h.run_plain(&mut rig).await;
    assert_eq!(verdicts(&r), [Verdict::Hang]);
    let ids: Vec<&str> = r.iterations[0]
        .steps
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(ids, ["mount#1"]);
    // Only the hang's own power cut: no step of the scenario ran after it.
    assert_eq!(
        calls_after(rig.machine(), "plan iteration 1"),
        ["power-cut"]
    );
    assert_eq!(boot_reasons(&r), ["start"]);
}

#[tokio::test]
async fn a_hang_after_every_step_finished_is_a_hang_that_blames_no_step_and_cuts_the_guest() {
    // Step 2 of the plan is its closing read of the kernel log.
    let (_h, rig, r) = run_with_iteration_1(Reply::Hang { step: 2 }, 1).await;
    assert_eq!(verdicts(&r), [Verdict::Hang]);
    let it = &r.iterations[0];
    assert_eq!(it.reasons, ["hang: the guest stopped answering"]);
    assert!(it.steps.iter().all(|s| s.ok), "{:?}", it.steps);
    assert_eq!(
        calls_after(rig.machine(), "plan iteration 1"),
        ["power-cut"]
    );
}

#[tokio::test]
async fn a_transport_failure_with_the_guest_alive_reads_its_dmesg_then_boots_afresh() {
    let (h, rig, r) = run_with_iteration_1(Reply::Fail { step: 1 }, 2).await;
    assert_eq!(verdicts(&r), [Verdict::Error, Verdict::Pass]);
    let it = &r.iterations[0];
    assert!(
        it.reasons[0].starts_with("infrastructure: during umount#2 (umount): the transport"),
        "{:?}",
        it.reasons
    );
    assert_eq!(
        calls_after(rig.machine(), "plan iteration 1"),
        ["plan dmesg", "boot", "plan setup", "plan iteration 2"]
    );
    let text = std::fs::read_to_string(h.out.path().join(it.dmesg_file.as_ref().unwrap())).unwrap();
    assert!(text.contains("fake kernel says hello"), "{text}");
    assert_eq!(boot_reasons(&r), ["start", "after a failed iteration"]);
}

#[tokio::test]
async fn a_step_whose_report_never_arrived_is_an_infrastructure_error_not_a_pass() {
    // The umount expects success; its report is lost although the helper says it finished:
    // nothing judged the umount, so the iteration cannot pass (nor count as a failure).
    let (_h, _rig, r) = run_with_iteration_1(Reply::Lost { step: 1 }, 2).await;
    assert_eq!(verdicts(&r), [Verdict::Error, Verdict::Pass]);
    let it = &r.iterations[0];
    assert!(
        it.reasons[0].starts_with("infrastructure: during umount#2 (umount): ")
            && it.reasons[0].contains("no report of step"),
        "{:?}",
        it.reasons
    );
    // Lost in setup, the run cannot go on: its guest was not set up as the scenario says.
    let mut h = Harness::new(scenario(mount_umount()));
    let mut rig = Rig::new(FakeMachine::new(|label, _| match label {
        "setup" => Reply::Lost { step: 0 },
        _ => Reply::Ok,
    }));
    let r = h.run_plain(&mut rig).await;
    assert!(r.iterations.is_empty(), "{:?}", verdicts(&r));
    let error = r.error.unwrap_or_default();
    assert!(error.contains("no report of step"), "{error}");
}

#[tokio::test]
async fn a_report_of_a_step_the_plan_does_not_have_is_an_infrastructure_error() {
    let (_h, _rig, r) = run_with_iteration_1(Reply::Stray { index: 9 }, 2).await;
    assert_eq!(verdicts(&r), [Verdict::Error, Verdict::Pass]);
    let it = &r.iterations[0];
    assert_eq!(
        it.reasons[0],
        "infrastructure: the guest helper reported step 9 of a 3-step plan"
    );
    // The steps it did report are judged as reported.
    let ids: Vec<(&str, bool)> = it.steps.iter().map(|s| (s.id.as_str(), s.ok)).collect();
    assert_eq!(ids, [("mount#1", true), ("umount#2", true)]);
}

#[tokio::test]
async fn a_crash_step_with_no_plan_before_it_reads_the_kernel_log_in_a_plan_of_its_own_first() {
    let mut s = scenario(vec![
        Step::PowerCut(HostStep::default()),
        Step::Mount(MountStep::default()),
    ]);
    s.iterations = 1;
    let mut h = Harness::new(s);
    let mut rig = Rig::new(FakeMachine::healthy());
    let r = h.run_plain(&mut rig).await;
    assert_eq!(verdicts(&r), [Verdict::Pass]);
    assert_eq!(
        calls_after(rig.machine(), "plan setup"),
        ["plan dmesg", "power-cut", "boot", "plan iteration 1"]
    );
    let it = &r.iterations[0];
    let text = std::fs::read_to_string(h.out.path().join(it.dmesg_file.as_ref().unwrap())).unwrap();
    assert_eq!(text.matches("fake kernel says hello").count(), 2, "{text}");
}

#[tokio::test]
async fn a_boot_that_fails_after_a_power_cut_fails_that_step_and_the_next_iteration_boots_again() {
    let mut steps = mount_umount();
    steps.insert(1, Step::PowerCut(HostStep::default()));
    let mut s = scenario(steps);
    s.iterations = 2;
    let mut h = Harness::new(s);
    let mut machine = FakeMachine::healthy();
    machine.failing_boots.push_back(2);
    let mut rig = Rig::new(machine);
    let r = h.run_plain(&mut rig).await;
    assert_eq!(r.error, None);
    assert_eq!(verdicts(&r), [Verdict::Error, Verdict::Pass]);
    let it = &r.iterations[0];
    let ids: Vec<(&str, bool)> = it.steps.iter().map(|s| (s.id.as_str(), s.ok)).collect();
    assert_eq!(ids, [("mount#1", true), ("power-cut#2", false)]);
    assert!(
        it.reasons[0].contains("QEMU exited (exit status: 1) before the guest answered"),
        "{:?}",
        it.reasons
    );
    assert_eq!(
        calls_after(rig.machine(), "power-cut"),
        [
            "boot",
            "boot",
            "plan setup",
            "plan iteration 2",
            "power-cut",
            "boot",
            "plan iteration 2"
        ]
    );
}

#[tokio::test]
async fn a_set_up_machine_that_cannot_be_saved_is_set_up_again_and_iterations_share_it() {
    let mut h = Harness::new(scenario(mount_umount()));
    let mut machine = FakeMachine::healthy();
    machine.failing_save = true;
    let mut rig = Rig::new(machine);
    let opts = RunOptions {
        restore: RestoreMode::Always,
        ..h.opts()
    };
    let r = h.run(&mut rig, &opts).await;
    assert_eq!(r.error, None);
    assert_eq!(verdicts(&r), vec![Verdict::Pass; 3]);
    assert!(!r.independent_iterations);
    assert_eq!(
        log(rig.machine()),
        [
            "boot",
            "plan setup",
            "save set-up",
            "boot",
            "plan setup",
            "plan iteration 1",
            "plan iteration 2",
            "plan iteration 3",
        ]
    );
    assert_eq!(boot_reasons(&r), ["start", "after a failed save"]);
    let said: Vec<String> = h
        .events
        .names()
        .into_iter()
        .filter(|e| e.starts_with("message iterations share one guest: "))
        .collect();
    assert_eq!(said.len(), 1, "{:?}", h.events.names());
    assert!(said[0].contains("No space left on device"), "{said:?}");
}

#[tokio::test]
async fn a_setup_that_fails_on_a_machine_set_up_for_another_scenario_boots_afresh_for_it() {
    let mut h = Harness::new(scenario(mount_umount()));
    let mut rig = Rig::new(FakeMachine::new(|label, n| match (label, n) {
        // The second setup, run on the machine the first batch left ready.
        ("setup", 1) => Reply::Step {
            step: 0,
            report: StepReport {
                attempts: 1,
                exit_status: Some(1),
                stderr: "mkfs.xfs: device busy".into(),
                ..StepReport::default()
            },
        },
        _ => Reply::Ok,
    }));
    let opts = RunOptions {
        iterations: Some(1),
        ..h.opts()
    };
    h.run(&mut rig, &opts).await;
    assert!(rig.is_ready());
    h.loaded.scenario.name = "another".into();
    rig.machine().log.lock().unwrap().clear();
    let r = h.run(&mut rig, &opts).await;
    assert_eq!(r.error, None);
    assert_eq!(verdicts(&r), [Verdict::Pass]);
    assert_eq!(
        log(rig.machine()),
        ["plan setup", "boot", "plan setup", "plan iteration 1"]
    );
    assert_eq!(boot_reasons(&r), ["start"]);
    assert!(
        r.setup.iter().all(|s| s.ok),
        "the record has the setup that worked"
    );
}

#[tokio::test]
async fn a_setup_interrupted_on_a_machine_set_up_for_another_scenario_leaves_the_rig_unready() {
    let mut h = Harness::new(scenario(mount_umount()));
    let mut machine = FakeMachine::healthy();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    machine.on_plan = Some(tx);
    let mut rig = Rig::new(machine);
    let opts = RunOptions {
        iterations: Some(1),
        ..h.opts()
    };
    h.run(&mut rig, &opts).await;
    assert!(rig.is_ready());
    while rx.try_recv().is_ok() {}
    h.loaded.scenario.name = "another".into();
    rig.machine().log.lock().unwrap().clear();
    // Interrupted while the guest runs the second scenario's setup, which never ends.
    h.run_until_plan(&mut rig, &opts, &mut rx, "setup").await;
    assert!(
        !rig.is_ready(),
        "a setup cut short leaves the guest half set up, maybe with its helper still running"
    );
    rig.machine().log.lock().unwrap().clear();
    let r = h.run(&mut rig, &opts).await;
    assert_eq!(verdicts(&r), [Verdict::Pass]);
    assert_eq!(
        log(rig.machine()),
        ["boot", "plan setup", "plan iteration 1"]
    );
}

#[tokio::test]
async fn repro_runs_only_the_asked_iteration_with_the_seed_it_had_in_the_full_run() {
    let mut h = Harness::new(scenario(mount_umount()));
    let mut rig = Rig::new(FakeMachine::healthy());
    let full = h.run_plain(&mut rig).await;
    rig.stop().await;
    let opts = RunOptions {
        only_iteration: Some(2),
        ..h.opts()
    };
    let mut rig = Rig::new(FakeMachine::healthy());
    let r = h.run(&mut rig, &opts).await;
    let numbers: Vec<u32> = r.iterations.iter().map(|i| i.iteration).collect();
    assert_eq!(numbers, [2]);
    assert_eq!(r.iterations[0].seed, full.iterations[1].seed);
    assert_eq!(
        log(rig.machine()),
        ["boot", "plan setup", "plan iteration 2"]
    );
}

#[tokio::test]
async fn a_resumed_run_with_nothing_left_to_run_neither_boots_nor_makes_a_run_directory() {
    let mut h = Harness::new(scenario(mount_umount()));
    let mut rig = Rig::new(FakeMachine::healthy());
    let done = h.run_plain(&mut rig).await;
    rig.stop().await;
    let opts = RunOptions {
        resume: Some(done.clone()),
        ..h.opts()
    };
    let mut rig = Rig::new(FakeMachine::healthy());
    let r = h.run(&mut rig, &opts).await;
    assert_eq!(r.error, None);
    assert_eq!(r.iterations, done.iterations);
    assert!(log(rig.machine()).is_empty(), "{:?}", log(rig.machine()));
    assert!(!h.out.path().join(&r.dir).exists(), "{}", r.dir);
}

#[tokio::test]
async fn a_results_directory_that_cannot_be_written_is_a_run_error_before_anything_boots() {
    let mut h = Harness::new(scenario(mount_umount()));
    let blocked = h.out.path().join("a-file");
    std::fs::write(&blocked, "").unwrap();
    let opts = RunOptions {
        out: blocked,
        ..h.opts()
    };
    let mut rig = Rig::new(FakeMachine::healthy());
    let r = h.run(&mut rig, &opts).await;
    let e = r.error.expect("an error");
    assert!(e.starts_with("cannot write "), "{e}");
    assert!(r.iterations.is_empty());
    assert!(log(rig.machine()).is_empty());
}

#[tokio::test]
async fn a_second_run_into_the_same_results_directory_writes_a_directory_of_its_own() {
    let mut h = Harness::new(scenario(mount_umount()));
    let mut rig = Rig::new(FakeMachine::healthy());
    let first = h.run_plain(&mut rig).await;
    let second = h.run_plain(&mut rig).await;
    assert_eq!(second.dir, format!("{}-2", first.dir));
    for r in [&first, &second] {
        let dmesg = h
            .out
            .path()
            .join(r.iterations[0].dmesg_file.as_ref().unwrap());
        assert!(dmesg.starts_with(h.out.path().join(&r.dir)), "{dmesg:?}");
        assert!(dmesg.exists(), "{dmesg:?}");
    }
}

#[tokio::test]
async fn the_panic_a_panic_step_asks_for_is_expected_and_the_iteration_passes() {
    let mut steps = mount_umount();
    steps.insert(1, Step::Panic(HostStep::default()));
    let mut s = scenario(steps);
    s.iterations = 1;
    let mut h = Harness::new(s);
    let mut rig = Rig::new(FakeMachine::healthy());
    let r = h.run_plain(&mut rig).await;
    assert_eq!(
        verdicts(&r),
        [Verdict::Pass],
        "{:?}",
        r.iterations[0].reasons
    );
    let panics: Vec<bool> = r.iterations[0]
        .findings
        .iter()
        .filter(|f| f.title.contains("Kernel panic"))
        .map(|f| f.expected)
        .collect();
    assert_eq!(panics, [true], "{:?}", r.iterations[0].findings);
}

#[tokio::test]
async fn a_device_mapper_stack_is_made_after_every_boot_and_failing_to_make_it_is_a_run_error() {
    let mut steps = mount_umount();
    steps.insert(1, Step::PowerCut(HostStep::default()));
    let mut s = scenario(steps);
    s.iterations = 1;
    s.devices[0].dm = true;
    let mut h = Harness::new(s.clone());
    let mut rig = Rig::new(FakeMachine::healthy());
    let r = h.run_plain(&mut rig).await;
    assert_eq!(verdicts(&r), [Verdict::Pass]);
    let l = log(rig.machine());
    assert_eq!(
        l.iter().filter(|c| *c == "plan prelude").count(),
        2,
        "{l:?}"
    );
    assert_eq!(l.iter().filter(|c| *c == "boot").count(), 2, "{l:?}");

    let mut h = Harness::new(s);
    let mut rig = Rig::new(FakeMachine::new(|label, _| match label {
        "prelude" => Reply::Step {
            step: 0,
            report: StepReport {
                attempts: 1,
                error: Some("dmsetup create: no such device".into()),
                ..StepReport::default()
            },
        },
        _ => Reply::Ok,
    }));
    let r = h.run_plain(&mut rig).await;
    assert!(r.iterations.is_empty());
    assert_eq!(
        r.error.as_deref(),
        Some("setup step dm-create failed: dmsetup create: no such device")
    );
    assert!(!log(rig.machine()).contains(&"plan setup".to_string()));
}

/// A setup whose kernel log warns: its last plan's `Dmesg` reports the warning.
fn setup_warns() -> FakeMachine {
    FakeMachine::with_plans(|plan, _| {
        if plan.label != "setup" {
            return Reply::Ok;
        }
        // Scripts count the operations after the read of the boot's messages.
        let lead = usize::from(matches!(plan.steps[0].op, crashrig_guest::Op::Dmesg));
        Reply::Step {
            step: plan.steps.len() - 1 - lead,
            report: StepReport {
                detail: Some(crashrig_guest::Detail::Dmesg {
                    records: vec![crashrig_guest::KmsgRecord {
                        seq: 7,
                        ts_us: 1_500_000,
                        level: 4,
                        text: "WARNING: CPU: 0 PID: 9 at fs/xfs/xfs_log.c:1 mkfs_probe+0x1/0x2"
                            .into(),
                    }],
                }),
                ..StepReport::default()
            },
        }
    })
}

/// Setup's kernel messages were judged only when iterations did not restore (iteration 1
/// read them and failed), and never with restores (they went to setup.txt unread). Now both
/// modes judge them as setup's own, charged to no iteration.
#[tokio::test]
async fn a_warning_during_setup_is_setups_finding_with_or_without_restores() {
    for restore in [RestoreMode::Never, RestoreMode::Always] {
        let mut h = Harness::new(scenario(mount_umount()));
        let mut rig = Rig::new(setup_warns());
        let opts = RunOptions {
            restore,
            ..h.opts()
        };
        let r = h.run(&mut rig, &opts).await;
        assert_eq!(r.error, None, "{restore}");
        assert_eq!(r.independent_iterations, restore == RestoreMode::Always);
        assert_eq!(verdicts(&r), vec![Verdict::Pass; 3], "{restore}");
        assert!(
            r.iterations.iter().all(|i| i.findings.is_empty()),
            "{restore}: no iteration is charged with setup's warning"
        );
        let d = r.setup_dmesg.as_ref().expect("setup's kernel log judged");
        assert_eq!(d.verdict, Verdict::Fail, "{restore}");
        assert_eq!(
            d.reasons,
            ["dmesg warning: WARNING: CPU: 0 PID: 9 at fs/xfs/xfs_log.c:1 mkfs_probe+0x1/0x2"],
            "{restore}"
        );
        assert_eq!(d.findings.len(), 1, "{restore}");
        assert_eq!(d.dmesg_files, [format!("{}/dmesg/setup.txt", r.dir)]);
        assert_eq!(r.exit_code(), crate::exit::EXPECTATION_FAILED, "{restore}");
        let text = std::fs::read_to_string(h.out.path().join(&d.dmesg_files[0])).unwrap();
        assert!(text.contains("mkfs_probe"), "{restore}: {text}");
        let first = r.iterations[0].dmesg_file.as_ref().unwrap();
        let text = std::fs::read_to_string(h.out.path().join(first)).unwrap();
        assert!(!text.contains("mkfs_probe"), "{restore}: {text}");
        // The terminal summary and JUnit say so.
        let summary = crate::report::terminal::summary_text(&r);
        assert!(
            summary.contains("  setup's dmesg (FAIL; in no iteration's count):\n    warning x1: "),
            "{restore}: {summary}"
        );
        let results = crate::report::Results {
            schema: 1,
            crashrig_version: "0".into(),
            started: String::new(),
            finished: None,
            host: Default::default(),
            runs: vec![r.clone()],
            matrix: None,
        };
        let junit = crate::report::writer::junit(&results);
        assert!(
            junit.contains(r#"<testcase name="setup kernel log""#),
            "{restore}: {junit}"
        );
        // results.json, as the writer keeps it from the events, has it too.
        let events = h.events.0.lock().unwrap();
        let judged: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::SetupDmesg { dmesg, .. } => Some(dmesg.verdict),
                _ => None,
            })
            .collect();
        assert_eq!(judged, [Verdict::Fail], "{restore}");
    }
}

#[tokio::test]
async fn each_iteration_records_the_host_load_it_ended_with() {
    let mut h = Harness::new(scenario(mount_umount()));
    let mut machine = FakeMachine::healthy();
    machine.host_loads = [0.5, 3.25].into();
    let mut rig = Rig::new(machine);
    let r = h.run_plain(&mut rig).await;
    let loads: Vec<Option<f64>> = r.iterations.iter().map(|i| i.host_load).collect();
    // The third iteration's load could not be read: it stays unrecorded, never 0.
    assert_eq!(loads, [Some(0.5), Some(3.25), None]);
    assert_eq!(r.host_cpus, Some(crate::host::cpus()));
}

#[tokio::test]
async fn a_hang_on_a_busy_host_says_the_host_was_busy() {
    let mut h = Harness::new(scenario(mount_umount()));
    let mut machine = FakeMachine::new(|label, _| match label {
        "iteration 1" | "iteration 2" => Reply::Hang { step: 1 },
        _ => Reply::Ok,
    });
    let cpus = f64::from(crate::host::cpus());
    machine.host_loads = [cpus + 3.0, cpus - 0.5, cpus + 3.0].into();
    let mut rig = Rig::new(machine);
    let r = h.run_plain(&mut rig).await;
    assert_eq!(verdicts(&r), [Verdict::Hang, Verdict::Hang, Verdict::Pass]);
    let busy = |i: usize| {
        r.iterations[i]
            .reasons
            .iter()
            .any(|reason| reason.starts_with("the host was busy when it ended (load "))
    };
    // A hang under load says so; a hang on a quiet host and a pass under load do not.
    assert!(busy(0), "{:?}", r.iterations[0].reasons);
    assert!(!busy(1), "{:?}", r.iterations[1].reasons);
    assert!(!busy(2), "{:?}", r.iterations[2].reasons);
    assert!(r.iterations[0].reasons[0].starts_with("hang: "));
}
