"""The Firestore tenant store against a real Firestore API server: one tenant's documents, exactly once, in
either layout, neighbours untouched, resumable after a kill, never deleted unverified."""

from __future__ import annotations

import hashlib
import json
import stat
import time
import uuid
from datetime import datetime, timezone

import pytest

from tenancy.stores import Mismatch, StoreError, Summary
from tenancy.stores import firestore as fs
from tenancy.stores.firestore import access as fs_access
from tenancy.stores.firestore import writes as fs_writes

# google.api_core warns at import that Python 3.11 support ends in 2027
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

PROJECT = "demo-tenancy"
TREE = fs.DEFAULT_COLLECTIONS
# documents seed() writes per tenant: users 3, itineraries 2, notes 2 + 1, settings 1
COUNTS = {"users": 3, "itineraries": 2, "itineraries/*/notes": 3, "settings": 1}


class Killed(Exception):
    """Stands for the process dying between two commits."""


@pytest.fixture
def pool(firestore_server):
    """A fresh pooled database holding acme and two neighbours (bravo, charlie), each with different data."""
    database = f"pool-{uuid.uuid4().hex[:10]}"
    for tenant in ("acme", "bravo", "charlie"):
        seed(fs.location_for(PROJECT, database, tenant, pooled=True), tenant)
    return database


def own(tenant: str = "acme") -> fs.FirestoreLocation:
    return fs.location_for(PROJECT, f"own-{uuid.uuid4().hex[:10]}", tenant, pooled=False)


def pooled(database: str, tenant: str = "acme") -> fs.FirestoreLocation:
    return fs.location_for(PROJECT, database, tenant, pooled=True)


def client(loc: fs.FirestoreLocation):
    return fs.client_for(loc)


def doc(loc: fs.FirestoreLocation, rel: str):
    return client(loc).document(loc.path(rel))


def seed(loc: fs.FirestoreLocation, tag: str) -> None:
    c = client(loc)
    batch = c.batch()
    for i in range(3):
        batch.set(doc(loc, f"users/u{i}"), {"name": f"{tag} user {i} – Zoë 🚀", "rank": i,
                                            "friend": doc(loc, "users/u0")})
    for i in range(2):
        batch.set(doc(loc, f"itineraries/i{i}"), {"title": f"{tag} trip {i}", "days": [i, i + 1]})
    batch.set(doc(loc, "itineraries/i0/notes/n0"), {"text": f"{tag} pack light"})
    batch.set(doc(loc, "itineraries/i0/notes/n1"), {"text": f"{tag} passport"})
    batch.set(doc(loc, "itineraries/i1/notes/n0"), {"text": f"{tag} hotel",
                                                    "at": datetime(2024, 5, 1, tzinfo=timezone.utc)})
    batch.set(doc(loc, "settings/main"), {"theme": tag, "owner": doc(loc, "users/u1")})
    batch.commit()


def paths(loc: fs.FirestoreLocation) -> list[str]:
    return sorted(fs.document_checksums(loc, TREE))


def counting_commits(monkeypatch, kill_after: int | None = None) -> list[list[str]]:
    """Wrap the store's single commit point: record each commit's document paths, raise Killed after N commits."""
    real, commits = fs_writes.commit, []

    def wrapped(loc, batch):
        if kill_after is not None and len(commits) == kill_after:
            raise Killed(f"killed after {kill_after} commits")
        names = [(w.update.name or w.delete).split("/documents/", 1)[1] for w in batch._write_pbs]
        real(loc, batch)
        commits.append(names)

    monkeypatch.setattr(fs_writes, "commit", wrapped)
    return commits


def part_counts(s: Summary) -> dict[str, int]:
    return {p: v["count"] for p, v in s.parts.items()}


# --- layouts, round trip, neighbours ------------------------------------------------------------------------


