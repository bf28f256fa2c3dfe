"""A pod's volumes as directories on this machine, laid out and owned as the kubelet does it.

From https://kubernetes.io/docs/concepts/storage/volumes/ and .../projected-volumes/ :

- ``configMap``, ``secret``, ``downwardAPI``, ``projected``: every key (or the listed ``items``, each at
  its ``path`` with its ``mode``) written with ``defaultMode`` (0644); the kubelet's atomic layout (files
  in a ``..<time>`` directory, ``..data`` pointing at it, each top-level name a symlink through it), so an
  update swaps every file at once. A missing ConfigMap or Secret that is not ``optional`` keeps the pod in
  ContainerCreating (``FailedMount``); so does an item naming a key the object lacks.
- ``emptyDir``: an empty directory (mode 0777) that lives as long as the pod; ``medium: Memory`` and
  ``sizeLimit`` are not enforced here.
- ``persistentVolumeClaim``: a directory per claim (namespace, name and uid), kept while the claim
  exists, whatever happens to pods: a StatefulSet pod recreated with the same ordinal finds its data.
- ``serviceAccountToken`` (projected): a JWT-shaped token for the audience, issued by the runner's
  token issuer (a test can make its Vault stand-in the issuer, as a real Vault asks the API server);
  mode 0600 when the pod sets fsGroup or one runAsUser for all its containers, owned by that user then
  (https://kubernetes.io/docs/concepts/storage/projected-volumes/#serviceaccounttoken).
- ``fsGroup`` (securityContext): every file and directory gets that group, group read (and write, for
  writable volumes) and setgid directories, as the kubelet's SetVolumeOwnership does; with
  ``fsGroupChangePolicy: OnRootMismatch`` only when the volume's root does not match already.

Other volume types (hostPath, csi, nfs, ...) are refused: the pod stays in ContainerCreating and says why.
"""

from __future__ import annotations

import base64
import datetime
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fakes.pods.podspec import Lookup, field_value, resource_field

TokenIssuer = Callable[[str, str, str, int], str]  # (namespace, service account, audience, seconds) -> JWT
API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
READ_ONLY_KINDS = ("configMap", "secret", "downwardAPI", "projected")


class VolumeNotReady(Exception):
    """A volume the kubelet cannot set up yet (the pod stays ContainerCreating, Event FailedMount)."""


@dataclass(frozen=True)
class HostVolume:
    """A volume as this machine holds it."""

    name: str
    path: Path
    read_only: bool


