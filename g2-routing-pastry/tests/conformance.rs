//! Pastry passes the shared overlay conformance suite (g2-core, feature
//! `conformance`): one root per key (the numerically closest node), routes end
//! there, replica sets are the next closest live nodes, and joins, graceful
//! leaves and silent failures converge to that again.

use std::time::Duration;

use g2_core::conformance::{Params, RootRule, check_factory};
use g2_routing_pastry::PastryConfig;

fn fast() -> PastryConfig {
    PastryConfig {
        heartbeat_period: Duration::from_millis(500),
        failure_timeout: Duration::from_millis(1500),
        request_timeout: Duration::from_millis(500),
        ..PastryConfig::default()
    }
}

#[test]
fn pastry_conforms() {
    for seed in 1..=4 {
        let params = Params {
            seed,
            ..Params::default()
        };
        let report =
            check_factory(fast(), RootRule::Closest, &params).unwrap_or_else(|e| panic!("{e}"));
        sane(&report);
    }
}

/// Without a transport that reports unreachable peers, Pastry's heartbeats
/// must notice failures and departures.
#[test]
fn pastry_conforms_without_unreachable_reports() {
    for seed in 11..=13 {
        let params = Params {
            seed,
            report_unreachable: false,
            ..Params::default()
        };
        let report =
            check_factory(fast(), RootRule::Closest, &params).unwrap_or_else(|e| panic!("{e}"));
        sane(&report);
    }
}

/// Pastry's defaults (ten-second heartbeats) conform too.
#[test]
fn pastry_conforms_with_default_periods() {
    let params = Params {
        seed: 21,
        settle_limit: Duration::from_secs(3600),
        check_every: Duration::from_secs(5),
        ..Params::default()
    };
    let report = check_factory(PastryConfig::default(), RootRule::Closest, &params)
        .unwrap_or_else(|e| panic!("{e}"));
    sane(&report);
}

/// Every phase ran and messages flowed; the time each phase took to converge is
/// printed (`--nocapture`).
fn sane(report: &g2_core::conformance::Report) {
    eprintln!("{report:?}");
    assert_eq!(report.phases.len(), 5, "{report:?}");
    assert!(report.messages > 0, "{report:?}");
}
