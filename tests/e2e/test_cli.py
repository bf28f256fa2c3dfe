"""The command line as a user meets it: shared state between subcommands, exit 2 with a fix-it line."""

from __future__ import annotations

import http.client
import json
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from politetenant.tracker.http.auth import REVOCATION_SECONDS
from tests.e2e.tracker_process import cli_env, prepare_workdir, register_message, running_tracker
from tests.support import free_port, message_body, write_settings

CLI = [sys.executable, "-m", "politetenant.tracker.cli.commands"]
ROLES = ("sender", "analyst", "privacy")


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


def common(tmp_path: Path) -> list[str]:
    settings = write_settings(
        tmp_path / "settings.yaml", tenant_id="acme", spool_dir=str(tmp_path / "spool"), min_segment_size=5
    )
    return ["--db", f"sqlite:///{tmp_path}/t.db", "--keys", f"local:{tmp_path}/keys.json", "--settings", str(settings)]


def test_token_created_by_the_cli_works_against_serve(tmp_path: Path) -> None:
    args = common(tmp_path)
    created = run("token", "create", "--role", "sender", *args)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("ptk_") and "shown once" in created.stderr
    assert token.encode() not in (tmp_path / "t.db").read_bytes()  # only its hash is stored
    port = free_port()
    server = subprocess.Popen([*CLI, "serve", *args, "--port", str(port)], stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        request = urllib.request.Request(
            f"{base}/api/v1/messages",
            data=json.dumps(message_body(6)).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 201
            recipients = json.loads(resp.read())["recipients"]
            assert len(recipients) == 6
        # One keep-alive connection on the real server (uvloop): a beacon on the lean path, then a
        # request it hands to aiohttp with the connection, then a beacon aiohttp answers.
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        answers = []
        for path in (f"/o/{recipients[0]['token']}.gif", "/healthz", f"/o/{recipients[1]['token']}.gif"):
            connection.request("GET", path, headers={"User-Agent": "Mozilla/5.0 (Windows NT 10.0) Outlook"})
            response = connection.getresponse()
            answers.append((response.status, response.getheader("Content-Type"), len(response.read())))
        connection.close()
        assert answers[0] == answers[2] == (200, "image/gif", 43)
        assert answers[1][0] == 200 and answers[1][1].startswith("application/json")
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0


def test_settings_error_exits_2_naming_the_field(tmp_path: Path) -> None:
    bad = write_settings(tmp_path / "bad.yaml", min_segment_size=3, default_mode="stealth")
    result = run("migrate", "--db", f"sqlite:///{tmp_path}/t.db", "--settings", str(bad))
    assert result.returncode == 2
    assert "min_segment_size" in result.stderr and "default_mode" in result.stderr
    assert "Traceback" not in result.stderr


def test_environment_variables_configure_every_subcommand(tmp_path: Path) -> None:
    env = {"POLITE_DB": f"sqlite:///{tmp_path}/env.db", "POLITE_KEYS": f"local:{tmp_path}/k.json", "PATH": "/usr/bin"}
    env["POLITE_MIN_SEGMENT_SIZE"] = "4"
    result = run("migrate", env=env)
    assert result.returncode == 2 and "min_segment_size" in result.stderr
    env["POLITE_MIN_SEGMENT_SIZE"] = "12"
    result = run("migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "env.db").exists()


def test_bad_flags_exit_2_with_a_fix_it_line(tmp_path: Path) -> None:
    cases = [
        (["migrate", "--db", "mysql://x"], "sqlite:///PATH or postgresql://"),
        (["serve", "--keys", "vault://x", "--db", f"sqlite:///{tmp_path}/a.db"], "not a Vault address"),
        (["serve", "--keys", "kms:x", "--db", f"sqlite:///{tmp_path}/a.db"], "local:PATH"),
        (["serve", "--trusted-proxies", "10.0.0.0/33", "--db", f"sqlite:///{tmp_path}/a.db"], "10.0.0.0/33"),
        (["serve", "--workers", "0"], "--workers"),
        (["serve", "--geoip", str(tmp_path / "missing.mmdb")], "missing.mmdb"),
        (["token", "create", "--role", "admin"], "invalid choice"),
        (["token", "revoke", "a1b2c3d4e5f6"], "give ptk_<12 lowercase hex> or the whole token"),
        (["serve", "--ops-port", "70000", "--db", f"sqlite:///{tmp_path}/a.db"], "--ops-port 70000: not a port"),
        (["serve", "--port", "8081", "--ops-port", "8081"], "--ops-port 8081: must differ from --port"),
        (["serve", "--api-tokens-dir", str(tmp_path / "none")], "none: not a directory"),
    ]
    for args, words in cases:
        result = run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert words in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def _demo_output_until_it_serves(demo: subprocess.Popen[str], deadline: float) -> str:
    """What `demo --serve` prints up to its last line before it waits (it keeps running)."""
    assert demo.stdout is not None
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = demo.stdout.readline()
        assert line, "the demo ended before serving: " + "".join(lines[-20:])
        lines.append(line)
        if "/metrics | grep polite_" in line:  # the last line of "Explore it yourself"
            return "".join(lines)
    raise AssertionError("the demo did not start serving in time")


def _get(url: str, token: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_demo_runs_on_the_embedded_defaults_prints_the_report_and_serves_its_history(tmp_path: Path) -> None:
    port = free_port()
    demo = subprocess.Popen(
        [*CLI, "demo", "--dir", str(tmp_path / "demo"), "--serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    watchdog = threading.Timer(180, demo.kill)  # a stuck demo fails the test instead of hanging it
    watchdog.start()
    try:
        out = _demo_output_until_it_serves(demo, time.monotonic() + 170)
        start = out.index("{\n")
        report = json.loads(out[start : out.index("\n}\n", start) + 2])
        assert report["recipients"] == 40 and report["suppressed"] is False
        # People's opens: 17 in their own mail client and 4 through Gmail's image proxy; nothing the gateway,
        # the scanner, Apple's prefetch, the script or the link checker fetched at delivery.
        assert report["opens"] == {"unique": 21, "total": 26} and report["rates"]["open"] == 0.525
        assert report["privacy_proxy_opens"] == {"unique": 10, "total": 10}
        assert report["proxied_opens"] is None  # 4 people: fewer than the minimum segment of 10
        assert report["machine"]["records"] == 14 and report["machine"]["opens"] == 14
        assert report["machine"]["clicks"] == 8 * 4 + 2  # the gateway followed every link; two HEAD checks
        assert report["clicks"] == {"unique": 5, "total": 6} and report["reads"]["unique"] == 5
        assert "people's opens (unique / total)          21 / 26" in out
        assert 'curl -s -H "Authorization: Bearer ptk_' in out
        assert (tmp_path / "demo" / "keys.json").stat().st_mode & 0o777 == 0o600

        # The dashboard's address and a sign-in token for each of its two roles, each one that works.
        base = f"http://127.0.0.1:{port}"
        assert f"the dashboard: {base}/ui/" in out and "paste a token into the dashboard's sign-in form" in out
        analyst = out.split("analyst sign-in token: ")[1].split()[0]
        privacy = out.split("privacy sign-in token: ")[1].split()[0]
        assert _get(f"{base}/api/v1/audit", privacy)[0] == 200
        assert _get(f"{base}/api/v1/audit", analyst)[0] == 403

        # The history, as the running tracker lists it: eight earlier messages over weeks, newest first.
        status, listed = _get(f"{base}/api/v1/messages?limit=50", analyst)
        assert status == 200
        messages = listed["messages"]
        assert len(messages) == 9 and messages[0]["recipients"] == 40  # the walk-through's is the newest
        history = messages[1:]
        now_ms = time.time() * 1000
        days_back = [(now_ms - m["created_at"]) / 86_400_000 for m in history]
        assert all(d > 1 for d in days_back) and max(days_back) - min(days_back) > 14
        assert all(not m["suppressed"] and m["recipients"] >= 200 for m in history)
        rates = {round(m["opens"]["unique"] / m["tracked"], 2) for m in history}
        assert len(rates) >= 6 and max(rates) - min(rates) > 0.15
        assert all(m["privacy_proxy_opens"]["unique"] > 0 and m["machine"]["records"] > 0 for m in history)
        for m in history:  # the same list, printed by the demo
            assert m["subject"] in out
        # One message's segment view: departments above the minimum segment show their figures.
        status, segmented = _get(f"{base}/api/v1/messages/{history[-1]['id']}/report?segment=department", analyst)
        assert status == 200
        shown = [v for v in segmented["segments"]["values"] if v.get("opens") is not None]
        assert len(shown) >= 5
    finally:
        demo.send_signal(signal.SIGINT)  # Ctrl-C: the demo stops its tracker and exits cleanly
        code = demo.wait(timeout=30)
        watchdog.cancel()
    assert code == 0


def _sample(metrics: str, name: str) -> float:
    return float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith(name + " ")))


async def test_metrics_of_two_workers_add_up_on_the_ops_port(tmp_path: Path) -> None:
    """Each worker counts in its own process; a scrape must see the whole tracker, whichever
    worker takes the connection. Hits arrive on fresh connections, so both workers serve some."""
    db = f"sqlite:///{tmp_path}/tracker.db"
    workdir, keys, api_token = prepare_workdir(tmp_path, db)
    with running_tracker(workdir, db, keys=keys, extra_args=("--workers", "2"), ops_port=True) as tracker:
        tokens = await register_message(tracker.base_url, api_token, 20)
        connector = aiohttp.TCPConnector(force_close=True)  # a new connection, so a new draw, per request
        async with aiohttp.ClientSession(connector=connector) as session:
            for n in range(200):
                async with session.get(f"{tracker.base_url}/o/{tokens[n % 20]}.gif") as resp:
                    assert resp.status == 200
            scrapes = []
            for _ in range(10):
                async with session.get(f"{tracker.ops_url}/metrics") as resp:
                    scrapes.append(await resp.text())
            for path in ("/metrics", "/healthz", "/readyz"):  # not on the main port: no Ingress exposes them
                async with session.get(f"{tracker.base_url}{path}") as resp:
                    assert (resp.status, (await resp.json())["error"]) == (404, "not_found"), path
            async with session.get(f"{tracker.ops_url}/readyz") as resp:
                assert resp.status == 200 and (await resp.json())["database"] == "up"
            async with session.get(f"{tracker.base_url}/api/v1/openapi.json") as resp:
                assert "/metrics" not in (await resp.json())["paths"]
    accepted = [_sample(text, "polite_events_accepted_total") for text in scrapes]
    assert accepted == [200.0] * 10, accepted
    assert all('polite_requests_total{outcome="2xx",route="/o/{token}.gif"} 200.0' in text for text in scrapes)


def test_bootstrap_tokens_work_against_serve_and_revoke_stops_one(tmp_path: Path) -> None:
    """The operator's Secret, mounted as files, is imported at start: each role's token works at once.
    ``token revoke`` takes the id (as the audit log names it) and says what it did by its exit code."""
    args = common(tmp_path)
    secret = tmp_path / "api-tokens"
    secret.mkdir()
    tokens = {role: f"ptk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}" for role in ROLES}
    for role, token in tokens.items():
        (secret / role).write_text(token)
    broken = tmp_path / "broken-tokens"
    shutil.copytree(secret, broken)
    (broken / "sender").write_text("not-a-token-at-all")
    refused = run("serve", *args, "--api-tokens-dir", str(broken))
    assert refused.returncode == 2 and "sender token is malformed" in refused.stderr and str(broken) in refused.stderr
    assert "not-a-token-at-all" not in refused.stderr and "Traceback" not in refused.stderr

    port = free_port()
    env = {**cli_env(), "POLITE_API_TOKENS_DIR": str(secret)}
    server = subprocess.Popen([*CLI, "serve", *args, "--port", str(port)], stderr=subprocess.PIPE, text=True, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(base)
        assert _api(base, tokens["analyst"]) == 200
        assert _api(base, tokens["sender"]) == 403  # a sender may not list messages: the file's role counts
        analyst_id = tokens["analyst"].split("_")[1]
        revoked = run("token", "revoke", f"ptk_{analyst_id}", *args)
        assert revoked.returncode == 0 and "revoked ptk_" in revoked.stderr and tokens["analyst"] not in revoked.stderr
        again = run("token", "revoke", tokens["analyst"], *args)  # the whole token names it too
        assert again.returncode == 0 and "revoked already" in again.stderr
        unknown = run("token", "revoke", "ptk_000000000000", *args)
        assert unknown.returncode == 1 and "no token ptk_000000000000" in unknown.stderr
        time.sleep(REVOCATION_SECONDS + 0.5)  # running workers refuse it once their cached row expires
        assert _api(base, tokens["analyst"]) == 401
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0
    audit = sqlite3.connect(tmp_path / "t.db").execute("SELECT action, detail FROM audit ORDER BY id").fetchall()
    assert ("token.revoke", f"id={analyst_id} role=analyst") in audit
    assert sum(1 for action, detail in audit if action == "token.create" and "api-tokens-dir" in detail) == 3


def _wait_healthy(base: str) -> None:
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{base} did not answer /healthz")


def _api(base: str, token: str) -> int:
    request = urllib.request.Request(f"{base}/api/v1/messages", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
