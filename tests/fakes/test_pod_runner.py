"""The pod runner (``tests/fakes/pod_runner.py``): what a kubelet and kube-proxy do for single pods.

Each test applies objects through the API, as ``kubectl`` would, and checks what a user of a cluster
would see: pod status, logs, what a process inside a pod finds, Services answering. The pods are small
``python3 -c`` or ``sh -c`` programs on the bare test image. They run in namespaces of their own, so
these tests need root (as CI has); without it they fail and say so, they are never skipped. Workloads
(rollouts, StatefulSets, databases, Jobs, the rendered tracker) are in ``test_pod_runner_workloads.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.kube_server import KubeApiHandle, running_kube_api
from tests.fakes.pod_runner import PodRunner, RunnerError
from tests.fakes.pod_testing import (
    MERGE,
    SCALE,
    available,
    container_status,
    create,
    finished_output,
    http_get,
    must,
    namespace,
    path,
    phase,
    python_pod,
    secret,
    web_deployment,
    web_service,
)

# -- environment --------------------------------------------------------------------------------------


def test_env_comes_from_secrets_configmaps_and_the_downward_api(runner: PodRunner, kube: KubeApiHandle) -> None:
    ns = namespace(kube, "env")
    create(kube, "secrets", ns, secret("creds", password="s3cr3t"))
    create(kube, "configmaps", ns, {"metadata": {"name": "conf"}, "data": {"mode": "fast"}})
    env: list[dict[str, Any]] = [
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "conf", "key": "mode"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "COMBINED", "value": "$(MODE)-$(POD_NAME)"},
        {"name": "ESCAPED", "value": "$$(MODE)"},
        {"name": "UNKNOWN", "value": "$(NOT_DEFINED)"},
    ]
    names = [e["name"] for e in env]
    program = f"import json, os; print(json.dumps({{k: os.environ.get(k) for k in {names!r}}}))"
    create(kube, "pods", ns, python_pod("printer", program, env=env))
    seen = json.loads(finished_output(runner, kube, ns, "printer"))
    pod_ip = must(kube, "pods", ns, "printer")["status"]["podIP"]
    assert seen == {
        "PASSWORD": "s3cr3t",
        "MODE": "fast",
        "POD_NAME": "printer",
        "POD_NAMESPACE": ns,
        "POD_IP": pod_ip,
        "COMBINED": "fast-printer",
        "ESCAPED": "$(MODE)",
        "UNKNOWN": "$(NOT_DEFINED)",
    }


def test_a_secret_key_that_is_missing_keeps_the_container_from_starting(runner: PodRunner, kube: KubeApiHandle) -> None:
    ns = namespace(kube, "nokey")
    create(kube, "secrets", ns, secret("creds", username="app"))
    env = [
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "OPTIONAL", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope", "optional": True}}},
    ]
    program = "import os; print(os.environ['PASSWORD'], os.environ.get('OPTIONAL', 'unset'))"
    create(kube, "pods", ns, python_pod("needs-key", program, env=env))

    def refused() -> dict[str, Any] | None:
        waiting = container_status(kube, ns, "needs-key").get("state", {}).get("waiting") or {}
        return waiting if waiting.get("reason") == "CreateContainerConfigError" else None

    waiting = runner.wait_for(refused, 30, "CreateContainerConfigError")
    assert waiting is not None and waiting["message"] == f"couldn't find key password in Secret {ns}/creds"
    assert phase(kube, ns, "needs-key") == "Pending"
    with pytest.raises(RunnerError):
        runner.logs(ns, "needs-key")  # no container was created
    patch = {"data": {"password": base64.b64encode(b"late").decode()}}
    assert kube.request("PATCH", path("secrets", ns, "creds"), patch, content_type=MERGE).status == 200
    assert finished_output(runner, kube, ns, "needs-key").strip() == "late unset"


# -- volumes --------------------------------------------------------------------------------------------


INSPECT = """
import json, os, stat
found = {"uid": os.getuid(), "groups": sorted(os.getgroups())}
for path in ["/etc/polite/conf/settings.yaml", "/var/run/polite/keys/keys.json", "/var/lib/polite/spool",
             "/etc/podinfo/labels", "/var/run/secrets/vault/token"]:
    info = os.stat(path)
    found[path] = {"mode": oct(stat.S_IMODE(info.st_mode)), "gid": info.st_gid}
