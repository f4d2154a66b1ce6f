"""What the environment's stacks (stacks/cells.py) are built from: the network, a cell's cluster and edge, the
registry database, the operator and its deployers, a pool shard's pooled tier, and the directory entry and
registration of each tenant."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from components.cluster import ClusterArgs, GkeCluster, NodeIsolationPolicy
from tenancy.stores.layout import stores_for
from components.edge import CLUSTER_ISSUER, INGRESS_NAMESPACE, Edge, EdgeArgs
from components.identity import sign_in_host
from components.labels import k8s_labels, labels
from components.namespace import NamespaceArgs, TenantNamespace
from components.network import Network, NetworkArgs
from components.postgres import DATABASE, OWNER_USER, RUNTIME_USER, SSL_MODE, PostgresArgs, PostgresInstance
from components.sqljob import Registration, SqlApplyJob, SqlJobArgs
from components.storage import Bucket, BucketArgs, FirestoreArgs, FirestoreDatabase, access_log_bucket
from components.workload import AppArgs, AppRelease, WorkloadIdentity, WorkloadIdentityArgs
from stacks import contract
from tenancy import naming
from tenancy.catalog import Catalog, Model, State, Tenant
from tenancy.envconfig import PlatformConfig
from tenancy.fleet.placement import TenantPlacement

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
SHARED = "shared"
# The pooled namespace is one deployment for all free tenants; its quota is the pool's, not a tenant's.
POOL_QUOTA = {"cpu": 16.0, "memory_gb": 64.0, "storage_gb": 200, "pods": 200, "pvcs": 20, "services": 20}


def sql_files() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(SQL_DIR.glob("*.sql"))}


def registration(t: Tenant, entry: dict[str, Any] | None = None) -> Registration:
    """The tenant's row in `tenancy.tenants` of each database holding its rows (registered by the SQL job), with
    its directory entry's hostnames and placement (`entry`: directory_entry's, or a tenant stack's own)."""
    return Registration(id=t.id, plan=t.plan_name, model=t.model.value, state=t.state.value,
                        directory=registry_entry(entry) if entry else "{}")


def registry_entry(entry: dict[str, Any]) -> str:
    """What the registry keeps of a directory entry: hostnames and placement (units and store names), as compact
    JSON. Never the secrets' names or anything else."""
    return json.dumps({"hostnames": entry.get("hostnames") or [], "placement": entry.get("placement") or {}},
                      separators=(",", ":"), sort_keys=True)


def directory_entry(t: Tenant, env: str, cfg: PlatformConfig, placed: TenantPlacement | None = None) -> dict[str, Any]:
    """Where a tenant lives and which secrets (by name) hold its database credentials. `placed`: its cell,
    pool shard and data project (tenancy/fleet); the physical names follow from them."""
    placed = placed or TenantPlacement()
    entry: dict[str, Any] = {"name": t.name, "plan": t.plan_name, "model": t.model.value, "state": t.state.value}
    shard = placed.pool_shard or naming.pool_shard(1)
    if t.model is Model.POOLED:
        entry["hostnames"] = [naming.hostname("app", cfg.base_domain)]
        entry["placement"] = {"cluster": naming.cluster(env), "namespace": naming.pool_namespace(shard),
                              "bucket": naming.pool_bucket(env, cfg.gcp_project, shard), "prefix": f"{t.id}/",
                              "firestore": naming.pool_firestore(env, shard),
                              "stack": naming.unit_stack(env, shard),
                              **placed.to_json()}
        if placed.pool_shard:
            entry["placement"]["database"] = naming.pool_shard_instance(env, placed.pool_shard)
        entry["databaseSecrets"] = {"pooled": naming.database_secret(naming.pool_secret_prefix(env, shard), RUNTIME_USER)}
    else:
        hosts = [naming.hostname(t.subdomain, cfg.base_domain)]
        if t.custom_domain:
            hosts.append(t.custom_domain)
        project = (t.dedicated.project.id if t.dedicated and t.dedicated.project else None) or cfg.gcp_project
        entry["hostnames"] = hosts
        cluster = naming.cluster(env, t.id)
        if t.model is Model.NAMESPACE:
            cluster = naming.cell_cluster(env, placed.cell) if placed.cell else naming.cluster(env)
        entry["placement"] = {
            "cluster": cluster, "namespace": naming.namespace(t.id), "project": project, "bucket": naming.bucket(env, t.id),
            "firestore": naming.firestore_database(env, t.id), "stack": naming.stack_name(env, t.id), **placed.to_json()}
        entry["databaseSecrets"] = {db: naming.database_secret(naming.database_secret_prefix(env, t.id, db), RUNTIME_USER)
                                    for db in t.plan.databases}
    # what moves, exports and is deleted with it
    entry["stores"] = stores_for(t, env, cfg.gcp_project, pool_shard=placed.pool_shard).to_json()
    return entry


