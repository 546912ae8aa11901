"""TLS helpers for the end-to-end tests: certificates and clients.

- ``Pki``: a certificate authority (trustme) with an intermediate CA, a server
  certificate chain for ``localhost``/``127.0.0.1`` (leaf, then the
  intermediate), client certificates from that CA and from an unknown one,
  written to files the server options take.
- ``openssl_rsa_key_cert``: an RSA key made by the ``openssl`` command, its
  certificate signed by the test CA, and the key encrypted as PKCS#1
  (``-traditional``) or PKCS#8 (``pkcs8 -topk8 -v2 aes-256-cbc``).
- Clients: ``client_ctx`` (an ssl context trusting the test CA),
  ``tls_connect`` (a verified TLS socket wrapped in helpers' ``RawConn``),
  ``client_hello`` (the bytes of a real ClientHello, for partial sends).
- ``tls_where``: host and port (or the socket path) from the running line,
  which says https:// for a TLS server.
"""

from __future__ import annotations

import re
import os
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import trustme
from cryptography import x509

from helpers import CasgiProcess, RawConn

HAVE_OPENSSL = shutil.which("openssl") is not None
HAVE_CURL = shutil.which("curl") is not None


def tool_env() -> dict:
    """The environment for the external clients (curl, openssl): without the
    sanitizer runtime tests/asan.sh preloads for the server (curl hangs with
    it preloaded); the clients are not what is under test."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    return env

HTTPS_RUNNING_RE = re.compile(r"casgi running on https://(?P<host>[^\s]+):(?P<port>\d+) \(Press CTRL\+C to quit\)")

# TLS 1.3 suites by IANA id (RFC 8446, appendix B.4).
TLS13_SUITES = {
    "TLS_AES_128_GCM_SHA256": 0x1301,
    "TLS_AES_256_GCM_SHA384": 0x1302,
    "TLS_CHACHA20_POLY1305_SHA256": 0x1303,
}


def pem_to_der(pem: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem)


def subject_rfc4514(pem: bytes) -> str:
    """A certificate's subject as an RFC 4514 string (most specific first)."""
    return x509.load_pem_x509_certificate(pem).subject.rfc4514_string()


@dataclass
class CertFiles:
    """One identity on disk: `chain` (leaf first), `key`, and the PEM texts."""

    chain: Path
    key: Path
    leaf_pem: str
    chain_pems: list

    @property
    def leaf_der(self) -> bytes:
        return pem_to_der(self.leaf_pem)


