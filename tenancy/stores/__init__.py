"""Where a tenant's data lives, one store kind per module (or package), behind one small interface.

A tenant's data is the unit that moves, verifies, exports and is deleted. It lives in up to five stores:

    kind        module        pooled location                       own location (namespace / dedicated)
    postgres    postgres/     pooled database, rows by tenant_id    postgres-1..3, rows by tenant_id
    objects     objects/      shared bucket, under `{tenant_id}/`   the tenant's bucket, at its root
    firestore   firestore/    pooled database, `tenants/{id}/...`   the tenant's database, at its root
    graph       graph.py      (none: the pool has no graph)         Neo4j in the tenant's namespace

Every store kind offers the same operations on a *location* (one place holding one tenant's data):

- `summary(tenant)` counts and checksums what the location holds for the tenant (per table, collection,
  prefix), in a form that does not depend on the location's layout, so two locations compare equal
  exactly when they hold the same data;
- `copy(source, target, tenant)` is resumable and idempotent (a re-run after a kill continues, a re-run
  after success copies nothing);
- `export(location, tenant, directory)` writes files plus a manifest entry with counts and checksums;
- `delete(location, tenant, expect)` deletes only when the location still matches `expect`, a summary
  taken by a verification: nothing is deleted that was not verified, and nothing written since is lost.

Summaries are plain data (`Summary`), so a lifecycle phase can journal them and a later phase (or a
re-run after a kill) can delete against them.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from tenancy.errors import TenancyError

Progress = Callable[[str], None]


class StoreError(TenancyError):
    exit_code = 1


class Mismatch(StoreError):
    """Two locations (or a location and the summary it was verified with) do not hold the same data."""


@dataclass(frozen=True)
class Summary:
    """What one location holds for one tenant: total items, a checksum over all of them, per-part detail.

    `parts` maps a layout-independent part name (a table, a collection path, "objects") to
    {"count": n, "checksum": "..."}; `count` and `checksum` cover every part."""

    kind: str
    count: int
    checksum: str
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Summary":
        return cls(kind=data["kind"], count=int(data["count"]), checksum=data["checksum"], parts=dict(data.get("parts", {})))

    def same_data(self, other: "Summary") -> bool:
        return self.kind == other.kind and self.count == other.count and self.checksum == other.checksum

    def differences(self, other: "Summary") -> list[str]:
        """Human-readable differences per part ("app.users: 10 vs 9 rows")."""
        out = []
        for part in sorted(set(self.parts) | set(other.parts)):
            a, b = self.parts.get(part, {"count": 0, "checksum": ""}), other.parts.get(part, {"count": 0, "checksum": ""})
            if a.get("count") != b.get("count"):
                out.append(f"{part}: {a.get('count')} vs {b.get('count')}")
            elif a.get("checksum") != b.get("checksum"):
                out.append(f"{part}: same count ({a.get('count')}), different checksum")
        if not out and not self.same_data(other):
            out.append(f"{self.count} vs {other.count} items, checksums {self.checksum[:12]} vs {other.checksum[:12]}")
        return out


def combine(parts: dict[str, dict[str, Any]]) -> tuple[int, str]:
    """(total count, checksum over the parts' names, counts and checksums) -- order-independent."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(parts):
        h.update(f"{name}\0{parts[name]['count']}\0{parts[name]['checksum']}\n".encode())
    return sum(int(p["count"]) for p in parts.values()), h.hexdigest()


def private_export_dir(directory: str | Path) -> Path:
    """An export directory only its owner can read (0700): created, or an existing empty one.

    Refuses a non-empty directory, so one tenant's export never overwrites or mixes with another's."""
    path = Path(directory)
    try:
        if path.exists():
            if not path.is_dir():
                raise StoreError(f"export directory {path} exists and is not a directory; choose a new directory")
            if any(path.iterdir()):
                raise StoreError(f"export directory {path} is not empty; give a new (or empty) directory so no "
                                 "earlier export is overwritten")
        else:
            path.mkdir(parents=True, mode=0o700)
        os.chmod(path, stat.S_IRWXU)
    except OSError as exc:
        raise StoreError(f"cannot prepare export directory {path}: {exc.strerror}") from None
    return path


def private_file(path: Path):
    """Open a new file for writing, readable by its owner only (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (export files are checked against their manifests with it)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(directory: Path, name: str, manifest: dict[str, Any]) -> Path:
    path = directory / name
    with private_file(path) as f:
        f.write((json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    return path
