"""Fields an update may not change, as the API server's update validation (422 Invalid) and the
PersistentVolumeClaimResize admission plugin (403 Forbidden) refuse them.

From kubernetes/kubernetes (release 1.33) and the documentation each rule names:

- StatefulSet (pkg/apis/apps/validation/validation.go, ``ValidateStatefulSetUpdate``;
  https://kubernetes.io/docs/concepts/workloads/controllers/statefulset/): the spec may change only in
  replicas, ordinals, template, updateStrategy, persistentVolumeClaimRetentionPolicy and minReadySeconds.
- Deployment, ReplicaSet, DaemonSet (pkg/registry/apps/{deployment,replicaset,daemonset}/strategy.go,
  ``ValidateUpdate``; https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#label-selector-updates):
  ``spec.selector`` is immutable in apps/v1.
- Job (pkg/apis/batch/validation/validation.go, ``ValidateJobSpecUpdate``): ``spec.selector`` and
  ``spec.template`` are immutable, except that a suspended Job that never started may change its pod
  template's node selector, node affinity, tolerations, scheduling gates, labels and annotations
  (https://kubernetes.io/docs/concepts/workloads/controllers/job/#mutable-scheduling-directives).
- Service (pkg/apis/core/validation/validation.go, ``validateUpgradeDowngradeClusterIPs``): a cluster IP
  may not change once set. An update that omits ``clusterIP``/``clusterIPs`` (a PUT of the manifest as
  first applied, a merge patch with ``null``) keeps the allocated ones: the service registry fills them
  from the stored object before validation (pkg/registry/core/service/storage/storage.go,
  ``patchAllocatedValues``, then ``normalizeClusterIPs``), so this check mutates ``admission.obj`` as
  the server does. The emulator allocates no IPs: the rule holds once a client set one.
- PersistentVolumeClaim (``ValidatePersistentVolumeClaimUpdate``;
  https://kubernetes.io/docs/concepts/storage/persistent-volumes/#expanding-persistent-volumes-claims): the
  spec is immutable except, for a bound claim, ``resources.requests.storage`` and
  ``volumeAttributesClassName`` (and ``volumeName`` once, for binding); the request may shrink only while
  it stays above ``status.capacity`` (RecoverVolumeExpansionFailure, on by default since 1.32). Growing
  is then the admission plugin's (:func:`admit_pvc_resize`): the claim's StorageClass must allow it.
- ConfigMap and Secret with ``immutable: true`` (``ValidateConfigMapUpdate``, ``ValidateSecretUpdate``;
  https://kubernetes.io/docs/concepts/configuration/configmap/#configmap-immutable): ``immutable``,
  ``data``, ``binaryData`` (ConfigMap) stay; a Secret's ``type`` never changes. A Secret's ``stringData``
  counts as the ``data`` it becomes (the server converts it before validation).
- CustomResourceDefinition (apiextensions-apiserver pkg/apis/apiextensions/validation/validation.go,
  ``ValidateCustomResourceDefinitionSpecUpdate``): ``spec.group`` and ``spec.names.plural`` always,
  ``spec.scope`` and ``spec.names.kind`` once Established (the emulator establishes every CRD at once).

Not here: an object's ``metadata.namespace`` (``PoliteKubernetesEmulator._update`` keeps the stored one),
Pod spec immutability, Job fields other than selector and template, ``ipFamilies`` rules.

Comparisons are apimachinery's semantic equality: an empty list or map equals an absent one and
quantities compare by value ("1Gi" == "1024Mi"). The emulator does not default built-in objects as the
server does before validating, so the defaults a comparison depends on are applied to both sides
(StatefulSet ``podManagementPolicy`` OrderedReady, ``revisionHistoryLimit`` 10, claim templates'
``volumeMode`` Filesystem and ``status.phase`` Pending; PVC ``volumeMode``; Secret ``type`` Opaque).
Composite values in messages are rendered as JSON, as Kubernetes 1.34 renders them (kubernetes PR
132314; 1.33 printed Go syntax, ``[]string{"10.0.0.1"}``); a PVC refusal's appended diff is a unified
diff of the two specs' JSON, not the server's exact text.
"""

from __future__ import annotations

import base64
import copy
import difflib
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from politetenant.operator.render.hardening import parse_quantity
from tests.fakes.kube_emulator import Admission, ApiError, invalid

