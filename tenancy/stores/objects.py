"""A tenant's objects: under `{tenant_id}/` in the shared bucket (pooled), or at the root of its own bucket.

Stores are addressed by URL: `gs://bucket` (Google Cloud Storage) or a local directory standing for a bucket
(`file:///path` or a plain path; dry runs). The store contract (see `tenancy.stores`):

- `summary(store, prefix)`: objects per top-level folder, checksummed over (name relative to the prefix,
  MD5) pairs, so the pooled layout and the own-bucket layout compare equal when they hold the same objects;
- `copy(src, src_prefix, dst, dst_prefix)`: copies what is missing or different, never deletes at the target,
  then re-lists both sides and raises `Mismatch` on any difference (objects only at the target included).
  Bucket to bucket is a server-side rewrite (no bytes through this machine); otherwise objects stream
  through a temporary file. Content type, cache control and custom metadata travel with the object;
- `export(store, prefix, directory)`: files (0600) plus a manifest entry with sizes, MD5 and SHA-256;
- `delete(store, prefix, expect)`: deletes only what still matches the verified summary `expect`.

A prefix always ends in `/`: `acme` means `acme/`, so the neighbour `acme-corp/` and an object named `acme`
are never part of tenant `acme`'s data. Zero-byte "folder" objects (names ending in `/`, such as one named
exactly like the prefix) hold no data, and the prefix itself cannot exist at a bucket root: they are left out
of summaries, copies and exports, and removed by `delete`.

Composite GCS objects have no MD5; they are compared by CRC32C (`crc32c:...`), which only matches another
GCS copy of the same object (a directory store computes MD5).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Protocol

from tenancy.stores import (Mismatch, StoreError, Summary, combine, file_sha256, private_export_dir, private_file,
                            write_manifest)

Progress = Callable[[str], None]
KIND = "objects"
TOP_LEVEL = "."            # the part holding objects directly under the prefix
CHUNK = 1024 * 1024
PARTIAL_DIR = ".tenancy-partial"   # a directory store's in-flight uploads, never listed
SCRATCH_PREFIX = "_tenancy/"       # scratch copies and graph dumps: never a tenant id (ids start with [a-z0-9])


class ObjectError(StoreError):
    pass


@dataclass(frozen=True)
class ObjectInfo:
    name: str                      # full object name in its bucket
    md5: str                       # base64 MD5 as GCS reports it, or "crc32c:<base64>" when GCS has none
    size: int
    updated: datetime | None = None
    generation: int | None = None
    content_type: str | None = None
    cache_control: str | None = None
    metadata: dict[str, str] | None = None


class Store(Protocol):
    url: str

    def objects(self, prefix: str) -> list[ObjectInfo]: ...
    def download(self, name: str, out: IO[bytes]) -> None: ...
    def upload(self, name: str, data: IO[bytes], size: int, like: ObjectInfo | None) -> None: ...
    def copy_in(self, src: "Store", src_name: str, name: str) -> "ObjectInfo | bool": ...
    def delete(self, name: str, generation: int | None = None) -> None: ...
    def info(self, name: str) -> ObjectInfo | None: ...
    # older callers
    def list(self, prefix: str) -> dict[str, str]: ...
    def read(self, name: str) -> bytes: ...
    def write(self, name: str, data: bytes) -> None: ...


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class LocalStore:
    """A directory standing for a bucket: object names are relative paths; no content type or metadata kept."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.url = f"file://{self.root}"

    def objects(self, prefix: str) -> list[ObjectInfo]:
        if not self.root.exists():
            return []
        out = []
        for p in sorted(self.root.rglob("*")):
            rel = p.relative_to(self.root)
            if rel.parts[0] == PARTIAL_DIR or not p.is_file():
                continue
            name = rel.as_posix()
            if name.startswith(prefix):
                h = hashlib.md5()
                with p.open("rb") as f:
                    for chunk in iter(lambda: f.read(CHUNK), b""):
                        h.update(chunk)
                st = p.stat()
                out.append(ObjectInfo(name, _b64(h.digest()), st.st_size,
                                      datetime.fromtimestamp(st.st_mtime, timezone.utc), st.st_mtime_ns))
        return out

    def download(self, name: str, out: IO[bytes]) -> None:
        with (self.root / name).open("rb") as f:
            shutil.copyfileobj(f, out, CHUNK)

    def upload(self, name: str, data: IO[bytes], size: int, like: ObjectInfo | None) -> None:
        # Written aside, then renamed: an interrupted copy never leaves a truncated object under the real name.
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.root / PARTIAL_DIR
        partial.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=partial)
        with os.fdopen(fd, "wb") as f:
            shutil.copyfileobj(data, f, CHUNK)
        os.replace(tmp, path)

    def copy_in(self, src: Store, src_name: str, name: str) -> bool:
        return False

    def info(self, name: str) -> ObjectInfo | None:
        """One object's metadata (None when there is none)."""
        path = self.root / name
        if not path.is_file():
            return None
        h = hashlib.md5()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                h.update(chunk)
        st = path.stat()
        return ObjectInfo(name, _b64(h.digest()), st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc),
                          st.st_mtime_ns)

    def delete(self, name: str, generation: int | None = None) -> None:
        (self.root / name).unlink(missing_ok=True)

    def list(self, prefix: str) -> dict[str, str]:
        return {o.name: o.md5 for o in self.objects(prefix)}

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def write(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def gcs_client():
    """A client for the GCS API server in STORAGE_EMULATOR_HOST (no credentials), else Application Default
    Credentials."""
    try:
        from google.cloud import storage  # type: ignore[import-not-found]
    except ImportError:
        raise ObjectError("gs:// buckets need the google-cloud-storage package (pip install google-cloud-storage); "
                          "or pass --skip objects and copy them with `gcloud storage cp -r`") from None
    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("CLOUDSDK_CORE_PROJECT")
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project or "local", credentials=AnonymousCredentials())
    import google.auth.exceptions

    try:
        return storage.Client(project=project)
    except google.auth.exceptions.DefaultCredentialsError:
        raise ObjectError("no Google Cloud credentials for gs:// buckets: run `gcloud auth application-default "
                          "login` or set GOOGLE_APPLICATION_CREDENTIALS") from None


