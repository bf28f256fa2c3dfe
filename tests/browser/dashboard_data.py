"""The history the dashboard's browser tests look at, registered and hit through the tracker's own API
and beacons, with the truths the tests hold the pages to (how many copies Apple's proxy opened, how
many people a hidden department has).

Four messages, oldest first: two small ones above the threshold (so the message page has medians and
the list a trend), one below it (the list must show "fewer than k recipients" and no figure), and the
main one, newest: four departments, one of them (Legal) below the threshold, opened by people on
phones, desktops and webmail in four cities, by Apple Mail Privacy Protection (a bare "Mozilla/5.0"
from Apple's 17.0.0.0/8 through the trusted loopback proxy) and by a mail security gateway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from tests.browser.harness import LiveTracker
from tests.conftest import Tracker
from tests.integration.test_reports_api import hit, people, register, store_reads, tokens_of
from tests.support import UA_CHROME, UA_IPHONE_MAIL, UA_OUTLOOK

K: Final = 5  # min_segment_size of the live tracker
SETTINGS: Final[dict[str, Any]] = {"min_segment_size": K, "segment_attributes": ("department",)}

UA_APPLE_PROXY: Final = "Mozilla/5.0"  # what Apple's proxy sends: no device, no mail client
IP_APPLE: Final = "17.58.63.10"
IP_GATEWAY: Final = "40.107.3.4"  # Exchange Online Protection, in the built-in gateway list
IP_DUBLIN, IP_FRANKFURT, IP_BERLIN, IP_NEW_YORK = "192.0.2.10", "198.51.100.20", "198.51.100.200", "203.0.113.30"

MAIN_SUBJECT: Final = "Quarterly all-hands: new parental leave policy"
SMALL_SUBJECT: Final = "Canteen closed on Friday"
# The main message's departments; Legal is below the threshold and must never be named or counted.
DEPARTMENTS: Final = (("Engineering", 14), ("Sales", 12), ("Finance", 12), ("Legal", 3))
HIDDEN_GROUP: Final = "Legal"
HIDDEN_GROUP_SIZE: Final = 3


@dataclass(frozen=True)
class History:
    """What was registered, and what the tests know to be true of it."""

    main_id: str
    suppressed_id: str
    older_ids: tuple[str, ...]
    apple_copies: int  # copies of the main message opened only by Apple's proxy
    gateway_copies: int  # copies opened by the gateway (a machine)


async def _main_message(t: Tracker) -> tuple[str, int, int]:
    out = await register(t, people(*DEPARTMENTS), subject=MAIN_SUBJECT, list_name="All staff")
    tokens = tokens_of(out)
    engineering, sales, finance, legal = tokens[:14], tokens[14:26], tokens[26:38], tokens[38:]
    for token in engineering[:10]:
        await hit(t, f"/o/{token}.gif", UA_IPHONE_MAIL, IP_DUBLIN)
    for token in sales[:8]:
        await hit(t, f"/o/{token}.gif", UA_OUTLOOK, IP_FRANKFURT)
    for token in finance[:6]:
        await hit(t, f"/o/{token}.gif", UA_CHROME, IP_BERLIN)
    for token in legal[:2]:
        await hit(t, f"/o/{token}.gif", UA_IPHONE_MAIL, IP_NEW_YORK)
    for token in engineering[:6]:
        await hit(t, f"/c/{token}/1", UA_CHROME, IP_DUBLIN)
    for token in sales[:5]:
        await hit(t, f"/c/{token}/2", UA_OUTLOOK, IP_FRANKFURT)
    apple = finance[6:]  # opened only by Apple's proxy: apart, never a person's open
    for token in apple:
        await hit(t, f"/o/{token}.gif", UA_APPLE_PROXY, IP_APPLE)
    gateway = sales[8:11] + engineering[11:14]  # scanned at delivery by the gateway
    for token in gateway:
        await hit(t, f"/o/{token}.gif", UA_CHROME, IP_GATEWAY)
    await hit(t, f"/c/{finance[11]}/1", UA_CHROME, IP_GATEWAY)  # a gateway checking a link: no person opened
    await store_reads(t, engineering[:5], 1_500)
    await store_reads(t, engineering[5:10], 12_000)
    return str(out["id"]), len(apple), len(gateway)


async def _small_message(t: Tracker, opens: int) -> str:
    out = await register(t, 8, subject=SMALL_SUBJECT, list_name="Dublin office")
    for token in tokens_of(out)[:opens]:
        await hit(t, f"/o/{token}.gif", UA_IPHONE_MAIL, IP_DUBLIN)
    return str(out["id"])


async def _history(t: Tracker) -> History:
    older = (await _small_message(t, 3), await _small_message(t, 6))
    below = await register(t, 4, subject="Board minutes", list_name="Board")
    for token in tokens_of(below):
        await hit(t, f"/o/{token}.gif", UA_IPHONE_MAIL, IP_DUBLIN)
    main_id, apple, gateway = await _main_message(t)
    await t.flush()
    return History(main_id, str(below["id"]), older, apple, gateway)


def register_history(live: LiveTracker) -> History:
    """Register the four messages and their hits on the live tracker, stored before any page is read."""
    return live.run(_history(live.tracker), timeout=120)
