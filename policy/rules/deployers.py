"""Deploying identities (the operator): one per scope (tenancy/operator/deployers.py), the platform's, a unit's
(cell-<n>, pool-<n>, identity-<k>) or a dedicated tenant's. The component that declares one says its scope,
account, the project its roles belong on and its Kubernetes service account; every grant to it is judged by
them, and an operator Stack runs as its own scope's deployer."""

from __future__ import annotations

import re
from typing import Any, Iterable

from pulumi_policy import ReportViolation, ResourceValidationArgs, StackValidationArgs

from . import ownership
from .common import UNIT_STACK, Reporter, tenant_of_stack
from .iam import IAM_TYPE, KSA_MEMBER, Grant, iam_grants
from .ownership import DEPLOYER_TYPE, DeployerScope, Ownership, grant_targets, project_of

PLATFORM_DEPLOYER_KSA = "tenancy-deployer"
DEPLOYER_KSA_PREFIX = "deployer-"
STACK_CR = "kubernetes:pulumi.com/v1:Stack"
WORKLOAD_IDENTITY_USER = "roles/iam.workloadIdentityUser"


def deployer_of(member: str, own: Ownership) -> DeployerScope | None:
    kind, _, ident = member.partition(":")
    return own.deployers.get(ident.lower()) if kind == "serviceAccount" else None


def _deployer_target(r: Any, own: Ownership) -> DeployerScope | None:
    """The deployer whose account an IAM resource on a service account is about."""
    if not (r.resource_type.startswith("gcp:serviceaccount/") and IAM_TYPE.search(r.resource_type)):
        return None
    return own.deployers.get(str(r.props.get("serviceAccountId") or "").rsplit("/", 1)[-1].lower())


def own_workspace_binding(r: Any, g: Grant, own: Ownership) -> bool:
    """A deployer's own Kubernetes service account allowed to act as it (what deployer-scope requires)."""
    d = _deployer_target(r, own)
    m = KSA_MEMBER.match(g.member)
    return bool(d and m and g.role == WORKLOAD_IDENTITY_USER and f"{m['ns']}/{m['ksa']}" == d.ksa)


def _deployer_findings(tenant: str | None, r: Any, own: Ownership) -> Iterable[str]:
    t, p = r.resource_type, r.props
    if t == DEPLOYER_TYPE:
        mine = DeployerScope.of(r)
        first = own.deployers.get(str(p.get("email") or "").lower())
        if first is not None and (first.scope, first.project, first.ksa) != (mine.scope, mine.project, mine.ksa):
            yield (f"deployer {p.get('email')} is declared for scope '{mine.scope}' on project {mine.project} here and "
                   f"for scope '{first.scope}' on project {first.project} elsewhere: one identity, one scope")
        if tenant and mine.scope != tenant:
            yield (f"the stack of tenant '{tenant}' declares the deployer of scope '{mine.scope}': a tenant stack "
                   "grants roles only to its own deployer")
        return
    for g in iam_grants(t, p):
        d = deployer_of(g.member, own)
        if d is None:
            continue
        project = project_of(r, own)
        if g.role.startswith("audit exemption"):
            yield (f"deployer of '{d.scope}' ({g.member}) is given an {g.role} on project {project}: what a deploying "
                   "identity does is never left out of the audit logs")
        elif not t.startswith("gcp:projects/"):
            yield (f"deployer of '{d.scope}' ({g.member}) is granted {g.role} on {grant_targets(r, g, own)[0][0]}: a "
                   f"deployer holds roles on its scope's project ({d.project}) and nowhere else")
        elif project != d.project:
            yield (f"deployer of '{d.scope}' ({g.member}) is granted {g.role} on project {project}: a deployer holds "
                   f"roles on its scope's project ({d.project}) and nowhere else")
        if tenant and d.scope != tenant:
            yield (f"the stack of tenant '{tenant}' grants {g.role} to the deployer of '{d.scope}': a tenant stack "
                   "grants roles only to its own deployer")
    d = _deployer_target(r, own)
    if d is not None:
        for g in iam_grants(t, p):
            if not own_workspace_binding(r, g, own):
                yield (f"deployer of '{d.scope}': {g.role} on its account for {g.member}: only its own Kubernetes "
                       f"service account ({d.ksa}) may act as it, through Workload Identity")


def deployer_scope_plan(stacks: list[tuple[str | None, list]], report: Reporter, cfg: dict | None = None) -> None:
    """Across the plan: every deploying identity's grants land in its scope, and only its own workspaces may
    act as it."""
    own = ownership.build_ownership(stacks)
    for tenant, resources in stacks:
        for r in resources:
            for message in dict.fromkeys(_deployer_findings(tenant, r, own)):
                report(message, r.urn)


def deployer_scope(args: StackValidationArgs, report: ReportViolation) -> None:
    """One stack's view: the deployers it declares, and its grants to them."""
    tenant = None
    for r in args.resources:
        tenant = tenant or tenant_of_stack(r)
    deployer_scope_plan([(tenant, list(args.resources))], report)


UNIT_OBJECT = re.compile(r"^(?P<env>[a-z][a-z0-9]{1,9})-(?P<unit>cell-[0-9]+)$")


def operator_stack_deployer(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """A Pulumi Kubernetes Operator Stack runs as its own scope's deployer: the platform's stack as the platform's,
    a unit's as that unit's, a dedicated tenant's as its own, a namespace tenant's as its cell's (the cell it
    waits for; cell 1 where the environment has no cell stacks). Any other scope's identity could change
    infrastructure that is not this stack's."""
    if args.resource_type != STACK_CR and not (args.props.get("apiVersion") == "pulumi.com/v1"
                                               and args.props.get("kind") == "Stack"):
        return
    spec = args.props.get("spec") if isinstance(args.props.get("spec"), dict) else {}
    meta = args.props.get("metadata") if isinstance(args.props.get("metadata"), dict) else {}
    stack = str(spec.get("stack") or "").rsplit("/", 1)[-1]
    env, _, rest = stack.partition(".")
    ksa = spec.get("serviceAccountName")
    name = f"Stack {meta.get('name')} (stack {stack or '?'})"
    if not stack:
        report(f"{name}: spec.stack names no stack, so its deployer cannot be told")
        return
    if not rest:
        expected, who = PLATFORM_DEPLOYER_KSA, "the platform's"
    elif UNIT_STACK.fullmatch(rest):
        expected, who = DEPLOYER_KSA_PREFIX + rest, f"unit {rest}'s"
    else:
        model = (meta.get("labels") or {}).get("tenancy.io/model") if isinstance(meta.get("labels"), dict) else None
        if model == "dedicated":
            expected, who = DEPLOYER_KSA_PREFIX + rest, f"tenant '{rest}''s own"
        elif model == "namespace":
            cells = [m["unit"] for pre in spec.get("prerequisites") or [] if isinstance(pre, dict)
                     for m in [UNIT_OBJECT.match(str(pre.get("name") or ""))] if m and m["env"] == env]
            cell = cells[0] if len(cells) == 1 else "cell-1"
            expected, who = DEPLOYER_KSA_PREFIX + cell, f"its cell's ({cell})"
        else:
            report(f"{name}: a tenant's Stack says its model (label tenancy.io/model: namespace or dedicated), which "
                   "decides the deployer it runs as")
            return
    if ksa != expected:
        report(f"{name} runs as service account {ksa!r}: it must run as {who} deployer, {expected}; another scope's "
               "identity can change infrastructure that is not this stack's")
