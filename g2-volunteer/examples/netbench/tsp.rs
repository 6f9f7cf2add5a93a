//! The TSP part: wall time of `tsp-islands run --connect` on one volunteer
//! process against two, and the same GA without G2 as the machine's ceiling.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use g2::NodeId;
use serde_json::{Value, json};

use crate::cli::Opts;
use crate::orchestrator::{Proc, f, load_json, pinned};
use crate::s;

fn tsp_binary(o: &Opts) -> Result<PathBuf, String> {
    if let Some(b) = &o.tsp_bin {
        return Ok(b.clone());
    }
    build_sibling("tsp-islands", &["-p", "tsp-islands"])
}

/// With `--plain-volunteers`: the `g2` binary, and a publisher key it made
/// (its file and public half).
struct Plain {
    g2: PathBuf,
    key_file: PathBuf,
    key: String,
}

fn plain(dir: &Path) -> Result<Plain, String> {
    let g2 = build_sibling("g2", &["-p", "g2-volunteer", "--bin", "g2"])?;
    let key_file = dir.join("publisher.key");
    let out = Command::new(&g2)
        .args(["keygen", "--key"])
        .arg(&key_file)
        .output()
        .map_err(s("g2 keygen"))?;
    let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || key.len() != 64 {
        return Err(format!(
            "g2 keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(Plain { g2, key_file, key })
}

/// Builds binary `name` with `cargo build <what>` in this example's profile,
/// next to it in the target dir.
fn build_sibling(name: &str, what: &[&str]) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(s("current_exe"))?;
    // <target>/<profile>/examples/netbench
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target dir")?;
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&ws).args(["build", "-q"]).args(what);
    if !cfg!(feature = "rocksdb") {
        // built as this example was: without RocksDB (the benchmark needs none)
        cmd.arg("--no-default-features");
    }
    if release {
        cmd.arg("--release");
    }
    eprintln!(
        "netbench: building {name} ({})...",
        if release { "release" } else { "debug" }
    );
    let ok = cmd.status().is_ok_and(|s| s.success());
    let bin = profile_dir.join(name);
    if !bin.exists() {
        return Err(format!(
            "{} not found{}; build it (or pass --tsp-bin)",
            bin.display(),
            if ok { "" } else { " (cargo build failed)" }
        ));
    }
    Ok(bin)
}

/// Writes a volunteer key into `dir/node.key`, as `NodeKey::load_or_create` reads it.
fn write_key(dir: &Path, kp: &rcgen::KeyPair) -> Result<NodeId, String> {
    std::fs::create_dir_all(dir).map_err(s("data dir"))?;
    std::fs::write(dir.join("node.key"), kp.serialize_pem()).map_err(s("writing a key"))?;
    Ok(g2::quic::node_id_of_public_key(&kp.public_key_der()))
}

/// Two volunteer keys whose ids are about half the ring apart, so that each
/// volunteer is the root of a comparable share of the GUID space.
fn volunteer_keys(dir: &Path) -> Result<[PathBuf; 2], String> {
    let new_key = || rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(s("key"));
    let d1 = dir.join("v1");
    let d2 = dir.join("v2");
    let id1 = write_key(&d1, &new_key()?)?;
    for _ in 0..10_000 {
        let kp = new_key()?;
        let id = g2::quic::node_id_of_public_key(&kp.public_key_der());
        // top three bits of (id - id1) = 100: between 1/2 and 5/8 of the ring on
        let gap = id.as_u128().wrapping_sub(id1.as_u128());
        if gap >> 125 == 0b100 {
            write_key(&d2, &kp)?;
            return Ok([d1, d2]);
        }
    }
    Err("no second key half the ring away".into())
}

fn free_udp_port() -> Result<u16, String> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").map_err(s("finding a port"))?;
    Ok(sock.local_addr().map_err(s("finding a port"))?.port())
}

