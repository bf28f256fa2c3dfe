"""Re-sealing: move every sealed value to the newest DEK version, bound to its row.

Two reasons to rewrite a value: it is sealed under an older key version (after a rotation), or it
is in the legacy format that binds tenant and field but not the row (written before rows were bound,
so it could be copied into another row of its column and still open). Each table is walked in
primary-key order a page at a time (keyset pagination, so no long transaction and nothing large in
memory); such values are opened and sealed again under the newest version with their row's identity,
and written back with a compare-and-swap so a row changed meanwhile (a rectification, say) is never
overwritten with its old content. Values already under the newest version and bound to their row are
skipped, which makes a re-run after an interruption cheap and safe. Events' places
(``seal_repeated``) are never row-bound: only their key version moves. Afterwards, a version that
seals no value any more can have its DEK retired; its token and index keys stay, since last year's
beacons and blind indexes still need them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from politetenant.crypto import Keyring, RowId, Sealer, SealError, link_row, recipient_row
from politetenant.tracker.privacy import audit
from politetenant.tracker.storage.base import Store


def _unchanged(column: str, param: int) -> str:
    """``column`` still holds parameter ``param``, NULL included (IS NOT DISTINCT FROM needs SQLite 3.39)."""
    return f"({column} = ${param} OR ({column} IS NULL AND ${param} IS NULL))"


def _no_row(values: tuple[Any, ...]) -> RowId | None:
    return None


@dataclass(frozen=True, slots=True)
class SealedTable:
    """A table's sealed columns, and how to name the row its values are bound to.

    A page row reads ``key columns, identity columns, sealed columns``; ``row_of`` turns the
    identity columns' values into the row identity (see ``crypto.sealing``), None for repeated values.
    """

    name: str
    key: tuple[str, ...]  # primary key columns, in index order
    columns: tuple[tuple[str, str], ...]  # (column, field name the Sealer binds as associated data)
    identity: tuple[str, ...] = ()  # columns the row identity is made of
    row_of: Callable[[tuple[Any, ...]], RowId | None] = _no_row
    repeated: bool = False  # values sealed with Sealer.seal_repeated (places): never row-bound
    only: str | None = None  # the one backend (Store.url_scheme) that has the table

    def split(self, row: Sequence[Any]) -> tuple[list[Any], RowId | None, list[bytes | None]]:
        """(key, row identity, sealed values) of a row read with ``page_sql``."""
        n_key, n_id = len(self.key), len(self.identity)
        identity = self.row_of(tuple(row[n_key : n_key + n_id]))
        return list(row[:n_key]), identity, [None if v is None else bytes(v) for v in row[n_key + n_id :]]

    def page_sql(self, first: bool) -> str:
        names = ", ".join([*self.key, *self.identity, *(c for c, _ in self.columns)])
        order = ", ".join(self.key)
        if first:
            return f"SELECT {names} FROM {self.name} ORDER BY {order} LIMIT $1"
        n = len(self.key)
        after = f"({order}) > ({', '.join(f'${i}' for i in range(1, n + 1))})" if n > 1 else f"{order} > $1"
        return f"SELECT {names} FROM {self.name} WHERE {after} ORDER BY {order} LIMIT ${n + 1}"

    def update_sql(self) -> str:
        """Set every sealed column, only if none changed since it was read (NULLs compare equal)."""
        c = len(self.columns)
        sets = ", ".join(f"{col} = ${i}" for i, (col, _) in enumerate(self.columns, 1))
        where = [f"{k} = ${c + i}" for i, k in enumerate(self.key, 1)]
        first_old = c + len(self.key) + 1
        where += [_unchanged(col, first_old + i) for i, (col, _) in enumerate(self.columns)]
        return f"UPDATE {self.name} SET {sets} WHERE {' AND '.join(where)}"


SEALED_TABLES: tuple[SealedTable, ...] = (
    SealedTable(
        "messages",
        ("id",),
        (
            ("subject", "message.subject"),
            ("from_name", "message.from_name"),
            ("from_email", "message.from_email"),
            ("list_name", "message.list_name"),
        ),
        identity=("id",),
        row_of=lambda v: str(v[0]),
    ),
    SealedTable(
        "recipients",
        ("id",),
        (("email", "recipient.email"), ("name", "recipient.name"), ("attributes", "recipient.attributes")),
        identity=("message_id", "email_index"),
        row_of=lambda v: recipient_row(str(v[0]), bytes(v[1])),
    ),
    SealedTable(
        "records", ("id",), (("attributes", "record.attributes"),), identity=("id",), row_of=lambda v: bytes(v[0])
    ),
    SealedTable(
        "links",
        ("message_id", "link_no"),
        (("url", "link.url"), ("text", "link.text")),
        identity=("message_id", "link_no"),
        row_of=lambda v: link_row(str(v[0]), int(v[1])),
    ),
    SealedTable("events", ("event_id",), (("region", "event.region"), ("city", "event.city")), repeated=True),
    # The first open's city, copied from its event by reports.figures (after events: a fold copies
    # what the events hold, so once both are walked no old version is left).
    SealedTable("record_figures", ("record_id",), (("city", "event.city"),), repeated=True, only="postgresql"),
)


def sealed_tables(store: Store) -> tuple[SealedTable, ...]:
    """The sealed tables this store has."""
    return tuple(spec for spec in SEALED_TABLES if spec.only in (None, store.url_scheme))


@dataclass(slots=True)
class TableReseal:
    table: str
    rows_scanned: int = 0
    rows_resealed: int = 0
    values_resealed: int = 0  # every value rewritten, for either reason
    values_bound: int = 0  # of those, legacy values (not bound to their row) now bound
    unreadable: int = 0  # values that did not open (tampered, or a key version not loaded): left as they are
    versions_remaining: dict[int, int] = field(default_factory=dict)  # sealed values per version, after
    unbound_remaining: int = 0  # legacy values still not bound to their row, after (unreadable ones)


@dataclass(frozen=True, slots=True)
class ResealProgress:
    """After each page (its updates committed): where the walk of ``table`` stands."""

    table: str
    rows_scanned: int
    rows_resealed: int
    last_key: tuple[Any, ...]


@dataclass(slots=True)
class ResealResult:
    current_version: int
    loaded_versions: list[int]
    tables: list[TableReseal] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def versions_remaining(self) -> dict[int, int]:
        """Sealed values per key version, all tables together."""
        total: dict[int, int] = {}
        for table in self.tables:
            for version, count in table.versions_remaining.items():
                total[version] = total.get(version, 0) + count
        return dict(sorted(total.items()))

    @property
    def retirable(self) -> list[int]:
        """Older loaded versions whose DEK no sealed value needs any more."""
        remaining = self.versions_remaining
        return [v for v in self.loaded_versions if v != self.current_version and not remaining.get(v)]

    @property
    def rows_scanned(self) -> int:
        return sum(t.rows_scanned for t in self.tables)

    @property
    def rows_resealed(self) -> int:
        return sum(t.rows_resealed for t in self.tables)

    @property
    def values_resealed(self) -> int:
        return sum(t.values_resealed for t in self.tables)

    @property
    def values_bound(self) -> int:
        return sum(t.values_bound for t in self.tables)

    @property
    def unbound_remaining(self) -> int:
        return sum(t.unbound_remaining for t in self.tables)

    @property
    def unreadable(self) -> int:
        return sum(t.unreadable for t in self.tables)

    def detail(self) -> str:
        remaining = ",".join(f"v{v}:{n}" for v, n in self.versions_remaining.items()) or "none"
        return (
            f"version={self.current_version} rows={self.rows_resealed} values={self.values_resealed}"
            f" bound={self.values_bound} unreadable={self.unreadable} remaining={remaining}"
            f" unbound={self.unbound_remaining}"
        )


ResealCallback = Callable[[ResealProgress], None]


async def sealed_heads(store: Store, table: str | None = None) -> dict[tuple[int, bool], int]:
    """How many sealed values there are per (key version, bound to its row), in one table or all."""
    if table is not None and not any(spec.name == table for spec in sealed_tables(store)):
        raise ValueError(f"{table!r} holds no sealed column")
    counts: dict[tuple[int, bool], int] = {}
    for spec in sealed_tables(store):
        if table is not None and spec.name != table:
            continue
        for column, _ in spec.columns:
            # The header is the first two bytes of every sealed value; substr works on bytea and BLOB.
            sql = (
                f"SELECT substr({column}, 1, 2), COUNT(*) FROM {spec.name}"
                f" WHERE {column} IS NOT NULL GROUP BY substr({column}, 1, 2)"
            )
            for head, count in await store.fetch(sql):
                key = Sealer.head_of(bytes(head))
                counts[key] = counts.get(key, 0) + int(count)
    return dict(sorted(counts.items()))


async def sealed_versions(store: Store, table: str | None = None) -> dict[int, int]:
    """How many sealed values each key version seals (in one table, or all of them)."""
    counts: dict[int, int] = {}
    for (version, _), count in (await sealed_heads(store, table)).items():
        counts[version] = counts.get(version, 0) + count
    return dict(sorted(counts.items()))


async def unbound_values(store: Store, table: str | None = None) -> int:
    """Values still in the legacy format, not bound to their row (events' places never are: not counted)."""
    total = 0
    for spec in sealed_tables(store):
        if not spec.repeated and table in (None, spec.name):
            total += sum(n for (_, bound), n in (await sealed_heads(store, spec.name)).items() if not bound)
    return total


def needs_reseal(sealed: bytes, current: int, *, repeated: bool) -> bool:
    """A value is rewritten if an older key version seals it, or if it is not bound to its row yet
    (places excepted: ``seal_repeated`` never binds a row). Raises SealError for a value too short."""
    version, bound = Sealer.head_of(sealed)
    return version != current or not (bound or repeated)


Statement = tuple[str, list[list[Any]]]  # SQL and the parameter rows to run it with (one transaction)
_UNREADABLE = b""  # marks a value that did not open (a sealed value is never empty)


class _Resealer:
    def __init__(self, sealer: Sealer) -> None:
        self.sealer = sealer
        self.current = sealer.keyring.current.version

    def resealed(self, spec: SealedTable, sealed: bytes, field_name: str, row: RowId | None) -> bytes | None:
        """The value sealed under the newest version and bound to ``row``; None if it already is;
        _UNREADABLE if it does not open."""
        try:
            if not needs_reseal(sealed, self.current, repeated=spec.repeated):
                return None
            if spec.repeated:  # equal places keep sharing one ciphertext, as the tracker writes them
                return self.sealer.seal_repeated(field_name, self.sealer.open_text(field_name, sealed))
            # A legacy value opens with or without the row; a bound one only with its own row.
            return self.sealer.seal(field_name, self.sealer.open(field_name, sealed, row=row), row=row)
        except SealError:
            return _UNREADABLE

    def page(self, spec: SealedTable, rows: Sequence[tuple[Any, ...]], tally: TableReseal) -> list[Statement]:
        """The updates that move one page's stale or unbound values to the newest version, bound."""
        if spec.repeated:
            return self._page_by_value(spec, rows, tally)
        updates: list[list[Any]] = []
        for row in rows:
            key, identity, old = spec.split(row)
            new: list[bytes | None] = list(old)
            for i, (value, (_, field_name)) in enumerate(zip(old, spec.columns, strict=True)):
                fresh = None if value is None else self.resealed(spec, value, field_name, identity)
                if fresh == _UNREADABLE:
                    tally.unreadable += 1
                elif fresh is not None and value is not None:
                    new[i] = fresh
                    tally.values_resealed += 1
                    tally.values_bound += not Sealer.is_row_bound(value)
            if new != old:
                updates.append([*new, *key, *old])
                tally.rows_resealed += 1
        return [(spec.update_sql(), updates)] if updates else []

    def _page_by_value(self, spec: SealedTable, rows: Sequence[tuple[Any, ...]], tally: TableReseal) -> list[Statement]:
        """Repeated values (places): one UPDATE per distinct combination of stale ciphertexts.

        A page of events holds a handful of distinct places, so a page takes a few statements instead
        of one per row; each sets every sealed column at once (one new row version, not one per
        column), over the page's key range, on the condition that the row still holds the old values.
        """
        (key,) = spec.key
        combos: dict[tuple[bytes | None, ...], list[bytes | None]] = {}
        fresh: dict[tuple[int, bytes], bytes | None] = {}
        for row in rows:
            old = tuple(None if v is None else bytes(v) for v in row[1:])
            new = combos.get(old)
            if new is None:
                new = list(old)
                for i, (value, (_, field_name)) in enumerate(zip(old, spec.columns, strict=True)):
                    if value is not None:
                        if (i, value) not in fresh:
                            fresh[(i, value)] = self.resealed(spec, value, field_name, None)
                        resealed = fresh[(i, value)]
                        if resealed:  # neither current (None) nor unreadable (empty)
                            new[i] = resealed
                combos[old] = new
            tally.unreadable += sum(1 for i, v in enumerate(old) if v is not None and fresh[(i, v)] == _UNREADABLE)
            changed = sum(1 for a, b in zip(old, new, strict=True) if a != b)
            if changed:
                tally.values_resealed += changed
                tally.rows_resealed += 1
        n = len(spec.columns)
        sets = ", ".join(f"{column} = ${i}" for i, (column, _) in enumerate(spec.columns, 1))
        where = " AND ".join(_unchanged(column, n + i) for i, (column, _) in enumerate(spec.columns, 1))
        sql = f"UPDATE {spec.name} SET {sets} WHERE {where} AND {key} >= ${2 * n + 1} AND {key} <= ${2 * n + 2}"
        low, high = rows[0][0], rows[-1][0]
        params = [[*new, *old, low, high] for old, new in combos.items() if list(old) != new]
        return [(sql, params)] if params else []


async def reseal(
    store: Store, keyring: Keyring, *, batch: int = 1000, progress: ResealCallback | None = None
) -> ResealResult:
    """Re-seal every sealed value under the keyring's newest version, bound to its row, a page at a
    time, and audit it.

    Interrupted (an error, or ``progress`` raising), it leaves every finished page committed; run
    it again and it skips what is already done.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    started = time.monotonic()
    resealer = _Resealer(Sealer(keyring))
    result = ResealResult(current_version=keyring.current.version, loaded_versions=keyring.versions)
    for spec in sealed_tables(store):
        tally = TableReseal(spec.name)
        result.tables.append(tally)
        last_key: tuple[Any, ...] | None = None
        while True:
            if last_key is None:
                rows = await store.fetch(spec.page_sql(first=True), batch)
            else:
                rows = await store.fetch(spec.page_sql(first=False), *last_key, batch)
            if not rows:
                break
            tally.rows_scanned += len(rows)
            for sql, params in resealer.page(spec, rows, tally):
                await store.executemany(sql, params)  # short transactions, a page at a time
            last_key = tuple(rows[-1][: len(spec.key)])
            if progress is not None:
                progress(ResealProgress(spec.name, tally.rows_scanned, tally.rows_resealed, last_key))
            if len(rows) < batch:
                break
        tally.versions_remaining = await sealed_versions(store, spec.name)
        tally.unbound_remaining = await unbound_values(store, spec.name)
    result.seconds = time.monotonic() - started
    await audit.record(store, keyring, audit.SYSTEM_ACTOR, audit.Action.RESEAL, outcome="ok", detail=result.detail())
    return result
