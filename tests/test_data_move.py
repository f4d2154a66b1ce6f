"""`tenancy data move|verify|export` on real PostgreSQL: one tenant's rows, exactly once, others untouched; the move
is an operation on the protocol (its lease and journal in the registry)."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg
import pytest

from tenancy import db
from tenancy.errors import Refused
from tenancy.operations import data_move
from tenancy.operations.protocol import Context
from tenancy.stores import postgres as data
from tenancy.stores.postgres import VerificationError, checksums
from tests.conftest import ROOT
from tests.sqlhelp import add_visits, connect, register, seed, visit

pytestmark = pytest.mark.postgres


@pytest.fixture
def pair(pg_server, tenancy_db):
    """A pooled source with three tenants and an empty target carrying the same SQL."""
    import uuid
    target = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{target}"')
    db.apply(pg_server.dsn(dbname=target))
    register(pg_server, tenancy_db, "alpha", "bravo", "charlie")
    for t, n in (("alpha", 5), ("bravo", 3), ("charlie", 4)):
        seed(pg_server, tenancy_db, t, users=n)
    yield tenancy_db, target
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')


def owner(server, dbname):
    return server.dsn(user="tenancy_owner", dbname=dbname)


def move(registry, source, target, tenant, **kw):
    return data_move.move(Context("dev", registry), tenant, source, target, **kw)


def snapshot(server, dbname, tenant):
    """Every row of one tenant, per table, as the superuser sees them (for before/after comparisons)."""
    out = {}
    with connect(server, dbname, autocommit=True) as c:
        for t in ("app.users", "app.itineraries", "app.comments", "app.likes"):
            out[t] = sorted(tuple(str(v) for v in r) for r in c.execute(f"SELECT * FROM {t} WHERE tenant_id = %s", (tenant,)))
    return out


def test_move_copies_one_tenant_exactly_once_and_leaves_others(pg_server, pair, registry):
    src, dst = pair
    before = {t: snapshot(pg_server, src, t) for t in ("alpha", "bravo", "charlie")}
    report = move(registry, owner(pg_server, src), owner(pg_server, dst), "bravo").detail
    assert report["tables"] == ["app.api_requests", "app.audit_events", "app.users", "app.itineraries", "app.comments",
                                "app.likes"]  # parents first
    assert report["rows"] == {"app.users": 3, "app.itineraries": 3, "app.comments": 3, "app.likes": 3,
                              "app.api_requests": 0, "app.audit_events": 0}
    assert snapshot(pg_server, dst, "bravo") == before["bravo"]
    assert snapshot(pg_server, dst, "alpha")["app.users"] == [] and snapshot(pg_server, dst, "charlie")["app.users"] == []
    for t in ("alpha", "bravo", "charlie"):  # source untouched without --delete-source
        assert snapshot(pg_server, src, t) == before[t]
    with connect(pg_server, dst, autocommit=True) as c:
        assert c.execute("SELECT plan, model, state FROM tenancy.tenants WHERE id = 'bravo'").fetchone() == (
            "free", "pooled", "active")
    [op] = registry.history("bravo")
    assert (op.kind, op.status) == ("data-move", "done") and registry.unfinished() == []


def test_moved_tenant_keeps_working_on_the_target(pg_server, pair, registry):
    src, dst = pair
    move(registry, owner(pg_server, src), owner(pg_server, dst), "alpha")
    seed(pg_server, dst, "alpha", users=2, start=100)    # random keys: nothing to carry over
    with connect(pg_server, dst, user="tenancy_app") as c:
        c.execute("SELECT tenancy.set_tenant('alpha')")
        assert c.execute("SELECT count(*) FROM app.users").fetchone()[0] == 7


def test_a_tables_sequences_move_past_the_tenants_numbers_and_never_back(pg_server, pair, registry):
    src, dst = pair
    add_visits(pg_server, src, dst)
    for _ in range(10):                       # the source's sequences interleave alpha and bravo: alpha has 1, 3 .. 19
        visit(pg_server, src, "alpha")
        visit(pg_server, src, "bravo")
    move(registry, owner(pg_server, src), owner(pg_server, dst), "charlie")   # no visits: the target's sequences untouched
    assert visit(pg_server, dst, "charlie", 3) == [(1, 1), (2, 2), (3, 3)]   # the target's sequences stand at 3
    move(registry, owner(pg_server, src), owner(pg_server, dst), "alpha")
    # moved past alpha's largest numbers (19), or its next rows would take 4, 5 ... and collide with its own
    assert visit(pg_server, dst, "alpha", 2) == [(20, 20), (21, 21)]
    assert visit(pg_server, dst, "charlie") == [(22, 22)]
    move(registry, owner(pg_server, src), owner(pg_server, dst), "bravo")
    # bravo's largest numbers (20) are behind the target's sequences: they stay where they are
    assert visit(pg_server, dst, "bravo") == [(23, 23)]
    with connect(pg_server, dst, autocommit=True) as c:
        assert c.execute("SELECT tenant_id, count(*), max(id) FROM app.visits GROUP BY 1 ORDER BY 1").fetchall() == [
            ("alpha", 12, 21), ("bravo", 11, 23), ("charlie", 4, 22)]


def test_move_with_delete_source_removes_only_that_tenant(pg_server, pair, registry):
    src, dst = pair
    others = {t: snapshot(pg_server, src, t) for t in ("alpha", "charlie")}
    report = move(registry, owner(pg_server, src), owner(pg_server, dst), "bravo", delete_source=True).detail
    assert report["deleted_source"]
    assert snapshot(pg_server, src, "bravo") == {t: [] for t in others["alpha"]}
    for t, rows in others.items():
        assert snapshot(pg_server, src, t) == rows


def test_rerun_of_a_copy_is_a_no_op_and_a_changed_target_is_not_wiped(pg_server, pair, registry):
    src, dst = pair
    move(registry, owner(pg_server, src), owner(pg_server, dst), "charlie")
    again = move(registry, owner(pg_server, src), owner(pg_server, dst), "charlie")
    assert again.status == "nothing to do" and again.detail["rows"]["app.users"] == 4 and "nothing to do" in again.message
    # a row written on the target since: a re-run neither wipes it nor silently replaces it
    with connect(pg_server, dst, autocommit=True) as c:
        c.execute("INSERT INTO app.users (tenant_id, email, display_name) VALUES ('charlie', 'stray@x.example', 'Stray')")
    with pytest.raises(Refused, match="already holds 17 different rows of 'charlie' .*pass --replace"):
        move(registry, owner(pg_server, src), owner(pg_server, dst), "charlie")
    assert len(snapshot(pg_server, dst, "charlie")["app.users"]) == 5
    report = move(registry, owner(pg_server, src), owner(pg_server, dst), "charlie", replace=True).detail
    assert report["rows"]["app.users"] == 4 and report["replaced_rows"] == 17
    assert snapshot(pg_server, dst, "charlie") == snapshot(pg_server, src, "charlie")


def test_failed_verification_commits_nothing_and_deletes_nothing(pg_server, pair, monkeypatch, registry):
    src, dst = pair
    before = snapshot(pg_server, src, "alpha")
    real = checksums.table_checksum

    def corrupt(conn, table, tenant):
        n, digest = real(conn, table, tenant)
        return (n, "0" * 32) if conn.info.dbname == dst and getattr(table, "qualified", table) == "app.likes" else (n, digest)

    monkeypatch.setattr(checksums, "table_checksum", corrupt)
    with pytest.raises(VerificationError, match="verification failed, nothing committed on the target: app.likes: 5 rows/"):
        move(registry, owner(pg_server, src), owner(pg_server, dst), "alpha", delete_source=True)
    assert snapshot(pg_server, src, "alpha") == before
    assert snapshot(pg_server, dst, "alpha")["app.users"] == []
    monkeypatch.undo()
    aborted = move(registry, owner(pg_server, src), owner(pg_server, dst), "alpha", delete_source=True, abort=True)
    assert aborted.status == "aborted"
    with connect(pg_server, src, autocommit=True) as c:
        assert c.execute("SELECT state FROM tenancy.tenants WHERE id = 'alpha'").fetchone()[0] == "active"


def test_verify_reports_per_table(pg_server, pair, registry):
    src, dst = pair
    move(registry, owner(pg_server, src), owner(pg_server, dst), "alpha")
    assert all(c.ok for c in data.verify(owner(pg_server, src), owner(pg_server, dst), "alpha"))
    with connect(pg_server, dst, autocommit=True) as c:
        c.execute("UPDATE app.comments SET body = 'changed' WHERE tenant_id = 'alpha' AND id = "
                  "(SELECT id FROM app.comments WHERE tenant_id = 'alpha' ORDER BY id LIMIT 1)")
    checks = {c.table: c for c in data.verify(owner(pg_server, src), owner(pg_server, dst), "alpha")}
    assert not checks["app.comments"].ok and checks["app.comments"].source_rows == checks["app.comments"].target_rows == 5
    assert checks["app.users"].ok


def test_target_without_the_schema_is_refused_before_anything_changes(pg_server, pair, registry):
    src, _ = pair
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        c.execute('CREATE DATABASE "bare_target"')
    try:
        with pytest.raises(Refused, match="target .*: has no tenancy SQL: run `tenancy db apply DSN` first; nothing was changed"):
            move(registry, owner(pg_server, src), pg_server.dsn(dbname="bare_target"), "alpha", delete_source=True)
        with connect(pg_server, src, autocommit=True) as c:
            assert c.execute("SELECT state FROM tenancy.tenants WHERE id = 'alpha'").fetchone()[0] == "active"
        assert registry.history("alpha") == []
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
            c.execute('DROP DATABASE "bare_target" WITH (FORCE)')


def test_export_writes_one_file_per_table_and_a_manifest(pg_server, pair, tmp_path):
    src, _ = pair
    manifest = data.export(owner(pg_server, src), "charlie", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.api_requests.csv", "app.audit_events.csv", "app.comments.csv",
                                                          "app.itineraries.csv", "app.likes.csv",
                                                          "app.users.csv", "manifest.json"]
    users = (tmp_path / "app.users.csv").read_text().splitlines()
    assert users[0].startswith("tenant_id,id,email") and len(users) == 5
    assert all(line.startswith("charlie,") for line in users[1:])
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert manifest["tables"]["app.likes"]["rows"] == 4


def test_data_commands(pg_server, pair, tmp_path, registry):
    src, dst = pair
    run = lambda *a: subprocess.run([sys.executable, "-m", "tenancy", "data", *a, *(["--registry", registry.dsn] if
                                     a[0] == "move" else [])], capture_output=True, text=True, cwd=ROOT)
    res = run("move", "alpha", "--source", owner(pg_server, src), "--target", owner(pg_server, dst))
    assert res.returncode == 0, res.stderr
    assert "moved 20 rows of 'alpha' (6 tables), verified" in res.stdout
    res = run("verify", "alpha", "--source", owner(pg_server, src), "--target", owner(pg_server, dst))
    assert res.returncode == 0 and "app.likes: 5 rows, checksums match" in res.stdout
    res = run("export", "alpha", "--source", owner(pg_server, src), "--out", str(tmp_path / "x"))
    assert res.returncode == 0 and (tmp_path / "x" / "manifest.json").exists()
    res = run("move", "alpha", "--source", "host=127.0.0.1 port=1 user=nobody dbname=x", "--target", owner(pg_server, dst))
    assert res.returncode == 2 and "cannot connect or read it" in res.stderr and "Traceback" not in res.stderr
