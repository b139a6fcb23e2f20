//! Scenario format v1: model, loading with `file:line:column` errors, validation.

pub mod model;

pub use model::*;
