"""An environment's stacks and what each reads: its units, and the platform-side stacks that hold one tenant's
share of the platform.

Every environment has a global stack `<env>` and one stack per unit (stacks/cells.py): identity shards, cells and
pool shards (tenancy/fleet/capacity.py declares how many; a small environment has one of each). Stack programs, plans, deploys and the operator all read the same answers from here.

A one-tenant command (suspend, resume, offboard, an upgrade's cutover, `tenancy place`) runs the tenant's
platform-side stacks with the deployed record changed for that tenant only, so every other tenant in those stacks
stays exactly as deployed. Those are the tenant's home units before and after the change (its
pool shard, or its cell), its identity shard when it joins or leaves the directory, and the global stack when it
is offboarded (the global stack records offboarded tenants). Nothing else runs: no other cell, shard or identity
stack.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from tenancy import naming
from tenancy.catalog import Catalog, Model, Tenant
from tenancy.fleet import capacity as fleet_capacity
from tenancy.fleet.capacity import Capacity
from tenancy.fleet.placement import place


def unit_names(capacity: Capacity) -> list[str]:
    """Every unit of an environment (`identity-1`, `cell-1`, `pool-1`, ...), in the order they deploy."""
    return [*capacity.identity_shard_names, *capacity.cell_names, *capacity.pool_shard_names]


def unit_stacks(env: str, capacity: Capacity) -> list[str]:
    """Every unit stack of an environment, in the order they deploy: identity shards (directories
    read them), cells, pool shards (their applications run in cell 1)."""
    return [naming.unit_stack(env, u) for u in unit_names(capacity)]


def every_platform_stack(env: str) -> list[str]:
    """Every platform-side stack of the environment, in the order they deploy (each reads the earlier ones)."""
    return [naming.stack_name(env), *unit_stacks(env, fleet_capacity.load(env))]


def reads(stack: str, catalog: Catalog, placement=None, tenants: Mapping[str, Tenant] | None = None) -> tuple[str, ...]:
    """The stacks whose outputs the program of `stack` reads: they must have been deployed before it runs. A tenant
    stack reads the global stack (and a namespace tenant its cell); an identity shard follows the global stack (its Identity Platform configuration), a cell reads the
    global stack and the identity shards (its directory names its tenants' identity tenants), a pool shard those
    and cell 1 (its application runs there). The operator's `prerequisites` and a rollout's order both follow it.
    `placement`: the catalogue's placement, `tenants`: its tenants by id, when the caller has them."""
    kind, env, rest = naming.stack_kind(stack)
    platform = naming.stack_name(env)
    if kind == naming.ENV_STACK:
        return ()
    if kind != naming.TENANT_STACK:
        identity = tuple(naming.unit_stack(env, u) for u in fleet_capacity.load(env).identity_shard_names)
        return {naming.IDENTITY_STACK: (platform,), naming.CELL_STACK: (platform, *identity),
                naming.POOL_STACK: (platform, *identity, naming.unit_stack(env, naming.cell(1)))}[kind]
    t = tenants[rest] if tenants is not None else catalog.tenant(rest)
    if t.model is Model.NAMESPACE:
        placed = placement if placement is not None else place(catalog, fleet_capacity.load(env))
        return platform, naming.unit_stack(env, placed.tenants[t.id].cell)
    return (platform,)


def needs(stack: str, catalog: Catalog, placement=None, tenants: Mapping[str, Tenant] | None = None,
          memo: dict[str, tuple[str, ...]] | None = None) -> list[str]:
    """Every stack that must be deployed before `stack` (what it reads, and what those read), in deploy order.
    `memo`: what each stack reads, kept across calls (a rollout asks about every stack of the fleet)."""
    memo = {} if memo is None else memo
    found: dict[str, None] = {}
    todo = [stack]
    while todo:
        s = todo.pop()
        if s not in memo:
            memo[s] = reads(s, catalog, placement, tenants)
        for r in memo[s]:
            if r not in found:
                found[r] = None
                todo.append(r)
    return _ordered(found)


def tenant_platform_stacks(env: str, before: Catalog, after: Catalog, tenant_id: str) -> list[str]:
    """The platform-side stacks that hold tenant `tenant_id`'s share, before and after a change of that tenant."""
    capacity = fleet_capacity.load(env)
    homes = []
    for catalog in (before, after):
        t = next((t for t in catalog.tenants if t.id == tenant_id), None)
        placed = place(catalog, capacity).tenants.get(tenant_id) if t is not None and t.in_directory else None
        homes.append((t, placed))
    stacks: list[str] = []
    (_, pb), (_, pa) = homes
    if (pb is None) != (pa is None):     # joins or leaves the directory: its identity tenant, its global record
        stacks.append(naming.stack_name(env))
        stacks.append(naming.unit_stack(env, (pa or pb).identity_shard))
    for t, placed in homes:
        if placed is None:
            continue
        unit = placed.pool_shard if t.model is Model.POOLED else placed.cell
        stacks.append(naming.unit_stack(env, unit))
    return _ordered(dict.fromkeys(stacks))


def pool_shard_of(env: str, catalog: Catalog, tenant_id: str) -> str | None:
    """The pool shard a pooled tenant is (or will be) placed in, by the catalogue's deployed placements: where its
    rows, objects and documents are. None for other models."""
    t = catalog.tenant(tenant_id)
    if t.model is not Model.POOLED or not t.in_directory:
        return None
    return place(catalog, fleet_capacity.load(env)).tenants[tenant_id].pool_shard


def identity_stack(env: str, catalog: Catalog, tenant_id: str) -> str:
    """The stack holding the tenant's Identity Platform tenant."""
    return naming.unit_stack(env, place(catalog, fleet_capacity.load(env)).tenants[tenant_id].identity_shard)


def _ordered(stacks: Iterable[str]) -> list[str]:
    rank = {naming.ENV_STACK: 0, naming.IDENTITY_STACK: 1, naming.CELL_STACK: 2, naming.POOL_STACK: 3}
    return sorted(stacks, key=lambda s: (rank.get(naming.stack_kind(s)[0], 4), naming.unit_index(s.rsplit(".", 1)[-1])
                                         if "." in s else 0, s))
