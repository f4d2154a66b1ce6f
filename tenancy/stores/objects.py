"""Moving a tenant's objects between the shared bucket (under `{tenant_id}/`) and its own bucket.

Stores are addressed by URL: `gs://bucket` (Google Cloud Storage, through google-cloud-storage when it is
installed) or a local directory standing for a bucket (`file:///path` or a plain path; dry runs and tests).
A move copies every object, then verifies that both sides hold the same names with the same MD5 checksums;
the source is only deleted by a later, explicit step.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from tenancy.errors import TenancyError

Progress = Callable[[str], None]


class ObjectError(TenancyError):
    exit_code = 1


class Store(Protocol):
    url: str

    def list(self, prefix: str) -> dict[str, str]: ...          # object name -> base64 MD5
    def read(self, name: str) -> bytes: ...
    def write(self, name: str, data: bytes) -> None: ...
    def delete(self, name: str) -> None: ...


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # the form GCS reports


class LocalStore:
    """A directory standing for a bucket: object names are relative paths."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.url = f"file://{self.root}"

    def list(self, prefix: str) -> dict[str, str]:
        if not self.root.exists():
            return {}
        out = {}
        for p in sorted(self.root.rglob("*")):
            if p.is_file():
                name = p.relative_to(self.root).as_posix()
                if name.startswith(prefix):
                    out[name] = _md5(p.read_bytes())
        return out

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def write(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)


class GcsStore:
    """A Cloud Storage bucket (uses Application Default Credentials)."""

    def __init__(self, bucket: str):
        try:
            from google.cloud import storage  # type: ignore[import-not-found]
        except ImportError:
            raise ObjectError("moving objects in gs:// buckets needs the google-cloud-storage package "
                              "(pip install google-cloud-storage); or pass --skip-objects and copy them with "
                              "`gcloud storage cp -r`") from None
        self.bucket = storage.Client().bucket(bucket)
        self.url = f"gs://{bucket}"

    def list(self, prefix: str) -> dict[str, str]:
        return {b.name: b.md5_hash for b in self.bucket.client.list_blobs(self.bucket, prefix=prefix)}

    def read(self, name: str) -> bytes:
        return self.bucket.blob(name).download_as_bytes()

    def write(self, name: str, data: bytes) -> None:
        self.bucket.blob(name).upload_from_string(data)

    def delete(self, name: str) -> None:
        self.bucket.blob(name).delete()


def open_store(url: str) -> Store:
    if url.startswith("gs://"):
        return GcsStore(url[len("gs://"):].strip("/"))
    return LocalStore(url[len("file://"):] if url.startswith("file://") else url)


@dataclass
class ObjectReport:
    copied: int = 0
    bytes: int = 0
    mismatched: list[str] = field(default_factory=list)


def copy_objects(src: Store, src_prefix: str, dst: Store, dst_prefix: str, progress: Progress | None = None) -> ObjectReport:
    """Copy every object under `src_prefix` to `dst_prefix` (same relative names); idempotent."""
    say = progress or (lambda m: None)
    report = ObjectReport()
    existing = dst.list(dst_prefix)
    for name, md5 in src.list(src_prefix).items():
        target = dst_prefix + name[len(src_prefix):]
        if existing.get(target) == md5:
            continue  # already there from an earlier attempt
        data = src.read(name)
        dst.write(target, data)
        report.copied += 1
        report.bytes += len(data)
    say(f"  copied {report.copied} objects ({report.bytes:,} bytes) from {src.url}/{src_prefix} to {dst.url}/{dst_prefix}")
    return report


def verify_objects(src: Store, src_prefix: str, dst: Store, dst_prefix: str) -> tuple[int, list[str]]:
    """(objects on the source, names that are missing or differ on the target)."""
    source = {n[len(src_prefix):]: m for n, m in src.list(src_prefix).items()}
    target = {n[len(dst_prefix):]: m for n, m in dst.list(dst_prefix).items()}
    bad = sorted(n for n, m in source.items() if target.get(n) != m)
    bad += sorted(f"{n} (only on the target)" for n in target if n not in source)
    return len(source), bad


def delete_objects(store: Store, prefix: str) -> int:
    names = list(store.list(prefix))
    for n in names:
        store.delete(n)
    return len(names)
