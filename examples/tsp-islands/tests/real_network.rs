//! Real volunteer processes on 127.0.0.1 (QUIC, Pastry): the GA survives
//! volunteers joining and leaving gracefully mid-run with the same result; under
//! `--ft none` a `kill -9` makes the client fail with `ObjectLost` naming the
//! object; under `--ft local` volunteers killed with `kill -9` and restarted on
//! the same data dir recover their islands and the tour is unchanged. Every wait
//! is bounded.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tsp-islands");

struct Volunteer {
    child: Child,
    addr: String,
}

impl Volunteer {
    fn start(network: &str, dir: &PathBuf, bootstrap: Option<&str>) -> Volunteer {
        Self::start_with(network, dir, bootstrap, "127.0.0.1:0", &[])
    }

    /// Starts a volunteer listening on `listen` with extra flags.
    fn start_with(
        network: &str,
        dir: &PathBuf,
        bootstrap: Option<&str>,
        listen: &str,
        extra: &[&str],
    ) -> Volunteer {
        let mut cmd = Command::new(BIN);
        cmd.args(["volunteer", "--network", network, "--listen", listen])
            .arg("--data-dir")
            .arg(dir)
            .args(["--failure-timeout-ms", "1500"])
            .args(extra)
            .stdout(Stdio::piped());
        // G2_TEST_LOGS=<filter> keeps each volunteer's log beside its data dir
        // (`<data-dir>.log`, appended across restarts) for a failing run
        match std::env::var("G2_TEST_LOGS") {
            Ok(filter) => {
                if let Some(parent) = dir.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.with_extension("log"))
                    .expect("volunteer log file");
                cmd.env("RUST_LOG", filter).stderr(log);
            }
            Err(_) => {
                cmd.env("RUST_LOG", "warn").stderr(Stdio::null());
            }
        }
        if let Some(b) = bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        let mut child = cmd.spawn().expect("volunteer starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the volunteer prints its address");
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .expect("an address")
            .to_string();
        assert!(
            line.contains("listening on"),
            "unexpected first line {line:?}"
        );
        Volunteer { child, addr }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    fn leave(mut self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok);
        let status =
            wait(&mut self.child, Duration::from_secs(30)).expect("it exits after leaving");
        assert!(status.success(), "a graceful leave exits 0, got {status}");
    }

    fn kill9(&mut self) {
        let _ = Command::new("kill").args(["-9", &self.pid()]).status();
        let _ = wait(&mut self.child, Duration::from_secs(10));
    }
}

impl Drop for Volunteer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A client process whose stdout and stderr are read as it runs, so that it
/// never blocks on a full pipe however much it logs.
struct Client {
    child: Child,
    stdout: std::thread::JoinHandle<Vec<u8>>,
    stderr: std::thread::JoinHandle<Vec<u8>>,
}

