//! The run loop: boot, setup, iterations (guest plans and host actions), dmesg, verdicts.
//! Generic over the [`Machine`] it drives, so tests script a fake one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crashrig_guest::{Detail, KmsgRecord, Op, StepReport};

use super::boot::BootError;
use super::machine::{Machine, MachineError};
use super::plan::{self, HostAction, Phase, Segment, StepRef};
use super::qemu_machine::QemuMachine;
use super::restore::RestoreMode;
use super::verdict::{self, Abort};
use crate::cache::Cache;
use crate::guest::helper;
use crate::image::GuestImage;
use crate::kernel::ResolvedKernel;
use crate::outcome::{self, ClassifyContext, Finding};
use crate::report::events::{Event, EventSink};
use crate::report::writer::now_rfc3339;
use crate::report::{
    BootRecord, IterationRecord, KernelInfo, RunRecord, ScenarioInfo, SetupDmesg, StepRecord,
    Summary, Verdict,
};
use crate::scenario::Scenario;
use crate::vm::Accel;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Machine(#[from] MachineError),
    #[error("cannot write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("setup step {step} failed: {why}")]
    Setup { step: String, why: String },
    #[error("the guest helper said: {0}")]
    Helper(String),
    /// A plan a host step ran in the guest (the wait for a replugged disk) did not finish.
    #[error("{0}")]
    Aborted(Abort),
}

/// Options shared by every run of an invocation.
#[derive(Clone)]
pub struct RunOptions {
    pub iterations: Option<u32>,
    pub accel: Accel,
    pub seed: Option<u64>,
    /// Keep the disk images (their directory is printed).
    pub keep: bool,
    /// The results directory.
    pub out: PathBuf,
    /// Run only this iteration (with its own seed), as `crashrig repro` does.
    pub only_iteration: Option<u32>,
    /// The matrix cell this run is, for matrix runs.
    pub cell: Option<crate::report::CellInfo>,
    /// When a saved guest replaces a boot (`--restore`).
    pub restore: RestoreMode,
    /// Stop after the first iteration for which this returns true (bisect batches stop at
    /// the first sighting of their target).
    pub stop_when: Option<fn(&IterationRecord, &str) -> bool>,
    /// Argument of `stop_when` (the bisect target).
    pub stop_arg: String,
    pub cache: Cache,
    /// `--resume`: the unfinished run a killed crashrig left. Its seed and finished
    /// iterations are kept; only the missing iterations run, in a run directory of their own.
    pub resume: Option<RunRecord>,
}

impl RunOptions {
    /// Options for a plain run: every iteration, a fresh seed, no early stop.
    pub fn new(accel: Accel, out: PathBuf, cache: Cache) -> Self {
        RunOptions {
            iterations: None,
            accel,
            seed: None,
            keep: false,
            out,
            only_iteration: None,
            cell: None,
            stop_when: None,
            stop_arg: String::new(),
            cache,
            restore: RestoreMode::Never,
            resume: None,
        }
    }
}

/// A scenario as loaded, with where it came from.
#[derive(Clone)]
pub struct LoadedScenario {
    pub scenario: Scenario,
    pub path: PathBuf,
}

impl From<BootError> for RunError {
    fn from(e: BootError) -> Self {
        RunError::Machine(e.into())
    }
}

impl From<crate::guest::GuestError> for RunError {
    fn from(e: crate::guest::GuestError) -> Self {
        RunError::Machine(e.into())
    }
}

/// A machine and whether it is booted and set up for its scenario. A caller that runs several
/// batches of the same kernel keeps one rig: a batch after a clean one starts on the running
/// machine, without booting; it sets up again only when its scenario differs from the one the
/// machine was set up for (another setting of the same VM shape, as `amplify` runs them).
pub struct Rig<M> {
    machine: M,
    /// Booted, set up, and the last iteration left it usable.
    ready: bool,
    /// The scenario the machine was last set up for (as JSON).
    set_up_for: Option<String>,
}

impl<M: Machine> Rig<M> {
    pub fn new(machine: M) -> Self {
        Rig {
            machine,
            ready: false,
            set_up_for: None,
        }
    }

    /// Whether the next batch starts without booting.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// Stops the machine; the next batch boots again.
    pub async fn stop(&mut self) {
        self.ready = false;
        self.machine.stop().await;
    }
}

/// What a guest plan produced, with each report tied to the scenario step it belongs to
/// (`None`: an operation of crashrig's own, such as reading dmesg).
struct PlanOutcome {
    reports: Vec<(Option<StepRef>, StepReport)>,
    /// The plan did not finish: why.
    abort: Option<Abort>,
}

