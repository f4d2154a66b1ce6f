"""iam-tenant-scope: a tenant's principals reach only that tenant's resources, and tenant data only its own
principals and the platform's known ones; judged over the whole plan, or one stack in a real preview."""

from __future__ import annotations

import re
from typing import Any, Iterable

from pulumi_policy import ReportViolation, StackValidationArgs

from . import ownership
from .common import Reporter, known, tenant_of_stack
from .deployers import deployer_of, own_workspace_binding
from .iam import PUBLIC_MEMBERS, iam_grants
from .ownership import EXTERNAL, PLATFORM, Ownership, grant_targets, principal_owners

# Google-managed service agents act for a project's own services (GKE encrypting etcd with a tenant's key):
# they are the platform's known principals on tenant data. More can be allowed through the pack's config
# (`platformPrincipals`), e.g. a backup or break-glass group.
SERVICE_AGENT = re.compile(r"^serviceAccount:(service-\d+@[a-z0-9-]+\.iam\.gserviceaccount\.com"
                           r"|[a-z0-9-]+@gcp-sa-[a-z0-9-]+\.iam\.gserviceaccount\.com"
                           r"|\d+@cloudservices\.gserviceaccount\.com)$")
# Project-level roles a tenant's principals may hold on a project that is not theirs: what the nodes of a
# tenant's own GKE cluster need to write logs and metrics and pull images. Overridable (`tenantProjectRoles`).
TENANT_PROJECT_ROLES = ("roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/monitoring.viewer",
                        "roles/stackdriver.resourceMetadata.writer", "roles/artifactregistry.reader")

TENANT_SCOPE_DEFAULTS: dict[str, Any] = {"platformPrincipals": [], "tenantProjectRoles": list(TENANT_PROJECT_ROLES)}


def _tenant_scope_findings(tenant: str | None, r: Any, own: Ownership, cfg: dict) -> Iterable[str]:
    allowed = set(cfg.get("platformPrincipals") or [])
    project_roles = set(cfg.get("tenantProjectRoles") or TENANT_PROJECT_ROLES)
    for g in iam_grants(r.resource_type, r.props):
        if g.member in PUBLIC_MEMBERS or not known(g.member):
            continue  # public members have their own rule
        if deployer_of(g.member, own) or own_workspace_binding(r, g, own):
            continue  # a deploying identity's grants are judged against its scope (deployer-scope)
        owners, what = principal_owners(g.member, own)
        tenants = owners - {PLATFORM, EXTERNAL}
        for desc, targets, project_level in grant_targets(r, g, own):
            for t in sorted(tenants):
                if targets == {t}:
                    continue
                if project_level and g.role in project_roles and not (targets or set()) - {PLATFORM, None}:
                    continue
                whose = "unknown to the plan" if targets is None else _owners_text(targets)
                yield (f"IAM: tenant '{t}''s principal {g.member} is granted {g.role} on {desc}, which is {whose}: "
                       f"a tenant's principals are granted only on that tenant's own resources")
            if (owners - tenants) and targets and targets - {PLATFORM} and g.member not in allowed \
                    and not SERVICE_AGENT.match(g.member) and not tenants:
                who = "declared by the platform" if PLATFORM in owners else "not declared in the plan"
                yield (f"IAM: {what} {g.member} ({who}) is granted {g.role} on {desc}, which is "
                       f"{_owners_text(targets)}: only the tenant's own principals and the platform's known "
                       "principals (Google service agents, the pack's platformPrincipals) may reach tenant data")
            if tenant:
                others = ({o for o in (targets or set()) if o not in (tenant, PLATFORM, None)} | tenants) - {tenant}
                if others:
                    yield (f"IAM: the stack of tenant '{tenant}' manages a grant of {g.member} on {desc}, which "
                           f"involves tenant(s) {', '.join(sorted(others))}: a tenant stack touches only its own tenant")


def _owners_text(owners: set[str | None]) -> str:
    named = sorted(o for o in owners if o)
    tenants = [o for o in named if o not in (PLATFORM, EXTERNAL)]
    parts = [f"tenant '{t}''s" for t in tenants] + (["the platform's"] if PLATFORM in named else [])
    return " and ".join(parts) if parts else "unknown to the plan"


def tenant_iam_scope_plan(stacks: list[tuple[str | None, list]], report: Reporter, cfg: dict | None = None) -> None:
    """Across the plan: every IAM grant (and audit exemption) against the exact owners of principal and target."""
    own = ownership.build_ownership(stacks)
    cfg = {**TENANT_SCOPE_DEFAULTS, **(cfg or {})}
    for tenant, resources in stacks:
        for r in resources:
            for message in dict.fromkeys(_tenant_scope_findings(tenant, r, own, cfg)):
                report(message, r.urn)


def tenant_iam_scope(args: StackValidationArgs, report: ReportViolation) -> None:
    """The pack's view of one stack: a tenant stack's own resources are its tenant's, nothing else is."""
    tenant = None
    for r in args.resources:
        tenant = tenant or tenant_of_stack(r)
    tenant_iam_scope_plan([(tenant, list(args.resources))], report, args.get_config() if hasattr(args, "get_config") else {})
