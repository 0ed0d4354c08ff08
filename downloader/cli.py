"""The command line: options in, exit status out; the work is ``Downloader``'s."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from ._console import raise_interrupt, stop_signals
from .config import DEFAULT_AGENT, DEFAULT_SPLIT, MAX_TIMEOUT, MIN_SEGMENT, parse_rate
from .errors import DownloaderError, ListError, NoRunError
from .models import Entry, Results
from .progress import summary_lines
from .sources import entries_of, origin_of
from .state import RunState
from .text import printable
from .urllist import header_problem, split_header

if TYPE_CHECKING:
    from .client import Downloader

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_URL_ARG = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _whole(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more: {text!r}")
        return value

    return parse


_positive, _count = _whole(1), _whole(0)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    if not value <= MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"at most {MAX_TIMEOUT:.0f} seconds (a week): {text!r}")
    return value


def _rate(text: str) -> int:
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _header(text: str) -> tuple[str, str]:
    problem = header_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return split_header(text)


def _agent(text: str) -> str:
    return _header(f"User-Agent: {text}")[1]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="downloader",
        description="Download many files at once from a URL list (wget/aria2c format) "
        "or from URLs given as arguments.",
        epilog="Options may come before, between or after the URLs and lists; after --, "
        "every argument is a URL or list. Exit status: 0 all complete, 1 some failed or "
        "invalid, 2 usage error, 130 interrupted (continue with --retry).",
    )
    p.add_argument(
        "sources",
        nargs="*",
        metavar="URL_LIST | URL",
        help="a URL list file (- for standard input), or URLs starting http:// or https://",
    )
    p.add_argument(
        "-i",
        "--input-file",
        action="append",
        default=[],
        metavar="URL_LIST",
        help="read URLs from this list (as wget and aria2c spell it)",
    )
    p.add_argument(
        "-o", "--output-dir", metavar="DIR", help="where files go, created if missing (default: .)"
    )
    p.add_argument(
        "-j",
        "--jobs",
        type=_positive,
        default=8,
        metavar="N",
        help="files downloaded at once (default: 8)",
    )
    p.add_argument(
        "--per-host",
        type=_positive,
        metavar="N",
        help="requests in flight to one host at once; other hosts' files go ahead of a "
        "busy host's (default: no extra limit)",
    )
    p.add_argument(
        "--split",
        type=_positive,
        default=DEFAULT_SPLIT,
        metavar="N",
        help="connections for one file when the server answers ranges; segments are at "
        f"least {MIN_SEGMENT // 2**20} MiB (default: {DEFAULT_SPLIT})",
    )
    p.add_argument(
        "--processes",
        type=_positive,
        metavar="N",
        help="processes sharing a long list's transfers (Linux; 1: one process; default: "
        "2 for 16 files or more when two cores are free, without bars, --per-host, "
        "--limit-rate or --content-disposition)",
    )
    p.add_argument(
        "--retries",
        type=_count,
        default=5,
        metavar="N",
        help="extra attempts after a transient failure (default: 5)",
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="connect timeout and longest wait with no data, at most a week (default: 30)",
    )
    p.add_argument(
        "--limit-rate",
        type=_rate,
        metavar="RATE",
        help="overall byte-rate cap: 500K, 2M, 1G (powers of 1024)",
    )
    p.add_argument(
        "-H",
        "--header",
        type=_header,
        action="append",
        default=[],
        metavar="'Name: value'",
        help="extra request header, repeatable (a name given twice is sent twice)",
    )
    p.add_argument(
        "--user-agent",
        metavar="STRING",
        type=_agent,
        help=f"User-Agent header (default: {DEFAULT_AGENT})",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace existing files instead of skipping them"
    )
    p.add_argument(
        "--no-resume", action="store_true", help="restart partial (.part) files from byte 0"
    )
    p.add_argument(
        "--content-disposition",
        action="store_true",
        help="name files from the server's Content-Disposition header",
    )
    p.add_argument("--insecure", action="store_true", help="skip TLS certificate verification")
    p.add_argument(
        "--max-redirects",
        type=_count,
        default=10,
        metavar="N",
        help="redirects followed at most (default: 10)",
    )
    p.add_argument(
        "--report",
        metavar="PATH",
        help="also write the JSON report here (- for standard output); its folder must "
        "exist, or be the output directory",
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", help="only errors and the final failure list"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--retry",
        action="store_true",
        help="continue the last run recorded in the output directory, with its options "
        "(options given now win; secret headers must be given again)",
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="offline demonstration against a built-in local server (takes no URLs or lists)",
    )
    p.add_argument("--version", action="version", version=f"downloader {__version__}")
    return p


def _parse(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    namespace: argparse.Namespace | None = None,
) -> argparse.Namespace:
    """Options anywhere among the URLs and lists, as wget and aria2c take
    them; after the first ``--`` every argument is a URL or a list, even one
    starting with ``-``. (``parse_intermixed_args`` alone mistakes what
    follows ``--`` for options again, so that part never reaches it.)"""
    args = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, rest = args[:cut], args[cut + 1 :]
    # Ctrl-C held for the parse (a millisecond): argparse's intermixed
    # parse, cut short by KeyboardInterrupt, fails in its own clean-up
    # (AttributeError: no save_nargs) instead, and the stop became a crash
    mask = getattr(signal, "pthread_sigmask", None)  # (not on Windows)
    held = mask(signal.SIG_BLOCK, set(stop_signals())) if mask else None
    try:
        parsed = parser.parse_intermixed_args(args, namespace)
    finally:
        if mask and held is not None:
            mask(signal.SIG_SETMASK, held)
    parsed.sources.extend(rest)
    return parsed


def _sources(sources: Sequence[str], lists: Sequence[str]) -> list[dict[str, Any]]:
    """The arguments, in the order they are read: ``{"url": ...}`` for a URL
    given directly, ``{"list": ...}`` for a list (the ``-i`` ones last)."""
    return [
        *({"url": s} if _URL_ARG.match(s) else {"list": s} for s in sources),
        *({"list": path} for path in lists),
    ]


def _unwritable(path: Path, output_dir: Path) -> str | None:
    """Why the report cannot be written at ``path``, found before any download."""
    if path.is_dir():
        return "is a folder"
    if not path.parent.is_dir():
        # DIR and DIR/.downloader are made by the run, before the report is written
        if path.parent.resolve() in (output_dir.resolve(), (output_dir / ".downloader").resolve()):
            return None
        return "no such folder to write it in"
    existed = path.exists()
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        return f"cannot write it: {exc.strerror}"
    if not existed:
        path.unlink()
    return None


def _stdout_report() -> Path:
    """Where ``--report -`` has the run write its report, to copy it to
    standard output at the end: the library's ``--report PATH`` (written even
    when DIR's own report cannot be), in a temporary file."""
    import tempfile

    fd, name = tempfile.mkstemp(prefix="downloader-report-", suffix=".json")
    os.close(fd)
    path = Path(name)
    _TEMPORARY.append(path)
    return path


