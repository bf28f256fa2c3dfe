"""Reading a pod as the kubelet does, in pure functions: environment, command line, user, ports, hashes.

Sources: "Define Environment Variables for a Container", "Expose Pod Information to Containers Through
Environment Variables" (downward API), "Define a Command and Arguments for a Container" (command and
args against ENTRYPOINT and CMD, ``$(VAR)`` references), "Configure a Security Context for a Pod or
Container" (runAsUser, runAsGroup, runAsNonRoot, fsGroup, supplementalGroups), all under
https://kubernetes.io/docs/tasks/ ; "Service" (environment variables of enableServiceLinks).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tests.fakes.pods.images import Image

Body = dict[str, Any]
Lookup = Callable[[str, str], Mapping[str, str] | None]  # (namespace, name) -> decoded data, None if missing
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the controllers' alphabet for generated suffixes


class ConfigError(Exception):
    """What makes the kubelet refuse to create a container: ``CreateContainerConfigError``."""


def template_hash(template: Mapping[str, Any]) -> str:
    """A short hash of a pod template, as ``pod-template-hash`` / ``controller-revision-hash`` label
    values are (the controllers hash their Go structure with FNV; any stable hash of it tells the same)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    number = int.from_bytes(digest[:8], "big")
    chars = []
    for _ in range(10):
        number, index = divmod(number, len(_SAFE_ALPHABET))
        chars.append(_SAFE_ALPHABET[index])
    return "".join(chars)


def expand(text: str, mapping: Mapping[str, str]) -> str:
    """``$(VAR)`` references, as the kubelet expands them: a known name is replaced, an unknown one and an
    unclosed ``$(`` stay as written, ``$$`` is one ``$``."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            following = text[i + 1]
            if following == "$":
                out.append("$")
                i += 2
                continue
            if following == "(":
                close = text.find(")", i + 2)
                if close != -1:
                    name = text[i + 2 : close]
                    out.append(mapping.get(name, f"$({name})"))
                    i = close + 1
                    continue
                out.append("$(")
                i += 2
                continue
            out.append("$" + following)
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def parse_quantity(value: Any) -> Decimal:
    """A resource quantity ("250m", "512Mi", "1.5", 2) as a number of units."""
    text = str(value).strip()
    match = re.fullmatch(r"([+-]?[0-9.]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?", text)
    if match is None:
        raise ConfigError(f"quantities must match the regular expression: {text!r}")
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
    decimal = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": Decimal(10**3)}
    decimal.update({"M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12), "P": Decimal(10**15)})
    decimal["E"] = Decimal(10**18)
    number, suffix = Decimal(match.group(1)), match.group(2) or ""
    return number * (suffixes[suffix] if suffix in suffixes else decimal.get(suffix, Decimal(1)))


def _node_allocatable(resource: str) -> Decimal:
    if resource.endswith("cpu"):
        return Decimal(os.cpu_count() or 1)
    if resource.endswith("memory"):
        return Decimal(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return Decimal(10 * 2**30)


def resource_field(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    """``resourceFieldRef``: the limit or request divided by ``divisor``, rounded up; an unset limit is
    the node's allocatable amount."""
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    value = ((container.get("resources") or {}).get(kind) or {}).get(name)
    amount = parse_quantity(value) if value is not None else _node_allocatable(resource)
    divisor = parse_quantity(ref.get("divisor") or 1)
    return str(math.ceil(amount / divisor))


