"""The local Firestore API server's ListDocuments and ListCollectionIds (scripts/firestore-emulator.mjs), through
the real client: missing documents with show_missing, fields and masks, paging, order, named databases apart,
and options it cannot honour refused rather than ignored."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

# google.api_core warns at import that Python 3.11 support ends in 2027
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture
def db(firestore_server):
    """A client on a fresh named database: ListDocuments sees only what this test wrote."""
    from google.cloud import firestore

    return firestore.Client(project="demo-listing", database=f"db-{uuid.uuid4().hex[:10]}")


def raw(client, parent: str = "", **request):
    """The ListDocuments request itself, every page, as (id, exists, fields) per document."""
    base = f"projects/{client.project}/databases/{client._database}/documents"
    pages = client._firestore_api.list_documents(
        request={"parent": f"{base}/{parent}" if parent else base, **request}, metadata=client._rpc_metadata)
    return [(d.name.rsplit("/", 1)[1], d._pb.HasField("create_time"), sorted(d.fields)) for d in pages]


def test_show_missing_lists_parents_that_only_have_documents_beneath(db):
    db.document("itineraries/i0").set({"title": "kept"})
    db.document("itineraries/i0/notes/n0").set({"text": "under an existing parent"})
    db.document("itineraries/gone/notes/n1").set({"text": "under a parent never written"})
    db.document("itineraries/deep/notes/x/replies/r1").set({"text": "two levels down"})
    db.document("itineraries/was/notes/n2").set({"text": "the parent is deleted below"})
    db.document("itineraries/was").set({"title": "deleted next"})
    db.document("itineraries/was").delete()
    db.document("itineraries/only-read").get()          # a read leaves nothing behind
    db.document("itineraries/emptied/notes/n3").set({"text": "deleted next"})
    db.document("itineraries/emptied/notes/n3").delete()  # no document beneath any more: not missing

    assert [d.id for d in db.collection("itineraries").list_documents()] == ["deep", "gone", "i0", "was"]
    assert raw(db, collection_id="itineraries", show_missing=True) == [
        ("deep", False, []), ("gone", False, []), ("i0", True, ["title"]), ("was", False, [])]
    assert raw(db, collection_id="itineraries") == [("i0", True, ["title"])], "without show_missing: existing only"
    assert raw(db, "itineraries/deep", collection_id="notes", show_missing=True) == [("x", False, [])]
    assert [d.id for d in db.collection("itineraries/gone/notes").list_documents()] == ["n1"]


def test_fields_masks_paging_and_byte_order(db):
    for doc_id in ("b", "a", "é", "Z", "z"):
        db.document(f"c/{doc_id}").set({"keep": doc_id, "drop": 1})
    db.document("c/m/sub/s").set({"x": 1})
    order = ["Z", "a", "b", "m", "z", "é"]    # UTF-8 bytes: upper case, lower case, then multi-byte
    assert [d for d, *_ in raw(db, collection_id="c", show_missing=True, page_size=2)] == order
    assert raw(db, collection_id="c", show_missing=True, mask={"field_paths": []})[0] == ("Z", True, [])
    assert raw(db, collection_id="c", mask={"field_paths": ["keep"]})[0] == ("Z", True, ["keep"])
    assert raw(db, collection_id="c")[0] == ("Z", True, ["drop", "keep"])

    from google.cloud.firestore_v1 import _helpers
    base = f"projects/{db.project}/databases/{db._database}/documents"
    page = db._firestore_api.list_documents(request={"parent": base, "collection_id": "c", "page_size": 4},
                                            metadata=db._rpc_metadata)._response
    assert [d.name.rsplit("/", 1)[1] for d in page.documents] == ["Z", "a", "b", "z"] and page.next_page_token
    assert _helpers.decode_dict(page.documents[0].fields, db) == {"keep": "Z", "drop": 1}
    assert page.documents[0].update_time == db.document("c/Z").get().update_time


def test_collection_ids_under_documents_missing_documents_and_the_root(db):
    db.document("users/u0").set({"n": 0})
    db.document("users/u0/prefs/p0").set({"n": 0})
    db.document("itineraries/gone/notes/n1").set({"text": "orphan"})
    db.document("itineraries/gone/attachments/a1/pages/p1").set({"n": 1})
    db.document("users/u1/empty/e0").get()               # read only: no collection comes of it
    assert sorted(c.id for c in db.collections()) == ["itineraries", "users"]
    assert [c.id for c in db.document("itineraries/gone").collections()] == ["attachments", "notes"]
    assert [c.id for c in db.document("itineraries/gone/attachments/a1").collections()] == ["pages"]
    assert [c.id for c in db.document("users/u0").collections()] == ["prefs"]
    assert list(db.document("users/u1").collections()) == []


def test_named_databases_and_projects_stay_apart(firestore_server):
    from google.cloud import firestore

    tag = uuid.uuid4().hex[:8]
    one = firestore.Client(project="demo-listing", database=f"one-{tag}")
    two = firestore.Client(project="demo-listing", database=f"two-{tag}")
    other = firestore.Client(project=f"other-{tag}", database=f"one-{tag}")
    one.document("tenants/acme/itineraries/gone/notes/n1").set({"db": "one"})
    two.document("tenants/acme/itineraries/lost/notes/n1").set({"db": "two"})
    two.document("tenants/acme/users/u0").set({"db": "two"})
    other.document("tenants/acme/settings/main").set({"db": "other project"})
    assert [d.id for d in one.collection("tenants/acme/itineraries").list_documents()] == ["gone"]
    assert [d.id for d in two.collection("tenants/acme/itineraries").list_documents()] == ["lost"]
    assert [d.id for d in other.collection("tenants/acme/itineraries").list_documents()] == []
    assert [c.id for c in one.document("tenants/acme").collections()] == ["itineraries"]
    assert [c.id for c in two.document("tenants/acme").collections()] == ["itineraries", "users"]
    assert [c.id for c in other.document("tenants/acme").collections()] == ["settings"]


def test_requests_it_cannot_answer_are_refused(db):
    from google.api_core import exceptions as gexc

    db.document("c/a").set({"n": 1})
    with pytest.raises(gexc.InvalidArgument, match="requests with show_missing may not specify order_by"):
        raw(db, collection_id="c", show_missing=True, order_by="n")
    with pytest.raises(gexc.MethodNotImplemented, match=r"order_by \"n desc\" \(not supported by this local server\)"):
        raw(db, collection_id="c", order_by="n desc")
    assert raw(db, collection_id="c", order_by="__name__") == [("a", True, ["n"])]
    with pytest.raises(gexc.MethodNotImplemented, match="with a read time or transaction"):
        list(db.collection("c").list_documents(read_time=datetime.now(timezone.utc)))
    with pytest.raises(gexc.MethodNotImplemented, match="without a collection_id"):
        raw(db)
    with pytest.raises(gexc.MethodNotImplemented, match="only top-level fields"):
        raw(db, collection_id="c", mask={"field_paths": ["a.b"]})
    with pytest.raises(gexc.InvalidArgument, match="is not projects/{project}/databases/{database}/documents"):
        db._firestore_api.list_documents(request={"parent": "projects/x/databases/y/documents/odd",
                                                  "collection_id": "c"}, metadata=db._rpc_metadata)
