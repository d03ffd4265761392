//! `ingest-guard`: the binary that wires the stages together.
//!
//! Only this crate knows every stage; the library crates know `guard-core` and their own job.

mod build;
mod cli;
mod domain;
mod events;
mod review;
mod run;
mod tools;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
