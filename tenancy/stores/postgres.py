"""Per-tenant row moves between PostgreSQL databases that carry the tenancy SQL.

Only one tenant's rows are ever read or written: every statement runs with `app.current_tenant` set to that
tenant (row-level security filters the rest even for the owner role) and names the tenant explicitly.

- Tables come from the source's `tenancy.isolated_tables`, copied parents first (foreign-key order).
- Rows travel as binary COPY streams, source to target, never row by row.
- The whole copy is one target transaction: an interruption leaves the target as it was, and a retried move
  first clears that tenant's rows on the target.
- Verification compares per-table row counts and an ordered checksum (md5 over the rows' md5s in primary-key
  order) on both sides; sequences on the target are moved past the tenant's ids.
- Nothing is deleted from the source unless verification passed.

Connect as the owner role (`tenancy_owner`) or a superuser: the owner may write a frozen tenant's rows.
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import psycopg
from psycopg import sql

from tenancy.errors import TenancyError

Progress = Callable[[str], None]


class DataError(TenancyError):
    exit_code = 1


class VerificationError(DataError):
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

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def connect(dsn: str) -> psycopg.Connection:
    try:
        return psycopg.connect(dsn, autocommit=False)
    except psycopg.OperationalError as exc:
        # libpq's message names host, port and user, never the password
        raise DataError(f"cannot connect: {str(exc).strip()}") from None


def _as_tenant(conn: psycopg.Connection, tenant: str) -> None:
    """Inside the current transaction only, through tenancy.set_tenant (the only way that counts)."""
    conn.execute("SELECT tenancy.set_tenant(%s)", (tenant,))


def isolated_tables(conn: psycopg.Connection) -> list[str]:
    """Isolated tables, parents before children (foreign keys among them define the order)."""
    rows = conn.execute("SELECT table_name::regclass::text FROM tenancy.isolated_tables").fetchall()
    tables = sorted(r[0] for r in rows)
    deps = {t: set() for t in tables}
    for child, parent in conn.execute(
            "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint "
            "WHERE contype = 'f' AND conrelid IN (SELECT table_name FROM tenancy.isolated_tables)").fetchall():
        if parent in deps and parent != child:
            deps[child].add(parent)
    ordered: list[str] = []
    while deps:
        ready = sorted(t for t, d in deps.items() if not d - set(ordered))
        if not ready:
            raise DataError(f"foreign keys among {sorted(deps)} form a cycle; cannot order the copy")
        ordered.extend(ready)
        for t in ready:
            del deps[t]
    return ordered


def _ident(table: str) -> sql.Composable:
    return sql.SQL(".").join(sql.Identifier(p) for p in table.split("."))


def _columns(conn: psycopg.Connection, table: str) -> list[str]:
    rows = conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                        "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum", (table,)).fetchall()
    return [r[0] for r in rows]


def _key(conn: psycopg.Connection, table: str) -> list[str]:
    rows = conn.execute("SELECT a.attname FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n) ON true "
                        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                        "WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY k.n", (table,)).fetchall()
    return [r[0] for r in rows] or _columns(conn, table)


def table_checksum(conn: psycopg.Connection, table: str, tenant: str) -> tuple[int, str]:
    """(rows, ordered checksum) of one tenant's rows; call inside a transaction with the tenant set."""
    cols = _columns(conn, table)
    key = _key(conn, table)
    row = sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.Identifier(c) for c in cols))
    q = sql.SQL("SELECT count(*), coalesce(md5(string_agg(md5({row}::text), '' ORDER BY {key})), '') "
                "FROM {table} WHERE tenant_id = %s").format(
        row=row, key=sql.SQL(", ").join(sql.Identifier(k) for k in key), table=_ident(table))
    count, digest = conn.execute(q, (tenant,)).fetchone()
    return int(count), digest


def _ensure_registered(src: psycopg.Connection, dst: psycopg.Connection, tenant: str,
                       plan: str | None, model: str | None, state: str | None) -> None:
    row = src.execute("SELECT plan, model, state FROM tenancy.tenants WHERE id = %s", (tenant,)).fetchone()
    if row is None:
        raise DataError(f"tenant '{tenant}' is not registered in the source's tenancy.tenants")
    dst.execute("INSERT INTO tenancy.tenants (id, plan, model, state) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET plan = excluded.plan, model = excluded.model, updated_at = now()",
                (tenant, plan or row[0], model or row[1], state or row[2]))


