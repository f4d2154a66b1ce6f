"""Copying one tenant's rows between databases: binary COPY streams in one target transaction verified against
the source's snapshot (`copy_verified`), per-table verification, and a delete only of what was verified.

`checkpoint` names the points of a copy (clearing, before commit); tests replace it here to interrupt a copy.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from tenancy.db import describe_dsn
from tenancy.stores import Mismatch, Progress, Summary
from tenancy.stores.postgres.checksums import TableCheck, read_summary, summary_in, table_checks, table_of
from tenancy.stores.postgres.connection import (DataError, DataInputError, VerificationError, as_tenant,
                                                database_identity, one_line_errors, open_checked)
from tenancy.stores.postgres.state import lock_registry
from tenancy.stores.postgres.tables import Table, match_target, select_tables


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


# -------------------------------------------------------------------------------------------------- journal

def checkpoint(name: str) -> None:
    """Named points of a move (tests interrupt a move here to prove a re-run continues it)."""


# ----------------------------------------------------------------------------------------------------- copy

def clear_tenant(conn: psycopg.Connection, tenant: str, tables: list[str] | list[Table], side: str = "target") -> int:
    """Delete one tenant's rows, children first, inside the caller's transaction. Returns rows deleted."""
    as_tenant(conn, tenant)
    deleted = 0
    for t in reversed([table_of(conn, x) for x in tables]):
        deleted += conn.execute(sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(t.ident), (tenant,)).rowcount
        checkpoint(f"{side} deleted {t.qualified}")
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
    with open_checked(source_dsn, tenant, "reading the source") as src, \
            open_checked(target_dsn, tenant, "reading the target") as dst:
        if database_identity(src) == database_identity(dst):
            raise DataInputError(f"source {database_of(source_dsn)} and target {database_of(target_dsn)} are the same database; "
                                 "nothing was done")
        with one_line_errors(tenant, source_dsn, "reading the source's tables"):
            picked = select_tables(src, source_dsn, tables)
            src.rollback()
        with one_line_errors(tenant, target_dsn, "reading the target's tables"):
            dst_tables = match_target(picked, dst, target_dsn)
            dst.rollback()
        report = MoveReport(tenant=tenant, tables=[t.qualified for t in picked])
        with one_line_errors(tenant, source_dsn, "copying to the target " + database_of(target_dsn)):
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
                source_sums = pool.submit(read_summary, source_dsn, tenant, picked, snapshot)
                cleared = clear_tenant(dst, tenant, dst_tables)
                report.replaced_rows = cleared
                if cleared:
                    say(f"  replaced {cleared} rows of '{tenant}' the target held")
                report.rows = copy_tenant(src, dst, tenant, picked, say, dst_tables)
                report.copy_seconds = time.perf_counter() - start
                start = time.perf_counter()
                target_sum = summary_in(dst, dst_tables, tenant)
                source_sum = source_sums.result()
            report.verify_seconds = time.perf_counter() - start
            report.checks = table_checks(source_sum, target_sum)
            bad = [c for c in report.checks if not c.ok]
            if bad:
                dst.rollback()
                src.rollback()
                raise VerificationError(f"tenant '{tenant}': verification failed, nothing committed on the target: " +
                                        "; ".join(f"{c.table}: {c.source_rows} rows/{c.source_checksum[:8]} vs "
                                                  f"{c.target_rows}/{c.target_checksum[:8]}" for c in bad))
            checkpoint("before commit")
            dst.commit()
            src.rollback()
        say(f"  copied and verified {report.total_rows} rows of '{tenant}' in {len(picked)} tables")
        return report, source_sum


# ------------------------------------------------------------------------------------------ verify, delete

def verify(source_dsn: str, target_dsn: str, tenant: str, tables: list[str] | None = None) -> list[TableCheck]:
    """Per-table counts and checksums on both sides, each in its own snapshot, summed concurrently."""
    with open_checked(source_dsn, tenant, "reading the source") as src, \
            open_checked(target_dsn, tenant, "reading the target") as dst:
        with one_line_errors(tenant, source_dsn, "reading the source's tables"):
            picked = select_tables(src, source_dsn, tables)
            src.rollback()
        with one_line_errors(tenant, target_dsn, "reading the target's tables"):
            there = match_target(picked, dst, target_dsn)
            dst.rollback()
    with ThreadPoolExecutor(max_workers=2) as pool:
        s = pool.submit(read_summary, source_dsn, tenant, picked)
        t = pool.submit(read_summary, target_dsn, tenant, there)
        return table_checks(s.result(), t.result())


def delete(dsn: str, tenant: str, expect: Summary | None = None, tables: list[str] | None = None) -> int:
    """Delete the tenant's rows (children first) when they still match `expect`; returns rows deleted.

    The tenant's registry row is locked first, which waits out writers and holds new ones until the delete
    commits, so what is compared is what is deleted. `expect=None` is for callers that compared already."""
    with open_checked(dsn, tenant, "deleting the tenant's rows") as conn:
        picked = select_tables(conn, dsn, tables)
        lock_registry(conn, tenant)
        as_tenant(conn, tenant)
        if expect is not None:
            now = summary_in(conn, picked, tenant)
            if not now.same_data(expect):
                conn.rollback()
                raise Mismatch(f"tenant '{tenant}': database {describe_dsn(dsn)} no longer holds what was verified "
                               f"(verified vs now: {'; '.join(expect.differences(now))}); nothing was deleted")
        n = clear_tenant(conn, tenant, picked)
        conn.commit()
        return n
