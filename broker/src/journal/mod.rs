//! The tamper-evident journal: entries, the RFC 9162 Merkle tree over them, signed checkpoints and receipts.

pub mod merkle;

pub use merkle::{Hash, MemoryTree, ProofError, TreeError};
