"""What every step of an online move shares: the move's object names (from its operation id), its errors,
autocommit connections, the tables it replicates and the checks on them, and what exists of it on both sides
(state row, publication, slot, subscription).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tenancy.naming import DATABASE_USERS
from tenancy.stores import postgres as pg
from tenancy.stores.postgres import DataError, isolated_tables


Checkpoint = Callable[[str], None]
PREFIX = "tmove_"
# tmove_<16 hex>; the second form is how moves named their objects before operation ids (tenant and a hash),
# still recognised so that what such a move left behind is reported.
NAME_RE = re.compile(r"^tmove_(?:[0-9a-f]{16}|[a-z0-9_]+_[0-9a-f]{10})$")
_, _, REPLICATION_USER = DATABASE_USERS   # owner, runtime, replication
SECRET_SETTING = "tenancy.move_secret"       # the password, in the startup packet of the connection that uses it
VERIFIER_SETTING = "tenancy.move_verifier"   # its SCRAM verifier, likewise
SYNC_SLOT_RE = re.compile(r"^pg_(\d+)_sync_\d+_\d+$")


class ReplicationError(DataError):
    pass


class ReplicaIdentityError(ReplicationError):
    exit_code = 2


class SyncTimeout(ReplicationError):
    pass


@dataclass(frozen=True)
class MoveNames:
    """Publication, subscription and slot share one name (they live in different catalogs)."""

    base: str

    @property
    def publication(self) -> str:
        return self.base

    @property
    def subscription(self) -> str:
        return self.base

    @property
    def slot(self) -> str:
        return self.base


@dataclass(frozen=True)
class Orphan:
    kind: str        # slot | publication | subscription | trigger | login
    name: str
    database: str
    detail: str

    def __str__(self) -> str:
        where = f" in database {self.database}" if self.database else ""   # roles belong to the server
        return f"{self.kind} {self.name}{where}: {self.detail}"


def database_of(dsn: str) -> str:
    """host:port/dbname of a DSN: identifies a database without its user or password."""
    try:
        d = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ReplicationError(f"invalid connection string: {str(exc).splitlines()[0]}") from None
    return f"{d.get('host', '')}:{d.get('port', '5432')}/{d.get('dbname', d.get('user', ''))}"


def names(move: str) -> MoveNames:
    """`tmove_<16 hex digits of the operation id's SHA-256>`: the caller's operation id (one per PostgreSQL pair:
    a move and its way back are two operations) is opaque here and may name the tenant; the name does not."""
    if not isinstance(move, str) or not move.strip():
        raise ReplicationError("an online move needs its operation id (move=...): its objects are named after it")
    return MoveNames(PREFIX + hashlib.sha256(move.encode()).hexdigest()[:16])


def connect_autocommit(dsn: str, **settings: str) -> psycopg.Connection:
    """An autocommit connection; `settings` become session settings given in the startup packet (how a secret
    reaches the server without being part of any statement)."""
    try:
        if settings:
            given = conninfo_to_dict(dsn).get("options") or ""
            extra = " ".join(f"-c {k}={v}" for k, v in settings.items())
            return psycopg.connect(dsn, autocommit=True, options=f"{given} {extra}".strip())
        return psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        raise ReplicationError(f"cannot connect: {str(exc).strip()}") from None


def as_error(exc: psycopg.Error, doing: str) -> ReplicationError:
    return ReplicationError(f"{doing}: {str(exc).strip().splitlines()[0]}")


# --- tables ---------------------------------------------------------------------------------------------

def pick_tables(conn: psycopg.Connection, wanted: list[str] | None) -> list[str]:
    """The isolated tables (format('%I.%I') names, parents first), or those of them the caller named. Only
    names from this list are ever put into SQL text (`table_ident`)."""
    found = isolated_tables(conn)
    if not wanted:
        return found
    bad = [t for t in wanted if t not in found]
    if bad:
        raise ReplicationError(f"{', '.join(bad)}: not isolated tables of the source (isolated: {', '.join(found)})")
    return [t for t in found if t in wanted]


def table_ident(table: str) -> sql.Composable:
    return sql.SQL(table)  # a format('%I.%I') name checked by pick_tables


def reset_sequences(conn: psycopg.Connection, table: str, tenant: str) -> None:
    """Sequences are not replicated: the target's identity/serial sequences move past the tenant's values."""
    pg.advance_sequences(conn, table, tenant)


# --- checks ---------------------------------------------------------------------------------------------

def replica_identity_problems(conn: psycopg.Connection, tables: Iterable[str]) -> list[str]:
    """One message per table whose replica identity does not include tenant_id."""
    problems = []
    for table in tables:
        ident, cols = conn.execute(
            "SELECT c.relreplident, (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_index i "
            "  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) "
            "  WHERE i.indrelid = c.oid AND CASE c.relreplident WHEN 'd' THEN i.indisprimary ELSE i.indisreplident END) "
            "FROM pg_class c WHERE c.oid = %s::regclass", (table,)).fetchone()
        if ident == "f":
            continue
        if cols and "tenant_id" in cols:
            continue
        what = {"n": "REPLICA IDENTITY NOTHING", "d": f"primary key ({', '.join(cols)})" if cols else "no primary key",
                "i": f"index on ({', '.join(cols or [])})"}[ident]
        problems.append(
            f"table {table} cannot be moved online: its replica identity ({what}) does not include tenant_id, and a "
            f"publication filtering on tenant_id with UPDATE/DELETE published may only use replica-identity columns "
            f"(the table's updates would fail for every tenant). Fix: make the primary key include tenant_id, or "
            f"ALTER TABLE {table} REPLICA IDENTITY USING INDEX <a unique index on (tenant_id, ...)>")
    return problems


def subscriber_conninfo(conninfo: str) -> str:
    """How the target's server reaches the source, without any password: each move sets tenancy_replication's
    own (a password given here would be a standing credential, and it would land in the subscription's
    CREATE statement). The user must be tenancy_replication: the move changes that role's password and login."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        raise ReplicationError("the replication connection string is not valid libpq syntax") from None
    user = params.get("user") or REPLICATION_USER
    if user != REPLICATION_USER:
        raise ReplicationError(f"the replication connection string's user is {user}: online moves connect as "
                               f"{REPLICATION_USER}, whose password and login each move sets itself")
    params = {k: v for k, v in params.items() if k not in ("password", "passfile")}
    params["user"] = user
    return make_conninfo(**params)


