//! The orchestrator: starts the server and client processes for each placement
//! (and the TSP part), collects and prints their results.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cli::{Opts, Params, Placement};
use crate::s;
use crate::tsp::{print_tsp, tsp_bench};

/// A child process killed (and reaped) when dropped.
pub struct Proc {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, stderr: Stdio) -> Result<Self, String> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("starting {name}: {e}"))?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name: name.to_string(),
            child,
            lines: rx,
        })
    }

    /// The next line satisfying `pred` within `limit`; all lines read are kept.
    pub fn line(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> Result<String, String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if pred(&l) => return Ok(l),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "{}: no expected output within {limit:?}",
                        self.name
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(format!(
                        "{} ended ({status}) without the expected output",
                        self.name
                    ));
                }
            }
        }
    }
}

pub fn pinned(cpus: Option<&str>, prog: &Path) -> Command {
    match cpus {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(c).arg(prog);
            cmd
        }
        None => Command::new(prog),
    }
}

/// `(load average, rustc processes)` right now.
fn load() -> (String, usize) {
    let avg = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let rustc = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "rustc")
                })
                .count()
        })
        .unwrap_or(0);
    (avg, rustc)
}

pub fn load_json() -> Value {
    let (avg, rustc) = load();
    json!({ "loadavg": avg, "rustc": rustc })
}

pub fn orchestrate(o: &Opts) -> Result<(), String> {
    let pin = if o.no_taskset {
        false
    } else if Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        true
    } else {
        return Err("taskset not found (util-linux); pass --no-taskset to run unpinned".into());
    };
    let cpu = |c: &'static str| pin.then_some(c);
    let placements: &[(&str, &str, &str)] = match o.placement {
        Placement::Same => &[("same", "0", "0")],
        Placement::Split => &[("split", "0", "1")],
        Placement::Both => &[("same", "0", "0"), ("split", "0", "1")],
        Placement::None => &[],
    };
    let exe = std::env::current_exe().map_err(s("current_exe"))?;
    let mut results = serde_json::Map::new();
    for &(name, server_cpu, client_cpu) in placements {
        eprintln!(
            "netbench: placement {name} (server CPU {server_cpu}, client CPU {client_cpu})..."
        );
        let before = load_json();
        let r = network_bench(&exe, name, cpu(server_cpu), cpu(client_cpu), &o.params)?;
        let mut r = r.as_object().cloned().unwrap_or_default();
        r.insert("load_before".into(), before);
        r.insert("load_after".into(), load_json());
        r.insert("server_cpu".into(), json!(server_cpu));
        r.insert("client_cpu".into(), json!(client_cpu));
        print_network(name, &Value::Object(r.clone()));
        results.insert(name.to_string(), Value::Object(r));
    }
    let tsp = if o.skip_tsp {
        Value::Null
    } else {
        let t = tsp_bench(o, pin)?;
        print_tsp(&t);
        t
    };
    if o.json {
        println!(
            "{}",
            json!({ "experiment": "netbench", "pinned": pin, "placements": results, "tsp": tsp })
        );
    }
    Ok(())
}

fn network_bench(
    exe: &Path,
    name: &str,
    server_cpu: Option<&str>,
    client_cpu: Option<&str>,
    p: &Params,
) -> Result<Value, String> {
    let network = format!("netbench-{}-{name}", std::process::id());
    let mut cmd = pinned(server_cpu, exe);
    cmd.args(["serve", "--network", &network]);
    let mut server = Proc::spawn("server", cmd, Stdio::inherit())?;
    let ready = server.line(Duration::from_secs(60), |l| l.starts_with("READY "))?;
    let f: Vec<&str> = ready.split_whitespace().collect();
    if f.len() != 6 {
        return Err(format!("server said {ready:?}"));
    }
    let mut cmd = pinned(client_cpu, exe);
    cmd.args([
        "client",
        "--network",
        &network,
        "--g2-addr",
        f[1],
        "--g2-id",
        f[2],
        "--bare-addr",
        f[3],
        "--bare-id",
        f[4],
        "--grpc-addr",
        f[5],
    ]);
    cmd.args([
        "--payload".to_string(),
        p.payload.to_string(),
        "--round-trips".into(),
        p.round_trips.to_string(),
        "--warmup".into(),
        p.warmup.to_string(),
        "--inflight".into(),
        p.inflight.to_string(),
        "--throughput-secs".into(),
        p.throughput_secs.to_string(),
        "--state-bytes".into(),
        p.state_bytes.to_string(),
    ]);
    let mut client = Proc::spawn("client", cmd, Stdio::inherit())?;
    let line = client.line(Duration::from_secs(600), |l| l.starts_with("RESULT "))?;
    drop(client);
    drop(server);
    serde_json::from_str(&line["RESULT ".len()..]).map_err(s("client result"))
}

