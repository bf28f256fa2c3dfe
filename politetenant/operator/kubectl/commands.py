"""``kubectl polite``: rotate a tenant's keys, place or lift a legal hold, read a tenant's health.

kubectl runs ``kubectl-polite`` from PATH for ``kubectl polite ...``. The plug-in asks; the operator
acts: ``rotate-keys`` sets the ``polite.io/rotate-keys`` annotation to a new value (the same
trigger an SRE can set with ``kubectl annotate``); ``legal-hold`` merge-patches ``spec.legalHold``,
the user's own field, so the API server's CEL rules judge it; ``status`` reads ``status`` and the
tenant's Events. Cluster access works as kubectl's: ``--kubeconfig``, then ``KUBECONFIG``, then
``~/.kube/config``, then the pod's service account; ``--context`` picks a context.

Exit codes: 0 done; 1 the cluster said no (unknown tenant, refused change, wait timed out);
2 bad arguments or kubeconfig; 3 the API server cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TextIO

import yaml

from politetenant.operator.kubectl.api import PluginError, TenantApi, Unreachable, UsageError, connect
from politetenant.operator.kubectl.formatting import (
    clean,
    describe_tenant,
    event_count,
    gitops_manager,
    keys_version,
    latest_events,
    legal_hold_patch,
    ordered_conditions,
    parse_duration,
    rotate_patch,
    rotation_plan,
    rotation_value,
    status_document,
    tenant_name,
    timeout_text,
)

# Where Events about a cluster-scoped tenant are: kopf posts them in its credentials' default
# namespace (kopf/_cogs/clients/events.py: in a pod, the pod's; from a kubeconfig, the context's;
# else "default"), and the operator sets that to its own namespace, politetenant-system unless the
# chart was installed elsewhere.
OPERATOR_NAMESPACE = os.environ.get("POLITE_OPERATOR_NAMESPACE", "politetenant-system")
POLL_SECONDS = 2.0


def _deleting(tenant: dict[str, Any]) -> bool:
    return bool((tenant.get("metadata") or {}).get("deletionTimestamp"))


def _condition(tenant: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in ordered_conditions(tenant.get("status") or {}) if c.get("type") == kind), {})


def wait_for_rotation(api: TenantApi, name: str, before: int | None, timeout: float) -> int:
    """Poll until ``status.keys.version`` passes ``before``; the new version. A blip of the API is waited out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            current = api.get(name)
        except Unreachable:
            if time.monotonic() >= deadline:
                raise
        else:
            version = keys_version(current)
            if version is not None and (before is None or version > before):
                return version
            if time.monotonic() >= deadline:
                keys = _condition(current, "KeysReady")
                why = (
                    f" KeysReady is {keys.get('status')}: {keys.get('reason')} {clean(keys.get('message'))}"
                    if keys
                    else ""
                )
                raise PluginError(
                    f"timed out after {timeout_text(timeout)}: status.keys.version is still {before or 'unset'}.{why}"
                )
        time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0.0)))


def rotate_keys(api: TenantApi, name: str, *, wait: bool, timeout: float, out: TextIO) -> int:
    tenant = api.get(name)
    if _deleting(tenant):
        raise PluginError(f"politetenant {name} is being deleted; its keys are not rotated")
    before = keys_version(tenant)
    value = rotation_value(datetime.now(UTC))
    api.patch(name, rotate_patch(value))
    out.write(rotation_plan(tenant, value))
    if not wait:
        out.write(f"Follow it with: kubectl polite status {name}\n")
        return 0
    out.write(f"Waiting up to {timeout_text(timeout)} for status.keys.version to pass {before or 'unset'}...\n")
    out.flush()
    out.write(f"Keys rotated: version {wait_for_rotation(api, name, before, timeout)}.\n")
    return 0


