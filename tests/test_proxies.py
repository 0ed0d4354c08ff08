"""Proxies from the environment, against a real forward proxy on 127.0.0.1
(absolute-form requests and CONNECT, over plain TCP or TLS): chosen again on
every redirect hop, scheme-less and https:// proxy URLs, credentials never
shown, a 407 to CONNECT judged as on plain http, NO_PROXY's forms."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import trustme
from yarl import URL

from downloader import Downloader
from downloader.proxies import EnvProxies, NoProxy, Proxy, parse_proxy, shown

from .server import FaultServer
from .test_cli import report, run_cli

SECRET = "S3cretPW"
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "REQUEST_METHOD")


class ForwardProxy:
    """A forward proxy on 127.0.0.1 for loopback targets: absolute-form
    requests (forwarded with ``Connection: close``) and CONNECT tunnels,
    optionally over TLS; or one fixed answer to every request. Logs
    (method, target, Proxy-Authorization) of what it was asked."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None, answer: bytes = b"") -> None:
        self.ssl_context = ssl_context
        self.answer = answer
        self.log: list[tuple[str, str, str | None]] = []
        self.url = ""
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> ForwardProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"
        return self

    async def stop(self) -> None:
        self.server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    @property
    def seen(self) -> list[tuple[str, str]]:
        return [(method, target) for method, target, _ in self.log]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, target, _ = head[0].split(" ", 2)
        headers = [tuple(x.strip() for x in line.split(":", 1)) for line in head[1:] if line]
        auth = next((v for k, v in headers if k.lower() == "proxy-authorization"), None)
        self.log.append((method, target, auth))
        if self.answer:
            writer.write(self.answer)
            await writer.drain()
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            assert host in ("127.0.0.1", "localhost"), host
            r2, w2 = await asyncio.open_connection("127.0.0.1", int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(_pipe(reader, w2), _pipe(r2, writer))
            return
        url = URL(target)
        assert url.scheme == "http" and url.host in ("127.0.0.1", "localhost"), target
        r2, w2 = await asyncio.open_connection("127.0.0.1", url.port)
        lines = [f"{method} {url.raw_path_qs} HTTP/1.1"]
        skip = ("proxy-authorization", "proxy-connection", "connection")
        lines += [f"{k}: {v}" for k, v in headers if k.lower() not in skip]
        lines.append("Connection: close")
        w2.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await _pipe(r2, writer)
        w2.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
async def proxy() -> AsyncIterator[ForwardProxy]:
    px = await ForwardProxy().start()
    try:
        yield px
    finally:
        await px.stop()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def bundle(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
async def tls_server(ca: trustme.CA) -> AsyncIterator[FaultServer]:
    srv = await FaultServer().start(ssl_context=_server_context(ca))
    try:
        yield srv
    finally:
        await srv.stop()


def _state_text(out: Path) -> str:
    return "".join(
        p.read_bytes().decode("utf-8", "replace")
        for p in (out / ".downloader").rglob("*")
        if p.is_file()
    )


# -- the proxy is chosen again on every redirect hop ---------------------------


@pytest.mark.parametrize("start_at", ["127.0.0.1", "localhost"])
async def test_each_redirect_hop_has_its_own_proxy_decision(
    server: FaultServer,
    proxy: ForwardProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    start_at: str,
) -> None:
    """As ``curl -L``: a host in NO_PROXY is reached directly even through a
    redirect, and a proxied host is proxied even when a bypassed one sent there."""
    other = "localhost" if start_at == "127.0.0.1" else "127.0.0.1"
    port = URL(server.base).port
    server.add("/r", redirect=f"http://{other}:{port}/f.bin")
    server.add("/f.bin", b"body")
    monkeypatch.setenv("HTTP_PROXY", f"http://alice:{SECRET}@127.0.0.1:{proxy.port}")
    monkeypatch.setenv("NO_PROXY", "localhost")
    results = await Downloader(tmp_path, progress=False, retries=0).download(
        [f"http://{start_at}:{port}/r"]
    )
    assert results.complete and (tmp_path / "r").read_bytes() == b"body"
    proxied = f"http://127.0.0.1:{port}/r" if start_at == "127.0.0.1" else f"{server.base}/f.bin"
    assert proxy.seen == [("GET", proxied)]
    assert server.requests == {"/r": 1, "/f.bin": 1}
    # the hop that went direct carried no proxy credentials
    assert all("Proxy-Authorization" not in h for _, _, h in server.request_log)


@pytest.mark.parametrize(
    ("variable", "expected"),
    [
        ("HTTPS_PROXY", [("CONNECT", "{tls}")]),  # the https hop uses HTTPS_PROXY
        ("HTTP_PROXY", [("GET", "{plain}/r")]),  # and no proxy without one
    ],
)
async def test_an_http_to_https_redirect_uses_the_https_proxy_for_the_https_hop(
    server: FaultServer,
    tls_server: FaultServer,
    proxy: ForwardProxy,
    bundle: str,
    tmp_path: Path,
    variable: str,
    expected: list[tuple[str, str]],
) -> None:
    target = tls_server.add("/s.bin", b"over tls")
    server.add("/r", redirect=target)
    code, _, err = await run_cli(
        server.url("/r"),
        "-o",
        str(tmp_path / "out"),
        "-q",
        env={variable: proxy.url, "SSL_CERT_FILE": bundle},
    )
    assert code == 0, err
    assert (tmp_path / "out" / "r").read_bytes() == b"over tls"
    tls = tls_server.base.removeprefix("https://")
    assert proxy.seen == [(m, t.format(tls=tls, plain=server.base)) for m, t in expected]
    assert tls_server.requests == {"/s.bin": 1}


async def test_credentials_go_with_connect_and_the_tunnel_is_reused(
    tls_server: FaultServer, proxy: ForwardProxy, bundle: str, tmp_path: Path
) -> None:
    urls = [tls_server.add(f"/{n}.bin", n.encode()) for n in ("a", "b", "c")]
    code, _, err = await run_cli(
        *urls,
        "-o",
        str(tmp_path / "out"),
        "-j",
        "1",
        env={
            "HTTPS_PROXY": f"http://alice:{SECRET}@127.0.0.1:{proxy.port}",
            "SSL_CERT_FILE": bundle,
        },
    )
    assert code == 0, err
    expected = f"Basic {base64.b64encode(f'alice:{SECRET}'.encode()).decode()}"
    assert proxy.log == [("CONNECT", tls_server.base.removeprefix("https://"), expected)]
    assert not any("proxy" in k.lower() for h in tls_server.header_log for k, _ in h)
    assert SECRET not in err and SECRET not in _state_text(tmp_path / "out")


async def test_caller_middlewares_and_the_secret_guard_still_run_with_proxies(
    server: FaultServer, proxy: ForwardProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = URL(server.base).port
    server.add("/r", redirect=f"http://localhost:{port}/f.bin")
    server.add("/f.bin", b"body")
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "localhost")
    hops: list[str] = []

    async def logging(
        req: aiohttp.ClientRequest,
        handler: Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]],
    ) -> aiohttp.ClientResponse:
        hops.append(str(req.url))
        return await handler(req)

    async with aiohttp.ClientSession(middlewares=(logging,)) as session:
        results = await Downloader(
            tmp_path, progress=False, retries=0, session=session, headers={"X-Api-Key": "k"}
        ).download([server.url("/r")])
    assert results.complete
    assert hops == [server.url("/r"), f"http://localhost:{port}/f.bin"]
    assert proxy.seen == [("GET", server.url("/r"))]
    # the redirect went to another origin: the secret header stayed home
    assert "X-Api-Key" not in server.request_log[-1][2]


