//! Small simulations that must hold on every run (fast in debug builds). Each
//! prints its seed on failure so the run can be replayed with `g2-sim --seed`.

use std::time::Duration;

use g2_core::Key;
use g2_sim::experiments::{self, Build, ChurnParams, FailParams, HopsParams, Setup};
use g2_sim::overlays::{OverlayConfigs, plugin};
use g2_sim::{NetworkConfig, SimError};

fn setup(seed: u64, build: Build) -> Setup {
    overlay_setup("pastry", seed, build)
}

fn overlay_setup(overlay: &str, seed: u64, build: Build) -> Setup {
    Setup {
        overlay: overlay.into(),
        build,
        net: NetworkConfig {
            seed,
            ..NetworkConfig::default()
        },
        ..Setup::default()
    }
}

fn bound(n: usize) -> u32 {
    (n as f64).log(16.0).ceil() as u32 + 1
}

#[test]
fn same_seed_same_json() {
    let run = |seed| {
        let r = experiments::hops(
            &setup(seed, Build::Join),
            &HopsParams {
                nodes: vec![150],
                lookups: 2000,
            },
        )
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        serde_json::to_string(&r).expect("serialisable")
    };
    assert_eq!(run(7), run(7), "seed 7 is not deterministic");
    assert_ne!(run(7), run(8));
}

#[test]
fn stable_networks_deliver_everything_within_the_hop_bound() {
    for (seed, build, n) in [(11, Build::Join, 400), (12, Build::Direct, 3000)] {
        let r = experiments::hops(
            &setup(seed, build),
            &HopsParams {
                nodes: vec![n],
                lookups: 5000,
            },
        )
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let row = &r.results[0];
        assert_eq!(row.delivered_pct, 100.0, "seed {seed}, {build:?}: {row:?}");
        assert!(row.max_hops <= bound(n), "seed {seed}, {build:?}: {row:?}");
        assert!(
            row.mean_hops <= (n as f64).log(16.0),
            "seed {seed}: {row:?}"
        );
        assert_eq!(row.hop_histogram.iter().sum::<u64>(), 5000);
    }
}

#[test]
fn joined_networks_agree_on_roots() {
    let seed = 13;
    let (mut sim, _) = setup(seed, Build::Join).network(200, 0).expect("builds");
    assert_eq!(sim.live().len(), 200, "seed {seed}");
    assert_eq!(sim.stats.refused, 0, "seed {seed}");
    for _ in 0..300 {
        let key = Key(sim.rng().next_u128());
        assert!(sim.roots_agree(key), "seed {seed}: roots of {key:?}");
    }
}

/// Direct initialisation must give the network the join protocol would build.
#[test]
fn join_and_direct_construction_agree() {
    agree("pastry", 500, 14, 0.05);
}

/// The same for Chord: direct initialisation computes the state that joins,
/// stabilisation and fix_fingers converge to.
#[test]
fn chord_join_and_direct_construction_agree() {
    agree("chord", 500, 19, 0.05);
}

/// The same check at 10^4 nodes: `cargo test --release -p g2-sim -- --ignored`.
#[test]
#[ignore = "minutes in debug builds; run with --release"]
fn join_and_direct_construction_agree_at_ten_thousand_nodes() {
    agree("pastry", 10_000, 15, 0.03);
    agree("chord", 10_000, 15, 0.03);
}

fn agree(overlay: &str, n: usize, seed: u64, tolerance: f64) {
    let p = HopsParams {
        nodes: vec![n],
        lookups: 20_000,
    };
    let join =
        experiments::hops(&overlay_setup(overlay, seed, Build::Join), &p).expect("join-built");
    let direct =
        experiments::hops(&overlay_setup(overlay, seed, Build::Direct), &p).expect("direct-built");
    let (j, d) = (&join.results[0], &direct.results[0]);
    assert_eq!(j.delivered_pct, 100.0, "seed {seed}: {j:?}");
    assert_eq!(d.delivered_pct, 100.0, "seed {seed}: {d:?}");
    let rel = (j.mean_hops - d.mean_hops).abs() / d.mean_hops;
    assert!(rel <= tolerance, "seed {seed}: join {j:?} vs direct {d:?}");
    let entries = (j.routing_entries_mean - d.routing_entries_mean).abs() / d.routing_entries_mean;
    assert!(entries <= 0.1, "seed {seed}: join {j:?} vs direct {d:?}");
}

#[test]
fn silent_failures_are_repaired() {
    let seed = 16;
    let r = experiments::fail(
        &setup(seed, Build::Join),
        &FailParams {
            nodes: 300,
            fail_fractions: vec![0.1],
            lookups: 3000,
            settle: Duration::from_secs(120),
        },
    )
    .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let row = &r.results[0];
    assert_eq!(row.delivered_pct_after, 100.0, "seed {seed}: {row:?}");
    assert!(
        row.mean_hops_after <= row.mean_hops_before,
        "seed {seed}: {row:?}"
    );
}

#[test]
fn churn_keeps_most_lookups_working() {
    let seed = 17;
    let r = experiments::churn(
        &setup(seed, Build::Join),
        &ChurnParams {
            nodes: 100,
            rates: vec![0.05],
            lookup_rate: 5.0,
            duration: Duration::from_secs(600),
        },
    )
    .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let row = &r.results[0];
    assert!(row.failed_lookup_pct < 5.0, "seed {seed}: {row:?}");
    assert!(
        row.maintenance_msgs_per_node_s > 0.0,
        "seed {seed}: {row:?}"
    );
}

