"""``polite-tracker demo``: the whole data plane on the embedded defaults, in about twenty seconds.

It starts a real tracker (SQLite, local key file, a generated GeoIP sample of documentation
addresses), registers a message to 40 recipients in three departments, replays what happens at delivery
(a security gateway, a scanner, Apple Mail Privacy Protection, a script, a link checker) and then people's
opens, read times and clicks from a few devices and cities, and prints the report. Then it writes a
history of eight earlier messages for the dashboard (``demo_history``, ``demo_replay``), lists them and
prints the dashboard's address with a sign-in token for each of its roles. Clients are simulated
through ``X-Forwarded-For`` from loopback, which the demo trusts as a proxy.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from politetenant.settings import load_settings
from politetenant.tracker.cli.demo_history import DEPARTMENTS
from politetenant.tracker.cli.demo_replay import (
    APPLE_MPP_IP,
    DEVICES,
    GATEWAY_IP,
    GATEWAY_UA,
    GMAIL_PROXY_IP,
    GMAIL_PROXY_UA,
    hit,
    read,
    write_history,
)
from politetenant.tracker.cli.geoip_sample import SAMPLE_ADDRESSES, write_sample
from politetenant.tracker.http.auth import Role, create_api_token
from politetenant.tracker.http.state import TrackerState
from politetenant.tracker.server.app import RUNNER_OPTIONS, TrackerConfig, build_app, build_state, tune_interpreter
from politetenant.tracker.server.lean_server import LeanSite

SCANNER_NETWORK = "198.18.0.0/15"  # benchmark range: stands in for a mail gateway's scanners
SCANNER_UA = "Barracuda Sentinel (EE)"
RECIPIENTS = 40
PEOPLE_OPENING = 17  # the first 17 recipients open the message in their own mail client
VIA_GMAIL = 4  # the next 4 read it in Gmail, whose image proxy fetches the beacon for them
LIBRARY_UA = "python-httpx/0.27.0"
HTML = """<html><body>
<h1>Quarterly all-hands</h1>
<p>Hello team, the new <a href="https://intranet.example.com/policies/parental-leave">parental leave policy</a>
starts next month. Read the <a href="https://intranet.example.com/faq">FAQ</a> and book a slot with
<a href="https://hr.example.com/booking">HR</a>. Questions? <a href="mailto:hr@example.com">Write to us</a>.</p>
</body></html>"""


def _step(text: str) -> None:
    print(f"==> {text}", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings_values(directory: Path, port: int, tenant_settings: Path | None) -> dict[str, Any]:
    """The demo tenant's settings: a rendered tenant's, where given, with only the laptop parts changed."""
    values: dict[str, Any] = {"tenant_id": "demo", "default_mode": "anonymous", "min_segment_size": 10}
    if tenant_settings is not None:
        values = dict(yaml.safe_load(tenant_settings.read_text(encoding="utf-8")) or {})
        _step(
            f"tracker settings of tenant {values.get('tenant_id')} from its rendered ConfigMap: "
            f"default mode {values.get('default_mode')}, minimum segment {values.get('min_segment_size')}, "
            f"retention {values.get('retention_interaction_days')}/{values.get('retention_message_days')} days"
        )
    # What only differs on a laptop: where the tracker is reached, where it spools, the demo scanner.
    values.update(
        public_base_url=f"http://127.0.0.1:{port}",
        spool_dir=str(directory / "spool"),
        audit_anchor_path=str(directory / "audit-anchor"),
        scanner_window_seconds=1,
        burst_seconds=0.5,  # the demo's people act within a second of the scans; real ones come minutes later
        scanner_networks=[SCANNER_NETWORK],
    )
    values.setdefault("segment_attributes", ["department"])
    if not values.get("segment_attributes"):
        values["segment_attributes"] = ["department"]
    return values


def _prepare(directory: Path, port: int, tenant_settings: Path | None = None) -> TrackerConfig:
    directory.mkdir(parents=True, exist_ok=True)
    geoip = directory / "sample-city.mmdb"
    write_sample(geoip)
    settings_path = directory / "settings.yaml"
    settings_path.write_text(
        "# TrackerSettings of the demo tenant (see README: configuration reference)\n"
        + yaml.safe_dump(_settings_values(directory, port, tenant_settings), sort_keys=False)
    )
    return TrackerConfig(
        settings=load_settings(settings_path, environ={}),
        db=f"sqlite:///{directory / 'tracker.db'}",
        keys=f"local:{directory / 'keys.json'}",
        geoip=str(geoip),
        trusted_proxies="127.0.0.1/32,::1/128",
    )


async def _delivery(session: aiohttp.ClientSession, base: str, tokens: list[str]) -> None:
    """What happens to a message at delivery, before any person reads it: none of it is a person's."""
    for token in tokens[:8]:  # a security gateway opens each copy and follows every link, the hidden one too
        await hit(session, f"{base}/o/{token}.gif", GATEWAY_UA, GATEWAY_IP)
        for link in (0, 1, 2, 3):
            await hit(session, f"{base}/c/{token}/{link}", GATEWAY_UA, GATEWAY_IP)
    for token in tokens[8:12]:  # an older scanner that says who it is, from the tenant's scanner network
        await hit(session, f"{base}/o/{token}.gif", SCANNER_UA, "198.18.0.7")
    for token in tokens[-10:]:  # Apple Mail Privacy Protection prefetches every image, read or not
        await hit(session, f"{base}/o/{token}.gif", "Mozilla/5.0", APPLE_MPP_IP)
    for token in tokens[12:14]:  # a script and a link checker
        await hit(session, f"{base}/o/{token}.gif", LIBRARY_UA, "203.0.113.50")
        async with session.head(f"{base}/c/{token}/1", headers={"User-Agent": GATEWAY_UA}, allow_redirects=False):
            pass
    _step(
        "at delivery: a security gateway (Microsoft EOP) opened 8 copies and followed every link, a scanner "
        "from the tenant's scanner network opened 4, Apple Mail Privacy Protection prefetched 10, a script "
        "fetched 2 beacons and a link checker sent 2 HEAD requests"
    )


