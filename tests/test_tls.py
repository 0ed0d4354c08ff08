"""HTTPS against a real TLS server on 127.0.0.1, with a certificate from a
throw-away CA (trustme): verified by default, skipped only with --insecure."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from downloader import Downloader

from .server import FaultServer
from .test_cli import run_cli


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_server(ca: trustme.CA) -> AsyncIterator[FaultServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    srv = await FaultServer().start(ssl_context=context)
    try:
        yield srv
    finally:
        await srv.stop()


async def test_an_unknown_certificate_fails_that_entry_at_once(
    tls_server: FaultServer, server: FaultServer, tmp_path: Path
) -> None:
    secure = tls_server.add("/s.bin", b"secret")
    plain = server.add("/p.bin", b"plain")
    results = await Downloader(tmp_path, progress=False, retries=3).download([secure, plain])
    failed = results.failed[0]
    assert failed.url == secure and "certificate" in failed.error and failed.attempts == 1
    assert not (tmp_path / "s.bin").exists() and not (tmp_path / "s.bin.part").exists()
    assert (tmp_path / "p.bin").read_bytes() == b"plain"


async def test_insecure_skips_verification(tls_server: FaultServer, tmp_path: Path) -> None:
    url = tls_server.add("/s.bin", b"secret")
    results = await Downloader(tmp_path, progress=False, insecure=True).download([url])
    assert results.complete and (tmp_path / "s.bin").read_bytes() == b"secret"


async def test_a_ca_named_in_ssl_cert_file_is_trusted(
    ca: trustme.CA, tls_server: FaultServer, tmp_path: Path
) -> None:
    """As with curl and wget: the system's CA settings, here SSL_CERT_FILE."""
    url = tls_server.add("/s.bin", b"secret")
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    code, _, err = await run_cli(
        url, "-o", str(tmp_path / "out"), "-q", env={"SSL_CERT_FILE": str(bundle)}
    )
    assert code == 0, err
    assert (tmp_path / "out" / "s.bin").read_bytes() == b"secret"
    code, _, err = await run_cli(url, "-o", str(tmp_path / "out2"), "-q")
    assert code == 1 and "certificate" in err


async def test_tls_failures_read_as_sentences(
    ca: trustme.CA, tls_server: FaultServer, server: FaultServer, tmp_path: Path
) -> None:
    """OpenSSL's reason, without its '[SSL: ...] (_ssl.c:1006)' wrapping;
    https:// to a plain-http server says so."""
    secure = tls_server.add("/s.bin", b"secret")
    plain_as_tls = server.add("/p.bin", b"plain").replace("http://", "https://")
    results = await Downloader(tmp_path, progress=False, retries=0).download([secure, plain_as_tls])
    untrusted, not_tls = (r.error or "" for r in results)
    assert untrusted.startswith("TLS certificate verification failed: ")
    assert not_tls == "TLS error: the server does not speak TLS (an http:// URL?)"
    assert "_ssl.c" not in untrusted + not_tls and "[SSL" not in untrusted + not_tls


async def test_redirects_are_counted_across_http_and_https(
    tls_server: FaultServer, server: FaultServer, tmp_path: Path
) -> None:
    """A chain that goes on over https (aiohttp) is counted whole: the plain
    hops followed first by http1 are not forgotten."""
    server.add("/a", redirect=tls_server.base + "/b")
    tls_server.add("/b", redirect=server.base + "/c")
    server.add("/c", redirect=tls_server.base + "/d")
    tls_server.add("/d", redirect=server.base + "/a")
    dl = Downloader(tmp_path, insecure=True, max_redirects=2, progress=False)
    (record,) = await dl.download([server.base + "/a"])
    assert record.error == "too many redirects (more than 2)"
    dl = Downloader(tmp_path, insecure=True, max_redirects=5, progress=False)
    (record,) = await dl.download([server.base + "/a"])
    assert record.error == "redirect loop (6 redirects)"
