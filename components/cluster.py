"""A hardened GKE cluster, secure by default (CIS GKE benchmark), used by the platform and dedicated tenants.

Every security setting is fixed here with the reason beside it; the arguments only choose things that
cannot weaken isolation (machine type, node counts, release channel, whether the control plane has a
public endpoint at all, whether a GKE Sandbox pool exists).

Node isolation in a shared cluster: a tenant's pods land on the shared `workloads` pool, on the tainted
GKE Sandbox (gVisor) pool, or on a tainted pool of the tenant's own (`TenantNodePool`).
`pod_scheduling()` gives the pod fields (runtime class, node selector, tolerations) that match each.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from tenancy import naming

# Roles the node service account needs, and no more (the Compute default account has Editor).
NODE_ROLES = (
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
    "roles/artifactregistry.reader",
)


# Taints keep every pod off a pool unless it tolerates the pool's taint; labels let it select the pool.
SANDBOX_KEY = "tenancy.io/isolation"
SANDBOX_VALUE = "sandbox"
SANDBOX_RUNTIME_CLASS = "gvisor"      # the RuntimeClass GKE installs with a Sandbox pool
TENANT_KEY = "tenancy.io/tenant"


class ReleaseChannel(str, Enum):
    RAPID = "RAPID"
    REGULAR = "REGULAR"
    STABLE = "STABLE"


@dataclass(frozen=True)
class ClusterArgs:
    cluster_name: str
    project: str
    region: str
    network_id: pulumi.Input[str]
    subnet_id: pulumi.Input[str]
    pods_range: str
    services_range: str
    master_cidr: str
    authorized_cidr: str
    node_service_account_id: str
    labels: dict[str, str]
    # Google Workspace domain whose `gke-security-groups@` group nests the groups RBAC may name.
    groups_domain: pulumi.Input[str]
    machine_type: str = "e2-standard-4"
    min_nodes: int = 1
    max_nodes: int = 5
    release_channel: ReleaseChannel = ReleaseChannel.REGULAR
    private_endpoint: bool = False
    # A GKE Sandbox (gVisor) node pool for tenants whose plan asks for a kernel boundary.
    sandbox_pool: bool = False


def security_group(domain: pulumi.Input[str]) -> pulumi.Output[str]:
    """The group GKE reads RBAC group memberships through (Google Groups for RBAC)."""
    return pulumi.Output.concat("gke-security-groups@", domain)


class GkeCluster(pulumi.ComponentResource):
    """Cluster, node pool, node service account, secrets-encryption key; exposes a Kubernetes provider."""

    name: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    ca_certificate: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    provider: k8s.Provider
    workload_pool: str

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tenancy:gcp:GkeCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.workload_pool = f"{args.project}.svc.id.goog"
        node_sa = self._node_service_account(name, args, child)
        key = self._secrets_key(name, args, child)
        cluster = gcp.container.Cluster(
            f"{name}-cluster",
            name=args.cluster_name,
            project=args.project,
            location=args.region,  # regional: control plane and nodes across zones
            network=args.network_id,
            subnetwork=args.subnet_id,
            networking_mode="VPC_NATIVE",
            ip_allocation_policy=gcp.container.ClusterIpAllocationPolicyArgs(
                cluster_secondary_range_name=args.pods_range,
                services_secondary_range_name=args.services_range,
            ),
            # The default pool would run with the Compute default service account; it is removed at once.
            remove_default_node_pool=True,
            initial_node_count=1,
            node_config=hardened_node_config(args.machine_type, node_sa.email, args.labels),
            # Nodes have no public IPs; the control plane's public endpoint is optional and allow-listed.
            private_cluster_config=gcp.container.ClusterPrivateClusterConfigArgs(
                enable_private_nodes=True,
                enable_private_endpoint=args.private_endpoint,
                master_ipv4_cidr_block=args.master_cidr,
            ),
            master_authorized_networks_config=gcp.container.ClusterMasterAuthorizedNetworksConfigArgs(
                cidr_blocks=[gcp.container.ClusterMasterAuthorizedNetworksConfigCidrBlockArgs(
                    cidr_block=args.authorized_cidr, display_name="platform-subnet")],
            ),
            # Pods get Google identities through Workload Identity, never the node's.
            workload_identity_config=gcp.container.ClusterWorkloadIdentityConfigArgs(workload_pool=self.workload_pool),
            # Dataplane V2 enforces NetworkPolicy (tenant default-deny depends on it). The older Calico add-on is
            # off, as GKE requires with Dataplane V2; spelled out so that scanners see enforcement is Dataplane V2's.
            datapath_provider="ADVANCED_DATAPATH",
            network_policy=gcp.container.ClusterNetworkPolicyArgs(enabled=False),
            # Pod-to-pod traffic on one node goes through the VPC too: flow logs and firewall see it.
            enable_intranode_visibility=True,
            # RBAC may name Google Groups (tenant operator groups), resolved through this security group.
            authenticator_groups_config=gcp.container.ClusterAuthenticatorGroupsConfigArgs(
                security_group=security_group(args.groups_domain)),
            enable_shielded_nodes=True,
            enable_legacy_abac=False,  # RBAC only
            enable_kubernetes_alpha=False,
            # No client certificate: credentials come from Google identities and can be revoked.
            master_auth=gcp.container.ClusterMasterAuthArgs(
                client_certificate_config=gcp.container.ClusterMasterAuthClientCertificateConfigArgs(
                    issue_client_certificate=False),
            ),
            # Kubernetes Secrets are encrypted at the application layer with our own key.
            database_encryption=gcp.container.ClusterDatabaseEncryptionArgs(state="ENCRYPTED", key_name=key.id),
            release_channel=gcp.container.ClusterReleaseChannelArgs(channel=args.release_channel.value),
            binary_authorization=gcp.container.ClusterBinaryAuthorizationArgs(
                evaluation_mode="PROJECT_SINGLETON_POLICY_ENFORCE"),
            logging_config=gcp.container.ClusterLoggingConfigArgs(
                enable_components=["SYSTEM_COMPONENTS", "WORKLOADS"]),
            monitoring_config=gcp.container.ClusterMonitoringConfigArgs(
                enable_components=["SYSTEM_COMPONENTS"],
                managed_prometheus=gcp.container.ClusterMonitoringConfigManagedPrometheusArgs(enabled=True)),
            resource_labels=args.labels,
            deletion_protection=True,
            opts=pulumi.ResourceOptions(parent=self, protect=True, depends_on=[self._key_grant],
                                        ignore_changes=["initialNodeCount", "nodeConfig"]),
        )
        gcp.container.NodePool(
            f"{name}-nodes",
            name=naming.WORKLOAD_NODE_POOL,
            project=args.project,
            cluster=cluster.name,
            location=args.region,
            autoscaling=gcp.container.NodePoolAutoscalingArgs(min_node_count=args.min_nodes, max_node_count=args.max_nodes),
            management=gcp.container.NodePoolManagementArgs(auto_repair=True, auto_upgrade=True),
            node_config=hardened_node_config(args.machine_type, node_sa.email, args.labels),
            opts=child,
        )
        if args.sandbox_pool:
            gcp.container.NodePool(
                f"{name}-sandbox-nodes",
                name=naming.SANDBOX_NODE_POOL,
                project=args.project,
                cluster=cluster.name,
                location=args.region,
                autoscaling=gcp.container.NodePoolAutoscalingArgs(min_node_count=0, max_node_count=args.max_nodes),
                management=gcp.container.NodePoolManagementArgs(auto_repair=True, auto_upgrade=True),
                node_config=hardened_node_config(args.machine_type, node_sa.email, args.labels, sandbox=True,
                                                 taint=(SANDBOX_KEY, SANDBOX_VALUE)),
                opts=child,
            )
        self.name = cluster.name
        self.endpoint = cluster.endpoint
        self.ca_certificate = cluster.master_auth.cluster_ca_certificate
        self.kubeconfig = pulumi.Output.secret(pulumi.Output.all(cluster.name, cluster.endpoint, self.ca_certificate)
                                               .apply(lambda a: kubeconfig(*a)))
        self.provider = k8s.Provider(f"{name}-k8s", kubeconfig=self.kubeconfig,
                                     enable_server_side_apply=True, opts=child)
        self.register_outputs({"name": self.name, "endpoint": self.endpoint})

    def _node_service_account(self, name: str, args: ClusterArgs, child: pulumi.ResourceOptions) -> gcp.serviceaccount.Account:
        sa = gcp.serviceaccount.Account(f"{name}-nodes-sa", account_id=args.node_service_account_id, project=args.project,
                                        display_name=f"GKE nodes of {args.cluster_name}", opts=child)
        for role in NODE_ROLES:
            gcp.projects.IAMMember(f"{name}-nodes-{role.split('/')[-1].replace('.', '-')}", project=args.project,
                                   role=role, member=sa.member, opts=child)
        return sa

    def _secrets_key(self, name: str, args: ClusterArgs, child: pulumi.ResourceOptions) -> gcp.kms.CryptoKey:
        ring = gcp.kms.KeyRing(f"{name}-keyring", name=naming.cluster_key_ring(args.cluster_name), project=args.project,
                               location=args.region, opts=pulumi.ResourceOptions(parent=self, protect=True))
        key = gcp.kms.CryptoKey(f"{name}-secrets-key", name="etcd-secrets", key_ring=ring.id, rotation_period="7776000s",
                                labels=args.labels, opts=pulumi.ResourceOptions(parent=self, protect=True))
        agent = gcp.projects.ServiceIdentity(f"{name}-gke-agent", project=args.project, service="container.googleapis.com",
                                             opts=child)
        self._key_grant = gcp.kms.CryptoKeyIAMMember(
            f"{name}-secrets-key-gke", crypto_key_id=key.id, role="roles/cloudkms.cryptoKeyEncrypterDecrypter",
            member=agent.member, opts=child)
        return key


def hardened_node_config(machine_type: str, service_account: pulumi.Input[str], labels: dict[str, str], *,
                         sandbox: bool = False, taint: tuple[str, str] | None = None) -> dict:
    """Node settings every pool shares; `taint` (key, value) reserves the pool and labels its nodes."""
    config = {
        "machine_type": machine_type,
        "image_type": "COS_CONTAINERD",  # the only image GKE Sandbox runs on; hardened for every pool
        "service_account": service_account,  # never the Compute default service account
        "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"],  # access decided by IAM, not scopes
        "workload_metadata_config": {"mode": "GKE_METADATA"},  # pods cannot read node credentials
        "shielded_instance_config": {"enable_secure_boot": True, "enable_integrity_monitoring": True},
        "metadata": {"disable-legacy-endpoints": "true"},
        "resource_labels": labels,
    }
    if sandbox:
        config["sandbox_config"] = {"sandbox_type": "gvisor"}
    if taint:
        key, value = taint
        config["taints"] = [{"key": key, "value": value, "effect": "NO_SCHEDULE"}]
        config["labels"] = {key: value}
    return config


@dataclass(frozen=True)
class TenantNodePoolArgs:
    tenant_id: str
    pool_name: str
    project: str
    region: str
    cluster_name: pulumi.Input[str]
    node_service_account: pulumi.Input[str]
    labels: dict[str, str]
    machine_type: str = "e2-standard-4"
    min_nodes: int = 1
    max_nodes: int = 3


class TenantNodePool(pulumi.ComponentResource):
    """A node pool in the shared cluster that only one tenant's pods tolerate (node isolation `dedicated`)."""

    def __init__(self, name: str, args: TenantNodePoolArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tenancy:gcp:TenantNodePool", name, None, opts)
        pool = gcp.container.NodePool(
            f"{name}-pool", name=args.pool_name, project=args.project, cluster=args.cluster_name, location=args.region,
            autoscaling=gcp.container.NodePoolAutoscalingArgs(min_node_count=args.min_nodes, max_node_count=args.max_nodes),
            management=gcp.container.NodePoolManagementArgs(auto_repair=True, auto_upgrade=True),
            node_config=hardened_node_config(args.machine_type, args.node_service_account, args.labels,
                                             taint=(TENANT_KEY, args.tenant_id)),
            opts=pulumi.ResourceOptions(parent=self))
        self.name = pool.name
        self.register_outputs({"name": self.name})


def pod_scheduling(isolation: str, tenant_id: str) -> dict:
    """Pod fields (Kubernetes names) that put a tenant's pods on the nodes its node isolation asks for.

    `shared`: nothing. `sandbox`: the gVisor runtime class (GKE adds its own node selector and toleration
    for it) and our pool's label and taint. `dedicated`: the tenant's own pool's label and taint."""
    if isolation == "sandbox":
        key, value, runtime = SANDBOX_KEY, SANDBOX_VALUE, SANDBOX_RUNTIME_CLASS
    elif isolation == "dedicated":
        key, value, runtime = TENANT_KEY, tenant_id, None
    else:
        return {}
    out: dict = {"nodeSelector": {key: value},
                 "tolerations": [{"key": key, "operator": "Equal", "value": value, "effect": "NoSchedule"}]}
    if runtime:
        out["runtimeClassName"] = runtime
    return out


class NodeIsolationPolicy(pulumi.ComponentResource):
    """Admission rules that make the node pools' taints hold against tenants' own pod specs.

    A taint only keeps away pods that do not tolerate it; anyone who can create a pod can add a
    toleration. In namespaces labelled `tenancy.io/tenant` (tenant namespaces) a pod may tolerate only
    its own tenant's pool, never every taint (a toleration without a key), and may tolerate the sandbox
    pool only when it runs under gVisor: a runc container on a sandbox node would share the kernel the
    other tenants' sandboxes run on."""

    def __init__(self, name: str, labels: dict[str, str], opts: pulumi.ResourceOptions | None = None):
        super().__init__("tenancy:k8s:NodeIsolationPolicy", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        policy_name = "tenancy-node-isolation"
        policy = k8s.admissionregistration.v1.ValidatingAdmissionPolicy(
            f"{name}-policy", metadata={"name": policy_name, "labels": labels},
            spec={
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                        "operations": ["CREATE", "UPDATE"], "resources": ["pods"]}]},
                "variables": [
                    {"name": "tenant", "expression": f"namespaceObject.metadata.labels['{TENANT_KEY}']"},
                    {"name": "tolerations", "expression": "has(object.spec.tolerations) ? object.spec.tolerations : []"},
                ],
                "validations": [{"expression": e, "message": m} for e, m in ADMISSION_RULES],
            }, opts=child)
        k8s.admissionregistration.v1.ValidatingAdmissionPolicyBinding(
            f"{name}-binding", metadata={"name": policy_name, "labels": labels},
            spec={"policyName": policy_name, "validationActions": ["Deny"],
                  "matchResources": {"namespaceSelector": {"matchExpressions": [{"key": TENANT_KEY, "operator": "Exists"}]}}},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]))
        self.register_outputs({"policy": policy_name})


