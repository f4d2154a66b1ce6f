"""Every store moves with the tenant: pooled -> standard -> pooled on real PostgreSQL (three tenant databases),
the Firestore API server and the GCS API server, with neighbours present, a writer running and an interruption
at every phase boundary; downgrades refused for data the pool cannot hold; offboard archives every store."""

from __future__ import annotations

import json
import threading
import uuid

import psycopg
import pytest

from tenancy import naming
from tenancy.catalog import parse_catalog, with_tenant
from tenancy.engine import OfflineEngine
from tenancy.lifecycle import OperationError, Refused, deploy
from tenancy.operations import offboard as offboarding
from tenancy.operations import tier_move as moves
from tenancy.operations.protocol import Context
from tenancy.lifecycle.tenant_data import Reach
from tenancy.stores import firestore as fs
from tenancy.stores import objects as obj
from tests.conftest import deployed_offline
from tests.movehelp import Boom, stop_before
from tests.sqlhelp import connect, seed

pytestmark = pytest.mark.postgres

CATALOG = """
version: 1
tenants:
  - {id: alpha, name: Alpha, plan: free, admin_email: a@alpha.example}
  - {id: bravo, name: Bravo, plan: pro, admin_email: b@bravo.example}
plans:
  pro:
    model: pooled
    limits: {api_rate_limit: 500, storage_gb: 5, cpu: 0.5, memory_gb: 1, pods: 1, pvcs: 0, services: 1, backup_retention_days: 7}
    features: [core, comments, likes, audit-log, api-access]
  lite:
    model: pooled
    limits: {api_rate_limit: 100, storage_gb: 1, cpu: 0.25, memory_gb: 0.5, pods: 1, pvcs: 0, services: 1, backup_retention_days: 7}
    features: [core]
"""
TABLES = ("app.users", "app.itineraries", "app.comments", "app.likes", "app.audit_events", "app.api_requests")
TREE = {"users": {}, "itineraries": {"notes": {}}, "settings": {}}
ORPHAN = "gone/notes/n9"                # itineraries/gone/notes/n9, under an itinerary that does not exist


def rows(server, dbname, tenant):
    with connect(server, dbname, autocommit=True) as c:
        return {t: sorted(tuple(str(v) for v in r) for r in c.execute(f"SELECT * FROM {t} WHERE tenant_id = %s", (tenant,)))
                for t in TABLES}


def emails(server, dbname, tenant):
    with connect(server, dbname, autocommit=True) as c:
        return [r[0] for r in c.execute("SELECT email FROM app.users WHERE tenant_id = %s", (tenant,))]


def docs(loc):
    tenant = loc.root.split("/")[1] if loc.root else "bravo"
    return {rel: checksum for rel, (_, checksum) in fs.document_checksums(loc, fs.prepare(loc, tenant, TREE)).items()}


def seed_docs(loc, tag):
    c = fs.client_for(loc)
    batch = c.batch()
    for i in range(3):
        batch.set(c.document(loc.path(f"users/u{i}")), {"name": f"{tag} user {i}", "rank": i})
    batch.set(c.document(loc.path("itineraries/i0")), {"title": f"{tag} trip"})
    batch.set(c.document(loc.path("itineraries/i0/notes/n0")), {"text": f"{tag} pack light"})
    batch.set(c.document(loc.path("itineraries/i0/notes/n1")), {"text": f"{tag} passport"})
    batch.set(c.document(loc.path("settings/main")), {"theme": tag})
    # a note whose itinerary does not exist (deleted, or never written): it moves and goes with the tenant too
    batch.set(c.document(loc.path(f"itineraries/{ORPHAN}")), {"text": f"{tag} note of a deleted trip"})
    batch.commit()


def objects_of(store, prefix):
    return {name: store.read(name) for name in store.list(prefix)}


