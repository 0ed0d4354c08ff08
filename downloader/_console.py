"""The ``downloader`` command's entry point: answers Ctrl-C and SIGTERM from
its first moment, before the libraries behind the CLI have loaded."""

from __future__ import annotations

import signal
import sys


def raise_interrupt(signum: int, frame: object) -> None:
    """SIGTERM as Ctrl-C: one way out, the same clean-up."""
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        from ._malloc import tune

        tune()
        from .cli import main as cli_main
    except KeyboardInterrupt:
        print("downloader: interrupted before anything was downloaded", file=sys.stderr)
        return 130
    return cli_main()
