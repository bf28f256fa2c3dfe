"""``kubectl polite`` as an SRE meets it: readable tables, exact patches, errors with the right exit code.

The API-level tests run the plug-in against a small HTTP server on a loopback port that answers the
paths the plug-in calls the way the Kubernetes API reference describes them: objects as JSON,
``PATCH`` with ``application/merge-patch+json`` applied by RFC 7386, ``Status`` error bodies with
``code``/``reason``/``message``, field selectors on Event lists, bearer-token authentication. The
CRD's spec-level CEL rules are run with a real CEL engine, as the API server runs them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import cel
import pytest
import yaml

from politetenant.operator.kubectl import commands
from politetenant.operator.kubectl.commands import main
from politetenant.operator.kubectl.formatting import (
    clean,
    condition_rows,
    describe_tenant,
    event_rows,
    gitops_manager,
    human_age,
    latest_events,
    legal_hold_patch,
    parse_duration,
    render_table,
    rotate_patch,
    rotation_value,
    status_document,
)
from politetenant.operator.model.crd import apply_defaults, openapi_schema
from tests.support import free_port

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
TOKEN = "sre-token"
ROTATION = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z-[0-9a-f]{8}$")
ROOT = Path(__file__).resolve().parents[3]


def stamp(seconds_ago: float, now: datetime | None = None) -> str:
    return ((now or datetime.now(UTC)) - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- formatting ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (330, "5m30s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 5 * 60, "3h5m"),
        (8 * 3600 + 59, "8h"),
        (47 * 3600, "47h"),
        (2 * 86400, "2d"),
        (2 * 86400 + 3 * 3600, "2d3h"),
        (8 * 86400 + 3 * 3600, "8d"),
        (730 * 86400, "2y"),
        (731 * 86400, "2y1d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_ages_read_like_kubectl(seconds: float, shown: str) -> None:
    assert human_age(seconds) == shown


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("5m", 300), ("1m30s", 90), ("1.5h", 5400)])
def test_durations_are_written_as_kubectl_takes_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m", "5m3", "-5s", "1h 2m"])
def test_a_malformed_duration_is_refused(text: str) -> None:
    with pytest.raises(Exception, match="not a duration"):
        parse_duration(text)


def test_a_table_aligns_its_columns_and_ends_no_line_with_blanks() -> None:
    table = render_table(("TYPE", "STATUS", "MESSAGE"), [["Ready", "True", "all good"], ["KeysReady", "", "x"]])
    assert table.splitlines() == [
        "TYPE        STATUS   MESSAGE",
        "Ready       True     all good",
        "KeysReady   -        x",
    ]


def test_messages_cannot_break_the_table_or_steer_the_terminal() -> None:
    assert clean("line one\nline two\t\x1b[31mred\x1b[0m\u202eevil") == "line one line two  [31mred [0m evil"
    table = render_table(("REASON", "MESSAGE"), [["Failed", "a\nb"]])
    assert len(table.splitlines()) == 2


def test_conditions_list_ready_first_with_their_age() -> None:
    status = {
        "conditions": [
            {"type": "TrackerReady", "status": "False", "reason": "TrackerStarting", "message": "1 of 2 pods"},
            {"type": "Ready", "status": "False", "reason": "Provisioning", "lastTransitionTime": stamp(330, NOW)},
            {
                "type": "KeysReady",
                "status": "True",
                "reason": "KeysAvailable",
                "lastTransitionTime": stamp(7200, NOW),
            },
        ]
    }
    assert condition_rows(status, NOW) == [
        ["Ready", "False", "Provisioning", "5m30s", ""],
        ["KeysReady", "True", "KeysAvailable", "120m", ""],
        ["TrackerReady", "False", "TrackerStarting", "-", "1 of 2 pods"],
    ]


def test_a_repeated_event_reads_like_kubectl_describe() -> None:
    events = [
        {"type": "Normal", "reason": "KeysRotated", "message": "version 4", "lastTimestamp": stamp(60, NOW)},
        {
            "type": "Warning",
            "reason": "KeysUnavailable",
            "message": "connection refused",
            "count": 4,
            "firstTimestamp": stamp(3600, NOW),
            "lastTimestamp": stamp(300, NOW),
        },
        # events.k8s.io-style: only eventTime (MicroTime, with fractions and an offset).
        {"type": "Normal", "reason": "Ready", "eventTime": "2025-03-01T11:59:30.123456+00:00"},
    ]
    assert event_rows(events, NOW) == [
        ["Normal", "KeysRotated", "60s", "version 4"],
        ["Warning", "KeysUnavailable", "5m (x4 over 60m)", "connection refused"],
        ["Normal", "Ready", "29s", ""],
    ]


def test_only_the_latest_events_are_kept_oldest_first() -> None:
    events = [{"reason": f"R{i}", "lastTimestamp": stamp(100 - i, NOW)} for i in (3, 1, 4, 2, 0)]
    assert [e["reason"] for e in latest_events(events, 3)] == ["R2", "R3", "R4"]
    assert latest_events(events, 0) == []


def test_each_rotation_request_carries_a_new_rfc3339_value() -> None:
    values = {rotation_value(NOW) for _ in range(50)}
    assert len(values) == 50
    assert all(ROTATION.match(v) and v.startswith("2025-03-01T12:00:00Z-") for v in values)
    assert rotation_value(NOW, "abc") == "2025-03-01T12:00:00Z-abc"


def test_the_plugin_asks_with_the_annotation_the_operator_reads() -> None:
    from politetenant.operator.keys import secret as keys

    assert rotate_patch("x") == {"metadata": {"annotations": {keys.ROTATE_ANNOTATION: "x"}}}
    assert keys.ROTATE_ANNOTATION == "polite.io/rotate-keys"


def test_a_legal_hold_patch_touches_only_spec_legal_hold() -> None:
    assert legal_hold_patch(True) == {"spec": {"legalHold": True}}
    assert legal_hold_patch(False) == {"spec": {"legalHold": False}}


def test_gitops_managed_tenants_are_recognised() -> None:
    assert gitops_manager({"metadata": {"annotations": {"argocd.argoproj.io/tracking-id": "x"}}}) == "Argo CD"
    assert gitops_manager({"metadata": {"labels": {"kustomize.toolkit.fluxcd.io/name": "tenants"}}}) == "Flux"
    assert gitops_manager({"metadata": {"labels": {"app.kubernetes.io/name": "x"}}}) is None


def test_a_tenant_the_operator_has_not_seen_says_so() -> None:
    page = describe_tenant({"metadata": {"name": "acme"}, "spec": {"region": "us-east"}}, [], NOW)
    assert "none reported yet (is the operator running?)" in page
    assert "Events:          none found" in page
    assert re.search(r"^Legal hold:\s+off$", page, re.M) and re.search(r"^Deletion policy:\s+Retain$", page, re.M)


def test_status_document_keeps_the_api_field_names() -> None:
    tenant = make_tenant()
    document = status_document(tenant, [])
    assert document["keys"] == {"version": 3, "rotatedAt": tenant["status"]["keys"]["rotatedAt"]}
    assert (document["phase"], document["region"], document["legalHold"]) == ("Ready", "eu-germany", False)
    assert [c["type"] for c in document["conditions"]] == ["Ready", "KeysReady"]


# -- argument errors: exit 2 and a line that says what to fix -----------------------------------------------
@pytest.mark.parametrize(
    ("argv", "fix"),
    [
        ([], "name a command: rotate-keys, legal-hold or status"),
        (["legal-hold", "acme", "maybe"], "argument on|off: invalid choice: 'maybe' (choose from 'on', 'off')"),
        (["legal-hold", "acme"], "the following arguments are required: on|off"),
        (["status", "Acme_1"], "'Acme_1' is not a tenant name: use lower-case letters"),
        (["status", "a" * 57], "at most 56 characters"),
        (["rotate-keys", "acme", "--wait", "--timeout", "5x"], "'5x' is not a duration: use e.g. 30s, 5m or 1h"),
        (["status", "acme", "-o", "xml"], "invalid choice: 'xml'"),
        (["status", "acme", "--events", "-1"], "argument --events: '-1' is not a count: use 0 or more"),
        (["evict", "acme"], "invalid choice: 'evict'"),
    ],
)
def test_bad_arguments_exit_2_saying_what_to_fix(argv: list[str], fix: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    first, hint = err.splitlines()
    assert first.startswith("error: ") and fix in first
    assert hint.startswith("See 'kubectl polite") and hint.endswith(" --help'.")


def test_a_missing_kubeconfig_file_or_context_is_a_usage_error(
    kube: FakeKube, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["status", "acme", "--kubeconfig", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"error: --kubeconfig {tmp_path / 'nope'}: no such file\n"
    assert main(["--kubeconfig", kube.kubeconfig, "status", "acme", "--context", "staging"]) == 2
    assert f"--context staging: no such context in {kube.kubeconfig}" in capsys.readouterr().err


def test_without_any_cluster_configured_the_plugin_says_where_it_looked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["status", "acme"]) == 2
    assert (
        "no cluster configured: pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config" in capsys.readouterr().err
    )


# -- a loopback stand-in for the API server paths the plug-in calls ----------------------------------------
def status_error(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A metav1.Status failure body, as the API server sends with every error."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def cel_violations(name: str, spec: dict[str, Any]) -> list[dict[str, str]]:
    """The spec-level x-kubernetes-validations of the CRD that the defaulted spec breaks, as causes."""
    schema = openapi_schema()["properties"]["spec"]
    defaulted = apply_defaults(spec, schema)
    causes = []
    for rule in schema.get("x-kubernetes-validations", []):
        if not cel.evaluate(rule["rule"], {"self": defaulted}):
            path = "spec" + rule.get("fieldPath", "")
            causes.append(
                {"reason": "FieldValueInvalid", "message": f'Invalid value: "object": {rule["message"]}', "field": path}
            )
    return causes


def field_selector_matches(event: dict[str, Any], selector: str) -> bool:
    """``a.b=v,c!=w`` over the Event's fields (``=`` and ``==`` mean equal)."""
    for term in filter(None, selector.split(",")):
        negate = "!=" in term
        key, value = re.split(r"!=|==|=", term, maxsplit=1)
        actual: Any = event
        for part in key.split("."):
            actual = actual.get(part, "") if isinstance(actual, dict) else ""
        if (str(actual) == value) == negate:
            return False
    return True


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str | None
    body: Any


