"""The catalogue a rollout applies, carried to the operator's workspaces as a difference from tenants.yaml.

A workspace runs the program at the rolled-out commit, so it reads tenants.yaml as committed. A deploy
applies that file held at the deployed record (tenancy/lifecycle/record.py): a tenant whose move is still
pending keeps its deployed plan, a deleted tenant stays until it is offboarded, and the record carries
notes. Those differences travel in the environment variable TENANCY_CATALOG_OVERLAY:

    {"plans": {...}, "tenants": {"<id>": <entry as tenants.yaml writes it> | null}, "order": [...], "notes": {...}}

`plans` replaces the declared plans, each tenant entry replaces (or, when null, removes) that tenant,
`order` fixes the tenants' order when it differs, `notes` are the deployment notes. The difference is
small (only held tenants), where the whole catalogue would not fit an object at fleet size.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import yaml

from tenancy.catalog import CATALOG_VERSION, Catalog, parse_catalog, to_document
from tenancy.errors import EngineError

MAX_BYTES = 256 * 1024   # an environment variable inside the Stack object; objects are at most 1 MiB


def difference(applied: Catalog, committed: Catalog | None, tenant: str | None = None) -> dict[str, Any] | None:
    """What the program must change in `committed` to build `applied` (None: nothing). `tenant`: a tenant
    stack, which reads only its own entry and the plans."""
    want = to_document(applied)
    have = to_document(committed) if committed is not None else {"version": CATALOG_VERSION, "plans": {}, "tenants": []}
    out: dict[str, Any] = {}
    if want["plans"] != have["plans"]:
        out["plans"] = want["plans"]
    have_by_id = {t["id"]: t for t in have["tenants"]}
    want_by_id = {t["id"]: t for t in want["tenants"]}
    tenants = {tid: entry for tid, entry in want_by_id.items() if have_by_id.get(tid) != entry}
    tenants.update({tid: None for tid in have_by_id if tid not in want_by_id})
    if tenant is not None:
        tenants = {tid: e for tid, e in tenants.items() if tid == tenant}
    if tenants:
        out["tenants"] = tenants
    if tenant is None:
        if applied.notes:
            out["notes"] = dict(applied.notes)
        if [t["id"] for t in apply_document(have, out)["tenants"]] != [t["id"] for t in want["tenants"]]:
            out["order"] = [t["id"] for t in want["tenants"]]
    return out or None


def apply_document(doc: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    out = {**doc, "tenants": list(doc["tenants"])}
    if "plans" in overlay:
        out["plans"] = overlay["plans"]
    changes = dict(overlay.get("tenants") or {})
    tenants = []
    for t in out["tenants"]:
        if t["id"] in changes:
            entry = changes.pop(t["id"])
            if entry is not None:
                tenants.append(entry)
        else:
            tenants.append(t)
    tenants += [e for e in changes.values() if e is not None]
    if overlay.get("order"):
        rank = {tid: i for i, tid in enumerate(overlay["order"])}
        tenants.sort(key=lambda t: rank.get(t["id"], len(rank)))
    out["tenants"] = tenants
    return out


def apply(catalog: Catalog, overlay: dict[str, Any]) -> Catalog:
    """`catalog` (tenants.yaml as committed) changed by `overlay`, validated again."""
    doc = apply_document(to_document(catalog), overlay)
    result = parse_catalog(yaml.safe_dump(doc, sort_keys=False), f"{catalog.path} (with the rollout's overlay)")
    return dataclasses.replace(result, notes=dict(overlay.get("notes") or catalog.notes))


def encode(overlay: dict[str, Any]) -> str:
    text = json.dumps(overlay, sort_keys=True, separators=(",", ":"))
    if len(text.encode()) > MAX_BYTES:
        raise EngineError(f"the catalogue differs from tenants.yaml at the rolled-out commit by {len(text) // 1024} KiB "
                          f"(more than {MAX_BYTES // 1024} KiB fit a Stack object): resolve the pending tenants "
                          "(`tenancy moves`) or commit the catalogue the deployment holds")
    return text