@contextmanager
def _gcs_errors(what: str) -> Iterator[None]:
    from google.api_core import exceptions as gexc

    try:
        yield
    except gexc.NotFound as exc:
        raise ObjectError(f"{what}: not found ({exc.message})") from None
    except gexc.Forbidden as exc:
        raise ObjectError(f"{what}: permission denied ({exc.message}); grant the caller roles/storage.objectAdmin "
                          "on the bucket") from None
    except gexc.GoogleAPICallError as exc:
        raise ObjectError(f"{what}: {exc.code} {exc.message}") from None


class GcsStore:
    """A Cloud Storage bucket."""

    def __init__(self, bucket: str, client: Any = None):
        self.client = client or gcs_client()
        self.bucket = self.client.bucket(bucket)
        self.url = f"gs://{bucket}"

    @staticmethod
    def _info(blob: Any) -> ObjectInfo:
        return ObjectInfo(name=blob.name, md5=blob.md5_hash or f"crc32c:{blob.crc32c}", size=int(blob.size or 0),
                          updated=blob.updated, generation=blob.generation, content_type=blob.content_type,
                          cache_control=blob.cache_control, metadata=dict(blob.metadata) if blob.metadata else None)

    def objects(self, prefix: str) -> list[ObjectInfo]:
        with _gcs_errors(f"listing {self.url}/{prefix}"):
            return [self._info(b) for b in self.client.list_blobs(self.bucket, prefix=prefix)]

    def download(self, name: str, out: IO[bytes]) -> None:
        with _gcs_errors(f"reading {self.url}/{name}"):
            self.bucket.blob(name).download_to_file(out)   # streamed in chunks, checksum verified

    def upload(self, name: str, data: IO[bytes], size: int, like: ObjectInfo | None) -> None:
        blob = self.bucket.blob(name)
        if like is not None:
            blob.cache_control = like.cache_control
            blob.metadata = like.metadata
        with _gcs_errors(f"writing {self.url}/{name}"):
            blob.upload_from_file(data, size=size, content_type=like.content_type if like else None,
                                  checksum="md5", rewind=False)

    def copy_in(self, src: Store, src_name: str, name: str) -> "ObjectInfo | bool":
        """Server-side rewrite from another bucket: no bytes through this machine, metadata kept. Returns the
        copy's metadata as the rewrite's answer gave it."""
        if not isinstance(src, GcsStore):
            return False
        dst_blob, token = self.bucket.blob(name), None
        with _gcs_errors(f"copying {src.url}/{src_name} to {self.url}/{name}"):
            while True:
                token, _, _ = dst_blob.rewrite(src.bucket.blob(src_name), token=token)
                if token is None:
                    return self._info(dst_blob) if dst_blob.md5_hash or dst_blob.crc32c else True

    def delete(self, name: str, generation: int | None = None) -> None:
        from google.api_core import exceptions as gexc

        try:
            # With the listed generation, an object overwritten since it was verified is not deleted.
            self.bucket.blob(name).delete(if_generation_match=generation)
        except gexc.NotFound:
            pass
        except gexc.PreconditionFailed:
            raise Mismatch(f"{self.url}/{name} was overwritten after it was verified; nothing more deleted. "
                           "Copy and verify again") from None
        except gexc.GoogleAPICallError as exc:
            raise ObjectError(f"deleting {self.url}/{name}: {exc.code} {exc.message}") from None

    def info(self, name: str) -> ObjectInfo | None:
        """One object's metadata (None when there is none)."""
        with _gcs_errors(f"reading {self.url}/{name}"):
            blob = self.bucket.get_blob(name)
        return None if blob is None else self._info(blob)

    def list(self, prefix: str) -> dict[str, str]:
        return {o.name: o.md5 for o in self.objects(prefix)}

    def read(self, name: str) -> bytes:
        with _gcs_errors(f"reading {self.url}/{name}"):
            return self.bucket.blob(name).download_as_bytes()

    def write(self, name: str, data: bytes) -> None:
        with _gcs_errors(f"writing {self.url}/{name}"):
            self.bucket.blob(name).upload_from_string(data)


