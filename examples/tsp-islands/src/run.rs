//! `tsp-islands run`: one run, sequential or on a G2 network, or one of the
//! benchmarks.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::benchmarks::{ft_overhead, overhead};
use crate::cli::Args;
use crate::ga::{GaParams, Tour, run_sequential};
#[cfg(not(feature = "rocksdb"))]
use crate::in_process::NO_ROCKSDB;
use crate::instances::load_instance;
use crate::network::run_network;
use crate::output::report;
use crate::tsplib::Instance;

pub struct Outcome {
    pub tour: Tour,
    pub length: u64,
    pub calls: u64,
    pub elapsed: Duration,
    /// Nodes of the network the run used (0: sequential).
    pub nodes: usize,
}

fn progress(epochs: u32, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(u64::from(epochs));
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] epoch {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("evolving");
    bar
}

pub fn run_once(
    args: &Args,
    sequential: bool,
    instance: &Instance,
    params: GaParams,
    bar: &ProgressBar,
) -> Result<Outcome, String> {
    if sequential {
        let started = Instant::now();
        let m = instance.distance_matrix();
        let (tour, length) = run_sequential(&m, params, args.islands, args.epochs, args.seed);
        return Ok(Outcome {
            tour,
            length,
            calls: 0,
            elapsed: started.elapsed(),
            nodes: 0,
        });
    }
    // a node stands for a machine: no more worker threads than nodes or cores
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.nodes.clamp(1, cores))
        .enable_all()
        .build()
        .map_err(|e| format!("starting tokio: {e}"))?;
    runtime.block_on(run_network(args, instance, params, bar))
}

pub fn run(args: &Args) -> Result<(), String> {
    if args.connect.is_some() && std::env::var_os("RUST_LOG").is_some() {
        // a client of a real network logs like a volunteer when asked to
        g2_volunteer::init_logging();
    }
    match args.ft.as_str() {
        "none" => {}
        #[cfg(not(feature = "rocksdb"))]
        "local" if args.connect.is_none() => return Err(NO_ROCKSDB.into()),
        "local" => {}
        "replicated" => {
            return Err(
                "--ft replicated: not available yet (erasure-coded checkpoints on neighbours are still to come); use none or local".into(),
            );
        }
        other => {
            return Err(format!(
                "--ft {other}: unknown policy (expected none, local or replicated)"
            ));
        }
    }
    let instance = load_instance(&args.instance)?;
    if args.islands == 0 {
        return Err("--islands must be at least 1".into());
    }
    let params = GaParams {
        generations: args.generations,
        ..GaParams::default()
    };
    if args.overhead {
        return overhead(args, &instance, params);
    }
    if args.ft_overhead {
        return ft_overhead(args, &instance, params);
    }
    let bar = progress(args.epochs, args.json);
    let outcome = run_once(args, args.sequential, &instance, params, &bar)?;
    bar.finish_and_clear();
    report(args, &instance, &outcome)
}
