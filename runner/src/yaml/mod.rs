//! The one YAML layer: scenario, matrix and image recipe files are all read through it.
//!
//! `tree` parses text into nodes that keep their positions and deserializes them with serde
//! (errors name the node and the field); `collect` reads a model with every problem found at
//! once; `diag` is the one diagnostic type and its renderer. Why not serde_yaml:
//! docs/architecture.md, "YAML".

mod collect;
mod diag;
mod tree;

pub use collect::{read_text, ReadError};
pub use diag::{Diagnostic, Diagnostics, Severity};

pub(crate) use collect::{deserialize_all, parse_map, top_level_keys, Collected};
#[cfg(test)]
pub(crate) use tree::{parse, De};
pub(crate) use tree::{Kind, NodeId, Role, Seg, Tree};

#[cfg(test)]
mod tests;
