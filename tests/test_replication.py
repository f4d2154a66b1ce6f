"""Online tenant moves through logical replication, on a real PostgreSQL 15 (two databases in one server).

A writer thread keeps inserting and updating the moving tenant's rows through the runtime role while the move
runs; two neighbour tenants share the pooled database. Interruptions are simulated by raising a
BaseException at a named step (nothing of the module's error handling runs, as after a kill).
"""

from __future__ import annotations

import random
import threading
import time
import uuid

import psycopg
import pytest

from tenancy import db
from tenancy.stores import postgres as data
from tenancy.stores import replication as rep
from tests import sqlhelp

TENANT = "moving-co"
NEIGHBOURS = ("neighbour-a", "neighbour-b")


class Killed(BaseException):
    """A kill at a step: not an Exception, so no cleanup handler in the module sees it."""


def kill_at(point: str):
    def step(name: str) -> None:
        if name == point:
            raise Killed(name)
    return step


@pytest.fixture
def dbs(pg_server, tenancy_db):
    """(pooled database, the tenant's own database), both with the tenancy SQL; replication objects left by a
    failing test are dropped before the databases go."""
    own = f"{tenancy_db}_own"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{own}"')
        c.execute("ALTER ROLE tenancy_replication LOGIN")
    db.apply(pg_server.dsn(dbname=own))
    sqlhelp.register(pg_server, tenancy_db, TENANT, *NEIGHBOURS)
    for t in (TENANT, *NEIGHBOURS):
        sqlhelp.seed(pg_server, tenancy_db, t, users=15)
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


def dsns(server, src: str, dst: str) -> tuple[str, str, str]:
    return server.dsn(dbname=src), server.dsn(dbname=dst), server.dsn(user="tenancy_replication", dbname=src)


def replication_objects(server, *databases: str) -> dict[str, list]:
    found = {}
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        found["slots"] = [r[0] for r in c.execute("SELECT slot_name FROM pg_replication_slots").fetchall()]
        found["subscriptions"] = [r[0] for r in c.execute("SELECT subname FROM pg_subscription").fetchall()]
    found["publications"] = []
    for d in databases:
        with psycopg.connect(server.dsn(dbname=d), autocommit=True) as c:
            found["publications"] += [r[0] for r in c.execute("SELECT pubname FROM pg_publication").fetchall()]
    return found


NONE_LEFT = {"slots": [], "subscriptions": [], "publications": []}


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


def user_rows(server, dbname: str, tenant: str = TENANT) -> list[tuple[int, str]]:
    with psycopg.connect(server.dsn(dbname=dbname), autocommit=True) as c:
        return c.execute("SELECT id, display_name FROM app.users WHERE tenant_id = %s ORDER BY id", (tenant,)).fetchall()


class Writer(threading.Thread):
    """The application: inserts and updates the tenant's users through tenancy_app, routed to whichever database
    the directory (the registry) says is active once the current one refuses."""

    def __init__(self, server, databases: list[str], current: str):
        super().__init__(daemon=True)
        self.server, self.databases, self.current = server, databases, current
        self.names: dict[int, str] = {}          # committed: user id -> display name
        self.ids: list[int] = []
        self.refusals: list[tuple[float, str, str]] = []  # (time, database, message)
        self.accepted: list[tuple[float, str]] = []       # (time, database) of each commit
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.rng = random.Random(7)

    def _route(self) -> None:
        for d in self.databases:
            if d != self.current and state(self.server, d) == "active":
                self.current = d

    def run(self) -> None:
        conns = {d: sqlhelp.connect(self.server, d, user="tenancy_app") for d in self.databases}
        try:
            while not self.stop.is_set():
                conn = conns[self.current]
                try:
                    with conn.transaction():
                        conn.execute("SELECT tenancy.set_tenant(%s)", (TENANT,))
                        name = f"n-{uuid.uuid4().hex[:8]}"
                        if self.ids and self.rng.random() < 0.5:
                            uid = self.rng.choice(self.ids)
                            n = conn.execute("UPDATE app.users SET display_name = %s WHERE id = %s", (name, uid)).rowcount
                            if n != 1:
                                raise AssertionError(f"user {uid} missing in {self.current}")
                        else:
                            uid = conn.execute("INSERT INTO app.users (tenant_id, email, display_name) VALUES (%s, %s, %s) "
                                               "RETURNING id", (TENANT, f"{name}@x.example", name)).fetchone()[0]
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