def registry_database(env: str, cfg: PlatformConfig, network_id: pulumi.Input[str], deps: list[pulumi.Resource],
                      gopts: pulumi.ResourceOptions) -> None:
    """The environment's registry of record: a small instance of the global stack, private IP only, audited and
    protected like every database here. `tenancy registry init` applies its schema; operations reach it through the
    Cloud SQL Auth Proxy with IAM authentication (the `registry` output names it, never a credential)."""
    registry = PostgresInstance("registry-db", PostgresArgs(
        instance_name=naming.registry_sql_instance(env), project=cfg.gcp_project, region=cfg.region,
        network_id=network_id, tier=cfg.pooled_db_tier, retention_days=30, labels=labels(env, SHARED),
        secret_prefix=naming.registry_secret_prefix(env), depends_on=deps), opts=gopts)
    pulumi.export("registry", {"connectionName": registry.connection_name, "database": DATABASE})


@dataclass(frozen=True)
class Kube:
    """A cell's cluster as the stacks that run workloads in it see it."""

    provider: pulumi.ProviderResource
    workload_pool: pulumi.Input[str]
    system_namespace: pulumi.Input[str]


@dataclass(frozen=True)
class CellNet:
    """Where a cell's cluster sits: the subnet and its secondary ranges, and the control plane's range."""

    network_id: pulumi.Input[str]
    subnet_id: pulumi.Input[str]
    subnet_cidr: str
    pods_range: str
    services_range: str
    master_cidr: str


def gcp_provider(cfg: PlatformConfig) -> gcp.Provider:
    return gcp.Provider("gcp", project=cfg.gcp_project, region=cfg.region, default_labels=labels(cfg.environment, SHARED))


def platform_network(cfg: PlatformConfig, gopts: pulumi.ResourceOptions) -> Network:
    return Network("platform", NetworkArgs(project=cfg.gcp_project, region=cfg.region, subnet_cidr=cfg.network_cidr,
                                           pods_cidr=cfg.pods_cidr, services_cidr=cfg.services_cidr,
                                           labels=labels(cfg.environment, SHARED),
                                           name_prefix=naming.PLATFORM_NETWORK_PREFIX), opts=gopts)


def environment_log_bucket(env: str, cfg: PlatformConfig, gopts: pulumi.ResourceOptions) -> Bucket:
    """The environment's access-log bucket (components/storage.py), in the platform project and region."""
    return access_log_bucket("access-logs", naming.access_log_bucket(env, cfg.gcp_project), cfg.gcp_project,
                             cfg.region, labels(env, SHARED), gopts)


def cell_cluster(env: str, cfg: PlatformConfig, cell: str, provider: gcp.Provider, where: CellNet,
                 zone_name: pulumi.Input[str] | None = None, records: tuple[str, ...] = ("app", "*"),
                 workloads: bool = True) -> tuple[GkeCluster, Edge, k8s.core.v1.Namespace | None]:
    """A cell: its shared cluster, the edge in front of it (address, records, ingress controller, certificates)
    and the platform's system namespace in it. `zone_name`: the zone exists elsewhere (the global stack).
    `workloads=False`: the cluster and the edge's address and records only, no system namespace (None) and
    nothing inside the cluster: every fact tenant stacks read, without the Kubernetes SDK's cost (an offline
    one-tenant plan's platform run)."""
    shared_labels = labels(env, SHARED)
    gopts = pulumi.ResourceOptions(provider=provider)
    cluster = GkeCluster("shared", ClusterArgs(
        cluster_name=naming.cell_cluster(env, cell), project=cfg.gcp_project, region=cfg.region,
        network_id=where.network_id, subnet_id=where.subnet_id, pods_range=where.pods_range,
        services_range=where.services_range, master_cidr=where.master_cidr, authorized_cidr=where.subnet_cidr,
        node_service_account_id=naming.cell_node_service_account_id(env, cell),
        labels=shared_labels, groups_domain=cfg.groups_domain, machine_type=cfg.cluster_machine_type,
        min_nodes=cfg.cluster_min_nodes, max_nodes=cfg.cluster_max_nodes, sandbox_pool=True), opts=gopts)
    kopts = pulumi.ResourceOptions(provider=cluster.provider)
    edge = Edge("edge", EdgeArgs(project=cfg.gcp_project, region=cfg.region, base_domain=cfg.base_domain,
                                 acme_email=cfg.acme_email, labels=shared_labels, k8s_labels=k8s_labels(env, SHARED),
                                 address_name=naming.cell_ingress_address(cell), zone_name=zone_name, records=records,
                                 controllers=workloads),
                opts=pulumi.ResourceOptions(providers=[provider, cluster.provider]))
    if not workloads:
        return cluster, edge, None
    system_ns = k8s.core.v1.Namespace("system-ns", metadata={"name": naming.PLATFORM_NAMESPACE, "labels": {
        **k8s_labels(env, SHARED), "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/audit": "restricted", "pod-security.kubernetes.io/warn": "restricted"}}, opts=kopts)
    # Node pools' taints hold against tenants' own pod specs (sandbox and per-tenant pools).
    NodeIsolationPolicy("node-isolation", k8s_labels(env, SHARED), opts=kopts)
    return cluster, edge, system_ns


