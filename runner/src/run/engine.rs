//! The run loop: boot, setup, iterations (guest plans and host actions), dmesg, verdicts.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crashrig_guest::{
    Detail, KmsgRecord, Op, OutputLine, Plan, PlanStep, StepReport, PROTOCOL_VERSION,
};

use super::boot::{boot, BootError, BootSpec, Booted};
use super::plan::{self, HostAction, Phase, Segment, StepRef};
use super::verdict::{self, Abort};
use crate::cache::Cache;
use crate::guest::RunKey;
use crate::image::{self, GuestImage};
use crate::kernel::ResolvedKernel;
use crate::outcome::{self, ClassifyContext, Finding};
use crate::report::events::{Event, EventSink};
use crate::report::writer::now_rfc3339;
use crate::report::{
    BootRecord, IterationRecord, KernelInfo, RunRecord, ScenarioInfo, StepRecord, Summary,
};
use crate::scenario::{Scenario, Step};
use crate::vm::{create_disk, Accel, Disk};

/// How the guest helper is invoked: tools on the tools disk need their PATH and libraries.
pub(crate) const HELPER: &str =
    "PATH=/tools/bin:/bin:/sbin:/usr/bin:/usr/sbin LD_LIBRARY_PATH=/tools/lib crashrig-guest exec";

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error(transparent)]
    Ssh(#[from] crate::guest::SshError),
    #[error(transparent)]
    Vm(#[from] crate::vm::VmError),
    #[error(transparent)]
    Snapshot(#[from] crate::vm::snapshot::SnapshotError),
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
    /// Stop after the first iteration for which this returns true (bisect batches stop at
    /// the first sighting of their target).
    pub stop_when: Option<fn(&IterationRecord, &str) -> bool>,
    /// Argument of `stop_when` (the bisect target).
    pub stop_arg: String,
    pub cache: Cache,
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
        }
    }
}

/// A scenario as loaded, with where it came from.
#[derive(Clone)]
pub struct LoadedScenario {
    pub scenario: Scenario,
    pub path: PathBuf,
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// What a guest plan produced.
struct PlanOutcome {
    reports: Vec<(StepRef, StepReport)>,
    /// The plan did not finish: why.
    abort: Option<Abort>,
}

/// One VM plus everything needed to boot it again on the same disks.
struct Machine<'a> {
    scenario: &'a Scenario,
    kernel: &'a ResolvedKernel,
    image: &'a GuestImage,
    initrd: PathBuf,
    key: RunKey,
    disks: Vec<Disk>,
    accel: Accel,
    run_dir: PathBuf,
    rel_dir: String,
    boots: u32,
    booted: Option<Booted>,
    /// For traces printed as bare addresses. Debian packages ship a placeholder System.map,
    /// which does not load; built kernels have a real one.
    system_map: Option<outcome::SystemMap>,
}

