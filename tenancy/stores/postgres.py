"""The PostgreSQL store: one tenant's rows in a database carrying the tenancy SQL.

Only one tenant's rows are ever read or written: every statement runs with the tenant set through
`tenancy.set_tenant` (row-level security filters the rest, even for the owner role) and names the tenant.

- Tables are the database's `tenancy.isolated_tables`, known by oid and named from pg_namespace/pg_class
  (`app."Trips"`, `"my.schema"."select"`), copied parents first (foreign-key order); a caller may pick some.
- Rows travel as binary COPY streams, source to target, never row by row; the whole copy is one target
  transaction, so a kill leaves the target as it was.
- Summaries count rows and take an ordered checksum (md5 over the rows' md5s, primary-key order, else the
  row's text) over `ROW(columns by name)::text`, with the output settings pinned in the transaction, so any
  column type (json, bytea, arrays, timestamptz, floats) sums the same way in two databases.
- A copy (`copy_verified`) is one target transaction: the rows streamed in and verified against the source's
  snapshot of them, or nothing; source and target being one database is refused. The operation that runs it
  (tenancy/operations) journals it, freezes first (`freeze_in`, the one freeze) and deletes the source's rows
  (`delete`) only while they still match what was verified.

Connect as the owner role (`tenancy_owner`) or a superuser: the owner may write a frozen tenant's rows.
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import psycopg
from psycopg import sql

from tenancy.db import describe_dsn
from tenancy.stores import (Mismatch, Progress, StoreError, Summary, combine, file_sha256, private_export_dir, private_file,
                            write_manifest)

FREEZE_TIMEOUT_S = 30
CONNECT_TIMEOUT_S = 10
# Pinned in every reading transaction: row text (checksums, CSV exports) then does not depend on the session.
STABLE_OUTPUT = {"TimeZone": "UTC", "DateStyle": "ISO, YMD", "IntervalStyle": "postgres",
                 "extra_float_digits": "1", "bytea_output": "hex"}


class DataError(StoreError):
    exit_code = 1


class DataInputError(DataError):
    """The command was given something unusable (a malformed DSN, one database twice, an unknown table)."""

    exit_code = 2


class VerificationError(DataError, Mismatch):
    pass


@dataclass
class TableCheck:
    table: str
    source_rows: int
    target_rows: int
    source_checksum: str
    target_checksum: str

    @property
    def ok(self) -> bool:
        return self.source_rows == self.target_rows and self.source_checksum == self.target_checksum


@dataclass
class MoveReport:
    tenant: str
    tables: list[str]
    rows: dict[str, int] = field(default_factory=dict)
    checks: list[TableCheck] = field(default_factory=list)
    copy_seconds: float = 0.0
    verify_seconds: float = 0.0
    deleted_source: bool = False
    move_id: str = ""
    status: str = "moved"          # moved | already completed
    message: str = ""
    replaced_rows: int = 0

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


@dataclass(frozen=True)
class Table:
    """An isolated table as the catalog knows it: never a name split on '.'."""

    oid: int
    schema: str
    name: str
    qualified: str                  # format('%I.%I'): the name callers see and pass
    columns: tuple[str, ...]        # copied columns (generated ones are recomputed by the target)
    collatable: frozenset[str]
    key: tuple[str, ...]            # primary key; empty when there is none

    @property
    def ident(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.name)

    @property
    def filename(self) -> str:
        return quote(self.qualified, safe="._-") + ".csv"


# ---------------------------------------------------------------------------------------------- connections

def first_line(exc: BaseException) -> str:
    import re

    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    text = re.sub(r"^connection (failed|is bad): ", "", text)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", text)


def _parse(dsn: str) -> dict:
    from psycopg.conninfo import conninfo_to_dict

    try:
        return conninfo_to_dict(dsn)
    except psycopg.Error:
        raise DataInputError("malformed DSN (not shown: it may hold a password); give a libpq 'key=value ...' string "
                             "or a postgresql:// URI") from None


def connect(dsn: str, tenant: str | None = None) -> psycopg.Connection:
    """A connection (not autocommit); failures become one line naming the database, never the password."""
    params = _parse(dsn)
    extra = {} if "connect_timeout" in params else {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        return psycopg.connect(dsn, autocommit=False, **extra)
    except psycopg.Error as exc:
        who = f" for tenant '{tenant}'" if tenant else ""
        raise DataError(f"cannot connect to database {describe_dsn(dsn)}{who}: {first_line(exc)}; check the host, port, "
                        "user and credentials (PGPASSWORD/PGPASSFILE) and that the server is running") from None


@contextmanager
def _errors(tenant: str, dsn: str, doing: str) -> Iterator[None]:
    """Turns any database error inside into one line: tenant, database, what failed, what to do."""
    try:
        yield
    except (DataError, Mismatch):
        raise
    except psycopg.errors.LockNotAvailable:
        raise DataError(f"tenant '{tenant}': {doing} on database {describe_dsn(dsn)} waited too long for a lock: a "
                        "transaction that wrote the tenant is still open; find it in pg_stat_activity, then run the same "
                        "command again") from None
    except psycopg.errors.InsufficientPrivilege as exc:
        raise DataError(f"tenant '{tenant}': {doing} on database {describe_dsn(dsn)}: {first_line(exc)}; connect as the "
                        "owner role (tenancy_owner) or a superuser") from None
    except psycopg.Error as exc:
        raise DataError(f"tenant '{tenant}': {doing} on database {describe_dsn(dsn)} failed: {first_line(exc)}; nothing "
                        "of this step was committed; fix the cause and run the same command again") from None


def _require_schema(conn: psycopg.Connection, dsn: str) -> None:
    row = conn.execute("SELECT to_regnamespace('tenancy') IS NOT NULL, to_regclass('tenancy.isolated_tables') IS NOT NULL"
                       ).fetchone()
    conn.rollback()
    if not (row[0] and row[1]):
        raise DataError(f"database {describe_dsn(dsn)} has no tenancy schema: run `tenancy db apply DSN` first")


@contextmanager
def _open(dsn: str, tenant: str, doing: str) -> Iterator[psycopg.Connection]:
    conn = connect(dsn, tenant)
    try:
        with _errors(tenant, dsn, doing):
            _require_schema(conn, dsn)
            yield conn
    finally:
        conn.close()


def _identity(conn: psycopg.Connection) -> tuple[int, int]:
    """(cluster system identifier, database oid): equal for two DSNs exactly when they reach one database."""
    row = conn.execute("SELECT (SELECT system_identifier FROM pg_control_system()), "
                       "(SELECT oid FROM pg_database WHERE datname = current_database())").fetchone()
    conn.rollback()
    return int(row[0]), int(row[1])


def as_tenant(conn: psycopg.Connection, tenant: str) -> None:
    """Inside the current transaction only: the tenant (through tenancy.set_tenant, the only way that counts)
    and the output settings that checksums and exports rely on."""
    conn.execute(sql.SQL("SELECT {}").format(sql.SQL(", ").join(
        sql.SQL("set_config({}, {}, true)").format(sql.Literal(k), sql.Literal(v)) for k, v in STABLE_OUTPUT.items())))
    if conn.execute("SELECT 1 FROM tenancy.tenants WHERE id = %s", (tenant,)).fetchone():
        conn.execute("SELECT tenancy.set_tenant(%s)", (tenant,))


def _registered(conn: psycopg.Connection, tenant: str) -> str | None:
    row = conn.execute("SELECT state FROM tenancy.tenants WHERE id = %s", (tenant,)).fetchone()
    return row[0] if row else None


# ---------------------------------------------------------------------------------------------------- tables

def all_tables(conn: psycopg.Connection) -> list[Table]:
    """Every isolated table, parents before children (foreign keys among them define the order)."""
    rels = conn.execute("SELECT c.oid, n.nspname, c.relname, format('%I.%I', n.nspname, c.relname) "
                        "FROM tenancy.isolated_tables i JOIN pg_class c ON c.oid = i.table_name "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace").fetchall()
    cols: dict[int, list[tuple[str, bool]]] = {}
    for relid, name, collatable in conn.execute(
            "SELECT attrelid, attname, attcollation <> 0 FROM pg_attribute WHERE attrelid IN "
            "(SELECT table_name FROM tenancy.isolated_tables) AND attnum > 0 AND NOT attisdropped AND attgenerated = '' "
            "ORDER BY attrelid, attnum").fetchall():
        cols.setdefault(relid, []).append((name, collatable))
    keys: dict[int, list[str]] = {}
    for relid, name in conn.execute(
            "SELECT i.indrelid, a.attname FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n) ON true "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum WHERE i.indisprimary AND i.indrelid IN "
            "(SELECT table_name FROM tenancy.isolated_tables) ORDER BY i.indrelid, k.n").fetchall():
        keys.setdefault(relid, []).append(name)
    tables = {oid: Table(oid, schema, name, qualified, tuple(c for c, _ in cols.get(oid, [])),
                         frozenset(c for c, coll in cols.get(oid, []) if coll), tuple(keys.get(oid, [])))
              for oid, schema, name, qualified in rels}
    deps: dict[int, set[int]] = {oid: set() for oid in tables}
    for child, parent in conn.execute("SELECT conrelid, confrelid FROM pg_constraint WHERE contype = 'f' AND conrelid IN "
                                      "(SELECT table_name FROM tenancy.isolated_tables)").fetchall():
        if parent in deps and parent != child:
            deps[child].add(parent)
    ordered: list[Table] = []
    while deps:
        ready = sorted((t for t, d in deps.items() if not d - {o.oid for o in ordered}), key=lambda o: tables[o].qualified)
        if not ready:
            raise DataError(f"foreign keys among {sorted(tables[o].qualified for o in deps)} form a cycle; cannot order "
                            "the copy")
        ordered.extend(tables[o] for o in ready)
        for o in ready:
            del deps[o]
    return ordered


def _select(conn: psycopg.Connection, dsn: str, wanted: list[str] | None) -> list[Table]:
    """The isolated tables named in `wanted` (schema.table, quoted where needed), in copy order; all when None."""
    found = all_tables(conn)
    if wanted is None:
        return found
    by_name = {t.qualified: t for t in found}
    by_oid = {t.oid: t for t in found}
    picked: set[int] = set()
    bad = []
    for name in wanted:
        t = by_name.get(name)
        if t is None:
            oid = conn.execute("SELECT to_regclass(%s)::oid", (name,)).fetchone()[0]
            t = by_oid.get(oid) if oid is not None else None
        if t is None:
            bad.append(name)
        else:
            picked.add(t.oid)
    if bad:
        raise DataInputError(f"{', '.join(bad)}: not isolated table(s) in database {describe_dsn(dsn)}; isolated tables "
                             f"there: {', '.join(t.qualified for t in found) or 'none'}")
    return [t for t in found if t.oid in picked]


def isolated_tables(conn: psycopg.Connection) -> list[str]:
    """Names of the isolated tables, parents first."""
    return [t.qualified for t in all_tables(conn)]


def _match_target(tables: list[Table], dst: psycopg.Connection, dsn: str) -> list[Table]:
    """The target's tables for the source's: same names, and every copied column present."""
    there = {t.qualified: t for t in all_tables(dst)}
    missing = [t.qualified for t in tables if t.qualified not in there]
    if missing:
        raise DataError(f"the target {describe_dsn(dsn)} lacks isolated tables {', '.join(missing)}: apply the tenancy SQL "
                        "and the application schema there first (tenancy db apply DSN)")
    out = []
    for t in tables:
        lacking = sorted(set(t.columns) - set(there[t.qualified].columns))
        if lacking:
            raise DataError(f"table {t.qualified} on the target {describe_dsn(dsn)} lacks column(s) {', '.join(lacking)}: "
                            "migrate the target's schema first")
        out.append(there[t.qualified])
    return out


# ---------------------------------------------------------------------------------------------- checksums

def _checksum_query(t: Table, relation: sql.Composable, tenant_filter: bool) -> sql.Composable:
    by_name = sorted(t.columns)
    row = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(sql.Identifier(c) for c in by_name))
    if t.key:
        order = sql.SQL(", ").join(sql.SQL('{} COLLATE "C"' if k in t.collatable else "{}").format(sql.Identifier(k))
                                   for k in t.key)
    else:
        order = sql.SQL('{} COLLATE "C"').format(row)
    where = sql.SQL(" WHERE tenant_id = %s") if tenant_filter else sql.SQL("")
    return sql.SQL("SELECT count(*), coalesce(md5(string_agg(md5({row}), '' ORDER BY {order})), '') FROM {rel}{where}").format(
        row=row, order=order, rel=relation, where=where)


def _table(conn: psycopg.Connection, table: str | Table) -> Table:
    if isinstance(table, Table):
        return table
    for t in all_tables(conn):
        if t.qualified == table:
            return t
    raise DataError(f"{table} is not an isolated table")


def table_checksum(conn: psycopg.Connection, table: str | Table, tenant: str) -> tuple[int, str]:
    """(rows, ordered checksum) of one tenant's rows; call inside a transaction after as_tenant."""
    t = _table(conn, table)
    count, digest = conn.execute(_checksum_query(t, t.ident, True), (tenant,)).fetchone()
    return int(count), digest


