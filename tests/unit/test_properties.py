"""Properties that must hold for any input (Hypothesis): tokens, sealing, HTML rewriting, rendering,
and reports: no small population shown, nothing hidden recoverable from what is shown."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from politetenant.crypto import Keyring, KeySet, Sealer, SealError, TokenCodec, new_record_id
from politetenant.tracker.judging.behaviour import CopyRules
from politetenant.tracker.judging.verdicts import Reason
from politetenant.tracker.messages.html_rewrite import TOKEN_PLACEHOLDER, rewrite_html
from politetenant.tracker.reports.build import OTHER, build_report, heatmap_fold
from politetenant.tracker.reports.report_data import (
    Accumulator,
    EventRow,
    LinkInfo,
    ReportInputs,
    Tally,
    merged,
    weekday_hour,
)
from politetenant.tracker.reports.thresholds import ALL, coarsen
from politetenant.tracker.storage.rows import MessageRow

KEYRING = Keyring("acme", [KeySet(1, os.urandom(32), os.urandom(32), os.urandom(32))])
CODEC = TokenCodec(KEYRING)
SEALER = Sealer(KEYRING)
ISSUED = {CODEC.issue(new_record_id()) for _ in range(50)}
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.text(max_size=80))
def test_token_verification_never_raises_and_accepts_only_issued_tokens(candidate: str) -> None:
    result = CODEC.verify(candidate)
    assert result is None or candidate in ISSUED


@FAST
@given(st.binary(min_size=1, max_size=40), st.sampled_from(sorted(ISSUED)))
def test_any_change_to_an_issued_token_is_rejected(noise: bytes, token: str) -> None:
    position = noise[0] % len(token)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    replacement = alphabet[noise[-1] % len(alphabet)]
    altered = token[:position] + replacement + token[position + 1 :]
    if altered != token:
        assert CODEC.verify(altered) is None


@FAST
@given(st.binary(max_size=2000), st.sampled_from(["recipient.email", "link.url", "event.city"]))
def test_sealing_round_trips(plaintext: bytes, field: str) -> None:
    assert SEALER.open(field, SEALER.seal(field, plaintext)) == plaintext


@FAST
@given(st.binary(max_size=200), st.integers(min_value=0), st.integers(min_value=1, max_value=255))
def test_any_tampering_with_a_sealed_value_fails(plaintext: bytes, where: int, flip: int) -> None:
    sealed = bytearray(SEALER.seal("recipient.name", plaintext))
    sealed[where % len(sealed)] ^= flip
    try:
        opened = SEALER.open("recipient.name", bytes(sealed))
    except SealError:
        return
    raise AssertionError(f"tampered value opened to {opened!r}")


_HREF = re.compile(r"""href\s*=\s*["']?([^"'\s>]+)""", re.IGNORECASE)
_links = st.sampled_from(
    [
        "https://a.example/x?y=1&amp;z=2",
        "http://b.example/",
        "javascript:alert(1)",
        "data:text/html,<b>x</b>",
        "mailto:x@example.com",
        "#top",
        "/relative",
        "HTTPS://C.EXAMPLE/Q",
        " https://d.example/space ",
    ]
)
_fragments = st.one_of(
    st.text(alphabet="<>/=\"' abc!-\n&;", max_size=20),
    _links.map(lambda url: f'<a href="{url}">text</a>'),
    _links.map(lambda url: f"<A HREF='{url}'>t</A>"),
    st.just("<!-- <a href='https://hidden.example/'>x</a> -->"),
    st.just("<script>var a='<a href=\"https://js.example/\">';</script>"),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_fragments, max_size=12))
def test_rewriting_tracks_each_http_link_once_and_never_a_script_url(parts: list[str]) -> None:
    html = "".join(parts)
    result = rewrite_html(html, "https://t.example", ())
    tracked_urls = [link.url for link in result.links]
    assert all(url.lower().startswith(("http://", "https://")) for url in tracked_urls)
    assert [link.number for link in result.links] == list(range(1, len(result.links) + 1))
    # Every rewritten href points at the tracker exactly once per tracked link, beacons aside.
    click_hrefs = [m for m in _HREF.findall(result.template) if m.startswith("https://t.example/c/")]
    numbers = sorted(int(h.rsplit("/", 1)[1]) for h in click_hrefs if not h.endswith("/0"))
    assert numbers == list(range(1, len(result.links) + 1))
    assert result.template.count(f"https://t.example/o/{TOKEN_PLACEHOLDER}.gif") == 1
    # (Whether a link inside a comment or script counts depends on how the junk before it parses, as
    # in a browser: `<a<script>` is a tag named "a<script". test_html_rewrite pins the plain cases.)


