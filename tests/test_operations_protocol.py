"""The operation protocol against the mistakes operators make: a wrong store (the source, a neighbour's database,
another environment's, one database spelled twice) refused by the preflight with nothing changed on any server or
in the offline state; two commands on one tenant; a kill right after a store reported its rows deleted; an
archive directory that cannot be used; the README's downgrade recipe; offboarding during a --keep-source window.
Real PostgreSQL, the Firestore and GCS API servers, the offline engine."""

from __future__ import annotations

import hashlib
import threading
import uuid

import psycopg
import pytest

from tenancy import db, naming
from tenancy.catalog import with_tenant
from tenancy.lifecycle import Refused
from tenancy.lifecycle.tenant_data import Reach
from tenancy.operations import offboard as offboarding
from tenancy.operations import tier_move as moves
from tenancy.operations.protocol import Context
from tests.movehelp import Killed
from tests.sqlhelp import connect, register, seed
from tests.test_tier_moves_all_stores import TABLES, DumpJob, docs, fleet, objects_of, rows  # noqa: F401 -- fixture

pytestmark = pytest.mark.postgres


def upgrade(w, to="standard", catalog=None, reach=None, step=None, before_phase=None, **kw):
    ctx = Context("dev", w["registry"], w["engine"], step=step, before_phase=before_phase)
    return moves.upgrade(ctx, catalog or w["catalog"], "bravo", to, reach=reach or w["reach"], **kw)


def offboard(w, tenant, catalog=None, step=None, **kw):
    ctx = Context("dev", w["registry"], w["engine"], step=step)
    kw.setdefault("reach", w["reach"])
    return offboarding.offboard(ctx, catalog or w["catalog"], tenant, **kw)


def everything(w, *extra: str) -> dict:
    """What every server and the offline state hold: each database's registered tenants and every row of every tenant,
    every document and object, the offline engine's state files, and the registry's tables."""
    s = w["server"]
    out: dict = {}
    for d in (w["pooled"], *w["own"], *extra):
        with psycopg.connect(s.dsn(dbname=d), autocommit=True) as c:   # a superuser: no row is filtered
            if not c.execute("SELECT to_regclass('tenancy.tenants') IS NOT NULL").fetchone()[0]:
                out[d] = None
                continue
            out[d] = {"tenants": sorted(c.execute("SELECT id, plan, model, state FROM tenancy.tenants").fetchall()),
                      **{t: sorted(map(str, c.execute(f"SELECT * FROM {t}").fetchall())) for t in TABLES}}
    out["documents"] = {t: docs(w["fs_pool"](t)) for t in ("alpha", "bravo")} | {"own": docs(w["fs_own"])}
    out["objects"] = {"shared": objects_of(w["shared"], ""), "own": objects_of(w["bucket"], "")}
    out["state"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((w["tmp"] / "state").glob("*"))}
    with psycopg.connect(w["registry"].dsn, autocommit=True) as c:
        out["registry"] = {t: c.execute(f"SELECT count(*) FROM registry.{t}").fetchone()[0]
                           for t in ("operations", "journal", "cleanup", "leases", "tenants")}
    return out


@pytest.fixture
def neighbour_db(pg_server):
    """Another tenant's own database: delta's postgres-1, with delta's rows."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    db.apply(pg_server.dsn(dbname=name))
    register(pg_server, name, "delta", model="namespace")
    seed(pg_server, name, "delta", users=2)
    yield name
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def prod_db(pg_server):
    """prod's bravo/postgres-1: marked by prod's SQL job, empty."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    db.apply(pg_server.dsn(dbname=name))
    with psycopg.connect(pg_server.dsn(dbname=name), autocommit=True) as c:
        c.execute("INSERT INTO tenancy.database_identity (environment, name) VALUES ('prod', 'bravo/postgres-1')")
    yield name
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def respelled(server, dbname: str) -> str:
    """The same database as `server.dsn(dbname=...)`, written as a URI through another host name."""
    return f"postgresql://postgres@localhost:{server.port}/{dbname}"


