//! Scenario format v1: model, loading with `file:line:column` errors, validation.
//! The format is documented in docs/scenario-format.md.

mod load;
pub mod model;
mod validate;
mod yaml;

pub use load::{
    load_file, load_file_with_warnings, load_str, load_str_with_warnings, Diagnostic, Diagnostics,
    LoadError, Loaded,
};
pub use model::*;
pub use validate::{validate, PathSeg, Problem, Severity, KNOWN_FSTYPES, MAX_DEVICE_NAME, SIGNALS};
