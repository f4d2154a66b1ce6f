"""Every physical name, derived in one place from a tenant id and an environment.

Names are deterministic (the same inputs always give the same name, so stacks never churn) and fit each
provider's limits. When a name would be too long it is cut and given a short hash of the full name,
joined with a double hyphen: `t-verylongtenantidthat--3f9a1c`. Tenant ids may not contain `--`
(catalogue rule), so a shortened name can never equal the untruncated name of another id, and two ids
that share a long prefix differ in their hash.
"""

from __future__ import annotations

import functools
import hashlib
import re

# Hostnames the platform itself serves under the base domain; no tenant may take them.
PLATFORM_HOSTNAMES = frozenset({"app", "api", "auth", "status", "docs", "ingress"})
RESERVED_NAMES = frozenset({"www", "api", "admin", "app", "staging"}) | PLATFORM_HOSTNAMES

# Words that name the platform's own parts. A tenant id (or subdomain) equal to one would read, in
# names, labels, logs and IAM bindings, as if it were that part, even where no physical name clashes
# (the clashing ones are found by `platform_collision`, from the derivations themselves).
PLATFORM_WORDS: dict[str, str] = {
    "pooled": "pooled tier (namespace, database, bucket, service account)",
    "shared": "shared GKE cluster",
    "platform": "platform stack",
    "sql-migrator": "SQL migrator identity",
    "tenancy-system": "system namespace",
    "gke-nodes": "GKE node service account",
    "system": "system namespace",
    "ingress": "ingress controller",
    "ingress-nginx": "ingress controller namespace",
    "cert-manager": "certificate manager namespace",
    "identity": "Identity Platform configuration",
    "directory": "tenant directory",
}

# The fleet's capacity units (tenancy/fleet): cells host namespace tenants, pool shards pooled tenants. A tenant
# id of that shape would read as one of them in every name, label and directory entry.
CELL_PATTERN = re.compile(r"cell-[1-9][0-9]{0,3}")
POOL_SHARD_PATTERN = re.compile(r"pool-[1-9][0-9]{0,3}")
IDENTITY_SHARD_PATTERN = re.compile(r"identity-[1-9][0-9]{0,3}")
UNIT_ID = re.compile(r"(cell|pool|identity)-[0-9]+")

ENV_PATTERN = re.compile(r"^[a-z][a-z0-9]{1,9}$")
STACK_SEPARATOR = "."

# Provider limits (see the field notes): lengths in characters.
LIMITS = {
    "namespace": 63,          # Kubernetes namespace: DNS label
    "service_account": 30,    # GCP service account id: 6-30, ^[a-z][-a-z0-9]*[a-z0-9]$
    "bucket": 63,             # GCS bucket: 3-63, global namespace
    "sql_instance": 80,       # Cloud SQL: project:instance <= 98; keep well inside
    "identity_display": 20,   # Identity Platform tenant display name: 4-20, letter first
    "dns_label": 63,
    "firestore": 63,          # Firestore database id: 4-63, letter first
    "secret": 255,            # Secret Manager secret id
    "helm_release": 53,       # Helm release names
    "stack": 100,             # Pulumi stack name
    "cluster": 40,            # GKE cluster: 1-40, letter first (also dedicated tenants' network prefix)
    "node_pool": 40,          # GKE node pool
    "compute": 63,            # Compute Engine networks, subnets, addresses, routers, NATs
    "log_sink": 100,          # Cloud Logging sink id
    "project_name": 30,       # GCP project display name
}
HASH_LEN = 6


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LEN]


def fit(name: str, limit: int) -> str:
    """`name` if it fits in `limit`, else its head, '--' and a hash of the whole name."""
    if len(name) <= limit:
        return name
    head = name[: limit - HASH_LEN - 2].rstrip("-")
    return f"{head}--{_digest(name)}"


def check_env(env: str) -> str:
    if not isinstance(env, str) or not ENV_PATTERN.fullmatch(env):
        raise ValueError(
            f"environment '{env}' must be 2-10 lowercase letters or digits starting with a letter (e.g. dev, prod)"
        )
    return env