@pytest.fixture
def fleet(pg_server, tenancy_db, firestore_server, gcs_server, tmp_path, monkeypatch, registry):
    """A pooled database, three empty databases for the tenant's postgres-1..3, a pooled Firestore database and
    shared bucket holding alpha's and bravo's data, an empty bucket for bravo, the platform deployed offline."""
    from tests.test_store_objects import drain

    drain(gcs_server)
    project = f"test-{uuid.uuid4().hex[:10]}"           # one project per test: Firestore and buckets start empty
    monkeypatch.setattr(moves, "project_of", lambda deployed: project)
    monkeypatch.setattr(offboarding, "project_of", lambda deployed: project)
    own_dbs = [f"t_{uuid.uuid4().hex[:12]}" for _ in range(3)]
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        for name in own_dbs:
            c.execute(f'CREATE DATABASE "{name}"')
    with connect(pg_server, tenancy_db, autocommit=True) as c:
        for t in ("alpha", "bravo"):
            c.execute("INSERT INTO tenancy.tenants (id, plan, model) VALUES (%s, %s, 'pooled')",
                      (t, "free" if t == "alpha" else "pro"))
    seed(pg_server, tenancy_db, "alpha", users=2)
    seed(pg_server, tenancy_db, "bravo", users=3)
    with connect(pg_server, tenancy_db, user="tenancy_app") as c:   # bravo's rows for postgres-2 and postgres-3
        c.execute("SELECT tenancy.set_tenant('bravo')")
        for i in range(2):
            c.execute("INSERT INTO app.audit_events (tenant_id, actor, action, detail) VALUES ('bravo', 'u0', %s, %s)",
                      (f"login {i}", json.dumps({"ip": f"10.0.0.{i}", "ok": True})))
        for i in range(4):
            c.execute("INSERT INTO app.api_requests (tenant_id, client, path, status) VALUES ('bravo', 'ci', %s, 200)",
                      (f"/v1/trips/{i}",))
        c.commit()
    pooled_fs = naming.firestore_database("dev", "pooled")
    for t in ("alpha", "bravo"):
        seed_docs(fs.location_for(project, pooled_fs, t, pooled=True), t)
    from google.cloud import storage
    client = storage.Client(project=project)
    shared, own = naming.shared_bucket("dev", project), naming.bucket("dev", "bravo")
    for b in (shared, own):
        bucket = client.bucket(b)
        if not bucket.exists():
            client.create_bucket(b)
        for blob in client.list_blobs(b):
            blob.delete()
    shared_store = obj.open_store(f"gs://{shared}")
    for t in ("alpha", "bravo"):
        shared_store.write(f"{t}/avatars/1.png", f"\x89PNG {t}".encode())
        shared_store.write(f"{t}/docs/trip.pdf", f"%PDF {t} trip".encode())
    catalog = parse_catalog(CATALOG)
    engine = deployed_offline(catalog, tmp_path / "state")
    w = {"server": pg_server, "pooled": tenancy_db, "registry": registry, "own": own_dbs, "catalog": catalog, "engine": engine,
         "project": project, "tmp": tmp_path, "shared": shared_store, "bucket": obj.open_store(f"gs://{own}"),
         "reach": Reach({"pooled": pg_server.dsn(user="tenancy_owner", dbname=tenancy_db),
                         **{f"postgres-{i + 1}": pg_server.dsn(dbname=d) for i, d in enumerate(own_dbs)}}),
         "fs_pool": lambda t: fs.location_for(project, pooled_fs, t, pooled=True),
         "fs_own": fs.location_for(project, naming.firestore_database("dev", "bravo"), "bravo", pooled=False)}
    w["before"] = {t: rows(pg_server, tenancy_db, t) for t in ("alpha", "bravo")}
    w["docs"] = {t: docs(w["fs_pool"](t)) for t in ("alpha", "bravo")}
    assert all(f"itineraries/{ORPHAN}" in w["docs"][t] for t in ("alpha", "bravo"))
    w["objects"] = {t: objects_of(shared_store, f"{t}/") for t in ("alpha", "bravo")}
    yield w
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        for name in own_dbs:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def offboard(w, tenant, catalog=None, before_phase=None, **kw):
    ctx = Context("dev", w["registry"], w["engine"], before_phase=before_phase)
    return offboarding.offboard(ctx, catalog or w["catalog"], tenant, reach=w["reach"], **kw)


def upgrade(w, to, catalog=None, before_phase=None, **kw):
    ctx = Context("dev", w["registry"], w["engine"], before_phase=before_phase)
    return moves.upgrade(ctx, catalog or w["catalog"], "bravo", to, reach=w["reach"], **kw)