# (CEL expression, message) pairs of NodeIsolationPolicy; a toleration's operator defaults to Equal.
ADMISSION_RULES = (
    ("variables.tolerations.all(t, has(t.key) && t.key != '')",
     "tenant pods may not tolerate every taint (a toleration needs a key)"),
    (f"variables.tolerations.all(t, !has(t.key) || t.key != '{TENANT_KEY}' || ((!has(t.operator) || t.operator == 'Equal') && "
     f"has(t.value) && t.value == variables.tenant))",
     f"a tenant's pods may tolerate only their own node pool ({TENANT_KEY}=<tenant id>)"),
    (f"variables.tolerations.all(t, !has(t.key) || !(t.key in ['{SANDBOX_KEY}', 'sandbox.gke.io/runtime'])) || "
     f"(has(object.spec.runtimeClassName) && object.spec.runtimeClassName == '{SANDBOX_RUNTIME_CLASS}')",
     f"pods on the GKE Sandbox pool must run under gVisor (runtimeClassName: {SANDBOX_RUNTIME_CLASS})"),
)


def kubeconfig(name: str, endpoint: str, ca: str) -> str:
    """A kubeconfig that authenticates with the caller's Google identity (gke-gcloud-auth-plugin)."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": name, "preferences": {},
        "clusters": [{"name": name, "cluster": {"server": f"https://{endpoint}", "certificate-authority-data": ca}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "users": [{"name": name, "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "gke-gcloud-auth-plugin",
            "provideClusterInfo": True, "installHint": "install gke-gcloud-auth-plugin (gcloud components install)"}}}],
    })
