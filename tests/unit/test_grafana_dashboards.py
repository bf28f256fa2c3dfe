"""The chart's Grafana dashboards (charts/politetenant/dashboards/): valid JSON models, every PromQL
expression parsed by the real Prometheus parser (`promtool check rules`), every metric they name one
the operator or the tracker exports. A dashboard that names a metric nobody exports shows "No data"
forever, and one with a typo in its PromQL shows an error instead of a graph: both only on the day
someone needs it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from politetenant.operator.runtime.metrics import Metrics as OperatorMetrics
from politetenant.tracker.metrics import Metrics as TrackerMetrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "charts" / "politetenant" / "dashboards"
PROMTOOL = ROOT / ".tools" / "promtool"
NAMES = ("operator-overview.json", "tenant-tracker.json")
# The dashboard schema current Grafana writes (LATEST_VERSION of its migrations, apps/dashboard/pkg/
# migration/schemaversion); a newer Grafana migrates it up when it loads the file.
SCHEMA_VERSION = 42
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
REQUIRED_KEYS = {"uid", "title", "schemaVersion", "panels", "templating", "time", "annotations", "editable"}
GRID_COLUMNS = 24

# --- reading the dashboards --------------------------------------------------------------------------


def load(name: str) -> dict[str, Any]:
    model: dict[str, Any] = json.loads((DASHBOARDS / name).read_text())
    return model


def all_panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' collapsed children included."""
    found: list[dict[str, Any]] = []
    for panel in model["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def expressions(model: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in all_panels(model) for target in panel.get("targets", [])]


def variables(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in model["templating"]["list"]}


# --- PromQL: Grafana's variables out, metric names found ---------------------------------------------

_INTERVAL_VARIABLE = re.compile(r"\$\{?__(?:rate_interval|interval|range)\}?")
_VARIABLE = re.compile(r"\$\{?([A-Za-z_]\w*)(?::\w+)?\}?")


def as_promql(expr: str, *, value: str = "polite-acme") -> str:
    """A Grafana target's expression as Prometheus receives it: interval variables become a duration,
    the others a label value (they only ever appear inside a matcher's quotes)."""
    return _VARIABLE.sub(value, _INTERVAL_VARIABLE.sub("5m", expr))


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.])[A-Za-z_:][\w:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
             "group_right", "inf", "nan", "start", "end"}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are neither a function or
    aggregation (followed by '('), a keyword, a label (inside {} or a grouping) nor a number."""
    text = _STRING.sub('""', expr)
    for pattern in (_MATCHERS, _RANGE, _GROUPING):
        text = pattern.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        if text[match.end() :].lstrip().startswith("(") or match.group().lower() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def exported_series(registry: CollectorRegistry) -> set[str]:
    """The series names a registry's collectors expose, suffixes included: a counter ``x`` is scraped
    as ``x_total`` (and ``x_created``), a histogram as ``x_bucket``, ``x_sum``, ``x_count``."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("", "_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",)}  # fmt: skip
    return {family.name + suffix for family in registry.collect() for suffix in suffixes.get(family.type, ("",))}


def exported_by_the_code() -> set[str]:
    return exported_series(OperatorMetrics().registry) | exported_series(TrackerMetrics().registry)


def promtool() -> str:
    if not (PROMTOOL.is_file() and os.access(PROMTOOL, os.X_OK)):
        pytest.fail(f"{PROMTOOL} is missing: run `scripts/fetch-promtool.sh .tools`", pytrace=False)
    return str(PROMTOOL)


def check_with_promtool(exprs: list[str], directory: Path) -> subprocess.CompletedProcess[str]:
    """Each expression as a recording rule, checked by Prometheus's own parser."""
    rules = [{"record": f"dashboard:expression_{i}", "expr": as_promql(expr)} for i, expr in enumerate(exprs)]
    path = directory / "dashboard-expressions.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    return subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)


# --- the JSON models ---------------------------------------------------------------------------------


