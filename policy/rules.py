"""The isolation rules of the tenancy policy pack, as plain functions.

Each rule takes `ResourceValidationArgs` (or `StackValidationArgs`) and a reporter, and says why it
exists in its message. `policy/__main__.py` only assembles them into a PolicyPack; `tenancy plan` and
`tenancy policy-check` call these same objects offline.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

SECRET_MARKER = "[secret]"     # how the offline recorder writes a secret value
UNKNOWN_MARKER = "[unknown]"
TENANT_LABEL = "tenant"
K8S_TENANT_LABEL = "tenancy.io/tenant"
COMPUTE_DEFAULT_SA = re.compile(r"^\d+-compute@developer\.gserviceaccount\.com$")
PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")
BASIC_ROLES = ("roles/owner", "roles/editor", "roles/viewer")
IMPERSONATION_ROLES = ("roles/iam.serviceAccountUser", "roles/iam.serviceAccountTokenCreator")
TENANT_SA = re.compile(r"^serviceAccount:t-[a-z0-9]+-(?P<tenant>[a-z0-9-]+?)@")
IAM_TYPE = re.compile(r"iam(member|binding|policy)$", re.I)
STATEFUL_TYPES = (
    "gcp:sql/databaseInstance:DatabaseInstance",
    "gcp:sql/database:Database",
    "gcp:firestore/database:Database",
    "gcp:storage/bucket:Bucket",
    "gcp:container/cluster:Cluster",
    "gcp:identityplatform/tenant:Tenant",
    "gcp:kms/cryptoKey:CryptoKey",
    "gcp:dns/managedZone:ManagedZone",
    "kubernetes:core/v1:PersistentVolumeClaim",
)
# Minimum backup retention per isolation model (days); overridable through the pack's config.
DEFAULT_MIN_RETENTION = {"pooled": 7, "namespace": 30, "dedicated": 30}

Reporter = Callable[..., None]


def _get(d: Any, *path: str, default: Any = None) -> Any:
    for p in path:
        if not isinstance(d, (dict,)) and not hasattr(d, "get"):
            return default
        d = d.get(p) if d is not None else None
        if d is None:
            return default
    return d


def _first(v: Any) -> Any:
    """Nested blocks are lists of one element in the engine's form of some providers."""
    if isinstance(v, (list, tuple)):
        return v[0] if v else None
    return v


def _known(v: Any) -> bool:
    return v != UNKNOWN_MARKER and v is not None


def _is_tenant_ns(ns: str | None) -> bool:
    return bool(ns) and ns.startswith("tenant-")


# ------------------------------------------------------------------------------------------------- GKE

