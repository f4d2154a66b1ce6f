"""A tenant's namespace with its guard rails: Pod Security, quotas, default-deny network, tenant RBAC.

Used for namespace (Standard) tenants in the shared cluster, for dedicated tenants inside their own
cluster, and for the pooled namespace the free tenants share.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

# Kubernetes API server and DNS; Google APIs are reached through Private Google Access ranges.
GOOGLE_APIS_CIDRS = ("199.36.153.8/30", "199.36.153.4/30")
METADATA_SERVER = "169.254.169.252/32"  # GKE metadata server (Workload Identity tokens)

# What a tenant's operators may do in their namespace: look at everything but Secrets, restart a pod by
# deleting it, scale, clean up Jobs. Nothing on the guard rails (ResourceQuota, LimitRange, NetworkPolicy,
# Role, RoleBinding, the Namespace object itself) -- unlike the built-in `admin`/`edit`. And no write to any
# pod template (create/update/patch of pods, Deployments, StatefulSets, Jobs, CronJobs): whoever writes a
# pod template can run it as any service account of the namespace, the SQL migrator's included.
OPERATOR_RULES = [
    {"apiGroups": [""], "resources": ["pods", "pods/log", "services", "endpoints", "configmaps",
                                       "persistentvolumeclaims", "events"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]},
    {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "replicasets"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["apps"], "resources": ["deployments/scale", "statefulsets/scale"], "verbs": ["get", "update", "patch"]},
    {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["delete"]},
    {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": ["get", "list", "watch"]},
]
OPERATOR_ROLE = "tenant-operator"


@dataclass(frozen=True)
class NamespaceArgs:
    namespace: str
    labels: dict[str, str]
    cpu: float
    memory_gb: float
    storage_gb: int
    pods: int
    pvcs: int
    services: int
    ingress_namespace: str
    # Google groups of the tenant's operators, bound to the namespace-scoped operator Role.
    operators: list[str] = field(default_factory=list)
    # Private IPs the tenant's pods may reach besides DNS and Google APIs (its own databases).
    egress_cidrs: list[pulumi.Input[str]] = field(default_factory=list)
    egress_ports: list[int] = field(default_factory=lambda: [5432])


def _cpu(cores: float) -> str:
    return f"{int(round(cores * 1000))}m"


def _mem(gb: float) -> str:
    return f"{int(round(gb * 1024))}Mi"


class TenantNamespace(pulumi.ComponentResource):
    namespace: pulumi.Output[str]

    def __init__(self, name: str, args: NamespaceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tenancy:k8s:TenantNamespace", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = {
            **args.labels,
            # Pod Security Admission `restricted`: no privileged pods, host namespaces, hostPath,
            # added capabilities, root users, privilege escalation; seccomp required.
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
            "pod-security.kubernetes.io/audit": "restricted",
            "pod-security.kubernetes.io/warn": "restricted",
        }
        ns = k8s.core.v1.Namespace(f"{name}-ns", metadata={"name": args.namespace, "labels": labels}, opts=child)
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[ns])
        meta = lambda n: {"name": n, "namespace": args.namespace, "labels": args.labels}  # noqa: E731
        self._quota(name, args, meta, in_ns)
        self._limit_range(name, args, meta, in_ns)
        self._network_policies(name, args, meta, in_ns)
        self._rbac(name, args, meta, in_ns)
        self.namespace = ns.metadata["name"]
        self.register_outputs({"namespace": self.namespace})

    def _quota(self, name, args: NamespaceArgs, meta, opts) -> None:
        k8s.core.v1.ResourceQuota(f"{name}-quota", metadata=meta("tenant-quota"), spec={"hard": {
            "requests.cpu": _cpu(args.cpu), "limits.cpu": _cpu(args.cpu * 2),
            "requests.memory": _mem(args.memory_gb), "limits.memory": _mem(args.memory_gb),
            "requests.storage": f"{args.storage_gb}Gi",
            "pods": str(args.pods), "persistentvolumeclaims": str(args.pvcs), "services": str(args.services),
            # Tenants are reached through the shared ingress only: no cloud load balancers, no node ports.
            "services.loadbalancers": "0", "services.nodeports": "0",
            "configmaps": "100", "secrets": "100",
        }}, opts=opts)

    def _limit_range(self, name, args: NamespaceArgs, meta, opts) -> None:
        k8s.core.v1.LimitRange(f"{name}-limits", metadata=meta("tenant-limits"), spec={"limits": [
            {"type": "Container",
             "default": {"cpu": "500m", "memory": "512Mi"},
             "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
             "max": {"cpu": _cpu(min(args.cpu, 8)), "memory": _mem(min(args.memory_gb, 32))}},
            {"type": "PersistentVolumeClaim", "max": {"storage": f"{args.storage_gb}Gi"}},
        ]}, opts=opts)

    def _network_policies(self, name, args: NamespaceArgs, meta, opts) -> None:
        # Deny everything in and out; each allow below is one reason to talk.
        k8s.networking.v1.NetworkPolicy(f"{name}-default-deny", metadata=meta("default-deny"),
                                        spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, opts=opts)
        k8s.networking.v1.NetworkPolicy(f"{name}-allow-ingress-controller", metadata=meta("allow-from-ingress"), spec={
            "podSelector": {}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": args.ingress_namespace}}}]}],
        }, opts=opts)
        k8s.networking.v1.NetworkPolicy(f"{name}-allow-same-namespace", metadata=meta("allow-same-namespace"), spec={
            "podSelector": {}, "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {}}]}], "egress": [{"to": [{"podSelector": {}}]}],
        }, opts=opts)
        k8s.networking.v1.NetworkPolicy(f"{name}-allow-dns", metadata=meta("allow-dns"), spec={
            "podSelector": {}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}],
        }, opts=opts)
        k8s.networking.v1.NetworkPolicy(f"{name}-allow-google-apis", metadata=meta("allow-google-apis"), spec={
            "podSelector": {}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": c}} for c in (*GOOGLE_APIS_CIDRS, METADATA_SERVER)],
                        "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 988},
                                  {"protocol": "TCP", "port": 80}]}],
        }, opts=opts)
        if args.egress_cidrs:
            k8s.networking.v1.NetworkPolicy(f"{name}-allow-databases", metadata=meta("allow-own-databases"), spec={
                "podSelector": {}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": pulumi.Output.concat(ip, "/32")}} for ip in args.egress_cidrs],
                            "ports": [{"protocol": "TCP", "port": p} for p in args.egress_ports]}],
            }, opts=opts)

    def _rbac(self, name, args: NamespaceArgs, meta, opts) -> None:
        """The operator Role, bound to the tenant's operator groups by a RoleBinding in this namespace only
        (never a ClusterRoleBinding, never the built-in admin/edit roles)."""
        role = k8s.rbac.v1.Role(f"{name}-operator-role", metadata=meta(OPERATOR_ROLE), rules=OPERATOR_RULES, opts=opts)
        if args.operators:
            k8s.rbac.v1.RoleBinding(f"{name}-operator-binding", metadata=meta("tenant-operators"),
                                    role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": OPERATOR_ROLE},
                                    subjects=[{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}
                                              for group in args.operators],
                                    opts=pulumi.ResourceOptions(parent=self, depends_on=[role]))
