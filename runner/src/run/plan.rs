//! Turning scenario steps into what runs: guest plans (run back to back by the helper inside
//! the guest) separated by host actions (power cut, panic, reboot, hot-unplug). Pure: the
//! same scenario and seed always give the same plan.

use std::time::Duration;

use rand::{Rng, SeedableRng};

use crashrig_guest::{DmTable, Op, Retry};

use crate::scenario::{FlakeyMode, Scenario, Step};

/// Interval between retries of an EBUSY mount/umount: short, since the window being measured
/// is often a few milliseconds.
const RETRY_INTERVAL_MS: u64 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    Setup,
    Steps,
    Cleanup,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Steps => "steps",
            Phase::Cleanup => "cleanup",
        }
    }

    pub fn steps(self, s: &Scenario) -> &[Step] {
        match self {
            Phase::Setup => &s.setup,
            Phase::Steps => &s.steps,
            Phase::Cleanup => &s.cleanup,
        }
    }
}

/// Identifies a scenario step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepRef {
    pub phase: Phase,
    pub index: usize,
}

impl StepRef {
    /// The step's id in results: its `id`, or `<kind>#<index>` (1-based within the phase),
    /// with a `setup-` or `cleanup-` prefix outside `steps`, so generated ids are unique across
    /// the three phases (an explicit id has no `#`, so it never equals a generated one).
    pub fn id(self, s: &Scenario) -> String {
        let step = &self.phase.steps(s)[self.index];
        if let Some(id) = step.id() {
            return id.to_string();
        }
        let prefix = match self.phase {
            Phase::Setup => "setup-",
            Phase::Steps => "",
            Phase::Cleanup => "cleanup-",
        };
        format!("{prefix}{}#{}", step.kind(), self.index + 1)
    }
}