Body = dict[str, Any]
Cause = tuple[str, str, str]
STORAGE_CLASSES = "storage.k8s.io/v1/storageclasses"
BETA_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"
STATEFULSET_MESSAGE = (
    "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
    "'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
)
PVC_MESSAGE = (
    "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound "
    "claims"
)
RESIZE_MESSAGE = (
    "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize"
)
_STATEFULSET_MUTABLE = frozenset(
    {"replicas", "ordinals", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy", "minReadySeconds"}
)
_QUANTITY_MAPS = frozenset({"requests", "limits", "capacity", "allocatedResources", "overhead"})
_JOB_SCHEDULING = ("nodeSelector", "tolerations", "schedulingGates")


def _quantity(value: Any) -> Any:
    try:
        return parse_quantity(value) if isinstance(value, str) else Decimal(value)
    except (ValueError, ArithmeticError, TypeError):
        return value


def semantic(value: Any, key: str = "") -> Any:
    """A value as apimachinery's ``Semantic.DeepEqual`` compares it: nulls, empty lists and empty maps
    are absent (None), resource quantities are numbers."""
    if isinstance(value, dict):
        kept = {k: v for k, v in ((k, semantic(v, k)) for k, v in value.items()) if v is not None}
        if key in _QUANTITY_MAPS:
            kept = {k: _quantity(v) for k, v in kept.items()}
        return kept or None
    if isinstance(value, list):
        return [semantic(item) for item in value] or None
    return value


def _shown(value: Any) -> str:
    return "null" if value is None else json.dumps(value, separators=(",", ":"))


def _immutable(path: str, new: Any, old: Any) -> list[Cause]:
    """ValidateImmutableField: ``<path>: Invalid value: <new>: field is immutable``."""
    if semantic(new) == semantic(old):
        return []
    return [(path, "FieldValueInvalid", f"Invalid value: {_shown(new)}: field is immutable")]


def _spec(obj: Body) -> Body:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _defaulted(body: Body, defaults: dict[str, Any]) -> Body:
    return {**body, **{k: v for k, v in defaults.items() if body.get(k) is None}}


# --- apps and batch ---------------------------------------------------------------------------------


def _claim_template(template: Any) -> Any:
    if not isinstance(template, dict):
        return template
    kept = {k: v for k, v in template.items() if k not in ("apiVersion", "kind")}
    kept["spec"] = _defaulted(dict(kept.get("spec") or {}), {"volumeMode": "Filesystem"})
    kept["status"] = _defaulted(dict(kept.get("status") or {}), {"phase": "Pending"})
    return kept


def _statefulset_frozen(spec: Body) -> Any:
    frozen = {k: v for k, v in spec.items() if k not in _STATEFULSET_MUTABLE}
    frozen = _defaulted(frozen, {"podManagementPolicy": "OrderedReady", "revisionHistoryLimit": 10})
    frozen["volumeClaimTemplates"] = [_claim_template(t) for t in frozen.get("volumeClaimTemplates") or []]
    return semantic(frozen)


def _statefulset(new: Body, old: Body) -> list[Cause]:
    if _statefulset_frozen(_spec(new)) == _statefulset_frozen(_spec(old)):
        return []
    return [("spec", "FieldValueForbidden", STATEFULSET_MESSAGE)]


def _selector(new: Body, old: Body) -> list[Cause]:
    return _immutable("spec.selector", _spec(new).get("selector"), _spec(old).get("selector"))


def _job(new: Body, old: Body) -> list[Cause]:
    spec, old_spec = _spec(new), _spec(old)
    template, old_template = spec.get("template"), copy.deepcopy(old_spec.get("template"))
    never_started = not (old.get("status") or {}).get("startTime")
    if old_spec.get("suspend") is True and never_started and isinstance(template, dict):
        old_template = old_template if isinstance(old_template, dict) else {}
        pod, old_pod = template.get("spec") or {}, old_template.setdefault("spec", {})
        old_template.setdefault("metadata", {})
        for key in ("labels", "annotations"):
            old_template["metadata"][key] = (template.get("metadata") or {}).get(key)
        for key in _JOB_SCHEDULING:
            old_pod[key] = pod.get(key)
        affinity = dict(old_pod.get("affinity") or {})
        affinity["nodeAffinity"] = (pod.get("affinity") or {}).get("nodeAffinity")
        old_pod["affinity"] = affinity
    return _selector(new, old) + _immutable("spec.template", template, old_template)


# --- core ---------------------------------------------------------------------------------------------


def _cluster_ips(spec: Body) -> list[str]:
    ips = spec.get("clusterIPs")
    if isinstance(ips, list) and ips:
        return [str(ip) for ip in ips]
    return [str(spec["clusterIP"])] if spec.get("clusterIP") else []


def _service(new: Body, old: Body) -> list[Cause]:
    spec, old_spec = new.setdefault("spec", {}), _spec(old)
    if "ExternalName" in (spec.get("type"), old_spec.get("type")):
        return []
    for key in ("clusterIP", "clusterIPs"):  # patchAllocatedValues
        if not spec.get(key) and old_spec.get(key):
            spec[key] = copy.deepcopy(old_spec[key])
    old_ips = _cluster_ips(old_spec)
    singular, plural = spec.get("clusterIP"), spec.get("clusterIPs")
    if singular and singular != old_spec.get("clusterIP") and plural in (None, old_spec.get("clusterIPs")):
        spec["clusterIPs"] = [singular]  # normalizeClusterIPs: a client that changed only the singular field
    new_ips = _cluster_ips(spec)
    if old_ips == ["None"] and new_ips == ["None"]:
        return []
    where, changed = "spec.clusterIPs[0]", f"Invalid value: {_shown(new_ips or None)}: may not change once set"
    if len(old_ips) == len(new_ips):
        return [
            (f"spec.clusterIPs[{i}]", "FieldValueInvalid", changed) for i, ip in enumerate(old_ips) if ip != new_ips[i]
        ]
    if len(old_ips) > len(new_ips):
        if not new_ips:
            return [(where, "FieldValueInvalid", "Invalid value: null: primary clusterIP can not be unset")]
        causes = [(where, "FieldValueInvalid", changed)] if new_ips[0] != old_ips[0] else []
        if len(new_ips) == 1 and spec.get("ipFamilyPolicy") != "SingleStack":
            message = "`ipFamilyPolicy` must be set to 'SingleStack' when releasing the secondary clusterIP"
            causes.append((where, "FieldValueInvalid", f"Invalid value: {_shown(new_ips)}: {message}"))
        return causes
    return [(where, "FieldValueInvalid", changed)] if old_ips and new_ips[0] != old_ips[0] else []


def _storage(obj: Body, part: str = "spec") -> Any:
    holder = obj.get(part) or {}
    found = ((holder.get("resources") or {}).get("requests") or {}) if part == "spec" else holder.get("capacity") or {}
    value = found.get("storage")
    return None if value is None else _quantity(value)


def _pvc(new: Body, old: Body) -> list[Cause]:
    spec = _defaulted(copy.deepcopy(_spec(new)), {"volumeMode": "Filesystem"})
    old_spec = _defaulted(copy.deepcopy(_spec(old)), {"volumeMode": "Filesystem"})
    if not old_spec.get("volumeName"):  # the binder sets volumeName once
        old_spec["volumeName"] = spec.get("volumeName")
    if (new.get("status") or {}).get("phase") == "Bound":
        requests = (spec.get("resources") or {}).get("requests")
        if isinstance(requests, dict):
            requests["storage"] = ((old_spec.get("resources") or {}).get("requests") or {}).get("storage")
        if spec.get("volumeAttributesClassName") is not None:
            spec["volumeAttributesClassName"] = old_spec.get("volumeAttributesClassName")
    causes: list[Cause] = []
    if semantic(spec) != semantic(old_spec):
        before = json.dumps(semantic(old_spec), indent=1, default=str).splitlines()
        after = json.dumps(semantic(spec), indent=1, default=str).splitlines()
        diff = "\n".join(list(difflib.unified_diff(before, after, lineterm="", n=2))[2:])
        causes.append(("spec", "FieldValueForbidden", f"{PVC_MESSAGE}\n{diff}"))
    new_size, old_size = _storage(new) or Decimal(0), _storage(old) or Decimal(0)
    capacity = _storage(old, "status") or Decimal(0)
    if _comparable(new_size, old_size, capacity) and new_size < old_size and new_size <= capacity:
        where = "spec.resources.requests.storage"
        causes.append((where, "FieldValueForbidden", "Forbidden: field can not be less than status.capacity"))
    new_mode, old_mode = (_spec(o).get("volumeMode") or "Filesystem" for o in (new, old))
    return causes + _immutable("volumeMode", new_mode, old_mode)


def _comparable(*values: Any) -> bool:
    return all(isinstance(v, Decimal) for v in values)


def _immutable_data(new: Body, old: Body, fields: tuple[str, ...], data: Callable[[Body], Any]) -> list[Cause]:
    if old.get("immutable") is not True:
        return []
    message = "Forbidden: field is immutable when `immutable` is set"
    causes = [] if new.get("immutable") is True else [("immutable", "FieldValueForbidden", message)]
    for name in fields:
        if semantic(data(new) if name == "data" else new.get(name)) != semantic(
            data(old) if name == "data" else old.get(name)
        ):
            causes.append((name, "FieldValueForbidden", message))
    return causes


def _configmap(new: Body, old: Body) -> list[Cause]:
    return _immutable_data(new, old, ("data", "binaryData"), lambda obj: obj.get("data"))


def _secret_data(secret: Body) -> Body:
    """What ``data`` is once the server converted ``stringData`` into it (stringData wins)."""
    data = dict(secret.get("data") or {})
    for key, text in (secret.get("stringData") or {}).items():
        data[key] = base64.b64encode(str(text).encode()).decode()
    return data


def _secret(new: Body, old: Body) -> list[Cause]:
    causes = _immutable("type", new.get("type") or "Opaque", old.get("type") or "Opaque")
    return causes + _immutable_data(new, old, ("data",), _secret_data)


def _crd(new: Body, old: Body) -> list[Cause]:
    spec, old_spec = _spec(new), _spec(old)
    names, old_names = spec.get("names") or {}, old_spec.get("names") or {}
    conditions = (old.get("status") or {}).get("conditions") or []
    causes: list[Cause] = []
    if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
        causes += _immutable("spec.scope", spec.get("scope"), old_spec.get("scope"))
        causes += _immutable("spec.names.kind", names.get("kind"), old_names.get("kind"))
    causes += _immutable("spec.group", spec.get("group"), old_spec.get("group"))
    return causes + _immutable("spec.names.plural", names.get("plural"), old_names.get("plural"))


_RULES: dict[tuple[str, str], Callable[[Body, Body], list[Cause]]] = {
    ("apps", "statefulsets"): _statefulset,
    ("apps", "deployments"): _selector,
    ("apps", "replicasets"): _selector,
    ("apps", "daemonsets"): _selector,
    ("batch", "jobs"): _job,
    ("", "services"): _service,
    ("", "persistentvolumeclaims"): _pvc,
    ("", "configmaps"): _configmap,
    ("", "secrets"): _secret,
    ("apiextensions.k8s.io", "customresourcedefinitions"): _crd,
}


def check_immutable(admission: Admission) -> None:
    """On UPDATE of the main resource (a status write leaves the rest as stored), refuse what the
    module docstring lists with 422 Invalid, one cause per field as the server reports them."""
    new, old = admission.obj, admission.old
    if admission.operation != "UPDATE" or admission.subresource is not None or new is None or old is None:
        return
    rule = _RULES.get((str(admission.res.group or ""), str(admission.res.plural)))
    if rule is None or admission.custom:
        return
    causes = rule(new, old)
    if causes:
        raise invalid(admission.res, admission.kind, admission.name, causes)


def _claim_class(claim: Body) -> str:
    annotations = (claim.get("metadata") or {}).get("annotations") or {}
    if BETA_CLASS_ANNOTATION in annotations:
        return str(annotations[BETA_CLASS_ANNOTATION])
    return str(_spec(claim).get("storageClassName") or "")


def admit_pvc_resize(admission: Admission) -> None:
    """Admission plugin PersistentVolumeClaimResize (plugin/pkg/admission/storage/persistentvolume/resize;
    https://kubernetes.io/docs/reference/access-authn-authz/admission-controllers/#persistentvolumeclaimresize):
    a claim's storage request may grow only when it is bound and its StorageClass (the same before and
    after, never "") has ``allowVolumeExpansion: true``; otherwise 403 Forbidden."""
    new, old = admission.obj, admission.old
    res = admission.res
    if admission.operation != "UPDATE" or admission.subresource is not None or new is None or old is None:
        return
    if (res.group or "", res.plural) != ("", "persistentvolumeclaims"):
        return
    new_size, old_size = _storage(new) or Decimal(0), _storage(old) or Decimal(0)
    if not _comparable(new_size, old_size) or new_size <= old_size:
        return
    if (old.get("status") or {}).get("phase") != "Bound":
        reason = "Only bound persistent volume claims can be expanded"
    else:
        name = _claim_class(new)
        storage_class = admission.read(STORAGE_CLASSES, name) if name and name == _claim_class(old) else None
        if storage_class is not None and storage_class.get("allowVolumeExpansion") is True:
            return
        reason = RESIZE_MESSAGE
    message = f'persistentvolumeclaims "{admission.name}" is forbidden: {reason}'
    raise ApiError(403, "Forbidden", message, {"name": admission.name, "kind": "persistentvolumeclaims"})
