"""A move's stores paired: each source store with the target store that takes its data (`Pair`: copy, verify,
clear the target's partial copy on abort), and what the target plan cannot hold (a table of a feature the
pooled plan lacks, the graph) left unpaired: it must be empty, or exported and explicitly discarded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tenancy.lifecycle.tenant_data.handles import (FirestoreHandle, Handle, ObjectsHandle, PgHandle, Reach, Say,
                                                   handles, require_same)
from tenancy.stores import StoreError, Summary
from tenancy.stores import firestore as fs
from tenancy.stores import objects as obj
from tenancy.stores import postgres as pg
from tenancy.stores.layout import TenantStores


@dataclass
class Pair:
    """One source store and the target store that takes its data in a move."""

    source: Handle
    target: Handle
    covers: tuple[str, ...]                # the source's store names this pair carries (for the destroy guard)

    @property
    def name(self) -> str:
        return self.source.name if self.source.kind != "postgres" else f"{self.source.name}->{self.target.name}"

    def copy(self, say: Say, **pg_args: Any) -> dict[str, Any]:
        s, t = self.source, self.target
        if isinstance(s, PgHandle) and isinstance(t, PgHandle):
            report, _ = pg.copy_verified(s.dsn, t.dsn, s.tenant, list(s.tables), progress=say, **pg_args)
            return {"rows": report.total_rows}
        if isinstance(s, ObjectsHandle) and isinstance(t, ObjectsHandle):
            return {"objects": obj.copy(s.store, s.prefix, t.store, t.prefix, progress=say).count}
        if isinstance(s, FirestoreHandle) and isinstance(t, FirestoreHandle):
            return {"documents": fs.copy(s.location, t.location, s.tenant, s.collections, progress=say).count}
        raise StoreError(f"cannot copy {s.describe()} to {t.describe()}")

    def verify(self) -> Summary:
        """Both sides' summaries; the source's when they hold the same data, Mismatch otherwise."""
        a, b = self.source.summary(), self.target.summary()
        return require_same(a, b, f"{self.target.describe()} (copy of {self.source.describe()})", self.source_tenant)

    @property
    def source_tenant(self) -> str:
        return getattr(self.source, "tenant")

    def clear_target(self, say: Say) -> None:
        """Abort: remove the target's copy (the source is untouched)."""
        t = self.target
        if isinstance(t, PgHandle):
            pg.delete(t.dsn, t.tenant, tables=list(t.tables))
        else:
            t.delete(t.summary(), say)


@dataclass
class StorePairing:
    """A tenant's stores across a move: which source store goes to which target, and what stays behind."""

    pairs: list[Pair]
    left: dict[str, Handle] = field(default_factory=dict)      # source stores the target plan cannot hold
    sources: dict[str, Handle] = field(default_factory=dict)   # every reachable source store
    unreached: list[str] = field(default_factory=list)         # target stores that would receive data, not reachable


def pair_stores(before: TenantStores, after: TenantStores, reach: Reach,
                target_reach: Reach | None = None) -> StorePairing:
    """Pair each source store with its target; what the target cannot hold is left over. `target_reach` reaches
    the target side when its store names are the source's too (a pooled tenant between two pool shards)."""
    src, dst = handles(before, reach), handles(after, target_reach or reach)
    pairs: list[Pair] = []
    left: dict[str, Handle] = {}
    unreached: list[str] = []
    # PostgreSQL: tables go to the database the target layout assigns; one pair per (source, target) database.
    where = {table: name for name, tables in after.postgres.items()
             for table in (after.pool_holds if after.pooled else tables)}
    grouped: dict[tuple[str, str], list[str]] = {}
    for name, h in src.items():
        if not isinstance(h, PgHandle):
            continue
        stay = [t for t in h.tables if t not in where]
        if stay:
            left[name] = PgHandle(name, h.tenant, h.dsn, tuple(stay))
        for table in h.tables:
            if table in where and where[table] in dst:
                grouped.setdefault((name, where[table]), []).append(table)
            elif table in where and where[table] not in unreached:
                unreached.append(where[table])
    by_dsns: dict[tuple[str, str], Pair] = {}
    for (s_name, d_name), tables in grouped.items():
        s, d = src[s_name], dst[d_name]
        key = (s.dsn, d.dsn)   # two stores in one database (a test, a small install) move in one pair
        if key in by_dsns:
            p = by_dsns[key]
            p.source = PgHandle(p.source.name, s.tenant, s.dsn, (*p.source.tables, *tables))
            p.target = PgHandle(p.target.name, d.tenant, d.dsn, (*p.target.tables, *tables))
            p.covers = tuple(sorted({*p.covers, s_name}))
        else:
            by_dsns[key] = Pair(PgHandle(s_name, s.tenant, s.dsn, tuple(tables)),
                                PgHandle(d_name, d.tenant, d.dsn, tuple(tables)), (s_name,))
    pairs.extend(by_dsns.values())
    for kind in ("objects", "firestore"):
        if kind in src and kind in dst:
            pairs.append(Pair(src[kind], dst[kind], (kind,)))
    if "graph" in src and "graph" not in dst:
        left["graph"] = src["graph"]
    return StorePairing(pairs, left, src, sorted(unreached))
