"""The URL list: wget ``-i`` and aria2c ``-i`` format, read lazily.

A bad line never stops the parse: it turns its entry into an invalid
:class:`Entry` (``error="line N: ..."``) that is reported and never requested.
"""

from __future__ import annotations

import functools
import os
import re
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from multidict import CIMultiDict
from yarl import URL

from .config import header_pair_problem
from .errors import ListError, UnsafeNameError
from .models import Entry
from .naming import clean_out
from .state import redact_loose

#: Accepted spellings of ``checksum=`` algorithms → hashlib names.
ALGORITHMS = {
    "sha-256": "sha256",
    "sha256": "sha256",
    "sha-512": "sha512",
    "sha512": "sha512",
    "sha-1": "sha1",
    "sha1": "sha1",
    "md5": "md5",
}
_HEX_DIGITS = {"sha256": 64, "sha512": 128, "sha1": 40, "md5": 32}
_OPTIONS = ("out", "checksum", "header")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_BAD_URL_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")


def _show(text: str, limit: int = 80) -> str:
    """A bounded repr for messages: a 1 MB line must not become a 1 MB error."""
    if "@" in text and "://" in text:
        text = redact_loose(text)  # before cutting: the cut may end inside a password
    return repr(text if len(text) <= limit else text[:limit] + "…")


def parse_checksum(value: str) -> tuple[str, str]:
    """``ALGO=HEX`` → ``(hashlib_name, lower_hex)``; ValueError with a reason."""
    algo, sep, digest = value.strip().partition("=")
    name = ALGORITHMS.get(algo.strip().lower())
    if not sep or name is None:
        raise ValueError(
            f"malformed checksum {_show(value)}: expected ALGO=HEX with ALGO one of "
            "sha-256, sha-512, sha-1, md5"
        )
    digest = digest.strip().lower()
    if len(digest) != _HEX_DIGITS[name] or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(
            f"malformed checksum {_show(value)}: {algo} needs {_HEX_DIGITS[name]} hex digits"
        )
    return name, digest


