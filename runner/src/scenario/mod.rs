//! Scenario format v1: model, loading with `file:line:column` errors, validation.

pub mod model;

pub use model::*;

/// Interim loader until load.rs lands.
pub fn load_file(path: &std::path::Path) -> Result<Scenario, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_yaml::from_str(&text).map_err(|e| {
        let (l, c) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
        format!("{}:{l}:{c}: {e}", path.display())
    })
}
