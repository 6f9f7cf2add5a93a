//! `g2-sim`: run an overlay experiment and print a table (and JSON, CSV, SVG).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use g2_routing_chord::ChordConfig;
use g2_routing_pastry::PastryConfig;
use g2_sim::experiments::{
    self, Build, ChurnParams, CompareParams, FailParams, HopsParams, Report, Setup,
};
use g2_sim::latency::Topology;
use g2_sim::output::{self, Row};
use g2_sim::overlays::OverlayConfigs;
use g2_sim::{NetworkConfig, SimError};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "g2-sim",
    version,
    about = "Deterministic discrete-event simulator for G2 overlays"
)]
struct Cli {
    #[command(subcommand)]
    experiment: Experiment,
}

#[derive(Subcommand)]
enum Experiment {
    /// Hops, delivery and delay stretch of random lookups on stable networks.
    Hops {
        #[command(flatten)]
        common: Common,
        /// Network sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
        nodes: Vec<usize>,
        /// Lookups per network size.
        #[arg(long, default_value_t = 200_000)]
        lookups: usize,
    },
    /// Fail a fraction of nodes silently; routing before and after repair.
    Fail {
        #[command(flatten)]
        common: Common,
        /// Network size.
        #[arg(long, default_value_t = 5000)]
        nodes: usize,
        /// Fractions of nodes that fail at once, comma-separated (one fresh
        /// network each).
        #[arg(long, value_delimiter = ',', default_value = "0.1")]
        fail_fraction: Vec<f64>,
        /// Lookups per measurement.
        #[arg(long, default_value_t = 10_000)]
        lookups: usize,
        /// Virtual seconds given to repair.
        #[arg(long, default_value_t = 600)]
        settle_s: u64,
    },
    /// Joins and silent failures at a given rate while lookups run.
    Churn {
        #[command(flatten)]
        common: Common,
        /// Network size at the start.
        #[arg(long, default_value_t = 500)]
        nodes: usize,
        /// Membership events per second, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "0.01,0.05,0.1")]
        rate: Vec<f64>,
        /// Lookups per second, network-wide.
        #[arg(long, default_value_t = 10.0)]
        lookup_rate: f64,
        /// Virtual seconds per rate.
        #[arg(long, default_value_t = 3600)]
        duration_s: u64,
    },
    /// Overlays side by side: hops, delay stretch, routing state, maintenance
    /// traffic, and lookups failed right after a fraction of nodes failed.
    Compare {
        #[command(flatten)]
        common: Common,
        /// The overlays to compare, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "pastry,chord")]
        overlays: Vec<String>,
        /// Network size.
        #[arg(long, default_value_t = 10_000)]
        nodes: usize,
        /// Lookups per measurement.
        #[arg(long, default_value_t = 20_000)]
        lookups: usize,
        /// Fraction of nodes that fail at once.
        #[arg(long, default_value_t = 0.1)]
        fail_fraction: f64,
        /// Virtual seconds of warm-up, of the steady-state window, and of repair.
        #[arg(long, default_value_t = 300)]
        window_s: u64,
    },
}

#[derive(Args)]
struct Common {
    /// The overlay to simulate: pastry or chord.
    #[arg(long, default_value = "pastry")]
    overlay: String,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
    /// Write the rows as CSV here.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Draw the plot as SVG here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Network construction: join (protocol), direct (state initialisation) or auto.
    #[arg(long, default_value = "auto")]
    build: Build,
    /// With --build auto, networks above this size are initialised directly.
    #[arg(long, default_value_t = 20_000)]
    direct_above: usize,
    /// Node placement for the latency model: sphere or plane.
    #[arg(long, default_value = "sphere")]
    topology: Topology,
    /// One-way delay across the largest distance, in ms.
    #[arg(long, default_value_t = 200)]
    max_delay_ms: u64,
    /// Probability that an overlay message is lost.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Pastry: bits per digit.
    #[arg(long, default_value_t = 4)]
    b: u32,
    /// Pastry: leaf set size L.
    #[arg(long, default_value_t = 16)]
    leaf_set: usize,
    /// Pastry: heartbeat period in seconds.
    #[arg(long, default_value_t = 10)]
    heartbeat_s: u64,
    /// Chord: successor list length r.
    #[arg(long, default_value_t = 16)]
    successors: usize,
    /// Chord: period of stabilize and check_predecessor in seconds (the
    /// paper's experiments: 30).
    #[arg(long, default_value_t = 30.0)]
    stabilize_s: f64,
    /// Chord: period of fix_fingers in seconds (default: the stabilize period).
    #[arg(long)]
    fix_fingers_s: Option<f64>,
    /// Chord: how long a stabilize, ping or lookup may go unanswered, in ms.
    #[arg(long, default_value_t = 5000)]
    chord_timeout_ms: u64,
    /// Virtual ms between two joins while building a network.
    #[arg(long, default_value_t = 100)]
    join_interval_ms: u64,
    /// Hide progress bars.
    #[arg(long)]
    quiet: bool,
}

