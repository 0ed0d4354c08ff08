"""Where a run's entries come from (list files, URLs given one by one),
recorded with the run so that ``--retry`` of a run stopped while its list
was still being recorded can read the rest of an unchanged list again."""

from __future__ import annotations

import itertools
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import ListError
from .models import Entry
from .state import RunState, has_userinfo
from .urllist import iter_list

log = logging.getLogger("downloader")


def entries_of(sources: list[dict[str, Any]]) -> Iterator[Entry]:
    """Every source in order (``{"url": ...}`` or ``{"list": path}``); list
    files are opened now, so an unreadable one is an error before anything
    is downloaded."""
    parts = [
        iter([Entry(str(src["url"]))]) if "url" in src else iter_list(str(src["list"]))
        for src in sources
    ]
    return itertools.chain.from_iterable(parts)


def origin_of(sources: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The sources as recorded: lists by absolute path, with their size and
    time (to know them unchanged later). None when standard input or
    another pipe is one (it cannot be read again), or a URL holds a
    password (never written to disk)."""
    origin: list[dict[str, Any]] = []
    for src in sources:
        if "url" in src and has_userinfo(str(src["url"])):
            return None  # a password is never written to disk: not read again either
        if "list" in src:
            try:
                st = os.stat(src["list"]) if src["list"] != "-" else None
            except OSError:
                st = None
            if st is None or not stat.S_ISREG(st.st_mode):
                return None  # a pipe is read once (and opening one again can block)
            path = os.path.abspath(src["list"])
            src = {"list": path, "size": st.st_size, "mtime": st.st_mtime_ns}
        origin.append(src)
    return origin


def rest_of(output_dir: Path) -> Iterator[Entry] | None:
    """The recorded run's entries read again from where they came from, when
    it stopped before they were all recorded and its lists are unchanged."""
    origin = RunState(output_dir).unread_origin()
    if origin is None:
        return None
    for src in origin:
        if "list" not in src:
            continue
        path = str(src["list"])
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        if (st.st_size, st.st_mtime_ns) != (src.get("size"), src.get("mtime")):
            log.warning(
                f"{path} changed since the run was recorded: its entries the "
                "run never recorded are not read again (run the list again for them)"
            )
            return None
    try:
        return entries_of(origin)
    except ListError:
        return None
