//! `crashrig matrix`: the pure core. A matrix file expands into cells (kernel x scenario x
//! parameters); cells are partitioned across machines, their results merged, compared across
//! kernels with Fisher's exact test, checked against a baseline, and summarized as markdown
//! and JUnit. The run engine executes cells; nothing here does I/O except reading and
//! writing result files.

pub mod baseline;
pub mod command;
pub mod compare;
pub mod locate;
pub mod merge;
pub mod model;
pub mod params;
pub mod partition;
pub mod significance;
pub mod summary;
#[cfg(test)]
mod testutil;

pub use baseline::{
    baseline_from, check, load_baseline, unchecked_cells, Baseline, BaselineCell, BaselineError,
    Regression, BASELINE_SCHEMA,
};
pub use command::{
    exit_code, report_merge, write_json, write_reports, CommandError, MergeRequest, Outcome,
};
pub use compare::{compare, failure_errno, Comparison, RunKey, ALPHA};
pub use merge::{
    finished_runs, merge_dirs, merge_results, missing_cells, pending_cells, read_results,
    sort_runs, MergeError,
};
pub use model::{
    join_clean, load, load_str, Cell, Diagnostic, Diagnostics, Matrix, MatrixError, MatrixKernel,
    MatrixScenario,
};
pub use params::{
    apply_params, cell_scenario, mkfs_overwrite_options, ParamError, KNOWN_PARAMETERS,
};
pub use partition::{
    default_jobs, host_resources, parse_partition, Partition, PartitionError, PER_VM_OVERHEAD,
};
pub use significance::{fisher_exact_greater, fisher_exact_two_sided, format_p};
pub use summary::{busy_window, errno_counts, junit, markdown, outcome_summary, rate_with_ci};
