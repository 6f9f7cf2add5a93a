//! Pastry routing for G2 (Rowstron & Druschel, Middleware 2001) as a sans-IO
//! implementation of `g2_core::Overlay`.
//!
//! **Not implemented yet.** This crate is a placeholder for issue 3; it exports
//! nothing, so nothing can mistake it for a working overlay.
