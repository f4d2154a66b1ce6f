"""The online method of a tier move's PostgreSQL step (tenancy/lifecycle/online.py), on real PostgreSQL 15: two
databases in one server, a writer thread acting as the application throughout, two neighbour tenants.

The tests play the tier move around the class: `sync` before the freeze, `switch` inside it, then the move's
cutover (target active, source read-only), then `cleanup` against the journalled summary -- or `abort`.
Kills are a BaseException raised at a named step.
"""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from tenancy.lifecycle.online import OnlinePostgresMove
from tenancy.stores import Mismatch
from tenancy.stores import postgres as data
from tests import sqlhelp
from tests.movehelp import (MOVE, NEIGHBOURS, NONE_LEFT, TENANT, Killed, Writer, assert_visits_at, dsns, foreign_rows,
                            isolated, kill_at, replication_objects, state, sums, two_databases, user_rows, visit_ids)

dbs = pytest.fixture(two_databases)


def mover(server, src: str, dst: str, said: list[str] | None = None, operation: str = MOVE, **kw) -> OnlinePostgresMove:
    source, target, conninfo = dsns(server, src, dst)
    return OnlinePostgresMove(source, target, TENANT, None, conninfo, (said if said is not None else []).append,
                              operation=operation, **kw)


def cut_over(server, src: str, dst: str) -> float:
    """What the tier move does after its stores switched: the target takes writes, the source is read-only."""
    with psycopg.connect(server.dsn(dbname=dst), autocommit=True) as c:
        c.execute("UPDATE tenancy.tenants SET state = 'active' WHERE id = %s", (TENANT,))
    at = time.time()
    with psycopg.connect(server.dsn(dbname=src), autocommit=True) as c:
        c.execute("SELECT tenancy.freeze(%s, 'readonly')", (TENANT,))
    return at


def slots(server) -> list[str]:
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        return [r[0] for r in c.execute("SELECT slot_name FROM pg_replication_slots").fetchall()]


def assert_refused_only_within(writer: Writer, since: float, dst: str, until: float, mark: float = 0.0) -> None:
    """Every refusal after `mark` (when the move began) lies between the freeze (`since`) and the first write
    the target accepted, which came after the target was made active (`until`)."""
    first_at_target = min(t for t, d in writer.accepted if d == dst and t >= since)
    assert first_at_target >= until, "the target accepted a write before it was made active"
    refused = [r for r in writer.refusals if r[0] >= mark]
    outside = [r for r in refused if not since <= r[0] <= first_at_target]
    assert outside == [], f"writes refused outside the freeze: {outside}"
    assert all(f"tenant {TENANT} is frozen" in m or f"tenant {TENANT} is readonly" in m for _, _, m in refused), refused


def assert_writes_at(server, dbname: str, writer: Writer) -> None:
    """Every committed write is there exactly once, with its last committed value; the seeded users too."""
    rows = user_rows(server, dbname)
    assert len(rows) == len({r[0] for r in rows}), "a row arrived twice"
    assert {uid: name for uid, name in rows if not name.startswith("User ")} == writer.names
    assert len([1 for _, name in rows if name.startswith("User ")]) == 15


def move_once(server, src: str, dst: str, writer: Writer, said: list[str]) -> tuple[dict, dict, dict]:
    mark = time.time()
    m = mover(server, src, dst, said, operation=f"op-{src}->{dst}")
    synced = m.sync()
    writer.wait_writes(20)                       # the tenant keeps writing between sync and freeze
    began = time.time()
    switched = m.switch()
    active_at = cut_over(server, src, dst)
    writer.wait_writes(20)
    assert_refused_only_within(writer, began, dst, active_at, mark)
    cleaned = m.cleanup(expect=switched["source"])
    return synced, switched, cleaned


