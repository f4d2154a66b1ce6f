"""The objects store on gs:// buckets, against a real GCS API server (gcp-storage-emulator)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import stat
import uuid
from datetime import datetime, timezone

import pytest

from tenancy.stores import Mismatch, StoreError, Summary
from tenancy.stores import objects

NAMES = {  # relative name -> content; unicode, spaces, nesting, an empty object
    "readme.txt": b"hello",
    "photos/2024/ünïcødé file.jpg": b"\xff\xd8" + b"x" * 3000,
    "photos/with space/a b.png": b"png" * 100,
    "docs/empty": b"",
    "docs/deep/er/still/nested.json": b'{"a": 1}',
}


def drain(server) -> None:
    """Read the API server's log: tests/servers.py pipes it and never reads it, and a full pipe (64 KB, a few
    hundred requests) blocks the server mid-request."""
    import threading

    if server.proc.stdout is not None and not getattr(server, "_drained", False):
        server._drained = True
        threading.Thread(target=lambda: [None for _ in server.proc.stdout], daemon=True).start()


@pytest.fixture
def client(gcs_server):
    from google.cloud import storage

    drain(gcs_server)
    return storage.Client(project="test")


@pytest.fixture
def make_bucket(client):
    def make(label: str) -> str:
        name = f"{label}-{uuid.uuid4().hex[:10]}"
        client.create_bucket(name)
        return name
    return make


def put(client, bucket: str, name: str, data: bytes, **meta) -> None:
    blob = client.bucket(bucket).blob(name)
    blob.cache_control = meta.get("cache_control")
    blob.metadata = meta.get("metadata")
    blob.upload_from_string(data, content_type=meta.get("content_type", "application/octet-stream"))


def md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


@pytest.fixture
def shared(client, make_bucket):
    """A shared bucket with three tenants, a neighbour whose id extends one of them, and look-alike names."""
    bucket = make_bucket("shared")
    for tenant in ("acme", "globex", "initech"):
        for rel, data in NAMES.items():
            put(client, bucket, f"{tenant}/{rel}", data + tenant.encode(), content_type="image/jpeg",
                cache_control="private, max-age=60", metadata={"owner": tenant})
    put(client, bucket, "acme-corp/readme.txt", b"neighbour")
    put(client, bucket, "acme", b"an object named like the prefix")
    # gcp-storage-emulator keeps "x" and "x/" in one slot, so the "folder" placeholders named exactly like a
    # prefix live under initech/ (no "initech" object); real GCS keeps the two apart.
    put(client, bucket, "initech/", b"")
    put(client, bucket, "initech/photos/", b"")
    return bucket


def test_gcs_store_works_without_credentials_against_the_api_server(shared):
    store = objects.open_store(f"gs://{shared}")
    assert isinstance(store, objects.GcsStore)
    names = sorted(o.name for o in store.objects("globex/"))
    assert names == sorted(f"globex/{n}" for n in NAMES)


def test_summary_is_prefix_exact_and_layout_independent(shared, make_bucket, client):
    store = objects.open_store(f"gs://{shared}")
    s = objects.summary(store, "acme")      # a bare id means "acme/": not acme-corp/, not the object "acme"
    assert s == objects.summary(store, "acme/")
    assert s.kind == "objects" and s.count == len(NAMES)
    assert set(s.parts) == {".", "photos/", "docs/"}
    assert s.parts["photos/"]["count"] == 2 and s.parts["docs/"]["count"] == 2 and s.parts["."]["count"] == 1
    assert s.parts["docs/"]["bytes"] == len(b"acme") + len(b'{"a": 1}acme')
    # the same objects at the root of another bucket summarise identically
    own = make_bucket("own")
    for rel, data in NAMES.items():
        put(client, own, rel, data + b"acme")
    assert objects.summary(objects.open_store(f"gs://{own}"), "").same_data(s)
    assert not objects.summary(store, "globex/").same_data(s)


def test_move_one_tenant_to_its_own_bucket_and_back_leaves_neighbours_untouched(shared, make_bucket, client):
    store = objects.open_store(f"gs://{shared}")
    own = objects.open_store(f"gs://{make_bucket('own')}")
    neighbours = {p: objects.summary(store, p) for p in ("globex/", "initech/", "acme-corp/")}
    before = objects.summary(store, "acme/")

    up = objects.copy(store, "acme/", own, "")
    assert up.same_data(before) and objects.summary(own, "").same_data(before)
    copied = own.bucket.get_blob("photos/2024/ünïcødé file.jpg")
    assert (copied.content_type, copied.cache_control, copied.metadata) == ("image/jpeg", "private, max-age=60", {"owner": "acme"})
    assert copied.download_as_bytes() == NAMES["photos/2024/ünïcødé file.jpg"] + b"acme"
    assert own.bucket.get_blob("docs/empty").size == len(b"acme")

    assert objects.delete(store, "acme/", up) == len(NAMES)
    assert objects.summary(store, "acme/").count == 0
    assert store.bucket.get_blob("acme").download_as_bytes() == b"an object named like the prefix"

    back = objects.copy(own, "", store, "acme/")
    assert back.same_data(before) and objects.summary(store, "acme/").same_data(before)
    assert objects.delete(own, "", back) == len(NAMES)
    assert objects.summary(own, "").count == 0
    assert {p: objects.summary(store, p) for p in neighbours} == neighbours


class FlakyGcs(objects.GcsStore):
    """Fails after `allowed` server-side copies or deletes: an interrupted run."""

    def __init__(self, bucket: str, allowed: int):
        super().__init__(bucket)
        self.allowed, self.calls = allowed, 0

    def _tick(self) -> None:
        self.calls += 1
        if self.calls > self.allowed:
            raise ConnectionError("interrupted")

    def copy_in(self, src, src_name, name):
        self._tick()
        return super().copy_in(src, src_name, name)

    def delete(self, name, generation=None):
        self._tick()
        super().delete(name, generation)


def test_interrupted_copy_resumes_and_copies_only_the_rest(shared, make_bucket):
    store = objects.open_store(f"gs://{shared}")
    own_name = make_bucket("own")
    with pytest.raises(ConnectionError):
        objects.copy(store, "acme/", FlakyGcs(own_name, allowed=2), "")
    own = objects.open_store(f"gs://{own_name}")
    assert objects.summary(own, "").count == 2
    said: list[str] = []
    result = objects.copy(store, "acme/", own, "", progress=said.append)
    assert result.same_data(objects.summary(store, "acme/"))
    assert said == [f"  copied {len(NAMES) - 2} objects ({sum(len(d) + 4 for r, d in sorted(NAMES.items())[2:]):,} bytes) "
                    f"from gs://{shared}/acme/ to gs://{own_name}/, 2 already there"]
    said.clear()
    objects.copy(store, "acme/", own, "", progress=said.append)  # a re-run after success copies nothing
    assert said[0].startswith(f"  copied 0 objects (0 bytes)") and said[0].endswith(f"{len(NAMES)} already there")


def test_objects_only_at_the_target_are_a_mismatch_and_are_kept(shared, make_bucket, client):
    store = objects.open_store(f"gs://{shared}")
    own_name = make_bucket("own")
    put(client, own_name, "stray.txt", b"left by someone")
    own = objects.open_store(f"gs://{own_name}")
    with pytest.raises(Mismatch, match=r"1 objects differ \(stray.txt \(only at the target\)\); nothing was deleted"):
        objects.copy(store, "acme/", own, "")
    assert own.bucket.get_blob("stray.txt").download_as_bytes() == b"left by someone"
    assert objects.summary(own, "").count == len(NAMES) + 1


def test_delete_is_refused_after_a_new_upload_or_an_overwrite(shared, client):
    store = objects.open_store(f"gs://{shared}")
    verified = objects.summary(store, "globex/")
    put(client, shared, "globex/photos/new.jpg", b"uploaded after verification")
    with pytest.raises(Mismatch, match=r"changed since it was verified \(photos/: 3 vs 2\); nothing deleted"):
        objects.delete(store, "globex/", verified)
    assert objects.summary(store, "globex/").count == len(NAMES) + 1

    verified = objects.summary(store, "initech/")
    put(client, shared, "initech/readme.txt", b"overwritten")
    with pytest.raises(Mismatch, match=r"\.: same count \(1\), different checksum"):
        objects.delete(store, "initech/", verified)
    assert store.bucket.get_blob("initech/readme.txt").download_as_bytes() == b"overwritten"


def test_interrupted_delete_resumes_but_not_after_new_data(shared, client):
    verified = objects.summary(objects.open_store(f"gs://{shared}"), "globex/")
    with pytest.raises(ConnectionError):
        objects.delete(FlakyGcs(shared, allowed=2), "globex/", verified)
    store = objects.open_store(f"gs://{shared}")
    assert objects.summary(store, "globex/").count == len(NAMES) - 2
    said: list[str] = []
    assert objects.delete(store, "globex/", verified, progress=said.append) == len(NAMES) - 2
    assert said[0] == f"  resuming an interrupted delete: {len(NAMES) - 2} of {len(NAMES)} objects left"
    assert objects.delete(store, "globex/", verified) == 0            # idempotent

    placeholders = objects.summary(store, "initech/")                # "folder" objects hold no data
    assert placeholders.count == len(NAMES) and store.bucket.get_blob("initech/photos/") is not None
    assert objects.delete(store, "initech/", placeholders) == len(NAMES)
    assert [o.name for o in store.objects("initech")] == []             # placeholders went with the tenant
    for rel, data in NAMES.items():
        put(client, shared, f"initech/{rel}", data)

    verified = objects.summary(store, "initech/")
    with pytest.raises(ConnectionError):
        objects.delete(FlakyGcs(shared, allowed=1), "initech/", verified)
    put(client, shared, "initech/readme.txt", b"written during the interruption")
    with pytest.raises(Mismatch, match="changed since it was verified"):
        objects.delete(store, "initech/", verified)


def test_delete_against_a_summary_of_another_kind_is_refused(shared):
    store = objects.open_store(f"gs://{shared}")
    with pytest.raises(StoreError, match="cannot delete objects against a 'postgres' summary"):
        objects.delete(store, "acme/", Summary(kind="postgres", count=0, checksum=""))


def test_changed_since_copies_only_objects_updated_after_it(shared, make_bucket, client):
    store = objects.open_store(f"gs://{shared}")
    own = objects.open_store(f"gs://{make_bucket('own')}")
    objects.copy(store, "acme/", own, "")
    first_pass = max(o.updated for o in store.objects("acme/"))
    put(client, shared, "acme/readme.txt", b"changed in the freeze")
    put(client, shared, "acme/docs/late.txt", b"added in the freeze")
    said: list[str] = []
    result = objects.copy(store, "acme/", own, "", changed_since=first_pass, progress=said.append)
    assert said[0].startswith("  copied 2 objects (")
    assert result.same_data(objects.summary(own, "")) and result.count == len(NAMES) + 1


def test_streamed_copies_between_a_directory_and_a_bucket(shared, make_bucket, tmp_path):
    store = objects.open_store(f"gs://{shared}")
    big = os.urandom(9 * 1024 * 1024)   # above the client's multipart limit: a resumable, chunked upload
    local = objects.open_store(str(tmp_path / "bucket"))
    for rel, data in {**NAMES, "big/blob.bin": big}.items():
        local.write(f"t/{rel}", data)
    own = objects.open_store(f"gs://{make_bucket('own')}")
    s = objects.copy(local, "t/", own, "")
    assert s.count == len(NAMES) + 1 and own.bucket.get_blob("big/blob.bin").md5_hash == md5(big)
    back = objects.open_store(str(tmp_path / "back"))
    assert objects.copy(own, "", back, "x/").same_data(s)
    assert (tmp_path / "back" / "x" / "big" / "blob.bin").read_bytes() == big
    assert not list((tmp_path / "back" / objects.PARTIAL_DIR).iterdir())   # no partial files left behind
    # GCS -> directory -> GCS keeps the object names and content of a tenant prefix
    assert objects.copy(store, "initech/", back, "i/").same_data(objects.summary(store, "initech/"))


def test_export_writes_private_files_whose_checksums_match_the_manifest(shared, tmp_path):
    store = objects.open_store(f"gs://{shared}")
    out = tmp_path / "export"
    entry = objects.export(store, "acme/", out)
    assert entry["kind"] == "objects" and entry["source"] == f"gs://{shared}/acme/" and entry["count"] == len(NAMES)
    assert entry["checksum"] == objects.summary(store, "acme/").checksum
    assert json.loads((out / "objects.json").read_text()) == entry
    assert stat.S_IMODE((out / "objects.json").stat().st_mode) == 0o600
    assert sorted(f["name"] for f in entry["files"]) == sorted(NAMES)
    for f in entry["files"]:
        path = out / f["path"]
        data = path.read_bytes()
        assert data == NAMES[f["name"]] + b"acme"
        assert (f["size"], f["md5"], f["sha256"]) == (len(data), md5(data), hashlib.sha256(data).hexdigest())
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700, path.parent
        assert f["content_type"] == "image/jpeg" and f["metadata"] == {"owner": "acme"}
    with pytest.raises(StoreError, match="is not empty"):
        objects.export(store, "acme/", out)


class HostileListing(objects.LocalStore):
    """A bucket holding the legal GCS name `t/../../etc/passwd` (the API server here cannot serve such names)."""

    def objects(self, prefix):
        return super().objects(prefix) + [objects.ObjectInfo("t/../../etc/passwd", md5(b"nope"), 4)]


def test_export_refuses_names_that_escape_the_directory(tmp_path):
    store = HostileListing(tmp_path / "bucket")
    store.write("t/ok.txt", b"ok")
    with pytest.raises(StoreError, match=r"object name '../../etc/passwd' has a '..' path segment"):
        objects.export(store, "t/", tmp_path / "e")
    assert not (tmp_path / "etc").exists()


def test_placeholder_with_data_and_overlapping_locations_are_refused(make_bucket, client):
    bucket = make_bucket("odd")
    put(client, bucket, "t/", b"data in a folder object")
    store = objects.open_store(f"gs://{bucket}")
    with pytest.raises(StoreError, match=r"object 't/' ends in '/' and holds 23 bytes"):
        objects.summary(store, "t/")
    with pytest.raises(StoreError, match=r"overlap; copy between distinct locations"):
        objects.copy(store, "", store, "t/")


def test_bad_locations_give_one_line_errors(gcs_server, monkeypatch):
    drain(gcs_server)
    with pytest.raises(StoreError, match=r"must name a bucket only \(gs://BUCKET\)"):
        objects.open_store("gs://bucket/acme")
    missing = objects.open_store(f"gs://missing-{uuid.uuid4().hex[:8]}")
    with pytest.raises(StoreError, match=r"^listing gs://missing-\w+/acme/: not found"):
        objects.summary(missing, "acme")
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")
    with pytest.raises(StoreError, match=r"no Google Cloud credentials for gs:// buckets"):
        objects.open_store("gs://bucket")