def _counts(conn: psycopg.Connection, tables: list[Table], tenant: str) -> dict[str, int]:
    return {t.qualified: conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s").format(t.ident),
                                      (tenant,)).fetchone()[0] for t in tables}


def _summary(conn: psycopg.Connection, tables: list[Table], tenant: str) -> Summary:
    parts = {}
    for t in tables:
        n, digest = table_checksum(conn, t, tenant)
        parts[t.qualified] = {"count": n, "checksum": digest}
    count, checksum = combine(parts)
    return Summary("postgres", count, checksum, parts)


def _read_summary(dsn: str, tenant: str, tables: list[Table], snapshot: str | None = None) -> Summary:
    """A summary in its own REPEATABLE READ transaction (optionally at an exported snapshot)."""
    with connect(dsn, tenant) as conn:
        with _errors(tenant, dsn, "summing the tenant's rows"):
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            if snapshot:
                conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            as_tenant(conn, tenant)
            out = _summary(conn, tables, tenant)
            conn.rollback()
            return out


def summary(dsn: str, tenant: str, tables: list[str] | None = None, snapshot: str | None = None) -> Summary:
    """What the database holds for the tenant, per table, in one snapshot (an exported one when given:
    what another transaction of this database saw, for example inside a freeze)."""
    with _open(dsn, tenant, "summing the tenant's rows") as conn:
        if snapshot:
            picked = _select(conn, dsn, tables)
            conn.rollback()
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        if snapshot:
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        else:
            picked = _select(conn, dsn, tables)
        as_tenant(conn, tenant)
        out = _summary(conn, picked, tenant)
        conn.rollback()
        return out


