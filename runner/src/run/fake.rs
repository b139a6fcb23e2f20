//! A scripted machine for tests of the run loop: every plan succeeds unless the script says
//! otherwise, and every call is logged.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crashrig_guest::{Detail, KmsgRecord, Op, Plan, StepReport};

use super::boot::BootError;
use super::machine::{BootInfo, Machine, MachineError, PlanRun};
use super::verdict::Abort;

/// What the fake does with a plan.
// A test double: a scripted reply's size does not matter, and unboxed reports keep the
// scripts readable.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Reply {
    /// Every step succeeds.
    Ok,
    /// Steps succeed up to `step` (a position in the plan), which reports `report`; the rest run.
    Step { step: usize, report: StepReport },
    /// Steps before `step` succeed, then the guest stops answering (QEMU stays up).
    Hang { step: usize },
    /// Steps before `step` succeed, then the kernel panics and the machine ends.
    Panic { step: usize },
    /// Steps before `step` succeed, then QEMU dies without a panic.
    Die { step: usize },
    /// Steps before `step` succeed, then the transport to the guest fails while QEMU and the
    /// guest live on (an SSH connection reset, the helper dying): the machine keeps running.
    Fail { step: usize },
    /// Every step runs and the helper says it finished, but the report of `step` never
    /// arrives (a line the host could not read: a helper of another build, a garbled line).
    Lost { step: usize },
    /// Every step runs, and the helper also reports a step `index` the plan does not have
    /// (a helper that numbers steps its own way).
    Stray { index: usize },
}

/// The script: which reply a plan gets, by the plan (its label: "setup", "iteration 2",
/// "dmesg", ...; its operations: what the scenario's parameters became) and how many plans
/// with that label came before.
pub type PlanScript = Box<dyn FnMut(&Plan, usize) -> Reply + Send>;

pub struct FakeMachine {
    script: PlanScript,
    /// Every call, in order: "boot", "plan setup", "power-cut", "stop", ...
    pub log: Arc<Mutex<Vec<String>>>,
    /// The label and deadline of every plan, in order.
    pub deadlines: Arc<Mutex<Vec<(String, Duration)>>>,
    running: bool,
    seen: std::collections::HashMap<String, usize>,
    /// Boots (1-based) that fail as QEMU dying before the guest answered.
    pub failing_boots: VecDeque<u32>,
    boots: u32,
    /// Told the label of every plan as it starts (to interrupt a run at a chosen point).
    pub on_plan: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    /// The key of the saved set-up machine.
    set_up: Option<String>,
    /// A set-up machine an earlier run saved (the cache), found by `find_set_up`.
    pub cached_set_up: Option<String>,
    /// Restores of the set-up machine (1-based) whose state does not load.
    pub failing_restores: VecDeque<u32>,
    restores: u32,
    /// The saved set-up machine came from `cached_set_up`.
    set_up_from_cache: bool,
    /// The console every boot and restore starts with (a panic adds its line).
    pub boot_console: Vec<String>,
    console: Vec<String>,
    /// Saving the set-up machine fails (a full disk); the machine is stopped all the same.
    pub failing_save: bool,
    /// Hot-unplugs fail (QEMU refuses the `device_del`).
    pub failing_unplug: bool,
    /// The host load each iteration sees, in turn (then none): the fake never reads the
    /// real host's.
    pub host_loads: VecDeque<f64>,
}

/// The line a panic leaves on the fake's console, stamped after its kernel log's one record.
pub const PANIC_LINE: &str = "[    2.000000] Kernel panic - not syncing: fake";

impl FakeMachine {
    pub fn new(mut script: impl FnMut(&str, usize) -> Reply + Send + 'static) -> Self {
        Self::with_plans(move |plan, n| script(&plan.label, n))
    }

    /// A machine whose plan `label` reports `report` for its step `step`; every other plan
    /// runs clean.
    pub fn step_at(label: &'static str, step: usize, report: StepReport) -> Self {
        Self::new(move |l, _| {
            if l == label {
                Reply::Step {
                    step,
                    report: report.clone(),
                }
            } else {
                Reply::Ok
            }
        })
    }

