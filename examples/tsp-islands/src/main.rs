//! `tsp-islands`: the G2:P2P paper's sample application (§5), an island genetic
//! algorithm for the travelling salesman problem on TSPLIB instances.
//!
//! Islands are G2 objects spread over the volunteers of a network; each evolves
//! its own population and trades its best tours with its ring neighbours by
//! calling them directly. With a fixed seed the best tour is the same whatever the
//! number of nodes, and the same as `--sequential` (plain Rust, no framework).

mod benchmarks;
mod cli;
mod client;
mod ga;
mod in_process;
mod instances;
mod island;
mod network;
mod output;
mod run;
mod tsplib;
mod volunteer;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::run::run;
use crate::volunteer::volunteer;

fn main() -> ExitCode {
    // a volunteer confining a worker it fetched (see g2_volunteer::code::sandbox)
    g2_volunteer::code::sandbox::launch_if_asked();
    // started by a plain `g2 volunteer` that fetched this binary: serve islands
    g2::worker::serve_if_worker(|w| w.register::<island::TspIsland>());
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Volunteer(v)) => volunteer(&v),
        Some(Command::Run(args)) => run(&args),
        None => run(&cli.args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tsp-islands: {e}");
            ExitCode::FAILURE
        }
    }
}
