"""Registering big messages: 100,000 recipients, and a 5 MB HTML body, on SQLite and PostgreSQL.

What a sender gets: ``POST /api/v1/messages`` end to end over HTTP on loopback, against the real app
(aiohttp, auth, validation, sealing, storage). Each case runs the tracker in a fresh process, and
the client (which builds the body and sends it with http.client) in another, so the peak RSS (VmHWM)
reported is the tracker's alone, for that case alone. The seconds are the client's: from sending the
request to having read the whole answer. The baseline in the same run is what any server must do at
least: ``json.loads`` of the same request body and ``json.dumps`` of an equally large response. Each
case and the baseline run ``--repeat`` times (3), interleaved (baseline, SQLite, PostgreSQL, then
again), and their medians are compared: a shared machine has slow and fast minutes, and the baseline
measured first could land in other minutes than the product measured after it. Prints seconds,
peak RSS and the ratio to the baseline, and the tracker's CPU seconds for the request (all its
threads: steadier than seconds on a busy machine, and more than them when its threads overlap);
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

from bench.repeat import median_run
from bench.scratch_db import scratch_pg

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def _hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def make_body(recipients: int, html_bytes: int) -> bytearray:
    """The request body, written piece by piece: building it as one dict and dumping it would cost this
    process more memory than the registration it measures (peak RSS is the process's)."""
    paragraph = '<p>Our quarterly update. See <a href="https://intranet.example.com/doc/{i}">document {i}</a>.</p>\n'
    parts, size, i = [], 0, 0
    while size < html_bytes:
        chunk = paragraph.format(i=i)
        parts.append(chunk)
        size += len(chunk)
        i += 1
    envelope = {
        "subject": "Benchmark message",
        "from_name": "Bench",
        "from_email": "bench@example.com",
        "list_name": "Everyone",
        "html": "<html><body>" + "".join(parts) + "</body></html>",
    }
    out = bytearray(json.dumps(envelope)[:-1].encode() + b', "recipients": [')
    for n in range(recipients):
        if n:
            out += b", "
        recipient = {
            "email": f"person{n:07d}@example.com",
            "name": f"Person {n}",
            "attributes": {"department": f"dept-{n % 40}", "campus": f"campus-{n % 7}"},
        }
        out += json.dumps(recipient).encode()
    out += b"]}"
    return out  # a bytes copy would double the body for a moment: aiohttp sends a bytearray as it is


def baseline(recipients: int, html_bytes: int) -> dict[str, Any]:
    raw = make_body(recipients, html_bytes)
    started = time.perf_counter()
    parsed = json.loads(raw)
    out = json.dumps({"recipients": [{"email": r["email"], "token": "x" * 35} for r in parsed["recipients"]]})
    return {"seconds": time.perf_counter() - started, "request_bytes": len(raw), "response_bytes": len(out)}


async def register(db: str, recipients: int, html_bytes: int) -> dict[str, Any]:
    from aiohttp.test_utils import TestServer

    from politetenant.settings import TrackerSettings
    from politetenant.tracker.http.auth import Role, create_api_token
    from politetenant.tracker.server.app import (
        RUNNER_OPTIONS,
        TrackerConfig,
        build_app,
        build_state,
        tune_interpreter,
    )

    tmp = tempfile.mkdtemp(prefix="polite-bench-")
    if db == "sqlite":
        db = f"sqlite:///{tmp}/bench.db"
    settings = TrackerSettings(tenant_id="bench", spool_dir=f"{tmp}/spool")
    state = build_state(TrackerConfig(settings=settings, db=db, keys=f"local:{tmp}/keys.json"))
    server = TestServer(build_app(state))
    await server.start_server(**RUNNER_OPTIONS)
    tune_interpreter()  # as a worker does once it serves
    token = await create_api_token(state.store, Role.SENDER)
    before = _hwm_kib()
    cpu = time.process_time()
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.register_message", "--client", "--port", str(server.port),
        "--recipients", str(recipients), "--html-bytes", str(html_bytes),
        stdout=subprocess.PIPE, cwd=ROOT, env={**os.environ, "POLITE_BENCH_TOKEN": token},
    )  # fmt: skip
    out, _ = await client.communicate()
    cpu = time.process_time() - cpu
    sent = json.loads(out.decode().strip().splitlines()[-1])
    assert sent["status"] == 201, sent
    stored = await state.store.count_rows("records")
    peak = _hwm_kib()
    await server.close()
    return {
        "seconds": sent["seconds"],
        "server_cpu_seconds": cpu,
        "peak_rss_mib": peak / 1024,
        "rss_growth_mib": (peak - before) / 1024,
        "records_stored": stored,
        "request_bytes": sent["request_bytes"],
        "response_bytes": sent["response_bytes"],
    }


