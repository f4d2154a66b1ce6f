"""The application's data layout (`stores.yaml`) and, from it, the stores one tenant has on its plan.

`stores.yaml` says which PostgreSQL tables hold tenant rows and in which of a tenant's own databases
(`postgres-1..3`) each lives, which of them the pool holds (a table tied to a feature is in the pool only for
pooled plans allowing that feature), the Firestore collections, and which feature brings the graph.

`stores_for(tenant, ...)` turns that into the tenant's stores -- the list its directory entry publishes and
every lifecycle command iterates over:

    store        pooled tenant                               namespace / dedicated tenant
    postgres-N   `pooled`: the pooled database (a move in      each of its databases with the tables it holds
                 fills the tables the plan's features allow)
    objects      gs://<shared bucket>/<tenant_id>/           gs://<its bucket>/
    firestore    pooled database, under tenants/<tenant_id>  its own database, at the root
    graph        (none)                                      Neo4j in its namespace, when the plan has the feature
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from tenancy import naming
from tenancy.catalog import Feature, Model, Tenant
from tenancy.errors import ConfigError

LAYOUT_FILE = Path(__file__).resolve().parents[2] / "stores.yaml"
POOLED = "pooled"           # the store name of the pooled database
_TABLE = re.compile(r"[a-z_][a-z0-9_]{0,62}\.[a-z_][a-z0-9_]{0,62}")
_DATABASE = re.compile(r"postgres-[1-9]")


@dataclass(frozen=True)
class TableLayout:
    name: str                 # schema.table
    database: str             # postgres-N of a tenant with its own databases
    feature: str | None       # the pool holds it only for pooled plans allowing this feature


@dataclass(frozen=True)
class DataLayout:
    tables: tuple[TableLayout, ...]
    collections: dict[str, dict]
    graph_feature: str

    def database_of(self, table: str, databases: tuple[str, ...]) -> str:
        t = next(x for x in self.tables if x.name == table)
        return t.database if t.database in databases else databases[0]

    def pooled_tables(self, features: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(t.name for t in self.tables if t.feature is None or t.feature in features)


@dataclass(frozen=True)
class TenantStores:
    """The stores one tenant has on one plan: names as the directory publishes them, no credentials."""

    tenant: str
    pooled: bool
    postgres: dict[str, tuple[str, ...]]         # store ("pooled" or "postgres-N") -> tables it has
    pool_holds: tuple[str, ...]                  # pooled: the tables its plan's features allow (a move in fills these)
    bucket: str                                  # gs:// bucket name
    prefix: str                                  # "<tenant_id>/" in the shared bucket, "" in its own
    firestore_project: str
    firestore_database: str
    firestore_root: str                          # "tenants/<tenant_id>" in the pool, "" in its own database
    graph: bool
    namespace: str
    collections: dict[str, dict] = field(default_factory=dict)
    pool_shard: str | None = None                # pooled: its pool shard ("pool-1")

    def database(self, store: str) -> tuple[str, str]:
        """(the registry's name of the database holding `store`, the unit it serves): 'pool-1' for a pooled
        tenant's rows, '<tenant>/postgres-N' for a database of its own."""
        if self.pooled:
            shard = self.pool_shard or naming.pool_shard(1)
            return shard, shard
        return f"{self.tenant}/{store}", f"tenant:{self.tenant}"

    @property
    def names(self) -> list[str]:
        """Store names, as `--discard` and the destroy guard name them."""
        return [*self.postgres, "objects", "firestore", *(["graph"] if self.graph else [])]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "postgres": {k: list(self.pool_holds if self.pooled else v) for k, v in self.postgres.items()},
            "objects": f"gs://{self.bucket}/{self.prefix}",
            "firestore": {"project": self.firestore_project, "database": self.firestore_database,
                          "root": self.firestore_root, "collections": sorted(self.collections)},
        }
        if self.graph:
            out["graph"] = {"namespace": self.namespace, "dump": f"gs://{self.bucket}/{graph_dump_object(self.tenant)}"}
        return out


