//! Volunteers joining through one bootstrap at the same moment: within a second of
//! virtual time (long before the first ten-second heartbeat) every node agrees on
//! the root of every key, and every lookup ends there. Each case prints its seed
//! on failure so the run can be replayed.

use std::time::Duration;

use g2_core::Key;
use g2_routing_pastry::PastryConfig;
use g2_sim::latency::Topology;
use g2_sim::overlays::{OverlayConfigs, plugin};
use g2_sim::{NetworkConfig, Simulator};

fn concurrent_joins(n: usize, seed: u64) {
    let net = NetworkConfig {
        seed,
        topology: Topology::Sphere,
        // One-way delays of 0–10 ms.
        max_delay: Duration::from_millis(10),
        loss: 0.0,
    };
    let config = PastryConfig::default();
    let heartbeat = config.heartbeat_period;
    let configs = OverlayConfigs {
        pastry: config,
        ..OverlayConfigs::default()
    };
    let mut sim = Simulator::new(plugin("pastry", &configs).expect("valid config"), net);
    let bootstrap = sim.add_node();
    sim.join(bootstrap, None);
    sim.run_for(Duration::from_millis(100));
    // All joins within two milliseconds.
    for _ in 1..n {
        let node = sim.add_node();
        sim.join(node, Some(bootstrap));
        sim.run_for(Duration::from_micros(2000) / n as u32);
    }
    sim.run_for(Duration::from_secs(1));
    assert!(
        sim.now() < heartbeat,
        "seed {seed}: before the first heartbeat"
    );
    assert_eq!(sim.live().len(), n, "seed {seed}: every node joined");
    assert_eq!(sim.stats.refused, 0, "seed {seed}");
    for _ in 0..1000 {
        let key = Key(sim.rng().next_u128());
        assert!(
            sim.roots_agree(key),
            "seed {seed}, {n} nodes: roots of {key:?}"
        );
        let src = sim.random_live().expect("live nodes");
        let l = sim.lookup(src, key);
        assert!(
            l.delivered && l.dead_hops == 0,
            "seed {seed}, {n} nodes: {l:?}"
        );
    }
}

#[test]
fn five_volunteers_joining_at_once_agree_on_roots_within_a_second() {
    concurrent_joins(5, 31);
}

#[test]
fn twenty_volunteers_joining_at_once_agree_on_roots_within_a_second() {
    concurrent_joins(20, 32);
}

#[test]
fn a_hundred_volunteers_joining_at_once_agree_on_roots_within_a_second() {
    concurrent_joins(100, 33);
}