def until_done(w, to, phases, catalog=None, **kw):
    """Interrupted just before each of `phases` in turn -- every run resumes the one before -- then run to the end."""
    for phase in phases:
        with pytest.raises(Boom):
            upgrade(w, to, catalog, before_phase=stop_before(phase), **kw)
    out = upgrade(w, to, catalog, **kw)
    assert out.status == "done"
    if phases:
        assert out.phases_run == [p for p in moves.PHASES[moves.PHASES.index(phases[-1]):] if p != "export"]
    return out


def assert_neighbour_untouched(w):
    s = w["server"]
    assert rows(s, w["pooled"], "alpha") == w["before"]["alpha"]
    assert all(rows(s, d, "alpha") == {t: [] for t in TABLES} for d in w["own"])
    assert docs(w["fs_pool"]("alpha")) == w["docs"]["alpha"]
    assert objects_of(w["shared"], "alpha/") == w["objects"]["alpha"]


class DumpJob:
    """Stands for the cluster: runs the neo4j-admin dump Job by writing its dump object, records the manifest."""

    def __init__(self, store):
        self.store, self.jobs = store, []

    def run(self, namespace, manifest, timeout):
        from tenancy.stores.graph import JobOutcome
        from tenancy.stores.layout import graph_dump_object
        self.jobs.append((namespace, manifest))
        self.store.write(graph_dump_object("bravo"), b"NEO4J-DUMP bravo graph")
        return JobOutcome(True, "completed")


class Writer(threading.Thread):
    """The application writing bravo's users into the pooled database until stopped; records what committed."""

    def __init__(self, w, tenant="bravo"):
        super().__init__(daemon=True)
        self.w, self.tenant, self.committed, self.refused, self.stop = w, tenant, [], 0, threading.Event()

    def run(self):
        i = 0
        while not self.stop.is_set():
            i += 1
            email = f"live{i}@{self.tenant}.example"
            try:
                with connect(self.w["server"], self.w["pooled"], user="tenancy_app") as c:
                    c.execute("SELECT tenancy.set_tenant(%s)", (self.tenant,))
                    c.execute("INSERT INTO app.users (tenant_id, email, display_name) VALUES (%s, %s, 'Live')",
                              (self.tenant, email))
                    c.commit()
                self.committed.append(email)
            except psycopg.Error:
                self.refused += 1
            self.stop.wait(0.01)


