//! The RFC 9162 Merkle tree over journal entries: hashing, the hub's store of complete
//! subtrees, inclusion and consistency proofs, and their verification.
//!
//! Hashing is that of Certificate Transparency v2 (RFC 9162 §2.1): a leaf hashes as
//! `SHA-256(0x00 || data)`, an interior node as `SHA-256(0x01 || left || right)`, and the tree
//! over `n` leaves splits at the largest power of two smaller than `n`.
//!
//! The hub stores the hash of every *complete* subtree — perfect and aligned — as a node
//! addressed by `(level, index)`: level 0 holds the leaves, and node `(l, k)` covers leaves
//! `[k·2^l, (k+1)·2^l)`. A tree of size `n` therefore holds `⌊n / 2^l⌋` nodes at level `l`, and
//! every hash the RFC's definitions ask for is either such a node or is computed from a few of
//! them. The functions here are pure: they read nodes through a lookup `get(level, index)` that
//! returns `None` when the store lacks a node, which they report as [`TreeError::MissingNode`].

use openssl::sha::Sha256;

/// A SHA-256 hash: of a leaf, of an interior node, or the root of a tree.
pub type Hash = [u8; 32];

/// Hashes a leaf: `SHA-256(0x00 || data)`.
#[must_use]
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(&[0x00]);
    h.update(data);
    h.finish()
}

/// Hashes an interior node: `SHA-256(0x01 || left || right)`.
#[must_use]
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(&[0x01]);
    h.update(left);
    h.update(right);
    h.finish()
}

/// The root of the empty tree: SHA-256 of the empty string.
#[must_use]
pub fn empty_root() -> Hash {
    snodo_envelopes::sha256(b"")
}

/// Why the tree could not compute a root or a proof from its store.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// The store lacks a node the computation needs: it is incomplete or damaged.
    #[error("the journal store lacks the Merkle node at level {level}, index {index}")]
    MissingNode {
        /// Level of the node (0 for leaves).
        level: u32,
        /// Index of the node within its level.
        index: u64,
    },
    /// A leaf index at or beyond the size of the tree.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The leaf index asked for.
        index: u64,
        /// The size of the tree.
        size: u64,
    },
    /// A consistency proof asked from a larger tree to a smaller one.
    #[error("tree size {old_size} is larger than tree size {new_size}")]
    SizesOutOfOrder {
        /// The size of the earlier tree.
        old_size: u64,
        /// The size of the later tree.
        new_size: u64,
    },
    /// A tree size beyond the leaves a [`MemoryTree`] holds.
    #[error("tree size {size} is beyond the {leaves} leaves held")]
    BeyondTree {
        /// The size asked for.
        size: u64,
        /// The number of leaves held.
        leaves: u64,
    },
    /// The tree already holds `u64::MAX` leaves.
    #[error("the tree is full: it cannot hold more than {} leaves", u64::MAX)]
    Full,
}

impl TreeError {
    /// True when the fault lies in the store (a missing node: the hub's fault, a 5xx), false
    /// when the request itself asks for a leaf or a size the tree does not have (a 4xx).
    #[must_use]
    pub fn is_store_fault(&self) -> bool {
        matches!(self, TreeError::MissingNode { .. } | TreeError::Full)
    }
}

/// Why an inclusion or consistency proof does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf index is at or beyond the tree size, so no proof can include it.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The claimed leaf index.
        index: u64,
        /// The claimed tree size.
        size: u64,
    },
    /// The old tree is larger than the new one.
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    SizesOutOfOrder {
        /// The claimed size of the earlier tree.
        old_size: u64,
        /// The claimed size of the later tree.
        new_size: u64,
    },
    /// The proof has the wrong number of hashes for these sizes and index.
    #[error("the proof has {got} hashes where {expected} are needed")]
    WrongLength {
        /// Hashes in the proof.
        got: usize,
        /// Hashes the sizes and index call for.
        expected: usize,
    },
    /// The inclusion proof does not lead from the leaf to the root.
    #[error(
        "the inclusion proof does not lead from the leaf at index {index} to the root of the tree of size {size}"
    )]
    RootMismatch {
        /// The claimed leaf index.
        index: u64,
        /// The claimed tree size.
        size: u64,
    },
    /// The consistency proof does not rebuild the old root.
    #[error("the consistency proof does not rebuild the old root (of the tree of size {old_size})")]
    OldRootMismatch {
        /// The claimed size of the earlier tree.
        old_size: u64,
    },
    /// The consistency proof, from the old root, does not rebuild the new root. (When the old
    /// tree is complete, its root is the first step of the proof, so a wrong old root shows
    /// here.)
    #[error(
        "the consistency proof does not lead from the old root to the new root (of the tree of size {new_size})"
    )]
    NewRootMismatch {
        /// The claimed size of the later tree.
        new_size: u64,
    },
    /// Two trees of the same size with different roots: the log has forked.
    #[error("two trees of size {size} have different roots: the journal has forked")]
    RootsDiffer {
        /// The size of both trees.
        size: u64,
    },
}

