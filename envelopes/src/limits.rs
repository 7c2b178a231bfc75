//! Bounds on what a parser accepts: size and nesting depth.

/// Default maximum size of an envelope document: 10 MiB.
pub const DEFAULT_MAX_BYTES: usize = 10 * 1024 * 1024;
/// Default maximum nesting depth of elements (XML) or values (JSON), body included.
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// Bounds applied before and during parsing, so that hostile input costs bounded time and memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted document, in bytes.
    pub max_bytes: usize,
    /// Deepest accepted nesting of XML elements or JSON arrays/objects.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: DEFAULT_MAX_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

impl Limits {
    /// Refuses a document larger than `max_bytes`.
    ///
    /// # Errors
    /// [`crate::Error::TooLarge`].
    pub fn check_size(&self, len: usize) -> crate::Result<()> {
        if len > self.max_bytes {
            Err(crate::Error::TooLarge {
                size: len,
                limit: self.max_bytes,
            })
        } else {
            Ok(())
        }
    }
}
