"""A Vault HTTP server for tests: the Transit, ACL-policy and Kubernetes-auth calls PoliteTenant makes.

Written from Vault's HTTP API documentation (secrets/transit, system/policies, auth/kubernetes), over
a real loopback socket so hvac is exercised unchanged. What it does like Vault:

- ``X-Vault-Token`` on every call but login; tokens issued by login carry the role's policies and
  expire after its TTL; the policies are *enforced* (exact paths and trailing ``*`` globs, the most
  specific match wins, ``deny`` wins, create vs update decided by whether the object exists);
- Transit keys ``aes256-gcm96`` with versions, rotation, ``derived`` keys (HKDF-SHA256 of the key
  version with the context, as Vault does), ``vault:vN:`` ciphertexts, associated data,
  ``min_decryption_version``, deletion only after ``deletion_allowed``;
- Kubernetes-auth roles bound to ServiceAccount names, namespaces and an audience; the JWTs it accepts
  are the ones a test issued with ``issue_service_account_token`` (real Vault asks the API server's
  TokenReview, which tests cannot run);
- errors as ``{"errors": [...]}`` with Vault's statuses: 400 bad request, 403 permission denied,
  404 unknown path or object, 405 unsupported operation, 503 sealed.

Where it is stricter than Vault, on purpose, so that a shape mistake fails a test: an unknown body
parameter is a 400 (Vault ignores it with a warning), booleans and integers must be JSON values of
that type or Vault's string forms, and a policy must use the plain HCL subset this file parses.
What it leaves out answers 400 or 404 (batch_input, upsert on encrypt, other key types, KV).

Outages: ``stop_listening()`` closes the socket (connection refused) until ``resume_listening()``;
``seal()`` answers 503 like a sealed Vault; ``fail_after(n, how)`` lets ``n`` more requests through
and then drops connections or answers 503, to break an operation half-way.
Every request is recorded in ``requests`` (method, path, JSON body, token).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ROOT_TOKEN = "root-token-of-the-fake"
DEFAULT_TOKEN_TTL = 768 * 3600  # Vault's default max lease TTL, when a role sets none
DERIVED_WITHOUT_CONTEXT = (
    "missing 'context' for key derivation; the key was created using a derived key, which means "
    "additional, per-request information must be included in order to perform operations with the key"
)


@dataclass(frozen=True)
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str  # without /v1/ and without the query string
    body: Any
    token: str | None


@dataclass
class TransitKey:
    name: str
    derived: bool
    exportable: bool
    allow_plaintext_backup: bool
    versions: dict[int, bytes] = field(default_factory=dict)
    created: dict[int, int] = field(default_factory=dict)
    deletion_allowed: bool = False
    min_decryption_version: int = 1
    min_encryption_version: int = 0

    @property
    def latest(self) -> int:
        return max(self.versions)

    def add_version(self, now: float) -> None:
        version = len(self.versions) + 1
        self.versions[version] = secrets.token_bytes(32)
        self.created[version] = int(now)


@dataclass
class IssuedToken:
    policies: list[str]
    expires_at: float
    role: str


@dataclass(frozen=True)
class ServiceAccountToken:
    namespace: str
    service_account: str
    audiences: tuple[str, ...]


class _Reply(Exception):
    def __init__(self, status: int, body: Any = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _error(status: int, *messages: str) -> _Reply:
    return _Reply(status, {"errors": list(messages)})


def _envelope(data: Any = None, auth: Any = None, warnings: list[str] | None = None) -> dict[str, Any]:
    return {
        "request_id": secrets.token_hex(8),
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": data,
        "wrap_info": None,
        "warnings": warnings,
        "auth": auth,
    }


def _params(body: Any, allowed: set[str], route: str) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise _error(400, "failed to parse JSON input: expected an object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _error(400, f"fake vault: {route} takes no parameter(s) {', '.join(unknown)}")
    return {k: v for k, v in body.items() if v is not None}


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise _error(400, f"error converting input for field {name!r}: expected a boolean")


def _int(value: Any, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise _error(400, f"error converting input for field {name!r}: expected an integer")


def _seconds(value: Any, name: str) -> int:
    """Vault's durations: an integer of seconds or a string such as "300", "90s", "5m", "1h"."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = re.fullmatch(r"(\d+)([smh]?)", str(value))
    if not match:
        raise _error(400, f"error converting input for field {name!r}: invalid duration")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def _strings(value: Any, name: str) -> list[str]:
    """Vault's comma-string-slice: a list of strings or one comma-separated string."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise _error(400, f"error converting input for field {name!r}: expected a list of strings")


def _b64decode(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except ValueError:
        raise _error(400, f"unable to decode {what} as base64") from None


_POLICY_BLOCK = re.compile(r'path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]\s*\}')
_CAPABILITIES = {"create", "read", "update", "delete", "list", "sudo", "deny"}


def parse_policy(text: str) -> dict[str, set[str]]:
    """The plain HCL subset: ``path "P" { capabilities = [...] }`` blocks and ``#`` comments."""
    stripped = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    rules: dict[str, set[str]] = {}
    for match in _POLICY_BLOCK.finditer(stripped):
        path = match.group(1)
        if "+" in path or "*" in path[:-1]:
            raise _error(400, f"fake vault: path {path!r} uses a glob this fake does not implement")
        caps = {c.strip().strip('"') for c in match.group(2).split(",") if c.strip()}
        if not caps <= _CAPABILITIES:
            raise _error(400, f"failed to parse policy: invalid capabilities {sorted(caps - _CAPABILITIES)}")
        rules[path] = rules.get(path, set()) | caps
    if _POLICY_BLOCK.sub("", stripped).strip():
        raise _error(400, "failed to parse policy (fake vault: only path blocks with capabilities are parsed)")
    return rules