def test_pooled_own_pooled_round_trip_leaves_neighbours_untouched(pool):
    src = pooled(pool)
    neighbours = {t: fs.summary(pooled(pool, t), t, TREE) for t in ("bravo", "charlie")}
    before = fs.summary(src, "acme", TREE)
    assert part_counts(before) == COUNTS and before.count == 9 and before.kind == "firestore"
    assert neighbours["bravo"] != before, "different tenants' data must not summarise equal"

    dst = own()
    moved = fs.copy(src, dst, "acme", TREE)
    assert moved == before, "the own layout summarises exactly like the pooled one"
    a, b = fs.verify(src, dst, "acme", TREE)
    assert a == b == before
    assert fs.document_checksums(src, TREE) == fs.document_checksums(dst, TREE), "every document once, equal checksums"
    assert paths(dst) == sorted(["users/u0", "users/u1", "users/u2", "itineraries/i0", "itineraries/i1",
                                 "itineraries/i0/notes/n0", "itineraries/i0/notes/n1", "itineraries/i1/notes/n0",
                                 "settings/main"])
    # references are rebased: relative to the root in each layout
    assert doc(dst, "settings/main").get().to_dict()["owner"].path == "users/u1"

    assert fs.delete(src, "acme", TREE, b) == 9
    assert fs.summary(src, "acme", TREE).count == 0
    back = fs.copy(dst, src, "acme", TREE)
    assert back == before and fs.summary(src, "acme", TREE) == before
    assert doc(src, "settings/main").get().to_dict()["owner"].path == "tenants/acme/users/u1"
    for t, s in neighbours.items():
        assert fs.summary(pooled(pool, t), t, TREE) == s, f"neighbour {t} changed"


def test_copy_again_writes_nothing_and_reports_target_only_documents(pool, monkeypatch):
    src, dst = pooled(pool), own()
    fs.copy(src, dst, "acme", TREE)
    commits = counting_commits(monkeypatch)
    messages = []
    assert fs.copy(src, dst, "acme", TREE, progress=messages.append) == fs.summary(src, "acme", TREE)
    assert commits == [] and "copied 0 documents" in messages[0] and "(9 already there)" in messages[0]

    doc(dst, "itineraries/i1/notes/stray").set({"text": "only here"})
    with pytest.raises(Mismatch, match=r"holds 1 documents of tenant 'acme' that firestore demo-tenancy/pool-\w+ "
                                       r"under tenants/acme does not: itineraries/i1/notes/stray; they were left"):
        fs.copy(src, dst, "acme", TREE)
    assert doc(dst, "itineraries/i1/notes/stray").get().exists
    with pytest.raises(Mismatch, match=r"itineraries/\*/notes: 3 vs 4 \(documents: itineraries/i1/notes/stray\)"):
        fs.verify(src, dst, "acme", TREE)


def test_field_types_survive_both_layouts_exactly(pool, tmp_path):
    from google.api_core.datetime_helpers import DatetimeWithNanoseconds
    from google.cloud.firestore_v1 import GeoPoint

    src = pooled(pool)
    when = datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=timezone.utc)  # Firestore keeps microseconds
    # integers stay within ±(2**53 - 1): the test server stores them as JavaScript numbers
    fields = {"s": "naïve café – 東京 🚀", "i": -(2 ** 53 - 1), "f": 0.1, "whole": 2.0, "yes": True,
              "no": False, "nothing": None, "nested": {"a.b": {"c": [1, "x", None]}, "$tag": "kept", "empty": {}},
              "list": [1, 2.5, "three", {"four": 4}], "when": when, "raw": b"\x00\xffbytes",
              "where": GeoPoint(48.8566, 2.3522), "ref": doc(src, "users/u2"), "nan": float("nan")}
    doc(src, "users/typed").set(fields)

    dst = own()
    fs.copy(src, dst, "acme", TREE)
    got = doc(dst, "users/typed").get().to_dict()
    assert got["s"] == fields["s"] and got["nested"] == fields["nested"] and got["list"] == fields["list"]
    assert type(got["i"]) is int and got["i"] == -(2 ** 53 - 1)
    assert type(got["whole"]) is float and got["whole"] == 2.0 and got["f"] == 0.1
    assert got["yes"] is True and got["no"] is False and got["nothing"] is None and got["nan"] != got["nan"]
    assert got["when"] == when and isinstance(got["when"], DatetimeWithNanoseconds)
    assert got["raw"] == b"\x00\xffbytes" and got["where"] == GeoPoint(48.8566, 2.3522)
    assert got["ref"].path == "users/u2"
    fs.verify(src, dst, "acme", TREE)

    out = fs.export(dst, "acme", TREE, tmp_path / "firestore")
    lines = [json.loads(x) for x in (tmp_path / "firestore" / "users.jsonl").read_text().splitlines()]
    typed = next(x for x in lines if x["path"] == "users/typed")
    assert typed["fields"] == {
        "s": "naïve café – 東京 🚀", "i": -(2 ** 53 - 1), "f": 0.1, "whole": 2.0, "yes": True, "no": False,
        "nothing": None, "nested": {"a.b": {"c": [1, "x", None]}, "$$tag": "kept", "empty": {}},
        "list": [1, 2.5, "three", {"four": 4}], "when": {"$timestamp": "2024-02-29T23:59:58.123456Z"},
        "raw": {"$bytes": "AP9ieXRlcw=="}, "where": {"$geo": [48.8566, 2.3522]}, "ref": {"$ref": "users/u2"},
        "nan": {"$double": "nan"}}
    assert out["count"] == 10


