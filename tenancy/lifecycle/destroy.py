"""Destroying a tenant stack only when every stateful resource it holds is saved or explicitly discarded.

The destroy is previewed first. Each stateful resource it would remove belongs to one of the tenant's
stores (its PostgreSQL databases, bucket, Firestore database, graph); the destroy proceeds only when each
of those stores is covered -- its data moved and verified, exported and verified, or discarded by an
explicit per-store flag -- and then releases protection of exactly those resources, one by one.
"""

from __future__ import annotations

import re
from typing import Callable, Mapping

from tenancy.catalog import Catalog
from tenancy.engine import Change, Engine, OpResult
from tenancy.lifecycle import Refused

STORES = ("postgres-1", "postgres-2", "postgres-3", "objects", "firestore", "graph")
_PG = re.compile(r"(postgres-\d)")


def store_of(change: Change) -> str | None:
    """Which of the tenant's stores a stateful resource holds (None: not tenant data)."""
    name = change.urn.rsplit("::", 1)[-1]
    t = change.type
    if t in ("gcp:sql/databaseInstance:DatabaseInstance", "gcp:sql/database:Database"):
        m = _PG.search(name)
        return m.group(1) if m else "postgres-1"
    if t == "gcp:storage/bucket:Bucket":
        return "objects"
    if t == "gcp:firestore/database:Database":
        return "firestore"
    if t == "kubernetes:core/v1:PersistentVolumeClaim" or (t == "kubernetes:helm.sh/v3:Release" and name.endswith("neo4j")):
        return "graph"
    return None


def uncovered(preview: OpResult, covered: Mapping[str, str]) -> list[tuple[Change, str | None]]:
    """Stateful resources the destroy would remove whose store is not covered."""
    out = []
    for c in preview.changes:
        if c.op != "delete" or not c.stateful:
            continue
        store = store_of(c)
        if store is None or store not in covered:
            out.append((c, store))
    return out


def guarded_destroy(engine: Engine, stack: str, catalog: Catalog, covered: Mapping[str, str],
                    say: Callable[[str], None] | None = None) -> OpResult:
    """Preview the destroy, refuse unless every stateful resource's store is covered, then destroy.

    `covered` maps a store to how it was saved ("moved and verified (move …)", "exported to DIR",
    "discarded by --discard graph")."""
    say = say or (lambda m: None)
    preview = engine.preview_destroy(stack, catalog)
    missing = uncovered(preview, covered)
    if missing:
        lines = "; ".join(f"{c.type.rsplit(':', 1)[-1]} {c.urn.rsplit('::', 1)[-1]} ({store or 'unknown store'})"
                          for c, store in missing)
        stores = sorted({s for _, s in missing if s})
        raise Refused(f"destroying '{stack}' would remove data that is neither moved, exported nor discarded: {lines}. "
                      f"Export it (--export-to DIR) or discard it explicitly ({' '.join('--discard ' + s for s in stores)}); "
                      "nothing was destroyed")
    release = [c.urn for c in preview.changes if c.op == "delete" and c.stateful]
    for c in preview.changes:
        if c.op == "delete" and c.stateful:
            say(f"  {c.urn.rsplit('::', 1)[-1]}: {covered[store_of(c) or '']}")
    return engine.destroy(stack, catalog, release=release)
