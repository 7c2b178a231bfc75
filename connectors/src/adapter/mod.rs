//! Adapters between a connector and the municipal system: `dir` (folders), `http` (a local
//! URL each way) and `reference` (a back office of this build takes the messages itself).
//!
//! Shared here: the conversation an answer joins, found in the processed records.

pub mod dir;
pub mod http;
pub mod reference;

use snodo_envelopes::EntityId;
use uuid::Uuid;

use crate::dispatch::Processed;
use crate::store::Tree;

/// Why an adapter could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// A folder cannot be created or read.
    #[error("{path}: {source}")]
    Io {
        /// The folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The store failed.
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// The local endpoint cannot listen, or the HTTP client cannot be built.
    #[error("{0}")]
    Http(String),
}

/// The conversation of the envelope `id` received from `from`, which an answer to it joins.
///
/// # Errors
/// A message naming the envelope when it was never received (or the store fails).
pub fn conversation_of(
    processed: &Tree<Processed>,
    from: &EntityId,
    id: Uuid,
) -> Result<String, String> {
    match processed.get(&format!("{from}/{id}")) {
        Ok(Some(record)) => Ok(record.conversation),
        Ok(None) => Err(format!(
            "no envelope {id} from {from} was received: there is nothing to answer"
        )),
        Err(e) => Err(e.to_string()),
    }
}
