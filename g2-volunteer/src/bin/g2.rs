//! `g2`: the generic volunteer host.
//!
//! ```text
//! g2 volunteer --network NAME --listen 127.0.0.1:PORT [--bootstrap ADDR] [--data-dir DIR] [--routing pastry|chord]
//! g2 volunteer --config g2.toml
//! g2 status --connect ADDR [--json]
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use g2_volunteer::{Volunteer, VolunteerArgs, VolunteerConfig};

#[derive(Parser)]
#[command(version, about = "The G2 volunteer host")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Join a network and volunteer this machine until SIGTERM / Ctrl-C.
    Volunteer(VolunteerArgs),
    /// Show a volunteer's id, neighbours, objects and counters.
    Status {
        /// The volunteer's address.
        #[arg(long)]
        connect: SocketAddr,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    g2_volunteer::init_logging();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("g2: starting tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Volunteer(args) => {
                let cfg = VolunteerConfig::resolve(&args)?;
                let v = Volunteer::start(&cfg, |b| b).await?;
                println!(
                    "volunteer {} listening on {}",
                    v.node().id(),
                    v.local_addr()
                );
                v.run_until_shutdown().await
            }
            Command::Status { connect, json } => {
                let s = g2_volunteer::status(connect).await?;
                g2_volunteer::print_status(&s, json);
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("g2: {e}");
            ExitCode::FAILURE
        }
    }
}
