"""A tenant stack: everything that belongs to one namespace (Standard) or dedicated (Enterprise) tenant.

The same components serve both models. A namespace tenant runs them in the shared cluster (provider from
the platform stack's outputs); a dedicated tenant gets its own network and hardened cluster, optionally
in its own GCP project (explicit provider: nothing lands in the platform project by accident).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.cluster import ClusterArgs, GkeCluster, TenantNodePool, TenantNodePoolArgs, pod_scheduling
from components.edge import CLUSTER_ISSUER, INGRESS_CLASS, INGRESS_NAMESPACE, Edge, EdgeArgs
from components.identity import sign_in_host
from components.labels import k8s_labels, labels
from components.namespace import NamespaceArgs, TenantNamespace
from components.network import Network, NetworkArgs
from components.postgres import DATABASE, OWNER_USER, RUNTIME_USER, SSL_MODE, PostgresArgs, PostgresInstance
from components.sqljob import SqlApplyJob, SqlJobArgs
from components.storage import Bucket, BucketArgs, FirestoreArgs, FirestoreDatabase, project_audit_logs
from components.workload import AppArgs, AppRelease, CONTAINER_SECURITY, POD_SECURITY, WorkloadIdentity, WorkloadIdentityArgs
from stacks import contract
from stacks.platform import firestore_grant, registration, sql_files
from tenancy import naming
from tenancy.catalog import Feature, Model, NodeIsolation, State, Tenant

TENANT_DB_TIER = {Model.NAMESPACE: "db-custom-1-3840", Model.DEDICATED: "db-custom-4-15360"}
# Tenant projects need these APIs before anything else can be created in them.
DEDICATED_APIS = ("compute.googleapis.com", "container.googleapis.com", "sqladmin.googleapis.com",
                  "servicenetworking.googleapis.com", "secretmanager.googleapis.com", "firestore.googleapis.com",
                  "cloudkms.googleapis.com", "monitoring.googleapis.com", "logging.googleapis.com", "dns.googleapis.com")
NEO4J_CHART_VERSION = "5.26.0"


@dataclass(frozen=True)
class PlatformFacts:
    """What the platform stack exports (read through a StackReference)."""

    environment: pulumi.Output[str]
    project: pulumi.Output[str]
    region: pulumi.Output[str]
    base_domain: pulumi.Output[str]
    network_id: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    workload_pool: pulumi.Output[str]
    app_chart: pulumi.Output[str]
    app_chart_version: pulumi.Output[str]
    cluster_name: pulumi.Output[str]
    groups_domain: pulumi.Output[str]


def read_platform(env: str, project: str, cell: str | None = None) -> tuple[pulumi.StackReference, PlatformFacts]:
    """The platform's facts: the global stack's, plus the cluster facts of the tenant's cell (`cell`; dedicated
    tenants have a cluster of their own and read none)."""
    ref = pulumi.StackReference(f"{pulumi.get_organization()}/{project}/{naming.stack_name(env)}")
    out = ref.require_output
    if cell is not None:
        cluster_out = pulumi.StackReference(
            f"{pulumi.get_organization()}/{project}/{naming.unit_stack(env, cell)}").require_output
    cluster_fact = (lambda key: cluster_out(key)) if cell is not None else (lambda key: pulumi.Output.from_input(""))
    return ref, PlatformFacts(
        environment=out(contract.ENVIRONMENT), project=out(contract.GCP_PROJECT), region=out(contract.REGION),
        base_domain=out(contract.BASE_DOMAIN), network_id=out(contract.NETWORK_ID),
        kubeconfig=cluster_fact(contract.KUBECONFIG), workload_pool=cluster_fact(contract.WORKLOAD_POOL),
        app_chart=out(contract.APP_CHART), app_chart_version=out(contract.APP_CHART_VERSION),
        cluster_name=cluster_fact(contract.CLUSTER_NAME), groups_domain=out(contract.GROUPS_DOMAIN))


def build(env: str, tenant: Tenant, platform_project: str, platform_region: str, base_domain: str,
          app_chart: str, app_chart_version: str, facts: PlatformFacts, operator_namespace: str | None = None) -> None:
    """Build the tenant's stack. Plain values (project, region, domain, chart) come from the platform's
    outputs resolved before the program runs, so names are known at plan time; the rest flow as Outputs.
    `operator_namespace`: the Pulumi Kubernetes Operator's, when the platform runs it (a dedicated tenant then has
    a deploying identity of its own)."""
    model = tenant.model.value
    gcp_labels = labels(env, model, tenant.id)
    kube_labels = k8s_labels(env, model, tenant.id)
    region = tenant.region or platform_region
    project = platform_project
    deps: list[pulumi.Resource] = []

    if tenant.model is Model.DEDICATED:
        project, deps = _tenant_project(tenant, env, platform_project, gcp_labels)
    provider = gcp.Provider("gcp", project=project, region=region, default_labels=gcp_labels,
                            opts=pulumi.ResourceOptions(depends_on=deps))
    gopts = pulumi.ResourceOptions(provider=provider)
    if operator_namespace and project != platform_project:
        _own_deployer(env, tenant, platform_project, project, operator_namespace, gopts)

    isolation = tenant.plan.node_isolation
    if tenant.model is Model.DEDICATED:
        # In the platform project (no project of its own) every physical name carries the tenant: the
        # platform's and other dedicated tenants' networks, routers and addresses live there too.
        in_platform_project = project == platform_project
        prefix = naming.network_prefix(env, tenant.id) if in_platform_project else naming.OWN_PROJECT_NETWORK_PREFIX
        net = Network("tenant", NetworkArgs(project=project, region=region, subnet_cidr="10.30.0.0/20",
                                            pods_cidr="10.128.0.0/14", services_cidr="10.132.0.0/20",
                                            labels=gcp_labels, name_prefix=prefix), opts=gopts)
        cluster = GkeCluster("tenant", ClusterArgs(
            cluster_name=naming.cluster(env, tenant.id), project=project, region=region, network_id=net.network_id,
            subnet_id=net.subnet_id, pods_range=net.pods_range, services_range=net.services_range,
            master_cidr="172.16.32.0/28", authorized_cidr="10.30.0.0/20",
            node_service_account_id=naming.node_service_account_id(env, tenant.id),
            labels=gcp_labels, groups_domain=facts.groups_domain,
            private_endpoint=bool(tenant.dedicated and tenant.dedicated.private_endpoint),
            machine_type="e2-standard-8", min_nodes=1, max_nodes=10,
            sandbox_pool=isolation is NodeIsolation.SANDBOX), opts=gopts)
        k8s_provider = cluster.provider
        network_id: pulumi.Input[str] = net.network_id
        workload_pool: pulumi.Input[str] = cluster.workload_pool
        db_deps: list[pulumi.Resource] = [net.private_services]
        edge = Edge("edge", EdgeArgs(project=project, region=region, base_domain=None, acme_email=tenant.admin_email,
                                     labels=gcp_labels, k8s_labels=kube_labels,
                                     address_name=naming.ingress_address(prefix) if in_platform_project
                                     else naming.ingress_address()),
                    opts=pulumi.ResourceOptions(providers=[provider, k8s_provider]))
        if not in_platform_project:
            # The tenant's own project: every service's reads and writes are audited there, objects included
            # (the platform stack audits the platform project's objects).
            project_audit_logs("audit-logs", project, gopts)
    else:
        k8s_provider = k8s.Provider("shared-cluster", kubeconfig=facts.kubeconfig, enable_server_side_apply=True)
        network_id, workload_pool, db_deps = facts.network_id, facts.workload_pool, []
        if isolation is NodeIsolation.DEDICATED:
            TenantNodePool("nodes", TenantNodePoolArgs(
                tenant_id=tenant.id, pool_name=naming.tenant_node_pool(tenant.id), project=platform_project,
                region=platform_region, cluster_name=facts.cluster_name,
                node_service_account=naming.service_account_email(naming.node_service_account_id(env), platform_project),
                labels=gcp_labels), opts=gopts)
    # Where the tenant's pods run: the shared pool, the gVisor pool, or its own pool (components/cluster.py).
    scheduling = pod_scheduling(isolation.value, tenant.id) if tenant.model is Model.NAMESPACE or \
        isolation is NodeIsolation.SANDBOX else {}
    kopts = pulumi.ResourceOptions(provider=k8s_provider)
    both = pulumi.ResourceOptions(providers=[provider, k8s_provider])

    databases = {
        role: PostgresInstance(role, PostgresArgs(
            instance_name=naming.sql_instance(env, tenant.id, role), project=project, region=region,
            network_id=network_id, tier=TENANT_DB_TIER[tenant.model], retention_days=tenant.limits.backup_retention_days,
            labels=gcp_labels, secret_prefix=naming.database_secret_prefix(env, tenant.id, role),
            high_availability=tenant.plan.high_availability,
            read_replicas=tenant.dedicated.read_replicas if tenant.dedicated else 0, depends_on=db_deps), opts=gopts)
        for role in tenant.plan.databases
    }
    ns = TenantNamespace("namespace", NamespaceArgs(
        namespace=naming.namespace(tenant.id), labels=kube_labels, cpu=tenant.limits.cpu, memory_gb=tenant.limits.memory_gb,
        storage_gb=tenant.limits.storage_gb, pods=tenant.limits.pods, pvcs=tenant.limits.pvcs,
        services=tenant.limits.services, ingress_namespace=INGRESS_NAMESPACE,
        operators=[tenant.operator_group] if tenant.operator_group else [],
        egress_cidrs=[d.private_ip for d in databases.values()], egress_ports=[5432, 7687]), opts=kopts)
    identity = WorkloadIdentity("app", WorkloadIdentityArgs(
        project=project, account_id=naming.service_account_id(env, tenant.id), namespace=ns.namespace,
        workload_pool=workload_pool, labels=kube_labels, display_name=f"tenant {tenant.id} ({env})"), opts=both)
    for role, db in databases.items():
        gcp.secretmanager.SecretIamMember(f"{role}-runtime-secret", project=project, secret_id=db.secret_ids[RUNTIME_USER],
                                          role="roles/secretmanager.secretAccessor", member=identity.member, opts=gopts)
    hosts = [naming.hostname(tenant.subdomain, base_domain)] + ([tenant.custom_domain] if tenant.custom_domain else [])
    _apply_tenancy_sql(env, tenant, project, ns, workload_pool, databases, kube_labels, both, gopts, kopts, hosts)
    firestore = FirestoreDatabase("firestore", FirestoreArgs(
        database_id=naming.firestore_database(env, tenant.id), project=project, location=region), opts=gopts)
    firestore_grant("app-firestore", project, firestore.name, identity.member, gopts)
    bucket = Bucket("uploads", BucketArgs(
        bucket_name=naming.bucket(env, tenant.id), project=project, location=region, labels=gcp_labels,
        kms_key=tenant.kms_key, members=[("roles/storage.objectAdmin", identity.member)],
        log_bucket=naming.access_log_bucket(env, platform_project)), opts=gopts)

    active = tenant.state is State.ACTIVE
    graph = Feature.RECOMMENDATIONS in tenant.features
    if graph:
        _neo4j(tenant, ns, kube_labels, clustered=tenant.model is Model.DEDICATED, opts=kopts, scheduling=scheduling)
    AppRelease("app", AppArgs(
        release_name="app", namespace=ns.namespace, chart=app_chart, version=app_chart_version, labels=kube_labels,
        depends_on=[identity],
        values={
            "environment": env, "model": model, "tenant": tenant.id, "hosts": hosts,
            # The tenant's hosts are not Identity Platform authorized domains: sign-in happens on the auth host.
            "signInHost": sign_in_host(base_domain),
            # A suspended tenant keeps its data; its workloads scale to zero.
            "replicaCount": (2 if tenant.model is Model.DEDICATED else 1) if active else 0,
            "features": {f.value: (f in tenant.features) for f in Feature},
            "rateLimit": {"requestsPerMinute": tenant.limits.api_rate_limit},
            "storage": {"bucket": bucket.name, "quotaGb": tenant.limits.storage_gb},
            "firestore": {"database": firestore.name},
            # The client verifies the server against the instance's CA (public, not a secret).
            "databases": {role: {"host": db.private_ip, "secretName": db.secret_ids[RUNTIME_USER], "user": RUNTIME_USER,
                                 "sslMode": SSL_MODE, "serverCaCert": db.server_ca_cert}
                          for role, db in databases.items()},
            "graph": {"enabled": graph, "passwordSecret": "neo4j-auth" if graph else None},
            **scheduling,
        }), opts=kopts)
    if active:
        _routes(tenant, ns, hosts, kube_labels, kopts)

    pulumi.export("tenant", tenant.id)
    pulumi.export("model", model)
    pulumi.export("project", project)
    pulumi.export("namespace", ns.namespace)
    pulumi.export("serviceAccount", identity.email)
    pulumi.export("bucket", bucket.name)
    pulumi.export("databases", {role: {"instance": db.instance_name, "privateIp": db.private_ip,
                                       "connectionName": db.connection_name, "database": DATABASE,
                                       "runtimeSecret": db.secret_ids[RUNTIME_USER]} for role, db in databases.items()})
    pulumi.export("hostnames", hosts)
    if tenant.model is Model.DEDICATED:
        _operations(env, tenant, project, hosts, gcp_labels, gopts)
        pulumi.export("ingressIp", edge.ip_address)
        if tenant.custom_domain:
            # The records the tenant creates in its own DNS for its custom domain.
            pulumi.export("dnsRecords", [{"name": f"{tenant.custom_domain}.", "type": "A", "ttl": 300,
                                          "value": edge.ip_address}])


def _apply_tenancy_sql(env: str, tenant: Tenant, project: str, ns: TenantNamespace, workload_pool: pulumi.Input[str],
                       databases: dict[str, PostgresInstance], kube_labels: dict[str, str], both: pulumi.ResourceOptions,
                       gopts: pulumi.ResourceOptions, kopts: pulumi.ResourceOptions, hosts: list[str]) -> None:
    """The same tenancy SQL as the pool, so a tenant's rows can move between them; one Job per database."""
    migrator = WorkloadIdentity("sql-migrator", WorkloadIdentityArgs(
        project=project, account_id=naming.migrator_service_account_id(env, tenant.id),
        namespace=ns.namespace, workload_pool=workload_pool, labels=kube_labels,
        display_name=f"applies the tenancy SQL for {tenant.id} ({env})", ksa_name="sql-migrator"), opts=both)
    files = sql_files()
    for role, db in databases.items():
        gcp.secretmanager.SecretIamMember(f"{role}-owner-secret", project=project, secret_id=db.secret_ids[OWNER_USER],
                                          role="roles/secretmanager.secretAccessor", member=migrator.member, opts=gopts)
        SqlApplyJob(f"{role}-sql", SqlJobArgs(
            namespace=ns.namespace, service_account=migrator.ksa_name, sql_files=files, host=db.private_ip,
            database="app", user=OWNER_USER, password_secret=db.secret_ids[OWNER_USER], project=project,
            labels=kube_labels, job_prefix=f"sql-{role}", server_ca=db.server_ca_cert,
            registrations=(registration(tenant, own_entry(env, tenant, project, hosts)),),
            identity=(env, f"{tenant.id}/{role}")), opts=kopts)


