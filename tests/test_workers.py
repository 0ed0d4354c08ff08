"""A long list shared with a forked worker (workers.py): the real program,
a real server, and the worker seen in /proc while its requests are held."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from downloader.workers import FORK_AT, Dealer

from .conftest import blob
from .server import FaultServer
from .test_cli import report, run_cli, spawn_cli, wait_for

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2,
    reason="workers fork on Linux, with two cores",
)

N = 600
assert N >= FORK_AT


def children_of(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            # the name in parentheses may hold spaces: the fields follow its end
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def long_list(
    server: FaultServer, tmp_path: Path, gated: int, gate: asyncio.Event, missing: set[int]
) -> tuple[Path, dict[str, bytes]]:
    """N small files: those from ``gated`` on wait for ``gate`` after their
    head; those in ``missing`` are 404s."""
    bodies = {}
    urls = []
    for i in range(N):
        path = f"/w{i:04d}.bin"
        urls.append(server.url(path))
        if i in missing:
            continue
        bodies[path[1:]] = body = blob(200 + i % 97, i)
        server.add(path, body, gate=gate if i >= gated else None)
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(urls) + "\n")
    return listing, bodies


async def start_held(
    server: FaultServer,
    tmp_path: Path,
    gated: int,
    *args: str,
    jobs: int = 8,
    missing: frozenset[int] = frozenset(),
    **kw: Any,
) -> tuple[asyncio.subprocess.Process, Path, dict[str, bytes], asyncio.Event]:
    """The program on a long list, once ``jobs`` requests are held at the
    gate (every file from ``gated`` on)."""
    gate = asyncio.Event()
    listing, bodies = long_list(server, tmp_path, gated, gate, set(missing))
    out = tmp_path / "out"
    proc = await spawn_cli(str(listing), "-o", str(out), "-j", str(jobs), *args, **kw)
    await wait_for(lambda: server.in_flight >= jobs, f"{jobs} requests held")
    return proc, out, bodies, gate


async def retry_finishes(out: Path, bodies: dict[str, bytes]) -> None:
    code, _, err = await run_cli("--retry", "-o", str(out), "-q")
    assert code == 0, err
    for name, body in bodies.items():
        assert (out / name).read_bytes() == body, name
    assert not list(out.glob("*.part"))


async def ends_complete(
    proc: asyncio.subprocess.Process, out: Path, bodies: dict[str, bytes], code: int = 0
) -> str:
    """The run ends as one process's would have: every file whole (those
    of ``bodies``; the others, 404s, failed: status 1)."""
    _, err_bytes = await proc.communicate()
    err = err_bytes.decode()
    assert proc.returncode == code, err
    for name, body in bodies.items():
        assert (out / name).read_bytes() == body, name
    assert not list(out.glob("*.part"))
    assert report(out)["summary"]["complete"] == len(bodies)
    return err


async def test_a_long_list_is_shared_with_a_worker_and_reported_whole(
    server: FaultServer, tmp_path: Path
) -> None:
    missing = frozenset({7, 300, N - 1})
    proc, out, bodies, gate = await start_held(
        server,
        tmp_path,
        N // 2,
        "--no-progress",
        jobs=6,
        missing=missing,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    workers = children_of(proc.pid)
    assert len(workers) == 1, workers
    assert server.max_in_flight == 6  # --jobs bounds both processes together
    gate.set()
    err = await ends_complete(proc, out, bodies, code=1)
    # each file once, whichever process took it
    assert all(server.requests[f"/{name}"] == 1 for name in bodies)
    assert sum(server.requests.values()) == N
    lines = err.splitlines()
    assert sorted(line.split()[1] for line in lines if line.startswith("complete ")) == sorted(
        bodies
    )
    assert f"Done: {N - 3} complete, 0 skipped, 3 failed" in err
    assert "Failed (3):" in err
    for i in missing:
        assert any(f"w{i:04d}.bin" in line and "404" in line for line in lines), i
    rep = report(out)
    assert rep["summary"]["total"] == N
    assert rep["summary"]["complete"] == N - 3
    assert rep["summary"]["bytes_downloaded"] == sum(map(len, bodies.values()))
    assert rep["summary"]["interrupted"] is False
    assert [e["status"] == "failed" for e in rep["entries"]] == [i in missing for i in range(N)]
    assert not alive(workers[0])


async def test_processes_1_keeps_to_one_process(server: FaultServer, tmp_path: Path) -> None:
    proc, out, bodies, gate = await start_held(
        server, tmp_path, 0, "-q", "--processes", "1", jobs=4
    )
    assert children_of(proc.pid) == []
    gate.set()
    assert await proc.wait() == 0
    assert len(list(out.glob("*.bin"))) == len(bodies)


@pytest.mark.parametrize("to", ["parent", "group"])
async def test_a_stop_stops_the_worker_too_and_retry_finishes(
    server: FaultServer, tmp_path: Path, to: str
) -> None:
    """SIGTERM to the parent alone (it stops its worker), or Ctrl-C to the
    terminal's process group (each gets one)."""
    proc, out, bodies, gate = await start_held(
        server, tmp_path, 100, "-q", stderr=asyncio.subprocess.PIPE, start_new_session=True
    )
    (worker,) = children_of(proc.pid)
    if to == "parent":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    _, err = await proc.communicate()
    assert proc.returncode == 130, err
    assert not alive(worker)
    rep = report(out)
    assert rep["summary"]["interrupted"] is True
    done = [e["path"] for e in rep["entries"] if e["status"] == "complete"]
    assert len(done) >= 100
    for name in done:
        assert (out / name).read_bytes() == bodies[name]
    assert not any((out / e["path"]).exists() for e in rep["entries"] if e["status"] != "complete")

    gate.set()
    await retry_finishes(out, bodies)
    for name in done:  # what the first run finished is not fetched again
        assert server.requests[f"/{name}"] == 1
    assert report(out)["summary"]["complete"] == N