def install_operator(env: str, cfg: PlatformConfig, catalog: Catalog, provider: gcp.Provider, cluster: GkeCluster,
                     units: list[str]) -> None:
    """The Pulumi Kubernetes Operator (cell 1), when `tenancy:operator` is true (off by default), with a Kubernetes
    service account for each scope's deployer (their GCP identities are the global stack's, `deployer_identities`)."""
    from components.operator import OperatorArgs, PulumiOperator
    from tenancy.operator.settings import CHART, CHART_VERSION, DEPLOYER_KSA, OperatorSettings

    # A unit stack has no config file of its own: like the rest of its config, from stacks/Pulumi.<env>.yaml.
    op = OperatorSettings.load(env)
    if not op.enabled:
        return
    scoped = [d for d in operator_deployers(env, cfg, catalog, op, units) if d.account_id]
    PulumiOperator("pulumi-operator", OperatorArgs(
        namespace=op.namespace, chart=CHART, chart_version=CHART_VERSION, deployer_email=op.deployer,
        deployer_project=op.deployer_project, deployer_ksa=DEPLOYER_KSA, workload_pool=cluster.workload_pool,
        labels=k8s_labels(env, SHARED), max_concurrent_reconciles=op.max_concurrent_reconciles, deployers=scoped),
        opts=pulumi.ResourceOptions(providers=[provider, cluster.provider]))


def operator_deployers(env: str, cfg: PlatformConfig, catalog: Catalog, op, units: list[str]) -> list:
    from tenancy.operator.deployers import environment_deployers

    return environment_deployers(env, catalog, cfg.gcp_project, op.deployer, units)


def deployer_identities(env: str, cfg: PlatformConfig, catalog: Catalog, provider: gcp.Provider, units: list[str]) -> None:
    """Each unit's deploying identity (tenancy/operator/deployers.py), when `tenancy:operator` is true."""
    from components.operator import DeployerArgs, DeployerIdentity
    from tenancy.operator.settings import OperatorSettings

    op = OperatorSettings.from_pulumi(env)
    if not op.enabled:
        return
    # Every cluster of the environment is in the platform project, so the operator's cell has this pool.
    pool = f"{cfg.gcp_project}.svc.id.goog"
    gopts = pulumi.ResourceOptions(provider=provider)
    for d in operator_deployers(env, cfg, catalog, op, units):
        # a dedicated tenant's own deployer is its stack's, in its own project (tenancy/operator/deployers.py)
        if d.account_id and not d.own_project:
            DeployerIdentity(f"deployer-{d.scope}", DeployerArgs(d, op.namespace, pool), opts=gopts)


def export_operator_namespace(env: str) -> None:
    """With the operator, its namespace: a dedicated tenant's stack then grants its deployer (derived from the
    tenant, tenancy/operator/deployers.py) its roles on the project the stack creates or adopts. Like every
    tenant-facing export, it does not depend on the catalogue."""
    from tenancy.operator.settings import OperatorSettings

    op = OperatorSettings.from_pulumi(env)
    if op.enabled:
        pulumi.export(contract.OPERATOR_NAMESPACE, op.namespace)


