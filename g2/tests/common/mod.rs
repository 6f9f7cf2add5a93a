//! The in-process test network ([`g2::testing::TestNet`]) and a macro that
//! runs a test body once per overlay.

#![allow(dead_code)]

#[allow(unused_imports)] // (each test binary uses some of them)
pub use g2::testing::{Routing, TestNet, chord_for_tests, logs, pastry_for_tests};

/// Runs a test body once per overlay.
#[macro_export]
macro_rules! on_both_overlays {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn test_support_overlay() {
                    super::$name($crate::common::Routing::TestSupport).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn pastry() {
                    super::$name($crate::common::Routing::Pastry).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn chord() {
                    super::$name($crate::common::Routing::Chord).await
                }
            }
        )*
    };
}
