"""Local file names: derived from the list alone, cleaned, kept inside DIR.

Names never come from what is already on disk, so a rerun maps every entry to
the same file; two entries never share a file.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path
from urllib.parse import unquote

from .errors import UnsafeNameError

#: Longest file name, in UTF-8 bytes: 255 (the usual file system limit) less
#: room for ``.part`` and a de-duplication suffix.
MAX_NAME_BYTES = 240
_MAX_EXT_BYTES = 24
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:]")
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)
_DRIVE = re.compile(r"^[A-Za-z]:")


def _fit(name: str, limit: int = MAX_NAME_BYTES) -> str:
    raw = name.encode("utf-8")
    if len(raw) <= limit:
        return name
    stem, ext = os.path.splitext(name)
    if len(ext.encode("utf-8")) > _MAX_EXT_BYTES:
        stem, ext = name, ""
    room = limit - len(ext.encode("utf-8"))
    stem = stem.encode("utf-8")[:room].decode("utf-8", "ignore")
    return stem + ext


def clean_component(name: str) -> str:
    """One path component, safe on any file system; never empty, ``.`` or ``..``."""
    name = _UNSAFE.sub("_", name).strip()
    if not name.strip("."):
        name = name.replace(".", "_") or "_"
    if name.split(".", 1)[0].upper().rstrip(" ") in _RESERVED:
        name = "_" + name
    return _fit(name)


def name_from_url(url: str) -> str:
    """The last path segment of the URL the user gave, decoded then cleaned.

    Decoding comes first so that an encoded ``%2F`` or ``%2e%2e`` is cleaned
    like the character it stands for and can never become a path.
    """
    rest = url.split("://", 1)[-1]
    rest = rest.split("#", 1)[0].split("?", 1)[0]
    path = rest.partition("/")[2]
    segment = path.rsplit("/", 1)[-1]
    segment = unquote(segment, errors="replace")
    if not segment:
        return "index.html"
    return clean_component(segment)


def clean_out(out: str) -> str:
    """Validate an ``out=`` value; sub-folders are allowed, leaving DIR is not.

    Raises :class:`UnsafeNameError` for absolute paths, drive prefixes and
    ``..`` components, which the contract makes an invalid entry rather than
    something to repair silently.
    """
    if not out or not out.strip():
        raise UnsafeNameError("empty out= name")
    if out.startswith(("/", "\\")) or _DRIVE.match(out):
        raise UnsafeNameError(f"out={out!r} is an absolute path, outside the output directory")
    parts = [p for p in re.split(r"[/\\]", out) if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafeNameError(f"out={out!r} leaves the output directory")
    if not parts:
        raise UnsafeNameError(f"out={out!r} names no file")
    return "/".join(clean_component(p) for p in parts)


def server_name(filename: str | None) -> str | None:
    """A name offered by the server (Content-Disposition), flattened and cleaned."""
    if not filename:
        return None
    name = clean_component(filename)
    return name or None


def numbered(relpath: str, n: int) -> str:
    """``dir/name.ext`` → ``dir/name.N.ext`` (aria2c's style of distinct name)."""
    head, _, base = relpath.rpartition("/")
    stem, ext = os.path.splitext(base)
    if not stem:
        stem, ext = base, ""
    new = _fit(f"{stem}.{n}{ext}", MAX_NAME_BYTES + 8)
    return f"{head}/{new}" if head else new


class Namer:
    """Hands out one distinct relative path per entry, in list order.

    Memory grows with the number of distinct names, not with their entries'
    other data: a name maps to a hash of its URL and the claiming line.
    """

    def __init__(self) -> None:
        self._taken: dict[str, tuple[int, str]] = {}

    def claim(self, url: str, relpath: str, ref: str) -> tuple[str, str | None]:
        """Return ``(path, None)``, or ``(path, first_ref)`` for a duplicate;
        ``ref`` names the claiming entry (``line 12``) in duplicate messages."""
        key = hash(url)
        held = self._taken.get(relpath)
        if held is None:
            self._taken[relpath] = (key, ref)
            return relpath, None
        if held[0] == key:
            return relpath, held[1]
        n = 1
        while True:
            candidate = numbered(relpath, n)
            held = self._taken.get(candidate)
            if held is None:
                self._taken[candidate] = (key, ref)
                return candidate, None
            if held[0] == key:
                return candidate, held[1]
            n += 1


def target(root: Path, relpath: str, *, create: bool = True) -> Path:
    """The absolute path for ``relpath`` under ``root``, folders created.

    Each folder on the way is checked with ``lstat``: a symlink planted there
    (by a previous run, another user, the list's author) is refused rather
    than followed out of the output directory.
    """
    parts = relpath.split("/")
    if any(p in ("", ".", "..") for p in parts) or os.path.isabs(relpath):
        raise UnsafeNameError(f"unsafe path {relpath!r}")
    current = root
    for depth, part in enumerate(parts[:-1], 1):
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            if not create:
                return root.joinpath(*parts)
            with contextlib.suppress(FileExistsError):
                os.mkdir(current)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise UnsafeNameError(f"{'/'.join(parts[:depth])} is a symlink; not followed")
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafeNameError(f"{current.relative_to(root)} exists and is not a folder")
    return root.joinpath(*parts)
