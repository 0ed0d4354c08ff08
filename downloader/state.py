"""The run state in ``DIR/.downloader/``: entries, journal, part metadata, report.

Layout (all JSON, written so that ``kill -9`` at any moment leaves it usable):

- ``run.json``      what the run is (version, times, finished or not);
- ``entries.jsonl`` every entry of the run with its assigned path, written in
  full before the first request so ``--retry`` knows entries never started;
- ``journal.jsonl`` one line appended per finished entry (later lines win);
- ``parts/*.json``  validator and total of each ``.part`` file, for resume;
- ``report.json``   the report, replaced atomically at the end of every run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import time
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]

try:
    import fcntl
except ImportError:  # not on Windows: one run per folder is then the user's care
    fcntl = None  # type: ignore[assignment]
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import DownloaderError, NoRunError, StateDirError
from .models import NOT_STARTED, Record, Status
from .naming import STATE_DIR
from .text import printable
from .urls import authority_end
from .workers import write_all

_STATUSES: tuple[str, ...] = ("pending", "complete", "skipped", "failed")
_CODE = {name: code for code, name in enumerate(_STATUSES)}
_COMPLETE, _SKIPPED = _CODE["complete"], _CODE["skipped"]
_OUTCOMES: tuple[Status, ...] = ("failed", "complete", "skipped", "failed")


def _encoder(item_sep: str, key_sep: str) -> Callable[[Any], str]:
    """JSON text, as ``json.dumps(ensure_ascii=False)`` writes it. Its C
    encoder is made anew on every call, through two Python layers: made
    once, it takes 2.2 µs an entry instead of 3.8 (once per entry, and once
    per report line)."""
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(item_sep, key_sep))
    if c_make_encoder is None:  # no C accelerator (PyPy)
        return encoder.encode
    chunks = c_make_encoder(
        None, encoder.default, encode_basestring, None, key_sep, item_sep, False, False, True
    )
    return lambda obj: "".join(chunks(obj, 0))


_text = _encoder(", ", ": ")
_compact = _encoder(",", ":")
_decode = json.JSONDecoder().raw_decode


#: How our JSON files are written: a lone surrogate (from a URL given on the
#: command line, a server's bytes) cannot be UTF-8, and becomes ``\udcXX``,
#: which inside a JSON string reads back as the same character.
_LONE = "backslashreplace"


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[IO[str]]:
    """Write ``path`` whole or not at all: into ``path.tmp``, renamed over it
    at the end; on a failure (a full disk) the .tmp goes too."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8", errors=_LONE) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _atomic_write(path: Path, data: str) -> None:
    with _replacing(path) as f:
        f.write(data)


class Ledger:
    """Each entry's latest outcome, a few bytes per entry so that a
    million-line run keeps its bookkeeping in memory cheaply."""

    def __init__(self) -> None:
        self.status = bytearray()
        self.bytes = array("q")
        self.attempts = array("i")
        self.errors: dict[int, str] = {}
        self._reasons: dict[str, str] = {}
        self.paths: dict[int, str] = {}
        #: entries with no path (invalid lines): failed for good, never retried
        self.invalid: set[int] = set()

    def __len__(self) -> int:
        return len(self.status)

    def add(self) -> int:
        self.status.append(0)
        self.bytes.append(0)
        self.attempts.append(0)
        return len(self.status) - 1

    def set(self, i: int, status: str, nbytes: int, attempts: int, error: str | None) -> None:
        self.status[i] = _CODE[status]
        self.bytes[i] = nbytes
        self.attempts[i] = attempts
        if error is None:
            self.errors.pop(i, None)
        else:
            # one string for each distinct reason: 200,000 entries refused by
            # one dead host hold one "cannot connect to ..." between them
            self.errors[i] = self._reasons.setdefault(error, error)

    def status_of(self, i: int) -> str:
        """The raw status, ``pending`` included."""
        return _STATUSES[self.status[i]]

    def done(self, i: int) -> bool:
        """Complete or skipped: nothing left to do for entry ``i``."""
        return self.status[i] in (_COMPLETE, _SKIPPED)

    def done_now(self) -> Callable[[int], bool]:
        """:meth:`done` as of now, whatever is set later."""
        status = bytes(self.status)
        return lambda i: status[i] in (_COMPLETE, _SKIPPED)

    def outcome(self, i: int) -> Status:
        """The status a report gives: one never finished counts as failed."""
        return _OUTCOMES[self.status[i]]