impl Common {
    fn setup(&self) -> Setup {
        let pastry = PastryConfig {
            b: self.b,
            leaf_set_size: self.leaf_set,
            heartbeat_period: Duration::from_secs(self.heartbeat_s),
            failure_timeout: Duration::from_secs(self.heartbeat_s * 3),
            ..PastryConfig::default()
        };
        let secs = |s: f64| Duration::from_secs_f64(s.clamp(0.0, 1e9));
        let chord = ChordConfig {
            successor_list_len: self.successors,
            stabilize_period: secs(self.stabilize_s),
            check_predecessor_period: secs(self.stabilize_s),
            fix_fingers_period: secs(self.fix_fingers_s.unwrap_or(self.stabilize_s)),
            request_timeout: Duration::from_millis(self.chord_timeout_ms),
        };
        Setup {
            overlay: self.overlay.clone(),
            configs: OverlayConfigs { pastry, chord },
            net: NetworkConfig {
                seed: self.seed,
                topology: self.topology,
                max_delay: Duration::from_millis(self.max_delay_ms),
                loss: self.loss,
            },
            build: self.build,
            direct_above: self.direct_above,
            join_interval: Duration::from_millis(self.join_interval_ms),
            progress: !self.quiet,
        }
    }

    fn emit<R: Row + Serialize>(
        &self,
        report: &Report<R>,
        draw: impl Fn(&Report<R>, &std::path::Path) -> Result<(), SimError>,
    ) -> Result<(), SimError> {
        println!("seed {}", self.seed);
        print!("{}", output::table(report));
        if let Some(path) = &self.csv {
            output::write_csv(report, path)?;
        }
        if let Some(path) = &self.svg {
            draw(report, path)?;
        }
        if self.json {
            let json = serde_json::to_string(report)
                .map_err(|e| SimError::Output(format!("JSON: {e}")))?;
            println!("{json}");
        }
        Ok(())
    }
}

fn run(cli: Cli) -> Result<(), SimError> {
    match cli.experiment {
        Experiment::Hops {
            common,
            nodes,
            lookups,
        } => {
            let r = experiments::hops(&common.setup(), &HopsParams { nodes, lookups })?;
            common.emit(&r, |r, p| output::write_svg(&output::hops_plot(r), p))
        }
        Experiment::Fail {
            common,
            nodes,
            fail_fraction,
            lookups,
            settle_s,
        } => {
            let p = FailParams {
                nodes,
                fail_fractions: fail_fraction,
                lookups,
                settle: Duration::from_secs(settle_s),
            };
            let r = experiments::fail(&common.setup(), &p)?;
            common.emit(&r, |r, p| output::write_svg(&output::fail_plot(r), p))
        }
        Experiment::Churn {
            common,
            nodes,
            rate,
            lookup_rate,
            duration_s,
        } => {
            let p = ChurnParams {
                nodes,
                rates: rate,
                lookup_rate,
                duration: Duration::from_secs(duration_s),
            };
            let r = experiments::churn(&common.setup(), &p)?;
            common.emit(&r, |r, p| output::write_svg(&output::churn_plot(r), p))
        }
        Experiment::Compare {
            common,
            overlays,
            nodes,
            lookups,
            fail_fraction,
            window_s,
        } => {
            let p = CompareParams {
                overlays,
                nodes,
                lookups,
                fail_fraction,
                window: Duration::from_secs(window_s),
            };
            let r = experiments::compare(&common.setup(), &p)?;
            common.emit(&r, |r, p| {
                output::write_bars_svg(&output::compare_bars(r), p)
            })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let seed = match &cli.experiment {
        Experiment::Hops { common, .. }
        | Experiment::Fail { common, .. }
        | Experiment::Churn { common, .. }
        | Experiment::Compare { common, .. } => common.seed,
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("g2-sim: {e} (seed {seed})");
            ExitCode::FAILURE
        }
    }
}
