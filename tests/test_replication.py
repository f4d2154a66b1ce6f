"""Online tenant moves through logical replication, on a real PostgreSQL 15 (two databases in one server).

A writer thread keeps inserting and updating the moving tenant's rows through the runtime role while the move
runs; two neighbour tenants share the pooled database. Interruptions are simulated by raising a
BaseException at a named step (nothing of the module's error handling runs, as after a kill).
"""

from __future__ import annotations

import functools
import uuid

import psycopg
import pytest

from tenancy.stores import postgres as data
from tenancy.stores import replica_verify as rv
from tenancy.stores import replication as rep
from tests import sqlhelp
from tests.movehelp import (MOVE, NEIGHBOURS, NONE_LEFT, TENANT, Killed, Writer, assert_visits_at, dsns, foreign_rows,
                            isolated, kill_at, replication_objects, state, sums, two_databases, user_rows, visit_ids)


dbs = pytest.fixture(two_databases)


def online_move(server, src: str, dst: str, writer: Writer, move: str) -> rep.SwitchReport:
    source, target, conninfo = dsns(server, src, dst)
    rep.start(source, target, TENANT, None, conninfo, move=move)
    writer.wait_writes(20)                 # writes keep landing while the rows copy
    rep.wait_synced(source, target, TENANT, move=move, timeout=120)
    writer.wait_writes(20)
    report = rep.switch(source, target, TENANT, move=move)
    writer.wait_writes(20)                 # and continue at the target (its sequences were moved: app.visits)
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
    seeded_visits = visit_ids(pg_server, pooled)
    writer = Writer(pg_server, [pooled, own], pooled, visits=True)
    writer.start()
    try:
        out = online_move(pg_server, pooled, own, writer, "op-out")
        assert_window(writer, out, own, list(writer.refusals))
        assert (state(pg_server, pooled), state(pg_server, own)) == ("readonly", "active")
        assert replication_objects(pg_server, pooled, own) == NONE_LEFT
        assert foreign_rows(pg_server, own, TENANT) == 0, "a neighbour's rows reached the tenant's own database"
        assert out.rows["app.users"] >= 15 + 1

        # The pooled copy is deleted after the rollback window; then the tenant moves back.
        data.delete(pg_server.dsn(dbname=pooled), TENANT)
        seen = len(writer.refusals)
        back = online_move(pg_server, own, pooled, writer, "op-back")
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
    assert_visits_at(pg_server, pooled, writer, seeded_visits)
    for t in NEIGHBOURS:
        assert sums(pg_server, pooled, t) == neighbours[t], f"neighbour {t} changed"
    assert foreign_rows(pg_server, own, TENANT) == 0


def seeded_sums(server, pooled: str) -> dict:
    return sums(server, pooled, TENANT)


def finish_move(server, pooled: str, own: str) -> rep.SwitchReport:
    source, target, conninfo = dsns(server, pooled, own)
    rep.start(source, target, TENANT, None, conninfo, move=MOVE)
    rep.wait_synced(source, target, TENANT, move=MOVE, timeout=120)
    return rep.switch(source, target, TENANT, move=MOVE)


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
        rep.start(source, target, TENANT, None, conninfo, move=MOVE, checkpoint=kill_at(point))
    with pytest.raises(rep.ReplicationError, match="half started .*run start again, or abort"):
        rep.switch(source, target, TENANT, move=MOVE)
    if then == "abort":
        rep.abort(source, target, TENANT, move=MOVE)
        assert_aborted(pg_server, pooled, own, before)
        assert rep.abort(source, target, TENANT, move=MOVE) == [], "a second abort has nothing to do"
    else:
        finish_move(pg_server, pooled, own)
        assert_switched(pg_server, pooled, own, before)


