"""Names: derived from the list alone, clean, confined to the output directory."""

from __future__ import annotations

import os
from pathlib import Path

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
    assert target(root, "a/b/c.bin") == root / "a" / "b" / "c.bin"
    assert (root / "a" / "b").is_dir()


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=400))
def test_clean_component_property(raw: str) -> None:
    name = clean_component(raw)
    assert name and name not in (".", "..")
    assert not any(c in name for c in "/\\:") and all(
        ord(c) >= 0x20 and ord(c) != 0x7F for c in name
    )
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES


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