def _checks(source: Summary, target: Summary) -> list[TableCheck]:
    return [TableCheck(name, source.parts[name]["count"], target.parts.get(name, {}).get("count", 0),
                       source.parts[name]["checksum"], target.parts.get(name, {}).get("checksum", ""))
            for name in source.parts]


# -------------------------------------------------------------------------------------------------- journal

def _checkpoint(name: str) -> None:
    """Named points of a move (tests interrupt a move here to prove a re-run continues it)."""


# ----------------------------------------------------------------------------------------------------- copy

def clear_tenant(conn: psycopg.Connection, tenant: str, tables: list[str] | list[Table], side: str = "target") -> int:
    """Delete one tenant's rows, children first, inside the caller's transaction. Returns rows deleted."""
    as_tenant(conn, tenant)
    deleted = 0
    for t in reversed([_table(conn, x) for x in tables]):
        deleted += conn.execute(sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(t.ident), (tenant,)).rowcount
        _checkpoint(f"{side} deleted {t.qualified}")
    return deleted


def advance_sequences(conn: psycopg.Connection, table: str, tenant: str) -> None:
    """Once the tenant's rows are in `table` (a format('%I.%I') name), move each identity/serial sequence of the
    table past the tenant's largest value in its column: sequences belong to the database, and neither a copy nor
    replication carries them. Forward only, and only when the tenant's values are ahead: other tenants of the
    target may have drawn further meanwhile, and a sequence set back would hand their numbers out again. (The
    sample schema's keys are random UUIDs and draw from no sequence; an application's own table may.)"""
    for col, seq in conn.execute(
            "SELECT attname, pg_get_serial_sequence(%s, attname) FROM pg_attribute WHERE attrelid = %s::regclass "
            "AND attnum > 0 AND NOT attisdropped AND pg_get_serial_sequence(%s, attname) IS NOT NULL",
            (table, table, table)).fetchall():
        # the next value is last_value + 1 once the sequence was used, its start value before
        conn.execute(sql.SQL("SELECT setval(%(seq)s, m) FROM (SELECT max({col}) AS m FROM {table} WHERE tenant_id = %(tenant)s) s "
                             "WHERE m >= coalesce(pg_sequence_last_value(%(seq)s::regclass) + 1, "
                             "(SELECT seqstart FROM pg_sequence WHERE seqrelid = %(seq)s::regclass))").format(
            col=sql.Identifier(col), table=sql.SQL(table)), {"seq": seq, "tenant": tenant})


