"""The engine against a real HTTP server on 127.0.0.1 (real sockets, real files)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from pathlib import Path

import pytest

from downloader import Downloader, Entry, ProgressEvent

from .conftest import blob
from .server import FaultServer

#: every fault here, on http1 and on aiohttp (conftest.both_paths)
pytestmark = pytest.mark.usefixtures("both_paths")


def files_in(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and ".downloader" not in p.parts
    }


async def test_mixed_list_with_missing_files(server: FaultServer, tmp_path: Path) -> None:
    bodies = {f"/d/f{i}.bin": blob((i * 7919) % 300_000 + i, seed=i) for i in range(200)}
    missing = {"/d/f13.bin", "/d/f77.bin", "/d/f150.bin"}
    for path, body in bodies.items():
        if path not in missing:
            server.add(path, body)
    urls = [server.url(p) for p in bodies]
    dl = Downloader(tmp_path, jobs=8, progress=False, retries=1)
    results = await dl.download(urls)

    assert len(results) == 200
    assert {r.path for r in results.failed} == {p.rsplit("/", 1)[1] for p in missing}
    assert all(r.error == "HTTP 404 Not Found" and r.attempts == 1 for r in results.failed)
    on_disk = files_in(tmp_path)
    assert on_disk == {p.rsplit("/", 1)[1]: b for p, b in bodies.items() if p not in missing}
    report = json.loads((tmp_path / ".downloader" / "report.json").read_text())
    assert report["summary"]["failed"] == 3 and report["summary"]["complete"] == 197
    assert [e["line"] for e in report["entries"]] == [None] * 200

    # A second run downloads nothing and skips everything that is there.
    served = sum(server.requests.values())
    again = await Downloader(tmp_path, jobs=8, progress=False, retries=0).download(urls)
    assert len(again.skipped) == 197 and len(again.failed) == 3
    assert sum(server.requests.values()) - served == 3  # only the missing ones asked again


async def test_jobs_bound_and_sliding_window(server: FaultServer, tmp_path: Path) -> None:
    gate = asyncio.Event()
    server.add("/slow.bin", blob(1000), gate=gate)
    fast = [server.add(f"/fast{i}.bin", blob(5000, i), delay=0.02) for i in range(40)]

    async def release_when_fast_done() -> None:
        while sum(1 for p in server.finished if p.startswith("/fast")) < 40:
            await asyncio.sleep(0.01)
        # every fast file was requested while the slow one still held its slot
        gate.set()

    waiter = asyncio.create_task(release_when_fast_done())
    results = await Downloader(tmp_path, jobs=4, progress=False).download(
        [server.url("/slow.bin"), *fast]
    )
    await waiter
    assert len(results.complete) == 41
    assert server.max_in_flight == 4
    # the slow file finished last: the other slots kept working past it
    assert server.finished[-1] == "/slow.bin"


async def test_reset_at_75_percent_resumes(server: FaultServer, tmp_path: Path) -> None:
    bodies = [blob(400_000 + i * 1000, seed=i) for i in range(6)]
    urls = [server.add(f"/r{i}.bin", b, reset_at=0.75) for i, b in enumerate(bodies)]
    results = await Downloader(tmp_path, progress=False, retries=3).download(urls)
    assert len(results.complete) == 6
    for i, b in enumerate(bodies):
        assert (tmp_path / f"r{i}.bin").read_bytes() == b
    total = sum(len(b) for b in bodies)
    assert server.bytes_served < 1.5 * total  # resumed, not restarted (1.75x)
    assert all(r.attempts == 2 for r in results)


async def test_truncated_body_is_retried(server: FaultServer, tmp_path: Path) -> None:
    body = blob(300_000)
    url = server.add("/short.bin", body, short_by=1000)
    results = await Downloader(tmp_path, progress=False).download([url])
    assert results.complete and (tmp_path / "short.bin").read_bytes() == body
    assert results[0].attempts == 2
    ranges = [h.get("Range") for _, p, h in server.request_log if p == "/short.bin"]
    assert ranges == [None, f"bytes={len(body) - 1000}-"]


async def test_a_failure_before_any_byte_leaves_no_empty_part(
    server: FaultServer, tmp_path: Path
) -> None:
    """Nothing came to continue from: no .part is left behind (a malformed
    first chunk left one on http1)."""
    url = server.add("/none.bin", raw=b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    bad = server.add(
        "/chunk.bin",
        raw=b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nbody\r\n0\r\n\r\n",
    )
    results = await Downloader(tmp_path, retries=0, progress=False).download([url, bad])
    assert [r.status for r in results] == ["failed", "failed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".downloader"]


async def test_server_ignoring_range_restarts_cleanly(server: FaultServer, tmp_path: Path) -> None:
    body = blob(500_000)
    url = server.add("/ign.bin", body, reset_at=0.5, ignore_range=True)
    results = await Downloader(tmp_path, progress=False).download([url])
    assert results.complete
    assert (tmp_path / "ign.bin").read_bytes() == body


async def test_changing_resource_is_never_spliced(server: FaultServer, tmp_path: Path) -> None:
    v1, v2 = blob(500_000, 1), blob(500_000, 2)
    url = server.add("/chg.bin", reset_at=0.5, versions=[v1, v2])
    results = await Downloader(tmp_path, progress=False).download([url])
    assert results.complete
    assert (tmp_path / "chg.bin").read_bytes() == v2


async def test_retry_after_is_honoured(server: FaultServer, tmp_path: Path) -> None:
    url = server.add("/busy.bin", b"x" * 100, statuses=[429], retry_after="1")
    results = await Downloader(tmp_path, progress=False).download([url])
    assert results.complete and results[0].attempts == 2
    times = [t for t, p, _ in server.request_log if p == "/busy.bin"]
    assert times[1] - times[0] >= 1.0


async def test_permanent_error_fails_at_once(server: FaultServer, tmp_path: Path) -> None:
    url = server.add("/gone.bin", statuses=[410, 410, 410])
    results = await Downloader(tmp_path, progress=False).download([url])
    assert results.failed[0].error == "HTTP 410 Gone" and results.failed[0].attempts == 1
    assert not list(tmp_path.glob("gone.bin*"))  # no error body under any name


async def test_transient_errors_exhaust_retries(server: FaultServer, tmp_path: Path) -> None:
    url = server.add("/down.bin", statuses=[503] * 10)
    results = await Downloader(tmp_path, progress=False, retries=2).download([url])
    rec = results.failed[0]
    assert rec.attempts == 3 and rec.error == "HTTP 503 Service Unavailable"
    assert server.requests["/down.bin"] == 3


async def test_stall_is_named_and_bounded(server: FaultServer, tmp_path: Path) -> None:
    url = server.add("/stall.bin", b"x" * 1000, stall=True)
    results = await Downloader(tmp_path, progress=False, retries=1, timeout=0.3).download([url])
    rec = results.failed[0]
    assert "stalled" in rec.error and rec.attempts == 2


async def test_mirrors_are_tried_in_turn(server: FaultServer, tmp_path: Path) -> None:
    body = blob(10_000)
    good = server.add("/m2/file.bin", body)
    entry = Entry(server.url("/m1/file.bin"), mirrors=(good,))
    results = await Downloader(tmp_path, progress=False, retries=0).download([entry])
    assert results.complete and results[0].path == "file.bin" and results[0].attempts == 2
    assert results[0].url == server.url("/m1/file.bin")
    assert (tmp_path / "file.bin").read_bytes() == body


async def test_one_mirrors_retry_after_does_not_hold_the_next(
    server: FaultServer, tmp_path: Path
) -> None:
    """A 503 asking to wait 100 s is that server's wish: the next mirror is
    tried after the usual backoff (the run would wait 100 s otherwise)."""
    body = blob(1000)
    busy = server.add("/busy/file.bin", b"", statuses=[503], retry_after="100")
    entry = Entry(busy, mirrors=(server.add("/ok/file.bin", body),))
    dl = Downloader(tmp_path, progress=False)
    results = await asyncio.wait_for(dl.download([entry]), 30)
    assert results.complete and results[0].attempts == 2
    assert (tmp_path / "file.bin").read_bytes() == body


async def test_checksums(server: FaultServer, tmp_path: Path) -> None:
    body = blob(200_000)
    good = hashlib.sha256(body).hexdigest()
    ok = Entry(server.add("/ok.bin", body), checksum=f"sha-256={good}")
    bad = Entry(server.add("/bad.bin", body), checksum="md5=" + "0" * 32)
    results = await Downloader(tmp_path, progress=False).download([ok, bad])
    assert [r.status for r in results] == ["complete", "failed"]
    assert "checksum mismatch" in (results[1].error or "")
    assert not (tmp_path / "bad.bin").exists() and not (tmp_path / "bad.bin.part").exists()
    # An existing file that fails its checksum is fetched again.
    (tmp_path / "ok.bin").write_bytes(b"corrupt")
    again = await Downloader(tmp_path, progress=False).download([ok])
    assert again.complete and (tmp_path / "ok.bin").read_bytes() == body


async def test_redirects_name_from_original_url(server: FaultServer, tmp_path: Path) -> None:
    server.add("/real/target.bin", b"payload")
    hop = server.add("/hop", redirect="/real/target.bin")
    url = server.add("/asked-for.bin", redirect=hop)
    loop = server.add("/loop", redirect="/loop")
    evil = server.add("/evil", redirect="file:///etc/passwd")
    results = await Downloader(tmp_path, progress=False, retries=0).download([url, loop, evil])
    assert results[0].status == "complete" and results[0].path == "asked-for.bin"
    assert (tmp_path / "asked-for.bin").read_bytes() == b"payload"
    assert "redirect loop" in (results[1].error or "")
    assert "non-HTTP" in (results[2].error or "")


async def test_max_redirects(server: FaultServer, tmp_path: Path) -> None:
    server.add("/end.bin", b"e")
    for i in range(3):
        server.add(f"/r{i}", redirect=f"/r{i + 1}" if i < 2 else "/end.bin")
    ok = await Downloader(tmp_path / "a", progress=False, max_redirects=3).download(
        [server.url("/r0")]
    )
    assert ok.complete
    too_many = await Downloader(tmp_path / "b", progress=False, max_redirects=2).download(
        [server.url("/r0")]
    )
    assert "too many redirects" in (too_many.failed[0].error or "")


async def test_bytes_saved_as_served_no_decompression(server: FaultServer, tmp_path: Path) -> None:
    raw = b"hello " * 10_000
    url = server.add("/page.txt", raw, gzip=True)
    results = await Downloader(tmp_path, progress=False).download([url])
    assert results.complete
    saved = (tmp_path / "page.txt").read_bytes()
    assert saved[:2] == b"\x1f\x8b" and len(saved) < len(raw)  # the gzip bytes, as curl -o
    assert all(h.get("Accept-Encoding") == "identity" for _, _, h in server.request_log)


async def test_headers_and_user_agent(server: FaultServer, tmp_path: Path) -> None:
    url = server.add("/h.bin", b"h")
    entry = Entry(url, headers={"X-Entry": "1"})
    dl = Downloader(tmp_path, progress=False, headers={"X-Global": "g"}, user_agent="ua/1")
    await dl.download([entry])
    sent = server.request_log[0][2]
    assert sent["X-Entry"] == "1" and sent["X-Global"] == "g" and sent["User-Agent"] == "ua/1"


async def test_duplicate_and_colliding_names(server: FaultServer, tmp_path: Path) -> None:
    a = server.add("/x/data.bin", b"A")
    b = server.add("/y/data.bin", b"B")
    results = await Downloader(tmp_path, progress=False).download([a, b, a])
    assert [(r.path, r.status) for r in results] == [
        ("data.bin", "complete"),
        ("data.1.bin", "complete"),
        ("data.bin", "skipped"),
    ]
    assert results[2].error == "duplicate of entry 1"
    assert server.requests["/x/data.bin"] == 1
    assert (tmp_path / "data.bin").read_bytes() == b"A"
    assert (tmp_path / "data.1.bin").read_bytes() == b"B"


async def test_on_progress_events(server: FaultServer, tmp_path: Path) -> None:
    url = server.add("/p.bin", blob(100_000))
    events: list[ProgressEvent] = []
    await Downloader(tmp_path, progress=False, on_progress=events.append).download([url])
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "finish"
    assert events[-1].status == "complete" and events[-1].done == 100_000


async def test_session_reuse_and_given_session(server: FaultServer, tmp_path: Path) -> None:
    import aiohttp

    url = server.add("/s.bin", b"s")
    async with Downloader(tmp_path / "a", progress=False) as dl:
        first = await dl.download([url])
        second = await dl.download([url], collect=True)
    assert first.complete and second.skipped
    async with aiohttp.ClientSession() as session:
        res = await Downloader(tmp_path / "b", progress=False, session=session).download([url])
        assert res.complete and not session.closed


async def test_retry_only_the_failed(server: FaultServer, tmp_path: Path) -> None:
    ok = server.add("/ok.bin", b"ok")
    later = server.add("/later.bin", b"later", statuses=[404])
    dl = Downloader(tmp_path, progress=False)
    first = await dl.download([ok, later])
    assert [r.status for r in first] == ["complete", "failed"]
    again = await dl.retry(first)
    assert [r.status for r in again] == ["complete", "complete"]
    assert server.requests["/ok.bin"] == 1 and server.requests["/later.bin"] == 2


def test_run_blocking_even_inside_a_running_loop(tmp_path: Path) -> None:
    """run() from a thread whose loop is running (a notebook) still works."""
    holder: dict[str, object] = {}

    async def scenario() -> None:
        srv = await FaultServer().start()
        srv.add("/n.bin", b"nb")
        done = threading.Event()

        def blocking() -> None:
            holder["results"] = Downloader(tmp_path, progress=False).run([srv.url("/n.bin")])
            done.set()

        # call run() right here, inside the running loop, from a worker thread
        # so that the server (on this loop) keeps answering.
        await asyncio.get_running_loop().run_in_executor(None, blocking)
        await srv.stop()

    asyncio.run(scenario())
    assert holder["results"].complete  # type: ignore[attr-defined]


async def test_invalid_entries_do_not_stop_others(server: FaultServer, tmp_path: Path) -> None:
    url = server.add("/fine.bin", b"fine")
    results = await Downloader(tmp_path, progress=False).download(
        ["ftp://x/y", Entry(url, out="../escape"), url]
    )
    assert [r.status for r in results] == ["failed", "failed", "complete"]
    assert results[0].error == "unsupported scheme 'ftp'" and results[0].path is None
    assert "leaves the output directory" in (results[1].error or "")
    assert not (tmp_path.parent / "escape").exists()


@pytest.mark.parametrize("split", [1])
async def test_large_file_streams(server: FaultServer, tmp_path: Path, split: int) -> None:
    body = blob(8 * 1024 * 1024)
    url = server.add("/large.bin", body)
    results = await Downloader(tmp_path, progress=False, split=split).download([url])
    assert results.complete
    assert (
        hashlib.sha256((tmp_path / "large.bin").read_bytes()).digest()
        == hashlib.sha256(body).digest()
    )


async def test_proxy_from_environment(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.add("/via-proxy.bin", b"proxied")
    monkeypatch.setenv("HTTP_PROXY", server.base)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    # the host does not exist: only the proxy (our server) can answer
    results = await Downloader(tmp_path, progress=False, retries=0).download(
        ["http://files.invalid/via-proxy.bin"]
    )
    assert results.complete and (tmp_path / "via-proxy.bin").read_bytes() == b"proxied"
    monkeypatch.setenv("NO_PROXY", "files.invalid")
    direct = await Downloader(tmp_path / "b", progress=False, retries=0).download(
        ["http://files.invalid/via-proxy.bin"]
    )
    assert direct.failed  # bypassed the proxy, and the host does not resolve


async def test_content_disposition_names(server: FaultServer, tmp_path: Path) -> None:
    cd = 'attachment; filename="report.pdf"'
    named = Entry(server.add("/a", b"A", content_disposition=cd), out="mine.pdf")
    plain = server.add("/report.pdf", b"P", delay=0.2)
    served = server.add("/b", b"B", content_disposition=cd)
    dl = Downloader(tmp_path, progress=False, content_disposition=True)
    results = await dl.download([named, plain, served])
    assert [r.path for r in results] == ["mine.pdf", "report.pdf", "report.1.pdf"]
    assert (tmp_path / "mine.pdf").read_bytes() == b"A"  # out= wins over the server
    assert (tmp_path / "report.pdf").read_bytes() == b"P"
    assert (tmp_path / "report.1.pdf").read_bytes() == b"B"
    # a rerun of the same list maps every entry to the same file and skips it
    again = await Downloader(tmp_path, progress=False, content_disposition=True).download(
        [named, plain, served]
    )
    assert [(r.status, r.path) for r in again] == [
        ("skipped", "mine.pdf"),
        ("skipped", "report.pdf"),
        ("skipped", "report.1.pdf"),
    ]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        "mine.pdf",
        "report.1.pdf",
        "report.pdf",
    ]


async def test_a_server_name_taken_by_a_folder_fails_not_skips(
    server: FaultServer, tmp_path: Path
) -> None:
    """The server's name gets the same "already there" checks as a list name."""
    (tmp_path / "report.pdf").mkdir()
    url = server.add("/b", b"B", content_disposition='attachment; filename="report.pdf"')
    results = await Downloader(tmp_path, progress=False, content_disposition=True).download([url])
    [record] = list(results)
    assert (record.status, record.path) == ("failed", "report.pdf")
    assert record.error == "report.pdf exists and is not a file"
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.part").exists()


