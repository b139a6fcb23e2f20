//! Scenario format v1: model, loading with `file:line:column` errors, validation.
//! The format is documented in docs/scenario-format.md.

mod load;
pub mod model;
mod params;
mod validate;

pub use load::{
    load_file, load_file_with_warnings, load_recorded, load_str, load_str_with,
    load_str_with_warnings, load_with, Diagnostic, Diagnostics, LoadError, Loaded,
};
pub use model::*;
pub use params::{
    check_value as check_parameter_value, is_name as is_parameter_name, mkfs_overwrite_options,
    MAX_PARAMETERS, MAX_VALUES, RESERVED as RESERVED_PARAMETERS,
};
pub use validate::{
    validate, HostLimits, PathSeg, Problem, Severity, KNOWN_FSTYPES, MAX_DEVICE_NAME,
    MAX_ITERATIONS, SIGNALS,
};