def test_tenant_moves_out_and_back_with_every_write_once(pg_server, dbs):
    pooled, own = dbs
    neighbours = {t: sums(pg_server, pooled, t) for t in NEIGHBOURS}
    seeded_visits = visit_ids(pg_server, pooled)
    said: list[str] = []
    writer = Writer(pg_server, [pooled, own], pooled, visits=True)
    writer.start()
    try:
        writer.wait_writes(20)
        synced, switched, cleaned = move_once(pg_server, pooled, own, writer, said)
        assert json.loads(json.dumps(synced)) == synced and json.loads(json.dumps(switched)) == switched
        tables = isolated(pg_server, pooled)
        assert synced["method"] == "online" and synced["preverify"]["full_pass"]["buckets"] == len(tables)
        assert switched["source"]["kind"] == "postgres" and set(switched["rows"]) == set(tables)
        assert cleaned["deleted_rows"] == sum(switched["rows"].values()), "the source's rows, as verified, are deleted"
        assert (state(pg_server, pooled), state(pg_server, own)) == ("readonly", "active")
        assert replication_objects(pg_server, pooled, own) == NONE_LEFT and slots(pg_server) == []
        assert foreign_rows(pg_server, own, TENANT) == 0, "a neighbour's rows reached the tenant's own database"
        assert any(f"replicated copy verified: every row compared over {len(tables)} key ranges" in line
                   for line in said), said

        synced, switched, cleaned = move_once(pg_server, own, pooled, writer, said)   # and back
        writer.finish()
    finally:
        writer.stop.set()
    assert (state(pg_server, own), state(pg_server, pooled)) == ("readonly", "active")
    assert replication_objects(pg_server, pooled, own) == NONE_LEFT and slots(pg_server) == []
    assert_writes_at(pg_server, pooled, writer)
    assert_visits_at(pg_server, pooled, writer, seeded_visits)
    assert user_rows(pg_server, own) == [], "cleanup deleted the tenant's rows at the database it left"
    assert any(d == own for _, d in writer.accepted), "no write landed in the tenant's own database"
    for t in NEIGHBOURS:
        assert sums(pg_server, pooled, t) == neighbours[t], f"neighbour {t} changed"


def test_cleanup_deletes_nothing_when_the_source_changed_since_it_was_verified(pg_server, dbs):
    pooled, own = dbs
    m = mover(pg_server, pooled, own)
    m.sync()
    switched = m.switch()
    cut_over(pg_server, pooled, own)
    with psycopg.connect(pg_server.dsn(dbname=pooled), autocommit=True) as c:   # the owner writes past the guard
        c.execute("UPDATE app.users SET display_name = 'late' WHERE tenant_id = %s AND id = "
                  "(SELECT id FROM app.users WHERE tenant_id = %s ORDER BY id LIMIT 1)", (TENANT, TENANT))
    with pytest.raises(Mismatch, match=r"no longer holds what was verified .*app\.users: same count \(15\), "
                                            r"different checksum.*nothing was deleted"):
        m.cleanup(expect=switched["source"])
    assert len(user_rows(pg_server, pooled)) == 15
    assert replication_objects(pg_server, pooled, own) == NONE_LEFT, "replication objects go before the delete"


SYNC_KILLS = [("publication", "abort"), ("slot", "resume"), ("syncing", "abort"), ("syncing", "resume"),
              ("tracking target", "resume"), ("full pass", "abort"), ("consumed at the source", "resume")]


@pytest.mark.parametrize("point,then", SYNC_KILLS)
def test_sync_killed_resumes_or_aborts_while_the_tenant_writes(pg_server, dbs, point, then):
    pooled, own = dbs
    writer = Writer(pg_server, [pooled, own], pooled)
    writer.start()
    try:
        writer.wait_writes(10)
        killed = mover(pg_server, pooled, own, checkpoint=kill_at(point))
        with sqlhelp.connect(pg_server, own) as blocker:
            if point == "syncing":   # a lock on one target table holds its initial copy back: mid-sync, for sure
                blocker.execute("LOCK TABLE app.likes IN SHARE MODE")
            with pytest.raises(Killed):
                killed.sync()
            blocker.rollback()
        writer.wait_writes(20)
        m = mover(pg_server, pooled, own)
        if then == "abort":
            assert "source state back to active" not in m.abort(), "sync never stops the source's writes"
            assert m.abort() == [], "a second abort has nothing to do"
            writer.wait_writes(20)
            writer.finish()
            assert writer.refusals == []
            assert state(pg_server, own) is None and user_rows(pg_server, own) == []
            assert_writes_at(pg_server, pooled, writer)
        else:
            m.sync()
            began = time.time()
            switched = m.switch()
            active_at = cut_over(pg_server, pooled, own)
            writer.wait_writes(20)
            writer.finish()
            assert_refused_only_within(writer, began, own, active_at)
            m.cleanup(expect=switched["source"])
            assert_writes_at(pg_server, own, writer)
    finally:
        writer.stop.set()
    assert replication_objects(pg_server, pooled, own) == NONE_LEFT and slots(pg_server) == []


