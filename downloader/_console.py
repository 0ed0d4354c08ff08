"""The ``downloader`` command's entry point: answers Ctrl-C, SIGTERM and SIGHUP from
its first moment, before the libraries behind the CLI have loaded."""

from __future__ import annotations

import os
import signal
import sys


def raise_interrupt(signum: int, frame: object) -> None:
    """SIGTERM as Ctrl-C: one way out, the same clean-up."""
    raise KeyboardInterrupt


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that stop a run cleanly: Ctrl-C, SIGTERM, and SIGHUP (a
    closed terminal, a dropped ssh session: state saved, as aria2c does),
    unless it is ignored (``nohup``: the run must outlive the terminal)."""
    hup = getattr(signal, "SIGHUP", None)
    if hup is None or signal.getsignal(hup) == signal.SIG_IGN:
        return (signal.SIGINT, signal.SIGTERM)
    return (signal.SIGINT, signal.SIGTERM, hup)


def more_files() -> None:
    """Raise the soft limit on open files to the hard one, as servers do:
    a list of many hosts keeps a kept-alive connection to each for a while,
    and the usual soft limit (1,024) runs out long before the hard one."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 1 << 20 if hard == resource.RLIM_INFINITY else min(hard, 1 << 20)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass  # the limit stays: a transfer that meets it fails with the reason


def main() -> int:
    # From an editable install (the README's), the package runs from its
    # sources; with PYTHONDONTWRITEBYTECODE set (containers, CI), every start
    # compiled them all again: 25-30 ms of a 0.4 s run of 2,000 small files.
    # Installed packages were compiled by their installer: this writes only
    # the package's own __pycache__, once.
    sys.dont_write_bytecode = False
    for sig in stop_signals()[1:]:
        signal.signal(sig, raise_interrupt)
    more_files()
    try:
        from ._malloc import tune

        tune()
        from .cli import main as cli_main
    except KeyboardInterrupt:
        print("downloader: interrupted before anything was downloaded", file=sys.stderr)
        return 130
    code = cli_main()
    # Everything is saved, printed and closed by now. The interpreter's
    # teardown of every module and object would add a twentieth to a
    # run of small files (22 ms of 0.38 s, measured): skipped. A stream
    # that cannot be flushed goes the usual way, whose exit says so.
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        return code
    os._exit(code)