impl<'a> Machine<'a> {
    async fn boot(
        &mut self,
        reason: &str,
        sink: &mut EventSink,
        index: usize,
    ) -> Result<(), RunError> {
        if let Some(mut old) = self.booted.take() {
            old.vm.stop().await;
        }
        self.boots += 1;
        let console_name = format!("console-{:02}.log", self.boots);
        let s = self.scenario;
        let fstypes: Vec<&str> = s.filesystem.iter().map(|f| f.fstype.as_str()).collect();
        let uses_dm = s.devices.iter().any(|d| d.dm);
        let spec = BootSpec {
            kernel: &self.kernel.image,
            initrd: &self.initrd,
            image: self.image,
            key: &self.key,
            memory_mib: s.vm.memory.0 >> 20,
            cpus: s.vm.cpus,
            disks: self.disks.clone(),
            modules: image::boot_modules(&fstypes, uses_dm),
            extra_cmdline: s.vm.cmdline.clone(),
            accel: self.accel,
            console_log: self.run_dir.join(&console_name),
            qmp_socket: self.run_dir.join("qmp.sock"),
            ready_timeout: Duration::from_secs(if self.accel == Accel::Kvm { 60 } else { 240 }),
        };
        let booted = boot(spec).await?;
        let mut qemu_command = vec!["qemu-system-x86_64".to_string()];
        qemu_command.extend(crate::vm::qemu::qemu_args(booted.vm.config()));
        self.booted = Some(booted);
        // The boot's own messages go to a file of their own, so the first iteration's dmesg
        // starts with that iteration.
        let dmesg_name = format!("dmesg/boot-{:02}.txt", self.boots);
        let out = self
            .exec_ops(&[(None, Op::Dmesg)], Duration::from_secs(60), "boot")
            .await;
        let mut records = Vec::new();
        collect_dmesg(out, &mut records);
        let _ = std::fs::write(self.run_dir.join(&dmesg_name), kmsg_text(&records));
        sink.emit(Event::BootFinished {
            index,
            boot: BootRecord {
                ready_after_ms: self
                    .booted
                    .as_ref()
                    .map_or(0, |b| b.ready_after.as_millis() as u64),
                console_log: format!("{}/{console_name}", self.rel_dir),
                reason: reason.into(),
                qemu_command,
                dmesg_file: Some(format!("{}/{dmesg_name}", self.rel_dir)),
            },
        });
        let prelude = plan::boot_prelude(s);
        if !prelude.is_empty() {
            let steps: Vec<(Option<StepRef>, Op)> =
                prelude.into_iter().map(|op| (None, op)).collect();
            let out = self
                .exec_ops(&steps, Duration::from_secs(120), "prelude")
                .await;
            if let Some(bad) = out
                .reports
                .iter()
                .find(|(_, r)| r.error.is_some() || r.exit_status.is_some_and(|s| s != 0))
            {
                return Err(RunError::Setup {
                    step: "dm-create".into(),
                    why: bad.1.error.clone().unwrap_or_else(|| bad.1.stderr.clone()),
                });
            }
            if let Some(a) = out.abort {
                return Err(RunError::Setup {
                    step: "dm-create".into(),
                    why: format!("{a:?}"),
                });
            }
        }
        Ok(())
    }

    /// Runs ops in the guest as one plan. Reports stream back as each op finishes.
    async fn exec_ops(
        &mut self,
        ops: &[(Option<StepRef>, Op)],
        timeout: Duration,
        label: &str,
    ) -> PlanOutcome {
        let Some(booted) = self.booted.as_mut() else {
            return PlanOutcome {
                reports: vec![],
                abort: Some(Abort::Infra("no VM".into())),
            };
        };
        let plan = Plan {
            version: PROTOCOL_VERSION,
            label: label.into(),
            steps: ops
                .iter()
                .enumerate()
                .map(|(i, (r, op))| PlanStep {
                    index: r.map_or(900_000 + i, StepRef::wire),
                    op: op.clone(),
                })
                .collect(),
        };
        let stdin = serde_json::to_vec(&plan).unwrap_or_default();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let result = booted
            .guest
            .exec(HELPER.into(), stdin, timeout, move |line| {
                sink.lock().expect("lines lock").push(line.to_string())
            })
            .await;
        let mut reports = Vec::new();
        let mut done = false;
        let mut fatal = None;
        for line in lines.lock().expect("lines lock").iter() {
            match serde_json::from_str::<OutputLine>(line) {
                Ok(OutputLine::Step(r)) => {
                    let r = *r;
                    if let Some(sr) = StepRef::from_wire(r.index) {
                        reports.push((sr, r));
                    } else {
                        reports.push((
                            StepRef {
                                phase: Phase::Setup,
                                index: usize::MAX,
                            },
                            r,
                        ));
                    }
                }
                Ok(OutputLine::End(_)) => done = true,
                Err(_) => {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                        if let Some(f) = v.get("fatal").and_then(|f| f.as_str()) {
                            fatal = Some(f.to_string());
                        }
                    }
                }
            }
        }
        let abort = match result {
            Ok(_) if done => None,
            Ok(out) => Some(Abort::Infra(match fatal {
                Some(f) => format!("guest helper: {f}"),
                None => format!(
                    "guest helper ended without finishing its plan (status {}): {}",
                    out.status,
                    out.stderr.trim()
                ),
            })),
            Err(e) => {
                let why = crate::report::error_chain(&e);
                // Was it the kernel? QEMU exits on panic (panic=-1, -no-reboot).
                let exited = booted.vm.wait_exit(Duration::from_secs(2)).await;
                if booted.vm.panicked() {
                    Some(Abort::Panic(panic_line(&booted.vm.console_tail(60))))
                } else if let Some(status) = exited {
                    Some(Abort::Infra(format!(
                        "QEMU exited ({status}) during the plan"
                    )))
                } else {
                    Some(Abort::Hang(why))
                }
            }
        };
        PlanOutcome { reports, abort }
    }

    async fn stop(&mut self) {
        if let Some(mut b) = self.booted.take() {
            b.vm.stop().await;
        }
    }
}

