"""What the commands share: exit codes, JSON and an operation's outcome as they are printed, DSN checks, the
redaction of passwords, and how a command reaches its environment (engine, registry, the catalogue checked against
the environment, a tenant's stores)."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from tenancy.errors import CatalogError

EXIT_OK, EXIT_FAIL, EXIT_INPUT = 0, 1, 2
# The project: the Automation API runs its stack programs and its policy pack from here.
ROOT = Path(__file__).resolve().parent.parent.parent


def to_json(value, indent: int | None = 1, **kw) -> str:
    """JSON as the command line prints it: non-ASCII kept readable (`→`, names in any script), not `\\u2192`."""
    return json.dumps(value, indent=indent, ensure_ascii=False, **kw)


def redact(text: str) -> str:
    """`text` with the password of a libpq string (`password=...`) or of a URL (`://user:...@`) shown as ***: for
    what is printed or recorded."""
    return re.sub(r"(password\s*=\s*)\S+|(://[^:/@\s]+:)[^@\s]+@", lambda m: (m.group(1) or m.group(2)) + "***"
                  + ("" if m.group(1) else "@"), text)


def check_dsn(option: str, dsn: str) -> None:
    """A DSN given as `option` parses as libpq's; the error never shows it (it may hold a password)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    from tenancy.errors import ConfigError
    try:
        conninfo_to_dict(dsn)
    except ProgrammingError:
        raise ConfigError(f"{option}: not a libpq connection string (key=value ... or postgresql://...); not shown, it "
                          "may hold a password") from None


def checked_catalog(args, deployed: bool = False):
    """(the catalogue of --tenants, its placement), checked against --env's platform config and capacity: every
    problem of the file and of its fit to the environment in one CatalogError (exit 2, one line each, in the order
    of their lines). `deployed`: with the placements of --deployed-record (pins and capacity are checked around
    them)."""
    from tenancy.fleet.placement import fit
    from tenancy.catalog import load_catalog, ordered

    problems = []
    try:
        catalog = load_catalog(args.tenants)
    except CatalogError as exc:
        if exc.partial is None:
            raise
        catalog, problems = exc.partial, list(exc.problems)
    if deployed:
        catalog = with_deployed(catalog, args)
    placed, more = fit(catalog, args.env)
    problems += more
    if problems:
        raise CatalogError(ordered(problems, args.tenants))
    return catalog, placed


def with_deployed(catalog, args):
    """The catalogue with the deployed placements of --deployed-record (unchanged without it)."""
    if not getattr(args, "deployed_record", None):
        return catalog
    import dataclasses

    from tenancy.fleet import capacity, placement

    project = capacity.load(args.env).platform_project
    return dataclasses.replace(catalog, placements=placement.record_placements(args.deployed_record, catalog, project))


def table_list(values: list[str] | None) -> list[str] | None:
    """The tables of repeated or comma-separated --table options; None (every isolated table) without any."""
    return None if not values else [t.strip() for v in values for t in v.split(",") if t.strip()]


def build_engine(args):
    """The engine --engine names: offline (a state directory), the Automation API (the Pulumi CLI), or the Pulumi
    Kubernetes Operator (falling back on the Automation API for outputs when the CLI is there)."""
    import shutil

    from tenancy.engine import AutomationEngine, OfflineEngine

    if args.engine == "offline":
        return OfflineEngine(args.state, args.env)
    auto = None
    if shutil.which("pulumi") is not None:
        auto = AutomationEngine(ROOT, ROOT / args.policy_pack,
                                on_output=lambda stack, line: print(f"[{stack}] {line.rstrip()}", file=sys.stderr))
    if args.engine == "operator":
        from tenancy.operator import engine as operator

        return operator.build(args.env, commit=args.commit, kube_context=args.kube_context, preview=args.operator_preview,
                              state=args.state, timeout=args.timeout, outputs_fallback=auto.outputs if auto else None,
                              on_status=lambda stack, msg: print(f"[{stack}] {msg}", file=sys.stderr, flush=True))
    if auto is None:
        from tenancy.errors import ConfigError
        raise ConfigError("the Pulumi CLI is not on PATH; install it, or use --engine offline --state DIR for a dry run")
    return auto