def _check_same_tables(tables: list[str], dst: psycopg.Connection) -> None:
    target = set(isolated_tables(dst))
    missing = [t for t in tables if t not in target]
    if missing:
        raise DataError(f"the target lacks isolated tables {', '.join(missing)}: apply the tenancy SQL and the "
                        "application schema there first (tenancy db apply DSN)")


def clear_tenant(conn: psycopg.Connection, tenant: str, tables: list[str]) -> int:
    """Delete one tenant's rows, children first; inside the caller's transaction. Returns rows deleted."""
    _as_tenant(conn, tenant)
    deleted = 0
    for table in reversed(tables):
        deleted += conn.execute(sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(_ident(table)), (tenant,)).rowcount
    return deleted


def _reset_sequences(conn: psycopg.Connection, table: str, tenant: str) -> None:
    """Move identity/serial sequences past the tenant's ids (other tenants' ids are already behind them)."""
    for col, seq in conn.execute(
            "SELECT a.attname, pg_get_serial_sequence(%s, a.attname) FROM pg_attribute a "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped "
            "AND pg_get_serial_sequence(%s, a.attname) IS NOT NULL", (table, table, table)).fetchall():
        q = sql.SQL("SELECT setval(%s, greatest(coalesce(pg_sequence_last_value(%s::regclass), 1), "
                    "coalesce((SELECT max({col}) FROM {table} WHERE tenant_id = %s), 1)))").format(
            col=sql.Identifier(col), table=_ident(table))
        conn.execute(q, (seq, seq, tenant))


def copy_tenant(src: psycopg.Connection, dst: psycopg.Connection, tenant: str, tables: list[str],
                progress: Progress | None = None) -> dict[str, int]:
    """Stream one tenant's rows table by table; the caller owns both transactions."""
    say = progress or (lambda m: None)
    _as_tenant(src, tenant)
    _as_tenant(dst, tenant)
    rows: dict[str, int] = {}
    for table in tables:
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in _columns(src, table))
        out_q = sql.SQL("COPY (SELECT {cols} FROM {t} WHERE tenant_id = {tid}) TO STDOUT (FORMAT BINARY)").format(
            cols=cols, t=_ident(table), tid=sql.Literal(tenant))
        # COPY FROM is refused on tables under RLS, so rows stream into a staging table (no RLS) and move
        # with one set-based INSERT ... SELECT, which RLS's WITH CHECK still guards.
        stage = sql.Identifier("tenancy_stage")
        dst.execute(sql.SQL("CREATE TEMP TABLE {s} (LIKE {t}) ON COMMIT DROP").format(s=stage, t=_ident(table)))
        in_q = sql.SQL("COPY {s} ({cols}) FROM STDIN (FORMAT BINARY)").format(s=stage, cols=cols)
        with src.cursor().copy(out_q) as reader, dst.cursor().copy(in_q) as writer:
            for chunk in reader:
                writer.write(chunk)
        n = dst.execute(sql.SQL("INSERT INTO {t} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {s}").format(
            t=_ident(table), cols=cols, s=stage)).rowcount
        dst.execute(sql.SQL("DROP TABLE {s}").format(s=stage))
        rows[table] = int(n)
        say(f"  copied {table}: {n} rows")
        _reset_sequences(dst, table, tenant)
    return rows


def verify_tenant(src: psycopg.Connection, dst: psycopg.Connection, tenant: str, tables: list[str]) -> list[TableCheck]:
    """Both sides are summed at once (two connections, two threads), each in its own transaction's view."""
    def side(conn: psycopg.Connection) -> list[tuple[int, str]]:
        _as_tenant(conn, tenant)
        return [table_checksum(conn, table, tenant) for table in tables]

    with ThreadPoolExecutor(max_workers=2) as pool:
        source, target = pool.submit(side, src), pool.submit(side, dst)
        s_sums, t_sums = source.result(), target.result()
    return [TableCheck(table, sn, tn, sc, tc) for table, (sn, sc), (tn, tc) in zip(tables, s_sums, t_sums)]


