"""Connections to a tenancy database: one-line errors that never show a password, the schema check, the tenant
set for a transaction (`as_tenant`) with the output settings that checksums and exports rely on.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import psycopg
from psycopg import sql

from tenancy.db import describe_dsn
from tenancy.stores import Mismatch, StoreError


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
def one_line_errors(tenant: str, dsn: str, doing: str) -> Iterator[None]:
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
def open_checked(dsn: str, tenant: str, doing: str) -> Iterator[psycopg.Connection]:
    conn = connect(dsn, tenant)
    try:
        with one_line_errors(tenant, dsn, doing):
            _require_schema(conn, dsn)
            yield conn
    finally:
        conn.close()


def database_identity(conn: psycopg.Connection) -> tuple[int, int]:
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


def registered_state(conn: psycopg.Connection, tenant: str) -> str | None:
    row = conn.execute("SELECT state FROM tenancy.tenants WHERE id = %s", (tenant,)).fetchone()
    return row[0] if row else None
