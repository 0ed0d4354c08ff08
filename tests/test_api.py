"""The Python API as a script meets it: wrong input refused before anything on
disk changes, a caller's session and event loop respected, credentials kept
across retries."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from pathlib import Path

import aiohttp
import pytest

from downloader import Downloader, Entry, StateDirError

from .conftest import blob
from .server import FaultServer


def recorded_id(root: Path) -> str:
    return str(json.loads((root / ".downloader" / "run.json").read_text())["id"])


async def a_recorded_run(server: FaultServer, root: Path) -> tuple[str, str]:
    """A run recorded in ``root``: the URL it fetched and its id (which a
    refused call must leave in place)."""
    url = server.add("/a.bin", b"a")
    await Downloader(root, progress=False).download([url])
    return url, recorded_id(root)


async def test_one_url_where_many_are_expected_is_refused_before_the_state(
    server: FaultServer, tmp_path: Path
) -> None:
    url, before = await a_recorded_run(server, tmp_path)
    dl = Downloader(tmp_path, progress=False)
    with pytest.raises(TypeError, match=r"one URL: \[url\]"):
        await dl.download(url)  # type: ignore[arg-type]  # a str is an iterable of str
    with pytest.raises(TypeError, match="one URL"):
        dl.run(Entry(url))  # type: ignore[arg-type]
    assert recorded_id(tmp_path) == before
    assert server.requests == {"/a.bin": 1}


async def test_an_item_of_the_wrong_type_is_one_invalid_entry(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add("/a.bin", b"a")
    items: list[object] = [url, Path("b.bin"), b"http://127.0.0.1/c"]
    results = await Downloader(tmp_path, progress=False).download(items)  # type: ignore[arg-type]
    assert [r.status for r in results] == ["complete", "failed", "failed"]
    assert results[1].error == "entry 2: expected a URL (str) or an Entry, not PosixPath"
    assert results[2].path is None and "not bytes" in (results[2].error or "")
    assert server.requests == {"/a.bin": 1}


def test_entry_fields_are_checked_where_they_are_written() -> None:
    with pytest.raises(TypeError, match="mirrors"):
        Entry("http://h/a", mirrors="http://h/b")
    with pytest.raises(TypeError, match="url"):
        Entry(b"http://h/a")  # type: ignore[arg-type]
    assert Entry("http://h/a", out=Path("sub/a.bin")).out == "sub/a.bin"  # type: ignore[arg-type]
    assert Entry("http://h/a", headers=[("X-A", "1")]).headers == {"X-A": "1"}  # type: ignore[arg-type]


async def test_an_out_naming_a_folder_is_invalid(server: FaultServer, tmp_path: Path) -> None:
    url = server.add("/a.bin", b"a")
    results = await Downloader(tmp_path, progress=False).download([Entry(url, out="sub/")])
    assert results[0].status == "failed"
    assert "names a folder" in (results[0].error or "")
    assert not (tmp_path / "sub").exists() and server.requests == {}


async def test_a_file_and_a_folder_of_one_name_the_first_entry_wins(
    server: FaultServer, tmp_path: Path
) -> None:
    """``/x`` then ``out=x/y.bin``: the second cannot be written, whatever the
    timing, and is said so before any request; no stray .part is left."""
    x = server.add("/x", b"the file x", delay=0.2)
    y = server.add("/y", b"y")
    results = await Downloader(tmp_path, jobs=2, progress=False).download(
        [x, Entry(y, out="x/y.bin")]
    )
    assert [r.status for r in results] == ["complete", "failed"]
    assert "the folder 'x' of 'x/y.bin' is the file of entry 1" in (results[1].error or "")
    assert (tmp_path / "x").read_bytes() == b"the file x"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".downloader", "x"]
    assert server.requests == {"/x": 1}


async def test_cancelled_while_the_list_is_read_still_writes_a_report(tmp_path: Path) -> None:
    reading = asyncio.Event()
    loop = asyncio.get_running_loop()

    def endless() -> object:
        n = 0
        while True:
            n += 1
            if n == 1000:
                loop.call_soon_threadsafe(reading.set)
            yield f"http://127.0.0.1:9/f{n}"

    task = asyncio.ensure_future(Downloader(tmp_path, progress=False).download(endless()))  # type: ignore[arg-type]
    await reading.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    report = json.loads((tmp_path / ".downloader" / "report.json").read_text())
    assert report["summary"]["interrupted"] is True
    assert len(report["entries"]) >= 999  # the ones read before the 1000th was asked for


async def test_entries_that_raise_while_read_still_leave_a_report(
    server: FaultServer, tmp_path: Path
) -> None:
    urls = [server.add(f"/f{n}.bin", b"f") for n in range(2)]

    def broken() -> object:
        yield from urls
        raise ValueError("the caller's list broke")

    with pytest.raises(ValueError, match="list broke"):
        await Downloader(tmp_path, progress=False).download(broken())  # type: ignore[arg-type]
    report = json.loads((tmp_path / ".downloader" / "report.json").read_text())
    assert [e["url"] for e in report["entries"]] == urls
    assert report["summary"]["interrupted"] is True
    assert server.requests == {}  # nothing is fetched from a list that broke


def test_constructor_refuses_what_the_command_line_refuses(tmp_path: Path) -> None:
    for bad in (
        {"headers": {"Bad Name": "1"}},
        {"headers": [("X-A", "a\r\nInjected: 1")]},
        {"user_agent": "agent\nInjected: 1"},
    ):
        with pytest.raises(ValueError, match="malformed header"):
            Downloader(tmp_path / "out", **bad)  # type: ignore[arg-type]

    async def on_event(event: object) -> None: ...

    with pytest.raises(TypeError, match="not async"):
        Downloader(tmp_path / "out", on_progress=on_event)
    assert not (tmp_path / "out").exists()


async def test_a_callers_session_does_not_change_the_rules(
    server: FaultServer, tmp_path: Path
) -> None:
    """``raise_for_status=True`` and a User-Agent of the caller's: a 404 still
    fails at once as ``HTTP 404``; the caller's User-Agent is sent."""
    server.add("/a.bin", b"a")
    async with aiohttp.ClientSession(
        raise_for_status=True, headers={"User-Agent": "their-agent/1"}
    ) as session:
        dl = Downloader(tmp_path, progress=False, session=session)
        results = await dl.download([server.url("/nope.bin"), server.url("/a.bin")])
    assert [(r.status, r.attempts, r.error) for r in results] == [
        ("failed", 1, "HTTP 404 Not Found"),
        ("complete", 1, None),
    ]
    assert {h["User-Agent"] for _, _, h in server.request_log} == {"their-agent/1"}


