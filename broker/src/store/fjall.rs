//! The [`Store`] on fjall, a log-structured merge tree: one keyspace, atomic batches through its
//! journal, flush as an fsync of that journal. Writes are appends (no page rewritten per key)
//! and memory is bounded by the block cache and the memtables, whatever the store holds.

use std::ops::Bound;
use std::path::Path;

use fjall::config::PartitioningPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{Batch, Store, StoreError, StoreResult};

/// fjall in one directory of the hub's data directory.
#[derive(Clone)]
pub struct FjallStore {
    db: Database,
    data: Keyspace,
    /// The memtable size in force, when recorded (see [`MEMTABLE_FILE`]).
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

/// The file, in the store's directory, that records the memtable size the store was created
/// with: fjall fixes it when it creates the keyspace and keeps it on every later open, whatever
/// is asked then.
const MEMTABLE_FILE: &str = "snodo-memtable-bytes";

/// The default size of the block cache.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// The default size at which the memtable is sealed and written out as a table in the
/// background (writes wait while three sealed ones do: `vendor/fjall`). Half fjall's own default:
/// with 64 MiB a growing backlog took the hub past 400 MiB; with 32 MiB it moved between 150
/// and 260 MiB (peaks to 324 MiB) at the same sustained rate (BENCHMARKS.md, section m).
pub const DEFAULT_MEMTABLE_BYTES: u64 = 32 * 1024 * 1024;

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
    /// creates the store, memtables of `memtable_bytes` (an existing store keeps the size it
    /// was created with: see [`FjallStore::memtable_bytes`]).
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
        let created = !db.keyspace_exists("hub");
        let data = db
            .keyspace("hub", || {
                KeyspaceCreateOptions::default()
                    .max_memtable_size(memtable_bytes)
                    // Filters and block indexes in 4 KiB partitions from L1 and L2 (fjall's
                    // default: from L3), so that a point read loads one partition into the
                    // block cache, not a table's whole filter (about a MiB): with millions of
                    // envelopes the whole filters of L1 and L2 no longer fit in the cache.
                    .filter_block_partitioning_policy(PartitioningPolicy::new([false, true]))
                    .index_block_partitioning_policy(PartitioningPolicy::new([false, false, true]))
            })
            .map_err(backend)?;
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
            data,
            memtable_bytes,
        })
    }

    /// The memtable size this store was created with, which fjall keeps whatever a later open
    /// asks; `None` for a store created before snodo recorded it.
    #[must_use]
    pub fn memtable_bytes(&self) -> Option<u64> {
        self.memtable_bytes
    }
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
        Ok(self.data.get(key).map_err(backend)?.map(|v| v.to_vec()))
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
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        // Bounded above by the prefix's successor: an unbounded range would walk every
        // tombstone after the prefix (other inboxes' acknowledged envelopes, say) before it
        // found the first live key past it, and an empty inbox would cost the whole keyspace.
        let end = prefix_end(prefix).map_or(Bound::Unbounded, Bound::Excluded);
        for item in self.data.range((Bound::Included(start), end)) {
            let (k, v) = item.into_inner().map_err(backend)?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn scan_range(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        if limit == 0 || from >= to {
            return Ok(out);
        }
        for item in self.data.range(from..to) {
            let (k, v) = item.into_inner().map_err(backend)?;
            out.push((k.to_vec(), v.to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn last(&self, prefix: &[u8]) -> StoreResult<Option<(Vec<u8>, Vec<u8>)>> {
        match self.data.prefix(prefix).next_back() {
            Some(item) => {
                let (k, v) = item.into_inner().map_err(backend)?;
                Ok(Some((k.to_vec(), v.to_vec())))
            }
            None => Ok(None),
        }
    }

    fn apply(&self, batch: Batch) -> StoreResult<()> {
        let mut b = self.db.batch();
        for (k, v) in batch.ops {
            match v {
                Some(v) => b.insert(&self.data, k, v),
                None => b.remove(&self.data, k),
            }
        }
        b.commit().map_err(backend)
    }

    fn flush(&self) -> StoreResult<()> {
        self.db.persist(PersistMode::SyncAll).map_err(backend)
    }

    fn is_writable(&self) -> bool {
        self.data.insert(b"s/probe", b"1").is_ok() && self.flush().is_ok()
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
}
