"""The commands that operate on one tenant's data under the operation protocol (lease, journal, resumable, --abort):
upgrade, suspend and resume, offboard, restore, place, and the building blocks of a tier move on any PostgreSQL
(data move, verify, export)."""

from __future__ import annotations

import json
import re
import sys

from tenancy.cli.common import (EXIT_FAIL, EXIT_INPUT, EXIT_OK, build_engine, build_reach, check_dsn, command_line,
                                db_overrides, operation_context, print_outcome, show_progress, table_list)


def cmd_upgrade(args) -> int:
    from tenancy.catalog import Model, load_catalog
    from tenancy.errors import ConfigError
    from tenancy.operations import tier_move

    catalog = load_catalog(args.tenants)
    if args.to_plan not in catalog.plans:
        raise ConfigError(f"unknown plan '{args.to_plan}'; plans: {', '.join(sorted(catalog.plans))}")
    for option, dsn in (("--source-dsn", args.source_dsn), ("--target-dsn", args.target_dsn)):
        if dsn:
            check_dsn(option, dsn)
    replication = _replication_dsns(args.replication_dsn)
    # Towards a pooled plan the rows come from the tenant's databases into the pool; otherwise the reverse.
    to_pool = catalog.plans[args.to_plan].model is Model.POOLED
    pooled_dsn, tenant_dsn = (args.target_dsn, args.source_dsn) if to_pool else (args.source_dsn, args.target_dsn)
    reach = build_reach(args, {k: v for k, v in (("pooled", pooled_dsn), ("postgres-1", tenant_dsn)) if v})
    for kind in sorted(reach.skip):
        show_progress(f"warning: --skip {kind}: this move does not carry the tenant's {kind}; move it yourself")
    discard = _stores(args.discard)
    if args.export_to and args.abort:
        raise ConfigError("--abort takes no --export-to: it removes what the unfinished move created")
    _archive_arg("--export-to", args.export_to)
    engine = build_engine(args)
    ctx = operation_context(args, engine)
    out = tier_move.upgrade(ctx, catalog, args.tenant, args.to_plan, reach=reach, keep_source_days=args.keep_source,
                            abort=args.abort, take_over=args.take_over, allow_destroy=args.allow_destroy, discard=discard,
                            export_to=args.export_to, method=args.method, replication=replication,
                            command=command_line(args))
    d = out.detail
    freeze = f"; write freeze {d['freeze_seconds']:.2f}s" if d.get("freeze_seconds") is not None else ""
    line = (f"{out.operation}: {out.status}; phases run: {', '.join(out.phases_run) or 'none'}; {d.get('rows', 0)} rows "
            f"copied{freeze}"
            + "".join(f"; {k}: " + ", ".join(f"{n} {w}" for w, n in v.items() if w != "verified")
                      for k, v in (d.get("copied") or {}).items() if "rows" not in v)
            + (f"; {out.message}" if out.message else ""))
    code = print_outcome(out, line, args.json)
    if d.get("catalog_line") and not args.json:
        print(d["catalog_line"])
    return code


def _replication_dsns(items: list[str]) -> dict[str, str]:
    from tenancy.errors import ConfigError

    out = {}
    for item in items:
        name, sep, dsn = item.partition("=")
        if not sep or not re.fullmatch(r"pooled|postgres-[1-9]", name) or not dsn:
            raise ConfigError(f"--replication-dsn {name}=...: give STORE=DSN with STORE pooled or postgres-N")
        check_dsn(f"--replication-dsn {name}", dsn)
        out[name] = dsn
    return out


def _stores(values: list[str]) -> frozenset[str]:
    from tenancy.errors import ConfigError
    from tenancy.lifecycle.destroy import STORES

    out = set()
    for v in values:
        for s in v.split(","):
            if s not in STORES:
                raise ConfigError(f"--discard {s}: not a store; use one of {', '.join(STORES)}")
            out.add(s)
    return frozenset(out)


