//! Cost of signing and verifying envelopes, next to the raw RSA-2048 and ECDSA P-256 operations
//! they are built on, measured in the same run so the ratios hold on a noisy machine.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Verifier as RawVerifier;
use serde_json::json;
use snodo_envelopes::pki::{self, KeyType};
use snodo_envelopes::signer::{Algorithm, verify_bytes};
use snodo_envelopes::{EntityId, Envelope, Format, Limits, Signer, TrustStore, Verifier, sign};

struct Fixture {
    _dir: tempfile::TempDir,
    signer: Signer,
    verifier: Verifier,
}

fn fixture(kind: KeyType) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let turin: EntityId = "comune:001272".parse().unwrap();
    pki::init(
        dir.path(),
        &[turin, "anpr:ministero".parse().unwrap()],
        kind,
    )
    .unwrap();
    let signer = Signer::load(
        &dir.path().join("comune-001272.key"),
        &dir.path().join("comune-001272.crt"),
    )
    .unwrap();
    let trust = TrustStore::load(&dir.path().join("ca.crt"), None).unwrap();
    Fixture {
        _dir: dir,
        signer,
        verifier: Verifier::new(Arc::new(trust), Limits::default()),
    }
}

/// An envelope whose encoded body is about `size` bytes, JSON or XML.
fn envelope(size: usize, xml: bool) -> Envelope {
    let b = Envelope::builder(
        "comune:001272".parse().unwrap(),
        "anpr:ministero".parse::<EntityId>().unwrap(),
        "residenza.cambio",
        "richiesta",
    );
    let filler = "x".repeat(size.saturating_sub(120));
    if xml {
        b.xml(format!(
            r#"<r:Richiesta xmlns:r="urn:snodo:residenza:1"><r:cf>RSSMRA80A01L219X</r:cf><r:note>{filler}</r:note></r:Richiesta>"#
        ))
    } else {
        b.json(json!({"codice_fiscale": "RSSMRA80A01L219X", "note": filler}))
    }
    .build()
    .unwrap()
}

fn raw_operations(c: &mut Criterion) {
    let mut g = c.benchmark_group("raw");
    for (name, kind) in [("rsa2048", KeyType::Rsa2048), ("p256", KeyType::P256)] {
        let key = pki::generate_key(kind).unwrap();
        let data = [7u8; 1024];
        let mut s = openssl::sign::Signer::new(MessageDigest::sha256(), &key).unwrap();
        let sig = s.sign_oneshot_to_vec(&data).unwrap();
        g.bench_function(BenchmarkId::new("sign", name), |b| {
            b.iter(|| {
                let mut s = openssl::sign::Signer::new(MessageDigest::sha256(), &key).unwrap();
                black_box(s.sign_oneshot_to_vec(black_box(&data)).unwrap())
            })
        });
        g.bench_function(BenchmarkId::new("verify", name), |b| {
            b.iter(|| {
                let mut v = RawVerifier::new(MessageDigest::sha256(), &key).unwrap();
                assert!(v.verify_oneshot(black_box(&sig), black_box(&data)).unwrap());
            })
        });
        // What envelope verification calls: the digest, then the key's kept context (RS256).
        let public = PKey::public_key_from_der(&key.public_key_to_der().unwrap()).unwrap();
        let algorithm = match kind {
            KeyType::Rsa2048 => Algorithm::Rs256,
            KeyType::P256 => Algorithm::Es256,
        };
        let sig = match kind {
            KeyType::Rsa2048 => sig.clone(),
            KeyType::P256 => {
                let der = openssl::ecdsa::EcdsaSig::from_der(&sig).unwrap();
                let mut raw = der.r().to_vec_padded(32).unwrap();
                raw.extend(der.s().to_vec_padded(32).unwrap());
                raw
            }
        };
        g.bench_function(BenchmarkId::new("verify_bytes", name), |b| {
            b.iter(|| {
                assert!(
                    verify_bytes(algorithm, &public, black_box(&data), black_box(&sig)).unwrap()
                );
            })
        });
    }
    // SHA-256 of a signing input: OpenSSL's one-shot `SHA256()` (which fetches the algorithm
    // from the provider on every call under OpenSSL 3) against what snodo uses.
    for size in [1024usize, 4096] {
        let data = vec![7u8; size];
        g.bench_function(BenchmarkId::new("sha256_one_shot", size), |b| {
            b.iter(|| black_box(openssl::sha::sha256(black_box(&data))))
        });
        g.bench_function(BenchmarkId::new("sha256", size), |b| {
            b.iter(|| black_box(snodo_envelopes::sha256(black_box(&data))))
        });
    }
    g.finish();
}

fn envelopes(c: &mut Criterion) {
    for (kind_name, kind) in [("rsa2048", KeyType::Rsa2048), ("p256", KeyType::P256)] {
        let f = fixture(kind);
        for (format_name, format) in [("json", Format::Json), ("xml", Format::Xml)] {
            let mut g = c.benchmark_group(format!("{format_name}-{kind_name}"));
            for (size_name, size) in [("1KiB", 1024), ("64KiB", 64 * 1024)] {
                let env = envelope(size, format == Format::Xml);
                let signed = sign(&env, &f.signer, format).unwrap();
                g.throughput(Throughput::Bytes(signed.len() as u64));
                g.bench_function(BenchmarkId::new("sign", size_name), |b| {
                    b.iter(|| black_box(sign(black_box(&env), &f.signer, format).unwrap()))
                });
                g.bench_function(BenchmarkId::new("verify", size_name), |b| {
                    b.iter(|| black_box(f.verifier.verify(black_box(&signed)).unwrap()))
                });
            }
            g.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = raw_operations, envelopes
}
criterion_main!(benches);