# Interrupted before every phase of one move in turn (each run resumes the previous one), odd ones one way and even
# ones the other: every boundary is crossed by a resumed run in one direction.
@pytest.mark.parametrize("first", [moves.PHASES[0::2], moves.PHASES[1::2]], ids=["odd phases up", "even phases up"])
def test_pooled_standard_pooled_carries_every_store_through_an_interruption_at_each_phase(fleet, first):
    w, s = fleet, fleet["server"]
    # without --export-to the export has no work and no interruption point (an archived move's is tested below)
    phase = [p for p in first if p != "export"]
    back = [p for p in moves.PHASES if p not in first and p != "export"]
    writer = Writer(w)
    writer.start()
    try:
        up = until_done(w, "standard", phase)
    finally:
        writer.stop.set()
        writer.join()
    assert writer.committed and writer.refused, "the writer committed before the freeze and was refused after it"
    p1, p2, p3 = w["own"]
    # rows: each table in the database the layout names, every committed write exactly once
    moved = rows(s, p1, "bravo")
    assert sorted(e for (_, _, e, *_) in moved["app.users"]) == sorted(
        [f"user{i}@bravo.example" for i in range(3)] + writer.committed)
    for t in ("app.itineraries", "app.comments", "app.likes"):
        assert moved[t] == w["before"]["bravo"][t]
    assert rows(s, p2, "bravo")["app.audit_events"] == w["before"]["bravo"]["app.audit_events"]
    assert rows(s, p3, "bravo")["app.api_requests"] == w["before"]["bravo"]["app.api_requests"]
    assert moved["app.audit_events"] == [] and rows(s, p2, "bravo")["app.users"] == [] and len(rows(s, p3, "bravo")["app.api_requests"]) == 4
    assert rows(s, w["pooled"], "bravo") == {t: [] for t in TABLES}
    # documents at the root of bravo's own database, objects at the root of its bucket; the pool emptied
    assert docs(w["fs_own"]) == w["docs"]["bravo"] and docs(w["fs_pool"]("bravo")) == {}
    assert list(fs.client_for(w["fs_pool"]("bravo")).document("tenants/bravo").collections()) == [], "none left behind"
    assert objects_of(w["bucket"], "") == {k[len("bravo/"):]: v for k, v in w["objects"]["bravo"].items()}
    assert objects_of(w["shared"], "bravo/") == {}
    assert set(up.detail["copied"]) == {"pooled->postgres-1", "pooled->postgres-2", "pooled->postgres-3", "objects", "firestore"}
    assert_neighbour_untouched(w)
    entry = json.loads(w["engine"].outputs("dev")["tenantDirectory"])["bravo"]
    assert entry["stores"]["postgres"] == {"postgres-1": ["app.users", "app.itineraries", "app.comments", "app.likes"],
                                           "postgres-2": ["app.audit_events"], "postgres-3": ["app.api_requests"]}
    # ... and back to the pool: the graph (which the pool cannot hold) is let go explicitly
    standard = with_tenant(w["catalog"], "bravo", plan="standard")
    after_up = {t: rows(s, d, "bravo")[t] for d, ts in ((p1, TABLES[:4]), (p2, TABLES[4:5]), (p3, TABLES[5:])) for t in ts}
    until_done(w, "pro", back, standard, discard=frozenset({"graph"}))
    assert rows(s, w["pooled"], "bravo") == after_up
    assert all(rows(s, d, "bravo") == {t: [] for t in TABLES} for d in w["own"])
    assert docs(w["fs_pool"]("bravo")) == w["docs"]["bravo"] and docs(w["fs_own"]) == {}
    assert list(fs.client_for(w["fs_own"]).collections()) == [], "the own database is left empty"
    assert objects_of(w["shared"], "bravo/") == w["objects"]["bravo"] and objects_of(w["bucket"], "") == {}
    assert_neighbour_untouched(w)
    assert "dev.bravo" not in w["engine"].stacks()
    assert json.loads(w["engine"].outputs("dev")["tenantDirectory"])["bravo"]["model"] == "pooled"


def test_nothing_is_deleted_when_a_store_changed_after_verification(fleet):
    w = fleet
    with pytest.raises(Boom):
        upgrade(w, "standard", before_phase=stop_before("cleanup"))
    extra = w["fs_pool"]("bravo")
    fs.client_for(extra).document(extra.path("users/late")).set({"name": "written after verification"})
    with pytest.raises(OperationError) as failed:
        upgrade(w, "standard")
    assert "Find out what wrote there before removing it" in str(failed.value)
    left = docs(w["fs_pool"]("bravo"))
    assert "users/late" in left and len(left) == len(w["docs"]["bravo"]) + 1, "nothing of the changed store deleted"
    assert docs(w["fs_own"]) == w["docs"]["bravo"], "the verified copy is intact"


