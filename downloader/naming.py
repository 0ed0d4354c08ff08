"""Local file names: derived from the list alone, cleaned, kept inside DIR.

Names never come from what is already on disk, so a rerun maps every entry to
the same file; two entries never share a file.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from array import array
from pathlib import Path
from urllib.parse import unquote

from .errors import UnsafeNameError
from .text import UNPRINTABLE_CHARS, from_wire
from .urls import identity

#: Longest file name, in UTF-8 bytes: 255 (the usual file system limit) less
#: room for ``.part`` and a de-duplication suffix.
MAX_NAME_BYTES = 240
_MAX_EXT_BYTES = 24
#: Separators, and whatever is unsafe to print.
_UNSAFE = re.compile(f"[{UNPRINTABLE_CHARS}/\\\\:]")
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)
_DRIVE = re.compile(r"^[A-Za-z]:")
#: The folder inside DIR that holds the run state; no entry may write there.
STATE_DIR = ".downloader"


#: A second suffix kept with the last when a name is shortened: ``.tar.gz``.
_INNER_EXT = re.compile(r"\.[A-Za-z0-9]{1,5}$")


def _fit(name: str, limit: int = MAX_NAME_BYTES) -> str:
    raw = name.encode("utf-8")
    if len(raw) <= limit:
        return name
    stem, ext = os.path.splitext(name)
    if len(ext.encode("utf-8")) > _MAX_EXT_BYTES:
        stem, ext = name, ""
    elif ext and (inner := _INNER_EXT.search(stem)) and len(inner[0]) + len(ext) <= _MAX_EXT_BYTES:
        stem, ext = stem[: inner.start()], inner[0] + ext
    room = limit - len(ext.encode("utf-8"))
    stem = stem.encode("utf-8")[:room].decode("utf-8", "ignore")
    return stem + ext


def clean_component(name: str) -> str:
    """One path component, safe on any file system; never empty, ``.`` or ``..``,
    never the run-state folder's name."""
    name = _UNSAFE.sub("_", name).strip()
    if name == STATE_DIR:
        name = "_" + name
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
    out = out.strip()  # "out= ../x" is checked as the name it becomes
    if not out:
        raise UnsafeNameError("empty out= name")
    if out.endswith(("/", "\\")):
        raise UnsafeNameError(f"out={out!r} ends with a separator: it names a folder, not a file")
    if out.startswith(("/", "\\")) or _DRIVE.match(out):
        raise UnsafeNameError(f"out={out!r} is an absolute path, outside the output directory")
    parts = [p for p in re.split(r"[/\\]", out) if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafeNameError(f"out={out!r} leaves the output directory")
    if not parts:
        raise UnsafeNameError(f"out={out!r} names no file")
    if parts[0] == STATE_DIR:
        raise UnsafeNameError(f"out={out!r} is inside {STATE_DIR}/, the run's own state")
    return "/".join(clean_component(p) for p in parts)


def server_name(filename: str | None) -> str | None:
    """A name offered by the server (Content-Disposition), flattened and cleaned."""
    if not filename:
        return None
    name = clean_component(from_wire(filename))
    return name or None


def numbered(relpath: str, n: int) -> str:
    """``dir/name.ext`` → ``dir/name.N.ext`` (aria2c's style of distinct name)."""
    head, _, base = relpath.rpartition("/")
    stem, ext = os.path.splitext(base)
    if not stem:
        stem, ext = base, ""
    new = _fit(f"{stem}.{n}{ext}", MAX_NAME_BYTES + 8)
    return f"{head}/{new}" if head else new


def _digest(text: str) -> int:
    """64 bits that stand for ``text`` in the tables below (never on disk):
    str's own hash, SipHash under a key random per process, is as unlikely
    to collide as 64 bits of blake2b, and a fraction of its cost (a str
    keeps its hash: a name asked about twice is hashed once)."""
    return hash(text) or 1  # 0 marks an empty slot


class _DigestTable:
    """A map from non-zero 64-bit digests to 32-bit entry indexes in two flat arrays
    (open addressing, at most four fifths full): 15-30 bytes an entry where a
    dict of ints costs over 100. It is what keeps a long list's names in a
    few MB (200,000 entries: 3 MiB). Four fifths rather than two thirds took
    a 200,000-entry run's peak RSS from 61 to 54 MiB, at no measurable cost
    in time (linear probing, random digests: about 3 probes a lookup)."""

    def __init__(self) -> None:
        self._size = 0
        self._keys = array("q", [0]) * 1024
        self._vals = array("i", [0]) * 1024

    def _slot(self, key: int) -> int:
        keys = self._keys
        mask = len(keys) - 1
        i = key & mask
        while keys[i] != 0 and keys[i] != key:
            i = (i + 1) & mask
        return i

    def get(self, key: int) -> int | None:
        i = self._slot(key)
        return self._vals[i] if self._keys[i] == key else None

    def put(self, key: int, value: int) -> None:
        i = self._slot(key)
        if self._keys[i] == 0:
            self._size += 1
        self._keys[i], self._vals[i] = key, value
        if 5 * self._size > 4 * len(self._keys):
            old_keys, old_vals = self._keys, self._vals
            # array * n: no zeroed bytes object first, as large as the table
            self._keys = array("q", [0]) * (2 * len(old_keys))
            self._vals = array("i", [0]) * (2 * len(old_keys))
            self._size = 0
            for k, v in zip(old_keys, old_vals, strict=True):
                if k != 0:
                    self.put(k, v)


class Namer:
    """Hands out one distinct relative path per entry, in list order.

    It must remember every name of the run, so it keeps them compact: a
    64-bit digest of each name maps to the claiming entry, whose URL digest
    and line sit in arrays (about 40 bytes an entry, not a few hundred).

    Many entries can want one name (every ``download.php?id=N``, every URL
    ending in ``/``); each of them must cost the same, not one more try per
    earlier one. So a name that collided remembers the last number it handed
    out (``f.bin`` -> 7: the next one starts at ``f.8.bin``), and an entry
    that got a number is found again by its URL and name (its duplicates).
    Nothing below that number can have become free: names are never given back.
    """

    def __init__(self) -> None:
        self._taken = _DigestTable()
        self._urls = array("q")
        self._refs = array("i")
        #: name -> the last number handed out for it (names that collided only)
        self._last = _DigestTable()
        #: (URL, name) -> the number that entry got (entries that got one only)
        self._numbers = _DigestTable()
        #: whether any path had folders: their names ("a/") are in _taken too
        self._folders = False
        #: (URL, name) -> 31 bits of its checksum= (entries with one only)
        self._sums = _DigestTable()

    def _free(self, candidate: str, key: int) -> bool:
        """A name is free when no entry holds it, and it is nobody's
        ``.part`` either way: an entry named ``f.bin.part`` must not be
        another entry's temporary file, nor ``f.bin`` the owner of one; nor
        is it (or its ``.part``) a folder of another entry's path."""
        return self._taken.get(key) is None and self._nothing_around(candidate)

    def _nothing_around(self, candidate: str) -> bool:
        """``_free`` but for the name itself (known free already)."""
        taken = self._taken
        if taken.get(_digest(candidate + ".part")) is not None:
            return False
        if candidate.endswith(".part") and taken.get(_digest(candidate[:-5])) is not None:
            return False
        return not self._folders or (
            taken.get(_digest(candidate + "/")) is None
            and taken.get(_digest(candidate + ".part/")) is None
        )

    def _claim_folders(self, relpath: str) -> None:
        """Record the folders of ``relpath`` (``a/b/c`` → ``a/``, ``a/b/``),
        after checking that none is an earlier entry's file or ``.part``:
        that entry came first, so this one cannot be written."""
        taken = self._taken
        folders = []
        at = relpath.find("/")
        while at > 0:
            folder = relpath[:at]
            for clash in (folder, folder[:-5] if folder.endswith(".part") else None):
                owner = taken.get(_digest(clash)) if clash else None
                if owner is not None:
                    whose = self._ref(owner) if owner >= 0 else "a name the server gave"
                    raise UnsafeNameError(
                        f"the folder {folder!r} of {relpath!r} is the file of {whose}"
                    )
            folders.append(folder)
            at = relpath.find("/", at + 1)
        for folder in folders:
            taken.put(_digest(folder + "/"), _NOBODY)
        self._folders = True

    def _next_free(self, relpath: str) -> tuple[str, int]:
        """The first free ``relpath`` with a number, after the last one handed out."""
        base = _digest(relpath)
        n = self._last.get(base) or 0
        while True:
            n += 1
            candidate = numbered(relpath, n)
            if self._free(candidate, _digest(candidate)):
                self._last.put(base, n)
                return candidate, n

    def _ref(self, entry: int) -> str:
        ref = self._refs[entry]
        return f"line {ref}" if ref > 0 else f"entry {-ref}"

    def claim(
        self,
        url: str,
        relpath: str,
        line: int | None,
        checksum: str | None = None,
        position: int | None = None,
    ) -> tuple[str, str | None]:
        """Return ``(path, None)``, or ``(path, "line N")`` for a duplicate of
        an earlier entry with the same URL and name (``"entry N"`` when that
        one came from no list): the path is then that entry's.

        Raises :class:`UnsafeNameError` when a folder of ``relpath`` is an
        earlier entry's file, or when a duplicate asks for a ``checksum`` its
        first entry does not (the entry is then invalid: the file is fetched
        once, and checked against one checksum)."""
        if "/" in relpath:
            self._claim_folders(relpath)
        url = identity(url)
        key = _digest(url)
        me = len(self._urls)
        self._urls.append(key)
        # how a later duplicate names this entry: its line, else its place
        # among the run's entries (invalid ones counted)
        self._refs.append(line if line is not None else -(position or me + 1))
        name_key = _digest(relpath)
        held = self._taken.get(name_key)
        if held is None and self._nothing_around(relpath):
            self._taken.put(name_key, me)
            self._sum(url, relpath, checksum)
            return relpath, None
        if held is not None and held >= 0 and self._urls[held] == key:
            return relpath, self._duplicate(held, url, relpath, checksum)
        pair = _digest(f"{url}\n{relpath}")
        number = self._numbers.get(pair)
        if number is not None:
            candidate = numbered(relpath, number)
            owner = self._taken.get(_digest(candidate))
            assert owner is not None and owner >= 0
            return candidate, self._duplicate(owner, url, relpath, checksum)
        candidate, number = self._next_free(relpath)
        self._taken.put(_digest(candidate), me)
        self._numbers.put(pair, number)
        self._sum(url, relpath, checksum)
        return candidate, None

    def _sum(self, url: str, relpath: str, checksum: str | None) -> None:
        if checksum:
            self._sums.put(_digest(f"{url}\n{relpath}"), _digest(checksum) & 0x7FFFFFFF or 1)

    def _duplicate(self, owner: int, url: str, relpath: str, checksum: str | None) -> str:
        ref = self._ref(owner)
        if checksum:
            first = self._sums.get(_digest(f"{url}\n{relpath}"))
            if first != (_digest(checksum) & 0x7FFFFFFF or 1):
                why = "no checksum" if first is None else "another checksum"
                raise UnsafeNameError(f"same URL and file as {ref}, which has {why}")
        return ref

    def reserve(self, relpath: str) -> str:
        """A name like ``relpath`` that no entry of the run holds, for a name
        the server chose mid-run (``--content-disposition``)."""
        candidate = relpath
        if not self._free(relpath, _digest(relpath)):
            candidate, _ = self._next_free(relpath)
        self._taken.put(_digest(candidate), _NOBODY)
        return candidate

    def hold(self, relpath: str) -> bool:
        """Take exactly ``relpath`` for a name the server gave an entry in an
        earlier run, if no entry of this run has it; False otherwise."""
        key = _digest(relpath)
        if not self._free(relpath, key):
            return False
        self._taken.put(key, _NOBODY)
        return True


_NOBODY = -1


def is_name_for(name: str, wanted: str) -> bool:
    """Whether ``name`` is ``wanted`` or one of its numbered forms (``f.3.bin``)."""
    if name == wanted:
        return True
    stem = os.path.splitext(name.rpartition("/")[2])[0]
    number = stem.rpartition(".")[2]
    return number.isdigit() and numbered(wanted, int(number)) == name


def target(root: str | Path, relpath: str) -> str:
    """The absolute path for ``relpath`` under ``root``, folders created.

    Each folder on the way is checked with ``lstat``: a symlink planted there
    (by a previous run, another user, the list's author) is refused rather
    than followed out of the output directory.
    """
    if "/" not in relpath and relpath not in ("", ".", ".."):
        # the common case: no folder to check or create (a str: pathlib's
        # objects cost more than the rest of a small file's bookkeeping)
        return f"{root}/{relpath}"
    parts = relpath.split("/")
    if any(p in ("", ".", "..") for p in parts) or os.path.isabs(relpath):
        raise UnsafeNameError(f"unsafe path {relpath!r}")
    current = Path(root)
    for depth, part in enumerate(parts[:-1], 1):
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):
                os.mkdir(current)
            continue
        folder = "/".join(parts[:depth])
        if stat.S_ISLNK(st.st_mode):
            raise UnsafeNameError(
                f"cannot write {relpath}: its folder {folder!r} is a symlink, not followed "
                "(it could lead out of the output directory)"
            )
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafeNameError(f"cannot write {relpath}: {folder!r} is not a folder")
    return os.path.join(root, *parts)
