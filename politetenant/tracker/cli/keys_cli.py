"""``polite-tracker purge``, ``reseal`` and ``keys rotate``: the commands behind retention and rotation.

Each returns an exit code and prints what it did (progress lines, then a summary) to stdout.
Errors the caller can act on (a missing key file, bad key material, an unreachable database)
propagate as the exceptions ``cli.main`` already maps to exit codes (KeyMaterialError: 2,
StorageUnavailable: 3).

Rotation order, for the local provider (the operator does the same with Vault):
``keys rotate`` adds a version to the key file; running trackers loaded their keys at start and keep
sealing and signing with the old version until they restart, so restart them (the operator rolls
the Deployment); then ``reseal`` moves old rows to the new version and names the versions whose DEK
can be retired. Old token keys stay: last year's beacons must still count.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import time
from typing import TextIO

from politetenant.crypto import KeyMaterialError, KeyProvider, Keyring, LocalKeyProvider, provider_from_url
from politetenant.settings import TrackerSettings
from politetenant.tracker.privacy import audit
from politetenant.tracker.privacy.reseal import ResealProgress, ResealResult, reseal
from politetenant.tracker.privacy.retention import PurgeProgress, PurgeResult, purge
from politetenant.tracker.storage import Store, open_store

EXIT_OK = 0
EXIT_UNREADABLE = 1  # reseal finished, but some values did not open: look before retiring a version
PROGRESS_EVERY_SECONDS = 5.0


class _Throttle:
    """Print a progress line at most every few seconds, so tens of millions of rows stay readable."""

    def __init__(self, out: TextIO, every: float) -> None:
        self.out = out
        self.every = every
        self._next = time.monotonic() + every

    def __call__(self, line: str) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.every
            print(line, file=self.out, flush=True)


async def _open(db: str) -> Store:
    store = open_store(db)
    await store.connect()
    try:
        await store.migrate()  # as `token create` does: the audit table must exist
    except BaseException:
        await store.close()
        raise
    return store


def _existing_provider(keys_url: str) -> KeyProvider:
    """The key provider of ``keys_url``, refusing a local key file that does not exist yet."""
    provider = provider_from_url(keys_url)
    # load() would create fresh keys, under which nothing stored opens: never what these commands want.
    if isinstance(provider, LocalKeyProvider) and not provider.path.exists():
        raise KeyMaterialError(f"{provider.describe()}: no key file (the tracker creates version 1 at first start)")
    return provider


def _keyring(keys_url: str, settings: TrackerSettings) -> Keyring:
    return Keyring(settings.tenant_id, _existing_provider(keys_url).load())


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- keys rotate -----------------------------------------------------------------------------------
def rotate_keys(db: str, keys_url: str, settings: TrackerSettings, *, out: TextIO | None = None) -> int:
    """Add a key version, audit it, print the new version and what to do next."""
    return asyncio.run(_rotate(db, keys_url, settings, out or sys.stdout))


async def _rotate(db: str, keys_url: str, settings: TrackerSettings, out: TextIO) -> int:
    provider = _existing_provider(keys_url)
    store = await _open(db)  # before rotating: an unreachable database fails with the keys untouched
    try:
        keyring = Keyring(settings.tenant_id, provider.rotate())
        version = keyring.current.version
        await audit.record(
            store, keyring, audit.SYSTEM_ACTOR, audit.Action.KEY_ROTATE, outcome="ok", detail=f"version={version}"
        )
    finally:
        await store.close()
    print(version, file=out)  # alone on stdout, like `token create`: scripts read it
    print(
        f"key version {version} added to {provider.describe()} (versions {', '.join(map(str, keyring.versions))});"
        " running trackers keep sealing and signing with the previous version until they restart:"
        " restart them (rolling), then run `polite-tracker reseal`",
        file=sys.stderr,
    )
    return EXIT_OK


# -- purge -----------------------------------------------------------------------------------------
def run_purge(
    db: str,
    keys_url: str,
    settings: TrackerSettings,
    *,
    dry_run: bool = False,
    batch: int = 5000,
    out: TextIO | None = None,
    progress_every: float = PROGRESS_EVERY_SECONDS,
) -> int:
    """Apply retention (or count, with ``dry_run``); a legal hold refuses, says so, and exits 0."""
    return asyncio.run(_purge(db, keys_url, settings, dry_run, batch, out or sys.stdout, progress_every))


async def _purge(
    db: str, keys_url: str, settings: TrackerSettings, dry_run: bool, batch: int, out: TextIO, every: float
) -> int:
    keyring = _keyring(keys_url, settings)
    store = await _open(db)
    throttle = _Throttle(out, every)
    verb = "counted" if dry_run else "deleted"

    def progress(p: PurgeProgress) -> None:
        throttle(f"purge: {p.table}: {p.total} {verb} so far")

    started = time.monotonic()
    try:
        result = await purge(store, settings, keyring, dry_run=dry_run, batch=batch, progress=progress)
    finally:
        await store.close()
    _print_purge(result, out, time.monotonic() - started)
    return EXIT_OK


def _print_purge(result: PurgeResult, out: TextIO, seconds: float) -> None:
    if result.refused_for_legal_hold:
        print("purge refused: a legal hold is on; nothing was deleted (lift the hold to apply retention)", file=out)
        return
    print(
        f"purge: interaction data before {_iso(result.interaction_cutoff_ms)},"
        f" messages before {_iso(result.message_cutoff_ms)}",
        file=out,
    )
    counts = (
        f"events={result.total_events} (by age {result.events}, with their message {result.message_events})"
        f" messages={result.messages} recipients={result.recipients} records={result.records} links={result.links}"
    )
    if result.dry_run:
        print(f"purge --dry-run: would delete {counts}; nothing was deleted", file=out)
    else:
        rate = result.total_rows / seconds if seconds > 0 else 0.0
        print(
            f"purge done: deleted {counts} in {result.statements} statements, {seconds:.1f} s ({rate:.0f} rows/s)",
            file=out,
        )


# -- reseal ----------------------------------------------------------------------------------------
def run_reseal(
    db: str,
    keys_url: str,
    settings: TrackerSettings,
    *,
    batch: int = 1000,
    out: TextIO | None = None,
    progress_every: float = PROGRESS_EVERY_SECONDS,
) -> int:
    """Re-seal old rows under the newest key version and say which versions can be retired."""
    return asyncio.run(_reseal(db, keys_url, settings, batch, out or sys.stdout, progress_every))


async def _reseal(db: str, keys_url: str, settings: TrackerSettings, batch: int, out: TextIO, every: float) -> int:
    keyring = _keyring(keys_url, settings)
    store = await _open(db)
    throttle = _Throttle(out, every)

    def progress(p: ResealProgress) -> None:
        throttle(f"reseal: {p.table}: {p.rows_scanned} rows scanned, {p.rows_resealed} resealed")

    print(f"reseal: sealing every value under key version {keyring.current.version}", file=out, flush=True)
    try:
        result = await reseal(store, keyring, batch=batch, progress=progress)
    finally:
        await store.close()
    _print_reseal(result, out)
    return EXIT_UNREADABLE if result.unreadable else EXIT_OK


def _print_reseal(result: ResealResult, out: TextIO) -> None:
    for t in result.tables:
        versions = ", ".join(f"v{v}={n}" for v, n in t.versions_remaining.items()) or "no sealed values"
        line = f"reseal: {t.table}: {t.rows_scanned} rows scanned, {t.rows_resealed} resealed; now {versions}"
        if t.unreadable:
            line += f"; {t.unreadable} values did not open and were left as they are"
        print(line, file=out)
    rate = result.rows_scanned / result.seconds if result.seconds > 0 else 0.0
    print(
        f"reseal done: {result.rows_resealed} rows ({result.values_resealed} values) resealed under version"
        f" {result.current_version} (bound {result.values_bound} legacy values to their row),"
        f" {result.rows_scanned} scanned in {result.seconds:.1f} s ({rate:.0f} rows/s)",
        file=out,
    )
    if result.unbound_remaining:
        print(
            f"reseal: {result.unbound_remaining} values are still not bound to their row (they did not open);"
            " such a value could be copied into another row and still open",
            file=out,
        )
    still = {v: n for v, n in result.versions_remaining.items() if v != result.current_version}
    for version in result.retirable:
        print(f"version {version} seals no value any more: its DEK can be retired (keep its token key)", file=out)
    for version, count in still.items():
        print(
            f"version {version} still seals {count} values: a tracker still running on old keys, or values that"
            " did not open; restart every tracker and run reseal again before retiring it",
            file=out,
        )
    if result.unreadable:
        print(f"reseal: {result.unreadable} values did not open; see the lines above", file=sys.stderr)