def own_entry(env: str, tenant: Tenant, project: str, hosts: list[str]) -> dict:
    """What the tenant's own databases register of where it lives (the platform's directory holds its units)."""
    return {"hostnames": hosts,
            "placement": {"namespace": naming.namespace(tenant.id), "project": project, "bucket": naming.bucket(env, tenant.id),
                          "firestore": naming.firestore_database(env, tenant.id), "stack": naming.stack_name(env, tenant.id)}}


def _operations(env: str, tenant: Tenant, project: str, hosts: list[str], gcp_labels: dict[str, str],
                gopts: pulumi.ResourceOptions) -> None:
    """Dedicated tenants: their logs to a destination they own, alerts to their own channel."""
    settings = tenant.dedicated
    if settings and settings.log_sink:
        sink = gcp.logging.ProjectSink(
            "log-sink", name=naming.log_sink(env, tenant.id), project=project,
            destination=settings.log_sink, unique_writer_identity=True,
            filter=f'resource.labels.namespace_name="{naming.namespace(tenant.id)}" OR labels.tenant="{tenant.id}"',
            description=f"logs of tenant {tenant.id} ({env}) to the tenant's own destination", opts=gopts)
        # The tenant grants this identity write access on its destination.
        pulumi.export("logSinkWriterIdentity", sink.writer_identity)
    channels = []
    if settings and settings.notification_email:
        channel = gcp.monitoring.NotificationChannel(
            "alerts-email", project=project, type="email", display_name=f"{tenant.id} on-call",
            labels={"email_address": settings.notification_email}, user_labels=gcp_labels, opts=gopts)
        channels.append(channel.name)
    for i, host in enumerate(hosts):
        check = gcp.monitoring.UptimeCheckConfig(
            f"uptime-{i}", project=project, display_name=f"{host} availability", timeout="10s", period="60s",
            http_check={"path": "/healthz", "port": 443, "use_ssl": True, "validate_ssl": True},
            monitored_resource={"type": "uptime_url", "labels": {"project_id": project, "host": host}},
            user_labels=gcp_labels, opts=gopts)
        gcp.monitoring.AlertPolicy(
            f"availability-{i}", project=project, display_name=f"{host} is down", combiner="OR",
            notification_channels=channels, severity="CRITICAL", user_labels=gcp_labels,
            conditions=[{"display_name": "uptime check failing", "condition_threshold": {
                "filter": pulumi.Output.concat('metric.type="monitoring.googleapis.com/uptime_check/check_passed" '
                                               'AND resource.type="uptime_url" AND metric.label.check_id="',
                                               check.uptime_check_id, '"'),
                "comparison": "COMPARISON_GT", "threshold_value": 1, "duration": "120s",
                "aggregations": [{"alignment_period": "60s", "per_series_aligner": "ALIGN_NEXT_OLDER",
                                  "cross_series_reducer": "REDUCE_COUNT_FALSE", "group_by_fields": ["resource.label.host"]}],
                "trigger": {"count": 1}}}],
            opts=gopts)
    gcp.monitoring.AlertPolicy(
        "error-rate", project=project, display_name=f"{tenant.id}: 5xx above 5%", combiner="OR",
        notification_channels=channels, severity="ERROR", user_labels=gcp_labels,
        conditions=[{"display_name": "ingress 5xx ratio", "condition_prometheus_query_language": {
            "query": ('sum(rate(nginx_ingress_controller_requests{status=~"5..",exported_namespace="%s"}[5m])) / '
                      'sum(rate(nginx_ingress_controller_requests{exported_namespace="%s"}[5m])) > 0.05')
                     % (naming.namespace(tenant.id), naming.namespace(tenant.id)),
            "duration": "300s", "evaluation_interval": "60s"}}],
        opts=gopts)