def online_move(server, src: str, dst: str, writer: Writer) -> rep.SwitchReport:
    source, target, conninfo = dsns(server, src, dst)
    rep.start(source, target, TENANT, None, conninfo)
    writer.wait_writes(20)                 # writes keep landing while the rows copy
    rep.wait_synced(source, target, TENANT, timeout=120)
    writer.wait_writes(20)
    report = rep.switch(source, target, TENANT)
    writer.wait_writes(20)                 # and continue at the target (its sequences were moved)
    return report


def assert_window(writer: Writer, report: rep.SwitchReport, dst: str, refusals: list) -> None:
    """Refusals only between the freeze and the first write accepted at the target, and only 'frozen' ones."""
    first_at_target = min(t for t, d in writer.accepted if d == dst and t >= report.freeze_started_at)
    assert first_at_target >= report.freeze_ended_at, "the target accepted a write before the switch"
    outside = [r for r in refusals if not report.freeze_started_at <= r[0] <= first_at_target]
    assert outside == [], f"writes refused outside the freeze window: {outside}"
    # "readonly": the source flipped after the target, before this writer re-read the directory
    assert all(f"tenant {TENANT} is frozen" in m or f"tenant {TENANT} is readonly" in m for _, _, m in refusals), refusals


def test_tenant_moves_out_and_back_while_it_writes(pg_server, dbs):
    pooled, own = dbs
    neighbours = {t: sums(pg_server, pooled, t) for t in NEIGHBOURS}
    writer = Writer(pg_server, [pooled, own], pooled)
    writer.start()
    try:
        out = online_move(pg_server, pooled, own, writer)
        assert_window(writer, out, own, list(writer.refusals))
        assert (state(pg_server, pooled), state(pg_server, own)) == ("readonly", "active")
        assert replication_objects(pg_server, pooled, own) == NONE_LEFT
        assert foreign_rows(pg_server, own, TENANT) == 0, "a neighbour's rows reached the tenant's own database"
        assert out.rows["app.users"] >= 15 + 1

        # The pooled copy is deleted after the rollback window; then the tenant moves back.
        data.delete(pg_server.dsn(dbname=pooled), TENANT)
        seen = len(writer.refusals)
        back = online_move(pg_server, own, pooled, writer)
        writer.finish()
        assert_window(writer, back, pooled, writer.refusals[seen:])
        assert (state(pg_server, own), state(pg_server, pooled)) == ("readonly", "active")
    finally:
        writer.stop.set()
    assert replication_objects(pg_server, pooled, own) == NONE_LEFT
    # Every committed write is at the final home exactly once, with its last committed value.
    rows = user_rows(pg_server, pooled)
    assert len(rows) == len({r[0] for r in rows})
    assert {uid: name for uid, name in rows if not name.startswith("User ")} == writer.names
    assert len([1 for _, name in rows if name.startswith("User ")]) == 15
    assert any(d == own for _, d in writer.accepted), "no write landed in the tenant's own database"
    for t in NEIGHBOURS:
        assert sums(pg_server, pooled, t) == neighbours[t], f"neighbour {t} changed"
    assert foreign_rows(pg_server, own, TENANT) == 0


def seeded_sums(server, pooled: str) -> dict:
    return sums(server, pooled, TENANT)


def finish_move(server, pooled: str, own: str) -> rep.SwitchReport:
    source, target, conninfo = dsns(server, pooled, own)
    rep.start(source, target, TENANT, None, conninfo)
    rep.wait_synced(source, target, TENANT, timeout=120)
    return rep.switch(source, target, TENANT)


