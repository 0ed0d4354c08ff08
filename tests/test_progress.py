"""The end-of-run text a user reads."""

from __future__ import annotations

from downloader.models import NOT_STARTED, Record, Results
from downloader.progress import summary_lines


def _failed(n: int, error: str) -> Record:
    return Record(f"http://h/{n}", f"f{n}", "failed", 0, 1, error, n)


def test_entries_a_stop_never_reached_are_counted_not_listed() -> None:
    """After a Ctrl-C on a 100,000-line list, one line says how many were
    not started; the real failures are still listed one by one."""
    results = Results(
        [_failed(1, "HTTP 404 Not Found")] + [_failed(n, NOT_STARTED) for n in range(2, 5002)]
    )
    lines = summary_lines(results, quiet=True)
    assert lines[0] == "Failed (5001):"
    assert lines[1] == "  http://h/1 -> f1 [1 attempt]: HTTP 404 Not Found"
    assert lines[2:] == ["  5000 entries not started (run interrupted; listed in the report)"]
