//! The guest side of a run: SSH transport and the helper protocol driver.

pub mod helper;
pub mod ssh;

pub use helper::{Ending, HelperOutput, HELPER_COMMAND};
pub use ssh::{ExecOutput, Guest, GuestHandle, RunKey, SshError};
