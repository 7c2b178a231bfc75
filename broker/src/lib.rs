//! The snodo hub: for now the `snodo` command line (PKI and envelopes); the hub itself (HTTP
//! API, registry, routing, store, delivery, journal, transports) grows here next.

pub mod cli;