def namespace(tenant_id: str) -> str:
    """The tenant's Kubernetes namespace (one cluster per environment, so no environment in it)."""
    return fit(f"tenant-{tenant_id}", LIMITS["namespace"])


POOLED_NAMESPACE = "pooled"
PLATFORM_NAMESPACE = "tenancy-system"


def service_account_id(env: str, tenant_id: str) -> str:
    """GCP service account id of the tenant's workloads (6-30 characters, letter first)."""
    return fit(f"t-{env}-{tenant_id}", LIMITS["service_account"])


def bucket(env: str, tenant_id: str) -> str:
    """The tenant's uploads bucket (bucket names are global, so the environment is part of it)."""
    return fit(f"{env}-{tenant_id}-uploads", LIMITS["bucket"])


def shared_bucket(env: str, project: str) -> str:
    return fit(f"{project}-{env}-pooled-uploads", LIMITS["bucket"])


def access_log_bucket(env: str, project: str) -> str:
    """The environment's access-log bucket, where every bucket of the environment logs its requests."""
    return fit(f"{project}-{env}-access-logs", LIMITS["bucket"])


def sql_instance(env: str, tenant_id: str, role: str) -> str:
    """A tenant's Cloud SQL instance, `role` being postgres-1..3 (instance names start with a letter)."""
    return fit(f"{env}-{tenant_id}-{role}", LIMITS["sql_instance"])


def pooled_sql_instance(env: str) -> str:
    return f"{env}-pooled-postgres"


def registry_sql_instance(env: str) -> str:
    """The environment's registry of record (tenancy/operations/registry.py): a Cloud SQL instance of the global
    stack."""
    return fit(f"{env}-registry", LIMITS["sql_instance"])


def registry_secret_prefix(env: str) -> str:
    return secret_id(env, "registry", "").rstrip("-")


def identity_display_name(tenant_id: str) -> str:
    """Identity Platform tenant display name: 4-20 characters, letter first."""
    return fit(f"t-{tenant_id}", LIMITS["identity_display"])


def hostname(subdomain: str, base_domain: str) -> str:
    return f"{subdomain}.{base_domain}"


def firestore_database(env: str, tenant_id: str) -> str:
    return fit(f"{env}-{tenant_id}", LIMITS["firestore"])


def secret_id(env: str, tenant_id: str, purpose: str) -> str:
    return fit(f"{env}-{tenant_id}-{purpose}", LIMITS["secret"])


def helm_release(tenant_id: str, chart: str) -> str:
    return fit(f"{chart}-{tenant_id}", LIMITS["helm_release"])


def cluster(env: str, tenant_id: str | None = None) -> str:
    """GKE cluster name (1-40 characters, letter first)."""
    return fit(f"{env}-shared" if tenant_id is None else f"{env}-{tenant_id}", LIMITS["cluster"])


def cell(index: int) -> str:
    """The name of cell `index` (1-based): `cell-1`, `cell-2`, ..."""
    return f"cell-{index}"


def pool_shard(index: int) -> str:
    """The name of pool shard `index` (1-based): `pool-1`, `pool-2`, ..."""
    return f"pool-{index}"


def identity_shard(index: int) -> str:
    """The name of identity shard `index` (1-based): `identity-1`, ..."""
    return f"identity-{index}"


def unit_index(name: str) -> int:
    """1 for `cell-1` or `pool-1`."""
    return int(name.rsplit("-", 1)[1])


def cell_cluster(env: str, cell_name: str) -> str:
    """The GKE cluster of a cell. Cell 1 is the environment's original shared cluster (`<env>-shared`), so
    existing environments keep their cluster; later cells are `<env>-cell-<n>`."""
    return cluster(env) if cell_name == cell(1) else fit(f"{env}-{cell_name}", 40)


def pool_shard_instance(env: str, shard_name: str) -> str:
    """The Cloud SQL instance of a pool shard. Pool shard 1 is the original pooled instance."""
    return pooled_sql_instance(env) if shard_name == pool_shard(1) else fit(f"{env}-{shard_name}-postgres", LIMITS["sql_instance"])


# A unit's physical names. Cell 1 and pool shard 1 keep the names of the one platform stack earlier versions
# deployed, so an environment migrated from it (`tenancy migrate`) recreates nothing; later units carry their name.
def _first(unit: str) -> bool:
    return unit_index(unit) == 1