def _own_deployer(env: str, tenant: Tenant, platform_project: str, project: str, operator_namespace: str,
                  gopts: pulumi.ResourceOptions) -> None:
    """The tenant's deploying identity on the Pulumi Kubernetes Operator, in its own project: its account, its roles
    on that project and nowhere else, and the binding that lets only its Kubernetes service account (in the
    operator's namespace) act as it (tenancy/operator/deployers.py). The operator runs in the platform project's
    cluster, hence that project's Workload Identity pool."""
    from components.operator import DeployerArgs, DeployerIdentity
    from tenancy.operator.deployers import scope_deployer

    d = scope_deployer(env, tenant.id, platform_project, "", own_project=project)
    DeployerIdentity("deployer", DeployerArgs(d, operator_namespace, f"{platform_project}.svc.id.goog"), opts=gopts)


def _tenant_project(tenant: Tenant, env: str, platform_project: str,
                    gcp_labels: dict[str, str]) -> tuple[str, list[pulumi.Resource]]:
    """The dedicated tenant's project: created (folder, billing, APIs) or an existing one, or the platform's."""
    settings = tenant.dedicated.project if tenant.dedicated else None
    if settings is None:
        return platform_project, []
    if not settings.create:
        return settings.id, []
    org_provider = gcp.Provider("gcp-org", project=platform_project)
    proj = gcp.organizations.Project(
        "project", project_id=settings.id, name=naming.project_display_name(tenant.id), folder_id=settings.folder_id,
        billing_account=settings.billing_account, auto_create_network=False, labels=gcp_labels, deletion_policy="PREVENT",
        opts=pulumi.ResourceOptions(provider=org_provider, protect=True))
    apis = [gcp.projects.Service(f"api-{api.split('.')[0]}", project=proj.project_id, service=api,
                                 disable_on_destroy=False, opts=pulumi.ResourceOptions(provider=org_provider))
            for api in DEDICATED_APIS]
    return settings.id, [proj, *apis]