async def test_part_name_of_one_entry_is_not_another_entrys_file(
    server: FaultServer, tmp_path: Path
) -> None:
    first = server.add("/x/f.bin.part", b"first")
    second = server.add("/y/f.bin", b"second")
    results = await Downloader(tmp_path, progress=False, jobs=1).download([first, second])
    assert [r.path for r in results] == ["f.bin.part", "f.1.bin"]
    assert (tmp_path / "f.bin.part").read_bytes() == b"first"
    assert (tmp_path / "f.1.bin").read_bytes() == b"second"


async def test_retry_results_of_an_older_run(server: FaultServer, tmp_path: Path) -> None:
    ok1 = server.add("/ok1.bin", b"1")
    flaky = server.add("/flaky.bin", b"F", statuses=[404])
    ok2 = server.add("/ok2.bin", b"2")
    dl = Downloader(tmp_path, progress=False)
    first = await dl.download([ok1, flaky])
    await dl.download([ok2])  # another run is recorded since
    again = await dl.retry(first)
    assert [(r.path, r.status) for r in again] == [
        ("ok1.bin", "complete"),
        ("flaky.bin", "complete"),
    ]
    assert (tmp_path / "flaky.bin").read_bytes() == b"F"
    assert server.requests["/ok2.bin"] == 1


