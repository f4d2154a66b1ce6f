"""Who owns what, derived from the plan: the tenant (or the platform) of each named resource and principal,
and what an IAM grant reaches. The cross-stack rules (`iam_scope`, `deployers`, `isolation`) read it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .common import K8S_TENANT_LABEL, TENANT_LABEL, get, is_tenant_ns, labelled_tenant, labels_of
from .iam import CONDITION_NAMES, KSA_MEMBER, WI_NAMESPACE_SET, WI_POOL_SET, WI_PRINCIPAL, Grant

PLATFORM = "platform"          # owner of the platform stack's resources (pooled tenants' shared stores included)
EXTERNAL = "external"          # a principal the plan does not declare

# The component that declares a deploying identity: its scope, account, project and Kubernetes service account
# are part of the plan's ownership (the rules of `deployers` judge every grant to it by them).
DEPLOYER_TYPE = "tenancy:operator:Deployer"


@dataclass(frozen=True)
class DeployerScope:
    scope: str
    project: str
    ksa: str              # <namespace>/<name>
    urn: str

    @classmethod
    def of(cls, r: Any) -> "DeployerScope":
        p = r.props
        return cls(str(p.get("scope") or ""), str(p.get("project") or ""), str(p.get("kubernetesServiceAccount") or ""),
                   r.urn)


@dataclass
class Ownership:
    """Which tenant (or the platform) owns each named resource and principal of the resources given.

    Built from the plan itself: a tenant stack's resources are its tenant's; in the platform stack a
    `tenant` label (or a `tenant-<id>` namespace) names the tenant, anything else is the platform's.
    Kubernetes namespaces are keyed by the Workload Identity pool of the cluster they are created in.
    """
    names: dict[tuple, tuple[str, str]] = field(default_factory=dict)    # key -> (owner, urn)
    pools: dict[str, str] = field(default_factory=dict)                  # cluster key -> workload pool
    clusters: dict[str, str] = field(default_factory=dict)               # k8s provider urn -> cluster key
    projects: dict[str, str] = field(default_factory=dict)               # provider urn -> project
    tenants: set[str] = field(default_factory=set)
    deployers: dict[str, "DeployerScope"] = field(default_factory=dict)   # email -> its scope (deployer-scope)

    def owner(self, key: tuple) -> str | None:
        hit = self.names.get(key)
        return hit[0] if hit else None


def _provider_urn(r: Any) -> str | None:
    prov = getattr(r, "provider", None)
    return getattr(prov, "urn", None) or None


def _parent_urn(r: Any) -> str | None:
    parent = getattr(r, "parent", None)
    if parent is not None and getattr(parent, "urn", None):
        return parent.urn
    return getattr(getattr(r, "opts", None), "parent", None) or None


def resource_owner(tenant: str | None, r: Any) -> str:
    if tenant:
        return tenant
    lab = labels_of(r.resource_type, r.props) or {}
    return lab.get(TENANT_LABEL) or lab.get(K8S_TENANT_LABEL) or PLATFORM


def build_ownership(stacks: list[tuple[str | None, list]]) -> Ownership:
    # A plan's stacks read back from disk on each pass (tenancy.policycheck.PlanStacks) keep the ownership
    # built on the first call: every plan-wide rule asks for it.
    cached = getattr(stacks, "ownership", None)
    if cached is not None:
        return cached
    own = Ownership()
    own.tenants = {t for t, _ in stacks if t}
    clusters_by_parent: dict[str, str] = {}
    platform_clusters: list[str] = []
    for tenant, resources in stacks:
        for r in resources:
            own.tenants.update(v for v in [labelled_tenant(r)] if v)
            if r.resource_type == DEPLOYER_TYPE and isinstance(r.props.get("email"), str):
                own.deployers.setdefault(r.props["email"].lower(), DeployerScope.of(r))
            if r.resource_type == "gcp:container/cluster:Cluster":
                key = f"{r.props.get('project')}/{r.props.get('location')}/{r.props.get('name')}"
                own.pools[key] = str(get(r.props, "workloadIdentityConfig", "workloadPool") or "")
                clusters_by_parent[_parent_urn(r) or r.urn] = key
                if not tenant:
                    platform_clusters.append(key)
            elif r.resource_type == "pulumi:providers:gcp" and r.props.get("project"):
                own.projects[r.urn] = str(r.props["project"])
    shared = platform_clusters[0] if len(platform_clusters) == 1 else "the environment's shared cluster"
    for tenant, resources in stacks:
        for r in resources:
            if r.resource_type == "pulumi:providers:kubernetes":
                own.clusters[r.urn] = clusters_by_parent.get(_parent_urn(r) or "", shared)
    for tenant, resources in stacks:
        for r in resources:
            owner = resource_owner(tenant, r)
            for key in _owned_keys(r, own, tenant):
                own.names.setdefault(key, (owner, r.urn))
    if hasattr(stacks, "ownership"):
        stacks.ownership = own
    return own


def project_of(r: Any, own: Ownership) -> str:
    return str(r.props.get("project") or own.projects.get(_provider_urn(r) or "", ""))


def cluster_of(r: Any, own: Ownership) -> str:
    return own.clusters.get(_provider_urn(r) or "", "the environment's shared cluster")


def _owned_keys(r: Any, own: Ownership, tenant: str | None) -> list[tuple]:
    t, p = r.resource_type, r.props
    project = project_of(r, own)
    if t == "gcp:storage/bucket:Bucket":
        return [("bucket", p.get("name"))]
    if t == "gcp:secretmanager/secret:Secret":
        return [("secret", project, p.get("secretId"))]
    if t == "gcp:serviceaccount/account:Account":
        return [("gsa", f"{p.get('accountId')}@{project}.iam.gserviceaccount.com")]
    if t == "gcp:firestore/database:Database":
        return [("firestore", project, p.get("name"))]
    if t == "gcp:sql/databaseInstance:DatabaseInstance":
        return [("sql", project, p.get("name"))]
    if t == "gcp:kms/keyRing:KeyRing":
        return [("kms", f"projects/{project}/locations/{p.get('location')}/keyRings/{p.get('name')}")]
    if t == "gcp:kms/cryptoKey:CryptoKey":
        return [("kms", f"{p.get('keyRing')}/cryptoKeys/{p.get('name')}")]
    if t == "gcp:organizations/project:Project" and tenant:
        keys: list[tuple] = [("project", p.get("projectId"))]
        if p.get("folderId"):
            keys.append(("folder-of", str(p["folderId"]), tenant))
        return keys
    if t == "pulumi:providers:gcp" and not tenant and p.get("project"):
        return [("project", p.get("project"))]
    if t == "kubernetes:core/v1:Namespace":
        name = get(p, "metadata", "name")
        pool = own.pools.get(cluster_of(r, own), "")
        return [("namespace", pool, name), ("namespace", "", name)]
    return []


def _namespace_owner(own: Ownership, pool: str, ns: str) -> str:
    owner = own.owner(("namespace", pool, ns)) or own.owner(("namespace", "", ns))
    if owner:
        return owner
    return ns[len("tenant-"):] if is_tenant_ns(ns) else EXTERNAL


def principal_owners(member: str, own: Ownership) -> tuple[set[str], str]:
    """The owners a member stands for (one, or every owner of a pool) and how to name it in a message."""
    if m := KSA_MEMBER.match(member) or WI_PRINCIPAL.match(member):
        return {_namespace_owner(own, m["pool"], m["ns"])}, f"Kubernetes service account {m['ns']}/{m['ksa']}"
    if m := WI_NAMESPACE_SET.match(member):
        return {_namespace_owner(own, m["pool"], m["ns"])}, f"every workload of namespace {m['ns']}"
    if m := WI_POOL_SET.match(member):
        owners = {o for (kind, pool, _), (o, _) in own.names.items() if kind == "namespace" and pool == m["pool"]}
        return owners | {PLATFORM}, f"every workload of pool {m['pool']}"
    kind, _, ident = member.partition(":")
    if kind == "serviceAccount":
        return {own.owner(("gsa", ident.lower())) or EXTERNAL}, "service account"
    return {EXTERNAL}, kind or "principal"


def _path_owner(path: str, own: Ownership) -> tuple[str, str | None]:
    """(description, owner) of a resource name as IAM conditions and `...Id` inputs spell it."""
    path = path.rstrip("/")
    if m := re.match(r"^projects/([^/]+)/databases/([^/]+)", path):
        return f"Firestore database {m[1]}/{m[2]}", own.owner(("firestore", m[1], m[2]))
    if m := re.match(r"^projects/[^/]+/buckets/([^/]+)", path):
        return f"bucket {m[1]}", own.owner(("bucket", m[1]))
    if m := re.match(r"^projects/([^/]+)/secrets/([^/]+)", path):
        return f"secret {m[1]}/{m[2]}", own.owner(("secret", m[1], m[2]))
    if m := re.match(r"^projects/([^/]+)/instances/([^/]+)", path):
        return f"Cloud SQL instance {m[1]}/{m[2]}", own.owner(("sql", m[1], m[2]))
    if m := re.match(r"^(projects/[^/]+/locations/[^/]+/keyRings/[^/]+(/cryptoKeys/[^/]+)?)", path):
        return f"KMS key {m[1]}", own.owner(("kms", m[1]))
    if m := re.match(r"^projects/[^/]+/serviceAccounts/([^/]+)", path):
        return f"service account {m[1]}", own.owner(("gsa", m[1].lower()))
    return f"resource {path}", None


def _prefix_matches(prefix: str, own: Ownership) -> list[tuple[str, str]]:
    """Every resource of the plan a startsWith() prefix matches: a prefix without '/' reaches neighbours."""
    found = []
    for key, (owner, _) in own.names.items():
        if key[0] in ("firestore", "secret", "sql"):
            kind = {"firestore": "databases", "secret": "secrets", "sql": "instances"}[key[0]]
            path = f"projects/{key[1]}/{kind}/{key[2]}"
        elif key[0] == "bucket":
            path = f"projects/_/buckets/{key[1]}"
        elif key[0] == "kms":
            path = key[1]
        else:
            continue
        if path.startswith(prefix) or (path + "/").startswith(prefix):
            found.append((_path_owner(path, own)[0], owner))
    return found


def grant_targets(r: Any, g: Grant, own: Ownership) -> list[tuple[str, set[str] | None, bool]]:
    """What a grant reaches: [(description, owners or None when unknown, project-level?)]."""
    t, p = r.resource_type, r.props
    terms = [(m.group("name"), bool(m.group("prefix"))) for m in CONDITION_NAMES.finditer(g.condition)]
    if terms:
        out = []
        for name, is_prefix in terms:
            desc, owner = _path_owner(name, own)
            out.append((desc, {owner} if owner else None, False))
            # `resource.name == "x"` names x alone; only a startsWith() without a closing '/' reaches neighbours.
            if is_prefix and not name.endswith("/"):
                out.extend((d, {o}, False) for d, o in _prefix_matches(name, own) if o != owner)
        return out
    project = project_of(r, own)
    if t.startswith("gcp:storage/bucketIAM"):
        owner = own.owner(("bucket", str(p.get("bucket") or "").removeprefix("b/")))
        return [(f"bucket {p.get('bucket')}", {owner} if owner else None, False)]
    if t.startswith("gcp:secretmanager/secretIam"):
        sid = str(p.get("secretId") or "")
        desc, owner = _path_owner(sid if sid.startswith("projects/") else f"projects/{project}/secrets/{sid}", own)
        return [(desc, {owner} if owner else None, False)]
    if t.startswith("gcp:kms/"):
        desc, owner = _path_owner(str(p.get("cryptoKeyId") or p.get("keyRingId") or ""), own)
        return [(desc, {owner} if owner else None, False)]
    if t.startswith("gcp:serviceaccount/"):
        sid = str(p.get("serviceAccountId") or "")
        desc, owner = _path_owner(sid if sid.startswith("projects/") else f"projects/-/serviceAccounts/{sid}", own)
        return [(desc, {owner} if owner else None, False)]
    if t.startswith("gcp:projects/"):
        owner = own.owner(("project", project))
        return [(f"project {project}", {owner} if owner else None, True)]
    if t.startswith("gcp:folder/"):
        folder = str(p.get("folder") or "").removeprefix("folders/")
        owners = {k[2] for k in own.names if k[0] == "folder-of" and k[1] == folder} or {PLATFORM}
        return [(f"folder {folder} (every project in it)", owners, True)]
    if t.startswith("gcp:organizations/"):
        return [(f"organization {p.get('orgId')} (every project in it)", set(own.tenants) | {PLATFORM}, True)]
    for key in ("instance", "database", "topic", "subscription", "repository", "datasetId", "name"):
        if isinstance(p.get(key), str):
            desc, owner = _path_owner(p[key], own)
            return [(f"{t.split(':')[-1]} {p[key]}", {owner} if owner else None, False)]
    return [(t.split(":")[-1], None, False)]