class VaultFake:
    """A Vault with Transit and Kubernetes auth on loopback; ``address`` is its URL while it listens."""

    def __init__(
        self,
        *,
        transit_mounts: tuple[str, ...] = ("transit",),
        kubernetes_mounts: tuple[str, ...] = ("kubernetes",),
        root_token: str = ROOT_TOKEN,
    ) -> None:
        self.transit_mounts = transit_mounts
        self.kubernetes_mounts = kubernetes_mounts
        self.root_token = root_token
        self.keys: dict[tuple[str, str], TransitKey] = {}
        self.policies: dict[str, str] = {}
        self.roles: dict[tuple[str, str], dict[str, Any]] = {}
        self.tokens: dict[str, IssuedToken] = {root_token: IssuedToken(["root"], float("inf"), "")}
        self.service_account_tokens: dict[str, ServiceAccountToken] = {}
        self.requests: list[Recorded] = []
        self.sealed = False
        self.clock_offset = 0.0
        self._fail: tuple[int, Literal["drop", "sealed"]] | None = None
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # -- test controls

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def now(self) -> float:
        return time.time() + self.clock_offset

    def advance(self, seconds: float) -> None:
        """Move the fake's clock forward (token expiry)."""
        self.clock_offset += seconds

    def issue_service_account_token(self, namespace: str, service_account: str, audience: str = "vault") -> str:
        """A projected ServiceAccount token this Vault will accept at Kubernetes-auth login."""
        jwt = "eyJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(32)
        self.service_account_tokens[jwt] = ServiceAccountToken(namespace, service_account, (audience,))
        return jwt

    def seal(self) -> None:
        self.sealed = True

    def unseal(self) -> None:
        self.sealed = False

    def fail_after(self, requests: int, how: Literal["drop", "sealed"] = "drop") -> None:
        """Let ``requests`` more requests through, then drop connections (or answer 503) until ``recover()``."""
        self._fail = (requests, how)

    def recover(self) -> None:
        self._fail = None
        self.sealed = False

    def calls(self, method: str | None = None, prefix: str = "") -> list[Recorded]:
        return [r for r in self.requests if (method is None or r.method == method) and r.path.startswith(prefix)]

    # -- listening

    def start(self) -> VaultFake:
        server = ThreadingHTTPServer(("127.0.0.1", self._port), _Handler)
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop_listening(self) -> None:
        """Close the socket: clients get connection refused, as when Vault is down."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def resume_listening(self) -> None:
        """Listen again on the same port, with every key, policy, role and token kept."""
        if self._server is None:
            self.start()

    # -- request handling

    def handle(self, method: str, raw_path: str, body: Any, token: str | None) -> tuple[int, Any] | None:
        """Status and JSON body of one request; None means: drop the connection without answering."""
        path = raw_path.split("?", 1)[0]
        with self._lock:
            self.requests.append(Recorded(method, path.removeprefix("/v1/"), body, token))
            if self._fail is not None:
                remaining, how = self._fail
                if remaining <= 0:
                    return None if how == "drop" else (503, {"errors": ["Vault is sealed"]})
                self._fail = (remaining - 1, how)
            if self.sealed:
                return 503, {"errors": ["Vault is sealed"]}
            try:
                if not path.startswith("/v1/"):
                    raise _error(404, f"no handler for route {path!r}")
                return 200, self._route(method, path[len("/v1/") :], body, token)
            except _Reply as reply:
                return reply.status, reply.body

    def _route(self, method: str, path: str, body: Any, token: str | None) -> Any:
        parts = path.split("/")
        if len(parts) == 4 and parts[:3] == ["sys", "policies", "acl"]:
            return self._policy(method, path, parts[3], body, token)
        if len(parts) >= 3 and parts[0] == "auth" and parts[1] in self.kubernetes_mounts:
            mount = parts[1]
            if parts[2:] == ["login"]:
                self._only(method, "POST", "PUT")
                return self._login(mount, body)
            if len(parts) == 4 and parts[2] == "role":
                return self._role(method, path, mount, parts[3], body, token)
        if parts[0] in self.transit_mounts:
            return self._transit(method, path, parts[0], parts[1:], body, token)
        raise _error(404, f"no handler for route {path!r}. route entry not found.")

    @staticmethod
    def _only(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise _error(405, "1 error occurred:\n\t* unsupported operation\n\n")

    # -- authorisation

    def _authorise(self, token: str | None, path: str, capability: str) -> None:
        issued = self.tokens.get(token or "")
        if issued is None or issued.expires_at <= self.now():
            raise _error(403, "permission denied")
        if "root" in issued.policies:
            return
        rules: dict[str, set[str]] = {}
        for name in issued.policies:
            for pattern, caps in parse_policy(self.policies.get(name, "")).items():
                rules[pattern] = rules.get(pattern, set()) | caps
        if path in rules:
            caps = rules[path]
        else:  # the longest matching glob wins, as Vault's most specific match
            globs = [p for p in rules if p.endswith("*") and path.startswith(p[:-1])]
            caps = rules[max(globs, key=len)] if globs else set()
        if "deny" in caps or capability not in caps:
            raise _error(403, "permission denied")

    def _authorise_write(self, token: str | None, path: str, exists: bool) -> None:
        self._authorise(token, path, "update" if exists else "create")

    def _read_write_delete(self, method: str, token: str | None, path: str, exists: bool) -> None:
        self._only(method, "GET", "POST", "PUT", "DELETE")
        if method == "GET":
            self._authorise(token, path, "read")
        elif method == "DELETE":
            self._authorise(token, path, "delete")
        else:
            self._authorise_write(token, path, exists)

    # -- sys/policies/acl

    def _policy(self, method: str, path: str, name: str, body: Any, token: str | None) -> Any:
        name = name.lower()  # Vault stores policy names in lower case
        self._read_write_delete(method, token, path, name in self.policies)
        if method == "GET":
            if name not in self.policies:
                raise _Reply(404, {"errors": []})
            return _envelope({"name": name, "policy": self.policies[name]})
        if method == "DELETE":
            if name in ("root", "default"):
                raise _error(400, f"cannot delete {name!r} policy")
            self.policies.pop(name, None)
            raise _Reply(204)
        params = _params(body, {"policy"}, "sys/policies/acl")
        if not isinstance(params.get("policy"), str) or not params["policy"].strip():
            raise _error(400, "'policy' parameter not supplied or empty")
        parse_policy(params["policy"])
        self.policies[name] = params["policy"]
        raise _Reply(204)

    # -- auth/kubernetes

    _ROLE_PARAMS = frozenset(
        {
            "bound_service_account_names",
            "bound_service_account_namespaces",
            "audience",
            "alias_name_source",
            "token_policies",
            "token_ttl",
            "token_max_ttl",
            "token_no_default_policy",
            "token_type",
            "policies",  # deprecated aliases Vault still accepts (hvac's create_role sends these)
            "ttl",
            "max_ttl",
        }
    )

    def _role(self, method: str, path: str, mount: str, name: str, body: Any, token: str | None) -> Any:
        key = (mount, name.lower())
        self._read_write_delete(method, token, path, key in self.roles)
        if method == "GET":
            if key not in self.roles:
                raise _Reply(404, {"errors": []})
            return _envelope(dict(self.roles[key]))
        if method == "DELETE":
            self.roles.pop(key, None)
            raise _Reply(204)
        p = _params(body, set(self._ROLE_PARAMS), "auth/kubernetes/role")
        names = _strings(p.get("bound_service_account_names", []), "bound_service_account_names")
        namespaces = _strings(p.get("bound_service_account_namespaces", []), "bound_service_account_namespaces")
        if not names:
            raise _error(400, '"bound_service_account_names" can not be empty')
        if not namespaces:
            raise _error(400, '"bound_service_account_namespaces" can not be empty')
        policies = _strings(p.get("token_policies", p.get("policies", [])), "token_policies")
        ttl = _seconds(p.get("token_ttl", p.get("ttl", 0)), "token_ttl")
        max_ttl = _seconds(p.get("token_max_ttl", p.get("max_ttl", 0)), "token_max_ttl")
        token_type = p.get("token_type", "default")
        if token_type not in ("default", "service", "batch"):
            raise _error(400, f"invalid 'token_type' value {token_type!r}")
        self.roles[key] = {
            "bound_service_account_names": names,
            "bound_service_account_namespaces": namespaces,
            "audience": str(p.get("audience", "")),
            "alias_name_source": str(p.get("alias_name_source", "serviceaccount_uid")),
            "token_policies": policies,
            "policies": policies,
            "token_ttl": ttl,
            "ttl": ttl,
            "token_max_ttl": max_ttl,
            "max_ttl": max_ttl,
            "token_no_default_policy": _bool(p.get("token_no_default_policy", False), "token_no_default_policy"),
            "token_type": token_type,
        }
        raise _Reply(204)

    def _login(self, mount: str, body: Any) -> Any:
        p = _params(body, {"role", "jwt"}, "auth/kubernetes/login")
        role_name, jwt = p.get("role"), p.get("jwt")
        if not role_name:
            raise _error(400, "missing role")
        if not jwt:
            raise _error(400, "missing jwt")
        role = self.roles.get((mount, str(role_name).lower()))
        if role is None:
            raise _error(400, f'invalid role name "{role_name}"')
        sa = self.service_account_tokens.get(str(jwt))
        if sa is None:
            raise _error(403, "permission denied")
        if (
            "*" not in role["bound_service_account_names"]
            and sa.service_account not in role["bound_service_account_names"]
        ):
            raise _error(403, "service account name not authorized")
        if (
            "*" not in role["bound_service_account_namespaces"]
            and sa.namespace not in role["bound_service_account_namespaces"]
        ):
            raise _error(403, "namespace not authorized")
        if role["audience"] and role["audience"] not in sa.audiences:
            raise _error(403, "invalid audience (aud) claim: audience claim does not match any expected audience")
        policies = list(role["token_policies"])
        if not role["token_no_default_policy"]:
            policies = ["default", *policies]
        ttl = role["token_ttl"] or DEFAULT_TOKEN_TTL
        if role["token_max_ttl"]:
            ttl = min(ttl, role["token_max_ttl"])
        client_token = "hvs." + secrets.token_urlsafe(24)
        self.tokens[client_token] = IssuedToken(sorted(policies), self.now() + ttl, str(role_name))
        auth = {
            "client_token": client_token,
            "accessor": secrets.token_urlsafe(12),
            "policies": sorted(policies),
            "token_policies": sorted(policies),
            "metadata": {
                "role": role_name,
                "service_account_name": sa.service_account,
                "service_account_namespace": sa.namespace,
                "service_account_secret_name": "",
                "service_account_uid": secrets.token_hex(8),
            },
            "lease_duration": ttl,
            "renewable": True,
            "entity_id": "",
            "token_type": "service",
            "orphan": True,
        }
        return _envelope(None, auth=auth)

    # -- transit

    def _transit(self, method: str, path: str, mount: str, rest: list[str], body: Any, token: str | None) -> Any:
        if len(rest) == 2 and rest[0] == "keys":
            return self._key(method, path, mount, rest[1], body, token)
        if len(rest) == 3 and rest[0] == "keys" and rest[2] in ("rotate", "config"):
            self._only(method, "POST", "PUT")
            self._authorise(token, path, "update")
            key = self._existing_key(mount, rest[1])
            if rest[2] == "rotate":
                _params(body, set(), "transit/keys/:name/rotate")
                key.add_version(self.now())
            else:
                self._configure(key, body)
            raise _Reply(204)
        if len(rest) == 2 and rest[0] in ("encrypt", "decrypt"):
            self._only(method, "POST", "PUT")
            self._authorise(token, path, "update")
            if rest[0] == "encrypt":
                return self._encrypt(mount, rest[1], body)
            return self._decrypt(mount, rest[1], body)
        if len(rest) == 3 and rest[0] == "datakey" and rest[1] in ("plaintext", "wrapped"):
            self._only(method, "POST", "PUT")
            self._authorise(token, path, "update")
            return self._datakey(mount, rest[2], rest[1], body)
        raise _error(404, f"no handler for route {path!r}. route entry not found.")

    def _existing_key(self, mount: str, name: str) -> TransitKey:
        key = self.keys.get((mount, name))
        if key is None:
            raise _error(400, "encryption key not found")
        return key

    def _key(self, method: str, path: str, mount: str, name: str, body: Any, token: str | None) -> Any:
        exists = (mount, name) in self.keys
        self._read_write_delete(method, token, path, exists)
        if method == "GET":
            if not exists:
                raise _Reply(404, {"errors": []})
            return _envelope(self._describe(self.keys[(mount, name)]))
        if method == "DELETE":
            if not exists:
                raise _error(400, f"error deleting policy {name}: could not delete key; not found")
            if not self.keys[(mount, name)].deletion_allowed:
                raise _error(400, f"error deleting policy {name}: deletion is not allowed for this key")
            del self.keys[(mount, name)]
            raise _Reply(204)
        allowed = {"type", "derived", "exportable", "allow_plaintext_backup", "convergent_encryption"}
        p = _params(body, allowed, "transit/keys/:name")
        if p.get("type", "aes256-gcm96") != "aes256-gcm96":
            raise _error(400, f"fake vault: key type {p['type']!r} is not implemented (only aes256-gcm96)")
        if _bool(p.get("convergent_encryption", False), "convergent_encryption"):
            raise _error(400, "fake vault: convergent encryption is not implemented")
        if exists:  # the values set at creation cannot be changed; Vault leaves the key as it was
            return _envelope(self._describe(self.keys[(mount, name)]), warnings=[f"key {name} already existed"])
        key = TransitKey(
            name=name,
            derived=_bool(p.get("derived", False), "derived"),
            exportable=_bool(p.get("exportable", False), "exportable"),
            allow_plaintext_backup=_bool(p.get("allow_plaintext_backup", False), "allow_plaintext_backup"),
        )
        key.add_version(self.now())
        self.keys[(mount, name)] = key
        raise _Reply(204)

    @staticmethod
    def _describe(key: TransitKey) -> dict[str, Any]:
        return {
            "name": key.name,
            "type": "aes256-gcm96",
            "derived": key.derived,
            "kdf": "hkdf_sha256" if key.derived else "",
            "convergent_encryption": False,
            "exportable": key.exportable,
            "allow_plaintext_backup": key.allow_plaintext_backup,
            "deletion_allowed": key.deletion_allowed,
            "keys": {str(v): t for v, t in key.created.items()},
            "latest_version": key.latest,
            "min_available_version": 0,
            "min_decryption_version": key.min_decryption_version,
            "min_encryption_version": key.min_encryption_version,
            "supports_encryption": True,
            "supports_decryption": True,
            "supports_derivation": True,
            "supports_signing": False,
            "auto_rotate_period": 0,
            "imported_key": False,
        }

    def _configure(self, key: TransitKey, body: Any) -> None:
        allowed = {"deletion_allowed", "min_decryption_version", "min_encryption_version", "exportable"}
        p = _params(body, allowed, "transit/keys/:name/config")
        if "exportable" in p:
            exportable = _bool(p["exportable"], "exportable")
            if key.exportable and not exportable:
                raise _error(400, "export restriction cannot be disabled once enabled")
            key.exportable = exportable
        if "deletion_allowed" in p:
            key.deletion_allowed = _bool(p["deletion_allowed"], "deletion_allowed")
        if "min_decryption_version" in p:
            version = _int(p["min_decryption_version"], "min_decryption_version")
            if version > key.latest:
                raise _error(400, "cannot set min decryption version to a value greater than the latest version")
            key.min_decryption_version = max(version, 1)
        if "min_encryption_version" in p:
            key.min_encryption_version = _int(p["min_encryption_version"], "min_encryption_version")

    def _cipher(self, key: TransitKey, version: int, context: Any) -> AESGCM:
        material = key.versions[version]
        if key.derived:
            if not context:
                raise _error(400, DERIVED_WITHOUT_CONTEXT)
            info = _b64decode(context, "context")
            material = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)
        return AESGCM(material)

    def _seal(self, key: TransitKey, plaintext: bytes, p: dict[str, Any]) -> dict[str, Any]:
        version = _int(p.get("key_version", 0), "key_version") or key.latest
        if version not in key.versions or version < key.min_encryption_version:
            raise _error(400, "requested version for encryption is not valid")
        aad = _b64decode(p["associated_data"], "associated_data") if p.get("associated_data") else None
        nonce = secrets.token_bytes(12)
        sealed = self._cipher(key, version, p.get("context")).encrypt(nonce, plaintext, aad)
        return {"ciphertext": f"vault:v{version}:" + base64.b64encode(nonce + sealed).decode(), "key_version": version}

    def _encrypt(self, mount: str, name: str, body: Any) -> Any:
        allowed = {"plaintext", "context", "associated_data", "key_version", "nonce", "batch_input", "type"}
        p = _params(body, allowed | {"convergent_encryption"}, "transit/encrypt/:name")
        if "batch_input" in p:
            raise _error(400, "fake vault: batch_input is not implemented")
        if (mount, name) not in self.keys:
            raise _error(400, "fake vault: encrypt does not upsert keys; create the key first")
        if "plaintext" not in p:
            raise _error(400, "missing plaintext to encrypt")
        return _envelope(self._seal(self.keys[(mount, name)], _b64decode(p["plaintext"], "plaintext"), p))

    def _datakey(self, mount: str, name: str, kind: str, body: Any) -> Any:
        p = _params(body, {"context", "nonce", "bits"}, "transit/datakey/:type/:name")
        bits = _int(p.get("bits", 256), "bits")
        if bits not in (128, 256, 512):
            raise _error(400, "invalid bits value")
        key = self._existing_key(mount, name)
        plaintext = secrets.token_bytes(bits // 8)
        data = self._seal(key, plaintext, {"context": p.get("context")})
        if kind == "plaintext":
            data["plaintext"] = base64.b64encode(plaintext).decode()
        return _envelope(data)

    def _decrypt(self, mount: str, name: str, body: Any) -> Any:
        p = _params(body, {"ciphertext", "context", "associated_data", "nonce", "batch_input"}, "transit/decrypt/:name")
        if "batch_input" in p:
            raise _error(400, "fake vault: batch_input is not implemented")
        key = self._existing_key(mount, name)
        match = re.fullmatch(r"vault:v(\d+):(.+)", str(p.get("ciphertext", "")))
        if match is None:
            raise _error(400, "invalid ciphertext: no prefix")
        version = int(match.group(1))
        if version < key.min_decryption_version:
            raise _error(400, "ciphertext or signature version is disallowed by policy (too old)")
        if version not in key.versions:
            raise _error(400, "invalid ciphertext: version is too new")
        blob = _b64decode(match.group(2), "ciphertext")
        aad = _b64decode(p["associated_data"], "associated_data") if p.get("associated_data") else None
        try:
            plaintext = self._cipher(key, version, p.get("context")).decrypt(blob[:12], blob[12:], aad)
        except (InvalidTag, ValueError):
            raise _error(400, "cipher: message authentication failed") from None
        return _envelope({"plaintext": base64.b64encode(plaintext).decode()})


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so stop_listening() really refuses the next call.
    protocol_version = "HTTP/1.0"

    def _serve(self) -> None:
        fake: VaultFake = self.server.fake  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            self._answer(400, {"errors": ["failed to parse JSON input"]})
            return
        answer = fake.handle(self.command, self.path, body, self.headers.get("X-Vault-Token"))
        if answer is None:
            self.close_connection = True  # a dropped connection: the client sees it closed mid-request
            return
        status, payload = answer
        self._answer(status, payload)

    def _answer(self, status: int, payload: Any) -> None:
        data = b"" if status == 204 or payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_LIST = _serve

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


@contextmanager
def running_vault_fake(**options: Any) -> Iterator[VaultFake]:
    """A started fake, stopped afterwards."""
    fake = VaultFake(**options).start()
    try:
        yield fake
    finally:
        fake.stop_listening()


__all__ = ["ROOT_TOKEN", "Recorded", "VaultFake", "parse_policy", "running_vault_fake"]