def _who_fetched(report: dict[str, Any], events: int) -> None:
    """People's opens against every hit: what the judging keeps out of the people's figures."""
    if report.get("suppressed", True):
        return
    hidden = "fewer than the minimum segment: not shown"

    def pair(figure: dict[str, Any] | None, first: str, second: str) -> str:
        return hidden if figure is None else f"{figure[first]} / {figure[second]}"

    opens, machine = report["opens"], report.get("machine")
    _step(f"who fetched what ({events} hits in all):")
    rows = [
        ("people's opens (unique / total)", pair(opens, "unique", "total")),
        ("  of which via a webmail image proxy", pair(report.get("proxied_opens"), "unique", "total")),
        ("Apple privacy-protected opens (apart)", pair(report.get("privacy_proxy_opens"), "unique", "total")),
        ("machine opens / clicks", pair(machine, "opens", "clicks")),
        ("open rate, people only", f"{report.get('rates', {}).get('open')}"),
    ]
    for bucket in ((machine or {}).get("by_reason") or {}).get("buckets", []):
        rows.append((f"  machine: {bucket['label']}", f"{bucket['records']} copies"))
    for label, value in rows:
        print(f"    {label:<40} {value}", flush=True)


async def _history(state: TrackerState, base: str, sender: str, analyst: str) -> None:
    """The dashboard's material: weeks of messages, then the list of them as the API gives it."""
    # The walk-through's message has 40 recipients, the history's hundreds: one history per directory.
    if await state.store.fetch("SELECT id FROM messages WHERE recipients > $1 LIMIT 1", RECIPIENTS):
        _step("this directory holds the history of an earlier run: no second one (a fresh --dir writes one)")
        return
    _step("writing a history for the dashboard: 8 messages over the past weeks (about 15 s)...")
    written = await write_history(base, sender, state, SAMPLE_ADDRESSES)
    _step(
        f"history: {written.messages} messages to {written.recipients} recipients in {len(DEPARTMENTS)} departments, "
        f"{written.hits} hits (a gateway and Apple's prefetch at each delivery, people over the days after) "
        f"in {written.seconds:.1f} s; registered and fetched now, then moved back to their planned times in "
        "the database, since a demo cannot wait three weeks"
    )
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/api/v1/messages?limit=20", headers={"Authorization": f"Bearer {analyst}"}) as r:
            listed: dict[str, Any] = await r.json()
    _step("GET /api/v1/messages (newest first; open rate = people's unique opens / tracked copies):")
    for line in message_lines(listed["messages"]):
        print(f"    {line}", flush=True)


