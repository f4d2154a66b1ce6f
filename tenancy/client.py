"""How an application finds a tenant's databases, bucket and Firestore database: through the registry, so that
routing follows a move the moment the move switches (not when a Pulumi update or a mounted file catches up).

    router = Router(registry_dsn, env, user="tenancy_app", password=...)
    with router.transaction("acme", "app.users") as conn:    # the tenant bound to this transaction
        conn.execute("INSERT INTO app.users ...")
    with router.documents("acme", "users/u1") as where:      # a FirestoreLocation: where.path("users/u1")
        firestore_client.document(where.path("users/u1")).set({...})
    with router.objects("acme") as (store, prefix):          # the tenant's bucket and its prefix there
        store.write(prefix + "avatars/1.png", data)

The contract:
- A tenant's registry row names, per PostgreSQL store, the database holding it (`stores.databases`), and the
  registry's `databases` record says how to reach each (never a password: the application brings its own
  credential); it names the tenant's bucket and prefix (`stores.objects`) and its Firestore database and root
  (`stores.firestore`). Nothing else (the directory ConfigMap, a mounted file) routes a write.
- PostgreSQL: the database holding a table is cached until that database refuses a write because the tenant
  is frozen, read-only or not registered there (SQLSTATE 25006 or 42704 from the tenancy SQL's write guard):
  an operation has moved, or is moving, the tenant. `transaction` then raises `Moved`; the caller retries, and
  the next transaction reads the registry again -- the target once the move has switched. The database
  enforces this: no cache can make a write land in the wrong place.
- Documents and objects have no such guard in their stores, so the registry is: `documents` and `objects`
  act on the tenant's state as read from the registry at most `STATE_TTL_S` earlier, and raise `Moved`
  unless it is `active`. `documents` is given the paths (relative to the tenant's root) of the documents the
  block writes -- sets, updates and deletes: while an operation moves the tenant (the registry row names
  it) they are recorded beside the tenant's documents before the block runs, and the move's last pass,
  inside its freeze, copies exactly those instead of listing every document. A write inside the block must land within that bound of the read; a block that
  outlives it reads the state again and raises `Moved` if the tenant was frozen meanwhile (write it again:
  the retry goes where the registry then points). An operation that freezes the tenant waits `STATE_TTL_S`
  after marking it frozen in the registry before it takes its last look at the documents and objects, so
  every write it did not see was refused. Only durations are compared (each side's own monotonic clock).
- Reads keep working during a freeze; only writes are refused, for as long as the switch takes.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tenancy.errors import TenancyError

REFUSED = {"25006", "42704"}     # the write guard: frozen / read-only / suspended, or not registered here
STATE_TTL_S = 0.25               # how long a client acts on a tenant's state read from the registry


class Moved(TenancyError):
    """The tenant's store refused the write, or the registry says it is not taking writes: retry after a moment;
    the route is read again."""


class UnknownTenant(TenancyError):
    exit_code = 2


@dataclass(frozen=True)
class Entry:
    """A tenant's registry row as one read saw it; `read_at` is this process's monotonic clock when the read
    was sent (so a bound measured from it is never shorter than the truth)."""

    tenant: str
    state: str
    stores: dict[str, Any]
    read_at: float
    operation: str | None = None     # the operation moving the tenant, if any


class Router:
    def __init__(self, registry_dsn: str, env: str, *, user: str | None = None, password: str | None = None,
                 state_ttl: float = STATE_TTL_S):
        self.registry_dsn, self.env, self.user, self.password = registry_dsn, env, user, password
        self.state_ttl = state_ttl
        self._routes: dict[tuple[str, str], str] = {}
        self._entries: dict[str, Entry] = {}
        self._stores: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._registry: psycopg.Connection | None = None

    # ------------------------------------------------------------------------------------------- registry

    def _query(self, q: str, args: tuple) -> Any:
        """One registry query on this router's connection (opened again after a failure)."""
        with self._lock:
            for attempt in (0, 1):
                try:
                    if self._registry is None or self._registry.closed:
                        self._registry = psycopg.connect(self.registry_dsn, autocommit=True)
                    return self._registry.execute(q, args).fetchone()
                except psycopg.OperationalError:
                    self._registry = None
                    if attempt:
                        raise

    def entry(self, tenant: str, *, fresh: bool = False) -> Entry:
        """The tenant's registry row, read again when older than the state bound (or `fresh`)."""
        with self._lock:
            found = self._entries.get(tenant)
        if found is not None and not fresh and time.monotonic() - found.read_at < self.state_ttl:
            return found
        read_at = time.monotonic()
        row = self._query("SELECT state, stores, operation FROM registry.tenants WHERE id = %s AND state <> 'offboarded'",
                          (tenant,))
        if row is None:
            raise UnknownTenant(f"tenant '{tenant}' is not in the registry of '{self.env}'")
        e = Entry(tenant, row[0], row[1] or {}, read_at, row[2])
        with self._lock:
            self._entries[tenant] = e
        return e

    def _lookup(self, tenant: str, table: str) -> tuple[str, dict[str, Any]]:
        from tenancy.operations.stores import connection_dsn

        stores = self.entry(tenant, fresh=True).stores
        store = next((s for s, tables in (stores.get("postgres") or {}).items() if table in tables), None)
        name = (stores.get("databases") or {}).get(store) if store else None
        if name is None:
            raise UnknownTenant(f"tenant '{tenant}' has no database holding {table}")
        db = self._query("SELECT connection FROM registry.databases WHERE name = %s", (name,))
        if db is None:
            raise UnknownTenant(f"the registry has no connection for database {name}")
        return name, {**conninfo_to_dict(connection_dsn(db[0]))}

    # ----------------------------------------------------------------------------------------- PostgreSQL

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
            self._entries.pop(tenant, None)

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

    # --------------------------------------------------------------------------------- documents, objects

    @contextmanager
    def _writing(self, tenant: str) -> Iterator[Entry]:
        e = self.entry(tenant)
        if e.state != "active":
            raise Moved(f"tenant '{tenant}' is {e.state} in the registry: its documents and objects take no writes now")
        yield e
        if time.monotonic() - e.read_at >= self.state_ttl:
            # The write may have landed after an operation stopped looking: if one began, say so (write it again).
            now = self.entry(tenant, fresh=True)
            if now.state != "active" or now.stores != e.stores:
                raise Moved(f"tenant '{tenant}' became {now.state} while this write ran longer than {self.state_ttl:g}s; "
                            "it may not have moved with the tenant: write it again")

    @contextmanager
    def documents(self, tenant: str, *paths: str):
        """The tenant's Firestore location (`tenancy.stores.firestore.FirestoreLocation`: project, database, root)
        for writes, made inside the block, of the documents at `paths` (relative to the root: "users/u1")."""
        from tenancy.stores import firestore as fs

        if not paths:
            raise ValueError("name the documents the block writes (paths relative to the tenant's root)")
        with self._writing(tenant) as e:
            f = e.stores.get("firestore") or {}
            if not f:
                raise UnknownTenant(f"tenant '{tenant}' has no Firestore database in the registry")
            loc = fs.FirestoreLocation(f["project"], f["database"], f.get("root", ""))
            if e.stores.get("moving"):     # a move is copying the tenant's stores: its last pass copies these
                fs.record_changes(loc, list(paths))
            yield loc

    @contextmanager
    def objects(self, tenant: str):
        """(store, prefix) of the tenant's objects (`tenancy.stores.objects.Store`) for writes made inside the
        block: names are `prefix + relative name`."""
        from tenancy.stores import objects as obj

        with self._writing(tenant) as e:
            url = e.stores.get("objects")
            if not url or not url.startswith("gs://"):
                raise UnknownTenant(f"tenant '{tenant}' has no bucket in the registry")
            bucket, _, prefix = url[len("gs://"):].partition("/")
            with self._lock:
                store = self._stores.get(bucket)
            if store is None:
                store = obj.open_store(f"gs://{bucket}")
                with self._lock:
                    self._stores[bucket] = store
            yield store, prefix

    def close(self) -> None:
        with self._lock:
            if self._registry is not None:
                self._registry.close()
                self._registry = None
