#!/usr/bin/env python3
"""Reproduce downloader's throughput figures on your machine, offline.

Serves generated files on 127.0.0.1 (nginx when installed, else a small
aiohttp server in another process), runs the real ``downloader`` CLI against
them, checks every file, and prints files/s, MiB/s, peak RSS and CPU seconds
per GiB. For comparisons with curl, wget2, aria2c and parfive, use the shared
harness (see README, "Performance"): ratios measured in the same run are the
only honest speed claims on a shared machine.

    python bench/bench.py                      # every case, 3 rounds
    python bench/bench.py --cases small --reps 5 --server builtin
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 1024 * 1024
CASES = {
    # name: (file count, file size, extra CLI args, throttled server)
    "small": (2000, 16 * 1024, [], False),
    "medium": (20, 32 * MiB, [], False),
    "large": (1, 512 * MiB, [], False),
    "split": (1, 32 * MiB, ["--split", "8"], True),
}
THROTTLE = 2 * MiB  # bytes/s per connection on the throttled server

BUILTIN_SERVER = r"""
import asyncio, os, sys
from aiohttp import web
root, port, tport, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
async def throttled(request):
    path = os.path.join(root, request.match_info["p"])
    size = os.path.getsize(path)
    start, end = 0, size - 1
    rng = request.headers.get("Range", "")
    status = 200
    headers = {"Accept-Ranges": "bytes", "ETag": '"%d"' % size}
    if rng.startswith("bytes="):
        a, _, b = rng[6:].partition("-")
        start, end, status = int(a), int(b) if b else size - 1, 206
        headers["Content-Range"] = "bytes %d-%d/%d" % (start, end, size)
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_length = end - start + 1
    await resp.prepare(request)
    with open(path, "rb") as f:
        f.seek(start)
        left = end - start + 1
        while left:
            chunk = f.read(min(65536, left))
            try:
                await resp.write(chunk)
            except ConnectionError:  # the client has what it wanted (a segment's end)
                return resp
            left -= len(chunk)
            await asyncio.sleep(len(chunk) / rate)
    return resp
async def main():
    plain = web.Application(); plain.router.add_static("/", root)
    slow = web.Application(); slow.router.add_get("/{p:.*}", throttled)
    for app, p in ((plain, port), (slow, tport)):
        r = web.AppRunner(app, access_log=None); await r.setup()
        await web.TCPSite(r, "127.0.0.1", p).start()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

NGINX_CONF = """
worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log warn; daemon off;
events {{ worker_connections 4096; }}
http {{
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;
  types {{ }} default_type application/octet-stream;
  client_body_temp_path {d}/t1; proxy_temp_path {d}/t2; fastcgi_temp_path {d}/t3;
  uwsgi_temp_path {d}/t4; scgi_temp_path {d}/t5;
  server {{ listen 127.0.0.1:{port}; root {root}; location / {{ }} }}
  server {{ listen 127.0.0.1:{tport}; root {root}; location / {{ limit_rate {rate}; }} }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_data(root: Path, cases: list[str]) -> None:
    for case in cases:
        count, size, _, _ = CASES[case]
        d = root / case
        if d.is_dir() and len(list(d.iterdir())) == count:
            continue
        d.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            with open(d / f"f{i:05d}.bin", "wb") as f:
                left = size
                while left:
                    n = min(left, 4 * MiB)
                    f.write(os.urandom(n))
                    left -= n


def start_server(
    kind: str, root: Path, work: Path
) -> tuple[subprocess.Popen[bytes], int, int, str]:
    port, tport = free_port(), free_port()
    nginx = shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx")
    if kind in ("auto", "nginx") and nginx:
        conf = work / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                d=work, port=port, tport=tport, root=root, rate=f"{THROTTLE // 1024}k"
            )
        )
        proc = subprocess.Popen(
            [str(nginx), "-p", str(work), "-c", str(conf)], stderr=subprocess.DEVNULL
        )
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                socket.create_connection(("127.0.0.1", tport), timeout=0.1).close()
                return proc, port, tport, "nginx"
            except OSError:
                time.sleep(0.05)
        proc.kill()
        raise SystemExit("nginx did not start")
    if kind == "nginx":
        raise SystemExit("nginx is not installed (apt-get install nginx), or use --server builtin")
    proc = subprocess.Popen(
        [sys.executable, "-c", BUILTIN_SERVER, str(root), str(port), str(tport), str(THROTTLE)],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc, port, tport, "aiohttp (builtin)"


def run_once(
    case: str, port: int, tport: int, data: Path, out: Path, jobs: int
) -> dict[str, float]:
    count, size, extra, throttled = CASES[case]
    names = sorted(p.name for p in (data / case).iterdir())
    listing = out.parent / f"{case}.txt"
    base = f"http://127.0.0.1:{tport if throttled else port}/{case}/"
    listing.write_text("".join(base + n + "\n" for n in names))
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "downloader",
        str(listing),
        "-o",
        str(out),
        "-j",
        str(jobs),
        "--no-progress",
        "-q",
        *extra,
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{case}: downloader exited {proc.returncode}")
    got = {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}
    if got != {n: size for n in names}:
        raise SystemExit(f"{case}: the downloaded files do not match what was served")
    total = count * size
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "wall": wall,
        "files_s": count / wall,
        "mib_s": total / MiB / wall,
        "rss_mib": usage.ru_maxrss / 1024,
        "cpu_per_gib": cpu / (total / 1024**3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated: {', '.join(CASES)}")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--server", choices=["auto", "nginx", "builtin"], default="auto")
    ap.add_argument(
        "--data", type=Path, default=Path(tempfile.gettempdir()) / "downloader-bench-data"
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where files are written (default: /dev/shm when present, else a temp dir)",
    )
    args = ap.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            raise SystemExit(f"unknown case {c!r}")
    make_data(args.data, cases)
    work = Path(tempfile.mkdtemp(prefix="downloader-bench-"))
    out_root = args.out or (Path("/dev/shm") if Path("/dev/shm").is_dir() else work)
    out = out_root / f"downloader-bench-out-{os.getpid()}"
    proc, port, tport, server = start_server(args.server, args.data.resolve(), work)
    rows = []
    try:
        for case in cases:
            runs = [
                run_once(case, port, tport, args.data, out, args.jobs) for _ in range(args.reps)
            ]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            lo, hi = min(r["wall"] for r in runs), max(r["wall"] for r in runs)
            rows.append((case, med, lo, hi))
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"server: {server}; output: {out_root}; {args.reps} rounds, medians; -j {args.jobs}")
    print(
        f"{'case':8} {'wall s (min-max)':>20} {'files/s':>9} {'MiB/s':>8} {'RSS MiB':>8} {'CPU s/GiB':>10}"
    )
    for case, med, lo, hi in rows:
        print(
            f"{case:8} {med['wall']:8.3f} ({lo:.3f}-{hi:.3f}) {med['files_s']:9.0f} "
            f"{med['mib_s']:8.1f} {med['rss_mib']:8.1f} {med['cpu_per_gib']:10.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
