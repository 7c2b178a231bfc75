//! Verifies one signed envelope in a loop, for profilers: `profile_verify xml|json [N] [--ratio]`.
//! The envelope is the one `benches/signatures.rs` verifies as `rsa2048/verify/1KiB`.
//!
//! With `--ratio`, batches of envelope verifications alternate with batches of raw RSA-2048
//! verifications made as `openssl speed rsa2048` makes them, and the fastest batch of each is
//! compared: on a shared machine, a ratio taken from the same moments.

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
    let ratio = args.next().is_some_and(|a| a == "--ratio");
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
    if ratio {
        let (envelope, raw) = against_openssl_speed(n, BATCH, || {
            verifier.verify(&signed).expect("verify");
        });
        println!(
            "{format:?}: fastest batch {envelope:?}, raw RSA-2048 verification {raw:?}: {:.2}x",
            envelope.as_secs_f64() / raw.as_secs_f64()
        );
    }
}

/// The fastest batch of `verify` and of a raw RSA-2048 verification, in alternating batches.
///
/// The raw verification is `openssl speed rsa2048`'s (OpenSSL 3): a context made once for a
/// 2048-bit key, PKCS#1 v1.5 over 36 bytes, no digest.
fn against_openssl_speed(
    n: usize,
    batch: u32,
    mut verify: impl FnMut(),
) -> (std::time::Duration, std::time::Duration) {
    let key = pki::generate_key(KeyType::Rsa2048).expect("RSA key");
    let data = [0x5au8; 36];
    let mut signing = openssl::pkey_ctx::PkeyCtx::new(&key).expect("context");
    signing.sign_init().expect("sign init");
    let mut sig = Vec::new();
    signing.sign_to_vec(&data, &mut sig).expect("sign");
    let mut ctx = openssl::pkey_ctx::PkeyCtx::new(&key).expect("context");
    ctx.verify_init().expect("verify init");
    let mut best = (std::time::Duration::MAX, std::time::Duration::MAX);
    for _ in 0..n.div_ceil(batch as usize) {
        let t = std::time::Instant::now();
        for _ in 0..batch {
            verify();
        }
        best.0 = best.0.min(t.elapsed() / batch);
        let t = std::time::Instant::now();
        for _ in 0..batch {
            assert!(ctx.verify(&data, &sig).expect("raw verify"));
        }
        best.1 = best.1.min(t.elapsed() / batch);
    }
    best
}
