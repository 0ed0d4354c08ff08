"""--split: ranges written at their offsets into one .part; each segment
retried and resumed on its own; never a splice of two versions."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from downloader import Downloader
from downloader.config import MIN_SEGMENT
from downloader.segments import plan

from .conftest import blob
from .server import FaultServer

#: every fault here, on http1 and on aiohttp (conftest.both_paths)
pytestmark = pytest.mark.usefixtures("both_paths")

SIZE = 3 * MIN_SEGMENT + 12345


def test_plan_covers_every_byte_once() -> None:
    for total in (2 * MIN_SEGMENT, SIZE, 100 * MIN_SEGMENT + 7):
        for split in (1, 2, 3, 8, 16):
            segs = plan(total, split)
            assert segs[0][0] == 0 and segs[-1][1] == total
            assert all(a[1] == b[0] for a, b in itertools.pairwise(segs))
            assert len(segs) == 1 or all(s[1] - s[0] >= MIN_SEGMENT for s in segs)
            assert len(segs) <= split


async def test_split_download(server: FaultServer, tmp_path: Path) -> None:
    body = blob(SIZE)
    url = server.add("/big.bin", body)
    results = await Downloader(tmp_path, progress=False, split=3).download([url])
    assert results.complete and (tmp_path / "big.bin").read_bytes() == body
    ranges = sorted(h.get("Range", "") for _, _, h in server.request_log)
    assert ranges[0] == "" and len(ranges) == 3 and all(r.startswith("bytes=") for r in ranges[1:])
    assert not list((tmp_path / ".downloader" / "parts").iterdir())


async def test_small_files_never_split(server: FaultServer, tmp_path: Path) -> None:
    url = server.add("/small.bin", blob(MIN_SEGMENT))
    await Downloader(tmp_path, progress=False, split=8).download([url])
    assert len(server.request_log) == 1


async def test_failed_segment_is_retried_alone(server: FaultServer, tmp_path: Path) -> None:
    body = blob(SIZE)
    # the first request (segment 0) is fine; the next (segment 1) breaks midway
    url = server.add("/big.bin", body, reset_at=0.5, resets_left=2)
    results = await Downloader(tmp_path, progress=False, split=3).download([url])
    assert results.complete and (tmp_path / "big.bin").read_bytes() == body
    ranges = [h.get("Range") for _, _, h in server.request_log]
    starts = [int(r[6:].split("-")[0]) for r in ranges if r]
    segment_starts = {s[0] for s in plan(SIZE, 3)}
    assert len(ranges) == 4  # whole GET, two segments, one retry of the broken one
    assert starts[-1] not in segment_starts  # the retry resumed mid-segment


async def test_range_ignored_falls_back_to_one_connection(
    server: FaultServer, tmp_path: Path
) -> None:
    body = blob(SIZE)
    url = server.add("/big.bin", body, ignore_range=True)
    results = await Downloader(tmp_path, progress=False, split=4).download([url])
    assert results.complete and (tmp_path / "big.bin").read_bytes() == body


async def test_ranges_refused_fall_back_to_one_connection(
    server: FaultServer, tmp_path: Path
) -> None:
    """Accept-Ranges said yes, the ranges get 416 (or 501): the split ends,
    the download does not; and no segment table is left to trip a rerun."""
    for n, refusal in enumerate((416, 501)):
        body = blob(SIZE, n)
        url = server.add(f"/big{n}.bin", body, range_status=refusal)
        results = await Downloader(tmp_path, progress=False, split=4, retries=0).download([url])
        assert results.complete, results[0].error
        assert (tmp_path / f"big{n}.bin").read_bytes() == body
        assert not list((tmp_path / ".downloader" / "parts").iterdir())


async def test_a_segment_refused_for_another_reason_keeps_the_part(
    server: FaultServer, tmp_path: Path
) -> None:
    """A 403 to a segment is about the request (credentials not given
    again, say), not the range: the entry fails, and what the other
    segments hold stays for a --retry."""
    url = server.add("/big.bin", blob(SIZE), range_status=403)
    results = await Downloader(tmp_path, progress=False, split=4, retries=0).download([url])
    assert results[0].status == "failed" and "HTTP 403" in (results[0].error or "")
    assert (tmp_path / "big.bin.part").exists()
    assert list((tmp_path / ".downloader" / "parts").iterdir())  # its segment table


async def test_changed_resource_during_split_restarts(server: FaultServer, tmp_path: Path) -> None:
    v1, v2 = blob(SIZE, 1), blob(SIZE, 2)
    url = server.add("/big.bin", versions=[v1, v2])
    results = await Downloader(tmp_path, progress=False, split=3).download([url])
    assert results.complete and (tmp_path / "big.bin").read_bytes() == v2


async def test_segments_resume_in_a_new_process(server: FaultServer, tmp_path: Path) -> None:
    body = blob(SIZE)
    url = server.add("/big.bin", body, reset_at=0.5, resets_left=2)
    first = await Downloader(tmp_path, progress=False, split=3, retries=0).download([url])
    assert first.failed
    meta_files = list((tmp_path / ".downloader" / "parts").glob("*.json"))
    (meta,) = [json.loads(p.read_text()) for p in meta_files]
    assert len(meta["segments"]) == 3 and any(s[2] < s[1] for s in meta["segments"])
    served = server.bytes_served
    again = await Downloader(tmp_path, progress=False, split=3).retry()
    assert again.complete and (tmp_path / "big.bin").read_bytes() == body
    unfinished = sum(s[1] - s[2] for s in meta["segments"])
    assert server.bytes_served - served == unfinished  # only the missing bytes


async def test_per_host_bounds_segments_too(server: FaultServer, tmp_path: Path) -> None:
    body = blob(SIZE)
    url = server.add("/big.bin", body, slow=0.3)
    results = await Downloader(tmp_path, progress=False, split=3, per_host=1).download([url])
    assert results.complete and (tmp_path / "big.bin").read_bytes() == body
    assert server.max_in_flight == 1 and len(server.request_log) == 3


async def test_segments_check_last_modified_too(server: FaultServer, tmp_path: Path) -> None:
    """No ETag, If-Range ignored, Last-Modified changes: never a splice."""
    from aiohttp import web

    versions = [blob(SIZE, 1), blob(SIZE, 2)]
    dates = ["Mon, 01 Jan 2024 00:00:00 GMT", "Tue, 02 Jan 2024 00:00:00 GMT"]
    served = {"n": 0}

    async def serve(request: web.Request, path: str) -> web.StreamResponse:
        v = min(served["n"], 1)
        served["n"] += 1
        body, headers = versions[v], {"Last-Modified": dates[v], "Accept-Ranges": "bytes"}
        rng = request.headers.get("Range")
        status, start, stop = 200, 0, len(body)
        if rng:  # honours the range, ignores If-Range
            a, _, b = rng[6:].partition("-")
            start, stop, status = int(a), int(b) + 1, 206
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(body)}"
        return web.Response(status=status, body=body[start:stop], headers=headers)

    server._serve = serve  # type: ignore[method-assign]
    results = await Downloader(tmp_path, progress=False, split=2).download([server.url("/f.bin")])
    assert results.complete
    assert (tmp_path / "f.bin").read_bytes() in versions


async def test_206_with_unknown_total_never_completes_short(
    server: FaultServer, tmp_path: Path
) -> None:
    from aiohttp import web

    body = blob(1_000_000)
    calls = {"n": 0}

    async def serve(request: web.Request, path: str) -> web.StreamResponse:
        calls["n"] += 1
        rng = request.headers.get("Range")
        headers = {"ETag": '"v1"', "Accept-Ranges": "bytes"}
        if not rng:  # the first answer breaks at 60%
            resp = web.StreamResponse(headers=headers)
            resp.content_length = len(body)
            await resp.prepare(request)
            await resp.write(body[:600_000])
            assert request.transport is not None
            request.transport.close()
            return resp
        start = int(rng[6:].split("-")[0])
        end = min(start + 200_000, len(body)) - 1  # short ranges, total unknown
        headers["Content-Range"] = f"bytes {start}-{end}/*"
        return web.Response(status=206, body=body[start : end + 1], headers=headers)

    server._serve = serve  # type: ignore[method-assign]
    results = await Downloader(tmp_path, progress=False, retries=3).download([server.url("/f.bin")])
    # each short 206 is a truncated body: resumed until the recorded length is reached
    assert results.complete and (tmp_path / "f.bin").read_bytes() == body


async def test_a_segment_answered_in_short_ranges_completes(
    server: FaultServer, tmp_path: Path
) -> None:
    """Each segment's 206 is capped below the segment's size: the segment
    continues with another request, without spending the retry budget."""
    body = blob(SIZE)
    url = server.add("/capped.bin", body, range_cap=MIN_SEGMENT // 2)
    results = await Downloader(tmp_path, progress=False, split=3, retries=0).download([url])
    assert results.complete, results.failed
    assert (tmp_path / "capped.bin").read_bytes() == body
    ranged = [h["Range"] for _, _, h in server.request_log if "Range" in h]
    assert len(ranged) > 2  # the segments needed more than one request each


async def test_ranges_without_a_validator_still_split(server: FaultServer, tmp_path: Path) -> None:
    """The contract's rule (and aria2c's): a server that answers ranges is
    split; with no ETag or Last-Modified, each 206 must state the total."""
    body = blob(SIZE)
    url = server.add("/big.bin", body, etag=False)
    results = await Downloader(tmp_path, progress=False, split=3).download([url])
    assert results.complete and (tmp_path / "big.bin").read_bytes() == body
    assert len(server.request_log) == 3


async def test_a_failed_split_reports_the_bytes_it_holds(
    server: FaultServer, tmp_path: Path
) -> None:
    """A segmented part is as long as the file from the start: its bytes are
    what the segments received, not its size."""
    url = server.add("/big.bin", blob(SIZE), reset_at=0.5, resets_left=2)
    results = await Downloader(tmp_path, progress=False, split=3, retries=0).download([url])
    meta = next((tmp_path / ".downloader" / "parts").glob("*.json"))
    held = sum(s[2] - s[0] for s in json.loads(meta.read_text())["segments"])
    assert results[0].status == "failed" and 0 < results[0].bytes == held < SIZE


async def test_a_break_of_the_first_answer_is_retried_alone(
    server: FaultServer, tmp_path: Path
) -> None:
    """The whole-body answer that serves segment 0 breaks: segment 0 goes on
    with a range of its own, and the other segments are not cut short."""
    body = blob(SIZE)
    url = server.add("/big.bin", body, reset_at=0.2, resets_left=1)  # the first request only
    results = await Downloader(tmp_path, progress=False, split=3).download([url])
    assert results.complete and (tmp_path / "big.bin").read_bytes() == body
    ranges = [h.get("Range") for _, _, h in server.request_log]
    assert len(ranges) == 4  # whole GET, two segments, segment 0 again from where it broke
    assert ranges[0] is None and ranges[-1] is not None and not ranges[-1].startswith("bytes=0-")
    assert server.bytes_served < SIZE + MIN_SEGMENT  # nothing of the others fetched twice


async def test_a_spliced_mismatch_earns_one_fresh_try_on_one_connection(
    server: FaultServer, tmp_path: Path
) -> None:
    """A server that keeps Last-Modified while the body changes (within one
    second) makes segments splice two versions: the checksum catches it, and
    the fresh try, on one connection, gets one version."""
    import hashlib

    from downloader import Entry

    v0, v1 = blob(SIZE, 10), blob(SIZE, 11)
    url = server.add("/big.bin", versions=[v0, v1], etag=False, last_modified=True)
    entry = Entry(url, checksum="sha-256=" + hashlib.sha256(v1).hexdigest())
    results = await Downloader(tmp_path, progress=False, split=3).download([entry])
    assert results[0].status == "complete", results[0].error
    assert (tmp_path / "big.bin").read_bytes() == v1
    assert server.request_log[-1][2].get("Range") is None  # the fresh try: whole, alone
