"""The registry brought up to date with a deployment (`tenancy registry sync`, and every `tenancy up` that can
reach the registry): each deployed tenant's row -- plan, model, state, directory entry and where its stores are --
for every tenant no operation holds (a tenant an operation holds is that operation's to record); and, from the
stacks' outputs, each database's Cloud SQL instance, reached through the Auth Proxy -- unless an operator recorded
that database by hand (`tenancy registry database`), which a deploy never overwrites."""

from __future__ import annotations

from tenancy import naming, topology
from tenancy.catalog import State
from tenancy.engine import Engine, EngineError
from tenancy.lifecycle import record as rec
from tenancy.operations.registry import Registry
from tenancy.stores.layout import registry_entry, stores_for


def databases(engine: Engine, deployed: rec.Deployed, env: str) -> dict[str, tuple[str, dict]]:
    """Database name -> (unit, connection record) of every database the deployed stacks export."""
    out: dict[str, tuple[str, dict]] = {}
    stacks = [*topology.every_platform_stack(env), *(naming.stack_name(env, t.id) for t in deployed.catalog.tenants
                                                  if t.has_stack and t.state is not State.OFFBOARDED)]
    for stack in stacks:
        try:
            outputs = engine.outputs(stack)
        except EngineError:
            continue
        out.update(stack_databases(outputs))
    return out


def stack_databases(outputs: dict) -> dict[str, tuple[str, dict]]:
    """Database name -> (unit, connection record) of the databases one stack's outputs name."""
    out: dict[str, tuple[str, dict]] = {}
    pool = outputs.get("poolDatabase")
    if isinstance(pool, dict) and pool.get("connectionName"):
        out[pool["shard"]] = (pool["shard"], {"instance": pool["connectionName"], "dbname": pool.get("database", "app")})
    tenant = outputs.get("tenant")
    for role, db in (outputs.get("databases") or {}).items() if tenant else ():
        if isinstance(db, dict) and db.get("connectionName"):
            out[f"{tenant}/{role}"] = (f"tenant:{tenant}", {"instance": db["connectionName"],
                                                           "dbname": db.get("database", "app")})
    return out


def tenant_databases(engine: Engine, env: str, tenant: str) -> dict[str, tuple[str, dict]]:
    """The databases one tenant stack exports (after its first deploy), as `databases` gives them."""
    try:
        outputs = engine.outputs(naming.stack_name(env, tenant))
    except EngineError:
        return {}
    return {f"{tenant}/{role}": (f"tenant:{tenant}", {"instance": db["connectionName"], "dbname": db.get("database", "app")})
            for role, db in (outputs.get("databases") or {}).items() if isinstance(db, dict) and db.get("connectionName")}


def sync(registry: Registry, deployed: rec.Deployed, env: str, engine: Engine | None = None) -> dict[str, int]:
    """Upsert every deployed tenant's row (and with `engine`, every exported database's connection); returns
    {"written": n, "held": n (by an operation), "databases": n}."""
    if deployed.catalog is None:
        return {"written": 0, "held": 0, "databases": 0}
    found = databases(engine, deployed, env) if engine is not None else {}
    for name, (unit, connection) in found.items():
        registry.set_database(name, unit, connection, source="deploy")
    written = held = 0
    with registry.connect() as c:
        holding = {r[0] for r in c.execute("SELECT tenant_id FROM registry.leases").fetchall()}
        for t in deployed.catalog.tenants:
            if t.id in holding:
                held += 1
                continue
            state = "offboarded" if t.state is State.OFFBOARDED else t.state.value
            stores = {} if t.state is State.OFFBOARDED else registry_entry(
                stores_for(t, env, deployed.project, pool_shard=topology.pool_shard_of(env, deployed.catalog, t.id)))
            registry.put_tenant(c, t.id, plan=t.plan_name, model=t.model.value, state=state,
                                directory=deployed.directory.get(t.id, {}), stores=stores, operation=None)
            written += 1
        c.commit()
    return {"written": written, "held": held, "databases": len(found)}
