"""Report-time behaviour rules: what one copy's hits, taken together, say about who made them."""

from __future__ import annotations

import pytest

from politetenant.settings import TrackerSettings
from politetenant.tracker.judging.behaviour import CLICK, OPEN, READ, CopyRules, Hit, bursts, judge_copy
from politetenant.tracker.judging.verdicts import Reason

S = 1_000  # ms
FIRST = 1_700_000_000_000  # the message's first hit
LATER = FIRST + 3_600 * S  # an hour on: far outside the early window
RULES = CopyRules(early_ms=10 * S, burst_ms=10 * S, gateway_click_ms=120 * S, link_count=2)
P, G = Reason.PERSON, Reason.GATEWAY_NETWORK


def opened(at: int, reason: int = P) -> Hit:
    return Hit(OPEN, None, at, reason)


def read(at: int, reason: int = P) -> Hit:
    return Hit(READ, None, at, reason)


def clicked(at: int, link: int, reason: int = P) -> Hit:
    return Hit(CLICK, link, at, reason)


def judge(*hits: Hit, rules: CopyRules = RULES, first: int | None = FIRST) -> list[int]:
    return judge_copy(list(hits), first, rules)


def test_a_persons_open_then_click_on_one_link_is_untouched() -> None:
    hits = (opened(LATER), read(LATER + 200), clicked(LATER + 4 * S, 1), clicked(LATER + 5 * S, 1))
    assert judge(*hits) == [P, P, P, P]


def test_a_burst_that_hits_the_honeypot_is_a_machines_but_a_later_open_is_the_persons() -> None:
    hits = (
        opened(LATER),
        clicked(LATER + 2 * S, 1),
        clicked(LATER + 3 * S, 0, Reason.HONEYPOT),
        opened(LATER + 60 * S),
    )
    assert judge(*hits) == [Reason.HONEYPOT_BURST, Reason.HONEYPOT_BURST, Reason.HONEYPOT, P]


def test_a_honeypot_hit_before_the_persons_own_hits_marks_only_its_own_burst() -> None:
    hits = (clicked(LATER, 0, Reason.HONEYPOT), opened(LATER + 9 * S), opened(LATER + 20 * S))
    assert judge(*hits) == [Reason.HONEYPOT, Reason.HONEYPOT_BURST, P]


def test_hits_already_judged_machine_keep_their_own_reason_inside_a_burst() -> None:
    hits = (
        opened(LATER, Reason.SCANNER_AGENT),
        opened(LATER, Reason.PRIVACY_PROXY),
        clicked(LATER + S, 0, Reason.HONEYPOT),
    )
    assert judge(*hits) == [Reason.SCANNER_AGENT, Reason.PRIVACY_PROXY, Reason.HONEYPOT]


@pytest.mark.parametrize(("gap", "same_burst"), [(10 * S, True), (10 * S + 1, False)])
def test_a_burst_ends_when_the_next_hit_comes_more_than_burst_seconds_later(gap: int, same_burst: bool) -> None:
    hits = (opened(LATER), clicked(LATER + gap, 0, Reason.HONEYPOT))
    assert judge(*hits)[0] == (Reason.HONEYPOT_BURST if same_burst else P)


def test_a_burst_is_a_chain_each_hit_close_to_the_previous_one() -> None:
    hits = [opened(LATER + n * 8 * S) for n in range(5)] + [clicked(LATER + 40 * S, 0, Reason.HONEYPOT)]
    assert [list(span) for span in bursts(hits, 10 * S)] == [list(range(6))]  # 40 s end to end, one burst
    assert judge(*hits)[:5] == [Reason.HONEYPOT_BURST] * 5


def test_clicking_every_link_within_seconds_is_a_machine() -> None:
    hits = (opened(LATER), clicked(LATER + S, 1), clicked(LATER + 2 * S, 2), opened(LATER + 300 * S))
    assert judge(*hits) == [Reason.ALL_LINKS_BURST] * 3 + [P]


@pytest.mark.parametrize(
    "hits",
    [
        (clicked(LATER, 1), clicked(LATER + S, 1)),  # one link twice
        (clicked(LATER, 1), clicked(LATER + 11 * S, 2)),  # both links, but not within one burst
        (clicked(LATER, 1), clicked(LATER + S, 3)),  # a number the message does not have
    ],
)
def test_clicks_that_do_not_cover_every_link_in_one_burst_stand(hits: tuple[Hit, ...]) -> None:
    assert judge(*hits) == [P, P]


def test_a_message_with_a_single_link_has_no_every_link_rule() -> None:
    rules = CopyRules(early_ms=10 * S, burst_ms=10 * S, gateway_click_ms=120 * S, link_count=1)
    assert judge(opened(LATER), clicked(LATER + S, 1), rules=rules) == [P, P]


