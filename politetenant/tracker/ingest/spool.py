"""An append-only file of events the database could not take yet.

Each worker owns one file (held with an exclusive flock); a worker that starts later adopts files
whose owner died. Lines are JSON, one event each; a torn last line from a crash is skipped, and
replay is idempotent because every event carries a unique id. Before a replay the worker sets its
file aside (``seal_own``) and appends to a fresh one, so events spooled while the replay runs are
never truncated with the file being replayed.

The directory has a budget (``max_bytes``, all workers' files together): an append that would go
beyond it raises ``SpoolFull`` instead of writing, unless it is the last write before the process
exits (``beyond_budget``), which must never lose what was accepted. Every method here waits on the
disk; the ingest buffer calls them on a thread of their own, one at a time, never on the event loop.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from politetenant.tracker.storage.rows import Event

log = logging.getLogger(__name__)


class SpoolFull(Exception):
    """The spool directory holds its budget (``spool_max_bytes``) already: nothing was written."""


def encode_event(event: Event) -> bytes:
    fields = [v.hex() if isinstance(v, bytes) else v for v in event]
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def _unhex(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value)


def decode_event(line: bytes) -> Event | None:
    try:
        f = json.loads(line)
        return Event(
            bytes.fromhex(f[0]), bytes.fromhex(f[1]), int(f[2]), f[3], int(f[4]), f[5], _unhex(f[6]),
            _unhex(f[7]), f[8], f[9], f[10], int(f[11]), f[12],
        )  # fmt: skip
    except (ValueError, TypeError, IndexError, KeyError):
        return None


class SpoolFile:
    """One spool file held open and locked by this process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_APPEND, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def close(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


class Spool:
    """This worker's spool plus any orphaned spools it can adopt, all under one directory."""

    def __init__(self, directory: str | os.PathLike[str], worker_tag: str, max_bytes: int | None = None) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.worker_tag = worker_tag
        self.own = SpoolFile(self.directory / f"spool-{worker_tag}.jsonl")
        self._adopted: dict[Path, SpoolFile] = {}

    def seal_own(self) -> None:
        """Set this worker's non-empty file aside for replay (still locked, so no other worker takes
        it; adopted after a crash like any orphan) and start a new, empty one for appends."""
        if self.own.size() == 0:
            return
        sealed = self.directory / f"spool-{self.worker_tag}.{time.time_ns()}.jsonl"
        os.rename(self.own.path, sealed)
        self.own.path = sealed
        self._adopted[sealed] = self.own
        self.own = SpoolFile(self.directory / f"spool-{self.worker_tag}.jsonl")

    def append(self, events: Sequence[Event], *, beyond_budget: bool = False) -> None:
        """Write and fsync: after this returns, the events survive a crash of this process.

        Raises SpoolFull, having written nothing, when the directory would grow past ``max_bytes``
        (unless ``beyond_budget``: the final write on shutdown)."""
        data = b"".join(encode_event(e) for e in events)
        if not beyond_budget and self.max_bytes is not None and self.size_bytes() + len(data) > self.max_bytes:
            raise SpoolFull(f"the spool holds its budget of {self.max_bytes} bytes")
        view = memoryview(data)
        while view:
            written = os.write(self.own.fd, view)
            view = view[written:]
        os.fsync(self.own.fd)

    def size_bytes(self) -> int:
        total = 0
        for path in self.directory.glob("spool-*.jsonl"):
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                continue
        return total

    def _adopt(self) -> None:
        """Lock spool files whose worker is gone; they stay ours until drained."""
        for path in sorted(self.directory.glob("spool-*.jsonl")):
            if path == self.own.path or path in self._adopted:
                continue
            try:
                self._adopted[path] = SpoolFile(path)
            except (BlockingIOError, FileNotFoundError):
                continue  # a live worker owns it, or it was just drained

    def pending(self) -> bool:
        return self.size_bytes() > 0

    def drain_batches(self, batch_size: int) -> Iterator[tuple[list[Event], SpoolFile]]:
        """Yield stored events in batches, own file first; call ``done(file)`` after storing a file."""
        self._adopt()
        for spool_file in [self.own, *self._adopted.values()]:
            if spool_file.size() == 0:
                if spool_file is not self.own:
                    self._remove(spool_file)
                continue
            batch: list[Event] = []
            skipped = 0
            with open(spool_file.path, "rb") as fh:
                for line in fh:
                    event = decode_event(line)
                    if event is None:
                        skipped += 1
                        continue
                    batch.append(event)
                    if len(batch) >= batch_size:
                        yield batch, spool_file
                        batch = []
            if skipped:
                log.warning("spool %s: skipped %d torn line(s)", spool_file.path.name, skipped)
            yield batch, spool_file

    def done(self, spool_file: SpoolFile) -> None:
        """Everything in ``spool_file`` is stored: empty it (own) or delete it (adopted)."""
        if spool_file is self.own:
            os.ftruncate(self.own.fd, 0)
            os.fsync(self.own.fd)
        else:
            self._remove(spool_file)

    def _remove(self, spool_file: SpoolFile) -> None:
        spool_file.path.unlink(missing_ok=True)
        spool_file.close()
        self._adopted.pop(spool_file.path, None)

    def close(self) -> None:
        empty = self.own.size() == 0
        path = self.own.path
        self.own.close()
        for adopted in list(self._adopted.values()):
            adopted.close()
        self._adopted.clear()
        if empty:
            path.unlink(missing_ok=True)
