"""Size bounds that keep every stack deployable whatever the size of the fleet (rule `object-and-stack-size`).

- A Kubernetes object's manifest over 1 MiB: etcd and the API server refuse objects of about that size
  (etcd's default request limit is 1.5 MiB), so a `pulumi up` fails there.
- A ConfigMap's or Secret's data over 1 MiB: the API server's own validation limit for both.
- A Helm release's values over 1 MiB: Helm keeps each release revision (values, rendered manifest and
  chart) in one Secret, which is bound by the same 1 MiB.
- A stack over the resource bound (2,000 by default): every preview and update reads, diffs and writes the
  whole stack, so its time grows with its resources, and every change to one tenant waits for all of them.

Both bounds are policy config (`maxObjectBytes`, `maxResourcesPerStack`). The rule is a stack policy in a
real preview and runs once over the whole plan offline (`tenancy plan`, `tenancy policy-check`).
"""

from __future__ import annotations

import base64
import json
from typing import Any, Callable, Iterable

MAX_OBJECT_BYTES = 1024 * 1024
MAX_STACK_RESOURCES = 2000
NOT_OBJECTS = ("kubernetes:helm.sh/", "pulumi:providers:")
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
SECRET_MARKERS = ("[secret]", "[unknown]")

Reporter = Callable[..., None]


def serialized_size(value: Any) -> int:
    """Bytes of a value as compact JSON (what the API server receives, give or take whitespace)."""
    return len(json.dumps(value, separators=(",", ":"), sort_keys=True, default=str).encode())


def data_size(props: dict) -> int:
    """Bytes of a ConfigMap's or Secret's data as the API server counts them: every value, decoded (keys are
    not counted). `stringData` becomes data; base64 values (`binaryData`, Secret `data`) count decoded."""
    total = 0
    for key, encoded in (("data", props.get("kind") == "Secret"), ("binaryData", True), ("stringData", False)):
        values = props.get(key)
        if not isinstance(values, dict):
            continue   # absent, or a whole secret value the plan does not show
        for v in values.values():
            if not isinstance(v, str) or v in SECRET_MARKERS:
                continue
            if encoded:
                try:
                    total += len(base64.b64decode(v, validate=True))
                    continue
                except ValueError:
                    pass
            total += len(v.encode())
    return total


def _describe(props: dict, fallback: str) -> str:
    meta = props.get("metadata") if isinstance(props.get("metadata"), dict) else {}
    name = meta.get("name") or fallback
    return f"{props.get('kind')} {meta['namespace']}/{name}" if meta.get("namespace") else f"{props.get('kind')} {name}"


def findings(stack: str, resources: Iterable[Any], cfg: dict | None = None) -> list[tuple[str, str | None]]:
    """(message, urn or None for the stack itself) for one stack's resources (PolicyResources)."""
    cfg = cfg or {}
    limit = int(cfg.get("maxObjectBytes", MAX_OBJECT_BYTES))
    bound = int(cfg.get("maxResourcesPerStack", MAX_STACK_RESOURCES))
    resources = list(resources)
    out: list[tuple[str, str | None]] = []
    for r in resources:
        t, p = r.resource_type, r.props or {}
        if t == HELM_RELEASE:
            size = serialized_size(p.get("values") or {})
            if size > limit:
                out.append((f"Helm release {p.get('name') or r.name}: its values are {size:,} bytes, over {limit:,} "
                            "bytes: Helm keeps each release revision in one Secret, limited to 1 MiB; keep per-tenant "
                            "data out of the values (a registry, or one release per cell)", r.urn))
            continue
        if not t.startswith("kubernetes:") or t.startswith(NOT_OBJECTS) or "apiVersion" not in p or "kind" not in p:
            continue
        if p.get("kind") in ("ConfigMap", "Secret"):
            size = data_size(p)
            if size > limit:
                out.append((f"{_describe(p, r.name)}: its data is {size:,} bytes, over the {limit:,}-byte limit of "
                            f"{p.get('kind')} data: the API server refuses it; split it (one object per cell or shard, "
                            "not per fleet) or keep the data in a registry", r.urn))
                continue
        size = serialized_size(p)
        if size > limit:
            out.append((f"{_describe(p, r.name)}: its manifest is {size:,} bytes, over the {limit:,}-byte bound of a "
                        "Kubernetes object (etcd refuses objects of about 1.5 MiB); split it or keep the data in a "
                        "registry", r.urn))
    if len(resources) > bound:
        out.append((f"stack {stack} has {len(resources):,} resources, over the bound of {bound:,} per stack (policy "
                    "config maxResourcesPerStack): every preview and update of it reads and diffs them all; split it "
                    "(cells, pool shards, identity shards)", None))
    return out


def stack_urn(resources: list[Any]) -> tuple[str, str]:
    """(stack name, the stack's own URN) from any of its resources' URNs."""
    urn = next((r.urn for r in resources if str(r.urn).startswith("urn:pulumi:")), "")
    if not urn:
        return "", ""
    head, project = urn.split("::")[0], urn.split("::")[1]
    stack = head.split(":", 2)[-1]
    return stack, f"urn:pulumi:{stack}::{project}::pulumi:pulumi:Stack::{project}-{stack}"


def object_and_stack_size(args: Any, report: Reporter) -> None:
    """Stack form (a real preview): this stack's objects and its resource count."""
    stack, root = stack_urn(list(args.resources))
    for message, urn in findings(stack, args.resources, args.get_config() if hasattr(args, "get_config") else None):
        report(message, urn or root or None)


def object_and_stack_size_plan(stacks: list[tuple[str | None, list]], report: Reporter, cfg: dict | None = None) -> None:
    """Plan-wide form (offline): every stack of the plan, each violation against its resource or stack."""
    for _, resources in stacks:
        stack, root = stack_urn(resources)
        for message, urn in findings(stack, resources, cfg):
            report(message, urn or root)
