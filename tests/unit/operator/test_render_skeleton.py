"""Templates rendered through a layout parsed once (``render.skeleton``) give exactly the objects the
YAML path gives, for every tenant shape, and never share an object between renders or tenants."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest

from politetenant.operator.render import skeleton
from politetenant.operator.render import tenant as render_module
from politetenant.operator.render.tenant import RenderError, render_tenant
from tests.unit.operator.test_render import MATRIX, make_config, make_tenant


def _yaml_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render_module, "_render", render_module._render_yaml)


def _exact(objects: list[dict[str, Any]]) -> str:
    """Objects with their key order and value types visible (True and 1 differ, "1" and 1 differ)."""
    return json.dumps(objects)


@pytest.mark.parametrize("case", MATRIX)
def test_every_matrix_tenant_renders_the_same_objects_as_the_yaml_path(
    case: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud, spec = case
    tenant, config = make_tenant(**spec), make_config(cloud=cloud)
    fast = render_tenant(tenant, config).objects
    _yaml_path(monkeypatch)
    assert _exact(fast) == _exact(render_tenant(tenant, config).objects)


@pytest.mark.parametrize(
    "text",
    ["Zoë & Co: \"quoted\" 'single' # not a comment", "tab\there\nnewline", "emoji 😀 \u2028 \x85 \ufeff", "1e-05"],
)
def test_text_that_yaml_reads_specially_comes_back_as_the_yaml_path_reads_it(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = make_tenant(displayName=text)
    fast = render_tenant(tenant, make_config()).objects
    assert fast[0]["metadata"]["annotations"]["polite.io/display-name"] == text
    _yaml_path(monkeypatch)
    assert _exact(fast) == _exact(render_tenant(tenant, make_config()).objects)


def test_a_float_value_is_read_as_yaml_reads_its_json() -> None:
    """YAML 1.1 reads ``1e-05`` as a string and ``0.5`` as a float: the slot holds what YAML read."""
    slots = skeleton.slot_filter(render_module._yaml_safe_json)
    docs = skeleton.render(lambda: f"kind: X\na: {slots(1e-05)}\nb: {slots(0.5)}\nc: {slots({'k': [1.5, True]})}\n")
    assert docs == [{"kind": "X", "a": "1e-05", "b": 0.5, "c": {"k": [1.5, True]}}]


def test_a_placeholder_inside_a_longer_string_falls_back_to_yaml() -> None:
    slots = skeleton.slot_filter(render_module._yaml_safe_json)
    assert skeleton.render(lambda: f"kind: X\na: prefix {slots('v')}\n") is None


def test_a_lone_surrogate_is_still_refused() -> None:
    tenant = make_tenant()
    broken = tenant.model_copy(update={"spec": tenant.spec.model_copy(update={"display_name": "x\ud800y"})})
    with pytest.raises(RenderError, match="unpaired surrogate"):
        render_tenant(broken, make_config())


def test_two_tenants_with_different_specs_never_share_or_mix_objects() -> None:
    first = render_tenant(make_tenant("alpha", displayName="Alpha"), make_config()).objects
    second = render_tenant(make_tenant("beta", displayName="Beta", tracker={"replicas": 3}), make_config()).objects
    first_ids = {id(node) for obj in first for node in _nodes(obj)}
    assert not first_ids & {id(node) for obj in second for node in _nodes(obj)}
    assert {o["metadata"]["namespace"] for o in first if "namespace" in o["metadata"]} == {"polite-alpha"}
    assert first[0]["metadata"]["annotations"]["polite.io/display-name"] == "Alpha"
    tracker = next(o for o in second if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "tracker")
    assert tracker["spec"]["replicas"] == 3


def test_a_changed_object_does_not_leak_into_the_next_render() -> None:
    tenant = make_tenant()
    first = render_tenant(tenant, make_config()).objects
    before = _exact(render_tenant(tenant, make_config()).objects)
    first[0]["metadata"]["labels"]["changed"] = "yes"
    first[-1]["spec"] = {}
    assert _exact(render_tenant(tenant, make_config()).objects) == before


def _nodes(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [node, *(n for v in node.values() for n in _nodes(v))]
    if isinstance(node, list):
        return [node, *(n for v in node for n in _nodes(v))]
    return []


def test_a_placeholder_key_takes_a_string_and_falls_back_for_anything_else() -> None:
    slots = skeleton.slot_filter(render_module._yaml_safe_json)
    assert skeleton.render(lambda: f"kind: X\ndata:\n  {slots('k.yaml')}: {slots('v')}\n") == [
        {"kind": "X", "data": {"k.yaml": "v"}}
    ]
    assert skeleton.render(lambda: f"kind: X\ndata:\n  {slots(5)}: {slots('v')}\n") is None


def test_every_template_of_the_matrix_is_filled_in_without_parsing_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback exists for layouts JSON cannot carry; none of the shipped templates is one."""

    def refuse(template: str, values: dict[str, Any]) -> list[dict[str, Any]]:
        raise AssertionError(f"{template} fell back to parsing YAML")

    monkeypatch.setattr(render_module, "_render_yaml", refuse)
    for case in MATRIX:
        cloud, spec = cast(tuple[str, dict[str, Any]], case.values[0])
        assert render_tenant(make_tenant(**spec), make_config(cloud=cloud)).objects
