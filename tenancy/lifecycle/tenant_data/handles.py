"""A tenant's stores, one interface per store kind (`Handle`), and how this run reaches them (`Reach`).

Each store is a `Handle` with the same four operations whatever its kind (PostgreSQL rows, bucket objects,
Firestore documents, the graph):

    summary()        counts and checksums of what it holds for the tenant (layout-independent)
    export(dir)      files plus a manifest entry with counts and checksums
    verify_export()  the export read back and compared with the store now
    delete(expect)   only while the store still holds exactly `expect` (a verified summary)

and, to bring an archive back (`tenancy restore`, an offboarding's restore check):

    archived(dir)    what the store's export holds, every file checked against its manifest (no store is read)
    import_export()  the export loaded into the store, verified against the export's counts and checksums
    scratch(label)   the same kind of store at a scratch place beside it (a prefix, a document root), for a trial
                     restore that is then discarded whole; PostgreSQL rehearses in a rolled-back transaction instead
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from tenancy.db import describe_dsn
from tenancy.lifecycle import Refused
from tenancy.stores import Mismatch, Summary, file_sha256
from tenancy.stores import firestore as fs
from tenancy.stores import objects as obj
from tenancy.stores import postgres as pg
from tenancy.stores.layout import POOLED, TenantStores, graph_dump_object

Say = Callable[[str], None]
KINDS = ("postgres", "objects", "firestore", "graph")


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

    def archived(self, directory: Path) -> Summary:
        return archived(directory, self.kind, self.tenant)

    def import_export(self, directory: Path, say: Say) -> Summary:
        return pg.import_export(directory, self.dsn, self.tenant, say)

    def rehearse(self, directory: Path, say: Say) -> Summary:
        return pg.import_export(directory, self.dsn, self.tenant, say, rehearse=True)

    def clear(self, say: Say) -> None:
        say(f"  {self.name}: {pg.delete(self.dsn, self.tenant, tables=list(self.tables))} rows removed")


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
        return require_same(obj.read_export(directory), self.summary(), f"the objects export in {directory}", self.tenant)

    def delete(self, expect: Summary, say: Say) -> int:
        return obj.delete(self.store, self.prefix, expect, progress=say)

    def archived(self, directory: Path) -> Summary:
        return archived(directory, self.kind, self.tenant)

    def import_export(self, directory: Path, say: Say) -> Summary:
        return obj.import_export(directory, self.store, self.prefix, progress=say)

    def scratch(self, label: str) -> "ObjectsHandle":
        return ObjectsHandle(self.tenant, self.bucket, f"{obj.SCRATCH_PREFIX}{label}/", self.reach, self.name)

    def discard(self) -> int:
        return obj.discard(self.store, self.prefix)

    def clear(self, say: Say) -> None:
        self.delete(self.summary(), say)


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
        return require_same(Summary.from_json(manifest), self.summary(), f"the Firestore export in {directory}", self.tenant)

    def delete(self, expect: Summary, say: Say) -> int:
        return fs.delete(self.location, self.tenant, self.collections, expect, progress=say)

    def archived(self, directory: Path) -> Summary:
        return archived(directory, self.kind, self.tenant)

    def import_export(self, directory: Path, say: Say) -> Summary:
        return fs.import_export(directory, self.location, self.tenant, self.collections, progress=say)

    def scratch(self, label: str) -> "FirestoreHandle":
        return FirestoreHandle(self.tenant, fs.scratch_location(self.location, self.tenant, label), self.collections,
                               self.name)

    def discard(self) -> int:
        return fs.discard(self.location, self.tenant, self.collections)

    def clear(self, say: Say) -> None:
        fs.clear(self.location, self.tenant, self.collections, progress=say)

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

    def archived(self, directory: Path) -> Summary:
        return archived(directory, self.kind, self.tenant)

    def import_export(self, directory: Path, say: Say) -> Summary:
        """The dump uploaded into the tenant's bucket (checked against the archive's MD5), loaded by the
        neo4j-admin load Job, then removed from the bucket; the dump's summary."""
        from tenancy.stores import graph
        if self.runner is None:
            raise Refused(f"tenant '{self.tenant}': loading its graph runs a neo4j-admin load Job in namespace "
                          f"{self.namespace}; give --kubeconfig (or --skip graph)")
        folder = self._object().rsplit("/", 1)[0] + "/"
        dump = obj.import_export(directory, self.store, folder, progress=say)
        job = graph.load(self.runner, self.tenant, self.namespace, self.bucket, self._object())
        self.store.delete(self._object())   # loaded: the bucket keeps only the tenant's objects
        say(f"  graph loaded by Job {job}")
        return dump


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


def unreachable(stores: TenantStores, reach: Reach) -> list[str]:
    """Store names of `stores` this run cannot reach (skipped kind, or no DSN for the database)."""
    found = handles(stores, reach)
    return [n for n in stores.names if n not in found and (n not in stores.postgres or stores.postgres[n])]

def require_same(a: Summary, b: Summary, what: str, tenant: str) -> Summary:
    """`a` when it holds the same data as `b`; Mismatch naming `what` and the differences otherwise."""
    if not a.same_data(b):
        raise Mismatch(f"tenant '{tenant}': {what} does not match: {'; '.join(a.differences(b))}; nothing was deleted")
    return a


def archived(folder: Path, kind: str, tenant: str) -> Summary:
    """What one store's export holds, every file checked against its manifest; no store is contacted."""
    if kind == "postgres":
        return pg.read_export_manifest(folder, tenant)[1]
    if kind == "firestore":
        manifest = _manifest(folder, fs.MANIFEST)
        for name, digest in (manifest.get("files") or {}).items():
            path = folder / name
            if not path.is_file():
                raise Mismatch(f"exported file {path} is missing")
            if file_sha256(path) != digest:
                raise Mismatch(f"exported file {path} changed (sha256 differs)")
        return Summary.from_json(manifest)
    s = obj.read_export(folder)
    if kind == "graph" and (not s.count or not all(p.get("bytes", 1) for p in s.parts.values())):
        raise Mismatch(f"the graph dump in {folder} is empty")
    return s


def _manifest(directory: Path, name: str) -> dict[str, Any]:
    try:
        return json.loads((directory / name).read_text())
    except OSError as exc:
        raise Mismatch(f"{directory / name}: {exc.strerror}") from None
    except ValueError:
        raise Mismatch(f"{directory / name} is not valid JSON") from None
