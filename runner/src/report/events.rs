//! The event stream. The engine never prints: it emits events, reporters consume them.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use super::results::{BootRecord, IterationRecord, RunRecord, SetupDmesg, StepRecord};

#[derive(Debug, Clone)]
pub enum Event {
    /// A note for the user (cache hits, warnings).
    Message {
        level: Level,
        text: String,
    },
    /// Diagnostics of an input file (scenario warnings), printed as they are.
    Diagnostics {
        text: String,
    },
    /// A command's closing report for its standard output (the bisect result, the matrix
    /// markdown summary).
    Report {
        text: String,
    },
    /// A kernel build made progress (stage, what is compiling).
    Build {
        spec: String,
        stage: String,
        detail: String,
        /// Since the build started.
        elapsed: Duration,
    },
    /// The accelerator and QEMU became known (after the first kernel was probed).
    Host(super::results::HostInfo),
    /// Where the results of this command go.
    ResultsDir {
        path: PathBuf,
    },
    /// A matrix (or shard) is about to run `cells` cells, `jobs` at a time.
    MatrixPlanned {
        cells: usize,
        jobs: usize,
    },
    /// `count` cells of the matrix are in none of the results (other shards?).
    MissingCells {
        count: usize,
    },
    /// A bisection started over `candidates` candidates.
    BisectStarted {
        scenario: String,
        range: String,
        candidates: usize,
        journal: PathBuf,
    },
    /// The target of a bisection became known (the first violation the bad end showed).
    BisectTarget {
        target: String,
    },
    /// The next step of a bisection, with the search's state before it.
    BisectStep(Box<BisectStep>),
    /// A candidate builds the same kernel image as one already tested: its evidence is
    /// reused.
    BisectAlias {
        candidate: usize,
        same_as: usize,
    },
    /// An iteration of a candidate failed without the target; it is not counted.
    BisectUncounted {
        candidate: usize,
        why: String,
    },
    /// `crashrig bench boot`'s figures.
    BootBench(Box<BootBenchFigures>),
    /// An amplification search started over `settings` settings.
    AmplifyStarted {
        settings: u64,
        /// The knobs searched (those with more than one value): name and values.
        knobs: Vec<(String, Vec<String>)>,
        budget: u64,
        batch: u32,
        /// The target given; `None`: the first violation seen becomes the target.
        target: Option<String>,
    },
    /// The search's target became known: the first violation seen.
    AmplifyTarget {
        target: String,
    },
    /// A batch of `setting` had no usable iteration (boot or setup failed); it counts as one
    /// trial without a hit.
    AmplifyUnusable {
        setting: String,
        why: String,
    },
    /// The search's state after a batch; reporters show the leading settings.
    AmplifyProgress(Box<crate::amplify::Report>),
    /// `bench amplify`: `iterations` fresh iterations of each of `settings` after the search,
    /// in alternating batches of `batch`.
    AmplifyConfirm {
        settings: Vec<String>,
        iterations: u32,
        batch: u32,
    },
    KernelReady {
        spec: String,
        version: String,
    },
    ImageReady {
        key: String,
    },
    RunStarted {
        index: usize,
        run: Box<RunRecord>,
        planned: u32,
        /// The one iteration a `repro` replays, of the `planned` the run had.
        only: Option<u32>,
        /// The run ends at the first iteration that shows a target (a bisection's or a
        /// check's batch): `planned` is at most what runs.
        until_target: bool,
    },
    BootFinished {
        index: usize,
        boot: BootRecord,
    },
    SetupFinished {
        index: usize,
        steps: Vec<StepRecord>,
    },
    /// The kernel log of one setup (every setup the run ran, a set-up again after a hang
    /// included), judged.
    SetupDmesg {
        index: usize,
        dmesg: Box<SetupDmesg>,
    },
    IterationFinished {
        index: usize,
        record: Box<IterationRecord>,
        planned: u32,
    },
    RunFinished {
        index: usize,
        run: Box<RunRecord>,
    },
}

