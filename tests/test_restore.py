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
from tests.movehelp import Boom, stop_before
from tests.test_operations_killed import Runner, _yaml
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


def scratch_docs(loc):
    from tests.test_tier_moves_all_stores import TREE
    tenant = loc.root.rsplit("/", 1)[1]
    return {rel: checksum for rel, (_, checksum) in fs.document_checksums(loc, fs.prepare(loc, tenant, TREE)).items()}


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
    assert not any(c.id == "_tenancy" for c in fs.client_for(w["fs_pool"]("alpha")).collections())
    index = json.loads((archive / "archive.json").read_text())
    assert (index["environment"], index["plan"], index["model"]) == ("dev", "free", "pooled")

    phases = []
    done = restore(w, "alpha", archive, before_phase=phases.append)
    # no graph in a pooled tenant's archive: that phase has no work and is not run
    assert phases == [p for p in restoring.PHASES if p != "graph"] and done.status == "done"
    assert done.detail["restored"] == {"pooled": 8, "objects": 3, "firestore": 8}
    assert rows(s, w["pooled"], "alpha") == before["rows"]
    assert docs(w["fs_pool"]("alpha")) == before["docs"]
    parent = fs.client_for(w["fs_pool"]("alpha")).document(w["fs_pool"]("alpha").path("itineraries/gone")).get()
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


def test_a_tenant_with_its_own_stores_comes_back_into_a_fresh_tenant_stack_with_its_graph(w, monkeypatch):
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
    # no connection for the databases the new stack creates: provisioning records them from its outputs (Cloud SQL
    # connection names, reached through the Auth Proxy's socket directory) and checks them before writing into them
    monkeypatch.setenv("TENANCY_CLOUDSQL_DIR", str(w["tmp"] / "no-proxy-here"))
    no_dsn = Reach({}, graph_runner=LoadJob(w["bucket"]))
    with pytest.raises(OperationError) as failed:
        restore(w, "bravo", archive, standard, reach=no_dsn)
    assert str(failed.value).startswith("the databases the tenant stack created cannot be used: postgres-1 (target, "
                                        "bravo/postgres-1, 'host=") and "cannot connect or read it" in str(failed.value)
    assert "nothing was written into them. Operation " in str(failed.value)
    assert w["registry"].database("bravo/postgres-1").connection == {
        "instance": json.loads(json.dumps(w["engine"].outputs("dev.bravo")["databases"]["postgres-1"]))["connectionName"],
        "dbname": "app"}
    assert restore(w, "bravo", archive, standard, reach=no_dsn, abort=True).status == "aborted"
    assert "dev.bravo" not in w["engine"].stacks() and w["registry"].tenant("bravo").state == "offboarded"
    monkeypatch.delenv("TENANCY_CLOUDSQL_DIR")
    # interrupted with every store imported and the graph loaded, then aborted: exactly that is removed
    with pytest.raises(Boom):
        restore(w, "bravo", archive, standard, reach=Reach(w["reach"].dsns, graph_runner=LoadJob(w["bucket"])),
                before_phase=stop_before("activate"))
    assert "dev.bravo" in w["engine"].stacks() and rows(s, p2, "bravo") == before[p2]
    assert w["registry"].tenant("bravo").state == "frozen" and registered(w, p1, "bravo") == "frozen"
    aborted = restore(w, "bravo", archive, standard, reach=Reach(w["reach"].dsns), abort=True)
    assert aborted.status == "aborted" and "dev.bravo" not in w["engine"].stacks()
    assert all(rows(s, d, "bravo") == {t: [] for t in TABLES} and registered(w, d, "bravo") is None for d in w["own"])
    assert docs(w["fs_own"]) == {} and objects_of(w["bucket"], "") == {}
    row = w["registry"].tenant("bravo")
    assert (row.state, row.stores, row.operation) == ("offboarded", {}, None) and state_of(w, "bravo") == "offboarded"
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


