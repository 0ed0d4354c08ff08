"""Pieces of a URL string, cut without parsing it whole: the hot paths ask
these per entry, and an invalid URL must still be cut safely."""

from __future__ import annotations


def authority_end(rest: str) -> int:
    """Where a URL's authority (after ``scheme://``) ends: at the first ``/``,
    ``?`` or ``#``; an ``@`` after that (``?email=me@host``) is not user info."""
    end = len(rest)
    for c in "/?#":
        i = rest.find(c, 0, end)
        if i >= 0:
            end = i
    return end


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