/// Medians of the boot benchmark, each beside its baseline.
#[derive(Debug, Clone)]
pub struct BootBenchFigures {
    /// The kernel spec measured, and how many times each measurement ran.
    pub kernel: String,
    pub repeat: u32,
    pub kernel_version: String,
    pub accel: String,
    pub accel_reason: String,
    /// Bare boot: a busybox init that powers off at once, in seconds.
    pub bare_boot_s: f64,
    /// crashrig's start to its first SSH command, in seconds.
    pub ready_s: f64,
    /// A new QEMU from a saved guest (fresh disk overlay included) to its first command's
    /// result over the agent channel; `None` when the guest had no agent.
    pub restore_s: Option<f64>,
    /// Where a restore's time went: the median of each stage (`BootPhase` names), in order.
    pub restore_phases: Vec<super::results::BootPhase>,
    /// The same restore with its first command over a new SSH connection (the peer).
    pub ssh_restore_s: f64,
    pub ssh_restore_phases: Vec<super::results::BootPhase>,
    /// Where crashrig's boot went, the same way.
    pub boot_phases: Vec<super::results::BootPhase>,
    /// Saving the paused guest to a file, in seconds.
    pub save_s: f64,
    /// The saved state file, in bytes (device state only when the RAM is saved apart).
    pub state_bytes: f64,
    /// Writing the paused guest's RAM image as a sparse file (as a booted guest goes to the
    /// cache), in seconds, and the bytes written (pages not all zero).
    pub ram_image_s: f64,
    pub ram_image_bytes: f64,
    /// The mount+umount loop as a guest shell script, ms per iteration.
    pub shell_loop_ms: f64,
    /// The same loop as crashrig iterations (helper plan + dmesg), ms per iteration.
    pub helper_loop_ms: f64,
}

/// A bisection step (see [`Event::BisectStep`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BisectStep {
    /// The candidate under test, described ("0123abcd4567 subject", "patch 3/7: ...").
    pub candidate: String,
    /// Iterations of this batch (at most, when `until_target`).
    pub iterations: u32,
    /// The batch stops at the first iteration that shows the target.
    pub until_target: bool,
    /// A fix is looked for (`--fix`): the range and leader are the fix's.
    pub fix: bool,
    /// Builds and iterations so far.
    pub builds: u64,
    pub iterations_so_far: u64,
    /// The culprit lies in this range of candidate indices.
    pub range: (usize, usize),
    /// The most probable culprit and its posterior probability.
    pub leader: Option<(usize, f64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
}

/// An event with when it happened.
#[derive(Debug, Clone)]
pub struct Stamped {
    pub at: SystemTime,
    /// Since the sink was created.
    pub elapsed: Duration,
    pub event: Event,
}

pub trait Reporter: Send {
    fn report(&mut self, event: &Stamped);
    /// Called once at the end (flush files, clear progress bars).
    fn finish(&mut self) {}
    /// What this reporter could not do (results it could not write), after `finish`.
    fn failure(&self) -> Option<String> {
        None
    }
}

/// Fans events out to reporters.
pub struct EventSink {
    start: Instant,
    reporters: Vec<Box<dyn Reporter>>,
}

impl EventSink {
    pub fn new(reporters: Vec<Box<dyn Reporter>>) -> Self {
        EventSink {
            start: Instant::now(),
            reporters,
        }
    }

    pub fn emit(&mut self, event: Event) {
        let stamped = Stamped {
            at: SystemTime::now(),
            elapsed: self.start.elapsed(),
            event,
        };
        for r in &mut self.reporters {
            r.report(&stamped);
        }
    }

    pub fn info(&mut self, text: impl Into<String>) {
        self.emit(Event::Message {
            level: Level::Info,
            text: text.into(),
        });
    }

    pub fn warn(&mut self, text: impl Into<String>) {
        self.emit(Event::Message {
            level: Level::Warn,
            text: text.into(),
        });
    }

    /// Finishes every reporter; returns the first failure (results that could not be
    /// written), which callers turn into exit 2.
    pub fn finish(&mut self) -> Option<String> {
        for r in &mut self.reporters {
            r.finish();
        }
        self.reporters.iter().find_map(|r| r.failure())
    }
}

/// Forwards events to another task's sink (parallel matrix cells each run with their own
/// sink; the main task owns the real reporters).
pub struct Forward(pub tokio::sync::mpsc::UnboundedSender<Event>);

impl Reporter for Forward {
    fn report(&mut self, event: &Stamped) {
        let _ = self.0.send(event.event.clone());
    }
}
