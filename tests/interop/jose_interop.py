#!/usr/bin/env python3
"""Independent RFC 7515 check of snodo's JSON envelopes, with jwcrypto (not written here).

  jose_interop.py verify CA_PEM JWS_FILE
      Checks that x5c[0] is issued by the CA, verifies the flattened JWS with that
      certificate's key, prints the payload (the envelope JSON) on stdout.
  jose_interop.py sign KEY_PEM CERT_PEM PAYLOAD_FILE ALG
      Signs PAYLOAD_FILE as a flattened JWS (protected: alg, x5c), prints it on stdout.
"""
import base64
import json
import sys

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwcrypto import jwk, jws


def verify(ca_pem, jws_file):
    ca = x509.load_pem_x509_certificate(open(ca_pem, "rb").read())
    raw = open(jws_file, "rb").read().strip()
    outer = json.loads(raw)
    protected = json.loads(base64.urlsafe_b64decode(outer["protected"] + "=" * (-len(outer["protected"]) % 4)))
    leaf = x509.load_der_x509_certificate(base64.b64decode(protected["x5c"][0]))
    leaf.verify_directly_issued_by(ca)
    key = jwk.JWK.from_pem(leaf.public_key().public_bytes(
        encoding=Encoding.PEM,
        format=PublicFormat.SubjectPublicKeyInfo,
    ))
    token = jws.JWS()
    token.deserialize(raw.decode())
    token.verify(key, alg=protected["alg"])
    sys.stdout.write(token.payload.decode())


def sign(key_pem, cert_pem, payload_file, alg):
    key = jwk.JWK.from_pem(open(key_pem, "rb").read())
    cert = x509.load_pem_x509_certificate(open(cert_pem, "rb").read())
    der = cert.public_bytes(Encoding.DER)
    payload = open(payload_file, "rb").read()
    token = jws.JWS(payload)
    token.add_signature(key, alg=None, protected=json.dumps({"alg": alg, "x5c": [base64.b64encode(der).decode()]}))
    sys.stdout.write(token.serialize(compact=False))


if __name__ == "__main__":
    if sys.argv[1] == "verify":
        verify(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "sign":
        sign(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        sys.exit("usage: jose_interop.py verify CA JWS | sign KEY CERT PAYLOAD ALG")