/// One TSP run: volunteers with (cpu, data dir), the client on `client_cpus`.
#[allow(clippy::too_many_arguments)]
fn tsp_case(
    bin: &Path,
    plain: Option<&Plain>,
    label: &str,
    volunteers: &[(Option<&str>, &Path)],
    client_cpus: Option<&str>,
    args: &[String],
    log_dir: &Path,
) -> Result<Value, String> {
    // one network for every case: the cases reuse the volunteers' data dirs
    // (and the bundles cached there), and a data dir keeps to one network
    let network = format!("netbench-tsp-{}", std::process::id());
    let mut procs = Vec::new();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for (i, (cpu, dir)) in volunteers.iter().enumerate() {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()?));
        let mut cmd = pinned(*cpu, plain.map_or(bin, |p| &p.g2));
        cmd.arg("volunteer")
            .args(["--network", &network, "--listen", &addr.to_string()])
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", "warn");
        if let Some(p) = plain {
            cmd.args(["--trusted-publisher", &p.key]);
        }
        if let Some(first) = addrs.first() {
            cmd.args(["--bootstrap", &first.to_string()]);
        }
        let log = std::fs::File::create(log_dir.join(format!("{label}-v{}.log", i + 1)))
            .map_err(s("log file"))?;
        let mut p = Proc::spawn(&format!("volunteer {}", i + 1), cmd, Stdio::from(log))?;
        p.line(Duration::from_secs(60), |l| l.contains("listening on"))?;
        procs.push(p);
        addrs.push(addr);
    }
    let before = load_json();
    // where the islands are: sample the volunteers' status during the run
    let stop = Arc::new(AtomicBool::new(false));
    let samples: Arc<Mutex<Vec<Vec<usize>>>> = Arc::default();
    let poller = {
        let (stop, samples, addrs) = (stop.clone(), samples.clone(), addrs.clone());
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            std::thread::sleep(Duration::from_secs(2));
            for _ in 0..3 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let counts: Vec<usize> = addrs
                    .iter()
                    .map(|a| {
                        rt.block_on(async {
                            tokio::time::timeout(Duration::from_secs(5), g2_volunteer::status(*a))
                                .await
                                .ok()
                                .and_then(Result::ok)
                                .map_or(usize::MAX, |st| st.node.objects.len())
                        })
                    })
                    .collect();
                if let Ok(mut s) = samples.lock() {
                    s.push(counts);
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        })
    };
    let mut cmd = pinned(client_cpus, bin);
    cmd.arg("run")
        .args([
            "--connect",
            &addrs[0].to_string(),
            "--network",
            &network,
            "--json",
        ])
        .args(args)
        .env("RUST_LOG", "warn");
    match plain {
        Some(p) => {
            cmd.arg("--publisher-key").arg(&p.key_file);
        }
        None => {
            cmd.arg("--no-publish");
        }
    }
    let log = std::fs::File::create(log_dir.join(format!("{label}-client.log")))
        .map_err(s("log file"))?;
    let mut client = Proc::spawn("tsp client", cmd, Stdio::from(log))?;
    let line = client.line(Duration::from_secs(900), |l| l.starts_with('{'));
    stop.store(true, Ordering::Relaxed);
    let after = load_json();
    let _ = poller.join();
    drop(client);
    drop(procs);
    let line = line.map_err(|e| format!("{e} (logs in {})", log_dir.display()))?;
    let out: Value = serde_json::from_str(&line).map_err(s("tsp-islands --json"))?;
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    Ok(json!({
        "label": label,
        "volunteers": volunteers.len(),
        "volunteer_cpus": volunteers.iter().map(|(c, _)| c.unwrap_or("any")).collect::<Vec<_>>(),
        "client_cpus": client_cpus.unwrap_or("any"),
        "elapsed_ms": out["elapsed_ms"],
        "tour_blake3": out["tour_blake3"],
        "best_length": out["best_length"],
        "islands_on_volunteers_samples": samples,
        "load_before": before,
        "load_after": after,
    }))
}

