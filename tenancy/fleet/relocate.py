"""`tenancy place`: move one deployed tenant to another cell, pool shard or data project, explicitly.

Placement never moves a placed tenant by itself (tenancy/fleet/placement.py); this is the one operation that
does. It changes that tenant's recorded placement and nothing else: the platform stack is updated with the
deployed record changed for this tenant only (tenancy.lifecycle.record.for_tenant), so every other tenant's
directory entry stays as deployed.

It never leaves data behind. The target must exist, be built and have room (the same checks as a pin in
tenants.yaml). Then:

- pool shard (pooled tenants): allowed only when the tenant has no rows left in its current shard, checked
  against that shard's database (`--source-dsn`). Move the rows first (`tenancy data move --delete-source`),
  preferably with the tenant suspended.
- cell or data project (namespace tenants): refused. The tenant's namespace, workloads and volumes live in
  its cell's cluster, and its Cloud SQL instances in its data project; moving them means rebuilding the
  tenant stack in the other cell or project, which this version's stacks do not do.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from tenancy import naming
from tenancy.catalog import PLACEMENT_KEYS, Catalog, Feature, PlacementPin, Tenant
from tenancy.db import describe_dsn
from tenancy.engine import Engine
from tenancy.errors import ConfigError
from tenancy.fleet import capacity as fleet_capacity
from tenancy.fleet.capacity import Capacity
from tenancy.fleet.placement import JSON_KEYS, OPTIONS, PlacementError, TenantPlacement, place
from tenancy.lifecycle import Refused
from tenancy.lifecycle import record as rec
from tenancy.lifecycle import units

WHERE = "tenancy place"   # how the command names itself in a refused target's message


def relocate(engine: Engine, desired: Catalog, env: str, tenant_id: str, *, cell: str | None = None,
             pool_shard: str | None = None, data_project: str | None = None, source_dsn: str | None = None,
             capacity: Capacity | None = None, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Record `tenant_id` in the given unit(s); returns {"tenant", "from", "to", "status"}."""
    say = say or (lambda m: None)
    wanted = {k: v for k, v in (("cell", cell), ("pool_shard", pool_shard), ("data_project", data_project)) if v}
    if not wanted:
        raise ConfigError("give the unit to move the tenant to: --cell, --pool-shard or --data-project")
    deployed = rec.read(engine, env)
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
    if target == now:
        return {"tenant": tenant_id, "from": now.to_json(), "to": target.to_json(), "status": "unchanged"}
    _check_target(record, capacity, tenant_id, now, wanted)
    _check_no_data_left(t, env, now, target, source_dsn)
    changed = rec.for_tenant(deployed, desired, tenant_id, placement=target.to_json())
    say(f"recording {tenant_id} in {target.describe()} (was {now.describe()})")
    units.up_tenant_platform(engine, env, record, changed, tenant_id, False, set(), say)
    return {"tenant": tenant_id, "from": now.to_json(), "to": target.to_json(), "status": "moved"}


def _check_target(record: Catalog, capacity: Capacity, tenant_id: str, now: TenantPlacement, wanted: dict[str, str]) -> None:
    """The target as a pin of this tenant alone: unknown, unbuilt and full units are refused with the same
    messages as a pin in tenants.yaml (and nothing else is placed differently)."""
    moving = {JSON_KEYS[k] for k in wanted}
    kept = {k: v for k, v in now.to_json().items() if k not in moving}
    tenants = tuple(dataclasses.replace(t, placement=PlacementPin(**wanted)) if t.id == tenant_id else t
                    for t in record.tenants)
    moved = dataclasses.replace(record, path=WHERE, tenants=tenants,
                                placements={**record.placements, tenant_id: kept})
    place(moved, capacity)


def _check_no_data_left(t: Tenant, env: str, now: TenantPlacement, target: TenantPlacement, source_dsn: str | None) -> None:
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
    if target.pool_shard != now.pool_shard:
        if not source_dsn:
            raise Refused(f"give --source-dsn, the database of {now.pool_shard} "
                          f"({naming.pool_shard_instance(env, now.pool_shard)}), so the move can check that tenant "
                          f"'{t.id}' has no rows left there; nothing was changed")
        from tenancy.stores import postgres as pg

        rows = pg.summary(source_dsn, t.id).count
        if rows:
            raise Refused(f"tenant '{t.id}' has {rows:,} row(s) in {now.pool_shard} ({describe_dsn(source_dsn)}): move "
                          f"them first (`tenancy data move {t.id} --source <{now.pool_shard} DSN> --target "
                          f"<{target.pool_shard} DSN> --delete-source`, with the tenant suspended), then run this again; "
                          "nothing was changed")
