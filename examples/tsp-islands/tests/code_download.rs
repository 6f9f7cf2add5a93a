//! Plain `g2 volunteer` processes, built without tsp-islands, run the GA: the
//! client publishes its own binary, signed; each volunteer that trusts the
//! publisher fetches it once, verifies it and runs the islands in a worker
//! process; a volunteer joining mid-run fetches it (from the volunteers that
//! fetched it before) and takes islands; the tour is the sequential one. A
//! volunteer that does not trust the publisher
//! refuses, and the client says why. Every wait is bounded.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TSP: &str = env!("CARGO_BIN_EXE_tsp-islands");

/// The `g2` binary beside tsp-islands (a workspace build makes both); built
/// here if this package was built alone.
fn g2_bin() -> PathBuf {
    let path = Path::new(TSP).with_file_name("g2");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "g2-volunteer", "--bin", "g2"])
            .status()
            .expect("cargo runs")
            .success();
        assert!(ok && path.exists(), "could not build the g2 binary");
    }
    path
}

struct Proc {
    child: Child,
    addr: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_to(cmd: &mut Command, dir: &Path) {
    match std::env::var("G2_TEST_LOGS") {
        Ok(filter) => {
            let log = std::fs::File::create(dir.with_extension("log")).expect("log file");
            cmd.env("RUST_LOG", filter).stderr(log);
        }
        Err(_) => {
            cmd.env("RUST_LOG", "warn").stderr(Stdio::null());
        }
    }
}

/// A plain `g2 volunteer` trusting `trusted`.
fn volunteer(network: &str, dir: &Path, bootstrap: Option<&str>, trusted: &str) -> Proc {
    let mut cmd = Command::new(g2_bin());
    cmd.args(["volunteer", "--network", network, "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir)
        .args([
            "--failure-timeout-ms",
            "1500",
            "--trusted-publisher",
            trusted,
        ])
        .stdout(Stdio::piped());
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    log_to(&mut cmd, dir);
    let mut child = cmd.spawn().expect("g2 volunteer starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("it prints its address");
    assert!(
        line.contains("listening on"),
        "unexpected first line {line:?}"
    );
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();
    Proc { child, addr }
}

/// `g2 status --json` of the volunteer at `addr`.
fn status(addr: &str) -> Option<serde_json::Value> {
    let out = Command::new(g2_bin())
        .args(["status", "--json", "--connect", addr])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn hosts_an_island(s: &serde_json::Value) -> bool {
    s["objects"]
        .as_array()
        .is_some_and(|o| o.iter().any(|e| e[1] == "tsp.Island"))
}

fn keygen(path: &Path) -> String {
    let out = Command::new(g2_bin())
        .args(["keygen", "--key"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tsp-code-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn wait(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn drain(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

const GA: &[&str] = &[
    "--instance",
    "ch150",
    "--islands",
    "12",
    "--epochs",
    "1500",
    "--generations",
    "2",
    "--seed",
    "11",
];

#[test]
fn plain_volunteers_fetch_the_islands_once_and_the_tour_is_the_sequential_one() {
    let base = scratch("plain");
    let key_path = base.join("publisher.key");
    let key = keygen(&key_path);
    let network = "code-download.test";
    let v1 = volunteer(network, &base.join("v1"), None, &key);
    let mut vols = vec![
        volunteer(network, &base.join("v2"), Some(&v1.addr), &key),
        volunteer(network, &base.join("v3"), Some(&v1.addr), &key),
    ];
    vols.insert(0, v1);
    let mut run = Run::start(&vols[0].addr, network, &key_path, &[], GA);
    // once islands run on the first three, a fourth volunteer joins
    let start = Instant::now();
    while !vols
        .iter()
        .any(|v| status(&v.addr).is_some_and(|s| hosts_an_island(&s)))
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no island started"
        );
        assert!(
            matches!(run.child.try_wait(), Ok(None)),
            "the client ended early"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let late = volunteer(network, &base.join("v4"), Some(&vols[0].addr), &key);
    // it fetches the bundle and takes islands while the run goes on
    let mut took = false;
    while matches!(run.child.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(240) {
        if status(&late.addr).is_some_and(|s| hosts_an_island(&s)) {
            took = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status_code, stdout, stderr) = run.finish(Duration::from_secs(300));
    assert!(status_code.success(), "client failed: {stderr}");
    assert!(
        took,
        "the volunteer that joined mid-run never hosted an island"
    );
    assert_sequential_tour(&stdout, GA);
    // every volunteer that ran islands fetched the bundle exactly once
    vols.push(late);
    for v in &vols {
        let s = status(&v.addr).expect("volunteer answers");
        let fetches = s["code"]["fetches"].as_u64().unwrap();
        let workers = s["code"]["workers"].as_array().unwrap().len();
        assert!(fetches <= 1, "{} fetched {fetches} times", v.addr);
        assert_eq!(fetches as usize, workers.min(1), "{}: {s}", v.addr);
        // and runs it confined (nice 19 and seccomp need no kernel option)
        for w in s["code"]["workers"].as_array().unwrap() {
            let layers = w["sandbox"].to_string();
            assert!(
                layers.contains("nice 19") && layers.contains("seccomp: no network"),
                "{layers}"
            );
        }
    }
    let late_status = status(&vols[3].addr).unwrap();
    assert_eq!(late_status["code"]["fetches"], 1);
    // it fetched from the volunteers that held the bundle before it (they
    // serve the chunks of what they fetched), and what they served is what
    // the fetchers say they got from holders
    let count = |key: &str| -> u64 {
        vols.iter()
            .map(|v| status(&v.addr).unwrap()["code"][key].as_u64().unwrap())
            .sum()
    };
    let late_from_holders = late_status["code"]["chunks_from_holders"].as_u64().unwrap();
    assert!(late_from_holders > 0, "{late_status}");
    let (served, from_holders) = (count("chunks_served"), count("chunks_from_holders"));
    assert!(
        served >= from_holders && from_holders >= late_from_holders,
        "served {served}, got from holders {from_holders}"
    );
    drop(vols);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn a_volunteer_that_does_not_trust_the_publisher_refuses_and_the_client_says_why() {
    let base = scratch("untrusted");
    let key_path = base.join("publisher.key");
    let key = keygen(&key_path);
    let someone_else = keygen(&base.join("other.key"));
    let network = "code-untrusted.test";
    let v = volunteer(network, &base.join("v1"), None, &someone_else);
    let started = Instant::now();
    let out = Command::new(TSP)
        .args(["run", "--connect", &v.addr, "--network", network])
        .args(["--failure-timeout-ms", "1500", "--publisher-key"])
        .arg(&key_path)
        .args(["--islands", "2", "--epochs", "5"])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tsp.Island") && stderr.contains(&key) && stderr.contains("not trusted"),
        "{stderr}"
    );
    // at once, not after a call deadline
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "took {:?}",
        started.elapsed()
    );
    // the volunteer keeps serving, and fetched nothing
    let s = status(&v.addr).expect("still answers");
    assert_eq!(s["code"]["fetches"], 0);
    drop(v);
    let _ = std::fs::remove_dir_all(&base);
}

/// The run's last line (`--json`) names the same tour as `--sequential` with `ga`.
fn assert_sequential_tour(stdout: &str, ga: &[&str]) {
    let last = |text: &str| -> serde_json::Value {
        serde_json::from_str(text.lines().last().expect("output")).expect("JSON")
    };
    let seq = Command::new(TSP)
        .args(ga)
        .args(["--sequential", "--json"])
        .output()
        .unwrap();
    let sequential = last(&String::from_utf8_lossy(&seq.stdout));
    assert_eq!(last(stdout)["tour_blake3"], sequential["tour_blake3"]);
}

/// A client run with its stdout and stderr drained as it goes.
struct Run {
    child: Child,
    out: std::thread::JoinHandle<Vec<u8>>,
    err: std::thread::JoinHandle<Vec<u8>>,
}

impl Run {
    fn start(addr: &str, network: &str, key: &Path, flags: &[&str], ga: &[&str]) -> Run {
        let mut child = Command::new(TSP)
            .args(["run", "--connect", addr, "--network", network])
            .args(["--failure-timeout-ms", "1500", "--json", "--publisher-key"])
            .arg(key)
            .args(flags)
            .args(ga)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("client starts");
        let out = drain(child.stdout.take().unwrap());
        let err = drain(child.stderr.take().unwrap());
        Run { child, out, err }
    }

    fn finish(mut self, limit: Duration) -> (std::process::ExitStatus, String, String) {
        let status = wait(&mut self.child, limit);
        if status.is_none() {
            let _ = self.child.kill();
        }
        let out = String::from_utf8_lossy(&self.out.join().unwrap()).to_string();
        let err = String::from_utf8_lossy(&self.err.join().unwrap()).to_string();
        (
            status.unwrap_or_else(|| panic!("the run did not finish: {err}")),
            out,
            err,
        )
    }
}

/// Waits (bounded) until a volunteer runs a worker with islands in it; that
/// volunteer's index and the worker's pid.
fn a_busy_worker(vols: &[Proc], run: &mut Run) -> (usize, u64) {
    let start = Instant::now();
    loop {
        for (i, v) in vols.iter().enumerate() {
            if let Some(s) = status(&v.addr) {
                for w in s["code"]["workers"].as_array().into_iter().flatten() {
                    if w["objects"].as_u64() > Some(0) && w["failed"].is_null() {
                        return (i, w["pid"].as_u64().unwrap());
                    }
                }
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no worker ran islands"
        );
        assert!(
            matches!(run.child.try_wait(), Ok(None)),
            "the client ended early"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn kill9(pid: u64) {
    let ok = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -9 {pid}");
}

#[test]
fn under_ft_none_a_killed_worker_loses_its_islands_and_the_client_says_so() {
    let base = scratch("kill-none");
    let key_path = base.join("publisher.key");
    let key = keygen(&key_path);
    let network = "code-kill-none.test";
    let v1 = volunteer(network, &base.join("v1"), None, &key);
    let vols = vec![
        volunteer(network, &base.join("v2"), Some(&v1.addr), &key),
        v1,
    ];
    let ga = [
        "--instance",
        "ch150",
        "--islands",
        "4",
        "--epochs",
        "100000",
        "--generations",
        "1",
    ];
    let mut run = Run::start(&vols[0].addr, network, &key_path, &["--ft", "none"], &ga);
    let (i, pid) = a_busy_worker(&vols, &mut run);
    kill9(pid);
    let (status_code, _, stderr) = run.finish(Duration::from_secs(60));
    assert!(!status_code.success());
    assert!(
        stderr.contains("was lost") || stderr.contains("worker process running the object failed"),
        "{stderr}"
    );
    // the volunteer keeps serving, and says its worker ended
    let s = status(&vols[i].addr).expect("the volunteer still answers");
    let workers = s["code"]["workers"].as_array().unwrap();
    assert!(
        workers
            .iter()
            .any(|w| w["pid"] == pid && !w["failed"].is_null()),
        "{s}"
    );
    drop(vols);
    let _ = std::fs::remove_dir_all(&base);
}

#[cfg(feature = "rocksdb")]
#[test]
fn under_ft_local_a_killed_worker_is_replaced_and_the_tour_is_unchanged() {
    let base = scratch("kill-local");
    let key_path = base.join("publisher.key");
    let key = keygen(&key_path);
    let network = "code-kill-local.test";
    let v1 = volunteer(network, &base.join("v1"), None, &key);
    let vols = vec![
        volunteer(network, &base.join("v2"), Some(&v1.addr), &key),
        v1,
    ];
    const GA: &[&str] = &[
        "--instance",
        "ch150",
        "--islands",
        "8",
        // long enough that the islands of the killed worker still have work
        // to do (a worker killed after its islands finished is never needed
        // again, and never replaced)
        "--epochs",
        "2400",
        "--generations",
        "2",
        "--seed",
        "3",
    ];
    let started = Instant::now();
    let mut run = Run::start(&vols[0].addr, network, &key_path, &["--ft", "local"], GA);
    let (i, pid) = a_busy_worker(&vols, &mut run);
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        matches!(run.child.try_wait(), Ok(None)),
        "the run ended before the kill"
    );
    kill9(pid);
    eprintln!(
        "worker {pid} killed {:?} after the start",
        started.elapsed()
    );
    let (status_code, stdout, stderr) = run.finish(Duration::from_secs(300));
    assert!(status_code.success(), "client failed: {stderr}");
    assert_sequential_tour(&stdout, GA);
    // a new worker took over; the bundle came from the cache
    let s = status(&vols[i].addr).expect("the volunteer still answers");
    let workers = s["code"]["workers"].as_array().unwrap();
    assert!(
        workers
            .iter()
            .any(|w| w["pid"] != pid && w["failed"].is_null()),
        "{s}"
    );
    assert_eq!(s["code"]["fetches"], 1);
    eprintln!("run took {:?}", started.elapsed());
    drop(vols);
    let _ = std::fs::remove_dir_all(&base);
}