def test_downgrade_names_the_tables_and_counts_the_pool_cannot_hold_then_archives_every_store(fleet):
    w, s = fleet, fleet["server"]
    upgrade(w, "standard")
    standard = with_tenant(w["catalog"], "bravo", plan="standard")
    with pytest.raises(Refused) as refused:
        upgrade(w, "lite", standard)
    assert str(refused.value) == (
        "downgrade of 'bravo' refused before any change: plan 'lite' cannot hold all of 'bravo''s data: postgres-1: app.comments 3 rows, app.likes 3 rows; "
        "postgres-2: app.audit_events 2 rows; postgres-3: app.api_requests 4 rows; "
        "graph: the tenant's Neo4j graph (export it with --export-to DIR, or --discard graph). Export it with "
        "--export-to DIR and pass --discard postgres-1 --discard postgres-2 --discard postgres-3 --discard graph; "
        "nothing was changed")
    discard = frozenset({"postgres-1", "postgres-2", "postgres-3", "graph"})
    with pytest.raises(Refused, match="postgres-3: app.api_requests 4 rows. Export it"):
        upgrade(w, "lite", standard, discard=discard)   # discarding rows needs the export
    assert rows(s, w["own"][0], "bravo")["app.comments"] == w["before"]["bravo"]["app.comments"], "nothing changed"
    archive = w["tmp"] / "archive"
    job = DumpJob(w["bucket"])
    w["reach"].graph_runner = job
    out = upgrade(w, "lite", standard, discard=discard, export_to=str(archive))
    [(namespace, manifest)] = job.jobs
    assert namespace == "tenant-bravo" and manifest["kind"] == "Job"
    assert (archive / "graph" / "objects" / "neo4j.dump").read_bytes() == b"NEO4J-DUMP bravo graph"
    assert out.status == "done" and out.detail["archive"] == str(archive)
    index = json.loads((archive / "archive.json").read_text())
    assert {k: v["count"] for k, v in index["stores"].items()} == {
        "postgres-1": 12, "postgres-2": 2, "postgres-3": 4, "objects": 2, "firestore": 8, "graph": 1}
    assert index["discarded"] == ["graph", "postgres-1", "postgres-2", "postgres-3"]
    assert index["stores"]["postgres-2"]["tables"] == {"app.audit_events": {
        "rows": 2, "rowChecksum": index["stores"]["postgres-2"]["parts"]["app.audit_events"]["checksum"]}}
    assert (archive / "postgres-2" / "manifest.json").exists() and (archive / "firestore" / "manifest.json").exists()
    assert oct(archive.stat().st_mode & 0o777) == "0o700"
    pooled = rows(s, w["pooled"], "bravo")
    assert pooled["app.users"] == w["before"]["bravo"]["app.users"] and pooled["app.comments"] == []
    assert docs(w["fs_pool"]("bravo")) == w["docs"]["bravo"]
    assert "dev.bravo" not in w["engine"].stacks()
    assert_neighbour_untouched(w)


def test_offboard_archives_every_store_before_deleting_anything(fleet):
    w, s = fleet, fleet["server"]
    archive = w["tmp"] / "alpha-archive"
    phases = []
    result = offboard(w, "alpha", export_to=str(archive), before_phase=phases.append).detail
    # a pooled tenant has no stack of its own: the destroy has no work and is not run
    assert phases == [p for p in offboarding.PHASES if p != "destroy"]
    assert result["export"]["stores"] == {"pooled": 8, "objects": 2, "firestore": 8}
    index = json.loads((archive / "archive.json").read_text())
    assert index["tenant"] == "alpha" and set(index["stores"]) == {"pooled", "objects", "firestore"}
    assert {k: v["rows"] for k, v in index["stores"]["pooled"]["tables"].items()} == {
        **{t: 2 for t in TABLES[:4]}, "app.audit_events": 0, "app.api_requests": 0}
    exported = json.loads((archive / "objects" / "objects.json").read_text())
    assert sorted(f["name"] for f in exported["files"]) == ["avatars/1.png", "docs/trip.pdf"]
    assert {k: v["count"] for k, v in index["stores"]["firestore"]["parts"].items()} == {
        "users": 3, "itineraries": 1, "itineraries/*/notes": 3, "settings": 1}
    assert rows(s, w["pooled"], "alpha") == {t: [] for t in TABLES}
    assert docs(w["fs_pool"]("alpha")) == {} and objects_of(w["shared"], "alpha/") == {}
    notes = [json.loads(x)["path"] for x in (archive / "firestore" / "itineraries.notes.jsonl").read_text().splitlines()]
    assert f"itineraries/{ORPHAN}" in notes
    assert list(fs.client_for(w["fs_pool"]("alpha")).document("tenants/alpha").collections()) == [], "no document is left"
    # the neighbour is untouched in every store
    assert rows(s, w["pooled"], "bravo") == w["before"]["bravo"]
    assert docs(w["fs_pool"]("bravo")) == w["docs"]["bravo"] and objects_of(w["shared"], "bravo/") == w["objects"]["bravo"]


