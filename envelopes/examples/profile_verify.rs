//! Verifies one signed envelope in a loop, for profilers: `profile_verify xml|json [N]`. The
//! envelope is the one `benches/signatures.rs` verifies as `rsa2048/verify/1KiB`.

use std::sync::Arc;

use snodo_envelopes::pki::{self, KeyType};
use snodo_envelopes::{EntityId, Envelope, Format, Limits, Signer, TrustStore, Verifier, sign};

fn main() {
    let mut args = std::env::args().skip(1);
    let format: Format = args
        .next()
        .unwrap_or_else(|| "xml".into())
        .parse()
        .expect("xml or json");
    let n: usize = args.next().map_or(20_000, |s| s.parse().expect("a count"));
    let dir = tempfile::tempdir().expect("temporary directory");
    let turin: EntityId = "comune:001272".parse().expect("entity");
    pki::init(
        dir.path(),
        &[turin.clone(), "anpr:ministero".parse().expect("entity")],
        KeyType::Rsa2048,
    )
    .expect("PKI");
    let signer = Signer::load(
        &dir.path().join("comune-001272.key"),
        &dir.path().join("comune-001272.crt"),
    )
    .expect("signer");
    let trust = TrustStore::load(&dir.path().join("ca.crt"), None).expect("trust");
    let verifier = Verifier::new(Arc::new(trust), Limits::default());
    // The benchmark's 1 KiB envelope: an XML body in the XML encoding, a JSON one in JSON.
    let note = "x".repeat(1024 - 120);
    let builder = Envelope::builder(
        turin,
        "anpr:ministero".parse::<EntityId>().expect("entity"),
        "residenza.cambio",
        "richiesta",
    );
    let env = match format {
        Format::Xml => builder.xml(format!(
            r#"<r:Richiesta xmlns:r="urn:snodo:residenza:1"><r:cf>RSSMRA80A01L219X</r:cf><r:note>{note}</r:note></r:Richiesta>"#
        )),
        Format::Json => {
            builder.json(serde_json::json!({"codice_fiscale": "RSSMRA80A01L219X", "note": note}))
        }
    }
    .build()
    .expect("envelope");
    let signed = sign(&env, &signer, format).expect("sign");
    // Batches of 10: on a shared machine the fastest batch is the figure least disturbed by
    // other work, the mean the one a profiler sees.
    const BATCH: u32 = 10;
    let start = std::time::Instant::now();
    let mut best = std::time::Duration::MAX;
    for _ in 0..n.div_ceil(BATCH as usize) {
        let batch = std::time::Instant::now();
        for _ in 0..BATCH {
            verifier.verify(&signed).expect("verify");
        }
        best = best.min(batch.elapsed() / BATCH);
    }
    let runs = u32::try_from(n.div_ceil(BATCH as usize)).expect("count") * BATCH;
    let per = start.elapsed() / runs;
    println!(
        "{format:?}: {per:?} per verification, fastest batch {best:?} ({} bytes)",
        signed.len()
    );
}
