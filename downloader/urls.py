"""Pieces of a URL string, cut without parsing it whole (the hot paths ask
these per entry, and an invalid URL must still be cut safely), and the URL
as it goes on the wire."""

from __future__ import annotations

import re
from urllib.parse import quote

from yarl import URL


def _first_of(text: str, chars: str) -> int:
    """Where the first of ``chars`` is in ``text`` (its length when none is)."""
    end = len(text)
    for c in chars:
        i = text.find(c, 0, end)
        if i >= 0:
            end = i
    return end


def authority_end(rest: str) -> int:
    """Where a URL's authority (after ``scheme://``) ends: at the first ``/``,
    ``?`` or ``#``; an ``@`` after that (``?email=me@host``) is not user info."""
    found = _AUTHORITY_END.search(rest)  # (a third of _first_of's time: per entry, twice)
    return len(rest) if found is None else found.start()


_AUTHORITY_END = re.compile(r"[/?#]")


def identity(url: str) -> str:
    """What makes two URLs one resource for duplicate detection: the
    fragment is never sent, and scheme and host are case-insensitive."""
    url = url.partition("#")[0]
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = authority_end(rest)
    userinfo, at, hostport = rest[:end].rpartition("@")
    return f"{scheme.lower()}://{userinfo}{at}{hostport.lower()}{rest[end:]}"


#: What cannot go into a request line as it is: spaces and controls (refused
#: in lists, possible from a script), non-ASCII, what RFC 3986 excludes, and
#: a ``%`` that starts no escape (``50%off.pdf``: servers answer 400).
#: (Spelled as the characters that may go, printable ASCII but ``"<>\^`{|}``:
#: a class up to U+10FFFF took 4 ms to compile, at every start.)
_NOT_ON_THE_WIRE = re.compile(r"[^!#-;=?-\[\]_a-z~]|%(?![0-9A-Fa-f]{2})")


def wire_url(url: str) -> URL:
    """The URL as the user wrote it, escapes kept: ``%3B`` is not ``;`` (RFC
    3986 §2.2), and curl, wget and aria2c send it byte for byte. yarl would
    normalise the path (``%3B`` → ``;``, ``%41`` → ``A``). What is done, as
    curl does: what cannot go on the wire is encoded (an IDN host as IDNA),
    the scheme and host lower-cased, ``.`` and ``..`` segments resolved."""
    scheme, _, rest = url.partition("://")
    end = authority_end(rest)
    authority, tail = rest[:end], rest[end:]
    if _NOT_ON_THE_WIRE.search(authority):
        authority = URL(f"{scheme}://{authority}").raw_authority
    else:
        userinfo, at, hostport = authority.rpartition("@")
        authority = f"{userinfo}{at}{hostport.lower()}"
    if _NOT_ON_THE_WIRE.search(tail):
        tail = _NOT_ON_THE_WIRE.sub(lambda m: quote(m[0], safe=""), tail)
    if "/." in tail:
        path, mark, query = _cut_query(tail)
        tail = _without_dot_segments(path) + mark + query
    return URL(f"{scheme.lower()}://{authority}{tail}", encoded=True)


def _cut_query(tail: str) -> tuple[str, str, str]:
    """``path``, the ``?`` or ``#`` that ends it (or ""), and what follows."""
    end = _first_of(tail, "?#")
    return tail[:end], tail[end : end + 1], tail[end + 1 :]


def _without_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 on a path that starts with ``/``."""
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        elif seg == ".":
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)
