"""The Pulumi Kubernetes Operator (v2) in a management namespace, and the identities its workspaces deploy as:
one per scope (tenancy/operator/deployers.py), never one for the whole fleet."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from tenancy.operator.deployers import Deployer

RELEASE_NAME = "pulumi-kubernetes-operator"
DEPLOYER_TYPE = "tenancy:operator:Deployer"     # the policy pack reads a deployer's scope from this component


@dataclass(frozen=True)
class OperatorArgs:
    namespace: str
    chart: str
    chart_version: str
    deployer_email: str          # the platform's deploying identity's GCP service account
    deployer_project: str        # the project that service account lives in
    deployer_ksa: str            # the Kubernetes service account the platform's Stack runs as
    workload_pool: pulumi.Input[str]
    labels: dict[str, str]
    max_concurrent_reconciles: int
    # Every other scope's deployer: each gets a Kubernetes service account of its own in the namespace.
    deployers: list[Deployer] = field(default_factory=list)


class PulumiOperator(pulumi.ComponentResource):
    """Namespace (Pod Security `restricted`: the workspaces run with the restricted profile), the operator's
    Helm release at a pinned chart version, and the workspaces' service accounts, one per scope, each bound
    through Workload Identity to its scope's deploying identity: no key exists anywhere."""

    namespace: pulumi.Output[str]

    def __init__(self, name: str, args: OperatorArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tenancy:k8s:PulumiOperator", name, None, opts)
        ns = k8s.core.v1.Namespace(f"{name}-ns", metadata={"name": args.namespace, "labels": {
            **args.labels, "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/audit": "restricted", "pod-security.kubernetes.io/warn": "restricted"}},
            opts=pulumi.ResourceOptions(parent=self))
        self._release(name, args, ns)
        self._deployer(name, args, ns)
        self._scoped_deployers(name, args, ns)
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
        """The platform's: its GCP service account is made outside the program (it makes the units')."""
        self._workspace_account(f"{name}-deployer", args.deployer_ksa, args.deployer_email, args, ns)
        self._auth_delegator(f"{name}-deployer-auth-delegator", f"{args.namespace}-{args.deployer_ksa}-auth-delegator",
                             [args.deployer_ksa], args)
        gcp.serviceaccount.IAMMember(
            f"{name}-deployer-wi", service_account_id=f"projects/{args.deployer_project}/serviceAccounts/{args.deployer_email}",
            role="roles/iam.workloadIdentityUser",
            member=pulumi.Output.concat("serviceAccount:", args.workload_pool, "[", args.namespace, "/", args.deployer_ksa, "]"),
            opts=pulumi.ResourceOptions(parent=self))

    def _scoped_deployers(self, name: str, args: OperatorArgs, ns: k8s.core.v1.Namespace) -> None:
        """Every other scope's: a service account each (their GCP identities and the bindings that let each act as
        its own are declared where tenancy/operator/deployers.py says), one binding for their TokenReviews."""
        for d in args.deployers:
            self._workspace_account(f"{name}-scope-{d.scope}", d.ksa, d.email, args, ns)
        if args.deployers:
            self._auth_delegator(f"{name}-scopes-auth-delegator", f"{args.namespace}-deployers-auth-delegator",
                                 [d.ksa for d in args.deployers], args)

    def _workspace_account(self, name: str, ksa: str, email: str, args: OperatorArgs, ns: k8s.core.v1.Namespace) -> None:
        # The token is mounted: the workspace's agent authenticates the operator's calls with it.
        k8s.core.v1.ServiceAccount(f"{name}-ksa", metadata={
            "name": ksa, "namespace": ns.metadata["name"], "labels": args.labels,
            "annotations": {"iam.gke.io/gcp-service-account": email}}, opts=pulumi.ResourceOptions(parent=self))

    def _auth_delegator(self, name: str, object_name: str, ksas: list[str], args: OperatorArgs) -> None:
        # Workspaces verify the operator's requests with TokenReview (the operator's v2 install guide).
        k8s.rbac.v1.ClusterRoleBinding(name, metadata={"name": object_name, "labels": args.labels},
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
            subjects=[{"kind": "ServiceAccount", "name": k, "namespace": args.namespace} for k in ksas],
            opts=pulumi.ResourceOptions(parent=self))


@dataclass(frozen=True)
class DeployerArgs:
    deployer: Deployer
    namespace: str                          # the operator's namespace, where its Kubernetes service account is
    workload_pool: pulumi.Input[str]        # of the cluster the operator runs in


class DeployerIdentity(pulumi.ComponentResource):
    """One scope's deploying identity: its GCP service account, impersonable only by its own Kubernetes service
    account in the operator's namespace, and its project roles. The scope, account, project and Kubernetes
    service account are the component's inputs: the policy pack judges every grant to the account and every
    binding on it by them (`deployer-scope`). Declared by the global (or platform) stack for a unit, by a
    dedicated tenant's own stack for its deployer in its own project."""

    def __init__(self, name: str, args: DeployerArgs, opts: pulumi.ResourceOptions | None = None):
        d = args.deployer
        super().__init__(DEPLOYER_TYPE, name, {
            "scope": d.scope, "kind": d.kind, "email": d.email, "project": d.project,
            "kubernetesServiceAccount": f"{args.namespace}/{d.ksa}"}, opts)
        child = pulumi.ResourceOptions(parent=self)
        gsa = gcp.serviceaccount.Account(f"{name}-gsa", account_id=d.account_id, project=d.account_project,
                                         display_name=f"deploys {d.scope}", opts=child)
        gcp.serviceaccount.IAMMember(
            f"{name}-wi", service_account_id=gsa.name, role="roles/iam.workloadIdentityUser",
            member=pulumi.Output.concat("serviceAccount:", args.workload_pool, "[", args.namespace, "/", d.ksa, "]"),
            opts=child)
        for g in d.grants:
            condition = {"title": g.condition[0], "expression": g.condition[1]} if g.condition else None
            gcp.projects.IAMMember(f"{name}-{g.role.rsplit('/', 1)[-1].replace('.', '-')}", project=g.project,
                                   role=g.role, member=d.member, condition=condition, opts=child)
        self.email = d.email
        self.register_outputs({"email": self.email})