def test_reference_outside_the_tenant_cannot_move_into_an_own_database(pool):
    src = pooled(pool)
    doc(src, "settings/main").set({"plan": client(src).document("plans/basic")})
    dst = own()
    with pytest.raises(StoreError, match=r"document settings/main: a reference to plans/basic points outside the "
                                         r"tenant's documents and cannot be kept in firestore demo-tenancy/own-\w+"):
        fs.copy(src, dst, "acme", TREE)


# --- resumability -------------------------------------------------------------------------------------------


def test_killed_copy_resumes_to_the_same_end_state(pool, monkeypatch):
    src, dst = pooled(pool), own()
    commits = counting_commits(monkeypatch, kill_after=2)
    with pytest.raises(Killed):
        fs.copy(src, dst, "acme", TREE, batch_size=3)
    assert len(commits) == 2 and len(paths(dst)) == 6
    order = sum(commits, [])
    assert order == ["itineraries/i0", "itineraries/i1", "itineraries/i0/notes/n0", "itineraries/i0/notes/n1",
                     "itineraries/i1/notes/n0", "settings/main"], "each parent is written before its children"

    monkeypatch.undo()
    commits = counting_commits(monkeypatch)
    result = fs.copy(src, dst, "acme", TREE, batch_size=3)
    assert sum(len(c) for c in commits) == 3, "the re-run writes only what the killed run did not"
    assert result == fs.summary(src, "acme", TREE)
    fs.verify(src, dst, "acme", TREE)
    assert fs.copy(src, dst, "acme", TREE) == result and sum(len(c) for c in commits) == 3


def test_delta_copy_writes_only_documents_changed_since(pool, monkeypatch):
    src, dst = pooled(pool), own()
    fs.copy(src, dst, "acme", TREE)
    doc(src, "users/older").set({"name": "written before the mark"})
    mark = doc(src, "users/older").get().update_time
    time.sleep(0.01)  # the server's update times have millisecond resolution
    doc(src, "users/u1").update({"rank": 100})
    doc(src, "itineraries/i1/notes/n9").set({"text": "late note"})

    commits = counting_commits(monkeypatch)
    fs.copy(src, dst, "acme", TREE, changed_since=mark)
    assert commits == [["itineraries/i1/notes/n9", "users/u1"]]
    assert doc(dst, "users/u1").get().to_dict()["rank"] == 100
    assert not doc(dst, "users/older").get().exists
    with pytest.raises(Mismatch, match=r"users: 4 vs 3 \(documents: users/older\)"):
        fs.verify(src, dst, "acme", TREE)
    fs.copy(src, dst, "acme", TREE)
    assert commits[1:] == [["users/older"]]
    fs.verify(src, dst, "acme", TREE)


def test_changed_since_must_be_timezone_aware(pool):
    with pytest.raises(StoreError, match="changed_since must be timezone-aware"):
        fs.copy(pooled(pool), own(), "acme", TREE, changed_since=datetime(2024, 1, 1))


# --- deletion against a verified summary --------------------------------------------------------------------


def test_delete_refused_when_a_document_arrived_after_verification(pool):
    src, dst = pooled(pool), own()
    fs.copy(src, dst, "acme", TREE)
    verified, _ = fs.verify(src, dst, "acme", TREE)
    doc(src, "itineraries/i0/notes/late").set({"text": "written after verification"})
    with pytest.raises(Mismatch, match=r"refusing to delete tenant 'acme': it no longer matches the verified "
                                       r"summary \(itineraries/\*/notes: verified 3, now 4 documents\)"):
        fs.delete(src, "acme", TREE, verified)
    assert fs.summary(src, "acme", TREE).count == 10, "nothing was deleted"

    doc(src, "itineraries/i0/notes/late").delete()
    doc(src, "users/u2").update({"name": "changed"})
    with pytest.raises(Mismatch, match=r"users: same count \(3\), different checksum"):
        fs.delete(src, "acme", TREE, verified)


