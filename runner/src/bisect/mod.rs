//! Bisection: find the commit or patch that changed a scenario's outcome, even when the bug
//! shows only in some iterations. Pure and synchronous; the async driver evaluates candidates
//! and feeds the outcomes back step by step (journaled, resumable).

mod check;
mod error;
mod journal;
mod model;
mod posterior;
mod search;
pub mod sim;
mod verify;

pub use check::{check_exit_code, EXIT_BAD, EXIT_GOOD, EXIT_SKIP};
pub use error::BisectError;
pub use journal::{Entry, Header, Journal, Replay, Step, JOURNAL_FORMAT};
pub use model::{
    Action, BatchOutcome, Config, Direction, EvidenceRow, Report, ReproPrior, Status, Suspect,
    Verdict, Verification, VerifyCheck,
};
pub use search::{Bisector, Oracle, Progress};
pub use sim::{print_summary, simulate, SimParams, SimSummary};
pub use verify::clean_runs_needed;
