"""The Pulumi Kubernetes Operator (v2) in a management namespace, and the identity its workspaces deploy as."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

RELEASE_NAME = "pulumi-kubernetes-operator"


@dataclass(frozen=True)
class OperatorArgs:
    namespace: str
    chart: str
    chart_version: str
    deployer_email: str          # the deploying identity's GCP service account
    deployer_project: str        # the project that service account lives in
    deployer_ksa: str            # the Kubernetes service account every Stack's workspace runs as
    workload_pool: pulumi.Input[str]
    labels: dict[str, str]
    max_concurrent_reconciles: int


class PulumiOperator(pulumi.ComponentResource):
    """Namespace (Pod Security `restricted`: the workspaces run with the restricted profile), the operator's
    Helm release at a pinned chart version, and the workspaces' service account bound through Workload
    Identity to the deploying identity: no key exists anywhere."""

    namespace: pulumi.Output[str]

    def __init__(self, name: str, args: OperatorArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tenancy:k8s:PulumiOperator", name, None, opts)
        ns = k8s.core.v1.Namespace(f"{name}-ns", metadata={"name": args.namespace, "labels": {
            **args.labels, "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/audit": "restricted", "pod-security.kubernetes.io/warn": "restricted"}},
            opts=pulumi.ResourceOptions(parent=self))
        self._release(name, args, ns)
        self._deployer(name, args, ns)
        self.namespace = ns.metadata["name"]
        self.register_outputs({"namespace": self.namespace})

    def _release(self, name: str, args: OperatorArgs, ns: k8s.core.v1.Namespace) -> None:
        k8s.helm.v3.Release(
            f"{name}-release", name=RELEASE_NAME, namespace=args.namespace, chart=args.chart, version=args.chart_version,
            values={
                # Stacks reconciled at once; each runs in its own workspace pod, so this bounds the burst.
                "extraEnv": [{"name": "MAX_CONCURRENT_RECONCILES", "value": str(args.max_concurrent_reconciles)}],
                # The controller caches every Stack object: memory grows with the fleet.
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
                "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                       "seccompProfile": {"type": "RuntimeDefault"}},
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                "podLabels": args.labels,
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ns]))

    def _deployer(self, name: str, args: OperatorArgs, ns: k8s.core.v1.Namespace) -> None:
        child = pulumi.ResourceOptions(parent=self)
        # The token is mounted: the workspace's agent authenticates the operator's calls with it.
        k8s.core.v1.ServiceAccount(f"{name}-deployer-ksa", metadata={
            "name": args.deployer_ksa, "namespace": ns.metadata["name"], "labels": args.labels,
            "annotations": {"iam.gke.io/gcp-service-account": args.deployer_email}}, opts=child)
        gcp.serviceaccount.IAMMember(
            f"{name}-deployer-wi", service_account_id=f"projects/{args.deployer_project}/serviceAccounts/{args.deployer_email}",
            role="roles/iam.workloadIdentityUser",
            member=pulumi.Output.concat("serviceAccount:", args.workload_pool, "[", args.namespace, "/", args.deployer_ksa, "]"),
            opts=child)
        # Workspaces verify the operator's requests with TokenReview (the operator's v2 install guide).
        k8s.rbac.v1.ClusterRoleBinding(f"{name}-deployer-auth-delegator", metadata={
            "name": f"{args.namespace}-{args.deployer_ksa}-auth-delegator", "labels": args.labels},
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
            subjects=[{"kind": "ServiceAccount", "name": args.deployer_ksa, "namespace": args.namespace}], opts=child)
