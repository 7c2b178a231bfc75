//! The [`Store`] on fjall, log-structured merge trees: the key spaces written once and in key
//! order (the raw envelopes, their records, the journal) each in a tree of their own, the rest
//! in one more; atomic batches across them through fjall's journal, flush as an fsync of that
//! journal. Writes are appends (no page rewritten per key) and memory is bounded by the block
//! cache and the memtables, whatever the store holds.

use std::ops::Bound;
use std::path::Path;

use fjall::config::{CompressionPolicy, PartitioningPolicy, PinningPolicy};
use fjall::{CompressionType, Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{Batch, Store, StoreError, StoreResult};

/// fjall in one directory of the hub's data directory.
#[derive(Clone)]
pub struct FjallStore {
    db: Database,
    /// The trees; the first holds every key space without a tree of its own.
    trees: Vec<Keyspace>,
    /// For each first byte of a key, the index of its tree in `trees`.
    route: [u8; 256],
    /// The memtable budget in force, when recorded (see [`MEMTABLE_FILE`]).
    memtable_bytes: Option<u64>,
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore").finish_non_exhaustive()
    }
}

fn backend(e: fjall::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// The file, in the store's directory, that records the memtable budget the store was created
/// with: fjall fixes each tree's memtable size when it creates the tree and keeps it on every
/// later open, whatever is asked then.
const MEMTABLE_FILE: &str = "snodo-memtable-bytes";

/// The default size of the block cache.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// The default memtable budget: the memtables of all the trees together, before they are
/// written out as tables in the background (writes to a tree wait while three of its memtables
/// are sealed: `vendor/fjall`). With one tree of 64 MiB memtables a growing backlog took the hub
/// past 400 MiB; with 32 MiB it moved between 150 and 260 MiB (BENCHMARKS.md, section m).
pub const DEFAULT_MEMTABLE_BYTES: u64 = 32 * 1024 * 1024;

/// The key spaces (`keys.rs`) with a tree of their own, the tree's name and its share of the
/// memtable budget (one part in this many). Their keys are sequence numbers and journal indexes,
/// written once and in increasing order, so each table the tree writes out follows every table
/// before it: compaction moves such tables down the levels without reading or rewriting them.
/// Sharing a tree with keys written in random order (the idempotency keys, say) made every
/// table overlap every other, and the whole store was merged again and again as it grew: the
/// write stops of BENCHMARKS.md, section o. How large their memtables are changes little: a
/// byte written is flushed once whatever the memtable's size.
const OWN_TREES: [(u8, &str, u64); 3] =
    [(b'r', "raw", 4), (b'm', "records", 8), (b'j', "journal", 8)];
/// The tree of every other key space, with half of the budget: its tables overlap, and each
/// merge of its first level's tables into the second rewrites the second, so the larger its
/// memtables, the fewer such merges. Against a quarter (and half for the raw envelopes), the
/// hub wrote 14% fewer bytes to disk over 100,000 envelopes and 25% fewer over 300,000
/// (BENCHMARKS.md, section v).
const REST_TREE: (&str, u64) = ("rest", 2);
/// The one tree of a store created before the key spaces were split; such a store keeps it.
const SINGLE_TREE: &str = "hub";

/// The options of a tree with memtables of `memtable_bytes`; `in_order` for the trees of
/// [`OWN_TREES`].
fn tree_options(memtable_bytes: u64, in_order: bool) -> KeyspaceCreateOptions {
    let options = KeyspaceCreateOptions::default().max_memtable_size(memtable_bytes);
    if in_order {
        // A table of these trees is moved down the levels, never rewritten, and keeps what it
        // was written with. So its data blocks are compressed from the first level (fjall's
        // default: from L2; a journal of ten million took 40 GB instead of 22), and its filter
        // and block index go in 4 KiB partitions through the block cache, never pinned in
        // memory (fjall pins a new table's whole filter and index: kept by every moved table,
        // they grew with the store).
        return options
            .data_block_compression_policy(CompressionPolicy::all(CompressionType::Lz4))
            .filter_block_partitioning_policy(PartitioningPolicy::all(true))
            .index_block_partitioning_policy(PartitioningPolicy::all(true))
            .filter_block_pinning_policy(PinningPolicy::all(false))
            .index_block_pinning_policy(PinningPolicy::all(false));
    }
    options
        // Filters and block indexes in 4 KiB partitions from L1 and L2 (fjall's default: from
        // L3), so that a point read loads one partition into the block cache, not a table's
        // whole filter (about a MiB): with millions of envelopes the whole filters of L1 and L2
        // no longer fit in the cache.
        .filter_block_partitioning_policy(PartitioningPolicy::new([false, true]))
        .index_block_partitioning_policy(PartitioningPolicy::new([false, false, true]))
}

impl FjallStore {
    /// Opens (or creates) the store in `dir` with the default block cache.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the directory cannot be used, for example because another
    /// hub process holds it.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        Self::open_with(dir, DEFAULT_CACHE_BYTES, DEFAULT_MEMTABLE_BYTES)
    }

    /// Opens (or creates) the store in `dir` with a block cache of `cache_bytes` and, when it
    /// creates the store, a memtable budget of `memtable_bytes` (an existing store keeps the
    /// budget it was created with: see [`FjallStore::memtable_bytes`]).
    ///
    /// # Errors
    /// As [`FjallStore::open`].
    pub fn open_with(dir: &Path, cache_bytes: u64, memtable_bytes: u64) -> StoreResult<Self> {
        let db = Database::builder(dir)
            .cache_size(cache_bytes)
            // The hub makes writes durable itself, once per group commit ([`Store::flush`]).
            .manual_journal_persist(true)
            .open()
            .map_err(backend)?;
        let single = db.keyspace_exists(SINGLE_TREE);
        let created = !single && !db.keyspace_exists(REST_TREE.0);
        let tree = |name: &str, share: u64, in_order: bool| {
            db.keyspace(name, || tree_options(memtable_bytes / share, in_order))
                .map_err(backend)
        };
        let mut route = [0u8; 256];
        let trees = if single {
            vec![tree(SINGLE_TREE, 1, false)?]
        } else {
            let mut trees = vec![tree(REST_TREE.0, REST_TREE.1, false)?];
            for (space, name, share) in OWN_TREES {
                route[usize::from(space)] = u8::try_from(trees.len()).unwrap_or(0);
                trees.push(tree(name, share, true)?);
            }
            trees
        };
        let file = dir.join(MEMTABLE_FILE);
        let memtable_bytes = if created {
            std::fs::write(&file, memtable_bytes.to_string())
                .map_err(|e| StoreError::Backend(format!("{}: {e}", file.display())))?;
            Some(memtable_bytes)
        } else {
            std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        };
        Ok(FjallStore {
            db,
            trees,
            route,
            memtable_bytes,
        })
    }

    /// The memtable budget this store was created with, which fjall keeps whatever a later open
    /// asks; `None` for a store created before snodo recorded it.
    #[must_use]
    pub fn memtable_bytes(&self) -> Option<u64> {
        self.memtable_bytes
    }

    /// The tree that holds `key`.
    fn tree(&self, key: &[u8]) -> &Keyspace {
        let space = key.first().copied().unwrap_or(0);
        &self.trees[usize::from(self.route[usize::from(space)])]
    }

    /// The trees that hold keys whose first byte is from `lo` to `hi`, both included.
    fn trees_between(&self, lo: u8, hi: u8) -> Vec<&Keyspace> {
        let mut seen = [false; 256];
        let mut out = Vec::new();
        for space in lo..=hi {
            let i = usize::from(self.route[usize::from(space)]);
            if !seen[i] {
                seen[i] = true;
                out.push(&self.trees[i]);
            }
        }
        out
    }

    /// The trees a scan of keys starting with `prefix` must read.
    fn trees_for_prefix(&self, prefix: &[u8]) -> Vec<&Keyspace> {
        match prefix.first() {
            Some(&space) => self.trees_between(space, space),
            None => self.trees_between(0, u8::MAX),
        }
    }
}

