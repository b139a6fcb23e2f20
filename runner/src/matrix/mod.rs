//! `crashrig matrix`: the pure core. A matrix file expands into cells (kernel x scenario x
//! parameters); cells are partitioned across machines, their results merged, compared across
//! kernels with Fisher's exact test, checked against a baseline, and summarized as markdown
//! and JUnit (`sim` measures the baseline check on simulated matrices). The run engine executes cells and `run::matrix_report` writes the reports;
//! nothing here does I/O (the matrix file itself is read by [`load`]).

pub mod baseline;
pub mod compare;
pub mod merge;
pub mod model;
pub mod params;
pub mod partition;
pub mod significance;
pub mod sim;
pub mod summary;
#[cfg(test)]
pub mod testutil;

pub use baseline::{
    baseline_from, check, judge, rate_verdicts, Baseline, BaselineCell, BaselineError, Judgement,
    RateCounts, RateVerdict, Regression, BASELINE_SCHEMA,
};
pub use compare::{compare, failure_errno, Comparison, RunKey, ALPHA};
pub use merge::{
    finished_runs, kept_with_other_counts, merge_checked, merge_named, merge_results,
    missing_cells, not_this_matrix, pending_cells, resumed_results, run_for_cell, sort_runs,
    unequal_plans, MergeError, Merged,
};
pub use model::{
    join_clean, load, load_str, Cell, Diagnostic, Diagnostics, Matrix, MatrixError, MatrixKernel,
    MatrixScenario, Place, MAX_CELLS,
};
pub use params::cell_scenario;
pub use partition::{default_jobs, parse_partition, Partition, PartitionError, PER_VM_OVERHEAD};
pub use significance::{fisher_exact_greater, fisher_exact_two_sided, format_p};
pub use summary::{
    baseline_coverage, busy_window, errno_counts, exit_code, junit_cells, junit_cells_known,
    markdown, outcome_summary, rate_with_ci,
};
