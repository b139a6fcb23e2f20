//! Command-line interface: one file per subcommand (its clap arguments and its function).
//! Nothing outside this module uses clap: the arguments become the plain option types of
//! `crate::run` and `crate::matrix` here.

mod amplify;
mod app;
mod bench;
mod bisect;
mod build;
mod check;
mod common;
mod image;
mod lint;
mod matrix;
mod report;
mod repro;
mod run;

pub use app::{main, Cli, CliError, Command};