def test_offboard_refuses_to_delete_when_its_archive_does_not_restore(w):
    """The export's CSV rewritten with its manifest's digests made to agree: every file matches its manifest, so
    only restoring it shows that its rows are not the verified ones."""
    import hashlib

    s = w["server"]
    archive = w["tmp"] / "alpha-archive"

    def tamper(phase):
        if phase != "restore-check":
            return
        folder = archive / "pooled"
        csv = folder / "app.users.csv"
        csv.chmod(0o600)
        csv.write_bytes(csv.read_bytes().replace(b"user0@alpha", b"user9@alpha"))
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["tables"]["app.users"]["sha256"] = hashlib.sha256(csv.read_bytes()).hexdigest()
        (folder / "manifest.json").write_text(json.dumps(manifest))
        index = json.loads((archive / "archive.json").read_text())
        index["stores"]["pooled"]["manifestSha256"] = hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()
        (archive / "archive.json").write_text(json.dumps(index))

    with pytest.raises(OperationError) as failed:
        offboard(w, "alpha", export_to=str(archive), before_phase=tamper)
    op = w["registry"].unfinished()[0]
    assert str(failed.value).startswith(
        f"the archive does not restore: pooled: tenant 'alpha': the export in {archive / 'pooled'} does not load back as "
        "exported, nothing committed: app.users: exported 2 rows/")
    assert str(failed.value).endswith(
        f"the tenant stays frozen and nothing was deleted. Operation {op.id}: resume it with `tenancy offboard alpha "
        f"--env dev`, or abort it with `tenancy offboard alpha --env dev --abort`")
    assert rows(s, w["pooled"], "alpha") == w["before"]["alpha"], "nothing deleted, nothing committed"
    assert docs(w["fs_pool"]("alpha")) == w["docs"]["alpha"] and objects_of(w["shared"], "alpha/") == w["objects"]["alpha"]
    assert registered(w, w["pooled"], "alpha") == "frozen" and w["registry"].tenant("alpha").state == "frozen"
    aborted = offboard(w, "alpha", abort=True, export_to=None)
    assert aborted.status == "aborted" and not archive.exists()
    assert registered(w, w["pooled"], "alpha") == "active" and w["registry"].tenant("alpha").state == "active"


def test_a_restore_check_interrupted_with_scratch_copies_leaves_none_after_abort_or_resume(w, monkeypatch):
    real = fs.import_export

    def killed_after_writing(*args, **kw):
        real(*args, **kw)
        raise Boom("killed with the scratch documents written")

    archive = w["tmp"] / "alpha-archive"
    monkeypatch.setattr(fs, "import_export", killed_after_writing)
    with pytest.raises(Boom):
        offboard(w, "alpha", export_to=str(archive))
    op = w["registry"].unfinished()[0]
    pool = w["fs_pool"]("alpha")
    scratch = fs.FirestoreLocation(pool.project, pool.database, f"_tenancy/restore-check-{op.id}/tenants/alpha")
    assert scratch_docs(scratch) == w["docs"]["alpha"], "the scratch documents are there"
    assert [(r.kind, r.policy, r.done) for r in w["registry"].cleanup_records(op.id) if r.kind == "scratch"] == [
        ("scratch", "always", True), ("scratch", "always", False)], "objects' scratch discarded, documents' pending"
    monkeypatch.setattr(fs, "import_export", real)
    out = offboard(w, "alpha", export_to=str(archive))
    assert out.status == "done" and out.detail["restore_check"] == {"pooled": 8, "objects": 2, "firestore": 8}
    assert scratch_docs(scratch) == {}
    assert w["shared"].objects("_tenancy/") == []
    # and an abort removes them too
    monkeypatch.setattr(fs, "import_export", killed_after_writing)
    with pytest.raises(Boom):
        offboard(w, "bravo", export_to=str(w["tmp"] / "bravo-archive"))
    bravo_op = w["registry"].unfinished()[0].id
    there = fs.FirestoreLocation(pool.project, pool.database, f"_tenancy/restore-check-{bravo_op}/tenants/bravo")
    assert scratch_docs(there) == w["docs"]["bravo"]
    monkeypatch.setattr(fs, "import_export", real)
    assert offboard(w, "bravo", abort=True, export_to=None).status == "aborted"
    assert scratch_docs(there) == {} and w["shared"].objects("_tenancy/") == []
    assert docs(w["fs_pool"]("bravo")) == w["docs"]["bravo"] and registered(w, w["pooled"], "bravo") == "active"