def _archive_arg(option: str, value: str | None) -> None:
    """A gs:// archive location must name a bucket and a prefix of its own (bad input: exit 2)."""
    from tenancy.errors import ConfigError
    from tenancy.lifecycle import archives

    if archives.is_bucket(value):
        try:
            archives.parse(value)
        except archives.ArchiveError as exc:
            raise ConfigError(f"{option} {exc}") from None


def cmd_suspend(args) -> int:
    from tenancy.catalog import load_catalog
    from tenancy.lifecycle.tenant_data import Reach
    from tenancy.operations import suspend

    dsns = db_overrides(args.dbs)
    if args.pooled_dsn:
        check_dsn("--pooled-dsn", args.pooled_dsn)
        dsns["pooled"] = args.pooled_dsn
    catalog = load_catalog(args.tenants)
    engine = build_engine(args)
    out = suspend.set_state(operation_context(args, engine), catalog, args.tenant, resume=args.resume, reach=Reach(dsns),
                            take_over=args.take_over, command=command_line(args))
    line = (f"tenant '{args.tenant}' {'resumed: its databases accept its writes again' if args.resume else 'suspended: its databases refuse its writes'}"
            f" ({out.operation})")
    return print_outcome(out, line, args.json)


def cmd_offboard(args) -> int:
    from tenancy.catalog import Model, load_catalog
    from tenancy.errors import ConfigError
    from tenancy.operations import offboard

    if args.no_export and args.export_to:
        print("--no-export and --export-to contradict each other", file=sys.stderr)
        return EXIT_INPUT
    discard = _stores(args.discard)
    if args.no_export and args.yes:
        from tenancy.lifecycle.destroy import STORES
        discard = frozenset(STORES)
    if args.source_dsn:
        check_dsn("--source-dsn", args.source_dsn)
    if args.abort and (args.export_to or args.no_export):
        raise ConfigError("--abort takes no --export-to or --no-export: it undoes what the unfinished offboarding did")
    _archive_arg("--export-to", args.export_to)
    catalog = load_catalog(args.tenants)
    engine = build_engine(args)
    ctx = operation_context(args, engine)
    overrides = {}
    if args.source_dsn:
        from tenancy.lifecycle import record as rec
        deployed = rec.read(engine, args.env)
        pooled = deployed.knows(args.tenant) and deployed.catalog.tenant(args.tenant).model is Model.POOLED
        overrides["pooled" if pooled else "postgres-1"] = args.source_dsn
    out = offboard.offboard(ctx, catalog, args.tenant, export_to=args.export_to, reach=build_reach(args, overrides),
                            discard=discard, yes=args.yes and args.no_export, abort=args.abort, take_over=args.take_over,
                            command=command_line(args), restore_check=not args.no_restore_check)
    if out.status in ("nothing to abort",) and not args.json:
        print(out.message)
        return EXIT_OK
    print(json.dumps({"tenant": args.tenant, **out.to_json()}, indent=1, ensure_ascii=False, default=str))
    return EXIT_OK


def cmd_restore(args) -> int:
    from tenancy.catalog import load_catalog
    from tenancy.errors import ConfigError
    from tenancy.operations import restore

    if not args.source and not args.abort:
        raise ConfigError(f"give the archive to restore '{args.tenant}' from: --from DIR or --from gs://BUCKET/PREFIX")
    _archive_arg("--from", args.source)
    reach = build_reach(args, {})
    catalog = load_catalog(args.tenants)
    engine = build_engine(args)
    out = restore.restore(operation_context(args, engine), catalog, args.tenant, source=args.source, reach=reach,
                          abort=args.abort, take_over=args.take_over, command=command_line(args))
    if out.status == "nothing to abort" and not args.json:
        print(out.message)
        return EXIT_OK
    print(json.dumps({"tenant": args.tenant, **out.to_json()}, indent=1, ensure_ascii=False, default=str))
    return EXIT_OK