# --------------------------------------------------------------------------------------------------
# Reports: people, proxies and machines, whole and side by side.

_CREATED = 1_699_999_200_000
_LINKS = (LinkInfo(1, "policy", "https://a.example/"), LinkInfo(2, "faq", "https://b.example/"))
_RULES = CopyRules(early_ms=2_000, burst_ms=10_000, gateway_click_ms=120_000, link_count=2)
_APART = ("proxied_opens", "privacy_proxy_opens", "machine")
_reasons = st.sampled_from(
    [Reason.PERSON, Reason.PERSON, Reason.PROXIED, Reason.PRIVACY_PROXY, Reason.SCANNER_AGENT, Reason.LIBRARY,
     Reason.HONEYPOT, Reason.GATEWAY_NETWORK, Reason.HEAD]
)  # fmt: skip
_hit = st.tuples(st.sampled_from([1, 2, 3]), st.integers(0, 2), st.integers(0, 7_200), _reasons)  # kind, link, s, why
_copy = st.tuples(st.sampled_from("ABCD"), st.sampled_from(["mobile", "desktop"]), st.lists(_hit, max_size=4))
_copies = st.lists(st.tuples(_copy, st.integers(1, 9)), max_size=10)  # (copy, how many records behave so)


def _events(
    copies: list[tuple[tuple[str, str, list[tuple[int, int, int, int]]], int]],
) -> tuple[list[EventRow], dict[bytes, str]]:
    events: list[EventRow] = []
    segment_of: dict[bytes, str] = {}
    n = 0
    for (segment, device, hits), times in copies:
        for _ in range(times):
            record = n.to_bytes(12, "big")
            n += 1
            segment_of[record] = segment
            for kind, link, seconds, why in hits:
                at = _CREATED + 3_600_000 + seconds * 1000
                read_ms = 4_000 if kind == 2 else None
                events.append(
                    (record, kind, link if kind == 3 else None, at, "IE", None, "iOS", device, "Mail", why, read_ms)
                )
    return sorted(events, key=lambda e: (e[0], e[3], e[1])), segment_of


def _report(
    events: list[EventRow], segment_of: dict[bytes, str], k: int, segmented: bool
) -> tuple[dict[str, Any], dict[str, Tally]]:
    acc = Accumulator(_RULES, _CREATED, segment_of=segment_of if segmented else None)
    acc.add(events)
    populations: dict[str, int] = {}
    for segment in segment_of.values() if segmented else ["*"] * len(segment_of):
        populations[segment] = populations.get(segment, 0) + 1
    tallies = acc.finish(populations)
    message = MessageRow("msg_00000000000000000001", _CREATED, "anonymous", b"s", b"s", b"s", b"s",
                         len(segment_of), len(segment_of), 100, 60.0, 2, "tok")  # fmt: skip
    inputs = ReportInputs(tallies, _LINKS, "team" if segmented else None)
    return build_report(message, inputs, k), tallies


def _populations(part: Mapping[str, Any]) -> Iterator[int]:
    """Every figure of a report part that counts records (a population), wherever it stands."""
    for section in [*part.get("breakdowns", {}).values(), part.get("read_time")]:
        if section is not None:
            yield from (b["records"] for b in section["buckets"])
            yield from ([section["other"]] if section["other"] is not None else [])
    for link in part.get("links", {}).get("buckets", []):
        yield from ([link["clicks"]["unique"]] if link["clicks"] else [])
    for windows in part.get("timeline", {}).values():
        yield from (w["records"] for w in windows)
    machine = part.get("machine")
    if machine is not None:
        yield machine["records"]
        yield from (b["records"] for b in machine["by_reason"]["buckets"])
        yield from ([machine["by_reason"]["other"]] if machine["by_reason"]["other"] is not None else [])
    for name in ("proxied_opens", "privacy_proxy_opens"):
        yield from ([part[name]["unique"]] if part.get(name) is not None else [])
    heatmap = part.get("heatmap")
    if heatmap is not None:
        yield from (c["records"] for c in heatmap["cells"])
        yield from ([heatmap["other"]] if heatmap["other"] is not None else [])
        if heatmap["cells"]:  # what the shown cells leave of the openers (opens.unique is shown anyway)
            yield part["opens"]["unique"] - sum(c["records"] for c in heatmap["cells"])


