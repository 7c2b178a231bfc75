//! Durable state for connectors and back offices: typed trees of serde values by string key
//! in one sled database, and [`Update`]s that change several keys of several trees atomically.
//!
//! Values are stored as JSON, so that an operator can read them with any sled tool and a
//! field added later with `#[serde(default)]` reads old records.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional as _;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// sled failed (I/O, corruption, a full disk).
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// The store directory could not be opened.
    #[error("opening the store in {path}: {source}")]
    Open {
        /// The directory.
        path: String,
        /// What sled said.
        source: sled::Error,
    },
    /// A value could not be encoded or decoded.
    #[error("store tree `{tree}`, key `{key}`: {detail}")]
    Codec {
        /// The tree.
        tree: String,
        /// The key.
        key: String,
        /// What serde said.
        detail: String,
    },
    /// A key is not UTF-8 (someone else wrote it).
    #[error("store tree `{tree}` holds a key that is not UTF-8")]
    Key {
        /// The tree.
        tree: String,
    },
}

/// One sled database holding any number of typed trees. Clones share the database.
#[derive(Clone)]
pub struct Store {
    /// The database; every tree of an [`Update`] must come from it.
    db: sled::Db,
    /// Prefixed to every key: several bodies can share one database and its trees, each in
    /// its own namespace ([`Store::namespace`]). Empty for the whole database.
    prefix: String,
    /// The namespace as people read it, `comune:001272/`, for errors.
    label: String,
}

/// Ends a namespace in a key: a byte no name or key holds.
const NAMESPACE_END: char = '\u{1f}';

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("trees", &self.db.tree_names().len())
            .finish()
    }
}

