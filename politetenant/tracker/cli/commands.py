"""``polite-tracker``: serve, migrate, token create|revoke, purge, reseal, keys rotate, audit verify, demo.

Every subcommand takes ``--db``, ``--keys`` and ``--settings`` (or ``POLITE_DB``, ``POLITE_KEYS``,
``POLITE_SETTINGS``), so ``token create`` and ``serve`` pointed at the same files share one state.
Bad input exits 2 with one line per problem saying what to fix.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from politetenant.crypto import KeyMaterialError
from politetenant.settings import SettingsError, TrackerSettings, load_settings
from politetenant.tracker.http.auth import REVOCATION_SECONDS, Role, read_bootstrap_tokens, token_id_of
from politetenant.tracker.judging.client_ip import parse_cidrs
from politetenant.tracker.privacy.api_tokens import create_token, revoke_token
from politetenant.tracker.server.app import DEFAULT_DB, DEFAULT_KEYS, TrackerConfig, load_keyring
from politetenant.tracker.storage import StorageUnavailable, open_store

EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


def _common(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--db", default=env("POLITE_DB", DEFAULT_DB), help="sqlite:///PATH or postgresql://... (POLITE_DB)"
    )
    parser.add_argument(
        "--keys",
        default=env("POLITE_KEYS", DEFAULT_KEYS),
        help="local:PATH, or vault:PATH with POLITE_VAULT_* (POLITE_KEYS)",
    )
    parser.add_argument(
        "--settings", default=env("POLITE_SETTINGS"), help="TrackerSettings YAML file (POLITE_SETTINGS)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polite-tracker", description="Privacy-first e-mail tracker of one tenant.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve beacons, redirects and the API")
    _common(serve)
    serve.add_argument("--host", default=os.environ.get("POLITE_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("POLITE_PORT", "8080")))
    serve.add_argument("--geoip", default=os.environ.get("POLITE_GEOIP"), help="MaxMind City .mmdb (POLITE_GEOIP)")
    serve.add_argument(
        "--trusted-proxies",
        default=os.environ.get("POLITE_TRUSTED_PROXIES", ""),
        help="CIDRs whose X-Forwarded-For is believed, comma separated (POLITE_TRUSTED_PROXIES)",
    )
    serve.add_argument("--workers", type=int, default=int(os.environ.get("POLITE_WORKERS", "1")))
    serve.add_argument(
        "--ops-port",
        type=int,
        default=os.environ.get("POLITE_OPS_PORT") or None,  # a string default goes through type=int too
        help="serve /healthz, /readyz and /metrics only on this port (same --host), not the main one; "
        "with --workers, any worker answers for all of them (POLITE_OPS_PORT)",
    )
    serve.add_argument(
        "--api-tokens-dir",
        default=os.environ.get("POLITE_API_TOKENS_DIR") or None,
        help="import the bootstrap API tokens at start: files sender, analyst, privacy, one token each, "
        "as the operator's tracker-api-tokens Secret holds them; only their hashes are stored "
        "(POLITE_API_TOKENS_DIR)",
    )
    serve.add_argument("--no-migrate", action="store_true", help="do not apply database migrations at start")
    serve.add_argument(
        "--public-routes",
        choices=("lean", "aiohttp"),
        default=os.environ.get("POLITE_PUBLIC_ROUTES", "lean"),
        help="serve /o/ and /c/ straight off the socket (lean, default) or through aiohttp's router, "
        "e.g. to compare them (POLITE_PUBLIC_ROUTES)",
    )

    migrate = sub.add_parser("migrate", help="apply database migrations")
    _common(migrate)

    token = sub.add_parser("token", help="API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="create an API token and print it once")
    _common(create)
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    revoke = token_sub.add_parser(
        "revoke",
        help=f"revoke a token: refused by new workers at once, by running ones within {REVOCATION_SECONDS:g} s",
    )
    _common(revoke)
    revoke.add_argument("token_id", metavar="TOKEN_ID", help="ptk_<id> (as the audit log names it) or the whole token")

    purge = sub.add_parser("purge", help="apply retention: delete what is older than the tenant keeps it")
    _common(purge)
    purge.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
    purge.add_argument("--batch", type=int, default=5000, help="rows per DELETE statement (at most 10000)")

    reseal = sub.add_parser("reseal", help="re-seal stored values under the newest key version")
    _common(reseal)
    reseal.add_argument("--batch", type=int, default=1000, help="rows read and re-sealed per page")

    keys = sub.add_parser("keys", help="the tenant's key versions")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    rotate = keys_sub.add_parser("rotate", help="add a key version; restart trackers to use it, then run reseal")
    _common(rotate)

    audit_cmd = sub.add_parser("audit", help="the audit log")
    audit_sub = audit_cmd.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify",
        help="check the audit log's hash chain and its anchor file; exit 1 names the first broken, deleted or "
        "rewritten entry, exit 2 an unreadable anchor line",
    )
    _common(verify)
    verify.add_argument(
        "--anchor",
        default=None,
        help="the anchor file to hold the log against (default: the settings' audit_anchor_path), e.g. the "
        "copy the operator collected",
    )

    demo = sub.add_parser("demo", help="a self-contained walk-through on the embedded defaults")
    demo.add_argument("--dir", default="./polite-demo", help="where the demo keeps its database and keys")
    demo.add_argument("--serve", action="store_true", help="keep the tracker running after the walk-through")
    demo.add_argument("--port", type=int, default=0, help="port for the demo tracker (0: any free port)")
    demo.add_argument(
        "--tenant-settings",
        help="start from a tenant's TrackerSettings (polite-operator render --tracker-settings); laptop parts replaced",
    )
    return parser


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    for line in message.splitlines():
        print(f"polite-tracker: {line}", file=sys.stderr)
    return code


async def _migrate(db: str) -> list[int]:
    store = open_store(db)
    await store.connect()
    try:
        return await store.migrate()
    finally:
        await store.close()


async def _create_token(db: str, keys: str, tenant_id: str, role: Role) -> str:
    store = open_store(db)
    keyring = load_keyring(keys, tenant_id)
    await store.connect()
    try:
        await store.migrate()
        return await create_token(store, keyring, role)
    finally:
        await store.close()


async def _revoke_token(db: str, keys: str, tenant_id: str, token_id: str) -> tuple[str, bool] | None:
    store = open_store(db)
    keyring = load_keyring(keys, tenant_id)
    await store.connect()
    try:
        await store.migrate()
        return await revoke_token(store, keyring, token_id)
    finally:
        await store.close()


def _token_command(args: argparse.Namespace, tenant_id: str) -> int:
    if args.token_command == "create":
        token = asyncio.run(_create_token(args.db, args.keys, tenant_id, Role(args.role)))
        print(token)
        print(f"role {args.role}; shown once, only its hash is stored", file=sys.stderr)
        return 0
    token_id = token_id_of(args.token_id)  # ValueError (exit 2) names the expected shape, never the argument
    result = asyncio.run(_revoke_token(args.db, args.keys, tenant_id, token_id))
    if result is None:
        return _fail(f"no token ptk_{token_id} in this database", EXIT_NOT_FOUND)
    role, was_in_force = result
    if was_in_force:
        print(
            f"revoked ptk_{token_id} (role {role}); running trackers refuse it within {REVOCATION_SECONDS:g} s",
            file=sys.stderr,
        )
    else:
        print(f"ptk_{token_id} (role {role}) was revoked already", file=sys.stderr)
    return 0


def _serve_config(args: argparse.Namespace, settings: TrackerSettings) -> TrackerConfig:
    """Check what ``serve`` was given before any worker starts; ValueError names what to fix."""
    if args.workers < 1:
        raise ValueError("--workers must be at least 1")
    for flag, port in (("--port", args.port), ("--ops-port", args.ops_port)):
        if port is not None and not 0 <= port <= 65535:
            raise ValueError(f"{flag} {port}: not a port number (0 to 65535)")
    if args.ops_port is not None and args.ops_port == args.port and args.port != 0:
        raise ValueError(f"--ops-port {args.ops_port}: must differ from --port")
    parse_cidrs(args.trusted_proxies)
    if args.geoip and not os.path.isfile(args.geoip):
        raise ValueError(f"--geoip {args.geoip}: no such file")
    open_store(args.db)  # a bad --db URL is refused here, not in every worker
    tokens = read_bootstrap_tokens(args.api_tokens_dir) if args.api_tokens_dir else ()
    load_keyring(args.keys, settings.tenant_id)  # fail here, readably, not in every worker
    return TrackerConfig(
        settings=settings, db=args.db, keys=args.keys, geoip=args.geoip, trusted_proxies=args.trusted_proxies,
        migrate=not args.no_migrate, lean_public_routes=args.public_routes == "lean", ops_port=args.ops_port,
        bootstrap_tokens=tokens,
    )  # fmt: skip


async def _verify_audit(db: str, keys: str, tenant_id: str, anchor_path: str | None) -> tuple[int, str]:
    from politetenant.tracker.privacy.api_audit import verify_audit_command

    store = open_store(db)
    await store.connect()
    try:
        return await verify_audit_command(store, load_keyring(keys, tenant_id), anchor_path)
    finally:
        await store.close()


def _anchor_audit(settings: TrackerSettings) -> None:
    """Anchor what this command audits (purge, reseal, tokens) where the tracker anchors its own entries,
    when that file's directory is here: the retention CronJob has no spool volume, and its purge entries
    then go unanchored rather than warn every night (verify checks only anchored entries)."""
    from politetenant.tracker.privacy import audit

    path = settings.audit_anchor_path
    if path is not None and os.path.isdir(os.path.dirname(os.path.abspath(path))):
        audit.use_anchor(path)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "demo":
        from politetenant.tracker.cli.demo import run_demo

        return run_demo(args.dir, serve=args.serve, port=args.port, tenant_settings=args.tenant_settings)
    try:
        settings = load_settings(args.settings)
        _anchor_audit(settings)
        if args.command == "serve":
            from politetenant.tracker.server.workers import serve

            return serve(_serve_config(args, settings), args.host, args.port, args.workers)
        if args.command == "migrate":
            applied = asyncio.run(_migrate(args.db))
            print(f"applied migrations: {applied}" if applied else "database schema is up to date")
            return 0
        if args.command in ("purge", "reseal", "keys"):
            from politetenant.tracker.cli import keys_cli

            if args.command == "keys":
                return keys_cli.rotate_keys(args.db, args.keys, settings)
            if args.batch < 1:
                return _fail("--batch must be at least 1")
            if args.command == "purge":
                return keys_cli.run_purge(args.db, args.keys, settings, dry_run=args.dry_run, batch=args.batch)
            return keys_cli.run_reseal(args.db, args.keys, settings, batch=args.batch)
        if args.command == "audit":
            anchor_path = args.anchor or settings.audit_anchor_path
            code, message = asyncio.run(_verify_audit(args.db, args.keys, settings.tenant_id, anchor_path))
            if code == 0:
                print(message)
                return code
            return _fail(message, code)
        if args.command == "token":
            return _token_command(args, settings.tenant_id)
    except (SettingsError, ValueError, KeyMaterialError) as exc:
        return _fail(str(exc))
    except StorageUnavailable as exc:
        return _fail(f"database unavailable: {exc}", EXIT_UNAVAILABLE)
    return _fail(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
