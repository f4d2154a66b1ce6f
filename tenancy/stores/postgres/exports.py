"""Exports of one tenant's rows (one CSV per table plus manifest.json, checked back against the database) and
their import in one transaction, or a rehearsal that proves an export restores and rolls back.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import psycopg
from psycopg import sql

from tenancy.db import describe_dsn
from tenancy.stores import (Mismatch, Progress, Summary, combine, file_sha256, private_export_dir, private_file,
                            write_manifest)
from tenancy.stores.postgres.checksums import checksum_query, summary_in, table_checks, table_checksum
from tenancy.stores.postgres.connection import DataError, VerificationError, as_tenant, open_checked, registered_state
from tenancy.stores.postgres import mover
from tenancy.stores.postgres.mover import advance_sequences, clear_tenant
from tenancy.stores.postgres.state import lock_registry
from tenancy.stores.postgres.tables import Table, select_tables


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
    n, digest = conn.execute(checksum_query(t, stage, False)).fetchone()
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
    with open_checked(source_dsn, tenant, "exporting the tenant's rows") as src:
        src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        picked = select_tables(src, source_dsn, tables)
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


def read_manifest(directory: Path, tenant: str, unreadable: type[Exception], hint: str = "") -> dict:
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
    manifest = read_manifest(directory, tenant, DataError, "; export again")
    expected = Summary.from_json(manifest["summary"])
    with open_checked(dsn, tenant, "checking the export") as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        picked = select_tables(conn, dsn, list(manifest["tables"]))
        as_tenant(conn, tenant)
        _check_files(conn, directory, manifest, {t.qualified: t for t in picked}, tenant)
        now = summary_in(conn, picked, tenant)
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
    manifest = read_manifest(directory, tenant, Mismatch)
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
    with open_checked(dsn, tenant, "importing the tenant's rows") as conn:
        picked = select_tables(conn, dsn, list(manifest["tables"]))
        if registered_state(conn, tenant) is None:
            conn.rollback()
            raise DataError(f"tenant '{tenant}' is not registered in database {describe_dsn(dsn)}; register it first")
        lock_registry(conn, tenant)
        as_tenant(conn, tenant)
        there = summary_in(conn, picked, tenant)
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
        loaded = summary_in(conn, picked, tenant)
        bad = [c for c in table_checks(expected, loaded) if not c.ok]
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
        mover.checkpoint("before import commit")   # through the module: a test replaces it there
        conn.commit()
    say(f"  imported and verified {loaded.count} rows of '{tenant}' into {describe_dsn(dsn)}")
    return loaded