def field_value(pod: Mapping[str, Any], path: str) -> str:
    """``fieldRef.fieldPath`` of the downward API (environment variables support these)."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
        "status.hostIP": status.get("hostIP"),
        "status.hostIPs": ",".join(ip.get("ip", "") for ip in status.get("hostIPs") or []),
        "status.podIP": status.get("podIP"),
        "status.podIPs": ",".join(ip.get("ip", "") for ip in status.get("podIPs") or []),
    }
    if path in simple:
        return str(simple[path] or "")
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ConfigError(f'unsupported fieldPath: "{path}"')


def service_env(services: Sequence[Mapping[str, Any]], ips: Mapping[str, str]) -> dict[str, str]:
    """enableServiceLinks: ``{SVC}_SERVICE_HOST``/``_PORT`` (and per named port) for the Services of
    the pod's namespace that have an address (``ips``: Service name -> its cluster IP)."""
    env: dict[str, str] = {}
    for service in services:
        name = str((service.get("metadata") or {}).get("name"))
        ip = ips.get(name)
        ports = (service.get("spec") or {}).get("ports") or []
        if ip is None or not ports:
            continue
        prefix = name.upper().replace("-", "_")
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0].get("port"))
        env[f"{prefix}_PORT"] = f"tcp://{ip}:{ports[0].get('port')}"
        for port in ports:
            if port.get("name"):
                env[f"{prefix}_SERVICE_PORT_{str(port['name']).upper().replace('-', '_')}"] = str(port["port"])
            protocol = str(port.get("protocol") or "TCP")
            base = f"{prefix}_PORT_{port.get('port')}_{protocol}"
            env[base] = f"{protocol.lower()}://{ip}:{port.get('port')}"
            env[f"{base}_PROTO"], env[f"{base}_PORT"], env[f"{base}_ADDR"] = protocol.lower(), str(port["port"]), ip
    return env


def _from_ref(namespace: str, ref: Mapping[str, Any], kind: str, lookup: Lookup) -> str | None:
    name, key, optional = str(ref.get("name", "")), str(ref.get("key", "")), bool(ref.get("optional"))
    data = lookup(namespace, name)
    if data is None:
        if optional:
            return None
        raise ConfigError(f'{kind.lower()} "{name}" not found')
    if key not in data:
        if optional:
            return None
        raise ConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")
    return data[key]


def container_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    secrets: Lookup,
    configmaps: Lookup,
    services: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The variables the kubelet gives a container, in its order: ``envFrom`` sources, then ``env``
    entries (each may use ``$(NAME)`` of the ones before it, and of the Service variables), then the
    Service variables not already set. Raises :class:`ConfigError` on what the kubelet refuses."""
    namespace = str((pod.get("metadata") or {}).get("namespace"))
    service_vars = dict(services or {})
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix") or "")
        for field_name, kind, lookup in (("configMapRef", "ConfigMap", configmaps), ("secretRef", "Secret", secrets)):
            ref = source.get(field_name)
            if ref is None:
                continue
            data = lookup(namespace, str(ref.get("name")))
            if data is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind.lower()} "{ref.get("name")}" not found')
            for key, value in data.items():
                if _ENV_NAME.fullmatch(prefix + key):  # invalid names are skipped (an Event says so)
                    env[prefix + key] = value
    for entry in container.get("env") or []:
        name = str(entry.get("name"))
        if "value" in entry or "valueFrom" not in entry:
            env[name] = expand(str(entry.get("value") or ""), {**service_vars, **env})
            continue
        source = entry["valueFrom"] or {}
        found: str | None
        if "fieldRef" in source:
            found = field_value(pod, str(source["fieldRef"].get("fieldPath")))
        elif "resourceFieldRef" in source:
            found = resource_field(container, source["resourceFieldRef"])
        elif "configMapKeyRef" in source:
            found = _from_ref(namespace, source["configMapKeyRef"], "ConfigMap", configmaps)
        elif "secretKeyRef" in source:
            found = _from_ref(namespace, source["secretKeyRef"], "Secret", secrets)
        else:
            raise ConfigError(f"env {name}: valueFrom names no source")
        if found is not None:
            env[name] = found
    for name, value in service_vars.items():
        env.setdefault(name, value)
    return env


def command_line(image: Image, container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """command replaces ENTRYPOINT (and drops CMD), args replaces CMD; ``$(VAR)`` expanded in both."""
    command, args = container.get("command"), container.get("args")
    given_args = [expand(str(a), env) for a in args or []]
    if command:
        argv = [expand(str(a), env) for a in command] + given_args
    else:
        argv = list(image.entrypoint) + (given_args if args else list(image.cmd))
    if not argv:
        raise ConfigError("no command specified")
    return argv


def process_env(image: Image, env: Mapping[str, str], hostname: str, home: str) -> dict[str, str]:
    """The process environment: the image's, then the container's, plus HOSTNAME and HOME as the
    container runtime adds them."""
    result = {"HOSTNAME": hostname, **dict(image.env), **env}
    result.setdefault("HOME", home)
    return result


@dataclass(frozen=True)
class Identity:
    """Who the container's process is."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    no_new_privs: bool
    read_only_root: bool


