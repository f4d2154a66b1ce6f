"""Tenant isolation across resources and stacks: the tenant label, one tenant per stack, and the plan-wide
rules (no store shared by two tenants, one physical name per real object, one tenant per Ingress host)."""

from __future__ import annotations

import json
from typing import Any

from pulumi_policy import ReportViolation, ResourceValidationArgs, StackValidationArgs

from . import ownership
from .common import K8S_TENANT_LABEL, TENANT_LABEL, Reporter, get, known, labels_of, tenant_of_stack
from .iam import IAM_TYPE
from .ownership import PLATFORM, Ownership, cluster_of, project_of, resource_owner


def tenant_label_present(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Resources of a tenant stack carry the tenant label (cost and usage attribution, cross-tenant audits)."""
    stack_tenant = tenant_of_stack(args)
    if stack_tenant is None:
        return
    lab = labels_of(args.resource_type, args.props)
    if lab is None:
        return
    if lab.get(TENANT_LABEL, lab.get(K8S_TENANT_LABEL)) != stack_tenant:
        report(f"resource of tenant '{stack_tenant}' must carry the label {TENANT_LABEL}={stack_tenant}")


def one_tenant_per_stack(args: StackValidationArgs, report: ReportViolation) -> None:
    """A tenant stack holds resources of exactly one tenant."""
    tenants = {}
    for r in args.resources:
        lab = labels_of(r.resource_type, r.props) or {}
        tid = lab.get(TENANT_LABEL) or lab.get(K8S_TENANT_LABEL)
        if tid:
            tenants.setdefault(tid, r.urn)
    if len(tenants) > 1:
        report(f"one stack holds resources of tenants {', '.join(sorted(tenants))}: a tenant stack must hold exactly one tenant")


def shared_across_tenants(stacks: list[tuple[str | None, list]], report: Reporter) -> None:
    """Across the whole plan: no namespace, bucket or database instance belongs to two tenants.

    `stacks` is [(tenant id or None for the platform stack, PolicyResources)]. The platform stack's shared
    resources (pooled namespace, shared bucket, pooled instance) carry no tenant and are not counted.
    """
    owners: dict[tuple[str, str], tuple[str, str]] = {}
    for tenant, resources in stacks:
        for r in resources:
            kind_name = _shareable_name(r.resource_type, r.props)
            if kind_name is None:
                continue
            lab = labels_of(r.resource_type, r.props) or {}
            owner = tenant or lab.get(TENANT_LABEL) or lab.get(K8S_TENANT_LABEL)
            if owner is None:
                continue
            if kind_name[0] == "namespace" and lab.get("tenancy.io/model") == "dedicated":
                kind_name = ("namespace", f"{kind_name[1]} (cluster of {owner})")  # its own cluster
            seen = owners.setdefault(kind_name, (owner, r.urn))
            if seen[0] != owner:
                report(f"{kind_name[0]} '{kind_name[1]}' is used by tenants '{seen[0]}' and '{owner}': "
                       "tenant data stores are never shared", r.urn)


def _shareable_name(t: str, p: dict) -> tuple[str, str] | None:
    if t == "kubernetes:core/v1:Namespace":
        return ("namespace", get(p, "metadata", "name"))
    if t == "gcp:storage/bucket:Bucket":
        return ("bucket", p.get("name"))
    if t == "gcp:sql/databaseInstance:DatabaseInstance":
        return ("database instance", p.get("name"))
    if t == "gcp:firestore/database:Database":
        return ("Firestore database", f"{p.get('project')}/{p.get('name')}")
    return None


def _scoped_name(r: Any, own: Ownership) -> tuple | None:
    """A resource's physical name scoped as its provider scopes it, or None for kinds without one."""
    t, p = r.resource_type, r.props
    project = project_of(r, own)
    region = p.get("region") or p.get("location") or ""
    simple = {
        "gcp:storage/bucket:Bucket": ("bucket (global)", p.get("name")),
        "gcp:organizations/project:Project": ("project id (global)", p.get("projectId")),
        "gcp:serviceaccount/account:Account": ("service account", project, p.get("accountId")),
        "gcp:sql/databaseInstance:DatabaseInstance": ("Cloud SQL instance", project, p.get("name")),
        "gcp:sql/database:Database": ("Cloud SQL database", project, p.get("instance"), p.get("name")),
        "gcp:sql/user:User": ("Cloud SQL user", project, p.get("instance"), p.get("name"), p.get("host") or ""),
        "gcp:firestore/database:Database": ("Firestore database", project, p.get("name")),
        "gcp:secretmanager/secret:Secret": ("secret", project, p.get("secretId")),
        "gcp:compute/network:Network": ("network", project, p.get("name")),
        "gcp:compute/globalAddress:GlobalAddress": ("global address", project, p.get("name")),
        "gcp:compute/address:Address": ("address", project, region, p.get("name")),
        "gcp:compute/subnetwork:Subnetwork": ("subnetwork", project, region, p.get("name")),
        "gcp:compute/router:Router": ("router", project, region, p.get("name")),
        "gcp:compute/routerNat:RouterNat": ("router NAT", project, region, p.get("router"), p.get("name")),
        "gcp:kms/keyRing:KeyRing": ("key ring", project, region, p.get("name")),
        "gcp:kms/cryptoKey:CryptoKey": ("crypto key", p.get("keyRing"), p.get("name")),
        "gcp:container/cluster:Cluster": ("GKE cluster", project, region, p.get("name")),
        "gcp:container/nodePool:NodePool": ("node pool", project, region, p.get("cluster"), p.get("name")),
        "gcp:dns/managedZone:ManagedZone": ("DNS zone", project, p.get("name")),
        "gcp:dns/recordSet:RecordSet": ("DNS record", project, p.get("managedZone"), p.get("name"), p.get("type")),
        "gcp:logging/projectSink:ProjectSink": ("log sink", project, p.get("name")),
        "gcp:projects/service:Service": ("enabled API", project, p.get("service")),
        "gcp:projects/iAMAuditConfig:IAMAuditConfig": ("audit config", project, p.get("service")),
        "gcp:servicenetworking/connection:Connection": ("service networking peering", p.get("network"), p.get("service")),
        "gcp:identityplatform/config:Config": ("Identity Platform config", project),
    }
    if t in simple:
        return simple[t]
    if t.startswith("gcp:") and IAM_TYPE.search(t):
        # Two stacks managing one grant (or one authoritative binding/policy) remove each other's on destroy.
        kind = t.split(":")[-1]
        drop = ("members",) if kind.lower().endswith("iambinding") else ("policyData",) if kind.lower().endswith("iampolicy") else ()
        return ("IAM " + kind, json.dumps({k: v for k, v in p.items() if k not in drop}, sort_keys=True))
    if t == "kubernetes:helm.sh/v3:Release":
        return ("Helm release", cluster_of(r, own), p.get("namespace") or "default", p.get("name"))
    if t.startswith("kubernetes:") and isinstance(p.get("metadata"), dict) and p.get("kind"):
        group = str(p.get("apiVersion") or "").rpartition("/")[0]
        return ("Kubernetes object", cluster_of(r, own), get(p, "metadata", "namespace") or "", f"{p['kind']}.{group}".rstrip("."),
                get(p, "metadata", "name"))
    return None


def unique_physical_names(stacks: list[tuple[str | None, list]], report: Reporter) -> None:
    """Two resources of the plan with one physical name fight over one real object (or fail to create)."""
    own = ownership.build_ownership(stacks)
    seen: dict[tuple, str] = {}
    for _, resources in stacks:
        for r in resources:
            key = _scoped_name(r, own)
            if key is None or any(k is None or not known(k) for k in key[1:]):
                continue
            first = seen.setdefault(key, r.urn)
            if first != r.urn:
                report(f"{key[0]} {'/'.join(str(k) for k in key[1:] if k != '')} is declared twice, by {first} and "
                       f"{r.urn}: one physical name in its scope is one real object", r.urn)


def _ingress_hosts(r: Any) -> list[str]:
    if r.resource_type != "kubernetes:networking.k8s.io/v1:Ingress":
        return []
    spec = r.props.get("spec") or {}
    hosts = [rule.get("host") for rule in spec.get("rules") or []]
    hosts += [h for tls in spec.get("tls") or [] for h in tls.get("hosts") or []]
    return [h for h in dict.fromkeys(hosts) if isinstance(h, str) and h]


def _host_matches(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return rest == pattern[2:] and bool(head)
    return pattern == host


def ingress_host_claims(stacks: list[tuple[str | None, list]], report: Reporter) -> None:
    """A host served by two tenants' Ingresses (or one tenant's wildcard) routes one tenant's users to another."""
    claims: list[tuple[str, str, str]] = []       # (host, owner, urn)
    for tenant, resources in stacks:
        for r in resources:
            claims.extend((h, resource_owner(tenant, r), r.urn) for h in _ingress_hosts(r))
    for i, (host, owner, urn) in enumerate(claims):
        for other_host, other_owner, other_urn in claims[:i]:
            if other_owner != owner and (_host_matches(host, other_host) or _host_matches(other_host, host)):
                report(f"Ingress host {host} of {_owner_name(owner)} collides with {other_host} of "
                       f"{_owner_name(other_owner)} ({other_urn}): a host belongs to one tenant", urn)


def _owner_name(owner: str) -> str:
    return "the platform" if owner == PLATFORM else f"tenant '{owner}'"
