//! What running only when idle costs the owner, with real processes on
//! 127.0.0.1:
//!
//! * owner's share: a CPU-bound owner process (nice 0, one thread) counts
//!   loop iterations for a while, alone and then beside a volunteer under
//!   `run-when = idle` (so at nice 19) whose objects compute on every core,
//!   alternating; the ratio is what the owner keeps;
//! * the cost of the idle checks: CPU time of reading the machine's signals
//!   (`/proc/stat`, `/proc/<pid>/stat`, `/proc/loadavg`, `/dev/pts`,
//!   `/dev/input`, `/sys/class/power_supply`), per reading and per hour at
//!   one reading a second.
//!
//! ```text
//! cargo run --release -p g2-volunteer --no-default-features --example idle_bench -- --json
//! ```

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use g2::prelude::*;
use serde::{Deserialize, Serialize};

#[g2::remote]
pub trait Spin {
    /// Computes for `ms` milliseconds; the loop count.
    async fn spin(&mut self, ms: u64) -> u64;
}

#[derive(Serialize, Deserialize)]
struct Burner;

impl Object for Burner {
    const TYPE_NAME: &'static str = "bench.Burner";
    type Init = ();
    type Ref = SpinRef;
    fn activate(_: ()) -> Self {
        Burner
    }
}

impl Spin for Burner {
    async fn spin(&mut self, ms: u64) -> u64 {
        g2::compute(|| busy(Duration::from_millis(ms)))
    }
}

/// Loops for `d`; the iterations done.
fn busy(d: Duration) -> u64 {
    let start = Instant::now();
    let mut n = 0u64;
    let mut x = 1u64;
    while start.elapsed() < d {
        for _ in 0..10_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
        }
        n += 1;
    }
    std::hint::black_box(x);
    n
}

#[derive(Parser)]
struct Args {
    /// Seconds per owner measurement.
    #[arg(long, default_value_t = 4.0)]
    secs: f64,
    /// Alternating rounds (alone, beside the volunteer).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Signal readings timed.
    #[arg(long, default_value_t = 2000)]
    readings: usize,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<(), String> {
    match std::env::args().nth(1).as_deref() {
        Some("volunteer") => {
            return g2_volunteer::serve_volunteer_subcommand(|b| b.register::<Burner>());
        }
        Some("owner") => {
            let secs: f64 = std::env::args()
                .nth(2)
                .and_then(|s| s.parse().ok())
                .unwrap_or(4.0);
            println!("{}", busy(Duration::from_secs_f64(secs)));
            return Ok(());
        }
        _ => {}
    }
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(bench(args))
}

/// The owner's loop count over `secs`, in a process of its own at nice 0.
fn owner(secs: f64) -> Result<u64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .args(["owner", &secs.to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("owner output: {e}"))
}

struct Host(Child);

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn bench(args: Args) -> Result<(), String> {
    // the cost of the checks
    let mut signals = g2_volunteer::idle::MachineSignals::default();
    let me = [std::process::id()];
    let cpu0 = cpu_time();
    for _ in 0..args.readings {
        std::hint::black_box(g2_volunteer::idle::Signals::sample(&mut signals, &me));
    }
    let per_reading_us = (cpu_time() - cpu0).as_secs_f64() * 1e6 / args.readings as f64;
    let per_hour_s = per_reading_us * 3600.0 / 1e6;
    println!(
        "idle checks: {per_reading_us:.0} us of CPU per reading, {per_hour_s:.2} s of CPU per hour at one a second"
    );

    // a volunteer under run-when = idle whose machine reads idle (the file
    // hook: the owner's loop must not make it step aside here, we measure
    // what it costs the owner while it computes)
    let dir = std::env::temp_dir().join(format!("g2-idle-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let signals_file = dir.join("signals.json");
    std::fs::write(&signals_file, r#"{"other_cpu_pct": 0, "user_idle": 3600}"#)
        .map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args([
            "volunteer",
            "--network",
            "idle-bench.test",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.join("v"))
        .args(["--run-when", "idle", "--idle-signals-file"])
        .arg(&signals_file)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let host = Host(child);
    let addr: std::net::SocketAddr = line
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("volunteer said {line:?}"))?;
    let client =
        g2_volunteer::join_as_client("idle-bench.test", addr, g2_volunteer::Routing::Pastry)
            .await
            .map_err(|e| e.to_string())?;
    // wait until it runs (the first readings)
    let t = Instant::now();
    loop {
        let s = g2_volunteer::status(addr)
            .await
            .map_err(|e| e.to_string())?;
        if s.idle
            .is_some_and(|i| i.state == g2_volunteer::idle::State::Running)
        {
            break;
        }
        if t.elapsed() > Duration::from_secs(20) {
            return Err("the volunteer never started running".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut burners = Vec::new();
    for _ in 0..cores * 2 {
        burners.push(
            client
                .create::<Burner>(())
                .await
                .map_err(|e| e.to_string())?,
        );
    }

    let mut alone = Vec::new();
    let mut beside = Vec::new();
    let mut volunteer_loops = Vec::new();
    for _ in 0..args.rounds {
        let secs = args.secs;
        alone.push(
            tokio::task::spawn_blocking(move || owner(secs))
                .await
                .map_err(|e| e.to_string())??,
        );
        // the volunteer computes on every core while the owner runs
        let stop = Instant::now() + Duration::from_secs_f64(args.secs + 1.0);
        let work: Vec<_> = burners
            .iter()
            .map(|b| {
                let b = b.clone();
                tokio::spawn(async move {
                    let mut n = 0;
                    while Instant::now() < stop {
                        n += b.spin(100).await.unwrap_or(0);
                    }
                    n
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        beside.push(
            tokio::task::spawn_blocking(move || owner(secs))
                .await
                .map_err(|e| e.to_string())??,
        );
        let mut n = 0;
        for w in work {
            n += w.await.unwrap_or(0);
        }
        volunteer_loops.push(n);
    }
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
    let ratios: Vec<f64> = alone
        .iter()
        .zip(&beside)
        .map(|(a, b)| *b as f64 / *a as f64)
        .collect();
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let min = sorted[0];
    println!(
        "owner's share beside a computing volunteer (nice 19): median {:.1}%, lowest {:.1}% of its loops alone ({} rounds of {} s; alone {:?}, beside {:?}; the volunteer's loops meanwhile {:?})",
        median * 100.0,
        min * 100.0,
        args.rounds,
        args.secs,
        alone,
        beside,
        volunteer_loops
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "idle_check_us_per_reading": per_reading_us,
                "idle_check_cpu_s_per_hour": per_hour_s,
                "owner_share_median": median,
                "owner_share_min": min,
                "owner_loops_alone": alone,
                "owner_loops_beside": beside,
                "volunteer_loops": volunteer_loops,
                "cores": cores,
            })
        );
    }
    Ok(())
}

/// CPU time of this process so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // clock ticks are 100 a second on Linux
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}