pub fn f(v: &Value, path: &[&str]) -> f64 {
    let mut x = v;
    for k in path {
        x = &x[*k];
    }
    x.as_f64().unwrap_or(f64::NAN)
}

fn print_network(name: &str, r: &Value) {
    println!();
    println!(
        "== placement {name}: server CPU {}, client CPU {} (load before {}, rustc {}; after {}, rustc {})",
        r["server_cpu"].as_str().unwrap_or("-"),
        r["client_cpu"].as_str().unwrap_or("-"),
        r["load_before"]["loadavg"].as_str().unwrap_or(""),
        r["load_before"]["rustc"],
        r["load_after"]["loadavg"].as_str().unwrap_or(""),
        r["load_after"]["rustc"],
    );
    let rt = &r["rtt"];
    println!(
        "round trip, {} B payload, {} sequential each  p50 us    p99 us   mean us",
        rt["payload"], rt["g2"]["n"]
    );
    for (label, k) in [
        ("  G2 call (1 hop, cached)", "g2"),
        ("  bare quinn echo", "bare_quinn"),
        ("  gRPC echo (tonic, HTTP/2)", "grpc_tonic"),
        ("  (G2 call, in-process mem transport)", "g2_in_process_mem"),
    ] {
        println!(
            "{label:<45} {:>8.1} {:>9.1} {:>9.1}",
            f(rt, &[k, "p50_us"]),
            f(rt, &[k, "p99_us"]),
            f(rt, &[k, "mean_us"])
        );
    }
    println!(
        "{:<45} {:>8.2} {:>9.2}   (target <= 1.3)",
        "  G2 / bare",
        f(rt, &["ratio_p50"]),
        f(rt, &["ratio_p99"])
    );
    let t = &r["throughput"];
    println!(
        "calls/s with {} in flight, {} s each",
        t["inflight"], t["seconds"]
    );
    println!(
        "  G2, {} tasks on one object            {:>10.0}",
        t["inflight"],
        f(t, &["g2_one_object_cps"])
    );
    println!(
        "  G2, {} tasks on {} objects             {:>10.0}",
        t["inflight"],
        t["inflight"],
        f(t, &["g2_spread_objects_cps"])
    );
    println!(
        "  bare quinn, {} streams on 1 connection {:>10.0}",
        t["inflight"],
        f(t, &["bare_quinn_streams_cps"])
    );
    println!(
        "  gRPC (tonic), {} tasks on 1 channel   {:>10.0}",
        t["inflight"],
        f(t, &["grpc_tonic_cps"])
    );
    println!(
        "  G2 one object / gRPC                    {:>10.2}   (target >= 2)",
        f(t, &["g2_one_object_vs_grpc"])
    );
    let m = &r["migration"];
    println!(
        "migration of a {} B object (server -> joining node B -> back on B's leave)",
        m["state_bytes"]
    );
    println!(
        "  B's join (build() returned)                {:>8.1} ms",
        f(m, &["join_ms"])
    );
    println!(
        "  join start -> object hosted by B           {:>8.1} ms",
        f(m, &["join_to_hosted_ms"])
    );
    println!(
        "  join start -> first call served by B       {:>8.1} ms",
        f(m, &["join_to_first_call_ms"])
    );
    println!(
        "  B.leave(): object handed off               {:>8.1} ms",
        f(m, &["leave_handoff_ms"])
    );
    println!(
        "  B.leave(): returned                        {:>8.1} ms",
        f(m, &["leave_total_ms"])
    );
}