def legal_hold(api: TenantApi, name: str, *, on: bool, out: TextIO, err: TextIO) -> int:
    tenant = api.get(name)
    spec = tenant.get("spec") or {}
    state = "on" if on else "off"
    if bool(spec.get("legalHold", False)) == on:
        out.write(f"politetenant {name}: legal hold is already {state}; nothing changed.\n")
        return 0
    if tool := gitops_manager(tenant):
        err.write(
            f"warning: {tool} manages politetenant {name}: set spec.legalHold: {str(on).lower()} in git too, "
            "or the next sync puts the old value back.\n"
        )
    api.patch(name, legal_hold_patch(on))
    if on:
        out.write(
            f"politetenant {name}: legal hold is on. Retention deletes nothing (its CronJob is suspended) "
            "and deleting the tenant waits until the hold is lifted.\n"
        )
        if spec.get("deletionPolicy") == "Delete":
            out.write(
                "Its deletionPolicy stays Delete: once the hold is lifted, deleting the tenant removes its "
                "namespace and crypto-shreds its keys.\n"
            )
    else:
        out.write(f"politetenant {name}: legal hold is off. Retention resumes on its schedule.\n")
        if _deleting(tenant):
            policy = spec.get("deletionPolicy", "Retain")
            out.write(f"The tenant is being deleted; deletion now proceeds (deletionPolicy {policy}).\n")
    return 0


def show_status(api: TenantApi, name: str, *, output: str, limit: int, operator_namespace: str, out: TextIO) -> int:
    tenant = api.get(name)
    found, note = api.events(tenant, operator_namespace)
    events = latest_events(found, limit)
    if output == "table":
        out.write(describe_tenant(tenant, events, datetime.now(UTC), note))
    elif output == "json":
        out.write(json.dumps(status_document(tenant, events), indent=2) + "\n")
    else:
        out.write(yaml.safe_dump(status_document(tenant, events), sort_keys=False))
    return 0


class _Parser(argparse.ArgumentParser):
    """Bad arguments end as a UsageError (exit 2) naming what to fix, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\nSee '{self.prog} --help'.")


def _add_connection_flags(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # The flags work before or after the command, as kubectl's do. On a subcommand they default to
    # SUPPRESS, so one left out there does not overwrite the value given before the command.
    unset = None if top else argparse.SUPPRESS
    parser.add_argument("--kubeconfig", default=unset, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    parser.add_argument("--context", default=unset, help="kubeconfig context to use")
    parser.add_argument(
        "--request-timeout",
        type=parse_duration,
        default=30.0 if top else argparse.SUPPRESS,
        metavar="DURATION",
        help="give up on one API request after this long (default 30s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kubectl polite", description="Operate PoliteTenants: keys, legal hold, health.")
    _add_connection_flags(parser, top=True)
    connection = _Parser(add_help=False)
    _add_connection_flags(connection, top=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    rotate = sub.add_parser("rotate-keys", parents=[connection], help="rotate a tenant's encryption keys")
    rotate.add_argument("name", type=tenant_name, metavar="NAME")
    rotate.add_argument("--wait", action="store_true", help="wait until status.keys.version increases")
    rotate.add_argument(
        "--timeout", type=parse_duration, default=300.0, metavar="DURATION", help="with --wait (default 5m)"
    )
    hold = sub.add_parser("legal-hold", parents=[connection], help="place (on) or lift (off) a tenant's legal hold")
    hold.add_argument("name", type=tenant_name, metavar="NAME")
    hold.add_argument("state", choices=("on", "off"), metavar="on|off")
    status = sub.add_parser("status", parents=[connection], help="a tenant's phase, conditions and latest Events")
    status.add_argument("name", type=tenant_name, metavar="NAME")
    status.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    status.add_argument("--events", type=event_count, default=10, metavar="N", help="latest Events shown (default 10)")
    status.add_argument(
        "--operator-namespace",
        default=OPERATOR_NAMESPACE,
        help="where the operator runs, searched for Events when listing them cluster-wide is not allowed",
    )
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError("name a command: rotate-keys, legal-hold or status\nSee 'kubectl polite --help'.")
        api = connect(args.kubeconfig, args.context, args.request_timeout)
        if args.command == "rotate-keys":
            return rotate_keys(api, args.name, wait=args.wait, timeout=args.timeout, out=out)
        if args.command == "legal-hold":
            return legal_hold(api, args.name, on=args.state == "on", out=out, err=err)
        return show_status(
            api, args.name, output=args.output, limit=args.events, operator_namespace=args.operator_namespace, out=out
        )
    except PluginError as exc:
        err.write(f"error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
