//! [`PastryConfig`]: Pastry's parameters, and the factory of its nodes.

use std::time::Duration;

use g2_core::Peer;
use g2_core::overlay::{Overlay, OverlayFactory};

use crate::node::PastryNode;

/// Pastry's parameters (paper defaults: b = 4, L = 16, M = 32). The config is its
/// own [`OverlayFactory`]: `Node::builder().overlay(PastryConfig::default())`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PastryConfig {
    /// Bits per digit, `b`: 1, 2, 4 or 8. Routing tables have 128/b rows of 2^b slots.
    pub b: u32,
    /// Leaf set size `L` (even): L/2 nodes on each side.
    pub leaf_set_size: usize,
    /// Neighbourhood set size `M`: the closest nodes by round-trip time.
    pub neighbourhood_size: usize,
    /// How often leaves exchange keep-alives (which carry the leaf set).
    pub heartbeat_period: Duration,
    /// A leaf silent for this long is declared failed.
    pub failure_timeout: Duration,
    /// How long a join, a row request or a probe may go unanswered.
    pub request_timeout: Duration,
    /// Period of routing-table maintenance (one row request per non-empty row,
    /// round-robin over the row's entries); `None` disables it.
    pub maintenance_period: Option<Duration>,
    /// Round-trip probes outstanding at once (proximity neighbour selection).
    pub max_probes: usize,
}

impl Default for PastryConfig {
    fn default() -> Self {
        Self {
            b: 4,
            leaf_set_size: 16,
            neighbourhood_size: 32,
            heartbeat_period: Duration::from_secs(10),
            failure_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(5),
            maintenance_period: Some(Duration::from_secs(60)),
            max_probes: 256,
        }
    }
}

/// A [`PastryConfig`] field out of range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid Pastry configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl PastryConfig {
    /// Checks every field is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if ![1, 2, 4, 8].contains(&self.b) {
            return Err(ConfigError(format!(
                "b = {} (must be 1, 2, 4 or 8)",
                self.b
            )));
        }
        if self.leaf_set_size < 2 || self.leaf_set_size & 1 != 0 || self.leaf_set_size > 256 {
            return Err(ConfigError(format!(
                "leaf set size L = {} (must be even, 2..=256)",
                self.leaf_set_size
            )));
        }
        if self.neighbourhood_size > 1024 {
            return Err(ConfigError(format!(
                "neighbourhood size M = {} (max 1024)",
                self.neighbourhood_size
            )));
        }
        if self.heartbeat_period.is_zero() || self.failure_timeout <= self.heartbeat_period {
            return Err(ConfigError(
                "the failure timeout must exceed a non-zero heartbeat period".into(),
            ));
        }
        if self.request_timeout.is_zero() || self.maintenance_period.is_some_and(|p| p.is_zero()) {
            return Err(ConfigError("timeouts and periods must be non-zero".into()));
        }
        Ok(())
    }

    /// This config if valid, else the default (with a warning): a factory cannot fail.
    pub(crate) fn or_default(self) -> Self {
        match self.validate() {
            Ok(()) => self,
            Err(e) => {
                tracing::warn!(error = %e, "using the default Pastry configuration instead");
                Self::default()
            }
        }
    }
}

impl OverlayFactory for PastryConfig {
    fn build(self: Box<Self>, local: Peer) -> Box<dyn Overlay> {
        Box::new(PastryNode::new(*self, local))
    }

    fn name(&self) -> &'static str {
        "pastry"
    }
}
