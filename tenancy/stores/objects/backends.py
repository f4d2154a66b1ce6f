"""Where objects are kept: the `Store` interface and its two kinds, a Cloud Storage bucket (`gs://bucket`) and a
local directory standing for one (`file:///path` or a plain path; dry runs), opened by URL.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, IO, Iterator, Protocol

from tenancy.stores import Mismatch, StoreError


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


def b64(digest: bytes) -> str:
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
                out.append(ObjectInfo(name, b64(h.digest()), st.st_size,
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
        return ObjectInfo(name, b64(h.digest()), st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc),
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
