//! The snodo hub: configuration and registry, the HTTP API over TLS with client certificates,
//! the acceptance pipeline, the engine that journals, stores and queues, the journal itself,
//! and the `snodo` command line.

pub mod amqp;
pub mod api;
pub mod audit;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod dev;
pub mod engine;
pub mod hub;
pub mod journal;
pub mod limits;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod store;
pub mod tls;
pub mod validate;