def _without_visible_reason(tally: Tally, shown: set[int]) -> int:
    visible = sum(1 << n for n in shown)
    return sum(count for mask, count in tally.reason_masks.items() if not mask & visible)


_LABELS = {reason.name.lower(): int(reason) for reason in Reason}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_copies, st.integers(min_value=5, max_value=8))
def test_reports_never_show_a_small_population_nor_let_one_be_derived(copies: Any, k: int) -> None:
    events, segment_of = _events(copies)
    whole, tallies = _report(events, segment_of, k, segmented=False)
    side, per_segment = _report(events, segment_of, k, segmented=True)
    if whole["suppressed"]:
        assert side == whole
        return
    rows = [*side["segments"]["values"], *([side["segments"]["other"]] if side["segments"]["other"] else [])]
    for part in (whole, *rows):
        assert all(n == 0 or n >= k for n in _populations(part)), part
        shown_machine = part["machine"] or {"opens": 0, "clicks": 0}
        shown_apple = part["privacy_proxy_opens"] or {"total": 0}
        assert part["bots"] == {
            "opens": shown_machine["opens"] + shown_apple["total"],
            "clicks": shown_machine["clicks"],
        }
    for name in _APART:  # side by side: in every row or in none, and then the rows add up to the whole
        assert len({part[name] is None for part in rows}) <= 1, name
        if rows and rows[0][name] is not None and whole[name] is not None:
            key = "records" if name == "machine" else "unique"
            assert sum(part[name][key] for part in rows) == whole[name][key]
    if whole["machine"] is None:
        return
    whole_labels = {b["label"] for b in whole["machine"]["by_reason"]["buckets"]}
    # Machine records under no named reason = records - those under a named one: never small.
    assert safe(_without_visible_reason(tallies["*"], {_LABELS[label] for label in whole_labels}), k)
    row_tallies = {v["value"]: per_segment[v["value"]] for v in side["segments"]["values"]}
    if side["segments"]["other"] is not None:
        row_tallies[OTHER] = merged(t for s, t in per_segment.items() if s not in row_tallies)
    for part in rows:
        if part["machine"] is None:
            continue
        labels = {b["label"] for b in part["machine"]["by_reason"]["buckets"]}
        assert labels <= whole_labels  # never finer than the whole
        tally = row_tallies[part.get("value", OTHER)]
        assert safe(_without_visible_reason(tally, {_LABELS[label] for label in labels}), k)


def safe(n: int, k: int) -> bool:
    return n == 0 or n >= k


_opens_by_hour = st.dictionaries(st.integers(0, 24 * 21), st.integers(1, 9), max_size=11)  # three weeks


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_opens_by_hour, st.integers(min_value=5, max_value=8))
def test_heatmap_and_timeline_together_never_give_a_small_group_of_openers_away(
    first_opens: dict[int, int], k: int
) -> None:
    """Whatever hours people first opened in: every set of timeline windows that holds all the hours of
    the shown cells it touches has a known number of openers outside those cells; it is 0 or >= k."""
    windows = coarsen({ALL: first_opens}, k)
    fold = heatmap_fold(first_opens, windows, k)
    cells: dict[tuple[int, int], int] = {}
    for hour, n in first_opens.items():
        cells[weekday_hour(hour)] = cells.get(weekday_hour(hour), 0) + n
    assert all(cells[c] >= k for c in fold.shown)
    assert not fold.shown or safe(sum(first_opens.values()) - sum(cells[c] for c in fold.shown), k)
    window_of = {h: i for h in first_opens for i, w in enumerate(windows) if w.start <= h < w.end}
    assert len(window_of) == len(first_opens) or not windows
    for chosen in range(1, 2 ** len(windows)):  # every set of windows, by brute force
        inside = {i for i in range(len(windows)) if chosen >> i & 1}
        touched = {weekday_hour(h) for h, i in window_of.items() if i in inside} & set(fold.shown)
        if any(window_of[h] not in inside for h in first_opens if weekday_hour(h) in touched):
            continue  # a shown cell reaches outside: its part inside is not known
        known = sum(windows[i].counts[ALL] for i in inside) - sum(cells[c] for c in touched)
        assert safe(known, k), (inside, touched, known)