def environment_facts(env: str, cfg: PlatformConfig, network_id: pulumi.Input[str], subnet_id: pulumi.Input[str],
                      zone_name: pulumi.Input[str]) -> list[tuple[str, Any]]:
    """What tenant stacks read of the environment (the global stack's outputs)."""
    return [(contract.ENVIRONMENT, env), (contract.GCP_PROJECT, cfg.gcp_project), (contract.REGION, cfg.region),
            (contract.BASE_DOMAIN, cfg.base_domain), (contract.NETWORK_ID, network_id), (contract.SUBNET_ID, subnet_id),
            (contract.DNS_ZONE, zone_name), (contract.APP_CHART, cfg.app_chart),
            (contract.APP_CHART_VERSION, cfg.app_chart_version), (contract.GROUPS_DOMAIN, cfg.groups_domain)]


def cell_facts(cluster: GkeCluster, edge: Edge) -> list[tuple[str, Any]]:
    """What namespace tenants read of their cluster (their cell's outputs)."""
    return [(contract.CLUSTER_NAME, cluster.name), (contract.CLUSTER_ENDPOINT, cluster.endpoint),
            (contract.KUBECONFIG, cluster.kubeconfig), (contract.WORKLOAD_POOL, cluster.workload_pool),
            (contract.INGRESS_NAMESPACE, INGRESS_NAMESPACE), (contract.INGRESS_IP, edge.ip_address),
            (contract.CLUSTER_ISSUER, CLUSTER_ISSUER)]


def export_all(facts: list[tuple[str, Any]]) -> None:
    for key, value in facts:
        pulumi.export(key, value)


def pooled_tier(env: str, catalog: Catalog, cfg: PlatformConfig, pooled: list[Tenant], shard: str,
                provider: gcp.Provider, network_id: pulumi.Input[str], db_deps: list[pulumi.Resource], kube: Kube,
                placed: dict[str, TenantPlacement]) -> None:
    """A pool shard: its pooled instance, Firestore database, bucket, namespace, application and SQL job."""
    gopts = pulumi.ResourceOptions(provider=provider)
    kopts = pulumi.ResourceOptions(provider=kube.provider)
    both = pulumi.ResourceOptions(providers=[provider, kube.provider])
    pooled_plans = {t.plan_name: t.plan for t in pooled} or {"free": catalog.plans["free"]}
    retention = max(p.limits.backup_retention_days for p in pooled_plans.values())
    pooled_labels = labels(env, Model.POOLED.value)
    first = naming.unit_index(shard) == 1

    db = PostgresInstance("pooled-db", PostgresArgs(
        instance_name=naming.pool_shard_instance(env, shard), project=cfg.gcp_project, region=cfg.region,
        network_id=network_id, tier=cfg.pooled_db_tier, retention_days=retention, labels=pooled_labels,
        secret_prefix=naming.pool_secret_prefix(env, shard), depends_on=db_deps), opts=gopts)
    # How operations reach this shard's database through the Cloud SQL Auth Proxy (`tenancy registry sync`).
    pulumi.export("poolDatabase", {"shard": shard, "connectionName": db.connection_name, "database": DATABASE})
    firestore = FirestoreDatabase("pooled-firestore", FirestoreArgs(
        database_id=naming.pool_firestore(env, shard), project=cfg.gcp_project, location=cfg.region), opts=gopts)
    pool_ns = TenantNamespace("pooled-ns", NamespaceArgs(
        namespace=naming.pool_namespace(shard), labels=k8s_labels(env, Model.POOLED.value),
        ingress_namespace=INGRESS_NAMESPACE, egress_cidrs=[db.private_ip], **POOL_QUOTA), opts=kopts)
    app_identity = WorkloadIdentity("pooled-app", WorkloadIdentityArgs(
        project=cfg.gcp_project, account_id=naming.pool_service_account_id(env, shard), namespace=pool_ns.namespace,
        workload_pool=kube.workload_pool, labels=k8s_labels(env, Model.POOLED.value),
        display_name=f"pooled tenants' application ({env}{'' if first else ', ' + shard})"), opts=both)
    Bucket("pooled-bucket", BucketArgs(
        bucket_name=naming.pool_bucket(env, cfg.gcp_project, shard), project=cfg.gcp_project, location=cfg.region,
        labels=pooled_labels, members=[("roles/storage.objectAdmin", app_identity.member)],
        log_bucket=naming.access_log_bucket(env, cfg.gcp_project)), opts=gopts)
    gcp.secretmanager.SecretIamMember("pooled-app-db-secret", project=cfg.gcp_project,
                                      secret_id=db.secret_ids[RUNTIME_USER], role="roles/secretmanager.secretAccessor",
                                      member=app_identity.member, opts=gopts)
    firestore_grant("pooled-app-firestore", cfg.gcp_project, firestore.name, app_identity.member, gopts)

    migrator = WorkloadIdentity("sql-migrator", WorkloadIdentityArgs(
        project=cfg.gcp_project, account_id=naming.pool_migrator_service_account_id(env, shard),
        namespace=kube.system_namespace, workload_pool=kube.workload_pool, labels=k8s_labels(env, SHARED),
        display_name=f"applies the tenancy SQL ({env}{'' if first else ', ' + shard})",
        ksa_name="sql-migrator" if first else f"sql-migrator-{shard}"), opts=both)
    gcp.secretmanager.SecretIamMember("sql-migrator-owner-secret", project=cfg.gcp_project,
                                      secret_id=db.secret_ids[OWNER_USER], role="roles/secretmanager.secretAccessor",
                                      member=migrator.member, opts=gopts)
    SqlApplyJob("pooled-sql", SqlJobArgs(
        namespace=kube.system_namespace, service_account=migrator.ksa_name, sql_files=sql_files(),
        host=db.private_ip, database="app", user=OWNER_USER, password_secret=db.secret_ids[OWNER_USER],
        project=cfg.gcp_project, labels=k8s_labels(env, SHARED), server_ca=db.server_ca_cert,
        registrations=tuple(registration(t, directory_entry(t, env, cfg, placed.get(t.id)))
                            for t in pooled), identity=(env, shard),
        **({} if first else {"job_prefix": f"tenancy-sql-{shard}"})), opts=kopts)

    AppRelease("pooled-app", AppArgs(
        release_name="app", namespace=pool_ns.namespace, chart=cfg.app_chart, version=cfg.app_chart_version,
        labels=k8s_labels(env, Model.POOLED.value), depends_on=[app_identity],
        values=pooled_app_values(env, cfg, pooled, db.secret_ids[RUNTIME_USER], db.server_ca_cert, shard)), opts=kopts)