CATALOG_OFFBOARDED = """
version: 1
tenants:
  - {id: alpha, name: Alpha, plan: free, admin_email: a@alpha.example, state: offboarded}
  - {id: bravo, name: Bravo, plan: pro, admin_email: b@bravo.example}
plans:
  pro:
    model: pooled
    limits: {api_rate_limit: 500, storage_gb: 5, cpu: 0.5, memory_gb: 1, pods: 1, pvcs: 0, services: 1, backup_retention_days: 7}
    features: [core, comments, likes, audit-log, api-access]
"""


def test_the_command_line_restores_with_exact_messages_and_exit_codes(w, capsys, monkeypatch):
    from tenancy.catalog import parse_catalog
    from tenancy.stores import postgres as pg

    tenants = w["tmp"] / "tenants.yaml"
    tenants.write_text(CATALOG_OFFBOARDED)
    common = ["--env", "dev", "--tenants", str(tenants), "--engine", "offline", "--state", str(w["tmp"] / "state"),
              "--registry", w["registry"].dsn, "--db", f"pooled={w['reach'].dsns['pooled']}"]

    def run(*argv):
        code = main([*argv, *common])
        out, err = capsys.readouterr()
        return code, out, err

    archive = w["tmp"] / "alpha-archive"

    def never(*a, **kw):
        raise AssertionError("--no-restore-check restores nothing")

    with monkeypatch.context() as m:
        for module in (pg, obj, fs):
            m.setattr(module, "import_export", never)
        code, out, err = run("offboard", "alpha", "--export-to", str(archive), "--no-restore-check")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "done" and result["restore_check"] == "skipped"
    assert "[restore-check]" in err and "skipped (--no-restore-check)" in err
    pending = [p for p in rec.for_deploy(parse_catalog(CATALOG_OFFBOARDED.replace(", state: offboarded", "")),
                                         rec.read(w["engine"], "dev"))[1] if p.tenant == "alpha"]
    assert [(p.kind, p.command) for p in pending] == [("offboarded", "tenancy restore alpha --from ARCHIVE")]

    assert run("restore", "alpha") == (2, "", "error: give the archive to restore 'alpha' from: --from DIR or --from "
                                              "gs://BUCKET/PREFIX\n")
    assert run("restore", "alpha", "--from", "gs://only-a-bucket") == (
        2, "", "error: --from gs://only-a-bucket: give gs://BUCKET/PREFIX, a prefix of its own for this archive (e.g. "
               "gs://acme-archives/offboarded/acme-2025-06)\n")
    assert run("restore", "ghost", "--from", str(archive)) == (
        2, "", "error: tenant 'ghost' was never deployed in 'dev', so it was not offboarded there: a restore brings back "
               "an offboarded tenant of this environment; check the id and --env\n")
    assert run("restore", "bravo", "--from", str(archive)) == (
        2, "", "error: restore of 'bravo' refused before any change: tenant 'bravo' is active in 'dev', not offboarded: a "
               "restore brings back an offboarded tenant only (its stores would be overwritten otherwise); nothing was "
               "changed\n")
    assert run("restore", "alpha", "--abort") == (0, "tenant 'alpha' has no unfinished restore; nothing to abort\n", "")
    assert run("restore", "alpha", "--from", str(archive), "--kubeconfig", str(w["tmp"] / "nope")) == (
        2, "", f"error: --kubeconfig {w['tmp'] / 'nope'}: No such file or directory; give the path of a kubeconfig file "
               "(the tenant stack's `kubeconfig` output saved to a file)\n")
    kubeconfig = w["tmp"] / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
                          "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
                          "current-context: x\n")

    code, out, err = run("restore", "alpha", "--from", str(archive), "--kubeconfig", str(kubeconfig))
    assert code == 0, err
    result = json.loads(out)
    assert (result["status"], result["kind"], result["phases_run"]) == ("done", "restore", [p for p in restoring.PHASES if p != "graph"])
    assert result["restored"] == {"pooled": 8, "objects": 2, "firestore": 8}
    assert result["catalog_line"] == f"tenant 'alpha' restored; set `state: active` for it in {tenants}"
    assert rows(w["server"], w["pooled"], "alpha") == w["before"]["alpha"]
    assert docs(w["fs_pool"]("alpha")) == w["docs"]["alpha"] and objects_of(w["shared"], "alpha/") == w["objects"]["alpha"]
    assert [p for p in rec.for_deploy(parse_catalog(CATALOG_OFFBOARDED.replace(", state: offboarded", "")),
                                      rec.read(w["engine"], "dev"))[1] if p.tenant == "alpha"] == []
    code, out, err = run("restore", "alpha", "--from", str(archive))
    assert (code, out) == (2, "") and err.startswith("error: restore of 'alpha' refused before any change: tenant 'alpha' "
                                                     "is active in 'dev', not offboarded")


