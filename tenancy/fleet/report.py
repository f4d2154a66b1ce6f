"""Placement as people read it: plan.json per stack, the plan summary, the pull-request comment."""

from __future__ import annotations

from typing import Any, Iterable

from tenancy import naming
from tenancy.catalog import Catalog, Model, Tenant
from tenancy.fleet.placement import Placement, TenantPlacement

# Pooled tenants listed one per line in the plan summary; past this, plan.json has them all.
SUMMARY_POOLED = 20


def where(t: Tenant, placed: TenantPlacement | None, env: str) -> str:
    """One line: the units and the physical names they stand for."""
    placed = placed or TenantPlacement()
    if t.model is Model.POOLED:
        shard = placed.pool_shard or "unplaced"
        database = f" (instance {naming.pool_shard_instance(env, placed.pool_shard)})" if placed.pool_shard else ""
        return f"pool shard {shard}{database}"
    if t.model is Model.NAMESPACE:
        cluster = f" (cluster {naming.cell_cluster(env, placed.cell)})" if placed.cell else ""
        return f"cell {placed.cell or 'unplaced'}{cluster}, Cloud SQL in {placed.data_project or 'unplaced'}"
    project = t.dedicated.project.id if t.dedicated and t.dedicated.project else "the platform project"
    return f"own cluster {naming.cluster(env, t.id)} in {project}"


def stack_json(placement: Placement, catalog: Catalog, kind: str, tenant: str | None) -> dict[str, Any]:
    """The `placement` of one plan.json stack: its tenant's units (tenant stacks), or the pooled tenants'
    shards and every unit's load (the platform stack)."""
    if kind != "platform":
        placed = placement.tenants.get(tenant or "")
        out: dict[str, Any] = placed.to_json() if placed else {}
        if placed and placed.cell:
            # A dedicated tenant's home cell holds its directory entry only; its workloads run in its own cluster.
            env = placement.capacity.environment
            dedicated = any(t.id == tenant and t.model is Model.DEDICATED for t in catalog.tenants)
            out["cluster"] = naming.cluster(env, tenant) if dedicated else naming.cell_cluster(env, placed.cell)
        out["decided"] = placement.decided.get(tenant or "", "own")
        return out
    pooled = {t.id: placement.tenants[t.id].to_json() for t in catalog.by_model(Model.POOLED) if t.id in placement.tenants}
    return {"pooled": pooled, "units": placement.usage()}


def usage_lines(placement: Placement) -> list[str]:
    """Per kind of unit: what is used of what is declared, and each unit when there are few."""
    lines = []
    for u in placement.units.values():
        used = sum(u.load.values())
        detail = ", ".join(f"{n} {u.load[n]:,}/{u.capacity:,}" for n in u.names) if len(u.names) <= 8 else \
            f"fullest {max(u.names, key=lambda n: u.load[n])} {max(u.load.values()):,}/{u.capacity:,}"
        lines.append(f"  {u.kind.replace('_', ' ')}: {used:,} of {u.capacity * len(u.names):,} {u.holds} used in "
                     f"{len(u.names)} ({detail})")
    return lines


def summary_lines(placement: Placement, catalog: Catalog, stacks: Iterable[Any]) -> list[str]:
    """The placement section of `tenancy plan`'s summary: each planned tenant stack, the pooled tenants
    when the platform stack is planned, and the load of every unit."""
    env = placement.capacity.environment
    by_id = {t.id: t for t in catalog.tenants}
    lines = [f"placement (capacity: {placement.capacity.where}):"]
    planned = list(stacks)
    rows = [(s.name, by_id[s.tenant]) for s in planned if s.tenant in by_id]
    if any(s.kind == "platform" for s in planned):
        rows += [(f"pooled {t.id}", t) for t in sorted(catalog.by_model(Model.POOLED), key=lambda t: t.id) if t.in_directory]
    width = max((len(name) for name, _ in rows), default=0)
    shown_pooled = 0
    for name, t in rows:
        if t.model is Model.POOLED:
            shown_pooled += 1
            if shown_pooled > SUMMARY_POOLED:
                continue
        decided = placement.decided.get(t.id, "")
        lines.append(f"  {name.ljust(width)}  {where(t, placement.tenants.get(t.id), env)}"
                     + (f"  [{decided}]" if decided in ("pinned", "deployed") else ""))
    if shown_pooled > SUMMARY_POOLED:
        lines.append(f"  … and {shown_pooled - SUMMARY_POOLED:,} more pooled tenants (plan.json has every placement)")
    return lines + usage_lines(placement)
