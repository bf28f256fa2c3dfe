"""k-anonymity at rest: what a message's tracking records keep of their recipients' attributes."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from politetenant.tracker.messages.generalise import generalise, record_attributes

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEGMENTS = ("building", "department", "role")

# Few names and values, so that classes of every size (and many ties in rarity) actually occur.
_maps = st.lists(
    st.dictionaries(
        st.sampled_from(["building", "department", "role", "salary_band", "manager_email"]),
        st.sampled_from(["a", "b", "c", "d"]),
        max_size=5,
    ),
    max_size=60,
)
_segments = st.lists(st.sampled_from(["building", "department", "role", "salary_band"]), max_size=4)
_k = st.integers(min_value=1, max_value=12)


def combination(kept: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kept.items()))


@FAST
@given(_maps, _segments, _k)
def test_every_kept_combination_is_shared_by_at_least_k_records(
    maps: list[dict[str, str]], segments: list[str], k: int
) -> None:
    kept = generalise(maps, segments, k)
    classes = Counter(combination(m) for m in kept)
    assert all(members >= k for c, members in classes.items() if c), classes


@FAST
@given(_maps, _segments, _k)
def test_records_keep_only_segment_attributes_with_their_true_values(
    maps: list[dict[str, str]], segments: list[str], k: int
) -> None:
    kept = generalise(maps, segments, k)
    assert len(kept) == len(maps)
    for original, record in zip(maps, kept, strict=True):
        assert set(record) <= set(segments)  # manager_email never survives, whatever k is
        assert record.items() <= original.items()  # a sub-map: nothing invented, nothing altered


@FAST
@given(_maps, _segments, _k)
def test_an_already_k_anonymous_message_keeps_every_segment_attribute(
    maps: list[dict[str, str]], segments: list[str], k: int
) -> None:
    filtered = [{a: v for a, v in m.items() if a in segments} for m in maps]
    classes = Counter(combination(m) for m in filtered)
    if all(members >= k for c, members in classes.items() if c):
        assert generalise(maps, segments, k) == filtered
    # Repeating every recipient k times makes any message k-anonymous: nothing may then be dropped.
    assert generalise(maps * k, segments, k) == filtered * k


@FAST
@given(_maps, _segments, _k, st.randoms(use_true_random=False))
def test_the_outcome_does_not_depend_on_recipient_order(
    maps: list[dict[str, str]], segments: list[str], k: int, rng: random.Random
) -> None:
    order = list(range(len(maps)))
    rng.shuffle(order)
    kept = generalise(maps, segments, k)
    shuffled = generalise([maps[i] for i in order], segments, k)
    assert shuffled == [kept[i] for i in order]


def _office(managers: int = 1, annex: int = 1) -> list[dict[str, str]]:
    """30 sales staff at HQ, then ``managers`` sales managers at HQ, then ``annex`` staff in the annex;
    each with a non-segment attribute that is personal on its own."""
    staff = [{"department": "Sales", "building": "HQ", "role": "staff", "phone": f"555-01{i:02d}"} for i in range(30)]
    boss = [{"department": "Sales", "building": "HQ", "role": "manager", "phone": "555-0900"}] * managers
    outpost = [{"department": "Sales", "building": "Annex", "role": "staff", "phone": "555-0777"}] * annex
    return staff + boss + outpost


def test_the_manager_and_the_one_person_building_lose_what_would_single_them_out() -> None:
    kept = generalise(_office(), SEGMENTS, 5)
    staff = {"building": "HQ", "department": "Sales", "role": "staff"}
    assert kept[:30] == [staff] * 30  # the 30 are their own class: untouched (but the phone number is gone)
    # {Sales, HQ} alone would still name the manager (the Sales HQ person who is not staff), and
    # {Sales, staff} the annex person; together they are two, fewer than 5: nothing can stay.
    assert kept[30:] == [{}, {}]
    # With k = 2 the two fall into one class that is large enough: they keep the department.
    assert generalise(_office(), SEGMENTS, 2)[30:] == [{"department": "Sales"}] * 2


def test_the_rarest_attribute_goes_first_and_the_common_ones_stay() -> None:
    # Four remote sales staff give no building. The annex person drops the building (one recipient
    # has it) rather than the role (35) or the department (everyone), and joins them: five, kept.
    remote = [{"department": "Sales", "role": "staff"}] * 4
    kept = generalise(_office(managers=5, annex=1) + remote, SEGMENTS, 5)
    assert kept[30:35] == [{"building": "HQ", "department": "Sales", "role": "manager"}] * 5  # a class of five
    assert kept[35:] == [{"department": "Sales", "role": "staff"}] * 5
    # Five annex staff: their building is rare among recipients, but their class has five: kept whole.
    kept = generalise(_office(managers=5, annex=5), SEGMENTS, 5)
    assert kept[35:] == [{"building": "Annex", "department": "Sales", "role": "staff"}] * 5


def test_records_falling_from_more_specific_classes_make_a_class_large_enough() -> None:
    # Three managers and two directors of Sales, each pair rare alone: each drops its role (rarest),
    # and the five records of {Sales, HQ} are then a class of five: they keep department and building.
    maps = [{"department": "Sales", "building": "HQ", "role": "staff"}] * 10
    maps += [{"department": "Sales", "building": "HQ", "role": "manager"}] * 3
    maps += [{"department": "Sales", "building": "HQ", "role": "director"}] * 2
    kept = generalise(maps, SEGMENTS, 5)
    assert kept[10:] == [{"building": "HQ", "department": "Sales"}] * 5


def test_ties_in_rarity_are_broken_by_attribute_name() -> None:
    maps = [{"building": "HQ", "department": "Sales"}, {"building": "HQ", "department": "Sales"}]
    maps += [{"building": "Annex", "department": "Legal"}, {"building": "Annex", "department": "Legal"}]
    maps += [{"building": "HQ", "department": "Legal"}, {"department": "Legal"}, {"building": "HQ"}]
    # The HQ Legal record is alone; HQ and Legal are each shared by four recipients. 'building' sorts
    # first, so it goes, and the record joins the one that gave only its department.
    assert generalise(maps, SEGMENTS, 2)[4:] == [{"department": "Legal"}, {"department": "Legal"}, {}]


def test_no_segments_means_records_carry_no_attributes() -> None:
    assert generalise(_office(), (), 5) == [{}] * 32


def test_k_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        generalise([], SEGMENTS, 0)


def test_objectors_get_no_record_and_do_not_count_towards_anyone_s_class() -> None:
    maps = [{"department": "Legal"}] * 5 + [{"department": "Sales"}] * 5
    assert record_attributes(maps, set(), ("department",), 5) == maps
    # One Legal recipient objected: four Legal records remain, too few to keep their department.
    kept = record_attributes(maps, {2}, ("department",), 5)
    assert kept[2] is None
    assert kept[:2] + kept[3:5] == [{}] * 4 and kept[5:] == [{"department": "Sales"}] * 5


def test_a_hundred_thousand_recipients_with_one_person_buildings_are_generalised() -> None:
    # Speed is measured in bench/, never asserted here (about 150 ms on 2 cores).
    departments = [f"dept-{i}" for i in range(40)]
    buildings = [f"building-{i}" for i in range(25)]
    maps = [
        {
            "department": departments[i % 40],
            "building": buildings[(i * 7) % 25] if i % 997 else f"solo-{i}",  # about 100 one-person buildings
            "role": "manager" if i % 50 == 0 else "staff",
            "employee_number": str(i),
        }
        for i in range(100_000)
    ]
    kept = generalise(maps, SEGMENTS, 10)
    classes = Counter(combination(m) for m in kept)
    assert all(members >= 10 for c, members in classes.items() if c)
