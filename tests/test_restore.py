"""`tenancy restore`: an offboarded tenant brought back from its archive, every store byte-identical, on the real
servers (PostgreSQL, the Firestore and GCS API servers, the offline engine, a registry); wrong archives refused
before any change; an offboarding proves its archive by restoring it into scratch stores before it deletes
anything; archives in a bucket."""

from __future__ import annotations

import json

import pytest

from tenancy.catalog import with_tenant
from tenancy.cli import main
from tenancy.errors import OperationError, PreflightRefused
from tenancy.lifecycle import record as rec
from tenancy.lifecycle.tenant_data import Reach
from tenancy.operations import offboard as offboarding
from tenancy.operations import restore as restoring
from tenancy.operations.protocol import Context
from tenancy.stores import firestore as fs
from tenancy.stores import objects as obj
from tenancy.stores.layout import graph_dump_object
from tests.movehelp import Boom
from tests.test_tier_moves_all_stores import (ORPHAN, TABLES, DumpJob, docs, fleet, objects_of,  # noqa: F401 -- fixture
                                              offboard, rows, upgrade)

pytestmark = pytest.mark.postgres


class LoadJob:
    """Stands for the cluster: runs the neo4j-admin load Job, which finds the dump in the tenant's bucket."""

    def __init__(self, store):
        self.store, self.jobs, self.loaded = store, [], []

    def run(self, namespace, manifest, timeout):
        from tenancy.stores.graph import JobOutcome
        self.jobs.append((namespace, manifest))
        self.loaded.append(self.store.read(graph_dump_object("bravo")))
        return JobOutcome(True, "completed")


@pytest.fixture
def w(fleet, monkeypatch):
    monkeypatch.setattr(restoring, "project_of", lambda deployed: fleet["project"])
    return fleet


def restore(w, tenant, source, catalog=None, before_phase=None, reach=None, **kw):
    ctx = Context("dev", w["registry"], w["engine"], before_phase=before_phase)
    return restoring.restore(ctx, catalog or w["catalog"], tenant, source=str(source), reach=reach or w["reach"], **kw)


def state_of(w, tenant):
    return rec.read(w["engine"], "dev").catalog.tenant(tenant).state.value


def registered(w, dbname, tenant):
    from tests.sqlhelp import connect
    with connect(w["server"], dbname, autocommit=True) as c:
        row = c.execute("SELECT state FROM tenancy.tenants WHERE id = %s", (tenant,)).fetchone()
    return row[0] if row else None


def objects_with_metadata(store, prefix):
    return {o.name: (store.read(o.name), o.content_type, o.metadata) for o in store.objects(prefix)}


def test_a_pooled_tenant_offboarded_then_restored_is_byte_identical_in_every_store(w):
    s = w["server"]
    w["shared"].bucket.blob("alpha/docs/typed.json").upload_from_string(b'{"a": 1}', content_type="application/json")
    blob = w["shared"].bucket.blob("alpha/docs/typed.json")
    blob.metadata = {"owner": "alpha"}
    blob.patch()
    before = {"rows": rows(s, w["pooled"], "alpha"), "docs": docs(w["fs_pool"]("alpha")),
              "objects": objects_with_metadata(w["shared"], "alpha/")}
    assert f"itineraries/{ORPHAN}" in before["docs"] and before["objects"]["alpha/docs/typed.json"][1:] == (
        "application/json", {"owner": "alpha"})
    archive = w["tmp"] / "alpha-archive"
    out = offboard(w, "alpha", export_to=str(archive))
    assert out.detail["restore_check"] == {"pooled": 8, "objects": 3, "firestore": 8}
    assert rows(s, w["pooled"], "alpha") == {t: [] for t in TABLES} and state_of(w, "alpha") == "offboarded"
    assert w["shared"].objects("_tenancy/") == [], "the scratch copies are gone"
    assert not any(c.id == "_tenancy" for c in fs._client(w["fs_pool"]("alpha")).collections())
    index = json.loads((archive / "archive.json").read_text())
    assert (index["environment"], index["plan"], index["model"]) == ("dev", "free", "pooled")

    phases = []
    done = restore(w, "alpha", archive, before_phase=phases.append)
    assert phases == list(restoring.PHASES) and done.status == "done"
    assert done.detail["restored"] == {"pooled": 8, "objects": 3, "firestore": 8}
    assert rows(s, w["pooled"], "alpha") == before["rows"]
    assert docs(w["fs_pool"]("alpha")) == before["docs"]
    parent = fs._client(w["fs_pool"]("alpha")).document(w["fs_pool"]("alpha").path("itineraries/gone")).get()
    assert not parent.exists, "the note's parent stays missing, as it was"
    assert objects_with_metadata(w["shared"], "alpha/") == before["objects"]
    assert registered(w, w["pooled"], "alpha") == "active"
    row = w["registry"].tenant("alpha")
    assert (row.state, row.plan, row.operation, row.stores["databases"]) == ("active", "free", None, {"pooled": "pool-1"})
    assert row.directory["plan"] == "free"
    assert state_of(w, "alpha") == "active"
    assert "alpha" in json.loads(w["engine"].outputs("dev")["tenantDirectory"])
    assert "catalog_line" not in done.detail, "tenants.yaml already says active"
    # the neighbour is untouched
    assert rows(s, w["pooled"], "bravo") == w["before"]["bravo"]
    assert docs(w["fs_pool"]("bravo")) == w["docs"]["bravo"] and objects_of(w["shared"], "bravo/") == w["objects"]["bravo"]
    # restored, it is a tenant like any other: offboarding it again works
    again = offboard(w, "alpha", export_to=str(w["tmp"] / "again"))
    assert again.detail["export"]["stores"] == {"pooled": 8, "objects": 3, "firestore": 8}


