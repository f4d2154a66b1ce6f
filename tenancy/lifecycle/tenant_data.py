"""A tenant's data as one unit: its stores on each side of a move, paired, with one interface per store.

The stores come from the data layout (`stores.yaml`, `tenancy.stores.layout.stores_for`) -- the same list the
tenant's directory entry publishes -- never from a hand-written list here. Each store is a `Handle` with the
same four operations whatever its kind (PostgreSQL rows, bucket objects, Firestore documents, the graph):

    summary()        counts and checksums of what it holds for the tenant (layout-independent)
    export(dir)      files plus a manifest entry with counts and checksums
    verify_export()  the export read back and compared with the store now
    delete(expect)   only while the store still holds exactly `expect` (a verified summary)

A move pairs each source store with the target store that takes its data (`Pair`: copy, verify, clear the
target's partial copy on abort). What the target plan cannot hold (a table of a feature the pooled plan lacks,
the graph) is left unpaired: it must be empty, or exported and explicitly discarded.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from tenancy.db import describe_dsn
from tenancy.lifecycle import Refused
from tenancy.stores import Mismatch, StoreError, Summary, file_sha256, private_export_dir, write_manifest
from tenancy.stores import firestore as fs
from tenancy.stores import objects as obj
from tenancy.stores import postgres as pg
from tenancy.stores.layout import POOLED, TenantStores, graph_dump_object

Say = Callable[[str], None]
KINDS = ("postgres", "objects", "firestore", "graph")
ARCHIVE_INDEX = "archive.json"


def kind_of(store: str) -> str:
    return "postgres" if store == POOLED or store.startswith("postgres-") else store


@dataclass
class Reach:
    """How this run reaches the stores.

    `dsns` maps "pooled" and "postgres-N" to DSNs (owner role, through the Cloud SQL Auth Proxy); `objects_root`
    makes every bucket a directory under it (dry runs; None: gs://); `graph_runner` runs the Neo4j dump Job;
    `skip` names store kinds this run does not carry (said loudly; their data stays where it is)."""

    dsns: Mapping[str, str]
    objects_root: str | None = None
    graph_runner: Any = None
    skip: frozenset[str] = frozenset()
    _stores: dict[str, obj.Store] = field(default_factory=dict, repr=False, compare=False)

    def bucket(self, name: str) -> obj.Store:
        """One store (and client) per bucket for the whole run, opened when first used: a command refused
        early needs no credentials."""
        if name not in self._stores:
            self._stores[name] = obj.open_store(str(Path(self.objects_root) / name) if self.objects_root else f"gs://{name}")
        return self._stores[name]


class Handle(Protocol):
    name: str
    kind: str

    def describe(self) -> str: ...
    def summary(self) -> Summary: ...
    def export(self, directory: Path, say: Say) -> dict[str, Any]: ...
    def verify_export(self, directory: Path, entry: dict[str, Any]) -> Summary: ...
    def delete(self, expect: Summary, say: Say) -> int: ...


@dataclass
class PgHandle:
    name: str
    tenant: str
    dsn: str
    tables: tuple[str, ...]
    kind: str = "postgres"

    def describe(self) -> str:
        return f"{self.name} ({describe_dsn(self.dsn)}: {', '.join(self.tables)})"

    def summary(self) -> Summary:
        return pg.summary(self.dsn, self.tenant, list(self.tables))

    def export(self, directory: Path, say: Say) -> dict[str, Any]:
        manifest = pg.export(self.dsn, self.tenant, directory, progress=say, tables=list(self.tables))
        return {"kind": self.kind, "directory": directory.name, **manifest["summary"],
                "tables": {k: {"rows": v["rows"], "rowChecksum": v["rowChecksum"]} for k, v in manifest["tables"].items()}}

    def verify_export(self, directory: Path, entry: dict[str, Any]) -> Summary:
        return pg.verify_export(directory, self.dsn, self.tenant)

    def delete(self, expect: Summary, say: Say) -> int:
        n = pg.delete(self.dsn, self.tenant, expect=expect, tables=list(self.tables))
        say(f"  {self.name}: {n} rows deleted")
        return n


@dataclass
class ObjectsHandle:
    tenant: str
    bucket: str
    prefix: str
    reach: Reach
    name: str = "objects"
    kind: str = "objects"

    @property
    def store(self) -> obj.Store:
        return self.reach.bucket(self.bucket)

    def describe(self) -> str:
        return f"objects ({self.store.url}/{self.prefix})"

    def summary(self) -> Summary:
        return obj.summary(self.store, self.prefix)

    def export(self, directory: Path, say: Say) -> dict[str, Any]:
        entry = obj.export(self.store, self.prefix, directory, progress=say)
        return {"kind": self.kind, "directory": directory.name, **entry["summary"]}

    def verify_export(self, directory: Path, entry: dict[str, Any]) -> Summary:
        return _same(obj.read_export(directory), self.summary(), f"the objects export in {directory}", self.tenant)

    def delete(self, expect: Summary, say: Say) -> int:
        return obj.delete(self.store, self.prefix, expect, progress=say)


@dataclass
class FirestoreHandle:
    tenant: str
    location: fs.FirestoreLocation
    collections: dict
    name: str = "firestore"
    kind: str = "firestore"

    def describe(self) -> str:
        return str(self.location)

    def summary(self) -> Summary:
        return fs.summary(self.location, self.tenant, self.collections)

    def export(self, directory: Path, say: Say) -> dict[str, Any]:
        entry = fs.export(self.location, self.tenant, self.collections, directory)
        say(f"  exported {entry['count']} documents from {self.location}")
        return {"kind": self.kind, "directory": directory.name, "count": entry["count"], "checksum": entry["checksum"],
                "parts": entry["parts"]}

    def verify_export(self, directory: Path, entry: dict[str, Any]) -> Summary:
        manifest = json.loads((directory / fs.MANIFEST).read_text())
        for name, digest in manifest["files"].items():
            if file_sha256(directory / name) != digest:
                raise Mismatch(f"tenant '{self.tenant}': exported file {directory / name} changed (sha256 differs)")
        return _same(Summary.from_json(manifest), self.summary(), f"the Firestore export in {directory}", self.tenant)

    def delete(self, expect: Summary, say: Say) -> int:
        return fs.delete(self.location, self.tenant, self.collections, expect, progress=say)

    def problems(self) -> list[str]:
        """What a move, export or delete of this store would leave behind (documents outside the declared tree)."""
        return [f"firestore ({self.location}): {line}" for line in fs.unmovable(self.location, self.tenant, self.collections)]


@dataclass
class GraphHandle:
    """The tenant's Neo4j: exported by a neo4j-admin dump Job into its bucket, then into the archive."""

    tenant: str
    namespace: str
    bucket: str
    reach: Reach
    name: str = "graph"
    kind: str = "graph"

    @property
    def store(self) -> obj.Store:
        return self.reach.bucket(self.bucket)

    @property
    def runner(self) -> Any:
        return self.reach.graph_runner

    def describe(self) -> str:
        return f"graph (Neo4j in namespace {self.namespace})"

    def _object(self) -> str:
        return graph_dump_object(self.tenant)

    def summary(self) -> Summary:
        from tenancy.stores import graph
        return graph.summary(self.store, self._object())

    def export(self, directory: Path, say: Say) -> dict[str, Any]:
        from tenancy.stores import graph
        if self.runner is None:
            raise Refused(f"tenant '{self.tenant}' has a graph: exporting it runs a neo4j-admin dump Job in namespace "
                          f"{self.namespace}; give --kubeconfig (or --discard graph to let it go)")
        dumped = graph.export(self.runner, self.tenant, self.namespace, self.bucket, object_name=self._object(),
                              store=self.store)
        entry = obj.export(self.store, self._object().rsplit("/", 1)[0] + "/", directory, progress=say)
        self.store.delete(self._object())   # the dump lives on in the archive; the bucket keeps only tenant objects
        say(f"  graph dumped by Job {dumped['job']}: {dumped['size']:,} bytes")
        return {"kind": self.kind, "directory": directory.name, **entry["summary"], "job": dumped["job"], "md5": dumped["md5"]}

    def verify_export(self, directory: Path, entry: dict[str, Any]) -> Summary:
        dump = obj.read_export(directory)
        if not dump.count or not all(p.get("bytes", 1) for p in dump.parts.values()):
            raise Mismatch(f"tenant '{self.tenant}': the graph dump in {directory} is empty")
        return dump

    def delete(self, expect: Summary, say: Say) -> int:
        return 0   # the graph goes with the tenant stack's destroy, once exported or discarded


def handles(stores: TenantStores, reach: Reach) -> dict[str, Handle]:
    """Every store of `stores` this run can reach, by store name (skipped kinds and missing DSNs left out)."""
    out: dict[str, Handle] = {}
    t = stores.tenant
    if "postgres" not in reach.skip:
        for name, tables in stores.postgres.items():
            dsn = reach.dsns.get(name)
            if dsn and tables:
                out[name] = PgHandle(name, t, dsn, tables)
    if "objects" not in reach.skip:
        out["objects"] = ObjectsHandle(t, stores.bucket, stores.prefix, reach)
    if "firestore" not in reach.skip:
        loc = fs.FirestoreLocation(stores.firestore_project, stores.firestore_database, stores.firestore_root)
        out["firestore"] = FirestoreHandle(t, loc, stores.collections)
    if stores.graph and "graph" not in reach.skip:
        out["graph"] = GraphHandle(t, stores.namespace, stores.bucket, reach)
    return out


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
        return _same(a, b, f"{self.target.describe()} (copy of {self.source.describe()})", self.source_tenant)

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
class MovePlan:
    pairs: list[Pair]
    left: dict[str, Handle] = field(default_factory=dict)      # source stores the target plan cannot hold
    sources: dict[str, Handle] = field(default_factory=dict)   # every reachable source store
    unreached: list[str] = field(default_factory=list)         # target stores that would receive data, not reachable


def plan_move(before: TenantStores, after: TenantStores, reach: Reach, target_reach: Reach | None = None) -> MovePlan:
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
    return MovePlan(pairs, left, src, sorted(unreached))


def unreachable(stores: TenantStores, reach: Reach) -> list[str]:
    """Store names of `stores` this run cannot reach (skipped kind, or no DSN for the database)."""
    found = handles(stores, reach)
    return [n for n in stores.names if n not in found and (n not in stores.postgres or stores.postgres[n])]


# --- archive ------------------------------------------------------------------------------------------------------

def export_all(found: Mapping[str, Handle], archive: Path, tenant: str, operation: str, discarded: list[str],
               say: Say) -> dict[str, Any]:
    """Every store into its own directory of a new private archive, plus `archive.json` listing each store
    with its counts and checksums. Resumable: a store whose export completed is kept, a half-written one is
    redone; an archive of another tenant or operation is refused."""
    index_path = archive / ARCHIVE_INDEX
    if archive.exists() and any(archive.iterdir()):
        try:
            index = json.loads(index_path.read_text())
        except (OSError, ValueError):
            index = {}
        if (index.get("tenant"), index.get("operation")) != (tenant, operation):
            raise StoreError(f"export directory {archive} is not empty and is not this operation's archive; give a new "
                             "(or empty) directory so no earlier export is overwritten")
    else:
        private_export_dir(archive)
        index = {"tenant": tenant, "operation": operation, "stores": {}, "discarded": sorted(discarded)}
        write_manifest(archive, ARCHIVE_INDEX, index)
    for name, h in found.items():
        done = archive / f".{name}.json"
        if done.exists():
            index["stores"][name] = json.loads(done.read_text())
            continue
        folder = archive / name
        if folder.exists():   # an export killed half-way: this store again
            shutil.rmtree(folder)
        say(f"  exporting {h.describe()}")
        entry = h.export(folder, say)
        write_manifest(archive, done.name, entry)
        index["stores"][name] = entry
    index_path.unlink()
    write_manifest(archive, ARCHIVE_INDEX, index)
    return index


def verify_archive(found: Mapping[str, Handle], archive: Path) -> dict[str, Summary]:
    """Each store's export read back and compared with the store now; the verified summaries."""
    index = json.loads((archive / ARCHIVE_INDEX).read_text())
    out = {}
    for name, h in found.items():
        entry = index["stores"].get(name)
        if entry is None:
            raise Mismatch(f"the archive {archive} has no export of {h.describe()}; nothing was deleted")
        out[name] = h.verify_export(archive / name, entry)
    return out


def _same(a: Summary, b: Summary, what: str, tenant: str) -> Summary:
    if not a.same_data(b):
        raise Mismatch(f"tenant '{tenant}': {what} does not match: {'; '.join(a.differences(b))}; nothing was deleted")
    return a
