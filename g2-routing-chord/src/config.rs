//! [`ChordConfig`]: Chord's parameters, and the factory of its nodes.

use std::time::Duration;

use g2_core::Peer;
use g2_core::overlay::{Overlay, OverlayFactory};

use crate::node::ChordNode;

/// Chord's parameters. The config is its own [`OverlayFactory`]:
/// `Node::builder().overlay(ChordConfig::default())`.
///
/// The defaults suit the runtime (stabilise every second); the paper's
/// experiments stabilise every 30 s on average, see [`ChordConfig::paper`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChordConfig {
    /// Length `r` of the successor list (the paper suggests `r = Ω(log N)`).
    pub successor_list_len: usize,
    /// Period of `stabilize`: ask the successor for its predecessor and
    /// successor list, and notify it of this node.
    pub stabilize_period: Duration,
    /// Period of `fix_fingers`: one finger lookup per period, round-robin over
    /// the distinct fingers.
    pub fix_fingers_period: Duration,
    /// Period of `check_predecessor`: a ping to the predecessor.
    pub check_predecessor_period: Duration,
    /// How long a stabilize, a ping or a lookup may go unanswered: a successor
    /// or predecessor silent this long is declared failed.
    pub request_timeout: Duration,
}

impl Default for ChordConfig {
    fn default() -> Self {
        Self {
            successor_list_len: 16,
            stabilize_period: Duration::from_secs(1),
            fix_fingers_period: Duration::from_secs(1),
            check_predecessor_period: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
        }
    }
}

/// A [`ChordConfig`] field out of range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid Chord configuration: {0}")]
pub struct ConfigError(pub String);

impl ChordConfig {
    /// The set-up of the paper's experiments (section 6): stabilisation and
    /// finger repair every 30 s.
    pub fn paper() -> Self {
        Self {
            stabilize_period: Duration::from_secs(30),
            fix_fingers_period: Duration::from_secs(30),
            check_predecessor_period: Duration::from_secs(30),
            request_timeout: Duration::from_secs(5),
            ..Self::default()
        }
    }

    /// Checks every field is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.successor_list_len == 0 || self.successor_list_len > 256 {
            return Err(ConfigError(format!(
                "successor list length r = {} (must be 1..=256)",
                self.successor_list_len
            )));
        }
        if self.stabilize_period.is_zero()
            || self.fix_fingers_period.is_zero()
            || self.check_predecessor_period.is_zero()
            || self.request_timeout.is_zero()
        {
            return Err(ConfigError("periods and timeouts must be non-zero".into()));
        }
        Ok(())
    }

    /// This config if valid, else the default (with a warning): a factory cannot fail.
    pub(crate) fn or_default(self) -> Self {
        match self.validate() {
            Ok(()) => self,
            Err(e) => {
                tracing::warn!(error = %e, "using the default Chord configuration instead");
                Self::default()
            }
        }
    }
}

impl OverlayFactory for ChordConfig {
    fn build(self: Box<Self>, local: Peer) -> Box<dyn Overlay> {
        Box::new(ChordNode::new(*self, local))
    }

    fn name(&self) -> &'static str {
        "chord"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_the_paper_set_up_are_valid() {
        assert_eq!(ChordConfig::default().validate(), Ok(()));
        assert_eq!(ChordConfig::paper().validate(), Ok(()));
        let bad = ChordConfig {
            successor_list_len: 0,
            ..ChordConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = ChordConfig {
            request_timeout: Duration::ZERO,
            ..ChordConfig::default()
        };
        assert!(bad.validate().is_err());
        assert_eq!(bad.or_default(), ChordConfig::default());
    }

    #[test]
    fn the_factory_is_named_chord() {
        let f: Box<dyn OverlayFactory> = Box::new(ChordConfig::default());
        assert_eq!(f.name(), "chord");
    }
}
