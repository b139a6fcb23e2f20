//! Bisection: find the commit or patch that changed a scenario's outcome, even when the bug
//! shows only in some iterations. Pure and synchronous; the async driver evaluates candidates
//! and feeds the outcomes back step by step (journaled, resumable).
//!
//! Candidates are `0..=last`, oldest first (commits of a range, or "base + first k patches"):
//! 0 is known good and `last` known bad for a regression, the other way round for a fix. The
//! driver loop:
//!
//! 1. [`Journal::create`] with a [`Header`] (or [`Journal::resume`] then
//!    [`Bisector::from_journal`] for `--resume`), and [`Bisector::new`].
//! 2. [`Bisector::next_action`]: [`Action::Test`] says which candidate and how many iterations
//!    (stop the batch at its first failure when asked). Build it; if the kernel is
//!    byte-identical to one already tested, call [`Bisector::record_alias`] (journal
//!    [`Step::Alias`]) and ask again; otherwise boot and run it, then [`Bisector::record`] the
//!    [`BatchOutcome`] (build or boot failures and unrelated crashes are `Unknown`) and
//!    [`Journal::append`] it.
//! 3. [`Action::Done`] carries the [`Report`]; [`Bisector::progress`] feeds a progress line.
//!
//! [`simulate`] measures the engine against simulated histories beside the rules people use
//! today (`crashrig bench bisect`).

mod bayesect;
mod check;
mod costs;
mod error;
mod images;
mod journal;
mod model;
mod posterior;
mod search;
mod sim;
mod verify;

pub use check::{check_exit_code, RateTest, RateVerdict, EXIT_BAD, EXIT_GOOD, EXIT_SKIP};
pub use costs::{CostMeter, Prices};
pub use error::BisectError;
pub use images::{ImageIndex, Seen};
pub use journal::{Entry, Header, Journal, Replay, Step, JOURNAL_FORMAT};
pub use model::{
    Action, BatchOutcome, Comparison, Config, Direction, EstimatedRate, EvidenceRow, MeasuredRate,
    Phase, RatePrior, Report, SideRates, Status, Suspect, SuspectRange, VerificationRuns,
};
pub use search::{Bisector, Oracle, Progress};
pub use sim::{
    iteration_bound, parse_case, parse_no_change, print_summary, simulate, CaseSummary, Method,
    MethodSummary, SimParams, SimSummary, SimulatedHistory, DEFAULT_CASES,
};
pub(crate) use verify::evidence_needed;
pub use verify::iterations_to_separate;
