"""What the emulator checks on every write, in the API server's order: the registry's validation of the
object (422 Invalid), then the validating admission plugins (403 Forbidden, or 422 where a policy says).

https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/ ("the
admission phases"): authentication and authorization come first (``PoliteKubernetesEmulator.tokens``,
``authorizer``, ``tests/fakes/kube_rbac.py``), then mutating admission, then object schema validation,
then validating admission, whose plugins run in the order of the API server's list
(https://kubernetes.io/docs/reference/access-authn-authz/admission-controllers/#which-plugins-are-enabled-by-default):
PodSecurity before ValidatingAdmissionPolicy. Each check lives in the module named for it and has its
own tests.
"""

from __future__ import annotations

from tests.fakes.kube_builtin import validate_builtin
from tests.fakes.kube_cel import validate_custom_resource
from tests.fakes.kube_emulator import Validator
from tests.fakes.kube_immutable import admit_pvc_resize, check_immutable
from tests.fakes.kube_pod_security import enforce_pod_security
from tests.fakes.kube_vap import validating_admission_policies


def standard_validators() -> list[Validator]:
    """The checks a strict emulator runs on each create, update and delete, in order."""
    return [
        validate_builtin,  # built-in kinds decoded and validated against their schemas
        validate_custom_resource,  # CRD rules (CEL) and formats: the registry's validation
        check_immutable,  # fields an update may not change
        enforce_pod_security,  # the PodSecurity plugin (namespace pod-security.kubernetes.io labels)
        admit_pvc_resize,  # the PersistentVolumeClaimResize plugin
        validating_admission_policies,  # the ValidatingAdmissionPolicy plugin
    ]