def test_killed_delete_resumes_children_first_and_still_refuses_late_writes(pool, monkeypatch):
    src = pooled(pool)
    expect = fs.summary(src, "acme", TREE)
    bravo = fs.summary(pooled(pool, "bravo"), "bravo", TREE)
    commits = counting_commits(monkeypatch, kill_after=2)
    with pytest.raises(Killed):
        fs.delete(src, "acme", TREE, expect, batch_size=3)
    # two deletions plus the progress marker per commit; notes (the deepest part) go first
    assert commits == [["tenants/acme/itineraries/i0/notes/n0", "tenants/acme/itineraries/i0/notes/n1",
                        "tenants/acme/_tenancy/deletion"],
                       ["tenants/acme/itineraries/i1/notes/n0", "tenants/acme/itineraries/i0",
                        "tenants/acme/_tenancy/deletion"]]
    assert part_counts(fs.summary(src, "acme", TREE)) == {"users": 3, "itineraries": 1, "itineraries/*/notes": 0,
                                                          "settings": 1}

    monkeypatch.undo()
    assert doc(src, "_tenancy/deletion").get().exists and fs.unmovable(src, "acme", TREE) == []
    doc(src, "users/late").set({"name": "late"})
    # what is left plus what the killed run deleted still accounts exactly for every part but users
    with pytest.raises(Mismatch, match=r"verified summary \(users: verified 3, now 4 documents\); a write arrived"):
        fs.delete(src, "acme", TREE, expect)
    doc(src, "users/late").delete()

    assert fs.delete(src, "acme", TREE, expect) == 5
    assert fs.summary(src, "acme", TREE).count == 0
    assert not doc(src, "_tenancy/deletion").get().exists, "the progress marker is removed at the end"
    assert fs.delete(src, "acme", TREE, expect) == 0, "a re-run after success deletes nothing"
    assert fs.summary(pooled(pool, "bravo"), "bravo", TREE) == bravo


def test_each_delete_is_conditional_on_the_update_time_it_was_verified_at(pool, monkeypatch):
    """Firestore rejects the whole commit when a document changed in between (the test server ignores the
    condition, so this checks what is sent)."""
    src = pooled(pool)
    read = {s.id: s.update_time for s in client(src).collection("tenants/acme/itineraries/i0/notes").stream()}
    sent = []

    def capture(loc, batch):
        sent.extend(batch._write_pbs)
        raise Killed()

    monkeypatch.setattr(fs_writes, "commit", capture)
    with pytest.raises(Killed):
        fs.delete(src, "acme", TREE, fs.summary(src, "acme", TREE), batch_size=2)
    delete, marker = sent
    assert delete.delete.endswith("/documents/tenants/acme/itineraries/i0/notes/n0")
    assert delete.current_document.update_time == read["n0"]
    assert marker.update.name.endswith("/documents/tenants/acme/_tenancy/deletion")
    deleted = marker.update.fields["deleted"].map_value.fields
    assert deleted["itineraries/*/notes"].map_value.fields["count"].integer_value == 1


def test_delete_refuses_a_summary_of_another_kind_or_tenant(pool):
    src = pooled(pool)
    with pytest.raises(StoreError, match="cannot delete against a 'postgres' summary"):
        fs.delete(src, "acme", TREE, Summary("postgres", 0, "x"))
    with pytest.raises(StoreError, match=r"under tenants/acme is not tenant 'bravo''s place in the pool"):
        fs.delete(src, "bravo", TREE, fs.summary(pooled(pool, "bravo"), "bravo", TREE))


# --- documents under missing parents ------------------------------------------------------------------------


def listed(loc: fs.FirestoreLocation, collection: str) -> list[str]:
    """Ids ListDocuments returns for a collection: documents that exist and missing ones with documents beneath."""
    return [d.id for d in client(loc).collection(loc.path(collection)).list_documents()]