def write_atomically(directory: Path, files: Mapping[str, tuple[bytes, int, int]]) -> bool:
    """The kubelet's AtomicWriter: the new payload (path -> content, mode, owner uid or -1 for root) in a
    fresh ``..<time>`` directory, ``..data`` swapped to it in one rename, top-level names as symlinks
    through ``..data``. False when nothing changed."""
    directory.mkdir(parents=True, exist_ok=True)
    data_link = directory / "..data"
    if data_link.is_symlink() and _payload(directory / os.readlink(data_link)) == files:
        return False
    stamp = datetime.datetime.now(datetime.UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
    fresh = directory / stamp
    fresh.mkdir(mode=0o755)
    for relative, (content, mode, owner) in files.items():
        target = fresh / relative
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        target.write_bytes(content)
        os.chmod(target, mode)
        if owner >= 0:
            os.chown(target, owner, -1)
    old = os.readlink(data_link) if data_link.is_symlink() else None
    temporary = directory / "..data_tmp"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(stamp)
    temporary.rename(data_link)
    tops = {relative.split("/", 1)[0] for relative in files}
    for entry in directory.iterdir():
        if entry.name.startswith("..") or entry.name in tops:
            continue
        entry.unlink()
    for top in tops:
        link = directory / top
        if not link.is_symlink():
            link.symlink_to(f"..data/{top}")
    if old is not None:
        shutil.rmtree(directory / old, ignore_errors=True)
    return True


def _payload(directory: Path) -> dict[str, tuple[bytes, int, int]]:
    found: dict[str, tuple[bytes, int, int]] = {}
    if not directory.is_dir():
        return found
    for path in directory.rglob("*"):
        if path.is_file():
            info = path.stat()
            found[str(path.relative_to(directory))] = (path.read_bytes(), info.st_mode & 0o7777, info.st_uid or -1)
    return found


def set_ownership(root: Path, fs_group: int, *, read_only: bool, only_on_mismatch: bool = False) -> None:
    """SetVolumeOwnership: group ``fs_group``, group read (write when writable), setgid and group
    execute on directories; symlinks are left as they are."""
    mask = 0o440 if read_only else 0o660
    if only_on_mismatch:
        info = root.stat()
        if info.st_gid == fs_group and info.st_mode & (mask | 0o2110) == mask | 0o2110:
            return
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        info = path.stat()
        os.chown(path, -1, fs_group)
        extra = mask | 0o2110 if path.is_dir() else mask
        os.chmod(path, (info.st_mode & 0o7777) | extra)


class PodVolumes:
    """Sets up and refreshes the volumes of one pod under ``pod_dir``; claims under ``claims_dir``."""

    def __init__(
        self,
        pod_dir: Path,
        claims_dir: Path,
        *,
        secrets: Lookup,
        configmaps: Lookup,
        claim: Callable[[str, str], Mapping[str, Any] | None],
        issue_token: TokenIssuer,
    ) -> None:
        self.pod_dir = pod_dir
        self.claims_dir = claims_dir
        self._secrets, self._configmaps, self._claim, self._issue = secrets, configmaps, claim, issue_token
        self._tokens: dict[str, str] = {}

    def volumes(self, pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        spec = pod.get("spec") or {}
        found = list(spec.get("volumes") or [])
        if spec.get("automountServiceAccountToken", True) is not False:
            found.append(_api_access_volume())
        return found

    def prepare(self, pod: Mapping[str, Any], *, refresh: bool = False) -> dict[str, HostVolume]:
        """Every volume of the pod, up to date; raises :class:`VolumeNotReady` for the first that cannot be.

        At the pod's start (``refresh`` False) ownership is set on every volume; on a refresh (a
        ConfigMap or Secret changed) only on the payloads that changed, as the kubelet's periodic sync does.
        """
        ctx = (pod.get("spec") or {}).get("securityContext") or {}
        fs_group = ctx.get("fsGroup")
        on_mismatch = ctx.get("fsGroupChangePolicy") == "OnRootMismatch"
        prepared: dict[str, HostVolume] = {}
        for volume in self.volumes(pod):
            name = str(volume.get("name"))
            kind = next((k for k in volume if k != "name"), "")
            where, changed = self._setup(pod, name, kind, volume.get(kind) or {})
            read_only = kind in READ_ONLY_KINDS
            if fs_group is not None and (changed or not refresh):
                writable_kind = kind in ("emptyDir", "persistentVolumeClaim")
                set_ownership(where, int(fs_group), read_only=read_only, only_on_mismatch=on_mismatch and writable_kind)
            prepared[name] = HostVolume(name, where, read_only)
        return prepared

    def _setup(self, pod: Mapping[str, Any], name: str, kind: str, source: Mapping[str, Any]) -> tuple[Path, bool]:
        namespace = str((pod.get("metadata") or {}).get("namespace"))
        if kind == "emptyDir":
            where = self.pod_dir / "volumes" / "kubernetes.io~empty-dir" / name
            if not where.exists():
                where.mkdir(parents=True)
                os.chmod(where, 0o777)
            return where, False
        if kind == "persistentVolumeClaim":
            return self.claim_dir(namespace, str(source.get("claimName"))), False
        if kind in READ_ONLY_KINDS:
            where = self.pod_dir / "volumes" / f"kubernetes.io~{kind.lower()}" / name
            changed = write_atomically(where, self._files(pod, name, kind, source))
            os.chmod(where, 0o755)
            return where, changed
        raise VolumeNotReady(f'volume "{name}": {kind or "no"} volumes are not supported by the pod runner')

    def claim_dir(self, namespace: str, claim_name: str) -> Path:
        claim = self._claim(namespace, claim_name)
        if claim is None:
            raise VolumeNotReady(f'persistentvolumeclaim "{claim_name}" not found')
        if (claim.get("metadata") or {}).get("deletionTimestamp"):
            raise VolumeNotReady(f'persistentvolumeclaim "{claim_name}" is being deleted')
        uid = str((claim.get("metadata") or {}).get("uid"))
        where = self.claims_dir / namespace / f"{claim_name}-{uid[:8]}"
        if not where.exists():
            where.mkdir(parents=True)
            os.chmod(where, 0o755)
        return where

    def _files(
        self, pod: Mapping[str, Any], name: str, kind: str, source: Mapping[str, Any]
    ) -> dict[str, tuple[bytes, int, int]]:
        default = int(source.get("defaultMode", 0o644))
        if kind == "projected":
            files: dict[str, tuple[bytes, int, int]] = {}
            for part in source.get("sources") or []:
                sub_kind = next(iter(part))
                files.update(self._source_files(pod, name, sub_kind, part[sub_kind] or {}, default))
            return files
        return self._source_files(pod, name, kind, source, default)

    def _source_files(
        self, pod: Mapping[str, Any], volume: str, kind: str, source: Mapping[str, Any], default: int
    ) -> dict[str, tuple[bytes, int, int]]:
        namespace = str((pod.get("metadata") or {}).get("namespace"))
        if kind in ("configMap", "secret"):
            object_name = str(source.get("secretName") or source.get("name") or "")
            lookup = self._configmaps if kind == "configMap" else self._secrets
            data = lookup(namespace, object_name)
            what = "configmap" if kind == "configMap" else "secret"
            if data is None:
                if source.get("optional"):
                    return {}
                raise VolumeNotReady(
                    f'MountVolume.SetUp failed for volume "{volume}" : {what} "{object_name}" not found'
                )
            items = source.get("items")
            if not items:
                return {key: (_bytes(value), default, -1) for key, value in data.items()}
            files = {}
            for item in items:
                key = str(item.get("key"))
                if key not in data:
                    if source.get("optional"):
                        continue
                    noun = "config" if kind == "configMap" else "secret"
                    failed = f'MountVolume.SetUp failed for volume "{volume}"'
                    raise VolumeNotReady(f"{failed} : {what} references non-existent {noun} key: {key}")
                files[str(item.get("path"))] = (_bytes(data[key]), int(item.get("mode", default)), -1)
            return files
        if kind == "downwardAPI":
            files = {}
            for item in source.get("items") or []:
                if "fieldRef" in item:
                    path = str(item["fieldRef"].get("fieldPath"))
                    labels = (pod.get("metadata") or {}).get(path.split(".", 1)[-1]) or {}
                    if path in ("metadata.labels", "metadata.annotations"):
                        text = "\n".join(f"{k}={_quoted(v)}" for k, v in sorted(labels.items()))
                    else:
                        text = field_value(pod, path)
                else:
                    ref = item.get("resourceFieldRef") or {}
                    container: Mapping[str, Any] = next(
                        (
                            c
                            for c in (pod.get("spec") or {}).get("containers") or []
                            if c.get("name") == ref.get("containerName")
                        ),
                        {},
                    )
                    text = resource_field(container, ref)
                files[str(item.get("path"))] = (text.encode(), int(item.get("mode", default)), -1)
            return files
        if kind == "serviceAccountToken":
            audience = str(source.get("audience") or API_AUDIENCE)
            seconds = max(int(source.get("expirationSeconds") or 3600), 600)
            account = str((pod.get("spec") or {}).get("serviceAccountName") or "default")
            cache_key = f"{volume}/{audience}"
            if cache_key not in self._tokens:
                self._tokens[cache_key] = self._issue(namespace, account, audience, seconds)
            owner = _shared_user(pod)
            mode = 0o600 if owner is not None or _fs_group(pod) is not None else default
            token = self._tokens[cache_key].encode()
            return {str(source.get("path") or "token"): (token, mode, -1 if owner is None else owner)}
        if kind == "clusterTrustBundle":
            raise VolumeNotReady(f'volume "{volume}": clusterTrustBundle sources are not supported')
        raise VolumeNotReady(f'volume "{volume}": unknown projected source {kind}')

    def cleanup(self) -> None:
        """The pod is gone: its volumes go with it (claims stay)."""
        shutil.rmtree(self.pod_dir / "volumes", ignore_errors=True)


def reclaim(claims_dir: Path, live: set[tuple[str, str, str]], in_use: set[Path]) -> None:
    """Delete the directory of every claim that is gone (namespace, name, uid): dynamically provisioned
    volumes have reclaimPolicy Delete (https://kubernetes.io/docs/concepts/storage/persistent-volumes/#delete).
    A directory a pod still mounts waits, as the pvc-protection finalizer makes a claim wait."""
    wanted = {claims_dir / ns / f"{name}-{uid[:8]}" for ns, name, uid in live}
    if not claims_dir.is_dir():
        return
    for namespace in claims_dir.iterdir():
        for directory in namespace.iterdir():
            if directory not in wanted and directory not in in_use:
                shutil.rmtree(directory, ignore_errors=True)


def _bytes(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def _fs_group(pod: Mapping[str, Any]) -> int | None:
    value = ((pod.get("spec") or {}).get("securityContext") or {}).get("fsGroup")
    return None if value is None else int(value)


def _shared_user(pod: Mapping[str, Any]) -> int | None:
    """The one runAsUser every container of the pod runs as, if there is one (the token's owner then)."""
    spec = pod.get("spec") or {}
    default = (spec.get("securityContext") or {}).get("runAsUser")
    users = {
        (c.get("securityContext") or {}).get("runAsUser", default)
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    }
    user = users.pop() if len(users) == 1 else None
    return None if user is None else int(user)


def _quoted(value: Any) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _api_access_volume() -> dict[str, Any]:
    """What the ServiceAccount admission plugin adds when the token is automounted: ``kube-api-access``."""
    return {
        "name": "kube-api-access",
        "projected": {
            "defaultMode": 0o644,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ],
        },
    }


API_ACCESS_MOUNT = {
    "name": "kube-api-access",
    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
    "readOnly": True,
}


def decoded_secret(secret: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's ``data`` (base64) and ``stringData``, as text (bytes that are not UTF-8 kept as surrogates)."""
    found = {
        key: base64.b64decode(str(value)).decode("utf-8", "surrogateescape")
        for key, value in (secret.get("data") or {}).items()
    }
    found.update({k: str(v) for k, v in (secret.get("stringData") or {}).items()})
    return found


def configmap_data(configmap: Mapping[str, Any]) -> dict[str, str]:
    found = {k: str(v) for k, v in (configmap.get("data") or {}).items()}
    for key, value in (configmap.get("binaryData") or {}).items():
        found[key] = base64.b64decode(str(value)).decode("utf-8", "surrogateescape")
    return found
