"""The tenant catalogue: `tenants.yaml` parsed into validated, frozen models.

Loading happens in two passes so that one run reports every problem, not only the first:
  1. structure: YAML syntax, then the pydantic models (types, formats, unknown keys);
  2. meaning: rules that need the whole file (plans exist, features allowed by the plan, limit
     overrides within the plan's bounds, custom domains only on dedicated plans, uniqueness).
Every problem becomes one `Problem` naming the file, the line, the tenant (its id, or its position when
the id itself is bad), the field, and what to do.

The file is untrusted input (it arrives in pull requests): before anything is built from it, its size
is capped; then its YAML event stream is walked once, without recursion, and anchors and aliases
(billion laughs), nesting deeper than a catalogue needs, and lists or mappings used as keys are refused
before the loader composes anything. A file of nothing but plain mappings, lists and scalars (every
valid catalogue) is built in that same walk; at the first event that is anything else, the walk stops
and the file is checked and loaded the long way, which refuses or reports it. Values echoed in messages
are cut short, so a huge value never lands in a message.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Iterable, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from tenancy import naming
from tenancy.errors import CatalogError, Problem

SCHEMA_PATH = "schemas/tenants.schema.json"
CATALOG_VERSION = 1

# Every pattern is applied with fullmatch: `$` alone would also match before a trailing newline.
ID_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
EMAIL_PATTERN = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")
DOMAIN_PATTERN = re.compile(r"(?=.{4,253}\Z)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
GCP_PROJECT_PATTERN = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
PLAN_NAME_PATTERN = re.compile(r"[a-z][a-z0-9-]{1,30}")

# Untrusted-input limits (see the module docstring). A real catalogue is about 6 levels deep and
# 100 bytes per tenant, so these leave room for tens of thousands of tenants.
MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_DEPTH = 20
ECHO_CHARS = 60
# Past this many problems a file is not a catalogue with typos; stop rather than print a million lines.
MAX_PROBLEMS = 100


def echo(value: Any) -> str:
    """A value as a message quotes it: cut to ECHO_CHARS with an ellipsis, control characters escaped
    (a newline in a value must not split a problem over two lines)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return {"inf": ".inf", "-inf": "-.inf"}.get(str(value), ".nan")
    if isinstance(value, (dict, list, tuple)):
        return "a mapping" if isinstance(value, dict) else "a list"
    text = str(value)
    cut = text[:ECHO_CHARS] + ("…" if len(text) > ECHO_CHARS else "")
    return "'" + "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut) + "'"

# Google Cloud regions. A region outside this list is almost always a typo ("europe-west" or "us-east").
GCP_REGIONS = frozenset({
    "africa-south1", "asia-east1", "asia-east2", "asia-northeast1", "asia-northeast2", "asia-northeast3",
    "asia-south1", "asia-south2", "asia-southeast1", "asia-southeast2", "australia-southeast1",
    "australia-southeast2", "europe-central2", "europe-north1", "europe-north2", "europe-southwest1",
    "europe-west1", "europe-west2", "europe-west3", "europe-west4", "europe-west6", "europe-west8",
    "europe-west9", "europe-west10", "europe-west12", "me-central1", "me-central2", "me-west1",
    "northamerica-northeast1", "northamerica-northeast2", "northamerica-south1", "southamerica-east1",
    "southamerica-west1", "us-central1", "us-east1", "us-east4", "us-east5", "us-south1", "us-west1",
    "us-west2", "us-west3", "us-west4",
})


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


class State(str, Enum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    OFFBOARDED = "offboarded"


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


class Strict(BaseModel):
    """One strict base: unknown keys are errors, values are immutable once loaded."""

    # Pattern fields use pydantic's Rust regex engine, where `$` matches only at the very end (a trailing
    # newline does not pass); pinned here because the Python engine would let it through.
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False, regex_engine="rust-regex")


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


class ProjectSettings(Strict):
    """Where a dedicated tenant's resources live: an existing project, or a new one created for it."""

    id: str | None = Field(default=None, description="GCP project id (existing, or the id to create)")
    create: bool = Field(default=False, strict=True, description="create the project (needs folder_id and billing_account)")
    folder_id: str | None = Field(default=None, pattern=r"^[0-9]{6,20}$", description="folder for a created project")
    billing_account: str | None = Field(
        default=None, pattern=r"^[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}$", description="billing account for a created project"
    )

    @field_validator("id")
    @classmethod
    def _project_id(cls, v: str | None) -> str | None:
        if v is not None and not GCP_PROJECT_PATTERN.fullmatch(v):
            raise ValueError(f"{echo(v)} is not a GCP project id (6-30 characters: lowercase letters, digits, hyphens; starts with a letter)")
        return v

    @model_validator(mode="after")
    def _complete(self) -> "ProjectSettings":
        if self.create and not (self.folder_id and self.billing_account):
            raise ValueError("create: true needs folder_id and billing_account")
        if not self.create and (self.folder_id or self.billing_account):
            raise ValueError("folder_id and billing_account only apply with create: true")
        if not self.create and not self.id:
            raise ValueError("give the existing project's id, or create: true with folder_id and billing_account")
        if self.create and not self.id:
            # Without it the stack would create a project named by nobody and place the tenant's resources in
            # whatever project the provider defaults to.
            raise ValueError("create: true needs the id of the project to create")
        return self