impl Store {
    /// Opens (or creates) the store in directory `path`.
    ///
    /// # Errors
    /// [`StoreError::Open`] naming the directory (another process holding it, say).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .open()
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Store {
            db,
            prefix: String::new(),
            label: String::new(),
        })
    }

    /// The same database seen through namespace `name`: its keys are apart from those of
    /// every other namespace, in the same trees (a simulation keeps many bodies in one
    /// database this way; a tree per body would make sled's files grow with their number).
    /// Namespaces nest; updates may span several namespaces of one database.
    #[must_use]
    pub fn namespace(&self, name: &str) -> Store {
        Store {
            db: self.db.clone(),
            prefix: format!("{}{name}{NAMESPACE_END}", self.prefix),
            label: format!("{}{name}/", self.label),
        }
    }

    /// A store in a temporary directory, deleted when the last clone is dropped.
    ///
    /// # Errors
    /// [`StoreError::Sled`] when it cannot be created.
    pub fn temporary() -> Result<Self, StoreError> {
        Ok(Store {
            db: sled::Config::new().temporary(true).open()?,
            prefix: String::new(),
            label: String::new(),
        })
    }

    /// The tree `name`, holding values of type `V`.
    ///
    /// # Errors
    /// [`StoreError::Sled`] when sled cannot open it.
    pub fn tree<V>(&self, name: &str) -> Result<Tree<V>, StoreError> {
        Ok(Tree {
            tree: self.db.open_tree(name)?,
            name: format!("{}{name}", self.label),
            prefix: self.prefix.clone(),
            _values: PhantomData,
        })
    }

    /// Applies every change of `update` at once — all or none, even across trees — and makes
    /// it durable before returning.
    ///
    /// # Errors
    /// [`StoreError::Sled`] when the write or the flush fails; then nothing was applied, or
    /// (if only the flush failed) it may not survive a crash.
    pub fn apply(&self, update: Update) -> Result<(), StoreError> {
        self.apply_unflushed(update)?;
        self.flush()
    }

    /// Applies `update` atomically without waiting for the disk.
    ///
    /// # Errors
    /// [`StoreError::Sled`] when the write fails; then nothing was applied.
    pub fn apply_unflushed(&self, update: Update) -> Result<(), StoreError> {
        if update.batches.is_empty() {
            return Ok(());
        }
        let (trees, batches): (Vec<sled::Tree>, Vec<sled::Batch>) = update
            .batches
            .into_values()
            .map(|(tree, changes)| {
                let mut batch = sled::Batch::default();
                for (key, value) in changes {
                    match value {
                        Some(v) => batch.insert(key, v),
                        None => batch.remove(key),
                    }
                }
                (tree, batch)
            })
            .unzip();
        trees
            .as_slice()
            .transaction(|txs| {
                for (tx, batch) in txs.iter().zip(&batches) {
                    tx.apply_batch(batch)?;
                }
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError<()>| match e {
                sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
                // No closure above aborts.
                sled::transaction::TransactionError::Abort(()) => {
                    StoreError::Sled(sled::Error::Unsupported("transaction aborted".into()))
                }
            })
    }

    /// Waits until everything written is on disk.
    ///
    /// # Errors
    /// [`StoreError::Sled`] when the disk refuses.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

/// A tree of `V` values by string key.
pub struct Tree<V> {
    /// The tree's name with its namespace, for errors.
    name: String,
    tree: sled::Tree,
    /// The namespace's key prefix.
    prefix: String,
    _values: PhantomData<fn() -> V>,
}

impl<V> Clone for Tree<V> {
    fn clone(&self) -> Self {
        Tree {
            name: self.name.clone(),
            tree: self.tree.clone(),
            prefix: self.prefix.clone(),
            _values: PhantomData,
        }
    }
}

impl<V> Tree<V> {
    /// `key` in this tree's namespace, as stored.
    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

impl<V> fmt::Debug for Tree<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tree")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<V: Serialize + DeserializeOwned> Tree<V> {
    /// The tree's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    fn decode(&self, key: &[u8], bytes: &[u8]) -> Result<V, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Codec {
            tree: self.name.clone(),
            key: String::from_utf8_lossy(key).into_owned(),
            detail: e.to_string(),
        })
    }

    fn encode(&self, key: &str, value: &V) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(value).map_err(|e| StoreError::Codec {
            tree: self.name.clone(),
            key: key.to_owned(),
            detail: e.to_string(),
        })
    }

    /// The value under `key`.
    ///
    /// # Errors
    /// [`StoreError`] when sled fails or the stored value is not a `V`.
    pub fn get(&self, key: &str) -> Result<Option<V>, StoreError> {
        match self.tree.get(self.full(key))? {
            Some(bytes) => Ok(Some(self.decode(key.as_bytes(), &bytes)?)),
            None => Ok(None),
        }
    }

    /// Whether `key` is present.
    ///
    /// # Errors
    /// [`StoreError::Sled`] when sled fails.
    pub fn contains(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.tree.contains_key(self.full(key))?)
    }

    /// Stores `value` under `key` (not yet flushed; see [`Store::flush`]).
    ///
    /// # Errors
    /// [`StoreError`] when sled fails or the value cannot be encoded.
    pub fn put(&self, key: &str, value: &V) -> Result<(), StoreError> {
        self.tree.insert(self.full(key), self.encode(key, value)?)?;
        Ok(())
    }

    /// Removes `key` (not yet flushed).
    ///
    /// # Errors
    /// [`StoreError::Sled`] when sled fails.
    pub fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.tree.remove(self.full(key))?;
        Ok(())
    }

    /// How many keys the tree holds (in its namespace).
    #[must_use]
    pub fn len(&self) -> usize {
        if self.prefix.is_empty() {
            self.tree.len()
        } else {
            self.tree.scan_prefix(&self.prefix).count()
        }
    }

    /// Whether the tree is empty (in its namespace).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tree.scan_prefix(&self.prefix).next().is_none()
    }

    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    ///
    /// # Errors
    /// [`StoreError`] for the first entry that cannot be read.
    pub fn scan(&self, prefix: &str) -> Result<Vec<(String, V)>, StoreError> {
        self.tree
            .scan_prefix(self.full(prefix))
            .map(|r| {
                let (k, v) = r?;
                let key = std::str::from_utf8(&k)
                    .ok()
                    .and_then(|k| k.strip_prefix(&self.prefix))
                    .ok_or_else(|| StoreError::Key {
                        tree: self.name.clone(),
                    })?
                    .to_owned();
                let value = self.decode(key.as_bytes(), &v)?;
                Ok((key, value))
            })
            .collect()
    }

    /// Reads the value under `key`, lets `f` change it (`None` removes it), and writes the
    /// result atomically with respect to other updates of the same key; returns the new value.
    ///
    /// # Errors
    /// [`StoreError`] when sled fails or a value cannot be encoded or decoded.
    pub fn update(
        &self,
        key: &str,
        mut f: impl FnMut(Option<V>) -> Option<V>,
    ) -> Result<Option<V>, StoreError> {
        let full = self.full(key);
        loop {
            let old = self.tree.get(&full)?;
            let current = match &old {
                Some(b) => Some(self.decode(key.as_bytes(), b)?),
                None => None,
            };
            let new = f(current);
            let new_bytes = match &new {
                Some(v) => Some(self.encode(key, v)?),
                None => None,
            };
            if self.tree.compare_and_swap(&full, old, new_bytes)?.is_ok() {
                return Ok(new);
            }
        }
    }
}

/// One change to one key: a new value, or `None` to remove it.
type Change = (Vec<u8>, Option<Vec<u8>>);

/// Changes to several trees of one [`Store`], applied together by [`Store::apply`].
#[derive(Default)]
pub struct Update {
    /// Per sled tree (by its name, shared by every namespace): the tree and its changes, in
    /// order.
    batches: BTreeMap<Vec<u8>, (sled::Tree, Vec<Change>)>,
}