def _neo4j(tenant: Tenant, ns: TenantNamespace, kube_labels: dict[str, str], clustered: bool,
           opts: pulumi.ResourceOptions, scheduling: dict | None = None) -> None:
    password = random.RandomPassword("neo4j-password", length=32, special=False)
    auth = k8s.core.v1.Secret("neo4j-auth", metadata={"name": "neo4j-auth", "namespace": ns.namespace, "labels": kube_labels},
                              string_data={"NEO4J_AUTH": pulumi.Output.secret(pulumi.Output.concat("neo4j/", password.result))},
                              type="Opaque", opts=opts)
    k8s.helm.v3.Release(
        "neo4j", name="neo4j", namespace=ns.namespace, chart="neo4j", version=NEO4J_CHART_VERSION,
        repository_opts={"repo": "https://helm.neo4j.com/neo4j"},
        values={
            "neo4j": {"name": naming.graph_name(tenant.id), "passwordFromSecret": "neo4j-auth",
                      "minimumClusterSize": 3 if clustered else 1,
                      "resources": {"cpu": "500m", "memory": "2Gi"}},
            "volumes": {"data": {"mode": "dynamic", "dynamic": {"storageClassName": "premium-rwo",
                                                               "requests": {"storage": "20Gi"}}}},
            # The chart has no runtimeClassName: on the gVisor pool Neo4j would run under runc, so it follows
            # only a tenant's own node pool (sandbox tenants' Neo4j stays on the shared pool).
            "podSpec": {"securityContext": POD_SECURITY,
                        **({"tolerations": scheduling["tolerations"]} if _own_pool(scheduling) else {})},
            **({"nodeSelector": scheduling["nodeSelector"]} if _own_pool(scheduling) else {}),
            "containerSecurityContext": CONTAINER_SECURITY,
            "services": {"neo4j": {"enabled": False}},  # no LoadBalancer: reached inside the namespace only
            "podLabels": kube_labels,
        },
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[auth], protect=True)))


