"""Shared by the move tests: interruptions between phases, two databases with the tenancy SQL, a writer thread acting as the
application, kill points, and what a test asserts about replication objects and rows."""

from __future__ import annotations

import random
import threading
import time
import uuid

import psycopg

from tenancy import db
from tenancy.stores import postgres as data
from tests import sqlhelp

class Boom(RuntimeError):
    """An interruption injected between two phases of a lifecycle command."""


def stop_before(phase):
    """A before-phase hook that interrupts the command just before `phase` runs."""
    def hook(name):
        if name == phase:
            raise Boom(f"interrupted before {name}")
    return hook


TENANT = "moving-co"
NEIGHBOURS = ("neighbour-a", "neighbour-b")
MOVE = "op-3f2a9c1b7d4e"     # an operation id, as a tier move gives one (opaque to the replication module)


class Killed(BaseException):
    """A kill at a step: not an Exception, so no cleanup handler in the module sees it."""


def kill_at(point: str):
    def step(name: str) -> None:
        if name == point:
            raise Killed(name)
    return step


def two_databases(pg_server, tenancy_db):
    """(pooled database, the tenant's own database), both with the tenancy SQL and app.visits (numbered by
    sequences, the three tenants' visits interleaved at the pool); replication objects left by a failing test
    are dropped before the databases go."""
    own = f"{tenancy_db}_own"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{own}"')
    db.apply(pg_server.dsn(dbname=own))
    sqlhelp.register(pg_server, tenancy_db, TENANT, *NEIGHBOURS)
    for t in (TENANT, *NEIGHBOURS):
        sqlhelp.seed(pg_server, tenancy_db, t, users=15)
    sqlhelp.add_visits(pg_server, tenancy_db, own)
    for _ in range(5):
        for t in (TENANT, *NEIGHBOURS):
            sqlhelp.visit(pg_server, tenancy_db, t)
    yield tenancy_db, own
    with psycopg.connect(pg_server.dsn(dbname=own), autocommit=True) as c:
        for (name,) in c.execute("SELECT subname FROM pg_subscription").fetchall():
            c.execute(f'ALTER SUBSCRIPTION "{name}" DISABLE')
            c.execute(f'ALTER SUBSCRIPTION "{name}" SET (slot_name = NONE)')
            c.execute(f'DROP SUBSCRIPTION "{name}"')
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        for _ in range(100):
            if not c.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active"
                             ).fetchall() and not c.execute("SELECT 1 FROM pg_replication_slots").fetchall():
                break
            time.sleep(0.05)
        c.execute(f'DROP DATABASE "{own}" WITH (FORCE)')
        c.execute("ALTER ROLE tenancy_replication NOLOGIN PASSWORD NULL")


def dsns(server, src: str, dst: str) -> tuple[str, str, str]:
    return server.dsn(dbname=src), server.dsn(dbname=dst), server.dsn(user="tenancy_replication", dbname=src)


def replication_objects(server, *databases: str) -> dict[str, list]:
    found = {}
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        found["slots"] = [r[0] for r in c.execute("SELECT slot_name FROM pg_replication_slots").fetchall()]
        found["subscriptions"] = [r[0] for r in c.execute("SELECT subname FROM pg_subscription").fetchall()]
    found["publications"], found["triggers"], found["recorded changes"] = [], [], 0
    for d in databases:
        with psycopg.connect(server.dsn(dbname=d), autocommit=True) as c:
            found["publications"] += [r[0] for r in c.execute("SELECT pubname FROM pg_publication").fetchall()]
            found["triggers"] += [r[0] for r in c.execute("SELECT tgname FROM pg_trigger WHERE tgname LIKE 'tmove%'")]
            found["recorded changes"] += c.execute("SELECT count(*) FROM tenancy.move_changes").fetchone()[0]
    return found


NONE_LEFT = {"slots": [], "subscriptions": [], "publications": [], "triggers": [], "recorded changes": 0}


def state(server, dbname: str, tenant: str = TENANT) -> str | None:
    with psycopg.connect(server.dsn(dbname=dbname), autocommit=True) as c:
        row = c.execute("SELECT state FROM tenancy.tenants WHERE id = %s", (tenant,)).fetchone()
        return row[0] if row else None


def sums(server, dbname: str, tenant: str) -> dict[str, tuple[int, str]]:
    with psycopg.connect(server.dsn(dbname=dbname)) as c:
        c.execute("SELECT tenancy.set_tenant(%s)", (tenant,))
        return {t: data.table_checksum(c, t, tenant) for t in data.isolated_tables(c)}


