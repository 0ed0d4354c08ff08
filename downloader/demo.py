"""``downloader --demo``: a real run against a server inside this process.

Nothing leaves 127.0.0.1. The server throttles itself so the bars have
something to show, answers one file with 404 (the failure the demo
expects) and another with 503 once (the retry the demo shows).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from .client import Downloader
from .progress import summary_lines
from .urllist import parse_text

MiB = 1024 * 1024
#: name → size; "missing.bin" is absent on purpose, "flaky.bin" fails once.
FILES = {
    "dataset-2026.tar": 24 * MiB,
    "video-sample.mp4": 16 * MiB,
    "photos.zip": 12 * MiB,
    "flaky.bin": 6 * MiB,
    "model-weights.bin": 8 * MiB,
    "readme.txt": 4 * 1024,
    "notes.md": 1536,
}
_RATE = 8 * MiB  # bytes per second per connection
_CHUNK = 256 * 1024


class DemoServer:
    """A small static server with a throttle, ranges, and two planned faults."""

    def __init__(self) -> None:
        rng = random.Random(2026)
        self.blobs = {name: rng.randbytes(size) for name, size in FILES.items()}
        self.flaky_left = 1
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        blob = self.blobs.get(name)
        if blob is None:
            return web.Response(status=404, text="not here (on purpose)\n")
        if name == "flaky.bin" and self.flaky_left:
            self.flaky_left -= 1
            return web.Response(status=503, headers={"Retry-After": "1"}, text="busy\n")
        etag = '"' + hashlib.sha1(blob).hexdigest()[:16] + '"'
        start = 0
        status = 200
        headers = {"ETag": etag, "Accept-Ranges": "bytes"}
        rng = request.headers.get("Range", "")
        if rng.startswith("bytes=") and request.headers.get("If-Range", etag) == etag:
            first = rng[6:].split("-", 1)[0]
            if first.isdigit() and int(first) < len(blob):
                start, status = int(first), 206
                headers["Content-Range"] = f"bytes {start}-{len(blob) - 1}/{len(blob)}"
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(blob) - start
        await resp.prepare(request)
        view = memoryview(blob)
        for pos in range(start, len(blob), _CHUNK):
            await resp.write(view[pos : pos + _CHUNK])
            await asyncio.sleep(_CHUNK / _RATE)
        await resp.write_eof()
        return resp

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/files/{name}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{self.port}/files/"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def list_text(self, base: str) -> str:
        digest = hashlib.sha256(self.blobs["photos.zip"]).hexdigest()
        return "\n".join(
            [
                "# downloader --demo: a list in the wget / aria2c format",
                f"{base}dataset-2026.tar",
                f"{base}video-sample.mp4",
                f"{base}photos.zip",
                f"  checksum=sha-256={digest}",
                f"{base}model-weights.bin",
                "  out=models/weights.bin",
                f"{base}flaky.bin",
                f"{base}readme.txt",
                f"{base}notes.md",
                f"{base}missing.bin",
                "",
            ]
        )


async def _demo(out: Path, args: argparse.Namespace) -> int:
    from .cli import install_stop_handlers

    server = DemoServer()
    base = await server.start()
    text = server.list_text(base)
    quiet = bool(getattr(args, "quiet", False))
    if not quiet:
        print(f"Demo server on {base} (loopback only, no network needed).", file=sys.stderr)
        print(f"Downloading into {out}\n\nThe list:\n{text}", file=sys.stderr)
    try:
        dl = Downloader(
            output_dir=out,
            jobs=4,
            retries=3,
            quiet=quiet,
            progress="lines" if getattr(args, "no_progress", False) else None,
        )
        install_stop_handlers(dl)
        results = await dl.download(parse_text(text))
    finally:
        await server.stop()
    for line in summary_lines(results, quiet=quiet):
        print(line, file=sys.stderr)
    if results.interrupted:
        print(
            f"\nInterrupted. The demo server lived only as long as the demo; to continue, "
            f"run it again into the same folder: downloader --demo -o {out}",
            file=sys.stderr,
        )
        return 130
    failed = {r.path for r in results.failed}
    flaky = next((r for r in results if r.path == "flaky.bin"), None)
    lines = []
    if failed == {"missing.bin"}:
        lines.append(
            "The failure of missing.bin was expected: the demo server has no such file, "
            "to show how failures are reported."
        )
    else:
        lines.append(f"Unexpected failures: {', '.join(sorted(p or '?' for p in failed))}.")
    if flaky is not None and flaky.status == "complete" and flaky.attempts > 1:
        lines.append("flaky.bin answered 503 once and succeeded on retry.")
    lines.append(f"Report: {out / '.downloader' / 'report.json'}")
    print("\n" + "\n".join(lines), file=sys.stderr)
    return 0 if results.ok else 1


def main(args: argparse.Namespace) -> int:
    # The demo server is on loopback: never send its traffic to a proxy.
    for name in ("NO_PROXY", "no_proxy"):
        os.environ[name] = ",".join(filter(None, [os.environ.get(name), "127.0.0.1", "localhost"]))
    out_arg = getattr(args, "output_dir", None)
    out = Path(out_arg) if out_arg else Path(tempfile.mkdtemp(prefix="downloader-demo-"))
    return asyncio.run(_demo(out, args))