def cell_node_service_account_id(env: str, cell_name: str) -> str:
    return node_service_account_id(env) if _first(cell_name) else fit(f"{env}-{cell_name}-nodes", LIMITS["service_account"])


def cell_subnet_prefix(cell_name: str) -> str:
    """Cells 2 and up have a subnet of their own in the platform network: `platform-cell-2-subnet`."""
    return f"{PLATFORM_NETWORK_PREFIX}-{cell_name}"


def cell_ingress_address(cell_name: str) -> str:
    return ingress_address() if _first(cell_name) else ingress_address(f"{EDGE}-{cell_name}")


def pool_namespace(shard_name: str) -> str:
    return POOLED_NAMESPACE if _first(shard_name) else f"{POOLED_NAMESPACE}-{unit_index(shard_name)}"


def pool_bucket(env: str, project: str, shard_name: str) -> str:
    return shared_bucket(env, project) if _first(shard_name) else fit(f"{project}-{env}-{shard_name}-uploads", LIMITS["bucket"])


def pool_firestore(env: str, shard_name: str) -> str:
    return firestore_database(env, "pooled" if _first(shard_name) else shard_name)


def pool_service_account_id(env: str, shard_name: str) -> str:
    return service_account_id(env, "pooled" if _first(shard_name) else shard_name)


def pool_migrator_service_account_id(env: str, shard_name: str) -> str:
    return migrator_service_account_id(env) if _first(shard_name) else service_account_id(env, f"{shard_name}-sql")


def pool_secret_prefix(env: str, shard_name: str) -> str:
    return database_secret_prefix(env) if _first(shard_name) else secret_id(env, shard_name, "").rstrip("-")


def cluster_key_ring(cluster_name: str) -> str:
    """The KMS key ring holding a cluster's etcd secrets key (components/cluster.py)."""
    return f"{cluster_name}-gke"


# Node pools every cluster of the platform has (names are per cluster): the general pool, and the GKE
# Sandbox (gVisor) pool where a plan asks for it.
WORKLOAD_NODE_POOL = "workloads"
SANDBOX_NODE_POOL = "sandbox"


def tenant_node_pool(tenant_id: str) -> str:
    """A namespace tenant's own node pool in the shared cluster (node isolation `dedicated`)."""
    return fit(f"t-{tenant_id}", LIMITS["node_pool"])


def node_service_account_id(env: str, tenant_id: str | None = None) -> str:
    """Service account of a cluster's nodes: the shared cluster's, or a dedicated tenant's."""
    return f"{env}-gke-nodes" if tenant_id is None else fit(f"n-{env}-{tenant_id}", LIMITS["service_account"])


def deployer_service_account_id(env: str, scope: str) -> str:
    """The GCP service account a scope's stacks deploy as on the Pulumi Kubernetes Operator (a unit, `cell-2`, or a
    dedicated tenant's id): tenancy/operator/deployers.py."""
    return fit(f"d-{env}-{scope}", LIMITS["service_account"])


def service_account_email(account_id: str, project: str) -> str:
    return f"{account_id}@{project}.iam.gserviceaccount.com"


def migrator_service_account_id(env: str, tenant_id: str | None = None) -> str:
    """Service account of the job that applies the tenancy SQL: the platform's, or a tenant's."""
    if tenant_id is None:
        return service_account_id(env, "sql-migrator")
    return fit(f"m-{env}-{tenant_id}", LIMITS["service_account"])


def database_secret_prefix(env: str, tenant_id: str | None = None, role: str | None = None) -> str:
    """Start of the Secret Manager ids of one database's credentials: the pooled database's, or a tenant's
    instance `role` (postgres-1..)."""
    if tenant_id is None:
        return secret_id(env, "pooled", "").rstrip("-")
    return secret_id(env, tenant_id, role or "")


def database_secret(prefix: str, user: str) -> str:
    """The secret holding database user `user`'s password (`tenancy_app` -> `<prefix>-tenancy-app`)."""
    return f"{prefix}-{user.replace('_', '-')}"


