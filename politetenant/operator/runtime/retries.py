"""How soon a tenant is looked at again: the backoff after a failure, and when the drift timer may
leave a tenant out. (A rollout needs no re-check: its workloads' watch events reconcile the tenant.)

Pure functions of kopf's retry number (per change) and of the drift timer's interval, and a record of
when each tenant was last reconciled, so the handlers only pass them on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BACKOFF_SECONDS = (5, 10, 20, 40, 80, 160, 300)
# What only a person can fix (a Vault that refuses the operator) is retried this many steps further
# along the backoff (40 s, 80 s, ... 300 s): the fix is outside the cluster, and the drift timer
# looks again anyway.
NEEDS_ACTION_BACKOFF_STEPS = 3

# A drift-timer tick leaves out a tenant reconciled within this share of the interval (by a change
# handler, a child's event): that reconcile did all the tick would.
FRESH_SHARE = 0.5


def backoff(retry: int, *, needs_action: bool = False) -> float:
    """Seconds before retry number ``retry``; later along the steps when a person has to act first."""
    step = retry + (NEEDS_ACTION_BACKOFF_STEPS if needs_action else 0)
    return BACKOFF_SECONDS[min(step, len(BACKOFF_SECONDS) - 1)]


@dataclass
class Reconciled:
    """When each tenant was last reconciled (``time.monotonic()``), for the drift timer to leave out
    one reconciled moments ago: 500 tenants applied at once were each reconciled again by a timer
    tick right after their change handler, at a fifth of all the operator's requests."""

    at: dict[str, float] = field(default_factory=dict)

    def mark(self, tenant: str, now: float) -> None:
        self.at[tenant] = now

    def fresh(self, tenant: str, now: float, resync_seconds: float) -> bool:
        """Reconciled within the last ``FRESH_SHARE`` of the drift interval."""
        last = self.at.get(tenant)
        return last is not None and now - last < resync_seconds * FRESH_SHARE
