//! Race amplification: find the scenario setting (one value per declared parameter) under which
//! the target shows most often, or, with a second kernel, where the two kernels differ most.
//! Pure and synchronous; `crashrig amplify` drives it with real batches.
//!
//! The driver loop: [`Searcher::new`] over the declared [`Space`], then repeatedly
//! [`Searcher::next_action`]: [`Action::Run`] names a setting and a batch size; run it on
//! each kernel and [`Searcher::record`] the [`Counts`]; [`Action::Done`] carries the
//! [`Report`] (every setting tried, the winner, its Fisher p against the default).
//! [`Searcher::report`] gives the state at any time, for progress.
//!
//! [`simulate`] measures the search against simulated spaces next to uniform allocation
//! (`crashrig bench amplify-sim`).

mod error;
mod search;
mod sim;
mod space;

pub use error::AmplifyError;
pub use search::{Action, Config, Counts, Goal, Report, Row, Searcher, Stop, BEATS_DEFAULT_P};
pub use sim::{print_summary, simulate, uniform, MethodResult, SimParams, SimSummary, World};
pub use space::{Arm, Knob, Space};
