"""The minimum-segment rule: folding into "other", secondary suppression, timelines, side-by-side tables."""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from fractions import Fraction

import pytest

from politetenant.tracker.reports.thresholds import (
    ALL,
    coarsen,
    fold,
    fold_table,
    headline_visible,
    part_visible,
    safe_remainder,
)

K = 10


def test_a_population_below_the_threshold_shows_nothing() -> None:
    assert headline_visible(10, 10)
    assert not headline_visible(9, 10)
    assert not headline_visible(0, 5)


def test_buckets_meeting_the_threshold_are_shown_largest_first_and_nothing_is_folded() -> None:
    result = fold({"desktop": 12, "mobile": 30, "tablet": 10}, K)
    assert result.shown == ("mobile", "desktop", "tablet")
    assert result.folded == frozenset()
    assert result.other_of(ALL) is None


def test_small_buckets_fold_into_other_when_other_meets_the_threshold() -> None:
    result = fold({"mobile": 40, "tablet": 6, "watch": 4}, K)
    assert result.shown == ("mobile",)
    assert result.folded == {"tablet", "watch"}
    assert result.other_of(ALL) == 10


def test_other_below_the_threshold_pulls_in_the_next_smallest_visible_bucket() -> None:
    # Showing desktop would let anyone compute watch = 47 - 30 - 12 = 5 from the total.
    result = fold({"mobile": 30, "desktop": 12, "watch": 5}, K)
    assert result.shown == ("mobile",)
    assert result.other_of(ALL) == 17


def test_a_single_small_bucket_is_never_recoverable_from_the_total() -> None:
    result = fold({"Dublin, IE": 40, "Cork, IE": 2}, K)
    assert result.shown == ()
    assert result.other_of(ALL) == 42  # everything is "other": no city named, nothing to subtract


def test_when_even_everything_together_is_too_small_nothing_is_shown() -> None:
    result = fold({"a": 3, "b": 4}, K)
    assert result.shown == ()
    assert result.other_of(ALL) is None


def test_candidates_limit_what_may_be_shown() -> None:
    result = fold({"a": 30, "b": 20, "c": 15}, K, candidates={"a", "b"})
    assert result.shown == ("a", "b")
    assert result.other_of(ALL) == 15


def test_a_part_of_the_people_shows_when_it_is_empty_or_meets_the_threshold() -> None:
    # Three machine copies of 40 would be as good as naming the three; none names no one.
    assert part_visible([0], 5) and part_visible([5], 5) and part_visible([40], 5)
    assert not part_visible([1], 5) and not part_visible([4], 5)


def test_side_by_side_a_part_shows_only_when_every_row_can_show_it() -> None:
    # Segments 12 and 2 of a whole of 14: showing the 12 gives the 2 away as whole minus 12.
    assert not part_visible([12, 2], 5)
    assert part_visible([12, 0, 7], 5)
    assert part_visible([], 5)


def test_remainder_zero_or_at_least_k_is_safe() -> None:
    assert safe_remainder(0, 5) and safe_remainder(5, 5) and safe_remainder(50, 5)
    assert not safe_remainder(1, 5) and not safe_remainder(4, 5)


# --------------------------------------------------------------------------------------------------
# Property: no figure below the threshold can be derived, for many random breakdowns.


def random_counts(rng: random.Random, labels: int, high: int) -> dict[str, int]:
    counts = {f"v{i}": rng.choice([rng.randint(1, 4), rng.randint(1, high)]) for i in range(labels)}
    return counts


