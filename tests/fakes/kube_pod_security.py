"""The PodSecurity admission plugin: the Pod Security Standards enforced per namespace, by its labels.

https://kubernetes.io/docs/concepts/security/pod-security-admission/ (modes, labels, workloads, exemptions) and
https://kubernetes.io/docs/concepts/security/pod-security-standards/ (the baseline and restricted checks).
Reasons, details and their order are the plugin's (kubernetes ``staging/src/k8s.io/pod-security-admission``:
``policy/check_*.go``, ``policy/registry.go``, ``admission/admission.go``, ``api/helpers.go``), so a refusal
reads as the server's: ``pods "web" is forbidden: violates PodSecurity "restricted:latest": ...``. Pods are
refused by ``enforce`` (403) and warned by ``warn``; workloads with a pod template are only ever warned;
invalid namespace labels are 422.

Approximated, and said so: every policy version (``*-version: v1.x``) is checked with the latest rules (the
plugin's source as of Kubernetes 1.37); messages name the version the label gave, as the server's do.
``audit`` has no effect (no audit log). Not there: exemptions (usernames, runtimeClasses, namespaces) and
defaults, which come from an AdmissionConfiguration the emulator lacks (so unlabelled namespaces are
privileged and kube-system is not special unless labelled); warnings about existing pods when a namespace's
enforce level is raised.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.fakes.kube_emulator import NAMESPACES, PODS, Admission, ApiError, invalid

Body = Mapping[str, Any]
Result = tuple[str, str] | None  # a failed check's (forbidden reason, detail); None when it allows the pod
Check = Callable[[Body, Body], Result]  # (pod metadata, pod spec)

PRIVILEGED, BASELINE, RESTRICTED = "privileged", "baseline", "restricted"
LEVELS = (PRIVILEGED, BASELINE, RESTRICTED)  # by strictness
MODES = ("enforce", "audit", "warn")
LABEL_PREFIX = "pod-security.kubernetes.io/"
_VERSION = re.compile(r"v1\.([0-9]|[1-9][0-9]*)")
# Resources with a pod template (admission.go, defaultPodSpecResources), by (group, plural).
WORKLOADS = {("", "replicationcontrollers"), ("", "podtemplates"), ("batch", "jobs"), ("batch", "cronjobs")}
WORKLOADS |= {("apps", plural) for plural in ("replicasets", "deployments", "statefulsets", "daemonsets")}
# Pod subresources that cannot change the pod spec (admission.go, ignoredPodSubresources).
_IGNORED_POD_SUBRESOURCES = {"exec", "attach", "binding", "eviction", "log", "portforward", "proxy", "status"}

# The values the standards allow (latest version of each check).
_BASELINE_CAPABILITIES = set("AUDIT_WRITE CHOWN DAC_OVERRIDE FOWNER FSETID KILL MKNOD NET_BIND_SERVICE SETFCAP".split())
_BASELINE_CAPABILITIES |= {"SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
_SAFE_SYSCTLS = set(
    """kernel.shm_rmid_forced net.ipv4.ip_local_port_range net.ipv4.tcp_syncookies
    net.ipv4.ping_group_range net.ipv4.ip_unprivileged_port_start net.ipv4.ip_local_reserved_ports
    net.ipv4.tcp_keepalive_time net.ipv4.tcp_fin_timeout net.ipv4.tcp_keepalive_intvl net.ipv4.tcp_keepalive_probes
    net.ipv4.tcp_rmem net.ipv4.tcp_wmem net.ipv4.tcp_slow_start_after_idle net.ipv4.tcp_notsent_lowat""".split()
)
_SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
_PROFILE_TYPES = {"RuntimeDefault", "Localhost"}  # seccomp and AppArmor alike
_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
_RESTRICTED_VOLUMES = set("configMap csi downwardAPI emptyDir ephemeral image persistentVolumeClaim projected".split())
_RESTRICTED_VOLUMES.add("secret")
# The names the restricted-volumes check gives the other sources, in the order it tests them.
_NAMED_VOLUMES = """hostPath gcePersistentDisk awsElasticBlockStore gitRepo nfs iscsi glusterfs rbd flexVolume cinder
    cephfs flocker fc azureFile vsphereVolume quobyte azureDisk photonPersistentDisk portworxVolume scaleIO
    storageos""".split()


# --- Helpers: the plugin's wording (policy/helpers.go, policy/visitor.go) -----------------------------


def _plural(singular: str, plural: str, count: int) -> str:
    return singular if count == 1 else plural


def _quoted(items: Iterable[str]) -> str:
    return ", ".join(f'"{item}"' for item in items)


def _who(names: list[str], noun: str = "container") -> str:
    return f"{_plural(noun, noun + 's', len(names))} {_quoted(names)}"


def _containers(spec: Body) -> list[Body]:
    """Init containers, containers, then ephemeral containers: the order the plugin visits them."""
    fields = ("initContainers", "containers", "ephemeralContainers")
    return [c for key in fields for c in spec.get(key) or [] if isinstance(c, Mapping)]


def _name(container: Body) -> str:
    return str(container.get("name", ""))


def _context(holder: Body) -> Body:
    context = holder.get("securityContext")
    return context if isinstance(context, Mapping) else {}


def _setters(spec: Body, bad: Callable[[Body], bool], *, pod: bool = True) -> list[str]:
    """``pod`` and/or ``container "a"`` (``containers "a", "b"``): whose security context has a bad value."""
    names = [_name(c) for c in _containers(spec) if bad(_context(c))]
    return (["pod"] if pod and bad(_context(spec)) else []) + ([_who(names)] if names else [])


def _profile(context: Body, key: str) -> str | None:
    """The type of a seccomp or AppArmor profile ("" when left out), None when no profile is set."""
    profile = context.get(key)
    return str(profile.get("type") or "") if isinstance(profile, Mapping) else None


def _bad_types(spec: Body, key: str) -> set[str]:
    return {t for h in [spec, *_containers(spec)] if (t := _profile(_context(h), key)) is not None} - _PROFILE_TYPES


def _forbid(reason: str, text: str, bad: Callable[[Body], bool], *, pod: bool = True) -> Check:
    """The common shape of a check: ``<who> <text>``, naming who sets a forbidden value."""

    def check(meta: Body, spec: Body) -> Result:
        setters = _setters(spec, bad, pod=pod)
        return (reason, f"{' and '.join(setters)} {text}") if setters else None

    return check


def _unless(exempt: str, check: Check) -> Check:
    """``hostUsers: false`` (a user namespace) relaxes procMount, runAsNonRoot and runAsUser (policy 1.35+);
    ``os.name: windows`` exempts privilege escalation, capabilities and seccomp, which Windows lacks (1.25+)."""
    users, windows = exempt == "hostUsers", exempt == "windows"
    return lambda meta, spec: (
        None
        if (users and spec.get("hostUsers") is False) or (windows and (spec.get("os") or {}).get("name") == "windows")
        else check(meta, spec)
    )


# --- The checks (policy/check_*.go, the latest version of each) ---------------------------------------


def _app_armor(meta: Body, spec: Body) -> Result:
    setters = _setters(spec, lambda sc: _profile(sc, "appArmorProfile") not in (None, *_PROFILE_TYPES))
    annotations = sorted(
        f"{key}={json.dumps(value)}"
        for key, value in (meta.get("annotations") or {}).items()
        if key.startswith(_APPARMOR_ANNOTATION)
        and not (value in ("", "runtime/default") or value.startswith("localhost/"))
    )
    listed = sorted(_bad_types(spec, "appArmorProfile")) + annotations
    setters += [_plural("annotation", "annotations", len(annotations))] if annotations else []
    if not setters:
        return None
    detail = f"{' and '.join(setters)} must not set AppArmor profile type to {_quoted(listed)}"
    return _plural("forbidden AppArmor profile", "forbidden AppArmor profiles", len(listed)), detail


def _collect(spec: Body, found: Callable[[Body], Iterable[Any]]) -> tuple[list[str], list[str]]:
    """The containers in which ``found`` finds values, and those values (sorted, without repeats)."""
    each = [(_name(c), {str(value) for value in found(c)}) for c in _containers(spec)]
    return [name for name, values in each if values], sorted(set().union(*(values for _, values in each)))


def _added_capabilities(spec: Body, allowed: set[str]) -> tuple[list[str], str]:
    bad, added = _collect(spec, lambda c: set((_context(c).get("capabilities") or {}).get("add") or []) - allowed)
    return bad, f"{_who(bad)} must not include {_quoted(added)} in securityContext.capabilities.add"


def _capabilities_baseline(meta: Body, spec: Body) -> Result:
    bad, detail = _added_capabilities(spec, _BASELINE_CAPABILITIES)
    return ("non-default capabilities", detail) if bad else None


def _capabilities_restricted(meta: Body, spec: Body) -> Result:
    drops = [(_name(c), (_context(c).get("capabilities") or {}).get("drop") or []) for c in _containers(spec)]
    missing = [name for name, dropped in drops if "ALL" not in dropped]
    details = [f'{_who(missing)} must set securityContext.capabilities.drop=["ALL"]'] if missing else []
    adding, detail = _added_capabilities(spec, {"NET_BIND_SERVICE"})
    details += [detail] if adding else []
    return ("unrestricted capabilities", "; ".join(details)) if details else None


def _host_namespaces(meta: Body, spec: Body) -> Result:
    shared = [f"{key}=true" for key in ("hostNetwork", "hostPID", "hostIPC") if spec.get(key) is True]
    return ("host namespaces", ", ".join(shared)) if shared else None


def _host_path_volumes(meta: Body, spec: Body) -> Result:
    names = [str(v.get("name", "")) for v in spec.get("volumes") or [] if v.get("hostPath") is not None]
    return ("hostPath volumes", _who(names, "volume")) if names else None


def _host_ports(meta: Body, spec: Body) -> Result:
    bad, ports = _collect(spec, lambda c: [p["hostPort"] for p in c.get("ports") or [] if p.get("hostPort")])
    uses = f"{_plural('uses', 'use', len(bad))} {_plural('hostPort', 'hostPorts', len(ports))}"
    return ("hostPort", f"{_who(bad)} {uses} {', '.join(ports)}") if bad else None


def _probe_hosts(container: Body) -> list[str]:
    lifecycle = container.get("lifecycle") or {}
    handlers = [container.get(p) for p in ("livenessProbe", "readinessProbe", "startupProbe")]
    ways = [(h or {}).get(w) or {} for h in [*handlers, lifecycle.get("postStart"), lifecycle.get("preStop")]
            for w in ("httpGet", "tcpSocket")]  # fmt: skip
    return [way["host"] for way in ways if way.get("host")]


def _host_probes(meta: Body, spec: Body) -> Result:
    bad, hosts = _collect(spec, _probe_hosts)
    noun = _plural("probe or lifecycle host", "probe or lifecycle hosts", len(hosts))
    detail = f"{_who(sorted(bad))} {_plural('uses', 'use', len(bad))} {noun} {_quoted(hosts)}"
    return ("probe or lifecycle host", detail) if bad else None


def _proc_mount(meta: Body, spec: Body) -> Result:
    bad, mounts = _collect(
        spec, lambda c: [] if _context(c).get("procMount") in (None, "Default") else [_context(c)["procMount"]]
    )
    detail = f"{_who(bad)} must not set securityContext.procMount to {_quoted(mounts)}"
    return ("procMount", detail) if bad else None


def _se_linux(meta: Body, spec: Body) -> Result:
    options = [o for h in [spec, *_containers(spec)] if isinstance(o := _context(h).get("seLinuxOptions"), Mapping)]
    types = {str(o.get("type") or "") for o in options} - _SELINUX_TYPES
    data = [f"{_plural('type', 'types', len(types))} {_quoted(sorted(types))}"] if types else []
    data += [f"{key} may not be set" for key in ("user", "role") if any(o.get(key) for o in options)]

    def bad(context: Body) -> bool:
        o = context.get("seLinuxOptions")
        return isinstance(o, Mapping) and (
            str(o.get("type") or "") not in _SELINUX_TYPES or bool(o.get("user") or o.get("role"))
        )

    setters = _setters(spec, bad)
    detail = f"{' and '.join(setters)} set forbidden securityContext.seLinuxOptions: {'; '.join(data)}"
    return ("seLinuxOptions", detail) if setters else None


def _seccomp_baseline(meta: Body, spec: Body) -> Result:
    setters = _setters(spec, lambda sc: _profile(sc, "seccompProfile") not in (None, *_PROFILE_TYPES))
    listed = _quoted(sorted(_bad_types(spec, "seccompProfile")))
    detail = f"{' and '.join(setters)} must not set securityContext.seccompProfile.type to {listed}"
    return ("seccompProfile", detail) if setters else None


def _seccomp_restricted(meta: Body, spec: Body) -> Result:
    explicit = _seccomp_baseline(meta, spec)
    if explicit is not None or _profile(_context(spec), "seccompProfile") is not None:
        return explicit
    implicit = [_name(c) for c in _containers(spec) if _profile(_context(c), "seccompProfile") is None]
    detail = f'pod or {_who(implicit)} must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"'
    return ("seccompProfile", detail) if implicit else None


def _sysctls(meta: Body, spec: Body) -> Result:
    names = [str(s.get("name")) for s in _context(spec).get("sysctls") or [] if s.get("name") not in _SAFE_SYSCTLS]
    return ("forbidden sysctls", ", ".join(names)) if names else None


def _restricted_volumes(meta: Body, spec: Body) -> Result:
    bad, types = [], set()
    for volume in spec.get("volumes") or []:
        if all(volume.get(key) is None for key in _RESTRICTED_VOLUMES):
            bad.append(str(volume.get("name", "")))
            types.add(next((key for key in _NAMED_VOLUMES if volume.get(key) is not None), "unknown"))
    noun = _plural("restricted volume type", "restricted volume types", len(types))
    detail = f"{_who(bad, 'volume')} {_plural('uses', 'use', len(bad))} {noun} {_quoted(sorted(types))}"
    return ("restricted volume types", detail) if bad else None


def _run_as_non_root(meta: Body, spec: Body) -> Result:
    explicit = _forbid(
        "runAsNonRoot != true",
        "must not set securityContext.runAsNonRoot=false",
        lambda sc: sc.get("runAsNonRoot") is not None and not sc["runAsNonRoot"],
    )(meta, spec)
    if explicit is not None or _context(spec).get("runAsNonRoot"):
        return explicit
    implicit = [_name(c) for c in _containers(spec) if _context(c).get("runAsNonRoot") is None]
    detail = f"pod or {_who(implicit)} must set securityContext.runAsNonRoot=true"
    return ("runAsNonRoot != true", detail) if implicit else None


_privileged = _forbid(
    "privileged", "must not set securityContext.privileged=true", lambda sc: sc.get("privileged") is True, pod=False
)
_host_process = _forbid(
    "hostProcess",
    "must not set securityContext.windowsOptions.hostProcess=true",
    lambda sc: (sc.get("windowsOptions") or {}).get("hostProcess") is True,
)
_allow_privilege_escalation = _forbid(
    "allowPrivilegeEscalation != false",
    "must set securityContext.allowPrivilegeEscalation=false",
    lambda sc: sc.get("allowPrivilegeEscalation") is not False,
    pod=False,
)
_run_as_user = _forbid(
    "runAsUser=0", "must not set runAsUser=0", lambda sc: type(sc.get("runAsUser")) is int and sc["runAsUser"] == 0
)

# (check ID, level, check, baseline checks it replaces at the restricted level), policy/check_*.go.
CHECKS: tuple[tuple[str, str, Check, tuple[str, ...]], ...] = (
    ("appArmorProfile", BASELINE, _app_armor, ()),
    ("capabilities_baseline", BASELINE, _capabilities_baseline, ()),
    ("hostNamespaces", BASELINE, _host_namespaces, ()),
    ("hostPathVolumes", BASELINE, _host_path_volumes, ()),
    ("hostPorts", BASELINE, _host_ports, ()),
    ("hostProbesAndHostLifecycle", BASELINE, _host_probes, ()),
    ("privileged", BASELINE, _privileged, ()),
    ("procMount", BASELINE, _unless("hostUsers", _proc_mount), ()),
    ("seLinuxOptions", BASELINE, _se_linux, ()),
    ("seccompProfile_baseline", BASELINE, _seccomp_baseline, ()),
    ("sysctls", BASELINE, _sysctls, ()),
    ("windowsHostProcess", BASELINE, _host_process, ()),
    ("allowPrivilegeEscalation", RESTRICTED, _unless("windows", _allow_privilege_escalation), ()),
    ("capabilities_restricted", RESTRICTED, _unless("windows", _capabilities_restricted), ("capabilities_baseline",)),
    ("procMount_restricted", RESTRICTED, _proc_mount, ("procMount",)),
    ("restrictedVolumes", RESTRICTED, _restricted_volumes, ("hostPathVolumes",)),
    ("runAsNonRoot", RESTRICTED, _unless("hostUsers", _run_as_non_root), ()),
    ("runAsUser", RESTRICTED, _unless("hostUsers", _run_as_user), ()),
    ("seccompProfile_restricted", RESTRICTED, _unless("windows", _seccomp_restricted), ("seccompProfile_baseline",)),
)


def pod_security_violations(level: str, metadata: Body, spec: Body) -> str:
    """``reason (detail), ...`` for every check of ``level`` a pod (or template) fails, "" if none, in the
    plugin's order (policy/registry.go): baseline checks by ID, then restricted ones by ID, less the baseline
    checks a restricted one replaces; joined as policy/checks.go ForbiddenDetail joins them."""
    if level == PRIVILEGED:
        return ""
    chosen = [c for c in CHECKS if c[1] == BASELINE or level == RESTRICTED]
    replaced = {id_ for c in chosen for id_ in c[3]}
    ordered = sorted((c for c in chosen if c[0] not in replaced), key=lambda c: (c[1] != BASELINE, c[0]))
    found = [result for _, _, check, _ in ordered if (result := check(metadata, spec)) is not None]
    return ", ".join(f"{reason} ({detail})" if detail else reason for reason, detail in found)


# --- The namespace's policy (api/helpers.go PolicyToEvaluate) -----------------------------------------


@dataclass(frozen=True)
class LevelVersion:
    level: str
    version: str = "latest"

    def __str__(self) -> str:
        return f"{self.level}:{self.version}"


Policy = dict[str, LevelVersion]  # mode (enforce, audit, warn) -> level and version
Cause = tuple[str, str, str]  # (field, reason, message) for ``invalid``


def namespace_policy(labels: Mapping[str, str] | None) -> tuple[Policy, list[Cause]]:
    """The policy a namespace's labels give, and the causes of a 422 for invalid ones. Without a label a mode
    is privileged:latest; an invalid level is restricted for enforce (fail closed), privileged for audit and
    warn; an invalid version is latest. An unset warn level follows an explicit baseline or restricted enforce."""
    policy, causes, labels = {}, [], labels or {}
    for mode in MODES:
        key = LABEL_PREFIX + mode
        level, version = labels.get(key, PRIVILEGED), labels.get(key + "-version", "latest")
        if level not in LEVELS:
            causes.append(_invalid_label(key, level, "must be one of " + ", ".join(LEVELS)))
            level = RESTRICTED if mode == "enforce" else PRIVILEGED
        if version != "latest" and not _VERSION.fullmatch(version):
            causes.append(_invalid_label(key + "-version", version, 'must be "latest" or "v1.x"'))
            version = "latest"
        policy[mode] = LevelVersion(level, version)
    if labels.get(LABEL_PREFIX + "enforce") in (BASELINE, RESTRICTED) and LABEL_PREFIX + "warn" not in labels:
        version = policy["warn"].version if LABEL_PREFIX + "warn-version" in labels else policy["enforce"].version
        policy["warn"] = LevelVersion(policy["enforce"].level, version)
    return policy, causes


def _invalid_label(key: str, value: str, why: str) -> Cause:
    return f"metadata.labels[{key}]", "FieldValueInvalid", f"Invalid value: {json.dumps(value)}: {why}"


# --- The admission plugin --------------------------------------------------------------------------


def enforce_pod_security(admission: Admission) -> None:
    """The PodSecurity admission plugin, on CREATE and UPDATE of namespaces, pods and pod-template workloads
    (https://kubernetes.io/docs/concepts/security/pod-security-admission/)."""
    obj, kind = admission.obj, (admission.res.group or "", str(admission.res.plural))
    if admission.operation not in ("CREATE", "UPDATE") or obj is None:
        return
    if kind == ("", "namespaces"):
        _admit_namespace(admission, obj)
    elif kind == ("", "pods"):
        _admit_pod(admission, obj)
    elif kind in WORKLOADS and not admission.subresource:
        _admit_workload(admission, obj)


def _policy_of(admission: Admission) -> Policy | None:
    namespace = admission.read(NAMESPACES, admission.namespace) if admission.namespace else None
    return None if namespace is None else namespace_policy((namespace.get("metadata") or {}).get("labels"))[0]


def _warn(admission: Admission, warn: LevelVersion, metadata: Body, spec: Body) -> None:
    found = pod_security_violations(warn.level, metadata, spec)
    if found:
        admission.warn(f'would violate PodSecurity "{warn}": {found}')


def _admit_pod(admission: Admission, obj: Body) -> None:
    """Enforce refuses with 403 Forbidden (no warning then); else the warn level warns. An UPDATE is checked
    only when ``isSignificantPodUpdate`` says so (admission.go): a container image changed, a container or
    init container came or went, or an ephemeral container was added or changed its image. Metadata, status,
    activeDeadlineSeconds and tolerations changes pass whatever the pod is (the doc's "Exemptions" list the
    same, but also name the seccomp/AppArmor annotations, which the plugin's code does not look at)."""
    policy = _policy_of(admission)
    if admission.subresource in _IGNORED_POD_SUBRESOURCES or policy is None:
        return
    if admission.old is not None and not _significant_pod_update(obj, admission.old):
        return
    metadata, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    enforce = policy["enforce"]
    found = pod_security_violations(enforce.level, metadata, spec)
    if found:
        message = f'pods "{admission.name}" is forbidden: violates PodSecurity "{enforce}": {found}'
        raise ApiError(403, "Forbidden", message, {"name": admission.name, "kind": PODS.plural})
    _warn(admission, policy["warn"], metadata, spec)


def _significant_pod_update(pod: Body, old: Body) -> bool:
    new_spec, old_spec = pod.get("spec") or {}, old.get("spec") or {}
    for key in ("containers", "initContainers"):
        now, before = new_spec.get(key) or [], old_spec.get(key) or []
        if len(now) != len(before) or any(a.get("image") != b.get("image") for a, b in zip(now, before, strict=True)):
            return True
    previous = {c.get("name"): c.get("image") for c in old_spec.get("ephemeralContainers") or []}
    return any(
        c.get("name") not in previous or previous[c.get("name")] != c.get("image")
        for c in new_spec.get("ephemeralContainers") or []
    )


def _admit_workload(admission: Admission, obj: Body) -> None:
    """Workload resources (the doc's "Workload resources and Pod templates") are never refused:
    their pod template only draws the warn level's warning (audit would annotate the audit log)."""
    spec: Body = obj.get("spec") or {}
    jobs: Body = (spec.get("jobTemplate") or {}).get("spec") or {}
    template = {"podtemplates": obj, "cronjobs": jobs}.get(str(admission.res.plural), spec).get("template")
    if (policy := _policy_of(admission)) is not None and isinstance(template, Mapping):
        _warn(admission, policy["warn"], template.get("metadata") or {}, template.get("spec") or {})


def _admit_namespace(admission: Admission, obj: Body) -> None:
    """Invalid pod-security labels are 422 Invalid on create, and on update when their errors changed."""
    causes = namespace_policy((obj.get("metadata") or {}).get("labels"))[1]
    old = None if admission.old is None else namespace_policy((admission.old.get("metadata") or {}).get("labels"))[1]
    if causes and not admission.subresource and causes != old:
        raise invalid(NAMESPACES, "Namespace", admission.name, causes)