def test_interrupted_after_start_and_after_sync_abort_cleanly(pg_server, dbs):
    pooled, own = dbs
    source, target, conninfo = dsns(pg_server, pooled, own)
    before = seeded_sums(pg_server, pooled)
    n = rep.start(source, target, TENANT, None, conninfo, move=MOVE)
    assert rep.start(source, target, TENANT, None, conninfo, move=MOVE) == n, "start again continues the same move"
    assert [str(o) for o in rep.orphans(source, owned=[n.base])] == []
    rep.abort(source, target, TENANT, move=MOVE)                       # right after start
    assert_aborted(pg_server, pooled, own, before)
    rep.start(source, target, TENANT, None, conninfo, move=MOVE)
    rep.wait_synced(source, target, TENANT, move=MOVE, timeout=120)
    assert sums(pg_server, own, TENANT) == before
    rep.abort(source, target, TENANT, move=MOVE)                       # synced, not switched
    assert_aborted(pg_server, pooled, own, before)


def test_interrupted_mid_sync_resumes_or_aborts(pg_server, dbs):
    pooled, own = dbs
    source, target, conninfo = dsns(pg_server, pooled, own)
    before = seeded_sums(pg_server, pooled)
    # A lock on one target table holds its initial copy back: the move is mid-sync, deterministically.
    with sqlhelp.connect(pg_server, own) as blocker:
        blocker.execute("LOCK TABLE app.likes IN SHARE MODE")
        rep.start(source, target, TENANT, None, conninfo, move=MOVE)
        with pytest.raises(rep.SyncTimeout, match=r"app\.likes \(state [ifd]\)"):
            rep.wait_synced(source, target, TENANT, move=MOVE, timeout=1)
        with pytest.raises(rep.ReplicationError, match=r"not synchronised yet \([^)]*app\.likes[^)]*\): run wait_synced first"):
            rep.switch(source, target, TENANT, move=MOVE)
        assert state(pg_server, pooled) == "active", "a refused switch must not freeze the tenant"
        blocker.rollback()
    rep.abort(source, target, TENANT, move=MOVE)
    assert_aborted(pg_server, pooled, own, before)
    with sqlhelp.connect(pg_server, own) as blocker:
        blocker.execute("LOCK TABLE app.likes IN SHARE MODE")
        rep.start(source, target, TENANT, None, conninfo, move=MOVE)
        with pytest.raises(rep.SyncTimeout):
            rep.wait_synced(source, target, TENANT, move=MOVE, timeout=1)
        blocker.rollback()
    rep.wait_synced(source, target, TENANT, move=MOVE, timeout=120)    # resumed
    report = rep.switch(source, target, TENANT, move=MOVE)
    assert report.rows == {t: n for t, (n, _) in before.items()}
    assert_switched(pg_server, pooled, own, before)


@pytest.mark.parametrize("point", ["frozen", "caught up", "verified", "subscription dropped", "target active"])
def test_switch_killed_inside_the_freeze_resumes(pg_server, dbs, point):
    pooled, own = dbs
    source, target, conninfo = dsns(pg_server, pooled, own)
    before = seeded_sums(pg_server, pooled)
    rep.start(source, target, TENANT, None, conninfo, move=MOVE)
    rep.wait_synced(source, target, TENANT, move=MOVE, timeout=120)
    with pytest.raises(Killed):
        rep.switch(source, target, TENANT, move=MOVE, checkpoint=kill_at(point))
    assert state(pg_server, pooled) == "frozen"
    report = rep.switch(source, target, TENANT, move=MOVE)
    assert report.resumed or report.already_switched
    assert_switched(pg_server, pooled, own, before)
    assert rep.switch(source, target, TENANT, move=MOVE).already_switched, "a switch called again reports it is done"
    with pytest.raises(rep.ReplicationError, match="already switched .* cannot be aborted"):
        rep.abort(source, target, TENANT, move=MOVE)


@pytest.mark.parametrize("point", ["frozen", "verified", "subscription dropped"])
def test_switch_killed_inside_the_freeze_aborts(pg_server, dbs, point):
    pooled, own = dbs
    source, target, conninfo = dsns(pg_server, pooled, own)
    before = seeded_sums(pg_server, pooled)
    rep.start(source, target, TENANT, None, conninfo, move=MOVE)
    rep.wait_synced(source, target, TENANT, move=MOVE, timeout=120)
    with pytest.raises(Killed):
        rep.switch(source, target, TENANT, move=MOVE, checkpoint=kill_at(point))
    done = rep.abort(source, target, TENANT, move=MOVE)
    assert "source state back to active" in done
    assert_aborted(pg_server, pooled, own, before)


