"""The isolation rules of the tenancy policy pack, as plain functions.

Each rule takes `ResourceValidationArgs` (or `StackValidationArgs`) and a reporter, and says why it
exists in its message. `policy/__main__.py` only assembles them into a PolicyPack; `tenancy plan` and
`tenancy policy-check` call these same objects offline.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
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

if __package__:
    from . import sizes
else:  # the CrossGuard pack imports this file as a top-level module (policy/ is its working directory)
    import sizes

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
AUDIT_CONFIG_TYPE = re.compile(r"iamauditconfig$", re.I)
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
    _check_control_plane_reach(p, report)
    node_config = p.get("nodeConfig")
    if node_config is not None:
        _check_node_config(node_config, "cluster's default node config", report)


def _check_control_plane_reach(p: dict, report: ReportViolation) -> None:
    """A public endpoint is only acceptable behind authorized networks that are not the whole internet."""
    if _get(p, "privateClusterConfig", "enablePrivateEndpoint") is True:
        return
    man = _first(p.get("masterAuthorizedNetworksConfig"))
    blocks = [b.get("cidrBlock") for b in (man or {}).get("cidrBlocks") or [] if isinstance(b, dict)]
    if not man or not blocks:
        report("GKE cluster: the control plane has a public endpoint and no authorized networks "
               "(masterAuthorizedNetworksConfig): it is reachable from anywhere")
    elif any(b in ANY_CIDR for b in blocks):
        report("GKE cluster: the control plane's authorized networks include 0.0.0.0/0: it is reachable from anywhere")
    if (man or {}).get("gcpPublicCidrsAccessEnabled") is True:
        report("GKE cluster: gcpPublicCidrsAccessEnabled lets every Google Cloud address reach the control plane")


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


# The database flags the platform sets and the values it allows; a flag not listed has not been reviewed.
# Statement text carries tenant data, so no flag may put it in the logs (log_statement beyond 'ddl', a
# log_min_duration_statement threshold). cloudsql.logical_decoding lets online tier moves replicate one
# tenant's rows out of a primary; a PostgreSQL 15 read replica cannot decode, so it is a primary's flag.
CLOUDSQL_FLAGS: dict[str, tuple[str, ...]] = {
    "cloudsql.iam_authentication": ("on",),
    "cloudsql.enable_pgaudit": ("on",),
    "pgaudit.log": (),                       # any list that includes ddl and role
    "log_connections": ("on",),
    "log_disconnections": ("on",),
    "log_statement": ("none", "ddl"),
    "log_lock_waits": ("on", "off"),
    "log_checkpoints": ("on", "off"),
    "log_min_duration_statement": ("-1",),
    "cloudsql.logical_decoding": ("on", "off"),
    # A duration line holds no statement text; a failing statement's text is logged, its bound values are not,
    # and terse errors leave out the detail that quotes the failing row or key.
    "log_duration": ("on", "off"),
    "log_min_error_statement": ("error", "log", "fatal", "panic"),
    "log_error_verbosity": ("terse",),
}


def cloudsql_flags(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != "gcp:sql/databaseInstance:DatabaseInstance":
        return
    s = _first(args.props.get("settings")) or {}
    flags = {str(f.get("name")): str(f.get("value")) for f in s.get("databaseFlags") or [] if isinstance(f, dict)}
    for name, value in flags.items():
        allowed = CLOUDSQL_FLAGS.get(name)
        if allowed is None:
            report(f"Cloud SQL: flag {name} has not been reviewed for tenant isolation; add it to the policy pack's "
                   "CLOUDSQL_FLAGS with the values it may take and why")
        elif allowed and value not in allowed and _known(value):
            report(f"Cloud SQL: {name}={value} is not allowed ({' or '.join(allowed)}): statement text in logs carries "
                   "tenant data, and audit and IAM authentication stay on")
    audited = set(flags.get("pgaudit.log", "").replace(" ", "").split(","))
    if flags.get("cloudsql.enable_pgaudit") != "on" or not {"ddl", "role"} <= audited:
        report("Cloud SQL: pgAudit must be on and log ddl and role (cloudsql.enable_pgaudit=on, pgaudit.log=ddl,role): "
               "who changed the schema or a role is how isolation breaks are traced")
    if flags.get("log_error_verbosity") != "terse":
        report("Cloud SQL: log_error_verbosity must be terse: an error's detail quotes the failing row or key "
               "(\"Failing row contains (...)\"), tenant data that would land in Cloud Logging")
    if args.props.get("masterInstanceName") and flags.get("cloudsql.logical_decoding") == "on":
        report("Cloud SQL: cloudsql.logical_decoding belongs on the primary: a PostgreSQL 15 read replica cannot decode, "
               "and online tier moves replicate from the primary")


# The replication user (tenancy_replication) bypasses row-level security to read any tenant's rows for an
# online tier move; its password is for the operators who run moves.
REPLICATION_SECRET = re.compile(r"(^|[-/])tenancy-replication$")


def replication_secret_private(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t, p = args.resource_type, args.props
    if not (t.startswith("gcp:secretmanager/") and IAM_TYPE.search(t)):
        return
    secret = str(p.get("secretId") or "")
    if not REPLICATION_SECRET.search(secret):
        return
    for g in iam_grants(t, p):
        if TENANT_SA.match(g.member) or any(r.match(g.member) for r in (KSA_MEMBER, WI_PRINCIPAL, WI_NAMESPACE_SET,
                                                                         WI_POOL_SET)):
            report(f"secret {secret}: {g.role} must not go to {g.member}: the replication user reads every tenant's "
                   "rows (BYPASSRLS); only the operators who run tier moves may read its password")


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
    members = [g.member for g in iam_grants(args.resource_type, p)]
    if not members:  # non-gcp or unknown shapes: the plain fields
        members = [p["member"]] if isinstance(p.get("member"), str) else []
        members.extend(m for m in (p.get("members") or []) if isinstance(m, str))
    for m in dict.fromkeys(members):
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
    for basic in dict.fromkeys(g.role for g in iam_grants(t, p) if g.role in BASIC_ROLES):
        report(f"IAM: basic role {basic} must not be granted: it spans every service in the project")
    member = p.get("member") or ""
    if t == "gcp:projects/iAMMember:IAMMember" and role in IMPERSONATION_ROLES and TENANT_SA.match(member):
        report(f"IAM: {role} at the project lets a tenant service account impersonate every service account; grant it on one account only")
    if t == "gcp:projects/iAMMember:IAMMember" and TENANT_SA.match(member) and not p.get("condition"):
        report(f"IAM: project-wide role {role} granted to tenant service account {member}; grant on the tenant's own resources only")
    # Whose principal and whose resource a grant involves is decided by iam-tenant-scope, from the plan's own
    # resources and principals: names cannot tell (a long id's account is shortened; `stark` is in `stark-labs`).


# ------------------------------------------------------------------------------------------- Kubernetes

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


# ------------------------------------------------------------------- IAM grants in every resource form

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
        if isinstance(policy, str) and _known(policy):
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
    c = _first(c)
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


# --------------------------------------------------------------- who owns what: derived from the plan

PLATFORM = "platform"          # owner of the platform stack's resources (pooled tenants' shared stores included)
EXTERNAL = "external"          # a principal the plan does not declare
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
KSA_MEMBER = re.compile(r"^serviceAccount:(?P<pool>[a-z0-9.:-]+\.svc\.id\.goog)\[(?P<ns>[^/\]]+)/(?P<ksa>[^\]]+)\]$")
WI_PRINCIPAL = re.compile(r"^principal://iam\.googleapis\.com/projects/[^/]+/locations/global/workloadIdentityPools/"
                          r"(?P<pool>[^/]+)/subject/ns/(?P<ns>[^/]+)/sa/(?P<ksa>[^/]+)$")
WI_NAMESPACE_SET = re.compile(r"^principalSet://iam\.googleapis\.com/projects/[^/]+/locations/global/"
                              r"workloadIdentityPools/(?P<pool>[^/]+)/namespace/(?P<ns>[^/]+)$")
WI_POOL_SET = re.compile(r"^principalSet://iam\.googleapis\.com/projects/[^/]+/locations/global/"
                         r"workloadIdentityPools/(?P<pool>[^/]+)(/.*)?$")


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
    lab = _labels_of(r.resource_type, r.props) or {}
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
            own.tenants.update(v for v in [_tenant_label(r)] if v)
            if r.resource_type == DEPLOYER_TYPE and isinstance(r.props.get("email"), str):
                own.deployers.setdefault(r.props["email"].lower(), DeployerScope.of(r))
            if r.resource_type == "gcp:container/cluster:Cluster":
                key = f"{r.props.get('project')}/{r.props.get('location')}/{r.props.get('name')}"
                own.pools[key] = str(_get(r.props, "workloadIdentityConfig", "workloadPool") or "")
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


def _tenant_label(r: Any) -> str | None:
    lab = _labels_of(r.resource_type, r.props) or {}
    return lab.get(TENANT_LABEL) or lab.get(K8S_TENANT_LABEL)


def _project_of(r: Any, own: Ownership) -> str:
    return str(r.props.get("project") or own.projects.get(_provider_urn(r) or "", ""))


def cluster_of(r: Any, own: Ownership) -> str:
    return own.clusters.get(_provider_urn(r) or "", "the environment's shared cluster")


def _owned_keys(r: Any, own: Ownership, tenant: str | None) -> list[tuple]:
    t, p = r.resource_type, r.props
    project = _project_of(r, own)
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
        name = _get(p, "metadata", "name")
        pool = own.pools.get(cluster_of(r, own), "")
        return [("namespace", pool, name), ("namespace", "", name)]
    return []


def _namespace_owner(own: Ownership, pool: str, ns: str) -> str:
    owner = own.owner(("namespace", pool, ns)) or own.owner(("namespace", "", ns))
    if owner:
        return owner
    return ns[len("tenant-"):] if _is_tenant_ns(ns) else EXTERNAL


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
    project = _project_of(r, own)
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


def _tenant_scope_findings(tenant: str | None, r: Any, own: Ownership, cfg: dict) -> Iterable[str]:
    allowed = set(cfg.get("platformPrincipals") or [])
    project_roles = set(cfg.get("tenantProjectRoles") or TENANT_PROJECT_ROLES)
    for g in iam_grants(r.resource_type, r.props):
        if g.member in PUBLIC_MEMBERS or not _known(g.member):
            continue  # public members have their own rule
        if _deployer_of(g.member, own) or _own_workspace_binding(r, g, own):
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
    own = build_ownership(stacks)
    cfg = {**TENANT_SCOPE_DEFAULTS, **(cfg or {})}
    for tenant, resources in stacks:
        for r in resources:
            for message in dict.fromkeys(_tenant_scope_findings(tenant, r, own, cfg)):
                report(message, r.urn)


def tenant_iam_scope(args: StackValidationArgs, report: ReportViolation) -> None:
    """The pack's view of one stack: a tenant stack's own resources are its tenant's, nothing else is."""
    tenant = None
    for r in args.resources:
        tenant = tenant or _stack_tenant(r)
    tenant_iam_scope_plan([(tenant, list(args.resources))], report, args.get_config() if hasattr(args, "get_config") else {})


