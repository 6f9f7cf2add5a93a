//! Chord routing for G2 (Stoica et al., SIGCOMM 2001) as a sans-IO
//! implementation of `g2_core::Overlay`.
//!
//! **Not implemented yet.** This crate is a placeholder for issue 4; it exports
//! nothing.