def foreign_rows(server, dbname: str, tenant: str) -> int:
    """Rows of any tenant other than `tenant` (read as the superuser: no RLS)."""
    with psycopg.connect(server.dsn(dbname=dbname), autocommit=True) as c:
        return sum(c.execute(f"SELECT count(*) FROM {t} WHERE tenant_id <> %s", (tenant,)).fetchone()[0]
                   for t in ("app.users", "app.itineraries", "app.comments", "app.likes"))


def user_rows(server, dbname: str, tenant: str = TENANT) -> list[tuple[uuid.UUID, str]]:
    with psycopg.connect(server.dsn(dbname=dbname), autocommit=True) as c:
        return c.execute("SELECT id, display_name FROM app.users WHERE tenant_id = %s ORDER BY id", (tenant,)).fetchall()


class Writer(threading.Thread):
    """The application: inserts and updates the tenant's users through tenancy_app, routed to whichever database
    the directory (the registry) says is active once the current one refuses. With `visits`, every insert also
    records a visit in app.visits, numbered by that database's sequences (a collision fails the writer)."""

    def __init__(self, server, databases: list[str], current: str, tenant: str = TENANT, visits: bool = False):
        super().__init__(daemon=True)
        self.server, self.databases, self.current, self.tenant = server, databases, current, tenant
        self.names: dict[uuid.UUID, str] = {}    # committed: user id -> display name
        self.ids: list[uuid.UUID] = []
        self.visits: list[tuple[int, str]] | None = [] if visits else None   # committed: (visit id, database)
        self.refusals: list[tuple[float, str, str]] = []  # (time, database, message)
        self.accepted: list[tuple[float, str]] = []       # (time, database) of each commit
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.rng = random.Random(7)

    def _route(self) -> None:
        for d in self.databases:
            if d != self.current and state(self.server, d, self.tenant) == "active":
                self.current = d

    def run(self) -> None:
        conns = {d: sqlhelp.connect(self.server, d, user="tenancy_app") for d in self.databases}
        try:
            while not self.stop.is_set():
                conn = conns[self.current]
                try:
                    with conn.transaction():
                        conn.execute("SELECT tenancy.set_tenant(%s)", (self.tenant,))
                        name, vid = f"n-{uuid.uuid4().hex[:8]}", None
                        if self.ids and self.rng.random() < 0.5:
                            uid = self.rng.choice(self.ids)
                            n = conn.execute("UPDATE app.users SET display_name = %s WHERE id = %s", (name, uid)).rowcount
                            if n != 1:
                                raise AssertionError(f"user {uid} missing in {self.current}")
                        else:
                            uid = conn.execute("INSERT INTO app.users (tenant_id, email, display_name) VALUES (%s, %s, %s) "
                                               "RETURNING id", (self.tenant, f"{name}@x.example", name)).fetchone()[0]
                            if self.visits is not None:
                                vid = conn.execute("INSERT INTO app.visits (tenant_id, path) VALUES (%s, %s) RETURNING id",
                                                   (self.tenant, f"/{name}")).fetchone()[0]
                    if vid is not None:
                        self.visits.append((vid, self.current))
                    if uid not in self.names:
                        self.ids.append(uid)
                    self.names[uid] = name
                    self.accepted.append((time.time(), self.current))
                except psycopg.errors.ReadOnlySqlTransaction as exc:
                    self.refusals.append((time.time(), self.current, str(exc).splitlines()[0]))
                    self._route()
                except (psycopg.Error, AssertionError) as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    return
                time.sleep(0.003)
        finally:
            for c in conns.values():
                c.close()

    def wait_writes(self, n: int) -> None:
        target = len(self.accepted) + n
        while len(self.accepted) < target and self.is_alive():
            time.sleep(0.01)

    def finish(self) -> None:
        self.stop.set()
        self.join(30)
        assert not self.errors, self.errors


def isolated(server, dbname: str) -> list[str]:
    """The database's isolated tables (one key range each in a full pass over a small tenant)."""
    with psycopg.connect(server.dsn(dbname=dbname)) as c:
        return data.isolated_tables(c)


def visit_ids(server, dbname: str, tenant: str = TENANT) -> list[int]:
    with psycopg.connect(server.dsn(dbname=dbname), autocommit=True) as c:
        return [r[0] for r in c.execute("SELECT id FROM app.visits WHERE tenant_id = %s ORDER BY id", (tenant,))]


def assert_visits_at(server, dbname: str, writer: Writer, seeded: list[int]) -> None:
    """The writer's visits rose across every move (each target's sequence was moved past the tenant's numbers
    before it took writes), and every committed visit is at `dbname` once, next to the seeded ones."""
    ids = [v for v, _ in writer.visits]
    assert {d for _, d in writer.visits} == set(writer.databases), "visits were not written at both databases"
    assert all(a < b for a, b in zip(ids, ids[1:])), f"a sequence went back after a move: {ids}"
    assert visit_ids(server, dbname) == sorted(seeded + ids)