found["token_owner"] = os.stat("/var/run/secrets/vault/token").st_uid
found["settings"] = open("/etc/polite/conf/settings.yaml").read()
found["other_key_listed"] = sorted(n for n in os.listdir("/etc/polite") if not n.startswith(".."))
found["labels"] = open("/etc/podinfo/labels").read()
found["token_parts"] = open("/var/run/secrets/vault/token").read().count(".") + 1
for target in ["/etc/polite/new", "/etc/written-into-root", "/var/lib/polite/spool/ok"]:
    try:
        open(target, "w").write("x")
        found[target] = "written"
    except OSError as exc:
        found[target] = exc.strerror
print(json.dumps(found))
"""


def _digest(target: Path) -> str:
    return hashlib.sha256(target.read_bytes()).hexdigest() if target.exists() else "absent"


def test_volumes_appear_at_the_pods_paths_with_their_modes_and_never_touch_the_host(
    runner: PodRunner, kube: KubeApiHandle
) -> None:
    ns = namespace(kube, "volumes")
    create(
        kube, "configmaps", ns, {"metadata": {"name": "settings"}, "data": {"settings.yaml": "a: 1\n", "other": "x"}}
    )
    create(kube, "secrets", ns, secret("keys", **{"keys.json": "{}"}))
    before = {p: _digest(Path(p)) for p in ("/etc/hosts", "/etc/polite", "/var/run/polite")}
    volumes = [
        {"name": "settings", "configMap": {"name": "settings", "items": [
            {"key": "settings.yaml", "path": "conf/settings.yaml", "mode": 0o400}
        ]}},
        {"name": "keys", "secret": {"secretName": "keys", "defaultMode": 0o440}},
        {"name": "spool", "emptyDir": {}},
        {"name": "podinfo", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}
        ]}},
        {"name": "vault", "projected": {"sources": [{"serviceAccountToken": {"audience": "vault", "path": "token"}}]}},
    ]  # fmt: skip
    mounts = [
        {"name": "settings", "mountPath": "/etc/polite", "readOnly": True},
        {"name": "keys", "mountPath": "/var/run/polite/keys", "readOnly": True},
        {"name": "spool", "mountPath": "/var/lib/polite/spool"},
        {"name": "podinfo", "mountPath": "/etc/podinfo"},
        {"name": "vault", "mountPath": "/var/run/secrets/vault"},
    ]
    pod_spec = {
        "volumes": volumes,
        "automountServiceAccountToken": False,
        "securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001, "runAsNonRoot": True},
    }
    security = {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}
    pod = python_pod("inspect", INSPECT, volumeMounts=mounts, securityContext=security, pod_spec=pod_spec)
    pod["metadata"]["labels"] = {"app": "inspect", "tier": "back"}
    create(kube, "pods", ns, pod)
    seen = json.loads(finished_output(runner, kube, ns, "inspect"))
    assert seen["uid"] == 10001 and 10001 in seen["groups"]
    # items: only the listed key, at its path; its mode 0400 gains group read from fsGroup (kubelet's rule).
    assert seen["other_key_listed"] == ["conf"] and seen["settings"] == "a: 1\n"
    assert seen["/etc/polite/conf/settings.yaml"] == {"mode": "0o440", "gid": 10001}
    assert seen["/var/run/polite/keys/keys.json"] == {"mode": "0o440", "gid": 10001}
    assert seen["/var/lib/polite/spool"]["gid"] == 10001 and seen["/var/lib/polite/spool"]["mode"] == "0o2777"
    # The token: 0600 and the pod's one user's; fsGroup then adds group read, as on a node.
    assert seen["/var/run/secrets/vault/token"] == {"mode": "0o640", "gid": 10001}
    assert seen["token_owner"] == 10001
    assert seen["labels"] == 'app="inspect"\ntier="back"'
    assert seen["token_parts"] == 3
    assert seen["/etc/polite/new"] == "Read-only file system"
    assert seen["/etc/written-into-root"] == "Read-only file system"
    assert seen["/var/lib/polite/spool/ok"] == "written"
    assert {p: _digest(Path(p)) for p in before} == before


def test_a_missing_configmap_volume_keeps_the_pod_in_container_creating(runner: PodRunner, kube: KubeApiHandle) -> None:
    ns = namespace(kube, "nocm")
    pod_spec = {"volumes": [{"name": "conf", "configMap": {"name": "later"}}]}
    mounts = [{"name": "conf", "mountPath": "/etc/conf"}]
    create(
        kube,
        "pods",
        ns,
        python_pod("mounts", "print(open('/etc/conf/k').read())", volumeMounts=mounts, pod_spec=pod_spec),
    )

    def failed_mount() -> bool:
        events = kube.request("GET", path("events", ns)).body.get("items") or []
        return any(e.get("reason") == "FailedMount" and 'configmap "later" not found' in e["message"] for e in events)

    runner.wait_for(failed_mount, 30, "a FailedMount event")
    assert container_status(kube, ns, "mounts")["state"] == {"waiting": {"reason": "ContainerCreating"}}
    create(kube, "configmaps", ns, {"metadata": {"name": "later"}, "data": {"k": "arrived"}})
    assert finished_output(runner, kube, ns, "mounts").strip() == "arrived"


# -- Services -----------------------------------------------------------------------------------------------


def test_service_names_resolve_inside_pods_and_reach_the_service(runner: PodRunner, kube: KubeApiHandle) -> None:
    ns = namespace(kube, "dns")
    create(kube, "deployments", ns, web_deployment("echo", replicas=1))
    create(kube, "services", ns, web_service("echo"))
    runner.wait_for(lambda: available(kube, ns, "echo", 1), 30, "echo available")
    names = ["echo", f"echo.{ns}", f"echo.{ns}.svc", f"echo.{ns}.svc.cluster.local"]
    program = f"""
    import json, socket, urllib.request
    found = {{}}
    for name in {names!r}:
        answer = urllib.request.urlopen(f"http://{{name}}/", timeout=10).read().decode()
        found[name] = [socket.gethostbyname(name), answer]
    print(json.dumps(found))
    """
    create(kube, "pods", ns, python_pod("client", program))
    seen = json.loads(finished_output(runner, kube, ns, "client"))
    addresses = {address for address, _ in seen.values()}
    assert len(addresses) == 1, seen
    assert all(answer.startswith("echo-") for _, answer in seen.values())
    assert http_get(runner.url(ns, "echo")).startswith("echo-")
    host, port = runner.services()[(ns, "echo", 80)]
    assert http_get(f"http://{host}:{port}/").startswith("echo-")


def test_probes_are_reported_and_an_unready_pod_leaves_the_service(runner: PodRunner, kube: KubeApiHandle) -> None:
    ns = namespace(kube, "probes")
    create(kube, "deployments", ns, web_deployment("web"))
    create(kube, "services", ns, web_service("web"))
    deployment = runner.wait_for(lambda: available(kube, ns, "web", 2), 30, "web available")
    assert deployment is not None
    conditions = {c["type"]: c["status"] for c in deployment["status"]["conditions"]}
    assert conditions == {"Available": "True", "Progressing": "True"}
    pods = runner.pods(ns, {"app": "web"})
    for pod in pods:
        assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"
        status = pod["status"]["containerStatuses"][0]
        assert {"ready": True, "started": True, "restartCount": 0}.items() <= status.items()
        assert "running" in status["state"]
    answered = {http_get(runner.url(ns, "web")).split()[0] for _ in range(12)}
    assert answered == {p["metadata"]["name"] for p in pods}
    leaving, staying = pods[0]["metadata"]["name"], pods[1]["metadata"]["name"]
    assert runner.exec(ns, leaving, ["touch", "/tmp/unready"])[0] == 0

    def unready() -> bool:
        pod = must(kube, "pods", ns, leaving)
        return bool({c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "False")

    runner.wait_for(unready, 30, f"{leaving} not ready")
    runner.wait_for(lambda: available(kube, ns, "web", 2) is None, 30, "the Deployment to count one ready")
    assert {http_get(runner.url(ns, "web")).split()[0] for _ in range(12)} == {staying}
    slices = kube.request("GET", path("endpointslices", ns)).body["items"]
    ready = {e["targetRef"]["name"]: e["conditions"]["ready"] for s in slices for e in s["endpoints"]}
    assert ready == {leaving: False, staying: True}


# -- restarts, rollouts, deletion ------------------------------------------------------------------------


def test_a_crashing_container_is_restarted_with_a_growing_back_off(runner: PodRunner, kube: KubeApiHandle) -> None:
    ns = namespace(kube, "crash")
    program = "import sys; print('run', flush=True); sys.exit(3)"
    create(kube, "pods", ns, python_pod("crasher", program, restart="Always"))
    messages: list[str] = []

    def backing_off(delay: str) -> bool:
        status = container_status(kube, ns, "crasher")
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") == "CrashLoopBackOff":
            messages.append(str(waiting.get("message")))
        return any(m.startswith(f"back-off {delay} ") for m in messages)

    runner.wait_for(lambda: backing_off("10s"), 30, "a back-off of 10 s")
    runner.wait_for(lambda: backing_off("20s"), 30, "a back-off of 20 s")
    status = container_status(kube, ns, "crasher")
    assert status["restartCount"] >= 2
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert status["lastState"]["terminated"]["reason"] == "Error"
    assert phase(kube, ns, "crasher") == "Running"
    assert runner.logs(ns, "crasher", previous=True) == "run\n"


ALIVE = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (print("killed", flush=True), sys.exit(143)))
open("/tmp/alive", "w").close()
print("started", flush=True)
while True:
    time.sleep(1)
"""


