"""Tenants: an entry as tenants.yaml writes it (`TenantSpec` and its settings), the file as a whole
(`CatalogFile`), and what the rest of the project consumes once both passes hold: each `Tenant` with its plan
resolved, in one `Catalog`."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping

from pydantic import Field, ValidationInfo, field_validator, model_validator

from tenancy import naming
from tenancy.catalog.plans import Feature, LimitOverrides, Limits, Model, Plan
from tenancy.catalog.values import (DOMAIN_PATTERN, EMAIL_PATTERN, GCP_PROJECT_PATTERN, GCP_REGIONS, PLAN_NAME_PATTERN,
                                    Strict, check_name, echo)
from tenancy.errors import CatalogError, Problem

CATALOG_VERSION = 1


class State(str, Enum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    OFFBOARDED = "offboarded"


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
