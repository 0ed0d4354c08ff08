"""The ``downloader`` command's entry point: answers Ctrl-C and SIGTERM from
its first moment, before the libraries behind the CLI have loaded."""

from __future__ import annotations

import signal
import sys


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        from ._malloc import tune

        tune()
        from .cli import main as cli_main
    except KeyboardInterrupt:
        print("downloader: interrupted before anything was downloaded", file=sys.stderr)
        return 130
    return cli_main()
