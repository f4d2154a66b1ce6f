"""Tier moves with the online method (`tenancy upgrade --method online|auto`): the offline engine, real PostgreSQL,
and a writer thread acting as the application throughout -- the tenant moves out of the pool and back."""

from __future__ import annotations

import time

import psycopg
import pytest

from tenancy import cli
from tenancy.catalog import with_tenant
from tenancy.lifecycle import Refused
from tenancy.lifecycle.tenant_data import Reach
from tenancy.operations import tier_move as moves
from tests.movehelp import Writer, replication_objects, user_rows
from tests.test_lifecycle import ALL_BUT_ROWS, ctx, registry, rows, world  # noqa: F401 -- world is a fixture

pytestmark = pytest.mark.postgres
TENANT = "bravo"


def superuser_reach(w) -> Reach:
    """The pool reached as a superuser (a role with REPLICATION, which an online move's slot needs)."""
    server = w["server"]
    return Reach({"pooled": server.dsn(dbname=w["pooled"]), **{f"postgres-{i}": w["tenant_dsns"][i - 1] for i in (1, 2, 3)}},
                 None, None, frozenset({"firestore", "objects"}))


def owner_reach(w) -> Reach:
    return Reach({"pooled": w["pooled_dsn"], **{f"postgres-{i}": w["tenant_dsns"][i - 1] for i in (1, 2, 3)}},
                 None, None, frozenset({"firestore", "objects"}))


def done(w, operation: str, phase: str) -> dict:
    """The detail journalled when `phase` of `operation` was done."""
    return next(d for p, e, d in w["registry"].journal(operation) if (p, e) == (phase, "done"))


def slots(server) -> list[str]:
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        return [r[0] for r in c.execute("SELECT slot_name FROM pg_replication_slots").fetchall()]


def assert_refused_only_in_the_freeze(writer: Writer, froze: float, target: str, mark: float) -> None:
    refused = [r for r in writer.refusals if r[0] >= mark]
    first_at_target = min(t for t, d in writer.accepted if d == target and t >= froze)
    assert [r for r in refused if not froze <= r[0] <= first_at_target] == [], "a write refused outside the freeze"
    assert all(f"tenant {TENANT} is frozen" in m or f"tenant {TENANT} is readonly" in m for _, _, m in refused), refused


def move(w, catalog, to: str, writer: Writer, target: str, **kw):
    started: dict[str, float] = {}
    mark = time.time()
    out = moves.upgrade(ctx(w, before_phase=lambda p: started.setdefault(p, time.time())), catalog, TENANT, to,
                        reach=superuser_reach(w), method="online", **kw)
    writer.wait_writes(20)
    assert out.status == "done" and out.phases_run == [p for p in moves.PHASES if p != "export"]
    assert_refused_only_in_the_freeze(writer, started["freeze"], target, mark)
    return out


def test_a_tenant_moves_out_of_the_pool_and_back_online_while_it_writes(world):
    w, s = world, world["server"]
    writer = Writer(s, [w["pooled"], w["tenant_db"]], w["pooled"], tenant=TENANT)
    writer.start()
    try:
        writer.wait_writes(20)
        out = move(w, w["catalog"], "standard", writer, w["tenant_db"])
        sync = done(w, out.operation, "sync")
        methods = sync["methods"]
        assert set(methods) == {"pooled->postgres-1", "pooled->postgres-2", "pooled->postgres-3"}
        assert all(m == {"method": "online"} for m in methods.values()) and len(sync["synced"]) == 3
        pair = "pooled->postgres-1"
        copied = done(w, out.operation, "copy")["copied"][pair]
        assert copied["online"]["source"] is None, "no summary of every row inside the freeze"
        assert pair not in done(w, out.operation, "verify")["sources"]
        switched = done(w, out.operation, "switch")
        assert switched["sources"][pair]["kind"] == "postgres", "the read-only source summarised after the switch"
        assert switched["rows"][pair] == switched["sources"][pair]["count"] == out.detail["copied"][pair]["rows"]
        assert out.detail["rows"] == sum(switched["rows"].values()) > 0
        assert registry(s, w["tenant_db"], TENANT) == ("standard", "namespace", "active")
        assert registry(s, w["pooled"], TENANT) is None and rows(s, w["pooled"], TENANT)["app.users"] == []
        assert replication_objects(s, w["pooled"], *w["tenant_dbs"])["publications"] == [] and slots(s) == []

        back = move(w, with_tenant(w["catalog"], TENANT, plan="standard"), "free", writer, w["pooled"],
                    discard=ALL_BUT_ROWS)
        back_methods = done(w, back.operation, "sync")["methods"]
        assert back_methods and all(m == {"method": "online"} for m in back_methods.values())
        writer.finish()
    finally:
        writer.stop.set()
    assert registry(s, w["pooled"], TENANT)[2] == "active"
    assert not [v for v in replication_objects(s, w["pooled"], *w["tenant_dbs"]).values() if v] and slots(s) == []
    final = user_rows(s, w["pooled"], TENANT)
    assert len(final) == len({uid for uid, _ in final}), "a row arrived twice"
    assert {uid: name for uid, name in final if not name.startswith("User ")} == writer.names
    assert len([1 for _, name in final if name.startswith("User ")]) == 4
    assert any(d == w["tenant_db"] for _, d in writer.accepted), "no write landed in the tenant's own database"
    assert user_rows(s, w["tenant_db"], TENANT) == []
    for other in ("alpha", "charlie"):
        assert rows(s, w["pooled"], other) == w["before"][other], f"{other} untouched"


