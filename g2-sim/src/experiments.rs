//! The experiments: `hops`, `fail` and `churn`. Each returns a [`Report`] that
//! prints as a table and serialises to the JSON object the CLI prints.

use std::collections::BTreeMap;
use std::time::Duration;

use g2_core::Key;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::SimError;
use crate::overlays::{OverlayConfigs, plugin};
use crate::sim::{NetworkConfig, NodeState, Simulator};

/// One experiment's results.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report<R> {
    /// Overlay name (empty, and left out of the JSON, when the rows name
    /// their overlays, as in `compare`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub overlay: String,
    /// Experiment name.
    pub experiment: String,
    /// One row per network size or rate.
    pub results: Vec<R>,
}

/// How a network is built before measuring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// Every node joins through the overlay's join protocol.
    Join,
    /// The plugin initialises every node's state directly.
    Direct,
    /// Join up to [`Setup::direct_above`] nodes, direct beyond.
    Auto,
}

impl std::str::FromStr for Build {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "join" => Ok(Self::Join),
            "direct" => Ok(Self::Direct),
            "auto" => Ok(Self::Auto),
            other => Err(format!(
                "unknown build {other:?} (expected join, direct or auto)"
            )),
        }
    }
}

/// What every experiment shares.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Overlay name (`pastry`, `chord`).
    pub overlay: String,
    /// The overlays' parameters.
    pub configs: OverlayConfigs,
    /// The simulated network.
    pub net: NetworkConfig,
    /// Network construction.
    pub build: Build,
    /// With [`Build::Auto`], networks larger than this are initialised directly.
    pub direct_above: usize,
    /// Virtual time between two joins while building through the protocol.
    pub join_interval: Duration,
    /// Show progress bars on stderr.
    pub progress: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            overlay: "pastry".into(),
            configs: OverlayConfigs::default(),
            net: NetworkConfig::default(),
            build: Build::Auto,
            direct_above: 20_000,
            join_interval: Duration::from_millis(100),
            progress: false,
        }
    }
}

impl Setup {
    fn bar(&self, len: u64, what: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos}/{len} ({elapsed}, eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(what.to_owned());
        bar
    }

    fn simulator(&self, stream: u64) -> Result<Simulator, SimError> {
        let mut net = self.net.clone();
        net.seed = self.net.seed.wrapping_add(stream.wrapping_mul(0x9E37_79B9));
        Ok(Simulator::new(plugin(&self.overlay, &self.configs)?, net))
    }

    /// Builds an `n`-node network and lets it settle.
    pub fn network(&self, n: usize, stream: u64) -> Result<(Simulator, &'static str), SimError> {
        let mut sim = self.simulator(stream)?;
        let direct = match self.build {
            Build::Direct => true,
            Build::Join => false,
            Build::Auto => n > self.direct_above,
        };
        if direct {
            let bar = self.bar(n as u64, &format!("direct init {n}"));
            if !sim.add_direct(n, &|k| bar.set_position(k)) {
                return Err(SimError::NoDirectInit(sim.overlay_name().to_owned()));
            }
            bar.finish_and_clear();
            return Ok((sim, "direct"));
        }
        let bar = self.bar(n as u64, &format!("joining {n}"));
        let first = sim.add_node();
        sim.join(first, None);
        for i in 1..n {
            let node = sim.add_node();
            sim.schedule_join(node, self.join_interval * i as u32);
        }
        let step = self.join_interval * 256;
        let end = self.join_interval * n as u32 + sim.plugin().settle_time(n);
        while sim.now() < end {
            sim.run_for(step.min(end - sim.now()));
            bar.set_position(sim.live().len() as u64);
        }
        bar.finish_and_clear();
        Ok((sim, "join"))
    }
}

/// One row of the `hops` experiment.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HopsRow {
    /// Network size.
    pub nodes: usize,
    /// Lookups made.
    pub lookups: usize,
    /// Mean hops per lookup.
    pub mean_hops: f64,
    /// The mean the overlay's paper predicts (log_(2^b) N for Pastry,
    /// ½·log2 N for Chord).
    pub expected_hops: f64,
    /// Most hops of any lookup.
    pub max_hops: u32,
    /// `hop_histogram[h]`: lookups that took `h` hops.
    pub hop_histogram: Vec<u64>,
    /// Lookups that ended at the key's true root, in %.
    pub delivered_pct: f64,
    /// Mean over lookups of route latency / direct latency (source ≠ root).
    pub mean_delay_stretch: f64,
    /// Mean routing-table entries per node.
    pub routing_entries_mean: f64,
    #[serde(skip)]
    /// Total route latency / total direct latency (table only).
    pub total_delay_stretch: f64,
    #[serde(skip)]
    /// How the network was built (`join` or `direct`); not part of the JSON.
    pub build: &'static str,
}