def _routes(tenant: Tenant, ns: TenantNamespace, hosts: list[str], kube_labels: dict[str, str],
            opts: pulumi.ResourceOptions) -> None:
    """The tenant's hostnames on the ingress controller, each with a cert-manager certificate."""
    k8s.apiextensions.CustomResource("certificate", api_version="cert-manager.io/v1", kind="Certificate",
                                     metadata={"name": "app-tls", "namespace": ns.namespace, "labels": kube_labels},
                                     spec={"secretName": "app-tls", "dnsNames": hosts,
                                           "issuerRef": {"kind": "ClusterIssuer", "name": CLUSTER_ISSUER}}, opts=opts)
    k8s.networking.v1.Ingress("ingress", metadata={
        "name": "app", "namespace": ns.namespace, "labels": kube_labels,
        "annotations": {"nginx.ingress.kubernetes.io/limit-rpm": str(tenant.limits.api_rate_limit),
                        "nginx.ingress.kubernetes.io/ssl-redirect": "true"}},
        spec={"ingressClassName": INGRESS_CLASS, "tls": [{"hosts": hosts, "secretName": "app-tls"}],
              "rules": [{"host": h, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
                  "service": {"name": "app", "port": {"number": 80}}}}]}} for h in hosts]}, opts=opts)


def _own_pool(scheduling: dict | None) -> bool:
    """True when `scheduling` pins pods to a tenant's own node pool (no special runtime needed)."""
    return bool(scheduling) and "runtimeClassName" not in scheduling
