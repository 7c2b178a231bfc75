//! The tamper-evident journal: every event about every envelope as an [`Entry`], each entry a
//! leaf of an RFC 9162 Merkle tree, the tree's size and root signed by the hub in a
//! [`SignedCheckpoint`], and a [`Receipt`] per accepted envelope that anyone holding the
//! federation CA verifies offline.
//!
//! - [`merkle`]: hashing, the store of complete subtrees (`append`, `root`), inclusion and
//!   consistency proofs and their verification; [`MemoryTree`] for tests and auditors.
//! - [`entry`]: the entry and its one canonical encoding, whose bytes are the leaf.
//! - [`checkpoint`]: the signed checkpoint text and the hub's [`CheckpointSigner`].
//! - [`nodes`]: the Merkle nodes the hub keeps in memory.
//! - [`receipt`]: the receipt the hub returns on acceptance, and its verification.
//! - [`query`]: the secondary indexes of the stored journal and paged queries over them.

pub mod checkpoint;
pub mod entry;
pub mod merkle;
pub mod nodes;
pub mod query;
pub mod receipt;

pub use checkpoint::{
    Checkpoint, CheckpointError, CheckpointSigner, SharedCheckpoint, SignedCheckpoint,
    VerifiedCheckpoint, VerifiedCheckpoints,
};
pub use entry::{Entry, EntryError, EventKind};
pub use merkle::{Hash, MemoryTree, ProofError, TreeError};
pub use receipt::{Receipt, ReceiptError, VerifiedReceipt};
