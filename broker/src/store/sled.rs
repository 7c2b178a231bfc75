//! The [`Store`] on sled: one tree, atomic batches, flush as fsync.

use std::path::Path;

use super::{Batch, Store, StoreError, StoreResult};

/// sled in one directory of the hub's data directory.
#[derive(Debug, Clone)]
pub struct SledStore {
    db: ::sled::Db,
}

fn backend(e: ::sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// The default size of sled's page cache.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

impl SledStore {
    /// Opens (or creates) the store in `dir` with the default page cache.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the directory cannot be used, for example because another
    /// hub process holds it.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the store in `dir` with a page cache of `cache_bytes`.
    ///
    /// # Errors
    /// As [`SledStore::open`].
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> StoreResult<Self> {
        let db = ::sled::Config::new()
            .path(dir)
            .mode(::sled::Mode::HighThroughput)
            .cache_capacity(cache_bytes)
            // The hub flushes explicitly (group commit); no background flush is needed for
            // durability, but a periodic one bounds the work of the explicit flushes.
            .flush_every_ms(Some(1000))
            .open()
            .map_err(backend)?;
        Ok(SledStore { db })
    }
}

impl Store for SledStore {
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.db.get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let iter = match after {
            Some(after) => {
                let mut start = after.to_vec();
                start.push(0);
                self.db.range(start..)
            }
            None => self.db.range(prefix.to_vec()..),
        };
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item.map_err(backend)?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn last(&self, prefix: &[u8]) -> StoreResult<Option<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .db
            .scan_prefix(prefix)
            .next_back()
            .transpose()
            .map_err(backend)?
            .map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    fn apply(&self, batch: Batch) -> StoreResult<()> {
        let mut b = ::sled::Batch::default();
        for (k, v) in batch.ops {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        self.db.apply_batch(b).map_err(backend)
    }

    fn flush(&self) -> StoreResult<()> {
        self.db.flush().map(|_| ()).map_err(backend)
    }

    fn is_writable(&self) -> bool {
        self.db.insert(b"z/probe", &b"1"[..]).is_ok() && self.db.flush().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_scans_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
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
        }
        // sled's flusher thread lets go of the directory's lock shortly after the close.
        let s = (0..100)
            .find_map(|_| {
                SledStore::open(dir.path()).ok().or_else(|| {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    None
                })
            })
            .expect("the store reopens");
        let all = s.scan(b"q/a\0", None, 100).unwrap();
        assert_eq!(all.len(), 9);
        let page = s.scan(b"q/a\0", Some(&all[1].0), 2).unwrap();
        assert_eq!(
            page.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
            vec![b"2".to_vec(), b"4".to_vec()]
        );
        assert_eq!(s.last(b"q/a\0").unwrap().unwrap().1, b"9");
        assert_eq!(s.last(b"q/c").unwrap(), None);
        assert!(s.is_writable());
    }
}