async def test_a_closed_session_is_refused_before_the_state(
    server: FaultServer, tmp_path: Path
) -> None:
    url, before = await a_recorded_run(server, tmp_path)
    session = aiohttp.ClientSession()
    await session.close()
    with pytest.raises(RuntimeError, match="closed"):
        await Downloader(tmp_path, progress=False, session=session).download([url])
    assert recorded_id(tmp_path) == before


async def test_run_inside_a_running_loop_with_a_session_says_what_to_do(tmp_path: Path) -> None:
    async with Downloader(tmp_path, progress=False) as dl:
        with pytest.raises(RuntimeError, match=r"await dl\.download"):
            dl.run(["http://127.0.0.1:9/a"])
    assert not (tmp_path / ".downloader").exists()


async def test_run_inside_a_running_loop_without_a_session_works(tmp_path: Path) -> None:
    """Where a loop runs (a notebook), run() goes to a thread of its own; the
    server runs on a third loop, since this one is blocked meanwhile."""
    body = blob(10_000)
    other_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=other_loop.run_forever)
    thread.start()
    try:
        other = asyncio.run_coroutine_threadsafe(FaultServer().start(), other_loop).result()
        url = other.add("/a.bin", body)
        results = Downloader(tmp_path, progress=False).run([url])
        asyncio.run_coroutine_threadsafe(other.stop(), other_loop).result()
    finally:
        other_loop.call_soon_threadsafe(other_loop.stop)
        thread.join()
        other_loop.close()
    assert [r.status for r in results] == ["complete"]
    assert (tmp_path / "a.bin").read_bytes() == body