def cmd_place(args) -> int:
    from tenancy.catalog import load_catalog
    from tenancy.lifecycle import record as rec
    from tenancy.operations import place

    catalog = load_catalog(args.tenants)
    engine = build_engine(args)
    for option, dsn in (("--source-dsn", args.source_dsn), ("--target-dsn", args.target_dsn)):
        if dsn:
            check_dsn(option, dsn)
    overrides = {}
    if args.source_dsn or args.target_dsn:
        from tenancy.fleet import capacity
        from tenancy.fleet.placement import place as placed
        deployed = rec.read(engine, args.env)
        if deployed.knows(args.tenant):
            now = placed(deployed.catalog, capacity.load(args.env)).tenants[args.tenant]
            if args.source_dsn and now.pool_shard:
                overrides[now.pool_shard] = args.source_dsn
        if args.target_dsn and args.pool_shard:
            overrides[args.pool_shard] = args.target_dsn
    reach = build_reach(args, overrides)
    from tenancy.operations.relocate import resolve
    now, target = resolve(catalog, rec.read(engine, args.env), args.env, args.tenant, cell=args.cell,
                          pool_shard=args.pool_shard, data_project=args.data_project)
    if now == target and not args.abort:
        print(f"tenant '{args.tenant}' is already in {target.describe()}; nothing to do")
        return EXIT_OK
    ctx = operation_context(args, engine)
    out = place.place(ctx, catalog, args.tenant, cell=args.cell, pool_shard=args.pool_shard,
                      data_project=args.data_project, reach=reach, abort=args.abort, take_over=args.take_over,
                      command=command_line(args))
    if out.status != "done" or args.json:
        return print_outcome(out, out.message or f"{out.operation}: {out.status}", args.json)
    was = ", ".join(out.detail["from"].values()) or "nowhere"
    now = ", ".join(out.detail["to"].values())
    print(f"tenant '{args.tenant}' moved from {was} to {now} with its data ({out.operation})")
    return EXIT_OK


def cmd_data_move(args) -> int:
    from tenancy.operations import data_move

    for option, dsn in (("--source", args.source), ("--target", args.target)):
        check_dsn(option, dsn)
    ctx = operation_context(args, None)
    out = data_move.move(ctx, args.tenant, args.source, args.target, delete_source=args.delete_source,
                         replace=args.replace, tables=table_list(args.tables), target_state=args.state,
                         abort=args.abort, take_over=args.take_over, command=command_line(args))
    if out.status != "done" or args.json:
        return print_outcome(out, out.message or f"{out.operation}: {out.status}", args.json)
    d = out.detail
    seconds = d.get("seconds") or 0.0
    replaced = f"; replaced {d['replaced_rows']} rows the target held" if d.get("replaced_rows") else ""
    print(f"moved {d['total_rows']} rows of '{args.tenant}' ({len(d['tables'])} tables), verified, in {seconds:.2f}s "
          f"({d['total_rows'] / max(seconds, 1e-9):,.0f} rows/s){replaced}"
          f"{'; source rows deleted' if d.get('deleted_source') else '; source rows kept'} ({out.operation})")
    return EXIT_OK


def cmd_data_verify(args) -> int:
    from tenancy.stores import postgres as data

    checks = data.verify(args.source, args.target, args.tenant, tables=table_list(args.tables))
    for c in checks:
        if c.ok:
            print(f"{c.table}: {c.source_rows} rows, checksums match")
        else:
            print(f"{c.table}: DIFFERS: source {c.source_rows} rows {c.source_checksum}, target {c.target_rows} rows {c.target_checksum}")
    return EXIT_OK if all(c.ok for c in checks) else EXIT_FAIL


def cmd_data_export(args) -> int:
    from tenancy.stores import postgres as data

    manifest = data.export(args.source, args.tenant, args.out, progress=show_progress, tables=table_list(args.tables))
    total = sum(t["rows"] for t in manifest["tables"].values())
    print(f"exported {total} rows of '{args.tenant}' in {len(manifest['tables'])} tables to {args.out} (manifest.json), "
          "files re-read and checked against the database")
    return EXIT_OK
