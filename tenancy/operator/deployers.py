"""Who deploys what on the Pulumi Kubernetes Operator: one identity per scope, never one for the whole fleet.

A workspace runs a stack's program with its Stack object's Kubernetes service account, which Workload Identity
maps to one GCP service account. With one account for every stack, a compromised workspace of one tenant's
stack could change every other tenant's infrastructure. So each scope has its own pair:

| scope | its stacks | Kubernetes SA | GCP SA | roles |
|---|---|---|---|---|
| platform | the platform (global) stack | `tenancy-deployer` | `tenancy:operatorDeployer` (made outside: it makes the units') | set outside |
| `cell-<n>` | the cell's stack; the stacks of the tenants it hosts whose resources are in the platform project | `deployer-cell-<n>` | `d-<env>-cell-<n>` | CELL_SERVICES (+ DEDICATED_SERVICES' extra), platform project |
| `pool-<n>` | the pool shard's stack | `deployer-pool-<n>` | `d-<env>-pool-<n>` | POOL_SERVICES, platform project |
| `identity-<k>` | the identity shard's stack | `deployer-identity-<k>` | `d-<env>-identity-<k>` | Identity Platform, platform project |
| `<tenant>` | a dedicated tenant's stack, in a project of its own | `deployer-<tenant>` | `d-<env>-<tenant>`, in that project | OWN_PROJECT_SERVICES, on that project only |

The units' accounts are in the platform deployer's project (`operatorDeployer`): with it a project of its own,
no unit's roles (service-account admin in the platform project among them) reach another deployer's account.
Tenants whose resources are in the platform project (namespace tenants, dedicated tenants without a project
of their own) run as their cell's deployer: an identity of their own could not be limited to their share of
the platform project.

Project roles are the predefined roles of the services each kind of stack declares (SERVICE_ROLES; a test keeps
them in step with the plans). A deployer in the platform project may grant project roles only from
GRANTABLE_ROLES (an IAM condition on its projectIamAdmin): it cannot grant itself more.

A dedicated tenant's deployer with a project of its own is the tenant stack's own: its account, its roles on
that project and the Workload Identity binding that lets its Kubernetes service account act as it are declared
by the tenant's stack, in that project (a created project exists only once that stack has run), so the first
deployment of such a tenant, which creates or adopts the project, runs with `--engine auto`; the operator's
stack holds only its Kubernetes service account. Nothing of it is in the platform project or in any other
tenant's.
"""

from __future__ import annotations

from dataclasses import dataclass

from tenancy import naming

PLATFORM = "platform"
PLATFORM_KSA = "tenancy-deployer"
KSA_PREFIX = "deployer-"
# The GCP service accounts of deployers: `d-<env>-<scope>` (naming.deployer_service_account_id).

# Resource type prefix -> the predefined roles that manage it. Kubernetes objects go through GKE's IAM.
SERVICE_ROLES: dict[str, tuple[str, ...]] = {
    "gcp:compute/": ("roles/compute.networkAdmin",),
    "gcp:container/": ("roles/container.admin", "roles/iam.serviceAccountUser"),   # nodes run as their account
    "gcp:dns/": ("roles/dns.admin",),
    "gcp:firestore/": ("roles/datastore.owner",),
    "gcp:identityplatform/": ("roles/identityplatform.admin",),
    "gcp:kms/": ("roles/cloudkms.admin",),
    "gcp:logging/": ("roles/logging.configWriter",),
    "gcp:monitoring/": ("roles/monitoring.editor",),
    "gcp:organizations/project:": ("roles/resourcemanager.projectMover",),          # its own project's labels
    "gcp:projects/iAMAuditConfig:": ("roles/resourcemanager.projectIamAdmin",),
    "gcp:projects/iAMMember:": ("roles/resourcemanager.projectIamAdmin",),
    "gcp:projects/service": ("roles/serviceusage.serviceUsageAdmin",),             # services, service identities
    "gcp:projects/serviceIdentity:": ("roles/serviceusage.serviceUsageAdmin",),    # a service's agent (GKE's, for KMS)
    "gcp:secretmanager/": ("roles/secretmanager.admin",),
    "gcp:serviceaccount/": ("roles/iam.serviceAccountAdmin",),
    "gcp:servicenetworking/": ("roles/servicenetworking.networksAdmin",),
    "gcp:sql/": ("roles/cloudsql.admin",),
    "gcp:storage/": ("roles/storage.admin",),
    "kubernetes:": ("roles/container.admin",),
}
# The services each kind of scope's stacks declare resources of (its roles follow from SERVICE_ROLES).
TENANT_STORES = ("gcp:firestore/", "gcp:projects/iAMMember:", "gcp:secretmanager/", "gcp:serviceaccount/", "gcp:sql/",
                 "gcp:storage/", "kubernetes:")
CELL_SERVICES = (*TENANT_STORES, "gcp:compute/", "gcp:container/", "gcp:dns/", "gcp:kms/", "gcp:projects/serviceIdentity:")
POOL_SERVICES = TENANT_STORES
IDENTITY_SERVICES = ("gcp:identityplatform/",)
# A dedicated tenant's stack: its own network, cluster and operations; in a project of its own also the
# project itself, its APIs and its audit config (never those of the platform project).
DEDICATED_SERVICES = (*CELL_SERVICES, "gcp:logging/", "gcp:monitoring/", "gcp:servicenetworking/")
OWN_PROJECT_SERVICES = (*DEDICATED_SERVICES, "gcp:organizations/project:", "gcp:projects/iAMAuditConfig:",
                        "gcp:projects/service")