/// Up to `limit` entries of `trees` in `range`, in key order: read from each tree and merged
/// (a range within one key space reads one tree).
fn collect(
    trees: &[&Keyspace],
    range: &(Bound<Vec<u8>>, Bound<Vec<u8>>),
    limit: usize,
) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    for tree in trees {
        for (n, item) in tree.range(range.clone()).enumerate() {
            if n >= limit {
                break;
            }
            let (k, v) = item.into_inner().map_err(backend)?;
            out.push((k.to_vec(), v.to_vec()));
        }
    }
    if trees.len() > 1 {
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.truncate(limit);
    }
    Ok(out)
}

/// The least key greater than every key starting with `prefix`; none when there is no such
/// key (an empty prefix, or one of 0xff bytes only).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl Store for FjallStore {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .tree(key)
            .get(key)
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let start = match after {
            Some(after) => {
                let mut start = after.to_vec();
                start.push(0);
                start
            }
            None => prefix.to_vec(),
        };
        // Bounded above by the prefix's successor: an unbounded range would walk every
        // tombstone after the prefix (other inboxes' acknowledged envelopes, say) before it
        // found the first live key past it, and an empty inbox would cost the whole tree.
        let end = prefix_end(prefix).map_or(Bound::Unbounded, Bound::Excluded);
        let mut out = collect(
            &self.trees_for_prefix(prefix),
            &(Bound::Included(start), end),
            limit,
        )?;
        out.retain(|(k, _)| k.starts_with(prefix));
        Ok(out)
    }

    fn scan_range(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        if from >= to {
            return Ok(Vec::new());
        }
        let lo = from.first().copied().unwrap_or(0);
        let hi = to.first().copied().unwrap_or(0);
        collect(
            &self.trees_between(lo, hi),
            &(Bound::Included(from.to_vec()), Bound::Excluded(to.to_vec())),
            limit,
        )
    }

    fn count(&self, prefix: &[u8], cap: usize) -> StoreResult<usize> {
        let mut n = 0;
        for tree in self.trees_for_prefix(prefix) {
            for item in tree.prefix(prefix) {
                if n >= cap {
                    return Ok(n);
                }
                item.key().map_err(backend)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn last(&self, prefix: &[u8]) -> StoreResult<Option<(Vec<u8>, Vec<u8>)>> {
        let mut best: Option<(Vec<u8>, Vec<u8>)> = None;
        for tree in self.trees_for_prefix(prefix) {
            if let Some(item) = tree.prefix(prefix).next_back() {
                let (k, v) = item.into_inner().map_err(backend)?;
                if best.as_ref().is_none_or(|(b, _)| b.as_slice() < &*k) {
                    best = Some((k.to_vec(), v.to_vec()));
                }
            }
        }
        Ok(best)
    }

    fn last_below(&self, prefix: &[u8], below: &[u8]) -> StoreResult<Option<(Vec<u8>, Vec<u8>)>> {
        let mut best: Option<(Vec<u8>, Vec<u8>)> = None;
        for tree in self.trees_for_prefix(prefix) {
            let range = (Bound::Included(prefix), Bound::Excluded(below));
            if let Some(item) = tree.range::<&[u8], _>(range).next_back() {
                let (k, v) = item.into_inner().map_err(backend)?;
                if best.as_ref().is_none_or(|(b, _)| b.as_slice() < &*k) {
                    best = Some((k.to_vec(), v.to_vec()));
                }
            }
        }
        Ok(best)
    }

    fn apply(&self, batch: Batch) -> StoreResult<()> {
        let mut b = self.db.batch();
        for (k, v) in batch.ops {
            let tree = self.tree(&k);
            match v {
                Some(v) => b.insert(tree, k, v),
                None => b.remove(tree, k),
            }
        }
        b.commit().map_err(backend)
    }

    fn flush(&self) -> StoreResult<()> {
        self.db.persist(PersistMode::SyncAll).map_err(backend)
    }

    fn is_writable(&self) -> bool {
        self.tree(b"s/probe").insert(b"s/probe", b"1").is_ok() && self.flush().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memtable_size_is_the_one_the_store_was_created_with() {
        let dir = tempfile::tempdir().unwrap();
        let s = FjallStore::open_with(dir.path(), 1 << 20, 32 << 20).unwrap();
        assert_eq!(s.memtable_bytes(), Some(32 << 20));
        drop(s);
        let s = FjallStore::open_with(dir.path(), 1 << 20, 16 << 20).unwrap();
        assert_eq!(s.memtable_bytes(), Some(32 << 20));
    }

    #[test]
    fn batches_scans_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = FjallStore::open(dir.path()).unwrap();
            let mut b = Batch::default();
            for i in 0u64..10 {
                b.put(
                    [b"q/a\0".as_slice(), &i.to_be_bytes()].concat(),
                    i.to_string(),
                );
            }
            b.put("q/b\0x", "other");
            s.apply(b).unwrap();
            let mut b = Batch::default();
            b.delete([b"q/a\0".as_slice(), &3u64.to_be_bytes()].concat());
            s.apply(b).unwrap();
            s.flush().unwrap();
            // A second process on the same directory is refused while this one holds it.
            assert!(FjallStore::open(dir.path()).is_err());
        }
        let s = FjallStore::open(dir.path()).unwrap();
        let all = s.scan(b"q/a\0", None, 100).unwrap();
        assert_eq!(all.len(), 9);
        let page = s.scan(b"q/a\0", Some(&all[1].0), 2).unwrap();
        assert_eq!(
            page.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
            vec![b"2".to_vec(), b"4".to_vec()]
        );
        assert_eq!(s.last(b"q/a\0").unwrap().unwrap().1, b"9");
        assert_eq!(s.last(b"q/c").unwrap(), None);
        let below = |i: u64| [b"q/a\0".as_slice(), &i.to_be_bytes()].concat();
        assert_eq!(s.last_below(b"q/a\0", &below(5)).unwrap().unwrap().1, b"4");
        // 3 was deleted.
        assert_eq!(s.last_below(b"q/a\0", &below(4)).unwrap().unwrap().1, b"2");
        assert_eq!(s.last_below(b"q/a\0", &below(0)).unwrap(), None);
        assert!(s.scan(b"q/a\0", None, 0).unwrap().is_empty());
        assert!(s.is_writable());
    }

    #[test]
    fn a_scan_stays_within_its_prefix_whatever_its_last_bytes() {
        assert_eq!(prefix_end(b"q/a\0"), Some(b"q/a\x01".to_vec()));
        assert_eq!(prefix_end(b"q\xff\xff"), Some(b"r".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
        let dir = tempfile::tempdir().unwrap();
        let s = FjallStore::open(dir.path()).unwrap();
        let mut b = Batch::default();
        for k in [
            &b"a\xff"[..],
            b"a\xff\x00",
            b"a\xff\xff",
            b"b",
            b"\xff\xff\x01",
        ] {
            b.put(k.to_vec(), "v");
        }
        s.apply(b).unwrap();
        let keys = |p: &[u8]| -> Vec<Vec<u8>> {
            s.scan(p, None, 10)
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        assert_eq!(keys(b"a\xff").len(), 3);
        assert_eq!(keys(b"a\xff\xff"), vec![b"a\xff\xff".to_vec()]);
        assert_eq!(keys(b"\xff\xff"), vec![b"\xff\xff\x01".to_vec()]);
        assert_eq!(keys(b"").len(), 5);
        let range = s.scan_range(b"a\xff\x00", b"b", 10).unwrap();
        assert_eq!(range.len(), 2);
        assert_eq!(s.scan_range(b"a\xff\x00", b"b", 1).unwrap().len(), 1);
        assert!(s.scan_range(b"b", b"a", 10).unwrap().is_empty());
    }

    fn keys_of(rows: &[(Vec<u8>, Vec<u8>)]) -> Vec<&[u8]> {
        rows.iter().map(|(k, _)| k.as_slice()).collect()
    }

    #[test]
    fn scans_across_trees_come_back_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = FjallStore::open(dir.path()).unwrap();
        let mut b = Batch::default();
        // Spaces of the rest tree on both sides of the raw, records and journal trees.
        for k in [
            "a/1", "j/1", "j/2", "k/1", "m/1", "q/1", "r/1", "r/2", "s/1", "z/1",
        ] {
            b.put(k, k);
        }
        s.apply(b).unwrap();
        let all = s.scan(b"", None, 100).unwrap();
        assert_eq!(
            keys_of(&all),
            [
                &b"a/1"[..],
                b"j/1",
                b"j/2",
                b"k/1",
                b"m/1",
                b"q/1",
                b"r/1",
                b"r/2",
                b"s/1",
                b"z/1"
            ]
        );
        assert_eq!(
            keys_of(&s.scan(b"", Some(b"j/2"), 3).unwrap()),
            [&b"k/1"[..], b"m/1", b"q/1"]
        );
        assert_eq!(
            keys_of(&s.scan_range(b"j/2", b"r/2", 100).unwrap()),
            [&b"j/2"[..], b"k/1", b"m/1", b"q/1", b"r/1"]
        );
        assert_eq!(
            keys_of(&s.scan(b"r/", None, 100).unwrap()),
            [&b"r/1"[..], b"r/2"]
        );
        assert_eq!(s.last(b"").unwrap().unwrap().0, b"z/1");
        assert_eq!(s.last(b"m").unwrap().unwrap().1, b"m/1");
        assert_eq!(s.get(b"r/2").unwrap().unwrap(), b"r/2");
        assert_eq!(s.count(b"", 100).unwrap(), 10);
        assert_eq!(s.count(b"", 4).unwrap(), 4);
        assert_eq!(s.count(b"j/", 100).unwrap(), 2);
        assert_eq!(s.count(b"x/", 100).unwrap(), 0);
        // Every write of a batch lands, whichever trees it spans, and so does every delete.
        let mut b = Batch::default();
        b.delete("r/1");
        b.delete("q/1");
        s.apply(b).unwrap();
        assert_eq!(s.scan(b"", None, 100).unwrap().len(), 8);
    }

    #[test]
    fn a_store_of_one_tree_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A store as snodo created it before the key spaces had trees of their own.
            let db = Database::builder(dir.path()).open().unwrap();
            let hub = db
                .keyspace(SINGLE_TREE, KeyspaceCreateOptions::default)
                .unwrap();
            hub.insert(b"r/1", b"raw").unwrap();
            hub.insert(b"q/1", b"queued").unwrap();
            db.persist(PersistMode::SyncAll).unwrap();
        }
        let s = FjallStore::open(dir.path()).unwrap();
        assert_eq!(s.trees.len(), 1);
        assert_eq!(s.get(b"r/1").unwrap().unwrap(), b"raw");
        let mut b = Batch::default();
        b.put("m/1", "record");
        s.apply(b).unwrap();
        assert_eq!(
            keys_of(&s.scan(b"", None, 10).unwrap()),
            [&b"m/1"[..], b"q/1", b"r/1"]
        );
        drop(s);
        let s = FjallStore::open(dir.path()).unwrap();
        assert_eq!(s.trees.len(), 1);
        assert_eq!(s.get(b"m/1").unwrap().unwrap(), b"record");
    }

    #[test]
    fn a_new_store_splits_its_key_spaces_and_keeps_them_split() {
        let dir = tempfile::tempdir().unwrap();
        let s = FjallStore::open(dir.path()).unwrap();
        assert_eq!(s.trees.len(), 1 + OWN_TREES.len());
        let mut b = Batch::default();
        b.put("r/1", "raw");
        b.put("i/1", "idempotency");
        s.apply(b).unwrap();
        s.flush().unwrap();
        drop(s);
        let s = FjallStore::open(dir.path()).unwrap();
        assert_eq!(s.trees.len(), 1 + OWN_TREES.len());
        assert_eq!(s.get(b"r/1").unwrap().unwrap(), b"raw");
        assert_eq!(s.get(b"i/1").unwrap().unwrap(), b"idempotency");
        assert!(s.db.keyspace_exists("raw") && !s.db.keyspace_exists(SINGLE_TREE));
    }
}
