"""The chart's alerts (templates/prometheusrules.yaml), rendered by the real helm and run by the real promtool.

For every alert: the input series under which it fires, checked once before its ``for`` is over (no
alert yet) and once after (the alert, with its labels and its annotations expanded), and healthy
series under which it stays quiet. promtool also checks the rules file, and each alert's runbook
must exist under docs/runbooks/ and name it. promtool comes from Debian's ``prometheus`` package:
``make test`` fetches it into .tools/ (scripts/fetch-promtool.sh).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from politetenant.operator.model.status import conditions, retention_check
from politetenant.operator.runtime.metrics import Metrics as OperatorMetrics
from politetenant.tracker.metrics import Metrics as TrackerMetrics

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "politetenant"
TOOLS = ROOT / ".tools"
RUNBOOKS = ROOT / "docs" / "runbooks"
RUNBOOK_BASE = "https://runbooks.example/politetenant/docs/runbooks"
ENABLED: dict[str, Any] = {
    "monitoring": {
        "prometheusRules": {"enabled": True, "runbookBaseUrl": RUNBOOK_BASE + "/", "labels": {"release": "kps"}}
    }
}
SEVERITIES = {
    "PoliteTenantNotReady": "warning",
    "PoliteTenantKeysFailing": "warning",
    "PoliteTenantReconcileErrors": "warning",
    "PoliteTenantLegalHold": "info",
    "PoliteTrackerIngestRefusing": "critical",
    "PoliteTrackerSpoolGrowing": "warning",
    "PoliteTrackerEventsSpilled": "warning",
    "PoliteTrackerNotReady": "warning",
    "PoliteRetentionJobFailing": "warning",
}
# kube-state-metrics (v2) series the alerts read; the polite_* ones must be exported by our code.
KUBE_STATE_METRICS = {
    "kube_statefulset_status_replicas_ready",
    "kube_statefulset_replicas",
    "kube_job_status_start_time",
    "kube_job_owner",
    "kube_job_failed",
}


def tool(name: str) -> str:
    path = TOOLS / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        how = "scripts/fetch-promtool.sh .tools" if name == "promtool" else "scripts/fetch-kube-tools.sh .tools"
        pytest.fail(f"{path} is missing: run `make test`, or `{how}`", pytrace=False)
    return str(path)


def helm_template(directory: Path, values: dict[str, Any] | None) -> subprocess.CompletedProcess[str]:
    args = [tool("helm"), "template", "polite", str(CHART), "--namespace", "polite-system"]
    if values is not None:
        path = directory / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["--values", str(path)]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def rendered(directory: Path, values: dict[str, Any] | None) -> list[dict[str, Any]]:
    result = helm_template(directory, values)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rule_object(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    (found,) = [o for o in rendered(tmp_path_factory.mktemp("on"), ENABLED) if o["kind"] == "PrometheusRule"]
    return found


@pytest.fixture(scope="module")
def rules(rule_object: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every alert rule by its name."""
    found = [rule for group in rule_object["spec"]["groups"] for rule in group["rules"]]
    by_name = {rule["alert"]: rule for rule in found}
    assert len(by_name) == len(found), "two rules share an alert name"
    return by_name


@pytest.fixture(scope="module")
def rules_file(rule_object: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The PrometheusRule's groups as the rules file a Prometheus reads (what the operator writes)."""
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule_object["spec"]["groups"]}, sort_keys=False))
    return path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], capture_output=True, text=True, timeout=120)


# --- the chart ------------------------------------------------------------------------------------


def test_disabled_chart_renders_no_prometheus_rule(tmp_path: Path) -> None:
    assert "PrometheusRule" not in {o["kind"] for o in rendered(tmp_path, None)}


def test_enabled_without_runbook_base_url_fails_and_says_which_value(tmp_path: Path) -> None:
    result = helm_template(tmp_path, {"monitoring": {"prometheusRules": {"enabled": True}}})
    assert result.returncode != 0
    assert "monitoring.prometheusRules.runbookBaseUrl is required" in result.stderr