def read_replica(instance_name: str, n: int) -> str:
    """Read replica `n` (1-based) of a Cloud SQL instance."""
    return f"{instance_name}-r{n}"


# Networks (components/network.py): every physical name is `<prefix>-<role>`. The platform's prefix is
# `platform`; a dedicated tenant in a project of its own uses `tenant`; one in the platform project uses
# `network_prefix(env, id)`, so that its names cannot meet the platform's or another tenant's there.
# role -> the kind of resource it names (for messages).
NETWORK_KINDS = {"vpc": "VPC network", "subnet": "subnetwork", "sql-range": "global address", "router": "Cloud Router",
                 "nat": "Cloud NAT"}
PLATFORM_NETWORK_PREFIX = "platform"
OWN_PROJECT_NETWORK_PREFIX = "tenant"


def network_prefix(env: str, tenant_id: str) -> str:
    return fit(f"{env}-{tenant_id}", LIMITS["cluster"])


def network_resource(prefix: str, role: str) -> str:
    """Network, subnet, peering range, router or NAT name (Compute Engine names: 1-63 characters)."""
    return fit(f"{prefix}-{role}", LIMITS["compute"])


# The ingress controller's regional address (components/edge.py): `edge-ingress` in the platform project
# (and in a dedicated tenant's own project), `<network prefix>-ingress` for a tenant in the platform project.
EDGE = "edge"


def ingress_address(prefix: str = EDGE) -> str:
    return fit(f"{prefix}-ingress", LIMITS["compute"])


def dns_zone(base_domain: str) -> str:
    """The Cloud DNS managed zone of the base domain."""
    return base_domain.replace(".", "-")


def log_sink(env: str, tenant_id: str) -> str:
    """A dedicated tenant's log sink (to a destination the tenant owns)."""
    return fit(f"tenancy-{env}-{tenant_id}", LIMITS["log_sink"])


def project_display_name(tenant_id: str) -> str:
    """Display name of a project created for a dedicated tenant (4-30 characters)."""
    return fit(tenant_id, LIMITS["project_name"])


def graph_name(tenant_id: str) -> str:
    """The Neo4j DBMS name in the tenant's namespace."""
    return f"graph-{tenant_id}"


# Kubernetes namespaces the platform creates in every cluster it runs (components/edge.py).
PLATFORM_K8S_NAMESPACES = {"ingress-nginx": "ingress controller namespace",
                           "cert-manager": "certificate manager namespace"}
# The PostgreSQL users whose passwords are kept in Secret Manager (components/postgres.py): owner, runtime,
# and the replication role of online tier moves.
DATABASE_USERS = ("tenancy_owner", "tenancy_app", "tenancy_replication")
# Every database role a plan may list (catalogue: postgres-1 .. postgres-9).
DATABASE_ROLES = tuple(f"postgres-{n}" for n in range(1, 10))
MAX_READ_REPLICAS = 3  # catalogue: dedicated.read_replicas <= 3


def platform_names(env: str, project: str | None = None, base_domain: str | None = None) -> dict[tuple[str, str], str]:
    """(kind, physical name) -> the platform component that owns it: every name the platform stack derives.

    The shared bucket's name includes the platform project and the DNS zone's the base domain, known only
    from stack config: they are listed when `project` / `base_domain` are given."""
    names = {
        ("service account", service_account_id(env, "pooled")): "pooled application identity",
        ("service account", migrator_service_account_id(env)): "SQL migrator identity",
        ("service account", node_service_account_id(env)): "GKE node service account",
        ("Firestore database", firestore_database(env, "pooled")): "pooled Firestore database",
        ("Cloud SQL instance", pooled_sql_instance(env)): "pooled PostgreSQL instance",
        ("Cloud SQL instance", registry_sql_instance(env)): "the registry of record",
        ("GKE cluster", cluster(env)): "shared GKE cluster",
        ("KMS key ring", cluster_key_ring(cluster(env))): "shared cluster's secrets key ring",
        ("node pool", WORKLOAD_NODE_POOL): "shared cluster's node pool",
        ("node pool", SANDBOX_NODE_POOL): "shared cluster's GKE Sandbox node pool",
        ("address", ingress_address()): "ingress address",
        ("namespace", POOLED_NAMESPACE): "pooled namespace",
        ("namespace", PLATFORM_NAMESPACE): "system namespace",
    }
    for role, kind in NETWORK_KINDS.items():
        names[(kind, network_resource(PLATFORM_NETWORK_PREFIX, role))] = f"platform {kind}"
    for user in DATABASE_USERS:
        names[("secret", database_secret(database_secret_prefix(env), user))] = "pooled database credentials"
        names[("secret", database_secret(registry_secret_prefix(env), user))] = "registry database credentials"
    for ns, what in PLATFORM_K8S_NAMESPACES.items():
        names[("namespace", ns)] = what
    if project is not None:
        names[("bucket", shared_bucket(env, project))] = "pooled uploads bucket"
        names[("bucket", access_log_bucket(env, project))] = "access-log bucket"
    if base_domain is not None:
        names[("DNS zone", dns_zone(base_domain))] = "DNS zone of the base domain"
    return names


