"""Tier moves with data through the offline engine and real PostgreSQL: resumable, abortable, exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from tenancy.lifecycle import OperationError, Refused, deploy
from tenancy.catalog import parse_catalog, with_tenant
from tenancy.operations import offboard as offboarding
from tenancy.operations import suspend as suspending
from tenancy.operations import tier_move as moves
from tenancy.operations.protocol import Context
from tenancy.engine import OfflineEngine
from tenancy.lifecycle.tenant_data import Reach
from tests.conftest import ROOT, deployed_offline, deployed_directory
from tests.movehelp import Boom, stop_before
from tests.sqlhelp import connect, seed

pytestmark = pytest.mark.postgres

CATALOG = """
version: 1
tenants:
  - {id: alpha, name: Alpha, plan: free, admin_email: a@alpha.example}
  - {id: bravo, name: Bravo, plan: free, admin_email: b@bravo.example}
  - {id: charlie, name: Charlie, plan: basic, admin_email: c@charlie.example}
plans:
  basic:
    model: pooled
    limits: {api_rate_limit: 200, storage_gb: 5, cpu: 0.5, memory_gb: 1, pods: 1, pvcs: 0, services: 1, backup_retention_days: 7}
    features: [core, comments, likes]
"""
TABLES = ("app.users", "app.itineraries", "app.comments", "app.likes")


def rows(server, dbname, tenant):
    with connect(server, dbname, autocommit=True) as c:
        return {t: sorted(tuple(str(v) for v in r) for r in c.execute(f"SELECT * FROM {t} WHERE tenant_id = %s", (tenant,)))
                for t in TABLES}


def registry(server, dbname, tenant):
    with connect(server, dbname, autocommit=True) as c:
        row = c.execute("SELECT plan, model, state FROM tenancy.tenants WHERE id = %s", (tenant,)).fetchone()
    return tuple(row) if row else None


@pytest.fixture
def world(pg_server, tenancy_db, tmp_path, registry):
    """Pooled DB with three tenants' rows, three empty databases for a tenant's postgres-1..3, a registry, a deployed
    environment (offline): global, identity, cell and pool-shard stacks."""
    tenant_dbs = [f"t_{uuid.uuid4().hex[:12]}" for _ in range(3)]
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        for name in tenant_dbs:
            c.execute(f'CREATE DATABASE "{name}"')
    with connect(pg_server, tenancy_db, autocommit=True) as c:
        for t, plan in (("alpha", "free"), ("bravo", "free"), ("charlie", "basic")):
            c.execute("INSERT INTO tenancy.tenants (id, plan, model) VALUES (%s, %s, 'pooled')", (t, plan))
    for t, n in (("alpha", 3), ("bravo", 4), ("charlie", 2)):
        seed(pg_server, tenancy_db, t, users=n)
    catalog = parse_catalog(CATALOG)
    engine = deployed_offline(catalog, tmp_path / "state")
    w = {
        "server": pg_server, "pooled": tenancy_db, "tenant_db": tenant_dbs[0], "tenant_dbs": tenant_dbs,
        "catalog": catalog, "engine": engine, "registry": registry,
        "pooled_dsn": pg_server.dsn(user="tenancy_owner", dbname=tenancy_db),
        "tenant_dsn": pg_server.dsn(dbname=tenant_dbs[0]),  # fresh databases: provisioning applies the SQL as superuser
        "tenant_dsns": [pg_server.dsn(dbname=d) for d in tenant_dbs],
        "before": {t: rows(pg_server, tenancy_db, t) for t in ("alpha", "bravo", "charlie")},
        "tmp": tmp_path,
    }
    yield w
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        for name in tenant_dbs:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def reach(w, objects_root=None, skip=("firestore", "objects")):
    """Rows only unless asked (the all-store round trip is in test_tier_moves_all_stores.py)."""
    return Reach({"pooled": w["pooled_dsn"], **{f"postgres-{i}": w["tenant_dsns"][i - 1] for i in (1, 2, 3)}},
                 str(objects_root) if objects_root else None, None, frozenset(skip if not objects_root else set(skip) - {"objects"}))


def ctx(w, **kw):
    return Context("dev", w["registry"], w["engine"], **kw)


def do_upgrade(w, to="standard", catalog=None, objects_root=None, before_phase=None, now=None, **kw):
    extra = {"now": now} if now else {}
    return moves.upgrade(ctx(w, before_phase=before_phase, **extra), catalog or w["catalog"], "bravo", to,
                         reach=reach(w, objects_root), **kw)


def suspend(w, catalog, tenant, resume=False):
    return suspending.set_state(ctx(w), catalog, tenant, resume=resume, reach=reach(w))


def offboard(w, catalog, tenant, **kw):
    kw.setdefault("reach", reach(w))
    return offboarding.offboard(ctx(w), catalog, tenant, **kw)


def assert_upgraded(w):
    s = w["server"]
    assert rows(s, w["tenant_db"], "bravo") == w["before"]["bravo"], "every row arrives exactly once"
    assert rows(s, w["pooled"], "bravo") == {t: [] for t in TABLES}, "pooled rows removed after verification"
    for other in ("alpha", "charlie"):
        assert rows(s, w["pooled"], other) == w["before"][other], f"{other} untouched"
        assert rows(s, w["tenant_db"], other) == {t: [] for t in TABLES}, f"{other} never copied"
    assert registry(s, w["tenant_db"], "bravo") == ("standard", "namespace", "active")
    assert registry(s, w["pooled"], "bravo") is None
    directory = deployed_directory(w["engine"])
    assert directory["bravo"]["model"] == "namespace" and directory["bravo"]["placement"]["stack"] == "dev.bravo"
    assert "dev.bravo" in w["engine"].stacks()
    row = w["registry"].tenant("bravo")
    assert (row.plan, row.model, row.state, row.operation) == ("standard", "namespace", "active", None)
    assert w["registry"].unfinished() == [], "the lease is released"


def test_upgrade_pooled_to_namespace_moves_every_row_once(world):
    lines: list[str] = []
    out = moves.upgrade(ctx(world, say=lines.append), world["catalog"], "bravo", "standard", reach=reach(world))
    # no --export-to: the export has no work, so no header and no place among the phases run
    assert out.status == "done" and out.phases_run == [p for p in moves.PHASES if p != "export"]
    headers = [line.split("]")[0][1:] for line in lines if line.startswith("[")]
    assert headers == out.phases_run, lines
    assert out.detail["rows"] == 16 and out.detail["freeze_seconds"] is not None and out.detail["freeze_seconds"] >= 0
    assert_upgraded(world)
    # previewed in the preflight, before anything changed; after the switch the record is published by the
    # tenant's home units before and after (its pool shard, its new cell) and by no other stack: not the global
    # stack, not its identity shard (its Identity Platform tenant never moves)
    assert world["engine"].calls == [("preview", "dev.bravo"), ("up", "dev.bravo"), ("preview", "dev.cell-1"),
                                     ("up", "dev.cell-1"), ("preview", "dev.pool-1"), ("up", "dev.pool-1")]
    [op] = world["registry"].history("bravo")
    assert (op.kind, op.status, op.args) == ("upgrade", "done", {"to_plan": "standard"})
    done = [(p, d) for p, e, d in world["registry"].journal(op.id) if e == "done"]
    assert [p for p, _ in done] == list(moves.PHASES) and dict(done)["export"] == {"applies": False}


ALL_BUT_ROWS = frozenset({"postgres-2", "postgres-3", "firestore", "graph", "objects"})


def test_downgrade_back_to_pooled_names_every_problem_in_one_run(world):
    do_upgrade(world)
    upgraded = with_tenant(world["catalog"], "bravo", plan="standard")
    s = world["server"]
    with pytest.raises(Refused) as refused:   # the stores a pooled plan cannot hold must be saved or let go
        do_upgrade(world, "free", upgraded)
    assert str(refused.value) == (
        "downgrade of 'bravo' refused before any change: downgrading 'bravo' removes its stack, but this run cannot "
        "reach objects, firestore: give access to them, or --discard them; plan 'free' cannot hold all of 'bravo''s "
        "data: graph: the tenant's Neo4j graph (export it with --export-to DIR, or --discard graph). Export it with "
        "--export-to DIR and pass --discard graph; nothing was changed")
    assert rows(s, world["tenant_db"], "bravo") == world["before"]["bravo"] and "dev.bravo" in world["engine"].stacks()
    assert registry(s, world["tenant_db"], "bravo") == ("standard", "namespace", "active")
    assert [op.kind for op in world["registry"].history("bravo")] == ["upgrade"], "a refused preflight leaves no trace"
    out = do_upgrade(world, "free", upgraded, discard=ALL_BUT_ROWS)
    assert out.status == "done"
    unprotected = [u for op, u in world["engine"].calls if op == "unprotect"]
    assert unprotected and all("::" in u for u in unprotected), "protection released resource by resource"
    assert {u.rsplit("::", 1)[-1] for u in unprotected} >= {"postgres-1-instance", "uploads-bucket", "neo4j"}
    assert rows(s, world["pooled"], "bravo") == world["before"]["bravo"]
    assert rows(s, world["tenant_db"], "bravo") == {t: [] for t in TABLES}
    assert registry(s, world["pooled"], "bravo") == ("free", "pooled", "active")
    assert "dev.bravo" not in world["engine"].stacks(), "the tenant stack is destroyed at cleanup"
    assert deployed_directory(world["engine"])["bravo"]["model"] == "pooled"
    for other in ("alpha", "charlie"):
        assert rows(s, world["pooled"], other) == world["before"][other]


def test_writes_are_refused_while_frozen(world):
    with pytest.raises(Boom):
        do_upgrade(world, before_phase=stop_before("copy"))
    with connect(world["server"], world["pooled"], user="tenancy_app") as c:
        c.execute("SELECT tenancy.set_tenant('bravo')")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="tenant bravo is frozen"):
            c.execute("INSERT INTO app.users (tenant_id, email, display_name) VALUES ('bravo', 'late@b.example', 'Late')")
    assert world["registry"].tenant("bravo").state == "frozen", "the registry says so too"


def test_abort_before_the_switch_leaves_the_tenant_where_it_was(world):
    with pytest.raises(Boom):
        do_upgrade(world, before_phase=stop_before("switch"))
    out = do_upgrade(world, abort=True)
    assert out.status == "aborted"
    s = world["server"]
    assert rows(s, world["pooled"], "bravo") == world["before"]["bravo"]
    assert registry(s, world["pooled"], "bravo") == ("free", "pooled", "active")
    assert all(registry(s, d, "bravo") is None and rows(s, d, "bravo") == {t: [] for t in TABLES}
               for d in world["tenant_dbs"]), "what the move created is gone"
    assert "dev.bravo" not in world["engine"].stacks()
    assert deployed_directory(world["engine"])["bravo"]["model"] == "pooled"
    row = world["registry"].tenant("bravo")
    assert (row.state, row.operation) == ("active", None)
    assert do_upgrade(world, abort=True).status == "nothing to abort"
    assert do_upgrade(world).status == "done"  # a new move can start afterwards
    assert_upgraded(world)


def test_abort_after_the_switch_is_refused_with_what_to_run(world):
    with pytest.raises(Boom):
        do_upgrade(world, before_phase=stop_before("publish"))
    with pytest.raises(Refused, match=r"is past switch; it can no longer be aborted. Resume it with `tenancy upgrade bravo "
                                      r"--to standard --env dev`"):
        do_upgrade(world, abort=True)
    assert do_upgrade(world).status == "done"
    assert_upgraded(world)


def test_resuming_with_another_plan_is_refused_with_the_commands_to_resume_or_abort(world):
    with pytest.raises(Boom):
        do_upgrade(world, before_phase=stop_before("copy"))
    with pytest.raises(Refused) as refused:
        do_upgrade(world, to="enterprise")
    [op] = world["registry"].unfinished()
    assert str(refused.value).startswith(f"tenant 'bravo' has an unfinished upgrade to_plan=standard ({op.id}, started ")
    assert str(refused.value).endswith("stopped after freeze); resume it with `tenancy upgrade bravo --to standard --env "
                                       "dev` or abort it with `tenancy upgrade bravo --to standard --env dev --abort`; "
                                       "nothing was changed")


def test_keep_source_keeps_rows_read_only_until_the_window_ends(world):
    t0 = datetime.now(timezone.utc)
    out = do_upgrade(world, keep_source_days=3, now=lambda: t0)
    assert out.status == "waiting" and "kept read-only until" in out.message
    s = world["server"]
    assert rows(s, world["pooled"], "bravo") == world["before"]["bravo"]
    assert registry(s, world["pooled"], "bravo")[2] == "readonly"
    with connect(s, world["pooled"], user="tenancy_app") as c:
        c.execute("SELECT tenancy.set_tenant('bravo')")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            c.execute("DELETE FROM app.likes")
    assert do_upgrade(world, now=lambda: t0 + timedelta(days=1)).status == "waiting"
    later = do_upgrade(world, now=lambda: t0 + timedelta(days=4))
    assert later.status == "done" and later.phases_run == ["cleanup"]
    assert_upgraded(world)


def test_offboarding_inside_a_keep_source_window_is_refused_and_leaves_no_copy_behind(world):
    t0 = datetime.now(timezone.utc)
    do_upgrade(world, keep_source_days=3, now=lambda: t0)
    upgraded = with_tenant(world["catalog"], "bravo", plan="standard")
    with pytest.raises(Refused, match=r"tenant 'bravo' has an unfinished upgrade to_plan=standard \(op-[0-9a-f]+, started "
                                      r".*, waiting \(source data kept read-only until .*\)\); resume it with `tenancy "
                                      r"upgrade bravo --to standard --env dev`"):
        offboard(world, upgraded, "bravo", export_to=str(world["tmp"] / "bravo"))
    assert not (world["tmp"] / "bravo").exists()
    assert rows(world["server"], world["pooled"], "bravo") == world["before"]["bravo"], "the read-only copy is kept"
    assert do_upgrade(world, now=lambda: t0 + timedelta(days=4)).status == "done"
    out = offboard(world, upgraded, "bravo", export_to=str(world["tmp"] / "bravo"), discard=ALL_BUT_ROWS)
    assert out.status == "done"
    assert all(rows(world["server"], d, "bravo") == {t: [] for t in TABLES}
               for d in (world["pooled"], *world["tenant_dbs"])), "nothing of bravo is left anywhere"


def test_moves_between_namespace_and_dedicated_are_refused(world):
    do_upgrade(world)
    upgraded = with_tenant(world["catalog"], "bravo", plan="standard")
    with pytest.raises(Refused, match="from namespace to dedicated is not supported"):
        do_upgrade(world, "enterprise", upgraded)


def test_suspend_and_resume_a_pooled_tenant(world):
    suspend(world, world["catalog"], "charlie")
    assert registry(world["server"], world["pooled"], "charlie")[2] == "suspended"
    assert world["registry"].tenant("charlie").state == "suspended"
    assert deployed_directory(world["engine"])["charlie"]["state"] == "suspended"
    assert rows(world["server"], world["pooled"], "charlie") == world["before"]["charlie"], "data kept"
    suspended = with_tenant(world["catalog"], "charlie", state="suspended")
    suspend(world, suspended, "charlie", resume=True)
    assert registry(world["server"], world["pooled"], "charlie")[2] == "active"
    assert world["registry"].tenant("charlie").state == "active"
    assert deployed_directory(world["engine"])["charlie"]["state"] == "active"


def test_resume_without_a_reachable_database_is_refused_rather_than_reported_done(world):
    suspend(world, world["catalog"], "charlie")
    with pytest.raises(Refused, match=r"resume of 'charlie' refused before any change: pooled \(source, pool-1\): this run "
                                      r"cannot reach it: the registry has no connection for database pool-1"):
        suspending.set_state(ctx(world), world["catalog"], "charlie", resume=True, reach=Reach({}))
    assert registry(world["server"], world["pooled"], "charlie")[2] == "suspended"


def test_suspend_a_namespace_tenant_scales_to_zero_and_removes_routes(world):
    do_upgrade(world)
    upgraded = with_tenant(world["catalog"], "bravo", plan="standard")
    suspend(world, upgraded, "bravo")
    state = json.loads((world["tmp"] / "state" / "dev.bravo.json").read_text())
    types = {r["type"] for r in state["resources"].values()}
    assert "kubernetes:networking.k8s.io/v1:Ingress" not in types
    app = [r for r in state["resources"].values() if r["type"] == "kubernetes:helm.sh/v3:Release"
           and r["inputs"]["name"] == "app"][0]
    assert app["inputs"]["values"]["replicaCount"] == 0
    assert sum(r["type"] == "gcp:sql/databaseInstance:DatabaseInstance" for r in state["resources"].values()) == 3
    assert [registry(world["server"], d, "bravo")[2] for d in world["tenant_dbs"]] == ["suspended"] * 3


def test_offboard_exports_first_then_removes(world):
    out = offboard(world, world["catalog"], "charlie", export_to=str(world["tmp"] / "export"),
                   discard=frozenset({"objects", "firestore"}))
    assert out.detail["export"]["stores"] == {"pooled": 8}
    archive = world["tmp"] / "export"
    index = json.loads((archive / "archive.json").read_text())
    assert {k: v["rows"] for k, v in index["stores"]["pooled"]["tables"].items()} == {
        "app.users": 2, "app.itineraries": 2, "app.comments": 2, "app.likes": 2, "app.audit_events": 0, "app.api_requests": 0}
    assert (archive / "pooled" / "manifest.json").exists()
    assert oct(archive.stat().st_mode & 0o777) == "0o700"
    assert all(oct(f.stat().st_mode & 0o777) == "0o600" for f in (archive / "pooled").iterdir())
    assert rows(world["server"], world["pooled"], "charlie") == {t: [] for t in TABLES}
    assert registry(world["server"], world["pooled"], "charlie") is None
    assert "charlie" not in deployed_directory(world["engine"])
    assert rows(world["server"], world["pooled"], "alpha") == world["before"]["alpha"]
    assert world["registry"].tenant("charlie").state == "offboarded"


def test_offboard_without_export_is_refused(world):
    with pytest.raises(Refused, match="give --export-to DIR \\(or --no-export --yes\\)"):
        offboard(world, world["catalog"], "charlie", export_to=None)
    assert rows(world["server"], world["pooled"], "charlie") == world["before"]["charlie"]
    assert world["registry"].history("charlie") == []


def test_deploy_holds_a_tenant_whose_plan_crosses_the_pool_until_upgrade(world):
    edited = with_tenant(world["catalog"], "bravo", plan="standard")   # the engineer edits tenants.yaml
    [move] = deploy.pending(world["engine"], edited, "dev")
    assert (move.tenant, move.kind, move.command) == ("bravo", "move", "tenancy upgrade bravo --to standard")
    assert (move.to_plan, move.to_model) == ("standard", "namespace"), "what the deploy workflow's move step reads"
    assert move.message == "tier move free (pooled) → standard (namespace) waits for its data to move"
    result = deploy.rollout(world["engine"], edited, "dev", mode="up")
    assert "dev.bravo" not in {o.stack for o in result.outcomes}, "held where its data is: no stack of its own yet"
    assert [deploy.pending_line(p, "dev") for p in result.pending] == [
        "pending: tenant 'bravo': tier move free (pooled) → standard (namespace) waits for its data to move; "
        "run: tenancy upgrade bravo --to standard --env dev"]
    directory = deployed_directory(world["engine"])
    assert directory["bravo"]["model"] == "pooled", "the routing switch is not flipped before the data moves"
    assert "dev.bravo" not in world["engine"].stacks()
    out = do_upgrade(world, "standard", edited)
    assert out.status == "done" and out.operation.startswith("op-")
    assert_upgraded(world)
    assert deploy.pending(world["engine"], edited, "dev") == []


def put(root, bucket, name, data):
    path = root / bucket / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def files(root, bucket, prefix=""):
    base = root / bucket
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()
            and p.relative_to(base).as_posix().startswith(prefix)} if base.exists() else {}


def test_objects_move_with_the_rows_and_are_verified(world):
    from tenancy import naming
    root = world["tmp"] / "buckets"
    shared = naming.shared_bucket("dev", "tenancy-dev-482913")
    put(root, shared, "bravo/avatars/1.png", b"\x89PNG bravo")
    put(root, shared, "bravo/docs/trip.pdf", b"%PDF bravo trip")
    put(root, shared, "alpha/avatars/1.png", b"\x89PNG alpha")
    with pytest.raises(Boom):   # interrupted after the copy: copied objects are not re-copied, nothing lost
        do_upgrade(world, objects_root=root, before_phase=stop_before("verify"))
    out = do_upgrade(world, objects_root=root)
    assert out.status == "done"
    assert files(root, "dev-bravo-uploads") == {"avatars/1.png": b"\x89PNG bravo", "docs/trip.pdf": b"%PDF bravo trip"}
    assert files(root, shared, "bravo/") == {}, "source objects removed at cleanup"
    assert files(root, shared, "alpha/") == {"alpha/avatars/1.png": b"\x89PNG alpha"}, "other tenants untouched"
    verify = [d for p, e, d in world["registry"].journal(out.operation) if (p, e) == ("verify", "done")]
    assert verify[0]["stores"]["objects"] == 2


def test_object_verification_failure_stops_the_move(world, monkeypatch):
    from tenancy import naming
    from tenancy.stores.objects import copying
    root = world["tmp"] / "buckets"
    put(root, naming.shared_bucket("dev", "tenancy-dev-482913"), "bravo/a.txt", b"a")
    real_transfer = copying.transfer_object

    def lossy(src, info, dst, name):
        real_transfer(src, info, dst, name)
        dst.write(name, b"corrupted")

    monkeypatch.setattr(copying, "transfer_object", lossy)
    with pytest.raises(OperationError, match=r"verification failed: .*dev-bravo-uploads/ does not match .*/bravo/: 1 "
                                             r"objects differ \(a\.txt \(different content\)\); .*the tenant stays frozen"
                                             r".*Operation op-[0-9a-f]+: resume it with `tenancy upgrade bravo --to "
                                             r"standard --env dev`, or abort it with `tenancy upgrade bravo --to standard "
                                             r"--env dev --abort`"):
        do_upgrade(world, objects_root=root)
    assert registry(world["server"], world["pooled"], "bravo")[2] == "frozen", "stays frozen where it was"
    assert do_upgrade(world, objects_root=root, abort=True).status == "aborted"
    assert files(root, "dev-bravo-uploads") == {}
    assert files(root, naming.shared_bucket("dev", "tenancy-dev-482913"), "bravo/") == {"bravo/a.txt": b"a"}


def test_one_tenant_commands_leave_every_other_directory_entry_unchanged(world):
    """suspend/resume/offboard of charlie: alpha's and bravo's entries byte-for-byte as deployed, even when
    tenants.yaml has meanwhile changed them (the change waits for a deploy) or holds a pending move."""
    engine = world["engine"]

    def others():
        d = deployed_directory(engine)
        return {t: json.dumps(d[t], sort_keys=True) for t in ("alpha", "bravo")}

    before = others()
    edited = with_tenant(with_tenant(world["catalog"], "bravo", plan="standard"), "alpha", name="Renamed")
    suspend(world, edited, "charlie")
    assert others() == before
    assert deployed_directory(engine)["charlie"]["state"] == "suspended"
    suspend(world, edited, "charlie", resume=True)
    assert others() == before
    offboard(world, edited, "charlie", export_to=str(world["tmp"] / "charlie-export"),
             discard=frozenset({"objects", "firestore"}))
    assert others() == before and "charlie" not in deployed_directory(engine)
    with pytest.raises(Exception, match="tenant 'charlie' is offboarded in 'dev'"):
        suspend(world, edited, "charlie")
    kinds = {(p.tenant, p.kind) for p in deploy.pending(engine, edited, "dev")}
    assert ("bravo", "move") in kinds, "the pending move is still held"


def test_offboard_with_the_wrong_database_is_refused(world):
    wrong = reach(world)
    wrong = Reach({**wrong.dsns, "pooled": world["server"].dsn(dbname=world["tenant_db"])}, None, None, wrong.skip)
    with pytest.raises(Refused, match="has no tenancy SQL, so it holds no tenant.s rows: not the database of .charlie."):
        offboard(world, world["catalog"], "charlie", export_to=str(world["tmp"] / "x"), reach=wrong)
    assert rows(world["server"], world["pooled"], "charlie") == world["before"]["charlie"]
    assert "charlie" in deployed_directory(world["engine"])
    assert not (world["tmp"] / "x").exists()


def test_upgrade_says_which_catalogue_line_to_change_and_moves_does_not_offer_the_reverse(world, tmp_path):
    path = tmp_path / "tenants.yaml"
    path.write_text(CATALOG)
    from tenancy.catalog import load_catalog
    catalog = load_catalog(path)
    out = do_upgrade(world, "standard", catalog)
    assert out.detail["catalog_line"] == f"tenants.yaml still says plan 'free' for 'bravo': change {path}:5 to `plan: standard`"
    [p] = deploy.pending(world["engine"], catalog, "dev")
    assert p.kind == "catalog-behind" and p.command is None
    assert do_upgrade(world, "standard", catalog).status == "nothing to do"


def test_an_upgrade_records_the_databases_its_new_stack_creates_and_checks_them_before_writing(world, monkeypatch,
                                                                                                  tmp_path):
    """No DSN for the tenant's future databases: the preflight lets them be (the stack creates them), provisioning
    records them in the registry from the stack's outputs (Cloud SQL connection names, reached through the Auth
    Proxy's socket directory) and checks them before anything is written into them."""
    monkeypatch.setenv("TENANCY_CLOUDSQL_DIR", str(tmp_path / "no-proxy-here"))
    rows_only = Reach({"pooled": world["pooled_dsn"]}, skip=frozenset({"objects", "firestore"}))
    with pytest.raises(OperationError) as failed:
        moves.upgrade(ctx(world), world["catalog"], "bravo", "standard", reach=rows_only)
    message = str(failed.value)
    assert message.startswith("the databases the tenant stack created cannot be used: postgres-1 (target, "
                              "bravo/postgres-1, 'host=") and "cannot connect or read it" in message
    assert message.endswith("nothing was written into them. Operation " + world["registry"].unfinished()[0].id +
                            ": resume it with `tenancy upgrade bravo --to standard --env dev`, or abort it with "
                            "`tenancy upgrade bravo --to standard --env dev --abort`")
    recorded = world["registry"].database("bravo/postgres-1")
    assert (recorded.source, recorded.connection) == ("deploy", {
        "instance": "tenancy-dev-482913:europe-west1:dev-bravo-postgres-1", "dbname": "app"})
    assert rows(world["server"], world["pooled"], "bravo") == world["before"]["bravo"]
    assert registry(world["server"], world["pooled"], "bravo")[2] == "active", "never frozen"
    assert moves.upgrade(ctx(world), world["catalog"], "bravo", "standard", reach=rows_only, abort=True).status == "aborted"
    assert "dev.bravo" not in world["engine"].stacks(), "the stack it created is gone"