/// Lookup statistics.
#[derive(Clone, Debug, Default)]
struct LookupStats {
    count: u64,
    hops: u64,
    max: u32,
    hist: Vec<u64>,
    delivered: u64,
    stretch_sum: f64,
    stretch_n: u64,
    route_ns: u128,
    direct_ns: u128,
    /// Lookups of keys whose root before the failures has failed.
    root_died: u64,
    /// Failed lookups of such keys.
    failed_root_died: u64,
    /// Lookups that met more than the runtime's 4 dead next hops at one node.
    over_attempts: u64,
}

/// The runtime's attempts per node to reach a next hop.
const RUNTIME_ATTEMPTS: u32 = 4;

impl LookupStats {
    /// `lookups` random lookups from random live nodes. With `before` (the live
    /// nodes before a failure), lookups of keys whose root then has failed
    /// since are counted apart.
    fn run(
        sim: &mut Simulator,
        lookups: usize,
        bar: &ProgressBar,
        before: Option<&BTreeMap<u128, u32>>,
    ) -> Self {
        let mut st = Self::default();
        let rule = sim.root_rule();
        for i in 0..lookups {
            let Some(src) = sim.random_live() else { break };
            let key = Key(sim.rng().next_u128());
            let l = sim.lookup(src, key);
            let died = before
                .and_then(|b| rule.root(b, key))
                .is_some_and(|r| sim.state(r) == NodeState::Failed);
            st.root_died += u64::from(died);
            st.failed_root_died += u64::from(died && !l.delivered);
            st.over_attempts += u64::from(l.max_dead_run > RUNTIME_ATTEMPTS);
            st.count += 1;
            st.hops += u64::from(l.hops);
            st.max = st.max.max(l.hops);
            if st.hist.len() <= l.hops as usize {
                st.hist.resize(l.hops as usize + 1, 0);
            }
            st.hist[l.hops as usize] += 1;
            st.delivered += u64::from(l.delivered);
            if l.delivered && l.direct_ns > 0 {
                st.stretch_sum += l.route_ns as f64 / l.direct_ns as f64;
                st.stretch_n += 1;
                st.route_ns += u128::from(l.route_ns);
                st.direct_ns += u128::from(l.direct_ns);
            }
            if i % 4096 == 0 {
                bar.set_position(i as u64);
            }
        }
        st
    }

    fn mean_hops(&self) -> f64 {
        self.hops as f64 / self.count.max(1) as f64
    }

    fn delivered_pct(&self) -> f64 {
        self.pct(self.delivered)
    }

    fn pct(&self, k: u64) -> f64 {
        100.0 * k as f64 / self.count.max(1) as f64
    }

    fn failed_other(&self) -> u64 {
        (self.count - self.delivered).saturating_sub(self.failed_root_died)
    }
}

/// Parameters of the `hops` experiment.
#[derive(Clone, Debug)]
pub struct HopsParams {
    /// Network sizes.
    pub nodes: Vec<usize>,
    /// Lookups per size.
    pub lookups: usize,
}

/// Mean/max hops, delivery and delay stretch of random lookups on stable networks.
pub fn hops(setup: &Setup, p: &HopsParams) -> Result<Report<HopsRow>, SimError> {
    let mut results = Vec::new();
    for (k, &n) in p.nodes.iter().enumerate() {
        let (mut sim, build) = setup.network(n, k as u64)?;
        let bar = setup.bar(p.lookups as u64, &format!("lookups at {n}"));
        let st = LookupStats::run(&mut sim, p.lookups, &bar, None);
        bar.finish_and_clear();
        let live = sim.live().to_vec();
        let entries: usize = live
            .iter()
            .filter_map(|&i| sim.overlay(i))
            .map(|o| o.routing_entries())
            .sum();
        results.push(HopsRow {
            nodes: n,
            lookups: st.count as usize,
            mean_hops: st.mean_hops(),
            expected_hops: sim.plugin().expected_hops(n),
            max_hops: st.max,
            hop_histogram: st.hist.clone(),
            delivered_pct: st.delivered_pct(),
            mean_delay_stretch: st.stretch_sum / st.stretch_n.max(1) as f64,
            routing_entries_mean: entries as f64 / live.len().max(1) as f64,
            total_delay_stretch: st.route_ns as f64 / st.direct_ns.max(1) as f64,
            build,
        });
    }
    Ok(Report {
        overlay: setup.overlay.clone(),
        experiment: "hops".into(),
        results,
    })
}