async def test_retry_of_another_downloaders_results_keeps_the_credentials(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add("/a.bin", b"secret bytes", statuses=[503], auth="Bearer s3cret")
    entry = Entry(url, headers={"Authorization": "Bearer s3cret"})
    first = await Downloader(tmp_path, progress=False, retries=0).download([entry])
    assert first[0].status == "failed"
    again = await Downloader(tmp_path, progress=False, quiet=True).retry(first)
    assert [r.status for r in again] == ["complete"]
    assert server.request_log[-1][2].get("Authorization") == "Bearer s3cret"


def test_state_dir_error_is_exported() -> None:
    assert issubclass(StateDirError, Exception)


async def test_every_entry_ends_with_a_finish_event(server: FaultServer, tmp_path: Path) -> None:
    """A bar driven by the callback reaches 100%: invalid entries and
    duplicates end too, each once."""
    url = server.add("/a.bin", b"a")
    events: list[tuple[str, str | None]] = []
    dl = Downloader(
        tmp_path,
        progress=False,
        on_progress=lambda e: events.append((e.kind, e.status)) if e.kind == "finish" else None,
    )
    results = await dl.download([url, "ftp://x/y", url, Entry(url, out="sub/")])
    assert [r.status for r in results] == ["complete", "failed", "skipped", "failed"]
    assert sorted(events) == sorted(
        [("finish", "complete"), ("finish", "failed"), ("finish", "skipped"), ("finish", "failed")]
    )


async def test_a_file_already_there_finishes_whole(server: FaultServer, tmp_path: Path) -> None:
    url = server.add("/a.bin", b"abc")
    (tmp_path / "a.bin").write_bytes(b"abc")
    events: list[tuple[str, int, int | None]] = []
    dl = Downloader(
        tmp_path, progress=False, on_progress=lambda e: events.append((e.kind, e.done, e.total))
    )
    results = await dl.download([url])
    assert results[0].status == "skipped" and results[0].bytes == 3
    assert events[-1] == ("finish", 3, 3)


async def test_the_library_warns_through_logging_not_print(
    server: FaultServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A script routes or silences warnings with logging; nothing is printed
    with progress=False."""
    urls = [server.add("/a.bin", b"a")]

    def boom(event: object) -> None:
        raise RuntimeError("callback bug")

    await Downloader(tmp_path, progress=False, on_progress=boom).download(urls)
    assert [r.name for r in caplog.records] == ["downloader"]
    assert "callback bug" in caplog.records[0].getMessage()
    assert capfd.readouterr() == ("", "")


async def test_a_duplicate_names_its_first_entry_by_its_place(
    server: FaultServer, tmp_path: Path
) -> None:
    a, b = server.add("/a", b"a"), server.add("/b", b"b")
    results = await Downloader(tmp_path, progress=False).download(
        [a, Entry(b, out="a/x.bin"), b, b]
    )
    assert [r.status for r in results] == ["complete", "failed", "complete", "skipped"]
    assert results[3].error == "duplicate of entry 3"


def test_run_in_a_loop_gives_back_the_sigint_handler_it_found(tmp_path: Path) -> None:
    async def main() -> None:
        Downloader(tmp_path, progress=False).run([])

    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        asyncio.run(main())
        assert signal.getsignal(signal.SIGINT) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, before)


async def test_attempts_add_up_across_retries(server: FaultServer, tmp_path: Path) -> None:
    """``attempts`` are the requests started for the entry, over every call
    of the recorded run: the report after a retry says 2, not 1."""
    url = server.add("/a.bin", b"a", statuses=[503])
    first = await Downloader(tmp_path, progress=False, retries=0).download([url])
    assert (first[0].status, first[0].attempts) == ("failed", 1)
    again = await Downloader(tmp_path, progress=False).retry()
    assert (again[0].status, again[0].attempts) == ("complete", 2)
    report = json.loads((tmp_path / ".downloader" / "report.json").read_text())
    assert report["entries"][0]["attempts"] == 2 == server.requests["/a.bin"]


async def test_a_second_call_refused_for_a_busy_folder_leaves_the_first_stoppable(
    server: FaultServer, tmp_path: Path
) -> None:
    from .test_cli import wait_for

    gate = asyncio.Event()
    held = [server.add(f"/held{n}.bin", blob(1000, n), gate=gate) for n in range(2)]
    dl = Downloader(tmp_path, progress=False)
    first = asyncio.ensure_future(dl.download(held))
    await wait_for(lambda: server.in_flight == 2, "both requests")
    with pytest.raises(StateDirError, match="another downloader run"):
        await dl.download([server.add("/other.bin", b"x")])
    dl.stop()
    results = await asyncio.wait_for(first, 30)
    gate.set()
    assert results.interrupted
    assert results.counts["complete"] == 0
    assert "/other.bin" not in server.requests
