//! A throwaway federation PKI for the envelope tests.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;
use snodo_envelopes::pki::{self, KeyType};
use snodo_envelopes::{EntityId, Envelope, Limits, Signer, TrustStore, Verifier};

pub struct Fed {
    pub dir: tempfile::TempDir,
    pub kind: KeyType,
}

impl Fed {
    pub fn new(kind: KeyType) -> Fed {
        let dir = tempfile::tempdir().unwrap();
        let entities: Vec<EntityId> = ["comune:001272", "anpr:ministero", "pagopa:nodo"]
            .iter()
            .map(|e| e.parse().unwrap())
            .collect();
        pki::init(dir.path(), &entities, kind).unwrap();
        Fed { dir, kind }
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    pub fn signer(&self, entity: &str) -> Signer {
        let e: EntityId = entity.parse().unwrap();
        Signer::load(
            &self.path(&format!("{}.key", e.file_stem())),
            &self.path(&format!("{}.crt", e.file_stem())),
        )
        .unwrap()
    }

    pub fn verifier(&self) -> Verifier {
        let crl = self.path("ca.crl");
        let trust =
            TrustStore::load(&self.path("ca.crt"), crl.exists().then_some(crl.as_path())).unwrap();
        Verifier::new(Arc::new(trust), Limits::default())
    }
}

pub fn entity(s: &str) -> EntityId {
    s.parse().unwrap()
}

/// A request from Turin to the registry with a JSON body.
pub fn json_envelope() -> Envelope {
    Envelope::builder(
        entity("comune:001272"),
        entity("anpr:ministero"),
        "residenza.cambio",
        "richiesta",
    )
    .json(json!({"codice_fiscale": "RSSMRA80A01L219X", "note": "via Roma 1 <scala B> & C"}))
    .build()
    .unwrap()
}

/// The same request with an XML body.
pub fn xml_envelope() -> Envelope {
    Envelope::builder(entity("comune:001272"), entity("anpr:ministero"), "residenza.cambio", "richiesta")
        .xml(r#"<r:Richiesta xmlns:r="urn:snodo:residenza:1"><r:cf>RSSMRA80A01L219X</r:cf><r:note>a &amp; b</r:note></r:Richiesta>"#)
        .build()
        .unwrap()
}