@pytest.fixture(params=NAMES)
def model(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load(request.param)


def test_each_dashboard_is_a_grafana_json_model(model: dict[str, Any]) -> None:
    assert REQUIRED_KEYS <= set(model), f"missing {REQUIRED_KEYS - set(model)}"
    assert model["schemaVersion"] == SCHEMA_VERSION
    assert model["title"].startswith("PoliteTenant / ")
    assert re.fullmatch(r"[a-z0-9-]{1,40}", model["uid"]), "Grafana uids are at most 40 characters"
    assert "id" not in model or model["id"] is None, "a provisioned dashboard must not carry a database id"


def test_dashboards_have_distinct_uids_and_titles() -> None:
    models = [load(name) for name in NAMES]
    assert len({m["uid"] for m in models}) == len({m["title"] for m in models}) == len(NAMES)


def test_panel_ids_are_unique_and_panels_fit_the_grid_without_overlap(model: dict[str, Any]) -> None:
    panels = all_panels(model)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {model['uid']}"
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= GRID_COLUMNS, panel["title"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_every_query_goes_to_the_chosen_prometheus(model: dict[str, Any]) -> None:
    chosen = variables(model)["datasource"]
    assert (chosen["type"], chosen["query"]) == ("datasource", "prometheus")
    for panel in all_panels(model):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["refId"] and target["expr"].strip()
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), panel["title"]
    for variable in model["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]


def test_each_dashboard_picks_tenant_namespaces_among_polite_ones(model: dict[str, Any]) -> None:
    picker = variables(model)["tenant_namespace"]
    assert picker["type"] == "query"
    assert 'namespace=~"polite-.+"' in picker["query"]["query"]
    assert picker["query"]["query"] == picker["definition"]
    assert metric_names(picker["query"]["query"].removeprefix("label_values(").rsplit(",", 1)[0])


def test_every_tracker_panel_shows_the_chosen_tenant_only() -> None:
    for expr in expressions(load("tenant-tracker.json")):
        assert 'namespace="$tenant_namespace"' in expr, expr


def test_dashboards_show_what_an_sre_asks_of_this_operator() -> None:
    operator = set().union(*(metric_names(e) for e in expressions(load("operator-overview.json"))))
    tracker = set().union(*(metric_names(e) for e in expressions(load("tenant-tracker.json"))))
    assert {"polite_tenants", "polite_reconcile_duration_seconds_count", "polite_reconcile_duration_seconds_bucket",
            "polite_events_total", "polite_key_rotations_total", "polite_api_errors_total"} <= operator  # fmt: skip
    assert {"polite_requests_total", "polite_events_accepted_total", "polite_spool_bytes",
            "polite_events_spilled_total", "polite_events_refused_total", "polite_spool_full_refusals_total",
            "polite_read_streams", "polite_flush_seconds_bucket"} <= tracker  # fmt: skip


# --- PromQL, parsed by Prometheus --------------------------------------------------------------------


def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    exprs = [e for name in NAMES for e in expressions(load(name))]
    exprs += [variables(load(name))["tenant_namespace"]["query"]["query"].removeprefix("label_values(")
              .rsplit(",", 1)[0] for name in NAMES]  # fmt: skip
    result = check_with_promtool(exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_promtool_check_refuses_a_broken_expression(tmp_path: Path) -> None:
    result = check_with_promtool(['sum by (route (rate(polite_requests_total{namespace="$x"}[5m]))'], tmp_path)
    assert result.returncode != 0
    assert "parse error" in result.stdout + result.stderr


def test_grafana_variables_become_valid_promql() -> None:
    expr = 'rate(x{namespace="$tenant_namespace", pod=~"${pod:regex}"}[$__rate_interval])'
    assert as_promql(expr) == 'rate(x{namespace="polite-acme", pod=~"polite-acme"}[5m])'


# --- every metric a dashboard names is exported --------------------------------------------------------


def test_metric_names_are_told_from_functions_labels_and_keywords() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(a_bucket{namespace="b_c", x=~"d"}[5m]))) '
        "/ on (pod) group_left (node) max without (job) (e_total offset 1h) > bool 1e3 and f"
    )
    assert metric_names(expr) == {"a_bucket", "e_total", "f"}


def test_exported_names_carry_the_suffixes_prometheus_scrapes() -> None:
    names = exported_by_the_code()
    assert {"polite_requests_total", "polite_flush_seconds_bucket", "polite_spool_bytes",
            "polite_reconcile_duration_seconds_count", "polite_tenants"} <= names  # fmt: skip
    assert "polite_requests" not in names and "polite_flush_seconds" not in names


def test_every_metric_a_dashboard_names_is_exported_by_the_code(model: dict[str, Any]) -> None:
    exported = exported_by_the_code()
    named = {name: expr for expr in expressions(model) for name in metric_names(expr)}
    unknown = {name: expr for name, expr in named.items() if name not in exported}
    assert named and not unknown, f"{model['uid']} names metrics nobody exports: {unknown}"
