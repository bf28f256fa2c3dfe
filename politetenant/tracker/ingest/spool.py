"""Events on disk: what the database could not take yet, and a journal of what waits in memory.

Each worker writes files of its own (held with an exclusive flock); a worker that starts later
adopts files whose owner died and replays them. Records are framed binary (``framing``); files left
by the previous version (JSON lines) are read too. Replay is idempotent because every event carries
a unique id, so a file replayed twice, or holding events also stored from memory, counts once.

Two kinds of file, both replayed by whoever adopts them after a crash:

- the outage spool (``append``): events that left memory because the database refused them. Before a
  replay the worker sets this file aside (``seal_own``) and appends to a fresh one, so events spooled
  while the replay runs are never truncated with the file being replayed.
- journal segments (``journal``): events that have waited too long in memory while the database
  lags. They stay in memory and go to the database from there; the segment is deleted (``retire``)
  once every event in it has left memory. One segment per journal write: a write happens at most
  once per two flush intervals, so that is a file a second at most, and deleting a whole file needs
  no bookkeeping inside it. Under memory pressure ``evict_journal`` turns the live segments into
  files to replay, and the events can leave memory without being written again.

The directory has a budget (``max_bytes``, all workers' files together): a write that would go
beyond it raises ``SpoolFull`` instead of writing, unless it is the last write before the process
exits (``beyond_budget``), which must never lose what was accepted. Every method here waits on the
disk; the ingest buffer calls them on a thread of their own, one at a time, never on the event loop.

A file's name is made durable (``durable.fsync_directory``) before anything written to it counts as
written: its own fsync keeps its bytes through a power loss, not its entry in the directory.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from politetenant.durable import fsync_directory
from politetenant.tracker.ingest.framing import MAGIC, encode_records, read_events
from politetenant.tracker.storage.rows import Event

log = logging.getLogger(__name__)

PATTERNS = ("spool-*.spool", "spool-*.jsonl")  # this version's files, and the previous version's


class SpoolFull(Exception):
    """The spool directory holds its budget (``spool_max_bytes``) already: nothing was written."""


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
        self.upto = 0  # a journal segment: the ingest sequence number just past its last event

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def write_durably(self, record: bytes) -> int:
        """Append ``record`` (after ``MAGIC`` if the file is empty) and fsync; returns the bytes written."""
        data = MAGIC + record if self.size() == 0 else record
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        os.fsync(self.fd)
        return len(data)

    def close(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


class Spool:
    """This worker's spool files plus any orphaned ones it can adopt, all under one directory."""

    def __init__(self, directory: str | os.PathLike[str], worker_tag: str, max_bytes: int | None = None) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.worker_tag = worker_tag
        self.own = SpoolFile(self.directory / f"spool-{worker_tag}.spool")
        fsync_directory(self.directory)
        self._adopted: dict[Path, SpoolFile] = {}
        self._journal: list[SpoolFile] = []  # live segments, oldest first
        self._segments = itertools.count(1)
        self.bytes_written = 0  # what this process wrote (benchmarks, tests)
        self.events_read = 0  # what it read back to replay

    def seal_own(self) -> None:
        """Set this worker's non-empty file aside for replay (still locked, so no other worker takes
        it; adopted after a crash like any orphan) and start a new, empty one for appends."""
        if self.own.size() == 0:
            return
        sealed = self.directory / f"spool-{self.worker_tag}.{time.time_ns()}.spool"
        os.rename(self.own.path, sealed)
        self.own.path = sealed
        self._adopted[sealed] = self.own
        self.own = SpoolFile(self.directory / f"spool-{self.worker_tag}.spool")
        fsync_directory(self.directory)  # the set-aside name and the new file's, at once

    def _record_within_budget(self, events: Sequence[Event], beyond_budget: bool) -> bytes:
        record = encode_records(events)
        if not beyond_budget and self.max_bytes is not None and self.size_bytes() + len(record) > self.max_bytes:
            raise SpoolFull(f"the spool holds its budget of {self.max_bytes} bytes")
        return record

    def append(self, events: Sequence[Event], *, beyond_budget: bool = False) -> None:
        """Write and fsync events that leave memory: after this returns, they survive a crash of
        this process and are replayed from here.

        Raises SpoolFull, having written nothing, when the directory would grow past ``max_bytes``
        (unless ``beyond_budget``: the final write on shutdown)."""
        self.bytes_written += self.own.write_durably(self._record_within_budget(events, beyond_budget))

    def journal(self, events: Sequence[Event], upto: int) -> None:
        """Write and fsync events that stay in memory, in a new segment; ``upto`` is the caller's
        sequence number just past the last of them, for ``retire``. Raises SpoolFull like ``append``."""
        record = self._record_within_budget(events, False)
        # Unique across restarts too: a container's process often gets the same pid (hence worker tag)
        # again, and a dead predecessor's segment of the same name may still wait to be replayed.
        name = f"spool-{self.worker_tag}.j{time.time_ns()}-{next(self._segments)}.spool"
        segment = SpoolFile(self.directory / name)
        try:
            self.bytes_written += segment.write_durably(record)
            fsync_directory(self.directory)
        except OSError:
            segment.path.unlink(missing_ok=True)
            segment.close()
            raise
        segment.upto = upto
        self._journal.append(segment)

    def retire(self, left_upto: int) -> None:
        """Events before sequence number ``left_upto`` have left memory (stored, or appended to the
        outage spool): delete the journal segments that hold nothing else."""
        while self._journal and self._journal[0].upto <= left_upto:
            segment = self._journal.pop(0)
            segment.path.unlink(missing_ok=True)  # before the unlock: no other worker adopts it meanwhile
            segment.close()

    def evict_journal(self) -> None:
        """Every live journal segment becomes a file to replay: its events may leave memory unstored."""
        for segment in self._journal:
            self._adopted[segment.path] = segment
        self._journal.clear()

    def size_bytes(self) -> int:
        total = 0
        for pattern in PATTERNS:
            for path in self.directory.glob(pattern):
                try:
                    total += path.stat().st_size
                except FileNotFoundError:
                    continue
        return total

    def _adopt(self) -> None:
        """Lock spool files whose worker is gone; they stay ours until drained."""
        live = {self.own.path, *self._adopted, *(s.path for s in self._journal)}
        for path in sorted(p for pattern in PATTERNS for p in self.directory.glob(pattern)):
            if path in live:
                continue
            try:
                self._adopted[path] = SpoolFile(path)
            except (BlockingIOError, FileNotFoundError):
                continue  # a live worker owns it, or it was just drained

    def pending(self) -> bool:
        """Something to replay: any spool file but this worker's live journal segments."""
        return self.size_bytes() > sum(s.size() for s in self._journal)

    def drain_batches(self, batch_size: int) -> Iterator[tuple[list[Event], SpoolFile]]:
        """Yield stored events in batches, own file first; call ``done(file)`` after storing a file."""
        self._adopt()
        for spool_file in [self.own, *self._adopted.values()]:
            if spool_file.size() == 0:
                if spool_file is not self.own:
                    self._remove(spool_file)
                continue
            batch: list[Event] = []
            for events in read_events(spool_file.path):
                self.events_read += len(events)
                batch.extend(events)
                while len(batch) >= batch_size:
                    yield batch[:batch_size], spool_file
                    del batch[:batch_size]
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
        """Release every file; journal segments still live stay on disk, for the next start to replay."""
        empty = self.own.size() == 0
        path = self.own.path
        self.own.close()
        for spool_file in [*self._adopted.values(), *self._journal]:
            spool_file.close()
        self._adopted.clear()
        self._journal.clear()
        if empty:
            path.unlink(missing_ok=True)