def message_lines(messages: list[dict[str, Any]]) -> list[str]:
    """One line per listed message: date (UTC), recipients, people's open rate, subject."""
    lines = []
    for item in messages:
        day = time.strftime("%a %Y-%m-%d %H:%M", time.gmtime(item["created_at"] / 1000))
        if item.get("suppressed", True):
            lines.append(f"{day}  (fewer recipients than the minimum segment)")
            continue
        rate = f"{item['opens']['unique'] / item['tracked']:.0%}" if item.get("tracked") else "-"
        lines.append(f"{day}  {item['recipients']:>4} recipients  opened {rate:>4}  {item['subject']}")
    return lines


async def _walkthrough(directory: Path, port: int, keep_serving: bool, tenant_settings: Path | None) -> int:
    config = _prepare(directory, port, tenant_settings)
    state = build_state(config)
    runner = web.AppRunner(build_app(state), **RUNNER_OPTIONS)  # type: ignore[arg-type]
    await runner.setup()
    await LeanSite(runner, state, "127.0.0.1", port).start()  # as `serve` does: beacons on the lean path
    tune_interpreter()
    base = f"http://127.0.0.1:{port}"
    try:
        _step(f"tracker running at {base} (SQLite {config.db[10:]}, keys {config.keys[6:]}, GeoIP sample)")
        sender = await create_api_token(state.store, Role.SENDER)
        analyst = await create_api_token(state.store, Role.ANALYST)
        _step("created API tokens for roles sender and analyst (only their hashes are stored)")

        rng = random.Random(7)
        departments = ["Finance", "Engineering", "Sales"]
        recipients = [
            {
                "email": f"employee{i:02d}@example.com",
                "name": f"Employee {i:02d}",
                "attributes": {"department": departments[i % 3], "campus": rng.choice(["Dublin", "Berlin"])},
            }
            for i in range(RECIPIENTS)
        ]
        body = {
            "subject": "Quarterly all-hands: parental leave policy",
            "from_name": "People Team",
            "from_email": "people@example.com",
            "list_name": "All staff",
            "html": HTML,
            "recipients": recipients,
        }
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{base}/api/v1/messages", json=body, headers={"Authorization": f"Bearer {sender}"}
            ) as r:
                created = await r.json()
                if r.status != 201:
                    print(json.dumps(created), file=sys.stderr)
                    return 1
            tokens = [r["token"] for r in created["recipients"]]
            _step(
                f"registered message {created['id']} to {RECIPIENTS} recipients in 3 departments, "
                f"mode {created['mode']} "
                "(the tenant's default): "
                f"{len(set(tokens))} tokens, 3 tracked links, a hidden honeypot link, 2 beacons"
            )

            await asyncio.sleep(1.1)  # the sender's mail system delivers a while after registering (minutes, really)
            await _delivery(session, base, tokens)
            await asyncio.sleep(1.1)  # delivery is over: past the early window and any burst

            cities = list(SAMPLE_ADDRESSES.items())
            devices = list(DEVICES.items())
            opened = tokens[:PEOPLE_OPENING]
            for i, token in enumerate(opened):
                ip = cities[i % len(cities)][1]
                ua = devices[i % len(devices)][1]
                await hit(session, f"{base}/o/{token}.gif", ua, ip)
                if i % 4 == 0:
                    await hit(session, f"{base}/o/{token}.gif", ua, ip)  # opened again later
            for token in tokens[PEOPLE_OPENING : PEOPLE_OPENING + VIA_GMAIL]:
                await hit(session, f"{base}/o/{token}.gif", GMAIL_PROXY_UA, GMAIL_PROXY_IP)
            _step(
                f"{len(opened)} recipients opened the message from {len(devices)} kinds of device "
                f"in {len(cities)} cities; {VIA_GMAIL} more in Gmail, whose image proxy fetched the beacon for them"
            )

            holds = [0.8, 1.6, 3.5, 4.2, 5.0]
            _step(
                f"{len(holds)} recipients keep it open for {', '.join(f'{h:g}' for h in holds)} s (read-time beacon)..."
            )
            await asyncio.gather(
                *(
                    read(session, f"{base}/t/{opened[i]}.gif", devices[i % 5][1], cities[i % 8][1], hold)
                    for i, hold in enumerate(holds)
                )
            )
            clicks = [(opened[0], 1), (opened[1], 1), (opened[2], 2), (opened[3], 1), (opened[3], 3), (opened[5], 2)]
            for token, link in clicks:
                status = await hit(session, f"{base}/c/{token}/{link}", DEVICES["Chrome on Windows"], cities[0][1])
                assert status == 302
            _step(f"{len(clicks)} clicks, each answered with a 302 to the URL stored for that link")

            for _ in range(40):  # the tracker notices each hang-up within a quarter second
                if state.read_streams == 0:
                    break
                await asyncio.sleep(0.1)
            await state.ingest._flush(final=True)
            async with session.get(
                f"{base}/api/v1/messages/{created['id']}/report", headers={"Authorization": f"Bearer {analyst}"}
            ) as r:
                report: dict[str, Any] = await r.json()
        _step("report (opens and clicks are people's; Apple's prefetches and machines are counted apart):")
        print(json.dumps(report, indent=2), flush=True)
        events = await state.store.count_rows("events")
        _who_fetched(report, events)
        _step(
            "the minimum-segment rule at work: no device, city or read-time bucket holds 10 people, so they "
            "fold into an unnamed 'other' rather than show figures about fewer than 10"
        )
        _step(f"{events} events stored; no IP address, user agent, e-mail, name or subject in plaintext at rest")
        await _history(state, base, sender, analyst)
        privacy = await create_api_token(state.store, Role.PRIVACY)
        print()
        print("Explore it yourself:")
        serve_cmd = (
            f"polite-tracker serve --db {config.db} --keys {config.keys} --settings {directory / 'settings.yaml'} "
            f"--geoip {config.geoip} --port {port} --trusted-proxies 127.0.0.1/32"
        )
        if keep_serving:
            print(f"  the tracker keeps running at {base} until Ctrl-C")
        else:
            print(f"  .venv/bin/{serve_cmd}")
        print(f"  the dashboard: {base}/ui/")
        print(f"    analyst sign-in token: {analyst}")
        print(f"    privacy sign-in token: {privacy}")
        print("    paste a token into the dashboard's sign-in form (analysts see the messages, privacy officers")
        print("    the subject-rights forms and the audit log); tokens never go in a URL")
        print(f'  curl -s -H "Authorization: Bearer {analyst}" {base}/api/v1/messages/{created["id"]}/report')
        print(f"  curl -s {base}/metrics | grep polite_")
        sys.stdout.flush()  # a pipe buffers: whoever reads `demo --serve` sees the lines before it waits
        if keep_serving:
            stop = asyncio.Event()
            try:
                await stop.wait()
            except asyncio.CancelledError:
                pass
        return 0
    finally:
        await runner.cleanup()


def run_demo(directory: str, *, serve: bool = False, port: int = 0, tenant_settings: str | None = None) -> int:
    started = time.monotonic()
    settings_file = Path(tenant_settings) if tenant_settings else None
    try:
        code = asyncio.run(_walkthrough(Path(directory).resolve(), port or _free_port(), serve, settings_file))
    except KeyboardInterrupt:
        return 0
    if code == 0:
        print(f"demo finished in {time.monotonic() - started:.1f} s", flush=True)
    return code
