//! Errors of the amplification search.

/// Why the declared space or the search configuration cannot be searched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmplifyError {
    #[error(
        "search a space without parameters: declare `parameters:` with `values:` in the scenario"
    )]
    NoKnobs,
    #[error("search parameter `{0}` with no values")]
    NoValues(String),
    #[error("search parameter `{name}`: its default `{default}` is not one of its values")]
    DefaultNotListed { name: String, default: String },
    #[error("start the search from `{0}`: the scenario declares no such parameter")]
    UnknownKnob(String),
    #[error("search parameter `{0}` declared twice")]
    Duplicate(String),
    #[error("search parameter `{name}`: value `{value}` listed twice")]
    DuplicateValue { name: String, value: String },
    #[error("search {0}: {1}")]
    Config(&'static str, String),
    #[error("record setting {0}, which the search never asked for")]
    UnknownArm(usize),
}

impl AmplifyError {
    /// Every variant is bad input (scenario or command line).
    pub fn exit_code(&self) -> i32 {
        crate::exit::CONFIG_OR_INFRA
    }
}