def test_a_note_under_a_missing_itinerary_is_summarised_moved_exported_and_deleted(pool, tmp_path):
    src, bravo, charlie = pooled(pool), pooled(pool, "bravo"), pooled(pool, "charlie")
    when = datetime(2024, 6, 1, 8, 30, tzinfo=timezone.utc)
    doc(src, "itineraries/gone/notes/n7").set({"text": "acme orphan", "at": when, "owner": doc(src, "users/u0")})
    doc(bravo, "itineraries/gone/notes/n7").set({"text": "bravo orphan"})     # the neighbour's, at the same path
    neighbours = {t: fs.document_checksums(loc, TREE) for t, loc in (("bravo", bravo), ("charlie", charlie))}
    assert "itineraries/gone/notes/n7" in neighbours["bravo"]

    before = fs.summary(src, "acme", TREE)
    assert part_counts(before) == {**COUNTS, "itineraries/*/notes": 4} and before.count == 10
    assert fs.unmovable(src, "acme", TREE) == []
    assert not doc(src, "itineraries/gone").get().exists and listed(src, "itineraries") == ["gone", "i0", "i1"]

    dst = own()
    assert fs.copy(src, dst, "acme", TREE) == before
    got = doc(dst, "itineraries/gone/notes/n7").get().to_dict()
    assert got["text"] == "acme orphan" and got["at"] == when and got["owner"].path == "users/u0"
    assert not doc(dst, "itineraries/gone").get().exists, "the parent stays missing on the other side"
    assert listed(dst, "itineraries") == ["gone", "i0", "i1"]
    verified, _ = fs.verify(src, dst, "acme", TREE)
    assert fs.document_checksums(src, TREE) == fs.document_checksums(dst, TREE)

    out = tmp_path / "export"
    entry = fs.export(src, "acme", TREE, out)
    notes = [json.loads(x) for x in (out / "itineraries.notes.jsonl").read_text().splitlines()]
    assert {"path": "itineraries/gone/notes/n7", "fields": {
        "text": "acme orphan", "at": {"$timestamp": "2024-06-01T08:30:00.000000Z"}, "owner": {"$ref": "users/u0"}}} in notes
    assert entry["count"] == 10 and entry["checksum"] == before.checksum
    restored = own()
    assert fs.import_export(out, restored, "acme", TREE) == before
    assert doc(restored, "itineraries/gone/notes/n7").get().exists and not doc(restored, "itineraries/gone").get().exists

    assert fs.delete(src, "acme", TREE, verified) == 10
    assert listed(src, "itineraries") == [] and fs.summary(src, "acme", TREE).count == 0
    assert list(client(src).document("tenants/acme").collections()) == [], "nothing of acme is left in the pool"

    assert fs.copy(dst, src, "acme", TREE) == before      # and back into the pool
    assert doc(src, "itineraries/gone/notes/n7").get().to_dict()["owner"].path == "tenants/acme/users/u0"
    assert not doc(src, "itineraries/gone").get().exists
    back, _ = fs.verify(dst, src, "acme", TREE)
    assert fs.delete(dst, "acme", TREE, back) == 10
    assert list(client(dst).collections()) == [], "the own database is empty"
    assert fs.summary(src, "acme", TREE) == before
    for t, loc in (("bravo", bravo), ("charlie", charlie)):
        assert fs.document_checksums(loc, TREE) == neighbours[t], f"neighbour {t} changed"
    assert doc(bravo, "itineraries/gone/notes/n7").get().to_dict() == {"text": "bravo orphan"}