def firestore_grant(name: str, project: str, database: pulumi.Input[str], member: pulumi.Input[str],
                    opts: pulumi.ResourceOptions) -> None:
    """Firestore access is granted at the project with a condition naming the one database: the database
    itself or a path under it, never a prefix match (`dev-stark` must not match `dev-stark-labs`)."""
    path = pulumi.Output.concat("projects/", project, "/databases/", database)
    gcp.projects.IAMMember(name, project=project, role="roles/datastore.user", member=member, condition={
        "title": "one-database-only",
        "expression": pulumi.Output.concat('resource.name == "', path, '" || resource.name.startsWith("', path, '/")'),
    }, opts=opts)


def pooled_app_values(env: str, cfg: PlatformConfig, pooled: list[Tenant], db_secret: pulumi.Input[str],
                      db_server_ca: pulumi.Input[str] | None = None, shard: str = "pool-1") -> dict:
    """Helm values of the shared deployment: per-tenant limits and feature flags, secret *names* only."""
    return {
        "environment": env,
        "model": Model.POOLED.value,
        "host": naming.hostname("app", cfg.base_domain),
        # The shared deployment also serves sign-in for tenants on other hosts (components/identity.py).
        "signInHost": sign_in_host(cfg.base_domain),
        "ingress": {"className": "nginx", "clusterIssuer": CLUSTER_ISSUER},
        # The client verifies the server against the instance's CA (public, not a secret).
        "database": {"secretName": db_secret, "project": cfg.gcp_project, "user": RUNTIME_USER,
                     "sslMode": SSL_MODE, "serverCaCert": db_server_ca},
        "storage": {"bucket": naming.pool_bucket(env, cfg.gcp_project, shard), "prefixTemplate": "{tenant_id}/"},
        "firestore": {"database": naming.pool_firestore(env, shard)},
        "tenants": {t.id: {
            "plan": t.plan_name, "active": t.state is State.ACTIVE, "features": sorted(f.value for f in t.features),
            "apiRateLimitPerMinute": t.limits.api_rate_limit, "storageQuotaGb": t.limits.storage_gb,
        } for t in pooled},
    }
