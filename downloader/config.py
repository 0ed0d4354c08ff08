"""Settings shared by the CLI and the ``Downloader`` class, and their parsing."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from multidict import CIMultiDict

from . import __version__

if TYPE_CHECKING:
    from .progress import ProgressEvent

#: Smallest segment ``--split`` will make; smaller files are fetched whole.
MIN_SEGMENT = 4 * 1024 * 1024
DEFAULT_SPLIT = 1
#: Longest --timeout: beyond it (``inf`` included) the event loop's timers overflow.
MAX_TIMEOUT = 7 * 24 * 3600.0
#: Largest single write(2). With aiohttp's chunks (fresh 256 KiB objects),
#: writing them whole ran a 1 GiB download at 340-1,300 MiB/s from one run
#: to the next on the benchmark machine (Linux 6.18, ext4), 64 KiB slices at
#: a steady 900-985. From http1's buffer (the same pages, reused) 256 KiB
#: slices are the faster: 20 x 32 MiB to ext4 in a median 0.85 s against
#: 0.94 s, 1 GiB in 0.67-0.84 s against 0.87-1.40 s (2026-11-26).
WRITE_SLICE = 256 * 1024

#: Words that make a header's value a secret, kept out of every file the tool
#: writes: Authorization, Proxy-Authorization, Cookie, X-Api-Key, X-Auth-Token...
#: A header wrongly taken for a secret costs a -H on --retry; the other way
#: round, a credential on disk.
_SECRET_WORDS = (
    "auth",
    "token",
    "key",
    "secret",
    "password",
    "passwd",
    "session",
    "cookie",
    "signature",
    "credential",
)


def is_secret_header(name: str) -> bool:
    """Whether a header's value must never be written to disk."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


#: Headers aiohttp itself drops on a redirect to another origin (http1 too).
ORIGIN_BOUND = frozenset({"authorization", "proxy-authorization", "cookie"})


def secret_names(headers: Iterable[str]) -> set[str]:
    """The other secret-looking headers (X-Api-Key, tokens): kept on the
    origin the user named, through every redirect."""
    return {k for k in headers if is_secret_header(k) and k.lower() not in ORIGIN_BOUND}


DEFAULT_AGENT = f"downloader/{__version__}"
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(?:i?[bB])?\s*$")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_rate(text: str) -> int:
    """``500K``, ``2M``, ``1G`` (powers of 1024) or plain bytes → bytes per second."""
    match = _RATE.match(text)
    if not match:
        raise ValueError(f"invalid rate {text!r}: expected a number with an optional K, M or G")
    value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value <= 0:
        raise ValueError(f"invalid rate {text!r}: must be more than 0")
    return value


def header_pair_problem(name: str, value: str, shown: str | None = None) -> str | None:
    """Why a header cannot go out as given: a name that is not an HTTP
    token would be refused by servers (400), and a line break in a value
    would end the header early (request splitting). ``shown``: the header
    as the user wrote it, for the message."""
    shown = shown or repr(f"{name}: {value}"[:80])
    if not name or any(c == ":" or not 0x21 <= ord(c) <= 0x7E for c in name):
        return f"malformed header {shown}: expected 'Name: value'"
    if any(c in value for c in "\r\n\x00"):
        return f"malformed header {shown}: control characters"
    return None


def one_spelling(headers: CIMultiDict[str]) -> CIMultiDict[str]:
    """A name given twice, spelled as first given: aiohttp keeps the values
    of a repeated name only when they are spelled alike (``X-A`` then
    ``x-a`` would send ``x-a`` alone). Done once per entry, not per request."""
    if len(headers) == len({name.lower() for name in headers}):
        return headers
    first: dict[str, str] = {}
    alike: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        alike.add(first.setdefault(name.lower(), name), value)
    return alike


@dataclass(frozen=True)
class Settings:
    """Everything that shapes a run; the CLI builds one from its options."""

    output_dir: Path = Path(".")
    jobs: int = 8
    per_host: int | None = None
    split: int = DEFAULT_SPLIT
    retries: int = 5
    timeout: float = 30.0
    limit_rate: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    user_agent: str = DEFAULT_AGENT
    overwrite: bool = False
    resume: bool = True
    content_disposition: bool = False
    insecure: bool = False
    max_redirects: int = 10
    #: processes sharing a long list's transfers (workers.py); None: as
    #: many as pay on this machine (two where two cores are free), 1: never
    #: fork (a library's default; the command line's is None)
    processes: int | None = 1
    report: Path | None = None
    quiet: bool = False
    #: None: bars when stderr is a terminal, plain lines otherwise;
    #: True bars, "lines" lines, False nothing.
    progress: bool | Literal["lines"] | None = None
    on_progress: Callable[[ProgressEvent], Any] | None = None

    def recorded(self) -> dict[str, Any]:
        """What ``--retry`` continues with: the options that shape requests and
        files, never secrets (see :func:`is_secret_header`), never presentation."""
        return {
            "jobs": self.jobs,
            "per_host": self.per_host,
            "split": self.split,
            "retries": self.retries,
            "timeout": self.timeout,
            "limit_rate": self.limit_rate,
            "header": [[k, v] for k, v in self.headers.items() if not is_secret_header(k)],
            # names only: --retry says which to pass again
            "withheld_headers": [k for k in self.headers if is_secret_header(k)],
            "user_agent": None if self.user_agent == DEFAULT_AGENT else self.user_agent,
            "overwrite": self.overwrite,
            "content_disposition": self.content_disposition,
            "insecure": self.insecure,
            "max_redirects": self.max_redirects,
        }

    def __post_init__(self) -> None:
        for name in ("jobs", "split"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("retries", "max_redirects"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more")
        if self.per_host is not None and self.per_host < 1:
            raise ValueError("per_host must be at least 1")
        if self.processes is not None and self.processes < 1:
            raise ValueError("processes must be at least 1")
        if not 0 < self.timeout <= MAX_TIMEOUT:
            raise ValueError(f"timeout must be more than 0 and at most {MAX_TIMEOUT:.0f} seconds")
        if self.limit_rate is not None and self.limit_rate <= 0:
            raise ValueError("limit_rate must be more than 0")
        # what the command line refuses for -H and --user-agent, a script
        # cannot slip through: its every request would fail
        for name, value in [*self.headers.items(), ("User-Agent", self.user_agent)]:
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError(f"header {name!r}: names and values must be str")
            problem = header_pair_problem(name, value)
            if problem:
                raise ValueError(problem)
