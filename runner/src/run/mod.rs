//! Running scenarios: boot, plan, iterate, classify, report.

pub mod bench;
pub mod bisect_run;
pub mod boot;
pub mod engine;
pub mod matrix_run;
pub mod plan;
pub mod session;
pub mod verdict;

pub use engine::{run_scenario, LoadedScenario, RunError, RunOptions};
