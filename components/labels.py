"""Labels for cost and usage attribution, on every GCP resource and Kubernetes object that takes them."""

from __future__ import annotations

MANAGED_BY = "tenancy"


def labels(environment: str, model: str, tenant: str | None = None) -> dict[str, str]:
    """`tenant` only where the resource belongs to one tenant; shared resources carry model and environment."""
    out = {"managed-by": MANAGED_BY, "environment": environment, "model": model}
    if tenant is not None:
        out["tenant"] = tenant
    return out


def k8s_labels(environment: str, model: str, tenant: str | None = None) -> dict[str, str]:
    """The same labels under the Kubernetes recommended prefix for managed-by."""
    out = {"app.kubernetes.io/managed-by": MANAGED_BY, "tenancy.io/environment": environment, "tenancy.io/model": model}
    if tenant is not None:
        out["tenancy.io/tenant"] = tenant
    return out