    /// A machine whose script sees each plan.
    pub fn with_plans(script: impl FnMut(&Plan, usize) -> Reply + Send + 'static) -> Self {
        FakeMachine {
            script: Box::new(script),
            log: Arc::default(),
            deadlines: Arc::default(),
            running: false,
            seen: Default::default(),
            failing_boots: VecDeque::new(),
            boots: 0,
            on_plan: None,
            set_up: None,
            cached_set_up: None,
            failing_restores: VecDeque::new(),
            restores: 0,
            set_up_from_cache: false,
            boot_console: vec!["[    1.000000] fake console".into()],
            console: Vec::new(),
            failing_save: false,
            failing_unplug: false,
            host_loads: VecDeque::new(),
        }
    }

    /// A machine on which everything works.
    pub fn healthy() -> Self {
        FakeMachine::new(|_, _| Reply::Ok)
    }

    fn note(&self, what: impl Into<String>) {
        self.log.lock().unwrap().push(what.into());
    }

    fn ok_report(index: usize, op: &Op) -> StepReport {
        let mut r = StepReport {
            index,
            attempts: 1,
            duration_ms: 1.0,
            ..StepReport::default()
        };
        match op {
            Op::Mkfs { .. } | Op::Run { .. } | Op::Fsck { .. } => r.exit_status = Some(0),
            Op::Dmesg => {
                r.detail = Some(Detail::Dmesg {
                    records: vec![KmsgRecord {
                        seq: 1,
                        ts_us: 1_000_000,
                        level: 6,
                        text: "fake kernel says hello".into(),
                    }],
                })
            }
            _ => {}
        }
        r
    }
}

impl Machine for FakeMachine {
    async fn boot(&mut self, _console_log: &Path) -> Result<BootInfo, MachineError> {
        self.boots += 1;
        self.note("boot");
        self.console = self.boot_console.clone();
        if self.failing_boots.front() == Some(&self.boots) {
            self.failing_boots.pop_front();
            self.running = false;
            return Err(BootError::DiedBeforeReady {
                status: "exit status: 1".into(),
                tail: "qemu: could not open disk".into(),
            }
            .into());
        }
        self.running = true;
        Ok(BootInfo {
            ready_after: Duration::from_millis(5),
            command: vec!["fake-vm".into()],
            kept_disks: None,
            restored: None,
            from_cache: false,
            phases: Vec::new(),
            transport: "ssh",
        })
    }

    async fn run_plan(&mut self, plan: &Plan, deadline: Duration) -> PlanRun {
        self.note(format!("plan {}", plan.label));
        self.deadlines
            .lock()
            .unwrap()
            .push((plan.label.clone(), deadline));
        if let Some(tx) = &self.on_plan {
            let _ = tx.send(plan.label.clone());
        }
        // A real plan takes time: let an interrupt in.
        tokio::task::yield_now().await;
        if !self.running {
            return PlanRun {
                reports: vec![],
                abort: Some(Abort::Infra("no VM".into())),
            };
        }
        let count = self.seen.entry(plan.label.clone()).or_default();
        let reply = (self.script)(plan, *count);
        *count += 1;
        // The run reads a new guest's boot messages first in its next plan: a reply's `step`
        // counts the operations after that read, so scripts name the scenario's steps.
        let lead = usize::from(plan.steps.len() > 1 && matches!(plan.steps[0].op, Op::Dmesg));
        let ok = |upto: usize| -> Vec<StepReport> {
            plan.steps
                .iter()
                .take(upto)
                .map(|s| Self::ok_report(s.index, &s.op))
                .collect()
        };
        match reply {
            Reply::Ok => PlanRun {
                reports: ok(plan.steps.len()),
                abort: None,
            },
            Reply::Step { step, report } => {
                let step = step + lead;
                let mut reports = ok(plan.steps.len());
                reports[step] = StepReport {
                    index: step,
                    ..report
                };
                PlanRun {
                    reports,
                    abort: None,
                }
            }
            Reply::Hang { step } => PlanRun {
                reports: ok(step + lead),
                abort: Some(Abort::Hang("the guest stopped answering".into())),
            },
            Reply::Panic { step } => {
                self.running = false;
                self.console.push(PANIC_LINE.into());
                PlanRun {
                    reports: ok(step + lead),
                    abort: Some(Abort::Panic("fake oops".into())),
                }
            }
            Reply::Die { step } => {
                self.running = false;
                PlanRun {
                    reports: ok(step + lead),
                    abort: Some(Abort::Infra(
                        "QEMU exited (signal: 9) during the plan".into(),
                    )),
                }
            }
            Reply::Lost { step } => {
                let step = step + lead;
                PlanRun {
                    reports: ok(plan.steps.len())
                        .into_iter()
                        .filter(|r| r.index != step)
                        .collect(),
                    abort: None,
                }
            }
            Reply::Stray { index } => {
                let mut reports = ok(plan.steps.len());
                reports.push(StepReport {
                    index,
                    ..Self::ok_report(index, &Op::Sync { target: None })
                });
                PlanRun {
                    reports,
                    abort: None,
                }
            }
            Reply::Fail { step } => PlanRun {
                reports: ok(step + lead),
                abort: Some(Abort::Infra(
                    "the transport to the guest failed while the guest was alive: \
                     connection reset"
                        .into(),
                )),
            },
        }
    }