#: files of this run's own, gone when the program ends, whichever way
#: (the command ends with os._exit, which skips atexit)
_TEMPORARY: list[Path] = []


def _remove_temporary() -> None:
    while _TEMPORARY:
        _TEMPORARY.pop().unlink(missing_ok=True)


def _print_report(path: Path | None) -> None:
    """``--report -``: the run's report, once written, on standard output."""
    import shutil

    assert path is not None
    try:
        with open(path, "rb") as src:
            sys.stdout.flush()
            shutil.copyfileobj(src, sys.stdout.buffer)
            sys.stdout.flush()
    except OSError as exc:
        _say(f"cannot write the report to standard output: {exc.strerror or exc}")
        if isinstance(exc, BrokenPipeError):  # no second complaint when Python exits
            _to_devnull(sys.stdout.fileno())


def _exit_status(results: Results) -> int:
    if results.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if results.ok else EXIT_FAILED


def _say(message: str) -> None:
    _err(f"downloader: {message}")


def _err(text: str) -> None:
    """A line to stderr; a stderr that is gone (its pipe's reader quit, its
    terminal hung up) silences the program, never fails it: every outcome
    is in the report on disk."""
    try:
        bars = sys.modules.get("tqdm")
        if bars is not None:  # bars on the screen: the line goes above them
            bars.tqdm.write(text, file=sys.stderr)
            sys.stderr.flush()
        else:
            print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        _to_devnull(2)


