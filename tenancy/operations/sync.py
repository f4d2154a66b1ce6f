"""The registry brought up to date with a deployment (`tenancy registry sync`, and every `tenancy up` that can
reach the registry): each deployed tenant's row -- plan, model, state, directory entry and where its stores are --
for every tenant no operation holds. A tenant an operation holds is that operation's to record."""

from __future__ import annotations

from tenancy.catalog import State
from tenancy.lifecycle import record as rec
from tenancy.lifecycle import units
from tenancy.operations.registry import Registry
from tenancy.stores.layout import registry_entry, stores_for


def sync(registry: Registry, deployed: rec.Deployed, env: str) -> dict[str, int]:
    """Upsert every deployed tenant's row; returns {"written": n, "held": n (by an operation)}."""
    if deployed.catalog is None:
        return {"written": 0, "held": 0}
    written = held = 0
    with registry.connect() as c:
        holding = {r[0] for r in c.execute("SELECT tenant_id FROM registry.leases").fetchall()}
        for t in deployed.catalog.tenants:
            if t.id in holding:
                held += 1
                continue
            state = "offboarded" if t.state is State.OFFBOARDED else t.state.value
            stores = {} if t.state is State.OFFBOARDED else registry_entry(
                stores_for(t, env, deployed.project, pool_shard=units.pool_shard_of(env, deployed.catalog, t.id)))
            registry.put_tenant(c, t.id, plan=t.plan_name, model=t.model.value, state=state,
                                directory=deployed.directory.get(t.id, {}), stores=stores, operation=None)
            written += 1
        c.commit()
    return {"written": written, "held": held}
