//! Bisection: find the commit or patch that changed a scenario's outcome, even when the bug
//! shows only in some iterations. Pure and synchronous; the async driver evaluates candidates
//! and feeds the outcomes back step by step (journaled, resumable).

mod error;
mod model;
mod posterior;
mod search;
pub mod sim;
mod verify;

pub use error::BisectError;
pub use model::{
    Action, BatchOutcome, Config, Direction, EvidenceRow, Report, ReproPrior, Status, Suspect,
    Verdict, Verification, VerifyCheck,
};
pub use search::{Bisector, Oracle, Progress};
pub use sim::{print_summary, simulate, SimParams, SimSummary};
pub use verify::clean_runs_needed;
