"""The isolation rules of the tenancy policy pack, as plain functions, one module per resource family.

Each rule takes `ResourceValidationArgs` (or `StackValidationArgs`) and a reporter, and says why it
exists in its message. `pack` lists them with their names, descriptions and enforcement, in the pack's
order; `policy/__main__.py` only assembles that list into a PolicyPack, and `tenancy plan` and
`tenancy policy-check` call these same objects offline.

- `common`: what every rule reads of a resource (nested fields, markers, labels, the tenant of a stack)
- `gke`, `cloudsql`, `storage`, `secrets`, `kubernetes`: one resource family each
- `iam`: every grant an IAM resource makes, and the rules on one grant by itself
- `ownership`: who owns what, derived from the plan; `iam_scope`, `deployers` and `isolation` judge
  grants, deploying identities and shared names across stacks with it
"""

from .cloudsql import cloudsql_flags, cloudsql_private_ssl_backups, replication_secret_private
from .deployers import (
    DEPLOYER_KSA_PREFIX,
    PLATFORM_DEPLOYER_KSA,
    STACK_CR,
    deployer_scope,
    deployer_scope_plan,
    operator_stack_deployer,
)
from .gke import gke_cluster_hardened, gke_node_pool_hardened
from .iam import Grant, iam_condition_exact, iam_grants, iam_least_privilege, no_public_members
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
from .ownership import DEPLOYER_TYPE, Ownership, build_ownership
from .pack import ALL_POLICIES, PLAN_POLICIES, PLAN_WIDE_FORMS, RESOURCE_POLICIES, STACK_POLICIES
from .secrets import no_credentials_in_config, no_plaintext_secrets
from .storage import STATEFUL_TYPES, stateful_protected, storage_bucket_private

__all__ = [
    # the pack
    "ALL_POLICIES", "PLAN_POLICIES", "PLAN_WIDE_FORMS", "RESOURCE_POLICIES", "STACK_POLICIES",
    # resource rules
    "cloudsql_flags", "cloudsql_private_ssl_backups", "gke_cluster_hardened", "gke_node_pool_hardened",
    "iam_condition_exact", "iam_least_privilege", "k8s_containers_declare_resources", "k8s_network_isolation",
    "k8s_no_cluster_admin_for_tenants", "k8s_no_exposed_services", "k8s_no_host_access", "no_credentials_in_config",
    "no_plaintext_secrets", "no_public_members", "operator_stack_deployer", "replication_secret_private",
    "stateful_protected", "storage_bucket_private", "tenant_label_present",
    # stack rules and their plan-wide forms
    "deployer_scope", "deployer_scope_plan", "one_tenant_per_stack", "tenant_iam_scope", "tenant_iam_scope_plan",
    "tenant_namespace_guardrails", "tenant_namespace_placement",
    # plan-wide rules
    "ingress_host_claims", "shared_across_tenants", "unique_physical_names",
    # what the rules share with the rest of the project
    "DEPLOYER_KSA_PREFIX", "DEPLOYER_TYPE", "PLATFORM_DEPLOYER_KSA", "STACK_CR", "STATEFUL_TYPES",
    "TENANT_PROJECT_ROLES", "Grant", "Ownership", "build_ownership", "iam_grants",
]