def gke_cluster_hardened(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != "gcp:container/cluster:Cluster":
        return
    p = args.props
    checks = [
        (_get(p, "workloadIdentityConfig", "workloadPool"), "Workload Identity must be on (workloadIdentityConfig.workloadPool): pods must not use node credentials"),
        (_get(p, "privateClusterConfig", "enablePrivateNodes") is True, "private nodes must be on: nodes must have no public IPs"),
        (p.get("enableShieldedNodes") is True, "shielded nodes must be on (secure boot and integrity monitoring resist rootkits)"),
        (p.get("datapathProvider") == "ADVANCED_DATAPATH" or _get(p, "networkPolicy", "enabled") is True,
         "network policy enforcement (Dataplane V2) must be on: tenant default-deny NetworkPolicies depend on it"),
        (p.get("enableLegacyAbac") in (None, False), "legacy ABAC must be off: it grants broad rights outside RBAC"),
        (_get(p, "masterAuth", "clientCertificateConfig", "issueClientCertificate") in (None, False),
         "client certificates must be off: they cannot be revoked"),
        (_get(p, "releaseChannel", "channel") not in (None, "UNSPECIFIED"), "a release channel must be set so security patches arrive"),
        (_get(p, "databaseEncryption", "state") == "ENCRYPTED", "application-layer secrets encryption (Cloud KMS) must be on"),
        (p.get("enableKubernetesAlpha") in (None, False), "alpha features must be off: alpha clusters get no upgrades or SLA"),
        (bool(_get(p, "loggingConfig", "enableComponents")) or p.get("loggingService") not in (None, "none"),
         "logging must be on (loggingConfig)"),
        (bool(_get(p, "monitoringConfig", "enableComponents")) or p.get("monitoringService") not in (None, "none"),
         "monitoring must be on (monitoringConfig)"),
    ]
    for ok, message in checks:
        if not ok:
            report(f"GKE cluster: {message}")
    node_config = p.get("nodeConfig")
    if node_config is not None:
        _check_node_config(node_config, "cluster's default node config", report)


def gke_node_pool_hardened(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != "gcp:container/nodePool:NodePool":
        return
    p = args.props
    if _get(p, "management", "autoRepair") is not True or _get(p, "management", "autoUpgrade") is not True:
        report("GKE node pool: auto-repair and auto-upgrade must be on so nodes get security patches")
    _check_node_config(p.get("nodeConfig") or {}, "node pool", report)


def _check_node_config(nc: dict, where: str, report: ReportViolation) -> None:
    sa = nc.get("serviceAccount")
    if not sa or sa == "default" or (isinstance(sa, str) and COMPUTE_DEFAULT_SA.match(sa)):
        report(f"GKE {where}: nodes must run as a dedicated service account, never the Compute default (it has Editor)")
    if _get(nc, "workloadMetadataConfig", "mode") != "GKE_METADATA":
        report(f"GKE {where}: workloadMetadataConfig.mode must be GKE_METADATA so pods cannot read node credentials")
    shielded = nc.get("shieldedInstanceConfig") or {}
    if shielded.get("enableSecureBoot") is not True or shielded.get("enableIntegrityMonitoring") is False:
        report(f"GKE {where}: shielded nodes need secure boot and integrity monitoring")


# -------------------------------------------------------------------------------------------- Cloud SQL

def cloudsql_private_ssl_backups(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != "gcp:sql/databaseInstance:DatabaseInstance":
        return
    p = args.props
    s = _first(p.get("settings")) or {}
    ip = _first(s.get("ipConfiguration")) or {}
    if ip.get("ipv4Enabled") is not False:
        report("Cloud SQL: public IP must be off (settings.ipConfiguration.ipv4Enabled=false); tenants' data is reached over private IP only")
    if ip.get("sslMode") not in ("ENCRYPTED_ONLY", "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"):
        report("Cloud SQL: sslMode must be ENCRYPTED_ONLY (or TRUSTED_CLIENT_CERTIFICATE_REQUIRED): no clear-text connections")
    if p.get("masterInstanceName"):
        return  # replicas inherit backups from their primary
    b = _first(s.get("backupConfiguration")) or {}
    if b.get("enabled") is not True or b.get("pointInTimeRecoveryEnabled") is not True:
        report("Cloud SQL: backups and point-in-time recovery must be on: a tenant's data must be recoverable")
    retained = _get(_first(b.get("backupRetentionSettings")) or {}, "retainedBackups")
    model = (s.get("userLabels") or {}).get("model", "pooled")
    minimum = int(args.get_config().get(f"minRetention_{model}", DEFAULT_MIN_RETENTION.get(model, 7)))
    if _known(retained) and int(retained) < minimum:
        report(f"Cloud SQL: {retained} retained backups is below the {model} minimum of {minimum} days")
    if s.get("deletionProtectionEnabled") is not True or p.get("deletionProtection") is False:
        report("Cloud SQL: deletion protection must be on at the API (settings.deletionProtectionEnabled) and in the provider")


# ---------------------------------------------------------------------------------------------- Storage

def storage_bucket_private(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != "gcp:storage/bucket:Bucket":
        return
    p = args.props
    if p.get("uniformBucketLevelAccess") is not True:
        report("bucket: uniform bucket-level access must be on: access is decided by IAM only, never per-object ACLs")
    if p.get("publicAccessPrevention") != "enforced":
        report("bucket: public access prevention must be 'enforced' so no grant can make tenant objects public")
    if (p.get("labels") or {}).get(TENANT_LABEL) and _get(_first(p.get("versioning")) or {}, "enabled") is not True:
        report("tenant bucket: versioning must be on so overwritten or deleted objects can be recovered")


def no_public_members(args: ResourceValidationArgs, report: ReportViolation) -> None:
    p = args.props
    members = []
    if isinstance(p.get("member"), str):
        members.append(p["member"])
    members.extend(m for m in (p.get("members") or []) if isinstance(m, str))
    for m in members:
        if m in PUBLIC_MEMBERS:
            report(f"IAM: '{m}' must never be granted: it makes tenant resources public")


# -------------------------------------------------------------------------------------------------- IAM

def iam_least_privilege(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t = args.resource_type
    p = args.props
    if t == "gcp:serviceaccount/key:Key":
        report("IAM: service account keys must not be created; workloads use Workload Identity (keys leak and do not expire)")
        return
    if not (t.startswith("gcp:") and IAM_TYPE.search(t)):
        return
    role = p.get("role")
    if role in BASIC_ROLES:
        report(f"IAM: basic role {role} must not be granted: it spans every service in the project")
    member = p.get("member") or ""
    if t == "gcp:projects/iAMMember:IAMMember" and role in IMPERSONATION_ROLES and TENANT_SA.match(member):
        report(f"IAM: {role} at the project lets a tenant service account impersonate every service account; grant it on one account only")
    if t == "gcp:projects/iAMMember:IAMMember" and TENANT_SA.match(member) and not p.get("condition"):
        report(f"IAM: project-wide role {role} granted to tenant service account {member}; grant on the tenant's own resources only")
    tenant = _stack_tenant(args)
    if tenant and TENANT_SA.match(member):
        target = " ".join(str(p.get(k) or "") for k in ("bucket", "secretId", "cryptoKeyId", "serviceAccountId"))
        target += " " + str((p.get("condition") or {}).get("expression") or "")
        if not re.search(rf"(^|[-/\s\"]){re.escape(tenant)}($|[-/\s\"@])", member):
            report(f"IAM: stack of tenant '{tenant}' grants {role} to another tenant's service account {member}")
        elif target.strip() and not re.search(rf"(^|[-/\s\"]){re.escape(tenant)}($|[-/\s\"])", target):
            report(f"IAM: tenant service account {member} is granted {role} on '{target.strip()}', which is not tenant '{tenant}''s")


# ------------------------------------------------------------------------------------------- Kubernetes

def k8s_no_cluster_admin_for_tenants(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t = args.resource_type
    if t not in ("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding", "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"):
        return
    p = args.props
    subjects = p.get("subjects") or []
    ns = _get(p, "metadata", "namespace")
    tenantish = [s for s in subjects if _is_tenant_subject(s)] or (subjects if _is_tenant_ns(ns) else [])
    if not tenantish:
        return
    if t.endswith("ClusterRoleBinding"):
        report("Kubernetes: no ClusterRoleBinding may name a tenant subject: tenants act in their own namespace only")
    role = _get(p, "roleRef", "name")
    if role in ("admin", "edit", "cluster-admin"):
        report(f"Kubernetes: the built-in '{role}' role must not be bound to tenants: it can edit quotas and NetworkPolicies")


def _is_tenant_subject(s: dict) -> bool:
    return _is_tenant_ns(s.get("namespace")) or str(s.get("name", "")).startswith("tenant-")


def k8s_no_exposed_services(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != "kubernetes:core/v1:Service":
        return
    ns = _get(args.props, "metadata", "namespace")
    kind = _get(args.props, "spec", "type") or "ClusterIP"
    if (_is_tenant_ns(ns) or ns == "pooled") and kind in ("NodePort", "LoadBalancer"):
        report(f"Kubernetes: a {kind} service in tenant namespace {ns} bypasses the shared ingress and its limits")


WORKLOAD_KINDS = {"Pod": ("spec",), "Deployment": ("spec", "template", "spec"), "StatefulSet": ("spec", "template", "spec"),
                  "DaemonSet": ("spec", "template", "spec"), "Job": ("spec", "template", "spec"),
                  "CronJob": ("spec", "jobTemplate", "spec", "template", "spec")}


def k8s_containers_declare_resources(args: ResourceValidationArgs, report: ReportViolation) -> None:
    kind = args.props.get("kind")
    if not args.resource_type.startswith("kubernetes:") or kind not in WORKLOAD_KINDS:
        return
    pod = _get(args.props, *WORKLOAD_KINDS[kind]) or {}
    for c in list(pod.get("containers") or []) + list(pod.get("initContainers") or []):
        res = c.get("resources") or {}
        if not res.get("requests") or not res.get("limits"):
            report(f"Kubernetes: container '{c.get('name')}' must declare resource requests and limits (quota accounting, noisy neighbours)")


# ---------------------------------------------------------------------------------------------- secrets

SECRET_FIELDS = {
    "gcp:sql/user:User": ("password",),
    "gcp:secretmanager/secretVersion:SecretVersion": ("secretData",),
    "kubernetes:core/v1:Secret": ("data", "stringData"),
}
SECRETISH_KEY = re.compile(r"(password|passwd|token|apikey|api_key|privatekey|private_key|credentials)$", re.I)


def no_plaintext_secrets(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Only decidable where secrets are masked (the offline plan): the engine hands policies decrypted values."""
    if not args.get_config().get("secretsMasked"):
        return
    p = args.props
    for field in SECRET_FIELDS.get(args.resource_type, ()):
        value = p.get(field)
        if isinstance(value, dict):
            for k, v in value.items():
                if v not in (SECRET_MARKER, UNKNOWN_MARKER):
                    report(f"secret value {field}.{k} is plain text: it must come from a secret output (pulumi.Output.secret)")
        elif value is not None and value not in (SECRET_MARKER, UNKNOWN_MARKER):
            report(f"secret value {field} is plain text: it must come from a secret output (pulumi.Output.secret)")
    if args.resource_type == "kubernetes:helm.sh/v3:Release":
        for path, v in _walk(p.get("values") or {}):
            if SECRETISH_KEY.search(path[-1]) and isinstance(v, str) and v not in (SECRET_MARKER, UNKNOWN_MARKER):
                report(f"Helm value {'.'.join(path)} looks like a secret in plain text; pass a secret name or a secret output")


def _walk(d: Any, path: tuple = ()) -> Iterable[tuple[tuple, Any]]:
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _walk(v, path + (str(k),))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _walk(v, path + (str(i),))
    elif path:
        yield path, d


# ----------------------------------------------------------------------------------- ownership, protection

def tenant_label_present(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Resources of a tenant stack carry the tenant label (cost and usage attribution, cross-tenant audits)."""
    stack_tenant = _stack_tenant(args)
    if stack_tenant is None:
        return
    lab = _labels_of(args.resource_type, args.props)
    if lab is None:
        return
    if lab.get(TENANT_LABEL, lab.get(K8S_TENANT_LABEL)) != stack_tenant:
        report(f"resource of tenant '{stack_tenant}' must carry the label {TENANT_LABEL}={stack_tenant}")


def _labels_of(t: str, p: dict) -> dict | None:
    if t.startswith("kubernetes:") and "metadata" in p and "helm.sh" not in t:
        return _get(p, "metadata", "labels", default={})
    # userLabels first: for monitoring resources `labels` is configuration (a channel's address), not labels
    for key in ("userLabels", "resourceLabels", "labels"):
        if key in p:
            return p.get(key) or {}
    if t == "gcp:sql/databaseInstance:DatabaseInstance":
        return (_first(p.get("settings")) or {}).get("userLabels") or {}
    return None


def _stack_tenant(args: ResourceValidationArgs) -> str | None:
    """The tenant of a tenant stack, from the stack name in the URN (`<env>.<tenant-id>`)."""
    try:
        stack = args.urn.split("::")[0].split(":", 2)[2]
    except (AttributeError, IndexError):
        return None
    env, _, tenant = stack.partition(".")
    return tenant or None


def stateful_protected(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in STATEFUL_TYPES:
        return
    if not args.opts.protect:
        report(f"stateful resource {args.resource_type} must be protected (protect=True): it holds tenant data")


# ------------------------------------------------------------------------------------------- stack-level

def tenant_namespace_guardrails(args: StackValidationArgs, report: ReportViolation) -> None:
    """Every tenant namespace has quota (cpu, memory, storage, object counts), LimitRange, default-deny, PSA."""
    by_ns: dict[str, dict[str, list]] = {}
    namespaces: dict[str, Any] = {}
    for r in args.resources:
        t = r.resource_type
        p = r.props
        if t == "kubernetes:core/v1:Namespace":
            name = _get(p, "metadata", "name")
            if _is_tenant_ns(name) or name == "pooled":
                namespaces[name] = r
            continue
        ns = _get(p, "metadata", "namespace")
        if ns:
            by_ns.setdefault(ns, {}).setdefault(t, []).append(p)
    for name, r in namespaces.items():
        labels = _get(r.props, "metadata", "labels", default={})
        if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
            report(f"namespace {name}: Pod Security must enforce 'restricted'", r.urn)
        objs = by_ns.get(name, {})
        quotas = objs.get("kubernetes:core/v1:ResourceQuota", [])
        hard: dict = {}
        for q in quotas:
            hard.update(_get(q, "spec", "hard", default={}))
        needed = ("requests.cpu", "requests.memory", "requests.storage", "pods", "persistentvolumeclaims",
                  "services.loadbalancers", "services.nodeports")
        missing = [k for k in needed if k not in hard]
        if missing:
            report(f"namespace {name}: ResourceQuota must cover {', '.join(missing)}", r.urn)
        if not objs.get("kubernetes:core/v1:LimitRange"):
            report(f"namespace {name}: a LimitRange must give containers default requests and limits", r.urn)
        deny = [np for np in objs.get("kubernetes:networking.k8s.io/v1:NetworkPolicy", [])
                if _get(np, "spec", "podSelector") == {} and set(_get(np, "spec", "policyTypes", default=[])) >= {"Ingress", "Egress"}
                and not _get(np, "spec", "ingress") and not _get(np, "spec", "egress")]
        if not deny:
            report(f"namespace {name}: a default-deny NetworkPolicy (ingress and egress) must exist", r.urn)


def one_tenant_per_stack(args: StackValidationArgs, report: ReportViolation) -> None:
    """A tenant stack holds resources of exactly one tenant."""
    tenants = {}
    for r in args.resources:
        lab = _labels_of(r.resource_type, r.props) or {}
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
            lab = _labels_of(r.resource_type, r.props) or {}
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
        return ("namespace", _get(p, "metadata", "name"))
    if t == "gcp:storage/bucket:Bucket":
        return ("bucket", p.get("name"))
    if t == "gcp:sql/databaseInstance:DatabaseInstance":
        return ("database instance", p.get("name"))
    if t == "gcp:firestore/database:Database":
        return ("Firestore database", f"{p.get('project')}/{p.get('name')}")
    return None


def _mandatory(name: str, description: str, validate, config_schema: PolicyConfigSchema | None = None) -> ResourceValidationPolicy:
    return ResourceValidationPolicy(name=name, description=description, validate=validate,
                                    enforcement_level=EnforcementLevel.MANDATORY, config_schema=config_schema)


RETENTION_SCHEMA = PolicyConfigSchema(properties={
    f"minRetention_{m}": {"type": "integer", "default": d, "minimum": 1} for m, d in DEFAULT_MIN_RETENTION.items()})
SECRETS_SCHEMA = PolicyConfigSchema(properties={"secretsMasked": {"type": "boolean", "default": False}})

RESOURCE_POLICIES = [
    _mandatory("gke-cluster-hardened", "GKE clusters follow the CIS GKE benchmark", gke_cluster_hardened),
    _mandatory("gke-node-pool-hardened", "GKE node pools run hardened, patched nodes", gke_node_pool_hardened),
    _mandatory("cloudsql-private-ssl-backups", "Cloud SQL is private, encrypted in transit, backed up, protected",
               cloudsql_private_ssl_backups, RETENTION_SCHEMA),
    _mandatory("storage-bucket-private", "Buckets are IAM-only, never public, versioned for tenants", storage_bucket_private),
    _mandatory("no-public-members", "allUsers/allAuthenticatedUsers are never granted", no_public_members),
    _mandatory("iam-least-privilege", "No basic roles, no keys, no project-wide grants to tenant accounts", iam_least_privilege),
    _mandatory("k8s-tenant-rbac", "Tenants get no cluster-wide or built-in admin rights", k8s_no_cluster_admin_for_tenants),
    _mandatory("k8s-no-exposed-services", "No NodePort/LoadBalancer services in tenant namespaces", k8s_no_exposed_services),
    _mandatory("k8s-container-resources", "Containers declare requests and limits", k8s_containers_declare_resources),
    _mandatory("no-plaintext-secrets", "Secret inputs come from secret outputs", no_plaintext_secrets, SECRETS_SCHEMA),
    _mandatory("tenant-label", "Tenant resources carry the tenant label", tenant_label_present),
    _mandatory("stateful-protected", "Stateful resources are protected", stateful_protected),
]
STACK_POLICIES = [
    StackValidationPolicy(name="tenant-namespace-guardrails", description="Tenant namespaces have quota, limits, default-deny, PSA",
                          validate=tenant_namespace_guardrails, enforcement_level=EnforcementLevel.MANDATORY),
    StackValidationPolicy(name="one-tenant-per-stack", description="A tenant stack holds exactly one tenant",
                          validate=one_tenant_per_stack, enforcement_level=EnforcementLevel.MANDATORY),
]
ALL_POLICIES = [*RESOURCE_POLICIES, *STACK_POLICIES]
