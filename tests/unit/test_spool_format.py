"""The spool's files: binary records that survive a torn write, old JSON lines still read, journal
segments that vanish once their events are stored and are replayed when they are not."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from politetenant.tracker.ingest.framing import (
    MAGIC,
    RECORD_EVENTS,
    encode_event,
    encode_record,
    read_binary,
    read_events,
)
from politetenant.tracker.ingest.spool import Spool, SpoolFull
from politetenant.tracker.storage.rows import Event, EventKind


def event(n: int, kind: EventKind = EventKind.OPEN) -> Event:
    link = n % 5 if kind is EventKind.CLICK else None
    return Event(
        n.to_bytes(16, "big"), b"\x01" * 12, kind, link, 1_700_000_000_000 + n, "IE" if n % 2 else None,
        b"\x00\x02sealed-region" if n % 3 else None, b"\x00\x01sealed-city", "iOS", "mobile", "Apple Mail",
        n % 2, 1234 if kind is EventKind.READ else None,
    )  # fmt: skip


def events_in(path: Path) -> list[Event]:
    return [e for chunk in read_events(path) for e in chunk]


def test_records_round_trip_every_field_as_stored(tmp_path: Path) -> None:
    written = [event(n, kind) for n in range(40) for kind in EventKind]
    path = tmp_path / "a.spool"
    path.write_bytes(MAGIC + encode_record(written[:50]) + encode_record(written[50:]) + encode_record([]))
    read = events_in(path)
    assert read == written
    assert all(type(e.kind) is int for e in read)  # plain values: what the database drivers take


def test_a_torn_last_record_is_skipped_and_the_ones_before_it_kept(tmp_path: Path) -> None:
    path = tmp_path / "a.spool"
    whole, torn = encode_record([event(n) for n in range(10)]), encode_record([event(n) for n in range(10, 20)])
    for cut in (1, 7, len(torn) - 1):  # inside the header, inside the payload, one byte short
        path.write_bytes(MAGIC + whole + torn[:cut])
        assert events_in(path) == [event(n) for n in range(10)], cut


def test_a_record_whose_checksum_fails_is_not_replayed(tmp_path: Path) -> None:
    path = tmp_path / "a.spool"
    good, bad = encode_record([event(1)]), bytearray(encode_record([event(2)]))
    bad[-3] ^= 0xFF
    path.write_bytes(MAGIC + good + bytes(bad))
    assert events_in(path) == [event(1)]
    forged = b"\x00\x00\x00\x02" + zlib.crc32(b"N.").to_bytes(4, "big") + b"N."  # valid CRC, not events
    path.write_bytes(MAGIC + good + forged)
    assert events_in(path) == [event(1)]


def test_a_large_write_is_several_records_read_back_whole_and_in_order(tmp_path: Path) -> None:
    """A journal write of many events is cut into records (so encoding it lets the event loop run
    between them); a reader sees one run of events, as if it were one record."""
    spool = Spool(tmp_path, "w0")
    written = [event(n, kind) for n in range(RECORD_EVENTS) for kind in (EventKind.OPEN, EventKind.CLICK)]
    spool.journal(written, upto=len(written))
    (segment,) = tmp_path.glob("spool-w0.j*.spool")
    with open(segment, "rb") as fh:
        fh.read(len(MAGIC))
        records = [len(events) for events in read_binary(fh)]
    assert records == [RECORD_EVENTS, RECORD_EVENTS]
    assert events_in(segment) == written
    spool.close()


def test_json_lines_of_the_previous_version_are_read_with_a_torn_line_skipped(tmp_path: Path) -> None:
    path = tmp_path / "spool-old.jsonl"
    written = [event(n, kind) for n in range(5) for kind in EventKind]
    path.write_bytes(b"".join(map(encode_event, written)) + b'["deadbeef", "torn')
    assert events_in(path) == written


def test_a_journal_segment_is_deleted_once_its_events_have_left_memory(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "w0")
    spool.journal([event(n) for n in range(10)], upto=10)
    spool.journal([event(n) for n in range(10, 15)], upto=15)
    assert len(list(tmp_path.glob("spool-w0.j*.spool"))) == 2
    assert not spool.pending()  # the worker's own journal is not something to replay
    spool.retire(12)
    assert [len(events_in(p)) for p in tmp_path.glob("spool-w0.j*.spool")] == [5]
    spool.retire(15)
    assert not list(tmp_path.glob("spool-w0.j*.spool")) and spool.size_bytes() == 0
    spool.close()


def test_evicted_or_orphaned_journal_segments_are_replayed(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "w0")
    spool.journal([event(n) for n in range(10)], upto=10)
    spool.evict_journal()  # the buffer was full: these events left memory unstored
    assert spool.pending()
    assert [e for batch, _ in spool.drain_batches(4) for e in batch] == [event(n) for n in range(10)]
    spool.journal([event(n) for n in range(10, 13)], upto=13)
    spool.close()  # killed with the journal live
    successor = Spool(tmp_path, "w1")
    replayed = []
    for batch, spool_file in successor.drain_batches(100):
        replayed += batch
        successor.done(spool_file)
    assert replayed[-3:] == [event(n) for n in range(10, 13)]
    successor.close()


def test_a_journal_write_beyond_the_budget_writes_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "w0", max_bytes=len(MAGIC) + len(encode_record([event(1)])))
    with pytest.raises(SpoolFull):
        spool.journal([event(1), event(2)], upto=2)
    assert spool.size_bytes() == 0 and not list(tmp_path.glob("*.j*.spool"))
    spool.journal([event(1)], upto=1)
    assert spool.size_bytes() == spool.max_bytes
    spool.close()