# -- proxy URLs: without a scheme, https://, unusable ones ---------------------


@pytest.mark.parametrize("userinfo", ["", f"alice:{SECRET}@"])
async def test_a_proxy_without_a_scheme_is_an_http_proxy(
    server: FaultServer, proxy: ForwardProxy, tmp_path: Path, userinfo: str
) -> None:
    """As curl, wget and aria2c take it; its password shown nowhere."""
    url = server.add("/f.bin", b"body")
    out = tmp_path / "out"
    code, _, err = await run_cli(
        url, "-o", str(out), env={"http_proxy": f"{userinfo}127.0.0.1:{proxy.port}"}
    )
    assert code == 0, err
    assert (out / "f.bin").read_bytes() == b"body"
    expected = f"Basic {base64.b64encode(f'alice:{SECRET}'.encode()).decode()}"
    assert proxy.log == [("GET", url, expected if userinfo else None)]
    assert SECRET not in err and SECRET not in _state_text(out)


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "HTTPS_PROXY"])
async def test_an_https_proxy_url_is_used_and_nothing_is_printed(
    server: FaultServer,
    tls_server: FaultServer,
    ca: trustme.CA,
    bundle: str,
    tmp_path: Path,
    variable: str,
) -> None:
    """TLS to the proxy (TLS in TLS for an https URL), never a silent bypass,
    and aiohttp's own warning is not printed under -q."""
    px = await ForwardProxy(ssl_context=_server_context(ca)).start()
    try:
        if variable == "HTTP_PROXY":
            url, expected = server.add("/f.bin", b"body"), ("GET", server.url("/f.bin"))
        else:
            url = tls_server.add("/f.bin", b"body")
            expected = ("CONNECT", tls_server.base.removeprefix("https://"))
        out = tmp_path / "out"
        result = await run_cli(
            url, "-o", str(out), "-q", env={variable: px.url, "SSL_CERT_FILE": bundle}
        )
        assert result == (0, "", "")
        assert (out / "f.bin").read_bytes() == b"body"
        assert px.seen == [expected]
    finally:
        await px.stop()


