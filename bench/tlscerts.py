"""A certificate authority and a server certificate for the TLS scenarios, made with trustme.

    python bench/tlscerts.py DIR

writes DIR/ca.pem (the CA, for clients that verify), DIR/chain.pem (the server
certificate for 127.0.0.1 and localhost followed by its chain) and DIR/key.pem
(its private key, unencrypted PKCS#8: granian's rustls reads only PKCS#8, and
every other server reads it too). Keys are ECDSA P-256, trustme's default.
Run with the bench venv's Python, where trustme is installed.
"""

from __future__ import annotations

import os
import sys


def write(directory: str) -> dict:
    import trustme
    from cryptography.hazmat.primitives import serialization

    os.makedirs(directory, exist_ok=True)
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    paths = {name: os.path.join(directory, f"{name}.pem") for name in ("ca", "chain", "key")}
    ca.cert_pem.write_to_path(paths["ca"])
    with open(paths["chain"], "wb") as f:
        for blob in leaf.cert_chain_pems:
            f.write(blob.bytes())
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    with open(paths["key"], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[1])
    for name, path in write(sys.argv[1]).items():
        print(f"{name}={path}")