SWITCH_KILLS = [("frozen", "resume"), ("caught up", "abort"), ("verified", "resume"), ("subscription dropped", "abort"),
                ("subscription dropped", "resume"), ("finished", "resume"), ("finished", "abort")]


@pytest.mark.parametrize("point,then", SWITCH_KILLS)
def test_switch_killed_resumes_or_aborts(pg_server, dbs, point, then):
    pooled, own = dbs
    writer = Writer(pg_server, [pooled, own], pooled)
    writer.start()
    try:
        writer.wait_writes(10)
        mover(pg_server, pooled, own).sync()
        writer.wait_writes(20)
        began = time.time()
        with pytest.raises(Killed):
            mover(pg_server, pooled, own, checkpoint=kill_at(point)).switch()
        assert state(pg_server, pooled) == "frozen", "killed inside the freeze: the source stays frozen"
        m = mover(pg_server, pooled, own)
        if then == "abort":
            done = m.abort()
            assert "source state back to active" in done
            writer.wait_writes(20)
            writer.finish()
            assert [r for r in writer.refusals if r[0] < began] == []
            assert state(pg_server, own) is None and user_rows(pg_server, own) == []
            assert_writes_at(pg_server, pooled, writer)
        else:
            switched = m.switch()
            assert switched["already_switched"] == (point == "finished")
            assert m.switch()["source"] == switched["source"], "a switch called again reports the same summary"
            active_at = cut_over(pg_server, pooled, own)
            writer.wait_writes(20)
            writer.finish()
            assert_refused_only_within(writer, began, own, active_at)
            assert m.cleanup(expect=switched["source"])["deleted_rows"] == sum(switched["rows"].values())
            assert_writes_at(pg_server, own, writer)
    finally:
        writer.stop.set()
    assert replication_objects(pg_server, pooled, own) == NONE_LEFT and slots(pg_server) == []
    assert foreign_rows(pg_server, own, TENANT) == 0


def test_tenancy_moves_reports_what_online_moves_left_behind(pg_server, dbs, tmp_path, capsys, registry):
    from tenancy import cli
    from tenancy.operations.lease import Lease, Spec
    from tenancy.stores import replication as rep

    pooled, own = dbs
    source, target, conninfo = dsns(pg_server, pooled, own)
    lease = Lease.take(registry, Spec("upgrade", TENANT, {"to_plan": "standard"}, f"tenancy upgrade {TENANT} --to standard"))
    move = f"{lease.op_id}/pooled->postgres-1"
    with pytest.raises(Killed):
        rep.start(source, target, TENANT, None, conninfo, move=move, checkpoint=kill_at("slot"))
    name = rep.names(move).base
    args = ["moves", "--engine", "offline", "--state", str(tmp_path / "state"), "--dsn", source, "--dsn", target]
    assert cli.main(args) == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == [], "the pending tier moves are still the JSON on stdout"
    lines = err.splitlines()
    server = f"127.0.0.1:{pg_server.port}"
    assert lines[0] == f"leftover of an online move on {server}: publication {name} in database {pooled}: no move owns it"
    assert lines[1].startswith(f"leftover of an online move on {server}: slot {name} in database {pooled}: inactive, holds ")
    assert lines[2].startswith("2 leftover(s): finish or abort the operation that made them") and len(lines) == 3

    # An unfinished operation that recorded the pair owns them; once it is aborted they are leftovers again.
    lease.created("replication", {"pair": "pooled->postgres-1"}, "always")
    assert cli.main([*args, "--registry", registry.dsn]) == 0 and capsys.readouterr().err == ""
    assert cli.main([*args, "--registry", registry.dsn]) == 0
    [op] = json.loads(capsys.readouterr().out)
    assert (op["kind"], op["operation"], op["tenant"], op["resume"]) == (
        "operation", lease.op_id, TENANT, f"tenancy upgrade {TENANT} --to standard")
    lease.finish("aborted")
    assert cli.main([*args, "--registry", registry.dsn]) == 1 and len(capsys.readouterr().err.splitlines()) == 3

    rep.cleanup(source, target, TENANT, move=move)
    assert cli.main(args) == 0 and capsys.readouterr().err == ""
    assert cli.main([*args, "--dsn", "host=db password=s3cret port"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["error: --dsn: not a libpq connection string (key=value ... or postgresql://...); not "
                                "shown, it may hold a password"] and "s3cret" not in err