def assert_aborted(server, pooled: str, own: str, before: dict) -> None:
    assert replication_objects(server, pooled, own) == NONE_LEFT
    assert state(server, pooled) == "active", "the source must take writes again after an abort"
    assert state(server, own) is None, "the target's registry entry made by start must go"
    assert sums(server, pooled, TENANT) == before
    with psycopg.connect(server.dsn(dbname=own), autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM app.users").fetchone()[0] == 0


def assert_switched(server, pooled: str, own: str, before: dict) -> None:
    assert replication_objects(server, pooled, own) == NONE_LEFT
    assert (state(server, pooled), state(server, own)) == ("readonly", "active")
    assert sums(server, own, TENANT) == before
    assert foreign_rows(server, own, TENANT) == 0


@pytest.mark.parametrize("point", ["publication", "target frozen", "slot"])
@pytest.mark.parametrize("then", ["resume", "abort"])
def test_start_killed_at_each_step(pg_server, dbs, point, then):
    pooled, own = dbs
    source, target, conninfo = dsns(pg_server, pooled, own)
    before = seeded_sums(pg_server, pooled)
    with pytest.raises(Killed):
        rep.start(source, target, TENANT, None, conninfo, checkpoint=kill_at(point))
    with pytest.raises(rep.ReplicationError, match="half started .*run start again, or abort"):
        rep.switch(source, target, TENANT)
    if then == "abort":
        rep.abort(source, target, TENANT)
        assert_aborted(pg_server, pooled, own, before)
        assert rep.abort(source, target, TENANT) == [], "a second abort has nothing to do"
    else:
        finish_move(pg_server, pooled, own)
        assert_switched(pg_server, pooled, own, before)


def test_interrupted_after_start_and_after_sync_abort_cleanly(pg_server, dbs):
    pooled, own = dbs
    source, target, conninfo = dsns(pg_server, pooled, own)
    before = seeded_sums(pg_server, pooled)
    n = rep.start(source, target, TENANT, None, conninfo)
    assert rep.start(source, target, TENANT, None, conninfo) == n, "start again continues the same move"
    assert [str(o) for o in rep.orphans(source, owned=[n.base])] == []
    rep.abort(source, target, TENANT)                       # right after start
    assert_aborted(pg_server, pooled, own, before)
    rep.start(source, target, TENANT, None, conninfo)
    rep.wait_synced(source, target, TENANT, timeout=120)
    assert sums(pg_server, own, TENANT) == before
    rep.abort(source, target, TENANT)                       # synced, not switched
    assert_aborted(pg_server, pooled, own, before)


def test_interrupted_mid_sync_resumes_or_aborts(pg_server, dbs):
    pooled, own = dbs
    source, target, conninfo = dsns(pg_server, pooled, own)
    before = seeded_sums(pg_server, pooled)
    # A lock on one target table holds its initial copy back: the move is mid-sync, deterministically.
    with sqlhelp.connect(pg_server, own) as blocker:
        blocker.execute("LOCK TABLE app.likes IN SHARE MODE")
        rep.start(source, target, TENANT, None, conninfo)
        with pytest.raises(rep.SyncTimeout, match=r"app\.likes \(state [ifd]\)"):
            rep.wait_synced(source, target, TENANT, timeout=1)
        with pytest.raises(rep.ReplicationError, match=r"not synchronised yet \([^)]*app\.likes[^)]*\): run wait_synced first"):
            rep.switch(source, target, TENANT)
        assert state(pg_server, pooled) == "active", "a refused switch must not freeze the tenant"
        blocker.rollback()
    rep.abort(source, target, TENANT)
    assert_aborted(pg_server, pooled, own, before)
    with sqlhelp.connect(pg_server, own) as blocker:
        blocker.execute("LOCK TABLE app.likes IN SHARE MODE")
        rep.start(source, target, TENANT, None, conninfo)
        with pytest.raises(rep.SyncTimeout):
            rep.wait_synced(source, target, TENANT, timeout=1)
        blocker.rollback()
    rep.wait_synced(source, target, TENANT, timeout=120)    # resumed
    report = rep.switch(source, target, TENANT)
    assert report.rows == {t: n for t, (n, _) in before.items()}
    assert_switched(pg_server, pooled, own, before)


@pytest.mark.parametrize("point", ["frozen", "caught up", "verified", "subscription dropped", "target active"])
def test_switch_killed_inside_the_freeze_resumes(pg_server, dbs, point):
    pooled, own = dbs
    source, target, conninfo = dsns(pg_server, pooled, own)
    before = seeded_sums(pg_server, pooled)
    rep.start(source, target, TENANT, None, conninfo)
    rep.wait_synced(source, target, TENANT, timeout=120)
    with pytest.raises(Killed):
        rep.switch(source, target, TENANT, checkpoint=kill_at(point))
    assert state(pg_server, pooled) == "frozen"
    report = rep.switch(source, target, TENANT)
    assert report.resumed or report.already_switched
    assert_switched(pg_server, pooled, own, before)
    assert rep.switch(source, target, TENANT).already_switched, "a switch called again reports it is done"
    with pytest.raises(rep.ReplicationError, match="already switched .* cannot be aborted"):
        rep.abort(source, target, TENANT)


@pytest.mark.parametrize("point", ["frozen", "verified", "subscription dropped"])
def test_switch_killed_inside_the_freeze_aborts(pg_server, dbs, point):
    pooled, own = dbs
    source, target, conninfo = dsns(pg_server, pooled, own)
    before = seeded_sums(pg_server, pooled)
    rep.start(source, target, TENANT, None, conninfo)
    rep.wait_synced(source, target, TENANT, timeout=120)
    with pytest.raises(Killed):
        rep.switch(source, target, TENANT, checkpoint=kill_at(point))
    done = rep.abort(source, target, TENANT)
    assert "source state back to active" in done
    assert_aborted(pg_server, pooled, own, before)


def test_orphans_lists_what_no_move_owns(pg_server, dbs):
    pooled, own = dbs
    source, target, conninfo = dsns(pg_server, pooled, own)
    with pytest.raises(Killed):
        rep.start(source, target, TENANT, None, conninfo, checkpoint=kill_at("slot"))
    n = rep.names(TENANT, source, target)
    found = rep.orphans(source)
    assert {(o.kind, o.name) for o in found} == {("slot", n.slot), ("publication", n.publication)}
    slot = next(o for o in found if o.kind == "slot")
    assert slot.database == pooled and "inactive, holds" in slot.detail
    assert rep.orphans(source, owned=[n.base]) == []
    assert rep.cleanup(source, target, TENANT) == [f"slot {n.slot}", f"publication {n.publication}"]
    assert rep.orphans(source) == []
    assert rep.cleanup(source, target, TENANT) == [], "cleanup is idempotent"


def test_table_without_tenant_id_in_replica_identity_is_refused(pg_server, dbs):
    pooled, own = dbs
    source, target, conninfo = dsns(pg_server, pooled, own)
    with sqlhelp.connect(pg_server, pooled, autocommit=True) as c:
        c.execute("SET ROLE tenancy_owner")
        c.execute("CREATE TABLE app.notes (tenant_id text NOT NULL, id bigint PRIMARY KEY, body text)")
        c.execute("SELECT tenancy.isolate('app.notes')")
    with pytest.raises(rep.ReplicaIdentityError) as err:
        rep.start(source, target, TENANT, None, conninfo)
    msg = str(err.value)
    assert msg.startswith("table app.notes cannot be moved online: its replica identity (primary key (id)) does not "
                          "include tenant_id")
    assert "ALTER TABLE app.notes REPLICA IDENTITY USING INDEX" in msg and "\n" not in msg
    assert replication_objects(pg_server, pooled, own) == NONE_LEFT, "nothing may be created before the check"
    assert state(pg_server, own) is None


def test_start_refuses_a_target_holding_the_tenant_and_a_role_without_bypassrls(pg_server, dbs):
    pooled, own = dbs
    source, target, conninfo = dsns(pg_server, pooled, own)
    sqlhelp.register(pg_server, own, TENANT)
    sqlhelp.seed(pg_server, own, TENANT, users=1)
    with pytest.raises(rep.ReplicationError, match="the target already holds rows of 'moving-co'"):
        rep.start(source, target, TENANT, None, conninfo)
    with pytest.raises(rep.ReplicationError, match="role tenancy_app lacks REPLICATION: ALTER ROLE tenancy_app REPLICATION"):
        rep.start(source, target, TENANT, None, pg_server.dsn(user="tenancy_app", dbname=pooled))
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        c.execute("DROP ROLE IF EXISTS repl_without_bypass; CREATE ROLE repl_without_bypass LOGIN REPLICATION")
    with pytest.raises(rep.ReplicationError, match="role repl_without_bypass lacks BYPASSRLS: row-level security would let "
                                                   "the initial copy see zero rows and report success"):
        rep.start(source, target, TENANT, None, pg_server.dsn(user="repl_without_bypass", dbname=pooled))
    assert replication_objects(pg_server, pooled, own) == NONE_LEFT


def test_names_are_short_valid_and_distinct():
    a = "host=127.0.0.1 port=5432 dbname=pooled user=postgres"
    b = "host=127.0.0.1 port=5432 dbname=acme user=tenancy_owner password=secret"
    long1, long2 = "t" * 49 + "a", "t" * 49 + "b"
    made = [rep.names(t, s, d).base for t in (long1, long2, "acme", "ac-me") for s, d in ((a, b), (b, a))]
    assert len(set(made)) == len(made)
    for name in made:
        assert len(name.encode()) <= 63 and rep.NAME_RE.match(name), name
        assert "secret" not in name
    assert rep.names("acme", a, b) == rep.names("acme", a.replace("user=postgres", "user=other"), b), \
        "the user does not change a move's identity"
