"""The pod runner's parts (``tests/fakes/pod_runner.py`` is the way in): a kubelet, kube-proxy, a scheduler
and the workload controllers of a Kubernetes cluster, for the Kubernetes API emulator of ``tests/fakes``.

Layers, highest first (each imports only from the layers after it):

- ``runner``: the node, one event loop running every part in passes;
- ``deployments`` (and ReplicaSets), ``statefulsets``, ``jobs`` (and CronJobs), ``disruption``, ``cnpg``,
  ``scheduler``, ``proxy`` (Services and EndpointSlices), ``kubelet`` (pods);
- ``container_runs`` (one container's life), ``containers`` (its process), ``probes``, ``pod_status``;
- ``cluster`` (what the parts share), ``api`` (client and informers), ``podspec``, ``volumes``,
  ``sandbox`` (pod network namespaces and the cluster network), ``images``, ``tokens``.

``container_init.py`` is a script of its own: it runs inside each pod's namespaces and imports nothing
from here. ``postgres-entrypoint.sh`` plays the official postgres image's entrypoint. What the API server
itself decides about pods (graceful deletion, evictions) is in ``tests/fakes/kube_pods.py``.
"""
