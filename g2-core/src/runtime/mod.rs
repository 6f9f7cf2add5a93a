//! The node runtime: object hosting, calls, routing, and the typed builder.

pub(crate) mod builder;
pub(crate) mod context;
pub(crate) mod error;
pub(crate) mod node;
pub(crate) mod object;
#[cfg(test)]
mod tests;