def test_orphans_lists_what_no_move_owns(pg_server, dbs):
    pooled, own = dbs
    source, target, conninfo = dsns(pg_server, pooled, own)
    with pytest.raises(Killed):
        rep.start(source, target, TENANT, None, conninfo, move=MOVE, checkpoint=kill_at("slot"))
    n = rep.names(MOVE)
    found = rep.orphans(source)
    assert {(o.kind, o.name) for o in found} == {("slot", n.slot), ("publication", n.publication)}
    slot = next(o for o in found if o.kind == "slot")
    assert slot.database == pooled and "inactive, holds" in slot.detail
    assert rep.orphans(source, owned=[n.base]) == []
    assert rep.cleanup(source, target, TENANT, move=MOVE) == [f"slot {n.slot}", f"publication {n.publication}"]
    assert rep.orphans(source) == []
    assert rep.cleanup(source, target, TENANT, move=MOVE) == [], "cleanup is idempotent"


def test_table_without_tenant_id_in_replica_identity_is_refused(pg_server, dbs):
    pooled, own = dbs
    source, target, conninfo = dsns(pg_server, pooled, own)
    with sqlhelp.connect(pg_server, pooled, autocommit=True) as c:
        c.execute("SET ROLE tenancy_owner")
        c.execute("CREATE TABLE app.notes (tenant_id text NOT NULL, id bigint PRIMARY KEY, body text)")
        c.execute("SELECT tenancy.isolate('app.notes')")
    with pytest.raises(rep.ReplicaIdentityError) as err:
        rep.start(source, target, TENANT, None, conninfo, move=MOVE)
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
        rep.start(source, target, TENANT, None, conninfo, move=MOVE)
    with pytest.raises(rep.ReplicationError, match="the replication connection string's user is tenancy_app: online moves "
                                                   "connect as tenancy_replication, whose password and login each move sets"):
        rep.start(source, target, TENANT, None, pg_server.dsn(user="tenancy_app", dbname=pooled), move=MOVE)
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        c.execute("ALTER ROLE tenancy_replication NOBYPASSRLS")
    try:
        with pytest.raises(rep.ReplicationError, match="role tenancy_replication lacks BYPASSRLS: row-level security would "
                                                       "let the initial copy see zero rows and report success"):
            rep.start(source, target, TENANT, None, conninfo, move=MOVE)
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
            c.execute("ALTER ROLE tenancy_replication BYPASSRLS")
    assert replication_objects(pg_server, pooled, own) == NONE_LEFT


def test_names_come_from_the_operation_id_and_tell_nothing_of_the_tenant():
    made = {rep.names(op).base for op in ("op-3f2a9c1b7d4e", "op-3f2a9c1b7d4f", "op-3f2a9c1b7d4e/pooled->postgres-1",
                                          "op-3f2a9c1b7d4e/pooled->postgres-2", "acme:free->standard@20261207T101500")}
    assert len(made) == 5
    for name in made:
        assert rep.NAME_RE.match(name) and len(name) == len("tmove_") + 16, name
        assert "acme" not in name and "pooled" not in name
    assert rep.names("op-1") == rep.names("op-1"), "a re-run of the operation finds its own objects"
    for bad in ("", "  "):
        with pytest.raises(rep.ReplicationError, match=r"an online move needs its operation id \(move=\.\.\.\)"):
            rep.names(bad)


# --- verification before and inside the freeze ----------------------------------------------------------

def tamper(server, dbname: str, tenant: str = TENANT) -> uuid.UUID:
    """Change one of the tenant's rows directly (as the superuser, past the write guard); returns its id."""
    with psycopg.connect(server.dsn(dbname=dbname), autocommit=True) as c:
        uid = c.execute("SELECT id FROM app.users WHERE tenant_id = %s ORDER BY id LIMIT 1", (tenant,)).fetchone()[0]
        c.execute("UPDATE app.users SET display_name = 'tampered' WHERE tenant_id = %s AND id = %s", (tenant, uid))
    return uid


def synced(server, pooled: str, own: str) -> tuple[str, str, str]:
    source, target, conninfo = dsns(server, pooled, own)
    rep.start(source, target, TENANT, None, conninfo, move=MOVE)
    rep.wait_synced(source, target, TENANT, move=MOVE, timeout=120)
    return source, target, conninfo