/// One run in progress on a machine.
struct Run<'r, M> {
    machine: &'r mut M,
    scenario: &'r Scenario,
    sink: &'r mut EventSink,
    index: usize,
    run_dir: PathBuf,
    rel_dir: String,
    /// Boots in this run (names the console logs).
    boots: u32,
    /// What each boot or restore reported, for the run record.
    boot_records: Vec<BootRecord>,
    /// For traces printed as bare addresses. Debian packages ship a placeholder System.map,
    /// which does not load; built kernels have a real one.
    system_map: Option<outcome::SystemMap>,
    /// The file for the boot messages of the guest started last, when they have not been read
    /// yet: the next plan reads them first (a plan of their own cost every boot a round trip).
    unread_boot_dmesg: Option<String>,
    /// Stamp (microseconds since boot) of the newest kernel log record read from the guest
    /// started last; `None` until one is. What came later reached only its console when the
    /// boot ends in a power cut, reboot or panic.
    kmsg_read_to: Option<u64>,
    /// Setups run so far (names their kernel log files).
    setups: u32,
    /// Every setup's kernel log of this run, judged.
    setup_dmesg: Option<SetupDmesg>,
    /// The host's CPUs (as recorded in the run record), against which a hang's host load
    /// reads as busy.
    host_cpus: u32,
}