def open_store(url: str) -> Store:
    if url.startswith("gs://"):
        bucket = url[len("gs://"):].strip("/")
        if not bucket or "/" in bucket:
            raise ObjectError(f"store URL {url!r} must name a bucket only (gs://BUCKET); prefixes are given separately")
        return GcsStore(bucket)
    return LocalStore(url[len("file://"):] if url.startswith("file://") else url)


# --- the store contract ------------------------------------------------------------------------------------------

def normalise_prefix(prefix: str) -> str:
    """'' (a bucket root) or a prefix ending in '/'; a bare tenant id would also match its longer neighbours."""
    if prefix.startswith("/"):
        raise ObjectError(f"object prefix {prefix!r} must not start with '/'")
    return prefix if prefix == "" or prefix.endswith("/") else prefix + "/"


def _relative(objs: list[ObjectInfo], prefix: str) -> tuple[dict[str, ObjectInfo], list[ObjectInfo]]:
    """(relative name -> object, "folder" placeholders: zero-byte objects whose names end in '/')."""
    out, placeholders = {}, []
    for o in objs:
        rel = o.name[len(prefix):]
        if rel == "" or rel.endswith("/"):
            if o.size:
                raise ObjectError(f"object {o.name!r} ends in '/' and holds {o.size} bytes; it cannot be copied as a "
                                  "file or to a bucket root: rename it, then retry")
            placeholders.append(o)
        else:
            out[rel] = o
    return out, placeholders


def _part(rel: str) -> str:
    return rel.split("/", 1)[0] + "/" if "/" in rel else TOP_LEVEL


def _summarise(objs: dict[str, ObjectInfo]) -> Summary:
    grouped: dict[str, list[str]] = {}
    for rel in objs:
        grouped.setdefault(_part(rel), []).append(rel)
    parts = {}
    for name, rels in grouped.items():
        h = hashlib.sha256()
        for rel in sorted(rels):
            h.update(f"{rel}\0{objs[rel].md5}\n".encode())
        times = [objs[r].updated for r in rels if objs[r].updated is not None]
        parts[name] = {"count": len(rels), "checksum": h.hexdigest(), "bytes": sum(objs[r].size for r in rels),
                       "updated_max": max(times).isoformat() if times else None}
    count, checksum = combine(parts)
    return Summary(kind=KIND, count=count, checksum=checksum, parts=parts)


def _listing(store: Store, prefix: str) -> tuple[dict[str, ObjectInfo], list[ObjectInfo]]:
    return _relative(store.objects(prefix), prefix)


