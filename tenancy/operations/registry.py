"""The registry of record of one environment (sql/registry/001_registry.sql): tenants, the databases their stores
live in, and every operation on tenant data with its journal, cleanup records and lease.

Every method opens a short transaction of its own, except those a `Lease` runs on its held session (see
tenancy/operations/lease.py). Fleet-wide questions are one query: `unfinished()`, `tenants(state=...)`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import psycopg
from psycopg.conninfo import conninfo_to_dict

from tenancy.db import describe_dsn
from tenancy.errors import ConfigError, TenancyError

SQL_DIR = Path(__file__).resolve().parents[2] / "sql" / "registry"
OPEN = ("running", "waiting")


class RegistryError(TenancyError):
    exit_code = 1


@dataclass(frozen=True)
class TenantRow:
    id: str
    plan: str
    model: str
    state: str
    directory: dict[str, Any]
    stores: dict[str, Any]
    operation: str | None


@dataclass(frozen=True)
class DatabaseRow:
    name: str
    unit: str
    connection: dict[str, Any]
    source: str
    system_identifier: str | None
    database_oid: int | None
    datname: str | None

    @property
    def pinned(self) -> tuple[str, int, str] | None:
        if self.system_identifier is None:
            return None
        return self.system_identifier, int(self.database_oid or 0), self.datname or ""


@dataclass
class OperationRow:
    id: str
    tenant: str
    kind: str
    args: dict[str, Any]
    settings: dict[str, Any]
    command: str
    abort_command: str | None
    status: str
    phase: str | None
    message: str | None
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    holder: dict[str, Any] = field(default_factory=dict)
    lease_taken_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {"operation": self.id, "tenant": self.tenant, "kind": self.kind, "status": self.status,
                "phase": self.phase, "args": self.args, "started_at": self.started_at.isoformat(),
                "updated_at": self.updated_at.isoformat(), "resume": self.command, "abort": self.abort_command,
                "holder": self.holder or None, "message": self.message}


@dataclass(frozen=True)
class CleanupRecord:
    operation: str
    seq: int
    kind: str
    ref: dict[str, Any]
    policy: str
    done: bool


_OP_COLUMNS = ("o.id, o.tenant_id, o.kind, o.args, o.settings, o.command, o.abort_command, o.status, o.phase, o.message, "
               "o.started_at, o.updated_at, o.finished_at, l.holder, l.taken_at")


def _op(row) -> OperationRow:
    return OperationRow(*row[:13], holder=row[13] or {}, lease_taken_at=row[14])


class Registry:
    """One environment's registry, reached through `dsn` (its owner role)."""

    def __init__(self, dsn: str, env: str):
        self.dsn, self.env = dsn, env

    # ------------------------------------------------------------------------------------------ connection

    def connect(self, autocommit: bool = False) -> psycopg.Connection:
        try:
            params = conninfo_to_dict(self.dsn)
        except psycopg.Error:
            raise ConfigError("the registry's DSN is malformed (not shown: it may hold a password); give a libpq "
                              "'key=value ...' string or a postgresql:// URI") from None
        extra = {} if "connect_timeout" in params else {"connect_timeout": 10}
        try:
            return psycopg.connect(self.dsn, autocommit=autocommit, **extra)
        except psycopg.Error as exc:
            from tenancy.stores.postgres import first_line
            raise RegistryError(f"cannot reach the registry {describe_dsn(self.dsn)}: {first_line(exc)}; check "
                                "--registry / TENANCY_REGISTRY and that the server is running") from None

    def describe(self) -> str:
        return describe_dsn(self.dsn)

    @classmethod
    def open(cls, dsn: str, env: str) -> "Registry":
        """The registry of `env`; refuses one without the registry schema, or one that serves another environment."""
        reg = cls(dsn, env)
        with reg.connect() as c:
            if not c.execute("SELECT to_regclass('registry.environment') IS NOT NULL").fetchone()[0]:
                raise ConfigError(f"{reg.describe()} holds no registry: run `tenancy registry init --env {env}` "
                                  "against it first")
            row = c.execute("SELECT env FROM registry.environment").fetchone()
        if row is None:
            raise ConfigError(f"the registry at {reg.describe()} serves no environment yet: run `tenancy registry init "
                              f"--env {env}`")
        if row[0] != env:
            raise ConfigError(f"the registry at {reg.describe()} is environment '{row[0]}''s, not '{env}''s: check "
                              "--registry / TENANCY_REGISTRY and --env; nothing was changed")
        return reg

    @classmethod
    def init(cls, dsn: str, env: str) -> "Registry":
        """Apply the registry SQL (idempotent) and claim the database for `env` (refused if it serves another)."""
        reg = cls(dsn, env)
        files = sorted(SQL_DIR.glob("*.sql"))
        with reg.connect() as c:
            with c.transaction():
                for f in files:
                    c.execute(f.read_text())
                row = c.execute("SELECT env FROM registry.environment").fetchone()
                if row is not None and row[0] != env:
                    raise ConfigError(f"{reg.describe()} is already environment '{row[0]}''s registry; nothing was changed")
                if row is None:
                    c.execute("INSERT INTO registry.environment (env) VALUES (%s)", (env,))
        return reg

    # ---------------------------------------------------------------------------------------------- tenants

    def tenant(self, tenant_id: str) -> TenantRow | None:
        with self.connect() as c:
            row = c.execute("SELECT id, plan, model, state, directory, stores, operation FROM registry.tenants WHERE id = %s",
                            (tenant_id,)).fetchone()
        return TenantRow(*row) if row else None

    def tenants(self, state: str | None = None) -> list[TenantRow]:
        q = "SELECT id, plan, model, state, directory, stores, operation FROM registry.tenants"
        with self.connect() as c:
            rows = c.execute(q + (" WHERE state = %s" if state else "") + " ORDER BY id", (state,) if state else ()).fetchall()
        return [TenantRow(*r) for r in rows]

    def put_tenant(self, conn: psycopg.Connection, tenant_id: str, *, plan: str, model: str, state: str,
                   directory: dict | None = None, stores: dict | None = None, operation: str | None = None) -> None:
        """Insert or replace a tenant's row inside the caller's transaction."""
        conn.execute("INSERT INTO registry.tenants (id, plan, model, state, directory, stores, operation) "
                     "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET plan = excluded.plan, "
                     "model = excluded.model, state = excluded.state, directory = excluded.directory, "
                     "stores = excluded.stores, operation = excluded.operation, updated_at = now()",
                     (tenant_id, plan, model, state, json.dumps(directory or {}), json.dumps(stores or {}), operation))

    # -------------------------------------------------------------------------------------------- databases

    def database(self, name: str) -> DatabaseRow | None:
        with self.connect() as c:
            row = c.execute("SELECT name, unit, connection, source, system_identifier, database_oid, datname "
                            "FROM registry.databases WHERE name = %s", (name,)).fetchone()
        return DatabaseRow(*row) if row else None

    def databases(self) -> list[DatabaseRow]:
        with self.connect() as c:
            rows = c.execute("SELECT name, unit, connection, source, system_identifier, database_oid, datname "
                             "FROM registry.databases ORDER BY name").fetchall()
        return [DatabaseRow(*r) for r in rows]

    def set_database(self, name: str, unit: str, connection: dict[str, Any], source: str = "operator") -> None:
        """Record how to reach a database (a connection that differs from the pinned one unpins it)."""
        if "password" in connection:
            raise ConfigError(f"database {name}: the registry never holds a password; give it through PGPASSWORD, "
                              "PGPASSFILE or IAM authentication")
        with self.connect() as c:
            # A deploy ('deploy') never overwrites what an operator recorded by hand ('operator') -- a row `pin`
            # made for a database reached through an override records no connection, and is filled in; a changed
            # connection unpins the database (the next verified contact pins it again).
            c.execute("INSERT INTO registry.databases (name, unit, connection, source) VALUES (%s, %s, %s, %s) "
                      "ON CONFLICT (name) DO UPDATE SET unit = excluded.unit, connection = excluded.connection, "
                      "source = excluded.source, updated_at = now(), "
                      "system_identifier = CASE WHEN registry.databases.connection = excluded.connection THEN "
                      "registry.databases.system_identifier END, "
                      "database_oid = CASE WHEN registry.databases.connection = excluded.connection THEN "
                      "registry.databases.database_oid END, "
                      "datname = CASE WHEN registry.databases.connection = excluded.connection THEN "
                      "registry.databases.datname END "
                      "WHERE registry.databases.source = 'deploy' OR excluded.source = 'operator' "
                      "OR registry.databases.connection = '{}'::jsonb",
                      (name, unit, json.dumps(connection), source))
            c.commit()

    def pin(self, name: str, unit: str, identity: tuple[str, int, str]) -> None:
        """Pin a database's identity (server system identifier, database oid and name) at its first verified
        contact; later contacts must reach the same database."""
        with self.connect() as c:
            c.execute("INSERT INTO registry.databases (name, unit, connection, source) VALUES (%s, %s, '{}', 'operator') "
                      "ON CONFLICT (name) DO NOTHING", (name, unit))
            c.execute("UPDATE registry.databases SET system_identifier = %s, database_oid = %s, datname = %s, "
                      "pinned_at = now() WHERE name = %s AND system_identifier IS NULL", (*identity, name))
            c.commit()

    def unpin(self, name: str) -> None:
        """Forget a database's pinned identity: the database it named is gone (destroyed with its tenant stack),
        and the next verified contact pins the one that now bears the name."""
        with self.connect() as c:
            c.execute("UPDATE registry.databases SET system_identifier = NULL, database_oid = NULL, datname = NULL, "
                      "pinned_at = NULL WHERE name = %s", (name,))
            c.commit()

    # ------------------------------------------------------------------------------------------- operations

    def operation(self, op_id: str) -> OperationRow | None:
        with self.connect() as c:
            row = c.execute(f"SELECT {_OP_COLUMNS} FROM registry.operations o LEFT JOIN registry.leases l "
                            "ON l.operation = o.id WHERE o.id = %s", (op_id,)).fetchone()
        return _op(row) if row else None

    def open_operation(self, tenant_id: str, conn: psycopg.Connection | None = None) -> OperationRow | None:
        """The tenant's unfinished operation (the one holding its lease)."""
        q = (f"SELECT {_OP_COLUMNS} FROM registry.leases l JOIN registry.operations o ON o.id = l.operation "
             "WHERE l.tenant_id = %s")
        if conn is not None:
            row = conn.execute(q, (tenant_id,)).fetchone()
        else:
            with self.connect() as c:
                row = c.execute(q, (tenant_id,)).fetchone()
        return _op(row) if row else None

    def unfinished(self) -> list[OperationRow]:
        """Every operation not done or aborted, with its lease's holder."""
        with self.connect() as c:
            rows = c.execute(f"SELECT {_OP_COLUMNS} FROM registry.operations o LEFT JOIN registry.leases l ON "
                             "l.operation = o.id WHERE o.status IN ('running', 'waiting') ORDER BY o.started_at").fetchall()
        return [_op(r) for r in rows]

    def history(self, tenant_id: str) -> list[OperationRow]:
        with self.connect() as c:
            rows = c.execute(f"SELECT {_OP_COLUMNS} FROM registry.operations o LEFT JOIN registry.leases l ON "
                             "l.operation = o.id WHERE o.tenant_id = %s ORDER BY o.started_at", (tenant_id,)).fetchall()
        return [_op(r) for r in rows]

    # ---------------------------------------------------------------------------------------------- journal

    def journal(self, op_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(phase, event, detail) of every entry of the operation, in order."""
        with self.connect() as c:
            return [tuple(r) for r in c.execute("SELECT phase, event, detail FROM registry.journal WHERE operation = %s "
                                                "ORDER BY seq", (op_id,)).fetchall()]

    def cleanup_records(self, op_id: str) -> list[CleanupRecord]:
        with self.connect() as c:
            rows = c.execute("SELECT operation, seq, kind, ref, policy, done_at IS NOT NULL FROM registry.cleanup "
                             "WHERE operation = %s ORDER BY seq", (op_id,)).fetchall()
        return [CleanupRecord(*r) for r in rows]


def phases_done(entries: list[tuple[str, str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """phase -> detail of its 'done' entry (merged with the progress recorded while it ran)."""
    out: dict[str, dict[str, Any]] = {}
    progress: dict[str, dict[str, Any]] = {}
    for phase, event, detail in entries:
        if event == "progress":
            progress.setdefault(phase, {}).update(detail)
        elif event == "done":
            out[phase] = {**progress.get(phase, {}), **detail}
    return out


def progress_of(entries: list[tuple[str, str, dict[str, Any]]], phase: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p, event, detail in entries:
        if p == phase and event == "progress":
            out.update(detail)
    return out


def iter_json(rows) -> Iterator[dict]:
    for r in rows:
        yield r if isinstance(r, dict) else json.loads(r)
