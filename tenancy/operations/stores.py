"""How an operation reaches a tenant's PostgreSQL stores, and what it checks of each before it changes anything.

A store is found by its name in the data layout ("pooled", "postgres-1"), whose database the registry names
(`TenantStores.database`: "pool-1", "acme/postgres-1"). Its connection comes from, in order: an override given
on the command line (`--db NAME=DSN`, by database or store name: for local and test use), or the registry's
record of that database -- a host and port, or a Cloud SQL instance reached through the Cloud SQL Auth Proxy's
socket directory (`TENANCY_CLOUDSQL_DIR`, default /cloudsql) -- with the credentials libpq finds (IAM through
the proxy, PGPASSFILE, PGPASSWORD). An operator who types no DSN cannot type a wrong one.

Every database an operation will touch is inspected before the first change (`inspect`, `check`): that it
answers; that it is the one the registry names (its identity marker `tenancy.database_identity`, and the
server's system identifier, database oid and name pinned in the registry at the first verified contact); that
a source holds the tenant; that a target of the tenant's own holds no other tenant; and that no two databases
of the operation are one database spelled two ways -- in particular no target is a source.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tenancy.db import describe_dsn
from tenancy.operations.registry import Registry

PROXY_DIR_ENV = "TENANCY_CLOUDSQL_DIR"
DEFAULT_PROXY_DIR = "/cloudsql"


def connection_dsn(connection: Mapping[str, Any]) -> str:
    """A libpq DSN from a registry connection record (never holding a password)."""
    params = {k: str(v) for k, v in connection.items() if k in ("host", "port", "dbname", "user", "sslmode")}
    if "instance" in connection:
        params["host"] = f"{os.environ.get(PROXY_DIR_ENV, DEFAULT_PROXY_DIR).rstrip('/')}/{connection['instance']}"
    return make_conninfo(**params)


def connection_record(dsn: str) -> dict[str, Any]:
    """What the registry keeps of a DSN: where and as whom, never the password (refused if the DSN has one)."""
    params = conninfo_to_dict(dsn)
    if params.get("password"):
        raise ValueError("password")
    return {k: (int(v) if k == "port" and str(v).isdigit() else v) for k, v in params.items()
            if k in ("host", "port", "dbname", "user", "sslmode")}


@dataclass(frozen=True)
class Database:
    """One PostgreSQL database an operation touches."""

    store: str                 # the layout's store name: "pooled", "postgres-1"
    name: str                  # the registry's name of the database: "pool-1", "acme/postgres-1"
    unit: str                  # what it serves: "pool-1", "tenant:acme"
    role: str                  # "source" or "target"
    dsn: str | None            # None: not reachable by this run (no override, no registry record)

    def describe(self) -> str:
        return f"{self.store} ({self.role}, {self.name}{', ' + describe_dsn(self.dsn) if self.dsn else ''})"


class Resolver:
    """DSNs of databases: overrides first (by database name, then store name), then the registry's record."""

    def __init__(self, registry: Registry | None, overrides: Mapping[str, str] | None = None):
        self.registry = registry
        self.overrides = dict(overrides or {})

    def dsn(self, name: str, store: str) -> str | None:
        for key in (name, store):
            if self.overrides.get(key):
                return self.overrides[key]
        if self.registry is not None:
            row = self.registry.database(name)
            if row is not None and row.connection:
                return connection_dsn(row.connection)
        return None

    def database(self, stores, store: str, role: str) -> Database:
        name, unit = stores.database(store)
        return Database(store, name, unit, role, self.dsn(name, store))


@dataclass
class Seen:
    """What a database turned out to be when inspected."""

    identity: tuple[str, int, str] | None = None     # (server system identifier, database oid, database name)
    marker: tuple[str, str] | None = None            # (environment, name) of tenancy.database_identity
    registered: dict[str, str] = field(default_factory=dict)   # tenant id -> state in its tenancy.tenants
    schema: bool = False                             # has the tenancy SQL
    error: str | None = None


def inspect(dsn: str) -> Seen:
    """Identity, marker and registered tenants of one database (read only)."""
    from tenancy.stores.postgres import CONNECT_TIMEOUT_S, first_line

    seen = Seen()
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        seen.error = "malformed DSN (not shown: it may hold a password)"
        return seen
    try:
        extra = {} if "connect_timeout" in params else {"connect_timeout": CONNECT_TIMEOUT_S}
        with psycopg.connect(dsn, autocommit=True, **extra) as c:
            sysid, oid, datname = c.execute(
                "SELECT (SELECT system_identifier FROM pg_control_system())::text, d.oid::bigint, d.datname "
                "FROM pg_database d WHERE d.datname = current_database()").fetchone()
            seen.identity = (sysid, int(oid), datname)
            seen.schema = bool(c.execute("SELECT to_regclass('tenancy.tenants') IS NOT NULL").fetchone()[0])
            if seen.schema:
                seen.registered = dict(c.execute("SELECT id, state FROM tenancy.tenants").fetchall())
                if c.execute("SELECT to_regclass('tenancy.database_identity') IS NOT NULL").fetchone()[0]:
                    row = c.execute("SELECT environment, name FROM tenancy.database_identity").fetchone()
                    seen.marker = (row[0], row[1]) if row else None
    except psycopg.Error as exc:
        seen.error = f"cannot connect or read it: {first_line(exc)}"
    return seen


