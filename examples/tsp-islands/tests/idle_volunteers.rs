//! Volunteers that run only while their machine is idle (`--run-when idle`),
//! as real processes on 127.0.0.1: the owner of one starts a busy program
//! mid-run (seen through the test hook that feeds a volunteer its machine's
//! signals from a file); that volunteer suspends, gives its islands back to
//! the others within the grace and a few seconds, and takes islands again
//! once the load stops; the run's tour is the sequential one. Bad idle
//! settings are refused naming the key. Every wait is bounded.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tsp-islands");

const IDLE: &str = r#"{"other_cpu_pct": 2, "user_idle": 900}"#;
const BUSY: &str = r#"{"other_cpu_pct": 95, "user_idle": 900}"#;

struct Volunteer {
    child: Child,
    addr: String,
    signals: PathBuf,
}

impl Volunteer {
    fn start(network: &str, dir: &Path, bootstrap: Option<&str>) -> Volunteer {
        std::fs::create_dir_all(dir).unwrap();
        let signals = dir.with_extension("signals.json");
        std::fs::write(&signals, IDLE).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["volunteer", "--network", network, "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir)
            .args(["--failure-timeout-ms", "1500", "--run-when", "idle"])
            .args(["--suspend-grace-s", "2", "--idle-signals-file"])
            .arg(&signals)
            .env(
                "RUST_LOG",
                std::env::var("G2_TEST_LOGS").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(b) = bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        let mut child = cmd.spawn().expect("volunteer starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("listening on"), "{line:?}");
        let addr = line.trim().rsplit(' ').next().unwrap().to_string();
        Volunteer {
            child,
            addr,
            signals,
        }
    }

    fn owner(&self, signals: &str) {
        std::fs::write(&self.signals, signals).unwrap();
    }

    fn status(&self) -> g2_volunteer::VolunteerStatus {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(g2_volunteer::status(self.addr.parse().unwrap()))
            .expect("the volunteer answers")
    }

    fn islands(&self) -> usize {
        self.status()
            .node
            .objects
            .iter()
            .filter(|(_, t)| t == "tsp.Island")
            .count()
    }

    fn state(&self) -> (String, String) {
        let i = self.status().idle.expect("idle status");
        (i.state.name().to_string(), i.reason)
    }
}

impl Drop for Volunteer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded by `limit`) until `done` holds; panics saying `what`.
fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
    start.elapsed()
}

const GA: &[&str] = &[
    "--instance",
    "ch150",
    "--islands",
    "6",
    "--epochs",
    "4000",
    "--generations",
    "2",
    "--seed",
    "11",
];

#[test]
fn a_volunteer_whose_owner_gets_busy_gives_its_islands_back_and_takes_them_again() {
    let base = std::env::temp_dir().join(format!("tsp-idle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let network = format!("tsp-idle-{}", std::process::id());
    let first = Volunteer::start(&network, &base.join("v0"), None);
    let others: Vec<Volunteer> = (1..3)
        .map(|i| Volunteer::start(&network, &base.join(format!("v{i}")), Some(&first.addr)))
        .collect();
    until("every volunteer runs", Duration::from_secs(30), || {
        std::iter::once(&first)
            .chain(&others)
            .all(|v| v.state().0 == "running")
    });
    let mut client = Command::new(BIN)
        .args(["run", "--connect", &first.addr, "--network", &network])
        .args(["--failure-timeout-ms", "1500", "--no-publish", "--json"])
        .args(GA)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = client.stdout.take().unwrap();
    let err = client.stderr.take().unwrap();
    let out = std::thread::spawn(move || std::io::read_to_string(out).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(err).unwrap_or_default());

    // the owner of a volunteer running islands starts a busy program
    let busy = &others[0];
    until(
        "the volunteer runs islands",
        Duration::from_secs(60),
        || busy.islands() > 0,
    );
    busy.owner(BUSY);
    let load_started = Instant::now();
    until("it suspends", Duration::from_secs(20), || {
        let (state, reason) = busy.state();
        state != "running" && (state != "suspended" || reason.contains("other-cpu-above"))
    });
    until(
        "its islands are all elsewhere",
        Duration::from_secs(30),
        || busy.islands() == 0 && busy.state().0 == "waiting",
    );
    eprintln!(
        "islands all elsewhere {:?} after the owner's load started (suspend-grace-s = 2)",
        load_started.elapsed()
    );
    assert!(
        matches!(client.try_wait(), Ok(None)),
        "the run went on meanwhile"
    );
    // the load stops: it runs again, and takes islands again
    busy.owner(IDLE);
    until("it runs again", Duration::from_secs(20), || {
        busy.state().0 == "running"
    });
    until("it takes islands again", Duration::from_secs(60), || {
        busy.islands() > 0 || !matches!(client.try_wait(), Ok(None))
    });
    let took_again = busy.islands() > 0;

    let start = Instant::now();
    while matches!(client.try_wait(), Ok(None)) {
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "the run did not end"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = client.wait().unwrap();
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(status.success(), "{err}");
    assert!(
        took_again,
        "the volunteer took no island again before the run ended"
    );
    let last = |text: &str| -> serde_json::Value {
        serde_json::from_str(text.lines().last().expect("output")).expect("JSON")
    };
    let seq = Command::new(BIN)
        .args(GA)
        .args(["--sequential", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        last(&out)["tour_blake3"],
        last(&String::from_utf8_lossy(&seq.stdout))["tour_blake3"]
    );
    drop(others);
    drop(first);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn bad_idle_settings_are_refused_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("tsp-idle-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (setting, says) in [
        (
            "other-cpu-above = 150",
            "other-cpu-above: 150 is not a percentage",
        ),
        (
            "linger-cpu-above = -5",
            "linger-cpu-above: -5 is not a percentage",
        ),
        (
            "user-idle-min = -1",
            "user-idle-min: -1 is not a number of minutes",
        ),
        ("run-when = \"sometimes\"", "run-when"),
        (
            "schedule = [\"25:00-08:00\"]",
            "schedule: schedule window \"25:00-08:00\"",
        ),
        ("suspend-grace-s = -3", "suspend-grace-s"),
        ("idle-when = \"idle\"", "idle-when"),
    ] {
        let cfg = dir.join("g2.toml");
        std::fs::write(
            &cfg,
            format!("network = \"idle.test\"\nlisten = \"127.0.0.1:0\"\n{setting}\n"),
        )
        .unwrap();
        let out = Command::new(BIN)
            .args(["volunteer", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{setting} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{setting}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