def copy_tenant(src: psycopg.Connection, dst: psycopg.Connection, tenant: str, tables: list[Table],
                progress: Progress | None = None, targets: list[Table] | None = None) -> dict[str, int]:
    """Stream one tenant's rows table by table (the source's columns, by name); the caller owns both
    transactions. `targets` are the same tables as the target's catalog knows them (their oids differ)."""
    say = progress or (lambda m: None)
    as_tenant(src, tenant)
    as_tenant(dst, tenant)
    rows: dict[str, int] = {}
    stage = sql.Identifier("tenancy_stage")
    for t, there in zip(tables, targets or tables):
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in t.columns)
        out_q = sql.SQL("COPY (SELECT {cols} FROM {t} WHERE tenant_id = {tid}) TO STDOUT (FORMAT BINARY)").format(
            cols=cols, t=t.ident, tid=sql.Literal(tenant))
        # COPY FROM is refused on tables under RLS, so rows stream into a staging table (no RLS) and move
        # with one set-based INSERT ... SELECT, which RLS's WITH CHECK still guards.
        dst.execute(sql.SQL("CREATE TEMP TABLE {s} (LIKE {t}) ON COMMIT DROP").format(s=stage, t=t.ident))
        in_q = sql.SQL("COPY {s} ({cols}) FROM STDIN (FORMAT BINARY)").format(s=stage, cols=cols)
        with src.cursor().copy(out_q) as reader, dst.cursor().copy(in_q) as writer:
            for chunk in reader:
                writer.write(chunk)
        n = dst.execute(sql.SQL("INSERT INTO {t} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {s}").format(
            t=t.ident, cols=cols, s=stage)).rowcount
        dst.execute(sql.SQL("DROP TABLE {s}").format(s=stage))
        rows[t.qualified] = int(n)
        say(f"  copied {t.qualified}: {n} rows")
        advance_sequences(dst, there.qualified, tenant)
    return rows


def database_of(dsn: str) -> str:
    return describe_dsn(dsn)


