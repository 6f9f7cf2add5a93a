//! Run when idle (paper §3.1): the owner's criteria ([`Criteria`]), the
//! machine's signals ([`signals`]), the state machine ([`machine`]) and the
//! driver that applies each state to the node:
//!
//! | state | the node |
//! |---|---|
//! | waiting | hosts nothing: new objects go to neighbours |
//! | running, lingering | hosts and takes objects |
//! | suspended | keeps its objects but starts no call (callers queue) and takes no new object |
//! | giving back | passes every object on to neighbours, then waits |
//!
//! Under `run-when = "idle"` the volunteer process runs at nice 19 (its
//! workers always do), so its computation never competes with the owner.

pub mod machine;
pub mod signals;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use g2::Node;
use g2::sync::lock;
use serde::{Deserialize, Serialize};
use tracing::info;

pub use machine::{Change, Criteria, Machine, RunWhen, State, Window, parse_window};
pub use signals::{FileSignals, MachineSignals, Sample, Signals};

/// How often the signals are read.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The idle part of `g2 status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdleStatus {
    /// `idle` or `always`.
    pub run_when: RunWhen,
    /// The state.
    pub state: State,
    /// Why (the criterion that decided it).
    pub reason: String,
    /// Since when, in milliseconds since the Unix epoch.
    pub since_unix_ms: u64,
    /// The last reading.
    pub signals: Sample,
    /// The signals this machine cannot read, said plainly.
    pub cannot_tell: Vec<String>,
}

impl IdleStatus {
    /// One line for `g2 status`.
    pub fn line(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let mut l = format!(
            "{} for {} s: {}",
            self.state.name(),
            now.saturating_sub(self.since_unix_ms) / 1000,
            self.reason
        );
        if !self.cannot_tell.is_empty() {
            l.push_str(&format!(" (cannot tell {})", self.cannot_tell.join(", ")));
        }
        l
    }
}

/// The idle driver's shared view, for `g2 status`.
pub struct Idle {
    status: Mutex<IdleStatus>,
}

impl Idle {
    /// The status now.
    pub fn status(&self) -> IdleStatus {
        lock(&self.status).clone()
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// What the state means for the node.
pub fn apply(node: &Node, state: State) {
    match state {
        State::Running | State::Lingering => {
            node.pause_calls(false);
            node.set_hosting(true);
            node.set_accepting(true);
        }
        State::Suspended => {
            node.set_accepting(false);
            node.pause_calls(true);
        }
        // (a paused object could not be handed over)
        State::GivingBack | State::Waiting => {
            node.pause_calls(false);
            node.set_accepting(false);
            node.set_hosting(false);
        }
    }
}

fn cannot_tell(s: &Sample) -> Vec<String> {
    let mut v = Vec::new();
    if s.other_cpu_pct.is_none() {
        v.push("the CPU use (/proc/stat unreadable)".to_string());
    }
    if s.user_idle.is_none() {
        v.push("the time since the last input (no terminal or input device readable)".to_string());
    }
    v
}

/// Starts reading `signals` every [`SAMPLE_EVERY`] and applying the states
/// `criteria` decide to `node`, until the node stops. `ours` gives the pids
/// of G2's own processes (their CPU is not the owner's).
pub fn start(
    node: Node,
    criteria: Criteria,
    mut signals: Box<dyn Signals>,
    ours: Arc<dyn Fn() -> Vec<u32> + Send + Sync>,
) -> Arc<Idle> {
    let now = Instant::now();
    let mut m = Machine::new(criteria.clone(), now);
    let idle = Arc::new(Idle {
        status: Mutex::new(IdleStatus {
            run_when: criteria.run_when,
            state: m.state(),
            reason: m.reason().to_string(),
            since_unix_ms: unix_ms(SystemTime::now()),
            signals: Sample::default(),
            cannot_tell: Vec::new(),
        }),
    });
    if criteria.run_when == RunWhen::Always {
        return idle;
    }
    apply(&node, m.state());
    let shared = idle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if node.is_stopped() {
                return;
            }
            let pids = ours();
            // (reading /proc and /dev is quick, but it is file IO)
            let (back, sample) = match tokio::task::spawn_blocking(move || {
                let s = signals.sample(&pids);
                (signals, s)
            })
            .await
            {
                Ok(r) => r,
                Err(_) => return,
            };
            signals = back;
            let minute = (unix_ms(SystemTime::now()) / 60_000 % (24 * 60)) as u32;
            let change = m.step(Instant::now(), minute, &sample, node.running_objects());
            if let Some(c) = &change {
                info!(from = c.from.name(), to = c.to.name(), "idle: {}", c.reason);
                apply(&node, c.to);
            }
            let mut st = lock(&shared.status);
            if change.is_some() {
                st.since_unix_ms = unix_ms(SystemTime::now());
            }
            st.state = m.state();
            st.reason = m.reason().to_string();
            st.cannot_tell = cannot_tell(&sample);
            st.signals = sample;
        }
    });
    idle
}
