"""Beacon and click throughput of the tracker, side by side with two baselines, in one run.

Same core for every server (``taskset -c 0``), the same load generator (``wrk`` pinned to core 1,
bounded duration, loopback only):
  A. nginx ``empty_gif`` (one worker, access log off): the ceiling for serving a beacon;
  B. a bare aiohttp handler returning the same GIF (uvloop, as the tracker uses it);
  3. the tracker's ``/o/{token}.gif`` with valid tokens of a 10,000-recipient message, judging
     each request (GeoIP City lookup of the X-Forwarded-For address a trusted proxy on loopback
     sends, user agent, bot verdict) and persisting to PostgreSQL; served by the lean path;
  3r. the same through aiohttp's router (``--public-routes aiohttp``): the path before the lean one;
  4. the same as 3 for ``/c/{token}/{link}`` (link 1 of each recipient's record), from the worker
     that registered the message (it remembers where each record's clicks go);
  4c. the same from a worker started afterwards: each record's first click is a (batched) look-up;
  5. the tracker with ``--workers 2`` (on this 2-core machine the load generator shares the cores).
Prints requests/s, p50/p99 and the ratios 3/B, 3/A, 4/B, 4c/B, 3r/B, 3/3r, the same for 3, 4 and 4c
from server CPU per request (steadier when other work shares the machine), once counting every process
of the server's name, once the server's own process tree (what another benchmark running at the same
time cannot add to), then counts stored events
against the accepted requests (they must be equal). Writes bench/results/tracker_http.json.
Each run cycles through the message's tokens, so a token comes back many times (a recipient's
opens and clicks repeat too, but less often): the worker's memory of verified tokens and of
click targets helps the bench more than a typical day.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.scratch_db import scratch_pg

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PG_ADMIN = os.environ.get("POLITE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
SERVER_CORE, LOAD_CORE = "0", "1"
BARE_AIOHTTP = """
import asyncio, sys, uvloop
from aiohttp import web
from politetenant.tracker.public.gif import PIXEL
HEADERS = {"Content-Type": "image/gif", "Cache-Control": "no-store, max-age=0"}
async def gif(request): return web.Response(body=PIXEL, headers=HEADERS)
app = web.Application(); app.router.add_get("/o/{token}.gif", gif)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None, loop=uvloop.new_event_loop())
"""
NGINX_CONF = """
worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  server {{ listen 127.0.0.1:{port} reuseport; location / {{ empty_gif; }} }} }}
"""
WRK_SCRIPT = """
local paths, addresses, agents = {{}}, {{}}, {{}}
for line in io.lines("{paths}") do paths[#paths + 1] = line end
for line in io.lines("{addresses}") do addresses[#addresses + 1] = line end
for line in io.lines("{agents}") do agents[#agents + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1], {{
    ["User-Agent"] = agents[(i % #agents) + 1], ["X-Forwarded-For"] = addresses[(i % #addresses) + 1]}})
end
"""
# Mail clients and a scanner, as a tracker meets them (the classifier caches each string it has seen).
AGENTS = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
    "Safari/537.36 Edg/124.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile "
    "Safari/537.36",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Thunderbird/125.0",
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    "python-requests/2.31.0",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def pinned(core: str, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", core, *cmd] if shutil.which("taskset") else cmd


def client_addresses(count: int) -> list[str]:
    """Addresses inside the sample GeoIP database's networks (every city), as proxies would forward."""
    from politetenant.tracker.cli.geoip_sample import SAMPLE_ADDRESSES

    bases = [address.rsplit(".", 2)[0] for address in SAMPLE_ADDRESSES.values() if address.startswith("100.")]
    return [f"{bases[i % len(bases)]}.{(i // 250) % 250}.{i % 250 + 1}" for i in range(count)]


def cpu_by_program() -> dict[str, float]:
    """CPU seconds used so far by the processes that share the cores with wrk during a run: the server
    under test (nginx, the bare app or the tracker's workers) and PostgreSQL (its backends do the COPY).
    (wrk's own comes from its rusage.)"""
    tick = os.sysconf("SC_CLK_TCK")
    totals = {"server": 0.0, "postgres": 0.0}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        seconds = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        if name == "postgres" or name.startswith("postgres:"):
            totals["postgres"] += seconds
        elif b"nginx" in cmdline or b"politetenant.tracker.cli.commands" in cmdline or b"web.run_app" in cmdline:
            totals["server"] += seconds
    return totals


def cpu_of_tree(pid: int) -> float:
    """CPU seconds used so far by one process and its descendants: the server under test alone, so
    whatever else runs on the machine (another benchmark's servers included) is not counted."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    seconds: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        child = int(stat.parent.name)
        parents[child] = int(fields[1])
        seconds[child] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    tree, grew = {pid}, True
    while grew:
        below = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= below
        grew = bool(below)
    return sum(seconds.get(member, 0.0) for member in tree)


def run_wrk(
    url: str, paths_file: Path, seconds: int, connections: int, tmp: Path, server_pid: int | None = None
) -> dict[str, float]:
    script, addresses, agents = tmp / "paths.lua", tmp / "addresses.txt", tmp / "agents.txt"
    addresses.write_text("\n".join(client_addresses(5000)) + "\n")
    agents.write_text("\n".join(AGENTS) + "\n")
    script.write_text(WRK_SCRIPT.format(paths=paths_file, addresses=addresses, agents=agents))
    cmd = pinned(LOAD_CORE, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url])
    before = cpu_by_program()
    own_before = cpu_of_tree(server_pid) if server_pid is not None else 0.0
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()  # until wrk exits
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}")
    after = cpu_by_program()
    if server_pid is not None:
        result_own = cpu_of_tree(server_pid) - own_before
    result = parse_wrk(out)
    if result["p50_ms"] != result["p50_ms"] or result["p99_ms"] != result["p99_ms"]:  # NaN: show what wrk said
        print(out, file=sys.stderr)
    for program in ("server", "postgres"):
        result[f"cpu_{program}"] = after[program] - before[program]
    result["cpu_wrk"] = usage.ru_utime + usage.ru_stime
    if server_pid is not None:
        result["cpu_own"] = result_own
    return result


def _ms(value: str) -> float:
    """wrk's latency figure in ms; NaN for anything else (wrk prints ``-nan`` for an empty histogram)."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if match is None:
        return float("nan")
    return float(match[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[match[2]]


def parse_wrk(out: str) -> dict[str, float]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": _ms(re.search(r"50%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "p99_ms": _ms(re.search(r"99%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "requests": total,
        "non_2xx_3xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
    }


def _us_per_request(result: dict[str, float], cpu: str = "cpu_server") -> float:
    return result[cpu] / max(result["requests"], 1) * 1e6


def scratch_db(create: bool, dsn: str = "") -> str:
    """A throw-away database on PG_ADMIN's server (the one helper all benchmarks share)."""
    return scratch_pg(PG_ADMIN, create=create, dsn=dsn)


def count_events(dsn: str) -> int:
    import asyncpg

    async def run() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM events"))
        finally:
            await conn.close()

    return asyncio.run(run())


class Tracker:
    def __init__(self, tmp: Path, dsn: str, workers: int, public_routes: str = "lean") -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        settings = tmp / f"settings-{workers}.yaml"
        settings.write_text(
            f"tenant_id: bench\npublic_base_url: {self.base}\nscanner_window_seconds: 0\nspool_dir: {tmp}/spool\n"
        )
        self.args = ["--db", dsn, "--keys", f"local:{tmp}/keys.json", "--settings", str(settings)]
        cli = [sys.executable, "-m", "politetenant.tracker.cli.commands"]
        core = SERVER_CORE if workers == 1 else "0,1"
        geoip = tmp / "geoip.mmdb"
        if not geoip.exists():
            from politetenant.tracker.cli.geoip_sample import write_sample

            write_sample(geoip)
        serve = [
            *cli, "serve", *self.args, "--port", str(self.port), "--workers", str(workers), "--geoip", str(geoip),
            "--trusted-proxies", "127.0.0.1/32", "--public-routes", public_routes,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            pinned(core, serve),
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        wait_http(f"{self.base}/healthz")
        self.cli = cli

    def token(self, role: str) -> str:
        out = subprocess.run([*self.cli, "token", "create", "--role", role, *self.args], capture_output=True, text=True)
        return out.stdout.strip()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def register(base: str, token: str, recipients: int) -> list[str]:
    body = {
        "subject": "Bench",
        "from_name": "Bench",
        "from_email": "bench@example.com",
        "list_name": "All",
        "html": "<html><body><a href='https://intranet.example.com/a'>a</a></body></html>",
        "recipients": [{"email": f"p{i}@example.com"} for i in range(recipients)],
    }
    req = urllib.request.Request(
        f"{base}/api/v1/messages",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        return [r["token"] for r in json.loads(resp.read())["recipients"]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--recipients", type=int, default=10_000)
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is missing: `make bench` installs it (apt-get install wrk nginx-light)")
    tmp = Path(tempfile.mkdtemp(prefix="polite-http-"))
    results: dict[str, Any] = {}
    beacon_paths = tmp / "beacons.txt"
    beacon_paths.write_text("/o/x.gif\n")

    # A: nginx empty_gif
    port = free_port()
    (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, port=port))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen(pinned(SERVER_CORE, [nginx, "-c", str(tmp / "nginx.conf"), "-p", str(tmp)]))
    wait_http(f"http://127.0.0.1:{port}/o/x.gif")
    results["A nginx empty_gif"] = run_wrk(
        f"http://127.0.0.1:{port}", beacon_paths, args.seconds, args.connections, tmp, proc.pid
    )
    proc.terminate()
    proc.wait()

    # B: bare aiohttp
    port = free_port()
    proc = subprocess.Popen(pinned(SERVER_CORE, [sys.executable, "-c", BARE_AIOHTTP, str(port)]), cwd=ROOT)
    wait_http(f"http://127.0.0.1:{port}/o/x.gif")
    results["B bare aiohttp"] = run_wrk(
        f"http://127.0.0.1:{port}", beacon_paths, args.seconds, args.connections, tmp, proc.pid
    )
    proc.terminate()
    proc.wait()

    accepted = 0
    dsn = scratch_db(create=True)
    runs = [  # label, workers, public routes, paths, whether the serving process registered the message
        ("3 tracker /o/", 1, "lean", "o", True),
        ("3r tracker /o/ via router", 1, "aiohttp", "o", True),
        ("4 tracker /c/", 1, "lean", "c", True),
        ("4c tracker /c/ cold cache", 1, "lean", "c", False),
        ("5 tracker /o/ --workers 2", 2, "lean", "o", True),
    ]
    try:
        for label, workers, public_routes, kind, registered_here in runs:
            tracker = Tracker(tmp, dsn, workers, public_routes)
            try:
                tokens = register(tracker.base, tracker.token("sender"), args.recipients)
                if not registered_here:  # a fresh process knows none of it: every first click is looked up
                    tracker.stop()
                    tracker = Tracker(tmp, dsn, workers, public_routes)
                paths = tmp / f"{kind}.txt"
                paths.write_text("".join((f"/o/{t}.gif\n" if kind == "o" else f"/c/{t}/1\n") for t in tokens))
                results[label] = run_wrk(tracker.base, paths, args.seconds, args.connections, tmp, tracker.proc.pid)
                accepted += int(results[label]["requests"] - results[label]["non_2xx_3xx"])
            finally:
                tracker.stop()
        stored = count_events(dsn)
    finally:
        scratch_db(create=False, dsn=dsn)

    a, b = results["A nginx empty_gif"]["rps"], results["B bare aiohttp"]["rps"]
    ratios = {
        "3/B": results["3 tracker /o/"]["rps"] / b,
        "3/A": results["3 tracker /o/"]["rps"] / a,
        "4/B": results["4 tracker /c/"]["rps"] / b,
        "4c/B": results["4c tracker /c/ cold cache"]["rps"] / b,
        "3r/B": results["3r tracker /o/ via router"]["rps"] / b,
        "3/3r": results["3 tracker /o/"]["rps"] / results["3r tracker /o/ via router"]["rps"],
        "workers 2 / 1": results["5 tracker /o/ --workers 2"]["rps"] / results["3 tracker /o/"]["rps"],
    }
    # Other work on the machine moves req/s a lot between runs; server CPU per request much less. The
    # same ratios from CPU per request (bare aiohttp's over the tracker's) say what the code costs.
    cpu_ratios = {
        f"{key} cpu": _us_per_request(results["B bare aiohttp"]) / _us_per_request(results[label])
        for key, label in (("3/B", "3 tracker /o/"), ("4/B", "4 tracker /c/"), ("4c/B", "4c tracker /c/ cold cache"))
    }
    # The same from the server's own process tree only: the figures above add up every process of
    # that name, so another benchmark's server running at the same time would count as this one's.
    own_ratios = {
        f"{key} own": _us_per_request(results["B bare aiohttp"], "cpu_own") / _us_per_request(results[label], "cpu_own")
        for key, label in (("3/B", "3 tracker /o/"), ("4/B", "4 tracker /c/"), ("4c/B", "4c tracker /c/ cold cache"))
    }
    RESULTS.mkdir(exist_ok=True)
    summary = {
        "results": results, "ratios": ratios, "cpu_ratios": cpu_ratios, "own_cpu_ratios": own_ratios,
        "accepted": accepted, "stored": stored,
    }  # fmt: skip
    summary["lost"] = max(0, accepted - stored)
    (RESULTS / "tracker_http.json").write_text(json.dumps(summary, indent=2))
    print(
        f"{'server':<30} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}   CPU s: {'server':>6} {'wrk':>5} "
        f"{'pg':>5}  server us/req  own us/req"
    )
    for label, r in results.items():
        per_request = _us_per_request(r)
        print(
            f"{label:<30} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['non_2xx_3xx']:>8.0f}          "
            f"{r['cpu_server']:>6.1f} {r['cpu_wrk']:>5.1f} {r['cpu_postgres']:>5.1f}  {per_request:>13.1f}"
            f"  {_us_per_request(r, 'cpu_own'):>10.1f}"
        )
    print("ratios: " + ", ".join(f"{k} = {v:.2f}" for k, v in ratios.items()))
    print("by server CPU per request: " + ", ".join(f"{k} = {v:.2f}" for k, v in cpu_ratios.items()))
    print(
        "by the server's own processes' CPU per request: " + ", ".join(f"{k} = {v:.2f}" for k, v in own_ratios.items())
    )
    # wrk counts only responses it read before its deadline; requests still in flight then were
    # served and stored too, so stored may exceed accepted by at most one request per connection.
    in_flight = args.connections * len(runs)
    verdict = "ok" if accepted <= stored <= accepted + in_flight else "LOST EVENTS" if stored < accepted else "TOO MANY"
    print(
        f"accepted {accepted} events (answered 2xx before wrk stopped), stored {stored}: {verdict} "
        f"(stored may exceed accepted by the <= {in_flight} requests in flight at wrk's deadline)"
    )


if __name__ == "__main__":
    main()
