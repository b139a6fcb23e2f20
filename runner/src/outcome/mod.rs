//! Outcomes: what the kernel said during an iteration, and how often things went wrong.
//!
//! - [`dmesg`]: kernel log (kmsg records or console text) to [`Finding`]s;
//! - [`signature`]: normalized signatures and grouping of findings across builds and kernels;
//! - [`symbolize`]: System.map / kallsyms lookups for traces printed as bare addresses;
//! - [`stats`]: Wilson intervals, Fisher's exact test, medians for rates and busy windows.
//!
//! All of it is pure and synchronous (the symbolizer reads its map file, nothing else).

pub mod dmesg;
mod error;
pub mod signature;
pub mod stats;
pub mod symbolize;
pub mod tcg;

pub use dmesg::{
    classify_console, classify_records, console_after, parse_frames, ClassifyContext, Finding,
    FindingKind,
};
pub use error::Error;
pub use signature::{first_meaningful, group, normalize_text, signature, FindingGroup};
pub use stats::{
    fisher_exact_greater, fisher_exact_two_sided, max, median, wilson_95, wilson_interval, Z_95,
};
pub use symbolize::{symbolize_finding, symbolize_report, SystemMap};
