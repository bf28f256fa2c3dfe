"""How soon a tenant is looked at again: the backoff after a failure, the quick re-checks while its
workloads roll out, and when the drift timer may leave a tenant out.

Pure functions of kopf's retry number (per change) and of the drift timer's interval, and a record of
when each tenant was last reconciled, so the handlers only pass them on.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

BACKOFF_SECONDS = (5, 10, 20, 40, 80, 160, 300)
# What only a person can fix (a Vault that refuses the operator) is retried this many steps further
# along the backoff (40 s, 80 s, ... 300 s): the fix is outside the cluster, and the drift timer
# looks again anyway.
NEEDS_ACTION_BACKOFF_STEPS = 3

# A rollout (the tracker's StatefulSet, the database) is usually done in seconds to a minute, and the
# operator does not watch the workloads: it looks again after 2 s, then twice as long each time.
ROLLOUT_FIRST_SECONDS = 2.0
# Each wait is at most this share of the drift timer's interval, so a tenant is never left waiting
# for the timer while its rollout is young.
ROLLOUT_WAIT_SHARE = 0.25
# A drift-timer tick leaves out a tenant reconciled within this share of the interval (by a change
# handler, a rollout re-check): that reconcile did all the tick would.
FRESH_SHARE = 0.5


def backoff(retry: int, *, needs_action: bool = False) -> float:
    """Seconds before retry number ``retry``; later along the steps when a person has to act first."""
    step = retry + (NEEDS_ACTION_BACKOFF_STEPS if needs_action else 0)
    return BACKOFF_SECONDS[min(step, len(BACKOFF_SECONDS) - 1)]


def rollout_recheck(retry: int, *, resync_seconds: float) -> float | None:
    """Seconds until a tenant whose workloads are still rolling out is looked at again: 2, 4, 8 ... s,
    each at most a quarter of the drift interval; None once this change's re-checks have waited a
    whole interval between them.

    From then on the drift timer looks at the tenant every interval anyway, so a rollout that never
    finishes (an image that cannot be pulled) costs a handful of re-checks (each a reconcile, and a
    write of kopf's progress annotation) per change, not one every few seconds for as long as it is
    broken. The budget counts the waits, not the clock: a first reconcile slowed by a busy API server
    does not use it up.
    """
    if resync_seconds <= 0:
        return None
    cap = resync_seconds * ROLLOUT_WAIT_SHARE
    waited = 0.0
    for attempt in itertools.count():  # ends: each wait is at least min(2 s, cap) > 0
        if waited >= resync_seconds:
            return None
        wait = min(ROLLOUT_FIRST_SECONDS * 2.0**attempt, cap)
        if attempt >= retry:
            return wait
        waited += wait
    raise AssertionError("unreachable")


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