def tenant_names(env: str, tenant_id: str, roles: tuple[str, ...] = DATABASE_ROLES) -> dict[tuple[str, str], str]:
    """(kind, physical name) -> what it is, for every name a tenant's stack may derive from its id (any plan;
    `roles` narrows the database instances to a plan's). Names that hold no id live only in a dedicated
    tenant's own project or cluster: `own_scope_names`."""
    prefix = network_prefix(env, tenant_id)
    names = {
        ("namespace", namespace(tenant_id)): "namespace",
        ("service account", service_account_id(env, tenant_id)): "workload identity",
        ("service account", migrator_service_account_id(env, tenant_id)): "SQL migrator identity",
        ("service account", node_service_account_id(env, tenant_id)): "GKE node service account",
        ("service account", deployer_service_account_id(env, tenant_id)): "deployer in its own project",
        ("bucket", bucket(env, tenant_id)): "uploads bucket",
        ("Firestore database", firestore_database(env, tenant_id)): "Firestore database",
        ("GKE cluster", cluster(env, tenant_id)): "GKE cluster",
        ("KMS key ring", cluster_key_ring(cluster(env, tenant_id))): "cluster secrets key ring",
        ("Identity Platform tenant", identity_display_name(tenant_id)): "Identity Platform tenant",
        ("node pool", tenant_node_pool(tenant_id)): "node pool in the shared cluster",
        ("address", ingress_address(prefix)): "ingress address in the platform project",
        ("log sink", log_sink(env, tenant_id)): "log sink",
    }
    for role, kind in NETWORK_KINDS.items():
        names[(kind, network_resource(prefix, role))] = f"{kind} in the platform project"
    for role in roles:
        instance = sql_instance(env, tenant_id, role)
        names[("Cloud SQL instance", instance)] = f"{role} instance"
        for replica in range(1, MAX_READ_REPLICAS + 1):
            names[("Cloud SQL instance", read_replica(instance, replica))] = f"{role} read replica"
        for user in DATABASE_USERS:
            names[("secret", database_secret(database_secret_prefix(env, tenant_id, role), user))] = f"{role} credentials"
    return names


def own_scope_names() -> dict[tuple[str, str], str]:
    """Names a dedicated tenant's stack gives inside a scope of its own, the same for every tenant: its own
    project's network and ingress address, and its own cluster's node pools and system namespaces."""
    names = {("address", ingress_address()): "ingress address in the tenant's project",
             ("node pool", WORKLOAD_NODE_POOL): "its cluster's node pool",
             ("node pool", SANDBOX_NODE_POOL): "its cluster's GKE Sandbox node pool"}
    for role, kind in NETWORK_KINDS.items():
        names[(kind, network_resource(OWN_PROJECT_NETWORK_PREFIX, role))] = f"{kind} in the tenant's project"
    for ns, what in PLATFORM_K8S_NAMESPACES.items():
        names[("namespace", ns)] = f"its cluster's {what}"
    return names


# Environments the collision check derives names in: the names have the same shape in every environment,
# and a long one makes sure shortened (hashed) names are covered too.
_CHECK_ENVS = ("dev", "staging123")


@functools.lru_cache(maxsize=None)
def _platform_text(env: str) -> str:
    return "\n".join(name for _, name in platform_names(env))


