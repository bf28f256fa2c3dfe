"""The audit anchor file: written whole by concurrent workers, never failing the request it records,
and read strictly, so that a deleted, missing or rewritten entry is named."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from politetenant.crypto import Keyring, KeySet
from politetenant.tracker.privacy import api_audit, audit
from politetenant.tracker.privacy.audit import Anchored, AnchorError, compare_anchor, parse_anchor
from politetenant.tracker.storage import open_store
from politetenant.tracker.storage.base import Store

KEYRING = Keyring("acme", [KeySet(1, bytes(32), bytes(range(32)), bytes(range(1, 33)))])
H = {i: bytes([i]) * 32 for i in range(1, 10)}  # entry id -> a stand-in hash


def _write_many(path: str, worker: int, count: int) -> None:
    for n in range(count):
        audit.append_anchor(path, worker * 1_000_000 + n, os.urandom(32))


def test_concurrent_worker_processes_never_interleave_their_lines(tmp_path: Path) -> None:
    path = str(tmp_path / "audit.anchor")
    with ProcessPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(_write_many, path, worker, 2_000) for worker in range(4)]:
            future.result()
    anchored = parse_anchor(path)  # any torn or merged line would be malformed
    assert anchored.lines == len(anchored.hashes) == 8_000 and not anchored.conflicting
    assert os.stat(path).st_mode & 0o777 == 0o600


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(f"sqlite:///{tmp_path}/audit.db")
    await s.connect()
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()
        audit.use_anchor(None)


async def test_an_unwritable_anchor_is_logged_and_counted_but_the_entry_is_stored(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    failures: list[None] = []
    audit.use_anchor(str(tmp_path / "no-such-directory" / "audit.anchor"), on_failure=lambda: failures.append(None))
    subject = b"\x42" * 32
    with caplog.at_level(logging.WARNING):
        entry_id = await audit.record(
            store,
            KEYRING,
            ("abc123", "privacy"),
            audit.Action.SUBJECT_ERASE,
            subject_index=subject,
            detail="messages=1",
        )
    assert entry_id == 1 and len(failures) == 1
    assert (await audit.verify_chain(store, KEYRING)).ok
    [warning] = [r.getMessage() for r in caplog.records if r.name == audit.__name__]
    assert "entry id 1 stored but not anchored: No such file or directory" in warning
    assert subject.hex() not in warning and "messages=1" not in warning and "abc123" not in warning


async def test_an_entry_recorded_without_an_anchor_writes_no_file(store: Store, tmp_path: Path) -> None:
    audit.use_anchor(str(tmp_path / "audit.anchor"))
    await audit.record(store, KEYRING, audit.SYSTEM_ACTOR, audit.Action.PURGE)
    audit.use_anchor(None)
    await audit.record(store, KEYRING, audit.SYSTEM_ACTOR, audit.Action.PURGE)
    assert [line.split()[0] for line in (tmp_path / "audit.anchor").read_text().splitlines()] == ["1"]
    check = await audit.verify_chain(store, KEYRING, str(tmp_path / "audit.anchor"))
    assert check.ok and check.anchor.unanchored == 1


def test_a_missing_anchor_file_has_no_lines_yet(tmp_path: Path) -> None:
    assert parse_anchor(str(tmp_path / "absent")) == Anchored(0, {}, frozenset())


@pytest.mark.parametrize(
    "bad",
    [
        "3 " + "AB" * 32 + "\n",  # upper case: not what the tracker writes
        "3  " + "ab" * 32 + "\n",
        "3 " + "ab" * 31 + "\n",
        "\n",
        "3 " + "ab" * 32,  # the last line lacks its newline: torn
        "-3 " + "ab" * 32 + "\n",
    ],
)
def test_a_malformed_line_is_refused_by_its_number_never_its_text(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "audit.anchor"
    path.write_text("1 " + "aa" * 32 + "\n" + "2 " + "bb" * 32 + "\n" + bad)
    with pytest.raises(AnchorError) as raised:
        parse_anchor(str(path))
    assert str(raised.value) == f"audit anchor {path} line 3: malformed; every line is '<entry id> <64 hex digits>'"


def test_an_id_anchored_twice_with_different_hashes_cannot_match(tmp_path: Path) -> None:
    path = tmp_path / "audit.anchor"
    path.write_text(f"1 {H[1].hex()}\n2 {H[2].hex()}\n2 {H[3].hex()}\n1 {H[1].hex()}\n")
    anchored = parse_anchor(str(path))
    assert anchored.lines == 4 and anchored.conflicting == {2}
    assert compare_anchor(anchored, {1: H[1], 2: H[2]}, 2).first_mismatch_id == 2


def _anchored(*ids: int) -> Anchored:
    return Anchored(len(ids), {i: H[i] for i in ids}, frozenset())


def test_the_newest_anchored_entry_missing_is_a_truncation_counted_from_the_anchor() -> None:
    check = compare_anchor(_anchored(1, 2, 3, 4, 5), {1: H[1], 2: H[2]}, 2)
    assert not check.ok and (check.truncated_after, check.truncated, check.newest_anchored_id) == (2, 3, 5)
    # The database emptied: everything anchored is gone, after "entry 0".
    check = compare_anchor(_anchored(1, 2), {}, None)
    assert (check.truncated_after, check.truncated) == (0, 2)


def test_an_anchored_entry_missing_before_the_newest_stored_one_is_named() -> None:
    check = compare_anchor(_anchored(1, 2, 3, 4), {1: H[1], 2: H[2], 4: H[4]}, 6)
    assert not check.ok and check.truncated_after is None and check.first_missing_id == 3


def test_a_stored_hash_other_than_the_anchored_one_is_a_rewrite() -> None:
    check = compare_anchor(_anchored(1, 2, 3), {1: H[1], 2: H[7], 3: H[8]}, 3)
    assert not check.ok and check.first_mismatch_id == 2 and check.truncated_after is None


def test_an_anchor_that_matches_is_ok_and_says_how_much_it_covers() -> None:
    check = compare_anchor(_anchored(1, 2, 3), {1: H[1], 2: H[2], 3: H[3]}, 5, unanchored=2)
    assert check.ok and check.lines == 3 and check.unanchored == 2
    code, message = api_audit.verdict_text(audit.ChainCheck(5, None, anchor=check), "/var/polite/audit.anchor")
    assert code == 0 and message.splitlines() == [
        "audit log intact: 5 entries, hash chain verified",
        "anchor /var/polite/audit.anchor: 3 lines, every anchored entry stored as anchored",
        "2 entries newer than the anchor's newest line are not anchored",
    ]


def test_without_an_anchor_the_verdict_says_truncation_cannot_be_detected() -> None:
    code, message = api_audit.verdict_text(audit.ChainCheck(5, None), None)
    assert code == 0 and message.splitlines()[1] == (
        "no audit anchor configured (audit_anchor_path): deletion of the newest entries cannot be detected without one"
    )
    code, message = api_audit.verdict_text(audit.ChainCheck(5, 3, broken_position=3), None)
    assert code == 1 and message.startswith("audit log broken at entry id 3 (entry 3 in order)")