@pytest.mark.parametrize(
    "value",
    [
        f"socks5://alice:{SECRET}@127.0.0.1:1080",
        f"http://alice:{SECRET}@127.0.0.1:notaport",
        f"alice:{SECRET}@",
    ],
)
async def test_an_unusable_proxy_fails_its_entries_at_once_naming_the_variable(
    server: FaultServer, tmp_path: Path, value: str
) -> None:
    plain = server.add("/plain.bin", b"plain")  # no proxy for http: unaffected
    secure = "https://127.0.0.1:1/secure.bin"  # never contacted
    out = tmp_path / "out"
    code, _, err = await run_cli(
        plain, secure, "-o", str(out), "--retries", "3", env={"HTTPS_PROXY": value}
    )
    assert code == 1
    entries = {e["url"]: e for e in report(out)["entries"]}
    assert entries[plain]["status"] == "complete"
    failed = entries[secure]
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert failed["error"].startswith("HTTPS_PROXY=") and "***@" in failed["error"]
    assert failed["error"] in err
    assert SECRET not in err and SECRET not in _state_text(out)


async def test_a_407_to_connect_fails_at_once_as_on_plain_http(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = (
        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
        b'Proxy-Authenticate: Basic realm="x"\r\nContent-Length: 0\r\n\r\n'
    )
    px = await ForwardProxy(answer=answer).start()
    try:
        monkeypatch.setenv("HTTP_PROXY", px.url)
        monkeypatch.setenv("HTTPS_PROXY", px.url)
        urls = ["http://127.0.0.1:1/a.bin", "https://127.0.0.1:1/b.bin"]
        results = await Downloader(tmp_path, progress=False, retries=3).download(urls)
    finally:
        await px.stop()
    assert len(results.failed) == 2
    for failed in results.failed:
        assert failed.error == "HTTP 407 Proxy Authentication Required"
        assert failed.attempts == 1
    assert px.seen == [("GET", urls[0]), ("CONNECT", "127.0.0.1:1")]


async def test_a_proxy_that_never_answers_connect_is_a_timeout_not_a_hang(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiohttp reads the answer to CONNECT with no bound of its own:
    --timeout bounds the whole way to a connection."""
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # the request is read by nobody, answered never

    px = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{px.sockets[0].getsockname()[1]}")
        dl = Downloader(tmp_path, progress=False, retries=0, timeout=0.5)
        results = await asyncio.wait_for(dl.download(["https://127.0.0.1:1/a.bin"]), 20)
    finally:
        for writer in held:
            writer.close()
        px.close()
    assert results[0].status == "failed" and "timeout" in (results[0].error or "")


# -- NO_PROXY ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("no_proxy", "proxied"),
    [
        ("127.0.0.0/8", False),
        ("10.0.0.0/8, 127.0.0.1/32", False),
        ("{port}", False),
        ("127.0.0.1:1", True),
        ("::1 localhost", True),
    ],
)
async def test_no_proxy_cidr_blocks_and_ports(
    server: FaultServer,
    proxy: ForwardProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_proxy: str,
    proxied: bool,
) -> None:
    url = server.add("/f.bin", b"body")
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", no_proxy.format(port=server.base.removeprefix("http://")))
    results = await Downloader(tmp_path, progress=False, retries=0).download([url])
    assert results.complete
    assert proxy.seen == ([("GET", url)] if proxied else [])


def test_no_proxy_matching() -> None:
    no = NoProxy(" .example.com,,internal 10.1.0.0/16  [::1]:8080 fd00::/8 *.corp:443 bad/x ")
    assert no.bypass("example.com", 80) and no.bypass("www.example.com", 443)
    assert not no.bypass("notexample.com", 80)
    assert no.bypass("INTERNAL.", 80) and no.bypass("a.internal", 80)
    assert no.bypass("10.1.2.3", 80) and not no.bypass("10.2.0.1", 80)
    assert no.bypass("::1", 8080) and not no.bypass("::1", 80)
    assert no.bypass("fd00::5", 443) and not no.bypass("fe80::1", 443)
    assert no.bypass("x.corp", 443) and not no.bypass("x.corp", 80)
    assert not no.bypass("bad", 80)
    assert NoProxy("foo, *").bypass("anything", 1)
    assert not NoProxy("").bypass("anything", 1)


# -- reading the variables -------------------------------------------------------


def test_variables_and_their_precedence() -> None:
    assert not EnvProxies({}).active
    assert not EnvProxies({"NO_PROXY": "x", "HTTP_PROXY": " "}).active  # nothing to install
    # the lower-case name wins, even empty (as Python's urllib)
    assert not EnvProxies({"http_proxy": "", "HTTP_PROXY": "http://p:1"}).active
    env = {"http_proxy": "http://low:1", "HTTP_PROXY": "http://up:1"}
    found = EnvProxies(env).lookup(URL("http://h/"))
    assert found is not None and found.url == URL("http://low:1")
    # httpoxy: a CGI script does not trust HTTP_PROXY (a request header)
    assert not EnvProxies({"HTTP_PROXY": "http://p:1", "REQUEST_METHOD": "GET"}).active
    proxies = EnvProxies({"HTTPS_PROXY": "proxy:3128", "NO_PROXY": "direct"})
    assert proxies.lookup(URL("http://h/")) is None
    assert proxies.lookup(URL("https://direct/")) is None
    found = proxies.lookup(URL("https://h/"))
    assert found == Proxy(URL("http://proxy:3128"))


def test_proxy_urls_and_their_credentials() -> None:
    found = parse_proxy("HTTP_PROXY", "http://us%40er:p%40ss@proxy:8080/path")
    assert not isinstance(found, str)
    assert found.url == URL("http://proxy:8080")
    assert found.authorization == "Basic " + base64.b64encode(b"us@er:p@ss").decode()
    found = parse_proxy("HTTPS_PROXY", "https://proxy")
    assert not isinstance(found, str)
    assert (found.url.port, found.url.scheme, found.authorization) == (443, "https", None)
    message = parse_proxy("HTTPS_PROXY", f"socks5://alice:{SECRET}@h:1")
    assert message == (
        "HTTPS_PROXY=socks5://***@h:1: unsupported proxy scheme;"
        " use an http:// or https:// proxy URL"
    )
    for bad in ("http://", "http://a:b@", "http://h:99999", f"a:{SECRET}@h:x"):
        message = parse_proxy("http_proxy", bad)
        assert isinstance(message, str) and message.startswith("http_proxy=")
        assert SECRET not in message
    assert shown(f"u:{SECRET}@x@h:1") == "***@h:1"
    assert shown("http://h:1\x1b[2J") == "http://h:1\\x1b[2J"
