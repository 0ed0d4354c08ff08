"""A hostile server and a hostile list: nothing escapes the output directory,
no secret reaches a file or the terminal, every entry ends with a reason."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest

from downloader import Downloader, Entry

from .server import FaultServer
from .test_cli import run_cli

#: every fault here, on http1 and on aiohttp (conftest.both_paths)
pytestmark = pytest.mark.usefixtures("both_paths")

SECRET = "s3cr3t-Pa55"
TOKEN = "TOPSECRET-TOKEN"


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


async def test_hostile_list_against_hostile_server(server: FaultServer, tmp_path: Path) -> None:
    sandbox = tmp_path / "sandbox"
    out = sandbox / "out"
    outside = sandbox / "outside"
    outside.mkdir(parents=True)
    (outside / "victim.txt").write_text("do not touch")
    out.mkdir()
    os.symlink(outside, out / "link")  # a planted folder symlink
    os.symlink(outside / "victim.txt", out / "planted.bin")  # a planted file symlink
    base = server.base
    port = base.rsplit(":", 1)[1]
    basic = "Basic " + base64.b64encode(f"user:{SECRET}".encode()).decode()
    s = server.add
    s("/cd-traversal", b"cd1", content_disposition='attachment; filename="../../cd-escape.txt"')
    s("/cd-star", b"cd2", content_disposition="attachment; filename*=UTF-8''..%2F..%2Fcd2.txt")
    s("/cd-abs", b"cd3", content_disposition='attachment; filename="/etc/passwd"')
    s("/cd-ctl", b"cd4", content_disposition='attachment; filename="a\\x01b:c.txt"')
    s("/..%2F..%2Furl-escape.txt", b"u1")
    s("/%2e%2e", b"u2")
    s("/to-file", redirect="file:///etc/passwd")
    s("/to-ftp", redirect="ftp://127.0.0.1/x")
    s("/loop", redirect="/loop")
    s("/gz.txt", b"z" * 5000, gzip=True)
    s("/auth.bin", b"authorised", auth=basic)
    s("/cross", redirect=f"http://localhost:{port}/landing.bin")
    s("/landing.bin", b"landed")
    s("/CON", b"reserved")
    s("/" + "n" * 300 + ".bin", b"long")
    s("/caf%C3%A9-%E2%98%83.txt", b"unicode")
    s("/a%01b.txt", b"ctl")
    s("/planted.bin", b"would clobber the victim")
    s("/via-link.bin", b"via link")
    s("/longer.bin", raw=b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n0123456789ABCDEF")
    s("/err.bin", statuses=[500] * 10)
    s("/secret-header.bin", b"hdr")

    lines = [
        f"{base}/ok-but-missing\n  out=../escape.txt",
        f"{base}/x\n  out=/etc/passwd",
        f"{base}/x\n  out=sub/../../escape2.txt",
        f"{base}/x\n  out=C:\\evil.txt",
        f"{base}/x\n  out=..",
        f"{base}/via-link.bin\n  out=link/through.bin",
        f"{base}/cd-traversal",
        f"{base}/cd-star",
        f"{base}/cd-abs",
        f"{base}/cd-ctl",
        f"{base}/..%2F..%2Furl-escape.txt",
        f"{base}/%2e%2e",
        f"{base}/to-file",
        f"{base}/to-ftp",
        f"{base}/loop",
        f"{base}/gz.txt",
        f"http://user:{SECRET}@127.0.0.1:{port}/auth.bin",
        f"{base}/cross\n  header=Authorization: Bearer {TOKEN}",
        f"{base}/CON",
        f"{base}/" + "n" * 300 + ".bin",
        f"{base}/caf%C3%A9-%E2%98%83.txt",
        f"{base}/a%01b.txt",
        f"{base}/planted.bin",
        f"{base}/longer.bin",
        f"{base}/err.bin",
        f"{base}/secret-header.bin\n  header=Cookie: session={TOKEN}",
        "file:///etc/passwd",
        "data:text/plain,hi",
        "javascript:alert(1)",
        f"http://user:{SECRET}@127.0.0.1:99999999/bad-port",
        f"{base}/x\n  checksum=sha-256=zz",
        f"{base}/x\n  evil=1",
        "\x00\x01garbage",
    ]
    listing = sandbox / "list.txt"
    listing.write_text("\n".join(lines) + "\n")
    before = snapshot(sandbox)
    code, stdout, stderr = await run_cli(
        str(listing),
        "-o",
        str(out),
        "--content-disposition",
        "--retries",
        "1",
        "--timeout",
        "5",
        "--no-progress",
    )
    assert code == 1, stderr
    assert "Traceback" not in stderr
    # nothing new outside the output directory
    new = snapshot(sandbox) - before
    assert all(p.startswith("out/") or p == "out" for p in new), sorted(new)
    assert (outside / "victim.txt").read_text() == "do not touch"
    assert os.listdir(outside) == ["victim.txt"]
    # no secret anywhere the tool writes or prints
    for path in (out / ".downloader").rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert SECRET not in text and TOKEN not in text, path
    assert SECRET not in stderr + stdout and TOKEN not in stderr + stdout

    report = json.loads((out / ".downloader" / "report.json").read_text())
    by_line = {e["line"]: e for e in report["entries"]}
    for e in report["entries"]:
        assert e["status"] in ("complete", "skipped", "failed")
        if e["status"] == "failed":
            assert e["error"], e
        if e["path"] is not None:
            assert not e["path"].startswith("/") and ".." not in e["path"].split("/")
            assert len(e["path"].split("/")[-1].encode()) <= 240

    def entry(url_part: str) -> dict:  # type: ignore[type-arg]
        return next(e for e in report["entries"] if url_part in e["url"])

    assert entry("/to-file")["status"] == "failed" and "non-HTTP" in entry("/to-file")["error"]
    assert entry("/to-ftp")["status"] == "failed"
    assert "redirect loop" in entry("/loop")["error"]
    assert entry("/auth.bin")["status"] == "complete"
    assert (out / "auth.bin").read_bytes() == b"authorised"
    assert entry("/auth.bin")["url"] == f"http://***@127.0.0.1:{port}/auth.bin"
    # Authorization was not sent on to another host after the redirect
    landing = [h for _, p, h in server.request_log if p == "/landing.bin"]
    assert landing and all("Authorization" not in h for h in landing)
    assert (out / "cross").read_bytes() == b"landed"
    assert (out / ".._.._cd-escape.txt").read_bytes() == b"cd1"
    assert (out / ".._.._cd2.txt").read_bytes() == b"cd2"
    assert "/" not in entry("/cd-abs")["path"] and "etc_passwd" in entry("/cd-abs")["path"]
    assert (out / ".._.._url-escape.txt").read_bytes() == b"u1"
    assert entry("/%2e%2e")["path"] == "__"  # (yarl normalises the request to "/")
    assert (out / "_CON").read_bytes() == b"reserved"
    assert (out / "gz.txt").read_bytes()[:2] == b"\x1f\x8b"
    # more bytes than announced: an error, never a larger file
    assert entry("/longer.bin")["status"] == "failed" and not (out / "longer.bin").exists()
    assert "\n" not in entry("/longer.bin")["error"]
    assert entry("/planted.bin")["status"] == "skipped"  # not written through the link
    assert "symlink" in entry("/via-link.bin")["error"]
    assert entry("/err.bin")["error"] == "HTTP 500 Internal Server Error"
    for line in (1, 3, 5, 7, 9):
        assert by_line[line]["status"] == "failed" and by_line[line]["path"] is None
        assert by_line[line]["error"].startswith(f"line {line + 1}: out=")
    schemes = [
        e for e in report["entries"] if e["url"].startswith(("file:", "data:", "javascript:"))
    ]
    assert len(schemes) == 3 and all(e["status"] == "failed" for e in schemes)


def _plant_link(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """An output folder whose ``name`` is a symlink to a file outside it."""
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    os.symlink(victim, out / name)
    return out, victim


async def test_overwrite_replaces_a_planted_symlink_not_its_target(
    server: FaultServer, tmp_path: Path
) -> None:
    out, victim = _plant_link(tmp_path, "f.bin")
    url = server.add("/f.bin", b"fresh")
    results = await Downloader(out, progress=False, overwrite=True).download([url])
    assert results.complete
    assert victim.read_text() == "keep"
    assert not (out / "f.bin").is_symlink() and (out / "f.bin").read_bytes() == b"fresh"


async def test_part_symlink_is_not_followed(server: FaultServer, tmp_path: Path) -> None:
    out, victim = _plant_link(tmp_path, "g.bin.part")
    url = server.add("/g.bin", b"data")
    results = await Downloader(out, progress=False).download([url])
    assert results.complete and (out / "g.bin").read_bytes() == b"data"
    assert victim.read_text() == "keep"


async def test_bytes_that_are_not_utf8_from_a_server(server: FaultServer, tmp_path: Path) -> None:
    """A localised server's Latin-1 status text, or file name: the entry
    fails (or is named) readably, and the run, its report and the other
    entries go on."""
    bad = server.add(
        "/bad.bin",
        raw=b"HTTP/1.1 404 Non trouv\xe9\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    named = server.add(
        "/named",
        raw=b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n"
        b'Content-Disposition: attachment; filename="caf\xe9.bin"\r\n\r\nabc',
    )
    ok = server.add("/ok.bin", b"ok")
    dl = Downloader(tmp_path, progress=False, retries=0, content_disposition=True)
    results = await dl.download([bad, named, ok])
    assert [r.status for r in results] == ["failed", "complete", "complete"]
    assert results.failed[0].error == "HTTP 404 Non trouvé"
    assert (tmp_path / "café.bin").read_bytes() == b"abc"
    report = json.loads((tmp_path / ".downloader" / "report.json").read_text("utf-8"))
    assert report["entries"][0]["error"] == "HTTP 404 Non trouvé"


async def test_nothing_from_a_list_or_server_drives_the_terminal(
    server: FaultServer, tmp_path: Path
) -> None:
    evil = server.add(
        "/evil.bin",
        raw=b"HTTP/1.1 500 \x1b[2Jgone\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    listing = tmp_path / "list.txt"
    listing.write_bytes(f"http://127.0.0.1:1/x\x1b]0;PWNED\x07.bin\n{evil}\n".encode())
    code, _, err = await run_cli(str(listing), "-o", str(tmp_path / "out"), "--retries", "0", "-q")
    assert code == 1
    assert "\x1b" not in err and "\x07" not in err
    assert "\\x1b]0;PWNED" in err and "\\x1b[2Jgone" in err


async def test_secret_looking_headers_stay_with_the_origin_named(
    server: FaultServer, tmp_path: Path
) -> None:
    """A redirect to another origin (here: localhost, another host name)
    gets neither Authorization (aiohttp drops it) nor X-Api-Key (we do);
    harmless headers go on, and a same-origin redirect keeps everything."""
    port = server.base.rsplit(":", 1)[1]
    server.add("/landing.bin", b"landed")
    away = server.add("/away", redirect=f"http://localhost:{port}/landing.bin")
    home = server.add("/home", redirect="/landing.bin")
    code, _, err = await run_cli(
        away,
        home,
        "-o",
        str(tmp_path),
        "-H",
        "X-Api-Key: k3y",
        "-H",
        "Authorization: Bearer t0k",
        "-H",
        "X-Plain: 1",
    )
    assert code == 0, err
    landed = [h for (_, path, h) in server.request_log if path == "/landing.bin"]
    by_host = {h["Host"].split(":")[0]: h for h in landed}
    assert "X-Api-Key" not in by_host["localhost"] and "Authorization" not in by_host["localhost"]
    assert by_host["localhost"]["X-Plain"] == "1"
    assert by_host["127.0.0.1"]["X-Api-Key"] == "k3y"
    assert by_host["127.0.0.1"]["Authorization"] == "Bearer t0k"


async def test_a_reset_ends_no_body_of_unknown_length(server: FaultServer, tmp_path: Path) -> None:
    """No Content-Length, no chunks: only the connection's end delimits the
    body, and a reset is not an end (curl: "Recv failure")."""
    body = bytes(range(256)) * 400
    url = server.add(
        "/nolength.bin",
        body,
        raw=b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body[:30000],
        raw_resets=1,
    )
    results = await Downloader(tmp_path, progress=False).download([url])
    assert [r.status for r in results] == ["complete"], results
    assert (tmp_path / "nolength.bin").read_bytes() == body
    assert results[0].attempts == 2


async def test_an_at_sign_in_the_query_is_not_a_login(server: FaultServer, tmp_path: Path) -> None:
    """``http://A?email=me@B``: the host is A; nothing goes to B, not even
    the Authorization meant for A, and the report shows the URL as given."""
    other = await FaultServer().start()
    try:
        other.add("/", b"wrong host")
        server.add("/", b"right host")
        url = f"{server.base}?email=me@{other.base.split('://')[1]}"
        dl = Downloader(tmp_path, progress=False, headers={"Authorization": f"Bearer {TOKEN}"})
        results = await dl.download([url])
        assert [r.status for r in results] == ["complete"]
        assert results[0].url == url
        assert (tmp_path / "index.html").read_bytes() == b"right host"
        assert other.requests == {}
    finally:
        await other.stop()


async def test_any_success_status_is_the_resource(server: FaultServer, tmp_path: Path) -> None:
    """A 203 (from a transforming proxy), a 206 to a request that asked no
    range (whole, or short: the rest is fetched with a resume): saved as curl
    saves them."""
    body = bytes(range(256)) * 40
    s = server.add
    s("/203.bin", raw=b"HTTP/1.1 203 Non-Authoritative\r\nContent-Length: 3\r\n\r\nabc")
    s(
        "/whole206.bin",
        raw=b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/10\r\n"
        b"Content-Length: 10\r\nConnection: close\r\n\r\n0123456789",
    )
    s(
        "/short206.bin",
        body,
        raw=b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-999/10240\r\n"
        b'ETag: "%s"\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n'
        % hashlib.md5(body).hexdigest().encode()
        + body[:1000],
        raw_resets=1,
    )
    s(
        "/mid206.bin",
        raw=b"HTTP/1.1 206 OK\r\nContent-Range: bytes 5-9/10\r\nContent-Length: 5\r\n\r\n56789",
    )
    s("/204.bin", raw=b"HTTP/1.1 204 No Content\r\n\r\n")
    paths = ("/203.bin", "/whole206.bin", "/short206.bin", "/mid206.bin", "/204.bin")
    urls = [server.url(p) for p in paths]
    # no retry to spend: a short 206 is continued without one
    results = await Downloader(tmp_path, progress=False, retries=0).download(urls)
    assert [(r.status, r.attempts) for r in results] == [
        ("complete", 1),
        ("complete", 1),
        ("complete", 2),
        ("failed", 1),
        ("failed", 1),  # no content is no file
    ]
    assert (tmp_path / "203.bin").read_bytes() == b"abc"
    assert (tmp_path / "whole206.bin").read_bytes() == b"0123456789"
    assert (tmp_path / "short206.bin").read_bytes() == body
    assert results[3].error == "HTTP 206 to a request without a range (Content-Range: bytes 5-9/10)"
    ranges = [h.get("Range") for _, p, h in server.request_log if p == "/short206.bin"]
    assert ranges == [None, "bytes=1000-"]  # the rest, as a resume


async def test_a_416_naming_another_version_is_no_proof_of_completeness(
    server: FaultServer, tmp_path: Path
) -> None:
    """A part as long as the resource, and a 416 whose ETag is not the
    part's: the resource changed, so the part is not it (the server ignored
    If-Range). It never becomes the final file."""
    old = b"A" * 1000
    url = server.add("/f.bin", old, short_by=1)
    first = await Downloader(tmp_path, progress=False, retries=0).download([url])
    assert first[0].status == "failed"
    part = tmp_path / "f.bin.part"
    with part.open("ab") as f:  # the last byte landed, then kill -9 before the rename
        f.write(b"A")
    server.add(
        "/f.bin",
        raw=b'HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */1000\r\nETag: "v2"\r\n'
        b"Content-Length: 0\r\nConnection: close\r\n\r\n",
    )
    again = await Downloader(tmp_path, progress=False, retries=0).retry()
    assert again[0].status == "failed"
    assert not (tmp_path / "f.bin").exists()


async def test_reasons_a_user_can_read(server: FaultServer, tmp_path: Path) -> None:
    """A Retry-After longer than a run waits fails at once and says so
    (rather than minutes of silence); a short body says how short."""
    server.add("/later.bin", b"x", statuses=[503, 503], retry_after="86400")
    server.add("/short.bin", bytes(10240), short_by=6240)
    urls = [server.url("/later.bin"), server.url("/short.bin")]
    results = await Downloader(tmp_path, progress=False, retries=0).download(urls)
    assert [(r.attempts, r.error) for r in results] == [
        (
            1,
            "HTTP 503 Service Unavailable (the server asks to wait 86400 s, longer than a "
            "run waits: try again later; --retry continues)",
        ),
        (1, "connection closed after 4000 of 10240 bytes"),
    ]


async def test_the_url_goes_out_as_written(server: FaultServer, tmp_path: Path) -> None:
    """``%3B`` is not ``;`` (RFC 3986 §2.2): the request line carries the
    list's bytes, as curl's, wget's and aria2c's do; only what cannot go on
    the wire is encoded."""
    server.add("/report%3Bv2%3D1%40x%28y%29.pdf", b"escaped")
    server.add("/report;v2=1@x(y).pdf", b"plain: another resource")
    server.add("/caf%C3%A9.bin", b"encoded here")
    urls = [
        server.url("/report%3Bv2%3D1%40x%28y%29.pdf?q=%3F"),
        server.url("/a%7e%41.bin"),
        Entry(server.url("/café.bin"), out="cafe.bin"),
    ]
    server.add("/a%7e%41.bin", b"kept")
    results = await Downloader(tmp_path, progress=False, retries=0).download(urls)
    assert [r.status for r in results] == ["complete"] * 3, results
    assert (tmp_path / "report;v2=1@x(y).pdf").read_bytes() == b"escaped"
    assert set(server.requests) == {
        "/report%3Bv2%3D1%40x%28y%29.pdf",
        "/a%7e%41.bin",
        "/caf%C3%A9.bin",
    }


async def test_the_url_is_cleaned_as_curl_cleans_it(server: FaultServer, tmp_path: Path) -> None:
    """Escapes are kept, but a ``%`` starting none is encoded, ``.`` and
    ``..`` segments are resolved, and the host has no case: a secret header
    still goes to the host named."""
    server.add("/50%25off.pdf", b"sale")
    server.add("/dir/f.bin", b"dotted")
    server.add("/key.bin", b"keyed", auth=None)
    host = server.base.replace("127.0.0.1", "LocalHost")
    urls = [
        server.url("/50%off.pdf"),
        server.url("/dir/./x/../f.bin"),
        Entry(host + "/key.bin", headers={"X-Api-Key": TOKEN}),
    ]
    results = await Downloader(tmp_path, progress=False, retries=0).download(urls)
    assert [r.status for r in results] == ["complete"] * 3, results
    assert set(server.requests) == {"/50%25off.pdf", "/dir/f.bin", "/key.bin"}
    assert server.request_log[-1][2].get("X-Api-Key") == TOKEN


async def test_a_huge_url_is_one_short_line_of_the_summary(
    server: FaultServer, tmp_path: Path
) -> None:
    url = server.url("/missing/" + "x" * 1_000_000)
    listing = tmp_path / "list.txt"
    listing.write_text(url + "\n")
    code, _, err = await run_cli(str(listing), "-o", str(tmp_path / "out"), "--no-progress")
    assert code == 1
    assert max(map(len, err.splitlines())) < 1000
    assert "[1 attempt]: HTTP 4" in err  # (a server refuses so long a URL: 400)
    report = json.loads((tmp_path / "out" / ".downloader" / "report.json").read_text())
    assert report["entries"][0]["url"] == url  # the report keeps it whole


async def test_an_unreadable_file_already_there_is_a_reason_not_a_crash(
    server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from downloader import transfer

    async def unreadable(path: Path, algo: str, limit: int | None = None) -> object:
        raise PermissionError(13, "Permission denied", str(path))

    url = server.add("/c.bin", b"c")
    (tmp_path / "c.bin").write_bytes(b"c")
    monkeypatch.setattr(transfer, "_hash_file", unreadable)
    digest = hashlib.sha256(b"c").hexdigest()
    results = await Downloader(tmp_path, progress=False).download(
        [Entry(url, checksum=f"sha256={digest}")]
    )
    assert results[0].status == "failed"
    assert results[0].error == "cannot read c.bin to check it: Permission denied"


async def test_a_malformed_content_disposition_says_nothing(
    server: FaultServer, tmp_path: Path
) -> None:
    """aiohttp warns about a malformed header, quoting the server's bytes raw
    (escape sequences that retitle or clear the terminal): -q stays silent."""
    header = b"attachment; filename*=UTF-8''%FF\x1b]2;PWNED\x07\x1b[2Jred.bin"
    url = server.add(
        "/cd.bin",
        raw=b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n"
        b"Content-Disposition: " + header + b"\r\n\r\nhello",
    )
    code, _, err = await run_cli("--content-disposition", "-q", "-o", str(tmp_path), url)
    assert code == 0 and err == ""
    assert (tmp_path / "cd.bin").read_bytes() == b"hello"


async def test_a_password_in_a_url_argument_reaches_no_file(
    server: FaultServer, tmp_path: Path
) -> None:
    basic = "Basic " + base64.b64encode(f"user:{SECRET}".encode()).decode()
    url = server.add("/auth.bin", b"authorised", auth=basic)
    credentialed = url.replace("http://", f"http://user:{SECRET}@")
    code, out, err = await run_cli(credentialed, "-o", str(tmp_path))
    assert code == 0, err
    assert (tmp_path / "auth.bin").read_bytes() == b"authorised"
    for path in (tmp_path / ".downloader").rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path
    assert SECRET not in out + err
