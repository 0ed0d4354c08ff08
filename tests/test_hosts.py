"""--per-host hand-out order: free hosts first, list order otherwise, bounded look-ahead."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from downloader.hosts import LOOKAHEAD, HostLimits, prefer_free_hosts


@dataclass
class _Job:
    urls: tuple[str, ...]
    promised: bool = False


def _jobs(host: str, n: int) -> list[_Job]:
    return [_Job((f"http://{host}/{i}",)) for i in range(n)]


def test_one_host_keeps_list_order() -> None:
    hosts = HostLimits(1)
    jobs = _jobs("a", 5)
    assert list(prefer_free_hosts(iter(jobs), hosts)) == jobs


def test_a_free_host_goes_ahead_of_a_busy_one_and_its_promise_is_kept() -> None:
    hosts = HostLimits(1)
    a, b = _jobs("a", 3), _jobs("b", 2)
    order = prefer_free_hosts(iter(a + b), hosts)
    first = next(order)
    assert first is a[0] and first.promised and not hosts.room_at("a")
    assert next(order) is b[0]  # a's slot is promised: b goes first
    hosts.settle(first)  # a[0] asked for its slot (or was skipped)
    assert next(order) is a[1]


def test_the_list_is_read_at_most_lookahead_ahead() -> None:
    hosts = HostLimits(1)
    read = 0

    def counted() -> Iterator[_Job]:
        nonlocal read
        for job in _jobs("a", 10 * LOOKAHEAD):
            read += 1
            yield job

    order = prefer_free_hosts(counted(), hosts)
    taken = list(itertools.islice(order, 3))
    assert [j.urls[0] for j in taken] == [f"http://a/{i}" for i in range(3)]
    assert read <= LOOKAHEAD + 3