@pytest.mark.parametrize("seed", range(5))
def test_differencing_the_total_against_visible_buckets_never_gives_a_small_figure(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(400):
        k = rng.randint(5, 12)
        counts = random_counts(rng, rng.randint(1, 8), 40)
        result = fold(counts, k)
        total = sum(counts.values())
        visible = sum(counts[label] for label in result.shown)
        other = result.other_of(ALL)
        assert all(counts[label] >= k for label in result.shown)
        assert set(result.shown) | result.folded == set(counts)
        assert other is None or other >= k
        remainder = total - visible
        if result.shown:
            assert remainder == (other or 0), (counts, k, result)  # total = visible + other, exactly
            assert safe_remainder(remainder, k)
        # small buckets fold into "other" only when it meets the threshold itself
        if other is not None:
            assert other == sum(counts[label] for label in result.folded)


@pytest.mark.parametrize("seed", range(3))
def test_overlapping_buckets_never_leave_a_small_derivable_group(seed: int) -> None:
    # Links: one person may click several, so the caller counts "other" from its records.
    rng = random.Random(100 + seed)
    for _ in range(300):
        k = rng.randint(5, 10)
        links = rng.randint(1, 5)
        masks = [rng.randint(1, (1 << links) - 1) for _ in range(rng.randint(0, 60))]
        masks += [1 << rng.randrange(links)] * rng.randint(0, 3)  # a few single-link clickers
        cells = {n: sum(1 for m in masks if m >> n & 1) for n in range(links)}

        def remainder(folded: frozenset[int], masks: list[int] = masks) -> tuple[int, int]:
            hidden = sum(1 << n for n in folded)
            return sum(1 for m in masks if m & hidden), sum(1 for m in masks if m & hidden and not m & ~hidden)

        result = fold(cells, k, remainder=remainder)
        assert all(cells[n] >= k for n in result.shown)
        union, only_folded = remainder(result.folded)
        if result.shown:
            assert safe_remainder(union, k) and safe_remainder(only_folded, k)
            # clickers of no visible link = all clickers - those of visible links: never small
            visible = sum(1 << n for n in result.shown)
            assert safe_remainder(sum(1 for m in masks if not m & visible), k)
        other = result.other_of(ALL)
        assert other is None or (other == union and other >= k)


# --------------------------------------------------------------------------------------------------
# Tables: segments side by side, and against the whole-message figures.


def test_a_label_is_shown_side_by_side_only_when_every_row_meets_the_threshold() -> None:
    table = {"Finance": {"mobile": 20, "desktop": 15}, "Sales": {"mobile": 25, "desktop": 3, "tablet": 12}}
    result = fold_table(table, K)
    assert result.shown == ("mobile",)
    assert result.other == {"Finance": 15, "Sales": 15}


def test_secondary_suppression_holds_in_every_row() -> None:
    table = {"A": {"x": 30, "y": 12, "z": 2}, "B": {"x": 30, "y": 12, "z": 12}}
    result = fold_table(table, K)
    assert "z" not in result.shown
    assert result.shown == ("x",)  # y pulled in: A's "other" would otherwise be 2
    assert result.other == {"A": 14, "B": 24}


def _rank(rows: list[list[Fraction]]) -> int:
    matrix, rank = [r[:] for r in rows], 0
    width = len(matrix[0]) if matrix else 0
    for col in range(width):
        pivot = next((i for i in range(rank, len(matrix)) if matrix[i][col] != 0), None)
        if pivot is None:
            continue
        matrix[rank], matrix[pivot] = matrix[pivot], matrix[rank]
        for i in range(len(matrix)):
            if i != rank and matrix[i][col] != 0:
                factor = matrix[i][col] / matrix[rank][col]
                matrix[i] = [a - factor * b for a, b in zip(matrix[i], matrix[rank], strict=True)]
        rank += 1
    return rank


def _derivable(
    table: Mapping[str, Mapping[str, int]], whole_shown: set[str], row_shown: Mapping[str, set[str]]
) -> list[tuple[str, str, int]]:
    """Hidden cells (and hidden whole-message cells) that adding and subtracting published figures gives.

    Published: each segment's total (its headline), the whole-message buckets ``whole_shown`` and each
    segment's buckets ``row_shown``. Unknowns: every cell not shown; a cell is recovered when its
    indicator vector lies in the span of the published equations.
    """
    rows, labels = list(table), sorted({label for t in table.values() for label in t})
    unknowns = [(r, label) for r in rows for label in labels if label not in row_shown[r]]
    if not unknowns:
        return []

    def vector(cells: set[tuple[str, str]]) -> list[Fraction]:
        return [Fraction(1 if u in cells else 0) for u in unknowns]

    equations = [vector({(r, label) for label in labels}) for r in rows]  # segment totals
    equations += [vector({(r, label) for r in rows}) for label in whole_shown]  # whole-message buckets
    base = _rank(equations)
    targets = [(r, label, table[r][label], {(r, label)}) for r, label in unknowns]
    targets += [
        (ALL, label, sum(table[r][label] for r in rows), {(r, label) for r in rows})
        for label in labels
        if label not in whole_shown
    ]
    return [(row, label, true) for row, label, true, cells in targets if _rank([*equations, vector(cells)]) == base]


def _random_table(rng: random.Random) -> dict[str, dict[str, int]]:
    labels = [f"l{i}" for i in range(rng.randint(2, 5))]
    rows = ["A", "B", "C"][: rng.randint(1, 3)]
    return {r: {label: rng.choice([0, 1, 2, rng.randint(0, 20)]) for label in labels} for r in rows}


def _whole(table: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    return {label: sum(t[label] for t in table.values()) for label in next(iter(table.values()))}


@pytest.mark.parametrize("seed", range(4))
def test_no_cell_below_the_threshold_is_recovered_by_differencing_whole_and_segmented_reports(seed: int) -> None:
    rng = random.Random(1000 + seed)
    for _ in range(150):
        k, table = rng.randint(3, 8), _random_table(rng)
        whole = fold(_whole(table), k)
        side = fold_table(table, k, candidates=whole.shown)
        for row, label, true in _derivable(table, set(whole.shown), {row: set(side.shown) for row in table}):
            assert true == 0 or true >= k, (table, k, row, label)


def test_the_differencing_check_catches_primary_suppression_alone() -> None:
    # The attacker above, against a naive rule (hide each small cell, nothing more): it finds leaks.
    rng = random.Random(7)
    leaks = 0
    for _ in range(150):
        k, table = rng.randint(3, 8), _random_table(rng)
        whole_shown = {label for label, n in _whole(table).items() if n >= k}
        row_shown = {r: {label for label, n in t.items() if n >= k} for r, t in table.items()}
        leaks += sum(1 for _, _, true in _derivable(table, whole_shown, row_shown) if 0 < true < k)
    assert leaks > 20


# --------------------------------------------------------------------------------------------------
# Timelines


def test_hours_merge_into_windows_that_each_meet_the_threshold() -> None:
    series = {ALL: {100: 12, 101: 3, 102: 4, 103: 5, 110: 1}}
    windows = coarsen(series, K)
    assert [(w.start, w.end, w.counts[ALL]) for w in windows] == [(100, 101, 12), (101, 111, 13)]


def test_a_timeline_whose_total_is_below_the_threshold_shows_nothing() -> None:
    assert coarsen({ALL: {5: 3, 9: 4}}, K) == []
    assert coarsen({ALL: {}}, K) == []


@pytest.mark.parametrize("seed", range(3))
def test_timeline_windows_add_up_to_the_total_and_never_show_a_small_cell(seed: int) -> None:
    rng = random.Random(2000 + seed)
    for _ in range(300):
        k = rng.randint(5, 12)
        rows = ["A", "B", "C"][: rng.randint(1, 3)]
        series = {r: {h: rng.randint(0, 15) for h in rng.sample(range(48), rng.randint(0, 20))} for r in rows}
        whole = coarsen({ALL: {h: sum(series[r].get(h, 0) for r in rows) for h in range(48)}}, k)
        cuts = {w.start for w in whole} | {w.end for w in whole}
        side = coarsen(series, k, boundaries=cuts)
        for windows in (whole, side):
            for before, after in itertools.pairwise(windows):
                assert before.end == after.start and before.start < before.end
            assert all(n >= k for w in windows for n in w.counts.values())
        if side:
            assert {w.start for w in side} | {w.end for w in side} <= cuts  # never finer than the whole
            for r in rows:
                assert sum(w.counts[r] for w in side) == sum(series[r].values())
        if whole:
            assert sum(w.counts[ALL] for w in whole) == sum(sum(s.values()) for s in series.values())
