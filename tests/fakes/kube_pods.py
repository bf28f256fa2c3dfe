"""What the API server itself decides about pods: graceful deletion and the Eviction API.

Pure functions the emulator (``kube_emulator.py``) calls; each follows the page its docstring names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TERMINATION = "https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination"
EVICTION = "https://kubernetes.io/docs/concepts/scheduling-eviction/api-eviction/"
DISRUPTIONS = "https://kubernetes.io/docs/tasks/run-application/configure-pdb/"
GRACEFUL_HOLD = "<graceful pod termination>"  # what holds a terminating pod until its kubelet lets go


def deletion_grace(pod: Mapping[str, Any], options: Mapping[str, Any]) -> int:
    """The grace period a DELETE gives a pod (``TERMINATION``): the request's ``gracePeriodSeconds``, else
    the pod's ``terminationGracePeriodSeconds`` (30). A pod no node runs yet, or one that finished, has
    nothing to stop: 0, and it goes at once."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
        return 0
    given = options.get("gracePeriodSeconds")
    if given is None:
        given = spec.get("terminationGracePeriodSeconds", 30)
    return max(int(given), 0)


def held_by_grace(pod: Mapping[str, Any]) -> bool:
    """A pod being deleted gracefully stays until its kubelet deletes it with grace 0."""
    meta = pod.get("metadata") or {}
    return bool(meta.get("deletionTimestamp")) and int(meta.get("deletionGracePeriodSeconds") or 0) > 0


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, Any]) -> bool:
    """A LabelSelector object (matchLabels, matchExpressions); an empty selector selects everything, a
    missing one nothing (as for PodDisruptionBudgets)."""
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        present = key in labels
        if (
            (operator == "In" and not (present and labels[key] in values))
            or (operator == "NotIn" and present and labels[key] in values)
            or (operator == "Exists" and not present)
            or (operator == "DoesNotExist" and present)
        ):
            return False
    return True


def is_ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@dataclass(frozen=True)
class Refusal:
    """An eviction refused: HTTP code, Status reason, message and causes."""

    code: int
    reason: str
    message: str
    causes: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Allowed:
    """An eviction allowed; ``budget`` is the PodDisruptionBudget whose allowance it spends, if any."""

    budget: Mapping[str, Any] | None = None


def judge_eviction(pod: Mapping[str, Any], budgets: Sequence[Mapping[str, Any]]) -> Allowed | Refusal:
    """Whether the Eviction API lets ``pod`` go (``EVICTION``, ``DISRUPTIONS``): a pod already finished or
    terminating goes; more than one budget selecting it is an error; a budget the disruption controller
    has not processed yet refuses (429); ``unhealthyPodEvictionPolicy: AlwaysAllow`` lets a pod that is
    not Ready go, as does the default ``IfHealthyBudget`` while the budget is met; otherwise the budget's
    ``disruptionsAllowed`` must be above 0 (and one is spent)."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
        return Allowed()
    labels = meta.get("labels") or {}
    matching = [b for b in budgets if selects((b.get("spec") or {}).get("selector"), labels)]
    if not matching:
        return Allowed()
    if len(matching) > 1:
        return Refusal(
            500,
            "InternalError",
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        )
    budget = matching[0]
    name = (budget.get("metadata") or {}).get("name")
    budget_status = budget.get("status") or {}
    violate = "Cannot evict pod as it would violate the pod's disruption budget."
    if int(budget_status.get("observedGeneration") or 0) < int((budget.get("metadata") or {}).get("generation") or 0):
        cause = {
            "reason": "DisruptionBudget",
            "message": f"The disruption budget {name} is still being processed by the server.",
        }
        return Refusal(429, "TooManyRequests", violate, [cause])
    healthy, desired = int(budget_status.get("currentHealthy") or 0), int(budget_status.get("desiredHealthy") or 0)
    policy = (budget.get("spec") or {}).get("unhealthyPodEvictionPolicy") or "IfHealthyBudget"
    if not is_ready(pod) and (policy == "AlwaysAllow" or healthy >= desired):
        return Allowed()
    if int(budget_status.get("disruptionsAllowed") or 0) <= 0:
        message = f"The disruption budget {name} needs {desired} healthy pods and has {healthy} currently"
        return Refusal(429, "TooManyRequests", violate, [{"reason": "DisruptionBudget", "message": message}])
    return Allowed(budget)