def identity(pod: Mapping[str, Any], container: Mapping[str, Any], image: Image) -> Identity:
    """The container's user from its securityContext, then the pod's, then the image's ``USER``;
    runAsNonRoot refuses a root user, or a user name it cannot check (both as the kubelet words them)."""
    pod_ctx = (pod.get("spec") or {}).get("securityContext") or {}
    ctx = container.get("securityContext") or {}
    image_uid, image_gid = image.uid_gid()

    def setting(name: str) -> Any:
        return ctx.get(name, pod_ctx.get(name))

    uid = setting("runAsUser")
    if uid is None:
        uid = image_uid
    pod_name = (pod.get("metadata") or {}).get("name")
    if setting("runAsNonRoot"):
        if uid is None:
            raise ConfigError(
                f"container has runAsNonRoot and image has non-numeric user ({image.user}), "
                f'cannot verify user is non-root (pod: "{pod_name}", container: {container.get("name")})'
            )
        if int(uid) == 0:
            raise ConfigError(
                f'container has runAsNonRoot and image will run as root (pod: "{pod_name}", '
                f"container: {container.get('name')})"
            )
    if uid is None:
        raise ConfigError(f"image user {image.user!r} is not in the image's /etc/passwd")
    passwd = next((line.split(":") for line in image.users if line.split(":")[2] == str(uid)), None)
    gid = setting("runAsGroup")
    if gid is None:
        gid = int(passwd[3]) if passwd else (image_gid if image_uid == uid and image_gid is not None else 0)
    groups = [int(g) for g in [pod_ctx.get("fsGroup"), *(pod_ctx.get("supplementalGroups") or [])] if g is not None]
    return Identity(
        uid=int(uid),
        gid=int(gid),
        groups=tuple(dict.fromkeys([int(gid), *groups])),
        home=passwd[5] if passwd else "/",
        no_new_privs=ctx.get("allowPrivilegeEscalation") is False,
        read_only_root=bool(ctx.get("readOnlyRootFilesystem")),
    )


def container_port(pod: Mapping[str, Any], port: Any, container: Mapping[str, Any] | None = None) -> int | None:
    """A port by number, or by the name of a containerPort (of ``container``, else of any container)."""
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    spec = pod.get("spec") or {}
    containers = [container] if container is not None else list(spec.get("containers") or [])
    for candidate in containers:
        for declared in candidate.get("ports") or []:
            if declared.get("name") == port:
                return int(declared["containerPort"])
    return None


def restart_policy(pod: Mapping[str, Any]) -> str:
    return str((pod.get("spec") or {}).get("restartPolicy") or "Always")


def grace_seconds(pod: Mapping[str, Any]) -> float:
    """The pod's grace period: the one its deletion asked for, else terminationGracePeriodSeconds (30)."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    if meta.get("deletionGracePeriodSeconds") is not None:
        return float(meta["deletionGracePeriodSeconds"])
    value = spec.get("terminationGracePeriodSeconds")
    return float(30 if value is None else value)


def labels_match(selector: Mapping[str, Any] | None, labels: Mapping[str, Any]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against labels; an empty selector matches all."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        present = key in labels
        if operator == "In" and (not present or labels[key] not in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def generated_suffix(seed: str, length: int = 5) -> str:
    """A deterministic-looking random suffix in the controllers' alphabet."""
    digest = int.from_bytes(hashlib.sha256((seed + os.urandom(8).hex()).encode()).digest()[:8], "big")
    return "".join(_SAFE_ALPHABET[(digest >> (5 * i)) % len(_SAFE_ALPHABET)] for i in range(length))
