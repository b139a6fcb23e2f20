//! The guest side of a run: SSH transport and the helper protocol driver.

pub mod ssh;

pub use ssh::{ExecOutput, Guest, GuestHandle, RunKey, SshError};
