"""--split: ranges written at their offsets into one .part; each segment
retried and resumed on its own; never a splice of two versions."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from downloader import Downloader
from downloader.config import MIN_SEGMENT
from downloader.segments import plan

from .conftest import blob
from .server import FaultServer

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