impl Client {
    /// `tsp-islands run` as a client of the network at `addr`, with `flags`
    /// (policy, output) and the GA parameters `ga`.
    fn run(addr: &str, network: &str, flags: &[&str], ga: &[&str]) -> Client {
        let mut child = Command::new(BIN)
            .args(["run", "--connect", addr, "--network", network])
            .args(["--failure-timeout-ms", "1500"])
            // the volunteers here link the islands (`tsp-islands volunteer`)
            .arg("--no-publish")
            .args(flags)
            .args(ga)
            .env(
                "RUST_LOG",
                std::env::var("G2_TEST_LOGS").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("client starts");
        let stdout = drain(child.stdout.take().expect("piped stdout"));
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        Client {
            child,
            stdout,
            stderr,
        }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `limit` for the client to exit; its status and its whole
    /// stdout and stderr, or `None` (and the client killed) if it did not.
    fn finish(mut self, limit: Duration) -> Option<(std::process::ExitStatus, Vec<u8>, Vec<u8>)> {
        let status = wait(&mut self.child, limit);
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let out = self.stdout.join().unwrap_or_default();
        let err = self.stderr.join().unwrap_or_default();
        match status {
            Some(s) => Some((s, out, err)),
            None => {
                eprintln!(
                    "client did not finish within {limit:?}; its stderr:\n{}",
                    String::from_utf8_lossy(&err)
                );
                None
            }
        }
    }
}

/// One multi-process network at a time: each test starts up to nine processes,
/// and three networks at once on a 2-core machine starve them all.
static ONE_NETWORK_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_network_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    // a failed test poisons the lock; the next one still runs alone
    ONE_NETWORK_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn drain(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

fn wait(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Removes a passed test's data dirs, unless `G2_TEST_LOGS` asked for its logs.
fn clean_up(base: &PathBuf) {
    if std::env::var_os("G2_TEST_LOGS").is_none() {
        let _ = std::fs::remove_dir_all(base);
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tsp-real-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn last_json(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let last = text.lines().last().expect("output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Waits (bounded) for the GA client to succeed and checks that it printed the
/// same tour as the sequential run of the same parameters.
fn assert_same_tour_as_sequential(client: Client, ga: &[&str], limit: Duration) {
    let (status, stdout, stderr) = client.finish(limit).expect("the run finishes");
    assert!(
        status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&stderr)
    );
    let distributed = last_json(&stdout);
    let seq = Command::new(BIN)
        .args(ga)
        .args(["--sequential", "--json"])
        .output()
        .unwrap();
    assert!(seq.status.success());
    let sequential = last_json(&seq.stdout);
    assert_eq!(distributed["tour_blake3"], sequential["tour_blake3"]);
    assert_eq!(distributed["best_length"], sequential["best_length"]);
}

/// Long enough (many short epochs) that the churn below happens mid-run.
const GA: &[&str] = &[
    "--instance",
    "ch150",
    "--islands",
    "6",
    "--epochs",
    "2000",
    "--generations",
    "2",
    "--seed",
    "5",
];

/// As [`GA`], longer: every call is logged, and the three crashes below take
/// up to 12 s.
#[cfg(feature = "rocksdb")]
const LOCAL_GA: &[&str] = &[
    "--instance",
    "ch150",
    "--islands",
    "6",
    "--epochs",
    "2500",
    "--generations",
    "2",
    "--seed",
    "5",
];

#[test]
fn volunteers_join_and_leave_mid_run_and_the_tour_is_unchanged() {
    let _alone = one_network_at_a_time();
    let base = scratch("churn");
    let network = format!("tsp-churn-{}", std::process::id());
    let first = Volunteer::start(&network, &base.join("v0"), None);
    let mut volunteers = vec![];
    for i in 1..5 {
        volunteers.push(Volunteer::start(
            &network,
            &base.join(format!("v{i}")),
            Some(&first.addr),
        ));
    }
    std::thread::sleep(Duration::from_millis(1500));

    let mut client = Client::run(&first.addr, &network, &["--json"], GA);
    // churn while the GA runs: three join, three leave gracefully
    std::thread::sleep(Duration::from_millis(300));
    let mut joined = vec![];
    for i in 5..8 {
        joined.push(Volunteer::start(
            &network,
            &base.join(format!("v{i}")),
            Some(&first.addr),
        ));
        std::thread::sleep(Duration::from_millis(150));
    }
    for v in volunteers.drain(..3) {
        v.leave();
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(
        client.running(),
        "the churn happened while the GA was still running"
    );
    assert_same_tour_as_sequential(client, GA, Duration::from_secs(240));
    drop(joined);
    drop(first);
    clean_up(&base);
}

#[test]
fn under_ft_none_a_killed_volunteer_makes_the_client_report_the_lost_object() {
    let _alone = one_network_at_a_time();
    let base = scratch("kill");
    let network = format!("tsp-kill-{}", std::process::id());
    let first = Volunteer::start(&network, &base.join("v0"), None);
    let mut others: Vec<Volunteer> = (1..4)
        .map(|i| Volunteer::start(&network, &base.join(format!("v{i}")), Some(&first.addr)))
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let client = Client::run(
        &first.addr,
        &network,
        &["--ft", "none"],
        &[
            "--instance",
            "ch150",
            "--islands",
            "8",
            "--epochs",
            "100000",
            "--generations",
            "1",
        ],
    );
    std::thread::sleep(Duration::from_millis(1500));
    for v in &mut others {
        v.kill9();
    }
    let killed_at = Instant::now();
    let (status, _, stderr) = client
        .finish(Duration::from_secs(60))
        .expect("the client gives up, not hangs");
    let detected = killed_at.elapsed();
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(!status.success());
    assert!(
        stderr.contains("was lost with its volunteer"),
        "the client names the lost object: {stderr}"
    );
    eprintln!("ObjectLost reported {detected:?} after kill -9");
    drop(first);
    clean_up(&base);
}

/// A small deterministic generator for the kill schedule (seeded, printed).
#[cfg(feature = "rocksdb")]
struct Lcg(u64);

#[cfg(feature = "rocksdb")]
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

#[test]
#[cfg(feature = "rocksdb")]
fn under_ft_local_killed_and_restarted_volunteers_change_nothing() {
    let _alone = one_network_at_a_time();
    let seed: u64 = std::env::var("G2_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    eprintln!("kill schedule seed {seed} (set G2_KILL_SEED to change)");
    let mut rng = Lcg(seed);
    let base = scratch("local");
    let network = format!("tsp-local-{}", std::process::id());
    // checkpoint every 5 calls: kills land during checkpoints too
    let flags = ["--checkpoint-every", "5"];
    let first = Volunteer::start_with(&network, &base.join("v0"), None, "127.0.0.1:0", &flags);
    let mut others: Vec<(Volunteer, PathBuf)> = (1..4)
        .map(|i| {
            let dir = base.join(format!("v{i}"));
            let v = Volunteer::start_with(&network, &dir, Some(&first.addr), "127.0.0.1:0", &flags);
            (v, dir)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let mut client = Client::run(
        &first.addr,
        &network,
        &["--ft", "local", "--json"],
        LOCAL_GA,
    );

    // three crashes: two volunteers at seeded moments, restarted 1-3 s later,
    // then one killed again right after its restart (during recovery and replay)
    let restart = |slot: &mut (Volunteer, PathBuf), down: Duration| {
        let addr = slot.0.addr.clone();
        slot.0.kill9();
        std::thread::sleep(down);
        slot.0 = Volunteer::start_with(&network, &slot.1, Some(&first.addr), &addr, &flags);
        assert_eq!(slot.0.addr, addr, "restarted on its old address");
    };
    std::thread::sleep(rng.millis(200, 1200));
    let down = rng.millis(1000, 3000);
    eprintln!("kill -9 volunteer 1, down {down:?}");
    restart(&mut others[0], down);
    std::thread::sleep(rng.millis(200, 1200));
    let down = rng.millis(1000, 3000);
    eprintln!("kill -9 volunteer 2, down {down:?}");
    restart(&mut others[1], down);
    std::thread::sleep(Duration::from_millis(50));
    eprintln!("kill -9 volunteer 2 again while it recovers, down 1s");
    restart(&mut others[1], Duration::from_secs(1));
    let mid_run = client.running();
    assert_same_tour_as_sequential(client, LOCAL_GA, Duration::from_secs(300));
    assert!(
        mid_run,
        "the crashes happened while the GA was still running"
    );
    drop(others);
    drop(first);
    clean_up(&base);
}