def _split_userinfo(url: str) -> tuple[str, str, str] | None:
    """``(scheme, user info, the rest)`` of a URL with user info, else None."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    end = authority_end(rest)
    userinfo, at, hostport = rest[:end].rpartition("@")
    if not at:
        return None
    return scheme, userinfo, hostport + rest[end:]


def has_userinfo(url: str) -> bool:
    """Whether the URL carries ``user:password@``."""
    return "@" in url and _split_userinfo(url) is not None


def host_of(url: str) -> str:
    """``host[:port]`` of a URL, lower-cased, without any user info."""
    rest = url.partition("://")[2]
    return rest[: authority_end(rest)].rpartition("@")[2].lower()


def _is_entry(data: object, n: int) -> bool:
    """``data`` is the ``n``-th entry as this program records it: what a run
    reads back from it cannot fail halfway through."""
    from .urllist import parse_checksum  # (urllist needs this module)

    if not (
        isinstance(data, dict)
        and data.get("i") == n
        and isinstance(data.get("url"), str)
        and isinstance(data.get("path"), (str, type(None)))
    ):
        return False
    mirrors, headers, checksum = data.get("mirrors", []), data.get("headers"), data.get("checksum")
    if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
        return False
    if isinstance(headers, dict):  # as versions before pairs wrote them
        headers = list(headers.items())
    if headers is not None and not (
        isinstance(headers, list)
        and all(
            isinstance(h, (list, tuple)) and len(h) == 2 and all(isinstance(x, str) for x in h)
            for h in headers
        )
    ):
        return False
    if checksum is not None:
        try:
            parse_checksum(checksum)
        except (ValueError, TypeError, AttributeError):
            return False
    return True


def redact_url(url: str) -> str:
    """The URL with any ``user:password@`` replaced, for reports and logs."""
    parts = _split_userinfo(url) if "@" in url else None
    return url if parts is None else f"{parts[0]}://***@{parts[2]}"


def strip_userinfo(url: str) -> str:
    """The URL without any ``user:password@`` (for a request that must not,
    or cannot, carry them)."""
    parts = _split_userinfo(url) if "@" in url else None
    return url if parts is None else f"{parts[0]}://{parts[2]}"


def redact_loose(url: str) -> str:
    """An invalid URL, with whatever may be a password hidden: all up to its
    last ``@`` (``user:pa/ss@host``, ``user:pa#ss@host`` do not parse, but
    the user meant a credential; hiding a query's ``@`` too costs nothing)."""
    scheme, sep, rest = url.partition("://")
    at = rest.rfind("@")
    return url if not sep or at < 0 else f"{scheme}://***@{rest[at + 1 :]}"


#: In a message: what may be a password, hidden even where a valid URL could
#: not hold it (a ``?`` or ``#`` in it); a query's ``@`` is hidden with it.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")


def redact_text(text: str) -> str:
    """Any ``scheme://user:password@`` inside a message, redacted."""
    return _USERINFO.sub(r"\1***@", text) if "@" in text else text


class RunState:
    """One output directory's record of its last run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / STATE_DIR
        self.ledger = Ledger()
        self._journal: IO[str] | None = None
        self._entries: IO[str] | None = None
        self._run: dict[str, Any] = {}
        self.run_id = ""
        #: the run stopped before its list was read to the end
        self.partial = False
        #: why the journal could not be written (a full disk), if it could not
        self.journal_error: str | None = None
        self._lock: IO[bytes] | None = None
        #: in a worker process (workers.py): the pipe each outcome also goes
        #: up, to the parent that keeps the run's ledger; a few KiB at a
        #: time (the journal has each at once)
        self.echo: int | None = None
        self._echoed: list[str] = []
        self._echo_size = 0

    # -- paths -------------------------------------------------------------
    @property
    def entries_path(self) -> Path:
        return self.dir / "entries.jsonl"

    @property
    def journal_path(self) -> Path:
        return self.dir / "journal.jsonl"

    @property
    def report_path(self) -> Path:
        return self.dir / "report.json"

    @property
    def run_path(self) -> Path:
        return self.dir / "run.json"

    def _check_dir(self) -> None:
        """The state folder must be a real folder of DIR: a symlink there (a
        planted one, or one left by mistake) would have the run write and
        delete its state files wherever it points."""
        try:
            st = os.lstat(self.dir)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise StateDirError(f"{str(self.dir)!r} is a symlink; not followed (remove it)")
        if not stat.S_ISDIR(st.st_mode):
            raise StateDirError(f"{str(self.dir)!r} exists and is not a folder (remove it)")

    def _make_dirs(self) -> None:
        self._check_dir()
        try:
            (self.dir / "parts").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateDirError(
                f"cannot create {str(self.dir / 'parts')!r}: {exc.strerror or exc}"
            ) from exc

    # -- a new run ---------------------------------------------------------
    def begin(
        self, settings: dict[str, Any] | None = None, origin: list[dict[str, Any]] | None = None
    ) -> None:
        """Start a new run: the previous run's entries and journal are dropped
        (its ``.part`` files and their metadata stay, so a rerun resumes).
        ``settings`` are the run's options that ``--retry`` keeps."""
        self._make_dirs()
        # the last report goes too: one that cannot be rewritten (a full disk)
        # must not be taken for this run's
        for path in (self.journal_path, self.entries_path, self.run_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for path in (self.report_path, self.report_path.with_name("report.json.tmp")):
            with contextlib.suppress(OSError):  # what is in the way shows when it is written
                path.unlink()
        # (as random as uuid4().hex, without importing uuid: 2 ms at every start)
        self.run_id = os.urandom(16).hex()
        self._run = {"version": 1, "id": self.run_id, "started": time.time(), "complete": False}
        if settings:
            self._run["settings"] = settings
        if origin:
            # where the entries come from, to read the rest of them again if
            # the run stops before they are all recorded (see unread_origin)
            self._run["origin"] = origin
        _atomic_write(self.run_path, json.dumps(self._run))
        self._entries = open(self.entries_path, "w", encoding="utf-8", errors=_LONE)  # noqa: SIM115

    def add_entry(self, data: dict[str, Any]) -> int:
        assert self._entries is not None
        i = self.ledger.add()
        data["i"] = i
        try:
            self._entries.write(_compact(data) + "\n")
        except OSError as exc:  # jobs are read back from this file: the run cannot start
            raise StateDirError(
                f"cannot write the run state {str(self.entries_path)!r}: {exc.strerror or exc}"
            ) from exc
        return i

    def entries_written(self) -> None:
        """The whole list is recorded: ``--retry`` may rely on it."""
        assert self._entries is not None
        self._entries.close()
        self._entries = None
        self._run.update(complete=True, entries=len(self.ledger))
        _atomic_write(self.run_path, json.dumps(self._run))
        self.partial = False

    def unread_origin(self) -> list[dict[str, Any]] | None:
        """The sources of a recorded run stopped before its list was all
        recorded (a ``kill -9`` while a long list was read), when known."""
        try:
            with open(self.run_path, encoding="utf-8") as f:
                run = json.load(f)
            origin = run.get("origin") if not run.get("complete", True) else None
        except (OSError, ValueError, AttributeError):
            return None
        return origin if isinstance(origin, list) and origin else None

    def more_entries(self) -> None:
        """Record more entries after those of a loaded, partial run; a torn
        last line (``kill -9`` mid-write, never loaded) goes first."""
        with open(self.entries_path, "rb+") as f:
            end = f.seek(0, os.SEEK_END)
            keep = end  # after the last newline, read back a block at a time
            while keep > 0:
                start = max(keep - 4096, 0)
                f.seek(start)
                cut = f.read(keep - start).rfind(b"\n")
                keep = start if cut < 0 else start + cut + 1
                if cut >= 0:
                    break
            if keep != end:
                f.truncate(keep)
        self._entries = open(self.entries_path, "a", encoding="utf-8", errors=_LONE)  # noqa: SIM115

    # -- continuing a run --------------------------------------------------
    def load(self) -> None:
        """Read a recorded run back (for ``--retry``); NoRunError when none."""
        self._check_dir()
        try:
            with open(self.run_path, encoding="utf-8") as f:
                self._run = json.load(f)
            self.run_id = str(self._run.get("id", ""))
            self.partial = not self._run.get("complete", True)
        except FileNotFoundError:
            raise NoRunError(f"no recorded run in {str(self.root)!r} (nothing to retry)") from None
        except (OSError, ValueError, AttributeError):
            raise self._damaged(self.run_path) from None
        if not self.entries_path.is_file():
            raise NoRunError(f"no recorded run in {str(self.root)!r} (nothing to retry)")
        self._make_dirs()
        try:
            for n, data in enumerate(self.iter_entries()):
                if not _is_entry(data, n):
                    raise ValueError(n)
                i = self.ledger.add()
                if data["path"] is None:
                    self.ledger.invalid.add(i)
        except ValueError:  # not JSON, not UTF-8, not an entry, out of order
            raise self._damaged(self.entries_path, len(self.ledger) + 1) from None
        if self._run.get("complete") is True:  # recorded whole: no torn last line
            with open(self.entries_path, "rb") as f:
                end = f.seek(0, os.SEEK_END)
                if end:
                    f.seek(end - 1)
                    if f.read(1) != b"\n":
                        raise self._damaged(self.entries_path, len(self.ledger) + 1)
        for rec in self.journalled():
            self.adopt(rec)

    def journal_size(self) -> int:
        """Where the next outcome will be journalled (every line is flushed)."""
        try:
            return self.journal_path.stat().st_size
        except OSError:
            return 0

    def journalled(self, since: int = 0) -> Iterator[dict[str, Any]]:
        """The journal's outcomes from byte ``since`` (a line's start), in
        order (later lines win)."""
        with contextlib.suppress(FileNotFoundError), open(self.journal_path, "rb") as f:
            f.seek(since)
            for line in f:
                try:
                    rec = json.loads(line)
                    if (
                        isinstance(rec, dict)
                        and isinstance(rec.get("i"), int)
                        and 0 <= rec["i"] < len(self.ledger)
                    ):
                        yield rec
                except ValueError:
                    continue  # a torn last line after kill -9

    def adopt(self, rec: dict[str, Any]) -> bool:
        """An outcome journalled elsewhere (a worker process, an earlier
        run), into the ledger; False for a line some other version wrote,
        or a torn one, which is left out."""
        try:
            i = rec["i"]
            self.ledger.set(i, rec["s"], rec["b"], rec["a"], rec["e"])
        except (KeyError, IndexError, TypeError, ValueError):
            return False
        if "p" in rec:
            self.ledger.paths[i] = rec["p"]
        return True

    def _damaged(self, path: Path, line: int | None = None) -> NoRunError:
        """A state file that is not what this program writes (edited, or
        cut by a crash of the machine): the run cannot be continued, which
        is said plainly rather than guessed around."""
        where = f"{path.name} line {line}" if line else path.name
        return NoRunError(
            f"the run recorded in {str(self.root)!r} cannot be continued: {where} in "
            f"{str(self.dir)!r} is damaged; run the list again"
        )

    def server_names(self) -> dict[tuple[str, str], str]:
        """The names servers gave entries of the recorded run, or of one
        before it (``--content-disposition``), by the entry's URL and
        list-derived path: a rerun gives each entry its own file again,
        whatever order the responses come in."""
        previous = RunState(self.root)
        found: dict[tuple[str, str], str] = {}
        try:
            previous.load()
            given = previous.ledger.paths
            for data in previous.iter_entries():
                # given in that run, else held for the entry from a run before
                name = given.get(data["i"]) or data.get("held")
                if name is not None and data.get("path") is not None:
                    found[(str(data["url"]), str(data["path"]))] = str(name)
        except (DownloaderError, OSError, ValueError, KeyError, TypeError):
            return {}
        return found

    def recorded_settings(self) -> dict[str, Any]:
        """The options the recorded run was started with ({} when unknown)."""
        try:
            self._check_dir()
            with open(self.run_path, encoding="utf-8") as f:
                found = json.load(f).get("settings")
        except (OSError, ValueError, AttributeError, StateDirError):
            return {}
        return found if isinstance(found, dict) else {}

    def recorded_id(self) -> str:
        """The id of the run recorded on disk ("" when none)."""
        try:
            with open(self.run_path, encoding="utf-8") as f:
                return str(json.load(f).get("id", ""))
        except (OSError, ValueError, AttributeError):
            return ""

    def iter_entries(self) -> Iterator[dict[str, Any]]:
        with open(self.entries_path, encoding="utf-8") as f:
            for line in f:
                if line.endswith("\n"):  # a torn last line after kill -9 is no entry
                    # (json.loads, less its two Python-level layers: twice per entry)
                    data, end = _decode(line)
                    if end < len(line) - 1 and line[end:].strip():
                        raise ValueError(f"extra data after an entry: {line[end:][:40]!r}")
                    yield data

    # -- as it happens -----------------------------------------------------
    def record(
        self,
        i: int,
        status: Status,
        nbytes: int,
        attempts: int,
        error: str | None,
        path: str | None = None,
    ) -> None:
        """Note an entry's outcome in memory and in the journal, at once.
        ``attempts`` are this call's: they add to those of earlier calls of
        the same recorded run (``--retry``), as requests started for it."""
        if error is not None:
            error = printable(redact_text(error))
        attempts += self.ledger.attempts[i]
        self.ledger.set(i, status, nbytes, attempts, error)
        err = "null" if error is None else _text(error)
        tail = ""
        if path is not None:
            self.ledger.paths[i] = path
            tail = ',"p":' + _text(path)
        # formatted by hand: this runs once per file, json.dumps of a dict costs more
        line = f'{{"i":{i},"s":"{status}","b":{nbytes},"a":{attempts},"e":{err}{tail}}}\n'
        if self.echo is not None:
            self._echoed.append(line)
            self._echo_size += len(line)
            if self._echo_size >= 3072:
                self.flush_echo()
        try:
            if self._journal is None:
                self._journal = self._open_journal()
            self._journal.write(line)
            # Flushed per line: batching saved ~2% on tiny files, but a line
            # held back (a duplicate's, an invalid entry's) made --retry after a
            # kill -9 start a second transfer into one .part.
            self._journal.flush()
        except OSError as exc:
            # A full disk must not end the run: the other downloads go on,
            # and the next outcome tries again (space may have been freed;
            # the torn line is closed first). An outcome not journalled makes
            # --retry check that entry again.
            self.journal_error = exc.strerror or str(exc)
            self._close_journal()

    def flush_echo(self) -> None:
        if self._echoed and self.echo is not None:
            data = "".join(self._echoed).encode("utf-8", _LONE)
            self._echoed.clear()
            self._echo_size = 0
            try:
                write_all(self.echo, data)
            except OSError:  # the parent is gone: the journal still has them
                self.echo = None

    def _open_journal(self) -> IO[str]:
        self.dir.mkdir(parents=True, exist_ok=True)
        journal = open(self.journal_path, "a", encoding="utf-8", errors=_LONE)  # noqa: SIM115
        try:
            if journal.tell() > 0:
                with open(self.journal_path, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    torn = f.read(1) != b"\n"
                if torn:  # a line cut by a kill -9 or a full disk: ours starts on a new one
                    journal.write("\n")
        except OSError:
            journal.close()
            raise
        return journal

    def _close_journal(self) -> None:
        journal, self._journal = self._journal, None
        if journal is not None:
            try:
                journal.close()
            except OSError as exc:
                if self.journal_error is None:
                    self.journal_error = exc.strerror or str(exc)

    def lock(self) -> None:
        """Hold DIR for this run. Two runs in one folder would write each
        other's ``.part`` files and state: one could rename the other's
        partial file to a final name. The lock is the kernel's (flock), so
        a process that dies, even by kill -9, lets go of it."""
        if fcntl is None or self._lock is not None:
            return
        self._make_dirs()
        handle = open(self.dir / "lock", "a+b")  # noqa: SIM115
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StateDirError(
                f"another downloader run is using {str(self.root)!r}: wait for it to end, "
                "or stop it (its state and files are in that folder)"
            ) from None
        except OSError:  # a file system without locks (some NFS): run unlocked, as before
            handle.close()
            return
        self._lock = handle

    def close(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()  # closing the file releases the flock
        self._close_journal()
        entries, self._entries = self._entries, None
        if entries is not None:
            with contextlib.suppress(OSError):  # a full disk: the reader has said so already
                entries.close()

    # -- the results -------------------------------------------------------
    def record_of(self, data: dict[str, Any]) -> Record:
        i = data["i"]
        led = self.ledger
        return Record(
            url=redact_url(data["url"]),
            path=led.paths.get(i, data.get("path")),
            status=led.outcome(i),
            bytes=led.bytes[i],
            attempts=led.attempts[i],
            error=led.errors.get(i) if led.status[i] else NOT_STARTED,
            line=data.get("line"),
        )

    def records(self) -> Iterator[tuple[dict[str, Any], Record]]:
        """Every recorded entry with its outcome, in list order (one pass)."""
        if self.entries_path.is_file():
            for data in self.iter_entries():
                yield data, self.record_of(data)

    def write_report(
        self, records: Iterable[Record], summary: Callable[[], dict[str, Any]]
    ) -> None:
        """Stream the report to disk: memory does not grow with the run.
        ``summary`` is asked for once every record is written (it may count
        them as they pass)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.write_report_at(self.report_path, records, summary)

    def copy_report(self, extra: Path) -> None:
        """``--report PATH``: a copy of the run's own report, made after that
        one is safe, so a bad PATH loses nothing."""
        with open(self.report_path, encoding="utf-8") as src, _replacing(extra) as dst:
            dst.write(src.read())

    @staticmethod
    def write_report_at(
        path: Path, records: Iterable[Record], summary: Callable[[], dict[str, Any]]
    ) -> None:
        """The report at ``path``, whole or not at all."""
        with _replacing(path) as f:
            f.write('{"entries": [')
            first = True
            for record in records:
                f.write("\n  " if first else ",\n  ")
                first = False
                f.write(_text(record.to_dict()))
            f.write("\n],\n" if not first else "],\n")
            f.write('"summary": ' + json.dumps(summary(), indent=2, ensure_ascii=False) + "}\n")

    # -- metadata of .part files ------------------------------------------
    def _part_meta(self, relpath: str) -> Path:
        import hashlib  # (parts of big files only: not at every start)

        digest = hashlib.sha1(relpath.encode("utf-8")).hexdigest()
        return self.dir / "parts" / f"{digest}.json"

    def save_part(self, relpath: str, meta: dict[str, Any]) -> None:
        _atomic_write(self._part_meta(relpath), json.dumps(meta))

    def load_part(self, relpath: str) -> dict[str, Any] | None:
        try:
            with open(self._part_meta(relpath), encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) and meta.get("path") == relpath else None

    def drop_part(self, relpath: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._part_meta(relpath).unlink()
