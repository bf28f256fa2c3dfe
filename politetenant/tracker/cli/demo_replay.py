"""The clients the demo simulates, and how it replays their hits: the walk-through's and the history's.

Devices, a security gateway, Apple's and Gmail's proxies fetch from the networks and with the user
agents they use in life (through ``X-Forwarded-For`` from loopback, which the demo trusts as a
proxy), so the tracker judges each hit as it would in production. ``write_history`` registers the
planned history (``demo_history``) through the API, replays it, then moves it back in time.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from politetenant.tracker.cli.demo_history import CopyPlan, MessagePlan, StoredHit, plan_history, registration, retime
from politetenant.tracker.http.state import TrackerState
from politetenant.tracker.judging.verdicts import counts_as_person

DEVICES = {
    "iPhone Mail": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148",
    "Outlook on Windows": "Mozilla/4.0 (compatible; ms-office; MSOffice 16; Windows NT 10.0; Win64; x64; "
    "Microsoft Outlook 16.0.17029)",
    "Chrome on Windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Gmail on Android": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
    "Apple Mail on macOS": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko)",
}
# Fetchers that are not the people themselves, from the networks and with the user agents they use.
GATEWAY_IP = "40.107.22.51"  # Microsoft Exchange Online Protection (40.107.0.0/16, published by Microsoft)
GATEWAY_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
)
APPLE_MPP_IP = "17.58.63.10"  # Apple Mail Privacy Protection proxies fetch from Apple's 17.0.0.0/8
GMAIL_PROXY_IP = "66.102.8.21"
GMAIL_PROXY_UA = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"


async def hit(session: aiohttp.ClientSession, url: str, ua: str, ip: str) -> int:
    """One fetch as a client at ``ip`` makes it (the demo's tracker trusts loopback as a proxy)."""
    async with session.get(url, headers={"User-Agent": ua, "X-Forwarded-For": ip}, allow_redirects=False) as r:
        await r.read()
        return r.status


async def read(session: aiohttp.ClientSession, url: str, ua: str, ip: str, seconds: float) -> None:
    """A reader who keeps the message open for ``seconds`` (the read-time beacon streams meanwhile)."""
    async with session.get(url, headers={"User-Agent": ua, "X-Forwarded-For": ip}) as r:
        await r.content.read(6)
        await asyncio.sleep(seconds)  # the reader has the message open; then closes it


async def _bounded(jobs: Sequence[Awaitable[None]], limit: int) -> None:
    gate = asyncio.Semaphore(limit)

    async def one(job: Awaitable[None]) -> None:
        async with gate:
            await job

    await asyncio.gather(*(one(job) for job in jobs))


async def _delivery(session: aiohttp.ClientSession, base: str, plan: MessagePlan, tokens: Sequence[str]) -> None:
    for copy, token in zip(plan.copies, tokens, strict=True):
        if copy.gateway_scan:
            await hit(session, f"{base}/o/{token}.gif", GATEWAY_UA, GATEWAY_IP)
            for link in range(len(plan.links) + 1):
                await hit(session, f"{base}/c/{token}/{link}", GATEWAY_UA, GATEWAY_IP)
        if copy.person.apple_mpp:
            await hit(session, f"{base}/o/{token}.gif", "Mozilla/5.0", APPLE_MPP_IP)


async def _person(
    session: aiohttp.ClientSession, base: str, copy: CopyPlan, token: str, addresses: Mapping[str, str]
) -> None:
    """One person's opens then clicks, in order (the read-time beacon streams apart)."""
    ua, ip = DEVICES[copy.person.device], addresses[copy.person.city]
    for _ in copy.opens:
        if copy.person.gmail_proxy:
            await hit(session, f"{base}/o/{token}.gif", GMAIL_PROXY_UA, GMAIL_PROXY_IP)
        else:
            await hit(session, f"{base}/o/{token}.gif", ua, ip)
    for _, link in copy.clicks:
        await hit(session, f"{base}/c/{token}/{link}", ua, ip)


@dataclass(frozen=True, slots=True)
class Written:
    messages: int
    recipients: int
    hits: int
    seconds: float


async def write_history(base: str, sender: str, state: TrackerState, addresses: Mapping[str, str]) -> Written:
    """Register the planned history through the API, replay its hits, then move it to its planned times.

    Delivery and people's hits are replayed together, not one after the other as the tracker would
    see them: the move back in time tells them apart by the tracker's own verdict and spaces them."""
    started = time.monotonic()
    plans = plan_history(int(time.time() * 1000))
    registered: list[tuple[str, list[str]]] = []
    # No cap on connections: hundreds of readers hold theirs open while the others open and click.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for plan in plans:
            async with session.post(
                f"{base}/api/v1/messages", json=registration(plan), headers={"Authorization": f"Bearer {sender}"}
            ) as r:
                created: dict[str, Any] = await r.json()
                if r.status != 201:
                    raise RuntimeError(f"registering the history failed: {r.status} {created.get('error')}")
            by_email = {row["email"]: row["token"] for row in created["recipients"]}
            registered.append((created["id"], [by_email[c.person.email] for c in plan.copies]))
        copies = [
            (c, token)
            for plan, (_, tokens) in zip(plans, registered, strict=True)
            for c, token in zip(plan.copies, tokens, strict=True)
        ]
        reads = [
            read(session, f"{base}/t/{t}.gif", DEVICES[c.person.device], addresses[c.person.city], c.read_seconds)
            for c, t in copies
            if c.read_seconds is not None
        ]
        delivery = [_delivery(session, base, p, t) for p, (_, t) in zip(plans, registered, strict=True)]
        people = [_person(session, base, c, t, addresses) for c, t in copies if c.opens]
        await asyncio.gather(asyncio.gather(*reads), _bounded([*delivery, *people], 32))
    for _ in range(40):  # the tracker notices each hang-up within a quarter second
        if state.read_streams == 0:
            break
        await asyncio.sleep(0.1)
    await state.ingest._flush(final=True)
    hits = await _move_back_in_time(state, plans, registered)
    return Written(len(plans), len(copies), hits, time.monotonic() - started)


def _record_id(state: TrackerState, token: str) -> bytes:
    verified = state.tokens.verify(token)
    if verified is None:  # the tracker issued it a moment ago: only a changed key could do this
        raise RuntimeError("a token of the demo's history does not verify")
    return verified.record_id


async def _move_back_in_time(
    state: TrackerState, plans: Sequence[MessagePlan], registered: Sequence[tuple[str, list[str]]]
) -> int:
    """A demo cannot wait three weeks: give each message and hit the time its plan says.

    Only the history's own rows change (its messages, the events of its records); one UPDATE
    statement per table, run for each row."""
    events: list[tuple[int, bytes]] = []
    for plan, (message_id, tokens) in zip(plans, registered, strict=True):
        copy_of = {_record_id(state, t): c for c, t in zip(plan.copies, tokens, strict=True)}
        rows = await state.store.fetch(
            "SELECT e.event_id, e.record_id, e.kind, e.occurred_at, e.bot FROM events e"
            " JOIN records r ON r.id = e.record_id WHERE r.message_id = $1",
            message_id,
        )
        per_record: dict[bytes, list[StoredHit]] = defaultdict(list)
        for event_id, record_id, kind, occurred_at, bot in rows:
            per_record[bytes(record_id)].append(StoredHit(bytes(event_id), int(kind), int(occurred_at), int(bot)))
        machines = [h.occurred_at for hits in per_record.values() for h in hits if not counts_as_person(h.reason)]
        delivered_from = min(machines, default=0)
        for record_id, hits in per_record.items():
            events += retime(plan, copy_of[record_id], hits, delivered_from=delivered_from)
    await state.store.executemany("UPDATE events SET occurred_at = $1 WHERE event_id = $2", events)
    await state.store.executemany(
        "UPDATE messages SET created_at = $1 WHERE id = $2",
        [(plan.sent_at, message_id) for plan, (message_id, _) in zip(plans, registered, strict=True)],
    )
    return len(events)