def move(source_dsn: str, target_dsn: str, tenant: str, *, delete_source: bool = False,
         target_plan: str | None = None, target_model: str | None = None, target_state: str | None = None,
         progress: Progress | None = None) -> MoveReport:
    """Copy one tenant's rows from source to target, verify, optionally delete them from the source."""
    say = progress or (lambda m: None)
    with connect(source_dsn) as src, connect(target_dsn) as dst:
        # Source: one REPEATABLE READ snapshot for copy and verification alike.
        src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        tables = isolated_tables(src)
        _check_same_tables(tables, dst)
        report = MoveReport(tenant=tenant, tables=tables)
        start = time.perf_counter()
        _ensure_registered(src, dst, tenant, target_plan, target_model, target_state)
        # The source side of the verification runs while the copy does, on a second connection that sees
        # exactly the copy's snapshot; only the target side remains after the copy.
        snapshot = src.execute("SELECT pg_export_snapshot()").fetchone()[0]
        with ThreadPoolExecutor(max_workers=1) as pool:
            source_sums = pool.submit(_sums_at_snapshot, source_dsn, snapshot, tenant, tables)
            cleared = clear_tenant(dst, tenant, tables)
            if cleared:
                say(f"cleared {cleared} rows of '{tenant}' left on the target by an earlier attempt")
            report.rows = copy_tenant(src, dst, tenant, tables, say)
            report.copy_seconds = time.perf_counter() - start
            start = time.perf_counter()
            target_sums = [table_checksum(dst, table, tenant) for table in tables]
            report.checks = [TableCheck(t, sn, tn, sc, tc)
                             for t, (sn, sc), (tn, tc) in zip(tables, source_sums.result(), target_sums)]
        report.verify_seconds = time.perf_counter() - start
        bad = [c for c in report.checks if not c.ok]
        if bad:
            dst.rollback()
            raise VerificationError("verification failed, nothing committed on the target and nothing deleted: " +
                                    "; ".join(f"{c.table}: {c.source_rows} rows/{c.source_checksum[:8]} vs "
                                              f"{c.target_rows}/{c.target_checksum[:8]}" for c in bad))
        dst.commit()
        src.commit()
        say(f"copied and verified {report.total_rows} rows of '{tenant}' in {len(tables)} tables")
        if delete_source:
            with src.transaction():
                deleted = clear_tenant(src, tenant, tables)
            report.deleted_source = True
            say(f"deleted {deleted} rows of '{tenant}' from the source")
    return report


def _sums_at_snapshot(dsn: str, snapshot: str, tenant: str, tables: list[str]) -> list[tuple[int, str]]:
    with connect(dsn) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        _as_tenant(conn, tenant)
        sums = [table_checksum(conn, table, tenant) for table in tables]
        conn.rollback()
        return sums


def verify(source_dsn: str, target_dsn: str, tenant: str) -> list[TableCheck]:
    with connect(source_dsn) as src, connect(target_dsn) as dst:
        tables = isolated_tables(src)
        _check_same_tables(tables, dst)
        checks = verify_tenant(src, dst, tenant, tables)
        src.rollback()
        dst.rollback()
        return checks


def delete(dsn: str, tenant: str) -> int:
    with connect(dsn) as conn:
        with conn.transaction():
            return clear_tenant(conn, tenant, isolated_tables(conn))


def export(source_dsn: str, tenant: str, out_dir: str | Path, progress: Progress | None = None) -> dict:
    """One CSV file per table plus manifest.json with row counts, row checksums and file SHA-256."""
    say = progress or (lambda m: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"tenant": tenant, "format": "csv with header", "tables": {}}
    with connect(source_dsn) as src:
        src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        tables = isolated_tables(src)
        _as_tenant(src, tenant)
        for table in tables:
            cols = _columns(src, table)
            key = _key(src, table)
            q = sql.SQL("COPY (SELECT {cols} FROM {t} WHERE tenant_id = {tid} ORDER BY {key}) TO STDOUT "
                        "(FORMAT CSV, HEADER)").format(cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols),
                                                       t=_ident(table), tid=sql.Literal(tenant),
                                                       key=sql.SQL(", ").join(sql.Identifier(k) for k in key))
            path = out / f"{table}.csv"
            h = hashlib.sha256()
            with src.cursor().copy(q) as reader, path.open("wb") as f:
                for chunk in reader:
                    f.write(chunk)
                    h.update(chunk)
            rows, checksum = table_checksum(src, table, tenant)
            manifest["tables"][table] = {"file": path.name, "rows": rows, "rowChecksum": checksum, "sha256": h.hexdigest()}
            say(f"  exported {table}: {rows} rows")
        src.rollback()
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def checks_json(checks: list[TableCheck]) -> list[dict]:
    return [{**asdict(c), "ok": c.ok} for c in checks]