def summary(store: Store, prefix: str) -> Summary:
    """What `store` holds under `prefix`, independent of the prefix (see the module docstring)."""
    prefix = normalise_prefix(prefix)
    return _summarise(_listing(store, prefix)[0])


def _refuse_overlap(src: Store, src_prefix: str, dst: Store, dst_prefix: str) -> None:
    if src.url == dst.url and (src_prefix.startswith(dst_prefix) or dst_prefix.startswith(src_prefix)):
        raise ObjectError(f"{src.url}/{src_prefix} and {dst.url}/{dst_prefix} overlap; copy between distinct locations")


def _transfer(src: Store, src_info: ObjectInfo, dst: Store, name: str) -> ObjectInfo | None:
    """Copy one object; the copy's metadata when the store's answer gave it (a server-side rewrite does)."""
    copied = dst.copy_in(src, src_info.name, name)
    if copied:
        return copied if isinstance(copied, ObjectInfo) else None
    with tempfile.TemporaryFile() as tmp:  # bounded memory whatever the object's size
        src.download(src_info.name, tmp)
        size = tmp.tell()
        tmp.seek(0)
        dst.upload(name, tmp, size, src_info)
    return None


def _copy_missing(src: Store, src_prefix: str, dst: Store, dst_prefix: str, changed_since: datetime | None,
                  say: Progress) -> tuple[int, int, int]:
    """(copied, bytes copied, already present) -- only objects missing or different at the target."""
    source, _ = _listing(src, src_prefix)
    target, _ = _listing(dst, dst_prefix)
    copied = nbytes = present = 0
    for rel in sorted(source):
        info = source[rel]
        if changed_since is not None and info.updated is not None and info.updated <= changed_since:
            continue
        if rel in target and target[rel].md5 == info.md5:
            present += 1
            continue  # already there from an earlier attempt
        _transfer(src, info, dst, dst_prefix + rel)
        copied += 1
        nbytes += info.size
    say(f"  copied {copied} objects ({nbytes:,} bytes) from {src.url}/{src_prefix} to {dst.url}/{dst_prefix}"
        f"{f', {present} already there' if present else ''}")
    return copied, nbytes, present


def _compare(src: Store, src_prefix: str, dst: Store, dst_prefix: str) -> tuple[Summary, list[str]]:
    source, _ = _listing(src, src_prefix)
    target, _ = _listing(dst, dst_prefix)
    bad = [f"{n} (missing at the target)" for n in sorted(set(source) - set(target))]
    bad += [f"{n} (different content)" for n in sorted(set(source) & set(target)) if source[n].md5 != target[n].md5]
    bad += [f"{n} (only at the target)" for n in sorted(set(target) - set(source))]
    return _summarise(source), bad


def copy(src: Store, src_prefix: str, dst: Store, dst_prefix: str, *, changed_since: datetime | None = None,
         progress: Progress | None = None) -> Summary:
    """Copy the objects under `src_prefix` to `dst_prefix` (same relative names), then verify both sides.

    Resumable and idempotent: only objects missing or different at the target are copied; nothing is deleted
    at the target. `changed_since` limits the copy to objects updated after it (a short second pass inside a
    write freeze); the verification still covers every object. Returns the (equal) summary of both sides."""
    say = progress or (lambda m: None)
    src_prefix, dst_prefix = normalise_prefix(src_prefix), normalise_prefix(dst_prefix)
    _refuse_overlap(src, src_prefix, dst, dst_prefix)
    _copy_missing(src, src_prefix, dst, dst_prefix, changed_since, say)
    result, bad = _compare(src, src_prefix, dst, dst_prefix)
    if bad:
        raise Mismatch(f"{dst.url}/{dst_prefix} does not match {src.url}/{src_prefix}: {len(bad)} objects differ "
                       f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}); nothing was deleted")
    return result


@dataclass
class Pass:
    """What one pass of a move saw and did: the source's objects as listed, and those it copied (not yet
    verified at the target) or removed there."""

    source: dict[str, ObjectInfo]
    copied: list[str]               # copied, and not known to hold what the listing saw
    removed: list[str]
    transferred: int = 0            # objects this pass copied

    def summary(self) -> Summary:
        return _summarise(self.source)


COPY_THREADS = 4     # objects copied at once (each a request; a bucket serves many)