def platform_collision(tenant_id: str) -> str | None:
    """Why `tenant_id` may not be used (a reason for the catalogue's message), or None.

    Reasons, in order: a physical name equal to one of the platform's (derived, not listed by hand);
    an id ending in '-pooled', whose bucket `<env>-<id>-uploads` equals the shared bucket
    `<project>-<env>-pooled-uploads` for some platform project; a word that names a platform part; the
    shape of a cell or pool shard name (`cell-2`, `pool-7`)."""
    for env in _CHECK_ENVS:
        # Every tenant-derived name holds the id verbatim, or is shortened and holds '--' (which no platform
        # name does): an id that appears in no platform name cannot produce one. Keeps the check O(1)-ish
        # for catalogues of tens of thousands of tenants.
        if tenant_id not in _platform_text(env):
            continue
        platform = platform_names(env)
        for key in tenant_names(env, tenant_id):
            if key in platform:
                return f"it would name the same {key[0]} as the platform's {platform[key]}"
    if tenant_id.endswith("-pooled"):
        return ("it could name the same bucket as the platform's pooled uploads bucket "
                "(<project>-<env>-pooled-uploads)")
    if tenant_id in PLATFORM_WORDS:
        return f"it is the name of the platform's {PLATFORM_WORDS[tenant_id]}"
    if UNIT_ID.fullmatch(tenant_id):
        kind = {"cell": "cell (a shared cluster)", "pool": "pool shard (a pooled database)",
                "identity": "identity shard (Identity Platform tenants)"}[tenant_id.split("-", 1)[0]]
        return f"it has the shape of the name of a platform {kind}"
    return None


def stack_name(env: str, tenant_id: str | None = None) -> str:
    """`dev` is the platform stack of environment dev; `dev.acme` is tenant acme's stack in dev."""
    check_env(env)
    return env if tenant_id is None else f"{env}{STACK_SEPARATOR}{tenant_id}"


# Stack kinds (stack_kind): the environment's own (global) stack, its unit stacks, tenant stacks.
ENV_STACK, CELL_STACK, POOL_STACK, IDENTITY_STACK, TENANT_STACK = "environment", "cell", "pool", "identity", "tenant"
UNIT_KINDS = {"cell": CELL_STACK, "pool": POOL_STACK, "identity": IDENTITY_STACK}


def unit_stack(env: str, unit: str) -> str:
    """`prod.cell-2`, `prod.pool-1`, `prod.identity-3`: a unit's own stack."""
    if not (CELL_PATTERN.fullmatch(unit) or POOL_SHARD_PATTERN.fullmatch(unit) or IDENTITY_SHARD_PATTERN.fullmatch(unit)):
        raise ValueError(f"'{unit}' is not a cell, pool shard or identity shard name")
    return f"{check_env(env)}{STACK_SEPARATOR}{unit}"


def stack_kind(name: str) -> tuple[str, str, str | None]:
    """(kind, environment, unit or tenant id) of a stack name: kind is ENV_STACK (`prod`: the global stack),
    CELL_STACK/POOL_STACK/IDENTITY_STACK (`prod.cell-2`), or TENANT_STACK.
    Tenant ids never have a unit's shape (platform_collision), so the two cannot be confused."""
    env, rest = parse_stack_name(name)
    if rest is None:
        return ENV_STACK, env, None
    if UNIT_ID.fullmatch(rest):
        return UNIT_KINDS[rest.split("-", 1)[0]], env, rest
    return TENANT_STACK, env, rest


def parse_stack_name(name: str) -> tuple[str, str | None]:
    """(environment, tenant id or None) from a stack name; accepts `org/project/stack` forms too."""
    short = name.rsplit("/", 1)[-1]
    env, sep, tenant = short.partition(STACK_SEPARATOR)
    try:
        check_env(env)
    except ValueError as exc:
        raise ValueError(
            f"stack '{name}' does not follow the naming convention '<env>' (platform) or '<env>.<tenant-id>' (tenant): {exc}"
        ) from None
    if sep and not tenant:
        raise ValueError(f"stack '{name}' ends with '.'; name a tenant stack '<env>.<tenant-id>'")
    return env, (tenant or None)