/// One row of the `fail` experiment.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FailRow {
    /// Network size before the failures.
    pub nodes: usize,
    /// Fraction of nodes failed silently at once.
    pub fail_fraction: f64,
    /// Mean hops right after the failures, before any repair.
    pub mean_hops_before: f64,
    /// Mean hops once repair has settled.
    pub mean_hops_after: f64,
    /// Delivery right after the failures, in %.
    pub delivered_pct_before: f64,
    /// Delivery once repair has settled, in %.
    pub delivered_pct_after: f64,
    /// Lookups right after the failures whose key's root (before the
    /// failures) has failed, in % of lookups (about `fail_fraction`).
    pub root_died_pct: f64,
    /// Lookups right after the failures that failed and whose key's root had
    /// failed, in % of lookups.
    pub failed_root_died_pct_before: f64,
    /// Lookups right after the failures that failed although their key's root
    /// is alive, in % of lookups (the target is 0).
    pub failed_other_pct_before: f64,
    /// Lookups right after the failures that met more dead next hops in a row
    /// at one node than the runtime's 4 attempts, in %.
    pub over_runtime_attempts_pct_before: f64,
    /// Messages above the steady-state rate during repair, per failed node.
    pub repair_messages_per_failed_node: f64,
    #[serde(skip)]
    /// Mean hops before the failures (table only).
    pub mean_hops_initial: f64,
}

/// Parameters of the `fail` experiment.
#[derive(Clone, Debug)]
pub struct FailParams {
    /// Network size.
    pub nodes: usize,
    /// Fractions failed, one fresh network each.
    pub fail_fractions: Vec<f64>,
    /// Lookups per measurement.
    pub lookups: usize,
    /// Virtual time given to repair.
    pub settle: Duration,
}

/// For each fraction, fails that fraction of a fresh network silently at once
/// (the Chord paper's simultaneous-failure experiment) and measures lookups
/// right away, before any stabilisation, and again after repair.
pub fn fail(setup: &Setup, p: &FailParams) -> Result<Report<FailRow>, SimError> {
    let mut results = Vec::new();
    for (k, &fraction) in p.fail_fractions.iter().enumerate() {
        results.push(fail_one(setup, p, fraction, k as u64)?);
    }
    Ok(Report {
        overlay: setup.overlay.clone(),
        experiment: "fail".into(),
        results,
    })
}

/// What [`fail_run`] measured besides its row.
struct FailRun {
    row: FailRow,
    /// Lookups on the network as built, before anything else.
    initial: LookupStats,
    /// Overlay messages per live node per second in the steady state.
    maintenance: f64,
    /// How the network was built.
    build: &'static str,
    /// Mean routing entries per node, before the failures.
    routing_entries: f64,
    /// Neighbourhood entries per node.
    neighbourhood_entries: usize,
}

fn fail_one(
    setup: &Setup,
    p: &FailParams,
    fraction: f64,
    stream: u64,
) -> Result<FailRow, SimError> {
    fail_run(setup, p, fraction, stream).map(|r| r.row)
}