#[test]
fn graceful_leaves_lose_nothing() {
    let seed = 18;
    let (mut sim, _) = setup(seed, Build::Join).network(150, 0).expect("builds");
    for _ in 0..15 {
        let v = sim.random_live().expect("nodes");
        sim.leave(v);
    }
    sim.run_for(Duration::from_secs(2));
    for _ in 0..2000 {
        let src = sim.random_live().expect("nodes");
        let key = Key(sim.rng().next_u128());
        let l = sim.lookup(src, key);
        // Leaves learn of the departure at once; routing tables elsewhere may
        // still name the leaver, which costs a dead hop but never a lookup.
        assert!(l.delivered, "seed {seed}: {l:?}");
    }
}

#[test]
fn unknown_overlays_are_named() {
    assert!(plugin("chord", &OverlayConfigs::default()).is_ok());
    let err = plugin("kademlia", &OverlayConfigs::default())
        .err()
        .expect("kademlia is not simulated");
    assert!(matches!(err, SimError::UnknownOverlay(_)));
    assert!(err.to_string().contains("unknown overlay \"kademlia\""));
}

/// The Chord paper's simultaneous-failure experiment at a small size: right
/// after the failures, before any stabilisation, the only lookups that fail
/// are of keys whose root died; after repair every lookup succeeds.
///
/// The one case Chord cannot route around is a node whose whole successor
/// list failed (its keys' next live node is then unknown to every live node
/// before stabilisation); with r = 16 and half the nodes failing that happens
/// somewhere in a 1000-node ring about once in a hundred runs (seed 20 shows
/// it), so this test uses r = 24 as r = Ω(log N) asks for such failure rates.
#[test]
fn chord_lookups_fail_only_where_the_root_died() {
    let seed = 20;
    let mut setup = overlay_setup("chord", seed, Build::Direct);
    setup.configs.chord.successor_list_len = 24;
    let r = experiments::fail(
        &setup,
        &FailParams {
            nodes: 1000,
            fail_fractions: vec![0.1, 0.3, 0.5],
            lookups: 4000,
            settle: Duration::from_secs(300),
        },
    )
    .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    for row in &r.results {
        assert_eq!(row.failed_other_pct_before, 0.0, "seed {seed}: {row:?}");
        assert!(
            row.root_died_pct > 100.0 * row.fail_fraction / 2.0,
            "seed {seed}: {row:?}"
        );
        assert!(
            row.failed_root_died_pct_before <= row.root_died_pct,
            "seed {seed}: {row:?}"
        );
        assert_eq!(row.delivered_pct_after, 100.0, "seed {seed}: {row:?}");
    }
}

#[test]
fn chord_churn_keeps_most_lookups_working() {
    let seed = 21;
    let r = experiments::churn(
        &overlay_setup("chord", seed, Build::Join),
        &ChurnParams {
            nodes: 100,
            rates: vec![0.05],
            lookup_rate: 5.0,
            duration: Duration::from_secs(600),
        },
    )
    .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let row = &r.results[0];
    assert!(row.failed_lookup_pct < 5.0, "seed {seed}: {row:?}");
    assert!(
        row.maintenance_msgs_per_node_s > 0.0,
        "seed {seed}: {row:?}"
    );
}

/// `g2-sim compare --json`: the last line is one JSON object
/// `{"experiment":"compare","results":[{"overlay":...}, ...]}` with one row per
/// overlay, in the order asked, and sane values.
#[test]
fn compare_prints_one_json_row_per_overlay() {
    let seed = 22;
    let svg = std::env::temp_dir().join(format!("g2-sim-compare-{}.svg", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_g2-sim"))
        .args([
            "compare",
            "--overlays",
            "pastry,chord",
            "--nodes",
            "300",
            "--lookups",
            "2000",
            "--window-s",
            "60",
            "--build",
            "direct",
            "--quiet",
            "--json",
            "--seed",
            &seed.to_string(),
            "--svg",
        ])
        .arg(&svg)
        .output()
        .expect("g2-sim runs");
    assert!(out.status.success(), "seed {seed}: {out:?}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let last = stdout.lines().last().expect("output");
    let json: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");
    assert_eq!(json["experiment"], "compare", "{json}");
    assert!(json.get("overlay").is_none(), "{json}");
    let rows = json["results"].as_array().expect("results");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["overlay"].as_str()).collect();
    assert_eq!(names, ["pastry", "chord"], "{json}");
    for r in rows {
        let f = |k: &str| {
            r[k].as_f64()
                .unwrap_or_else(|| panic!("seed {seed}: {k} missing in {r}"))
        };
        assert_eq!(f("nodes"), 300.0);
        assert_eq!(f("delivered_pct"), 100.0, "seed {seed}: {r}");
        let n = 300f64;
        assert!(f("mean_hops") > 1.0 && f("mean_hops") < n.log2(), "{r}");
        assert!(f("max_hops") >= f("mean_hops"), "{r}");
        assert!(f("mean_delay_stretch") >= 1.0, "{r}");
        assert!(f("routing_state") > f("routing_entries"), "{r}");
        assert!(f("maintenance_msgs_per_node_s") > 0.0, "{r}");
        // 10% failed at once: at most the lookups whose root died fail.
        assert!(f("failed_pct") <= 20.0, "seed {seed}: {r}");
        assert_eq!(f("failed_other_pct"), 0.0, "seed {seed}: {r}");
        assert_eq!(f("failed_pct_after_repair"), 0.0, "seed {seed}: {r}");
    }
    // Chord has fewer routing entries but no proximity: a larger delay stretch.
    assert!(rows[1]["mean_delay_stretch"].as_f64() > rows[0]["mean_delay_stretch"].as_f64());
    let svg_text = std::fs::read_to_string(&svg).expect("SVG written");
    let _ = std::fs::remove_file(&svg);
    assert!(
        svg_text.contains("<svg") && svg_text.contains("chord"),
        "SVG"
    );
}
