//! The tamper-evident journal: entries, the RFC 9162 Merkle tree over them, signed checkpoints and receipts.

pub mod checkpoint;
pub mod entry;
pub mod merkle;
pub mod receipt;

pub use checkpoint::{
    Checkpoint, CheckpointError, CheckpointSigner, SignedCheckpoint, VerifiedCheckpoint,
};
pub use entry::{Entry, EntryError, EventKind};
pub use merkle::{Hash, MemoryTree, ProofError, TreeError};
pub use receipt::{Receipt, ReceiptError, VerifiedReceipt};