def copy_verified(source_dsn: str, target_dsn: str, tenant: str, tables: list[str] | None = None, *,
                  target_plan: str | None = None, target_model: str | None = None, target_state: str = "frozen",
                  progress: Progress | None = None) -> tuple[MoveReport, Summary]:
    """Copy one tenant's rows to the target and verify them, in ONE target transaction: the tenant is registered
    there (`target_state`, plan and model from the source unless given), any rows it had there are replaced, the
    rows streamed in (COPY), and counts and checksums compared with the source's snapshot of the copy. A kill
    leaves the target as it was; a re-run does the same again. Returns the report and the verified summary (the
    source's, equal to the target's). The caller journals it; the source is not changed."""
    say = progress or (lambda m: None)
    with _open(source_dsn, tenant, "reading the source") as src, _open(target_dsn, tenant, "reading the target") as dst:
        if _identity(src) == _identity(dst):
            raise DataInputError(f"source {database_of(source_dsn)} and target {database_of(target_dsn)} are the same database; "
                                 "nothing was done")
        with _errors(tenant, source_dsn, "reading the source's tables"):
            picked = _select(src, source_dsn, tables)
            src.rollback()
        with _errors(tenant, target_dsn, "reading the target's tables"):
            dst_tables = _match_target(picked, dst, target_dsn)
            dst.rollback()
        report = MoveReport(tenant=tenant, tables=[t.qualified for t in picked])
        with _errors(tenant, source_dsn, "copying to the target " + database_of(target_dsn)):
            src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            start = time.perf_counter()
            row = src.execute("SELECT plan, model FROM tenancy.tenants WHERE id = %s", (tenant,)).fetchone()
            if row is None:
                raise DataError(f"tenant '{tenant}' is not registered in the source {database_of(source_dsn)}: is this the "
                                "database that holds its rows? Nothing was done")
            dst.execute("INSERT INTO tenancy.tenants (id, plan, model, state) VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO "
                        "UPDATE SET plan = excluded.plan, model = excluded.model, state = excluded.state, updated_at = now()",
                        (tenant, target_plan or row[0], target_model or row[1], target_state))
            snapshot = src.execute("SELECT pg_export_snapshot()").fetchone()[0]
            with ThreadPoolExecutor(max_workers=1) as pool:
                source_sums = pool.submit(_read_summary, source_dsn, tenant, picked, snapshot)
                cleared = clear_tenant(dst, tenant, dst_tables)
                report.replaced_rows = cleared
                if cleared:
                    say(f"  replaced {cleared} rows of '{tenant}' the target held")
                report.rows = copy_tenant(src, dst, tenant, picked, say, dst_tables)
                report.copy_seconds = time.perf_counter() - start
                start = time.perf_counter()
                target_sum = _summary(dst, dst_tables, tenant)
                source_sum = source_sums.result()
            report.verify_seconds = time.perf_counter() - start
            report.checks = _checks(source_sum, target_sum)
            bad = [c for c in report.checks if not c.ok]
            if bad:
                dst.rollback()
                src.rollback()
                raise VerificationError(f"tenant '{tenant}': verification failed, nothing committed on the target: " +
                                        "; ".join(f"{c.table}: {c.source_rows} rows/{c.source_checksum[:8]} vs "
                                                  f"{c.target_rows}/{c.target_checksum[:8]}" for c in bad))
            _checkpoint("before commit")
            dst.commit()
            src.rollback()
        say(f"  copied and verified {report.total_rows} rows of '{tenant}' in {len(picked)} tables")
        return report, source_sum


def set_state(dsn: str, tenant: str, state: str, *, plan: str | None = None, model: str | None = None) -> str | None:
    """Set the tenant's state in this database's registry (registering it when plan and model are given);
    returns the previous state (None: it was not registered). Not a freeze: see `freeze_in`."""
    with connect(dsn, tenant) as conn:
        with _errors(tenant, dsn, "setting the tenant's state"):
            row = conn.execute("SELECT state FROM tenancy.tenants WHERE id = %s FOR UPDATE", (tenant,)).fetchone()
            if row is None and not (plan and model):
                conn.rollback()
                return None
            conn.execute("INSERT INTO tenancy.tenants (id, plan, model, state) VALUES (%s, %s, %s, %s) ON CONFLICT (id) "
                         "DO UPDATE SET state = excluded.state, plan = coalesce(%s, tenancy.tenants.plan), "
                         "model = coalesce(%s, tenancy.tenants.model), updated_at = now()",
                         (tenant, plan or "-", model or "pooled", state, plan, model))
            conn.commit()
            return row[0] if row else None


def unregister(dsn: str, tenant: str) -> bool:
    """Remove the tenant's registration, only when it has no rows left in any isolated table; True if removed."""
    with connect(dsn, tenant) as conn:
        with _errors(tenant, dsn, "unregistering the tenant"):
            _lock_registry(conn, tenant)
            as_tenant(conn, tenant)
            if not _all_tables_empty(conn, tenant):
                conn.rollback()
                return False
            conn.execute("DELETE FROM tenancy.tenants WHERE id = %s", (tenant,))
            conn.commit()
            return True


def freeze(dsn: str, tenant: str, state: str = "frozen", timeout_s: float = FREEZE_TIMEOUT_S) -> str:
    """`freeze_in` in its own committed transaction; returns the previous state."""
    with connect(dsn, tenant) as conn:
        with _errors(tenant, dsn, "freezing the tenant's writes"):
            previous = freeze_in(conn, tenant, state, timeout_s)
            conn.commit()
            return previous