class DedicatedSettings(Strict):
    """Settings only a dedicated (Enterprise) tenant has."""

    project: ProjectSettings | None = Field(
        default=None, description="the tenant's own GCP project; absent: the platform project"
    )
    private_endpoint: bool = Field(default=False, strict=True, description="GKE control plane reachable only on its private endpoint")
    read_replicas: int = Field(default=0, strict=True, ge=0, le=3, description="read replicas per database instance")
    log_sink: str | None = Field(
        default=None,
        description="tenant-owned log destination, e.g. storage.googleapis.com/acme-audit-logs or bigquery.googleapis.com/projects/p/datasets/d",
        pattern=r"^(storage|bigquery|pubsub|logging)\.googleapis\.com/.+$",
    )
    notification_email: str | None = Field(default=None, description="where alerts for this tenant go")

    @field_validator("notification_email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v is not None and not EMAIL_PATTERN.fullmatch(v):
            raise ValueError(f"{echo(v)} is not a valid email address")
        return v


class PlacementPin(Strict):
    """An operator's choice of where a new tenant goes (tenancy/fleet); absent keys are placed by capacity.

    Only decides where a tenant is first placed: once deployed, a tenant stays where it is until
    `tenancy place` moves it."""

    cell: str | None = Field(default=None, description="namespace plans: the cell (shared cluster) hosting the tenant's "
                             "namespace, e.g. cell-2")
    pool_shard: str | None = Field(default=None, description="pooled plans: the pool shard (pooled database) holding "
                                   "the tenant's rows, e.g. pool-1")
    data_project: str | None = Field(default=None, description="namespace plans: the GCP project holding the tenant's "
                                     "Cloud SQL instances (the platform project or one of tenancy:dataProjects)")

    @field_validator("cell", "pool_shard")
    @classmethod
    def _unit(cls, v: str | None, info: ValidationInfo) -> str | None:
        pattern, what = {"cell": (naming.CELL_PATTERN, ("cell", "cell")),
                         "pool_shard": (naming.POOL_SHARD_PATTERN, ("pool shard", "pool"))}[info.field_name]
        if v is not None and not pattern.fullmatch(v):
            raise ValueError(f"{echo(v)} is not a {what[0]} name; {what[0]}s are named {what[1]}-1, {what[1]}-2, ...")
        return v

    @field_validator("data_project")
    @classmethod
    def _data_project(cls, v: str | None) -> str | None:
        if v is not None and not GCP_PROJECT_PATTERN.fullmatch(v):
            raise ValueError(f"{echo(v)} is not a GCP project id (6-30 characters: lowercase letters, digits, hyphens; "
                             "starts with a letter)")
        return v

    def pins(self) -> dict[str, str]:
        """The keys set, as written."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


# Which placement keys apply to which model (tenancy/fleet places the others).
PLACEMENT_KEYS: dict[Model, tuple[str, ...]] = {
    Model.POOLED: ("pool_shard",),
    Model.NAMESPACE: ("cell", "data_project"),
    Model.DEDICATED: (),
}


def fit_entry_to_model(entry: dict[str, Any], model: Model) -> None:
    """A tenant's catalogue entry (as tenants.yaml says it) without the fields its plan's model does not allow:
    what a plan change keeps of the entry."""
    if model is not Model.DEDICATED:
        entry.pop("dedicated", None)
        entry.pop("custom_domain", None)
    if model is Model.POOLED:
        entry.pop("kms_key", None)
        entry.pop("operator_group", None)
    if isinstance(entry.get("placement"), dict):
        kept = {k: v for k, v in entry["placement"].items() if k in PLACEMENT_KEYS[model]}
        if kept:
            entry["placement"] = kept
        else:
            entry.pop("placement")


def check_name(value: str, what: str) -> str:
    """The id/subdomain rule; the message names the value and the fix."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    if not 3 <= len(value) <= 50:
        raise ValueError(f"{what} {echo(value)} has {len(value)} characters; use 3 to 50")
    if not ID_PATTERN.fullmatch(value):
        raise ValueError(
            f"{what} {echo(value)} may contain only lowercase letters, digits and hyphens, and must not start or end with a hyphen"
        )
    if "--" in value:
        raise ValueError(f"{what} '{value}' contains '--' (reserved for derived names and punycode); use single hyphens")
    if value in naming.RESERVED_NAMES:
        raise ValueError(f"{what} '{value}' is reserved; choose another {what}")
    if what == "id":
        reason = naming.platform_collision(value)
        if reason:
            raise ValueError(f"tenant id '{value}' is reserved: {reason}; choose another id")
    elif value in naming.PLATFORM_WORDS:
        raise ValueError(f"{what} '{value}' is reserved: it is the name of the platform's "
                         f"{naming.PLATFORM_WORDS[value]}; choose another {what}")
    return value


class TenantSpec(Strict):
    """One tenant as written in tenants.yaml."""

    id: str = Field(description="stable identifier: 3-50 lowercase letters, digits, hyphens; never changes")
    name: str = Field(min_length=1, max_length=100, description="display name")
    plan: str = Field(description="a plan from the plans section or a built-in plan (free, standard, enterprise)")
    state: State = Field(default=State.ACTIVE, description="active, suspended (data kept, access refused) or offboarded")
    subdomain: str | None = Field(default=None, description="hostname label under the base domain; defaults to the id")
    custom_domain: str | None = Field(default=None, description="the tenant's own domain (dedicated plans only)")
    admin_email: str = Field(description="the tenant administrator's email")
    operator_group: str | None = Field(
        default=None,
        description="Google Group (email) of the tenant's operators, e.g. acme-ops@acme.example; namespace and dedicated plans only",
    )
    region: str | None = Field(default=None, description="GCP region for the tenant's resources; defaults to the platform's")
    features: tuple[Feature, ...] | None = Field(default=None, description="enabled features; defaults to all the plan allows")
    limits: LimitOverrides = Field(default_factory=LimitOverrides, description="overrides of the plan's limits")
    kms_key: str | None = Field(
        default=None,
        # No whitespace in a segment: `[^/]` alone would let "…/cryptoKeys/k\n" through, `$` or not.
        pattern=r"^projects/[^/\s]+/locations/[^/\s]+/keyRings/[^/\s]+/cryptoKeys/[^/\s]+$",
        description="customer-managed key for the tenant's bucket (namespace and dedicated plans)",
    )
    dedicated: DedicatedSettings | None = Field(default=None, description="dedicated plans only")
    placement: PlacementPin | None = Field(
        default=None, description="where a new tenant goes (a cell, pool shard or data project); absent: placed by "
        "capacity. A deployed tenant stays where it is until `tenancy place` moves it")

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return check_name(v, "id")

    @field_validator("subdomain")
    @classmethod
    def _subdomain(cls, v: str | None) -> str | None:
        return None if v is None else check_name(v, "subdomain")

    @field_validator("custom_domain")
    @classmethod
    def _domain(cls, v: str | None) -> str | None:
        if v is not None and not DOMAIN_PATTERN.fullmatch(v):
            raise ValueError(f"{echo(v)} is not a domain name; write it lowercase without scheme or path, e.g. portal.acme.com")
        return v

    @field_validator("admin_email", "operator_group")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v is not None and not EMAIL_PATTERN.fullmatch(v):
            raise ValueError(f"{echo(v)} is not a valid email address")
        return v

    @field_validator("region")
    @classmethod
    def _region(cls, v: str | None) -> str | None:
        if v is not None and v not in GCP_REGIONS:
            close = difflib.get_close_matches(v, sorted(GCP_REGIONS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"{echo(v)} is not a Google Cloud region{hint}; use a region name such as europe-west1")
        return v


class CatalogFile(Strict):
    """The whole file."""

    # Required, not defaulted: a file without it is empty or cut short, and must not read as "no tenants".
    version: int = Field(strict=True, description="catalogue format version (1)")
    plans: dict[str, Plan] = Field(default_factory=dict, description="plans added to (or replacing) the built-in ones")
    tenants: list[TenantSpec] = Field(default_factory=list)

    @field_validator("version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != CATALOG_VERSION:
            raise ValueError(f"version {v} is not supported; this tool reads version {CATALOG_VERSION}")
        return v

    @field_validator("plans")
    @classmethod
    def _plan_names(cls, v: dict[str, Plan]) -> dict[str, Plan]:
        for name in v:
            if not PLAN_NAME_PATTERN.fullmatch(name):
                raise ValueError(f"plan name {echo(name)} must be 2-31 lowercase letters, digits or hyphens, starting with a letter")
        return v


@dataclass(frozen=True)
class Tenant:
    """A validated tenant with its plan resolved: what stack programs and components consume."""

    id: str
    name: str
    plan_name: str
    plan: Plan
    state: State
    subdomain: str
    custom_domain: str | None
    admin_email: str
    region: str | None
    features: tuple[Feature, ...]
    limits: Limits
    kms_key: str | None
    dedicated: DedicatedSettings | None
    limit_overrides: Mapping[str, float] = field(default_factory=dict)   # as written in the catalogue
    operator_group: str | None = None                                     # Google Group of the tenant's operators
    explicit_features: tuple[Feature, ...] | None = None                  # as written (None: the plan's)
    placement: PlacementPin | None = None                                 # operator's pins (tenancy/fleet)

    @property
    def model(self) -> Model:
        return self.plan.model

    @property
    def has_stack(self) -> bool:
        """Non-pooled tenants that are not offboarded have a tenant stack."""
        return self.model is not Model.POOLED and self.state is not State.OFFBOARDED

    @property
    def in_directory(self) -> bool:
        return self.state is not State.OFFBOARDED


@dataclass(frozen=True)
class Catalog:
    path: str
    plans: Mapping[str, Plan]
    tenants: tuple[Tenant, ...]
    # Deployment notes carried with a deployed catalogue (tenant id -> {"movedFrom", "movedTo", "moveId"}):
    # what the lifecycle commands know that tenants.yaml does not say. Never part of the file.
    notes: Mapping[str, Any] = field(default_factory=dict)
    # Deployed placements (tenant id -> {"cell", "poolShard", "dataProject"}, tenancy/fleet): where each tenant
    # already is. Carried with a deployed catalogue, never part of the file; new tenants are placed around them.
    placements: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def tenant(self, tenant_id: str) -> Tenant:
        for t in self.tenants:
            if t.id == tenant_id:
                return t
        close = difflib.get_close_matches(tenant_id, [t.id for t in self.tenants], n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise CatalogError([Problem(self.path, None, None, "id", f"no tenant '{tenant_id}' in the catalogue{hint}")])

    def by_model(self, model: Model) -> list[Tenant]:
        return [t for t in self.tenants if t.model is model]

    @property
    def stack_tenants(self) -> list[Tenant]:
        return [t for t in self.tenants if t.has_stack]


# ---------------------------------------------------------------------------------------------- loading


_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster on large files


class LineLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """A safe loader that rejects duplicate keys (a silent override is a typo waiting to happen)."""


def _construct_mapping(loader: LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {echo(key)} (first at line {seen[key] + 1}); keep one", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def line_index(node: yaml.Node | None) -> dict[tuple, int]:
    """Map every path in the document (('tenants', 3, 'subdomain')) to its 1-based line.

    Iterative: the depth is already capped, but nothing here should depend on that to stay on the stack."""
    out: dict[tuple, int] = {}
    todo: list[tuple[tuple, yaml.Node]] = [((), node)] if node is not None else []
    while todo:
        path, current = todo.pop()
        out.setdefault(path, current.start_mark.line + 1)
        if isinstance(current, yaml.MappingNode):
            for k, v in current.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else id(k)  # complex keys are refused earlier
                out[path + (key,)] = k.start_mark.line + 1
                todo.append((path + (key,), v))
        elif isinstance(current, yaml.SequenceNode):
            for i, item in enumerate(current.value):
                todo.append((path + (i,), item))
    return out


def _check_shape(text: str, path: str) -> None:
    """Walk the YAML events once, building nothing, and refuse what could take the loader down:
    anchors and aliases (a few lines can expand to gigabytes), nesting deeper than MAX_DEPTH (the
    composer recurses per level), and lists or mappings used as mapping keys."""

    def refuse(event: Any, message: str) -> CatalogError:
        return CatalogError([Problem(path, event.start_mark.line + 1, None, "(syntax)", message)])

    loader = _BaseLoader(text)
    try:
        # One entry per open collection: [is a mapping, number of child nodes so far].
        open_: list[list] = []
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.AliasEvent) or (isinstance(event, yaml.NodeEvent) and event.anchor is not None):
                raise refuse(event, "YAML anchors and aliases (&name, *name) are not accepted in a catalogue "
                                    "(limit: none); write each value out in full")
            if isinstance(event, yaml.CollectionStartEvent):
                if open_ and open_[-1][0] and open_[-1][1] % 2 == 0:
                    raise refuse(event, "a list or mapping is used as a key; keys are plain names")
                if len(open_) + 1 > MAX_DEPTH:
                    raise refuse(event, f"nesting deeper than {MAX_DEPTH} levels (the limit; a catalogue needs about 6); "
                                        "is the file what you meant to pass?")
                open_.append([isinstance(event, yaml.MappingStartEvent), 0])
            elif isinstance(event, yaml.CollectionEndEvent):
                open_.pop()
                if open_:
                    open_[-1][1] += 1
            elif isinstance(event, yaml.ScalarEvent) and open_:
                open_[-1][1] += 1
    finally:
        loader.dispose()


# Scalars the one-pass reader builds itself (with the loader's own constructors); any other tag sends the
# file down the checked path, which builds it or reports it exactly as before.
_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:null", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
                         "tag:yaml.org,2002:float"})
_STR_TAG = yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG


def _read_plain(text: str) -> tuple[Any, dict[tuple, int]] | None:
    """(document, line index) of a file made only of what a catalogue is made of, in one walk of its YAML
    events; None as soon as anything else appears.

    Equivalent to `_check_shape`, then composing and constructing with `LineLoader`, then `line_index`, for
    the files it accepts: a single document (or none) of untagged scalars, mappings and lists, no anchor or
    alias, no collection as a key, no nesting past MAX_DEPTH, no key twice in a mapping (neither as value nor
    as text), scalars that resolve to str, null, bool, int or float, and no syntax error anywhere in the
    stream. Everything else (every file with a problem at the YAML level included) returns None, and
    `parse_catalog` takes the checked path, which refuses or reports it. Composing builds a node per value
    and `line_index` walks them again; this builds the values and their lines directly, which on a large
    catalogue is most of the cost of loading it. The walk holds its own stack: it never recurses, it stops at
    the first anchor or alias (nothing is expanded) and at the first level past MAX_DEPTH."""
    scalar_event, mapping_start, sequence_start = yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent
    mapping_end, sequence_end = yaml.MappingEndEvent, yaml.SequenceEndEvent
    loader = LineLoader(text)
    try:
        if loader.yaml_path_resolvers:
            return None  # path-dependent tags: not a plain reading
        # The loader's implicit resolvers by first character, the wildcard ones appended (Resolver.resolve).
        wildcard = loader.yaml_implicit_resolvers.get(None, [])
        by_first = {first: resolvers + wildcard for first, resolvers in loader.yaml_implicit_resolvers.items()}
        constructors = loader.yaml_constructors
        get_event = loader.get_event
        if get_event().__class__ is not yaml.StreamStartEvent:
            return None
        event = get_event()
        if event.__class__ is yaml.StreamEndEvent:
            return {}, {}  # no document: what `parse_catalog` makes of an absent node
        if event.__class__ is not yaml.DocumentStartEvent:
            return None
        lines: dict[tuple, int] = {}
        root: Any = None
        # The innermost open collection: the container, its path, whether it is a mapping, the key texts it has,
        # whether a key comes next; `stack` holds the enclosing ones, `depth` counts them all.
        container: Any = None
        path: tuple = ()
        is_map = expect_key = False
        key_texts: set[str] = set()
        stack: list[tuple] = []
        depth = 0
        key: Any = None
        key_text = ""
        while True:
            event = get_event()
            cls = event.__class__
            if cls is scalar_event:
                if event.anchor is not None or event.tag is not None:
                    return None
                value = event.value
                if event.implicit[0]:
                    for tag, regexp in by_first.get(value[:1], wildcard):
                        if regexp.match(value):
                            if tag != _STR_TAG:
                                if tag not in _PLAIN_TAGS:
                                    return None
                                node = yaml.ScalarNode(tag, value, event.start_mark, event.end_mark, event.style)
                                value = constructors[tag](loader, node)
                            break
                new = None
            elif cls is mapping_start or cls is sequence_start:
                if event.anchor is not None or event.tag is not None or depth >= MAX_DEPTH:
                    return None
                value = new = {} if cls is mapping_start else []
            elif cls is mapping_end or cls is sequence_end:
                depth -= 1
                if not depth:
                    break
                container, path, is_map, key_texts = stack.pop()
                expect_key = is_map
                continue
            else:
                return None  # an alias, or an event out of place
            if not depth:  # the root
                root = value
                lines[()] = event.start_mark.line + 1
                if new is None:
                    break
                child = ()
            elif is_map:
                if expect_key:
                    key_text = event.value
                    if new is not None or value in container or key_text in key_texts:
                        return None  # a collection as key, or a key twice
                    key_texts.add(key_text)
                    key = value
                    lines[path + (key_text,)] = event.start_mark.line + 1
                    expect_key = False
                    continue
                container[key] = value
                expect_key = True
                if new is None:
                    continue
                child = path + (key_text,)
            else:
                child = path + (len(container),)
                container.append(value)
                lines[child] = event.start_mark.line + 1
                if new is None:
                    continue
            if depth:
                stack.append((container, path, is_map, key_texts))
            depth += 1
            container, path, is_map = new, child, cls is mapping_start
            if is_map:
                key_texts, expect_key = set(), True
        if get_event().__class__ is not yaml.DocumentEndEvent or get_event().__class__ is not yaml.StreamEndEvent:
            return None  # a second document: the checked path reports it
        return root, lines
    except Exception:  # noqa: BLE001 -- whatever it is, the checked path raises it as before
        return None
    finally:
        loader.dispose()


def _read_checked(text: str, path: str) -> tuple[Any, dict[tuple, int]]:
    """(document, line index) the long way, for any file: the shape check, the loader, the line index."""
    _check_shape(text, path)
    loader = LineLoader(text)
    try:
        node = loader.get_single_node()
        raw = loader.construct_document(node) if node is not None else {}
    finally:
        loader.dispose()
    return raw, line_index(node)


def line_for(lines: Mapping[tuple, int], loc: tuple) -> int | None:
    loc = tuple(loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def _fix_for(err: Mapping[str, Any], model_fields: Iterable[str]) -> str:
    """Turn one pydantic error into a sentence that says what to do."""
    kind = err["type"]
    loc = err["loc"]
    field = str(loc[-1]) if loc else ""
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(field, list(model_fields), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(sorted(model_fields))}"
        return f"unknown key {echo(field)}; remove it or fix the spelling ({hint})"
    if kind == "missing":
        if tuple(loc) == ("version",):
            return MISSING_VERSION
        return "is required; add it"
    if kind == "enum":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{echo(err.get('input'))} is not allowed; use one of {expected}"
    if kind in _TYPE_FIXES:
        return f"{echo(err.get('input'))} {_TYPE_FIXES[kind]}"
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if kind in ("string_pattern_mismatch",):
        return f"{echo(err.get('input'))} has the wrong format; {msg[0].lower() + msg[1:]}"  # the pattern keeps its case
    if kind.startswith(("int_", "float_", "greater_than", "less_than", "string_", "bool_", "list_", "dict_", "tuple_")):
        return f"{echo(err.get('input'))}: {msg[0].lower() + msg[1:]}"
    return msg


MISSING_VERSION = "the catalogue has no 'version' (an empty or truncated file?); add `version: 1`"
# Strict types: what a value of the wrong type gets told (YAML's `yes`, "5" and 5.5 are not counts).
_TYPE_FIXES = {
    "int_type": "is not a whole number; write digits without quotes, e.g. 5",
    "int_from_float": "is not a whole number; write digits without quotes, e.g. 5",
    "float_type": "is not a number; write it without quotes, e.g. 2 or 0.5",
    "finite_number": "is not a finite number; write a number, e.g. 2 or 0.5",
    "bool_type": "is not true or false; write true or false without quotes",
    "string_type": "is not text; write it as a string",
}


def _fields_at(loc: tuple) -> list[str]:
    """The keys allowed where `loc` points (for 'did you mean' hints on unknown keys)."""
    model: type[BaseModel] = CatalogFile
    parts = list(loc[:-1])
    i = 0
    while i < len(parts):
        part = parts[i]
        if isinstance(part, int):
            i += 1
            continue
        if model is CatalogFile and part == "plans":
            model, i = Plan, i + 2  # skip the plan's name
            continue
        field = model.model_fields.get(str(part))
        nxt = _model_in(field.annotation) if field else None
        if nxt is None:
            break
        model, i = nxt, i + 1
    return list(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


class _Who:
    """Names the place a problem is in: a tenant (by id, or by position when the id is bad) or a plan."""

    def __init__(self, raw: Any):
        self.raw = raw if isinstance(raw, dict) else {}

    def tenant_label(self, index: int) -> str:
        tenants = self.raw.get("tenants")
        entry = tenants[index] if isinstance(tenants, list) and index < len(tenants) else None
        tid = entry.get("id") if isinstance(entry, dict) else None
        if isinstance(tid, str):
            try:
                check_name(tid, "id")
                return f"tenant '{tid}'"
            except ValueError:
                pass
        return f"tenants[{index}] (position {index + 1})"


def _where(who: _Who, loc: tuple) -> tuple[str | None, str]:
    """(tenant-or-plan label, dotted field) for a pydantic location."""
    dotted = lambda parts: ".".join(echo(p)[1:-1] if isinstance(p, str) else str(p) for p in parts)  # noqa: E731
    if len(loc) >= 2 and loc[0] == "tenants" and isinstance(loc[1], int):
        return who.tenant_label(loc[1]), dotted(loc[2:]) or "(entry)"
    if len(loc) >= 2 and loc[0] == "plans":
        return f"plan {echo(loc[1])}", dotted(loc[2:]) or "(entry)"
    return None, dotted(loc) or "(file)"


def parse_catalog(text: str, path: str = "tenants.yaml") -> Catalog:
    """Parse and validate catalogue text; raise CatalogError with every problem found."""
    size = len(text) if len(text) * 4 <= MAX_FILE_BYTES else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:
        raise CatalogError([_too_large(path, size)])
    # A file of plain mappings, lists and scalars (every valid catalogue) is read in one walk of its events;
    # anything else takes the checked path: the shape check first, then the loader.
    plain = _read_plain(text)
    try:
        raw, lines = plain if plain is not None else _read_checked(text, path)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        what = _cut(exc.problem or str(exc), 200)
        raise CatalogError([Problem(path, line, None, "(syntax)", f"YAML syntax error: {what}; fix the YAML at this line")]) from None
    except yaml.YAMLError as exc:
        raise CatalogError([Problem(path, None, None, "(syntax)", f"YAML error: {_cut(str(exc), 200)}")]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise CatalogError([Problem(path, 1, None, "(file)", "the catalogue must be a mapping with 'plans' and 'tenants' keys")])
    who = _Who(raw)
    problems: list[Problem] = []

    # Pass 1 -- structure. Validate tenant entries one by one so that one bad tenant does not hide the others.
    tenants_raw = raw.get("tenants", [])
    head = {k: v for k, v in raw.items() if k != "tenants"}
    parsed_head: CatalogFile | None = None
    try:
        parsed_head = CatalogFile.model_validate({**head, "tenants": []})
    except ValidationError as exc:
        problems.extend(_problems(exc, path, lines, who, ()))
        # Still resolve tenants against the declared plans when only the file's other keys are wrong
        # (e.g. a missing version), so that tenants on those plans are not also reported as unknown.
        try:
            parsed_head = CatalogFile.model_validate({"version": CATALOG_VERSION, "plans": head.get("plans", {}), "tenants": []})
        except ValidationError:
            pass
    specs: list[tuple[int, TenantSpec]] = []
    whole: set[int] = set()        # entries that passed pass 1 as written (not rebuilt around broken fields)
    if not isinstance(tenants_raw, list):
        problems.append(Problem(path, line_for(lines, ("tenants",)), None, "tenants", "must be a list of tenants (each entry starts with '- id: ...')"))
        tenants_raw = []
    capped = False
    for i, entry in enumerate(tenants_raw):
        if len(problems) >= MAX_PROBLEMS:
            tenants_raw, capped = tenants_raw[:i], True  # pass 2 checks only the entries pass 1 looked at
            break
        try:
            specs.append((i, TenantSpec.model_validate(entry)))
            whole.add(i)
        except ValidationError as exc:
            problems.extend(_problems(exc, path, lines, who, ("tenants", i)))
            partial = _partial_spec(entry, exc)
            if partial is not None:
                specs.append((i, partial))

    # Pass 2 -- meaning.
    plans = dict(BUILTIN_PLANS)
    if parsed_head is not None:
        plans.update(parsed_head.plans)
    tenants: list[Tenant] = []
    # value -> the position of the first entry with it (its line is looked up only for a message).
    seen: dict[str, dict[str, int]] = {"id": {}, "subdomain": {}, "custom_domain": {}}
    # Uniqueness is checked on every readable value, even in entries that failed pass 1.
    for i, entry in enumerate(tenants_raw):
        if not isinstance(entry, dict):
            continue
        values = {
            "id": entry.get("id"),
            "subdomain": entry.get("subdomain") or entry.get("id"),
            "custom_domain": entry.get("custom_domain"),
        }
        for key_name, value in values.items():
            if not isinstance(value, str):
                continue
            key = value.lower()
            loc = ("tenants", i, key_name if key_name in entry else "id")
            if key in seen[key_name]:
                if key_name == "subdomain" and "subdomain" not in entry and key in seen["id"]:
                    continue  # a duplicate id already says it; its default subdomain follows from it
                first = f"the tenant at line {line_for(lines, ('tenants', seen[key_name][key]))}"
                problems.append(Problem(path, line_for(lines, loc), who.tenant_label(i), key_name,
                                        f"{echo(value)} is already used by {first}; each tenant needs its own "
                                        f"{key_name.replace('_', ' ')}"))
            else:
                seen[key_name][key] = i
    plan_limits: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
    for i, spec in specs:
        tenants.append(_resolve(spec, i, plans, path, lines, who, problems, plan_limits))
    problems.extend(_name_collisions([t for t in tenants if t is not None], path, lines, specs))
    problems.extend(_shared_projects(specs, path, lines))
    if problems:
        partial = None
        if not capped and len(problems) < MAX_PROBLEMS:
            partial = Catalog(path=path, plans=plans, tenants=tuple(
                t for (i, _), t in zip(specs, tenants) if t is not None and i in whole))
        raise CatalogError(ordered(problems, path, capped), partial)
    return Catalog(path=path, plans=plans, tenants=tuple(t for t in tenants if t is not None))


def ordered(problems: list[Problem], path: str, capped: bool = False) -> list[Problem]:
    """Problems in the order of their lines, at most MAX_PROBLEMS of them (then a last line saying so)."""
    out = sorted(problems, key=lambda p: p.line or 0)
    if capped or len(out) > MAX_PROBLEMS:
        out = out[:MAX_PROBLEMS] + [Problem(path, None, None, "(file)", f"stopped after {MAX_PROBLEMS} problems (the "
                                            "limit); fix these and run again")]
    return out


def _too_large(path: str, size: int) -> Problem:
    return Problem(path, None, None, "(file)", f"the file has {size:,} bytes or more, over the limit of "
                   f"{MAX_FILE_BYTES:,} bytes ({MAX_FILE_BYTES // 2**20} MiB); is it the catalogue you meant to pass?")


def _cut(text: str, limit: int) -> str:
    """One line of at most `limit` characters (parser messages can quote the input)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def _problems(exc: ValidationError, path: str, lines: Mapping[tuple, int], who: _Who, prefix: tuple) -> list[Problem]:
    out = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        label, field = _where(who, loc)
        out.append(Problem(path, line_for(lines, loc), label, field, _fix_for(err, _fields_at(loc))))
    return out


_PLACEHOLDERS = {"id": "placeholder", "name": "placeholder", "admin_email": "placeholder@example.com"}


def _partial_spec(entry: Any, exc: ValidationError) -> TenantSpec | None:
    """The entry with its invalid fields replaced, so the rules of pass 2 still report on the rest."""
    if not isinstance(entry, dict):
        return None
    broken = {err["loc"][0] for err in exc.errors() if err["loc"]}
    if "plan" in broken or not isinstance(entry.get("plan"), str):
        return None
    subset = {k: v for k, v in entry.items() if k not in broken and k in TenantSpec.model_fields}
    for key, value in _PLACEHOLDERS.items():
        subset.setdefault(key, value)
    try:
        return TenantSpec.model_validate(subset)
    except ValidationError:
        return None


def _name_collisions(tenants: list[Tenant], path: str, lines: Mapping[tuple, int],
                     specs: list[tuple[int, TenantSpec]]) -> list[Problem]:
    """No physical name of one tenant may equal another's. Shortened names carry a hash; this makes a
    hash collision (or any overlap between derivations) an error rather than two tenants on one resource."""
    line_of: dict[str, int | None] | None = None  # built on the first collision: most catalogues have none
    problems: list[Problem] = []
    owners: dict[tuple[str, str], str] = {}
    for t in tenants:
        if t.id == _PLACEHOLDERS["id"]:
            continue
        names = naming.tenant_names("dev", t.id, tuple(t.plan.databases))
        if owners.keys().isdisjoint(names):
            # No name taken yet (the common case): every one becomes this tenant's, as setdefault below would.
            owners.update(dict.fromkeys(names, t.id))
            continue
        reported: set[str] = set()
        for key in names:
            owner = owners.setdefault(key, t.id)
            if owner != t.id and owner not in reported:
                reported.add(owner)
                if line_of is None:
                    line_of = {spec.id: line_for(lines, ("tenants", i, "id")) for i, spec in specs}
                problems.append(Problem(path, line_of.get(t.id), f"tenant '{t.id}'", "id",
                                        f"its {key[0]} '{key[1]}' collides with tenant '{owner}'; choose a different id"))
    return problems


def _shared_projects(specs: list[tuple[int, TenantSpec]], path: str, lines: Mapping[tuple, int]) -> list[Problem]:
    """Two dedicated tenants in one GCP project would share its IAM, quotas and log sinks: refuse it."""
    problems: list[Problem] = []
    owners: dict[str, str] = {}
    for i, spec in specs:
        project = spec.dedicated.project.id if spec.dedicated and spec.dedicated.project else None
        if project is None or spec.id == _PLACEHOLDERS["id"]:
            continue
        owner = owners.setdefault(project, spec.id)
        if owner != spec.id:
            problems.append(Problem(path, line_for(lines, ("tenants", i, "dedicated", "project", "id")), f"tenant '{spec.id}'",
                                    "dedicated.project.id", f"project '{project}' is also the project of tenant '{owner}'; "
                                    f"tenants '{owner}' and '{spec.id}' each need a project of their own"))
    return problems


def _resolve(spec: TenantSpec, index: int, plans: Mapping[str, Plan], path: str, lines: Mapping[tuple, int],
             who: _Who, problems: list[Problem],
             plan_limits: dict[str, tuple[dict[str, float], dict[str, float]]]) -> Tenant | None:
    """The tenant with its plan resolved, or None when the plan is unknown; the rules' problems go to `problems`.
    `plan_limits` holds each plan's limits and bounds as dicts, made once per plan rather than per tenant."""

    def bad(field: str, message: str) -> None:
        problems.append(Problem(path, line_for(lines, ("tenants", index, field.split(".")[0])), who.tenant_label(index),
                                field, message))

    plan = plans.get(spec.plan)
    if plan is None:
        close = difflib.get_close_matches(spec.plan, sorted(plans), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        bad("plan", f"unknown plan '{spec.plan}'; {hint}use one of {', '.join(sorted(plans))} or declare it under 'plans'")
        return None
    if spec.custom_domain and plan.model is not Model.DEDICATED:
        bad("custom_domain", f"custom domains need a dedicated plan, and '{spec.plan}' is {plan.model.value}; remove custom_domain or move the tenant to a dedicated plan")
    if spec.dedicated is not None and plan.model is not Model.DEDICATED:
        bad("dedicated", f"dedicated settings apply to dedicated plans only, and '{spec.plan}' is {plan.model.value}; remove the 'dedicated' block")
    if spec.kms_key and plan.model is Model.POOLED:
        bad("kms_key", "a pooled plan shares the platform bucket; remove kms_key or move the tenant to a namespace or dedicated plan")
    if spec.operator_group and plan.model is Model.POOLED:
        bad("operator_group", "a pooled plan has no namespace or cluster of the tenant's own for operators to run; "
            "remove operator_group or move the tenant to a namespace or dedicated plan")
    if spec.placement is not None:
        allowed = PLACEMENT_KEYS[plan.model]
        for key in spec.placement.pins():
            if key not in allowed:
                fix = (f"pin {' or '.join(allowed)} instead" if allowed else
                       "a dedicated tenant has its own cluster and project; remove 'placement'")
                bad(f"placement.{key}", f"plan '{spec.plan}' is {plan.model.value}, and {key} applies to "
                    f"{'pooled' if key == 'pool_shard' else 'namespace'} plans only; {fix}")
    if spec.features is not None:
        extra = [f.value for f in spec.features if f not in plan.features]
        if extra:
            bad("features", f"plan '{spec.plan}' does not allow {', '.join(extra)}; allowed: {', '.join(f.value for f in plan.features)}")
    if spec.plan not in plan_limits:
        plan_limits[spec.plan] = (plan.limits.model_dump(), plan.bounds.model_dump())
    plan_values, bounds = plan_limits[spec.plan]
    # No override written (most tenants): nothing to check, and the plan's own (frozen) limits are the tenant's.
    overrides = spec.limits.set_values() if spec.limits.model_fields_set else {}
    limits = dict(plan_values)
    for key, value in overrides.items():
        if value > bounds[key]:
            bad(f"limits.{key}", f"{value:g} exceeds plan '{spec.plan}' maximum of {bounds[key]:g}; lower it or choose a larger plan")
        else:
            limits[key] = value
    features = spec.features if spec.features is not None else plan.features
    return Tenant(
        id=spec.id, name=spec.name, plan_name=spec.plan, plan=plan, state=spec.state,
        subdomain=spec.subdomain or spec.id, custom_domain=spec.custom_domain, admin_email=spec.admin_email,
        region=spec.region, features=tuple(features), limits=Limits(**limits) if overrides else plan.limits,
        kms_key=spec.kms_key, dedicated=spec.dedicated, limit_overrides=dict(overrides), explicit_features=spec.features,
        operator_group=spec.operator_group, placement=spec.placement,
    )


def entry_lines(path: str | Path, key: str) -> dict[str, int]:
    """tenant id -> the 1-based line of that tenant's `key` (dotted for a nested one: `dedicated.project.id`) in the
    catalogue file ({} when it cannot be read): for messages about a catalogue already loaded. A tenant whose
    entry lacks the key is left out, or named at the deepest part of the key it has."""
    try:
        node = yaml.compose(Path(path).read_text(encoding="utf-8"), Loader=_BaseLoader)
    except (OSError, yaml.YAMLError):
        return {}
    out: dict[str, int] = {}
    if not isinstance(node, yaml.MappingNode):
        return out
    for k, value in node.value:
        if k.value != "tenants" or not isinstance(value, yaml.SequenceNode):
            continue
        for item in value.value:
            if not isinstance(item, yaml.MappingNode):
                continue
            fields = {f.value: v for f, v in item.value}
            tid = getattr(fields.get("id"), "value", None)
            first, *rest = key.split(".")
            if not isinstance(tid, str) or first not in fields:
                continue
            node = fields[first]
            for part in rest:
                inner = {f.value: v for f, v in node.value} if isinstance(node, yaml.MappingNode) else {}
                if part not in inner:
                    break
                node = inner[part]
            out.setdefault(tid, node.start_mark.line + 1)
    return out


def load_catalog(path: str | Path = "tenants.yaml") -> Catalog:
    p = Path(path)
    try:
        # Read at most one byte past the limit: /dev/zero or a 50 MB file costs no more than 5 MiB.
        with p.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise CatalogError([_too_large(str(path), len(data))])
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise CatalogError([Problem(str(path), None, None, "(file)", "file not found; pass --tenants FILE or create tenants.yaml")]) from None
    except IsADirectoryError:
        raise CatalogError([Problem(str(path), None, None, "(file)", "is a directory; pass the catalogue file")]) from None
    except PermissionError:
        raise CatalogError([Problem(str(path), None, None, "(file)", "permission denied; check the file's permissions")]) from None
    except UnicodeDecodeError:
        raise CatalogError([Problem(str(path), None, None, "(file)", "not UTF-8 text; save the file as UTF-8")]) from None
    return parse_catalog(text, str(path))


def json_schema() -> dict[str, Any]:
    """JSON Schema of the catalogue file, for editors (generated from the models; committed)."""
    schema = CatalogFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "tenancy catalogue (tenants.yaml)"
    schema["description"] = (
        "Every tenant of the platform and its plan. Generated by `tenancy schema`; do not edit by hand."
    )
    return schema


def to_document(catalog: Catalog) -> dict[str, Any]:
    """The catalogue as tenants.yaml would say it (plans that differ from the built-ins, tenants as written)."""
    plans = {name: p.model_dump(mode="json", exclude_defaults=True) for name, p in catalog.plans.items()
             if BUILTIN_PLANS.get(name) != p}
    tenants = []
    for t in catalog.tenants:
        doc: dict[str, Any] = {"id": t.id, "name": t.name, "plan": t.plan_name, "state": t.state.value,
                               "admin_email": t.admin_email}
        if t.subdomain != t.id:
            doc["subdomain"] = t.subdomain
        for key in ("custom_domain", "region", "kms_key", "operator_group"):
            if getattr(t, key):
                doc[key] = getattr(t, key)
        if t.explicit_features is not None:
            doc["features"] = [f.value for f in t.explicit_features]
        if t.limit_overrides:
            doc["limits"] = dict(t.limit_overrides)
        if t.dedicated is not None:
            doc["dedicated"] = t.dedicated.model_dump(mode="json", exclude_defaults=True)
        if t.placement is not None:
            doc["placement"] = t.placement.pins()
        tenants.append(doc)
    return {"version": CATALOG_VERSION, "plans": plans, "tenants": tenants}


def with_tenant(catalog: Catalog, tenant_id: str, **changes: Any) -> Catalog:
    """The catalogue with one tenant's fields changed (e.g. plan=..., state=...), validated again."""
    catalog.tenant(tenant_id)
    doc = to_document(catalog)
    for t in doc["tenants"]:
        if t["id"] == tenant_id:
            t.update({k: v for k, v in changes.items() if v is not None})
            if "plan" in changes and changes["plan"] and catalog.plans.get(changes["plan"]):
                fit_entry_to_model(t, catalog.plans[changes["plan"]].model)
    return parse_catalog(yaml.safe_dump(doc, sort_keys=False), catalog.path)
