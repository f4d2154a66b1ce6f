"""The client library as the application: it finds the tenant's database, bucket and Firestore database through the
registry, and a tier move switches it over without a write landing anywhere the registry did not point when it
committed -- PostgreSQL rows, documents and objects, real PostgreSQL and the Firestore and GCS API servers."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime

import psycopg
from psycopg.conninfo import make_conninfo
import pytest

from tenancy import client
from tenancy.lifecycle import record as rec
from tenancy import topology
from tenancy.operations import tier_move as moves
from tenancy.operations.protocol import Context
from tenancy.stores import firestore as fs
from tenancy.stores import objects as obj
from tenancy.stores.layout import registry_entry, stores_for
from tests.test_operations_killed import world  # noqa: F401 -- a fixture
from tests.test_tier_moves_all_stores import fleet  # noqa: F401 -- a fixture

pytestmark = pytest.mark.postgres


@pytest.fixture
def app_world(world):
    """The world, with bravo's registry row naming its stores where this test's project keeps them."""
    w = world
    deployed = rec.read(w["engine"], "dev")
    t = deployed.catalog.tenant("bravo")
    stores = registry_entry(stores_for(t, "dev", w["project"], pool_shard=topology.pool_shard_of("dev", deployed.catalog, "bravo")))
    with w["registry"].connect() as c:
        c.execute("UPDATE registry.tenants SET stores = %s WHERE id = 'bravo'", (psycopg.types.json.Jsonb(stores),))
        c.commit()
        # the application reads the registry as its reader role, as in production: its grants must suffice
        c.execute("ALTER ROLE tenancy_registry_reader LOGIN")
        c.commit()
    return w


def reader_dsn(registry) -> str:
    return make_conninfo(registry.dsn, user="tenancy_registry_reader")


class App(threading.Thread):
    """Writes a row, a document and an object in turn through the client library, retrying when refused; each
    committed write is kept with where it went and when (wall clock before it began and after it committed)."""

    def __init__(self, registry):
        super().__init__(daemon=True)
        self.router = client.Router(reader_dsn(registry), "dev", user="tenancy_app")
        self.writes: list[tuple[str, str, str, float, float]] = []   # kind, key, where, began, committed
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            kind, key, began = ("row", "document", "object")[i % 3], uuid.uuid4().hex[:10], time.time()
            try:
                if kind == "row":
                    with self.router.transaction("bravo", "app.users") as c:
                        c.execute("INSERT INTO app.users (tenant_id, email, display_name) VALUES ('bravo', %s, %s)",
                                  (f"{key}@x.example", key))
                        where = c.info.dbname
                elif kind == "document":
                    with self.router.documents("bravo", f"users/{key}") as loc:
                        fs.client_for(loc).document(loc.path(f"users/{key}")).set({"name": key})
                        where = f"{loc.database}/{loc.root}"
                else:
                    with self.router.objects("bravo") as (store, prefix):
                        store.write(f"{prefix}app/{key}", key.encode())
                        where = f"{store.url}/{prefix}"
                self.writes.append((kind, key, where, began, time.time()))
                i += 1
            except client.Moved:
                time.sleep(0.01)
            except Exception as exc:   # noqa: BLE001 -- the test reports it
                self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                return
            time.sleep(0.01)


def test_each_write_lands_where_the_registry_pointed_when_it_committed(app_world):
    w = app_world
    reg = w["registry"]
    before = reg.tenant("bravo").stores
    started: dict[str, float] = {}
    app = App(reg)
    app.start()
    try:
        time.sleep(0.5)
        out = moves.upgrade(Context("dev", reg, w["engine"], before_phase=lambda p: started.setdefault(p, time.time())),
                            w["catalog"], "bravo", "standard", reach=moves.data.Reach({}))
        time.sleep(0.5)
    finally:
        app.stop.set()
        app.join(30)
    assert out.status == "done" and not app.errors, app.errors
    after = reg.tenant("bravo").stores
    switched = datetime.fromisoformat(next(d for p, e, d in reg.journal(out.operation)
                                           if p == "switch" and e == "progress" and "switched_at" in d)["switched_at"])
    flip_began, flip_done = started["switch"], switched.timestamp()
    fs_before = f"{before['firestore']['database']}/{before['firestore']['root']}"
    fs_after = f"{after['firestore']['database']}/{after['firestore']['root']}"
    place = {"row": (w["pooled"], w["own"][0]), "document": (fs_before, fs_after),
             "object": (before["objects"], after["objects"])}
    assert place["document"][0] != place["document"][1] and place["object"][0] != place["object"][1]
    for kind, key, where, began, committed in app.writes:
        old, new = place[kind]
        assert where in (old, new), (kind, key, where)
        if where == old:   # the registry still pointed here: the write began before the flip was recorded
            assert began < flip_done, (kind, key, "written to the source after the registry switched")
        else:              # it pointed at the target: the write committed after the flip began
            assert committed > flip_began, (kind, key, "written to the target before the registry switched")
    for kind in place:
        landed = {where for k, _, where, _, _ in app.writes if k == kind}
        assert landed == set(place[kind]), f"{kind}: the application wrote before and after the move ({landed})"
    # Nothing committed was lost: every write is where the registry points now.
    s = w["server"]
    with psycopg.connect(s.dsn(dbname=w["own"][0]), autocommit=True) as c:
        names = {r[0] for r in c.execute("SELECT display_name FROM app.users WHERE tenant_id = 'bravo'")}
    assert {key for kind, key, *_ in app.writes if kind == "row"} <= names
    loc = fs.FirestoreLocation(after["firestore"]["project"], after["firestore"]["database"], after["firestore"]["root"])
    for kind, key, *_ in app.writes:
        if kind == "document":
            assert fs.client_for(loc).document(loc.path(f"users/{key}")).get().to_dict() == {"name": key}
    bucket, _, prefix = after["objects"][len("gs://"):].partition("/")
    store = obj.open_store(f"gs://{bucket}")
    for kind, key, *_ in app.writes:
        if kind == "object":
            assert store.read(f"{prefix}app/{key}") == key.encode()
    assert fs.changes(fs.FirestoreLocation(before["firestore"]["project"], before["firestore"]["database"],
                                           before["firestore"]["root"])) == [], "the change list went with the move"


def test_a_document_write_must_name_its_documents(app_world):
    router = client.Router(reader_dsn(app_world["registry"]), "dev")
    with pytest.raises(ValueError, match="name the documents the block writes"):
        with router.documents("bravo"):
            pass
    with pytest.raises(client.UnknownTenant, match="tenant 'nobody' is not in the registry of 'dev'"):
        with router.objects("nobody"):
            pass


def test_documents_and_objects_are_refused_while_the_registry_says_frozen(app_world):
    reg = app_world["registry"]
    router = client.Router(reader_dsn(reg), "dev", state_ttl=0.2)
    with router.objects("bravo") as (store, prefix):
        assert prefix == "bravo/"
    with reg.connect() as c:
        c.execute("UPDATE registry.tenants SET state = 'frozen' WHERE id = 'bravo'")
        c.commit()
    with router.objects("bravo"):     # within the bound the cached state still says active
        pass
    time.sleep(0.25)
    with pytest.raises(client.Moved, match="tenant 'bravo' is frozen in the registry"):
        with router.documents("bravo", "users/u1"):
            pass
    with reg.connect() as c:
        c.execute("UPDATE registry.tenants SET state = 'active', stores = stores || '{\"moving\": \"op-x\"}' "
                  "WHERE id = 'bravo'")
        c.commit()
    time.sleep(0.25)
    with router.documents("bravo", "users/u1", "itineraries/i0/notes/n1") as loc:
        pass
    assert fs.changes(loc) == ["itineraries/i0/notes/n1", "users/u1"], "a move in progress: the writes are recorded"
    with reg.connect() as c:
        c.execute("UPDATE registry.tenants SET stores = stores - 'moving' WHERE id = 'bravo'")
        c.commit()
    time.sleep(0.25)
    with router.documents("bravo", "users/u2") as loc:
        pass
    assert fs.changes(loc) == ["itineraries/i0/notes/n1", "users/u1"], "no move: nothing recorded"
    fs.clear_changes(loc)
    # A write that outlives the bound while a freeze begins is reported (it may not have moved with the tenant).
    with pytest.raises(client.Moved, match="became frozen while this write ran longer than 0.2s"):
        with router.objects("bravo"):
            with reg.connect() as c:
                c.execute("UPDATE registry.tenants SET state = 'frozen' WHERE id = 'bravo'")
                c.commit()
            time.sleep(0.25)
