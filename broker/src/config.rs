//! The hub configuration file: one serde tree with a JSON Schema, checked before any port is bound.
