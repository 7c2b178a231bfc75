//! The tamper-evident journal: entries, the RFC 9162 Merkle tree over them, signed checkpoints and receipts.
