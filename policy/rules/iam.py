"""IAM: every grant an IAM resource makes, in whichever of the provider's forms, and the rules on a grant by
itself (no public members, no basic roles or keys, conditions that name resources exactly).

Whose principal and whose resource a grant involves is decided across the plan (`iam_scope`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs

from .common import first, known

PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")
BASIC_ROLES = ("roles/owner", "roles/editor", "roles/viewer")
IMPERSONATION_ROLES = ("roles/iam.serviceAccountUser", "roles/iam.serviceAccountTokenCreator")
TENANT_SA = re.compile(r"^serviceAccount:t-[a-z0-9]+-(?P<tenant>[a-z0-9-]+?)@")
IAM_TYPE = re.compile(r"iam(member|binding|policy)$", re.I)
AUDIT_CONFIG_TYPE = re.compile(r"iamauditconfig$", re.I)

# A Kubernetes service account in the forms Workload Identity grants to: one account, a namespace's, a pool's.
KSA_MEMBER = re.compile(r"^serviceAccount:(?P<pool>[a-z0-9.:-]+\.svc\.id\.goog)\[(?P<ns>[^/\]]+)/(?P<ksa>[^\]]+)\]$")
WI_PRINCIPAL = re.compile(r"^principal://iam\.googleapis\.com/projects/[^/]+/locations/global/workloadIdentityPools/"
                          r"(?P<pool>[^/]+)/subject/ns/(?P<ns>[^/]+)/sa/(?P<ksa>[^/]+)$")
WI_NAMESPACE_SET = re.compile(r"^principalSet://iam\.googleapis\.com/projects/[^/]+/locations/global/"
                              r"workloadIdentityPools/(?P<pool>[^/]+)/namespace/(?P<ns>[^/]+)$")
WI_POOL_SET = re.compile(r"^principalSet://iam\.googleapis\.com/projects/[^/]+/locations/global/"
                         r"workloadIdentityPools/(?P<pool>[^/]+)(/.*)?$")


@dataclass(frozen=True)
class Grant:
    """One principal's access as an IAM resource declares it (member, members, policyData, audit exemption)."""
    role: str
    member: str
    condition: str


def iam_grants(t: str, p: dict) -> list[Grant]:
    """Every (role, member, condition) an IAM resource grants, whichever of the provider's forms it uses."""
    if not t.startswith("gcp:"):
        return []
    out: list[Grant] = []
    if IAM_TYPE.search(t):
        role = str(p.get("role") or "")
        cond = _condition_expr(p.get("condition"))
        if isinstance(p.get("member"), str):
            out.append(Grant(role, p["member"], cond))
        out.extend(Grant(role, m, cond) for m in (p.get("members") or []) if isinstance(m, str))
        policy = p.get("policyData")
        if isinstance(policy, str) and known(policy):
            try:
                policy = json.loads(policy)
            except ValueError:
                policy = None
        if isinstance(policy, dict):
            for b in policy.get("bindings") or []:
                out.extend(Grant(str(b.get("role") or ""), m, _condition_expr(b.get("condition")))
                           for m in b.get("members") or [] if isinstance(m, str))
            for ac in policy.get("auditConfigs") or []:
                out.extend(_audit_exemptions(ac.get("auditLogConfigs")))
    elif AUDIT_CONFIG_TYPE.search(t):
        out.extend(_audit_exemptions(p.get("auditLogConfigs")))
    return out


def _audit_exemptions(configs: Any) -> list[Grant]:
    """A member exempted from Data Access logs reads tenant data unseen: treated like a grant."""
    return [Grant(f"audit exemption ({c.get('logType')})", m, "")
            for c in configs or [] if isinstance(c, dict)
            for m in c.get("exemptedMembers") or [] if isinstance(m, str)]


def _condition_expr(c: Any) -> str:
    c = first(c)
    return str(c.get("expression") or "") if isinstance(c, dict) else ""


CONDITION_PREFIX = re.compile(r"""startsWith\(\s*(["'])(?P<arg>.*?)\1\s*\)""")
CONDITION_NAMES = re.compile(r"""resource\.name\s*(?:==\s*|(?P<prefix>\.startsWith\(\s*))(["'])(?P<name>.*?)\2""")


def iam_condition_exact(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """`startsWith(".../databases/dev-stark")` also matches `dev-stark-labs`: a prefix must end at a `/`."""
    for g in iam_grants(args.resource_type, args.props):
        for m in CONDITION_PREFIX.finditer(g.condition):
            if not m.group("arg").endswith("/"):
                report(f"IAM condition for {g.member} ({g.role}) matches by prefix: startsWith(\"{m.group('arg')}\") "
                       "also matches every resource whose name merely begins with it (another tenant's); "
                       "match the name exactly (==) or end the prefix with '/'")


def iam_least_privilege(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t = args.resource_type
    p = args.props
    if t == "gcp:serviceaccount/key:Key":
        report("IAM: service account keys must not be created; workloads use Workload Identity (keys leak and do not expire)")
        return
    if not (t.startswith("gcp:") and IAM_TYPE.search(t)):
        return
    role = p.get("role")
    for basic in dict.fromkeys(g.role for g in iam_grants(t, p) if g.role in BASIC_ROLES):
        report(f"IAM: basic role {basic} must not be granted: it spans every service in the project")
    member = p.get("member") or ""
    if t == "gcp:projects/iAMMember:IAMMember" and role in IMPERSONATION_ROLES and TENANT_SA.match(member):
        report(f"IAM: {role} at the project lets a tenant service account impersonate every service account; grant it on one account only")
    if t == "gcp:projects/iAMMember:IAMMember" and TENANT_SA.match(member) and not p.get("condition"):
        report(f"IAM: project-wide role {role} granted to tenant service account {member}; grant on the tenant's own resources only")
    # Whose principal and whose resource a grant involves is decided by iam-tenant-scope, from the plan's own
    # resources and principals: names cannot tell (a long id's account is shortened; `stark` is in `stark-labs`).


def no_public_members(args: ResourceValidationArgs, report: ReportViolation) -> None:
    p = args.props
    members = [g.member for g in iam_grants(args.resource_type, p)]
    if not members:  # non-gcp or unknown shapes: the plain fields
        members = [p["member"]] if isinstance(p.get("member"), str) else []
        members.extend(m for m in (p.get("members") or []) if isinstance(m, str))
    for m in dict.fromkeys(members):
        if m in PUBLIC_MEMBERS:
            report(f"IAM: '{m}' must never be granted: it makes tenant resources public")