def test_documents_outside_the_declared_collections_are_refused_before_anything_changes(pool, tmp_path, monkeypatch):
    src, bravo = pooled(pool), pooled(pool, "bravo")
    doc(src, "itineraries/gone/notes/n7").set({"text": "declared, under a missing itinerary"})
    doc(src, "itineraries/gone/attachments/a1").set({"name": "ticket.pdf"})
    doc(src, "users/ghost/prefs/p1").set({"lang": "de"})           # users declares no subcollection
    doc(src, "legacy/x").set({"old": True})                        # at the tenant's root
    doc(bravo, "itineraries/lost/attachments/b1").set({"name": "bravo's"})
    problems = ["legacy (not declared, at the tenant's root)",
                "itineraries/gone/attachments (not declared, under the missing document itineraries/gone)",
                "users/ghost/prefs (not declared, under the missing document users/ghost)"]
    assert fs.unmovable(src, "acme", TREE) == problems
    assert fs.unmovable(bravo, "bravo", TREE) == [
        "itineraries/lost/attachments (not declared, under the missing document itineraries/lost)"]
    assert fs.unmovable(pooled(pool, "charlie"), "charlie", TREE) == []

    before, bravo_before = fs.summary(src, "acme", TREE), fs.document_checksums(bravo, TREE)
    commits = counting_commits(monkeypatch)
    dst = own()
    with pytest.raises(StoreError, match=r"^firestore demo-tenancy/pool-\w+ under tenants/acme: refusing to copy tenant "
                                         r"'acme': 3 collections hold documents outside the declared collections, which "
                                         r"would be left behind: legacy \(not declared, at the tenant's root\), "
                                         r"itineraries/gone/attachments \(.*\), users/ghost/prefs \(.*\); declare them "
                                         r"\(stores.yaml, firestore\) or move those documents .*; nothing was changed$"):
        fs.copy(src, dst, "acme", TREE)
    with pytest.raises(StoreError, match="refusing to export tenant 'acme': 3 collections"):
        fs.export(src, "acme", TREE, tmp_path / "export")
    with pytest.raises(StoreError, match="refusing to delete tenant 'acme': 3 collections"):
        fs.delete(src, "acme", TREE, before)
    assert commits == [] and paths(dst) == [] and not (tmp_path / "export").exists()
    assert fs.summary(src, "acme", TREE) == before and fs.document_checksums(bravo, TREE) == bravo_before

    # declared, the same documents move and delete like the rest
    wider = {"users": {"prefs": {}}, "itineraries": {"notes": {}, "attachments": {}}, "settings": {}, "legacy": {}}
    assert fs.unmovable(src, "acme", wider) == []
    moved = fs.copy(src, dst, "acme", wider)
    assert {p: moved.parts[p]["count"] for p in ("legacy", "users/*/prefs", "itineraries/*/attachments")} == {
        "legacy": 1, "users/*/prefs": 1, "itineraries/*/attachments": 1} and moved.count == 13
    verified, _ = fs.verify(src, dst, "acme", wider)
    doc(dst, "scratch/s1").set({"written": "at the own database's root"})
    assert fs.unmovable(dst, "acme", wider) == ["scratch (not declared, at the tenant's root)"]
    assert fs.delete(src, "acme", wider, verified) == 13
    assert list(client(src).document("tenants/acme").collections()) == []
    assert fs.document_checksums(bravo, TREE) == bravo_before


# --- export and import --------------------------------------------------------------------------------------


