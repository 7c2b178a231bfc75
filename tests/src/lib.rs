//! Helpers shared by the workspace-level end-to-end tests: a throwaway federation PKI and the
//! paths of the external tools the interoperability tests drive.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use snodo_envelopes::pki::{self, KeyType};
use snodo_envelopes::{EntityId, Limits, Signer, TrustStore, Verifier};

/// A federation PKI in a temporary directory.
#[derive(Debug)]
pub struct Federation {
    /// Holds `ca.crt`, `ca.key`, `hub.*` and `<class>-<code>.*`.
    pub dir: tempfile::TempDir,
}

impl Federation {
    /// Creates a CA, the hub and `entities`, with keys of `kind`.
    ///
    /// # Panics
    /// If the PKI cannot be written (a test set-up failure).
    #[must_use]
    pub fn new(entities: &[&str], kind: KeyType) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let entities: Vec<EntityId> = entities
            .iter()
            .map(|e| e.parse().expect("entity id"))
            .collect();
        pki::init(dir.path(), &entities, kind).expect("PKI init");
        Federation { dir }
    }

    /// A file in the PKI directory.
    #[must_use]
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// The key file of `entity`.
    #[must_use]
    pub fn key(&self, entity: &str) -> PathBuf {
        self.path(&format!("{}.key", stem(entity)))
    }

    /// The certificate file of `entity`.
    #[must_use]
    pub fn cert(&self, entity: &str) -> PathBuf {
        self.path(&format!("{}.crt", stem(entity)))
    }

    /// The signer of `entity`.
    ///
    /// # Panics
    /// If its files are missing.
    #[must_use]
    pub fn signer(&self, entity: &str) -> Signer {
        Signer::load(&self.key(entity), &self.cert(entity)).expect("signer")
    }

    /// A verifier that trusts this federation's CA.
    ///
    /// # Panics
    /// If the CA certificate is unreadable.
    #[must_use]
    pub fn verifier(&self) -> Verifier {
        let trust = TrustStore::load(&self.path(pki::CA_CERT), None).expect("trust store");
        Verifier::new(Arc::new(trust), Limits::default())
    }
}

fn stem(entity: &str) -> String {
    entity.parse::<EntityId>().expect("entity id").file_stem()
}

/// The workspace root (where `scripts/` and `tests/interop/` live).
#[must_use]
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}
