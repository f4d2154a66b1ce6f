"""Where `tenancy place` may move one deployed tenant: another pool shard (pooled tenants; the operation in
tenancy/operations/place.py moves its rows, objects and documents there), never another cell or data project of
a namespace tenant (its namespace, workloads and volumes live in its cell's cluster, its Cloud SQL instances in
its data project: moving them means rebuilding its tenant stack there, which this version does not do).

Placement never moves a placed tenant by itself (tenancy/fleet/placement.py); `tenancy place` is the one command
that does. The target must be declared and have room: the same checks as a pin in tenants.yaml.
"""

from __future__ import annotations

import dataclasses
from tenancy import naming
from tenancy.catalog import PLACEMENT_KEYS, Catalog, Feature, PlacementPin, Tenant
from tenancy.errors import ConfigError
from tenancy.fleet import capacity as fleet_capacity
from tenancy.fleet.capacity import Capacity
from tenancy.fleet.placement import JSON_KEYS, OPTIONS, PlacementError, TenantPlacement, place
from tenancy.lifecycle import Refused
from tenancy.lifecycle import record as rec

WHERE = "tenancy place"   # how the command names itself in a refused target's message


def resolve(desired: Catalog, deployed: "rec.Deployed", env: str, tenant_id: str, *, cell: str | None = None,
            pool_shard: str | None = None, data_project: str | None = None,
            capacity: Capacity | None = None) -> tuple[TenantPlacement, TenantPlacement]:
    """(where the tenant is, where it is asked to go), checked: the units apply to its model, the target is
    declared and has room (as a pin in tenants.yaml would be checked); a move of a namespace tenant's cell or data
    project is refused (its namespace and instances would have to be rebuilt). Changes nothing."""
    wanted = {k: v for k, v in (("cell", cell), ("pool_shard", pool_shard), ("data_project", data_project)) if v}
    if not wanted:
        raise ConfigError("give the unit to move the tenant to: --cell, --pool-shard or --data-project")
    if deployed.catalog is not None and not deployed.knows(tenant_id) and any(t.id == tenant_id for t in desired.tenants):
        raise PlacementError([f"tenant '{tenant_id}' has not been deployed in '{env}', so it is not placed yet: pin it in "
                              f"{desired.path} instead (placement: {{{', '.join(f'{k}: {v}' for k, v in wanted.items())}}}) "
                              "and deploy"])
    rec.require_active_tenant(deployed, desired, env, tenant_id)
    record = deployed.catalog
    t = record.tenant(tenant_id)
    for key in wanted:
        if key not in PLACEMENT_KEYS[t.model]:
            options = " or ".join(OPTIONS[k] for k in PLACEMENT_KEYS[t.model])
            raise PlacementError([f"tenant '{tenant_id}' is {t.model.value} ({t.plan_name}): {OPTIONS[key]} does not apply"
                                  + (f"; use {options}" if options else "; it has its own cluster and project")])
    capacity = capacity or fleet_capacity.load(env)
    now = place(record, capacity).tenants[tenant_id]
    target = now._replace(**wanted)
    if target != now:
        _check_target(record, capacity, tenant_id, now, wanted)
        _refuse_rebuilds(t, env, now, target)
    return now, target


def _check_target(record: Catalog, capacity: Capacity, tenant_id: str, now: TenantPlacement, wanted: dict[str, str]) -> None:
    """The target as a pin of this tenant alone: unknown and full units are refused with the same
    messages as a pin in tenants.yaml (and nothing else is placed differently)."""
    moving = {JSON_KEYS[k] for k in wanted}
    kept = {k: v for k, v in now.to_json().items() if k not in moving}
    tenants = tuple(dataclasses.replace(t, placement=PlacementPin(**wanted)) if t.id == tenant_id else t
                    for t in record.tenants)
    moved = dataclasses.replace(record, path=WHERE, tenants=tenants,
                                placements={**record.placements, tenant_id: kept})
    place(moved, capacity)


def _refuse_rebuilds(t: Tenant, env: str, now: TenantPlacement, target: TenantPlacement) -> None:
    if target.cell != now.cell:
        volumes = " and the Neo4j volume" if Feature.RECOMMENDATIONS in t.features else ""
        raise Refused(f"tenant '{t.id}' runs in cell {now.cell} (cluster {naming.cell_cluster(env, now.cell)}): its "
                      f"namespace {naming.namespace(t.id)}, workloads{volumes} are there, and moving them to {target.cell} "
                      "means rebuilding its tenant stack in that cell's cluster, which this version does not do; "
                      "nothing was changed")
    if target.data_project != now.data_project:
        raise Refused(f"tenant '{t.id}' keeps its {len(t.plan.databases)} Cloud SQL instance(s) in project "
                      f"{now.data_project}; moving them to {target.data_project} means new instances there and a data "
                      "move, which this version does not do; nothing was changed")