def test_a_gateway_click_with_no_open_of_the_copy_before_it_is_the_gateway_checking_the_link() -> None:
    assert judge(clicked(LATER, 1, G)) == [Reason.GATEWAY_CLICK]
    assert judge(clicked(LATER, 1, G), opened(LATER + S)) == [Reason.GATEWAY_CLICK, P]  # the open came after


@pytest.mark.parametrize(("wait", "reason"), [(30 * S, P), (120 * S, P), (120 * S + 1, Reason.GATEWAY_CLICK)])
def test_a_gateway_click_soon_after_a_persons_open_is_the_persons(wait: int, reason: Reason) -> None:
    # Link protection rewrites every link: a person's click reaches us from the gateway's network.
    assert judge(opened(LATER), clicked(LATER + wait, 1, G)) == [P, reason]


@pytest.mark.parametrize(
    ("before", "counts"),
    [
        (opened(LATER, Reason.PROXIED), True),  # Gmail's image proxy fetched it for the person
        (read(LATER), True),
        (opened(LATER, Reason.SCANNER_AGENT), False),
        (opened(LATER, G), False),  # the gateway's own open
        (opened(LATER, Reason.PRIVACY_PROXY), False),  # Apple fetches on delivery, read or not
    ],
)
def test_only_an_open_that_counts_as_a_persons_lets_a_gateway_click_through(before: Hit, counts: bool) -> None:
    result = judge(before, clicked(LATER + 60 * S, 1, G))
    assert result[1] == (P if counts else Reason.GATEWAY_CLICK)


def test_an_open_from_a_gateway_network_stays_a_machines() -> None:
    assert judge(opened(LATER, G)) == [G]


def test_a_gateway_click_after_an_open_the_rules_judged_machine_stays_the_gateways() -> None:
    hits = (opened(FIRST + S), clicked(FIRST + 15 * S, 1, G))  # the open is an early hit
    assert judge(*hits) == [Reason.EARLY_HIT, Reason.GATEWAY_CLICK]


def test_a_gateway_click_inside_a_honeypot_burst_is_the_bursts() -> None:
    hits = (opened(LATER), clicked(LATER + 60 * S, 1, G), clicked(LATER + 61 * S, 0, Reason.HONEYPOT))
    assert judge(*hits) == [P, Reason.HONEYPOT_BURST, Reason.HONEYPOT]


@pytest.mark.parametrize(("offset", "reason"), [(0, Reason.EARLY_HIT), (10 * S - 1, Reason.EARLY_HIT), (10 * S, P)])
def test_the_early_window_starts_at_the_messages_first_hit(offset: int, reason: Reason) -> None:
    # The first hit came hours after registration (a gateway scans at delivery): the window follows it.
    assert judge(opened(FIRST + offset)) == [reason]
    assert judge(opened(FIRST + offset, Reason.PROXIED)) == [Reason.PROXIED if reason is P else reason]


def test_early_hits_already_judged_machine_or_apple_keep_their_reason() -> None:
    hits = (opened(FIRST, Reason.SCANNER_AGENT), opened(FIRST, Reason.PRIVACY_PROXY), opened(FIRST, Reason.HEAD))
    assert judge(*hits) == [Reason.SCANNER_AGENT, Reason.PRIVACY_PROXY, Reason.HEAD]


def test_with_no_first_hit_nothing_is_early() -> None:
    assert judge(opened(FIRST), first=None) == [P]


def test_aggregate_mode_applies_only_the_early_window_and_stored_reasons() -> None:
    # One record is everyone's copy: a honeypot hit or a gateway click says nothing about the others.
    rules = CopyRules(early_ms=10 * S, burst_ms=10 * S, gateway_click_ms=120 * S, link_count=2, per_copy=False)
    hits = [opened(FIRST + S), opened(LATER), clicked(LATER + S, 1), clicked(LATER + S, 2)]
    hits += [clicked(LATER + 2 * S, 0, Reason.HONEYPOT), clicked(LATER + 3 * S, 1, G)]
    assert judge(*hits, rules=rules) == [Reason.EARLY_HIT, P, P, P, Reason.HONEYPOT, G]


def test_a_reason_this_version_does_not_know_passes_through() -> None:
    assert judge(opened(LATER, 99)) == [99]


def test_rules_come_from_the_tenants_settings_in_milliseconds() -> None:
    settings = TrackerSettings(scanner_window_seconds=2.5, burst_seconds=4, gateway_click_seconds=90)
    rules = CopyRules.from_settings(settings, link_count=3, per_copy=True)
    assert rules == CopyRules(early_ms=2_500, burst_ms=4_000, gateway_click_ms=90_000, link_count=3, per_copy=True)
