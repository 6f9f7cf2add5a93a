//! The command line: the orchestrator's options and the (internal) server and
//! client subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    about = "G2 over QUIC between two processes vs bare quinn; migration; TSP speed-up",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Cmd>,
    #[command(flatten)]
    pub opts: Opts,
}

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// (internal) the server process.
    Serve(ServeArgs),
    /// (internal) the client process.
    Client(ClientArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Placement {
    /// Server and client pinned to CPU 0.
    Same,
    /// Server on CPU 0, client on CPU 1.
    Split,
    /// Both of the above.
    Both,
    /// Neither: only the TSP speed-up.
    None,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// Where the two processes run.
    #[arg(long, value_enum, default_value = "both")]
    pub placement: Placement,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub params: Params,
    /// Do not pin processes (when `taskset` is missing).
    #[arg(long)]
    pub no_taskset: bool,
    /// Skip the TSP speed-up measurement.
    #[arg(long)]
    pub skip_tsp: bool,
    /// The `tsp-islands` binary (default: built with cargo next to this one).
    #[arg(long)]
    pub tsp_bin: Option<PathBuf>,
    /// Run the TSP on plain `g2 volunteer`s that fetch the islands' code from
    /// the network (signed by a key made for the benchmark) and run it in
    /// workers, instead of `tsp-islands volunteer`s with the islands linked in.
    #[arg(long)]
    pub plain_volunteers: bool,
    /// Arguments of the TSP runs (`tsp-islands run --connect ... <these>`).
    #[arg(
        long,
        default_value = "--instance ch150 --islands 16 --epochs 200 --generations 20"
    )]
    pub tsp_args: String,
    /// Rounds of the three TSP runs (one volunteer, two pinned, two floating);
    /// speed-ups are taken from the medians (this VM's CPU speed drifts by
    /// 10-20% from minute to minute).
    #[arg(long, default_value_t = 3)]
    pub tsp_rounds: usize,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Params {
    /// Payload bytes of each round trip.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Sequential round trips measured for each of G2 and bare quinn.
    #[arg(long, default_value_t = 20_000)]
    pub round_trips: usize,
    /// Round trips of each kind before measuring.
    #[arg(long, default_value_t = 2_000)]
    pub warmup: usize,
    /// Calls in flight for the throughput measurement.
    #[arg(long, default_value_t = 64)]
    pub inflight: usize,
    /// Seconds of each throughput measurement.
    #[arg(long, default_value_t = 3.0)]
    pub throughput_secs: f64,
    /// State of the migrated object, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub state_bytes: u64,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    #[arg(long)]
    pub network: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    #[arg(long)]
    pub network: String,
    /// The server volunteer's address and id (hex).
    #[arg(long)]
    pub g2_addr: SocketAddr,
    #[arg(long)]
    pub g2_id: String,
    /// The bare quinn echo endpoint's address and id (hex).
    #[arg(long)]
    pub bare_addr: SocketAddr,
    #[arg(long)]
    pub bare_id: String,
    /// The tonic gRPC echo server's address.
    #[arg(long)]
    pub grpc_addr: SocketAddr,
    #[command(flatten)]
    pub params: Params,
}