async def test_explicit_authorization_wins_over_url_credentials(
    server: FaultServer, tmp_path: Path
) -> None:
    server.add("/a.bin", b"a", auth="Bearer X")
    port = server.base.rsplit(":", 1)[1]
    url = f"http://u:p@127.0.0.1:{port}/a.bin"
    results = await Downloader(
        tmp_path, progress=False, headers={"Authorization": "Bearer X"}
    ).download([url])
    assert results.complete, results[0].error


async def test_retry_in_a_new_process_sends_no_placeholder_credentials(
    server: FaultServer, tmp_path: Path
) -> None:
    server.add("/c.bin", b"c", statuses=[503])
    port = server.base.rsplit(":", 1)[1]
    url = f"http://u:secret@127.0.0.1:{port}/c.bin"
    first = await Downloader(tmp_path, progress=False, retries=0).download([url])
    assert first.failed
    # a fresh Downloader knows no credentials: it asks without any
    again = await Downloader(tmp_path, progress=False, quiet=True).retry()
    assert again.complete
    last = server.request_log[-1][2]
    assert "Authorization" not in last


async def test_retry_of_older_results_sends_no_placeholder_credentials(
    server: FaultServer, tmp_path: Path
) -> None:
    """Results made by a process that never had the credentials, retried
    after another run was recorded: their entries carry no ``***`` user."""
    server.add("/c.bin", b"c", statuses=[503, 503])
    port = server.base.rsplit(":", 1)[1]
    url = f"http://u:secret@127.0.0.1:{port}/c.bin"
    await Downloader(tmp_path, progress=False, retries=0).download([url])
    second = await Downloader(tmp_path, progress=False, retries=0, quiet=True).retry()
    assert second.failed and "***" not in second.failed[0].entry.url  # type: ignore[union-attr]
    await Downloader(tmp_path, progress=False).download([server.add("/other.bin", b"o")])
    again = await Downloader(tmp_path, progress=False, quiet=True).retry(second)
    assert again.complete
    assert "Authorization" not in server.request_log[-1][2]