TENANT_SCOPE_DEFAULTS: dict[str, Any] = {"platformPrincipals": [], "tenantProjectRoles": list(TENANT_PROJECT_ROLES)}


# ------------------------------------------------------------------------------ deployers (the operator)

# One deploying identity per scope (tenancy/operator/deployers.py): the platform's, a unit's (cell-<n>, pool-<n>,
# identity-<k>), a dedicated tenant's. The component that declares one says its scope, account, the project its
# roles belong on and its Kubernetes service account: the rules below judge every grant to it by them.
DEPLOYER_TYPE = "tenancy:operator:Deployer"
PLATFORM_DEPLOYER_KSA = "tenancy-deployer"
DEPLOYER_KSA_PREFIX = "deployer-"
STACK_CR = "kubernetes:pulumi.com/v1:Stack"
WORKLOAD_IDENTITY_USER = "roles/iam.workloadIdentityUser"


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


def _deployer_of(member: str, own: Ownership) -> DeployerScope | None:
    kind, _, ident = member.partition(":")
    return own.deployers.get(ident.lower()) if kind == "serviceAccount" else None


def _deployer_target(r: Any, own: Ownership) -> DeployerScope | None:
    """The deployer whose account an IAM resource on a service account is about."""
    if not (r.resource_type.startswith("gcp:serviceaccount/") and IAM_TYPE.search(r.resource_type)):
        return None
    return own.deployers.get(str(r.props.get("serviceAccountId") or "").rsplit("/", 1)[-1].lower())