/// The largest power of two smaller than `n`, for `n ≥ 2`.
fn split(n: u64) -> u64 {
    1 << (63 - (n.saturating_sub(1) | 1).leading_zeros())
}

/// The hash of leaves `[start, end)`, as the RFC's MTH splits it: a stored node when the range
/// is a complete subtree, else the hash of its two halves.
fn subtree<G: Fn(u32, u64) -> Option<Hash>>(
    start: u64,
    end: u64,
    get: &G,
) -> Result<Hash, TreeError> {
    let n = end.saturating_sub(start);
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() && start.is_multiple_of(n) {
        let level = n.trailing_zeros();
        let index = start >> level;
        return get(level, index).ok_or(TreeError::MissingNode { level, index });
    }
    let k = split(n);
    let left = subtree(start, start + k, get)?;
    let right = subtree(start + k, end, get)?;
    Ok(node_hash(&left, &right))
}

/// The leaf ranges whose hashes make up the inclusion proof of leaf `index` in a tree of
/// `size` leaves, in proof order (RFC 9162 §2.1.3.1 PATH); `index < size`.
fn inclusion_ranges(index: u64, size: u64) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    let (mut start, mut end, mut m) = (0, size, index);
    // PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])  or  PATH(m - k, D[k:n]) : MTH(D[0:k]):
    // walk down from the root, collecting siblings, then put the deepest first.
    while end - start > 1 {
        let k = split(end - start);
        if m < k {
            ranges.push((start + k, end));
            end = start + k;
        } else {
            ranges.push((start, start + k));
            start += k;
            m -= k;
        }
    }
    ranges.reverse();
    ranges
}

/// The leaf ranges whose hashes make up the consistency proof from a tree of `old_size` leaves
/// to one of `new_size`, in proof order (RFC 9162 §2.1.4.1 PROOF); `0 < old_size < new_size`,
/// and empty otherwise.
fn consistency_ranges(old_size: u64, new_size: u64) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    if old_size == 0 || old_size >= new_size {
        return ranges;
    }
    // SUBPROOF(m, D[start:end], known), walked down from the root.
    let (mut start, mut end, mut m, mut known) = (0, new_size, old_size, true);
    loop {
        let n = end - start;
        if m == n {
            if !known {
                ranges.push((start, end));
            }
            break;
        }
        let k = split(n);
        if m <= k {
            ranges.push((start + k, end));
            end = start + k;
        } else {
            ranges.push((start, start + k));
            start += k;
            m -= k;
            known = false;
        }
    }
    ranges.reverse();
    ranges
}

/// The nodes to store when the leaf at index `size` is appended: the leaf itself at level 0,
/// then every subtree it completes, lowest first, as `(level, index, hash)`.
///
/// # Errors
/// [`TreeError::MissingNode`] when `get` lacks a left sibling the new subtrees need;
/// [`TreeError::Full`] when `size` is `u64::MAX`.
pub fn append(
    size: u64,
    leaf: Hash,
    get: impl Fn(u32, u64) -> Option<Hash>,
) -> Result<Vec<(u32, u64, Hash)>, TreeError> {
    if size == u64::MAX {
        return Err(TreeError::Full);
    }
    let mut nodes = vec![(0, size, leaf)];
    let (mut level, mut index, mut hash) = (0u32, size, leaf);
    // A right child completes its parent; the parent may be a right child in turn.
    while index & 1 == 1 {
        let left = get(level, index - 1).ok_or(TreeError::MissingNode {
            level,
            index: index - 1,
        })?;
        hash = node_hash(&left, &hash);
        level += 1;
        index >>= 1;
        nodes.push((level, index, hash));
    }
    Ok(nodes)
}

