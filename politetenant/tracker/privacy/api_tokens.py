"""API tokens, audited: created on the command line, imported from the operator's Secret, revoked.

Each change is an audit entry (``token.create``, ``token.revoke``) naming the token's id and role,
never its secret. Importing is idempotent: only the worker that stores a token (or revokes the one it
replaces) writes an entry, however many replicas and workers start at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from politetenant.crypto import Keyring
from politetenant.tracker.http.auth import BootstrapToken, Role, create_api_token, revoke_api_token, token_id_of
from politetenant.tracker.privacy import audit
from politetenant.tracker.storage.base import Store

log = logging.getLogger(__name__)

BOOTSTRAP_ACTOR = ("api-tokens-dir", "operator")  # token id and role of what the tracker imports itself


async def create_token(store: Store, keyring: Keyring, role: Role) -> str:
    """A new token of ``role``: stored as a hash, audited, returned (the only time it is shown)."""
    token = await create_api_token(store, role)
    token_id = token_id_of(token)
    await audit.record(
        store, keyring, audit.SYSTEM_ACTOR, audit.Action.TOKEN_CREATE, detail=f"id={token_id} role={role}"
    )
    return token


async def import_bootstrap_tokens(store: Store, keyring: Keyring, tokens: Sequence[BootstrapToken]) -> None:
    """Store each role's token from the Secret unless it is stored already; a changed Secret (a new
    token for a role) revokes the role's previous bootstrap token. Problems are logged, not raised:
    the other roles' tokens and the tracker itself keep working."""
    now = int(time.time() * 1000)
    for token in tokens:
        role = token.role.value
        result = await store.import_bootstrap_token(token.row(now))
        if result.outcome == "imported":
            log.info("api tokens: imported the %s token ptk_%s from %s", role, token.token_id, token.source)
            await audit.record(
                store, keyring, BOOTSTRAP_ACTOR, audit.Action.TOKEN_CREATE,
                detail=f"id={token.token_id} role={role} source=api-tokens-dir",
            )  # fmt: skip
            for old in result.revoked_ids:
                log.info("api tokens: revoked ptk_%s, the %s token the Secret held before", old, role)
                await audit.record(
                    store, keyring, BOOTSTRAP_ACTOR, audit.Action.TOKEN_REVOKE,
                    detail=f"id={old} role={role} reason=replaced by ptk_{token.token_id}",
                )  # fmt: skip
        elif result.outcome == "revoked":
            log.warning(
                "api tokens: the %s token in %s was revoked (an old copy of a rotated Secret?); it stays revoked",
                role, token.source,
            )  # fmt: skip
        elif result.outcome == "conflict":
            log.error(
                "api tokens: the id of the %s token in %s belongs to another stored token; not imported:"
                " put a newly generated token in the Secret",
                role, token.source,
            )  # fmt: skip


async def revoke_token(store: Store, keyring: Keyring, token_id: str) -> tuple[str, bool] | None:
    """Revoke ``ptk_<token_id>`` now and audit it; (role, whether it was in force), or None if unknown."""
    result = await revoke_api_token(store, token_id)
    if result is not None and result[1]:
        await audit.record(
            store, keyring, audit.SYSTEM_ACTOR, audit.Action.TOKEN_REVOKE, detail=f"id={token_id} role={result[0]}"
        )
    return result
