//! The amplification search against simulated spaces: `cargo run --release -p crashrig --example amplify_sim -- --runs 100`.
//! The same engine and printout as `crashrig bench amplify-sim`.

use clap::Parser;
use crashrig::amplify::{print_summary, simulate, SimParams};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    params: SimParams,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match simulate(&cli.params) {
        Ok(summary) => {
            let mut out = std::io::stdout().lock();
            if print_summary(&summary, &mut out).is_err() {
                return std::process::ExitCode::FAILURE;
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: failed to {e}");
            std::process::ExitCode::from(2)
        }
    }
}