def _copy_all(src: Store, source: dict[str, ObjectInfo], dst: Store, dst_prefix: str,
              rels: list[str]) -> dict[str, ObjectInfo | None]:
    """rel -> the copy's metadata where the store's answer gave it."""
    if not rels:
        return {}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(COPY_THREADS, len(rels))) as pool:
        return dict(zip(rels, pool.map(lambda rel: _transfer(src, source[rel], dst, dst_prefix + rel), rels)))


def sync_pass(src: Store, src_prefix: str, dst: Store, dst_prefix: str, *, before: Pass | None = None,
              verify: bool = False, progress: Progress | None = None) -> Pass:
    """One pass of a move: the objects missing or different at `dst_prefix` copied, and those found only there
    removed (`dst_prefix` is the move's own copy, which nothing else writes). Without `before` both sides are
    listed: a listing carries every object's MD5, so it compares them all.

    With `before` (the previous pass) only the source is listed: every object that pass found equal is still so
    at the target, so what differs from it, plus what it copied, is copied. With `verify` too (inside the write
    freeze, the source unchanged since its listing) each of those is then compared at the target (its MD5, from
    the copy's answer or read back): a difference raises Mismatch, and the returned pass has nothing left
    unverified."""
    say = progress or (lambda m: None)
    src_prefix, dst_prefix = normalise_prefix(src_prefix), normalise_prefix(dst_prefix)
    _refuse_overlap(src, src_prefix, dst, dst_prefix)
    source, _ = _listing(src, src_prefix)
    if before is None:
        target, _ = _listing(dst, dst_prefix)
        todo = [rel for rel in sorted(source) if rel not in target or target[rel].md5 != source[rel].md5]
        extra = sorted(set(target) - set(source))
    else:
        was = before.source
        todo = sorted({rel for rel in source if rel not in was or was[rel].md5 != source[rel].md5}
                      | {rel for rel in before.copied if rel in source})
        extra = sorted(set(was) - set(source))
    answers = _copy_all(src, source, dst, dst_prefix, todo)
    for rel in extra:
        dst.delete(dst_prefix + rel)
    say(f"  {len(todo)} objects copied to {dst.url}/{dst_prefix}, {len(extra)} removed there ({len(source)} at the source)")
    if not verify:
        # A copy whose answer shows the listed MD5 holds what the listing saw: equal as of it, like the others.
        unsure = [rel for rel in todo if answers.get(rel) is None or answers[rel].md5 != source[rel].md5]
        return Pass(source, unsure, extra, len(todo))
    if before is not None:
        bad = []
        for rel in todo + extra:
            there = answers.get(rel) or dst.info(dst_prefix + rel)
            if rel in source and (there is None or there.md5 != source[rel].md5):
                bad.append(f"{rel} ({'missing at the target' if there is None else 'different content'})")
            elif rel not in source and there is not None:
                bad.append(f"{rel} (only at the target)")
        if bad:
            raise Mismatch(f"{dst.url}/{dst_prefix} does not match {src.url}/{src_prefix}: {len(bad)} objects differ "
                           f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}); nothing was deleted")
        return Pass(source, [], extra, len(todo))
    return Pass(source, todo, extra, len(todo))


def repair(src: Store, src_prefix: str, dst: Store, dst_prefix: str, verified: Summary, switched_at: datetime,
           progress: Progress | None = None) -> tuple[Summary, list[str], list[str]]:
    """After a switch, when the read-only source no longer matches what was verified (an object that reached
    it after the last pass: its writer was told to write it again): each such object is copied to the target
    unless the tenant wrote it there since the switch. Returns (the source's summary now, repaired, left)."""
    src_prefix, dst_prefix = normalise_prefix(src_prefix), normalise_prefix(dst_prefix)
    source, _ = _listing(src, src_prefix)
    now = _summarise(source)
    if now.same_data(verified):
        return now, [], []
    target, _ = _listing(dst, dst_prefix)
    repaired, left = [], []
    for rel in sorted(source):
        t = target.get(rel)
        if t is not None and t.md5 == source[rel].md5:
            continue
        if t is not None and t.updated is not None and t.updated <= switched_at:
            _transfer(src, source[rel], dst, dst_prefix + rel)
            repaired.append(rel)
        else:
            left.append(rel)
    (progress or (lambda m: None))(f"  {dst.url}/{dst_prefix}: {len(repaired)} objects copied again from the read-only "
                                   f"source" + (f"; left as they are: {', '.join(left[:5])}" if left else ""))
    return now, repaired, left


