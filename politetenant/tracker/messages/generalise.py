"""k-anonymity at rest: the segment attributes each tracking record of a message may keep.

A record that carried a recipient's whole attribute map would single out anyone with a rare
combination (the only manager, the one person in a building) to whoever reads the records, whatever
the reports suppress. So at registration a record keeps only the tenant's segment attributes, and
only a combination of them that at least ``k`` (the tenant's minimum segment size) records of the
message share; a record in a smaller class drops its rarest attribute until its class is large enough
or it keeps nothing.

Classes are settled from the most specific to the least: every combination of n attributes is judged
only after every record that could fall into it from n + 1 attributes has arrived, so a record is
never stripped for want of company it would have had one step later. That is one pass per segment
attribute over the distinct combinations, plus one pass over the records to group and one to answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container, Mapping, Sequence

Combination = tuple[tuple[str, str], ...]  # (attribute, value) pairs sorted by attribute name


def _rarest(combination: Combination, frequency: Mapping[tuple[str, str], int]) -> int:
    """Position of the pair fewest recipients share; ties go to the first attribute by name."""
    return min(range(len(combination)), key=lambda i: (frequency[combination[i]], combination[i][0]))


def _settle(
    classes: Counter[Combination], frequency: Mapping[tuple[str, str], int], k: int
) -> dict[Combination, Combination]:
    """Where each combination ends up: ``classes`` counts records per combination (changed in place)."""
    moved: dict[Combination, Combination] = {}
    for size in range(max((len(c) for c in classes), default=0), 0, -1):
        for combination, members in [(c, n) for c, n in classes.items() if len(c) == size]:
            if members >= k:
                continue
            drop = _rarest(combination, frequency)
            wider = combination[:drop] + combination[drop + 1 :]
            moved[combination] = wider
            del classes[combination]
            classes[wider] += members

    def final(combination: Combination) -> Combination:
        while combination in moved:
            combination = moved[combination]
        return combination

    return {combination: final(combination) for combination in moved}


def combination_of(attributes: Mapping[str, str], names: Sequence[str]) -> Combination:
    """The segment pairs of one attribute map; ``names`` sorted (the order every combination keeps)."""
    return tuple([(a, attributes[a]) for a in names if a in attributes])  # a list: quicker than a generator


def generalised_classes(classes: Mapping[Combination, int], k: int) -> dict[Combination, Combination]:
    """Where each combination ends up, given how many tracked records hold it: the second half of
    ``generalise`` for callers that counted the combinations on a first pass and map records in batches
    on a second (a message too large to hold every attribute map at once)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    counted: Counter[Combination] = Counter({c: n for c, n in classes.items() if n > 0})
    frequency: Counter[tuple[str, str]] = Counter()
    for combination, members in counted.items():
        for pair in combination:
            frequency[pair] += members
    moved = _settle(counted, frequency, k)
    return {c: moved.get(c, c) for c in classes}


def generalise(attribute_maps: Sequence[Mapping[str, str]], segments: Sequence[str], k: int) -> list[dict[str, str]]:
    """The attribute map each record keeps, in input order: one input map per TRACKED recipient
    (objectors left out, they get no record). Only ``segments`` survive, and every non-empty result
    is shared, exactly, by at least ``k`` of the results."""
    names = sorted(set(segments))
    combinations: list[Combination] = [combination_of(m, names) for m in attribute_maps]
    kept = generalised_classes(Counter(combinations), k)
    return [dict(kept[c]) for c in combinations]


def record_attributes(
    attribute_maps: Sequence[Mapping[str, str]], objected: Container[int], segments: Sequence[str], k: int
) -> list[dict[str, str] | None]:
    """``generalise`` lined up with a message's recipients: position i holds what recipient i's record
    keeps, or None when recipient i objected (no record). Counting only tracked recipients matters: an
    objector's attributes must not help anyone else's class reach ``k``."""
    tracked = [i for i in range(len(attribute_maps)) if i not in objected]
    out: list[dict[str, str] | None] = [None] * len(attribute_maps)
    for position, kept in zip(tracked, generalise([attribute_maps[i] for i in tracked], segments, k), strict=True):
        out[position] = kept
    return out