/// The root of the tree of the first `size` leaves (the RFC's MTH).
///
/// # Errors
/// [`TreeError::MissingNode`] when the store lacks a node.
pub fn root(size: u64, get: impl Fn(u32, u64) -> Option<Hash>) -> Result<Hash, TreeError> {
    subtree(0, size, &get)
}

/// The inclusion proof of leaf `index` in the tree of the first `size` leaves (RFC 9162
/// §2.1.3.1), deepest sibling first.
///
/// # Errors
/// [`TreeError::IndexOutOfRange`] when `index >= size`; [`TreeError::MissingNode`] when the
/// store lacks a node.
pub fn inclusion_proof(
    index: u64,
    size: u64,
    get: impl Fn(u32, u64) -> Option<Hash>,
) -> Result<Vec<Hash>, TreeError> {
    if index >= size {
        return Err(TreeError::IndexOutOfRange { index, size });
    }
    inclusion_ranges(index, size)
        .into_iter()
        .map(|(s, e)| subtree(s, e, &get))
        .collect()
}

/// The consistency proof between the trees of the first `old_size` and `new_size` leaves
/// (RFC 9162 §2.1.4.1); empty when `old_size` is 0 or equals `new_size`.
///
/// # Errors
/// [`TreeError::SizesOutOfOrder`] when `old_size > new_size`; [`TreeError::MissingNode`] when
/// the store lacks a node.
pub fn consistency_proof(
    old_size: u64,
    new_size: u64,
    get: impl Fn(u32, u64) -> Option<Hash>,
) -> Result<Vec<Hash>, TreeError> {
    if old_size > new_size {
        return Err(TreeError::SizesOutOfOrder { old_size, new_size });
    }
    consistency_ranges(old_size, new_size)
        .into_iter()
        .map(|(s, e)| subtree(s, e, &get))
        .collect()
}

/// Verifies that `proof` includes the leaf hashed as `leaf_hash` at `index` in the tree of
/// `size` leaves whose root is `root`, by the algorithm of RFC 9162 §2.1.3.2.
///
/// The proof binds the leaf to the root; it does not bind `size` to `root` — that is what the
/// signed checkpoint carrying both is for.
///
/// # Errors
/// [`ProofError::IndexOutOfRange`], [`ProofError::WrongLength`] or
/// [`ProofError::RootMismatch`].
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let wrong_length = || ProofError::WrongLength {
        got: proof.len(),
        expected: inclusion_ranges(index, size).len(),
    };
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if s == 0 {
            return Err(wrong_length());
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(wrong_length());
    }
    if r != *root {
        return Err(ProofError::RootMismatch { index, size });
    }
    Ok(())
}