def test_a_failing_liveness_probe_kills_and_restarts_the_container(runner: PodRunner, kube: KubeApiHandle) -> None:
    ns = namespace(kube, "liveness")
    probe = {"exec": {"command": ["test", "-f", "/tmp/alive"]}, "periodSeconds": 2, "failureThreshold": 2}
    startup = {"exec": {"command": ["test", "-f", "/tmp/alive"]}, "periodSeconds": 1, "failureThreshold": 30}
    pod = python_pod("lively", ALIVE, restart="Always", livenessProbe=probe, startupProbe=startup)
    pod["spec"]["terminationGracePeriodSeconds"] = 20
    create(kube, "pods", ns, pod)
    runner.wait_for(lambda: container_status(kube, ns, "lively").get("started"), 30, "the startup probe to pass")
    assert runner.exec(ns, "lively", ["rm", "/tmp/alive"])[0] == 0
    runner.wait_for(lambda: container_status(kube, ns, "lively").get("restartCount") == 1, 30, "a restart")
    runner.wait_for(lambda: container_status(kube, ns, "lively").get("started"), 30, "started again")
    status = container_status(kube, ns, "lively")
    assert status["lastState"]["terminated"]["exitCode"] == 143
    assert runner.logs(ns, "lively", previous=True) == "started\nkilled\n"
    events = kube.request("GET", path("events", ns)).body["items"]
    assert any(e["reason"] == "Killing" and "failed liveness probe" in e["message"] for e in events)