def _send(port: int, recipients: int, html_bytes: int) -> dict[str, Any]:
    """The client side, in a process of its own: build the body, POST it, read the whole answer."""
    import http.client

    raw = make_body(recipients, html_bytes)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    headers = {"Authorization": f"Bearer {os.environ['POLITE_BENCH_TOKEN']}", "Content-Type": "application/json"}
    started = time.perf_counter()
    conn.request("POST", "/api/v1/messages", body=raw, headers=headers)
    resp = conn.getresponse()
    answer = resp.read()
    seconds = time.perf_counter() - started
    conn.close()
    return {
        "seconds": seconds,
        "status": resp.status,
        "request_bytes": len(raw),
        "response_bytes": len(answer),
        "error": None if resp.status == 201 else answer[:500].decode(errors="replace"),
    }


def _child(args: argparse.Namespace) -> None:
    if args.client:
        result = _send(args.port, args.recipients, args.html_bytes)
    elif args.db == "baseline":
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
    parser.add_argument("--client", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--db", default="sqlite")
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--html-bytes", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each case; the medians are compared")
    parser.add_argument(
        "--pg", default=os.environ.get("POLITE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    args = parser.parse_args()
    if args.child or args.client:
        _child(args)
        return
    cases = [("100k recipients", 100_000, 2_000), ("5 MB HTML body", 10, 5_000_000)]
    rows = []
    for label, recipients, html in cases:
        runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "sqlite": [], "postgresql": []}
        for _ in range(args.repeat):  # interleaved, so the baseline and the product share the machine's minutes
            for db_name in runs:  # each in a fresh process and a fresh database
                db = scratch_pg(args.pg, create=True) if db_name == "postgresql" else db_name
                try:
                    runs[db_name].append(_run_case(db, recipients, html))
                finally:
                    if db_name == "postgresql":
                        scratch_pg(args.pg, create=False, dsn=db)
        base = median_run(runs["baseline"])
        for db_name in ("sqlite", "postgresql"):
            result = median_run(runs[db_name])
            result.update(case=label, db=db_name, baseline_seconds=base["seconds"],
                          runs=[r["seconds"] for r in runs[db_name]],
                          baseline_runs=[r["seconds"] for r in runs["baseline"]],
                          peak_rss_mib=max(r["peak_rss_mib"] for r in runs[db_name]),
                          ratio_to_json_baseline=result["seconds"] / base["seconds"])  # fmt: skip
            rows.append(result)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "register_message.json").write_text(json.dumps(rows, indent=2))
    print(
        f"median of {args.repeat} runs each (baseline and product, interleaved: baseline, SQLite, PostgreSQL, "
        "again), each in a fresh process; peak RSS: the largest"
    )
    head = f"{'case':<18} {'db':<11} {'seconds':>8} {'json base':>9} {'ratio':>6} {'peak RSS':>9} {'records':>8}"
    print(f"{head} {'cpu s':>6}  runs (s)")
    for r in rows:
        print(
            f"{r['case']:<18} {r['db']:<11} {r['seconds']:>8.2f} {r['baseline_seconds']:>9.2f} "
            f"{r['ratio_to_json_baseline']:>6.1f} {r['peak_rss_mib']:>7.0f}Mi {r['records_stored']:>8} "
            f"{r['server_cpu_seconds']:>6.2f}  {' '.join(f'{s:.2f}' for s in r['runs'])}"
        )


if __name__ == "__main__":
    main()