def test_rendered_object_is_a_prometheus_rule_with_one_alert_per_rule(
    rule_object: dict[str, Any], rules: dict[str, dict[str, Any]]
) -> None:
    assert rule_object["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule_object["metadata"]["namespace"] == "polite-system"
    assert rule_object["metadata"]["labels"]["release"] == "kps"  # what a Prometheus selects rules by
    assert all(set(group) == {"name", "rules"} for group in rule_object["spec"]["groups"])
    assert {name: rule["labels"]["severity"] for name, rule in rules.items()} == SEVERITIES
    for name, rule in rules.items():
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, name
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, name
        assert rule["annotations"]["runbook_url"] == f"{RUNBOOK_BASE}/{name}.md"
        for text in ("summary", "description"):
            assert "{{ $labels.tenant }}" in rule["annotations"][text], f"{name} {text} does not name the tenant"


def test_promtool_accepts_the_rules_file(rules_file: Path) -> None:
    result = promtool("check", "rules", str(rules_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(SEVERITIES)} rules found" in result.stdout


# --- each alert firing and not firing (promtool test rules) ---------------------------------------


@dataclass(frozen=True)
class Case:
    """Series under which an alert fires (``firing``), and ``healthy`` ones under which it does not."""

    firing: dict[str, str]  # series -> promtool values
    pending_at: str  # the condition holds, its `for` is not over: no alert yet
    fires_at: str
    labels: dict[str, str]  # the firing alert's labels, severity aside
    value: str = ""  # how {{ $value }} shows in its annotations
    healthy: dict[str, str] = field(default_factory=dict)
    healthy_at: str = "20m"


def condition(type_: str, status: str, reason: str, tenant: str = "acme") -> str:
    return (
        f'polite_tenant_condition{{tenant="{tenant}", region="eu-ireland", type="{type_}", status="{status}", '
        f'reason="{reason}"}}'
    )


def tracker(metric: str, pod: str = "tracker-0", namespace: str = "polite-acme") -> str:
    return f'{metric}{{namespace="{namespace}", pod="{pod}", job="polite-tracker"}}'


def ksm(metric: str, **labels: str) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in {"job": "kube-state-metrics", **labels}.items())
    return f"{metric}{{{inner}}}"


def retention_job(job: str, start: int, outcome: str | None, owner: str = "retention") -> dict[str, str]:
    """kube-state-metrics' series of one Job a CronJob made: owner, start time, and how it ended."""
    at = {"namespace": "polite-acme", "job_name": job}
    series = {
        ksm("kube_job_owner", **at, owner_kind="CronJob", owner_name=owner, owner_is_controller="true"): "1x30",
        ksm("kube_job_status_start_time", **at): f"{start}x30",
    }
    if outcome is not None:
        series[ksm(f"kube_job_{outcome}", **at, condition="true")] = "1x30"
    return series


TENANT = {"tenant": "acme", "region": "eu-ireland"}
IN_NAMESPACE = {"namespace": "polite-acme", "tenant": "acme"}
CASES = {
    "PoliteTenantNotReady": Case(
        # Unknown while rolling out, then False with a reason: one stretch of not being Ready.
        firing={
            condition("Ready", "Unknown", "TrackerStarting"): "1x9",
            condition("Ready", "False", "ApiError"): "_x10 1x20",
        },
        pending_at="14m",
        fires_at="16m",
        labels=TENANT,
        healthy={
            condition("Ready", "True", "Ready"): "1x30",
            condition("Ready", "False", "LegalHold", tenant="held"): "1x30",  # PoliteTenantLegalHold's
        },
    ),
    "PoliteTenantKeysFailing": Case(
        firing={condition("KeysReady", "False", "VaultRefused"): "1x20"},
        pending_at="9m",
        fires_at="11m",
        labels={**TENANT, "type": "KeysReady", "status": "False", "reason": "VaultRefused"},
        healthy={condition("KeysReady", "True", "KeysAvailable"): "1x30"},
    ),
    "PoliteTenantReconcileErrors": Case(
        firing={condition("Reconciling", "True", "ProgressingWithRetry"): "1x20"},
        pending_at="9m",
        fires_at="11m",
        labels={**TENANT, "type": "Reconciling", "status": "True", "reason": "ProgressingWithRetry"},
        healthy={
            condition("Reconciling", "False", "Ready"): "1x30",
            condition("Reconciling", "True", "Progressing", tenant="new"): "1x30",  # a rollout, not an error
        },
    ),
    "PoliteTenantLegalHold": Case(
        firing={condition("RetentionReady", "True", "LegalHold"): "1x20"},
        pending_at="4m",
        fires_at="6m",
        labels=TENANT,
        healthy={condition("RetentionReady", "True", "RetentionScheduled"): "1x30"},
    ),
    "PoliteTrackerIngestRefusing": Case(
        # Two pods refusing 15 events a minute each: 0.5 per second for the tenant.
        firing={
            tracker("polite_events_refused_total"): "0+15x30",
            tracker("polite_events_refused_total", pod="tracker-1"): "0+15x30",
        },
        pending_at="5m",
        fires_at="8m",
        labels=IN_NAMESPACE,
        value="0.50",
        healthy={tracker("polite_events_refused_total"): "7x30"},  # refused long ago, none now
    ),
    "PoliteTrackerSpoolGrowing": Case(
        firing={
            tracker("polite_spool_bytes"): "0+1024x30",  # 1 KiB a minute
            tracker("polite_spool_bytes", pod="tracker-1"): "0x30",
        },
        pending_at="10m",
        fires_at="12m",
        labels=IN_NAMESPACE,
        value="17.07",  # bytes per second
        healthy={
            tracker("polite_spool_bytes"): "30720-1024x30",  # draining after an outage
            tracker("polite_spool_bytes", namespace="polite-calm"): "4096x30",  # kept, not growing
        },
    ),
    "PoliteTrackerEventsSpilled": Case(
        firing={tracker("polite_events_spilled_total"): "0+60x30"},
        pending_at="10m",
        fires_at="12m",
        labels=IN_NAMESPACE,
        value="1.00",
        healthy={tracker("polite_events_spilled_total"): "100x30"},
    ),
    "PoliteTrackerNotReady": Case(
        firing={
            ksm("kube_statefulset_status_replicas_ready", namespace="polite-acme", statefulset="tracker"): "1x20",
            ksm("kube_statefulset_replicas", namespace="polite-acme", statefulset="tracker"): "2x20",
        },
        pending_at="9m",
        fires_at="11m",
        labels=IN_NAMESPACE,
        value="1",
        healthy={
            ksm("kube_statefulset_status_replicas_ready", namespace="polite-acme", statefulset="tracker"): "2x30",
            ksm("kube_statefulset_replicas", namespace="polite-acme", statefulset="tracker"): "2x30",
            # Someone else's StatefulSet of that name, outside the tenants' namespaces.
            ksm("kube_statefulset_status_replicas_ready", namespace="shop", statefulset="tracker"): "0x30",
            ksm("kube_statefulset_replicas", namespace="shop", statefulset="tracker"): "1x30",
        },
    ),
    "PoliteRetentionJobFailing": Case(
        firing={
            **retention_job("retention-100", 3000, "complete"),
            **retention_job("retention-200", 6000, "failed"),  # the newest run failed
        },
        pending_at="4m",
        fires_at="6m",
        labels=IN_NAMESPACE,
        healthy={
            **retention_job("retention-100", 3000, "failed"),  # kept by failedJobsHistoryLimit
            **retention_job("retention-200", 6000, "complete"),  # the newest run succeeded
            **retention_job("backup-300", 9000, "failed", owner="backup"),  # not retention's
        },
    ),
}


def expand(text: str, labels: dict[str, str], value: str) -> str:
    """The annotation as Prometheus expands it, for the few template forms the rules use."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
    text = re.sub(r"\{\{ \$value( \| [^}]+)? \}\}", value, text)
    assert "{{" not in text, f"a template form this test does not know: {text}"
    return text


def promtool_tests(alert: str, rule: dict[str, Any], case: Case, rules_file: Path) -> dict[str, Any]:
    labels = {**case.labels, "severity": rule["labels"]["severity"]}
    annotations = {key: expand(text, labels, case.value) for key, text in rule["annotations"].items()}

    def series(values: dict[str, str]) -> list[dict[str, str]]:
        return [{"series": name, "values": v} for name, v in values.items()]

    return {
        "rule_files": [rules_file.name],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": f"{alert} fires",
                "interval": "1m",
                "input_series": series(case.firing),
                "alert_rule_test": [
                    {"eval_time": case.pending_at, "alertname": alert, "exp_alerts": []},
                    {
                        "eval_time": case.fires_at,
                        "alertname": alert,
                        "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations}],
                    },
                ],
            },
            {
                "name": f"{alert} stays quiet",
                "interval": "1m",
                "input_series": series(case.healthy),
                "alert_rule_test": [{"eval_time": case.healthy_at, "alertname": alert, "exp_alerts": []}],
            },
        ],
    }


def test_every_alert_has_firing_and_healthy_series(rules: dict[str, dict[str, Any]]) -> None:
    assert set(CASES) == set(rules)
    assert all(case.healthy for case in CASES.values())


@pytest.mark.parametrize("alert", sorted(CASES))
def test_alert_fires_after_its_for_and_stays_quiet_when_healthy(
    alert: str, rules: dict[str, dict[str, Any]], rules_file: Path
) -> None:
    spec = promtool_tests(alert, rules[alert], CASES[alert], rules_file)
    test_file = rules_file.parent / f"{alert}.test.yaml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# --- runbooks and metrics -------------------------------------------------------------------------


def test_every_alert_has_a_runbook_that_names_it_and_is_in_the_index(rules: dict[str, dict[str, Any]]) -> None:
    index = (RUNBOOKS / "README.md").read_text()
    for name in rules:
        runbook = RUNBOOKS / f"{name}.md"
        assert runbook.is_file(), f"{runbook} is missing"
        assert runbook.read_text().splitlines()[0] == f"# {name}"
        assert f"({name}.md)" in index, f"docs/runbooks/README.md does not link {name}"


def exported(registry: CollectorRegistry) -> set[str]:
    """The series names a scrape of ``registry`` can show."""
    names = set()
    for family in registry.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes}
    return names


def test_every_metric_an_alert_reads_is_exported(rules: dict[str, dict[str, Any]]) -> None:
    ours = exported(OperatorMetrics().registry) | exported(TrackerMetrics().registry)
    read = {name for rule in rules.values() for name in re.findall(r"\b(?:polite|kube)_\w+", rule["expr"])}
    assert read - ours - KUBE_STATE_METRICS == set()
    assert KUBE_STATE_METRICS <= read  # the list above says what the alerts need from kube-state-metrics


# --- polite_tenant_condition, the series the tenant alerts read ----------------------------------


def shown(metrics: OperatorMetrics) -> set[tuple[str, ...]]:
    samples = [s for family in metrics.registry.collect() for s in family.samples]
    keys = ("tenant", "region", "type", "status", "reason")
    return {tuple(s.labels[k] for k in keys) for s in samples if s.name == "polite_tenant_condition" and s.value == 1}


def test_tenant_condition_series_follow_the_status_and_leave_nothing_behind() -> None:
    metrics = OperatorMetrics()
    metrics.tenant_conditions(
        "acme",
        "eu-ireland",
        [{"type": "Ready", "status": "Unknown", "reason": "TrackerStarting"}, {"type": "KeysReady", "status": "True"}],
    )
    metrics.tenant_conditions("acme", "eu-ireland", [{"type": "Ready", "status": "False", "reason": "ApiError"}])
    metrics.tenant_conditions("other", "eu-germany", [{"type": "Ready", "status": "True", "reason": "Ready"}])
    assert shown(metrics) == {
        ("acme", "eu-ireland", "Ready", "False", "ApiError"),
        ("other", "eu-germany", "Ready", "True", "Ready"),
    }
    metrics.forget("acme")
    assert shown(metrics) == {("other", "eu-germany", "Ready", "True", "Ready")}


def test_a_held_tenants_status_gives_the_series_the_legal_hold_alert_reads() -> None:
    held = retention_check({"spec": {"suspend": True, "schedule": "17 3 * * *"}})
    metrics = OperatorMetrics()
    metrics.tenant_conditions("acme", "eu-ireland", conditions([], [held], generation=1, now="2025-01-01T00:00:00Z"))
    assert shown(metrics) == {("acme", "eu-ireland", "RetentionReady", "True", "LegalHold")}
