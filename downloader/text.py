"""Text from servers and lists, made safe to store and to print.

Status lines and header values arrive as bytes that aiohttp decodes as UTF-8
with surrogate escapes, and lists and URLs come from anyone: such text must
neither break a UTF-8 file (a lone surrogate cannot be encoded) nor drive the
terminal the summary is printed on (ESC, CSI, bidirectional overrides).
"""

from __future__ import annotations

import re

#: C0 and C1 controls (0x9B is CSI on a terminal), the bidirectional marks and
#: overrides that make ``txt.exe`` read as ``exe.txt``, and lone surrogates
#: (not UTF-8): as a character class, for naming's cleaner too.
UNPRINTABLE_CHARS = r"\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNPRINTABLE = re.compile(f"[{UNPRINTABLE_CHARS}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with control characters, bidirectional overrides and lone
    surrogates shown as escapes (``\\x1b``): one line, as typed."""
    return _UNPRINTABLE.sub(_escape, text)


def from_wire(text: str) -> str:
    """Header text decoded by aiohttp, re-read as ISO-8859-1 when it was not
    UTF-8 (HTTP's historical charset: ``Non trouv\\xe9`` from a localised
    server), so it holds no lone surrogates."""
    try:
        raw = text.encode("utf-8", "surrogateescape")  # the bytes as they came
    except UnicodeEncodeError:  # a surrogate no byte stands for: printable() escapes it
        return text
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def shortened(text: str, limit: int = 300) -> str:
    """At most about ``limit`` characters, the middle cut out: a 1 MB URL is
    one line of a summary, not a megabyte of terminal (the report keeps it
    whole)."""
    if len(text) <= limit:
        return text
    keep = limit // 2
    return f"{text[:keep]}…{text[-keep // 2 :]}"