fn panic_line(tail: &[String]) -> String {
    tail.iter()
        .find(|l| l.contains("Kernel panic - not syncing"))
        .map(|l| l.split("] ").nth(1).unwrap_or(l).trim().to_string())
        .unwrap_or_else(|| "kernel panic".into())
}

/// Runs one scenario on one kernel; every iteration is reported as it finishes.
pub async fn run_scenario(
    loaded: &LoadedScenario,
    kernel: &ResolvedKernel,
    guest_image: &GuestImage,
    opts: &RunOptions,
    index: usize,
    sink: &mut EventSink,
) -> RunRecord {
    let s = &loaded.scenario;
    let iterations = opts.iterations.unwrap_or(s.iterations);
    let seed = opts.seed.or(s.seed).unwrap_or_else(rand::random);
    let rel_dir = format!(
        "runs/{:02}-{}-{}",
        index + 1,
        sanitize(&s.name),
        sanitize(&kernel.spec)
    );
    let run_dir = opts.out.join(&rel_dir);
    let mut record = RunRecord {
        scenario: ScenarioInfo {
            name: s.name.clone(),
            path: loaded.path.display().to_string(),
            description: s.description.clone(),
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
        guest_image: guest_image.key.clone(),
        boots: Vec::new(),
        setup: Vec::new(),
        error: None,
        summary: Summary::default(),
        iterations: Vec::new(),
    };
    sink.emit(Event::RunStarted {
        index,
        run: Box::new(record.clone()),
        planned: iterations,
    });
    let result = run_inner(
        loaded,
        kernel,
        guest_image,
        opts,
        index,
        sink,
        &run_dir,
        &rel_dir,
        seed,
        iterations,
        &mut record,
    )
    .await;
    if let Err(e) = result {
        record.error = Some(crate::report::error_chain(&e));
    }
    record.finished = Some(now_rfc3339());
    record.summary = crate::report::summarize(&record.iterations);
    sink.emit(Event::RunFinished {
        index,
        run: Box::new(record.clone()),
    });
    record
}

#[allow(clippy::too_many_arguments)]
async fn run_inner(
    loaded: &LoadedScenario,
    kernel: &ResolvedKernel,
    guest_image: &GuestImage,
    opts: &RunOptions,
    index: usize,
    sink: &mut EventSink,
    run_dir: &Path,
    rel_dir: &str,
    seed: u64,
    iterations: u32,
    record: &mut RunRecord,
) -> Result<(), RunError> {
    let s = &loaded.scenario;
    std::fs::create_dir_all(run_dir.join("dmesg")).map_err(|source| RunError::Io {
        path: run_dir.into(),
        source,
    })?;
    // The scenario as it ran (after matrix parameters), in JSON, which is YAML the loader
    // reads back: `crashrig repro` needs nothing else.
    let copy = run_dir.join("scenario.yaml");
    let text = serde_json::to_string_pretty(&loaded.scenario).unwrap_or_default();
    std::fs::write(&copy, text + "\n").map_err(|source| RunError::Io { path: copy, source })?;
    let initrd = image::initrd_for(guest_image, kernel, &opts.cache)?;
    let disk_dir = tempfile::Builder::new()
        .prefix("crashrig-disks-")
        .tempdir()
        .map_err(|source| RunError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
    let mut disks = Vec::new();
    for d in &s.devices {
        let path = disk_dir.path().join(format!("{}.img", d.name));
        create_disk(&path, d.size.0)?;
        disks.push(Disk {
            serial: d.name.clone(),
            path,
            read_only: false,
            format: crate::vm::DiskFormat::Raw,
        });
    }
    // With --keep the directory outlives the run; otherwise TempDir removes it on every path
    // out of this function, including cancellation by Ctrl-C.
    let _disk_guard = if opts.keep {
        let kept = disk_dir.keep();
        sink.info(format!("disk images kept in {}", kept.display()));
        None
    } else {
        Some(disk_dir)
    };
    let mut m = Machine {
        scenario: s,
        kernel,
        image: guest_image,
        initrd,
        key: RunKey::generate()?,
        disks,
        accel: opts.accel,
        run_dir: run_dir.to_path_buf(),
        rel_dir: rel_dir.to_string(),
        boots: 0,
        booted: None,
        system_map: kernel
            .system_map
            .as_deref()
            .and_then(|p| outcome::SystemMap::load(p).ok()),
    };
    m.boot("start", sink, index).await?;
    let data_seed = plan::iteration_seed(seed, u32::MAX);
    let setup = run_setup(&mut m, s, seed, data_seed).await;
    record.setup = setup.0.clone();
    sink.emit(Event::SetupFinished {
        index,
        steps: setup.0.clone(),
    });
    if let Some(e) = setup.1 {
        m.stop().await;
        return Err(e);
    }
    let numbers: Vec<u32> = match opts.only_iteration {
        Some(n) => vec![n],
        None => (1..=iterations).collect(),
    };
    for (done, n) in numbers.iter().copied().enumerate() {
        let last = done + 1 == numbers.len();
        let it = run_iteration(&mut m, s, n, seed, data_seed, sink, index).await;
        let needs_fresh_boot = it.verdict != crate::report::Verdict::Pass
            && m.booted.as_mut().is_none_or(|b| b.vm.exited().is_some())
            || matches!(
                it.verdict,
                crate::report::Verdict::Hang
                    | crate::report::Verdict::Panic
                    | crate::report::Verdict::Error
            );
        let stop = opts.stop_when.is_some_and(|f| f(&it, &opts.stop_arg));
        record.iterations.push(it.clone());
        sink.emit(Event::IterationFinished {
            index,
            record: Box::new(it),
            planned: iterations,
        });
        if stop {
            break;
        }
        if needs_fresh_boot && !last {
            // The guest's state is unknown after a hang or panic: boot again and redo setup.
            m.boot("after a failed iteration", sink, index).await?;
            let setup = run_setup(&mut m, s, seed, data_seed).await;
            if let Some(e) = setup.1 {
                m.stop().await;
                return Err(e);
            }
        }
    }
    m.stop().await;
    Ok(())
}

async fn run_setup(
    m: &mut Machine<'_>,
    s: &Scenario,
    seed: u64,
    data_seed: u64,
) -> (Vec<StepRecord>, Option<RunError>) {
    let mut records = Vec::new();
    for seg in plan::plan_phase(s, Phase::Setup, plan::iteration_seed(seed, 0), data_seed) {
        match seg {
            Segment::Guest(ops) => {
                let timeout = plan::plan_timeout(&ops, s.iteration_timeout);
                let ops: Vec<(Option<StepRef>, Op)> =
                    ops.into_iter().map(|(r, o)| (Some(r), o)).collect();
                let out = m.exec_ops(&ops, timeout, "setup").await;
                for (r, rep) in &out.reports {
                    records.push(verdict::step_record(s, *r, rep));
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
                    return (
                        records.clone(),
                        Some(RunError::Setup {
                            step: bad.id.clone(),
                            why,
                        }),
                    );
                }
                if let Some(a) = out.abort {
                    return (
                        records,
                        Some(RunError::Setup {
                            step: "setup".into(),
                            why: format!("{a:?}"),
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

async fn run_iteration(
    m: &mut Machine<'_>,
    s: &Scenario,
    n: u32,
    run_seed: u64,
    data_seed: u64,
    sink: &mut EventSink,
    index: usize,
) -> IterationRecord {
    let started = Instant::now();
    let seed = plan::iteration_seed(run_seed, n);
    let mut steps: Vec<StepRecord> = Vec::new();
    let mut abort: Option<Abort> = None;
    let mut ctx = ClassifyContext {
        // Patterns were checked when the scenario loaded.
        ignore: s
            .dmesg
            .ignore
            .iter()
            .filter_map(|r| regex::Regex::new(r).ok())
            .collect(),
        ..ClassifyContext::default()
    };
    let mut console_text = String::new();
    let mut kmsg: Vec<KmsgRecord> = Vec::new();

    let mut segments = plan::plan_phase(s, Phase::Steps, seed, data_seed);
    segments.extend(plan::plan_phase(s, Phase::Cleanup, seed, data_seed));
    for step in &s.steps {
        if matches!(
            step,
            Step::Shutdown(_)
                | Step::DmError(_)
                | Step::DmFlakey(_)
                | Step::PowerCut(_)
                | Step::Unplug(_)
                | Step::Panic(_)
        ) {
            ctx.expected_fs_errors = true;
        }
    }
    for seg in segments {
        if abort.is_some() {
            break;
        }
        match seg {
            Segment::Guest(ops) => {
                let timeout = plan::plan_timeout(&ops, s.iteration_timeout);
                let ops: Vec<(Option<StepRef>, Op)> =
                    ops.into_iter().map(|(r, o)| (Some(r), o)).collect();
                let out = m.exec_ops(&ops, timeout, &format!("iteration {n}")).await;
                for (r, rep) in &out.reports {
                    steps.push(verdict::step_record(s, *r, rep));
                }
                abort = out.abort;
            }
            Segment::Host(r, action) => {
                let t0 = Instant::now();
                let result =
                    host_action(m, &action, sink, index, &mut kmsg, &mut console_text).await;
                if matches!(action, HostAction::Panic) {
                    ctx.expected_panic = true;
                }
                let (ok, note) = match &result {
                    Ok(()) => (true, None),
                    Err(e) => (false, Some(crate::report::error_chain(e))),
                };
                steps.push(StepRecord {
                    id: r.id(s),
                    kind: r.phase.steps(s)[r.index].kind().into(),
                    phase: r.phase.name().into(),
                    errno: None,
                    final_errno: None,
                    attempts: 1,
                    busy_window_ms: None,
                    busy_gave_up: false,
                    duration_ms: t0.elapsed().as_secs_f64() * 1000.0,
                    exit_status: None,
                    ok,
                    note: note.clone(),
                    detail: None,
                    output: String::new(),
                });
                if let Err(e) = result {
                    abort = Some(match e {
                        RunError::Boot(_) => Abort::Infra(note.unwrap_or_default()),
                        _ => Abort::Infra(crate::report::error_chain(&e)),
                    });
                }
            }
        }
    }
    // dmesg of this iteration: from the guest while it lives, else from the console.
    let mut console_tail = Vec::new();
    match &abort {
        None | Some(Abort::Infra(_))
            if m.booted.as_mut().is_some_and(|b| b.vm.exited().is_none()) =>
        {
            let out = m
                .exec_ops(&[(None, Op::Dmesg)], Duration::from_secs(60), "dmesg")
                .await;
            collect_dmesg(out, &mut kmsg);
        }
        _ => {
            if let Some(b) = m.booted.as_mut() {
                console_tail = b.vm.console_tail(80);
                if matches!(abort, Some(Abort::Hang(_))) {
                    b.vm.power_cut().await;
                }
            }
            console_text.push_str(&console_tail.join("\n"));
        }
    }
    let mut findings: Vec<Finding> = outcome::classify_records(&kmsg, &ctx);
    if !console_text.is_empty() {
        findings.extend(outcome::classify_console(&console_text, &ctx));
    }
    if let Some(map) = &m.system_map {
        for f in &mut findings {
            outcome::symbolize_finding(f, map);
        }
    }
    let dmesg_file = format!("{}/dmesg/iteration-{n:03}.txt", m.rel_dir);
    let mut text = kmsg_text(&kmsg);
    if !console_text.is_empty() {
        text.push_str("\n--- console (boots that ended during this iteration) ---\n");
        text.push_str(&console_text);
    }
    let _ = std::fs::write(m.run_dir.join(format!("dmesg/iteration-{n:03}.txt")), text);
    let (v, reasons) = verdict::verdict(s, &steps, &findings, abort.as_ref());
    IterationRecord {
        iteration: n,
        verdict: v,
        reasons,
        steps,
        findings,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        seed,
        dmesg_file: Some(dmesg_file),
        console_tail: if v == crate::report::Verdict::Pass {
            Vec::new()
        } else {
            console_tail
        },
    }
}

/// Carries out a host step. Boots that end here leave their console text in `console`.
async fn host_action(
    m: &mut Machine<'_>,
    action: &HostAction,
    sink: &mut EventSink,
    index: usize,
    kmsg: &mut Vec<KmsgRecord>,
    console: &mut String,
) -> Result<(), RunError> {
    match action {
        HostAction::PowerCut => {
            let out = m
                .exec_ops(&[(None, Op::Dmesg)], Duration::from_secs(30), "dmesg")
                .await;
            collect_dmesg(out, kmsg);
            if let Some(b) = m.booted.as_mut() {
                b.vm.power_cut().await;
            }
            m.boot("power-cut", sink, index).await
        }
        HostAction::Panic => {
            let out = m
                .exec_ops(&[(None, Op::Dmesg)], Duration::from_secs(30), "dmesg")
                .await;
            collect_dmesg(out, kmsg);
            if let Some(b) = m.booted.as_ref() {
                let guest = b.guest.clone();
                let plan = Plan {
                    version: PROTOCOL_VERSION,
                    label: "panic".into(),
                    steps: vec![PlanStep {
                        index: 999_999,
                        op: Op::Panic,
                    }],
                };
                let stdin = serde_json::to_vec(&plan).unwrap_or_default();
                // The connection dies with the kernel; the result does not matter.
                tokio::spawn(async move {
                    guest
                        .exec(HELPER.into(), stdin, Duration::from_secs(30), |_| {})
                        .await
                });
            }
            if let Some(b) = m.booted.as_mut() {
                if b.vm.wait_exit(Duration::from_secs(60)).await.is_none() {
                    b.vm.power_cut().await;
                }
            }
            // The panic itself only reached the console; what came before it was read from
            // /dev/kmsg above, so take the console from the helper's marker for this step on.
            let tail = m
                .booted
                .as_ref()
                .map(|b| b.vm.console_tail(200))
                .unwrap_or_default();
            let from = tail
                .iter()
                .rposition(|l| l.contains("crashrig: panic step"))
                .unwrap_or(0);
            console.push_str(&tail[from..].join("\n"));
            m.boot("panic", sink, index).await
        }
        HostAction::Reboot => {
            if let Some(b) = m.booted.as_ref() {
                let guest = b.guest.clone();
                tokio::spawn(async move {
                    guest
                        .exec(
                            "sync; reboot".into(),
                            vec![],
                            Duration::from_secs(30),
                            |_| {},
                        )
                        .await
                });
            }
            if let Some(b) = m.booted.as_mut() {
                if b.vm.wait_exit(Duration::from_secs(120)).await.is_none() {
                    b.vm.power_cut().await;
                }
            }
            m.boot("reboot", sink, index).await
        }
        HostAction::Unplug { serial } => {
            let b = m.booted.as_mut().ok_or(RunError::Helper("no VM".into()))?;
            b.vm.unplug(serial, Duration::from_secs(60)).await?;
            Ok(())
        }
        HostAction::Replug { serial } => {
            {
                let b = m.booted.as_mut().ok_or(RunError::Helper("no VM".into()))?;
                b.vm.replug(serial).await?;
            }
            let wait = Op::WaitDevice {
                device: serial.clone(),
                present: true,
                timeout_ms: 30_000,
            };
            let out = m
                .exec_ops(&[(None, wait)], Duration::from_secs(60), "replug")
                .await;
            match out.reports.first() {
                Some((_, r)) if r.error.is_none() => Ok(()),
                Some((_, r)) => Err(RunError::Helper(r.error.clone().unwrap_or_default())),
                None => Err(RunError::Helper(format!("{:?}", out.abort))),
            }
        }
    }
}

fn collect_dmesg(out: PlanOutcome, kmsg: &mut Vec<KmsgRecord>) {
    for (_, r) in out.reports {
        if let Some(Detail::Dmesg { records }) = r.detail {
            kmsg.extend(records);
        }
    }
}
