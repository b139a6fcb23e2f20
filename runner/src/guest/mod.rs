//! The guest side of a run: SSH and agent-channel transports and the helper protocol driver.

pub mod agent;
pub mod helper;
pub mod ssh;

pub use helper::{Ending, HelperOutput, HELPER_COMMAND};
pub use ssh::{ExecOutput, Guest, GuestError, GuestHandle, RunKey};
