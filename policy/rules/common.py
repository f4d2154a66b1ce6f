"""What every rule reads of a resource: nested fields, the recorder's markers, labels, the tenant of a stack.

Rules see the engine's camelCase inputs, in which some providers write nested blocks as lists of one
element and the offline recorder writes secret and unknown values as markers.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable

from pulumi_policy import ResourceValidationArgs

SECRET_MARKER = "[secret]"     # how the offline recorder writes a secret value
UNKNOWN_MARKER = "[unknown]"
TENANT_LABEL = "tenant"
K8S_TENANT_LABEL = "tenancy.io/tenant"

ANY_CIDR = ("0.0.0.0/0", "::/0")

Reporter = Callable[..., None]


def get(d: Any, *path: str, default: Any = None) -> Any:
    for p in path:
        if not isinstance(d, (dict,)) and not hasattr(d, "get"):
            return default
        d = d.get(p) if d is not None else None
        if d is None:
            return default
    return d


def first(v: Any) -> Any:
    """Nested blocks are lists of one element in the engine's form of some providers."""
    if isinstance(v, (list, tuple)):
        return v[0] if v else None
    return v


def known(v: Any) -> bool:
    return v != UNKNOWN_MARKER and v is not None


def is_tenant_ns(ns: str | None) -> bool:
    return bool(ns) and ns.startswith("tenant-")


def walk(d: Any, path: tuple = ()) -> Iterable[tuple[tuple, Any]]:
    if isinstance(d, dict):
        for k, v in d.items():
            yield from walk(v, path + (str(k),))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from walk(v, path + (str(i),))
    elif path:
        yield path, d


def labels_of(t: str, p: dict) -> dict | None:
    if t.startswith("kubernetes:") and "metadata" in p and "helm.sh" not in t:
        return get(p, "metadata", "labels", default={})
    # userLabels first: for monitoring resources `labels` is configuration (a channel's address), not labels
    for key in ("userLabels", "resourceLabels", "labels"):
        if key in p:
            return p.get(key) or {}
    if t == "gcp:sql/databaseInstance:DatabaseInstance":
        return (first(p.get("settings")) or {}).get("userLabels") or {}
    return None


def labelled_tenant(r: Any) -> str | None:
    lab = labels_of(r.resource_type, r.props) or {}
    return lab.get(TENANT_LABEL) or lab.get(K8S_TENANT_LABEL)


# A unit stack (`<env>.cell-2`, `<env>.pool-1`, `<env>.identity-3`) is platform, not a tenant:
# tenant ids never have this shape (tenancy/naming.py refuses them).
UNIT_STACK = re.compile(r"(cell|pool|identity)-[0-9]+")


def tenant_of_stack(args: ResourceValidationArgs) -> str | None:
    """The tenant of a tenant stack, from the stack name in the URN (`<env>.<tenant-id>`)."""
    try:
        stack = args.urn.split("::")[0].split(":", 2)[2]
    except (AttributeError, IndexError):
        return None
    env, _, tenant = stack.partition(".")
    return None if not tenant or UNIT_STACK.fullmatch(tenant) else tenant
