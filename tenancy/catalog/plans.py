"""Plans: the isolation model each maps to, the nodes its tenants run on, the features it offers, its limits
(and how far a tenant may override them), and the built-in plans."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from pydantic import Field, model_validator

from tenancy.catalog.values import Strict


class Model(str, Enum):
    """The isolation model a plan maps to."""

    POOLED = "pooled"
    NAMESPACE = "namespace"
    DEDICATED = "dedicated"


class NodeIsolation(str, Enum):
    """Which nodes a plan's tenant workloads run on (a kernel boundary is the isolation that matters)."""

    SHARED = "shared"        # the pooled deployment's own nodes: pooled plans only
    SANDBOX = "sandbox"      # GKE Sandbox (gVisor) node pool shared by namespace tenants
    DEDICATED = "dedicated"  # a node pool of the tenant's own, tainted so nobody else schedules there


# A plan that does not say gets the strongest isolation its model offers.
DEFAULT_NODE_ISOLATION = {
    Model.POOLED: NodeIsolation.SHARED,
    Model.NAMESPACE: NodeIsolation.SANDBOX,
    Model.DEDICATED: NodeIsolation.DEDICATED,
}


class Feature(str, Enum):
    """Application features a plan may allow and a tenant may enable."""

    CORE = "core"
    COMMENTS = "comments"
    LIKES = "likes"
    RECOMMENDATIONS = "recommendations"  # needs the graph database: not on pooled plans
    API_ACCESS = "api-access"
    DATA_EXPORT = "data-export"
    SSO = "sso"
    AUDIT_LOG = "audit-log"


# Features that need per-tenant infrastructure and therefore cannot be offered on a pooled plan.
DEDICATED_INFRA_FEATURES = frozenset({Feature.RECOMMENDATIONS})


LIMIT_FIELDS: dict[str, str] = {
    "api_rate_limit": "API requests per minute",
    "storage_gb": "object and database storage quota in GB",
    "cpu": "CPU cores the tenant's namespace may request",
    "memory_gb": "memory in GB the tenant's namespace may request",
    "pods": "maximum number of pods",
    "pvcs": "maximum number of persistent volume claims",
    "services": "maximum number of services",
    "backup_retention_days": "days of database backups kept",
}


# (lower bound, upper bound, whole number?) per limit. Upper bounds are sane maxima: a typo of three
# extra zeros is caught here rather than as a quota nobody can pay for.
LIMIT_RANGES: dict[str, tuple[float, float, bool]] = {
    "api_rate_limit": (1, 10_000_000, True),
    "storage_gb": (1, 1_000_000, True),
    "cpu": (0, 4096, False),          # lower bound exclusive: more than 0 cores
    "memory_gb": (0, 65536, False),   # lower bound exclusive
    "pods": (1, 100_000, True),
    "pvcs": (0, 100_000, True),
    "services": (1, 10_000, True),    # Kubernetes is tested to 10,000 Services per cluster
    "backup_retention_days": (1, 365, True),
}


def _limit(key: str, optional: bool = False) -> Any:
    """The type of one limit. Strict: `true`, "5" and (for counts) 5.5 are not numbers; no .inf or .nan."""
    low, high, whole = LIMIT_RANGES[key]
    if whole:
        field = Field(strict=True, ge=low, le=high, description=LIMIT_FIELDS[key])
        return Annotated[int | None, field] if optional else Annotated[int, field]
    field = Field(strict=True, gt=low, le=high, allow_inf_nan=False, description=LIMIT_FIELDS[key])
    return Annotated[float | None, field] if optional else Annotated[float, field]


class Limits(Strict):
    """A plan's limits: every value is required."""

    api_rate_limit: _limit("api_rate_limit")
    storage_gb: _limit("storage_gb")
    cpu: _limit("cpu")
    memory_gb: _limit("memory_gb")
    pods: _limit("pods")
    pvcs: _limit("pvcs")
    services: _limit("services")
    backup_retention_days: _limit("backup_retention_days")


class LimitOverrides(Strict):
    """A tenant's overrides of its plan's limits: each optional, each within the plan's bounds."""

    api_rate_limit: _limit("api_rate_limit", optional=True) = None
    storage_gb: _limit("storage_gb", optional=True) = None
    cpu: _limit("cpu", optional=True) = None
    memory_gb: _limit("memory_gb", optional=True) = None
    pods: _limit("pods", optional=True) = None
    pvcs: _limit("pvcs", optional=True) = None
    services: _limit("services", optional=True) = None
    backup_retention_days: _limit("backup_retention_days", optional=True) = None

    def set_values(self) -> dict[str, float]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


DatabaseName = Annotated[str, Field(pattern=r"^postgres-[1-9]$", description="a dedicated PostgreSQL instance role")]


