"""The tenant's row in a database's registry: its state, its registration, and the one write freeze
(`freeze_in`) that waits out the tenant's open writers.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from tenancy.stores import Mismatch
from tenancy.stores.postgres.checksums import row_counts
from tenancy.stores.postgres.connection import DataError, FREEZE_TIMEOUT_S, as_tenant, connect, one_line_errors
from tenancy.stores.postgres.tables import all_tables


def set_state(dsn: str, tenant: str, state: str, *, plan: str | None = None, model: str | None = None) -> str | None:
    """Set the tenant's state in this database's registry (registering it when plan and model are given);
    returns the previous state (None: it was not registered). Not a freeze: see `freeze_in`."""
    with connect(dsn, tenant) as conn:
        with one_line_errors(tenant, dsn, "setting the tenant's state"):
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
        with one_line_errors(tenant, dsn, "unregistering the tenant"):
            lock_registry(conn, tenant)
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
        with one_line_errors(tenant, dsn, "freezing the tenant's writes"):
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


def lock_registry(conn: psycopg.Connection, tenant: str) -> None:
    """Lock the tenant's registry row for this transaction: waits out (bounded) and then holds off every writer
    of the tenant, whose write guard takes a share lock on that row."""
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{FREEZE_TIMEOUT_S}s")))
    conn.execute("SELECT 1 FROM tenancy.tenants WHERE id = %s FOR UPDATE", (tenant,))


def _all_tables_empty(conn: psycopg.Connection, tenant: str) -> bool:
    return not any(row_counts(conn, all_tables(conn), tenant).values())
