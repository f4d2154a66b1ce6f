"""The tenant registry (`tenancy.tenants`) of one database: who has rows there, and whether they may write.

`freeze` goes through `tenancy.freeze()`, which waits for every transaction that has already written the
tenant to end (see sql/001_tenancy.sql): once it returns, no earlier write of the tenant can still commit.
"""

from __future__ import annotations

from tenancy.lifecycle import OperationError, Refused
from tenancy.db import describe_dsn
from tenancy.stores import postgres as pg

FREEZE_TIMEOUT_S = 30


def state(dsn: str, tenant: str) -> str | None:
    with pg.connect(dsn) as c:
        row = c.execute("SELECT state FROM tenancy.tenants WHERE id = %s", (tenant,)).fetchone()
    return row[0] if row else None


def require_registered(dsn: str, tenant: str) -> str:
    """The tenant's state in that database; refuses when the tenant has nothing there (a wrong DSN)."""
    found = state(dsn, tenant)
    if found is None:
        raise Refused(f"tenant '{tenant}' is not registered in database {describe_dsn(dsn)}: is this the database that "
                      "holds its rows? Nothing was changed")
    return found


def freeze(dsn: str, tenant: str, to: str = "frozen", timeout_s: int = FREEZE_TIMEOUT_S) -> str:
    """Set a write-stopping state, waiting out in-flight writers (bounded). Returns the previous state."""
    with pg.connect(dsn) as c:
        try:
            previous = pg.freeze_in(c, tenant, to, timeout_s)
        except pg.FreezeTimeout as exc:
            raise OperationError(f"{exc} (database {describe_dsn(dsn)})") from None
        except pg.Mismatch:
            raise Refused(f"tenant '{tenant}' is not registered in database {describe_dsn(dsn)}; nothing was changed") from None
        c.commit()
    return previous


def set_state(dsn: str, tenant: str, new_state: str, plan: str | None = None, model: str | None = None) -> None:
    """Register (with plan and model) or change the state of an already registered tenant."""
    with pg.connect(dsn) as c:
        if plan and model:
            c.execute("INSERT INTO tenancy.tenants (id, plan, model, state) VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO "
                      "UPDATE SET state = excluded.state, plan = excluded.plan, model = excluded.model, updated_at = now()",
                      (tenant, plan, model, new_state))
        else:
            n = c.execute("UPDATE tenancy.tenants SET state = %s, updated_at = now() WHERE id = %s", (new_state, tenant)).rowcount
            if n == 0:
                raise OperationError(f"tenant '{tenant}' is not registered in {describe_dsn(dsn)}")
        c.commit()


def unregister(dsn: str, tenant: str) -> None:
    with pg.connect(dsn) as c:
        c.execute("DELETE FROM tenancy.tenants WHERE id = %s", (tenant,))
        c.commit()
