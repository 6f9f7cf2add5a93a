//! The generic G2 volunteer host (binary `g2`): join through a bootstrap peer,
//! run when idle, download code, leave gracefully.
//!
//! **Not implemented yet.** This crate is a placeholder for issue 5; it exports
//! nothing and builds no binary.