def verify_all(src: Store, src_prefix: str, dst: Store, dst_prefix: str) -> Summary:
    """Both sides listed and compared object by object (MD5); the source's summary, or Mismatch."""
    result, bad = _compare(src, normalise_prefix(src_prefix), dst, normalise_prefix(dst_prefix))
    if bad:
        raise Mismatch(f"{dst.url}/{dst_prefix} does not match {src.url}/{src_prefix}: {len(bad)} objects differ "
                       f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}); nothing was deleted")
    return result


class _HashingFile:
    """Writes through to a file while computing MD5 and SHA-256 (downloads stream into it)."""

    def __init__(self, f: IO[bytes]):
        self.f, self.md5, self.sha256, self.size = f, hashlib.md5(), hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.md5.update(data)
        self.sha256.update(data)
        self.size += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def safe_path(root: Path, rel: str) -> Path:
    segments = rel.split("/")
    bad = next((s for s in segments if s in ("", ".", "..")), None)
    if bad is not None:
        raise ObjectError(f"object name {rel!r} has a {bad or 'empty'!r} path segment and cannot be exported as a "
                          "file; rename it or copy it with `gcloud storage cp`")
    return root.joinpath(*segments)


def export(store: Store, prefix: str, directory: str | Path, progress: Progress | None = None) -> dict[str, Any]:
    """Download every object under `prefix` into `directory` (new or empty; files 0600) and write
    `objects.json` there; returns the manifest entry (names, sizes, MD5, SHA-256, summary)."""
    say = progress or (lambda m: None)
    prefix = normalise_prefix(prefix)
    root = private_export_dir(directory)
    files_dir = root / "objects"
    files_dir.mkdir(mode=0o700)
    objs, _ = _listing(store, prefix)
    files = []
    for rel in sorted(objs):
        info = objs[rel]
        path = safe_path(files_dir, rel)
        try:
            for parent in reversed(path.relative_to(files_dir).parents):
                (files_dir / parent).mkdir(mode=0o700, exist_ok=True)
            out = private_file(path)
        except (FileExistsError, NotADirectoryError):
            raise ObjectError(f"objects {rel!r} and another object both need the path {path}: one name is a "
                              "'directory' of the other; export them with `gcloud storage cp`") from None
        with out:
            h = _HashingFile(out)
            store.download(info.name, h)
        md5 = _b64(h.md5.digest())
        if not info.md5.startswith("crc32c:") and md5 != info.md5:
            raise ObjectError(f"{store.url}/{info.name} changed while it was exported (MD5 {md5} vs {info.md5}); "
                              "export again into a new directory")
        files.append({"name": rel, "path": path.relative_to(root).as_posix(), "size": h.size, "md5": md5,
                      "sha256": h.sha256.hexdigest(), "content_type": info.content_type,
                      "cache_control": info.cache_control, "metadata": info.metadata})
    s = _summarise(objs)
    entry = {"kind": KIND, "source": f"{store.url}/{prefix}", "count": s.count, "bytes": sum(f["size"] for f in files),
             "checksum": s.checksum, "summary": s.to_json(), "files": files}
    write_manifest(root, "objects.json", entry)
    say(f"  exported {len(files)} objects ({entry['bytes']:,} bytes) from {store.url}/{prefix} to {root}")
    return entry


def read_export(directory: str | Path) -> Summary:
    """An export read back: every file against `objects.json` (size and SHA-256); the summary it was taken with."""
    root = Path(directory)
    try:
        entry = json.loads((root / "objects.json").read_text())
    except (OSError, ValueError) as exc:
        raise ObjectError(f"no readable objects.json in {root} ({exc}); export again") from None
    for f in entry["files"]:
        path = safe_path(root, f["path"])
        if not path.is_file() or path.stat().st_size != f["size"] or file_sha256(path) != f["sha256"]:
            raise Mismatch(f"exported object {f['name']} in {root} is missing or changed (size or SHA-256 differs)")
    return Summary.from_json(entry["summary"])


def _is_remainder(now: Summary, expect: Summary) -> bool:
    """Whether `now` can be what an interrupted delete of `expect` left behind: fewer objects in the same parts,
    none written after the newest verified one (a new upload or an overwrite is newer)."""
    if now.count >= expect.count:
        return False
    for name, part in now.parts.items():
        want = expect.parts.get(name)
        if want is None or part["count"] > want["count"]:
            return False
        if part.get("updated_max") and (not want.get("updated_max") or part["updated_max"] > want["updated_max"]):
            return False
    return True