/// Every step id of a scenario as results name them, setup, steps and cleanup in order.
pub fn step_ids(s: &Scenario) -> Vec<String> {
    [Phase::Setup, Phase::Steps, Phase::Cleanup]
        .into_iter()
        .flat_map(|phase| (0..phase.steps(s).len()).map(move |index| StepRef { phase, index }))
        .map(|r| r.id(s))
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub enum HostAction {
    PowerCut,
    Panic,
    Reboot,
    Unplug { serial: String },
    Replug { serial: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Guest(Vec<(StepRef, Op)>),
    Host(StepRef, HostAction),
}

/// The device-mapper name crashrig gives a `dm: true` device.
pub fn dm_name(device: &str) -> String {
    format!("crashrig-{device}")
}

/// Ops to run after every boot, before anything else: device-mapper stacks do not survive a
/// reboot.
pub fn boot_prelude(s: &Scenario) -> Vec<Op> {
    s.devices
        .iter()
        .filter(|d| d.dm)
        .map(|d| Op::DmCreate {
            name: dm_name(&d.name),
            device: d.name.clone(),
        })
        .collect()
}

/// Derives the seed of iteration `n` (1-based; 0 is setup) from the run seed.
pub fn iteration_seed(run_seed: u64, n: u32) -> u64 {
    // splitmix64 of the pair: well spread even for consecutive inputs.
    let mut z = run_seed ^ (u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Plans one phase. `seed` drives random sleeps; `data_seed` the content of write/verify-data
/// (constant over a run so data written in one phase verifies in another).
pub fn plan_phase(s: &Scenario, phase: Phase, seed: u64, data_seed: u64) -> Vec<Segment> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut segments = Vec::new();
    let mut guest: Vec<(StepRef, Op)> = Vec::new();
    for (index, step) in phase.steps(s).iter().enumerate() {
        let r = StepRef { phase, index };
        match plan_step(s, step, &mut rng, data_seed) {
            Planned::Host(action) => {
                if !guest.is_empty() {
                    segments.push(Segment::Guest(std::mem::take(&mut guest)));
                }
                segments.push(Segment::Host(r, action));
            }
            Planned::Guest(mut op) => {
                if let Op::Kill {
                    name,
                    may_have_ended,
                    ..
                } = &mut op
                {
                    *may_have_ended = crash_since_spawn(s, phase, index, name);
                }
                guest.push((r, op))
            }
        }
    }
    if !guest.is_empty() {
        segments.push(Segment::Guest(guest));
    }
    segments
}

/// Whether a crash step (power cut, panic, reboot: the guest starts again, its workloads
/// end) comes after the last spawn of `name` before step `index` of `phase`. An iteration
/// runs `steps` then `cleanup`; setup has no crash steps.
fn crash_since_spawn(s: &Scenario, phase: Phase, index: usize, name: &str) -> bool {
    let before: Vec<&Step> = match phase {
        Phase::Setup => return false,
        Phase::Steps => s.steps[..index].iter().collect(),
        Phase::Cleanup => s.steps.iter().chain(&s.cleanup[..index]).collect(),
    };
    for step in before.into_iter().rev() {
        match step {
            Step::Spawn(sp) if sp.name == name => return false,
            Step::PowerCut(_) | Step::Panic(_) | Step::Reboot(_) => return true,
            _ => {}
        }
    }
    false
}

/// Whether the scenario provokes filesystem errors on purpose (shutdown, failing devices,
/// crashes): its dmesg filesystem errors are then expected.
pub fn expects_fs_errors(s: &Scenario) -> bool {
    s.steps.iter().any(|step| {
        matches!(
            step,
            Step::Shutdown(_)
                | Step::DmError(_)
                | Step::DmFlakey(_)
                | Step::PowerCut(_)
                | Step::Unplug(_)
                | Step::Panic(_)
        )
    })
}

fn default_device(s: &Scenario) -> String {
    s.filesystem
        .as_ref()
        .and_then(|f| f.device.clone())
        .or_else(|| s.devices.first().map(|d| d.name.clone()))
        .unwrap_or_default()
}

/// The scenario device name a step acts on.
fn device_name(s: &Scenario, explicit: &Option<String>) -> String {
    explicit.clone().unwrap_or_else(|| default_device(s))
}

/// Where the filesystem lives in the guest: the dm device when stacked.
fn fs_device(s: &Scenario, name: &str) -> String {
    match s.devices.iter().find(|d| d.name == name) {
        Some(d) if d.dm => format!("/dev/mapper/{}", dm_name(name)),
        _ => name.to_string(),
    }
}

fn mountpoint(s: &Scenario, explicit: &Option<String>) -> String {
    explicit
        .clone()
        .or_else(|| s.filesystem.as_ref().map(|f| f.mountpoint.clone()))
        .unwrap_or_else(|| "/mnt".into())
}

fn fstype(s: &Scenario) -> String {
    s.filesystem
        .as_ref()
        .map(|f| f.fstype.clone())
        .unwrap_or_default()
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn retry(d: Option<Duration>) -> Option<Retry> {
    d.map(|d| Retry {
        max_ms: ms(d),
        interval_ms: RETRY_INTERVAL_MS,
    })
}

/// What a step becomes: a host action or a helper operation (this match is the one place that
/// says which steps the host carries out).
enum Planned {
    Host(HostAction),
    Guest(Op),
}

fn plan_step(s: &Scenario, step: &Step, rng: &mut impl Rng, data_seed: u64) -> Planned {
    let fs = s.filesystem.as_ref();
    let op = match step {
        Step::PowerCut(_) => return Planned::Host(HostAction::PowerCut),
        Step::Panic(_) => return Planned::Host(HostAction::Panic),
        Step::Reboot(_) => return Planned::Host(HostAction::Reboot),
        Step::Unplug(p) => {
            return Planned::Host(HostAction::Unplug {
                serial: device_name(s, &p.device),
            })
        }
        Step::Replug(p) => {
            return Planned::Host(HostAction::Replug {
                serial: device_name(s, &p.device),
            })
        }
        Step::Mkfs(m) => Op::Mkfs {
            device: fs_device(s, &device_name(s, &m.device)),
            fstype: m.fstype.clone().unwrap_or_else(|| fstype(s)),
            options: m
                .options
                .clone()
                .or_else(|| fs.map(|f| f.mkfs_options.clone()))
                .unwrap_or_default(),
        },
        Step::Mount(m) => Op::Mount {
            device: fs_device(s, &device_name(s, &m.device)),
            target: mountpoint(s, &m.mountpoint),
            fstype: fstype(s),
            options: m
                .options
                .clone()
                .or_else(|| fs.map(|f| f.mount_options.clone()))
                .unwrap_or_default(),
            retry: retry(m.retry),
        },
        Step::Umount(u) => Op::Umount {
            target: mountpoint(s, &u.mountpoint),
            force: u.force,
            detach: u.detach,
            retry: retry(u.retry),
        },
        Step::Spawn(sp) => Op::Spawn {
            name: sp.name.clone(),
            command: sp.command.clone(),
        },
        Step::Kill(k) => Op::Kill {
            name: k.name.clone(),
            signal: k.signal.clone(),
            wait_ms: ms(k.wait),
            // Set by `plan_phase`, which sees where the step is.
            may_have_ended: false,
        },
        Step::Run(r) => Op::Run {
            command: r.command.clone(),
            timeout_ms: ms(r.timeout),
        },
        Step::Sleep(sl) => {
            let d = match (sl.time, sl.min, sl.max) {
                (Some(t), _, _) => ms(t),
                (None, Some(lo), Some(hi)) if hi > lo => rng.gen_range(ms(lo)..=ms(hi)),
                (None, Some(lo), _) => ms(lo),
                _ => 0,
            };
            Op::Sleep { ms: d }
        }
        Step::Shutdown(sh) => Op::Shutdown {
            target: mountpoint(s, &sh.mountpoint),
            flag: sh.flags,
        },
        Step::Sync(sy) => Op::Sync {
            target: sy.mountpoint.clone(),
        },
        Step::DmError(d) => Op::DmSwap {
            name: dm_name(&device_name(s, &d.device)),
            table: DmTable::Error,
        },
        Step::DmRestore(d) => Op::DmSwap {
            name: dm_name(&device_name(s, &d.device)),
            table: DmTable::Linear,
        },
        Step::DmFlakey(d) => Op::DmSwap {
            name: dm_name(&device_name(s, &d.device)),
            table: match d.mode {
                FlakeyMode::DropWrites => DmTable::FlakeyDrop,
                FlakeyMode::ErrorWrites => DmTable::FlakeyError,
            },
        },
        Step::Fsck(f) => Op::Fsck {
            device: fs_device(s, &device_name(s, &f.device)),
            fstype: fstype(s),
            options: f.options.clone(),
        },
        Step::WriteData(d) => Op::WriteData {
            dir: format!("{}/{}", mountpoint(s, &None), d.dir),
            files: d.files,
            size: d.size.0,
            seed: data_seed,
            fsync: d.fsync,
        },
        Step::VerifyData(d) => Op::VerifyData {
            dir: format!("{}/{}", mountpoint(s, &None), d.dir),
            files: d.files,
            size: d.size.0,
            seed: data_seed,
        },
    };
    Planned::Guest(op)
}

/// How long a step may take by its own bound (run timeout, sleep, kill wait, mount or umount
/// retry window); zero for steps without one.
fn own_bound(op: &Op) -> Duration {
    Duration::from_millis(match op {
        Op::Sleep { ms } => *ms,
        Op::Run { timeout_ms, .. } => *timeout_ms,
        Op::Kill { wait_ms, .. } => *wait_ms,
        Op::Mount { retry: Some(r), .. } | Op::Umount { retry: Some(r), .. } => r.max_ms,
        _ => 0,
    })
}

/// Slack past a step's own bound for the helper to end the step and report it.
pub const STEP_GRACE: Duration = Duration::from_secs(15);

/// The deadline of an iteration's guest plan: what is `left` of the iteration's timeout, or
/// the plan's longest step's own bound plus [`STEP_GRACE`] when that is longer (a step's own
/// timeout bounds that step, whatever the iteration has left). A guest still silent at the
/// deadline is judged then, so a hang is seen at the scenario's `iteration-timeout`.
pub fn plan_timeout(ops: &[(StepRef, Op)], left: Duration) -> Duration {
    let longest = ops.iter().map(|(_, op)| own_bound(op)).max();
    left.max(longest.unwrap_or_default() + STEP_GRACE)
}

/// The longest plan deadline of an iteration when a step's own bound makes it longer than
/// the scenario's `iteration-timeout` ([`plan_timeout`]): that step's id and the deadline.
/// `None` when every plan is judged at the iteration timeout. Random sleeps count at their
/// longest.
pub fn stretched_deadline(s: &Scenario) -> Option<(String, Duration)> {
    let mut longest = s.clone();
    for step in longest.steps.iter_mut().chain(longest.cleanup.iter_mut()) {
        if let Step::Sleep(sl) = step {
            if sl.max.is_some() {
                sl.min = sl.max;
            }
        }
    }
    let mut segments = plan_phase(&longest, Phase::Steps, 0, 0);
    segments.extend(plan_phase(&longest, Phase::Cleanup, 0, 0));
    segments
        .iter()
        .filter_map(|seg| match seg {
            Segment::Guest(ops) => ops.iter().max_by_key(|(_, op)| own_bound(op)),
            Segment::Host(..) => None,
        })
        .map(|(r, op)| (r.id(s), own_bound(op) + STEP_GRACE))
        .filter(|(_, deadline)| *deadline > s.iteration_timeout)
        .max_by_key(|(_, deadline)| *deadline)
}

/// The deadline of a setup plan (setup runs once, outside any iteration): the iteration
/// timeout, or the plan's bounds added up plus a minute when that is longer.
pub fn setup_timeout(ops: &[(StepRef, Op)], iteration_timeout: Duration) -> Duration {
    let bounded: Duration = ops.iter().map(|(_, op)| own_bound(op)).sum();
    iteration_timeout.max(bounded + Duration::from_secs(60))
}

/// What the setup of `s` runs with these seeds (its guest plans and the boot prelude before
/// them), as a key: a guest saved after one setup stands for another only under the same key.
pub fn setup_key(s: &Scenario, seed: u64, data_seed: u64) -> String {
    use sha2::{Digest, Sha256};
    let setup = plan_phase(s, Phase::Setup, iteration_seed(seed, 0), data_seed);
    let text = format!("{:?}\n{:?}\n{:?}", boot_prelude(s), setup, s.devices);
    hex::encode(&Sha256::digest(text.as_bytes())[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::*;

    fn scenario(steps: Vec<Step>) -> Scenario {
        Scenario {
            version: 1,
            name: "t".into(),
            description: String::new(),
            vm: VmSpec::default(),
            kconfig: vec![],
            devices: vec![Device {
                name: "scratch".into(),
                size: Size(1 << 30),
                dm: true,
            }],
            filesystem: Some(Filesystem {
                fstype: "xfs".into(),
                device: None,
                mountpoint: "/mnt".into(),
                mkfs_options: vec!["-f".into()],
                mount_options: vec![],
            }),
            iterations: 3,
            iterations_share_state: false,
            iteration_timeout: Duration::from_secs(300),
            seed: None,
            setup: vec![],
            steps,
            cleanup: vec![],
            dmesg: DmesgExpect::default(),
            parameters: vec![],
            setting: Setting::new(),
        }
    }

    /// `iteration-timeout: 20s` with a 60 s `run` became a 75 s plan deadline, unsaid.
    #[test]
    fn a_step_bound_past_the_iteration_timeout_names_the_step_and_the_deadline() {
        let run = |timeout: u64| {
            Step::Run(RunStep {
                id: None,
                command: "true".into(),
                timeout: Duration::from_secs(timeout),
                exit: 0,
            })
        };
        let mut s = scenario(vec![run(5), Step::PowerCut(HostStep::default()), run(60)]);
        s.iteration_timeout = Duration::from_secs(20);
        assert_eq!(
            stretched_deadline(&s),
            Some(("run#3".to_string(), Duration::from_secs(75)))
        );
        // A random sleep counts at its longest; cleanup plans count too.
        s.steps = vec![run(5)];
        s.cleanup = vec![Step::Sleep(SleepStep {
            min: Some(Duration::from_secs(1)),
            max: Some(Duration::from_secs(30)),
            ..SleepStep::default()
        })];
        assert_eq!(
            stretched_deadline(&s),
            Some(("cleanup-sleep#1".to_string(), Duration::from_secs(45)))
        );
        // Every bound with its grace within the timeout: nothing to say.
        s.cleanup.clear();
        assert_eq!(stretched_deadline(&s), None);
        s.iteration_timeout = Duration::from_secs(300);
        s.steps = vec![run(60)];
        assert_eq!(stretched_deadline(&s), None);
    }

    #[test]
    fn host_steps_split_guest_plans_and_defaults_come_from_the_filesystem() {
        let s = scenario(vec![
            Step::Mkfs(MkfsStep::default()),
            Step::Mount(MountStep {
                retry: Some(Duration::from_secs(10)),
                ..MountStep::default()
            }),
            Step::PowerCut(HostStep::default()),
            Step::Umount(UmountStep::default()),
        ]);
        let segs = plan_phase(&s, Phase::Steps, 1, 2);
        assert_eq!(segs.len(), 3);
        let Segment::Guest(first) = &segs[0] else {
            panic!("{segs:?}")
        };
        assert_eq!(
            first[0].1,
            Op::Mkfs {
                device: "/dev/mapper/crashrig-scratch".into(),
                fstype: "xfs".into(),
                options: vec!["-f".into()]
            }
        );
        assert_eq!(
            first[1].1,
            Op::Mount {
                device: "/dev/mapper/crashrig-scratch".into(),
                target: "/mnt".into(),
                fstype: "xfs".into(),
                options: vec![],
                retry: Some(Retry {
                    max_ms: 10_000,
                    interval_ms: RETRY_INTERVAL_MS
                })
            }
        );
        assert_eq!(
            segs[1],
            Segment::Host(
                StepRef {
                    phase: Phase::Steps,
                    index: 2
                },
                HostAction::PowerCut
            )
        );
        assert_eq!(
            boot_prelude(&s),
            vec![Op::DmCreate {
                name: "crashrig-scratch".into(),
                device: "scratch".into()
            }]
        );
    }

    #[test]
    fn fsck_passes_its_options_to_the_checker() {
        // xfs with an external log: xfs_repair must be told where the log is.
        let s = scenario(vec![Step::Fsck(FsckStep {
            options: vec!["-l".into(), "/dev/vdb".into()],
            ..FsckStep::default()
        })]);
        let segs = plan_phase(&s, Phase::Steps, 1, 2);
        let Segment::Guest(ops) = &segs[0] else {
            panic!("{segs:?}")
        };
        assert_eq!(
            ops[0].1,
            Op::Fsck {
                device: "/dev/mapper/crashrig-scratch".into(),
                fstype: "xfs".into(),
                options: vec!["-l".into(), "/dev/vdb".into()],
            }
        );
    }

    #[test]
    fn a_kill_after_a_crash_step_may_find_its_workload_ended_with_the_guest() {
        let s = load_str(
            "name: t\ndevices: [{name: scratch, size: 1G}]\nfilesystem: {type: xfs}\n\
             steps:\n- {spawn: {name: a, command: x}}\n- {spawn: {name: b, command: x}}\n\
             - {kill: {name: a}}\n- {power-cut: {}}\n- {spawn: {name: b, command: y}}\n\
             - {kill: {name: b}}\ncleanup:\n- {kill: {name: a}}\n- {kill: {name: b}}\n",
            "t.yaml",
        )
        .unwrap();
        let kills = |phase| -> Vec<(String, bool)> {
            plan_phase(&s, phase, 1, 1)
                .into_iter()
                .flat_map(|seg| match seg {
                    Segment::Guest(ops) => ops,
                    Segment::Host(..) => vec![],
                })
                .filter_map(|(_, op)| match op {
                    Op::Kill {
                        name,
                        may_have_ended,
                        ..
                    } => Some((name, may_have_ended)),
                    _ => None,
                })
                .collect()
        };
        // Before the cut: not ended. `b` spawned again after it: not ended. `a` in cleanup:
        // its only spawn was before the cut.
        assert_eq!(
            kills(Phase::Steps),
            [("a".to_string(), false), ("b".to_string(), false)]
        );
        assert_eq!(
            kills(Phase::Cleanup),
            [("a".to_string(), true), ("b".to_string(), false)]
        );
    }

    #[test]
    fn random_sleeps_are_reproducible_from_the_seed_and_in_range() {
        let s = scenario(vec![Step::Sleep(SleepStep {
            id: None,
            time: None,
            min: Some(Duration::from_millis(1000)),
            max: Some(Duration::from_millis(2000)),
        })]);
        let sleep = |seed| match &plan_phase(&s, Phase::Steps, seed, 0)[0] {
            Segment::Guest(ops) => match ops[0].1 {
                Op::Sleep { ms } => ms,
                _ => panic!(),
            },
            _ => panic!(),
        };
        let draws: Vec<u64> = (0..50).map(|i| sleep(iteration_seed(7, i))).collect();
        assert!(draws.iter().all(|d| (1000..=2000).contains(d)));
        assert!(
            draws.iter().any(|&d| d != draws[0]),
            "different iterations draw differently"
        );
        assert_eq!(sleep(iteration_seed(7, 3)), draws[3]);
    }

    #[test]
    fn step_refs_name_steps() {
        let s = scenario(vec![
            Step::Mkfs(MkfsStep::default()),
            Step::Umount(UmountStep {
                id: Some("umount".into()),
                ..Default::default()
            }),
        ]);
        assert_eq!(
            StepRef {
                phase: Phase::Steps,
                index: 0
            }
            .id(&s),
            "mkfs#1"
        );
        assert_eq!(
            StepRef {
                phase: Phase::Steps,
                index: 1
            }
            .id(&s),
            "umount"
        );
    }

    #[test]
    fn generated_step_ids_do_not_collide_across_setup_steps_and_cleanup() {
        let s = crate::scenario::load_str(
            "name: t\n\
             setup: [{run: {command: 'true'}}, sync]\n\
             steps: [{run: {command: 'true'}}, {run: {id: named, command: 'true'}}]\n\
             cleanup: [{run: {command: 'true'}}]\n",
            "t.yaml",
        )
        .unwrap();
        assert_eq!(
            step_ids(&s),
            [
                "setup-run#1",
                "setup-sync#2",
                "run#1",
                "named",
                "cleanup-run#1"
            ]
        );
    }

    fn ops(ops: Vec<Op>) -> Vec<(StepRef, Op)> {
        ops.into_iter()
            .enumerate()
            .map(|(index, op)| {
                let phase = Phase::Steps;
                (StepRef { phase, index }, op)
            })
            .collect()
    }

    fn run(secs: u64) -> Op {
        Op::Run {
            command: "true".into(),
            timeout_ms: secs * 1000,
        }
    }

    #[test]
    fn an_iteration_plan_gets_what_is_left_of_the_iteration_timeout() {
        let secs = Duration::from_secs;
        // Three 20 s steps in a 40 s iteration: judged at 40 s, not at their 60 s sum.
        let plan = ops(vec![run(20), run(20), run(20)]);
        assert_eq!(plan_timeout(&plan, secs(40)), secs(40));
        // Later in the iteration, what is left; never less than its longest step's bound.
        assert_eq!(plan_timeout(&plan, secs(10)), secs(20) + STEP_GRACE);
        assert_eq!(plan_timeout(&plan, Duration::ZERO), secs(20) + STEP_GRACE);
        // A step whose own timeout is longer than the iteration's keeps it.
        let long = ops(vec![Op::Sync { target: None }, run(600)]);
        assert_eq!(plan_timeout(&long, secs(40)), secs(600) + STEP_GRACE);
        // Steps without a bound of their own get the grace once the iteration is spent.
        let unbounded = ops(vec![Op::Sync { target: None }, Op::Dmesg]);
        assert_eq!(plan_timeout(&unbounded, Duration::ZERO), STEP_GRACE);
    }

    #[test]
    fn a_setup_plan_gets_its_bounds_added_up() {
        let secs = Duration::from_secs;
        let plan = ops(vec![run(200), Op::Sleep { ms: 100_000 }]);
        assert_eq!(setup_timeout(&plan, secs(300)), secs(360));
        assert_eq!(setup_timeout(&plan, secs(600)), secs(600));
    }
}
