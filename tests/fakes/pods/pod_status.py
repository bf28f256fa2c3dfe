"""A pod's status as the kubelet writes it, computed from what its containers are doing.

"Pod Lifecycle" (https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/):

- phase: Pending until the sandbox is up, every init container succeeded and every container was
  created once; Succeeded when every container terminated with 0 and none will restart; Failed when
  every container terminated, one of them not with 0, and none will restart (or an init container
  failed under restartPolicy Never); else Running.
- conditions PodScheduled, PodReadyToStartContainers, Initialized, ContainersReady, Ready (no
  readiness gates here), each keeping its lastTransitionTime while its status stays.
- container statuses: state (waiting with a reason, running, terminated with exit code and reason
  ``Completed``/``Error``/``StartError``), lastState, ready, started, restartCount.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Body = dict[str, Any]


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerView:
    """What the kubelet knows of one container (init or not) right now."""

    name: str
    image: str
    state: Body = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Body = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    restart_count: int = 0
    ever_created: bool = False
    done: bool = False  # terminated and will not run again
    container_id: str = ""
    sidecar: bool = False  # an init container with restartPolicy Always: complete once started

    @property
    def initialized(self) -> bool:
        """As an init container: it succeeded, or it is a sidecar that started."""
        return (self.done and self.exit_code == 0) or (self.sidecar and self.started)

    @property
    def running(self) -> bool:
        return "running" in self.state

    @property
    def exit_code(self) -> int | None:
        terminated = self.state.get("terminated")
        return int(terminated["exitCode"]) if terminated else None

    def status(self, image_id: str) -> Body:
        body: Body = {
            "name": self.name,
            "image": self.image,
            "imageID": image_id if self.ever_created else "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.container_id:
            body["containerID"] = self.container_id
        return body


def phase(
    *, sandbox_ready: bool, init: Sequence[ContainerView], containers: Sequence[ContainerView], policy: str
) -> str:
    if any(c.done and c.exit_code not in (0, None) for c in init):
        return "Failed"  # an init container that failed and will not run again
    if not sandbox_ready or not all(c.initialized for c in init):
        return "Pending"
    if not all(c.ever_created for c in containers):
        return "Pending"
    if all(c.done for c in containers):
        return "Succeeded" if all(c.exit_code == 0 for c in containers) else "Failed"
    return "Running"


def _condition(kind: str, ok: bool, previous: Mapping[str, Body], reason: str = "", message: str = "") -> Body:
    status = "True" if ok else "False"
    before = previous.get(kind)
    since = before.get("lastTransitionTime") if before and before.get("status") == status else None
    body: Body = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": since or now()}
    if not ok and reason:
        body["reason"] = reason
        if message:
            body["message"] = message
    elif ok and reason == "PodCompleted":
        body["reason"] = reason
    return body


def pod_status(
    pod: Mapping[str, Any],
    *,
    sandbox_ready: bool,
    pod_ip: str | None,
    host_ip: str,
    start_time: str | None,
    init: Sequence[ContainerView],
    containers: Sequence[ContainerView],
    image_ids: Mapping[str, str],
) -> Body:
    """The whole ``status`` of the pod; conditions keep their times from the status it has now."""
    spec = pod.get("spec") or {}
    previous = {str(c.get("type")): c for c in (pod.get("status") or {}).get("conditions") or []}
    policy = str(spec.get("restartPolicy") or "Always")
    current = phase(sandbox_ready=sandbox_ready, init=init, containers=containers, policy=policy)
    completed = current in ("Succeeded", "Failed")
    incomplete = [c.name for c in init if not c.initialized]
    unready = [c.name for c in containers if not c.ready]
    initialized = not incomplete
    init_reason = "PodCompleted" if completed and initialized else "ContainersNotInitialized"
    ready_reason = "PodCompleted" if completed else "ContainersNotReady"
    unready_text = f"containers with unready status: [{' '.join(unready)}]"
    conditions = [
        _condition("PodReadyToStartContainers", sandbox_ready, previous),
        _condition(
            "Initialized",
            initialized,
            previous,
            init_reason,
            f"containers with incomplete status: [{' '.join(incomplete)}]",
        ),
        _condition("Ready", not unready and not completed, previous, ready_reason, unready_text),
        _condition("ContainersReady", not unready and not completed, previous, ready_reason, unready_text),
        previous.get("PodScheduled") or _condition("PodScheduled", True, previous),
    ]
    status: Body = {
        "phase": current,
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "containerStatuses": [c.status(image_ids.get(c.name, "")) for c in containers],
    }
    if init:
        status["initContainerStatuses"] = [c.status(image_ids.get(c.name, "")) for c in init]
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    if start_time:
        status["startTime"] = start_time
    qos = qos_class(spec)
    if qos:
        status["qosClass"] = qos
    return status


def qos_class(spec: Mapping[str, Any]) -> str:
    """Guaranteed (every container has equal cpu and memory requests and limits), BestEffort (none has
    any), else Burstable: https://kubernetes.io/docs/concepts/workloads/pods/pod-qos/"""
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    if not containers:
        return ""
    guaranteed, empty = True, True
    for container in containers:
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        if requests or limits:
            empty = False
        for name in ("cpu", "memory"):
            if name not in limits or str(requests.get(name, limits.get(name))) != str(limits.get(name)):
                guaranteed = False
    if empty:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def is_ready(pod: Mapping[str, Any]) -> bool:
    """The pod's Ready condition is True (what Services, ReplicaSets and StatefulSets count)."""
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def ready_since(pod: Mapping[str, Any]) -> str | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready" and c.get("status") == "True":
            return str(c.get("lastTransitionTime"))
    return None


def is_available(pod: Mapping[str, Any], min_ready_seconds: float, scale: float) -> bool:
    """Ready for at least ``minReadySeconds`` (scaled): what "available" means to the controllers."""
    since = ready_since(pod)
    if since is None:
        return False
    if min_ready_seconds <= 0:
        return True
    then = datetime.datetime.strptime(since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    waited = (datetime.datetime.now(datetime.UTC) - then).total_seconds()
    return waited >= min_ready_seconds * scale


def is_active(pod: Mapping[str, Any]) -> bool:
    """Not being deleted and not finished: a pod that counts towards a controller's replicas."""
    phase_now = (pod.get("status") or {}).get("phase")
    return not (pod.get("metadata") or {}).get("deletionTimestamp") and phase_now not in ("Succeeded", "Failed")
