"""The list format: wget/aria2c compatible, every bad line named, never a traceback."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from downloader import Entry, ListError, load_list
from downloader.urllist import parse_checksum, parse_lines, parse_text


def test_comments_blank_lines_mirrors_and_options() -> None:
    text = (
        "# a comment\n"
        "\n"
        "   # an indented comment\n"
        "http://a.example/one.bin\thttps://b.example/one.bin\n"
        "  out=sub/one.bin\n"
        "\tchecksum=sha-256=" + "ab" * 32 + "\n"
        "  header=X-Token: abc\n"
        "  header=X-Other: 2\n"
        "https://c.example/two\n"
    )
    one, two = parse_text(text)
    assert one == Entry(
        "http://a.example/one.bin",
        out="sub/one.bin",
        checksum="sha-256=" + "ab" * 32,
        headers={"X-Token": "abc", "X-Other": "2"},
        mirrors=("https://b.example/one.bin",),
        line=4,
    )
    assert two.url == "https://c.example/two" and two.line == 9 and two.error is None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("ftp://x/y\n", "line 1: unsupported scheme 'ftp'"),
        ("http://ok/a\n  dir=/tmp\n", "line 2: unknown option 'dir'"),
        ("http://ok/a\n  checksum=sha-256=abc\n", "line 2: malformed checksum"),
        ("http://ok/a\n  checksum=crc32=00\n", "line 2: malformed checksum"),
        ("http://ok/a\n  out=../../etc/passwd\n", "line 2: out='../../etc/passwd' leaves"),
        ("http://ok/a\n  out=/etc/passwd\n", "line 2: out='/etc/passwd' is an absolute path"),
        ("http://ok/a\n  nonsense\n", "line 2: malformed option"),
        ("http://ok/a\n  header=NoColon\n", "line 2: malformed header"),
        ("not a url\n", "line 1: invalid URL"),
        ("http://\n", "line 1: invalid URL"),
        ("  out=x\n", "line 1: option line with no entry above it"),
        ("http://ok/a\x00b\n", "line 1: invalid URL"),
        ("http://ok:99999999/a\n", "line 1: invalid URL"),
    ],
)
def test_bad_lines_are_named(text: str, error: str) -> None:
    (entry,) = parse_text(text)
    assert entry.error is not None and entry.error.startswith(error), entry.error


def test_bad_line_does_not_hide_the_next_entry() -> None:
    entries = parse_text("gopher://x\nhttp://ok/a\n  bogus=1\nhttp://ok/b\n")
    assert [e.error is None for e in entries] == [False, False, True]
    assert entries[1].error == "line 3: unknown option 'bogus' (known: out, checksum, header)"
    assert [e.line for e in entries] == [1, 2, 4]


def test_crlf_bom_and_invalid_utf8() -> None:
    raw = b"\xef\xbb\xbfhttp://ok/a\r\n  out=b.bin\r\nhttp://ok/\xff\xfe\r\nhttp://ok/c\r\n"
    a, bad, c = parse_lines(io.BytesIO(raw))
    assert a.url == "http://ok/a" and a.out == "b.bin" and a.error is None
    assert bad.error == "line 3: not valid UTF-8"
    assert c.url == "http://ok/c" and c.line == 4


def test_checksum_spellings() -> None:
    assert parse_checksum("SHA256=" + "AB" * 32) == ("sha256", "ab" * 32)
    assert parse_checksum("md5=" + "0" * 32) == ("md5", "0" * 32)
    assert parse_checksum("sha-1=" + "1" * 40)[0] == "sha1"
    with pytest.raises(ValueError):
        parse_checksum("sha-512=" + "0" * 64)


def test_load_list_errors(tmp_path: Path) -> None:
    with pytest.raises(ListError, match="cannot read URL list"):
        load_list(tmp_path / "missing.txt")
    with pytest.raises(ListError, match="cannot read URL list"):
        load_list(tmp_path)
    path = tmp_path / "l.txt"
    path.write_text("http://ok/a\nhttp://ok/b\n")
    assert [e.url for e in load_list(path)] == ["http://ok/a", "http://ok/b"]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000))
def test_parser_survives_any_bytes(raw: bytes) -> None:
    lines = raw.split(b"\n")
    for entry in parse_lines(io.BytesIO(raw)):
        assert entry.line is not None and 1 <= entry.line <= len(lines)
        if entry.error is None:
            assert entry.url.lower().startswith(("http://", "https://"))
        else:
            assert entry.error.startswith("line ") and len(entry.error) < 400


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=60),
            st.sampled_from(
                [
                    "http://h/a",
                    "https://h/b\thttp://m/b",
                    "  out=x",
                    "  out=../x",
                    "  checksum=md5=" + "0" * 32,
                    "# c",
                    "",
                    "\t header=A: b",
                ]
            ),
        ),
        max_size=30,
    )
)
def test_parser_survives_list_like_text(lines: list[str]) -> None:
    text = "\n".join(lines)
    for entry in parse_text(text):
        assert entry.error is None or entry.error.startswith("line ")


def test_sample_list_is_valid() -> None:
    entries = load_list(Path(__file__).parent.parent / "sample_urls.txt")
    assert entries and all(e.error is None for e in entries)
    assert any(e.mirrors for e in entries) and any(e.checksum for e in entries)
    assert any(e.out for e in entries)


def test_megabyte_lines_and_nul_bytes() -> None:
    raw = b"x" * 1_000_000 + b"\n\x00\x00\nhttp://ok/" + b"a" * 1_000_000 + b"\n"
    garbage, nul, long_url = parse_lines(io.BytesIO(raw))
    assert garbage.error is not None and len(garbage.error) < 300
    assert nul.error is not None and nul.error.startswith("line 2: ")
    assert long_url.error is None and long_url.line == 3


def test_only_spaces_and_tabs_indent_an_option() -> None:
    """A no-break space or form feed in column 0 (pasted text) is no indent:
    the URL on that line stays an entry of its own, as in wget and aria2c."""
    entries = parse_text("http://ok/a\n\xa0http://ok/b\n\fhttp://ok/c\n\thttp://bad\n")
    assert [(e.url, e.error is None) for e in entries] == [
        ("http://ok/a", True),
        ("http://ok/b", True),
        ("http://ok/c", False),
    ]
    assert entries[2].error == "line 4: malformed option 'http://bad': expected key=value"


def test_a_bom_where_two_lists_were_joined() -> None:
    _, b = parse_lines(io.BytesIO(b"http://ok/a\n\xef\xbb\xbfhttp://ok/b\n"))
    assert b.url == "http://ok/b" and b.error is None and b.line == 2


def test_out_is_checked_as_the_name_it_becomes() -> None:
    entries = parse_text(
        "http://ok/a\n  out= ../up.bin\nhttp://ok/b\n  out= /etc/x\nhttp://ok/c\n  out= c.bin\n"
    )
    assert "leaves the output directory" in (entries[0].error or "")
    assert "absolute path" in (entries[1].error or "")
    assert entries[2].out == "c.bin" and entries[2].error is None


@given(
    scheme=st.sampled_from(["http", "https", "HTTP", "Https"]),
    host=st.one_of(
        st.text(alphabet="abcXYZ019.-", min_size=1, max_size=12),
        st.builds(
            "{}xn--{}".format, st.sampled_from(["", "a.", "X"]), st.text("az09-", max_size=4)
        ),
    ),
    port=st.one_of(st.none(), st.integers(min_value=0, max_value=99999)),
    tail=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12),
)
@example(scheme="http", host="xn--a", port=None, tail="f")
def test_the_fast_check_of_simple_urls_agrees_with_yarls_parse(
    scheme: str, host: str, port: int | None, tail: str
) -> None:
    """url_problem takes plain URLs without parsing them: it must judge them
    as the full check (yarl) does, valid or not."""
    from downloader.urllist import _url_problem, url_problem

    url = (
        f"{scheme}://{host}"
        + (f":{port}" if port is not None else "")
        + (f"/{tail}" if tail else "")
    )
    assert url_problem(url) == _url_problem.__wrapped__(url)


@given(st.text(alphabet="ab:@/?#.%", max_size=20))
def test_the_authority_ends_at_the_first_slash_question_mark_or_hash(rest: str) -> None:
    from downloader.urls import authority_end

    ends = [i for i, c in enumerate(rest) if c in "/?#"]
    assert authority_end(rest) == (ends[0] if ends else len(rest))
