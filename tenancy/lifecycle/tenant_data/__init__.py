"""A tenant's data as one unit: its stores on each side of a move, paired, with one interface per store.

The stores come from the data layout (`stores.yaml`, `tenancy.stores.layout.stores_for`) -- the same list the
tenant's directory entry publishes -- never from a hand-written list here.

    handles.py   one interface per store kind (`Handle`: PostgreSQL rows, bucket objects, Firestore documents,
                 the graph) and how this run reaches them (`Reach`)
    pairs.py     a move's source stores paired with their targets, and what the target plan cannot hold
    exports.py   every store into one archive indexed by `archive.json`, read back, or checked whole

Callers use the names below through this package (`from tenancy.lifecycle import tenant_data as data`).
"""

from __future__ import annotations

from tenancy.lifecycle.tenant_data.exports import (ARCHIVE_INDEX, MANIFESTS, export_all, export_archive, read_archive,
                                                   verify_archive, verify_archive_at)
from tenancy.lifecycle.tenant_data.handles import (KINDS, FirestoreHandle, GraphHandle, Handle, ObjectsHandle, PgHandle,
                                                   Reach, Say, archived, handles, kind_of, require_same, unreachable)
from tenancy.lifecycle.tenant_data.pairs import Pair, StorePairing, pair_stores

__all__ = ["ARCHIVE_INDEX", "KINDS", "MANIFESTS", "FirestoreHandle", "GraphHandle", "Handle", "ObjectsHandle", "Pair",
           "PgHandle", "Reach", "Say", "StorePairing", "archived", "export_all", "export_archive", "handles",
           "kind_of", "pair_stores", "read_archive", "require_same", "unreachable", "verify_archive",
           "verify_archive_at"]