/// Builds a network, lets it settle, takes the steady message rate, fails
/// `fraction` of it at once and measures lookups right away and after repair.
fn fail_run(
    setup: &Setup,
    p: &FailParams,
    fraction: f64,
    stream: u64,
) -> Result<FailRun, SimError> {
    let (mut sim, build) = setup.network(p.nodes, stream)?;
    let hidden = ProgressBar::hidden();
    let initial = LookupStats::run(&mut sim, p.lookups, &hidden, None);
    // Let the tables settle after the build (proximity maintenance is busy at
    // first), then take the steady-state message rate over an equal window, to
    // subtract from the repair window.
    sim.run_for(p.settle);
    let m0 = sim.stats.messages;
    sim.run_for(p.settle);
    let baseline_rate = (sim.stats.messages - m0) as f64 / p.settle.as_secs_f64();
    let live_before = sim.live().len();
    let before_ids = sim.live_ids().clone();
    let routing_entries = sim
        .live()
        .iter()
        .filter_map(|&i| sim.overlay(i))
        .map(|o| o.routing_entries())
        .sum::<usize>() as f64
        / live_before.max(1) as f64;
    let mut victims: Vec<u32> = sim.live().to_vec();
    let k = ((p.nodes as f64) * fraction).round() as usize;
    for i in 0..k.min(victims.len()) {
        let j = i + sim.rng().below(victims.len() - i);
        victims.swap(i, j);
    }
    victims.truncate(k);
    for &v in &victims {
        sim.fail(v);
    }
    let m1 = sim.stats.messages;
    let before = LookupStats::run(&mut sim, p.lookups, &hidden, Some(&before_ids));
    let bar = setup.bar(p.settle.as_secs(), &format!("repairing {fraction}"));
    let end = sim.now() + p.settle;
    while sim.now() < end {
        sim.run_for(Duration::from_secs(1).min(end - sim.now()));
        bar.set_position((p.settle - (end - sim.now())).as_secs());
    }
    bar.finish_and_clear();
    let live_frac = sim.live().len() as f64 / live_before.max(1) as f64;
    let repair =
        (sim.stats.messages - m1) as f64 - baseline_rate * live_frac * p.settle.as_secs_f64();
    let after = LookupStats::run(&mut sim, p.lookups, &hidden, None);
    let row = FailRow {
        nodes: p.nodes,
        fail_fraction: fraction,
        mean_hops_before: before.mean_hops(),
        mean_hops_after: after.mean_hops(),
        delivered_pct_before: before.delivered_pct(),
        delivered_pct_after: after.delivered_pct(),
        root_died_pct: before.pct(before.root_died),
        failed_root_died_pct_before: before.pct(before.failed_root_died),
        failed_other_pct_before: before.pct(before.failed_other()),
        over_runtime_attempts_pct_before: before.pct(before.over_attempts),
        repair_messages_per_failed_node: repair.max(0.0) / victims.len().max(1) as f64,
        mean_hops_initial: initial.mean_hops(),
    };
    Ok(FailRun {
        row,
        initial,
        maintenance: baseline_rate / live_before.max(1) as f64,
        build,
        routing_entries,
        neighbourhood_entries: sim.plugin().neighbourhood_entries(),
    })
}

/// One row of the `churn` experiment.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ChurnRow {
    /// Network size at the start.
    pub nodes: usize,
    /// Membership events (a join or a silent failure, equally likely) per second.
    pub rate: f64,
    /// Lookups that did not end at the key's true root, in %.
    pub failed_lookup_pct: f64,
    /// Overlay messages per live node per second during the churn.
    pub maintenance_msgs_per_node_s: f64,
}

/// Parameters of the `churn` experiment.
#[derive(Clone, Debug)]
pub struct ChurnParams {
    /// Network size at the start.
    pub nodes: usize,
    /// Event rates to try.
    pub rates: Vec<f64>,
    /// Lookups per second (network-wide).
    pub lookup_rate: f64,
    /// Virtual duration of each run.
    pub duration: Duration,
}

/// Joins and silent failures as a Poisson process (the Chord paper's set-up)
/// while lookups run; counts lookups that miss the true root.
pub fn churn(setup: &Setup, p: &ChurnParams) -> Result<Report<ChurnRow>, SimError> {
    let mut results = Vec::new();
    for (k, &rate) in p.rates.iter().enumerate() {
        let (mut sim, _) = setup.network(p.nodes, k as u64)?;
        let start = sim.now();
        let end = start + p.duration;
        let m0 = sim.stats.messages;
        let mut next_event = start + secs(sim.rng().exp(rate.max(1e-9)));
        let mut next_lookup = start + secs(sim.rng().exp(p.lookup_rate));
        let (mut lookups, mut failed, mut node_seconds) = (0u64, 0u64, 0.0f64);
        let bar = setup.bar(p.duration.as_secs(), &format!("churn at {rate}/s"));
        loop {
            let t = next_event.min(next_lookup);
            if t >= end {
                break;
            }
            let before = sim.now();
            sim.run_until(t);
            node_seconds += sim.live().len() as f64 * (sim.now() - before).as_secs_f64();
            if t == next_lookup {
                next_lookup = t + secs(sim.rng().exp(p.lookup_rate));
                if let Some(src) = sim.random_live() {
                    let key = Key(sim.rng().next_u128());
                    lookups += 1;
                    failed += u64::from(!sim.lookup(src, key).delivered);
                }
            } else {
                next_event = t + secs(sim.rng().exp(rate));
                if sim.rng().chance(0.5) && sim.live().len() > 2 {
                    if let Some(v) = sim.random_live() {
                        sim.fail(v);
                    }
                } else {
                    let node = sim.add_node();
                    sim.schedule_join(node, sim.now());
                }
            }
            bar.set_position((sim.now() - start).as_secs());
        }
        let before = sim.now();
        sim.run_until(end);
        node_seconds += sim.live().len() as f64 * (sim.now() - before).as_secs_f64();
        bar.finish_and_clear();
        results.push(ChurnRow {
            nodes: p.nodes,
            rate,
            failed_lookup_pct: 100.0 * failed as f64 / lookups.max(1) as f64,
            maintenance_msgs_per_node_s: (sim.stats.messages - m0) as f64 / node_seconds.max(1e-9),
        });
    }
    Ok(Report {
        overlay: setup.overlay.clone(),
        experiment: "churn".into(),
        results,
    })
}