def test_a_tenant_with_its_own_stores_comes_back_into_a_fresh_tenant_stack_with_its_graph(w):
    s = w["server"]
    upgrade(w, "standard")
    standard = with_tenant(w["catalog"], "bravo", plan="standard")
    p1, p2, p3 = w["own"]
    before = {d: rows(s, d, "bravo") for d in w["own"]}
    before_docs, before_objects = docs(w["fs_own"]), objects_of(w["bucket"], "")
    w["reach"].graph_runner = DumpJob(w["bucket"])
    archive = w["tmp"] / "bravo-archive"
    offboard(w, "bravo", standard, export_to=str(archive))
    assert "dev.bravo" not in w["engine"].stacks() and all(rows(s, d, "bravo") == {t: [] for t in TABLES} for d in w["own"])
    with pytest.raises(PreflightRefused) as refused:
        restore(w, "bravo", archive, standard, reach=Reach(w["reach"].dsns))
    assert str(refused.value) == (
        "restore of 'bravo' refused before any change: the archive holds 'bravo''s Neo4j graph: loading it runs a "
        "neo4j-admin load Job in namespace tenant-bravo; give --kubeconfig, or --skip graph to leave it in the archive; "
        "nothing was changed")
    assert w["registry"].tenant("bravo").state == "offboarded" and "dev.bravo" not in w["engine"].stacks()
    job = LoadJob(w["bucket"])
    done = restore(w, "bravo", archive, standard, reach=Reach(w["reach"].dsns, graph_runner=job))
    assert done.detail["restored"] == {"postgres-1": 12, "postgres-2": 2, "postgres-3": 4, "objects": 2, "firestore": 8,
                                       "graph": 1}
    assert "dev.bravo" in w["engine"].stacks(), "a fresh tenant stack"
    assert {d: rows(s, d, "bravo") for d in w["own"]} == before
    assert all(registered(w, d, "bravo") == "active" for d in (p1, p2, p3))
    assert docs(w["fs_own"]) == before_docs and objects_of(w["bucket"], "") == before_objects
    [(namespace, manifest)] = job.jobs
    assert namespace == "tenant-bravo" and manifest["metadata"]["name"].startswith("graph-load-bravo")
    assert job.loaded == [b"NEO4J-DUMP bravo graph"], "the Job found the archived dump in the bucket"
    assert graph_dump_object("bravo") not in w["bucket"].list("_tenancy/"), "and the bucket keeps only tenant objects"
    row = w["registry"].tenant("bravo")
    assert (row.state, row.plan, row.model) == ("active", "standard", "namespace")
    assert row.stores["databases"] == {f"postgres-{i}": f"bravo/postgres-{i}" for i in (1, 2, 3)}
    assert state_of(w, "bravo") == "active"


def test_a_wrong_archive_is_refused_before_anything_changes(w):
    archive = w["tmp"] / "alpha-archive"
    offboard(w, "alpha", export_to=str(archive))
    other = w["tmp"] / "bravo-archive"
    offboard(w, "bravo", export_to=str(other))

    def refused(source, expected):
        with pytest.raises(PreflightRefused) as e:
            restore(w, "alpha", source)
        assert str(e.value) == f"restore of 'alpha' refused before any change: {expected}; nothing was changed"
        assert w["registry"].tenant("alpha").state == "offboarded" and w["registry"].unfinished() == []
        assert w["registry"].history("alpha")[-1].kind == "offboard", "a refused restore leaves no trace"
        assert registered(w, w["pooled"], "alpha") is None and rows(w["server"], w["pooled"], "alpha") == {t: [] for t in TABLES}
        assert docs(w["fs_pool"]("alpha")) == {} and objects_of(w["shared"], "alpha/") == {}

    refused(other, f"the archive {other} is not one this restore can trust: {other} is the archive of tenant 'bravo', "
                   "not 'alpha'")
    csv = archive / "pooled" / "app.users.csv"
    good = csv.read_bytes()
    csv.write_bytes(good.replace(b"user0@alpha", b"user9@alpha"))
    refused(archive, f"the archive {archive} is not one this restore can trust: pooled: tenant 'alpha': the export in "
                     f"{archive / 'pooled'} does not match its manifest: app.users: file app.users.csv changed "
                     "(sha256 differs)")
    csv.write_bytes(good)
    (archive / "firestore" / "users.jsonl").unlink()
    refused(archive, f"the archive {archive} is not one this restore can trust: firestore: exported file "
                     f"{archive / 'firestore' / 'users.jsonl'} is missing")
    refused(w["tmp"] / "nowhere", f"the archive {w['tmp'] / 'nowhere'} is not one this restore can trust: "
                                  f"{w['tmp'] / 'nowhere'}: no readable archive.json (No such file or directory): not an "
                                  "archive of `tenancy offboard`")