def test_preverify_finds_a_copied_row_that_differs_without_having_changed(pg_server, dbs):
    pooled, own = dbs
    before = sums(pg_server, pooled, TENANT)
    source, target, _ = synced(pg_server, pooled, own)
    uid = tamper(pg_server, own)                 # before tracking starts: no record explains it
    with pytest.raises(data.VerificationError, match=rf"the replicated copy of 'moving-co' differs from the source in "
                                                     rf'rows that did not change since tracking began: app\.users: keys \["{uid}"\]'):
        rep.preverify(source, target, TENANT, move=MOVE)
    assert state(pg_server, pooled) == "active", "verification before the freeze never stops the tenant's writes"
    rep.abort(source, target, TENANT, move=MOVE)
    assert_aborted(pg_server, pooled, own, before)


def test_a_row_changed_at_the_target_after_preverify_is_caught_inside_the_freeze(pg_server, dbs):
    pooled, own = dbs
    before = sums(pg_server, pooled, TENANT)
    source, target, _ = synced(pg_server, pooled, own)
    first = rep.preverify(source, target, TENANT, move=MOVE)
    assert first.full_pass is not None and first.full_pass.buckets == len(isolated(pg_server, pooled))  # one per table
    assert rep.preverify(source, target, TENANT, move=MOVE).full_pass is None, "a second call relies on the tracked changes"
    uid = tamper(pg_server, own)                 # recorded by the target's tracking trigger
    with pytest.raises(data.VerificationError, match=rf"the target's copy of 'moving-co' differs from the frozen source: "
                                                     rf'app\.users: 1 rows \(keys \["{uid}"\]\)'):
        rep.switch(source, target, TENANT, move=MOVE)
    assert (state(pg_server, pooled), state(pg_server, own)) == ("active", "frozen"), \
        "a failed verification gives the source its writes back and never activates the target"
    rep.abort(source, target, TENANT, move=MOVE)
    assert_aborted(pg_server, pooled, own, before)


def test_tracking_that_stopped_means_a_new_full_pass(pg_server, dbs):
    pooled, own = dbs
    source, target, _ = synced(pg_server, pooled, own)
    rep.preverify(source, target, TENANT, move=MOVE)
    n = rep.names(MOVE)
    with psycopg.connect(pg_server.dsn(dbname=own), autocommit=True) as c:
        c.execute(f'DROP TRIGGER "{n.base}_u" ON app.users')
    uid = tamper(pg_server, own)                 # unrecorded: tracking had a gap
    with pytest.raises(data.VerificationError, match=rf'did not change since tracking began: app\.users: keys \["{uid}"\]'):
        rep.preverify(source, target, TENANT, move=MOVE)
    rep.abort(source, target, TENANT, move=MOVE)
    assert replication_objects(pg_server, pooled, own) == NONE_LEFT