def claim(dsn: str, env: str, name: str) -> None:
    """Mark a database as the registry's `name` in `env`, once (a database already marked keeps its marker)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("INSERT INTO tenancy.database_identity (environment, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                  (env, name))


@dataclass
class Checked:
    """The outcome of `check`: every problem found, and what each database is."""

    problems: list[str] = field(default_factory=list)
    seen: dict[str, Seen] = field(default_factory=dict)      # database name -> what it is

    def identity(self, name: str) -> tuple[str, int, str] | None:
        s = self.seen.get(name)
        return s.identity if s else None


def check(databases: list[Database], tenant: str, env: str, registry: Registry | None, *,
          ours: Mapping[str, str] | None = None, fresh_targets: bool = True,
          expected: Mapping[str, tuple[str, int, str]] | None = None, holding: bool = True) -> Checked:
    """Check every database of an operation before it changes anything; every problem is named, in one run.

    `ours`: database name -> the state this operation itself registered the tenant in there (a resumed run);
    `fresh_targets`: a target may still lack the tenancy SQL (provisioning applies it); `expected`: identities
    recorded when the operation started (a resumed run must reach the very same databases); `holding`: a source
    must hold the tenant (a resumed run may have emptied it already: it is known by its recorded identity)."""
    out = Checked()
    ours = dict(ours or {})
    by_name: dict[str, Database] = {}
    for d in databases:
        by_name.setdefault(d.name, d)
    for d in by_name.values():
        where = d.describe()
        if d.dsn is None:
            out.problems.append(f"{d.store} ({d.role}, {d.name}): this run cannot reach it: the registry has no connection "
                                f"for database {d.name} (`tenancy registry database {d.name} --dsn DSN`), and no --db "
                                f"{d.store}=DSN was given")
            continue
        seen = inspect(d.dsn)
        out.seen[d.name] = seen
        if seen.error:
            out.problems.append(f"{where}: {seen.error}")
            continue
        if seen.marker is not None and seen.marker != (env, d.name):
            out.problems.append(f"{where}: this is {seen.marker[0]}'s database {seen.marker[1]}, not {env}'s {d.name}")
            continue
        pinned = registry.database(d.name).pinned if registry is not None and registry.database(d.name) else None
        if pinned is not None and pinned != seen.identity:
            out.problems.append(f"{where}: not the database the registry knows as {d.name} (server {pinned[0]}, database "
                                f"{pinned[2]} oid {pinned[1]}; this one is server {seen.identity[0]}, database "
                                f"{seen.identity[2]} oid {seen.identity[1]})")
            continue
        if expected and d.name in expected and tuple(expected[d.name]) != seen.identity:
            out.problems.append(f"{where}: not the database this operation started with (it reached server "
                                f"{expected[d.name][0]}, database {expected[d.name][2]}); give the same database")
            continue
        state = seen.registered.get(tenant)
        if d.role == "source":
            if not seen.schema:
                out.problems.append(f"{where}: has no tenancy SQL, so it holds no tenant's rows: not the database of "
                                    f"'{tenant}'")
            elif state is None and holding:
                out.problems.append(f"{where}: does not hold tenant '{tenant}' (not registered in its tenancy.tenants)")
        else:
            if not seen.schema and not fresh_targets:
                out.problems.append(f"{where}: has no tenancy SQL")
            others = sorted(t for t in seen.registered if t != tenant)
            if d.unit.startswith("tenant:") and others:
                out.problems.append(f"{where}: holds other tenants ({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}"
                                    f"): not a database of '{tenant}''s own")
            if state is not None and d.name not in ours:
                out.problems.append(f"{where}: already holds tenant '{tenant}' (state {state}), registered by no unfinished "
                                    "operation of it: an earlier copy? Remove it (`tenancy data verify` / the database's "
                                    "owner) or give an empty database")
    # One database spelled two ways: every name must be a database of its own, and no target a source.
    names_of: dict[tuple[str, int, str], list[str]] = {}
    for name, seen in out.seen.items():
        if seen.identity is not None:
            names_of.setdefault(seen.identity, []).append(name)
    for identity, names in names_of.items():
        if len(names) > 1:
            roles = {by_name[n].role for n in names}
            what = "a target is also a source" if roles == {"source", "target"} else "they are one database"
            out.problems.append(f"{' and '.join(by_name[n].describe() for n in sorted(names))} reach the same database "
                                f"(server {identity[0]}, database {identity[2]} oid {identity[1]}): {what}")
    return out