class Plan(Strict):
    """A commercial plan: which isolation model it uses, its limits and what tenants may enable."""

    model: Model = Field(description="isolation model: pooled, namespace or dedicated")
    description: str = ""
    limits: Limits
    max_limits: Limits | None = Field(
        default=None,
        description="upper bounds for tenant overrides; when absent, overrides may only lower the plan's limits",
    )
    features: tuple[Feature, ...] = Field(description="features tenants on this plan may enable")
    databases: tuple[DatabaseName, ...] = Field(
        default=(), description="dedicated PostgreSQL instances; pooled plans share the pool and list none"
    )
    high_availability: bool = Field(default=False, strict=True, description="REGIONAL (HA) database instances")
    node_isolation: NodeIsolation | None = Field(
        default=None,
        description="nodes the tenants' workloads run on: shared (pooled plans only), sandbox (GKE Sandbox node "
        "pool) or dedicated (a tainted node pool per tenant); default: shared for pooled, sandbox for namespace, "
        "dedicated for dedicated plans",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_node_isolation(cls, data: Any) -> Any:
        # Filled in before validation so that Plan.node_isolation is always a NodeIsolation once loaded.
        if isinstance(data, dict) and data.get("node_isolation") is None:
            try:
                model = Model(data.get("model"))
            except ValueError:
                return data  # the model error is reported on its own
            data = {**data, "node_isolation": DEFAULT_NODE_ISOLATION[model]}
        return data

    @model_validator(mode="after")
    def _coherent(self) -> "Plan":
        if self.model is Model.POOLED and self.node_isolation is not NodeIsolation.SHARED:
            raise ValueError(f"a pooled plan runs every tenant in the shared deployment, so node_isolation "
                             f"'{self.node_isolation.value}' cannot apply; use shared or model namespace/dedicated")
        if self.model is not Model.POOLED and self.node_isolation is NodeIsolation.SHARED:
            raise ValueError(f"node_isolation shared is for pooled plans; a {self.model.value} plan uses sandbox or dedicated")
        if self.model is Model.POOLED and self.databases:
            raise ValueError("a pooled plan shares the pooled database; remove 'databases' or use model namespace/dedicated")
        if self.model is not Model.POOLED and not self.databases:
            raise ValueError(f"a {self.model.value} plan needs its database set, e.g. databases: [postgres-1, postgres-2, postgres-3]")
        bad = sorted(f.value for f in self.features if f in DEDICATED_INFRA_FEATURES) if self.model is Model.POOLED else []
        if bad:
            raise ValueError(f"feature(s) {', '.join(bad)} need per-tenant infrastructure; remove them from this pooled plan")
        if len(set(self.databases)) != len(self.databases):
            raise ValueError("databases are listed twice; list each postgres-N once")
        return self

    @property
    def bounds(self) -> Limits:
        return self.max_limits or self.limits


_ALL = tuple(Feature)
BUILTIN_PLANS: dict[str, Plan] = {
    "free": Plan(
        model=Model.POOLED,
        description="Free: shared namespace, row-level isolation in the pooled database",
        limits=Limits(api_rate_limit=100, storage_gb=1, cpu=0.5, memory_gb=1, pods=1, pvcs=0, services=1, backup_retention_days=7),
        features=(Feature.CORE, Feature.COMMENTS, Feature.LIKES),
        node_isolation=NodeIsolation.SHARED,
    ),
    "standard": Plan(
        model=Model.NAMESPACE,
        description="Standard: namespace-per-tenant in the shared cluster with dedicated databases",
        limits=Limits(api_rate_limit=1000, storage_gb=50, cpu=4, memory_gb=8, pods=50, pvcs=10, services=10, backup_retention_days=30),
        max_limits=Limits(api_rate_limit=5000, storage_gb=500, cpu=16, memory_gb=64, pods=200, pvcs=40, services=40, backup_retention_days=90),
        features=(Feature.CORE, Feature.COMMENTS, Feature.LIKES, Feature.RECOMMENDATIONS, Feature.API_ACCESS, Feature.DATA_EXPORT),
        databases=("postgres-1", "postgres-2", "postgres-3"),
        node_isolation=NodeIsolation.SANDBOX,
    ),
    "enterprise": Plan(
        model=Model.DEDICATED,
        description="Enterprise: dedicated cluster, optionally in its own project; HA databases",
        limits=Limits(api_rate_limit=10000, storage_gb=1000, cpu=64, memory_gb=256, pods=500, pvcs=100, services=100, backup_retention_days=365),
        max_limits=Limits(api_rate_limit=100000, storage_gb=100000, cpu=1024, memory_gb=4096, pods=5000, pvcs=2000, services=1000, backup_retention_days=365),
        features=_ALL,
        databases=("postgres-1", "postgres-2", "postgres-3"),
        high_availability=True,
        node_isolation=NodeIsolation.DEDICATED,
    ),
}