# A cell's deployer also runs the stacks of dedicated tenants homed in it whose resources are in the platform project.
SERVICES = {naming.CELL_STACK: tuple(dict.fromkeys((*CELL_SERVICES, *DEDICATED_SERVICES))),
            naming.POOL_STACK: POOL_SERVICES, naming.IDENTITY_STACK: IDENTITY_SERVICES}
# Project roles a deployer in the platform project may grant: its nodes' (logs, metrics, images) and a
# workload's conditional access to its Firestore database (components/storage: database-level IAM).
GRANTABLE_ROLES = ("roles/artifactregistry.reader", "roles/datastore.user", "roles/logging.logWriter",
                   "roles/monitoring.metricWriter", "roles/monitoring.viewer", "roles/stackdriver.resourceMetadata.writer")
IAM_ADMIN = "roles/resourcemanager.projectIamAdmin"


@dataclass(frozen=True)
class Grant:
    role: str
    project: str
    condition: tuple[str, str] | None = None      # (title, expression)


@dataclass(frozen=True)
class Deployer:
    """One scope's deploying identity."""

    scope: str                 # platform, cell-<n>, pool-<n>, identity-<k>, or a tenant id
    kind: str                  # naming.ENV_STACK, CELL_STACK, POOL_STACK, IDENTITY_STACK or TENANT_STACK
    ksa: str                   # its Kubernetes service account in the operator's namespace
    email: str                 # its GCP service account
    account_id: str | None     # None: made outside the program (the platform's)
    account_project: str       # the project its GCP service account is in
    project: str               # the project its roles are on
    own_project: bool = False  # a dedicated tenant's project of its own: its stack declares its identity

    @property
    def member(self) -> str:
        return f"serviceAccount:{self.email}"

    @property
    def services(self) -> tuple[str, ...]:
        if self.kind == naming.ENV_STACK:
            return ()
        return OWN_PROJECT_SERVICES if self.own_project else SERVICES[self.kind]

    @property
    def grants(self) -> tuple[Grant, ...]:
        """Its project roles (none for the platform's: they are set outside the program)."""
        roles = sorted({r for service in self.services for r in SERVICE_ROLES[service]})
        out = []
        for role in roles:
            condition = None
            if role == IAM_ADMIN and not self.own_project:
                condition = ("grants only node and workload roles",
                             "api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', []).hasOnly(["
                             + ", ".join(f"'{r}'" for r in GRANTABLE_ROLES) + "])")
            out.append(Grant(role, self.project, condition))
        return tuple(out)


def ksa_name(scope: str) -> str:
    return PLATFORM_KSA if scope == PLATFORM else f"{KSA_PREFIX}{scope}"


def scope_deployer(env: str, scope: str, platform_project: str, platform_email: str,
                   own_project: str | None = None) -> Deployer:
    """The deployer of `scope`: PLATFORM, a unit's name, or the id of a dedicated tenant with a project of its own
    (`own_project`). `platform_email`: the platform's deployer (`tenancy:operatorDeployer`), whose project holds
    the units' accounts."""
    deployers_project = platform_email.partition("@")[2].partition(".")[0] or platform_project
    if scope == PLATFORM:
        return Deployer(PLATFORM, naming.ENV_STACK, PLATFORM_KSA, platform_email, None, deployers_project, platform_project)
    account = naming.deployer_service_account_id(env, scope)
    if own_project is not None:
        return Deployer(scope, naming.TENANT_STACK, ksa_name(scope), naming.service_account_email(account, own_project),
                        account, own_project, own_project, own_project=True)
    if not naming.UNIT_ID.fullmatch(scope):
        raise ValueError(f"'{scope}' is not a unit; a tenant has a deployer of its own only with a project of its own")
    return Deployer(scope, naming.UNIT_KINDS[scope.split("-", 1)[0]], ksa_name(scope),
                    naming.service_account_email(account, deployers_project), account, deployers_project,
                    platform_project)


def tenant_scope(tenant, cell: str | None, platform_project: str | None = None) -> str:
    """The scope a tenant's stack runs in: its own (a dedicated tenant with a project of its own), else its cell's:
    `cell`, a namespace tenant's (None without cell stacks), or cell 1, which every tenant's resources in the
    platform project outside any cell (a dedicated tenant's without a project of its own) belong to."""
    if tenant.model.value == "dedicated" and own_project(tenant, platform_project or "") is not None:
        return tenant.id
    return cell or naming.cell(1)


def own_project(tenant, platform_project: str) -> str | None:
    """A dedicated tenant's project of its own, or None (its resources are in the platform project)."""
    project = tenant.dedicated.project.id if tenant.dedicated and tenant.dedicated.project else None
    return project if project and project != platform_project else None


def environment_deployers(env: str, catalog, platform_project: str, platform_email: str,
                          units: list[str]) -> list[Deployer]:
    """Every deployer of the environment: the platform's, each unit's (`units`: cells, pool and identity shards),
    each dedicated tenant's with a project of its own."""
    out = [scope_deployer(env, PLATFORM, platform_project, platform_email)]
    out += [scope_deployer(env, u, platform_project, platform_email) for u in units]
    out += [scope_deployer(env, t.id, platform_project, platform_email, own_project=own_project(t, platform_project))
            for t in catalog.stack_tenants if own_project(t, platform_project) is not None]
    return out