/// One overlay's row of the `compare` experiment.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CompareRow {
    /// Overlay name.
    pub overlay: String,
    /// Network size.
    pub nodes: usize,
    /// Lookups per measurement.
    pub lookups: usize,
    /// Mean hops per lookup on the stable network.
    pub mean_hops: f64,
    /// Most hops of any lookup.
    pub max_hops: u32,
    /// The mean the overlay's paper predicts.
    pub expected_hops: f64,
    /// Lookups that ended at the key's true root, in %.
    pub delivered_pct: f64,
    /// Mean over lookups of route latency / direct latency.
    pub mean_delay_stretch: f64,
    /// Mean routing entries per node (routing table / distinct fingers).
    pub routing_entries: f64,
    /// Neighbourhood entries per node (leaf set and neighbourhood set /
    /// successor list and predecessor).
    pub neighbourhood_entries: usize,
    /// Routing state per node: the two together.
    pub routing_state: f64,
    /// Overlay messages per node per second on the stable network.
    pub maintenance_msgs_per_node_s: f64,
    /// Fraction failed at once for the failure columns.
    pub fail_fraction: f64,
    /// Lookups failed right after the failures, before any repair, in %.
    pub failed_pct: f64,
    /// Of which keys whose root died, in % of lookups.
    pub failed_root_died_pct: f64,
    /// Of which others (root alive), in % of lookups.
    pub failed_other_pct: f64,
    /// Lookups failed once repair has settled, in %.
    pub failed_pct_after_repair: f64,
    #[serde(skip)]
    /// How the network was built (table only).
    pub build: &'static str,
}

/// Parameters of the `compare` experiment.
#[derive(Clone, Debug)]
pub struct CompareParams {
    /// Overlays side by side.
    pub overlays: Vec<String>,
    /// Network size.
    pub nodes: usize,
    /// Lookups per measurement.
    pub lookups: usize,
    /// Fraction failed at once.
    pub fail_fraction: f64,
    /// Virtual time of the warm-up, of the steady-state window and of repair.
    pub window: Duration,
}

/// Several overlays side by side on networks of the same size, seed and
/// latency model: hops, delay stretch, routing state, maintenance traffic and
/// lookups failed right after a fraction of the nodes failed at once.
pub fn compare(setup: &Setup, p: &CompareParams) -> Result<Report<CompareRow>, SimError> {
    let mut results = Vec::new();
    for name in &p.overlays {
        let mut s = setup.clone();
        s.overlay.clone_from(name);
        let fp = FailParams {
            nodes: p.nodes,
            fail_fractions: vec![p.fail_fraction],
            lookups: p.lookups,
            settle: p.window,
        };
        let run = fail_run(&s, &fp, p.fail_fraction, 0)?;
        let st = &run.initial;
        let row = &run.row;
        results.push(CompareRow {
            overlay: name.clone(),
            nodes: p.nodes,
            lookups: st.count as usize,
            mean_hops: st.mean_hops(),
            max_hops: st.max,
            expected_hops: plugin(name, &s.configs)?.expected_hops(p.nodes),
            delivered_pct: st.delivered_pct(),
            mean_delay_stretch: st.stretch_sum / st.stretch_n.max(1) as f64,
            routing_entries: run.routing_entries,
            neighbourhood_entries: run.neighbourhood_entries,
            routing_state: run.routing_entries + run.neighbourhood_entries as f64,
            maintenance_msgs_per_node_s: run.maintenance,
            fail_fraction: p.fail_fraction,
            failed_pct: 100.0 - row.delivered_pct_before,
            failed_root_died_pct: row.failed_root_died_pct_before,
            failed_other_pct: row.failed_other_pct_before,
            failed_pct_after_repair: 100.0 - row.delivered_pct_after,
            build: run.build,
        });
    }
    Ok(Report {
        overlay: String::new(),
        experiment: "compare".into(),
        results,
    })
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 1e9))
}
