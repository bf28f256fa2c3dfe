"""Behaviour rules, decided at report time from what one copy of a message did.

A request alone cannot always tell a gateway from a person: Microsoft Defender's Safe Links opens
and clicks with an ordinary browser user agent, minutes after delivery. What gives it away is what
the copy did as a whole, and that is only known once its later hits have arrived. So these rules run
when a report is built, over each copy's (record's) hits, and are never stored: a rule change
applies to past messages at once.

- A *burst* is a maximal run of the copy's hits, each within ``burst_ms`` of the previous one. A
  burst that hits the honeypot (the hidden link ``0``) is a machine's: its other hits become
  ``HONEYPOT_BURST``. A burst that clicks every tracked link of a message with two or more becomes
  ``ALL_LINKS_BURST``: no reader follows every link within seconds.
- A click from a mail gateway's network (stored ``GATEWAY_NETWORK``) is a person's click routed
  through the gateway's link protection only if a person's open (or read) of the same copy came at
  most ``gateway_click_ms`` before it; otherwise it is the gateway checking the link
  (``GATEWAY_CLICK``). An open from a gateway's network stays a machine's.
- Hits before ``first_hit_ms + early_ms`` are ``EARLY_HIT``: gateways scan at delivery, minutes or
  hours after registration, so the window starts at the message's first hit, whoever made it.

Report-time rules only ever turn a person's hit (``PERSON``/``PROXIED``) into a machine's; a hit
already judged machine or privacy proxy on arrival keeps its more specific reason. In aggregate mode
one record is everyone's copy, so only the early window applies (``per_copy=False``).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from politetenant.settings import TrackerSettings
from politetenant.tracker.judging.verdicts import Reason, counts_as_person

OPEN, READ, CLICK = 1, 2, 3  # events.kind (storage.rows.EventKind; judging does not import storage)
HONEYPOT_LINK = 0


class Hit(NamedTuple):
    """One stored event of a copy, as far as behaviour goes."""

    kind: int  # 1 open, 2 read, 3 click
    link_no: int | None  # clicks: the link number, 0 the honeypot
    occurred_at: int  # epoch ms
    reason: int  # the Reason stored on arrival (events.bot)


@dataclass(frozen=True, slots=True)
class CopyRules:
    """The windows the rules use (ms) and what the message is: its tracked links, its mode."""

    early_ms: int = 0
    burst_ms: int = 0
    gateway_click_ms: int = 0
    link_count: int = 0
    per_copy: bool = True  # False in aggregate mode: one record is everyone's, copy rules do not apply

    @classmethod
    def from_settings(cls, settings: TrackerSettings, *, link_count: int, per_copy: bool) -> CopyRules:
        """The tenant's windows for one message (``link_count`` tracked links, honeypot aside)."""
        return cls(
            early_ms=round(settings.scanner_window_seconds * 1000),
            burst_ms=round(settings.burst_seconds * 1000),
            gateway_click_ms=round(settings.gateway_click_seconds * 1000),
            link_count=link_count,
            per_copy=per_copy,
        )


def is_honeypot(hit: Hit) -> bool:
    return (hit.kind == CLICK and hit.link_no == HONEYPOT_LINK) or hit.reason == Reason.HONEYPOT


def bursts(hits: Sequence[Hit], burst_ms: int) -> Iterator[range]:
    """Index ranges of the maximal runs of hits each at most ``burst_ms`` after the previous one."""
    start = 0
    for i in range(1, len(hits)):
        if hits[i].occurred_at - hits[i - 1].occurred_at > burst_ms:
            yield range(start, i)
            start = i
    if hits:
        yield range(start, len(hits))


def burst_reason(burst: Sequence[Hit], link_count: int) -> Reason | None:
    """What a burst's hits are if the burst gives a machine away, else None."""
    if any(is_honeypot(hit) for hit in burst):
        return Reason.HONEYPOT_BURST
    if link_count >= 2:
        clicked = {hit.link_no for hit in burst if hit.kind == CLICK and hit.link_no}
        if all(n in clicked for n in range(1, link_count + 1)):
            return Reason.ALL_LINKS_BURST
    return None


def judge_copy(hits: Sequence[Hit], first_hit_ms: int | None, rules: CopyRules) -> list[int]:
    """The effective reason of each of one copy's hits (sorted by ``occurred_at``), in their order.

    ``first_hit_ms``: the message's earliest event of any record and reason (None: no event yet).
    A stored number this version does not know is passed through (it counts as machine).
    """
    flagged: dict[int, Reason] = {}  # hit index -> the reason its burst gives it
    if rules.per_copy and len(hits) > 1:
        for span in bursts(hits, rules.burst_ms):
            if len(span) > 1:  # a lone hit's burst says nothing its own reason does not
                reason = burst_reason(hits[span.start : span.stop], rules.link_count)
                if reason is not None:
                    flagged.update(dict.fromkeys(span, reason))
    early_until = None if first_hit_ms is None else first_hit_ms + rules.early_ms

    def report_time(i: int, reason: int) -> int:
        if not counts_as_person(reason):
            return reason
        if is_honeypot(hits[i]):
            return Reason.HONEYPOT
        burst = flagged.get(i)
        if burst is not None:
            return burst
        if early_until is not None and hits[i].occurred_at < early_until:
            return Reason.EARLY_HIT
        return reason

    judged: list[int] = []
    gateway_clicks: list[int] = []
    for i, hit in enumerate(hits):
        if rules.per_copy and hit.reason == Reason.GATEWAY_NETWORK and hit.kind == CLICK:
            gateway_clicks.append(i)  # decided below, once the people's opens are known
        judged.append(report_time(i, hit.reason))  # a machine's reason (gateway clicks too) stands
    if gateway_clicks:  # opens never depend on gateway clicks, so the people's opens are final now
        opened = [h.occurred_at for h, r in zip(hits, judged, strict=True) if h.kind != CLICK and counts_as_person(r)]
        for i in gateway_clicks:
            at = hits[i].occurred_at
            before = bisect.bisect_right(opened, at) - 1
            routed = before >= 0 and at - opened[before] <= rules.gateway_click_ms
            judged[i] = report_time(i, Reason.PERSON) if routed else Reason.GATEWAY_CLICK
    return judged
