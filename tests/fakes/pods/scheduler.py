"""The runner's one node and the scheduler that binds pods to it.

The Node (https://kubernetes.io/docs/concepts/architecture/nodes/) carries the labels the test gives
it (a region and zone, for pods pinned with node affinity); ``spec.unschedulable`` is a cordon. The
scheduler binds every pending pod of a managed namespace whose ``nodeSelector`` and required node
affinity (https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/) the node satisfies
and which the node accepts (not cordoned); otherwise the pod stays Pending with PodScheduled False,
reason Unschedulable, in the scheduler's words. Binding sets ``spec.nodeName`` with a patch (the
emulator has no ``binding`` subresource). Resources, taints and tolerations, and preferred affinity are
not considered: there is one node.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from tests.fakes.pods.api import NODES, PODS, Body, meta
from tests.fakes.pods.cluster import Cluster
from tests.fakes.pods.pod_status import now


def node_body(name: str, labels: Mapping[str, str], address: str) -> Body:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024
    capacity = {"cpu": str(os.cpu_count() or 1), "memory": f"{memory}Ki", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                **labels,
            },
        },
        "spec": {},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                }
            ],
            "nodeInfo": {"kubeletVersion": "v1.33.0-pod-runner", "containerRuntimeVersion": "pod-runner://1"},
        },
    }


def _expression(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator = str(expression.get("key")), expression.get("operator")
    values = [str(v) for v in expression.get("values") or []]
    present = key in labels
    if operator == "In":
        return present and labels[key] in values
    if operator == "NotIn":
        return not present or labels[key] not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt") and present and values and labels[key].lstrip("-").isdigit():
        return int(labels[key]) > int(values[0]) if operator == "Gt" else int(labels[key]) < int(values[0])
    return False


def fits(pod: Mapping[str, Any], node: Mapping[str, Any]) -> str | None:
    """None when the pod may run on the node, else the scheduler's reason it may not."""
    spec, node_meta = pod.get("spec") or {}, meta(node)
    labels = {str(k): str(v) for k, v in (node_meta.get("labels") or {}).items()}
    if (node.get("spec") or {}).get("unschedulable"):
        return "0/1 nodes are available: 1 node(s) were unschedulable."
    mismatch = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
    if any(labels.get(k) != str(v) for k, v in (spec.get("nodeSelector") or {}).items()):
        return mismatch
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}).get("nodeSelectorTerms")  # fmt: skip
    if required:
        fields = {"metadata.name": str(node_meta.get("name"))}
        if not any(
            all(_expression(e, labels) for e in term.get("matchExpressions") or [])
            and all(_expression(e, fields) for e in term.get("matchFields") or [])
            for term in required
        ):
            return mismatch
    return None


class Scheduler:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._told: dict[str, str] = {}  # pod uid -> the unschedulable reason already written
        self._binding: set[str] = set()  # pod uids with a binding in flight

    def node(self) -> Body | None:
        return self.cluster.cache(NODES).get("", self.cluster.node_name)

    def sync(self) -> None:
        node = self.node()
        if node is None:
            return
        for pod in self.cluster.cache(PODS).items():
            info, spec = meta(pod), pod.get("spec") or {}
            if (
                spec.get("nodeName")
                or info.get("deletionTimestamp")
                or not self.cluster.managed(str(info.get("namespace")))
            ):
                continue
            if spec.get("schedulerName") not in (None, "default-scheduler"):
                continue
            reason = fits(pod, node)
            uid = str(info.get("uid"))
            if reason is None:
                self._told.pop(uid, None)
                if uid not in self._binding:
                    self._binding.add(uid)
                    self.cluster.background(self._bind(pod))
            elif self._told.get(uid) != reason:
                self._told[uid] = reason
                self.cluster.background(self._unschedulable(pod, reason))

    async def _bind(self, pod: Body) -> None:
        try:
            await self._bind_once(pod)
        finally:
            self._binding.discard(str(meta(pod).get("uid")))

    async def _bind_once(self, pod: Body) -> None:
        info = meta(pod)
        path = PODS.path(str(info["namespace"]), str(info["name"]))
        patch = [
            {"op": "test", "path": "/metadata/uid", "value": info.get("uid")},
            {"op": "add", "path": "/spec/nodeName", "value": self.cluster.node_name},
        ]
        bound = await self.cluster.write(PODS, self.cluster.api.patch(path, patch, "application/json-patch+json"))
        if bound is None:
            return
        condition = {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": now()}
        status = {"status": {"phase": "Pending", "conditions": [condition]}}
        await self.cluster.write(PODS, self.cluster.api.patch(path + "/status", status))
        self.cluster.event(
            pod,
            "Normal",
            "Scheduled",
            f"Successfully assigned {info['namespace']}/{info['name']} to {self.cluster.node_name}",
            "default-scheduler",
        )

    async def _unschedulable(self, pod: Body, reason: str) -> None:
        info = meta(pod)
        path = PODS.path(str(info["namespace"]), str(info["name"]), "status")
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": reason,
            "lastProbeTime": None,
            "lastTransitionTime": now(),
        }
        await self.cluster.write(
            PODS, self.cluster.api.patch(path, {"status": {"phase": "Pending", "conditions": [condition]}})
        )
        self.cluster.event(pod, "Warning", "FailedScheduling", reason, "default-scheduler")
