//! The command line: `run` (the default) and `volunteer`, and the options of a
//! run.

use std::path::PathBuf;

use clap::Parser;

/// Island GA for the TSP on a G2 network (in-process by default).
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub args: Args,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Run the GA (the default): in-process, or as a client of a real network
    /// with `--connect`.
    Run(Args),
    /// Volunteer this machine to a network, able to host islands.
    Volunteer(g2_volunteer::VolunteerArgs),
}

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// A TSPLIB EUC_2D file, or the name of a shipped instance (berlin52, eil51, st70, ch150).
    #[arg(long, default_value = "berlin52")]
    pub instance: String,
    /// Volunteer nodes of the in-process network.
    #[arg(long, default_value_t = 8)]
    pub nodes: usize,
    /// Islands (distributed objects) in the ring.
    #[arg(long, default_value_t = 8)]
    pub islands: u32,
    /// Epochs; migrants move between ring neighbours after each.
    #[arg(long, default_value_t = 10)]
    pub epochs: u32,
    /// Generations per epoch.
    #[arg(long, default_value_t = 20)]
    pub generations: u32,
    /// Seed of every island's random generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
    /// Draw the best tour as SVG to this file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Run the same GA as plain sequential Rust, without the framework.
    #[arg(long)]
    pub sequential: bool,
    /// Benchmark: alternate `--sequential` and the in-process network (`--nodes`,
    /// default 1 for this) `--repeat` times and print the median wall times and
    /// their ratio (the framework's overhead).
    #[arg(long, conflicts_with_all = ["sequential", "svg"])]
    pub overhead: bool,
    /// Benchmark: alternate `--ft none` and `--ft local` (with `--checkpoint-every`
    /// and `--durability`) on the in-process network `--repeat` times and print
    /// the median wall times and their ratio (the cost of local fault tolerance).
    #[arg(long, conflicts_with_all = ["sequential", "svg", "overhead", "connect"])]
    pub ft_overhead: bool,
    /// Repetitions of each side for `--overhead` and `--ft-overhead`.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Run as a client of a real network, joining through the volunteer at ADDR
    /// (QUIC, Pastry) instead of an in-process network.
    #[arg(long, conflicts_with_all = ["sequential", "overhead"])]
    pub connect: Option<std::net::SocketAddr>,
    /// The routing overlay: pastry or chord; in-process also `test` (the
    /// test-support full-membership overlay).
    #[arg(long, default_value = "pastry")]
    pub routing: String,
    /// The overlay's failure-detection timeout, in milliseconds (heartbeats or
    /// stabilisation go at a third of it).
    #[arg(long, default_value_t = 30_000)]
    pub failure_timeout_ms: u64,
    /// With `--connect`: the key this run's code is published with, so that
    /// plain `g2 volunteer`s that trust it fetch and run the islands (created
    /// on first use; `g2 keygen` prints its public half). Default
    /// ~/.g2/publisher.key.
    #[arg(long)]
    pub publisher_key: Option<std::path::PathBuf>,
    /// With `--connect`: do not publish this binary (every volunteer was built
    /// with the islands, as `tsp-islands volunteer` is).
    #[arg(long)]
    pub no_publish: bool,
    /// The network name used with `--connect`.
    #[arg(long, default_value = "tsp.g2")]
    pub network: String,
    /// Fault tolerance of this run's objects: none (graceful migration only) or
    /// local (checkpoints and message logs on each volunteer's disk, replayed
    /// after a restart).
    #[arg(long, default_value = "none")]
    pub ft: String,
    /// With `--ft local`: what each logged record survives, process (a killed
    /// volunteer process; no fsync) or machine (a machine crash; fsync).
    #[arg(long, default_value = "process")]
    pub durability: g2::local::Durability,
    /// With `--ft local` in process: checkpoint each island every this many calls
    /// (volunteers of a real network set their own with `--checkpoint-every`).
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: u32,
}

impl Args {
    /// The run's policy over `store`, if it has one.
    pub fn policy(&self, store: std::sync::Arc<dyn g2::Store>) -> Option<g2::local::LocalPolicy> {
        (self.ft == "local").then(|| {
            g2::local::LocalPolicy::new(
                store,
                g2::local::LocalConfig {
                    checkpoint_every_calls: self.checkpoint_every,
                    durability: self.durability,
                    ..g2::local::LocalConfig::default()
                },
            )
        })
    }
}