#: A URL that yarl takes as it is: http(s), a host of letters, digits, dots
#: and dashes, a port of digits, then printable ASCII. Most lists are such
#: URLs, and this is a tenth of yarl's parse (checked against yarl on 200,000
#: generated URLs; the port's range is checked apart). A punycode label is
#: left to yarl, which refuses those that do not decode (``xn--a``).
_SIMPLE_URL = re.compile(
    r"[Hh][Tt][Tt][Pp][Ss]?://(?![^/?#]*[Xx][Nn]--)[A-Za-z0-9.-]+(?::([0-9]{1,5}))?(?:[/?#][!-~]*)?"
)


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be fetched, or None when it can (the message shows
    it with anything that may be a password hidden)."""
    simple = _SIMPLE_URL.fullmatch(url)
    if simple is not None and (simple[1] is None or int(simple[1]) <= 65535):
        return None
    return _url_problem(url)


@functools.lru_cache(maxsize=32)
def _url_problem(url: str) -> str | None:
    if not url:
        return "empty URL"
    if _BAD_URL_CHARS.search(url):
        return f"invalid URL {_show(url)}: contains white space or control characters"
    match = _SCHEME.match(url)
    if not match:
        return f"invalid URL {_show(url)}: no scheme (expected http:// or https://)"
    scheme = match.group(1).lower()
    if scheme not in ("http", "https"):
        return f"unsupported scheme {scheme!r}"
    if not url[match.end() :].startswith("//"):
        return f"invalid URL {_show(url)}: expected {scheme}://host/..."
    try:
        parsed = URL(url)
        host = parsed.host
        parsed.port  # noqa: B018 - raises on a bad port
    except (ValueError, TypeError) as exc:
        # the parser's words may quote a piece of a password (a bad "port")
        return f"invalid URL {_show(url)}: " + ("cannot parse it" if "@" in url else str(exc))
    if not host:
        return f"invalid URL {_show(url)}: no host"
    return None


def header_problem(value: str) -> str | None:
    """Why ``Name: value`` (``-H``, ``header=``) cannot be sent."""
    name, sep, rest = value.partition(":")
    if not sep:
        return f"malformed header {_show(value)}: expected 'Name: value'"
    return header_pair_problem(name.strip(), rest, _show(value))


def split_header(value: str) -> tuple[str, str]:
    name, _, val = value.partition(":")
    return name.strip(), val.strip()


def entry_problem(entry: Entry) -> str | None:
    """Why an :class:`Entry` built in a script is invalid (the list parser checks per line)."""
    for url in entry.urls:
        problem = url_problem(url)
        if problem:
            return problem
    if entry.out is not None:
        try:
            clean_out(entry.out)
        except UnsafeNameError as exc:
            return str(exc)
    if entry.checksum is not None:
        try:
            parse_checksum(entry.checksum)
        except ValueError as exc:
            return str(exc)
    for name, value in (entry.headers or {}).items():
        problem = header_problem(f"{name}: {value}")
        if problem:
            return problem
    return None


@dataclass
class _Pending:
    line: int
    urls: list[str]
    out: str | None = None
    checksum: str | None = None
    #: a name given twice is sent twice (header= is repeatable, as -H is)
    headers: CIMultiDict[str] | None = None
    error: str | None = None

    def fail(self, line: int, reason: str) -> None:
        if self.error is None:
            self.error = f"line {line}: {reason}"

    def build(self) -> Entry:
        return Entry(
            self.urls[0] if self.urls else "",
            out=self.out,
            checksum=self.checksum,
            headers=self.headers or None,
            mirrors=tuple(self.urls[1:]),
            line=self.line,
            error=self.error,
        )


def _start(number: int, text: str, bad_utf8: bool) -> _Pending:
    urls = [u.strip() for u in text.split("\t") if u.strip()]
    pending = _Pending(number, urls[:1] if bad_utf8 else urls)
    if bad_utf8:
        pending.fail(number, "not valid UTF-8")
        return pending
    for url in urls:
        problem = url_problem(url)
        if problem:
            pending.fail(number, problem)
            break
    return pending


def _option(pending: _Pending, number: int, text: str) -> None:
    key, sep, value = text.strip().partition("=")
    key = key.strip().lower()
    if not sep:
        pending.fail(number, f"malformed option {_show(text.strip())}: expected key=value")
    elif key == "out":
        try:
            clean_out(value)
            pending.out = value.strip()
        except UnsafeNameError as exc:
            pending.fail(number, str(exc))
    elif key == "checksum":
        try:
            parse_checksum(value)
            pending.checksum = value.strip()
        except ValueError as exc:
            pending.fail(number, str(exc))
    elif key == "header":
        problem = header_problem(value)
        if problem:
            pending.fail(number, problem)
        else:
            name, val = split_header(value)
            if pending.headers is None:
                pending.headers = CIMultiDict()
            pending.headers.add(name, val)
    else:
        pending.fail(number, f"unknown option {_show(key, 40)} (known: {', '.join(_OPTIONS)})")


def _numbered_lines(stream: BinaryIO) -> Iterator[tuple[int, str, bool]]:
    for number, raw in enumerate(stream, 1):
        if raw.startswith(b"\xef\xbb\xbf"):  # line 1, or where two lists were joined
            raw = raw[3:]
        raw = raw.rstrip(b"\r\n")
        try:
            yield number, raw.decode("utf-8"), False
        except UnicodeDecodeError:
            yield number, raw.decode("utf-8", "replace"), True


def parse_lines(stream: BinaryIO) -> Iterator[Entry]:
    """Entries of a list read from a binary stream, one at a time."""
    pending: _Pending | None = None
    for number, text, bad in _numbered_lines(stream):
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if text[0] in " \t":  # as wget and aria2c: a no-break space is no indent
            if pending is None:
                yield Entry(
                    stripped[:2000],
                    line=number,
                    error=f"line {number}: option line with no entry above it",
                )
            elif bad:
                pending.fail(number, "not valid UTF-8")
            else:
                _option(pending, number, text)
            continue
        if pending is not None:
            yield pending.build()
        pending = _start(number, stripped, bad)
    if pending is not None:
        yield pending.build()


def parse_text(text: str) -> list[Entry]:
    """Entries of a list held in a string (tests, scripts)."""
    import io

    return list(parse_lines(io.BytesIO(text.encode("utf-8"))))


#: How much of a list is looked at, before anything is read, to tell a
#: binary file given by mistake (a program, an archive) from a text list.
_SNIFF = 8192


#: How binary files start (programs, archives, images, compressed data):
#: given as the list by mistake, they are a usage error. Anything else is a
#: list, however hostile its lines: each bad one fails its own entry.
_MAGIC = (
    b"\x7fELF",  # programs, libraries
    b"MZ",  # Windows programs
    b"\xcf\xfa\xed\xfe",  # Mach-O
    b"\x1f\x8b",  # gzip
    b"PK\x03\x04",  # zip, jar, docx, wheel
    b"\xfd7zXZ\x00",  # xz
    b"7z\xbc\xaf\x27\x1c",  # 7-Zip
    b"(\xb5/\xfd",  # zstd
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # JPEG
    b"GIF8",
    b"%PDF-",
    b"SQLite format 3\x00",
)


def _binary_line(head: bytes) -> int | None:
    """The line of the first NUL byte (or 1), when ``head`` (the start of a
    list) is a known binary format's (see ``_MAGIC``; a tar archive has
    ``ustar`` at byte 257)."""
    if head.startswith(_MAGIC) or head[257:262] == b"ustar":
        nul = head.find(b"\x00")
        return head.count(b"\n", 0, nul) + 1 if nul >= 0 else 1
    return None


def _check_text(fd: int, name: str) -> None:
    """ListError when the regular file open at ``fd`` is not a text list.
    Reads with ``pread``: the position, and so what the parser reads, stays."""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return  # a pipe or a terminal cannot be peeked at without consuming it
        head = os.pread(fd, _SNIFF, os.lseek(fd, 0, os.SEEK_CUR))
    except OSError:
        return  # reading will tell, with the reason
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # a UTF-16 byte-order mark
        raise ListError(
            f"URL list {name!r} is UTF-16 text (as Windows PowerShell's > writes it); "
            "save it as UTF-8"
        )
    line = _binary_line(head)
    if line is not None:
        raise ListError(
            f"URL list {name!r} is not a text file (a program, an archive or an image: "
            f"binary from line {line}); a list is UTF-8 text, one URL a line"
        )


def _stdin_fd() -> int:
    """The descriptor of standard input, once it is known to be readable."""
    cannot = "cannot read URL list '-'"
    if sys.stdin is None:  # Python found descriptor 0 closed at startup
        raise ListError(f"{cannot}: standard input is closed")
    try:
        fd = sys.stdin.fileno()
    except (OSError, ValueError):
        return -1  # replaced by an object with no descriptor (a test harness)
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        raise ListError(f"{cannot}: standard input is closed") from None
    if stat.S_ISDIR(mode):
        raise ListError(f"{cannot}: standard input is a directory")
    try:
        import fcntl

        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except (ImportError, OSError):
        return fd
    if flags & os.O_ACCMODE == os.O_WRONLY:
        raise ListError(f"{cannot}: standard input is open for writing only")
    return fd


def iter_list(path: str | Path) -> Iterator[Entry]:
    """Entries of a list file (``-`` for standard input), read lazily.

    Raises :class:`ListError` at once when the file cannot be opened, or is a
    binary file (a NUL byte on most lines of its first 8 KiB; standard input
    only when it is a regular file, since a pipe cannot be peeked at), so
    that the caller can exit with status 2 before anything is downloaded.
    """
    name = str(path)
    if name == "-":
        fd = _stdin_fd()
        if fd >= 0:
            _check_text(fd, name)
        stream: BinaryIO = sys.stdin.buffer
    else:
        try:
            stream = open(path, "rb")  # noqa: SIM115 - closed by the generator
        except OSError as exc:
            raise ListError(f"cannot read URL list {name!r}: {exc.strerror or exc}") from exc
        if Path(path).is_dir():
            stream.close()
            raise ListError(f"cannot read URL list {name!r}: is a directory")
        try:
            _check_text(stream.fileno(), name)
        except ListError:
            stream.close()
            raise

    def generate() -> Iterator[Entry]:
        try:
            yield from parse_lines(stream)
        except OSError as exc:
            raise ListError(f"cannot read URL list {name!r}: {exc.strerror or exc}") from exc
        finally:
            if name != "-":
                stream.close()

    return generate()


def load_list(path: str | Path) -> list[Entry]:
    """Read a whole list file; invalid lines come back as entries with ``.error`` set."""
    return list(iter_list(path))


def entries_from(items: Iterable[str | Entry]) -> Iterator[Entry]:
    """URL strings or entries → validated entries (invalid ones carry ``error``)."""
    for n, item in enumerate(items, 1):
        if isinstance(item, str):
            entry = Entry(item)
        elif isinstance(item, Entry):
            entry = item
        else:  # one bad item is one invalid entry, as a bad line is
            kind = type(item).__name__
            entry = Entry(
                str(item)[:200], error=f"entry {n}: expected a URL (str) or an Entry, not {kind}"
            )
        if entry.error is None:
            problem = entry_problem(entry)
            if problem:
                prefix = f"line {entry.line}: " if entry.line else ""
                entry = Entry(
                    entry.url,
                    out=entry.out,
                    checksum=entry.checksum,
                    headers=entry.headers,
                    mirrors=entry.mirrors,
                    line=entry.line,
                    error=prefix + problem,
                )
        yield entry