def test_offboard_raced_by_a_writer_archives_every_committed_write(fleet):
    w, s = fleet, fleet["server"]
    writer = Writer(w, "alpha")
    writer.start()
    archive = w["tmp"] / "alpha-archive"
    try:
        with pytest.raises(Boom):   # interrupted once, between the export and its verification
            offboard(w, "alpha", export_to=str(archive), before_phase=stop_before("verify"))
        offboard(w, "alpha", export_to=None)
    finally:
        writer.stop.set()
        writer.join()
    assert writer.committed and writer.refused, "the writer committed before the freeze and was refused after it"
    users = (archive / "pooled" / "app.users.csv").read_text()
    assert sorted(line.split(",")[2] for line in users.splitlines()[1:]) == sorted(
        ["user0@alpha.example", "user1@alpha.example"] + writer.committed), "every committed write is in the archive"
    assert emails(s, w["pooled"], "alpha") == [], "and nowhere else"
    assert rows(s, w["pooled"], "bravo") == w["before"]["bravo"]


def test_documents_and_objects_copied_while_live_then_only_changes_inside_the_freeze(fleet):
    w = fleet
    with pytest.raises(Boom):   # the live first pass has run; the tenant keeps writing documents and objects
        upgrade(w, "standard", before_phase=stop_before("freeze"))
    assert docs(w["fs_own"]) == w["docs"]["bravo"], "documents copied before the freeze"
    assert len(objects_of(w["bucket"], "")) == 2, "objects copied before the freeze"
    pool = w["fs_pool"]("bravo")
    c = fs.client_for(pool)
    c.document(pool.path("users/u0")).set({"name": "renamed while live", "rank": 0})
    c.document(pool.path("users/u2")).delete()
    c.document(pool.path("itineraries/i0/notes/n2")).set({"text": "written while live"})
    w["shared"].write("bravo/avatars/2.png", b"new while live")
    w["shared"].delete("bravo/docs/trip.pdf")
    at_freeze_docs, at_freeze_objects = docs(pool), objects_of(w["shared"], "bravo/")
    copied = []
    from tenancy.stores.firestore import writes as fs_writes
    real = fs_writes.write_docs

    def counting(dst, todo, target, batch_size):
        items = list(todo)
        copied.extend(d.rel for d in items)
        return real(dst, iter(items), target, batch_size)

    fs_writes.write_docs, saved = counting, fs_writes.write_docs
    try:
        out = upgrade(w, "standard")
    finally:
        fs_writes.write_docs = saved
    assert out.status == "done"
    assert docs(w["fs_own"]) == at_freeze_docs and "users/u2" not in docs(w["fs_own"])
    assert objects_of(w["bucket"], "") == {k[len("bravo/"):]: v for k, v in at_freeze_objects.items()}
    assert docs(pool) == {} and objects_of(w["shared"], "bravo/") == {}
    assert_neighbour_untouched(w)
    assert "users/u0" in copied and "itineraries/i0/notes/n2" in copied


def test_offboard_of_a_tenant_with_a_graph_needs_the_dump_job_or_a_discard_before_anything_changes(fleet):
    w = fleet
    upgrade(w, "standard")
    standard = with_tenant(w["catalog"], "bravo", plan="standard")
    with pytest.raises(Refused, match="'bravo' has a Neo4j graph: exporting it runs a neo4j-admin dump Job in namespace "
                                      "tenant-bravo; give --kubeconfig, or --discard graph to let it go; nothing was changed"):
        offboard(w, "bravo", standard, export_to=str(w["tmp"] / "bravo-archive"))
    assert not (w["tmp"] / "bravo-archive").exists()
    assert rows(w["server"], w["own"][0], "bravo")["app.users"] == w["before"]["bravo"]["app.users"]
    job = DumpJob(w["bucket"])
    w["reach"].graph_runner = job
    result = offboard(w, "bravo", standard, export_to=str(w["tmp"] / "bravo-archive")).detail
    assert result["export"]["stores"] == {"postgres-1": 12, "postgres-2": 2, "postgres-3": 4, "objects": 2,
                                          "firestore": 8, "graph": 1}
    assert result["destroyed"] == "dev.bravo" and "dev.bravo" not in w["engine"].stacks()
    assert all(rows(w["server"], d, "bravo") == {t: [] for t in TABLES} for d in w["own"])
    assert docs(w["fs_own"]) == {} and objects_of(w["bucket"], "") == {}
    assert_neighbour_untouched(w)
