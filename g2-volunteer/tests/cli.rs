//! The `g2` binary as an operator runs it: two volunteers on 127.0.0.1, one
//! configured by flags and one by a TOML file, `g2 status`, and a graceful exit on
//! SIGTERM. Every wait is bounded.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const G2: &str = env!("CARGO_BIN_EXE_g2");

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn start(args: &[&str]) -> (Proc, String) {
    let mut child = Command::new(G2)
        .arg("volunteer")
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("g2 starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening on"), "{line:?}");
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();
    (Proc(child), addr)
}

fn status(addr: &str) -> serde_json::Value {
    let out = Command::new(G2)
        .args(["status", "--connect", addr, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON status")
}

fn wait_exit(p: &mut Proc, limit: Duration) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Ok(Some(s)) = p.0.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Runs `g2 volunteer` with `args` and `--data-dir data_dir`, which must
/// refuse to start; what it printed on stderr.
fn refused_volunteer(args: &[&str], data_dir: &std::path::Path) -> String {
    let out = Command::new(G2)
        .arg("volunteer")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn two_volunteers_find_each_other_report_status_and_leave_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("g2-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let network = format!("cli-{}", std::process::id());
    let d1 = dir.join("a");
    let (mut a, addr_a) = start(&[
        "--network",
        &network,
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        d1.to_str().unwrap(),
    ]);
    // the second volunteer is configured by a file; a flag overrides it
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("g2.toml");
    std::fs::write(
        &cfg,
        format!(
            "network = \"{network}\"\nlisten = \"127.0.0.1:0\"\nbootstrap = \"{addr_a}\"\ndata-dir = \"{}\"\nrouting = \"pastry\"\n",
            dir.join("b").display()
        ),
    )
    .unwrap();
    let (mut b, addr_b) = start(&["--config", cfg.to_str().unwrap()]);

    let mut sa = status(&addr_a);
    for _ in 0..100 {
        if sa["neighbours"].as_array().unwrap().len() == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        sa = status(&addr_a);
    }
    let sb = status(&addr_b);
    assert_eq!(sa["network"], network.as_str());
    assert_eq!(sa["overlay"], "pastry");
    assert_eq!(sa["neighbours"][0]["id"], sb["id"], "a knows b");
    assert_eq!(sb["neighbours"][0]["id"], sa["id"], "b knows a");
    assert!(sa["uptime_s"].as_f64().unwrap() > 0.0);

    // the id is kept in the data dir: the same dir gives the same id
    let id_a = sa["id"].as_str().unwrap().to_string();
    for p in [&mut a, &mut b] {
        assert!(
            Command::new("kill")
                .args(["-TERM", &p.0.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
        let s = wait_exit(p, Duration::from_secs(20)).expect("exits after SIGTERM");
        assert!(s.success(), "graceful leave exits 0: {s}");
    }
    let (_a2, addr_a2) = start(&[
        "--network",
        &network,
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        d1.to_str().unwrap(),
    ]);
    assert_eq!(status(&addr_a2)["id"], id_a.as_str());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_settings_are_refused_with_a_clear_message() {
    let out = Command::new(G2)
        .args(["volunteer", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--network is required"));

    let out = Command::new(G2)
        .args([
            "volunteer",
            "--network",
            "bad name",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad network name"));

    let cfg = std::env::temp_dir().join(format!("g2-bad-{}.toml", std::process::id()));
    std::fs::write(&cfg, "network = \"x\"\nlissen = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(G2)
        .args(["volunteer", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lissen"), "names the unknown key: {err}");
    let _ = std::fs::remove_file(&cfg);

    let out = Command::new(G2)
        .args(["status", "--connect", "127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "no volunteer there");
}

#[test]
fn trusted_publishers_come_from_g2_toml_and_a_bad_key_is_refused() {
    let dir = std::env::temp_dir().join(format!("g2-trust-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // a key made by g2 keygen, trusted in g2.toml: the volunteer starts
    let out = Command::new(G2)
        .args(["keygen", "--key"])
        .arg(dir.join("publisher.key"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(key.len(), 64);
    // keygen again prints the same key
    let again = Command::new(G2)
        .args(["keygen", "--key"])
        .arg(dir.join("publisher.key"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(again.stdout).unwrap().trim(), key);
    let cfg = dir.join("g2.toml");
    std::fs::write(
        &cfg,
        format!(
            "network = \"trust.test\"\nlisten = \"127.0.0.1:0\"\ndata-dir = \"{}\"\ntrusted-publishers = [\"{key}\"]\ncode-cache-mb = 64\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let (p, addr) = start(&["--config", cfg.to_str().unwrap()]);
    let s = status(&addr);
    assert_eq!(s["code"]["fetches"], 0);
    assert_eq!(s["code"]["workers"].as_array().map(Vec::len), Some(0));
    drop(p);
    // a key that is not one
    std::fs::write(
        &cfg,
        "network = \"trust.test\"\nlisten = \"127.0.0.1:0\"\ntrusted-publishers = [\"not-a-key\"]\n",
    )
    .unwrap();
    let out = Command::new(G2)
        .args(["volunteer", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("trusted publisher") && err.contains("not-a-key"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn publish_out_writes_a_code_server_directory_and_a_bad_code_server_is_refused() {
    let dir = std::env::temp_dir().join(format!("g2-codeserver-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key_path = dir.join("publisher.key");
    let out = Command::new(G2)
        .args(["keygen", "--key"])
        .arg(&key_path)
        .output()
        .unwrap();
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let binary = ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("true(1)");
    let served = dir.join("served");
    let out = Command::new(G2)
        .args(["publish", "--binary", binary, "--type", "app.T", "--key"])
        .arg(&key_path)
        .arg("--out")
        .arg(&served)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // what a volunteer reads from it: the signed manifest and the binary
    let server: g2_volunteer::code::CodeServer =
        format!("file://{}", served.display()).parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let found = rt.block_on(server.manifests("app.T")).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0.publisher, key);
    let bytes = rt.block_on(server.binary(&found[0].0)).unwrap();
    assert_eq!(bytes, std::fs::read(binary).unwrap());
    assert!(
        rt.block_on(server.manifests("app.Other"))
            .unwrap()
            .is_empty()
    );

    // publishing with neither a network nor a directory says what is missing
    let out = Command::new(G2)
        .args(["publish", "--binary", binary, "--type", "app.T"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--connect") && err.contains("--out"), "{err}");

    // a code server URL the volunteer cannot use is refused at start
    let out = Command::new(G2)
        .args([
            "volunteer",
            "--network",
            "cs.test",
            "--listen",
            "127.0.0.1:0",
            "--code-server",
            "https://code.example.org/g2",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("https is not supported"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The errors a newcomer meets first: a bootstrap peer of another network,
/// nothing G2 at an address, a data dir of a volunteer of another network
/// (or of one still running). Each says what happened and what to do, in
/// one line.
#[test]
fn first_contact_errors_say_what_happened_and_what_to_do() {
    let dir = std::env::temp_dir().join(format!("g2-first-contact-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bars = dir.join("bars");
    let (mut a, addr) = start(&[
        "--network",
        "bars.test",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        bars.to_str().unwrap(),
    ]);
    let one_line = |err: &str| {
        let err = err.trim();
        assert!(err.starts_with("g2: ") && err.lines().count() == 1, "{err}");
    };

    // a volunteer of another network bootstrapping through it
    let err = refused_volunteer(
        &[
            "--network",
            "tsp.g2",
            "--listen",
            "127.0.0.1:0",
            "--bootstrap",
            &addr,
        ],
        &dir.join("other"),
    );
    assert!(
        err.contains(&format!(
            "{addr} belongs to another network (this node joins \"tsp.g2\"): it is on \"bars.test\": pass --network bars.test"
        )),
        "{err}"
    );
    one_line(&err);
    assert_eq!(status(&addr)["network"], "bars.test", "it keeps serving");

    // a UDP port where nothing speaks G2 (it reads and never answers): for a
    // status query and for a bootstrap, asked side by side
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let there = silent.local_addr().unwrap().to_string();
    let status_run = Command::new(G2)
        .args(["status", "--connect", &there])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let join_run = Command::new(G2)
        .args([
            "volunteer",
            "--network",
            "x.test",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--bootstrap", &there, "--data-dir"])
        .arg(dir.join("x"))
        .env("RUST_LOG", "off")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for (run, says) in [
        (
            status_run,
            format!("no G2 node answered at {there} within 10 s"),
        ),
        (
            join_run,
            format!(
                "cannot join through bootstrap peer {there}: no G2 node answered at {there} within 10 s"
            ),
        ),
    ] {
        let out = run.wait_with_output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&says) && err.contains("check the address and port"),
            "{err}"
        );
        one_line(&err);
    }
    drop(silent);

    // the data dir of a volunteer still running
    #[cfg(feature = "rocksdb")]
    {
        let err = refused_volunteer(
            &["--network", "bars.test", "--listen", "127.0.0.1:0"],
            &bars,
        );
        assert!(
            err.contains(
                "is in use by another process (a volunteer already running with this data dir?)"
            ),
            "{err}"
        );
        one_line(&err);
    }
    let _ = a.0.kill();
    let _ = wait_exit(&mut a, Duration::from_secs(10));

    // the data dir of a volunteer of another network
    let err = refused_volunteer(
        &["--network", "other.test", "--listen", "127.0.0.1:0"],
        &bars,
    );
    assert!(
        err.contains(&format!(
            "data dir {} belongs to a volunteer of network \"bars.test\" (this one joins \"other.test\"): pass --network bars.test, or another --data-dir",
            bars.display()
        )),
        "{err}"
    );
    one_line(&err);
    let _ = std::fs::remove_dir_all(&dir);
}
