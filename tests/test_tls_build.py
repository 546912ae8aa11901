"""The built extension and OpenSSL: the module exports nothing but its init
function (the core's and any statically linked library's symbols, OpenSSL's
and nghttp2's included, stay out of the process's global scope), Python's ssl module and casgi work in one process
whichever is imported first, and the TLS options' usage errors."""

import shutil
import subprocess

import pytest

from helpers import run_casgi, run_py


def module_path() -> str:
    out = run_py("import casgi._casgi as m; print(m.__file__)")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(not shutil.which("nm"), reason="nm (binutils) not installed")
def test_exports_only_pyinit():
    out = subprocess.run(["nm", "-D", "--defined-only", module_path()], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    names = [line.split()[-1] for line in out.stdout.splitlines() if line.strip()]
    # Nothing else: no cg_*, SSL_*, nghttp2_* (however the libraries are linked).
    assert names == ["PyInit__casgi"], names


# Both orders; each then uses the ssl module for real (a TLS handshake between
# two in-memory SSLObjects needs a certificate: the default client context,
# its CA store, hashing and a handshake attempt exercise libssl and libcrypto).
SSL_USE = """
import hashlib, ssl
ctx = ssl.create_default_context()
c = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="example.org")
try:
    c.do_handshake()
except ssl.SSLWantReadError:
    pass
assert c.pending() == 0
assert hashlib.sha256(b"x").hexdigest().startswith("2d711642")
print(ssl.OPENSSL_VERSION)
"""


@pytest.mark.parametrize("first", ["ssl", "casgi"])
def test_ssl_and_casgi_side_by_side(first):
    imports = ("import ssl\nimport casgi._casgi as m\n" if first == "ssl"
               else "import casgi._casgi as m\nimport ssl\n")
    out = run_py(imports + SSL_USE + "print(m.__name__)\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "casgi._casgi"
    assert "OpenSSL" in out.stdout


def test_keyfile_without_certfile_is_a_usage_error():
    out = run_casgi("--ssl-keyfile", "/nonexistent/key.pem", "main:app")
    assert out.returncode == 2
    assert "option '--ssl-keyfile' requires '--ssl-certfile'" in out.stderr


def test_old_ssl_version_is_a_usage_error():
    out = run_casgi("--ssl-version", "3", "main:app")
    assert out.returncode == 2
    assert "TLS 1.0 and 1.1 are not supported; the minimum is TLS 1.2" in out.stderr


def test_run_keyword_checks():
    out = run_py("import casgi\ncasgi.run('main:app', ssl_keyfile='/k.pem')\n")
    assert out.returncode != 0
    assert "ValueError: option '--ssl-keyfile' requires '--ssl-certfile'" in out.stderr
    # ssl's IntEnum values are taken as their numbers (str() of one is its name before 3.11).
    out = run_py("import casgi, ssl\ncasgi.run('main:app', ssl_version=ssl.PROTOCOL_TLSv1)\n")
    assert out.returncode != 0
    assert "'--ssl-version': 3: TLS 1.0 and 1.1 are not supported" in out.stderr
    out = run_py("import casgi, ssl\ncasgi.run('main:app', ssl_cert_reqs=ssl.CERT_REQUIRED)\n")
    assert out.returncode != 0
    assert "option '--ssl-cert-reqs' requires '--ssl-certfile'" in out.stderr
