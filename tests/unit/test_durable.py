"""Files that must outlive a power loss: their bytes fsynced, then their directory, before they count.

A power loss cannot be staged here, so the tests watch the system calls (``os.fsync``, ``os.replace``)
in the order they are made, the way a crash-consistency checker (ALICE, "All File Systems Are Not
Created Equal", OSDI 2014) reads a trace: data fsynced before the rename that publishes it, the
directory fsynced after the name appeared, all before the call returns to whoever counts on it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from politetenant.crypto.local_provider import LocalKeyProvider
from politetenant.durable import replace_durably
from politetenant.tracker.ingest.spool import Spool
from politetenant.tracker.storage.rows import Event, EventKind

Trace = list[tuple[str, str]]


@pytest.fixture
def trace(monkeypatch: pytest.MonkeyPatch) -> Trace:
    """Every fsync (of a directory: "fsync dir", of a file: "fsync file") and replace, with its path."""
    calls: Trace = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        calls.append(("fsync dir" if is_dir else "fsync file", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        real_replace(src, dst)
        calls.append(("replace", os.fspath(dst)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return calls


def after(calls: Trace, first: tuple[str, str], then: tuple[str, str]) -> bool:
    return first in calls and then in calls[calls.index(first) + 1 :]


def test_a_replaced_file_is_fsynced_renamed_and_its_directory_fsynced(tmp_path: Path, trace: Trace) -> None:
    target = tmp_path / "keys.json"
    target.write_bytes(b"old")
    replace_durably(target, b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]  # no temporary file left
    file_synced = next(call for call in trace if call[0] == "fsync file")
    assert after(trace, file_synced, ("replace", str(target)))  # whole before it is published
    assert after(trace, ("replace", str(target)), ("fsync dir", str(tmp_path)))  # and the rename kept


def test_a_replace_that_fails_keeps_the_old_content_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "keys.json"
    target.write_bytes(b"old")

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        replace_durably(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]


def test_the_local_key_file_survives_a_power_loss_after_a_rotation(tmp_path: Path, trace: Trace) -> None:
    path = tmp_path / "keys" / "acme.json"
    provider = LocalKeyProvider(path)
    provider.load()
    trace.clear()
    assert [s.version for s in provider.rotate()] == [1, 2]
    assert after(trace, ("replace", str(path)), ("fsync dir", str(path.parent)))


def event(n: int) -> Event:
    return Event(
        n.to_bytes(16, "big"), b"\x01" * 12, EventKind.OPEN, None, 1_700_000_000_000 + n, None, None, None,
        "iOS", "mobile", "Apple Mail", 0, None,
    )  # fmt: skip


def test_spool_files_have_their_names_fsynced_before_their_events_count(tmp_path: Path, trace: Trace) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory, "w0")
    own = directory / "spool-w0.spool"
    assert ("fsync dir", str(directory)) in trace  # the file appends go to exists after a power loss

    trace.clear()
    spool.journal([event(n) for n in range(3)], upto=3)  # returns: the 3 events count as journaled
    (segment,) = [p for p in directory.iterdir() if p != own]
    assert trace == [("fsync file", str(segment)), ("fsync dir", str(directory))]

    spool.append([event(3)])
    trace.clear()
    spool.seal_own()  # set aside for a replay: under a new name, and a new file for appends
    assert trace == [("fsync dir", str(directory))]
    spool.close()


@pytest.mark.parametrize("write", [lambda s: s.journal([event(0)], upto=1), lambda s: s.seal_own()])
def test_spool_writes_that_cannot_fsync_their_directory_fail_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write: Callable[[Spool], None]
) -> None:
    spool = Spool(tmp_path, "w0")
    spool.append([event(5)])
    real_fsync = os.fsync

    def directory_refused(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", directory_refused)
    with pytest.raises(OSError, match="Input/output error"):
        write(spool)
    spool.close()
