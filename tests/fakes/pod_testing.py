"""Helpers of the pod runner's tests: objects as a test writes them, reads of the API, waits.

The fixtures (``kube``: an emulator with CloudNativePG's CRD, ``runner``: a PodRunner on it, one of each
per test module) are in ``tests/fakes/conftest.py``.
"""

from __future__ import annotations

import base64
import itertools
import textwrap
import urllib.request
from typing import Any

from tests.fakes.kube_server import KubeApiHandle
from tests.fakes.pod_runner import PodRunner

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
SCALE = 0.05  # time_scale: a 10 s probe period is 0.5 s here
_numbers = itertools.count(1)
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def namespace(kube: KubeApiHandle, prefix: str) -> str:
    name = f"{prefix}-{next(_numbers)}"
    assert kube.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}}).status == 201
    return name


def path(kind: str, ns: str, name: str = "", sub: str = "") -> str:
    group = {"deployments": "apps/v1", "statefulsets": "apps/v1", "cronjobs": "batch/v1", "jobs": "batch/v1"}
    base = f"/apis/{group[kind]}" if kind in group else "/api/v1"
    if kind == "endpointslices":
        base = "/apis/discovery.k8s.io/v1"
    return f"{base}/namespaces/{ns}/{kind}" + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


def create(kube: KubeApiHandle, kind: str, ns: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = kube.request("POST", path(kind, ns), body)
    assert answer.status == 201, answer.body
    return dict(answer.body)


def get(kube: KubeApiHandle, kind: str, ns: str, name: str) -> dict[str, Any] | None:
    answer = kube.request("GET", path(kind, ns, name))
    return dict(answer.body) if answer.status == 200 else None


def must(kube: KubeApiHandle, kind: str, ns: str, name: str) -> dict[str, Any]:
    found = get(kube, kind, ns, name)
    assert found is not None, f"{kind} {ns}/{name} is missing"
    return found


def secret(name: str, **data: str) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"metadata": {"name": name}, "data": encoded}


def python_pod(name: str, program: str, *, restart: str = "Never", **container: Any) -> dict[str, Any]:
    spec = container.pop("pod_spec", {})
    return {
        "metadata": {"name": name, "labels": container.pop("labels", {"app": name})},
        "spec": {
            "restartPolicy": restart,
            "containers": [
                {
                    "name": "main",
                    "image": "busybox:1",
                    "command": ["python3", "-c", textwrap.dedent(program)],
                    **container,
                }
            ],
            **spec,
        },
    }


def phase(kube: KubeApiHandle, ns: str, name: str) -> str | None:
    found = ((get(kube, "pods", ns, name) or {}).get("status") or {}).get("phase")
    return None if found is None else str(found)


def container_status(kube: KubeApiHandle, ns: str, name: str) -> dict[str, Any]:
    pod = get(kube, "pods", ns, name) or {}
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    return dict(statuses[0])


def finished_output(runner: PodRunner, kube: KubeApiHandle, ns: str, name: str) -> str:
    runner.wait_for(lambda: phase(kube, ns, name) in ("Succeeded", "Failed"), 30, f"pod {name} to finish")
    return runner.logs(ns, name)


WEB = """
import http.server, os, socket, signal, sys
signal.signal(signal.SIGTERM, lambda *_: (print("SIGTERM, leaving", flush=True), sys.exit(0)))
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/ready" and os.path.exists("/tmp/unready"):
            self.send_response(503); self.end_headers(); return
        self.send_response(200); self.end_headers()
        self.wfile.write((socket.gethostname() + " " + os.environ.get("VERSION", "")).encode())
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
"""


def web_deployment(name: str, replicas: int = 2, version: str = "1", **strategy: Any) -> dict[str, Any]:
    container = {
        "name": "web",
        "image": "busybox:1",
        "command": ["python3", "-c", textwrap.dedent(WEB)],
        "env": [{"name": "VERSION", "value": version}],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 2, "failureThreshold": 1},
        "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 10},
    }
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": strategy} if strategy else {},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container], "terminationGracePeriodSeconds": 30},
            },
        },
    }


def web_service(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": "http"}]},
    }


def available(kube: KubeApiHandle, ns: str, name: str, replicas: int) -> dict[str, Any] | None:
    deployment = get(kube, "deployments", ns, name) or {}
    status = deployment.get("status") or {}
    current = status.get("observedGeneration") == deployment.get("metadata", {}).get("generation")
    done = all(status.get(k) == replicas for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"))
    return deployment if current and done else None


def http_get(url: str) -> str:
    with _opener.open(url, timeout=10) as response:
        return str(response.read().decode())
