"""The PostgreSQL store on real PostgreSQL: moves that cannot lose a tenant, refusals, freezes, resumes after a
kill, odd table names and column types, clean one-line failures, private and verified exports."""

from __future__ import annotations

import json
import stat
import threading
import uuid

import psycopg
import pytest

from tenancy import cli, db
from tenancy.errors import OperationError
from tenancy.operations import data_move
from tenancy.operations.protocol import Context
from tenancy.stores import Mismatch, Summary
from tenancy.stores import postgres as data
from tenancy.stores.postgres import mover as pg_mover
from tests.sqlhelp import connect, register, seed

pytestmark = pytest.mark.postgres

ODD_DDL = """
SET ROLE tenancy_owner;
CREATE SCHEMA "my.odd schema";
CREATE TABLE "my.odd schema"."select" (tenant_id text NOT NULL, "Id" int, doc json, tags text[], blob bytea,
  amount numeric, at timestamptz, ratio float8, span interval);
CREATE TABLE app."Trips" (tenant_id text NOT NULL, id int NOT NULL, "Title" text, meta jsonb, PRIMARY KEY (tenant_id, id));
SELECT tenancy.isolate('"my.odd schema"."select"');
SELECT tenancy.isolate('app."Trips"');
RESET ROLE;
"""


def _new_db(server, *, odd: bool = False) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    db.apply(server.dsn(dbname=name))
    with psycopg.connect(server.dsn(dbname=name), autocommit=True) as c:
        c.execute("ALTER ROLE tenancy_owner LOGIN; ALTER ROLE tenancy_app LOGIN")
        if odd:
            c.execute(ODD_DDL)
    return name


@pytest.fixture
def dbs(pg_server):
    """A source with tenants alpha (5 users), bravo (3) and an empty target, both with the tenancy SQL."""
    made = [_new_db(pg_server), _new_db(pg_server)]
    register(pg_server, made[0], "alpha", "bravo")
    seed(pg_server, made[0], "alpha", users=5)
    seed(pg_server, made[0], "bravo", users=3)
    yield made
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        for name in made:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def odd_dbs(pg_server):
    made = [_new_db(pg_server, odd=True), _new_db(pg_server, odd=True)]
    register(pg_server, made[0], "alpha", "bravo")
    seed(pg_server, made[0], "alpha", users=2)
    with connect(pg_server, made[0], autocommit=True) as c:
        for t in ("alpha", "bravo"):
            for i in range(3):  # two identical rows per tenant: a table without a key may hold duplicates
                c.execute('INSERT INTO "my.odd schema"."select" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)',
                          (t, i % 2, json.dumps({"b": 1, "a": [i, "x"]}), ["x", "y,z", None], b"\x00\xff" * (i + 1),
                           "12345678901234567890.000000001", "2026-03-29 01:30:00+01", 0.1 + i, "1 day 02:03:04"))
            c.execute('INSERT INTO app."Trips" VALUES (%s, 1, %s, %s)', (t, "Ünïcode \"quoted\", comma", '{"k": [1, 2.50]}'))
    yield made
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        for name in made:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def owner(server, name):
    return server.dsn(user="tenancy_owner", dbname=name)


def rows(server, name, tenant) -> dict[str, list]:
    """Every row of the tenant in every isolated table, as the superuser sees them."""
    out = {}
    with connect(server, name, autocommit=True) as c:
        for (t,) in c.execute("SELECT table_name::text FROM tenancy.isolated_tables ORDER BY 1").fetchall():
            out[t] = sorted(repr(r) for r in c.execute(f"SELECT * FROM {t} WHERE tenant_id = %s", (tenant,)))
    return out


def registry(server, name, tenant):
    with connect(server, name, autocommit=True) as c:
        row = c.execute("SELECT state FROM tenancy.tenants WHERE id = %s", (tenant,)).fetchone()
    return row[0] if row else None


def history(registry, tenant):
    return [(op.kind, op.status) for op in registry.history(tenant)]


@pytest.fixture
def reg(registry):
    """The registry every `tenancy data move` of these tests runs under (its lease and journal)."""
    return registry


def move(registry, source, target, tenant, **kw):
    return data_move.move(Context("dev", registry), tenant, source, target, **kw)