impl<M: Machine> Run<'_, M> {
    async fn boot(&mut self, reason: &str) -> Result<(), RunError> {
        self.boots += 1;
        let console_name = format!("console-{:02}.log", self.boots);
        let info = self.machine.boot(&self.run_dir.join(&console_name)).await?;
        if let Some(dir) = &info.kept_disks {
            self.sink
                .info(format!("disk images kept in {}", dir.display()));
        }
        // The boot's own messages go to a file of their own, so the first iteration's dmesg
        // starts with that iteration: the next plan reads them before its first step.
        let dmesg_name = format!("dmesg/boot-{:02}.txt", self.boots);
        self.boot_dmesg_lost();
        self.unread_boot_dmesg = Some(dmesg_name.clone());
        self.kmsg_read_to = None;
        self.booted(BootRecord {
            ready_after_ms: info.ready_after.as_millis() as u64,
            console_log: format!("{}/{console_name}", self.rel_dir),
            reason: reason.into(),
            qemu_command: info.command,
            dmesg_file: Some(format!("{}/{dmesg_name}", self.rel_dir)),
            restored: info.restored,
            from_cache: info.from_cache,
            phases: info.phases,
            transport: info.transport.into(),
        });
        let prelude = plan::boot_prelude(self.scenario);
        if !prelude.is_empty() {
            let ops = prelude.into_iter().map(|op| (None, op)).collect();
            let out = self
                .exec_ops(ops, Duration::from_secs(120), "prelude")
                .await;
            if let Some((_, bad)) = out
                .reports
                .iter()
                .find(|(_, r)| r.error.is_some() || r.exit_status.is_some_and(|s| s != 0))
            {
                return Err(RunError::Setup {
                    step: "dm-create".into(),
                    why: bad.error.clone().unwrap_or_else(|| bad.stderr.clone()),
                });
            }
            if let Some(a) = out.abort {
                return Err(RunError::Setup {
                    step: "dm-create".into(),
                    why: a.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Saves the set-up guest under `key` for every iteration to start from (setup's last
    /// plan read its kernel messages, so no iteration counts them). When saving fails, the
    /// guest is booted and set up again and iterations share it (false).
    async fn save_set_up(
        &mut self,
        key: &str,
        seed: u64,
        data_seed: u64,
    ) -> Result<bool, RunError> {
        match self.machine.save_set_up(key).await {
            Ok(()) => Ok(true),
            Err(e) => {
                self.sink.info(format!(
                    "iterations share one guest: {}",
                    crate::report::error_chain(&e)
                ));
                self.boot("after a failed save").await?;
                match self.setup(seed, data_seed).await {
                    (_, Some(e)) => Err(e),
                    (_, None) => Ok(false),
                }
            }
        }
    }

    /// Starts the next iteration from the saved set-up guest, on fresh disks.
    async fn restore_set_up(&mut self) -> Result<(), RunError> {
        self.boot_dmesg_lost();
        // The restored guest's console starts empty: nothing on it was read yet.
        self.kmsg_read_to = None;
        self.boots += 1;
        let console_name = format!("console-{:02}.log", self.boots);
        let info = self
            .machine
            .restore_set_up(&self.run_dir.join(&console_name))
            .await?;
        self.booted(BootRecord {
            ready_after_ms: info.ready_after.as_millis() as u64,
            console_log: format!("{}/{console_name}", self.rel_dir),
            reason: "iteration".into(),
            qemu_command: info.command,
            dmesg_file: None,
            restored: info.restored,
            from_cache: info.from_cache,
            phases: info.phases,
            transport: info.transport.into(),
        });
        Ok(())
    }

    /// Records a boot or restore for the run record and reporters.
    fn booted(&mut self, boot: BootRecord) {
        self.boot_records.push(boot.clone());
        self.sink.emit(Event::BootFinished {
            index: self.index,
            boot,
        });
    }

    /// Runs ops in the guest as one plan. Reports stream back as each op finishes.
    async fn exec_ops(
        &mut self,
        ops: Vec<(Option<StepRef>, Op)>,
        timeout: Duration,
        label: &str,
    ) -> PlanOutcome {
        let boot_dmesg = self.unread_boot_dmesg.take();
        let mut ops = ops;
        if boot_dmesg.is_some() {
            ops.insert(0, (None, Op::Dmesg));
        }
        let (refs, ops): (Vec<Option<StepRef>>, Vec<Op>) = ops.into_iter().unzip();
        let run = self
            .machine
            .run_plan(&helper::plan(label, ops), timeout)
            .await;
        let mut reports = Vec::new();
        let mut abort = run.abort;
        let mut boot_read = false;
        let mut reported = vec![false; refs.len()];
        for r in run.reports {
            if let Some(seen) = reported.get_mut(r.index) {
                *seen = true;
            }
            if let Some(last) = dmesg_records(&r).and_then(|records| records.last()) {
                self.kmsg_read_to = Some(self.kmsg_read_to.unwrap_or(0).max(last.ts_us));
            }
            if let (Some(file), 0) = (&boot_dmesg, r.index) {
                let records = dmesg_records(&r).unwrap_or_default();
                let _ = std::fs::write(self.run_dir.join(file), kmsg_text(records));
                boot_read = true;
                continue;
            }
            match refs.get(r.index) {
                Some(step) => reports.push((*step, r)),
                None => {
                    abort.get_or_insert_with(|| {
                        Abort::Infra(format!(
                            "the guest helper reported step {} of a {}-step plan",
                            r.index,
                            refs.len()
                        ))
                    });
                }
            }
        }
        // A plan that finished owes a report of every step: one whose report never arrived
        // (a line the host could not read) was not judged, and must not pass as if it held.
        if abort.is_none() {
            if let Some(missing) = reported.iter().position(|seen| !seen) {
                abort = Some(Abort::Infra(format!(
                    "the guest helper finished its plan with no report of step {missing} of {}",
                    refs.len()
                )));
            }
        }
        if let (Some(file), false) = (boot_dmesg, boot_read) {
            // The plan ended before its first operation: the messages stay in the guest for
            // the next plan, unless the guest is gone.
            self.unread_boot_dmesg = Some(file);
            if !self.machine.is_running() {
                self.boot_dmesg_lost();
            }
        }
        PlanOutcome { reports, abort }
    }

    /// The guest whose boot messages were not read yet has ended: its boot file says so.
    fn boot_dmesg_lost(&mut self) {
        if let Some(file) = self.unread_boot_dmesg.take() {
            let _ = std::fs::write(
                self.run_dir.join(file),
                "(the guest ended before crashrig read its boot messages: they are in its \
                 console log)\n",
            );
        }
    }

    /// Runs setup. Its last plan reads the kernel log, so setup's messages are judged here, as
    /// setup's, and never reach an iteration's dmesg (with or without restores).
    async fn setup(&mut self, seed: u64, data_seed: u64) -> (Vec<StepRecord>, Option<RunError>) {
        let mut kmsg = Vec::new();
        let (records, error) = self.setup_steps(seed, data_seed, &mut kmsg).await;
        self.judge_setup_dmesg(&kmsg);
        (records, error)
    }

    /// Judges one setup's kernel log like an iteration's, into `dmesg/setup.txt` (a later
    /// setup of the run: `setup-N.txt`) and the run's [`SetupDmesg`].
    fn judge_setup_dmesg(&mut self, kmsg: &[KmsgRecord]) {
        let s = self.scenario;
        self.setups += 1;
        let name = match self.setups {
            1 => "dmesg/setup.txt".to_string(),
            n => format!("dmesg/setup-{n}.txt"),
        };
        let _ = std::fs::write(self.run_dir.join(&name), kmsg_text(kmsg));
        let mut findings = outcome::classify_records(kmsg, &classify_context(s));
        if let Some(map) = &self.system_map {
            for f in &mut findings {
                outcome::symbolize_finding(f, map);
            }
        }
        let (verdict, reasons) = verdict::verdict(s, &[], &findings, None);
        let judged = SetupDmesg {
            verdict,
            reasons,
            findings,
            dmesg_files: vec![format!("{}/{name}", self.rel_dir)],
        };
        self.setup_dmesg
            .get_or_insert_with(SetupDmesg::default)
            .merge(&judged);
        self.sink.emit(Event::SetupDmesg {
            index: self.index,
            dmesg: Box::new(judged),
        });
    }

    async fn setup_steps(
        &mut self,
        seed: u64,
        data_seed: u64,
        kmsg: &mut Vec<KmsgRecord>,
    ) -> (Vec<StepRecord>, Option<RunError>) {
        let s = self.scenario;
        let mut records = Vec::new();
        let segments = plan::plan_phase(s, Phase::Setup, plan::iteration_seed(seed, 0), data_seed);
        let count = segments.len();
        for (i, seg) in segments.into_iter().enumerate() {
            match seg {
                Segment::Guest(ops) => {
                    let timeout = plan::setup_timeout(&ops, s.iteration_timeout);
                    let mut ops: Vec<_> = ops.into_iter().map(|(r, o)| (Some(r), o)).collect();
                    if i + 1 == count {
                        ops.push((None, Op::Dmesg));
                    }
                    let out = self.exec_ops(ops, timeout, "setup").await;
                    for (r, rep) in &out.reports {
                        match r {
                            Some(r) => {
                                let record = verdict::step_record(s, *r, rep, &records);
                                records.push(record);
                            }
                            None => kmsg.extend_from_slice(dmesg_records(rep).unwrap_or_default()),
                        }
                    }
                    if let Some(bad) = records.iter().find(|r| !r.ok) {
                        let why = format!(
                            "{}{}",
                            bad.note.clone().unwrap_or_default(),
                            if bad.output.is_empty() {
                                String::new()
                            } else {
                                format!("\n{}", bad.output)
                            }
                        );
                        let step = bad.id.clone();
                        return (records, Some(RunError::Setup { step, why }));
                    }
                    if let Some(a) = out.abort {
                        return (
                            records,
                            Some(RunError::Setup {
                                step: "setup".into(),
                                why: a.to_string(),
                            }),
                        );
                    }
                }
                Segment::Host(r, _) => {
                    return (
                        records,
                        Some(RunError::Setup {
                            step: r.id(s),
                            why: "host crash steps are not allowed in setup".into(),
                        }),
                    )
                }
            }
        }
        (records, None)
    }

    /// Runs iteration `n`: its plans and host actions, then its dmesg and verdict.
    async fn iteration(&mut self, n: u32, run_seed: u64, data_seed: u64) -> IterationRecord {
        let s = self.scenario;
        let started = Instant::now();
        let seed = plan::iteration_seed(run_seed, n);
        let mut steps: Vec<StepRecord> = Vec::new();
        let mut abort: Option<Abort> = None;
        let mut ctx = classify_context(s);
        let mut console_text = String::new();
        let mut kmsg: Vec<KmsgRecord> = Vec::new();

        let mut in_guest = Duration::ZERO;
        let mut segments = plan::plan_phase(s, Phase::Steps, seed, data_seed);
        segments.extend(plan::plan_phase(s, Phase::Cleanup, seed, data_seed));
        let mut segments = segments.into_iter().peekable();
        // The last plan read the guest's kernel log (before a power cut or panic, or as the
        // iteration's last).
        let mut dmesg_read = false;
        while let Some(seg) = segments.next() {
            if abort.is_some() {
                break;
            }
            match seg {
                Segment::Guest(ops) => {
                    // The iteration timeout is spent in the guest: boots after a host step
                    // do not count against it.
                    let left = s.iteration_timeout.saturating_sub(in_guest);
                    let timeout = plan::plan_timeout(&ops, left);
                    let mut ops: Vec<_> = ops.into_iter().map(|(r, o)| (Some(r), o)).collect();
                    // A power cut, panic or reboot ends the guest's kernel log, and the
                    // iteration's last plan ends what it reads: either reads the log last,
                    // instead of a plan of its own.
                    let reads_log = matches!(
                        segments.peek(),
                        None | Some(Segment::Host(
                            _,
                            HostAction::PowerCut | HostAction::Panic | HostAction::Reboot
                        ))
                    );
                    if reads_log {
                        ops.push((None, Op::Dmesg));
                    }
                    let planned: Vec<StepRef> = ops.iter().filter_map(|(r, _)| *r).collect();
                    let t0 = Instant::now();
                    let out = self.exec_ops(ops, timeout, &format!("iteration {n}")).await;
                    in_guest += t0.elapsed();
                    for (r, rep) in &out.reports {
                        match r {
                            Some(r) => {
                                let record = verdict::step_record(s, *r, rep, &steps);
                                steps.push(record)
                            }
                            None => {
                                if let Some(records) = dmesg_records(rep) {
                                    kmsg.extend_from_slice(records);
                                    dmesg_read = true;
                                }
                            }
                        }
                    }
                    // Steps run in order: the first without a report was running when the
                    // plan ended early. A hang or panic is its record's failure.
                    let running = planned
                        .into_iter()
                        .find(|r| !out.reports.iter().any(|(done, _)| *done == Some(*r)));
                    abort = match (out.abort, running) {
                        (Some(a), Some(r)) => {
                            let record = verdict::bare_step_record(s, r);
                            let a = a.during(&format!("{} ({})", record.id, record.kind));
                            if let Some(note) = verdict::unfinished_note(&a) {
                                steps.push(StepRecord {
                                    ok: false,
                                    note: Some(note.into()),
                                    ..record
                                });
                            }
                            Some(a)
                        }
                        (a, _) => a,
                    };
                }
                Segment::Host(r, action) => {
                    let t0 = Instant::now();
                    let result = self
                        .host_action(&action, &mut kmsg, &mut console_text, dmesg_read)
                        .await;
                    dmesg_read = false;
                    if matches!(action, HostAction::Panic) {
                        ctx.expected_panic = true;
                    }
                    let record = verdict::bare_step_record(s, r);
                    let (note, step_abort) = match result {
                        Ok(()) => (None, None),
                        // The guest hung or its kernel ended while the step waited on it: the
                        // kernel's verdict, as when a plan's step does not finish.
                        Err(RunError::Aborted(a)) => {
                            let a = a.during(&format!("{} ({})", record.id, record.kind));
                            let note = verdict::unfinished_note(&a)
                                .map_or_else(|| a.to_string(), str::to_owned);
                            (Some(note), Some(a))
                        }
                        Err(e) => {
                            let note = crate::report::error_chain(&e);
                            (Some(note.clone()), Some(Abort::Infra(note)))
                        }
                    };
                    steps.push(StepRecord {
                        duration_ms: t0.elapsed().as_secs_f64() * 1000.0,
                        ok: note.is_none(),
                        note,
                        ..record
                    });
                    if step_abort.is_some() {
                        abort = step_abort;
                    }
                }
            }
        }
        // dmesg of this iteration: from the guest while it lives, else from the console.
        let mut console_tail = Vec::new();
        match &abort {
            // Only the iteration's last plan leaves it set: a host step after a plan clears it.
            None if dmesg_read => {}
            None | Some(Abort::Infra(_)) if self.machine.is_running() => {
                let out = self
                    .exec_ops(vec![(None, Op::Dmesg)], Duration::from_secs(60), "dmesg")
                    .await;
                collect_dmesg(out, &mut kmsg);
            }
            _ => {
                console_tail = self.machine.console_tail(80);
                if matches!(abort, Some(Abort::Hang(_))) {
                    self.machine.power_cut().await;
                }
                if !console_text.is_empty() {
                    console_text.push('\n');
                }
                console_text.push_str(&console_tail.join("\n"));
            }
        }
        let mut findings: Vec<Finding> = outcome::classify_records(&kmsg, &ctx);
        if !console_text.is_empty() {
            findings.extend(outcome::classify_console(&console_text, &ctx));
        }
        if let Some(map) = &self.system_map {
            for f in &mut findings {
                outcome::symbolize_finding(f, map);
            }
        }
        let dmesg_file = format!("{}/dmesg/iteration-{n:03}.txt", self.rel_dir);
        let mut text = kmsg_text(&kmsg);
        if !console_text.is_empty() {
            text.push_str("\n--- console (boots that ended during this iteration) ---\n");
            text.push_str(&console_text);
        }
        let _ = std::fs::write(
            self.run_dir.join(format!("dmesg/iteration-{n:03}.txt")),
            text,
        );
        let (v, mut reasons) = verdict::verdict(s, &steps, &findings, abort.as_ref());
        let host_load = self.machine.host_load();
        let cpus = self.host_cpus;
        if let Some(load) =
            host_load.filter(|&l| v == Verdict::Hang && crate::report::results::host_busy(l, cpus))
        {
            // Still the kernel's verdict (a deadline is a deadline), but the reader should
            // know the guest may only have been starved.
            reasons.push(format!(
                "the host was busy when it ended (load {load:.1} on {}): a guest slowed by \
                 the host, not only a stuck kernel, can miss a deadline",
                crate::report::plural(u64::from(cpus), "CPU")
            ));
        }
        IterationRecord {
            iteration: n,
            verdict: v,
            reasons,
            steps,
            findings,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            seed,
            dmesg_file: Some(dmesg_file),
            console_tail: if v == Verdict::Pass {
                Vec::new()
            } else {
                console_tail
            },
            host_load,
        }
    }

    /// Reads the guest's dmesg so far into `kmsg`, before a host action ends the boot.
    async fn read_dmesg(&mut self, kmsg: &mut Vec<KmsgRecord>) {
        let out = self
            .exec_ops(vec![(None, Op::Dmesg)], Duration::from_secs(30), "dmesg")
            .await;
        collect_dmesg(out, kmsg);
    }

    /// Carries out a host step. Boots that end here leave their console text in `console`.
    /// `dmesg_read`: the plan just before it read the guest's kernel log already.
    async fn host_action(
        &mut self,
        action: &HostAction,
        kmsg: &mut Vec<KmsgRecord>,
        console: &mut String,
        dmesg_read: bool,
    ) -> Result<(), RunError> {
        match action {
            HostAction::PowerCut | HostAction::Panic | HostAction::Reboot => {
                if !dmesg_read {
                    self.read_dmesg(kmsg).await;
                }
                let reason = match action {
                    HostAction::PowerCut => {
                        self.machine.power_cut().await;
                        "power-cut"
                    }
                    HostAction::Panic => {
                        self.machine.panic().await;
                        "panic"
                    }
                    _ => {
                        self.machine.reboot().await;
                        "reboot"
                    }
                };
                // The boot's last words (a warning just before the cut, the panic, a clean
                // reboot's shutdown messages) reached only its console.
                let unread = outcome::console_after(
                    &self.machine.console_tail(CONSOLE_TAIL),
                    self.kmsg_read_to,
                );
                if !unread.is_empty() {
                    if !console.is_empty() {
                        console.push('\n');
                    }
                    console.push_str(&unread.join("\n"));
                }
                self.boot(reason).await
            }
            HostAction::Unplug { serial } => {
                Ok(self.machine.unplug(serial, Duration::from_secs(60)).await?)
            }
            HostAction::Replug { serial } => {
                self.machine.replug(serial).await?;
                let wait = Op::WaitDevice {
                    device: serial.clone(),
                    present: true,
                    timeout_ms: 30_000,
                };
                let out = self
                    .exec_ops(vec![(None, wait)], Duration::from_secs(60), "replug")
                    .await;
                match out.reports.first() {
                    Some((_, r)) if r.error.is_none() => Ok(()),
                    Some((_, r)) => Err(RunError::Helper(r.error.clone().unwrap_or_default())),
                    None => Err(match out.abort {
                        Some(a) => RunError::Aborted(a),
                        None => RunError::Helper("no report of the wait for the disk".into()),
                    }),
                }
            }
        }
    }
}

/// How a scenario's kernel log is read: setup's as every iteration's (a power cut or `panic`
/// step adds what it expects to an iteration's).
fn classify_context(s: &Scenario) -> ClassifyContext {
    ClassifyContext {
        // Patterns were checked when the scenario loaded.
        ignore: s
            .dmesg
            .ignore
            .iter()
            .filter_map(|r| regex::Regex::new(r).ok())
            .collect(),
        expected_fs_errors: plan::expects_fs_errors(s),
        ..ClassifyContext::default()
    }
}

/// `base`, or `base-2`, `base-3`, ... when a run directory of that name exists (a resumed
/// run never writes over the files of the run it continues).
fn fresh_rel_dir(out: &Path, base: &str) -> String {
    if !out.join(base).exists() {
        return base.to_string();
    }
    (2u32..)
        .map(|n| format!("{base}-{n}"))
        .find(|d| !out.join(d).exists())
        .expect("some suffix is free")
}

/// Console lines of an ended boot searched for what its kernel log did not have yet.
const CONSOLE_TAIL: usize = 400;

/// Longest part a run directory's name takes from the scenario name or the kernel spec: a
/// spec with a few `--patches` runs to hundreds of characters, and a file name to at most 255
/// bytes ("File name too long" made `crashrig check` untestable).
const DIR_PART_MAX: usize = 64;

/// `s` as a piece of a directory name: ASCII letters, digits, `.` and `-` kept, the rest `_`;
/// beyond [`DIR_PART_MAX`], its start and a hash of the whole (two long specs that share
/// their start still get two names).
fn sanitize(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.len() <= DIR_PART_MAX {
        return clean;
    }
    use sha2::Digest;
    let hash = hex::encode(&sha2::Sha256::digest(s.as_bytes())[..4]);
    format!("{}-{hash}", &clean[..DIR_PART_MAX - hash.len() - 1])
}

/// Runs one scenario on one kernel on a machine of its own; every iteration is reported as it
/// finishes.
pub async fn run_scenario(
    loaded: &LoadedScenario,
    kernel: &ResolvedKernel,
    guest_image: &GuestImage,
    opts: &RunOptions,
    index: usize,
    sink: &mut EventSink,
) -> RunRecord {
    let machine = QemuMachine::new(
        &loaded.scenario,
        kernel,
        guest_image,
        opts.cache.clone(),
        opts.accel,
        opts.keep,
    )
    .with_restore(opts.restore);
    let mut rig = Rig::new(machine);
    let record = run_batch(
        &mut rig,
        loaded,
        kernel,
        &guest_image.key,
        opts,
        index,
        sink,
    )
    .await;
    rig.stop().await;
    record
}

/// The scenario as it ran, as the run directory's `scenario.yaml` holds it.
fn scenario_text(s: &crate::scenario::Scenario) -> String {
    serde_json::to_string_pretty(s).unwrap_or_default()
}

/// SHA-256 (hex) of [`scenario_text`]: results record it so merged shards can be checked to
/// have run the same scenario.
pub fn scenario_sha256(s: &crate::scenario::Scenario) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(scenario_text(s).as_bytes()))
}

/// Runs one scenario on `rig`'s machine, booting and setting it up unless it is ready. The
/// machine keeps running afterwards (the caller stops the rig), so the next batch of the same
/// kernel and scenario can start on it.
pub async fn run_batch<M: Machine>(
    rig: &mut Rig<M>,
    loaded: &LoadedScenario,
    kernel: &ResolvedKernel,
    guest_image_key: &str,
    opts: &RunOptions,
    index: usize,
    sink: &mut EventSink,
) -> RunRecord {
    let s = &loaded.scenario;
    let iterations = opts.iterations.unwrap_or(s.iterations);
    let seed = opts
        .resume
        .as_ref()
        .map(|r| r.seed)
        .or(opts.seed)
        .or(s.seed)
        .unwrap_or_else(rand::random);
    let rel_dir = fresh_rel_dir(
        &opts.out,
        &format!(
            "runs/{:02}-{}-{}",
            index + 1,
            sanitize(&s.name),
            sanitize(&kernel.spec)
        ),
    );
    let mut record = RunRecord {
        scenario: ScenarioInfo {
            name: s.name.clone(),
            // absolute: `crashrig repro --param` reloads it from any directory
            path: std::path::absolute(&loaded.path)
                .unwrap_or_else(|_| loaded.path.clone())
                .display()
                .to_string(),
            description: s.description.clone(),
            sha256: Some(scenario_sha256(s)),
        },
        kernel: KernelInfo {
            spec: kernel.spec.clone(),
            version: kernel.version.clone(),
            release: kernel.release.clone(),
            image_sha256: kernel.image_sha256.clone(),
            build_key: kernel.build_key.clone(),
            kconfig: kernel.kconfig.clone(),
            patches: kernel
                .patches
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        },
        accel: opts.accel.to_string(),
        seed,
        started: now_rfc3339(),
        finished: None,
        dir: rel_dir.clone(),
        cell: opts.cell.clone(),
        restore: opts.restore.to_string(),
        independent_iterations: false,
        setting: s.setting.clone(),
        iterations_planned: Some(iterations),
        host_cpus: Some(crate::host::cpus()),
        guest_image: guest_image_key.to_string(),
        boots: Vec::new(),
        setup: Vec::new(),
        setup_dmesg: None,
        error: None,
        summary: Summary::default(),
        iterations: Vec::new(),
    };
    if let Some(prev) = &opts.resume {
        record.started = prev.started.clone();
        record.boots = prev.boots.clone();
        record.iterations = prev.iterations.clone();
        // Setup's kernel log of the run resumed is judged already; this run's setups add theirs.
        record.setup_dmesg = prev.setup_dmesg.clone();
        record.summary = crate::report::summarize(&record.iterations);
        // A resume asking for fewer iterations than were kept drops none of them: say so,
        // since the counts will not be the ones asked for.
        let beyond = prev
            .iterations
            .iter()
            .filter(|i| i.iteration > iterations)
            .count();
        if beyond > 0 {
            sink.warn(format!(
                "run {}: {} iterations planned, but the run being resumed kept {} ({beyond} \
                 numbered past {iterations}); all are kept and counted",
                index + 1,
                iterations,
                prev.iterations.len()
            ));
        }
    }
    sink.emit(Event::RunStarted {
        index,
        run: Box::new(record.clone()),
        planned: iterations,
        only: opts.only_iteration,
        until_target: opts.stop_when.is_some(),
    });
    let mut run = Run {
        machine: &mut rig.machine,
        scenario: s,
        sink,
        index,
        run_dir: opts.out.join(&rel_dir),
        rel_dir,
        boots: 0,
        boot_records: Vec::new(),
        system_map: kernel
            .system_map
            .as_deref()
            .and_then(|p| outcome::SystemMap::load(p).ok()),
        unread_boot_dmesg: None,
        kmsg_read_to: None,
        setups: 0,
        setup_dmesg: record.setup_dmesg.clone(),
        host_cpus: record.host_cpus.unwrap_or_else(crate::host::cpus),
    };
    let scenario_key = serde_json::to_string(s).unwrap_or_default();
    if rig.set_up_for.as_ref() != Some(&scenario_key) {
        // Set up for another scenario: boot-free, but setup runs again.
        rig.set_up_for = None;
    }
    let result = run_inner(
        &mut run,
        &mut rig.ready,
        &mut rig.set_up_for,
        &scenario_key,
        loaded,
        opts,
        seed,
        iterations,
        &mut record,
    )
    .await;
    // A guest started last and never asked for anything since: its boot messages are read
    // now, while it runs (a later batch may reuse it).
    if run.unread_boot_dmesg.is_some() {
        if run.machine.is_running() {
            run.exec_ops(Vec::new(), Duration::from_secs(60), "dmesg")
                .await;
        }
        run.boot_dmesg_lost();
    }
    if let Err(e) = result {
        rig.ready = false;
        record.error = Some(crate::report::error_chain(&e));
    }
    record.boots.append(&mut run.boot_records);
    record.setup_dmesg = run.setup_dmesg.take();
    record.finished = Some(now_rfc3339());
    record.summary = crate::report::summarize(&record.iterations);
    run.sink.emit(Event::RunFinished {
        index,
        run: Box::new(record.clone()),
    });
    record
}

#[allow(clippy::too_many_arguments)]
async fn run_inner<M: Machine>(
    run: &mut Run<'_, M>,
    ready: &mut bool,
    set_up_for: &mut Option<String>,
    scenario_key: &str,
    loaded: &LoadedScenario,
    opts: &RunOptions,
    seed: u64,
    iterations: u32,
    record: &mut RunRecord,
) -> Result<(), RunError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RunError::Io { path, source }
    };
    // A resumed run skips the iterations it kept.
    let numbers: Vec<u32> = match opts.only_iteration {
        Some(n) => vec![n],
        None => (1..=iterations)
            .filter(|n| !record.iterations.iter().any(|i| i.iteration == *n))
            .collect(),
    };
    if numbers.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(run.run_dir.join("dmesg")).map_err(io(&run.run_dir))?;
    // The scenario as it ran (after matrix parameters), in JSON, which is YAML the loader
    // reads back: `crashrig repro` needs nothing else.
    let copy = run.run_dir.join("scenario.yaml");
    let text = scenario_text(&loaded.scenario);
    std::fs::write(&copy, text + "\n").map_err(io(&copy))?;
    let data_seed = plan::iteration_seed(seed, u32::MAX);
    // Each iteration from a restore of the set-up guest: saved once under the setup it ran,
    // so the next batch of the same kernel and scenario starts from it too, and so does a
    // later run (the machine finds it in the cache): then nothing boots and setup never runs.
    let mut restores = opts.restore.restores_iterations(run.scenario);
    if opts.restore == RestoreMode::Always && run.scenario.iterations_share_state {
        run.sink.info(
            "--restore always: the iterations run one after another on one guest, as the \
             scenario declares (iterations-share-state: true); crash steps still restore the \
             booted guest",
        );
    }
    let set_up_key = plan::setup_key(run.scenario, seed, data_seed);
    let saved = restores && run.machine.find_set_up(&set_up_key).await;
    if *ready && set_up_for.is_none() && !saved {
        // The running machine was set up for another scenario: set up again without
        // booting; a setup that fails there (it was not written to run twice) gets a fresh
        // boot below. Until it ends well the guest is not ready: an interrupt in it leaves
        // the guest half set up, its helper maybe still running.
        *ready = false;
        let (steps, error) = run.setup(seed, data_seed).await;
        if error.is_none() {
            record.setup = steps.clone();
            run.sink.emit(Event::SetupFinished {
                index: run.index,
                steps,
            });
            *set_up_for = Some(scenario_key.to_string());
            *ready = true;
        }
    }
    if !(*ready || saved) {
        *set_up_for = None;
        run.boot("start").await?;
        let (steps, error) = run.setup(seed, data_seed).await;
        record.setup = steps.clone();
        run.sink.emit(Event::SetupFinished {
            index: run.index,
            steps,
        });
        if let Some(e) = error {
            return Err(e);
        }
        *set_up_for = Some(scenario_key.to_string());
    }
    if restores && !run.machine.find_set_up(&set_up_key).await {
        restores = run.save_set_up(&set_up_key, seed, data_seed).await?;
    }
    record.independent_iterations = restores;
    // A saved set-up guest that does not load is set up and saved anew, once.
    let mut saved_anew = false;
    for (done, n) in numbers.iter().copied().enumerate() {
        let last = done + 1 == numbers.len();
        // Until the iteration ends well, the machine's state is unknown (an interrupted run
        // leaves it so).
        *ready = false;
        while restores {
            let Err(e) = run.restore_set_up().await else {
                break;
            };
            let why = crate::report::error_chain(&e);
            run.boot("after a failed restore").await?;
            let (steps, error) = run.setup(seed, data_seed).await;
            if let Some(e) = error {
                return Err(e);
            }
            if record.setup.is_empty() {
                record.setup = steps;
            }
            if saved_anew {
                run.sink
                    .info(format!("iterations go on without restores: {why}"));
                restores = false;
                record.independent_iterations = false;
            } else {
                run.sink.info(format!(
                    "the saved set-up guest did not start ({why}); set up and saved anew"
                ));
                saved_anew = true;
                restores = run.save_set_up(&set_up_key, seed, data_seed).await?;
                record.independent_iterations = restores;
            }
        }
        let it = run.iteration(n, seed, data_seed).await;
        let needs_fresh_boot = it.verdict != Verdict::Pass && !run.machine.is_running()
            || matches!(it.verdict, Verdict::Hang | Verdict::Panic | Verdict::Error);
        let stop = opts.stop_when.is_some_and(|f| f(&it, &opts.stop_arg));
        record.iterations.push(it.clone());
        run.sink.emit(Event::IterationFinished {
            index: run.index,
            record: Box::new(it),
            planned: iterations,
        });
        *ready = !needs_fresh_boot;
        if stop {
            break;
        }
        if needs_fresh_boot && !last && !restores {
            // The guest's state is unknown after a hang or panic: boot again and redo setup.
            run.boot("after a failed iteration").await?;
            let (_, error) = run.setup(seed, data_seed).await;
            if let Some(e) = error {
                return Err(e);
            }
            *ready = true;
        }
    }
    Ok(())
}

fn kmsg_text(records: &[KmsgRecord]) -> String {
    let mut out = String::new();
    for r in records {
        for (i, line) in r.text.lines().enumerate() {
            if i == 0 {
                out.push_str(&format!(
                    "[{:5}.{:06}] {line}\n",
                    r.ts_us / 1_000_000,
                    r.ts_us % 1_000_000
                ));
            } else {
                out.push_str(&format!("               {line}\n"));
            }
        }
    }
    out
}

fn collect_dmesg(out: PlanOutcome, kmsg: &mut Vec<KmsgRecord>) {
    for (_, r) in &out.reports {
        kmsg.extend_from_slice(dmesg_records(r).unwrap_or_default());
    }
}

/// The kernel log records a `Dmesg` operation reported.
fn dmesg_records(r: &StepReport) -> Option<&[KmsgRecord]> {
    match &r.detail {
        Some(Detail::Dmesg { records }) => Some(records),
        _ => None,
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
