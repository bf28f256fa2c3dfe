"""The command line as a user meets it: shared state between subcommands, exit 2 with a fix-it line."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support import free_port, message_body, write_settings

CLI = [sys.executable, "-m", "politetenant.tracker.cli.commands"]


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
    ]
    for args, words in cases:
        result = run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert words in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_demo_runs_on_the_embedded_defaults_and_prints_the_report(tmp_path: Path) -> None:
    result = run("demo", "--dir", str(tmp_path / "demo"), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    start = out.index("{\n")
    report = json.loads(out[start : out.index("\n}\n", start) + 2])
    assert report["recipients"] == 25 and report["suppressed"] is False
    assert report["opens"]["unique"] == 17 and report["bots"]["opens"] == 8
    assert report["clicks"]["total"] == 6 and report["reads"]["unique"] == 5
    assert 'curl -s -H "Authorization: Bearer ptk_' in out
    assert (tmp_path / "demo" / "keys.json").stat().st_mode & 0o777 == 0o600
