"""The ``downloader`` command's entry point: answers Ctrl-C, SIGTERM and SIGHUP from
its first moment, before the libraries behind the CLI have loaded."""

from __future__ import annotations

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


def main() -> int:
    for sig in stop_signals()[1:]:
        signal.signal(sig, raise_interrupt)
    try:
        from ._malloc import tune

        tune()
        from .cli import main as cli_main
    except KeyboardInterrupt:
        print("downloader: interrupted before anything was downloaded", file=sys.stderr)
        return 130
    return cli_main()
