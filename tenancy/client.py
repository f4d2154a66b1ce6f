"""How an application finds a tenant's databases: through the registry, so that routing follows a move the moment
the move switches (not when a Pulumi update or a mounted file catches up).

    router = Router(registry_dsn, env, user="tenancy_app", password=...)
    with router.transaction("acme", "app.users") as conn:    # the tenant bound to this transaction
        conn.execute("INSERT INTO app.users ...")

The contract:
- A tenant's entry in the registry names, per PostgreSQL store, the database holding it (`stores.databases`),
  and the registry's `databases` record says how to reach each (never a password: the application brings its
  own credential). `Router.dsn(tenant, table)` resolves the database holding `table` for `tenant`, cached.
- The cache is invalidated when the tenant's database refuses a write because the tenant is frozen, read-only or
  not registered there (SQLSTATE 25006 or 42704 from the tenancy SQL's write guard): an operation has moved, or is
  moving, the tenant. `transaction` then raises `Moved`; the caller retries, and the next `dsn` reads the registry
  again -- the target once the move has switched.
- Reads keep working during a freeze; only writes are refused, for as long as the switch takes.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tenancy.errors import TenancyError

REFUSED = {"25006", "42704"}     # the write guard: frozen / read-only / suspended, or not registered here


class Moved(TenancyError):
    """The tenant's database refused the write: retry after a moment; the route is read again."""


class UnknownTenant(TenancyError):
    exit_code = 2


class Router:
    def __init__(self, registry_dsn: str, env: str, *, user: str | None = None, password: str | None = None):
        self.registry_dsn, self.env, self.user, self.password = registry_dsn, env, user, password
        self._routes: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def _lookup(self, tenant: str, table: str) -> tuple[str, dict[str, Any]]:
        from tenancy.operations.stores import connection_dsn

        with psycopg.connect(self.registry_dsn, autocommit=True) as c:
            row = c.execute("SELECT t.stores FROM registry.tenants t WHERE t.id = %s AND t.state <> 'offboarded'",
                            (tenant,)).fetchone()
            if row is None:
                raise UnknownTenant(f"tenant '{tenant}' is not in the registry of '{self.env}'")
            stores = row[0]
            store = next((s for s, tables in (stores.get("postgres") or {}).items() if table in tables), None)
            name = (stores.get("databases") or {}).get(store) if store else None
            if name is None:
                raise UnknownTenant(f"tenant '{tenant}' has no database holding {table}")
            db = c.execute("SELECT connection FROM registry.databases WHERE name = %s", (name,)).fetchone()
        if db is None:
            raise UnknownTenant(f"the registry has no connection for database {name}")
        return name, {**conninfo_to_dict(connection_dsn(db[0]))}

    def dsn(self, tenant: str, table: str) -> str:
        key = (tenant, table)
        with self._lock:
            found = self._routes.get(key)
        if found:
            return found
        _, params = self._lookup(tenant, table)
        if self.user:
            params["user"] = self.user
        if self.password:
            params["password"] = self.password
        dsn = make_conninfo(**params)
        with self._lock:
            self._routes[key] = dsn
        return dsn

    def invalidate(self, tenant: str) -> None:
        with self._lock:
            for key in [k for k in self._routes if k[0] == tenant]:
                del self._routes[key]

    @contextmanager
    def transaction(self, tenant: str, table: str) -> Iterator[psycopg.Connection]:
        """A transaction on the database holding `table` for `tenant`, the tenant bound to it; `Moved` when that
        database refuses the tenant's write (the route is forgotten: retry)."""
        dsn = self.dsn(tenant, table)
        try:
            with psycopg.connect(dsn) as conn:
                with conn.transaction():
                    conn.execute("SELECT tenancy.set_tenant(%s)", (tenant,))
                    yield conn
        except psycopg.Error as exc:
            if getattr(exc, "sqlstate", None) in REFUSED:
                self.invalidate(tenant)
                raise Moved(f"tenant '{tenant}': {str(exc).splitlines()[0]}") from None
            raise
