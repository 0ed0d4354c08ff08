"""The proxy of each request, from ``HTTP_PROXY``, ``HTTPS_PROXY`` and ``NO_PROXY``.

Decided again for every hop of a redirect chain, as ``curl -L`` does: an
aiohttp client middleware (middlewares run once per request sent, each
redirect hop included) sets the proxy of the request about to go out. So a
host named in ``NO_PROXY`` is reached directly even through a redirect, and
an ``http://`` URL that redirects to ``https://`` uses ``HTTPS_PROXY`` for
the second hop (and no proxy when only ``HTTP_PROXY`` is set).

The variables are read once per run, and each (scheme, host, port) is looked
up once: with no proxy variable set nothing is installed at all (aiohttp's
``trust_env`` would read the environment in a worker thread per request).

Accepted, as by curl, wget and aria2c: a proxy without a scheme
(``host:3128``, ``user:pw@host:3128``: ``http://``), ``https://`` proxies
(TLS to the proxy), credentials in the proxy URL (percent-decoded, sent as
``Proxy-Authorization: Basic``). ``NO_PROXY`` entries: ``*``, host names and
domains (``example.com`` and ``.example.com`` cover ``www.example.com``),
IP addresses, CIDR blocks (``10.0.0.0/8``, ``fd00::/8``), each optionally
with ``:port`` (then only that port is bypassed; ``[::1]:8080`` for IPv6).
A variable that cannot be used fails the entries it applies to, at once, with
a message that names it: traffic never bypasses a configured proxy silently,
and no message shows the proxy's credentials.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from multidict import CIMultiDict
from yarl import URL

from .errors import DownloadError
from .text import printable

if TYPE_CHECKING:
    import aiohttp
    from aiohttp.client_middlewares import ClientHandlerType

_SCHEMES = ("http", "https")
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_BRACKETED = re.compile(r"\[([^\]]+)\](?::(\d+))?")


@dataclass(frozen=True, slots=True)
class Proxy:
    """A usable proxy: its origin (no credentials) and, when its URL has
    credentials, the ``Proxy-Authorization`` they make."""

    url: URL
    authorization: str | None = None


def shown(value: str) -> str:
    """A proxy variable's value fit for a message: whatever comes before its
    last ``@`` (user and password) hidden, control characters escaped."""
    head, at, tail = value.rpartition("@")
    if at:
        scheme, sep, _ = head.partition("://")
        value = f"{scheme}{sep}***@{tail}" if sep else f"***@{tail}"
    return printable(value)


def parse_proxy(name: str, value: str) -> Proxy | str:
    """The proxy a variable names, or why it cannot be used (a message that
    names the variable, without credentials)."""
    text = value.strip()
    if "://" not in text:
        text = "http://" + text  # as curl, wget and aria2c take it
    label = f"{name}={shown(text)}"
    try:
        url = URL(text)
        host, port = url.raw_host, url.port
    except (ValueError, TypeError):
        return f"{label}: not a valid proxy URL"
    if url.scheme not in _SCHEMES:
        return f"{label}: unsupported proxy scheme; use an http:// or https:// proxy URL"
    if not host or port is None:
        return f"{label}: not a valid proxy URL"
    authorization = None
    if url.raw_user is not None or url.raw_password is not None:
        user = url.user or ""
        if ":" in user:  # %3A: Basic cannot tell it from the separator
            return f"{label}: invalid proxy credentials"
        pair = f"{user}:{url.password or ''}".encode("utf-8", "surrogateescape")
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    return Proxy(url.origin(), authorization)


class NoProxy:
    """``NO_PROXY``: the hosts reached directly, whatever the proxy."""

    def __init__(self, value: str) -> None:
        self.everything = False
        self.names: list[tuple[str, int | None]] = []
        self.networks: list[tuple[_Network, int | None]] = []
        for entry in value.replace(",", " ").split():
            self._add(entry)

    def _add(self, entry: str) -> None:
        if entry == "*":
            self.everything = True
            return
        host, port = entry, None
        bracketed = _BRACKETED.fullmatch(entry)
        if bracketed:
            host = bracketed[1]
            port = int(bracketed[2]) if bracketed[2] else None
        elif entry.count(":") == 1:  # host:port (more colons: an IPv6 address)
            host, _, digits = entry.partition(":")
            if not digits.isdigit():
                return
            port = int(digits)
        try:
            network = ipaddress.ip_network(host, strict=False)
        except ValueError:
            if "/" in host:
                return  # neither a CIDR block nor a host name
            name = host.lstrip("*").strip(".").lower()
            if name:
                self.names.append((name, port))
        else:
            self.networks.append((network, port))

    def bypass(self, host: str, port: int | None) -> bool:
        """Whether ``host`` (as in a URL, IPv6 without brackets) on ``port``
        is reached directly."""
        if self.everything:
            return True
        host = host.lower().rstrip(".")
        if self.networks:
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                pass
            else:
                for network, only in self.networks:
                    if ip in network and (only is None or only == port):
                        return True
        for name, only in self.names:
            if (host == name or host.endswith("." + name)) and (only is None or only == port):
                return True
        return False


def _variable(env: Mapping[str, str], prefix: str) -> tuple[str, str] | None:
    """The variable in effect for ``prefix`` (``http``, ``https``, ``no``) and
    its value: the lower-case name wins, even empty (as in Python's urllib);
    ``HTTP_PROXY`` is not trusted in a CGI script (httpoxy)."""
    name = f"{prefix}_proxy"
    if name not in env:
        name = name.upper()
        if name not in env or (prefix == "http" and "REQUEST_METHOD" in env):
            return None
    value = env[name].strip()
    return (name, value) if value else None


class EnvProxies:
    """The proxies of a run, read from the environment once. :attr:`active`
    says whether :meth:`middleware` has anything to do."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._proxies: dict[str, Proxy | str] = {}
        for scheme in _SCHEMES:
            found = _variable(env, scheme)
            if found is not None:
                self._proxies[scheme] = parse_proxy(*found)
        no_proxy = _variable(env, "no")
        self.no_proxy = NoProxy(no_proxy[1] if no_proxy else "")
        self._cache: dict[tuple[str, str, int | None], Proxy | str | None] = {}

    @property
    def active(self) -> bool:
        return bool(self._proxies)

    def lookup(self, url: URL) -> Proxy | None:
        """The proxy for ``url``, ``None`` for a direct connection; a
        :class:`DownloadError` (not transient) when its variable is unusable."""
        key = (url.scheme, url.raw_host or "", url.port)
        try:
            found = self._cache[key]
        except KeyError:
            found = self._proxies.get(key[0])
            if found is not None and self.no_proxy.bypass(key[1], key[2]):
                found = None
            self._cache[key] = found
        if isinstance(found, str):
            raise DownloadError(found)
        return found

    async def middleware(
        self, request: aiohttp.ClientRequest, handler: ClientHandlerType
    ) -> aiohttp.ClientResponse:
        """Sets the proxy of each request sent, redirect hops included. A
        direct hop keeps what the session chose (none for our own session;
        a caller's session may have a default proxy of its own)."""
        proxy = self.lookup(request.url)
        if proxy is not None:
            if proxy.authorization is None:
                request.update_proxy(proxy.url, None, None)
            elif request.is_ssl():  # sent with CONNECT (a new dict: aiohttp adds Host to it)
                auth = CIMultiDict({"Proxy-Authorization": proxy.authorization})
                request.update_proxy(proxy.url, None, auth)
            else:  # sent with the request itself, in absolute form
                request.update_proxy(proxy.url, None, None)
                request.headers.setdefault("Proxy-Authorization", proxy.authorization)
        return await handler(request)