def test_export_import_round_trip_equals_the_source(pool, tmp_path, monkeypatch):
    src = pooled(pool)
    source = fs.summary(src, "acme", TREE)
    out = tmp_path / "export" / "firestore"
    entry = fs.export(src, "acme", TREE, out)
    assert entry["kind"] == "firestore" and entry["count"] == 9 and entry["checksum"] == source.checksum
    assert entry["parts"] == source.parts
    assert sorted(entry["files"]) == ["itineraries.jsonl", "itineraries.notes.jsonl", "settings.jsonl", "users.jsonl"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for name in [*entry["files"], "manifest.json"]:
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    notes = [json.loads(x) for x in (out / "itineraries.notes.jsonl").read_text().splitlines()]
    assert sorted(n["path"] for n in notes) == ["itineraries/i0/notes/n0", "itineraries/i0/notes/n1",
                                                "itineraries/i1/notes/n0"]

    dst = own()
    assert fs.import_export(out, dst, "acme", TREE) == source
    fs.verify(src, dst, "acme", TREE)
    commits = counting_commits(monkeypatch)
    assert fs.import_export(out, dst, "acme", TREE, manifest=entry) == source and commits == []

    with pytest.raises(StoreError, match="is not empty"):
        fs.export(src, "acme", TREE, out)


def test_import_refuses_a_changed_export(pool, tmp_path):
    out = tmp_path / "firestore"
    entry = fs.export(pooled(pool), "acme", TREE, out)
    path = out / "settings.jsonl"
    path.write_text(path.read_text().replace("acme", "evil"))
    dst = own()
    with pytest.raises(Mismatch, match=r"settings.jsonl: SHA-256 differs from the manifest"):
        fs.import_export(out, dst, "acme", TREE)
    forged = {**entry, "files": {**entry["files"], "settings.jsonl": hashlib.sha256(path.read_bytes()).hexdigest()}}
    with pytest.raises(Mismatch, match=r"does not match its manifest: settings: same count \(1\), different checksum"):
        fs.import_export(out, dst, "acme", TREE, manifest=forged)
    assert paths(dst) == [], "nothing is written from an export that fails its manifest"


# --- errors -------------------------------------------------------------------------------------------------


def test_unreachable_server_is_one_line_naming_project_and_database(firestore_server, monkeypatch):
    from tests.servers import free_port

    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    monkeypatch.setattr(fs_access, "RETRY_SECONDS", 0.5)
    loc = fs.location_for(PROJECT, "nowhere", "acme", pooled=True)
    with pytest.raises(StoreError) as err:
        fs.summary(loc, "acme", TREE)
    message = str(err.value)
    assert message.startswith("firestore demo-tenancy/nowhere under tenants/acme: cannot reach Firestore while "
                              "reading documents") and "\n" not in message


def test_missing_emulator_host_and_credentials_is_a_clear_error(firestore_server, monkeypatch, tmp_path):
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(StoreError, match=r"^firestore demo-tenancy/db-one: no Google credentials \(.*missing.json.*\); "
                                         r"run `gcloud auth application-default login`, "
                                         r"or set FIRESTORE_EMULATOR_HOST"):
        fs.summary(fs.location_for(PROJECT, "db-one", "acme", pooled=False), "acme", TREE)


def test_permission_errors_name_the_project(firestore_server):
    from google.api_core import exceptions as gexc

    loc = fs.location_for(PROJECT, "db-one", "acme", pooled=True)
    with pytest.raises(StoreError, match=r"^firestore demo-tenancy/db-one under tenants/acme: permission denied while "
                                         r"reading documents \(Missing or insufficient permissions.\); the caller "
                                         r"needs roles/datastore.user"):
        with fs.api_errors(loc, "reading documents"):
            raise gexc.PermissionDenied("Missing or insufficient permissions.")


@pytest.mark.parametrize("call, message", [
    (lambda: fs.location_for(PROJECT, "db-x", "a/b", pooled=True), r"tenant id 'a/b' is not a valid Firestore id"),
    (lambda: fs.location_for("", "db-x", "acme", pooled=True), "needs a project id"),
    (lambda: fs.location_for(PROJECT, "Pool_DB", "acme", pooled=True), r"database id .Pool_DB. is not .\(default\)."),
    (lambda: fs.FirestoreLocation(PROJECT, "db-x", "tenants"), r"root 'tenants' is not a document path"),
    (lambda: fs.summary(fs.location_for(PROJECT, "db-x", "acme", True), "acme", {}), "non-empty tree"),
    (lambda: fs.summary(fs.location_for(PROJECT, "db-x", "acme", True), "acme", {"users": {"__x__": {}}}),
     r"collections.users: collection '__x__' is not a valid Firestore id"),
    (lambda: fs.summary(fs.location_for(PROJECT, "db-x", "acme", True), "acme", {"_tenancy": {}}), "is reserved"),
    (lambda: fs.copy(fs.location_for(PROJECT, "db-x", "acme", True), fs.location_for(PROJECT, "db-x", "acme", True),
                     "acme", TREE), "source and target of the copy are the same location"),
    (lambda: fs.copy(fs.location_for(PROJECT, "db-a", "acme", True), fs.location_for(PROJECT, "db-b", "acme", False),
                     "acme", TREE, batch_size=501), "batch_size must be between 1 and 500"),
])
def test_bad_input_is_refused_before_any_call(call, message):
    with pytest.raises(StoreError, match=message):
        call()


def test_file_names_keep_collection_paths_apart():
    assert fs.file_name("itineraries/*/notes") == "itineraries.notes.jsonl"
    assert fs.file_name("a.b") == "a%2Eb.jsonl" != fs.file_name("a/*/b") == "a.b.jsonl"
    assert fs.file_name("reise zeit/*/ü") == "reise%20zeit.%C3%BC.jsonl"


def test_checksums_do_not_depend_on_document_order():
    parts = [("users", fs.doc_checksum(f"users/u{i}", {"n": i})) for i in range(5)]
    assert fs.summarise(parts, TREE) == fs.summarise(reversed(parts), TREE)
    assert fs.summarise(parts, TREE) != fs.summarise(parts[:4], TREE)
    assert fs.summarise([], TREE).parts["settings"] == {"count": 0, "checksum": "0" * 64}
