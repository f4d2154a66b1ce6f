"""Counts and ordered checksums of one tenant's rows, per table and as a `Summary`, in one snapshot (an exported
one when given), so two databases holding the same rows sum the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from tenancy.stores import Summary, combine
from tenancy.stores.postgres.connection import DataError, as_tenant, connect, one_line_errors, open_checked
from tenancy.stores.postgres.tables import Table, all_tables, select_tables


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


# ---------------------------------------------------------------------------------------------- checksums

def checksum_query(t: Table, relation: sql.Composable, tenant_filter: bool) -> sql.Composable:
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


def table_of(conn: psycopg.Connection, table: str | Table) -> Table:
    if isinstance(table, Table):
        return table
    for t in all_tables(conn):
        if t.qualified == table:
            return t
    raise DataError(f"{table} is not an isolated table")


def table_checksum(conn: psycopg.Connection, table: str | Table, tenant: str) -> tuple[int, str]:
    """(rows, ordered checksum) of one tenant's rows; call inside a transaction after as_tenant."""
    t = table_of(conn, table)
    count, digest = conn.execute(checksum_query(t, t.ident, True), (tenant,)).fetchone()
    return int(count), digest


def row_counts(conn: psycopg.Connection, tables: list[Table], tenant: str) -> dict[str, int]:
    return {t.qualified: conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s").format(t.ident),
                                      (tenant,)).fetchone()[0] for t in tables}


def summary_in(conn: psycopg.Connection, tables: list[Table], tenant: str) -> Summary:
    parts = {}
    for t in tables:
        n, digest = table_checksum(conn, t, tenant)
        parts[t.qualified] = {"count": n, "checksum": digest}
    count, checksum = combine(parts)
    return Summary("postgres", count, checksum, parts)


def read_summary(dsn: str, tenant: str, tables: list[Table], snapshot: str | None = None) -> Summary:
    """A summary in its own REPEATABLE READ transaction (optionally at an exported snapshot)."""
    with connect(dsn, tenant) as conn:
        with one_line_errors(tenant, dsn, "summing the tenant's rows"):
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            if snapshot:
                conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            as_tenant(conn, tenant)
            out = summary_in(conn, tables, tenant)
            conn.rollback()
            return out


def summary(dsn: str, tenant: str, tables: list[str] | None = None, snapshot: str | None = None) -> Summary:
    """What the database holds for the tenant, per table, in one snapshot (an exported one when given:
    what another transaction of this database saw, for example inside a freeze)."""
    with open_checked(dsn, tenant, "summing the tenant's rows") as conn:
        if snapshot:
            picked = select_tables(conn, dsn, tables)
            conn.rollback()
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        if snapshot:
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        else:
            picked = select_tables(conn, dsn, tables)
        as_tenant(conn, tenant)
        out = summary_in(conn, picked, tenant)
        conn.rollback()
        return out


def table_checks(source: Summary, target: Summary) -> list[TableCheck]:
    return [TableCheck(name, source.parts[name]["count"], target.parts.get(name, {}).get("count", 0),
                       source.parts[name]["checksum"], target.parts.get(name, {}).get("checksum", ""))
            for name in source.parts]