def test_a_full_pass_cuts_uuid_keys_into_ranges_and_finds_the_differing_row(pg_server, dbs, monkeypatch):
    """Random UUID keys (and the composite key of app.likes) cut into ranges of 4 rows: the ranges cover every row
    once, and a row that differs inside an inner range is named by its key."""
    pooled, own = dbs
    monkeypatch.setattr(rv, "full_pass", functools.partial(rv.full_pass, bucket_rows=4))
    before = sums(pg_server, pooled, TENANT)
    source, target, _ = synced(pg_server, pooled, own)
    first = rep.preverify(source, target, TENANT, move=MOVE).full_pass
    assert before["app.users"][0] == 15 and before["app.likes"][0] == 15
    assert first.buckets == sum(1 + max(n - 1, 0) // 4 for n, _ in before.values()) > len(before)
    assert first.differing_buckets == 0 and first.in_flight_rows == 0
    n = rep.names(MOVE)
    with psycopg.connect(pg_server.dsn(dbname=own), autocommit=True) as c:
        c.execute(f'DROP TRIGGER "{n.base}_u" ON app.users')     # a gap in tracking: the next call passes again
        uid = c.execute("SELECT id FROM app.users WHERE tenant_id = %s ORDER BY id OFFSET 6 LIMIT 1", (TENANT,)).fetchone()[0]
        c.execute("UPDATE app.users SET display_name = 'tampered' WHERE tenant_id = %s AND id = %s", (TENANT, uid))
    with pytest.raises(data.VerificationError, match=rf'did not change since tracking began: app\.users: keys \["{uid}"\]$'):
        rep.preverify(source, target, TENANT, move=MOVE)
    rep.abort(source, target, TENANT, move=MOVE)
    assert_aborted(pg_server, pooled, own, before)


def test_resumed_inside_the_freeze_without_tracking_compares_every_row(pg_server, dbs):
    pooled, own = dbs
    before = sums(pg_server, pooled, TENANT)
    source, target, _ = synced(pg_server, pooled, own)
    with pytest.raises(Killed):
        rep.switch(source, target, TENANT, move=MOVE, checkpoint=kill_at("frozen"))
    n = rep.names(MOVE)
    with psycopg.connect(pg_server.dsn(dbname=own), autocommit=True) as c:
        c.execute(f'DROP TRIGGER "{n.base}_d" ON app.likes')
    report = rep.switch(source, target, TENANT, move=MOVE)
    assert report.resumed and report.full_pass_in_freeze is not None
    assert report.full_pass_in_freeze.buckets == len(isolated(pg_server, pooled))
    assert report.source_summary.same_data(data.summary(source, TENANT))
    assert_switched(pg_server, pooled, own, before)


@pytest.mark.parametrize("point", ["tracking source", "tracking target", "full pass", "consumed at the source"])
def test_preverify_killed_at_each_step_resumes(pg_server, dbs, point):
    pooled, own = dbs
    source, target, _ = synced(pg_server, pooled, own)
    writer = Writer(pg_server, [pooled, own], pooled)
    writer.start()
    try:
        writer.wait_writes(30)
        with pytest.raises(Killed):
            rep.preverify(source, target, TENANT, move=MOVE, checkpoint=kill_at(point))
        writer.wait_writes(30)
        again = rep.preverify(source, target, TENANT, move=MOVE)
        assert (again.full_pass is None) == (point in ("full pass", "consumed at the source")), \
            "a full pass is redone unless one finished with tracking on throughout"
        report = rep.switch(source, target, TENANT, move=MOVE)
        writer.wait_writes(20)
        writer.finish()
    finally:
        writer.stop.set()
    assert report.rows["app.users"] >= 15
    assert replication_objects(pg_server, pooled, own) == NONE_LEFT
    rows = user_rows(pg_server, own)
    assert {uid: name for uid, name in rows if not name.startswith("User ")} == writer.names


def test_orphaned_tracking_triggers_are_reported_and_cleaned(pg_server, dbs):
    pooled, own = dbs
    source, target, _ = synced(pg_server, pooled, own)
    with pytest.raises(Killed):
        rep.preverify(source, target, TENANT, move=MOVE, checkpoint=kill_at("tracking target"))
    n = rep.names(MOVE)
    found = [o for o in rep.orphans(target) if o.kind == "trigger"]
    tables = isolated(pg_server, pooled)
    assert sorted(o.name for o in found) == sorted(f"{n.base}_{op}" for op in "idu" for _ in tables)
    assert all(o.database == own and "for a move no one owns" in o.detail for o in found)
    assert [o for o in rep.orphans(target, owned=[n.base]) if o.kind == "trigger"] == []
    rep.cleanup(source, target, TENANT, move=MOVE)
    assert [o for o in rep.orphans(target) if o.kind == "trigger"] == []
    assert [o for o in rep.orphans(source) if o.kind == "trigger"] == []
    assert replication_objects(pg_server, pooled, own) == NONE_LEFT


def test_tenancy_sql_keeps_the_replication_role_out_of_cloudsqlsuperuser(pg_server, fresh_db):
    """Cloud SQL makes every user created through its API a cloudsqlsuperuser, the component's
    tenancy_replication among them; the tenancy SQL takes that back and leaves it what replication needs."""
    from tenancy import db

    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        c.execute("CREATE ROLE cloudsqlsuperuser NOLOGIN")
    try:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
            c.execute("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenancy_replication') THEN "
                      "CREATE ROLE tenancy_replication NOLOGIN; END IF; END $$")
            c.execute("GRANT cloudsqlsuperuser TO tenancy_replication")
        db.apply(pg_server.dsn(dbname=fresh_db))
        with psycopg.connect(pg_server.dsn(dbname=fresh_db), autocommit=True) as c:
            assert c.execute("SELECT pg_has_role('tenancy_replication', 'cloudsqlsuperuser', 'MEMBER'), rolreplication, "
                             "rolbypassrls, has_table_privilege('tenancy_replication', 'app.users', 'SELECT'), "
                             "has_table_privilege('tenancy_replication', 'app.users', 'INSERT') FROM pg_roles "
                             "WHERE rolname = 'tenancy_replication'").fetchone() == (False, True, True, True, False)
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
            c.execute("DROP ROLE cloudsqlsuperuser")


def test_tenancy_sql_gives_the_cloud_sql_owner_replication_for_online_moves(pg_server, fresh_db):
    """On Cloud SQL the operations connect as tenancy_owner, a cloudsqlsuperuser: the slot of an online move needs
    REPLICATION, which a cloudsqlsuperuser may grant; elsewhere (a superuser runs the moves) the owner gets none."""
    from tenancy import db

    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        c.execute("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenancy_owner') THEN "
                  "CREATE ROLE tenancy_owner NOLOGIN; END IF; END $$")
        c.execute("ALTER ROLE tenancy_owner NOREPLICATION")
    db.apply(pg_server.dsn(dbname=fresh_db))
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        assert c.execute("SELECT rolreplication FROM pg_roles WHERE rolname = 'tenancy_owner'").fetchone() == (False,)
        c.execute("CREATE ROLE cloudsqlsuperuser NOLOGIN")
        c.execute("GRANT cloudsqlsuperuser TO tenancy_owner")
    try:
        db.apply(pg_server.dsn(dbname=fresh_db))
        with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
            assert c.execute("SELECT rolreplication, rolbypassrls FROM pg_roles WHERE rolname = 'tenancy_owner'"
                             ).fetchone() == (True, False), "REPLICATION, and still subject to row-level security"
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
            c.execute("REVOKE cloudsqlsuperuser FROM tenancy_owner")
            c.execute("DROP ROLE cloudsqlsuperuser")
            c.execute("ALTER ROLE tenancy_owner NOREPLICATION")


def test_unavailable_says_why_an_online_move_cannot_start(pg_server, dbs):
    from tests import pg

    pooled, own = dbs
    source, target, conninfo = dsns(pg_server, pooled, own)
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        assert c.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'tenancy_replication'").fetchone() == (False,)
    assert rep.unavailable(source, target, conninfo) is None, "the move gives the role its login itself"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        c.execute("ALTER ROLE tenancy_replication SUPERUSER")
    try:
        assert rep.unavailable(source, target, conninfo) == (
            "the replication role tenancy_replication is a superuser: a move gives it a login for its duration only, "
            "which must not be a superuser's (ALTER ROLE tenancy_replication NOSUPERUSER)")
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
            c.execute("ALTER ROLE tenancy_replication NOSUPERUSER")
    assert rep.unavailable(source, pg_server.dsn(user="tenancy_owner", dbname=own), conninfo).startswith(
        "the target connection must be a superuser (on Cloud SQL: a cloudsqlsuperuser with BYPASSRLS)")
    assert rep.unavailable(pg_server.dsn(user="tenancy_owner", dbname=pooled), target, conninfo) == (
        "the source connection's role tenancy_owner lacks REPLICATION, which creating and dropping the move's "
        "replication slot needs: ALTER ROLE tenancy_owner REPLICATION (or connect as a superuser)")
    physical = pg.start("-c wal_level=replica")   # a server that cannot decode its changes
    try:
        with psycopg.connect(physical.dsn(), autocommit=True) as c:
            c.execute("CREATE DATABASE src")
        assert rep.unavailable(physical.dsn(dbname="src"), target, conninfo) == (
            "the source's wal_level is replica, not logical: it cannot decode its changes for replication (Cloud SQL: "
            "cloudsql.logical_decoding=on; elsewhere wal_level = logical and a restart)")
    finally:
        physical.stop()
    assert replication_objects(pg_server, pooled, own) == NONE_LEFT
