//! `g2`: the generic volunteer host.
//!
//! ```text
//! g2 volunteer --network NAME --listen 127.0.0.1:PORT [--bootstrap ADDR] [--data-dir DIR] [--routing pastry|chord]
//! g2 volunteer --config g2.toml
//! g2 status --connect ADDR [--json]
//! g2 keygen [--key FILE]
//! g2 publish --connect ADDR --network NAME --binary FILE --type NAME... [--key FILE]
//! g2 publish --out DIR --binary FILE --type NAME... [--key FILE]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
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
    Volunteer(Box<VolunteerArgs>),
    /// Show a volunteer's id, neighbours, objects and counters.
    Status {
        /// The volunteer's address.
        #[arg(long)]
        connect: SocketAddr,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a publisher key (if there is none) and print its public half,
    /// which volunteers' owners list in `trusted-publishers`.
    Keygen {
        /// The key file (default ~/.g2/publisher.key).
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Store an application binary on a network (or in a code-server
    /// directory) as the code of its types, signed with the publisher key.
    Publish {
        /// A node of the network.
        #[arg(long, requires = "network")]
        connect: Option<SocketAddr>,
        /// The network.
        #[arg(long)]
        network: Option<String>,
        /// Also (or instead) write the signed manifest and the binary into this
        /// code-server directory, for volunteers started with
        /// `--code-server file:///DIR` or an http:// URL serving it.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// The network's overlay.
        #[arg(long, value_enum, default_value = "pastry")]
        routing: g2_volunteer::Routing,
        /// The application binary (built on g2, calling `serve_if_worker`).
        #[arg(long)]
        binary: PathBuf,
        /// A type it serves (repeat for several).
        #[arg(long = "type", required = true)]
        types: Vec<String>,
        /// The publisher key (default ~/.g2/publisher.key).
        #[arg(long)]
        key: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // started to confine a worker and run it: does that and never returns
    g2_volunteer::code::sandbox::launch_if_asked();
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
                Volunteer::serve(&cfg, |b| b).await
            }
            Command::Keygen { key } => {
                let path = key.unwrap_or_else(g2_volunteer::default_publisher_key);
                let existed = path.exists();
                let k = g2_volunteer::code::PublisherKey::load_or_create(&path)
                    .map_err(|e| g2_volunteer::VolunteerError::Config(e.to_string()))?;
                let what = if existed { "existing" } else { "new" };
                eprintln!(
                    "{what} publisher key in {}; its public key:",
                    path.display()
                );
                println!("{}", k.public_hex());
                Ok(())
            }
            Command::Publish {
                connect,
                network,
                out,
                routing,
                binary,
                types,
                key,
            } => {
                if connect.is_none() && out.is_none() {
                    return Err(g2_volunteer::VolunteerError::Config(
                        "publish where? --connect ADDR --network NAME stores the code on a network, --out DIR in a code-server directory".into(),
                    ));
                }
                let path = key.unwrap_or_else(g2_volunteer::default_publisher_key);
                let k = g2_volunteer::code::PublisherKey::load(&path).map_err(|e| {
                    g2_volunteer::VolunteerError::Config(format!("{e} (create one with g2 keygen)"))
                })?;
                let bundle = g2_volunteer::code::Bundle::from_file(&binary, types)
                    .map_err(|e| g2_volunteer::VolunteerError::Config(e.to_string()))?;
                if let Some(dir) = out {
                    let signed = k
                        .sign(bundle.manifest.clone())
                        .map_err(|e| g2_volunteer::VolunteerError::Config(e.to_string()))?;
                    g2_volunteer::code::servers::export(&dir, &bundle, &signed)
                        .map_err(g2_volunteer::VolunteerError::Config)?;
                    println!(
                        "wrote {} ({} bytes) by {} into {}",
                        bundle.manifest.binary_blake3,
                        bundle.manifest.size,
                        k.public_hex(),
                        dir.display()
                    );
                }
                if let (Some(connect), Some(network)) = (connect, network) {
                    let node = g2_volunteer::join_as_client(&network, connect, routing).await?;
                    let r = g2_volunteer::code::publish(&node, &k, &bundle).await;
                    let _ = node.leave().await;
                    let p = r.map_err(g2_volunteer::VolunteerError::Config)?;
                    println!(
                        "published {} ({} bytes) by {}{}",
                        p.binary_blake3,
                        p.size,
                        k.public_hex(),
                        if p.already { " (already there)" } else { "" }
                    );
                }
                Ok(())
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