def _own_workspace_binding(r: Any, g: Grant, own: Ownership) -> bool:
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
        d = _deployer_of(g.member, own)
        if d is None:
            continue
        project = _project_of(r, own)
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
            if not _own_workspace_binding(r, g, own):
                yield (f"deployer of '{d.scope}': {g.role} on its account for {g.member}: only its own Kubernetes "
                       f"service account ({d.ksa}) may act as it, through Workload Identity")


def deployer_scope_plan(stacks: list[tuple[str | None, list]], report: Reporter, cfg: dict | None = None) -> None:
    """Across the plan: every deploying identity's grants land in its scope, and only its own workspaces may
    act as it."""
    own = build_ownership(stacks)
    for tenant, resources in stacks:
        for r in resources:
            for message in dict.fromkeys(_deployer_findings(tenant, r, own)):
                report(message, r.urn)


def deployer_scope(args: StackValidationArgs, report: ReportViolation) -> None:
    """One stack's view: the deployers it declares, and its grants to them."""
    tenant = None
    for r in args.resources:
        tenant = tenant or _stack_tenant(r)
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


# ------------------------------------------------------------------------- Kubernetes: network, RBAC, host

ANY_CIDR = ("0.0.0.0/0", "::/0")
RBAC = "kubernetes:rbac.authorization.k8s.io/v1:"
ESCALATION_VERBS = ("escalate", "bind", "impersonate")