def check_replication_role(src: psycopg.Connection, conninfo: str, tables: list[str]) -> None:
    user = conninfo_to_dict(subscriber_conninfo(conninfo))["user"]
    row = src.execute("SELECT rolsuper, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = %s",
                      (user,)).fetchone()
    if row is None:
        raise ReplicationError(f"the replication role {user} does not exist on the source (apply the tenancy SQL)")
    sup, repl, bypass = row
    if sup:
        raise ReplicationError(f"the replication role {user} is a superuser: a move gives it a login for its duration "
                               f"only, which must not be a superuser's (ALTER ROLE {user} NOSUPERUSER)")
    if not repl:
        raise ReplicationError(f"the replication role {user} lacks REPLICATION: ALTER ROLE {user} REPLICATION")
    if not bypass:
        raise ReplicationError(f"the replication role {user} lacks BYPASSRLS: row-level security would let the initial "
                               f"copy see zero rows and report success (ALTER ROLE {user} BYPASSRLS)")
    for t in tables:
        if not src.execute("SELECT has_table_privilege(%s, %s, 'SELECT')", (user, t)).fetchone()[0]:
            raise ReplicationError(f"the replication role {user} cannot read {t}: run SELECT tenancy.isolate('{t}')")
    # PostgreSQL 15 lets only a superuser change a REPLICATION role; Cloud SQL lets a cloudsqlsuperuser member do it.
    if not src.execute("SELECT rolsuper OR (rolcreaterole AND CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = "
                       "'cloudsqlsuperuser') THEN pg_has_role(current_user, 'cloudsqlsuperuser', 'MEMBER') ELSE false "
                       "END) FROM pg_roles WHERE rolname = current_user").fetchone()[0]:
        me = src.execute("SELECT current_user").fetchone()[0]
        raise ReplicationError(f"the source connection's role {me} cannot set {user}'s password and login, which an "
                               "online move does for its duration: connect as a superuser (on Cloud SQL: a "
                               "cloudsqlsuperuser with CREATEROLE)")


