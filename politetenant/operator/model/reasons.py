"""The one list of reasons: condition reasons, Event reasons and metric labels all come from here.

``kubectl describe``, dashboards and alerts then speak one language (the habit of Vault Secrets
Operator's ``consts/reasons.go``). Each value is a CamelCase word that fits metav1.Condition's reason
pattern. Add a reason here before using it anywhere.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # -- the tenant as a whole
    READY = "Ready"
    PROVISIONING = "Provisioning"
    PROGRESSING = "Progressing"
    PROGRESSING_WITH_RETRY = "ProgressingWithRetry"
    INVALID_SPEC = "InvalidSpec"
    API_ERROR = "ApiError"
    OPERATOR_ERROR = "OperatorError"
    # -- Placement
    REGION_SERVED = "RegionServed"
    REGION_NOT_SERVED = "RegionNotServed"
    # -- NamespaceReady and the children
    NAMESPACE_CREATED = "NamespaceCreated"
    NAMESPACE_ACTIVE = "NamespaceActive"
    NAMESPACE_TERMINATING = "NamespaceTerminating"
    NAMESPACE_ADOPTED = "NamespaceAdopted"
    OBJECTS_CREATED = "ObjectsCreated"
    OBJECT_RESTORED = "ObjectRestored"
    OBJECT_UPDATED = "ObjectUpdated"
    SECRET_CREATED = "SecretCreated"
    # -- KeysReady
    KEYS_CREATED = "KeysCreated"
    KEYS_AVAILABLE = "KeysAvailable"
    KEYS_ROTATED = "KeysRotated"
    KEYS_UNAVAILABLE = "KeysUnavailable"
    KEYS_MISSING = "KeysMissing"
    VAULT_REFUSED = "VaultRefused"
    # -- DatabaseReady
    DATABASE_AVAILABLE = "DatabaseAvailable"
    DATABASE_STARTING = "DatabaseStarting"
    DATABASE_EXTERNAL = "ExternalDatabase"
    DATABASE_ENGINE_UNAVAILABLE = "DatabaseEngineUnavailable"
    DATABASE_ENGINE_CHANGE_REFUSED = "DatabaseEngineChangeRefused"
    # -- TrackerReady
    TRACKER_AVAILABLE = "TrackerAvailable"
    TRACKER_STARTING = "TrackerStarting"
    # -- RetentionReady
    RETENTION_SCHEDULED = "RetentionScheduled"
    LEGAL_HOLD = "LegalHold"
    # -- deletion
    DELETING = "Deleting"
    NAMESPACE_DELETING = "NamespaceDeleting"
    ORPHANED = "Orphaned"
    CRYPTO_SHREDDED = "CryptoShredded"
    RELEASED = "Released"


# Reasons that need a person to act (fix the spec, install something, grant Vault access, release a
# legal hold, serve the region elsewhere): the tenant is Stalled (kstatus: Failed) and its phase Failed
# (Pending for a region, Deleting under a hold) while one of them holds a condition False. The
# operator still looks again (slow retries, the drift timer, any spec change), so a fix takes effect
# by itself.
NEEDS_ACTION = frozenset(
    {
        Reason.INVALID_SPEC,
        Reason.REGION_NOT_SERVED,
        Reason.DATABASE_ENGINE_UNAVAILABLE,
        Reason.DATABASE_ENGINE_CHANGE_REFUSED,
        Reason.VAULT_REFUSED,
        Reason.KEYS_MISSING,
        Reason.LEGAL_HOLD,
    }
)

# Reasons another controller clears by itself: the workload exists and is rolling out. The tenant is
# looked at again soon rather than at the next drift timer tick (``retries.rollout_recheck``).
ROLLING_OUT = frozenset({Reason.TRACKER_STARTING, Reason.DATABASE_STARTING})

# Reasons of a part that is on its way, with nothing failed: not created yet, or rolling out. While
# only these hold parts back, Ready is Unknown (not False) and Reconciling says Progressing.
PROGRESS = ROLLING_OUT | {Reason.PROVISIONING}


class EventType(StrEnum):
    """core/v1 Event types."""

    NORMAL = "Normal"
    WARNING = "Warning"