def _tenantish_ns(ns: str | None) -> bool:
    return _is_tenant_ns(ns) or ns == "pooled"


def k8s_network_isolation(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """A tenant namespace's NetworkPolicies may not open it to every namespace or to any address."""
    if args.resource_type != "kubernetes:networking.k8s.io/v1:NetworkPolicy":
        return
    ns = _get(args.props, "metadata", "namespace")
    if not _tenantish_ns(ns):
        return
    spec = args.props.get("spec") or {}
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        for rule in spec.get(direction) or []:
            peers = (rule or {}).get(peers_key)
            if not peers:
                report(f"Kubernetes: NetworkPolicy {_get(args.props, 'metadata', 'name')} in {ns} has an {direction} rule "
                       f"without '{peers_key}': it allows every pod of every namespace and every address")
                continue
            for peer in peers:
                sel = peer.get("namespaceSelector")
                if isinstance(sel, dict) and not sel.get("matchLabels") and not sel.get("matchExpressions"):
                    report(f"Kubernetes: NetworkPolicy {_get(args.props, 'metadata', 'name')} in {ns} selects every "
                           f"namespace ({direction} namespaceSelector {{}}): other tenants' pods are let through")
                cidr = _get(peer, "ipBlock", "cidr")
                if cidr in ANY_CIDR:
                    report(f"Kubernetes: NetworkPolicy {_get(args.props, 'metadata', 'name')} in {ns} allows {direction} "
                           f"{'from' if direction == 'ingress' else 'to'} {cidr}: every address, other tenants' included")


def _tenant_of_subject(s: dict) -> str | None:
    """The tenant a RoleBinding subject stands for, in any of its forms, or None."""
    kind, name, ns = s.get("kind"), str(s.get("name") or ""), s.get("namespace")
    if kind == "ServiceAccount" and _is_tenant_ns(ns):
        return ns[len("tenant-"):]
    if m := re.match(r"^system:serviceaccounts?:(tenant-[a-z0-9-]+?)(:|$)", name):
        return m[1][len("tenant-"):]
    if name.startswith("tenant-"):
        return name[len("tenant-"):]
    return None


def k8s_no_cluster_admin_for_tenants(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t = args.resource_type
    p = args.props
    if t in (RBAC + "Role", RBAC + "ClusterRole"):
        _check_role_rules(args, report)
        return
    if t not in (RBAC + "ClusterRoleBinding", RBAC + "RoleBinding"):
        return
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
    elif t.endswith("RoleBinding") and not t.endswith("ClusterRoleBinding") and _get(p, "roleRef", "kind") == "ClusterRole":
        report(f"Kubernetes: RoleBinding in {ns} binds ClusterRole '{role}' to tenant subjects: bind a Role of the "
               "tenant's own namespace (a ClusterRole can widen under the tenant)")
    if t.endswith("ClusterRoleBinding") or not _is_tenant_ns(ns):
        return
    owner = ns[len("tenant-"):]
    for s in subjects:
        other = _tenant_of_subject(s)
        if other and other != owner:
            report(f"Kubernetes: RoleBinding in {ns} grants {s.get('kind')} {s.get('name')} of tenant '{other}': "
                   "a tenant's subjects are bound only in its own namespace")
    stack_tenant = _stack_tenant(args)
    if stack_tenant and stack_tenant != owner:
        report(f"Kubernetes: the stack of tenant '{stack_tenant}' places a RoleBinding in {ns}, tenant '{owner}''s namespace")


def _is_tenant_subject(s: dict) -> bool:
    return _tenant_of_subject(s) is not None


def _check_role_rules(args: ResourceValidationArgs, report: ReportViolation) -> None:
    ns = _get(args.props, "metadata", "namespace")
    tenant_role = _tenantish_ns(ns) or bool(_stack_tenant(args)) or bool(_tenant_label(args))
    if not tenant_role:
        return
    kind = args.resource_type.split(":")[-1]
    name = _get(args.props, "metadata", "name")
    if kind == "ClusterRole":
        report(f"Kubernetes: ClusterRole {name} is declared for a tenant: tenant rights are namespaced Roles only")
    for rule in args.props.get("rules") or []:
        for field_ in ("verbs", "resources", "apiGroups"):
            if "*" in (rule.get(field_) or []):
                report(f"Kubernetes: {kind} {name} in {ns} has a wildcard in {field_}: tenant Roles list what they allow")
        bad = [v for v in rule.get("verbs") or [] if v in ESCALATION_VERBS]
        if bad:
            report(f"Kubernetes: {kind} {name} in {ns} allows {', '.join(bad)}: a tenant could grant itself more")


def _pod_spec(props: dict) -> dict | None:
    kind = props.get("kind")
    if kind not in WORKLOAD_KINDS:
        return None
    return _get(props, *WORKLOAD_KINDS[kind]) or {}


def k8s_no_host_access(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Privileged or host-sharing pods escape to the node, where every tenant's pods run."""
    if not args.resource_type.startswith("kubernetes:"):
        return
    kind = args.props.get("kind")
    if args.resource_type == "kubernetes:helm.sh/v3:Release":
        for path, v in _walk(args.props.get("values") or {}):
            if path[-1] in ("privileged", "hostNetwork", "hostPID", "hostIPC", "allowPrivilegeEscalation") and v is True:
                report(f"Kubernetes: Helm value {'.'.join(path)}=true gives the chart's pods the node's privileges")
            if "hostPath" in path[:-1] and path[-1] == "path":
                report(f"Kubernetes: Helm value {'.'.join(path)} mounts a node path into the chart's pods")
        return
    pod = _pod_spec(args.props)
    if pod is None:
        return
    name = _get(args.props, "metadata", "name")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key) is True:
            report(f"Kubernetes: {kind} {name} sets {key}: it shares the node's namespaces with every tenant's pods")
    for vol in pod.get("volumes") or []:
        if vol.get("hostPath"):
            report(f"Kubernetes: {kind} {name} mounts hostPath {vol['hostPath'].get('path')} (volume {vol.get('name')}): "
                   "node files are shared by every tenant")
    for c in list(pod.get("containers") or []) + list(pod.get("initContainers") or []) + list(pod.get("ephemeralContainers") or []):
        sc = c.get("securityContext") or {}
        if sc.get("privileged") is True:
            report(f"Kubernetes: {kind} {name} runs container '{c.get('name')}' privileged: it controls the node")
        added = set(_get(sc, "capabilities", "add", default=[]) or [])
        if added & {"SYS_ADMIN", "NET_ADMIN", "ALL", "SYS_PTRACE", "NET_RAW"}:
            report(f"Kubernetes: {kind} {name} container '{c.get('name')}' adds capabilities {', '.join(sorted(added))}")


def k8s_no_exposed_services(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != "kubernetes:core/v1:Service":
        return
    ns = _get(args.props, "metadata", "namespace")
    kind = _get(args.props, "spec", "type") or "ClusterIP"
    if (_is_tenant_ns(ns) or ns == "pooled") and kind in ("NodePort", "LoadBalancer"):
        report(f"Kubernetes: a {kind} service in tenant namespace {ns} bypasses the shared ingress and its limits")
    if _get(args.props, "spec", "externalIPs"):
        report(f"Kubernetes: service {_get(args.props, 'metadata', 'name')} in {ns} sets externalIPs "
               f"{', '.join(_get(args.props, 'spec', 'externalIPs'))}: it can intercept other tenants' traffic to those "
               "addresses (CVE-2020-8554)")


# ------------------------------------------------------------------------ credentials outside of secrets

URL_USERINFO = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@\"']+:(?P<pw>[^/\s@\"']+)@", re.I)
SECRETISH_NAME = re.compile(r"(^|[_.-])(password|passwd|pwd|secret|token|api[_-]?key|private[_-]?key|credentials?|dsn)$", re.I)
SECRETISH_ASSIGN = re.compile(r"""\b(password|passwd|pwd|token|api[_-]?key|client_secret|private[_-]?key)["']?\s*[=:]\s*["']?"""
                              r"""(?P<v>[^\s"',;&}]+)""", re.I)
NOT_A_VALUE = re.compile(r"^(\$\(|\$\{|\[secret\]|\[unknown\]|<|\{\{)")


def _literal_secret(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip()) and not NOT_A_VALUE.match(v.strip())


def no_credentials_in_config(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Credentials live in Secret Manager or Kubernetes Secrets: never in ConfigMaps, env literals or URLs."""
    t, p = args.resource_type, args.props
    if t == "kubernetes:core/v1:ConfigMap":
        name = _get(p, "metadata", "name")
        for field_ in ("data", "binaryData"):
            for key, value in (p.get(field_) or {}).items():
                if SECRETISH_NAME.search(str(key).rsplit(".", 1)[0] if "." in str(key) else str(key)) and _literal_secret(value):
                    report(f"ConfigMap {name}: key '{key}' holds a credential; ConfigMaps are readable by every reader "
                           "of the namespace: use a Secret")
                elif isinstance(value, str):
                    for m in SECRETISH_ASSIGN.finditer(value):
                        if _literal_secret(m["v"]):
                            report(f"ConfigMap {name}: key '{key}' contains a {m[1]} assignment (a DSN or config with "
                                   "a credential): use a Secret")
                            break
    for path, v in _walk_env(p):
        report(f"{t.split(':')[-1]}: environment variable {path} is set to a literal credential: use valueFrom "
               "a Secret (or a secret name the chart reads)")
    skip = set(SECRET_FIELDS.get(t, ()))
    for path, v in _walk(p):
        if path[0] in skip or not isinstance(v, str):
            continue
        m = URL_USERINFO.search(v)
        if m and _literal_secret(m["pw"]):
            report(f"{t.split(':')[-1]}: input {'.'.join(path)} holds a URL with a password (user:password@host): "
                   "pass the credential through a secret")


def _walk_env(p: dict) -> list[tuple[str, Any]]:
    """`env` list entries {name, value} whose name says credential and whose value is a literal."""
    found: list[tuple[str, Any]] = []
    stack: list[tuple[tuple, Any]] = [((), p)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((path + (str(k),), v) for k, v in node.items())
        elif isinstance(node, list):
            is_env = bool(path) and path[-1].lower().endswith("env")
            for i, v in enumerate(node):
                if is_env and isinstance(v, dict) and isinstance(v.get("name"), str) \
                        and SECRETISH_NAME.search(v["name"]) and _literal_secret(v.get("value")):
                    found.append((".".join(path + (str(i),)) + f" ({v['name']})", v["value"]))
                stack.append((path + (str(i),), v))
    return sorted(found)


# ------------------------------------------------------------------- namespaces and workload placement

EDGE_NAMESPACES = ("cert-manager", "ingress-nginx")   # the add-ons of a dedicated tenant's own cluster
PLACED_KINDS = set(WORKLOAD_KINDS) | {"ReplicaSet"}


def tenant_namespace_placement(args: StackValidationArgs, report: ReportViolation) -> None:
    """A tenant's namespaces are named tenant-<id>; its workloads run only there (where the guardrails are).

    In a stack that owns its GKE cluster (dedicated) the edge add-ons' namespaces are allowed as well.
    """
    tenant = None
    own_cluster = False
    for r in args.resources:
        tenant = tenant or _stack_tenant(r)
        own_cluster = own_cluster or r.resource_type == "gcp:container/cluster:Cluster"
    for r in args.resources:
        t, p = r.resource_type, r.props
        owner = tenant or _tenant_label(r)
        if not owner:
            continue
        if t == "kubernetes:core/v1:Namespace":
            name = _get(p, "metadata", "name")
            if name != f"tenant-{owner}" and not (own_cluster and name in EDGE_NAMESPACES):
                report(f"namespace {name} belongs to tenant '{owner}' but is not named tenant-{owner}: it escapes "
                       "the guardrails every tenant namespace gets (PSA restricted, quota, default-deny)", r.urn)
            continue
        if t == "kubernetes:helm.sh/v3:Release":
            ns, kind, name = p.get("namespace"), "Helm release", p.get("name")
        elif t.startswith("kubernetes:") and p.get("kind") in PLACED_KINDS:
            ns, kind, name = _get(p, "metadata", "namespace"), p.get("kind"), _get(p, "metadata", "name")
        else:
            continue
        if ns != f"tenant-{owner}" and not (own_cluster and ns in EDGE_NAMESPACES):
            report(f"{kind} {name} of tenant '{owner}' runs in namespace {ns or '(none)'}, not tenant-{owner}: "
                   "outside the tenant's guardrails", r.urn)


# ---------------------------------------------------------------------------- plan-wide: names, hosts

def _scoped_name(r: Any, own: Ownership) -> tuple | None:
    """A resource's physical name scoped as its provider scopes it, or None for kinds without one."""
    t, p = r.resource_type, r.props
    project = _project_of(r, own)
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
        return ("Kubernetes object", cluster_of(r, own), _get(p, "metadata", "namespace") or "", f"{p['kind']}.{group}".rstrip("."),
                _get(p, "metadata", "name"))
    return None


def unique_physical_names(stacks: list[tuple[str | None, list]], report: Reporter) -> None:
    """Two resources of the plan with one physical name fight over one real object (or fail to create)."""
    own = build_ownership(stacks)
    seen: dict[tuple, str] = {}
    for _, resources in stacks:
        for r in resources:
            key = _scoped_name(r, own)
            if key is None or any(k is None or not _known(k) for k in key[1:]):
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


# A unit stack of the cells layout (`<env>.cell-2`, `<env>.pool-1`, `<env>.identity-3`) is platform, not a tenant:
# tenant ids never have this shape (tenancy/naming.py refuses them).
UNIT_STACK = re.compile(r"(cell|pool|identity)-[0-9]+")


def _stack_tenant(args: ResourceValidationArgs) -> str | None:
    """The tenant of a tenant stack, from the stack name in the URN (`<env>.<tenant-id>`)."""
    try:
        stack = args.urn.split("::")[0].split(":", 2)[2]
    except (AttributeError, IndexError):
        return None
    env, _, tenant = stack.partition(".")
    return None if not tenant or UNIT_STACK.fullmatch(tenant) else tenant


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
    stack_tenant = next((tid for tid in map(_stack_tenant, args.resources) if tid), None)
    own_cluster = any(r.resource_type == "gcp:container/cluster:Cluster" for r in args.resources)
    for r in args.resources:
        t = r.resource_type
        p = r.props
        if t == "kubernetes:core/v1:Namespace":
            name = _get(p, "metadata", "name")
            # a tenant's namespace by name, or by owner (whatever its name), but not its own cluster's add-ons
            owned = (stack_tenant or _tenant_label(r)) and not (own_cluster and name in EDGE_NAMESPACES)
            if _is_tenant_ns(name) or name == "pooled" or owned:
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
    _mandatory("gke-cluster-hardened", "GKE clusters follow the CIS GKE benchmark; the control plane is not open to all",
               gke_cluster_hardened),
    _mandatory("gke-node-pool-hardened", "GKE node pools run hardened, patched nodes", gke_node_pool_hardened),
    _mandatory("cloudsql-private-ssl-backups", "Cloud SQL is private, encrypted in transit, backed up, protected",
               cloudsql_private_ssl_backups, RETENTION_SCHEMA),
    _mandatory("cloudsql-flags", "Cloud SQL flags are reviewed ones: audit on, no statement text in logs, logical "
               "decoding on primaries", cloudsql_flags),
    _mandatory("replication-secret-private", "The replication user's password is never granted to tenant principals",
               replication_secret_private),
    _mandatory("storage-bucket-private", "Buckets are IAM-only, never public, versioned for tenants", storage_bucket_private),
    _mandatory("no-public-members", "allUsers/allAuthenticatedUsers are never granted", no_public_members),
    _mandatory("iam-least-privilege", "No basic roles, no keys, no project-wide grants to tenant accounts", iam_least_privilege),
    _mandatory("iam-condition-exact", "IAM conditions name resources exactly, never by a bare prefix", iam_condition_exact),
    _mandatory("k8s-tenant-rbac", "Tenants get no cluster-wide, wildcard or other tenants' rights", k8s_no_cluster_admin_for_tenants),
    _mandatory("k8s-network-isolation", "Tenant NetworkPolicies never open to all namespaces or addresses", k8s_network_isolation),
    _mandatory("k8s-no-host-access", "No privileged, host-namespace or hostPath workloads", k8s_no_host_access),
    _mandatory("k8s-no-exposed-services", "No NodePort/LoadBalancer services in tenant namespaces, no externalIPs",
               k8s_no_exposed_services),
    _mandatory("k8s-container-resources", "Containers declare requests and limits", k8s_containers_declare_resources),
    _mandatory("no-plaintext-secrets", "Secret inputs come from secret outputs", no_plaintext_secrets, SECRETS_SCHEMA),
    _mandatory("no-credentials-in-config", "No credentials in ConfigMaps, env literals or URLs", no_credentials_in_config),
    _mandatory("tenant-label", "Tenant resources carry the tenant label", tenant_label_present),
    _mandatory("stateful-protected", "Stateful resources are protected", stateful_protected),
    _mandatory("operator-stack-deployer", "An operator Stack runs as its own scope's deployer", operator_stack_deployer),
]
TENANT_SCOPE_SCHEMA = PolicyConfigSchema(properties={
    "platformPrincipals": {"type": "array", "items": {"type": "string"}, "default": []},
    "tenantProjectRoles": {"type": "array", "items": {"type": "string"}, "default": list(TENANT_PROJECT_ROLES)}})


def _stack_mandatory(name: str, description: str, validate, config_schema: PolicyConfigSchema | None = None) -> StackValidationPolicy:
    return StackValidationPolicy(name=name, description=description, validate=validate,
                                 enforcement_level=EnforcementLevel.MANDATORY, config_schema=config_schema)


SIZE_SCHEMA = PolicyConfigSchema(properties={
    "maxObjectBytes": {"type": "integer", "default": sizes.MAX_OBJECT_BYTES, "minimum": 1},
    "maxResourcesPerStack": {"type": "integer", "default": sizes.MAX_STACK_RESOURCES, "minimum": 1}})

STACK_POLICIES = [
    _stack_mandatory("tenant-namespace-guardrails", "Tenant namespaces have quota, limits, default-deny, PSA",
                     tenant_namespace_guardrails),
    _stack_mandatory("tenant-namespace-placement", "Tenant namespaces are tenant-<id>; tenant workloads run only there",
                     tenant_namespace_placement),
    _stack_mandatory("one-tenant-per-stack", "A tenant stack holds exactly one tenant", one_tenant_per_stack),
    _stack_mandatory("iam-tenant-scope", "Tenant principals reach only their tenant's resources; tenant data only its "
                     "principals and known platform principals", tenant_iam_scope, TENANT_SCOPE_SCHEMA),
    _stack_mandatory("object-and-stack-size", "No Kubernetes object, ConfigMap/Secret data or Helm values over 1 MiB; "
                     "no stack over its resource bound (policy/sizes.py)", sizes.object_and_stack_size, SIZE_SCHEMA),
    _stack_mandatory("deployer-scope", "A deploying identity holds roles on its scope's project only, and only its "
                     "own Kubernetes service account may act as it", deployer_scope),
]
# Offline, these run once over the whole plan (tenancy.policycheck.evaluate_plan), which knows every stack's
# owners; the per-stack form is what a real `pulumi preview` can run.
PLAN_WIDE_FORMS = {"iam-tenant-scope": tenant_iam_scope_plan, "object-and-stack-size": sizes.object_and_stack_size_plan,
                   "deployer-scope": deployer_scope_plan}
# Rules only decidable across stacks: (name, function(stacks, report)).
PLAN_POLICIES = [
    ("no-shared-tenant-stores", shared_across_tenants),
    ("unique-physical-names", unique_physical_names),
    ("ingress-host-claims", ingress_host_claims),
]
ALL_POLICIES = [*RESOURCE_POLICIES, *STACK_POLICIES]
