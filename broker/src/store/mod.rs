//! Storage behind a small trait of the broker's own: an ordered key-value space with atomic
//! batches and an explicit flush, which is all the hub needs. [`fjall`] implements it.

pub mod fjall;
pub mod keys;

pub use self::fjall::FjallStore;

/// Why the store failed. Every variant is the hub's fault, never the caller's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The underlying database failed.
    #[error("store: {0}")]
    Backend(String),
    /// A stored value could not be decoded.
    #[error("store: corrupt value under {key}: {detail}")]
    Corrupt {
        /// The key, printable.
        key: String,
        /// What was wrong.
        detail: String,
    },
}

impl StoreError {
    /// True when retrying the same operation later may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Backend(_))
    }

    pub(crate) fn corrupt(key: &[u8], detail: impl std::fmt::Display) -> Self {
        StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            detail: detail.to_string(),
        }
    }
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// A value to store: shared (a clone counts a reference) and handed to the store as it is. An
/// envelope's received bytes become one when the envelope arrives and are not copied again on
/// their way into the store; a `Vec<u8>` becomes one by a copy.
pub type Value = ::fjall::Slice;

/// Writes applied together: all of them or none.
#[derive(Debug, Default)]
pub struct Batch {
    pub(crate) ops: Vec<(Vec<u8>, Option<Value>)>,
}

impl Batch {
    /// Sets `key` to `value`.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Value>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }

    /// True when the batch holds no write.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// How many writes the batch holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// An ordered key-value store with atomic batches.
///
/// Writes become durable only at [`Store::flush`]; the hub answers nothing that depends on a
/// write before the flush that covers it (group commit: one flush for many requests).
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// The value under `key`.
    ///
    /// # Errors
    /// [`StoreError`] when the backend fails.
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>>;

    /// Up to `limit` entries whose key starts with `prefix`, in key order, starting after
    /// `after` when given.
    ///
    /// # Errors
    /// [`StoreError`] when the backend fails.
    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Up to `limit` entries with keys from `from` (included) to `to` (excluded), in key
    /// order. Bounded on both sides, it walks no deleted key outside them.
    ///
    /// # Errors
    /// [`StoreError`] when the backend fails.
    fn scan_range(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>>;

    /// How many keys start with `prefix`, counting up to `cap` (no more is read).
    ///
    /// # Errors
    /// [`StoreError`] when the backend fails.
    fn count(&self, prefix: &[u8], cap: usize) -> StoreResult<usize>;

    /// The entry with the greatest key starting with `prefix`.
    ///
    /// # Errors
    /// [`StoreError`] when the backend fails.
    fn last(&self, prefix: &[u8]) -> StoreResult<Option<(Vec<u8>, Vec<u8>)>>;

    /// The entry with the greatest key starting with `prefix` and below `below` (which
    /// starts with `prefix`).
    ///
    /// # Errors
    /// [`StoreError`] when the backend fails.
    fn last_below(&self, prefix: &[u8], below: &[u8]) -> StoreResult<Option<(Vec<u8>, Vec<u8>)>>;

    /// Applies every write of `batch` atomically (not yet durable).
    ///
    /// # Errors
    /// [`StoreError`] when the backend fails; then none of the batch is applied.
    fn apply(&self, batch: Batch) -> StoreResult<()>;

    /// Makes every write applied so far durable.
    ///
    /// # Errors
    /// [`StoreError`] when the backend fails.
    fn flush(&self) -> StoreResult<()>;

    /// True when a write reaches the disk (for readiness checks).
    fn is_writable(&self) -> bool;
}
