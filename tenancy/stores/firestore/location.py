"""Where one tenant's documents live (`FirestoreLocation`: project, database, root) in the pooled or the own
layout, and the checks every operation makes first: valid ids, a declared collection tree, a root that is the
tenant's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from tenancy.stores import StoreError


KIND = "firestore"
DEFAULT_COLLECTIONS: dict[str, dict] = {"users": {}, "itineraries": {"notes": {}}, "settings": {}}
POOL_COLLECTION = "tenants"
MARKER_COLLECTION = "_tenancy"
CHANGES_DOC, CHANGES_COLLECTION = "changes", "written"   # {root}/_tenancy/changes/written/{id}
MAX_BATCH = 500                 # Firestore's limit of writes in one commit
LIST_PAGE = 1000                # documents per ListDocuments page


MANIFEST = "manifest.json"
SHOWN = 10                      # documents named in one error line

CHECKSUM_MODULUS = 2 ** 256


_RESERVED_ID = re.compile(r"^__.*__$")
_DATABASE_ID = re.compile(r"^(\(default\)|[a-z][a-z0-9-]{2,61}[a-z0-9])$")


Collections = Mapping[str, "Collections"]


@dataclass(frozen=True)
class FirestoreLocation:
    """One place holding one tenant's documents: `root` is `tenants/{id}` in the pool, "" in an own database."""

    project: str
    database: str
    root: str

    def __post_init__(self) -> None:
        if not isinstance(self.project, str) or not self.project or re.search(r"[/\s]", self.project):
            raise StoreError(f"Firestore location needs a project id (got {self.project!r})")
        if not isinstance(self.database, str) or not _DATABASE_ID.match(self.database):
            raise StoreError(f"firestore {self.project}: database id {self.database!r} is not '(default)' or 4-63 "
                             "lowercase letters, digits and hyphens starting with a letter")
        if not isinstance(self.root, str):
            raise StoreError(f"firestore {self.project}/{self.database}: root must be a string, got {self.root!r}")
        segments = self.root.split("/") if self.root else []
        if len(segments) % 2 or any(not valid_id(s) for s in segments):
            raise StoreError(f"firestore {self.project}/{self.database}: root {self.root!r} is not a document path "
                             f"such as 'tenants/acme' (or '' for a tenant's own database)")

    def __str__(self) -> str:
        return f"firestore {self.project}/{self.database}" + (f" under {self.root}" if self.root else "")

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}" if self.root else relative


def location_for(project: str, database: str, tenant_id: str, pooled: bool) -> FirestoreLocation:
    _check_id(tenant_id, "tenant id")
    return FirestoreLocation(project, database, f"{POOL_COLLECTION}/{tenant_id}" if pooled else "")


def scratch_location(loc: FirestoreLocation, tenant_id: str, label: str) -> FirestoreLocation:
    """A scratch place for a copy of the tenant's documents in the same database, outside every tenant's tree:
    `_tenancy/<label>/tenants/<tenant_id>` (an offboarding restores its archive there to prove it, then discards
    it). Summaries there equal the tenant's own when they hold the same documents."""
    _check_id(tenant_id, "tenant id")
    _check_id(label, "scratch label")
    return FirestoreLocation(loc.project, loc.database, f"{MARKER_COLLECTION}/{label}/{POOL_COLLECTION}/{tenant_id}")


def is_scratch(loc: FirestoreLocation, tenant_id: str) -> bool:
    segments = loc.root.split("/")
    return len(segments) == 4 and segments[0] == MARKER_COLLECTION and segments[2:] == [POOL_COLLECTION, tenant_id]


def valid_id(name: Any) -> bool:
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name
            and not _RESERVED_ID.match(name) and len(name.encode()) <= 1500)


def _check_id(name: Any, what: str) -> None:
    if not valid_id(name):
        raise StoreError(f"{what} {name!r} is not a valid Firestore id (non-empty, no '/', not '.', '..' or __x__)")


def _check_tree(tree: Any, where: str = "collections") -> dict[str, dict]:
    if not isinstance(tree, Mapping) or (where == "collections" and not tree):
        raise StoreError(f"{where} must be a non-empty tree of collection names, e.g. {DEFAULT_COLLECTIONS}")
    out = {}
    for name, sub in tree.items():
        _check_id(name, f"{where}: collection")
        if name == MARKER_COLLECTION:
            raise StoreError(f"{where}: collection {name!r} is reserved for deletion progress; rename it")
        out[name] = _check_tree(sub if sub is not None else {}, f"{where}.{name}")
    return out


def prepare(loc: FirestoreLocation, tenant: str, collections: Any) -> dict[str, dict]:
    """Checks shared by every operation: a valid tree, and a pooled root that belongs to this tenant."""
    if not isinstance(loc, FirestoreLocation):
        raise StoreError(f"expected a FirestoreLocation, got {type(loc).__name__}")
    _check_id(tenant, "tenant id")
    if loc.root and loc.root != f"{POOL_COLLECTION}/{tenant}" and not is_scratch(loc, tenant):
        raise StoreError(f"{loc} is not tenant '{tenant}''s place in the pool ({POOL_COLLECTION}/{tenant}); "
                         "refusing to touch another tenant's documents")
    return _check_tree(collections)


def check_batch(batch_size: int, least: int) -> None:
    if not isinstance(batch_size, int) or not least <= batch_size <= MAX_BATCH:
        raise StoreError(f"batch_size must be between {least} and {MAX_BATCH} (Firestore's limit per commit), "
                         f"got {batch_size!r}")