/// Verifies that `proof` shows the tree of `old_size` leaves with root `old_root` to be a
/// prefix of the tree of `new_size` leaves with root `new_root`, by the algorithm of RFC 9162
/// §2.1.4.2.
///
/// Outside the RFC's `0 < old_size < new_size`: equal sizes need an empty proof and equal
/// roots; the empty tree (whose root must be [`empty_root`]) is a prefix of every tree.
///
/// # Errors
/// [`ProofError::SizesOutOfOrder`], [`ProofError::WrongLength`],
/// [`ProofError::OldRootMismatch`], [`ProofError::NewRootMismatch`] or
/// [`ProofError::RootsDiffer`].
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizesOutOfOrder { old_size, new_size });
    }
    let wrong_length = || ProofError::WrongLength {
        got: proof.len(),
        expected: consistency_ranges(old_size, new_size).len(),
    };
    if old_size == new_size || old_size == 0 {
        if !proof.is_empty() {
            return Err(wrong_length());
        }
        if old_size == 0 && *old_root != empty_root() {
            return Err(ProofError::OldRootMismatch { old_size });
        }
        if old_size == new_size && old_root != new_root {
            return Err(ProofError::RootsDiffer { size: old_size });
        }
        return Ok(());
    }
    // 1. An empty proof fails.
    let Some((first, rest)) = proof.split_first() else {
        return Err(wrong_length());
    };
    // 2. When the old tree is complete, its root is the first element of the path.
    let (seed, path) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        (first, rest)
    };
    // 3.–4.
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    // 5.
    let (mut fr, mut sr) = (*seed, *seed);
    // 6.
    for c in path {
        if s == 0 {
            return Err(wrong_length());
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    // 7.
    if s != 0 {
        return Err(wrong_length());
    }
    if fr != *old_root {
        return Err(ProofError::OldRootMismatch { old_size });
    }
    if sr != *new_root {
        return Err(ProofError::NewRootMismatch { new_size });
    }
    Ok(())
}

/// A Merkle tree held in memory, level by level: for tests, and for auditors who rebuild the
/// tree of an export offline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryTree {
    /// `levels[l][k]` is node `(l, k)`; level 0 holds the leaf hashes.
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// An empty tree.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree of these leaf hashes, in order.
    ///
    /// # Errors
    /// [`TreeError::Full`] past `u64::MAX` leaves.
    pub fn from_leaves(leaves: impl IntoIterator<Item = Hash>) -> Result<Self, TreeError> {
        let mut tree = Self::new();
        for leaf in leaves {
            tree.push(leaf)?;
        }
        Ok(tree)
    }

    /// The number of leaves.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Node `(level, index)`, if the tree holds it.
    #[must_use]
    pub fn get(&self, level: u32, index: u64) -> Option<Hash> {
        let level = self.levels.get(usize::try_from(level).ok()?)?;
        level.get(usize::try_from(index).ok()?).copied()
    }

    /// Appends a leaf hash; returns its index.
    ///
    /// # Errors
    /// [`TreeError::Full`] past `u64::MAX` leaves.
    pub fn push(&mut self, leaf: Hash) -> Result<u64, TreeError> {
        let index = self.size();
        let nodes = append(index, leaf, |l, k| self.get(l, k))?;
        for (level, _, hash) in nodes {
            // `append` yields nodes in index order within each level, so each lands at the end.
            let level = level as usize;
            if self.levels.len() <= level {
                self.levels.resize_with(level + 1, Vec::new);
            }
            if let Some(nodes) = self.levels.get_mut(level) {
                nodes.push(hash);
            }
        }
        Ok(index)
    }

    /// The root of the whole tree.
    ///
    /// # Errors
    /// None in practice: a tree built by [`MemoryTree::push`] holds every node.
    pub fn root(&self) -> Result<Hash, TreeError> {
        self.root_at(self.size())
    }

    /// The root of the tree of the first `size` leaves.
    ///
    /// # Errors
    /// [`TreeError::BeyondTree`] when `size` exceeds the leaves held.
    pub fn root_at(&self, size: u64) -> Result<Hash, TreeError> {
        self.check_size(size)?;
        root(size, |l, k| self.get(l, k))
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size` leaves.
    ///
    /// # Errors
    /// [`TreeError::BeyondTree`] or [`TreeError::IndexOutOfRange`].
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, TreeError> {
        self.check_size(size)?;
        inclusion_proof(index, size, |l, k| self.get(l, k))
    }

    /// The consistency proof between the trees of the first `old_size` and `new_size` leaves.
    ///
    /// # Errors
    /// [`TreeError::BeyondTree`] or [`TreeError::SizesOutOfOrder`].
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, TreeError> {
        self.check_size(new_size)?;
        consistency_proof(old_size, new_size, |l, k| self.get(l, k))
    }

    fn check_size(&self, size: u64) -> Result<(), TreeError> {
        let leaves = self.size();
        if size > leaves {
            return Err(TreeError::BeyondTree { size, leaves });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(hex: &str) -> Hash {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex, &mut out).unwrap();
        out
    }

    fn sha(parts: &[&[u8]]) -> Hash {
        openssl::sha::sha256(&parts.concat())
    }

    /// MTH straight from the RFC's recursive definition, over leaf hashes.
    fn naive_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => sha(&[]),
            1 => leaves[0],
            n => {
                let k = naive_k(n);
                node_hash(&naive_root(&leaves[..k]), &naive_root(&leaves[k..]))
            }
        }
    }

    fn naive_k(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    /// PATH straight from RFC 9162 §2.1.3.1.
    fn naive_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        let n = leaves.len();
        if n == 1 {
            return vec![];
        }
        let k = naive_k(n);
        if m < k {
            let mut p = naive_path(m, &leaves[..k]);
            p.push(naive_root(&leaves[k..]));
            p
        } else {
            let mut p = naive_path(m - k, &leaves[k..]);
            p.push(naive_root(&leaves[..k]));
            p
        }
    }

    /// SUBPROOF straight from RFC 9162 §2.1.4.1.
    fn naive_subproof(m: usize, leaves: &[Hash], known: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if known {
                vec![]
            } else {
                vec![naive_root(leaves)]
            };
        }
        let k = naive_k(n);
        if m <= k {
            let mut p = naive_subproof(m, &leaves[..k], known);
            p.push(naive_root(&leaves[k..]));
            p
        } else {
            let mut p = naive_subproof(m - k, &leaves[k..], false);
            p.push(naive_root(&leaves[..k]));
            p
        }
    }

    /// Distinct leaves: a duplicate leaf could honestly sit at two indexes.
    fn leaves(n: usize, seed: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("{seed}/{i}").as_bytes()))
            .collect()
    }

    fn flip(mut hash: Hash, bit: usize) -> Hash {
        hash[(bit / 8) % 32] ^= 1 << (bit % 8);
        hash
    }

    /// The reference inputs of RFC 6962's test suite (the CT project's merkle_tree_test).
    const CT_INPUTS: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    /// Their roots for sizes 0 to 8.
    const CT_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn ct_tree() -> MemoryTree {
        MemoryTree::from_leaves(
            CT_INPUTS
                .iter()
                .map(|d| leaf_hash(&hex::decode(d).unwrap())),
        )
        .unwrap()
    }

    #[test]
    fn hashes_are_domain_separated_sha256() {
        assert_eq!(empty_root(), h(CT_ROOTS[0]));
        assert_eq!(leaf_hash(b""), h(CT_ROOTS[1]));
        assert_eq!(leaf_hash(b"abc"), sha(&[&[0], b"abc"]));
        let (l, r) = ([1u8; 32], [2u8; 32]);
        assert_eq!(node_hash(&l, &r), sha(&[&[1], &l, &r]));
    }

    #[test]
    fn three_leaves_by_hand() {
        let (a, b, c) = (sha(&[&[0], b"a"]), sha(&[&[0], b"b"]), sha(&[&[0], b"c"]));
        let ab = sha(&[&[1], &a, &b]);
        let abc = sha(&[&[1], &ab, &c]);
        let tree = MemoryTree::from_leaves([a, b, c]).unwrap();
        assert_eq!(tree.root().unwrap(), abc);
        assert_eq!(tree.get(1, 0), Some(ab), "the complete pair is stored");
        assert_eq!(
            tree.get(1, 1),
            None,
            "the lone third leaf completes nothing"
        );
        assert_eq!(tree.inclusion_proof(0, 3).unwrap(), vec![b, c]);
        assert_eq!(tree.inclusion_proof(1, 3).unwrap(), vec![a, c]);
        assert_eq!(tree.inclusion_proof(2, 3).unwrap(), vec![ab]);
        assert_eq!(tree.consistency_proof(1, 3).unwrap(), vec![b, c]);
        assert_eq!(tree.consistency_proof(2, 3).unwrap(), vec![c]);
        for (i, leaf) in [a, b, c].iter().enumerate() {
            let proof = tree.inclusion_proof(i as u64, 3).unwrap();
            verify_inclusion(leaf, i as u64, 3, &proof, &abc).unwrap();
        }
        verify_consistency(1, 3, &a, &abc, &[b, c]).unwrap();
        verify_consistency(2, 3, &ab, &abc, &[c]).unwrap();
    }

    #[test]
    fn rfc6962_reference_roots() {
        let tree = ct_tree();
        for (size, want) in CT_ROOTS.iter().enumerate() {
            assert_eq!(
                tree.root_at(size as u64).unwrap(),
                h(want),
                "root of size {size}"
            );
        }
    }

    #[test]
    fn rfc6962_reference_inclusion_proofs() {
        let tree = ct_tree();
        let vectors: [(u64, u64, &[&str]); 4] = [
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (index, size, want) in vectors {
            let proof = tree.inclusion_proof(index, size).unwrap();
            assert_eq!(
                proof,
                want.iter().map(|x| h(x)).collect::<Vec<_>>(),
                "PATH({index}, {size})"
            );
            let leaf = tree.get(0, index).unwrap();
            verify_inclusion(&leaf, index, size, &proof, &h(CT_ROOTS[size as usize])).unwrap();
        }
    }

    #[test]
    fn rfc6962_reference_consistency_proofs() {
        let tree = ct_tree();
        let vectors: [(u64, u64, &[&str]); 4] = [
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (old, new, want) in vectors {
            let proof = tree.consistency_proof(old, new).unwrap();
            assert_eq!(
                proof,
                want.iter().map(|x| h(x)).collect::<Vec<_>>(),
                "PROOF({old}, {new})"
            );
            verify_consistency(
                old,
                new,
                &h(CT_ROOTS[old as usize]),
                &h(CT_ROOTS[new as usize]),
                &proof,
            )
            .unwrap();
        }
    }

    #[test]
    fn append_stores_the_leaf_and_every_subtree_it_completes() {
        let mut tree = MemoryTree::new();
        for leaf in leaves(7, 1) {
            tree.push(leaf).unwrap();
        }
        let nodes = append(7, leaf_hash(b"eighth"), |l, k| tree.get(l, k)).unwrap();
        let levels: Vec<(u32, u64)> = nodes.iter().map(|&(l, k, _)| (l, k)).collect();
        assert_eq!(levels, vec![(0, 7), (1, 3), (2, 1), (3, 0)]);
        assert_eq!(
            append(8, [0; 32], |_, _| None).unwrap().len(),
            1,
            "an even index completes nothing"
        );
    }

    #[test]
    fn a_store_missing_a_node_is_an_error_not_a_panic() {
        let tree = MemoryTree::from_leaves(leaves(13, 2)).unwrap();
        let holey = |l: u32, k: u64| {
            if (l, k) == (2, 2) {
                None
            } else {
                tree.get(l, k)
            }
        };
        let missing = TreeError::MissingNode { level: 2, index: 2 };
        assert_eq!(root(13, holey), Err(missing.clone()));
        assert_eq!(inclusion_proof(0, 13, holey), Err(missing.clone()));
        assert_eq!(consistency_proof(3, 13, holey), Err(missing.clone()));
        assert_eq!(
            append(13, [0; 32], |_, _| None),
            Err(TreeError::MissingNode {
                level: 0,
                index: 12
            })
        );
        assert!(missing.is_store_fault());
        assert_eq!(
            missing.to_string(),
            "the journal store lacks the Merkle node at level 2, index 2"
        );
    }

    #[test]
    fn out_of_range_requests_are_refused() {
        let tree = MemoryTree::from_leaves(leaves(5, 3)).unwrap();
        assert_eq!(
            tree.inclusion_proof(5, 5),
            Err(TreeError::IndexOutOfRange { index: 5, size: 5 })
        );
        assert_eq!(
            tree.inclusion_proof(0, 6),
            Err(TreeError::BeyondTree { size: 6, leaves: 5 })
        );
        assert_eq!(
            tree.consistency_proof(4, 3),
            Err(TreeError::SizesOutOfOrder {
                old_size: 4,
                new_size: 3
            })
        );
        assert_eq!(
            tree.root_at(9),
            Err(TreeError::BeyondTree { size: 9, leaves: 5 })
        );
        assert_eq!(append(u64::MAX, [0; 32], |_, _| None), Err(TreeError::Full));
        assert!(!TreeError::IndexOutOfRange { index: 5, size: 5 }.is_store_fault());
        assert_eq!(MemoryTree::new().root(), Ok(empty_root()));
        assert_eq!(tree.consistency_proof(0, 5), Ok(vec![]));
        assert_eq!(tree.consistency_proof(5, 5), Ok(vec![]));
    }

    #[test]
    fn proofs_match_the_rfc_definitions_for_every_small_tree() {
        let all = leaves(70, 4);
        let tree = MemoryTree::from_leaves(all.iter().copied()).unwrap();
        for n in 1..=all.len() {
            let root = tree.root_at(n as u64).unwrap();
            assert_eq!(root, naive_root(&all[..n]));
            for i in 0..n {
                let proof = tree.inclusion_proof(i as u64, n as u64).unwrap();
                assert_eq!(proof, naive_path(i, &all[..n]), "PATH({i}, {n})");
                verify_inclusion(&all[i], i as u64, n as u64, &proof, &root).unwrap();
            }
            for m in 0..=n {
                let proof = tree.consistency_proof(m as u64, n as u64).unwrap();
                let want = if m == 0 || m == n {
                    vec![]
                } else {
                    naive_subproof(m, &all[..n], true)
                };
                assert_eq!(proof, want, "PROOF({m}, {n})");
                let old = tree.root_at(m as u64).unwrap();
                verify_consistency(m as u64, n as u64, &old, &root, &proof).unwrap();
            }
        }
    }

    #[test]
    fn verification_names_what_failed() {
        let tree = MemoryTree::from_leaves(leaves(6, 5)).unwrap();
        let root = tree.root().unwrap();
        let leaf = tree.get(0, 2).unwrap();
        let proof = tree.inclusion_proof(2, 6).unwrap();
        assert_eq!(
            verify_inclusion(&leaf, 6, 6, &proof, &root),
            Err(ProofError::IndexOutOfRange { index: 6, size: 6 })
        );
        assert_eq!(
            verify_inclusion(&leaf, 2, 6, &proof[..2], &root),
            Err(ProofError::WrongLength {
                got: 2,
                expected: 3
            })
        );
        let mut long = proof.clone();
        long.push([0; 32]);
        assert_eq!(
            verify_inclusion(&leaf, 2, 6, &long, &root),
            Err(ProofError::WrongLength {
                got: 4,
                expected: 3
            })
        );
        let err = verify_inclusion(&flip(leaf, 0), 2, 6, &proof, &root).unwrap_err();
        assert_eq!(err, ProofError::RootMismatch { index: 2, size: 6 });
        assert_eq!(
            err.to_string(),
            "the inclusion proof does not lead from the leaf at index 2 to the root of the tree of size 6"
        );

        let old = tree.root_at(4).unwrap();
        let proof = tree.consistency_proof(4, 6).unwrap();
        assert_eq!(
            verify_consistency(6, 4, &old, &root, &proof),
            Err(ProofError::SizesOutOfOrder {
                old_size: 6,
                new_size: 4
            })
        );
        assert_eq!(
            verify_consistency(4, 6, &old, &root, &[]),
            Err(ProofError::WrongLength {
                got: 0,
                expected: 1
            })
        );
        // The root of a complete old tree is the first step of the path...
        assert_eq!(
            verify_consistency(4, 6, &flip(old, 3), &root, &proof),
            Err(ProofError::NewRootMismatch { new_size: 6 })
        );
        // ...that of an incomplete one is rebuilt from the proof.
        let old3 = tree.root_at(3).unwrap();
        let proof3 = tree.consistency_proof(3, 6).unwrap();
        assert_eq!(verify_consistency(3, 6, &old3, &root, &proof3), Ok(()));
        assert_eq!(
            verify_consistency(3, 6, &flip(old3, 3), &root, &proof3),
            Err(ProofError::OldRootMismatch { old_size: 3 })
        );
        assert_eq!(
            verify_consistency(4, 6, &old, &flip(root, 3), &proof),
            Err(ProofError::NewRootMismatch { new_size: 6 })
        );
        assert_eq!(verify_consistency(6, 6, &root, &root, &[]), Ok(()));
        assert_eq!(
            verify_consistency(6, 6, &old, &root, &[]),
            Err(ProofError::RootsDiffer { size: 6 })
        );
        assert_eq!(
            verify_consistency(6, 6, &root, &root, &proof),
            Err(ProofError::WrongLength {
                got: 1,
                expected: 0
            })
        );
        assert_eq!(verify_consistency(0, 6, &empty_root(), &root, &[]), Ok(()));
        assert_eq!(
            verify_consistency(0, 6, &old, &root, &[]),
            Err(ProofError::OldRootMismatch { old_size: 0 })
        );
    }

    /// Regression guard for a property a reader may expect and RFC 9162 does not give: an
    /// inclusion proof binds the leaf to the root, not the size to the root. The size is bound
    /// by the signed checkpoint, which is why receipts carry one.
    #[test]
    fn an_inclusion_proof_alone_does_not_bind_the_size() {
        let tree = MemoryTree::from_leaves(leaves(4, 6)).unwrap();
        let root4 = tree.root().unwrap();
        let proof = tree.inclusion_proof(0, 4).unwrap();
        let leaf = tree.get(0, 0).unwrap();
        // Leaf 0 has the same path shape in trees of 3 and 4 leaves.
        assert_eq!(verify_inclusion(&leaf, 0, 3, &proof, &root4), Ok(()));
        // With the true root of the tree of 3 leaves, as a checkpoint would pair them, it fails.
        let root3 = tree.root_at(3).unwrap();
        assert!(verify_inclusion(&leaf, 0, 3, &proof, &root3).is_err());
    }

    proptest! {
        #[test]
        fn root_is_the_rfc_mth(n in 0usize..3000, seed: u64, cut in 0usize..3000) {
            let all = leaves(n, seed);
            let tree = MemoryTree::from_leaves(all.iter().copied()).unwrap();
            prop_assert_eq!(tree.size(), n as u64);
            prop_assert_eq!(tree.root().unwrap(), naive_root(&all));
            let m = cut.min(n);
            prop_assert_eq!(tree.root_at(m as u64).unwrap(), naive_root(&all[..m]));
        }

        #[test]
        fn inclusion_proofs_verify_and_nothing_altered_does(
            n in 1usize..3000, seed: u64, pick: prop::sample::Index, other: prop::sample::Index,
            bit in 0usize..256,
        ) {
            let all = leaves(n, seed);
            let tree = MemoryTree::from_leaves(all.iter().copied()).unwrap();
            let (size, i) = (n as u64, pick.index(n) as u64);
            let root = tree.root().unwrap();
            let proof = tree.inclusion_proof(i, size).unwrap();
            let leaf = all[i as usize];
            prop_assert_eq!(verify_inclusion(&leaf, i, size, &proof, &root), Ok(()));

            prop_assert!(verify_inclusion(&flip(leaf, bit), i, size, &proof, &root).is_err());
            prop_assert!(verify_inclusion(&leaf, i, size, &proof, &flip(root, bit)).is_err());
            let j = other.index(n) as u64;
            if j != i {
                prop_assert!(verify_inclusion(&leaf, j, size, &proof, &root).is_err(), "index {} for {}", j, i);
            }
            // Another size, with that tree's own root, as a checkpoint would pair them.
            let s = (other.index(n) as u64 + 1).max(i + 1);
            if s != size {
                let root_s = tree.root_at(s).unwrap();
                prop_assert!(verify_inclusion(&leaf, i, s, &proof, &root_s).is_err(), "size {} for {}", s, size);
            }
            for k in 0..proof.len() {
                let mut bad = proof.clone();
                bad[k] = flip(bad[k], bit);
                prop_assert!(verify_inclusion(&leaf, i, size, &bad, &root).is_err(), "element {}", k);
            }
            let mut short = proof.clone();
            if short.pop().is_some() {
                prop_assert!(verify_inclusion(&leaf, i, size, &short, &root).is_err());
            }
            let mut long = proof.clone();
            long.push(root);
            prop_assert!(verify_inclusion(&leaf, i, size, &long, &root).is_err());
        }

        #[test]
        fn consistency_proofs_verify_and_nothing_altered_does(
            n in 1usize..3000, seed: u64, pick: prop::sample::Index, other: prop::sample::Index,
            bit in 0usize..256,
        ) {
            let all = leaves(n, seed);
            let tree = MemoryTree::from_leaves(all.iter().copied()).unwrap();
            let new = n as u64;
            let old = pick.index(n + 1) as u64;
            let (old_root, new_root) = (tree.root_at(old).unwrap(), tree.root().unwrap());
            let proof = tree.consistency_proof(old, new).unwrap();
            prop_assert_eq!(verify_consistency(old, new, &old_root, &new_root, &proof), Ok(()));

            if old != 0 {
                prop_assert!(verify_consistency(old, new, &flip(old_root, bit), &new_root, &proof).is_err());
            }
            if old != 0 && old != new {
                prop_assert!(verify_consistency(old, new, &old_root, &flip(new_root, bit), &proof).is_err());
            }
            // Another old size, with that tree's own root.
            // (An empty proof honestly links the empty tree, or a tree to itself, to the new one.)
            let o = other.index(n + 1) as u64;
            if o != old && !(proof.is_empty() && (o == 0 || o == new)) {
                let root_o = tree.root_at(o).unwrap();
                prop_assert!(verify_consistency(o, new, &root_o, &new_root, &proof).is_err(), "old size {} for {}", o, old);
            }
            // Another new size, with that tree's own root.
            let s = (other.index(n) as u64 + 1).max(old);
            if s != new && !proof.is_empty() {
                let root_s = tree.root_at(s).unwrap();
                prop_assert!(verify_consistency(old, s, &old_root, &root_s, &proof).is_err(), "new size {} for {}", s, new);
            }
            for k in 0..proof.len() {
                let mut bad = proof.clone();
                bad[k] = flip(bad[k], bit);
                prop_assert!(verify_consistency(old, new, &old_root, &new_root, &bad).is_err(), "element {}", k);
            }
            let mut short = proof.clone();
            if short.pop().is_some() {
                prop_assert!(verify_consistency(old, new, &old_root, &new_root, &short).is_err());
            }
            let mut long = proof.clone();
            long.push(new_root);
            prop_assert!(verify_consistency(old, new, &old_root, &new_root, &long).is_err());
        }
    }
}