/// TSP wall time with one volunteer process against two. The client joins the
/// Pastry ring and hosts the islands whose GUIDs fall in its share, so it is
/// counted as compute: with one volunteer, the volunteer and the client share
/// CPU 0 (a one-CPU budget); with two, the second volunteer gets CPU 1 (a
/// two-CPU budget) and the client is either kept on CPU 0 with the first
/// volunteer (`pinned`) or allowed on both CPUs (`floating`).
pub fn tsp_bench(o: &Opts, pin: bool) -> Result<Value, String> {
    let bin = tsp_binary(o)?;
    let dir = std::env::temp_dir().join(format!("netbench-tsp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(s("temp dir"))?;
    let [d1, d2] = volunteer_keys(&dir)?;
    let plain = if o.plain_volunteers {
        Some(plain(&dir)?)
    } else {
        None
    };
    let plain = plain.as_ref();
    let args: Vec<String> = o.tsp_args.split_whitespace().map(String::from).collect();
    let cpu = |c: &'static str| pin.then_some(c);
    let rounds = o.tsp_rounds.max(1);
    let mut runs: Vec<[Value; 3]> = Vec::new();
    let mut ceilings: Vec<(f64, f64)> = Vec::new();
    for round in 1..=rounds {
        eprintln!("netbench: TSP round {round}/{rounds}, 1 volunteer...");
        let one = tsp_case(
            &bin,
            plain,
            "one",
            &[(cpu("0"), &d1)],
            cpu("0"),
            &args,
            &dir,
        )?;
        eprintln!(
            "netbench: TSP round {round}/{rounds}, 2 volunteers, client pinned with volunteer 1..."
        );
        let two_pinned = tsp_case(
            &bin,
            plain,
            "two-pinned",
            &[(cpu("0"), &d1), (cpu("1"), &d2)],
            cpu("0"),
            &args,
            &dir,
        )?;
        eprintln!("netbench: TSP round {round}/{rounds}, 2 volunteers, client on both CPUs...");
        let two_float = tsp_case(
            &bin,
            plain,
            "two-floating",
            &[(cpu("0"), &d1), (cpu("1"), &d2)],
            cpu("0,1"),
            &args,
            &dir,
        )?;
        runs.push([one, two_pinned, two_float]);
        if pin {
            eprintln!(
                "netbench: TSP round {round}/{rounds}, the same GA without G2 on one CPU and split over two..."
            );
            ceilings.push(hardware_ceiling(&bin, &args)?);
        }
    }
    let median = |k: usize| {
        let mut v: Vec<f64> = runs.iter().map(|r| f(&r[k], &["elapsed_ms"])).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (m1, mp, mf) = (median(0), median(1), median(2));
    let tour = &runs[0][0]["tour_blake3"];
    let same_tour = runs.iter().flatten().all(|c| &c["tour_blake3"] == tour);
    let [one, two_pinned, two_float] = runs[0].clone();
    let ceiling_median = {
        let mut v: Vec<f64> = ceilings.iter().map(|(a, b)| a / b).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let r = json!({
        "args": o.tsp_args,
        "plain_volunteers": o.plain_volunteers,
        "one": one,
        "two_pinned": two_pinned,
        "two_floating": two_float,
        "rounds_ms": runs
            .iter()
            .map(|r| r.iter().map(|c| f(c, &["elapsed_ms"])).collect::<Vec<_>>())
            .collect::<Vec<_>>(),
        "median_ms": { "one": m1, "two_pinned": mp, "two_floating": mf },
        "hardware_ceiling": ceilings
            .iter()
            .map(|(one, two)| json!({ "one_cpu_ms": one, "two_cpus_ms": two, "speedup": one / two }))
            .collect::<Vec<_>>(),
        "hardware_ceiling_median": ceiling_median,
        "speedup_pinned": m1 / mp,
        "speedup_floating": m1 / mf,
        "same_tour": same_tour,
    });
    let _ = std::fs::remove_dir_all(&dir);
    Ok(r)
}

/// What this machine allows at best, measured in the same round: the same GA
/// without G2 (`--sequential`, one thread), all islands on CPU 0, against half
/// of them on CPU 0 and half on CPU 1 at the same time (two processes, no
/// communication). Returns the two wall times in ms.
fn hardware_ceiling(bin: &Path, args: &[String]) -> Result<(f64, f64), String> {
    let islands: u32 = args
        .iter()
        .position(|a| a == "--islands")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let with_islands = |n: u32| -> Vec<String> {
        let mut v = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "--islands" {
                it.next();
            } else {
                v.push(a.clone());
            }
        }
        v.extend(["--islands".into(), n.to_string(), "--sequential".into()]);
        v
    };
    let run = |cpu: &str, n: u32| -> Result<std::process::Child, String> {
        pinned(Some(cpu), bin)
            .args(with_islands(n))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(s("sequential GA"))
    };
    let wait = |mut c: std::process::Child| -> Result<(), String> {
        match c.wait().map_err(s("sequential GA"))? {
            st if st.success() => Ok(()),
            st => Err(format!("sequential GA: {st}")),
        }
    };
    let t = Instant::now();
    wait(run("0", islands)?)?;
    let one = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let a = run("0", islands / 2)?;
    let b = run("1", islands - islands / 2)?;
    wait(a)?;
    wait(b)?;
    let two = t.elapsed().as_secs_f64() * 1e3;
    Ok((one, two))
}

pub fn print_tsp(t: &Value) {
    println!();
    println!(
        "== TSP ({}), wall time of `tsp-islands run --connect`",
        t["args"].as_str().unwrap_or("")
    );
    for k in ["one", "two_pinned", "two_floating"] {
        let c = &t[k];
        println!(
            "  {:<13} volunteers on CPUs {:<8} client on CPU {:<4} {:>9.0} ms  islands on volunteers {} (load {})",
            k,
            c["volunteer_cpus"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join("+"))
                .unwrap_or_default(),
            c["client_cpus"].as_str().unwrap_or(""),
            f(c, &["elapsed_ms"]),
            c["islands_on_volunteers_samples"],
            c["load_before"]["loadavg"].as_str().unwrap_or(""),
        );
    }
    println!(
        "  (first round above) wall ms per round [one, two pinned, two floating]: {}; medians {} / {} / {}",
        t["rounds_ms"],
        f(t, &["median_ms", "one"]),
        f(t, &["median_ms", "two_pinned"]),
        f(t, &["median_ms", "two_floating"])
    );
    if let Some(c) = t["hardware_ceiling"].as_array().filter(|c| !c.is_empty()) {
        println!(
            "  without G2 (--sequential, all islands on CPU 0 vs half on each CPU at once), per round: {}; median speed-up {:.2}",
            c.iter()
                .map(|r| format!(
                    "{:.0} / {:.0} ms = {:.2}",
                    f(r, &["one_cpu_ms"]),
                    f(r, &["two_cpus_ms"]),
                    f(r, &["speedup"])
                ))
                .collect::<Vec<_>>()
                .join(", "),
            f(t, &["hardware_ceiling_median"])
        );
    }
    println!(
        "  speed-up 2 vs 1 (medians): {:.2} (client pinned with volunteer 1), {:.2} (client floating)   (target >= 1.7); same tour in every run: {}",
        f(t, &["speedup_pinned"]),
        f(t, &["speedup_floating"]),
        t["same_tour"]
    );
}
