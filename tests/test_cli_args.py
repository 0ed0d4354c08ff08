"""The command line's arguments: options anywhere, the list file or standard
input as it really is, --report's place, --demo alone. The real program runs
in a subprocess, as in test_cli."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import IO, Any

from downloader import Downloader

from .server import FaultServer
from .test_cli import report, run_cli, spawn_cli

#: The start of a program, as the first 8 KiB of /usr/bin/ls look to a parser.
BINARY = b"\x7fELF\x02\x01\x01\x00" + bytes(8) + bytes(range(256)) * 40


async def run_with_stdin(
    *args: str, stdin: IO[bytes] | None, cwd: Path | None = None
) -> tuple[int, str]:
    """The program with standard input as given: a file object, or None for closed."""
    proc = await spawn_cli(
        *args,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else stdin,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        preexec_fn=(lambda: os.close(0)) if stdin is None else None,
    )
    _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


# -- F6: options between the URLs and lists, as wget and aria2c take them --


def cut_while_recording(out: Path, keep: int, torn: str = "") -> dict[str, Any]:
    """The state a ``kill -9`` leaves when it lands while the list is being
    recorded: the first ``keep`` entries (then ``torn``, a half-written
    line), no outcome, the run not complete. Returns run.json as it was."""
    state = out / ".downloader"
    lines = (state / "entries.jsonl").read_text().splitlines(keepends=True)
    (state / "entries.jsonl").write_text("".join(lines[:keep]) + torn)
    (state / "journal.jsonl").write_text("")
    run: dict[str, Any] = json.loads((state / "run.json").read_text())
    (state / "run.json").write_text(json.dumps({**run, "complete": False}))
    return run


async def test_options_between_urls_are_accepted(server: FaultServer, tmp_path: Path) -> None:
    a = server.add("/a.bin", b"A")
    b = server.add("/b.bin", b"B")
    out = tmp_path / "one"
    code, _, err = await run_cli(a, "-o", str(out), b, "-q")
    assert (code, err) == (0, "")
    assert (out / "a.bin").read_bytes() == b"A" and (out / "b.bin").read_bytes() == b"B"


async def test_options_before_a_double_dash_and_urls_after_it(
    server: FaultServer, tmp_path: Path
) -> None:
    a = server.add("/a.bin", b"A")
    b = server.add("/b.bin", b"B")
    out = tmp_path / "two"
    code, _, err = await run_cli("-o", str(out), a, "--", b)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["a.bin", "b.bin"]


async def test_lists_and_urls_mixed_with_i_and_o(server: FaultServer, tmp_path: Path) -> None:
    urls = [server.add(f"/{n}.bin", n.encode()) for n in ("x", "y", "z")]
    (tmp_path / "a.txt").write_text(urls[0] + "\n")
    (tmp_path / "b.txt").write_text(urls[1] + "\n")
    out = tmp_path / "three"
    code, _, err = await run_cli("-o", str(out), "a.txt", "-i", "b.txt", urls[2], cwd=tmp_path)
    assert code == 0, err
    assert {e["path"] for e in report(out)["entries"]} == {"x.bin", "y.bin", "z.bin"}


async def test_after_a_double_dash_every_argument_is_a_list(
    server: FaultServer, tmp_path: Path
) -> None:
    """An argument after -- that looks like an option is a list file (a file
    may be called -o), never an option: the intermixed parse must keep that."""
    url = server.add("/d.bin", b"D")
    (tmp_path / "-q").write_text(url + "\n")
    out = tmp_path / "out"
    code, _, err = await run_cli("-o", str(out), "--no-progress", "--", "-q", cwd=tmp_path)
    assert code == 0, err
    assert (out / "d.bin").read_bytes() == b"D"
    assert "complete" in err  # -q was not taken as --quiet
    code, _, err = await run_cli("-o", str(out), "--", "-j", "4")
    assert code == 2 and "cannot read URL list '-j'" in err


async def test_retry_with_options_after_it(server: FaultServer, tmp_path: Path) -> None:
    url = server.add("/r.bin", b"R", statuses=[404])
    out = tmp_path / "out"
    code, _, _ = await run_cli(url, "-o", str(out), "--retries", "0")
    assert code == 1
    code, _, err = await run_cli("--retry", "-o", str(out), "-q")
    assert (code, err) == (0, "")
    code, _, err = await run_cli("--retry", "-o", str(out), "--", url)
    assert code == 2 and "--retry takes no URL list" in err


# -- F7: standard input closed, or open for writing only --


async def test_list_from_a_closed_standard_input(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, err = await run_with_stdin("-o", str(out), "-", stdin=None)
    assert code == 2, err
    assert "cannot read URL list '-': standard input is closed" in err
    assert "Traceback" not in err
    assert not out.exists()


async def test_list_from_a_write_only_standard_input(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with open(tmp_path / "wo.txt", "wb") as write_only:
        code, err = await run_with_stdin("-o", str(out), "-", stdin=write_only)
    assert code == 2, err
    assert "cannot read URL list '-'" in err and "standard input" in err
    assert str(out) not in err  # the list is named, not the output folder
    assert not out.exists()


# -- L1: a binary file given as the list --


async def test_a_binary_file_as_the_list_is_a_usage_error(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add("/never.bin", b"n")
    program = tmp_path / "ls"
    program.write_bytes(BINARY)
    out = tmp_path / "out"
    code, _, err = await run_cli("-o", str(out), "--no-progress", url, str(program))
    assert code == 2
    assert err.strip() == (
        f"downloader: URL list {str(program)!r} is not a text file (a program, an archive "
        "or an image: binary from line 1); a list is UTF-8 text, one URL a line"
    )
    assert not out.exists() and not server.requests  # nothing recorded or requested


async def test_the_python_interpreter_as_the_list_is_refused(tmp_path: Path) -> None:
    code, _, err = await run_cli("-o", str(tmp_path / "out"), sys.executable)
    assert code == 2 and "is not a text file" in err and len(err.splitlines()) == 1


async def test_a_binary_file_on_standard_input_is_refused(tmp_path: Path) -> None:
    """Standard input redirected from a regular file is looked at as a named
    list is (a pipe is not: it cannot be peeked at without consuming it)."""
    program = tmp_path / "prog"
    program.write_bytes(BINARY)
    with open(program, "rb") as stdin:
        code, err = await run_with_stdin("-o", str(tmp_path / "out"), "-", stdin=stdin)
    assert code == 2 and "URL list '-' is not a text file" in err


async def test_text_lists_with_odd_bytes_still_work_per_line(
    server: FaultServer, tmp_path: Path
) -> None:
    """Latin-1 text and a stray NUL line are bad lines of a text list: those
    entries fail, every other one is downloaded."""
    good = server.add("/good.bin", b"G")
    other = server.add("/other.bin", b"O")
    listing = tmp_path / "list.txt"
    listing.write_bytes(
        good.encode()
        + b"\n"
        + "http://127.0.0.1:9/caf\xe9.bin\n".encode("latin-1")
        + b"\x00\x01garbage\n"
        + other.encode()
        + b"\n"
    )
    out = tmp_path / "out"
    code, _, err = await run_cli("-o", str(out), str(listing))
    assert code == 1, err
    by_line = {e["line"]: e for e in report(out)["entries"]}
    assert by_line[2]["error"] == "line 2: not valid UTF-8"
    assert by_line[3]["error"].startswith("line 3: invalid URL")
    assert (out / "good.bin").read_bytes() == b"G" and (out / "other.bin").read_bytes() == b"O"


# -- L3: --report in the folder -o creates; --report - --


async def test_report_in_the_output_dir_that_the_run_creates(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add("/r.bin", b"R")
    out = tmp_path / "new"
    code, _, err = await run_cli("-o", str(out), "-q", "--report", str(out / "report.json"), url)
    assert (code, err) == (0, "")
    assert json.loads((out / "report.json").read_text()) == report(out)
    fresh = tmp_path / "fresh"
    extra = fresh / ".downloader" / "copy.json"
    code, _, err = await run_cli("-o", str(fresh), "-q", "--report", str(extra), url)
    assert (code, err) == (0, "")
    assert json.loads(extra.read_text()) == report(fresh)


async def test_report_in_a_missing_folder_elsewhere_is_still_refused(tmp_path: Path) -> None:
    code, _, err = await run_cli(
        "-o", str(tmp_path / "out"), "--report", str(tmp_path / "nope" / "r.json"), "http://x/a"
    )
    assert code == 2 and "no such folder to write it in" in err
    assert not (tmp_path / "out").exists()
    code, _, err = await run_cli(
        "-o",
        str(tmp_path / "out"),
        "--report",
        str(tmp_path / "out" / "sub" / "r.json"),
        "http://x/a",
    )
    assert code == 2 and "no such folder to write it in" in err


async def test_report_dash_writes_the_report_to_standard_output(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add("/s.bin", b"S")
    code, stdout, err = await run_cli("-o", "out", "-q", "--report", "-", url, cwd=tmp_path)
    assert (code, err) == (0, "")
    assert json.loads(stdout) == report(tmp_path / "out")
    assert json.loads(stdout)["entries"][0]["path"] == "s.bin"
    assert not (tmp_path / "-").exists()
    code, stdout, _ = await run_cli("--help")
    assert "(- for standard output)" in " ".join(stdout.split())  # help wraps lines


# -- L4: --demo takes nothing to download --


async def test_demo_refuses_urls_and_lists(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    for extra in (
        ["http://127.0.0.1:9/never-fetched.bin"],
        [str(tmp_path / "missing-list.txt")],
        ["-i", "list.txt"],
        ["--", "-"],
    ):
        code, _, err = await run_cli("--demo", "-q", "-o", str(out), *extra)
        assert code == 2, (extra, err)
        assert "--demo takes no URL list or URLs" in err
    code, _, err = await run_cli("--demo", "--retry", "-o", str(out))
    assert code == 2 and "--demo and --retry" in err
    assert not out.exists()


async def test_report_dash_even_when_the_directorys_report_cannot_be_written(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.add("/s.bin", b"S")
    (tmp_path / "out" / ".downloader" / "report.json.tmp").mkdir(parents=True)
    code, stdout, err = await run_cli("-o", "out", "--report", "-", url, cwd=tmp_path)
    assert code == 0 and "cannot write the report" in err
    assert json.loads(stdout)["entries"][0]["path"] == "s.bin"


async def test_a_utf16_list_is_refused_with_what_to_do(tmp_path: Path) -> None:
    lst = tmp_path / "list.txt"
    lst.write_text("http://127.0.0.1:9/a\n", encoding="utf-16")  # with its byte-order mark
    code, _, err = await run_cli("-o", "out", str(lst), cwd=tmp_path)
    assert code == 2 and "UTF-16" in err and "save it as UTF-8" in err
    assert not (tmp_path / "out" / ".downloader" / "run.json").exists()


async def test_one_line_with_a_nul_byte_is_one_invalid_entry(tmp_path: Path) -> None:
    """Not a binary file: a text list with a hostile line fails that entry."""
    lst = tmp_path / "list.txt"
    lst.write_bytes(b"http://127.0.0.1:9/a\x00b\n")  # the whole list: one line
    code, _, err = await run_cli("-o", "out", "-q", str(lst), cwd=tmp_path)
    assert code == 1 and "line 1:" in err


async def test_retry_reads_the_rest_of_a_list_a_killed_run_never_recorded(
    server: FaultServer, tmp_path: Path
) -> None:
    """kill -9 while a long list is recorded leaves its first entries only
    (and a torn line): --retry reads the rest again from the same, unchanged
    list (and the URL argument after it), with the names the whole run would
    have given, instead of losing them."""
    urls = [server.add(f"/d{i}/same.bin", f"body {i}".encode()) for i in range(12)]
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{u}\n" for u in urls[:11]) + "ftp://nope/x\n")
    code, _, _ = await run_cli("-o", "out", "-q", str(listing), urls[11], cwd=tmp_path)
    assert code == 1  # the ftp line
    whole = report(tmp_path / "out")["entries"]
    # what a kill -9 after 5 entries would have left: a partial record
    entries = (tmp_path / "out" / ".downloader" / "entries.jsonl").read_text().splitlines()
    cut_while_recording(tmp_path / "out", 5, torn=entries[5][:20])
    for e in whole[5:]:
        if e["path"]:
            (tmp_path / "out" / e["path"]).unlink()
    server.requests.clear()
    code, _, err = await run_cli("-o", "out", "-q", "--retry", cwd=tmp_path)
    assert code == 1, err  # still the ftp line, nothing else
    again = report(tmp_path / "out")["entries"]
    assert [(e["url"], e["path"], e["line"]) for e in again] == [
        (e["url"], e["path"], e["line"]) for e in whole
    ]
    assert [e["status"] for e in again] == ["skipped"] * 5 + ["complete"] * 6 + ["failed"] + [
        "complete"
    ]
    assert sum(server.requests.values()) == 7
    for i, e in enumerate(again):
        if e["path"]:
            body = f"body {i if i < 11 else 11}".encode()
            assert (tmp_path / "out" / e["path"]).read_bytes() == body


async def test_a_list_changed_since_is_not_read_again(server: FaultServer, tmp_path: Path) -> None:
    urls = [server.add(f"/f{i}.bin", b"x") for i in range(4)]
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{u}\n" for u in urls))
    assert (await run_cli("-o", "out", "-q", str(listing), cwd=tmp_path))[0] == 0
    cut_while_recording(tmp_path / "out", 2)
    listing.write_text("".join(f"{u}\n" for u in reversed(urls)))  # another list now
    code, _, err = await run_cli("-o", "out", "--retry", cwd=tmp_path)
    assert code == 1 and "changed since the run was recorded" in err
    assert len(report(tmp_path / "out")["entries"]) == 2


async def test_a_list_mostly_of_garbage_still_downloads_its_entries(
    server: FaultServer, tmp_path: Path
) -> None:
    """Many hostile lines (NUL and control bytes) around real entries: each
    bad line fails alone; this is a list, not a binary file."""
    urls = [server.add(f"/g{i}.bin", b"g") for i in range(3)]
    junk = b"".join(bytes([i % 32]) * 40 + b"\n" for i in range(200))
    lst = tmp_path / "list.txt"
    lst.write_bytes(junk + b"".join(u.encode() + b"\n" for u in urls) + junk)
    code, _, _ = await run_cli("-o", "out", "-q", str(lst), cwd=tmp_path)
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "out").glob("g*.bin")) == [
        "g0.bin",
        "g1.bin",
        "g2.bin",
    ]


async def test_a_list_changed_within_its_time_step_falls_back(
    server: FaultServer, tmp_path: Path
) -> None:
    """Same size, same time, other lines (a coarse file system clock): the
    first entries do not match those recorded, so none is added; the run
    goes on with those recorded, as for any changed list, every time."""
    urls = [server.add(f"/f{i}.bin", b"x") for i in range(4)]
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{u}\n" for u in urls))
    assert (await run_cli("-o", "out", "-q", str(listing), cwd=tmp_path))[0] == 0
    run = cut_while_recording(tmp_path / "out", 2)
    listing.write_text("".join(f"{u}\n" for u in reversed(urls)))
    mtime = run["origin"][0]["mtime"]
    os.utime(listing, ns=(mtime, mtime))
    for _ in range(2):
        code, _, err = await run_cli("-o", "out", "--retry", cwd=tmp_path)
        assert code == 1 and "differs from the one recorded, at its entry 1" in err
        assert len(report(tmp_path / "out")["entries"]) == 2


async def test_no_list_is_read_again_for_a_content_disposition_run(
    server: FaultServer, tmp_path: Path
) -> None:
    """The names servers gave before lived in the stopped process only: the
    rest of the list could land on other entries' files, so it is not read."""
    urls = [
        server.add(f"/c{i}", b"x", content_disposition='attachment; filename="same.bin"')
        for i in range(4)
    ]
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{u}\n" for u in urls))
    args = ("-o", "out", "-q", "--content-disposition", str(listing))
    assert (await run_cli(*args, cwd=tmp_path))[0] == 0
    cut_while_recording(tmp_path / "out", 2)
    code, _, err = await run_cli("-o", "out", "--retry", cwd=tmp_path)
    assert code == 1 and "--content-disposition" in err and "not read again" in err
    assert len(report(tmp_path / "out")["entries"]) == 2


async def test_the_library_retry_reads_the_rest_as_the_command_does(
    server: FaultServer, tmp_path: Path
) -> None:
    """`Downloader(DIR).retry()` is `downloader --retry -o DIR`: the rest of
    an unchanged list a killed run never recorded is read again there too."""
    urls = [server.add(f"/r{i}.bin", f"body {i}".encode()) for i in range(6)]
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{u}\n" for u in urls))
    assert (await run_cli("-o", "out", "-q", str(listing), cwd=tmp_path))[0] == 0
    cut_while_recording(tmp_path / "out", 2)
    for i in range(2, 6):
        (tmp_path / "out" / f"r{i}.bin").unlink()
    results = await Downloader(tmp_path / "out", progress=False).retry()
    assert not results.partial and results.ok
    assert [r.path for r in results] == [f"r{i}.bin" for i in range(6)]
    assert all(
        (tmp_path / "out" / f"r{i}.bin").read_bytes() == f"body {i}".encode() for i in range(6)
    )
