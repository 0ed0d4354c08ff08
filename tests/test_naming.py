"""Names: derived from the list alone, clean, confined to the output directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from downloader.errors import UnsafeNameError
from downloader.naming import (
    MAX_NAME_BYTES,
    Namer,
    clean_component,
    clean_out,
    name_from_url,
    numbered,
    target,
)


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("http://h/dir/file.bin", "file.bin"),
        ("http://h/dir/file.bin?x=1&y=2", "file.bin"),
        ("http://h/dir/file.bin#frag", "file.bin"),
        ("http://h/", "index.html"),
        ("http://h", "index.html"),
        ("http://h/dir/", "index.html"),
        ("http://h/a%20b%C3%A9.txt", "a bé.txt"),
        ("http://h/..%2F..%2Fetc%2Fpasswd", ".._.._etc_passwd"),
        ("http://h/%2e%2e", "__"),
        ("http://h/x/%2E", "_"),
        ("http://h/a%00b", "a_b"),
        ("http://h/C:evil", "C_evil"),
        ("http://h/CON", "_CON"),
        ("http://h/nul.txt", "_nul.txt"),
        ("http://h/a%5Cb", "a_b"),
    ],
)
def test_name_from_url(url: str, name: str) -> None:
    assert name_from_url(url) == name


def test_long_names_keep_their_extension() -> None:
    name = name_from_url("http://h/" + "é" * 300 + ".tar.gz")
    assert len(name.encode()) <= MAX_NAME_BYTES and name.endswith(".gz")
    name.encode().decode("utf-8")  # cut on a character boundary


def test_clean_out() -> None:
    assert clean_out("sub/dir/name.bin") == "sub/dir/name.bin"
    assert clean_out("./a//b") == "a/b"
    for bad in ("../x", "a/../../x", "/abs", "\\abs", "C:\\x", "c:x", "", "  ", ".", "a/.."):
        with pytest.raises(UnsafeNameError):
            clean_out(bad)


def test_namer_is_deterministic_and_distinct() -> None:
    namer = Namer()
    assert namer.claim("http://a/f.bin", "f.bin", 1) == ("f.bin", None)
    assert namer.claim("http://b/f.bin", "f.bin", 2) == ("f.1.bin", None)
    assert namer.claim("http://a/f.bin", "f.bin", 3) == ("f.bin", "line 1")
    assert namer.claim("http://c/f.1.bin", "f.1.bin", 4) == ("f.1.1.bin", None)
    assert namer.claim("http://b/f.bin", "f.bin", 5) == ("f.1.bin", "line 2")
    assert namer.claim("http://d/g.bin", "g.bin", None) == ("g.bin", None)
    assert namer.claim("http://d/g.bin", "g.bin", None) == ("g.bin", "entry 6")


def test_target_refuses_symlinked_folders(tmp_path: Path) -> None:
    root = tmp_path / "out"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(UnsafeNameError, match="symlink"):
        target(root, "link/file.bin")
    assert target(root, "a/b/c.bin") == str(root / "a" / "b" / "c.bin")
    assert (root / "a" / "b").is_dir()


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=400))
def test_clean_component_property(raw: str) -> None:
    name = clean_component(raw)
    assert name and name not in (".", "..")
    assert not any(c in name for c in "/\\:") and all(
        ord(c) >= 0x20 and not 0x7F <= ord(c) <= 0x9F for c in name
    )
    assert not any(c in name for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES


def test_names_cannot_drive_a_terminal_or_reverse_text() -> None:
    """0x9B is CSI on many terminals (the summary prints names); U+202E makes
    ``txt.exe`` display as ``exe.txt``."""
    assert name_from_url("http://h/a%C2%9B2J%C2%85.txt") == "a_2J_.txt"
    assert clean_component("\u202etxt.exe") == "_txt.exe"
    assert clean_component("résumé é.pdf") == "résumé é.pdf"


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=300))
def test_clean_out_stays_inside(raw: str) -> None:
    try:
        rel = clean_out(raw)
    except UnsafeNameError:
        return
    parts = rel.split("/")
    assert all(p and p not in (".", "..") for p in parts)
    assert not os.path.isabs(rel)
    assert all(len(p.encode()) <= MAX_NAME_BYTES for p in parts)
    root = Path("/r")
    assert os.path.normpath(root / rel).startswith("/r/")


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
def test_name_from_url_property(path: str) -> None:
    name = name_from_url("http://h/" + path)
    assert name and "/" not in name and name not in (".", "..")
    assert len(name.encode()) <= MAX_NAME_BYTES


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**31), 2**31 - 1)), max_size=3000
    )
)
def test_digest_table_behaves_like_a_dict(pairs: list[tuple[int, int]]) -> None:
    from downloader.naming import _DigestTable

    table, model = _DigestTable(), {}
    for key, value in pairs:
        key = key or 1
        table.put(key, value)
        model[key] = value
    assert all(table.get(k) == v for k, v in model.items())
    assert table.get(12345) == model.get(12345)


def test_part_names_and_state_folder_are_reserved() -> None:
    namer = Namer()
    assert namer.claim("http://a/f.bin.part", "f.bin.part", 1) == ("f.bin.part", None)
    assert namer.claim("http://b/f.bin", "f.bin", 2) == ("f.1.bin", None)
    other = Namer()
    assert other.claim("http://b/f.bin", "f.bin", 1) == ("f.bin", None)
    assert other.claim("http://a/f.bin.part", "f.bin.part", 2) == ("f.bin.1.part", None)
    with pytest.raises(UnsafeNameError, match="state"):
        clean_out(".downloader/entries.jsonl")
    assert clean_out("sub/.downloader") == "sub/_.downloader"
    assert name_from_url("http://h/.downloader") == "_.downloader"


class _ModelNamer:
    """The naming rules written plainly (sets and dicts, numbers tried from 1
    every time): what Namer must agree with, in far less memory and time."""

    def __init__(self) -> None:
        self.owner: dict[str, tuple[str | None, str]] = {}
        self.numbered: dict[tuple[str, str], str] = {}
        self.folders: set[str] = set()
        self.count = 0

    def _free(self, name: str) -> bool:
        return (
            name not in self.owner
            and name + ".part" not in self.owner
            and not (name.endswith(".part") and name[:-5] in self.owner)
            and name not in self.folders
            and name + ".part" not in self.folders
        )

    def claim(self, url: str, base: str, line: int | None) -> tuple[str, str | None]:
        parts = base.split("/")
        folders = ["/".join(parts[:k]) for k in range(1, len(parts))]
        for folder in folders:
            if folder in self.owner or (folder.endswith(".part") and folder[:-5] in self.owner):
                raise UnsafeNameError(folder)
        self.folders.update(folders)
        self.count += 1
        ref = f"line {line}" if line is not None else f"entry {self.count}"
        holder = self.owner.get(base)
        if holder is None and self._free(base):
            self.owner[base] = (url, ref)
            return base, None
        if holder is not None and holder[0] == url:
            return base, holder[1]
        if (url, base) in self.numbered:
            name = self.numbered[(url, base)]
            return name, self.owner[name][1]
        n = 1
        while not self._free(numbered(base, n)):
            n += 1
        name = numbered(base, n)
        self.owner[name] = (url, ref)
        self.numbered[(url, base)] = name
        return name, None

    def reserve(self, base: str) -> str:
        name, n = base, 0
        while not self._free(name):
            n += 1
            name = numbered(base, n)
        self.owner[name] = (None, "")
        return name


_FILES = ["f.bin", "f.1.bin", "f.bin.part", "f.1.bin.part", "f", "d/f.bin", "g", "f.part"]
_FOLDERS = ["d", "d/e", "d/e/f", "d.part/x", "f.bin/x", "f.1.bin/y", "d.1/z", "f.part/q"]
_NAMES = st.sampled_from([*_FILES, *_FOLDERS])
_STEPS = st.lists(
    st.tuples(
        st.sampled_from(["claim", "claim", "claim", "reserve"]),
        st.sampled_from(["http://a/x", "http://b/x", "http://c/x"]),
        _NAMES,
        st.booleans(),
    ),
    max_size=40,
)


@given(_STEPS)
@settings(max_examples=600, deadline=None)
def test_namer_agrees_with_the_plain_rules(steps: list[tuple[str, str, str, bool]]) -> None:
    namer, model = Namer(), _ModelNamer()
    for line, (op, url, base, from_list) in enumerate(steps, 1):
        if op == "reserve":
            if "/" not in base:  # server names are one component
                assert namer.reserve(base) == model.reserve(base)
        else:
            at = line if from_list else None
            assert _outcome(namer.claim, url, base, at) == _outcome(model.claim, url, base, at)


def _outcome(claim: Any, url: str, base: str, line: int | None) -> object:
    try:
        return claim(url, base, line)
    except UnsafeNameError:
        return "invalid"


def test_many_entries_wanting_one_name_cost_the_same_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """2,000 URLs that all end in ``download.php``: the names tried grow with
    the entries, not with their square (it took 5 s for 2,000 before)."""
    import downloader.naming as naming

    tried = 0
    real = naming.numbered

    def counting(relpath: str, n: int) -> str:
        nonlocal tried
        tried += 1
        return real(relpath, n)

    monkeypatch.setattr(naming, "numbered", counting)
    namer = Namer()
    names = [namer.claim(f"http://h/d.php?id={i}", "download.php", i)[0] for i in range(2000)]
    assert names[:3] == ["download.php", "download.1.php", "download.2.php"]
    assert len(set(names)) == 2000
    assert namer.reserve("download.php") == "download.2000.php"
    assert tried <= 2 * 2000
    assert namer.claim("http://h/d.php?id=1500", "download.php", 9) == (
        "download.1500.php",
        "line 1500",
    )


def test_a_file_is_never_another_entrys_folder() -> None:
    """``sub`` then ``sub/f.bin``: the later entry cannot be written (invalid);
    ``d/f.bin`` then ``d``: the later file gets a number; ``.part`` counts."""
    namer = Namer()
    assert namer.claim("http://h/sub", "sub", 1) == ("sub", None)
    with pytest.raises(
        UnsafeNameError, match=r"folder 'sub' of 'sub/f\.bin' is the file of line 1"
    ):
        namer.claim("http://h/f", "sub/f.bin", 2)
    assert namer.claim("http://h/g", "d/e/f.bin", 3) == ("d/e/f.bin", None)
    assert namer.claim("http://h/d", "d", 4) == ("d.1", None)
    assert namer.claim("http://h/e", "d/e", 5) == ("d/e.1", None)
    assert namer.claim("http://h/x", "x", 6) == ("x", None)
    with pytest.raises(UnsafeNameError, match=r"folder 'x\.part'"):
        namer.claim("http://h/y", "x.part/y.bin", 7)
    assert namer.claim("http://h/z", "q.part/y.bin", 8) == ("q.part/y.bin", None)
    assert namer.claim("http://h/q", "q", 9) == ("q.1", None)
    assert namer.claim("http://h/g", "d/e/f.bin", 10) == ("d/e/f.bin", "line 3")
    assert namer.reserve("d") == "d.2"


def test_a_duplicate_asking_another_checksum_is_invalid() -> None:
    """Fetched once, the file can be checked against one checksum: a
    duplicate naming a different one (or one its first entry lacks) is an
    error of the list, not a silent skip."""
    namer = Namer()
    sha = "sha-256=" + "a" * 64
    assert namer.claim("http://h/a", "a", 1, sha) == ("a", None)
    assert namer.claim("http://h/a", "a", 2, sha) == ("a", "line 1")
    assert namer.claim("http://h/a", "a", 3) == ("a", "line 1")  # none asked: checked by line 1's
    with pytest.raises(UnsafeNameError, match="same URL and file as line 1, which has another"):
        namer.claim("http://h/a", "a", 4, "sha-256=" + "b" * 64)
    assert namer.claim("http://h/b", "b", 5) == ("b", None)
    with pytest.raises(UnsafeNameError, match="which has no checksum"):
        namer.claim("http://h/b", "b", 6, sha)


def test_one_resource_written_two_ways_is_a_duplicate() -> None:
    """The fragment is never sent; scheme and host have no case."""
    namer = Namer()
    assert namer.claim("http://H.example/x.bin#a", "x.bin", 1) == ("x.bin", None)
    assert namer.claim("HTTP://h.EXAMPLE/x.bin#b", "x.bin", 2) == ("x.bin", "line 1")
    assert namer.claim("http://h.example/X.bin", "x.bin", 3) == ("x.1.bin", None)  # paths have case


def test_a_shortened_name_keeps_a_double_extension() -> None:
    name = clean_component("é" * 130 + ".tar.gz")
    assert name.endswith("é.tar.gz") and len(name.encode()) <= MAX_NAME_BYTES