@dataclass
class FakeKube:
    """State of the stand-in: stored tenants and Events, the requests it saw, failures to inject."""

    tenants: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    forbid_cluster_wide_events: bool = False
    fail_with: int | None = None
    on_patch: Callable[[FakeKube, str, dict[str, Any]], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: str = ""
    kubeconfig: str = ""

    @property
    def patches(self) -> list[Request]:
        return [r for r in self.requests if r.method == "PATCH"]


TENANT_PATH = re.compile(r"^/apis/polite\.io/v1alpha1/politetenants/([^/]+)$")
EVENTS_PATH = re.compile(r"^/api/v1/(?:namespaces/([^/]+)/)?events$")


def make_handler(state: FakeKube) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def answer(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def handle_any(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            content_type = self.headers.get("Content-Type")
            with state.lock:
                state.requests.append(
                    Request(self.command, url.path, parse_qs(url.query), content_type, json.loads(raw) if raw else None)
                )
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self.answer(401, status_error(401, "Unauthorized", "Unauthorized"))
                if state.fail_with:
                    return self.answer(
                        state.fail_with, status_error(state.fail_with, "ServiceUnavailable", "etcd is down")
                    )
                if match := TENANT_PATH.match(url.path):
                    return self.tenant(match.group(1), content_type, raw)
                if (match := EVENTS_PATH.match(url.path)) and self.command == "GET":
                    return self.list_events(match.group(1), parse_qs(url.query).get("fieldSelector", [""])[0])
                self.answer(404, status_error(404, "NotFound", "the server could not find the requested resource"))

        def tenant(self, name: str, content_type: str | None, raw: bytes) -> None:
            stored = state.tenants.get(name)
            if stored is None:
                details = {"name": name, "group": "polite.io", "kind": "politetenants"}
                return self.answer(
                    404, status_error(404, "NotFound", f'politetenants.polite.io "{name}" not found', details)
                )
            if self.command == "GET":
                return self.answer(200, stored)
            if self.command != "PATCH":
                return self.answer(405, status_error(405, "MethodNotAllowed", "method not allowed"))
            if (content_type or "").split(";")[0].strip() != "application/merge-patch+json":
                message = (
                    "the body of the request was in an unknown format - accepted media types include: "
                    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
                )
                return self.answer(415, status_error(415, "UnsupportedMediaType", message))
            patch = json.loads(raw)
            patch.pop("status", None)  # the main resource ignores status: it has its own subresource
            updated = merge_patch(stored, patch)
            if causes := cel_violations(name, updated["spec"]):
                message = f'PoliteTenant.polite.io "{name}" is invalid: ' + ", ".join(
                    f"{c['field']}: {c['message']}" for c in causes
                )
                details = {"name": name, "group": "polite.io", "kind": "PoliteTenant", "causes": causes}
                return self.answer(422, status_error(422, "Invalid", message, details))
            meta = updated["metadata"]
            meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
            if updated["spec"] != stored["spec"]:
                meta["generation"] += 1
            state.tenants[name] = updated
            if state.on_patch:
                state.on_patch(state, name, patch)
            self.answer(200, updated)

        def list_events(self, namespace: str | None, selector: str) -> None:
            if namespace is None and state.forbid_cluster_wide_events:
                message = (
                    'events is forbidden: User "sre" cannot list resource "events" in API group "" at the cluster scope'
                )
                return self.answer(403, status_error(403, "Forbidden", message, {"kind": "events"}))
            items = [
                e
                for e in state.events
                if (namespace is None or e["metadata"]["namespace"] == namespace)
                and field_selector_matches(e, selector)
            ]
            self.answer(
                200, {"kind": "EventList", "apiVersion": "v1", "metadata": {"resourceVersion": "9"}, "items": items}
            )

        do_GET = do_PATCH = do_POST = do_PUT = do_DELETE = handle_any

    return Handler


def write_kubeconfig(path: Path, server: str, down: str) -> str:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}, {"name": "down", "cluster": {"server": down}}],
        "users": [{"name": "sre", "user": {"token": TOKEN}}, {"name": "stranger", "user": {"token": "wrong"}}],
        "contexts": [
            {"name": "fake", "context": {"cluster": "fake", "user": "sre"}},
            {"name": "down", "context": {"cluster": "down", "user": "sre"}},
            {"name": "stranger", "context": {"cluster": "fake", "user": "stranger"}},
        ],
        "current-context": "fake",
    }
    path.write_text(yaml.safe_dump(document))
    return str(path)


