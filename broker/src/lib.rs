//! The snodo hub: configuration and registry, the journal, and the `snodo` command line; the
//! HTTP API, store, routing and delivery grow here next.

pub mod cli;
pub mod config;
pub mod dev;
pub mod journal;
pub mod registry;