def tenant_rows(conn: psycopg.Connection, tenant: str, tables: list[str]) -> int:
    total = 0
    for t in tables:
        total += conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s").format(table_ident(t)),
                              (tenant,)).fetchone()[0]
    return total


def registry_state(conn: psycopg.Connection, tenant: str) -> str | None:
    row = conn.execute("SELECT state FROM tenancy.tenants WHERE id = %s", (tenant,)).fetchone()
    return row[0] if row else None


# --- what exists ----------------------------------------------------------------------------------------

def move_notes(src: psycopg.Connection, n: MoveNames) -> dict | None:
    """The move's notes (its tenancy.replication_moves row: registry states before the move, pre-verification,
    the switched summary), or None when there are none -- nor a publication: both come and go together."""
    row = src.execute("SELECT note FROM tenancy.replication_moves WHERE move = %s", (n.base,)).fetchone() \
        if has_state_table(src) else None
    return dict(row[0]) if row else None


def has_state_table(conn: psycopg.Connection) -> bool:
    return bool(conn.execute("SELECT to_regclass('tenancy.replication_moves') IS NOT NULL").fetchone()[0])


def has_publication(src: psycopg.Connection, n: MoveNames) -> bool:
    return src.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (n.publication,)).fetchone() is not None


def slot_of(src: psycopg.Connection, n: MoveNames) -> tuple | None:
    return src.execute("SELECT active_pid, confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %s",
                       (n.slot,)).fetchone()


def subscription_of(dst: psycopg.Connection, n: MoveNames) -> tuple | None:
    """(oid, enabled, slot name) of the move's subscription in the target database."""
    return dst.execute("SELECT oid, subenabled, subslotname FROM pg_subscription WHERE subname = %s "
                       "AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
                       (n.subscription,)).fetchone()


def status(source_dsn: str, target_dsn: str, tenant: str, *, move: str) -> dict:
    """What exists of the move: for `tenancy moves` and for people reading a stuck move."""
    n = names(move)
    with connect_autocommit(source_dsn) as src, connect_autocommit(target_dsn) as dst:
        sub = subscription_of(dst, n)
        rels = dst.execute("SELECT srrelid::regclass::text, srsubstate FROM pg_subscription_rel WHERE srsubid = %s "
                           "ORDER BY 1", (sub[0],)).fetchall() if sub else []
        return {"name": n.base, "publication": move_notes(src, n) is not None, "slot": slot_of(src, n) is not None,
                "subscription": sub is not None, "tables": dict(rels),
                "source_state": registry_state(src, tenant), "target_state": registry_state(dst, tenant)}


def wait_confirmed(src: psycopg.Connection, n: MoveNames, lsn: str, timeout: float, tenant: str, after: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        row = src.execute("SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
                          (lsn, n.slot)).fetchone()
        if row is None:
            raise ReplicationError(f"slot {n.slot} is gone: the move of '{tenant}' cannot catch up; abort it")
        if row[0]:
            return
        if time.monotonic() >= deadline:
            raise ReplicationError(f"the target did not confirm the source's changes of '{tenant}' up to {lsn} within "
                                   f"{timeout:g}s ({after})")
        time.sleep(0.005)


def is_switched(source_state: str | None, target_state: str | None) -> bool:
    """During a move the target is frozen until the switch flips it, so an active target beside a source that
    does not take writes means the tenant already lives at the target."""
    return target_state == "active" and source_state in ("frozen", "readonly")