    fn console_tail(&self, lines: usize) -> Vec<String> {
        self.console[self.console.len().saturating_sub(lines)..].to_vec()
    }

    fn is_running(&mut self) -> bool {
        self.running
    }

    fn host_load(&mut self) -> Option<f64> {
        self.host_loads.pop_front()
    }

    async fn power_cut(&mut self) {
        self.note("power-cut");
        self.running = false;
    }

    async fn panic(&mut self) {
        self.note("panic");
        self.running = false;
        self.console.push(PANIC_LINE.into());
    }

    async fn reboot(&mut self) {
        self.note("reboot");
        self.running = false;
    }

    async fn unplug(&mut self, serial: &str, _within: Duration) -> Result<(), MachineError> {
        self.note(format!("unplug {serial}"));
        if self.failing_unplug {
            return Err(crate::vm::VmError::from(crate::vm::qmp::QmpError::Command {
                command: "device_del".into(),
                class: "GenericError".into(),
                desc: format!("device dev-{serial} is busy"),
            })
            .into());
        }
        Ok(())
    }

    async fn replug(&mut self, serial: &str) -> Result<(), MachineError> {
        self.note(format!("replug {serial}"));
        Ok(())
    }

    async fn stop(&mut self) {
        self.note("stop");
        self.running = false;
    }

    async fn save_set_up(&mut self, key: &str) -> Result<(), MachineError> {
        self.note("save set-up");
        // As QEMU's: the machine is stopped whether or not its state was saved.
        self.running = false;
        if self.failing_save {
            return Err(MachineError::Io {
                path: "set-up/state".into(),
                source: std::io::Error::other("No space left on device"),
            });
        }
        self.set_up = Some(key.to_string());
        self.set_up_from_cache = false;
        Ok(())
    }

    async fn find_set_up(&mut self, key: &str) -> bool {
        if self.set_up.as_deref() == Some(key) {
            return true;
        }
        if self.cached_set_up.as_deref() == Some(key) {
            self.note("set-up found in the cache");
            self.set_up = self.cached_set_up.take();
            self.set_up_from_cache = true;
            return true;
        }
        false
    }

    async fn restore_set_up(&mut self, _console_log: &Path) -> Result<BootInfo, MachineError> {
        self.note("restore set-up");
        self.console = self.boot_console.clone();
        self.restores += 1;
        if self.set_up.is_none() {
            return Err(MachineError::NoSetUp);
        }
        if self.failing_restores.front() == Some(&self.restores) {
            self.failing_restores.pop_front();
            self.set_up = None;
            self.running = false;
            return Err(BootError::DiedBeforeReady {
                status: "exit status: 1".into(),
                tail: "qemu: load of migration failed".into(),
            }
            .into());
        }
        self.running = true;
        Ok(BootInfo {
            ready_after: Duration::from_millis(1),
            command: vec!["fake-vm".into()],
            kept_disks: None,
            restored: Some("set-up".into()),
            from_cache: self.set_up_from_cache,
            phases: Vec::new(),
            transport: "ssh",
        })
    }
}

/// A kernel that is never booted: what a run on the fake machine names.
pub fn fake_kernel() -> crate::kernel::ResolvedKernel {
    crate::kernel::ResolvedKernel {
        spec: "fake:1".into(),
        release: None,
        version: "1".into(),
        image: "/nonexistent/bzImage".into(),
        modules_dir: None,
        system_map: None,
        vmlinux: None,
        build_key: None,
        image_sha256: "00".into(),
        kconfig: vec![],
        patches: vec![],
    }
}
