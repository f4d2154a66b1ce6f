"""The commands that deploy and operate the environment's stacks and databases: preview and up (in waves), what
waits for an operation (moves, moves --plan), the operator's Stack objects, db apply, migrate."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from tenancy.cli.common import (EXIT_FAIL, EXIT_INPUT, EXIT_OK, ROOT, build_engine, check_dsn, checked_catalog,
                                open_registry, redact, show_progress, to_json)
from tenancy.errors import TenancyError


def cmd_deploy(args) -> int:
    from tenancy.catalog import load_catalog
    from tenancy.lifecycle import deploy, waves

    catalog = load_catalog(args.tenants)
    parallel = args.parallel or (50 if args.engine == "operator" else 4)
    if parallel < 1:
        print("--parallel must be at least 1", file=sys.stderr)
        return EXIT_INPUT
    engine = build_engine(args)
    spec = gate = None
    if args.mode == "up":
        explicit = args.waves is not None
        spec = waves.load(args.waves if explicit else Path(args.tenants).resolve().parent / "rollout.yaml", args.env,
                          required=explicit)
        if args.pause is not None:
            spec = spec.model_copy(update={"pause_seconds": args.pause,
                                           "waves": tuple(w.model_copy(update={"pause_seconds": None}) for w in spec.waves)})
        if args.engine == "offline":   # nothing serves traffic in a dry run: the gate checks outputs only
            spec = spec.model_copy(update={"health": spec.health.model_copy(update={"endpoints": False})})
        if not args.no_health_gate:
            gate = waves.HealthGate(engine, spec.health, sleep=time.sleep)
    try:
        result = deploy.rollout(engine, catalog, args.env, mode=args.mode, tenants=args.tenant, stacks=args.stack,
                                changed_since=args.changed_since, parallel=parallel, allow_destroy=args.allow_destroy,
                                waves=spec, from_wave=getattr(args, "from_wave", 1), gate=gate)
    except deploy.NotDeployed as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.outside:
            print(f"deploy {'it' if len(exc.outside) == 1 else 'them'} first: {_first_command(args, exc.outside)}; then "
                  "run this command again", file=sys.stderr)
        else:
            print(f"start at that wave: {_resume_command(args, exc.from_wave)}", file=sys.stderr)
        return EXIT_INPUT
    outcomes = result.outcomes
    for o in outcomes:
        for line in o.lines():
            print(line)
    for p in result.pending:
        print(deploy.pending_line(p, args.env, _same_options(args)))
    if args.mode == "up" and any(o.status == "ok" for o in outcomes):
        try:
            registry = open_registry(args, engine, required=False)
            if registry is not None:
                from tenancy.lifecycle import record as rec
                from tenancy.operations.sync import sync
                synced = sync(registry, rec.read(engine, args.env), args.env, engine)
                print(f"registry: {synced['written']} tenant(s) recorded"
                      + (f", {synced['held']} held by an operation" if synced["held"] else ""))
        except TenancyError as exc:   # the stacks are deployed; the registry catches up with `tenancy registry sync`
            print(f"warning: the registry was not updated ({exc}); run `tenancy registry sync --env {args.env}`",
                  file=sys.stderr)
    bad = [o for o in outcomes if o.status in ("failed", "refused")]
    print(f"{len(outcomes)} stack(s): {sum(o.status == 'ok' for o in outcomes)} ok, "
          f"{sum(o.status == 'refused' for o in outcomes)} refused, {sum(o.status == 'failed' for o in outcomes)} failed, "
          f"{sum(o.status == 'skipped' for o in outcomes)} skipped; "
          f"{len(result.pending)} tenant(s) pending a lifecycle command")
    if result.halted:
        h = result.halted
        print(f"halted at wave {h.wave}/{len(result.waves)} '{h.name}': {h.reason}")
        print(f"to resume once it is fixed: {_resume_command(args, h.wave)}")
        return EXIT_FAIL
    return EXIT_FAIL if bad else EXIT_OK


def _first_command(args, stacks: list[str]) -> str:
    """The command that was run, for only `stacks` (what it selected and where it started are left out)."""
    import shlex

    out = _argv_without(args, {"--tenant", "--stack", "--changed-since", "--from-wave"})
    return shlex.join(["tenancy", *out, *[a for s in stacks for a in ("--stack", s)]])


def _argv_without(args, options: set[str]) -> list[str]:
    """The command line as run, without `options` (each with its value, `--opt V` or `--opt=V`)."""
    argv = list(getattr(args, "argv", None) or sys.argv[1:])
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in options:
            skip = True
            continue
        if a.split("=", 1)[0] in options and "=" in a:
            continue
        out.append(a)
    return out


def _resume_command(args, wave: int) -> str:
    """The command that was run, with --from-wave N (stacks already done are no-ops when run again)."""
    import shlex

    return shlex.join(["tenancy", *_argv_without(args, {"--from-wave"}), "--from-wave", str(wave)])


def _same_options(args) -> str:
    """The options a follow-up command needs to reach what this one reached: its catalogue, engine and state, and
    the registry it was given (a password in it redacted)."""
    import shlex

    out = []
    if args.tenants != "tenants.yaml":
        out += ["--tenants", args.tenants]
    if getattr(args, "engine", "auto") != "auto":
        out += ["--engine", args.engine]
        if args.engine == "offline":
            out += ["--state", args.state]
    if getattr(args, "registry", None):
        out += ["--registry", args.registry]
    return redact(shlex.join(out)) if out else ""


def cmd_moves(args) -> int:
    from dataclasses import asdict

    from tenancy.catalog import load_catalog
    from tenancy.lifecycle import deploy

    if args.plan or args.base_catalog or args.archive_stamp:
        return cmd_moves_plan(args)
    for dsn in args.dsn:
        check_dsn("--dsn", dsn)
    engine = build_engine(args)
    found = [asdict(p) for p in deploy.pending(engine, load_catalog(args.tenants), args.env)]
    registry = open_registry(args, engine, required=False)
    if registry is not None:
        for op in registry.unfinished():
            found.append({**op.to_json(), "kind": "operation", "operation_kind": op.kind})
    print(json.dumps(found, indent=1, ensure_ascii=False, default=str))
    if not args.dsn:
        return EXIT_OK
    from tenancy.lifecycle.online import leftovers, owned_names

    left = leftovers(args.dsn, owned_names(registry) if registry is not None else set())
    for server, o in left:
        print(f"leftover of an online move on {server}: {o}", file=sys.stderr)
    if left:
        print(f"{len(left)} leftover(s): finish or abort the operation that made them (`tenancy moves` lists the "
              "unfinished ones with their commands); for a move no one will resume, drop them "
              "(tenancy.stores.replication.cleanup)", file=sys.stderr)
    return EXIT_FAIL if left else EXIT_OK


def cmd_moves_plan(args) -> int:
    """`tenancy moves --plan moves.yaml`: the deploy job's steps (tenancy/delivery.py) as JSON; exit 1 when an item is
    refused (it is listed with why), 2 when the moves file or the catalogue is wrong."""
    from datetime import datetime, timezone

    from tenancy import delivery, naming
    from tenancy.catalog import load_catalog
    from tenancy.engine import EngineError
    from tenancy.errors import ConfigError
    from tenancy.lifecycle import record as rec

    if not args.plan:
        raise ConfigError("--base-catalog and --archive-stamp go with --plan FILE (the moves file)")
    if args.dsn:
        raise ConfigError("--plan takes no --dsn: it reads the registry's record of every database")
    stamp = args.archive_stamp or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}", stamp):
        raise ConfigError(f"--archive-stamp {stamp[:60]!r}: up to 40 letters, digits, '.', '_' or '-'")
    catalog = load_catalog(args.tenants)
    moves = delivery.load(args.plan)
    registry = None
    if args.base_catalog:
        facts = delivery.review_facts(args.env, load_catalog(args.base_catalog), args.tenants)
    else:
        engine = build_engine(args)
        try:
            outputs = engine.outputs(naming.stack_name(args.env))
        except EngineError:
            outputs = {}
        registry = open_registry(args, engine, required=False)
        facts = delivery.Facts(args.env, rec.read(engine, args.env), str(outputs.get("region") or ""),
                               delivery.registry_databases(registry) if registry is not None else {},
                               registry.unfinished() if registry is not None else None, args.tenants)
    deployed = facts.deployed.catalog
    moves.check(catalog, dict(deployed.plans) if deployed is not None else None)
    found = delivery.steps(catalog, moves, facts, stamp)
    if registry is None and not args.base_catalog:
        for s in found:
            if s.status == "run":
                s.status, s.message = "failed", (f"{s.message}; but the environment's registry is not reachable (no "
                                                 "--registry, no TENANCY_REGISTRY, no `registry` output of the global "
                                                 "stack): every operation takes the tenant's lease there")
    print(to_json({"environment": args.env, "moves_file": args.plan, "archive_stamp": stamp,
                   "steps": [s.to_json() for s in found]}))
    for s in found:
        if s.status == "failed":
            print(f"refused: {s.message}", file=sys.stderr)
    return EXIT_FAIL if any(s.status == "failed" for s in found) else EXIT_OK


def cmd_operator_manifests(args) -> int:
    import yaml

    from tenancy.catalog import load_catalog
    from tenancy.operator import schema
    from tenancy.operator.settings import OperatorSettings
    from tenancy.operator.stacks import fleet_objects, resolve_commit, tree_changes

    settings = OperatorSettings.load(args.env).require_rollout()
    commit = resolve_commit(args.commit)
    changed = tree_changes(commit)
    if changed:
        files = ", ".join(changed[:10]) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
        what = (f"the working tree differs from {args.commit} ({commit[:12]}) in {len(changed)} file(s): {files}; the "
                "objects would be rendered from the working tree but pin the commit")
        if not args.allow_dirty:
            print(f"error: {what}: commit the changes (and push them), or pass --allow-dirty", file=sys.stderr)
            return EXIT_INPUT
        print(f"warning: {what} (--allow-dirty)", file=sys.stderr)
    objects = fleet_objects(load_catalog(args.tenants), settings, commit)
    for obj in objects:
        if found := schema.problems(obj):
            print(f"error: Stack {obj['metadata']['name']}: {'; '.join(found)}", file=sys.stderr)
            return EXIT_FAIL
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
    print(f"{len(objects)} Stack object(s) at commit {commit[:12]}, each valid against the operator's CRD", file=sys.stderr)
    return EXIT_OK


def cmd_operator_prune(args) -> int:
    import shutil

    from tenancy.engine import AutomationEngine
    from tenancy.lifecycle import record as rec
    from tenancy.operator import engine as operator
    from tenancy.operator.stacks import fleet

    auto = AutomationEngine(ROOT, None) if shutil.which("pulumi") else None
    engine = operator.build(args.env, commit="HEAD", kube_context=args.kube_context, preview="stacks", state=".tenancy-state",
                            timeout=60.0, outputs_fallback=auto.outputs if auto else None, on_status=None)
    deployed = rec.read(engine, args.env)
    if deployed.catalog is None:
        raise rec.RecordError(f"environment '{args.env}' has no deployed record: nothing to compare Stack objects with")
    gone = engine.prune([s.stack for s in fleet(deployed.catalog, args.env)], dry_run=args.dry_run)
    for name, stack in gone:
        print(f"{'would delete' if args.dry_run else 'deleted'} Stack {name} ({stack})")
    if not gone:
        print("every Stack object belongs to a deployed stack")
    return EXIT_OK


def cmd_db_apply(args) -> int:
    from tenancy import db
    from tenancy.errors import ConfigError

    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if args.as_name is None:
        if not args.dsn:
            raise ConfigError("give the database's DSN, or --as NAME to apply to the database the registry records as NAME")
        check_dsn("DSN", args.dsn)
        applied = db.apply(args.dsn, progress=say)
        print(f"applied {', '.join(applied)}; isolation audit clean")
        return EXIT_OK
    from tenancy import registration

    target = registration.parse(args.as_name)
    if args.dsn:
        check_dsn("DSN", args.dsn)
    engine = build_engine(args)
    rows, source = registration.for_database(target, args.env, engine, lambda: checked_catalog(args), args.tenants)
    dsn = args.dsn or _recorded_dsn(args, engine, target.name)
    registration.check_database(dsn, args.env, target.name)
    applied = db.apply(dsn, progress=say, then=("the registration", registration.sql(target, args.env, rows)))
    names = ", ".join(f"{r.id} ({r.state})" for r in rows) or "none"
    print(f"applied {', '.join(applied)} to {db.describe_dsn(dsn)} in one transaction")
    print(f"{args.env}'s {target.name}: {len(rows)} tenant(s) registered, from {source}: {names}")
    print("isolation audit clean")
    return EXIT_OK


def _recorded_dsn(args, engine, name: str) -> str:
    from tenancy.errors import ConfigError
    from tenancy.operations.stores import Resolver

    registry = open_registry(args, engine)
    dsn = Resolver(registry).dsn(name, name)
    if dsn is None:
        raise ConfigError(f"the registry of {args.env} has no connection for database {name}: give its DSN, or record it "
                          f"first (`tenancy registry database {name} --dsn DSN --env {args.env}`)")
    return dsn


def cmd_migrate(args) -> int:
    from tenancy.operations import migrate

    engine = build_engine(args)
    if args.engine == "operator":
        from tenancy.errors import ConfigError
        raise ConfigError("`tenancy migrate` moves state through the Pulumi CLI: use --engine auto (or offline)")
    out = migrate.migrate(engine, args.env, say=show_progress, dry_run=args.dry_run)
    for stack, urns in sorted(out.plan.moves.items()):
        print(f"{stack}: {len(urns)} resource(s) {'would move' if args.dry_run else 'moved'}")
    if out.plan.count or not args.dry_run:
        print(f"global stack {args.env}: keeps {len(out.plan.kept)} resource(s)" if out.plan.count else
              f"environment '{args.env}' is a global stack with unit stacks")
    return EXIT_OK
