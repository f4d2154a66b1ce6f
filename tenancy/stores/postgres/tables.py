"""The isolated tables as the catalog knows them (by oid, never a name split on '.'), parents first, and the
subset a caller names; the target's tables matched to the source's.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import psycopg
from psycopg import sql

from tenancy.db import describe_dsn
from tenancy.stores.postgres.connection import DataError, DataInputError


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


def select_tables(conn: psycopg.Connection, dsn: str, wanted: list[str] | None) -> list[Table]:
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


def match_target(tables: list[Table], dst: psycopg.Connection, dsn: str) -> list[Table]:
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