impl fmt::Debug for Update {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Update")
            .field(
                "trees",
                &self
                    .batches
                    .keys()
                    .map(|k| String::from_utf8_lossy(k))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Update {
    /// An empty update.
    #[must_use]
    pub fn new() -> Self {
        Update::default()
    }

    fn changes<V>(&mut self, tree: &Tree<V>) -> &mut Vec<Change> {
        &mut self
            .batches
            .entry(tree.tree.name().to_vec())
            .or_insert_with(|| (tree.tree.clone(), Vec::new()))
            .1
    }

    /// Stores `value` under `key` in `tree` when the update is applied.
    ///
    /// # Errors
    /// [`StoreError::Codec`] when the value cannot be encoded.
    pub fn put<V: Serialize + DeserializeOwned>(
        &mut self,
        tree: &Tree<V>,
        key: &str,
        value: &V,
    ) -> Result<(), StoreError> {
        let bytes = tree.encode(key, value)?;
        let key = tree.full(key).into_bytes();
        self.changes(tree).push((key, Some(bytes)));
        Ok(())
    }

    /// Removes `key` from `tree` when the update is applied.
    pub fn remove<V>(&mut self, tree: &Tree<V>, key: &str) {
        let key = tree.full(key).into_bytes();
        self.changes(tree).push((key, None));
    }

    /// Whether nothing would change.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.batches.values().all(|(_, c)| c.is_empty())
    }

    /// Adds every change of `other` after this update's own.
    pub fn extend(&mut self, other: Update) {
        for (name, (tree, changes)) in other.batches {
            self.batches
                .entry(name)
                .or_insert_with(|| (tree, Vec::new()))
                .1
                .extend(changes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Practice {
        state: String,
        days: u32,
    }

    #[test]
    fn typed_values_round_trip_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let t = store.tree::<Practice>("practices").unwrap();
            t.put(
                "p-1",
                &Practice {
                    state: "received".into(),
                    days: 0,
                },
            )
            .unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let t = store.tree::<Practice>("practices").unwrap();
        assert_eq!(t.get("p-1").unwrap().unwrap().state, "received");
        assert!(t.get("p-2").unwrap().is_none());
    }

    #[test]
    fn namespaces_keep_bodies_apart_in_one_database() {
        let store = Store::temporary().unwrap();
        let (a, b) = (
            store.namespace("comune:001272"),
            store.namespace("comune:004078"),
        );
        let ta = a.tree::<u32>("counters").unwrap();
        let tb = b.tree::<u32>("counters").unwrap();
        ta.put("n", &1).unwrap();
        assert_eq!(tb.get("n").unwrap(), None);
        let mut u = Update::new();
        u.put(&tb, "n", &2).unwrap();
        u.put(&ta, "n", &3).unwrap();
        store.apply(u).unwrap();
        assert_eq!(
            (ta.get("n").unwrap(), tb.get("n").unwrap()),
            (Some(3), Some(2))
        );
        assert_eq!(ta.name(), "comune:001272/counters");
        assert_eq!(
            a.namespace("x").tree::<u32>("t").unwrap().name(),
            "comune:001272/x/t"
        );
    }

    #[test]
    fn an_update_changes_several_trees_at_once() {
        let store = Store::temporary().unwrap();
        let practices = store.tree::<Practice>("practices").unwrap();
        let index = store.tree::<String>("by-state").unwrap();
        practices
            .put(
                "old",
                &Practice {
                    state: "x".into(),
                    days: 1,
                },
            )
            .unwrap();
        let mut u = Update::new();
        u.put(
            &practices,
            "p-1",
            &Practice {
                state: "registered".into(),
                days: 2,
            },
        )
        .unwrap();
        u.put(&index, "registered/p-1", &"p-1".to_owned()).unwrap();
        u.remove(&practices, "old");
        let mut more = Update::new();
        more.put(&index, "x/old", &"gone".to_owned()).unwrap();
        u.extend(more);
        assert!(!u.is_empty());
        store.apply(u).unwrap();
        assert_eq!(practices.get("p-1").unwrap().unwrap().days, 2);
        assert!(!practices.contains("old").unwrap());
        assert_eq!(
            index.scan("").unwrap(),
            vec![
                ("registered/p-1".to_owned(), "p-1".to_owned()),
                ("x/old".to_owned(), "gone".to_owned())
            ]
        );
    }

    #[test]
    fn a_value_of_another_type_is_an_error_naming_tree_and_key() {
        let store = Store::temporary().unwrap();
        store
            .tree::<String>("t")
            .unwrap()
            .put("k", &"text".into())
            .unwrap();
        let e = store.tree::<u32>("t").unwrap().get("k").unwrap_err();
        assert!(e.to_string().contains("store tree `t`, key `k`"), "{e}");
    }

    #[test]
    fn update_of_one_key_is_read_modify_write() {
        let store = Store::temporary().unwrap();
        let counters = store.tree::<u32>("counters").unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = counters.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        c.update("n", |v| Some(v.unwrap_or(0) + 1)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(counters.get("n").unwrap(), Some(200));
        assert_eq!(counters.update("n", |_| None).unwrap(), None);
        assert!(counters.is_empty());
    }
}