WRONG = {
    "the target is the source": (
        lambda w, n, p: {f"postgres-{i}": (w["reach"].dsns["pooled"] if i == 1 else respelled(w["server"], w["pooled"]))
                         for i in (1, 2, 3)},
        ["a target is also a source"]),
    "a neighbour's database": (
        lambda w, n, p: {f"postgres-{i}": w["server"].dsn(dbname=n) for i in (1, 2, 3)},
        ["holds other tenants (delta): not a database of 'bravo''s own", "they are one database"]),
    "another environment's database": (
        lambda w, n, p: {"postgres-1": w["server"].dsn(dbname=p)},
        ["this is prod's database bravo/postgres-1, not dev's bravo/postgres-1"]),
    "one database spelled two ways": (
        lambda w, n, p: {"postgres-2": respelled(w["server"], w["own"][0])},
        ["reach the same database", "they are one database"]),
}


@pytest.mark.parametrize("case", list(WRONG))
def test_a_wrong_store_is_refused_by_the_preflight_with_nothing_changed_anywhere(fleet, neighbour_db, prod_db, case):
    w = fleet
    overrides, said = WRONG[case]
    reach = Reach({**w["reach"].dsns, **overrides(w, neighbour_db, prod_db)})
    before = everything(w, neighbour_db, prod_db)
    calls = len(w["engine"].calls)
    with pytest.raises(Refused) as refused:
        upgrade(w, reach=reach, method="online")
    message = str(refused.value)
    assert message.startswith("upgrade of 'bravo' refused before any change: ") and message.endswith("nothing was changed")
    for text in said:
        assert text in message, message
    assert everything(w, neighbour_db, prod_db) == before, "nothing changed on any server, in the state or the registry"
    assert [c for c in w["engine"].calls[calls:] if c[0] in ("up", "destroy")] == [], "no stack was updated"
    # --abort finds nothing to undo, and undoes nothing
    assert upgrade(w, reach=reach, abort=True).status == "nothing to abort"
    assert everything(w, neighbour_db, prod_db) == before


def test_a_source_that_does_not_hold_the_tenant_is_refused_before_its_stack_is_deployed(fleet, neighbour_db):
    w = fleet
    reach = Reach({**w["reach"].dsns, "pooled": w["server"].dsn(dbname=neighbour_db)})
    before = everything(w, neighbour_db)
    with pytest.raises(Refused, match=r"pooled \(source, pool-1, .*\): does not hold tenant 'bravo' \(not registered in "
                                      r"its tenancy.tenants\)"):
        upgrade(w, reach=reach)
    assert ("up", "dev.bravo") not in w["engine"].calls and "dev.bravo" not in w["engine"].stacks()
    assert everything(w, neighbour_db) == before


