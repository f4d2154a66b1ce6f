"""Each command on tenant data killed (SIGKILL) at a random instant, then resumed or aborted, while the application
writes through the client library (it finds the tenant's database through the registry and follows a move when its
database refuses a write). After every command: every committed write is in the database the registry names, once,
with its last value, and nowhere else; no neighbour's data changed; every lease is released; no replication object
is left. The stores are found through the registry only: no DSN is given to any command.

Each test runs TENANCY_KILL_RUNS seeds (default 1; `TENANCY_KILL_RUNS=25 make test` for a long run). A command runs in a
child process of a fork server (forked from a process that only imported the code, so no client connection is
shared across the fork) and is killed with SIGKILL after a random delay drawn from the seed."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
import time
import uuid

import psycopg
import pytest

from tenancy import client, naming
from tenancy.catalog import with_tenant
from tenancy.engine import OfflineEngine
from tenancy.lifecycle import record as rec
from tenancy.lifecycle.tenant_data import Reach
from tenancy.operations import stores as where
from tenancy.operations.protocol import Context
from tenancy.operations.registry import Registry
from tenancy.operations.sync import sync
from tests.movehelp import replication_objects
from tests.test_tier_moves_all_stores import TABLES, docs, fleet, objects_of, rows  # noqa: F401 -- fleet is a fixture

pytestmark = pytest.mark.postgres
RUNS = int(os.environ.get("TENANCY_KILL_RUNS", "1"))
SEEDS = [pytest.param(s, id=f"seed{s}") for s in range(RUNS)]


# ----------------------------------------------------------------------------- the command, in a child process

def _command(kind: str, state: str, registry_dsn: str, project: str, catalog_text: str, args: dict, report: str) -> None:
    """Runs in a fork-server child: what `tenancy <kind>` runs, with no DSN (the registry names every store); its
    outcome, or the one line of its error, is written to `report`."""
    import json

    from tenancy.errors import TenancyError
    try:
        _run(kind, state, registry_dsn, project, catalog_text, args)
        text = {"status": "finished"}
    except TenancyError as exc:
        text = {"status": "failed", "error": str(exc)}
    with open(report, "w") as f:
        json.dump(text, f)


def _run(kind: str, state: str, registry_dsn: str, project: str, catalog_text: str, args: dict) -> None:
    if kind == "place":
        return _run_place(state, registry_dsn, catalog_text, args)
    if kind == "data-move":
        return _run_data_move(registry_dsn, args)
    from tenancy.catalog import parse_catalog
    from tenancy.operations import offboard, suspend, tier_move

    tier_move.project_of = offboard.project_of = suspend.project_of = lambda deployed: project
    ctx = Context("dev", Registry.open(registry_dsn, "dev"), OfflineEngine(state, "dev"))
    catalog = parse_catalog(catalog_text)
    reach = Reach({}, graph_runner=None)
    if kind == "upgrade":
        tier_move.upgrade(ctx, catalog, "bravo", args["to"], reach=reach, abort=args.get("abort", False),
                          discard=frozenset(args.get("discard", ())))
    elif kind == "offboard":
        offboard.offboard(ctx, catalog, "bravo", reach=reach, export_to=args.get("export_to"),
                          discard=frozenset(args.get("discard", ())), abort=args.get("abort", False))
    elif kind in ("suspend", "resume"):
        suspend.set_state(ctx, catalog, "bravo", resume=kind == "resume", reach=reach)


def _yaml(catalog) -> str:
    import yaml

    from tenancy.catalog import to_document
    return yaml.safe_dump(to_document(catalog), sort_keys=False)


class Runner:
    """Runs a command in a fork-server child, killed after `delay` seconds unless it finished first."""

    PRELOAD = ["tenancy.operations.tier_move", "tenancy.operations.offboard", "tenancy.operations.suspend", "stacks",
               "tests.test_operations_killed"]

    def __init__(self, w, preload: list[str] | None = None):
        self.w = w
        self.mp = multiprocessing.get_context("forkserver")
        self.mp.set_forkserver_preload(preload or self.PRELOAD)

    def run(self, kind: str, catalog, args: dict, delay: float | None = None) -> tuple[str, str]:
        """("finished" | "failed" | "killed", the error's line)."""
        w = self.w
        return self.spawn(_command, (kind, str(w["tmp"] / "state"), w["registry"].dsn, w["project"], _yaml(catalog), args),
                          delay)

    def spawn(self, target, args: tuple, delay: float | None) -> tuple[str, str]:
        """`target(*args, report)` in a child, killed after `delay` seconds; what it wrote to `report`."""
        import json

        report = self.w["tmp"] / f"report-{uuid.uuid4().hex[:8]}.json"
        p = self.mp.Process(target=target, args=(*args, str(report)))
        p.start()
        p.join(delay if delay is not None else 600)
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
            p.join()
            return "killed", ""
        if not report.exists():
            return "failed", f"exit code {p.exitcode}"
        out = json.loads(report.read_text())
        return out["status"], out.get("error", "")


# ----------------------------------------------------------------------------------- the application's writer

class AppWriter(threading.Thread):
    """Inserts and updates the tenant's users through the client library, routed by the registry."""

    def __init__(self, registry: Registry, tenant: str = "bravo", offboarding: bool = False):
        super().__init__(daemon=True)
        self.router = client.Router(registry.dsn, "dev", user="tenancy_app")
        self.tenant, self.offboarding = tenant, offboarding
        self.names: dict = {}
        self.ids: list = []
        self.moved = 0
        self.hold, self.idle = threading.Event(), threading.Event()
        self.log: list = []      # (time, id, name, database) of every committed write
        self.gone = False
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.rng = random.Random(11)

    def run(self) -> None:
        while not self.stop.is_set():
            if self.hold.is_set():            # a check reads the databases: no write in between
                self.idle.set()
                time.sleep(0.01)
                continue
            self.idle.clear()
            name = f"w-{uuid.uuid4().hex[:8]}"
            try:
                with self.router.transaction(self.tenant, "app.users") as c:
                    if self.ids and self.rng.random() < 0.5:
                        uid = self.rng.choice(self.ids)
                        if c.execute("UPDATE app.users SET display_name = %s WHERE id = %s", (name, uid)).rowcount != 1:
                            if self.offboarding:    # deleted by the offboarding, after its archive was verified
                                self.gone = True
                                return
                            self.errors.append(f"user {uid} (committed earlier) is missing where the registry points")
                            return
                    else:
                        uid = c.execute("INSERT INTO app.users (tenant_id, email, display_name) VALUES (%s, %s, %s) "
                                        "RETURNING id", (self.tenant, f"{name}@x.example", name)).fetchone()[0]
                if uid not in self.names:
                    self.ids.append(uid)
                self.names[uid] = name
                self.log.append((time.time(), uid, name, self.router.dsn(self.tenant, "app.users").split("dbname=")[-1]))
            except client.Moved:
                self.moved += 1
                time.sleep(0.02)
            except client.UnknownTenant:
                self.gone = True      # offboarded: the application has nothing more to write
                return
            except psycopg.Error as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                return
            time.sleep(0.005)

    def halt(self) -> None:
        self.stop.set()
        self.join(30)


def where_registry_points(w) -> str:
    """The database the registry names for bravo's app.users."""
    reg = w["registry"]
    row = reg.tenant("bravo")
    store = next(s for s, tables in row.stores["postgres"].items() if "app.users" in tables)
    name = row.stores["databases"][store]
    return reg.database(name).connection["dbname"]


def users(server, dbname: str, tenant: str = "bravo") -> dict:
    with psycopg.connect(server.dsn(dbname=dbname), autocommit=True) as c:
        if not c.execute("SELECT to_regclass('app.users') IS NOT NULL").fetchone()[0]:
            return {}
        return dict(c.execute("SELECT id, display_name FROM app.users WHERE tenant_id = %s", (tenant,)).fetchall())


def check(w, writer: AppWriter) -> None:
    writer.hold.set()
    while writer.is_alive() and not writer.idle.wait(0.05):
        pass
    try:
        _check(w, writer)
    finally:
        writer.hold.clear()


def _check(w, writer: AppWriter) -> None:
    s = w["server"]
    reg = w["registry"]
    assert reg.unfinished() == [], "every lease is released"
    assert not writer.errors, writer.errors
    at = where_registry_points(w)
    found = users(s, at)
    lost = {k: (v, found.get(k)) for k, v in writer.names.items() if found.get(k) != v}
    assert not lost, ("every committed write, with its last value", at, lost,
                      [e for e in writer.log if e[1] in lost][-6:], w["registry"].journal(
                          w["registry"].history("bravo")[-1].id)[-12:] if w["registry"].history("bravo") else None)
    for other in {w["pooled"], *w["own"]} - {at}:
        assert users(s, other) == {}, f"bravo's users are also in {other}"
    assert rows(s, w["pooled"], "alpha") == w["before"]["alpha"], "the neighbour's rows"
    assert docs(w["fs_pool"]("alpha")) == w["docs"]["alpha"] and objects_of(w["shared"], "alpha/") == w["objects"]["alpha"]
    with_schema = [d for d in w["own"] if users(s, d) is not None and _has_schema(s, d)]
    assert not [v for v in replication_objects(s, w["pooled"], *with_schema).values() if v]


def _has_schema(server, dbname: str) -> bool:
    with psycopg.connect(server.dsn(dbname=dbname), autocommit=True) as c:
        return bool(c.execute("SELECT to_regclass('tenancy.move_changes') IS NOT NULL").fetchone()[0])


@pytest.fixture
def world(fleet, pg_server):
    """The fleet with every database recorded in the registry and every tenant synced: commands get no DSN."""
    w = fleet
    reg = w["registry"]
    reg.set_database("pool-1", "pool-1", where.connection_record(w["reach"].dsns["pooled"]))
    for i, d in enumerate(w["own"], 1):
        reg.set_database(f"bravo/postgres-{i}", "tenant:bravo", where.connection_record(pg_server.dsn(dbname=d)))
    sync(reg, rec.read(w["engine"], "dev"), "dev")
    w["run"] = Runner(w)
    return w


def finish(w, rng: random.Random, kind: str, catalog, args: dict) -> None:
    """The command killed at a random instant, then resumed or aborted -- and, when aborted, run again to the end."""
    outcome, error = w["run"].run(kind, catalog, args, delay=rng.uniform(0.0, 6.0))
    assert outcome in ("killed", "finished"), error
    if outcome == "finished":     # done before the kill (a fast machine): nothing to resume (an offboarded tenant is gone)
        return
    if outcome == "killed" and rng.random() < 0.4 and kind not in ("suspend", "resume"):
        aborted, error = w["run"].run(kind, catalog, {**args, "abort": True})
        assert aborted == "finished" or "it can no longer be aborted" in error, error
    done, error = w["run"].run(kind, catalog, args)
    assert done == "finished", error


@pytest.mark.parametrize("seed", SEEDS)
def test_tier_moves_killed_at_random_instants(world, seed):
    w, rng = world, random.Random(seed)
    writer = AppWriter(w["registry"])
    writer.start()
    try:
        finish(w, rng, "upgrade", w["catalog"], {"to": "standard"})
        check(w, writer)
        assert where_registry_points(w) == w["own"][0] and "dev.bravo" in w["engine"].stacks()
        standard = with_tenant(w["catalog"], "bravo", plan="standard")
        finish(w, rng, "upgrade", standard, {"to": "pro", "discard": ["graph"]})
        check(w, writer)
        assert where_registry_points(w) == w["pooled"] and "dev.bravo" not in OfflineEngine(
            w["tmp"] / "state", "dev").stacks()
    finally:
        writer.halt()
    check(w, writer)
    assert writer.names, "the application wrote throughout"


@pytest.mark.parametrize("seed", SEEDS)
def test_offboard_killed_at_a_random_instant(world, seed):
    import csv

    w, rng = world, random.Random(1000 + seed)
    archive = w["tmp"] / "archive"
    writer = AppWriter(w["registry"], offboarding=True)
    writer.start()
    try:
        finish(w, rng, "offboard", w["catalog"], {"export_to": str(archive)})
    finally:
        writer.halt()
    assert not writer.errors, writer.errors
    with open(archive / "pooled" / "app.users.csv") as f:
        archived = {r["id"]: r["display_name"] for r in csv.DictReader(f)}
    assert {str(k): v for k, v in writer.names.items()} == {k: archived.get(k) for k in map(str, writer.names)}, \
        "every committed write is in the archive, with its last value"
    s = w["server"]
    assert w["registry"].unfinished() == [] and w["registry"].tenant("bravo").state == "offboarded"
    assert rows(s, w["pooled"], "bravo") == {t: [] for t in TABLES}
    assert docs(w["fs_pool"]("bravo")) == {} and objects_of(w["shared"], "bravo/") == {}
    import json
    index = json.loads((archive / "archive.json").read_text())
    assert index["stores"]["pooled"]["tables"]["app.users"]["rows"] == len(w["before"]["bravo"]["app.users"]) + len(
        [k for k in writer.names])
    assert rows(s, w["pooled"], "alpha") == w["before"]["alpha"]


@pytest.mark.parametrize("seed", SEEDS)
def test_suspend_and_resume_killed_at_random_instants(world, seed):
    w, rng = world, random.Random(2000 + seed)
    writer = AppWriter(w["registry"])
    writer.start()
    try:
        finish(w, rng, "suspend", w["catalog"], {})
        assert w["registry"].tenant("bravo").state == "suspended"
        refused_before = writer.moved
        time.sleep(0.3)
        assert writer.moved > refused_before, "a suspended tenant's writes are refused"
        suspended = with_tenant(w["catalog"], "bravo", state="suspended")
        finish(w, rng, "resume", suspended, {})
        assert w["registry"].tenant("bravo").state == "active"
        count, deadline = len(writer.names), time.time() + 10
        while len(writer.names) == count and time.time() < deadline:
            time.sleep(0.05)
        assert len(writer.names) > count, "writes go through again"
    finally:
        writer.halt()
    check(w, writer)


# ------------------------------------------------------------------------- place and data move, killed

def _run_place(state: str, registry_dsn: str, catalog_text: str, args: dict) -> None:
    """`tenancy place charlie --pool-shard pool-2` in the two-shard environment, rows only, no DSN."""
    from tenancy import envconfig
    from tenancy.catalog import parse_catalog
    from tenancy.operations import place

    real = envconfig.load_stack_config
    envconfig.load_stack_config = lambda env: {**real(env), "tenancy:poolShards": "2", "tenancy:poolShardCapacity": "2"}
    ctx = Context("dev", Registry.open(registry_dsn, "dev"), OfflineEngine(state, "dev"))
    place.place(ctx, parse_catalog(catalog_text), "charlie", pool_shard="pool-2", abort=args.get("abort", False),
                reach=Reach({}, skip=frozenset({"objects", "firestore"})))


def _run_data_move(registry_dsn: str, args: dict) -> None:
    from tenancy.operations import data_move

    data_move.move(Context("dev", Registry.open(registry_dsn, "dev")), "charlie", args["source"], args["target"],
                   delete_source=True, abort=args.get("abort", False))


@pytest.fixture
def shards(pg_server, registry, tmp_path, monkeypatch):
    """Two pool shards (pool-1 with bravo's and charlie's rows, an empty pool-2) recorded in the registry, the
    platform deployed offline with charlie in pool-1."""
    from tenancy import envconfig
    from tenancy import db
    from tenancy.catalog import parse_catalog
    from tenancy.lifecycle import deploy
    from tests.sqlhelp import register, seed

    real = envconfig.load_stack_config
    monkeypatch.setattr(envconfig, "load_stack_config",
                        lambda env: {**real(env), "tenancy:poolShards": "2", "tenancy:poolShardCapacity": "2"})
    names = {"pool-1": f"t_{uuid.uuid4().hex[:12]}", "pool-2": f"t_{uuid.uuid4().hex[:12]}"}
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        for d in names.values():
            c.execute(f'CREATE DATABASE "{d}"')
    for name, d in names.items():
        db.apply(pg_server.dsn(dbname=d))
        registry.set_database(name, name, where.connection_record(pg_server.dsn(dbname=d)))
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        c.execute("ALTER ROLE tenancy_owner LOGIN; ALTER ROLE tenancy_app LOGIN")
    register(pg_server, names["pool-1"], "bravo", "charlie")
    seed(pg_server, names["pool-1"], "bravo", users=2)
    seed(pg_server, names["pool-1"], "charlie", users=3)
    catalog = parse_catalog("""version: 1
tenants:
  - {id: bravo, name: Bravo, plan: free, admin_email: b@bravo.example}
  - {id: charlie, name: Charlie, plan: free, admin_email: c@charlie.example}
""")
    engine = OfflineEngine(tmp_path / "state", "dev")
    deploy.deploy(engine, catalog, "dev")
    sync(registry, rec.read(engine, "dev"), "dev")
    w = {"server": pg_server, "registry": registry, "engine": engine, "catalog": catalog, "tmp": tmp_path, "db": names,
         "project": "", "bravo": rows(pg_server, names["pool-1"], "bravo")}
    w["run"] = Runner(w)
    yield w
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        for d in names.values():
            c.execute(f'DROP DATABASE IF EXISTS "{d}" WITH (FORCE)')


@pytest.mark.parametrize("seed", SEEDS)
def test_place_killed_at_a_random_instant(shards, seed):
    w, rng = shards, random.Random(3000 + seed)
    writer = AppWriter(w["registry"], tenant="charlie")
    writer.start()
    try:
        finish(w, rng, "place", w["catalog"], {})
    finally:
        writer.halt()
    assert not writer.errors, writer.errors
    s, reg = w["server"], w["registry"]
    assert reg.unfinished() == [] and reg.tenant("charlie").stores["databases"] == {"pooled": "pool-2"}
    at_new = users(s, w["db"]["pool-2"], "charlie")
    assert {k: at_new.get(k) for k in writer.names} == writer.names, "every committed write, at the new shard"
    assert users(s, w["db"]["pool-1"], "charlie") == {}, "nothing of charlie left in the old shard"
    assert rows(s, w["db"]["pool-1"], "bravo") == w["bravo"], "the neighbour untouched"


@pytest.mark.parametrize("seed", SEEDS)
def test_data_move_killed_at_a_random_instant(shards, seed):
    import threading as th

    w, rng = shards, random.Random(4000 + seed)
    s = w["server"]
    source, target = (s.dsn(user="tenancy_owner", dbname=w["db"][n]) for n in ("pool-1", "pool-2"))
    committed, stop = [], th.Event()

    def write():       # the application, writing straight to the source until it is refused
        with psycopg.connect(s.dsn(user="tenancy_app", dbname=w["db"]["pool-1"])) as c:
            while not stop.is_set():
                email = f"w{uuid.uuid4().hex[:8]}@x"
                try:
                    c.execute("SELECT tenancy.set_tenant('charlie')")
                    c.execute("INSERT INTO app.users (tenant_id, email, display_name) VALUES ('charlie', %s, 'W')",
                              (email,))
                    c.commit()
                    committed.append(email)
                except psycopg.Error:
                    c.rollback()
                time.sleep(0.005)

    t = th.Thread(target=write, daemon=True)
    t.start()
    try:
        finish(w, rng, "data-move", w["catalog"], {"source": source, "target": target})
    finally:
        stop.set()
        t.join(30)
    with psycopg.connect(s.dsn(dbname=w["db"]["pool-2"]), autocommit=True) as c:
        emails = [r[0] for r in c.execute("SELECT email FROM app.users WHERE tenant_id = 'charlie'")]
    assert set(committed) <= set(emails) and len(emails) == len(set(emails)), "every committed write, once"
    assert users(s, w["db"]["pool-1"], "charlie") == {}, "nothing left at the source"
    assert rows(s, w["db"]["pool-1"], "bravo") == w["bravo"]
    assert w["registry"].unfinished() == []
