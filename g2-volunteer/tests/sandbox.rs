//! Worker confinement with real processes: the `g2` binary launches the
//! `worker_probe` example confined, and the probe's methods try to reach the
//! network and the owner's files. Unconfined, the same probe gets through
//! (so these tests can fail). A worker that aborts fails its call clearly,
//! and other workers keep answering.

use std::path::{Path, PathBuf};

use g2::Hosted;
use g2::worker::WorkerConn;
use g2_volunteer::code::sandbox::{SandboxConfig, layers_in};
use g2_volunteer::code::workers::spawn_worker;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn probe_binary() -> PathBuf {
    let g2 = Path::new(env!("CARGO_BIN_EXE_g2"));
    let p = g2.with_file_name("examples").join("worker_probe");
    if !p.exists() {
        // (a workspace `cargo test` builds examples; a filtered one may not)
        static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = std::process::Command::new(cargo)
            .args(["build", "-p", "g2-volunteer", "--example", "worker_probe"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok && p.exists(), "could not build {}", p.display());
    }
    p
}

fn confined() -> SandboxConfig {
    SandboxConfig {
        launcher: Some(PathBuf::from(env!("CARGO_BIN_EXE_g2"))),
        ..SandboxConfig::default()
    }
}

async fn start(cfg: &SandboxConfig, scratch: &Path) -> (WorkerConn, tokio::process::Child) {
    spawn_worker("sandbox.test", &probe_binary(), scratch, cfg, "probe")
        .await
        .expect("the probe starts as a worker")
}

async fn call<A: Serialize, R: DeserializeOwned>(
    obj: &mut Box<dyn Hosted>,
    method: &str,
    args: A,
) -> R {
    let mut bytes = Vec::new();
    ciborium::into_writer(&args, &mut bytes).unwrap();
    let out = obj.invoke(method, &bytes).await.expect("the call returns");
    ciborium::from_reader(out.as_slice()).unwrap()
}

async fn probe(conn: &WorkerConn, n: u128) -> Box<dyn Hosted> {
    let mut init = Vec::new();
    ciborium::into_writer(&(), &mut init).unwrap();
    conn.activate(g2::ObjectId::from_u128(n), "test.Probe", &init)
        .await
        .unwrap()
}

/// What the probe managed: (tcp connect, udp socket, write outside, read /etc/passwd).
async fn attempts(obj: &mut Box<dyn Hosted>, outside: &Path) -> (bool, bool, bool, bool) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let tcp: Result<(), String> = call(obj, "connect", (addr,)).await;
    let udp: Result<(), String> = call(obj, "udp", ()).await;
    let write: Result<(), String> =
        call(obj, "write", (outside.to_string_lossy().to_string(),)).await;
    let read: Result<usize, String> = call(obj, "read", ("/etc/passwd".to_string(),)).await;
    (tcp.is_ok(), udp.is_ok(), write.is_ok(), read.is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confined_worker_reaches_no_network_and_no_file_outside_its_scratch_dir() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    let outside = dir.path().join("outside.txt");
    let (conn, _child) = start(&confined(), &scratch).await;
    let layers = layers_in(&scratch);
    println!("layers in force: {layers:#?}");
    let mut obj = probe(&conn, 1).await;
    let (tcp, udp, write, read) = attempts(&mut obj, &outside).await;
    assert!(!tcp, "a TCP connection got out");
    assert!(!udp, "a UDP socket opened");
    assert!(
        !outside.exists(),
        "a file was written outside the scratch dir"
    );
    assert!(!write);
    let landlock = layers
        .iter()
        .any(|l| l.starts_with("landlock:") && !l.contains("skipped"));
    if landlock {
        assert!(!read, "read the owner's /etc/passwd");
    } else {
        eprintln!("this kernel has no Landlock: file reads are not confined here");
    }
    // its own scratch dir stays usable, and it runs at the lowest priority
    let inside = scratch.join("inside.txt");
    let ok: Result<(), String> =
        call(&mut obj, "write", (inside.to_string_lossy().to_string(),)).await;
    assert!(ok.is_ok(), "{ok:?}");
    let nice: Result<i64, String> = call(&mut obj, "nice", ()).await;
    assert_eq!(nice, Ok(19));
    assert!(
        layers.iter().any(|l| l.starts_with("seccomp: no network")),
        "{layers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfined_worker_gets_through_which_is_what_the_sandbox_stops() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    let outside = dir.path().join("outside.txt");
    let cfg = SandboxConfig {
        enabled: false,
        ..SandboxConfig::default()
    };
    let (conn, _child) = start(&cfg, &scratch).await;
    let mut obj = probe(&conn, 1).await;
    let (tcp, udp, write, _) = attempts(&mut obj, &outside).await;
    assert!(tcp && udp && write && outside.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_aborts_fails_its_call_clearly_and_others_keep_answering() {
    let dir = tempfile::tempdir().unwrap();
    let (a, mut child_a) = start(&confined(), &dir.path().join("a")).await;
    let (b, _child_b) = start(&confined(), &dir.path().join("b")).await;
    let mut doomed = probe(&a, 1).await;
    let mut other = probe(&b, 2).await;
    let _: u64 = call(&mut other, "ping", ()).await;
    let mut unit = Vec::new();
    ciborium::into_writer(&(), &mut unit).unwrap();
    let err = doomed.invoke("abort", &unit).await.unwrap_err();
    assert!(matches!(err, g2::RemoteError::WorkerFailed(_)), "{err}");
    assert!(err.to_string().contains("probe"), "{err}");
    let status = child_a.wait().await.unwrap();
    assert!(!status.success());
    assert!(a.failure().is_some());
    // the other worker keeps its object and its count
    let n: u64 = call(&mut other, "ping", ()).await;
    assert_eq!(n, 2);
}