def _to_devnull(fd: int) -> None:
    """A standard stream whose reader is gone goes nowhere from now on, and
    Python's exit does not fail on flushing what it still holds."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    except OSError:
        pass


def _say_warnings() -> None:
    """The library's warnings (logging), said as the command's own."""
    log = logging.getLogger("downloader")
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("downloader: warning: %(message)s"))
        log.addHandler(handler)
        log.propagate = False


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is at each message (a test, or a
    second ``main()`` in one process, may have replaced it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        _to_devnull(2)  # the only way this handler fails: stderr is gone


def _quit_now(signum: int, frame: object) -> None:
    _remove_temporary()
    os._exit(EXIT_INTERRUPTED)


def install_stop_handlers(dl: Downloader) -> None:
    """Ctrl-C or SIGTERM: stop cleanly and save the state; a second one quits at once."""
    loop = asyncio.get_running_loop()
    hits = 0

    def on_signal() -> None:
        nonlocal hits
        hits += 1
        if hits == 1:
            _say("interrupted: stopping and saving state (press Ctrl-C again to quit at once)")
            dl.stop()
            # The next one is handled by Python itself, not by the event loop:
            # saving a long list's report keeps the loop busy for seconds.
            for sig in stop_signals():
                signal.signal(sig, _quit_now)
        else:
            _quit_now(0, None)

    for sig in stop_signals():
        loop.add_signal_handler(sig, on_signal)


async def _run(
    args: argparse.Namespace, dl: Downloader, entries: Iterator[Entry] | None
) -> Results:
    install_stop_handlers(dl)
    if entries is None:
        return await dl.retry(collect=False)
    return await dl.download(entries, collect=False)


def main(argv: Sequence[str] | None = None) -> int:
    # Until the run's own handlers are in place (opening a list that is a
    # named pipe can block), Ctrl-C and SIGTERM end the program quietly.
    stops = stop_signals()
    before = [signal.getsignal(sig) for sig in stops]
    for sig in stops[1:]:
        signal.signal(sig, raise_interrupt)
    _say_warnings()
    try:
        return _main(argv)
    except KeyboardInterrupt:
        _say("interrupted before anything was downloaded")
        return EXIT_INTERRUPTED
    finally:
        _remove_temporary()
        for sig, handler in zip(stops, before, strict=True):
            if handler is not None:  # (None: set outside Python, cannot be put back)
                signal.signal(sig, handler)


#: The options a run records for ``--retry``, each checked again as the
#: command line would check it (run.json may be old or edited by hand).
_RECORDED: dict[str, Callable[[str], Any] | None] = {
    "jobs": _positive,
    "per_host": _positive,
    "split": _positive,
    "retries": _count,
    "timeout": _seconds,
    "limit_rate": _whole(1),
    "header": _header,
    "user_agent": _agent,
    "overwrite": None,  # flags: true or false, nothing else
    "content_disposition": None,
    "insecure": None,
    "max_redirects": _count,
}
_MAY_BE_NONE = frozenset({"per_host", "limit_rate", "user_agent"})


def _recorded_value(name: str, value: Any) -> Any:
    """The recorded value as the command line would have it; ValueError if
    it could not have come from the command line."""
    check = _RECORDED[name]
    if value is None and name in _MAY_BE_NONE:
        return None
    if check is None:
        if not isinstance(value, bool):
            raise ValueError(value)
        return value
    if name == "header":
        if not isinstance(value, list) or not all(
            isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h)
            for h in value
        ):
            raise ValueError(value)
        return [check(f"{k}: {v}") for k, v in value]
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(value)
    if isinstance(value, float) and check is not _seconds:
        raise ValueError(value)
    return check(str(value))


def _with_recorded(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, args: argparse.Namespace
) -> argparse.Namespace:
    """``--retry`` continues with the options the run was started with (its
    secrets excepted); an option given now wins. argparse fills in a default
    only where the namespace has no value yet, so the recorded values go in
    first and the command line is parsed over them."""
    recorded = RunState(Path(args.output_dir or ".")).recorded_settings()
    given = {k.lower() for k, _ in args.header}
    start = argparse.Namespace()
    for name in _RECORDED:
        if name not in recorded:
            continue
        try:
            value = _recorded_value(name, recorded[name])
            if name == "header":  # a name given again now replaces the recorded values
                value = [(k, v) for k, v in value if k.lower() not in given]
            setattr(start, name, value)
        except (ValueError, argparse.ArgumentTypeError):
            if not args.quiet:
                _say(f"warning: ignoring the run's recorded {name} {recorded[name]!r}: not valid")
    again = _parse(parser, argv, start)
    withheld = recorded.get("withheld_headers")
    if isinstance(withheld, list) and not args.quiet:
        missing = [h for h in withheld if isinstance(h, str) and h.lower() not in given]
        if missing:
            _say(
                "warning: the run sent secret headers that are never saved to disk: "
                + ", ".join(printable(h) for h in missing)
                + "; pass them again with -H"
            )
    return again


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    if args.demo:
        if args.sources or args.input_file:
            parser.error("--demo takes no URL list or URLs: it downloads its own generated files")
        if args.retry:
            parser.error("--demo and --retry cannot be used together")
        from .demo import main as demo_main

        return demo_main(args)
    if args.retry:
        args = _with_recorded(parser, argv, args)
    if args.output_dir is None:
        args.output_dir = "."
    # Loaded only now: --help, --version and usage errors answer without
    # waiting for aiohttp (a tenth of a second or more).
    from .client import Downloader

    try:
        dl = Downloader(
            output_dir=args.output_dir,
            jobs=args.jobs,
            per_host=args.per_host,
            split=args.split,
            retries=args.retries,
            timeout=args.timeout,
            limit_rate=args.limit_rate,
            headers=args.header,
            user_agent=args.user_agent,
            overwrite=args.overwrite,
            resume=not args.no_resume,
            content_disposition=args.content_disposition,
            insecure=args.insecure,
            max_redirects=args.max_redirects,
            processes=args.processes,
            report=_stdout_report() if args.report == "-" else args.report,
            quiet=args.quiet,
            progress="lines" if args.no_progress else None,
        )
    except ValueError as exc:
        parser.error(str(exc))
    if args.report == "-":
        if sys.stdout is None:
            _say("--report -: standard output is closed")
            return EXIT_USAGE
    elif args.report is not None:
        problem = _unwritable(Path(args.report), Path(args.output_dir))
        if problem:
            _say(f"--report {args.report}: {problem}")
            return EXIT_USAGE
    if args.retry:
        if args.sources or args.input_file:
            parser.error("--retry takes no URL list or URLs: it continues the recorded run")
        entries = None
    else:
        if not args.sources and not args.input_file:
            parser.error("no URL list or URLs given (try --help, or --demo)")
        try:
            sources = _sources(args.sources, args.input_file)
            entries = entries_of(sources)
        except ListError as exc:
            _say(str(exc))
            return EXIT_USAGE
        dl._origin = origin_of(sources)
    if args.insecure and not args.quiet:
        _say("warning: --insecure: TLS certificates are NOT verified for this run")
    try:
        results = asyncio.run(_run(args, dl, entries))
    except (ListError, NoRunError) as exc:
        _say(str(exc))
        return EXIT_USAGE
    except DownloaderError as exc:
        _say(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        _say(f"{exc.strerror or exc}: {exc.filename or args.output_dir}")
        return EXIT_USAGE
    # The loop took its signal handlers with it; the run is saved by now, so
    # a stop while the summary prints (a slow terminal, a long list of
    # failures) ends the program at once, as any stop does: 130.
    for sig in stop_signals():
        signal.signal(sig, _quit_now)
    if args.report == "-":
        _print_report(dl.settings.report)
    if args.retry and results.attempted == 0 and not results.interrupted:
        if results.partial:
            return EXIT_FAILED
        invalid = results.counts["failed"]
        if not args.quiet:
            why = f" ({invalid} invalid entr{'y' if invalid == 1 else 'ies'}: see the report)"
            _say(
                f"nothing to retry: the last run in {args.output_dir!r} has nothing left to do"
                + (why if invalid else "")
            )
        # "a recorded run with nothing left to do is 0": invalid entries can
        # never be retried, and a `until downloader --retry` loop must end
        return EXIT_OK
    batch: list[str] = []  # a thousand lines a write: a million failures print quickly
    for line in summary_lines(results, quiet=args.quiet):
        batch.append(line)
        if len(batch) == 1000:
            _err("\n".join(batch))
            batch.clear()
    if batch:
        _err("\n".join(batch))
    if results.interrupted and not args.quiet:
        import shlex

        _say(f"to continue: downloader --retry -o {shlex.quote(args.output_dir)}")
    if results.interrupted:
        # A list still being read from standard input holds a reader thread
        # in a blocking read; leave without the interpreter's shutdown, which
        # would wait on it. Everything is saved and printed by now.
        sys.stdout.flush()
        sys.stderr.flush()
        _quit_now(0, None)
    return _exit_status(results)