def open_registry(args, engine=None, required: bool = True):
    """The environment's registry: --registry, $TENANCY_REGISTRY, or the global stack's registry instance through the
    Cloud SQL Auth Proxy. None when none is configured and `required` is False."""
    from tenancy.errors import ConfigError
    from tenancy.operations.registry import Registry

    dsn = getattr(args, "registry", None) or os.environ.get("TENANCY_REGISTRY")
    if not dsn and engine is not None:
        dsn = registry_from_outputs(engine, args.env)
    if not dsn:
        if not required:
            return None
        raise ConfigError("this command needs the environment's registry: give --registry DSN or set TENANCY_REGISTRY "
                          "(for a deployed environment: the global stack's registry instance, reached through the Cloud "
                          f"SQL Auth Proxy); create one with `tenancy registry init --env {args.env} --registry DSN`")
    check_dsn("--registry", dsn)
    return Registry.open(dsn, args.env)


def registry_from_outputs(engine, env: str) -> str | None:
    """The registry instance the global stack exports (`registry`: connection name, database, user), through the
    Cloud SQL Auth Proxy's socket directory."""
    from tenancy import naming
    from tenancy.engine import EngineError
    from tenancy.operations.stores import connection_dsn

    try:
        found = engine.outputs(naming.stack_name(env)).get("registry")
    except EngineError:
        return None
    if not isinstance(found, dict) or not found.get("connectionName"):
        return None
    return connection_dsn({"instance": found["connectionName"], "dbname": found.get("database", "tenancy_registry"),
                           **({"user": found["user"]} if found.get("user") else {})})


def operation_context(args, engine):
    """What an operation runs with: the environment, its registry (required), the engine, progress on stderr."""
    from tenancy.operations.protocol import Context

    return Context(args.env, open_registry(args, engine), engine, say=show_progress)


def command_line(args, drop: tuple[str, ...] = ("--abort", "--take-over")) -> str:
    """The command that was run, as it resumes the operation: passwords in it redacted (it is recorded)."""
    import shlex

    argv = [a for a in (getattr(args, "argv", None) or sys.argv[1:]) if a not in drop]
    return redact(shlex.join(["tenancy", *argv]))


def print_outcome(out, line: str, as_json: bool = False) -> int:
    """An operation's outcome: as JSON, its message when there was nothing to do, else the command's `line`."""
    if as_json:
        print(json.dumps(out.to_json(), indent=1, ensure_ascii=False, default=str))
        return EXIT_OK
    if out.status in ("nothing to do", "nothing to abort"):
        print(out.message)
        return EXIT_OK
    print(line)
    return EXIT_OK


def show_progress(msg: str) -> None:
    """A progress line on stderr, at once (stdout holds the command's result)."""
    print(msg, file=sys.stderr, flush=True)


def build_reach(args, dsns: dict[str, str]):
    """How an operation reaches a tenant's stores: `dsns` with the --db overrides, --objects-root, --kubeconfig for
    the graph's Jobs, and the store kinds --skip leaves where they are."""
    from tenancy.errors import ConfigError
    from tenancy.lifecycle.tenant_data import KINDS, Reach

    for name, dsn in db_overrides(args.dbs).items():
        dsns.setdefault(name, dsn)
    skip = set()
    for v in args.skip:
        for k in v.split(","):
            if k not in KINDS or k == "postgres":
                raise ConfigError(f"--skip {k}: not a store kind; use objects, firestore or graph")
            skip.add(k)
    runner = None
    if args.kubeconfig:
        from tenancy.stores.graph import KubernetesJobRunner
        try:
            text = Path(args.kubeconfig).read_text()
        except OSError as exc:
            raise ConfigError(f"--kubeconfig {args.kubeconfig}: {exc.strerror or exc}; give the path of a kubeconfig "
                              "file (the tenant stack's `kubeconfig` output saved to a file)") from None
        runner = KubernetesJobRunner(text)
    return Reach(dsns, args.objects_root, runner, frozenset(skip))


def db_overrides(items: list[str]) -> dict[str, str]:
    """--db NAME=DSN options by NAME, each checked (bad input: one line, exit 2)."""
    from tenancy.errors import ConfigError

    out = {}
    for item in items:
        name, sep, dsn = item.partition("=")
        if not sep or not dsn or not re.fullmatch(r"pooled|postgres-[1-9]|pool-[1-9][0-9]*|[a-z0-9-]+/postgres-[1-9]", name):
            raise ConfigError(f"--db {item.split('=', 1)[0]}=...: give NAME=DSN with NAME postgres-N, pooled, pool-N or "
                              "<tenant>/postgres-N")
        check_dsn(f"--db {name}", dsn)
        out[name] = dsn
    return out
