"""The run state survives a reload exactly, torn lines included."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from downloader.errors import NoRunError
from downloader.state import (
    RunState,
    has_userinfo,
    host_of,
    redact_loose,
    redact_text,
    redact_url,
    strip_userinfo,
)


def recorded(root: Path, entries: int) -> RunState:
    """A run in ``root`` with its list recorded whole (still open)."""
    state = RunState(root)
    state.begin()
    for n in range(entries):
        state.add_entry({"url": f"http://h/{n}", "path": f"f{n}", "line": n + 1})
    state.entries_written()
    return state


def test_journal_round_trip_and_torn_lines(tmp_path: Path) -> None:
    state = recorded(tmp_path, 3)
    # one line, and a lone surrogate (a server's non-UTF-8 status text) breaks no file
    weird = 'he said "no"\nthen: é ☃ \\ done \udce9'
    shown = 'he said "no"\\x0athen: é ☃ \\ done \\udce9'
    state.record(0, "failed", 12, 3, weird)
    state.record(1, "complete", 5, 1, None, path="sub/ünï.bin")
    state.close()
    with open(state.journal_path, "a", encoding="utf-8") as f:
        f.write('{"i":2,"s":"comp')  # a kill -9 in the middle of a line
    again = RunState(tmp_path)
    again.load()
    assert again.ledger.status_of(0) == "failed" and again.ledger.errors[0] == shown
    assert again.ledger.paths[1] == "sub/ünï.bin" and again.ledger.bytes[1] == 5
    assert again.ledger.status_of(2) == "pending"
    again.write_report((record for _, record in again.records()), lambda: {"total": 3})
    report = json.loads(again.report_path.read_text())
    assert [e["status"] for e in report["entries"]] == ["failed", "complete", "failed"]
    assert report["entries"][2]["error"] == "not started (run interrupted)"


def test_no_recorded_run(tmp_path: Path) -> None:
    with pytest.raises(NoRunError):
        RunState(tmp_path).load()


def test_damaged_state_is_said_plainly(tmp_path: Path) -> None:
    """A state file this program did not write that way (edited, cut by a
    machine crash) ends a --retry with a message, never a traceback; a torn
    last line is only a kill -9 when the list was not recorded to its end."""

    def recorded_entries(root: Path) -> Path:
        state = recorded(root, 2)
        state.close()
        return state.entries_path

    def with_field(text: str, field: str, value: object) -> str:
        first, rest = text.split("\n", 1)
        return json.dumps({**json.loads(first), field: value}) + "\n" + rest

    damages = {
        "garbage": lambda text: text + "xx\n",
        "not an object": lambda text: "[1, 2]\n" + text,
        "out of order": lambda text: text.splitlines(keepends=True)[1] + text,
        "NULs": lambda text: text + "\x00" * 64 + "\n",
        "torn, yet recorded whole": lambda text: text[:30],
        **{
            f"{field} {value!r}": lambda text, field=field, value=value: with_field(
                text, field, value
            )
            for field, value in (
                ("headers", "ab"),
                ("headers", [["X-A"]]),
                ("mirrors", 5),
                ("checksum", "bogus"),
            )
        },
    }
    for n, (what, damage) in enumerate(damages.items()):
        root = tmp_path / f"damage{n}"
        entries = recorded_entries(root)
        entries.write_text(damage(entries.read_text()))
        try:
            RunState(root).load()
        except NoRunError as exc:
            assert re.search(r"entries\.jsonl line [0-9]+ .* is damaged", str(exc)), what
        else:
            pytest.fail(f"{what}: taken for a recorded run")
    run_json = recorded_entries(tmp_path / "run").parent / "run.json"
    run_json.write_text(run_json.read_text() + "\x00" * 8)
    with pytest.raises(NoRunError, match=r"run\.json .* is damaged"):
        RunState(tmp_path / "run").load()
    # a run recorded before run.json said "complete" may hold a kill -9's torn line
    entries = recorded_entries(tmp_path / "old")
    run_json = entries.parent / "run.json"
    run = json.loads(run_json.read_text())
    del run["complete"]
    run_json.write_text(json.dumps(run))
    entries.write_text(entries.read_text()[:-10])
    old = RunState(tmp_path / "old")
    old.load()
    assert len(old.ledger) == 1


def test_secrets_are_redacted() -> None:
    assert redact_url("https://u:p@h:1/a@b") == "https://***@h:1/a@b"
    assert redact_url("https://h/a@b") == "https://h/a@b"
    assert strip_userinfo("http://u:p@h/x") == "http://h/x"
    assert strip_userinfo("http://h/a@b") == "http://h/a@b"
    assert has_userinfo("http://u@h/") and not has_userinfo("http://h/a@b")
    assert host_of("HTTP://u:p@Example.org:8080/a@b") == "example.org:8080"
    assert redact_text("see http://u:p@h/x and ftp://a@b") == "see http://***@h/x and ftp://***@b"
    assert redact_text("x http://u:pa#ss@h/f") == "x http://***@h/f"


def test_an_unparseable_url_loses_all_that_may_be_a_password() -> None:
    for url in ("http://al:pa#ss99@h/f", "http://al:pa?ss99@h/f", "http://al:pa/ss99@h/f"):
        assert redact_loose(url) == "http://***@h/f"
    assert redact_url("http://h?email=me@other") == "http://h?email=me@other"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(_JSON)
def test_the_state_writes_json_as_json_dumps_does(value: object) -> None:
    """The encoders made once (entries, journal, report) write what
    json.dumps(ensure_ascii=False) writes, lone surrogates and NaN included."""
    from downloader.state import _compact, _text

    assert _text(value) == json.dumps(value, ensure_ascii=False)
    assert _compact(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))
