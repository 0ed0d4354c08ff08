"""The real program in a subprocess: exit statuses, files, report, stderr."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

from .conftest import blob
from .server import FaultServer

ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


async def spawn_cli(
    *args: str, env: dict[str, str] | None = None, **kw: Any
) -> asyncio.subprocess.Process:
    """The real program in a subprocess, proxies unset, for tests that talk
    to it while it runs (signals, pipes)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "downloader", *args, env={**ENV, **(env or {})}, **kw
    )


async def run_cli(
    *args: str,
    stdin: bytes | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    proc = await spawn_cli(
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def report(root: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((root / ".downloader" / "report.json").read_text())


async def test_all_complete_exit_0_and_quiet_is_silent(server: FaultServer, tmp_path: Path) -> None:
    urls = [server.add(f"/f{i}.bin", blob(1000 + i, i)) for i in range(5)]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(urls) + "\n")
    out = tmp_path / "out"
    code, stdout, stderr = await run_cli(str(listing), "-o", str(out), "-q")
    assert (code, stdout, stderr) == (0, "", "")
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [f"f{i}.bin" for i in range(5)]
    assert report(out)["summary"]["complete"] == 5


async def test_failures_exit_1_with_reasons(server: FaultServer, tmp_path: Path) -> None:
    good = server.add("/good.bin", b"good")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# list\n{good}\n{server.url('/nope.bin')}\nftp://host/x\n")
    out = tmp_path / "out"
    extra = tmp_path / "r.json"
    code, _, stderr = await run_cli("-i", str(listing), "-o", str(out), "--report", str(extra))
    assert code == 1
    assert "HTTP 404 Not Found" in stderr and "line 4: unsupported scheme 'ftp'" in stderr
    assert "1 complete, 0 skipped, 2 failed" in stderr
    assert (out / "good.bin").read_bytes() == b"good"
    rep = report(out)
    assert rep == json.loads(extra.read_text())
    by_line = {e["line"]: e for e in rep["entries"]}
    assert by_line[3]["status"] == "failed" and by_line[3]["path"] == "nope.bin"
    assert by_line[4]["path"] is None and by_line[4]["attempts"] == 0
    assert set(by_line[2]) == {"url", "path", "status", "bytes", "attempts", "error", "line"}


async def test_usage_errors_exit_2(tmp_path: Path) -> None:
    code, _, err = await run_cli(str(tmp_path / "missing.txt"), "-o", str(tmp_path / "o"))
    assert code == 2 and "cannot read URL list" in err and "missing.txt" in err
    assert not (tmp_path / "o").exists()
    code, _, err = await run_cli()
    assert code == 2 and "no URL list" in err
    code, _, err = await run_cli("-j", "0", "http://127.0.0.1:9/x")
    assert code == 2 and "--jobs" in err
    code, _, err = await run_cli("--limit-rate", "fast", "http://127.0.0.1:9/x")
    assert code == 2 and "invalid rate" in err
    code, _, err = await run_cli("--retry", "-o", str(tmp_path / "empty"))
    assert code == 2 and "no recorded run" in err


async def test_urls_as_arguments_and_stdin(server: FaultServer, tmp_path: Path) -> None:
    a = server.add("/a.txt", b"A")
    b = server.add("/b.txt", b"B")
    code, _, _ = await run_cli(a, "-o", str(tmp_path / "args"), "--no-progress")
    assert code == 0 and (tmp_path / "args" / "a.txt").read_bytes() == b"A"
    code, _, _ = await run_cli("-", "-o", str(tmp_path / "stdin"), stdin=f"{b}\n".encode())
    assert code == 0 and (tmp_path / "stdin" / "b.txt").read_bytes() == b"B"


async def test_empty_list_writes_an_empty_report(tmp_path: Path) -> None:
    listing = tmp_path / "empty.txt"
    listing.write_text("# nothing\n\n")
    code, _, _ = await run_cli(str(listing), "-o", str(tmp_path / "out"))
    assert code == 0
    assert report(tmp_path / "out")["entries"] == []


async def test_retry_continues_the_recorded_run(server: FaultServer, tmp_path: Path) -> None:
    ok = server.add("/ok.bin", b"ok")
    flaky = server.add("/later.bin", blob(500_000), statuses=[404])
    listing = tmp_path / "list.txt"
    listing.write_text(f"{ok}\n{flaky}\n")
    out = tmp_path / "out"
    code, _, _ = await run_cli(str(listing), "-o", str(out))
    assert code == 1
    listing.unlink()  # --retry needs no list
    code, _, err = await run_cli("--retry", "-o", str(out))
    assert code == 0, err
    assert server.requests == {"/ok.bin": 1, "/later.bin": 2}
    rep = report(out)
    assert [e["status"] for e in rep["entries"]] == ["complete", "complete"]
    code, _, err = await run_cli("--retry", "-o", str(out))
    assert code == 0 and "nothing to retry" in err


async def wait_for(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_sigint_saves_state_and_retry_resumes(server: FaultServer, tmp_path: Path) -> None:
    from aiohttp import web

    body = blob(3_000_000)
    half = len(body) // 2
    gate = asyncio.Event()
    small = server.add("/small.bin", b"small")
    never = server.add("/never.bin", b"n")
    big = server.url("/big.bin")
    orig = server._serve

    async def serve(request: web.Request, path: str) -> web.StreamResponse:
        if path != "/big.bin":
            return await orig(request, path)
        headers = {"ETag": '"v1"', "Accept-Ranges": "bytes"}
        start = 0
        rng = request.headers.get("Range")
        if rng and request.headers.get("If-Range") == '"v1"':
            start = int(rng[6:].split("-")[0])
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        resp = web.StreamResponse(status=206 if start else 200, headers=headers)
        resp.content_length = len(body) - start
        await resp.prepare(request)
        if start:
            await resp.write(body[start:])
            await resp.write_eof()
        else:  # half the body, then hold the connection open
            await resp.write(body[:half])
            await gate.wait()
        return resp

    server._serve = serve  # type: ignore[method-assign]
    listing = tmp_path / "list.txt"
    listing.write_text(f"{small}\n{big}\n{never}\n")
    out = tmp_path / "my out"  # the hint to continue must be pasteable
    proc = await spawn_cli(str(listing), "-o", str(out), "-j", "1", stderr=asyncio.subprocess.PIPE)
    part = out / "big.bin.part"
    # bytes reach the disk when the writer's 1 MiB buffer first fills
    await wait_for(lambda: part.exists() and part.stat().st_size > 0, "big.bin.part")
    proc.send_signal(signal.SIGINT)
    _, err = await proc.communicate()
    gate.set()
    assert proc.returncode == 130, err
    assert f"downloader --retry -o '{out}'".encode() in err
    kept = part.stat().st_size
    assert not (out / "big.bin").exists() and 0 < kept <= half
    assert part.read_bytes() == body[:kept]
    assert not (out / "never.bin").exists()
    rep = report(out)
    assert [e["status"] for e in rep["entries"]] == ["complete", "failed", "failed"]
    assert rep["entries"][1]["error"] == "interrupted"
    assert rep["summary"]["interrupted"] is True

    code, _, err = await run_cli("--retry", "-o", str(out))
    assert code == 0, err
    assert (out / "big.bin").read_bytes() == body
    ranges = [h.get("Range") for _, p, h in server.request_log if p == "/big.bin"]
    assert ranges == [None, f"bytes={kept}-"]
    assert [e["status"] for e in report(out)["entries"]] == ["complete", "complete", "complete"]
    assert server.requests["/small.bin"] == 1


async def test_kill_9_never_leaves_a_bad_final_file(server: FaultServer, tmp_path: Path) -> None:
    bodies = {f"/k{i}.bin": blob(20_000 + 3_000 * i, i) for i in range(100)}
    for path, body in bodies.items():
        server.add(path, body, slow=0.3)
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(server.url(p) for p in bodies) + "\n")
    digests = {p[1:]: hashlib.sha256(b).hexdigest() for p, b in bodies.items()}
    out = tmp_path / "out"
    rng = random.Random(7)

    def check_finals() -> int:
        n = 0
        for name, digest in digests.items():
            f = out / name
            if f.exists():
                assert hashlib.sha256(f.read_bytes()).hexdigest() == digest, name
                n += 1
        return n

    first = True
    for _ in range(5):
        args = ["--retry", "-o", str(out)] if not first else [str(listing), "-o", str(out)]
        proc = await spawn_cli(*args, "-q", stderr=asyncio.subprocess.DEVNULL)
        await asyncio.sleep(rng.uniform(0.3, 1.0))  # a random moment, not a synchronisation
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()
        if (out / ".downloader" / "run.json").exists():
            first = False
        check_finals()
    code, _, err = (
        await run_cli("--retry", "-o", str(out))
        if not first
        else await run_cli(str(listing), "-o", str(out))
    )
    assert code == 0, err
    assert check_finals() == 100
    assert not list(out.glob("*.part"))


async def test_kill_9_with_duplicates_then_retry_runs_one_transfer_per_file(
    server: FaultServer, tmp_path: Path
) -> None:
    """The duplicates' and the invalid line's records reach the disk before
    any request: after a kill -9, --retry must not start a second transfer
    into the same .part."""
    body = blob(300_000, 5)
    url = server.add("/x.bin", body, stall=True)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{url}\n{url}\n{url}\nftp://bad/x\n")
    out = tmp_path / "out"
    proc = await spawn_cli(str(listing), "-o", str(out), "-q")
    for _ in range(1000):  # until the first request has arrived (and stalls)
        if server.requests.get("/x.bin") or proc.returncode is not None:
            break
        await asyncio.sleep(0.01)
    proc.kill()
    await proc.wait()
    assert server.requests.get("/x.bin") == 1
    server.paths["/x.bin"].stall = False
    code, _, err = await run_cli("--retry", "-o", str(out), "-q")
    assert (out / "x.bin").read_bytes() == body
    assert server.requests["/x.bin"] == 2
    by_line = {e["line"]: e for e in report(out)["entries"]}
    assert by_line[1]["status"] == "complete"
    assert [by_line[n]["error"] for n in (2, 3)] == ["duplicate of line 1"] * 2
    assert "unsupported scheme" in by_line[4]["error"]
    assert code == 1 and "unsupported scheme" in err


async def test_a_write_error_fails_that_file_only(server: FaultServer, tmp_path: Path) -> None:
    """A file the disk refuses (here: over RLIMIT_FSIZE) fails with the
    reason, keeps its .part, and the other entries still complete."""
    import resource

    big = server.add("/big.bin", blob(3_000_000, 1))
    small = server.add("/small.bin", blob(20_000, 2))
    listing = tmp_path / "list.txt"
    listing.write_text(f"{big}\n{small}\n")
    out = tmp_path / "out"
    limit = 1_000_000

    def cap_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = await spawn_cli(
        str(listing),
        "-o",
        str(out),
        "--no-progress",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=cap_file_size,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 1
    assert "cannot write big.bin.part: File too large" in err.decode()
    assert not (out / "big.bin").exists()
    assert (out / "big.bin.part").stat().st_size == limit
    assert (out / "small.bin").read_bytes() == blob(20_000, 2)
    assert {e["path"]: e["status"] for e in report(out)["entries"]} == {
        "big.bin": "failed",
        "small.bin": "complete",
    }


async def test_demo_runs_offline(tmp_path: Path) -> None:
    code, _, err = await run_cli("--demo", "-o", str(tmp_path / "demo"))
    assert code == 1
    assert "missing.bin" in err and "expected" in err
    assert (tmp_path / "demo" / "models" / "weights.bin").stat().st_size == 8 * 1024 * 1024
    assert report(tmp_path / "demo")["summary"]["complete"] == 7


async def test_version_and_help() -> None:
    code, out, _ = await run_cli("--version")
    assert code == 0 and out.startswith("downloader ")
    code, out, _ = await run_cli("--help")
    assert code == 0 and "--retry" in out and "--split" in out


async def test_ctrl_c_while_the_list_is_still_being_typed(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add("/typed.bin", b"t")
    out = tmp_path / "out"
    proc = await spawn_cli(
        "-", "-o", str(out), stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdin is not None
    proc.stdin.write(f"{url}\n".encode())
    await proc.stdin.drain()
    run = out / ".downloader" / "run.json"
    await wait_for(run.exists, "the run to start reading its list")
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 30)  # stdin is still open
    assert proc.returncode == 130, err
    rep = report(out)
    assert rep["summary"]["interrupted"] is True
    assert all(e["status"] == "failed" for e in rep["entries"])
    assert server.requests.get("/typed.bin") is None


async def test_retry_with_only_invalid_entries_left_is_done(
    server: FaultServer, tmp_path: Path
) -> None:
    ok = server.add("/ok.bin", b"ok")
    out = tmp_path / "out"
    code, _, _ = await run_cli(ok, "ftp://host/x", "-o", str(out))
    assert code == 1
    code, _, err = await run_cli("--retry", "-o", str(out))
    assert code == 0 and "nothing to retry" in err and "1 invalid entry" in err
    assert server.requests["/ok.bin"] == 1


async def test_retry_keeps_the_runs_options(server: FaultServer, tmp_path: Path) -> None:
    """--retry continues with the run's own options: its headers (not its
    secrets), --overwrite, --content-disposition; one given again wins."""
    stale = server.add("/stale.bin", b"new", statuses=[503])
    cd = server.add(
        "/cd", b"named", statuses=[503], content_disposition='attachment; filename="nice.bin"'
    )
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.bin").write_bytes(b"old")
    args = ["-o", str(out), "--retries", "0", "--overwrite", "--content-disposition"]
    args += ["-H", "X-Channel: beta", "-H", "Authorization: Bearer s3cret", "--user-agent", "me/1"]
    code, _, _ = await run_cli(*args, stale, cd)
    assert code == 1
    assert "s3cret" not in (out / ".downloader" / "run.json").read_text()
    code, _, err = await run_cli("--retry", "-o", str(out), "-H", "X-More: 1")
    assert code == 0, err
    assert (out / "stale.bin").read_bytes() == b"new"
    assert (out / "nice.bin").read_bytes() == b"named"
    retried = [h for _, _, h in server.request_log[2:]]
    assert len(retried) == 2
    for headers in retried:
        assert headers.get("X-Channel") == "beta" and headers.get("X-More") == "1"
        assert headers.get("User-Agent") == "me/1" and "Authorization" not in headers


async def test_bad_timeout_is_a_usage_error(tmp_path: Path) -> None:
    for value in ("inf", "nan", "0", "-1", "1e12"):
        code, _, err = await run_cli(
            "--timeout", value, "http://127.0.0.1:9/x", "-o", str(tmp_path)
        )
        assert code == 2 and "--timeout" in err, (value, err)


async def test_a_state_folder_that_is_a_symlink_is_refused(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add("/a.bin", b"a")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "run.json").write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".downloader").symlink_to(victim)
    code, _, err = await run_cli("-o", str(out), url)
    assert code == 2 and ".downloader" in err and "symlink" in err
    assert [p.name for p in victim.iterdir()] == ["run.json"]
    assert (victim / "run.json").read_text() == "precious"
    assert not server.requests
    code, _, err = await run_cli("--retry", "-o", str(out))
    assert code == 2 and "symlink" in err


async def test_a_path_too_long_for_the_disk_fails_that_entry_clearly(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add("/a.bin", b"a")
    deep = "/".join(["d" * 240] * 18) + "/x.bin"
    listing = tmp_path / "list.txt"
    listing.write_text(f"{url}\n  out={deep}\n{url}\n  out=fine.bin\n")
    out = tmp_path / "out"
    code, _, err = await run_cli("-o", str(out), str(listing))
    assert code == 1
    entries = report(out)["entries"]
    assert entries[0]["status"] == "failed" and "too long" in entries[0]["error"]
    assert "internal error" not in err
    assert entries[1]["status"] == "complete" and (out / "fine.bin").read_bytes() == b"a"


async def test_a_small_part_left_by_a_failure_is_resumed_by_retry(
    server: FaultServer, tmp_path: Path
) -> None:
    body = blob(100_000, 9)
    url = server.add("/small.bin", body, reset_at=0.5)
    out = tmp_path / "out"
    code, _, _ = await run_cli(url, "-o", str(out), "--retries", "0")
    assert code == 1 and (out / "small.bin.part").read_bytes() == body[:50_000]
    code, _, err = await run_cli("--retry", "-o", str(out))
    assert code == 0, err
    assert (out / "small.bin").read_bytes() == body
    assert server.request_log[-1][2].get("Range") == "bytes=50000-"


async def test_retry_checks_recorded_options_and_keeps_secrets_off_disk(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add("/a.bin", b"a", statuses=[503])
    out = tmp_path / "out"
    code, _, _ = await run_cli(url, "-o", str(out), "--retries", "0", "-H", "X-Api-Key: k3y")
    assert code == 1
    run_json = out / ".downloader" / "run.json"
    assert "k3y" not in run_json.read_text()
    run = json.loads(run_json.read_text())
    run["settings"].update(jobs=0, timeout=True, header=[["X-Bad", "a\r\nb"]])
    run_json.write_text(json.dumps(run))  # an old or hand-edited record
    code, _, err = await run_cli("--retry", "-o", str(out))
    assert code == 0, err
    for name in ("jobs", "timeout", "header"):
        assert f"ignoring the run's recorded {name}" in err
    assert "X-Api-Key" in err and "pass them again with -H" in err
    assert "X-Api-Key" not in server.request_log[-1][2]


async def test_a_header_given_twice_is_sent_twice(server: FaultServer, tmp_path: Path) -> None:
    """As curl does; and -H replaces the default User-Agent, by name."""
    url = server.add("/a.bin", b"a")
    args = ["-H", "X-A: 1", "-H", "X-A: 2", "-H", "user-agent: mine/1"]
    code, _, err = await run_cli(url, "-o", str(tmp_path), *args)
    assert code == 0, err
    sent = server.header_log[-1]
    assert [v for k, v in sent if k.lower() == "x-a"] == ["1", "2"]
    assert [v for k, v in sent if k.lower() == "user-agent"] == ["mine/1"]


async def test_a_header_option_given_twice_in_the_list_is_sent_twice(
    server: FaultServer, tmp_path: Path
) -> None:
    """``header=`` is repeatable as -H is: both values go, in the first
    request and in the --retry of a failed one (recorded as pairs)."""
    url = server.add("/a.bin", b"a", statuses=[503])
    listing = tmp_path / "list.txt"
    listing.write_text(f"{url}\n  header=X-Tag: one\n  header=x-tag: two\n")
    out = tmp_path / "out"
    code, _, _ = await run_cli(str(listing), "-o", str(out), "--retries", "0", "-q")
    assert code == 1
    code, _, err = await run_cli("--retry", "-o", str(out), "-q")
    assert code == 0, err
    for sent in server.header_log[-2:]:
        assert [v for k, v in sent if k.lower() == "x-tag"] == ["one", "two"]


async def test_a_header_given_again_with_retry_replaces_the_recorded_one(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add("/a.bin", b"a", statuses=[503])
    out = tmp_path / "out"
    args = ["-H", "Accept: text/x", "-H", "X-A: 1", "-H", "X-A: 2"]
    code, _, _ = await run_cli(url, "-o", str(out), "--retries", "0", *args)
    assert code == 1
    code, _, err = await run_cli("--retry", "-o", str(out), "-H", "Accept: application/json")
    assert code == 0, err
    sent = server.header_log[-1]
    assert [v for k, v in sent if k.lower() == "accept"] == ["application/json"]
    assert [v for k, v in sent if k.lower() == "x-a"] == ["1", "2"]


async def test_a_second_run_in_the_same_folder_is_refused(
    server: FaultServer, tmp_path: Path
) -> None:
    """Two runs in one folder would write into each other's .part files; the
    second is refused (exit 2) and the first is not disturbed."""
    gate = asyncio.Event()
    body = blob(200_000, 4)
    url = server.add("/held.bin", body, gate=gate)
    out = tmp_path / "out"
    first = await spawn_cli(url, "-o", str(out), "-q", stderr=asyncio.subprocess.PIPE)
    await wait_for(lambda: server.requests.get("/held.bin") == 1, "the first run's request")
    code, _, err = await run_cli(url, "-o", str(out))
    assert code == 2 and "another downloader run is using" in err
    code, _, err = await run_cli("--retry", "-o", str(out))
    assert code == 2 and "another downloader run is using" in err
    gate.set()
    _, first_err = await first.communicate()
    assert first.returncode == 0, first_err
    assert (out / "held.bin").read_bytes() == body
    assert server.requests["/held.bin"] == 1
    code, _, err = await run_cli(url, "-o", str(out))  # the lock went with the first run
    assert code == 0, err


async def test_a_user_agent_that_is_no_header_value_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = await run_cli(
        "--user-agent", "a\r\nX-Evil: 1", "http://127.0.0.1:9/x", "-o", str(tmp_path)
    )
    assert code == 2 and "--user-agent" in err


async def test_a_stderr_that_is_gone_stops_nothing(server: FaultServer, tmp_path: Path) -> None:
    """`downloader list 2>&1 | head -2`: once the reader is gone every write
    to stderr fails; the run goes on silently, every file is fetched, the
    report written, and the exit status is the run's."""
    urls = [server.add(f"/p{n}.bin", blob(2000, n)) for n in range(300)]
    urls.append(server.url("/missing.bin"))
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{u}\n" for u in urls))
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read what it says
    try:
        proc = await spawn_cli(
            str(listing),
            "-o",
            str(tmp_path / "out"),
            "--no-progress",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=write_end,
        )
    finally:
        os.close(write_end)
    assert await asyncio.wait_for(proc.wait(), 60) == 1  # the missing file, nothing else
    entries = report(tmp_path / "out")["entries"]
    assert [e["status"] for e in entries] == ["complete"] * 300 + ["failed"]


async def test_a_hang_up_stops_and_saves_unless_ignored(
    server: FaultServer, tmp_path: Path
) -> None:
    """SIGHUP (a closed terminal, a dropped ssh session) stops the run as
    SIGTERM does, state and report saved (as aria2c); under ``nohup``, where
    it is ignored, the run goes on to the end."""
    gate = asyncio.Event()
    held = server.add("/held.bin", blob(1000), gate=gate)
    for name, ignore in (("stopped", False), ("nohup", True)):
        out = tmp_path / name
        proc = await spawn_cli(
            held,
            "-o",
            str(out),
            "--no-progress",
            stderr=asyncio.subprocess.PIPE,
            # as nohup does: an ignored signal stays ignored across exec
            preexec_fn=(lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if ignore else None,
        )
        await wait_for(lambda: server.in_flight == 1, "the request")
        proc.send_signal(signal.SIGHUP)
        if ignore:
            # sent before the body: a hang-up that stopped the run would be
            # seen (its wake-up byte) before the body's first bytes
            gate.set()
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        if ignore:
            assert proc.returncode == 0, err
            assert (out / "held.bin").read_bytes() == blob(1000)
        else:
            assert proc.returncode == 130, err
            assert report(out)["summary"]["interrupted"] is True
            assert not (out / "held.bin").exists()


async def test_a_stop_while_the_summary_prints_is_130(server: FaultServer, tmp_path: Path) -> None:
    """The run is saved before its summary prints; a SIGTERM while a long
    failure list is stuck on a full stderr pipe ends it as any stop does."""
    import fcntl
    import termios

    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{server.url(f'/none/{n}.bin')}\n" for n in range(1500)))
    out = tmp_path / "out"
    read_end, write_end = os.pipe()
    try:
        proc = await spawn_cli("-q", str(listing), "-o", str(out), stderr=write_end)
        os.close(write_end)

        def pipe_full() -> bool:  # the summary's 1,500 lines wait on a reader
            waiting = bytearray(4)
            fcntl.ioctl(read_end, termios.FIONREAD, waiting)
            return int.from_bytes(waiting, sys.byteorder) >= 60_000

        await wait_for(pipe_full, "the summary to fill stderr")
        proc.send_signal(signal.SIGTERM)
    except BaseException:
        os.close(read_end)
        raise
    with os.fdopen(read_end, "rb") as err_pipe:
        err = await asyncio.to_thread(err_pipe.read)
    assert await asyncio.wait_for(proc.wait(), 30) == 130
    assert b"before anything was downloaded" not in err