def run(capsys, *argv, registry=None) -> tuple[int, str, str]:
    extra = ["--registry", registry.dsn] if registry is not None and argv[0] == "move" else []
    code = cli.main(["data", *argv, *extra])
    out, err = capsys.readouterr()
    return code, out, err


def empty(r: dict) -> dict:
    return {t: [] for t in r}


# ------------------------------------------------------------------------------------------ re-runs and refusals

def test_rerun_of_a_completed_delete_source_move_is_a_no_op(pg_server, dbs, capsys, reg):
    src, dst = dbs
    before = rows(pg_server, src, "alpha")
    argv = ("move", "alpha", "--source", owner(pg_server, src), "--target", owner(pg_server, dst), "--delete-source")
    code, out, err = run(capsys, *argv, registry=reg)
    assert code == 0, err
    assert "moved 20 rows of 'alpha' (6 tables), verified" in out and "source rows deleted" in out
    code, out, err = run(capsys, *argv, registry=reg)
    assert code == 0, err
    assert "move of 'alpha' from" in out and "already completed (op-" in out and out.rstrip().endswith("nothing to do")
    assert rows(pg_server, dst, "alpha") == before
    assert rows(pg_server, src, "alpha") == empty(before)
    assert registry(pg_server, src, "alpha") is None and registry(pg_server, dst, "alpha") == "active"
    assert history(reg, "alpha") == [("data-move", "done")], "one operation; the re-run left no trace"


@pytest.mark.parametrize("other", [dict(host="localhost"), dict(user="postgres")])
def test_one_database_through_two_dsns_is_refused(pg_server, dbs, capsys, other, reg):
    src, _ = dbs
    before = rows(pg_server, src, "alpha")
    second = owner(pg_server, src)
    for k, v in other.items():
        second = second.replace(f"{k}=" + ("127.0.0.1" if k == "host" else "tenancy_owner"), f"{k}={v}")
    assert second != owner(pg_server, src)
    code, out, err = run(capsys, "move", "alpha", "--source", owner(pg_server, src), "--target", second, "--delete-source",
                         registry=reg)
    assert code == 2 and out == ""
    assert "are the same database (server " in err and "nothing was changed" in err and "Traceback" not in err
    assert rows(pg_server, src, "alpha") == before
    assert registry(pg_server, src, "alpha") == "active"
    assert history(reg, "alpha") == []


def test_target_with_different_rows_is_refused_unless_replace(pg_server, dbs, capsys, reg):
    src, dst = dbs
    register(pg_server, dst, "alpha")
    seed(pg_server, dst, "alpha", users=1, start=50)
    theirs = rows(pg_server, dst, "alpha")
    mine = rows(pg_server, src, "alpha")
    code, out, err = run(capsys, "move", "alpha", "--source", owner(pg_server, src), "--target", owner(pg_server, dst),
                         registry=reg)
    assert code == 2
    assert "already holds 4 different rows of 'alpha' (source vs target: app.comments: 5 vs 1" in err
    assert "pass --replace" in err and err.count("\n") == 1
    assert rows(pg_server, dst, "alpha") == theirs and rows(pg_server, src, "alpha") == mine
    code, out, err = run(capsys, "move", "alpha", "--source", owner(pg_server, src), "--target", owner(pg_server, dst),
                         "--replace", registry=reg)
    assert code == 0, err
    assert "replaced 4 rows of 'alpha' the target held" in err
    assert "replaced 4 rows the target held" in out
    assert rows(pg_server, dst, "alpha") == mine == rows(pg_server, src, "alpha")


def test_empty_source_with_populated_target_is_refused(pg_server, dbs, capsys, reg):
    src, dst = dbs
    move(reg, owner(pg_server, src), owner(pg_server, dst), "bravo")
    moved = rows(pg_server, dst, "bravo")
    with connect(pg_server, src, autocommit=True) as c:   # the source's rows went away by other means
        for t in ("app.likes", "app.comments", "app.itineraries", "app.users"):
            c.execute(f"DELETE FROM {t} WHERE tenant_id = 'bravo'")
    code, out, err = run(capsys, "move", "bravo", "--source", owner(pg_server, src), "--target", owner(pg_server, dst),
                         "--delete-source", registry=reg)
    assert code == 2
    assert ("nothing to move: 'bravo' has no rows at the source but 12 at the target -- the move may already have "
            "happened" in err)
    assert rows(pg_server, dst, "bravo") == moved
    assert registry(pg_server, src, "bravo") == "active"   # refused before anything was frozen