class FreezeTimeout(DataError):
    """A transaction that wrote the tenant stayed open longer than the freeze may wait."""


def freeze_in(conn: psycopg.Connection, tenant: str, state: str = "frozen", timeout_s: float = FREEZE_TIMEOUT_S) -> str:
    """The one write freeze: inside the caller's open transaction, set the tenant's state in this database's
    registry (`tenancy.freeze`) once every transaction that already wrote the tenant has ended, bounded by
    `timeout_s`. Returns the previous state. The caller commits; from then on the database refuses the tenant's
    writes (except the owner role's). Raises FreezeTimeout, or Mismatch when the tenant is not registered here."""
    conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(timeout_s * 1000)}ms",))
    try:
        return conn.execute("SELECT tenancy.freeze(%s, %s)", (tenant, state)).fetchone()[0]
    except psycopg.errors.LockNotAvailable:
        raise FreezeTimeout(f"could not freeze '{tenant}' within {timeout_s:g}s: a transaction that wrote the tenant is "
                            "still open; find it in pg_stat_activity, then run the same command again") from None
    except psycopg.errors.UndefinedObject:
        raise Mismatch(f"tenant '{tenant}' is not registered in this database") from None


def _lock_registry(conn: psycopg.Connection, tenant: str) -> None:
    """Lock the tenant's registry row for this transaction: waits out (bounded) and then holds off every writer
    of the tenant, whose write guard takes a share lock on that row."""
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{FREEZE_TIMEOUT_S}s")))
    conn.execute("SELECT 1 FROM tenancy.tenants WHERE id = %s FOR UPDATE", (tenant,))


def _all_tables_empty(conn: psycopg.Connection, tenant: str) -> bool:
    return not any(_counts(conn, all_tables(conn), tenant).values())


# ------------------------------------------------------------------------------------------ verify, delete

def verify(source_dsn: str, target_dsn: str, tenant: str, tables: list[str] | None = None) -> list[TableCheck]:
    """Per-table counts and checksums on both sides, each in its own snapshot, summed concurrently."""
    with _open(source_dsn, tenant, "reading the source") as src, _open(target_dsn, tenant, "reading the target") as dst:
        with _errors(tenant, source_dsn, "reading the source's tables"):
            picked = _select(src, source_dsn, tables)
            src.rollback()
        with _errors(tenant, target_dsn, "reading the target's tables"):
            there = _match_target(picked, dst, target_dsn)
            dst.rollback()
    with ThreadPoolExecutor(max_workers=2) as pool:
        s = pool.submit(_read_summary, source_dsn, tenant, picked)
        t = pool.submit(_read_summary, target_dsn, tenant, there)
        return _checks(s.result(), t.result())


def delete(dsn: str, tenant: str, expect: Summary | None = None, tables: list[str] | None = None) -> int:
    """Delete the tenant's rows (children first) when they still match `expect`; returns rows deleted.

    The tenant's registry row is locked first, which waits out writers and holds new ones until the delete
    commits, so what is compared is what is deleted. `expect=None` is for callers that compared already."""
    with _open(dsn, tenant, "deleting the tenant's rows") as conn:
        picked = _select(conn, dsn, tables)
        _lock_registry(conn, tenant)
        as_tenant(conn, tenant)
        if expect is not None:
            now = _summary(conn, picked, tenant)
            if not now.same_data(expect):
                conn.rollback()
                raise Mismatch(f"tenant '{tenant}': database {describe_dsn(dsn)} no longer holds what was verified "
                               f"(verified vs now: {'; '.join(expect.differences(now))}); nothing was deleted")
        n = clear_tenant(conn, tenant, picked)
        conn.commit()
        return n


# ---------------------------------------------------------------------------------------------------- export

def _file_sums(conn: psycopg.Connection, directory: Path, entry: dict, t: Table, tenant: str) -> tuple[int, str, bool]:
    """(rows, checksum, every row is the tenant's) of an exported file, loaded into a temporary table."""
    stage = sql.Identifier("tenancy_export_check")
    cols = entry.get("columns") or list(t.columns)
    conn.execute(sql.SQL("CREATE TEMP TABLE {s} (LIKE {t})").format(s=stage, t=t.ident))
    q = sql.SQL("COPY {s} ({cols}) FROM STDIN (FORMAT CSV, HEADER)").format(
        s=stage, cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols))
    with conn.cursor().copy(q) as writer, open(directory / entry["file"], "rb") as f:
        while chunk := f.read(1 << 20):
            writer.write(chunk)
    n, digest = conn.execute(_checksum_query(t, stage, False)).fetchone()
    foreign = conn.execute(sql.SQL("SELECT count(*) FROM {s} WHERE tenant_id IS DISTINCT FROM %s").format(s=stage),
                           (tenant,)).fetchone()[0]
    conn.execute(sql.SQL("DROP TABLE {s}").format(s=stage))
    return int(n), digest, foreign == 0