def test_init_containers_run_to_completion_in_order_before_the_containers(
    runner: PodRunner, kube: KubeApiHandle
) -> None:
    ns = namespace(kube, "init")
    share = [{"name": "share", "mountPath": "/share"}]

    def step(name: str, word: str) -> dict[str, Any]:
        return {
            "name": name,
            "image": "busybox:1",
            "command": ["sh", "-c", f"echo {word} >> /share/order"],
            "volumeMounts": share,
        }

    pod = python_pod("ordered", "print(open('/share/order').read().split())", volumeMounts=share)
    pod["spec"]["initContainers"] = [step("first", "one"), step("second", "two")]
    pod["spec"]["volumes"] = [{"name": "share", "emptyDir": {}}]
    create(kube, "pods", ns, pod)
    assert finished_output(runner, kube, ns, "ordered").strip() == "['one', 'two']"
    finished = must(kube, "pods", ns, "ordered")["status"]
    assert [s["state"]["terminated"]["reason"] for s in finished["initContainerStatuses"]] == ["Completed", "Completed"]
    assert finished["phase"] == "Succeeded"


def test_stopping_the_runner_leaves_no_process_behind() -> None:
    marker = "1234.56789"
    program = f"sleep {marker} & sh -c 'sleep {marker}' & exec sleep {marker}"
    pod = {
        "metadata": {"name": "sleeper"},
        "spec": {"containers": [{"name": "s", "image": "busybox:1", "command": ["sh", "-c", program]}]},
    }
    with running_kube_api() as api:  # a node of its own: the module's runner must not run this pod
        ns = namespace(api, "stop")
        create(api, "pods", ns, pod)
        with PodRunner(api, time_scale=SCALE) as runner:
            runner.wait_for(lambda: phase(api, ns, "sleeper") == "Running", 30, "sleeper running")
            runner.wait_for(lambda: len(_processes_with(marker)) >= 3, 10, "every sleep started")
        assert _processes_with(marker) == []


def _processes_with(word: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = (entry / "stat").read_text().split()[2]
            except OSError:
                continue
            if word in command and state != "Z":
                found.append(int(entry.name))
    return found
