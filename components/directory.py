"""The tenant directory: which tenant lives where. The routing switch that tier changes flip.

Published as a ConfigMap the application reads and as a stack output tools read. It holds names
(namespaces, buckets, Secret Manager secret ids), never secret values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

CONFIGMAP_NAME = "tenant-directory"


@dataclass(frozen=True)
class DirectoryArgs:
    namespace: pulumi.Input[str]
    entries: dict[str, dict[str, Any]]                  # tenant id -> entry (plain values)
    identity_tenants: dict[str, pulumi.Input[str]]      # tenant id -> Identity Platform tenant name
    labels: dict[str, str]
    compact: bool = False


def document(entries: dict[str, dict[str, Any]], identity_tenants: dict[str, str], compact: bool = False) -> str:
    """The directory as published: {tenant id: entry with its Identity Platform tenant}, one JSON text
    (`compact`: without whitespace, as the unit stacks' directories are, a third smaller)."""
    doc = {i: {**entries[i], "identityTenant": identity_tenants[i]} for i in sorted(entries)}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True) if compact else json.dumps(doc, indent=1, sort_keys=True)


class TenantDirectory(pulumi.ComponentResource):
    json: pulumi.Output[str]  # {tenant id: entry}

    def __init__(self, name: str, args: DirectoryArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tenancy:k8s:TenantDirectory", name, None, opts)
        ids = sorted(args.entries)
        idp = pulumi.Output.all(*[args.identity_tenants[i] for i in ids]).apply(lambda names: dict(zip(ids, names)))
        # One JSON document, not a nested output: StackReference consumers lift every element of a nested
        # output into an Output of its own, which costs more per tenant than everything else they do.
        self.json = idp.apply(lambda names: document(args.entries, names, args.compact))
        k8s.core.v1.ConfigMap(f"{name}-configmap", metadata={
            "name": CONFIGMAP_NAME, "namespace": args.namespace, "labels": args.labels},
            data={"tenants.json": self.json}, opts=pulumi.ResourceOptions(parent=self))
        self.register_outputs({"tenants.json": self.json})
