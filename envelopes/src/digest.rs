//! SHA-256, the one digest of the federation: of signing inputs, envelopes and certificates.
//!
//! Under OpenSSL 3 the one-shot `SHA256()` (`openssl::sha::sha256`) and `EVP_Digest*` with a
//! legacy `EVP_MD` fetch the algorithm from the provider on every call: about 270 ns, almost
//! half the time of hashing a kilobyte (BENCHMARKS.md, section t). The low-level
//! `SHA256_Init`/`Update`/`Final` behind [`openssl::sha::Sha256`] run the same assembly without
//! the fetch, so every SHA-256 of snodo goes through here.

use openssl::sha::Sha256;

/// The SHA-256 digest of `data`.
#[must_use]
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(data);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_fips_180_vectors_and_the_one_shot() {
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex::encode(sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let long = vec![0x5a; 5000];
        assert_eq!(sha256(&long), openssl::sha::sha256(&long));
    }
}