def _check_files(conn: psycopg.Connection, directory: Path, manifest: dict, tables: dict[str, Table], tenant: str) -> None:
    bad = []
    for name, entry in manifest["tables"].items():
        path = directory / entry["file"]
        if not path.is_file():
            bad.append(f"{name}: file {entry['file']} is missing")
            continue
        if file_sha256(path) != entry["sha256"]:
            bad.append(f"{name}: file {entry['file']} changed (sha256 differs)")
            continue
        n, digest, own = _file_sums(conn, directory, entry, tables[name], tenant)
        if not own:
            bad.append(f"{name}: file holds rows of another tenant")
        elif (n, digest) != (entry["rows"], entry["rowChecksum"]):
            bad.append(f"{name}: file has {n} rows/{digest[:8]}, manifest {entry['rows']}/{entry['rowChecksum'][:8]}")
    if bad:
        raise Mismatch(f"tenant '{tenant}': the export in {directory} does not match: {'; '.join(bad)}")


def export(source_dsn: str, tenant: str, out_dir: str | Path, progress: Progress | None = None,
           tables: list[str] | None = None) -> dict:
    """One CSV per table plus manifest.json (rows, row checksums, SHA-256), in a new private directory; the files
    are read back and checked against the database's snapshot they were written from."""
    say = progress or (lambda m: None)
    manifest: dict = {"tenant": tenant, "format": "csv with header", "tables": {}}
    with _open(source_dsn, tenant, "exporting the tenant's rows") as src:
        src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        picked = _select(src, source_dsn, tables)
        out = private_export_dir(out_dir)   # only once the database is known to be usable
        as_tenant(src, tenant)
        for t in picked:
            order = sql.SQL(", ").join(sql.Identifier(k) for k in t.key) if t.key else sql.SQL("1")
            q = sql.SQL("COPY (SELECT {cols} FROM {t} WHERE tenant_id = {tid} ORDER BY {key}) TO STDOUT "
                        "(FORMAT CSV, HEADER)").format(cols=sql.SQL(", ").join(sql.Identifier(c) for c in t.columns),
                                                       t=t.ident, tid=sql.Literal(tenant), key=order)
            h = hashlib.sha256()
            with src.cursor().copy(q) as reader, private_file(out / t.filename) as f:
                for chunk in reader:
                    f.write(chunk)
                    h.update(chunk)
            rows, checksum = table_checksum(src, t, tenant)
            manifest["tables"][t.qualified] = {"file": t.filename, "rows": rows, "rowChecksum": checksum,
                                               "sha256": h.hexdigest(), "columns": list(t.columns)}
            say(f"  exported {t.qualified}: {rows} rows")
        parts = {k: {"count": v["rows"], "checksum": v["rowChecksum"]} for k, v in manifest["tables"].items()}
        count, checksum = combine(parts)
        manifest["summary"] = Summary("postgres", count, checksum, parts).to_json()
        _check_files(src, out, manifest, {t.qualified: t for t in picked}, tenant)
        src.rollback()
    write_manifest(out, "manifest.json", manifest)
    return manifest