def test_archives_in_a_bucket_are_never_overwritten_and_restore_from_there(w):
    import tempfile
    import uuid
    from pathlib import Path

    from google.cloud import storage

    client = storage.Client(project=w["project"])
    name = f"archives-{uuid.uuid4().hex[:10]}"
    client.create_bucket(name)
    bucket = obj.open_store(f"gs://{name}")
    url = f"gs://{name}/offboarded/alpha"
    out = offboard(w, "alpha", export_to=url)
    op = out.operation
    assert out.detail["export"]["dir"] == url and out.detail["restore_check"] == {"pooled": 8, "objects": 2, "firestore": 8}
    names = sorted(bucket.list("offboarded/alpha/"))
    assert {"offboarded/alpha/archive.json", "offboarded/alpha/pooled/manifest.json", "offboarded/alpha/pooled/app.users.csv",
            "offboarded/alpha/objects/objects.json", "offboarded/alpha/objects/objects/avatars/1.png",
            "offboarded/alpha/firestore/itineraries.notes.jsonl"} <= set(names)
    assert not (Path(tempfile.gettempdir()) / f"tenancy-archive-{op}").exists(), "the staging copy is removed"
    assert json.loads(bucket.read("offboarded/alpha/archive.json"))["operation"] == op
    with pytest.raises(PreflightRefused) as refused:
        offboard(w, "bravo", export_to=url)
    assert str(refused.value) == (f"offboard of 'bravo' refused before any change: --export-to {url}: already holds "
                                  f"{len(names)} objects; give a new prefix so no earlier archive is overwritten; nothing "
                                  "was changed")
    good = bucket.read("offboarded/alpha/pooled/app.users.csv")
    bucket.write("offboarded/alpha/pooled/app.users.csv", good.replace(b"user0@alpha", b"user9@alpha"))
    with pytest.raises(PreflightRefused, match=r"pooled: tenant 'alpha': the export in .* does not match its manifest: "
                                               r"app.users: file app.users.csv changed \(sha256 differs\)"):
        restore(w, "alpha", url)
    bucket.write("offboarded/alpha/pooled/app.users.csv", good)
    done = restore(w, "alpha", url)
    assert done.status == "done" and done.detail["archive"] == url
    assert rows(w["server"], w["pooled"], "alpha") == w["before"]["alpha"]
    assert docs(w["fs_pool"]("alpha")) == w["docs"]["alpha"] and objects_of(w["shared"], "alpha/") == w["objects"]["alpha"]
    # a tier move archives to a bucket the same way
    moved = upgrade(w, "standard", export_to=f"gs://{name}/moves/bravo")
    assert moved.detail["archive"] == f"gs://{name}/moves/bravo"
    index = json.loads(bucket.read("moves/bravo/archive.json"))
    assert index["tenant"] == "bravo" and set(index["stores"]) == {"pooled", "objects", "firestore"}


