"""The minimum-segment rule, in one place: which figures a report may show.

A figure describes a population: the tracked recipients of a message or segment (recipient-based
figures), or the distinct records in a breakdown bucket. Below the tenant's ``min_segment_size`` (k)
a population shows no figure. Four tools apply the rule:

- ``headline_visible``: may figures about this population be shown at all?
- ``part_visible``: may a figure about a part of it be shown (the records a machine hit, the openers
  who came through a proxy)? Only when that part is empty or meets k, and, side by side (segments),
  only when it is so in every row: else one row's figure is the whole's minus the others'.
- ``fold_table``: which labels of a breakdown (device, city, link, read-time bucket, segment...) are
  shown, for one population or for several side by side (segments). Small labels fold into "other",
  which is shown only if it meets k itself. *Secondary suppression* closes the differencing attack:
  if what is hidden could be recovered as ``total - visible`` and lies strictly between 0 and k, the
  next-smallest visible labels are folded too, until the hidden part is 0 or at least k.
- ``coarsen``: an hourly series becomes contiguous windows that each meet k, so a timeline never
  shows a small cell and its windows add up to the total exactly (nothing is left to subtract).

Side by side (segments), labels and windows are common to every row and never finer than those of
the whole-message report, so a figure cannot be recovered by subtracting segments from the total.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

R = TypeVar("R", bound=Hashable)  # a row: a segment value, or ALL for the whole message
L = TypeVar("L", bound=Hashable)  # a label: "mobile", a city, a link number, "glanced"...

ALL = "*"  # the single row of a whole-message breakdown

# (row, folded labels) -> (population of "other", records that only appear under folded labels).
# For a partition (each record under one label) both are the sum of the folded cells; for labels a
# record can share (links: one person clicks several) the caller counts them from its records.
Remainder = Callable[[R, frozenset[L]], tuple[int, int]]


def headline_visible(population: int, k: int) -> bool:
    """Figures about a population of ``population`` recipients or records may be shown."""
    return population >= k


def part_visible(populations: Iterable[int], k: int) -> bool:
    """A figure about a part of each row's people (one row, or segments side by side) may be shown:
    in no row is that part strictly between 0 and ``k``."""
    return all(safe_remainder(n, k) for n in populations)


def safe_remainder(n: int, k: int) -> bool:
    """A derivable remainder is harmless when it is empty or meets the threshold itself."""
    return n == 0 or n >= k


@dataclass(frozen=True, slots=True)
class TableFold(Generic[R, L]):
    """The outcome of folding: labels shown (largest first), labels folded, "other" per row."""

    shown: tuple[L, ...]
    folded: frozenset[L]
    other: dict[R, int | None]  # None: nothing folded for that row, or "other" below the threshold

    def other_of(self, row: R) -> int | None:
        return self.other.get(row)


def _partition(cells: Mapping[R, Mapping[L, int]]) -> Remainder[R, L]:
    def remainder(row: R, folded: frozenset[L]) -> tuple[int, int]:
        hidden = sum(n for label, n in cells[row].items() if label in folded)
        return hidden, hidden

    return remainder


def fold_table(
    cells: Mapping[R, Mapping[L, int]],
    k: int,
    *,
    candidates: Collection[L] | None = None,
    remainder: Remainder[R, L] | None = None,
) -> TableFold[R, L]:
    """Decide which labels of a (rows x labels) table of populations are shown.

    A label is shown only when its cell meets ``k`` in every row, and only if it is among
    ``candidates`` (the labels the whole-message report shows, so a segmented table is never finer
    than it). Then, while some row's folded part is derivable and between 0 and ``k`` (exclusive),
    the visible label with the smallest cells in the failing rows is folded too.
    """
    rows = list(cells)
    labels: set[L] = set()
    for row in rows:
        labels.update(label for label, n in cells[row].items() if n > 0)
    allowed = labels if candidates is None else labels & set(candidates)

    def total(label: L) -> int:
        return sum(cells[row].get(label, 0) for row in rows)

    shown = [label for label in allowed if all(cells[row].get(label, 0) >= k for row in rows)]
    folded = frozenset(labels - set(shown))
    hidden = remainder or _partition(cells)

    def failing() -> list[R]:
        if not folded:
            return []
        return [row for row in rows if not all(safe_remainder(n, k) for n in hidden(row, folded))]

    bad = failing()
    while bad and shown:
        victim = min(shown, key=lambda label: (sum(cells[r].get(label, 0) for r in bad), total(label), str(label)))
        shown.remove(victim)
        folded = folded | {victim}
        bad = failing()

    other: dict[R, int | None] = {}
    for row in rows:
        population, exclusive = hidden(row, folded) if folded else (0, 0)
        visible = population >= k and safe_remainder(exclusive, k)
        other[row] = population if visible else None
    shown.sort(key=lambda label: (-total(label), str(label)))
    return TableFold(tuple(shown), folded, other)


def fold(
    counts: Mapping[L, int],
    k: int,
    *,
    candidates: Collection[L] | None = None,
    remainder: Callable[[frozenset[L]], tuple[int, int]] | None = None,
) -> TableFold[str, L]:
    """``fold_table`` for a single population (row ``ALL``)."""
    table_remainder: Remainder[str, L] | None = None
    if remainder is not None:
        single = remainder

        def table_remainder(_row: str, folded: frozenset[L]) -> tuple[int, int]:
            return single(folded)

    return fold_table({ALL: counts}, k, candidates=candidates, remainder=table_remainder)


@dataclass(frozen=True, slots=True)
class Window(Generic[R]):
    """Hours ``[start, end)`` (hour numbers since the epoch) and each row's count within them."""

    start: int
    end: int
    counts: dict[R, int]


def coarsen(
    series: Mapping[R, Mapping[int, int]], k: int, *, boundaries: Collection[int] | None = None
) -> list[Window[R]]:
    """Merge an hourly partition (each record counted in one hour) into windows that meet ``k``.

    Hours are taken in order; a window closes once every row has at least ``k`` in it, at an hour
    listed in ``boundaries`` if given (the whole-message windows, so a segmented timeline is never
    finer than it). A short tail joins the last window. When not even one window can be closed the
    series shows nothing: one window below ``k`` would give a small population's timing away.
    """
    rows = list(series)
    hours = sorted({h for row in rows for h, n in series[row].items() if n > 0})
    cuts = None if boundaries is None else sorted(boundaries)
    windows: list[Window[R]] = []
    counts: dict[R, int] = dict.fromkeys(rows, 0)
    start: int | None = None
    for position, hour in enumerate(hours):
        if start is None:
            start = hour
        for row in rows:
            counts[row] += series[row].get(hour, 0)
        if not all(n >= k for n in counts.values()):
            continue
        next_hour = hours[position + 1] if position + 1 < len(hours) else None
        if next_hour is None:
            end: int | None = hour + 1
        elif cuts is None:
            end = next_hour
        else:  # the first allowed cut after this hour, provided no data lies before it
            end = next((c for c in cuts if hour < c <= next_hour), None)
        if end is None:
            continue
        windows.append(Window(start, end, dict(counts)))
        counts, start = dict.fromkeys(rows, 0), None
    if start is not None and windows:  # the tail below k joins the last window
        last = windows[-1]
        merged = {row: last.counts[row] + counts[row] for row in rows}
        windows[-1] = Window(last.start, hours[-1] + 1, merged)
    return windows