def test_auto_copies_inside_the_freeze_where_a_pair_cannot_move_online_and_says_why(world):
    said: list[str] = []
    out = moves.upgrade(ctx(world, say=said.append), world["catalog"], TENANT, "standard", reach=owner_reach(world))
    assert out.status == "done"
    why = ("the source connection's role tenancy_owner lacks REPLICATION, which creating and dropping the move's "
           "replication slot needs: ALTER ROLE tenancy_owner REPLICATION (or connect as a superuser)")
    assert any(line.endswith(f"rows copy inside the write freeze: {why}") for line in said), said
    sync = done(world, out.operation, "sync")
    assert len(sync["methods"]) == 3 and all(m == {"method": "copy", "why": why} for m in sync["methods"].values())
    assert sync["synced"] == {}
    assert rows(world["server"], world["tenant_db"], TENANT) == world["before"][TENANT]


def test_method_online_refuses_a_pair_that_cannot_before_anything_changes(world):
    from tenancy import db

    reach = owner_reach(world)
    for dsn in world["tenant_dsns"]:   # the targets carry the tenancy SQL, so the method is chosen in the preflight
        db.apply(dsn)
    with pytest.raises(Refused, match=r"unknown method 'fast': use one of auto, online, copy"):
        moves.upgrade(ctx(world), world["catalog"], TENANT, "standard", reach=reach, method="fast")
    with pytest.raises(Refused, match=r"upgrade of 'bravo' refused before any change: pooled->postgres-1: the rows cannot "
                                      r"move online: the source connection's role tenancy_owner lacks REPLICATION.*or run "
                                      r"with --method copy.*nothing was changed"):
        moves.upgrade(ctx(world), world["catalog"], TENANT, "standard", reach=reach, method="online")
    assert "dev.bravo" not in world["engine"].stacks(), "the tenant stack was not deployed"
    out = moves.upgrade(ctx(world), world["catalog"], TENANT, "standard", reach=reach, abort=True)
    assert out.status == "nothing to abort"
    assert registry(world["server"], world["pooled"], TENANT)[2] == "active"
    assert rows(world["server"], world["pooled"], TENANT) == world["before"][TENANT]


@pytest.mark.parametrize("phase", ["freeze", "copy", "verify"])
def test_an_online_move_interrupted_before_a_phase_aborts_cleanly(world, phase):
    class Stop(BaseException):
        pass

    def stop(name: str) -> None:
        if name == phase:
            raise Stop(name)

    w = world
    with pytest.raises(Stop):
        moves.upgrade(ctx(w, before_phase=stop), w["catalog"], TENANT, "standard", reach=superuser_reach(w),
                      method="online")
    out = moves.upgrade(ctx(w), w["catalog"], TENANT, "standard", reach=superuser_reach(w), abort=True)
    assert out.status == "aborted"
    s = w["server"]
    assert not [v for v in replication_objects(s, w["pooled"], *w["tenant_dbs"]).values() if v] and slots(s) == []
    assert registry(s, w["pooled"], TENANT)[2] == "active"
    assert rows(s, w["pooled"], TENANT) == w["before"][TENANT]
    assert rows(s, w["tenant_db"], TENANT) == {t: [] for t in rows(s, w["tenant_db"], TENANT)}


def test_upgrade_cli_takes_the_method_and_replication_dsns(capsys):
    assert cli.main(["upgrade", "bravo", "--to", "standard", "--source-dsn", "dbname=a", "--target-dsn", "dbname=b",
                     "--replication-dsn", "postgres-x=host=h"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --replication-dsn postgres-x=...: give STORE=DSN with STORE pooled or postgres-N"]
    with pytest.raises(SystemExit) as exit_:
        cli.main(["upgrade", "bravo", "--to", "standard", "--method", "fast"])
    assert exit_.value.code == 2 and "invalid choice: 'fast' (choose from 'auto', 'online', 'copy')" in capsys.readouterr().err
