"""kstatus's verdict on a custom resource, as Flux and ``kubectl``-side tools compute it, for tests.

A transcription of ``status.Compute`` in sigs.k8s.io/cli-utils ``pkg/kstatus/status`` (status.go,
generic.go; https://github.com/kubernetes-sigs/cli-utils/tree/master/pkg/kstatus/status), for a kind
with no built-in rule (every custom resource but the CRD itself), in the same order:

1. ``metadata.deletionTimestamp`` set: Terminating ("Resource scheduled for deletion").
2. ``metadata.generation`` and ``status.observedGeneration`` both present and different: InProgress
   ("<Kind> generation is G, but latest observed generation is O"). Either one absent: no verdict.
3. The conditions in list order: the first ``Reconciling`` True gives InProgress, the first
   ``Stalled`` True gives Failed, each with that condition's message.
4. The first ``Ready`` condition: True gives Current ("Resource is Ready"); False or Unknown gives
   InProgress with its message; any other status is passed over.
5. Nothing decided: Current ("Resource is current").

Values of the wrong type are an error there (``unstructured.NestedInt64`` and the conversion of the
conditions fail); here they raise ValueError. Built-in kinds have rules of their own in core.go,
which this does not transcribe: asking about one raises ValueError rather than answer wrongly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CURRENT, IN_PROGRESS, FAILED, TERMINATING = "Current", "InProgress", "Failed", "Terminating"

# core.go ``legacyTypes``: group/kind (kind alone for the core group) with a rule of their own.
BUILT_IN_RULES = frozenset(
    {
        "Service",
        "Pod",
        "Secret",
        "PersistentVolumeClaim",
        "apps/StatefulSet",
        "apps/DaemonSet",
        "extensions/DaemonSet",
        "apps/Deployment",
        "extensions/Deployment",
        "apps/ReplicaSet",
        "extensions/ReplicaSet",
        "policy/PodDisruptionBudget",
        "batch/CronJob",
        "ConfigMap",
        "batch/Job",
        "apiextensions.k8s.io/CustomResourceDefinition",
    }
)


def compute_kstatus(obj: Mapping[str, Any]) -> tuple[str, str]:
    """kstatus's status (Current, InProgress, Failed, Terminating) and message for ``obj``."""
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    kind = str(obj.get("kind", ""))
    if (f"{group}/{kind}" if group else kind) in BUILT_IN_RULES:
        raise ValueError(f"{kind} has a built-in kstatus rule, not transcribed here")
    meta = _mapping(obj.get("metadata"), "metadata")
    deletion = meta.get("deletionTimestamp")
    if deletion is not None and not isinstance(deletion, str):
        raise ValueError("metadata.deletionTimestamp is not a string")
    if deletion:
        return TERMINATING, "Resource scheduled for deletion"
    status = _mapping(obj.get("status"), "status")
    generation = _int64(meta, "generation")
    observed = _int64(status, "observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        return IN_PROGRESS, f"{kind} generation is {generation}, but latest observed generation is {observed}"
    conditions = _conditions(status)
    for condition in conditions:
        if condition["type"] == "Reconciling" and condition["status"] == "True":
            return IN_PROGRESS, condition["message"]
        if condition["type"] == "Stalled" and condition["status"] == "True":
            return FAILED, condition["message"]
    for condition in conditions:
        if condition["type"] != "Ready":
            continue
        if condition["status"] == "True":
            return CURRENT, "Resource is Ready"
        if condition["status"] in ("False", "Unknown"):
            return IN_PROGRESS, condition["message"]
    return CURRENT, "Resource is current"


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} is not an object")
    return value


def _int64(parent: Mapping[str, Any], key: str) -> int | None:
    value = parent.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{key} is {value!r}, not an integer")
    return value


def _conditions(status: Mapping[str, Any]) -> list[dict[str, str]]:
    """``status.conditions`` as kstatus's BasicCondition: type, status, reason, message strings."""
    raw = status.get("conditions")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError("status.conditions is not a list")
    conditions = []
    for item in raw:
        condition = _mapping(item, "a condition")
        fields = {key: condition.get(key, "") for key in ("type", "status", "reason", "message")}
        if not all(isinstance(value, str) for value in fields.values()):
            raise ValueError(f"condition {condition!r} has a field that is not a string")
        conditions.append({key: str(value) for key, value in fields.items()})
    return conditions