def registry_entry(stores: TenantStores) -> dict[str, Any]:
    """What the registry records of where a tenant's stores are: the directory's names plus, per PostgreSQL store,
    the registry's name of its database (how an operation or the application reaches it)."""
    return {**stores.to_json(), "databases": {store: stores.database(store)[0] for store in stores.postgres}}


def graph_dump_object(tenant_id: str) -> str:
    """Where a graph dump of the tenant is written in its own bucket before the graph is removed."""
    return f"_tenancy/graph/{tenant_id}/neo4j.dump"


def stores_for(tenant: Tenant, env: str, platform_project: str, layout: DataLayout | None = None,
               pool_shard: str | None = None) -> TenantStores:
    """`pool_shard`: a pooled tenant's shard (tenancy/fleet/placement.py); pool-1 when not given."""
    layout = layout or load_layout()
    features = tuple(f.value for f in tenant.features)
    if tenant.model is Model.POOLED:
        shard = pool_shard or naming.pool_shard(1)
        return TenantStores(
            tenant.id, True, {POOLED: tuple(t.name for t in layout.tables)},
            layout.pooled_tables(tuple(f.value for f in tenant.plan.features)),
            naming.pool_bucket(env, platform_project, shard), f"{tenant.id}/", platform_project,
            naming.pool_firestore(env, shard), f"tenants/{tenant.id}", False, naming.pool_namespace(shard),
            layout.collections, shard)
    databases = tuple(tenant.plan.databases)
    postgres: dict[str, tuple[str, ...]] = {db: () for db in databases}
    for t in layout.tables:
        db = layout.database_of(t.name, databases)
        postgres[db] = (*postgres[db], t.name)
    project = (tenant.dedicated.project.id if tenant.dedicated and tenant.dedicated.project else None) or platform_project
    return TenantStores(
        tenant.id, False, postgres, (), naming.bucket(env, tenant.id), "", project, naming.firestore_database(env, tenant.id),
        "", layout.graph_feature in features and tenant.model is not Model.POOLED, naming.namespace(tenant.id),
        layout.collections)


@lru_cache(maxsize=4)
def load_layout(path: Path = LAYOUT_FILE) -> DataLayout:
    where = path.name
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{where}: cannot read the data layout: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or data.get("version") != 1:
        raise ConfigError(f"{where}: needs `version: 1` and the postgres, firestore and graph sections")
    problems = []
    features = {f.value for f in Feature}
    tables = []
    for name, spec in (data.get("postgres") or {}).items():
        if not isinstance(name, str) or not _TABLE.fullmatch(name):
            problems.append(f"{where}: postgres: {str(name)[:60]!r} is not a lowercase schema.table name")
            continue
        spec = spec or {}
        db, feature = spec.get("database"), spec.get("feature")
        if set(spec) - {"database", "feature"}:
            problems.append(f"{where}: postgres.{name}: unknown keys {sorted(set(spec) - {'database', 'feature'})}")
        if not isinstance(db, str) or not _DATABASE.fullmatch(db):
            problems.append(f"{where}: postgres.{name}.database must be postgres-1 .. postgres-9")
        if feature is not None and feature not in features:
            problems.append(f"{where}: postgres.{name}.feature '{str(feature)[:60]}' is not a feature ({', '.join(sorted(features))})")
        tables.append(TableLayout(name, str(db), feature))
    if not tables:
        problems.append(f"{where}: postgres: list at least one table")
    collections = data.get("firestore") or {}
    if not isinstance(collections, dict) or not collections:
        problems.append(f"{where}: firestore: declare the tenant's collections, e.g. {{users: {{}}}}")
    graph = (data.get("graph") or {}).get("feature")
    if graph not in features:
        problems.append(f"{where}: graph.feature must be a feature ({', '.join(sorted(features))})")
    if problems:
        raise ConfigError("\n".join(problems))
    return DataLayout(tuple(tables), collections, graph)
