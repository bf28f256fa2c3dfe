"""``polite-tracker``: serve, migrate, token create, purge, reseal, keys rotate, audit verify, demo.

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
from politetenant.settings import SettingsError, load_settings
from politetenant.tracker.http.auth import Role, create_api_token
from politetenant.tracker.judging.client_ip import parse_cidrs
from politetenant.tracker.privacy import audit
from politetenant.tracker.server.app import DEFAULT_DB, DEFAULT_KEYS, TrackerConfig, load_keyring
from politetenant.tracker.storage import StorageUnavailable, open_store

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
        "verify", help="check the audit log's hash chain; exit 1 names the first broken entry"
    )
    _common(verify)

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
        token = await create_api_token(store, role)
        token_id = token.split("_")[1]
        await audit.record(
            store, keyring, audit.SYSTEM_ACTOR, audit.Action.TOKEN_CREATE, detail=f"id={token_id} role={role}"
        )
        return token
    finally:
        await store.close()


async def _verify_audit(db: str, keys: str, tenant_id: str) -> tuple[int, str]:
    from politetenant.tracker.privacy.api_audit import verify_audit_command

    store = open_store(db)
    await store.connect()
    try:
        return await verify_audit_command(store, load_keyring(keys, tenant_id))
    finally:
        await store.close()


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
        if args.command == "serve":
            from politetenant.tracker.server.workers import serve

            if args.workers < 1:
                return _fail("--workers must be at least 1")
            parse_cidrs(args.trusted_proxies)
            if args.geoip and not os.path.isfile(args.geoip):
                return _fail(f"--geoip {args.geoip}: no such file")
            config = TrackerConfig(
                settings=settings, db=args.db, keys=args.keys, geoip=args.geoip,
                trusted_proxies=args.trusted_proxies, migrate=not args.no_migrate,
                lean_public_routes=args.public_routes == "lean",
            )  # fmt: skip
            load_keyring(args.keys, settings.tenant_id)  # fail here, readably, not in every worker
            return serve(config, args.host, args.port, args.workers)
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
            code, message = asyncio.run(_verify_audit(args.db, args.keys, settings.tenant_id))
            print(message, file=sys.stdout if code == 0 else sys.stderr)
            return code
        if args.command == "token":
            token = asyncio.run(_create_token(args.db, args.keys, settings.tenant_id, Role(args.role)))
            print(token)
            print(f"role {args.role}; shown once, only its hash is stored", file=sys.stderr)
            return 0
    except (SettingsError, ValueError, KeyMaterialError) as exc:
        return _fail(str(exc))
    except StorageUnavailable as exc:
        return _fail(f"database unavailable: {exc}", EXIT_UNAVAILABLE)
    return _fail(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
