//! Merkle nodes kept in memory: those the latest group commits wrote and those read lately (the
//! tree's left edge above all), so that appending an entry, computing a root and building a
//! receipt's inclusion proof read the store only for nodes nobody used lately.

use std::collections::HashMap;
use std::sync::Mutex;

use super::merkle::Hash;
use crate::store::{Store, keys};

/// A Merkle node as the store holds it; none when it is missing or not a hash.
pub fn stored_node(store: &dyn Store, level: u32, index: u64) -> Option<Hash> {
    store
        .get(&keys::node(level, index))
        .ok()
        .flatten()
        .and_then(|v| v.try_into().ok())
}

/// How many nodes one generation holds before it becomes the old one (two generations at
/// most, some 3 MiB in all): the nodes of the last few thousand entries, and the tree's edges.
const GENERATION: usize = 16 * 1024;

/// A bounded cache of Merkle nodes by (level, index), shared by the writer and the tasks
/// building receipts. It holds only nodes already durable in the store, so a miss is never
/// an error: the caller reads the store.
#[derive(Debug, Default)]
pub struct NodeCache {
    generations: Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    current: HashMap<(u32, u64), Hash>,
    previous: HashMap<(u32, u64), Hash>,
}

impl Generations {
    fn insert(&mut self, key: (u32, u64), hash: Hash) {
        if self.current.len() >= GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, hash);
    }
}

impl NodeCache {
    /// The node at `level`, `index` when it is kept; a node of the old generation found here
    /// moves to the current one (nodes in use stay).
    pub fn get(&self, level: u32, index: u64) -> Option<Hash> {
        let mut g = self.generations.lock().ok()?;
        if let Some(h) = g.current.get(&(level, index)) {
            return Some(*h);
        }
        let h = g.previous.remove(&(level, index))?;
        g.insert((level, index), h);
        Some(h)
    }

    /// Keeps nodes that are durable in the store.
    pub fn extend(&self, nodes: impl IntoIterator<Item = (u32, u64, Hash)>) {
        if let Ok(mut g) = self.generations.lock() {
            for (level, index, hash) in nodes {
                g.insert((level, index), hash);
            }
        }
    }

    /// The node at `level`, `index`: from memory, else from `read` (the store), kept then.
    pub fn get_or_read(
        &self,
        level: u32,
        index: u64,
        read: impl FnOnce() -> Option<Hash>,
    ) -> Option<Hash> {
        if let Some(h) = self.get(level, index) {
            return Some(h);
        }
        let h = read()?;
        self.extend([(level, index, h)]);
        Some(h)
    }

    /// Forgets every node (after a failed group commit, whose indexes are given again).
    pub fn clear(&self) {
        if let Ok(mut g) = self.generations.lock() {
            g.current.clear();
            g.previous.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u64) -> Hash {
        let mut out = [0u8; 32];
        out[..8].copy_from_slice(&n.to_be_bytes());
        out
    }

    #[test]
    fn keeps_what_it_was_given_and_reads_the_rest_once() {
        let cache = NodeCache::default();
        cache.extend([(0, 1, h(1)), (1, 0, h(2))]);
        assert_eq!(cache.get(0, 1), Some(h(1)));
        assert_eq!(cache.get(1, 0), Some(h(2)));
        assert_eq!(cache.get(0, 2), None);
        assert_eq!(cache.get_or_read(0, 2, || Some(h(3))), Some(h(3)));
        assert_eq!(cache.get_or_read(0, 2, || panic!("read again")), Some(h(3)));
        assert_eq!(cache.get_or_read(5, 5, || None), None);
        cache.clear();
        assert_eq!(cache.get(0, 1), None);
    }

    #[test]
    fn holds_at_most_two_generations_and_keeps_the_nodes_in_use() {
        let cache = NodeCache::default();
        cache.extend([(9, 0, h(0))]);
        let n = GENERATION as u64;
        for i in 1..n {
            cache.extend([(0, i, h(i))]);
        }
        // The first generation is full; the next node starts a new one.
        cache.extend([(0, n, h(n))]);
        // Used while old: moved to the current generation.
        assert_eq!(cache.get(9, 0), Some(h(0)));
        for i in n + 1..2 * n {
            cache.extend([(0, i, h(i))]);
        }
        cache.extend([(0, 2 * n, h(2 * n))]);
        assert_eq!(cache.get(9, 0), Some(h(0)), "a node in use survives");
        assert_eq!(
            cache.get(0, 1),
            None,
            "an unused one from two generations ago is gone"
        );
        let g = cache.generations.lock().unwrap();
        assert!(g.current.len() + g.previous.len() <= 2 * GENERATION);
    }
}
