"""``polite-operator``: ``run`` the operator, ``render`` a tenant's children for review and GitOps,
print the ``crd``.

Bad input exits 2 with one line per problem, ``FILE: field.path: what is wrong`` (the camelCase
path of the YAML), so a platform engineer can fix the file without reading a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import ValidationError

from politetenant.operator.model.config import ConfigError, OperatorConfig, load_operator_config
from politetenant.operator.model.tenant import PoliteTenant
from politetenant.operator.render.summary import summarize, tracker_settings_yaml
from politetenant.operator.render.tenant import RenderError, render_tenant
from politetenant.regions import RegionName
from politetenant.settings import format_validation_error

EXIT_USAGE = 2


class TenantFileError(ValueError):
    """A tenant file that is not one valid PoliteTenant; the message names the file and the field."""


class _ReviewDumper(yaml.SafeDumper):
    """Multi-line strings (the settings file) as literal blocks, so a review reads them as files."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ReviewDumper.add_representer(str, _represent_str)


def dump_objects(objects: list[dict[str, Any]]) -> str:
    """The objects as one multi-document YAML stream, keys in the order they were rendered."""
    return yaml.dump_all(objects, Dumper=_ReviewDumper, sort_keys=False, allow_unicode=True, explicit_start=True)


def load_tenant(path: str) -> PoliteTenant:
    """Read one PoliteTenant from a YAML file (``-``: standard input)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TenantFileError(f"{path}: file not found") from None
    except OSError as exc:
        raise TenantFileError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise TenantFileError(f"{path}: not UTF-8 text") from None
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TenantFileError(f"{path}: not valid YAML{where}") from None
    if len(documents) != 1:
        raise TenantFileError(f"{path}: expected one PoliteTenant, found {len(documents)} YAML documents")
    if not isinstance(documents[0], dict):
        raise TenantFileError(f"{path}: expected a PoliteTenant object (a YAML mapping)")
    try:
        return PoliteTenant.model_validate(documents[0])
    except ValidationError as exc:
        raise TenantFileError(format_validation_error(exc, path)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polite-operator", description="The PoliteTenant operator.")
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="print every child object of a tenant as multi-document YAML")
    render.add_argument("-f", "--filename", required=True, help="PoliteTenant YAML file (- for standard input)")
    render.add_argument(
        "--config", help="operator configuration YAML (default: $POLITE_OPERATOR_CONFIG, else built-in defaults)"
    )
    render.add_argument(
        "--cnpg",
        action="store_true",
        help="render a CloudNativePG Cluster for tenants that name no database engine, as when its CRD exists",
    )
    view = render.add_mutually_exclusive_group()
    view.add_argument("--summary", action="store_true", help="one line per object with its key facts, not YAML")
    view.add_argument(
        "--tracker-settings", action="store_true", help="only the TrackerSettings file the tenant's tracker reads"
    )
    sub.add_parser("crd", help="print the PoliteTenant CustomResourceDefinition")
    _add_run(sub)
    return parser


def _add_run(sub: Any) -> None:
    run = sub.add_parser("run", help="run the operator (kopf) against the cluster of KUBECONFIG or in-cluster")
    run.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="watch tenants cluster-wide (always so: PoliteTenants are cluster-scoped; accepted for clarity)",
    )
    peering = run.add_mutually_exclusive_group()
    peering.add_argument(
        "--peering", metavar="NAME", help="ClusterKopfPeering shared by replicas: one works, the others stand by"
    )
    peering.add_argument("--standalone", action="store_true", help="no peering: this process is the only operator")
    run.add_argument("--liveness", metavar="URL", help="serve kopf's health probe, e.g. http://0.0.0.0:8080/healthz")
    run.add_argument(
        "--config", help="operator configuration YAML (default: $POLITE_OPERATOR_CONFIG, else built-in defaults)"
    )
    run.add_argument(
        "--metrics-port", type=_port, default=9090, metavar="N", help="Prometheus metrics port (0: off; default 9090)"
    )
    run.add_argument(
        "--served-regions", metavar="A,B", help="regions this operator provisions, overriding the configuration"
    )
    run.add_argument(
        "--resync-seconds",
        type=_positive,
        default=60.0,
        metavar="S",
        help="how often every tenant is checked for drift (default 60)",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0 to 65535)")
    return port


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0")
    return value


def _fail(message: str) -> int:
    for line in message.splitlines():
        print(line, file=sys.stderr)
    return EXIT_USAGE


def _render(args: argparse.Namespace) -> int:
    try:
        config = load_operator_config(args.config, os.environ)
        tenant = load_tenant(args.filename)
        result = render_tenant(tenant, config, cnpg_available=args.cnpg)
    except (ConfigError, TenantFileError) as exc:
        return _fail(str(exc))
    except RenderError as exc:
        return _fail("\n".join(f"{args.filename}: {line}" for line in str(exc).splitlines()))
    if result.skipped_reason is not None:
        print(f"{args.filename}: tenant {tenant.name} not rendered: {result.skipped_reason}", file=sys.stderr)
        return 0
    if args.summary:
        print(f"tenant {tenant.name}: {len(result.objects)} objects", flush=True)
        for obj in result.objects:
            print("  " + summarize(obj))
        for secret in result.secrets:
            print(
                f"  {'Secret':<22} {tenant.namespace + '/' + secret.name:<40} created once at reconcile, never rendered"
            )
        return 0
    if args.tracker_settings:
        sys.stdout.write(tracker_settings_yaml(result.objects))
        return 0
    sys.stdout.write(dump_objects(result.objects))
    return 0


def _crd() -> int:
    from politetenant.operator.model.crd import crd_yaml  # written beside the model; only this verb needs it

    sys.stdout.write(crd_yaml())
    return 0


def served_regions(config: OperatorConfig, text: str) -> OperatorConfig:
    """``config`` serving the comma-separated regions of ``--served-regions`` instead of its own."""
    regions = [part.strip() for part in text.split(",") if part.strip()]
    known = get_args(RegionName)
    unknown = [region for region in regions if region not in known]
    if unknown or not regions:
        what = f"unknown region {', '.join(unknown)}" if unknown else "no region named"
        raise ConfigError(f"--served-regions: {what} (known: {', '.join(known)})")
    try:
        return OperatorConfig.model_validate({**config.model_dump(), "served_regions": regions})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "--served-regions")) from None


def _run(args: argparse.Namespace) -> int:
    try:
        config = load_operator_config(args.config, os.environ)
        if args.served_regions is not None:
            config = served_regions(config, args.served_regions)
    except ConfigError as exc:
        return _fail(str(exc))
    import kopf  # only this verb needs kopf, the cluster client and the handlers

    from politetenant.operator.runtime.handlers import RunOptions, build_registry
    from politetenant.operator.runtime.settings import peering_priority

    kopf.configure(verbose=args.verbose)
    options = RunOptions(config, metrics_port=args.metrics_port, resync_seconds=args.resync_seconds)
    kopf.run(
        registry=build_registry(options),
        clusterwide=True,
        peering_name=args.peering,
        standalone=True if args.standalone else None,
        priority=peering_priority(),
        liveness_endpoint=args.liveness,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    if args.command == "render":
        return _render(args)
    if args.command == "crd":
        return _crd()
    return _fail(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