def test_two_operations_on_one_tenant_started_together_never_both_proceed(fleet):
    w = fleet
    gate = threading.Barrier(3)
    outcomes: dict[str, object] = {}

    def run(name, fn):
        gate.wait()
        try:
            outcomes[name] = fn()
        except Exception as exc:   # noqa: BLE001 -- the refusal is what is asserted
            outcomes[name] = exc

    threads = [threading.Thread(target=run, args=("upgrade-1", lambda: upgrade(w))),
               threading.Thread(target=run, args=("upgrade-2", lambda: upgrade(w))),
               threading.Thread(target=run, args=("offboard", lambda: offboard(w, "bravo", export_to=str(w["tmp"] / "x"))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    done = [n for n, o in outcomes.items() if not isinstance(o, Exception) and o.status == "done"]
    refused = {n: str(o) for n, o in outcomes.items() if isinstance(o, Exception)}
    # one proceeds; each other is refused while it runs, or finds (once it is over) that there is nothing to do
    assert len(done) == 1 and len(refused) + len(done) + sum(
        not isinstance(o, Exception) and o.status == "nothing to do" for o in outcomes.values()) == 3, outcomes
    for name, message in refused.items():
        assert isinstance(outcomes[name], Refused), message
        # refused while the winner runs; or, arriving as it lets go, refused by its own preflight on what changed
        assert ("is held by operation op-" in message and "running now as pid" in message) or \
               "is being taken by another command right now" in message or \
               (" refused before any change: " in message and message.endswith("nothing was changed")), message
    if done == ["offboard"]:
        assert rows(w["server"], w["pooled"], "bravo") == {t: [] for t in TABLES}
    else:
        assert rows(w["server"], w["own"][0], "bravo")["app.users"] == w["before"]["bravo"]["app.users"]
        assert not (w["tmp"] / "x").exists()
    assert w["registry"].unfinished() == [], "every lease is released"


@pytest.mark.parametrize("command", ["upgrade", "offboard"])
def test_killed_right_after_a_store_reported_its_rows_deleted_the_same_command_finishes(fleet, command):
    w, s = fleet, fleet["server"]
    point = "deleted pooled->postgres-1" if command == "upgrade" else "deleted pooled"

    def kill(name):
        if name == point:
            raise Killed(name)

    run = (lambda step=None: upgrade(w, step=step)) if command == "upgrade" else \
          (lambda step=None: offboard(w, "bravo", export_to=str(w["tmp"] / "archive"), step=step))
    with pytest.raises(Killed):
        run(kill)
    assert rows(s, w["pooled"], "bravo")["app.users"] == [], "the killed run's delete committed"
    out = run()
    assert out.status == "done"
    assert rows(s, w["pooled"], "bravo") == {t: [] for t in TABLES}, "nothing of bravo is stranded in the pool"
    assert docs(w["fs_pool"]("bravo")) == {} and objects_of(w["shared"], "bravo/") == {}
    if command == "upgrade":
        assert rows(s, w["own"][0], "bravo")["app.users"] == w["before"]["bravo"]["app.users"]
        assert docs(w["fs_own"]) == w["docs"]["bravo"]
    assert w["registry"].unfinished() == []
    assert rows(s, w["pooled"], "alpha") == w["before"]["alpha"]


@pytest.mark.parametrize("kind", ["a non-empty directory", "a symlink to a non-empty directory"])
def test_an_unusable_export_directory_is_refused_before_the_freeze(fleet, kind):
    w = fleet
    used = w["tmp"] / "used"
    used.mkdir()
    (used / "old.csv").write_text("an earlier export\n")
    target = used
    if kind.startswith("a symlink"):
        target = w["tmp"] / "link"
        target.symlink_to(used)
    before = everything(w)
    with pytest.raises(Refused, match=f"--export-to {target}.*is not empty; give a new \\(or empty\\) directory"):
        offboard(w, "bravo", export_to=str(target))
    assert everything(w) == before, "not frozen, nothing exported"
    assert sorted(p.name for p in used.iterdir()) == ["old.csv"]


def test_the_readme_downgrade_recipe_discards_the_graph_without_a_dump_job(fleet):
    w, s = fleet, fleet["server"]
    upgrade(w)
    standard = with_tenant(w["catalog"], "bravo", plan="standard")
    archive = w["tmp"] / "archive"
    out = upgrade(w, "free", standard, export_to=str(archive),
                  discard=frozenset({"postgres-2", "postgres-3", "graph"}))
    assert out.status == "done"
    import json
    index = json.loads((archive / "archive.json").read_text())
    assert "graph" not in index["stores"] and index["discarded"] == ["graph", "postgres-2", "postgres-3"]
    assert set(index["stores"]) == {"postgres-1", "postgres-2", "postgres-3", "objects", "firestore"}
    assert rows(s, w["pooled"], "bravo")["app.users"] == w["before"]["bravo"]["app.users"]
    assert "dev.bravo" not in w["engine"].stacks()


def test_a_graph_to_export_without_a_dump_job_is_refused_before_anything_changes(fleet):
    w = fleet
    upgrade(w)
    standard = with_tenant(w["catalog"], "bravo", plan="standard")
    before = everything(w)
    with pytest.raises(Refused, match=r"'bravo' has a Neo4j graph: exporting it runs a neo4j-admin dump Job in namespace "
                                      r"tenant-bravo; give --kubeconfig, or --discard graph to let it go"):
        upgrade(w, "free", standard, export_to=str(w["tmp"] / "archive"), discard=frozenset({"postgres-2", "postgres-3"}))
    assert everything(w) == before and not (w["tmp"] / "archive").exists()
    w["reach"].graph_runner = DumpJob(w["bucket"])
    out = upgrade(w, "free", standard, export_to=str(w["tmp"] / "archive"),
                  discard=frozenset({"postgres-2", "postgres-3", "graph"}))
    assert out.status == "done" and (w["tmp"] / "archive" / "graph").is_dir()


def test_a_second_command_is_told_who_holds_the_tenant_and_a_stuck_holder_can_be_taken_over(fleet):
    from tenancy.operations.lease import Lease, Spec

    w = fleet
    # a process that holds bravo's lease and hangs (its registry session alive)
    stuck = Lease.take(w["registry"], Spec("upgrade", "bravo", {"to_plan": "standard"},
                                           "tenancy upgrade bravo --to standard --env dev"))
    with pytest.raises(Refused) as refused:
        offboard(w, "bravo", export_to=str(w["tmp"] / "x"))
    assert str(refused.value).startswith(f"tenant 'bravo' is held by operation {stuck.op_id} (upgrade to_plan=standard), "
                                         "started ")
    assert str(refused.value).endswith("nothing was changed. Wait for it to finish (`tenancy moves`), or if that process "
                                       "is stuck take the lease over: `tenancy upgrade bravo --to standard --env dev "
                                       "--take-over`")
    out = upgrade(w, take_over=True)
    assert out.status == "done" and out.operation == stuck.op_id, "the same operation, resumed"
    from tenancy.operations.lease import LeaseLost
    with pytest.raises(LeaseLost):
        stuck.record("copy", "started")        # the stuck process can record nothing more
    assert w["registry"].unfinished() == []


def test_the_sql_job_marks_its_database_once_and_fails_on_a_database_marked_as_another(pg_server, tenancy_db):
    """What the platform's SQL job applies last (zz_register.sql): the identity marker the preflight checks."""
    from components.sqljob import registration_sql

    with connect(pg_server, tenancy_db, autocommit=True) as c:
        c.execute(registration_sql((), ("dev", "pool-1")))
        c.execute(registration_sql((), ("dev", "pool-1")))     # every deploy applies it again: a no-op
        assert c.execute("SELECT environment, name FROM tenancy.database_identity").fetchall() == [("dev", "pool-1")]
        with pytest.raises(psycopg.errors.RaiseException, match=r"this database is marked as another \(dev/pool-1\), "
                                                                 r"not prod/pool-1"):
            c.execute(registration_sql((), ("prod", "pool-1")))
        assert c.execute("SELECT environment, name FROM tenancy.database_identity").fetchall() == [("dev", "pool-1")]


def test_registry_sync_records_every_deployed_database_behind_the_auth_proxy_and_keeps_hand_records(
        registry, tmp_path, monkeypatch, capsys):
    from tenancy import cli
    from tenancy.operations import stores as where
    from tests.conftest import ROOT

    state = tmp_path / "state"
    assert cli.main(["up", "--engine", "offline", "--state", str(state), "--tenants", str(ROOT / "tenants.yaml"),
                     "--registry", registry.dsn]) == 0
    assert "registry: " in capsys.readouterr().out
    registry.set_database("stark/postgres-2", "tenant:stark", {"host": "127.0.0.1", "port": 6543, "dbname": "app"})
    assert cli.main(["registry", "sync", "--engine", "offline", "--state", str(state), "--registry", registry.dsn,
                     "--tenants", str(ROOT / "tenants.yaml")]) == 0
    assert "database(s) recorded" in capsys.readouterr().out
    pool = registry.database("pool-1")
    assert (pool.unit, pool.source, pool.connection) == (
        "pool-1", "deploy", {"instance": "tenancy-dev-482913:europe-west1:dev-pooled-postgres", "dbname": "app"})
    stark = registry.database("stark/postgres-1")
    assert stark.connection["instance"] == "tenancy-dev-482913:europe-west1:dev-stark-postgres-1"
    assert registry.database("stark/postgres-2").connection == {"host": "127.0.0.1", "port": 6543, "dbname": "app"}, \
        "a deploy never overwrites what an operator recorded"
    monkeypatch.setenv("TENANCY_CLOUDSQL_DIR", "/run/cloudsql")
    assert where.Resolver(registry).dsn("pool-1", "pooled") == (
        "dbname=app host=/run/cloudsql/tenancy-dev-482913:europe-west1:dev-pooled-postgres")
    stark_row = registry.tenant("stark")
    assert stark_row.stores["databases"] == {"postgres-1": "stark/postgres-1", "postgres-2": "stark/postgres-2",
                                            "postgres-3": "stark/postgres-3"}
    assert registry.tenant("globex").stores["databases"] == {"pooled": "pool-1"}


def test_place_moves_a_pooled_tenants_rows_documents_and_objects_to_the_other_shard(pg_server, tenancy_db, registry,
                                                                                     firestore_server, gcs_server,
                                                                                     tmp_path, monkeypatch):
    """`tenancy place` with every store: the wrong database is refused first, then every row, document and object
    of the tenant goes to the other shard's database, Firestore database and bucket, and none is left behind."""
    from tenancy import envconfig
    from google.cloud import storage

    from tenancy.catalog import parse_catalog
    from tenancy.lifecycle import record as rec
    from tenancy.operations import place
    from tenancy.operations import stores as where
    from tenancy.operations import tier_move
    from tenancy.operations.sync import sync
    from tenancy.stores import firestore as fs
    from tenancy.stores import objects as obj
    from tests.conftest import deployed_offline
    from tests.test_store_objects import drain
    from tests.test_tier_moves_all_stores import seed_docs

    real = envconfig.load_stack_config
    monkeypatch.setattr(envconfig, "load_stack_config",
                        lambda env: {**real(env), "tenancy:poolShards": "2", "tenancy:poolShardCapacity": "2"})
    project = f"test-{uuid.uuid4().hex[:10]}"
    monkeypatch.setattr(tier_move, "project_of", lambda deployed: project)
    drain(gcs_server)
    second = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{second}"')
    db.apply(pg_server.dsn(dbname=second))
    for name, d in (("pool-1", tenancy_db), ("pool-2", second)):
        registry.set_database(name, name, where.connection_record(pg_server.dsn(dbname=d)))
    register(pg_server, tenancy_db, "bravo", "charlie")
    for t in ("bravo", "charlie"):
        seed(pg_server, tenancy_db, t, users=2)
    client = storage.Client(project=project)
    buckets = {s: naming.pool_bucket("dev", project, s) for s in ("pool-1", "pool-2")}
    for b in buckets.values():
        client.create_bucket(b)
    one, two = obj.open_store(f"gs://{buckets['pool-1']}"), obj.open_store(f"gs://{buckets['pool-2']}")
    for t in ("bravo", "charlie"):
        one.write(f"{t}/avatars/1.png", f"png of {t}".encode())
        seed_docs(fs.location_for(project, naming.pool_firestore("dev", "pool-1"), t, pooled=True), t)
    catalog = parse_catalog("version: 1\ntenants:\n"
                            "  - {id: bravo, name: Bravo, plan: free, admin_email: b@bravo.example}\n"
                            "  - {id: charlie, name: Charlie, plan: free, admin_email: c@charlie.example}\n")
    engine = deployed_offline(catalog, tmp_path / "state")
    sync(registry, rec.read(engine, "dev"), "dev")
    ctx = Context("dev", registry, engine)
    at = {s: fs.location_for(project, naming.pool_firestore("dev", s), "charlie", pooled=True) for s in buckets}
    docs_before = docs(at["pool-1"])
    # a DSN that reaches the new shard where the old one is meant: refused, nothing changed anywhere
    with pytest.raises(Refused, match="does not hold tenant 'charlie'"):
        place.place(ctx, catalog, "charlie", pool_shard="pool-2", reach=Reach({"pool-1": pg_server.dsn(dbname=second)}))
    assert objects_of(two, "") == {} and docs(at["pool-2"]) == {} and registry.history("charlie") == []
    out = place.place(ctx, catalog, "charlie", pool_shard="pool-2", reach=Reach({}))
    assert out.status == "done" and set(out.detail["copied"]) == {"pooled->pooled", "objects", "firestore"}
    assert objects_of(two, "charlie/") == {"charlie/avatars/1.png": b"png of charlie"} and objects_of(one, "charlie/") == {}
    assert docs(at["pool-2"]) == docs_before and docs(at["pool-1"]) == {}
    with connect(pg_server, tenancy_db, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM app.users WHERE tenant_id = 'charlie'").fetchone()[0] == 0
    with connect(pg_server, second, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM app.users WHERE tenant_id = 'charlie'").fetchone()[0] == 2
    assert objects_of(one, "bravo/") == {"bravo/avatars/1.png": b"png of bravo"}, "the neighbour untouched"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{second}" WITH (FORCE)')
