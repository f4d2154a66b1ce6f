"""The commands on the environment's registry of record: init, database, sync, show."""

from __future__ import annotations

import json
import os
import re

from tenancy.cli.common import EXIT_OK, build_engine, check_dsn, open_registry


def cmd_registry_init(args) -> int:
    from tenancy.errors import ConfigError
    from tenancy.operations.registry import Registry

    dsn = args.registry or os.environ.get("TENANCY_REGISTRY")
    if not dsn:
        raise ConfigError("give --registry DSN (or set TENANCY_REGISTRY): the database to hold the registry")
    check_dsn("--registry", dsn)
    reg = Registry.init(dsn, args.env)
    print(f"registry of environment '{args.env}' ready at {reg.describe()}")
    return EXIT_OK


def cmd_registry_database(args) -> int:
    from tenancy.errors import ConfigError
    from tenancy.operations.stores import connection_record

    if not re.fullmatch(r"pool-[1-9][0-9]*|[a-z0-9]([a-z0-9-]*[a-z0-9])?/postgres-[1-9]", args.name):
        raise ConfigError(f"database name '{args.name[:60]}': use pool-N or <tenant>/postgres-N, as the data layout names "
                          "a tenant's databases")
    if args.dsn:
        check_dsn("--dsn", args.dsn)
        try:
            connection = connection_record(args.dsn)
        except ValueError:
            raise ConfigError("--dsn holds a password: the registry never keeps one; give it through PGPASSFILE, "
                              "PGPASSWORD or IAM authentication, and the DSN without it") from None
    else:
        if not args.dbname:
            raise ConfigError("--instance needs --dbname (and usually --user)")
        connection = {"instance": args.instance, "dbname": args.dbname, **({"user": args.user} if args.user else {})}
    unit = args.name if args.name.startswith("pool-") else f"tenant:{args.name.split('/')[0]}"
    reg = open_registry(args)
    reg.set_database(args.name, unit, connection)
    print(f"database {args.name} ({unit}) recorded in the registry of '{args.env}'")
    return EXIT_OK


def cmd_registry_sync(args) -> int:
    from tenancy.lifecycle import record as rec
    from tenancy.operations.sync import sync

    engine = build_engine(args)
    reg = open_registry(args, engine)
    out = sync(reg, rec.read(engine, args.env), args.env, engine)
    print(f"registry of '{args.env}': {out['written']} tenant(s) and {out['databases']} database(s) recorded"
          + (f", {out['held']} held by an operation (left to it)" if out["held"] else ""))
    return EXIT_OK


def cmd_registry_show(args) -> int:
    reg = open_registry(args)
    out: dict = {"environment": args.env}
    if args.tenant:
        row = reg.tenant(args.tenant)
        out["tenant"] = row.__dict__ if row else None
        out["operations"] = [op.to_json() for op in reg.history(args.tenant)]
    else:
        out["tenants"] = [r.__dict__ for r in reg.tenants(args.state)]
        out["databases"] = [{k: v for k, v in d.__dict__.items()} for d in reg.databases()]
        out["unfinished"] = [op.to_json() for op in reg.unfinished()]
    print(json.dumps(out, indent=1, ensure_ascii=False, default=str))
    return EXIT_OK