async def test_a_worker_stops_when_its_parent_is_killed(
    server: FaultServer, tmp_path: Path
) -> None:
    proc, out, bodies, gate = await start_held(server, tmp_path, 50, "-q")
    (worker,) = children_of(proc.pid)
    proc.kill()
    await proc.wait()
    # its requests are still held: only the parent's death can stop it
    await wait_for(lambda: not alive(worker), "the worker to stop")
    gate.set()
    await retry_finishes(out, bodies)


async def test_a_worker_that_dies_leaves_its_files_to_the_parent(
    server: FaultServer, tmp_path: Path
) -> None:
    """Killed (the OOM killer, a crash): the run still ends complete, as
    one process's would, its .part files resumed."""
    proc, out, bodies, gate = await start_held(
        server, tmp_path, 200, "-q", stderr=asyncio.subprocess.PIPE
    )
    (worker,) = children_of(proc.pid)
    os.kill(worker, signal.SIGKILL)
    await wait_for(lambda: not alive(worker) or server.in_flight <= 4, "the worker gone")
    gate.set()
    err = await ends_complete(proc, out, bodies)
    assert f"a worker process (pid {worker}) was killed (SIGKILL)" in err
    assert "fetched by the main one" in err
    assert report(out)["summary"]["interrupted"] is False


async def test_a_worker_stopped_alone_leaves_its_files_to_the_parent(
    server: FaultServer, tmp_path: Path
) -> None:
    """A SIGTERM to the worker alone ends its transfers 'interrupted'; the
    run was not stopped, so they are fetched, and it ends as one process's."""
    proc, out, bodies, gate = await start_held(
        server, tmp_path, 200, "-q", stderr=asyncio.subprocess.PIPE
    )
    (worker,) = children_of(proc.pid)
    os.kill(worker, signal.SIGTERM)
    await wait_for(lambda: not alive(worker), "the worker to stop")
    gate.set()
    err = await ends_complete(proc, out, bodies)
    assert "was stopped by a signal of its own" in err


async def test_a_worker_killed_in_a_retry_takes_no_older_outcome(
    server: FaultServer, tmp_path: Path
) -> None:
    """The journal holds the first run's failures: read back after the
    worker's death, only this run's lines count."""
    gate = asyncio.Event()
    listing, bodies = long_list(server, tmp_path, 300, gate, set())
    for behaviour in server.paths.values():
        behaviour.statuses = [503]
    out = tmp_path / "out"
    code, _, err = await run_cli(str(listing), "-o", str(out), "-q", "--retries", "0")
    assert code == 1 and report(out)["summary"]["failed"] == N, err
    proc = await spawn_cli("--retry", "-o", str(out), "-q", stderr=asyncio.subprocess.PIPE)
    await wait_for(lambda: server.in_flight >= 8, "8 requests held")
    (worker,) = children_of(proc.pid)
    os.kill(worker, signal.SIGKILL)
    gate.set()
    await ends_complete(proc, out, bodies)


async def test_a_second_ctrl_c_ends_the_worker_at_once_too(
    server: FaultServer, tmp_path: Path
) -> None:
    proc, out, bodies, gate = await start_held(server, tmp_path, 0, "-q", start_new_session=True)
    (worker,) = children_of(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)
    os.killpg(proc.pid, signal.SIGINT)
    assert await proc.wait() == 130
    await wait_for(lambda: not alive(worker), "the worker to end")
    gate.set()
    await retry_finishes(out, bodies)


def test_the_dealer_gives_each_job_to_one_taker() -> None:
    dealer = Dealer()
    try:
        takers = [dealer.deal(iter(range(50))) for _ in range(3)]
        got: list[list[int]] = [[], [], []]
        turn = 0
        live = {0, 1, 2}
        while live:
            k = [0, 0, 1, 2, 2, 2][turn % 6]  # uneven turns, as busy processes take
            turn += 1
            if k not in live:
                continue
            job = next(takers[k], None)
            if job is None:
                live.discard(k)
            else:
                got[k].append(job)
        assert sorted(got[0] + got[1] + got[2]) == list(range(50))
        assert all(g == sorted(g) for g in got)
        assert len(got[2]) > len(got[1])  # the busier taker took more
    finally:
        dealer.close()


def test_progress_lines_go_out_in_whole_lines_of_at_most_pipe_buf() -> None:
    """A worker writes to the same stderr: a write of more than PIPE_BUF
    to a pipe may be torn by the other process's."""
    import io

    from downloader.models import Record
    from downloader.progress import Progress

    writes: list[str] = []

    class Stream(io.StringIO):
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

    progress = Progress("lines", 0, stream=Stream())
    names = [f"{'é' * (i % 90)}{i}.bin" for i in range(255)]  # multi-byte, under 256
    for name in names:
        progress.settled(Record(url="http://x/", path=name, status="complete", bytes=1))
    progress.close()
    assert len(writes) > 1
    assert all(len(w.encode()) <= 4096 and w.endswith("\n") for w in writes)
    assert [line.split()[1] for w in writes for line in w.splitlines()] == names