def delete(store: Store, prefix: str, expect: Summary, progress: Progress | None = None) -> int:
    """Delete the objects under `prefix` only if they still match `expect` (a verified summary). Idempotent:
    a re-run after success deletes nothing; a re-run after an interrupted delete finishes it."""
    say = progress or (lambda m: None)
    if expect.kind != KIND:
        raise ObjectError(f"cannot delete objects against a {expect.kind!r} summary")
    prefix = normalise_prefix(prefix)
    objs, placeholders = _listing(store, prefix)
    now = _summarise(objs)
    if not now.same_data(expect):
        if now.count == 0 and not placeholders:
            say(f"  {store.url}/{prefix} holds no objects (already deleted)")
            return 0
        if not (now.count == 0 or _is_remainder(now, expect)):
            diff = now.differences(expect)
            raise Mismatch(f"{store.url}/{prefix} changed since it was verified ({'; '.join(diff[:5])}); nothing "
                           "deleted: copy and verify again, then delete against the new summary")
        say(f"  resuming an interrupted delete: {now.count} of {expect.count} objects left")
    for rel in sorted(objs):
        store.delete(objs[rel].name, objs[rel].generation)
    for p in placeholders:
        store.delete(p.name, p.generation)
    say(f"  deleted {len(objs)} objects from {store.url}/{prefix}")
    return len(objs)


def import_export(directory: str | Path, store: Store, prefix: str, progress: Progress | None = None) -> Summary:
    """Upload an export (`objects.json` and its files) under `prefix`, each object with its exported name, content
    type, cache control and metadata; returns the store's summary, equal to the export's.

    Every file is checked against the manifest (size, SHA-256) before the first upload. Resumable: an object
    already there with the exported MD5 is kept (a re-run after a kill continues). Nothing is overwritten or
    deleted: an object of another content under an exported name, or one the export does not hold, raises
    Mismatch."""
    say = progress or (lambda m: None)
    root, prefix = Path(directory), normalise_prefix(prefix)
    expected = read_export(root)
    entry = json.loads((root / "objects.json").read_text())
    there, _ = _listing(store, prefix)
    exported = {f["name"]: f for f in entry["files"]}
    extra = sorted(set(there) - set(exported))
    clash = sorted(n for n in set(there) & set(exported) if there[n].md5 != exported[n]["md5"])
    if extra or clash:
        shown = [f"{n} (not in the export)" for n in extra] + [f"{n} (different content)" for n in clash]
        raise Mismatch(f"{store.url}/{prefix} already holds objects the export {root} does not: {', '.join(shown[:5])}"
                       f"{', ...' if len(shown) > 5 else ''}; nothing was overwritten or deleted")
    uploaded = nbytes = 0
    for name, f in sorted(exported.items()):
        if name in there:
            continue
        like = ObjectInfo(name, f["md5"], f["size"], content_type=f.get("content_type"),
                          cache_control=f.get("cache_control"), metadata=f.get("metadata"))
        with open(safe_path(root, f["path"]), "rb") as data:
            store.upload(prefix + name, data, f["size"], like)
        uploaded += 1
        nbytes += f["size"]
    result = summary(store, prefix)
    if not result.same_data(expected):
        raise Mismatch(f"{store.url}/{prefix} after the import does not match the export {root}: "
                       f"{'; '.join(expected.differences(result))}")
    say(f"  imported {uploaded} objects ({nbytes:,} bytes) into {store.url}/{prefix}"
        f"{f', {len(there)} already there' if there else ''}")
    return result


def discard(store: Store, prefix: str) -> int:
    """Remove every object under `prefix` without a verified summary: only for a scratch prefix this run made
    (`_tenancy/...`), never a tenant's data."""
    prefix = normalise_prefix(prefix)
    if not prefix.startswith(SCRATCH_PREFIX):
        raise ObjectError(f"refusing to discard {store.url}/{prefix}: only scratch copies under {SCRATCH_PREFIX} are "
                          "discarded whole")
    objs = store.objects(prefix)
    for o in objs:
        store.delete(o.name, o.generation)
    return len(objs)
