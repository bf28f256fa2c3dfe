"""The verdict vocabulary: why a hit was (not) a person's, and which class of figure it feeds.

Every stored event carries one :class:`Reason` (column ``events.bot``, a small integer). A reason is
decided in one of two places:

- on arrival (``judge.Judge``), from the request alone: user agent, network, method, headers;
- at report time (``behaviour.judge_copy``), from what one copy of the message did: its hits in a
  burst, the honeypot, how soon after the message's first hit. These are never stored: they depend
  on hits that arrive later, and a rule change applies to past messages at once.

Each reason belongs to one class (DESIGN.md §4):

- ``person``: a person's own mail client fetched it; counted, with device and place;
- ``proxied``: a webmail image proxy (Gmail, Yahoo, Outlook.com) fetched it for a person who opened
  the message; counted as a person's open, without device or place;
- ``privacy_proxy``: Apple Mail Privacy Protection fetched every image on delivery, read or not;
  reported apart and never in a rate;
- ``machine``: scanners, security gateways, HTTP libraries, headless browsers, prefetches, HEAD.

Values are stable (they are stored); new reasons take new numbers.
"""

from __future__ import annotations

import enum
from typing import Final


class Reason(enum.IntEnum):
    """Why a hit is or is not a person's. Stored as its integer value in ``events.bot``."""

    PERSON = 0
    SCANNER_AGENT = 1  # user agent of a security scanner, link checker or crawler
    SCANNER_NETWORK = 2  # address inside a configured scanner network
    HONEYPOT = 3  # hit on the hidden link no person can see
    EARLY_HIT = 4  # report time: within the early window after the message's first hit
    NO_AGENT = 5  # no user agent at all
    PROXIED = 6  # a webmail image proxy fetching for a person (Gmail, Yahoo, Outlook.com)
    PRIVACY_PROXY = 7  # Apple Mail Privacy Protection: bare "Mozilla/5.0" from Apple's networks
    LIBRARY = 8  # HTTP client library, automation tool or headless browser, by user agent
    PREFETCH = 9  # "Sec-Purpose: prefetch" / "Purpose: prefetch": fetched ahead, not seen
    HEAD = 10  # a HEAD request: a link checker asking whether the URL exists
    GATEWAY_NETWORK = 11  # address inside a mail security gateway's network (Microsoft EOP, Mimecast, ...)
    HONEYPOT_BURST = 12  # report time: same burst of the copy as a honeypot hit
    ALL_LINKS_BURST = 13  # report time: the copy opened/clicked every link within one burst
    GATEWAY_CLICK = 14  # report time: a click from a gateway network with no open of the copy just before


class VerdictClass(enum.StrEnum):
    PERSON = "person"
    PROXIED = "proxied"
    PRIVACY_PROXY = "privacy_proxy"
    MACHINE = "machine"


_CLASS: Final = {Reason.PERSON: VerdictClass.PERSON, Reason.PROXIED: VerdictClass.PROXIED,
                 Reason.PRIVACY_PROXY: VerdictClass.PRIVACY_PROXY}  # fmt: skip

#: Reasons decided on arrival (stored); the others are decided at report time.
ARRIVAL_REASONS: Final = frozenset(
    {
        Reason.PERSON,
        Reason.SCANNER_AGENT,
        Reason.SCANNER_NETWORK,
        Reason.HONEYPOT,
        Reason.NO_AGENT,
        Reason.PROXIED,
        Reason.PRIVACY_PROXY,
        Reason.LIBRARY,
        Reason.PREFETCH,
        Reason.HEAD,
        Reason.GATEWAY_NETWORK,
    }
)


def verdict_class(reason: int) -> VerdictClass:
    """The class a stored or report-time reason feeds; an unknown number counts as machine."""
    try:
        return _CLASS.get(Reason(reason), VerdictClass.MACHINE)
    except ValueError:
        return VerdictClass.MACHINE


def counts_as_person(reason: int) -> bool:
    """Opens and clicks in a report are people's: a person's own client or a proxy fetching for one."""
    return reason == Reason.PERSON or reason == Reason.PROXIED


def reason_label(reason: int) -> str:
    """The name a report gives a machine reason (``scanner_agent``, ``gateway_network``, ...)."""
    try:
        return Reason(reason).name.lower()
    except ValueError:
        return "unknown"


def reasons_of(verdict: VerdictClass) -> tuple[Reason, ...]:
    """The known reasons of one class, by value: SQL that classes stored reasons is built from this,
    so a class is never spelt twice (an unknown number is in no list: it counts as machine)."""
    return tuple(reason for reason in Reason if verdict_class(reason) is verdict)


def person_reasons() -> tuple[Reason, ...]:
    """The reasons whose hits count as people's (``counts_as_person``), by value."""
    return tuple(reason for reason in Reason if counts_as_person(reason))