# --------------------------------------------------------------------------- killed at a random instant

def _restore_command(state: str, registry_dsn: str, project: str, catalog_text: str, args: dict, report: str) -> None:
    """Runs in a fork-server child: `tenancy restore bravo --from ARCHIVE` with no DSN (the registry names every
    database); its outcome, or its error's line, written to `report`."""
    from tenancy.catalog import parse_catalog
    from tenancy.engine import OfflineEngine
    from tenancy.errors import TenancyError
    from tenancy.operations import tier_move
    from tenancy.operations.registry import Registry

    try:
        restoring.project_of = tier_move.project_of = offboarding.project_of = lambda deployed: project
        ctx = Context("dev", Registry.open(registry_dsn, "dev"), OfflineEngine(state, "dev"))
        restoring.restore(ctx, parse_catalog(catalog_text), "bravo", source=args["from"], reach=Reach({}),
                          abort=args.get("abort", False))
        text = {"status": "finished"}
    except TenancyError as exc:
        text = {"status": "failed", "error": str(exc)}
    with open(report, "w") as f:
        json.dump(text, f)


class RestoreRunner(Runner):
    def __init__(self, w):
        super().__init__(w, ["tenancy.operations.restore", "stacks", "tests.test_restore"])

    def run(self, args: dict, delay: float | None = None) -> tuple[str, str]:
        w = self.w
        return self.spawn(_restore_command, (str(w["tmp"] / "state"), w["registry"].dsn, w["project"],
                                             _yaml(w["catalog"]), args), delay)


def nothing_of_bravo(w):
    s = w["server"]
    assert rows(s, w["pooled"], "bravo") == {t: [] for t in TABLES} and registered(w, w["pooled"], "bravo") is None
    assert docs(w["fs_pool"]("bravo")) == {} and objects_of(w["shared"], "bravo/") == {}
    assert w["registry"].tenant("bravo").state == "offboarded" and state_of(w, "bravo") == "offboarded"


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed{s}") for s in range(int(__import__("os").environ.get(
    "TENANCY_KILL_RUNS", "1")))])
def test_restore_killed_at_a_random_instant_then_resumed_or_aborted(w, seed, pg_server, monkeypatch):
    import random

    from tenancy.operations import stores as where
    from tenancy.operations.sync import sync

    reg, rng = w["registry"], random.Random(5000 + seed)
    reg.set_database("pool-1", "pool-1", where.connection_record(w["reach"].dsns["pooled"]))
    sync(reg, rec.read(w["engine"], "dev"), "dev")
    archive = w["tmp"] / "bravo-archive"
    ctx = Context("dev", reg, w["engine"])
    offboarding.offboard(ctx, w["catalog"], "bravo", reach=Reach({}), export_to=str(archive))
    nothing_of_bravo(w)
    runner = RestoreRunner(w)
    outcome, error = runner.run({"from": str(archive)}, delay=rng.uniform(0.0, 5.0))
    assert outcome in ("killed", "finished"), error
    if outcome == "killed" and rng.random() < 0.5:
        aborted, error = runner.run({"from": str(archive), "abort": True})
        assert aborted == "finished" or "it can no longer be aborted" in error, error
        if aborted == "finished":
            nothing_of_bravo(w)      # exactly what the restore wrote is gone; the archive is untouched
            assert w["shared"].objects("_tenancy/") == [] and reg.unfinished() == []
    done, error = runner.run({"from": str(archive)})
    assert done == "finished", error
    s = w["server"]
    assert rows(s, w["pooled"], "bravo") == w["before"]["bravo"] and registered(w, w["pooled"], "bravo") == "active"
    assert docs(w["fs_pool"]("bravo")) == w["docs"]["bravo"] and objects_of(w["shared"], "bravo/") == w["objects"]["bravo"]
    assert reg.unfinished() == [] and reg.tenant("bravo").state == "active" and state_of(w, "bravo") == "active"
    assert rows(s, w["pooled"], "alpha") == w["before"]["alpha"], "the neighbour's rows"
    assert docs(w["fs_pool"]("alpha")) == w["docs"]["alpha"] and objects_of(w["shared"], "alpha/") == w["objects"]["alpha"]