def make_tenant(name: str = "acme", **spec: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "apiVersion": "polite.io/v1alpha1",
        "kind": "PoliteTenant",
        "metadata": {"name": name, "uid": f"uid-{name}", "generation": 2, "resourceVersion": "10", "annotations": {}},
        "spec": {
            "displayName": "Acme Corp",
            "region": "eu-germany",
            "keys": {"provider": "vault", "vault": {"address": "https://vault.example:8200"}},
            **spec,
        },
        "status": {
            "observedGeneration": 2,
            "phase": "Ready",
            "namespace": f"polite-{name}",
            "endpoint": f"https://{name}.track.example",
            "keys": {"version": 3, "rotatedAt": stamp(3 * 86400, now)},
            "conditions": [
                {"type": "KeysReady", "status": "True", "reason": "KeysAvailable", "message": "Transit key v3"},
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Ready",
                    "message": "all parts ready",
                    "lastTransitionTime": stamp(7200, now),
                },
            ],
        },
    }


def make_event(namespace: str, reason: str, message: str, seconds_ago: float, **involved: str) -> dict[str, Any]:
    obj = {"apiVersion": "polite.io/v1alpha1", "kind": "PoliteTenant", "name": "acme", "uid": "uid-acme"}
    obj.update(involved)
    obj["namespace"] = namespace  # kopf fills it with the namespace it posts to
    return {
        "metadata": {"name": f"kopf-event-{reason.lower()}", "namespace": namespace},
        "involvedObject": obj,
        "type": "Warning" if "Fail" in reason else "Normal",
        "reason": reason,
        "message": message,
        "lastTimestamp": stamp(seconds_ago),
        "firstTimestamp": stamp(seconds_ago),
        "source": {"component": "kopf"},
    }


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKube]:
    state = FakeKube()
    state.tenants["acme"] = make_tenant()
    state.events = [
        make_event("politetenant-system", "KeysRotated", "keys rotated to version 3", 3 * 86400),
        make_event("politetenant-system", "Ready", "all parts ready", 7200),
        # Another object in the tenant's namespace, and an earlier tenant of the same name: not shown.
        make_event("polite-acme", "ScalingReplicaSet", "scaled up", 60, kind="Deployment", name="acme"),
        make_event("default", "Deleted", "earlier acme removed", 30 * 86400, uid="uid-old-acme"),
    ]
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.server = f"http://127.0.0.1:{server.server_address[1]}"
    state.kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", state.server, f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setattr(commands, "POLL_SECONDS", 0.02)
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def run(kube: FakeKube, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--kubeconfig", kube.kubeconfig, *argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- rotate-keys -------------------------------------------------------------------------------------------
def test_rotate_keys_sets_a_new_annotation_value_on_every_call(
    kube: FakeKube, capsys: pytest.CaptureFixture[str]
) -> None:
    first = run(kube, capsys, "rotate-keys", "acme")
    second = run(kube, capsys, "rotate-keys", "acme")
    assert (first[0], second[0]) == (0, 0)
    values = []
    for request in kube.patches:
        assert request.path == "/apis/polite.io/v1alpha1/politetenants/acme"
        assert request.content_type == "application/merge-patch+json"
        assert request.query == {"fieldManager": ["kubectl-polite"]}
        assert list(request.body) == ["metadata"] and list(request.body["metadata"]) == ["annotations"]
        values.append(request.body["metadata"]["annotations"]["polite.io/rotate-keys"])
    assert len(values) == 2 and values[0] != values[1] and all(ROTATION.match(v) for v in values)
    assert kube.tenants["acme"]["metadata"]["annotations"]["polite.io/rotate-keys"] == values[1]
    # It says what will happen, and that nothing has happened yet.
    assert f"polite.io/rotate-keys={values[0]}" in first[1]
    assert "rotates Vault Transit key polite-acme, issues data key version 4, rolls the tracker" in first[1]
    assert "Follow it with: kubectl polite status acme" in first[1]
    assert kube.tenants["acme"]["status"]["keys"]["version"] == 3


def bump_keys_after_rotation(state: FakeKube, name: str, patch: dict[str, Any]) -> None:
    """The operator's part, as a stand-in: a new annotation value leads to a new key version, later."""
    if "polite.io/rotate-keys" not in ((patch.get("metadata") or {}).get("annotations") or {}):
        return

    def rotate() -> None:
        with state.lock:
            keys = state.tenants[name]["status"]["keys"]
            keys.update(version=keys["version"] + 1, rotatedAt=stamp(0))

    threading.Timer(0.2, rotate).start()


def test_rotate_keys_wait_prints_the_new_version(kube: FakeKube, capsys: pytest.CaptureFixture[str]) -> None:
    kube.on_patch = bump_keys_after_rotation
    code, out, err = run(kube, capsys, "rotate-keys", "acme", "--wait", "--timeout", "10s")
    assert (code, err) == (0, "")
    assert "Waiting up to 10s for status.keys.version to pass 3..." in out
    assert out.endswith("Keys rotated: version 4.\n")
    assert len([r for r in kube.requests if r.method == "GET"]) >= 2  # it polled until the change


def test_rotate_keys_wait_gives_up_after_the_timeout_and_says_why(
    kube: FakeKube, capsys: pytest.CaptureFixture[str]
) -> None:
    kube.tenants["acme"]["status"]["conditions"][0].update(
        status="False", reason="KeysUnavailable", message="dial tcp 10.0.0.5:8200: connection refused"
    )
    code, _out, err = run(kube, capsys, "rotate-keys", "acme", "--wait", "--timeout", "0.3s")
    assert code == 1
    assert err.startswith("error: timed out after 0.3s: status.keys.version is still 3.")
    assert "KeysReady is False: KeysUnavailable dial tcp 10.0.0.5:8200: connection refused" in err


def test_rotate_keys_of_an_unknown_tenant_exits_1_and_writes_nothing(
    kube: FakeKube, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(kube, capsys, "rotate-keys", "ghost")
    assert (code, out, err) == (1, "", "error: politetenant ghost not found\n")
    assert kube.patches == []


def test_rotate_keys_refuses_a_tenant_being_deleted(kube: FakeKube, capsys: pytest.CaptureFixture[str]) -> None:
    kube.tenants["acme"]["metadata"]["deletionTimestamp"] = stamp(10)
    code, _out, err = run(kube, capsys, "rotate-keys", "acme")
    assert (code, err) == (1, "error: politetenant acme is being deleted; its keys are not rotated\n")
    assert kube.patches == []


# -- legal-hold --------------------------------------------------------------------------------------------
def test_legal_hold_on_and_off_send_exactly_the_spec_merge_patch(
    kube: FakeKube, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(kube, capsys, "legal-hold", "acme", "on")
    assert (code, err) == (0, "")
    assert "legal hold is on" in out and "deleting the tenant waits until the hold is lifted" in out
    assert kube.tenants["acme"]["spec"]["legalHold"] is True
    code, out, _err = run(kube, capsys, "legal-hold", "acme", "off")
    assert code == 0 and "legal hold is off" in out
    assert [(r.content_type, r.body) for r in kube.patches] == [
        ("application/merge-patch+json", {"spec": {"legalHold": True}}),
        ("application/merge-patch+json", {"spec": {"legalHold": False}}),
    ]
    assert kube.tenants["acme"]["spec"]["legalHold"] is False
    assert kube.tenants["acme"]["metadata"]["generation"] == 4  # two spec changes


def test_legal_hold_already_in_place_changes_nothing(kube: FakeKube, capsys: pytest.CaptureFixture[str]) -> None:
    kube.tenants["acme"]["spec"]["legalHold"] = True
    code, out, _err = run(kube, capsys, "legal-hold", "acme", "on")
    assert (code, out) == (0, "politetenant acme: legal hold is already on; nothing changed.\n")
    assert kube.patches == []


def test_a_legal_hold_is_placed_whatever_the_deletion_policy_and_says_what_follows(
    kube: FakeKube, capsys: pytest.CaptureFixture[str]
) -> None:
    """The hold wins: an SRE places it without touching deletionPolicy (which a GitOps repo would revert)."""
    kube.tenants["acme"]["spec"]["deletionPolicy"] = "Delete"
    code, out, err = run(kube, capsys, "legal-hold", "acme", "on")
    assert (code, err) == (0, "")
    assert "deleting the tenant waits until the hold is lifted" in out
    assert "once the hold is lifted, deleting the tenant removes its namespace and crypto-shreds its keys" in out
    assert kube.tenants["acme"]["spec"]["legalHold"] is True
    assert kube.tenants["acme"]["spec"]["deletionPolicy"] == "Delete"


def test_legal_hold_on_a_gitops_managed_tenant_reminds_to_change_git(
    kube: FakeKube, capsys: pytest.CaptureFixture[str]
) -> None:
    kube.tenants["acme"]["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"] = "tenants:polite.io/x:acme"
    code, _out, err = run(kube, capsys, "legal-hold", "acme", "on")
    assert code == 0
    assert "warning: Argo CD manages politetenant acme: set spec.legalHold: true in git too" in err


def test_legal_hold_off_during_deletion_says_deletion_proceeds(
    kube: FakeKube, capsys: pytest.CaptureFixture[str]
) -> None:
    kube.tenants["acme"]["spec"]["legalHold"] = True
    kube.tenants["acme"]["metadata"]["deletionTimestamp"] = stamp(60)
    code, out, _err = run(kube, capsys, "legal-hold", "acme", "off")
    assert code == 0 and "deletion now proceeds (deletionPolicy Retain)" in out


# -- status ------------------------------------------------------------------------------------------------
def test_status_prints_the_facts_the_conditions_and_the_tenants_events(
    kube: FakeKube, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(kube, capsys, "status", "acme")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert re.search(r"^Phase:\s+Ready$", out, re.M) and re.search(r"^Region:\s+eu-germany$", out, re.M)
    assert re.search(r"^Endpoint:\s+https://acme.track.example$", out, re.M)
    assert re.search(r"^Keys:\s+version 3, rotated 3d ago$", out, re.M)
    assert re.search(r"^Generation:\s+2 \(observed 2\)$", out, re.M)
    conditions = lines.index("Conditions:")
    assert lines[conditions + 1].split() == ["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]
    assert lines[conditions + 2].split() == ["Ready", "True", "Ready", "120m", "all", "parts", "ready"]
    assert lines[conditions + 3].split()[:4] == ["KeysReady", "True", "KeysAvailable", "-"]
    events = lines.index("Events (latest 2, oldest first):")
    assert lines[events + 1].split() == ["TYPE", "REASON", "AGE", "MESSAGE"]
    assert lines[events + 2].split() == ["Normal", "KeysRotated", "3d", "keys", "rotated", "to", "version", "3"]
    assert lines[events + 3].split()[:3] == ["Normal", "Ready", "120m"]
    assert "ScalingReplicaSet" not in out and "earlier acme" not in out
    # One cluster-wide list with the field selector, as kubectl describe does for cluster-scoped objects.
    (listing,) = [r for r in kube.requests if "events" in r.path]
    assert listing.path == "/api/v1/events"
    assert listing.query["fieldSelector"] == ["involvedObject.name=acme,involvedObject.kind=PoliteTenant"]


def test_status_looks_in_the_likely_namespaces_when_cluster_wide_events_are_forbidden(
    kube: FakeKube, capsys: pytest.CaptureFixture[str]
) -> None:
    kube.forbid_cluster_wide_events = True
    code, out, _err = run(kube, capsys, "status", "acme", "--events", "1")
    assert code == 0
    assert "Events (latest 1, oldest first) in namespaces politetenant-system, default, polite-acme:" in out
    assert out.splitlines()[-1].split()[:3] == ["Normal", "Ready", "120m"] and "KeysRotated" not in out
    assert [r.path for r in kube.requests if "events" in r.path] == [
        "/api/v1/events",
        "/api/v1/namespaces/politetenant-system/events",
        "/api/v1/namespaces/default/events",
        "/api/v1/namespaces/polite-acme/events",
    ]


def test_status_json_is_for_machines(kube: FakeKube, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(kube, capsys, "status", "acme", "-o", "json")
    assert code == 0
    document = json.loads(out)
    assert document["name"] == "acme" and document["phase"] == "Ready" and document["keys"]["version"] == 3
    assert [c["type"] for c in document["conditions"]] == ["Ready", "KeysReady"]
    assert [e["reason"] for e in document["events"]] == ["KeysRotated", "Ready"]
    assert document["events"][0]["namespace"] == "politetenant-system"
    code, out, _err = run(kube, capsys, "status", "acme", "-o", "yaml")
    assert code == 0 and yaml.safe_load(out) == document


def test_status_of_an_unknown_tenant_exits_1(kube: FakeKube, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(kube, capsys, "status", "ghost") == (1, "", "error: politetenant ghost not found\n")


# -- reaching the cluster ----------------------------------------------------------------------------------
def test_an_unreachable_api_server_exits_3_naming_it(kube: FakeKube, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(kube, capsys, "status", "acme", "--context", "down")
    down = yaml.safe_load(Path(kube.kubeconfig).read_text())["clusters"][1]["cluster"]["server"]
    assert (code, out) == (3, "")
    assert err.startswith(f"error: cannot reach the Kubernetes API at {down}: ")
    assert "Connection refused" in err and "Traceback" not in err


def test_an_api_server_failing_with_503_exits_3(kube: FakeKube, capsys: pytest.CaptureFixture[str]) -> None:
    kube.fail_with = 503
    code, _out, err = run(kube, capsys, "legal-hold", "acme", "on")
    assert (code, err) == (3, f"error: the Kubernetes API at {kube.server} answered 503: etcd is down\n")


def test_rejected_credentials_exit_1_asking_to_log_in(kube: FakeKube, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(kube, capsys, "status", "acme", "--context", "stranger")
    assert (code, err) == (
        1,
        f"error: the Kubernetes API at {kube.server} did not accept the credentials: log in again\n",
    )


def test_kubeconfig_comes_from_the_environment_and_flags_go_before_or_after_the_command(
    kube: FakeKube, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", kube.kubeconfig)
    assert main(["status", "acme"]) == 0
    assert main(["--context", "down", "status", "acme"]) == 3
    assert main(["status", "acme", "--context", "down"]) == 3
    assert main(["--context", "down", "status", "acme", "--kubeconfig", kube.kubeconfig]) == 3
    capsys.readouterr()


def test_kubectl_finds_the_plugin_on_path_and_passes_it_the_arguments(kube: FakeKube) -> None:
    """The real kubectl binary (pinned under .tools/, as the chart tests use it) runs kubectl-polite."""
    kubectl = ROOT / ".tools" / "kubectl"
    if not (kubectl.is_file() and os.access(kubectl, os.X_OK)):
        pytest.fail(f"{kubectl} is missing: run `make venv` or `scripts/fetch-kube-tools.sh .tools`", pytrace=False)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["KUBECONFIG"] = kube.kubeconfig
    result = subprocess.run(
        [str(kubectl), "polite", "status", "acme", "-o", "json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["name"] == "acme"
    result = subprocess.run(
        [str(kubectl), "polite", "status", "ghost"], capture_output=True, text=True, env=env, timeout=60
    )
    assert (result.returncode, result.stderr) == (1, "error: politetenant ghost not found\n")