async def test_a_failing_progress_callback_does_not_stop_the_run(
    server: FaultServer, tmp_path: Path
) -> None:
    urls = [server.add(f"/cb{i}.bin", b"x") for i in range(3)]

    def boom(event: ProgressEvent) -> None:
        raise RuntimeError("callback bug")

    results = await Downloader(tmp_path, progress=False, on_progress=boom).download(urls)
    assert len(results.complete) == 3


async def test_results_are_whole_when_the_report_cannot_be_written(
    server: FaultServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The results and the report come from one pass; a report that fails
    half-way does not cut the results short."""
    (tmp_path / ".downloader" / "report.json.tmp").mkdir(parents=True)
    urls = [server.add("/ok.bin", b"ok"), server.url("/missing.bin")]
    results = await Downloader(tmp_path, progress=False).download(urls)
    assert [r.status for r in results] == ["complete", "failed"]
    assert results.counts == {"complete": 1, "skipped": 0, "failed": 1}
    # a warning through logging (the command line prints it as its own)
    assert any("cannot write the report" in r.getMessage() for r in caplog.records)


async def test_server_names_stay_with_their_entries_on_a_rerun(
    server: FaultServer, tmp_path: Path
) -> None:
    """Two entries the server names alike get names in the order responses
    arrive. On a rerun in another order, the one that failed before must
    not find the other's file under "its" name and skip its own download."""
    cd = 'attachment; filename="same.bin"'
    one = server.add("/d1", b"ONE" * 10, content_disposition=cd, statuses=[503])
    two = server.add("/d2", b"TWO" * 10, content_disposition=cd)
    dl = Downloader(tmp_path, progress=False, retries=0, content_disposition=True)
    first = await dl.download([one, two])
    assert [r.status for r in first] == ["failed", "complete"]
    assert (tmp_path / "same.bin").read_bytes() == b"TWO" * 10
    server.paths["/d2"].delay = 0.3  # d1's answer comes first this time
    again = await dl.download([one, two])
    by_url = {r.url: r for r in again}
    assert by_url[two].status == "skipped" and by_url[two].path == "same.bin"
    assert by_url[one].status == "complete" and by_url[one].path == "same.1.bin"
    assert (tmp_path / "same.1.bin").read_bytes() == b"ONE" * 10
    assert (tmp_path / "same.bin").read_bytes() == b"TWO" * 10


async def test_a_given_session_still_gets_the_stall_timeout(
    server: FaultServer, tmp_path: Path
) -> None:
    """aiohttp's own default (no read timeout, 5 minutes for everything)
    must not replace --timeout for a session the caller passed in."""
    import aiohttp

    url = server.add("/stall.bin", b"x" * 1000, stall=True)
    async with aiohttp.ClientSession() as session:
        dl = Downloader(tmp_path, progress=False, retries=0, timeout=0.3, session=session)
        results = await asyncio.wait_for(dl.download([url]), 30)
    assert "stalled" in results.failed[0].error


async def test_short_206_answers_are_continued_not_counted_as_failures(
    server: FaultServer, tmp_path: Path
) -> None:
    """A server that caps each range answers a resume with less than asked
    for, correctly labelled: each is continued, and no retry is spent."""
    body = blob(1_000_000, 7)
    url = server.add("/capped.bin", body, range_cap=128 * 1024, reset_at=0.1)
    results = await Downloader(tmp_path, progress=False, retries=1).download([url])
    assert results.complete, results.failed
    assert (tmp_path / "capped.bin").read_bytes() == body
    assert server.requests["/capped.bin"] == 8  # the reset one, then 7 capped ranges


async def test_a_server_name_outlives_a_run_that_never_reached_its_entry(
    server: FaultServer, tmp_path: Path
) -> None:
    """The name a server gave is kept with the entry, not only in the
    journal of the run that saw it: a rerun stopped before any answer, then
    --retry, still finds that f.bin is A's, not B's."""
    from .test_cli import wait_for

    cd = 'attachment; filename="f.bin"'
    a = server.add("/x/a", b"A" * 100, content_disposition=cd)
    b = server.add("/x/b", b"B" * 100, content_disposition=cd, statuses=[404])
    dl = Downloader(tmp_path, progress=False, retries=0, content_disposition=True)
    first = await dl.download([a, b])
    assert [(r.status, r.path) for r in first] == [("complete", "f.bin"), ("failed", "b")]
    server.paths["/x/a"].delay = server.paths["/x/b"].delay = 30.0
    rerun = asyncio.ensure_future(dl.download([a, b]))
    await wait_for(lambda: server.in_flight == 2, "both requests")
    dl.stop()
    assert (await rerun).interrupted
    server.paths["/x/a"].delay, server.paths["/x/b"].delay = 0.3, 0.0  # B answers first
    again = await dl.retry()
    by_url = {r.url: r for r in again}
    assert (by_url[b].status, by_url[b].path) == ("complete", "f.1.bin")
    assert (by_url[a].status, by_url[a].path) == ("skipped", "f.bin")
    assert (tmp_path / "f.bin").read_bytes() == b"A" * 100
    assert (tmp_path / "f.1.bin").read_bytes() == b"B" * 100


async def test_short_206_answers_with_a_checksum_hash_each_byte_once(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from downloader import transfer

    body = blob(1_000_000, 3)
    digest = hashlib.sha256(body).hexdigest()
    url = server.add("/capped.bin", body, range_cap=64 * 1024, reset_at=0.1)
    reread: list[int | None] = []
    real = transfer._hash_file

    async def counting(path: Path, algo: str, limit: int | None = None) -> object:
        reread.append(limit)
        return await real(path, algo, limit)

    monkeypatch.setattr(transfer, "_hash_file", counting)
    entry = Entry(url, checksum=f"sha-256={digest}")
    results = await Downloader(tmp_path, progress=False, retries=1).download([entry])
    assert results.complete and (tmp_path / "capped.bin").read_bytes() == body
    assert server.requests["/capped.bin"] > 10
    assert reread == [100_000]  # only after the reset: the capped answers carry the hash on


async def test_a_full_disk_under_the_run_state_stops_nothing(
    server: FaultServer, tmp_path: Path
) -> None:
    """The journal's disk fills up (here: it is /dev/full, which answers
    every write with ENOSPC): every download still completes, the run ends
    normally and says what was not saved."""
    import os

    gate, gate2 = asyncio.Event(), asyncio.Event()
    first = server.add("/first.bin", b"1" * 1000, gate=gate)
    second = server.add("/second.bin", b"2" * 1000, gate=gate2)
    rest = [server.add(f"/r{n}.bin", bytes([n]) * 1000) for n in range(5)]
    dl = Downloader(tmp_path, progress=False, jobs=1)
    run = asyncio.ensure_future(dl.download([first, second, *rest]))
    journal = tmp_path / ".downloader" / "journal.jsonl"
    from .test_cli import wait_for

    await wait_for(lambda: server.requests.get("/first.bin") == 1, "the first request")
    assert not journal.exists()  # opened at the first outcome
    os.symlink("/dev/full", journal)
    gate.set()
    await wait_for(lambda: server.requests.get("/second.bin") == 1, "the second request")
    journal.unlink()  # space again: the next outcomes are journalled
    gate2.set()
    results = await asyncio.wait_for(run, 30)
    assert len(results.complete) == 7
    assert all((tmp_path / f"r{n}.bin").read_bytes() == bytes([n]) * 1000 for n in range(5))
    report = json.loads((tmp_path / ".downloader" / "report.json").read_text())
    assert [e["status"] for e in report["entries"]] == ["complete"] * 7
    lines = [json.loads(line) for line in journal.read_text().splitlines() if line]
    assert [rec["i"] for rec in lines] == [1, 2, 3, 4, 5, 6]


async def test_report_path_is_written_when_dirs_own_report_cannot_be(
    server: FaultServer, tmp_path: Path
) -> None:
    (tmp_path / "out" / ".downloader" / "report.json").mkdir(parents=True)  # in the way
    url = server.add("/ok.bin", b"ok")
    extra = tmp_path / "elsewhere.json"
    results = await Downloader(tmp_path / "out", progress=False, report=extra).download([url])
    assert results.complete
    report = json.loads(extra.read_text())
    assert [e["status"] for e in report["entries"]] == ["complete"]
    assert report["summary"]["complete"] == 1


async def test_per_host_lets_other_hosts_go_while_one_is_busy(
    server: FaultServer, tmp_path: Path
) -> None:
    """--per-host 1 and ten files from a held host ahead of ten from another:
    the other host's files all complete while the first host's are held
    (127.0.0.1 and localhost are two hosts of the one test server)."""
    from .test_cli import wait_for

    gate = asyncio.Event()
    busy = [server.add(f"/a{n}.bin", b"a" * 100, gate=gate) for n in range(10)]
    other_base = server.base.replace("127.0.0.1", "localhost")
    free = [f"{other_base}/b{n}.bin" for n in range(10)]
    for n in range(10):
        server.add(f"/b{n}.bin", b"b" * 100)
    dl = Downloader(tmp_path, progress=False, jobs=4, per_host=1)
    run = asyncio.ensure_future(dl.download(busy + free))
    await wait_for(lambda: all((tmp_path / f"b{n}.bin").exists() for n in range(10)), "b files")
    assert server.requests.get("/a0.bin") == 1 and not (tmp_path / "a0.bin").exists()
    assert sum(server.requests.get(f"/a{n}.bin", 0) for n in range(10)) == 1  # one slot
    gate.set()
    results = await asyncio.wait_for(run, 30)
    assert len(results.complete) == 20


async def test_per_host_shares_out_slots_fairly_as_they_come_free(
    server: FaultServer, tmp_path: Path
) -> None:
    """--per-host 1, twenty files of one host ahead of twenty of another,
    all alike: the two hosts go side by side. (Entries waiting for a slot
    were not counted: a host whose slot came free looked free to the next
    worker too, and got the next entry ahead of the other host's.)"""
    for n in range(20):
        server.add(f"/a{n}.bin", b"a", delay=0.02)
        server.add(f"/b{n}.bin", b"b", delay=0.02)
    other_base = server.base.replace("127.0.0.1", "localhost")
    urls = [server.url(f"/a{n}.bin") for n in range(20)]
    urls += [f"{other_base}/b{n}.bin" for n in range(20)]
    results = await Downloader(tmp_path, progress=False, jobs=8, per_host=1).download(urls)
    assert len(results.complete) == 40
    first_half = server.finished[:20]
    assert sum(p.startswith("/b") for p in first_half) >= 8, first_half  # (10: side by side)


async def test_a_callers_session_middlewares_run_for_every_entry(
    server: FaultServer, tmp_path: Path
) -> None:
    """Our per-request guard for secret headers must not replace a caller's
    own middlewares (signing, logging), which aiohttp would otherwise skip."""
    import aiohttp

    seen: list[str] = []

    async def logging_mw(request: aiohttp.ClientRequest, handler):  # type: ignore[no-untyped-def]
        seen.append(request.url.path)
        return await handler(request)

    plain = server.add("/m1", b"1")
    keyed = Entry(server.add("/m2", b"2"), headers={"X-Api-Key": "k"})
    async with aiohttp.ClientSession(middlewares=(logging_mw,)) as session:
        dl = Downloader(tmp_path, progress=False, session=session)
        results = await dl.download([plain, keyed])
    assert len(results.complete) == 2
    assert sorted(seen) == ["/m1", "/m2"]


async def test_a_slow_body_within_the_timeout_is_no_stall(
    server: FaultServer, tmp_path: Path
) -> None:
    """Pieces come 0.6 s apart with --timeout 1: each one counts as news (a
    reader waiting for a bigger piece must still see them: http1.FLUSH)."""
    body = blob(256 * 1024)
    url = server.add("/slow.bin", body, slow=2.4)
    dl = Downloader(tmp_path, timeout=1, retries=0, progress=False)
    (record,) = await dl.download([url])
    assert record.status == "complete", record.error
    assert (tmp_path / "slow.bin").read_bytes() == body