class Pki:
    """The test CA, its intermediate, and the identities the tests use."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA(organization_name="casgi test root")
        self.inter = self.ca.create_child_ca()
        self.ca_file = root / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.ca_key_file = root / "ca-key.pem"
        self.ca.private_key_pem.write_to_path(str(self.ca_key_file))
        self.server = self.issue("server", self.inter, "localhost", "127.0.0.1")
        self.client = self.issue("client", self.inter, "alice@example.org", common_name="alice",
                                 organization_name="Example Org")
        self.stranger_ca = trustme.CA(organization_name="unknown CA")
        self.stranger = self.issue("stranger", self.stranger_ca, "mallory@example.org",
                                   common_name="mallory")

    def issue(self, name: str, ca: trustme.CA, *identities: str, **kw) -> CertFiles:
        """A certificate from `ca` (its chain up to, not including, the root)."""
        leaf = ca.issue_cert(*identities, **kw)
        chain_path = self.root / f"{name}-chain.pem"
        key_path = self.root / f"{name}-key.pem"
        pems = [b.bytes().decode() for b in leaf.cert_chain_pems]
        chain_path.write_text("".join(pems))
        leaf.private_key_pem.write_to_path(str(key_path))
        return CertFiles(chain_path, key_path, pems[0], pems)

    def server_cert(self, name: str) -> CertFiles:
        """Another server identity for localhost (a new key and serial)."""
        return self.issue(name, self.inter, "localhost", "127.0.0.1", common_name=name)


def run_openssl(*args: str, stdin: Optional[bytes] = None, timeout: float = 20.0) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, timeout=timeout,
                          env=tool_env())


def openssl_rsa_key_cert(pki: Pki, name: str, password: str) -> dict:
    """An RSA key and certificate made with the openssl command line. Returns
    paths: 'cert', 'plain' (the unencrypted key), 'pkcs1' (encrypted,
    "BEGIN RSA PRIVATE KEY" with a DEK-Info header), 'pkcs8' (encrypted,
    "BEGIN ENCRYPTED PRIVATE KEY")."""
    d = pki.root
    out = {k: d / f"{name}-{k}.pem" for k in ("cert", "plain", "pkcs1", "pkcs8")}
    csr, ext = d / f"{name}.csr", d / f"{name}.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    steps = [
        ["genrsa", "-out", str(out["plain"]), "2048"],
        ["rsa", "-in", str(out["plain"]), "-traditional", "-aes256", "-passout", f"pass:{password}",
         "-out", str(out["pkcs1"])],
        ["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", str(out["plain"]), "-passout", f"pass:{password}",
         "-out", str(out["pkcs8"])],
        ["req", "-new", "-key", str(out["plain"]), "-subj", f"/CN={name}", "-out", str(csr)],
        ["x509", "-req", "-in", str(csr), "-CA", str(pki.ca_file), "-CAkey", str(pki.ca_key_file),
         "-set_serial", "4242", "-days", "30", "-extfile", str(ext), "-out", str(out["cert"])],
    ]
    for step in steps:
        r = run_openssl(*step)
        assert r.returncode == 0, f"openssl {' '.join(step)} failed: {r.stderr.decode()}"
    pkcs1 = out["pkcs1"].read_text()
    assert pkcs1.startswith("-----BEGIN RSA PRIVATE KEY-----") and "Proc-Type: 4,ENCRYPTED" in pkcs1, pkcs1[:200]
    assert out["pkcs8"].read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    return out


def client_ctx(pki: Pki, alpn: Optional[list] = None, cert: Optional[CertFiles] = None,
               max_version: Optional[ssl.TLSVersion] = None, ciphers: Optional[str] = None) -> ssl.SSLContext:
    """A client context that verifies the server against the test CA."""
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    if cert is not None:
        ctx.load_cert_chain(str(cert.chain), str(cert.key))
    if max_version is not None:
        ctx.maximum_version = max_version
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    return ctx


def tls_connect(port: int, ctx: ssl.SSLContext, host: str = "127.0.0.1", timeout: float = 5.0,
                session: Optional[ssl.SSLSession] = None) -> RawConn:
    """A TCP connection with a completed, verified handshake, as a RawConn
    (its `sock` is the ssl.SSLSocket). An EOF without the server's
    close_notify raises ssl.SSLEOFError instead of reading as a clean end."""
    raw = socket.create_connection((host, port), timeout=timeout)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        s = ctx.wrap_socket(raw, server_hostname="localhost", session=session, suppress_ragged_eofs=False)
    except BaseException:
        raw.close()
        raise
    return RawConn(s, timeout)


class BioSock:
    """A TLS client over a raw TCP socket through memory BIOs, so the test
    decides how the ciphertext is cut into sends. It has the socket methods
    RawConn uses (recv decrypts, sendall encrypts and sends at once)."""

    def __init__(self, port: int, ctx: ssl.SSLContext, timeout: float = 5.0, byte_delay: Optional[float] = None):
        self.raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self.byte_delay = byte_delay  # set: the handshake's sends go one byte at a time
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                data = self.raw.recv(65536)
                if not data:
                    raise ConnectionError("the server closed during the handshake")
                self.incoming.write(data)
        self._flush()
        self.byte_delay = None

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.send_raw(data, self.byte_delay)

    def send_raw(self, data: bytes, byte_delay: Optional[float] = None) -> None:
        if byte_delay is None:
            self.raw.sendall(data)
            return
        for i in range(len(data)):
            self.raw.sendall(data[i:i + 1])
            if byte_delay:
                time.sleep(byte_delay)

    def encrypt(self, plain: bytes) -> bytes:
        """The records carrying `plain`, not sent."""
        self.obj.write(plain)
        return self.outgoing.read()

    # socket methods for RawConn
    def sendall(self, plain: bytes) -> None:
        self.send_raw(self.encrypt(plain))

    def recv(self, n: int) -> bytes:
        while True:
            try:
                return self.obj.read(n)
            except ssl.SSLWantReadError:
                data = self.raw.recv(65536)
                if not data:
                    raise ssl.SSLEOFError("EOF without close_notify")
                self.incoming.write(data)
            except ssl.SSLZeroReturnError:
                return b""

    def settimeout(self, t) -> None:
        self.raw.settimeout(t)

    def getsockname(self):
        return self.raw.getsockname()

    def close(self) -> None:
        self.raw.close()


def client_hello(alpn: Optional[list] = None) -> bytes:
    """The first flight of a real TLS client: one ClientHello record."""
    ctx = ssl.create_default_context()
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    data = outgoing.read()
    assert data[:1] == b"\x16" and len(data) > 100, data[:16]
    return data


def tls_where(p: CasgiProcess) -> CasgiProcess:
    """Sets host and port from an https:// running line (helpers only knows http://)."""
    m = HTTPS_RUNNING_RE.search(p.output())
    assert m, f"no https:// running line:\n{p.tail()}"
    p.host, p.port = m.group("host"), int(m.group("port"))
    return p