# --------------------------------------------------------------------------------------------- freeze and writers

def test_freeze_drains_an_open_writer_whose_row_is_then_moved(pg_server, dbs, reg):
    src, dst = dbs
    writer = connect(pg_server, src, user="tenancy_app")
    writer.execute("SELECT tenancy.set_tenant('alpha')")
    writer.execute("INSERT INTO app.users (tenant_id, email, display_name) VALUES ('alpha', 'inflight@x', 'In flight')")
    result: dict = {}
    mover = threading.Thread(target=lambda: result.setdefault(
        "report", move(reg, owner(pg_server, src), owner(pg_server, dst), "alpha", delete_source=True)))
    mover.start()
    with connect(pg_server, src, autocommit=True) as watch:   # wait until the freeze waits on the writer's lock
        while not watch.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype IN ('tuple', 'transactionid')"
                                ).fetchone()[0]:
            assert mover.is_alive(), "the move finished without waiting for the open writer"
    writer.commit()
    writer.close()
    mover.join()
    assert result["report"].detail["rows"]["app.users"] == 6
    with connect(pg_server, dst, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM app.users WHERE email = 'inflight@x'").fetchone()[0] == 1
    assert rows(pg_server, src, "alpha")["app.users"] == []


def test_every_committed_write_during_a_move_is_on_exactly_one_side(pg_server, dbs, reg):
    src, dst = dbs
    committed, refused, other = [], [], []
    five, after_move, stop = threading.Event(), threading.Event(), threading.Event()

    def write():
        with connect(pg_server, src, user="tenancy_app") as c:
            i = tries_after = 0
            while not stop.is_set() and tries_after < 20:   # bounded: a write that is never refused fails below
                i += 1
                tries_after += after_move.is_set()
                email = f"w{i}@x"
                try:
                    c.execute("SELECT tenancy.set_tenant('alpha')")
                    c.execute("INSERT INTO app.users (tenant_id, email, display_name) VALUES ('alpha', %s, 'W')", (email,))
                    c.commit()
                    committed.append(email)
                except (psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.UndefinedObject,
                        psycopg.errors.SerializationFailure) as exc:
                    c.rollback()
                    refused.append((email, type(exc).__name__))
                    if after_move.is_set():
                        stop.set()
                except psycopg.Error as exc:   # anything else is a defect the assertions below report
                    c.rollback()
                    other.append(str(exc))
                    stop.set()
                if len(committed) == 5:
                    five.set()

    t = threading.Thread(target=write)
    t.start()
    five.wait()
    move(reg, owner(pg_server, src), owner(pg_server, dst), "alpha", delete_source=True)
    after_move.set()
    t.join()
    assert other == []
    assert len(committed) >= 5 and refused, (committed, refused)
    with connect(pg_server, dst, autocommit=True) as c:
        on_target = {r[0] for r in c.execute("SELECT email FROM app.users WHERE tenant_id = 'alpha'")}
    assert set(committed) <= on_target
    assert not {e for e, _ in refused} & on_target
    assert on_target - set(committed) == {f"user{i}@alpha.example" for i in range(5)}
    assert rows(pg_server, src, "alpha")["app.users"] == []
    assert registry(pg_server, src, "alpha") is None


# -------------------------------------------------------------------------------------------------- resumes

class Killed(BaseException):
    """A kill at a named point: not an Exception, so no handler of the code sees it."""


POINTS = [("phase", "freeze"), ("phase", "copy"), ("store", "before commit"), ("phase", "switch"), ("phase", "cleanup"),
          ("step", "deleting"), ("store", "target deleted app.users")]


@pytest.mark.parametrize("kind,point", POINTS, ids=[p for _, p in POINTS])
def test_a_move_killed_anywhere_is_finished_by_running_it_again(pg_server, dbs, monkeypatch, capsys, kind, point, reg):
    src, dst = dbs
    before = rows(pg_server, src, "alpha")
    bravo = rows(pg_server, src, "bravo")

    def kill(name):
        if name == point:
            raise Killed(name)

    ctx = Context("dev", reg, before_phase=kill if kind == "phase" else None, step=kill if kind == "step" else None)
    if kind == "store":
        monkeypatch.setattr(pg_mover, "checkpoint", kill)
    with pytest.raises(Killed):
        data_move.move(ctx, "alpha", owner(pg_server, src), owner(pg_server, dst), delete_source=True)
    assert registry(pg_server, src, "alpha") in ("frozen", "active", None)
    monkeypatch.setattr(pg_mover, "checkpoint", lambda name: None)
    argv = ("move", "alpha", "--source", owner(pg_server, src), "--target", owner(pg_server, dst), "--delete-source")
    code, out, err = run(capsys, *argv, registry=reg)
    assert code == 0, err
    assert "resuming op-" in err
    assert rows(pg_server, dst, "alpha") == before
    assert rows(pg_server, src, "alpha") == empty(before)
    assert rows(pg_server, src, "bravo") == bravo
    assert registry(pg_server, src, "alpha") is None
    assert registry(pg_server, dst, "alpha") == "active"       # the state before the first attempt froze it
    assert history(reg, "alpha") == [("data-move", "done")] and reg.unfinished() == []
    code, out, err = run(capsys, *argv, registry=reg)
    assert code == 0 and "already completed (op-" in out


def test_target_state_and_registry_after_a_delete_source_move(pg_server, dbs, capsys, reg):
    src, dst = dbs
    register(pg_server, src, "bravo", state="readonly")
    code, out, err = run(capsys, "move", "bravo", "--source", owner(pg_server, src), "--target", owner(pg_server, dst),
                         "--delete-source", registry=reg)
    assert code == 0, err
    assert registry(pg_server, dst, "bravo") == "readonly" and registry(pg_server, src, "bravo") is None
    code, out, err = run(capsys, "move", "alpha", "--source", owner(pg_server, src), "--target", owner(pg_server, dst),
                         "--delete-source", "--state", "suspended", registry=reg)
    assert code == 0, err
    assert registry(pg_server, dst, "alpha") == "suspended"


def test_source_changed_after_verification_is_not_deleted(pg_server, dbs, reg):
    src, dst = dbs

    def sneak(name):   # the owner role may still write a frozen tenant: the re-verification must notice
        if name == "cleanup":
            with connect(pg_server, src, autocommit=True) as c:
                c.execute("UPDATE app.comments SET body = 'edited' WHERE tenant_id = 'alpha' AND id = "
                          "(SELECT id FROM app.comments WHERE tenant_id = 'alpha' ORDER BY id LIMIT 1)")

    ctx = Context("dev", reg, before_phase=sneak)
    with pytest.raises(OperationError, match=r"no longer holds what was verified \(verified vs now: app.comments: same "
                                             r"count \(5\), different checksum\); nothing was deleted; the tenant stays "
                                             r"frozen at the source"):
        data_move.move(ctx, "alpha", owner(pg_server, src), owner(pg_server, dst), delete_source=True)
    assert len(rows(pg_server, src, "alpha")["app.users"]) == 5
    assert registry(pg_server, src, "alpha") == "frozen"


# ------------------------------------------------------------------------------------- names and column types

def test_odd_names_json_and_no_primary_key_move_verify_and_export(pg_server, odd_dbs, capsys, tmp_path, reg):
    src, dst = odd_dbs
    before = rows(pg_server, src, "alpha")
    assert len(before['"my.odd schema"."select"']) == 3 and len(before['app."Trips"']) == 1
    code, out, err = run(capsys, "move", "alpha", "--source", owner(pg_server, src), "--target", owner(pg_server, dst),
                         "--delete-source", registry=reg)
    assert code == 0, err
    assert "moved 12 rows of 'alpha' (8 tables)" in out
    assert rows(pg_server, dst, "alpha") == before
    assert rows(pg_server, src, "bravo")['"my.odd schema"."select"'] != []
    code, out, err = run(capsys, "export", "alpha", "--source", owner(pg_server, dst), "--out", str(tmp_path / "x"))
    assert code == 0, err
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert manifest["tables"]['"my.odd schema"."select"']["file"] == "%22my.odd%20schema%22.%22select%22.csv"
    assert manifest["tables"]['app."Trips"']["rows"] == 1
    assert data.verify_export(tmp_path / "x", owner(pg_server, dst), "alpha").count == 12
    code, out, err = run(capsys, "verify", "bravo", "--source", owner(pg_server, src), "--target", owner(pg_server, src),
                         "--table", 'app."Trips",app.users')
    assert code == 0 and out.splitlines() == ['app."Trips": 1 rows, checksums match', "app.users: 0 rows, checksums match"]


def test_checksums_do_not_depend_on_session_settings(pg_server, odd_dbs):
    src, _ = odd_dbs
    plain = data.summary(owner(pg_server, src), "bravo")
    odd = data.summary(owner(pg_server, src) + " options='-c TimeZone=Asia/Tokyo -c DateStyle=German,DMY "
                       "-c extra_float_digits=-3 -c IntervalStyle=sql_standard -c bytea_output=escape'", "bravo")
    assert plain == odd and plain.kind == "postgres" and plain.count == 4
    assert plain.parts['"my.odd schema"."select"']["count"] == 3


# ------------------------------------------------------------------------------------------- clean failures

def test_unreachable_malformed_and_bare_databases_fail_in_one_line(pg_server, dbs, fresh_db, capsys, tmp_path, reg):
    src, dst = dbs
    code, out, err = run(capsys, "move", "alpha", "--source", "host=127.0.0.1 port=1 user=x password=sekrit dbname=x",
                         "--target", owner(pg_server, dst), registry=reg)
    assert code == 2 and err.count("\n") == 1 and "sekrit" not in err and "Traceback" not in err
    assert err.startswith("error: data-move of 'alpha' refused before any change: source 'host=127.0.0.1 port=1 dbname=x "
                          "user=x': cannot connect or read it: ")
    code, out, err = run(capsys, "move", "alpha", "--source", "host=127.0.0.1 password='sekrit dbname=x",
                         "--target", owner(pg_server, dst), registry=reg)
    assert code == 2 and "not a libpq connection string" in err and "sekrit" not in err and err.count("\n") == 1
    code, out, err = run(capsys, "move", "alpha", "--source", owner(pg_server, src), "--target",
                         pg_server.dsn(dbname=fresh_db), registry=reg)
    assert code == 2 and err == (f"error: data-move of 'alpha' refused before any change: target 'host=127.0.0.1 "
                                 f"port={pg_server.port} dbname={fresh_db} user=postgres': has no tenancy SQL: run `tenancy "
                                 "db apply DSN` first; nothing was changed\n")
    for argv in (["export", "alpha", "--source", pg_server.dsn(dbname=fresh_db), "--out", str(tmp_path / "never")],
                 ["verify", "alpha", "--source", pg_server.dsn(dbname=fresh_db), "--target", owner(pg_server, dst)]):
        code, out, err = run(capsys, *argv)
        assert code == 1 and err == (f"error: database 'host=127.0.0.1 port={pg_server.port} dbname={fresh_db} user=postgres'"
                                     " has no tenancy schema: run `tenancy db apply DSN` first\n"), argv
    assert not (tmp_path / "never").exists()   # a failed export leaves no directory behind
    code, out, err = run(capsys, "move", "alpha", "--source", owner(pg_server, src), "--target", owner(pg_server, dst),
                         "--table", "app.nope", registry=reg)
    assert code == 2 and "app.nope: not isolated table(s) in database" in err and "isolated tables there: app.api_requests, app.audit_events, app.users" in err
    assert reg.history("alpha") == [] and registry(pg_server, src, "alpha") == "active"


def test_runtime_role_gets_one_line_naming_the_owner_role(pg_server, dbs, capsys):
    src, dst = dbs
    code, out, err = run(capsys, "verify", "alpha", "--source", pg_server.dsn(user="tenancy_app", dbname=src),
                         "--target", owner(pg_server, dst))
    assert code == 1 and err.count("\n") == 1
    assert "permission denied" in err and "connect as the owner role (tenancy_owner)" in err


# ---------------------------------------------------------------------------------------------------- exports

def test_exports_are_private_refuse_a_used_directory_and_are_verified(pg_server, dbs, capsys, tmp_path):
    src, _ = dbs
    out_dir = tmp_path / "exports"
    code, out, err = run(capsys, "export", "alpha", "--source", owner(pg_server, src), "--out", str(out_dir))
    assert code == 0, err
    assert stat.S_IMODE(out_dir.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out_dir.iterdir()} == {
        "app.users.csv": 0o600, "app.itineraries.csv": 0o600, "app.comments.csv": 0o600, "app.likes.csv": 0o600,
        "app.audit_events.csv": 0o600, "app.api_requests.csv": 0o600, "manifest.json": 0o600}
    alpha_users = (out_dir / "app.users.csv").read_text()
    code, out, err = run(capsys, "export", "bravo", "--source", owner(pg_server, src), "--out", str(out_dir))
    assert code == 1 and "is not empty" in err
    assert (out_dir / "app.users.csv").read_text() == alpha_users
    expected = data.verify_export(out_dir, owner(pg_server, src), "alpha")
    assert expected == data.summary(owner(pg_server, src), "alpha")
    with connect(pg_server, src, autocommit=True) as c:
        c.execute("UPDATE app.users SET display_name = 'Changed' WHERE tenant_id = 'alpha' AND email = 'user0@alpha.example'")
    with pytest.raises(Mismatch, match=r"no longer matches database .* \(exported vs now: app.users: same count \(5\), "
                                       "different checksum\\)"):
        data.verify_export(out_dir, owner(pg_server, src), "alpha")
    (out_dir / "app.likes.csv").chmod(0o600)
    with open(out_dir / "app.likes.csv", "a") as f:
        f.write("alpha,1,1,2026-01-01 00:00:00+00\n")
    with pytest.raises(Mismatch, match="app.likes: file app.likes.csv changed"):
        data.verify_export(out_dir, owner(pg_server, src), "alpha")


# ------------------------------------------------------------------------------------- summary, delete, tables

def test_delete_against_a_summary_and_table_subsets(pg_server, dbs, reg):
    src, dst = dbs
    users_only = data.summary(owner(pg_server, src), "alpha", tables=["app.users"])
    assert list(users_only.parts) == ["app.users"] and users_only.count == 5
    report = move(reg, owner(pg_server, src), owner(pg_server, dst), "alpha", tables=["app.users", "app.itineraries"])
    assert report.detail["rows"] == {"app.users": 5, "app.itineraries": 5}
    assert rows(pg_server, dst, "alpha")["app.comments"] == []
    expect = data.summary(owner(pg_server, src), "bravo")
    seed(pg_server, src, "bravo", users=1, start=90)
    with pytest.raises(Mismatch, match=r"no longer holds what was verified \(verified vs now: app.comments: 3 vs 4"):
        data.delete(owner(pg_server, src), "bravo", expect)
    assert len(rows(pg_server, src, "bravo")["app.users"]) == 4
    assert data.delete(owner(pg_server, src), "bravo", data.summary(owner(pg_server, src), "bravo")) == 16
    assert rows(pg_server, src, "bravo") == empty(rows(pg_server, src, "bravo"))
    assert Summary.from_json(expect.to_json()) == expect
    with pytest.raises(data.DataInputError, match="app.comment: not isolated table"):
        data.delete(owner(pg_server, src), "alpha", tables=["app.comment"])


def test_data_move_prints_its_outcome_as_json_for_scripts(pg_server, dbs, capsys, reg):
    src, dst = dbs
    code, out, err = run(capsys, "move", "bravo", "--source", owner(pg_server, src), "--target", owner(pg_server, dst),
                         "--json", registry=reg)
    assert code == 0, err
    outcome = json.loads(out)
    assert (outcome["kind"], outcome["tenant"], outcome["status"]) == ("data-move", "bravo", "done")
    assert outcome["operation"].startswith("op-") and outcome["total_rows"] == 12 and outcome["rows"]["app.users"] == 3
    code, out, err = run(capsys, "move", "bravo", "--source", owner(pg_server, src), "--target", owner(pg_server, dst),
                         "--json", registry=reg)
    assert code == 0 and json.loads(out)["status"] == "nothing to do"
