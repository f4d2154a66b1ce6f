"""The pack's policies: each rule's name, description, enforcement and config, in the pack's order, and the
plan-wide forms that run offline over the whole plan."""

from __future__ import annotations

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ResourceValidationPolicy,
    StackValidationPolicy,
)

if "." in __package__:
    from .. import sizes
else:  # the CrossGuard pack imports rules/ as a top-level package (policy/ is its working directory)
    import sizes

from .cloudsql import DEFAULT_MIN_RETENTION, cloudsql_flags, cloudsql_private_ssl_backups, replication_secret_private
from .deployers import deployer_scope, deployer_scope_plan, operator_stack_deployer
from .gke import gke_cluster_hardened, gke_node_pool_hardened
from .iam import iam_condition_exact, iam_least_privilege, no_public_members
from .iam_scope import TENANT_PROJECT_ROLES, tenant_iam_scope, tenant_iam_scope_plan
from .isolation import (
    ingress_host_claims,
    one_tenant_per_stack,
    shared_across_tenants,
    tenant_label_present,
    unique_physical_names,
)
from .kubernetes import (
    k8s_containers_declare_resources,
    k8s_network_isolation,
    k8s_no_cluster_admin_for_tenants,
    k8s_no_exposed_services,
    k8s_no_host_access,
    tenant_namespace_guardrails,
    tenant_namespace_placement,
)
from .secrets import no_credentials_in_config, no_plaintext_secrets
from .storage import stateful_protected, storage_bucket_private


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
