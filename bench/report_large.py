"""A report on a 100,000-recipient message with 1,000,000 events, on SQLite and PostgreSQL.

The rows are written straight through the Store (records by COPY on PostgreSQL, events in batches
through ``insert_events``), in one process; the report is then measured in a fresh process, so its
peak RSS (VmHWM) is the report's alone. The baseline in the same process is the least any report
must do: ``SELECT kind, COUNT(*) ... GROUP BY kind`` over the same events. Prints seconds, peak RSS
and the ratio to the baseline, for the whole-message report and the one segmented by department;
writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.ingest import DEVICES  # the same device mix as the ingest rows
from bench.scratch_db import scratch_pg

RESULTS = Path(__file__).resolve().parent / "results"
MESSAGE_ID = "msg_bench0000000000000001"
TENANT = "bench"
BASELINE_SQL = (
    "SELECT e.kind, COUNT(*) FROM records r JOIN events e ON e.record_id = r.id WHERE r.message_id = $1 GROUP BY e.kind"
)
CITIES = [("IE", f"City {n}") for n in range(25)] + [("DE", "Berlin"), ("US", "New York")]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def _open(db: str, keys: str) -> Any:
    from politetenant.tracker.server.app import load_keyring
    from politetenant.tracker.storage import open_store

    store = open_store(db)
    await store.connect()
    await store.migrate()
    return store, load_keyring(keys, TENANT)


async def populate(db: str, keys: str, recipients: int, events: int) -> dict[str, Any]:
    from politetenant.crypto import Sealer, new_record_id
    from politetenant.tracker.reports.figures import fold
    from politetenant.tracker.storage.rows import Event, LinkRow, MessageRow, RecordRow

    store, keyring = await _open(db, keys)
    sealer = Sealer(keyring)
    rng = random.Random(7)
    created = int(time.time() * 1000) - 7 * 86_400_000
    message = MessageRow(
        MESSAGE_ID, created, "anonymous", sealer.seal_text("message.subject", "Bench"),
        sealer.seal_text("message.from_name", "Bench"), sealer.seal_text("message.from_email", "b@example.com"),
        sealer.seal_text("message.list_name", "Everyone"), recipients, recipients, 300, 55.0, 5, "bench",
    )  # fmt: skip
    records = []
    for n in range(recipients):
        attributes = json.dumps({"campus": f"campus-{n % 7}", "department": f"dept-{n % 40}"}, separators=(",", ":"))
        records.append(
            RecordRow(new_record_id(), MESSAGE_ID, sealer.seal("record.attributes", attributes.encode()), None)
        )
    links = [LinkRow(MESSAGE_ID, 0, None, None)]
    links += [
        LinkRow(MESSAGE_ID, n, sealer.seal_text("link.url", f"https://intranet.example.com/{n}"),
                sealer.seal_text("link.text", f"Link {n}"))
        for n in range(1, 6)
    ]  # fmt: skip
    started = time.perf_counter()
    await store.insert_message(message, [], records, links)
    ids = [r.id for r in records]
    del records
    places = [(c, sealer.seal_repeated("event.city", city)) for c, city in CITIES]
    batch: list[Event] = []
    for n in range(events):
        record = ids[rng.randrange(len(ids))]
        device, os_, browser = DEVICES[rng.randrange(len(DEVICES))]
        country, city = places[rng.randrange(len(places))]
        roll = rng.random()  # 15 % clicks, 20 % reads, 65 % opens
        kind, link, read_ms = 1, None, None
        if roll < 0.15:
            kind, link = 3, rng.randint(1, 5)
        elif roll < 0.35:
            kind, read_ms = 2, rng.randint(200, 30_000)
        bot = 2 if rng.random() < 0.05 else 0
        at = created + rng.randint(1_000, 5 * 86_400_000)
        event_id = n.to_bytes(16, "big")
        batch.append(Event(event_id, record, kind, link, at, country, None, city, os_, device, browser, bot, read_ms))
        if len(batch) == 50_000:
            await store.insert_events(batch)
            batch = []
    await store.insert_events(batch)
    seconds = time.perf_counter() - started
    counted = await store.count_rows("events")
    fold_seconds = 0.0
    if not db.startswith("sqlite"):
        # What a tracker does every few seconds while the events arrive: fold them into the records'
        # figures (reports.figures). Timed here as one fold of all of them, a cost of its own.
        started = time.perf_counter()
        await fold(store)
        fold_seconds = time.perf_counter() - started
        await store.execute("ANALYZE")  # what autovacuum does within a minute of such a load
    await store.close()
    return {"populate_seconds": seconds, "fold_seconds": fold_seconds, "events": counted}


async def measure(db: str, keys: str, segment: str | None) -> dict[str, Any]:
    from politetenant.crypto import Sealer
    from politetenant.tracker.judging.behaviour import CopyRules
    from politetenant.tracker.reports.build import build_report
    from politetenant.tracker.reports.report_data import load_report_inputs

    store, keyring = await _open(db, keys)
    sealer = Sealer(keyring)
    started = time.perf_counter()
    counts = await store.fetch(BASELINE_SQL, MESSAGE_ID)
    baseline = time.perf_counter() - started
    message = await store.get_message(MESSAGE_ID)
    rss_before = _status_kib("VmRSS")
    started = time.perf_counter()
    rules = CopyRules(early_ms=2_000, burst_ms=10_000, gateway_click_ms=120_000, link_count=message.link_count)
    inputs = await load_report_inputs(store, sealer, message, rules, segment)
    report = build_report(message, inputs, 10)
    seconds = time.perf_counter() - started
    body = json.dumps(report)
    await store.close()
    return {
        "seconds": seconds,
        "baseline_seconds": baseline,
        "ratio_to_count_baseline": seconds / baseline,
        "peak_rss_mib": _status_kib("VmHWM") / 1024,
        "rss_before_report_mib": rss_before / 1024,
        "events": sum(int(c) for _, c in counts),
        "report_bytes": len(body),
        "opens_unique": report["opens"]["unique"],
    }


async def page(db: str, keys: str) -> dict[str, Any]:
    """Server time of the dashboard's message page against the API's report, through a live tracker:
    the page reads the same report (plus the medians of recent messages) and renders it."""
    from aiohttp.test_utils import TestClient, TestServer

    from politetenant.settings import TrackerSettings
    from politetenant.tracker.http.auth import Role, create_api_token
    from politetenant.tracker.server.app import TrackerConfig, build_app, build_state

    spool = tempfile.mkdtemp(prefix="polite-bench-spool-")
    settings = TrackerSettings(tenant_id=TENANT, segment_attributes=("department",), spool_dir=spool)
    state = build_state(TrackerConfig(settings=settings, db=db, keys=keys))
    client = TestClient(TestServer(build_app(state)))
    await client.start_server()
    try:
        token = await create_api_token(state.store, Role.ANALYST)
        timings: dict[str, list[float]] = {"api": [], "page": []}
        sizes: dict[str, int] = {}
        signed_in = await client.post("/ui/sign-in", data={"token": token}, allow_redirects=False)
        assert signed_in.status == 303, signed_in.status
        for _ in range(2):
            for name, url, headers in (
                ("api", f"/api/v1/messages/{MESSAGE_ID}/report", {"Authorization": f"Bearer {token}"}),
                ("page", f"/ui/messages/{MESSAGE_ID}", {}),
            ):
                started = time.perf_counter()
                response = await client.get(url, headers=headers)
                body = await response.read()
                timings[name].append(time.perf_counter() - started)
                assert response.status == 200, (name, response.status)
                sizes[name] = len(body)
        api, shown = min(timings["api"]), min(timings["page"])
        return {"api_seconds": api, "page_seconds": shown, "page_to_api": shown / api,
                "api_bytes": sizes["api"], "page_bytes": sizes["page"]}  # fmt: skip
    finally:
        await client.close()


def _child(args: argparse.Namespace) -> None:
    if args.step == "populate":
        result = asyncio.run(populate(args.db, args.keys, args.recipients, args.events))
    elif args.step == "page":
        result = asyncio.run(page(args.db, args.keys))
    else:
        result = asyncio.run(measure(args.db, args.keys, args.segment or None))
    print(json.dumps(result))


def _run(*extra: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.report_large", "--child", *extra]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--step", choices=["populate", "measure", "page"], default="measure")
    parser.add_argument("--db", default="sqlite")
    parser.add_argument("--keys", default="")
    parser.add_argument("--segment", default="")
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--pg", default=os.environ.get("POLITE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--pg-settings", default="", help="server settings for the report's connections, e.g. jit=off")
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    rows, pages = [], []
    for db_name in ("sqlite", "postgresql"):
        tmp = tempfile.mkdtemp(prefix="polite-bench-")
        keys = f"local:{tmp}/keys.json"
        made = f"sqlite:///{tmp}/bench.db" if db_name == "sqlite" else scratch_pg(args.pg, create=True)
        db = made if db_name == "sqlite" or not args.pg_settings else f"{made}?{args.pg_settings}"
        try:
            sizes = ("--recipients", str(args.recipients), "--events", str(args.events))
            filled = _run("--step", "populate", "--db", db, "--keys", keys, *sizes)
            for segment in ("", "department"):
                result = _run("--step", "measure", "--db", db, "--keys", keys, "--segment", segment)
                rows.append({"db": db_name, "report": segment or "whole", **filled, **result})
            pages.append({"db": db_name, **_run("--step", "page", "--db", db, "--keys", keys)})
        finally:
            if db_name == "postgresql":
                scratch_pg(args.pg, create=False, dsn=made)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "report_large.json").write_text(json.dumps({"reports": rows, "pages": pages}, indent=2) + "\n")
    print(f"{args.recipients:,} records, {args.events:,} events; PostgreSQL settings: {args.pg_settings or 'server'}")
    print(f"{'db':<11} {'report':<11} {'seconds':>8} {'count(*)':>9} {'ratio':>6} {'peak RSS':>9} {'before':>7}")
    for r in rows:
        print(
            f"{r['db']:<11} {r['report']:<11} {r['seconds']:>8.2f} {r['baseline_seconds']:>9.2f} "
            f"{r['ratio_to_count_baseline']:>6.1f} {r['peak_rss_mib']:>7.0f}Mi {r['rss_before_report_mib']:>5.0f}Mi"
        )

    for r in rows:
        if r["fold_seconds"] and r["report"] == "whole":
            print(
                f"PostgreSQL figures: folding the {r['events']:,} events in one go took {r['fold_seconds']:.2f} s"
                f" ({r['events'] / r['fold_seconds']:,.0f} events/s), {r['fold_seconds'] / r['populate_seconds']:.2f}x"
                f" the {r['populate_seconds']:.2f} s of storing them (trackers fold as events arrive, every 5 s)"
            )
    print("dashboard message page vs the API's report of the same message (best of 2, server round trip):")
    for p in pages:
        print(
            f"{p['db']:<11} page {p['page_seconds']:>6.2f} s ({p['page_bytes'] / 1024:.0f} KiB)"
            f"  api {p['api_seconds']:>6.2f} s ({p['api_bytes'] / 1024:.0f} KiB)  ratio {p['page_to_api']:.2f}"
        )


if __name__ == "__main__":
    main()