def test_a_bucket_upload_never_overwrites_and_resumes_what_a_killed_run_uploaded(gcs_server, tmp_path):
    import uuid

    from google.cloud import storage

    from tenancy.lifecycle import archives

    name = f"archives-{uuid.uuid4().hex[:10]}"
    storage.Client(project="local").create_bucket(name)
    bucket = obj.open_store(f"gs://{name}")
    staged = tmp_path / "staged"
    (staged / "pooled").mkdir(parents=True)
    (staged / "pooled" / "manifest.json").write_text('{"tables": {}}')
    (staged / "archive.json").write_text('{"tenant": "alpha", "operation": "op-1"}')
    url = f"gs://{name}/a"
    bucket.write("a/pooled/manifest.json", b"someone else's")
    with pytest.raises(archives.ArchiveError, match=rf"^{url}/pooled/manifest.json exists with other content; nothing "
                                                   "was overwritten$"):
        archives.upload(url, staged, "op-1", lambda m: None)
    assert bucket.read("a/pooled/manifest.json") == b"someone else's" and "a/archive.json" not in bucket.list("a/")
    bucket.write("a/pooled/manifest.json", b'{"tables": {}}')       # as a killed run of op-1 left it
    assert archives.upload(url, staged, "op-1", lambda m: None) == 2 and not staged.exists()
    assert archives.uploaded(url, "op-1") and not archives.uploaded(url, "op-2")
    assert json.loads(bucket.read("a/archive.json")) == {"tenant": "alpha", "operation": "op-1"}


def test_target_stores_holding_anything_of_the_tenant_are_refused(w):
    archive = w["tmp"] / "alpha-archive"
    offboard(w, "alpha", export_to=str(archive))
    w["shared"].write("alpha/late.txt", b"written after the offboarding")
    loc = w["fs_pool"]("alpha")
    fs.client_for(loc).document(loc.path("users/late")).set({"name": "late"})
    from tests.sqlhelp import register
    register(w["server"], w["pooled"], "alpha")
    with pytest.raises(PreflightRefused) as refused:
        restore(w, "alpha", archive)
    text = str(refused.value)
    assert text.startswith("restore of 'alpha' refused before any change: pooled (target, pool-1, ") and (
        "already holds tenant 'alpha' (state active), registered by no unfinished operation of it") in text
    from tenancy.stores.postgres import unregister
    unregister(w["reach"].dsns["pooled"], "alpha")
    with pytest.raises(PreflightRefused) as refused:
        restore(w, "alpha", archive)
    assert str(refused.value) == (
        f"restore of 'alpha' refused before any change: firestore: {loc} already holds 1 items of 'alpha': not an empty "
        "store; remove them or find out where they came from; objects: objects "
        f"({w['shared'].url}/alpha/) already holds 1 items of 'alpha': not an empty store; remove them or find out where "
        "they came from; nothing was changed")
    assert w["shared"].read("alpha/late.txt") == b"written after the offboarding" and list(docs(loc)) == ["users/late"]
    assert w["registry"].unfinished() == [] and w["registry"].tenant("alpha").state == "offboarded"