def _manifest(directory: Path, tenant: str, unreadable: type[Exception], hint: str = "") -> dict:
    """An export's manifest.json; `unreadable` when it cannot be read, Mismatch when it is another tenant's."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise unreadable(f"tenant '{tenant}': no readable manifest.json in {directory} "
                         f"({getattr(exc, 'strerror', None) or exc}){hint}") from None
    if manifest.get("tenant") != tenant:
        raise Mismatch(f"the export in {directory} is of tenant '{manifest.get('tenant')}', not '{tenant}'")
    return manifest


def verify_export(directory: str | Path, dsn: str, tenant: str) -> Summary:
    """Re-read an export (files against the manifest, then against the database now); returns its summary."""
    directory = Path(directory)
    manifest = _manifest(directory, tenant, DataError, "; export again")
    expected = Summary.from_json(manifest["summary"])
    with _open(dsn, tenant, "checking the export") as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        picked = _select(conn, dsn, list(manifest["tables"]))
        as_tenant(conn, tenant)
        _check_files(conn, directory, manifest, {t.qualified: t for t in picked}, tenant)
        now = _summary(conn, picked, tenant)
        conn.rollback()
    if not now.same_data(expected):
        raise Mismatch(f"tenant '{tenant}': the export in {directory} no longer matches database {describe_dsn(dsn)} "
                       f"(exported vs now: {'; '.join(expected.differences(now))})")
    return expected


# --------------------------------------------------------------------------------------------------- import

def read_export_manifest(directory: str | Path, tenant: str) -> tuple[dict, Summary]:
    """An export's manifest and summary, with every file checked against it (present, SHA-256); no database
    is read. Mismatch names each file that is missing or changed, or an export of another tenant."""
    directory = Path(directory)
    manifest = _manifest(directory, tenant, Mismatch)
    bad = []
    for name, entry in manifest["tables"].items():
        path = directory / entry["file"]
        if not path.is_file():
            bad.append(f"{name}: file {entry['file']} is missing")
        elif file_sha256(path) != entry["sha256"]:
            bad.append(f"{name}: file {entry['file']} changed (sha256 differs)")
    if bad:
        raise Mismatch(f"tenant '{tenant}': the export in {directory} does not match its manifest: {'; '.join(bad)}")
    return manifest, Summary.from_json(manifest["summary"])


def import_export(directory: str | Path, dsn: str, tenant: str, progress: Progress | None = None, *,
                  rehearse: bool = False) -> Summary:
    """Load an export (one CSV per table and manifest.json) into the tenant's tables of `dsn` in ONE transaction:
    the files checked against the manifest first, rows streamed (COPY) into staging tables and moved into the
    real tables parents first (one INSERT ... SELECT each, under row-level security's WITH CHECK), identity
    sequences moved past them, then counts and checksums compared with the manifest. Committed only when every
    table matches, so a kill leaves the database as it was and a re-run loads it again; a re-run after success
    finds exactly the export there and writes nothing. The tenant must be registered there (any state: the owner
    role writes a frozen tenant's rows) and hold no rows in those tables.

    `rehearse`: the tenant's rows there are replaced by the export's inside the transaction, compared, and the
    transaction rolled back -- proof that the export restores into this very database (its tables, constraints
    and policies) with nothing ever committed (an offboarding's restore check)."""
    say = progress or (lambda m: None)
    directory = Path(directory)
    manifest, expected = read_export_manifest(directory, tenant)
    with _open(dsn, tenant, "importing the tenant's rows") as conn:
        picked = _select(conn, dsn, list(manifest["tables"]))
        if _registered(conn, tenant) is None:
            conn.rollback()
            raise DataError(f"tenant '{tenant}' is not registered in database {describe_dsn(dsn)}; register it first")
        _lock_registry(conn, tenant)
        as_tenant(conn, tenant)
        there = _summary(conn, picked, tenant)
        if not rehearse and there.count:
            conn.rollback()
            if there.same_data(expected):
                say(f"  {describe_dsn(dsn)} already holds the export's {there.count} rows of '{tenant}'")
                return there
            raise Mismatch(f"tenant '{tenant}': database {describe_dsn(dsn)} already holds {there.count} of its rows, not "
                           f"the export's ({'; '.join(expected.differences(there))}); nothing was imported")
        if rehearse:
            clear_tenant(conn, tenant, picked)
        stage = sql.Identifier("tenancy_import")
        for t in picked:
            entry = manifest["tables"][t.qualified]
            cols = entry.get("columns") or list(t.columns)
            lacking = sorted(set(cols) - set(t.columns))
            if lacking:
                conn.rollback()
                raise DataError(f"table {t.qualified} in {describe_dsn(dsn)} lacks column(s) {', '.join(lacking)} of the "
                                "export: migrate its schema first")
            names = sql.SQL(", ").join(sql.Identifier(c) for c in cols)
            conn.execute(sql.SQL("CREATE TEMP TABLE {s} (LIKE {t}) ON COMMIT DROP").format(s=stage, t=t.ident))
            with conn.cursor().copy(sql.SQL("COPY {s} ({cols}) FROM STDIN (FORMAT CSV, HEADER)").format(
                    s=stage, cols=names)) as writer, open(directory / entry["file"], "rb") as f:
                while chunk := f.read(1 << 20):
                    writer.write(chunk)
            foreign = conn.execute(sql.SQL("SELECT count(*) FROM {s} WHERE tenant_id IS DISTINCT FROM %s").format(s=stage),
                                   (tenant,)).fetchone()[0]
            if foreign:
                conn.rollback()
                raise Mismatch(f"tenant '{tenant}': {directory / entry['file']} holds {foreign} rows of another tenant; "
                               "nothing was imported")
            conn.execute(sql.SQL("INSERT INTO {t} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {s}").format(
                t=t.ident, cols=names, s=stage))
            conn.execute(sql.SQL("DROP TABLE {s}").format(s=stage))
            advance_sequences(conn, t.qualified, tenant)
        loaded = _summary(conn, picked, tenant)
        bad = [c for c in _checks(expected, loaded) if not c.ok]
        if bad:
            conn.rollback()
            raise VerificationError(f"tenant '{tenant}': the export in {directory} does not load back as exported, nothing "
                                    "committed: " + "; ".join(f"{c.table}: exported {c.source_rows} rows/"
                                                              f"{c.source_checksum[:8]}, loaded {c.target_rows}/"
                                                              f"{c.target_checksum[:8]}" for c in bad))
        if rehearse:
            conn.rollback()
            say(f"  the export of '{tenant}' in {directory} loads back into {describe_dsn(dsn)}: {loaded.count} rows "
                "(rolled back)")
            return loaded
        _checkpoint("before import commit")
        conn.commit()
    say(f"  imported and verified {loaded.count} rows of '{tenant}' into {describe_dsn(dsn)}")
    return loaded
