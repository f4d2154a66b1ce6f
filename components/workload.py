"""Workload identity and the application release of one placement (pooled namespace or tenant namespace)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

APP_SERVICE_ACCOUNT = "app"

# Pod and container security contexts that satisfy Pod Security `restricted`.
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                      "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}


@dataclass(frozen=True)
class WorkloadIdentityArgs:
    project: str
    account_id: str
    namespace: pulumi.Input[str]
    workload_pool: pulumi.Input[str]
    labels: dict[str, str]
    display_name: str
    ksa_name: str = APP_SERVICE_ACCOUNT


class WorkloadIdentity(pulumi.ComponentResource):
    """A Kubernetes service account bound to its own GCP service account; grants are made by the caller,
    on the caller's resources only (no project-wide roles)."""

    email: pulumi.Output[str]
    member: pulumi.Output[str]
    ksa_name: str

    def __init__(self, name: str, args: WorkloadIdentityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tenancy:k8s:WorkloadIdentity", name, None, opts)
        self.ksa_name = args.ksa_name
        child = pulumi.ResourceOptions(parent=self)
        gsa = gcp.serviceaccount.Account(f"{name}-gsa", account_id=args.account_id, project=args.project,
                                         display_name=args.display_name, opts=child)
        gcp.serviceaccount.IAMMember(
            f"{name}-wi-binding", service_account_id=gsa.name, role="roles/iam.workloadIdentityUser",
            member=pulumi.Output.concat("serviceAccount:", args.workload_pool, "[", args.namespace, "/", self.ksa_name, "]"),
            opts=child)
        k8s.core.v1.ServiceAccount(f"{name}-ksa", metadata={
            "name": self.ksa_name, "namespace": args.namespace, "labels": args.labels,
            "annotations": {"iam.gke.io/gcp-service-account": gsa.email}},
            automount_service_account_token=False, opts=child)
        self.email = gsa.email
        self.member = gsa.member
        self.register_outputs({"email": self.email})


@dataclass(frozen=True)
class AppArgs:
    release_name: str
    namespace: pulumi.Input[str]
    chart: str
    version: str
    values: dict[str, Any]
    labels: dict[str, str]
    depends_on: list[pulumi.Resource] = field(default_factory=list)


def chart_reference(chart: str) -> tuple[str, dict | None]:
    """('oci://registry/path/chart', None) -> Helm's chart and repository options for helm.v3.Release."""
    if chart.startswith("oci://"):
        return chart, None
    repo, _, name = chart.rpartition("/")
    return name, {"repo": repo}


class AppRelease(pulumi.ComponentResource):
    """The application's Helm release; secret *names* and limits in, never secret values."""

    def __init__(self, name: str, args: AppArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tenancy:k8s:AppRelease", name, None, opts)
        chart, repo = chart_reference(args.chart)
        values = {
            "podLabels": args.labels,
            "serviceAccount": {"create": False, "name": APP_SERVICE_ACCOUNT},
            "podSecurityContext": POD_SECURITY,
            "securityContext": CONTAINER_SECURITY,
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
            **args.values,
        }
        release = k8s.helm.v3.Release(
            f"{name}-release", name=args.release_name, namespace=args.namespace, chart=chart, version=args.version,
            repository_opts=repo, values=values, atomic=True, cleanup_on_fail=True, timeout=600,
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on))
        self.status = release.status
        self.register_outputs({"release": args.release_name})


def sql_job_name(sql_text: str, prefix: str = "tenancy-sql") -> str:
    """Job names carry the SQL's hash: a changed SQL file is a new Job, an unchanged one is a no-op."""
    return f"{prefix}-{hashlib.sha256(sql_text.encode()).hexdigest()[:12]}"
