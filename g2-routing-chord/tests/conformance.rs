//! Chord passes the shared overlay conformance suite (g2-core, feature
//! `conformance`): one root per key (its successor), routes end there, replica
//! sets are the next live nodes clockwise, and joins, graceful leaves and silent
//! failures converge to that again.

use std::time::Duration;

use g2_core::conformance::{Params, RootRule, check_factory};
use g2_routing_chord::ChordConfig;

fn fast() -> ChordConfig {
    ChordConfig {
        successor_list_len: 8,
        stabilize_period: Duration::from_millis(500),
        fix_fingers_period: Duration::from_millis(250),
        check_predecessor_period: Duration::from_millis(500),
        request_timeout: Duration::from_millis(400),
    }
}

#[test]
fn chord_conforms() {
    for seed in 1..=4 {
        let params = Params {
            seed,
            ..Params::default()
        };
        let report =
            check_factory(fast(), RootRule::Successor, &params).unwrap_or_else(|e| panic!("{e}"));
        sane(&report);
    }
}

/// Without a transport that reports unreachable peers, Chord's own timeouts
/// (stabilize, check_predecessor) must notice failures and departures.
#[test]
fn chord_conforms_without_unreachable_reports() {
    for seed in 11..=13 {
        let params = Params {
            seed,
            report_unreachable: false,
            ..Params::default()
        };
        let report =
            check_factory(fast(), RootRule::Successor, &params).unwrap_or_else(|e| panic!("{e}"));
        sane(&report);
    }
}

/// The runtime's defaults and the paper's 30-second set-up conform too.
#[test]
fn chord_conforms_with_default_and_paper_periods() {
    for cfg in [ChordConfig::default(), ChordConfig::paper()] {
        let params = Params {
            seed: 21,
            settle_limit: Duration::from_secs(3600),
            check_every: cfg.stabilize_period,
            ..Params::default()
        };
        let report =
            check_factory(cfg, RootRule::Successor, &params).unwrap_or_else(|e| panic!("{e}"));
        sane(&report);
    }
}

/// Every phase ran and messages flowed; the time each phase took to converge is
/// printed (`--nocapture`).
fn sane(report: &g2_core::conformance::Report) {
    eprintln!("{report:?}");
    assert_eq!(report.phases.len(), 5, "{report:?}");
    assert!(report.messages > 0, "{report:?}");
}
