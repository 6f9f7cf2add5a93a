//! The tsp-islands binary as a user runs it.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tsp-islands"))
        .args(args)
        .output()
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, stdout, stderr) = run(&all);
    assert!(ok, "tsp-islands {args:?} failed: {stderr}");
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last).expect("the last line is JSON")
}

/// Parameters short enough that the optimum is not reached, so the tour depends on
/// every island's whole history, migrations included.
const SHORT: &[&str] = &[
    "--instance",
    "ch150",
    "--islands",
    "5",
    "--epochs",
    "3",
    "--generations",
    "1",
    "--seed",
    "2",
];

#[test]
fn the_same_seed_gives_the_same_tour_on_1_4_16_nodes_every_overlay_and_sequentially() {
    let mut hashes = Vec::new();
    let mut lengths = Vec::new();
    for extra in [
        &["--nodes", "1"][..],
        &["--nodes", "4"],
        &["--nodes", "16"],
        &["--nodes", "16", "--routing", "test"],
        &["--nodes", "16", "--routing", "chord"],
        &["--sequential"],
    ] {
        let mut args = SHORT.to_vec();
        args.extend_from_slice(extra);
        let v = json(&args);
        hashes.push(v["tour_blake3"].as_str().unwrap().to_string());
        lengths.push(v["best_length"].as_u64().unwrap());
    }
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
    assert!(lengths.iter().all(|l| *l == lengths[0]), "{lengths:?}");
}

#[test]
fn the_json_line_holds_the_documented_fields() {
    let mut args = SHORT.to_vec();
    args.extend_from_slice(&["--nodes", "3"]);
    let v = json(&args);
    for key in [
        "instance",
        "nodes",
        "islands",
        "seed",
        "best_length",
        "best_known",
        "gap_pct",
        "tour_blake3",
        "elapsed_ms",
        "calls",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["instance"], "ch150");
    assert_eq!(v["nodes"], 3);
    assert_eq!(v["islands"], 5);
    assert_eq!(v["best_known"], 6528);
    let len = v["best_length"].as_f64().unwrap();
    let gap = v["gap_pct"].as_f64().unwrap();
    assert!((gap - (len - 6528.0) / 6528.0 * 100.0).abs() < 1e-9);
    assert!(
        v["calls"].as_u64().unwrap() >= 5 * 3,
        "islands were called: {v}"
    );
    assert_eq!(v["tour_blake3"].as_str().unwrap().len(), 64);
}

#[test]
fn different_seeds_give_different_runs() {
    let mut a = SHORT.to_vec();
    a.push("--sequential");
    let mut b = a.clone();
    let i = b.iter().position(|x| *x == "--seed").unwrap();
    b[i + 1] = "3";
    assert_ne!(json(&a)["tour_blake3"], json(&b)["tour_blake3"]);
}

#[test]
fn a_bad_instance_file_names_its_line() {
    let dir = std::env::temp_dir().join(format!("tsp-islands-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.tsp");
    std::fs::write(
        &path,
        "NAME: bad\nTYPE: TSP\nDIMENSION: 3\nEDGE_WEIGHT_TYPE: EUC_2D\nNODE_COORD_SECTION\n1 0 0\n2 zero 1\n3 1 1\nEOF\n",
    )
    .unwrap();
    let (ok, _, stderr) = run(&["--instance", path.to_str().unwrap(), "--sequential"]);
    assert!(!ok);
    assert!(stderr.contains("line 7"), "{stderr}");
    // a file that is no TSPLIB instance at all, and a directory
    let readme = dir.join("README.md");
    std::fs::write(&readme, "# A project\n\nSome text.\n").unwrap();
    let (ok, _, stderr) = run(&["--instance", readme.to_str().unwrap(), "--sequential"]);
    assert!(!ok);
    assert!(
        stderr.contains("is not a TSPLIB instance")
            && stderr.contains("found `# A project`")
            && stderr.contains("NODE_COORD_SECTION")
            && stderr.contains("berlin52"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    let (ok, _, stderr) = run(&["--instance", dir.to_str().unwrap(), "--sequential"]);
    assert!(!ok);
    assert!(
        stderr.contains("cannot read it") && stderr.contains("pass a TSPLIB .tsp file"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(&["--instance", "no-such-instance"]);
    assert!(!ok);
    assert!(
        stderr.contains("berlin52"),
        "lists the shipped instances: {stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn svg_output_draws_the_tour() {
    let path = std::env::temp_dir().join(format!("tsp-islands-{}.svg", std::process::id()));
    let (ok, stdout, stderr) = run(&[
        "--instance",
        "eil51",
        "--epochs",
        "1",
        "--generations",
        "1",
        "--sequential",
        "--svg",
        path.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("tour drawn to"));
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(
        svg.starts_with("<svg") || svg.contains("<svg"),
        "an SVG document"
    );
    assert!(svg.contains("eil51"));
    std::fs::remove_file(&path).ok();
}

#[test]
#[cfg(feature = "rocksdb")]
fn ft_overhead_times_both_policies_on_the_same_tour() {
    let mut args = SHORT.to_vec();
    args.extend(["--ft-overhead", "--repeat", "1", "--nodes", "2"]);
    args.extend(["--checkpoint-every", "2"]);
    let v = json(&args);
    assert_eq!(v["experiment"], "ft_overhead");
    assert_eq!(v["checkpoint_every"], 2);
    let (none, local) = (
        v["none_ms"].as_f64().unwrap(),
        v["local_ms"].as_f64().unwrap(),
    );
    assert!(none > 0.0 && local > 0.0);
    assert!((v["ratio"].as_f64().unwrap() - local / none).abs() < 1e-9);
}

/// A client pointed at a volunteer of another network is told so at once,
/// with the network to pass; the volunteer keeps serving.
#[test]
fn a_client_pointed_at_another_network_says_so_and_which() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = std::env::temp_dir().join(format!("tsp-islands-othernet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut volunteer = Command::new(env!("CARGO_BIN_EXE_tsp-islands"))
        .args([
            "volunteer",
            "--network",
            "bars.test",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(volunteer.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();
    // the client's default network is tsp.g2
    let started = std::time::Instant::now();
    let (ok, _, stderr) = run(&["run", "--connect", &addr, "--instance", "berlin52"]);
    let took = started.elapsed();
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "{addr} belongs to another network (this node joins \"tsp.g2\"): it is on \"bars.test\": pass --network bars.test"
        )),
        "{stderr}"
    );
    eprintln!("the client exited after {took:?}");
    // the volunteer still serves: a client of its network runs
    let (ok, stdout, stderr) = run(&[
        "run",
        "--connect",
        &addr,
        "--network",
        "bars.test",
        "--instance",
        "berlin52",
        "--islands",
        "2",
        "--epochs",
        "2",
        "--generations",
        "2",
        "--json",
        "--no-publish",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("tour_blake3"), "{stdout}");
    let _ = volunteer.kill();
    let _ = volunteer.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
