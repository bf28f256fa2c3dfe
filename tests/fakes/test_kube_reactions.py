"""How the emulator chooses the kmock reaction that answers (``tests/fakes/kube_reactions.py``) and
which open watches a write reaches: the same answers as kmock's own matching, whatever is streaming."""

from __future__ import annotations

import concurrent.futures
import uuid

from tests.fakes.kube_reactions import priority_order
from tests.fakes.kube_server import KubeApiHandle

MERGE = "application/merge-patch+json"


def test_reactions_are_ordered_highest_priority_first_ties_in_registration_order() -> None:
    # kmock pads shorter priorities with zeroes: (-inf,) is below (-inf, 1) and above (-inf, -1).
    fallback, raised, lowered, plain = (float("-inf"),), (float("-inf"), 1.0), (float("-inf"), -1.0), (0.0,)
    assert priority_order([fallback, plain, raised, lowered, plain]) == [1, 4, 2, 0, 3]


def test_a_reaction_answers_before_the_emulation_while_watches_stream(kube: KubeApiHandle) -> None:
    ns = f"react-{uuid.uuid4().hex[:8]}"
    assert kube.request("POST", "/api/v1/namespaces", {"metadata": {"name": ns}}).status == 201
    configmaps = f"/api/v1/namespaces/{ns}/configmaps"
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        watches = [pool.submit(kube.watch, configmaps, count=2, timeout=10) for _ in range(3)]
        kube.call(lambda k: k[f"get {configmaps}/injected"] << 503)
        for name in ("one", "two"):
            created = kube.request("POST", configmaps, {"metadata": {"name": name}})
            assert created.status == 201, created.body

        assert kube.request("GET", f"{configmaps}/injected").status == 503
        assert kube.request("GET", f"{configmaps}/one").body["metadata"]["name"] == "one"
        assert kube.request("GET", f"{configmaps}/nobody").status == 404
        for watch in watches:
            events = watch.result(timeout=15)
            assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
                ("ADDED", "one"),
                ("ADDED", "two"),
            ]


def test_a_watch_streams_only_the_changes_it_selects(kube: KubeApiHandle) -> None:
    ns = f"fanout-{uuid.uuid4().hex[:8]}"
    created = kube.request("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
    base = f"/api/v1/namespaces/{ns}"
    # From the namespace's revision: the same changes however late the watch opens.
    selected = {"labelSelector": "app=shown", "resourceVersion": created.body["metadata"]["resourceVersion"]}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        watch = pool.submit(kube.watch, f"{base}/configmaps", selected, count=3, timeout=10)
        kube.request("POST", f"{base}/secrets", {"metadata": {"name": "s", "labels": {"app": "shown"}}})
        kube.request("POST", f"{base}/configmaps", {"metadata": {"name": "hidden", "labels": {"app": "other"}}})
        kube.request("POST", f"{base}/configmaps", {"metadata": {"name": "shown", "labels": {"app": "shown"}}})
        kube.request(
            "PATCH", f"{base}/configmaps/hidden", {"metadata": {"labels": {"app": "shown"}}}, content_type=MERGE
        )
        kube.request("PATCH", f"{base}/configmaps/shown", {"metadata": {"labels": {"app": "gone"}}}, content_type=MERGE)
        events = watch.result(timeout=15)

    assert [(e["type"], e["object"]["kind"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "ConfigMap", "shown"),
        ("ADDED", "ConfigMap", "hidden"),  # starts matching: ADDED
        ("DELETED", "ConfigMap", "shown"),  # stops matching: DELETED
    ]


def test_reactions_filtering_on_query_or_a_callable_answer_only_their_requests(kube: KubeApiHandle) -> None:
    probes = "/apis/example.com/v1/probes"
    kube.call(lambda k: k[f"get {probes}", {"probe": "yes"}] << {"kind": "ProbeList", "items": [], "by": "query"})
    kube.call(lambda k: k[lambda request: request.url.path.endswith("/teapots")] << 418)

    assert kube.request("GET", probes, params={"probe": "yes"}).body["by"] == "query"
    assert kube.request("GET", probes, params={"probe": "no"}).status == 404
    assert kube.request("GET", "/apis/example.com/v1/teapots").status == 418
    assert kube.request("GET", "/api/v1/namespaces/default").body["metadata"]["name"] == "default"
