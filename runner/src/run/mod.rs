//! Running scenarios: boot, plan, iterate, classify, report.

pub mod amplify_run;
pub mod bench;
pub mod bisect_run;
pub mod boot;
pub mod engine;
#[cfg(test)]
mod fake;
pub mod lint;
pub mod machine;
pub mod matrix_report;
pub mod matrix_run;
pub mod plan;
pub mod qemu_machine;
pub mod restore;
pub mod session;
mod stuck;
pub mod verdict;

pub use engine::{run_batch, run_scenario, LoadedScenario, Rig, RunError, RunOptions};
pub use machine::{Machine, MachineError};
pub use qemu_machine::QemuMachine;
