"""Registering big messages: 100,000 recipients, and a 5 MB HTML body, on SQLite and PostgreSQL.

Each case runs in a fresh process so peak RSS (VmHWM) belongs to that case alone. The baseline in
the same run is what any server must do at least: ``json.loads`` of the same request body and
``json.dumps`` of an equally large response. Prints seconds, peak RSS and the ratio to the baseline;
writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.scratch_db import scratch_pg

RESULTS = Path(__file__).resolve().parent / "results"


def _hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def make_body(recipients: int, html_bytes: int) -> bytes:
    paragraph = '<p>Our quarterly update. See <a href="https://intranet.example.com/doc/{i}">document {i}</a>.</p>\n'
    parts, size, i = [], 0, 0
    while size < html_bytes:
        chunk = paragraph.format(i=i)
        parts.append(chunk)
        size += len(chunk)
        i += 1
    body = {
        "subject": "Benchmark message",
        "from_name": "Bench",
        "from_email": "bench@example.com",
        "list_name": "Everyone",
        "html": "<html><body>" + "".join(parts) + "</body></html>",
        "recipients": [
            {
                "email": f"person{n:07d}@example.com",
                "name": f"Person {n}",
                "attributes": {"department": f"dept-{n % 40}", "campus": f"campus-{n % 7}"},
            }
            for n in range(recipients)
        ],
    }
    return json.dumps(body).encode()


def baseline(recipients: int, html_bytes: int) -> dict[str, Any]:
    raw = make_body(recipients, html_bytes)
    started = time.perf_counter()
    parsed = json.loads(raw)
    out = json.dumps({"recipients": [{"email": r["email"], "token": "x" * 35} for r in parsed["recipients"]]})
    return {"seconds": time.perf_counter() - started, "request_bytes": len(raw), "response_bytes": len(out)}


async def register(db: str, recipients: int, html_bytes: int) -> dict[str, Any]:
    from aiohttp.test_utils import TestClient, TestServer

    from politetenant.settings import TrackerSettings
    from politetenant.tracker.http.auth import Role, create_api_token
    from politetenant.tracker.server.app import RUNNER_OPTIONS, TrackerConfig, build_app, build_state

    tmp = tempfile.mkdtemp(prefix="polite-bench-")
    if db == "sqlite":
        db = f"sqlite:///{tmp}/bench.db"
    settings = TrackerSettings(tenant_id="bench", spool_dir=f"{tmp}/spool")
    state = build_state(TrackerConfig(settings=settings, db=db, keys=f"local:{tmp}/keys.json"))
    server = TestServer(build_app(state))
    await server.start_server(**RUNNER_OPTIONS)
    client = TestClient(server)
    token = await create_api_token(state.store, Role.SENDER)
    raw = make_body(recipients, html_bytes)
    before = _hwm_kib()
    started = time.perf_counter()
    resp = await client.post(
        "/api/v1/messages", data=raw, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    )
    answer = await resp.read()
    seconds = time.perf_counter() - started
    assert resp.status == 201, answer[:500]
    stored = await state.store.count_rows("records")
    await client.close()
    return {
        "seconds": seconds,
        "peak_rss_mib": _hwm_kib() / 1024,
        "rss_growth_mib": (_hwm_kib() - before) / 1024,
        "records_stored": stored,
        "request_bytes": len(raw),
        "response_bytes": len(answer),
    }


def _child(args: argparse.Namespace) -> None:
    if args.db == "baseline":
        result = baseline(args.recipients, args.html_bytes)
    else:
        result = asyncio.run(register(args.db, args.recipients, args.html_bytes))
    print(json.dumps(result))


def _run_case(db: str, recipients: int, html_bytes: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.register_message", "--child", "--db", db,
           "--recipients", str(recipients), "--html-bytes", str(html_bytes)]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--db", default="sqlite")
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--html-bytes", type=int, default=2_000)
    parser.add_argument(
        "--pg", default=os.environ.get("POLITE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    cases = [("100k recipients", 100_000, 2_000), ("5 MB HTML body", 10, 5_000_000)]
    rows = []
    for label, recipients, html in cases:
        base = _run_case("baseline", recipients, html)
        for db_name in ("sqlite", "postgresql"):
            db = "sqlite" if db_name == "sqlite" else scratch_pg(args.pg, create=True)
            try:
                result = _run_case(db, recipients, html)
            finally:
                if db_name == "postgresql":
                    scratch_pg(args.pg, create=False, dsn=db)
            result.update(case=label, db=db_name, baseline_seconds=base["seconds"],
                          ratio_to_json_baseline=result["seconds"] / base["seconds"])  # fmt: skip
            rows.append(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "register_message.json").write_text(json.dumps(rows, indent=2))
    print(f"{'case':<18} {'db':<11} {'seconds':>8} {'json base':>9} {'ratio':>6} {'peak RSS':>9} {'records':>8}")
    for r in rows:
        print(
            f"{r['case']:<18} {r['db']:<11} {r['seconds']:>8.2f} {r['baseline_seconds']:>9.2f} "
            f"{r['ratio_to_json_baseline']:>6.1f} {r['peak_rss_mib']:>7.0f}Mi {r['records_stored']:>8}"
        )


if __name__ == "__main__":
    main()
